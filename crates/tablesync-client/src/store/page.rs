//! A pulled page decoded straight into column values, and the writer that stores it.
//!
//! A cold pull spent about a third of its client CPU building a `serde_json` map per row (a
//! `String` per key, a `Value` per property, a hash per insert) only to look each property up
//! again, convert it and clone it into a bound parameter. Here the page's JSON is read once by
//! serde visitors into a flat, row-major buffer of [`Cell`]s (one per row and column of the local
//! table, in table order) whose text lives in one arena `String` per page; properties the local
//! table does not declare are skipped while parsing, and nothing is allocated per row. The
//! writer binds the cells straight into cached `INSERT … ON CONFLICT DO UPDATE` statements, one
//! per set of columns the rows carry, held for the whole page.
//!
//! The meaning is exactly that of the `serde_json` path it replaces (`sync::pull::parse_page`
//! then `rows::write_server` per row; the tests compare both on arbitrary pages):
//! * the same bodies are refused, with the same messages (on any failure the old parser is run
//!   to produce the error, so a refusal reads the same whichever path found it);
//! * the same conversions (`rows::server_value`): a value the column cannot hold is kept as its
//!   JSON value ([`Cell::Misfit`]) and refused only when that row is written, so a row skipped
//!   for its queued operation or deleted does not fail the page, as before;
//! * a property repeated in one object counts once, the last time, as in a `serde_json` map;
//! * numbers go through the same parser (`deserialize_any` everywhere, also for skipped
//!   properties, so `1e400` is refused wherever it stands).

use std::fmt;

use rusqlite::types::Value as SqlValue;
use rusqlite::{CachedStatement, Connection};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::rows;
use super::TableDefinition;
use crate::error::{Error, Result};
use tablesync_protocol::odata::sql::ColumnType;
use tablesync_protocol::system;

/// One property of a pulled row, converted for its local column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    /// The row does not carry the property: the column keeps what it holds (null or its default
    /// in a new row).
    Absent,
    /// SQL NULL.
    Null,
    /// An integer (booleans as 0/1).
    Integer(i64),
    /// A double (numbers).
    Real(f64),
    /// Text: a byte range of the page's arena (dates already in the wire form).
    Text { start: u32, end: u32 },
    /// A value the column cannot store (`misfits[i]`), refused when the row is written.
    Misfit(u32),
}

/// How one column's JSON values are read: the rules of `rows::server_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The key: a string; anything else is kept as a misfit (a number: an integer-id table).
    Id,
    /// Text as it is.
    String,
    /// A date, normalised to the wire form.
    Date,
    /// `version`: a string, or a number's JSON text.
    Version,
    /// `deleted`: a boolean, a number (non-zero is true) or null (false).
    Deleted,
    /// A double.
    Number,
    /// A boolean as 0/1.
    Boolean,
}

/// The columns of a page: `id`, the other system columns, then the declared ones (table order).
struct Columns<'d> {
    names: Vec<&'d str>,
    kinds: Vec<Kind>,
    types: Vec<ColumnType>,
}

impl<'d> Columns<'d> {
    fn new(def: &'d TableDefinition) -> Self {
        let mut c = Columns {
            names: Vec::new(),
            kinds: Vec::new(),
            types: Vec::new(),
        };
        for (name, kind, ty) in [
            (system::ID, Kind::Id, ColumnType::String),
            (system::CREATED_AT, Kind::Date, ColumnType::Date),
            (system::UPDATED_AT, Kind::Date, ColumnType::Date),
            (system::VERSION, Kind::Version, ColumnType::String),
            (system::DELETED, Kind::Deleted, ColumnType::Boolean),
        ] {
            c.names.push(name);
            c.kinds.push(kind);
            c.types.push(ty);
        }
        for col in def.columns() {
            c.names.push(&col.name);
            c.kinds.push(match col.ty {
                ColumnType::Number => Kind::Number,
                ColumnType::Boolean => Kind::Boolean,
                ColumnType::Date => Kind::Date,
                _ => Kind::String,
            });
            c.types.push(col.ty);
        }
        c
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn index(&self, key: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == key)
    }
}

const ID: usize = 0;
const UPDATED_AT: usize = 2;
const DELETED: usize = 4;

/// A pulled page: its rows as [`Cell`]s of the local table's columns.
#[derive(Debug, Default)]
pub(crate) struct PulledPage {
    /// Columns per row (`id` first, then the other system columns, then the declared ones).
    width: usize,
    /// Row-major: row `r`'s cells are `cells[r * width..(r + 1) * width]`.
    cells: Vec<Cell>,
    /// The text of every `Cell::Text`.
    text: String,
    /// The JSON values of every `Cell::Misfit`.
    misfits: Vec<Value>,
}

