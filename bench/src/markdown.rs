//! An experiment's results as a Markdown section: how it was measured, its notes, and a table
//! with a row per point: each mode's medians and FTC's ratios over the baselines, or the
//! recovery phases.

use std::fmt::Write;

use ftc_node::ftmb::{FtmbConfig, SnapshotKind};
use ftc_node::Mode;
use serde_json::Value;

use crate::experiment::Headline;
use crate::results::{ExperimentInfo, PointResult, Results, SATURATED_BELOW};
use crate::stats::{mode_name, Ratios};

/// `info`'s section of `results`.
pub fn experiment(results: &Results, info: &ExperimentInfo) -> String {
    let e = info.experiment;
    let points: Vec<&PointResult> = results.points_of(e).collect();
    let mut out = format!("## {}: {}\n\n", e.name(), info.title);
    let how = match results.download_mb {
        None => format!(
            "Transport: in-memory; every server is a thread of one process on this machine; \
             CPU µs/pkt is the process's CPU time per packet released. {} round(s) of {:.2} s \
             per mode and point",
            results.rounds, results.duration_s
        ),
        Some(mb) => format!(
            "Transport: AF_XDP in a namespace lab; every server is an `ftc node` process in its \
             own network namespace, veth links between them. Traffic: {} through the chain \
             (curl from python3's http.server); throughput is the frames the \
             chain delivered per second (data and acknowledgements), latency the round trips of \
             a TCP echo probe during the download (each crosses every middlebox twice), CPU \
             µs/pkt the whole machine's CPU time per frame delivered. {} round(s) per mode and \
             point",
            match results.connections.unwrap_or(1) {
                1 => format!("a {mb} MB TCP download"),
                n => format!(
                    "{n} downloads of {mb} MB at once, each over a TCP connection of its own"
                ),
            },
            results.rounds
        ),
    };
    let snapshot = match results.snapshot {
        SnapshotKind::Real => "a real copy of each master's store".to_string(),
        stall @ SnapshotKind::Stall(_) => {
            format!("a fixed stall ({stall}, as the thesis simulates them)")
        }
    };
    let _ = writeln!(
        out,
        "Machine: {}. {how}, modes alternated; medians. FTMB+snapshot's snapshot: {snapshot}, \
         every {} ms.{}\n",
        results.machine,
        FtmbConfig::default().snapshot_every.as_millis(),
        if results.quick { " Quick run." } else { "" }
    );
    for note in info.notes {
        let _ = writeln!(out, "- {note}");
    }
    if let Some(s) = info.saturation_pps {
        let what = match results.download_mb {
            None => "packets/s",
            Some(_) => "frames/s of FTC's flat-out download",
        };
        let _ = writeln!(out, "- Saturation (100% load): {s:.0} {what}.");
    }
    out.push('\n');
    let keys: Vec<String> = points
        .first()
        .map(|p| p.params.keys().cloned().collect())
        .unwrap_or_default();
    match e.headline() {
        Headline::Recovery => recovery_table(&mut out, &keys, &points),
        h => modes_table(&mut out, &keys, &points, h),
    }
    let saturation = info.violations.iter().map(|v| format!("- {v}"));
    let violations: Vec<String> = saturation
        .chain(
            points
                .iter()
                .flat_map(|p| p.violations().map(move |v| format!("- {}: {v}", p.label))),
        )
        .collect();
    if !violations.is_empty() {
        let _ = writeln!(out, "\nViolations:\n\n{}", violations.join("\n"));
    }
    out
}

/// A row's first cells: the point's parameters.
fn param_cells(keys: &[String], p: &PointResult) -> Vec<String> {
    keys.iter()
        .map(|k| match p.params.get(k) {
            None | Some(Value::Null) => "—".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        })
        .collect()
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn header(out: &mut String, cells: &[String]) {
    row(out, cells);
    row(out, &vec!["---".to_string(); cells.len()]);
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.decimals$}"))
}

