//! Storage: the only part of the server that runs SQL.
//!
//! [`Store`] is a dyn-compatible trait (its methods return boxed futures) so the server holds an
//! `Arc<dyn Store>` and [`postgres::PostgresStore`] sits beside [`sqlite::SqliteStore`] without
//! generics leaking into the HTTP layer. Stores:
//!
//! * create and migrate tables at start (`ADD COLUMN` only, never drop);
//! * stamp every write (insert, update, soft delete, undelete) through the per-table clock row in
//!   the write's own transaction ([`Stamp`], ARCHITECTURE.md "commit-ordered stamps");
//! * make conditional writes one compare-and-swap statement (`… WHERE id = ? AND version = ?`) and,
//!   when it touches no row, re-read to tell [`WriteOutcome::NotFound`] from
//!   [`WriteOutcome::VersionMismatch`];
//! * sort database failures into a few backend-neutral [`StoreErrorKind`]s. They never pick HTTP
//!   status codes; the HTTP layer does.
//!
//! * apply a row [`Scope`] to every row read and write: on a per-user table the owner predicate
//!   (`"owner" = $user`) is ANDed *outside* the parsed `$filter` in list, count, get, the
//!   409/412 read-back, update, delete and undelete, and an insert is owned by the scope's user
//!   (a body value for the owner column never reaches the SQL). Every row method takes a scope
//!   argument, so forgetting it does not compile; a scope that does not fit the table matches
//!   no row.
//!
//! SQL text for `$filter`/`$orderby` comes from `tablesync_protocol::odata::sql` (bound
//! parameters only); a store only adds its own fixed clauses around it. Those clauses, the
//! parameter lists, row → item conversion and the classification of a missed write are written
//! once in `sql` for both dialects; the store modules hold what is really theirs (connections,
//! transactions, binding, stamps, DDL). A list's rows are encoded into the response's JSON as
//! they leave the cursor (`encode`), never built into maps.

mod encode;
mod group;
pub mod idempotency;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tablesync_protocol::odata::sql::{Dialect, SqlFragment, SqlValue};
use tablesync_protocol::time::Timestamp;

use crate::table::{Column, Item, TableSchema};
pub use encode::{EncodedPage, PageEncoder};
pub use idempotency::{Claim, RecordKey, Recorded, Rows, StoreTx, TxWork, WorkEnd};

/// What [`Store::listen`] calls with each announced table (`None`: announcements may have been
/// missed, wake every table).
pub type Wake<'a> = Box<dyn Fn(Option<&str>) + Send + Sync + 'a>;

/// A boxed, sendable future: what every [`Store`] method returns (keeps the trait dyn-compatible).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The stamps of one write: the row's new `updatedAt` and `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// New `updatedAt` (and `createdAt` on insert).
    pub updated_at: Timestamp,
    /// New opaque `version` (see [`crate::table::version_from_counter`]).
    pub version: String,
}

/// Which rows of a table one operation may see and write; `App` derives it from the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every row: a table without `owner_column`.
    Shared,
    /// Only the rows this user owns (a per-user table); inserts are owned by them, and their
    /// writes are stamped through their own clock row.
    Owner(String),
}

/// How a write went. Only [`StoreError`] is a failure; these are all answers.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome {
    /// The write happened; the row as it is now (hard delete: as it was).
    Written(Item),
    /// No such row (or it is soft-deleted and the operation needs a live row).
    NotFound,
    /// The row exists but its version differs from the expected one; the current row.
    VersionMismatch(Item),
    /// Insert of an id that already exists; the stored row.
    AlreadyExists(Item),
}

/// A list request, already lowered to SQL fragments for [`Store::dialect`].
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// `WHERE` condition from `$filter`, placeholders numbered from 1.
    pub filter: Option<SqlFragment>,
    /// `ORDER BY` body from `$orderby`, placeholders numbered after the filter's. The store adds
    /// `id` as the final tie-breaker; without it the order is (`createdAt`, `id`): insertion order.
    pub order_by: Option<SqlFragment>,
    /// Also return soft-deleted rows.
    pub include_deleted: bool,
    /// Rows to skip.
    pub skip: u64,
    /// Rows to return at most.
    pub top: u64,
    /// Also count every matching row, ignoring skip/top.
    pub count: bool,
    /// `$select`: the properties to return (the schema's spelling), in any order; None: all.
    pub select: Option<Vec<String>>,
}

