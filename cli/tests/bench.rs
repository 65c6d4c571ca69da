//! `ftc bench` (issue 6, item 2): the JSON keys other tools rely on, the files of `--out`, and
//! clear refusals of what it cannot do. Timings are never asserted on.

#[path = "support/output.rs"]
mod output;
use output::ftc;

#[test]
fn quick_json_run_has_the_documented_keys_and_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("ftc-bench-test-{}", std::process::id()));
    let (code, out, err) = ftc(&[
        "bench",
        "nat-threads",
        "--quick",
        "--json",
        "--out",
        &dir.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out}"));
    assert_eq!(r["transport"], "mem");
    let points = r["points"].as_array().expect("a points list");
    assert_eq!(points.len(), 2, "1 and 2 threads");
    for (p, threads) in points.iter().zip([1, 2]) {
        assert_eq!(p["experiment"], "nat-threads");
        assert_eq!(p["headline"], "ratios", "of throughput");
        assert_eq!(p["params"]["threads"], threads);
        // FTMB's master runs as many lanes as FTC's head.
        for mode in ["ftc", "nf", "ftmb", "ftmb-snapshot"] {
            let m = &p["modes"][mode];
            assert!(m["throughput_pps"].as_f64().unwrap() > 0.0, "{mode}: {m}");
            assert!(m["latency_us"]["p50"].is_number() && m["latency_us"]["p99"].is_number());
            assert!(
                m["cpu_us_per_packet"].as_f64().unwrap() > 0.0,
                "{mode}: {m}"
            );
        }
        assert!(p["ratios"]["ftc_over_nf"].as_f64().unwrap() > 0.0, "{p}");
        for key in ["ftc_over_ftmb", "ftc_over_ftmb_snapshot"] {
            assert!(p["ratios"][key].as_f64().unwrap() > 0.0, "{key}: {p}");
        }
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&read("results.json")).unwrap();
    assert_eq!(json["points"].as_array().map(Vec::len), Some(points.len()));
    let md = read("nat-threads.md");
    assert!(md.contains("| threads |") && md.contains("FTC/NF"), "{md}");
    assert!(md.contains("ftc CPU µs/pkt"), "{md}");
    let svg = read("nat-threads.svg");
    assert!(
        svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `--snapshot stall-6ms` runs FTMB+snapshot the thesis's way: each snapshot stands the master
/// still 6 ms (the runs report it), and the tables say which snapshots were run.
#[test]
fn snapshot_stall_is_the_thesis_method_and_the_tables_say_so() {
    let (code, out, err) = ftc(&[
        "bench",
        "chain-length",
        "--quick",
        "--duration",
        "0.2",
        "--snapshot",
        "stall-6ms",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["snapshot"], "stall-6ms");
    let points = r["points"].as_array().unwrap();
    assert!(!points.is_empty());
    for p in points {
        // Snapshots every 50 ms in 0.2 s: each master stood still at least once.
        let stall = p["modes"]["ftmb-snapshot"]["snapshot_stall_us"].as_f64();
        assert!(stall.is_some_and(|us| us >= 6_000.0), "{p}");
        assert!(p["modes"]["ftmb"]["snapshot_stall_us"].is_null(), "{p}");
    }

    let (code, out, err) = ftc(&["bench", "chain-length", "--quick", "--duration", "0.1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("FTMB+snapshot's snapshot: a real copy of each master's store, every 50 ms"),
        "{out}"
    );
    let (code, _, err) = ftc(&["bench", "chain-length", "--snapshot", "stall"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("stall-<N>ms"), "{err}");
}

#[test]
fn what_it_cannot_do_is_refused_clearly() {
    // Bad input: status 2, as for clap's usage errors (1 is a violation found).
    let (code, _, err) = ftc(&["bench", "latency"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown experiment `latency`") && err.contains("latency-load"),
        "{err}"
    );

    for (flag, value) in [
        ("--rounds", "0"),
        ("--duration", "0"),
        ("--heartbeat-ms", "0"),
    ] {
        let (code, _, err) = ftc(&["bench", "sharing", flag, value]);
        assert_eq!(code, 2);
        assert!(err.contains(flag), "{err}");
    }
    let (code, _, err) = ftc(&["bench", "sharing", "--rounds", "many"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("--rounds"), "{err}");

    // Snapshots every 50 ms: a stall that long or longer leaves FTMB+snapshot no time to run,
    // as `ftc run` refuses it.
    for stall in ["stall-50ms", "stall-60ms"] {
        let (code, out, err) = ftc(&["bench", "sharing", "--quick", "--snapshot", stall]);
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(out.is_empty(), "refused before any run: {out}");
        assert!(
            err.contains("every 50 ms leaves the masters no time to run")
                && err.contains("shorter than the snapshots' period"),
            "{err}"
        );
    }
}
