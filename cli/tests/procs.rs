//! Every server its own process (issue 4): `ftc chaos --procs` kills real `ftc node` processes
//! with SIGKILL and checks the recovered chain; `ftc orchestrator` with `ftc node`s started by
//! hand recovers a killed node, closes connections that send unauthenticated bytes, and its
//! nodes exit when it goes; the commands fail clearly on bad input; with AF_XDP edges on veths
//! in a network namespace (root only), a TCP connection's packets cross Ch-Rec both ways,
//! NAT-rewritten. Heartbeats are slower than the default so that a loaded machine does not miss
//! them; runs are short and modest in rate.

mod support;

use ftc_node::netns::{namespaces_denied, Netns};
use ftc_node::xdp::{XdpConfig, XdpPort};
use ftc_orchestrator::control::{decode, Message, CONTROL_MAX_BODY};
use ftc_orchestrator::process::read_secret;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{spec, two_lanes, Temp};

/// The runs of this file take turns: each one loads the machine's cores on its own.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ftc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftc"))
}

/// `ftc chaos SPEC --procs --json` with `kills`; the report, after checking that it passed and
/// that every killed position was recovered, and the log (the nodes' exit summaries among it).
fn chaos(spec: &str, kills: &[&str], rate: u64) -> (serde_json::Value, String) {
    chaos_crashing(spec, kills, &[], 1.0, rate)
}

/// [`chaos`], with the orchestrator crashed at `crashes` (`SECS[+DOWN]`) and `duration` seconds
/// of traffic.
fn chaos_crashing(
    spec: &str,
    kills: &[&str],
    crashes: &[&str],
    duration: f64,
    rate: u64,
) -> (serde_json::Value, String) {
    let mut cmd = ftc();
    cmd.args(["chaos", spec, "--procs", "--json"])
        .args(["--duration", &duration.to_string()])
        .args(["--rate", &rate.to_string(), "--heartbeat-ms", "50"])
        .env("FTC_LOG", "info");
    for k in kills {
        cmd.args(["--kill", k]);
    }
    for c in crashes {
        cmd.args(["--kill-orchestrator", c]);
    }
    let out = cmd.output().expect("ftc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"));
    assert_eq!(
        report["violations"],
        serde_json::json!([]),
        "{report}\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let recovered: Vec<u64> = report["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["failed"].as_array().unwrap().iter())
        .map(|p| p.as_u64().unwrap())
        .collect();
    for k in report["kills"].as_array().unwrap() {
        assert!(
            recovered.contains(&k["position"].as_u64().unwrap()),
            "{report}"
        );
    }
    assert_eq!(
        report["kills"].as_array().unwrap().len(),
        kills.len(),
        "{report}"
    );
    assert!(report["packets_released"].as_u64().unwrap() > 0, "{report}");
    // Throughput is over the traffic's second at least, not to the last arrival alone.
    assert!(report["duration_s"].as_f64().unwrap() >= 1.0, "{report}");
    // Every packet the sink got was checked. A buffer's node records its releases before it
    // sends them, so one killed between the two has releases checked that never arrived.
    let checked = &report["output_commit_checked"];
    let (checked_packets, released) = (
        checked["packets"].as_u64().unwrap(),
        report["packets_released"].as_u64().unwrap(),
    );
    let last = report["servers"].as_u64().unwrap() - 1;
    let buffer_killed = report["kills"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["position"].as_u64() == Some(last));
    if buffer_killed {
        assert!(checked_packets >= released, "{report}");
    } else {
        assert_eq!(checked_packets, released, "{report}");
    }
    assert!(checked["transactions"].as_u64().unwrap() > 0, "{report}");
    // The replicas were found equal to their heads some time after the traffic ended.
    assert!(
        report["replicas_equal_after_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(
        report["orchestrator_kills"].as_array().unwrap().len(),
        crashes.len(),
        "{report}"
    );
    (report, stderr.into_owned())
}

