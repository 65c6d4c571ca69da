//! The chain spec: the TOML file an operator writes to describe a chain, parsed and validated.
//!
//! ```toml
//! [chain]
//! name = "ch-rec"       # letters, digits, '-', '_', '.'; at most 64
//! f = 1                 # failures tolerated, 1..=8
//! partitions = 64       # optional, a power of two in 1..=65536
//!
//! [[middlebox]]         # one per middlebox, in traffic order (at most 255)
//! kind = "simple-nat"   # monitor | simple-nat | mazu-nat | gen | firewall | load-balancer
//! threads = 1           # optional, 1..=64: a lane (worker thread) each on its server
//! public_ip = "203.0.113.1"   # the kind's own keys sit in the same table
//! ```
//!
//! [`ChainSpec::load`] and [`ChainSpec::from_toml_str`] reject a bad spec with a [`SpecError`]
//! that names the file, the line and the problem, e.g.
//! `ch-rec.toml:7: middlebox 2 (mazu-nat): unknown key `publicip` (did you mean `public_ip`?)`.
//! Middleboxes are numbered from 0 (m0 … m(k-1)), as everywhere in ftc. The example specs in the
//! repository's `specs/` folder show every kind.
//!
//! How lines are found: the document is parsed into a spanned tree ([`toml::de::DeTable`]);
//! each table's keys are checked against the keys it accepts; each table is then deserialized
//! from its spanned value, so serde errors carry the span of the offending value; last, semantic
//! checks on the typed spec name the offending key as a path, which is resolved in the spanned
//! tree to its line (or to its table's header when the key was left out).

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::ring::{Ring, RingError};

/// A whole chain: its settings and its middleboxes in traffic order.
///
/// Load one with [`ChainSpec::load`] or [`ChainSpec::from_toml_str`]: they validate it and point
/// errors at the file's line. Deserializing it through serde (e.g. `toml::from_str`) validates
/// it too, with less precise locations. A spec built in code can be checked with
/// [`ChainSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawChainSpec")]
pub struct ChainSpec {
    pub chain: ChainSection,
    pub middlebox: Vec<MiddleboxSpec>,
}

/// The `[chain]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    pub name: String,
    /// Failures tolerated.
    pub f: u8,
    /// State partitions per middlebox; a power of two.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
}

fn default_partitions() -> u32 {
    64
}

/// One `[[middlebox]]` entry: its kind with the kind's own keys, and the worker threads it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddleboxSpec {
    pub threads: u16,
    pub kind: MiddleboxKind,
}

/// The built-in middleboxes and their settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiddleboxKind {
    Monitor(MonitorConfig),
    SimpleNat(NatConfig),
    MazuNat(MazuNatConfig),
    Gen(GenConfig),
    Firewall(FirewallConfig),
    LoadBalancer(LoadBalancerConfig),
}

/// What a monitor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CounterMode {
    /// One packet counter per flow (5-tuple).
    PerFlow,
    /// Counters shared by `sharing_level` worker threads each.
    #[default]
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default)]
    pub counters: CounterMode,
    /// How many worker threads share one counter (shared mode).
    #[serde(default = "one")]
    pub sharing_level: u16,
}