/// The key of a pulled row as the page holds it, for `sync::pull`'s checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKeyCell<'a> {
    /// A string id and a valid `updatedAt` (in the wire form).
    Key { id: &'a str, updated_at: &'a str },
    /// No string id.
    NoId,
    /// A string id and an `updatedAt` string that is not a date.
    InvalidUpdatedAt { id: &'a str, updated_at: &'a str },
    /// A string id and no string `updatedAt`.
    NoUpdatedAt { id: &'a str },
}

impl PulledPage {
    /// Decodes a list answer (a JSON array of objects, or `{"results": [...]}`) for the local
    /// table `def`. Refusals are `Error::InvalidResponse` with the messages of
    /// `sync::pull::parse_page`, which `parse_page` produces.
    pub(crate) fn decode(
        def: &TableDefinition,
        body: &[u8],
        parse_page: impl FnOnce() -> Result<()>,
    ) -> Result<Self> {
        let columns = Columns::new(def);
        let mut page = PulledPage {
            width: columns.len(),
            // Room for rows of ~160 bytes (ours are ~220): usually the only allocation.
            cells: Vec::with_capacity(columns.len() * (body.len() / 160 + 1)),
            text: String::with_capacity(body.len()),
            ..PulledPage::default()
        };
        let decoded = {
            let mut de = serde_json::Deserializer::from_slice(body);
            let mut builder = Builder {
                columns: &columns,
                page: &mut page,
                order: Vec::new(),
            };
            (&mut de)
                .deserialize_any(PageVisitor {
                    builder: &mut builder,
                })
                .and_then(|found| de.end().map(|()| found))
        };
        match decoded {
            Ok(true) => Ok(page),
            // Refused: the old parser says why, in the words it always used.
            Ok(false) | Err(_) => {
                parse_page()?;
                Err(Error::InvalidResponse(format!(
                    "list response could not be read: {}",
                    decoded.err().map(|e| e.to_string()).unwrap_or_default()
                )))
            }
        }
    }

    /// Rows in the page.
    pub(crate) fn len(&self) -> usize {
        self.cells.len().checked_div(self.width).unwrap_or(0)
    }

    /// Whether some row's id is a JSON number (the server assigns ids: an integer-id table).
    pub(crate) fn has_numeric_id(&self) -> bool {
        (0..self.len()).any(|r| match self.row(r)[ID] {
            Cell::Misfit(i) => self.misfits[i as usize].is_number(),
            _ => false,
        })
    }

    fn row(&self, r: usize) -> &[Cell] {
        &self.cells[r * self.width..(r + 1) * self.width]
    }

    fn text_of(&self, cell: Cell) -> Option<&str> {
        match cell {
            Cell::Text { start, end } => Some(&self.text[start as usize..end as usize]),
            _ => None,
        }
    }

    /// Row `r`'s id, when it is a string.
    pub(crate) fn id(&self, r: usize) -> Option<&str> {
        self.text_of(self.row(r)[ID])
    }

    /// Row `r`'s key (`updatedAt`, `id`) or why it has none.
    pub(crate) fn key(&self, r: usize) -> RowKeyCell<'_> {
        let row = self.row(r);
        let Some(id) = self.text_of(row[ID]) else {
            return RowKeyCell::NoId;
        };
        match row[UPDATED_AT] {
            Cell::Text { .. } => RowKeyCell::Key {
                id,
                updated_at: self.text_of(row[UPDATED_AT]).unwrap_or_default(),
            },
            Cell::Misfit(i) => match &self.misfits[i as usize] {
                Value::String(s) => RowKeyCell::InvalidUpdatedAt { id, updated_at: s },
                _ => RowKeyCell::NoUpdatedAt { id },
            },
            _ => RowKeyCell::NoUpdatedAt { id },
        }
    }

    /// Whether row `r` is a tombstone (`deleted` true or a non-zero number).
    pub(crate) fn is_deleted(&self, r: usize) -> bool {
        self.row(r)[DELETED] == Cell::Integer(1)
    }

    /// The ids of the rows that have a string id, in page order.
    pub(crate) fn ids(&self) -> Vec<&str> {
        (0..self.len()).filter_map(|r| self.id(r)).collect()
    }
}

