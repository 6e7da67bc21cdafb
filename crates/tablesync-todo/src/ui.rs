//! The terminal UI (ratatui + crossterm).
//!
//! Split in three so the interesting parts are testable without a terminal:
//! * [`UiState`] — everything the screen shows;
//! * [`handle_key`] — a pure state transition that returns the [`Action`] the app must perform;
//! * [`render`] — a pure function of the state (tests draw it on ratatui's `TestBackend`).
//!
//! [`run`] is the thin IO shell: it owns the terminal, performs actions against the [`App`], and
//! runs every sync as a task on the tokio runtime, so the UI keeps answering keys while a sync
//! waits for the network (bounded by the SDK's request timeout). Local writes are quick SQLite
//! transactions and run inline.

use std::sync::mpsc;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{App, SyncReport, TodoItem};

/// How long the event loop waits for a key before it looks for finished syncs, in milliseconds.
const UI_POLL_MS: u64 = 100;

/// Longest input line accepted while adding, in characters (matches the model's limit).
const INPUT_CHARS_MAX: usize = crate::app::TEXT_CHARS_MAX;

/// A dismissable message box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// The box's title, e.g. "Sync error".
    pub title: String,
    /// The text (may span lines).
    pub message: String,
}

/// Everything the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    /// The local items, in list order.
    pub items: Vec<TodoItem>,
    /// Index of the highlighted item (0 when the list is empty).
    pub selected: usize,
    /// `Some(text typed so far)` while adding an item.
    pub input: Option<String>,
    /// The open dialog, if any; once the input line is closed, it takes every key until
    /// dismissed with Enter or Esc.
    pub dialog: Option<Dialog>,
    /// The configured server URL.
    pub server_url: String,
    /// The last finished sync (from this run or, at start, the previous one).
    pub last_sync: Option<SyncReport>,
    /// Queued operations not yet pushed.
    pub pending: u64,
    /// Whether a sync is running.
    pub syncing: bool,
}

impl UiState {
    /// An empty screen for this server.
    pub fn new(server_url: impl Into<String>) -> Self {
        UiState {
            items: Vec::new(),
            selected: 0,
            input: None,
            dialog: None,
            server_url: server_url.into(),
            last_sync: None,
            pending: 0,
            syncing: false,
        }
    }

    /// Replaces the items, keeping the highlight on the same item when it still exists.
    pub fn set_items(&mut self, items: Vec<TodoItem>) {
        let current = self.items.get(self.selected).and_then(|i| i.id.clone());
        self.items = items;
        self.selected = current
            .and_then(|id| self.items.iter().position(|i| i.id.as_deref() == Some(&id)))
            .unwrap_or(self.selected)
            .min(self.items.len().saturating_sub(1));
    }

    /// Highlights the item with this id (after an add).
    pub fn select_id(&mut self, id: &str) {
        if let Some(pos) = self.items.iter().position(|i| i.id_str() == id) {
            self.selected = pos;
        }
    }

    /// Records a finished sync; a failure opens the tutorial's dialog.
    pub fn sync_finished(&mut self, report: SyncReport) {
        self.syncing = false;
        if let Some(f) = &report.failure {
            self.dialog = Some(Dialog {
                title: "Sync error".into(),
                message: f.message.clone(),
            });
        }
        self.last_sync = Some(report);
    }

    /// The status line's text.
    pub fn status_text(&self) -> String {
        let last = match &self.last_sync {
            None => "never synced".to_string(),
            Some(r) => {
                let how = match (r.reached_server, r.ok()) {
                    (true, true) => "reached server",
                    (true, false) => "reached server, failed",
                    (false, _) => "server not reached",
                };
                format!("last sync {} ({how})", r.at_time_display())
            }
        };
        // "syncing" before the last sync: the line is cut at the screen's edge, and whether a
        // sync is running matters more than the details of the previous one.
        let syncing = if self.syncing { " | syncing..." } else { "" };
        format!(
            "{} | pending: {}{syncing} | {last}",
            self.server_url, self.pending
        )
    }
}

