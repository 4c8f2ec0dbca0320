//! vrouter: a userspace per-host virtual router.
//!
//! The forwarding core (`wire`, `tables`, `pipeline`, `stats`) is pure and
//! does no I/O; `io` is the thin AF_XDP shell around it and, with `memory`
//! (huge-page backed tables), the only module allowed `unsafe`; `daemon` is vrouterd; `api` the shared schema; `pktgen`
//! the traffic builders and benchmarks. See `docs/architecture.md`.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod flow;
pub mod io;
mod memory;
pub mod pipeline;
pub mod pktgen;
pub mod stats;
pub mod tables;
pub mod wire;
