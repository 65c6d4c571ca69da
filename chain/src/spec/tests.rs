//! Tests of spec loading: every kind parses to the expected structs, every invalid case is
//! rejected with the right line and a message naming the problem, and the example specs parse.

use super::*;

fn parse(text: &str) -> ChainSpec {
    match ChainSpec::from_toml_str(text, "test.toml") {
        Ok(spec) => spec,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Asserts that `text` is rejected on the line marked `# <-` with a message containing every
/// word of `words`, and that the Display reads `test.toml:LINE: …`.
#[track_caller]
fn rejects(text: &str, words: &[&str]) -> SpecError {
    let line = text
        .lines()
        .position(|l| l.contains("# <-"))
        .map(|i| i + 1)
        .expect("test text marks the expected line with `# <-`");
    let e = match ChainSpec::from_toml_str(text, "test.toml") {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(e) => e,
    };
    assert_eq!(e.line(), Some(line), "wrong line in: {e}");
    assert_eq!(e.origin(), "test.toml");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("test.toml:{line}: ")),
        "bad prefix: {shown}"
    );
    for w in words {
        assert!(shown.contains(w), "{shown:?} does not mention {w:?}");
    }
    e
}

const CHAIN: &str = "[chain]\nname = \"t\"\nf = 1\n";

/// A chain header followed by `rest`.
fn with(rest: &str) -> String {
    format!("{CHAIN}{rest}")
}

// ------------------------------------------------------------------------------------------
// Valid specs.

#[test]
fn every_kind_parses_to_the_expected_structs() {
    let spec = parse(
        r#"
[chain]
name = "all-kinds"
f = 2
partitions = 128

[[middlebox]]
kind = "monitor"
threads = 4
counters = "shared"
sharing_level = 2

[[middlebox]]
kind = "monitor"
counters = "per-flow"

[[middlebox]]
kind = "simple-nat"
public_ip = "203.0.113.1"
ports = "20000-20099"

[[middlebox]]
kind = "mazu-nat"
public_ip = "203.0.113.2"
ports = 40000
tcp_timeout = 100
tcp_closed_timeout = 10
udp_timeout = 20

[[middlebox]]
kind = "gen"
state_size = 4096

[[middlebox]]
kind = "firewall"
default = "deny"
allow_established = true
rules = [
  { action = "allow", proto = "tcp", src = "10.0.0.0/8", dport = "80-443" },
  { action = "deny", dst = "192.0.2.7", sport = 25 },
]

[[middlebox]]
kind = "load-balancer"
vip = "198.51.100.10"
backends = ["10.1.0.1", "10.1.0.2"]
"#,
    );
    assert_eq!(
        spec.chain,
        ChainSection {
            name: "all-kinds".into(),
            f: 2,
            partitions: 128
        }
    );
    assert_eq!((spec.k(), spec.len(), spec.f()), (7, 7, 2));
    assert!(!spec.is_empty());
    let kinds: Vec<_> = spec.middlebox.iter().map(|m| m.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "monitor",
            "monitor",
            "simple-nat",
            "mazu-nat",
            "gen",
            "firewall",
            "load-balancer"
        ]
    );
    let mb = &spec.middlebox;
    assert_eq!(
        mb[0],
        MiddleboxSpec {
            threads: 4,
            kind: MiddleboxKind::Monitor(MonitorConfig {
                counters: CounterMode::Shared,
                sharing_level: 2
            })
        }
    );
    assert_eq!(
        mb[1],
        MiddleboxSpec {
            threads: 1,
            kind: MiddleboxKind::Monitor(MonitorConfig {
                counters: CounterMode::PerFlow,
                sharing_level: 1
            })
        }
    );
    assert_eq!(
        mb[2].kind,
        MiddleboxKind::SimpleNat(NatConfig {
            public_ip: Ipv4Addr::new(203, 0, 113, 1),
            ports: PortRange {
                first: 20000,
                last: 20099
            }
        })
    );
    assert_eq!(
        mb[3].kind,
        MiddleboxKind::MazuNat(MazuNatConfig {
            public_ip: Ipv4Addr::new(203, 0, 113, 2),
            ports: PortRange::single(40000),
            tcp_timeout: 100,
            tcp_closed_timeout: 10,
            udp_timeout: 20,
        })
    );
    assert_eq!(
        mb[4].kind,
        MiddleboxKind::Gen(GenConfig { state_size: 4096 })
    );
    assert_eq!(
        mb[5].kind,
        MiddleboxKind::Firewall(FirewallConfig {
            rules: vec![
                Rule {
                    action: Action::Allow,
                    proto: Proto::Tcp,
                    src: Some("10.0.0.0/8".parse().unwrap()),
                    dst: None,
                    sport: None,
                    dport: Some(PortRange {
                        first: 80,
                        last: 443
                    }),
                },
                Rule {
                    action: Action::Deny,
                    proto: Proto::Any,
                    src: None,
                    dst: Some("192.0.2.7/32".parse().unwrap()),
                    sport: Some(PortRange::single(25)),
                    dport: None,
                },
            ],
            default: Action::Deny,
            allow_established: true,
            non_ipv4: None,
        })
    );
    assert_eq!(
        mb[6].kind,
        MiddleboxKind::LoadBalancer(LoadBalancerConfig {
            vip: Ipv4Addr::new(198, 51, 100, 10),
            backends: vec![Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2)],
        })
    );
    let ring = spec.ring();
    assert_eq!((ring.middleboxes(), ring.f(), ring.servers()), (7, 2, 7));
}

