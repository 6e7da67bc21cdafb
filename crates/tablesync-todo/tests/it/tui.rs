//! The terminal UI itself, driven through tmux: keys go in with `send-keys`, the screen comes
//! back with `capture-pane -p`. Every wait polls the screen until a condition holds, with a
//! generous deadline (never a timing assertion).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use std::net::{SocketAddr, TcpListener};

use tablesync_server::testing::proxy::{FaultPlan, FaultProxy};

use crate::util::{
    dead_url, server_insert, server_summary, server_update, start_server, StoreKind,
};

store_tests!(
    terminal_ui_adds_toggles_deletes_and_refreshes_against_a_live_server,
    terminal_ui_offline_is_a_status_line_and_syncs_at_once_when_back,
    terminal_ui_conflict_dialog_keeps_mine_or_the_servers_and_shows_both,
    two_terminal_uis_show_each_others_changes_without_a_key,
);

/// Upper bound for the screen to reach an expected state, in seconds.
const SCREEN_DEADLINE_SECS: u64 = 60;
/// Pause between two captures, in milliseconds.
const CAPTURE_INTERVAL_MS: u64 = 100;

/// A private tmux server (its own socket, in a temporary directory that goes away with it)
/// running the app in a pane of the given size; killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// The default pane size, columns and rows.
const PANE: (u16, u16) = (100, 30);

