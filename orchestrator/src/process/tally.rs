//! A node's periodic stats line (`ftc node --stats-every`): what its server counted, summed over
//! its lanes, as rates and counts over the last interval, and what it holds now.

use std::fmt::Write as _;
use std::time::Duration;

use ftc_node::ftmb::Station;
use ftc_node::links::XdpLinks;
use ftc_node::xdp::KernelStats;
use ftc_node::Server;

use super::edges::{Edges, PortStats};

/// The `tracing` target of stats lines: shown whatever level the log shows (they are logged only
/// when asked for).
pub const STATS_TARGET: &str = "ftc_stats";

/// What a server (or a lane of one) counted so far, and holds now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Frames handled: customer packets with their messages, and messages alone (an FTMB
    /// logger's: packets logged and PAL messages).
    pub frames: u64,
    pub transactions: u64,
    /// Customer packets the forwarder took into the chain (server 0).
    pub admitted: u64,
    /// Customer packets the buffer released (the last server), and how long it held them in all.
    pub released: u64,
    pub hold_ns: u64,
    /// Customer packets lost (to a recovery's fence, a full queue, the retain limit), and frames
    /// from the network dropped as malformed.
    pub lost: u64,
    pub bad_frames: u64,
    /// Frames the kernel dropped as they arrived at the server's AF_XDP sockets (ring links
    /// and edges), its reader behind: the rx ring full, or no free frame to fill.
    pub kernel_drops: u64,
    /// Logs the replica applied, and the retransmissions it asked for (an FTMB logger's resend
    /// requests).
    pub applied: u64,
    pub requests: u64,
    /// Now: frames held waiting for logs, packets the buffer holds, logs retained for successors.
    pub held: u64,
    pub buffered: u64,
    pub retained: u64,
    /// Whether the server has a forwarder (it admits customer packets), a buffer (it releases
    /// them), a replica (it applies logs).
    pub forwarder: bool,
    pub buffer: bool,
    pub replica: bool,
}

impl Tally {
    /// An FTC (or NF) server's, or lane's.
    pub fn of_server(s: &Server<'_, u32>) -> Tally {
        let stats = s.stats();
        let forwarder = s.forwarder().map(|f| f.stats());
        let buffer = s.buffer().map(|b| b.stats());
        let replica = s.replica();
        let rs = replica.map(|r| r.stats());
        Tally {
            frames: stats.frames,
            transactions: stats.transactions,
            admitted: forwarder.map_or(0, |f| f.accepted_outbound + f.accepted_inbound),
            released: buffer.map_or(0, |b| b.released),
            hold_ns: buffer.map_or(0, |b| b.total_hold_ns),
            lost: stats.lost,
            bad_frames: stats.bad_frames,
            kernel_drops: 0,
            applied: rs.map_or(0, |r| r.applied),
            requests: rs.map_or(0, |r| r.requests_sent),
            held: s.held() as u64,
            buffered: buffer.map_or(0, |b| b.held_packets as u64),
            retained: replica.map_or(0, |r| r.retained().0 as u64),
            forwarder: forwarder.is_some(),
            buffer: buffer.is_some(),
            replica: replica.is_some(),
        }
    }

    /// An FTMB master's (its transactions) or logger's (packets logged, PAL messages, resend
    /// requests).
    pub fn of_station(s: &Station<'_, u32>) -> Tally {
        let logger = s.logger_stats();
        Tally {
            frames: logger.map_or(0, |l| l.packets_logged + l.pal_messages),
            transactions: s.transactions().unwrap_or(0),
            requests: logger.map_or(0, |l| l.resend_requests),
            ..Tally::default()
        }
    }

    /// With the kernel's drops at the AF_XDP sockets of `links` and `edges` (those the server,
    /// or the lane, reads) added.
    pub fn with_sockets(mut self, links: Option<&XdpLinks>, edges: Option<&Edges>) -> Tally {
        let dropped = |k: KernelStats| k.rx_dropped + k.rx_ring_full;
        self.kernel_drops += links.map_or(0, |l| dropped(l.kernel_stats()));
        let ports = edges.map(Edges::stats).unwrap_or_default();
        for (_, port) in ports {
            if let PortStats::Xdp(queues) = port {
                self.kernel_drops += queues.into_iter().map(|(_, k)| dropped(k)).sum::<u64>();
            }
        }
        self
    }

    /// The sum of `self` and `other` (a server's lanes').
    pub fn plus(self, other: Tally) -> Tally {
        Tally {
            frames: self.frames + other.frames,
            transactions: self.transactions + other.transactions,
            admitted: self.admitted + other.admitted,
            released: self.released + other.released,
            hold_ns: self.hold_ns + other.hold_ns,
            lost: self.lost + other.lost,
            bad_frames: self.bad_frames + other.bad_frames,
            kernel_drops: self.kernel_drops + other.kernel_drops,
            applied: self.applied + other.applied,
            requests: self.requests + other.requests,
            held: self.held + other.held,
            buffered: self.buffered + other.buffered,
            retained: self.retained + other.retained,
            forwarder: self.forwarder || other.forwarder,
            buffer: self.buffer || other.buffer,
            replica: self.replica || other.replica,
        }
    }
}

/// When a node's next stats line is due, and what the last one counted.
#[derive(Debug)]
pub struct StatsLine {
    every: u64,
    due: u64,
    /// The tally of the last line (or of the start), and when it was taken (ns, node clock).
    last: Tally,
    at: u64,
}

