//! The terminal UI (ratatui + crossterm).
//!
//! Split in three so the interesting parts are testable without a terminal:
//! * [`UiState`] — everything the screen shows;
//! * [`handle_key`] — a pure state transition that returns the [`Action`] the app must perform;
//! * [`render`] — a pure function of the state (tests draw it on ratatui's `TestBackend`).
//!
//! [`run`] is the thin IO shell: it owns the terminal, performs actions against the [`App`],
//! reads the SDK's status and progress watches into the state, keeps the SDK's live mode
//! running (the list is reloaded on its change notifications), and runs the app's own syncs as
//! tasks on the tokio runtime — at start, after each local change, on `r`, and on the
//! [`schedule`](crate::schedule) — so the UI keeps answering keys while a sync waits for the
//! network. Local writes are quick SQLite transactions and run inline.
//!
//! Offline is a state of the status line. The only dialog is the conflict dialog, and it takes
//! only its own keys (`m`, `s`, `b`, Esc): every other key goes to the list underneath, and
//! while the input line is open every key goes to the input line (the dialog waits).

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph};
use ratatui::Frame;
use tablesync_client::{SyncProgress, SyncStatus};
use time::OffsetDateTime;

use crate::app::{App, ConflictPolicy, FailureKind, SyncReport, TodoItem};
use crate::conflict::{Conflict, Keep};
use crate::schedule::{next_sync_in, Intervals};
use crate::status_line::{live_segment, segments, Facts};
use crate::text::{ellipsize, pack, printable, width, wrap};

/// How long the event loop waits for a key before it looks at syncs and watches, in
/// milliseconds.
const UI_POLL_MS: u64 = 100;

/// Longest input line accepted while adding, in characters (matches the model's limit).
const INPUT_CHARS_MAX: usize = crate::app::TEXT_CHARS_MAX;

/// Most lines the status line and the help line may each wrap to.
const BAR_LINES_MAX: usize = 2;

/// Everything the screen shows.
#[derive(Debug, Clone, PartialEq)]
pub struct UiState {
    /// The local items, in list order.
    pub items: Vec<TodoItem>,
    /// Index of the highlighted item (0 when the list is empty).
    pub selected: usize,
    /// `Some(text typed so far)` while adding an item.
    pub input: Option<String>,
    /// The conflicts of the last push, waiting for a choice; the dialog shows the first.
    pub conflicts: Vec<Conflict>,
    /// Whether the conflict dialog is open (Esc closes it, `c` opens it again; a new conflict
    /// opens it).
    pub dialog_open: bool,
    /// Whether the dialog shows both versions side by side.
    pub show_both: bool,
    /// A one-line message until the next key (what was done, or a local error).
    pub notice: Option<String>,
    /// The server's host and port.
    pub host: String,
    /// The SDK's sync status, as last read from its watch.
    pub sdk: SyncStatus,
    /// The SDK's progress, as last read from its watch.
    pub progress: SyncProgress,
    /// Queued operations, as the app last counted them (until the SDK's status has a count).
    pub pending: u64,
    /// The last finished sync (from this run or, at start, the previous one).
    pub last_sync: Option<SyncReport>,
    /// Whether the app's sync task is running.
    pub syncing: bool,
    /// Live mode's state for the status line (`None`: off, or nothing to say).
    pub live: Option<String>,
}

