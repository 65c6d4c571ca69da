//! Network namespaces with veth pairs, through iproute2's `ip` (root only), for the tests and
//! labs that put a chain's interfaces in a namespace of their own. A [`Netns`] deletes its
//! namespace, and the veths in it, when dropped, a failing test's included; what a killed test
//! process left is deleted by the next [`Netns::create`] of its prefix.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named `{prefix}-{pid}-{n}`, its loopback up and IPv6 off (no router
    /// solicitations or MLD reports on its links). The namespaces of `prefix` that killed
    /// processes left behind go first: those of a process id that no process has, and `name`
    /// itself, made by an earlier process of the same id.
    pub fn create(prefix: &str) -> io::Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Netns::make(prefix, format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// [`Netns::create`]'s namespace `name`, after deleting the leftovers of `prefix`.
    fn make(prefix: &str, name: String) -> io::Result<Netns> {
        let list = Command::new("ip").args(["netns", "list"]).output()?;
        for old in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| leftover(ns, prefix, &name))
        {
            // Another process may be deleting it at the same time.
            match run(Command::new("ip").args(["netns", "del", old])) {
                Ok(()) => tracing::info!("deleted network namespace {old}, a killed process's"),
                Err(e) => tracing::debug!("{e}"),
            }
        }
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        for conf in ["all", "default"] {
            run(netns
                .exec("sysctl")
                .args(["-qw", &format!("net.ipv6.conf.{conf}.disable_ipv6=1")]))?;
        }
        Ok(netns)
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A veth pair `a`–`b` in the namespace, both ends up.
    pub fn veth(&self, a: &str, b: &str) -> io::Result<()> {
        self.veth_queues(a, b, 1)
    }

    /// [`Netns::veth`] with `queues` rx and tx queues at each end (a frame sent on queue q of
    /// one end arrives on queue q of the other).
    pub fn veth_queues(&self, a: &str, b: &str, queues: u32) -> io::Result<()> {
        let q = queues.to_string();
        let counts = ["numtxqueues", &q, "numrxqueues", &q];
        let (type_veth, peer) = (["type", "veth", "peer", "name", b], counts);
        self.ip(&[&["link", "add", a][..], &counts, &type_veth, &peer].concat())?;
        for end in [a, b] {
            self.ip(&["link", "set", end, "up"])?;
        }
        Ok(())
    }

    /// `program` to run in the namespace (`ip netns exec NAME program`).
    pub fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Run `f` on a thread of its own inside the namespace; what it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: `file` is an open network namespace file; setns moves only this
                // thread, which ends with the scope.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            tracing::warn!("could not delete network namespace {}: {e}", self.name);
        }
    }
}

