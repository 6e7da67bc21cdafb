//! What an app can watch while it syncs, and how it stops a running sync: [`SyncStatus`] (idle
//! or syncing, pending operations, last success and last error, online as last seen),
//! [`SyncProgress`] (a pull's pages and rows, a push's operations done out of total), both as
//! `tokio::sync::watch` channels, cancellation of the running pull or push, and
//! [`TableChanges`] on a `tokio::sync::broadcast` channel: the ids each committed pull page
//! wrote or removed, for refreshing a view (live mode's pulls and the app's own alike).
//!
//! A [`Monitor`] belongs to the session. The sync actions report to it at their checkpoints —
//! a pull after each page is committed (rows and delta token in one transaction), a push after
//! each operation or batch whose outcomes are recorded — and check for cancellation there, so a
//! cancelled action stops with the store consistent: an incremental pull resumes after the last
//! committed page, a push with the operations not yet sent still queued. Nothing is reported
//! between checkpoints, and a cancellation waits for the request in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};

/// What a sync context is doing and what it last saw; see `SyncContext::status`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SyncStatus {
    /// A pull or push is running (a pull's own push included).
    pub syncing: bool,
    /// Queued local operations, as of the last sync action or local write while someone
    /// watched (`None` before the first count).
    pub pending_operations: Option<u64>,
    /// When a pull or push that reached the server last succeeded. A push with nothing queued
    /// sends no request and is no sync: offline, it must not read as "synced just now".
    pub last_success: Option<SystemTime>,
    /// Why the last failed pull or push failed (the error's message); cleared by a success
    /// that reached the server.
    pub last_error: Option<String>,
    /// Whether the server answered the last sync action (`false`: it could not be reached);
    /// `None` before the first one.
    pub online: Option<bool>,
}

/// How far the running sync action is; see `SyncContext::progress`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncProgress {
    /// No action has reported yet, or the last one ended.
    Idle,
    /// A pull of `table`: pages and rows received and committed so far. `total_rows` is what
    /// the server said the query holds, when it said so without extra cost (the SDK never asks
    /// for a count: on a large table that costs the server a scan per pull); `None` otherwise.
    Pull {
        /// The table pulled.
        table: String,
        /// Pages committed.
        pages: u64,
        /// Rows received in those pages (written, deleted or skipped).
        rows: u64,
        /// Rows the query holds, when known.
        total_rows: Option<u64>,
    },
    /// A push: operations whose outcome is recorded, out of the queue's length at the start.
    Push {
        /// Operations done (pushed or recorded as errors).
        done: u64,
        /// Operations queued when the push started.
        total: u64,
    },
}

/// Rows of one table that a pull changed in the local store: sent after the page holding them
/// committed, so reading the table then shows them. See `SyncContext::changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableChanges {
    /// The table (its defined name).
    pub table: String,
    /// Ids of the rows written or removed (a removed row is no longer in the table).
    pub ids: Vec<String>,
}

/// Notifications a slow receiver of `SyncContext::changes` may fall behind by before it misses
/// some (it then gets `RecvError::Lagged` and should re-read its tables), in notifications.
pub const CHANGES_CHANNEL_NOTIFICATIONS_MAX: usize = 1024;

/// The session's status and progress channels and the running action's cancellation flag.
pub(crate) struct Monitor {
    status: watch::Sender<SyncStatus>,
    progress: watch::Sender<SyncProgress>,
    changes: broadcast::Sender<TableChanges>,
    /// The flag of the running action (`None` when idle). A new one per action, so a
    /// cancellation with nothing running does not stop the next action.
    running: Mutex<Option<Arc<AtomicBool>>>,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            status: watch::Sender::new(SyncStatus::default()),
            progress: watch::Sender::new(SyncProgress::Idle),
            changes: broadcast::Sender::new(CHANGES_CHANNEL_NOTIFICATIONS_MAX),
            running: Mutex::new(None),
        }
    }
}

/// The running action's handle: ends the action (status back to idle) when dropped.
pub(crate) struct Action<'a> {
    monitor: &'a Monitor,
}

impl Drop for Action<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.monitor.running.lock() {
            *running = None;
        }
        self.monitor.status.send_modify(|s| s.syncing = false);
        self.monitor.progress.send_replace(SyncProgress::Idle);
    }
}

impl Monitor {
    /// A receiver of the status.
    pub(crate) fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// A receiver of the progress.
    pub(crate) fn progress(&self) -> watch::Receiver<SyncProgress> {
        self.progress.subscribe()
    }

