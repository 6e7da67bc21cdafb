//! The lean read path: a page's rows go from the database cursor straight into the bytes of the
//! response body, with no `serde_json::Map` (nor `Value`) per row.
//!
//! A [`PageEncoder`] is prepared once per list request from the table's schema and `$select`:
//! which selected columns to write (their index in [`super::sql::select_list`]), each one's JSON
//! key already quoted and escaped (`{"id":` for the first, `,"text":` for the others) and its
//! protocol type. The stores then read each row's cells without copying them ([`Cell`] borrows
//! the driver's buffer) and [`PageEncoder::row`] writes them.
//!
//! The bytes are the ones the old path produced by building an `Item` per row and serialising it
//! with serde_json, on purpose: strings go through serde_json's own escaper and numbers through
//! the same integral-or-double rule as [`crate::table::json_number`] (the unit tests below and
//! `tests/it/query.rs` compare the two on random rows). Keys come in item order (`id`, the user
//! columns, the system columns), `$select` keeping that order.

use std::io::Write as _;

use tablesync_protocol::odata::sql::ColumnType;
use tablesync_protocol::time::Timestamp;

use crate::table::TableSchema;

/// Integral doubles up to this magnitude are written without a fraction (`3`, not `3.0`), like
/// [`crate::table::json_number`]: beyond 2^53 a double no longer holds every integer.
const EXACT_INT_MAX: f64 = 9_007_199_254_740_992.0;

/// One column value as the driver hands it over, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cell<'a> {
    /// SQL NULL (or a value of no JSON type, such as an SQLite BLOB).
    Null,
    /// Text: strings and wire-form dates.
    Text(&'a str),
    /// Text as the driver stores it, not yet checked as UTF-8 (SQLite's, which does not check
    /// either). Plain ASCII with nothing to escape (every id, date and version, and most text)
    /// is copied after one pass over its bytes; any other is checked as UTF-8 and escaped as a
    /// [`Cell::Text`], the bytes that are not UTF-8 (only a file written by something else holds
    /// such) written as U+FFFD, as `String::from_utf8_lossy` reads them. Checking first and
    /// then scanning for escapes was two passes: the check alone was 4 % of a 1000-row page's
    /// CPU.
    RawText(&'a [u8]),
    /// An integer: SQLite's INTEGER storage class, PostgreSQL's integer ids.
    Int(i64),
    /// A double.
    Real(f64),
    /// A boolean.
    Bool(bool),
    /// A date as milliseconds since the Unix epoch (PostgreSQL's binary `timestamptz`),
    /// written as its wire-form string.
    Millis(i64),
}

/// One selected column: where it is in the row and how to write it.
#[derive(Clone, Debug)]
struct Field {
    /// Its index in the select list.
    index: usize,
    /// Its protocol type (how the store reads the cell).
    ty: ColumnType,
    /// `{"name":` for the first selected column, `,"name":` for the others.
    key: Vec<u8>,
}

/// How one list request writes its rows: prepared once, used for every row of the page.
#[derive(Clone, Debug)]
pub struct PageEncoder {
    fields: Vec<Field>,
}

impl PageEncoder {
    /// The encoder of `schema`'s items, keeping only the `select`ed properties (the schema's
    /// spelling, as `table::check_select` returns them) when given.
    pub fn new(schema: &TableSchema, select: Option<&[String]>) -> Self {
        let mut fields = Vec::new();
        for (index, (name, ty)) in super::sql::item_columns(schema).enumerate() {
            if select.is_some_and(|s| !s.iter().any(|n| n == name)) {
                continue;
            }
            let mut key = Vec::with_capacity(name.len() + 4);
            key.push(if fields.is_empty() { b'{' } else { b',' });
            write_str(&mut key, name);
            key.push(b':');
            fields.push(Field { index, ty, key });
        }
        PageEncoder { fields }
    }

    /// Append one row's JSON object to `page`; `cell(index, type)` reads column `index`.
    pub(super) fn row<'r, E>(
        &self,
        page: &mut EncodedPage,
        mut cell: impl FnMut(usize, ColumnType) -> Result<Cell<'r>, E>,
    ) -> Result<(), E> {
        let out = &mut page.json;
        out.push(if page.rows == 0 { b'[' } else { b',' });
        if self.fields.is_empty() {
            out.push(b'{');
        }
        for field in &self.fields {
            out.extend_from_slice(&field.key);
            write_cell(out, cell(field.index, field.ty)?);
        }
        out.push(b'}');
        page.rows += 1;
        Ok(())
    }
}

/// A page of rows already written as a JSON array.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedPage {
    /// `[{…},{…}]` without the closing bracket until [`EncodedPage::into_json`].
    json: Vec<u8>,
    /// Rows written, in rows.
    rows: usize,
}

