//! The local SQLite store: schema, migrations, and the one seam between async and blocking code.
//!
//! All SQL of the SDK lives under this module as plain synchronous functions over a
//! [`rusqlite::Connection`] or [`rusqlite::Transaction`]. Async code reaches them through exactly
//! one door, [`Store::run`], which moves the closure to tokio's blocking pool and locks the
//! connection there: the `std::sync::Mutex` guarding the connection is only ever held inside that
//! blocking closure, never across an `.await`.
//!
//! Layout of the file (schema version 2, `PRAGMA user_version = 2`):
//! * one table per defined sync table: `id TEXT PRIMARY KEY`, `createdAt TEXT`, `updatedAt TEXT`,
//!   `version TEXT`, `deleted INTEGER`, then the declared columns (string `TEXT`, number `REAL`,
//!   boolean `INTEGER` 0/1, date `TEXT` in the wire form `YYYY-MM-DDTHH:MM:SS.sssZ`, as
//!   ARCHITECTURE.md prescribes, so text order is time order);
//! * `__operations`: the queue (one entry per item at most, pushed in `sequence` order), each
//!   entry with its `idempotencyKey` (UUID v4, replaced whenever the entry changes), its
//!   `groupId` (the local transaction it belongs to, `NULL` for a single write) and its
//!   `sentItems` (JSON array of the bodies sent by attempts since the entry's base version, so a
//!   push can recognise a write that landed although its answer was lost);
//! * `__errors`: the operation errors of the last push;
//! * `__config`: key/value settings — delta tokens (`deltaToken|<table>|<queryId>`), the table
//!   definitions (`table|<name>`), which only ever extend (a narrower definition is merged with
//!   the recorded one at open), and the server last synced with (`serverUrl`, `meta`).
//!
//! Upgrades run in place, one step per version, inside one transaction ([`MIGRATIONS`]).

pub(crate) mod meta;
pub(crate) mod page;
pub(crate) mod queue;
pub(crate) mod rows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction};

use tablesync_protocol::odata::sql::ColumnType;

use crate::error::{Error, Result};

/// The schema version this SDK writes (`PRAGMA user_version`).
pub const STORE_SCHEMA_VERSION: i64 = 2;

/// Upgrade steps: `MIGRATIONS[n]` takes a store from version `n` to `n + 1`.
const MIGRATIONS: &[fn(&Transaction<'_>) -> rusqlite::Result<()>] =
    &[migrate_0_to_1, migrate_1_to_2];

/// Version 0 is an empty (or foreign) file: create the system tables.
fn migrate_0_to_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
        CREATE TABLE IF NOT EXISTS "__operations" (
            "sequence"  INTEGER PRIMARY KEY AUTOINCREMENT,
            "id"        TEXT NOT NULL UNIQUE,
            "kind"      INTEGER NOT NULL,
            "state"     INTEGER NOT NULL,
            "tableName" TEXT NOT NULL,
            "itemId"    TEXT NOT NULL,
            "item"      TEXT,
            "version"   INTEGER NOT NULL,
            UNIQUE ("tableName", "itemId")
        );
        CREATE TABLE IF NOT EXISTS "__errors" (
            "operationId"      TEXT PRIMARY KEY,
            "operationVersion" INTEGER NOT NULL,
            "operationKind"    INTEGER NOT NULL,
            "tableName"        TEXT NOT NULL,
            "itemId"           TEXT NOT NULL,
            "item"             TEXT NOT NULL,
            "httpStatus"       INTEGER,
            "rawResult"        TEXT NOT NULL,
            "serverItem"       TEXT
        );
        CREATE TABLE IF NOT EXISTS "__config" (
            "key"   TEXT PRIMARY KEY,
            "value" TEXT NOT NULL
        );
        "#,
    )
}

