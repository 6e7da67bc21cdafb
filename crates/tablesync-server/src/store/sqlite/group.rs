//! Group commit on SQLite: the writes waiting for the writer connection are run by one blocking
//! task in one `BEGIN IMMEDIATE … COMMIT`, so a group costs one WAL sync (`synchronous =
//! FULL`) instead of one per write. Coordination (who leads, how large a group gets) is
//! `store::group`; this module runs a group.
//!
//! * The group first takes the stamps of all its stamped writes, one statement per clock row
//!   (the table's, or an owner's on a per-user table; [`take_stamps`]): the row moves by as many
//!   stamps as the group has writes on it, 1 ms and one version a stamp, the first one
//!   `max(now, last + 1 ms)` as for a write alone. Stamps are handed out in queue order, so they
//!   are strictly increasing, and all of them become visible at the one commit.
//! * Each write then runs exactly the code it runs alone (`insert_row`, `cas_update`) with its
//!   stamp given and no savepoint (`Stamping::Given`): its one modifying statement is atomic by
//!   itself (SQLite rolls back a failing statement, not the transaction), so a write whose
//!   compare-and-swap fails (409/412), or which errors, changes nothing and answers exactly what
//!   it answers alone; the others commit. Its stamp stays unused: a gap, never a reuse (stamps
//!   only have to increase). Before, each write took its stamp in a savepoint of its own, and
//!   the savepoint and the clock row statement were 40 % of a group's per-write work.
//! * A batch (`Store::transaction`) and a hard delete (no stamp) still run in a savepoint of
//!   their own inside the group's transaction, a batch taking its stamps from the clock row.
//! * Every write of a group is answered only after `COMMIT` returned: an acknowledged write is
//!   on disk.
//! * When the transaction itself dies before the commit (SQLite rolls a transaction back on
//!   some errors, such as a full disk), nothing of the group was committed: each write is run
//!   again alone, so only the write that causes the error fails. A failed `COMMIT` is answered
//!   with its error for the whole group, never re-run: the outcome of a failed commit is not
//!   certain enough to apply anything again.
//! * A group of one write runs as that write alone: no savepoint, no added latency.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;
use tablesync_protocol::time::Timestamp;
use tokio::sync::OwnedMutexGuard;

use super::super::group::{GroupQueue, Pending};
use super::super::sql::{self, CLOCK_TABLE, OWNER_CLOCK_TABLE};
use super::super::{Scope, Stamp, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use super::{classify, lock, InUse, Inner, Stamping};
use crate::table::{version_from_counter, TableSchema};

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

/// The work of one queue entry, on the writer connection, with its stamp. It may run twice
/// (see the module docs), so it must only depend on its inputs and the database.
pub(super) type Work = Box<dyn FnMut(&mut Connection, Stamping) -> StoreResult<Done> + Send>;

/// One queue entry.
pub(super) struct Job {
    work: Work,
    /// The clock row it takes its stamp from (None: a batch, which takes its own stamps, or a
    /// write that takes none).
    clock: Option<Clock>,
    /// When it was queued (the pool-wait histogram counts the queue as the wait).
    asked: Instant,
}

/// A clock row: a table's, or an owner's on a per-user table (as `stamp_for` picks it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Clock {
    table: String,
    owner: Option<String>,
}

impl Clock {
    /// The clock row a write on `schema` in `scope` takes its stamp from.
    pub(super) fn of(schema: &TableSchema, scope: &Scope) -> Self {
        Clock {
            table: schema.name.clone(),
            owner: sql::stamps_per_owner(schema, scope).map(str::to_owned),
        }
    }
}

/// The store's queue of writes.
pub(super) type Queue = GroupQueue<Job, Done>;

