//! Server configuration: the TOML file, its defaults and its validation.
//!
//! Every limit is a named value with its unit last (`body_bytes_max`, `request_timeout_ms`), so a
//! reader of `tablesync.toml` knows what a number means without opening the code. A [`Config`] is
//! validated once ([`Config::validate`]) before the server starts; the rest of the server trusts it.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! database = "./tablesync.db"          # a path, `sqlite://path` or `postgres://user@host/db`
//!
//! [limits]
//! body_bytes_max = 1048576
//!
//! [[tables]]
//! name = "TodoItem"
//! columns = { text = "string", complete = "boolean" }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tablesync_protocol::odata::sql::ColumnType;
use tablesync_protocol::system;

pub use crate::auth::config::{Access, AccessLevel, AuthConfig};

/// The whole server configuration (the TOML file's root).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. The `--listen` flag overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the data lives: a file path, `sqlite://path` or `postgres://user@host:port/db`.
    /// The `--database` flag overrides it.
    #[serde(default = "default_database")]
    pub database: String,
    /// Request and query limits.
    #[serde(default)]
    pub limits: Limits,
    /// Storage engine options.
    #[serde(default)]
    pub store: StoreConfig,
    /// Cross-origin (browser) access.
    #[serde(default)]
    pub cors: CorsConfig,
    /// Skip the `ZUMO-API-VERSION` check (the official servers' `skipVersionCheck`). Off by default.
    #[serde(default)]
    pub skip_version_check: bool,
    /// Token verification (`[auth]`). Without it every table is served anonymously.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The tables served under `/tables/{name}`. Empty means the default `TodoItem` table.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// `GET /metrics` (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How `tablesync serve` writes its log: `"text"` (one line per event) or `"json"` (one
    /// JSON object per line). The `--log-format` flag overrides it.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Peers whose `X-Forwarded-For` names the client (addresses or networks such as
    /// `"10.0.0.0/8"`); from any other peer the header is ignored. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` and count. On by default.
    pub enabled: bool,
    /// Serve `/metrics` on this address instead of the main one (say, an address only the
    /// monitoring network reaches). Default: on the main listener.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// The log's format (`log_format`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for log collectors.
    Json,
}

/// Limits on what one request may ask of the server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub body_bytes_max: usize,
    /// Largest `$top` a client may ask for, in rows; above it 400 `top_too_large`.
    pub page_size_max: u64,
    /// Longest accepted raw (percent-encoded) `$filter` value, in bytes.
    pub filter_bytes_max: usize,
    /// Longest time one request may take, in milliseconds. A read that takes longer is
    /// answered 503 `service_unavailable`; a write (any method but GET, HEAD and OPTIONS) is
    /// answered 504 `outcome_unknown`, because it may still commit: clients re-read first.
    pub request_timeout_ms: u64,
    /// Most user columns a dynamic-schema table may grow to, in columns.
    pub columns_max: usize,
    /// Most terms (comma-separated keys) in one `$orderby`, in terms; more is 400
    /// `invalid_orderby`. At most 1000: SQLite refuses ORDER BY lists over 2000 terms.
    pub orderby_terms_max: usize,
    /// Most names in one `$select`, in terms; more is 400 `invalid_select`.
    pub select_terms_max: usize,
    /// Most terms (literals and property names) in one `$filter`, and in all `$orderby` keys
    /// together, in terms; more is 400 `invalid_filter` / `invalid_orderby` on every store
    /// (checked before lowering, like the depth estimate of `odata::limits`). At most 10000:
    /// each literal is a bound parameter.
    pub filter_terms_max: usize,
    /// Longest time a client may take to send a request's line and headers, in milliseconds
    /// (also how long a kept-alive connection may sit idle); then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Longest time a client may take to send a request's body once its headers arrived, in
    /// milliseconds; then 408 `request_timeout` and the connection is closed. The request was
    /// not started: `request_timeout_ms` only runs once the body is in.
    pub body_read_timeout_ms: u64,
    /// Most connections served at once, in connections. Above it a new connection is answered
    /// 503 `service_unavailable` and closed; open ones keep working. Keep it under the
    /// process's open-file limit (`ulimit -n`) minus the database's files and connections.
    pub connections_max: usize,
    /// Largest request line plus headers, in bytes (at least 8192); more is 431
    /// `headers_too_large` (a long `$filter` gets 400 `invalid_filter` as a shorter one does).
    pub request_head_bytes_max: usize,
    /// Most operations in one `POST /$batch`, in operations; more is 400 `batch_too_large`
    /// (the batch body is also bounded by `body_bytes_max`).
    pub batch_operations_max: usize,
    /// How long an `Idempotency-Key`'s recorded outcome is replayed, in seconds; older records
    /// are treated as absent and swept.
    pub idempotency_retention_s: u64,
    /// Longest `GET /ready` waits for the database's answer, in milliseconds; then it answers
    /// 503.
    pub ready_timeout_ms: u64,
    /// Most change-feed subscribers (`GET /$changes/{table}`, docs/extensions.md section 5)
    /// served at once, in subscribers; one more is answered 503 `service_unavailable`. Each
    /// also holds a connection, so keep it under `connections_max`. 0 turns the feed off
    /// (`$capabilities` then does not offer it, and every subscription is 503).
    pub subscribers_max: usize,
    /// How long a change feed may stay silent before the server sends a `: heartbeat` comment,
    /// in milliseconds (keeps idle streams open through proxies).
    pub feed_heartbeat_interval_ms: u64,
    /// Most change events one subscriber may fall behind, in events: a subscriber with more
    /// committed changes pending than this is sent `event: overflow` and its stream is
    /// closed (it then pulls and subscribes again), so a slow reader never makes the server
    /// buffer without bound.
    pub feed_subscriber_buffer_events: usize,
    /// How often an idle subscriber re-reads its table even without a wake-up, in
    /// milliseconds: the safety net that bounds the delay of a change whose wake-up was lost
    /// (a dropped PostgreSQL notification, a write on another process sharing an SQLite file).
    pub feed_poll_interval_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 1024 * 1024,
            page_size_max: 1000,
            filter_bytes_max: 8 * 1024,
            request_timeout_ms: 30_000,
            columns_max: 256,
            orderby_terms_max: 32,
            select_terms_max: 128,
            filter_terms_max: 2000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            connections_max: 512,
            request_head_bytes_max: 64 * 1024,
            batch_operations_max: 1000,
            idempotency_retention_s: 86_400,
            ready_timeout_ms: 2_000,
            subscribers_max: 256,
            feed_heartbeat_interval_ms: 15_000,
            feed_subscriber_buffer_events: 1_000,
            feed_poll_interval_ms: 5_000,
        }
    }
}