/// Version 2: exactly-once push. Every queued operation gets an idempotency key (existing
/// entries a fresh one each), an atomicity group and the memory of what its attempts sent
/// (`docs/extensions.md` section 3; ARCHITECTURE.md "Push").
fn migrate_1_to_2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        r#"
        ALTER TABLE "__operations" ADD COLUMN "idempotencyKey" TEXT;
        ALTER TABLE "__operations" ADD COLUMN "groupId" TEXT;
        ALTER TABLE "__operations" ADD COLUMN "sentItems" TEXT;
        CREATE INDEX IF NOT EXISTS "__operations_groupId" ON "__operations" ("groupId")
            WHERE "groupId" IS NOT NULL;
        "#,
    )?;
    let ids = {
        let mut stmt = tx.prepare("SELECT \"id\" FROM \"__operations\"")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        ids
    };
    for id in ids {
        tx.execute(
            "UPDATE \"__operations\" SET \"idempotencyKey\" = ?2 WHERE \"id\" = ?1",
            [id, new_idempotency_key()],
        )?;
    }
    Ok(())
}

/// A fresh idempotency key (UUID v4, `docs/extensions.md` section 3).
pub(crate) fn new_idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One declared column of a sync table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Column {
    /// Column name (an SQL identifier, not a system property).
    pub name: String,
    /// Protocol type, which fixes the SQLite storage class.
    pub ty: ColumnType,
}

/// The shape of a sync table, declared before the store is initialised (the tutorial's
/// `DefineTable`). The five system columns are implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    name: String,
    columns: Vec<Column>,
}

impl TableDefinition {
    /// A table with only the system columns.
    pub fn new(name: impl Into<String>) -> Self {
        TableDefinition {
            name: name.into(),
            columns: Vec::new(),
        }
    }

    /// Adds a column (builder style).
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.columns.push(Column {
            name: name.into(),
            ty,
        });
        self
    }

    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared (non-system) columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The type of a declared column.
    pub(crate) fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.ty)
    }

    fn validate(&self) -> Result<()> {
        if !tablesync_protocol::system::is_valid_identifier(&self.name)
            || self.name.starts_with("__")
        {
            return Err(Error::InvalidTableName(self.name.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            let bad = |reason: &str| Error::InvalidColumn {
                table: self.name.clone(),
                column: c.name.clone(),
                reason: reason.into(),
            };
            if !tablesync_protocol::system::is_valid_identifier(&c.name) {
                return Err(bad("not an identifier ^[A-Za-z_][A-Za-z0-9_]{0,127}$"));
            }
            if tablesync_protocol::system::ALL
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&c.name))
            {
                return Err(bad("system properties are implicit"));
            }
            // SQLite identifiers are case-insensitive, so `Text` and `text` would collide.
            if !seen.insert(c.name.to_ascii_lowercase()) {
                return Err(bad("declared twice"));
            }
        }
        Ok(())
    }
}

/// SQLite storage type of a protocol column type (ARCHITECTURE.md "Column types and storage").
pub(crate) fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Number => "REAL",
        ColumnType::Boolean => "INTEGER",
        _ => "TEXT",
    }
}

/// Name used for a column type in `__config` and in messages.
pub(crate) fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "string",
        ColumnType::Number => "number",
        ColumnType::Boolean => "boolean",
        ColumnType::Date => "date",
        #[allow(unreachable_patterns)]
        _ => "string",
    }
}

/// The app-chosen SQLite file plus the table definitions (the tutorial's
/// `MobileServiceSQLiteStore`). Define every table, then hand the store to
/// [`crate::SyncContext::initialize`].
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
    tables: Vec<TableDefinition>,
    page_cache_bytes_max: u64,
}

/// Default of [`LocalStore::with_page_cache_bytes_max`], in bytes (SQLite's own default is
/// 2 MiB).
pub const PAGE_CACHE_BYTES_MAX_DEFAULT: u64 = 32 * 1024 * 1024;

impl LocalStore {
    /// A store backed by the SQLite file at `path` (created when missing). Use `":memory:"` for a
    /// throw-away store.
    pub fn new(path: impl AsRef<Path>) -> Self {
        LocalStore {
            path: path.as_ref().to_path_buf(),
            tables: Vec::new(),
            page_cache_bytes_max: PAGE_CACHE_BYTES_MAX_DEFAULT,
        }
    }

