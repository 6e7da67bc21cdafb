//! The server's metrics: one [`Metrics`] registry per [`crate::Server`], served as
//! `GET /metrics` in the Prometheus text format (OpenMetrics 1.0, which Prometheus asks for
//! first).
//!
//! Built on `prometheus-client` rather than the `metrics` facade: its registries are plain
//! values, so every server in a process (tests start dozens; an app may embed two) keeps its own
//! counters and no process-global recorder has to be installed, raced for or shared.
//!
//! Label values are bounded: `table` is a configured table's name or `""` (unknown tables and
//! non-table routes), `operation` one of a fixed set, `status` an HTTP status code; nothing
//! from a request's path or query becomes a label as it is.
//!
//! # Metric names
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `tablesync_http_requests_total` | counter | table, operation, status | requests answered |
//! | `tablesync_http_request_duration_seconds` | histogram | table, operation | time to the response head |
//! | `tablesync_rows_served_total` | counter | table, kind (`list`, `pull`) | rows sent by list requests; a pull is a list ordered by `updatedAt` (how clients sync) |
//! | `tablesync_pushed_operations_total` | counter | table, operation | writes applied (2xx inserts, updates, deletes, undeletes) |
//! | `tablesync_conflicts_total` | counter | table, status (`409`, `412`) | writes refused for a version conflict |
//! | `tablesync_db_pool_connections_in_use` | gauge | | database connections running an operation at scrape time |
//! | `tablesync_db_pool_connections_max` | gauge | | the most connections the store opens |
//! | `tablesync_db_pool_wait_seconds` | histogram | | how long operations waited for a connection |
//! | `tablesync_batch_operations` | histogram | | operations per `POST /$batch` ([`Metrics::observe_batch`]) |
//! | `tablesync_group_commit_operations` | histogram | | writes per commit of the stores' group commit ([`GroupCommits`]); its `_count` is the number of write transactions committed |
//! | `tablesync_group_commit_queued_writes` | gauge | | writes waiting in the group commit queues now (not yet taken into a group) |
//! | `tablesync_group_commit_multi_row_writes_total` | counter | | writes a committed group carried in a statement of several rows (PostgreSQL: consecutive inserts, or updates, alike) |
//! | `tablesync_feed_subscribers` | gauge | | change-feed subscribers at scrape time |
//! | `tablesync_feed_events_total` | counter | table | change events handed to subscribers' streams |
//! | `tablesync_feed_drops_total` | counter | table | subscribers dropped for falling behind (`event: overflow`) |
//!
//! # Hook points
//!
//! Code that adds a way of writing calls the matching method on `App::metrics()`:
//! [`Metrics::observe_batch`] once per batch request with its operation count (`POST /$batch`
//! does). The stores fill two histograms they own, which the registry exports: the pool wait
//! ([`PoolWait`]) and the group commit sizes ([`GroupCommits`]: the group runner calls
//! [`GroupCommits::observe`] once per write transaction with the writes it carried, a batch
//! counting each of its operations). Each operation inside a batch
//! counts in `tablesync_pushed_operations_total` / `tablesync_conflicts_total` through
//! [`Metrics::write_answered`] (a replayed `Idempotency-Key` answer is not counted again); the
//! batch request itself counts once in the request metrics, as operation `batch`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::PoolStatus;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    table: String,
    operation: &'static str,
    status: u16,
}

/// Labels of the request duration histogram and of the pushed-operation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    table: String,
    operation: &'static str,
}

/// Labels of the rows-served counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowsLabels {
    table: String,
    kind: &'static str,
}

/// Labels of the conflict counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabels {
    table: String,
    status: u16,
}

/// Request latencies: 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

/// Sizes (operations per batch or commit): 1 to 4096, doubling.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// How long operations waited for a database connection ([`crate::store::Store::pool_wait`]):
/// a histogram a store fills and the [`Metrics`] of its server exports.
#[derive(Clone, Debug)]
pub struct PoolWait(Histogram);

impl PoolWait {
    /// An empty histogram (10 µs to about 20 s, doubling).
    pub fn new() -> Self {
        PoolWait(Histogram::new(exponential_buckets(0.000_01, 2.0, 22)))
    }

