//! `ftc lab` on this host: `up` makes the planned namespaces, links, addresses and MACs, and
//! every server namespace reaches the management bridge; `down` removes all of it, also what a
//! killed `up` or a hand left behind without a state file; `run` deploys Ch-Rec, recovers a
//! killed node in its namespace, and stops on SIGTERM leaving no process behind (also when its
//! orchestrator was killed, and the replacement it started has no parent); `demo` carries a
//! real TCP download (curl from python3's http.server) through Ch-Rec over AF_XDP edges while the
//! middle server's node is SIGKILLed (in another run, the servers at both ends, one after the
//! other), and the file arrives whole; it also downloads in small frames (`--frame-bytes`),
//! after UDP flows that give the NAT state (`--udp-flows`), and in NF through a chain shorter
//! than f + 1; `ftc bench --transport xdp` downloads through FTC, NF and both FTMB baselines
//! (each in its lab layout), and recovers the NAT with its flows. These need
//! root with the capabilities network namespaces take: elsewhere they say so and pass. Each test
//! has its own lab name, which it holds host-wide while it runs (a test of another run waits),
//! and a guard that takes its lab down however the test ends. Heartbeats are slow (50 ms,
//! 10 misses) so that a loaded machine does not lose a node the test did not kill.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ftc_orchestrator::lab::apply;
use ftc_orchestrator::lab::procs::{alive, pids};
use support::{spec, two_lanes};

fn ftc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftc"))
}

/// Whether the test can run (as `ftc lab up` checks it); if not, it says why.
fn root() -> bool {
    match apply::check_privilege() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// Lock file `path` (made if need be) as `ftc` holds its lock files: flocked, with this process's
/// id in it. If another holds it, wait for it, saying so. Unlocked when the file is dropped.
fn hold(path: &str) -> File {
    std::fs::create_dir_all("/run/ftc").unwrap();
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    // SAFETY: flock takes the file's open descriptor and touches no memory.
    let flock = |file: &File, op| unsafe { libc::flock(file.as_raw_fd(), op) };
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB) != 0 {
        eprintln!("waiting for {path}, which another process holds");
        let locked = flock(&file, libc::LOCK_EX);
        assert_eq!(locked, 0, "{path}: {}", std::io::Error::last_os_error());
    }
    file.set_len(0).unwrap();
    write!(file, "{}", std::process::id()).unwrap();
    file
}

/// A directory of the test's own in the temp directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS…`, its output.
fn ip(args: &[&str]) -> String {
    String::from_utf8(run(Command::new("ip").args(args)).stdout).unwrap()
}

/// A lab of the test's own: taken down when dropped. Its name is the test's on the whole host
/// while the lab lives (a lock file, `/run/ftc/test-NAME.lock`, held all along): a test of
/// another `cargo test` run (another worktree's) that wants the same lab waits for it, rather than
/// taking it down under this one.
struct Lab {
    name: &'static str,
    _host: File,
}

impl Lab {
    fn new(name: &'static str) -> Lab {
        let host = hold(&format!("/run/ftc/test-{name}.lock"));
        // What an earlier, interrupted run of the test may have left.
        let _ = ftc().args(["lab", "down", "--name", name]).output();
        Lab { name, _host: host }
    }

    fn up(&self, spec_file: &str, extra: &[&str]) -> Output {
        let mut cmd = ftc();
        cmd.args(["lab", "up", &spec(spec_file), "--name", self.name])
            .args(extra);
        cmd.output().unwrap()
    }

