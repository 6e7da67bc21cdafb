//! Protocol rules for one table, without HTTP or SQL: the table's schema, checking a request body
//! against it (ids, reserved properties, types and their coercion, dynamic schema), the
//! `If-Match`/body-`version` decision, stamp rendering and JSON output of stored values.
//!
//! Everything here is a function from values to values so it can be unit-tested without a server.

use serde_json::{Map, Value};
use tablesync_protocol::odata::sql::{ColumnType, Schema, SqlValue};
use tablesync_protocol::{headers, system, time};

use crate::config::{IdType, TableConfig};

/// One stored item as JSON: `id`, the user columns in declaration order, then `createdAt`,
/// `updatedAt`, `version`, `deleted`.
pub type Item = Map<String, Value>;

/// A user column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name as declared (and as it appears in JSON).
    pub name: String,
    /// Protocol type.
    pub ty: ColumnType,
}

/// A table's current shape. Dynamic schema replaces it (copy on write) when a column is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// Table name as configured (also the SQL table name).
    pub name: String,
    /// User columns, in declaration order (dynamic columns appended).
    pub columns: Vec<Column>,
    /// Whether DELETE leaves a tombstone.
    pub soft_delete: bool,
    /// Per-user table: the string column (also one of `columns`) holding each row's owner; the
    /// table's key is (owner, id). None for a shared table.
    pub owner_column: Option<String>,
    /// String ids, or integer ids the database assigns (`id_type = "integer"`). Inside the
    /// server an integer id travels as its decimal text (`"5"`); the stores bind it as an
    /// integer and the JSON shows a number.
    pub id_type: IdType,
    /// Declared secondary indexes (`indexes = [["complete", "text"]]`), each a list of column
    /// names in key order; the stores append `id` (and lead with the owner on a per-user table).
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// The schema declared in the configuration.
    /// A per-user table's owner column is a string column: the declared one (its spelling
    /// wins), or appended after the declared columns.
    pub fn from_config(config: &TableConfig) -> Self {
        let mut columns: Vec<Column> = config
            .columns
            .iter()
            .map(|(name, ty)| Column {
                name: name.clone(),
                ty: *ty,
            })
            .collect();
        let owner_column = config.owner_column.as_ref().map(|owner| {
            match columns.iter().find(|c| c.name.eq_ignore_ascii_case(owner)) {
                Some(declared) => declared.name.clone(),
                None => {
                    columns.push(Column {
                        name: owner.clone(),
                        ty: ColumnType::String,
                    });
                    owner.clone()
                }
            }
        });
        TableSchema {
            name: config.name.clone(),
            columns,
            soft_delete: config.soft_delete,
            owner_column,
            id_type: config.id_type,
            indexes: config.indexes.clone(),
        }
    }

    /// The protocol type of the `id` column: number on an integer-id table, so `id eq 5` and
    /// `$orderby=id` compare numbers.
    pub fn id_column_type(&self) -> ColumnType {
        match self.id_type {
            IdType::String => ColumnType::String,
            IdType::Integer => ColumnType::Number,
        }
    }

    /// The user column with this name, compared case-insensitively (SQL identifiers are).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name).or_else(|| {
            self.columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        })
    }

    /// Every property an item of this table has, in output order.
    pub fn property_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(system::ID)
            .chain(self.columns.iter().map(|c| c.name.as_str()))
            .chain([
                system::CREATED_AT,
                system::UPDATED_AT,
                system::VERSION,
                system::DELETED,
            ])
    }
}

/// The type of a system column.
pub fn system_column_type(name: &str) -> Option<ColumnType> {
    match name {
        system::ID | system::VERSION => Some(ColumnType::String),
        system::CREATED_AT | system::UPDATED_AT => Some(ColumnType::Date),
        system::DELETED => Some(ColumnType::Boolean),
        _ => None,
    }
}

impl Schema for TableSchema {
    fn column_type(&self, name: &str) -> Option<ColumnType> {
        if name == system::ID {
            return Some(self.id_column_type());
        }
        system_column_type(name)
            .or_else(|| self.columns.iter().find(|c| c.name == name).map(|c| c.ty))
    }
}

