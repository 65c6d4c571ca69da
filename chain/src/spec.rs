//! The chain spec: the TOML file an operator writes to describe a chain, parsed and validated.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;

/// A whole chain: its settings and its middleboxes in traffic order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub public_ip: Ipv4Addr,
    #[serde(default = "default_nat_ports")]
    pub ports: PortRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MazuNatConfig {
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
    pub src: Option<Ipv4Net>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// The virtual address clients connect to.
    pub vip: Ipv4Addr,
    /// The backends connections are spread over; each connection stays on its first choice.
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

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            Text(String),
        }
        let (first, last) = match Raw::deserialize(d)? {
            Raw::One(p) => (p, p),
            Raw::Text(s) => {
                let (a, b) = s.split_once('-').unwrap_or((&s, &s));
                let port = |t: &str| {
                    t.trim().parse::<u16>().map_err(|_| {
                        D::Error::custom(format!("bad port range {s:?}: expected \"FIRST-LAST\""))
                    })
                };
                (port(a)?, port(b)?)
            }
        };
        if first > last {
            return Err(D::Error::custom(format!(
                "bad port range: {first} is above {last}"
            )));
        }
        Ok(PortRange { first, last })
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
            Some(toml::Value::Integer(n)) if (1..=1024).contains(&n) => n as u16,
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "`threads` must be 1..=1024, not {v}"
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
                    "unknown middlebox kind {other:?}; expected one of monitor, simple-nat, mazu-nat, gen, firewall, load-balancer"
                )))
            }
        }
        .map_err(|e| D::Error::custom(format!("{kind}: {}", e.message())))?;
        Ok(MiddleboxSpec { threads, kind })
    }
}
