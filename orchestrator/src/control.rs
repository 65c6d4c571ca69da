//! Control messages between the orchestrator and the servers (and between servers, for state
//! transfer), and their checked, authenticated byte form.
//!
//! A frame is
//!
//! ```text
//! magic "FTCC" | version u8 = 6 | kind u8 | body length u32 (big-endian) | body | tag [32]
//! ```
//!
//! where the tag is keyed BLAKE3 (its MAC mode) over the header and the body, with a 32-byte key
//! derived from the deployment's shared secret by BLAKE3's key derivation ([`Key`]). Version 1
//! used HMAC-SHA256, which moved a large state at half the speed (about 1.6 GB/s against 3.6
//! GB/s on one core of this project's machine). Version 4 added the run id (below) to `Assign`,
//! `Recover`, `FetchGroup` and `GroupState`. Version 5 added the challenge (below): the
//! orchestrator's `Challenge` and the nonce of the node's `Join`; the launch token (below) to
//! `Join`; and the run id to `Heartbeat`, `Ready`, `TransferFailed` and `Resumed`. Version 6
//! added the challenge of state transfers (below): the source's `TransferChallenge` and the nonce
//! of the replacement's `FetchGroup`. Version 7 added to `Join` what a node that already serves
//! says as it rejoins (below). Decoding
//! checks the header, then verifies the tag (in constant time) before it looks at the body, so a
//! party without the key cannot make the parser see any body byte it chose. Integers are
//! big-endian; a socket address is a family byte (4 or 6), the IP address and the port (IPv6
//! flow information and scope id are not carried); a list is a u16 count followed by its items;
//! an optional value is a flag byte (0 or 1) followed, when 1, by the value.
//!
//! A run id is a random u64 an orchestrator draws when it starts, told to its nodes in their
//! challenge, `Assign` or `Recover`: a state transfer names it, and a source answers only a
//! request of its own run, so that a request of an earlier run with the same secret (recorded
//! and replayed, say) neither gets the state nor fences the source to the epoch it names. The
//! node's messages to the orchestrator name it too, and the orchestrator ignores (and counts)
//! those of another run ([`Coordinator::other_run_messages`](crate::coordinator::Coordinator)).
//!
//! A control connection starts with a challenge: the orchestrator, as it accepts it, sends a
//! `Challenge` of its run id, a fresh random nonce and its heartbeat period (a node of another
//! period says so and does not join: its beats would be missed, and it replaced as failed, or
//! cost more than asked), and the node's `Join` carries that nonce
//! (under the tag, like every field); a `Join` whose nonce is not the one its connection was
//! given is refused. So a `Join` recorded on one connection and replayed on another, in the same
//! run or another, is not taken for the node that sent it (version 4 took it: the replayer held
//! the position, and got its orders). The nonce comes from the kernel's random source
//! ([`process::unguessable`](crate::process::unguessable)).
//!
//! A state transfer starts with a challenge too: the source, as it accepts the connection, sends
//! a `TransferChallenge` of its run id and a fresh random nonce, and the replacement's
//! `FetchGroup` carries that nonce; a `FetchGroup` whose nonce is not the one its connection was
//! given is refused, unanswered, and its connection closed. So a `FetchGroup` recorded on one
//! connection and replayed on others while its epoch is current makes the source export nothing
//! (version 5 answered each replay, and a live node exported the group's state, up to 1 GiB, on
//! its data path's thread at every one of them that did not overlap another). A replacement
//! fetches only from a source whose challenge names the run it fetches for. The transfer's
//! challenge is a kind of its own, not a `Challenge`: it has no heartbeat period to carry, and a
//! node that took a transfer port for the orchestrator's (or the other way round) is told so by
//! the kind, not by a challenge it would misread.
//!
//! A node that serves in the chain and loses its orchestrator (the process died, or the connection
//! broke) serves on and connects again, and its `Join` then says so: the epoch it is in and the
//! epoch of the routing it follows ([`Serving`]). An orchestrator that has just started adopts a
//! chain whose nodes all rejoin that way; a running one takes a node back at the position it
//! holds (module `coordinator`).
//!
//! A node the orchestrator's launcher started carries the token of its launch in its `Join`
//! (version 5 too), and a position the launcher launched a node at takes only the `Join` of its
//! last launch: a node of an earlier launch (one that was slow to start, and launched again) is
//! refused ([`Launcher::refusal`](crate::process::launcher::Launcher::refusal)).
//!
//! [`GroupState`](Message::GroupState) bodies may be hundreds of megabytes: [`write_message`]
//! and [`read_message`] stream the state bytes without copying them into another buffer, and
//! compute the tag chunk by chunk as the bytes go out or come in, so that authenticating a
//! large state overlaps with moving it instead of adding to it.

