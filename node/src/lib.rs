//! ftc-node: one server's runtime. [`server::Server`] is what a server does with frames (a
//! state machine over the protocol cores, no I/O); the drivers run it.

pub mod server;

pub use server::{Frame, Mode, Output, Packet, Server, ServerConfig, ServerError, ServerStats};
