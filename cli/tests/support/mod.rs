//! What the `ftc` binary's test files share.

use std::path::PathBuf;

/// The path of a spec in the repository's `specs/`.
pub fn spec(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../specs")
        .join(name)
        .display()
        .to_string()
}