/// What the app must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond the state change.
    None,
    /// Leave the UI.
    Quit,
    /// Insert an item with this text, then sync.
    Add(String),
    /// Set `complete` on the item with this id, then sync.
    SetComplete {
        /// The item.
        id: String,
        /// The new value.
        complete: bool,
    },
    /// Sync now.
    Refresh,
}

/// Applies a key to the state and says what the app must do. Pure.
pub fn handle_key(state: &mut UiState, key: KeyEvent) -> Action {
    if key.kind != KeyEventKind::Press {
        return Action::None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    // The input line comes first: a sync failing while the user types must not swallow their
    // keys; its dialog shows once the line is done.
    if let Some(input) = &mut state.input {
        match key.code {
            KeyCode::Esc => state.input = None,
            KeyCode::Enter => {
                let text = input.trim().to_string();
                state.input = None;
                if !text.is_empty() {
                    return Action::Add(text);
                }
            }
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) if !c.is_control() && input.chars().count() < INPUT_CHARS_MAX => {
                input.push(c)
            }
            _ => {}
        }
        return Action::None;
    }
    if state.dialog.is_some() {
        if matches!(key.code, KeyCode::Enter | KeyCode::Esc) {
            state.dialog = None;
        }
        return Action::None;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('a') => {
            state.input = Some(String::new());
            Action::None
        }
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Up | KeyCode::Char('k') => {
            state.selected = state.selected.saturating_sub(1);
            Action::None
        }
        KeyCode::Down | KeyCode::Char('j') => {
            if state.selected + 1 < state.items.len() {
                state.selected += 1;
            }
            Action::None
        }
        KeyCode::Char(' ') | KeyCode::Enter => match state.items.get(state.selected) {
            Some(item) => Action::SetComplete {
                id: item.id_str().to_string(),
                complete: !item.complete,
            },
            None => Action::None,
        },
        _ => Action::None,
    }
}

