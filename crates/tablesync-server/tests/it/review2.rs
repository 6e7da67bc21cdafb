//! Second review round: long `or` chains, columns added by another process, and filters that
//! must give the same rows on both stores.

use serde_json::json;
use tablesync_server::{Config, Server};

use crate::{ids, send, StoreKind, TestServer};

/// The `$filter` GET of `path` on `base`.
async fn filter_on(base: &str, path: &str, filter: &str) -> crate::Resp {
    send(
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .query(&[("$filter", filter)]),
    )
    .await
}

/// The .NET client's `list.Contains(x.Id)`: a 500-term `or` chain, far past the nesting limit
/// of 64 that used to refuse it.
async fn long_or_chain_returns_the_right_rows(kind: StoreKind) {
    let mut config = Config::default_todo();
    config.limits.filter_bytes_max = 64 * 1024;
    let s = TestServer::with_config(kind, config).await;
    for id in ["k7", "other", "k499", "k500"] {
        s.insert_todo(id, id, false).await;
    }
    let terms: Vec<String> = (0..500).map(|i| format!("(id eq 'k{i}')")).collect();
    let r = filter_on(&s.base, "/tables/TodoItem", &terms.join(" or ")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(ids(&r.body), ["k7", "k499"]);
}

/// Another server process on `database` (in this runtime, on its own listener), with the
/// tables of `toml`. Dropping the sender stops it.
async fn serve_on(database: &str, toml: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = Config::from_toml_str(toml).unwrap().with_database(database);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::open(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

const NOTES: &str =
    "[[tables]]\nname = \"Notes\"\ndynamic_schema = true\ncolumns = { title = \"string\" }";

/// Process A adds `color` by inserting it; processes B, C and D, started before that, see it:
/// B through a `$filter` naming it, D through a `$select`, C (refreshing every request)
/// through a plain GET.
async fn columns_added_by_another_process_are_seen(kind: StoreKind) {
    let never = format!("{NOTES}\n[store]\nschema_refresh_ms = 3600000");
    let always = format!("{NOTES}\n[store]\nschema_refresh_ms = 0");
    let a = TestServer::with_toml(kind, &never).await;
    let (b, _stop_b) = serve_on(a.database_url(), &never).await;
    let (c, _stop_c) = serve_on(a.database_url(), &always).await;
    let (d, _stop_d) = serve_on(a.database_url(), &never).await;
    let r = a
        .post(
            "/tables/Notes",
            json!({"id": "r1", "title": "t", "color": "red"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r2 = a
        .post("/tables/Notes", json!({"id": "r2", "title": "u"}))
        .await;
    assert_eq!(r2.status, 201, "{:?}", r2.body);

    let get = |base: &str, path: &str| {
        send(
            reqwest::Client::new()
                .get(format!("{base}{path}"))
                .header("ZUMO-API-VERSION", "2.0.0"),
        )
    };
    // C re-reads the columns on every request.
    let r = get(&c, "/tables/Notes/r1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["color"], json!("red"));
    // B: the filter names a column B did not know; B re-reads and answers.
    let r = filter_on(&b, "/tables/Notes", "color eq 'red'").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(ids(&r.body), ["r1"]);
    assert_eq!(r.body[0]["color"], json!("red"));
    let r = get(&b, "/tables/Notes/r1").await;
    assert_eq!(r.body["color"], json!("red"), "{:?}", r.body);
    // D: `$select` names it.
    let r = get(&d, "/tables/Notes?$select=id,color").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!([{"id": "r1", "color": "red"}, {"id": "r2", "color": null}])
    );
    // A name that exists nowhere is still 400 unknown_column after the re-read.
    let r = filter_on(&b, "/tables/Notes", "shade eq 'red'").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["code"], json!("unknown_column"));
}

const EDGE: &str = "[[tables]]\nname = \"Edge\"\ncolumns = { title = \"string\", n = \"number\" }";

/// Filters at the edges of numbers and positions give the same, correct rows on both stores.
async fn edge_value_filters_agree(kind: StoreKind) {
    let s = TestServer::with_toml(kind, EDGE).await;
    for (id, title, n) in [("hw", "Hello World", 1e20), ("x", "x", 1.5)] {
        let r = s
            .post("/tables/Edge", json!({"id": id, "title": title, "n": n}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let both = ["hw", "x"];
    let cases: &[(&str, &[&str])] = &[
        // Fractional positions truncate (PostgreSQL's cast used to round 1.5 to 2).
        ("substring(title, 1.5) eq 'ello World'", &["hw"]),
        ("substring(title, 1.9, 2.9) eq 'el'", &["hw"]),
        ("substring(title, -0.5, 1) eq 'H'", &["hw"]),
        // Huge positions and lengths are clamped (PostgreSQL's integer cast used to fail).
        ("substring(title, 3000000000) eq ''", &both),
        ("substring(title, 0, 3000000000) eq title", &both),
        ("substring(title, -3000000000) eq title", &both),
        // floor/ceiling stay exact beyond 2^52 (SQLite's CAST AS INTEGER saturates at 2^63).
        ("floor(1e20) eq 1e20", &both),
        ("ceiling(-1e20) eq -1e20", &both),
        ("floor(n) eq n", &["hw"]),
        ("ceiling(n) eq 2 and floor(n) eq 1", &["x"]),
        ("floor(-1.5) eq -2 and ceiling(-1.5) eq -1", &both),
        // Integer literals are doubles: no overflow on either store.
        ("9223372036854775807 add 1 gt 0", &both),
        ("-9223372036854775807 sub 10 lt 0", &both),
        ("9223372036854775807 mul 9223372036854775807 gt 0", &both),
        ("7 div 2 eq 3.5", &both),
        ("length(title) div 2 eq 5.5", &["hw"]),
        ("length(title) div length('ab') eq 0.5", &["x"]),
        ("7 mod 2 eq 1", &both),
    ];
    for (filter, want) in cases {
        let r = filter_on(&s.base, "/tables/Edge", filter).await;
        assert_eq!(r.status, 200, "{filter}: {:?}", r.body);
        assert_eq!(ids(&r.body), *want, "{filter}");
    }
}

crate::store_tests!(
    long_or_chain_returns_the_right_rows,
    columns_added_by_another_process_are_seen,
    edge_value_filters_agree,
);
