//! Room in the scratch folder: what a task needs there, what the disk has free, and what the
//! worker's running tasks have already claimed. A worker takes a task only when the disk holds
//! its sources, an estimate of what the engine writes, and a reserve besides; otherwise it leaves
//! the task to another worker before it starts (see `task`).
//!
//! The estimate of what the engine writes is [`WRITTEN_PER_FETCHED_BYTE`] times the bytes
//! fetched: a render writes a spool of the processed audio (32-bit float samples) and the master
//! (at most 32 bits a sample), so a 16-bit PCM source needs at most 2 + 2 times its size at the
//! same sample rate, a 24-bit one less. Sources that decode to more than that can pass the
//! estimate: a profile that resamples up, and above all a compressed source, whose decoded samples
//! the render also spools (32-bit float at the source's rate, so that it decodes once): a
//! 128 kbit/s Vorbis source spools about 22 times its size, twice. The reserve covers the common
//! cases, and a disk that fills anyway fails the attempt as the worker's fault, which another
//! worker retries.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reads the bytes free (for an unprivileged user) on the file system holding a folder.
pub type FreeSpace = fn(&Path) -> std::io::Result<u64>;

/// What the engine writes in the scratch folder, per byte fetched (see the module's
/// documentation).
pub const WRITTEN_PER_FETCHED_BYTE: u64 = 4;

/// The default scratch reserve (`--scratch-reserve-bytes`), 1 GiB: left free whatever the tasks'
/// estimates say, for what they miss and for the rest of the machine.
pub const DEFAULT_SCRATCH_RESERVE_BYTES: u64 = 1 << 30;

/// How long a worker that just left a task for lack of room pulls nothing: long enough that it
/// does not take the next task only to give it back too, while other workers take them (each
/// hand-back counts as a delivery towards the queue's limit).
pub const NO_ROOM_PAUSE: Duration = Duration::from_secs(30);

/// The bytes free for an unprivileged user on the file system that holds `folder` (`statvfs`).
pub fn free_bytes(folder: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(folder)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The scratch bytes a task that fetches `fetch_bytes` needs: its sources and what the engine
/// writes from them.
pub fn needed_bytes(fetch_bytes: u64) -> u64 {
    fetch_bytes.saturating_mul(1 + WRITTEN_PER_FETCHED_BYTE)
}

/// Why a task does not fit in the scratch folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "scratch full: {free_bytes} bytes free ({claimed_bytes} of them claimed by running tasks), \
     {needed_bytes} needed and {reserve_bytes} kept in reserve"
)]
pub struct NoRoom {
    /// Free on the scratch folder's file system.
    pub free_bytes: u64,
    /// Claimed by the tasks running on this worker, and not written yet as far as it knows.
    pub claimed_bytes: u64,
    /// What the task needs ([`needed_bytes`]).
    pub needed_bytes: u64,
    /// Kept free besides.
    pub reserve_bytes: u64,
}

/// The scratch room the worker's running tasks have claimed, so that two tasks starting at once
/// do not both count on the same free bytes.
#[derive(Debug, Default)]
pub(crate) struct ScratchClaims {
    claimed: Arc<Mutex<u64>>,
}

/// Room a running task holds in the scratch folder, given back when dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    claimed: Arc<Mutex<u64>>,
    bytes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut claimed) = self.claimed.lock() {
            *claimed = claimed.saturating_sub(self.bytes);
        }
    }
}

impl ScratchClaims {
    /// Claims room for a task that needs `needed` bytes, when `free` (the bytes free now) covers
    /// what running tasks claimed, `needed` and `reserve`. What running tasks have written so far
    /// is counted twice (in their claims and as space no longer free): an underestimate of the
    /// room, never an overestimate.
    pub(crate) fn claim(&self, free: u64, needed: u64, reserve: u64) -> Result<Claim, NoRoom> {
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted = claimed.saturating_add(needed).saturating_add(reserve);
        if free < wanted {
            return Err(NoRoom {
                free_bytes: free,
                claimed_bytes: *claimed,
                needed_bytes: needed,
                reserve_bytes: reserve,
            });
        }
        *claimed += needed;
        Ok(Claim {
            claimed: Arc::clone(&self.claimed),
            bytes: needed,
        })
    }

    /// The bytes claimed now.
    #[cfg(test)]
    fn claimed(&self) -> u64 {
        self.claimed.lock().map(|claimed| *claimed).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_needs_its_sources_and_four_times_them() {
        assert_eq!(needed_bytes(0), 0);
        assert_eq!(needed_bytes(1_000), 5_000);
        assert_eq!(needed_bytes(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn claims_count_against_the_free_room_until_dropped() {
        let claims = ScratchClaims::default();
        let first = claims.claim(10_000, 4_000, 1_000).expect("room for one");
        assert_eq!(claims.claimed(), 4_000);
        let refused = claims
            .claim(10_000, 6_000, 1_000)
            .expect_err("4,000 claimed + 6,000 + 1,000 reserve > 10,000");
        assert_eq!(
            refused,
            NoRoom {
                free_bytes: 10_000,
                claimed_bytes: 4_000,
                needed_bytes: 6_000,
                reserve_bytes: 1_000,
            }
        );
        assert!(
            refused
                .to_string()
                .starts_with("scratch full: 10000 bytes free"),
            "{refused}"
        );
        let second = claims.claim(10_000, 5_000, 1_000).expect("exactly fits");
        assert_eq!(claims.claimed(), 9_000);
        drop(first);
        drop(second);
        assert_eq!(claims.claimed(), 0, "given back");
        claims
            .claim(10_000, 9_000, 1_000)
            .expect("room again once the others ended");
    }

    #[test]
    fn the_reserve_alone_can_refuse_a_task() {
        let claims = ScratchClaims::default();
        assert!(claims.claim(999, 0, 1_000).is_err());
        assert!(claims.claim(1_000, 0, 1_000).is_ok());
    }

    #[test]
    fn free_space_of_a_real_folder_is_read() {
        let folder = tempfile::tempdir().expect("temp dir");
        free_bytes(folder.path()).expect("statvfs");
    }
}
