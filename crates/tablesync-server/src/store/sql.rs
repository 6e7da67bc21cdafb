//! The SQL both stores share: statement text, parameter lists, row → item conversion and the
//! classification of writes that matched no row. No driver code; `sqlite.rs` and `postgres.rs`
//! bind, run and read.
//!
//! The dialects differ here only in a few spellings, all decided by the `dialect_*` functions
//! at the top of this module:
//!
//! | | SQLite | PostgreSQL |
//! |---|---|---|
//! | placeholder | `?N` | `$N::type` (every placeholder carries a cast, as the protocol crate's do) |
//! | boolean literal | `1` / `0` | `TRUE` / `FALSE` |
//! | ascending sort key | `"c" ASC` | `"c" ASC NULLS FIRST` (the indexes' null placement, so ORDER BY can read them in order) |
//! | selected date column | `"c"` (stored in wire form) | `"c"` (a binary `timestamptz` the store renders in wire form) |
//!
//! The owner predicate of per-user tables ([`Scope::Owner`]) is written here too, once, for
//! every statement that reads or writes rows: it is ANDed outside the parsed `$filter` (which
//! the protocol crate wrapped in parentheses), so no `or` in a filter can reach another user's
//! rows; a scope that does not fit the table (a per-user table read without an owner) becomes a
//! condition that matches nothing.
//!
//! Everything else (which columns, in which order, which conditions, which parameter goes where)
//! is written once, so both stores answer a request with the same statement shape: the explain
//! tests (`tests/it/explain.rs`) check that the shapes stay index-friendly on both.

use serde_json::Value;
use tablesync_protocol::odata::sql::{quote_ident, ColumnType, Dialect, SqlValue};
use tablesync_protocol::system;

use super::{ListQuery, Scope, Stamp, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use crate::config::IdType;
use crate::table::{Column, Item, TableSchema};

/// The clock table: one row per served table, holding the last stamp handed out.
pub(super) const CLOCK_TABLE: &str = "tablesync_clock";

/// The clock rows of per-user tables: one per (table, owner), made by the owner's first write,
/// so writers of different users never queue behind each other.
pub(super) const OWNER_CLOCK_TABLE: &str = "tablesync_owner_clock";

/// The SQL type a placeholder stands for (spelled out as a cast on PostgreSQL only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cast {
    /// `::text`
    Text,
    /// `::double precision`
    Double,
    /// `::boolean`
    Boolean,
    /// `::timestamptz` (wire-form text on SQLite)
    Timestamp,
    /// `::bigint` (LIMIT and OFFSET, integer ids)
    BigInt,
}

impl Cast {
    /// The cast for a value of a column of type `ty`.
    pub(super) fn of(ty: ColumnType) -> Cast {
        match ty {
            ColumnType::String => Cast::Text,
            ColumnType::Number => Cast::Double,
            ColumnType::Boolean => Cast::Boolean,
            ColumnType::Date => Cast::Timestamp,
        }
    }

    /// The cast for `value` written to column `name`: the column's type, or for a column the
    /// schema does not know (yet), the value's own.
    fn for_value(schema: &TableSchema, name: &str, value: &SqlValue) -> Cast {
        match schema.column(name) {
            Some(column) => Cast::of(column.ty),
            None => match value {
                SqlValue::Null | SqlValue::Text(_) => Cast::Text,
                SqlValue::Bool(_) => Cast::Boolean,
                SqlValue::Int(_) | SqlValue::Real(_) => Cast::Double,
                SqlValue::Timestamp(_) => Cast::Timestamp,
            },
        }
    }

    fn pg_name(self) -> &'static str {
        match self {
            Cast::Text => "text",
            Cast::Double => "double precision",
            Cast::Boolean => "boolean",
            Cast::Timestamp => "timestamptz",
            Cast::BigInt => "bigint",
        }
    }
}

/// Placeholder number `index` (from 1) for a value of type `cast`.
fn dialect_param(dialect: Dialect, index: usize, cast: Cast) -> String {
    match dialect {
        Dialect::Sqlite => format!("?{index}"),
        Dialect::Postgres => format!("${index}::{}", cast.pg_name()),
    }
}

/// The literal for a boolean (`deleted` is INTEGER 0/1 on SQLite, BOOLEAN on PostgreSQL).
fn dialect_bool(dialect: Dialect, value: bool) -> &'static str {
    match (dialect, value) {
        (Dialect::Sqlite, true) => "1",
        (Dialect::Sqlite, false) => "0",
        (Dialect::Postgres, true) => "TRUE",
        (Dialect::Postgres, false) => "FALSE",
    }
}

/// An ascending sort key on `column` (a quoted identifier). PostgreSQL gets `NULLS FIRST` to
/// match the indexes (the columns are NOT NULL, so it only matters to the planner); SQLite sorts
/// nulls first anyway.
fn dialect_ascending(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("{column} ASC"),
        Dialect::Postgres => format!("{column} ASC NULLS FIRST"),
    }
}

/// One selected column. Every column is selected as stored: SQLite stores dates in the wire
/// form already; PostgreSQL sends a `timestamptz` as 8 binary bytes, which the store renders in
/// the wire form itself (`to_char` in the SELECT cost the database about a third of a 1000-row
/// page's time).
fn dialect_select_expr(_dialect: Dialect, name: &str, _ty: ColumnType) -> String {
    quote_ident(name)
}

/// The system columns after the user columns, in item order, with their types.
const TRAILING_SYSTEM_COLUMNS: [(&str, ColumnType); 4] = [
    (system::CREATED_AT, ColumnType::Date),
    (system::UPDATED_AT, ColumnType::Date),
    (system::VERSION, ColumnType::String),
    (system::DELETED, ColumnType::Boolean),
];

/// Every selected column of an item, in order: `id` (a number on an integer-id table), the user
/// columns, then the trailing system columns.
pub(super) fn item_columns(schema: &TableSchema) -> impl Iterator<Item = (&str, ColumnType)> {
    std::iter::once((system::ID, schema.id_column_type()))
        .chain(schema.columns.iter().map(|c| (c.name.as_str(), c.ty)))
        .chain(TRAILING_SYSTEM_COLUMNS)
}

/// `"id", <user columns>, "createdAt", "updatedAt", "version", "deleted"`: the order of an item.
pub(super) fn select_list(dialect: Dialect, schema: &TableSchema) -> String {
    item_columns(schema)
        .map(|(name, ty)| dialect_select_expr(dialect, name, ty))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Read a row selected with [`select_list`]: `value(index, type)` is the JSON of one column.
pub(super) fn read_item<E>(
    schema: &TableSchema,
    mut value: impl FnMut(usize, ColumnType) -> Result<Value, E>,
) -> Result<Item, E> {
    let mut item = Item::new();
    for (index, (name, ty)) in item_columns(schema).enumerate() {
        item.insert(name.to_owned(), value(index, ty)?);
    }
    Ok(item)
}

/// An id as bound to a placeholder, with its cast: text on a string-id table, a 64-bit integer
/// on an integer-id table. `App` only passes ids it checked ([`crate::table::check_table_id`]);
/// anything else binds NULL, which `"id" = NULL` never matches.
fn id_param(schema: &TableSchema, id: &str) -> (SqlValue, Cast) {
    match schema.id_type {
        IdType::String => (SqlValue::Text(id.to_owned()), Cast::Text),
        IdType::Integer => (
            id.parse::<i64>().map_or(SqlValue::Null, SqlValue::Int),
            Cast::BigInt,
        ),
    }
}

/// The owner predicate a statement on `schema` needs within `scope`.
enum OwnerFilter<'a> {
    /// A shared table read in the shared scope: no predicate.
    Everything,
    /// A per-user table: `"<column>" = <user>`.
    Owner { column: &'a str, user: &'a str },
    /// The scope does not fit the table (a bug in the caller): match nothing.
    Nothing,
}

fn owner_filter<'a>(schema: &'a TableSchema, scope: &'a Scope) -> OwnerFilter<'a> {
    match (&schema.owner_column, scope) {
        (None, Scope::Shared) => OwnerFilter::Everything,
        (Some(column), Scope::Owner(user)) => OwnerFilter::Owner { column, user },
        _ => OwnerFilter::Nothing,
    }
}

