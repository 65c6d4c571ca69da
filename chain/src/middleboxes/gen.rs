//! Gen, the synthetic middlebox of the thesis's state-size experiments: every packet writes
//! `state_size` bytes of state derived from the packet.

use ftc_stm::{key_hash, Abort, Store, Txn};

use super::packet::{parse, FlowKey, Parsed};
use crate::middlebox::{Ctx, Frame, Middlebox, Verdict};
use crate::spec::GenConfig;

/// Key tags.
const TAG_FLOW: u8 = 1;
const TAG_FRAME: u8 = 2;

/// Writes `state_size` bytes per packet under its flow's key (IPv4), or under a hash of the
/// whole frame (non-IPv4, which it also writes for). The value is the flow's packet count so
/// far (u64, little-endian, cut to `state_size` when smaller) followed by the frame's bytes,
/// repeated as needed. Malformed IPv4 frames are dropped.
#[derive(Debug, Clone)]
pub struct Gen {
    state_size: usize,
}

const COUNT_LEN: usize = 8;

fn flow_key(flow: &FlowKey) -> [u8; 1 + FlowKey::LEN] {
    flow.tagged(TAG_FLOW)
}

/// The state Gen holds for `flow`, if any.
pub fn flow_state(store: &Store, flow: &FlowKey) -> Option<Vec<u8>> {
    store.get(&flow_key(flow))
}

impl Gen {
    pub fn new(config: &GenConfig) -> Self {
        Gen {
            state_size: config.state_size as usize,
        }
    }

    fn write(&self, tx: &mut Txn<'_>, key: &[u8], frame: &[u8]) -> Result<(), Abort> {
        let count = tx
            .read(key)?
            .and_then(|v| v.get(..COUNT_LEN))
            .and_then(|v| v.try_into().ok())
            .map_or(0, u64::from_le_bytes)
            .wrapping_add(1);
        tx.write_with(key, self.state_size, |out| {
            let n = out.len().min(COUNT_LEN);
            out[..n].copy_from_slice(&count.to_le_bytes()[..n]);
            // The frame repeated, a slice at a time (byte by byte, 128 bytes of state cost Gen
            // itself several hundred instructions per packet).
            if !frame.is_empty() {
                for chunk in out[n..].chunks_mut(frame.len()) {
                    chunk.copy_from_slice(&frame[..chunk.len()]);
                }
            }
        })
    }
}

impl Middlebox for Gen {
    fn kind(&self) -> &'static str {
        "gen"
    }

    fn process(&self, tx: &mut Txn<'_>, frame: &mut Frame<'_>, _: &Ctx) -> Result<Verdict, Abort> {
        let bytes = frame.bytes();
        match parse(bytes) {
            Parsed::Ipv4(p) => self.write(tx, &flow_key(p.flow()), bytes)?,
            Parsed::NotIpv4 => {
                let [a, b, c, d, e, f, g, h] = key_hash(bytes).to_be_bytes();
                self.write(tx, &[TAG_FRAME, a, b, c, d, e, f, g, h], bytes)?
            }
            Parsed::Malformed => return Ok(Verdict::Drop),
        }
        Ok(Verdict::Forward)
    }
}

#[cfg(test)]
mod tests {
    use ftc_stm::LogKind;

    use super::*;
    use crate::middlebox::Direction::*;
    use crate::middleboxes::packet::{proto, TcpFlags};
    use crate::middleboxes::testutil::*;

    #[test]
    fn writes_state_size_bytes_per_packet() {
        for size in [0u32, 4, 8, 64, 1500] {
            let store = Store::new(16, 1).unwrap();
            let mut w = store.worker(0).unwrap();
            let g = Gen::new(&GenConfig { state_size: size });
            for _ in 0..2 {
                let mut f = tcp_frame(CLIENT, 1, SERVER, 2, TcpFlags::ACK);
                let before = f.clone();
                assert_eq!(
                    run(&mut w, &g, &mut f, ctx(0, 0, Outbound)),
                    (Verdict::Forward, LogKind::Update)
                );
                assert_eq!(f, before);
            }
            let v = flow_state(&store, &flow(proto::TCP, CLIENT, 1, SERVER, 2)).unwrap();
            assert_eq!(v.len(), size as usize);
            if size >= 8 {
                assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), 2);
            }
            let mut f = arp_frame();
            assert_eq!(
                run(&mut w, &g, &mut f, ctx(0, 0, Outbound)),
                (Verdict::Forward, LogKind::Update)
            );
            assert_eq!(store.len(), 2);
        }
    }

    #[test]
    fn prefixes_never_panic() {
        assert_prefixes_never_panic(&Gen::new(&GenConfig { state_size: 64 }));
    }
}
