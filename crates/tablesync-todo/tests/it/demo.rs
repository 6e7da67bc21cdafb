//! The README's two-user demo, run as written: the shell block between the `two-user-demo`
//! markers of the top README.md, in a fresh directory holding a copy of
//! `examples/per-user.toml`, with two documented substitutions: the first line (the release
//! build and its `PATH`) becomes a `PATH` that holds this test run's `tablesync` and
//! `tablesync-todo`, and the server's address comes from `TABLESYNC_LISTEN`/`TABLESYNC_URL`
//! (a free port instead of 8080, which another program may hold). Alice and Bob must each list
//! only their own item.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::tablesync_bin;

const START: &str = "<!-- two-user-demo";
const END: &str = "<!-- end two-user-demo -->";
/// A bound against a hung demo, not a timing assertion.
const DEMO_TIMEOUT_S: u64 = 300;

/// The shell lines of the README's demo block.
fn demo_block() -> Vec<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let start = text
        .find(START)
        .expect("the README has the two-user demo marker");
    let end = text[start..].find(END).expect("the demo block ends") + start;
    let block = &text[start..end];
    let code = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block between the markers");
    code.lines().map(str::to_owned).collect()
}

#[test]
fn the_readme_two_user_demo_works_as_written() {
    let mut lines = demo_block();
    assert!(
        lines[0].starts_with("cargo build --release -p tablesync-cli -p tablesync-todo"),
        "the first line builds the binaries: {}",
        lines[0]
    );
    let server = tablesync_bin();
    let bin_dir = server.parent().unwrap();
    let todo = Path::new(env!("CARGO_BIN_EXE_tablesync-todo"));
    assert_eq!(
        todo.parent(),
        Some(bin_dir),
        "both binaries live in one directory"
    );
    lines[0] = format!("export PATH=\"{}:$PATH\"", bin_dir.display());
    let script = format!("set -euo pipefail\n{}\n", lines.join("\n"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("examples")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/per-user.toml"),
        dir.path().join("examples/per-user.toml"),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("TABLESYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("TABLESYNC_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("TABLESYNC_TOKEN")
        .env_remove("TABLESYNC_TODO_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the background server is stopped with it whatever happens.
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let deadline = Instant::now() + Duration::from_secs(DEMO_TIMEOUT_S);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stop whatever the script left running (the server after a failed step), by group id.
    let _ = Command::new("kill")
        .arg("--")
        .arg(format!("-{group}"))
        .status();
    let _ = child.wait();
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let context = format!("stdout:\n{out}\nstderr:\n{err}\nserver log:\n{log}");
    let status = status.unwrap_or_else(|| panic!("the demo hung\n{context}"));
    assert!(status.success(), "the demo failed: {status}\n{context}");

    let lists: Vec<&str> = out.lines().filter(|l| l.starts_with("1. ")).collect();
    assert_eq!(lists.len(), 2, "two lists of one item each\n{context}");
    assert!(
        lists[0].starts_with("1. [ ] Alice buys milk (id: "),
        "{context}"
    );
    assert!(
        lists[1].starts_with("1. [ ] Bob fixes the bike (id: "),
        "{context}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("2. ")),
        "nobody sees a second item\n{context}"
    );
    // Every sync reached the server (a 401 or an offline sync would say otherwise).
    assert_eq!(out.matches("sync: ok").count(), 4, "{context}");
    assert!(log.contains("listening on"), "{context}");
}