/// An inclusive range of ports, written `"10000-60000"` or `"80"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    #[serde(deserialize_with = "de::ipv4")]
    pub public_ip: Ipv4Addr,
    #[serde(default = "default_nat_ports")]
    pub ports: PortRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MazuNatConfig {
    #[serde(deserialize_with = "de::ipv4")]
    pub public_ip: Ipv4Addr,
    #[serde(default = "default_nat_ports")]
    pub ports: PortRange,
    /// Idle timeout of an established TCP mapping, seconds.
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout: u64,
    /// Idle timeout of a TCP mapping after FIN or RST, seconds.
    #[serde(default = "default_tcp_closed_timeout")]
    pub tcp_closed_timeout: u64,
    /// Idle timeout of a UDP (or other) mapping, seconds.
    #[serde(default = "default_udp_timeout")]
    pub udp_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenConfig {
    /// Bytes of state written per packet.
    #[serde(default = "default_state_size")]
    pub state_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// One firewall rule; an absent field matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default)]
    pub proto: Proto,
    /// Source network; a bare address means a /32.
    #[serde(default, deserialize_with = "de::ipv4_net_opt")]
    pub src: Option<Ipv4Net>,
    /// Destination network; a bare address means a /32.
    #[serde(default, deserialize_with = "de::ipv4_net_opt")]
    pub dst: Option<Ipv4Net>,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Checked in order; the first match decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What happens to a packet no rule matches.
    #[serde(default = "default_action")]
    pub default: Action,
    /// Let inbound packets of connections opened outbound pass whatever the rules say.
    #[serde(default)]
    pub allow_established: bool,
    /// What happens to frames that are neither IPv4 nor ARP (IPv6, …), which no rule can
    /// match; `None` (the key left out): as `default` says. ARP always passes.
    #[serde(default)]
    pub non_ipv4: Option<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// The virtual address clients connect to.
    #[serde(deserialize_with = "de::ipv4")]
    pub vip: Ipv4Addr,
    /// The backends connections are spread over; each connection stays on its first choice.
    #[serde(deserialize_with = "de::ipv4_list")]
    pub backends: Vec<Ipv4Addr>,
}

fn one() -> u16 {
    1
}
fn default_nat_ports() -> PortRange {
    PortRange {
        first: 10000,
        last: 60000,
    }
}
fn default_tcp_timeout() -> u64 {
    7440
}
fn default_tcp_closed_timeout() -> u64 {
    240
}
fn default_udp_timeout() -> u64 {
    300
}
fn default_state_size() -> u32 {
    64
}
fn default_action() -> Action {
    Action::Allow
}

// ---------------------------------------------------------------------------------------------
// Limits and the keys each table accepts.

/// Failures a chain may tolerate.
pub const F_RANGE: std::ops::RangeInclusive<u8> = 1..=8;
/// The most worker threads a middlebox may run. Its server runs a lane per thread (a
/// replica-only server, per thread of the chain's most threaded middlebox), and one server's
/// lanes are 64 at most: they tell each other which lanes to wake in a 64-bit set
/// (`ftc_node::lanes::LaneSet`, whose `MAX_LANES` is checked against this at compile time).
pub const MAX_THREADS: u16 = 64;
/// Worker threads a middlebox may run.
pub const THREADS_RANGE: std::ops::RangeInclusive<u16> = 1..=MAX_THREADS;
/// What `threads` must be, and why no more, for messages ([`THREADS_RANGE`]).
const THREADS_EXPECTED: &str =
    "1..=64 (a server runs a lane per thread, and its lanes wake each other through a 64-bit set)";
/// Bytes of state a Gen middlebox may write per packet.
pub const STATE_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1..=4096;
/// The most state partitions a middlebox may have (partition numbers are `u16`).
pub const MAX_PARTITIONS: u32 = 65536;
/// The most middleboxes in one chain.
pub const MAX_MIDDLEBOXES: usize = Ring::MAX_MIDDLEBOXES;
/// The longest chain name.
pub const MAX_NAME_LEN: usize = 64;
/// The longest spec file read (firewall rule sets of 100,000 rules fit).
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// A key a table accepts, and for required keys what it is (said when it is missing).
struct Key {
    name: &'static str,
    required: Option<&'static str>,
}

const fn opt(name: &'static str) -> Key {
    Key {
        name,
        required: None,
    }
}

const fn req(name: &'static str, what: &'static str) -> Key {
    Key {
        name,
        required: Some(what),
    }
}

const CHAIN_KEYS: &[Key] = &[
    req("name", "the chain's name, e.g. name = \"ch-rec\""),
    req("f", "the number of failures tolerated, 1..=8, e.g. f = 1"),
    opt("partitions"),
];

const RULE_KEYS: &[Key] = &[
    req("action", "\"allow\" or \"deny\""),
    opt("proto"),
    opt("src"),
    opt("dst"),
    opt("sport"),
    opt("dport"),
];

const PUBLIC_IP: Key = req("public_ip", "the public IPv4 address, e.g. \"203.0.113.1\"");

/// The kinds of middlebox and the keys of each (besides `kind` and `threads`).
const KINDS: &[(&str, &[Key])] = &[
    ("monitor", &[opt("counters"), opt("sharing_level")]),
    ("simple-nat", &[PUBLIC_IP, opt("ports")]),
    (
        "mazu-nat",
        &[
            PUBLIC_IP,
            opt("ports"),
            opt("tcp_timeout"),
            opt("tcp_closed_timeout"),
            opt("udp_timeout"),
        ],
    ),
    ("gen", &[opt("state_size")]),
    (
        "firewall",
        &[
            opt("rules"),
            opt("default"),
            opt("allow_established"),
            opt("non_ipv4"),
        ],
    ),
    (
        "load-balancer",
        &[
            req(
                "vip",
                "the virtual IPv4 address clients connect to, e.g. \"198.51.100.10\"",
            ),
            req(
                "backends",
                "the backends' IPv4 addresses, e.g. [\"10.1.0.1\", \"10.1.0.2\"]",
            ),
        ],
    ),
];

const COMMON_KEYS: &[Key] = &[req("kind", "the middlebox's kind"), opt("threads")];

fn kind_names() -> String {
    KINDS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an integer key must be, for messages.
fn integer_expectation(key: &str) -> Option<&'static str> {
    Some(match key {
        "f" => "1..=8",
        "partitions" => "a power of two in 1..=65536",
        "threads" => THREADS_EXPECTED,
        "sharing_level" => "1..=threads",
        "state_size" => "1..=4096 (bytes)",
        "tcp_timeout" | "tcp_closed_timeout" | "udp_timeout" => "a number of seconds, at least 1",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Why a chain spec was rejected: the file (origin), the 1-based line when known, and what is
/// wrong. Displays as `ch-rec.toml:7: middlebox 2 (mazu-nat): unknown key `publicip`; …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line_suffix(*.line))]
pub struct SpecError {
    origin: String,
    line: Option<usize>,
    message: String,
    io: Option<std::io::ErrorKind>,
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

impl SpecError {
    fn new(origin: &str, line: Option<usize>, message: impl Into<String>) -> SpecError {
        SpecError {
            origin: origin.to_owned(),
            line,
            message: message.into(),
            io: None,
        }
    }

    /// The file (or other origin) the spec came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The 1-based line the problem is on; `None` for I/O errors and specs built in code.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the origin and line.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind of I/O error, when the file could not be read.
    pub fn io_error_kind(&self) -> Option<std::io::ErrorKind> {
        self.io
    }
}

// ---------------------------------------------------------------------------------------------
// The public API.

impl ChainSpec {
    /// Reads and validates the spec in the file at `path`; errors name the file as given.
    pub fn load(path: &Path) -> Result<ChainSpec, SpecError> {
        use std::io::Read;
        let origin = path.display().to_string();
        let cannot = |e: std::io::Error| SpecError {
            io: Some(e.kind()),
            ..SpecError::new(&origin, None, format!("cannot read the chain spec: {e}"))
        };
        // Read at most one byte past the limit: a spec never comes near it, and a device or a
        // pipe that never ends (`/dev/zero`) is refused without being read to the end.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            return Err(SpecError::new(
                &origin,
                None,
                format!("a chain spec is at most {MAX_SPEC_BYTES} bytes: this is longer"),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            SpecError::new(
                &origin,
                Some(line),
                format!("not UTF-8 text (byte {at} is not part of a UTF-8 character)"),
            )
        })?;
        ChainSpec::from_toml_str(&text, &origin)
    }

    /// Parses and validates a spec written in TOML; `origin` (usually the file name) prefixes
    /// every error, followed by the line of the offending key or table.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<ChainSpec, SpecError> {
        let cx = Cx { text, origin };
        let root = DeTable::parse(text).map_err(|e| {
            let message = e.message().trim().replace('\n', "; ");
            cx.err(e.span(), format!("TOML syntax error: {message}"))
        })?;
        let spec = load::chain_spec(&cx, &root)?;
        if let Err(p) = check(&spec) {
            let span = p.resolve(&root);
            return Err(cx.err(Some(span), p.describe(&spec)));
        }
        Ok(spec)
    }

    /// Checks a spec built in code against the same rules as a loaded one (errors carry no line).
    pub fn validate(&self) -> Result<(), SpecError> {
        check(self).map_err(|p| {
            SpecError::new(
                &format!("chain spec {:?}", self.chain.name),
                None,
                p.describe(self),
            )
        })
    }

    /// k: the number of middleboxes.
    pub fn k(&self) -> usize {
        self.middlebox.len()
    }

    /// The number of middleboxes (same as [`ChainSpec::k`]).
    pub fn len(&self) -> usize {
        self.middlebox.len()
    }

    /// Whether the chain has no middlebox (never true for a validated spec).
    pub fn is_empty(&self) -> bool {
        self.middlebox.is_empty()
    }

    /// f: the number of failures tolerated.
    pub fn f(&self) -> usize {
        usize::from(self.chain.f)
    }

    /// The chain's layout on its ring of servers.
    ///
    /// # Panics
    /// If the spec is invalid (k = 0, k > 255, or f outside 1..=8), which a loaded or
    /// [validated](ChainSpec::validate) spec never is; see [`ChainSpec::try_ring`].
    pub fn ring(&self) -> Ring {
        match self.try_ring() {
            Ok(ring) => ring,
            Err(e) => panic!("invalid chain spec {:?}: {e}", self.chain.name),
        }
    }

    /// The chain's layout on its ring of servers, or why the spec has none.
    pub fn try_ring(&self) -> Result<Ring, RingError> {
        Ring::new(self.k(), self.f())
    }

    /// The most bytes of message that a packet's own logs take between two servers: a log
    /// rides with its packet from its head to its group's tail, so a frame leaving server s
    /// carries the logs of middleboxes s − f + 1 … s, whatever the trailer budget
    /// (docs/protocol.md). A transport whose frames hold less cannot run the chain.
    pub fn own_logs_bound(&self) -> usize {
        let f = usize::from(self.chain.f).max(1);
        let partitions = self.chain.partitions as usize;
        let logs: Vec<usize> = self
            .middlebox
            .iter()
            .map(|m| m.kind.log_bound(partitions))
            .collect();
        let most = (0..logs.len())
            .map(|s| logs[(s + 1).saturating_sub(f)..=s].iter().sum::<usize>())
            .max();
        most.unwrap_or(0) + crate::wire::MESSAGE_HEADER_LEN
    }
}

impl MiddleboxKind {
    /// A bound on the bytes of one of this kind's logs in a chain of `partitions` partitions
    /// ([`ChainSpec::own_logs_bound`]). A log is an 8-byte header, 10 bytes per partition the
    /// transaction locked (read or written), and per write a 4-byte header, the key (at most
    /// 14 bytes in the built-in kinds) and the value. A monitor, a firewall and a load
    /// balancer touch at most two keys and write at most two small values (under 70 bytes;
    /// 128 leaves room); Gen one key and its `state_size` bytes; a NAT may read two keys per
    /// port it probes for a new mapping and release two mappings (three deletes each) before
    /// it writes four small records.
    fn log_bound(&self, partitions: usize) -> usize {
        match self {
            MiddleboxKind::Gen(g) => 64 + g.state_size as usize,
            MiddleboxKind::SimpleNat(_) | MiddleboxKind::MazuNat(_) => {
                let keys = 2 * crate::middleboxes::nat::MAX_PROBES as usize + 16;
                10 * partitions.min(keys) + 512
            }
            MiddleboxKind::Monitor(_)
            | MiddleboxKind::Firewall(_)
            | MiddleboxKind::LoadBalancer(_) => 128,
        }
    }

    /// The kind's name as written in a spec: `monitor`, `simple-nat`, `mazu-nat`, `gen`,
    /// `firewall` or `load-balancer`.
    pub fn name(&self) -> &'static str {
        match self {
            MiddleboxKind::Monitor(_) => "monitor",
            MiddleboxKind::SimpleNat(_) => "simple-nat",
            MiddleboxKind::MazuNat(_) => "mazu-nat",
            MiddleboxKind::Gen(_) => "gen",
            MiddleboxKind::Firewall(_) => "firewall",
            MiddleboxKind::LoadBalancer(_) => "load-balancer",
        }
    }
}

impl PortRange {
    /// The range of the single port `port`.
    pub const fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// How many ports the range holds (0 if `first > last`, which a loaded spec never has).
    pub const fn len(&self) -> u32 {
        if self.first > self.last {
            0
        } else {
            self.last as u32 - self.first as u32 + 1
        }
    }

    /// Whether the range holds no port (only when `first > last`).
    pub const fn is_empty(&self) -> bool {
        self.first > self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading: walk the spanned TOML document, check keys, deserialize each table with spans.

/// Where errors come from and how to turn byte offsets into lines.
struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> SpecError {
        SpecError::new(
            self.origin,
            Some(span.map_or(1, |s| self.line_of(s.start))),
            message,
        )
    }
}

type Val<'i> = Spanned<DeValue<'i>>;

mod load {
    use super::*;

    /// The entries of a table in document order.
    fn entries<'t, 'i>(t: &'t DeTable<'i>) -> Vec<(&'t Spanned<Cow<'i, str>>, &'t Val<'i>)> {
        let mut v: Vec<_> = t.iter().collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v
    }

    pub(super) fn chain_spec(
        cx: &Cx<'_>,
        root: &Spanned<DeTable<'_>>,
    ) -> Result<ChainSpec, SpecError> {
        for (key, value) in entries(root.get_ref()) {
            let key_span = key.span();
            let key: &str = key.get_ref();
            if key != "chain" && key != "middlebox" {
                let what = if value.get_ref().is_table() || value.get_ref().is_array() {
                    "table"
                } else {
                    "key"
                };
                return Err(cx.err(
                    Some(key_span.clone()),
                    format!(
                        "unknown {what} `{key}`{}; a chain spec has one [chain] table and \
                         [[middlebox]] tables",
                        suggest(key, ["chain", "middlebox"].into_iter())
                    ),
                ));
            }
        }

        let Some(chain_v) = root.get_ref().get("chain") else {
            return Err(cx.err(
                Some(0..0),
                "missing [chain] table; expected e.g. [chain] name = \"ch-rec\" f = 1",
            ));
        };
        let DeValue::Table(chain_t) = chain_v.get_ref() else {
            return Err(cx.err(
                Some(chain_v.span()),
                format!(
                    "`chain` must be a table, not {}: write it as a [chain] table",
                    chain_v.get_ref().type_str()
                ),
            ));
        };
        check_keys(cx, chain_t, chain_v.span(), &[CHAIN_KEYS], "[chain]: ")?;
        let chain: ChainSection = deserialize(cx, chain_v, "[chain]: ", None)?;

        let Some(mb_v) = root.get_ref().get("middlebox") else {
            return Err(cx.err(
                Some(chain_v.span()),
                format!(
                    "no [[middlebox]] table: a chain needs at least one middlebox; expected \
                     e.g. [[middlebox]] kind = \"monitor\" (kinds: {})",
                    kind_names()
                ),
            ));
        };
        let DeValue::Array(items) = mb_v.get_ref() else {
            return Err(cx.err(
                Some(mb_v.span()),
                format!(
                    "`middlebox` must be an array of tables, not {}: write each middlebox as a \
                     [[middlebox]] table",
                    mb_v.get_ref().type_str()
                ),
            ));
        };
        let middlebox = items
            .iter()
            .enumerate()
            .map(|(i, item)| middlebox(cx, i, item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChainSpec { chain, middlebox })
    }

    fn middlebox(cx: &Cx<'_>, i: usize, item: &Val<'_>) -> Result<MiddleboxSpec, SpecError> {
        let DeValue::Table(t) = item.get_ref() else {
            return Err(cx.err(
                Some(item.span()),
                format!(
                    "middlebox {i}: expected a table, not {}",
                    item.get_ref().type_str()
                ),
            ));
        };
        let kind = match t.get("kind") {
            None => {
                return Err(cx.err(
                    Some(item.span()),
                    format!(
                        "middlebox {i}: missing key `kind`; expected one of {}",
                        kind_names()
                    ),
                ))
            }
            Some(v) => match v.get_ref().as_str() {
                Some(kind) => (kind, v.span()),
                None => {
                    return Err(cx.err(
                        Some(v.span()),
                        format!(
                            "middlebox {i}: `kind` must be a string, not {}; expected one of {}",
                            v.get_ref().type_str(),
                            kind_names()
                        ),
                    ))
                }
            },
        };
        let (kind, kind_span) = kind;
        let Some(&(kind, keys)) = KINDS.iter().find(|(name, _)| *name == kind) else {
            return Err(cx.err(
                Some(kind_span),
                format!(
                    "middlebox {i}: unknown kind {kind:?}{}; expected one of {}",
                    suggest(kind, KINDS.iter().map(|(name, _)| *name)),
                    kind_names()
                ),
            ));
        };
        let prefix = format!("middlebox {i} ({kind}): ");
        check_keys(cx, t, item.span(), &[COMMON_KEYS, keys], &prefix)?;
        if let Some(DeValue::Array(rules)) = t.get("rules").map(|v| v.get_ref()) {
            for (r, rule) in rules.iter().enumerate() {
                if let DeValue::Table(rt) = rule.get_ref() {
                    check_keys(
                        cx,
                        rt,
                        rule.span(),
                        &[RULE_KEYS],
                        &format!("{prefix}rule {r}: "),
                    )?;
                }
            }
        }
        let threads = match t.get("threads") {
            None => 1,
            Some(v) => deserialize(cx, v, &prefix, Some("threads"))?,
        };
        let mut rest = t.clone();
        rest.remove("kind");
        rest.remove("threads");
        let rest = Spanned::new(item.span(), DeValue::Table(rest));
        let p = prefix.as_str();
        let kind = match kind {
            "monitor" => MiddleboxKind::Monitor(deserialize(cx, &rest, p, None)?),
            "simple-nat" => MiddleboxKind::SimpleNat(deserialize(cx, &rest, p, None)?),
            "mazu-nat" => MiddleboxKind::MazuNat(deserialize(cx, &rest, p, None)?),
            "gen" => MiddleboxKind::Gen(deserialize(cx, &rest, p, None)?),
            "firewall" => MiddleboxKind::Firewall(deserialize(cx, &rest, p, None)?),
            "load-balancer" => MiddleboxKind::LoadBalancer(deserialize(cx, &rest, p, None)?),
            other => unreachable!("kind {other} is in KINDS"),
        };
        Ok(MiddleboxSpec { threads, kind })
    }

    /// Rejects keys a table does not accept (suggesting the closest) and missing required keys.
    fn check_keys(
        cx: &Cx<'_>,
        t: &DeTable<'_>,
        span: Range<usize>,
        accepted: &[&[Key]],
        prefix: &str,
    ) -> Result<(), SpecError> {
        let all = || accepted.iter().flat_map(|keys| keys.iter());
        for (key, _) in entries(t) {
            let name: &str = key.get_ref();
            if !all().any(|k| k.name == name) {
                return Err(cx.err(
                    Some(key.span()),
                    format!(
                        "{prefix}unknown key `{name}`{}; expected one of {}",
                        suggest(name, all().map(|k| k.name)),
                        all().map(|k| k.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for key in all() {
            if let Some(what) = key.required {
                if t.get(key.name).is_none() {
                    return Err(cx.err(
                        Some(span),
                        format!("{prefix}missing key `{}`: {what}", key.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deserializes `v`, pointing errors at the offending value and naming its key (`key`, or
    /// the path found inside `v` by the error's span).
    fn deserialize<T: serde::de::DeserializeOwned>(
        cx: &Cx<'_>,
        v: &Val<'_>,
        prefix: &str,
        key: Option<&str>,
    ) -> Result<T, SpecError> {
        T::deserialize(ValueDeserializer::from(v.clone())).map_err(|e| {
            let span = e.span().unwrap_or(v.span());
            let mut prefix = prefix.to_owned();
            let mut path = match key {
                Some(key) => key.to_owned(),
                None => locate(v.get_ref(), &span).unwrap_or_default(),
            };
            // `rules[1].src` reads better as `rule 1: `src``.
            if let Some((r, rest)) = path.strip_prefix("rules[").and_then(|p| p.split_once(']')) {
                prefix = format!("{prefix}rule {r}: ");
                path = rest.trim_start_matches('.').to_owned();
            }
            let leaf = path.rsplit(['.', '[']).next().unwrap_or_default();
            let msg = e.message().trim();
            let message = match (msg.split_once(": "), integer_expectation(leaf)) {
                (Some(("invalid value", rest)), Some(expected)) => {
                    let n = rest.split('`').nth(1).unwrap_or_default();
                    format!("{prefix}`{path}` must be {expected}, not {n}")
                }
                (Some(("invalid type", rest)), Some(expected)) => {
                    let found = rest.split(", expected").next().unwrap_or_default();
                    format!("{prefix}`{path}` must be an integer, {expected}, not {found}")
                }
                _ if path.is_empty() => format!("{prefix}{msg}"),
                _ => format!("{prefix}`{path}`: {msg}"),
            };
            cx.err(Some(span), message)
        })
    }

    /// The key path (`rules[1].src`) of the innermost value inside `v` whose span contains
    /// `span`. Searches the whole tree: the span of a table opened by a `[header]` covers only
    /// the header, not its keys.
    fn locate(v: &DeValue<'_>, span: &Range<usize>) -> Option<String> {
        let inside = |s: Range<usize>| s.start <= span.start && span.end <= s.end;
        let join = |head: String, rest: Option<String>| match rest {
            None => head,
            Some(rest) if rest.starts_with('[') => format!("{head}{rest}"),
            Some(rest) => format!("{head}.{rest}"),
        };
        match v {
            DeValue::Table(t) => t.iter().find_map(|(k, val)| {
                let key: &str = k.get_ref();
                let deeper = locate(val.get_ref(), span);
                (deeper.is_some() || inside(val.span()) || inside(k.span()))
                    .then(|| join(key.to_owned(), deeper))
            }),
            DeValue::Array(a) => a.iter().enumerate().find_map(|(i, val)| {
                let deeper = locate(val.get_ref(), span);
                (deeper.is_some() || inside(val.span())).then(|| join(format!("[{i}]"), deeper))
            }),
            _ => None,
        }
    }
}

/// ` (did you mean `x`?)` when a candidate is close to `word`, else nothing.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = norm(word);
    let best = candidates
        .map(|c| {
            let d = if norm(c) == w {
                0
            } else {
                edit_distance(word, c)
            };
            (d, c)
        })
        .min();
    match best {
        Some((d, c)) if d <= 2.max(word.len() / 4) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Semantic checks on the typed spec; each problem names where it is as a key path, which the
// loader resolves to a line.

#[derive(Debug, Clone, Copy)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

#[derive(Debug)]
struct Problem {
    path: Vec<Seg>,
    message: String,
}

fn problem(path: &[Seg], message: impl Into<String>) -> Problem {
    Problem {
        path: path.to_vec(),
        message: message.into(),
    }
}

impl Problem {
    /// The span of the deepest part of the path present in the document.
    fn resolve(&self, root: &Spanned<DeTable<'_>>) -> Range<usize> {
        let mut span = 0..0;
        let mut cur: Option<&DeValue<'_>> = None;
        let mut table = Some(root.get_ref());
        for seg in &self.path {
            let next = match (seg, table, cur) {
                (Seg::Key(k), Some(t), _) => t.get(*k),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            cur = Some(next.get_ref());
            table = next.get_ref().as_table();
        }
        span
    }

    /// The message with its context: `[chain]: `, `middlebox 2 (monitor): `, `… rule 1: `.
    fn describe(&self, spec: &ChainSpec) -> String {
        let mut out = String::new();
        match self.path.as_slice() {
            [Seg::Key("chain"), ..] => out.push_str("[chain]: "),
            [Seg::Key("middlebox"), Seg::Index(i), rest @ ..] => {
                let kind = spec.middlebox.get(*i).map_or("?", |m| m.kind.name());
                out.push_str(&format!("middlebox {i} ({kind}): "));
                if let [Seg::Key("rules"), Seg::Index(r), ..] = rest {
                    out.push_str(&format!("rule {r}: "));
                }
            }
            _ => {}
        }
        out.push_str(&self.message);
        out
    }
}

fn check(spec: &ChainSpec) -> Result<(), Problem> {
    use Seg::{Index, Key};
    let c = &spec.chain;
    let name_ok = !c.name.is_empty()
        && c.name.len() <= MAX_NAME_LEN
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !name_ok {
        return Err(problem(
            &[Key("chain"), Key("name")],
            format!(
                "`name` must be 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', not {:?}",
                c.name
            ),
        ));
    }
    if !F_RANGE.contains(&c.f) {
        return Err(problem(
            &[Key("chain"), Key("f")],
            format!("`f` (failures tolerated) must be 1..=8, not {}", c.f),
        ));
    }
    if !c.partitions.is_power_of_two() || c.partitions > MAX_PARTITIONS {
        return Err(problem(
            &[Key("chain"), Key("partitions")],
            format!(
                "`partitions` must be a power of two in 1..={MAX_PARTITIONS}, not {}",
                c.partitions
            ),
        ));
    }
    if spec.middlebox.is_empty() {
        return Err(problem(
            &[Key("middlebox")],
            "no middlebox: a chain needs at least one [[middlebox]]",
        ));
    }
    if spec.middlebox.len() > MAX_MIDDLEBOXES {
        return Err(problem(
            &[Key("middlebox"), Index(MAX_MIDDLEBOXES)],
            format!(
                "too many middleboxes: a chain has at most {MAX_MIDDLEBOXES}, this one has {}",
                spec.middlebox.len()
            ),
        ));
    }
    for (i, mb) in spec.middlebox.iter().enumerate() {
        let at = |key: &'static str| [Key("middlebox"), Index(i), Key(key)];
        if !THREADS_RANGE.contains(&mb.threads) {
            return Err(problem(
                &at("threads"),
                format!("`threads` must be {THREADS_EXPECTED}, not {}", mb.threads),
            ));
        }
        match &mb.kind {
            MiddleboxKind::Monitor(m) => {
                if m.sharing_level == 0 || m.sharing_level > mb.threads {
                    return Err(problem(
                        &at("sharing_level"),
                        format!(
                            "`sharing_level` must be 1..=threads ({}), not {}",
                            mb.threads, m.sharing_level
                        ),
                    ));
                }
                if m.counters == CounterMode::PerFlow && m.sharing_level != 1 {
                    return Err(problem(
                        &at("sharing_level"),
                        "`sharing_level` applies to counters = \"shared\" only; remove it or \
                         set counters = \"shared\"",
                    ));
                }
            }
            MiddleboxKind::SimpleNat(n) => check_nat(&at, n.public_ip, n.ports)?,
            MiddleboxKind::MazuNat(n) => {
                check_nat(&at, n.public_ip, n.ports)?;
                for (key, secs) in [
                    ("tcp_timeout", n.tcp_timeout),
                    ("tcp_closed_timeout", n.tcp_closed_timeout),
                    ("udp_timeout", n.udp_timeout),
                ] {
                    if secs == 0 {
                        return Err(problem(
                            &at(key),
                            format!("`{key}` must be a number of seconds, at least 1, not 0"),
                        ));
                    }
                }
            }
            MiddleboxKind::Gen(g) => {
                if !STATE_SIZE_RANGE.contains(&g.state_size) {
                    return Err(problem(
                        &at("state_size"),
                        format!(
                            "`state_size` must be 1..=4096 (bytes), not {}",
                            g.state_size
                        ),
                    ));
                }
            }
            MiddleboxKind::Firewall(fw) => {
                for (r, rule) in fw.rules.iter().enumerate() {
                    let at = |key: &'static str| {
                        [Key("middlebox"), Index(i), Key("rules"), Index(r), Key(key)]
                    };
                    for (key, net) in [("src", rule.src), ("dst", rule.dst)] {
                        if let Some(net) = net {
                            if net.addr() != net.network() {
                                return Err(problem(
                                    &at(key),
                                    format!(
                                        "`{key}` = \"{net}\" has host bits set; expected a \
                                         network address such as \"{}\"",
                                        net.trunc()
                                    ),
                                ));
                            }
                        }
                    }
                    for (key, ports) in [("sport", rule.sport), ("dport", rule.dport)] {
                        if let Some(ports) = ports {
                            check_port_range(&at(key), key, ports)?;
                            if rule.proto == Proto::Icmp {
                                return Err(problem(
                                    &at(key),
                                    format!(
                                        "`{key}` does not apply to proto = \"icmp\"; expected \
                                         proto = \"tcp\", \"udp\" or \"any\""
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            MiddleboxKind::LoadBalancer(lb) => {
                check_host(&at("vip"), "vip", lb.vip)?;
                if lb.backends.is_empty() {
                    return Err(problem(
                        &at("backends"),
                        "`backends` is empty; expected at least one backend address, e.g. \
                         [\"10.1.0.1\", \"10.1.0.2\"]",
                    ));
                }
                for (b, addr) in lb.backends.iter().enumerate() {
                    let path = [Key("middlebox"), Index(i), Key("backends"), Index(b)];
                    check_host(&path, "backends", *addr)?;
                    if lb.backends[..b].contains(addr) {
                        return Err(problem(
                            &path,
                            format!("backend {addr} is listed twice in `backends`"),
                        ));
                    }
                    if *addr == lb.vip {
                        return Err(problem(
                            &path,
                            format!("backend {addr} is the `vip` itself"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_nat(
    at: &dyn Fn(&'static str) -> [Seg; 3],
    public_ip: Ipv4Addr,
    ports: PortRange,
) -> Result<(), Problem> {
    check_host(&at("public_ip"), "public_ip", public_ip)?;
    check_port_range(&at("ports"), "ports", ports)?;
    if ports.first == 0 {
        return Err(problem(
            &at("ports"),
            format!(
                "`ports` = \"{ports}\" includes port 0, which a NAT cannot hand out; expected \
                 e.g. \"10000-60000\""
            ),
        ));
    }
    Ok(())
}

fn check_port_range(path: &[Seg], key: &str, ports: PortRange) -> Result<(), Problem> {
    if ports.is_empty() {
        return Err(problem(
            path,
            format!(
                "`{key}` is empty: {} is above {}; expected FIRST-LAST with FIRST <= LAST",
                ports.first, ports.last
            ),
        ));
    }
    Ok(())
}

/// Rejects addresses that cannot be a host's: 0.0.0.0, broadcast, multicast.
fn check_host(path: &[Seg], key: &str, addr: Ipv4Addr) -> Result<(), Problem> {
    let why = if addr.is_unspecified() {
        "the unspecified address"
    } else if addr.is_broadcast() {
        "the broadcast address"
    } else if addr.is_multicast() {
        "a multicast address"
    } else {
        return Ok(());
    };
    Err(problem(
        path,
        format!("`{key}` = \"{addr}\" is {why}; expected a unicast IPv4 address"),
    ))
}

// ---------------------------------------------------------------------------------------------
// serde: the plain-serde path (e.g. `toml::from_str::<ChainSpec>`) and field deserializers.

/// What serde sees of a [`ChainSpec`] before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChainSpec {
    chain: ChainSection,
    middlebox: Vec<MiddleboxSpec>,
}

impl TryFrom<RawChainSpec> for ChainSpec {
    type Error = String;

    fn try_from(raw: RawChainSpec) -> Result<ChainSpec, String> {
        let spec = ChainSpec {
            chain: raw.chain,
            middlebox: raw.middlebox,
        };
        match check(&spec) {
            Ok(()) => Ok(spec),
            Err(p) => Err(p.describe(&spec)),
        }
    }
}

impl<'de> Deserialize<'de> for MiddleboxSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(_) => return Err(D::Error::custom("`kind` must be a string")),
            None => return Err(D::Error::missing_field("kind")),
        };
        let threads = match table.remove("threads") {
            None => 1,
            Some(toml::Value::Integer(n))
                if u16::try_from(n).is_ok_and(|n| THREADS_RANGE.contains(&n)) =>
            {
                n as u16
            }
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "`threads` must be {THREADS_EXPECTED}, not {v}"
                )))
            }
        };
        let value = toml::Value::Table(table);
        let kind = match kind.as_str() {
            "monitor" => value.try_into().map(MiddleboxKind::Monitor),
            "simple-nat" => value.try_into().map(MiddleboxKind::SimpleNat),
            "mazu-nat" => value.try_into().map(MiddleboxKind::MazuNat),
            "gen" => value.try_into().map(MiddleboxKind::Gen),
            "firewall" => value.try_into().map(MiddleboxKind::Firewall),
            "load-balancer" => value.try_into().map(MiddleboxKind::LoadBalancer),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown middlebox kind {other:?}; expected one of {}",
                    kind_names()
                )))
            }
        }
        .map_err(|e| D::Error::custom(format!("{kind}: {}", e.message())))?;
        Ok(MiddleboxSpec { threads, kind })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(de::PortRangeVisitor)
    }
}

mod de {
    use super::*;
    use serde::de::{Error, Visitor};
    use std::fmt;

    const ADDR_EXAMPLE: &str = "an IPv4 address such as \"203.0.113.1\"";
    const NET_EXAMPLE: &str = "an IPv4 address or network in CIDR notation such as \"10.0.0.0/8\"";
    const RANGE_EXAMPLE: &str = "a port such as 80 or a range such as \"10000-60000\"";

    pub(super) struct PortRangeVisitor;

    impl Visitor<'_> for PortRangeVisitor {
        type Value = PortRange;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(RANGE_EXAMPLE)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<PortRange, E> {
            u16::try_from(v)
                .map(PortRange::single)
                .map_err(|_| E::custom(format!("port {v} is out of range; expected 0..=65535")))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<PortRange, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<PortRange, E> {
            let bad = || {
                E::custom(format!(
                    "bad port range {s:?}: expected {RANGE_EXAMPLE}, ports 0..=65535"
                ))
            };
            let port = |t: &str| {
                let t = t.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                t.parse::<u16>().map_err(|_| bad())
            };
            let (first, last) = match s.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(s)?;
                    (p, p)
                }
            };
            if first > last {
                return Err(E::custom(format!(
                    "bad port range {s:?}: {first} is above {last}; expected FIRST-LAST with \
                     FIRST <= LAST"
                )));
            }
            Ok(PortRange { first, last })
        }
    }

    struct AddrVisitor;

    impl Visitor<'_> for AddrVisitor {
        type Value = Ipv4Addr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(ADDR_EXAMPLE)
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Ipv4Addr, E> {
            s.trim()
                .parse()
                .map_err(|_| E::custom(format!("bad IPv4 address {s:?}: expected {ADDR_EXAMPLE}")))
        }
    }

    /// An IPv4 address written as a string.
    pub(super) fn ipv4<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ipv4Addr, D::Error> {
        d.deserialize_str(AddrVisitor)
    }

    struct Addr(Ipv4Addr);

    impl<'de> Deserialize<'de> for Addr {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            ipv4(d).map(Addr)
        }
    }

    /// A list of IPv4 addresses; an error points at the bad element.
    pub(super) fn ipv4_list<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Ipv4Addr>, D::Error> {
        Ok(Vec::<Addr>::deserialize(d)?
            .into_iter()
            .map(|a| a.0)
            .collect())
    }

    struct NetVisitor;

    impl Visitor<'_> for NetVisitor {
        type Value = Ipv4Net;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(NET_EXAMPLE)
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Ipv4Net, E> {
            let t = s.trim();
            let parsed = if t.contains('/') {
                t.parse::<Ipv4Net>().ok()
            } else {
                t.parse::<Ipv4Addr>().ok().map(Ipv4Net::from)
            };
            parsed
                .ok_or_else(|| E::custom(format!("bad IPv4 network {s:?}: expected {NET_EXAMPLE}")))
        }
    }

    /// An optional IPv4 network (a bare address is a /32); absent is `None`.
    pub(super) fn ipv4_net_opt<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ipv4Net>, D::Error> {
        d.deserialize_str(NetVisitor).map(Some)
    }
}

#[cfg(test)]
mod tests;
