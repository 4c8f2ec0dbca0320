//! The API server: one thread per client over a Unix stream socket, all
//! sharing one [`Control`].
//!
//! A client's thread holds the tables lock only while it applies a batch
//! or reads one page; it reads requests and writes answers without it. A
//! client that stalls half-way through a message, or stops reading its
//! answers, blocks nobody but itself, and the data path never takes this
//! lock at all.

use super::proto::{self, code, ApiError, RawRequest};
use super::schema::{Defaults, KeyDef, NextHopDef, ObjectDef, OpDef, RouteDef, VifDef, VrfDef};
use crate::pipeline::PipelineConfig;
use crate::stats::{DropReason, SocketCounters, StatsBoard};
use crate::tables::{NextHop, NhId, Object, Op, Prefix, TableError, TablesWriter, VifIndex};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The tables writer and what the control side keeps beside it.
pub struct ControlState {
    /// The single writer.
    pub writer: TablesWriter,
    /// Tunnel next hops whose MAC vrouterd takes from the neighbour table.
    pub resolved: BTreeSet<NhId>,
}

/// Facts about the running daemon, for `info` and `hello`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Changes every time vrouterd starts: a client that sees it change
    /// knows the tables were lost.
    pub boot_id: String,
    /// The node's underlay address.
    pub underlay: std::net::Ipv4Addr,
    /// The fabric interface.
    pub fabric: String,
    /// Worker cores.
    pub cores: Vec<usize>,
}

impl NodeInfo {
    /// A fresh boot id from the clock and the process id.
    pub fn new_boot_id() -> String {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{:x}-{:x}", t, std::process::id())
    }
}

/// What the kernel lost on a vif's port before vrouterd saw it
/// (`SocketCounters`), once read; null for a vif without an open port.
fn socket_counters_json(port: Option<&PortStatus>) -> Value {
    let Some(k) = port.and_then(|p| p.sockets) else { return Value::Null };
    json!({
        "rx_dropped": k.rx_dropped,
        "rx_ring_full": k.rx_ring_full,
        "fill_ring_empty": k.fill_ring_empty,
        "tx_invalid": k.tx_invalid,
    })
}

/// A vif's port as the daemon last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStatus {
    /// "up", "link down", "no carrier", or "down: " and why it did not
    /// open.
    pub state: String,
    /// The kernel's counters of its sockets, once read (an open port).
    pub sockets: Option<SocketCounters>,
    /// The longest frame it receives (an open port): a UMEM frame's 1,792
    /// bytes, or a jumbo frame's 9,984 where its sockets take chains.
    pub longest_frame: Option<u32>,
}

/// Everything the API reads and changes.
pub struct Control {
    state: Mutex<ControlState>,
    defaults: Defaults,
    stats: Arc<StatsBoard>,
    node: NodeInfo,
    started: Instant,
    /// Each vif's port, where it has one (open or failing to open).
    ports: Mutex<BTreeMap<VifIndex, PortStatus>>,
    /// Set when a batch added tunnels to resolve, so the daemon does not
    /// wait for its next periodic pass.
    resolve_now: AtomicBool,
    max_message: usize,
    /// The flow table the workers share, and the origin of their clock.
    flows: Option<(Arc<crate::flow::FlowTable>, Instant)>,
    /// Where the workers copy the frames of vifs being captured.
    tap: Option<Arc<crate::capture::Tap>>,
    /// The workers' pipeline settings, which `trace` runs with: the same
    /// router MAC and ECMP hash seed, so it picks the members they pick.
    pipeline: PipelineConfig,
}

impl Control {
    /// A control over `writer`.
    pub fn new(writer: TablesWriter, defaults: Defaults, stats: Arc<StatsBoard>, node: NodeInfo) -> Control {
        Control {
            state: Mutex::new(ControlState { writer, resolved: BTreeSet::new() }),
            defaults,
            stats,
            node,
            started: Instant::now(),
            ports: Mutex::new(BTreeMap::new()),
            resolve_now: AtomicBool::new(false),
            max_message: proto::MAX_MESSAGE,
            flows: None,
            tap: None,
            pipeline: PipelineConfig { router_mac: defaults.router_mac, ..PipelineConfig::default() },
        }
    }

    /// Traces with the workers' pipeline settings (by default, those with
    /// the defaults' router MAC).
    pub fn with_pipeline(mut self, config: PipelineConfig) -> Control {
        self.pipeline = config;
        self
    }

    /// Serves captures (`capture.*`) from `tap`, which the workers fill.
    pub fn with_tap(mut self, tap: Arc<crate::capture::Tap>) -> Control {
        self.tap = Some(tap);
        self
    }

    /// Serves the flow table (`flows`), whose times count from `epoch`.
    pub fn with_flows(mut self, table: Arc<crate::flow::FlowTable>, epoch: Instant) -> Control {
        self.flows = Some((table, epoch));
        self
    }

    /// Sets the message size limit.
    pub fn with_max_message(mut self, max: usize) -> Control {
        self.max_message = max;
        self
    }

    /// The writer and its companions, locked.
    pub fn lock(&self) -> MutexGuard<'_, ControlState> {
        // Nothing panics while holding the lock on purpose; if something
        // did, the writer's state is still whole (batches roll back).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flow table it serves, if any.
    pub fn flows(&self) -> Option<&crate::flow::FlowTable> {
        self.flows.as_ref().map(|(t, _)| &**t)
    }

    /// The live counters.
    pub fn stats(&self) -> &Arc<StatsBoard> {
        &self.stats
    }

    /// The node facts.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The state `set_port_state` last gave vif `vif`'s port.
    pub fn port_state(&self, vif: VifIndex) -> Option<String> {
        self.port(vif).map(|p| p.state)
    }

