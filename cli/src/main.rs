//! `ftc`: the command-line entry point: check chain specs (`ftc check`), run the demo
//! (`ftc demo`), run a chain in this process and measure it (`ftc run`), kill its servers and
//! check what the recovery kept (`ftc chaos`), run the simulation (`ftc sim`), run a chain's
//! orchestrator and nodes as processes (`ftc orchestrator`, `ftc node`), in network namespaces
//! too (`ftc lab`), and benchmark FTC against its baselines (`ftc bench`).

#[macro_use]
mod out;

mod bench;
mod chaos;
mod check;
mod customer;
mod demo;
mod lab;
mod log;
mod mode;
mod node;
mod orchestrator;
mod run;
mod signal;
mod sim;
mod watchdog;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ftc",
    version,
    about = "Fault-tolerant service function chains"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the thesis's experiments with FTC, NF, FTMB and FTMB+snapshot side by side and
    /// report medians, ratios, tables and plots.
    Bench(bench::BenchArgs),
    /// Run a chain with traffic, kill servers, let the orchestrator recover them, check that
    /// nothing released was lost.
    Chaos(chaos::ChaosArgs),
    /// Validate a chain spec and print its ring: servers, replication groups, wrapping groups.
    Check {
        /// The chain spec (TOML).
        spec: PathBuf,
    },
    /// Run a chain in this process with generated traffic and print a report.
    Demo(demo::DemoArgs),
    /// Network-namespace lab: bring a chain's servers, a client and a server host up in
    /// namespaces, run the chain there, take it all down.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Run one server of a chain as this process, under an orchestrator.
    Node(node::NodeArgs),
    /// Run a chain's orchestrator: nodes join over TCP, failures are recovered.
    Orchestrator(orchestrator::OrchestratorArgs),
    /// Run a chain in this process over the in-memory transport and measure it.
    Run(run::RunArgs),
    /// Run the deterministic simulation of a chain over many seeds and check its invariants.
    Sim(sim::SimArgs),
}

/// mimalloc: frames' buffers are allocated by one server thread and freed by another, which
/// glibc's allocator serializes on its arenas' locks; mimalloc frees them lock-free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit status of a command that could not do what it was asked (bad input, a host that
/// lacks what it needs, a failed I/O): 2, as for the usage errors clap reports, apart from 1, a
/// finished command's negative verdict (a violation found, an invalid spec checked).
const TROUBLE: u8 = 2;

impl Command {
    /// Whether the command's report is one JSON object on stdout.
    fn json(&self) -> bool {
        match self {
            Command::Bench(args) => args.json,
            Command::Chaos(args) => args.json,
            Command::Lab(lab::LabCommand::Demo(args)) => args.json,
            Command::Orchestrator(args) => args.json,
            Command::Run(args) => args.json,
            Command::Sim(args) => args.json,
            _ => false,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Chaos(args) => chaos::run(&args),
        Command::Check { spec } => check::run(&spec),
        Command::Demo(args) => demo::run(&args),
        Command::Lab(command) => lab::run(&command),
        Command::Node(args) => node::run(&args),
        Command::Orchestrator(args) => orchestrator::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(_) if out::failed() => ExitCode::from(TROUBLE),
        Ok(code) => code,
        Err(e) => {
            let text = describe(&e);
            eprintln!("ftc: {text}");
            // A script reading the report gets an object that says why there is none.
            if json && !out::wrote() {
                outln!("{}", serde_json::json!({ "error": text }));
            }
            ExitCode::from(TROUBLE)
        }
    }
}

/// An error and its causes, `: `-separated, each cause left out where the message before it
/// already ends with it (errors that show their source in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}
