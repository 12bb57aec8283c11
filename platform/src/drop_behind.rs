//! Streaming a large file through the page cache without keeping it there.
//!
//! A blob written once and read a few times gains little from staying in the
//! page cache, and on virtual machines that hand free memory back to their
//! host (free page reporting, as on the machines we test on) every page the
//! cache takes from the free pool is one the host must back again first:
//! ≈ 10 µs of CPU per 4 KiB, ten times the copy itself (benches/RESULTS.md,
//! "Blob pages dropped behind"). A page given back right after use is the
//! one the next write gets, still warm.
//!
//! [`DropBehind`] follows a sequential writer or reader: each time its offset
//! passes a [`STEP`] boundary it asks the kernel to drop the two steps before
//! the last one. A range is asked about twice: the first request starts its
//! writeback (dirty pages cannot be dropped), the one a step later drops it.
//!
//! ```
//! use platform::drop_behind::{DropBehind, STEP};
//! let mut pass = DropBehind::at(0);
//! assert_eq!(pass.next_range(STEP / 2), None);
//! assert_eq!(pass.next_range(2 * STEP), Some(0..STEP));
//! assert_eq!(pass.next_range(3 * STEP), Some(0..2 * STEP));
//! assert_eq!(pass.next_range(4 * STEP), Some(STEP..3 * STEP));
//! ```

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// Bytes between two requests to the kernel.
pub const STEP: u64 = 8 << 20;

/// Drops what a sequential pass over a file left behind it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropBehind {
    /// Step boundaries passed (`offset / STEP` at the last request).
    steps: u64,
}

impl DropBehind {
    /// Starts following a pass at `offset`.
    pub fn at(offset: u64) -> Self {
        Self {
            steps: offset / STEP,
        }
    }

    /// The pass reached `offset`: the range to drop now, if it crossed a
    /// step boundary. The last whole step stays cached, so a reader right
    /// behind a writer still finds its pages.
    pub fn next_range(&mut self, offset: u64) -> Option<Range<u64>> {
        let steps = offset / STEP;
        if steps <= self.steps {
            return None;
        }
        self.steps = steps;
        let range = steps.saturating_sub(3) * STEP..steps.saturating_sub(1) * STEP;
        (!range.is_empty()).then_some(range)
    }

    /// The pass reached `offset`: asks the kernel to write back and drop
    /// [`next_range`](Self::next_range). Advice only: an error (a file
    /// system without it) changes nothing and is ignored.
    pub fn advance(&mut self, file: &File, offset: u64) {
        if let Some(range) = self.next_range(offset) {
            let _ = drop_cached(file, range);
        }
    }
}

/// Asks the kernel to drop `range` of `file` from the page cache (and to
/// start writing back what of it is dirty, which stays cached until written).
fn drop_cached(file: &File, range: Range<u64>) -> std::io::Result<()> {
    let start = i64::try_from(range.start).map_err(std::io::Error::other)?;
    let len =
        i64::try_from(range.end.saturating_sub(range.start)).map_err(std::io::Error::other)?;
    posix_fadvise(
        file.as_raw_fd(),
        start,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// Bytes of `path` in the page cache, as util-linux's `fincore` reports them.
    fn resident(path: &std::path::Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("fincore prints a byte count")
    }

    #[test]
    fn each_range_is_asked_about_twice_a_step_apart() {
        let mut pass = DropBehind::at(5 * STEP + 1);
        assert_eq!(pass.next_range(6 * STEP - 1), None);
        assert_eq!(pass.next_range(6 * STEP), Some(3 * STEP..5 * STEP));
        // A jump over several steps drops the two before the last one.
        assert_eq!(pass.next_range(10 * STEP + 7), Some(7 * STEP..9 * STEP));
        // Going back (a resumed pass starts a new DropBehind) asks nothing.
        assert_eq!(pass.next_range(STEP), None);
    }

    #[test]
    fn a_written_and_synced_file_leaves_the_page_cache_behind_the_pass() {
        let path = std::env::temp_dir().join(format!("drop-behind-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let piece = vec![0x5a_u8; 1 << 20];
        for _ in 0..4 * STEP / piece.len() as u64 {
            file.write_all(&piece).unwrap();
        }
        file.sync_data().unwrap();
        let before = resident(&path);
        assert_eq!(before, 4 * STEP, "the written file is cached");
        // A reader's pass over it (the pages are clean now) drops all
        // but its last step.
        let mut pass = DropBehind::at(0);
        let mut buf = vec![0u8; 1 << 20];
        for at in (0..4 * STEP).step_by(buf.len()) {
            file.read_exact_at(&mut buf, at).unwrap();
            pass.advance(&file, at + buf.len() as u64);
        }
        let after = resident(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(after, STEP, "only the last step stays cached");
    }
}
