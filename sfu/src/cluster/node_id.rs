//! Node ids: what they may contain, and the default one.

/// Longest node id.
pub const MAX_LEN: usize = 64;

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} must be 1..=64 characters of A-Z a-z 0-9 . _ -")]
pub struct BadNodeId(pub String);

/// Checks a node id: it is a Redis key part, a metric label and a log field,
/// so keep it short and plain.
pub fn check(id: &str) -> Result<(), BadNodeId> {
    let ok = !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BadNodeId(id.to_string()))
    }
}

/// The default node id: the host name (characters outside the allowed set
/// become `-`) and the trunk port, e.g. `media-3-7890`: stable across
/// restarts and unique per machine, since two nodes cannot bind one port.
/// With trunk port 0 (ephemeral) a random suffix replaces the port.
pub fn default_id(hostname: &str, trunk_port: u16) -> String {
    let host: String = hostname
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LEN - 12)
        .collect();
    let host = if host.is_empty() { "sfu".into() } else { host };
    let suffix = match trunk_port {
        0 => format!("{:08x}", rand::random::<u32>()),
        port => port.to_string(),
    };
    format!("{host}-{suffix}")
}

/// This machine's host name (Linux), or `sfu`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "sfu".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_valid() {
        assert_eq!(default_id("media-3\n", 7890), "media-3-7890");
        assert_eq!(default_id("h\u{e9}st name", 1), "h-st-name-1");
        assert_eq!(default_id("", 1), "sfu-1");
        let long = "x".repeat(200);
        for id in [default_id(&long, 65535), default_id("a", 0)] {
            check(&id).unwrap();
        }
        assert_ne!(default_id("a", 0), default_id("a", 0));
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in ["", "a b", "a:b", "é", &"x".repeat(65)] {
            assert!(check(id).is_err(), "{id:?}");
        }
        check("node-1.eu_west").unwrap();
    }
}
