//! Launchers (DESIGN.md §8 step 2): how the orchestrator starts a server process at a position
//! of the ring, the initial ones and the replacements. `local` runs `ftc node` (this executable)
//! on this host; a command template runs an operator's command through `sh -c` (over ssh, in a
//! container …); `none` only logs, for an operator who starts nodes by hand. Every process this
//! launcher starts is kept in [`Children`], to be killed (failure injection) and reaped; each
//! leads a process group of its own, killed whole, so that a node a template's shell forked dies
//! with the shell.
//!
//! Each launch has a token of its own, random ([`unguessable`]), which the process it starts
//! finds in its environment ([`LAUNCH_TOKEN_ENV`]) and its `Join` carries: a position the
//! launcher launched a node at takes only the `Join` of its last launch ([`Launcher::refusal`]),
//! so that a node of an earlier launch there (one slow to start, and launched again) cannot take
//! the place of the one launched after it. A template that starts the node elsewhere (over ssh,
//! say) must pass the variable on (`ssh host FTC_LAUNCH_TOKEN=$FTC_LAUNCH_TOKEN ftc node …`).
//! Positions it launched nothing at (the initial nodes of `ftc orchestrator`, started by hand,
//! and every node with `none`) take a `Join` with or without a token.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftc_node::xdp::XdpConfig;

use super::edges::{Edge, EdgeKind};
use super::unguessable;
use crate::control::{Nonce, NONCE_LEN};

/// The environment variable a launched node finds the token of its launch in: 32 hexadecimal
/// digits ([`token_text`]).
pub const LAUNCH_TOKEN_ENV: &str = "FTC_LAUNCH_TOKEN";

/// A launch's token as [`LAUNCH_TOKEN_ENV`] gives it: lower-case hexadecimal.
pub fn token_text(token: &Nonce) -> String {
    token.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token of [`token_text`]'s text; `None` for anything else.
pub fn parse_token(text: &str) -> Option<Nonce> {
    let mut token = Nonce::default();
    if text.len() != 2 * NONCE_LEN || !text.is_ascii() {
        return None;
    }
    for (byte, pair) in token.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(token)
}

/// How nodes are started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// `EXE node …` on this host (`EXE`: the `ftc` executable).
    Local { exe: PathBuf },
    /// `sh -c TEMPLATE`, with the placeholders of [`substitute`] filled in.
    Command(String),
    /// Log the launch; someone else starts the node.
    None,
}

/// Why `--launch` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("--launch local: cannot locate the ftc executable: {0}")]
    Exe(io::Error),
    #[error(
        "--launch {0:?}: neither `local` nor `none`, and as a command it lacks {{position}} \
         (each node must be told its position)"
    )]
    NoPosition(String),
    #[error(
        "--launch {template:?}: {{{name}}} is no placeholder (they are {}; a shell's own \
         braces, as in ${{VAR}}, are left alone)",
        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
    )]
    UnknownPlaceholder { template: String, name: String },
}

/// The placeholders a command template may name, filled in by [`substitute`].
pub const PLACEHOLDERS: [&str; 6] = [
    "position",
    "orchestrator",
    "spec",
    "secret_file",
    "heartbeat_ms",
    "customer",
];

/// The first `{name}` in `template` (a name of letters, digits and `_`, not after a `$`) that
/// is not one of [`PLACEHOLDERS`]: a misspelt placeholder would reach the shell as typed.
fn unknown_placeholder(template: &str) -> Option<String> {
    template
        .match_indices('{')
        .filter(|&(at, _)| !template[..at].ends_with('$'))
        .filter_map(|(at, _)| {
            let (name, _) = template[at + 1..]
                .split_once('}')
                .filter(|(name, _)| !name.is_empty())?;
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then_some(name)
        })
        .find(|name| !PLACEHOLDERS.contains(name))
        .map(str::to_string)
}

impl How {
    /// `local` (with `exe`), `none`, or a command template, which must name `{position}`.
    pub fn parse(
        text: &str,
        exe: impl FnOnce() -> io::Result<PathBuf>,
    ) -> Result<How, LaunchError> {
        Ok(match text {
            "local" => How::Local {
                exe: exe().map_err(LaunchError::Exe)?,
            },
            "none" => How::None,
            template if template.contains("{position}") => {
                if let Some(name) = unknown_placeholder(template) {
                    return Err(LaunchError::UnknownPlaceholder {
                        template: template.to_string(),
                        name,
                    });
                }
                How::Command(template.to_string())
            }
            other => return Err(LaunchError::NoPosition(other.to_string())),
        })
    }
}

