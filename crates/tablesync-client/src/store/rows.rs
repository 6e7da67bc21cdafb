//! Rows of sync tables: JSON <-> SQLite conversion, local writes, server writes, local queries.
//!
//! Two write paths, as in the reference client (protocol.md 6.2):
//! * *local* writes (the app's insert/update) refuse unknown properties and values of the wrong
//!   type, because silently dropping app data would lose it;
//! * *server* writes (pulled rows, push results, resolutions) ignore properties the local table
//!   does not declare (the server may have more columns), but still refuse values of the wrong
//!   type for declared columns, because a garbage answer must not corrupt the store.

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::{type_name, TableDefinition};
use crate::error::{Error, Result};
use tablesync_protocol::odata::sql::ColumnType;
use tablesync_protocol::system;

/// Largest integer a double holds exactly: integral numbers up to here print without `.0`.
const EXACT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;

/// Normalises a date string to the wire form `YYYY-MM-DDTHH:MM:SS.sssZ`.
///
/// A valid date already in the wire form (what our server and the official ones send, three
/// dates per pulled row) is returned as it is: the parser checks every field's range and
/// normalises nothing else, so a 24-byte string with `T`, `.` and `Z` in place that parses is
/// its own wire form, and formatting it again (a fifth of a cold pull's CPU) is skipped.
pub(crate) fn normalize_date(s: &str) -> Option<String> {
    let mut out = String::new();
    normalize_date_into(s, &mut out).then_some(out)
}

/// [`normalize_date`] appending to `out` (a pulled page's text arena); `false`, with `out` as it
/// was, when `s` is not a date.
pub(crate) fn normalize_date_into(s: &str, out: &mut String) -> bool {
    let Ok(t) = tablesync_protocol::time::parse_timestamp(s) else {
        return false;
    };
    let b = s.as_bytes();
    if b.len() == 24 && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z' {
        out.push_str(s);
    } else {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(out, "{t}");
    }
    true
}

