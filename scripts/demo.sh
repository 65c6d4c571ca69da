#!/usr/bin/env bash
# The main job on the embedded default: a chain in one process with traffic and a report.
# Extra arguments go to `ftc demo` (see `ftc demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_xdp_build_packages
exec cargo run --quiet --release --locked -p ftc -- demo "$@"