    /// A receiver of the change notifications sent from now on.
    pub(crate) fn changes(&self) -> broadcast::Receiver<TableChanges> {
        self.changes.subscribe()
    }

    /// A pull committed a page that changed `ids` of `table` (nothing is sent for none).
    pub(crate) fn changed(&self, table: &str, ids: Vec<String>) {
        if !ids.is_empty() {
            // No receiver is no error: nobody asked to be told.
            let _ = self.changes.send(TableChanges {
                table: table.to_string(),
                ids,
            });
        }
    }

    /// Whether anyone watches the status (counting pending operations is then worth a query).
    pub(crate) fn watched(&self) -> bool {
        self.status.receiver_count() > 0
    }

    /// Starts an action (called with the session's sync lock held, so one at a time).
    pub(crate) fn begin(&self) -> Action<'_> {
        let cancelled = Arc::new(AtomicBool::new(false));
        if let Ok(mut running) = self.running.lock() {
            *running = Some(cancelled);
        }
        self.status.send_modify(|s| s.syncing = true);
        Action { monitor: self }
    }

    /// Asks the running action to stop at its next checkpoint; `false` when none runs.
    pub(crate) fn cancel(&self) -> bool {
        match self.running.lock().ok().and_then(|r| r.clone()) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Whether the running action (if any) was asked to stop.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Records how an action ended: `online` is whether the server answered (`None`: no request
    /// went out, as for an empty push, which then changes neither the last success nor the
    /// last error).
    pub(crate) fn finished(&self, error: Option<String>, online: Option<bool>) {
        self.status.send_modify(|s| {
            match error {
                None if online.is_none() => {}
                None => {
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                }
                Some(e) => s.last_error = Some(e),
            }
            if online.is_some() {
                s.online = online;
            }
        });
    }

    /// Records the queue length.
    pub(crate) fn pending(&self, count: u64) {
        self.status
            .send_if_modified(|s| s.pending_operations.replace(count) != Some(count));
    }

    /// A pull committed a page.
    pub(crate) fn pulled(&self, table: &str, pages: u64, rows: u64) {
        self.progress.send_replace(SyncProgress::Pull {
            table: table.to_string(),
            pages,
            rows,
            total_rows: None,
        });
    }

    /// A push recorded the outcomes of `done` operations out of `total`.
    pub(crate) fn pushed(&self, done: u64, total: u64) {
        self.progress
            .send_replace(SyncProgress::Push { done, total });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_only_the_running_action() {
        let m = Monitor::default();
        let status = m.status();
        assert!(!m.cancel(), "nothing runs");
        {
            let _action = m.begin();
            assert!(status.borrow().syncing);
            assert!(!m.cancel_requested());
            assert!(m.cancel());
            assert!(m.cancel_requested());
        }
        assert!(!status.borrow().syncing);
        assert!(!m.cancel_requested());
        let _next = m.begin();
        assert!(
            !m.cancel_requested(),
            "an earlier cancel does not stop the next action"
        );
    }

    #[test]
    fn finishing_records_success_error_and_reachability() {
        let m = Monitor::default();
        let status = m.status();
        m.finished(Some("network error: refused".into()), Some(false));
        assert_eq!(status.borrow().online, Some(false));
        assert!(status.borrow().last_success.is_none());
        // An empty push sent nothing: still no success, and the error stays.
        m.finished(None, None);
        let s = status.borrow().clone();
        assert!(s.last_success.is_none(), "an empty push is no sync");
        assert_eq!(s.last_error.as_deref(), Some("network error: refused"));
        assert_eq!(s.online, Some(false));
        m.finished(None, Some(true));
        let s = status.borrow().clone();
        assert!(s.last_success.is_some() && s.last_error.is_none());
        assert_eq!(s.online, Some(true));
        m.pending(3);
        assert_eq!(status.borrow().pending_operations, Some(3));
    }

    #[test]
    fn changes_reach_subscribers_and_empty_pages_send_nothing() {
        let m = Monitor::default();
        m.changed("T", vec!["early".into()]); // nobody listens: dropped, no error
        let mut rx = m.changes();
        m.changed("T", Vec::new());
        m.changed("T", vec!["a".into(), "b".into()]);
        let got = rx.try_recv().unwrap();
        assert_eq!(
            (got.table.as_str(), got.ids),
            ("T", vec!["a".into(), "b".into()])
        );
        assert!(rx.try_recv().is_err(), "the empty page sent nothing");
    }
}
