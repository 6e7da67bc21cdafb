//! The PostgreSQL store (sqlx, `postgres` feature only): two connection pools per server
//! process, any number of processes on one database.
//!
//! * **Reads never wait behind writes.** Reads (get, list, schema refresh, `/ready`) take
//!   connections from a pool of their own (`read_pool_connections_max`); writes, batches and
//!   DDL from the write pool (`pool_connections_max`). Writers queued on a clock row can hold
//!   every write connection, never a read's.
//! * **Group commit** (`postgres/group.rs`): the writes of this process to one clock row share
//!   one transaction: their stamps taken in one statement, then one statement a write (or, when
//!   one of them fails, each in its own savepoint).
//! * **Stamps from the database.** `updatedAt`/`createdAt` come from the database's
//!   `clock_timestamp()` (truncated to milliseconds) and `version` from the per-table counter in
//!   `tablesync_clock`, never from the server process's clock, so several processes agree.
//! * **Commit-ordered stamps (the no-missed-rows guard).** Every write transaction takes its
//!   stamp with one `UPDATE tablesync_clock … RETURNING` on the table's clock row before it
//!   touches the data row. That row lock is held until the transaction ends, so writers to one
//!   table queue up on it and each one's stamp is strictly greater than that of every write
//!   committed before it: stamp order is commit order. See ARCHITECTURE.md ("PostgreSQL:
//!   several processes, one database") for why a pull can never see a half-ordered state and
//!   what this costs.
//! * **Isolation.** Writes run in READ COMMITTED (explicitly, whatever the database default),
//!   which is what lets a writer that waited for the clock row read the row as the previous
//!   writer committed it. A list with `$inlinecount` runs count and page in one REPEATABLE READ
//!   read-only transaction so both see the same snapshot.
//! * **Schema.** Created and migrated at start under a transaction-scoped advisory lock, so
//!   several processes starting at once do not race on `CREATE TABLE IF NOT EXISTS`. Types per
//!   ARCHITECTURE.md: string `TEXT COLLATE "C"` (byte order, like SQLite's BINARY, so both
//!   stores sort and compare strings alike), number `DOUBLE PRECISION`, boolean `BOOLEAN`,
//!   date `TIMESTAMPTZ(3)`.
//! * **Indexes.** (`updatedAt`, `id`) and (`createdAt`, `id`), both columns `NULLS FIRST`: the
//!   columns are NOT NULL, but the protocol crate sorts ascending `NULLS FIRST` and PostgreSQL
//!   only uses an index for ORDER BY when the null placement matches the index's. Declared
//!   indexes (`sql::declared_indexes`) are made the same way under the DDL lock, and the ones no
//!   longer declared dropped.
//! * **Values.** Bound, never spliced. Dates are bound as binary `timestamptz` ([`bind`]; as
//!   text, their cast was evaluated again for every row a filter tested) and read back as the
//!   8 bytes of the binary `timestamptz` (microseconds since 2000-01-01), rendered in the wire
//!   form here ([`timestamp_millis`]), which keeps sqlx's optional date features out of the
//!   build. Cells are read from the row's bytes by the column type the result reports
//!   ([`Wire`]), not through sqlx's per-value type check: a 1000-row page reads 7000 cells,
//!   and the check cost more than the decoding. A page is encoded row by row as the rows
//!   arrive ([`fetch_items`]), while the database sends the next ones.
//! * **Pools.** Writes use sqlx's pool, which pings a connection when it comes back. Reads use
//!   our own (`postgres/read_pool.rs`, on deadpool), which hands a finished read's connection
//!   straight back: that ping was a second round trip for every read. Only a connection idle for
//!   `read_pool_ping_idle_ms`, or one whose read did not finish, is pinged; a read that met a
//!   dead connection runs once more on another.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgTypeInfo,
    PgValueFormat,
};
use sqlx::query::Query;
use sqlx::{Column as _, Connection, Postgres, Row, Transaction, TypeInfo as _, ValueRef as _};
use tablesync_protocol::odata::sql::{quote_ident, ColumnType, Dialect, SqlValue};
use tablesync_protocol::time::Timestamp;

use super::encode::Cell;
use super::sql::{self, CasKind, ListSql, StoredTypes, CLOCK_TABLE, OWNER_CLOCK_TABLE};
use super::{
    BoxFuture, EncodedPage, ListPage, ListQuery, PageEncoder, Scope, Stamp, Store, StoreError,
    StoreErrorKind,
};
use super::{PoolStatus, StoreResult, WriteOutcome};
use crate::config::{IdType, StoreConfig, PG_IDENTIFIER_BYTES_MAX};
use crate::observe::metrics::{GroupCommits, PoolWait};
use crate::table::{json_number, version_from_counter, Column, Item, TableSchema};

mod batch_tx;
mod group;
mod notify;
mod read_pool;

use read_pool::{ReadConn, ReadPool, ReadPoolConfig};

/// The SQL dialect of this store.
const DIALECT: Dialect = Dialect::Postgres;

/// PostgreSQL's column types (see the module docs), as declared and as
/// `information_schema.columns.data_type` reports them.
const TYPES: StoredTypes = StoredTypes {
    declared: pg_type,
    protocol: type_from_pg,
};

/// Versions for writes made with `commit_order_stamps = false`, which must not touch (and so
/// lock) the clock row. It starts at 2^48 so its values never meet a clock row's counter.
const UNORDERED_VERSION_SEQUENCE: &str = "tablesync_unordered_version_seq";

/// Key of the advisory lock taken around DDL (an arbitrary constant: "tblsync" in ASCII).
const DDL_LOCK_KEY: i64 = 0x0074_626c_7379_6e63;

/// A read's connection after its statements ran: closed when the connection itself failed,
/// else back to the pool as it is (a database error leaves it usable).
fn release<T>(conn: ReadConn, result: &Result<T, sqlx::Error>) {
    match result {
        Err(e) if is_connection_error(e) => conn.connection_failed(),
        _ => conn.finished(),
    }
}

/// Whether `e` says the connection itself failed, not the statement: then nothing of a read
/// was answered, and it can run again on another connection. Closed, reset or TLS errors, and
/// the database ending the session ([`is_session_ended`]).
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_session_ended(&code)),
        _ => false,
    }
}

