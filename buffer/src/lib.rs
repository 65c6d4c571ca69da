//! ftc-buffer: the egress core on the last server of a chain (DESIGN.md §7, thesis §4.4.1). It
//! holds each packet until the commit vectors of the wrapping replication groups show that its
//! logs are replicated f+1 times (output commit), keeps per-flow order, and gathers the wrapped
//! logs and commit vectors that go back to the forwarder over the ring-closing link.
//!
//! Sans-IO like every core of ftc: no I/O, no clock (`now` in nanoseconds is an argument), no
//! randomness, no threads. The driver owns the packets; the buffer holds opaque handles `P`.
//! See [`Buffer`] for the calls and their order.

mod buffer;
mod config;
mod wait;

pub use buffer::{Buffer, Packet, Refused, Released};
pub use config::{BufferConfig, BufferStats, Weakened};

#[cfg(test)]
mod check;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
