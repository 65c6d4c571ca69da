#!/usr/bin/env bash
# The figures of issue 5 in the namespace lab over AF_XDP (needs root, a release build):
#   1. a plain forwarding chain (specs/forward.toml in NF mode: servers that only move frames),
#      flat out: the ceiling of this machine's links and runtime;
#   2. per chain (Ch-2 … Ch-5, Ch-Rec): FTC and NF flat out (throughput, FTC/NF), then both paced
#      at half of FTC's flat-out rate, with the round-trip probe: p50/p99 round trips and the
#      latency FTC adds per middlebox, (p50 FTC − p50 NF) / (2 × middleboxes), since a round
#      trip crosses every middlebox twice. The paced runs take PACED_ROUNDS (default 3) rounds
#      per mode and report the medians: one run's p50 moves by tens of µs on this VM.
# Each run downloads SIZE_MB (default 200) MB with curl, CONNECTIONS (default 1) times at once,
# each over a TCP connection of its own; FTC and NF runs alternate. One connection's pace is
# bound by its window over the chain's round trip; several load the chain as many flows do.
#
#   sudo [CONNECTIONS=N] scripts/lab-figures.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-200}
rounds=${PACED_ROUNDS:-3}
connections=${CONNECTIONS:-1}
ftc=target/release/ftc
[ -x "$ftc" ] || cargo build --release -p ftc
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# demo SPEC NAME [ARGS…]: one download; its JSON report in $out/NAME.json.
demo() {
    local spec=$1 name=$2
    shift 2
    "$ftc" lab demo "$spec" --name ftcfig --size-mb "$size" --connections "$connections" \
        --heartbeat-ms 50 --json "$@" \
        >"$out/$name.json" 2>>"$out/stderr.log" || {
        echo "ftc lab demo $spec $*: failed (see below)" >&2
        tail -20 "$out/stderr.log" >&2
        exit 1
    }
}

field() { python3 -c "import json,sys; r=json.load(open('$out/$1.json')); print($2)"; }

demo specs/forward.toml fwd --mode nf
echo "plain forwarding (specs/forward.toml, NF, 3 servers): $(field fwd "f\"{r['throughput_mbit_s']:.0f} Mbit/s, {r['frames_per_s']:.0f} frames/s, RTT p50 {r['rtt_us']['p50']:.0f} µs\"")"
echo
echo "Downloads of $size MB, $connections at once."
echo "Flat out: means of 2 runs per mode. Paced at half of FTC's flat-out rate: medians of $rounds runs per mode."
echo
echo "| chain | FTC Mbit/s | NF Mbit/s | FTC/NF | paced at | FTC RTT p50/p99 µs | NF RTT p50/p99 µs | added per middlebox µs |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for chain in ch-2 ch-3 ch-4 ch-5 ch-rec; do
    spec=specs/$chain.toml
    k=$(grep -c '^\[\[middlebox\]\]' "$spec")
    demo "$spec" ftc1 --no-kill
    demo "$spec" nf1 --mode nf
    demo "$spec" ftc2 --no-kill
    demo "$spec" nf2 --mode nf
    read -r ftc_mbit nf_mbit < <(python3 - "$out" <<'EOF'
import json, sys, statistics as st
d = sys.argv[1]
get = lambda n: json.load(open(f"{d}/{n}.json"))["throughput_mbit_s"]
print(st.mean([get("ftc1"), get("ftc2")]), st.mean([get("nf1"), get("nf2")]))
EOF
)
    half=$(python3 -c "print(round($ftc_mbit / 2, 1))")
    for r in $(seq "$rounds"); do
        demo "$spec" "ftch$r" --no-kill --rate-mbit "$half"
        demo "$spec" "nfh$r" --mode nf --rate-mbit "$half"
    done
    python3 - "$out" "$chain" "$k" "$rounds" "$ftc_mbit" "$nf_mbit" "$half" <<'EOF'
import json, sys, statistics as st
d, chain, k, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ftc, nf, half = map(float, sys.argv[5:])
rtt = lambda n: [json.load(open(f"{d}/{n}{r}.json"))["rtt_us"] for r in range(1, rounds + 1)]
median = lambda runs, q: st.median(run[q] for run in runs)
f = {q: median(rtt("ftch"), q) for q in ("p50", "p99")}
n = {q: median(rtt("nfh"), q) for q in ("p50", "p99")}
added = (f["p50"] - n["p50"]) / (2 * k)
print(f"| {chain} | {ftc:.0f} | {nf:.0f} | {ftc / nf:.2f} | {half:.0f} Mbit/s | "
      f"{f['p50']:.0f} / {f['p99']:.0f} | {n['p50']:.0f} / {n['p99']:.0f} | {added:.1f} |")
EOF
done
