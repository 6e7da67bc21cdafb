//! The SQLite store (rusqlite, bundled): one writer connection and a few readers in WAL mode.
//!
//! * Writes go through the single writer connection, in `BEGIN IMMEDIATE` transactions, so
//!   they are serialised and commit in stamp order even without the clock row's lock.
//!   Concurrent writes share one transaction and one WAL sync (group commit, `sqlite/group.rs`),
//!   their stamps taken together.
//! * Reads use a small set of read-only connections; WAL lets them run beside the writer.
//! * All database work is plain synchronous code run on `spawn_blocking`; a connection's mutex is
//!   taken inside the blocking task and never held across an `.await`. The exceptions are reads
//!   by id (`point_read`) and list requests (`bounded_read`): they run inline on the async
//!   worker when a reader connection is free, never waiting there (no lock wait, no busy
//!   handler), else on the blocking pool. A list runs inline for `sqlite_inline_list_budget_us`
//!   at most (SQLite's progress handler stops it), then again on the pool.
//!
//! Storage per ARCHITECTURE.md: string/date `TEXT` (dates in wire form, so text order is time
//! order), number `REAL`, boolean `INTEGER` 0/1; system columns `id TEXT PRIMARY KEY`,
//! `createdAt`/`updatedAt` `TEXT`, `version TEXT`, `deleted INTEGER`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, Value as DbValue, ValueRef};
use rusqlite::{
    params_from_iter, Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior,
};
use serde_json::Value;
use tablesync_protocol::odata::sql::{quote_ident, ColumnType, Dialect, SqlValue};
use tablesync_protocol::time::Timestamp;

use super::encode::Cell;
use super::sql::{self, CasKind, ListSql, StoredTypes, CLOCK_TABLE, OWNER_CLOCK_TABLE};
use super::{
    BoxFuture, EncodedPage, ListPage, ListQuery, PageEncoder, Scope, Stamp, Store, StoreError,
    StoreErrorKind,
};
use super::{PoolStatus, StoreResult, WriteOutcome};
use crate::config::{IdType, StoreConfig};
use crate::observe::metrics::{GroupCommits, PoolWait};
use crate::table::{json_number, version_from_counter, Column, Item, TableSchema};

mod batch_tx;
mod group;

/// The SQL dialect of this store.
const DIALECT: Dialect = Dialect::Sqlite;

/// SQLite's column types: string/date `TEXT`, number `REAL`, boolean `INTEGER`.
const TYPES: StoredTypes = StoredTypes {
    declared: sqlite_type,
    protocol: type_from_sqlite,
};

/// An SQLite database file served by one writer and several reader connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, reopened by [`Store::ping`].
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// Round-robin cursor over `readers`.
    next_reader: AtomicUsize,
    /// Every connection's busy timeout (`busy_timeout_ms`), put back after an inline read.
    busy: Duration,
    /// How long a list may run inline (`sqlite_inline_list_budget_us`); zero: never inline.
    inline_list_budget: Duration,
    commit_order_stamps: bool,
    /// Taken (asynchronously) by whoever uses the writer connection: a group commit, DDL, and
    /// an open batch transaction for its whole life, so no other write meets the writer
    /// connection in the middle of a batch. Held until the blocking work is done (a cancelled
    /// request does not let the next one in early).
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Writes waiting to be committed together (group commit; shares `gate`).
    group: group::Queue,
    /// Writes per commit, for the metrics.
    commits: GroupCommits,
    /// Most groups one runner commits in a row (`group_commit_rounds_max`, at least 1).
    group_rounds_max: usize,
    /// Connections running an operation now (the metrics' pool gauge).
    in_use: AtomicUsize,
    /// How long operations waited for their connection's mutex.
    wait: PoolWait,
}

/// Counts a connection as in use while alive.
struct InUse<'a>(&'a AtomicUsize);