#[test]
fn defaults_apply() {
    let spec = parse(&with(
        "[[middlebox]]\nkind = \"monitor\"\n\
         [[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"192.0.2.1\"\n\
         [[middlebox]]\nkind = \"mazu-nat\"\npublic_ip = \"192.0.2.1\"\n\
         [[middlebox]]\nkind = \"gen\"\n\
         [[middlebox]]\nkind = \"firewall\"\n",
    ));
    assert_eq!(spec.chain.partitions, 64);
    assert!(spec.middlebox.iter().all(|m| m.threads == 1));
    let nat_ports = PortRange {
        first: 10000,
        last: 60000,
    };
    assert_eq!(
        spec.middlebox[0].kind,
        MiddleboxKind::Monitor(MonitorConfig {
            counters: CounterMode::Shared,
            sharing_level: 1
        })
    );
    assert_eq!(
        spec.middlebox[1].kind,
        MiddleboxKind::SimpleNat(NatConfig {
            public_ip: Ipv4Addr::new(192, 0, 2, 1),
            ports: nat_ports
        })
    );
    assert_eq!(
        spec.middlebox[2].kind,
        MiddleboxKind::MazuNat(MazuNatConfig {
            public_ip: Ipv4Addr::new(192, 0, 2, 1),
            ports: nat_ports,
            tcp_timeout: 7440,
            tcp_closed_timeout: 240,
            udp_timeout: 300,
        })
    );
    assert_eq!(
        spec.middlebox[3].kind,
        MiddleboxKind::Gen(GenConfig { state_size: 64 })
    );
    assert_eq!(
        spec.middlebox[4].kind,
        MiddleboxKind::Firewall(FirewallConfig {
            rules: vec![],
            default: Action::Allow,
            allow_established: false,
            non_ipv4: None,
        })
    );
}

#[test]
fn firewall_rules_as_array_of_tables() {
    let spec = parse(&with(
        "[[middlebox]]\nkind = \"firewall\"\n\
         [[middlebox.rules]]\naction = \"allow\"\nproto = \"udp\"\nsport = \"1000-2000\"\n\
         [[middlebox.rules]]\naction = \"deny\"\nsrc = \"0.0.0.0/0\"\n",
    ));
    let MiddleboxKind::Firewall(fw) = &spec.middlebox[0].kind else {
        panic!()
    };
    assert_eq!(fw.rules.len(), 2);
    assert_eq!(fw.rules[0].proto, Proto::Udp);
    assert_eq!(fw.rules[1].src, Some("0.0.0.0/0".parse().unwrap()));
    assert_eq!(fw.non_ipv4, None);
}

