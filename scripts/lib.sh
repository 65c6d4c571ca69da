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

# need_debian_packages PURPOSE PACKAGE…: installs the missing Debian packages as root; otherwise
# names them and fails. Does nothing where there is no dpkg (not Debian).
need_debian_packages() {
    local purpose=$1
    shift
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$p")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "ftc: $purpose needs these Debian packages: ${missing[*]}" >&2
        echo "ftc: install them as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "==> installing packages for $purpose: ${missing[*]}"
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

# The tools of the network-namespace lab (`ftc lab`, its tests): ip, sysctl, ethtool, and the
# unmodified HTTP server and client of `ftc lab demo` (python3's http.server, curl). Only as
# root: as another user the lab tests skip themselves.
need_lab_tools() {
    [ "$(id -u)" -eq 0 ] || return 0
    need_debian_packages "the network-namespace lab" iproute2 procps ethtool python3 curl
}

# The Debian packages the AF_XDP transport's build needs (xsk-rs builds libxdp and libbpf from
# C): clang (compiles libxdp's BPF programs; its libclang runs bindgen), llvm (llc), m4
# (libxdp's dispatcher template), the libelf, zlib and libpcap headers, pkg-config and make.
need_xdp_build_packages() {
    need_debian_packages "the AF_XDP build (xsk-rs)" clang llvm m4 make pkg-config libelf-dev zlib1g-dev libpcap-dev
}
