//! The open-file limit. Every allocation holds a relay socket and every
//! TCP/TLS client a connection, so the soft limit (often 1024) would cap a
//! relay at about a thousand allocations; the hard limit is what the
//! administrator granted.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The descriptor limits after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit before.
    pub before: u64,
    /// Soft limit now (the hard limit unless raising failed).
    pub now: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE of this process to its hard limit.
pub fn raise_to_hard_limit() -> std::io::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    Ok(FdLimit {
        before: soft,
        now,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let limit = raise_to_hard_limit().unwrap();
        assert_eq!(limit.now, limit.hard);
        assert!(limit.now >= limit.before);
        // Idempotent.
        assert_eq!(raise_to_hard_limit().unwrap().now, limit.hard);
    }
}