/// A request body or header that breaks a table rule (each maps to one 400 error code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// An id that protocol.md 3.1 forbids, or that is not a string.
    #[error("invalid id: {0}")]
    InvalidId(String),
    /// `createdAt`, `updatedAt` or `deleted` in a write.
    #[error("Cannot update item with property '{0}' as it is reserved")]
    Reserved(String),
    /// A property that is not a column (dynamic schema off, or not a valid column name).
    #[error("{0}")]
    UnknownColumn(String),
    /// A value whose JSON type does not fit the column.
    #[error("{0}")]
    WrongType(String),
    /// The body's `id` differs from the URL's.
    #[error("The item ID and querystring ID did not match")]
    IdMismatch,
}

/// What a write body asks for, checked against the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRequest {
    /// `id` from the body (None when absent or null).
    pub id: Option<String>,
    /// `version` from the body (None when absent or null).
    pub version: Option<String>,
    /// User column values, converted to the column types, in body order.
    pub values: Vec<(String, SqlValue)>,
}

/// The outcome of checking a body: either a write, or columns that dynamic schema must add first
/// (then check again against the grown schema).
#[derive(Debug, Clone, PartialEq)]
pub enum BodyCheck {
    /// Ready to write.
    Write(WriteRequest),
    /// Add these columns, then check the body again. `partial` is the request without the
    /// values of the missing columns: its `id` and `version` let the caller run every check that
    /// needs no new column first, so a request that fails anyway adds nothing.
    AddColumns {
        /// The request so far (id, version, values of existing columns).
        partial: WriteRequest,
        /// The columns to add.
        columns: Vec<Column>,
    },
}