/// The orchestrator crashes twice (`--kill-orchestrator`): the first time for 0.3 s, during
/// which server 1 is killed; the next orchestrator adopts the chain from the two that rejoin it
/// and recovers server 1. The second time it comes back at once and adopts the whole chain as
/// it runs. No packet is released twice, output commit holds, the replicas equal their heads.
#[test]
fn procs_chaos_survives_crashes_of_the_orchestrator() {
    let _turn = turn();
    let (report, log) = chaos_crashing(
        &spec("ch-rec.toml"),
        &["1@0.4"],
        &["0.3+0.3", "1.1+0"],
        1.5,
        5_000,
    );
    let crashes = report["orchestrator_kills"].as_array().unwrap();
    for c in crashes {
        assert!(c["back_at_ms"].as_f64().unwrap() >= c["at_ms"].as_f64().unwrap());
    }
    let first = &crashes[0]["adopted"];
    assert_eq!(first["rejoined"], serde_json::json!([0, 2]), "{report}");
    assert_eq!(first["recovery"], serde_json::json!(2), "{report}");
    let second = &crashes[1]["adopted"];
    assert_eq!(second["rejoined"], serde_json::json!([0, 1, 2]), "{report}");
    assert_eq!(second["recovery"], serde_json::Value::Null, "{report}");
    assert_eq!(second["epoch"], serde_json::json!(2), "{report}");
    let failed: Vec<_> = report["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["failed"].clone())
        .collect();
    assert_eq!(failed, [serde_json::json!([1])], "{report}");
    assert!(log.contains("rejoined the orchestrator"), "{log}");
}

/// The check of output commit across processes bites: nodes whose buffer releases packets
/// without waiting for commit vectors (a test hook) are caught.
#[test]
fn procs_chaos_catches_a_buffer_that_does_not_wait_for_commit_vectors() {
    let _turn = turn();
    let out = ftc()
        .args([
            "chaos",
            &spec("ch-2.toml"),
            "--procs",
            "--json",
            "--duration",
            "1",
        ])
        .args(["--kill", "1@0.5"])
        .args(["--rate", "5000", "--heartbeat-ms", "50"])
        .env("FTC_TEST_RELEASE_WITHOUT_COMMIT", "1")
        .output()
        .expect("ftc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    let violations = report["violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v.as_str().unwrap().starts_with("output commit: packet")),
        "{report}"
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn every_position_of_ch_rec_recovers_from_sigkill() {
    let _turn = turn();
    for position in 0..3 {
        let (report, _) = chaos(&spec("ch-rec.toml"), &[&format!("{position}@0.4")], 10_000);
        let r = &report["recoveries"][0];
        assert!(r["transfer_ns"].as_u64().unwrap() > 0, "{report}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{report}");
    }
}

/// Ch-Rec with two lanes (worker threads) per server: each node runs its server on two threads
/// that the flows spread over, and each position recovers from SIGKILL, output commit checked
/// for every released packet.
#[test]
fn nodes_of_two_lanes_recover_from_sigkill() {
    let _turn = turn();
    let spec = two_lanes("ch-rec-2-lanes.toml");
    for position in 0..3 {
        let (report, log) = chaos(&spec.arg(), &[&format!("{position}@0.4")], 5_000);
        // Each node's exit summary counts what each lane handled: the three nodes serving at
        // the end ran two lanes, and frames reached both.
        for lane in [
            "lane 0: ServerStats { frames: ",
            "lane 1: ServerStats { frames: ",
        ] {
            let busy = log.split(lane).skip(1).filter(|n| !n.starts_with('0'));
            assert_eq!(busy.count(), 3, "{lane}…: {report}\n{log}");
        }
    }
}

/// Ch-4 (four monitors) with f = 2.
fn ch_4_f_2(name: &str) -> Temp {
    let text = std::fs::read_to_string(spec("ch-4.toml"))
        .unwrap()
        .replace("f = 1", "f = 2");
    Temp::new(name, &text)
}

#[test]
fn every_position_of_a_chain_with_f_2_recovers_from_sigkill() {
    let _turn = turn();
    let spec = ch_4_f_2("ch-4-f2-each.toml");
    for position in 0..4 {
        chaos(&spec.arg(), &[&format!("{position}@0.4")], 5_000);
    }
}

/// Ch-4 with f = 2, killing `a` and `b` at once: both recover, in one epoch or in two (their
/// last heartbeats may be up to a period apart, so the second may be detected after the first
/// recovery finished), and nothing else was declared failed.
fn two_kills_with_f_2(a: u16, b: u16) {
    let _turn = turn();
    let spec = ch_4_f_2(&format!("ch-4-f2-{a}-{b}.toml"));
    let (report, _) = chaos(
        &spec.arg(),
        &[&format!("{a}@0.4"), &format!("{b}@0.4")],
        5_000,
    );
    let recoveries = report["recoveries"].as_array().unwrap();
    assert!(
        (1..=2).contains(&recoveries.len()),
        "one or two recoveries: {report}"
    );
    let mut failed: Vec<u64> = recoveries
        .iter()
        .flat_map(|r| r["failed"].as_array().unwrap().iter())
        .map(|p| p.as_u64().unwrap())
        .collect();
    failed.sort_unstable();
    failed.dedup();
    assert_eq!(failed, [u64::from(a), u64::from(b)], "{report}");
}

#[test]
fn two_simultaneous_kills_recover_with_f_2() {
    two_kills_with_f_2(0, 3);
}

/// Neighbours at once: one replacement's planned source is the other failed server, re-planned.
#[test]
fn two_simultaneous_kills_of_neighbours_recover_with_f_2() {
    two_kills_with_f_2(1, 2);
}

/// Processes of a test, killed and reaped when it ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `child` exits within `within`.
fn exits(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The address in the orchestrator's first line on stderr ("… on ADDR, waiting for its nodes").
fn listening_on(log: &mut impl BufRead) -> String {
    let mut first = String::new();
    log.read_line(&mut first).unwrap();
    first
        .split_once(" on ")
        .and_then(|(_, rest)| rest.split_once(','))
        .unwrap_or_else(|| panic!("the address in {first:?}"))
        .0
        .to_string()
}

/// `ftc orchestrator SPEC` on a free port with 50 ms heartbeats and `extra` options, whose
/// replacements exit as soon as they lose it: the process (its stdout as given), its control
/// address, and the rest of its stderr once it exits.
fn orchestrator(
    spec: &str,
    secret: &Temp,
    extra: &[&str],
    stdout: Stdio,
) -> (Child, String, std::thread::JoinHandle<String>) {
    let at = ["--listen", "127.0.0.1:0", "--headless-for", "0"];
    orchestrator_at(spec, secret, &[&at, extra].concat(), stdout)
}

/// `ftc orchestrator SPEC` with 50 ms heartbeats and `extra` options (`--listen` among them):
/// as [`orchestrator`].
fn orchestrator_at(
    spec: &str,
    secret: &Temp,
    extra: &[&str],
    stdout: Stdio,
) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut orchestrator = ftc()
        .args(["orchestrator", spec])
        .args(["--secret-file", &secret.arg(), "--heartbeat-ms", "50"])
        .args(extra)
        // The nodes it starts inherit this: their exit summaries come with its log.
        .env("FTC_LOG", "info")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(orchestrator.stderr.take().unwrap());
    let addr = listening_on(&mut log);
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = log.read_to_string(&mut rest);
        rest
    });
    (orchestrator, addr, log)
}