impl UiState {
    /// An empty screen for this server (host and port).
    pub fn new(host: impl Into<String>) -> Self {
        UiState {
            items: Vec::new(),
            selected: 0,
            input: None,
            conflicts: Vec::new(),
            dialog_open: false,
            show_both: false,
            notice: None,
            host: host.into(),
            sdk: SyncStatus::default(),
            progress: SyncProgress::Idle,
            pending: 0,
            last_sync: None,
            syncing: false,
            live: None,
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

    /// Replaces the conflicts; one not seen before opens the dialog.
    pub fn set_conflicts(&mut self, conflicts: Vec<Conflict>) {
        let known: BTreeSet<&str> = self
            .conflicts
            .iter()
            .map(|c| c.operation_id.as_str())
            .collect();
        if conflicts
            .iter()
            .any(|c| !known.contains(c.operation_id.as_str()))
        {
            self.dialog_open = true;
            self.show_both = false;
        }
        if conflicts.is_empty() {
            self.dialog_open = false;
        }
        self.conflicts = conflicts;
    }

    /// Records a finished sync (conflicts arrive through [`UiState::set_conflicts`]).
    pub fn sync_finished(&mut self, report: SyncReport) {
        self.syncing = false;
        self.last_sync = Some(report);
    }

    /// Whether the conflict dialog is on screen (and takes its keys).
    pub fn dialog_visible(&self) -> bool {
        self.dialog_open && !self.conflicts.is_empty() && self.input.is_none()
    }

    /// The status line's facts: the SDK's watch (syncing, online, pending operations) first,
    /// the app's own records where the SDK has nothing yet (the previous run's last sync), and
    /// for the time of the last complete sync.
    pub fn facts(&self) -> Facts {
        let report = self.last_sync.as_ref();
        // The app's own record, not the SDK's `last_success`: the record outlives the process,
        // so the status line names the previous run's last sync from the first frame.
        let last_synced = report
            .and_then(|r| r.last_ok_at.as_deref().or(r.ok().then_some(r.at.as_str())))
            .and_then(|at| {
                OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            });
        let failure = report
            .and_then(|r| r.failure.as_ref())
            .filter(|f| f.kind == FailureKind::Rejected)
            .map(|f| {
                if f.summary.is_empty() {
                    f.message.lines().next().unwrap_or_default().to_string()
                } else {
                    f.summary.clone()
                }
            });
        Facts {
            syncing: self.syncing || self.sdk.syncing,
            progress: self.progress.clone(),
            online: self.sdk.online.or(report.map(|r| r.reached_server)),
            pending: self.sdk.pending_operations.unwrap_or(self.pending),
            last_synced,
            failure,
            conflicts: self.conflicts.len(),
            live: self.live.clone(),
            host: self.host.clone(),
        }
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
    /// Delete the item with this id, then sync.
    Delete {
        /// The item.
        id: String,
    },
    /// Sync now.
    Refresh,
    /// Settle the dialog's conflict (the first), then sync.
    Resolve(Keep),
}

/// Applies a key to the state and says what the app must do. Pure.
pub fn handle_key(state: &mut UiState, key: KeyEvent) -> Action {
    if key.kind != KeyEventKind::Press {
        return Action::None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    // Ctrl-J and Ctrl-M are line feed and carriage return: an Enter typed before the terminal
    // was in raw mode arrives as one of them (the tty turned its CR into LF), and must not
    // become the letter.
    let key = match key.code {
        KeyCode::Char('j' | 'm') if ctrl => KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE),
        KeyCode::Char(_) if ctrl => return Action::None,
        _ => key,
    };
    state.notice = None;
    // The input line comes first: everything typed goes into it, letters the dialog uses
    // included; the dialog shows again once the line is done.
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
    // The dialog takes only its own keys; the others fall through to the list.
    if state.dialog_visible() {
        match key.code {
            KeyCode::Char('m') => return Action::Resolve(Keep::Mine),
            KeyCode::Char('s') => return Action::Resolve(Keep::Server),
            KeyCode::Char('b') => {
                state.show_both = !state.show_both;
                return Action::None;
            }
            KeyCode::Esc => {
                state.dialog_open = false;
                state.notice = Some("conflict left for later: press c to resolve it".into());
                return Action::None;
            }
            _ => {}
        }
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('a') => {
            state.input = Some(String::new());
            Action::None
        }
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('c') => {
            if state.conflicts.is_empty() {
                state.notice = Some("no conflicts".into());
            } else {
                state.dialog_open = true;
            }
            Action::None
        }
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
        KeyCode::Char('d') | KeyCode::Delete => match state.items.get(state.selected) {
            Some(item) => Action::Delete {
                id: item.id_str().to_string(),
            },
            None => Action::None,
        },
        _ => Action::None,
    }
}

/// The help line's keys, most used first.
fn help_segments(state: &UiState) -> Vec<String> {
    let mut keys = vec!["a add", "space done", "d delete", "r sync"];
    if !state.conflicts.is_empty() {
        keys.push("c conflicts");
    }
    keys.extend(["j/k move", "q quit"]);
    keys.into_iter().map(String::from).collect()
}

/// The input line: the end of the text (where the cursor is) when it is wider than the
/// screen, then its keys.
fn input_lines(text: &str, cols: usize) -> Vec<String> {
    let prefix = "New item: ";
    let avail = cols.saturating_sub(width(prefix) + 1);
    let text = printable(text);
    let shown = if width(&text) <= avail {
        text
    } else {
        // Keep the tail: reverse, cut, reverse back.
        let rev: String = text.chars().rev().collect();
        let cut = ellipsize(&rev, avail);
        cut.chars().rev().collect()
    };
    let mut lines = vec![format!("{prefix}{shown}_")];
    lines.extend(pack(
        &["Enter add".to_string(), "Esc cancel".to_string()],
        cols,
        1,
    ));
    lines
}

/// Draws the whole screen. A pure function of `state`.
pub fn render(frame: &mut Frame, state: &UiState) {
    let screen = frame.area();
    let cols = usize::from(screen.width);
    let status = pack(&segments(&state.facts()), cols, BAR_LINES_MAX);
    let help = match &state.input {
        Some(text) => input_lines(text, cols),
        None => pack(&help_segments(state), cols, BAR_LINES_MAX),
    };
    let notice: Vec<String> = state
        .notice
        .iter()
        .map(|n| ellipsize(&printable(n), cols))
        .collect();
    let rows = |v: &Vec<String>| u16::try_from(v.len()).unwrap_or(u16::MAX);
    let [list_area, notice_area, help_area, status_area] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(rows(&notice)),
        Constraint::Length(rows(&help)),
        Constraint::Length(rows(&status)),
    ])
    .areas(screen);

    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Todo items ({}) ", state.items.len()));
    if state.items.is_empty() {
        let empty = Paragraph::new(ellipsize(
            "No items yet. Press a to add one.",
            usize::from(list_area.width.saturating_sub(2)),
        ))
        .block(block);
        frame.render_widget(empty, list_area);
    } else {
        // Borders, the highlight symbol and the box take 6 columns.
        let text_cols = usize::from(list_area.width).saturating_sub(8);
        let rows: Vec<ListItem> = state
            .items
            .iter()
            .map(|i| {
                let mark = if i.complete { "[x]" } else { "[ ]" };
                ListItem::new(format!(
                    "{mark} {}",
                    ellipsize(&printable(&i.text), text_cols)
                ))
            })
            .collect();
        let list = List::new(rows)
            .block(block)
            .highlight_symbol("> ")
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut list_state = ListState::default().with_selected(Some(state.selected));
        frame.render_stateful_widget(list, list_area, &mut list_state);
    }

    let lines = |v: Vec<String>| Paragraph::new(v.into_iter().map(Line::from).collect::<Vec<_>>());
    frame.render_widget(lines(notice), notice_area);
    frame.render_widget(lines(help), help_area);
    frame.render_widget(
        lines(status).style(Style::default().add_modifier(Modifier::BOLD)),
        status_area,
    );

    if state.dialog_visible() {
        render_dialog(frame, state, screen);
    }
}

/// The body of the conflict dialog, `inner` columns wide: the headline, and both versions side
/// by side when asked.
fn dialog_body(state: &UiState, conflict: &Conflict, inner: usize) -> Vec<String> {
    let mut body = wrap(&printable(&conflict.headline()), inner);
    if state.show_both {
        let col = inner.saturating_sub(3) / 2;
        let mine = wrap(&printable(&conflict.mine.display()), col);
        let server = wrap(&printable(&conflict.server.display()), col);
        let pad = |s: &str| format!("{s}{}", " ".repeat(col.saturating_sub(width(s))));
        body.push(String::new());
        body.push(format!("{} \u{2502} server", pad("mine")));
        for n in 0..mine.len().max(server.len()) {
            let l = mine.get(n).map_or("", String::as_str);
            let r = server.get(n).map_or("", String::as_str);
            body.push(format!("{} \u{2502} {r}", pad(l)));
        }
    }
    body.push(String::new());
    body
}

fn render_dialog(frame: &mut Frame, state: &UiState, screen: Rect) {
    let Some(conflict) = state.conflicts.first() else {
        return;
    };
    let width_cols = if screen.width < 60 {
        screen.width
    } else {
        (screen.width.saturating_mul(3) / 5).max(60)
    };
    let inner = usize::from(width_cols.saturating_sub(2)).max(1);
    let both = if state.show_both {
        "b hide both"
    } else {
        "b show both"
    };
    let keys = pack(
        &[
            "m keep mine".to_string(),
            "s keep server".to_string(),
            both.to_string(),
            "Esc later".to_string(),
        ],
        inner,
        BAR_LINES_MAX,
    );
    // The keys always show; the body gives up its last lines when the screen is short.
    let body_max = usize::from(screen.height).saturating_sub(2 + keys.len());
    let mut body = dialog_body(state, conflict, inner);
    body.truncate(body_max);
    let mut lines: Vec<Line> = body.into_iter().map(Line::from).collect();
    lines.extend(keys.into_iter().map(Line::from));
    let height = u16::try_from(lines.len() + 2)
        .unwrap_or(u16::MAX)
        .min(screen.height);
    let area = Rect {
        x: screen.x + (screen.width - width_cols) / 2,
        y: screen.y + (screen.height - height) / 2,
        width: width_cols,
        height,
    };
    let title = ellipsize(
        &format!(" Conflict {} of {} ", 1, state.conflicts.len()),
        inner,
    );
    let body = Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(Clear, area);
    frame.render_widget(body, area);
}

/// Runs the terminal UI until the user quits. Syncs at start (the tutorial's
/// `InitLocalStoreAsync`), after every change, on `r`, and in the background on `intervals`.
pub fn run(app: App, rt: &tokio::runtime::Runtime, intervals: Intervals) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, app, rt, intervals);
    // Restore the terminal even when the loop failed; report the loop's error first.
    let restored = ratatui::try_restore();
    result?;
    restored?;
    Ok(())
}