    /// Record one wait.
    pub fn observe(&self, waited: Duration) {
        self.0.observe(waited.as_secs_f64());
    }
}

impl Default for PoolWait {
    fn default() -> Self {
        PoolWait::new()
    }
}

/// A store's group commit (`store::group`) as the metrics see it: how many writes each write
/// transaction carried (a histogram) and how many writes wait in its queues now (a gauge).
/// The store fills them and the [`Metrics`] of its server exports them.
#[derive(Clone, Debug)]
pub struct GroupCommits {
    sizes: Histogram,
    queued: Gauge,
    multi_row: Counter,
}

impl GroupCommits {
    /// Empty: no commit yet (sizes 1 to 4096 writes, doubling), no write queued.
    pub fn new() -> Self {
        GroupCommits {
            sizes: size_histogram(),
            queued: Gauge::default(),
            multi_row: Counter::default(),
        }
    }

    /// Record one commit carrying `writes` writes (failed ones included: they rode along).
    pub fn observe(&self, writes: usize) {
        self.sizes.observe(writes as f64);
    }

    /// A committed group carried `writes` writes in statements of several rows.
    pub fn multi_row(&self, writes: usize) {
        self.multi_row.inc_by(writes as u64);
    }

    /// How many writes wait in the queues now (tests wait for a queue to fill).
    #[cfg(test)]
    pub fn queued_now(&self) -> i64 {
        self.queued.get()
    }

    /// `n` writes joined a queue (`n` may be negative: they left it for a group).
    pub fn queued(&self, n: i64) {
        self.queued.inc_by(n);
    }
}

impl Default for GroupCommits {
    fn default() -> Self {
        GroupCommits::new()
    }
}

/// One server's metrics (see the module docs for the names).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    rows: Family<RowsLabels, Counter>,
    pushed: Family<OperationLabels, Counter>,
    conflicts: Family<ConflictLabels, Counter>,
    pool_in_use: Gauge,
    pool_max: Gauge,
    batch_sizes: Histogram,
    feed_subscribers: Gauge,
    feed_events: Family<TableLabels, Counter>,
    feed_drops: Family<TableLabels, Counter>,
}

/// Labels of the change-feed counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

