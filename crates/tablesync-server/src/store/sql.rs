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
//! | selected date column | `"c"` (stored in wire form) | `to_char("c" AT TIME ZONE 'UTC', …)` (rendered in wire form) |
//!
//! Everything else (which columns, in which order, which conditions, which parameter goes where)
//! is written once, so both stores answer a request with the same statement shape: the explain
//! tests (`tests/it/explain.rs`) check that the shapes stay index-friendly on both.

use serde_json::Value;
use tablesync_protocol::odata::sql::{quote_ident, ColumnType, Dialect, SqlValue};
use tablesync_protocol::system;

use super::{ListQuery, Stamp, StoreError, StoreErrorKind, StoreResult, WriteOutcome};
use crate::table::{Column, Item, TableSchema};

/// The clock table: one row per served table, holding the last stamp handed out.
pub(super) const CLOCK_TABLE: &str = "tablesync_clock";

/// How PostgreSQL reads a timestamp column: the wire form `YYYY-MM-DDTHH:MM:SS.sssZ`, in UTC
/// whatever the session's time zone.
const PG_WIRE_FORMAT: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

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
    /// `::bigint` (LIMIT and OFFSET)
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

/// One selected column; dates come out in the wire form on both stores.
fn dialect_select_expr(dialect: Dialect, name: &str, ty: ColumnType) -> String {
    let ident = quote_ident(name);
    match (dialect, ty) {
        (Dialect::Postgres, ColumnType::Date) => {
            format!("to_char({ident} AT TIME ZONE 'UTC', {PG_WIRE_FORMAT})")
        }
        _ => ident,
    }
}

/// The system columns after the user columns, in item order, with their types.
const TRAILING_SYSTEM_COLUMNS: [(&str, ColumnType); 4] = [
    (system::CREATED_AT, ColumnType::Date),
    (system::UPDATED_AT, ColumnType::Date),
    (system::VERSION, ColumnType::String),
    (system::DELETED, ColumnType::Boolean),
];