/// SQLSTATEs with which PostgreSQL ends a session: class 08 (connection exception) and
/// 57P01–57P03 (the server shutting down or restarting, an operator's
/// `pg_terminate_backend`, not accepting connections yet). A restart or a failover sends
/// 57P01 to every connection before closing it, so a pooled connection's next statement reads
/// that error, not an I/O error.
fn is_session_ended(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

/// A PostgreSQL database shared by any number of server processes.
#[derive(Clone)]
pub struct PostgresStore {
    /// Reads (`read_pool_connections_max`).
    reads: ReadPool,
    /// Writes, batches and DDL (`pool_connections_max`).
    write_pool: PgPool,
    /// Group commit queues, one per clock row in use.
    groups: std::sync::Arc<group::Groups>,
    /// Writes per commit, for the metrics.
    commits: GroupCommits,
    /// What the pool connects with, for [`Store::ping`]'s diagnosis.
    options: PgConnectOptions,
    /// How long operations waited for a pooled connection.
    wait: PoolWait,
    commit_order_stamps: bool,
    write_hold_ms_max: u64,
    /// `[store] schema_lock_timeout_ms`: the start's wait for the DDL lock.
    schema_lock_timeout_ms: u64,
    /// This process's token in its change-feed announcements (`notify.rs`), so it can ignore
    /// its own.
    sender: std::sync::Arc<str>,
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user[:password]@host[:port]/database`, with `sslmode`,
    /// `sslrootcert` and the other libpq URL parameters sqlx reads). Fails when the database
    /// cannot be reached within `busy_timeout_ms`, and at once, with the OS's reason, when the
    /// connection is refused.
    pub async fn open(url: &str, config: &StoreConfig) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Internal,
                    format!("invalid PostgreSQL URL {}: {e}", redact(url)),
                )
            })?
            .application_name("tablesync")
            // A writer queued behind the clock row (or DDL) gives up after the busy timeout
            // instead of waiting for ever; the client gets 503 and retries.
            .options([("lock_timeout", config.busy_timeout_ms)])
            // The planner's cost of a random page read (`pg_random_page_cost`): see the config.
            .options([("random_page_cost", config.pg_random_page_cost)]);
        let wait = Duration::from_millis(config.busy_timeout_ms);
        let cannot_connect = |e: &sqlx::Error| {
            StoreError::new(
                classify(e).kind,
                format!("cannot connect to PostgreSQL at {}: {e}", redact(url)),
            )
        };
        // One plain connection first: the pool retries a refused connection until its acquire
        // timeout and then reports only "pool timed out", hiding the reason (refused, unknown
        // host, TLS or password) the operator needs.
        match tokio::time::timeout(wait, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(cannot_connect(&e)),
            Err(_) => {
                return Err(StoreError::new(
                    StoreErrorKind::Busy,
                    format!(
                    "cannot connect to PostgreSQL at {}: no answer within {} ms (busy_timeout_ms)",
                    redact(url),
                    config.busy_timeout_ms
                ),
                ))
            }
        }
        let reads = ReadPool::new(ReadPoolConfig {
            options: options.clone(),
            connections_max: config.read_pool_connections_max,
            ping_idle: Duration::from_millis(config.read_pool_ping_idle_ms),
            lifetime: Duration::from_millis(config.read_pool_connection_lifetime_ms),
            wait,
        })?;
        let write_pool = PgPoolOptions::new()
            .max_connections(config.pool_connections_max)
            .acquire_timeout(wait)
            .connect_with(options.clone())
            .await
            .map_err(|e| cannot_connect(&e))?;
        let commits = GroupCommits::new();
        Ok(PostgresStore {
            reads,
            write_pool,
            groups: std::sync::Arc::new(group::Groups::new(
                config.group_commit_writes_max,
                commits.clone(),
            )),
            commits,
            options,
            wait: PoolWait::new(),
            commit_order_stamps: config.commit_order_stamps,
            write_hold_ms_max: config.write_hold_ms_max,
            schema_lock_timeout_ms: config.schema_lock_timeout_ms,
            sender: uuid::Uuid::new_v4().simple().to_string().into(),
        })
    }

    /// A connection from the pool, its wait recorded for the metrics.
    async fn acquire(&self) -> StoreResult<ReadConn> {
        let asked = Instant::now();
        let conn = self.reads.get().await?;
        self.wait.observe(asked.elapsed());
        Ok(conn)
    }

    /// A write transaction, READ COMMITTED whatever the database's default (see the module docs).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        // Timed whole (acquire and BEGIN, one round trip more): sqlx begins a 'static
        // transaction only on a connection it acquires itself.
        let asked = Instant::now();
        let tx = self
            .write_pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| classify(&e))?;
        self.wait.observe(asked.elapsed());
        Ok(tx)
    }

    /// A write's transaction: its own (READ COMMITTED), or a savepoint of the batch transaction
    /// `outer` (`batch_tx`), so a failed compare-and-swap still rolls back only its own stamp.
    async fn begin_on<'c>(
        &self,
        outer: Option<&'c mut PgConnection>,
    ) -> StoreResult<Transaction<'c, Postgres>> {
        match outer {
            None => self.begin_write().await,
            Some(conn) => sqlx::Connection::begin(conn)
                .await
                .map_err(|e| classify(&e)),
        }
    }

    /// Take the next stamp of `table` inside the write transaction `tx`.
    ///
    /// With commit-order stamps: one `UPDATE … RETURNING` on the table's clock row, `updatedAt =
    /// max(database now, last + 1 ms)` and the next version counter. The row lock it takes orders
    /// this transaction's commit after every earlier writer's and before every later one's.
    /// Without: the database clock at statement time and a sequence number, no lock, no order
    /// (the classic bug, kept to prove the torture test catches it).
    ///
    /// On a per-user table (`scope` names the owner) the clock row is the owner's in
    /// `tablesync_owner_clock`, created by their first write (`INSERT … ON CONFLICT DO UPDATE`,
    /// which locks it just the same), so only writers of one owner queue behind each other.
    async fn stamp(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        schema: &TableSchema,
        scope: &Scope,
    ) -> StoreResult<Stamp> {
        let table = schema.name.as_str();
        let owner = sql::stamps_per_owner(schema, scope);
        let sql = if let (true, Some(_)) = (self.commit_order_stamps, owner) {
            sql::owner_stamp_sql(DIALECT, true)
        } else if self.commit_order_stamps {
            format!(
                "UPDATE {CLOCK_TABLE} SET last_updated_at = GREATEST(date_trunc('milliseconds', clock_timestamp()), \
                 last_updated_at + interval '1 millisecond'), last_version = last_version + 1 \
                 WHERE table_name = $1 \
                 RETURNING (extract(epoch FROM last_updated_at) * 1000)::bigint, last_version"
            )
        } else {
            format!(
                "SELECT (extract(epoch FROM date_trunc('milliseconds', clock_timestamp())) * 1000)::bigint, \
                 nextval('{UNORDERED_VERSION_SEQUENCE}') WHERE $1::text IS NOT NULL"
            )
        };
        let mut query = sqlx::query(&sql).bind(table);
        if let (true, Some(owner)) = (self.commit_order_stamps, owner) {
            query = query.bind(owner);
        }
        let (ms, counter) = clock_answer(table, query.fetch_optional(&mut **tx).await)?;
        Ok(Stamp {
            updated_at: Timestamp::from_unix_millis(ms),
            version: version_from_counter(u64::try_from(counter).unwrap_or(0)),
        })
    }

    /// Commit a write, first holding it open for a random time when the test-only
    /// `write_hold_ms_max` asks for it (the transaction keeps its stamp and row locks meanwhile;
    /// no Rust lock is held across the sleep). A `nested` write (a savepoint of a group or a
    /// batch) is not held: its transaction is, once, before its own commit.
    async fn commit_write(&self, tx: Transaction<'_, Postgres>, nested: bool) -> StoreResult<()> {
        if self.write_hold_ms_max > 0 && !nested {
            let random = uuid::Uuid::new_v4().as_u128() as u64;
            let hold = random % (self.write_hold_ms_max + 1);
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        tx.commit().await.map_err(|e| classify(&e))
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> Cow<'_, str> {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => Cow::Owned(format!(
                    "{}{user}:***{}",
                    &url[..scheme_end + 3],
                    &url[at..]
                )),
                None => Cow::Borrowed(url),
            }
        }
        _ => Cow::Borrowed(url),
    }
}

/// The (milliseconds, counter) a stamp statement returned from `table`'s clock row; no row means
/// the table was never prepared.
fn clock_answer(
    table: &str,
    answer: Result<Option<PgRow>, sqlx::Error>,
) -> StoreResult<(i64, i64)> {
    let row = answer.map_err(|e| classify(&e))?.ok_or_else(|| {
        StoreError::new(
            StoreErrorKind::Internal,
            format!("table {table} has no clock row (not prepared)"),
        )
    })?;
    let ms: i64 = row.try_get(0).map_err(|e| classify(&e))?;
    let counter: i64 = row.try_get(1).map_err(|e| classify(&e))?;
    Ok((ms, counter))
}