/// A page of rows, already encoded as the JSON array of its items ([`encode`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ListPage {
    /// The rows, in order, projected by [`ListQuery::select`].
    pub items: EncodedPage,
    /// Total matching rows when [`ListQuery::count`] was set.
    pub count: Option<u64>,
}

/// Backend-neutral kinds of database failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database is busy or locked beyond the busy timeout: try again later.
    Busy,
    /// The stored schema does not match the configuration (start-up only).
    Schema,
    /// The database rejected a query the server built: a bug in the server (answered 500 and
    /// logged), never something the client can fix.
    Query,
    /// The database refused something the request supplied: a value out of its range (numeric
    /// overflow, division by zero) or a query beyond its limits (too many terms, too deep). The
    /// same request fails again, so it is the client's error (400), but it is logged too.
    InvalidInput,
    /// Anything else: I/O, corruption, a crashed worker.
    Internal,
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
// The message alone: the kind picks the status and log level, and a "Busy:" prefix in front of
// an operator's error message only adds noise.
#[error("{message}")]
pub struct StoreError {
    /// What sort of failure.
    pub kind: StoreErrorKind,
    /// Detail for the log (never sent to clients).
    pub message: String,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A table store. All methods take the table's current schema; the store never caches it.
pub trait Store: Send + Sync + 'static {
    /// The SQL dialect for lowering `$filter`/`$orderby`.
    fn dialect(&self) -> Dialect;

    /// Run `work` in a write transaction spanning several row operations and idempotency
    /// records (a batch, `idempotency.rs`), kept or rolled back as `work` says. SQLite runs it
    /// through the group commit (in a savepoint of a transaction it may share with concurrent
    /// writes); PostgreSQL in a transaction of its own. Ok once kept work is committed (or
    /// discarded work rolled back); an error means nothing of it was committed, except after a
    /// failed commit, whose outcome is unknown.
    fn transaction(&self, work: TxWork) -> BoxFuture<'_, StoreResult<()>>;

    /// Create or migrate the tables, their indexes and clock rows. Returns each table's schema as
    /// stored: the declared columns followed by columns an earlier run added dynamically.
    fn prepare<'a>(
        &'a self,
        tables: &'a [TableSchema],
    ) -> BoxFuture<'a, StoreResult<Vec<TableSchema>>>;

    /// Add columns (dynamic schema); columns that already exist are left alone. Returns the
    /// table's columns as stored afterwards.
    fn add_columns<'a>(
        &'a self,
        table: &'a TableSchema,
        columns: &'a [Column],
    ) -> BoxFuture<'a, StoreResult<Vec<Column>>>;

    /// The table's columns as stored now (no DDL): `table`'s columns followed by columns added
    /// since (by this or another process), as [`Store::add_columns`] returns them.
    fn columns<'a>(&'a self, table: &'a TableSchema) -> BoxFuture<'a, StoreResult<Vec<Column>>>;

    /// One row by id within `scope`, soft-deleted or not.
    fn get<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Item>>>;

    /// A page of rows within `scope`.
    fn list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<ListPage>>;

    /// The database's plan for [`Store::list`] of this query (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL), one plan line per line: shows that pulls are index scans.
    fn explain_list<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        query: ListQuery,
    ) -> BoxFuture<'a, StoreResult<String>>;

    /// Insert a row with this id, owned by `scope`'s user on a per-user table;
    /// [`WriteOutcome::AlreadyExists`] when the id is taken within the scope. On an integer-id
    /// table (`TableSchema::id_type`) `id` is ignored: the database assigns the next one.
    fn insert<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;

    /// Set these columns on a live row within `scope` whose version is `expected` (any when
    /// None).
    fn update<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        values: Vec<(String, SqlValue)>,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;

    /// Delete a live row within `scope` (a tombstone when the table has soft delete).
    fn delete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;

    /// Clear the tombstone of a soft-deleted row within `scope`; a live row is returned
    /// unchanged.
    fn undelete<'a>(
        &'a self,
        table: &'a TableSchema,
        scope: &'a Scope,
        id: &'a str,
        expected: Option<String>,
    ) -> BoxFuture<'a, StoreResult<WriteOutcome>>;

    /// Whether the database answers, for `GET /ready`: one cheap round trip, given up after
    /// `timeout`. The error's message is the reason `/ready` reports (an OS message such as
    /// "Connection refused" when it has one).
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, StoreResult<()>>;

    /// Connections in use now and the most the store opens, for the metrics.
    fn pool_status(&self) -> PoolStatus;

    /// Where the store records how long each operation waited for a connection.
    fn pool_wait(&self) -> &crate::observe::metrics::PoolWait;

    /// Whether other server processes on this database can be told about writes
    /// ([`Store::announce`], [`Store::listen`]): PostgreSQL. Without it the change feed relies
    /// on this process's own wake-ups and its periodic re-read (`crate::feed`).
    fn notifies(&self) -> bool {
        false
    }

    /// Tell the other server processes on this database that these tables (lower-case
    /// configured names) were written: one `pg_notify` per table, carrying only the name and
    /// this process's token. A wake-up, not data: losing it only delays a change-feed event.
    fn announce<'a>(&'a self, tables: &'a [String]) -> BoxFuture<'a, StoreResult<()>> {
        let _ = tables;
        Box::pin(async { Ok(()) })
    }

    /// Listen for other processes' [`Store::announce`]ments until the future is dropped: `wake`
    /// gets each announced table, and `None` after the listening connection was lost and
    /// re-established (announcements may have been missed meanwhile). Never returns.
    fn listen<'a>(&'a self, wake: Wake<'a>) -> BoxFuture<'a, ()> {
        let _ = wake;
        Box::pin(std::future::pending())
    }

    /// Where the store records how many writes each of its write transactions carried (group
    /// commit, `group.rs`).
    fn group_commits(&self) -> &crate::observe::metrics::GroupCommits;
}