/// Throughput and latency per mode, and FTC's ratios of `headline`.
fn modes_table(out: &mut String, keys: &[String], points: &[&PointResult], headline: Headline) {
    let modes: Vec<String> = Mode::ALL
        .iter()
        .map(|&m| mode_name(m))
        .filter(|m| points.iter().any(|p| p.modes.contains_key(m)))
        .collect();
    let of = if headline == Headline::P99Latency {
        "p99 "
    } else {
        ""
    };
    // What a packet cost the machine, where the runs measured it.
    let cpu = points
        .iter()
        .any(|p| p.modes.values().any(|f| f.cpu_us_per_packet.is_some()));
    let mut cells = keys.to_vec();
    cells.extend(modes.iter().map(|m| format!("{m} kpps")));
    cells.extend(modes.iter().map(|m| format!("{m} p50/p99 µs")));
    if cpu {
        cells.extend(modes.iter().map(|m| format!("{m} CPU µs/pkt")));
    }
    cells.extend(
        ["FTC/NF", "FTC/FTMB", "FTC/FTMB+snap"]
            .iter()
            .map(|r| format!("{of}{r}")),
    );
    header(out, &cells);
    let mut saturated = false;
    for p in points {
        let mut cells = param_cells(keys, p);
        // A saturated mode's figures, marked.
        let mark = |m: &String, cell: String| match p.modes.get(m).and_then(|f| f.saturated) {
            Some(true) => format!("{cell} (sat.)"),
            _ => cell,
        };
        saturated |= p.modes.values().any(|f| f.saturated == Some(true));
        cells.extend(modes.iter().map(|m| {
            let kpps = p.modes.get(m).and_then(|f| f.throughput_pps);
            mark(m, opt(kpps.map(|t| t / 1e3), 1))
        }));
        cells.extend(modes.iter().map(|m| {
            let latency = match p.modes.get(m).and_then(|f| f.latency_us) {
                Some(l) => format!("{:.1} / {:.1}", l.p50, l.p99),
                None => "—".to_string(),
            };
            mark(m, latency)
        }));
        if cpu {
            cells.extend(
                modes
                    .iter()
                    .map(|m| opt(p.modes.get(m).and_then(|f| f.cpu_us_per_packet), 2)),
            );
        }
        let r: &Ratios = if headline == Headline::P99Latency {
            &p.p99_ratios
        } else {
            &p.ratios
        };
        cells.extend([r.ftc_over_nf, r.ftc_over_ftmb, r.ftc_over_ftmb_snapshot].map(|v| opt(v, 2)));
        row(out, &cells);
    }
    if saturated {
        let _ = writeln!(
            out,
            "\n(sat.): saturated, the mode carried less than {:.0}% of the load offered.",
            SATURATED_BELOW * 100.0
        );
    }
}

/// The recovery phases per point.
fn recovery_table(out: &mut String, keys: &[String], points: &[&PointResult]) {
    let mut cells = keys.to_vec();
    cells.extend(
        [
            "detection ms",
            "start ms",
            "transfer ms",
            "reroute ms",
            "total ms",
            "state bytes",
            "recovered runs",
            "other recoveries",
            "packets lost",
        ]
        .map(String::from),
    );
    header(out, &cells);
    for p in points {
        let Some(r) = &p.recovery else { continue };
        let mut cells = param_cells(keys, p);
        cells.extend([
            opt(r.detection_ms, 2),
            opt(r.start_ms, 2),
            opt(r.transfer_ms, 2),
            opt(r.reroute_ms, 2),
            opt(r.total_ms, 2),
            opt(r.bytes, 0),
            format!(
                "{}/{}",
                r.runs.iter().filter(|r| r.recovery.is_some()).count(),
                r.runs.len()
            ),
            r.runs
                .iter()
                .map(|r| r.other_recoveries.len().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            r.runs
                .iter()
                .map(|r| r.packets_lost.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ]);
        row(out, &cells);
    }
}

#[cfg(test)]
mod tests {
    use ftc_node::ftmb::SnapshotKind;
    use ftc_node::runtime::RunReport;
    use ftc_node::Mode;

    use super::*;
    use crate::experiment::{Experiment, SATURATED};
    use crate::results::Run;
    use crate::Settings;

    /// A mode that fell behind the load offered is marked in its row, and the table says what
    /// the mark means.
    #[test]
    fn saturated_modes_are_marked() {
        let settings = Settings::new(true, None, None);
        let point = &Experiment::LatencyLoad.points(&settings).unwrap()[0];
        let mut result = PointResult::empty(point);
        let run = |pps: f64| {
            Run::Measured(RunReport {
                throughput_pps: pps,
                ..RunReport::default()
            })
        };
        result.compare(
            &[Mode::Ftc, Mode::Ftmb],
            &[vec![run(1000.0)], vec![run(400.0)]],
        );
        result.offered(1000.0);
        let results = Results {
            machine: "test".into(),
            transport: "mem",
            quick: true,
            rounds: 1,
            duration_s: 0.3,
            download_mb: None,
            connections: None,
            snapshot: SnapshotKind::Real,
            experiments: vec![ExperimentInfo::of(Experiment::LatencyLoad)],
            points: vec![result],
        };
        let md = experiment(&results, &results.experiments[0]);
        let row = md.lines().find(|l| l.starts_with("| 0.25 |")).unwrap();
        assert!(
            row.contains("| 1.0 | 0.4 (sat.) | 0.0 / 0.0 | 0.0 / 0.0 (sat.) |"),
            "{row}"
        );
        assert!(md.contains("(sat.): saturated"), "{md}");
        assert!(md.contains(SATURATED), "{md}");
        assert!(SATURATED.contains(&format!("{:.0}%", SATURATED_BELOW * 100.0)));
    }
}