/// `ftc node` at `position` for the orchestrator at `addr`, with 50 ms heartbeats, which exits
/// as soon as it loses the orchestrator; the spec and any other options to add.
fn node(addr: &str, position: u16, secret: &Temp) -> Command {
    node_waiting(addr, position, secret, "0")
}

/// [`node`], serving on without its orchestrator for up to `secs` seconds.
fn node_waiting(addr: &str, position: u16, secret: &Temp, secs: &str) -> Command {
    let mut node = ftc();
    node.args(["node", "--orchestrator", addr])
        .args(["--position", &position.to_string()])
        .args(["--secret-file", &secret.arg(), "--heartbeat-ms", "50"])
        .args(["--headless-for", secs]);
    node
}

/// Ch-Rec deployed by `ftc orchestrator --json` and three `ftc node` processes, whose node 1 was
/// killed and replaced (after `before_kill` ran): the processes (the orchestrator first) and the
/// orchestrator's stderr once it exits.
fn recovered_ch_rec(
    secret: &Temp,
    before_kill: impl FnOnce(&str),
) -> (Procs, std::thread::JoinHandle<String>) {
    let (mut orchestrator, addr, log) =
        orchestrator(&spec("ch-rec.toml"), secret, &["--json"], Stdio::piped());
    let lines = lines_of(orchestrator.stdout.take().unwrap());
    let mut procs = Procs(vec![orchestrator]);
    for i in 0..3 {
        let node = node(&addr, i, secret)
            .arg(spec("ch-rec.toml"))
            .spawn()
            .unwrap();
        procs.0.push(node);
    }
    before_kill(&addr);
    std::thread::sleep(Duration::from_millis(500));
    procs.0[2].kill().unwrap();
    node_1_recovered(&lines, 2);
    (procs, log)
}

/// The next recovery report of `reports` (JSON lines): node 1's, into `epoch`.
fn node_1_recovered(reports: &std::sync::mpsc::Receiver<String>, epoch: u32) {
    let line = reports
        .recv_timeout(Duration::from_secs(20))
        .expect("a recovery report");
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["failed"], serde_json::json!([1]), "{line}");
    assert_eq!(report["epoch"], epoch, "{line}");
}

/// The lines `stdout` gives, as they come.
fn lines_of(stdout: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    lines
}

/// A node whose data path hangs (a test hook parks its thread) while its heartbeat thread lives
/// on stops heartbeating once its pulse is `--stall-ms` old, exits with status 3, and the
/// orchestrator replaces it.
#[test]
fn a_node_whose_data_path_hangs_exits_and_is_replaced() {
    let _turn = turn();
    let secret = Temp::new("secret", "orchestrator test secret\n");
    let (mut orchestrator, addr, log) =
        orchestrator(&spec("ch-rec.toml"), &secret, &["--json"], Stdio::piped());
    let lines = lines_of(orchestrator.stdout.take().unwrap());
    let mut procs = Procs(vec![orchestrator]);
    for i in 0..3 {
        let mut node = node(&addr, i, &secret);
        if i == 1 {
            node.args(["--stall-ms", "500"])
                .env("FTC_TEST_HANG_AFTER_MS", "1000")
                .stderr(Stdio::piped());
        }
        procs.0.push(node.arg(spec("ch-rec.toml")).spawn().unwrap());
    }
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a recovery report");
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["failed"], serde_json::json!([1]), "{line}");
    assert!(exits(&mut procs.0[2], Duration::from_secs(10)), "{line}");
    let status = procs.0[2].wait().unwrap();
    let mut stderr = String::new();
    let hung = procs.0[2].stderr.take().unwrap();
    BufReader::new(hung).read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("node 1: its thread hangs (a test hook)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node 1: its data path made no progress for"),
        "{stderr}"
    );
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    drop(log.join());
}

/// Without their orchestrator, the nodes of `procs` (all but the first) exit, the replacement
/// it started too.
fn nodes_exit(procs: &mut Procs) {
    for node in &mut procs.0[1..] {
        assert!(
            exits(node, Duration::from_secs(5)),
            "a node outlived the orchestrator"
        );
    }
}