/// The owner condition of `scope` on `schema` with its parameter pushed onto `params` (numbered
/// `params.len()` after the push), or None when every row is in scope.
fn owner_condition(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    params: &mut Vec<SqlValue>,
) -> Option<String> {
    match owner_filter(schema, scope) {
        OwnerFilter::Everything => None,
        OwnerFilter::Owner { column, user } => {
            params.push(SqlValue::Text(user.to_owned()));
            Some(format!(
                "{} = {}",
                quote_ident(column),
                dialect_param(dialect, params.len(), Cast::Text)
            ))
        }
        OwnerFilter::Nothing => Some(dialect_bool(dialect, false).to_owned()),
    }
}

/// ` AND <owner condition>` (see [`owner_condition`]) or nothing.
fn and_owner(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    params: &mut Vec<SqlValue>,
) -> String {
    owner_condition(dialect, schema, scope, params)
        .map(|c| format!(" AND {c}"))
        .unwrap_or_default()
}

/// `SELECT <select list> FROM <table> WHERE "id" = <param 1> [AND <owner> = <param 2>]` and
/// its parameters.
pub(super) fn get_row_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
) -> (String, Vec<SqlValue>) {
    let (id, id_cast) = id_param(schema, id);
    let mut params = vec![id];
    let sql = format!(
        "SELECT {} FROM {} WHERE \"id\" = {}{}",
        select_list(dialect, schema),
        quote_ident(&schema.name),
        dialect_param(dialect, 1, id_cast),
        and_owner(dialect, schema, scope, &mut params)
    );
    (sql, params)
}

/// The SQL of a list request: the page query and the count query with their parameters.
pub(super) struct ListSql {
    /// `SELECT … ORDER BY … LIMIT … OFFSET …`.
    pub sql: String,
    /// The page query's parameters: the filter's, the order's, the owner, then LIMIT (PostgreSQL
    /// only; SQLite's is a literal) and OFFSET.
    pub params: Vec<SqlValue>,
    /// `SELECT COUNT(*) FROM … [WHERE …]`: every matching row (`$inlinecount`).
    pub count_sql: String,
    /// The count query's parameters: the filter's, then the owner.
    count_params: Vec<SqlValue>,
}

impl ListSql {
    /// The count query's parameters.
    pub(super) fn count_params(&self) -> &[SqlValue] {
        &self.count_params
    }
}

/// The page query of a list request. Default order (`createdAt`, `id`); a requested order gets
/// `id` as the final tie-breaker unless it already sorts by `id`.
///
/// The owner condition's placeholder follows the filter's and the order's placeholders (the
/// protocol crate numbered those from 1) in the page query, and the filter's in the count
/// query, which has no ORDER BY: so both are numbered without gaps.
pub(super) fn list_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    query: &ListQuery,
) -> ListSql {
    let mut params: Vec<SqlValue> = Vec::new();
    if let Some(filter) = &query.filter {
        params.extend(filter.params.iter().cloned());
    }
    // `(owner) AND (filter) AND deleted`: the filter is parenthesised, so it cannot widen the
    // owner condition.
    let where_clause = |params: &mut Vec<SqlValue>| {
        let mut conditions = Vec::new();
        if let Some(owner) = owner_condition(dialect, schema, scope, params) {
            conditions.push(owner);
        }
        if let Some(filter) = &query.filter {
            conditions.push(format!("({})", filter.sql));
        }
        if !query.include_deleted {
            conditions.push(format!("\"deleted\" = {}", dialect_bool(dialect, false)));
        }
        if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        }
    };
    let mut count_params = params.clone();
    let count_where = where_clause(&mut count_params);
    if let Some(order) = &query.order_by {
        params.extend(order.params.iter().cloned());
    }
    let page_where = where_clause(&mut params);
    let id_ascending = dialect_ascending(dialect, "\"id\"");
    let order = match &query.order_by {
        Some(order) => {
            if sorts_by_id(&order.sql) {
                // Already unique; a repeated `id` term would keep the planner from reading
                // the (…, id) index in order.
                order.sql.clone()
            } else {
                format!("{}, {id_ascending}", order.sql)
            }
        }
        None => format!(
            "{}, {id_ascending}",
            dialect_ascending(dialect, "\"createdAt\"")
        ),
    };
    let top = i64::try_from(query.top).unwrap_or(i64::MAX);
    let limit = match dialect {
        // A literal, not a parameter: SQLite's planner reads a bound LIMIT's value, so every new
        // binding of it expires the statement and each page parsed and planned its statement
        // again (`sqlite3Reprepare` inside the first step). A client pages with one `$top`, so
        // the statement cache still holds one statement per page shape.
        Dialect::Sqlite => top.to_string(),
        Dialect::Postgres => {
            params.push(SqlValue::Int(top));
            dialect_param(dialect, params.len(), Cast::BigInt)
        }
    };
    params.push(SqlValue::Int(i64::try_from(query.skip).unwrap_or(i64::MAX)));
    let offset = dialect_param(dialect, params.len(), Cast::BigInt);
    let table = quote_ident(&schema.name);
    let sql = format!(
        "SELECT {} FROM {table}{page_where} ORDER BY {order} LIMIT {limit} OFFSET {offset}",
        select_list(dialect, schema),
    );
    ListSql {
        sql,
        params,
        count_sql: format!("SELECT COUNT(*) FROM {table}{count_where}"),
        count_params,
    }
}

/// Whether a lowered `$orderby` already has `id` as one of its sort keys (then the stores'
/// `id` tie-breaker is redundant: ids are unique).
pub(super) fn sorts_by_id(order_sql: &str) -> bool {
    order_sql
        .split(", ")
        .any(|term| term.starts_with("\"id\" ASC") || term.starts_with("\"id\" DESC"))
}

/// An `INSERT … RETURNING <select list>` of a new row and its parameters: `id`, the stamp
/// (`createdAt` = `updatedAt`), `deleted` false, the owner of a per-user table (from `scope`;
/// a value for the owner column among `values` is dropped) and the given values. On an
/// integer-id table `id` is not written (the database assigns it) and is ignored.
///
/// A taken id (per owner on a per-user table) is `ON CONFLICT … DO NOTHING`: the statement
/// returns no row and the caller reads the stored one. Both stores insert first and look only
/// then, because a taken id is rare; on PostgreSQL a concurrent insert of the same id may also
/// commit first, which `DO NOTHING` waits for.
pub(super) fn insert_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    stamp: Stamp,
    values: &[(String, SqlValue)],
) -> (String, Vec<SqlValue>) {
    insert_rows_sql(dialect, schema, scope, &[NewRow { id, stamp, values }])
}

/// One row of [`insert_rows_sql`].
pub(super) struct NewRow<'a> {
    pub id: &'a str,
    pub stamp: Stamp,
    pub values: &'a [(String, SqlValue)],
}

