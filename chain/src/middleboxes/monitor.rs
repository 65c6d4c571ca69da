//! The monitor: counts packets, per flow or in counters shared by groups of worker threads
//! (the thesis's sharing level). Every packet is an update transaction; nothing is ever dropped.

use ftc_stm::{Abort, Store, Txn};

use super::packet::{parse, FlowKey, Parsed};
use crate::middlebox::{Ctx, Frame, Middlebox, Verdict};
use crate::spec::{CounterMode, MonitorConfig};

/// Key tags.
const TAG_FLOW: u8 = 1;
const TAG_SHARED: u8 = 2;
const TAG_OTHER: u8 = 3;

/// Counts packets (see [`CounterMode`]). Non-IPv4 and malformed frames count under one "other"
/// counter in both modes and pass unchanged.
#[derive(Debug, Clone)]
pub struct Monitor {
    mode: CounterMode,
    sharing_level: u16,
}

fn flow_key(flow: &FlowKey) -> [u8; 1 + FlowKey::LEN] {
    flow.tagged(TAG_FLOW)
}

fn shared_key(index: u16) -> [u8; 3] {
    let [a, b] = index.to_be_bytes();
    [TAG_SHARED, a, b]
}

fn read_counter(store: &Store, key: &[u8]) -> u64 {
    store
        .get(key)
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Packets counted for `flow` (per-flow mode; the directional 5-tuple as seen on the packets).
pub fn flow_count(store: &Store, flow: &FlowKey) -> u64 {
    read_counter(store, &flow_key(flow))
}

/// Packets counted by shared counter `index` (workers `index * sharing_level ..`).
pub fn shared_count(store: &Store, index: u16) -> u64 {
    read_counter(store, &shared_key(index))
}

/// Non-IPv4 and malformed frames counted.
pub fn other_count(store: &Store) -> u64 {
    read_counter(store, &[TAG_OTHER])
}

impl Monitor {
    pub fn new(config: &MonitorConfig) -> Self {
        Monitor {
            mode: config.counters,
            // A level of 0 would divide by zero; it can only mean "no sharing".
            sharing_level: config.sharing_level.max(1),
        }
    }
}

impl Middlebox for Monitor {
    fn kind(&self) -> &'static str {
        "monitor"
    }

    fn process(
        &self,
        tx: &mut Txn<'_>,
        frame: &mut Frame<'_>,
        ctx: &Ctx,
    ) -> Result<Verdict, Abort> {
        match parse(frame.bytes()) {
            Parsed::Ipv4(p) => match self.mode {
                CounterMode::PerFlow => tx.counter_add(&flow_key(p.flow()), 1)?,
                CounterMode::Shared => {
                    tx.counter_add(&shared_key(ctx.worker / self.sharing_level), 1)?
                }
            },
            Parsed::NotIpv4 | Parsed::Malformed => tx.counter_add(&[TAG_OTHER], 1)?,
        };
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

    fn monitor(mode: CounterMode, sharing_level: u16) -> Monitor {
        Monitor::new(&MonitorConfig {
            counters: mode,
            sharing_level,
        })
    }

    #[test]
    fn per_flow_counts_each_direction_apart() {
        let store = Store::new(16, 1).unwrap();
        let mut w = store.worker(0).unwrap();
        let m = monitor(CounterMode::PerFlow, 1);
        for _ in 0..3 {
            let mut f = tcp_frame(CLIENT, 1234, SERVER, 80, TcpFlags::ACK);
            let before = f.clone();
            assert_eq!(
                run(&mut w, &m, &mut f, ctx(0, 0, Outbound)),
                (Verdict::Forward, LogKind::Update)
            );
            assert_eq!(f, before);
        }
        let mut f = tcp_frame(SERVER, 80, CLIENT, 1234, TcpFlags::ACK);
        run(&mut w, &m, &mut f, ctx(0, 0, Inbound));
        let mut f = arp_frame();
        assert_eq!(
            run(&mut w, &m, &mut f, ctx(0, 0, Inbound)).0,
            Verdict::Forward
        );
        let out = flow(proto::TCP, CLIENT, 1234, SERVER, 80);
        assert_eq!(flow_count(&store, &out), 3);
        assert_eq!(flow_count(&store, &out.reversed()), 1);
        assert_eq!(other_count(&store), 1);
    }

    #[test]
    fn sharing_level_groups_workers() {
        let store = Store::new(16, 4).unwrap();
        let m = monitor(CounterMode::Shared, 2);
        std::thread::scope(|s| {
            for id in 0..4u16 {
                let (store, m) = (&store, &m);
                s.spawn(move || {
                    let mut w = store.worker(id).unwrap();
                    for i in 0..100u16 {
                        let mut f = udp_frame(CLIENT, i, SERVER, 53);
                        run(&mut w, m, &mut f, ctx(id, 0, Outbound));
                    }
                });
            }
        });
        assert_eq!(shared_count(&store, 0), 200);
        assert_eq!(shared_count(&store, 1), 200);
        assert_eq!(shared_count(&store, 2), 0);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn sharing_level_one_means_a_counter_per_worker() {
        let store = Store::new(16, 3).unwrap();
        let m = monitor(CounterMode::Shared, 1);
        for id in 0..3u16 {
            let mut w = store.worker(id).unwrap();
            let mut f = udp_frame(CLIENT, 1, SERVER, 53);
            run(&mut w, &m, &mut f, ctx(id, 0, Outbound));
        }
        for id in 0..3 {
            assert_eq!(shared_count(&store, id), 1);
        }
    }

    #[test]
    fn prefixes_never_panic() {
        assert_prefixes_never_panic(&monitor(CounterMode::PerFlow, 1));
        assert_prefixes_never_panic(&monitor(CounterMode::Shared, 1));
    }
}
