//! When the next background sync runs. Pure: the UI's loop asks after every sync.
//!
//! Online, the app syncs every `sync_interval_s` (0: only at start, after a local change and
//! on `r`). Offline, it retries every `offline_retry_interval_s`: that retry is the probe, and
//! the first one that reaches the server pushes the queue and pulls at once, so the app comes
//! back without waiting for the next interval.

use std::time::Duration;

/// Default time between two background syncs while online, in seconds.
pub const SYNC_INTERVAL_S_DEFAULT: u64 = 30;
/// Default time between two retries while offline, in seconds.
pub const OFFLINE_RETRY_INTERVAL_S_DEFAULT: u64 = 5;

/// The two intervals, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Between two background syncs while online; 0 turns them off.
    pub sync_interval_s: u64,
    /// Between two retries while offline (at least 1).
    pub offline_retry_interval_s: u64,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            sync_interval_s: SYNC_INTERVAL_S_DEFAULT,
            offline_retry_interval_s: OFFLINE_RETRY_INTERVAL_S_DEFAULT,
        }
    }
}

/// How long after a sync that ended `online` (whether the server answered) the next one runs;
/// `None`: not by itself.
pub fn next_sync_in(online: bool, intervals: Intervals) -> Option<Duration> {
    if online {
        (intervals.sync_interval_s > 0).then(|| Duration::from_secs(intervals.sync_interval_s))
    } else {
        Some(Duration::from_secs(
            intervals.offline_retry_interval_s.max(1),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_waits_the_interval_offline_retries_sooner() {
        let i = Intervals {
            sync_interval_s: 30,
            offline_retry_interval_s: 5,
        };
        assert_eq!(next_sync_in(true, i), Some(Duration::from_secs(30)));
        assert_eq!(next_sync_in(false, i), Some(Duration::from_secs(5)));
        let off = Intervals {
            sync_interval_s: 0,
            offline_retry_interval_s: 0,
        };
        assert_eq!(next_sync_in(true, off), None);
        // Offline always retries, at most once a second.
        assert_eq!(next_sync_in(false, off), Some(Duration::from_secs(1)));
    }
}