/// [`insert_sql`] of several rows in one statement (`VALUES (…), (…)`; PostgreSQL's group
/// commit writes a group's inserts so). Every row must carry values for the same columns, in the
/// same order, as the first one, whose names make the column list. One row gives exactly
/// [`insert_sql`]'s statement.
pub(super) fn insert_rows_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    rows: &[NewRow<'_>],
) -> (String, Vec<SqlValue>) {
    let owner = match owner_filter(schema, scope) {
        OwnerFilter::Owner { column, user } => Some((column, user)),
        OwnerFilter::Everything | OwnerFilter::Nothing => None,
    };
    let is_owner = |name: &str| owner.is_some_and(|(column, _)| column == name);
    let mut columns = String::new();
    if schema.id_type == IdType::String {
        columns.push_str("\"id\", ");
    }
    columns.push_str("\"createdAt\", \"updatedAt\", \"version\", \"deleted\"");
    if let Some((column, _)) = owner {
        columns.push_str(", ");
        columns.push_str(&quote_ident(column));
    }
    if let Some(first) = rows.first() {
        for (name, _) in first.values.iter().filter(|(name, _)| !is_owner(name)) {
            columns.push_str(", ");
            columns.push_str(&quote_ident(name));
        }
    }
    let mut params = Vec::new();
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let mut placeholders = String::new();
        if schema.id_type == IdType::String {
            params.push(SqlValue::Text(row.id.to_owned()));
            placeholders.push_str(&dialect_param(dialect, params.len(), Cast::Text));
            placeholders.push_str(", ");
        }
        let stamp_param = dialect_param(dialect, params.len() + 1, Cast::Timestamp);
        placeholders.push_str(&format!(
            "{stamp_param}, {stamp_param}, {}, {}",
            dialect_param(dialect, params.len() + 2, Cast::Text),
            dialect_bool(dialect, false),
        ));
        params.push(SqlValue::Timestamp(row.stamp.updated_at));
        params.push(SqlValue::Text(row.stamp.version.clone()));
        if let Some((_, user)) = owner {
            params.push(SqlValue::Text(user.to_owned()));
            placeholders.push_str(", ");
            placeholders.push_str(&dialect_param(dialect, params.len(), Cast::Text));
        }
        for (name, value) in row.values.iter().filter(|(name, _)| !is_owner(name)) {
            params.push(value.clone());
            placeholders.push_str(", ");
            placeholders.push_str(&dialect_param(
                dialect,
                params.len(),
                Cast::for_value(schema, name, value),
            ));
        }
        tuples.push(format!("({placeholders})"));
    }
    let conflict = match owner {
        None => " ON CONFLICT (\"id\") DO NOTHING".to_owned(),
        Some((column, _)) => format!(" ON CONFLICT ({}, \"id\") DO NOTHING", quote_ident(column)),
    };
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES {}{conflict} RETURNING {}",
        quote_ident(&schema.name),
        tuples.join(", "),
        select_list(dialect, schema)
    );
    (sql, params)
}

/// Which conditional `UPDATE` a write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CasKind {
    /// Set columns on a live row.
    Update,
    /// Tombstone a live row.
    SoftDelete,
    /// Clear the tombstone of a deleted row.
    Undelete,
}

/// A stamped compare-and-swap `UPDATE … SET … WHERE id = ? AND deleted = ? [AND version = ?]
/// [AND owner = ?] RETURNING <select list>` and its parameters. The owner column is never
/// assigned (an update cannot hand a row to another user).
#[allow(clippy::too_many_arguments)]
pub(super) fn cas_update_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    assignments: &[(String, SqlValue)],
    kind: CasKind,
    expected: Option<&str>,
    stamp: Stamp,
) -> (String, Vec<SqlValue>) {
    let mut params: Vec<SqlValue> = Vec::with_capacity(assignments.len() + 4);
    let mut sets: Vec<String> = Vec::with_capacity(assignments.len() + 3);
    let owner_column = schema.owner_column.as_deref();
    for (name, value) in assignments
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != owner_column)
    {
        params.push(value.clone());
        sets.push(format!(
            "{} = {}",
            quote_ident(name),
            dialect_param(dialect, params.len(), Cast::for_value(schema, name, value))
        ));
    }
    match kind {
        CasKind::SoftDelete => sets.push(format!("\"deleted\" = {}", dialect_bool(dialect, true))),
        CasKind::Undelete => sets.push(format!("\"deleted\" = {}", dialect_bool(dialect, false))),
        CasKind::Update => {}
    }
    params.push(SqlValue::Timestamp(stamp.updated_at));
    sets.push(format!(
        "\"updatedAt\" = {}",
        dialect_param(dialect, params.len(), Cast::Timestamp)
    ));
    params.push(SqlValue::Text(stamp.version));
    sets.push(format!(
        "\"version\" = {}",
        dialect_param(dialect, params.len(), Cast::Text)
    ));
    let (id, id_cast) = id_param(schema, id);
    params.push(id);
    let id_param = dialect_param(dialect, params.len(), id_cast);
    let version = version_condition(dialect, &mut params, expected);
    let condition = format!(
        "\"id\" = {id_param} AND \"deleted\" = {}{version}{}",
        dialect_bool(dialect, kind == CasKind::Undelete),
        and_owner(dialect, schema, scope, &mut params)
    );
    let sql = format!(
        "UPDATE {} SET {} WHERE {condition} RETURNING {}",
        quote_ident(&schema.name),
        sets.join(", "),
        select_list(dialect, schema)
    );
    (sql, params)
}

/// One row of [`cas_update_rows_sql`].
pub(super) struct SwapRow<'a> {
    pub id: &'a str,
    pub stamp: Stamp,
    pub values: &'a [(String, SqlValue)],
    pub expected: Option<&'a str>,
}

/// The alias of the table in [`cas_update_rows_sql`].
const ROWS_TARGET: &str = "\"tablesync_t\"";
/// The alias of its `VALUES` list.
const ROWS_SOURCE: &str = "\"tablesync_v\"";

/// [`cas_update_sql`] of several rows in one statement, on PostgreSQL (its group commit runs a
/// group's consecutive updates so): `UPDATE … FROM (VALUES (…), (…))`, one `VALUES` row a write
/// with its id, its expected version (NULL: any), its stamp and its values, each row updated
/// only where its own compare-and-swap holds. Every row must carry values for the same columns,
/// in the same order, as the first one, and a different id (one statement updates a row once).
/// The returned rows come in no particular order: match them by id. String-id tables only.
pub(super) fn cas_update_rows_sql(
    schema: &TableSchema,
    scope: &Scope,
    rows: &[SwapRow<'_>],
) -> (String, Vec<SqlValue>) {
    let dialect = Dialect::Postgres;
    let owner_column = schema.owner_column.as_deref();
    fn assigned<'v>(
        values: &'v [(String, SqlValue)],
        owner_column: Option<&'v str>,
    ) -> impl Iterator<Item = &'v (String, SqlValue)> {
        values
            .iter()
            .filter(move |(name, _)| Some(name.as_str()) != owner_column)
    }
    let first: &[(String, SqlValue)] = rows.first().map_or(&[], |r| r.values);
    // The source's columns: the id and expected version under names no system column has,
    // then the stamp and values under their own names (a user column that clashes makes the
    // statement fail, and the group then runs its writes one by one).
    let mut source_columns = vec![
        "\"tablesync_id\"".to_owned(),
        "\"tablesync_expected\"".to_owned(),
        "\"updatedAt\"".to_owned(),
        "\"version\"".to_owned(),
    ];
    let mut sets = Vec::new();
    for (name, _) in assigned(first, owner_column) {
        let column = quote_ident(name);
        sets.push(format!("{column} = {ROWS_SOURCE}.{column}"));
        source_columns.push(column);
    }
    sets.push(format!("\"updatedAt\" = {ROWS_SOURCE}.\"updatedAt\""));
    sets.push(format!("\"version\" = {ROWS_SOURCE}.\"version\""));
    let mut params = Vec::new();
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let mut cells = Vec::with_capacity(source_columns.len());
        let mut push = |params: &mut Vec<SqlValue>, value: SqlValue, cast: Cast| {
            params.push(value);
            cells.push(dialect_param(dialect, params.len(), cast));
        };
        push(&mut params, SqlValue::Text(row.id.to_owned()), Cast::Text);
        let expected = row
            .expected
            .map_or(SqlValue::Null, |v| SqlValue::Text(v.to_owned()));
        push(&mut params, expected, Cast::Text);
        push(
            &mut params,
            SqlValue::Timestamp(row.stamp.updated_at),
            Cast::Timestamp,
        );
        push(
            &mut params,
            SqlValue::Text(row.stamp.version.clone()),
            Cast::Text,
        );
        for (name, value) in assigned(row.values, owner_column) {
            push(
                &mut params,
                value.clone(),
                Cast::for_value(schema, name, value),
            );
        }
        tuples.push(format!("({})", cells.join(", ")));
    }
    let owner = match owner_filter(schema, scope) {
        OwnerFilter::Everything => String::new(),
        OwnerFilter::Owner { column, user } => {
            params.push(SqlValue::Text(user.to_owned()));
            format!(
                " AND {ROWS_TARGET}.{} = {}",
                quote_ident(column),
                dialect_param(dialect, params.len(), Cast::Text)
            )
        }
        OwnerFilter::Nothing => " AND FALSE".to_owned(),
    };
    let returning = item_columns(schema)
        .map(|(name, _)| format!("{ROWS_TARGET}.{}", quote_ident(name)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE {} AS {ROWS_TARGET} SET {} FROM (VALUES {}) AS {ROWS_SOURCE} ({}) \
         WHERE {ROWS_TARGET}.\"id\" = {ROWS_SOURCE}.\"tablesync_id\" AND {ROWS_TARGET}.\"deleted\" = FALSE \
         AND ({ROWS_SOURCE}.\"tablesync_expected\" IS NULL OR {ROWS_TARGET}.\"version\" = {ROWS_SOURCE}.\"tablesync_expected\"){owner} \
         RETURNING {returning}",
        quote_ident(&schema.name),
        sets.join(", "),
        tuples.join(", "),
        source_columns.join(", "),
    );
    (sql, params)
}

