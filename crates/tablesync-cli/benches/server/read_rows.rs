//! Our server's read rows beyond the shared workload (issue 10): the query without the declared
//! index, the in-process limit of a 1000-row page, and the scale rows.
//!
//! * **No index.** `TodoItem` declares `indexes = [["complete", "text"]]`; `TodoPlain` declares
//!   none. After the shared workload the bench copies `TodoItem`'s rows into `TodoPlain` with SQL
//!   (same rows, same stamps) and runs the same query phase against it.
//! * **Limit.** The keyset pull of `TodoItem` done in this process on the SQLite file: the same
//!   page statement our server runs, stepped by rusqlite, each row serialised by serde_json (a
//!   derived `Serialize`, no map) into one buffer; no HTTP, no parse. Our pulls' time per row
//!   over this one is the `× limit` column.
//! * **Scale.** `BigItem` (same columns and declared index) is seeded with SQL to the shared
//!   workload's row count, then to `--scale-rows`: at each size, `--scale-pages` keyset pages of
//!   1000 rows after random positions and the query phase. Rows are `big-<i>` with `updatedAt`
//!   2024-01-01T00:00:00.000Z + i ms, so a position's token is computed, not looked up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::process;
use crate::report::{Measurement, Rate, LIMIT_ROW};
use crate::rng::SplitMix64;
use crate::workload::{self, Plan, QUERY_ROW};

/// The table without a declared index.
const PLAIN_TABLE: &str = "TodoPlain";
/// The scale rows' table.
const BIG_TABLE: &str = "BigItem";
/// Page size of the scale pages and the limit (the official server's maximum `$top`).
const PAGE_ROWS: u32 = 1000;
/// `updatedAt` is 2024-01-01T00:00:00.000Z + i ms, written within the first hour.
const SCALE_ROWS_MAX: usize = 3_600_000;

/// The database our server under test runs on, for the bench's own SQL.
pub enum Db {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
    /// Not ours (the official server): no read rows.
    None,
}

impl Db {
    /// Runs `sqlite` or `postgres` (one or more statements) on the database.
    fn execute(&self, sqlite: &str, postgres: &str) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)?;
                conn.busy_timeout(Duration::from_secs(60))?;
                conn.execute_batch(sqlite)
                    .with_context(|| format!("running {sqlite}"))
            }
            Db::Postgres(url) => process::psql(url, postgres),
            Db::None => bail!("not one of our servers' databases"),
        }
    }

    /// What the pulls should find done on a table just filled: PostgreSQL's planner statistics.
    /// autovacuum gathers them within `autovacuum_naptime` (1 min) of a table filling up, so a
    /// served table has them; the bench fills `TodoItem` and pulls it within seconds, before
    /// autovacuum runs, and without statistics PostgreSQL plans a pull page as a sequential scan
    /// and a sort. SQLite plans the pull on the index without statistics, and neither SQLite
    /// server (ours or the official one) gathers any on its own: nothing is run there.
    pub fn analyze_for_pulls(&self) -> anyhow::Result<()> {
        match self {
            Db::Postgres(url) => process::psql(url, "ANALYZE \"TodoItem\";"),
            Db::Sqlite(_) | Db::None => Ok(()),
        }
    }
}

/// The scale options.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Rows of the large table; 0 skips the scale rows.
    pub rows: usize,
    /// Keyset pages measured at each size.
    pub pages: usize,
}

