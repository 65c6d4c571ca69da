//! The in-memory generator's bursts: packets for an ingress of several lanes leave in bursts of
//! [`BURST`] per lane, so that a lane that went to sleep between packets takes many per wake-up
//! instead of costing the generator a wake-up (a system call) for nearly every packet.

use crossbeam_channel::Sender;

use crate::lanes::lane_of;
use crate::serve::Msg;
use crate::Packet;

/// Packets queued per lane before they are sent.
pub const BURST: usize = 16;

/// An ingress lane gone for good (the run is ending); what waited is dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

/// Packets generated and not yet sent, per lane of the ingress, and how many went out.
#[derive(Debug, Default)]
pub struct Bursts {
    pending: Vec<Vec<Packet<u64>>>,
    sent: u64,
}

impl Bursts {
    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends `packet` to its lane of `ingress`: at once where there is one lane, else once its
    /// lane has [`BURST`] packets waiting. A flow's packets keep their order.
    pub fn push(&mut self, ingress: &[Sender<Msg>], packet: Packet<u64>) -> Result<(), Gone> {
        if ingress.len() <= 1 && self.pending.iter().all(Vec::is_empty) {
            return self.send(ingress, 0, packet);
        }
        if self.pending.len() != ingress.len() {
            self.spread(ingress.len());
        }
        let lane = lane_of(packet.flow, ingress.len());
        self.pending[lane].push(packet);
        match self.pending[lane].len() >= BURST {
            true => self.send_lanes(ingress, lane..lane + 1),
            false => Ok(()),
        }
    }

    /// Sends every packet waiting (before the generator waits, and at its end).
    pub fn flush(&mut self, ingress: &[Sender<Msg>]) -> Result<(), Gone> {
        if self.pending.iter().all(Vec::is_empty) {
            return Ok(());
        }
        if self.pending.len() != ingress.len() {
            self.spread(ingress.len());
        }
        self.send_lanes(ingress, 0..self.pending.len())
    }

    /// Lays the waiting packets out again over `lanes` lanes (a recovery changed the ingress).
    fn spread(&mut self, lanes: usize) {
        let waiting: Vec<_> = self.pending.drain(..).flatten().collect();
        self.pending = (0..lanes).map(|_| Vec::with_capacity(BURST)).collect();
        for p in waiting {
            self.pending[lane_of(p.flow, lanes)].push(p);
        }
    }

    /// Sends what waits for `lanes`; on a lane gone, drops everything waiting.
    fn send_lanes(
        &mut self,
        ingress: &[Sender<Msg>],
        lanes: std::ops::Range<usize>,
    ) -> Result<(), Gone> {
        for lane in lanes {
            let waiting = std::mem::take(&mut self.pending[lane]);
            for p in waiting {
                if let Err(gone) = self.send(ingress, lane, p) {
                    self.pending.clear();
                    return Err(gone);
                }
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        ingress: &[Sender<Msg>],
        lane: usize,
        packet: Packet<u64>,
    ) -> Result<(), Gone> {
        let tx = ingress.get(lane).ok_or(Gone)?;
        tx.send(Msg::Ingress(packet)).map_err(|_| Gone)?;
        self.sent += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_chain::middlebox::Direction;

    fn packet(flow: u64, handle: u64) -> Packet<u64> {
        Packet {
            handle,
            flow,
            dir: Direction::Outbound,
            bytes: Vec::new(),
        }
    }

    fn taken(rx: &crossbeam_channel::Receiver<Msg>) -> Vec<(u64, u64)> {
        rx.try_iter()
            .map(|m| match m {
                Msg::Ingress(p) => (p.flow, p.handle),
                _ => panic!("only packets are sent"),
            })
            .collect()
    }

    #[test]
    fn one_lane_sends_at_once() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = Bursts::default();
        assert_eq!(b.push(&[tx], packet(7, 1)), Ok(()));
        assert_eq!(b.sent(), 1);
        assert_eq!(taken(&rx), [(7, 1)]);
    }

    #[test]
    fn several_lanes_send_full_bursts_then_the_rest_on_flush_in_flow_order() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| crossbeam_channel::unbounded()).unzip();
        let mut b = Bursts::default();
        let mut h = 0;
        for _ in 0..10 {
            for flow in 0..8 {
                h += 1;
                b.push(&txs, packet(flow, h)).unwrap();
            }
        }
        let early = b.sent() as usize;
        assert_eq!(early, rxs.iter().map(|rx| rx.len()).sum::<usize>());
        // 8 flows on 4 lanes: some lane has 2 of them, 20 packets, so a burst went.
        assert!(early >= BURST, "a lane filled a burst and sent it");
        assert_eq!(early % BURST, 0, "only full bursts before the flush");
        b.flush(&txs).unwrap();
        assert_eq!(b.sent(), 80);
        // Every packet once, on its flow's lane, each flow's in the order made.
        let mut all = 0;
        for (lane, rx) in rxs.iter().enumerate() {
            let t = taken(rx);
            all += t.len();
            for flow in 0..8 {
                let handles: Vec<u64> = t
                    .iter()
                    .filter(|&&(f, _)| f == flow)
                    .map(|&(_, h)| h)
                    .collect();
                assert!(handles.windows(2).all(|w| w[0] < w[1]), "flow {flow}");
                assert!(handles.is_empty() || lane_of(flow, 4) == lane);
            }
        }
        assert_eq!(all, 80);
    }

    #[test]
    fn a_changed_ingress_gets_the_waiting_packets_and_a_gone_one_is_reported() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| crossbeam_channel::unbounded()).unzip();
        let mut b = Bursts::default();
        b.push(&txs, packet(1, 1)).unwrap();
        b.push(&txs, packet(1, 2)).unwrap();
        // A recovery left one lane: the waiting packets go there, in order.
        let (tx, rx) = crossbeam_channel::unbounded();
        assert_eq!(b.flush(std::slice::from_ref(&tx)), Ok(()));
        assert_eq!(b.sent(), 2);
        assert_eq!(taken(&rx), [(1, 1), (1, 2)]);
        assert!(rxs.iter().all(|r| taken(r).is_empty()));
        drop(rx);
        assert_eq!(b.push(&[tx], packet(1, 3)), Err(Gone));
        assert_eq!(b.sent(), 2);
        // Several lanes, one gone: what went out before it is counted, the rest dropped.
        drop(rxs.into_iter().nth(1));
        for h in 0..BURST as u64 {
            let _ = b.push(&txs, packet(h, h));
        }
        assert_eq!(b.flush(&txs), Err(Gone), "lane 1 is gone");
        let sent = b.sent() - 2;
        assert!(sent < BURST as u64);
        assert_eq!(b.flush(&txs), Ok(()), "nothing waits any more");
        assert_eq!(b.sent() - 2, sent);
    }
}
