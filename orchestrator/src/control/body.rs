//! The bodies of control frames: one kind byte per message, fields in declaration order.
//!
//! Every body is a fixed part, parsed field by field, and (for [`Message::GroupState`] only) an
//! opaque tail: the group's state, which is never copied into the fixed part's buffer. The
//! encoding is canonical: a body that decodes encodes to the same bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ControlError, Fetch, Message, Nonce, Peer, Serving};

const JOIN: u8 = 1;
const HEARTBEAT: u8 = 2;
const READY: u8 = 3;
const TRANSFER_FAILED: u8 = 4;
const RESUMED: u8 = 5;
const ASSIGN: u8 = 6;
const FENCE: u8 = 7;
const RECOVER: u8 = 8;
const REROUTE: u8 = 9;
const STOP: u8 = 10;
const FETCH_GROUP: u8 = 11;
pub(super) const GROUP_STATE: u8 = 12;
const REFUSED: u8 = 13;
const CHALLENGE: u8 = 14;
const TRANSFER_CHALLENGE: u8 = 15;

/// The fixed part of a GroupState body: run u64, epoch u32, group u8.
pub(super) const GROUP_STATE_FIXED: usize = 8 + 4 + 1;
/// The smallest encoded socket address: family, IPv4 address, port.
const MIN_ADDR: usize = 1 + 4 + 2;
const MIN_PEER: usize = 2 + 2 * MIN_ADDR;
const MIN_FETCH: usize = 1 + 1 + 2 + MIN_ADDR;

pub(super) fn kind(msg: &Message) -> u8 {
    match msg {
        Message::Join { .. } => JOIN,
        Message::Heartbeat { .. } => HEARTBEAT,
        Message::Ready { .. } => READY,
        Message::TransferFailed { .. } => TRANSFER_FAILED,
        Message::Resumed { .. } => RESUMED,
        Message::Assign { .. } => ASSIGN,
        Message::Fence { .. } => FENCE,
        Message::Recover { .. } => RECOVER,
        Message::Reroute { .. } => REROUTE,
        Message::Stop => STOP,
        Message::FetchGroup { .. } => FETCH_GROUP,
        Message::GroupState { .. } => GROUP_STATE,
        Message::Refused { .. } => REFUSED,
        Message::Challenge { .. } => CHALLENGE,
        Message::TransferChallenge { .. } => TRANSFER_CHALLENGE,
    }
}

fn name(kind: u8) -> &'static str {
    match kind {
        JOIN => "Join",
        HEARTBEAT => "Heartbeat",
        READY => "Ready",
        TRANSFER_FAILED => "TransferFailed",
        RESUMED => "Resumed",
        ASSIGN => "Assign",
        FENCE => "Fence",
        RECOVER => "Recover",
        REROUTE => "Reroute",
        STOP => "Stop",
        FETCH_GROUP => "FetchGroup",
        GROUP_STATE => "GroupState",
        REFUSED => "Refused",
        CHALLENGE => "Challenge",
        TRANSFER_CHALLENGE => "TransferChallenge",
        _ => "unknown",
    }
}

pub(super) fn check_kind(kind: u8) -> Result<(), ControlError> {
    if (JOIN..=TRANSFER_CHALLENGE).contains(&kind) {
        Ok(())
    } else {
        Err(ControlError::UnknownKind(kind))
    }
}

/// How many leading body bytes of a `kind` message are parsed; the rest is the opaque tail.
pub(super) fn fixed_len(kind: u8) -> usize {
    if kind == GROUP_STATE {
        GROUP_STATE_FIXED
    } else {
        usize::MAX
    }
}

/// A body split into its fixed part and its opaque tail.
pub(super) fn split(kind: u8, body: &[u8]) -> (&[u8], &[u8]) {
    body.split_at(fixed_len(kind).min(body.len()))
}

