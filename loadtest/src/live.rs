//! Progress on stderr while a run goes: an indicatif bar when stderr is a terminal, plain
//! lines otherwise (a log file or a pipe should not fill with redraws).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::protocol::Progress;

/// How progress is shown.
pub enum Live {
    /// Connections established out of those planned, with the elapsed time; notes print
    /// above the bar.
    Bar(ProgressBar),
    /// The caller prints a progress line about once a second; notes are lines too.
    Lines,
}

impl Live {
    /// A bar if stderr is a terminal, else plain lines.
    pub fn new(connections: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Live::Lines;
        }
        let bar = ProgressBar::with_draw_target(Some(connections), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} established {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        // Redraws even while no event arrives, so the elapsed time keeps moving.
        bar.enable_steady_tick(Duration::from_millis(200));
        Live::Bar(bar)
    }

    pub fn is_bar(&self) -> bool {
        matches!(self, Live::Bar(_))
    }

    /// A line for people, above the bar if there is one.
    pub fn note(&self, line: &str) {
        match self {
            Live::Bar(bar) => bar.println(line),
            Live::Lines => eprintln!("{line}"),
        }
    }

    /// The latest totals, shown on the bar (plain lines are printed by the caller).
    pub fn update(&self, progress: &Progress) {
        let Live::Bar(bar) = self else { return };
        bar.set_position(progress.established);
        let mut message = format!("· {} failed", progress.failed);
        if progress.messages > 0 {
            message += &format!(" · {} echoes", progress.messages);
        }
        bar.set_message(message);
    }

    /// Leaves the bar's last state on screen and stops redrawing it.
    pub fn finish(&self) {
        if let Live::Bar(bar) = self {
            bar.finish();
        }
    }
}
