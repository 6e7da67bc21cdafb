//! What a store remembers about itself beyond rows and queue: the server it last synced with
//! (`__config` key [`SERVER_URL_KEY`]), and which tables it defines.
//!
//! The URL is recorded by a pull that completed and by a push that reached the server with a
//! non-empty queue, so a tool (the CLI's `status`, its `--url` default) can name the server a
//! store belongs to without the app's configuration. Reading it needs no sync context: it is
//! read from the file, read-only, before a client (which needs a URL) exists.

use rusqlite::{Connection, OptionalExtension};

use super::{get_config, set_config, LocalStore};
use crate::error::Result;

/// The `__config` key of the server URL the store last synced with.
pub(crate) const SERVER_URL_KEY: &str = "serverUrl";

impl LocalStore {
    /// The base URL of the server this store last synced with (a completed pull, or a push that
    /// sent something), read from the file; `None` for a missing file, a store that never
    /// synced, or one written by an SDK that did not record it. Opens the file read-only.
    pub fn last_server_url(&self) -> Result<Option<String>> {
        if !self.path.is_file() {
            return Ok(None);
        }
        let conn =
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let has_config = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__config'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !has_config {
            return Ok(None);
        }
        get_config(&conn, SERVER_URL_KEY)
    }

    /// Names of the tables defined so far (by [`LocalStore::define_table`] and
    /// [`LocalStore::define_stored_tables`]), in definition order.
    pub fn table_names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.name.as_str()).collect()
    }
}

/// Records `url` as the server the store last synced with. Read first: every pull ends here,
/// and an unchanged URL should cost no write (an empty incremental pull is one request).
pub(crate) fn record_server_url(conn: &Connection, url: &str) -> Result<()> {
    if get_config(conn, SERVER_URL_KEY)?.as_deref() == Some(url) {
        return Ok(());
    }
    set_config(conn, SERVER_URL_KEY, url)
}

/// Queued operations after `sequence` (what a push has yet to send), for its progress.
pub(crate) fn queued_after(conn: &Connection, sequence: i64) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM \"__operations\" WHERE \"sequence\" > ?1",
        [sequence],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The recorded server URL of an open store.
pub(crate) fn server_url(conn: &Connection) -> Result<Option<String>> {
    get_config(conn, SERVER_URL_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_read_back_from_the_file_and_missing_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        assert_eq!(LocalStore::new(&path).last_server_url().unwrap(), None);
        assert!(!path.exists(), "reading must not create the file");
        let store = LocalStore::new(&path).open().unwrap();
        let conn = store.conn.lock().unwrap();
        assert_eq!(server_url(&conn).unwrap(), None);
        record_server_url(&conn, "http://127.0.0.1:1/").unwrap();
        record_server_url(&conn, "http://127.0.0.1:2/").unwrap();
        drop(conn);
        assert_eq!(
            LocalStore::new(&path).last_server_url().unwrap().as_deref(),
            Some("http://127.0.0.1:2/")
        );
    }
}