/// Writes the rows of pulled pages: one cached `INSERT … ON CONFLICT ("id") DO UPDATE` per set
/// of columns the rows carry (the columns present in a row, in table order; an absent column is
/// left as it is, as `rows::write_server` does), held for as long as the writer lives, and one
/// cached `DELETE`.
pub(crate) struct PageWriter<'c, 'd> {
    conn: &'c Connection,
    def: &'d TableDefinition,
    columns: Columns<'d>,
    upserts: Vec<(Vec<bool>, CachedStatement<'c>)>,
    delete: Option<CachedStatement<'c>>,
    present: Vec<bool>,
}

impl<'c, 'd> PageWriter<'c, 'd> {
    /// A writer of rows of `def` on `conn` (the page's transaction).
    pub(crate) fn new(conn: &'c Connection, def: &'d TableDefinition) -> Self {
        PageWriter {
            conn,
            def,
            columns: Columns::new(def),
            upserts: Vec::new(),
            delete: None,
            present: Vec::new(),
        }
    }

    /// Deletes row `id`; returns whether it existed.
    pub(crate) fn delete(&mut self, id: &str) -> Result<bool> {
        if self.delete.is_none() {
            self.delete = Some(self.conn.prepare_cached(&format!(
                "DELETE FROM \"{}\" WHERE \"id\" = ?1",
                self.def.name()
            ))?);
        }
        let stmt = self.delete.as_mut().expect("prepared above");
        Ok(stmt.execute([id])? > 0)
    }

    /// Inserts or updates the server's copy in row `r` of `page` (which must have a string id),
    /// with the checks and conversions of `rows::write_server`.
    pub(crate) fn upsert(&mut self, page: &PulledPage, r: usize) -> Result<()> {
        let row = page.row(r);
        let id = page.id(r).ok_or(Error::MissingId)?;
        rows::check_server_id(id)?;
        self.present.clear();
        self.present
            .extend(row[1..].iter().map(|c| *c != Cell::Absent));
        let at = match self.upserts.iter().position(|(p, _)| *p == self.present) {
            Some(at) => at,
            None => {
                let assigned: Vec<&str> = self.columns.names[1..]
                    .iter()
                    .zip(&self.present)
                    .filter(|(_, p)| **p)
                    .map(|(name, _)| *name)
                    .collect();
                let stmt = self
                    .conn
                    .prepare_cached(&rows::upsert_sql(self.def.name(), &assigned))?;
                self.upserts.push((self.present.clone(), stmt));
                self.upserts.len() - 1
            }
        };
        let stmt = &mut self.upserts[at].1;
        stmt.raw_bind_parameter(1, id)?;
        let mut param = 2;
        for (col, cell) in row.iter().enumerate().skip(1) {
            match *cell {
                Cell::Absent => continue,
                Cell::Null => stmt.raw_bind_parameter(param, rusqlite::types::Null)?,
                Cell::Integer(i) => stmt.raw_bind_parameter(param, i)?,
                Cell::Real(f) => stmt.raw_bind_parameter(param, f)?,
                Cell::Text { .. } => {
                    stmt.raw_bind_parameter(param, page.text_of(*cell).unwrap_or_default())?
                }
                Cell::Misfit(i) => {
                    // The old conversion refuses it, with its message; should it ever accept
                    // the value, what it makes is stored.
                    let value: SqlValue = rows::server_value(
                        self.def,
                        self.columns.names[col],
                        self.columns.types[col],
                        &page.misfits[i as usize],
                    )?;
                    stmt.raw_bind_parameter(param, value)?
                }
            }
            param += 1;
        }
        stmt.raw_execute()?;
        Ok(())
    }
}

/// The decoding state shared by the visitors.
struct Builder<'p, 'd> {
    columns: &'p Columns<'d>,
    page: &'p mut PulledPage,
    /// The column index of each key position of the previous row (`usize::MAX`: not a column),
    /// tried first: the rows of a page carry their properties in the same order.
    order: Vec<usize>,
}

impl Builder<'_, '_> {
    fn push_text(&mut self, s: &str) -> Cell {
        let start = self.page.text.len();
        self.page.text.push_str(s);
        self.text_cell(start)
    }

    fn text_cell(&self, start: usize) -> Cell {
        Cell::Text {
            start: start as u32,
            end: self.page.text.len() as u32,
        }
    }

    fn misfit(&mut self, v: Value) -> Cell {
        self.page.misfits.push(v);
        Cell::Misfit((self.page.misfits.len() - 1) as u32)
    }

    /// A string for a column of kind `kind`.
    fn string(&mut self, kind: Kind, s: &str) -> Cell {
        match kind {
            Kind::Id | Kind::String | Kind::Version => self.push_text(s),
            Kind::Date => {
                let start = self.page.text.len();
                if rows::normalize_date_into(s, &mut self.page.text) {
                    self.text_cell(start)
                } else {
                    self.misfit(Value::String(s.to_owned()))
                }
            }
            Kind::Deleted | Kind::Number | Kind::Boolean => {
                self.misfit(Value::String(s.to_owned()))
            }
        }
    }