/// The rows measured here for our server labelled `server` at `base_url` on `db`.
pub async fn ours(
    server: &str,
    base_url: &str,
    plan: &Plan,
    seed: u64,
    db: &Db,
    scale: Scale,
) -> anyhow::Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let columns = r#""id", "text", "complete", "createdAt", "updatedAt", "version", "deleted""#;
    let copy = format!(
        "INSERT INTO \"{PLAIN_TABLE}\" ({columns}) SELECT {columns} FROM \"TodoItem\"; ANALYZE;"
    );
    db.execute(&copy, &copy)?;
    let mut plain = workload::query_table(
        server,
        base_url,
        PLAIN_TABLE,
        plan,
        &format!("{QUERY_ROW}, no index"),
    )
    .await?;
    plain.anchor = Some(QUERY_ROW.to_string());
    out.push(plain);
    if scale.rows == 0 {
        return Ok(out);
    }
    if scale.rows > SCALE_ROWS_MAX || scale.rows <= plan.rows {
        bail!(
            "--scale-rows must be above --rows ({}) and at most {SCALE_ROWS_MAX}",
            plan.rows
        );
    }
    let mut rng = SplitMix64(seed ^ 0x5ca1e);
    let mut seeded = 0;
    for size in [plan.rows, scale.rows] {
        seed_big(db, seeded, size)?;
        seeded = size;
        let positions: Vec<(String, String)> = (0..scale.pages)
            .map(|_| position(rng.below(size.saturating_sub(PAGE_ROWS as usize + 1))))
            .collect();
        out.push(
            workload::keyset_pages(
                server,
                base_url,
                BIG_TABLE,
                &positions,
                PAGE_ROWS,
                &format!("pull page, keyset ($top={PAGE_ROWS}), {size}-row table"),
            )
            .await?,
        );
        out.push(
            workload::query_table(
                server,
                base_url,
                BIG_TABLE,
                plan,
                &format!("{QUERY_ROW}, declared index, {size}-row table"),
            )
            .await?,
        );
    }
    Ok(out)
}

/// `(updatedAt, id)` of the scale table's row `i`.
fn position(i: usize) -> (String, String) {
    (
        format!(
            "2024-01-01T00:{:02}:{:02}.{:03}Z",
            i / 60_000,
            (i / 1000) % 60,
            i % 1000
        ),
        format!("big-{i:07}"),
    )
}