/// What every node of the chain is told when it is started.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeArgs {
    pub orchestrator: SocketAddr,
    pub spec: PathBuf,
    pub secret_file: PathBuf,
    pub heartbeat_ms: f64,
    /// Where customer frames enter the chain (server 0 listens there).
    pub ingress: Option<SocketAddr>,
    /// Where released customer frames go (from the last server).
    pub egress: Option<SocketAddr>,
    /// Server 0's AF_XDP edges where customer frames enter.
    pub edge_in: Vec<Edge>,
    /// The last server's AF_XDP edges where released frames leave.
    pub edge_out: Vec<Edge>,
    /// The sockets of those edges.
    pub edge_kind: EdgeKind,
    /// The queues of each AF_XDP edge interface the nodes bind.
    pub edge_queues: u32,
    /// How the AF_XDP edges open (queue, zero-copy, ring sizes).
    pub xdp: XdpConfig,
    /// The last position of the ring (the buffer's server).
    pub last: u16,
    /// `--observe DIR` for every node (an output-commit check across processes).
    pub observe: Option<PathBuf>,
    /// `--stats-every` for every node: it logs a stats line this often.
    pub stats_every: Option<Duration>,
    /// `--headless-for` for every node: how long it serves on without an orchestrator (`None`:
    /// the node's default).
    pub headless_for: Option<Duration>,
}

impl NodeArgs {
    /// The arguments of nodes that take no customer frames themselves (no `--ingress`,
    /// `--egress` or edges: a template or the caller adds them) and record nothing.
    pub fn without_customers(
        orchestrator: SocketAddr,
        spec: PathBuf,
        secret_file: PathBuf,
        heartbeat_ms: f64,
        last: u16,
    ) -> NodeArgs {
        NodeArgs {
            orchestrator,
            spec,
            secret_file,
            heartbeat_ms,
            ingress: None,
            egress: None,
            edge_in: Vec::new(),
            edge_out: Vec::new(),
            edge_kind: EdgeKind::default(),
            edge_queues: 1,
            xdp: XdpConfig::default(),
            last,
            observe: None,
            stats_every: None,
            headless_for: None,
        }
    }

    /// The arguments of `ftc node` for `position`.
    pub fn node_args(&self, position: u16) -> Vec<String> {
        let mut args = vec![
            "node".to_string(),
            "--orchestrator".to_string(),
            self.orchestrator.to_string(),
            "--position".to_string(),
            position.to_string(),
            "--secret-file".to_string(),
            self.secret_file.display().to_string(),
            "--heartbeat-ms".to_string(),
            self.heartbeat_ms.to_string(),
        ];
        args.extend(self.customer_args(position));
        if let Some(dir) = &self.observe {
            args.extend(["--observe".to_string(), dir.display().to_string()]);
        }
        if let Some(every) = self.stats_every {
            args.extend(["--stats-every".to_string(), every.as_secs_f64().to_string()]);
        }
        if let Some(headless) = self.headless_for {
            args.extend([
                "--headless-for".to_string(),
                headless.as_secs_f64().to_string(),
            ]);
        }
        args.push(self.spec.display().to_string());
        args
    }