/// `non_ipv4` takes an action; another word is refused, naming the two.
#[test]
fn firewall_non_ipv4_is_an_action() {
    let text = |value: &str| {
        with(&format!(
            "[[middlebox]]\nkind = \"firewall\"\nnon_ipv4 = {value} # <-\n"
        ))
    };
    let spec = parse(&text("\"allow\""));
    let MiddleboxKind::Firewall(fw) = &spec.middlebox[0].kind else {
        panic!()
    };
    assert_eq!(fw.non_ipv4, Some(Action::Allow));
    rejects(
        &text("\"pass\""),
        &["`non_ipv4`: unknown variant `pass`, expected `allow` or `deny`"],
    );
}

/// A server runs a lane per thread, 64 at most (their wake-ups are a 64-bit set): a spec asking
/// for more is refused with the limit and why, on either path; 64 is fine.
#[test]
fn threads_are_at_most_the_lanes_of_one_server() {
    let text = |threads| {
        with(&format!(
            "[[middlebox]]\nkind = \"gen\"\nthreads = {threads} # <-\n"
        ))
    };
    let why = "a server runs a lane per thread, and its lanes wake each other through a 64-bit set";
    rejects(
        &text(65),
        &["(gen): `threads` must be 1..=64", why, "not 65"],
    );
    rejects(&text(1024), &["`threads` must be 1..=64", why, "not 1024"]);
    let e = toml::from_str::<ChainSpec>(&text(65)).unwrap_err();
    assert!(
        e.message().contains("`threads` must be 1..=64") && e.message().contains(why),
        "{e}"
    );
    assert_eq!(parse(&text(64)).middlebox[0].threads, 64);
    assert!(THREADS_EXPECTED.starts_with(&format!("1..={MAX_THREADS} ")));
    let mut spec = parse(&text(64));
    spec.middlebox[0].threads = 65;
    let e = spec.validate().unwrap_err();
    assert!(
        e.message().contains("not 65") && e.message().contains(why),
        "{e}"
    );
}

#[test]
fn plain_serde_path_validates_too() {
    let text = with("[[middlebox]]\nkind = \"gen\"\nstate_size = 0\n");
    let e = toml::from_str::<ChainSpec>(&text).unwrap_err();
    assert!(e.message().contains("state_size"), "{e}");
    let ok: ChainSpec = toml::from_str(&with("[[middlebox]]\nkind = \"gen\"\n")).unwrap();
    assert_eq!(ok, parse(&with("[[middlebox]]\nkind = \"gen\"\n")));
}

#[test]
fn validate_checks_specs_built_in_code() {
    let mut spec = parse(&with("[[middlebox]]\nkind = \"gen\"\n"));
    assert_eq!(spec.validate(), Ok(()));
    spec.chain.f = 9;
    let e = spec.validate().unwrap_err();
    assert_eq!(e.line(), None);
    assert!(e.to_string().contains("`f`"), "{e}");
    assert!(spec.try_ring().is_err());
    spec.chain.f = 1;
    spec.middlebox.clear();
    assert!(spec
        .validate()
        .unwrap_err()
        .message()
        .contains("no middlebox"));
}

#[test]
fn every_example_spec_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut names = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = ChainSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(spec.ring().middleboxes(), spec.k());
            names.push(spec.chain.name.clone());
        }
    }
    names.sort();
    for expected in [
        "ch-2",
        "ch-3",
        "ch-4",
        "ch-5",
        "ch-gen",
        "ch-rec",
        "load-balancer",
        "mazu-nat",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
}

#[test]
fn ch_rec_example_is_firewall_monitor_nat() {
    let spec = ChainSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/ch-rec.toml"))
        .unwrap();
    let kinds: Vec<_> = spec.middlebox.iter().map(|m| m.kind.name()).collect();
    assert_eq!(kinds, ["firewall", "monitor", "simple-nat"]);
    assert_eq!(spec.f(), 1);
    let MiddleboxKind::Firewall(fw) = &spec.middlebox[0].kind else {
        panic!()
    };
    // Replies pass the firewall before the NAT translates them back, so the firewall is
    // stateless and lets traffic to the NAT's public address in.
    assert!(!fw.allow_established);
    assert!(fw
        .rules
        .iter()
        .any(|r| r.action == Action::Allow && r.dst == Some("203.0.113.1/32".parse().unwrap())));
    // TCP from 10.0.0.0/8 to anywhere is allowed by some rule.
    assert!(fw.rules.iter().any(|r| r.action == Action::Allow
        && r.proto == Proto::Tcp
        && r.src == Some("10.0.0.0/8".parse().unwrap())
        && r.dst.is_none()
        && r.dport.is_none()));
}

