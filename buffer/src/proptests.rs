//! Property test: random frames through the buffer, output commit and per-flow order checked after every step.
//!
//! Heads are modelled per wrapping group as a dependency vector V (DESIGN §5): each log takes
//! D[p] = V[p] for the partitions it touches and an update bumps them, as a real head does.
//! Commit vectors never exceed V (no tail can commit what no head produced) but arrive stale,
//! duplicated, in data or propagating frames or on the incoming message. A bounded buffer refuses
//! packets; the modelled driver retries them in order.

use std::collections::{HashMap, VecDeque};

use ftc_chain::ring::Ring;
use ftc_chain::wire::{CvRepr, LogRepr, MessageView};
use ftc_stm::LogKind;
use proptest::prelude::*;

use crate::check::{cv, encode, log, view, Oracle};
use crate::{Buffer, BufferConfig, Packet};

const P: u16 = 4;

#[derive(Debug, Clone)]
enum Step {
    /// A data frame of `flow` whose message holds `logs` (group selector, update?, partition
    /// mask) and maybe a commit vector.
    Data {
        flow: u8,
        len: u16,
        logs: Vec<(u8, bool, u8)>,
        cv: Option<(u8, Vec<(u16, u8)>)>,
    },
    /// A propagating frame with one commit vector (group selector, (partition, lag) entries);
    /// `incoming`: given as server n−1's incoming message instead.
    Cvs {
        group: u8,
        entries: Vec<(u16, u8)>,
        incoming: bool,
    },
    /// Retry the oldest refused packet.
    Retry,
}

fn entries() -> impl Strategy<Value = Vec<(u16, u8)>> {
    proptest::collection::btree_map(0..P, 0u8..3, 1..=P as usize)
        .prop_map(|m| m.into_iter().collect())
}

fn step() -> impl Strategy<Value = (Step, bool)> {
    let data = (
        0u8..4,
        1u16..120,
        proptest::collection::vec((0u8..8, any::<bool>(), 1u8..16), 0..3),
        proptest::option::of((0u8..8, entries())),
    )
        .prop_map(|(flow, len, logs, cv)| Step::Data {
            flow,
            len,
            logs,
            cv,
        });
    let cvs = (0u8..8, entries(), any::<bool>()).prop_map(|(group, entries, incoming)| Step::Cvs {
        group,
        entries,
        incoming,
    });
    let step = prop_oneof![5 => data, 3 => cvs, 1 => Just(Step::Retry)];
    // Most steps drain poll_release right after, so a release is checked against the vectors
    // known when it was decided; some leave ready packets unpolled.
    (step, proptest::bool::weighted(0.8))
}

struct Harness {
    buffer: Buffer<u64>,
    oracle: Oracle,
    /// V of each wrapping group's head.
    heads: Vec<[u64; P as usize]>,
    wrapping: Vec<u8>,
    frames: HashMap<u64, Vec<u8>>,
    /// Per flow: accepted-order expectation = first-offer order.
    expected: HashMap<u64, VecDeque<u64>>,
    refused: VecDeque<Packet<u64>>,
    next_id: u64,
    now: u64,
    /// Encoded wrapping logs in the order frames were handled, and as returned.
    logs_in: Vec<Vec<u8>>,
    logs_out: Vec<Vec<u8>>,
}

impl Harness {
    fn new(ring: Ring, config: BufferConfig) -> Self {
        let wrapping: Vec<u8> = ring.wrapping_groups().map(|j| j.0).collect();
        Harness {
            buffer: Buffer::new(ring, u32::from(P), config),
            oracle: Oracle::new(ring, P as usize),
            heads: vec![[0; P as usize]; wrapping.len()],
            wrapping,
            frames: HashMap::new(),
            expected: HashMap::new(),
            refused: VecDeque::new(),
            next_id: 0,
            now: 0,
            logs_in: Vec::new(),
            logs_out: Vec::new(),
        }
    }

