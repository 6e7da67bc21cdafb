//! PostgreSQL over TLS (sqlx with rustls): the local PostgreSQL has `ssl = on`. `sslmode=require`
//! encrypts without checking the certificate; `verify-full` checks it against `sslrootcert`
//! (added to the platform's roots) and the host name. Whether a server
//! connection really is encrypted is read from PostgreSQL's own `pg_stat_ssl`.

use serde_json::json;
use sqlx::{Connection, Row};
use tablesync_server::testing::pg_admin_url;
use tablesync_server::{Config, Server};

use crate::{fresh_database, send, StoreKind};

/// The test database's URL with `query` appended and, when given, another host.
fn url_with(db_url: &str, host: Option<&str>, query: &str) -> String {
    let url = match host {
        Some(host) => {
            let at = db_url.find('@').unwrap() + 1;
            let colon = at + db_url[at..].find(':').unwrap();
            format!("{}{host}{}", &db_url[..at], &db_url[colon..])
        }
        None => db_url.to_owned(),
    };
    format!("{url}?{query}")
}

/// Serve one insert and one list on `database`; then whether every connection tablesync holds
/// to that database is encrypted, per `pg_stat_ssl` (and how many there are).
async fn serve_and_check_ssl(database: String, db_name: &str) -> (bool, i64) {
    let server = Server::open(Config::default_todo().with_database(database))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = send(
        client
            .post(format!("{base}/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0")
            .json(&json!({"id": "a", "text": "over TLS"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = send(
        client
            .get(format!("{base}/tables/TodoItem"))
            .header("ZUMO-API-VERSION", "2.0.0"),
    )
    .await;
    assert_eq!(r.body[0]["text"], "over TLS");

    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let row = sqlx::query(
        "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND a.application_name = 'tablesync'",
    )
    .bind(db_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    (row.get(0), row.get(1))
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_serves_over_an_encrypted_connection() {
    let db = fresh_database(StoreKind::Postgres).await;
    let (ssl, connections) = serve_and_check_ssl(
        url_with(db.url(), None, "sslmode=require"),
        &db_name(db.url()),
    )
    .await;
    assert!(connections >= 1);
    assert!(
        ssl,
        "a connection made with sslmode=require is not encrypted"
    );

    // The check can fail: without TLS the same query says so.
    let db = fresh_database(StoreKind::Postgres).await;
    let (ssl, connections) = serve_and_check_ssl(
        url_with(db.url(), None, "sslmode=disable"),
        &db_name(db.url()),
    )
    .await;
    assert!(connections >= 1);
    assert!(!ssl);
}

/// The certificate the local PostgreSQL presents (`ssl_cert_file`), to trust as a root CA.
async fn server_certificate() -> String {
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let row =
        sqlx::query("SELECT current_setting('ssl_cert_file'), current_setting('data_directory')")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let (file, data_dir): (String, String) = (row.get(0), row.get(1));
    let path = std::path::Path::new(&data_dir).join(&file);
    assert!(
        std::fs::metadata(&path).is_ok(),
        "the PostgreSQL server's certificate {} cannot be read by the test",
        path.display()
    );
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_certificate_against_sslrootcert() {
    let cert = server_certificate().await;
    // The certificate is issued to localhost (the Debian snakeoil certificate and the test
    // cluster's alike), so the host name is checked against that name.
    let db = fresh_database(StoreKind::Postgres).await;
    let (ssl, _) = serve_and_check_ssl(
        url_with(
            db.url(),
            Some("localhost"),
            &format!("sslmode=verify-full&sslrootcert={cert}"),
        ),
        &db_name(db.url()),
    )
    .await;
    assert!(ssl);

    // The same root, but the certificate (issued to localhost) does not name 127.0.0.1:
    // refused at start, with the reason. (A root that signed nothing is refused too: the CLI
    // test `verify_full_refuses_a_certificate_no_trusted_root_signed`, which can keep the
    // system's roots out of the process.)
    let err = Server::open(Config::default_todo().with_database(url_with(
        db.url(),
        Some("127.0.0.1"),
        &format!("sslmode=verify-full&sslrootcert={cert}"),
    )))
    .await
    .err()
    .expect("a certificate for another name must be refused");
    let message = anyhow_chain(&err);
    assert!(
        message.contains("cannot connect to PostgreSQL"),
        "{message}"
    );
    assert!(
        message.to_ascii_lowercase().contains("certificate"),
        "the reason names the certificate: {message}"
    );
}

/// The error and its sources on one line, as `tablesync serve` prints them.
fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
