//! Auth through the `tablesync` binary, as a user runs it, on both stores: `tablesync token`,
//! `--token` / `TABLESYNC_TOKEN` on the client commands, what the server logs (why a token was
//! refused, never the token, not even one sent in the query string), the start-up line without
//! `[auth]`, and a short secret keeping the server from starting.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{fresh_database, repo_root, spawn, StoreKind};
use tablesync_server::testing::serve_command;

const SECRET: &str = "cli-test-secret-0123456789abcdef";

/// `examples/per-user.toml`, the README demo's config.
fn per_user_config() -> std::path::PathBuf {
    repo_root().join("examples/per-user.toml")
}

/// `tablesync <args>` with the secret in the environment; (exit code, stdout, stderr).
fn tablesync(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(args)
        .env("TABLESYNC_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env_remove("TABLESYNC_TOKEN")
        .envs(envs.iter().copied())
        .output()
        .expect("run tablesync");
    (
        out.status.code().expect("exited by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mint(user: &str) -> String {
    let config = per_user_config();
    let (code, out, err) = tablesync(
        &[
            "token",
            "--config",
            config.to_str().unwrap(),
            "--user",
            user,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let token = out.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

fn per_user_server(kind: StoreKind) -> tablesync_server::testing::ServerProcess {
    let db = fresh_database(kind);
    let mut command = serve_command(env!("CARGO_BIN_EXE_tablesync"), Path::new(db.url()));
    command
        .arg("--config")
        .arg(per_user_config())
        .env("TABLESYNC_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "info");
    spawn(command, "tablesync serve (per-user)").keep_alive(db)
}

fn client_commands_take_a_token(kind: StoreKind) {
    let server = per_user_server(kind);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let alice = mint("alice");
    // The token as a flag, then from the environment.
    let store = dir.path().join("alice.db");
    let store = store.to_str().unwrap();
    let (code, out, err) = tablesync(
        &[
            "pull",
            "--store",
            store,
            "--url",
            url,
            "--token",
            &alice,
            "--query-id",
            "mine",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tablesync(
        &["pull", "--store", store, "--url", url, "--query-id", "mine"],
        &[("TABLESYNC_TOKEN", &alice)],
    );
    assert_eq!(code, 0, "{out}{err}");
    // No token: the server answers 401 and the command says so.
    let (code, out, err) = tablesync(&["pull", "--store", store, "--url", url], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("401") && err.contains("log in again"), "{err}");
    // `--help` never shows the token's value from the environment.
    let (_, help, _) = tablesync(&["pull", "--help"], &[("TABLESYNC_TOKEN", &alice)]);
    assert!(
        help.contains("TABLESYNC_TOKEN") && !help.contains(&alice),
        "{help}"
    );
}

fn refused_tokens_are_logged_with_their_reason_and_never_themselves(kind: StoreKind) {
    let server = per_user_server(kind);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut rb = client
            .get(format!("{}{path}", server.url()))
            .header("ZUMO-API-VERSION", "2.0.0");
        if let Some(t) = token {
            rb = rb.header("X-ZUMO-AUTH", t);
        }
        runtime.block_on(async { rb.send().await.unwrap().status().as_u16() })
    };
    let good = mint("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], parts[1], "AAAA".repeat(10));
    assert_eq!(get("/tables/TodoItem", Some(&good)), 200);
    assert_eq!(get("/tables/TodoItem", Some(&forged)), 401);
    assert_eq!(
        get(&format!("/tables/TodoItem?access_token={good}"), None),
        401
    );
    // The log lines are written as the answers go out; wait for the last one to show.
    let mut output = server.output();
    for _ in 0..100 {
        if output.contains("access_token=<redacted>") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        output = server.output();
    }
    assert!(
        output.contains("401: token refused: the signature does not verify"),
        "{output}"
    );
    assert!(output.contains("access_token=<redacted>"), "{output}");
    for secret in [good.as_str(), forged.as_str(), parts[2]] {
        assert!(!output.contains(secret), "the log shows a token: {output}");
    }
    assert!(!output.contains("served anonymously"), "{output}");
}

#[test]
fn without_auth_the_server_says_it_serves_every_table_anonymously() {
    let server = crate::util::tablesync_serve();
    let output = server.output();
    assert!(
        output.contains("no [auth] section: every table is served anonymously"),
        "{output}"
    );
}

#[test]
fn a_short_secret_keeps_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tablesync"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(per_user_config())
        .arg("--database")
        .arg(dir.path().join("db"))
        .env("TABLESYNC_AUTH_SECRET", "0000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("TABLESYNC_AUTH_SECRET is 4 bytes long; at least 32 bytes are required"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

#[test]
fn token_needs_an_auth_section_and_a_user() {
    let example = repo_root().join("tablesync.example.toml");
    let (code, _, err) = tablesync(
        &[
            "token",
            "--config",
            example.to_str().unwrap(),
            "--user",
            "alice",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("has no [auth] section"), "{err}");
    let config = per_user_config();
    let (code, _, err) = tablesync(
        &["token", "--config", config.to_str().unwrap(), "--user", ""],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("user id must be 1 to 255 bytes"), "{err}");
    let (code, _, err) = tablesync(
        &["token", "--config", config.to_str().unwrap(), "--user", "a"],
        &[("TABLESYNC_AUTH_SECRET", "short")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("at least 32 bytes"), "{err}");
}

mod on_store {
    use super::*;

    #[test]
    fn client_commands_take_a_token_sqlite() {
        client_commands_take_a_token(StoreKind::Sqlite);
    }

    #[test]
    fn client_commands_take_a_token_postgres() {
        client_commands_take_a_token(StoreKind::Postgres);
    }

    #[test]
    fn refused_tokens_are_logged_with_their_reason_and_never_themselves_sqlite() {
        refused_tokens_are_logged_with_their_reason_and_never_themselves(StoreKind::Sqlite);
    }

    #[test]
    fn refused_tokens_are_logged_with_their_reason_and_never_themselves_postgres() {
        refused_tokens_are_logged_with_their_reason_and_never_themselves(StoreKind::Postgres);
    }
}
