//! The PostgreSQL read connections: a `deadpool` pool of sqlx connections that hands a
//! connection straight back when its read finished.
//!
//! sqlx's own pool sends a `Sync` and waits for the answer every time a connection comes back
//! (`PoolConnection`'s drop spawns that "ping on release"), so every read cost a second round
//! trip, wake-ups of our runtime and of the database backend. On a 2-core machine that work
//! competes with the next request: with this pool, 20,000 reads by id (4 clients) took 30 %
//! fewer context switches machine-wide, and 10,000 `$top=50` pages 22 % fewer and 6 % less CPU
//! (BENCHMARKS.md, "The PostgreSQL read pool").
//!
//! What the ping was for, and how this pool covers it:
//! * **A read that did not finish** (its request was cancelled while it ran, or it returned
//!   early on an error inside its transaction): the connection may hold unread rows or a
//!   queued `ROLLBACK`. A [`ReadConn`] that is dropped
//!   without [`ReadConn::finished`] gets the same ping sqlx gives, on a task of its own, before
//!   it returns to the pool; one whose ping fails is closed. (sqlx would also drain such a
//!   connection at its next statement; the ping just does not leave a read-only snapshot open
//!   that long.)
//! * **A connection that died while idle** (a database restart): before a read gets one idle
//!   for `read_pool_ping_idle_ms` or longer, it is pinged, and replaced if that fails. A read that
//!   meets a dead connection anyway closes it and every idle one ([`ReadConn::connection_failed`])
//!   and runs once more, on a new connection (`is_connection_error`).
//! * **Old connections** are closed and replaced once `read_pool_connection_lifetime_ms` old,
//!   as sqlx's 30-minute default did, so a backend's caches do not grow for ever.
//!
//! Connections are handed out last-in first-out: a sequential client (a pull) keeps meeting the
//! same warm connection, whose prepared statements have settled on their plans.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection as _;

use crate::store::{StoreError, StoreErrorKind};

/// How the pool opens and checks its connections.
pub(super) struct Connector {
    options: PgConnectOptions,
    /// `read_pool_ping_idle_ms`.
    ping_idle: Duration,
    /// `read_pool_connection_lifetime_ms`.
    lifetime: Duration,
}

impl managed::Manager for Connector {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.options).await
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if let Some(why) = recycle_decision(
            metrics.age(),
            metrics.last_used(),
            self.lifetime,
            self.ping_idle,
        ) {
            match why {
                Recycle::Replace => {
                    return Err(RecycleError::message(
                        "older than read_pool_connection_lifetime_ms",
                    ))
                }
                Recycle::Ping => conn.ping().await.map_err(RecycleError::Backend)?,
            }
        }
        Ok(())
    }
}

/// What a pooled connection needs before a read gets it, beyond nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recycle {
    /// Close it and open a new one: it has lived long enough.
    Replace,
    /// One round trip first: it has been idle long enough to have died unnoticed.
    Ping,
}

/// The pure decision of [`Connector::recycle`]: `age` since the connection opened, `idle` since
/// a read last got it.
fn recycle_decision(
    age: Duration,
    idle: Duration,
    lifetime: Duration,
    ping_idle: Duration,
) -> Option<Recycle> {
    if age >= lifetime {
        Some(Recycle::Replace)
    } else if idle >= ping_idle {
        Some(Recycle::Ping)
    } else {
        None
    }
}

/// The read connections of one server process.
#[derive(Clone)]
pub(super) struct ReadPool {
    pool: managed::Pool<Connector>,
    /// `busy_timeout_ms`, for the message of a read that found no free connection.
    wait: Duration,
}

/// What the pool is built from.
pub(super) struct ReadPoolConfig {
    pub options: PgConnectOptions,
    /// `read_pool_connections_max`.
    pub connections_max: u32,
    /// `read_pool_ping_idle_ms`.
    pub ping_idle: Duration,
    /// `read_pool_connection_lifetime_ms`.
    pub lifetime: Duration,
    /// `busy_timeout_ms`: the longest wait for a free connection, and for opening one.
    pub wait: Duration,
}

