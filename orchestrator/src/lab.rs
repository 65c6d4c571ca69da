//! The network-namespace lab (`ftc lab`): a chain's servers, a client and a server host, each in
//! its own network namespace, wired as a real deployment would be. [`topology`] is the topology and
//! the iproute2 operations that build it (pure); [`ops`] runs such operations; [`apply`] brings a
//! lab up and down and records it; [`deploy`] runs a chain's orchestrator and nodes in a lab,
//! [`procs`] keeps track of their processes; [`demo`] downloads a file through a chain in its lab
//! while a server is killed (or, with [`cut`], a link between servers is down), and [`probe`]
//! times round trips through it meanwhile.

pub mod apply;
pub mod cut;
pub mod demo;
pub mod deploy;
pub mod ops;
pub mod probe;
pub mod procs;
pub mod topology;