/// Storage options.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Stamp `updatedAt`/`version` through the per-table clock row, so stamps increase in commit
    /// order (ARCHITECTURE.md). Switching it off takes `updatedAt` from the database clock at
    /// statement time, which lets concurrent writers commit out of stamp order; on PostgreSQL an
    /// incremental pull can then miss rows. Only for demonstrating that failure.
    pub commit_order_stamps: bool,
    /// Number of read-only SQLite connections, in connections (writes use one more).
    pub reader_connections: usize,
    /// How hard SQLite pushes each commit to disk before the write is acknowledged.
    pub sqlite_synchronous: SqliteSynchronous,
    /// How long a connection waits for a database lock before giving up, in milliseconds. On
    /// PostgreSQL it is the session's `lock_timeout` and the wait for a free pool connection.
    pub busy_timeout_ms: u64,
    /// How long a starting server waits for the schema lock on PostgreSQL, in milliseconds: the
    /// advisory lock under which it creates and migrates tables and indexes. Longer than
    /// `busy_timeout_ms`, because several processes starting at once take it one after the other
    /// and each holds it for all of its DDL; a request never waits this long (a dynamic-schema
    /// column addition keeps `busy_timeout_ms`). SQLite ignores it.
    pub schema_lock_timeout_ms: u64,
    /// Most connections one server process opens to PostgreSQL for writes (group commits,
    /// batches, schema changes), in connections (SQLite ignores it). Several processes share
    /// the database's `max_connections`, which must also hold `read_pool_connections_max`.
    pub pool_connections_max: u32,
    /// Most connections one server process opens to PostgreSQL for reads (get, list, schema
    /// refresh, `/ready`), in connections (SQLite ignores it). A pool of their own, so a read
    /// never waits for a connection held by a writer queued on a clock row.
    pub read_pool_connections_max: u32,
    /// A pooled PostgreSQL read connection idle for at least this long, in milliseconds, is
    /// pinged (one round trip) before a read gets it, so one that died while idle (a database
    /// restart) is replaced first; 0 pings before every read, as sqlx does by default. Busier
    /// connections skip it (sqlx pings each connection when it comes back to the pool), and a
    /// read that meets a dead one anyway runs once more on another. SQLite ignores it.
    pub read_pool_ping_idle_ms: u64,
    /// A PostgreSQL read connection this old, in milliseconds, is closed and replaced before a
    /// read would get it, so a database backend's caches do not grow for ever (sqlx's pool
    /// closes its connections at 30 minutes too). SQLite ignores it.
    pub read_pool_connection_lifetime_ms: u64,
    /// PostgreSQL's `random_page_cost` for this server's sessions, in units of one sequential
    /// page read (`seq_page_cost`). PostgreSQL's own default, 4, models a spinning disk; with
    /// it the last page of a pull (about `$top` rows left) was planned as a sequential scan of
    /// the whole table and a sort (1.08 ms in `tests/it/explain.rs`'s table) instead of an index
    /// range read (0.28 ms). 1.1 is the usual value for SSDs and a cached working set; set it to
    /// the database's own value to plan as the database does. SQLite ignores it.
    pub pg_random_page_cost: f64,
    /// TEST ONLY (the multi-process torture test): hold every PostgreSQL write transaction open
    /// for a random 0..=N milliseconds after it took its stamp and before it commits, so that
    /// concurrent transactions take random lengths of time. 0 (the default) holds nothing; never
    /// set it in production: with commit-order stamps it serialises writers for that long.
    pub write_hold_ms_max: u64,
    /// How stale a process's copy of a dynamic-schema table's columns may get, in milliseconds:
    /// another process on the same database may add columns. A request on such a table re-reads
    /// the columns from the database (one catalog query) when the copy is older than this, and
    /// in any case when a `$filter`/`$orderby`/`$select` names a column the copy lacks. 0
    /// re-reads on every request. Tables without dynamic schema never re-read.
    pub schema_refresh_ms: u64,
    /// Most writes one group commit carries, in writes (at least 1). Concurrent writes share
    /// one transaction: on SQLite every write waiting for the writer, on PostgreSQL every write
    /// of this process waiting for the same clock row (a table's, or one owner's on a per-user
    /// table). Each is answered once the commit holding it returned. A `$batch` request counts
    /// as one write here. 1 commits every write alone.
    pub group_commit_writes_max: usize,
    /// Most prepared statements each SQLite connection keeps for reuse, in statements
    /// (PostgreSQL ignores it). Every read by id, write, savepoint and stamp runs one of a few
    /// statement texts per table; keeping them prepared saves parsing them on every request.
    /// 0 prepares every statement afresh.
    pub sqlite_statement_cache_max: usize,
    /// Most groups one SQLite group-commit runner commits in a row before it lets the writer
    /// connection go, in groups (at least 1; PostgreSQL ignores it). A runner that answered its
    /// group runs the writes queued meanwhile at once instead of handing them to a new leader;
    /// the bound lets schema changes waiting for the writer in under a steady write load.
    pub group_commit_rounds_max: usize,
    /// How long an SQLite list request (a page, a query) may run on the async worker that
    /// received it, in microseconds, before it is stopped and run again from the start on the
    /// blocking pool; 0 runs every list on the pool (PostgreSQL ignores it). A typical page
    /// finishes well inside it and saves the two thread switches of the pool (a quarter of a
    /// 1000-row page's server time); the bound is how long a slow query may hold up the other
    /// connections of that worker, and the most work an overrun repeats.
    pub sqlite_inline_list_budget_us: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commit_order_stamps: true,
            reader_connections: 4,
            sqlite_synchronous: SqliteSynchronous::Full,
            busy_timeout_ms: 5_000,
            schema_lock_timeout_ms: 60_000,
            pool_connections_max: 10,
            read_pool_connections_max: 10,
            read_pool_ping_idle_ms: 1_000,
            read_pool_connection_lifetime_ms: 1_800_000,
            pg_random_page_cost: 1.1,
            write_hold_ms_max: 0,
            schema_refresh_ms: 1_000,
            group_commit_writes_max: 64,
            sqlite_statement_cache_max: 64,
            group_commit_rounds_max: 16,
            sqlite_inline_list_budget_us: 2_000,
        }
    }
}

/// SQLite's `synchronous` setting for the server's database (WAL mode).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Sync the WAL on every commit: an acknowledged write survives an OS crash or power loss.
    /// The default, because a client deletes its queued operation once the server acknowledged
    /// it; a write lost after that would be lost for good.
    Full,
    /// Sync only at checkpoints: durable across crashes of the server process, but an OS crash
    /// can lose the last acknowledged writes. Faster; for data that can be rebuilt.
    Normal,
}