    /// What the daemon last said of vif `vif`'s port.
    pub fn port(&self, vif: VifIndex) -> Option<PortStatus> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).get(&vif).cloned()
    }

    /// Records a vif's port state, for `vif get` and `vif list`; `None`:
    /// the vif has no port (closed), its socket counters gone with it.
    pub fn set_port_state(&self, vif: VifIndex, state: Option<String>) {
        let mut p = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(state) => p.entry(vif).or_default().state = state,
            None => _ = p.remove(&vif),
        };
    }

    /// Records the kernel's counters of an open port's sockets, and the
    /// longest frame they receive.
    pub fn set_port_sockets(&self, vif: VifIndex, counters: SocketCounters, longest_frame: u32) {
        if let Some(p) = self.ports.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&vif) {
            p.sockets = Some(counters);
            p.longest_frame = Some(longest_frame);
        }
    }

    /// True once after a batch added tunnels whose MAC is to be resolved.
    pub fn take_resolve_request(&self) -> bool {
        self.resolve_now.swap(false, Ordering::Relaxed)
    }

    /// Handles one request line; returns the answer line (no newline).
    pub fn handle(&self, session: &mut Session, line: &[u8]) -> Vec<u8> {
        let req: RawRequest = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => return answer(None, Err(ApiError::new(code::PARSE_ERROR, format!("not a request: {e}")))),
        };
        let result = self.dispatch(session, &req);
        answer(req.id, result)
    }

    fn dispatch(&self, session: &mut Session, req: &RawRequest) -> Result<Value, ApiError> {
        let params = req.params.map_or("{}", |p| p.get());
        if req.method == "hello" {
            let p: HelloParams = parse(params)?;
            if !(proto::MIN_VERSION..=proto::VERSION).contains(&p.version) {
                return Err(ApiError::new(
                    code::VERSION_MISMATCH,
                    format!(
                        "this vrouterd serves API versions {}..={}, not {}",
                        proto::MIN_VERSION,
                        proto::VERSION,
                        p.version
                    ),
                )
                .field("version"));
            }
            session.version = Some(p.version);
            tracing::debug!(client = p.client.as_deref().unwrap_or("-"), version = p.version, "API client said hello");
            return Ok(json!({
                "version": p.version,
                "server": format!("vrouterd {}", env!("CARGO_PKG_VERSION")),
                "boot_id": self.node.boot_id,
                "max_message": self.max_message,
            }));
        }
        if session.version.is_none() {
            return Err(ApiError::new(code::HELLO_FIRST, "send hello with the API version first"));
        }
        match req.method.as_str() {
            "info" => Ok(self.info()),
            "add" => self.apply_ops(&[OpDef::Add(parse(&without_status(params))?)], false),
            "update" => self.apply_ops(&[OpDef::Update(parse(&without_status(params))?)], false),
            "delete" => self.apply_ops(&[OpDef::Delete(parse(params)?)], false),
            "batch" => {
                let p: BatchParams = parse(&without_status(params))?;
                self.apply_ops(&p.ops, true)
            }
            "get" => self.get(&parse(params)?),
            "dump" => self.dump(&parse(params)?),
            "lookup" => self.lookup(&parse(params)?),
            "stats" => Ok(self.stats_json()),
            "flow.list" => self.flow_list(&parse(params)?),
            "flow.get" => {
                let p: FlowSlot = parse(params)?;
                let (table, now) = self.flow_table()?;
                let tables = self.lock().writer.tables().clone();
                table
                    .get(p.index, now)
                    .and_then(|f| crate::pipeline::judgement(&tables, table, &f).map(|judged| flow_json(&f, judged)))
                    .ok_or_else(|| {
                        ApiError::new(code::NOT_FOUND, format!("flow {} does not exist", p.index)).field("index")
                    })
            }
            "flow.delete" => {
                let p: FlowSlot = parse(params)?;
                let (table, _) = self.flow_table()?;
                if !table.remove(p.index) {
                    return Err(ApiError::new(code::NOT_FOUND, format!("flow {} does not exist", p.index)).field("index"));
                }
                Ok(json!({ "deleted": 1 }))
            }
            "flow.flush" => {
                let (table, _) = self.flow_table()?;
                Ok(json!({ "deleted": table.flush() }))
            }
            "flow.stats" => {
                let (table, _) = self.flow_table()?;
                let (created, removed) = table.churn();
                let c = table.config();
                Ok(json!({
                    "pairs": table.len(), "capacity": c.capacity, "created": created, "removed": removed,
                    "redecided": table.redecided(),
                    "memory_bytes": table.memory_bytes(), "per_vif_limit": c.per_vif, "per_vrf_limit": c.per_vrf,
                    "idle_timeout_ms": c.idle_ms, "drop_timeout_ms": c.drop_ms,
                    "closed_timeout_ms": c.closed_ms, "half_open_timeout_ms": c.half_open_ms,
                }))
            }
            "flow.fragments" => {
                let (table, now) = self.flow_table()?;
                let t = table.fragments();
                let c = t.counts();
                let entries: Vec<Value> = t
                    .dump(now)
                    .iter()
                    .map(|f| {
                        json!({
                            "vrf": f.key.vrf, "proto": f.key.proto, "src": f.key.src_ip(), "dst": f.key.dst_ip(),
                            "ident": f.key.ident,
                            // No ports: an ICMP message with no flow.
                            "sport": f.ports.map(|p| p.0), "dport": f.ports.map(|p| p.1),
                            "expires_in_ms": f.expires_in_ms,
                        })
                    })
                    .collect();
                // Later fragments that came before their first, held by the workers.
                let s = self.stats.read().stats;
                Ok(json!({
                    "capacity": t.capacity(), "recorded": c.recorded, "matched": c.matched,
                    "unmatched": c.unmatched, "entries": entries,
                    "held": s.fragments_held, "released": s.fragments_released,
                    "expired": s.dropped(DropReason::NoFragEntry),
                    "no_room": s.dropped(DropReason::FragmentQueueFull),
                }))
            }
            "trace" => self.trace(&parse(params)?),
            "capture.start" => self.capture_start(session, &parse(params)?),
            "capture.read" => self.capture_read(session, &parse(params)?),
            "capture.stop" => {
                let _: Empty = parse(params)?;
                Ok(json!({ "stopped": self.end_capture(session) }))
            }
            other => Err(ApiError::new(
                code::UNKNOWN_METHOD,
                format!(
                    "unknown method {other:?}; methods are hello, info, add, update, delete, batch, get, dump, lookup, stats, flow.list, flow.get, flow.delete, flow.flush, flow.stats, flow.fragments, trace, capture.start, capture.read, capture.stop"
                ),
            )),
        }
    }

    /// Applies operations as one batch. Errors in a `batch` name the
    /// operation's position; a single add, update or delete needs none.
    fn apply_ops(&self, defs: &[OpDef], batch: bool) -> Result<Value, ApiError> {
        let locate = |err: ApiError, index: usize| {
            if batch {
                let message = format!("operation {index}: {}", err.message);
                ApiError { message, ..err.at(index) }
            } else {
                err
            }
        };
        let mut st = self.lock();
        let mut ops = Vec::with_capacity(defs.len());
        for (i, d) in defs.iter().enumerate() {
            let mut op = d.to_op(&self.defaults).map_err(|e| locate(table_error(&e), i))?;
            keep_resolved_mac(&st.writer, d, &mut op);
            ops.push(op);
        }
        // The flows of vifs deleted or moved, as they were: they go with them.
        let stale = crate::flow::stale_ends(st.writer.tables(), &ops);
        let generation = st.writer.apply(&ops).map_err(|e| locate(table_error(&e.error), e.index))?;
        let flows_removed = self.flows.as_ref().map_or(0, |(table, _)| table.remove_stale(&stale));
        if !stale.is_empty() {
            tracing::info!(ends = stale.len(), flows_removed, "vifs deleted or moved, with their flows");
        }
        let mut resolve = false;
        for d in defs {
            match d {
                // A new vif counts from zero, whichever vif had its index before.
                OpDef::Add(ObjectDef::Vif(v)) => self.stats.restart_vif(v.index),
                OpDef::Add(ObjectDef::Nexthop(n)) | OpDef::Update(ObjectDef::Nexthop(n)) => {
                    if n.resolves_mac() {
                        resolve |= st.resolved.insert(n.id());
                    } else {
                        st.resolved.remove(&n.id());
                    }
                }
                OpDef::Delete(KeyDef::Nexthop(id)) => {
                    st.resolved.remove(id);
                }
                _ => {}
            }
        }
        if resolve {
            self.resolve_now.store(true, Ordering::Relaxed);
        }
        let mut answer = json!({ "generation": generation, "applied": defs.len() });
        if !stale.is_empty() {
            answer["flows_removed"] = flows_removed.into();
        }
        Ok(answer)
    }

    fn get(&self, key: &KeyDef) -> Result<Value, ApiError> {
        let st = self.lock();
        let t = st.writer.tables();
        let missing = |what: &str, id: &dyn std::fmt::Display| {
            ApiError::new(code::NOT_FOUND, format!("{what} {id} does not exist"))
        };
        match key {
            KeyDef::Vif(i) => {
                let v = t.vif(*i).ok_or_else(|| missing("vif", i))?;
                Ok(self.vif_json(v, &self.stats.read()))
            }
            KeyDef::Vrf(id) => {
                let v = t.vrf(*id).ok_or_else(|| missing("VRF", id))?;
                Ok(vrf_json(v, &st.writer))
            }
            KeyDef::Nexthop(id) => {
                let nh = t.nexthop(*id).ok_or_else(|| missing("next hop", id))?;
                Ok(self.nexthop_json(&st, *id, nh))
            }
            KeyDef::Label(l) => {
                let nh = t.label(*l).ok_or_else(|| missing("label", l))?;
                Ok(json!({ "label": l, "nh": nh }))
            }
            KeyDef::Policy(id) => {
                let v = t.vrf(*id).ok_or_else(|| missing("VRF", id))?;
                let p = v.policy.as_ref().ok_or_else(|| missing("policy of VRF", id))?;
                Ok(policy_json(*id, p))
            }
            KeyDef::Route(r) => {
                let key = KeyDef::Route(r.clone()).to_key().map_err(|e| table_error(&e))?;
                let crate::tables::ObjectKey::Route(vrf, prefix) = key else { unreachable!("a route key") };
                match st.writer.route(vrf, prefix) {
                    Some(found) => to_value(&RouteDef::from_spec(&found)),
                    None => Err(missing("route", &format!("{prefix} in VRF {vrf}"))),
                }
            }
        }
    }

    fn dump(&self, p: &DumpParams) -> Result<Value, ApiError> {
        let limit = p.limit.unwrap_or(DUMP_PAGE).clamp(1, MAX_DUMP_PAGE);
        let after_id = || -> Result<Option<u32>, ApiError> {
            p.after
                .as_ref()
                .map(|a| match a {
                    Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                })
                .map(|a| a.ok_or_else(|| ApiError::new(code::INVALID, "`after` must be an id").field("after")))
                .transpose()
        };
        let mut st = self.lock();
        let t = st.writer.tables().clone();
        let (items, next): (Vec<Value>, Option<Value>) = match p.object.as_str() {
            "vif" => {
                let counted = self.stats.read();
                page(t.vifs().map(|v| (v.index, v)), after_id()?, limit, |_, v| self.vif_json(v, &counted))
            }
            "vrf" => page(t.vrfs().map(|v| (v.id, v)), after_id()?, limit, |_, v| vrf_json(v, &st.writer)),
            "nexthop" => page(t.nexthops(), after_id()?, limit, |id, nh| self.nexthop_json(&st, id, nh)),
            "label" => page(t.labels(), after_id()?, limit, |l, nh| json!({ "label": l, "nh": nh })),
            "policy" => {
                page(t.vrfs().filter_map(|v| v.policy.as_ref().map(|p| (v.id, p))), after_id()?, limit, |id, p| {
                    policy_json(id, p)
                })
            }
            "route" => {
                let vrf = p.vrf.ok_or_else(|| ApiError::new(code::INVALID, "a route dump needs `vrf`").field("vrf"))?;
                if st.writer.tables().vrf(vrf).is_none() {
                    return Err(ApiError::new(code::NOT_FOUND, format!("VRF {vrf} does not exist")).field("vrf"));
                }
                let family = p.family.as_deref().unwrap_or("all");
                let after = match &p.after {
                    None => None,
                    Some(Value::String(s)) => Some(s.parse::<Prefix>().map_err(|e| table_error(&e).field("after"))?),
                    Some(_) => return Err(ApiError::new(code::INVALID, "`after` must be a prefix").field("after")),
                };
                let after = match (family, after) {
                    ("inet6", None) => Some(LAST_V4),
                    ("inet" | "inet6" | "all", a) => a,
                    (f, _) => {
                        return Err(
                            ApiError::new(code::INVALID, format!("family {f:?}: inet, inet6 or all")).field("family")
                        )
                    }
                };
                let after = after.map(|a| if family == "inet6" && a.addr().is_ipv4() { LAST_V4 } else { a });
                let mut routes = st.writer.routes_page(vrf, after, limit + 1).unwrap_or_default();
                if family == "inet" {
                    routes.retain(|r| r.prefix.addr().is_ipv4());
                }
                let more = routes.len() > limit;
                routes.truncate(limit);
                let next = if more { routes.last().map(|r| json!(r.prefix.to_string())) } else { None };
                let items = routes.iter().map(|r| serde_json::to_value(RouteDef::from_spec(r)).unwrap_or_default());
                (items.collect(), next)
            }
            other => {
                return Err(ApiError::new(
                    code::INVALID,
                    format!("cannot dump {other:?}; objects are vif, vrf, nexthop, label, route, policy"),
                )
                .field("object"))
            }
        };
        drop(st);
        Ok(json!({ "items": items, "next": next }))
    }

    fn lookup(&self, p: &LookupParams) -> Result<Value, ApiError> {
        let st = self.lock();
        let t = st.writer.tables().clone();
        drop(st);
        let vrf = t
            .vrf(p.vrf)
            .ok_or_else(|| ApiError::new(code::NOT_FOUND, format!("VRF {} does not exist", p.vrf)).field("vrf"))?;
        let hit = match p.address {
            IpAddr::V4(a) => vrf.v4.lookup_with_len(u32::from(a)).map(|(t, l)| (IpAddr::V4(a), t, l)),
            IpAddr::V6(a) => vrf.v6.lookup_with_len(u128::from(a)).map(|(t, l)| (IpAddr::V6(a), t, l)),
        };
        // The network a policy takes the address to be in.
        let network = match p.address {
            IpAddr::V4(a) => vrf.network_of(false, u32::from(a).into()),
            IpAddr::V6(a) => vrf.network_of(true, a.into()),
        };
        let Some((addr, target, len)) = hit else {
            return Err(ApiError::new(code::NOT_FOUND, format!("no route to {} in VRF {}", p.address, p.vrf)));
        };
        let prefix = Prefix::covering(addr, len);
        let nh = t.nexthop(target.nh).map(|nh| self.nexthop_json(&self.lock(), target.nh, nh));
        Ok(json!({
            "vrf": p.vrf,
            "address": p.address,
            "prefix": prefix.to_string(),
            "nh": target.nh,
            "label": target.label(),
            "network": network,
            "nexthop": nh,
        }))
    }

    /// What the data path would do with the first packet of a flow
    /// (`pipeline::trace`), from a pod, or from another node through a
    /// tunnel to the fabric vif: the packet, the label it came with, the
    /// route, the verdict, the frame as it would leave, and the policy rule
    /// that decided it.
    fn trace(&self, p: &TraceParams) -> Result<Value, ApiError> {
        use crate::wire::ip_proto;
        let tables = self.lock().writer.tables().clone();
        let vif = tables.vif(p.vif).ok_or_else(|| {
            ApiError::new(code::MISSING_REFERENCE, format!("vif {} does not exist", p.vif)).field("vif")
        })?;
        let tunnel = match vif.kind {
            crate::tables::VifKind::Virtual => None,
            crate::tables::VifKind::Fabric => Some(trace_tunnel(vif, p)?),
            kind => {
                let message =
                    format!("a trace starts at a pod's vif or the fabric's; vif {} is {}", p.vif, kind.as_str());
                return Err(ApiError::new(code::INVALID, message).field("vif"));
            }
        };
        if tunnel.is_none() {
            if let Some(field) =
                [("label", p.label.is_some()), ("encap", p.encap.is_some()), ("from", p.from.is_some())]
                    .into_iter()
                    .find_map(|(name, given)| given.then_some(name))
            {
                let message = format!("{field} is for a trace from the fabric; a pod's packet comes with no tunnel");
                return Err(ApiError::new(code::INVALID, message).field(field));
            }
        }
        // A pod's packets come from its own address; a tunnel's from
        // anywhere behind another node, so it has to be given.
        let own = match (&tunnel, p.dst) {
            (Some(_), _) => None,
            (None, IpAddr::V4(_)) => vif.ipv4.map(IpAddr::V4),
            (None, IpAddr::V6(_)) => vif.ipv6.map(IpAddr::V6),
        };
        let src = p.src.or(own).ok_or_else(|| {
            let message = if tunnel.is_some() {
                "a trace from the fabric needs src, the address behind the other node".to_string()
            } else {
                format!("vif {} has no address of {}'s family; give src", p.vif, p.dst)
            };
            ApiError::new(code::INVALID, message).field("src")
        })?;
        let proto = match &p.proto {
            None => ip_proto::UDP,
            Some(d) => d.number().map_err(|e| ApiError::new(code::INVALID, format!("proto {e}")).field("proto"))?,
        };
        // "icmp" to an IPv6 address is an ICMPv6 echo.
        let proto = if proto == ip_proto::ICMP && p.dst.is_ipv6() { ip_proto::ICMPV6 } else { proto };
        let config = self.pipeline;
        let l2 = crate::pktgen::build::L2 { src: vif.mac, dst: config.router_mac };
        let (sport, dport) = (p.sport.unwrap_or(40000), p.dport.unwrap_or(80));
        use crate::pktgen::build::{probe, TracePacket};
        let Some(packet) = probe(l2, (src, p.dst), proto, sport, dport, TracePacket::First) else {
            return Err(if src.is_ipv4() != p.dst.is_ipv4() {
                ApiError::new(code::INVALID, format!("src {src} and dst {} are of two families", p.dst)).field("src")
            } else {
                ApiError::new(code::INVALID, "a trace sends udp, tcp or icmp").field("proto")
            });
        };
        let wrap = |packet: Vec<u8>| match &tunnel {
            None => packet,
            Some(t) => t.wrap(&packet[crate::wire::ethernet::HEADER_LEN..]),
        };
        let frame = wrap(packet);
        let next = probe(l2, (src, p.dst), proto, sport, dport, TracePacket::Next).map(wrap);
        let traced = crate::pipeline::trace(&tables, config, p.vif, &frame, next.as_deref());
        // The VRF the packet is routed in: the pod's, or the one the label
        // lands it in (none where the label names a pod, or nothing).
        let (vrf, label, routed) = match &tunnel {
            None => (Some(vif.vrf), Value::Null, true),
            Some(t) => self.label_lands(&tables, t.label),
        };
        let route = vrf.filter(|_| routed).and_then(|vrf| self.lookup(&LookupParams { vrf, address: p.dst }).ok());
        let frame_json =
            |data: &[u8]| json!({ "summary": crate::capture::summary(data), "data": crate::capture::to_hex(data) });
        let mut input = json!({ "vif": p.vif, "vrf": vrf, "frame": frame_json(&frame) });
        if tunnel.is_some() {
            input["label"] = label;
        }
        let key = vrf.and_then(|vrf| probe_key(vrf, proto, src, p.dst, sport, dport));
        let existing = key.and_then(|key| self.live_flow(&tables, &key));
        Ok(json!({
            "in": input,
            "route": route,
            "verdict": verdict_json(traced.verdict),
            "out": frame_json(&traced.frame),
            "made": traced.made.iter().map(|(v, f)| json!({ "verdict": verdict_json(*v), "frame": frame_json(f) })).collect::<Vec<_>>(),
            "flow": traced.flow.map(|f| json!({
                "rule": rule_json(f.rule),
                "passed_by": rule_json(f.passed_by),
                "ecmp": ecmp_json(f.ecmp),
                "nat": nat_json(&f.nat),
            })),
            "existing": existing,
            // Which way the flow's packets go: its first, and its next.
            "path": {
                "first": path_json(traced.general),
                "next": traced.next.map(|(v, general)| json!({ "verdict": verdict_json(v), "path": path_json(general) })),
            },
        }))
    }

    /// Where a tunnel packet with `label` lands: the VRF it is routed or
    /// delivered in (`None` where the label names nothing that has one),
    /// what the label names as the trace gives it, and whether the VRF
    /// routes it (`vrf-lookup`) rather than the label naming a pod.
    fn label_lands(&self, tables: &crate::tables::Tables, label: u32) -> (Option<u32>, Value, bool) {
        let nh = tables.label(label);
        let nexthop = nh.and_then(|id| tables.nexthop(id).map(|n| (id, n)));
        let vrf = match nexthop {
            Some((_, NextHop::VrfLookup { vrf })) => Some(*vrf),
            Some((_, NextHop::Encap { oif, .. })) => tables.vif(*oif).map(|v| v.vrf),
            _ => None,
        };
        let st = self.lock();
        let named = json!({
            "label": label,
            "nh": nh,
            "nexthop": nexthop.map(|(id, n)| self.nexthop_json(&st, id, n)),
        });
        (vrf, named, matches!(nexthop, Some((_, NextHop::VrfLookup { .. }))))
    }

    /// The live flow with `key`, as `flow.get` gives it. A trace judges a
    /// new flow; a live one goes by what it holds (its pinned member, its
    /// NAT, its action), which differ once the members or policies change.
    fn live_flow(&self, tables: &crate::tables::Tables, key: &crate::flow::FlowKey) -> Option<Value> {
        let (table, now) = self.flow_table().ok()?;
        let f = table.get(table.lookup(key)?.slot, now)?;
        crate::pipeline::judgement(tables, table, &f).map(|judged| flow_json(&f, judged))
    }

    /// Starts copying a vif's frames for this session, which reads them
    /// with `capture.read`; they stop with `capture.stop` or when the
    /// client goes.
    fn capture_start(&self, session: &mut Session, p: &CaptureStartParams) -> Result<Value, ApiError> {
        use crate::capture::{StartError, MAX_SNAPLEN, SESSIONS};
        let tap = self.tap.as_ref().ok_or_else(|| ApiError::new(code::NOT_FOUND, "this vrouterd captures nothing"))?;
        if let Some(c) = &session.capture {
            let message = format!("this connection captures vif {} already; capture.stop first", c.vif);
            return Err(ApiError::new(code::EXISTS, message));
        }
        let name = self.lock().writer.tables().vif(p.vif).map(|v| v.name.clone());
        let name = name.ok_or_else(|| {
            ApiError::new(code::MISSING_REFERENCE, format!("vif {} does not exist", p.vif)).field("vif")
        })?;
        let snaplen = p.snaplen.unwrap_or(MAX_SNAPLEN as u32);
        if snaplen == 0 || snaplen as usize > MAX_SNAPLEN {
            let message = format!("snaplen {snaplen} is not in 1..={MAX_SNAPLEN}");
            return Err(ApiError::new(code::OUT_OF_RANGE, message).field("snaplen"));
        }
        let filter = match &p.r#match {
            None => crate::capture::Filter::default(),
            Some(m) => capture_filter(m)?,
        };
        let running = tap.start(p.vif, snaplen as usize, filter, p.general).map_err(|StartError::Busy| {
            ApiError::new(code::FULL, format!("{SESSIONS} captures run already; stop one first"))
        })?;
        session.capture = Some(Capture { session: running, vif: p.vif, name: name.clone() });
        tracing::info!(vif = p.vif, interface = %name, snaplen, general = p.general, "capture started");
        Ok(json!({ "vif": p.vif, "name": name, "snaplen": snaplen, "general": p.general }))
    }

    /// The frames this session's capture took since its last read, oldest
    /// first: at most `max_packets`, and about `CAPTURE_READ_BYTES` of them.
    fn capture_read(&self, session: &mut Session, p: &CaptureReadParams) -> Result<Value, ApiError> {
        let (Some(tap), Some(c)) = (&self.tap, &session.capture) else {
            return Err(ApiError::new(code::NOT_FOUND, "this connection captures nothing; capture.start first"));
        };
        // A vif deleted, or replaced by another pod at its index, ends the
        // capture rather than go on with a stranger's frames.
        let still = self.lock().writer.tables().vif(c.vif).is_some_and(|v| v.name == c.name);
        if !still {
            let message = format!("vif {} ({}) is gone; its capture stopped", c.vif, c.name);
            self.end_capture(session);
            return Err(ApiError::new(code::NOT_FOUND, message));
        }
        let max = p.max_packets.unwrap_or(CAPTURE_READ_PACKETS).clamp(1, CAPTURE_READ_PACKETS);
        let (mut packets, mut bytes) = (Vec::new(), 0);
        let missed = tap.read(c.session, |f| {
            bytes += f.data().len();
            packets.push(captured_json(f));
            packets.len() < max && bytes < CAPTURE_READ_BYTES
        });
        Ok(json!({ "packets": packets, "missed": missed }))
    }

    /// Stops this session's capture, if it runs one. True if it did.
    fn end_capture(&self, session: &mut Session) -> bool {
        let (Some(tap), Some(c)) = (&self.tap, session.capture.take()) else { return false };
        tap.stop(c.session);
        tracing::info!(vif = c.vif, "capture stopped");
        true
    }

    fn flow_table(&self) -> Result<(&crate::flow::FlowTable, u64), ApiError> {
        let (t, epoch) =
            self.flows.as_ref().ok_or_else(|| ApiError::new(code::NOT_FOUND, "this vrouterd keeps no flow table"))?;
        Ok((t, epoch.elapsed().as_millis() as u64))
    }

    fn flow_list(&self, p: &FlowListParams) -> Result<Value, ApiError> {
        let (table, now) = self.flow_table()?;
        let limit = p.limit.unwrap_or(DUMP_PAGE).clamp(1, MAX_DUMP_PAGE);
        let m = p.r#match.as_ref();
        let ends = m.map(FlowMatch::ends).transpose()?.unwrap_or_default();
        let wanted = |f: &crate::flow::FlowInfo| {
            // A flow always has ports: an ICMP flow's are its echo id.
            let ports = Some((f.key.sport, f.key.dport));
            ends.matches_ends(f.key.proto, f.key.src_ip(), f.key.dst_ip(), ports)
                && m.is_none_or(|m| m.vrf.is_none_or(|v| v == f.key.vrf) && m.vif.is_none_or(|v| v == f.vif))
        };
        let tables = self.lock().writer.tables().clone();
        let mut items = Vec::new();
        let mut next = None;
        let mut after = p.after;
        // Pages of the table, filtered, until the page is full.
        'scan: loop {
            let chunk = table.dump(after, 4096, now);
            if chunk.is_empty() {
                break;
            }
            for f in &chunk {
                after = Some(f.slot);
                // A pair removed since the chunk was read is left out.
                let Some(judged) = wanted(f).then(|| crate::pipeline::judgement(&tables, table, f)).flatten() else {
                    continue;
                };
                if m.and_then(|m| m.rule.as_ref()).is_some_and(|r| !r.judged(&judged)) {
                    continue;
                }
                if items.len() == limit {
                    next = Some(items.last().map_or(0, |v: &Value| v["index"].as_u64().unwrap_or(0)));
                    break 'scan;
                }
                items.push(flow_json(f, judged));
            }
        }
        Ok(json!({ "items": items, "next": next }))
    }

    /// Vif `v` with its counters.
    fn vif_json(&self, v: &crate::tables::Vif, counted: &crate::stats::Reading) -> Value {
        let c = counted.stats.vif(v.index);
        let port = self.port(v.index);
        let sockets = socket_counters_json(port.as_ref());
        let longest_frame = port.as_ref().and_then(|p| p.longest_frame);
        with_status(
            &VifDef::from_vif(v),
            json!({
                "port": port.map(|p| p.state),
                "rx_packets": c.rx_packets,
                "rx_bytes": c.rx_bytes,
                "tx_packets": c.tx_packets,
                "tx_bytes": c.tx_bytes,
                "tx_dropped": c.tx_dropped,
                "rx_errors": c.rx_errors,
                "drops": c.drops,
                "drop_reasons": drop_reasons(&counted.stats, v.index),
                "general_path": counted.general_from(v.index),
                "kernel": sockets,
                "longest_frame": longest_frame,
            }),
        )
    }

    fn nexthop_json(&self, st: &ControlState, id: NhId, nh: &NextHop) -> Value {
        let resolved = st.resolved.contains(&id);
        let def = NextHopDef::from_nexthop(id, nh, &self.defaults, resolved);
        let mut status = json!({ "refs": st.writer.tables().nexthop_refs(id) });
        if let (true, NextHop::Tunnel(t)) = (resolved, nh) {
            let known = t.dmac != crate::wire::MacAddr::default();
            status["resolved_mac"] = if known { json!(t.dmac.to_string()) } else { Value::Null };
        }
        with_status(&def, status)
    }

    fn info(&self) -> Value {
        let st = self.lock();
        let t = st.writer.tables().clone();
        let routes: usize = t.vrfs().map(|v| st.writer.route_count(v.id)).map(|(a, b)| a + b).sum();
        let memory = json!({
            "routes_bytes": t.vrfs().map(|v| st.writer.vrf_memory_bytes(v.id)).sum::<usize>(),
            "writer_spare_bytes": st.writer.spare_bytes(),
            "writer_pooled_bytes": st.writer.pooled_node_bytes(),
        });
        drop(st);
        let l = t.limits();
        let mut tables: Vec<Value> =
            t.occupancy().iter().map(|(n, used, cap)| json!({ "table": n, "used": used, "capacity": cap })).collect();
        tables.push(json!({ "table": "routes", "used": routes, "capacity_per_vrf": l.routes_per_vrf }));
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "build": {
                "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
                "arch": std::env::consts::ARCH,
                "rust_version": env!("CARGO_PKG_RUST_VERSION"),
            },
            "api_version": proto::VERSION,
            "boot_id": self.node.boot_id,
            "uptime_s": self.started.elapsed().as_secs(),
            "underlay": self.node.underlay,
            "fabric": self.node.fabric,
            "workers": self.stats.workers(),
            "cores": self.node.cores,
            "generation": t.generation(),
            "limits": {
                "vifs": l.vifs, "vrfs": l.vrfs, "nexthops": l.nexthops,
                "labels": l.labels, "routes_per_vrf": l.routes_per_vrf,
            },
            "tables": tables,
            // What the routes take, and what the table writer keeps
            // besides to make the next batches cheap: the route tables it
            // changes next (`keep_spares`) and trie nodes to copy into.
            "memory": memory,
        })
    }

    /// Every counter: vifs, VRFs, drops by reason and workers.
    pub fn stats_json(&self) -> Value {
        let t = self.lock().writer.tables().clone();
        let counted = self.stats.read();
        let (s, io) = (&counted.stats, &counted.io);
        let vifs: Vec<Value> = t
            .vifs()
            .map(|v| {
                let c = s.vif(v.index);
                json!({
                    "index": v.index, "name": v.name,
                    "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                    "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes, "tx_dropped": c.tx_dropped,
                    "rx_errors": c.rx_errors, "drops": c.drops,
                    "drop_reasons": drop_reasons(s, v.index),
                    "general_path": counted.general_from(v.index),
                    "kernel": socket_counters_json(self.port(v.index).as_ref()),
                })
            })
            .collect();
        let vrfs: Vec<Value> = t
            .vrfs()
            .map(|v| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), json!(v.id));
                o.insert("name".into(), json!(v.name));
                for (k, n) in s.vrf(v.id).fields() {
                    o.insert(k.into(), json!(n));
                }
                Value::Object(o)
            })
            .collect();
        let drops: Vec<Value> = DropReason::ALL
            .iter()
            .map(|r| json!({ "reason": r.as_str(), "contrail": r.contrail_name(), "count": s.dropped(*r) }))
            .collect();
        let workers: Vec<Value> = io
            .iter()
            .enumerate()
            .map(|(w, io)| {
                json!({
                    "worker": w, "core": self.node.cores.get(w),
                    "rx": io.rx, "tx": io.tx, "tx_dropped": io.tx_dropped, "unsent": unsent_json(&io.unsent),
                    "handed_off": io.handed_off,
                    "wakeups": io.wakeups,
                    "general_path": io.general_path, "general_causes": general_causes_json(&io.general_causes),
                    "flow_cache": {
                        "hits": io.flow_cache.hits, "fills": io.flow_cache.fills,
                        "forgotten": io.flow_cache.forgotten, "renewals": io.flow_cache.renewals,
                        "crowded": io.flow_cache.crowded,
                    },
                    "busy_ns": io.busy_ns, "elapsed_ns": io.elapsed_ns,
                    "runtime": runtime_json(&io.runtime, io.tsc_hz),
                })
            })
            .collect();
        json!({
            "vifs": vifs, "vrfs": vrfs, "drops": drops, "workers": workers,
            "to_host": s.to_host, "to_agent": s.to_agent,
            "fragments_held": s.fragments_held, "fragments_released": s.fragments_released,
        })
    }
}