/// Loads items, pending count and conflicts into the state; a local failure is a notice.
fn reload(state: &mut UiState, app: &App, rt: &tokio::runtime::Runtime) {
    let loaded = rt.block_on(async {
        Ok::<_, anyhow::Error>((
            app.items().await?,
            app.pending_operations().await?,
            app.conflicts().await?,
        ))
    });
    match loaded {
        Ok((items, pending, conflicts)) => {
            state.set_items(items);
            state.pending = pending;
            state.set_conflicts(conflicts);
        }
        Err(e) => state.notice = Some(format!("could not read the local store: {e:#}")),
    }
}

/// Background syncs: at most one runs; a request while it runs is remembered and runs next.
struct Syncer {
    tx: mpsc::Sender<SyncReport>,
    rx: mpsc::Receiver<SyncReport>,
    again: bool,
    /// When the next sync runs by itself (`None`: not scheduled, or one runs).
    next: Option<Instant>,
}

impl Syncer {
    fn request(&mut self, state: &mut UiState, app: &App, rt: &tokio::runtime::Runtime) {
        if state.syncing {
            self.again = true;
            return;
        }
        state.syncing = true;
        self.next = None;
        let app = app.clone();
        let tx = self.tx.clone();
        rt.spawn(async move {
            // The receiver only goes away when the UI has quit; nothing left to tell then.
            let _ = tx.send(app.sync_with(ConflictPolicy::Ask).await);
        });
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: App,
    rt: &tokio::runtime::Runtime,
    intervals: Intervals,
) -> anyhow::Result<()> {
    let mut state = UiState::new(app.host());
    state.last_sync = crate::app::load_last_sync(&app.config().data_dir)
        .ok()
        .flatten();
    let mut status = app.sync_status();
    let mut progress = app.sync_progress();
    let mut changes = app.changes();
    // Kept for the loop's life; dropping it (on quit) stops live mode without waiting for a
    // request in flight.
    let live = if intervals.runs_live() {
        let _runtime = rt.enter();
        match app.live(intervals.sync_interval_s) {
            Ok(handle) => Some(handle),
            Err(e) => {
                state.notice = Some(format!("live mode is off: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let mut live_status = live.as_ref().map(|l| l.status());
    reload(&mut state, &app, rt);
    let (tx, rx) = mpsc::channel();
    let mut syncer = Syncer {
        tx,
        rx,
        again: false,
        next: None,
    };
    syncer.request(&mut state, &app, rt);
    loop {
        let mut stale = false;
        if status.has_changed().unwrap_or(false) {
            state.sdk = status.borrow_and_update().clone();
            // A sync action ended (live mode's push or pull included): the queue and the
            // conflicts may have changed.
            stale |= !state.sdk.syncing;
        }
        loop {
            match changes.try_recv() {
                Ok(c) => stale |= c.table.eq_ignore_ascii_case(crate::app::TABLE),
                // Missed some: re-read everything.
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => stale = true,
                Err(_) => break,
            }
        }
        if stale {
            reload(&mut state, &app, rt);
        }
        if let Some(rx) = &mut live_status {
            if rx.has_changed().unwrap_or(false) {
                // One table: its state is live mode's.
                let tables = rx.borrow_and_update().tables.clone();
                state.live = tables
                    .values()
                    .next()
                    .and_then(|s| live_segment(*s, intervals.sync_interval_s));
            }
        }
        if progress.has_changed().unwrap_or(false) {
            state.progress = progress.borrow_and_update().clone();
        }
        terminal.draw(|f| render(f, &state))?;
        if event::poll(Duration::from_millis(UI_POLL_MS))? {
            if let Event::Key(key) = event::read()? {
                let changed = match handle_key(&mut state, key) {
                    Action::None => false,
                    Action::Quit => return Ok(()),
                    Action::Refresh => {
                        syncer.request(&mut state, &app, rt);
                        false
                    }
                    Action::Add(text) => match rt.block_on(app.add(&text)) {
                        Ok(item) => {
                            reload(&mut state, &app, rt);
                            state.select_id(item.id_str());
                            true
                        }
                        Err(e) => {
                            state.notice = Some(format!("could not add the item: {e:#}"));
                            false
                        }
                    },
                    Action::SetComplete { id, complete } => {
                        match rt.block_on(app.set_complete(&id, complete)) {
                            Ok(_) => true,
                            Err(e) => {
                                state.notice = Some(format!("could not update the item: {e:#}"));
                                false
                            }
                        }
                    }
                    Action::Delete { id } => match rt.block_on(app.delete(&id)) {
                        Ok(item) => {
                            state.notice =
                                Some(format!("deleted \u{201c}{}\u{201d}", printable(&item.text)));
                            true
                        }
                        Err(e) => {
                            state.notice = Some(format!("could not delete the item: {e:#}"));
                            false
                        }
                    },
                    Action::Resolve(keep) => match state.conflicts.first().cloned() {
                        Some(conflict) => {
                            state.notice = Some(match rt.block_on(app.resolve(&conflict, keep)) {
                                Ok(done) => done,
                                Err(e) => format!("could not resolve: {e:#}"),
                            });
                            state.show_both = false;
                            true
                        }
                        None => false,
                    },
                };
                if changed {
                    reload(&mut state, &app, rt);
                    syncer.request(&mut state, &app, rt);
                }
            }
        }
        while let Ok(report) = syncer.rx.try_recv() {
            let online = report.reached_server;
            state.sync_finished(report);
            reload(&mut state, &app, rt);
            syncer.next =
                next_sync_in(online, intervals).and_then(|d| Instant::now().checked_add(d));
            if std::mem::take(&mut syncer.again) {
                syncer.request(&mut state, &app, rt);
            }
        }
        if !state.syncing && syncer.next.is_some_and(|t| Instant::now() >= t) {
            syncer.request(&mut state, &app, rt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::SyncFailure;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;
    use tablesync_client::OpKind;

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

    fn conflict(op: &str, mine: &str, server: &str) -> Conflict {
        let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
        Conflict::new(
            op,
            OpKind::Update,
            obj(json!({"id": "1", "text": mine, "complete": true, "version": "a"})),
            obj(json!({"id": "1", "text": server, "complete": false, "version": "b"})),
        )
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

    fn report(reached: bool, failure: Option<SyncFailure>) -> SyncReport {
        SyncReport {
            at: "2026-11-28T17:58:41.000Z".into(),
            server_url: "http://127.0.0.1:8080".into(),
            reached_server: reached,
            pulled: 0,
            failure,
            last_ok_at: None,
        }
    }

    fn state_with_items() -> UiState {
        let mut s = UiState::new("127.0.0.1:8080");
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
        s.pending = 0;
        s.last_sync = Some(report(true, None));
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
            "a add · space done · d delete · r sync · j/k move · q quit"
        );
        assert_eq!(
            rows[7],
            "online — nothing queued · last synced 17:58 UTC · 127.0.0.1:8080"
        );
        // Narrower: the status wraps between its facts instead of being cut.
        let rows = screen(&s, 40, 10);
        assert_eq!(rows[8], "online — nothing queued");
        assert_eq!(rows[9], "last synced 17:58 UTC · 127.0.0.1:8080");
    }

    #[test]
    fn offline_is_a_status_line_state_never_a_dialog() {
        let mut s = state_with_items();
        s.pending = 3;
        s.syncing = true;
        s.sync_finished(report(
            false,
            Some(SyncFailure {
                kind: FailureKind::Offline,
                push_status: Some("CancelledByNetworkError".into()),
                message: "Push failed because of sync errors. You may be offline.".into(),
                summary: "cannot reach 127.0.0.1:8080".into(),
            }),
        ));
        assert!(!s.syncing && !s.dialog_visible());
        let text = screen(&s, 80, 10).join("\n");
        assert!(
            text.contains("offline — 3 changes queued · never synced · 127.0.0.1:8080"),
            "{text}"
        );
        assert!(!text.contains("Push failed"), "{text}");
        assert_eq!(text.matches('┌').count(), 1, "only the list's box: {text}");
        // The SDK's watch wins over the app's own records once it has something to say.
        s.sdk.online = Some(true);
        s.sdk.pending_operations = Some(0);
        let text = screen(&s, 80, 10).join("\n");
        assert!(text.contains("online — nothing queued"), "{text}");
        // A rejected sync names its reason in a few words.
        s.sdk = SyncStatus::default();
        s.sync_finished(report(
            true,
            Some(SyncFailure {
                kind: FailureKind::Rejected,
                push_status: None,
                message: "Pull failed: ...".into(),
                summary: "pull refused: HTTP 500".into(),
            }),
        ));
        let text = screen(&s, 80, 10).join("\n");
        assert!(
            text.contains("sync failed: pull refused: HTTP 500 — 3 changes queued"),
            "{text}"
        );
    }

    #[test]
    fn readable_at_50x12_and_200x50() {
        let mut s = state_with_items();
        s.items.push(item("3", &"long ".repeat(80), false));
        s.pending = 3;
        s.sdk.online = Some(false);
        s.host = crate::text::host_port(&format!("http://127.0.0.1:9/{}", "%20".repeat(200)));
        s.set_conflicts(vec![conflict("op1", &"mine ".repeat(30), "theirs")]);
        s.show_both = true;
        for (w, h) in [(50u16, 12u16), (200, 50)] {
            let rows = screen(&s, w, h);
            let text = rows.join("\n");
            // Every line fits: the backend cuts nothing we did not ellipsize ourselves.
            for r in &rows {
                assert!(width(r) <= usize::from(w), "{r}");
            }
            for needle in [
                "Conflict 1 of 1",
                "m keep mine",
                "s keep server",
                "b hide both",
                "Esc later",
                "mine",
                "server",
                "[ ] theirs",
            ] {
                assert!(text.contains(needle), "{w}x{h}: no {needle:?} in\n{text}");
            }
            assert!(!text.contains("%20"), "{text}");
        }
        // Without the dialog: the whole help and status, the long item ellipsized.
        s.dialog_open = false;
        for (w, h) in [(50u16, 12u16), (200, 50)] {
            let text = screen(&s, w, h).join("\n");
            for needle in [
                "a add",
                "space done",
                "d delete",
                "r sync",
                "c conflicts",
                "j/k move",
                "q quit",
                "offline — 3 changes queued",
                "1 conflict: press c",
                "127.0.0.1:9",
                "[ ] long long",
                "\u{2026}",
            ] {
                assert!(text.contains(needle), "{w}x{h}: no {needle:?} in\n{text}");
            }
        }
        // The input line keeps its end (the cursor) in view.
        s.input = Some(format!("{}END", "x".repeat(100)));
        let rows = screen(&s, 50, 12);
        assert!(
            rows.iter()
                .any(|r| r.starts_with("New item: \u{2026}") && r.ends_with("xEND_")),
            "{rows:?}"
        );
        assert!(
            rows.iter().any(|r| r == "Enter add · Esc cancel"),
            "{rows:?}"
        );
        // Tiny terminals do not panic.
        s.input = None;
        s.dialog_open = true;
        screen(&s, 10, 3);
        screen(&s, 1, 1);
    }

    #[test]
    fn the_dialog_takes_only_its_own_keys() {
        let mut s = state_with_items();
        s.set_conflicts(vec![conflict("op1", "Buy milk", "Buy oat milk")]);
        assert!(s.dialog_visible());
        let text = screen(&s, 80, 20).join("\n");
        assert!(
            text.contains("\u{201c}Buy milk\u{201d} was changed here and on the server."),
            "{text}"
        );
        assert!(!text.contains("Buy oat milk"), "{text}");
        // Show both: side by side.
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('b'))), Action::None);
        let text = screen(&s, 80, 20).join("\n");
        assert!(text.contains("mine"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("[x] Buy milk") && l.contains("│ [ ] Buy oat milk")),
            "{text}"
        );
        // A list key goes to the list underneath.
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('j'))), Action::None);
        assert_eq!(s.selected, 1);
        assert!(s.dialog_visible());
        // Typing: every key goes to the input line, the dialog's letters included.
        handle_key(&mut s, key(KeyCode::Char('a')));
        assert!(!s.dialog_visible());
        for c in "msb q".chars() {
            assert_eq!(handle_key(&mut s, key(KeyCode::Char(c))), Action::None);
        }
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Enter)),
            Action::Add("msb q".into())
        );
        assert!(s.dialog_visible(), "back once the line is done");
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Char('m'))),
            Action::Resolve(Keep::Mine)
        );
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Char('s'))),
            Action::Resolve(Keep::Server)
        );
        // Esc: later. The status line says so; c opens it again.
        assert_eq!(handle_key(&mut s, key(KeyCode::Esc)), Action::None);
        assert!(!s.dialog_visible());
        let text = screen(&s, 80, 20).join("\n");
        assert!(text.contains("press c to resolve it"), "{text}");
        assert!(text.contains("1 conflict: press c"), "{text}");
        // Without the dialog, m and s mean nothing.
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('m'))), Action::None);
        // The same conflict after the next sync does not reopen it; a new one does.
        s.set_conflicts(vec![conflict("op1", "Buy milk", "Buy oat milk")]);
        assert!(!s.dialog_visible());
        handle_key(&mut s, key(KeyCode::Char('c')));
        assert!(s.dialog_visible());
        handle_key(&mut s, key(KeyCode::Esc));
        s.set_conflicts(vec![
            conflict("op1", "Buy milk", "Buy oat milk"),
            conflict("op2", "Walk the dog", "Walk"),
        ]);
        assert!(s.dialog_visible());
        assert!(screen(&s, 80, 20).join("\n").contains("Conflict 1 of 2"));
        s.set_conflicts(Vec::new());
        assert!(!s.dialog_visible());
        handle_key(&mut s, key(KeyCode::Char('c')));
        assert_eq!(s.notice.as_deref(), Some("no conflicts"));
    }

    #[test]
    fn keys_move_toggle_delete_add_refresh_quit() {
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
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Char('d'))),
            Action::Delete { id: "2".into() }
        );
        handle_key(&mut s, key(KeyCode::Char('k')));
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Delete)),
            Action::Delete { id: "1".into() }
        );
        handle_key(&mut s, key(KeyCode::Up));
        assert_eq!(s.selected, 0);
        assert_eq!(handle_key(&mut s, key(KeyCode::Char('r'))), Action::Refresh);

        assert_eq!(handle_key(&mut s, key(KeyCode::Char('a'))), Action::None);
        for c in "Xq dy".chars() {
            assert_eq!(handle_key(&mut s, key(KeyCode::Char(c))), Action::None);
        }
        handle_key(&mut s, key(KeyCode::Backspace));
        assert_eq!(s.input.as_deref(), Some("Xq d"));
        assert_eq!(
            handle_key(&mut s, key(KeyCode::Enter)),
            Action::Add("Xq d".into())
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
        // An Enter read before raw mode is Ctrl-J; other control letters insert nothing.
        s.input = Some("Typed early".into());
        let ctrl = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&mut s, ctrl('x')), Action::None);
        assert_eq!(
            handle_key(&mut s, ctrl('j')),
            Action::Add("Typed early".into())
        );
        s.input = Some(String::new());
        assert_eq!(handle_key(&mut s, ctrl('c')), Action::Quit);

        let mut empty = UiState::new("x");
        assert_eq!(
            handle_key(&mut empty, key(KeyCode::Char(' '))),
            Action::None
        );
        assert_eq!(
            handle_key(&mut empty, key(KeyCode::Char('d'))),
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