#[test]
fn missing_file_names_the_file() {
    let e = ChainSpec::load(Path::new("/nonexistent/ch-x.toml")).unwrap_err();
    assert_eq!(e.line(), None);
    assert_eq!(e.io_error_kind(), Some(std::io::ErrorKind::NotFound));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/ch-x.toml: cannot read"),
        "{e}"
    );
}

// ------------------------------------------------------------------------------------------
// Invalid specs: each names the right line and the problem.

#[test]
fn example_of_the_error_format() {
    let e = rejects(
        "[chain]\nname = \"ch-rec\"\nf = 1\n\
         [[middlebox]]\nkind = \"firewall\"\n\
         [[middlebox]]\nkind = \"monitor\"\n\
         [[middlebox]]\nkind = \"mazu-nat\"\npublicip = \"203.0.113.1\" # <-\n",
        &[
            "middlebox 2 (mazu-nat): unknown key `publicip`",
            "did you mean `public_ip`",
        ],
    );
    assert!(e
        .to_string()
        .starts_with("test.toml:10: middlebox 2 (mazu-nat): unknown key `publicip`"));
}

#[test]
fn syntax_errors() {
    rejects(
        &with("[[middlebox]]\nkind = \"gen\"\nstate_size = = 1 # <-\n"),
        &["syntax"],
    );
    // An unterminated string is reported on its own line.
    rejects(
        &with("[[middlebox]]\nkind = \"gen # <-\nstate_size = 1\n"),
        &["syntax"],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"gen\"\nkind = \"gen\" # <-\n"),
        &["duplicate key"],
    );
    rejects(
        "[chain]\nname = \"t\"\nf = 1\nf = 2 # <-\n",
        &["duplicate key"],
    );
}

#[test]
fn unknown_kind() {
    rejects(
        &with("[[middlebox]]\nkind = \"mazunat\" # <-\n"),
        &[
            "unknown kind \"mazunat\"",
            "did you mean `mazu-nat`",
            "monitor, simple-nat",
        ],
    );
    rejects(
        &with("[[middlebox]] # <-\nthreads = 2\n"),
        &["missing key `kind`"],
    );
    rejects(
        &with("[[middlebox]]\nkind = 3 # <-\n"),
        &["`kind` must be a string"],
    );
}

#[test]
fn unknown_keys() {
    rejects(
        "[chain]\nname = \"t\"\nf = 1\nfailures = 2 # <-\n[[middlebox]]\nkind = \"gen\"\n",
        &["[chain]: unknown key `failures`", "name, f, partitions"],
    );
    rejects(
        &format!("{CHAIN}[[middlebox]]\nkind = \"gen\"\n[chian] # <-\n"),
        &["unknown table `chian`", "did you mean `chain`"],
    );
    rejects(
        &format!("{CHAIN}version = 2 # <-\n"),
        &["unknown key `version`"],
    );
    for (kind, extra) in [
        ("monitor", ""),
        ("simple-nat", "public_ip = \"192.0.2.1\"\n"),
        ("mazu-nat", "public_ip = \"192.0.2.1\"\n"),
        ("gen", ""),
        ("firewall", ""),
        (
            "load-balancer",
            "vip = \"192.0.2.1\"\nbackends = [\"10.0.0.1\"]\n",
        ),
    ] {
        rejects(
            &with(&format!(
                "[[middlebox]]\nkind = \"{kind}\"\n{extra}bogus = 1 # <-\n"
            )),
            &[&format!("({kind}): unknown key `bogus`")],
        );
    }
    rejects(
        &with("[[middlebox]]\nkind = \"gen\"\nthread = 2 # <-\n"),
        &["unknown key `thread`", "did you mean `threads`"],
    );
    // A key of another kind.
    rejects(
        &with("[[middlebox]]\nkind = \"monitor\"\nstate_size = 2 # <-\n"),
        &["(monitor): unknown key `state_size`"],
    );
    // In a firewall rule, inline and as an array of tables.
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\nrules = [\n { action = \"allow\" },\n \
             { action = \"allow\", port = 80 }, # <-\n]\n",
        ),
        &["(firewall): rule 1: unknown key `port`", "sport, dport"],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]]\naction = \"deny\"\n\
             [[middlebox.rules]]\naction = \"allow\"\nscr = \"10.0.0.0/8\" # <-\n",
        ),
        &["rule 1: unknown key `scr`", "did you mean `src`"],
    );
}

