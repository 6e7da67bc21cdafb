//! The queued-read rows (issue 10 point 2): how long a read by id takes with no writer waiting,
//! and with 20 writers queued behind a held write lock, on each of our stores.
//!
//! The lock is held from outside the server: SQLite `BEGIN IMMEDIATE` on the database file
//! (rusqlite), PostgreSQL `SELECT … FOR UPDATE` of the table's clock row in an open `psql`
//! transaction. The 20 writers are inserts, ten plain and ten with an `Idempotency-Key` (a
//! keyed write is a transaction of its own, so on PostgreSQL those hold write connections).
//! The bench waits, by polling `/metrics`, until they are queued (the group commit's queued
//! gauge, and on PostgreSQL the write pool in use), then times the same reads as with none
//! queued, then lets the lock go and checks that every writer got its 201. The row with 0
//! queued writers is the anchor of the row with 20, measured in the same run.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tablesync_server::testing::ServerProcess;

/// Writers queued behind the held lock.
pub const QUEUED_WRITERS: usize = 20;
/// Polls of `/metrics` before the bench gives up waiting for the writers to queue (10 ms apart).
const POLLS_MAX: usize = 3_000;

/// One store's two rows.
pub struct QueuedRead {
    pub store: &'static str,
    /// Read latencies with no writer waiting, then with [`QUEUED_WRITERS`] queued.
    pub idle: Vec<Duration>,
    pub queued: Vec<Duration>,
}

