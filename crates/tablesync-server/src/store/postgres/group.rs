//! Group commit on PostgreSQL: the writes of this process waiting for the same clock row (a
//! shared table's, or one owner's on a per-user table) run in one READ COMMITTED transaction
//! on one write connection. Coordination is `store::group`; this module keeps one queue per
//! clock row and runs a group.
//!
//! * Fewer writers queue on the clock row: a group takes it once and keeps it to its commit,
//!   instead of every request of this process holding a pooled connection while it waits. The
//!   serialisation (lock hand-over, commit, WAL flush) is paid per group, not per row.
//! * Each write runs exactly the code it runs alone with the group's connection as its
//!   `outer`, so it nests in a savepoint of its own, takes its stamp from the clock row inside
//!   the group (each one `last + 1 ms` over the previous, so stamps stay strictly increasing,
//!   and the whole group becomes visible at one commit: stamp order is still commit order), and
//!   a failed compare-and-swap (409/412) or an error rolls back that savepoint only, stamp
//!   included. The others commit with exactly the answers they get alone.
//! * One queue per clock row, so a group never holds two clock rows: groups of different
//!   processes cannot deadlock, and writers of different users still never wait for each
//!   other. A queue lives while someone uses it (dropped when the last submitter leaves).
//! * A write that fails with `Busy` (the clock row stayed locked beyond `lock_timeout`) stops
//!   the group: the writes after it would wait for the same lock again, so they get the same
//!   answer (503) at once; the ones before it commit.
//! * Every write is answered after the commit returned. A failed `COMMIT` (the connection
//!   broke) answers every write of the group with its error: their outcome is unknown, exactly
//!   like a single write's.
//! * `write_hold_ms_max` (test only) holds the group's transaction once, before its commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use sqlx::PgConnection;
use tokio::sync::OwnedMutexGuard;

use super::super::group::{GroupQueue, Pending};
use super::super::{BoxFuture, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use super::{classify, PostgresStore};
use crate::observe::metrics::GroupCommits;

/// One write: given the group's connection (None when it runs alone, in its own transaction).
pub(super) type Work = Box<
    dyn for<'c> FnOnce(Option<&'c mut PgConnection>) -> BoxFuture<'c, StoreResult<WriteOutcome>>
        + Send,
>;

/// One queue entry.
pub(super) struct Job {
    work: Work,
    /// When it was queued (the pool-wait histogram counts the queue as part of the wait).
    asked: Instant,
}

type Queue = GroupQueue<Job, WriteOutcome>;

/// Which clock row a write takes: the table, and the owner on a per-user table.
pub(super) type ClockKey = (String, Option<String>);

/// The queues of one store, one per clock row in use.
pub(super) struct Groups {
    queues: Mutex<HashMap<ClockKey, Arc<Queue>>>,
    writes_max: usize,
    metrics: GroupCommits,
}

impl Groups {
    /// No queues yet; groups carry at most `writes_max` writes; `metrics` counts queued writes.
    pub(super) fn new(writes_max: usize, metrics: GroupCommits) -> Self {
        Groups {
            queues: Mutex::new(HashMap::new()),
            writes_max,
            metrics,
        }
    }

    /// Queue `work` for the clock row `key` and wait until the commit that holds it returned.
    pub(super) async fn submit(
        &self,
        store: &PostgresStore,
        key: ClockKey,
        work: Work,
    ) -> StoreResult<WriteOutcome> {
        let queue = Arc::clone(self.lock().entry(key.clone()).or_insert_with(|| {
            Arc::new(GroupQueue::new(
                Arc::new(tokio::sync::Mutex::new(())),
                self.writes_max,
                self.metrics.clone(),
            ))
        }));
        let job = Job {
            work,
            asked: Instant::now(),
        };
        let runner = store.clone();
        let result = queue
            .submit(job, move |gate, group| {
                tokio::spawn(run(runner.clone(), gate, group));
            })
            .await;
        drop(queue);
        // The last one out drops the queue: per-user tables would otherwise keep one per user
        // for ever. A submitter holds its own `Arc`, taken under this lock, so a count of one
        // means nobody is using it.
        let mut queues = self.lock();
        if queues.get(&key).is_some_and(|q| Arc::strong_count(q) == 1) {
            queues.remove(&key);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClockKey, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn copy(e: &StoreError) -> StoreError {
    StoreError::new(e.kind, e.message.clone())
}

/// Run `group` in one transaction, answer every write, then let the gate go.
async fn run(
    store: PostgresStore,
    gate: OwnedMutexGuard<()>,
    group: Vec<Pending<Job, WriteOutcome>>,
) {
    let mut group = group;
    if group.len() == 1 {
        let Some(Pending { job, answer }) = group.pop() else {
            return;
        };
        let result = (job.work)(None).await;
        store.commits.observe(1);
        let _ = answer.send(result);
        drop(gate);
        return;
    }
    let mut tx = match store
        .write_pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
    {
        Ok(tx) => tx,
        Err(e) => {
            let e = classify(&e);
            for p in group {
                p.answer(Err(copy(&e)));
            }
            return;
        }
    };
    let n = group.len();
    let mut done: Vec<(
        tokio::sync::oneshot::Sender<StoreResult<WriteOutcome>>,
        StoreResult<WriteOutcome>,
    )> = Vec::with_capacity(n);
    let mut busy: Option<StoreError> = None;
    for Pending { job, answer } in group {
        store.wait.observe(job.asked.elapsed());
        if let Some(e) = &busy {
            done.push((answer, Err(copy(e))));
            continue;
        }
        let result = (job.work)(Some(&mut *tx)).await;
        if let Err(e) = &result {
            if e.kind == StoreErrorKind::Busy {
                busy = Some(copy(e));
            }
        }
        done.push((answer, result));
    }
    match store.commit_write(tx, false).await {
        Ok(()) => {
            store.commits.observe(n);
            for (answer, result) in done {
                let _ = answer.send(result);
            }
        }
        Err(e) => {
            tracing::error!("group commit: COMMIT failed: {e}");
            for (answer, _) in done {
                let _ = answer.send(Err(copy(&e)));
            }
        }
    }
    drop(gate);
}