/// The bytes reserved a row of a page before it is read: about what a row of a few columns
/// takes (a 1000-row `TodoItem` page is 200 KB), so that a page is written without growing.
const ROW_BYTES_GUESS: usize = 256;

/// The most rows [`EncodedPage::for_top`] reserves room for (1 MB at [`ROW_BYTES_GUESS`]).
const ROWS_RESERVED_MAX: u64 = 4096;

impl EncodedPage {
    /// An empty page with room for `top` rows of a guessed size (the stores' list reads).
    pub(super) fn for_top(top: u64) -> Self {
        let rows = usize::try_from(top.min(ROWS_RESERVED_MAX)).unwrap_or(0);
        EncodedPage {
            json: Vec::with_capacity(rows * ROW_BYTES_GUESS),
            rows: 0,
        }
    }

    /// Rows in the page.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The page as a JSON array: `[]` or `[{…},…]`.
    pub fn into_json(mut self) -> Vec<u8> {
        if self.rows == 0 {
            self.json.push(b'[');
        }
        self.json.push(b']');
        self.json
    }
}

/// A JSON string, escaped exactly as serde_json escapes it. A string with nothing to escape (no
/// control character, `"` or `\\`: every id, date and version, and most text) is copied as it
/// is; any other goes through serde_json's own escaper (its byte-by-byte escaper was a tenth of
/// a 1000-row page's CPU; the check, [`any_byte`], is vectorised).
fn write_str(out: &mut Vec<u8>, s: &str) {
    if any_byte(s.as_bytes(), needs_escape) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    write_quoted(out, s.as_bytes());
}

/// Text not yet checked as UTF-8 (see [`Cell::RawText`]).
fn write_raw_text(out: &mut Vec<u8>, bytes: &[u8]) {
    if any_byte(bytes, |b| (b >= 0x80) | needs_escape(b)) {
        match std::str::from_utf8(bytes) {
            Ok(s) => write_str(out, s),
            Err(_) => write_str(out, &String::from_utf8_lossy(bytes)),
        }
        return;
    }
    // ASCII, so UTF-8, with nothing to escape.
    write_quoted(out, bytes);
}

/// `"bytes"`, for bytes that are UTF-8 with nothing JSON escapes.
fn write_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// Whether JSON needs byte `b` escaped (what serde_json escapes: below 0x20, `"` and `\\`).
/// Bitwise `|`, not `||`: with no branch in it, the chunk loop of [`any_byte`] vectorises (a
/// micro-benchmark of an id, a date, a version and a text: 55 ns with `|`, 90 ns with `||`,
/// 81 ns for the UTF-8 check and the escape scan one after the other).
fn needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether `test` holds for any byte of `bytes`. The check runs over whole 16-byte chunks
/// without an early exit inside a chunk, which the compiler vectorises.
fn any_byte(bytes: &[u8], test: impl Fn(u8) -> bool) -> bool {
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | test(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| test(b))
}

