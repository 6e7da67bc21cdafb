//! Change-feed wake-ups between server processes: `pg_notify` after a write, `LISTEN` on one
//! dedicated connection per process.
//!
//! A notification carries only `<sender token> <table>` on the channel [`CHANNEL`]: it says
//! "read again", never what changed, so subscribers on every process read the rows themselves
//! and a lost or duplicated notification can only delay an event or cost one read. The token
//! lets a process skip its own announcements (its subscribers were woken directly).
//! Notifications are per database, so processes on other databases never hear them.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{classify, PostgresStore};
use crate::store::{StoreResult, Wake};

/// The notification channel of every tablesync process on a database.
pub const CHANNEL: &str = "tablesync_changes";

/// Longest wait before trying to listen again after the listening connection failed.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// `pg_notify` each table once, in one statement, on a pooled connection.
pub async fn announce(store: &PostgresStore, tables: &[String]) -> StoreResult<()> {
    let payloads: Vec<String> = tables
        .iter()
        .map(|t| format!("{} {t}", store.sender))
        .collect();
    let mut conn = store.acquire().await?;
    let sent = sqlx::query("SELECT pg_notify($1::text, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(&mut *conn)
        .await;
    super::release(conn, &sent);
    sent.map_err(|e| classify(&e))?;
    Ok(())
}

/// Listen on [`CHANNEL`] for ever on a connection of its own (not one of the pool's), calling
/// `wake(Some(table))` for another process's announcement and `wake(None)` whenever the
/// connection was lost (sqlx re-establishes it; what was sent meanwhile is gone).
pub async fn listen(store: &PostgresStore, wake: Wake<'_>) {
    let mine = format!("{} ", store.sender);
    let mut retry = Duration::from_millis(100);
    loop {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(store.options.clone());
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("change feed: cannot LISTEN for other processes' writes: {e}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = Duration::from_millis(100);
        // Listening (again): anything announced before this point may have been missed.
        wake(None);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    if payload.starts_with(&mine) {
                        continue;
                    }
                    match payload.split_once(' ') {
                        Some((_, table)) => wake(Some(table)),
                        None => wake(None),
                    }
                }
                // Lost and re-connected (sqlx listens again by itself).
                Ok(None) => wake(None),
                Err(e) => {
                    tracing::warn!("change feed: the LISTEN connection failed: {e}");
                    tokio::time::sleep(retry).await;
                    break;
                }
            }
        }
    }
}