/// Vif `vif`'s drops by reason, the reasons it has dropped for alone
/// (`{"no_route": 3}`): most vifs have none, or one or two.
fn drop_reasons(stats: &crate::stats::Stats, vif: u32) -> Value {
    Value::Object(stats.vif_drop_reasons(vif).map(|(r, n)| (r.as_str().to_string(), json!(n))).collect())
}

/// A worker's general-path frames by cause, every cause named, in counter
/// order (`GeneralCause`).
fn general_causes_json(counts: &[u64; crate::stats::GeneralCause::COUNT]) -> Value {
    let causes = crate::stats::GeneralCause::ALL.iter().zip(counts);
    Value::Object(causes.map(|(c, n)| (c.as_str().to_string(), json!(n))).collect())
}

/// A worker's `tx_dropped` by cause, every cause named, in counter order
/// (`Unsent`).
fn unsent_json(counts: &[u64; crate::stats::Unsent::COUNT]) -> Value {
    let causes = crate::stats::Unsent::ALL.iter().zip(counts);
    Value::Object(causes.map(|(c, n)| (c.as_str().to_string(), json!(n))).collect())
}

/// A worker's stage runtime: per stage, total cycles and (when packets were
/// timed) cycles and nanoseconds per packet.
fn runtime_json(rt: &crate::stats::Runtime, tsc_hz: u64) -> Value {
    let stages: Vec<Value> = crate::stats::Stage::ALL
        .iter()
        .map(|&s| {
            let per = rt.per_packet(s);
            json!({
                "stage": s.as_str(),
                "cycles": rt.cycles[s as usize],
                "cycles_per_packet": per,
                "ns_per_packet": per.filter(|_| tsc_hz > 0).map(|c| c * 1e9 / tsc_hz as f64),
            })
        })
        .collect();
    json!({ "packets": rt.packets, "batches": rt.batches, "tsc_hz": tsc_hz, "stages": stages })
}