impl<'a> InUse<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InUse(counter)
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database file and switch it to WAL. Blocking.
    pub fn open(path: &Path, config: &StoreConfig) -> StoreResult<Self> {
        let busy = Duration::from_millis(config.busy_timeout_ms);
        let writer = Connection::open(path).map_err(|e| open_error(path, e))?;
        writer.busy_timeout(busy).map_err(classify)?;
        writer.set_prepared_statement_cache_capacity(config.sqlite_statement_cache_max);
        let mode = switch_to_wal(&writer, busy)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::new(
                StoreErrorKind::Internal,
                format!("cannot switch {} to WAL (got {mode})", path.display()),
            ));
        }
        // FULL by default: see `SqliteSynchronous` for why an acknowledged write must survive
        // an OS crash.
        writer
            .pragma_update(
                None,
                "synchronous",
                config.sqlite_synchronous.pragma_value(),
            )
            .map_err(classify)?;
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let mut readers = Vec::with_capacity(config.reader_connections);
        for _ in 0..config.reader_connections {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            let reader =
                Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
            reader.busy_timeout(busy).map_err(classify)?;
            reader.set_prepared_statement_cache_capacity(config.sqlite_statement_cache_max);
            readers.push(Mutex::new(reader));
        }
        let commits = GroupCommits::new();
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                in_use: AtomicUsize::new(0),
                wait: PoolWait::new(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                busy,
                inline_list_budget: Duration::from_micros(config.sqlite_inline_list_budget_us),
                commit_order_stamps: config.commit_order_stamps,
                group: group::Queue::new(
                    Arc::clone(&gate),
                    config.group_commit_writes_max,
                    commits.clone(),
                ),
                gate,
                commits,
                group_rounds_max: config.group_commit_rounds_max.max(1),
            }),
        })
    }

    /// Run the row write `f` through the group commit (`sqlite/group.rs`): with the writes
    /// queued beside it, in one transaction; answered once that transaction committed.
    ///
    /// `clock` is the clock row the write takes its stamp from (None: it takes none), so that a
    /// group can take the stamps of all its writes at once.
    async fn write_row<F>(&self, clock: Option<group::Clock>, mut f: F) -> StoreResult<WriteOutcome>
    where
        F: FnMut(&mut Connection, Stamping) -> StoreResult<WriteOutcome> + Send + 'static,
    {
        let work: group::Work =
            Box::new(move |conn, stamping| f(conn, stamping).map(group::Done::Write));
        match group::submit(&self.inner, clock, work).await? {
            group::Done::Write(outcome) => Ok(outcome),
            group::Done::Work(_) => Err(group::unexpected()),
        }
    }

    /// Run `f` on the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, bool) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        // The wait includes the batch gate: a write queued behind an open batch waits there.
        let asked = Instant::now();
        let gate = Arc::clone(&inner.gate).lock_owned().await;
        run_blocking(move || {
            let mut conn = lock(&inner.writer);
            inner.wait.observe(asked.elapsed());
            let _in_use = InUse::new(&inner.in_use);
            let result = f(&mut conn, inner.commit_order_stamps);
            drop(gate);
            result
        })
        .await
    }

    /// Run `f` on one of the reader connections on the blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let asked = Instant::now();
        run_blocking(move || {
            let index = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let mut conn = lock(&inner.readers[index]);
            inner.wait.observe(asked.elapsed());
            let _in_use = InUse::new(&inner.in_use);
            f(&mut conn)
        })
        .await
    }

    /// Run the short read `f` (a lookup by key) at once on this async worker when a reader
    /// connection is free, else on the blocking pool like [`SqliteStore::read`]. A lookup takes
    /// microseconds, while the hop to the blocking pool and back costs two thread switches,
    /// which dominated the profile of reads by id. The inline attempt never waits: it only
    /// takes a connection nobody holds (`try_lock`) and runs with SQLite's busy handler off;
    /// on `Busy` (a lock SQLite would have waited for) the read runs again on the pool, where
    /// it waits `busy_timeout_ms` as any read does. Only for lookups: a list page or a query
    /// may step many rows and stays on the pool so that it never stalls the runtime.
    async fn point_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        if let Some(result) = self.read_inline(&f, None) {
            return result;
        }
        self.read(move |conn| f(conn)).await
    }

    /// Run the read `f` (a list page or query, which may step many rows) inline like
    /// [`SqliteStore::point_read`], but for `inline_list_budget` at most: SQLite's progress
    /// handler stops a read that runs longer, which then runs again from the start on the
    /// blocking pool, without a budget. A 1000-row page takes about a millisecond, and the two
    /// thread switches of the pool were a quarter of that; the budget bounds how long one slow
    /// query holds up the other tasks of its worker, and what an overrun does twice.
    async fn bounded_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let budget = self.inner.inline_list_budget;
        if !budget.is_zero() {
            if let Some(result) = self.read_inline(&f, Some(budget)) {
                return result;
            }
        }
        self.read(move |conn| f(conn)).await
    }

    /// The inline attempt of [`SqliteStore::point_read`] and [`SqliteStore::bounded_read`]:
    /// None when every reader is taken, the database was busy, or `budget` ran out first.
    fn read_inline<T>(
        &self,
        f: &impl Fn(&mut Connection) -> StoreResult<T>,
        budget: Option<Duration>,
    ) -> Option<StoreResult<T>> {
        let inner = &self.inner;
        let n = inner.readers.len();
        let first = inner.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let mut conn = match inner.readers[(first + i) % n].try_lock() {
                Ok(conn) => conn,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            inner.wait.observe(Duration::ZERO);
            let _in_use = InUse::new(&inner.in_use);
            if conn.busy_timeout(Duration::ZERO).is_err() {
                return None;
            }
            let stopped = budget.map(|budget| stop_after(&conn, budget));
            // The handler comes off even if `f` panics: a reader left with an expired deadline
            // would stop every later read on it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut conn)));
            if stopped.is_some() {
                conn.progress_handler(0, None::<fn() -> bool>);
            }
            let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if let Err(e) = conn.busy_timeout(inner.busy) {
                return Some(Err(classify(e)));
            }
            let overran = stopped.is_some_and(|flag| flag.load(Ordering::Relaxed));
            return match result {
                Err(e) if e.kind == StoreErrorKind::Busy => None,
                // Stopped by the budget (SQLite answers SQLITE_INTERRUPT): not the read's answer.
                Err(_) if overran => None,
                other => Some(other),
            };
        }
        None
    }
}

/// How many SQLite virtual-machine steps run between two looks at the clock of an inline read:
/// a few microseconds of work, so a budget is kept to within that, and the clock is read some
/// thirty times in a 1000-row page.
const PROGRESS_STEPS: i32 = 1000;

/// Install a progress handler on `conn` that stops the running statement once `budget` has
/// passed (SQLite then answers `SQLITE_INTERRUPT`); the flag tells that it did. The caller
/// removes the handler when the read is done.
fn stop_after(conn: &Connection, budget: Duration) -> Arc<std::sync::atomic::AtomicBool> {
    // A budget too large for the clock (years, from a config value) never stops anything.
    let deadline = Instant::now().checked_add(budget);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stopped);
    conn.progress_handler(
        PROGRESS_STEPS,
        Some(move || {
            let over = deadline.is_some_and(|deadline| Instant::now() >= deadline);
            if over {
                flag.store(true, Ordering::Relaxed);
            }
            over
        }),
    );
    stopped
}

/// `PRAGMA journal_mode = WAL`, retried while another process holds the file. SQLite does not
/// call the busy handler for a journal-mode change, so several servers opening one fresh database
/// at once would otherwise fail with "database is locked" at once instead of waiting their turn.
fn switch_to_wal(conn: &Connection, busy: Duration) -> StoreResult<String> {
    let deadline = std::time::Instant::now() + busy;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(e) => {
                let err = classify(e);
                if err.kind != StoreErrorKind::Busy || std::time::Instant::now() >= deadline {
                    return Err(err);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        StoreError::new(
            StoreErrorKind::Internal,
            format!("database worker failed: {e}"),
        )
    })?
}

/// A poisoned mutex only means an earlier task panicked while holding the connection; rusqlite
/// rolled its transaction back on unwind, so the connection is still usable.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let message = e.to_string();
    let path = path.display().to_string();
    // SQLite's open errors often name the file already.
    let message = if message.contains(&path) {
        format!("cannot open database: {message}")
    } else {
        format!("cannot open database {path}: {message}")
    };
    StoreError::new(StoreErrorKind::Internal, message)
}