#[test]
fn missing_keys() {
    rejects(
        "[chain] # <-\nname = \"t\"\n[[middlebox]]\nkind = \"gen\"\n",
        &["[chain]: missing key `f`"],
    );
    rejects(
        "# <-\n[[middlebox]]\nkind = \"gen\"\n",
        &["missing [chain] table"],
    );
    rejects(
        &with("[[middlebox]] # <-\nkind = \"simple-nat\"\nports = \"1000-2000\"\n"),
        &["(simple-nat): missing key `public_ip`", "203.0.113.1"],
    );
    rejects(
        &with("[[middlebox]] # <-\nkind = \"mazu-nat\"\n"),
        &["missing key `public_ip`"],
    );
    rejects(
        &with("[[middlebox]] # <-\nkind = \"load-balancer\"\nvip = \"192.0.2.1\"\n"),
        &["missing key `backends`"],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"firewall\"\nrules = [\n { proto = \"tcp\" }, # <-\n]\n"),
        &["rule 0: missing key `action`", "\"allow\" or \"deny\""],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]] # <-\nproto = \"tcp\"\n"),
        &["rule 0: missing key `action`"],
    );
}

#[test]
fn no_middlebox() {
    rejects(
        "[chain] # <-\nname = \"t\"\nf = 1\n",
        &["no [[middlebox]]", "at least one"],
    );
    rejects(&format!("middlebox = [] # <-\n{CHAIN}"), &["no middlebox"]);
    rejects(
        &format!("{CHAIN}[middlebox] # <-\nkind = \"gen\"\n"),
        &["[[middlebox]]", "array of tables"],
    );
}

#[test]
fn bad_addresses() {
    rejects(
        &with("[[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"203.0.113.300\" # <-\n"),
        &[
            "`public_ip`",
            "bad IPv4 address \"203.0.113.300\"",
            "such as",
        ],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"simple-nat\"\npublic_ip = 1 # <-\n"),
        &["`public_ip`", "invalid type", "IPv4 address"],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"0.0.0.0\" # <-\n"),
        &["`public_ip`", "unspecified"],
    );
    rejects(
        &with("[[middlebox]]\nkind = \"load-balancer\"\nvip = \"224.0.0.1\" # <-\nbackends = [\"10.0.0.1\"]\n"),
        &["`vip`", "multicast"],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"load-balancer\"\nvip = \"192.0.2.1\"\nbackends = [\n\
             \"10.0.0.1\",\n\"10.0.0.x\", # <-\n]\n",
        ),
        &["`backends[1]`", "bad IPv4 address \"10.0.0.x\""],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]]\naction = \"allow\"\n\
             src = \"10.0.0/8\" # <-\n",
        ),
        &[
            "rule 0: `src`",
            "bad IPv4 network \"10.0.0/8\"",
            "10.0.0.0/8",
        ],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\nrules = [{ action = \"allow\", dst = \"10.0.0.0/33\" }] # <-\n",
        ),
        &["rule 0: `dst`", "bad IPv4 network"],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]]\naction = \"allow\"\n\
             src = \"10.1.2.3/8\" # <-\n",
        ),
        &["rule 0: `src`", "host bits", "10.0.0.0/8"],
    );
}

