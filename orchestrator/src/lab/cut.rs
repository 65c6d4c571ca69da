//! Link cuts in a lab (`ftc lab demo`, `ftc lab run`): a link of the lab (a veth pair) taken
//! down for a while, part way through a download or at a time of a run, so that nothing crosses
//! it either way, then brought up again, also when the demo or the run ends or fails first.
//!
//! - A link between two servers: the chain rides it out with what it has for loss, customer
//!   frames lost on the link are TCP's to resend, logs and commit vectors the protocol's
//!   (retransmission requests answered from retained logs). Heartbeats take the management
//!   network, so no server is declared failed for it.
//! - A server's management link (its control connection and heartbeats): the orchestrator
//!   declares the server failed and replaces it while it still serves, cut off; the frames it
//!   sends meanwhile are of the old epoch, which its neighbours are fenced out of. Once the link
//!   is back it is refused as replaced and exits. In the lab its replacement runs in the same
//!   namespace, behind the same link, so it joins only then.

use std::time::{Duration, Instant};

use super::demo::DemoError;
use super::ops::Op;
use super::topology::Topology;
use crate::process::edges::EdgeKind;

/// The longest cut: TCP backs off while the link is down (its retransmission timer doubles), and
/// after a cut of 10 s its next try comes within about 3 s of the link's return, well inside
/// the demo's stall limit (curl gives up after 30 s without a byte).
pub const MAX_DOWN: Duration = Duration::from_secs(10);

/// Which link a cut takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutLink {
    /// The link between two servers (named in either order).
    Between(u16, u16),
    /// A server's link to the management network.
    Management(u16),
}

/// A link to cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabCut {
    pub link: CutLink,
    /// When the link goes down: in `ftc lab demo` the share of the download (0 to 1) that has
    /// arrived, in `ftc lab run` seconds after the chain is deployed ([`Cuts::new`] scales it).
    pub at: f64,
    /// How long it stays down, at most [`MAX_DOWN`].
    pub down: Duration,
}

/// A cut's link in a lab: how the report names it, and the interface to take down.
#[derive(Debug, Clone)]
struct Resolved {
    link: String,
    what: String,
    cut_off: Option<u16>,
    netns: Option<String>,
    iface: String,
}

impl LabCut {
    /// Whether `t`, its servers' edges on sockets of kind `edges`, has its link, its frames take
    /// it, and its time is more than 0 and at most [`MAX_DOWN`].
    pub fn check(&self, t: &Topology, edges: Option<EdgeKind>) -> Result<(), DemoError> {
        self.resolve(t, edges).map(drop)
    }