#[test]
fn an_orchestrator_process_recovers_a_node_and_refuses_strangers() {
    let _turn = turn();
    let secret = Temp::new("secret", "orchestrator test secret\n");
    let key = read_secret(secret.0.as_path()).unwrap();
    let (mut procs, log) = recovered_ch_rec(&secret, |addr| {
        // A stranger's bytes: the orchestrator closes the connection without answering them
        // (it challenged the connection as it opened, as it does every one).
        let mut stranger = TcpStream::connect(addr).unwrap();
        stranger.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let _ = stranger.read_to_end(&mut got);
        let challenge = decode(&got, &key, CONTROL_MAX_BODY);
        assert!(
            matches!(challenge, Ok(Message::Challenge { .. })),
            "{challenge:?}"
        );
    });
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    let log = log.join().unwrap();
    assert!(log.contains("closing it"), "the stranger is logged: {log}");
    nodes_exit(&mut procs);
}

/// An orchestrator stopped by SIGTERM tells every node to stop, and lets the replacement it
/// started exit by itself: its exit summary (on the orchestrator's stderr, which it inherited)
/// is not cut off by a kill.
#[test]
fn a_stopped_orchestrator_lets_its_replacement_exit_with_its_summary() {
    let _turn = turn();
    let secret = Temp::new("stop-secret", "orchestrator test secret\n");
    let (mut procs, log) = recovered_ch_rec(&secret, |_| {});
    let pid = procs.0[0].id() as i32;
    // SAFETY: kill touches no memory; the orchestrator is our child and not reaped.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert!(exits(&mut procs.0[0], Duration::from_secs(10)));
    let log = log.join().unwrap();
    assert!(
        log.contains("INFO: node server 1: data path"),
        "the replacement's exit summary: {log}"
    );
    nodes_exit(&mut procs);
}

#[test]
fn bad_secrets_addresses_and_orchestrators_fail_clearly() {
    let run = |args: &[&str]| {
        let out = ftc().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let spec = spec("ch-rec.toml");
    let node = |orchestrator: &str, secret: &str| {
        run(&[
            "node",
            "--orchestrator",
            orchestrator,
            "--position",
            "0",
            "--secret-file",
            secret,
            &spec,
        ])
    };
    let (code, err) = node("127.0.0.1:9", "/nonexistent/secret");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read the secret file /nonexistent/secret"),
        "{err}"
    );
    let empty = Temp::new("empty-secret", "\n");
    let (code, err) = node("127.0.0.1:9", &empty.arg());
    assert_eq!(code, Some(2));
    assert!(err.contains("secret is empty"), "{err}");
    let secret = Temp::new("node-secret", "s");
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, err) = node(&free.to_string(), &secret.arg());
    assert_eq!(code, Some(4), "no orchestrator: {err}");
    assert!(
        err.contains(&format!("cannot reach the orchestrator at {free}")),
        "{err}"
    );
    let (code, err) = node("not-an-address", &secret.arg());
    assert_eq!(code, Some(2));
    assert!(err.contains("--orchestrator"), "{err}");
    let (code, err) = run(&[
        "orchestrator",
        &spec,
        "--listen",
        "127.0.0.1:0",
        "--secret-file",
        "/nonexistent",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read the secret file"), "{err}");
}

/// Ring links of more queues than the interfaces have: the node names the queue it lacks and
/// how to make more, and `--link-queues` outside 1 to 64 is refused.
#[test]
fn link_queues_an_interface_lacks_fail_clearly() {
    let secret = Temp::new("queues-secret", "s");
    let node = |ns: Option<&Netns>, queues: &str| {
        let mut cmd = match ns {
            Some(ns) => ns.exec(env!("CARGO_BIN_EXE_ftc")),
            None => ftc(),
        };
        cmd.args(["node", "--orchestrator", "127.0.0.1:9", "--position", "1"])
            .args(["--secret-file", &secret.arg()])
            .args([
                "--ring-next",
                "qa",
                "--ring-prev",
                "qb",
                "--link-queues",
                queues,
            ])
            .arg(spec("ch-rec.toml"));
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in ["0", "65"] {
        let (code, err) = node(None, bad);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("--link-queues"), "{err}");
    }
    if let Some(why) = namespaces_denied() {
        eprintln!(
            "skipping the rest of link_queues_an_interface_lacks_fail_clearly: veths in a \
             network namespace: {why}"
        );
        return;
    }
    let ns = Netns::create("ftcq").unwrap();
    ns.veth("qa", "qb").unwrap();
    let (code, err) = node(Some(&ns), "2");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("AF_XDP on qa: no queue 1: the interface has 1 queue(s)"),
        "{err}"
    );
}

/// The client, the server behind the chain, and the NAT's public address (specs/ch-rec.toml).
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const SERVER: [u8; 4] = [198, 51, 100, 1];
const PUBLIC: [u8; 4] = [203, 0, 113, 1];

/// A TCP SYN (or, with `ack`, SYN-ACK) frame.
fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ack: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let b = if ack { b.ack(1) } else { b };
    let mut frame = Vec::new();
    b.write(&mut frame, b"ftc").unwrap();
    frame
}

/// A TCP/IPv4 frame's addresses and ports, after checking both its checksums from scratch.
fn tcp_checked(frame: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let h = PacketHeaders::from_ethernet_slice(frame).expect("a frame that parses");
    let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(tcp))) = (&h.net, &h.transport)
    else {
        panic!("not TCP/IPv4: {frame:02x?}")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    let payload = h.payload.slice();
    assert_eq!(
        tcp.checksum,
        tcp.calc_checksum_ipv4(ip, payload).unwrap(),
        "TCP checksum"
    );
    assert_eq!(payload, b"ftc");
    (
        ip.source,
        tcp.source_port,
        ip.destination,
        tcp.destination_port,
    )
}

