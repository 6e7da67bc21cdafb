//! Exactly once across processes (issue 9 point 1, `docs/extensions.md` section 3): two
//! `tablesync serve` processes on one PostgreSQL database get the same keyed batch at the same
//! time, round after round. Each round exactly one of them applies it and the other replays the
//! recorded outcome; the table's write counter proves no operation ran twice.

use std::path::Path;

use serde_json::{json, Value};

use crate::util::{fresh_database, tablesync_serve_env, StoreKind};

/// The write counter a version renders (8 big-endian bytes in standard base64; decoded here to
/// keep a base64 crate out of this crate's dev-dependencies).
fn counter(version: &str) -> u64 {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u128 = 0;
    let mut count = 0;
    for c in version.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("a base64 version");
        bits = (bits << 6) | v as u128;
        count += 6;
    }
    assert_eq!(
        count, 66,
        "12 base64 characters: 8 bytes and 2 padding bits"
    );
    (bits >> 2) as u64
}

#[test]
fn postgres_one_key_sent_to_two_processes_at_once_applies_once() {
    let db = fresh_database(StoreKind::Postgres);
    let start = || tablesync_serve_env(Path::new(db.url()), &[], &[("RUST_LOG", "warn")]);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(start);
        let b = scope.spawn(start);
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    let urls = [
        a.url().trim_end_matches('/').to_owned(),
        b.url().trim_end_matches('/').to_owned(),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let post = |base: &str, path: &str, body: &Value| {
            http.post(format!("{base}{path}"))
                .header("ZUMO-API-VERSION", "2.0.0")
                .json(body)
                .send()
        };
        let r = post(&urls[0], "/tables/TodoItem", &json!({"id": "counter", "text": "0"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for round in 0..20u64 {
            // An update without If-Match would apply twice if run twice; so would the insert.
            let doc = json!({"requests": [
                {"id": "1", "method": "PATCH", "url": "tables/TodoItem/counter",
                 "headers": {"idempotency-key": format!("u-{round}")}, "body": {"text": round.to_string()}},
                {"id": "2", "method": "POST", "url": "tables/TodoItem",
                 "headers": {"idempotency-key": format!("i-{round}")}, "body": {"id": format!("row{round}")}}
            ]});
            let (ra, rb) = tokio::join!(post(&urls[0], "/$batch", &doc), post(&urls[1], "/$batch", &doc));
            let (ra, rb): (Value, Value) = (
                ra.unwrap().json().await.unwrap(),
                rb.unwrap().json().await.unwrap(),
            );
            let (oa, ob) = (&ra["responses"], &rb["responses"]);
            for i in 0..2 {
                assert_eq!(oa[i]["status"], ob[i]["status"], "round {round}: {ra} vs {rb}");
                assert_eq!(oa[i]["body"], ob[i]["body"], "round {round}");
            }
            assert_eq!(oa[1]["status"], 201, "round {round}: {ra}");
            let replayed = [&oa[0], &ob[0]]
                .iter()
                .filter(|o| o["headers"]["idempotent-replayed"] == "true")
                .count();
            assert_eq!(replayed, 1, "round {round}: one process applied, one replayed");
            let rows: Value = http
                .get(format!("{}/tables/TodoItem?$top=1000", urls[1]))
                .header("ZUMO-API-VERSION", "2.0.0")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rows = rows.as_array().unwrap();
            let largest = rows
                .iter()
                .map(|r| counter(r["version"].as_str().unwrap()))
                .max()
                .unwrap();
            assert_eq!(largest, 1 + 2 * (round + 1), "round {round}: each write once");
            assert_eq!(rows.len() as u64, 2 + round);
        }
    });
    drop((a, b));
}