/// Appends the fixed part of `msg`'s body to `out`; returns the opaque tail.
///
/// # Panics
/// If a list has more than 65,535 items.
pub(super) fn encode<'a>(msg: &'a Message, out: &mut Vec<u8>) -> &'a [u8] {
    match msg {
        Message::Join {
            position,
            pid,
            chain,
            data,
            transfer,
            nonce,
            launch,
            serving,
        } => {
            out.extend_from_slice(&position.to_be_bytes());
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&chain.to_be_bytes());
            put_addr(out, data);
            put_addr(out, transfer);
            out.extend_from_slice(nonce);
            match launch {
                Some(token) => {
                    out.push(1);
                    out.extend_from_slice(token);
                }
                None => out.push(0),
            }
            match serving {
                Some(Serving { epoch, routed }) => {
                    out.push(1);
                    out.extend_from_slice(&epoch.to_be_bytes());
                    out.extend_from_slice(&routed.to_be_bytes());
                }
                None => out.push(0),
            }
        }
        Message::Heartbeat {
            run,
            position,
            epoch,
            seq,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Message::Ready {
            run,
            position,
            epoch,
            bytes,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Message::TransferFailed {
            run,
            position,
            epoch,
            group,
            source,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.push(*group);
            out.extend_from_slice(&source.to_be_bytes());
        }
        Message::Resumed {
            run,
            position,
            epoch,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        Message::Assign {
            run,
            epoch,
            position,
            peers,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
            put_list(out, peers, put_peer);
        }
        Message::Fence { epoch, failed } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_list(out, failed, |out, p| {
                out.extend_from_slice(&p.to_be_bytes())
            });
        }
        Message::Recover { run, epoch, fetch } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            put_list(out, fetch, put_fetch);
        }
        Message::Reroute { epoch, peers } => {
            out.extend_from_slice(&epoch.to_be_bytes());
            put_list(out, peers, put_peer);
        }
        Message::Stop => {}
        Message::FetchGroup {
            run,
            epoch,
            group,
            as_head,
            nonce,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.push(*group);
            out.push(u8::from(*as_head));
            out.extend_from_slice(nonce);
        }
        Message::GroupState {
            run,
            epoch,
            group,
            state,
        } => {
            put_group_state(out, *run, *epoch, *group);
            return state;
        }
        Message::Refused { reason } => put_list(out, reason.as_bytes(), |out, b| out.push(*b)),
        Message::Challenge {
            run,
            nonce,
            heartbeat_ns,
        } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(nonce);
            out.extend_from_slice(&heartbeat_ns.to_be_bytes());
        }
        Message::TransferChallenge { run, nonce } => {
            out.extend_from_slice(&run.to_be_bytes());
            out.extend_from_slice(nonce);
        }
    }
    &[]
}

