//! End-to-end tests of the client SDK against real servers (one test binary, see
//! ARCHITECTURE.md): our in-process `tablesync-server` on both of its stores, and the official
//! Node server.
//!
//! A test against our server is one `async fn name(kind: StoreKind)` body, run once per store
//! by [`store_tests!`]: `name::sqlite` on a temporary SQLite file, `name::postgres` on a fresh
//! `CREATE DATABASE tablesync_test_<random>` on `TABLESYNC_TEST_PG_URL` (default
//! postgres://postgres@127.0.0.1:5432/postgres), dropped at the end. The PostgreSQL tests fail,
//! never skip, when PostgreSQL cannot be reached.

/// For each listed `async fn name(kind: StoreKind)`, a module `name` with the tests `sqlite` and
/// `postgres` running it on that store (a module per test because `macro_rules!` cannot glue
/// identifiers; the same scheme as the server's tests).
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::StoreKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::StoreKind::Postgres).await
                }
            }
        )+
    };
}

mod auth;
mod batch;
mod batch_server;
mod common;
mod convergence;
mod convergence_faults;
mod discovery;
mod faults;
mod int_ids;
mod live;
mod local;
mod lost_answers;
mod mutants_client;
mod official;
mod ours;
mod progress;
mod pull;
mod queued_rows;
mod scenario;
mod transaction;
