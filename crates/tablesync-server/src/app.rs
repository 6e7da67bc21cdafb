//! Application state and the table operations behind the routes.
//!
//! [`App`] holds the configuration, the store and each table's current schema. Its methods are the
//! six table operations of protocol.md section 2, written in terms of the pure rules of
//! [`crate::table`] and the [`Store`] trait, so the HTTP layer (`crate::http`, which owns the
//! route table) only extracts inputs and renders outputs.
//!
//! # Who may do what
//!
//! Every operation takes the caller's [`Identity`] as a plain value (the HTTP layer gets it from
//! `crate::auth`; a batch would pass its own principal), checks it in [`App::authorize`] —
//! unknown table 404, disabled operation 405, anonymous caller of an `authenticated` operation
//! 401, in that order — and derives the row [`Scope`] the store is given: on a per-user table
//! the caller's own rows, on a shared table all of them. Ownership is enforced by the store's
//! SQL, never here after the fact; here only the request body is kept from naming an owner
//! (another user's id is 400 `owner_mismatch`; the caller's own id is accepted and dropped,
//! because the store fills the owner in from the scope).
//!
//! Several processes may share one database, and dynamic schema lets any of them add columns.
//! Each process's copy of a dynamic-schema table's columns is therefore re-read from the store
//! (one catalog query, no lock) when it is older than `[store] schema_refresh_ms`, and at once
//! when a `$filter`/`$orderby`/`$select` names a column the copy lacks (then the request is
//! lowered again). Cost: at most one extra catalog query per table per `schema_refresh_ms` per
//! process, plus one per request naming a column that really does not exist. Until the next
//! refresh a plain read may omit a column another process added less than
//! `schema_refresh_ms` ago; a write naming it adds nothing (the store reports it as existing).

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use tablesync_protocol::error::ErrorCode;
use tablesync_protocol::odata::limits::check_expressions;
use tablesync_protocol::odata::query::{parse_query_string, QueryError};
use tablesync_protocol::odata::sql::{lower_filter, lower_order_by};

use crate::auth::{AccessLevel, Authenticator, Clock, Identity};
use crate::config::{Config, Limits, TableConfig, TableOperation};
use crate::error::ApiError;
use crate::feed::{Change, FeedHub, Position};
use crate::observe::metrics::Metrics;
use crate::observe::TrustedProxies;
use crate::store::{
    EncodedPage, ListQuery, PoolStatus, Rows, Scope, Store, StoreError, StoreErrorKind,
    WriteOutcome,
};
use crate::table::{
    check_body, check_select, check_table_id, check_update_id, insert_id, precondition, BodyCheck,
    Column, Item, MismatchStatus, Precondition, TableSchema, WriteRequest,
};

/// One served table: its configuration and its current schema.
pub struct TableEntry {
    /// The table's configuration.
    pub config: TableConfig,
    /// Current schema; replaced (never mutated in place) when dynamic schema adds columns.
    schema: RwLock<Arc<TableSchema>>,
    /// When the columns were last read from the store (dynamic-schema tables re-read them).
    refreshed: Mutex<Instant>,
}