    /// A number for a column of kind `kind` (as a double the way `serde_json::Number::as_f64`
    /// gives it, which is what the old conversion used).
    fn number(&mut self, kind: Kind, n: serde_json::Number) -> Cell {
        let f = n.as_f64();
        match (kind, f) {
            (Kind::Number, Some(f)) => Cell::Real(f),
            (Kind::Deleted, _) => Cell::Integer(i64::from(f != Some(0.0))),
            // The number's JSON text, as `rows::server_value` stores it (rare: servers send
            // string versions).
            (Kind::Version, _) => self.push_text(&Value::Number(n).to_string()),
            // A numeric id is kept as a misfit: the pull refuses an integer-id table.
            _ => self.misfit(Value::Number(n)),
        }
    }

    fn boolean(&mut self, kind: Kind, b: bool) -> Cell {
        match kind {
            Kind::Boolean | Kind::Deleted => Cell::Integer(i64::from(b)),
            _ => self.misfit(Value::Bool(b)),
        }
    }

    fn null(kind: Kind) -> Cell {
        match kind {
            // A null `deleted` is "not deleted" (the local column is NOT NULL).
            Kind::Deleted => Cell::Integer(0),
            _ => Cell::Null,
        }
    }
}

/// The `Visitor` methods of every JSON scalar, each answering `false`: a scalar where rows or a
/// row belong makes the page unusable (the old parser then says why), and is not an error here.
macro_rules! scalars_are_not_rows {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E: de::Error>(self) -> std::result::Result<bool, E> {
            Ok(false)
        }
    };
}

/// The top level: an array of rows, or an object whose last `results` is one. `true` when the
/// page is usable.
struct PageVisitor<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> Visitor<'de> for PageVisitor<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of objects or an object with a results array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<bool, A::Error> {
        RowsVisitor {
            builder: self.builder,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "results" {
                // Only the last `results` counts (a map keeps the last value of a key).
                let page = &mut *self.builder.page;
                page.cells.clear();
                page.text.clear();
                page.misfits.clear();
                found = map.next_value_seed(ResultsSeed {
                    builder: self.builder,
                })?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(found)
    }

    // Any other top-level value is not a page (still parsed to the end, as the old parser did).
    scalars_are_not_rows!();
}

/// The value of a `results` property: `true` when it is an array of rows.
struct ResultsSeed<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> DeserializeSeed<'de> for ResultsSeed<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_any(ResultsVisitor {
            builder: self.builder,
        })
    }
}

struct ResultsVisitor<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> Visitor<'de> for ResultsVisitor<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a results array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<bool, A::Error> {
        RowsVisitor {
            builder: self.builder,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<bool, A::Error> {
        SkipVisitor.visit_map(map).map(|()| false)
    }
    scalars_are_not_rows!();
}

/// The rows array. An element that is not an object makes the page unusable (`false`).
struct RowsVisitor<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> Visitor<'de> for RowsVisitor<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<bool, A::Error> {
        let mut ok = true;
        while let Some(row_ok) = seq.next_element_seed(RowSeed {
            builder: &mut *self.builder,
        })? {
            ok &= row_ok;
        }
        Ok(ok)
    }
}

/// One element of the rows array: `true` when it is an object (its cells are appended).
struct RowSeed<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_any(RowVisitor {
            builder: self.builder,
        })
    }
}

struct RowVisitor<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
}