mod body;

pub(crate) use body::Reader;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// The largest body [`read_message`] should accept on a state-transfer connection: 1 GiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 30;
/// The largest group state a transfer carries: what fits a body of [`DEFAULT_MAX_BODY`] beside
/// the `GroupState` message's fixed part.
pub const MAX_GROUP_STATE: usize = DEFAULT_MAX_BODY - body::GROUP_STATE_FIXED;
/// The largest body a control connection (orchestrator ↔ server) needs: 64 KiB, enough for a
/// peer list of a full ring of 255 servers with IPv6 addresses.
pub const CONTROL_MAX_BODY: usize = 64 << 10;

/// The control protocol version this build speaks.
pub const VERSION: u8 = 7;
const MAGIC: [u8; 4] = *b"FTCC";
/// Magic, version, kind, body length.
const HEADER_LEN: usize = 4 + 1 + 1 + 4;
/// A keyed BLAKE3 hash.
const TAG_LEN: usize = 32;
/// The bytes of a body tail written or read, and added to the tag, at a time.
const STREAM_CHUNK: usize = 256 << 10;
/// The most [`read_message`] allocates ahead of the bytes that arrived.
const READ_AHEAD: usize = 16 << 20;

/// The bytes of a challenge's nonce (and of a launch's token).
pub const NONCE_LEN: usize = 16;

/// A random value nobody can guess: a challenge's nonce, a launch's token.
pub type Nonce = [u8; NONCE_LEN];

/// One server as its peers reach it: its data-path address and its state-transfer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub position: u16,
    pub data: SocketAddr,
    pub transfer: SocketAddr,
}

/// What a node that already serves says as it joins again: a node whose orchestrator went
/// away serves on, and rejoins the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Serving {
    /// The epoch it is in: its last `Assign`, `Fence` or `Reroute`.
    pub epoch: u32,
    /// The epoch of the routing it follows: its last `Assign` or `Reroute` (0 for a replacement
    /// not rerouted yet). Below `epoch`, it is fenced and waits for a reroute.
    pub routed: u32,
}

impl Serving {
    /// Whether frames flow through it: it follows the routing of the epoch it is in.
    pub fn flowing(&self) -> bool {
        self.routed == self.epoch
    }
}

/// One group a replacement must fetch, and from whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fetch {
    /// The middlebox index j of the replication group G(j).
    pub group: u8,
    /// Whether the replacement heads G(j): it then sets its dependency vector to the fetched MAX.
    pub as_head: bool,
    /// The position of the server to fetch from.
    pub source: u16,
    /// That server's state-transfer address.
    pub addr: SocketAddr,
}

