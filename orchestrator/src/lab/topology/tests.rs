use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::*;

fn spec(file: &str) -> ChainSpec {
    let path = format!("{}/../specs/{file}", env!("CARGO_MANIFEST_DIR"));
    ChainSpec::load(Path::new(&path)).unwrap()
}

fn name(s: &str) -> LabName {
    s.parse().unwrap()
}

fn ch_rec() -> Topology {
    Topology::new(&spec("ch-rec.toml"), Layout::Ring, name("ftcl1"), 5).unwrap()
}

/// The words of every `ip` operation (sysctl and ethtool ones left out), by namespace.
fn ip_ops(t: &Topology) -> Vec<(Option<String>, Vec<String>)> {
    t.ops()
        .into_iter()
        .filter_map(|op| match op {
            Op::Ip { netns, args } => Some((netns, args)),
            _ => None,
        })
        .collect()
}

/// The word after `key` in `args`.
fn after<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == key)?;
    args.get(i + 1).map(String::as_str)
}

/// Every interface the operations make, by namespace (`None`: the root namespace), with its
/// MAC when set; a second interface of one name in one namespace fails the test.
fn interfaces(t: &Topology) -> BTreeMap<(Option<String>, String), Option<String>> {
    let mut all = BTreeMap::new();
    for (_, args) in ip_ops(t) {
        if args[..2] != ["link", "add"] {
            continue;
        }
        let peer = args.iter().position(|a| a == "peer");
        let (mine, theirs) = match peer {
            Some(p) => (&args[..p], Some(&args[p + 2..])),
            None => (&args[..], None),
        };
        let mac = after(mine, "address").map(str::to_string);
        let first = (after(mine, "netns").map(str::to_string), args[2].clone());
        assert!(all.insert(first.clone(), mac).is_none(), "{first:?} twice");
        if let Some(theirs) = theirs {
            let second = (
                after(theirs, "netns").map(str::to_string),
                theirs[0].clone(),
            );
            assert!(
                all.insert(second.clone(), None).is_none(),
                "{second:?} twice"
            );
        }
    }
    all
}

