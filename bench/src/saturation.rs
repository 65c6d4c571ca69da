//! The 100% of an experiment's offered loads (`latency-load`): FTC's flat-out rate on its
//! chain, measured by calibration runs just before its first load. A calibration that is no
//! measure (a run failed, a run's checks found violations, or a rate is not above zero) is
//! refused: the experiment's loads are not offered, and why is among its violations.

use crate::results::ExperimentInfo;
use crate::stats::median;

/// One calibration run: its rates per second (in memory packets; in a lab bytes and frames)
/// and what its checks found, or why it failed.
pub type Calibration<const N: usize> = Result<([f64; N], Vec<String>), String>;

/// Each rate's median over `runs`; refused, with the reasons, when a run failed or found
/// violations, or a median is not above zero.
pub fn of<const N: usize>(runs: Vec<Calibration<N>>) -> Result<[f64; N], Vec<String>> {
    let (mut rates, mut why) = (Vec::new(), Vec::new());
    for run in runs {
        match run {
            Ok((r, violations)) => {
                rates.push(r);
                why.extend(violations);
            }
            Err(e) => why.push(e),
        }
    }
    if !why.is_empty() {
        return Err(why);
    }
    let mut saturation = [0.0; N];
    for (i, s) in saturation.iter_mut().enumerate() {
        *s = median(&rates.iter().map(|r| r[i]).collect::<Vec<_>>())
            .filter(|&m| m > 0.0)
            .ok_or_else(|| vec!["no traffic went through the chain".to_string()])?;
    }
    Ok(saturation)
}

/// The rate offered at `load`, a fraction of `saturation`: whole units per second, one at
/// least (a rate limit of 0 reads as none).
pub fn offered(saturation: f64, load: f64) -> u64 {
    (saturation * load).round().max(1.0) as u64
}

/// An experiment's saturation: measured at the first load that needs it, then kept.
#[derive(Debug, Default)]
pub struct Saturation<const N: usize>(Option<Option<[f64; N]>>);

impl<const N: usize> Saturation<N> {
    /// The rates, from the runs `calibrate` makes the first time; `None` where they were
    /// refused, whose reasons go to `info`'s violations once.
    pub fn get(
        &mut self,
        info: &mut ExperimentInfo,
        calibrate: impl FnOnce() -> Vec<Calibration<N>>,
    ) -> Option<[f64; N]> {
        *self.0.get_or_insert_with(|| match of(calibrate()) {
            Ok(rates) => Some(rates),
            Err(why) => {
                info.violations.extend(why.into_iter().map(|w| {
                    format!("the saturation measured before the loads: {w}; no load was offered")
                }));
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Experiment;

    fn ran(rates: [f64; 2]) -> Calibration<2> {
        Ok((rates, Vec::new()))
    }

    #[test]
    fn the_medians_of_clean_runs_are_the_saturation() {
        let runs = vec![ran([300.0, 3.0]), ran([100.0, 1.0]), ran([200.0, 2.0])];
        assert_eq!(of(runs), Ok([200.0, 2.0]));
        assert_eq!(offered(200.0, 0.25), 50);
        assert_eq!(offered(3.0, 0.1), 1, "never a rate limit of 0");
    }

    /// A failed lab download, one with violations, or one that carried nothing is no
    /// saturation: no load is offered, instead of a rate of 1 byte/s (or 0, no limit at all).
    #[test]
    fn a_failed_saturation_offers_no_load() {
        let failed = of(vec![
            ran([300.0, 3.0]),
            Err("the lab run failed: curl".into()),
        ]);
        assert_eq!(failed, Err(vec!["the lab run failed: curl".to_string()]));
        let violated = of(vec![Ok(([300.0, 3.0], vec!["5 of 20 MB".to_string()]))]);
        assert_eq!(violated, Err(vec!["5 of 20 MB".to_string()]));
        assert!(of(vec![ran([0.0, 0.0])]).is_err());
        assert!(of::<1>(vec![]).is_err());

        let mut info = ExperimentInfo::of(Experiment::LatencyLoad);
        let mut saturation = Saturation::default();
        let mut calibrations = 0;
        for _ in 0..3 {
            let got = saturation.get(&mut info, || {
                calibrations += 1;
                vec![Err::<([f64; 2], _), _>("the lab run failed: curl".into())]
            });
            assert_eq!(got, None);
        }
        assert_eq!(calibrations, 1, "measured once per experiment");
        assert_eq!(info.violations.len(), 1, "{:?}", info.violations);
        assert!(info.violations[0].contains("the lab run failed: curl"));
    }
}
