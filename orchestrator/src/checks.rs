//! Checks of a chain's state after a run with failures (DESIGN.md §10), shared by the launchers
//! that inject them (threads, processes).

use ftc_chain::middlebox::Middlebox;

/// Every packet released went through every monitor: the counters of each monitor's state,
/// recovered or not, add up to at least the packets released. `values(i)` is the value of every
/// entry of middlebox i's (head) state. Adds a violation per monitor that counted fewer.
pub fn check_monitors(
    middleboxes: &[Box<dyn Middlebox>],
    values: impl Fn(usize) -> Vec<Vec<u8>>,
    released: u64,
    violations: &mut Vec<String>,
) {
    for (i, mb) in middleboxes.iter().enumerate() {
        if mb.kind() != "monitor" {
            continue;
        }
        let counted: u64 = values(i)
            .iter()
            .filter_map(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
            .sum();
        if counted < released {
            violations.push(format!(
                "m{i} monitor counted {counted} packets in its recovered state, fewer than the {released} released"
            ));
        }
    }
}
