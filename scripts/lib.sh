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

# The Debian packages the AF_XDP transport's build needs (xsk-rs builds libxdp and libbpf from
# C): clang (compiles libxdp's BPF programs; its libclang runs bindgen), llvm (llc), m4
# (libxdp's dispatcher template), the libelf, zlib and libpcap headers, pkg-config and make.
# Installs the missing ones as root; otherwise names them and fails.
need_xdp_build_packages() {
    command -v dpkg-query >/dev/null || return 0 # not Debian: the build names what it lacks
    local wanted=(clang llvm m4 make pkg-config libelf-dev zlib1g-dev libpcap-dev)
    local missing=()
    for p in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$p")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "ftc: the AF_XDP build needs these Debian packages: ${missing[*]}" >&2
        echo "ftc: install them as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "==> installing build packages for AF_XDP (xsk-rs): ${missing[*]}"
    local log
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "ftc: apt-get could not install ${missing[*]}" >&2
        exit 1
    fi
    rm -f "$log"
}
