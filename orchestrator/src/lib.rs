//! ftc-orchestrator: the orchestrator's sans-IO core (DESIGN.md §8). [`control`] is the
//! authenticated byte form of the control messages; [`detector`] declares servers failed from
//! missed heartbeats; [`plan`] decides who fetches which group's state from whom after failures;
//! [`coordinator`] is the recovery state machine that ties them together. Nothing here reads a
//! clock, draws randomness or does I/O (except [`control::read_message`] and
//! [`control::write_message`], over any `Read`/`Write`): time comes in as `now`, in nanoseconds.

pub mod control;
pub mod coordinator;
pub mod detector;
pub mod plan;