/// SQLite reports its compile-time limits (`SQLITE_MAX_*`) as plain `SQLITE_ERROR`s, told apart
/// only by their message; these come from the size of the client's query, not from a bug.
fn is_input_limit(message: &str) -> bool {
    [
        "too many terms",
        "too many SQL variables",
        "Expression tree is too large",
        "parser stack overflow",
        "too many columns",
        "too many arguments",
        "integer overflow",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Sort rusqlite errors into backend-neutral kinds.
fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, message) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => StoreErrorKind::Busy,
            C::TooBig => StoreErrorKind::InvalidInput,
            C::TypeMismatch | C::ConstraintViolation => StoreErrorKind::Query,
            _ if message.as_deref().is_some_and(is_input_limit) => StoreErrorKind::InvalidInput,
            _ => StoreErrorKind::Internal,
        },
        rusqlite::Error::SqlInputError { msg, .. } if is_input_limit(msg) => {
            StoreErrorKind::InvalidInput
        }
        rusqlite::Error::SqlInputError { .. }
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreErrorKind::Query,
        _ => StoreErrorKind::Internal,
    };
    StoreError::new(kind, e.to_string())
}

/// Binds a protocol value: booleans as 0/1, timestamps as wire-form text.
struct Bind<'a>(&'a SqlValue);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlValue::Null => ToSqlOutput::Owned(DbValue::Null),
            SqlValue::Bool(b) => ToSqlOutput::Owned(DbValue::Integer(i64::from(*b))),
            SqlValue::Int(i) => ToSqlOutput::Owned(DbValue::Integer(*i)),
            SqlValue::Real(f) => ToSqlOutput::Owned(DbValue::Real(*f)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Timestamp(t) => ToSqlOutput::Owned(DbValue::Text(t.to_string())),
        })
    }
}

fn binds(values: &[SqlValue]) -> impl Iterator<Item = Bind<'_>> {
    values.iter().map(Bind)
}

fn sqlite_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String | ColumnType::Date => "TEXT",
        ColumnType::Number => "REAL",
        ColumnType::Boolean => "INTEGER",
    }
}

/// The protocol type of a column found in the database but not in the config (added
/// dynamically by an earlier run; dynamic schema never makes date columns).
fn type_from_sqlite(decl: &str) -> Option<ColumnType> {
    match decl.to_ascii_uppercase().as_str() {
        "TEXT" => Some(ColumnType::String),
        "REAL" => Some(ColumnType::Number),
        "INTEGER" => Some(ColumnType::Boolean),
        _ => None,
    }
}

/// JSON for a stored value of a column of type `ty`.
fn value_json(value: ValueRef<'_>, ty: ColumnType) -> Value {
    match (ty, value) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Boolean, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Boolean, ValueRef::Real(f)) => Value::Bool(f != 0.0),
        (_, ValueRef::Integer(i)) => Value::from(i),
        (_, ValueRef::Real(f)) => json_number(f),
        (_, ValueRef::Text(t)) => Value::String(String::from_utf8_lossy(t).into_owned()),
        (_, ValueRef::Blob(_)) => Value::Null,
    }
}

/// Read a row selected with [`sql::select_list`].
fn read_item(row: &rusqlite::Row<'_>, schema: &TableSchema) -> rusqlite::Result<Item> {
    sql::read_item(schema, |index, ty| Ok(value_json(row.get_ref(index)?, ty)))
}

fn get_row(
    conn: &Connection,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
) -> rusqlite::Result<Option<Item>> {
    let (sql, params) = sql::get_row_sql(DIALECT, schema, scope, id);
    // Cached: every read by id, and every insert's existence check, runs this same text.
    conn.prepare_cached(&sql)?
        .query_row(params_from_iter(binds(&params)), |r| read_item(r, schema))
        .optional()
}

/// Run a parameterless control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`, …) through the
/// connection's statement cache: a group runs several per write, and parsing them again each
/// time (`execute_batch`) showed in the write path's profile.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// A write's transaction: `BEGIN IMMEDIATE` on its own, or a savepoint (`tsr`) when the writer
/// is already inside a batch's transaction (`batch_tx`), so a failed compare-and-swap still
/// rolls back only its own stamp, or nothing in a group's transaction that gave the write its
/// stamp (`group`). Dropped without [`WriteTx::commit`], it rolls back (a savepoint: rolled
/// back to and released).
struct WriteTx<'c> {
    conn: &'c Connection,
    kind: TxKind,
    open: bool,
}

/// What a [`WriteTx`] began.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TxKind {
    /// `BEGIN IMMEDIATE`: a write alone.
    Own,
    /// `SAVEPOINT tsr` in an open transaction (a batch's; a hard delete in a group's).
    Savepoint,
    /// Nothing: a write of a group that took its stamp already, whose one modifying statement
    /// is atomic by itself (SQLite rolls back a failed statement, not the transaction).
    InGroup,
}

/// How a write gets its transaction and its stamp.
#[derive(Clone, Debug)]
pub(super) enum Stamping {
    /// Its own transaction (or a savepoint of the open one), the stamp taken from the clock row
    /// inside it; `commit_order` as in [`stamp`].
    Own { commit_order: bool },
    /// In a group's transaction, which took this write's stamp with the others' (None: the
    /// write takes none): no savepoint, no clock row statement of its own.
    Given(Option<Stamp>),
}

impl From<bool> for Stamping {
    /// A write taking its own stamp, with commit-order stamps on or off.
    fn from(commit_order: bool) -> Self {
        Stamping::Own { commit_order }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl WriteTx<'_> {
    fn commit(mut self) -> rusqlite::Result<()> {
        match self.kind {
            TxKind::Own => exec_cached(self.conn, "COMMIT")?,
            TxKind::Savepoint => exec_cached(self.conn, "RELEASE tsr")?,
            TxKind::InGroup => {}
        }
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        // SQLite may have rolled the whole transaction back already (e.g. a full disk): then
        // there is nothing left to end.
        if !self.open || self.conn.is_autocommit() {
            return;
        }
        match self.kind {
            TxKind::Own => {
                let _ = exec_cached(self.conn, "ROLLBACK");
            }
            TxKind::Savepoint => {
                let _ = exec_cached(self.conn, "ROLLBACK TO tsr");
                let _ = exec_cached(self.conn, "RELEASE tsr");
            }
            // Nothing was written: the one modifying statement failed or was not run.
            TxKind::InGroup => {}
        }
    }
}

fn begin_write<'c>(conn: &'c mut Connection, stamping: &Stamping) -> StoreResult<WriteTx<'c>> {
    let kind = match stamping {
        Stamping::Given(_) if !conn.is_autocommit() => TxKind::InGroup,
        _ if !conn.is_autocommit() => TxKind::Savepoint,
        _ => TxKind::Own,
    };
    match kind {
        TxKind::Own => exec_cached(conn, "BEGIN IMMEDIATE").map_err(classify)?,
        TxKind::Savepoint => exec_cached(conn, "SAVEPOINT tsr").map_err(classify)?,
        TxKind::InGroup => {}
    }
    Ok(WriteTx {
        conn,
        kind,
        open: true,
    })
}