    /// `--ingress ADDR` and `--edge-in DIR=IFACE` for server 0, `--egress ADDR` and
    /// `--edge-out DIR=IFACE` for the last server (both for a chain of one server), when they are
    /// known.
    fn customer_args(&self, position: u16) -> Vec<String> {
        let mut args = Vec::new();
        if position == 0 {
            args.extend(
                self.ingress
                    .iter()
                    .flat_map(|a| ["--ingress".into(), a.to_string()]),
            );
            args.extend(
                self.edge_in
                    .iter()
                    .flat_map(|e| ["--edge-in".into(), e.to_string()]),
            );
        }
        if position == self.last {
            args.extend(
                self.egress
                    .iter()
                    .flat_map(|a| ["--egress".into(), a.to_string()]),
            );
            args.extend(
                self.edge_out
                    .iter()
                    .flat_map(|e| ["--edge-out".into(), e.to_string()]),
            );
        }
        let edges = args.iter().any(|a| a.starts_with("--edge-"));
        if edges && self.edge_kind != EdgeKind::Xdp {
            args.extend(["--edge-kind".into(), self.edge_kind.name().into()]);
        }
        if edges && self.edge_queues > 1 {
            args.extend(["--edge-queues".into(), self.edge_queues.to_string()]);
        }
        if edges && self.edge_kind == EdgeKind::Xdp {
            let x = &self.xdp;
            if x.queue != 0 {
                args.extend(["--xdp-queue".into(), x.queue.to_string()]);
            }
            if x.zero_copy {
                args.push("--xdp-zero-copy".into());
            }
            if x.rx_frames != XdpConfig::DEFAULT_FRAMES {
                args.extend(["--xdp-frames".into(), x.rx_frames.to_string()]);
            }
        }
        args
    }
}

/// `template` with its placeholders filled in for a node at `position`: `{position}`,
/// `{orchestrator}`, `{spec}`, `{secret_file}`, `{heartbeat_ms}`, and `{customer}` (the options
/// this position needs for customer traffic: `--ingress ADDR` and `--edge-in DIR=IFACE` at
/// server 0, `--egress ADDR` and `--edge-out DIR=IFACE` at the last one, or nothing). Values are shell-quoted where they need it.
pub fn substitute(template: &str, position: u16, args: &NodeArgs) -> String {
    let customer = args
        .customer_args(position)
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    [
        ("{position}", position.to_string()),
        ("{orchestrator}", args.orchestrator.to_string()),
        ("{spec}", quote(&args.spec.display().to_string())),
        (
            "{secret_file}",
            quote(&args.secret_file.display().to_string()),
        ),
        ("{heartbeat_ms}", args.heartbeat_ms.to_string()),
        ("{customer}", customer),
    ]
    .iter()
    .fold(template.to_string(), |t, (from, to)| t.replace(from, to))
}

/// `text` as one shell word: as it is when that is safe, else in single quotes.
pub fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Starts nodes.
#[derive(Debug)]
pub struct Launcher {
    how: How,
    args: NodeArgs,
    children: Children,
    /// The token of the last launch at each position it launched a node at.
    tokens: Mutex<HashMap<u16, Nonce>>,
}

impl Launcher {
    pub fn new(how: How, args: NodeArgs) -> Launcher {
        Launcher {
            how,
            args,
            children: Children::default(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Why a node whose `Join` at `position` carries the launch token `launch` may not join
    /// there; `None` when it may: the launcher launched no node there, or this is the node of
    /// its last launch there.
    pub fn refusal(&self, position: u16, launch: Option<Nonce>) -> Option<String> {
        let last = *self
            .tokens
            .lock()
            .expect("no holder panics")
            .get(&position)?;
        match launch {
            Some(token) if token == last => None,
            Some(_) => Some(format!(
                "position {position} awaits the node the orchestrator launched there last; this \
                 one is of another launch (an earlier one, launched again since)"
            )),
            None => Some(format!(
                "position {position} awaits the node the orchestrator launched there last; this \
                 one has no launch token (started by hand? a launch command that starts the node \
                 elsewhere must pass {LAUNCH_TOKEN_ENV} on)"
            )),
        }
    }

    /// Start a node at `position`, with a launch token of its own ([`LAUNCH_TOKEN_ENV`]): from
    /// now on the position takes only its `Join`. Its process is kept in
    /// [`Launcher::children`].
    pub fn launch(&self, position: u16) -> io::Result<()> {
        self.children.reap();
        let mut command = match &self.how {
            How::Local { exe } => {
                let mut c = Command::new(exe);
                c.args(self.args.node_args(position));
                c
            }
            How::Command(template) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(substitute(template, position, &self.args));
                c
            }
            How::None => {
                tracing::warn!("launch a node at position {position} (launcher: none)");
                return Ok(());
            }
        };
        let token = unguessable();
        command.env(LAUNCH_TOKEN_ENV, token_text(&token));
        self.tokens
            .lock()
            .expect("no holder panics")
            .insert(position, token);
        // A node says nothing on stdout (which may carry our JSON); its log goes to stderr. In a
        // process group of its own: a template's `sh -c` forks the node (dash does), and a kill
        // of the shell alone would leave the node running.
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        tracing::info!("launched node {} at position {position}", child.id());
        self.children.add(position, child);
        Ok(())
    }

    pub fn children(&self) -> &Children {
        &self.children
    }

    /// Forget every launch token, as an orchestrator started afresh knows none: from now on
    /// each position takes any node's `Join` again, until the next launch there.
    pub fn forget_launches(&self) {
        self.tokens.lock().expect("no holder panics").clear();
    }
}

/// The processes a launcher started, by position. Dropping it kills and reaps every one still
/// running, so that no node outlives the run that started it.
#[derive(Debug, Default)]
pub struct Children(Mutex<Vec<Launched>>);

/// A process a launcher started.
#[derive(Debug)]
struct Launched {
    position: u16,
    child: Child,
    /// Killed by [`Children::kill`] (a node cut off, or a failure injected): its end is no news.
    killed: bool,
    /// Its end was told ([`Children::ended_unasked`]).
    told: bool,
}

/// A node's process that ended without being killed by [`Children::kill`]: a crash, a panic, a
/// hang it caught itself in (`--stall-ms`), or an error it stopped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub position: u16,
    pub pid: u32,
    pub status: std::process::ExitStatus,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} (pid {}) exited ({})",
            self.position, self.pid, self.status
        )
    }
}

