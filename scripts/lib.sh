# Shared helpers of the scripts: checks for tools and a step runner that names what failed.

step() {
    local name=$1
    shift
    echo "==> $name: $*"
    if ! "$@"; then
        echo "ftc: step '$name' failed: $*" >&2
        exit 1
    fi
}

need_rust_components() {
    command -v cargo >/dev/null || { echo "ftc: cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            rustup component add "$c"
        fi
    done
}