/// The stamp of a write on `schema` in `scope`: the one its group took, or from the clock row
/// ([`stamp_for`]).
fn write_stamp(
    tx: &Connection,
    schema: &TableSchema,
    scope: &Scope,
    stamping: Stamping,
) -> StoreResult<Stamp> {
    match stamping {
        Stamping::Own { commit_order } => {
            stamp_for(tx, schema, scope, commit_order).map_err(classify)
        }
        Stamping::Given(Some(stamp)) => Ok(stamp),
        Stamping::Given(None) => Err(StoreError::new(
            StoreErrorKind::Internal,
            "group commit gave a stamped write no stamp",
        )),
    }
}

/// Take the next stamp of `table` inside the write transaction `tx`.
///
/// One `UPDATE … RETURNING` on the clock row: `updatedAt = max(now, last + 1 ms)` and the next
/// version counter. The PostgreSQL store runs the same statement, whose row lock then orders
/// concurrent writers' commits; here the single writer connection already does.
/// With `commit_order` off, `updatedAt` is the database clock at statement time (may repeat).
pub fn stamp(tx: &Connection, table: &str, commit_order: bool) -> rusqlite::Result<Stamp> {
    macro_rules! stamp_sql {
        ($updated:literal) => {
            concat!(
                "UPDATE tablesync_clock SET last_updated_at = ",
                $updated,
                ", last_version = last_version + 1 \
                 WHERE table_name = ?1 RETURNING last_updated_at, last_version"
            )
        };
    }
    const _: () = assert!(matches!(CLOCK_TABLE.as_bytes(), b"tablesync_clock"));
    // Static text: a batch or a group takes a stamp per write, from the statement cache.
    let sql = if commit_order {
        stamp_sql!("max(CAST(unixepoch('subsec') * 1000 AS INTEGER), last_updated_at + 1)")
    } else {
        stamp_sql!("CAST(unixepoch('subsec') * 1000 AS INTEGER)")
    };
    let (ms, counter): (i64, i64) = tx
        .prepare_cached(sql)?
        .query_row([table], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Stamp {
        updated_at: Timestamp::from_unix_millis(ms),
        version: version_from_counter(counter as u64),
    })
}

/// The stamp of a write on `schema` in `scope`: from the owner's clock row on a per-user table
/// (created by the owner's first write), else from the table's ([`stamp`]).
fn stamp_for(
    tx: &Connection,
    schema: &TableSchema,
    scope: &Scope,
    commit_order: bool,
) -> rusqlite::Result<Stamp> {
    let Some(owner) = sql::stamps_per_owner(schema, scope) else {
        return stamp(tx, &schema.name, commit_order);
    };
    let (ms, counter): (i64, i64) = tx
        .prepare_cached(&sql::owner_stamp_sql(DIALECT, commit_order))?
        .query_row([schema.name.as_str(), owner], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Stamp {
        updated_at: Timestamp::from_unix_millis(ms),
        version: version_from_counter(counter as u64),
    })
}

/// The primary key columns of a table, in key order.
fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
    let rows = stmt.query_map([table], |r| r.get(0))?;
    rows.collect()
}

/// The names of a table's indexes.
fn index_names(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 COLLATE NOCASE",
    )?;
    let rows = stmt.query_map([table], |r| r.get(0))?;
    rows.collect()
}

/// Columns of a table as stored: (name, declared type).
fn stored_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")?;
    let rows = stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn prepare_tables(conn: &mut Connection, tables: &[TableSchema]) -> StoreResult<Vec<TableSchema>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {CLOCK_TABLE} (table_name TEXT PRIMARY KEY NOT NULL, \
         last_updated_at INTEGER NOT NULL, last_version INTEGER NOT NULL)"
    ))
    .map_err(classify)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {OWNER_CLOCK_TABLE} (table_name TEXT NOT NULL, owner TEXT NOT NULL, \
         last_updated_at INTEGER NOT NULL, last_version INTEGER NOT NULL, PRIMARY KEY (table_name, owner))"
    ))
    .map_err(classify)?;
    tx.execute_batch(super::idempotency::SQLITE_DDL)
        .map_err(classify)?;
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let name = quote_ident(&table.name);
        // A per-user table is keyed (owner, id): each user has their own id space.
        let (owner_column, key) = match &table.owner_column {
            Some(owner) => (
                format!("{} TEXT NOT NULL, ", quote_ident(owner)),
                format!(", PRIMARY KEY ({}, \"id\")", quote_ident(owner)),
            ),
            None => (String::new(), String::new()),
        };
        // Integer ids: a rowid alias the database assigns; AUTOINCREMENT so that an id is never
        // handed out twice, even after the row holding the largest one was deleted (a client
        // may still hold that id). Config validation keeps them off per-user tables.
        let id_column = match (table.id_type, key.is_empty()) {
            (IdType::Integer, _) => "\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
            (IdType::String, true) => "\"id\" TEXT PRIMARY KEY NOT NULL",
            (IdType::String, false) => "\"id\" TEXT NOT NULL",
        };
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {name} ({owner_column}{id_column}, \"createdAt\" TEXT NOT NULL, \
             \"updatedAt\" TEXT NOT NULL, \"version\" TEXT NOT NULL, \"deleted\" INTEGER NOT NULL DEFAULT 0{key})"
        ))
        .map_err(classify)?;
        sql::check_primary_key(table, &primary_key(&tx, &table.name).map_err(classify)?)?;
        let stored = stored_columns(&tx, &table.name).map_err(classify)?;
        sql::check_id_column(table, &stored, |ty| ty.eq_ignore_ascii_case("INTEGER"))?;
        for column in sql::columns_to_add(table, &stored, &TYPES)? {
            tx.execute_batch(&TYPES.add_column_sql(&table.name, column))
                .map_err(classify)?;
        }
        let mut schema = table.clone();
        schema
            .columns
            .extend(sql::extra_columns(table, &stored, &TYPES)?);
        // Per-user tables lead their indexes with the owner: every read is within one owner.
        let owner_prefix = table
            .owner_column
            .as_ref()
            .map(|o| (format!("{}, ", quote_ident(o)), "owner_"))
            .unwrap_or_default();
        for (suffix, columns) in [
            ("updatedAt_id", "\"updatedAt\", \"id\""),
            ("createdAt_id", "\"createdAt\", \"id\""),
        ] {
            let index = quote_ident(&format!("ix_{}_{}{suffix}", table.name, owner_prefix.1));
            tx.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {name} ({}{columns})",
                owner_prefix.0
            ))
            .map_err(classify)?;
        }
        // Declared indexes: create the declared ones, drop those no longer declared.
        let wanted = sql::declared_indexes(DIALECT, table);
        for index in &wanted {
            tx.execute_batch(&index.create).map_err(classify)?;
        }
        let stored = index_names(&tx, &table.name).map_err(classify)?;
        for name in sql::indexes_to_drop(&stored, &wanted) {
            tx.execute_batch(&format!("DROP INDEX IF EXISTS {}", quote_ident(name)))
                .map_err(classify)?;
        }
        tx.execute(
            &format!("INSERT OR IGNORE INTO {CLOCK_TABLE} VALUES (?1, 0, 0)"),
            [&table.name],
        )
        .map_err(classify)?;
        out.push(schema);
    }
    tx.commit().map_err(classify)?;
    Ok(out)
}