impl Children {
    fn add(&self, position: u16, child: Child) {
        self.0.lock().expect("no holder panics").push(Launched {
            position,
            child,
            killed: false,
            told: false,
        });
    }

    /// Kill the running process at `position`, and what it started, with SIGKILL; its pid, or
    /// `None` when no process of ours runs there.
    pub fn kill(&self, position: u16) -> io::Result<Option<u32>> {
        let mut children = self.0.lock().expect("no holder panics");
        for l in children.iter_mut().rev() {
            // One killed already is down, though perhaps not yet reaped: not killed twice.
            if l.position == position && !l.killed && l.child.try_wait()?.is_none() {
                kill_group(&l.child)?;
                l.killed = true;
                return Ok(Some(l.child.id()));
            }
        }
        Ok(None)
    }

    /// Positions whose process exited, with how.
    pub fn exited(&self) -> io::Result<Vec<(u16, std::process::ExitStatus)>> {
        let mut children = self.0.lock().expect("no holder panics");
        let mut exited = Vec::new();
        for l in children.iter_mut() {
            if let Some(status) = l.child.try_wait()? {
                exited.push((l.position, status));
            }
        }
        Ok(exited)
    }

    /// The processes that ended since the last call without [`Children::kill`]ing: each is
    /// told once.
    pub fn ended_unasked(&self) -> Vec<Ended> {
        let mut children = self.0.lock().expect("no holder panics");
        let mut ended = Vec::new();
        for l in children.iter_mut().filter(|l| !l.killed && !l.told) {
            if let Ok(Some(status)) = l.child.try_wait() {
                l.told = true;
                ended.push(Ended {
                    position: l.position,
                    pid: l.child.id(),
                    status,
                });
            }
        }
        ended
    }

    /// Forget the processes that exited (reaped already by `try_wait`), but for those whose
    /// end is still to be told.
    fn reap(&self) {
        self.0
            .lock()
            .expect("no holder panics")
            .retain_mut(|l| matches!(l.child.try_wait(), Ok(None)) || !(l.killed || l.told));
    }

    /// Give the processes up to `grace` to exit by themselves, then kill the rest (with what
    /// they started); reap all.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut children = self.0.lock().expect("no holder panics");
        for Launched { child, .. } in children.iter_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill_group(child);
            }
            let _ = child.wait();
        }
        children.clear();
    }
}

