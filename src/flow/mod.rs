//! Flows: the table of connections the data path keeps, and the policy it
//! decides new ones by.
//!
//! - `key`: what names a flow;
//! - `table`: the shared, lock-free-to-read table of flow pairs, with
//!   limits and ageing driven by a clock the caller passes in;
//! - `policy`: per-VRF ordered rules, evaluated on a flow's first packet;
//! - `fragment`: the ports of fragmented datagrams, for their later fragments;
//! - `stale`: the flows a change of vifs leaves stale.
//!
//! Like the pipeline, nothing here does I/O or reads a clock.

pub mod fragment;
pub mod key;
pub mod policy;
pub mod stale;
pub mod table;

pub use fragment::{FirstPorts, FragmentCounts, FragmentInfo, FragmentKey, FragmentTable};
pub use key::FlowKey;
pub use policy::{CompiledPolicy, Endpoint, Policy, PolicyAction, PortRange, Rule};
pub use stale::{stale_ends, StaleEnd};
pub use table::{
    CreateError, DirSpec, FlowAction, FlowConfig, FlowInfo, FlowTable, Forwarding, Hit, Nat, PolicyGenerations, Probe,
    ReverseAhead, RouteMemo, TcpState, Translation, MAX_TIMEOUT_MS, MAX_VIFS, MAX_VRFS,
};