fn add_columns(
    conn: &mut Connection,
    table: &TableSchema,
    columns: &[Column],
) -> StoreResult<Vec<Column>> {
    let tx = begin_write(conn, &Stamping::from(false))?;
    let stored = stored_columns(&tx, &table.name).map_err(classify)?;
    for column in columns {
        // Another request may have added it since this one read the schema: keep the stored one.
        if !sql::is_stored(&stored, &column.name) {
            tx.execute_batch(&TYPES.add_column_sql(&table.name, column))
                .map_err(classify)?;
        }
    }
    let stored = stored_columns(&tx, &table.name).map_err(classify)?;
    tx.commit().map_err(classify)?;
    // Keep the declared columns' types (a date is TEXT on disk) and order; append the rest.
    let mut out: Vec<Column> = table.columns.clone();
    out.extend(sql::extra_columns(table, &stored, &TYPES)?);
    Ok(out)
}

/// `EXPLAIN QUERY PLAN` of a list request, one plan line per line.
fn explain_list(
    conn: &mut Connection,
    schema: &TableSchema,
    scope: &Scope,
    query: &ListQuery,
) -> StoreResult<String> {
    let ListSql { sql, params, .. } = sql::list_sql(DIALECT, schema, scope, query);
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .map_err(classify)?;
    let rows = stmt
        .query_map(params_from_iter(binds(&params)), |r| r.get::<_, String>(3))
        .map_err(classify)?;
    let lines = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(classify)?;
    Ok(lines.join("\n"))
}

fn list_rows(
    conn: &mut Connection,
    schema: &TableSchema,
    scope: &Scope,
    query: &ListQuery,
) -> StoreResult<ListPage> {
    let list = sql::list_sql(DIALECT, schema, scope, query);
    // Prepared once per request: which columns, their JSON keys, their types.
    let encoder = PageEncoder::new(schema, query.select.as_deref());
    // One read transaction so the count and the page see the same snapshot.
    let tx = ReadTx::begin(conn)?;
    let mut items = EncodedPage::for_top(query.top);
    {
        // Cached: a client pulling page after page runs the same statement text every time.
        let mut stmt = tx.prepare_cached(&list.sql).map_err(classify)?;
        let mut rows = stmt
            .query(params_from_iter(binds(&list.params)))
            .map_err(classify)?;
        // Each row is written into the page while the cursor is on it: no item map per row.
        while let Some(row) = rows.next().map_err(classify)? {
            encoder
                .row(&mut items, |index, ty| {
                    row.get_ref(index).map(|value| value_cell(value, ty))
                })
                .map_err(classify)?;
        }
    }
    let count = if query.count {
        let n: i64 = tx
            .query_row(
                &list.count_sql,
                params_from_iter(binds(list.count_params())),
                |r| r.get(0),
            )
            .map_err(classify)?;
        Some(u64::try_from(n).unwrap_or(0))
    } else {
        None
    };
    tx.finish()?;
    Ok(ListPage { items, count })
}

/// A read transaction through the statement cache (`BEGIN`/`COMMIT`, no parse per page);
/// dropped without [`ReadTx::finish`], it rolls back.
struct ReadTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl std::ops::Deref for ReadTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'c> ReadTx<'c> {
    fn begin(conn: &'c Connection) -> StoreResult<Self> {
        exec_cached(conn, "BEGIN").map_err(classify)?;
        Ok(ReadTx { conn, open: true })
    }

    fn finish(mut self) -> StoreResult<()> {
        // A failed COMMIT leaves the transaction open: the drop rolls it back.
        exec_cached(self.conn, "COMMIT").map_err(classify)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = exec_cached(self.conn, "ROLLBACK");
        }
    }
}

