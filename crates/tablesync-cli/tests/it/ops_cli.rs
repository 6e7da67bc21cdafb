//! `tablesync serve` as an operator meets it: each start-up error printed once with its cause
//! chain and the config file's line, a refused PostgreSQL connection reported at once with the
//! OS's reason, JSON logs carrying the request id and client address, and `verify-full`
//! refusing a PostgreSQL certificate that no trusted root signed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tablesync_server::testing::pg_admin_url;

use crate::util::tablesync_serve_env;

/// `tablesync serve <args>` run to its end: (exit code, stderr).
fn serve(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .arg("serve")
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET `url` with `x-request-id` and the API version; the status.
fn get_with_request_id(url: &str, request_id: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(url)
            .header("ZUMO-API-VERSION", "2.0.0")
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// The `error:` lines of a failed start.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_config_error_is_printed_once_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tablesync.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n\n[limits]\npage_size_max = \"many\"\n",
    )
    .unwrap();
    let (code, stderr) = serve(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: {}:4:17: invalid config: invalid type: string \"many\", expected u64",
            file.display()
        )
    );

    // A value that parses but is refused: the file and the line of the refused value.
    std::fs::write(&file, "[[tables]]\nname = \"bad name\"\n").unwrap();
    let (code, stderr) = serve(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "error: {}:2:1: invalid config: table name 'bad name'",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_refused_postgres_connection_fails_at_once_with_the_os_message() {
    // Port 1 on the loopback: nothing listens there, so the OS refuses the connection.
    let (code, stderr) = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--database",
            "postgres://postgres:secret@127.0.0.1:1/app",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(
        lines,
        ["error: database: cannot connect to PostgreSQL at postgres://postgres:***@127.0.0.1:1/app: error communicating with database: Connection refused (os error 111)"],
        "{stderr}"
    );
    for noise in ["pool timed out", "Internal", "Busy", "secret"] {
        assert!(!stderr.contains(noise), "{noise}: {stderr}");
    }
}

#[test]
fn json_logs_carry_the_request_id_and_the_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = tablesync_serve_env(&dir.path().join("db"), &["--log-format", "json"], &[]);
    let status = get_with_request_id(
        &format!(
            "{}/tables/TodoItem?$filter=text%20eq%20'private'",
            server.url()
        ),
        "req-123",
    );
    assert_eq!(status, 200);
    let mut line = None;
    for _ in 0..100 {
        line = server
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("GET /tables/TodoItem"))
            });
        if line.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = line.unwrap_or_else(|| panic!("no JSON request line: {}", server.output()));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "tablesync::http");
    let span = &line["spans"][0];
    assert_eq!(span["name"], "request");
    assert_eq!(span["id"], "req-123");
    assert_eq!(span["client"], "127.0.0.1");
    // The filter's literal is hidden at info.
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(message.contains("$filter=text eq ?"), "{message}");
    assert!(!server.output().contains("private"), "{}", server.output());
    let _ = dir;
}

#[test]
fn verify_full_refuses_a_certificate_no_trusted_root_signed() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let other_ca = fixtures.join("other-ca.pem");
    let admin = pg_admin_url();
    // postgres://user@127.0.0.1:port/db → the same with host `localhost`, the name the local
    // server's certificate carries.
    let url = admin.replacen("@127.0.0.1:", "@localhost:", 1);
    // Only the given root: the platform's store is pointed at it too (on Debian the server's
    // self-signed certificate is itself in /etc/ssl/certs, which would make it trusted).
    let empty = tempfile::tempdir().unwrap();
    let envs = [
        ("SSL_CERT_FILE", other_ca.to_str().unwrap()),
        ("SSL_CERT_DIR", empty.path().to_str().unwrap()),
    ];
    let database = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let (code, stderr) = serve(&["--listen", "127.0.0.1:0", "--database", &database], &envs);
    assert_eq!(code, Some(1), "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: database: cannot connect to PostgreSQL at")
            && lines[0].contains("UnknownIssuer"),
        "{stderr}"
    );
}