/// SIGKILL to the process group `child` leads ([`Launcher::launch`]); it must not have been
/// reaped (its pid, and so the group's id, could be another's then).
fn kill_group(child: &Child) -> io::Result<()> {
    let group = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill takes no pointers; the group is ours while its leader is unreaped.
    if unsafe { libc::kill(-group, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn args() -> NodeArgs {
        NodeArgs {
            orchestrator: "127.0.0.1:7000".parse().unwrap(),
            spec: PathBuf::from("specs/ch-rec.toml"),
            secret_file: PathBuf::from("/etc/ftc/my secret"),
            heartbeat_ms: 5.0,
            ingress: Some("127.0.0.1:9000".parse().unwrap()),
            egress: Some("127.0.0.1:9001".parse().unwrap()),
            edge_in: vec!["out=eth1".parse().unwrap()],
            edge_out: vec!["in=eth2".parse().unwrap(), "out=eth3".parse().unwrap()],
            edge_kind: EdgeKind::Xdp,
            edge_queues: 1,
            xdp: XdpConfig::default(),
            last: 2,
            observe: None,
            stats_every: None,
            headless_for: None,
        }
    }

    #[test]
    fn templates_naming_no_placeholder_they_do_not_fill_are_refused() {
        let exe = || Ok(PathBuf::from("ftc"));
        let every = PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ");
        // Every placeholder fills in; a shell's own braces are its business.
        let fine = format!("ssh h${{H}}{{position}} env T=${{FTC_LAUNCH_TOKEN}} {{a,b}} {every}");
        assert!(matches!(How::parse(&fine, exe), Ok(How::Command(_))));
        assert!(!PLACEHOLDERS
            .iter()
            .any(|p| substitute(&every, 0, &args()).contains(&format!("{{{p}}}"))));
        let typo = "ftc node --position {position} --secret {secret}";
        match How::parse(typo, exe) {
            Err(e @ LaunchError::UnknownPlaceholder { .. }) => assert!(
                e.to_string()
                    .contains("{secret} is no placeholder (they are {position}, "),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn templates_get_every_placeholder_quoted_where_needed() {
        let t = "ssh host{position} ftc node --position {position} --orchestrator {orchestrator} \
                 --secret-file {secret_file} --heartbeat-ms {heartbeat_ms} {customer} {spec}";
        assert_eq!(
            substitute(t, 1, &args()),
            "ssh host1 ftc node --position 1 --orchestrator 127.0.0.1:7000 \
             --secret-file '/etc/ftc/my secret' --heartbeat-ms 5  specs/ch-rec.toml"
        );
        assert!(substitute(t, 0, &args())
            .contains(" --ingress 127.0.0.1:9000 --edge-in out=eth1 specs/"));
        assert!(substitute(t, 2, &args())
            .contains(" --egress 127.0.0.1:9001 --edge-out in=eth2 --edge-out out=eth3 specs/"));
        let mut packet = args();
        packet.edge_kind = EdgeKind::Packet;
        assert!(substitute(t, 0, &packet).contains(" --edge-in out=eth1 --edge-kind packet specs/"));
        assert!(!substitute(t, 1, &packet).contains("--edge-kind"));
        let mut queues = args();
        queues.edge_queues = 4;
        assert!(substitute(t, 2, &queues).contains(" --edge-out out=eth3 --edge-queues 4 specs/"));
        assert!(!substitute(t, 1, &queues).contains("--edge-queues"));
        let mut xdp = args();
        xdp.xdp = XdpConfig {
            queue: 2,
            zero_copy: true,
            rx_frames: 2048,
            tx_frames: 2048,
        };
        assert!(substitute(t, 0, &xdp).contains(
            " --edge-in out=eth1 --xdp-queue 2 --xdp-zero-copy --xdp-frames 2048 specs/"
        ));
        assert!(!substitute(t, 1, &xdp).contains("--xdp"));
        xdp.edge_kind = EdgeKind::Packet;
        assert!(!substitute(t, 0, &xdp).contains("--xdp"));
        let mut odd = args();
        odd.spec = PathBuf::from("it's.toml");
        assert_eq!(
            substitute("{spec}{nothing}", 0, &odd),
            r"'it'\''s.toml'{nothing}"
        );
    }

    #[test]
    fn the_local_launcher_passes_customer_addresses_to_the_ends_only() {
        let a = args();
        let one = a.node_args(1);
        assert_eq!(one.first().map(String::as_str), Some("node"));
        assert_eq!(one.last().map(String::as_str), Some("specs/ch-rec.toml"));
        assert!(!one
            .iter()
            .any(|x| x == "--ingress" || x == "--egress" || x.starts_with("--edge")));
        assert!(a.node_args(0).iter().any(|x| x == "--ingress"));
        assert!(a.node_args(2).iter().any(|x| x == "--egress"));
        assert!(!one.iter().any(|x| x == "--stats-every"));
        let stats = NodeArgs {
            stats_every: Some(Duration::from_millis(2500)),
            ..args()
        };
        let one = stats.node_args(1);
        assert!(
            one.windows(2).any(|w| w == ["--stats-every", "2.5"]),
            "{one:?}"
        );
        assert!(!one.iter().any(|x| x == "--headless-for"));
        let orphans_exit = NodeArgs {
            headless_for: Some(Duration::ZERO),
            ..args()
        };
        let one = orphans_exit.node_args(1);
        assert!(
            one.windows(2).any(|w| w == ["--headless-for", "0"]),
            "{one:?}"
        );
    }

    #[test]
    fn launch_tokens_read_back_as_written() {
        let token: Nonce = std::array::from_fn(|i| (i * 17) as u8);
        let text = token_text(&token);
        assert_eq!(text, "00112233445566778899aabbccddeeff");
        assert_eq!(parse_token(&text), Some(token));
        assert_eq!(parse_token(&text.to_uppercase()), Some(token));
        for bad in [
            "",
            &text[1..],
            &format!("{text}0"),
            &text.replace('f', "g"),
            "é",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn children_are_killed_and_reaped() {
        let launcher = Launcher::new(How::Command("sleep 30".into()), args());
        launcher.launch(1).unwrap();
        assert!(launcher.children().kill(1).unwrap().is_some());
        // Right after its SIGKILL, the process may not be reaped yet: it is not killed twice
        // (a second failure that would need a second recovery).
        assert!(launcher.children().kill(1).unwrap().is_none());
        assert!(launcher.children().kill(0).unwrap().is_none());
        launcher.children().shutdown(Duration::from_secs(1));
        assert!(launcher.children().exited().unwrap().is_empty());
    }

    /// The processes whose parent is `pid` (from /proc), with their state letters.
    fn children_of(pid: u32) -> Vec<(u32, char)> {
        let stats = std::fs::read_dir("/proc").unwrap().filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.ok()?.path().join("stat")).ok()?;
            // "PID (COMM) STATE PPID …": the command may hold anything but the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            let child = head.split_whitespace().next()?.parse().ok()?;
            (ppid == pid).then_some((child, state))
        });
        stats.collect()
    }

    /// Whether the process `pid` is gone (or dead, a zombie waiting for its reaper).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            }),
            Err(_) => true,
        }
    }

    /// A template's shell forks the command it runs (dash does for one that is not its last):
    /// a kill takes the forked command too.
    #[test]
    fn a_kill_takes_what_the_template_s_shell_started() {
        let launcher = Launcher::new(How::Command("sleep 30; true".into()), args());
        launcher.launch(1).unwrap();
        let shell = launcher.children().0.lock().unwrap()[0].child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let forked = loop {
            if let Some(&(pid, _)) = children_of(shell).first() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the shell forked nothing");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(launcher.children().kill(1).unwrap(), Some(shell));
        while !dead(forked) {
            assert!(
                Instant::now() < deadline,
                "pid {forked} outlived its shell's kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        launcher.children().shutdown(Duration::ZERO);
    }

    /// A process that ends by itself is told once, with how; one killed is no news.
    #[test]
    fn processes_that_end_unasked_are_told_once() {
        let launcher = Launcher::new(How::Command("exit 3".into()), args());
        launcher.launch(2).unwrap();
        let sleeper = Launcher::new(How::Command("sleep 30".into()), args());
        sleeper.launch(1).unwrap();
        let pid = sleeper.children().kill(1).unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ended = loop {
            let ended = launcher.children().ended_unasked();
            if !ended.is_empty() || Instant::now() > deadline {
                break ended;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!((ended[0].position, ended[0].status.code()), (2, Some(3)));
        assert!(ended[0].to_string().ends_with("exited (exit status: 3)"));
        // Reaped at the next launch, and not told again.
        launcher.launch(0).unwrap();
        let again = launcher.children().ended_unasked();
        assert!(again.iter().all(|e| e.pid != ended[0].pid), "{again:?}");
        while sleeper.children().exited().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "pid {pid} outlived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
        let exited = sleeper.children().exited().unwrap();
        assert_eq!(exited[0].1.signal(), Some(libc::SIGKILL));
        assert!(sleeper.children().ended_unasked().is_empty());
    }
}
