//! Test support: a fresh, empty database per test on either store, removed when dropped.
//!
//! Every server-facing test runs once per [`StoreKind`]. SQLite databases are files in a new
//! temporary directory; PostgreSQL databases are `CREATE DATABASE tablesync_test_<random>` on
//! the server named by `TABLESYNC_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/ensure-postgres` provides),
//! dropped with `WITH (FORCE)` at the end. When PostgreSQL cannot be reached,
//! [`TestDatabase::create`] returns an error that says so; tests unwrap it and fail loudly,
//! they never skip.
//!
//! ```no_run
//! # async fn demo() {
//! use tablesync_server::testing::{StoreKind, TestDatabase};
//! let db = TestDatabase::create(StoreKind::Postgres).await.expect("PostgreSQL for tests");
//! let config = tablesync_server::Config::default_todo().with_database(db.url());
//! # }
//! ```
//!
//! Not part of the server's stable API.

use std::path::PathBuf;

use sqlx::Connection;

/// The environment variable naming the PostgreSQL server tests create their databases on (a
/// URL whose user may `CREATE DATABASE`).
pub const PG_URL_ENV: &str = "TABLESYNC_TEST_PG_URL";

/// Used when [`PG_URL_ENV`] is unset.
pub const PG_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl StoreKind {
    /// Both stores, SQLite first.
    pub const ALL: [StoreKind; 2] = [StoreKind::Sqlite, StoreKind::Postgres];

    /// `"sqlite"` or `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL server URL tests use: [`PG_URL_ENV`] or [`PG_URL_DEFAULT`].
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| PG_URL_DEFAULT.to_owned())
}

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestDatabaseError(String);

/// A fresh, empty database for one test; removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    kind: StoreKind,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Make a new database of this kind.
    pub async fn create(kind: StoreKind) -> Result<TestDatabase, TestDatabaseError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match kind {
            StoreKind::Sqlite => {
                let dir = std::env::temp_dir().join(format!("tablesync-test-{unique}"));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    TestDatabaseError(format!("cannot create {}: {e}", dir.display()))
                })?;
                Ok(TestDatabase {
                    kind,
                    url: dir.join("test.db").display().to_string(),
                    cleanup: Cleanup::Dir(dir),
                })
            }
            StoreKind::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("tablesync_test_{unique}");
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| {
                    TestDatabaseError(format!(
                        "PostgreSQL is required by this test but cannot be reached at {admin_url} \
                         ({e}). Start it (bash scripts/ensure-postgres prints a URL) and set \
                         {PG_URL_ENV} when it is not {PG_URL_DEFAULT}."
                    ))
                })?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| TestDatabaseError(format!("CREATE DATABASE {name}: {e}")))?;
                let _ = conn.close().await;
                Ok(TestDatabase {
                    kind,
                    url: url_with_database(&admin_url, &name),
                    cleanup: Cleanup::Postgres { admin_url, name },
                })
            }
        }
    }

    /// [`create`](Self::create) for code without a runtime (or inside one: it runs on its own
    /// thread).
    pub fn create_blocking(kind: StoreKind) -> Result<TestDatabase, TestDatabaseError> {
        on_own_runtime(move || async move { TestDatabase::create(kind).await })
            .unwrap_or_else(|e| Err(TestDatabaseError(e)))
    }

    /// Which store this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The `database` setting (`--database` value): a file path or a `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                // Best effort: a leftover temporary directory is harmless.
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // FORCE ends the connections a still-running server holds.
                let dropped = on_own_runtime(move || async move {
                    let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                });
                match dropped {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("warning: could not drop test database: {e}"),
                    Err(e) => eprintln!("warning: could not drop test database: {e}"),
                }
            }
        }
    }
}

/// Run an async job on a new current-thread runtime on a new thread (usable from sync code and
/// from inside another runtime, where blocking on a nested runtime would panic).
fn on_own_runtime<T, F, Fut>(job: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(runtime.block_on(job()))
    })
    .join()
    .unwrap_or_else(|_| Err("the database helper thread panicked".to_owned()))
}

/// `url` with its database (path) replaced by `name`; the query string is kept.
fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            url_with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://h:1", "t3"),
            "postgres://h:1/t3"
        );
    }
}
