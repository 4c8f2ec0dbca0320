pub mod tables;
pub mod wire;