#[test]
fn bad_port_ranges() {
    let nat = |ports: &str| {
        with(&format!(
            "[[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"192.0.2.1\"\nports = {ports} # <-\n"
        ))
    };
    rejects(
        &nat("\"60000-10000\""),
        &["`ports`", "60000 is above 10000"],
    );
    rejects(
        &nat("\"abc\""),
        &["`ports`", "bad port range \"abc\"", "10000-60000"],
    );
    rejects(&nat("\"1000-\""), &["bad port range"]);
    rejects(&nat("\"1-2-3\""), &["bad port range"]);
    rejects(&nat("\"70000\""), &["bad port range"]);
    rejects(&nat("70000"), &["port 70000 is out of range"]);
    rejects(&nat("-1"), &["out of range"]);
    rejects(&nat("\"0-100\""), &["port 0"]);
    rejects(&nat("0"), &["port 0"]);
    rejects(
        &with(
            "[[middlebox]]\nkind = \"mazu-nat\"\npublic_ip = \"192.0.2.1\"\nports = \"0-0\" # <-\n",
        ),
        &["(mazu-nat)", "port 0"],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]]\naction = \"allow\"\n\
             dport = \"443-80\" # <-\n",
        ),
        &["rule 0: `dport`", "443 is above 80"],
    );
    rejects(
        &with(
            "[[middlebox]]\nkind = \"firewall\"\n[[middlebox.rules]]\naction = \"allow\"\n\
             proto = \"icmp\"\ndport = 80 # <-\n",
        ),
        &["rule 0: `dport`", "icmp"],
    );
}

#[test]
fn chain_limits() {
    let chain =
        |body: &str| format!("[chain]\nname = \"t\"\n{body}[[middlebox]]\nkind = \"gen\"\n");
    rejects(&chain("f = 0 # <-\n"), &["[chain]: `f`", "1..=8", "not 0"]);
    rejects(&chain("f = 9 # <-\n"), &["`f`", "1..=8", "not 9"]);
    rejects(&chain("f = -1 # <-\n"), &["`f`", "1..=8", "not -1"]);
    rejects(&chain("f = \"one\" # <-\n"), &["`f` must be an integer"]);
    rejects(
        &chain("f = 1\npartitions = 48 # <-\n"),
        &["`partitions`", "power of two", "not 48"],
    );
    rejects(
        &chain("f = 1\npartitions = 0 # <-\n"),
        &["`partitions`", "power of two"],
    );
    rejects(
        &chain("f = 1\npartitions = 131072 # <-\n"),
        &["`partitions`", "65536"],
    );
    rejects(
        &chain("f = 1\npartitions = 1099511627776 # <-\n"),
        &["`partitions`", "65536"],
    );
    assert_eq!(
        parse(&chain("f = 8\npartitions = 65536\n"))
            .chain
            .partitions,
        65536
    );
    assert_eq!(parse(&chain("f = 1\npartitions = 1\n")).chain.partitions, 1);
    rejects(
        "[chain]\nname = \"\" # <-\nf = 1\n[[middlebox]]\nkind = \"gen\"\n",
        &["`name`", "letters"],
    );
    rejects(
        "[chain]\nname = \"a b\" # <-\nf = 1\n[[middlebox]]\nkind = \"gen\"\n",
        &["`name`"],
    );
    let many = "[[middlebox]]\nkind = \"gen\"\n".repeat(256);
    let text = format!("{CHAIN}{many}");
    let e = ChainSpec::from_toml_str(&text, "t").unwrap_err();
    assert!(e.message().contains("at most 255"), "{e}");
    // It points at the 256th middlebox.
    assert_eq!(e.line(), Some(4 + 255 * 2));
}

