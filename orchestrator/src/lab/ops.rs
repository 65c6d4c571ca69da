//! The operations a lab is built and torn down with: iproute2, sysctl and ethtool commands run
//! through `std::process::Command`, each failure naming the command and what it said.

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus};

/// One command that changes the host's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ip [-n NETNS] ARGS…`
    Ip {
        netns: Option<String>,
        args: Vec<String>,
    },
    /// `ip netns exec NETNS sysctl -qw KEY=VALUE`
    Sysctl {
        netns: String,
        key: String,
        value: String,
    },
    /// `ip netns exec NETNS ethtool -K IFACE tx off tso off gso off gro on`: the kernel computes
    /// every checksum and segments nothing late; GRO gives the veth a NAPI queue, which frames
    /// XDP redirects to its peer need. Needs ethtool, which a host may lack.
    Offloads { netns: String, iface: String },
}

impl Op {
    pub fn ip<'a>(netns: Option<&str>, args: impl IntoIterator<Item = &'a str>) -> Op {
        Op::Ip {
            netns: netns.map(str::to_string),
            args: args.into_iter().map(str::to_string).collect(),
        }
    }

    pub fn sysctl(netns: &str, key: &str, value: impl fmt::Display) -> Op {
        Op::Sysctl {
            netns: netns.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// The command line, program first.
    pub fn argv(&self) -> Vec<String> {
        let exec = |netns: &str| ["ip", "netns", "exec", netns].map(str::to_string).to_vec();
        match self {
            Op::Ip { netns, args } => {
                let mut argv = vec!["ip".to_string()];
                if let Some(ns) = netns {
                    argv.extend(["-n".to_string(), ns.clone()]);
                }
                argv.extend(args.iter().cloned());
                argv
            }
            Op::Sysctl { netns, key, value } => {
                let mut argv = exec(netns);
                argv.extend([
                    "sysctl".to_string(),
                    "-qw".to_string(),
                    format!("{key}={value}"),
                ]);
                argv
            }
            Op::Offloads { netns, iface } => {
                let mut argv = exec(netns);
                argv.extend(
                    [
                        "ethtool", "-K", iface, "tx", "off", "tso", "off", "gso", "off", "gro",
                        "on",
                    ]
                    .map(str::to_string),
                );
                argv
            }
        }
    }

    /// Run it; its standard output.
    pub fn run(&self) -> Result<String, OpError> {
        run(&self.argv())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("`{command}`: {program} is not installed (not found on PATH)")]
    Missing { command: String, program: String },
    #[error("`{command}` cannot start: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl OpError {
    /// What the command said on its standard error, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            OpError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Run `argv` (program first) to its end; its standard output when it succeeded.
pub fn run(argv: &[String]) -> Result<String, OpError> {
    let command = argv.join(" ");
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => OpError::Missing {
                command: command.clone(),
                program: argv[0].clone(),
            },
            _ => OpError::Spawn {
                command: command.clone(),
                source,
            },
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(OpError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether `program` is an executable file in some directory of `PATH`.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        Path::new(&dir)
            .join(program)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
