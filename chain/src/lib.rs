//! ftc-chain: what a chain is and how its servers talk: the chain spec (TOML), ring math, the NSH
//! wire format with the piggyback trailer, the `Middlebox` trait and the built-in middleboxes.
//!
//! Like every core crate of ftc it does no I/O, reads no clock and draws no randomness: time comes
//! in as an argument.

pub mod logqueue;
pub mod middlebox;
pub mod middleboxes;
pub mod outbox;
pub mod ring;
pub mod spec;
pub mod wire;