/// A JSON number from a double: integral values (|v| <= 2^53) as integers, so `5.0` reads `5`.
pub(crate) fn number_json(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() <= EXACT_INTEGER_MAX {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Converts a JSON value to the SQLite value stored for a column of type `ty`.
pub(crate) fn to_sql(table: &str, column: &str, ty: ColumnType, v: &Value) -> Result<SqlValue> {
    let mismatch = || Error::TypeMismatch {
        table: table.to_string(),
        column: column.to_string(),
        expected: type_name(ty),
        value: truncate(&v.to_string()),
    };
    Ok(match (ty, v) {
        (_, Value::Null) => SqlValue::Null,
        (ColumnType::Number, Value::Number(n)) => SqlValue::Real(n.as_f64().ok_or_else(mismatch)?),
        (ColumnType::Boolean, Value::Bool(b)) => SqlValue::Integer(i64::from(*b)),
        (ColumnType::Date, Value::String(s)) => {
            SqlValue::Text(normalize_date(s).ok_or_else(mismatch)?)
        }
        (ColumnType::String, Value::String(s)) => SqlValue::Text(s.clone()),
        _ => return Err(mismatch()),
    })
}

fn truncate(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    if s.chars().count() > SHOWN_CHARS_MAX {
        let mut t: String = s.chars().take(SHOWN_CHARS_MAX).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Converts a stored value back to JSON for a column of type `ty`.
fn to_json(ty: ColumnType, v: ValueRef<'_>) -> Value {
    match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Boolean, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (ColumnType::Boolean, ValueRef::Real(f)) => Value::Bool(f != 0.0),
        (_, ValueRef::Integer(i)) => Value::from(i),
        (_, ValueRef::Real(f)) => number_json(f),
        (_, ValueRef::Text(t)) => Value::String(String::from_utf8_lossy(t).into_owned()),
        (_, ValueRef::Blob(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// The `SELECT` list of a table in output order: system columns, then declared columns.
pub(crate) fn select_list(def: &TableDefinition) -> String {
    let mut cols: Vec<String> = system::ALL.iter().map(|c| format!("\"{c}\"")).collect();
    cols.extend(def.columns().iter().map(|c| format!("\"{}\"", c.name)));
    cols.join(", ")
}

/// Builds the JSON object of a row selected with [`select_list`].
pub(crate) fn row_to_json(
    def: &TableDefinition,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Map<String, Value>> {
    let mut m = Map::new();
    let sys_types = [
        ColumnType::String,
        ColumnType::Date,
        ColumnType::Date,
        ColumnType::String,
        ColumnType::Boolean,
    ];
    for (i, (name, ty)) in system::ALL.iter().zip(sys_types).enumerate() {
        m.insert((*name).to_string(), to_json(ty, row.get_ref(i)?));
    }
    for (j, c) in def.columns().iter().enumerate() {
        m.insert(
            c.name.clone(),
            to_json(c.ty, row.get_ref(system::ALL.len() + j)?),
        );
    }
    Ok(m)
}

/// Reads one row by id.
pub(crate) fn read_row(
    conn: &Connection,
    def: &TableDefinition,
    id: &str,
) -> Result<Option<Map<String, Value>>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"id\" = ?1",
        select_list(def),
        def.name()
    );
    Ok(conn
        .query_row(&sql, [id], |r| row_to_json(def, r))
        .optional()?)
}

/// Reads one row by id with **every** column the local table has, for the push payload.
///
/// Columns the definition in use does not declare (declared by another definition of the same
/// file, or added behind the SDK's back) are read by their SQLite storage type (`REAL` →
/// number, `INTEGER` → boolean, anything else → text), the mapping of "Column types and
/// storage". The server must never receive a row with fewer columns than the local copy has:
/// an update of a missing property is not sent, but an insert without it would store null.
#[cfg(test)]
pub(crate) fn read_row_for_push(
    conn: &Connection,
    def: &TableDefinition,
    id: &str,
) -> Result<Option<Map<String, Value>>> {
    read_row(conn, &push_definition(conn, def)?, id)
}

/// `def` extended with every column the SQLite table has that `def` does not declare (typed
/// by storage class, see [`read_row_for_push`]): the definition push payloads are read with.
/// A batched push reads it once per table and window instead of once per row.
pub(crate) fn push_definition(conn: &Connection, def: &TableDefinition) -> Result<TableDefinition> {
    let actual: Vec<(String, String)> = {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{}\")", def.name()))?;
        let cols = stmt
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        cols
    };
    let mut full = def.clone();
    for (name, decl) in actual {
        let known = system::ALL.iter().any(|s| s.eq_ignore_ascii_case(&name))
            || def
                .columns()
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&name));
        if !known {
            let ty = match decl.to_ascii_uppercase().as_str() {
                "REAL" => ColumnType::Number,
                "INTEGER" => ColumnType::Boolean,
                _ => ColumnType::String,
            };
            full = full.column(name, ty);
        }
    }
    Ok(full)
}

/// Whether a row exists.
pub(crate) fn row_exists(conn: &Connection, table: &str, id: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            &format!("SELECT 1 FROM \"{table}\" WHERE \"id\" = ?1"),
            [id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Deletes one row; returns whether it existed.
pub(crate) fn delete_row(conn: &Connection, table: &str, id: &str) -> Result<bool> {
    Ok(conn.execute(&format!("DELETE FROM \"{table}\" WHERE \"id\" = ?1"), [id])? > 0)
}

/// Takes the id out of an item: must be a string that passes the protocol's id rules.
pub(crate) fn item_id(item: &Map<String, Value>) -> Result<Option<String>> {
    match item.get(system::ID) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            system::validate_id(s).map_err(|e| Error::InvalidId {
                id: s.clone(),
                reason: id_reason(&e),
            })?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(Error::InvalidId {
            id: other.to_string(),
            reason: "offline sync requires string ids",
        }),
    }
}

fn id_reason(e: &system::IdError) -> &'static str {
    match e {
        system::IdError::Empty => "empty",
        system::IdError::TooLong { .. } => "longer than 255 characters",
        system::IdError::ControlChar { .. } => "contains a control character",
        system::IdError::ForbiddenChar { .. } => "contains one of \" + ? \\ / `",
        system::IdError::DotSegment => "is '.' or '..'",
        _ => "invalid",
    }
}

/// The column/value pairs of a local write: refuses unknown properties; ignores `createdAt`,
/// `updatedAt` and `deleted` (server-owned); `version` only when `keep_version`.
fn local_assignments(
    def: &TableDefinition,
    item: &Map<String, Value>,
    keep_version: bool,
) -> Result<Vec<(String, SqlValue)>> {
    let mut out = Vec::new();
    for (k, v) in item {
        if k == system::ID || system::is_reserved_on_write(k) {
            continue;
        }
        if k == system::VERSION {
            if keep_version {
                match v {
                    Value::String(s) => out.push((k.clone(), SqlValue::Text(s.clone()))),
                    Value::Null => out.push((k.clone(), SqlValue::Null)),
                    _ => {
                        return Err(Error::TypeMismatch {
                            table: def.name().to_string(),
                            column: k.clone(),
                            expected: "string",
                            value: truncate(&v.to_string()),
                        })
                    }
                }
            }
            continue;
        }
        let ty = def.column_type(k).ok_or_else(|| Error::UnknownColumn {
            table: def.name().to_string(),
            column: k.clone(),
        })?;
        out.push((k.clone(), to_sql(def.name(), k, ty, v)?));
    }
    Ok(out)
}

/// The type of a column of a server write: system columns and declared columns; `None` for
/// `id` (the key, never assigned) and properties the local table does not declare (ignored).
fn server_column_type(def: &TableDefinition, name: &str) -> Option<ColumnType> {
    match name {
        system::ID => None,
        system::CREATED_AT | system::UPDATED_AT => Some(ColumnType::Date),
        system::VERSION => Some(ColumnType::String),
        system::DELETED => Some(ColumnType::Boolean),
        _ => def.column_type(name),
    }
}

/// The stored value of server property `name` (of type `ty`) for a server write.
pub(crate) fn server_value(
    def: &TableDefinition,
    name: &str,
    ty: ColumnType,
    v: &Value,
) -> Result<SqlValue> {
    Ok(match (name, v) {
        // A lenient reading of what official servers send for system columns: a numeric
        // `deleted` (0/1) is a boolean, a non-string version is its JSON text.
        (system::DELETED, Value::Number(n)) => {
            SqlValue::Integer(i64::from(n.as_f64() != Some(0.0)))
        }
        // A null `deleted` is "not deleted", as a missing one is (the .NET client reads it
        // so); the local column is NOT NULL.
        (system::DELETED, Value::Null) => SqlValue::Integer(0),
        (system::VERSION, Value::Number(_)) => SqlValue::Text(v.to_string()),
        _ => to_sql(def.name(), name, ty, v)?,
    })
}

/// The column/value pairs of a server write: declared columns and system columns only.
fn server_assignments(
    def: &TableDefinition,
    item: &Map<String, Value>,
) -> Result<Vec<(String, SqlValue)>> {
    let mut out = Vec::new();
    for (k, v) in item {
        let Some(ty) = server_column_type(def, k) else {
            continue;
        };
        out.push((k.clone(), server_value(def, k, ty, v)?));
    }
    Ok(out)
}

/// Refuses a server copy whose id breaks the protocol's id rules (it could not be pushed or
/// addressed later).
pub(crate) fn check_server_id(id: &str) -> Result<()> {
    if system::validate_id(id).is_err() {
        return Err(Error::InvalidResponse(format!(
            "server item has an invalid id {:?}",
            truncate(id)
        )));
    }
    Ok(())
}

/// The upsert of a pulled row of `table` assigning `assigned` (writable columns in table order):
/// `INSERT … VALUES (?1 = id, ?2…) ON CONFLICT ("id") DO UPDATE SET` each of them, so a column
/// the row does not carry is left as it is (null or its default in a new row), as
/// [`write_server`] does.
pub(crate) fn upsert_sql(table: &str, assigned: &[&str]) -> String {
    if assigned.is_empty() {
        return format!(
            "INSERT INTO \"{table}\" (\"id\") VALUES (?1) ON CONFLICT (\"id\") DO NOTHING"
        );
    }
    let names: String = assigned.iter().map(|c| format!(", \"{c}\"")).collect();
    let placeholders: String = (0..assigned.len())
        .map(|i| format!(", ?{}", i + 2))
        .collect();
    let sets: Vec<String> = assigned
        .iter()
        .map(|c| format!("\"{c}\" = excluded.\"{c}\""))
        .collect();
    format!(
        "INSERT INTO \"{table}\" (\"id\"{names}) VALUES (?1{placeholders}) \
         ON CONFLICT (\"id\") DO UPDATE SET {}",
        sets.join(", ")
    )
}

fn insert_or_update(
    conn: &Connection,
    table: &str,
    id: &str,
    assignments: Vec<(String, SqlValue)>,
) -> Result<()> {
    conn.execute(
        &format!("INSERT OR IGNORE INTO \"{table}\" (\"id\") VALUES (?1)"),
        [id],
    )?;
    if assignments.is_empty() {
        return Ok(());
    }
    let sets: Vec<String> = assignments
        .iter()
        .enumerate()
        .map(|(i, (k, _))| format!("\"{k}\" = ?{}", i + 2))
        .collect();
    let sql = format!(
        "UPDATE \"{table}\" SET {} WHERE \"id\" = ?1",
        sets.join(", ")
    );
    let mut params: Vec<SqlValue> = vec![SqlValue::Text(id.to_string())];
    params.extend(assignments.into_iter().map(|(_, v)| v));
    conn.execute(&sql, rusqlite::params_from_iter(params))?;
    Ok(())
}

/// A local insert or update of `item` (which must have `id`); `keep_version` lets an update set
/// the row's version (resolutions use it to adopt the server's version).
pub(crate) fn write_local(
    conn: &Connection,
    def: &TableDefinition,
    id: &str,
    item: &Map<String, Value>,
    keep_version: bool,
) -> Result<()> {
    let a = local_assignments(def, item, keep_version)?;
    insert_or_update(conn, def.name(), id, a)
}

/// Writes a server copy of an item (pull, push result, resolution). Returns `false` when the
/// item has no usable id.
pub(crate) fn write_server(
    conn: &Connection,
    def: &TableDefinition,
    item: &Map<String, Value>,
) -> Result<bool> {
    let Some(Value::String(id)) = item.get(system::ID) else {
        return Ok(false);
    };
    check_server_id(id)?;
    let a = server_assignments(def, item)?;
    insert_or_update(conn, def.name(), id, a)?;
    Ok(true)
}

/// Checks that a server copy can be written to the local table (the same conversions as
/// [`write_server`], without writing): the push uses it to refuse a garbage 2xx answer before
/// completing the operation.
pub(crate) fn check_server_item(def: &TableDefinition, item: &Map<String, Value>) -> Result<()> {
    server_assignments(def, item).map(|_| ())
}

/// Updates only the server-owned columns (`createdAt`, `updatedAt`, `version`) of an existing row,
/// used when the app edited the item while its push was in flight.
pub(crate) fn write_server_system_columns(
    conn: &Connection,
    def: &TableDefinition,
    item: &Map<String, Value>,
) -> Result<()> {
    let Some(Value::String(id)) = item.get(system::ID) else {
        return Ok(());
    };
    let only: Map<String, Value> = item
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                system::CREATED_AT | system::UPDATED_AT | system::VERSION
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let a = server_assignments(def, &only)?;
    if a.is_empty() {
        return Ok(());
    }
    let sets: Vec<String> = a
        .iter()
        .enumerate()
        .map(|(i, (k, _))| format!("\"{k}\" = ?{}", i + 2))
        .collect();
    let mut params: Vec<SqlValue> = vec![SqlValue::Text(id.clone())];
    params.extend(a.into_iter().map(|(_, v)| v));
    conn.execute(
        &format!(
            "UPDATE \"{}\" SET {} WHERE \"id\" = ?1",
            def.name(),
            sets.join(", ")
        ),
        rusqlite::params_from_iter(params),
    )?;
    Ok(())
}

/// The item as sent to the server: the row without `createdAt`, `updatedAt`, `deleted` and
/// `version` (the version travels in `If-Match`), plus the version separately.
pub(crate) fn payload(row: &Map<String, Value>) -> (Map<String, Value>, Option<String>) {
    let version = match row.get(system::VERSION) {
        Some(Value::String(v)) => Some(v.clone()),
        _ => None,
    };
    let body = row
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                system::CREATED_AT | system::UPDATED_AT | system::DELETED | system::VERSION
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (body, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> TableDefinition {
        TableDefinition::new("T")
            .column("text", ColumnType::String)
            .column("n", ColumnType::Number)
            .column("b", ColumnType::Boolean)
            .column("due", ColumnType::Date)
    }

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut c).unwrap();
        let tx = c.transaction().unwrap();
        super::super::create_or_extend(&tx, &def()).unwrap();
        tx.commit().unwrap();
        c
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn local_round_trip_and_types() {
        let c = conn();
        let d = def();
        write_local(
            &c,
            &d,
            "a",
            &obj(json!({"id":"a","text":"x","n":5.0,"b":true,"due":"2020-01-02T03:04:05+01:00","updatedAt":"ignored"})),
            false,
        )
        .unwrap();
        let row = read_row(&c, &d, "a").unwrap().unwrap();
        assert_eq!(
            Value::Object(row),
            json!({"id":"a","createdAt":null,"updatedAt":null,"version":null,"deleted":false,
                   "text":"x","n":5,"b":true,"due":"2020-01-02T02:04:05.000Z"})
        );
        let e = write_local(&c, &d, "a", &obj(json!({"nope":1})), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column \"nope\" is not defined on the local table \"T\""
        );
        let e = write_local(&c, &d, "a", &obj(json!({"b":"yes"})), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "value for column \"b\" of table \"T\" is not a valid boolean: \"yes\""
        );
        let e = write_local(&c, &d, "a", &obj(json!({"due":"tomorrow"})), false).unwrap_err();
        assert!(matches!(
            e,
            Error::TypeMismatch {
                expected: "date",
                ..
            }
        ));
    }

    #[test]
    fn server_writes_ignore_unknown_columns_and_keep_system_columns() {
        let c = conn();
        let d = def();
        assert!(write_server(
            &c,
            &d,
            &obj(json!({"id":"s","text":"t","extra":1,"version":"MQ==","updatedAt":"2020-01-01T00:00:00.123Z","createdAt":"2020-01-01T00:00:00Z","deleted":false}))
        )
        .unwrap());
        let row = read_row(&c, &d, "s").unwrap().unwrap();
        assert_eq!(row["version"], json!("MQ=="));
        assert_eq!(row["createdAt"], json!("2020-01-01T00:00:00.000Z"));
        assert!(!write_server(&c, &d, &obj(json!({"text":"no id"}))).unwrap());
        assert!(matches!(
            write_server(&c, &d, &obj(json!({"id":"s","n":"NaN"}))),
            Err(Error::TypeMismatch { .. })
        ));
        let (body, version) = payload(&row);
        assert_eq!(version.as_deref(), Some("MQ=="));
        assert_eq!(
            Value::Object(body),
            json!({"id":"s","text":"t","n":null,"b":null,"due":null})
        );
    }

    #[test]
    fn the_push_payload_has_every_column_of_the_local_row() {
        let c = conn();
        // A column the definition in use does not declare (added by another definition).
        c.execute_batch(
            "ALTER TABLE \"T\" ADD COLUMN \"stars\" REAL; \
             ALTER TABLE \"T\" ADD COLUMN \"pinned\" INTEGER; \
             ALTER TABLE \"T\" ADD COLUMN \"note\" TEXT;",
        )
        .unwrap();
        let narrow = TableDefinition::new("T").column("text", ColumnType::String);
        write_local(&c, &narrow, "p", &obj(json!({"text": "hello"})), false).unwrap();
        c.execute(
            "UPDATE \"T\" SET \"n\" = 2.5, \"b\" = 1, \"stars\" = 5, \"pinned\" = 0, \"note\" = 'x' WHERE id = 'p'",
            [],
        )
        .unwrap();
        let row = read_row_for_push(&c, &narrow, "p").unwrap().unwrap();
        let (body, version) = payload(&row);
        assert_eq!(version, None);
        assert_eq!(
            Value::Object(body),
            json!({"id": "p", "text": "hello", "n": 2.5, "b": true, "due": null,
                   "stars": 5, "pinned": false, "note": "x"})
        );
        assert_eq!(read_row_for_push(&c, &narrow, "nope").unwrap(), None);
    }

    #[test]
    fn a_null_deleted_from_the_server_is_false() {
        let c = conn();
        let d = def();
        assert!(write_server(
            &c,
            &d,
            &obj(json!({"id": "z", "text": "t", "deleted": null, "version": "v1"}))
        )
        .unwrap());
        assert_eq!(
            read_row(&c, &d, "z").unwrap().unwrap()["deleted"],
            json!(false)
        );
    }

    #[test]
    fn dates_in_the_wire_form_are_kept_and_others_normalised() {
        for (input, wire) in [
            ("2020-01-02T03:04:05.678Z", "2020-01-02T03:04:05.678Z"),
            ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z"),
            ("2020-01-02t03:04:05.678z", "2020-01-02T03:04:05.678Z"),
            ("2020-01-02T03:04:05.6789Z", "2020-01-02T03:04:05.678Z"),
            ("2020-01-02T03:04:05.67Z", "2020-01-02T03:04:05.670Z"),
            ("2020-01-02T03:04:05Z", "2020-01-02T03:04:05.000Z"),
            ("2020-01-02T04:04:05+01:00", "2020-01-02T03:04:05.000Z"),
        ] {
            assert_eq!(normalize_date(input).as_deref(), Some(wire), "{input}");
            let formatted = tablesync_protocol::time::parse_timestamp(input)
                .unwrap()
                .to_string();
            assert_eq!(formatted, wire, "{input}");
        }
        for bad in [
            "2020-02-30T00:00:00.000Z",
            "2020-01-01T24:00:00.000Z",
            "2020-01-01T00:00:60.000Z",
            "2020-13-01T00:00:00.000Z",
            "2020-01-01T00:00:00.000X",
        ] {
            assert_eq!(normalize_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(item_id(&obj(json!({}))).unwrap(), None);
        assert_eq!(
            item_id(&obj(json!({"id":"x"}))).unwrap().as_deref(),
            Some("x")
        );
        assert!(matches!(
            item_id(&obj(json!({"id":5}))),
            Err(Error::InvalidId { .. })
        ));
        assert!(matches!(
            item_id(&obj(json!({"id":"a/b"}))),
            Err(Error::InvalidId { .. })
        ));
    }
}
