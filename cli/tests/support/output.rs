//! Running the `ftc` binary for a test and taking what it said (for the test files that check
//! its output; `#[path]`-included so that the others do not carry it unused).

use std::process::Command;

/// `ftc ARGS…`: its exit code, standard output and standard error.
pub fn ftc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ftc"))
        .args(args)
        .output()
        .expect("ftc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