impl Tmux {
    /// The app on `url` with `args` added, in a `cols`×`rows` pane.
    fn start(data_dir: &Path, url: &str, args: &[&str], (cols, rows): (u16, u16)) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let app = format!(
            "'{}' --data-dir '{}' --url '{url}' {}",
            env!("CARGO_BIN_EXE_tablesync-todo"),
            data_dir.display(),
            args.join(" ")
        );
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let tmux = Tmux { socket, _dir: dir };
        let out = tmux.try_run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "todo",
            "-x",
            &cols,
            "-y",
            &rows,
            &app,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the pane after the app exits so a crash's output stays visible to `screen`.
        tmux.run(&["set-option", "-g", "remain-on-exit", "on"]);
        tmux
    }

    fn try_run(&self, args: &[&str]) -> Output {
        match Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .env_remove("TABLESYNC_URL")
            .env_remove("TABLESYNC_TODO_DATA_DIR")
            .output()
        {
            Ok(o) => o,
            Err(e) => panic!(
                "cannot run tmux ({e}); the terminal-UI test needs it: install tmux \
                 (apt-get install tmux), or run `bash scripts/test`, which installs it"
            ),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends tmux key names (`Enter`, `Space`, `q`, ...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "todo"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "todo", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "todo"])
    }

    /// Resizes the pane (and the app's terminal with it).
    fn resize(&self, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "todo",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    fn pane_dead(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "todo", "#{pane_dead}"])
            .trim()
            == "1"
    }

    /// Captures the screen until `ok` holds on a settled screen (the same on the next capture:
    /// a capture can land in the middle of the app's redraw, and the test's later checks on
    /// the same screen must see all of it); panics with the last screen at the deadline.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(SCREEN_DEADLINE_SECS);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                thread::sleep(Duration::from_millis(CAPTURE_INTERVAL_MS));
                if self.screen() == screen {
                    return screen;
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what} within {SCREEN_DEADLINE_SECS} s; last screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(CAPTURE_INTERVAL_MS));
        }
    }

    fn wait_exit(&self) {
        let deadline = Instant::now() + Duration::from_secs(SCREEN_DEADLINE_SECS);
        while !self.pane_dead() {
            assert!(
                Instant::now() < deadline,
                "the app did not exit; screen:\n{}",
                self.screen()
            );
            thread::sleep(Duration::from_millis(CAPTURE_INTERVAL_MS));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends this test's private tmux server (and the app in it) only. Not `try_run`: it
        // panics when tmux is missing, and a panic while unwinding aborts the test binary.
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// A sync has finished and none is running, with nothing left to push.
fn synced(screen: &str) -> bool {
    screen.contains("online — nothing queued") && !screen.contains("syncing")
}

/// No dialog is on screen (the only box is the list's).
fn no_dialog(screen: &str) -> bool {
    screen.matches('┌').count() == 1 && !screen.contains("Conflict")
}

/// Background syncs off: the screen only changes on a key, so conflicts are deterministic.
const NO_BACKGROUND: &[&str] = &["--sync-interval-s", "0"];

fn terminal_ui_adds_toggles_deletes_and_refreshes_against_a_live_server(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(data.path(), url, NO_BACKGROUND, PANE);
    let host = url.trim_start_matches("http://");

    let screen = tmux.wait_for("the empty list after the start-up sync", |s| {
        s.contains("No items yet. Press a to add one.") && synced(s)
    });
    assert!(
        screen.contains("online — nothing queued · last synced "),
        "{screen}"
    );
    assert!(screen.contains(host), "{screen}");
    assert!(
        screen.contains("a add · space done · d delete · r sync · j/k move · q quit"),
        "{screen}"
    );

    tmux.keys(&["a"]);
    tmux.wait_for("the input line", |s| s.contains("New item: _"));
    tmux.type_text("Walk the dog");
    tmux.wait_for("the typed text", |s| s.contains("New item: Walk the dog_"));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the added item, synced", |s| {
        s.contains("> [ ] Walk the dog") && synced(s)
    });
    assert!(screen.contains("Todo items (1)"), "{screen}");
    assert_eq!(server_summary(url), [("Walk the dog".to_string(), false)]);

    tmux.keys(&["Space"]);
    tmux.wait_for("the item completed, synced", |s| {
        s.contains("> [x] Walk the dog") && synced(s)
    });
    assert_eq!(server_summary(url), [("Walk the dog".to_string(), true)]);

    // Another client adds an item; `r` pulls it.
    server_insert(url, "Feed the cat");
    tmux.keys(&["r"]);
    let screen = tmux.wait_for("the other client's item after refresh", |s| {
        s.contains("[ ] Feed the cat") && synced(s)
    });
    assert!(screen.contains("[x] Walk the dog"), "{screen}");
    assert!(screen.contains("Todo items (2)"), "{screen}");

    // Delete: `d` on the highlighted item ("Feed the cat", first by text), Delete on the next.
    tmux.keys(&["k", "d"]);
    let screen = tmux.wait_for("one item left, synced", |s| {
        s.contains("Todo items (1)") && synced(s)
    });
    assert!(screen.contains("deleted “Feed the cat”"), "{screen}");
    assert!(
        !screen.contains("Feed the cat ") && screen.contains("[x] Walk the dog"),
        "{screen}"
    );
    assert_eq!(server_summary(url), [("Walk the dog".to_string(), true)]);
    tmux.keys(&["DC"]);
    tmux.wait_for("the empty list, synced", |s| {
        s.contains("No items yet") && synced(s)
    });
    assert_eq!(server_summary(url), []);

    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// A port nothing listens on, as an address.
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

fn terminal_ui_offline_is_a_status_line_and_syncs_at_once_when_back(kind: StoreKind) {
    let server = start_server(kind);
    // The app talks to a proxy whose server is first nowhere, then the real one.
    let proxy = FaultProxy::start(dead_addr(), 1, FaultPlan::none()).unwrap();
    let data = tempfile::tempdir().unwrap();
    // No interval syncs at all: only the offline retry can bring the queue over.
    let tmux = Tmux::start(
        data.path(),
        &proxy.url(),
        &["--sync-interval-s", "0", "--offline-retry-interval-s", "1"],
        PANE,
    );
    let host = proxy.url().trim_start_matches("http://").to_string();

    let screen = tmux.wait_for("offline on the status line", |s| {
        s.contains("offline — nothing queued")
    });
    assert!(no_dialog(&screen), "{screen}");
    assert!(
        screen.contains(&format!("never synced · {host}")),
        "{screen}"
    );

    tmux.keys(&["a"]);
    tmux.type_text("Offline item");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the item, queued, offline", |s| {
        s.contains("> [ ] Offline item") && s.contains("offline — 1 change queued")
    });
    assert!(no_dialog(&screen), "offline is never a dialog: {screen}");
    assert!(!screen.contains("You may be offline"), "{screen}");
    tmux.keys(&["Space"]);
    let screen = tmux.wait_for("the item completed, still queued", |s| {
        s.contains("> [x] Offline item") && s.contains("offline — 1 change queued")
    });
    assert!(no_dialog(&screen), "{screen}");
    assert_eq!(server_summary(server.url()), []);

    // The server is back: the next retry reaches it and pushes at once, with no key pressed.
    proxy.set_upstream(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let screen = tmux.wait_for("online again, queue pushed", synced);
    assert!(screen.contains("> [x] Offline item"), "{screen}");
    assert_eq!(
        server_summary(server.url()),
        [("Offline item".to_string(), true)]
    );

    // And offline again: the status line says so at the next change.
    proxy.set_upstream(dead_addr());
    proxy.close_connections();
    tmux.keys(&["a"]);
    tmux.type_text("Second");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("offline with one change", |s| {
        s.contains("offline — 1 change queued") && s.contains("[ ] Second")
    });
    assert!(screen.contains("last synced "), "{screen}");
    assert!(no_dialog(&screen), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// Item ids by text, from the server.
fn server_id(url: &str, text: &str) -> String {
    crate::util::server_items(url)
        .iter()
        .find(|i| i["text"] == text)
        .and_then(|i| i["id"].as_str())
        .unwrap_or_else(|| panic!("no {text:?} on the server"))
        .to_string()
}

fn terminal_ui_conflict_dialog_keeps_mine_or_the_servers_and_shows_both(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    server_insert(url, "Alpha");
    server_insert(url, "Beta");
    let data = tempfile::tempdir().unwrap();
    // The smallest screen the app promises to be readable on.
    let tmux = Tmux::start(data.path(), url, NO_BACKGROUND, (50, 12));
    tmux.wait_for("both items", |s| {
        s.contains("> [ ] Alpha") && s.contains("[ ] Beta") && synced(s)
    });

    // Another client changes Alpha; completing it here conflicts.
    server_update(
        url,
        &server_id(url, "Alpha"),
        serde_json::json!({"text": "Alpha (server)"}),
    );
    tmux.keys(&["Space"]);
    let screen = tmux.wait_for("the conflict dialog", |s| {
        s.contains("Conflict 1 of 1") && s.contains("m keep mine")
    });
    for needle in [
        "“Alpha” was changed here and on the",
        "s keep server",
        "b show both",
        "Esc later",
    ] {
        assert!(screen.contains(needle), "no {needle:?} at 50x12:\n{screen}");
    }
    tmux.keys(&["b"]);
    let screen = tmux.wait_for("both versions side by side", |s| {
        s.lines()
            .any(|l| l.contains("[x] Alpha") && l.contains("│ [ ] Alpha (server)"))
    });
    assert!(
        screen.contains("mine") && screen.contains("b hide both"),
        "{screen}"
    );

    // Typing while the dialog is open: the input line gets every key, m, s and b included.
    tmux.keys(&["a"]);
    tmux.type_text("msb typed");
    tmux.wait_for("the typed text", |s| s.contains("New item: msb typed_"));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the new item, and the dialog back", |s| {
        s.contains("Conflict 1 of 1") && !s.contains("syncing")
    });
    assert!(
        screen.contains("Todo items (3)"),
        "the item is added: {screen}"
    );
    assert!(
        server_summary(url).contains(&("msb typed".to_string(), false)),
        "the push goes on past the conflict"
    );

    // Keep mine: the server gets this app's version.
    tmux.keys(&["m"]);
    let screen = tmux.wait_for("no conflict, synced", |s| no_dialog(s) && synced(s));
    assert!(screen.contains("[x] Alpha"), "{screen}");
    assert_eq!(
        server_summary(url),
        [
            ("Alpha".to_string(), true),
            ("Beta".to_string(), false),
            ("msb typed".to_string(), false)
        ]
    );

    // Keep the server's: Beta changes elsewhere, then here.
    server_update(
        url,
        &server_id(url, "Beta"),
        serde_json::json!({"text": "Beta (server)"}),
    );
    tmux.keys(&["k", "k", "j"]);
    tmux.wait_for("Beta highlighted", |s| s.contains("> [ ] Beta"));
    tmux.keys(&["Space"]);
    tmux.wait_for("the conflict dialog", |s| s.contains("Conflict 1 of 1"));
    // Esc: later; the status line says so, c brings the dialog back.
    tmux.keys(&["Escape"]);
    let screen = tmux.wait_for("the conflict on the status line", |s| {
        no_dialog(s) && s.contains("1 conflict: press c")
    });
    assert!(screen.contains("c conflicts"), "{screen}");
    tmux.keys(&["c"]);
    tmux.wait_for("the dialog again", |s| s.contains("Conflict 1 of 1"));
    tmux.keys(&["s"]);
    let screen = tmux.wait_for("the server's copy, synced", |s| {
        no_dialog(s) && synced(s) && s.contains("[ ] Beta (server)")
    });
    assert!(!screen.contains("[x] Beta"), "{screen}");
    assert!(server_summary(url).contains(&("Beta (server)".to_string(), false)));

    // Sync works again without a purge.
    tmux.keys(&["a"]);
    tmux.type_text("After");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the new item, synced", |s| {
        s.contains("> [ ] After") && synced(s)
    });
    assert!(server_summary(url).contains(&("After".to_string(), false)));

    // Deleted elsewhere, changed here: keep mine adds it again.
    crate::util::server_delete(url, &server_id(url, "After"));
    tmux.keys(&["Space"]);
    let screen = tmux.wait_for("the delete conflict", |s| s.contains("Conflict 1 of 1"));
    assert!(
        screen.contains("“After” was deleted on the server;"),
        "{screen}"
    );
    tmux.keys(&["m"]);
    tmux.wait_for("the item added again, synced", |s| {
        no_dialog(s) && synced(s) && s.contains("[x] After")
    });
    assert!(server_summary(url).contains(&("After".to_string(), true)));
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// A server that accepts connections and never answers: a sync against it runs until the
/// request timeout.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        // Held, never read nor answered; the thread ends with the test binary.
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    url
}