    /// The most memory SQLite's page cache of the store's connection may hold, in bytes
    /// (`PRAGMA cache_size`; default [`PAGE_CACHE_BYTES_MAX_DEFAULT`], allocated only as pages
    /// are read). A pull also lets the write-ahead log grow to this many bytes before it is
    /// checkpointed. Why it matters: pulled rows land at random places of the id index, and
    /// with SQLite's 2 MiB default a cold pull of 100,000 rows re-read index pages from the
    /// file and checkpointed (two fsyncs) every other page; kernel time was 45 % of the pull's
    /// client CPU.
    pub fn with_page_cache_bytes_max(mut self, bytes: u64) -> Self {
        self.page_cache_bytes_max = bytes;
        self
    }

    /// Declares a table. Columns added in a later version of the app are added to the existing
    /// file with `ALTER TABLE ADD COLUMN`; columns are never dropped, and a definition with fewer
    /// columns than the file records is extended with the recorded ones at initialisation (see
    /// `open`). Names are compared case-insensitively.
    pub fn define_table(&mut self, table: TableDefinition) -> Result<()> {
        table.validate()?;
        if self
            .tables
            .iter()
            .any(|t| t.name.eq_ignore_ascii_case(&table.name))
        {
            return Err(Error::TableAlreadyDefined(table.name));
        }
        self.tables.push(table);
        Ok(())
    }

    /// Also defines every table recorded in the file by an earlier run (its `__config`) that is
    /// not defined yet, so that tools such as the CLI can push a whole queue without knowing the
    /// app's table list. A missing or empty file defines nothing.
    pub fn define_stored_tables(&mut self) -> Result<()> {
        if !self.path.is_file() {
            return Ok(());
        }
        let conn =
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let has_config: bool = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__config'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !has_config {
            return Ok(());
        }
        let mut stmt = conn.prepare(
            "SELECT substr(\"key\", 7), \"value\" FROM \"__config\" WHERE substr(\"key\", 1, 6) = 'table|'",
        )?;
        let stored = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (name, columns) in stored {
            if self
                .tables
                .iter()
                .any(|t| t.name.eq_ignore_ascii_case(&name))
            {
                continue;
            }
            self.define_table(parse_definition(&name, &columns)?)?;
        }
        Ok(())
    }

    /// Opens the file, upgrades its schema and creates or extends the defined tables.
    ///
    /// Definitions only ever extend: a definition is merged with the one recorded in the file
    /// (`table|<name>`), keeping the stored name and every stored column and appending the new
    /// ones, so a tool or an older app that declares fewer columns (the CLI's default `TodoItem`,
    /// `--table Note` without `--column`) can neither shrink the record nor push rows without the
    /// columns it does not know. A column declared with another type than the stored one is
    /// refused (`Error::InvalidColumn`): SQLite cannot retype a column, and reading a REAL as a
    /// string would corrupt what the app reads back.
    pub(crate) fn open(self) -> Result<Store> {
        let mut conn = Connection::open(&self.path)?;
        // Negative: in KiB (SQLite's unit), not in pages.
        let cache_kib = i64::try_from(self.page_cache_bytes_max / 1024).unwrap_or(i64::MAX);
        conn.pragma_update(None, "cache_size", -cache_kib)?;
        migrate(&mut conn)?;
        let tx = conn.transaction()?;
        let mut merged = Vec::with_capacity(self.tables.len());
        for def in self.tables {
            let def = merge_with_stored(&tx, def)?;
            create_or_extend(&tx, &def)?;
            merged.push(def);
        }
        tx.commit()?;
        let tables = merged.into_iter().map(|t| (t.name.clone(), t)).collect();
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            tables: Arc::new(tables),
        })
    }
}

/// Parses a definition recorded in `__config` (`{"column": "type", ...}`).
fn parse_definition(name: &str, columns: &str) -> Result<TableDefinition> {
    let cols: serde_json::Map<String, serde_json::Value> = serde_json::from_str(columns)
        .map_err(|e| Error::CorruptStore(format!("definition of table {name}: {e}")))?;
    let mut def = TableDefinition::new(name);
    for (col, ty) in cols {
        let ty = match ty.as_str() {
            Some("string") => ColumnType::String,
            Some("number") => ColumnType::Number,
            Some("boolean") => ColumnType::Boolean,
            Some("date") => ColumnType::Date,
            _ => {
                return Err(Error::CorruptStore(format!(
                    "definition of table {name}: column {col} has type {ty}"
                )))
            }
        };
        def = def.column(col, ty);
    }
    Ok(def)
}