fn write_cell(out: &mut Vec<u8>, cell: Cell<'_>) {
    match cell {
        Cell::Null => out.extend_from_slice(b"null"),
        Cell::Text(s) => write_str(out, s),
        Cell::RawText(bytes) => write_raw_text(out, bytes),
        Cell::Bool(true) => out.extend_from_slice(b"true"),
        Cell::Bool(false) => out.extend_from_slice(b"false"),
        Cell::Millis(ms) => write_timestamp(out, Timestamp::from_unix_millis(ms)),
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Real(f) if f.fract() == 0.0 && f.abs() <= EXACT_INT_MAX => {
            // In range and integral, so the cast is exact (`-0.0` becomes `0`, as before).
            let _ = write!(out, "{}", f as i64);
        }
        // serde_json's float formatting (and `null` for a non-finite double).
        Cell::Real(f) => {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
    }
}

/// `t` as a JSON string in the wire form (`Timestamp`'s `Display`, which has no character JSON
/// escapes), its digits written directly: `write!` through the formatter cost a 1000-row
/// PostgreSQL page more than reading its cells.
fn write_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    let (y, mo, d, h, mi, s, ms) = t.to_parts();
    let Ok(y @ 0..=9999) = u32::try_from(y) else {
        // Beyond four digits (never a value the parser made): the signed form.
        let _ = write!(out, "\"{t}\"");
        return;
    };
    let digits = |v: u32, n: usize, buf: &mut [u8]| {
        let mut v = v;
        for b in buf[..n].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    digits(y, 4, &mut b[1..]);
    digits(mo, 2, &mut b[6..]);
    digits(d, 2, &mut b[9..]);
    digits(h, 2, &mut b[12..]);
    digits(mi, 2, &mut b[15..]);
    digits(s, 2, &mut b[18..]);
    digits(ms, 3, &mut b[21..]);
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    //! The encoder against the old path: an `Item` per row built with `sql::read_item` and the
    //! stores' value rules, serialised by serde_json. Same bytes, for random rows.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::config::IdType;
    use crate::table::{json_number, Column, Item};

    fn schema(id_type: IdType) -> TableSchema {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
        };
        TableSchema {
            name: "T".into(),
            columns: vec![
                column("text", ColumnType::String),
                column("n", ColumnType::Number),
                column("done", ColumnType::Boolean),
                column("due", ColumnType::Date),
                column("quo\"te\u{1}é", ColumnType::String),
            ],
            soft_delete: true,
            owner_column: None,
            id_type,
            indexes: Vec::new(),
        }
    }

    /// What the old path made of a cell (the stores' `value_json`).
    fn old_value(cell: Cell<'_>, ty: ColumnType) -> Value {
        match (ty, cell) {
            (_, Cell::Null) => Value::Null,
            (ColumnType::Boolean, Cell::Int(i)) => Value::Bool(i != 0),
            (_, Cell::Bool(b)) => Value::Bool(b),
            (_, Cell::Int(i)) => Value::from(i),
            (_, Cell::Real(f)) => json_number(f),
            (_, Cell::Text(s)) => Value::String(s.to_owned()),
            (_, Cell::RawText(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
            (_, Cell::Millis(ms)) => Value::String(Timestamp::from_unix_millis(ms).to_string()),
        }
    }

    fn old_item(schema: &TableSchema, cells: &[Cell<'_>]) -> Item {
        super::super::sql::read_item(schema, |i, ty| Ok::<_, ()>(old_value(cells[i], ty))).unwrap()
    }

    fn encode(schema: &TableSchema, select: Option<&[String]>, rows: &[Vec<Cell<'_>>]) -> Vec<u8> {
        let encoder = PageEncoder::new(schema, select);
        let mut page = EncodedPage::default();
        for row in rows {
            encoder
                .row(&mut page, |i, ty| {
                    // A boolean column's integer is the store's job to read; emulate it.
                    Ok::<_, ()>(match (ty, row[i]) {
                        (ColumnType::Boolean, Cell::Int(i)) => Cell::Bool(i != 0),
                        (_, c) => c,
                    })
                })
                .unwrap();
        }
        assert_eq!(page.rows(), rows.len());
        page.into_json()
    }

    fn old_json(
        schema: &TableSchema,
        select: Option<&[String]>,
        rows: &[Vec<Cell<'_>>],
    ) -> Vec<u8> {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                let item = old_item(schema, r);
                Value::Object(match select {
                    Some(s) => crate::table::project(item, s),
                    None => item,
                })
            })
            .collect();
        serde_json::to_vec(&Value::Array(items)).unwrap()
    }

    #[test]
    fn edge_values_encode_like_serde_json() {
        let s = schema(IdType::String);
        let row = |text: &'static str, n: Cell<'static>| {
            vec![
                Cell::Text("id-1"),
                Cell::Text(text),
                n,
                Cell::Int(1),
                Cell::Text("2026-01-01T00:00:00.000Z"),
                Cell::Null,
                Cell::Text("2026-01-01T00:00:00.000Z"),
                Cell::Millis(-1),
                Cell::Text("MQ=="),
                Cell::Int(0),
            ]
        };
        let rows = vec![
            row("plain", Cell::Real(3.0)),
            row("\"\\\n\t\r\u{8}\u{c}\u{0}\u{1f}\u{7f}", Cell::Real(-0.0)),
            row("é漢字🦀/", Cell::Real(9_007_199_254_740_992.0)),
            row("", Cell::Real(9_007_199_254_740_994.0)),
            row("x", Cell::Real(1e300)),
            row("x", Cell::Real(-1.5e-300)),
            row("x", Cell::Real(f64::NAN)),
            row("x", Cell::Real(f64::INFINITY)),
            row("x", Cell::Real(0.1)),
            row("x", Cell::Int(i64::MIN)),
            row("x", Cell::Null),
        ];
        assert_eq!(
            String::from_utf8(encode(&s, None, &rows)).unwrap(),
            String::from_utf8(old_json(&s, None, &rows)).unwrap()
        );
        assert_eq!(encode(&s, None, &[]), b"[]");
        let select = vec!["version".to_owned(), "text".to_owned()];
        assert_eq!(
            encode(&s, Some(&select), &rows),
            old_json(&s, Some(&select), &rows)
        );
        let none: Vec<String> = Vec::new();
        assert_eq!(encode(&s, Some(&none), &rows[..2]), b"[{},{}]");
        assert_eq!(old_json(&s, Some(&none), &rows[..2]), b"[{},{}]");
        // Integer ids are numbers.
        let ints = schema(IdType::Integer);
        let mut row = rows[0].clone();
        row[0] = Cell::Int(42);
        assert_eq!(
            encode(&ints, None, std::slice::from_ref(&row)),
            old_json(&ints, None, &[row])
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json_wherever_the_escape_is() {
        for b in 0u8..0x80 {
            for at in [0, 5, 15, 16, 17, 31, 40] {
                let mut text = "a".repeat(41);
                text.replace_range(at..=at, char::from(b).encode_utf8(&mut [0; 4]));
                let mut out = Vec::new();
                write_str(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{b:#x} at {at}");
                let mut raw = Vec::new();
                write_raw_text(&mut raw, text.as_bytes());
                assert_eq!(raw, out, "raw text, {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn timestamps_are_written_in_the_wire_form() {
        for ms in [
            Timestamp::MIN_WIRE.unix_millis(),
            -1,
            0,
            951_782_400_000, // 2000-02-29
            1_764_547_200_123,
            Timestamp::MAX_WIRE.unix_millis(),
            Timestamp::MAX_WIRE.unix_millis() + 1,
            Timestamp::MIN_WIRE.unix_millis() - 86_400_000 * 366,
        ] {
            let mut out = Vec::new();
            write_cell(&mut out, Cell::Millis(ms));
            let want = serde_json::to_vec(&Timestamp::from_unix_millis(ms).to_string()).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn raw_text_that_is_not_utf8_is_written_as_from_utf8_lossy_reads_it() {
        // A non-ASCII byte at every position of a chunk and its remainder, valid or not.
        for bad in [
            &[0xff][..],
            &[0xc3, 0xa9],
            &[0xe6, 0xbc],
            &[0x80],
            &[0xf0, 0x9f, 0xa6, 0x80],
        ] {
            for at in [0, 7, 15, 16, 17, 33] {
                let mut bytes = b"a\"b".repeat(12);
                bytes.splice(at..at, bad.iter().copied());
                let mut out = Vec::new();
                write_raw_text(&mut out, &bytes);
                let want = serde_json::to_vec(&String::from_utf8_lossy(&bytes)).unwrap();
                assert_eq!(out, want, "{bad:x?} at {at}");
            }
        }
    }

    fn cell_for(ty: ColumnType) -> impl Strategy<Value = Cell<'static>> {
        let text = prop_oneof![
            any::<String>().prop_map(|s| Cell::Text(Box::leak(s.into_boxed_str()))),
            any::<String>()
                .prop_map(|s| Cell::RawText(Box::leak(s.into_bytes().into_boxed_slice()))),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| Cell::RawText(Box::leak(b.into_boxed_slice()))),
        ];
        match ty {
            ColumnType::String => prop_oneof![Just(Cell::Null), text].boxed(),
            ColumnType::Date => prop_oneof![
                Just(Cell::Null),
                text,
                (Timestamp::MIN_WIRE.unix_millis()..=Timestamp::MAX_WIRE.unix_millis())
                    .prop_map(Cell::Millis),
            ]
            .boxed(),
            ColumnType::Number => prop_oneof![
                Just(Cell::Null),
                any::<f64>().prop_map(Cell::Real),
                (-1_000_000i64..1_000_000).prop_map(|i| Cell::Real(i as f64)),
                any::<i64>().prop_map(Cell::Int),
            ]
            .boxed(),
            ColumnType::Boolean => {
                prop_oneof![Just(Cell::Null), (0i64..3).prop_map(Cell::Int)].boxed()
            }
        }
    }

    fn rows() -> impl Strategy<Value = Vec<Vec<Cell<'static>>>> {
        let s = schema(IdType::String);
        let types: Vec<ColumnType> = super::super::sql::item_columns(&s)
            .map(|(_, t)| t)
            .collect();
        let row = types.into_iter().map(cell_for).collect::<Vec<_>>();
        proptest::collection::vec(row, 0..8)
    }

    proptest! {
        #[test]
        fn random_pages_encode_like_serde_json(rows in rows(), mask in any::<u16>()) {
            let s = schema(IdType::String);
            prop_assert_eq!(encode(&s, None, &rows), old_json(&s, None, &rows));
            let select: Vec<String> = super::super::sql::item_columns(&s)
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, (n, _))| n.to_owned())
                .collect();
            prop_assert_eq!(encode(&s, Some(&select), &rows), old_json(&s, Some(&select), &rows));
        }
    }
}
