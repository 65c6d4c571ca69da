//! What a deployment of a chain is made of in each mode: the positions the orchestrator deploys
//! and watches, the position where customer frames leave, and whether failures are recovered.
//! FTC and NF run one server per ring position (DESIGN.md §3: f + 1 at least; NF's servers
//! without a middlebox pass frames on, so that both leave at the same link); the FTMB baselines
//! two per middlebox ([`ftc_node::ftmb`]: the logger of middlebox i at 2i, its master at 2i+1),
//! with customer frames leaving at the last logger.

use ftc_chain::ring::{Ring, RingError, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_node::Mode;

/// A deployment's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The positions, as the ring the coordinator deploys and watches: the chain's own ring for
    /// FTC and NF; for FTMB a ring of 2k positions, which only numbers them (an FTMB server
    /// replicates nothing of its neighbours').
    pub positions: Ring,
    /// Where customer frames enter the chain (always position 0).
    pub entry: ServerId,
    /// Where customer frames leave the chain.
    pub exit: ServerId,
    /// Whether a failed server is recovered: only FTC keeps the replicas that recover it.
    pub recover: bool,
}

/// A chain the mode cannot deploy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undeployable {
    #[error("the FTMB baseline runs two servers per middlebox: at most {} middleboxes, not {k}", Ring::MAX_MIDDLEBOXES / 2)]
    FtmbTooLong { k: usize },
}

impl Shape {
    /// The deployment of `spec` in `mode`.
    pub fn of(spec: &ChainSpec, mode: Mode) -> Result<Shape, Undeployable> {
        let ring = spec.ring();
        if mode.is_ftmb() {
            let k = ring.middleboxes();
            let positions = Ring::new(2 * k, 1).map_err(|e: RingError| {
                debug_assert!(matches!(e, RingError::TooManyMiddleboxes(_)));
                Undeployable::FtmbTooLong { k }
            })?;
            return Ok(Shape {
                positions,
                entry: ServerId(0),
                exit: ServerId((2 * k - 2) as u16),
                recover: false,
            });
        }
        Ok(Shape {
            positions: ring,
            entry: ring.forwarder(),
            exit: ring.buffer(),
            recover: mode == Mode::Ftc,
        })
    }

    /// How many servers the deployment runs.
    pub fn servers(&self) -> usize {
        self.positions.servers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(k: usize, f: usize) -> ChainSpec {
        let mut text = format!("[chain]\nname = \"c\"\nf = {f}\n");
        for _ in 0..k {
            text.push_str("\n[[middlebox]]\nkind = \"monitor\"\n");
        }
        ChainSpec::from_toml_str(&text, "test").unwrap()
    }

    #[test]
    fn ftc_and_nf_run_the_ring_ftmb_twice_the_middleboxes() {
        let ch3 = spec(3, 1);
        let ftc = Shape::of(&ch3, Mode::Ftc).unwrap();
        assert_eq!(
            (ftc.servers(), ftc.exit, ftc.recover),
            (3, ServerId(2), true)
        );
        let nf = Shape::of(&ch3, Mode::Nf).unwrap();
        assert_eq!((nf.servers(), nf.exit, nf.recover), (3, ServerId(2), false));
        for mode in [Mode::Ftmb, Mode::FtmbSnapshot] {
            let ftmb = Shape::of(&ch3, mode).unwrap();
            assert_eq!(
                (ftmb.servers(), ftmb.entry, ftmb.exit, ftmb.recover),
                (6, ServerId(0), ServerId(4), false)
            );
        }
        // A chain shorter than f+1 has replica-only servers in FTC, none in FTMB.
        let short = spec(1, 2);
        assert_eq!(Shape::of(&short, Mode::Ftc).unwrap().servers(), 3);
        assert_eq!(Shape::of(&short, Mode::Ftmb).unwrap().servers(), 2);
        assert_eq!(
            Shape::of(&spec(128, 1), Mode::Ftmb),
            Err(Undeployable::FtmbTooLong { k: 128 })
        );
        // NF deploys FTC's servers, its exit at the same one.
        let nf = Shape::of(&short, Mode::Nf).unwrap();
        assert_eq!((nf.servers(), nf.exit), (3, ServerId(2)));
        assert!(Shape::of(&spec(127, 1), Mode::Ftmb).is_ok());
    }
}
