//! What the runtime's end-to-end tests share: the repository's specs, and the check that a run
//! released every packet it sent.

use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::RunReport;

/// `specs/NAME` of this repository.
pub fn spec(name: &str) -> ChainSpec {
    ChainSpec::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../specs")
            .join(name),
    )
    .unwrap()
}

/// `r` found nothing wrong, released more than 100 packets, and released every packet it sent.
pub fn assert_all_released(r: &RunReport, what: &str) {
    assert_eq!(r.violations, Vec::<String>::new(), "{what}");
    assert!(
        r.packets_released > 100,
        "{what}: {} released",
        r.packets_released
    );
    assert_eq!(
        r.packets_released, r.packets_sent,
        "{what}: nothing dropped"
    );
}
