//! `GET /metrics`: scraped and parsed strictly (the OpenMetrics text format, line by line: every
//! sample belongs to a family declared by `# TYPE` with a `# HELP`, label values are quoted and
//! escaped, the exposition ends with `# EOF`), then checked to move as requests are made; two
//! servers in one process keep their own counts; metrics can be off or on their own address.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde_json::json;
use tablesync_server::{Config, Server};

use crate::{send, StoreKind, TestServer};

/// One parsed exposition: samples by name and label set, and each family's type.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    samples: HashMap<(String, BTreeMap<String, String>), f64>,
    types: HashMap<String, String>,
}

impl Exposition {
    /// The sample `name{labels}`; None when absent.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// [`Exposition::get`], 0 when absent (a counter not yet created).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The `le` buckets of histogram `name` with `labels`, in bound order, and its count.
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> (Vec<(f64, f64)>, f64) {
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|((n, l), _)| {
                n == &format!("{name}_bucket")
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                    && l.len() == labels.len() + 1
            })
            .map(|((_, l), v)| (parse_value(&l["le"]).unwrap(), *v))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (buckets, self.value(&format!("{name}_count"), labels))
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{k="v",…}` → labels; the rest of the line after `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (i, '"') => break eq + 1 + i + 1,
                (_, c) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The suffixes a sample of a family of this type may carry.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "gauge" | "unknown" => &[""],
        "info" => &["_info"],
        _ => &[],
    }
}

/// Parse an OpenMetrics text exposition strictly; the error names the bad line.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = std::collections::HashSet::new();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if lines.last() != Some(&"# EOF") || !text.ends_with('\n') {
        return Err("the exposition does not end with # EOF".into());
    }
    for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name, value) = (parts.next(), parts.next(), parts.next());
            let (Some(keyword), Some(name), Some(value)) = (keyword, name, value) else {
                return Err(fail("short metadata line".into()));
            };
            if !is_metric_name(name) {
                return Err(fail("bad family name".into()));
            }
            match keyword {
                "HELP" => {
                    helped.insert(name.to_owned());
                }
                "TYPE" => {
                    if suffixes(value).is_empty() {
                        return Err(fail(format!("unknown type {value}")));
                    }
                    if out
                        .types
                        .insert(name.to_owned(), value.to_owned())
                        .is_some()
                    {
                        return Err(fail("family declared twice".into()));
                    }
                }
                "UNIT" => {}
                _ => return Err(fail("unknown metadata keyword".into())),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(fail)?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|e| fail(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields".into()));
        }
        let family = out
            .types
            .iter()
            .find(|(family, kind)| {
                suffixes(kind)
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str()))
            })
            .map(|(family, _)| family.clone())
            .ok_or_else(|| fail("sample of no declared family".into()))?;
        if !helped.contains(&family) {
            return Err(fail(format!("family {family} has no HELP")));
        }
        if out
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            return Err(fail("sample twice".into()));
        }
    }
    Ok(out)
}