/// The fixed part of a GroupState body.
pub(super) fn put_group_state(out: &mut Vec<u8>, run: u64, epoch: u32, group: u8) {
    out.extend_from_slice(&run.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(group);
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_peer(out: &mut Vec<u8>, peer: &Peer) {
    out.extend_from_slice(&peer.position.to_be_bytes());
    put_addr(out, &peer.data);
    put_addr(out, &peer.transfer);
}

fn put_fetch(out: &mut Vec<u8>, fetch: &Fetch) {
    out.push(fetch.group);
    out.push(u8::from(fetch.as_head));
    out.extend_from_slice(&fetch.source.to_be_bytes());
    put_addr(out, &fetch.addr);
}

fn put_list<T>(out: &mut Vec<u8>, items: &[T], put: impl Fn(&mut Vec<u8>, &T)) {
    let count = u16::try_from(items.len()).expect("a control list has at most 65,535 items");
    out.extend_from_slice(&count.to_be_bytes());
    for item in items {
        put(out, item);
    }
}

/// Parses a body whose tag has been verified: its fixed part and its opaque tail (empty for
/// every kind but GroupState).
pub(super) fn decode(kind: u8, fixed: &[u8], tail: Vec<u8>) -> Result<Message, ControlError> {
    let mut r = Reader::new(fixed, name(kind));
    let msg = match kind {
        JOIN => Message::Join {
            position: r.u16()?,
            pid: r.u32()?,
            chain: r.u64()?,
            data: r.addr()?,
            transfer: r.addr()?,
            nonce: r.nonce()?,
            launch: match r.flag()? {
                true => Some(r.nonce()?),
                false => None,
            },
            serving: match r.flag()? {
                true => Some(Serving {
                    epoch: r.u32()?,
                    routed: r.u32()?,
                }),
                false => None,
            },
        },
        HEARTBEAT => Message::Heartbeat {
            run: r.u64()?,
            position: r.u16()?,
            epoch: r.u32()?,
            seq: r.u64()?,
        },
        READY => Message::Ready {
            run: r.u64()?,
            position: r.u16()?,
            epoch: r.u32()?,
            bytes: r.u64()?,
        },
        TRANSFER_FAILED => Message::TransferFailed {
            run: r.u64()?,
            position: r.u16()?,
            epoch: r.u32()?,
            group: r.u8()?,
            source: r.u16()?,
        },
        RESUMED => Message::Resumed {
            run: r.u64()?,
            position: r.u16()?,
            epoch: r.u32()?,
        },
        ASSIGN => Message::Assign {
            run: r.u64()?,
            epoch: r.u32()?,
            position: r.u16()?,
            peers: r.list(MIN_PEER, Reader::peer)?,
        },
        FENCE => Message::Fence {
            epoch: r.u32()?,
            failed: r.list(2, Reader::u16)?,
        },
        RECOVER => Message::Recover {
            run: r.u64()?,
            epoch: r.u32()?,
            fetch: r.list(MIN_FETCH, Reader::fetch)?,
        },
        REROUTE => Message::Reroute {
            epoch: r.u32()?,
            peers: r.list(MIN_PEER, Reader::peer)?,
        },
        STOP => Message::Stop,
        FETCH_GROUP => Message::FetchGroup {
            run: r.u64()?,
            epoch: r.u32()?,
            group: r.u8()?,
            as_head: r.flag()?,
            nonce: r.nonce()?,
        },
        GROUP_STATE => Message::GroupState {
            run: r.u64()?,
            epoch: r.u32()?,
            group: r.u8()?,
            state: tail,
        },
        REFUSED => Message::Refused { reason: r.text()? },
        CHALLENGE => Message::Challenge {
            run: r.u64()?,
            nonce: r.nonce()?,
            heartbeat_ns: r.u64()?,
        },
        TRANSFER_CHALLENGE => Message::TransferChallenge {
            run: r.u64()?,
            nonce: r.nonce()?,
        },
        _ => return Err(ControlError::UnknownKind(kind)),
    };
    r.finish()?;
    Ok(msg)
}

/// Reads big-endian fields off the front of a body (or of any record of `kind`); every read
/// checks the remaining length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], kind: &'static str) -> Self {
        Reader { buf, kind }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ControlError> {
        let Some((head, rest)) = self.buf.split_first_chunk::<N>() else {
            return Err(ControlError::BodyTooShort { kind: self.kind });
        };
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ControlError> {
        self.take::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ControlError> {
        self.take().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ControlError> {
        self.take().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ControlError> {
        self.take().map(u64::from_be_bytes)
    }

    fn nonce(&mut self) -> Result<Nonce, ControlError> {
        self.take()
    }

    fn flag(&mut self) -> Result<bool, ControlError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(ControlError::BadFlag {
                kind: self.kind,
                value,
            }),
        }
    }

    fn addr(&mut self) -> Result<SocketAddr, ControlError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.take::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.take::<16>()?)),
            family => {
                return Err(ControlError::BadAddressFamily {
                    kind: self.kind,
                    family,
                })
            }
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    /// A list of bytes that must be UTF-8.
    fn text(&mut self) -> Result<String, ControlError> {
        let bytes = self.list(1, Reader::u8)?;
        String::from_utf8(bytes).map_err(|_| ControlError::BadText { kind: self.kind })
    }

    fn peer(&mut self) -> Result<Peer, ControlError> {
        Ok(Peer {
            position: self.u16()?,
            data: self.addr()?,
            transfer: self.addr()?,
        })
    }

    fn fetch(&mut self) -> Result<Fetch, ControlError> {
        Ok(Fetch {
            group: self.u8()?,
            as_head: self.flag()?,
            source: self.u16()?,
            addr: self.addr()?,
        })
    }

    /// A u16 count, then that many items of at least `min_item` bytes each; the count is checked
    /// against the bytes left before anything is allocated.
    fn list<T>(
        &mut self,
        min_item: usize,
        item: impl Fn(&mut Self) -> Result<T, ControlError>,
    ) -> Result<Vec<T>, ControlError> {
        let count = self.u16()?;
        if usize::from(count) * min_item > self.buf.len() {
            return Err(ControlError::BadCount {
                kind: self.kind,
                count,
                remaining: self.buf.len(),
            });
        }
        (0..count).map(|_| item(self)).collect()
    }

    fn finish(self) -> Result<(), ControlError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ControlError::BodyTooLong {
                kind: self.kind,
                extra: self.buf.len(),
            })
        }
    }
}
