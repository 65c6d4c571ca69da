//! `ftc check`: validate a chain spec and show how its servers replicate each other.

use std::path::Path;
use std::process::ExitCode;

use ftc_chain::spec::ChainSpec;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let spec = match ChainSpec::load(path) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("ftc: {e}");
            // An unreadable file is trouble; an invalid spec, the check's verdict.
            return Ok(if e.io_error_kind().is_some() {
                ExitCode::from(crate::TROUBLE)
            } else {
                ExitCode::FAILURE
            });
        }
    };
    // Valid, but FTC's frames cannot carry it: say so here rather than at the first packet
    // (and before the ring, which a failing check does not print).
    let server = ftc_node::ServerConfig::default();
    if let Err(e) = server.check_logs_fit(&spec) {
        eprintln!("ftc: in FTC mode: {e} (NF and FTMB runs take it)");
        return Ok(ExitCode::FAILURE);
    }
    out!("{}", describe(&spec));
    // In memory it runs; `ftc node` (the lab, `ftc chaos --procs`) would refuse it at start.
    if let Err(e) = server.check_logs_fit_beside_packets(&spec) {
        eprintln!(
            "ftc: warning: in FTC mode over links (`ftc node`, `ftc lab`, `ftc chaos --procs`): \
             {e}; in memory (`ftc run`, `ftc sim`, `ftc chaos`) it runs"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A readable summary of a valid spec: middleboxes, ring, groups.
pub fn describe(spec: &ChainSpec) -> String {
    use std::fmt::Write;
    let ring = spec.ring();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chain {:?}: {} middlebox{}, f = {}, {} servers, {} partitions",
        spec.chain.name,
        ring.middleboxes(),
        if ring.middleboxes() == 1 { "" } else { "es" },
        ring.f(),
        ring.servers(),
        spec.chain.partitions
    );
    for server in ring.server_ids() {
        let role = match ring.middlebox_at(server) {
            Some(mb) => {
                let m = &spec.middlebox[usize::from(mb.0)];
                let plural = if m.threads == 1 { "" } else { "s" };
                format!("{} ({}, {} thread{plural})", mb, m.kind.name(), m.threads)
            }
            None => "replica only".to_string(),
        };
        let mut extra = Vec::new();
        if server == ring.forwarder() {
            extra.push("forwarder");
        }
        if server == ring.buffer() {
            extra.push("buffer");
        }
        let replicas: Vec<String> = ring.replicated_by(server).map(|m| m.to_string()).collect();
        let _ = writeln!(
            out,
            "  {server}: {role}{}; replicates [{}]",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" + {}", extra.join(" + "))
            },
            replicas.join(", ")
        );
    }
    for mb in ring.mb_indices() {
        let group: Vec<String> = ring.group(mb).map(|s| s.0.to_string()).collect();
        let _ = writeln!(
            out,
            "  group {mb}: servers [{}]{}",
            group.join(" → "),
            if ring.wraps(mb) {
                " (wraps: the buffer waits for its commit vector)"
            } else {
                ""
            }
        );
    }
    out
}
