//! PostgreSQL: requests right after the database ended every connection of the server (as a
//! restart, a failover or an operator's `pg_terminate_backend` does) are answered, not failed.
//!
//! * `reads_and_writes_answer_after_every_connection_was_terminated`: the server holds several
//!   idle read connections and its write connections; all of them are terminated from outside,
//!   and the requests that follow at once (well inside `read_pool_ping_idle_ms`, so no idle ping
//!   catches the dead connections first) answer 200 and 201.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use tablesync_server::Config;

use crate::{send, StoreKind, TestServer};

/// Long enough that no read connection is pinged for being idle during the test.
const PING_IDLE_MS: u64 = 600_000;

/// Terminates every connection to the server's database but `watcher`'s own, then waits until
/// the database lists none of the terminated backends any more. Returns how many it terminated.
///
/// The wait is for those backends only: the server may open new connections of its own at once
/// (a pool topping itself up, the change feed's listener reconnecting), and those are alive.
async fn terminate_every_connection(watcher: &mut sqlx::PgConnection) -> usize {
    let terminated: Vec<i32> = sqlx::query_scalar(
        // MATERIALIZED: the victims are chosen before any is terminated (a plain AND may call
        // pg_terminate_backend on the watcher's own backend before excluding it).
        "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) \
         SELECT pid FROM victims WHERE pg_terminate_backend(pid)",
    )
    .fetch_all(&mut *watcher)
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&terminated)
                .fetch_one(&mut *watcher)
                .await
                .unwrap();
        if left == 0 {
            return terminated.len();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{left} of {} terminated backends still alive 10 s after pg_terminate_backend",
            terminated.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_answer_after_every_connection_was_terminated() {
    let mut config = Config::default_todo();
    config.store.read_pool_ping_idle_ms = PING_IDLE_MS;
    let s = TestServer::with_config(StoreKind::Postgres, config).await;
    s.insert_todo("a", "first", false).await;
    // Eight reads at once leave several read connections idle in the pool.
    let reads: Vec<_> = (0..8)
        .map(|_| tokio::spawn(send(s.req(reqwest::Method::GET, "/tables/TodoItem/a"))))
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().status, 200);
    }
    let mut watcher = sqlx::PgConnection::connect(s.database_url()).await.unwrap();
    let terminated = terminate_every_connection(&mut watcher).await;
    assert!(
        terminated >= 3,
        "only {terminated} connections to terminate"
    );

    for round in 0..12 {
        let got = s.get("/tables/TodoItem/a").await;
        assert_eq!(
            got.status, 200,
            "read {round} after the restart: {:?}",
            got.body
        );
        let listed = s.get("/tables/TodoItem?$top=10").await;
        assert_eq!(listed.status, 200, "list {round}: {:?}", listed.body);
    }
    let counted = s.get("/tables/TodoItem?$inlinecount=allpages").await;
    assert_eq!(counted.status, 200, "{:?}", counted.body);
    let written = s
        .post("/tables/TodoItem", json!({"id": "b", "text": "after"}))
        .await;
    assert_eq!(written.status, 201, "{:?}", written.body);
}