impl TableEntry {
    /// A snapshot of the schema for one request.
    pub fn schema(&self) -> Arc<TableSchema> {
        Arc::clone(&self.schema.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Merge columns the store reports (only ever adds: a slower request must not drop a column
    /// a faster one added).
    fn merge_columns(&self, stored: Vec<Column>) {
        let mut guard = self.schema.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = (**guard).clone();
        for column in stored {
            if next.column(&column.name).is_none() {
                next.columns.push(column);
            }
        }
        *guard = Arc::new(next);
    }
}

/// A page of a list request, ready to render.
#[derive(Debug)]
pub struct ListResult {
    /// The rows (projected by `$select`), already encoded as a JSON array.
    pub items: EncodedPage,
    /// Total count when `$inlinecount=allpages`.
    pub count: Option<u64>,
    /// `$skip` of the next page when this page is full (the HTTP layer adds a `Link`).
    pub next_skip: Option<u64>,
}

/// The server's shared state.
pub struct App {
    limits: Limits,
    skip_version_check: bool,
    /// `[store] schema_refresh_ms`.
    schema_refresh: Duration,
    store: Arc<dyn Store>,
    /// Verifies tokens; None without an `[auth]` section (then tokens are not read at all).
    authenticator: Option<Authenticator>,
    /// Keyed by lower-case name: table URLs match case-insensitively, like the official servers.
    tables: HashMap<String, Arc<TableEntry>>,
    /// `GET /openapi.json`, generated from the configuration once (`crate::openapi`).
    openapi: Value,
    /// The clock idempotency records are dated and expired by (the one tokens use).
    clock: Arc<dyn Clock>,
    /// When this process last swept expired idempotency records, in Unix seconds.
    last_sweep_s: AtomicI64,
    /// This server's metrics; None with `[metrics] enabled = false`.
    metrics: Option<Metrics>,
    /// `trusted_proxies`, parsed.
    trusted_proxies: TrustedProxies,
    /// Whether `/metrics` is served on the main listener (enabled and no `[metrics] listen`).
    metrics_on_main: bool,
    /// The change feed's wake-ups and subscriber cap (`crate::feed`).
    feed: Arc<FeedHub>,
    /// The feed's background tasks (announcing writes to, and listening for, other processes):
    /// aborted when the app is dropped.
    feed_tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.feed_tasks {
            task.abort();
        }
    }
}

/// Where a new change-feed subscriber starts: the table's configured name, the caller's row
/// scope, and the position (None: before the first row, the table being empty).
#[derive(Clone, Debug)]
pub struct FeedCursor {
    /// The configured name.
    pub table: Arc<str>,
    /// The caller's rows.
    pub scope: Scope,
    /// The last row the subscriber has.
    pub position: Option<Position>,
}

impl App {
    /// Prepare the store for the configured tables and build the state.
    pub async fn new(
        config: &Config,
        store: Arc<dyn Store>,
        authenticator: Option<Authenticator>,
        clock: Arc<dyn Clock>,
    ) -> Result<App, StoreError> {
        let declared: Vec<TableSchema> =
            config.tables.iter().map(TableSchema::from_config).collect();
        let stored = store.prepare(&declared).await?;
        let tables = config
            .tables
            .iter()
            .zip(stored)
            .map(|(config, schema)| {
                let entry = TableEntry {
                    config: config.clone(),
                    schema: RwLock::new(Arc::new(schema)),
                    refreshed: Mutex::new(Instant::now()),
                };
                (config.name.to_ascii_lowercase(), Arc::new(entry))
            })
            .collect();
        let metrics = config
            .metrics
            .enabled
            .then(|| Metrics::new(store.pool_wait(), store.group_commits()));
        // Validation parsed it already; an empty list if it somehow does not parse.
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies).unwrap_or_default();
        let pool_max = usize::try_from(store.pool_status().max).unwrap_or(usize::MAX);
        let feed = Arc::new(FeedHub::new(
            config.tables.iter().map(|t| t.name.as_str()),
            config.limits.subscribers_max,
            pool_max,
        ));
        let feed_tasks = crate::feed::spawn_tasks(&store, &feed);
        Ok(App {
            feed,
            feed_tasks,
            metrics_on_main: config.metrics.enabled && config.metrics.listen.is_none(),
            metrics,
            trusted_proxies,
            limits: config.limits.clone(),
            skip_version_check: config.skip_version_check,
            schema_refresh: Duration::from_millis(config.store.schema_refresh_ms),
            store,
            authenticator,
            tables,
            openapi: crate::openapi::document(config),
            clock,
            last_sweep_s: AtomicI64::new(i64::MIN),
        })
    }

    /// The store (batches open their transaction on it).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The injected clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Replace a table's copy of its columns with `columns` as the store has them: after a
    /// batch rolled back an `ADD COLUMN` its operation made (merging would keep the column).
    pub fn replace_columns(&self, table: &str, columns: Vec<Column>) {
        if let Some(entry) = self.tables.get(&table.to_ascii_lowercase()) {
            let mut guard = entry.schema.write().unwrap_or_else(PoisonError::into_inner);
            let mut next = (**guard).clone();
            next.columns = columns;
            *guard = Arc::new(next);
        }
    }

    /// When expired idempotency records were last swept (`crate::batch`).
    pub fn last_sweep_s(&self) -> &AtomicI64 {
        &self.last_sweep_s
    }

    /// The request headers a token is read from (lower-case, in precedence order); none without
    /// `[auth]`.
    pub fn token_header_names(&self) -> &[String] {
        self.authenticator
            .as_ref()
            .map_or(&[], |a| a.header_names())
    }

    /// The caller, from the values of [`App::token_header_names`]: anonymous without a token
    /// (or without `[auth]`), 401 for a token that does not verify (the reason is logged, never
    /// sent).
    pub fn authenticate(&self, headers: &[(String, Vec<Vec<u8>>)]) -> Result<Identity, ApiError> {
        match &self.authenticator {
            None => Ok(Identity::Anonymous),
            Some(a) => a
                .authenticate(headers)
                .map_err(|e| ApiError::InvalidToken { reason: e.reason }),
        }
    }

    /// Whether `op` on `table` exists at all: 404 for an unknown table, 405 for an operation the
    /// configuration disables (`operations` or `access = "disabled"`), whoever asks.
    pub fn check_operation(
        &self,
        table: &str,
        op: TableOperation,
    ) -> Result<Arc<TableEntry>, ApiError> {
        let entry = self
            .tables
            .get(&table.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| ApiError::TableNotFound(table.to_owned()))?;
        let level = entry.config.access_level(op, self.authenticator.is_some());
        if level == AccessLevel::Disabled {
            return Err(ApiError::MethodNotAllowed(format!(
                "Table '{}' does not allow the {} operation",
                entry.config.name,
                op.name()
            )));
        }
        Ok(entry)
    }

    /// Whether `op` on `table` can run for `identity`: 404 for an unknown table, 405 for a
    /// disabled operation, 401 for an anonymous caller of an authenticated one. On success, the
    /// table and the rows the caller may see. Every operation starts here; the HTTP layer calls
    /// it before reading the body, so the statuses come in the order 404/405, 401, 400.
    pub fn authorize(
        &self,
        table: &str,
        op: TableOperation,
        identity: &Identity,
    ) -> Result<(Arc<TableEntry>, Scope), ApiError> {
        let entry = self.check_operation(table, op)?;
        let level = entry.config.access_level(op, self.authenticator.is_some());
        if let (AccessLevel::Authenticated, Identity::Anonymous) = (level, identity) {
            return Err(ApiError::Unauthenticated);
        }
        let scope = match (&entry.config.owner_column, identity) {
            (None, _) => Scope::Shared,
            (Some(_), Identity::User(p)) => Scope::Owner(p.user_id.clone()),
            // Validation makes per-user tables authenticated; deny rather than widen.
            (Some(_), Identity::Anonymous) => return Err(ApiError::Unauthenticated),
        };
        Ok((entry, scope))
    }

    /// The change feed's hub.
    pub fn feed(&self) -> &Arc<FeedHub> {
        &self.feed
    }

    /// The one call the write path makes after a write returned: when it wrote (and so
    /// committed), wake the table's change-feed subscribers here and announce it to other
    /// processes. A write whose answer is lost (a timeout after commit) is found by the
    /// subscribers' periodic re-read instead.
    pub fn after_write(&self, table: &str, wrote: bool) {
        if wrote {
            self.feed.changed(table);
        }
    }

    /// A new change-feed subscriber of `table` for `identity`: the same gate as a table read
    /// (404 unknown table, 405 reads disabled, 401 anonymous caller of an authenticated read),
    /// then its position: `after` checked against the table's id rules (400
    /// `invalid_position`), or, without one, the current end of the caller's rows, so only
    /// changes committed from now on are sent.
    pub async fn feed_cursor(
        &self,
        table: &str,
        identity: &Identity,
        after: Option<Position>,
    ) -> Result<FeedCursor, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Read, identity)?;
        let name: Arc<str> = Arc::from(entry.config.name.as_str());
        let position = match after {
            Some(p) => {
                let id = check_table_id(&p.id, entry.config.id_type)
                    .map_err(|e| ApiError::InvalidPosition(format!("the position's id: {e}")))?;
                Some(Position { id, ..p })
            }
            None => {
                let schema = self.current_schema(&entry).await?;
                let query = self.feed_query(&entry, &schema, None, 1, true)?;
                let page = self.store.list(&schema, &scope, query).await?;
                match decoded(page.items)?.into_iter().next() {
                    Some(item) => Some(change_of(&name, item)?.position()),
                    None => None,
                }
            }
        };
        Ok(FeedCursor {
            table: name,
            scope,
            position,
        })
    }

    /// Up to `limit` rows of the cursor's table past its position, in (`updatedAt`, `id`)
    /// order: the incremental pull's keyset query (`updatedAt ge T and (updatedAt gt T or
    /// (updatedAt eq T and id gt I))`, tombstones included), owner-scoped in the store's SQL.
    pub async fn feed_read(
        &self,
        cursor: &FeedCursor,
        limit: u64,
    ) -> Result<Vec<Change>, ApiError> {
        let entry = self
            .tables
            .get(&cursor.table.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| ApiError::TableNotFound(cursor.table.to_string()))?;
        let schema = self.current_schema(&entry).await?;
        let limit = limit.clamp(1, self.limits.page_size_max);
        let query = self.feed_query(&entry, &schema, cursor.position.as_ref(), limit, false)?;
        let page = self.store.list(&schema, &cursor.scope, query).await?;
        decoded(page.items)?
            .into_iter()
            .map(|item| change_of(&cursor.table, item))
            .collect()
    }

    /// The store query of a feed read: rows past `after` ascending, or (`last`) the last row.
    fn feed_query(
        &self,
        entry: &TableEntry,
        schema: &TableSchema,
        after: Option<&Position>,
        top: u64,
        last: bool,
    ) -> Result<ListQuery, ApiError> {
        use tablesync_protocol::odata::{parse_filter, parse_orderby};
        use tablesync_protocol::system::{DELETED, ID, UPDATED_AT, VERSION};
        let internal = |what: &str, message: String| {
            ApiError::Store(StoreError::new(
                StoreErrorKind::Internal,
                format!("the change feed's {what} does not parse: {message}"),
            ))
        };
        let filter = match after {
            Some(p) => {
                let id = match entry.config.id_type {
                    crate::config::IdType::Integer => p.id.clone(),
                    crate::config::IdType::String => format!("'{}'", p.id.replace('\'', "''")),
                };
                let t = format!("datetimeoffset'{}'", p.updated_at);
                let text = format!(
                    "updatedAt ge {t} and (updatedAt gt {t} or (updatedAt eq {t} and id gt {id}))"
                );
                let expr = parse_filter(&text).map_err(|e| internal("filter", e.message))?;
                Some(
                    lower_filter(&expr, schema, self.store.dialect(), 1)
                        .map_err(ApiError::Lower)?,
                )
            }
            None => None,
        };
        let order = if last {
            "updatedAt desc,id desc"
        } else {
            "updatedAt,id"
        };
        let order = parse_orderby(order).map_err(|e| internal("order", e.message))?;
        let next_param = 1 + filter.as_ref().map_or(0, |f| f.params.len());
        let order_by = lower_order_by(&order, schema, self.store.dialect(), next_param)
            .map_err(ApiError::Lower)?;
        Ok(ListQuery {
            filter,
            order_by: Some(order_by),
            include_deleted: true,
            skip: 0,
            top,
            count: false,
            // The system fields an event carries: the store encodes nothing else.
            select: Some(
                [ID, UPDATED_AT, VERSION, DELETED]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        })
    }

    /// The metrics, unless `[metrics] enabled = false`.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Whether the main router serves `/metrics`.
    pub fn metrics_on_main(&self) -> bool {
        self.metrics_on_main
    }

    /// The peers whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.trusted_proxies
    }

    /// The configured name of a table (URLs match it in any case); None for an unknown table.
    pub fn table_name(&self, table: &str) -> Option<&str> {
        self.tables
            .get(&table.to_ascii_lowercase())
            .map(|entry| entry.config.name.as_str())
    }

    /// `GET /ready`: one database round trip within `limits.ready_timeout_ms`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let timeout = Duration::from_millis(self.limits.ready_timeout_ms);
        self.store.ping(timeout).await
    }

    /// The store's connections now, for the metrics.
    pub fn pool_status(&self) -> PoolStatus {
        self.store.pool_status()
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the `ZUMO-API-VERSION` check is off.
    pub fn skip_version_check(&self) -> bool {
        self.skip_version_check
    }

    /// The OpenAPI document of the configured tables (without `servers`).
    pub fn openapi(&self) -> &Value {
        &self.openapi
    }

    /// Whether `[auth]` is configured (then `/openapi.json` needs a valid token).
    pub fn auth_configured(&self) -> bool {
        self.authenticator.is_some()
    }

    /// The schema for one request: for a dynamic-schema table, re-read from the store first
    /// when the copy is older than `schema_refresh_ms` (another process may have added columns).
    async fn current_schema(&self, entry: &TableEntry) -> Result<Arc<TableSchema>, ApiError> {
        if entry.config.dynamic_schema {
            let stale = entry
                .refreshed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
                >= self.schema_refresh;
            if stale {
                self.reload_schema(entry).await?;
            }
        }
        Ok(entry.schema())
    }

    /// Re-read a table's columns from the store and merge them into the copy.
    async fn reload_schema(&self, entry: &TableEntry) -> Result<(), ApiError> {
        let schema = entry.schema();
        let stored = self.store.columns(&schema).await?;
        entry.merge_columns(stored);
        *entry
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }

    /// `GET /tables/{table}`: a page of rows per the OData options in `raw_query`.
    pub async fn list(
        &self,
        table: &str,
        identity: &Identity,
        raw_query: &str,
    ) -> Result<ListResult, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Read, identity)?;
        // `$select` travels in the store query: the store encodes only the selected columns.
        let (schema, list, _) = self.list_query(&entry, raw_query).await?;
        let (top, skip) = (list.top, list.skip);
        let page = self
            .store
            .list(&schema, &scope, list)
            .await
            .map_err(|e| match e.kind {
                // The database could not evaluate the client's expression (a value out of range,
                // too many terms). Logged, because a limit we should check earlier shows up here.
                StoreErrorKind::InvalidInput => {
                    tracing::warn!("list refused by the database: {}", e.message);
                    ApiError::Query(QueryError {
                        code: ErrorCode::InvalidFilter,
                        message: "The query could not be evaluated by the database: a value is out of range or the query is too complex".to_owned(),
                        position: None,
                    })
                }
                // Anything else (including `Query`: SQL we built is wrong) is ours: 500, logged.
                _ => ApiError::Store(e),
            })?;
        let rows = page.items.rows() as u64;
        let full = top > 0 && rows == top;
        if let Some(metrics) = &self.metrics {
            metrics.rows_served(&entry.config.name, is_pull(raw_query), rows);
        }
        Ok(ListResult {
            items: page.items,
            count: page.count,
            next_skip: full.then(|| skip.saturating_add(top)),
        })
    }

    /// The database's query plan for the list request `GET /tables/{table}?{raw_query}` as
    /// `user_id` sees it (None: a shared table's every row). A diagnostic: no access check.
    pub async fn explain_list(
        &self,
        table: &str,
        user_id: Option<&str>,
        raw_query: &str,
    ) -> Result<String, ApiError> {
        let entry = self
            .tables
            .get(&table.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| ApiError::TableNotFound(table.to_owned()))?;
        let scope = match user_id {
            Some(user) => Scope::Owner(user.to_owned()),
            None => Scope::Shared,
        };
        let (schema, list, _) = self.list_query(&entry, raw_query).await?;
        Ok(self.store.explain_list(&schema, &scope, list).await?)
    }

    /// Check and lower a list request: the schema it runs against, the store query and the
    /// `$select` names. On a dynamic-schema table, a name the schema lacks makes it re-read the
    /// columns (another process may have added it) and lower the request once more.
    #[allow(clippy::type_complexity)]
    async fn list_query(
        &self,
        entry: &TableEntry,
        raw_query: &str,
    ) -> Result<(Arc<TableSchema>, ListQuery, Option<Vec<String>>), ApiError> {
        let schema = self.current_schema(entry).await?;
        match self.lower_list(entry, schema, raw_query) {
            Err(e) if entry.config.dynamic_schema && names_unknown_column(&e) => {
                self.reload_schema(entry).await?;
                self.lower_list(entry, entry.schema(), raw_query)
            }
            other => other,
        }
    }

    /// [`App::list_query`] against one schema.
    #[allow(clippy::type_complexity)]
    fn lower_list(
        &self,
        entry: &TableEntry,
        schema: Arc<TableSchema>,
        raw_query: &str,
    ) -> Result<(Arc<TableSchema>, ListQuery, Option<Vec<String>>), ApiError> {
        if raw_query_value(raw_query, "$filter", false)
            .is_some_and(|f| f.len() > self.limits.filter_bytes_max)
        {
            return Err(ApiError::FilterTooLong {
                limit_bytes: self.limits.filter_bytes_max,
            });
        }
        let query = parse_query_string(raw_query).map_err(ApiError::Query)?;
        let too_many = |code: ErrorCode, option: &str, terms: usize, max: usize| {
            ApiError::Query(QueryError {
                code,
                message: format!("{option} has {terms} terms; at most {max} are allowed"),
                position: None,
            })
        };
        if query.order_by.len() > self.limits.orderby_terms_max {
            return Err(too_many(
                ErrorCode::InvalidOrderBy,
                "$orderby",
                query.order_by.len(),
                self.limits.orderby_terms_max,
            ));
        }
        if let Some(select) = &query.select {
            if select.len() > self.limits.select_terms_max {
                return Err(too_many(
                    ErrorCode::InvalidSelect,
                    "$select",
                    select.len(),
                    self.limits.select_terms_max,
                ));
            }
        }
        // The limits every store shares, before any lowering (one answer on every store).
        let terms_max = self.limits.filter_terms_max;
        check_expressions(query.filter.as_ref(), "$filter", terms_max).map_err(ApiError::Lower)?;
        check_expressions(
            query.order_by.iter().map(|o| &o.expr),
            "$orderby",
            terms_max,
        )
        .map_err(ApiError::Lower)?;
        let top = query.top.unwrap_or(entry.config.page_size);
        if top > self.limits.page_size_max {
            return Err(ApiError::TopTooLarge {
                max: self.limits.page_size_max,
            });
        }
        let skip = query.skip.unwrap_or(0);
        let select = match &query.select {
            Some(names) => Some(check_select(names, &schema).map_err(ApiError::UnknownSelect)?),
            None => None,
        };
        let dialect = self.store.dialect();
        let filter = match &query.filter {
            Some(expr) => Some(lower_filter(expr, &*schema, dialect, 1).map_err(ApiError::Lower)?),
            None => None,
        };
        let next_param = 1 + filter.as_ref().map_or(0, |f| f.params.len());
        let order_by = if query.order_by.is_empty() {
            None
        } else {
            Some(
                lower_order_by(&query.order_by, &*schema, dialect, next_param)
                    .map_err(ApiError::Lower)?,
            )
        };
        let list = ListQuery {
            filter,
            order_by,
            include_deleted: query.include_deleted || !schema.soft_delete,
            skip,
            top,
            count: query.inline_count,
            select: select.clone(),
        };
        Ok((schema, list, select))
    }

    /// `GET /tables/{table}/{id}`: one row; soft-deleted rows only with `__includeDeleted=true`.
    pub async fn get(
        &self,
        table: &str,
        identity: &Identity,
        id: &str,
        raw_query: &str,
    ) -> Result<Item, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Read, identity)?;
        let id = &check_table_id(id, entry.config.id_type)?;
        let query = parse_query_string(raw_query).map_err(ApiError::Query)?;
        let schema = self.current_schema(&entry).await?;
        match self.store.get(&schema, &scope, id).await? {
            Some(item) if query.include_deleted || !is_deleted(&item) => Ok(item),
            _ => Err(ApiError::ItemNotFound),
        }
    }

    /// `POST /tables/{table}`: insert; a taken id is a conflict carrying the stored row.
    pub async fn insert(
        &self,
        table: &str,
        identity: &Identity,
        body: Map<String, Value>,
    ) -> Result<Item, ApiError> {
        let result = self.insert_on(&self.store, table, identity, body).await;
        self.after_write(table, result.is_ok());
        result
    }

    /// [`App::insert`] on `rows` (the store, or a batch's transaction).
    pub async fn insert_on(
        &self,
        rows: &dyn Rows,
        table: &str,
        identity: &Identity,
        body: Map<String, Value>,
    ) -> Result<Item, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Insert, identity)?;
        let body = without_owner(&entry.config, &scope, body)?;
        let scope = &scope;
        // Before dynamic schema adds a column: the id must be valid and free, so a request that
        // fails anyway leaves the table as it was.
        let id_type = entry.config.id_type;
        let before_growing = |partial: WriteRequest, schema: Arc<TableSchema>| async move {
            // An integer id is the database's to assign: nothing can be taken yet.
            let Some(id) = insert_id(&partial, id_type)? else {
                return Ok(());
            };
            match rows.get(&schema, scope, &id).await? {
                Some(item) => Err(ApiError::Conflict(Box::new(item))),
                None => Ok(()),
            }
        };
        let (schema, request) = self
            .check_write(rows, &entry, &body, before_growing)
            .await?;
        // None: an integer-id table, whose store ignores the id and lets the database assign it.
        let id = insert_id(&request, id_type)?.unwrap_or_default();
        // A `version` in an insert body is ignored: the server owns versions.
        match rows.insert(&schema, scope, &id, request.values).await? {
            WriteOutcome::Written(item) => Ok(item),
            WriteOutcome::AlreadyExists(item) | WriteOutcome::VersionMismatch(item) => {
                Err(ApiError::Conflict(Box::new(item)))
            }
            WriteOutcome::NotFound => Err(ApiError::ItemNotFound),
        }
    }

    /// `PATCH /tables/{table}/{id}`: merge the supplied properties into a live row.
    pub async fn update(
        &self,
        table: &str,
        identity: &Identity,
        id: &str,
        body: Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let result = self
            .update_on(&self.store, table, identity, id, body, if_match)
            .await;
        self.after_write(table, result.is_ok());
        result
    }

    /// [`App::update`] on `rows` (the store, or a batch's transaction).
    pub async fn update_on(
        &self,
        rows: &dyn Rows,
        table: &str,
        identity: &Identity,
        id: &str,
        body: Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Update, identity)?;
        let body = without_owner(&entry.config, &scope, body)?;
        let scope = &scope;
        let id = &check_table_id(id, entry.config.id_type)?;
        // Before dynamic schema adds a column: the body's id must match and the row must exist
        // with the expected version (the compare-and-swap still decides; this only keeps a
        // request that fails anyway from growing the table).
        let before_growing = |partial: WriteRequest, schema: Arc<TableSchema>| async move {
            check_update_id(&partial, id)?;
            let pre = self
                .settle(
                    rows,
                    &schema,
                    scope,
                    id,
                    precondition(if_match, partial.version.as_deref()),
                )
                .await?;
            match rows.get(&schema, scope, id).await? {
                Some(item) if !is_deleted(&item) => match &pre.expected {
                    Some(v)
                        if item.get(tablesync_protocol::system::VERSION)
                            != Some(&Value::String(v.clone())) =>
                    {
                        written(WriteOutcome::VersionMismatch(item), pre.on_mismatch).map(drop)
                    }
                    _ => Ok(()),
                },
                _ => Err(ApiError::ItemNotFound),
            }
        };
        let (schema, request) = self
            .check_write(rows, &entry, &body, before_growing)
            .await?;
        check_update_id(&request, id)?;
        let pre = self
            .settle(
                rows,
                &schema,
                scope,
                id,
                precondition(if_match, request.version.as_deref()),
            )
            .await?;
        let outcome = rows
            .update(&schema, scope, id, request.values, pre.expected)
            .await?;
        written(outcome, pre.on_mismatch)
    }

    /// `DELETE /tables/{table}/{id}`: tombstone (soft delete) or remove; returns the row.
    pub async fn delete(
        &self,
        table: &str,
        identity: &Identity,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let result = self
            .delete_on(&self.store, table, identity, id, if_match)
            .await;
        self.after_write(table, result.is_ok());
        result
    }

    /// [`App::delete`] on `rows` (the store, or a batch's transaction).
    pub async fn delete_on(
        &self,
        rows: &dyn Rows,
        table: &str,
        identity: &Identity,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Delete, identity)?;
        let id = &check_table_id(id, entry.config.id_type)?;
        let schema = self.current_schema(&entry).await?;
        let pre = self
            .settle(rows, &schema, &scope, id, precondition(if_match, None))
            .await?;
        let outcome = rows.delete(&schema, &scope, id, pre.expected).await?;
        written(outcome, pre.on_mismatch)
    }

    /// `POST /tables/{table}/{id}`: clear a tombstone. Tables without soft delete answer 405.
    pub async fn undelete(
        &self,
        table: &str,
        identity: &Identity,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let result = self
            .undelete_on(&self.store, table, identity, id, if_match)
            .await;
        self.after_write(table, result.is_ok());
        result
    }

    /// [`App::undelete`] on `rows` (the store, or a batch's transaction).
    pub async fn undelete_on(
        &self,
        rows: &dyn Rows,
        table: &str,
        identity: &Identity,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Item, ApiError> {
        let (entry, scope) = self.authorize(table, TableOperation::Undelete, identity)?;
        if !entry.config.soft_delete {
            return Err(ApiError::MethodNotAllowed(format!(
                "Table '{}' has no soft delete, so nothing can be undeleted",
                entry.config.name
            )));
        }
        let id = &check_table_id(id, entry.config.id_type)?;
        let schema = self.current_schema(&entry).await?;
        let pre = self
            .settle(rows, &schema, &scope, id, precondition(if_match, None))
            .await?;
        let outcome = rows.undelete(&schema, &scope, id, pre.expected).await?;
        written(outcome, pre.on_mismatch)
    }

    /// Resolve an `If-Match` list (`"a", "b"`): the store's compare-and-swap takes one version,
    /// so the listed version the row has now becomes the expected one. The swap still decides:
    /// a row changed in between fails it (412), as it should.
    async fn settle(
        &self,
        rows: &dyn Rows,
        schema: &TableSchema,
        scope: &Scope,
        id: &str,
        mut pre: Precondition,
    ) -> Result<Precondition, ApiError> {
        if pre.any_of.len() > 1 {
            if let Some(item) = rows.get(schema, scope, id).await? {
                let current = item.get(tablesync_protocol::system::VERSION);
                if let Some(v) = pre
                    .any_of
                    .iter()
                    .find(|v| current == Some(&Value::String((*v).clone())))
                {
                    pre.expected = Some(v.clone());
                }
            }
        }
        Ok(pre)
    }

    /// Check a body, growing the schema first when dynamic schema asks for new columns. Columns
    /// are added only after `before_growing` (every check that needs no new column) passed.
    async fn check_write<F, Fut>(
        &self,
        rows: &dyn Rows,
        entry: &TableEntry,
        body: &Map<String, Value>,
        before_growing: F,
    ) -> Result<(Arc<TableSchema>, WriteRequest), ApiError>
    where
        F: Fn(WriteRequest, Arc<TableSchema>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        // Another process may have added columns: refresh a stale copy first.
        self.current_schema(entry).await?;
        // Two rounds suffice: after the columns are added the body fits (or has a wrong type,
        // when a concurrent request added the same column with another type).
        for _ in 0..3 {
            let schema = entry.schema();
            match check_body(
                body,
                &schema,
                entry.config.dynamic_schema,
                self.limits.columns_max,
            )? {
                BodyCheck::Write(request) => return Ok((schema, request)),
                BodyCheck::AddColumns { partial, columns } => {
                    before_growing(partial, Arc::clone(&schema)).await?;
                    let stored = rows.add_columns(&schema, &columns).await?;
                    entry.merge_columns(stored);
                }
            }
        }
        Err(ApiError::Store(StoreError::new(
            StoreErrorKind::Internal,
            "dynamic schema did not settle",
        )))
    }
}