/// A store's connections at one moment ([`Store::pool_status`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections running an operation now, in connections.
    pub in_use: u64,
    /// The most connections the store opens, in connections (SQLite: the readers and the
    /// writer; PostgreSQL: `pool_connections_max`).
    pub max: u64,
}

#[cfg(test)]
mod tests {
    //! The compare-and-swap and the stamps, without HTTP.
    //!
    //! `stale_expected_version_is_refused` runs two writes carrying the same expected version one
    //! after the other, so a store that does not check the version at all lets the second one
    //! through. It cannot catch a store that checks the version *before* taking the clock lock
    //! (the second write then reads the new version and is refused anyway); nor, reliably, can
    //! the HTTP test `concurrent_patches_with_one_if_match_have_one_winner`, whose writers only
    //! sometimes interleave that way. `postgres_version_is_checked_under_the_clock_lock` makes
    //! the interleaving happen every time: another transaction holds the clock row lock and
    //! changes the row while the swap waits on the lock, and commits only once the database says
    //! the swap is waiting.
    //!
    //! The PostgreSQL twins of the SQLite store's stamp tests (`store::sqlite::tests`) are here
    //! too: the strict `last + 1 ms` bump, unique stamps under concurrent writers, and the
    //! rollback of a failed compare-and-swap's (and a refused insert's) stamp.

    use std::sync::Arc;

    use serde_json::Value;
    use tablesync_protocol::odata::sql::{ColumnType, SqlValue};

    use super::{Scope, Store, WriteOutcome};
    use crate::config::StoreConfig;
    use crate::table::{Column, TableSchema};
    use crate::testing::{StoreKind, TestDatabase};

    fn schema() -> TableSchema {
        TableSchema {
            name: "T".into(),
            columns: vec![Column {
                name: "a".into(),
                ty: ColumnType::String,
            }],
            soft_delete: true,
            owner_column: None,
            id_type: crate::config::IdType::String,
            indexes: Vec::new(),
        }
    }

    fn version(outcome: &WriteOutcome) -> String {
        match outcome {
            WriteOutcome::Written(item) => match item.get("version") {
                Some(Value::String(v)) => v.clone(),
                other => panic!("no version: {other:?}"),
            },
            other => panic!("not written: {other:?}"),
        }
    }

