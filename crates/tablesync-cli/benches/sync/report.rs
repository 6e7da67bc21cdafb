//! The one table the sync bench prints: a row per measurement, each beside its anchor.

use std::fmt::Write as _;
use std::time::Duration;

/// One printed row. Rows are added in measurement order; new measurements (the batched push)
/// are new rows, never new columns.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What was measured, e.g. `cold pull, default options`.
    pub measurement: String,
    /// Where: `ours (SQLite)`, `official Node (SQLite)`, `local SQLite`.
    pub server: String,
    /// Rows written, operations pushed, or pulls made.
    pub items: u64,
    /// HTTP requests sent (`None`: no network involved).
    pub requests: Option<u64>,
    pub errors: u64,
    pub wall: Duration,
    /// The unit of [`Row::rate`]: `rows/s`, `ops/s`, `pulls/s`.
    pub unit: &'static str,
    /// Per-item latency percentiles, when measured per item.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// CPU the server process used during the measurement.
    pub server_cpu: Option<Duration>,
    /// CPU the client (this process, or the child) used during the measurement.
    pub client_cpu: Option<Duration>,
    pub peak_rss_bytes: Option<u64>,
    /// The comparison with this row's anchor (e.g. `2.4× the raw insert's time`).
    pub versus: String,
}

impl Row {
    /// Items per second over the wall time.
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.items as f64 / secs
        } else {
            0.0
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "–".into(),
        |d| format!("{:.2}", d.as_secs_f64() * 1000.0),
    )
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// The markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| measurement | server | items | requests | errors | wall s | rate | p50 ms | p99 ms | server CPU s | client CPU s | peak RSS MB | compared with |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.3} | {:.0} {} | {} | {} | {} | {} | {} | {} |",
            r.measurement,
            r.server,
            r.items,
            r.requests.map_or_else(|| "–".into(), |n| n.to_string()),
            r.errors,
            r.wall.as_secs_f64(),
            r.rate(),
            r.unit,
            ms(r.p50),
            ms(r.p99),
            secs(r.server_cpu),
            secs(r.client_cpu),
            r.peak_rss_bytes
                .map_or_else(|| "–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
            r.versus
        );
    }
    out
}