fn names_in(t: &Topology, ns: &str) -> BTreeSet<String> {
    interfaces(t)
        .into_keys()
        .filter(|(n, _)| n.as_deref() == Some(ns))
        .map(|(_, i)| i)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn lab_names_are_short_lowercase_and_dashless() {
    for good in ["a", "ftc", "ftcl1", "abcdefgh"] {
        assert_eq!(name(good).as_str(), good);
    }
    for bad in [
        "",
        "abcdefghi",
        "Ftc",
        "ftc-a",
        "1ab",
        "ftc_a",
        "ftc.a",
        "ftc a",
    ] {
        assert_eq!(
            bad.parse::<LabName>(),
            Err(TopologyError::Name(bad.to_string())),
            "{bad:?}"
        );
    }
}

#[test]
fn a_lab_owns_its_names_and_no_one_elses() {
    let t = ch_rec();
    for ns in t.namespaces() {
        assert!(t.name.owns_namespace(&ns), "{ns}");
        assert!(
            !t.name.owns_link(&ns),
            "a namespace's name is no link's: {ns}"
        );
    }
    for link in t.root_links() {
        assert!(t.name.owns_link(&link), "{link}");
        assert!(
            !t.name.owns_namespace(&link),
            "a link's name is no namespace's: {link}"
        );
    }
    assert!(t.name.owns_namespace("ftcl1-s244") && t.name.owns_link("ftcl1-m244"));
    for other in [
        "ftcl1",
        "ftcl1-",
        "ftcl1-s",
        "ftcl1-sx",
        "ftcl1-s0x",
        "ftcl1-s01",
        "ftcl1-s+1",
        "ftcl1-s245",
        "ftcl1-s99999",
        "ftcl1-m-1",
        "ftcl1-m00",
        "ftcl1-clients",
        "ftcl12-s0",
        "ftcl-s0",
        "ftcx-client",
        "xftcl1-s0",
        "eth0",
    ] {
        assert!(!t.name.owns_namespace(other), "{other}");
        assert!(!t.name.owns_link(other), "{other}");
    }
    // A lab's names are never another lab's: names hold no dash.
    assert!(!name("ftc").owns_namespace("ftcx-client"));
    assert!(!name("ftcx").owns_namespace("ftc-client"));
    assert!(!name("ftc").owns_link("ftc-x-mgmt"));
}

#[test]
fn ch_rec_gets_five_namespaces_a_bridge_and_three_management_links() {
    let t = ch_rec();
    assert_eq!(t.servers, 3);
    assert_eq!(
        t.namespaces(),
        [
            "ftcl1-client",
            "ftcl1-server",
            "ftcl1-s0",
            "ftcl1-s1",
            "ftcl1-s2"
        ]
    );
    assert_eq!(
        t.root_links(),
        ["ftcl1-mgmt", "ftcl1-m0", "ftcl1-m1", "ftcl1-m2"]
    );
    let ops = t.ops();
    let adds: Vec<String> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Ip { netns: None, args } if args[..2] == ["netns", "add"] => Some(args[2].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(adds, t.namespaces());
    let root: BTreeSet<String> = interfaces(&t)
        .into_keys()
        .filter(|(ns, _)| ns.is_none())
        .map(|(_, i)| i)
        .collect();
    assert_eq!(root, t.root_links().into_iter().collect());
    assert!(ops.iter().all(|op| op.to_string().len() < 200));
}

#[test]
fn every_namespace_gets_its_planned_interfaces_once() {
    let t = ch_rec();
    assert_eq!(
        names_in(&t, "ftcl1-s0"),
        set(&["mgmt", "to1", "from2", "cli-in", "srv-in"])
    );
    assert_eq!(names_in(&t, "ftcl1-s1"), set(&["mgmt", "to2", "from0"]));
    assert_eq!(
        names_in(&t, "ftcl1-s2"),
        set(&["mgmt", "to0", "from1", "cli-out", "srv-out"])
    );
    assert_eq!(names_in(&t, "ftcl1-client"), set(&["eth0", "eth1"]));
    assert_eq!(names_in(&t, "ftcl1-server"), set(&["eth0", "eth1"]));
    // Every interface made is brought up, in its namespace.
    let ups: BTreeSet<(Option<String>, String)> = ip_ops(&t)
        .into_iter()
        .filter(|(_, a)| a[..2] == ["link", "set"] && a.iter().any(|w| w == "up"))
        .map(|(ns, a)| (ns, a[2].clone()))
        .collect();
    for iface in interfaces(&t).into_keys() {
        assert!(ups.contains(&iface), "{iface:?} is never brought up");
    }
}

#[test]
fn ring_links_carry_jumbo_frames_and_edges_customer_frames() {
    let t = ch_rec();
    for (_, args) in ip_ops(&t) {
        if args[..2] == ["link", "add"] && args.iter().any(|a| a == "veth") {
            let mtu = after(&args, "mtu");
            match args[2].as_str() {
                n if n.starts_with("to") => assert_eq!(mtu, Some("3500"), "{args:?}"),
                "eth0" | "eth1" => assert_eq!(mtu, Some("1500"), "{args:?}"),
                _ => {}
            }
        }
    }
}

#[test]
fn each_host_has_one_mac_on_both_interfaces_and_knows_the_other() {
    let t = ch_rec();
    let macs = interfaces(&t);
    for host in [CLIENT, SERVER] {
        for iface in ["eth0", "eth1"] {
            assert_eq!(
                macs[&(Some(t.host_netns(&host)), iface.to_string())],
                Some(host.mac_text())
            );
        }
    }
    assert_ne!(CLIENT.mac, SERVER.mac);
    let ops = ip_ops(&t);
    let has = |ns: &str, words: &[&str]| {
        ops.iter().any(|(n, a)| {
            n.as_deref() == Some(ns) && a.iter().map(String::as_str).eq(words.iter().copied())
        })
    };
    assert!(has(
        "ftcl1-client",
        &["addr", "add", "10.78.0.1/24", "dev", "eth0"]
    ));
    assert!(has(
        "ftcl1-server",
        &["addr", "add", "10.78.0.2/24", "dev", "eth0"]
    ));
    let neigh = |ip: &str, mac: &str| {
        [
            "neigh",
            "add",
            ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let client_neigh = neigh("10.78.0.2", "02:00:0a:4e:00:02");
    let server_neigh = neigh("10.78.0.1", "02:00:0a:4e:00:01");
    assert!(ops.contains(&(Some("ftcl1-client".into()), client_neigh)));
    assert!(ops.contains(&(Some("ftcl1-server".into()), server_neigh)));
}

#[test]
fn a_nat_public_address_is_routed_back_to_the_client() {
    let t = ch_rec();
    assert_eq!(t.nat_ips, [Ipv4Addr::new(203, 0, 113, 1)]);
    let ops = ip_ops(&t);
    let server = Some("ftcl1-server".to_string());
    let route = ["route", "add", "203.0.113.1/32", "dev", "eth0"].map(str::to_string);
    assert!(ops.contains(&(server.clone(), route.to_vec())));
    let neigh = [
        "neigh",
        "add",
        "203.0.113.1",
        "lladdr",
        "02:00:0a:4e:00:01",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]
    .map(str::to_string);
    assert!(ops.contains(&(server, neigh.to_vec())));
    let mazu = Topology::new(&spec("mazu-nat.toml"), Layout::Ring, name("m"), 0).unwrap();
    assert_eq!(mazu.nat_ips, [Ipv4Addr::new(203, 0, 113, 1)]);
    let monitors = Topology::new(&spec("ch-2.toml"), Layout::Ring, name("m"), 0).unwrap();
    assert!(monitors.nat_ips.is_empty());
    assert!(!ip_ops(&monitors).iter().any(|(_, a)| a[0] == "route"));
}

#[test]
fn a_load_balancer_is_reached_through_the_chain_at_the_server() {
    let t = Topology::new(&spec("load-balancer.toml"), Layout::Ring, name("lb"), 0).unwrap();
    assert_eq!(t.vips, [Ipv4Addr::new(198, 51, 100, 10)]);
    assert_eq!(t.backends.len(), 3);
    assert!(t.nat_ips.is_empty());
    let ops = ip_ops(&t);
    let has = |ns: &str, words: &str| {
        let words: Vec<String> = words.split(' ').map(str::to_string).collect();
        ops.contains(&(Some(ns.to_string()), words))
    };
    assert!(has("lb-client", "route add 198.51.100.10/32 dev eth0"));
    let neigh = "neigh add 198.51.100.10 lladdr 02:00:0a:4e:00:02 dev eth0 nud permanent";
    assert!(has("lb-client", neigh));
    for backend in ["10.1.0.1", "10.1.0.2", "10.1.0.3"] {
        assert!(has("lb-server", &format!("addr add {backend}/32 dev lo")));
    }
    assert!(!t.same_shape(&Topology {
        backends: Vec::new(),
        ..t.clone()
    }));
}

#[test]
fn hosts_filter_no_reverse_path_and_nobody_speaks_ipv6() {
    let t = ch_rec();
    let sysctls: BTreeSet<(String, String, String)> = t
        .ops()
        .into_iter()
        .filter_map(|op| match op {
            Op::Sysctl { netns, key, value } => Some((netns, key, value)),
            _ => None,
        })
        .collect();
    for ns in t.namespaces() {
        for scope in ["all", "default"] {
            let key = format!("net.ipv6.conf.{scope}.disable_ipv6");
            assert!(sysctls.contains(&(ns.clone(), key, "1".into())));
        }
    }
    for host in [CLIENT, SERVER] {
        for scope in ["all", "default"] {
            let key = format!("net.ipv4.conf.{scope}.rp_filter");
            assert!(sysctls.contains(&(t.host_netns(&host), key, "0".into())));
        }
    }
    // The sysctls come before any interface, which inherits the defaults.
    let ops = t.ops();
    let last_sysctl = ops.iter().rposition(|o| matches!(o, Op::Sysctl { .. }));
    let first_link = ops
        .iter()
        .position(|o| matches!(o, Op::Ip { args, .. } if args[..2] == ["link", "add"]));
    assert!(last_sysctl < first_link);
    let offloads: BTreeSet<(String, String)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Offloads { netns, iface } => Some((netns.clone(), iface.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(offloads.len(), 4);
}

#[test]
fn addresses_are_per_subnet_and_unique() {
    let t = ch_rec();
    assert_eq!(t.bridge_ip(), Ipv4Addr::new(10, 77, 5, 1));
    let mut all: BTreeSet<Ipv4Addr> = (0..t.servers).map(|i| t.mgmt_ip(i)).collect();
    assert_eq!(
        all.iter().copied().collect::<Vec<_>>(),
        [10, 11, 12].map(|h| Ipv4Addr::new(10, 77, 5, h))
    );
    assert!(all.insert(t.bridge_ip()));
    let big = Topology {
        servers: MAX_SERVERS,
        ..ch_rec()
    };
    let mgmt: BTreeSet<Ipv4Addr> = (0..big.servers).map(|i| big.mgmt_ip(i)).collect();
    assert_eq!(mgmt.len(), usize::from(MAX_SERVERS));
    assert_eq!(big.mgmt_ip(MAX_SERVERS - 1), Ipv4Addr::new(10, 77, 5, 254));
    assert!(big.root_links().iter().all(|l| l.len() <= 15));
    let text = (0..=MAX_SERVERS)
        .map(|_| "[[middlebox]]\nkind = \"monitor\"\n")
        .collect::<String>();
    let spec = ChainSpec::from_toml_str(&format!("[chain]\nname = \"big\"\nf = 1\n{text}"), "big")
        .unwrap();
    assert_eq!(
        Topology::new(&spec, Layout::Ring, name("x"), 0),
        Err(TopologyError::TooManyServers(usize::from(MAX_SERVERS) + 1))
    );
}

#[test]
fn the_ends_get_their_edges() {
    let t = ch_rec();
    assert_eq!(
        t.edge_args(0),
        ["--edge-in", "out=cli-in", "--edge-in", "in=srv-in"]
    );
    assert!(t.edge_args(1).is_empty());
    assert_eq!(
        t.edge_args(2),
        ["--edge-out", "out=srv-out", "--edge-out", "in=cli-out"]
    );
}

#[test]
fn one_server_closes_the_ring_on_itself_and_holds_both_ends() {
    let t = Topology {
        servers: 1,
        ..ch_rec()
    };
    assert_eq!(t.links(), [(0, 0)]);
    assert_eq!(
        t.link_args(0),
        ["--ring-next", "to0", "--ring-prev", "from0"]
    );
    assert_eq!(
        names_in(&t, "ftcl1-s0"),
        set(&["mgmt", "to0", "from0", "cli-in", "srv-in", "cli-out", "srv-out"])
    );
    assert_eq!(t.edge_args(0).len(), 8);
    assert_eq!(t.namespaces().len(), 3);
}

#[test]
fn ftmb_links_each_logger_to_its_master_and_the_next_logger() {
    let ch3 = spec("ch-3.toml");
    let t = Topology::new(&ch3, Layout::Ftmb, name("ftcl1"), 5).unwrap();
    assert_eq!(t.servers, 6);
    assert!(!t.same_shape(&Topology::new(&ch3, Layout::Ring, name("ftcl1"), 5).unwrap()));
    assert_eq!(t.links(), [(0, 1), (0, 2), (2, 3), (2, 4), (4, 5)]);
    assert_eq!(
        names_in(&t, "ftcl1-s0"),
        set(&["mgmt", "to1", "to2", "cli-in", "srv-in"])
    );
    assert_eq!(names_in(&t, "ftcl1-s1"), set(&["mgmt", "from0"]));
    assert_eq!(
        names_in(&t, "ftcl1-s2"),
        set(&["mgmt", "from0", "to3", "to4"])
    );
    assert_eq!(
        names_in(&t, "ftcl1-s4"),
        set(&["mgmt", "from2", "to5", "cli-out", "srv-out"])
    );
    assert_eq!(names_in(&t, "ftcl1-s5"), set(&["mgmt", "from4"]));
    assert_eq!(t.link_args(0), ["--link", "1=to1", "--link", "2=to2"]);
    assert_eq!(
        t.link_args(2),
        ["--link", "0=from0", "--link", "3=to3", "--link", "4=to4"]
    );
    assert_eq!(t.link_args(5), ["--link", "4=from4"]);
    assert_eq!(t.edge_args(4).len(), 4, "the last logger sends frames out");
    assert!(t.edge_args(5).is_empty());
}

/// A chain whose middleboxes run two threads gets links of two queues, between servers and at
/// the edges (both ends, rx and tx), its nodes bind both (`--link-queues 2`, `--edge-queues
/// 2`), and a lab made for one queue is not the shape it needs.
#[test]
fn links_get_a_queue_per_thread_of_the_busiest_middlebox() {
    assert_eq!(ch_rec().queues, 1);
    assert!(!ch_rec().link_args(1).contains(&"--link-queues".to_string()));
    let mut two = spec("ch-rec.toml");
    two.middlebox[1].threads = 2;
    let t = Topology::new(&two, Layout::Ring, name("ftcl1"), 5).unwrap();
    assert_eq!(t.queues, 2);
    assert!(!t.same_shape(&ch_rec()));
    assert_eq!(
        t.link_args(1),
        [
            "--link-queues",
            "2",
            "--ring-next",
            "to2",
            "--ring-prev",
            "from0"
        ]
    );
    let mut veths = 0;
    for (_, args) in ip_ops(&t) {
        if args[..2] == ["link", "add"] && args.iter().any(|a| a == "veth") {
            let peer = args.iter().position(|a| a == "peer").unwrap();
            fn queues(side: &[String]) -> (Option<&str>, Option<&str>) {
                (after(side, "numtxqueues"), after(side, "numrxqueues"))
            }
            let want = match args[2].as_str() {
                n if n.starts_with("to") || n.starts_with("eth") => (Some("2"), Some("2")),
                _ => (None, None),
            };
            assert_eq!(queues(&args[..peer]), want, "{args:?}");
            assert_eq!(queues(&args[peer..]), want, "{args:?}");
            veths += 1;
        }
    }
    assert!(veths > 6);
    assert!(t.edge_args(1).is_empty());
    assert_eq!(&t.edge_args(0)[4..], ["--edge-queues", "2"]);
    assert_eq!(&t.edge_args(2)[4..], ["--edge-queues", "2"]);
    let ftmb = Topology::new(&two, Layout::Ftmb, name("ftcl1"), 5).unwrap();
    assert_eq!(
        ftmb.link_args(1),
        ["--link-queues", "2", "--link", "0=from0"]
    );
}