    async fn stale_expected_version_is_refused(kind: StoreKind) {
        let db = TestDatabase::create(kind).await.unwrap();
        let config = StoreConfig::default();
        let store: Arc<dyn Store> = match kind {
            StoreKind::Sqlite => Arc::new(
                super::sqlite::SqliteStore::open(std::path::Path::new(db.url()), &config).unwrap(),
            ),
            StoreKind::Postgres => Arc::new(
                super::postgres::PostgresStore::open(db.url(), &config)
                    .await
                    .unwrap(),
            ),
        };
        let t = schema();
        store.prepare(std::slice::from_ref(&t)).await.unwrap();
        let text = |s: &str| vec![("a".to_owned(), SqlValue::Text(s.into()))];
        let v1 = version(
            &store
                .insert(&t, &Scope::Shared, "x", text("0"))
                .await
                .unwrap(),
        );
        let first = store
            .update(&t, &Scope::Shared, "x", text("1"), Some(v1.clone()))
            .await;
        let v2 = version(&first.unwrap());
        assert_ne!(v1, v2);
        // Same expected version again: the row has moved on, the swap must refuse.
        match store
            .update(&t, &Scope::Shared, "x", text("2"), Some(v1.clone()))
            .await
            .unwrap()
        {
            WriteOutcome::VersionMismatch(item) => {
                assert_eq!(item.get("a"), Some(&Value::String("1".into())));
                assert_eq!(item.get("version"), Some(&Value::String(v2.clone())));
            }
            other => panic!("second update with a stale version: {other:?}"),
        }
        for outcome in [
            store
                .delete(&t, &Scope::Shared, "x", Some(v1.clone()))
                .await
                .unwrap(),
            store
                .undelete(&t, &Scope::Shared, "x", Some(v1.clone()))
                .await
                .unwrap(),
        ] {
            assert!(
                matches!(outcome, WriteOutcome::VersionMismatch(_)),
                "{outcome:?}"
            );
        }
        let current = store.get(&t, &Scope::Shared, "x").await.unwrap().unwrap();
        assert_eq!(current.get("version"), Some(&Value::String(v2)));
    }

    /// A PostgreSQL store on a fresh database, the table `T` prepared, and an admin connection
    /// to the same database for the tests' own SQL.
    async fn postgres_store() -> (
        TestDatabase,
        Arc<dyn Store>,
        sqlx::PgConnection,
        TableSchema,
    ) {
        use sqlx::Connection;
        let db = TestDatabase::create(StoreKind::Postgres).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(
            super::postgres::PostgresStore::open(db.url(), &StoreConfig::default())
                .await
                .unwrap(),
        );
        let t = schema();
        store.prepare(std::slice::from_ref(&t)).await.unwrap();
        let conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        (db, store, conn, t)
    }

    fn text(s: &str) -> Vec<(String, SqlValue)> {
        vec![("a".to_owned(), SqlValue::Text(s.into()))]
    }

    fn stamp_of(outcome: &WriteOutcome) -> (String, String) {
        match outcome {
            WriteOutcome::Written(item) => (
                item["updatedAt"].as_str().unwrap().to_owned(),
                item["version"].as_str().unwrap().to_owned(),
            ),
            other => panic!("not written: {other:?}"),
        }
    }