/// Check a write body (insert or update) against the schema.
///
/// `dynamic_schema` lets unknown properties become columns, up to `columns_max` user columns.
pub fn check_body(
    body: &Map<String, Value>,
    schema: &TableSchema,
    dynamic_schema: bool,
    columns_max: usize,
) -> Result<BodyCheck, RuleError> {
    let mut request = WriteRequest {
        id: None,
        version: None,
        values: Vec::new(),
    };
    let mut missing: Vec<Column> = Vec::new();
    for (name, value) in body {
        if system::is_reserved_on_write(name) {
            return Err(RuleError::Reserved(name.clone()));
        }
        if name.eq_ignore_ascii_case(system::ID) {
            request.id = match (schema.id_type, value) {
                (_, Value::Null) => None,
                (IdType::String, Value::String(s)) => Some(s.clone()),
                (IdType::String, _) => {
                    return Err(RuleError::InvalidId("the id must be a string".into()))
                }
                (IdType::Integer, value) => Some(body_integer_id(value)?),
            };
            continue;
        }
        if name.eq_ignore_ascii_case(system::VERSION) {
            request.version = match value {
                Value::Null => None,
                // Never a stored version (see `coerce`), and PostgreSQL cannot bind it.
                Value::String(s) if s.contains('\0') => {
                    return Err(RuleError::WrongType(
                        "the property 'version' contains a NUL character (U+0000)".into(),
                    ))
                }
                Value::String(s) => Some(s.clone()),
                _ => {
                    return Err(RuleError::WrongType(
                        "the property 'version' must be a string".into(),
                    ))
                }
            };
            continue;
        }
        match schema.column(name) {
            Some(column) => {
                let value = coerce(&column.name, column.ty, value)?;
                // `Text` and `text` are one column: the later property wins, as in a JSON object.
                match request.values.iter_mut().find(|(n, _)| *n == column.name) {
                    Some(slot) => slot.1 = value,
                    None => request.values.push((column.name.clone(), value)),
                }
            }
            None if !dynamic_schema => {
                return Err(RuleError::UnknownColumn(format!(
                    "The property '{name}' is not a column of table '{}'",
                    schema.name
                )))
            }
            None => {
                if !system::is_valid_identifier(name) {
                    return Err(RuleError::UnknownColumn(format!(
                        "The property '{name}' cannot become a column: names must match ^[A-Za-z_][A-Za-z0-9_]{{0,127}}$"
                    )));
                }
                if system::is_store_reserved_column(name) {
                    return Err(RuleError::UnknownColumn(format!(
                        "The property '{name}' cannot become a column: the databases reserve the names {}",
                        system::STORE_RESERVED_COLUMNS.join(", ")
                    )));
                }
                // Like Node: a null does not create a column (its type is unknown); it is dropped.
                match infer_type(name, value)? {
                    Some(ty) if !missing.iter().any(|c| c.name.eq_ignore_ascii_case(name)) => {
                        missing.push(Column {
                            name: name.clone(),
                            ty,
                        })
                    }
                    _ => {}
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(BodyCheck::Write(request));
    }
    if schema.columns.len() + missing.len() > columns_max {
        return Err(RuleError::UnknownColumn(format!(
            "Table '{}' cannot grow beyond {columns_max} columns",
            schema.name
        )));
    }
    Ok(BodyCheck::AddColumns {
        partial: request,
        columns: missing,
    })
}

/// The column type dynamic schema gives a new property, from its JSON value (None for null).
pub fn infer_type(name: &str, value: &Value) -> Result<Option<ColumnType>, RuleError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(_) => Ok(Some(ColumnType::Boolean)),
        Value::Number(_) => Ok(Some(ColumnType::Number)),
        // JSON has no date type: ISO strings make string columns (as on Node); declare dates in config.
        Value::String(_) => Ok(Some(ColumnType::String)),
        Value::Array(_) | Value::Object(_) => Err(RuleError::WrongType(format!(
            "The property '{name}' is an object or array; only scalar values can be stored"
        ))),
    }
}

/// Convert a JSON value for a column of type `ty`.
///
/// Strict by design, with two forgiving cases the official clients rely on: a boolean column
/// accepts 0/1, and a date column accepts any ISO 8601 form `time::parse_timestamp` accepts
/// (stored normalised to the wire form, so text order stays time order).
pub fn coerce(name: &str, ty: ColumnType, value: &Value) -> Result<SqlValue, RuleError> {
    let wrong = |expected: &str| {
        RuleError::WrongType(format!(
            "The property '{name}' must be {expected} or null, not {}",
            json_type(value)
        ))
    };
    match (ty, value) {
        (_, Value::Null) => Ok(SqlValue::Null),
        // PostgreSQL text cannot hold U+0000, so no store accepts it: the same input gets the
        // same answer on every store instead of a database error.
        (ColumnType::String, Value::String(s)) if s.contains('\0') => {
            Err(RuleError::WrongType(format!(
                "The property '{name}' contains a NUL character (U+0000), which cannot be stored"
            )))
        }
        (ColumnType::String, Value::String(s)) => Ok(SqlValue::Text(s.clone())),
        (ColumnType::String, _) => Err(wrong("a string")),
        (ColumnType::Number, Value::Number(n)) => n
            .as_f64()
            .map(SqlValue::Real)
            .ok_or_else(|| wrong("a number")),
        (ColumnType::Number, _) => Err(wrong("a number")),
        (ColumnType::Boolean, Value::Bool(b)) => Ok(SqlValue::Bool(*b)),
        (ColumnType::Boolean, Value::Number(n)) if n.as_f64() == Some(0.0) => {
            Ok(SqlValue::Bool(false))
        }
        (ColumnType::Boolean, Value::Number(n)) if n.as_f64() == Some(1.0) => {
            Ok(SqlValue::Bool(true))
        }
        (ColumnType::Boolean, _) => Err(wrong("a boolean")),
        (ColumnType::Date, Value::String(s)) => time::parse_timestamp(s)
            .map(SqlValue::Timestamp)
            .map_err(|_| wrong("a date string like 2024-01-31T12:00:00.000Z")),
        (ColumnType::Date, _) => Err(wrong("a date string")),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Check an id from a URL or body against protocol.md 3.1.
pub fn check_id(id: &str) -> Result<(), RuleError> {
    system::validate_id(id).map_err(|e| RuleError::InvalidId(e.to_string()))
}

/// Check an id from a URL, query or body against the table's id type; returns it in the form
/// the stores take: as given for a string id, canonical decimal text for an integer id (`"5"`
/// for `05` or `+5` is not accepted: only plain decimal digits, 1..=2^63-1).
pub fn check_table_id(id: &str, id_type: IdType) -> Result<String, RuleError> {
    match id_type {
        IdType::String => check_id(id).map(|()| id.to_owned()),
        IdType::Integer => parse_integer_id(id).map(|n| n.to_string()),
    }
}

/// An integer id written in decimal: `1..=i64::MAX`, digits only (no sign, no leading zero).
fn parse_integer_id(text: &str) -> Result<i64, RuleError> {
    let plain =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    match text.parse::<i64>() {
        Ok(n) if plain => Ok(n),
        _ => Err(RuleError::InvalidId(format!(
            "this table has integer ids: the id must be an integer from 1 to {}",
            i64::MAX
        ))),
    }
}

/// A body `id` on an integer-id table, as decimal text: a JSON integer, or a string of its
/// digits (Node compares ids as text, so `"5"` and `5` name one row). `0` is kept as `"0"`: the
/// official clients send it for "no id yet", and only an insert accepts it.
fn body_integer_id(value: &Value) -> Result<String, RuleError> {
    match value {
        Value::Number(n) if n.as_u64() == Some(0) => Ok("0".to_owned()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => parse_integer_id(&i.to_string()).map(|i| i.to_string()),
            None => parse_integer_id("").map(|i| i.to_string()),
        },
        Value::String(s) => parse_integer_id(s).map(|i| i.to_string()),
        _ => parse_integer_id("").map(|i| i.to_string()),
    }
}

/// A fresh server-generated id: lower-case UUID v4 with dashes, as the Node server makes.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The id an insert gets: the client's (checked) or a new one. On an integer-id table the
/// database assigns it (None); a body id other than null or 0 is refused there, as the official
/// clients refuse it ("Cannot insert if the id member is already set"): the Node server
/// silently drops it, which would answer a different id than the client asked for.
pub fn insert_id(request: &WriteRequest, id_type: IdType) -> Result<Option<String>, RuleError> {
    match (id_type, &request.id) {
        (IdType::String, Some(id)) => {
            check_id(id)?;
            Ok(Some(id.clone()))
        }
        (IdType::String, None) => Ok(Some(new_id())),
        (IdType::Integer, None) => Ok(None),
        (IdType::Integer, Some(id)) if id == "0" => Ok(None),
        (IdType::Integer, Some(_)) => Err(RuleError::InvalidId(
            "this table has integer ids assigned by the database: an insert must not carry an id"
                .into(),
        )),
    }
}

/// An update body's `id`, when present, must equal the URL's.
pub fn check_update_id(request: &WriteRequest, url_id: &str) -> Result<(), RuleError> {
    match &request.id {
        Some(id) if id != url_id => Err(RuleError::IdMismatch),
        _ => Ok(()),
    }
}

/// The item a collection-URL write (`PATCH /tables/{t}`, `DELETE /tables/{t}?id=…`, the Node
/// server's routes) names: the body's `id` (a string, or a number on an integer-id table) or
/// the query's `id` values (already percent-decoded). Both may be given when they are equal,
/// as the id routes accept a body id equal to the URL's (400 `id_mismatch` otherwise); naming
/// none is 400 `invalid_id`. The id is checked against the table afterwards, as a URL id is.
pub fn collection_id(
    body: Option<&Map<String, Value>>,
    query_ids: &[String],
) -> Result<String, RuleError> {
    let from_body = match body.and_then(|b| {
        b.iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(system::ID))
    }) {
        None | Some((_, Value::Null)) => None,
        Some((_, Value::String(s))) => Some(s.clone()),
        Some((_, Value::Number(n))) => Some(n.to_string()),
        Some(_) => {
            return Err(RuleError::InvalidId(
                "the id must be a string or an integer".into(),
            ))
        }
    };
    let from_query = match query_ids {
        [] => None,
        [one] => Some(one.clone()),
        _ => {
            return Err(RuleError::InvalidId(
                "the query gives more than one id".into(),
            ))
        }
    };
    match (from_body, from_query) {
        (Some(b), Some(q)) if b != q => Err(RuleError::IdMismatch),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Err(RuleError::InvalidId(
            "a write to the table URL needs the item's id in the body or as ?id=".into(),
        )),
    }
}

/// Which status a failed version check answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MismatchStatus {
    /// The expected version came from `If-Match`: 412 Precondition Failed.
    PreconditionFailed,
    /// The expected version came from the body's `version`: 409 Conflict.
    Conflict,
}

/// The version a conditional write expects, and how a mismatch is reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precondition {
    /// The version the row must have (None: unconditional).
    pub expected: Option<String>,
    /// Every version an `If-Match` list names when it names more than one (else empty): the
    /// caller picks the one the row has, if any, as `expected` (see `App::settle`).
    pub any_of: Vec<String>,
    /// Status for a mismatch.
    pub on_mismatch: MismatchStatus,
}