impl SqliteSynchronous {
    /// The value of `PRAGMA synchronous`.
    pub fn pragma_value(self) -> &'static str {
        match self {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        }
    }
}

/// Cross-origin resource sharing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the server from a browser; `["*"]` allows any origin, `[]` none.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    pub max_age_s: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: vec!["*".to_owned()],
            max_age_s: 300,
        }
    }
}

/// One table served under `/tables/{name}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name (an SQL identifier); URL matching is case-insensitive like the official servers.
    pub name: String,
    /// User columns in declaration order (system columns are implicit).
    #[serde(default, deserialize_with = "ordered_columns")]
    pub columns: Vec<(String, ColumnType)>,
    /// DELETE marks rows `deleted: true` (a tombstone clients can pull) instead of removing them.
    #[serde(default = "default_true")]
    pub soft_delete: bool,
    /// Rows per page when a request gives no `$top`, in rows.
    #[serde(default = "default_page_size")]
    pub page_size: u64,
    /// An unknown property adds a column typed from its JSON value (off: 400 `unknown_column`).
    #[serde(default)]
    pub dynamic_schema: bool,
    /// Who may run each operation: `"anonymous"`, `"authenticated"`, `"disabled"` (405), or a
    /// table per operation (`{ read = "anonymous", default = "authenticated" }`). Default:
    /// `authenticated` when `[auth]` is configured (deny by default), else `anonymous`.
    #[serde(default)]
    pub access: Option<Access>,
    /// Per-user rows: the string column holding each row's owner, filled from the token's user
    /// id. Reads and writes only ever see the caller's rows (the store ANDs `owner = user` into
    /// its SQL), each user has their own id space (primary key (owner, id)), and every enabled
    /// operation must be `authenticated`.
    #[serde(default)]
    pub owner_column: Option<String>,
    /// The operations this table offers; the others answer 405 `method_not_allowed` (e.g. a
    /// read-only reference table: `operations = ["read"]`). Default: all of them.
    #[serde(default = "TableOperation::all")]
    pub operations: Vec<TableOperation>,
    /// How rows are identified: `"string"` (client-chosen or server-made UUID strings, the
    /// default; offline sync needs them) or `"integer"` (the Node server's `autoIncrement`: the
    /// database assigns 1, 2, 3…, JSON ids are numbers, and an insert may not carry an id).
    #[serde(default)]
    pub id_type: IdType,
    /// Secondary indexes, each a list of column names in key order (declared columns or system
    /// properties): `indexes = [["complete", "text"], ["text"]]`. Created at start, and dropped
    /// when no longer declared (ARCHITECTURE.md "Reads: … declared indexes"); `id` is appended to each
    /// (every list order ends with it) and a per-user table's owner leads it.
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
}

/// The type of a table's `id` ([`TableConfig::id_type`]).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    /// Strings (protocol.md 3.1): the client's, or a server-made UUID.
    #[default]
    String,
    /// 64-bit integers the database assigns (SQLite `INTEGER PRIMARY KEY AUTOINCREMENT`,
    /// PostgreSQL `BIGINT GENERATED ALWAYS AS IDENTITY`); never reused, even after a delete.
    Integer,
}

/// One of the table operations of the protocol, as named in `operations = [...]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableOperation {
    /// `GET /tables/{t}` and `GET /tables/{t}/{id}`.
    Read,
    /// `POST /tables/{t}`.
    Insert,
    /// `PATCH /tables/{t}/{id}`.
    Update,
    /// `DELETE /tables/{t}/{id}`.
    Delete,
    /// `POST /tables/{t}/{id}` (soft-delete tables only).
    Undelete,
}

impl TableOperation {
    /// Every operation: the default of [`TableConfig::operations`].
    pub fn all() -> Vec<TableOperation> {
        use TableOperation::*;
        vec![Read, Insert, Update, Delete, Undelete]
    }

    /// The name used in the configuration and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            TableOperation::Read => "read",
            TableOperation::Insert => "insert",
            TableOperation::Update => "update",
            TableOperation::Delete => "delete",
            TableOperation::Undelete => "undelete",
        }
    }
}

impl TableConfig {
    /// A table with the given name and columns and every option at its default.
    pub fn new(name: impl Into<String>, columns: &[(&str, ColumnType)]) -> Self {
        TableConfig {
            name: name.into(),
            columns: columns.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect(),
            soft_delete: true,
            page_size: default_page_size(),
            dynamic_schema: false,
            access: None,
            owner_column: None,
            operations: TableOperation::all(),
            id_type: IdType::String,
            indexes: Vec::new(),
        }
    }

    /// Who may run `op` (`auth_configured`: whether the server has an `[auth]` section). An
    /// operation left out of [`TableConfig::operations`] is [`AccessLevel::Disabled`].
    pub fn access_level(&self, op: TableOperation, auth_configured: bool) -> AccessLevel {
        if !self.operations.contains(&op) {
            return AccessLevel::Disabled;
        }
        let default = if auth_configured {
            AccessLevel::Authenticated
        } else {
            AccessLevel::Anonymous
        };
        match &self.access {
            None => default,
            // Validation made sure every operation has a level; deny if it somehow has none.
            Some(access) => access.level(op).unwrap_or(AccessLevel::Authenticated),
        }
    }
}

/// Where the data is kept, parsed from [`Config::database`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseTarget {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

/// A configuration that cannot be used.
///
/// Each message is printed once: a variant with a `source` does not repeat it, so a cause
/// chain (`{:#}`) reads `tablesync.toml:3:10: invalid type: …`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys (a document without a file name).
    /// (Not a `source`: its own message already is the whole of it, and its `Display` adds a
    /// multi-line excerpt; `InFile` gives the place.)
    #[error("invalid config: {}", .0.message())]
    Toml(toml::de::Error),
    /// The TOML parsed but a value is not acceptable.
    #[error("invalid config: {message}")]
    Invalid {
        /// What is wrong, for people.
        message: String,
        /// Where the refused value sits, so an error in a file can name its line.
        place: ConfigPlace,
    },
    /// An error in a config file: the file, and the line and column where TOML found it.
    #[error("{}{}", path.display(), at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Line and column (from 1), when known.
        at: Option<(usize, usize)>,
        /// The error.
        source: Box<ConfigError>,
    },
}

/// Where in a config document a refused value sits ([`ConfigError::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigPlace {
    /// The document as a whole (something is missing).
    Document,
    /// A dotted key outside `[[tables]]`, such as `limits.page_size_max`, or a section (`limits`).
    Key(&'static str),
    /// A key of the `[[tables]]` entry with this `name` (its `name` line when the key is absent).
    Table {
        /// The table's configured name.
        name: String,
        /// The key inside the entry.
        key: &'static str,
    },
}

