//! The runner's arithmetic, free of I/O: the alternating order of runs, medians, and the
//! FTC-over-baseline ratios taken from the medians.

use std::collections::BTreeMap;

use ftc_node::Mode;

/// Measure every mode `rounds` times in alternation, A B C A B C …, so that drift of the
/// machine (other load, frequency, caches) spreads over the modes alike; each mode's
/// measurements, in the order of `modes`.
pub fn alternate<T>(
    modes: &[Mode],
    rounds: usize,
    mut measure: impl FnMut(Mode) -> T,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = modes.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for _ in 0..rounds {
        for (i, &mode) in modes.iter().enumerate() {
            out[i].push(measure(mode));
        }
    }
    out
}

/// The median (the mean of the middle two for an even count); `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `a / b`, when both were measured and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The name a mode goes by in the output (`ftc`, `nf`, `ftmb`, `ftmb-snapshot`).
pub fn mode_name(mode: Mode) -> String {
    mode.name().to_string()
}

/// FTC's figure over each baseline's (`null` where a mode was not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Ratios {
    pub ftc_over_nf: Option<f64>,
    pub ftc_over_ftmb: Option<f64>,
    pub ftc_over_ftmb_snapshot: Option<f64>,
}

impl Ratios {
    /// The ratios of the medians `medians` (by mode name).
    pub fn of(medians: &BTreeMap<String, f64>) -> Self {
        let get = |m: Mode| medians.get(&mode_name(m)).copied();
        let ftc = get(Mode::Ftc);
        Ratios {
            ftc_over_nf: ratio(ftc, get(Mode::Nf)),
            ftc_over_ftmb: ratio(ftc, get(Mode::Ftmb)),
            ftc_over_ftmb_snapshot: ratio(ftc, get(Mode::FtmbSnapshot)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_alternate_round_by_round() {
        let mut order = Vec::new();
        let modes = [Mode::Ftc, Mode::Nf, Mode::Ftmb];
        let mut n = 0;
        let got = alternate(&modes, 3, |m| {
            order.push(m);
            n += 1;
            n
        });
        assert_eq!(
            order,
            [modes, modes, modes].concat(),
            "A B C A B C A B C, not A A A B B B"
        );
        assert_eq!(got, vec![vec![1, 4, 7], vec![2, 5, 8], vec![3, 6, 9]]);
        assert!(alternate(&modes, 0, |_| ()).iter().all(Vec::is_empty));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn ratios_come_from_the_medians_and_are_null_where_a_mode_is_missing() {
        let medians: BTreeMap<String, f64> = [("ftc", 90.0), ("nf", 100.0), ("ftmb", 60.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let r = Ratios::of(&medians);
        assert_eq!(r.ftc_over_nf, Some(0.9));
        assert_eq!(r.ftc_over_ftmb, Some(1.5));
        assert_eq!(r.ftc_over_ftmb_snapshot, None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(mode_name(Mode::FtmbSnapshot), "ftmb-snapshot");
        for mode in Mode::ALL {
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                mode.name(),
                "as it serializes"
            );
        }
    }
}
