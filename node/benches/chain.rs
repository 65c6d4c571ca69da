//! The protocol's CPU cost per packet, without threads: a whole chain's servers driven in one
//! thread (batches of 32 frames per server, 512 packets in flight, a virtual clock), FTC against
//! NF on the same middleboxes. No channel, no wake-up, no other core: what is left is the work
//! the servers do for a packet. The NF/FTC time ratio here is what a threaded run's throughput
//! ratio comes to as the runtime's own costs per packet (the same in both modes) shrink.

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftc_chain::middlebox::Direction;
use ftc_chain::ring::ServerId;
use ftc_chain::spec::ChainSpec;
use ftc_node::runtime::mode_lanes;
use ftc_node::runtime::RunConfig;
use ftc_node::server::port_of;
use ftc_node::traffic::request;
use ftc_node::{Frame, Heads, Mode, Output, Packet, Server};

/// Packets sent per measured iteration.
const PACKETS: u64 = 4096;
/// Packets sent before measuring.
const WARM_UP: u64 = 4 * PACKETS;
const BATCH: usize = 32;
const WINDOW: u64 = 512;
const FLOWS: u32 = 64;
/// Virtual nanoseconds per round over the servers.
const ROUND_NS: u64 = 1_000;

/// What a server takes in.
enum Input {
    Ingress(Packet<u64>),
    Frame(ServerId, Frame<u64>),
}

/// A chain's servers in one thread, with their inboxes.
struct Pump<'h> {
    servers: Vec<Server<'h, u64>>,
    inboxes: Vec<VecDeque<Input>>,
    templates: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    now: u64,
    made: u64,
    released: u64,
}

impl<'h> Pump<'h> {
    fn new(spec: &ChainSpec, heads: &'h Heads, mode: Mode) -> Self {
        let (lanes, hops) = mode_lanes(spec, heads, mode, &RunConfig::default().server);
        let servers: Vec<_> = lanes.into_iter().map(|(server, _)| server).collect();
        assert_eq!(servers.len(), hops.len(), "one lane per server");
        Pump {
            inboxes: servers.iter().map(|_| VecDeque::new()).collect(),
            servers,
            templates: (0..FLOWS).map(|f| request(f, 1, 256)).collect(),
            spare: Vec::new(),
            now: 1,
            made: 0,
            released: 0,
        }
    }

    /// Sends `packets` more through the chain and returns once all of them left it.
    fn run(&mut self, packets: u64) {
        let goal = self.released + packets;
        let last = self.made + packets;
        while self.released < goal {
            let room = (self.released + WINDOW).saturating_sub(self.made);
            for _ in 0..room.min(last - self.made) {
                let flow = (self.made % u64::from(FLOWS)) as u32;
                let mut bytes = self.spare.pop().unwrap_or_default();
                bytes.clear();
                bytes.extend_from_slice(&self.templates[flow as usize]);
                self.made += 1;
                self.inboxes[0].push_back(Input::Ingress(Packet {
                    handle: self.made,
                    flow: u64::from(flow),
                    dir: Direction::Outbound,
                    bytes,
                }));
            }
            for i in 0..self.servers.len() {
                self.step(i);
            }
            self.now += ROUND_NS;
        }
    }

    /// One batch at server `i`, and where its outputs go.
    fn step(&mut self, i: usize) {
        let server = &mut self.servers[i];
        if server.poll_timeout().is_some_and(|t| t <= self.now) {
            server.handle_timeout(self.now);
        }
        let take = self.inboxes[i].len().min(BATCH);
        for input in self.inboxes[i].drain(..take) {
            match input {
                Input::Ingress(packet) => {
                    let port = port_of(packet.dir);
                    assert!(server.handle_ingress(self.now, packet, port).is_ok());
                }
                Input::Frame(from, frame) => server.handle_frame(self.now, from, frame),
            }
        }
        server.end_batch(self.now);
        let me = server.id();
        while let Some(out) = server.poll_output() {
            match out {
                Output::Send { to, frame } => {
                    self.inboxes[usize::from(to.0)].push_back(Input::Frame(me, frame));
                }
                Output::Release { packet, .. } => {
                    self.released += 1;
                    self.spare.push(black_box(packet).bytes);
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        if let Some(error) = server.error() {
            panic!("server {}: {error}", me.0);
        }
        // Buffers of consumed messages go back to server 0, as the threaded runtime passes them.
        if let Some(buffers) = server.take_surplus() {
            self.servers[0].take_spare(buffers);
        }
    }
}

fn chain(c: &mut Criterion) {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(PACKETS));
    group.measurement_time(Duration::from_secs(4));
    for name in ["ch-2", "ch-3", "ch-4", "ch-5", "ch-rec"] {
        let spec = ChainSpec::load(&specs.join(format!("{name}.toml"))).expect("a shipped spec");
        for mode in [Mode::Nf, Mode::Ftc] {
            group.bench_function(format!("{name}/{}", mode.name()), |b| {
                let heads = Heads::new(&spec, |_| 1).expect("valid stores");
                let mut pump = Pump::new(&spec, &heads, mode);
                // Warm up the stores and the buffers, so that iterations measure the steady
                // state.
                pump.run(WARM_UP);
                b.iter(|| pump.run(PACKETS))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
