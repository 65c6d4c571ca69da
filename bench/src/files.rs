//! The files of `--out DIR`: `results.json`, and per experiment `EXPERIMENT.md` and
//! `EXPERIMENT.svg`.

use std::path::{Path, PathBuf};

use crate::results::Results;
use crate::{markdown, plot, BenchError};

/// Write `results` under `dir` (created if missing); the paths written.
pub fn write(dir: &Path, results: &Results) -> Result<Vec<PathBuf>, BenchError> {
    let put = |name: String, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<_, BenchError>(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
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
    Ok(written)
}