/// Sort sqlx errors into backend-neutral kinds (SQLSTATE classes for database errors).
fn classify(e: &sqlx::Error) -> StoreError {
    let kind = match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // serialization failure, deadlock, lock_timeout, statement timeout, too many connections
                "40001" | "40P01" | "55P03" | "57014" | "53300" => StoreErrorKind::Busy,
                // the session ended (a restart, a failover): the client may try again (503)
                c if is_session_ended(c) => StoreErrorKind::Busy,
                // data exceptions (overflow, bad value, division by zero) come from values the
                // request supplied; program limits (54: statement too complex, too many
                // columns/arguments) from its size.
                c if c.starts_with("22") || c.starts_with("54") => StoreErrorKind::InvalidInput,
                // integrity, syntax/undefined: SQL we built is wrong, a bug.
                c if c.starts_with("23") || c.starts_with("42") => StoreErrorKind::Query,
                _ => StoreErrorKind::Internal,
            }
        }
        sqlx::Error::PoolTimedOut => StoreErrorKind::Busy,
        sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreErrorKind::Query
        }
        _ => StoreErrorKind::Internal,
    };
    StoreError::new(kind, e.to_string())
}

fn pg_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "TEXT COLLATE \"C\"",
        ColumnType::Number => "DOUBLE PRECISION",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::Date => "TIMESTAMPTZ(3)",
    }
}

/// The protocol type of a stored column (`information_schema.columns.data_type`), and how to
/// name that type in messages.
fn type_from_pg(data_type: &str) -> Option<ColumnType> {
    match data_type {
        "text" => Some(ColumnType::String),
        "double precision" => Some(ColumnType::Number),
        "boolean" => Some(ColumnType::Boolean),
        "timestamp with time zone" => Some(ColumnType::Date),
        _ => None,
    }
}

/// Bind one protocol value. Every placeholder the store or the protocol crate writes carries an
/// explicit cast, so the declared parameter type only has to be castable to it; NULL goes as an
/// untyped-enough NULL text. Timestamps go as binary `timestamptz` ([`PgTimestamptz`]), the
/// type of their `$n::timestamptz` placeholder.
fn bind<'q>(
    q: Query<'q, Postgres, PgArguments>,
    value: &SqlValue,
) -> Query<'q, Postgres, PgArguments> {
    match value {
        SqlValue::Null => q.bind(None::<String>),
        SqlValue::Bool(b) => q.bind(*b),
        SqlValue::Int(i) => q.bind(*i),
        SqlValue::Real(f) => q.bind(*f),
        SqlValue::Text(s) => q.bind(s.clone()),
        SqlValue::Timestamp(t) => q.bind(PgTimestamptz::of(*t)),
    }
}

/// A date bound as a binary `timestamptz` (microseconds since 2000-01-01, big-endian), not as
/// wire-form text cast with `::timestamptz`: text input to `timestamptz` is a stable function,
/// so PostgreSQL cannot fold the cast into a constant and parsed the text again for every row
/// a filter tested (three times a row for the keyset condition), and in a sequential scan for
/// every row of the table. Same value: dates are whole milliseconds.
struct PgTimestamptz(i64);

impl PgTimestamptz {
    fn of(t: Timestamp) -> Self {
        // Timestamps are years 1..=9999 (`tablesync_protocol::time`), far inside i64
        // microseconds; saturating keeps anything else ordered (i64::MAX is `infinity`).
        PgTimestamptz(
            t.unix_millis()
                .saturating_sub(PG_EPOCH_UNIX_MS)
                .saturating_mul(1000),
        )
    }
}

impl sqlx::Type<Postgres> for PgTimestamptz {
    fn type_info() -> PgTypeInfo {
        // `timestamptz`'s fixed OID: no lookup by name.
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(1184))
    }
}

impl sqlx::Encode<'_, Postgres> for PgTimestamptz {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.extend(&self.0.to_be_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

fn bind_all<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    values: &[SqlValue],
) -> Query<'q, Postgres, PgArguments> {
    for value in values {
        q = bind(q, value);
    }
    q
}

/// JSON for column `index` of `row`, stored with type `ty`.
fn value_json(row: &PgRow, index: usize, ty: ColumnType) -> Result<Value, sqlx::Error> {
    Ok(match ty {
        ColumnType::String => row
            .try_get::<Option<String>, _>(index)?
            .map_or(Value::Null, Value::String),
        ColumnType::Date => timestamp_millis(row, index)?.map_or(Value::Null, |ms| {
            Value::String(Timestamp::from_unix_millis(ms).to_string())
        }),
        // An integer id (BIGINT): read exactly, not through a double.
        ColumnType::Number if row.column(index).type_info().name() == "INT8" => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Value::Null, Value::from),
        ColumnType::Number => row
            .try_get::<Option<f64>, _>(index)?
            .map_or(Value::Null, json_number),
        ColumnType::Boolean => row
            .try_get::<Option<bool>, _>(index)?
            .map_or(Value::Null, Value::Bool),
    })
}

/// Read a row selected with [`sql::select_list`].
fn read_item(row: &PgRow, schema: &TableSchema) -> StoreResult<Item> {
    sql::read_item(schema, |index, ty| value_json(row, index, ty)).map_err(|e| classify(&e))
}

async fn get_row<'e, E>(
    executor: E,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
) -> StoreResult<Option<Item>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let (sql, params) = sql::get_row_sql(DIALECT, schema, scope, id);
    let row = bind_all(sqlx::query(&sql), &params)
        .fetch_optional(executor)
        .await
        .map_err(|e| classify(&e))?;
    row.map(|r| read_item(&r, schema)).transpose()
}

/// Columns of a table as stored: (name, `data_type`), in column order.
async fn stored_columns(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| classify(&e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| classify(&e))
}

/// The primary key columns of a table, in key order.
async fn primary_key(tx: &mut Transaction<'_, Postgres>, table: &str) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass(quote_ident($1)) AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| classify(&e))?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| classify(&e))
}

async fn execute(tx: &mut Transaction<'_, Postgres>, sql: &str) -> StoreResult<()> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| classify(&e))
}

/// Serialise DDL across every process on this database until `tx` ends.
async fn lock_ddl(tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK_KEY)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| classify(&e))
}

fn check_identifier(table: &str, name: &str) -> StoreResult<()> {
    if name.len() > PG_IDENTIFIER_BYTES_MAX {
        return Err(StoreError::new(
            StoreErrorKind::Schema,
            format!("{table}.{name}: names longer than {PG_IDENTIFIER_BYTES_MAX} bytes do not fit PostgreSQL"),
        ));
    }
    Ok(())
}

/// A short, stable index name (PostgreSQL truncates identifiers to 63 bytes, and two truncated
/// names could collide): `ix_<table prefix>_<hash of the table name>_<suffix>`.
fn index_name(table: &str, suffix: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let prefix: String = table.chars().take(32).collect();
    format!("ix_{prefix}_{:08x}_{suffix}", hash as u32)
}