#[test]
fn middlebox_limits() {
    let mb = |body: &str| with(&format!("[[middlebox]]\n{body}"));
    rejects(
        &mb("kind = \"gen\"\nthreads = 0 # <-\n"),
        &["(gen): `threads`", "1..=64", "not 0"],
    );
    rejects(
        &mb("kind = \"gen\"\nthreads = 100000 # <-\n"),
        &["`threads`", "1..=64"],
    );
    rejects(
        &mb("kind = \"gen\"\nthreads = \"2\" # <-\n"),
        &["`threads` must be an integer"],
    );
    rejects(
        &mb("kind = \"monitor\"\nsharing_level = 0 # <-\n"),
        &["(monitor): `sharing_level`", "1..=threads"],
    );
    rejects(
        &mb("kind = \"monitor\"\nthreads = 2\nsharing_level = 3 # <-\n"),
        &["`sharing_level` must be 1..=threads (2), not 3"],
    );
    rejects(
        &mb("kind = \"monitor\"\nthreads = 2\ncounters = \"per-flow\"\nsharing_level = 2 # <-\n"),
        &["`sharing_level`", "shared"],
    );
    rejects(
        &mb("kind = \"monitor\"\ncounters = \"perflow\" # <-\n"),
        &["`counters`", "per-flow"],
    );
    rejects(
        &mb("kind = \"gen\"\nstate_size = 0 # <-\n"),
        &["(gen): `state_size`", "1..=4096", "not 0"],
    );
    rejects(
        &mb("kind = \"gen\"\nstate_size = 4097 # <-\n"),
        &["`state_size`", "not 4097"],
    );
    assert_eq!(parse(&mb("kind = \"gen\"\nstate_size = 1\n")).k(), 1);
    rejects(
        &mb("kind = \"load-balancer\"\nvip = \"192.0.2.1\"\nbackends = [] # <-\n"),
        &["(load-balancer): `backends` is empty", "at least one"],
    );
    rejects(
        &mb("kind = \"load-balancer\"\nvip = \"192.0.2.1\"\nbackends = [\n\"10.0.0.1\",\n\"10.0.0.1\", # <-\n]\n"),
        &["10.0.0.1 is listed twice"],
    );
    rejects(
        &mb("kind = \"load-balancer\"\nvip = \"192.0.2.1\"\nbackends = [\"192.0.2.1\"] # <-\n"),
        &["is the `vip`"],
    );
    rejects(
        &mb("kind = \"mazu-nat\"\npublic_ip = \"192.0.2.1\"\nudp_timeout = 0 # <-\n"),
        &["(mazu-nat): `udp_timeout`", "at least 1"],
    );
    rejects(
        &mb("kind = \"firewall\"\ndefault = \"drop\" # <-\n"),
        &["`default`", "allow", "deny"],
    );
    rejects(
        &mb("kind = \"firewall\"\nrules = [{ action = \"allow\", proto = \"sctp\" }] # <-\n"),
        &["rule 0: `proto`", "tcp"],
    );
}

#[test]
fn errors_point_past_earlier_middleboxes() {
    // The error is in the third middlebox; lines of the earlier ones must not confuse it.
    rejects(
        "# comment\n\n[chain]\nname = \"t\"\nf = 1\n\n\
         [[middlebox]]\nkind = \"firewall\"\nrules = [\n  { action = \"allow\" },\n]\n\n\
         [[middlebox]]\nkind = \"monitor\"\n\n\
         [[middlebox]]\nkind = \"gen\"\nthreads = 2\n\nstate_size = 9999 # <-\n",
        &["middlebox 2 (gen): `state_size`"],
    );
}

/// A packet carries the logs of the f middleboxes before each server and its own: the bound is
/// the largest sum over f consecutive middleboxes, plus the message header.
#[test]
fn own_logs_bound_sums_the_logs_of_f_consecutive_middleboxes() {
    let gen = |size: u32| format!("\n[[middlebox]]\nkind = \"gen\"\nstate_size = {size}\n");
    let chain = |f: u8, sizes: &[u32]| {
        let mbs: String = sizes.iter().map(|&s| gen(s)).collect();
        parse(&format!("[chain]\nname = \"g\"\nf = {f}\n{mbs}"))
    };
    // Gen: 64 bytes beside its state.
    assert_eq!(chain(1, &[100, 4000, 100]).own_logs_bound(), 4064 + 6);
    assert_eq!(chain(2, &[100, 4000, 100]).own_logs_bound(), 4064 + 164 + 6);
    assert_eq!(chain(2, &[4096, 4096, 4096]).own_logs_bound(), 2 * 4160 + 6);
    // f above k: the whole chain.
    assert_eq!(chain(3, &[10, 20]).own_logs_bound(), 74 + 84 + 6);
    // A NAT's bound grows with the partitions its probing can lock, up to 144 of them.
    let nat = |partitions: u32| {
        parse(&format!(
            "[chain]\nname = \"n\"\nf = 1\npartitions = {partitions}\n\n[[middlebox]]\nkind = \"simple-nat\"\npublic_ip = \"203.0.113.1\"\n"
        ))
        .own_logs_bound()
    };
    assert_eq!(nat(64), 640 + 512 + 6);
    assert_eq!(nat(1024), 1440 + 512 + 6);
}