    /// Its link in `t`: between servers, the one from A to B, or else the one from B to A.
    fn resolve(&self, t: &Topology, edges: Option<EdgeKind>) -> Result<Resolved, DemoError> {
        if matches!(self.link, CutLink::Between(..)) && edges != Some(EdgeKind::Xdp) {
            return Err(DemoError::Failed(
                "no link between servers to cut: only over AF_XDP (--transport xdp) do the \
                 servers' frames take those links; over packet sockets (--transport udp) they \
                 take the management network"
                    .into(),
            ));
        }
        if self.down > MAX_DOWN || self.down.is_zero() {
            return Err(DemoError::Failed(format!(
                "a link is cut for more than 0 and at most {} s, not {} s",
                MAX_DOWN.as_secs(),
                self.down.as_secs_f64()
            )));
        }
        match self.link {
            CutLink::Between(a, b) => {
                let links = t.links();
                // Two servers may have a link each way (a ring of two): the one from A to B.
                let link = links.iter().find(|&&l| l == (a, b));
                let Some(&(from, to)) = link.or_else(|| links.iter().find(|&&l| l == (b, a)))
                else {
                    return Err(DemoError::Failed(format!(
                        "no link between servers {a} and {b} to cut: the lab's links join {}",
                        links
                            .iter()
                            .map(|(x, y)| format!("{x}-{y}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                Ok(Resolved {
                    link: format!("{from}-{to}"),
                    what: format!("the link from server {from} to server {to}"),
                    cut_off: None,
                    netns: Some(t.server_netns(from)),
                    iface: Topology::link_names(from, to).0,
                })
            }
            CutLink::Management(p) if p < t.servers => Ok(Resolved {
                link: format!("mgmt-{p}"),
                what: format!("server {p}'s management link"),
                cut_off: Some(p),
                netns: None,
                iface: t.mgmt_link(p),
            }),
            CutLink::Management(p) => Err(DemoError::Failed(format!(
                "no server {p} to cut off: the lab's servers are 0 to {}",
                t.servers - 1
            ))),
        }
    }
}

/// A link cut.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Cut {
    /// `A-B`, the link from server A to B (`to{B}` in A's namespace), or `mgmt-P`, server P's
    /// management link; and in words.
    pub link: String,
    pub what: String,
    /// The server a cut of its management link cut off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_off: Option<u16>,
    /// Where the download or the run was when it went down, and when it came up again, in the
    /// units [`Cuts::poll`] was given (`ftc lab demo`: bytes arrived; `ftc lab run`:
    /// milliseconds since the chain was deployed).
    #[serde(rename = "at_bytes")]
    pub at: u64,
    #[serde(rename = "up_at_bytes")]
    pub up_at: u64,
    /// How long it was down, in seconds (from the `ip link set down` returning to the `up`
    /// starting).
    pub down_s: f64,
}

/// A cut that a download or a run ended before: its link in words, and its time in the units of
/// [`Cuts::poll`].
pub type Missed = (String, u64);

/// A link that is down: it goes up again when dropped.
#[derive(Debug)]
struct Down {
    /// Its place in the order the links went down (1: the first).
    seq: usize,
    cut: Cut,
    /// `ip -n NETNS link set IFACE up`; `None` once run, or left to another cut of the link.
    up: Option<Op>,
    since: Instant,
    until: Instant,
}

impl Down {
    /// Brings the link up; the cut it made, or why the link stays down.
    fn restore(mut self, arrived: u64) -> Result<Cut, DemoError> {
        let cut = Cut {
            up_at: arrived,
            down_s: self.since.elapsed().as_secs_f64(),
            ..std::mem::take(&mut self.cut)
        };
        if let Some(up) = self.up.take() {
            up.run()
                .map_err(|e| DemoError::Failed(format!("bringing a cut link up again: {e}")))?;
        }
        Ok(cut)
    }
}

impl Drop for Down {
    /// A demo that ends early (an error, a panic) leaves no link of the lab down.
    fn drop(&mut self) {
        if let Some(up) = self.up.take() {
            let _ = up.run();
        }
    }
}

/// A cut still to come.
#[derive(Debug)]
struct Due {
    link: Resolved,
    /// The bytes of the download it waits for, and how long it stays down.
    at: u64,
    down: Duration,
}

/// The cuts of one download or run, in the order of their times: each goes down once the
/// download or the run has come to it ([`Cuts::poll`]) and up again once its time is over.
#[derive(Debug)]
pub struct Cuts {
    /// Still to come, the last first.
    due: Vec<Due>,
    down: Vec<Down>,
    /// The cuts over, each with its place in the order they went down.
    done: Vec<(usize, Cut)>,
    /// Links taken down so far.
    made: usize,
}

impl Cuts {
    /// The cuts of `cuts` in `t`, their times ([`LabCut::at`]) times `scale` in the units of
    /// [`Cuts::poll`] (a download's bytes, a run's milliseconds); an error names a cut that is
    /// not of a link of the lab, or too long ([`LabCut::check`]).
    pub fn new(
        t: &Topology,
        edges: Option<EdgeKind>,
        cuts: &[LabCut],
        scale: f64,
    ) -> Result<Cuts, DemoError> {
        let mut due = Vec::with_capacity(cuts.len());
        // Last first, and of those due at once, the first given last.
        for c in cuts.iter().rev() {
            due.push(Due {
                link: c.resolve(t, edges)?,
                at: (scale * c.at.max(0.0)) as u64,
                down: c.down,
            });
        }
        due.sort_by_key(|d| std::cmp::Reverse(d.at));
        Ok(Cuts {
            due,
            down: Vec::new(),
            done: Vec::new(),
            made: 0,
        })
    }

    /// With the download or the run at `arrived`: takes down the links now due, brings up those
    /// whose time is over; the cuts that ended now.
    pub fn poll(&mut self, arrived: u64) -> Result<Vec<Cut>, DemoError> {
        let ended = self.done.len();
        let now = Instant::now();
        while let Some(i) = self.down.iter().position(|d| d.until <= now) {
            let mut over = self.down.swap_remove(i);
            // Cuts of one link that overlap: it comes up when the last of them is over.
            if self.down.iter().any(|d| d.up == over.up) {
                over.up = None;
            }
            let seq = over.seq;
            self.done.push((seq, over.restore(arrived)?));
        }
        while self.due.last().is_some_and(|d| arrived >= d.at) {
            let due = self.due.pop().expect("checked");
            let Resolved {
                link,
                what,
                cut_off,
                netns,
                iface,
            } = due.link;
            let set = |state| Op::ip(netns.as_deref(), ["link", "set", iface.as_str(), state]);
            set("down")
                .run()
                .map_err(|e| DemoError::Failed(format!("cutting {what}: {e}")))?;
            let since = Instant::now();
            self.made += 1;
            self.down.push(Down {
                seq: self.made,
                cut: Cut {
                    link,
                    what,
                    cut_off,
                    at: arrived,
                    ..Cut::default()
                },
                up: Some(set("up")),
                since,
                until: since + due.down,
            });
        }
        Ok(self.done[ended..].iter().map(|(_, c)| c.clone()).collect())
    }

    /// At the end of the download or the run (at `arrived`): every link up again; the cuts made,
    /// and those it ended before.
    pub fn finish(mut self, arrived: u64) -> Result<(Vec<Cut>, Vec<Missed>), DemoError> {
        for d in std::mem::take(&mut self.down) {
            let seq = d.seq;
            self.done.push((seq, d.restore(arrived)?));
        }
        self.done.sort_by_key(|&(seq, _)| seq);
        let missed = self
            .due
            .iter()
            .rev()
            .map(|d| (d.link.what.clone(), d.at))
            .collect();
        let done = std::mem::take(&mut self.done);
        Ok((done.into_iter().map(|(_, cut)| cut).collect(), missed))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ftc_chain::spec::ChainSpec;

    use super::*;
    use crate::lab::topology::Layout;

    fn lab(file: &str) -> Topology {
        let path = format!("{}/../specs/{file}", env!("CARGO_MANIFEST_DIR"));
        let spec = ChainSpec::load(Path::new(&path)).unwrap();
        Topology::new(&spec, Layout::Ring, "cuts".parse().unwrap(), 5).unwrap()
    }

    const XDP: Option<EdgeKind> = Some(EdgeKind::Xdp);

    fn cut(a: u16, b: u16, at: f64) -> LabCut {
        LabCut {
            link: CutLink::Between(a, b),
            at,
            down: Duration::from_millis(500),
        }
    }

    /// Cuts name the lab's links in its own order, the one from A to B where there are two, and
    /// a server's management link; a cut the download ends before is a violation, and without a
    /// cut made no command runs.
    #[test]
    fn cuts_name_the_lab_s_links_and_those_never_made_are_violations() {
        let mgmt = LabCut {
            link: CutLink::Management(2),
            ..cut(0, 0, 0.75)
        };
        let cuts = [cut(2, 1, 0.5), cut(0, 2, 0.25), mgmt];
        let cuts = Cuts::new(&lab("ch-rec.toml"), XDP, &cuts, 1000.0);
        let (made, missed) = cuts.unwrap().finish(100).unwrap();
        assert!(made.is_empty());
        let what = |w: &str, at| (w.to_string(), at);
        assert_eq!(
            missed,
            [
                what("the link from server 2 to server 0", 250),
                what("the link from server 1 to server 2", 500),
                what("server 2's management link", 750)
            ]
        );
        let two = lab("ch-2.toml");
        for (a, b) in [(0, 1), (1, 0)] {
            let (_, missed) = Cuts::new(&two, XDP, &[cut(a, b, 1.0)], 10.0)
                .unwrap()
                .finish(0)
                .unwrap();
            assert_eq!(
                missed[0].0,
                format!("the link from server {a} to server {b}")
            );
        }
        let ch_rec = lab("ch-rec.toml");
        let none = cut(1, 3, 0.5).check(&ch_rec, XDP).unwrap_err();
        assert_eq!(
            none.to_string(),
            "no link between servers 1 and 3 to cut: the lab's links join 0-1, 1-2, 2-0"
        );
        let stranger = LabCut {
            link: CutLink::Management(3),
            ..cut(0, 0, 0.5)
        };
        assert_eq!(
            stranger.check(&ch_rec, XDP).unwrap_err().to_string(),
            "no server 3 to cut off: the lab's servers are 0 to 2"
        );
        // Over packet sockets the servers' frames take the management network: no link
        // between servers to cut, but a server can still be cut off.
        for edges in [Some(EdgeKind::Packet), None] {
            let err = cut(0, 1, 0.5).check(&ch_rec, edges).unwrap_err();
            assert!(
                err.to_string()
                    .contains("only over AF_XDP (--transport xdp)"),
                "{err}"
            );
            let mgmt = LabCut {
                link: CutLink::Management(1),
                ..cut(0, 0, 0.5)
            };
            mgmt.check(&ch_rec, edges).unwrap();
        }
        for down in [Duration::ZERO, MAX_DOWN + Duration::from_millis(1)] {
            let long = LabCut {
                down,
                ..cut(0, 1, 0.5)
            };
            let err = long.check(&ch_rec, XDP).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("a link is cut for more than 0 and at most 10 s, not "),
                "{err}"
            );
        }
    }
}
