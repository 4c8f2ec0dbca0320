//! Loading routes through the API, timed: how long a control plane waits
//! for a million routes, against the writer alone as the baseline.

use crate::api::client::{Client, ClientError};
use crate::api::schema::Defaults;
use crate::api::server::{Control, NodeInfo};
use crate::stats::StatsBoard;
use crate::tables::{Limits, Object, Op, RouteSpec, RouteTarget, TablesWriter, VrfSpec};
use serde_json::json;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadParams {
    /// Routes.
    pub routes: u32,
    /// Routes per batch.
    pub batch: u32,
    /// The VRF they go to.
    pub vrf: u32,
    /// The next hop they point at.
    pub nh: u32,
    /// The first route's address; routes are consecutive /32s from it.
    pub base: Ipv4Addr,
    /// Leave the routes in place (no delete pass), to measure forwarding
    /// with a big table.
    pub keep: bool,
}

/// How long it took.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    /// Adding every route through the API.
    pub add: Duration,
    /// Deleting them again through the API; `None` when kept.
    pub delete: Option<Duration>,
}

fn prefix(p: &LoadParams, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(p.base).wrapping_add(i))
}

/// One batch's `params`, written straight as text: building a JSON tree
/// per route would measure the client, not the API.
fn batch_text(p: &LoadParams, from: u32, to: u32, add: bool) -> String {
    let mut s = String::with_capacity(((to - from) * 64) as usize + 16);
    s.push_str("{\"ops\":[");
    for i in from..to {
        if i > from {
            s.push(',');
        }
        let a = prefix(p, i);
        let _ = if add {
            write!(s, "{{\"add\":{{\"route\":{{\"vrf\":{},\"prefix\":\"{a}/32\",\"nh\":{}}}}}}}", p.vrf, p.nh)
        } else {
            write!(s, "{{\"delete\":{{\"route\":{{\"vrf\":{},\"prefix\":\"{a}/32\"}}}}}}", p.vrf)
        };
    }
    s.push_str("]}");
    s
}

/// Adds `p.routes` routes through the API at `socket`, then deletes them
/// unless `p.keep`.
/// Batches are pipelined two deep, so the client writes the next batch
/// while vrouterd applies the last.
pub fn load(socket: &Path, p: &LoadParams) -> Result<LoadResult, ClientError> {
    let mut c = Client::connect(socket, "vrpktgen route-load")?;
    c.set_timeout(Some(Duration::from_secs(120)));
    let mut pass = |add: bool| -> Result<Duration, ClientError> {
        let start = Instant::now();
        let mut pending = 0;
        let mut from = 0;
        while from < p.routes {
            let to = (from + p.batch).min(p.routes);
            c.send_call("batch", &batch_text(p, from, to, add))?;
            pending += 1;
            if pending == 2 {
                c.receive_result()?;
                pending -= 1;
            }
            from = to;
        }
        for _ in 0..pending {
            c.receive_result()?;
        }
        Ok(start.elapsed())
    };
    let add = pass(true)?;
    let delete = if p.keep { None } else { Some(pass(false)?) };
    Ok(LoadResult { add, delete })
}

/// An API server with no data path, on a socket in a fresh temporary
/// folder, holding VRF `vrf`: for measuring the API alone.
pub fn local_server(vrf: u32) -> Result<PathBuf, String> {
    let limits = Limits { routes_per_vrf: 2_000_000, ..Limits::default() };
    let (mut writer, _) = TablesWriter::new(limits);
    writer
        .apply(&[Op::Add(Object::Vrf(VrfSpec { id: vrf, name: "load".into(), gateway_v4: None, gateway_v6: None }))])
        .map_err(|e| e.to_string())?;
    let defaults =
        Defaults { router_mac: crate::pipeline::PipelineConfig::default().router_mac, underlay: Ipv4Addr::LOCALHOST };
    let node =
        NodeInfo { boot_id: NodeInfo::new_boot_id(), underlay: Ipv4Addr::LOCALHOST, fabric: "-".into(), cores: vec![] };
    let control = Arc::new(Control::new(writer, defaults, StatsBoard::new(1, limits.vifs, limits.vrfs), node));
    let dir = std::env::temp_dir().join(format!("vrpktgen-{}", std::process::id()));
    let sock = dir.join("api.sock");
    let listener = crate::api::server::bind(&sock, None)?;
    crate::api::server::spawn(Arc::clone(&control), listener, 4).map_err(|e| e.to_string())?;
    Ok(sock)
}

/// The baseline: the same routes, in the same batches, straight into a
/// `TablesWriter` with no API in between.
pub fn direct(p: &LoadParams) -> Duration {
    let (mut w, _) = TablesWriter::new(Limits { routes_per_vrf: 2_000_000, ..Limits::default() });
    let _ = w.apply(&[Op::Add(Object::Vrf(VrfSpec {
        id: p.vrf,
        name: "load".into(),
        gateway_v4: None,
        gateway_v6: None,
    }))]);
    let start = Instant::now();
    let mut from = 0;
    while from < p.routes {
        let to = (from + p.batch).min(p.routes);
        let ops: Vec<Op> = (from..to)
            .map(|i| {
                let prefix = crate::tables::Prefix::host_v4(prefix(p, i));
                Op::Add(Object::Route(RouteSpec {
                    network: None,
                    vrf: p.vrf,
                    prefix,
                    target: RouteTarget { nh: p.nh, label: RouteTarget::NO_LABEL },
                }))
            })
            .collect();
        let _ = w.apply(&ops);
        from = to;
    }
    start.elapsed()
}

/// `vrouter` ids of what `load` adds, for checks: the route count in VRF `vrf`.
pub fn route_count(socket: &Path, vrf: u32) -> Result<u64, ClientError> {
    let mut c = Client::connect(socket, "vrpktgen")?;
    let v = c.call("get", json!({ "vrf": vrf }))?;
    Ok(v["status"]["routes_v4"].as_u64().unwrap_or(0))
}
