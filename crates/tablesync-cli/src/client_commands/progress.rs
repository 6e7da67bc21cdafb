//! Progress on stderr while `pull` or `push` runs, drawn only when stderr is a terminal (a
//! script or a pipe sees nothing of it): indicatif, fed by the SDK's `SyncContext::progress`
//! channel. A pull shows pages and rows committed (a spinner: the SDK does not ask the server
//! for a total), a push a bar of operations done out of the queue's length.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tablesync_client::{SyncContext, SyncProgress};

/// How often the display redraws, in milliseconds.
const TICK_MS: u64 = 120;

/// A running progress display; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    feed: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `message` and the context's progress (nothing when stderr is not a
    /// terminal).
    pub fn start(ctx: &SyncContext, message: String) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                feed: None,
            };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.clone());
        bar.enable_steady_tick(Duration::from_millis(TICK_MS));
        let mut progress = ctx.progress();
        let shown = bar.clone();
        let feed = tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                let now = progress.borrow_and_update().clone();
                show(&shown, &message, &now);
            }
        });
        Progress {
            bar,
            feed: Some(feed),
        }
    }

    /// Removes the display.
    pub fn finish(&self) {
        if let Some(feed) = &self.feed {
            feed.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// Draws one progress report.
fn show(bar: &ProgressBar, message: &str, now: &SyncProgress) {
    match now {
        SyncProgress::Pull {
            table,
            pages,
            rows,
            total_rows,
        } => {
            let of = total_rows.map(|t| format!(" of {t}")).unwrap_or_default();
            bar.set_message(format!(
                "pulling {table}: {rows}{of} row(s), {pages} page(s)"
            ));
        }
        SyncProgress::Push { done, total } => {
            if bar.length() != Some(*total) {
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} operation(s) ({elapsed})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_length(*total);
                bar.set_message("pushing");
            }
            bar.set_position(*done);
        }
        _ => bar.set_message(message.to_string()),
    }
}

/// While a pull or push runs: the first Ctrl-C asks the SDK to stop at its next checkpoint
/// (the store stays consistent and the action resumes when run again); a second one ends the
/// process at once (SQLite's journal keeps the file consistent even then). Abort the returned
/// task when the action is over.
pub fn cancel_on_ctrl_c(ctx: &SyncContext) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    // Listen here, before the action starts: `tokio::signal::ctrl_c()` binds only when first
    // polled, and the spawned task may first run after the pull's request is out, leaving a
    // Ctrl-C in that gap to the default action (the process killed, no message).
    let mut interrupts = Interrupts::listen();
    tokio::spawn(async move {
        if !interrupts.next().await {
            return;
        }
        ctx.cancel_sync();
        super::output::note(
            "stopping after the page or operation in flight (Ctrl-C again to quit now)",
        );
        if interrupts.next().await {
            std::process::exit(130);
        }
    })
}

/// Ctrl-C presses, listened for from the moment this is made.
struct Interrupts {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn listen() -> Self {
        Interrupts {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    /// The next Ctrl-C; false when none can be heard.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            match &mut self.signal {
                Some(signal) => signal.recv().await.is_some(),
                None => false,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}
