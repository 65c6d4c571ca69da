//! ftc-orchestrator: the orchestrator's sans-IO core (DESIGN.md §8). [`control`] is the
//! authenticated byte form of the control messages; [`detector`] declares servers failed from
//! missed heartbeats; [`plan`] decides who fetches which group's state from whom after failures;
//! [`coordinator`] is the recovery state machine that ties them together; these read no clock,
//! draw no randomness and do no I/O (except [`control::read_message`] and
//! [`control::write_message`], over any `Read`/`Write`): time comes in as `now`, in nanoseconds.
//! Drivers: [`transfer`] moves group state over TCP, and [`replacement`] is what a replacement
//! does with it; [`admission`] bounds the connections of the transfer listeners and of the
//! orchestrator's that have not proved themselves yet; [`embedded`] runs a chain on threads with
//! the orchestrator and failure injection (`ftc chaos`, `ftc demo`); [`process`] runs every
//! server as its own process (`ftc node`, `ftc orchestrator`, `ftc chaos --procs`); [`lab`] runs
//! them in network namespaces (`ftc lab`); [`checks`] are the checks both chaos runs make.

pub mod admission;
pub mod checks;
pub mod control;
pub mod coordinator;
pub mod detector;
pub mod embedded;
pub mod lab;
pub mod plan;
pub mod process;
pub mod replacement;
pub mod throttle;
pub mod transfer;
