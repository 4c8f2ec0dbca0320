//! The control side's language and its server.
//!
//! `schema` holds the serde types for every table object: the tables file,
//! the API and the agent all speak them, so there is one schema, not three.
//! `proto` is the API's envelope, `server` serves it from vrouterd, and
//! `client` is what vrctl, the agent and the tests talk through.

pub mod client;
pub mod proto;
pub mod schema;
pub mod server;