/// `DELETE FROM … WHERE id = ? AND deleted = false [AND version = ?] RETURNING <select list>`
/// and its parameters.
pub(super) fn hard_delete_sql(
    dialect: Dialect,
    schema: &TableSchema,
    scope: &Scope,
    id: &str,
    expected: Option<&str>,
) -> (String, Vec<SqlValue>) {
    let (id, id_cast) = id_param(schema, id);
    let mut params = vec![id];
    let version = version_condition(dialect, &mut params, expected);
    let condition = format!(
        "\"id\" = {} AND \"deleted\" = {}{version}{}",
        dialect_param(dialect, 1, id_cast),
        dialect_bool(dialect, false),
        and_owner(dialect, schema, scope, &mut params)
    );
    let sql = format!(
        "DELETE FROM {} WHERE {condition} RETURNING {}",
        quote_ident(&schema.name),
        select_list(dialect, schema)
    );
    (sql, params)
}

/// ` AND "version" = ?` with `expected` added to `params`, or nothing when any version goes.
fn version_condition(
    dialect: Dialect,
    params: &mut Vec<SqlValue>,
    expected: Option<&str>,
) -> String {
    match expected {
        Some(version) => {
            params.push(SqlValue::Text(version.to_owned()));
            format!(
                " AND \"version\" = {}",
                dialect_param(dialect, params.len(), Cast::Text)
            )
        }
        None => String::new(),
    }
}

/// The statement that takes the next stamp of a per-user table's owner, `UPDATE`-ing (or, on
/// the owner's first write, creating) their row of [`OWNER_CLOCK_TABLE`]: the same rule as the
/// table clock (`max(now, last + 1 ms)` and the next counter), one statement, whose row lock
/// orders that owner's writers only. Parameters: table name, owner. Returns (ms, counter).
/// PostgreSQL without commit-order stamps takes no clock row at all (see `postgres.rs`).
pub(super) fn owner_stamp_sql(dialect: Dialect, commit_order: bool) -> String {
    let (now, greatest, interval_ms, cast) = match dialect {
        Dialect::Sqlite => (
            "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            "max",
            "1",
            "",
        ),
        Dialect::Postgres => (
            "date_trunc('milliseconds', clock_timestamp())",
            "GREATEST",
            "interval '1 millisecond'",
            "::text",
        ),
    };
    let next = if commit_order {
        format!("{greatest}({now}, c.last_updated_at + {interval_ms})")
    } else {
        now.to_owned()
    };
    let returned = match dialect {
        Dialect::Sqlite => "last_updated_at, last_version",
        Dialect::Postgres => "(extract(epoch FROM last_updated_at) * 1000)::bigint, last_version",
    };
    let (p1, p2) = match dialect {
        Dialect::Sqlite => ("?1".to_owned(), "?2".to_owned()),
        Dialect::Postgres => (format!("$1{cast}"), format!("$2{cast}")),
    };
    format!(
        "INSERT INTO {OWNER_CLOCK_TABLE} AS c (table_name, owner, last_updated_at, last_version) \
         VALUES ({p1}, {p2}, {now}, 1) ON CONFLICT (table_name, owner) DO UPDATE \
         SET last_updated_at = {next}, last_version = c.last_version + 1 RETURNING {returned}"
    )
}

/// Whether a write on `schema` in `scope` is stamped through the owner's clock row (per-user
/// tables) rather than the table's.
pub(super) fn stamps_per_owner<'a>(schema: &TableSchema, scope: &'a Scope) -> Option<&'a str> {
    match (&schema.owner_column, scope) {
        (Some(_), Scope::Owner(user)) => Some(user),
        _ => None,
    }
}

/// The primary key a table must have: (owner, id) for a per-user table, (id) otherwise. A table
/// made for the other kind is refused at start instead of being served wrongly (a shared
/// table's rows have no owner; a per-user table's ids are not unique).
pub(super) fn check_primary_key(schema: &TableSchema, stored: &[String]) -> StoreResult<()> {
    let expected: Vec<&str> = match &schema.owner_column {
        Some(owner) => vec![owner.as_str(), system::ID],
        None => vec![system::ID],
    };
    let same = stored.len() == expected.len()
        && stored
            .iter()
            .zip(&expected)
            .all(|(s, e)| s.eq_ignore_ascii_case(e));
    if same {
        return Ok(());
    }
    let shown = |cols: &[&str]| cols.join(", ");
    let stored_names: Vec<&str> = stored.iter().map(String::as_str).collect();
    Err(StoreError::new(
        StoreErrorKind::Schema,
        format!(
            "table {} has the primary key ({}) but its configuration needs ({}): {}; \
             migrate its rows into a new table instead",
            schema.name,
            shown(&stored_names),
            shown(&expected),
            if schema.owner_column.is_some() {
                "owner_column was added to a table that already holds shared rows"
            } else {
                "the table holds per-user rows but owner_column is not configured"
            }
        ),
    ))
}

/// The stored `id` column must have the configured id type: a table made with string ids is
/// not served as an integer-id table or back (its rows would not fit). `stored` is the (name,
/// reported type) list of the table's columns; `is_integer` recognises the store's integer
/// type name.
pub(super) fn check_id_column(
    schema: &TableSchema,
    stored: &[(String, String)],
    is_integer: fn(&str) -> bool,
) -> StoreResult<()> {
    let Some((_, ty)) = stored.iter().find(|(n, _)| n == system::ID) else {
        return Err(StoreError::new(
            StoreErrorKind::Schema,
            format!("table {} has no id column", schema.name),
        ));
    };
    let integer = is_integer(ty);
    let configured = schema.id_type == IdType::Integer;
    if integer == configured {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::Schema,
        format!(
            "table {} stores {} ids (id is {ty}) but is configured with id_type = \"{}\"; \
             migrate its rows into a new table instead",
            schema.name,
            if integer { "integer" } else { "string" },
            if configured { "integer" } else { "string" },
        ),
    ))
}

/// Names of declared indexes start with this; at start a store drops an index of a table with
/// this prefix that the configuration no longer declares.
pub(super) const DECLARED_INDEX_PREFIX: &str = "ixd_";

/// One declared secondary index ([`TableSchema::indexes`]) of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DeclaredIndex {
    /// `ixd_<table prefix>_<hash of the table and the key>`: short (PostgreSQL truncates names
    /// at 63 bytes), unique per table and key, and stable, so an unchanged declaration finds
    /// its index and a changed one makes a new index (the old one is dropped).
    pub name: String,
    /// `CREATE INDEX IF NOT EXISTS …`.
    pub create: String,
}

/// The declared indexes of `schema`. Each key is the owner (per-user tables: every read is
/// within one owner), the declared columns, then `id` unless declared (every list order ends
/// with `id`, so an index in list order needs no sort for the tie-breaker); ascending with
/// PostgreSQL's `NULLS FIRST`, the placement the lowered `ORDER BY` asks for.
pub(super) fn declared_indexes(dialect: Dialect, schema: &TableSchema) -> Vec<DeclaredIndex> {
    let table = quote_ident(&schema.name);
    schema
        .indexes
        .iter()
        .map(|columns| {
            let mut key: Vec<&str> = Vec::with_capacity(columns.len() + 2);
            if let Some(owner) = &schema.owner_column {
                key.push(owner);
            }
            key.extend(columns.iter().map(String::as_str));
            if !columns.iter().any(|c| c == system::ID) {
                key.push(system::ID);
            }
            let key_sql = key
                .iter()
                .map(|c| dialect_ascending(dialect, &quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let hash = fnv1a(format!("{}\0{key_sql}", schema.name).as_bytes());
            let prefix: String = schema.name.chars().take(24).collect();
            let name = format!("{DECLARED_INDEX_PREFIX}{prefix}_{hash:016x}");
            let create = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} ({key_sql})",
                quote_ident(&name)
            );
            DeclaredIndex { name, create }
        })
        .collect()
}

