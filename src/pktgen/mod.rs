//! Traffic for vrouter: packet builders, and the in-memory pipeline
//! benchmark that `vrpktgen pipeline` and `benches/pipeline.rs` share, and
//! the API route-load benchmark (`vrpktgen route-load`).
//! (The AF_XDP generator and sink come with the benchmark suite.)

pub mod build;
pub mod demo;
pub mod routeload;
pub mod scenario;
