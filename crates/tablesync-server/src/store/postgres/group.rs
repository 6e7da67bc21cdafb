//! Group commit on PostgreSQL: the writes of this process waiting for the same clock row (a
//! shared table's, or one owner's on a per-user table) run in one READ COMMITTED transaction
//! on one write connection. Coordination is `store::group`; this module keeps one queue per
//! clock row and runs a group.
//!
//! * Fewer writers queue on the clock row: a group takes it once and keeps it to its commit,
//!   instead of every request of this process holding a pooled connection while it waits. The
//!   serialisation (lock hand-over, commit, WAL flush) is paid per group, not per row.
//! * **The fast way** (commit-order stamps on): one statement takes the stamps of every stamped
//!   write of the group at once (`PostgresStore::stamps`: the clock row moves by the group's
//!   size, each stamp 1 ms and one version over the previous, so they stay strictly increasing;
//!   its lock is held to the commit, so stamp order is still commit order), then each write is
//!   one statement with its stamp, no savepoint: BEGIN, stamps, one statement a write, COMMIT,
//!   instead of four round trips a write (savepoint, stamp, write, release). Consecutive inserts
//!   with the same columns on a string-id table share one multi-row `INSERT … ON CONFLICT DO
//!   NOTHING RETURNING` (rows matched back by id, the first insert of an id winning, as one by
//!   one); consecutive plain updates with the same columns and different ids share one
//!   `UPDATE … FROM (VALUES …) RETURNING`, each `VALUES` row carrying its id, expected version
//!   and stamp, so each row is still its own compare-and-swap (a second update of an id ends
//!   the run and runs after it, as one by one). A write that matches
//!   no row (409/412/404, an insert of a taken id) answers what it answers alone after one more
//!   read, leaving its stamp unused: a gap in the clock, which only has to increase.
//! * **The savepoint way** (any write of the fast way failed, or the guard is off): an error
//!   leaves a PostgreSQL transaction unusable, so the fast way's transaction is rolled back
//!   (nothing of it was answered or committed) and the group runs again, each write exactly the
//!   code it runs alone with the group's connection as its `outer`: it nests in a savepoint of
//!   its own, takes its stamp from the clock row inside the group (`last + 1 ms` over the
//!   previous), and a failed compare-and-swap or an error rolls back that savepoint only, stamp
//!   included. Either way the others commit with exactly the answers they get alone.
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

use tokio::sync::OwnedMutexGuard;