/// The declared indexes found on a table (`stored`: its index names) that `wanted` no longer
/// holds: to drop. Only names with [`DECLARED_INDEX_PREFIX`] are ever dropped.
pub(super) fn indexes_to_drop<'s>(stored: &'s [String], wanted: &[DeclaredIndex]) -> Vec<&'s str> {
    stored
        .iter()
        .filter(|name| name.starts_with(DECLARED_INDEX_PREFIX))
        .filter(|name| !wanted.iter().any(|w| &w.name == *name))
        .map(String::as_str)
        .collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether a row is a tombstone.
pub(super) fn is_deleted(item: &Item) -> bool {
    item.get(system::DELETED) == Some(&Value::Bool(true))
}

fn version_of(item: &Item) -> Option<&str> {
    item.get(system::VERSION).and_then(Value::as_str)
}

/// What a conditional write that matched no row answers, given the row as it is now (read in
/// the same transaction). `kind` is the compare-and-swap update's, `None` for a hard delete
/// (which, like an update, needs a live row).
pub(super) fn miss_outcome(
    kind: Option<CasKind>,
    current: Option<Item>,
    expected: Option<&str>,
) -> WriteOutcome {
    let undelete = kind == Some(CasKind::Undelete);
    match current {
        None => WriteOutcome::NotFound,
        // Undelete of a live row: nothing to do, answer with it (when the version fits).
        Some(row)
            if undelete
                && !is_deleted(&row)
                && (expected.is_none() || expected == version_of(&row)) =>
        {
            WriteOutcome::Written(row)
        }
        // The other writes need a live row: a tombstone is not found.
        Some(row) if !undelete && is_deleted(&row) => WriteOutcome::NotFound,
        Some(row) => WriteOutcome::VersionMismatch(row),
    }
}

/// Whether column `name` (as stored) is known: a system column or one of `columns`.
fn is_known(name: &str, columns: &[Column]) -> bool {
    system::ALL.iter().any(|s| s.eq_ignore_ascii_case(name))
        || columns.iter().any(|c| c.name.eq_ignore_ascii_case(name))
}

/// Whether a column of this name is among `stored` (name, declared type) pairs.
pub(super) fn is_stored(stored: &[(String, String)], name: &str) -> bool {
    stored.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// How a store names and recognises its column types.
pub(super) struct StoredTypes {
    /// The type `ALTER TABLE … ADD COLUMN` declares for a protocol type.
    pub declared: fn(ColumnType) -> &'static str,
    /// The protocol type of a stored column of a type the database reports, if it is one a
    /// dynamic column can have.
    pub protocol: fn(&str) -> Option<ColumnType>,
}

impl StoredTypes {
    /// `ALTER TABLE <table> ADD COLUMN <column> <declared type>`.
    pub(super) fn add_column_sql(&self, table: &str, column: &Column) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            quote_ident(table),
            quote_ident(&column.name),
            (self.declared)(column.ty)
        )
    }

    /// Whether a column stored with the reported type `stored` holds a column of type `ty`.
    /// SQLite reports the declared type (a date is declared TEXT, like a string); PostgreSQL
    /// its canonical name (`text` for `TEXT COLLATE "C"`), which [`Self::protocol`] reads.
    fn holds(&self, stored: &str, ty: ColumnType) -> bool {
        stored.eq_ignore_ascii_case((self.declared)(ty)) || (self.protocol)(stored) == Some(ty)
    }
}

