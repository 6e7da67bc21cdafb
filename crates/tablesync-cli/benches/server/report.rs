//! Measurements and the markdown table they are printed as.

use std::fmt::Write as _;
use std::time::Duration;

/// Which number a phase is judged by (and its speed-up computed from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Requests per second (request phases).
    Requests,
    /// Delivered rows per second (pulls: the same rows on every server, so this is the
    /// inverse of the time).
    Rows,
}

/// One phase on one server.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured, e.g. `insert (POST)`.
    pub operation: String,
    /// Which server, e.g. `ours (SQLite)`.
    pub server: String,
    /// The number the speed-up compares.
    pub rate: Rate,
    /// Requests sent.
    pub requests: u64,
    /// Rows written (insert, update), received (read, query) or downloaded (pulls, counting
    /// re-downloaded boundary rows).
    pub rows: u64,
    /// Rows delivered once: `rows`, except for pulls, where it is the distinct rows of each
    /// complete pull (the table's rows × repeats when all went well).
    pub delivered_rows: u64,
    /// Failed requests and incomplete pulls.
    pub errors: u64,
    /// Wall-clock time of the whole phase.
    pub wall: Duration,
    /// Every request's latency, sorted ascending.
    pub latencies: Vec<Duration>,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// The operation whose reference-server row this row's speed-up compares with, when it is
    /// not its own (ours without the index: the official server's query row); None: its own.
    pub anchor: Option<String>,
    /// The server's own mean time per request over the phase, in milliseconds, from its
    /// request-duration histogram on `/metrics` (ours only; None for the official server):
    /// what the row's latency spends inside the server, against HTTP and the bench client.
    pub server_mean_ms: Option<f64>,
}

impl Measurement {
    fn per_second(&self, count: f64) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            count / secs
        } else {
            0.0
        }
    }

    /// Requests per second over the phase's wall time.
    pub fn requests_per_sec(&self) -> f64 {
        self.per_second(self.requests as f64)
    }

    /// Delivered rows per second over the phase's wall time.
    pub fn rows_per_sec(&self) -> f64 {
        self.per_second(self.delivered_rows as f64)
    }

    /// The number [`Rate`] names.
    pub fn score(&self) -> f64 {
        match self.rate {
            Rate::Requests => self.requests_per_sec(),
            Rate::Rows => self.rows_per_sec(),
        }
    }

    /// Latency percentile `p` (0–100) by the nearest-rank method, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1000.0
    }
}

/// The row of the limit: the keyset pull's pages read and encoded in-process (no HTTP).
pub const LIMIT_ROW: &str =
    "limit: the keyset pull's 1000-row pages, rusqlite read + serde_json encode, in-process";

/// Whether a row is judged against the limit row: the pulls and pages of 1000 rows.
fn against_limit(m: &Measurement) -> bool {
    m.rate == Rate::Rows && m.operation.contains("$top=1000") && m.operation != LIMIT_ROW
}

/// The score of the `reference` server's row that `m`'s speed-up compares with, among
/// `measurements`: the same operation, or `m`'s [`Measurement::anchor`].
fn reference_score(measurements: &[Measurement], m: &Measurement, reference: &str) -> Option<f64> {
    let anchor = m.anchor.as_deref().unwrap_or(&m.operation);
    measurements
        .iter()
        .find(|r| r.operation == anchor && r.server == reference)
        .map(Measurement::score)
}

