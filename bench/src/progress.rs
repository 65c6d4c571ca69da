//! A progress bar on stderr for long benchmark runs (drawn only when stderr is a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// Runs done out of the runs planned, and the one under way.
#[derive(Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `runs` runs.
    pub fn new(runs: u64) -> Self {
        let bar = ProgressBar::new(runs);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs, {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Progress(bar)
    }

    /// Run `f`, shown as `what` while it runs, then count it done.
    pub fn run<T>(&self, what: String, f: impl FnOnce() -> T) -> T {
        self.0.set_message(what);
        let out = f();
        self.0.inc(1);
        out
    }

    /// Count `runs` planned runs done that will not be made (their point was given up).
    pub fn skip(&self, runs: usize) {
        self.0.inc(runs as u64);
    }

    /// Runs done so far.
    #[cfg(test)]
    pub fn done(&self) -> u64 {
        self.0.position()
    }

    /// Clear the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
