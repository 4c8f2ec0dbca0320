//! Traffic for vrouter: packet builders, and the in-memory pipeline
//! benchmark that `vrpktgen pipeline` and `benches/pipeline.rs` share.
//! (The AF_XDP generator and sink come with the benchmark suite.)

pub mod build;
pub mod demo;
pub mod scenario;