/// Send `frame` into `entry` until a TCP frame leaves by `exit` (another port of the test's);
/// that frame. Repeats cover the chain's start-up (and are harmless to a NAT: one mapping).
fn through(entry: &mut XdpPort, exits: &mut [XdpPort], frame: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        entry.send(frame).unwrap();
        entry.flush().unwrap();
        let wait = Instant::now() + Duration::from_millis(200);
        while Instant::now() < wait {
            for exit in exits.iter_mut() {
                let mut got = None;
                if exit.wait(Duration::from_millis(5)).unwrap() {
                    exit.recv_batch(|bytes| {
                        if got.is_none() && bytes.get(12..14) == Some(&[0x08, 0x00][..]) {
                            got = Some(bytes.to_vec());
                        }
                    })
                    .unwrap();
                }
                if let Some(frame) = got {
                    return frame;
                }
            }
        }
    }
    panic!("nothing left the chain by {} in 20 s", exits[0].iface());
}

/// Ch-Rec with AF_XDP edges, all in a network namespace: a TCP SYN sent into server 0's
/// outbound edge leaves the last server's outbound edge source-NATed with correct checksums and
/// its MAC addresses untouched; then the last server (the NAT's) is killed, the orchestrator's
/// replacement takes over its edges and the NAT's state, and the server's reply, sent into server
/// 0's inbound edge, leaves the replacement's inbound edge addressed back to the client. The
/// edges have two queues each (`--edge-queues 2`, passed on to the replacement), and the test
/// sends on queue 1: a node bound to queue 0 alone would never see the frames.
#[test]
fn af_xdp_edges_carry_a_connection_through_ch_rec_across_a_failure() {
    if let Some(why) = namespaces_denied() {
        eprintln!(
            "skipping af_xdp_edges_carry_a_connection_through_ch_rec_across_a_failure: \
             AF_XDP on veths in a network namespace: {why}"
        );
        return;
    }
    let _turn = turn();
    // Declared first, dropped last: the processes go before their namespace.
    let ns = Netns::create("ftcx").unwrap();
    // Server 0's edges e0o (outbound) and e0i (inbound), the last server's e2o and e2i; the
    // test plays the client's network on c0o and c2i, the server's on s0i and s2o.
    for (end, peer) in [
        ("e0o", "c0o"),
        ("e0i", "s0i"),
        ("e2o", "s2o"),
        ("e2i", "c2i"),
    ] {
        ns.veth_queues(end, peer, 2).unwrap();
    }
    let secret = Temp::new("edges-secret", "edges test secret\n");
    let ftc_in_ns = |args: &[&str]| {
        let mut cmd = ns.exec(env!("CARGO_BIN_EXE_ftc"));
        cmd.args(args);
        cmd
    };
    // The nodes, and the replacement the orchestrator starts, exit as soon as they lose it.
    let timing = [
        "--heartbeat-ms",
        "100",
        "--edge-queues",
        "2",
        "--headless-for",
        "0",
    ];
    let edge_in = ["--edge-in", "out=e0o", "--edge-in", "in=e0i"];
    let edge_out = ["--edge-out", "out=e2o", "--edge-out", "in=e2i"];
    let mut orchestrator = ftc_in_ns(&["orchestrator", &spec("ch-rec.toml")])
        .args(["--listen", "127.0.0.1:0", "--secret-file", &secret.arg()])
        .args(timing)
        .args(["--misses", "5", "--json"])
        .args(edge_in)
        .args(edge_out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(orchestrator.stderr.take().unwrap());
    let stdout = orchestrator.stdout.take().unwrap();
    let mut procs = Procs(vec![orchestrator]);
    let addr = listening_on(&mut log);
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::stderr()));
    let (lines_tx, recoveries) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    for (position, edges) in [&edge_in[..], &[], &edge_out[..]].iter().enumerate() {
        let node = ftc_in_ns(&["node", "--orchestrator", &addr])
            .args(["--position", &position.to_string()])
            .args(["--secret-file", &secret.arg()])
            .args(timing)
            .args(*edges)
            .arg(spec("ch-rec.toml"))
            .spawn()
            .unwrap();
        procs.0.push(node);
    }
    // The processes and their reports move to the namespace's thread (and end with it).
    ns.run(move || {
        let port = |iface, queue| {
            let config = XdpConfig {
                queue,
                ..XdpConfig::default()
            };
            XdpPort::open(iface, config).unwrap()
        };
        // Frames enter on queue 1, and leave on the queue of their flow.
        let (mut c0o, mut s0i) = (port("c0o", 1), port("s0i", 1));
        let mut s2o = [port("s2o", 0), port("s2o", 1)];
        let mut c2i = [port("c2i", 0), port("c2i", 1)];
        let request = syn(CLIENT, 40_000, SERVER, 80, false);
        let out = through(&mut c0o, &mut s2o, &request);
        let (src, sport, dst, dport) = tcp_checked(&out);
        assert_eq!((src, dst, dport), (PUBLIC, SERVER, 80), "source-NATed");
        assert!(
            (10_000..=60_000).contains(&sport),
            "a port of the NAT's range: {sport}"
        );
        assert_eq!(
            out[..12],
            request[..12],
            "MAC addresses unchanged (a bump in the wire)"
        );
        procs.0[3].kill().unwrap();
        let line = recoveries
            .recv_timeout(Duration::from_secs(30))
            .expect("a recovery report");
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(report["failed"], serde_json::json!([2]), "{line}");
        let reply = syn(SERVER, 80, PUBLIC, sport, true);
        let back = through(&mut s0i, &mut c2i, &reply);
        assert_eq!(
            tcp_checked(&back),
            (SERVER, 80, CLIENT, 40_000),
            "the reply reaches the client through the recovered NAT"
        );
    })
    .unwrap();
}