/// Decide the precondition of a PATCH/DELETE/undelete.
///
/// `If-Match` wins over a body `version`. `If-Match: *` (alone or in a list) means "any
/// version" (the .NET server's reading, and HTTP's): the write is unconditional. A list
/// `"a", "b"` matches when any listed tag matches. A quoted value is unquoted and `\"`
/// unescaped; an unquoted value is taken as is (Node accepts `If-Match: Mw==`).
pub fn precondition(if_match: Option<&str>, body_version: Option<&str>) -> Precondition {
    match if_match {
        Some(value) => {
            let versions = headers::if_match_versions(value);
            if versions.iter().any(|v| v == "*") {
                Precondition {
                    expected: None,
                    any_of: Vec::new(),
                    on_mismatch: MismatchStatus::PreconditionFailed,
                }
            } else {
                Precondition {
                    expected: versions.first().cloned(),
                    any_of: if versions.len() > 1 {
                        versions
                    } else {
                        Vec::new()
                    },
                    on_mismatch: MismatchStatus::PreconditionFailed,
                }
            }
        }
        None => Precondition {
            expected: body_version.map(str::to_owned),
            any_of: Vec::new(),
            on_mismatch: MismatchStatus::Conflict,
        },
    }
}

/// Render a per-table write counter as the opaque `version` string: base64 of the 8-byte
/// big-endian counter, like a SQL Server rowversion (`AAAAAAAAB9E=`).
pub fn version_from_counter(counter: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(counter.to_be_bytes())
}