use super::super::group::{GroupQueue, Pending};
use super::super::sql::CasKind;
use super::super::{Scope, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use super::{classify, PostgresStore, RowWrite};
use crate::config::IdType;
use crate::observe::metrics::GroupCommits;
use crate::table::TableSchema;

/// One row write and where it goes.
pub(super) struct Write {
    pub(super) table: TableSchema,
    pub(super) scope: Scope,
    pub(super) row: RowWrite,
}

impl Write {
    /// Whether it takes a stamp (everything but a hard delete).
    fn stamped(&self) -> bool {
        !matches!(self.row, RowWrite::HardDelete { .. })
    }
}

/// One queue entry.
pub(super) struct Job {
    write: Write,
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
        write: Write,
    ) -> StoreResult<WriteOutcome> {
        let queue = Arc::clone(self.lock().entry(key.clone()).or_insert_with(|| {
            Arc::new(GroupQueue::new(
                Arc::new(tokio::sync::Mutex::new(())),
                self.writes_max,
                self.metrics.clone(),
            ))
        }));
        let job = Job {
            write,
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
        let result = store.apply(None, &job.write).await;
        store.commits.observe(1);
        let _ = answer.send(result);
        drop(gate);
        return;
    }
    for p in &group {
        store.wait.observe(p.job.asked.elapsed());
    }
    let writes: Vec<&Write> = group.iter().map(|p| &p.job.write).collect();
    let outcome = match store.commit_order_stamps {
        true => match fast(&store, &writes).await {
            Fast::Done(results) => Ok(results),
            Fast::Failed(e) => Err(e),
            Fast::Retry => savepoints(&store, &writes).await,
        },
        false => savepoints(&store, &writes).await,
    };
    match outcome {
        Ok(results) => {
            store.commits.observe(results.len());
            for (p, result) in group.into_iter().zip(results) {
                p.answer(result);
            }
        }
        Err(e) => {
            for p in group {
                p.answer(Err(copy(&e)));
            }
        }
    }
    drop(gate);
}

/// How the fast way ended.
enum Fast {
    /// Committed (or its COMMIT failed): one result per write.
    Done(Vec<StoreResult<WriteOutcome>>),
    /// No transaction, or the clock row stayed locked past `lock_timeout`: every write gets
    /// this error, as each would alone (the savepoint way would only wait as long again).
    Failed(StoreError),
    /// A write failed: rolled back, nothing committed or answered; run the savepoint way.
    Retry,
}

/// The fast way (module docs).
async fn fast(store: &PostgresStore, writes: &[&Write]) -> Fast {
    let mut tx = match store
        .write_pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
    {
        Ok(tx) => tx,
        Err(e) => return Fast::Failed(classify(&e)),
    };
    let stamped = writes.iter().filter(|w| w.stamped()).count();
    let stamps = match (stamped, writes.first()) {
        (0, _) | (_, None) => Ok(Vec::new()),
        (n, Some(first)) => store.stamps(&mut tx, &first.table, &first.scope, n).await,
    };
    let mut stamps = match stamps {
        Ok(stamps) => stamps.into_iter(),
        Err(e) if e.kind == StoreErrorKind::Busy => return Fast::Failed(e),
        Err(_) => return retry(tx).await,
    };
    let mut results = Vec::with_capacity(writes.len());
    // Writes carried by multi-row statements, counted once the group committed.
    let mut multi_row = 0;
    let mut at = 0;
    while let Some(write) = writes.get(at) {
        // Any error: the transaction is unusable after a failed statement, and a write that
        // failed after its statement ran must not commit.
        if let Some((statement, run)) = multi_row_run(&writes[at..]) {
            let (run_writes, run_stamps) =
                (&writes[at..at + run], stamps.by_ref().take(run).collect());
            let ran = match statement {
                MultiRow::Insert => store.insert_stamped(&mut tx, run_writes, run_stamps).await,
                MultiRow::Update => store.update_stamped(&mut tx, run_writes, run_stamps).await,
            };
            match ran {
                Ok(outcomes) => results.extend(outcomes.into_iter().map(Ok)),
                Err(_) => return retry(tx).await,
            }
            multi_row += run;
            at += run;
            continue;
        }
        let stamp = if write.stamped() { stamps.next() } else { None };
        match store.apply_stamped(&mut tx, write, stamp).await {
            Ok(outcome) => results.push(Ok(outcome)),
            Err(_) => return retry(tx).await,
        }
        at += 1;
    }
    // A failed COMMIT may have committed or not: every write is answered with its error (the
    // outcome is unknown, as a single write's), never run again.
    match store.commit_write(tx, false).await {
        Ok(()) => {
            store.commits.multi_row(multi_row);
            Fast::Done(results)
        }
        Err(e) => {
            tracing::error!("group commit: COMMIT failed: {e}");
            Fast::Done(results.into_iter().map(|_| Err(copy(&e))).collect())
        }
    }
}

/// A statement of several rows the fast way runs a run of a group's writes as.
enum MultiRow {
    /// `INSERT … VALUES (…), (…)` ([`inserts_alike`]).
    Insert,
    /// `UPDATE … FROM (VALUES (…), (…))` ([`updates_alike`]).
    Update,
}

/// The statement and length of the run of two or more writes at the start of `writes` that one
/// statement can carry, if any.
fn multi_row_run(writes: &[&Write]) -> Option<(MultiRow, usize)> {
    [
        (MultiRow::Insert, inserts_alike(writes)),
        (MultiRow::Update, updates_alike(writes)),
    ]
    .into_iter()
    .find(|(_, run)| *run > 1)
}

/// How many writes from the start of `writes` are inserts one multi-row `INSERT` can carry: on
/// a string-id table (an integer id comes back unknown, so a returned row could not be told
/// apart), each with the same columns in the same order as the first.
fn inserts_alike(writes: &[&Write]) -> usize {
    fn names(w: &Write) -> Option<Vec<&str>> {
        match &w.row {
            RowWrite::Insert { values, .. } if w.table.id_type == IdType::String => {
                Some(values.iter().map(|(name, _)| name.as_str()).collect())
            }
            _ => None,
        }
    }
    let Some(first) = writes.first().and_then(|w| names(w)) else {
        return 0;
    };
    1 + writes[1..]
        .iter()
        .take_while(|w| names(w).as_ref() == Some(&first))
        .count()
}

/// How many writes from the start of `writes` are updates one `UPDATE … FROM (VALUES …)` can
/// carry: plain updates (not a soft delete or an undelete) on a string-id table, each with the
/// same columns in the same order as the first and an id no earlier one of them has (the
/// statement updates a row once; a second update of it runs after, as it would alone).
fn updates_alike(writes: &[&Write]) -> usize {
    fn update(w: &Write) -> Option<(&str, Vec<&str>)> {
        match &w.row {
            RowWrite::Swap {
                id,
                values,
                kind: CasKind::Update,
                ..
            } if w.table.id_type == IdType::String => Some((
                id.as_str(),
                values.iter().map(|(name, _)| name.as_str()).collect(),
            )),
            _ => None,
        }
    }
    let Some((first_id, columns)) = writes.first().and_then(|w| update(w)) else {
        return 0;
    };
    let mut ids = std::collections::HashSet::from([first_id]);
    1 + writes[1..]
        .iter()
        .map_while(|w| update(w))
        .take_while(|(id, names)| *names == columns && ids.insert(id))
        .count()
}

/// Roll the fast way's transaction back now, before the savepoint way queues on the clock row
/// it holds (a dropped transaction's rollback is only sent when its connection is next used).
async fn retry(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> Fast {
    match tx.rollback().await {
        Ok(()) => Fast::Retry,
        // The connection broke: nothing was committed, and the savepoint way gets another.
        Err(e) => {
            tracing::warn!("group commit: ROLLBACK failed: {e}");
            Fast::Retry
        }
    }
}

/// The savepoint way (module docs): each write in a savepoint of one transaction, committed;
/// Err when the transaction could not begin.
async fn savepoints(
    store: &PostgresStore,
    writes: &[&Write],
) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
    let mut tx = store
        .write_pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(|e| classify(&e))?;
    let mut results = Vec::with_capacity(writes.len());
    let mut busy: Option<StoreError> = None;
    for write in writes {
        if let Some(e) = &busy {
            results.push(Err(copy(e)));
            continue;
        }
        let result = store.apply(Some(&mut *tx), write).await;
        if let Err(e) = &result {
            if e.kind == StoreErrorKind::Busy {
                busy = Some(copy(e));
            }
        }
        results.push(result);
    }
    match store.commit_write(tx, false).await {
        Ok(()) => Ok(results),
        Err(e) => {
            tracing::error!("group commit: COMMIT failed: {e}");
            Ok(results.into_iter().map(|_| Err(copy(&e))).collect())
        }
    }
}