/// The declared columns of `table` that are not stored yet (to add), or a schema error when one
/// is stored with another type.
pub(super) fn columns_to_add<'t>(
    table: &'t TableSchema,
    stored: &[(String, String)],
    types: &StoredTypes,
) -> StoreResult<Vec<&'t Column>> {
    let mut missing = Vec::new();
    for column in &table.columns {
        match stored
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&column.name))
        {
            None => missing.push(column),
            Some((_, decl)) if !types.holds(decl, column.ty) => {
                return Err(StoreError::new(
                    StoreErrorKind::Schema,
                    format!(
                        "{}.{} is stored as {} but configured as {:?}",
                        table.name,
                        column.name,
                        decl.to_ascii_uppercase(),
                        column.ty
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// Columns found in the database but not declared: dynamic columns of earlier runs, in stored
/// order.
pub(super) fn extra_columns(
    table: &TableSchema,
    stored: &[(String, String)],
    types: &StoredTypes,
) -> StoreResult<Vec<Column>> {
    let mut out = Vec::new();
    for (name, decl) in stored {
        if is_known(name, &table.columns) {
            continue;
        }
        let ty = (types.protocol)(decl).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Schema,
                format!("{}.{name} has unsupported type {decl}", table.name),
            )
        })?;
        out.push(Column {
            name: name.clone(),
            ty,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The statements pinned as the stores wrote them before they shared this module.

    use serde_json::json;
    use tablesync_protocol::odata::sql::SqlFragment;
    use tablesync_protocol::time::Timestamp;

    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            name: "T".into(),
            columns: vec![
                Column {
                    name: "a".into(),
                    ty: ColumnType::String,
                },
                Column {
                    name: "due".into(),
                    ty: ColumnType::Date,
                },
            ],
            soft_delete: true,
            owner_column: None,
            id_type: IdType::String,
            indexes: Vec::new(),
        }
    }

    fn sqlite_select() -> &'static str {
        r#""id", "a", "due", "createdAt", "updatedAt", "version", "deleted""#
    }

    fn pg_select() -> String {
        sqlite_select().to_owned()
    }

    fn stamp() -> Stamp {
        Stamp {
            updated_at: Timestamp::from_unix_millis(1_000),
            version: "v2".into(),
        }
    }

    fn query() -> ListQuery {
        ListQuery {
            filter: None,
            order_by: None,
            include_deleted: false,
            skip: 5,
            top: 10,
            count: false,
            select: None,
        }
    }

    #[test]
    fn id_sort_keys_are_found() {
        assert!(sorts_by_id("\"updatedAt\" ASC, \"id\" ASC"));
        assert!(sorts_by_id("\"id\" DESC NULLS LAST"));
        assert!(!sorts_by_id("\"updatedAt\" ASC NULLS FIRST"));
        assert!(!sorts_by_id("\"idx\" ASC"));
    }

    #[test]
    fn select_lists_and_single_row_reads() {
        assert_eq!(select_list(Dialect::Sqlite, &schema()), sqlite_select());
        assert_eq!(select_list(Dialect::Postgres, &schema()), pg_select());
        assert_eq!(
            get_row_sql(Dialect::Sqlite, &schema(), &Scope::Shared, "x").0,
            format!("SELECT {} FROM \"T\" WHERE \"id\" = ?1", sqlite_select())
        );
        assert_eq!(
            get_row_sql(Dialect::Postgres, &schema(), &Scope::Shared, "x").0,
            format!("SELECT {} FROM \"T\" WHERE \"id\" = $1::text", pg_select())
        );
    }

    #[test]
    fn default_list_is_insertion_order_of_live_rows() {
        let sqlite = list_sql(Dialect::Sqlite, &schema(), &Scope::Shared, &query());
        assert_eq!(
            sqlite.sql,
            format!(
                "SELECT {} FROM \"T\" WHERE \"deleted\" = 0 ORDER BY \"createdAt\" ASC, \"id\" ASC LIMIT 10 OFFSET ?1",
                sqlite_select()
            )
        );
        assert_eq!(sqlite.params, vec![SqlValue::Int(5)]);
        assert_eq!(
            sqlite.count_sql,
            "SELECT COUNT(*) FROM \"T\" WHERE \"deleted\" = 0"
        );
        assert_eq!(sqlite.count_params(), &[]);
        let pg = list_sql(Dialect::Postgres, &schema(), &Scope::Shared, &query());
        assert_eq!(
            pg.sql,
            format!(
                "SELECT {} FROM \"T\" WHERE \"deleted\" = FALSE ORDER BY \"createdAt\" ASC NULLS FIRST, \"id\" ASC NULLS FIRST LIMIT $1::bigint OFFSET $2::bigint",
                pg_select()
            )
        );
        assert_eq!(pg.params, vec![SqlValue::Int(10), SqlValue::Int(5)]);
        assert_eq!(
            pg.count_sql,
            "SELECT COUNT(*) FROM \"T\" WHERE \"deleted\" = FALSE"
        );
    }

    #[test]
    fn filtered_ordered_list_numbers_its_parameters_after_the_fragments() {
        let q = ListQuery {
            filter: Some(SqlFragment {
                sql: "\"a\" = $1::text".into(),
                params: vec![SqlValue::Text("x".into())],
            }),
            order_by: Some(SqlFragment {
                sql: "\"updatedAt\" ASC NULLS FIRST".into(),
                params: vec![],
            }),
            include_deleted: true,
            top: u64::MAX,
            ..query()
        };
        let pg = list_sql(Dialect::Postgres, &schema(), &Scope::Shared, &q);
        assert_eq!(
            pg.sql,
            format!(
                "SELECT {} FROM \"T\" WHERE (\"a\" = $1::text) ORDER BY \"updatedAt\" ASC NULLS FIRST, \"id\" ASC NULLS FIRST LIMIT $2::bigint OFFSET $3::bigint",
                pg_select()
            )
        );
        assert_eq!(
            pg.params,
            vec![
                SqlValue::Text("x".into()),
                SqlValue::Int(i64::MAX),
                SqlValue::Int(5)
            ]
        );
        assert_eq!(
            pg.count_sql,
            "SELECT COUNT(*) FROM \"T\" WHERE (\"a\" = $1::text)"
        );
        assert_eq!(pg.count_params(), &[SqlValue::Text("x".into())]);
        // An order that already sorts by id gets no tie-breaker.
        let by_id = ListQuery {
            order_by: Some(SqlFragment {
                sql: "\"id\" DESC".into(),
                params: vec![],
            }),
            include_deleted: true,
            ..query()
        };
        assert_eq!(
            list_sql(Dialect::Sqlite, &schema(), &Scope::Shared, &by_id).sql,
            format!(
                "SELECT {} FROM \"T\" ORDER BY \"id\" DESC LIMIT 10 OFFSET ?1",
                sqlite_select()
            )
        );
    }

    #[test]
    fn inserts() {
        let values = vec![
            ("a".to_owned(), SqlValue::Text("v".into())),
            ("extra".to_owned(), SqlValue::Real(1.5)),
        ];
        let expected_params = vec![
            SqlValue::Text("x".into()),
            SqlValue::Timestamp(Timestamp::from_unix_millis(1_000)),
            SqlValue::Text("v2".into()),
            SqlValue::Text("v".into()),
            SqlValue::Real(1.5),
        ];
        let (sql, params) = insert_sql(
            Dialect::Sqlite,
            &schema(),
            &Scope::Shared,
            "x",
            stamp(),
            &values,
        );
        assert_eq!(
            sql,
            format!(
                "INSERT INTO \"T\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\", \"a\", \"extra\") \
                 VALUES (?1, ?2, ?2, ?3, 0, ?4, ?5) ON CONFLICT (\"id\") DO NOTHING RETURNING {}",
                sqlite_select()
            )
        );
        assert_eq!(params, expected_params);
        let (sql, params) = insert_sql(
            Dialect::Postgres,
            &schema(),
            &Scope::Shared,
            "x",
            stamp(),
            &values,
        );
        assert_eq!(
            sql,
            format!(
                "INSERT INTO \"T\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\", \"a\", \"extra\") \
                 VALUES ($1::text, $2::timestamptz, $2::timestamptz, $3::text, FALSE, $4::text, $5::double precision) \
                 ON CONFLICT (\"id\") DO NOTHING RETURNING {}",
                pg_select()
            )
        );
        assert_eq!(params, expected_params);
    }

    #[test]
    fn compare_and_swap_updates() {
        let update = |dialect| {
            cas_update_sql(
                dialect,
                &schema(),
                &Scope::Shared,
                "x",
                &[("due".to_owned(), SqlValue::Null)],
                CasKind::Update,
                Some("v1"),
                stamp(),
            )
        };
        let (sql, params) = update(Dialect::Sqlite);
        assert_eq!(
            sql,
            format!(
                "UPDATE \"T\" SET \"due\" = ?1, \"updatedAt\" = ?2, \"version\" = ?3 \
                 WHERE \"id\" = ?4 AND \"deleted\" = 0 AND \"version\" = ?5 RETURNING {}",
                sqlite_select()
            )
        );
        assert_eq!(
            params,
            vec![
                SqlValue::Null,
                SqlValue::Timestamp(Timestamp::from_unix_millis(1_000)),
                SqlValue::Text("v2".into()),
                SqlValue::Text("x".into()),
                SqlValue::Text("v1".into()),
            ]
        );
        let (sql, _) = update(Dialect::Postgres);
        assert_eq!(
            sql,
            format!(
                "UPDATE \"T\" SET \"due\" = $1::timestamptz, \"updatedAt\" = $2::timestamptz, \"version\" = $3::text \
                 WHERE \"id\" = $4::text AND \"deleted\" = FALSE AND \"version\" = $5::text RETURNING {}",
                pg_select()
            )
        );
        let (sql, params) = cas_update_sql(
            Dialect::Postgres,
            &schema(),
            &Scope::Shared,
            "x",
            &[],
            CasKind::SoftDelete,
            None,
            stamp(),
        );
        assert_eq!(
            sql,
            format!(
                "UPDATE \"T\" SET \"deleted\" = TRUE, \"updatedAt\" = $1::timestamptz, \"version\" = $2::text \
                 WHERE \"id\" = $3::text AND \"deleted\" = FALSE RETURNING {}",
                pg_select()
            )
        );
        assert_eq!(params.len(), 3);
        let (sql, _) = cas_update_sql(
            Dialect::Sqlite,
            &schema(),
            &Scope::Shared,
            "x",
            &[],
            CasKind::Undelete,
            Some("v1"),
            stamp(),
        );
        assert_eq!(
            sql,
            format!(
                "UPDATE \"T\" SET \"deleted\" = 0, \"updatedAt\" = ?1, \"version\" = ?2 \
                 WHERE \"id\" = ?3 AND \"deleted\" = 1 AND \"version\" = ?4 RETURNING {}",
                sqlite_select()
            )
        );
    }

    #[test]
    fn hard_deletes() {
        let (sql, params) =
            hard_delete_sql(Dialect::Sqlite, &schema(), &Scope::Shared, "x", Some("v1"));
        assert_eq!(
            sql,
            format!(
                "DELETE FROM \"T\" WHERE \"id\" = ?1 AND \"deleted\" = 0 AND \"version\" = ?2 RETURNING {}",
                sqlite_select()
            )
        );
        assert_eq!(
            params,
            vec![SqlValue::Text("x".into()), SqlValue::Text("v1".into())]
        );
        let (sql, params) =
            hard_delete_sql(Dialect::Postgres, &schema(), &Scope::Shared, "x", None);
        assert_eq!(
            sql,
            format!(
                "DELETE FROM \"T\" WHERE \"id\" = $1::text AND \"deleted\" = FALSE RETURNING {}",
                pg_select()
            )
        );
        assert_eq!(params, vec![SqlValue::Text("x".into())]);
    }

    fn per_user() -> TableSchema {
        let mut t = schema();
        t.columns.push(Column {
            name: "userId".into(),
            ty: ColumnType::String,
        });
        t.owner_column = Some("userId".into());
        t
    }

    fn alice() -> Scope {
        Scope::Owner("alice".into())
    }

    #[test]
    fn per_user_reads_and_the_count_and_the_page_number_their_owner_parameter_without_gaps() {
        let q = ListQuery {
            filter: Some(SqlFragment {
                sql: "\"a\" = $1::text OR TRUE".into(),
                params: vec![SqlValue::Text("x".into())],
            }),
            order_by: Some(SqlFragment {
                sql: "\"a\" = $2::text ASC NULLS FIRST".into(),
                params: vec![SqlValue::Text("y".into())],
            }),
            count: true,
            ..query()
        };
        let pg = list_sql(Dialect::Postgres, &per_user(), &alice(), &q);
        let select =
            r#""id", "a", "due", "userId", "createdAt", "updatedAt", "version", "deleted""#;
        assert_eq!(
            pg.sql,
            format!(
                "SELECT {select} FROM \"T\" WHERE \"userId\" = $3::text AND (\"a\" = $1::text OR TRUE) \
                 AND \"deleted\" = FALSE ORDER BY \"a\" = $2::text ASC NULLS FIRST, \"id\" ASC NULLS FIRST \
                 LIMIT $4::bigint OFFSET $5::bigint"
            )
        );
        assert_eq!(
            pg.params,
            vec![
                SqlValue::Text("x".into()),
                SqlValue::Text("y".into()),
                SqlValue::Text("alice".into()),
                SqlValue::Int(10),
                SqlValue::Int(5)
            ]
        );
        assert_eq!(
            pg.count_sql,
            "SELECT COUNT(*) FROM \"T\" WHERE \"userId\" = $2::text AND (\"a\" = $1::text OR TRUE) AND \"deleted\" = FALSE"
        );
        assert_eq!(
            pg.count_params(),
            &[SqlValue::Text("x".into()), SqlValue::Text("alice".into())]
        );
        let (sql, params) = get_row_sql(Dialect::Sqlite, &per_user(), &alice(), "r");
        assert!(
            sql.ends_with("WHERE \"id\" = ?1 AND \"userId\" = ?2"),
            "{sql}"
        );
        assert_eq!(
            params,
            vec![SqlValue::Text("r".into()), SqlValue::Text("alice".into())]
        );
    }

    #[test]
    fn a_scope_that_does_not_fit_the_table_matches_nothing() {
        let (sql, params) = get_row_sql(Dialect::Sqlite, &per_user(), &Scope::Shared, "r");
        assert!(sql.ends_with("WHERE \"id\" = ?1 AND 0"), "{sql}");
        assert_eq!(params.len(), 1);
        let list = list_sql(Dialect::Postgres, &per_user(), &Scope::Shared, &query());
        assert!(
            list.sql.contains("WHERE FALSE AND \"deleted\" = FALSE"),
            "{}",
            list.sql
        );
        let (sql, _) = hard_delete_sql(Dialect::Postgres, &schema(), &alice(), "r", None);
        assert!(
            sql.contains("AND \"deleted\" = FALSE AND FALSE RETURNING"),
            "{sql}"
        );
    }

    #[test]
    fn several_rows_insert_in_one_statement_numbered_without_gaps() {
        let values = vec![
            ("userId".to_owned(), SqlValue::Text("mallory".into())),
            ("a".to_owned(), SqlValue::Text("v".into())),
        ];
        let later = Stamp {
            updated_at: Timestamp::from_unix_millis(1_001),
            version: "v3".into(),
        };
        let rows = [
            NewRow {
                id: "r1",
                stamp: stamp(),
                values: &values,
            },
            NewRow {
                id: "r2",
                stamp: later.clone(),
                values: &values,
            },
        ];
        let (sql, params) = insert_rows_sql(Dialect::Postgres, &per_user(), &alice(), &rows);
        assert!(
            sql.starts_with(
                "INSERT INTO \"T\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\", \"userId\", \"a\") \
                 VALUES ($1::text, $2::timestamptz, $2::timestamptz, $3::text, FALSE, $4::text, $5::text), \
                 ($6::text, $7::timestamptz, $7::timestamptz, $8::text, FALSE, $9::text, $10::text) \
                 ON CONFLICT (\"userId\", \"id\") DO NOTHING RETURNING"
            ),
            "{sql}"
        );
        let owner = SqlValue::Text("alice".into());
        let v = SqlValue::Text("v".into());
        assert_eq!(
            params,
            vec![
                SqlValue::Text("r1".into()),
                SqlValue::Timestamp(stamp().updated_at),
                SqlValue::Text(stamp().version),
                owner.clone(),
                v.clone(),
                SqlValue::Text("r2".into()),
                SqlValue::Timestamp(later.updated_at),
                SqlValue::Text(later.version),
                owner,
                v,
            ]
        );
        // One row: exactly the single insert.
        assert_eq!(
            insert_rows_sql(Dialect::Sqlite, &per_user(), &alice(), &rows[..1]),
            insert_sql(
                Dialect::Sqlite,
                &per_user(),
                &alice(),
                "r1",
                stamp(),
                &values
            )
        );
    }

    #[test]
    fn per_user_writes_take_the_owner_from_the_scope_only() {
        // A body value for the owner column never reaches the statement.
        let values = vec![
            ("userId".to_owned(), SqlValue::Text("mallory".into())),
            ("a".to_owned(), SqlValue::Text("v".into())),
        ];
        let (sql, params) = insert_sql(
            Dialect::Postgres,
            &per_user(),
            &alice(),
            "r",
            stamp(),
            &values,
        );
        assert!(
            sql.starts_with(
                "INSERT INTO \"T\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\", \"userId\", \"a\") \
                 VALUES ($1::text, $2::timestamptz, $2::timestamptz, $3::text, FALSE, $4::text, $5::text) \
                 ON CONFLICT (\"userId\", \"id\") DO NOTHING RETURNING"
            ),
            "{sql}"
        );
        assert_eq!(params[3], SqlValue::Text("alice".into()));
        assert!(!params.contains(&SqlValue::Text("mallory".into())));
        let (sql, params) = cas_update_sql(
            Dialect::Sqlite,
            &per_user(),
            &alice(),
            "r",
            &values,
            CasKind::Update,
            Some("v1"),
            stamp(),
        );
        assert!(
            sql.starts_with(
                "UPDATE \"T\" SET \"a\" = ?1, \"updatedAt\" = ?2, \"version\" = ?3 \
                 WHERE \"id\" = ?4 AND \"deleted\" = 0 AND \"version\" = ?5 AND \"userId\" = ?6 RETURNING"
            ),
            "{sql}"
        );
        assert_eq!(params[5], SqlValue::Text("alice".into()));
        assert!(!params.contains(&SqlValue::Text("mallory".into())));
        let (sql, params) = hard_delete_sql(Dialect::Sqlite, &per_user(), &alice(), "r", None);
        assert!(
            sql.starts_with("DELETE FROM \"T\" WHERE \"id\" = ?1 AND \"deleted\" = 0 AND \"userId\" = ?2 RETURNING"),
            "{sql}"
        );
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn a_multi_row_update_checks_each_rows_version_and_owner_and_never_assigns_the_owner() {
        let values = vec![
            ("userId".to_owned(), SqlValue::Text("mallory".into())),
            ("a".to_owned(), SqlValue::Text("v".into())),
        ];
        let later = Stamp {
            updated_at: Timestamp::from_unix_millis(1_001),
            version: "v3".into(),
        };
        let rows = [
            SwapRow {
                id: "r",
                stamp: stamp(),
                values: &values,
                expected: Some("v1"),
            },
            SwapRow {
                id: "s",
                stamp: later,
                values: &values,
                expected: None,
            },
        ];
        let (sql, params) = cas_update_rows_sql(&per_user(), &alice(), &rows);
        assert_eq!(
            sql,
            "UPDATE \"T\" AS \"tablesync_t\" SET \"a\" = \"tablesync_v\".\"a\", \
             \"updatedAt\" = \"tablesync_v\".\"updatedAt\", \"version\" = \"tablesync_v\".\"version\" \
             FROM (VALUES ($1::text, $2::text, $3::timestamptz, $4::text, $5::text), \
             ($6::text, $7::text, $8::timestamptz, $9::text, $10::text)) \
             AS \"tablesync_v\" (\"tablesync_id\", \"tablesync_expected\", \"updatedAt\", \"version\", \"a\") \
             WHERE \"tablesync_t\".\"id\" = \"tablesync_v\".\"tablesync_id\" AND \"tablesync_t\".\"deleted\" = FALSE \
             AND (\"tablesync_v\".\"tablesync_expected\" IS NULL OR \"tablesync_t\".\"version\" = \"tablesync_v\".\"tablesync_expected\") \
             AND \"tablesync_t\".\"userId\" = $11::text \
             RETURNING \"tablesync_t\".\"id\", \"tablesync_t\".\"a\", \"tablesync_t\".\"due\", \"tablesync_t\".\"userId\", \
             \"tablesync_t\".\"createdAt\", \"tablesync_t\".\"updatedAt\", \"tablesync_t\".\"version\", \"tablesync_t\".\"deleted\""
        );
        assert_eq!(
            params,
            vec![
                SqlValue::Text("r".into()),
                SqlValue::Text("v1".into()),
                SqlValue::Timestamp(Timestamp::from_unix_millis(1_000)),
                SqlValue::Text("v2".into()),
                SqlValue::Text("v".into()),
                SqlValue::Text("s".into()),
                SqlValue::Null,
                SqlValue::Timestamp(Timestamp::from_unix_millis(1_001)),
                SqlValue::Text("v3".into()),
                SqlValue::Text("v".into()),
                SqlValue::Text("alice".into()),
            ]
        );
        // A scope that does not fit the table matches nothing.
        let (sql, _) = cas_update_rows_sql(&per_user(), &Scope::Shared, &rows);
        assert!(sql.contains(" AND FALSE RETURNING"), "{sql}");
    }

    #[test]
    fn owners_have_their_own_clock_rows() {
        assert_eq!(stamps_per_owner(&per_user(), &alice()), Some("alice"));
        assert_eq!(stamps_per_owner(&schema(), &Scope::Shared), None);
        let sqlite = owner_stamp_sql(Dialect::Sqlite, true);
        assert!(
            sqlite.contains("VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER), 1) ON CONFLICT (table_name, owner) DO UPDATE \
                             SET last_updated_at = max(CAST(unixepoch('subsec') * 1000 AS INTEGER), c.last_updated_at + 1)"),
            "{sqlite}"
        );
        let pg = owner_stamp_sql(Dialect::Postgres, true);
        assert!(pg.contains("GREATEST(date_trunc('milliseconds', clock_timestamp()), c.last_updated_at + interval '1 millisecond')"), "{pg}");
        assert!(check_primary_key(&per_user(), &["userId".into(), "id".into()]).is_ok());
        let e = check_primary_key(&per_user(), &["id".into()]).unwrap_err();
        assert!(
            e.message.contains("owner_column was added"),
            "{}",
            e.message
        );
        let e = check_primary_key(&schema(), &["userId".into(), "id".into()]).unwrap_err();
        assert!(e.message.contains("per-user rows"), "{}", e.message);
    }

    #[test]
    fn declared_indexes_append_id_and_lead_with_the_owner() {
        let mut t = schema();
        t.indexes = vec![
            vec!["a".into(), "due".into()],
            vec!["id".into(), "a".into()],
        ];
        let sqlite = declared_indexes(Dialect::Sqlite, &t);
        assert_eq!(sqlite.len(), 2);
        assert!(sqlite[0].name.starts_with("ixd_T_"), "{}", sqlite[0].name);
        assert_eq!(
            sqlite[0].create,
            format!(
                "CREATE INDEX IF NOT EXISTS \"{}\" ON \"T\" (\"a\" ASC, \"due\" ASC, \"id\" ASC)",
                sqlite[0].name
            )
        );
        // `id` already declared: not appended again.
        assert!(
            sqlite[1].create.ends_with("(\"id\" ASC, \"a\" ASC)"),
            "{}",
            sqlite[1].create
        );
        assert_ne!(sqlite[0].name, sqlite[1].name);
        let pg = declared_indexes(Dialect::Postgres, &per_user_with(&t.indexes));
        assert!(
            pg[0].create.ends_with(
                "(\"userId\" ASC NULLS FIRST, \"a\" ASC NULLS FIRST, \"due\" ASC NULLS FIRST, \"id\" ASC NULLS FIRST)"
            ),
            "{}",
            pg[0].create
        );
        assert!(pg[0].name.len() <= 63);
        // Another table, or another key, gets another name.
        let mut other = t.clone();
        other.name = "U".into();
        assert_ne!(
            declared_indexes(Dialect::Sqlite, &other)[0].name,
            sqlite[0].name
        );
        other.indexes = vec![vec!["due".into(), "a".into()]];
        let reordered = declared_indexes(Dialect::Sqlite, &other);
        // Stored: one current index, one no longer declared, one not ours.
        let stored = vec![
            reordered[0].name.clone(),
            sqlite[0].name.clone(),
            "ix_T_updatedAt_id".to_owned(),
        ];
        assert_eq!(
            indexes_to_drop(&stored, &reordered),
            vec![sqlite[0].name.as_str()]
        );
    }

    fn per_user_with(indexes: &[Vec<String>]) -> TableSchema {
        let mut t = per_user();
        t.indexes = indexes.to_vec();
        t
    }

    fn row(version: &str, deleted: bool) -> Item {
        let mut item = Item::new();
        item.insert("id".into(), json!("x"));
        item.insert("version".into(), json!(version));
        item.insert("deleted".into(), json!(deleted));
        item
    }

    #[test]
    fn missed_writes_are_classified() {
        let live = row("v1", false);
        let dead = row("v1", true);
        for kind in [None, Some(CasKind::Update), Some(CasKind::SoftDelete)] {
            assert_eq!(miss_outcome(kind, None, None), WriteOutcome::NotFound);
            assert_eq!(
                miss_outcome(kind, Some(dead.clone()), None),
                WriteOutcome::NotFound
            );
            assert_eq!(
                miss_outcome(kind, Some(live.clone()), Some("v0")),
                WriteOutcome::VersionMismatch(live.clone())
            );
        }
        let undelete = Some(CasKind::Undelete);
        assert_eq!(miss_outcome(undelete, None, None), WriteOutcome::NotFound);
        assert_eq!(
            miss_outcome(undelete, Some(live.clone()), None),
            WriteOutcome::Written(live.clone())
        );
        assert_eq!(
            miss_outcome(undelete, Some(live.clone()), Some("v1")),
            WriteOutcome::Written(live.clone())
        );
        assert_eq!(
            miss_outcome(undelete, Some(live.clone()), Some("v0")),
            WriteOutcome::VersionMismatch(live)
        );
        assert_eq!(
            miss_outcome(undelete, Some(dead.clone()), Some("v0")),
            WriteOutcome::VersionMismatch(dead)
        );
    }

    fn sqlite_like_types() -> StoredTypes {
        StoredTypes {
            declared: |ty| match ty {
                ColumnType::String | ColumnType::Date => "TEXT",
                ColumnType::Number => "REAL",
                ColumnType::Boolean => "INTEGER",
            },
            protocol: |decl| match decl {
                "TEXT" => Some(ColumnType::String),
                "REAL" => Some(ColumnType::Number),
                _ => None,
            },
        }
    }

    fn stored(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn stored_columns_are_reconciled_with_declared_ones() {
        let types = sqlite_like_types();
        let table = schema();
        // A date declared TEXT holds the date column; `a` is missing; `Extra` was added earlier.
        let found = stored(&[
            ("id", "TEXT"),
            ("DUE", "TEXT"),
            ("createdAt", "TEXT"),
            ("Extra", "REAL"),
        ]);
        let add = columns_to_add(&table, &found, &types).unwrap();
        assert_eq!(
            add.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            extra_columns(&table, &found, &types).unwrap(),
            vec![Column {
                name: "Extra".into(),
                ty: ColumnType::Number
            }]
        );
        assert!(is_stored(&found, "extra"));
        assert!(!is_stored(&found, "a"));
        let e = columns_to_add(&table, &stored(&[("a", "real")]), &types).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (
                StoreErrorKind::Schema,
                "T.a is stored as REAL but configured as String"
            )
        );
        let e = extra_columns(&table, &stored(&[("blob", "BLOB")]), &types).unwrap_err();
        assert_eq!(e.message, "T.blob has unsupported type BLOB");
    }
}
