//! ftc-node: one server's runtime. [`server::Server`] is what a server does with frames (a
//! state machine over the protocol cores, no I/O); [`runtime`] runs a whole chain in one process
//! with a thread per server over an in-memory transport, and [`ftmb`] the FTMB baselines on it.

mod bursts;
pub mod commit_check;
pub mod ftmb;
pub mod heads;
mod hold;
pub mod lanes;
pub mod links;
pub mod netns;
pub mod nsh;
pub mod packet;
pub mod prefetch;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod traffic;
pub mod udp;
pub mod xdp;

pub use heads::Heads;
pub use server::{
    Frame, Loss, Mode, Output, Packet, Server, ServerConfig, ServerError, ServerStats,
};