/// Whether namespace `ns` is one that a process gone without dropping its [`Netns`] left: a
/// `{prefix}-{pid}-{n}` of a process id that no process has (in this process's PID namespace), or
/// `name` itself, which holds this process's id and a number this process had not used: an
/// earlier process of the same id made it.
fn leftover(ns: &str, prefix: &str, name: &str) -> bool {
    if ns == name {
        return true;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    ns.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, n)| {
            digits(pid) && digits(n) && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// Run `cmd`; an error naming it and its stderr unless it succeeds.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Whether this process runs as root (the namespace tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The capabilities that making namespaces and links takes, with their bits in a capability
/// set: CAP_NET_ADMIN, and CAP_SYS_ADMIN for the mounts of `ip netns add`.
const NAMESPACE_CAPABILITIES: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

/// Why this process cannot make network namespaces and links, or `None` where it can: that
/// takes root, with CAP_NET_ADMIN and CAP_SYS_ADMIN in effect (on the calling thread, whose `ip`
/// commands inherit them), which root in a container may lack (Docker's default set has
/// neither).
pub fn namespaces_denied() -> Option<String> {
    if !is_root() {
        return Some("run it as root".to_string());
    }
    let status = thread_status().unwrap_or_default();
    let missing = missing_capabilities(&status, &NAMESPACE_CAPABILITIES);
    (!missing.is_empty()).then(|| {
        format!(
            "this process is root but lacks {} (a container without --privileged?)",
            missing.join(" and ")
        )
    })
}

/// The calling thread's `/proc/thread-self/status`, if it can be read: capabilities are per
/// thread, and a thread may have dropped some that the process's first thread has.
pub(crate) fn thread_status() -> Option<String> {
    std::fs::read_to_string("/proc/thread-self/status").ok()
}

/// Which of `wanted` (capabilities with their bits in a capability set) the effective set in
/// `status` (the text of `/proc/PID/status`) lacks: all of them where it has no `CapEff` line of
/// hex digits.
pub(crate) fn missing_capabilities(
    status: &str,
    wanted: &[(u32, &'static str)],
) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    wanted
        .iter()
        .filter(|&&(bit, _)| effective & (1 << bit) == 0)
        .map(|&(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_capabilities_say_whether_namespaces_can_be_made() {
        let status = |eff: &str| format!("Name:\tftc\nCapPrm:\t000001ffffffffff\nCapEff:\t{eff}\n");
        let missing = |text: &str| missing_capabilities(text, &NAMESPACE_CAPABILITIES);
        // Root with every capability, as on a host or in a privileged container.
        assert_eq!(missing(&status("000001ffffffffff")), [] as [&str; 0]);
        // Docker's default set.
        assert_eq!(
            missing(&status("00000000a80425fb")),
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        // --cap-add NET_ADMIN, and no more.
        assert_eq!(missing(&status("00000000a80435fb")), ["CAP_SYS_ADMIN"]);
        assert_eq!(missing(&status("0000000000201000")), [] as [&str; 0]);
        // The permitted set is not what counts, and no readable line is no capability.
        assert_eq!(missing(&status("0")).len(), 2);
        assert_eq!(missing(&status("zz")).len(), 2);
        assert_eq!(missing("Name:\tftc\n").len(), 2);
    }

    /// A process id that no process has: a child's, waited for.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    #[test]
    fn a_leftover_is_a_gone_process_s_namespace_of_the_prefix_or_the_name_itself() {
        let (me, dead) = (std::process::id(), dead_pid());
        let name = format!("ftct-{me}-7");
        assert!(leftover(&format!("ftct-{dead}-0"), "ftct", &name));
        assert!(leftover(&name, "ftct", &name));
        for kept in [
            format!("ftct-{me}-0"),
            "ftct-1-0".to_string(),
            format!("ftct-{dead}"),
            format!("ftct-{dead}-"),
            format!("ftct-{dead}-x"),
            format!("ftct-{dead}-0-0"),
            format!("ftctx-{dead}-0"),
            format!("ftct-x-{dead}-0"),
            format!("other-{dead}-0"),
        ] {
            assert!(!leftover(&kept, "ftct", &name), "{kept}");
        }
    }

    #[test]
    fn a_new_namespace_replaces_what_killed_processes_left() {
        if let Some(why) = namespaces_denied() {
            eprintln!("skipped: network namespaces: {why}");
            return;
        }
        let (me, dead) = (std::process::id(), dead_pid());
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        let (gone, live, same) = (
            format!("ftcnt-{dead}-0"),
            "ftcnt-1-0".to_string(),
            format!("ftcnt-{me}-4000000000"),
        );
        for ns in [&gone, &live, &same] {
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns]).unwrap();
        }
        // What the earlier process of this id left in its namespace.
        ip(&["-n", &same, "link", "add", "old0", "type", "bridge"]).unwrap();
        let netns = Netns::make("ftcnt", same.clone()).unwrap();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        let names: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let kept_live = names.contains(&live.as_str());
        let _ = ip(&["netns", "del", &live]);
        assert!(!names.contains(&gone.as_str()), "{names:?}");
        assert!(kept_live, "pid 1 runs: {names:?}");
        assert!(names.contains(&same.as_str()), "{names:?}");
        assert!(netns.ip(&["link", "show", "old0"]).is_err(), "made anew");
    }
}