impl ConfigPlace {
    fn table(name: &str, key: &'static str) -> Self {
        ConfigPlace::Table {
            name: name.to_owned(),
            key,
        }
    }

    /// The byte offset of this place in `text`: the key where it is written, else the nearest
    /// enclosing section or table entry that is; `None` for the whole document or a place the
    /// text does not hold (a default value).
    fn offset_in(&self, text: &str) -> Option<usize> {
        let doc = toml_edit::ImDocument::parse(text).ok()?;
        let root = doc.as_table();
        match self {
            ConfigPlace::Document => None,
            ConfigPlace::Key(path) => {
                let mut table: &dyn toml_edit::TableLike = root;
                let mut found = None;
                for part in path.split('.') {
                    let Some((key, item)) = table.get_key_value(part) else {
                        break;
                    };
                    found = key.span().or_else(|| item.span()).or(found);
                    match item.as_table_like() {
                        Some(inner) => table = inner,
                        None => break,
                    }
                }
                found.map(|span| span.start)
            }
            ConfigPlace::Table { name, key } => {
                let entry = root
                    .get("tables")?
                    .as_array_of_tables()?
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))?;
                let span = entry
                    .get_key_value(key)
                    .or_else(|| entry.get_key_value("name"))
                    .and_then(|(k, _)| k.span())?;
                Some(span.start)
            }
        }
    }
}

impl From<toml::de::Error> for ConfigError {
    fn from(e: toml::de::Error) -> Self {
        ConfigError::Toml(e)
    }
}

impl ConfigError {
    /// This error as found in the file `path` whose text is `text`.
    fn in_file(self, path: &Path, text: &str) -> ConfigError {
        let at = match &self {
            ConfigError::Toml(e) => e.span().map(|span| line_and_column(text, span.start)),
            ConfigError::Invalid { place, .. } => place
                .offset_in(text)
                .map(|offset| line_and_column(text, offset)),
            _ => None,
        };
        ConfigError::InFile {
            path: path.to_owned(),
            at,
            source: Box::new(self),
        }
    }
}

/// Line and column (from 1, the column in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database() -> String {
    "./tablesync.db".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_page_size() -> u64 {
    50
}

impl Default for Config {
    fn default() -> Self {
        Config::default_todo()
    }
}

impl Config {
    /// The configuration used when no file is given: one `TodoItem` table (`text` string,
    /// `complete` boolean, soft delete on) on `./tablesync.db`, listening on 127.0.0.1:8080.
    pub fn default_todo() -> Self {
        Config {
            listen: default_listen(),
            database: default_database(),
            limits: Limits::default(),
            store: StoreConfig::default(),
            cors: CorsConfig::default(),
            skip_version_check: false,
            auth: None,
            tables: vec![Self::todo_table()],
            metrics: MetricsConfig::default(),
            log_format: LogFormat::default(),
            trusted_proxies: Vec::new(),
        }
    }

    /// The tutorial's `TodoItem` table.
    pub fn todo_table() -> TableConfig {
        TableConfig::new(
            "TodoItem",
            &[
                ("text", ColumnType::String),
                ("complete", ColumnType::Boolean),
            ],
        )
    }

