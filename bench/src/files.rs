//! The files of `--out DIR`: `results.json`, and per experiment `EXPERIMENT.md` and
//! `EXPERIMENT.svg`. Each file is written whole to a temporary file in `DIR` and renamed over
//! the old one, so that a run killed while writing leaves the old file, not half of the new
//! one; the tables and plots of experiments that `results.json` does not list (an earlier run's)
//! are removed.

use std::path::{Path, PathBuf};

use crate::experiment::Experiment;
use crate::results::Results;
use crate::{markdown, plot, BenchError};

/// The extensions of an experiment's files.
const PER_EXPERIMENT: [&str; 2] = ["md", "svg"];

/// Write `results` under `dir` (created if missing), and remove the files of experiments it
/// does not hold; the paths written.
pub fn write(dir: &Path, results: &Results) -> Result<Vec<PathBuf>, BenchError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let put = |name: String, text: &str| {
        let path = dir.join(&name);
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temporary);
                failed(&path)(e)
            })?;
        Ok::<_, BenchError>(path)
    };
    let mut written = vec![put(
        "results.json".into(),
        &serde_json::to_string_pretty(results)?,
    )?];
    for info in &results.experiments {
        let name = info.experiment.name();
        written.push(put(
            format!("{name}.md"),
            &markdown::experiment(results, info),
        )?);
        written.push(put(
            format!("{name}.svg"),
            &plot::experiment(results, info)?,
        )?);
    }
    let stale = Experiment::ALL
        .into_iter()
        .filter(|&e| !results.experiments.iter().any(|i| i.experiment == e))
        .flat_map(|e| PER_EXPERIMENT.map(|ext| dir.join(format!("{}.{ext}", e.name()))));
    for path in stale {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(&path)(e)),
            _ => {}
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ExperimentInfo;
    use ftc_node::ftmb::SnapshotKind;

    fn results(experiments: &[Experiment]) -> Results {
        Results {
            machine: "test".into(),
            transport: "mem",
            quick: true,
            rounds: 1,
            duration_s: 0.1,
            download_mb: None,
            connections: None,
            snapshot: SnapshotKind::Real,
            experiments: experiments.iter().map(|&e| ExperimentInfo::of(e)).collect(),
            points: Vec::new(),
        }
    }

    /// A second run into the same folder: its files only, every table and plot one of an
    /// experiment `results.json` lists, no temporary file left.
    #[test]
    fn a_second_run_leaves_no_files_of_the_first() {
        let dir = std::env::temp_dir().join(format!("ftc-bench-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            &results(&[Experiment::Sharing, Experiment::NatThreads]),
        )
        .unwrap();
        std::fs::write(dir.join("notes.md"), "mine").unwrap();
        let written = write(&dir, &results(&[Experiment::ChainLength])).unwrap();
        assert_eq!(written.len(), 3);

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        let listed: Vec<&str> = json["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["experiment"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ["chain-length"]);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "chain-length.md",
                "chain-length.svg",
                "notes.md",
                "results.json"
            ],
            "another experiment's files or a temporary file left; files not ftc bench's kept"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
