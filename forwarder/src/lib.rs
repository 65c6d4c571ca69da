//! ftc-forwarder: the ingress core of a chain (DESIGN §7, thesis §4.4.1), sans-IO: it sanitizes
//! and classifies customer frames, attaches pending piggyback content to them, and decides when a
//! propagating frame must carry that content instead.
//!
//! The forwarder runs on server 0. What the buffer (server n−1) sends back over the ring-closing
//! link (logs of groups that wrap around, and commit vectors) waits in one [`Outbox`] here until a
//! frame entering the chain carries it onward. The forwarder builds no NSH frame and touches no
//! socket: the driver (`node/`) does, and asks this core what to write.
//!
//! Like every core of ftc it does no I/O, reads no clock (`now`, in nanoseconds from an arbitrary
//! origin, is an argument) and draws no randomness, so a seeded simulation can drive it.
//!
//! # Methods (quinn-proto style)
//!
//! - getters: [`Forwarder::stats`], [`Forwarder::config`], [`Forwarder::has_pending`];
//! - inputs: [`Forwarder::handle_ingress`] (a frame from outside), [`Forwarder::handle_return`]
//!   (a return frame's message from the buffer);
//! - outputs: [`Forwarder::attach`] (the trailer of an accepted customer frame),
//!   [`Forwarder::poll_propagate`] (a propagating frame's message), [`Forwarder::poll_timeout`].
//!
//! # Driver loop
//!
//! 1. For each customer frame of a batch: [`Forwarder::handle_ingress`]; if accepted, wrap it in
//!    an NSH data frame and [`Forwarder::attach`] its trailer.
//! 2. For each return frame: [`Forwarder::handle_return`]. On [`Backpressure`] the message was
//!    absorbed all the same. A driver that runs step 3 at the end of every batch, before it
//!    reads the next, keeps pending within what one batch of return frames brings and may read
//!    on (`ftc-node`'s server does); one that does not, stops reading the ring-closing link
//!    until step 3 has drained pending.
//! 3. Call [`Forwarder::poll_propagate`] until it returns `Ok(None)`, sending each message in a
//!    propagating frame (NSH O bit set, no inner frame).
//! 4. Arm the timer at [`Forwarder::poll_timeout`]; when it fires, go to step 3.
//!
//! [`Outbox`]: ftc_chain::outbox::Outbox

mod forwarder;
mod ingress;

pub use forwarder::{Backpressure, Forwarder, ForwarderConfig, ForwarderStats};
pub use ingress::{classify, Ingress, Port, Rejected, ETHERNET_HEADER_LEN, MIN_CUSTOMER_FRAME};