/// A write body without the owner column of a per-user table: the store takes the owner from
/// the scope, never from the body. A body naming the caller (or null) is accepted; one naming
/// anyone else is 400 `owner_mismatch`, before any row is looked at (so it reveals nothing).
fn without_owner(
    config: &TableConfig,
    scope: &Scope,
    mut body: Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let (Some(owner), Scope::Owner(user)) = (&config.owner_column, scope) else {
        return Ok(body);
    };
    let keys: Vec<String> = body
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(owner))
        .cloned()
        .collect();
    for key in keys {
        match body.remove(&key) {
            Some(Value::Null) | None => {}
            Some(Value::String(s)) if s == *user => {}
            Some(_) => return Err(ApiError::OwnerMismatch(owner.clone())),
        }
    }
    Ok(body)
}

/// Whether a list request failed because it names a column the schema lacks.
fn names_unknown_column(e: &ApiError) -> bool {
    match e {
        ApiError::UnknownSelect(_) => true,
        ApiError::Lower(l) => l.code == ErrorCode::UnknownColumn,
        _ => false,
    }
}

/// Whether a list request is a sync pull: ordered by `updatedAt` first, as every incremental
/// pull is (the official clients' and ours).
fn is_pull(raw_query: &str) -> bool {
    raw_query_value(raw_query, "$orderby", false).is_some_and(|v| {
        percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .trim_start()
            .starts_with(tablesync_protocol::system::UPDATED_AT)
    })
}