/// Inserts the scale table's rows `from..to` with SQL, then refreshes the planner statistics.
fn seed_big(db: &Db, from: usize, to: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let last = to - 1;
    let sqlite = format!(
        "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
         INSERT INTO \"{BIG_TABLE}\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
         SELECT printf('big-%07d', i), 'item ' || i, i % 2, \
                printf('2024-01-01T00:%02d:%02d.%03dZ', i / 60000, (i / 1000) % 60, i % 1000), \
                printf('2024-01-01T00:%02d:%02d.%03dZ', i / 60000, (i / 1000) % 60, i % 1000), \
                'MQ==', 0 FROM n; ANALYZE;"
    );
    let postgres = format!(
        "INSERT INTO \"{BIG_TABLE}\" (\"id\", \"text\", \"complete\", \"createdAt\", \"updatedAt\", \"version\", \"deleted\") \
         SELECT 'big-' || lpad(i::text, 7, '0'), 'item ' || i, i % 2 = 1, ts, ts, 'MQ==', false \
         FROM (SELECT i, timestamptz '2024-01-01T00:00:00Z' + i * interval '1 millisecond' AS ts \
               FROM generate_series({from}, {last}) i) s; ANALYZE \"{BIG_TABLE}\";"
    );
    db.execute(&sqlite, &postgres)?;
    eprintln!(
        "  seeded {BIG_TABLE} to {to} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A row as the limit serialises it: the item's keys in the item's order.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    text: Option<&'a str>,
    complete: Option<bool>,
    #[serde(rename = "createdAt")]
    created_at: &'a str,
    #[serde(rename = "updatedAt")]
    updated_at: &'a str,
    version: &'a str,
    deleted: bool,
}

/// What the limit measured, beside its row: the bench client's own decode of the same pages.
pub struct Limit {
    /// The limit row.
    pub measurement: Measurement,
    /// The time the bench's client takes to decode a page it receives (`workload::decode_page`,
    /// the rows' keys; part of every pull row's time, not of the limit's), per page, median.
    pub decode_p50: Duration,
    /// The time a full parse of the same page into `serde_json` values takes (what this bench
    /// client did before it decoded keys only), per page, median; not in any row's time.
    pub value_parse_p50: Duration,
}

/// The keyset pull of `TodoItem` (`rows` rows) `repeats` times in this process on the SQLite
/// file `db`: each page read by rusqlite with our server's page statement and encoded by
/// serde_json. A page's latency is its read and encode.
pub fn limit(db: &Path, rows: usize, repeats: usize) -> anyhow::Result<Limit> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let select = r#"SELECT "id", "text", "complete", "createdAt", "updatedAt", "version", "deleted" FROM "TodoItem""#;
    let order = r#"ORDER BY "updatedAt" ASC, "id" ASC"#;
    // The LIMIT is a literal, as in our server's statement: a bound one makes SQLite plan the
    // statement again at every page (`store::sql::list_sql`).
    let mut first = conn.prepare(&format!("{select} {order} LIMIT {PAGE_ROWS} OFFSET ?1"))?;
    let mut next = conn.prepare(&format!(
        r#"{select} WHERE (("updatedAt" >= ?1) AND (("updatedAt" > ?1) OR (("updatedAt" = ?1) AND ("id" > ?2)))) {order} LIMIT {PAGE_ROWS} OFFSET ?3"#
    ))?;
    let mut latencies = Vec::new();
    let mut parses = Vec::new();
    let mut value_parses = Vec::new();
    let mut delivered = 0u64;
    let mut errors = 0u64;
    let started = Instant::now();
    for _ in 0..repeats.max(1) {
        let mut after: Option<(String, String)> = None;
        let mut pulled = 0usize;
        loop {
            let t = Instant::now();
            let mut cursor = match &after {
                None => first.query(rusqlite::params![0])?,
                Some((at, id)) => next.query(rusqlite::params![at, id, 0])?,
            };
            let mut page: Vec<u8> = Vec::with_capacity(PAGE_ROWS as usize * 256);
            page.push(b'[');
            let mut n = 0usize;
            let mut last = None;
            while let Some(r) = cursor.next()? {
                let row = Row {
                    id: r.get_ref(0)?.as_str()?,
                    text: r.get_ref(1)?.as_str_or_null()?,
                    complete: r.get::<_, Option<i64>>(2)?.map(|c| c != 0),
                    created_at: r.get_ref(3)?.as_str()?,
                    updated_at: r.get_ref(4)?.as_str()?,
                    version: r.get_ref(5)?.as_str()?,
                    deleted: r.get::<_, i64>(6)? != 0,
                };
                if n > 0 {
                    page.push(b',');
                }
                serde_json::to_writer(&mut page, &row)?;
                n += 1;
                if n == PAGE_ROWS as usize {
                    last = Some((row.updated_at.to_string(), row.id.to_string()));
                }
            }
            page.push(b']');
            latencies.push(t.elapsed());
            let p = Instant::now();
            let decoded = crate::workload::decode_page(&page)?;
            parses.push(p.elapsed());
            pulled += decoded.len();
            let v = Instant::now();
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&page)?;
            value_parses.push(v.elapsed());
            if parsed.len() != decoded.len() {
                errors += 1;
            }
            match last {
                Some(position) => after = Some(position),
                None => break,
            }
        }
        if pulled == rows {
            delivered += rows as u64;
        } else {
            errors += 1;
        }
    }
    // The decodes are timed outside the pull's wall time: the limit is the read and the encode.
    let parse_total: Duration = parses.iter().chain(&value_parses).sum();
    let wall = started.elapsed().saturating_sub(parse_total);
    latencies.sort_unstable();
    let median = |mut times: Vec<Duration>| {
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or_default()
    };
    Ok(Limit {
        measurement: Measurement {
            operation: LIMIT_ROW.to_string(),
            server: "in-process (SQLite file of ours)".to_string(),
            rate: Rate::Rows,
            requests: latencies.len() as u64,
            rows: delivered,
            delivered_rows: delivered,
            errors,
            wall,
            latencies,
            first_error: (errors > 0).then(|| "a pull missed rows".to_string()),
            anchor: None,
            server_mean_ms: None,
        },
        decode_p50: median(parses),
        value_parse_p50: median(value_parses),
    })
}