async fn prepare_tables(
    pool: &PgPool,
    tables: &[TableSchema],
    lock_timeout_ms: u64,
) -> StoreResult<Vec<TableSchema>> {
    let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
    // Processes starting together queue here one after the other, each holding the lock for
    // all of its DDL: the session's `lock_timeout` (`busy_timeout_ms`) is too short for that.
    // `SET LOCAL` ends with this transaction; the value is a number we own, not input.
    execute(
        &mut tx,
        &format!("SET LOCAL lock_timeout = {lock_timeout_ms}"),
    )
    .await?;
    lock_ddl(&mut tx).await?;
    execute(
        &mut tx,
        &format!(
            "CREATE TABLE IF NOT EXISTS {CLOCK_TABLE} (table_name TEXT COLLATE \"C\" PRIMARY KEY NOT NULL, \
             last_updated_at TIMESTAMPTZ(3) NOT NULL, last_version BIGINT NOT NULL)"
        ),
    )
    .await?;
    execute(
        &mut tx,
        &format!(
            "CREATE SEQUENCE IF NOT EXISTS {UNORDERED_VERSION_SEQUENCE} START 281474976710656"
        ),
    )
    .await?;
    execute(
        &mut tx,
        &format!(
            "CREATE TABLE IF NOT EXISTS {OWNER_CLOCK_TABLE} (table_name TEXT COLLATE \"C\" NOT NULL, \
             owner TEXT COLLATE \"C\" NOT NULL, last_updated_at TIMESTAMPTZ(3) NOT NULL, \
             last_version BIGINT NOT NULL, PRIMARY KEY (table_name, owner))"
        ),
    )
    .await?;
    for ddl in super::idempotency::POSTGRES_DDL {
        execute(&mut tx, ddl).await?;
    }
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        check_identifier(&table.name, &table.name)?;
        let name = quote_ident(&table.name);
        // A per-user table is keyed (owner, id): each user has their own id space.
        let (owner_column, key) = match &table.owner_column {
            Some(owner) => (
                format!("{} TEXT COLLATE \"C\" NOT NULL, ", quote_ident(owner)),
                format!(", PRIMARY KEY ({}, \"id\")", quote_ident(owner)),
            ),
            None => (String::new(), String::new()),
        };
        // Integer ids: an identity column the database assigns (never reused); ALWAYS, so no
        // statement can pick one. Config validation keeps them off per-user tables.
        let id_column = match (table.id_type, key.is_empty()) {
            (IdType::Integer, _) => "\"id\" BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            (IdType::String, true) => "\"id\" TEXT COLLATE \"C\" PRIMARY KEY NOT NULL",
            (IdType::String, false) => "\"id\" TEXT COLLATE \"C\" NOT NULL",
        };
        execute(
            &mut tx,
            &format!(
                "CREATE TABLE IF NOT EXISTS {name} ({owner_column}{id_column}, \
                 \"createdAt\" TIMESTAMPTZ(3) NOT NULL, \"updatedAt\" TIMESTAMPTZ(3) NOT NULL, \
                 \"version\" TEXT COLLATE \"C\" NOT NULL, \"deleted\" BOOLEAN NOT NULL DEFAULT FALSE{key})"
            ),
        )
        .await?;
        sql::check_primary_key(table, &primary_key(&mut tx, &table.name).await?)?;
        let stored = stored_columns(&mut tx, &table.name).await?;
        sql::check_id_column(table, &stored, |ty| ty == "bigint")?;
        for column in &table.columns {
            check_identifier(&table.name, &column.name)?;
        }
        for column in sql::columns_to_add(table, &stored, &TYPES)? {
            execute(&mut tx, &TYPES.add_column_sql(&table.name, column)).await?;
        }
        let mut schema = table.clone();
        schema
            .columns
            .extend(sql::extra_columns(table, &stored, &TYPES)?);
        // Per-user tables lead their indexes with the owner: every read is within one owner.
        let (owner_prefix, owner_suffix) = table
            .owner_column
            .as_ref()
            .map(|o| (format!("{} ASC NULLS FIRST, ", quote_ident(o)), "_owner"))
            .unwrap_or_default();
        for (suffix, column) in [("updated", "updatedAt"), ("created", "createdAt")] {
            let index = quote_ident(&index_name(&table.name, &format!("{suffix}{owner_suffix}")));
            execute(
                &mut tx,
                &format!(
                    "CREATE INDEX IF NOT EXISTS {index} ON {name} ({owner_prefix}\"{column}\" ASC NULLS FIRST, \"id\" ASC NULLS FIRST)"
                ),
            )
            .await?;
        }
        // Declared indexes (under the DDL lock, like the rest): create the declared ones, drop
        // those no longer declared.
        let wanted = sql::declared_indexes(DIALECT, table);
        for index in &wanted {
            execute(&mut tx, &index.create).await?;
        }
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        )
        .bind(&table.name)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(&e))?;
        for name in sql::indexes_to_drop(&stored, &wanted) {
            execute(
                &mut tx,
                &format!("DROP INDEX IF EXISTS {}", quote_ident(name)),
            )
            .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO {CLOCK_TABLE} VALUES ($1, 'epoch', 0) ON CONFLICT (table_name) DO NOTHING"
        ))
        .bind(&table.name)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&e))?;
        out.push(schema);
    }
    tx.commit().await.map_err(|e| classify(&e))?;
    Ok(out)
}

async fn add_columns(
    pool: &PgPool,
    outer: Option<&mut PgConnection>,
    table: &TableSchema,
    columns: &[Column],
) -> StoreResult<Vec<Column>> {
    let mut tx = match outer {
        None => pool.begin().await,
        Some(conn) => sqlx::Connection::begin(conn).await,
    }
    .map_err(|e| classify(&e))?;
    lock_ddl(&mut tx).await?;
    let stored = stored_columns(&mut tx, &table.name).await?;
    for column in columns {
        check_identifier(&table.name, &column.name)?;
        // Another request (or process) may have added it since this one read the schema: keep
        // the stored one.
        if !sql::is_stored(&stored, &column.name) {
            execute(&mut tx, &TYPES.add_column_sql(&table.name, column)).await?;
        }
    }
    let stored = stored_columns(&mut tx, &table.name).await?;
    tx.commit().await.map_err(|e| classify(&e))?;
    let mut out = table.columns.clone();
    out.extend(sql::extra_columns(table, &stored, &TYPES)?);
    Ok(out)
}

/// `EXPLAIN` of a list request, one plan line per line.
async fn explain_list(
    conn: &mut PgConnection,
    schema: &TableSchema,
    scope: &Scope,
    query: &ListQuery,
) -> StoreResult<String> {
    let ListSql { sql, params, .. } = sql::list_sql(DIALECT, schema, scope, query);
    let rows = bind_all(sqlx::query(&format!("EXPLAIN {sql}")), &params)
        .fetch_all(conn)
        .await
        .map_err(|e| classify(&e))?;
    let lines = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| classify(&e))?;
    Ok(lines.join("\n"))
}

async fn list_rows(
    store: &PostgresStore,
    schema: &TableSchema,
    scope: &Scope,
    query: &ListQuery,
) -> StoreResult<ListPage> {
    let list = sql::list_sql(DIALECT, schema, scope, query);
    let select = query.select.as_deref();
    let mut retried = false;
    loop {
        let mut conn = store.acquire().await?;
        let fetched = if query.count {
            page_and_count(&mut conn, schema, &list, select, query.top).await
        } else {
            fetch_items(&mut *conn, schema, &list, select, query.top)
                .await
                .map(|items| ListPage { items, count: None })
        };
        match fetched {
            // Read-only, so it can run again; on a new connection (`connection_failed`).
            Err(e) if !retried && is_connection_error(&e) => {
                conn.connection_failed();
                retried = true;
            }
            fetched => {
                match &fetched {
                    // The count's transaction ended in an error has its ROLLBACK only queued:
                    // dropped unfinished, the connection is pinged, which sends it, before a
                    // read gets it again.
                    Err(e) if query.count && !is_connection_error(e) => drop(conn),
                    _ => release(conn, &fetched),
                }
                return fetched.map_err(|e| classify(&e));
            }
        }
    }
}

