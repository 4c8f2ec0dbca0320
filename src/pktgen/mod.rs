//! Traffic for vrouter: packet builders, and the in-memory pipeline
//! benchmark that `vrpktgen pipeline` and `benches/pipeline.rs` share, and
//! the API route-load benchmark (`vrpktgen route-load`).
//! `traffic` builds and reads back what `vrpktgen send` and `sink` (in
//! `port`, on AF_XDP) put on the wire; `run` drives both at once.

pub mod build;
pub mod demo;
pub mod port;
pub mod routeload;
pub mod run;
pub mod scenario;
pub mod traffic;
