//! Progress on stderr while `pull` or `push` runs: an indicatif spinner with the elapsed time,
//! drawn only when stderr is a terminal (a script or a pipe sees nothing of it).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often the spinner redraws, in milliseconds.
const TICK_MS: u64 = 120;

/// A running progress display; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Starts showing `message` (hidden when stderr is not a terminal).
    pub fn start(message: String) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(TICK_MS));
        Progress { bar }
    }

    /// Removes the display.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