/// A page and the count of all matching rows, from one snapshot (a REPEATABLE READ read-only
/// transaction). An error drops the transaction before its commit; sqlx only queues its
/// ROLLBACK (see `list_rows` for who sends it).
async fn page_and_count(
    conn: &mut PgConnection,
    schema: &TableSchema,
    list: &ListSql,
    select: Option<&[String]>,
    top: u64,
) -> Result<ListPage, sqlx::Error> {
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let items = fetch_items(&mut *tx, schema, list, select, top).await?;
    let n: i64 = bind_all(sqlx::query(&list.count_sql), list.count_params())
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))?;
    tx.commit().await?;
    Ok(ListPage {
        items,
        count: Some(u64::try_from(n).unwrap_or(0)),
    })
}

/// The page of a list request, each row encoded into the page as it arrives (no item map, no
/// vector of rows): the encoder works on one row while the database sends the next ones.
async fn fetch_items<'e, E>(
    executor: E,
    schema: &TableSchema,
    list: &ListSql,
    select: Option<&[String]>,
    top: u64,
) -> Result<EncodedPage, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    // Prepared once per request: which columns, their JSON keys, their types.
    let encoder = PageEncoder::new(schema, select);
    let mut rows = bind_all(sqlx::query(&list.sql), &list.params).fetch(executor);
    let mut page = EncodedPage::for_top(top);
    // How each column is read, from the result's own column types, looked up once (at the
    // first row), not per row.
    let mut wires: Vec<Wire> = Vec::new();
    while let Some(row) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(rows.as_mut(), cx)).await
    {
        let row = row?;
        if wires.is_empty() {
            wires = (0..row.len())
                .map(|i| Wire::of(row.column(i).type_info().name()))
                .collect();
        }
        encoder.row(&mut page, |index, ty| {
            value_cell(&row, index, ty, wires[index])
        })?;
    }
    Ok(page)
}

/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix milliseconds: a binary `timestamptz` counts
/// microseconds from it.
const PG_EPOCH_UNIX_MS: i64 = 946_684_800_000;

/// Column `index` of `row`, a `timestamptz`, in Unix milliseconds; None for NULL and for
/// `±infinity` (which `to_char`, the old reader, rendered as NULL too). Sub-millisecond digits
/// (only a column written by something else holds them) are cut, as `to_char`'s `MS` did.
fn timestamp_millis(row: &PgRow, index: usize) -> Result<Option<i64>, sqlx::Error> {
    let value = row.try_get_raw(index)?;
    if value.is_null() {
        return Ok(None);
    }
    if value.type_info().name() != "TIMESTAMPTZ" || value.format() != PgValueFormat::Binary {
        return Err(sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!(
                "a date column read as {} ({:?})",
                value.type_info().name(),
                value.format()
            )
            .into(),
        });
    }
    let micros = be_i64(value.as_bytes().map_err(sqlx::Error::Decode)?, index)?;
    Ok(unix_millis(micros))
}

/// A binary `timestamptz` (microseconds since 2000-01-01) in Unix milliseconds; None for
/// `±infinity`.
fn unix_millis(pg_micros: i64) -> Option<i64> {
    if pg_micros == i64::MAX || pg_micros == i64::MIN {
        return None;
    }
    Some(PG_EPOCH_UNIX_MS + pg_micros.div_euclid(1000))
}

/// An 8-byte big-endian integer (binary `int8`, `float8`'s bits, `timestamptz`).
fn be_i64(bytes: &[u8], index: usize) -> Result<i64, sqlx::Error> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: format!("{} bytes where 8 were expected", bytes.len()).into(),
    })?;
    Ok(i64::from_be_bytes(bytes))
}

/// How a result column's binary value is read, by the type the result reports for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    /// `text`: the UTF-8 bytes.
    Text,
    /// `boolean`: one byte, 0 or 1.
    Bool,
    /// `double precision`: the IEEE bits, big-endian.
    Float8,
    /// `bigint` (an integer id), big-endian.
    Int8,
    /// `timestamptz`: microseconds since 2000-01-01, big-endian.
    Timestamptz,
    /// Anything else: through sqlx's checked decoding, which names the mismatch.
    Other,
}

impl Wire {
    fn of(type_name: &str) -> Wire {
        match type_name {
            "TEXT" => Wire::Text,
            "BOOL" => Wire::Bool,
            "FLOAT8" => Wire::Float8,
            "INT8" => Wire::Int8,
            "TIMESTAMPTZ" => Wire::Timestamptz,
            _ => Wire::Other,
        }
    }
}

/// The cell of column `index` of `row` (stored with type `ty`, sent as `wire`), borrowed from
/// the row: what [`value_json`] reads, without a `Value`. The bytes are read directly when the
/// result type is the one the protocol type is stored as; any other pairing (or a text-format
/// value) goes through [`checked_cell`].
fn value_cell(
    row: &PgRow,
    index: usize,
    ty: ColumnType,
    wire: Wire,
) -> Result<Cell<'_>, sqlx::Error> {
    let direct = matches!(
        (ty, wire),
        (ColumnType::String, Wire::Text)
            | (ColumnType::Boolean, Wire::Bool)
            | (ColumnType::Number, Wire::Float8 | Wire::Int8)
            | (ColumnType::Date, Wire::Timestamptz)
    );
    if !direct {
        return checked_cell(row, index, ty, wire);
    }
    let value = row.try_get_raw(index)?;
    if value.is_null() {
        return Ok(Cell::Null);
    }
    if value.format() != PgValueFormat::Binary {
        return checked_cell(row, index, ty, wire);
    }
    let bytes = value.as_bytes().map_err(sqlx::Error::Decode)?;
    Ok(match wire {
        // Checked as UTF-8 while it is written, in the pass that looks for escapes
        // (`encode::Cell::RawText`): a UTF-8 database sends nothing else, and a SQL_ASCII one's
        // stray bytes are written as U+FFFD, as SQLite's are.
        Wire::Text => Cell::RawText(bytes),
        Wire::Bool => match bytes {
            [b] => Cell::Bool(*b != 0),
            _ => return checked_cell(row, index, ty, wire),
        },
        Wire::Float8 => Cell::Real(f64::from_bits(be_i64(bytes, index)? as u64)),
        Wire::Int8 => Cell::Int(be_i64(bytes, index)?),
        Wire::Timestamptz => unix_millis(be_i64(bytes, index)?).map_or(Cell::Null, Cell::Millis),
        Wire::Other => return checked_cell(row, index, ty, wire),
    })
}

/// [`value_cell`] through sqlx's checked decoding (which reports a mismatched type).
fn checked_cell(
    row: &PgRow,
    index: usize,
    ty: ColumnType,
    wire: Wire,
) -> Result<Cell<'_>, sqlx::Error> {
    Ok(match ty {
        ColumnType::String => row
            .try_get::<Option<&str>, _>(index)?
            .map_or(Cell::Null, Cell::Text),
        ColumnType::Date => timestamp_millis(row, index)?.map_or(Cell::Null, Cell::Millis),
        ColumnType::Number if wire == Wire::Int8 => row
            .try_get::<Option<i64>, _>(index)?
            .map_or(Cell::Null, Cell::Int),
        ColumnType::Number => row
            .try_get::<Option<f64>, _>(index)?
            .map_or(Cell::Null, Cell::Real),
        ColumnType::Boolean => row
            .try_get::<Option<bool>, _>(index)?
            .map_or(Cell::Null, Cell::Bool),
    })
}

