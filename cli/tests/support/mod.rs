//! What the `ftc` binary's test files share (each uses part of it).
#![allow(dead_code)]

use std::path::PathBuf;

/// The path of a spec in the repository's `specs/`.
pub fn spec(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(name)
        .display()
        .to_string()
}

/// A file in the temp dir, removed when dropped.
pub struct Temp(pub PathBuf);

impl Temp {
    pub fn new(name: &str, text: &str) -> Temp {
        let path = std::env::temp_dir().join(format!("ftc-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Temp(path)
    }

    /// Its path, as an argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Ch-Rec with two threads (lanes) per middlebox, in a file `name` of its own.
pub fn two_lanes(name: &str) -> Temp {
    let text = std::fs::read_to_string(spec("ch-rec.toml"))
        .unwrap()
        .replace("[[middlebox]]\n", "[[middlebox]]\nthreads = 2\n");
    Temp::new(name, &text)
}