/// Which store the server runs on (they hold the lock differently).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// Measures `reads` reads by id with 0 and with [`QUEUED_WRITERS`] queued writers on `server`,
/// which runs on `database` (the SQLite file or the PostgreSQL URL).
pub fn measure(
    runtime: &tokio::runtime::Runtime,
    label: &'static str,
    store: Store,
    server: &ServerProcess,
    database: &str,
    reads: usize,
) -> anyhow::Result<QueuedRead> {
    let http = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = server.url().to_owned();
    runtime.block_on(async {
        let seeded = http
            .post(format!("{base}/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&serde_json::json!({"id": "queued-read", "text": "r"}))
            .send()
            .await?;
        if seeded.status().as_u16() != 201 {
            bail!("seeding the read row answered {}", seeded.status());
        }
        let idle = time_reads(&http, &base, reads).await?;

        let lock = Lock::hold(store, database)?;
        let insert = |i: usize, keyed: bool| {
            let mut rb = http
                .post(format!("{base}/tables/TodoItem"))
                .header("ZUMO-API-VERSION", "2.0.0")
                .json(&serde_json::json!({"id": format!("queued-{i}"), "text": "w"}));
            if keyed {
                rb = rb.header("Idempotency-Key", format!("queued-{i}"));
            }
            tokio::spawn(rb.send())
        };
        let mut writers = vec![insert(0, false)];
        wait_for(&http, &base, "the first writer to take the writer", |m| {
            m.value("tablesync_db_pool_connections_in_use") >= 1.0
        })
        .await?;
        writers.extend((1..QUEUED_WRITERS / 2).map(|i| insert(i, false)));
        writers.extend((QUEUED_WRITERS / 2..QUEUED_WRITERS).map(|i| insert(i, true)));
        let others = (QUEUED_WRITERS - 1) as f64;
        match store {
            // Every other writer waits for the one writer connection.
            Store::Sqlite => {
                wait_for(&http, &base, "19 writers to queue", |m| {
                    m.value("tablesync_group_commit_queued_writes") >= others
                })
                .await?
            }
            // Nine plain writers queue for the table's group; its leader and nine keyed writers
            // hold the ten write connections (the tenth keyed one waits for one).
            Store::Postgres => {
                wait_for(&http, &base, "the write pool to fill", |m| {
                    m.value("tablesync_group_commit_queued_writes") >= 9.0
                        && m.value("tablesync_db_pool_connections_in_use") >= 10.0
                })
                .await?
            }
        }
        let queued = time_reads(&http, &base, reads).await?;
        if writers.iter().any(|w| w.is_finished()) {
            bail!("{label}: a writer finished while the lock was held");
        }
        lock.release()?;
        for w in writers {
            let status = w.await?.context("a queued writer")?.status();
            if status.as_u16() != 201 {
                bail!("{label}: a queued writer answered {status}");
            }
        }
        Ok(QueuedRead {
            store: label,
            idle,
            queued,
        })
    })
}

async fn time_reads(
    http: &reqwest::Client,
    base: &str,
    reads: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        let r = http
            .get(format!("{base}/tables/TodoItem/queued-read"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .send()
            .await?;
        let status = r.status();
        r.bytes().await?;
        if status.as_u16() != 200 {
            bail!("a read answered {status}");
        }
        out.push(started.elapsed());
    }
    Ok(out)
}

/// A `/metrics` exposition, read as `name value` lines (label-free samples only).
struct Metrics(String);

impl Metrics {
    fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    state: impl Fn(&Metrics) -> bool,
) -> anyhow::Result<()> {
    for _ in 0..POLLS_MAX {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if state(&Metrics(text)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("waited in vain for {what}")
}

/// The database's write lock, held from outside the server.
enum Lock {
    Sqlite(rusqlite::Connection),
    Postgres(Child),
}

impl Lock {
    fn hold(store: Store, database: &str) -> anyhow::Result<Lock> {
        match store {
            Store::Sqlite => {
                let c = rusqlite::Connection::open(database)?;
                c.execute_batch("BEGIN IMMEDIATE")?;
                Ok(Lock::Sqlite(c))
            }
            Store::Postgres => {
                let mut child = Command::new("psql")
                    .args([database, "-v", "ON_ERROR_STOP=1", "-q", "-t", "-A"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("running psql")?;
                let stdin = child.stdin.as_mut().context("psql stdin")?;
                stdin.write_all(
                    b"BEGIN;\nSELECT 'held' FROM tablesync_clock WHERE table_name = 'TodoItem' FOR UPDATE;\n",
                )?;
                stdin.flush()?;
                // The SELECT's row says the lock is held.
                let stdout = child.stdout.take().context("psql stdout")?;
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line)?;
                if line.trim() != "held" {
                    bail!("psql did not take the clock row: {line:?}");
                }
                Ok(Lock::Postgres(child))
            }
        }
    }

    fn release(self) -> anyhow::Result<()> {
        match self {
            Lock::Sqlite(c) => c.execute_batch("ROLLBACK")?,
            Lock::Postgres(mut child) => {
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(b"ROLLBACK;\n")?;
                }
                let status = child.wait()?;
                if !status.success() {
                    bail!("psql holding the clock row ended with {status}");
                }
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The rows as a markdown table: per store, 0 then [`QUEUED_WRITERS`] queued writers.
pub fn table(rows: &[QueuedRead]) -> String {
    let mut out = String::from(
        "| store | writers queued behind a held write lock | reads | p50 ms | p95 ms | max ms | p50 vs. none queued |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in rows {
        let mut idle = row.idle.clone();
        idle.sort();
        let anchor = percentile(&idle, 0.5);
        for (queued, reads) in [(0, &row.idle), (QUEUED_WRITERS, &row.queued)] {
            let mut sorted = reads.clone();
            sorted.sort();
            let p50 = percentile(&sorted, 0.5);
            out.push_str(&format!(
                "| {} | {queued} | {} | {p50:.2} | {:.2} | {:.2} | {:.2}× |\n",
                row.store,
                sorted.len(),
                percentile(&sorted, 0.95),
                percentile(&sorted, 1.0),
                if anchor > 0.0 { p50 / anchor } else { 0.0 },
            ));
        }
    }
    out
}

/// Starts our server on a fresh SQLite file (`sqlite`) and on a fresh PostgreSQL database
/// (`pg_url`, when given), measures both, and returns the table.
pub fn section(
    runtime: &tokio::runtime::Runtime,
    sqlite: bool,
    pg_url: Option<&str>,
    log_level: &str,
    reads: usize,
) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    if sqlite {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let db = dir.path().join("queued.db").to_string_lossy().into_owned();
        let server = super::process::ours(&db, log_level, Some(dir))?;
        eprintln!("server bench: queued reads on ours (SQLite)");
        rows.push(measure(
            runtime,
            "ours (SQLite)",
            Store::Sqlite,
            &server,
            &db,
            reads,
        )?);
    }
    if let Some(admin_url) = pg_url {
        let database = super::process::PgDatabase::create(admin_url)?;
        eprintln!("server bench: queued reads on ours (PostgreSQL)");
        let measured = super::process::ours(database.url(), log_level, None).and_then(|server| {
            measure(
                runtime,
                "ours (PostgreSQL)",
                Store::Postgres,
                &server,
                database.url(),
                reads,
            )
        });
        database.drop_now()?;
        rows.push(measured?);
    }
    Ok(table(&rows))
}
