//! The control side's shared language: serde types for every table
//! object. The tables file reads them today; the API (next issue) sends and
//! returns the same types, so there is one schema, not two.

pub mod schema;