/// Entries per dump page unless the client asks otherwise, and at most.
const DUMP_PAGE: usize = 1000;
const MAX_DUMP_PAGE: usize = 10_000;

/// Sorts after every IPv4 prefix: where an IPv6-only dump starts.
const LAST_V4: Prefix = Prefix::host_v4(std::net::Ipv4Addr::BROADCAST);

/// One page of an id-keyed table: the items after `after`, and the id to
/// continue from when more remain.
fn page<T>(
    all: impl Iterator<Item = (u32, T)>,
    after: Option<u32>,
    limit: usize,
    f: impl Fn(u32, T) -> Value,
) -> (Vec<Value>, Option<Value>) {
    let mut items = Vec::new();
    let mut last = None;
    for (k, t) in all.filter(|(k, _)| after.is_none_or(|a| *k > a)) {
        if items.len() == limit {
            return (items, last.map(Value::from));
        }
        items.push(f(k, t));
        last = Some(k);
    }
    (items, None)
}

/// An object and its read-only state, side by side: `{...object, "status": {...}}`.
fn with_status<T: serde::Serialize>(def: &T, status: Value) -> Value {
    let mut v = serde_json::to_value(def).unwrap_or_default();
    if let Value::Object(o) = &mut v {
        o.insert("status".into(), status);
    }
    v
}

