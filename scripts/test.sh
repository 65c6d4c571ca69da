#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests, model checks.
# Works on a fresh Debian machine with only the Rust toolchain; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
# One build from scratch gains nothing from incremental caches (1.4 GB of disk), so CI keeps none.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
need_rust_components
need_xdp_build_packages
need_lab_tools
need_debian_packages "the fuzz targets' build (libFuzzer is C++)" g++

step "format" cargo fmt --all --check
step "format (fuzz targets)" cargo fmt --manifest-path fuzz/Cargo.toml --check
step "lints" cargo clippy --workspace --all-targets --locked -- -D warnings
step "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# The fuzz targets run on nightly (cargo-fuzz); CI stays on stable and checks that they build.
step "lints (fuzz targets)" cargo clippy --manifest-path fuzz/Cargo.toml --bins --locked -- -D warnings
step "lints (model-checking build)" cargo clippy -p ftc-stm --features shuttle --all-targets --locked -- -D warnings
step "tests" cargo test --workspace --locked
step "model checks (shuttle)" cargo test -p ftc-stm --features shuttle --test shuttle_locks --locked
echo "ftc: all checks passed"
