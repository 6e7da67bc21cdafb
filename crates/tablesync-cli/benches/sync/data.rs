//! The seeded data set and everything that writes it straight into SQLite files: the servers'
//! data files (seeded behind their backs, so a 1,000,000-row table takes seconds, not the
//! minutes of one POST per row) and the raw bulk insert that is the local limit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::rng::SplitMix64;

/// The table both servers serve (text, complete, soft delete).
pub const TABLE: &str = "TodoItem";

/// The `version` of every seeded row as the servers answer it: base64 of `1`, which is how the
/// official server renders its integer version 1; ours stores the same text. Both servers then
/// hold identical rows, so one queue of operations built from either pull pushes to both.
pub const SEEDED_VERSION: &str = "MQ==";

/// The first row's `createdAt`/`updatedAt` (2024-01-01T00:00:00.000Z) in ms since the epoch.
const FIRST_STAMP_MS: u64 = 1_704_067_200_000;

/// Random letters appended to each row's text, in characters: with them a row is about 200
/// bytes of JSON on the wire (the bench prints the measured size).
const TEXT_RANDOM_CHARS: usize = 24;

/// One seeded row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    /// `createdAt` and `updatedAt` (the same, in the wire form).
    pub stamp: String,
    pub text: String,
    pub complete: bool,
}

/// `rows` rows, row `i` stamped `i` ms after 2024-01-01 (distinct, increasing stamps, as a
/// server's commit-ordered stamps are).
pub fn rows(count: usize, seed: u64) -> Vec<Row> {
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let letters: String = (0..TEXT_RANDOM_CHARS)
                .map(|_| char::from(b'a' + (rng.below(26) as u8)))
                .collect();
            Row {
                id: rng.uuid(),
                stamp: stamp(i as u64),
                text: format!("item {i:07} {letters}"),
                complete: rng.next() & 1 == 1,
            }
        })
        .collect()
}

/// The wire form of 2024-01-01T00:00:00.000Z plus `offset_ms` (less than a day).
fn stamp(offset_ms: u64) -> String {
    let (h, rest) = (offset_ms / 3_600_000, offset_ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("2024-01-01T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Inserts `rows` into a data file of `tablesync serve` whose schema the server created, and
/// moves the table's clock past them (later writes get greater stamps and versions).
pub fn seed_ours(db: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db).context("opening our server's data file")?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO \"TodoItem\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \
             \"deleted\", \"text\", \"complete\") VALUES (?1, ?2, ?2, ?3, 0, ?4, ?5)",
        )?;
        for r in rows {
            insert.execute(rusqlite::params![
                r.id,
                r.stamp,
                SEEDED_VERSION,
                r.text,
                r.complete
            ])?;
        }
    }
    tx.execute(
        "UPDATE tablesync_clock SET last_updated_at = ?1, last_version = ?2 WHERE table_name = ?3",
        rusqlite::params![FIRST_STAMP_MS + rows.len() as u64, rows.len() as i64, TABLE],
    )?;
    tx.commit()?;
    Ok(())
}

/// Inserts `rows` into the official server's data file (its sqlite provider's schema, created
/// by the server at start: dates as `%Y-%m-%dT%H:%M:%fZ` text, an integer version).
pub fn seed_official(db: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut conn =
        rusqlite::Connection::open(db).context("opening the official server's data file")?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO [TodoItem] ([id], [createdAt], [updatedAt], [version], [deleted], [text], \
             [complete]) VALUES (?1, ?2, ?2, 1, 0, ?3, ?4)",
        )?;
        for r in rows {
            insert.execute(rusqlite::params![r.id, r.stamp, r.text, r.complete])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The local limit: `rows` inserted into an empty file with the client store's table layout
/// (`id TEXT PRIMARY KEY`, system columns, declared columns; WAL as the SDK opens it) in ONE
/// transaction through ONE prepared statement. Returns the time of the inserts and the commit.
pub fn raw_insert(path: &Path, rows: &[Row]) -> anyhow::Result<Duration> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE \"TodoItem\" (\"id\" TEXT PRIMARY KEY, \"createdAt\" TEXT, \"updatedAt\" TEXT, \
         \"version\" TEXT, \"deleted\" INTEGER NOT NULL DEFAULT 0, \"text\" TEXT, \"complete\" INTEGER)",
    )?;
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO \"TodoItem\" (\"id\", \"createdAt\", \"updatedAt\", \"version\", \
             \"deleted\", \"text\", \"complete\") VALUES (?1, ?2, ?2, ?3, 0, ?4, ?5)",
        )?;
        for r in rows {
            insert.execute(rusqlite::params![
                r.id,
                r.stamp,
                SEEDED_VERSION,
                r.text,
                r.complete
            ])?;
        }
    }
    tx.commit()?;
    Ok(started.elapsed())
}