/// A control message. The comments say who sends it to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Node → orchestrator: a server (initial or replacement) is up at `position`, running the
    /// chain whose spec and mode have the fingerprint `chain`
    /// ([`chain_fingerprint`](crate::process::chain_fingerprint)), in answer to the
    /// [`Challenge`](Message::Challenge) of `nonce`; `launch` is the token of the launch that
    /// started it, if the orchestrator's launcher did
    /// ([`LAUNCH_TOKEN_ENV`](crate::process::launcher::LAUNCH_TOKEN_ENV)); `serving` when it
    /// already serves at `position` and rejoins, having lost its orchestrator.
    Join {
        position: u16,
        pid: u32,
        chain: u64,
        data: SocketAddr,
        transfer: SocketAddr,
        nonce: Nonce,
        launch: Option<Nonce>,
        serving: Option<Serving>,
    },
    /// Node → orchestrator, every heartbeat period, in the orchestrator's run `run` (as are the
    /// node's messages below).
    Heartbeat {
        run: u64,
        position: u16,
        epoch: u32,
        seq: u64,
    },
    /// Node → orchestrator: a replacement holds all its state (`bytes` moved).
    Ready {
        run: u64,
        position: u16,
        epoch: u32,
        bytes: u64,
    },
    /// Node → orchestrator: a replacement could not fetch `group` from `source`.
    TransferFailed {
        run: u64,
        position: u16,
        epoch: u32,
        group: u8,
        source: u16,
    },
    /// Node → orchestrator: the node applied a [`Reroute`](Message::Reroute).
    Resumed { run: u64, position: u16, epoch: u32 },
    /// Orchestrator → node: initial deployment; the node runs at `position` among `peers`, in
    /// the orchestrator's run `run`.
    Assign {
        run: u64,
        epoch: u32,
        position: u16,
        peers: Vec<Peer>,
    },
    /// Orchestrator → node: a new epoch: drop frames of older epochs, discard held logs. Repeated
    /// within one epoch, with a longer `failed` list, when another failure joins the recovery.
    Fence { epoch: u32, failed: Vec<u16> },
    /// Orchestrator → replacement: fetch these groups, in the orchestrator's run `run`. A later
    /// `Recover` of the same epoch replaces the fetches of the groups it names (their source
    /// died).
    Recover {
        run: u64,
        epoch: u32,
        fetch: Vec<Fetch>,
    },
    /// Orchestrator → node: the new neighbours; resume forwarding.
    Reroute { epoch: u32, peers: Vec<Peer> },
    /// Orchestrator → node: shut down.
    Stop,
    /// Orchestrator → node: the node's control connection is refused (`reason`), and closed.
    Refused { reason: String },
    /// Orchestrator → node, first on every control connection: the orchestrator's run, the
    /// nonce the node's `Join` must carry, and the heartbeat period (nanoseconds) it expects:
    /// a node of another period refuses to join (it would be declared failed, or cost beats).
    Challenge {
        run: u64,
        nonce: Nonce,
        heartbeat_ns: u64,
    },
    /// Source → replacement, first on every state-transfer connection: the source's run, and the
    /// nonce the replacement's [`FetchGroup`](Message::FetchGroup) must carry.
    TransferChallenge { run: u64, nonce: Nonce },
    /// Replacement → source: send the state of `group`, in answer to the
    /// [`TransferChallenge`](Message::TransferChallenge) of `nonce`; a source of another run does
    /// not, nor one that gave its connection another nonce.
    FetchGroup {
        run: u64,
        epoch: u32,
        group: u8,
        as_head: bool,
        nonce: Nonce,
    },
    /// Source → replacement: the state of `group`, opaque bytes.
    GroupState {
        run: u64,
        epoch: u32,
        group: u8,
        state: Vec<u8>,
    },
}

impl Message {
    /// The run it names, for the kinds that carry one.
    pub fn run(&self) -> Option<u64> {
        match self {
            Message::Heartbeat { run, .. }
            | Message::Ready { run, .. }
            | Message::TransferFailed { run, .. }
            | Message::Resumed { run, .. }
            | Message::Assign { run, .. }
            | Message::Recover { run, .. }
            | Message::Challenge { run, .. }
            | Message::TransferChallenge { run, .. }
            | Message::FetchGroup { run, .. }
            | Message::GroupState { run, .. } => Some(*run),
            Message::Join { .. }
            | Message::Fence { .. }
            | Message::Reroute { .. }
            | Message::Stop
            | Message::Refused { .. } => None,
        }
    }
}

/// Why bytes are not a valid control frame (or could not be read).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control secret is empty")]
    EmptySecret,
    #[error("not a control frame: it starts with \"{}\", not \"FTCC\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("control protocol version {0} is not supported (this build speaks version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("a {kind} body holds text that is not UTF-8")]
    BadText { kind: &'static str },
    #[error("unknown control message kind {0}")]
    UnknownKind(u8),
    #[error("control frame body of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("control frame truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    #[error("{0} bytes after the control frame's tag")]
    TrailingBytes(usize),
    #[error("control frame tag does not verify (wrong key or altered frame)")]
    BadTag,
    #[error("{kind} body ends inside a field")]
    BodyTooShort { kind: &'static str },
    #[error("{kind} body has {extra} bytes left over")]
    BodyTooLong { kind: &'static str, extra: usize },
    #[error("{kind} body: a list of {count} items cannot fit in the {remaining} bytes left")]
    BadCount {
        kind: &'static str,
        count: u16,
        remaining: usize,
    },
    #[error("{kind} body: address family {family} (expected 4 or 6)")]
    BadAddressFamily { kind: &'static str, family: u8 },
    #[error("{kind} body: flag byte {value} (expected 0 or 1)")]
    BadFlag { kind: &'static str, value: u8 },
    #[error(
        "a state transfer request that does not carry its connection's challenge (recorded on \
         another connection, replayed?)"
    )]
    NotChallenged,
    #[error("the connection closed between frames")]
    Closed,
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
}

/// The BLAKE3 key-derivation context of the control MAC key: a secret used for anything else
/// derives other keys.
pub const KEY_CONTEXT: &str = "ftc 2025 control frames: keyed BLAKE3 MAC, protocol version 2";

/// The shared secret that authenticates control frames: the key of keyed BLAKE3, derived from
/// the secret ([`KEY_CONTEXT`]).
#[derive(Clone)]
pub struct Key(blake3::Hasher);

impl Key {
    /// A key from the deployment's secret bytes (any length); an empty secret is refused.
    pub fn new(secret: &[u8]) -> Result<Key, ControlError> {
        if secret.is_empty() {
            return Err(ControlError::EmptySecret);
        }
        let key = blake3::derive_key(KEY_CONTEXT, secret);
        Ok(Key(blake3::Hasher::new_keyed(&key)))
    }

    /// The key the chain's servers hash flows with ([`ftc_node::nsh::share_flow_seed`]): this
    /// key's MAC of a label of its own, so as secret as the deployment's secret.
    pub fn flow_seed(&self) -> u64 {
        let tag = self.tag(&[b"ftc flow hash seed"]);
        u64::from_le_bytes(tag[..8].try_into().expect("a tag is longer"))
    }

    fn mac(&self, parts: &[&[u8]]) -> blake3::Hasher {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        self.mac(parts).finalize().into()
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), ControlError> {
        check_tag(&self.mac(parts), tag)
    }
}

/// Whether `mac`'s tag is `tag`, compared in constant time ([`blake3::Hash`]'s equality).
fn check_tag(mac: &blake3::Hasher, tag: &[u8]) -> Result<(), ControlError> {
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| ControlError::BadTag)?;
    if mac.finalize() == blake3::Hash::from(tag) {
        Ok(())
    } else {
        Err(ControlError::BadTag)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A message laid out for sending: header and fixed part of the body in one buffer, the opaque
/// tail (a group's state) borrowed from the message, and the tag.
struct Sealed<'a> {
    head: Vec<u8>,
    tail: &'a [u8],
    tag: [u8; TAG_LEN],
}

fn seal<'a>(msg: &'a Message, key: &Key) -> Sealed<'a> {
    let (head, tail) = lay_out(msg);
    let tag = key.tag(&[&head, tail]);
    Sealed { head, tail, tag }
}