impl StatsLine {
    /// A line every `every` (more than zero), the first one `every` after `now`.
    pub fn new(every: Duration, now: u64) -> StatsLine {
        let every = (every.as_nanos() as u64).max(1);
        StatsLine {
            every,
            due: now + every,
            last: Tally::default(),
            at: now,
        }
    }

    /// When the next line is due.
    pub fn due(&self) -> u64 {
        self.due
    }

    /// At `now`, past [`StatsLine::due`]: the line of what changed since the last one, given
    /// what the server counted so far (`None`: it has no server yet, as a replacement restoring
    /// its state).
    pub fn line(&mut self, now: u64, tally: Option<Tally>) -> String {
        let secs = (now.saturating_sub(self.at) as f64 / 1e9).max(1e-9);
        // The next line is due a period after this one, however late this one is.
        self.due = now + self.every;
        self.at = now;
        let Some(t) = tally else {
            return format!("over {secs:.1} s: no server yet");
        };
        // A replacement's server starts its counts from zero.
        let last = std::mem::replace(&mut self.last, t);
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let rate = |now, then| d(now, then) as f64 / secs;
        let mut line = format!(
            "over {secs:.1} s: frames {:.0}/s, transactions {:.0}/s",
            rate(t.frames, last.frames),
            rate(t.transactions, last.transactions)
        );
        if t.forwarder {
            let _ = write!(line, ", admitted {:.0}/s", rate(t.admitted, last.admitted));
        }
        if t.buffer {
            let released = d(t.released, last.released);
            let _ = write!(line, ", released {:.0}/s", released as f64 / secs);
            if released > 0 {
                let hold = d(t.hold_ns, last.hold_ns) as f64 / released as f64 / 1e3;
                let _ = write!(line, " (held {hold:.1} µs on average)");
            }
        }
        if t.replica {
            let _ = write!(
                line,
                ", logs applied {:.0}/s",
                rate(t.applied, last.applied)
            );
        }
        let _ = write!(
            line,
            "; lost {}, bad frames {}, dropped by the kernel {}, retransmission requests {}; now \
             held {}, in the buffer {}, logs retained {}",
            d(t.lost, last.lost),
            d(t.bad_frames, last.bad_frames),
            d(t.kernel_drops, last.kernel_drops),
            d(t.requests, last.requests),
            t.held,
            t.buffered,
            t.retained
        );
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates are of the interval since the last line; gauges are as they are now; what a
    /// replacement's new server counts from zero shows no negative rate.
    #[test]
    fn a_line_says_what_changed_since_the_last() {
        let mut s = StatsLine::new(Duration::from_secs(2), 1_000);
        assert_eq!(s.due(), 2_000_001_000);
        let first = Tally {
            frames: 4_000,
            transactions: 2_000,
            released: 1_000,
            hold_ns: 50_000_000,
            lost: 3,
            held: 7,
            buffer: true,
            ..Tally::default()
        };
        let line = s.line(2_000_001_000, Some(first));
        assert_eq!(
            line,
            "over 2.0 s: frames 2000/s, transactions 1000/s, released 500/s (held 50.0 µs on \
             average); lost 3, bad frames 0, dropped by the kernel 0, retransmission requests 0; \
             now held 7, in the \
             buffer 0, logs retained 0"
        );
        assert_eq!(s.due(), 4_000_001_000);
        // Late (the node was busy): the rates are over the real interval, and the next line is
        // due a period after this one.
        let second = Tally {
            frames: 10_000,
            transactions: 5_000,
            released: 1_000,
            hold_ns: 50_000_000,
            lost: 3,
            kernel_drops: 5,
            retained: 12,
            ..first
        };
        let line = s.line(5_000_001_000, Some(second));
        assert!(
            line.starts_with("over 3.0 s: frames 2000/s, transactions 1000/s, released 0/s;"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "lost 0, bad frames 0, dropped by the kernel 5, retransmission requests 0; now \
                 held 7, in the buffer 0, logs retained 12"
            ),
            "{line}"
        );
        assert_eq!(s.due(), 7_000_001_000);
        assert_eq!(s.line(7_000_001_000, None), "over 2.0 s: no server yet");
        // The replacement's counts begin again below the last line's: rates of 0, not wrapped.
        let line = s.line(9_000_001_000, Some(Tally::default()));
        assert!(
            line.starts_with("over 2.0 s: frames 0/s, transactions 0/s; lost 0,"),
            "{line}"
        );
    }

    #[test]
    fn lanes_add_up() {
        let a = Tally {
            frames: 1,
            transactions: 2,
            admitted: 3,
            released: 4,
            hold_ns: 5,
            lost: 6,
            bad_frames: 7,
            kernel_drops: 1,
            applied: 8,
            requests: 9,
            held: 10,
            buffered: 11,
            retained: 12,
            forwarder: true,
            buffer: false,
            replica: true,
        };
        let b = a.plus(a);
        let doubled = Tally {
            frames: 2,
            transactions: 4,
            admitted: 6,
            released: 8,
            hold_ns: 10,
            lost: 12,
            bad_frames: 14,
            kernel_drops: 2,
            applied: 16,
            requests: 18,
            held: 20,
            buffered: 22,
            retained: 24,
            forwarder: true,
            buffer: false,
            replica: true,
        };
        assert_eq!(b, doubled);
        assert_eq!(b.plus(Tally::default()), b);
        // A server has a part when any of its lanes does.
        let buffered = Tally {
            buffer: true,
            ..Tally::default()
        };
        assert!(a.plus(buffered).buffer && buffered.plus(a).replica);
    }
}
