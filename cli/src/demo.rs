//! `ftc demo`: a chain in one process: generated TCP connections through every middlebox as
//! packet transactions, their piggyback logs carried in NSH trailers to the replicas of each
//! group, wrapped logs carried from the buffer back to the forwarder, an echo server behind the
//! chain whose replies come back through it, and a report that checks every replica against its
//! head.
//!
//! This is the foundation's demo: frames travel in order and nothing fails. The chain protocol
//! proper (commit vectors, the buffer's release rule, loss and retransmission, worker threads)
//! and crash recovery replace it with `ftc run` and `ftc chaos`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use ftc_chain::middlebox::{process_packet, Ctx, Direction, Frame, Middlebox, Verdict};
use ftc_chain::middleboxes;
use ftc_chain::ring::{MbIndex, Ring, ServerId};
use ftc_chain::spec::ChainSpec;
use ftc_chain::wire::{MessageView, MessageWriter, NshFrame, NshRepr};
use ftc_stm::{ApplyOutcome, LogKind, LogSource, Store, Worker};

/// The embedded default chain: Ch-Rec (firewall → monitor → simple-nat, f = 1).
const CH_REC: &str = include_str!("../../specs/ch-rec.toml");

/// Room for an inner frame and its trailer between servers (jumbo frames).
const FRAME_ROOM: usize = 9000;
/// Trailer budget per frame.
const TRAILER_ROOM: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Chain spec to run (default: the embedded Ch-Rec).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// TCP connections to open.
    #[arg(long, default_value_t = 200)]
    flows: u32,
    /// Round trips (request through the chain, echo back through it) per connection.
    #[arg(long, default_value_t = 50)]
    round_trips: u32,
    /// TCP payload bytes per packet.
    #[arg(long, default_value_t = 200)]
    payload: usize,
}

/// One server of the ring: maybe a middlebox with its head store, and replica stores.
struct Server<'s> {
    head: Option<(MbIndex, &'s dyn Middlebox, Worker<'s>)>,
    replicas: Vec<(MbIndex, &'s Store)>,
    applied: u64,
    satisfied: u64,
    not_ready: u64,
}

#[derive(Default)]
struct Counters {
    sent: u64,
    delivered: u64,
    dropped: Vec<u64>,
    trailer_bytes: u64,
    trailer_max: usize,
    frames: u64,
    propagating: u64,
    wrong_translation: u64,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let spec = match &args.spec {
        Some(path) => ChainSpec::load(path)?,
        None => ChainSpec::from_toml_str(CH_REC, "specs/ch-rec.toml (embedded)")?,
    };
    if args.payload > 1400 {
        bail!("--payload must be at most 1400 bytes");
    }
    let ring = spec.ring();
    print!("{}", crate::check::describe(&spec));

    let partitions = spec.chain.partitions;
    let mbs: Vec<Box<dyn Middlebox>> = spec.middlebox.iter().map(middleboxes::build).collect();
    let heads: Vec<Store> = spec
        .middlebox
        .iter()
        .map(|m| Store::new(partitions, m.threads))
        .collect::<Result<_, _>>()?;
    // replicas[s] = the stores server s keeps for the groups it replicates.
    let replica_stores: Vec<Vec<(MbIndex, Store)>> = ring
        .server_ids()
        .map(|s| {
            ring.replicated_by(s)
                .map(|mb| Ok((mb, Store::new(partitions, 1)?)))
                .collect::<Result<_, ftc_stm::StmError>>()
        })
        .collect::<Result<_, _>>()?;
    let mut servers: Vec<Server<'_>> = ring
        .server_ids()
        .map(|s| {
            let head = ring.middlebox_at(s).map(|mb| {
                let i = usize::from(mb.0);
                (
                    mb,
                    mbs[i].as_ref(),
                    heads[i].worker(0).expect("fresh store"),
                )
            });
            let replicas = replica_stores[usize::from(s.0)]
                .iter()
                .map(|(mb, st)| (*mb, st))
                .collect();
            Server {
                head,
                replicas,
                applied: 0,
                satisfied: 0,
                not_ready: 0,
            }
        })
        .collect();