/// The cell of a stored value of a column of type `ty`: what [`value_json`] makes of it,
/// borrowed.
fn value_cell(value: ValueRef<'_>, ty: ColumnType) -> Cell<'_> {
    match (ty, value) {
        (_, ValueRef::Null) => Cell::Null,
        (ColumnType::Boolean, ValueRef::Integer(i)) => Cell::Bool(i != 0),
        (ColumnType::Boolean, ValueRef::Real(f)) => Cell::Bool(f != 0.0),
        (_, ValueRef::Integer(i)) => Cell::Int(i),
        (_, ValueRef::Real(f)) => Cell::Real(f),
        // Checked as UTF-8 while it is written (`encode::Cell::RawText`).
        (_, ValueRef::Text(t)) => Cell::RawText(t),
        (_, ValueRef::Blob(_)) => Cell::Null,
    }
}

/// Run a `… RETURNING <select list>` statement; the row it wrote, if any.
fn returning(
    tx: &Connection,
    schema: &TableSchema,
    sql: &str,
    params: &[SqlValue],
) -> StoreResult<Option<Item>> {
    // Cached: the writes of a batch or a group repeat the same few statements.
    let mut stmt = tx.prepare_cached(sql).map_err(classify)?;
    let mut rows = stmt
        .query(params_from_iter(binds(params)))
        .map_err(classify)?;
    match rows.next().map_err(classify)? {
        Some(row) => Ok(Some(read_item(row, schema).map_err(classify)?)),
        None => Ok(None),
    }
}

/// A conditional write (`kind`: its compare-and-swap, `None` for a hard delete) wrote nothing:
/// say why (the transaction, stamp included, is then rolled back on drop).
fn classify_miss(
    tx: &Connection,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    kind: Option<CasKind>,
    expected: Option<&str>,
) -> StoreResult<WriteOutcome> {
    // Read back within the scope: another user's row is not found, exactly like a missing one.
    let current = get_row(tx, schema, scope, id).map_err(classify)?;
    Ok(sql::miss_outcome(kind, current, expected))
}

fn insert_row(
    conn: &mut Connection,
    stamping: impl Into<Stamping>,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    values: &[(String, SqlValue)],
) -> StoreResult<WriteOutcome> {
    let stamping = stamping.into();
    let tx = begin_write(conn, &stamping)?;
    let stamp = write_stamp(&tx, schema, scope, stamping)?;
    // Insert first and look only when the id turned out taken: a taken id is the rare case,
    // and the lookup before every insert was a quarter of an insert's own statements on the
    // writer (its share of the commit aside).
    let (sql, params) = sql::insert_sql(DIALECT, schema, scope, id, stamp, values);
    if let Some(item) = returning(&tx, schema, &sql, &params)? {
        tx.commit().map_err(classify)?;
        return Ok(WriteOutcome::Written(item));
    }
    // Nothing was written; dropping `tx` rolls the stamp back (in a group, the stamp stays
    // unused: a gap). `BEGIN IMMEDIATE` keeps other writers out, so the row is still there.
    match get_row(&tx, schema, scope, id).map_err(classify)? {
        Some(existing) => Ok(WriteOutcome::AlreadyExists(existing)),
        None => Err(StoreError::new(
            StoreErrorKind::Internal,
            format!("INSERT of {id} conflicted, yet no row has that id"),
        )),
    }
}

/// A stamped compare-and-swap `UPDATE … WHERE id = ? AND deleted = ? [AND version = ?]`;
/// when it matches no row, re-read to classify the miss (and roll back the stamp).
#[allow(clippy::too_many_arguments)]
fn cas_update(
    conn: &mut Connection,
    stamping: impl Into<Stamping>,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    assignments: &[(String, SqlValue)],
    kind: CasKind,
    expected: Option<&str>,
) -> StoreResult<WriteOutcome> {
    let stamping = stamping.into();
    let tx = begin_write(conn, &stamping)?;
    let stamp = write_stamp(&tx, schema, scope, stamping)?;
    let (sql, params) = sql::cas_update_sql(
        DIALECT,
        schema,
        scope,
        id,
        assignments,
        kind,
        expected,
        stamp,
    );
    if let Some(item) = returning(&tx, schema, &sql, &params)? {
        tx.commit().map_err(classify)?;
        return Ok(WriteOutcome::Written(item));
    }
    classify_miss(&tx, schema, scope, id, Some(kind), expected)
}

fn hard_delete(
    conn: &mut Connection,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    expected: Option<&str>,
) -> StoreResult<WriteOutcome> {
    // Takes no stamp: alone, or in a savepoint of the open transaction.
    let tx = begin_write(conn, &Stamping::from(false))?;
    let (sql, params) = sql::hard_delete_sql(DIALECT, schema, scope, id, expected);
    match returning(&tx, schema, &sql, &params)? {
        Some(item) => {
            tx.commit().map_err(classify)?;
            Ok(WriteOutcome::Written(item))
        }
        None => classify_miss(&tx, schema, scope, id, None, expected),
    }
}

impl Store for SqliteStore {
    fn dialect(&self) -> Dialect {
        DIALECT
    }

    fn transaction(&self, work: super::TxWork) -> BoxFuture<'_, StoreResult<()>> {
        // The work is driven on the writer's blocking thread by this request's runtime.
        let runtime = tokio::runtime::Handle::current();
        let mut work = work;
        let commit_order = self.inner.commit_order_stamps;
        // A batch takes its stamps itself, in a savepoint of its own.
        let job: group::Work =
            Box::new(move |conn, _| batch_tx::run_work(conn, commit_order, &runtime, &mut work));
        Box::pin(async move {
            match group::submit(&self.inner, None, job).await? {
                group::Done::Work(_) => Ok(()),
                group::Done::Write(_) => Err(group::unexpected()),
            }
        })
    }

    /// Opens the file afresh (read-only, never creating it) and reads its schema. The store's
    /// own connections would keep answering from a file that was deleted or replaced under
    /// them (they hold the old inode), so only a new connection shows that the configured path
    /// still holds a readable database.
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, StoreResult<()>> {
        let path = self.inner.path.clone();
        Box::pin(run_blocking(move || {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn =
                Connection::open_with_flags(&path, flags).map_err(|e| open_error(&path, e))?;
            conn.busy_timeout(timeout).map_err(classify)?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| open_error(&path, e))?;
            Ok(())
        }))
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            in_use: self.inner.in_use.load(Ordering::Relaxed) as u64,
            max: self.inner.readers.len() as u64 + 1,
        }
    }

    fn pool_wait(&self) -> &PoolWait {
        &self.inner.wait
    }

    fn group_commits(&self) -> &GroupCommits {
        &self.inner.commits
    }

    fn prepare<'a>(
        &'a self,
        tables: &'a [TableSchema],
    ) -> BoxFuture<'a, StoreResult<Vec<TableSchema>>> {
        let tables = tables.to_vec();
        Box::pin(self.write(move |conn, _| prepare_tables(conn, &tables)))
    }

    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        let (table, columns) = (table.clone(), columns.to_vec());
        Box::pin(self.write(move |conn, _| add_columns(conn, &table, &columns)))
    }

    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        let table = table.clone();
        Box::pin(self.read(move |conn| {
            let stored = stored_columns(conn, &table.name).map_err(classify)?;
            let mut out: Vec<Column> = table.columns.clone();
            out.extend(sql::extra_columns(&table, &stored, &TYPES)?);
            Ok(out)
        }))
    }

    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.point_read(move |conn| get_row(conn, &table, &scope, &id).map_err(classify)))
    }

    fn list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<ListPage>> {
        let (table, scope) = (table.clone(), scope.clone());
        Box::pin(self.bounded_read(move |conn| list_rows(conn, &table, &scope, &query)))
    }

    fn explain_list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<String>> {
        let (table, scope) = (table.clone(), scope.clone());
        Box::pin(self.read(move |conn| explain_list(conn, &table, &scope, &query)))
    }

    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let clock = group::Clock::of(table, scope);
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.write_row(Some(clock), move |conn, stamping| {
            insert_row(conn, stamping, &table, &scope, &id, &values)
        }))
    }

    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let clock = group::Clock::of(table, scope);
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.write_row(Some(clock), move |conn, stamping| {
            cas_update(
                conn,
                stamping,
                &table,
                &scope,
                &id,
                &values,
                CasKind::Update,
                expected.as_deref(),
            )
        }))
    }

    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        // A hard delete takes no stamp.
        let clock = table.soft_delete.then(|| group::Clock::of(table, scope));
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.write_row(clock, move |conn, stamping| {
            if table.soft_delete {
                cas_update(
                    conn,
                    stamping,
                    &table,
                    &scope,
                    &id,
                    &[],
                    CasKind::SoftDelete,
                    expected.as_deref(),
                )
            } else {
                hard_delete(conn, &table, &scope, &id, expected.as_deref())
            }
        }))
    }

    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let clock = group::Clock::of(table, scope);
        let (table, scope, id) = (table.clone(), scope.clone(), id.to_owned());
        Box::pin(self.write_row(Some(clock), move |conn, stamping| {
            cas_update(
                conn,
                stamping,
                &table,
                &scope,
                &id,
                &[],
                CasKind::Undelete,
                expected.as_deref(),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), &StoreConfig::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn commits_are_synced_to_disk_unless_configured_otherwise() {
        let (_dir, store) = store();
        let level: i64 = lock(&store.inner.writer)
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(level, 2, "PRAGMA synchronous = FULL");
        let dir = tempfile::tempdir().unwrap();
        let relaxed = StoreConfig {
            sqlite_synchronous: crate::config::SqliteSynchronous::Normal,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&dir.path().join("n.db"), &relaxed).unwrap();
        let level: i64 = lock(&store.inner.writer)
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(level, 1, "PRAGMA synchronous = NORMAL");
    }

    fn schema() -> TableSchema {
        TableSchema {
            name: "T".into(),
            columns: vec![Column {
                name: "a".into(),
                ty: ColumnType::String,
            }],
            soft_delete: true,
            owner_column: None,
            id_type: IdType::String,
            indexes: Vec::new(),
        }
    }

    #[test]
    fn stamps_are_strictly_increasing_even_when_the_clock_is_behind() {
        let (_dir, store) = store();
        let mut conn = lock(&store.inner.writer);
        prepare_tables(&mut conn, &[schema()]).unwrap();
        // Pretend an earlier write was stamped far in the future (clock stepped back since).
        let future = Timestamp::from_unix_millis(4_102_444_800_000); // 2100-01-01
        conn.execute(
            "UPDATE tablesync_clock SET last_updated_at = ?1, last_version = 41",
            [future.unix_millis()],
        )
        .unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let s1 = stamp(&tx, "T", true).unwrap();
        let s2 = stamp(&tx, "T", true).unwrap();
        assert_eq!(s1.updated_at.unix_millis(), future.unix_millis() + 1);
        assert_eq!(s2.updated_at.unix_millis(), future.unix_millis() + 2);
        assert_eq!(
            (s1.version, s2.version),
            (version_from_counter(42), version_from_counter(43))
        );
        // Without commit-order stamps the database clock is used as is.
        let s3 = stamp(&tx, "T", false).unwrap();
        assert!(s3.updated_at < future);
    }

    #[test]
    fn failed_compare_and_swap_rolls_back_its_stamp() {
        let (_dir, store) = store();
        let mut conn = lock(&store.inner.writer);
        let table = prepare_tables(&mut conn, &[schema()]).unwrap().remove(0);
        let WriteOutcome::Written(row) =
            insert_row(&mut conn, true, &table, &Scope::Shared, "x", &[]).unwrap()
        else {
            panic!()
        };
        let miss = cas_update(
            &mut conn,
            true,
            &table,
            &Scope::Shared,
            "x",
            &[],
            CasKind::Update,
            Some("stale"),
        )
        .unwrap();
        assert_eq!(miss, WriteOutcome::VersionMismatch(row.clone()));
        let clock: i64 = conn
            .query_row("SELECT last_version FROM tablesync_clock", [], |r| r.get(0))
            .unwrap();
        assert_eq!(clock, 1, "the mismatch did not consume a version");
        assert_eq!(
            cas_update(
                &mut conn,
                true,
                &table,
                &Scope::Shared,
                "nope",
                &[],
                CasKind::Update,
                None
            )
            .unwrap(),
            WriteOutcome::NotFound
        );
    }

    /// A store with table `T` holding row `x`.
    fn store_with_row() -> (tempfile::TempDir, SqliteStore, TableSchema) {
        let (dir, store) = store();
        let mut conn = lock(&store.inner.writer);
        let table = prepare_tables(&mut conn, &[schema()]).unwrap().remove(0);
        insert_row(&mut conn, true, &table, &Scope::Shared, "x", &[]).unwrap();
        drop(conn);
        (dir, store, table)
    }

    #[test]
    fn a_page_statement_is_planned_once_whatever_its_bindings() {
        // SQLite re-plans a cached statement when a parameter the planner read (a bound
        // LIMIT) gets a new binding: every page would parse and plan its statement again.
        let (_dir, store, table) = store_with_row();
        let page = |since: &str, skip: u64| ListQuery {
            filter: Some(tablesync_protocol::odata::sql::SqlFragment {
                sql: "\"updatedAt\" >= ?1".into(),
                params: vec![SqlValue::Text(since.into())],
            }),
            order_by: Some(tablesync_protocol::odata::sql::SqlFragment {
                sql: "\"updatedAt\" ASC".into(),
                params: vec![],
            }),
            include_deleted: true,
            skip,
            top: 1000,
            count: false,
            select: None,
        };
        let mut conn = lock(&store.inner.readers[0]);
        for (since, skip) in [("1970", 0), ("1970", 1), ("2000", 0), ("2100", 3)] {
            let rows = list_rows(&mut conn, &table, &Scope::Shared, &page(since, skip)).unwrap();
            assert_eq!(rows.items.rows(), usize::from(since != "2100" && skip == 0));
        }
        let sql = sql::list_sql(DIALECT, &table, &Scope::Shared, &page("1970", 0)).sql;
        let stmt = conn.prepare_cached(&sql).unwrap();
        // The cached statement the four pages ran (not a fresh one with nothing to count).
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 4, "{sql}");
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "{sql}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_by_id_waits_on_the_pool_when_every_reader_is_taken() {
        let (_dir, store, table) = store_with_row();
        // Hold every reader connection on another thread for a while: the inline attempt
        // finds none free and the read must queue for one on the blocking pool.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let guards: Vec<_> = store.inner.readers.iter().map(lock).collect();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                drop(guards);
            })
        };
        held_rx.recv().unwrap();
        let row = store.get(&table, &Scope::Shared, "x").await.unwrap();
        assert_eq!(row.unwrap()["id"], "x");
        holder.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_point_read_that_meets_a_lock_never_waits_inline_and_retries_on_the_pool() {
        let (_dir, store) = store();
        // The read sees the busy timeout it runs under, and reports `Busy` the first time, as
        // SQLite does for a lock it would have waited for.
        let timeouts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&timeouts);
        let answer = store
            .point_read(move |conn| {
                let ms: i64 = conn
                    .pragma_query_value(None, "busy_timeout", |r| r.get(0))
                    .map_err(classify)?;
                let mut seen = seen.lock().unwrap();
                seen.push(ms);
                if seen.len() == 1 {
                    return Err(StoreError::new(StoreErrorKind::Busy, "database is locked"));
                }
                Ok("answered")
            })
            .await
            .unwrap();
        assert_eq!(answer, "answered");
        // Inline without a busy handler (it never waits on the runtime), then on the pool with
        // the configured one.
        assert_eq!(*timeouts.lock().unwrap(), [0, 5_000]);
        // The connections got their busy timeout back after the inline attempt.
        for reader in &store.inner.readers {
            let ms: i64 = lock(reader)
                .pragma_query_value(None, "busy_timeout", |r| r.get(0))
                .unwrap();
            assert_eq!(ms, 5_000);
        }
        // Any other answer of the inline attempt is the answer: no second run.
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let err = store
            .point_read(move |_| -> StoreResult<()> {
                counted.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::new(StoreErrorKind::Query, "no such column"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Query);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// A store whose lists may run inline for `budget_us` microseconds.
    fn store_with_inline_budget(budget_us: u64) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            sqlite_inline_list_budget_us: budget_us,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&dir.path().join("b.db"), &config).unwrap();
        (dir, store)
    }

    /// A read that steps 300,000 rows (tens of milliseconds): far beyond a 1 ms budget.
    fn slow_count(conn: &mut Connection) -> StoreResult<i64> {
        conn.query_row(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
             SELECT count(*) FROM c",
            [],
            |r| r.get(0),
        )
        .map_err(classify)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_within_its_budget_runs_inline_and_without_a_budget_on_the_pool() {
        let caller = std::thread::current().id();
        // u64::MAX µs does not fit the clock: inline, never stopped (and no overflow panic).
        for (budget_us, inline) in [(1_000_000, true), (u64::MAX, true), (0, false)] {
            let (_dir, store) = store_with_inline_budget(budget_us);
            let ran_on = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&ran_on);
            let answer = store
                .bounded_read(move |_| {
                    seen.lock().unwrap().push(std::thread::current().id());
                    Ok(7)
                })
                .await
                .unwrap();
            assert_eq!(answer, 7);
            let ran_on = ran_on.lock().unwrap();
            assert_eq!(ran_on.len(), 1, "budget {budget_us} µs: one run");
            assert_eq!(ran_on[0] == caller, inline, "budget {budget_us} µs");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_that_overruns_its_budget_is_stopped_and_runs_again_on_the_pool() {
        let (_dir, store) = store_with_inline_budget(1_000);
        let caller = std::thread::current().id();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&runs);
        let count = store
            .bounded_read(move |conn| {
                let result = slow_count(conn);
                seen.lock()
                    .unwrap()
                    .push((std::thread::current().id(), result.is_ok()));
                result
            })
            .await
            .unwrap();
        // The whole count: the second run, on the pool, had no budget.
        assert_eq!(count, 300_000);
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 2, "stopped inline, then run again: {runs:?}");
        assert_eq!(runs[0], (caller, false), "the inline run was stopped");
        assert_ne!(runs[1].0, caller, "the second run was on the pool");
        assert!(runs[1].1);
        // No reader keeps the handler: the same slow read on each of them runs to the end.
        for _ in 0..store.inner.readers.len() {
            assert_eq!(store.read(slow_count).await.unwrap(), 300_000);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_inline_read_leaves_no_progress_handler_behind() {
        let (_dir, store) = store_with_inline_budget(1_000);
        let boom = |_: &mut Connection| -> StoreResult<()> { panic!("a read that panics") };
        for _ in 0..store.inner.readers.len() {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                store.read_inline(&boom, Some(Duration::from_millis(1)))
            }));
            assert!(caught.is_err(), "the panic reaches the caller");
        }
        // Every deadline has passed: a handler left behind would stop these reads.
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..store.inner.readers.len() {
            assert_eq!(store.read(slow_count).await.unwrap(), 300_000);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runner_commits_the_writes_queued_behind_its_group_and_then_lets_the_writer_go() {
        let dir = tempfile::tempdir().unwrap();
        // Groups of 2, at most 3 in a row: 12 queued writes need several runners.
        let config = StoreConfig {
            group_commit_writes_max: 2,
            group_commit_rounds_max: 3,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&dir.path().join("r.db"), &config).unwrap();
        let table = store.prepare(&[schema()]).await.unwrap().remove(0);
        // Hold the writer connection (on a thread of its own: the guard is not for an async
        // task) so that the first group blocks and the rest queue.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let guard = lock(&store.inner.writer);
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
                drop(guard);
            })
        };
        held_rx.recv().unwrap();
        let writes: Vec<_> = (0..12)
            .map(|i| {
                let (store, table) = (store.clone(), table.clone());
                tokio::spawn(async move {
                    let id = format!("r{i}");
                    store.insert(&table, &Scope::Shared, &id, Vec::new()).await
                })
            })
            .collect();
        // The first group (2 writes) waits for the writer; the other 10 wait in the queue.
        while store.inner.commits.queued_now() < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        for w in writes {
            assert!(matches!(
                w.await.unwrap().unwrap(),
                WriteOutcome::Written(_)
            ));
        }
        // The last runner let the gate go: DDL gets the writer.
        store.prepare(&[schema()]).await.unwrap();
        let n: i64 = lock(&store.inner.writer)
            .query_row("SELECT count(*) FROM T", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 12);
    }
}