    fn down(&self) -> String {
        let out = run(ftc().args(["lab", "down", "--name", self.name]));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The namespaces and root-namespace links named after the lab, and its files in
    /// `/run/ftc`.
    fn leftovers(&self) -> Vec<String> {
        let prefix = format!("{}-", self.name);
        let mut left: Vec<String> = ip(&["netns", "list"])
            .lines()
            .chain(ip(&["-o", "link", "show"]).lines())
            .flat_map(|l| l.split([' ', ':', '@']))
            .filter(|w| w.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let files = format!("lab-{}.", self.name);
        left.extend(
            std::fs::read_dir("/run/ftc")
                .unwrap()
                .filter_map(|e| e.unwrap().file_name().into_string().ok())
                .filter(|f| f.starts_with(&files)),
        );
        left
    }

    /// The third octet of its management subnet, from its state file (of a lab made, or half
    /// made).
    fn subnet(&self) -> u64 {
        let made = format!("/run/ftc/lab-{}.json", self.name);
        let text = std::fs::read_to_string(&made)
            .or_else(|_| std::fs::read_to_string(format!("{made}.partial")))
            .unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        state["subnet"].as_u64().unwrap()
    }

    fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ftc().args(["lab", "down", "--name", self.name]).output();
    }
}

/// `ip -n NS -o link show IFACE`.
fn link(ns: &str, iface: &str) -> String {
    ip(&["-n", ns, "-o", "link", "show", iface])
}

#[test]
fn up_makes_the_planned_lab_and_down_removes_it() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl1");
    let out = lab.up("ch-rec.toml", &[]);
    assert!(out.status.success(), "{out:?}");
    let x = lab.subnet();
    let namespaces = ip(&["netns", "list"]);
    for ns in ["client", "server", "s0", "s1", "s2"] {
        assert!(namespaces.contains(&lab.ns(ns)), "{ns}: {namespaces}");
    }
    // Every server reaches the bridge, where the orchestrator will listen.
    let listener = TcpListener::bind(format!("10.77.{x}.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    for i in 0..3 {
        let s = lab.ns(&format!("s{i}"));
        let addrs = ip(&["-n", &s, "-o", "-4", "addr", "show", "dev", "mgmt"]);
        assert!(
            addrs.contains(&format!("10.77.{x}.{}/24", 10 + i)),
            "{addrs}"
        );
        let connect = format!("exec 3<>/dev/tcp/10.77.{x}.1/{port}");
        run(Command::new("ip").args(["netns", "exec", &s, "bash", "-c", &connect]));
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from.ip().to_string(), format!("10.77.{x}.{}", 10 + i));
    }
    // The ring, with room for trailers (and no more than XDP takes on a veth), closed from the
    // last server to the first.
    for (ns, iface) in [
        ("s0", "to1"),
        ("s1", "from0"),
        ("s2", "to0"),
        ("s0", "from2"),
    ] {
        let l = link(&lab.ns(ns), iface);
        assert!(l.contains("mtu 3500") && l.contains("LOWER_UP"), "{l}");
    }
    // The edges: each host's two interfaces share its MAC, and are up.
    for (host, mac, edges) in [
        (
            "client",
            "02:00:0a:4e:00:01",
            [("s0", "cli-in"), ("s2", "cli-out")],
        ),
        (
            "server",
            "02:00:0a:4e:00:02",
            [("s0", "srv-in"), ("s2", "srv-out")],
        ),
    ] {
        for (iface, (server, chain_side)) in ["eth0", "eth1"].into_iter().zip(edges) {
            let l = link(&lab.ns(host), iface);
            assert!(l.contains(mac) && l.contains("LOWER_UP"), "{l}");
            assert!(link(&lab.ns(server), chain_side).contains("LOWER_UP"));
        }
        let rp = ip(&[
            "netns",
            "exec",
            &lab.ns(host),
            "sysctl",
            "-n",
            "net.ipv4.conf.eth1.rp_filter",
        ]);
        assert_eq!(rp.trim(), "0");
    }
    // Full checksums from the hosts (where ethtool is there to switch the offload off).
    let features = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "ethtool", "-k", "eth1"])
        .output();
    if let Some(out) = features.ok().filter(|o| o.status.success()) {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("tx-checksumming: off"), "{text}");
    }
    let client = ip(&[
        "-n",
        &lab.ns("client"),
        "-o",
        "-4",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert!(client.contains("10.78.0.1/24"), "{client}");
    let neigh = ip(&["-n", &lab.ns("server"), "neigh", "show", "203.0.113.1"]);
    assert!(
        neigh.contains("02:00:0a:4e:00:01") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    let route = ip(&["-n", &lab.ns("server"), "route", "get", "203.0.113.1"]);
    assert!(route.contains("dev eth0"), "{route}");
    let status = run(ftc().args(["lab", "status", "--name", "ftcl1"]));
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("lab ftcl1 is up: 3 servers"), "{status}");
    assert!(status.contains("root links: ftcl1-mgmt"), "{status}");
    // Up again: refused, naming the way out; --force makes it anew.
    let again = lab.up("ch-rec.toml", &[]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("lab ftcl1 exists already"), "{err}");
    assert!(err.contains("ftc lab down --name ftcl1"), "{err}");
    assert!(lab.up("ch-2.toml", &["--force"]).status.success());
    assert!(
        !ip(&["netns", "list"]).contains(&lab.ns("s2")),
        "ch-2 has 2 servers"
    );
    let down = lab.down();
    assert!(down.contains("removed 4 namespaces"), "{down}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

#[test]
fn down_removes_what_a_killed_up_or_a_hand_left_without_a_state_file() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl2");
    // Made by hand, with a process in it, and no state file.
    run(Command::new("ip").args(["netns", "add", "ftcl2-s0"]));
    run(Command::new("ip").args(["netns", "add", "ftcl2-client"]));
    run(Command::new("ip").args(["link", "add", "ftcl2-mgmt", "type", "bridge"]));
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", "ftcl2-s0", "sleep", "600"])
        .spawn()
        .unwrap();
    let up = lab.up("ch-rec.toml", &[]);
    assert_eq!(up.status.code(), Some(2), "a lab in the way is no lab");
    let down = lab.down();
    assert!(down.contains("removed 2 namespaces"), "{down}");
    assert!(down.contains("killed 1 processes"), "{down}");
    assert!(down.contains("no state file"), "{down}");
    assert!(
        sleeper.wait().unwrap().code().is_none(),
        "killed by a signal"
    );
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    // `up` killed half way (wherever it got to), its state file gone too.
    for after_ms in [20, 60, 150] {
        let mut up = ftc()
            .args(["lab", "up", &spec("ch-rec.toml"), "--name", "ftcl2"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        let _ = up.kill();
        let _ = up.wait();
        // The `ip` it was running, if any, finishes on its own.
        std::thread::sleep(Duration::from_millis(300));
        for made in ["", ".partial"] {
            let _ = std::fs::remove_file(format!("/run/ftc/lab-ftcl2.json{made}"));
        }
        lab.down();
        assert_eq!(
            lab.leftovers(),
            Vec::<String>::new(),
            "killed after {after_ms} ms"
        );
    }
}

/// `ftc lab up` interrupted half way (its `ip` stalls making the management bridge, and the
/// command is killed there, as Ctrl-C kills it): the lab reads as incomplete. `run` and `status`
/// fail at once saying so, `up` refuses, the lab's management subnet stays reserved, and `down`
/// removes what it recorded.
#[test]
fn a_lab_whose_up_was_interrupted_is_incomplete_until_taken_down() {
    if !root() {
        return;
    }
    let (lab, other) = (Lab::new("ftcli"), Lab::new("ftclj"));
    let dir = TempDir::new(&format!("ftc-test-{}-stalling-ip", std::process::id()));
    let real = Command::new("sh").args(["-c", "command -v ip"]).output();
    let real = String::from_utf8(real.unwrap().stdout).unwrap();
    let (script, stalled) = (dir.0.join("ip"), dir.0.join("stalled"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$*\" in *\"type bridge\"*) : > '{}'; exec sleep 600;; esac\n\
             exec {} \"$@\"\n",
            stalled.display(),
            real.trim()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&script));
    let path = format!("{}:{}", dir.0.display(), std::env::var("PATH").unwrap());
    let mut up = ftc()
        .args(["lab", "up", &spec("ch-2.toml"), "--name", lab.name])
        .env("PATH", path)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stalled.exists() {
        assert!(
            up.try_wait().unwrap().is_none(),
            "`up` ended before the bridge"
        );
        assert!(Instant::now() < deadline, "`up` never came to the bridge");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: killpg touches no memory; the group is the test's child's (`up` and its `ip`).
    assert_eq!(unsafe { libc::killpg(up.id() as i32, libc::SIGKILL) }, 0);
    up.wait().unwrap();
    let incomplete = "lab ftcli is incomplete: run `ftc lab down --name ftcli`";
    let out = ftc()
        .args(["lab", "run", &spec("ch-2.toml"), "--name", lab.name])
        .args(["--duration", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(incomplete), "{err}");
    let out = ftc()
        .args(["lab", "status", "--name", lab.name])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{status}");
    assert!(status.contains(incomplete), "{status}");
    assert!(status.contains("ftcli-s1"), "{status}");
    let again = lab.up("ch-2.toml", &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("lab ftcli exists already"), "{err}");
    // A lab made meanwhile gets another management subnet.
    assert!(other.up("ch-2.toml", &[]).status.success());
    assert_ne!(other.subnet(), lab.subnet());
    other.down();
    let down = lab.down();
    assert!(down.contains("removed 4 namespaces"), "{down}");
    assert!(!down.contains("no state file"), "{down}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// While a chain runs in a lab (its run lock held, as `ftc lab run` holds it), `down` and
/// `up --force` leave the lab alone, and its lock file; once the run is over, `down` removes it.
#[test]
fn down_refuses_while_a_chain_runs_in_the_lab() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl4");
    assert!(lab.up("ch-2.toml", &[]).status.success());
    let run_lock = format!("/run/ftc/lab-{}.run", lab.name);
    let held = hold(&run_lock);
    let says = format!("a chain runs in lab ftcl4 (process {})", std::process::id());
    let down = ftc()
        .args(["lab", "down", "--name", lab.name])
        .output()
        .unwrap();
    for out in [down, lab.up("ch-rec.toml", &["--force"])] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&says), "{err}");
    }
    let status = run(ftc().args(["lab", "status", "--name", lab.name]));
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("lab ftcl4 is up: 2 servers"), "{status}");
    assert!(Path::new(&run_lock).exists());
    drop(held);
    let down = lab.down();
    assert!(down.contains("removed 4 namespaces"), "{down}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// `down` removes what the lab's state file records and no more: a namespace named as a server
/// of the lab would be that it does not have (`-s9` of three servers) is another's, and so are
/// the processes in it. Without a state file, `down` takes the namespaces and the links named as
/// the lab names each (a server's number as the lab writes it), and no others.
#[test]
fn down_removes_what_the_lab_recorded_and_no_more() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl6");
    let by_hand = || {
        let _ = Command::new("ip")
            .args(["netns", "del", "ftcl6-s01"])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", "ftcl6-s1"])
            .output();
    };
    // What an interrupted run of the test may have left.
    by_hand();
    assert!(lab.up("ch-rec.toml", &[]).status.success());
    run(Command::new("ip").args(["netns", "add", "ftcl6-s9"]));
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", "ftcl6-s9", "sleep", "600"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ip(&["netns", "pids", "ftcl6-s9"]).trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sleeper never entered ftcl6-s9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let down = lab.down();
    // (How many root links it removed itself depends on how fast the namespaces went.)
    assert!(down.contains("removed 5 namespaces, "), "{down}");
    assert!(down.contains("killed 0 processes\n"), "{down}");
    assert!(ip(&["netns", "list"]).contains("ftcl6-s9"));
    assert!(sleeper.try_wait().unwrap().is_none(), "the sleeper lives");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // No state file: ftcl6-s9 is named as the lab names a namespace, ftcl6-m1 as it names a
    // link; ftcl6-s01 and a link ftcl6-s1 are not.
    run(Command::new("ip").args(["netns", "add", "ftcl6-s01"]));
    for link in ["ftcl6-s1", "ftcl6-m1"] {
        run(Command::new("ip").args(["link", "add", link, "type", "bridge"]));
    }
    let down = lab.down();
    assert!(
        down.contains("removed 1 namespaces, 1 links") && down.contains("no state file"),
        "{down}"
    );
    assert!(
        down.contains("  namespaces: ftcl6-s9\n  links: ftcl6-m1\n"),
        "{down}"
    );
    let mut left = lab.leftovers();
    left.sort();
    assert_eq!(left, ["ftcl6-s01", "ftcl6-s1"]);
    by_hand();
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// A lab command that finds the lab lock held waits for it, saying for whom, and goes on once
/// it is free.
#[test]
fn a_lab_command_says_whom_it_waits_for() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftclk");
    let held = hold("/run/ftc/lab.lock");
    let mut down = ftc()
        .args(["lab", "down", "--name", lab.name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(down.stderr.take().unwrap());
    let waits = format!(
        "waiting for the lab lock /run/ftc/lab.lock held by process {}",
        std::process::id()
    );
    expect(&rx, &mut Vec::new(), Duration::from_secs(60), |l| {
        l.contains(&waits)
    });
    drop(held);
    assert!(down.wait().unwrap().success());
}

/// `down` removes the directories that demos in the lab left in the temp directory, and no
/// other lab's.
#[test]
fn down_removes_the_demo_directories_the_lab_left() {
    if !root() {
        return;
    }
    let lab = Lab::new("ftclt");
    let mine = TempDir::new("ftc-lab-demo-ftclt-a1b2c3");
    std::fs::write(mine.0.join("file"), b"a download").unwrap();
    let other = TempDir::new("ftc-lab-demo-ftcltx-a1b2c3");
    let down = lab.down();
    let removed = format!("removed the demo's directory {}", mine.0.display());
    assert!(down.contains(&removed), "{down}");
    assert!(!mine.0.exists());
    assert!(other.0.exists());
}

/// Lines of a child's stdout or stderr, as they come.
fn lines(output: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// The first line that satisfies `want`, within `within`; every line read, for messages.
fn expect(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(e) => panic!("{e}; so far: {seen:#?}"),
        }
    }
}

/// The tests that run a chain take turns: each loads the machine's cores on its own.
static CHAIN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chain_turn() -> std::sync::MutexGuard<'static, ()> {
    CHAIN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `ftc lab run` cuts links on a schedule counted from the deployment: each cut is said as it
/// ends, one still down when the run ends is brought up and said then, and the isolated
/// server's replacement is the chain's business, not a violation.
#[test]
fn run_cuts_links_on_schedule() {
    if !root() {
        return;
    }
    let _turn = chain_turn();
    let lab = Lab::new("ftclrcut");
    let out = run(ftc()
        .args(["lab", "run", &spec("ch-rec.toml"), "--name", lab.name])
        .args(["--transport", "xdp", "--duration", "3"])
        .args([
            "--cut",
            "1-2@0.5+0.5",
            "--isolate",
            "2@1+0.5",
            "--cut",
            "0-1@2.9+1",
        ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let said = |what: &str| format!("ftc lab ftclrcut: cut {what} at ");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(": cut ")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, what) in lines.iter().zip([
        "the link from server 1 to server 2",
        "server 2's management link",
        "the link from server 0 to server 1",
    ]) {
        assert!(line.starts_with(&said(what)), "{text}");
    }
    assert!(text.contains("ftc lab ftclrcut: node 2 pid"), "{text}");
    assert!(!text.contains("VIOLATION"), "{text}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// An `ftc lab run` of Ch-Rec over UDP with slow heartbeats (50 ms, 10 misses) in a lab
/// brought up already: its standard output read line by line, its standard error kept.
struct LabRun {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    log: Option<std::thread::JoinHandle<String>>,
    /// The run's process group: the first orchestrator's pid.
    pgid: u32,
}

impl LabRun {
    /// Started in lab `name`, once it said it deployed the chain; with that line.
    fn start(name: &str) -> (LabRun, String) {
        let mut child = ftc()
            .args(["lab", "run", &spec("ch-rec.toml"), "--name", name])
            .args([
                "--transport",
                "udp",
                "--heartbeat-ms",
                "50",
                "--misses",
                "10",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut chain = LabRun {
            child,
            rx,
            seen: Vec::new(),
            log: Some(log),
            pgid: 0,
        };
        let first = chain.expect("process group");
        chain.pgid = first
            .split("process group ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{first}"));
        let deployed = chain.expect("deployed in epoch 1");
        (chain, deployed)
    }

    /// The first line from now on that contains `what`.
    fn expect(&mut self, what: &str) -> String {
        let within = Duration::from_secs(60);
        expect(&self.rx, &mut self.seen, within, |l| l.contains(what))
    }

    /// SIGTERM it (as Ctrl-C).
    fn terminate(&self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill touches no memory; the child is this test's, not reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0);
    }

    /// Wait for it to stop, which it must do successfully; what it said on both outputs.
    fn stopped(&mut self) -> (String, String) {
        let status = self.child.wait().unwrap();
        self.expect("stopped");
        let log = self.log.take().unwrap().join().unwrap();
        let said = self.seen.join("\n");
        assert!(status.success(), "{status}: {said}\n{log}");
        // Every process stopped when asked: none had to be killed.
        assert!(!log.contains("did not stop in"), "{log}");
        assert!(!log.contains("when asked to stop"), "{log}");
        (said, log)
    }

    /// Nothing of the run is left: not its process group, nor a process in one of the lab's
    /// namespaces.
    fn left_nothing(&self, lab: &Lab) {
        assert_eq!(group_members(self.pgid), Vec::<u32>::new());
        for ns in ["client", "server", "s0", "s1", "s2"] {
            let pids = ip(&["netns", "pids", &lab.ns(ns)]);
            assert_eq!(pids.trim(), "", "processes left in {ns}");
        }
    }
}

/// The live (not zombie) processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(pids) = pids() else {
        return Vec::new();
    };
    pids.filter(|&pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name: state, ppid, pgrp.
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
        group == Some(pgid) && alive(pid)
    })
    .collect()
}

/// The pid of the one process in namespace `ns` (a node).
fn node_in(ns: &str) -> i32 {
    let pids = ip(&["netns", "pids", ns]);
    pids.trim().parse().unwrap_or_else(|_| panic!("{pids}"))
}

/// SIGKILL process `pid` of this test's lab.
fn sigkill(pid: i32) {
    // SAFETY: kill touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[test]
fn run_deploys_ch_rec_recovers_a_node_in_its_namespace_and_stops_cleanly() {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl3");
    assert!(lab.up("ch-rec.toml", &[]).status.success());
    let x = lab.subnet();
    let (mut chain, deployed) = LabRun::start("ftcl3");
    for i in 0..3 {
        let node = format!("node {i} data 10.77.{x}.{}:", 10 + i);
        assert!(deployed.contains(&node), "{deployed}");
    }
    // A second run of the same lab is refused before it touches anything (it would take the
    // same edges and write over the secret the first one's nodes use); the first goes on, and
    // recovers below.
    let second = ftc()
        .args(["lab", "run", &spec("ch-rec.toml"), "--name", "ftcl3"])
        .args(["--transport", "udp", "--duration", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("a chain runs in lab ftcl3 already (process "),
        "{err}"
    );
    // Kill node 1: its replacement starts in ftcl3-s1, on the same address.
    let node_1 = node_in(&lab.ns("s1"));
    sigkill(node_1);
    chain.expect("recovered [1]");
    let pids = ip(&["netns", "pids", &lab.ns("s1")]);
    assert!(!pids.trim().is_empty() && !pids.contains(&node_1.to_string()));
    // SIGTERM (as Ctrl-C): everything stops, the lab stays up. The orchestrator stopped its
    // nodes: the run had none to stop itself.
    chain.terminate();
    let (said, _) = chain.stopped();
    assert!(!said.contains("which no orchestrator stopped"), "{said}");
    chain.left_nothing(&lab);
    assert!(!alive(node_1 as u32));
    assert!(
        ip(&["netns", "list"]).contains(&lab.ns("s0")),
        "the lab is still up"
    );
    lab.down();
    // Without a lab, `run` brings one up and takes it down again.
    let out = run(ftc()
        .args(["lab", "run", &spec("ch-2.toml"), "--name", "ftcl3"])
        .args(["--duration", "1", "--heartbeat-ms", "50", "--misses", "10"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("deployed in epoch 1"), "{text}");
    assert!(text.contains("taken down"), "{text}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// A run stopped while its orchestrator is dead stops every process of its own, with SIGTERM:
/// the nodes of its process group, and the replacement the dead orchestrator started, which
/// leads a group of its own and is nobody's child once its launcher is gone (it was left
/// serving). The run is asked to stop and its orchestrator SIGKILLed the moment after, so it
/// starts no other (or, should it see the kill first, stops the one it starts).
#[test]
fn a_run_stopped_without_its_orchestrator_stops_the_replacement_it_started() {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new("ftclorph");
    assert!(lab.up("ch-rec.toml", &[]).status.success());
    let (mut chain, _) = LabRun::start("ftclorph");
    sigkill(node_in(&lab.ns("s1")));
    chain.expect("recovered [1]");
    let replacement = node_in(&lab.ns("s1"));
    chain.terminate();
    sigkill(chain.pgid as i32);
    chain.stopped();
    chain.left_nothing(&lab);
    assert!(!alive(replacement as u32));
}

/// What the client runs in the ICMP test: a UDP datagram to a closed port of the server, until
/// it comes back refused; then datagrams too big for a link beyond the server, with the
/// don't-fragment bit, until the kernel says the path takes no more; the path MTU it learnt.
const ICMP_CLIENT: &str = r#"
import socket, time
refused = False
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.connect(("10.78.0.2", 53))
for _ in range(20):
    s.send(b"anyone?")
    try:
        s.recv(64)
    except ConnectionRefusedError:
        refused = True
        break
    except socket.timeout:
        pass
print("refused" if refused else "never refused")
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.connect(("10.99.0.1", 53))
for _ in range(20):
    try:
        s.send(b"x" * 1400)
    except OSError:
        break
    time.sleep(0.2)
print("path MTU", s.getsockopt(socket.IPPROTO_IP, IP_MTU))
"#;

/// ICMP errors from outside reach the client through Ch-Rec's NAT, their quotes translated back
/// to the packets the client sent: the server's "port unreachable" for a datagram to a closed
/// port makes the client's socket refused, and path MTU discovery works through the chain: the
/// server host, routing to a link of MTU 1000, answers a datagram of 1,400 bytes that may not
/// be fragmented with "fragmentation needed" (to the NAT's public address), and the client's
/// kernel learns the path MTU of 1000.
#[test]
fn icmp_errors_from_outside_reach_the_client_through_the_nat() {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new("ftclicmp");
    assert!(lab.up("ch-rec.toml", &[]).status.success());
    let (client, server) = (lab.ns("client"), lab.ns("server"));
    run(Command::new("ip")
        .args(["netns", "exec", &server, "sysctl", "-qw"])
        .arg("net.ipv4.ip_forward=1"));
    ip(&[
        "-n", &server, "link", "add", "narrow", "type", "veth", "peer", "name", "narrow1",
    ]);
    ip(&[
        "-n",
        &server,
        "addr",
        "add",
        "10.99.0.254/24",
        "dev",
        "narrow",
    ]);
    ip(&["-n", &server, "link", "set", "narrow", "mtu", "1000", "up"]);
    ip(&["-n", &server, "link", "set", "narrow1", "up"]);
    let far = ["10.99.0.1", "lladdr", "02:00:00:00:99:01", "dev", "narrow"];
    ip(&[
        &["-n", &server, "neigh", "add"][..],
        &far,
        &["nud", "permanent"],
    ]
    .concat());
    ip(&[
        "-n",
        &client,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.78.0.2",
    ]);
    let mut chain = ftc()
        .args(["lab", "run", &spec("ch-rec.toml"), "--name", lab.name])
        .args(["--transport", "xdp", "--duration", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(chain.stdout.take().unwrap());
    let mut seen = Vec::new();
    expect(&rx, &mut seen, Duration::from_secs(60), |l| {
        l.contains("deployed in epoch 1")
    });
    let out = Command::new("ip")
        .args(["netns", "exec", &client, "python3", "-c", ICMP_CLIENT])
        .output()
        .unwrap();
    // SAFETY: kill touches no memory; the child is this test's.
    assert_eq!(unsafe { libc::kill(chain.id() as i32, libc::SIGTERM) }, 0);
    assert!(chain.wait().unwrap().success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said, "refused\npath MTU 1000\n");
    lab.down();
}

/// A node that ends on its own while `lab run` runs the chain (here its data path hangs, a test
/// hook, and its stall check ends it with status 3) fails the run: status 1, and the node named.
#[test]
fn a_node_that_ends_on_its_own_fails_the_lab_run() {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new("ftclh");
    let out = ftc()
        .args(["lab", "run", &spec("ch-2.toml"), "--name", lab.name])
        .args(["--duration", "7", "--heartbeat-ms", "50", "--misses", "10"])
        .env("FTC_TEST_HANG_AFTER_MS", "300")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("VIOLATION: node 0 (pid ") && text.contains("exited (exit status: 3)"),
        "{text}"
    );
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

#[test]
fn lab_commands_check_their_input_before_touching_the_host() {
    // `ftc lab COMMAND` on Ch-Rec in lab ftcl9 with `args` exits 2, its error saying `says`.
    let refused = |command: &str, args: &[&str], says: &str| {
        let out = ftc()
            .args(["lab", command, &spec("ch-rec.toml"), "--name", "ftcl9"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    };
    let out = ftc()
        .args(["lab", "up", &spec("ch-rec.toml"), "--name", "Bad-Name"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad lab name \"Bad-Name\""), "{err}");
    // A dry run needs no root: the commands `up` would run.
    let out = run(ftc().args([
        "lab",
        "up",
        &spec("ch-rec.toml"),
        "--name",
        "ftcl9",
        "--dry-run",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nip netns add ftcl9-s2\n"), "{text}");
    assert!(
        text.contains("ip -n ftcl9-server route add 203.0.113.1/32 dev eth0"),
        "{text}"
    );
    let out = ftc()
        .args(["lab", "run", "/nonexistent.toml", "--name", "ftcl9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for (kills, says) in [
        (
            &["--kill", "3"][..],
            "the position must be a server of the chain, 0 to 2",
        ),
        (
            &["--kill", "1@1.5"],
            "the share must be a number from 0 to 1",
        ),
        (
            &["--kill", "1@0.5", "--kill", "1@0.5"],
            "--kill 1@0.5 is given twice",
        ),
        (
            &["--kill", "0", "--kill", "2"],
            "2 servers killed at 0.3 of the download",
        ),
        (
            &["--kill-orchestrator", "1.2"],
            "--kill-orchestrator \"1.2\": the share must be between 0 and 1",
        ),
        (
            &["--kill-orchestrator", "0.5+later"],
            "--kill-orchestrator \"0.5+later\": the downtime must be between 0 and 3600 seconds",
        ),
        (&["--cut", "1-2"], "--cut \"1-2\": expected A-B@WHEN[+DOWN]"),
        (
            &["--cut", "1@0.5"],
            "--cut \"1@0.5\": expected A-B@WHEN[+DOWN]",
        ),
        (
            &["--cut", "1-2@0.5+11"],
            "--cut \"1-2@0.5+11\": the downtime must be between 0 and 10 seconds",
        ),
        (
            &["--cut", "1-2@0.5+0"],
            "--cut \"1-2@0.5+0\": a link is cut for more than 0 and at most 10 s, not 0 s",
        ),
        (
            &["--cut", "0-2@1.5"],
            "--cut \"0-2@1.5\": the share must be between 0 and 1",
        ),
        (
            &["--cut", "1-3@0.5"],
            "--cut \"1-3@0.5\": no link between servers 1 and 3 to cut: the lab's links join \
             0-1, 1-2, 2-0",
        ),
        (
            &["--cut", "1-2@0.5", "--transport", "udp"],
            "--cut \"1-2@0.5\": no link between servers to cut: only over AF_XDP (--transport \
             xdp)",
        ),
        (
            &["--isolate", "1-2@0.5"],
            "--isolate \"1-2@0.5\": expected POSITION@WHEN",
        ),
        (
            &["--isolate", "3@0.5"],
            "--isolate \"3@0.5\": no server 3 to cut off: the lab's servers are 0 to 2",
        ),
        (
            &["--isolate", "1@0.5", "--mode", "nf"],
            "--isolate needs --mode ftc",
        ),
        (&["--isolate", "1@1.5"], "the share must be between 0 and 1"),
    ] {
        refused("demo", kills, says);
    }
    for (args, says) in [
        (
            &["--cut", "1-2@0.5"][..],
            "over packet sockets (--transport udp) they take the management network",
        ),
        (
            &["--transport", "xdp", "--duration", "2", "--cut", "1-2@5"],
            "--cut \"1-2@5\": the time must be between 0 and 2 seconds",
        ),
    ] {
        refused("run", args, says);
    }
    for connections in ["0", "65"] {
        refused("demo", &["--connections", connections], "--connections");
    }
    for (flag, value) in [
        ("--frame-bytes", "101"),
        ("--frame-bytes", "1515"),
        ("--frame-bytes", "many"),
        ("--udp-flows", "64513"),
    ] {
        refused("demo", &[flag, value], flag);
    }
}

/// Issue 5's acceptance run: a 200 MB download through Ch-Rec survives a SIGKILL of the middle
/// server's node; the file arrives whole (no reset), the server saw the NAT's address, the
/// replicas equal their heads and the monitor counted every delivered frame. The chain's edges
/// are AF_XDP sockets. Every node also drops 1 % of the frames from other servers
/// (`--ring-loss`), so the repair (retransmission requests and their answers, bounded by what
/// the links carry) runs on real links all along.
#[test]
fn a_tcp_download_through_the_chain_survives_a_sigkill_of_the_middle_server() {
    demo("ftcldemo", &spec("ch-rec.toml"), "xdp", &[], &[1], 2);
}

/// The orchestrator is not on the packet path: killed with SIGKILL a fifth into the download,
/// it leaves the nodes serving; the lab run starts another on its address, which adopts the
/// chain as the nodes rejoin it (epoch 1, undisturbed), then recovers the middle server killed
/// later. The download completes, and the state checks (which fetch the replicas in the new
/// orchestrator's run) hold.
#[test]
fn the_download_survives_a_sigkill_of_the_orchestrator_and_a_later_node_kill() {
    let extra = ["--kill-orchestrator", "0.2", "--kill", "1@0.6"];
    let said = [
        "ftc lab ftclorch: the orchestrator was killed (signal: 9 (SIGKILL)); starting another",
        "adopted the chain its nodes ran in epoch 1: positions [0, 1, 2] rejoined; it runs on \
         undisturbed",
    ];
    let Some(log) = ch_rec_recovering_server_1("ftclorch", &extra, &said) else {
        return;
    };
    assert_eq!(
        log.matches("rejoined the orchestrator at").count(),
        3,
        "{log}"
    );
}

/// [`demo`] of Ch-Rec over AF_XDP with `extra`, which recovers server 1 into epoch 2: its log
/// says each of `said`, and that it rerouted; `None` without root.
fn ch_rec_recovering_server_1(name: &'static str, extra: &[&str], said: &[&str]) -> Option<String> {
    let (log, _) = demo(name, &spec("ch-rec.toml"), "xdp", extra, &[1], 2);
    if !root() {
        return None;
    }
    for said in said.iter().chain(&["rerouted in epoch 2 of run"]) {
        assert!(log.contains(said), "{said}: {log}");
    }
    Some(log)
}

/// A server killed while no orchestrator runs is recovered once one is back: the orchestrator
/// is killed a fifth into the download and the lab run starts another only a second later;
/// meanwhile the middle server is killed too, and the TCP connection waits (its segments go
/// into the dead server). The new orchestrator adopts the two servers that rejoin and recovers
/// the third; the download completes, and the state checks hold.
#[test]
fn a_server_killed_while_no_orchestrator_runs_is_recovered_by_the_next() {
    let extra = ["--kill-orchestrator", "0.2+1", "--kill", "1@0.25"];
    let said = [
        "the orchestrator was killed (signal: 9 (SIGKILL)); starting another on",
        "after 1.0s, which the nodes rejoin",
        "adopted the chain its nodes ran in epoch 1: positions [0, 2] rejoined; recovering the \
         rest in epoch 2",
    ];
    ch_rec_recovering_server_1("ftclgone", &extra, &said);
}

/// A server killed at the same moment as the orchestrator: the lab run starts another at once,
/// and the node's exit while that one starts is a failure for it to recover, not the run's end
/// (it was: "node 1 exited (signal: 9 (SIGKILL)) before the chain was deployed", found by a
/// random schedule). The new orchestrator adopts the two servers that rejoin and recovers the
/// third; the download completes, and the state checks hold.
#[test]
fn a_server_killed_with_the_orchestrator_is_recovered_by_the_next() {
    let extra = ["--kill", "1@0.2", "--kill-orchestrator", "0.2"];
    let said = [
        "the orchestrator was killed (signal: 9 (SIGKILL)); starting another on",
        "adopted the chain its nodes ran in epoch 1: positions [0, 2] rejoined; recovering the \
         rest in epoch 2",
    ];
    ch_rec_recovering_server_1("ftclboth", &extra, &said);
}

/// A link between servers goes down for two seconds (`ip link set down` on its veth: nothing
/// crosses it either way) while the server on its near end is killed: the replacement starts
/// on a link that is down, the download waits out the cut (TCP resends what the link lost, the
/// replicas ask again for the logs it lost), and completes; the state checks hold. A shorter
/// cut of the same link at the same time leaves it down: a link comes up when the last cut of
/// it is over.
#[test]
fn the_download_survives_a_cut_link_and_a_kill_while_it_is_down() {
    // Paced, so that the probe is connected when the link goes down, though its SYN be lost
    // (to --ring-loss) and sent again a second later.
    let extra = [
        "--cut",
        "1-2@0.3+2",
        "--cut",
        "2-1@0.3+0.5",
        "--kill",
        "1@0.3",
        "--rate-mbit",
        "400",
    ];
    let (_, r) = demo("ftclcut", &spec("ch-rec.toml"), "xdp", &extra, &[1], 2);
    if !root() {
        return;
    }
    let cuts = r["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 2, "{r}");
    for (cut, down) in cuts.iter().zip([2.0, 0.5]) {
        assert_eq!(cut["link"], "1-2", "{r}");
        let (at, up_at) = (cut["at_bytes"].as_u64(), cut["up_at_bytes"].as_u64());
        assert!(
            at.unwrap() <= up_at.unwrap() && up_at.unwrap() < 200 << 20,
            "{r}"
        );
        let down_s = cut["down_s"].as_f64().unwrap();
        assert!(down_s >= down && down_s < down + 1.0, "{r}");
    }
    // Every round trip crosses the link: the probe's that was on its way when the link went
    // down came back once it was up again, two seconds later.
    let longest = r["rtt_us"]["max"].as_f64().unwrap();
    assert!(longest > 1.9e6, "{r}");
}

/// A server cut off the management network for two seconds (its control connection and
/// heartbeats; its links to the other servers stay up) is declared failed and replaced while it
/// still serves: its frames are of epoch 1, which the others are fenced out of, and once its
/// link is back it is told it was replaced (the cut-off's word, or the refusal of its rejoin)
/// and exits, which is no violation. Its replacement, behind the same link, joins then; the
/// download completes and the state checks hold.
#[test]
fn a_server_cut_off_the_management_network_is_replaced_while_it_serves() {
    let extra = ["--isolate", "1@0.3+2"];
    let (log, r) = demo("ftcliso", &spec("ch-rec.toml"), "xdp", &extra, &[], 2);
    if !root() {
        return;
    }
    let cuts = r["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 1, "{r}");
    assert_eq!(
        (&cuts[0]["link"], &cuts[0]["cut_off"]),
        (&"mgmt-1".into(), &1.into())
    );
    assert_eq!(r["replaced_without_kill"], serde_json::json!([]), "{r}");
    // The orchestrator's word as it cut the node off, when the connection outlived the
    // partition; else its answer to the node's rejoin.
    let refused = [
        "the orchestrator refused this node: declared failed in epoch 2; replaced",
        "the orchestrator refused this node: not taken back: position 1 is not this node's in \
         epoch 2 (declared failed and replaced",
    ];
    assert!(refused.iter().any(|r| log.contains(r)), "{log}");
}

/// Two servers of Ch-Rec (f = 1) cut off the management network at once, for longer than the
/// orchestrator waits for suspects beyond f, are more than the chain recovers: it halts, and the
/// demo ends then, with its reason, instead of waiting for the download to stall; the lab is
/// left as it was found.
#[test]
fn a_halted_orchestrator_ends_the_demo_with_its_reason() {
    if !root() {
        return;
    }
    let _turn = chain_turn();
    let lab = Lab::new("ftclhalt");
    let started = std::time::Instant::now();
    let out = ftc()
        .args([
            "lab",
            "demo",
            &spec("ch-rec.toml"),
            "--name",
            lab.name,
            "--json",
        ])
        // At the default 5 ms heartbeats and 3 misses the orchestrator waits 150 ms (10
        // detection timeouts) for the second suspect to beat again before it halts.
        .args(["--isolate", "0@0.3+1", "--isolate", "2@0.3+1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"));
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("the chain's run ended during the download (the orchestrator exited")
            && error.contains(
                "the orchestrator stopped: cannot recover epoch 2 after the failure \
                               of [0, 2]"
            ),
        "{error}"
    );
    // Well before a stalled download gives up (30 s without a byte).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{stderr}"
    );
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// The same with two lanes (worker threads) in every node, and sixteen downloads at once. The
/// lab gives the links between servers and the edges two queues, and each lane reads and sends
/// on its own (the flow's lane is the same at every server: the nodes key their flow hash with
/// the deployment's secret).
#[test]
fn the_download_survives_the_kill_with_two_lanes_per_node() {
    let spec = two_lanes("lab-middle-2-lanes.toml");
    let (log, _) = demo("ftcldlan", &spec.arg(), "xdp", SIXTEEN_FLOWS, &[1], 2);
    if !root() {
        return;
    }
    // From the exit summaries of the three nodes serving at the end (`node server N: …`),
    // each lane's: what it handled, what crossed its own link queues and edge queues, and how
    // many frames it read there for another lane.
    let counter = |text: &str, label: &str| -> u64 {
        let rest = text.split(label).nth(1).unwrap_or("");
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    for server in 0..3 {
        let marker = format!("node server {server}: data path");
        let line = log
            .lines()
            .find_map(|l| l.split_once(&marker).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no summary of server {server}: {log}"));
        // The nodes write to one pipe, so another node's summary may go on in the same line.
        let line = line.split("node server ").next().unwrap_or(line);
        let lanes: Vec<&str> = ["lane 0: ", "lane 1: "]
            .iter()
            .map(|lane| {
                let rest = line
                    .split(lane)
                    .nth(1)
                    .unwrap_or_else(|| panic!("{lane}: {line}"));
                rest.split(';').next().unwrap_or(rest)
            })
            .collect();
        let sum = |label| lanes.iter().map(|l| counter(l, label)).sum::<u64>();
        let frames = sum("ServerStats { frames: ");
        assert!(frames > 100_000, "server {server}: {line}");
        for lane in &lanes {
            // Both lanes carry flows (one of sixteen is over 6 % of the frames).
            let handled = counter(lane, "ServerStats { frames: ");
            assert!(handled * 50 > frames, "server {server}: {line}");
            let links = lane.split("links LinkStats {").nth(1).unwrap_or("");
            assert!(counter(links, "sent: ") > 0, "server {server}: {lane}");
            assert!(counter(links, "received: ") > 0, "server {server}: {lane}");
            if server != 1 {
                assert!(lane.contains(", edges [("), "server {server}: {lane}");
            }
        }
        // From a link, only retransmission requests (to every lane) change lanes.
        if server == 1 {
            let handed = sum("handed to other lanes ");
            assert!(handed * 20 < frames, "server 1: {line}");
        }
    }
}

/// The same over raw packet sockets at the edges (`--transport udp`), for hosts without AF_XDP.
#[test]
fn the_download_survives_the_kill_over_packet_sockets_too() {
    demo("ftcldemp", &spec("ch-rec.toml"), "udp", &[], &[1], 2);
}

/// The servers at the chain's ends, one after the other: server 0 (the forwarder, where both
/// directions enter) and server 2 (the buffer, where they leave, over the edges' AF_XDP
/// sockets). The download is paced so that the first recovery is over (10 missed heartbeats of
/// 50 ms, then the restore) long before the second kill: Ch-Rec has f = 1. Before it, 5,000
/// UDP flows give server 2's NAT that many mappings to recover.
#[test]
fn the_download_survives_kills_of_the_ingress_and_the_egress_server() {
    demo(
        "ftcldend",
        &spec("ch-rec.toml"),
        "xdp",
        &[
            "--kill",
            "0@0.2",
            "--kill",
            "2@0.6",
            "--rate-mbit",
            "300",
            "--udp-flows",
            "5000",
        ],
        &[0, 2],
        3,
    );
}

/// The ends' kills with two lanes per node: a replacement of an end server shares its edges'
/// queues out among its lanes as the first node did.
#[test]
fn the_download_survives_kills_of_the_ends_with_two_lanes_per_node() {
    let spec = two_lanes("lab-ends-2-lanes.toml");
    demo(
        "ftcldel2",
        &spec.arg(),
        "xdp",
        &[
            SIXTEEN_FLOWS,
            &["--kill", "0@0.2", "--kill", "2@0.6", "--rate-mbit", "300"],
        ]
        .concat(),
        &[0, 2],
        3,
    );
}

/// Sixteen downloads at once, 13 MB each (208 MB in all), so that flows reach both lanes of
/// every server: all on one lane has a chance of 2 in 65,536.
const SIXTEEN_FLOWS: &[&str] = &["--connections", "16", "--size-mb", "13"];

/// The bytes of the file a demo with `extra` arguments serves (`--size-mb`, 200 MB unless
/// given).
fn size_mb(extra: &[&str]) -> u64 {
    let at = extra.iter().position(|a| *a == "--size-mb");
    at.map_or(200, |i| extra[i + 1].parse().unwrap()) << 20
}

/// `ftc lab demo` on Ch-Rec (the spec at `spec_path`) with `extra` arguments; `killed`: the
/// positions killed, in order, and `epoch` the chain's last. The log and the JSON report (empty
/// and null without root).
fn demo(
    name: &'static str,
    spec_path: &str,
    transport: &str,
    extra: &[&str],
    killed: &[u64],
    epoch: u32,
) -> (String, serde_json::Value) {
    if !root() {
        return (String::new(), serde_json::Value::Null);
    }
    let _turn = chain_turn();
    let lab = Lab::new(name);
    let size = ["--size-mb", "200"];
    let out = ftc()
        .args(["lab", "demo", spec_path, "--name", lab.name, "--json"])
        .args(if extra.contains(&"--size-mb") {
            &[][..]
        } else {
            &size[..]
        })
        .args(["--transport", transport])
        .args(["--heartbeat-ms", "50", "--misses", "10"])
        .args(["--ring-loss", "0.01"])
        .args(extra)
        // The nodes' exit summaries: what the injected loss cost and how it was repaired.
        .env("FTC_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The sum over the nodes' summaries of the counter that follows `label`.
    let total = |label: &str| -> u64 {
        stderr
            .split(label)
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().unwrap_or(0)
            })
            .sum()
    };
    assert!(
        total("frames dropped by --ring-loss ") > 0,
        "no frame dropped: {stderr}"
    );
    assert!(
        total("requests_answered: ") > 0,
        "no retransmission request answered: {stderr}"
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"));
    assert_eq!(r["violations"], serde_json::json!([]), "{r}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (size, connections) = (size_mb(extra), r["connections"].as_u64().unwrap());
    assert_eq!(r["bytes"], connections * size, "{r}");
    assert_eq!(r["sha256_matches"], true, "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["curl_exit"], 0, "no reset, no timeout: {r}");
    let kills = r["killed"].as_array().unwrap();
    let positions: Vec<u64> = kills
        .iter()
        .map(|k| k["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, killed, "{r}");
    assert!(
        kills
            .iter()
            .all(|k| k["at_bytes"].as_u64().unwrap() < connections * size),
        "{r}"
    );
    assert_eq!(r["rerouted_epoch"], epoch, "{r}");
    // Every kill was recovered, and every recovery was of a kill or is named as one without.
    let mut recovered: Vec<u64> = r["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|x| assert!(x["total_ns"].as_u64().unwrap() > 0, "{r}"))
        .flat_map(|x| x["failed"].as_array().unwrap().clone())
        .map(|p| p.as_u64().unwrap())
        .collect();
    for extra in r["replaced_without_kill"].as_array().unwrap() {
        let at = recovered.iter().position(|p| Some(*p) == extra.as_u64());
        recovered.remove(at.expect("named among the recovered"));
    }
    recovered.sort_unstable();
    // Servers cut off the management network (`--isolate`) are replaced as killed ones are.
    let cut_off = r["cuts"].as_array().unwrap().iter();
    let cut_off = cut_off.filter_map(|c| c["cut_off"].as_u64());
    let mut replaced: Vec<u64> = killed.iter().copied().chain(cut_off).collect();
    replaced.sort_unstable();
    assert_eq!(recovered, replaced, "{r}");
    assert_eq!(r["server_saw"], serde_json::json!(["203.0.113.1"]), "{r}");
    assert!(r["frames_delivered"].as_u64().unwrap() > 100_000, "{r}");
    if let Some(i) = extra.iter().position(|a| *a == "--udp-flows") {
        // Every datagram was sent; --ring-loss drops some on the way (no one resends them).
        let flows: u64 = extra[i + 1].parse().unwrap();
        assert_eq!(r["udp_flows_sent"], flows, "{r}");
        assert!(
            r["udp_flows_arrived"].as_u64().unwrap() * 10 > flows * 9,
            "{r}"
        );
    }
    (stderr.into_owned(), r)
}

#[test]
fn bench_over_xdp_compares_ftc_with_nf_and_ftmb_in_a_lab_and_takes_it_down() {
    bench_in_lab("chain-length", "ftcl5", &["Ch-2", "Ch-5"]);
}

/// The threads experiment on a lone MazuNAT (f = 1): its second server is replica-only, and NF
/// passes its frames on there to the exit, as FTC's buffer releases them there.
#[test]
fn bench_over_xdp_runs_a_chain_shorter_than_f_plus_one_in_every_mode() {
    bench_in_lab("nat-threads", "ftcl7", &["1 thread", "2 threads"]);
}

/// The state-size experiment at its packet sizes: the client's MSS sets the server's frames.
#[test]
fn bench_over_xdp_runs_state_size_at_small_frames() {
    bench_in_lab(
        "state-size",
        "ftcl8",
        &[
            "128B pkt, 16B state",
            "128B pkt, 256B state",
            "512B pkt, 16B state",
            "512B pkt, 256B state",
        ],
    );
}

/// The recovery experiment in a lab: UDP flows give the NAT its state, its server is killed
/// during the download, and the recovery moves more state for more flows.
#[test]
fn bench_over_xdp_recovers_the_nat_with_its_flows() {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new("ftcl9r");
    let out = run(ftc().args([
        "bench",
        "recovery",
        "--transport",
        "xdp",
        "--quick",
        "--size-mb",
        "20",
        "--heartbeat-ms",
        "20",
        "--json",
        "--lab",
        lab.name,
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    let points = r["points"].as_array().expect("a points list");
    let bytes: Vec<f64> = points
        .iter()
        .map(|p| {
            let rec = &p["recovery"];
            assert_eq!(rec["violations"], serde_json::json!([]), "{p}");
            let run = &rec["runs"][0]["recovery"];
            assert_eq!(
                run["failed"],
                serde_json::json!([2]),
                "the NAT's server: {p}"
            );
            assert!(run["total_ns"].as_u64().unwrap() > 0, "{p}");
            rec["bytes"].as_f64().unwrap()
        })
        .collect();
    let labels: Vec<&str> = points
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["1k flows", "10k flows"]);
    // Each flow is a NAT mapping: 9,000 more are well over 100 kB more.
    assert!(bytes[1] > bytes[0] + 100_000.0, "{bytes:?}");
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// `ftc bench EXPERIMENT --transport xdp --quick` with two 5 MB downloads at once: its points
/// are `labels`, each with every mode's figures, no violation, and the ratios; the lab is gone
/// afterwards.
fn bench_in_lab(experiment: &str, name: &'static str, labels: &[&str]) {
    let _turn = chain_turn();
    if !root() {
        return;
    }
    let lab = Lab::new(name);
    let out = run(ftc().args([
        "bench",
        experiment,
        "--transport",
        "xdp",
        "--quick",
        "--size-mb",
        "5",
        "--connections",
        "2",
        "--json",
        "--lab",
        name,
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    assert_eq!(r["transport"], "xdp");
    assert_eq!(r["download_mb"], 5);
    assert_eq!(r["connections"], 2);
    let points = r["points"].as_array().expect("a points list");
    let got: Vec<&str> = points
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(got, labels);
    for p in points {
        for mode in ["ftc", "nf", "ftmb", "ftmb-snapshot"] {
            let m = &p["modes"][mode];
            assert!(m["throughput_pps"].as_f64().unwrap() > 0.0, "{mode}: {m}");
            // What a frame cost the machine.
            assert!(
                m["cpu_us_per_packet"].as_f64().unwrap() > 0.0,
                "{mode}: {m}"
            );
            // The probe's round trips: both directions through the chain take time.
            assert!(
                m["latency_us"]["p50"].as_f64().unwrap() > 0.0,
                "{mode}: {m}"
            );
            assert!(
                m["violations"].as_array().unwrap().is_empty(),
                "{mode}: {m}"
            );
        }
        for ratio in ["ftc_over_nf", "ftc_over_ftmb", "ftc_over_ftmb_snapshot"] {
            assert!(p["ratios"][ratio].as_f64().unwrap() > 0.0, "{ratio}: {p}");
        }
    }
    assert_eq!(lab.leftovers(), Vec::<String>::new());
}

/// A download of small frames (`--frame-bytes 128`: the client advertises an MSS of 74, so
/// each data frame carries 62 bytes of the file) through Ch-Gen, whose Gens write 64 bytes
/// per packet: the file arrives whole, in at least as many frames as 62-byte pieces of it, and
/// the replicas equal their heads.
#[test]
fn a_download_of_small_frames_runs_at_the_size_asked() {
    let Some((r, _)) = quiet_demo(
        "ftclfrm",
        "ch-gen.toml",
        &["--size-mb", "2", "--frame-bytes", "128"],
    ) else {
        return;
    };
    assert_eq!(r["violations"], serde_json::json!([]), "{r}");
    assert_eq!(
        (r["bytes"].as_u64(), r["frame_bytes"].as_u64()),
        (Some(2 << 20), Some(128))
    );
    assert_eq!(r["sha256_matches"], true, "{r}");
    assert!(
        r["frames_delivered"].as_u64().unwrap() * 62 >= 2 << 20,
        "{r}"
    );
}

/// NF over processes on a chain shorter than f + 1: the lone MazuNAT's server translates, the
/// replica-only server after it passes the frames on to the exit, and the file arrives whole
/// at a server that saw the NAT's address.
#[test]
fn nf_downloads_through_a_lone_nat_and_its_replica_only_server() {
    let Some((r, stderr)) = quiet_demo(
        "ftclnfn",
        "mazu-nat.toml",
        &["--mode", "nf", "--size-mb", "20"],
    ) else {
        return;
    };
    assert_eq!(r["bytes"], 20 << 20, "{r}");
    assert_eq!(r["sha256_matches"], true, "{r}");
    assert_eq!(r["curl_exit"], 0, "{r}");
    assert_eq!(r["server_saw"], serde_json::json!(["203.0.113.1"]), "{r}");
    assert!(stderr.contains("node 1 pid"), "two servers: {stderr}");
}

/// `ftc lab demo specs/SPEC --no-kill --json` with `extra` arguments in lab `name`, which must
/// succeed and leave nothing behind: its report and its standard error (`None` without root).
fn quiet_demo(
    name: &'static str,
    spec_file: &str,
    extra: &[&str],
) -> Option<(serde_json::Value, String)> {
    let _turn = chain_turn();
    if !root() {
        return None;
    }
    let lab = Lab::new(name);
    let out = run(ftc()
        .args(["lab", "demo", &spec(spec_file), "--name", lab.name])
        .args(["--no-kill", "--json"])
        .args(extra));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let r = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\n{stderr}"));
    assert_eq!(lab.leftovers(), Vec::<String>::new());
    Some((r, stderr.into_owned()))
}