/// A number column's JSON value: integral values within ±2^53 print without `.0`.
pub fn json_number(value: f64) -> Value {
    const EXACT_INT_MAX: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT_INT_MAX {
        // In range and integral, so the cast is exact.
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Check `$select` names against the schema (unknown names are an error) and return them with
/// the schema's spelling.
pub fn check_select(select: &[String], schema: &TableSchema) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(select.len());
    let mut star = false;
    for name in select {
        // `*` is every column; the other names are still checked, wherever `*` stands.
        if name == "*" {
            star = true;
            continue;
        }
        let known = schema.property_names().find(|p| *p == name.as_str());
        match known {
            Some(p) => out.push(p.to_owned()),
            None => return Err(format!("unknown column '{name}' in $select")),
        }
    }
    if star {
        return Ok(schema.property_names().map(str::to_owned).collect());
    }
    Ok(out)
}

/// Keep only the selected properties of an item, in the item's order (the old `$select` path,
/// kept as the tests' oracle of `store::PageEncoder`).
#[cfg(test)]
pub(crate) fn project(item: Item, select: &[String]) -> Item {
    item.into_iter()
        .filter(|(k, _)| select.iter().any(|s| s == k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> TableSchema {
        TableSchema {
            name: "T".into(),
            columns: vec![
                Column {
                    name: "text".into(),
                    ty: ColumnType::String,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::Number,
                },
                Column {
                    name: "done".into(),
                    ty: ColumnType::Boolean,
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

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn check(v: Value) -> Result<BodyCheck, RuleError> {
        check_body(&body(v), &schema(), false, 10)
    }

    #[test]
    fn body_values_are_converted_and_system_props_extracted() {
        let got = check(
            json!({"id": "a", "version": "v1", "TEXT": "x", "n": 2.5, "done": 1, "due": "2024-01-02T03:04:05+01:00"}),
        );
        let expected = WriteRequest {
            id: Some("a".into()),
            version: Some("v1".into()),
            values: vec![
                ("text".into(), SqlValue::Text("x".into())),
                ("n".into(), SqlValue::Real(2.5)),
                ("done".into(), SqlValue::Bool(true)),
                (
                    "due".into(),
                    SqlValue::Timestamp(time::parse_timestamp("2024-01-02T02:04:05.000Z").unwrap()),
                ),
            ],
        };
        assert_eq!(got, Ok(BodyCheck::Write(expected)));
    }

    #[test]
    fn reserved_properties_in_any_case_are_rejected() {
        for name in ["createdAt", "UPDATEDAT", "deleted"] {
            assert_eq!(
                check(json!({ name: 1 })),
                Err(RuleError::Reserved(name.into()))
            );
        }
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert_eq!(
            check(json!({"text": 5})),
            Err(RuleError::WrongType(
                "The property 'text' must be a string or null, not a number".into()
            ))
        );
        assert!(matches!(
            check(json!({"done": "yes"})),
            Err(RuleError::WrongType(_))
        ));
        assert!(matches!(
            check(json!({"due": "tomorrow"})),
            Err(RuleError::WrongType(_))
        ));
        assert!(matches!(
            check(json!({"n": [1]})),
            Err(RuleError::WrongType(_))
        ));
        assert!(matches!(
            check(json!({"id": 5})),
            Err(RuleError::InvalidId(_))
        ));
        assert!(matches!(
            check(json!({"version": 5})),
            Err(RuleError::WrongType(_))
        ));
    }

    #[test]
    fn unknown_columns_depend_on_dynamic_schema() {
        assert_eq!(
            check(json!({"extra": 1})),
            Err(RuleError::UnknownColumn(
                "The property 'extra' is not a column of table 'T'".into()
            ))
        );
        let grow = check_body(
            &body(json!({"extra": 1, "flag": true, "nothing": null, "s": "x"})),
            &schema(),
            true,
            10,
        );
        assert_eq!(
            grow,
            Ok(BodyCheck::AddColumns {
                partial: WriteRequest {
                    id: None,
                    version: None,
                    values: vec![]
                },
                columns: vec![
                    Column {
                        name: "extra".into(),
                        ty: ColumnType::Number
                    },
                    Column {
                        name: "flag".into(),
                        ty: ColumnType::Boolean
                    },
                    Column {
                        name: "s".into(),
                        ty: ColumnType::String
                    },
                ]
            })
        );
        assert!(matches!(
            check_body(&body(json!({"bad name": 1})), &schema(), true, 10),
            Err(RuleError::UnknownColumn(_))
        ));
        assert!(matches!(
            check_body(&body(json!({"a": 1})), &schema(), true, 4),
            Err(RuleError::UnknownColumn(_))
        ));
        // A null for an unknown property is dropped, not an error.
        assert_eq!(
            check_body(&body(json!({"nothing": null})), &schema(), true, 10),
            Ok(BodyCheck::Write(WriteRequest {
                id: None,
                version: None,
                values: vec![]
            }))
        );
    }

    #[test]
    fn ids() {
        let req = |id: Option<&str>| WriteRequest {
            id: id.map(Into::into),
            version: None,
            values: vec![],
        };
        let s = IdType::String;
        assert_eq!(insert_id(&req(Some("abc")), s), Ok(Some("abc".into())));
        assert!(matches!(
            insert_id(&req(Some("a/b")), s),
            Err(RuleError::InvalidId(_))
        ));
        assert!(matches!(
            insert_id(&req(Some("..")), s),
            Err(RuleError::InvalidId(_))
        ));
        let generated = insert_id(&req(None), s).unwrap().unwrap();
        assert_eq!(generated.len(), 36);
        assert_eq!(generated, generated.to_lowercase());
        assert_eq!(
            check_update_id(&req(Some("x")), "y"),
            Err(RuleError::IdMismatch)
        );
        assert_eq!(check_update_id(&req(Some("x")), "x"), Ok(()));
        assert_eq!(check_update_id(&req(None), "x"), Ok(()));
    }

    #[test]
    fn collection_ids() {
        let q = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let b = body(json!({"ID": "a", "text": "x"}));
        assert_eq!(collection_id(Some(&b), &q(&[])), Ok("a".into()));
        assert_eq!(collection_id(Some(&b), &q(&["a"])), Ok("a".into()));
        assert_eq!(
            collection_id(Some(&b), &q(&["b"])),
            Err(RuleError::IdMismatch)
        );
        assert_eq!(collection_id(None, &q(&["b"])), Ok("b".into()));
        let n = body(json!({"id": 5}));
        assert_eq!(collection_id(Some(&n), &q(&["5"])), Ok("5".into()));
        assert_eq!(
            collection_id(Some(&body(json!({"id": null}))), &q(&["c"])),
            Ok("c".into())
        );
        assert!(matches!(
            collection_id(Some(&body(json!({"text": "x"}))), &q(&[])),
            Err(RuleError::InvalidId(_))
        ));
        assert!(matches!(
            collection_id(None, &q(&["a", "b"])),
            Err(RuleError::InvalidId(_))
        ));
        assert!(matches!(
            collection_id(Some(&body(json!({"id": true}))), &q(&[])),
            Err(RuleError::InvalidId(_))
        ));
    }

    #[test]
    fn integer_ids() {
        let int = IdType::Integer;
        let req = |id: Option<&str>| WriteRequest {
            id: id.map(Into::into),
            version: None,
            values: vec![],
        };
        assert_eq!(insert_id(&req(None), int), Ok(None));
        assert_eq!(insert_id(&req(Some("0")), int), Ok(None));
        assert!(matches!(
            insert_id(&req(Some("5")), int),
            Err(RuleError::InvalidId(_))
        ));
        assert_eq!(check_table_id("42", int), Ok("42".into()));
        assert_eq!(
            check_table_id("9223372036854775807", int),
            Ok("9223372036854775807".into())
        );
        for bad in [
            "",
            "0",
            "007",
            "-1",
            "+1",
            "1.0",
            "abc",
            "9223372036854775808",
        ] {
            assert!(
                matches!(check_table_id(bad, int), Err(RuleError::InvalidId(_))),
                "{bad:?}"
            );
        }
        let mut t = schema();
        t.id_type = int;
        let id_of = |v: Value| match check_body(&body(v), &t, false, 10) {
            Ok(BodyCheck::Write(w)) => Ok(w.id),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(id_of(json!({"id": 5})), Ok(Some("5".into())));
        assert_eq!(id_of(json!({"id": "5"})), Ok(Some("5".into())));
        assert_eq!(id_of(json!({"id": 0})), Ok(Some("0".into())));
        assert_eq!(id_of(json!({"id": null})), Ok(None));
        for bad in [json!(1.5), json!(-3), json!("x"), json!(true), json!([1])] {
            assert!(
                matches!(id_of(json!({ "id": bad })), Err(RuleError::InvalidId(_))),
                "{bad}"
            );
        }
        assert_eq!(t.column_type("id"), Some(ColumnType::Number));
        assert_eq!(schema().column_type("id"), Some(ColumnType::String));
    }

    #[test]
    fn precondition_prefers_if_match() {
        let p = precondition(Some("\"AAA=\""), Some("body"));
        assert_eq!(
            p,
            Precondition {
                expected: Some("AAA=".into()),
                any_of: vec![],
                on_mismatch: MismatchStatus::PreconditionFailed
            }
        );
        let p = precondition(Some("Mw=="), None);
        assert_eq!(p.expected.as_deref(), Some("Mw=="));
        let p = precondition(Some("*"), Some("body"));
        assert_eq!(
            p,
            Precondition {
                expected: None,
                any_of: vec![],
                on_mismatch: MismatchStatus::PreconditionFailed
            }
        );
        let p = precondition(None, Some("v"));
        assert_eq!(
            p,
            Precondition {
                expected: Some("v".into()),
                any_of: vec![],
                on_mismatch: MismatchStatus::Conflict
            }
        );
        assert_eq!(precondition(None, None).expected, None);
        let p = precondition(Some("\"a\", \"b\""), None);
        assert_eq!(p.expected.as_deref(), Some("a"));
        assert_eq!(p.any_of, ["a", "b"]);
        assert_eq!(precondition(Some("\"a\", *"), None).expected, None);
    }

    #[test]
    fn versions_and_numbers_render() {
        assert_eq!(version_from_counter(2001), "AAAAAAAAB9E=");
        assert_eq!(version_from_counter(1), "AAAAAAAAAAE=");
        assert_eq!(json_number(3.0), json!(3));
        assert_eq!(json_number(-0.5), json!(-0.5));
        assert_eq!(json_number(1e300), json!(1e300));
    }

    #[test]
    fn select_is_checked_and_projects() {
        let s = schema();
        assert_eq!(
            check_select(&["text".into(), "id".into()], &s),
            Ok(vec!["text".into(), "id".into()])
        );
        assert_eq!(
            check_select(&["nope".into()], &s),
            Err("unknown column 'nope' in $select".into())
        );
        // `*` is every property; the other names are checked wherever `*` stands.
        assert_eq!(
            check_select(&["*".into(), "id".into()], &s).map(|v| v.len()),
            Ok(9)
        );
        assert_eq!(
            check_select(&["*".into(), "nope".into()], &s),
            Err("unknown column 'nope' in $select".into())
        );
        let item: Item = body(json!({"id": "1", "text": "a", "n": 1}));
        assert_eq!(
            Value::Object(project(item, &["text".into(), "id".into()])),
            json!({"id": "1", "text": "a"})
        );
    }
}