impl Metrics {
    /// A fresh registry; `pool_wait` and `group_commits` are the store's histograms, exported
    /// here.
    pub fn new(pool_wait: &PoolWait, group_commits: &GroupCommits) -> Self {
        let mut registry = Registry::with_prefix("tablesync");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by table, operation and status",
            requests.clone(),
        );
        let durations =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, in seconds",
            durations.clone(),
        );
        let rows = Family::<RowsLabels, Counter>::default();
        registry.register(
            "rows_served",
            "Rows sent by list requests; kind=pull for lists ordered by updatedAt",
            rows.clone(),
        );
        let pushed = Family::<OperationLabels, Counter>::default();
        registry.register(
            "pushed_operations",
            "Writes applied (inserts, updates, deletes, undeletes answered 2xx)",
            pushed.clone(),
        );
        let conflicts = Family::<ConflictLabels, Counter>::default();
        registry.register(
            "conflicts",
            "Writes refused for a version conflict (409) or a failed If-Match (412)",
            conflicts.clone(),
        );
        let pool_in_use = Gauge::default();
        registry.register(
            "db_pool_connections_in_use",
            "Database connections running an operation",
            pool_in_use.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_connections_max",
            "The most database connections this server opens",
            pool_max.clone(),
        );
        registry.register(
            "db_pool_wait_seconds",
            "Time operations waited for a database connection, in seconds",
            pool_wait.0.clone(),
        );
        let batch_sizes = size_histogram();
        registry.register(
            "batch_operations",
            "Operations per batch request",
            batch_sizes.clone(),
        );
        registry.register(
            "group_commit_operations",
            "Writes carried by one write transaction (group commit)",
            group_commits.sizes.clone(),
        );
        registry.register(
            "group_commit_queued_writes",
            "Writes waiting for a group commit",
            group_commits.queued.clone(),
        );
        registry.register(
            "group_commit_multi_row_writes",
            "Writes a committed group carried in a statement of several rows",
            group_commits.multi_row.clone(),
        );
        let feed_subscribers = Gauge::default();
        registry.register(
            "feed_subscribers",
            "Change-feed subscribers now",
            feed_subscribers.clone(),
        );
        let feed_events = Family::<TableLabels, Counter>::default();
        registry.register(
            "feed_events",
            "Change events handed to change-feed subscribers",
            feed_events.clone(),
        );
        let feed_drops = Family::<TableLabels, Counter>::default();
        registry.register(
            "feed_drops",
            "Change-feed subscribers dropped for falling behind by more than feed_subscriber_buffer_events",
            feed_drops.clone(),
        );
        Metrics {
            feed_subscribers,
            feed_events,
            feed_drops,
            registry,
            requests,
            durations,
            rows,
            pushed,
            conflicts,
            pool_in_use,
            pool_max,
            batch_sizes,
        }
    }

    /// Count one answered request and its latency; conflicts and applied writes are derived
    /// from the status. `table` is a configured table's name or `""`.
    pub fn request(&self, table: &str, operation: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                table: table.to_owned(),
                operation,
                status,
            })
            .inc();
        let labels = OperationLabels {
            table: table.to_owned(),
            operation,
        };
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if is_write(operation) {
            self.write_answered(table, operation, status);
        }
    }

    /// Count one write's answer: applied (2xx) or refused for a version conflict (409/412).
    /// Requests call it through [`Metrics::request`]; a batch once per operation it carried.
    pub fn write_answered(&self, table: &str, operation: &'static str, status: u16) {
        match status {
            200..=299 => self.pushed(table, operation, 1),
            409 | 412 => {
                self.conflicts
                    .get_or_create(&ConflictLabels {
                        table: table.to_owned(),
                        status,
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Count `n` applied writes of one operation (a batch counts each of its writes here).
    pub fn pushed(&self, table: &str, operation: &'static str, n: u64) {
        self.pushed
            .get_or_create(&OperationLabels {
                table: table.to_owned(),
                operation,
            })
            .inc_by(n);
    }

    /// Count the rows one list request sent; `pull` when it was ordered by `updatedAt`.
    pub fn rows_served(&self, table: &str, pull: bool, n: u64) {
        let kind = if pull { "pull" } else { "list" };
        self.rows
            .get_or_create(&RowsLabels {
                table: table.to_owned(),
                kind,
            })
            .inc_by(n);
    }

    /// One batch request carried `operations` operations (`POST /$batch`; a keyed single write
    /// is not a batch here).
    pub fn observe_batch(&self, operations: usize) {
        self.batch_sizes.observe(operations as f64);
    }

    /// `n` change events went to subscribers of `table`.
    pub fn feed_events(&self, table: &str, n: u64) {
        self.feed_events
            .get_or_create(&TableLabels {
                table: table.to_owned(),
            })
            .inc_by(n);
    }

    /// A subscriber of `table` was dropped for falling behind.
    pub fn feed_drop(&self, table: &str) {
        self.feed_drops
            .get_or_create(&TableLabels {
                table: table.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the pool gauges and the subscriber count (`subscribers`) read
    /// now.
    pub fn render(&self, pool: PoolStatus, subscribers: usize) -> String {
        self.feed_subscribers
            .set(i64::try_from(subscribers).unwrap_or(i64::MAX));
        self.pool_in_use
            .set(i64::try_from(pool.in_use).unwrap_or(i64::MAX));
        self.pool_max
            .set(i64::try_from(pool.max).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The operations that write.
fn is_write(operation: &str) -> bool {
    matches!(operation, "insert" | "update" | "delete" | "undelete")
}

/// A batch operation's name as the metrics label it.
pub fn operation_name(kind: crate::batch::OpKind) -> &'static str {
    use crate::batch::OpKind;
    match kind {
        OpKind::Insert => "insert",
        OpKind::Update => "update",
        OpKind::Delete => "delete",
        OpKind::Undelete => "undelete",
    }
}