    fn cv_of(&self, sel: u8, entries: &[(u16, u8)]) -> CvRepr {
        let g = usize::from(sel) % self.wrapping.len();
        let e: Vec<(u16, u64)> = entries
            .iter()
            .map(|&(p, lag)| {
                (
                    p,
                    self.heads[g][usize::from(p)].saturating_sub(u64::from(lag)),
                )
            })
            .collect();
        cv(self.wrapping[g], &e)
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        self.now += 10;
        match step {
            Step::Data {
                flow,
                len,
                logs,
                cv,
            } => {
                let mut reprs: Vec<LogRepr> = Vec::new();
                if !self.wrapping.is_empty() {
                    for &(sel, update, mask) in logs {
                        let g = usize::from(sel) % self.wrapping.len();
                        let deps: Vec<(u16, u64)> = (0..P)
                            .filter(|p| mask & (1 << p) != 0)
                            .map(|p| (p, self.heads[g][usize::from(p)]))
                            .collect();
                        let kind = if update {
                            for &(p, _) in &deps {
                                self.heads[g][usize::from(p)] += 1;
                            }
                            LogKind::Update
                        } else {
                            LogKind::ReadOnly
                        };
                        reprs.push(log(self.wrapping[g], kind, &deps));
                    }
                }
                let cvs = match cv {
                    Some((sel, e)) if !self.wrapping.is_empty() => vec![self.cv_of(*sel, e)],
                    _ => vec![],
                };
                let bytes = encode(reprs, cvs);
                let msg = view(&bytes);
                // Only update logs go back: read-only ones replicate nothing.
                self.logs_in.extend(
                    msg.logs()
                        .filter(|l| l.kind() == LogKind::Update)
                        .map(|l| l.as_bytes().to_vec()),
                );
                self.oracle.saw(&msg);
                let id = self.next_id;
                self.next_id += 1;
                let flow = u64::from(*flow);
                self.expected.entry(flow).or_default().push_back(id);
                let packet = Packet {
                    flow,
                    len: usize::from(*len),
                    handle: id,
                };
                if let Err(r) = self.buffer.handle_frame(self.now, &msg, Some(packet)) {
                    prop_assert_eq!(r.0.handle, id, "the refused packet comes back whole");
                    self.refused.push_back(r.0);
                }
                self.frames.insert(id, bytes);
            }
            Step::Cvs {
                group,
                entries,
                incoming,
            } => {
                if self.wrapping.is_empty() {
                    return Ok(());
                }
                let bytes = encode(vec![], vec![self.cv_of(*group, entries)]);
                let msg = view(&bytes);
                self.oracle.saw(&msg);
                if *incoming {
                    self.buffer.handle_incoming_cvs(&msg);
                } else {
                    prop_assert!(self.buffer.handle_frame(self.now, &msg, None).is_ok());
                }
            }
            Step::Retry => {
                self.retry_one();
            }
        }
        Ok(())
    }

    /// Retries the oldest refused packet; false if it was refused again (or none).
    fn retry_one(&mut self) -> bool {
        let Some(packet) = self.refused.pop_front() else {
            return false;
        };
        let bytes = self.frames[&packet.handle].clone();
        match self.buffer.retry(self.now, &view(&bytes), packet) {
            Ok(()) => true,
            Err(r) => {
                self.refused.push_front(r.0);
                false
            }
        }
    }

    /// Drains poll_release, checking output commit and per-flow order for each release, and
    /// poll_return.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(r) = self.buffer.poll_release(self.now) {
            let msg = view(&self.frames[&r.handle]);
            if let Err(e) = self.oracle.check_release(&msg) {
                return Err(TestCaseError::fail(format!("packet {}: {e}", r.handle)));
            }
            let queue = self.expected.get_mut(&r.flow).expect("known flow");
            prop_assert_eq!(queue.pop_front(), Some(r.handle), "per-flow order");
        }
        let mut out = [0u8; 160];
        while let Some(n) = self
            .buffer
            .poll_return(self.now, &mut out)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            prop_assert!(n <= out.len());
            let m = MessageView::new_checked(&out[..n]).expect("valid return message");
            self.logs_out
                .extend(m.logs().map(|l| l.as_bytes().to_vec()));
        }
        let s = self.buffer.stats();
        prop_assert!(s.held_packets <= self.buffer.config().max_held_packets);
        prop_assert!(s.held_bytes <= self.buffer.config().max_held_bytes);
        Ok(())
    }

    /// A commit vector covering everything, then every refused packet retried: all released.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        if !self.wrapping.is_empty() {
            let cvs: Vec<CvRepr> = (0..self.wrapping.len())
                .map(|g| {
                    let e: Vec<(u16, u64)> =
                        (0..P).map(|p| (p, self.heads[g][usize::from(p)])).collect();
                    cv(self.wrapping[g], &e)
                })
                .collect();
            let bytes = encode(vec![], cvs);
            self.oracle.saw(&view(&bytes));
            prop_assert!(self
                .buffer
                .handle_frame(self.now, &view(&bytes), None)
                .is_ok());
        }
        self.drain()?;
        while !self.refused.is_empty() {
            prop_assert!(
                self.retry_one(),
                "covered packets must be taken once room is made"
            );
            self.drain()?;
        }
        for (flow, q) in &self.expected {
            prop_assert!(q.is_empty(), "flow {} never released {:?}", flow, q);
        }
        let s = self.buffer.stats();
        prop_assert_eq!((s.held_packets, s.held_bytes), (0, 0));
        prop_assert_eq!(s.released, self.next_id);
        prop_assert_eq!(
            &self.logs_out,
            &self.logs_in,
            "return path: in order, none lost"
        );
        Ok(())
    }
}

fn ring() -> impl Strategy<Value = Ring> {
    prop_oneof![
        Just(Ring::new(3, 1).unwrap()),
        Just(Ring::new(3, 2).unwrap()),
        Just(Ring::new(5, 2).unwrap()),
        Just(Ring::new(2, 1).unwrap()),
        Just(Ring::new(1, 2).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// §4.4.1 output commit and per-flow order after every step; §4.4.1 liveness at the end.
    #[test]
    fn output_commit_order_and_liveness(
        ring in ring(),
        max_packets in 1usize..6,
        max_bytes in 120usize..600,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let config = BufferConfig { max_held_packets: max_packets, max_held_bytes: max_bytes, ..BufferConfig::default() };
        let mut h = Harness::new(ring, config);
        for (step, poll) in &steps {
            h.step(step)?;
            if *poll {
                h.drain()?;
            }
        }
        h.finish()?;
    }
}