    /// Parse a TOML document and validate it. A document without `[[tables]]` serves `TodoItem`.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        if config.tables.is_empty() {
            config.tables.push(Self::todo_table());
        }
        config.validate()?;
        Ok(config)
    }

    /// Read, parse and validate a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text).map_err(|e| e.in_file(path, &text))?;
        // Files the config names are relative to the config file, not to the working directory.
        if let (Some(auth), Some(dir)) = (config.auth.as_mut(), path.parent()) {
            if let Some(jwks) = auth.jwks_file.as_mut() {
                *jwks = dir.join(&*jwks);
            }
        }
        Ok(config)
    }

    /// Serve with this `[auth]` section.
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Use this database (a path or URL), as the `--database` flag does.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Replace the tables.
    pub fn with_tables(mut self, tables: Vec<TableConfig>) -> Self {
        self.tables = tables;
        self
    }

    /// Where the data lives.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        parse_database(&self.database)
    }

    /// Check every rule the rest of the server relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |place: ConfigPlace, message: String| Err(ConfigError::Invalid { message, place });
        let limits = &self.limits;
        if limits.page_size_max == 0 {
            return invalid(
                ConfigPlace::Key("limits.page_size_max"),
                "limits.page_size_max must be at least 1".into(),
            );
        }
        if limits.body_bytes_max == 0
            || limits.filter_bytes_max == 0
            || limits.request_timeout_ms == 0
            || limits.batch_operations_max == 0
            || limits.idempotency_retention_s == 0
            || i64::try_from(limits.idempotency_retention_s).is_err()
            || limits.ready_timeout_ms == 0
            || limits.feed_heartbeat_interval_ms == 0
            || limits.feed_subscriber_buffer_events == 0
            || limits.feed_poll_interval_ms == 0
        {
            return invalid(ConfigPlace::Key("limits"), "limits must be positive".into());
        }
        if !(1..=1000).contains(&limits.orderby_terms_max) || limits.select_terms_max == 0 {
            return invalid(
                ConfigPlace::Key("limits.orderby_terms_max"),
                "limits.orderby_terms_max must be 1..=1000 and limits.select_terms_max at least 1"
                    .into(),
            );
        }
        if limits.header_read_timeout_ms == 0
            || limits.body_read_timeout_ms == 0
            || limits.connections_max == 0
        {
            return invalid(
ConfigPlace::Key("limits"),

                "limits.header_read_timeout_ms, body_read_timeout_ms and connections_max must be positive".into(),
            );
        }
        if limits.request_head_bytes_max < 8192 {
            return invalid(
                ConfigPlace::Key("limits.request_head_bytes_max"),
                "limits.request_head_bytes_max must be at least 8192".into(),
            );
        }
        let terms_limit = tablesync_protocol::odata::limits::FILTER_TERMS_MAX_LIMIT;
        if !(1..=terms_limit).contains(&limits.filter_terms_max) {
            return invalid(
                ConfigPlace::Key("limits.filter_terms_max"),
                format!("limits.filter_terms_max must be 1..={terms_limit}"),
            );
        }
        crate::observe::TrustedProxies::parse(&self.trusted_proxies).map_err(|message| {
            ConfigError::Invalid {
                message,
                place: ConfigPlace::Key("trusted_proxies"),
            }
        })?;
        if self
            .metrics
            .listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return invalid(
ConfigPlace::Key("metrics.listen"),
format!(
                "metrics.listen is the main listen address {}; leave it out to serve /metrics there",
                self.listen
            ));
        }
        if self.store.reader_connections == 0 {
            return invalid(
                ConfigPlace::Key("store.reader_connections"),
                "store.reader_connections must be at least 1".into(),
            );
        }
        if self.store.group_commit_writes_max == 0 {
            return invalid(
                ConfigPlace::Key("store.group_commit_writes_max"),
                "store.group_commit_writes_max must be at least 1".into(),
            );
        }
        if self.store.group_commit_rounds_max == 0 {
            return invalid(
                ConfigPlace::Key("store.group_commit_rounds_max"),
                "store.group_commit_rounds_max must be at least 1".into(),
            );
        }
        if self.store.pool_connections_max == 0 {
            return invalid(
                ConfigPlace::Key("store.pool_connections_max"),
                "store.pool_connections_max must be at least 1".into(),
            );
        }
        if self.store.read_pool_connections_max == 0 {
            return invalid(
                ConfigPlace::Key("store.read_pool_connections_max"),
                "store.read_pool_connections_max must be at least 1".into(),
            );
        }
        let cost = self.store.pg_random_page_cost;
        if !(cost.is_finite() && cost > 0.0) {
            return invalid(
                ConfigPlace::Key("store.pg_random_page_cost"),
                format!("store.pg_random_page_cost must be a number above 0, not {cost}"),
            );
        }
        if self.store.read_pool_connection_lifetime_ms == 0 {
            return invalid(
                ConfigPlace::Key("store.read_pool_connection_lifetime_ms"),
                "store.read_pool_connection_lifetime_ms must be at least 1".into(),
            );
        }
        let postgres = matches!(parse_database(&self.database)?, DatabaseTarget::Postgres(_));
        for origin in &self.cors.allowed_origins {
            let plain = origin.bytes().all(|b| b.is_ascii_graphic());
            if !plain || (origin != "*" && !origin.contains("://")) {
                return invalid(
ConfigPlace::Key("cors.allowed_origins"),
format!("cors.allowed_origins: '{origin}' is not \"*\" or an origin like http://host:port"));
            }
        }
        if self.tables.is_empty() {
            return invalid(
                ConfigPlace::Document,
                "at least one table must be configured".into(),
            );
        }
        if let Some(auth) = &self.auth {
            auth.validate().map_err(|message| ConfigError::Invalid {
                message,
                place: ConfigPlace::Key("auth"),
            })?;
        }
        let mut names = HashSet::new();
        for table in &self.tables {
            if !system::is_valid_identifier(&table.name) || table.name.starts_with("tablesync_") {
                return invalid(
ConfigPlace::table(&table.name, "name"),
format!(
                    "table name '{}' must match ^[A-Za-z_][A-Za-z0-9_]{{0,127}}$ and not start with tablesync_",
                    table.name
                ));
            }
            // PostgreSQL silently truncates identifiers to 63 bytes (NAMEDATALEN - 1), which
            // could make two tables or columns one; refuse instead.
            if postgres && table.name.len() > PG_IDENTIFIER_BYTES_MAX {
                return invalid(
ConfigPlace::table(&table.name, "name"),
format!(
                    "table name '{}' is longer than {PG_IDENTIFIER_BYTES_MAX} bytes (PostgreSQL's limit)",
                    table.name
                ));
            }
            if !names.insert(table.name.to_ascii_lowercase()) {
                return invalid(
                    ConfigPlace::table(&table.name, "name"),
                    format!(
                        "table '{}' is declared twice (names are case-insensitive)",
                        table.name
                    ),
                );
            }
            if table.page_size == 0 || table.page_size > limits.page_size_max {
                return invalid(
                    ConfigPlace::table(&table.name, "page_size"),
                    format!(
                        "table '{}': page_size must be between 1 and limits.page_size_max ({})",
                        table.name, limits.page_size_max
                    ),
                );
            }
            if table.columns.len() > limits.columns_max {
                return invalid(
                    ConfigPlace::table(&table.name, "columns"),
                    format!(
                        "table '{}' has more than {} columns",
                        table.name, limits.columns_max
                    ),
                );
            }
            self.validate_access(table)?;
            validate_indexes(table)?;
            // A per-user table is keyed (owner, id) so that every user has their own id space;
            // a database-assigned integer is one counter for the whole table, and SQLite can
            // only assign it to a lone INTEGER PRIMARY KEY.
            if table.id_type == IdType::Integer && table.owner_column.is_some() {
                return invalid(
ConfigPlace::table(&table.name, "id_type"),
format!(
                    "table '{}': id_type = \"integer\" cannot be combined with owner_column: per-user tables are keyed (owner, id) with string ids; use string ids for per-user rows",
                    table.name
                ));
            }
            let mut columns = HashSet::new();
            for (column, _) in &table.columns {
                if !system::is_valid_identifier(column) {
                    return invalid(
                        ConfigPlace::table(&table.name, "columns"),
                        format!(
                            "table '{}': column name '{column}' is not a valid identifier",
                            table.name
                        ),
                    );
                }
                if postgres && column.len() > PG_IDENTIFIER_BYTES_MAX {
                    return invalid(
ConfigPlace::table(&table.name, "columns"),
format!(
                        "table '{}': column name '{column}' is longer than {PG_IDENTIFIER_BYTES_MAX} bytes (PostgreSQL's limit)",
                        table.name
                    ));
                }
                if system::ALL.iter().any(|s| s.eq_ignore_ascii_case(column)) {
                    return invalid(
                        ConfigPlace::table(&table.name, "columns"),
                        format!(
                            "table '{}': column '{column}' is a system property",
                            table.name
                        ),
                    );
                }
                if system::is_store_reserved_column(column) {
                    return invalid(
                        ConfigPlace::table(&table.name, "columns"),
                        format!(
                            "table '{}': column '{column}' is a name the databases reserve ({})",
                            table.name,
                            system::STORE_RESERVED_COLUMNS.join(", ")
                        ),
                    );
                }
                if !columns.insert(column.to_ascii_lowercase()) {
                    return invalid(
                        ConfigPlace::table(&table.name, "columns"),
                        format!(
                            "table '{}': column '{column}' is declared twice",
                            table.name
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// `[auth]`, and a table's `access` and `owner_column` against it.
    fn validate_access(&self, table: &TableConfig) -> Result<(), ConfigError> {
        let invalid =
            |place: ConfigPlace, message: String| Err(ConfigError::Invalid { message, place });
        let auth_on = self.auth.is_some();
        if let Some(Access::PerOperation { default: None, .. }) = &table.access {
            if let Some(op) = TableOperation::all()
                .into_iter()
                .find(|op| table.access.as_ref().and_then(|a| a.level(*op)).is_none())
            {
                return invalid(
ConfigPlace::table(&table.name, "access"),
format!(
                    "table '{}': access names no level for {} (name every operation or give default)",
                    table.name,
                    op.name()
                ));
            }
        }
        let enabled: Vec<(TableOperation, AccessLevel)> = TableOperation::all()
            .into_iter()
            .map(|op| (op, table.access_level(op, auth_on)))
            .filter(|(_, level)| *level != AccessLevel::Disabled)
            .collect();
        if !auth_on {
            if let Some((op, _)) = enabled
                .iter()
                .find(|(_, level)| *level == AccessLevel::Authenticated)
            {
                return invalid(
                    ConfigPlace::table(&table.name, "access"),
                    format!(
                        "table '{}': {} is authenticated, which needs an [auth] section",
                        table.name,
                        op.name()
                    ),
                );
            }
            if table.owner_column.is_some() {
                return invalid(
ConfigPlace::table(&table.name, "owner_column"),
format!(
                    "table '{}': owner_column needs an [auth] section (per-user rows are owned by token users)",
                    table.name
                ));
            }
        }
        let Some(owner) = &table.owner_column else {
            return Ok(());
        };
        if !system::is_valid_identifier(owner)
            || owner.len() > PG_IDENTIFIER_BYTES_MAX
            || system::ALL.iter().any(|s| s.eq_ignore_ascii_case(owner))
            || system::is_store_reserved_column(owner)
        {
            return invalid(
ConfigPlace::table(&table.name, "owner_column"),
format!(
                "table '{}': owner_column '{owner}' must be a valid column name of at most 63 bytes and not a system property or a name the databases reserve",
                table.name
            ));
        }
        if let Some((_, ty)) = table
            .columns
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(owner))
        {
            if *ty != ColumnType::String {
                return invalid(
                    ConfigPlace::table(&table.name, "owner_column"),
                    format!(
                    "table '{}': owner_column '{owner}' is declared as {ty:?}; it must be a string",
                    table.name
                ),
                );
            }
        }
        if let Some((op, level)) = enabled
            .iter()
            .find(|(_, level)| *level != AccessLevel::Authenticated)
        {
            return invalid(
ConfigPlace::table(&table.name, "owner_column"),
format!(
                "table '{}': with owner_column every enabled operation must be authenticated, but {} is {}",
                table.name,
                op.name(),
                level.name()
            ));
        }
        Ok(())
    }
}

/// The longest identifier PostgreSQL keeps whole, in bytes.
pub const PG_IDENTIFIER_BYTES_MAX: usize = 63;

/// Parse `./file.db`, `sqlite://file.db`, `sqlite:file.db` or `postgres://…`.
pub fn parse_database(text: &str) -> Result<DatabaseTarget, ConfigError> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseTarget::Postgres(text.to_owned()));
    }
    let path = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
        .unwrap_or(text);
    if path.is_empty() {
        return Err(ConfigError::Invalid {
            message: "database path is empty".into(),
            place: ConfigPlace::Key("database"),
        });
    }
    if path.contains("://") {
        return Err(ConfigError::Invalid {
            message: format!("unsupported database URL '{text}'"),
            place: ConfigPlace::Key("database"),
        });
    }
    Ok(DatabaseTarget::Sqlite(PathBuf::from(path)))
}