fn policy_json(vrf: u32, p: &crate::tables::VrfPolicy) -> Value {
    with_status(&super::schema::PolicyDef::from_policy(vrf, &p.policy), json!({ "generation": p.generation }))
}

/// A flow's NAT rewrite: its new addresses and ports (`null` if none).
fn nat_json(nat: &crate::flow::Nat) -> Value {
    if nat.is_none() {
        return Value::Null;
    }
    json!({
        "src": nat.src.map(|a| std::net::Ipv4Addr::from(a).to_string()),
        "dst": nat.dst.map(|a| std::net::Ipv4Addr::from(a).to_string()),
        "sport": nat.sport, "dport": nat.dport,
    })
}

/// The policy rule that decides a pair: rule `index` of VRF `vrf`'s
/// policy (`index` `null`: its default; all `null`: no policy judges it).
fn rule_json(rule: Option<crate::pipeline::Ruling>) -> Value {
    rule.map_or(Value::Null, |r| json!({ "vrf": r.vrf, "index": r.rule }))
}

/// The ECMP member a flow is pinned to (`null` if none).
fn ecmp_json(member: Option<crate::tables::RouteTarget>) -> Value {
    let label = |m: crate::tables::RouteTarget| (m.label != crate::tables::RouteTarget::NO_LABEL).then_some(m.label);
    member.map_or(Value::Null, |m| json!({ "nh": m.nh, "label": label(m) }))
}