/// The rows of a page the store encoded (feed reads are a few short rows; the table routes
/// send the encoded page as it is).
fn decoded(page: crate::store::EncodedPage) -> Result<Vec<Item>, ApiError> {
    serde_json::from_slice(&page.into_json()).map_err(|e| {
        ApiError::Store(StoreError::new(
            StoreErrorKind::Internal,
            format!("the change feed could not read an encoded page: {e}"),
        ))
    })
}

/// A feed row as a change event; a row without readable system fields is our bug (500).
fn change_of(table: &Arc<str>, item: Item) -> Result<Change, ApiError> {
    use tablesync_protocol::system::{ID, UPDATED_AT, VERSION};
    let broken = |what: &str| {
        ApiError::Store(StoreError::new(
            StoreErrorKind::Internal,
            format!("a row of {table} read by the change feed has no usable {what}"),
        ))
    };
    let updated_at = item
        .get(UPDATED_AT)
        .and_then(Value::as_str)
        .and_then(|t| tablesync_protocol::time::parse_timestamp(t).ok())
        .ok_or_else(|| broken(UPDATED_AT))?;
    let version = match item.get(VERSION) {
        Some(Value::String(v)) => v.clone(),
        _ => return Err(broken(VERSION)),
    };
    let id = match item.get(ID) {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => return Err(broken(ID)),
    };
    Ok(Change {
        table: Arc::clone(table),
        id,
        updated_at,
        version,
        deleted: is_deleted(&item),
    })
}