/// Text from the store or the server shown on screen: control characters would move the cursor
/// or change the terminal's state, so they become spaces.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Draws the whole screen. A pure function of `state`.
pub fn render(frame: &mut Frame, state: &UiState) {
    let [list_area, help_area, status_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Todo items ({}) ", state.items.len()));
    if state.items.is_empty() {
        let empty = Paragraph::new("No items yet. Press a to add one.").block(block);
        frame.render_widget(empty, list_area);
    } else {
        let rows: Vec<ListItem> = state
            .items
            .iter()
            .map(|i| {
                let mark = if i.complete { "[x]" } else { "[ ]" };
                ListItem::new(format!("{mark} {}", printable(&i.text)))
            })
            .collect();
        let list = List::new(rows)
            .block(block)
            .highlight_symbol("> ")
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut list_state = ListState::default().with_selected(Some(state.selected));
        frame.render_stateful_widget(list, list_area, &mut list_state);
    }

    let help = match &state.input {
        Some(text) => format!("New item: {}_  (Enter add, Esc cancel)", printable(text)),
        None => "a add | space toggle | r refresh | j/k move | q quit".to_string(),
    };
    frame.render_widget(Paragraph::new(help), help_area);
    frame.render_widget(
        Paragraph::new(state.status_text()).style(Style::default().add_modifier(Modifier::BOLD)),
        status_area,
    );

    // Hidden while the input line is open (see `handle_key`).
    if let (Some(dialog), None) = (&state.dialog, &state.input) {
        render_dialog(frame, dialog);
    }
}

fn render_dialog(frame: &mut Frame, dialog: &Dialog) {
    let screen = frame.area();
    let width = (screen.width.saturating_mul(4) / 5)
        .max(20)
        .min(screen.width);
    let inner_width = usize::from(width.saturating_sub(2)).max(1);
    // Rough wrapped height: enough rows for every line at this width, plus the hint and borders.
    let text_rows: usize = dialog
        .message
        .lines()
        .map(|l| l.chars().count().div_ceil(inner_width).max(1))
        .sum();
    let height = u16::try_from(text_rows + 4)
        .unwrap_or(u16::MAX)
        .min(screen.height);
    let area = Rect {
        x: screen.x + (screen.width - width) / 2,
        y: screen.y + (screen.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = dialog
        .message
        .lines()
        .map(|l| Line::from(printable(l)))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from("Press Enter or Esc to dismiss"));
    let body = Paragraph::new(lines).wrap(Wrap { trim: false }).block(
        Block::default()
            .borders(Borders::ALL)
            .title(format!(" {} ", dialog.title)),
    );
    frame.render_widget(Clear, area);
    frame.render_widget(body, area);
}

/// Runs the terminal UI until the user quits. Syncs at start (the tutorial's
/// `InitLocalStoreAsync`), after every add and toggle, and on `r`.
pub fn run(app: App, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, app, rt);
    // Restore the terminal even when the loop failed; report the loop's error first.
    let restored = ratatui::try_restore();
    result?;
    restored?;
    Ok(())
}

/// Loads items and pending count into the state; a local failure becomes a dialog.
fn reload(state: &mut UiState, app: &App, rt: &tokio::runtime::Runtime) {
    let loaded = rt.block_on(async {
        Ok::<_, anyhow::Error>((app.items().await?, app.pending_operations().await?))
    });
    match loaded {
        Ok((items, pending)) => {
            state.set_items(items);
            state.pending = pending;
        }
        Err(e) => {
            state.dialog = Some(Dialog {
                title: "Error".into(),
                message: format!("Could not read the local store: {e:#}"),
            })
        }
    }
}

/// Background syncs: at most one runs; a request while it runs is remembered and runs next.
struct Syncer {
    tx: mpsc::Sender<SyncReport>,
    rx: mpsc::Receiver<SyncReport>,
    again: bool,
}

impl Syncer {
    fn request(&mut self, state: &mut UiState, app: &App, rt: &tokio::runtime::Runtime) {
        if state.syncing {
            self.again = true;
            return;
        }
        state.syncing = true;
        let app = app.clone();
        let tx = self.tx.clone();
        rt.spawn(async move {
            // The receiver only goes away when the UI has quit; nothing left to tell then.
            let _ = tx.send(app.sync().await);
        });
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: App,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let mut state = UiState::new(app.config().server_url.clone());
    state.last_sync = crate::app::load_last_sync(&app.config().data_dir)
        .ok()
        .flatten();
    reload(&mut state, &app, rt);
    let (tx, rx) = mpsc::channel();
    let mut syncer = Syncer {
        tx,
        rx,
        again: false,
    };
    syncer.request(&mut state, &app, rt);
    loop {
        terminal.draw(|f| render(f, &state))?;
        if event::poll(Duration::from_millis(UI_POLL_MS))? {
            if let Event::Key(key) = event::read()? {
                match handle_key(&mut state, key) {
                    Action::None => {}
                    Action::Quit => return Ok(()),
                    Action::Refresh => syncer.request(&mut state, &app, rt),
                    Action::Add(text) => match rt.block_on(app.add(&text)) {
                        Ok(item) => {
                            reload(&mut state, &app, rt);
                            state.select_id(item.id_str());
                            syncer.request(&mut state, &app, rt);
                        }
                        Err(e) => {
                            state.dialog = Some(Dialog {
                                title: "Error".into(),
                                message: format!("Could not add the item: {e:#}"),
                            })
                        }
                    },
                    Action::SetComplete { id, complete } => {
                        match rt.block_on(app.set_complete(&id, complete)) {
                            Ok(_) => {
                                reload(&mut state, &app, rt);
                                syncer.request(&mut state, &app, rt);
                            }
                            Err(e) => {
                                state.dialog = Some(Dialog {
                                    title: "Error".into(),
                                    message: format!("Could not update the item: {e:#}"),
                                })
                            }
                        }
                    }
                }
            }
        }
        while let Ok(report) = syncer.rx.try_recv() {
            state.sync_finished(report);
            reload(&mut state, &app, rt);
            if std::mem::take(&mut syncer.again) {
                syncer.request(&mut state, &app, rt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{FailureKind, SyncFailure};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn item(id: &str, text: &str, complete: bool) -> TodoItem {
        TodoItem {
            id: Some(id.into()),
            text: text.into(),
            complete,
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// The screen as text, one string per row (trailing spaces trimmed).
    fn screen(state: &UiState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, state)).unwrap();
        let buf = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn state_with_items() -> UiState {
        let mut s = UiState::new("http://127.0.0.1:8080");
        s.items = vec![
            item("1", "Buy milk", false),
            item("2", "Walk the dog", true),
        ];
        s.pending = 2;
        s
    }

    #[test]
    fn renders_list_help_and_status() {
        let mut s = state_with_items();
        s.last_sync = Some(SyncReport {
            at: "2026-11-28T17:58:41.000Z".into(),
            server_url: s.server_url.clone(),
            reached_server: true,
            pulled: 0,
            failure: None,
        });
        let rows = screen(&s, 80, 8);
        assert_eq!(
            rows[0],
            "┌ Todo items (2) ──────────────────────────────────────────────────────────────┐"
        );
        assert_eq!(
            rows[1],
            "│> [ ] Buy milk                                                                │"
        );
        assert_eq!(
            rows[2],
            "│  [x] Walk the dog                                                            │"
        );
        assert_eq!(
            rows[6],
            "a add | space toggle | r refresh | j/k move | q quit"
        );
        // Fits 80 columns.
        assert_eq!(
            rows[7],
            "http://127.0.0.1:8080 | pending: 2 | last sync 17:58:41 UTC (reached server)"
        );
        // Cut at the screen's edge, not wrapped.
        let rows = screen(&s, 60, 8);
        assert_eq!(
            rows[7],
            "http://127.0.0.1:8080 | pending: 2 | last sync 17:58:41 UTC"
        );
    }

    #[test]
    fn renders_empty_list_input_and_offline_status() {
        let mut s = UiState::new("http://127.0.0.1:9");
        s.input = Some("Buy\u{7}bread".into());
        s.syncing = true;
        s.last_sync = Some(SyncReport {
            at: "2026-11-28T17:58:41.000Z".into(),
            server_url: s.server_url.clone(),
            reached_server: false,
            pulled: 0,
            failure: None,
        });
        let rows = screen(&s, 110, 6);
        assert!(
            rows[1].starts_with("│No items yet. Press a to add one.   "),
            "{}",
            rows[1]
        );
        assert_eq!(rows[4], "New item: Buy bread_  (Enter add, Esc cancel)");
        assert_eq!(
            rows[5],
            "http://127.0.0.1:9 | pending: 0 | syncing... | last sync 17:58:41 UTC (server not reached)"
        );
        let s = UiState::new("http://x");
        assert_eq!(screen(&s, 60, 5)[4], "http://x | pending: 0 | never synced");
    }

    #[test]
    fn sync_failure_opens_dismissable_dialog() {
        let mut s = state_with_items();
        s.syncing = true;
        s.sync_finished(SyncReport {
            at: "2026-11-28T17:58:41.000Z".into(),
            server_url: s.server_url.clone(),
            reached_server: false,
            pulled: 0,
            failure: Some(SyncFailure {
                kind: FailureKind::Offline,
                push_status: Some("CancelledByNetworkError".into()),
                message: "Push failed because of sync errors. You may be offline.\n\
                          PushResult.Status: CancelledByNetworkError"
                    .into(),
            }),
        });
        assert!(!s.syncing);
        let text = screen(&s, 100, 20).join("\n");
        assert!(text.contains(" Sync error "), "{text}");
        assert!(
            text.contains("Push failed because of sync errors. You may be offline."),
            "{text}"
        );
        assert!(
            text.contains("PushResult.Status: CancelledByNetworkError"),
            "{text}"
        );
        assert!(text.contains("Press Enter or Esc to dismiss"), "{text}");
        assert!(text.contains("(server not reached)"), "{text}");
        // While the dialog is open, keys do nothing but dismiss it.
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('r'))), Action::None);
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('q'))), Action::None);
        assert_eq!(handle_key(&mut s, key(KeyCode::Char(' '))), Action::None);
        assert!(s.dialog.is_some());
        assert_eq!(handle_key(&mut s, key(KeyCode::Esc)), Action::None);
        assert_eq!(s.dialog, None);
        let text = screen(&s, 100, 20).join("\n");
        assert!(!text.contains("Sync error"), "{text}");
        // A failure while the user types waits until the input line is done.
        s.input = Some("Bu".into());
        s.sync_finished(SyncReport {
            at: "2026-11-28T17:58:42.000Z".into(),
            server_url: s.server_url.clone(),
            reached_server: false,
            pulled: 0,
            failure: Some(SyncFailure {
                kind: FailureKind::Offline,
                push_status: None,
                message: "Pull failed: network error".into(),
            }),
        });
        let text = screen(&s, 100, 20).join("\n");
        assert!(!text.contains("Pull failed"), "{text}");
        handle_key(&mut s, key(KeyCode::Char('y')));
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Enter)),
            Action::Add("Buy".into())
        );
        let text = screen(&s, 100, 20).join("\n");
        assert!(text.contains("Pull failed: network error"), "{text}");
        handle_key(&mut s, key(KeyCode::Enter));
        assert_eq!(s.dialog, None);
        // Tiny terminals do not panic.
        s.dialog = Some(Dialog {
            title: "Sync error".into(),
            message: "x".repeat(500),
        });
        screen(&s, 10, 3);
    }

    #[test]
    fn keys_move_toggle_add_refresh_quit() {
        let mut s = state_with_items();
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Char(' '))),
            Action::SetComplete {
                id: "1".into(),
                complete: true
            }
        );
        handle_key(&mut s, key(KeyCode::Down));
        handle_key(&mut s, key(KeyCode::Char('j')));
        assert_eq!(s.selected, 1);
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Enter)),
            Action::SetComplete {
                id: "2".into(),
                complete: false
            }
        );
        handle_key(&mut s, key(KeyCode::Char('k')));
        handle_key(&mut s, key(KeyCode::Up));
        assert_eq!(s.selected, 0);
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('r'))), Action::Refresh);

        assert_eq!(handle_key(&mut s, key(KeyCode::Char('a'))), Action::None);
        for c in "Xq y".chars() {
            assert_eq!(handle_key(&mut s, key(KeyCode::Char(c))), Action::None);
        }
        handle_key(&mut s, key(KeyCode::Backspace));
        assert_eq!(s.input.as_deref(), Some("Xq "));
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Enter)),
            Action::Add("Xq".into())
        );
        assert_eq!(s.input, None);
        // Empty input and Esc add nothing.
        handle_key(&mut s, key(KeyCode::Char('a')));
        assert_eq!(handle_key(&mut s, key(KeyCode::Enter)), Action::None);
        handle_key(&mut s, key(KeyCode::Char('a')));
        handle_key(&mut s, key(KeyCode::Char('z')));
        assert_eq!(handle_key(&mut s, key(KeyCode::Esc)), Action::None);
        assert_eq!(s.input, None);

        assert_eq!(handle_key(&mut s, key(KeyCode::Char('q'))), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        s.input = Some(String::new());
        assert_eq!(handle_key(&mut s, ctrl_c), Action::Quit);

        let mut empty = UiState::new("http://x");
        assert_eq!(
            handle_key(&mut empty, key(KeyCode::Char(' '))),
            Action::None
        );
        handle_key(&mut empty, key(KeyCode::Down));
        assert_eq!(empty.selected, 0);
    }

    #[test]
    fn set_items_keeps_the_highlighted_item() {
        let mut s = state_with_items();
        s.selected = 1;
        s.set_items(vec![
            item("0", "Alpha", false),
            item("1", "Buy milk", false),
            item("2", "Walk the dog", true),
        ]);
        assert_eq!(s.selected, 2);
        s.set_items(vec![item("0", "Alpha", false)]);
        assert_eq!(s.selected, 0);
        s.set_items(Vec::new());
        assert_eq!(s.selected, 0);
        s.set_items(vec![item("0", "Alpha", false), item("5", "Zed", false)]);
        s.select_id("5");
        assert_eq!(s.selected, 1);
    }
}