/// A chain's UDP ends on the loopback: a free address for server 0's `--ingress`, and a socket
/// (reading with a short timeout) at the last server's `--egress`, with its address.
fn udp_ends() -> (String, UdpSocket, String) {
    let ingress = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let egress = sink.local_addr().unwrap().to_string();
    (ingress, sink, egress)
}

/// Sends TCP SYNs of 50 client ports into `ingress` until `n` frames came out at `sink` (within
/// 20 s); those frames.
fn syns_through(ingress: &str, sink: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0u16;
    while got.len() < n && Instant::now() < deadline {
        // Until the chain is deployed, frames are lost in the ingress socket's absence.
        let frame = syn(CLIENT, 40_000 + sent % 50, SERVER, 80, false);
        client.send_to(&frame, ingress).unwrap();
        sent = sent.wrapping_add(1);
        let mut buf = [0; 2048];
        while let Ok(n) = sink.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert!(
        got.len() >= n,
        "{} frames left the chain of {sent}",
        got.len()
    );
    got
}

/// `ftc node --stats-every`: an FTC Ch-Rec of two lanes per server, customer frames in and out
/// over UDP; server 0's and the last server's lines (shown without FTC_LOG) count the frames
/// admitted and released, summed over both lanes, and bad values are refused. The
/// orchestrator's (`ftc orchestrator --stats-every`) say how the chain stands.
#[test]
fn nodes_log_stats_lines_when_asked() {
    let _turn = turn();
    let secret = Temp::new("stats-secret", "stats test secret\n");
    let spec = two_lanes("stats-ch-rec-2-lanes.toml");
    let extra = ["--stats-every", "0.2"];
    let (orchestrator, addr, log) = orchestrator(&spec.arg(), &secret, &extra, Stdio::null());
    let mut procs = Procs(vec![orchestrator]);
    let (ingress, sink, egress) = udp_ends();
    let logs = [0, 2].map(|i| Temp::new(&format!("stats-node-{i}.log"), ""));
    for i in 0..3 {
        let mut node = node(&addr, i, &secret);
        node.args(["--stats-every", "0.2"]).env_remove("FTC_LOG");
        match i {
            0 => node.args(["--ingress", &ingress]),
            2 => node.args(["--egress", &egress]),
            _ => &mut node,
        };
        if let Some(log) = logs.get(usize::from(i / 2)).filter(|_| i != 1) {
            node.stderr(std::fs::File::create(&log.0).unwrap());
        }
        procs.0.push(node.arg(spec.arg()).spawn().unwrap());
    }
    syns_through(&ingress, &sink, 100);
    // Two more lines each: one at least covers traffic whole.
    std::thread::sleep(Duration::from_millis(500));
    procs.0[0].kill().unwrap();
    nodes_exit(&mut procs);
    // The orchestrator's own lines say how the chain stands.
    let log = log.join().unwrap();
    assert!(
        log.contains("chain: epoch 1, 3 of 3 positions up, 0 recoveries"),
        "{log}"
    );
    for (log, (part, other)) in logs
        .iter()
        .zip([("admitted", "released"), ("released", "admitted")])
    {
        let text = std::fs::read_to_string(&log.0).unwrap();
        let rates: Vec<f64> = text
            .lines()
            .filter(|l| l.contains(": over 0."))
            .filter_map(|l| l.split(&format!(", {part} ")).nth(1))
            .map(|r| r.split("/s").next().unwrap().parse().unwrap())
            .collect();
        assert!(rates.len() >= 2, "{text}");
        assert!(rates.iter().any(|&r| r > 0.0), "{text}");
        assert!(!text.contains(&format!(", {other} ")), "{text}");
        assert!(text.contains("lost 0, bad frames 0"), "{text}");
    }
    let out = ftc()
        .args(["node", "--orchestrator", "127.0.0.1:1", "--position", "0"])
        .args(["--secret-file", &secret.arg(), "--stats-every", "0.05"])
        .arg(spec.arg())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--stats-every must be between 0.1 and 3600 seconds, not 0.05"),
        "{stderr}"
    );
}

