//! The simulated network and clock: a time-ordered event queue, one timer per server, and the
//! faults (loss, reordering, duplication, delay, link cuts) drawn from the run's seed.

use std::collections::BTreeMap;

use ftc_chain::ring::ServerId;

use crate::rng::Rng;
use crate::{Pkt, SimFrame};

/// Fault rates, each the probability per frame on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    pub loss: f64,
    /// A frame overtakes up to a few frames sent before it.
    pub reorder: f64,
    pub dup: f64,
    /// A frame waits much longer than usual (tens of hops).
    pub delay: f64,
    /// Failure events, each at a random time while traffic is offered: each kills 1 to f
    /// servers, never more than f down at once (an event that would make more waits until
    /// earlier failures are recovered, after the traffic if need be); the orchestrator detects
    /// them, fences the old epoch, restores and restarts them.
    pub crashes: u32,
    /// The probability that a heartbeat is lost: enough lost in a row make the orchestrator
    /// declare a live server failed and replace it.
    pub heartbeat_loss: f64,
    /// Link cuts, each at a random time while traffic is offered: every frame a random server
    /// sends its successor in the ring is lost for a tenth to a half of the traffic's span,
    /// while its heartbeats go on (the orchestrator sees nothing wrong), as when a route or a
    /// link of the data path fails alone (`Network::cut`).
    pub cuts: u32,
    /// Orchestrator outages, each at a random time while traffic is offered, for a tenth to a
    /// half of the traffic's span (ending with it at the latest): no failure is detected and
    /// no recovery moves meanwhile, while the servers serve on; once it is back, servers that
    /// crashed meanwhile are detected a detection timeout later (those that serve rejoin at
    /// once), as when an orchestrator started in a killed one's place adopts the chain.
    pub outages: u32,
}

impl Faults {
    /// Parse `loss,reorder,dup,delay` (any subset, each optionally `=RATE`), or `none` alone;
    /// a fault named twice is refused.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        let name = |item: &str| item.split('=').next().unwrap_or_default().to_string();
        if items.is_empty() {
            return Err(format!("no fault in {list:?}: name some, or `none`"));
        }
        if let Some(item) = items.iter().find(|i| name(i) == "none" && **i != "none") {
            return Err(format!("`none` takes no rate, in {item:?}"));
        }
        if items.contains(&"none") && items.len() > 1 {
            return Err(format!("`none` with other faults in {list:?}"));
        }
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| name(earlier) == name(item)) {
                return Err(format!("fault {:?} named twice in {list:?}", name(item)));
            }
        }
        for item in items {
            if item == "none" {
                continue;
            }
            let counted = [
                ("crash", &mut f.crashes),
                ("cut", &mut f.cuts),
                ("outage", &mut f.outages),
            ];
            if let Some((name, slot, n)) = counted
                .into_iter()
                .find_map(|(name, slot)| Some((name, slot, item.strip_prefix(name)?)))
            {
                *slot = match n.strip_prefix('=') {
                    None if n.is_empty() => 2,
                    Some(n) => n
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("{name} count must be in 1..=100 in {item:?}"))?,
                    None => return Err(format!("unknown fault {item:?}")),
                };
                continue;
            }
            let (name, rate) = match item.split_once('=') {
                Some((n, r)) => {
                    let rate: f64 = r.parse().map_err(|_| format!("bad rate in {item:?}"))?;
                    if !(0.0..=0.5).contains(&rate) {
                        return Err(format!("rate of {n} must be in 0..=0.5, not {rate}"));
                    }
                    (n, Some(rate))
                }
                None => (item, None),
            };
            let slot = match name {
                "loss" => &mut f.loss,
                "reorder" => &mut f.reorder,
                "dup" => &mut f.dup,
                "delay" => &mut f.delay,
                "heartbeat" => &mut f.heartbeat_loss,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}: expected loss, reorder, dup, delay, crash, cut, outage, heartbeat or none"
                    ))
                }
            };
            *slot = rate.unwrap_or(match name {
                "loss" | "dup" => 0.02,
                "heartbeat" => 0.3,
                _ => 0.05,
            });
        }
        Ok(f)
    }

    /// Whether frames may arrive out of the order they were sent in. Duplication alone does
    /// not reorder: the first copy of every frame arrives one hop after it was sent, in the
    /// order sent; only the extra copies come later.
    pub fn reorders(&self) -> bool {
        self.reorder > 0.0 || self.delay > 0.0
    }
}

/// The list [`Faults::parse`] reads back as these faults: `none` for none (for replay
/// commands).
impl std::fmt::Display for Faults {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rates = [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("dup", self.dup),
            ("delay", self.delay),
            ("heartbeat", self.heartbeat_loss),
        ];
        let mut items: Vec<String> = rates
            .iter()
            .filter(|(_, rate)| *rate > 0.0)
            .map(|(name, rate)| format!("{name}={rate}"))
            .collect();
        if self.crashes > 0 {
            items.push(format!("crash={}", self.crashes));
        }
        if self.cuts > 0 {
            items.push(format!("cut={}", self.cuts));
        }
        if self.outages > 0 {
            items.push(format!("outage={}", self.outages));
        }
        if items.is_empty() {
            out.write_str("none")
        } else {
            out.write_str(&items.join(","))
        }
    }
}