    let mut chain = Chain {
        ring,
        pending: Vec::new(),
        counters: Counters::default(),
        scratch: Vec::new(),
    };
    chain.counters.dropped = vec![0; ring.middleboxes()];
    let public = nat_public_ip(&spec);
    let server_addr = Ipv4Addr::new(198, 51, 100, 10);
    let start = Instant::now();
    let payload = vec![0x5a; args.payload];
    for round in 0..args.round_trips {
        for flow in 0..args.flows {
            let client = (
                Ipv4Addr::new(10, 0, (flow / 250) as u8, (flow % 250 + 1) as u8),
                40000 + (flow % 20000) as u16,
            );
            let now = start.elapsed().as_nanos() as u64;
            let request = tcp_frame(client, (server_addr, 80), round, &payload);
            chain.counters.sent += 1;
            let Some(out) = chain.traverse(&mut servers, &request, Direction::Outbound, now)?
            else {
                continue;
            };
            // The echo server answers whatever reached it, to the address it saw.
            let (src, dst) = tcp_endpoints(&out).context("released frame is not TCP/IPv4")?;
            if public.is_some_and(|p| src.0 != p) {
                chain.counters.wrong_translation += 1;
            }
            let reply = tcp_frame(dst, src, round, &payload);
            chain.counters.sent += 1;
            let Some(back) = chain.traverse(&mut servers, &reply, Direction::Inbound, now)? else {
                continue;
            };
            if tcp_endpoints(&back).map(|(_, d)| d) != Some(client) {
                chain.counters.wrong_translation += 1;
            }
        }
    }
    // Carry what is still in flight (wrapped logs) around the ring in a propagating frame.
    chain.flush(&mut servers, start.elapsed().as_nanos() as u64)?;
    let elapsed = start.elapsed();
    drop(servers);