/// The FTMB baseline as processes (issue 6): `ftc orchestrator --mode ftmb` deploys two nodes
/// per middlebox of Ch-Rec (loggers at even positions, masters at odd ones), customer frames
/// enter at the first logger and leave at the last one over UDP, NAT-rewritten, each after its
/// PALs; a killed master is not recovered (FTMB keeps no replicas here): the orchestrator says
/// so and exits with an error once the grace runs out. Every middlebox has two threads: each
/// master runs two lanes, and the Monitor's master's exit summary shows both at work.
#[test]
fn ftmb_nodes_carry_frames_through_ch_rec_and_a_failure_halts_the_orchestrator() {
    let _turn = turn();
    let secret = Temp::new("ftmb-secret", "ftmb test secret\n");
    let spec = two_lanes("ftmb-ch-rec-2-lanes.toml");
    let (orchestrator, addr, log) =
        orchestrator(&spec.arg(), &secret, &["--mode", "ftmb"], Stdio::inherit());
    let mut procs = Procs(vec![orchestrator]);
    let (ingress, sink, egress) = udp_ends();
    // The Monitor's master (position 3) logs its exit summary here.
    let summary = Temp::new("ftmb-m1-master.log", "");
    for i in 0..6 {
        let mut node = node(&addr, i, &secret);
        node.args(["--mode", "ftmb"]);
        match i {
            0 => node.args(["--ingress", &ingress]),
            3 => node
                .env("FTC_LOG", "info")
                .stderr(std::fs::File::create(&summary.0).unwrap()),
            4 => node.args(["--egress", &egress]),
            _ => &mut node,
        };
        procs.0.push(node.arg(spec.arg()).spawn().unwrap());
    }
    let got = syns_through(&ingress, &sink, 50);
    for frame in &got {
        let (src, _, dst, dport) = tcp_checked(frame);
        assert_eq!((src, dst, dport), (PUBLIC, SERVER, 80), "NAT-rewritten");
    }
    procs.0[2].kill().unwrap();
    assert!(
        exits(&mut procs.0[0], Duration::from_secs(20)),
        "the orchestrator halts on a failure it cannot recover"
    );
    assert!(!procs.0[0].wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(log.contains("not recovered"), "{log}");
    // Cut off from the orchestrator, the Monitor's master exits with its summary.
    assert!(exits(&mut procs.0[4], Duration::from_secs(10)));
    let summary = std::fs::read_to_string(&summary.0).unwrap();
    for lane in ["lane 0: transactions Some(", "lane 1: transactions Some("] {
        let busy = summary.split(lane).nth(1).unwrap_or("0");
        assert!(!busy.starts_with('0'), "{lane}…: {summary}");
    }
}

/// The orchestrator is not on the packet path (thesis §4.2.2): killed with SIGKILL, it leaves
/// Ch-Rec's nodes serving, customer frames still crossing; one started in its place at the same
/// address adopts the chain as its nodes rejoin it (epoch 1, undisturbed), recovers a node killed
/// after that, and stops them all when it is stopped.
#[test]
fn nodes_serve_on_without_their_orchestrator_and_rejoin_its_successor() {
    let _turn = turn();
    let secret = Temp::new("adopt-secret", "adoption test secret\n");
    let spec = spec("ch-rec.toml");
    let addr = control_addr();
    let at = ["--listen", addr.as_str(), "--headless-for", "30"];
    let (first, _, first_log) = orchestrator_at(&spec, &secret, &at, Stdio::null());
    let mut procs = Procs(vec![first]);
    let (ingress, sink, egress) = udp_ends();
    let logs = [0, 1, 2].map(|i| Temp::new(&format!("adopt-node-{i}.log"), ""));
    let ends = (ingress.as_str(), egress.as_str());
    procs
        .0
        .extend(nodes_serving_on(&addr, &secret, &spec, ends, |i| {
            std::fs::File::create(&logs[usize::from(i)].0)
                .unwrap()
                .into()
        }));
    syns_through(&ingress, &sink, 50);
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    drop(first_log.join());
    // Past the detection timeout (3 heartbeats of 50 ms): nobody watches, frames still flow.
    std::thread::sleep(Duration::from_millis(300));
    let got = syns_through(&ingress, &sink, 50);
    for frame in &got {
        let (src, _, dst, _) = tcp_checked(frame);
        assert_eq!((src, dst), (PUBLIC, SERVER), "NAT-rewritten");
    }
    for node in &mut procs.0[1..] {
        assert!(node.try_wait().unwrap().is_none(), "a node exited");
    }
    let extra = [&at[..], &["--json", "--stats-every", "0.2"]].concat();
    let (mut second, _, second_log) = orchestrator_at(&spec, &secret, &extra, Stdio::piped());
    let reports = lines_of(second.stdout.take().unwrap());
    procs.0[0] = second;
    let deadline = Instant::now() + Duration::from_secs(10);
    let rejoined = |log: &Temp| {
        let text = std::fs::read_to_string(&log.0).unwrap();
        text.contains("rejoined the orchestrator at")
    };
    while !logs.iter().all(rejoined) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for log in &logs {
        let text = std::fs::read_to_string(&log.0).unwrap();
        assert!(text.contains("lost the orchestrator"), "{text}");
        assert!(rejoined(log), "{text}");
    }
    // Adopted once all rejoined: a node killed now is one of its chain, recovered in epoch 2.
    std::thread::sleep(Duration::from_millis(300));
    procs.0[2].kill().unwrap();
    node_1_recovered(&reports, 2);
    syns_through(&ingress, &sink, 50);
    let log = stop_adopter(&mut procs, second_log);
    assert!(
        log.contains(
            "adopted the chain its nodes ran in epoch 1: positions [0, 1, 2] rejoined; it runs \
             on undisturbed"
        ),
        "{log}"
    );
    assert!(log.contains("adopted in epoch 1 of run"), "{log}");
    assert!(
        log.contains("chain: epoch 2, 3 of 3 positions up, 1 recoveries, adopted in epoch 1"),
        "{log}"
    );
}

/// A free TCP port's address on 127.0.0.1: where an orchestrator listens, and the one started
/// in its place after it.
fn control_addr() -> String {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", free.local_addr().unwrap().port())
}

/// Ch-Rec's nodes (`spec`) for the orchestrator at `addr`, serving on without it for up to 30 s,
/// customer frames entering at `ingress` and leaving to `egress` over UDP; each position's
/// standard error is `stderr`'s.
fn nodes_serving_on(
    addr: &str,
    secret: &Temp,
    spec: &str,
    (ingress, egress): (&str, &str),
    mut stderr: impl FnMut(u16) -> Stdio,
) -> Vec<Child> {
    (0..3)
        .map(|i| {
            let mut node = node_waiting(addr, i, secret, "30");
            match i {
                0 => node.args(["--ingress", ingress]),
                2 => node.args(["--egress", egress]),
                _ => &mut node,
            };
            node.stderr(stderr(i)).arg(spec).spawn().unwrap()
        })
        .collect()
}

/// Stops the orchestrator that adopted the chain (`procs`' first process, whose standard error
/// `log` reads) with SIGTERM: it stops its nodes, and the two of them that `procs` started and
/// did not kill (the second and the fourth) exit with success, not orphaned. Its log.
fn stop_adopter(procs: &mut Procs, log: std::thread::JoinHandle<String>) -> String {
    let pid = procs.0[0].id() as i32;
    // SAFETY: kill touches no memory; the orchestrator is our child and not reaped.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert!(exits(&mut procs.0[0], Duration::from_secs(10)));
    for node in [1, 3] {
        assert!(exits(&mut procs.0[node], Duration::from_secs(5)));
        let status = procs.0[node].wait().unwrap();
        assert!(status.success(), "stopped, not orphaned: {status}");
    }
    log.join().unwrap()
}

/// An orchestrator killed in the middle of a recovery (node 1 killed, the survivors fenced,
/// its replacement still starting: the launch sleeps a second first) leaves the survivors
/// fenced, waiting. The one started in its place adopts them in the epoch they were fenced in,
/// takes the position that did not rejoin for failed, and finishes the recovery in the next
/// epoch; the first one's late replacement is refused; frames cross again.
#[test]
fn an_orchestrator_killed_mid_recovery_is_succeeded_by_one_that_finishes_it() {
    let _turn = turn();
    let secret = Temp::new("adopt-mid-secret", "adoption test secret\n");
    let spec = spec("ch-rec.toml");
    let addr = control_addr();
    let (ingress, sink, egress) = udp_ends();
    let launch = format!(
        "sleep 1; exec {} node --orchestrator {{orchestrator}} --position {{position}} \
         --secret-file {{secret_file}} --heartbeat-ms {{heartbeat_ms}} --headless-for 30 \
         {{customer}} {{spec}}",
        env!("CARGO_BIN_EXE_ftc")
    );
    let at = [
        "--listen",
        addr.as_str(),
        "--launch",
        launch.as_str(),
        "--ingress",
        ingress.as_str(),
        "--egress",
        egress.as_str(),
        "--json",
    ];
    // Its log in a file, read as it grows (its replacement writes there too).
    let first_log = Temp::new("adopt-mid-first.log", "");
    let first = ftc()
        .args(["orchestrator", &spec])
        .args(["--secret-file", &secret.arg(), "--heartbeat-ms", "50"])
        .args(at)
        .env("FTC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&first_log.0).unwrap())
        .spawn()
        .unwrap();
    let mut procs = Procs(vec![first]);
    let said = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(&first_log.0).unwrap();
            if log.contains(what) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the first orchestrator never said {what:?}");
    };
    said("waiting for its nodes");
    let ends = (ingress.as_str(), egress.as_str());
    let nodes = nodes_serving_on(&addr, &secret, &spec, ends, |_| Stdio::inherit());
    procs.0.extend(nodes);
    syns_through(&ingress, &sink, 50);
    procs.0[2].kill().unwrap();
    // Detected: the survivors fenced, its replacement launched, asleep.
    said("epoch 2: launching a replacement at position 1");
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    let (mut second, _, second_log) = orchestrator_at(&spec, &secret, &at, Stdio::piped());
    let reports = lines_of(second.stdout.take().unwrap());
    procs.0[0] = second;
    node_1_recovered(&reports, 3);
    syns_through(&ingress, &sink, 50);
    let log = stop_adopter(&mut procs, second_log);
    assert!(
        log.contains(
            "adopted the chain its nodes ran in epoch 2: positions [0, 2] rejoined; recovering \
             the rest in epoch 3"
        ),
        "{log}"
    );
    assert!(log.contains("rerouted in epoch 3 of run"), "{log}");
    // The first one's replacement, which writes to its log, woke to find another in its place.
    said("node 1: the orchestrator refused this node");
}