impl ReadPool {
    pub fn new(config: ReadPoolConfig) -> Result<Self, StoreError> {
        let connector = Connector {
            options: config.options,
            ping_idle: config.ping_idle,
            lifetime: config.lifetime,
        };
        let pool = managed::Pool::builder(connector)
            .max_size(usize::try_from(config.connections_max).unwrap_or(usize::MAX))
            .queue_mode(managed::QueueMode::Lifo)
            .wait_timeout(Some(config.wait))
            .create_timeout(Some(config.wait))
            .recycle_timeout(Some(config.wait))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Internal, format!("the read pool: {e}"))
            })?;
        Ok(ReadPool {
            pool,
            wait: config.wait,
        })
    }

    /// A read connection, opened if none is idle and fewer than `read_pool_connections_max` are
    /// open. Busy (503) when none came free within `busy_timeout_ms`.
    pub async fn get(&self) -> Result<ReadConn, StoreError> {
        match self.pool.get().await {
            Ok(conn) => Ok(ReadConn { conn: Some(conn) }),
            Err(e) => Err(self.pool_error(e)),
        }
    }

    fn pool_error(&self, e: PoolError<sqlx::Error>) -> StoreError {
        match e {
            PoolError::Backend(e) => super::classify(&e),
            PoolError::Timeout(managed::TimeoutType::Wait) => StoreError::new(
                StoreErrorKind::Busy,
                format!(
                    "no PostgreSQL read connection came free within {} ms (busy_timeout_ms; all {} \
                     of read_pool_connections_max in use)",
                    self.wait.as_millis(),
                    self.pool.status().max_size
                ),
            ),
            PoolError::Timeout(_) => StoreError::new(
                StoreErrorKind::Busy,
                format!(
                    "PostgreSQL did not answer within {} ms (busy_timeout_ms)",
                    self.wait.as_millis()
                ),
            ),
            other => StoreError::new(StoreErrorKind::Internal, format!("the read pool: {other}")),
        }
    }

    /// Connections open, and of them in use by a read.
    pub fn status(&self) -> ReadPoolStatus {
        let status = self.pool.status();
        let open = status.size as u64;
        ReadPoolStatus {
            open,
            in_use: open.saturating_sub(status.available as u64),
        }
    }

    /// `read_pool_connections_max`.
    pub fn max(&self) -> u64 {
        self.pool.status().max_size as u64
    }
}

/// How many read connections are open, and how many of them a read holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadPoolStatus {
    pub open: u64,
    pub in_use: u64,
}

/// A read's connection. Call [`ReadConn::finished`] once the read's statements ran to their end
/// (answered or failed with a database error): it goes straight back to the pool. Dropped any
/// other way it is pinged first (see the module docs); [`ReadConn::connection_failed`] closes it.
pub(super) struct ReadConn {
    /// Taken out by [`ReadConn::finished`] and [`ReadConn::connection_failed`]; still here when
    /// the drop comes, it belongs to a read that did not finish.
    conn: Option<Object<Connector>>,
}

impl ReadConn {
    /// The read ran to its end: back to the pool as it is.
    pub fn finished(mut self) {
        drop(self.conn.take());
    }

    /// The connection failed: close it, and every idle one with it. Most often the database
    /// ended them all (a restart, a failover), and a read that runs again after this one must
    /// not meet the next dead connection: the pool opens a new one instead.
    pub fn connection_failed(mut self) {
        if let Some(conn) = self.conn.take() {
            if let Some(pool) = Object::pool(&conn) {
                pool.retain(|_, _| false);
            }
            drop(Object::take(conn));
        }
    }
}

impl Deref for ReadConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
            .as_deref()
            .expect("a ReadConn holds its connection until dropped")
    }
}

impl DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a ReadConn holds its connection until dropped")
    }
}