#[test]
fn terminal_ui_keeps_keys_typed_while_a_sync_runs() {
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(
        data.path(),
        &silent_server(),
        &["--request-timeout-ms", "600000"],
        PANE,
    );
    tmux.wait_for("the start-up sync running", |s| s.contains("syncing…"));
    tmux.keys(&["a"]);
    tmux.type_text("Typed while syncing");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the item, while the sync still runs", |s| {
        s.contains("> [ ] Typed while syncing")
    });
    assert!(screen.contains("syncing…"), "{screen}");
    tmux.keys(&["a"]);
    tmux.type_text("And another");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("both items", |s| {
        s.contains("> [ ] And another") && s.contains("[ ] Typed while syncing")
    });
    assert!(screen.contains("syncing…"), "{screen}");
    // Quitting does not wait for the sync.
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

#[test]
fn terminal_ui_is_readable_at_50x12_and_200x50() {
    let data = tempfile::tempdir().unwrap();
    // A long URL (a path of 600 characters): the screen names its host and port only.
    let base = dead_url();
    let url = format!("{base}/{}", "a%2F".repeat(150));
    let host = base.trim_start_matches("http://");
    let tmux = Tmux::start(
        data.path(),
        &url,
        &["--offline-retry-interval-s", "1"],
        (50, 12),
    );
    let long = format!("Long {} end", "word ".repeat(30));
    tmux.wait_for("the first screen", |s| s.contains("never synced"));
    tmux.keys(&["a"]);
    tmux.type_text(&long);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the long item, offline, at 50x12", |s| {
        s.contains("offline — 1 change queued") && s.contains("[ ] Long word")
    });
    for needle in [
        "a add · space done · d delete · r sync · j/k move\nq quit",
        "never synced",
        host,
        "…",
    ] {
        assert!(screen.contains(needle), "no {needle:?} at 50x12:\n{screen}");
    }
    assert!(!screen.contains("a%2F"), "{screen}");
    assert!(
        !screen.contains(" end"),
        "the long item is ellipsized: {screen}"
    );
    for line in screen.lines() {
        assert!(line.chars().count() <= 50, "{line}");
    }

    tmux.resize(200, 50);
    // The whole screen at the new size: a capture may land while the app is still redrawing
    // after the resize, so wait for every line (a broken layout never shows them all).
    let status = format!("offline — 1 change queued · never synced · {host}");
    let help = "a add · space done · d delete · r sync · j/k move · q quit";
    let screen = tmux.wait_for(
        "the whole item, help and status on one line each at 200x50",
        |s| {
            s.contains(long.trim())
                && s.lines().any(|l| l == status)
                && s.lines().any(|l| l == help)
        },
    );
    assert!(!screen.contains("a%2F"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_exit();
}

/// Live mode on the server's change feed: each app shows the other's changes without a key
/// press. The poll interval is an hour, so only the feed can bring them.
fn two_terminal_uis_show_each_others_changes_without_a_key(kind: StoreKind) {
    two_apps_converge(kind, &["--sync-interval-s", "3600"], true);
}

/// The same without live mode: the app's own background sync every second.
#[test]
fn two_terminal_uis_converge_by_the_interval_sync_without_live_mode() {
    two_apps_converge(
        StoreKind::Sqlite,
        &["--sync-interval-s", "1", "--no-live"],
        false,
    );
}

/// Live mode's word on the status line: `live` while the change feed is open.
fn shows_live_mode(screen: &str) -> bool {
    screen.contains(" · live · ")
}

fn two_apps_converge(kind: StoreKind, args: &[&str], live: bool) {
    let server = start_server(kind);
    let url = server.url();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Tmux::start(da.path(), url, args, PANE);
    let b = Tmux::start(db.path(), url, args, PANE);
    let ready = |s: &str| s.contains("No items yet") && synced(s) && shows_live_mode(s) == live;
    a.wait_for("A's empty list", ready);
    b.wait_for("B's empty list", ready);

    a.keys(&["a"]);
    a.type_text("From A");
    a.keys(&["Enter"]);
    b.wait_for("A's item on B, without a key", |s| {
        s.contains("> [ ] From A")
    });
    b.keys(&["Space"]);
    a.wait_for("B's change on A, without a key", |s| {
        s.contains("> [x] From A")
    });
    b.keys(&["a"]);
    b.type_text("From B");
    b.keys(&["Enter"]);
    a.wait_for("B's item on A", |s| s.contains("[ ] From B"));
    a.keys(&["k", "d"]);
    b.wait_for("A's delete on B", |s| {
        !s.contains("From A") && s.contains("[ ] From B") && s.contains("Todo items (1)")
    });
    assert_eq!(server_summary(url), [("From B".to_string(), false)]);
    a.keys(&["q"]);
    b.keys(&["q"]);
    a.wait_exit();
    b.wait_exit();
}
