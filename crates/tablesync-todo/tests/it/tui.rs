//! The terminal UI itself, driven through tmux: keys go in with `send-keys`, the screen comes
//! back with `capture-pane -p`. Every wait polls the screen until a condition holds, with a
//! generous deadline (never a timing assertion).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{dead_url, server_insert, server_summary, start_server, StoreKind};

store_tests!(terminal_ui_adds_toggles_and_refreshes_against_a_live_server);

/// Upper bound for the screen to reach an expected state, in seconds.
const SCREEN_DEADLINE_SECS: u64 = 60;
/// Pause between two captures, in milliseconds.
const CAPTURE_INTERVAL_MS: u64 = 100;

/// A private tmux server (its own socket, in a temporary directory that goes away with it)
/// running the app in a 100x30 pane; killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(data_dir: &Path, url: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let app = format!(
            "'{}' --data-dir '{}' --url '{url}'",
            env!("CARGO_BIN_EXE_tablesync-todo"),
            data_dir.display()
        );
        let tmux = Tmux { socket, _dir: dir };
        let out = tmux.try_run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "todo",
            "-x",
            "100",
            "-y",
            "30",
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

    fn pane_dead(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "todo", "#{pane_dead}"])
            .trim()
            == "1"
    }

    /// Captures the screen until `ok` holds; panics with the last screen at the deadline.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(SCREEN_DEADLINE_SECS);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
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
    screen.contains("(reached server)")
        && screen.contains("pending: 0")
        && !screen.contains("syncing")
}

fn terminal_ui_adds_toggles_and_refreshes_against_a_live_server(kind: StoreKind) {
    let server = start_server(kind);
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(data.path(), url);

    let screen = tmux.wait_for("the empty list after the start-up sync", |s| {
        s.contains("No items yet. Press a to add one.") && synced(s)
    });
    assert!(
        screen.contains(&format!("{url} | pending: 0 | last sync ")),
        "{screen}"
    );
    assert!(
        screen.contains("a add | space toggle | r refresh"),
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

    tmux.keys(&["q"]);
    tmux.wait_exit();
}

#[test]
fn terminal_ui_offline_shows_the_tutorial_dialog_and_keeps_working() {
    let data = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(data.path(), &dead_url());

    // Nothing to push: the start-up pull fails.
    tmux.wait_for("the pull-failure dialog", |s| {
        s.contains(" Sync error ") && s.contains("Pull failed: network error")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the list without the dialog", |s| {
        !s.contains("Sync error") && s.contains("(server not reached)")
    });

    tmux.keys(&["a"]);
    tmux.type_text("Offline item");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the push-failure dialog", |s| {
        s.contains("Push failed because of sync errors. You may be offline.")
            && s.contains("PushResult.Status: CancelledByNetworkError")
    });
    assert!(screen.contains("Press Enter or Esc to dismiss"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the item, queued", |s| {
        !s.contains("Sync error") && s.contains("> [ ] Offline item")
    });
    assert!(screen.contains("| pending: 1 | last sync "), "{screen}");
    assert!(screen.contains("(server not reached)"), "{screen}");

    // Still usable offline: toggling works locally (and its sync fails again).
    tmux.keys(&["Space"]);
    tmux.wait_for("the completed item and the dialog", |s| {
        s.contains("[x] Offline item") && s.contains("PushResult.Status: CancelledByNetworkError")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("no dialog", |s| !s.contains("Sync error"));
    tmux.keys(&["q"]);
    tmux.wait_exit();
}