impl<'de> Visitor<'de> for RowVisitor<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<bool, A::Error> {
        let b = self.builder;
        let width = b.columns.len();
        let base = b.page.cells.len();
        b.page.cells.resize(base + width, Cell::Absent);
        let mut position = 0;
        while let Some(col) = map.next_key_seed(KeySeed {
            columns: b.columns,
            expected: b.order.get(position).copied(),
        })? {
            if position < b.order.len() {
                b.order[position] = col.unwrap_or(usize::MAX);
            } else {
                b.order.push(col.unwrap_or(usize::MAX));
            }
            position += 1;
            match col {
                Some(col) => {
                    let kind = b.columns.kinds[col];
                    let cell = map.next_value_seed(CellSeed {
                        builder: &mut *b,
                        kind,
                    })?;
                    b.page.cells[base + col] = cell;
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<bool, A::Error> {
        SkipVisitor.visit_seq(seq).map(|()| false)
    }
    scalars_are_not_rows!();
}

/// A property name: the index of the local column it names, `None` for any other.
struct KeySeed<'p, 'd> {
    columns: &'p Columns<'d>,
    /// The column the previous row had at this position.
    expected: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<Option<usize>, E> {
        if let Some(&name) = self.expected.and_then(|i| self.columns.names.get(i)) {
            if name == key {
                return Ok(self.expected);
            }
        }
        Ok(self.columns.index(key))
    }
}

/// A property's value for a column of kind `kind`.
struct CellSeed<'b, 'p, 'd> {
    builder: &'b mut Builder<'p, 'd>,
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_, '_, '_> {
    type Value = Cell;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Cell, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_, '_, '_> {
    type Value = Cell;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Cell, E> {
        Ok(self.builder.string(self.kind, s))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Cell, E> {
        Ok(self.builder.boolean(self.kind, b))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Cell, E> {
        Ok(self.builder.number(self.kind, n.into()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Cell, E> {
        Ok(self.builder.number(self.kind, n.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Cell, E> {
        // The JSON parser never yields a non-finite double.
        match serde_json::Number::from_f64(f) {
            Some(n) => Ok(self.builder.number(self.kind, n)),
            None => Err(E::custom("a number out of range")),
        }
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Cell, E> {
        Ok(Builder::null(self.kind))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Cell, A::Error> {
        let v =
            <Value as serde::Deserialize>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(self.builder.misfit(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Cell, A::Error> {
        let v =
            <Value as serde::Deserialize>::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(self.builder.misfit(v))
    }
}

/// A value of a property the local table does not declare: parsed (with `deserialize_any`, so
/// numbers are range-checked as the old parser did) and dropped.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map};

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

    /// The old reader of a list answer: `serde_json` maps (`sync::pull::parse_page`'s rules,
    /// which the store layer cannot import).
    fn old_parse(body: &[u8]) -> std::result::Result<Vec<Map<String, Value>>, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let items = match value {
            Value::Array(a) => a,
            Value::Object(mut o) => match o.remove("results") {
                Some(Value::Array(a)) => a,
                _ => return Err("no results array".into()),
            },
            _ => return Err("not an array".into()),
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err("element is not an object".into()),
            })
            .collect()
    }

    fn decode(body: &[u8]) -> Result<PulledPage> {
        PulledPage::decode(&def(), body, || {
            old_parse(body).map(|_| ()).map_err(Error::InvalidResponse)
        })
    }

    /// Every row of the table, by id, with SQLite's own types.
    fn dump(c: &Connection) -> Vec<Vec<SqlValue>> {
        let mut stmt = c.prepare("SELECT * FROM \"T\" ORDER BY \"id\"").unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get::<_, SqlValue>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows
    }

    /// What applying a page does: (upserted, deleted, skipped) or the error's text.
    type Outcome = std::result::Result<(u64, u64, u64), String>;

    /// The old apply (before pages were decoded into cells): per map, skip a row without a
    /// string id or with a queued operation, delete a tombstone, else convert the row's values
    /// in table order (the old row writer's order) and `rows::write_server` it.
    fn old_apply(c: &mut Connection, items: &[Map<String, Value>], pending: &[&str]) -> Outcome {
        let d = def();
        let tx = c.transaction().unwrap();
        let mut counts = (0, 0, 0);
        let result: Result<()> = (|| {
            for item in items {
                let Some(Value::String(id)) = item.get("id") else {
                    counts.2 += 1;
                    continue;
                };
                if pending.contains(&id.as_str()) {
                    counts.2 += 1;
                    continue;
                }
                let deleted = match item.get("deleted") {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Number(n)) => n.as_f64() != Some(0.0),
                    _ => false,
                };
                if deleted {
                    if rows::delete_row(&tx, "T", id)? {
                        counts.1 += 1;
                    }
                } else {
                    // The old writer checked the id, then converted in table order, so a
                    // row's first refused value in that order names the error.
                    rows::check_server_id(id)?;
                    for (name, ty) in [
                        (system::CREATED_AT, ColumnType::Date),
                        (system::UPDATED_AT, ColumnType::Date),
                        (system::VERSION, ColumnType::String),
                        (system::DELETED, ColumnType::Boolean),
                    ]
                    .into_iter()
                    .chain(d.columns().iter().map(|c| (c.name.as_str(), c.ty)))
                    {
                        if let Some(v) = item.get(name) {
                            rows::server_value(&d, name, ty, v)?;
                        }
                    }
                    rows::write_server(&tx, &d, item)?;
                    counts.0 += 1;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                tx.commit().unwrap();
                Ok(counts)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The same with the decoded page and the [`PageWriter`].
    fn new_apply(c: &mut Connection, page: &PulledPage, pending: &[&str]) -> Outcome {
        let d = def();
        let tx = c.transaction().unwrap();
        let mut counts = (0, 0, 0);
        let result: Result<()> = (|| {
            let mut writer = PageWriter::new(&tx, &d);
            for r in 0..page.len() {
                let Some(id) = page.id(r) else {
                    counts.2 += 1;
                    continue;
                };
                if pending.contains(&id) {
                    counts.2 += 1;
                    continue;
                }
                if page.is_deleted(r) {
                    if writer.delete(id)? {
                        counts.1 += 1;
                    }
                } else {
                    writer.upsert(page, r)?;
                    counts.0 += 1;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                tx.commit().unwrap();
                Ok(counts)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The old key of a row (`sync::pull`'s rules on a map), shown as `RowKeyCell` would be.
    fn old_key(item: &Map<String, Value>) -> String {
        let Some(Value::String(id)) = item.get("id") else {
            return "no id".into();
        };
        match item.get("updatedAt") {
            Some(Value::String(s)) => match rows::normalize_date(s) {
                Some(u) => format!("key {id} {u}"),
                None => format!("invalid {id} {s}"),
            },
            _ => format!("no updatedAt {id}"),
        }
    }

    fn new_key(page: &PulledPage, r: usize) -> String {
        match page.key(r) {
            RowKeyCell::Key { id, updated_at } => format!("key {id} {updated_at}"),
            RowKeyCell::NoId => "no id".into(),
            RowKeyCell::InvalidUpdatedAt { id, updated_at } => format!("invalid {id} {updated_at}"),
            RowKeyCell::NoUpdatedAt { id } => format!("no updatedAt {id}"),
        }
    }

    /// Decodes `body` both ways and applies it to two stores holding the same rows and the same
    /// queued operation: everything observable must be equal.
    fn check_same(body: &[u8]) {
        let old = old_parse(body);
        let new = decode(body);
        let (items, page) = match (old, new) {
            (Ok(items), Ok(page)) => (items, page),
            (Err(old), Err(Error::InvalidResponse(new))) => {
                assert_eq!(old, new, "{}", String::from_utf8_lossy(body));
                return;
            }
            (old, new) => panic!(
                "{}: old {old:?}, new {new:?}",
                String::from_utf8_lossy(body)
            ),
        };
        assert_eq!(page.len(), items.len());
        assert_eq!(
            page.has_numeric_id(),
            items
                .iter()
                .any(|row| matches!(row.get("id"), Some(Value::Number(_))))
        );
        for (r, item) in items.iter().enumerate() {
            assert_eq!(new_key(&page, r), old_key(item), "row {r}");
        }
        let (mut a, mut b) = (conn(), conn());
        let seed = |c: &mut Connection| {
            let d = def();
            rows::write_server(
                c,
                &d,
                &Map::from_iter([
                    ("id".into(), json!("a")),
                    ("text".into(), json!("before")),
                    ("n".into(), json!(1.5)),
                    ("version".into(), json!("v0")),
                ]),
            )
            .unwrap();
            super::super::queue::local_insert(
                c,
                &d,
                Map::from_iter([("id".into(), json!("p")), ("text".into(), json!("mine"))]),
            )
            .unwrap();
        };
        seed(&mut a);
        seed(&mut b);
        let pending = ["p"];
        let old_outcome = old_apply(&mut a, &items, &pending);
        let new_outcome = new_apply(&mut b, &page, &pending);
        assert_eq!(
            new_outcome,
            old_outcome,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(dump(&b), dump(&a), "{}", String::from_utf8_lossy(body));
    }

    #[test]
    fn the_page_writer_stores_what_write_server_stores() {
        let body = br#"[
            {"id":"w","createdAt":"2020-01-01T00:00:00Z","updatedAt":"2020-01-02T00:00:00.5+01:00",
             "version":7,"deleted":null,"text":"t","n":2.5,"b":true,"due":"2020-01-03T00:00:00Z","extra":"ignored"},
            {"id":"v"},
            {"id":"w","text":"t2","version":"8"},
            {"id":"bare"},
            {"id":"gone","deleted":1},
            {"id":"x","deleted":"yes"}
        ]"#;
        let page = decode(body).unwrap();
        let c = conn();
        let d = def();
        let mut writer = PageWriter::new(&c, &d);
        for r in 0..5 {
            if page.is_deleted(r) {
                assert!(!writer.delete(page.id(r).unwrap()).unwrap());
            } else {
                writer.upsert(&page, r).unwrap();
            }
        }
        // A value the column cannot hold fails the write of its row, with the old message.
        assert_eq!(
            writer.upsert(&page, 5).unwrap_err().to_string(),
            "value for column \"deleted\" of table \"T\" is not a valid boolean: \"yes\""
        );
        drop(writer);
        let w = rows::read_row(&c, &d, "w").unwrap().unwrap();
        // The later copy without some columns leaves them as they were.
        assert_eq!(
            Value::Object(w),
            json!({"id":"w","createdAt":"2020-01-01T00:00:00.000Z","updatedAt":"2020-01-01T23:00:00.500Z",
                   "version":"8","deleted":false,"text":"t2","n":2.5,"b":true,"due":"2020-01-03T00:00:00.000Z"})
        );
        assert_eq!(
            rows::read_row(&c, &d, "bare").unwrap().unwrap()["deleted"],
            json!(false)
        );
        check_same(body);
    }

    #[test]
    fn odd_pages_read_as_the_old_parser_read_them() {
        for body in [
            // The inline-count form; the last `results` counts.
            r#"{"count":2,"results":[{"id":"a","text":"x"}]}"#,
            r#"{"results":5,"results":[{"id":"a","text":"x"}]}"#,
            r#"{"results":[{"id":"a","text":"x"}],"results":5}"#,
            r#"{"results":[{"id":"a"}],"results":[{"id":"b","n":-0.0}]}"#,
            // A property repeated in a row: the last one counts.
            r#"[{"id":"a","text":"one","text":"two","id":"b"}]"#,
            r#"[{"id":"a","text":7,"text":"fits"}]"#,
            r#"[{"id":"a","text":"fits","text":7}]"#,
            // Numbers: big, negative, fractional, out of a double's range (refused anywhere).
            r#"[{"id":"a","n":18446744073709551615,"version":123456789012345678901234567890}]"#,
            r#"[{"id":"a","n":-9223372036854775808,"version":-1.5e-7}]"#,
            r#"[{"id":"a","n":1e400}]"#,
            r#"[{"id":"a","extra":[1,{"x":1e400}]}]"#,
            r#"[{"id":"a","extra":[1,{"x":1e300}],"n":1e300}]"#,
            // Escapes and unicode, in keys and values.
            r#"[{"i\u0064":"\u00e9\ud83d\ude00","te\u0078t":"tab\there \"quoted\""}]"#,
            r#"[{"id":"a","text":"\ud800"}]"#,
            // Ids that are not strings; no id; an invalid id.
            r#"[{"id":5,"text":"x"}]"#,
            r#"[{"id":5,"id":"a"}]"#,
            r#"[{"id":"a","id":5}]"#,
            r#"[{"id":[1],"text":"x"},{"text":"y"},{"id":null}]"#,
            r#"[{"id":"a/b","text":"x"}]"#,
            r#"[{"id":"a/b","deleted":true}]"#,
            // Values of the wrong type, in rows written, deleted or skipped for their operation.
            r#"[{"id":"a","due":"tomorrow"}]"#,
            r#"[{"id":"a","due":"tomorrow","deleted":true}]"#,
            r#"[{"id":"p","due":"tomorrow"}]"#,
            r#"[{"id":"a","b":{"x":[true]}}]"#,
            r#"[{"id":"a","version":true}]"#,
            r#"[{"id":"a","deleted":0.0,"createdAt":"2020-01-01t00:00:00.1234567-02:30"}]"#,
            // Not pages.
            "",
            "nope",
            "{}",
            "[1]",
            "[{\"id\":\"a\"},1]",
            "[1,{\"broken\"",
            "\"x\"",
            "{\"results\":5}",
            "[] []",
            "[{\"id\":\"a\"}",
            "null",
        ] {
            check_same(body.as_bytes());
        }
        assert!(decode(br#"[{"id":5}]"#).unwrap().has_numeric_id());
        assert!(!decode(br#"[{"id":"5"}]"#).unwrap().has_numeric_id());
    }

    /// A JSON value of any kind, biased towards what the local columns hold (dates, strings,
    /// numbers at the edges of a double) and what breaks them.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(9_007_199_254_740_993.0),
                Just(1e300),
                Just(5e-324)
            ]
            .prop_map(Value::from),
            prop_oneof![
                Just("2024-01-01T00:00:00.000Z".to_string()),
                Just("2024-01-01T00:00:00Z".to_string()),
                Just("2024-02-30T00:00:00.000Z".to_string()),
                Just("2024-01-01T05:06:07.1234+05:30".to_string()),
                Just("MQ==".to_string()),
                Just("a/b".to_string()),
                Just(String::new()),
                "\\PC{0,12}",
                "[a-c]{1,2}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A property name: the local table's columns, near misses (case), unknown ones.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop_oneof![
                Just("id"), Just("createdAt"), Just("updatedAt"), Just("version"),
                Just("deleted"), Just("text"), Just("n"), Just("b"), Just("due"),
            ]
            .prop_map(str::to_string),
            1 => prop_oneof![Just("ID"), Just("Text"), Just("results"), Just("ünï")]
                .prop_map(str::to_string),
            1 => "\\PC{0,6}",
        ]
    }

    /// Text: unicode, whitespace at the edges, characters JSON escapes.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,12}", "[ a\t\n\"\\\\é😀\u{7f}]{0,6}"]
    }

    /// A date as servers send it: the wire form, other valid forms, invalid ones.
    fn date() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (-62_135_596_800_000i64..=253_402_300_799_999).prop_map(|ms| {
                Value::String(
                    tablesync_protocol::time::Timestamp::from_unix_millis(ms).to_string(),
                )
            }),
            1 => prop_oneof![
                Just("2024-01-01T00:00:00Z"),
                Just("2024-01-01T05:06:07.1234+05:30"),
                Just("2024-01-01t00:00:00.5z"),
                Just("2024-02-30T00:00:00.000Z"),
                Just("9999-12-31T23:59:59.999-01:00"),
                Just("yesterday"),
            ]
            .prop_map(|s| Value::String(s.into())),
            1 => Just(Value::Null),
        ]
    }

    /// A property the local table declares with a value of its type (or null), or, less often,
    /// any property with any value.
    fn property() -> impl Strategy<Value = (String, Value)> {
        let fitting = prop_oneof![
            date().prop_map(|v| ("createdAt".to_string(), v)),
            date().prop_map(|v| ("updatedAt".to_string(), v)),
            date().prop_map(|v| ("due".to_string(), v)),
            prop_oneof![
                text().prop_map(Value::String),
                any::<u64>().prop_map(Value::from),
                Just(Value::Null)
            ]
            .prop_map(|v| ("version".to_string(), v)),
            prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                prop_oneof![Just(0), Just(1), Just(-3)].prop_map(Value::from),
                Just(Value::from(0.0)),
                Just(Value::Null)
            ]
            .prop_map(|v| ("deleted".to_string(), v)),
            prop_oneof![text().prop_map(Value::String), Just(Value::Null)]
                .prop_map(|v| ("text".to_string(), v)),
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                Just(Value::from(9_007_199_254_740_993.0)),
                Just(Value::Null)
            ]
            .prop_map(|v| ("n".to_string(), v)),
            prop_oneof![any::<bool>().prop_map(Value::Bool), Just(Value::Null)]
                .prop_map(|v| ("b".to_string(), v)),
            // Properties the local table does not declare.
            (
                prop_oneof![
                    Just("ID"),
                    Just("Text"),
                    Just("results"),
                    Just("ünï"),
                    Just("x")
                ],
                json_value()
            )
                .prop_map(|(k, v)| (k.to_string(), v)),
        ];
        prop_oneof![12 => fitting, 1 => (key(), json_value())]
    }

    /// One row as JSON text (so a property may repeat), mostly with a string id from a small
    /// pool (rows meet each other, the seeded row `a` and the queued `p`).
    fn row_text() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            8 => prop_oneof![Just("a"), Just("b"), Just("c"), Just("p"), Just("é😀")]
                .prop_map(|s| Value::String(s.to_string())),
            1 => json_value(),
        ];
        (
            proptest::option::weighted(0.95, id),
            proptest::collection::vec(property(), 0..8),
        )
            .prop_map(|(id, props)| {
                let mut parts: Vec<String> = Vec::new();
                if let Some(id) = id {
                    parts.push(format!("\"id\":{id}"));
                }
                for (k, v) in props {
                    parts.push(format!("{}:{v}", Value::String(k)));
                }
                format!("{{{}}}", parts.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// For arbitrary pages (nulls, unicode, big numbers, unknown and repeated properties,
        /// values of the wrong type, non-string ids, both list forms) the decoded page and its
        /// writer do exactly what the `serde_json` maps and `rows::write_server` did: the same
        /// keys, the same refusals with the same messages, the same rows in the store.
        #[test]
        fn decoded_pages_match_the_serde_json_path(
            rows in proptest::collection::vec(row_text(), 0..6),
            counted in any::<bool>(),
        ) {
            let list = format!("[{}]", rows.join(","));
            let body = if counted {
                format!("{{\"results\":{list},\"count\":{}}}", rows.len())
            } else {
                list
            };
            check_same(body.as_bytes());
        }
    }
}