fn is_deleted(item: &Item) -> bool {
    item.get(tablesync_protocol::system::DELETED) == Some(&Value::Bool(true))
}

/// Map a conditional write's outcome to the item or the error to answer with.
fn written(outcome: WriteOutcome, on_mismatch: MismatchStatus) -> Result<Item, ApiError> {
    match outcome {
        WriteOutcome::Written(item) => Ok(item),
        WriteOutcome::NotFound => Err(ApiError::ItemNotFound),
        WriteOutcome::VersionMismatch(item) | WriteOutcome::AlreadyExists(item) => {
            Err(match on_mismatch {
                MismatchStatus::PreconditionFailed => ApiError::PreconditionFailed(Box::new(item)),
                MismatchStatus::Conflict => ApiError::Conflict(Box::new(item)),
            })
        }
    }
}

/// The raw (still percent-encoded) value of the first `key` pair in a query string; the key is
/// percent-decoded before comparing, case-insensitively when `ignore_case`.
pub fn raw_query_value<'a>(raw: &'a str, key: &str, ignore_case: bool) -> Option<&'a str> {
    raw.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(&k.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let same = if ignore_case {
            k.eq_ignore_ascii_case(key)
        } else {
            k == key
        };
        same.then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_query_values() {
        let q = "a=1&%24filter=x%20eq%201&zumo-api-version=2.0.0&flag";
        assert_eq!(raw_query_value(q, "$filter", false), Some("x%20eq%201"));
        assert_eq!(raw_query_value(q, "ZUMO-API-VERSION", true), Some("2.0.0"));
        assert_eq!(raw_query_value(q, "ZUMO-API-VERSION", false), None);
        assert_eq!(raw_query_value(q, "flag", false), Some(""));
        assert_eq!(raw_query_value("", "a", false), None);
    }
}