/// Parse a column type name as written in the config (`string`, `number`, `boolean`, `date`).
pub fn parse_column_type(name: &str) -> Option<ColumnType> {
    match name {
        "string" => Some(ColumnType::String),
        "number" => Some(ColumnType::Number),
        "boolean" => Some(ColumnType::Boolean),
        "date" => Some(ColumnType::Date),
        _ => None,
    }
}

/// `columns = { text = "string", … }` keeping the document's order (a map would sort it).
fn ordered_columns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, ColumnType)>, D::Error> {
    struct Columns;
    impl<'de> Visitor<'de> for Columns {
        type Value = Vec<(String, ColumnType)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of column name = \"string\" | \"number\" | \"boolean\" | \"date\"")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((name, ty)) = map.next_entry::<String, String>()? {
                let ty = parse_column_type(&ty).ok_or_else(|| {
                    de::Error::custom(format!(
                        "column '{name}': unknown type '{ty}' (expected string, number, boolean or date)"
                    ))
                })?;
                out.push((name, ty));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Columns)
}

/// The most columns one declared index may name, in columns: PostgreSQL's 32 key columns less
/// the `id` and owner columns the stores add.
pub const INDEX_COLUMNS_MAX: usize = 30;

/// A table's `indexes`: each a non-empty list of at most [`INDEX_COLUMNS_MAX`] distinct names
/// of its declared columns (exact spelling: SQL identifiers are quoted) or system properties,
/// no index declared twice.
fn validate_indexes(table: &TableConfig) -> Result<(), ConfigError> {
    let invalid = |message: String| {
        Err(ConfigError::Invalid {
            message: format!("table '{}': {message}", table.name),
            place: ConfigPlace::table(&table.name, "indexes"),
        })
    };
    let mut indexes = HashSet::new();
    for index in &table.indexes {
        let shown = format!("{index:?}");
        if index.is_empty() {
            return invalid("an entry of indexes names no column".into());
        }
        if index.len() > INDEX_COLUMNS_MAX {
            return invalid(format!(
                "index {shown} names more than {INDEX_COLUMNS_MAX} columns"
            ));
        }
        let mut names = HashSet::new();
        for name in index {
            let known = table.columns.iter().any(|(c, _)| c == name)
                || table.owner_column.as_deref() == Some(name.as_str())
                || system::ALL.contains(&name.as_str());
            if !known {
                let declared: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
                return invalid(format!(
                    "index {shown} names '{name}', which is neither a declared column ({}) nor a system property ({}); names are case-sensitive",
                    declared.join(", "),
                    system::ALL.join(", ")
                ));
            }
            if !names.insert(name.as_str()) {
                return invalid(format!("index {shown} names '{name}' twice"));
            }
        }
        if !indexes.insert(index.clone()) {
            return invalid(format!("index {shown} is declared twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_serves_todo_item() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default_todo());
    }

    #[test]
    fn columns_keep_document_order_and_limits_parse() {
        let config = Config::from_toml_str(
            r#"
            listen = "127.0.0.1:9000"
            database = "sqlite://x.db"
            [limits]
            page_size_max = 10
            [[tables]]
            name = "Notes"
            columns = { zeta = "string", alpha = "number", mid = "date", b = "boolean" }
            soft_delete = false
            page_size = 5
            dynamic_schema = true
            "#,
        )
        .unwrap();
        let t = &config.tables[0];
        let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid", "b"]);
        assert_eq!(t.columns[2].1, ColumnType::Date);
        assert!(!t.soft_delete && t.dynamic_schema && t.page_size == 5);
        assert_eq!(config.limits.page_size_max, 10);
        assert_eq!(
            config.limits.body_bytes_max,
            Limits::default().body_bytes_max
        );
        assert_eq!(
            config.database_target().unwrap(),
            DatabaseTarget::Sqlite("x.db".into())
        );
    }

    #[test]
    fn postgres_database_and_store_options_parse() {
        let config = Config::from_toml_str(
            "database = \"postgres://app@db.internal:5432/sync\"\n\
             [store]\npool_connections_max = 3\ncommit_order_stamps = false\nwrite_hold_ms_max = 7",
        )
        .unwrap();
        assert_eq!(
            config.database_target().unwrap(),
            DatabaseTarget::Postgres("postgres://app@db.internal:5432/sync".into())
        );
        assert_eq!(config.store.pool_connections_max, 3);
        assert_eq!(config.store.write_hold_ms_max, 7);
        assert!(!config.store.commit_order_stamps);
        let defaults = StoreConfig::default();
        assert!(defaults.commit_order_stamps);
        assert_eq!(defaults.sqlite_synchronous, SqliteSynchronous::Full);
        let relaxed = Config::from_toml_str("[store]\nsqlite_synchronous = \"normal\"").unwrap();
        assert_eq!(relaxed.store.sqlite_synchronous, SqliteSynchronous::Normal);
        assert!(Config::from_toml_str("[store]\nsqlite_synchronous = \"off\"").is_err());
        assert_eq!(defaults.write_hold_ms_max, 0);
        // A 64-byte name is fine on SQLite but not on PostgreSQL.
        let long = "T".repeat(64);
        let sqlite = format!("[[tables]]\nname = \"{long}\"");
        assert!(Config::from_toml_str(&sqlite).is_ok());
        let pg = format!("database = \"postgresql://h/d\"\n{sqlite}");
        let err = Config::from_toml_str(&pg).unwrap_err().to_string();
        assert!(err.contains("longer than 63 bytes"), "{err}");
        let err = Config::from_toml_str("[store]\npool_connections_max = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool_connections_max"), "{err}");
        let config = Config::from_toml_str(
            "[store]\nread_pool_connections_max = 4\ngroup_commit_writes_max = 1",
        )
        .unwrap();
        assert_eq!(config.store.read_pool_connections_max, 4);
        assert_eq!(config.store.group_commit_writes_max, 1);
        for cost in ["0", "-1.5", "nan", "inf"] {
            let err = Config::from_toml_str(&format!("[store]\npg_random_page_cost = {cost}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("store.pg_random_page_cost must be a number above 0"),
                "{cost}: {err}"
            );
        }
        for cost in ["4", "4.0"] {
            let config =
                Config::from_toml_str(&format!("[store]\npg_random_page_cost = {cost}")).unwrap();
            assert_eq!(config.store.pg_random_page_cost, 4.0, "{cost}");
        }
        for key in ["read_pool_connections_max", "group_commit_writes_max"] {
            let err = Config::from_toml_str(&format!("[store]\n{key} = 0"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("store.{key} must be at least 1")),
                "{err}"
            );
        }
    }

    #[test]
    fn example_file_parses() {
        let config =
            Config::from_toml_str(include_str!("../../../tablesync.example.toml")).unwrap();
        assert_eq!(config.tables[0], Config::todo_table());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.store, StoreConfig::default());
        assert_eq!(config.tables[1].name, "Note");
    }

    const AUTH: &str = "[auth]\nhmac_secret_env = \"S\"\n";

    #[test]
    fn id_types_parse_and_integer_ids_are_kept_off_per_user_tables() {
        let c = Config::from_toml_str(
            "[[tables]]\nname = \"A\"\nid_type = \"integer\"\n[[tables]]\nname = \"B\"",
        )
        .unwrap();
        assert_eq!(c.tables[0].id_type, IdType::Integer);
        assert_eq!(c.tables[1].id_type, IdType::String);
        let e = Config::from_toml_str("[[tables]]\nname = \"A\"\nid_type = \"uuid\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `uuid`"), "{e}");
        let e = Config::from_toml_str(&format!(
            "{AUTH}[[tables]]\nname = \"T\"\nowner_column = \"userId\"\nid_type = \"integer\""
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("id_type = \"integer\" cannot be combined with owner_column"),
            "{e}"
        );
    }

    #[test]
    fn access_and_owner_column_need_auth() {
        for (text, needle) in [
            (
                "[[tables]]\nname = \"T\"\naccess = \"authenticated\"",
                "needs an [auth] section",
            ),
            (
                "[[tables]]\nname = \"T\"\naccess = { insert = \"authenticated\", default = \"anonymous\" }",
                "insert is authenticated, which needs an [auth] section",
            ),
            (
                "[[tables]]\nname = \"T\"\nowner_column = \"userId\"\naccess = \"anonymous\"",
                "owner_column needs an [auth] section",
            ),
        ] {
            let err = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        // Without [auth] everything is anonymous, as before.
        let plain = Config::from_toml_str("[[tables]]\nname = \"T\"").unwrap();
        assert_eq!(
            plain.tables[0].access_level(TableOperation::Insert, false),
            AccessLevel::Anonymous
        );
    }

    #[test]
    fn auth_tables_deny_by_default_and_validate_owner_columns() {
        let config = Config::from_toml_str(&format!(
            "{AUTH}[[tables]]\nname = \"T\"\n[[tables]]\nname = \"P\"\naccess = {{ read = \"anonymous\", default = \"disabled\" }}"
        ))
        .unwrap();
        let t = &config.tables[0];
        assert_eq!(
            t.access_level(TableOperation::Read, true),
            AccessLevel::Authenticated
        );
        let p = &config.tables[1];
        assert_eq!(
            p.access_level(TableOperation::Read, true),
            AccessLevel::Anonymous
        );
        assert_eq!(
            p.access_level(TableOperation::Delete, true),
            AccessLevel::Disabled
        );
        for (tables, needle) in [
            (
                "[[tables]]\nname = \"T\"\naccess = { read = \"anonymous\" }",
                "access names no level for insert",
            ),
            (
                "[[tables]]\nname = \"T\"\nowner_column = \"userId\"\naccess = { read = \"anonymous\", default = \"authenticated\" }",
                "every enabled operation must be authenticated, but read is anonymous",
            ),
            (
                "[[tables]]\nname = \"T\"\nowner_column = \"id\"",
                "not a system property",
            ),
            (
                "[[tables]]\nname = \"T\"\ncolumns = { userId = \"number\" }\nowner_column = \"userId\"",
                "it must be a string",
            ),
            (
                "[[tables]]\nname = \"T\"\naccess = \"sometimes\"",
                "unknown level 'sometimes'",
            ),
            (
                "[[tables]]\nname = \"T\"\naccess = { upsert = \"anonymous\" }",
                "unknown operation 'upsert'",
            ),
        ] {
            let err = Config::from_toml_str(&format!("{AUTH}{tables}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{tables:?}: {err}");
        }
        // A disabled operation may stay anonymous-free on a per-user table.
        let ok = format!(
            "{AUTH}[[tables]]\nname = \"T\"\nowner_column = \"userId\"\naccess = {{ delete = \"disabled\", default = \"authenticated\" }}"
        );
        assert!(Config::from_toml_str(&ok).is_ok());
    }

    #[test]
    fn auth_sections_are_checked() {
        for (auth, needle) in [
            ("[auth]\n", "no key to verify tokens with"),
            ("[auth]\nhmac_secret = \"0000\"", "at least 32 bytes"),
            (
                "[auth]\nhmac_secret_env = \"S\"\nhmac_secret = \"0123456789abcdef0123456789abcdef\"",
                "not both",
            ),
            ("[auth]\nhmac_secret_env = \"S\"\nleeway_s = 301", "at most 300"),
            ("[auth]\nhmac_secret_env = \"S\"\nalgorithms = [\"none\"]", "unknown variant"),
            ("[auth]\nhmac_secret_env = \"S\"\nalgorithms = [\"RS256\"]", "needs a jwks_file"),
            ("[auth]\nhmac_secret_env = \"S\"\nissuer = \"\"", "must not be empty"),
            ("[auth]\nhmac_secret_env = \"S\"\nsurprise = 1", "unknown field"),
        ] {
            let err = Config::from_toml_str(auth).unwrap_err().to_string();
            assert!(err.contains(needle), "{auth:?}: {err}");
        }
    }

    #[test]
    fn the_per_user_example_parses() {
        let config =
            Config::from_toml_str(include_str!("../../../examples/per-user.toml")).unwrap();
        assert_eq!(config.tables[0].owner_column.as_deref(), Some("userId"));
        let auth = config.auth.unwrap();
        assert_eq!(
            auth.hmac_secret_env.as_deref(),
            Some("TABLESYNC_AUTH_SECRET")
        );
    }

    #[test]
    fn rejects_bad_configs() {
        for (text, needle) in [
            ("[[tables]]\nname = \"1bad\"", "table name"),
            (
                "[[tables]]\nname = \"T\"\ncolumns = { id = \"string\" }",
                "system property",
            ),
            (
                "[[tables]]\nname = \"T\"\ncolumns = { xmin = \"string\" }",
                "reserve",
            ),
            (
                "[[tables]]\nname = \"T\"\ncolumns = { RowId = \"number\" }",
                "reserve",
            ),
            (
                "[[tables]]\nname = \"T\"\ncolumns = { a = \"int\" }",
                "unknown type",
            ),
            ("[[tables]]\nname = \"T\"\npage_size = 5000", "page_size"),
            (
                "[[tables]]\nname = \"T\"\n[[tables]]\nname = \"t\"",
                "twice",
            ),
            ("bogus = 1", "unknown field"),
            ("database = \"mysql://x\"", "unsupported"),
            (
                "[cors]\nallowed_origins = [\"not an origin\"]",
                "cors.allowed_origins",
            ),
        ] {
            let err = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}

#[cfg(test)]
mod place_tests {
    use super::*;

    /// The `path:line:col` prefix `in_file` gives `text`'s error.
    fn place_of(text: &str) -> String {
        let err = Config::from_toml_str(text).unwrap_err();
        err.in_file(Path::new("t.toml"), text).to_string()
    }

    #[test]
    fn a_refused_value_names_its_line() {
        // A table's key: the line of that key in that table's entry, not another table's.
        let text =
            "[[tables]]\nname = \"A\"\npage_size = 5\n\n[[tables]]\nname = \"B\"\npage_size = 0\n";
        assert_eq!(place_of(text), "t.toml:7:1");
        // A table without the key (a refused combination): the entry's `name` line.
        let text = "[[tables]]\nname = \"A\"\n\n[[tables]]\nname = \"Bad-Name\"\n";
        assert_eq!(place_of(text), "t.toml:5:1");
        // A section key, written as a dotted key or in its section.
        let text = "listen = \"127.0.0.1:1\"\n[limits]\npage_size_max = 0\n";
        assert_eq!(place_of(text), "t.toml:3:1");
        let text = "limits.page_size_max = 0\n";
        assert_eq!(place_of(text), "t.toml:1:8");
        // A refused combination: the key that asks for it (owner_column needs [auth]).
        let text = "[[tables]]\nname = \"A\"\nowner_column = \"userId\"\n";
        assert_eq!(place_of(text), "t.toml:3:1");
        // A key inside a section.
        let text = "[store]\nreader_connections = 0\n";
        assert_eq!(place_of(text), "t.toml:2:1");
        // A declared index naming an unknown column: the `indexes` line.
        let text = "[[tables]]\nname = \"A\"\ncolumns = { text = \"string\" }\n\nindexes = [[\"text\"], [\"txt\"]]\n";
        assert_eq!(place_of(text), "t.toml:5:1");
    }

    #[test]
    fn declared_indexes_name_known_columns_once() {
        let table = |indexes: &str| {
            format!(
                "[[tables]]\nname = \"A\"\ncolumns = {{ text = \"string\", complete = \"boolean\" }}\nindexes = {indexes}\n"
            )
        };
        let ok = Config::from_toml_str(&table(
            r#"[["complete", "text"], ["text"], ["updatedAt", "deleted"]]"#,
        ))
        .unwrap();
        assert_eq!(
            ok.tables[0].indexes,
            vec![
                vec!["complete".to_owned(), "text".to_owned()],
                vec!["text".to_owned()],
                vec!["updatedAt".to_owned(), "deleted".to_owned()]
            ]
        );
        for (indexes, needle) in [
            (
                r#"[["txt"]]"#,
                "index [\"txt\"] names 'txt', which is neither a declared column (text, complete)",
            ),
            (r#"[["Text"]]"#, "names are case-sensitive"),
            (r#"[[]]"#, "an entry of indexes names no column"),
            (r#"[["text", "text"]]"#, "names 'text' twice"),
            (
                r#"[["text"], ["text"]]"#,
                "index [\"text\"] is declared twice",
            ),
            (r#"[["text; DROP TABLE A"]]"#, "neither a declared column"),
        ] {
            let err = Config::from_toml_str(&table(indexes))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{indexes}: {err}");
            assert!(err.contains("table 'A': "), "{err}");
        }
        let many = format!("[[{}]]", vec!["\"text\""; 31].join(", "));
        let err = Config::from_toml_str(&table(&many))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 30 columns"), "{err}");
    }
}