/// A lane (worker thread) of a server.
pub(crate) type Node = (ServerId, usize);

/// Something that happens at a point of virtual time.
#[derive(Debug)]
pub(crate) enum Event {
    /// A customer packet arrives at the chain.
    Inject(Pkt),
    /// The first packet waiting at the ingress is offered again.
    Admit,
    Deliver {
        from: ServerId,
        to: Node,
        /// The epoch it was sent in: a frame of an older one is dropped (fencing).
        epoch: u32,
        frame: SimFrame,
    },
    Timer(Node),
    /// This many servers fail, now or, if that would make more than f down, once it does not.
    Crash(u32),
    /// Every live server sends the orchestrator a heartbeat; it looks for failed ones.
    Heartbeat,
    /// The replacements are up: plan their state transfers.
    Recover,
    /// The next replacement fetches its state; after the last, the chain is rerouted.
    Fetch,
}

/// One hop's latency when nothing goes wrong.
const HOP_NS: u64 = 1_000;

#[derive(Debug)]
pub(crate) struct Network {
    rng: Rng,
    faults: Faults,
    faults_until: u64,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    timers: BTreeMap<Node, u64>,
    /// Links cut: (the server whose frames to its successor are lost, from, until).
    cuts: Vec<(ServerId, u64, u64)>,
    /// Frames lost to cuts.
    pub(crate) frames_cut: u64,
}

impl Network {
    pub(crate) fn new(rng: Rng, faults: Faults) -> Self {
        Network {
            rng,
            faults,
            faults_until: 0,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            timers: BTreeMap::new(),
            cuts: Vec::new(),
            frames_cut: 0,
        }
    }

    /// Every frame `from` sends its successor in the ring from `start` until `end` is lost.
    pub(crate) fn cut(&mut self, from: ServerId, start: u64, end: u64) {
        self.cuts.push((from, start, end));
    }

    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Faults apply to frames sent before `t` only.
    pub(crate) fn faults_until(&mut self, t: u64) {
        self.faults_until = t;
    }

    pub(crate) fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), event);
    }

    /// Arm the timer of lane `node` for `at` unless it is armed earlier already.
    pub(crate) fn arm_timer(&mut self, node: Node, at: u64) {
        if self
            .timers
            .get(&node)
            .is_some_and(|&t| t <= at && t >= self.now)
        {
            return;
        }
        self.timers.insert(node, at);
        self.schedule(at, Event::Timer(node));
    }

    /// The next event, advancing the clock to it.
    pub(crate) fn pop(&mut self) -> Option<(u64, Event)> {
        let ((at, _), event) = self.queue.pop_first()?;
        self.now = at;
        if let Event::Timer(s) = &event {
            if self.timers.get(s) == Some(&at) {
                self.timers.remove(s);
            }
        }
        Some((at, event))
    }

    /// The delays after which copies of a frame `from` sends now to `next` (its successor in
    /// the ring, or not) arrive: none (lost), one, or two.
    pub(crate) fn plan(&mut self, from: ServerId, next: bool) -> Vec<u64> {
        if self.now >= self.faults_until {
            return vec![HOP_NS];
        }
        let now = self.now;
        if next
            && self
                .cuts
                .iter()
                .any(|&(s, a, b)| s == from && (a..b).contains(&now))
        {
            self.frames_cut += 1;
            return Vec::new();
        }
        let f = self.faults;
        if self.rng.chance(f.loss) {
            return Vec::new();
        }
        let mut delay = HOP_NS;
        if self.rng.chance(f.reorder) {
            delay += self.rng.below(4 * HOP_NS);
        }
        if self.rng.chance(f.delay) {
            delay += self.rng.below(50 * HOP_NS);
        }
        let mut copies = vec![delay];
        if self.rng.chance(f.dup) {
            copies.push(delay + self.rng.below(4 * HOP_NS));
        }
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::Faults;

    #[test]
    fn faults_print_as_a_list_that_parses_back_to_them() {
        for list in [
            "none",
            "loss",
            "loss,reorder,dup,delay",
            "loss=0.1,crash=3,heartbeat",
            "reorder=0.5,dup=0.013,delay=0,crash",
            "cut,loss",
            "cut=7",
            "outage,crash=4",
            "outage=100,cut=1,heartbeat=0.2",
        ] {
            let faults = Faults::parse(list).unwrap();
            assert_eq!(Faults::parse(&faults.to_string()), Ok(faults), "{list}");
        }
        assert_eq!(Faults::default().to_string(), "none");
    }

    /// An empty list is no silent `none`, and `none` takes no rate.
    #[test]
    fn lists_that_name_nothing_or_rate_none_are_refused() {
        for (list, why) in [
            ("", "no fault in \"\""),
            (",,", "no fault in \",,\""),
            ("none=1", "`none` takes no rate, in \"none=1\""),
            ("none,loss", "`none` with other faults"),
        ] {
            let refused = Faults::parse(list).unwrap_err();
            assert!(refused.starts_with(why), "{list:?}: {refused}");
        }
    }
}
