//! The status line: what the sync is doing, in a few words, from the SDK's sync status watch
//! (`SyncContext::status`: syncing, pending operations, last success, online as last seen) and
//! its progress watch, plus what only the app knows (conflicts waiting for a choice, the short
//! reason of the last failure, the last sync of an earlier run). Being offline is a state of
//! this line, never a dialog. Pure: [`segments`] lists the facts, most important first, and the
//! screen packs them into the width it has.

use tablesync_client::{FeedState, SyncProgress};
use time::OffsetDateTime;

/// What the status line is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// A sync (push or pull) is running.
    pub syncing: bool,
    /// The running action's progress.
    pub progress: SyncProgress,
    /// Whether the server answered the last sync action (`None`: not known yet).
    pub online: Option<bool>,
    /// Queued local changes.
    pub pending: u64,
    /// When a sync last succeeded (this run's, else the last sync of an earlier run).
    pub last_synced: Option<OffsetDateTime>,
    /// Why the last sync failed while the server answered (short), if it did.
    pub failure: Option<String>,
    /// Conflicts waiting for a choice.
    pub conflicts: usize,
    /// What live mode is doing, in a word or three ([`live_segment`]); `None` when it is off.
    pub live: Option<String>,
    /// The server's host and port.
    pub host: String,
}

/// Live mode's state for the status line: `live` while the change feed is open, `polling
/// every N s` against a server without one; nothing while it connects or waits to reconnect
/// (the online/offline state already says enough).
pub fn live_segment(state: FeedState, poll_interval_s: u64) -> Option<String> {
    match state {
        FeedState::Streaming => Some("live".to_string()),
        FeedState::Polling => Some(format!("polling every {poll_interval_s} s")),
        _ => None,
    }
}

/// "nothing queued", "1 change queued", "3 changes queued".
pub fn queued(n: u64) -> String {
    match n {
        0 => "nothing queued".to_string(),
        1 => "1 change queued".to_string(),
        n => format!("{n} changes queued"),
    }
}

/// `hh:mm UTC`.
pub fn clock(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02} UTC", t.hour(), t.minute())
}

/// The line's segments, most important first: the state (offline, syncing, failed, online)
/// with the queue, conflicts, the last sync, the server.
pub fn segments(f: &Facts) -> Vec<String> {
    let queue = queued(f.pending);
    // Offline stays "offline" while the app retries, so the line does not flicker between
    // "syncing" and "offline" on every retry.
    let state = if f.online == Some(false) {
        format!("offline \u{2014} {queue}")
    } else if f.syncing {
        match &f.progress {
            SyncProgress::Push { done, total } => format!("syncing\u{2026} pushed {done}/{total}"),
            SyncProgress::Pull {
                rows,
                total_rows: Some(total),
                ..
            } => format!("syncing\u{2026} pulled {rows}/{total} rows"),
            SyncProgress::Pull { rows, .. } if *rows > 0 => {
                format!("syncing\u{2026} pulled {rows} row(s)")
            }
            _ => format!("syncing\u{2026} {queue}"),
        }
    } else if let Some(why) = &f.failure {
        format!("sync failed: {why} \u{2014} {queue}")
    } else if f.online == Some(true) {
        format!("online \u{2014} {queue}")
    } else {
        format!("not synced yet \u{2014} {queue}")
    };
    let mut out = vec![state];
    out.extend(f.live.clone());
    match f.conflicts {
        0 => {}
        1 => out.push("1 conflict: press c".to_string()),
        n => out.push(format!("{n} conflicts: press c")),
    }
    out.push(match f.last_synced {
        Some(t) => format!("last synced {}", clock(t)),
        None => "never synced".to_string(),
    });
    out.push(f.host.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            syncing: false,
            progress: SyncProgress::Idle,
            online: Some(true),
            pending: 0,
            last_synced: Some(time::macros::datetime!(2026-12-01 12:01:05 UTC)),
            failure: None,
            conflicts: 0,
            live: None,
            host: "127.0.0.1:8080".into(),
        }
    }

    #[test]
    fn each_state_reads_as_words() {
        let f = facts();
        assert_eq!(
            segments(&f),
            [
                "online \u{2014} nothing queued",
                "last synced 12:01 UTC",
                "127.0.0.1:8080"
            ]
        );
        let offline = Facts {
            online: Some(false),
            pending: 3,
            syncing: true,
            ..facts()
        };
        assert_eq!(segments(&offline)[0], "offline \u{2014} 3 changes queued");
        let pushing = Facts {
            syncing: true,
            progress: SyncProgress::Push { done: 2, total: 5 },
            ..facts()
        };
        assert_eq!(segments(&pushing)[0], "syncing\u{2026} pushed 2/5");
        let pulling = Facts {
            syncing: true,
            progress: SyncProgress::Pull {
                table: "TodoItem".into(),
                pages: 3,
                rows: 150,
                total_rows: None,
            },
            ..facts()
        };
        assert_eq!(segments(&pulling)[0], "syncing\u{2026} pulled 150 row(s)");
        let failed = Facts {
            failure: Some("HTTP 500".into()),
            pending: 1,
            conflicts: 2,
            ..facts()
        };
        assert_eq!(
            segments(&failed)[..2],
            [
                "sync failed: HTTP 500 \u{2014} 1 change queued",
                "2 conflicts: press c"
            ]
        );
        let live = Facts {
            live: live_segment(FeedState::Polling, 30),
            ..facts()
        };
        assert_eq!(segments(&live)[1], "polling every 30 s");
        assert_eq!(
            live_segment(FeedState::Streaming, 30).as_deref(),
            Some("live")
        );
        assert_eq!(live_segment(FeedState::Reconnecting, 30), None);
        let first = Facts {
            online: None,
            last_synced: None,
            ..facts()
        };
        assert_eq!(
            segments(&first)[..2],
            ["not synced yet \u{2014} nothing queued", "never synced"]
        );
    }
}
