//! When the next background sync runs. Pure: the UI's loop asks after every sync.
//!
//! Online, the SDK's live mode keeps the list current (the server's change feed, or a pull
//! every `sync_interval_s` against a server without one); without live mode the app itself
//! syncs every `sync_interval_s`. 0 turns both off: the app then syncs only at start, after a
//! local change and on `r`. Offline, the app retries every `offline_retry_interval_s`: that
//! retry is the probe, and the first one that reaches the server pushes the queue and pulls at
//! once, so the app comes back without waiting for the next interval.

use std::time::Duration;

/// Default time between two background syncs while online, in seconds.
pub const SYNC_INTERVAL_S_DEFAULT: u64 = 30;
/// Default time between two retries while offline, in seconds.
pub const OFFLINE_RETRY_INTERVAL_S_DEFAULT: u64 = 5;
/// The longest either interval may be, in seconds (a day): a longer one is a typo, and would
/// overflow the clock's arithmetic.
pub const INTERVAL_S_MAX: u64 = 86_400;

/// The intervals, in seconds, and whether live mode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Between two background syncs (or live mode's polls) while online; 0 turns them off.
    pub sync_interval_s: u64,
    /// Between two retries while offline (at least 1).
    pub offline_retry_interval_s: u64,
    /// Whether the SDK's live mode keeps the list current (off: the app's own interval sync).
    pub live: bool,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            sync_interval_s: SYNC_INTERVAL_S_DEFAULT,
            offline_retry_interval_s: OFFLINE_RETRY_INTERVAL_S_DEFAULT,
            live: true,
        }
    }
}

impl Intervals {
    /// Whether live mode is to be started.
    pub fn runs_live(&self) -> bool {
        self.live && self.sync_interval_s > 0
    }
}

/// How long after a sync that ended `online` (whether the server answered) the app's next one
/// runs; `None`: not by itself (live mode, or background syncs off).
pub fn next_sync_in(online: bool, intervals: Intervals) -> Option<Duration> {
    if online {
        (intervals.sync_interval_s > 0 && !intervals.runs_live())
            .then(|| Duration::from_secs(intervals.sync_interval_s))
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
            live: false,
        };
        assert_eq!(next_sync_in(true, i), Some(Duration::from_secs(30)));
        assert_eq!(next_sync_in(false, i), Some(Duration::from_secs(5)));
        // Live mode keeps an online app current; offline, the app still probes.
        let live = Intervals { live: true, ..i };
        assert!(live.runs_live());
        assert_eq!(next_sync_in(true, live), None);
        assert_eq!(next_sync_in(false, live), Some(Duration::from_secs(5)));
        let off = Intervals {
            sync_interval_s: 0,
            offline_retry_interval_s: 0,
            live: true,
        };
        assert!(!off.runs_live());
        assert_eq!(next_sync_in(true, off), None);
        // Offline always retries, at most once a second.
        assert_eq!(next_sync_in(false, off), Some(Duration::from_secs(1)));
    }
}
