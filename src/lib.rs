pub mod api;
pub mod daemon;
pub mod io;
pub mod pipeline;
pub mod pktgen;
pub mod stats;
pub mod tables;
pub mod wire;