/// Run a `… RETURNING <select list>` statement; the row it wrote, if any.
async fn returning(
    conn: &mut PgConnection,
    schema: &TableSchema,
    sql: &str,
    params: &[SqlValue],
) -> StoreResult<Option<Item>> {
    let row = bind_all(sqlx::query(sql), params)
        .fetch_optional(conn)
        .await
        .map_err(|e| classify(&e))?;
    row.map(|r| read_item(&r, schema)).transpose()
}

impl PostgresStore {
    async fn insert_row(
        &self,
        outer: Option<&mut PgConnection>,
        schema: &TableSchema,
        scope: &Scope,
        id: &str,
        values: &[(String, SqlValue)],
    ) -> StoreResult<WriteOutcome> {
        let nested = outer.is_some();
        let mut tx = self.begin_on(outer).await?;
        let stamp = self.stamp(&mut tx, schema, scope).await?;
        // A concurrent insert of the same id may commit first: then nothing is inserted and the
        // stored row is read below.
        let (sql, params) = sql::insert_sql(DIALECT, schema, scope, id, stamp, values);
        if let Some(item) = returning(&mut tx, schema, &sql, &params).await? {
            self.commit_write(tx, nested).await?;
            return Ok(WriteOutcome::Written(item));
        }
        // The id is taken (ON CONFLICT waited for a concurrent insert of it to commit). Read the
        // stored row in a fresh statement snapshot, then roll back the unused stamp.
        let existing = get_row(&mut *tx, schema, scope, id).await?;
        tx.rollback().await.map_err(|e| classify(&e))?;
        Ok(match existing {
            Some(item) => WriteOutcome::AlreadyExists(item),
            // A hard delete removed it in between: the client may retry the insert.
            None => {
                return Err(StoreError::new(
                    StoreErrorKind::Busy,
                    format!("insert of {id} raced with its deletion"),
                ))
            }
        })
    }

    /// A stamped compare-and-swap `UPDATE … WHERE id = $ AND deleted = $ [AND version = $]`;
    /// when it matches no row, re-read to classify the miss and roll back the stamp. Under READ
    /// COMMITTED a concurrent writer's committed change is re-checked against the `WHERE`, so a
    /// stale `version` never overwrites it.
    #[allow(clippy::too_many_arguments)]
    async fn cas_update(
        &self,
        outer: Option<&mut PgConnection>,
        schema: &TableSchema,
        scope: &Scope,
        id: &str,
        assignments: &[(String, SqlValue)],
        kind: CasKind,
        expected: Option<&str>,
    ) -> StoreResult<WriteOutcome> {
        let nested = outer.is_some();
        let mut tx = self.begin_on(outer).await?;
        let stamp = self.stamp(&mut tx, schema, scope).await?;
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
        if let Some(item) = returning(&mut tx, schema, &sql, &params).await? {
            self.commit_write(tx, nested).await?;
            return Ok(WriteOutcome::Written(item));
        }
        // Read back within the scope: another user's row is not found, like a missing one.
        let current = get_row(&mut *tx, schema, scope, id).await?;
        tx.rollback().await.map_err(|e| classify(&e))?;
        Ok(sql::miss_outcome(Some(kind), current, expected))
    }

    async fn hard_delete(
        &self,
        outer: Option<&mut PgConnection>,
        schema: &TableSchema,
        scope: &Scope,
        id: &str,
        expected: Option<&str>,
    ) -> StoreResult<WriteOutcome> {
        let (sql, params) = sql::hard_delete_sql(DIALECT, schema, scope, id, expected);
        let nested = outer.is_some();
        let mut tx = self.begin_on(outer).await?;
        if let Some(item) = returning(&mut tx, schema, &sql, &params).await? {
            self.commit_write(tx, nested).await?;
            return Ok(WriteOutcome::Written(item));
        }
        let current = get_row(&mut *tx, schema, scope, id).await?;
        tx.rollback().await.map_err(|e| classify(&e))?;
        Ok(sql::miss_outcome(None, current, expected))
    }
}

impl Store for PostgresStore {
    fn dialect(&self) -> Dialect {
        DIALECT
    }

    fn transaction(&self, work: super::TxWork) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(batch_tx::run_work(self.clone(), work))
    }

    /// `SELECT 1` on a pooled connection. When that fails or takes longer than `timeout`, one
    /// plain connection attempt says why (the pool itself only says "timed out").
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let pooled = tokio::time::timeout(timeout, async {
                // A pool that cannot hand out a connection is diagnosed below.
                let Ok(mut conn) = self.reads.get().await else {
                    return None;
                };
                let answered = sqlx::query("SELECT 1").execute(&mut *conn).await;
                release(conn, &answered);
                Some(answered)
            })
            .await;
            match pooled {
                Ok(Some(Ok(_))) => return Ok(()),
                // A pooled connection that died (`read_pool_ping_idle_ms` spares a busy one the
                // ping) is diagnosed like an unreachable pool: with a connection of its own.
                Ok(Some(Err(e))) if !is_connection_error(&e) => return Err(classify(&e)),
                _ => {}
            }
            match tokio::time::timeout(timeout, PgConnection::connect_with(&self.options)).await {
                Ok(Err(e)) => Err(classify(&e)),
                Err(_) => Err(StoreError::new(
                    StoreErrorKind::Busy,
                    format!(
                        "PostgreSQL did not answer within {} ms",
                        timeout.as_millis()
                    ),
                )),
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Err(StoreError::new(
                        StoreErrorKind::Busy,
                        format!(
                            "no pooled connection was free within {} ms (all {} in use)",
                            timeout.as_millis(),
                            self.reads.status().open
                        ),
                    ))
                }
            }
        })
    }

    fn pool_status(&self) -> PoolStatus {
        let write_in_use =
            u64::from(self.write_pool.size()).saturating_sub(self.write_pool.num_idle() as u64);
        let write_max = u64::from(self.write_pool.options().get_max_connections());
        PoolStatus {
            in_use: self.reads.status().in_use + write_in_use,
            max: self.reads.max() + write_max,
        }
    }

    fn pool_wait(&self) -> &PoolWait {
        &self.wait
    }

    fn notifies(&self) -> bool {
        true
    }

    fn announce<'a>(&'a self, tables: &'a [String]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(notify::announce(self, tables))
    }

    fn listen<'a>(&'a self, wake: super::Wake<'a>) -> BoxFuture<'a, ()> {
        Box::pin(notify::listen(self, wake))
    }

    fn group_commits(&self) -> &GroupCommits {
        &self.commits
    }

    fn prepare<'a>(
        &'a self,
        tables: &'a [TableSchema],
    ) -> BoxFuture<'a, StoreResult<Vec<TableSchema>>> {
        Box::pin(prepare_tables(
            &self.write_pool,
            tables,
            self.schema_lock_timeout_ms,
        ))
    }

    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        Box::pin(add_columns(&self.write_pool, None, table, columns))
    }

    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>> {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let mut tx = conn.begin().await.map_err(|e| classify(&e))?;
            let stored = stored_columns(&mut tx, &table.name).await?;
            tx.commit().await.map_err(|e| classify(&e))?;
            conn.finished();
            let mut out = table.columns.clone();
            out.extend(sql::extra_columns(table, &stored, &TYPES)?);
            Ok(out)
        })
    }

    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>> {
        Box::pin(async move {
            let (sql, params) = sql::get_row_sql(DIALECT, table, scope, id);
            let mut retried = false;
            let row = loop {
                let mut conn = self.acquire().await?;
                let fetched = bind_all(sqlx::query(&sql), &params)
                    .fetch_optional(&mut *conn)
                    .await;
                match fetched {
                    Err(e) if !retried && is_connection_error(&e) => {
                        conn.connection_failed();
                        retried = true;
                    }
                    fetched => {
                        release(conn, &fetched);
                        break fetched.map_err(|e| classify(&e))?;
                    }
                }
            };
            row.map(|r| read_item(&r, table)).transpose()
        })
    }

    fn list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<ListPage>> {
        Box::pin(async move { list_rows(self, table, scope, &query).await })
    }

    fn explain_list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<String>> {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let explained = explain_list(&mut conn, table, scope, &query).await;
            conn.finished();
            explained
        })
    }

    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let write = RowWrite::Insert {
            id: id.to_owned(),
            values,
        };
        Box::pin(self.grouped(table, scope, write))
    }

    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let write = RowWrite::Swap {
            id: id.to_owned(),
            values,
            kind: CasKind::Update,
            expected,
        };
        Box::pin(self.grouped(table, scope, write))
    }

    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let id = id.to_owned();
        let write = if table.soft_delete {
            RowWrite::Swap {
                id,
                values: Vec::new(),
                kind: CasKind::SoftDelete,
                expected,
            }
        } else {
            RowWrite::HardDelete { id, expected }
        };
        Box::pin(self.grouped(table, scope, write))
    }

    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>> {
        let write = RowWrite::Swap {
            id: id.to_owned(),
            values: Vec::new(),
            kind: CasKind::Undelete,
            expected,
        };
        Box::pin(self.grouped(table, scope, write))
    }
}