    let c = &chain.counters;
    println!(
        "\ntraffic: {} connections × {} round trips",
        args.flows, args.round_trips
    );
    println!(
        "  packets sent {}, delivered {}, dropped by middlebox {:?}; {:.0} packets/s through {} servers ({:.2?})",
        c.sent,
        c.delivered,
        c.dropped,
        c.sent as f64 / elapsed.as_secs_f64(),
        ring.servers(),
        elapsed
    );
    println!(
        "  piggyback trailer: {:.1} bytes on average, {} at most, over {} frames ({} propagating)",
        c.trailer_bytes as f64 / c.frames.max(1) as f64,
        c.trailer_max,
        c.frames,
        c.propagating
    );
    let mut consistent = c.wrong_translation == 0;
    if c.wrong_translation > 0 {
        println!(
            "  {} packets left the chain with a wrong address translation",
            c.wrong_translation
        );
    }
    println!("state (DESIGN.md §6: every replica of a group holds its head's store and vector):");
    for mb in ring.mb_indices() {
        let head = &heads[usize::from(mb.0)];
        let want = head.to_map();
        print!(
            "  {mb} {}: head {} entries, seq sum {}",
            mbs[usize::from(mb.0)].kind(),
            want.len(),
            seq_sum(head)
        );
        for (s, stores) in replica_stores.iter().enumerate() {
            for (_, store) in stores.iter().filter(|(m, _)| *m == mb) {
                let same = store.to_map() == want && store.vector() == head.vector();
                consistent &= same;
                print!(
                    "; replica on server {s}: {}",
                    if same { "identical" } else { "DIFFERENT" }
                );
            }
        }
        println!();
    }
    println!(
        "verdict: {}",
        if consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        }
    );
    Ok(if consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ring's data path for one frame at a time, in order.
struct Chain {
    ring: Ring,
    /// Encoded logs that left the buffer for the forwarder (groups that wrap).
    pending: Vec<Vec<u8>>,
    counters: Counters,
    scratch: Vec<u8>,
}

impl Chain {
    /// Send a customer frame through every server; the frame that leaves the chain, if any.
    fn traverse(
        &mut self,
        servers: &mut [Server<'_>],
        inner: &[u8],
        dir: Direction,
        now: u64,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let mut frame = self.ingress(Some(inner));
        for s in self.ring.server_ids() {
            frame = self.hop(&mut servers[usize::from(s.0)], s, &frame, dir, now)?;
        }
        self.egress(&frame)
    }

    /// A propagating frame from the forwarder, repeated until nothing is pending.
    fn flush(&mut self, servers: &mut [Server<'_>], now: u64) -> anyhow::Result<()> {
        while !self.pending.is_empty() {
            let mut frame = self.ingress(None);
            self.counters.propagating += 1;
            for s in self.ring.server_ids() {
                frame = self.hop(
                    &mut servers[usize::from(s.0)],
                    s,
                    &frame,
                    Direction::Outbound,
                    now,
                )?;
            }
            self.egress(&frame)?;
        }
        Ok(())
    }

    /// The forwarder: wrap a customer frame (or none: a propagating frame) with pending logs.
    fn ingress(&mut self, inner: Option<&[u8]>) -> Vec<u8> {
        let mut trailer = vec![0; TRAILER_ROOM];
        let mut w = MessageWriter::new(&mut trailer, 0).expect("trailer room");
        let mut kept = Vec::new();
        for log in self.pending.drain(..) {
            if w.push_log_bytes(&log).is_err() {
                kept.push(log);
            }
        }
        self.pending = kept;
        let len = w.finish();
        trailer.truncate(len);
        nsh_frame(inner, &trailer, 0)
    }

    /// One server: apply the logs of the groups it replicates, run its middlebox, re-encode.
    fn hop(
        &mut self,
        server: &mut Server<'_>,
        me: ServerId,
        frame: &[u8],
        dir: Direction,
        now: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let nsh = NshFrame::new_checked(frame).context("bad frame between servers")?;
        let hop = 255 - nsh.si();
        let msg = MessageView::new_checked(nsh.trailer()).context("bad piggyback message")?;
        for log in msg.logs() {
            let Some((_, store)) = server
                .replicas
                .iter()
                .find(|(mb, _)| mb.0 == log.middlebox())
            else {
                continue;
            };
            match log.kind() {
                LogKind::Update => match store.apply(&log)? {
                    ApplyOutcome::Applied => server.applied += 1,
                    ApplyOutcome::Duplicate | ApplyOutcome::Hold => server.not_ready += 1,
                },
                LogKind::ReadOnly if store.is_satisfied(log.deps())? => server.satisfied += 1,
                LogKind::ReadOnly => server.not_ready += 1,
                LogKind::Noop => {}
            }
        }
        let mut inner_buf = vec![0; FRAME_ROOM];
        let mut propagating = nsh.is_propagating();
        let mut inner_len = nsh.inner().len();
        inner_buf[..inner_len].copy_from_slice(nsh.inner());
        let mut trailer = vec![0; TRAILER_ROOM];
        let mut w = MessageWriter::new(&mut trailer, 0).expect("trailer room");
        for log in msg.logs() {
            // The tail of a group strips its log: it is now in f+1 stores.
            if self.ring.tail(MbIndex(log.middlebox())) != me {
                w.push_log_bytes(log.as_bytes())
                    .context("trailer budget exceeded")?;
            }
        }
        if let (Some((mb, middlebox, worker)), false) = (server.head.as_mut(), propagating) {
            let mut frame = Frame::new(&mut inner_buf, inner_len)?;
            let ctx = Ctx {
                worker: worker.id(),
                now_ns: now,
                direction: dir,
            };
            let (verdict, record) =
                process_packet(worker, *middlebox, &mut frame, &ctx, &mut self.scratch);
            inner_len = frame.len();
            if record.kind() != LogKind::Noop {
                w.push_log(mb.0, &record)
                    .context("trailer budget exceeded")?;
            }
            if verdict == Verdict::Drop {
                // A dropped packet still carries its message on, in a propagating frame.
                self.counters.dropped[usize::from(mb.0)] += 1;
                propagating = true;
            }
        }
        let len = w.finish();
        self.counters.trailer_bytes += len as u64;
        self.counters.trailer_max = self.counters.trailer_max.max(len);
        self.counters.frames += 1;
        let inner = (!propagating).then(|| &inner_buf[..inner_len]);
        Ok(nsh_frame(inner, &trailer[..len], hop + 1))
    }

    /// The buffer's side: logs of groups that wrap go back to the forwarder; the customer frame
    /// leaves the chain.
    fn egress(&mut self, frame: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let nsh = NshFrame::new_checked(frame).context("bad frame at the buffer")?;
        let msg = MessageView::new_checked(nsh.trailer()).context("bad piggyback message")?;
        self.pending
            .extend(msg.logs().map(|l| l.as_bytes().to_vec()));
        if nsh.is_propagating() {
            return Ok(None);
        }
        self.counters.delivered += 1;
        Ok(Some(nsh.inner().to_vec()))
    }
}

fn nsh_frame(inner: Option<&[u8]>, trailer: &[u8], hop: u8) -> Vec<u8> {
    let repr = NshRepr {
        dst_mac: [0x02, 0, 0, 0, 0, hop.wrapping_add(1)],
        src_mac: [0x02, 0, 0, 0, 0, hop],
        propagating: inner.is_none(),
        ttl: 63,
        spi: 1,
        si: 255 - hop,
        epoch: 1,
        flags: 0,
        trailer_len: trailer.len() as u16,
    };
    let inner = inner.unwrap_or(&[]);
    let mut buf = vec![0; repr.frame_len(inner.len())];
    repr.emit(&mut NshFrame::new_unchecked(&mut buf[..]));
    buf[NshRepr::HEADER_LEN..][..inner.len()].copy_from_slice(inner);
    let at = buf.len() - trailer.len();
    buf[at..].copy_from_slice(trailer);
    buf
}

fn tcp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0xaa, 1], [2, 0, 0, 0, 0xbb, 1])
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, seq.wrapping_mul(1000), 65535)
        .ack(1)
        .psh();
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("writing to a Vec");
    out
}

fn tcp_endpoints(frame: &[u8]) -> Option<((Ipv4Addr, u16), (Ipv4Addr, u16))> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        return None;
    };
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        return None;
    };
    Some((
        (ip.header().source_addr(), tcp.source_port()),
        (ip.header().destination_addr(), tcp.destination_port()),
    ))
}

fn nat_public_ip(spec: &ChainSpec) -> Option<Ipv4Addr> {
    use ftc_chain::spec::MiddleboxKind;
    spec.middlebox.iter().rev().find_map(|m| match &m.kind {
        MiddleboxKind::SimpleNat(c) => Some(c.public_ip),
        MiddleboxKind::MazuNat(c) => Some(c.public_ip),
        _ => None,
    })
}

fn seq_sum(store: &Store) -> u64 {
    store.vector().iter().map(|s| s.0).sum()
}
