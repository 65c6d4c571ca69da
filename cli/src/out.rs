//! Writing reports to stdout without panicking: `print!` panics when stdout is a closed pipe
//! (`ftc run … | head -2`) or a full disk. `out!` and `outln!` write through [`fn@write`], which
//! keeps going without the output once stdout fails, so the command still finishes (and stops
//! its nodes); the first failure other than a closed pipe is reported on stderr, and [`failed`]
//! makes the exit status one of failure.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a write to stdout failed.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether anything was written to stdout.
static WROTE: AtomicBool = AtomicBool::new(false);

/// Write `args` to stdout, unless an earlier write failed.
pub fn write(args: fmt::Arguments<'_>) {
    if FAILED.load(Ordering::Relaxed) {
        return;
    }
    WROTE.store(true, Ordering::Relaxed);
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if !FAILED.swap(true, Ordering::Relaxed) && e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("ftc: cannot write the report to stdout: {e}");
        }
    }
}

/// Whether a write to stdout failed (the rest of the output was dropped).
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

/// Whether anything was written to stdout (or tried to be).
pub fn wrote() -> bool {
    WROTE.load(Ordering::Relaxed)
}

/// `print!` through [`fn@write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` through [`fn@write`].
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
