//! `GET /health` and `GET /ready`: no API version, no token, and `/ready` answers 503 with our
//! error body when the database is really unreachable: the SQLite file deleted under the server,
//! or the PostgreSQL server's port closed (a TCP relay between server and PostgreSQL is shut
//! down, so the server's pooled connections break and new ones are refused).

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use tablesync_server::{Config, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::tokens;
use crate::{fresh_database, send, StoreKind, TestServer};

/// Both probes answer without `ZUMO-API-VERSION` and without a token, even where every table
/// needs one; neither is a table route, so neither carries `Cache-Control: no-cache` from the
/// table gate.
async fn probes_need_no_version_and_no_token(kind: StoreKind) {
    let s = TestServer::with_clock(
        kind,
        tokens::config_with(tokens::auth_config()),
        tokens::clock(),
    )
    .await;
    // The tables do need a token: the probes are not just unguarded everywhere.
    let r = send(
        s.client
            .get(format!("{}/tables/Todo", s.base))
            .header("ZUMO-API-VERSION", "2.0.0"),
    )
    .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = send(s.client.get(format!("{}/health", s.base))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": "ok"})));
    let r = send(s.client.get(format!("{}/ready", s.base))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": "ready"})));
    // Other methods are refused with our body.
    let r = send(s.client.request(Method::POST, format!("{}/ready", s.base))).await;
    assert_eq!(r.status, 405, "{:?}", r.body);
    assert_eq!(r.body["code"], "method_not_allowed");
}

/// A SQLite file deleted under the running server: its open connections would go on answering
/// from the unlinked file, but `/ready` reopens the path and says the database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_when_the_sqlite_file_is_gone() {
    let s = TestServer::start(StoreKind::Sqlite).await;
    assert_eq!(
        send(s.client.get(format!("{}/ready", s.base))).await.status,
        200
    );
    let path = s.database_url().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let r = send(s.client.get(format!("{}/ready", s.base))).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "service_unavailable");
    let message = r.body["error"].as_str().unwrap();
    assert!(
        message.starts_with("database unavailable: cannot open database")
            && message.contains("unable to open database file"),
        "{message}"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Liveness does no database work: still fine.
    let r = send(s.client.get(format!("{}/health", s.base))).await;
    assert_eq!(r.status, 200);
}

/// A TCP relay to PostgreSQL that can be shut down: the listener closes (new connections are
/// refused) and every relayed connection is cut.
struct Relay {
    addr: std::net::SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let held = Arc::clone(&connections);
        tasks.spawn(async move {
            // Dropping this task drops the listener and, through `held`, every connection.
            let _held = held;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                connections.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, tasks }
    }

    /// Close the port and cut every relayed connection.
    async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the URL with `authority` instead.
fn split_authority(url: &str, authority: &str) -> (String, String) {
    let at = url.find('@').expect("user@ in the test URL") + 1;
    let slash = at + url[at..].find('/').expect("a database in the test URL");
    (
        url[at..slash].to_owned(),
        format!("{}{authority}{}", &url[..at], &url[slash..]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_when_postgres_is_unreachable() {
    let db = fresh_database(StoreKind::Postgres).await;
    let (upstream, _) = split_authority(db.url(), "");
    let relay = Relay::start(upstream).await;
    let (_, relayed) = split_authority(db.url(), &relay.addr.to_string());
    let mut config = Config::default_todo().with_database(relayed);
    // Let the pool's own retries give up sooner than the ready timeout, so both paths of the
    // diagnosis (pool error, then a direct connection) run.
    config.store.busy_timeout_ms = 500;
    config.limits.ready_timeout_ms = 1_000;
    let server = Server::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_gzip().build().unwrap();

    let r = send(client.get(format!("{base}/ready"))).await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": "ready"})));
    let r = send(
        client
            .get(format!("{base}/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    relay.stop().await;
    let r = send(client.get(format!("{base}/ready"))).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["code"], "service_unavailable");
    let message = r.body["error"].as_str().unwrap();
    assert!(message.contains("Connection refused"), "{message}");
    let r = send(client.get(format!("{base}/health"))).await;
    assert_eq!(r.status, 200);

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    drop(db);
}

crate::store_tests!(probes_need_no_version_and_no_token);
