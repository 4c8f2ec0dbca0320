//! vrouterd: configuration, start-up, the worker threads, signals and
//! systemd readiness, around the pipeline and the AF_XDP ports.
//!
//! Start-up checks the configuration and the tables file completely before
//! it touches any interface; a mistake names the file, the line and the
//! problem, and the process exits non-zero.

pub mod config;
mod notify;

use crate::api::schema::{Defaults, TablesDef};
use crate::io::bpf::{Attachment, Program, XskMap};
use crate::io::worker::{Port, PortCommand, Worker};
use crate::io::xsk::{XskConfig, XskSocket};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::tables::{Tables, TablesWriter, VifKind};
use config::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Why the daemon could not start or run.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

fn fail(msg: impl Into<String>) -> DaemonError {
    DaemonError(msg.into())
}

/// Tunnel next hops whose MAC comes from the neighbour table.
type Resolved = Vec<(crate::tables::NhId, std::net::Ipv4Addr)>;

/// Reads the tables file named by the configuration into a batch.
fn load_tables(cfg: &Config) -> Result<(Vec<crate::tables::Op>, Resolved), DaemonError> {
    let Some(path) = &cfg.tables.file else { return Ok((Vec::new(), Vec::new())) };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let def = TablesDef::from_toml(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let defaults = Defaults { router_mac: PipelineConfig::default().router_mac, underlay: cfg.node.underlay };
    let ops = def.add_ops(&defaults).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok((ops, def.resolved_tunnels()))
}

/// Points tunnels at their underlay next hop's current MAC, from the
/// kernel's neighbour table; asks the kernel to resolve the ones it does
/// not know yet. One batch for all the changes. Returns how many tunnels
/// are still unresolved.
fn resolve_tunnels(writer: &mut TablesWriter, tunnels: &Resolved) -> usize {
    use crate::tables::{NextHop, Object, Op, Tunnel};
    if tunnels.is_empty() {
        return 0;
    }
    let neighbors = match crate::io::neigh::dump() {
        Ok(n) => n,
        Err(e) => {
            warn!("reading the neighbour table: {e}");
            return tunnels.len();
        }
    };
    let mut unresolved = 0;
    let mut ops = Vec::new();
    for &(id, dip) in tunnels {
        let Some(NextHop::Tunnel(t)) = writer.tables().nexthop(id) else { continue };
        match neighbors.iter().find(|n| n.ip == dip) {
            Some(n) if n.mac != t.dmac => {
                info!(nh = id, remote = %dip, mac = %n.mac, "tunnel next hop resolved");
                ops.push(Op::Update(Object::NextHop(
                    id,
                    NextHop::Tunnel(Tunnel::new(t.oif, t.encap, t.sip, t.dip, n.mac)),
                )));
            }
            Some(_) => {}
            None => {
                unresolved += 1;
                if let Err(e) = crate::io::neigh::probe(dip) {
                    warn!(remote = %dip, "probing the neighbour: {e}");
                }
            }
        }
    }
    if !ops.is_empty() {
        if let Err(e) = writer.apply(&ops) {
            error!("updating tunnel MACs: {e}");
        }
    }
    unresolved
}

/// Checks the configuration and tables without touching any interface.
pub fn check(cfg: &Config) -> Result<TablesWriter, DaemonError> {
    prepare(cfg).map(|(writer, _)| writer)
}

/// The checked tables, and the tunnels whose MAC is to be resolved.
fn prepare(cfg: &Config) -> Result<(TablesWriter, Resolved), DaemonError> {
    let (ops, resolved) = load_tables(cfg)?;
    let (mut writer, _) = TablesWriter::new(cfg.limits.to_limits());
    writer.apply(&ops).map_err(|e| {
        let file = cfg.tables.file.as_ref().map_or("tables".into(), |p| p.display().to_string());
        fail(format!("{file}: {e}"))
    })?;
    let t = writer.tables();
    let fabric = t.vifs().find(|v| v.kind == VifKind::Fabric);
    if let Some(f) = fabric {
        if f.name != cfg.node.fabric {
            return Err(fail(format!(
                "the fabric vif is named {:?} in the tables but the configuration's node.fabric is {:?}",
                f.name, cfg.node.fabric
            )));
        }
    }
    Ok((writer, resolved))
}

/// A port's XDP side; dropping it detaches the program.
type Attached = (Attachment, XskMap);

/// The vifs that get an AF_XDP port.
fn port_vifs(tables: &Tables) -> Vec<crate::tables::Vif> {
    tables.vifs().filter(|v| matches!(v.kind, VifKind::Fabric | VifKind::Virtual)).cloned().collect()
}

/// Opens the ports of `vif`, one per active receive queue, on the worker's
/// UMEM when `share` is given (else the first socket registers it), and
/// attaches its XDP program.
/// Queue `q` of every port belongs to worker `q % workers`; each worker's
/// sockets share that worker's UMEM (`shares[w]`, set by its first socket).
fn open_port(
    cfg: &Config,
    vif: &crate::tables::Vif,
    shares: &mut [Option<crate::io::xsk::UmemShare>],
) -> Result<(Vec<(usize, Port)>, Attached), DaemonError> {
    let what = |e: &dyn std::fmt::Display| fail(format!("vif {} ({}): {e}", vif.index, vif.name));
    let idx = crate::io::ifindex(&vif.name).map_err(|e| what(&e))?;
    let queues = crate::io::rx_queues(&vif.name);
    let xcfg = XskConfig { frames: cfg.dataplane.frames, mode: cfg.dataplane.bind_mode(), ..XskConfig::default() };
    let map = XskMap::new(queues).map_err(|e| what(&e))?;
    let mut ports = Vec::new();
    for q in 0..queues {
        let w = q as usize % shares.len().max(1);
        let sock = match &shares[w] {
            Some(s) => XskSocket::open_shared(idx, q, xcfg, s),
            None => XskSocket::open(idx, q, xcfg),
        }
        .map_err(|e| what(&format!("queue {q}: {e}")))?;
        if shares[w].is_none() {
            shares[w] = Some(sock.share().map_err(|e| what(&e))?);
        }
        map.set(q, sock.raw_fd()).map_err(|e| what(&e))?;
        info!(
            vif = vif.index,
            interface = %vif.name,
            queue = q,
            worker = w,
            copy = if sock.is_zerocopy() { "zero-copy" } else { "copy" },
            "socket bound"
        );
        ports.push((w, Port { vif: vif.index, sock }));
    }
    let prog = if vif.kind == VifKind::Fabric {
        Program::redirect_tunnels(&map, cfg.node.underlay)
    } else {
        Program::redirect_all(&map)
    }
    .map_err(|e| what(&e))?;
    let link = Attachment::new(&prog, idx, cfg.dataplane.xdp_mode()).map_err(|e| what(&e))?;
    let got = crate::io::neigh::xdp_attached(idx).ok().flatten().unwrap_or("unknown");
    info!(vif = vif.index, interface = %vif.name, queues, asked = ?cfg.dataplane.xdp_mode(), xdp = got, "port up");
    Ok((ports, (link, map)))
}

/// Runs the daemon until SIGTERM or SIGINT. SIGHUP reloads the tables file.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let (mut writer, mut tunnels) = prepare(&cfg)?;
    // Give the kernel a moment to resolve the remote nodes before we start.
    for _ in 0..10 {
        if resolve_tunnels(&mut writer, &tunnels) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| fail(format!("signal handler: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .map_err(|e| fail(format!("signal handler: {e}")))?;

    let handle = writer.handle();
    let workers = cfg.dataplane.cores.len().max(1);
    let mut ports: Vec<Vec<Port>> = (0..workers).map(|_| Vec::new()).collect();
    let mut attached = std::collections::BTreeMap::new();
    let mut shares: Vec<Option<crate::io::xsk::UmemShare>> = vec![None; workers];
    for vif in port_vifs(writer.tables()) {
        let (vif_ports, xdp) = open_port(&cfg, &vif, &mut shares)?;
        for (w, port) in vif_ports {
            ports[w].push(port);
        }
        attached.insert(vif.index, xdp);
    }
    // Worker 0 owns queue 0 of every port, so the others hand it frames
    // for ports they have no socket on.
    let handoffs: Vec<_> = (1..workers).map(|_| crate::io::worker::Handoff::new(1024)).collect();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    for (w, worker_ports) in ports.into_iter().enumerate() {
        let (control, commands) = std::sync::mpsc::channel();
        controls.push(control);
        let core = cfg.dataplane.cores.get(w).copied();
        let worker_stop = stop.clone();
        let pipeline = Pipeline::new(PipelineConfig::default(), writer.tables().limits());
        let mut worker = Worker::new(worker_ports, pipeline, handle.clone()).with_control(commands);
        worker = if w == 0 {
            worker.with_handoff_in(handoffs.clone())
        } else {
            worker.with_handoff_out(handoffs[w - 1].clone())
        };
        let thread = std::thread::Builder::new()
            .name(format!("vrouter-worker-{w}"))
            .spawn(move || {
                if let Some(c) = core {
                    if let Err(e) = crate::io::pin_to_core(c) {
                        warn!("worker {w} not pinned to core {c}: {e}");
                    }
                }
                while !worker_stop.load(Ordering::Relaxed) {
                    match worker.poll() {
                        Ok(0) => {
                            let _ = worker.wait(10);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            error!("worker {w}: {e}");
                            break;
                        }
                    }
                }
                worker
            })
            .map_err(|e| fail(format!("starting worker {w}: {e}")))?;
        threads.push(thread);
    }
    info!(workers, cores = ?cfg.dataplane.cores, "workers started");

    let notifier = notify::Notifier::from_env();
    notifier.ready();
    info!(node = %cfg.node.underlay, fabric = %cfg.node.fabric, "vrouterd ready");
    let mut last_ping = Instant::now();
    let mut last_resolve = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if notifier.watchdog_due(last_ping) {
            notifier.watchdog();
            last_ping = Instant::now();
        }
        if reload.swap(false, Ordering::Relaxed) {
            match reload_tables(&cfg, &mut writer) {
                Ok((g, resolved)) => {
                    info!(generation = g, "tables reloaded");
                    tunnels = resolved;
                    resolve_tunnels(&mut writer, &tunnels);
                    sync_ports(&cfg, writer.tables(), &mut attached, &controls, &mut shares);
                }
                Err(e) => error!("reload refused, tables unchanged: {e}"),
            }
        }
        if last_resolve.elapsed() >= Duration::from_secs(1) {
            resolve_tunnels(&mut writer, &tunnels);
            last_resolve = Instant::now();
        }
        writer.reclaim();
        if threads.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    notifier.stopping();
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for t in threads {
        done.push(t.join().map_err(|_| fail("a worker panicked"))?);
    }
    for (w, worker) in done.iter().enumerate() {
        let c = worker.counters();
        info!(
            worker = w,
            rx = c.rx,
            tx = c.tx,
            moved = c.moved,
            copied = c.copied,
            handed_off = c.handed_off,
            drops = worker.pipeline().stats().total_drops(),
            "worker stopped"
        );
        for (vif, xs, free) in worker.port_stats() {
            if let Some(x) = xs {
                info!(
                    worker = w,
                    vif,
                    rx_dropped = x.rx_dropped,
                    rx_ring_full = x.rx_ring_full,
                    fill_ring_empty = x.rx_fill_ring_empty,
                    tx_invalid = x.tx_invalid_descs,
                    free_frames = free,
                    "af_xdp counters"
                );
            }
        }
    }
    let s = crate::stats::Stats::sum(done.iter().map(|w| w.pipeline().stats()));
    for v in writer.tables().vifs() {
        let c = s.vif(v.index);
        info!(
            vif = v.index,
            interface = %v.name,
            rx_packets = c.rx_packets,
            tx_packets = c.tx_packets,
            rx_errors = c.rx_errors,
            drops = c.drops,
            "vif counters"
        );
    }
    for r in crate::stats::DropReason::ALL {
        if s.dropped(*r) > 0 {
            info!(reason = r.as_str(), count = s.dropped(*r), "drops");
        }
    }
    drop(done);
    drop(attached);
    info!("all XDP programs detached; vrouterd stopped");
    Ok(())
}

/// Opens ports for vifs the tables gained and closes those of vifs they
/// lost, while the worker keeps forwarding for the rest.
fn sync_ports(
    cfg: &Config,
    tables: &Tables,
    attached: &mut std::collections::BTreeMap<u32, Attached>,
    controls: &[std::sync::mpsc::Sender<PortCommand>],
    shares: &mut [Option<crate::io::xsk::UmemShare>],
) {
    let wanted = port_vifs(tables);
    let gone: Vec<u32> = attached.keys().copied().filter(|i| !wanted.iter().any(|v| v.index == *i)).collect();
    for vif in gone {
        // Detach first: the interface's traffic goes back to the kernel
        // before the socket closes.
        attached.remove(&vif);
        for control in controls {
            let _ = control.send(PortCommand::Remove(vif));
        }
        info!(vif, "port down");
    }
    let new: Vec<_> = wanted.into_iter().filter(|v| !attached.contains_key(&v.index)).collect();
    for vif in &new {
        match open_port(cfg, vif, shares) {
            Ok((ports, xdp)) => {
                attached.insert(vif.index, xdp);
                for (w, port) in ports {
                    let _ = controls[w].send(PortCommand::Add(Box::new(port)));
                }
            }
            Err(e) => error!("{e}"),
        }
    }
}

/// Replaces the tables with the file's: one batch that deletes what the file
/// no longer has and adds or updates the rest.
fn reload_tables(cfg: &Config, writer: &mut TablesWriter) -> Result<(u64, Resolved), DaemonError> {
    use crate::tables::{Object, ObjectKey, Op};
    let (wanted, resolved) = load_tables(cfg)?;
    let t = writer.tables().clone();
    let mut ops = Vec::new();
    // Routes out first, then labels, next hops, vifs and VRFs: users before the used.
    for v in t.vrfs() {
        let mut after = None;
        while let Some(page) = writer.routes_page(v.id, after, 10_000) {
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.prefix);
            ops.extend(page.into_iter().map(|r| Op::Delete(ObjectKey::Route(r.vrf, r.prefix))));
        }
    }
    ops.extend(t.labels().map(|(l, _)| Op::Delete(ObjectKey::Label(l))));
    let nhs: Vec<_> = t.nexthops().map(|(id, nh)| (id, matches!(nh, crate::tables::NextHop::Composite(_)))).collect();
    ops.extend(nhs.iter().filter(|(id, c)| *c && *id != 0).map(|(id, _)| Op::Delete(ObjectKey::NextHop(*id))));
    ops.extend(nhs.iter().filter(|(id, c)| !*c && *id != 0).map(|(id, _)| Op::Delete(ObjectKey::NextHop(*id))));
    // Vifs and VRFs the file still has are updated in place; the others go.
    let in_file_vif = |i: u32| wanted.iter().any(|o| matches!(o, Op::Add(Object::Vif(v)) if v.index == i));
    let in_file_vrf = |i: u32| wanted.iter().any(|o| matches!(o, Op::Add(Object::Vrf(v)) if v.id == i));
    let keep_vifs: Vec<u32> = t.vifs().map(|v| v.index).filter(|i| in_file_vif(*i)).collect();
    let keep_vrfs: Vec<u32> = t.vrfs().map(|v| v.id).filter(|i| in_file_vrf(*i)).collect();
    ops.extend(t.vifs().filter(|v| !keep_vifs.contains(&v.index)).map(|v| Op::Delete(ObjectKey::Vif(v.index))));
    ops.extend(t.vrfs().filter(|v| !keep_vrfs.contains(&v.id)).map(|v| Op::Delete(ObjectKey::Vrf(v.id))));
    for op in wanted {
        let op = match op {
            Op::Add(Object::Vif(v)) if keep_vifs.contains(&v.index) => Op::Update(Object::Vif(v)),
            Op::Add(Object::Vrf(v)) if keep_vrfs.contains(&v.id) => Op::Update(Object::Vrf(v)),
            other => other,
        };
        ops.push(op);
    }
    let g = writer.apply(&ops).map_err(|e| fail(e.to_string()))?;
    Ok((g, resolved))
}