pub(crate) async fn scrape(base: &str) -> Exposition {
    let r = send(reqwest::Client::new().get(format!("{base}/metrics"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8(r.raw).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_parser_refuses_what_is_not_the_format() {
    let ok = "# HELP a x\n# TYPE a counter\na_total{t=\"q\\\"\"} 1\n# EOF\n";
    assert_eq!(parse(ok).unwrap().value("a_total", &[("t", "q\"")]), 1.0);
    for bad in [
        "# HELP a x\n# TYPE a counter\na_total 1\n",
        "# TYPE a counter\na_total 1\n# EOF\n",
        "# HELP a x\n# TYPE a counter\nb_total 1\n# EOF\n",
        "# HELP a x\n# TYPE a counter\na_total{t=q} 1\n# EOF\n",
        "# HELP a x\n# TYPE a counter\na_total one\n# EOF\n",
        "# HELP a x\n# TYPE a counter\na_total 1\na_total 2\n# EOF\n",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

async fn requests_rows_writes_and_conflicts_are_counted(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let before = scrape(&s.base).await;
    let t = [("table", "TodoItem")];
    assert_eq!(
        before.value(
            "tablesync_pushed_operations_total",
            &[t[0], ("operation", "insert")]
        ),
        0.0
    );

    for id in ["a", "b", "c"] {
        s.insert_todo(id, id, false).await;
    }
    // A list, and a pull the way clients sync (ordered by updatedAt, tombstones included).
    assert_eq!(s.get("/tables/TodoItem").await.status, 200);
    let pull = s
        .get("/tables/TodoItem?$filter=updatedAt%20ge%20datetimeoffset'2000-01-01T00:00:00Z'&$orderby=updatedAt&__includeDeleted=true&$top=2")
        .await;
    assert_eq!(pull.status, 200);
    let a = s.patch("/tables/TodoItem/a", json!({"text": "A"})).await;
    assert_eq!(a.status, 200);
    // 412: a stale If-Match; 409: a taken id.
    let r = s
        .patch_if("/tables/TodoItem/a", "\"stale\"", json!({"text": "x"}))
        .await;
    assert_eq!(r.status, 412);
    let r = s
        .post("/tables/TodoItem", json!({"id": "b", "text": "again"}))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(s.delete("/tables/TodoItem/c").await.status, 200);
    // An unknown table is counted without its name as a label.
    assert_eq!(s.get("/tables/Nope%20x").await.status, 404);

    let m = scrape(&s.base).await;
    let req = |op: &str, status: &str| {
        m.value(
            "tablesync_http_requests_total",
            &[("operation", op), ("status", status), t[0]],
        )
    };
    assert_eq!(req("insert", "201"), 3.0);
    assert_eq!(req("insert", "409"), 1.0);
    assert_eq!(req("update", "200"), 1.0);
    assert_eq!(req("update", "412"), 1.0);
    assert_eq!(req("list", "200"), 2.0);
    assert_eq!(req("delete", "200"), 1.0);
    assert_eq!(
        m.value(
            "tablesync_http_requests_total",
            &[("operation", "list"), ("status", "404"), ("table", "")]
        ),
        1.0
    );
    // The first scrape itself was counted by the time of the second.
    assert_eq!(
        m.value(
            "tablesync_http_requests_total",
            &[("operation", "metrics"), ("status", "200"), ("table", "")]
        ),
        1.0
    );
    let pushed = |op: &str| {
        m.value(
            "tablesync_pushed_operations_total",
            &[("operation", op), t[0]],
        )
    };
    assert_eq!(
        (pushed("insert"), pushed("update"), pushed("delete")),
        (3.0, 1.0, 1.0)
    );
    let conflicts =
        |status: &str| m.value("tablesync_conflicts_total", &[("status", status), t[0]]);
    assert_eq!((conflicts("409"), conflicts("412")), (1.0, 1.0));
    let rows = |kind: &str| m.value("tablesync_rows_served_total", &[("kind", kind), t[0]]);
    assert_eq!((rows("list"), rows("pull")), (3.0, 2.0));

    // Latency histograms: cumulative buckets ending in +Inf = count.
    let (buckets, count) = m.buckets(
        "tablesync_http_request_duration_seconds",
        &[("operation", "insert"), t[0]],
    );
    assert_eq!(count, 4.0);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 4.0)));
    assert_eq!(
        m.types["tablesync_http_request_duration_seconds"],
        "histogram"
    );

    // The pool: every store operation waited (if only for nanoseconds) and was timed; the nine
    // requests above that reached the store each ran at least one.
    let (wait_buckets, waits) = m.buckets("tablesync_db_pool_wait_seconds", &[]);
    assert!(waits >= 9.0, "{waits}");
    assert_eq!(wait_buckets.last().map(|b| b.1), Some(waits));
    let max = m.value("tablesync_db_pool_connections_max", &[]);
    let expected_max = match kind {
        StoreKind::Sqlite => 5.0, // 4 readers and the writer
        // read_pool_connections_max + pool_connections_max (the write pool)
        StoreKind::Postgres => 20.0,
    };
    assert_eq!(max, expected_max);
    let in_use = m.get("tablesync_db_pool_connections_in_use", &[]).unwrap();
    assert!((0.0..=max).contains(&in_use));
    // Hooks exported before anything feeds them.
    assert_eq!(m.types["tablesync_batch_operations"], "histogram");
    assert_eq!(m.types["tablesync_group_commit_operations"], "histogram");

    // And they keep moving.
    s.insert_todo("d", "d", true).await;
    let after = scrape(&s.base).await;
    assert_eq!(
        after.value(
            "tablesync_http_requests_total",
            &[("operation", "insert"), ("status", "201"), t[0]]
        ),
        4.0
    );
}

/// Every server has its own registry: requests to one never show in another's metrics.
async fn servers_in_one_process_keep_their_own_counts(kind: StoreKind) {
    let one = TestServer::start(kind).await;
    let two = TestServer::start(kind).await;
    one.insert_todo("a", "a", false).await;
    one.insert_todo("b", "b", false).await;
    two.insert_todo("z", "z", false).await;
    let labels = [
        ("operation", "insert"),
        ("status", "201"),
        ("table", "TodoItem"),
    ];
    assert_eq!(
        scrape(&one.base)
            .await
            .value("tablesync_http_requests_total", &labels),
        2.0
    );
    assert_eq!(
        scrape(&two.base)
            .await
            .value("tablesync_http_requests_total", &labels),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let mut config = Config::default_todo();
    config.metrics.enabled = false;
    let s = TestServer::with_config(StoreKind::Sqlite, config).await;
    let r = send(s.client.get(format!("{}/metrics", s.base))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["code"], "route_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_their_own_address() {
    let db = crate::fresh_database(StoreKind::Sqlite).await;
    let mut config = Config::default_todo().with_database(db.url());
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::open(config).await.unwrap();
    let metrics_addr = server.metrics_addr().expect("bound at open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let r = send(
        client
            .request(Method::POST, format!("{base}/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({"id": "a"})),
    )
    .await;
    assert_eq!(r.status, 201);
    // Not on the main listener…
    assert_eq!(
        send(client.get(format!("{base}/metrics"))).await.status,
        404
    );
    // …but on its own, counting the main listener's requests.
    let m = scrape(&format!("http://{metrics_addr}")).await;
    assert_eq!(
        m.value(
            "tablesync_http_requests_total",
            &[
                ("operation", "insert"),
                ("status", "201"),
                ("table", "TodoItem")
            ]
        ),
        1.0
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A `POST /$batch` counts its size once, and each operation it applied or refused for a
/// conflict; sending it again with the same per-operation `idempotency-key`s replays the
/// answers, applies nothing and counts no write.
async fn batches_count_their_size_and_operations(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    s.insert_todo("b", "b", false).await;
    let body = json!({"requests": [
        {"id": "1", "method": "POST", "url": "tables/TodoItem", "headers": {"idempotency-key": "k1"}, "body": {"id": "x", "text": "x"}},
        {"id": "2", "method": "POST", "url": "tables/todoitem", "headers": {"idempotency-key": "k2"}, "body": {"id": "y", "text": "y"}},
        {"id": "3", "method": "PATCH", "url": "tables/TodoItem/b", "headers": {"If-Match": "\"stale\"", "idempotency-key": "k3"}, "body": {"text": "no"}},
        {"id": "4", "method": "POST", "url": "tables/TodoItem", "headers": {"idempotency-key": "k4"}, "body": {"id": "b", "text": "dup"}}
    ]});
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = send(s.req(Method::POST, "/$batch").json(&body)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let answers: Vec<u64> = r.body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_u64().unwrap())
            .collect();
        statuses.push(answers);
    }
    // The second is a replay: the same answers, nothing applied again.
    assert_eq!(statuses, [[201, 201, 412, 409], [201, 201, 412, 409]]);
    let m = scrape(&s.base).await;
    let t = ("table", "TodoItem");
    // Two batch requests of four operations each.
    assert_eq!(m.value("tablesync_batch_operations_count", &[]), 2.0);
    assert_eq!(m.value("tablesync_batch_operations_sum", &[]), 8.0);
    assert_eq!(
        m.value(
            "tablesync_http_requests_total",
            &[("operation", "batch"), ("status", "200"), ("table", "")]
        ),
        2.0
    );
    // The first applied two inserts and met a 412 and a 409; the replay counted nothing more.
    assert_eq!(
        m.value(
            "tablesync_pushed_operations_total",
            &[("operation", "insert"), t]
        ),
        3.0 // the single insert of b and the batch's x and y
    );
    assert_eq!(
        m.value("tablesync_conflicts_total", &[("status", "412"), t]),
        1.0
    );
    assert_eq!(
        m.value("tablesync_conflicts_total", &[("status", "409"), t]),
        1.0
    );
}

crate::store_tests!(
    batches_count_their_size_and_operations,
    requests_rows_writes_and_conflicts_are_counted,
    servers_in_one_process_keep_their_own_counts
);