impl Drop for ReadConn {
    fn drop(&mut self) {
        // Finished or failed reads took their connection already.
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if conn.ping().await.is_err() {
                        drop(Object::take(conn));
                    }
                });
            }
            // No runtime to ping on (the process is ending): do not pool it.
            Err(_) => drop(Object::take(conn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Row;

    use super::*;
    use crate::testing::{StoreKind, TestDatabase};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_young_connection_is_handed_out_as_it_is() {
        assert_eq!(recycle_decision(10 * MS, 5 * MS, 1000 * MS, 100 * MS), None);
    }

    #[test]
    fn an_idle_connection_is_pinged_first() {
        assert_eq!(
            recycle_decision(500 * MS, 100 * MS, 1000 * MS, 100 * MS),
            Some(Recycle::Ping)
        );
    }

    #[test]
    fn an_old_connection_is_replaced_even_when_busy() {
        assert_eq!(
            recycle_decision(1000 * MS, Duration::ZERO, 1000 * MS, 100 * MS),
            Some(Recycle::Replace)
        );
    }

    #[test]
    fn ping_idle_zero_pings_before_every_read() {
        assert_eq!(
            recycle_decision(MS, Duration::ZERO, 1000 * MS, Duration::ZERO),
            Some(Recycle::Ping)
        );
    }

    /// A one-connection pool on a fresh database, and an outside connection to watch it with.
    async fn one_connection_pool(ping_idle: Duration) -> (TestDatabase, ReadPool, PgConnection) {
        let db = TestDatabase::create(StoreKind::Postgres).await.unwrap();
        let options = PgConnectOptions::from_str(db.url())
            .unwrap()
            .application_name("read_pool_test");
        let pool = ReadPool::new(ReadPoolConfig {
            options: options.clone(),
            connections_max: 1,
            ping_idle,
            lifetime: Duration::from_secs(3600),
            wait: Duration::from_secs(10),
        })
        .unwrap();
        let watcher = PgConnection::connect_with(&options.application_name("watcher"))
            .await
            .unwrap();
        (db, pool, watcher)
    }

    /// The state of the pool's one backend, as the database sees it.
    async fn pooled_backend_state(watcher: &mut PgConnection) -> Vec<String> {
        sqlx::query(
            "SELECT state FROM pg_stat_activity \
             WHERE application_name = 'read_pool_test' AND datname = current_database()",
        )
        .fetch_all(watcher)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
    }

    #[tokio::test]
    async fn a_read_dropped_inside_its_transaction_is_rolled_back_before_the_next_read() {
        let (_db, pool, mut watcher) = one_connection_pool(Duration::from_secs(3600)).await;
        {
            let mut conn = pool.get().await.unwrap();
            let mut tx = conn
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .unwrap();
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(one, 1);
            // Dropped here, as a cancelled request drops them: sqlx only queues the ROLLBACK.
        }
        // The one connection comes back only after its ping flushed that ROLLBACK.
        let mut conn = pool.get().await.unwrap();
        assert_eq!(pooled_backend_state(&mut watcher).await, ["idle"]);
        let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            isolation, "read committed",
            "the dropped transaction is over"
        );
        conn.finished();
        assert_eq!(
            pool.status(),
            ReadPoolStatus { open: 1, in_use: 0 },
            "the same connection, pooled again"
        );
    }

    #[tokio::test]
    async fn a_read_dropped_mid_stream_leaves_a_clean_connection() {
        let (_db, pool, _watcher) = one_connection_pool(Duration::from_secs(3600)).await;
        {
            let mut conn = pool.get().await.unwrap();
            let mut rows =
                sqlx::query("SELECT g FROM generate_series(1, 100000) AS g").fetch(&mut *conn);
            let first =
                std::future::poll_fn(|cx| futures_core::Stream::poll_next(rows.as_mut(), cx))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(first.get::<i32, _>(0), 1);
        }
        let mut conn = pool.get().await.unwrap();
        let answer: i32 = sqlx::query_scalar("SELECT 42")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            answer, 42,
            "no row of the abandoned read is left in the way"
        );
        conn.finished();
        assert_eq!(pool.status(), ReadPoolStatus { open: 1, in_use: 0 });
    }

    #[tokio::test]
    async fn a_connection_that_died_idle_is_replaced_before_a_read_gets_it() {
        let (_db, pool, mut watcher) = one_connection_pool(Duration::ZERO).await;
        let mut conn = pool.get().await.unwrap();
        let first_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        conn.finished();
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(first_pid)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        assert!(killed);
        // pg_terminate_backend only signals: wait until the backend is gone.
        let started = std::time::Instant::now();
        loop {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(first_pid)
                    .fetch_one(&mut watcher)
                    .await
                    .unwrap();
            if !alive {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "backend {first_pid} lives on"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // `read_pool_ping_idle_ms = 0`: the ping finds it dead and the pool opens another.
        let mut conn = pool.get().await.unwrap();
        let second_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_ne!(second_pid, first_pid);
        conn.finished();
    }

    #[tokio::test]
    async fn a_failed_connection_is_closed_with_every_idle_one() {
        let db = TestDatabase::create(StoreKind::Postgres).await.unwrap();
        let pool = ReadPool::new(ReadPoolConfig {
            options: PgConnectOptions::from_str(db.url()).unwrap(),
            connections_max: 3,
            ping_idle: Duration::from_secs(3600),
            lifetime: Duration::from_secs(3600),
            wait: Duration::from_secs(10),
        })
        .unwrap();
        let (a, b, c) = (
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
            pool.get().await.unwrap(),
        );
        b.finished();
        c.finished();
        assert_eq!(pool.status(), ReadPoolStatus { open: 3, in_use: 1 });
        a.connection_failed();
        assert_eq!(
            pool.status(),
            ReadPoolStatus { open: 0, in_use: 0 },
            "the failed one and both idle ones are closed"
        );
        let mut conn = pool.get().await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        conn.finished();
    }
}