    async fn clock(conn: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar("SELECT last_version FROM tablesync_clock WHERE table_name = 'T'")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn postgres_stamps_are_strictly_increasing_even_when_the_clock_is_behind() {
        let (_db, store, mut conn, t) = postgres_store().await;
        // An earlier write stamped far in the future (the clock stepped back since).
        sqlx::query(
            "UPDATE tablesync_clock SET last_updated_at = '2100-01-01T00:00:00Z', last_version = 41",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let first = store
            .insert(&t, &Scope::Shared, "a", text("1"))
            .await
            .unwrap();
        let second = store
            .update(&t, &Scope::Shared, "a", text("2"), None)
            .await
            .unwrap();
        assert_eq!(
            stamp_of(&first),
            (
                "2100-01-01T00:00:00.001Z".to_owned(),
                crate::table::version_from_counter(42)
            )
        );
        assert_eq!(
            stamp_of(&second),
            (
                "2100-01-01T00:00:00.002Z".to_owned(),
                crate::table::version_from_counter(43)
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_concurrent_writers_get_unique_stamps() {
        let (_db, store, _conn, t) = postgres_store().await;
        const WRITERS: usize = 8;
        const EACH: usize = 10;
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (store, t) = (Arc::clone(&store), t.clone());
            tasks.push(tokio::spawn(async move {
                let mut stamps = Vec::new();
                for i in 0..EACH {
                    let id = format!("w{w}-{i}");
                    let o = store
                        .insert(&t, &Scope::Shared, &id, text("x"))
                        .await
                        .unwrap();
                    stamps.push(stamp_of(&o));
                    let o = store
                        .update(&t, &Scope::Shared, &id, text("y"), None)
                        .await
                        .unwrap();
                    stamps.push(stamp_of(&o));
                }
                stamps
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let times: std::collections::HashSet<&String> = all.iter().map(|(u, _)| u).collect();
        let versions: std::collections::HashSet<&String> = all.iter().map(|(_, v)| v).collect();
        assert_eq!(times.len(), all.len(), "two writes share an updatedAt");
        assert_eq!(versions.len(), all.len(), "two writes share a version");
    }

    #[tokio::test]
    async fn postgres_failed_compare_and_swap_rolls_back_its_stamp() {
        let (_db, store, mut conn, t) = postgres_store().await;
        let written = store
            .insert(&t, &Scope::Shared, "x", text("0"))
            .await
            .unwrap();
        assert_eq!(clock(&mut conn).await, 1);
        let stale = Some("stale".to_owned());
        let WriteOutcome::Written(row) = written else {
            unreachable!()
        };
        assert_eq!(
            store
                .update(&t, &Scope::Shared, "x", text("1"), stale.clone())
                .await
                .unwrap(),
            WriteOutcome::VersionMismatch(row.clone())
        );
        assert!(matches!(
            store.delete(&t, &Scope::Shared, "x", stale).await.unwrap(),
            WriteOutcome::VersionMismatch(_)
        ));
        assert_eq!(
            store
                .update(&t, &Scope::Shared, "nope", text("1"), None)
                .await
                .unwrap(),
            WriteOutcome::NotFound
        );
        assert!(matches!(
            store
                .insert(&t, &Scope::Shared, "x", text("again"))
                .await
                .unwrap(),
            WriteOutcome::AlreadyExists(_)
        ));
        assert_eq!(
            clock(&mut conn).await,
            1,
            "the refused writes consumed no version"
        );
        let next = store
            .update(&t, &Scope::Shared, "x", text("1"), None)
            .await
            .unwrap();
        assert_eq!(stamp_of(&next).1, crate::table::version_from_counter(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_version_is_checked_under_the_clock_lock() {
        use sqlx::Connection;
        let (db, store, mut conn, t) = postgres_store().await;
        let v1 = version(
            &store
                .insert(&t, &Scope::Shared, "x", text("0"))
                .await
                .unwrap(),
        );
        // Another writer: holds the clock row lock and changes the row, not yet committed.
        let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let mut tx = other.begin().await.unwrap();
        sqlx::query(
            "UPDATE tablesync_clock SET last_version = last_version + 1 WHERE table_name = 'T'",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE \"T\" SET \"a\" = 'other', \"version\" = 'other-version' WHERE \"id\" = 'x'",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        // The swap carrying the version both read: it must wait for the lock, then refuse.
        let swap = {
            let (store, t, v1) = (Arc::clone(&store), t.clone(), v1.clone());
            tokio::spawn(async move {
                store
                    .update(&t, &Scope::Shared, "x", text("swap"), Some(v1))
                    .await
            })
        };
        // Commit only once PostgreSQL shows the swap waiting on a lock (polled: a bound against a
        // hang, not a timing assertion).
        let mut waiting = false;
        for _ in 0..2_000 {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE NOT l.granted AND a.datname = current_database()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if n > 0 {
                waiting = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(waiting, "the swap never waited on the clock lock");
        tx.commit().await.unwrap();
        match swap.await.unwrap().unwrap() {
            WriteOutcome::VersionMismatch(item) => {
                assert_eq!(item.get("a"), Some(&Value::String("other".into())));
            }
            other => panic!("a swap checked before the lock overwrote the other write: {other:?}"),
        }
    }

    #[tokio::test]
    async fn sqlite_stale_expected_version_is_refused() {
        stale_expected_version_is_refused(StoreKind::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_stale_expected_version_is_refused() {
        stale_expected_version_is_refused(StoreKind::Postgres).await;
    }
}