/// Every selected column of an item, in order: `id`, the user columns, then the trailing system
/// columns.
fn item_columns(schema: &TableSchema) -> impl Iterator<Item = (&str, ColumnType)> {
    std::iter::once((system::ID, ColumnType::String))
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

/// `SELECT <select list> FROM <table> WHERE "id" = <param 1>`.
pub(super) fn get_row_sql(dialect: Dialect, schema: &TableSchema) -> String {
    format!(
        "SELECT {} FROM {} WHERE \"id\" = {}",
        select_list(dialect, schema),
        quote_ident(&schema.name),
        dialect_param(dialect, 1, Cast::Text)
    )
}

/// The SQL of a list request: the page query, its parameters, the count query and how many of
/// the parameters are the filter's (the count query's).
pub(super) struct ListSql {
    /// `SELECT … ORDER BY … LIMIT … OFFSET …`.
    pub sql: String,
    /// The page query's parameters: the filter's, the order's, then LIMIT and OFFSET.
    pub params: Vec<SqlValue>,
    /// `SELECT COUNT(*) FROM … [WHERE …]`: every matching row (`$inlinecount`).
    pub count_sql: String,
    /// How many of `params` (from the start) the count query uses.
    pub filter_params: usize,
}

impl ListSql {
    /// The count query's parameters: the filter's.
    pub(super) fn count_params(&self) -> &[SqlValue] {
        &self.params[..self.filter_params]
    }
}

/// The page query of a list request. Default order (`createdAt`, `id`); a requested order gets
/// `id` as the final tie-breaker unless it already sorts by `id`.
pub(super) fn list_sql(dialect: Dialect, schema: &TableSchema, query: &ListQuery) -> ListSql {
    let mut conditions = Vec::new();
    let mut params: Vec<SqlValue> = Vec::new();
    if let Some(filter) = &query.filter {
        conditions.push(format!("({})", filter.sql));
        params.extend(filter.params.iter().cloned());
    }
    if !query.include_deleted {
        conditions.push(format!("\"deleted\" = {}", dialect_bool(dialect, false)));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let filter_params = params.len();
    let id_ascending = dialect_ascending(dialect, "\"id\"");
    let order = match &query.order_by {
        Some(order) => {
            params.extend(order.params.iter().cloned());
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
    let limit_index = params.len() + 1;
    params.push(SqlValue::Int(i64::try_from(query.top).unwrap_or(i64::MAX)));
    params.push(SqlValue::Int(i64::try_from(query.skip).unwrap_or(i64::MAX)));
    let table = quote_ident(&schema.name);
    let sql = format!(
        "SELECT {} FROM {table}{where_clause} ORDER BY {order} LIMIT {} OFFSET {}",
        select_list(dialect, schema),
        dialect_param(dialect, limit_index, Cast::BigInt),
        dialect_param(dialect, limit_index + 1, Cast::BigInt)
    );
    ListSql {
        sql,
        params,
        count_sql: format!("SELECT COUNT(*) FROM {table}{where_clause}"),
        filter_params,
    }
}

/// Whether a lowered `$orderby` already has `id` as one of its sort keys (then the stores'
/// `id` tie-breaker is redundant: ids are unique).
pub(super) fn sorts_by_id(order_sql: &str) -> bool {
    order_sql
        .split(", ")
        .any(|term| term.starts_with("\"id\" ASC") || term.starts_with("\"id\" DESC"))
}

/// What an insert does when the id is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnConflict {
    /// Nothing in the statement: the caller made sure the id is free (SQLite: checked in the
    /// same `BEGIN IMMEDIATE` transaction, which no other writer can enter).
    Fail,
    /// `ON CONFLICT ("id") DO NOTHING`: the statement returns no row and the caller reads the
    /// stored one (PostgreSQL, where a concurrent insert of the same id may commit first).
    DoNothing,
}

/// An `INSERT … RETURNING <select list>` of a new row and its parameters: `id`, the stamp
/// (`createdAt` = `updatedAt`), `deleted` false and the given values.
pub(super) fn insert_sql(
    dialect: Dialect,
    schema: &TableSchema,
    id: &str,
    stamp: Stamp,
    values: &[(String, SqlValue)],
    on_conflict: OnConflict,
) -> (String, Vec<SqlValue>) {
    let mut columns =
        String::from("\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\"");
    let mut placeholders = format!(
        "{}, {stamp_param}, {stamp_param}, {}, {}",
        dialect_param(dialect, 1, Cast::Text),
        dialect_param(dialect, 3, Cast::Text),
        dialect_bool(dialect, false),
        stamp_param = dialect_param(dialect, 2, Cast::Timestamp),
    );
    let mut params = vec![
        SqlValue::Text(id.to_owned()),
        SqlValue::Timestamp(stamp.updated_at),
        SqlValue::Text(stamp.version),
    ];
    for (name, value) in values {
        columns.push_str(", ");
        columns.push_str(&quote_ident(name));
        params.push(value.clone());
        placeholders.push_str(", ");
        placeholders.push_str(&dialect_param(
            dialect,
            params.len(),
            Cast::for_value(schema, name, value),
        ));
    }
    let conflict = match on_conflict {
        OnConflict::Fail => "",
        OnConflict::DoNothing => " ON CONFLICT (\"id\") DO NOTHING",
    };
    let sql = format!(
        "INSERT INTO {} ({columns}) VALUES ({placeholders}){conflict} RETURNING {}",
        quote_ident(&schema.name),
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
/// RETURNING <select list>` and its parameters.
pub(super) fn cas_update_sql(
    dialect: Dialect,
    schema: &TableSchema,
    id: &str,
    assignments: &[(String, SqlValue)],
    kind: CasKind,
    expected: Option<&str>,
    stamp: Stamp,
) -> (String, Vec<SqlValue>) {
    let mut params: Vec<SqlValue> = Vec::with_capacity(assignments.len() + 4);
    let mut sets: Vec<String> = Vec::with_capacity(assignments.len() + 3);
    for (name, value) in assignments {
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
    params.push(SqlValue::Text(id.to_owned()));
    let condition = format!(
        "\"id\" = {} AND \"deleted\" = {}{}",
        dialect_param(dialect, params.len(), Cast::Text),
        dialect_bool(dialect, kind == CasKind::Undelete),
        version_condition(dialect, &mut params, expected)
    );
    let sql = format!(
        "UPDATE {} SET {} WHERE {condition} RETURNING {}",
        quote_ident(&schema.name),
        sets.join(", "),
        select_list(dialect, schema)
    );
    (sql, params)
}

/// `DELETE FROM … WHERE id = ? AND deleted = false [AND version = ?] RETURNING <select list>`
/// and its parameters.
pub(super) fn hard_delete_sql(
    dialect: Dialect,
    schema: &TableSchema,
    id: &str,
    expected: Option<&str>,
) -> (String, Vec<SqlValue>) {
    let mut params = vec![SqlValue::Text(id.to_owned())];
    let condition = format!(
        "\"id\" = {} AND \"deleted\" = {}{}",
        dialect_param(dialect, 1, Cast::Text),
        dialect_bool(dialect, false),
        version_condition(dialect, &mut params, expected)
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

    const PG_DATE: &str = r#"AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

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
        }
    }

    fn sqlite_select() -> &'static str {
        r#""id", "a", "due", "createdAt", "updatedAt", "version", "deleted""#
    }

    fn pg_select() -> String {
        format!(
            r#""id", "a", to_char("due" {PG_DATE}, to_char("createdAt" {PG_DATE}, to_char("updatedAt" {PG_DATE}, "version", "deleted""#
        )
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
            get_row_sql(Dialect::Sqlite, &schema()),
            format!("SELECT {} FROM \"T\" WHERE \"id\" = ?1", sqlite_select())
        );
        assert_eq!(
            get_row_sql(Dialect::Postgres, &schema()),
            format!("SELECT {} FROM \"T\" WHERE \"id\" = $1::text", pg_select())
        );
    }

    #[test]
    fn default_list_is_insertion_order_of_live_rows() {
        let sqlite = list_sql(Dialect::Sqlite, &schema(), &query());
        assert_eq!(
            sqlite.sql,
            format!(
                "SELECT {} FROM \"T\" WHERE \"deleted\" = 0 ORDER BY \"createdAt\" ASC, \"id\" ASC LIMIT ?1 OFFSET ?2",
                sqlite_select()
            )
        );
        assert_eq!(sqlite.params, vec![SqlValue::Int(10), SqlValue::Int(5)]);
        assert_eq!(
            sqlite.count_sql,
            "SELECT COUNT(*) FROM \"T\" WHERE \"deleted\" = 0"
        );
        assert_eq!(sqlite.filter_params, 0);
        let pg = list_sql(Dialect::Postgres, &schema(), &query());
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
        let pg = list_sql(Dialect::Postgres, &schema(), &q);
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
        assert_eq!(pg.filter_params, 1);
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
            list_sql(Dialect::Sqlite, &schema(), &by_id).sql,
            format!(
                "SELECT {} FROM \"T\" ORDER BY \"id\" DESC LIMIT ?1 OFFSET ?2",
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
            "x",
            stamp(),
            &values,
            OnConflict::Fail,
        );
        assert_eq!(
            sql,
            format!(
                "INSERT INTO \"T\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\", \"a\", \"extra\") \
                 VALUES (?1, ?2, ?2, ?3, 0, ?4, ?5) RETURNING {}",
                sqlite_select()
            )
        );
        assert_eq!(params, expected_params);
        let (sql, params) = insert_sql(
            Dialect::Postgres,
            &schema(),
            "x",
            stamp(),
            &values,
            OnConflict::DoNothing,
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
        let (sql, params) = hard_delete_sql(Dialect::Sqlite, &schema(), "x", Some("v1"));
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
        let (sql, params) = hard_delete_sql(Dialect::Postgres, &schema(), "x", None);
        assert_eq!(
            sql,
            format!(
                "DELETE FROM \"T\" WHERE \"id\" = $1::text AND \"deleted\" = FALSE RETURNING {}",
                pg_select()
            )
        );
        assert_eq!(params, vec![SqlValue::Text("x".into())]);
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
