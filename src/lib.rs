pub mod pipeline;
pub mod stats;
pub mod tables;
pub mod wire;