/// `def` merged with the definition the file records for the same table (names compared
/// case-insensitively, as SQLite and the server do): the stored name and columns first, then
/// the columns only `def` declares. See [`LocalStore::open`].
fn merge_with_stored(tx: &Transaction<'_>, def: TableDefinition) -> Result<TableDefinition> {
    let stored: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT substr(\"key\", 7), \"value\" FROM \"__config\" WHERE substr(\"key\", 1, 6) = 'table|'",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let Some((name, columns)) = stored
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&def.name))
    else {
        return Ok(def);
    };
    let mut merged = parse_definition(&name, &columns)?;
    for c in def.columns {
        match merged
            .columns
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(&c.name))
        {
            Some(s) if s.ty != c.ty => {
                return Err(Error::InvalidColumn {
                    table: merged.name.clone(),
                    column: c.name,
                    reason: format!(
                        "declared as {}, but the local store holds it as {}",
                        type_name(c.ty),
                        type_name(s.ty)
                    ),
                })
            }
            Some(_) => {}
            None => merged.columns.push(c),
        }
    }
    Ok(merged)
}

/// The definition in `tables` named `name`, compared case-insensitively (as SQLite identifiers
/// and the server's table names are); an exact match first.
pub(crate) fn find_table<'a>(
    tables: &'a BTreeMap<String, TableDefinition>,
    name: &str,
) -> Option<&'a TableDefinition> {
    tables
        .get(name)
        .or_else(|| tables.values().find(|t| t.name.eq_ignore_ascii_case(name)))
}