/// A message's header with the fixed part of its body, and the opaque tail.
fn lay_out(msg: &Message) -> (Vec<u8>, &[u8]) {
    let mut head = start(body::kind(msg));
    let tail = body::encode(msg, &mut head);
    finish(&mut head, tail.len());
    (head, tail)
}

/// A header of a `kind` frame, its length still 0, ready for the fixed part of the body.
fn start(kind: u8) -> Vec<u8> {
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&[VERSION, kind]);
    head.extend_from_slice(&[0; 4]);
    head
}

/// Sets the body length of `head`, a header and a fixed part, followed by a tail of `tail` bytes.
fn finish(head: &mut [u8], tail: usize) {
    let len = head.len() - HEADER_LEN + tail;
    let len = u32::try_from(len).expect("a control message body is at most 4 GiB");
    head[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// The frame of `msg`, authenticated with `key`.
///
/// # Panics
/// If the body exceeds 4 GiB (a group state that large cannot be framed).
pub fn encode(msg: &Message, key: &Key) -> Vec<u8> {
    let Sealed {
        mut head,
        tail,
        tag,
    } = seal(msg, key);
    head.reserve_exact(tail.len() + TAG_LEN);
    head.extend_from_slice(tail);
    head.extend_from_slice(&tag);
    head
}

/// Writes the frame of `msg` to `w`; a group's state goes straight from the message to `w`, in
/// chunks that are added to the tag as they go.
///
/// # Panics
/// Like [`encode`].
pub fn write_message(w: &mut impl Write, msg: &Message, key: &Key) -> io::Result<()> {
    let (head, tail) = lay_out(msg);
    write_frame(w, head, tail, key)
}

/// Writes the frame of [`Message::GroupState`] `{ run, epoch, group, state }` to `w`, with the
/// state borrowed (a source serves bytes it keeps without copying them into a message): the same
/// bytes as [`write_message`] writes.
///
/// # Panics
/// Like [`encode`].
pub fn write_group_state(
    w: &mut impl Write,
    run: u64,
    epoch: u32,
    group: u8,
    state: &[u8],
    key: &Key,
) -> io::Result<()> {
    let mut head = start(body::GROUP_STATE);
    body::put_group_state(&mut head, run, epoch, group);
    finish(&mut head, state.len());
    write_frame(w, head, state, key)
}

/// Writes a frame laid out as `head` and `tail`, and its tag, computed chunk by chunk as the
/// tail goes out.
fn write_frame(w: &mut impl Write, mut head: Vec<u8>, tail: &[u8], key: &Key) -> io::Result<()> {
    if tail.is_empty() {
        let tag = key.tag(&[&head]);
        head.extend_from_slice(&tag);
        return w.write_all(&head);
    }
    let mut mac = key.mac(&[&head]);
    w.write_all(&head)?;
    for chunk in tail.chunks(STREAM_CHUNK) {
        mac.update(chunk);
        w.write_all(chunk)?;
    }
    w.write_all(mac.finalize().as_bytes())
}

/// What the header says, once checked.
struct Header {
    kind: u8,
    len: usize,
}

fn check_header(header: &[u8; HEADER_LEN], max_body: usize) -> Result<Header, ControlError> {
    let magic: [u8; 4] = header[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(ControlError::BadMagic(magic));
    }
    if header[4] != VERSION {
        return Err(ControlError::UnsupportedVersion(header[4]));
    }
    let kind = header[5];
    body::check_kind(kind)?;
    let len = u32::from_be_bytes(header[6..].try_into().expect("4 bytes"));
    // A u32 always fits a usize on the 32- and 64-bit targets this runs on.
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_body {
        return Err(ControlError::TooLong { len, max: max_body });
    }
    Ok(Header { kind, len })
}

/// The message in `frame`, which must be exactly one frame authenticated with `key` whose body
/// is at most `max_body` bytes.
pub fn decode(frame: &[u8], key: &Key, max_body: usize) -> Result<Message, ControlError> {
    let truncated = |needed| ControlError::Truncated {
        needed,
        got: frame.len(),
    };
    let header: &[u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .ok_or(truncated(HEADER_LEN))?
        .try_into()
        .expect("HEADER_LEN bytes");
    let Header { kind, len } = check_header(header, max_body)?;
    let total = HEADER_LEN + len + TAG_LEN;
    if frame.len() < total {
        return Err(truncated(total));
    }
    if frame.len() > total {
        return Err(ControlError::TrailingBytes(frame.len() - total));
    }
    let (signed, tag) = frame.split_at(HEADER_LEN + len);
    key.verify(&[signed], tag)?;
    let (fixed, tail) = body::split(kind, &signed[HEADER_LEN..]);
    body::decode(kind, fixed, tail.to_vec())
}

/// Reads one frame from `r` and returns its message. The header is checked before the body is
/// read, and memory grows only with the bytes that actually arrive, so a hostile length cannot
/// make it allocate more than the sender sends. A group's state is read straight into the
/// message's buffer. End of input before the first byte is [`ControlError::Closed`].
pub fn read_message(
    r: &mut impl Read,
    key: &Key,
    max_body: usize,
) -> Result<Message, ControlError> {
    let mut header = [0; HEADER_LEN];
    let got = read_up_to(r, &mut header)?;
    if got == 0 {
        return Err(ControlError::Closed);
    }
    if got < HEADER_LEN {
        return Err(ControlError::Truncated {
            needed: HEADER_LEN,
            got,
        });
    }
    let Header { kind, len } = check_header(&header, max_body)?;
    let total = HEADER_LEN + len + TAG_LEN;
    let fixed_len = body::fixed_len(kind).min(len);
    let mut mac = key.mac(&[&header]);
    let fixed = read_exactly(r, fixed_len, HEADER_LEN, total, &mut mac)?;
    let tail = read_exactly(r, len - fixed_len, HEADER_LEN + fixed_len, total, &mut mac)?;
    let mut tag = [0; TAG_LEN];
    let got = read_up_to(r, &mut tag)?;
    if got < TAG_LEN {
        return Err(ControlError::Truncated {
            needed: total,
            got: total - TAG_LEN + got,
        });
    }
    check_tag(&mac, &tag)?;
    body::decode(kind, &fixed, tail)
}

/// Reads until `buf` is full or the input ends; returns how many bytes it read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `len` bytes, adding them to `mac` chunk by chunk as they arrive; the buffer
/// runs at most [`READ_AHEAD`] bytes ahead of them. `before` is how many bytes of the frame came
/// before them and `total` the frame's length, for the error.
fn read_exactly(
    r: &mut impl Read,
    len: usize,
    before: usize,
    total: usize,
    mac: &mut blake3::Hasher,
) -> Result<Vec<u8>, ControlError> {
    let mut buf = Vec::with_capacity(len.min(READ_AHEAD));
    while buf.len() < len {
        let start = buf.len();
        let want = (len - start).min(STREAM_CHUNK);
        // Zeroed, then read into with calls as large as the chunk: the socket hands over what
        // it holds in one call, where `read_to_end` would start again at small reads.
        buf.resize(start + want, 0);
        let got = read_up_to(r, &mut buf[start..])?;
        if got < want {
            return Err(ControlError::Truncated {
                needed: total,
                got: before + start + got,
            });
        }
        mac.update(&buf[start..]);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests;