/// One flow entry as the API shows it, with what the policies say of its
/// pair (`pipeline::judgement`).
fn flow_json(f: &crate::flow::FlowInfo, judged: crate::pipeline::Judgement) -> Value {
    use crate::flow::FlowAction;
    let action = match f.action {
        FlowAction::Forward if f.nat.is_none() => json!("forward"),
        FlowAction::Forward => json!("nat"),
        FlowAction::Drop(r) => json!({ "drop": r.as_str() }),
    };
    json!({
        "index": f.slot,
        "reverse": f.reverse,
        "direction": if f.forward { "forward" } else { "reverse" },
        "vrf": f.key.vrf,
        "proto": f.key.proto,
        "src": f.key.src_ip(),
        "sport": f.key.sport,
        "dst": f.key.dst_ip(),
        "dport": f.key.dport,
        "action": action,
        "nat": nat_json(&f.nat),
        "ecmp": ecmp_json(f.ecmp),
        "vif": f.vif,
        "tcp": f.tcp.as_str(),
        "one_way": f.one_way,
        "rule": rule_json(judged.rule),
        "passed_by": rule_json(judged.passed_by),
        "stale": !judged.current,
        "packets": f.packets,
        "bytes": f.bytes,
        "age_ms": f.age_ms,
        "idle_ms": f.idle_ms,
    })
}

fn vrf_json(v: &crate::tables::Vrf, writer: &TablesWriter) -> Value {
    let (v4, v6) = writer.route_count(v.id);
    // A spilled /128 is found by the trie's sixteen-level walk alone: the
    // count says when a VRF's pods pay it (`tables::hosts`).
    let (hosts_v6, hosts_v6_spilled) = v.v6.host_routes();
    // Why the VRF tracks flows, if it does: an operator's first question
    // when a flow shows up (or does not) where no policy is.
    let why =
        [("policy", v.policy.is_some()), ("floating_ips", v.floating_ips > 0), ("ecmp_routes", v.ecmp_routes > 0)];
    let flows: Vec<&str> = why.iter().filter(|(_, yes)| *yes).map(|(name, _)| *name).collect();
    let status = json!({
        "routes_v4": v4,
        "routes_v6": v6,
        "hosts_v6": hosts_v6,
        "hosts_v6_spilled": hosts_v6_spilled,
        "memory_bytes": writer.vrf_memory_bytes(v.id),
        "ecmp_routes": v.ecmp_routes,
        "floating_ips": v.floating_ips,
        "tracks_flows": flows,
    });
    with_status(&VrfDef::from_vrf(v), status)
}

fn to_value<T: serde::Serialize>(t: &T) -> Result<Value, ApiError> {
    serde_json::to_value(t).map_err(|e| ApiError::new(code::INVALID, e.to_string()))
}

/// A tunnel updated without a MAC keeps the one vrouterd resolved, so that
/// reconciling an unchanged tunnel never blackholes it until the next
/// resolution.
fn keep_resolved_mac(writer: &TablesWriter, def: &OpDef, op: &mut Op) {
    let OpDef::Update(ObjectDef::Nexthop(n)) = def else { return };
    if !n.resolves_mac() {
        return;
    }
    if let (Op::Update(Object::NextHop(id, NextHop::Tunnel(new))), Some(NextHop::Tunnel(old))) =
        (&mut *op, writer.tables().nexthop(n.id()))
    {
        if *id == n.id() && old.dip == new.dip && old.oif == new.oif {
            *new = crate::tables::Tunnel::new(new.oif, new.encap, new.sip, new.dip, old.dmac);
        }
    }
}

/// The API's form of a table error: its code and the field it names.
fn table_error(e: &TableError) -> ApiError {
    let (c, field) = match e {
        TableError::Exists { .. } => (code::EXISTS, None),
        TableError::NotFound { .. } => (code::NOT_FOUND, None),
        TableError::MissingReference { field, .. } => (code::MISSING_REFERENCE, Some(*field)),
        TableError::InUse { .. } => (code::IN_USE, None),
        TableError::Full { .. } => (code::FULL, None),
        TableError::OutOfRange { field, .. } => (code::OUT_OF_RANGE, Some(*field)),
        TableError::Invalid { field, .. } => (code::INVALID, Some(*field)),
    };
    let err = ApiError::new(c, e.to_string());
    match field {
        Some(f) => err.field(f),
        None => err,
    }
}

/// `params` without the read-only `status` of the objects it adds or
/// updates: `get` answers an object with its status, and what it answers
/// can be edited and sent back as it is (as Kubernetes ignores the status
/// sent with an object). Anything else, malformed JSON included, is left
/// for `parse` to judge.
fn without_status(params: &str) -> std::borrow::Cow<'_, str> {
    // `{"vif": {...}}`: the one object in a single-member map.
    fn strip(one: &mut Value) -> bool {
        let Some(map) = one.as_object_mut().filter(|m| m.len() == 1) else { return false };
        map.values_mut().next().and_then(Value::as_object_mut).is_some_and(|def| def.remove("status").is_some())
    }
    let Ok(mut v) = serde_json::from_str::<Value>(params) else { return params.into() };
    let mut changed = strip(&mut v);
    if let Some(ops) = v.get_mut("ops").and_then(Value::as_array_mut) {
        for (kind, change) in ops.iter_mut().filter_map(Value::as_object_mut).flatten() {
            if kind == "add" || kind == "update" {
                changed |= strip(change);
            }
        }
    }
    if changed {
        v.to_string().into()
    } else {
        params.into()
    }
}

/// Reads parameters into their type; a mistake names its path, e.g.
/// `ops[3].add.route.nh`, and a batch error its position.
fn parse<'a, T: Deserialize<'a>>(params: &'a str) -> Result<T, ApiError> {
    // Every method's parameters are an object; serde's words for a number
    // or a string where its enums expect one ("expected value") say less.
    if !params.trim_start().starts_with('{') {
        let shown: String = params.trim().chars().take(40).collect();
        return Err(
            ApiError::new(code::INVALID_PARAMS, format!("params: expected an object, not {shown}")).field("params")
        );
    }
    let de = &mut serde_json::Deserializer::from_str(params);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let segments = e.path().clone();
        let index = path.strip_prefix("ops[").and_then(|r| r.split(']').next()).and_then(|i| i.parse().ok());
        let inner = e.into_inner();
        // The position would count from the start of `params`, not of the
        // line the client sent; the path says where, better.
        let text = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let text = text.strip_suffix(&position).unwrap_or(&text);
        // Serde's words, for a valid document, where an enum found neither
        // a name (`"allow"`) nor an object of one key naming what it holds
        // (`{"vif": {...}}`): what it found says more.
        let found;
        let text = if text == "expected value" {
            found = match value_at(params, &segments) {
                Some(Value::Object(m)) => {
                    format!("expected an object with one key, naming what it holds, not {} keys", m.len())
                }
                Some(v) => format!("expected a name, not {}", v.to_string().chars().take(40).collect::<String>()),
                None => "expected a value".into(),
            };
            found.as_str()
        } else {
            text
        };
        let mut err = if path == "." {
            ApiError::new(code::INVALID_PARAMS, format!("params: {text}"))
        } else {
            ApiError::new(code::INVALID_PARAMS, format!("{path}: {text}")).field(path)
        };
        err.index = index;
        err
    })
}