/// Brings the file to [`STORE_SCHEMA_VERSION`], one step per transaction-wrapped migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")
        .or_else(|_| conn.pragma_update(None, "journal_mode", "DELETE"))?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > STORE_SCHEMA_VERSION {
        return Err(Error::UnsupportedStoreVersion {
            found,
            supported: STORE_SCHEMA_VERSION,
        });
    }
    for (step, migration) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        migration(&tx)?;
        tx.pragma_update(None, "user_version", step as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// `CREATE TABLE IF NOT EXISTS` with every column, then `ALTER TABLE ADD COLUMN` for columns the
/// existing table lacks; records the definition in `__config`.
fn create_or_extend(tx: &Transaction<'_>, def: &TableDefinition) -> Result<()> {
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" (\"id\" TEXT PRIMARY KEY, \"createdAt\" TEXT, \
         \"updatedAt\" TEXT, \"version\" TEXT, \"deleted\" INTEGER NOT NULL DEFAULT 0",
        def.name
    );
    for c in &def.columns {
        ddl.push_str(&format!(", \"{}\" {}", c.name, sql_type(c.ty)));
    }
    ddl.push(')');
    tx.execute(&ddl, [])?;
    let existing: Vec<String> = {
        let mut stmt = tx.prepare(&format!("PRAGMA table_info(\"{}\")", def.name))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        names.into_iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    for c in &def.columns {
        if !existing.contains(&c.name.to_ascii_lowercase()) {
            tx.execute(
                &format!(
                    "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                    def.name,
                    c.name,
                    sql_type(c.ty)
                ),
                [],
            )?;
        }
    }
    let cols: serde_json::Map<String, serde_json::Value> = def
        .columns
        .iter()
        .map(|c| (c.name.clone(), type_name(c.ty).into()))
        .collect();
    set_config(
        tx,
        &format!("table|{}", def.name),
        &serde_json::Value::Object(cols).to_string(),
    )?;
    Ok(())
}

/// Reads a `__config` value.
pub(crate) fn get_config(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT \"value\" FROM \"__config\" WHERE \"key\" = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Writes a `__config` value.
pub(crate) fn set_config(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO \"__config\" (\"key\", \"value\") VALUES (?1, ?2) \
         ON CONFLICT(\"key\") DO UPDATE SET \"value\" = excluded.\"value\"",
        [key, value],
    )?;
    Ok(())
}

/// Handle on the open store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    conn: Arc<Mutex<Connection>>,
    tables: Arc<BTreeMap<String, TableDefinition>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The definition of a table (name matched case-insensitively, see [`find_table`]).
    pub(crate) fn table(&self, name: &str) -> Result<&TableDefinition> {
        find_table(&self.tables, name).ok_or_else(|| Error::UnknownTable(name.to_string()))
    }

    /// All table definitions.
    pub(crate) fn tables(&self) -> &BTreeMap<String, TableDefinition> {
        &self.tables
    }

    /// The async/blocking seam: runs `f` on the blocking pool with the connection locked.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection, &BTreeMap<String, TableDefinition>) -> Result<R>
            + Send
            + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let tables = Arc::clone(&self.tables);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::StoreTask("store lock poisoned".into()))?;
            f(&mut guard, &tables)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todo() -> TableDefinition {
        TableDefinition::new("TodoItem")
            .column("text", ColumnType::String)
            .column("complete", ColumnType::Boolean)
    }

    #[test]
    fn the_page_cache_is_as_large_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let cache_kib = |store: LocalStore| -> i64 {
            let store = store.open().unwrap();
            let conn = store.conn.lock().unwrap();
            -conn
                .pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))
                .unwrap()
        };
        let path = dir.path().join("s.db");
        assert_eq!(cache_kib(LocalStore::new(&path)), 32 * 1024);
        assert_eq!(
            cache_kib(LocalStore::new(&path).with_page_cache_bytes_max(8 << 20)),
            8 * 1024
        );
    }

    #[test]
    fn opens_empty_file_as_v0_and_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        std::fs::write(&path, b"").unwrap();
        let mut s = LocalStore::new(&path);
        s.define_table(todo()).unwrap();
        s.open().unwrap();
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, STORE_SCHEMA_VERSION);
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('__operations','__errors','__config','TodoItem')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            get_config(&conn, "table|TodoItem").unwrap().as_deref(),
            Some(r#"{"text":"string","complete":"boolean"}"#)
        );
    }

    #[test]
    fn reopens_v1_file_keeps_data_and_adds_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut s = LocalStore::new(&path);
            s.define_table(todo()).unwrap();
            let store = s.open().unwrap();
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "INSERT INTO \"TodoItem\" (id, text, complete) VALUES ('a', 'x', 1)",
                [],
            )
            .unwrap();
            set_config(&conn, "deltaToken|TodoItem|q", "tok").unwrap();
        }
        let mut s = LocalStore::new(&path);
        s.define_table(todo().column("due", ColumnType::Date))
            .unwrap();
        let store = s.open().unwrap();
        let conn = store.conn.lock().unwrap();
        let row: (String, i64, Option<String>) = conn
            .query_row(
                "SELECT text, complete, due FROM \"TodoItem\" WHERE id='a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(row, ("x".to_string(), 1, None));
        assert_eq!(
            get_config(&conn, "deltaToken|TodoItem|q")
                .unwrap()
                .as_deref(),
            Some("tok")
        );
    }

    #[test]
    fn a_version_1_queue_gets_an_idempotency_key_per_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A store as version 1 of the SDK left it, with two queued operations.
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            migrate_0_to_1(&tx).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.execute_batch(
                r#"INSERT INTO "__operations" ("id", "kind", "state", "tableName", "itemId", "item", "version")
                   VALUES ('o1', 0, 0, 'TodoItem', 'a', NULL, 1), ('o2', 2, 2, 'TodoItem', 'b', '{"id":"b"}', 3);"#,
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut s = LocalStore::new(&path);
        s.define_table(todo()).unwrap();
        let store = s.open().unwrap();
        let conn = store.conn.lock().unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        let ops = queue::list_ops(&conn).unwrap();
        let kept: Vec<(&str, &str, i64, Option<&str>)> = ops
            .iter()
            .map(|o| {
                (
                    o.id.as_str(),
                    o.item_id.as_str(),
                    o.version,
                    o.group.as_deref(),
                )
            })
            .collect();
        assert_eq!(kept, vec![("o1", "a", 1, None), ("o2", "b", 3, None)]);
        for o in &ops {
            let key = uuid::Uuid::parse_str(&o.idempotency_key).unwrap();
            assert_eq!(key.get_version_num(), 4, "{key}");
        }
        assert_ne!(ops[0].idempotency_key, ops[1].idempotency_key);
    }

    #[test]
    fn stored_definitions_are_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut fresh = LocalStore::new(&path);
        fresh.define_stored_tables().unwrap();
        assert!(fresh.tables.is_empty());
        {
            let mut s = LocalStore::new(&path);
            s.define_table(todo()).unwrap();
            s.define_table(TableDefinition::new("Other").column("due", ColumnType::Date))
                .unwrap();
            s.open().unwrap();
        }
        let mut s = LocalStore::new(&path);
        s.define_table(todo().column("extra", ColumnType::Number))
            .unwrap();
        s.define_stored_tables().unwrap();
        let names: Vec<&str> = s.tables.iter().map(|t| t.name()).collect();
        assert_eq!(names, vec!["TodoItem", "Other"]);
        assert_eq!(
            s.tables[0].columns().len(),
            3,
            "the explicit definition wins"
        );
        assert_eq!(
            s.tables[1].columns(),
            &[Column {
                name: "due".into(),
                ty: ColumnType::Date
            }]
        );
    }

    #[test]
    fn a_narrower_definition_extends_the_stored_one_and_never_narrows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut s = LocalStore::new(&path);
            s.define_table(todo().column("due", ColumnType::Date))
                .unwrap();
            s.open().unwrap();
        }
        // A tool that only knows `text` (e.g. the CLI with --column text:string) opens the file.
        let mut s = LocalStore::new(&path);
        s.define_table(
            TableDefinition::new("todoitem")
                .column("text", ColumnType::String)
                .column("tag", ColumnType::String),
        )
        .unwrap();
        let store = s.open().unwrap();
        // The stored name wins: queued operations and tokens already use it.
        let def = store.table("TodoItem").unwrap();
        assert_eq!(def.name(), "TodoItem");
        let cols: Vec<(&str, ColumnType)> = def
            .columns()
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        assert_eq!(
            cols,
            vec![
                ("text", ColumnType::String),
                ("complete", ColumnType::Boolean),
                ("due", ColumnType::Date),
                ("tag", ColumnType::String),
            ]
        );
        {
            let conn = store.conn.lock().unwrap();
            let keys: Vec<String> = conn
                .prepare("SELECT \"key\" FROM \"__config\" WHERE \"key\" LIKE 'table|%'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(keys, vec!["table|TodoItem".to_string()]);
            assert_eq!(
                get_config(&conn, "table|TodoItem").unwrap().as_deref(),
                Some(r#"{"text":"string","complete":"boolean","due":"date","tag":"string"}"#)
            );
        }
        drop(store);
        // A column whose type differs from the stored one is refused (SQLite cannot retype it).
        let mut s = LocalStore::new(&path);
        s.define_table(TableDefinition::new("TodoItem").column("complete", ColumnType::String))
            .unwrap();
        let err = s.open().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid column name \"complete\" in table \"TodoItem\": declared as string, but the \
             local store holds it as boolean"
        );
    }

    #[test]
    fn refuses_newer_schema_and_bad_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 7).unwrap();
        }
        let err = LocalStore::new(&path).open().unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedStoreVersion {
                    found: 7,
                    supported: 2
                }
            ),
            "{err:?}"
        );
        let mut s = LocalStore::new(&path);
        assert!(matches!(
            s.define_table(TableDefinition::new("__x")),
            Err(Error::InvalidTableName(_))
        ));
        assert!(matches!(
            s.define_table(TableDefinition::new("T").column("Version", ColumnType::String)),
            Err(Error::InvalidColumn { .. })
        ));
        assert!(matches!(
            s.define_table(
                TableDefinition::new("T")
                    .column("a", ColumnType::String)
                    .column("A", ColumnType::Number)
            ),
            Err(Error::InvalidColumn { .. })
        ));
        s.define_table(todo()).unwrap();
        assert!(matches!(
            s.define_table(todo()),
            Err(Error::TableAlreadyDefined(_))
        ));
    }
}