/// One row write, as queued for a group commit.
pub(super) enum RowWrite {
    Insert {
        id: String,
        values: Vec<(String, SqlValue)>,
    },
    /// A stamped compare-and-swap: update, soft delete or undelete.
    Swap {
        id: String,
        values: Vec<(String, SqlValue)>,
        kind: CasKind,
        expected: Option<String>,
    },
    HardDelete {
        id: String,
        expected: Option<String>,
    },
}

impl PostgresStore {
    /// Run `write` through the group commit of the clock row it stamps with
    /// (`postgres/group.rs`).
    async fn grouped(
        &self,
        table: &TableSchema,
        scope: &Scope,
        write: RowWrite,
    ) -> StoreResult<WriteOutcome> {
        let key = (
            table.name.clone(),
            sql::stamps_per_owner(table, scope).map(str::to_owned),
        );
        let write = group::Write {
            table: table.clone(),
            scope: scope.clone(),
            row: write,
        };
        self.groups.submit(self, key, write).await
    }

    /// Take `count` consecutive stamps of the clock row `table`/`scope` writes to, in one
    /// statement, inside the group transaction on `conn` (commit-order stamps only): the clock
    /// row moves by `count` versions and `count - 1` ms past what one stamp would take, and the
    /// stamps are the `count` steps up to it, so they are strictly increasing and each greater
    /// than every earlier committed one, exactly as `count` single stamps taken in a row (see
    /// [`PostgresStore::stamp`]). The row lock it takes is held to the group's commit.
    async fn stamps(
        &self,
        conn: &mut PgConnection,
        schema: &TableSchema,
        scope: &Scope,
        count: usize,
    ) -> StoreResult<Vec<Stamp>> {
        let table = schema.name.as_str();
        // `$n`: the number of stamps, the last placeholder of either statement.
        let next = |n: &str| {
            format!(
                "GREATEST(date_trunc('milliseconds', clock_timestamp()), c.last_updated_at \
                 + interval '1 millisecond') + ({n}::bigint - 1) * interval '1 millisecond'"
            )
        };
        let returned = "(extract(epoch FROM last_updated_at) * 1000)::bigint, last_version";
        let k = i64::try_from(count).unwrap_or(i64::MAX);
        let row = match sql::stamps_per_owner(schema, scope) {
            Some(owner) => {
                // The owner's first write makes their clock row (as `sql::owner_stamp_sql`).
                let sql = format!(
                    "INSERT INTO {OWNER_CLOCK_TABLE} AS c (table_name, owner, last_updated_at, last_version) \
                     VALUES ($1::text, $2::text, date_trunc('milliseconds', clock_timestamp()) \
                     + ($3::bigint - 1) * interval '1 millisecond', $3::bigint) \
                     ON CONFLICT (table_name, owner) DO UPDATE \
                     SET last_updated_at = {}, last_version = c.last_version + $3::bigint \
                     RETURNING {returned}",
                    next("$3")
                );
                sqlx::query(&sql)
                    .bind(table)
                    .bind(owner)
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await
            }
            None => {
                let sql = format!(
                    "UPDATE {CLOCK_TABLE} AS c SET last_updated_at = {}, \
                     last_version = c.last_version + $2::bigint \
                     WHERE table_name = $1::text RETURNING {returned}",
                    next("$2")
                );
                sqlx::query(&sql)
                    .bind(table)
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await
            }
        };
        let (last_ms, last_counter) = clock_answer(table, row)?;
        Ok((0..k)
            .map(|i| {
                let back = k - 1 - i;
                Stamp {
                    updated_at: Timestamp::from_unix_millis(last_ms - back),
                    version: version_from_counter(u64::try_from(last_counter - back).unwrap_or(0)),
                }
            })
            .collect())
    }