/// The value at `path` in the JSON document `params`.
fn value_at(params: &str, path: &serde_path_to_error::Path) -> Option<Value> {
    use serde_path_to_error::Segment;
    let mut v: Value = serde_json::from_str(params).ok()?;
    for segment in path {
        v = match segment {
            Segment::Seq { index } => v.get_mut(*index)?.take(),
            Segment::Map { key } | Segment::Enum { variant: key } => v.get_mut(key.as_str())?.take(),
            Segment::Unknown => return None,
        };
    }
    Some(v)
}

fn answer(id: Option<&serde_json::value::RawValue>, result: Result<Value, ApiError>) -> Vec<u8> {
    let id = id.map_or(Value::Null, |r| serde_json::from_str(r.get()).unwrap_or(Value::Null));
    let v = match result {
        Ok(r) => json!({ "id": id, "result": r }),
        Err(e) => json!({ "id": id, "error": e }),
    };
    serde_json::to_vec(&v).unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"encoding"}}"#.to_vec())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloParams {
    version: u32,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchParams {
    ops: Vec<OpDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpParams {
    object: String,
    #[serde(default)]
    vrf: Option<u32>,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    after: Option<Value>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowSlot {
    index: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowListParams {
    #[serde(default)]
    after: Option<u32>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    r#match: Option<FlowMatch>,
}

/// Flows to show: every field given must match. An address and port
/// match either side; with a peer's too, the flow is between the two, in
/// either direction (Contrail's `--match "IP1:PORT1,IP2:PORT2"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowMatch {
    #[serde(default)]
    ip: Option<IpAddr>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    peer_ip: Option<IpAddr>,
    #[serde(default)]
    peer_port: Option<u16>,
    #[serde(default)]
    vrf: Option<u32>,
    #[serde(default)]
    proto: Option<super::schema::ProtoDef>,
    #[serde(default)]
    vif: Option<u32>,
    /// The flows a policy rule decides, or lets on to the pod's network's
    /// policy (`passed_by`): `{"vrf": V, "index": N}`, `index` `null` or
    /// absent for the default.
    #[serde(default)]
    rule: Option<RuleMatch>,
}

/// A policy rule, as `flow.list`'s `match` names one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleMatch {
    vrf: u32,
    #[serde(default)]
    index: Option<usize>,
}

impl RuleMatch {
    /// True if the rule decided the pair, or let it on to the rule that did.
    fn judged(&self, j: &crate::pipeline::Judgement) -> bool {
        let this = Some(crate::pipeline::Ruling { vrf: self.vrf, rule: self.index });
        j.rule == this || j.passed_by == this
    }
}

impl FlowMatch {
    /// Its addresses, ports and protocol, as flows and captured frames are
    /// matched by them (`vrf` and `vif` aside).
    fn ends(&self) -> Result<crate::capture::Filter, ApiError> {
        let proto = self.proto.as_ref().map(super::schema::ProtoDef::number).transpose();
        let proto = proto.map_err(|e| ApiError::new(code::INVALID, format!("proto {e}")).field("match.proto"))?;
        Ok(crate::capture::Filter { one: (self.ip, self.port), peer: (self.peer_ip, self.peer_port), proto })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupParams {
    vrf: u32,
    address: IpAddr,
}

/// One client's connection state.
#[derive(Debug, Default)]
pub struct Session {
    version: Option<u32>,
    /// The capture this connection runs, stopped when it closes.
    capture: Option<Capture>,
}

#[derive(Debug)]
struct Capture {
    session: crate::capture::Session,
    vif: VifIndex,
    /// The vif's interface name when the capture started: a vif of another
    /// name at its index is another pod.
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureStartParams {
    vif: VifIndex,
    #[serde(default)]
    snaplen: Option<u32>,
    /// Which frames to keep, as `flow.list` picks flows (no `vrf` or `vif`:
    /// a capture is of one vif).
    #[serde(default)]
    r#match: Option<FlowMatch>,
    /// Only the received frames the fast lane left to the general path.
    #[serde(default)]
    general: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureReadParams {
    #[serde(default)]
    max_packets: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    vif: VifIndex,
    dst: IpAddr,
    #[serde(default)]
    src: Option<IpAddr>,
    #[serde(default)]
    proto: Option<super::schema::ProtoDef>,
    #[serde(default)]
    sport: Option<u16>,
    #[serde(default)]
    dport: Option<u16>,
    /// From the fabric: the MPLS label the packet comes with.
    #[serde(default)]
    label: Option<u32>,
    /// From the fabric: the tunnel (MPLS over UDP unless given).
    #[serde(default)]
    encap: Option<super::schema::EncapDef>,
    /// From the fabric: the outer source, the node that sent it.
    #[serde(default)]
    from: Option<std::net::Ipv4Addr>,
}

/// The flow key, in `vrf`, of the probe a trace sends (`build::probe`: an
/// ICMP echo's id is `sport`, and its key's two ports).
fn probe_key(vrf: u32, proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Option<crate::flow::FlowKey> {
    use crate::wire::ip_proto::{ICMP, ICMPV6};
    let dport = if matches!(proto, ICMP | ICMPV6) { sport } else { dport };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(crate::flow::FlowKey::v4(vrf, proto, s.into(), d.into(), sport, dport)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(crate::flow::FlowKey::v6(vrf, proto, s.into(), d.into(), sport, dport)),
        _ => None,
    }
}

/// The tunnel a trace from the fabric comes in by, as another node would
/// send it to this one.
struct TraceTunnel {
    label: u32,
    encap: super::schema::EncapDef,
    from: std::net::Ipv4Addr,
    to: std::net::Ipv4Addr,
    l2: crate::pktgen::build::L2,
}

/// `p`'s tunnel to fabric vif `vif`.
fn trace_tunnel(vif: &crate::tables::Vif, p: &TraceParams) -> Result<TraceTunnel, ApiError> {
    let label = p.label.ok_or_else(|| {
        ApiError::new(code::INVALID, "a trace from the fabric needs the label the packet comes with").field("label")
    })?;
    if label > crate::wire::mpls::MAX_LABEL {
        let message = format!("label {label} does not fit MPLS's 20 bits");
        return Err(ApiError::new(code::OUT_OF_RANGE, message).field("label"));
    }
    let to = vif.ipv4.ok_or_else(|| {
        ApiError::new(code::INVALID, format!("vif {} has no IPv4 address for tunnels to come to", vif.index))
            .field("vif")
    })?;
    Ok(TraceTunnel {
        label,
        encap: p.encap.unwrap_or(super::schema::EncapDef::MplsOverUdp),
        // vrouterd takes a tunnel from any node: the source is for show.
        from: p.from.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        to,
        l2: crate::pktgen::build::L2 { src: crate::wire::MacAddr::default(), dst: vif.mac },
    })
}

impl TraceTunnel {
    /// The frame that carries IP packet `inner` in this tunnel.
    fn wrap(&self, inner: &[u8]) -> Vec<u8> {
        use crate::pktgen::build::{mpls_tunnel_frame, Tunnel};
        let tunnel = match self.encap {
            super::schema::EncapDef::MplsOverUdp => Tunnel::Udp(crate::tables::nexthop::MPLS_UDP_PORT),
            super::schema::EncapDef::MplsOverGre => Tunnel::Gre,
        };
        mpls_tunnel_frame(self.l2, tunnel, self.from, self.to, self.label, 64, 49152, inner)
    }
}

/// A capture's filter from `capture.start`'s `match`.
fn capture_filter(m: &FlowMatch) -> Result<crate::capture::Filter, ApiError> {
    let given = [("match.vrf", m.vrf.is_some()), ("match.vif", m.vif.is_some()), ("match.rule", m.rule.is_some())];
    if let Some((field, _)) = given.into_iter().find(|(_, given)| *given) {
        let message = "a capture is of one vif: its match takes addresses, ports and a protocol, no vrf, vif or rule";
        return Err(ApiError::new(code::INVALID, message).field(field));
    }
    m.ends()
}

/// Frames one `capture.read` returns at most: a quarter of a session's ring.
const CAPTURE_READ_PACKETS: usize = crate::capture::SESSION_FRAMES / 4;

/// Bytes of frames after which a `capture.read` stops, so that an answer
/// stays far below a client's message limit once in hex.
const CAPTURE_READ_BYTES: usize = 1 << 20;

/// A captured frame for `capture.read`: the frame in hex and, for a
/// received one, what vrouterd did with it, and why the fast lane left it
/// to the general path if it did (`general`).
fn captured_json(f: &crate::capture::Captured) -> Value {
    let mut v = json!({
        "time_ns": f.time_ns,
        "dir": match f.direction { crate::capture::Direction::In => "in", crate::capture::Direction::Out => "out" },
        "len": f.len,
        "data": crate::capture::to_hex(f.data()),
    });
    if let Some(verdict) = f.verdict {
        v["verdict"] = verdict_json(verdict);
    }
    if let Some(cause) = f.general {
        v["general"] = json!(cause.as_str());
    }
    v
}

/// Which way a traced packet went: `{"lane": "fast"}`, or `{"lane":
/// "general", "cause": C}`, the cause as `stats` counts it.
fn path_json(general: Option<crate::stats::GeneralCause>) -> Value {
    match general {
        None => json!({ "lane": "fast" }),
        Some(c) => json!({ "lane": "general", "cause": c.as_str() }),
    }
}

/// What the data path did with a frame, as `capture.read` and `trace` say it.
fn verdict_json(v: crate::pipeline::Verdict) -> Value {
    use crate::pipeline::Verdict;
    match v {
        Verdict::Tx(out) => json!({ "action": "tx", "vif": out }),
        Verdict::ToHost => json!({ "action": "to_host" }),
        Verdict::ToAgent(trap) => json!({ "action": "to_agent", "trap": trap.as_str() }),
        Verdict::Drop(r) => json!({ "action": "drop", "reason": r.as_str() }),
        Verdict::Held => json!({ "action": "held" }),
    }
}

/// How a line read ended.
enum Line {
    /// A whole message is in the buffer.
    Message,
    /// The message was longer than the limit; it was read and dropped.
    TooLarge,
    /// The client closed.
    Closed,
}

/// Reads one newline-terminated message of at most `max` bytes. A longer
/// one is consumed up to its newline and reported, so the connection stays
/// usable.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    let mut too_large = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(chunk) => chunk,
            // A read with a timeout (`IDLE_TIMEOUT`) is interrupted when
            // vrouterd is stopped and continued (SIGSTOP, a debugger): not
            // the client's doing, so its connection stays.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(Line::Closed);
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        let found = done != chunk.len() || chunk.last() == Some(&b'\n');
        if !too_large && buf.len() + part.len() <= max {
            buf.extend_from_slice(part);
        } else {
            too_large = true;
            buf.clear();
        }
        r.consume(done);
        if found {
            return Ok(if too_large { Line::TooLarge } else { Line::Message });
        }
    }
}

/// A connection that sends nothing for this long is closed, so that
/// abandoned clients do not hold their slot for ever. Clients that stay
/// connected (the agent, `vrctl --rate`) call far more often.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Serves one client until it closes, or sends nothing for [`IDLE_TIMEOUT`].
pub fn serve_client(control: &Control, stream: UnixStream) {
    let mut session = Session::default();
    serve_lines(control, &mut session, stream);
    control.end_capture(&mut session);
}

fn serve_lines(control: &Control, session: &mut Session, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(write_half) = stream.try_clone() else { return };
    let mut out = std::io::BufWriter::new(write_half);
    let mut input = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    loop {
        let reply = match read_line(&mut input, &mut buf, control.max_message) {
            Ok(Line::Closed) | Err(_) => return,
            Ok(Line::TooLarge) => answer(
                None,
                Err(ApiError::new(
                    code::TOO_LARGE,
                    format!("message longer than {} bytes; split the batch", control.max_message),
                )),
            ),
            Ok(Line::Message) if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Message) => control.handle(session, &buf),
        };
        if out.write_all(&reply).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// Binds the API socket: mode 0660, group `group` when given. A stale
/// socket file is replaced; a live one (another vrouterd) is an error.
/// On an error nothing is left behind: the group is found before the
/// socket is made, and a socket whose mode or group could not be set is
/// removed again.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let gid = group.map(group_of).transpose()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("{shown}: another vrouterd is serving this socket"));
        }
        std::fs::remove_file(path).map_err(|e| format!("{shown}: {e}"))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
    let owned = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .and_then(|_| gid.map_or(Ok(()), |gid| std::os::unix::fs::chown(path, None, Some(gid))));
    if let Err(e) = owned {
        let _ = std::fs::remove_file(path);
        return Err(format!("{shown}: {e}"));
    }
    Ok(listener)
}

/// The id of group `name` (`api.group`), or why there is none.
pub fn group_of(name: &str) -> Result<u32, String> {
    group_id(name).ok_or_else(|| format!("api.group: no group named {name:?}"))
}

fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

/// Accepts clients forever, each on its own thread, at most `max_clients`
/// at a time; one more is told so and closed.
pub fn serve(control: Arc<Control>, listener: UnixListener, max_clients: usize) {
    let refuse = |mut stream: UnixStream| {
        let msg = answer(
            None,
            Err(ApiError::new(code::TOO_MANY_CLIENTS, format!("vrouterd serves {max_clients} clients at a time"))),
        );
        let _ = stream.write_all(&msg).and_then(|_| stream.write_all(b"\n"));
    };
    accept_bounded(listener.incoming(), max_clients, "vrouter-api", move |s| serve_client(&control, s), refuse);
}

/// Accepts connections from `incoming` until it ends, each handled by
/// `handle` on a thread of its own (named `name`), at most `max` at a
/// time; one more is given to `refuse`, on the accepting thread, and
/// closed. The API socket's and the metrics port's way: a client that
/// stalls holds only its own thread.
pub(crate) fn accept_bounded<S: Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>>,
    max: usize,
    name: &str,
    handle: impl Fn(S) + Send + Sync + 'static,
    refuse: impl Fn(S),
) {
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    for stream in incoming {
        let Ok(stream) = stream else { continue };
        // Only this thread adds, so a load then an add cannot overshoot.
        if open.load(Ordering::Relaxed) >= max {
            refuse(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (handle, done) = (Arc::clone(&handle), Arc::clone(&open));
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            handle(stream);
            done.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Starts [`serve`] on its own thread.
pub fn spawn(control: Arc<Control>, listener: UnixListener, max_clients: usize) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vrouter-api-accept".into())
        .spawn(move || serve(control, listener, max_clients))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_an_oversized_one_leaves_the_stream_usable() {
        let data = b"{\"a\":1}\n0123456789abcdef\n{\"b\":2}\npartial";
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut r, &mut buf, 10).unwrap(), Line::Message));
        assert_eq!(buf, b"{\"a\":1}");
        assert!(matches!(read_line(&mut r, &mut buf, 10).unwrap(), Line::TooLarge));
        assert!(matches!(read_line(&mut r, &mut buf, 10).unwrap(), Line::Message));
        assert_eq!(buf, b"{\"b\":2}");
        assert!(matches!(read_line(&mut r, &mut buf, 10).unwrap(), Line::Closed));
    }

    /// A reader whose every other read is interrupted, as a read with a
    /// timeout is when the process is stopped and continued.
    struct Interrupting<R> {
        inner: R,
        calls: usize,
    }

    impl<R: std::io::Read> std::io::Read for Interrupting<R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            self.inner.read(out)
        }
    }

    #[test]
    fn an_interrupted_read_is_retried_not_taken_for_a_closed_client() {
        let data = b"{\"a\":1}\n{\"b\":2}\n";
        let mut r = BufReader::with_capacity(4, Interrupting { inner: &data[..], calls: 0 });
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut r, &mut buf, 64).unwrap(), Line::Message));
        assert_eq!(buf, b"{\"a\":1}");
        assert!(matches!(read_line(&mut r, &mut buf, 64).unwrap(), Line::Message));
        assert_eq!(buf, b"{\"b\":2}");
        assert!(matches!(read_line(&mut r, &mut buf, 64).unwrap(), Line::Closed));
    }
}
