//! Group commit on SQLite: the writes waiting for the writer connection are run by one blocking
//! task in one `BEGIN IMMEDIATE … COMMIT`, so a group costs one WAL sync (`synchronous =
//! FULL`) instead of one per write. Coordination (who leads, how large a group gets) is
//! `store::group`; this module runs a group.
//!
//! * Each write of a group runs exactly the code it runs alone (`insert_row`, `cas_update`, …);
//!   those see the open transaction and nest their work in a savepoint (`begin_write`), so a
//!   write whose compare-and-swap fails (409/412), or which errors, rolls back its savepoint
//!   only, stamp included, and answers exactly what it answers alone. The others commit.
//! * Stamps are taken write by write on the clock row inside the one transaction, so they are
//!   strictly increasing in queue order, and all of them become visible at the one commit.
//! * Every write of a group is answered only after `COMMIT` returned: an acknowledged write is
//!   on disk.
//! * When the transaction itself dies before the commit (SQLite rolls a transaction back on
//!   some errors, such as a full disk), nothing of the group was committed: each write is run
//!   again alone, so only the write that causes the error fails. A failed `COMMIT` is answered
//!   with its error for the whole group, never re-run: the outcome of a failed commit is not
//!   certain enough to apply anything again.
//! * A group of one write runs as that write alone: no savepoint, no added latency.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::OwnedMutexGuard;

use super::super::group::{GroupQueue, Pending};
use super::super::{StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use super::{lock, InUse, Inner};

/// What a queued piece of work produced.
pub(super) enum Done {
    /// A single write's outcome.
    Write(WriteOutcome),
    /// A transaction's work (a batch, `Store::transaction`) ran; it carried this many writes.
    Work(usize),
}

impl Done {
    /// How many writes this counts as in `tablesync_group_commit_operations`.
    fn writes(&self) -> usize {
        match self {
            Done::Write(_) => 1,
            Done::Work(n) => *n,
        }
    }
}

/// The work of one queue entry, on the writer connection (`bool`: commit-order stamps). It may
/// run twice (see the module docs), so it must only depend on its inputs and the database.
pub(super) type Work = Box<dyn FnMut(&mut Connection, bool) -> StoreResult<Done> + Send>;

/// One queue entry.
pub(super) struct Job {
    work: Work,
    /// When it was queued (the pool-wait histogram counts the queue as the wait).
    asked: Instant,
}

/// The store's queue of writes.
pub(super) type Queue = GroupQueue<Job, Done>;

/// Queue `work` on the store's writer and wait until the commit that holds it returned.
pub(super) async fn submit(inner: &Arc<Inner>, work: Work) -> StoreResult<Done> {
    let job = Job {
        work,
        asked: Instant::now(),
    };
    let runner = Arc::clone(inner);
    inner
        .group
        .submit(job, move |gate, group| {
            start(Arc::clone(&runner), gate, group)
        })
        .await
}

/// Run `group` on the blocking pool, holding `gate` until every write of it is answered; then
/// the groups queued meanwhile, up to `group_commit_rounds_max` groups in all, before letting
/// the gate go. Each further group saves the hand-off to a new leader (waking its task, which
/// spawns a blocking task again); the bound lets DDL waiting for the gate in.
fn start(inner: Arc<Inner>, gate: OwnedMutexGuard<()>, group: Vec<Pending<Job, Done>>) {
    tokio::task::spawn_blocking(move || {
        let mut group = group;
        for round in 1.. {
            run(&inner, group);
            if round >= inner.group_rounds_max {
                break;
            }
            group = inner.group.take();
            if group.is_empty() {
                break;
            }
        }
        drop(gate);
    });
}

fn run(inner: &Inner, mut group: Vec<Pending<Job, Done>>) {
    let mut conn = lock(&inner.writer);
    let _in_use = InUse::new(&inner.in_use);
    for p in &group {
        inner.wait.observe(p.job.asked.elapsed());
    }
    let commit_order = inner.commit_order_stamps;
    if group.len() > 1 {
        match together(&mut conn, commit_order, &mut group) {
            Together::Committed(results) => {
                let writes = results
                    .iter()
                    .map(|r| r.as_ref().map_or(1, Done::writes))
                    .sum();
                inner.commits.observe(writes);
                for (p, result) in group.into_iter().zip(results) {
                    p.answer(result);
                }
                return;
            }
            Together::CommitFailed(e) => {
                for p in group {
                    p.answer(Err(StoreError::new(e.kind, e.message.clone())));
                }
                return;
            }
            Together::NotStarted => {}
        }
    }
    for mut p in group {
        let result = (p.job.work)(&mut conn, commit_order);
        inner
            .commits
            .observe(result.as_ref().map_or(1, Done::writes));
        p.answer(result);
    }
}

enum Together {
    /// Committed; each write's result, in order.
    Committed(Vec<StoreResult<Done>>),
    /// `COMMIT` failed; nothing may be re-run.
    CommitFailed(StoreError),
    /// The transaction could not be begun or died before the commit: nothing was committed.
    NotStarted,
}

fn together(
    conn: &mut Connection,
    commit_order: bool,
    group: &mut [Pending<Job, Done>],
) -> Together {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::warn!("group commit: BEGIN failed ({e}); running its writes one by one");
        return Together::NotStarted;
    }
    let mut results = Vec::with_capacity(group.len());
    for p in group.iter_mut() {
        let result = (p.job.work)(conn, commit_order);
        if conn.is_autocommit() {
            let why = match &result {
                Err(e) => e.message.clone(),
                Ok(_) => "a write ended it".to_owned(),
            };
            tracing::warn!(
                "group commit: the transaction was rolled back ({why}); running its writes one by one"
            );
            return Together::NotStarted;
        }
        results.push(result);
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Together::Committed(results),
        Err(e) => {
            // A failed COMMIT may leave the transaction open: end it, so the next write does
            // not find the connection inside it.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let e = super::classify(e);
            tracing::error!("group commit: COMMIT failed: {e}");
            Together::CommitFailed(e)
        }
    }
}

/// A result of the wrong kind from a queue entry (a bug).
pub(super) fn unexpected() -> StoreError {
    StoreError::new(
        StoreErrorKind::Internal,
        "group commit answered a write with the wrong kind of result",
    )
}