/// The markdown table: one row per operation and server, in measurement order grouped by
/// operation, with the speed-up of each server over `reference` (same operation, by [`Rate`],
/// or the row's [`Measurement::anchor`]) and, for 1000-row pages, the row's time per row over
/// the [`LIMIT_ROW`]'s.
pub fn markdown_table(measurements: &[Measurement], reference: &str) -> String {
    let mut operations: Vec<&str> = Vec::new();
    for m in measurements {
        if !operations.contains(&m.operation.as_str()) {
            operations.push(&m.operation);
        }
    }
    let mut out = String::new();
    out.push_str(
        "| operation | server | requests | rows | errors | wall s | req/s | p50 ms | p99 ms | rows/s | speed-up | × limit |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let limit_score = measurements
        .iter()
        .find(|m| m.operation == LIMIT_ROW)
        .map(Measurement::score)
        .filter(|s| *s > 0.0);
    for op in operations {
        for m in measurements.iter().filter(|m| m.operation == op) {
            let reference_score = reference_score(measurements, m, reference);
            let versus_limit = match limit_score {
                Some(limit) if against_limit(m) && m.score() > 0.0 => {
                    format!("{:.2}×", limit / m.score())
                }
                _ if m.operation == LIMIT_ROW => "(limit)".to_string(),
                _ => "–".to_string(),
            };
            let speed_up = match reference_score {
                _ if m.server == reference => "(ref)".to_string(),
                Some(r) if r > 0.0 => format!("{:.2}×", m.score() / r),
                _ => "n/a".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {} | {versus_limit} |",
                m.operation,
                m.server,
                m.requests,
                m.rows,
                m.errors,
                m.wall.as_secs_f64(),
                m.requests_per_sec(),
                m.percentile_ms(50.0),
                m.percentile_ms(99.0),
                m.rows_per_sec(),
                speed_up
            );
        }
    }
    out
}

/// The rows of several passes of the same phases, one row per operation and server: the pass
/// whose [`Measurement::score`] is the median of that row's passes (the lower middle one for an
/// even count), so a burst of load from a neighbour on this shared machine during one short
/// phase moves the table no more than a slow pass of the reference does. Every field is that
/// pass's, except `errors` (the sum over all passes) and `first_error` (the first of any pass):
/// a failure in any pass still shows and still fails the bench. Rows measured in fewer passes
/// (the ones only the first pass runs) are taken as they are. Order: first appearance.
pub fn median_of_passes(passes: Vec<Vec<Measurement>>) -> Vec<Measurement> {
    let mut rows: Vec<Vec<Measurement>> = Vec::new();
    for m in passes.into_iter().flatten() {
        match rows
            .iter_mut()
            .find(|r| r[0].operation == m.operation && r[0].server == m.server)
        {
            Some(row) => row.push(m),
            None => rows.push(vec![m]),
        }
    }
    rows.into_iter()
        .map(|mut row| {
            let errors = row.iter().map(|m| m.errors).sum();
            let first_error = row.iter().find_map(|m| m.first_error.clone());
            row.sort_by(|a, b| a.score().total_cmp(&b.score()));
            let mut median = row.swap_remove((row.len() - 1) / 2);
            median.errors = errors;
            median.first_error = first_error;
            median
        })
        .collect()
}

/// For each row of ours with a reference row, the lowest and highest speed-up of a single pass
/// (that pass's row over the same pass's reference row), when it ran in more than one pass:
/// how far the noise of this machine moved the ratio the table shows. One line each.
pub fn speed_up_spread(passes: &[Vec<Measurement>], reference: &str) -> Vec<String> {
    let mut spreads: Vec<(String, String, Vec<f64>)> = Vec::new();
    for pass in passes {
        for m in pass.iter().filter(|m| m.server != reference) {
            let Some(r) = reference_score(pass, m, reference).filter(|r| *r > 0.0) else {
                continue;
            };
            let ratio = m.score() / r;
            match spreads
                .iter_mut()
                .find(|(op, server, _)| *op == m.operation && *server == m.server)
            {
                Some((_, _, ratios)) => ratios.push(ratio),
                None => spreads.push((m.operation.clone(), m.server.clone(), vec![ratio])),
            }
        }
    }
    spreads
        .into_iter()
        .filter(|(_, _, ratios)| ratios.len() > 1)
        .map(|(op, server, ratios)| {
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(0.0, f64::max);
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
            format!(
                "{op} on {server}: {low:.2}× to {high:.2}× in single passes ({})",
                each.join(", ")
            )
        })
        .collect()
}