    /// Run consecutive inserts of a group (the same columns, a string-id table) on `conn` as one
    /// multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`, each with the stamp taken for it in
    /// advance: one round trip instead of one an insert. The returned rows are matched by id, the
    /// first insert of an id getting its row (as when they run one by one); an insert whose row
    /// did not come back found its id taken and answers with the stored row, like
    /// [`PostgresStore::apply_stamped`].
    async fn insert_stamped(
        &self,
        conn: &mut PgConnection,
        writes: &[&group::Write],
        stamps: Vec<Stamp>,
    ) -> StoreResult<Vec<WriteOutcome>> {
        const WHAT: &str = "insert";
        let Some((schema, scope)) = multi_row_target(writes, stamps.len(), WHAT)? else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::with_capacity(writes.len());
        for (write, stamp) in writes.iter().zip(stamps) {
            let RowWrite::Insert { id, values } = &write.row else {
                return Err(multi_row_error(WHAT, "a write that is not an insert"));
            };
            rows.push(sql::NewRow { id, stamp, values });
        }
        let (sql, params) = sql::insert_rows_sql(DIALECT, schema, scope, &rows);
        let mut written = returned_by_id(conn, schema, &sql, &params, WHAT).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(item) = written.remove(row.id) {
                outcomes.push(WriteOutcome::Written(item));
                continue;
            }
            outcomes.push(match get_row(&mut *conn, schema, scope, row.id).await? {
                Some(item) => WriteOutcome::AlreadyExists(item),
                None => {
                    return Err(StoreError::new(
                        StoreErrorKind::Busy,
                        format!("insert of {} raced with its deletion", row.id),
                    ))
                }
            });
        }
        Ok(outcomes)
    }

    /// Run consecutive updates of a group (the same columns, different ids, a string-id table)
    /// on `conn` as one `UPDATE … FROM (VALUES …) RETURNING`, each with the stamp taken for it
    /// in advance and its own compare-and-swap: one round trip instead of one an update. The
    /// returned rows are matched by id; an update whose row did not come back (a stale
    /// version, a missing, deleted or another user's row) answers what it answers alone after
    /// one more read, like [`PostgresStore::apply_stamped`], its stamp left unused.
    async fn update_stamped(
        &self,
        conn: &mut PgConnection,
        writes: &[&group::Write],
        stamps: Vec<Stamp>,
    ) -> StoreResult<Vec<WriteOutcome>> {
        const WHAT: &str = "update";
        let Some((schema, scope)) = multi_row_target(writes, stamps.len(), WHAT)? else {
            return Ok(Vec::new());
        };
        let mut rows = Vec::with_capacity(writes.len());
        for (write, stamp) in writes.iter().zip(stamps) {
            let RowWrite::Swap {
                id,
                values,
                kind: CasKind::Update,
                expected,
            } = &write.row
            else {
                return Err(multi_row_error(WHAT, "a write that is not an update"));
            };
            rows.push(sql::SwapRow {
                id,
                stamp,
                values,
                expected: expected.as_deref(),
            });
        }
        let (sql, params) = sql::cas_update_rows_sql(schema, scope, &rows);
        let mut written = returned_by_id(conn, schema, &sql, &params, WHAT).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(item) = written.remove(row.id) {
                outcomes.push(WriteOutcome::Written(item));
                continue;
            }
            let current = get_row(&mut *conn, schema, scope, row.id).await?;
            outcomes.push(sql::miss_outcome(
                Some(CasKind::Update),
                current,
                row.expected,
            ));
        }
        Ok(outcomes)
    }

    /// Run one row write of a group on `conn` with the stamp taken for it in advance, without a
    /// savepoint (`postgres/group.rs`). A write that matches no row answers what it answers
    /// alone and leaves its stamp unused (a gap in the clock, which only has to increase); any
    /// error leaves the transaction unusable, and the group runs again the savepoint way.
    async fn apply_stamped(
        &self,
        conn: &mut PgConnection,
        write: &group::Write,
        stamp: Option<Stamp>,
    ) -> StoreResult<WriteOutcome> {
        let (schema, scope) = (&write.table, &write.scope);
        let no_stamp = || {
            StoreError::new(
                StoreErrorKind::Internal,
                "group commit: a stamped write came without its stamp",
            )
        };
        match &write.row {
            RowWrite::Insert { id, values } => {
                let stamp = stamp.ok_or_else(no_stamp)?;
                let (sql, params) = sql::insert_sql(DIALECT, schema, scope, id, stamp, values);
                if let Some(item) = returning(&mut *conn, schema, &sql, &params).await? {
                    return Ok(WriteOutcome::Written(item));
                }
                match get_row(&mut *conn, schema, scope, id).await? {
                    Some(item) => Ok(WriteOutcome::AlreadyExists(item)),
                    None => Err(StoreError::new(
                        StoreErrorKind::Busy,
                        format!("insert of {id} raced with its deletion"),
                    )),
                }
            }
            RowWrite::Swap {
                id,
                values,
                kind,
                expected,
            } => {
                let stamp = stamp.ok_or_else(no_stamp)?;
                let (sql, params) = sql::cas_update_sql(
                    DIALECT,
                    schema,
                    scope,
                    id,
                    values,
                    *kind,
                    expected.as_deref(),
                    stamp,
                );
                if let Some(item) = returning(&mut *conn, schema, &sql, &params).await? {
                    return Ok(WriteOutcome::Written(item));
                }
                let current = get_row(&mut *conn, schema, scope, id).await?;
                Ok(sql::miss_outcome(Some(*kind), current, expected.as_deref()))
            }
            RowWrite::HardDelete { id, expected } => {
                let (sql, params) =
                    sql::hard_delete_sql(DIALECT, schema, scope, id, expected.as_deref());
                if let Some(item) = returning(&mut *conn, schema, &sql, &params).await? {
                    return Ok(WriteOutcome::Written(item));
                }
                let current = get_row(&mut *conn, schema, scope, id).await?;
                Ok(sql::miss_outcome(None, current, expected.as_deref()))
            }
        }
    }

    /// Run one row write, alone (`outer` None) or in a savepoint of `outer`'s transaction.
    async fn apply(
        &self,
        outer: Option<&mut PgConnection>,
        write: &group::Write,
    ) -> StoreResult<WriteOutcome> {
        let (table, scope) = (&write.table, &write.scope);
        match &write.row {
            RowWrite::Insert { id, values } => {
                self.insert_row(outer, table, scope, id, values).await
            }
            RowWrite::Swap {
                id,
                values,
                kind,
                expected,
            } => {
                self.cas_update(outer, table, scope, id, values, *kind, expected.as_deref())
                    .await
            }
            RowWrite::HardDelete { id, expected } => {
                self.hard_delete(outer, table, scope, id, expected.as_deref())
                    .await
            }
        }
    }
}

/// The table and scope of a run of a group's writes that one multi-row statement (`what`:
/// `insert`, `update`) carries, checked: a stamp for each write and a string-id table (an
/// integer id comes back unknown, so a returned row could not be matched). None: no write.
fn multi_row_target<'w>(
    writes: &'w [&group::Write],
    stamps: usize,
    what: &str,
) -> StoreResult<Option<(&'w TableSchema, &'w Scope)>> {
    let Some(first) = writes.first() else {
        return Ok(None);
    };
    if writes.len() != stamps || first.table.id_type != IdType::String {
        return Err(multi_row_error(what, "a missing stamp or an integer id"));
    }
    Ok(Some((&first.table, &first.scope)))
}

/// A bug in how a group built a multi-row statement.
fn multi_row_error(what: &str, problem: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Internal,
        format!("group commit: {problem} in a multi-row {what}"),
    )
}

/// Run a multi-row `… RETURNING <select list>` statement; the rows it wrote, by id.
async fn returned_by_id(
    conn: &mut PgConnection,
    schema: &TableSchema,
    sql: &str,
    params: &[SqlValue],
    what: &str,
) -> StoreResult<std::collections::HashMap<String, Item>> {
    let returned = bind_all(sqlx::query(sql), params)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(&e))?;
    let mut written = std::collections::HashMap::with_capacity(returned.len());
    for row in &returned {
        let item = read_item(row, schema)?;
        let id = item
            .get(tablesync_protocol::system::ID)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| multi_row_error(what, "a returned row without its id"))?;
        written.insert(id, item);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    /// The low 32 bits of FNV-1a 64, computed independently of `index_name`.
    fn fnv1a_32(s: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h as u32
    }

    #[test]
    fn index_names_are_short_and_distinct() {
        let long_a = format!("{}a", "x".repeat(62));
        let long_b = format!("{}b", "x".repeat(62));
        let a = index_name(&long_a, "updated");
        let b = index_name(&long_b, "updated");
        assert_ne!(a, b);
        assert!(a.len() <= PG_IDENTIFIER_BYTES_MAX, "{a}");
        // Readable and stable: the table's name, its FNV-1a hash, the index's purpose.
        assert_eq!(
            index_name("TodoItem", "created"),
            format!("ix_TodoItem_{:08x}_created", fnv1a_32("TodoItem"))
        );
        assert_eq!(
            fnv1a_32("TodoItem"),
            0x7654_171e,
            "the hash of a name never changes"
        );
        assert_eq!(
            index_name("TodoItem", "created"),
            "ix_TodoItem_7654171e_created"
        );
        assert_eq!(long_a.len(), 63);
        assert!(a.starts_with(&format!("ix_{}_", "x".repeat(32))), "{a}");
    }
}