/// Queue `work` on the store's writer and wait until the commit that holds it returned.
pub(super) async fn submit(
    inner: &Arc<Inner>,
    clock: Option<Clock>,
    work: Work,
) -> StoreResult<Done> {
    let job = Job {
        work,
        clock,
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
        let result = (p.job.work)(&mut conn, Stamping::Own { commit_order });
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
    if let Err(e) = super::exec_cached(conn, "BEGIN IMMEDIATE") {
        tracing::warn!("group commit: BEGIN failed ({e}); running its writes one by one");
        return Together::NotStarted;
    }
    let mut stamps = match take_stamps(conn, commit_order, group) {
        Ok(stamps) => stamps,
        Err(e) => {
            tracing::warn!(
                "group commit: taking the stamps failed ({e}); running its writes one by one"
            );
            if !conn.is_autocommit() {
                let _ = super::exec_cached(conn, "ROLLBACK");
            }
            return Together::NotStarted;
        }
    };
    let mut results = Vec::with_capacity(group.len());
    for p in group.iter_mut() {
        let stamping = match &p.job.clock {
            Some(clock) => Stamping::Given(stamps.get_mut(clock).and_then(VecDeque::pop_front)),
            // A batch or an unstamped write: its own savepoint, stamps from the clock row.
            None => Stamping::Own { commit_order },
        };
        let result = (p.job.work)(conn, stamping);
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
    match super::exec_cached(conn, "COMMIT") {
        Ok(()) => Together::Committed(results),
        Err(e) => {
            // A failed COMMIT may leave the transaction open: end it, so the next write does
            // not find the connection inside it.
            if !conn.is_autocommit() {
                let _ = super::exec_cached(conn, "ROLLBACK");
            }
            let e = super::classify(e);
            tracing::error!("group commit: COMMIT failed: {e}");
            Together::CommitFailed(e)
        }
    }
}

/// Every stamp of `group`'s stamped writes, per clock row in queue order, taken with one
/// statement per clock row: the row moves by as many stamps as the group has writes on it, one
/// version and (with commit-order stamps) 1 ms a stamp, the first one `max(now, last + 1 ms)`
/// as for a write alone. A write that then writes nothing (a failed compare-and-swap, a taken
/// id) leaves its stamp unused: a gap, never a reuse, and stamps only have to increase.
fn take_stamps(
    conn: &Connection,
    commit_order: bool,
    group: &[Pending<Job, Done>],
) -> StoreResult<HashMap<Clock, VecDeque<Stamp>>> {
    let mut counts: Vec<(&Clock, i64)> = Vec::new();
    for clock in group.iter().filter_map(|p| p.job.clock.as_ref()) {
        match counts.iter_mut().find(|(c, _)| *c == clock) {
            Some((_, n)) => *n += 1,
            None => counts.push((clock, 1)),
        }
    }
    let mut stamps = HashMap::with_capacity(counts.len());
    for (clock, n) in counts {
        let (last_ms, last_counter): (i64, i64) = match &clock.owner {
            None => conn
                .prepare_cached(table_stamps_sql(commit_order))
                .and_then(|mut st| {
                    st.query_row(rusqlite::params![clock.table, n], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                }),
            Some(owner) => conn
                .prepare_cached(owner_stamps_sql(commit_order))
                .and_then(|mut st| {
                    st.query_row(rusqlite::params![clock.table, owner, n], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                }),
        }
        .map_err(classify)?;
        let taken = (0..n)
            .map(|i| {
                let back = n - 1 - i;
                Stamp {
                    // Without commit-order stamps every write gets the database's now.
                    updated_at: Timestamp::from_unix_millis(if commit_order {
                        last_ms - back
                    } else {
                        last_ms
                    }),
                    version: version_from_counter((last_counter - back) as u64),
                }
            })
            .collect();
        stamps.insert(clock.clone(), taken);
    }
    Ok(stamps)
}

/// `now` in milliseconds, as `stamp` reads it.
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

/// Takes `?2` stamps of table `?1`'s clock row at once (see [`take_stamps`]); returns the last.
fn table_stamps_sql(commit_order: bool) -> &'static str {
    const _: () = assert!(matches!(CLOCK_TABLE.as_bytes(), b"tablesync_clock"));
    if commit_order {
        concat!(
            "UPDATE tablesync_clock SET last_updated_at = max(",
            now_ms!(),
            " + ?2 - 1, last_updated_at + ?2), last_version = last_version + ?2 \
             WHERE table_name = ?1 RETURNING last_updated_at, last_version"
        )
    } else {
        concat!(
            "UPDATE tablesync_clock SET last_updated_at = ",
            now_ms!(),
            ", last_version = last_version + ?2 \
             WHERE table_name = ?1 RETURNING last_updated_at, last_version"
        )
    }
}

/// Takes `?3` stamps of owner `?2`'s clock row of table `?1` at once, creating the row on the
/// owner's first write (as `sql::owner_stamp_sql` does for one); returns the last.
fn owner_stamps_sql(commit_order: bool) -> &'static str {
    const _: () = assert!(matches!(
        OWNER_CLOCK_TABLE.as_bytes(),
        b"tablesync_owner_clock"
    ));
    if commit_order {
        concat!(
            "INSERT INTO tablesync_owner_clock AS c (table_name, owner, last_updated_at, last_version) \
             VALUES (?1, ?2, ",
            now_ms!(),
            " + ?3 - 1, ?3) ON CONFLICT (table_name, owner) DO UPDATE SET last_updated_at = max(",
            now_ms!(),
            " + ?3 - 1, c.last_updated_at + ?3), last_version = c.last_version + ?3 \
             RETURNING last_updated_at, last_version"
        )
    } else {
        concat!(
            "INSERT INTO tablesync_owner_clock AS c (table_name, owner, last_updated_at, last_version) \
             VALUES (?1, ?2, ",
            now_ms!(),
            ", ?3) ON CONFLICT (table_name, owner) DO UPDATE SET last_updated_at = ",
            now_ms!(),
            ", last_version = c.last_version + ?3 RETURNING last_updated_at, last_version"
        )
    }
}

/// A result of the wrong kind from a queue entry (a bug).
pub(super) fn unexpected() -> StoreError {
    StoreError::new(
        StoreErrorKind::Internal,
        "group commit answered a write with the wrong kind of result",
    )
}
