//! An experiment's plot as SVG (plotters' SVG backend, which writes text as SVG `<text>` and
//! needs no system fonts): each mode's median throughput or p99 latency per point, or the
//! recovery phases per point.

use ftc_node::Mode;
use plotters::prelude::*;

use crate::experiment::Headline;
use crate::results::{ExperimentInfo, PointResult, Results};
use crate::stats::mode_name;
use crate::BenchError;

/// Lines over the points: a name and a value per point (`None`: not measured).
type Series = (String, Vec<Option<f64>>);

/// `info`'s plot of `results`.
pub fn experiment(results: &Results, info: &ExperimentInfo) -> Result<String, BenchError> {
    let e = info.experiment;
    let points: Vec<&PointResult> = results.points_of(e).collect();
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let (y_desc, series) = match e.headline() {
        Headline::Recovery => {
            let phase = |name: &str, f: fn(&crate::results::RecoveryFigures) -> Option<f64>| {
                let values = points
                    .iter()
                    .map(|p| p.recovery.as_ref().and_then(f))
                    .collect();
                (name.to_string(), values)
            };
            (
                "milliseconds (median)",
                vec![
                    phase("detection", |r| r.detection_ms),
                    phase("start", |r| r.start_ms),
                    phase("transfer", |r| r.transfer_ms),
                    phase("reroute", |r| r.reroute_ms),
                    phase("total", |r| r.total_ms),
                ],
            )
        }
        headline => {
            let value = |f: &crate::results::ModeFigures| match headline {
                Headline::P99Latency => f.latency_us.map(|l| l.p99),
                _ => f.throughput_pps.map(|t| t / 1e3),
            };
            let series = Mode::ALL
                .iter()
                .map(|&m| mode_name(m))
                .filter(|m| points.iter().any(|p| p.modes.contains_key(m)))
                .map(|m| {
                    let values = points
                        .iter()
                        .map(|p| p.modes.get(&m).and_then(value))
                        .collect();
                    (m, values)
                })
                .collect();
            let desc = match headline {
                Headline::P99Latency => "p99 latency, µs (median)",
                _ => "throughput, kpps (median)",
            };
            (desc, series)
        }
    };
    let title = format!("{}: {}", e.name(), info.title);
    draw(&title, &labels, y_desc, &series).map_err(|message| BenchError::Plot {
        experiment: e.name(),
        message,
    })
}

/// A line chart of `series` over the categories `labels`.
fn draw(title: &str, labels: &[String], y_desc: &str, series: &[Series]) -> Result<String, String> {
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let n = labels.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)
            .map_err(|e| e.to_string())?;
        let category = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&category)
            .y_desc(y_desc)
            .disable_x_mesh()
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, values)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let xy: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .filter_map(|(x, v)| v.map(|v| (x as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `svg` is one `<svg>` element whose tags all close in order (a small XML check:
    /// no comments, CDATA or `>` inside attribute values in what plotters writes).
    fn well_formed(svg: &str) -> bool {
        let svg = svg.trim();
        if !svg.starts_with("<svg") || !svg.ends_with("</svg>") {
            return false;
        }
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let Some(len) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + len];
            rest = &rest[start + len + 1..];
            let name = |t: &str| t.split_whitespace().next().unwrap_or("").to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                if open.pop() != Some(closing.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') && !tag.starts_with('?') {
                let n = name(tag);
                let Some(pos) = tag.find(n.as_str()) else {
                    return false;
                };
                open.push(&tag[pos..pos + n.len()]);
            }
        }
        open.is_empty()
    }

    #[test]
    fn plots_are_well_formed_svg_with_gaps_and_empty_series() {
        let labels = vec!["Ch-2".to_string(), "Ch-5".to_string(), "f = 4".to_string()];
        let series = vec![
            ("ftc".to_string(), vec![Some(100.0), None, Some(80.0)]),
            ("nf".to_string(), vec![None, None, None]),
        ];
        let svg = draw("chain-length: a title", &labels, "kpps", &series).unwrap();
        assert!(well_formed(&svg), "{svg}");
        assert!(svg.contains("Ch-5") && svg.contains("ftc"));
        assert!(!well_formed("<svg><g></svg>"));
        assert!(!well_formed("<svg><g></g>"));
    }
}
