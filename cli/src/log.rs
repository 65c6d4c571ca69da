//! Log lines on stderr: a minimal `tracing` subscriber (events only, no spans) for the
//! processes of a chain, each line tagged with the process's role and pid. `FTC_LOG` sets the
//! most verbose level shown (`error`, `warn`, `info`, `debug`, `trace`; default `warn`). A
//! node's stats lines, logged only when asked for (`ftc node --stats-every`), show whatever it
//! says.

use std::fmt::Write as _;
use std::io::Write as _;

use ftc_orchestrator::process::tally::STATS_TARGET;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Debug)]
struct Stderr {
    max: Level,
    role: &'static str,
}

/// The fields of an event as `message key=value …`.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = match field.name() {
            "message" => write!(self.0, "{value:?}"),
            name => write!(self.0, "{name}={value:?}"),
        };
    }
}

impl Subscriber for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max || metadata.target() == STATS_TARGET
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // Stats lines are at `info`.
        let max = self.max.max(Level::INFO);
        Some(tracing::level_filters::LevelFilter::from_level(max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let level = event.metadata().level();
        let line = format!(
            "ftc {} [{}] {level}: {}\n",
            self.role,
            std::process::id(),
            line.0
        );
        // One write per line, so that the lines of a chain's processes do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Show log events of `FTC_LOG`'s level and above on stderr, as `role`.
pub fn init(role: &'static str) {
    let max = match std::env::var("FTC_LOG") {
        Ok(level) => level.parse().unwrap_or_else(|_| {
            eprintln!(
                "ftc: warning: FTC_LOG={level:?} is not a level (error, warn, info, debug, \
                 trace): showing warn and above"
            );
            Level::WARN
        }),
        Err(_) => Level::WARN,
    };
    let _ = tracing::subscriber::set_global_default(Stderr { max, role });
}
