//! Progress bars (indicatif) that can be silenced globally (`--quiet`) and draw only on a terminal.
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences (or re-enables) every progress bar of the process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A progress bar that is a no-op when disabled.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `len` steps with a message; hidden when `enabled` is false or `--quiet` is set.
    pub fn bar(enabled: bool, len: u64, msg: &str) -> Self {
        if !enabled || QUIET.load(Ordering::Relaxed) {
            return Progress(None);
        }
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {percent}% ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(msg.to_string());
        Progress(Some(pb))
    }
    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }
    /// Finishes and clears the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}
