//! vrouterd: configuration, start-up, the worker threads, signals and
//! systemd readiness, around the pipeline and the AF_XDP ports.
//!
//! Start-up checks the configuration and the tables file completely before
//! it touches any interface; a mistake names the file, the line and the
//! problem, and the process exits non-zero. After start-up, tables change
//! only through the API (`crate::api::server`), which shares the writer
//! with this module's housekeeping: tunnel MACs and port changes.

mod advice;
pub mod config;
mod metrics;
mod notify;

use crate::api::schema::{Defaults, TablesDef};
use crate::api::server::{Control, NodeInfo};
use crate::io::bpf::{Attachment, Program, XskMap};
use crate::io::netlink::{Link, LinkEvents};
use crate::io::worker::{Port, PortCommand, Worker};
use crate::io::xsk::{Umem, UmemShare, XskConfig, XskSocket};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::stats::{DropReason, SocketCounters, StatsBoard, WorkerIo, PUBLISH_EVERY};
use crate::tables::{Tables, TablesWriter, VifKind};
use crate::wire::MacAddr;
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
/// not know yet. One batch for all the changes. The tables lock is not held
/// while the kernel is asked. Returns how many tunnels are still unresolved.
fn resolve_tunnels(control: &Control, said: &mut ProbeErrors) -> usize {
    use crate::tables::{NextHop, Object, Op, Tunnel};
    let remotes: Vec<std::net::Ipv4Addr> = {
        let st = control.lock();
        let t = st.writer.tables();
        st.resolved
            .iter()
            .filter_map(|id| match t.nexthop(*id) {
                Some(NextHop::Tunnel(tun)) => Some(tun.dip),
                _ => None,
            })
            .collect()
    };
    if remotes.is_empty() {
        said.0.clear();
        return 0;
    }
    let neighbors = match crate::io::netlink::neighbors() {
        Ok(n) => n,
        Err(e) => {
            warn!("reading the neighbour table: {e}");
            return remotes.len();
        }
    };
    let mut unresolved = 0;
    for dip in &remotes {
        if neighbors.iter().any(|n| n.ip == *dip) {
            said.0.remove(dip);
            continue;
        }
        unresolved += 1;
        // Probed five times a second while unresolved, for as long as the
        // fabric is down: each remote's error said once, not each time.
        if let Err(e) = crate::io::netlink::probe(*dip) {
            let e = e.to_string();
            if said.0.get(dip) != Some(&e) {
                warn!(remote = %dip, "probing the neighbour: {e}");
                said.0.insert(*dip, e);
            }
        }
    }
    // Remotes no tunnel goes to any more are forgotten.
    said.0.retain(|ip, _| remotes.contains(ip));
    let mut st = control.lock();
    let mut ops = Vec::new();
    for &id in &st.resolved {
        let Some(NextHop::Tunnel(t)) = st.writer.tables().nexthop(id) else { continue };
        if let Some(n) = neighbors.iter().find(|n| n.ip == t.dip) {
            if n.mac != t.dmac {
                info!(nh = id, remote = %t.dip, mac = %n.mac, "tunnel next hop resolved");
                ops.push(Op::Update(Object::NextHop(
                    id,
                    NextHop::Tunnel(Tunnel::new(t.oif, t.encap, t.sip, t.dip, n.mac)),
                )));
            }
        }
    }
    if !ops.is_empty() {
        if let Err(e) = st.writer.apply(&ops) {
            error!("updating tunnel MACs: {e}");
        }
    }
    unresolved
}

/// The last error probing each unresolved remote gave, said once.
#[derive(Default)]
struct ProbeErrors(std::collections::BTreeMap<std::net::Ipv4Addr, String>);

/// Checks the configuration and tables without touching any interface.
pub fn check(cfg: &Config) -> Result<TablesWriter, DaemonError> {
    prepare(cfg).map(|(writer, _)| writer)
}

/// The checked tables, and the tunnels whose MAC is to be resolved.
fn prepare(cfg: &Config) -> Result<(TablesWriter, Resolved), DaemonError> {
    check_cores(&cfg.dataplane.cores, crate::io::allowed_cores())?;
    if let Some(g) = &cfg.api.group {
        crate::api::server::group_of(g).map_err(fail)?;
    }
    let (ops, resolved) = load_tables(cfg)?;
    let (mut writer, _) = TablesWriter::new(cfg.limits.to_limits());
    writer.set_node(&cfg.node.fabric, cfg.node.underlay);
    writer.apply(&ops).map_err(|e| {
        let file = cfg.tables.file.as_ref().map_or("tables".into(), |p| p.display().to_string());
        fail(format!("{file}: {e}"))
    })?;
    Ok((writer, resolved))
}

/// Refuses a worker core this process may not run on (`allowed`: a core
/// the machine lacks, or one outside its affinity), as DPDK and VPP refuse
/// theirs: such a worker would run unpinned, sharing a core unseen, where
/// a configuration made for another machine should be told at start.
fn check_cores(cores: &[usize], allowed: std::io::Result<Vec<usize>>) -> Result<(), DaemonError> {
    // Where the affinity cannot be read, pinning says what it finds.
    let Ok(allowed) = allowed else { return Ok(()) };
    match cores.iter().find(|c| !allowed.contains(c)) {
        Some(c) => Err(fail(format!(
            "dataplane.cores: core {c} is not one vrouterd may run on here (it may run on {})",
            core_list(&allowed)
        ))),
        None => Ok(()),
    }
}

/// Cores as a list of ranges, as `taskset -c` and `/proc/*/status` give them:
/// `0-3,8`.
fn core_list(cores: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        out.push(if i == j { cores[i].to_string() } else { format!("{}-{}", cores[i], cores[j]) });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// The API socket's file, bound by this vrouterd: removed when `run`
/// returns, whichever way (a clean stop, or a start that failed after
/// binding it), so that a client finds no vrouterd rather than a socket
/// nobody serves. The next start would replace it as stale anyway.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            warn!(socket = %self.0.display(), "API socket not removed: {e}");
        }
    }
}

/// How often ports that failed to open are tried again.
const PORT_RETRY: Duration = Duration::from_secs(2);

/// How soon after the last try a port that failed to open is tried again
/// when the kernel has news of a link (its interface may have come).
const PORT_RETRY_SOONEST: Duration = Duration::from_millis(250);

/// How often open ports' links are read when the kernel has told of no
/// change (it may drop news): an interface deleted (a pod gone before its
/// vif) has its port closed, one made again under its name gets a new
/// port, and a link's state, MTU and MAC are followed.
const PORT_CHECK: Duration = Duration::from_secs(1);

/// Said after a port's "Operation not permitted".
const PRIVILEGE_HINT: &str = " (vrouterd needs root, or the capabilities its systemd unit gives it: \
CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON, CAP_IPC_LOCK, CAP_SYS_ADMIN)";

/// A port's XDP side; dropping it detaches the program.
type Attached = (Attachment, XskMap);

/// An open port: the XDP side, the vif as it was opened (its interface,
/// that interface's index, and its kind), so that a vif updated onto
/// another interface or kind, or whose interface was deleted or made
/// again, has its port opened again; and what other sockets need to bind
/// to its sockets' UMEM (by worker).
struct OpenPort {
    interface: String,
    ifindex: u32,
    kind: VifKind,
    umems: Vec<(usize, UmemShare)>,
    /// What the log was last told of the port's link, so that each is
    /// said once.
    said: LinkWarnings,
    /// Its queues and their sockets, until `steer` points the XDP
    /// program's map at them: until then the program passes the
    /// interface's frames to the kernel, as before the port opened.
    unsteered: Vec<(u32, std::os::fd::RawFd)>,
    /// The longest frame its sockets receive: a UMEM frame's, or, bound
    /// for chains of them, a jumbo frame's (`io::jumbo::LONGEST`).
    longest: usize,
    _xdp: Attached,
}

impl OpenPort {
    /// Steers its queues to its sockets, once their workers have filled
    /// their fill rings (`Workers::add`): a frame the program redirects
    /// to a socket with none is dropped (fill_ring_empty).
    fn steer(&mut self) -> Result<(), String> {
        for (q, fd) in std::mem::take(&mut self.unsteered) {
            self._xdp.1.set(q, fd).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn serves(&self, vif: &crate::tables::Vif) -> bool {
        self.interface == vif.name && self.kind == vif.kind
    }

    /// The port's link among `links`, if its interface is still the one
    /// opened (not deleted, nor another of the same name).
    fn link<'a>(&self, links: &'a [Link]) -> Option<&'a Link> {
        links.iter().find(|l| l.ifindex == self.ifindex && l.name == self.interface)
    }

    /// The kernel's counters of the port's sockets, summed over its queues.
    fn socket_counters(&self) -> SocketCounters {
        let each = self.umems.iter().filter_map(|(_, s)| s.socket_counters().ok());
        each.fold(SocketCounters::default(), |sum, one| sum + one)
    }
}

/// What the log was told of a port's link.
#[derive(Default)]
struct LinkWarnings {
    /// An MTU above what the frames hold (0: none).
    mtu: u32,
    /// The interface's MAC and the fabric vif's, where they differ.
    mac: Option<(MacAddr, MacAddr)>,
}

/// How every port's sockets are made: the UMEM's frames per the
/// configuration, and their size.
fn xsk_config(cfg: &Config) -> XskConfig {
    XskConfig { frames: cfg.dataplane.frames, mode: cfg.dataplane.bind_mode(), ..XskConfig::default() }
}

/// Said when a port's link goes down.
const LINK_DOWN_EFFECT: &str =
    "nothing is sent on the port until its link is up (what is routed to it counts as the vif's TX DROPS in `vrctl vif list`)";

/// Follows the links of the open ports (`links`: the kernel's, just read):
/// a port's state in `vrctl vif` says when its link is down or has no
/// carrier, and each change is logged once, as is an MTU above what the
/// port can receive (`OpenPort::longest`).
fn follow_links(
    attached: &mut std::collections::BTreeMap<u32, OpenPort>,
    links: &[Link],
    tables: &Tables,
    control: &Control,
) {
    for (&vif, open) in attached.iter_mut() {
        let Some(link) = open.link(links) else { continue };
        // The fabric vif's MAC is the source of every tunnel frame: one
        // that is not the NIC's is a MAC the switch never learnt on this
        // port (port security drops it), and not the one the other nodes'
        // kernels resolve the node's address to.
        let configured = tables.vif(vif).map(|v| v.mac);
        let differ = match (open.kind, configured, link.mac) {
            (VifKind::Fabric, Some(ours), Some(nic)) if ours != nic => Some((ours, nic)),
            _ => None,
        };
        if let Some((ours, nic)) = differ.filter(|d| open.said.mac != Some(*d)) {
            warn!(
                vif,
                interface = %open.interface,
                "the fabric vif's MAC {ours} is not its interface's ({nic}): tunnels leave with a source MAC \
                 that is not the NIC's; give the vif the NIC's MAC"
            );
        }
        open.said.mac = differ;
        // A pod's link only: the fabric's may well be larger (jumbo
        // frames), its XDP program passing all but tunnels to the kernel,
        // and the tunnels are as long as the pods at their far ends send.
        let longest = open.longest;
        let most = longest.saturating_sub(crate::wire::ethernet::HEADER_LEN);
        if open.kind != VifKind::Fabric && link.mtu as usize > most && open.said.mtu != link.mtu {
            warn!(
                vif,
                interface = %open.interface,
                mtu = link.mtu,
                "the interface's MTU is above the {most} its port can receive (frames of up to {longest} bytes): the kernel \
                 drops longer frames before vrouterd sees them (vrctl vif get {vif}: kernel rx_dropped); \
                 give it an MTU of {most} or less"
            );
            open.said.mtu = link.mtu;
        }
        let state = link.state();
        let was = control.port_state(vif);
        if was.as_deref() == Some(state) {
            continue;
        }
        if state == "up" {
            info!(vif, interface = %open.interface, "link up");
        } else {
            warn!(vif, interface = %open.interface, "{state}: {LINK_DOWN_EFFECT}");
        }
        control.set_port_state(vif, Some(state.to_string()));
    }
}

/// Each worker's UMEM: its memory, for good (`umem`), and a socket bound
/// to it that a new port's sockets can share it through (`anchor`), one
/// of an open port's; with no port of the worker open, the next one
/// registers the same memory again. One UMEM a worker, for the process's
/// life: frames move between its ports by address, and a frame a worker
/// holds stays valid whatever port closes.
struct WorkerUmems {
    umem: Vec<Option<Umem>>,
    anchor: Vec<Option<UmemShare>>,
}

impl WorkerUmems {
    fn new(workers: usize) -> WorkerUmems {
        WorkerUmems { umem: vec![None; workers], anchor: vec![None; workers] }
    }

    /// Anchors taken from the ports still open: none may keep a closed
    /// port's socket bound.
    fn anchor_on(&mut self, attached: &std::collections::BTreeMap<u32, OpenPort>) {
        for (w, anchor) in self.anchor.iter_mut().enumerate() {
            *anchor = attached.values().flat_map(|o| &o.umems).find(|(at, _)| *at == w).map(|(_, s)| s.clone());
        }
    }
}

/// The vifs that get an AF_XDP port.
fn port_vifs(tables: &Tables) -> Vec<crate::tables::Vif> {
    tables.vifs().filter(|v| matches!(v.kind, VifKind::Fabric | VifKind::Virtual)).cloned().collect()
}

/// Opens the ports of `vif`, one per active receive queue, each on its
/// worker's UMEM, and attaches its XDP program, which passes the
/// interface's frames to the kernel until the port is steered to
/// (`OpenPort::steer`); or says why not, without
/// naming the vif (see `port_not_opened`). Queue `q` of vif `v`'s port
/// belongs to worker `(v + q) % workers` (`worker_of`); each worker's
/// sockets share that worker's UMEM (`umems`, made by its first socket).
fn open_port(
    cfg: &Config,
    vif: &crate::tables::Vif,
    umems: &mut WorkerUmems,
) -> Result<(Vec<(usize, Port)>, OpenPort), String> {
    // A port that fails halfway closes the sockets it opened: the UMEMs
    // they made or anchored are forgotten with them, as if never opened.
    let before = (umems.umem.clone(), umems.anchor.clone());
    let opened = open_port_sockets(cfg, vif, umems);
    if opened.is_err() {
        (umems.umem, umems.anchor) = before;
    }
    opened
}

/// A port that did not open (`why`) is `down` in `vrctl vif` with why
/// (which shows the vif's number and name already), said in the log once,
/// not at every retry.
fn port_not_opened(control: &Control, vif: &crate::tables::Vif, why: &str) {
    let state = format!("down: {why}");
    if control.port_state(vif.index).as_deref() != Some(state.as_str()) {
        error!("{}", port_error(vif, why));
    }
    control.set_port_state(vif.index, Some(state));
}

/// A port's error as the log and the exit say it: whose it is, and why.
fn port_error(vif: &crate::tables::Vif, why: &str) -> String {
    format!("vif {} ({}): {why}", vif.index, vif.name)
}

fn open_port_sockets(
    cfg: &Config,
    vif: &crate::tables::Vif,
    umems: &mut WorkerUmems,
) -> Result<(Vec<(usize, Port)>, OpenPort), String> {
    // Refused for want of privilege: say what it takes, not only the errno.
    let denied = |e: &std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { PRIVILEGE_HINT } else { "" };
        format!("{e}{hint}")
    };
    let idx = crate::io::ifindex(&vif.name).map_err(|e| e.to_string())?;
    let queues = crate::io::rx_queues(&vif.name);
    let xcfg = xsk_config(cfg);
    let map = XskMap::new(queues).map_err(|e| denied(&e))?;
    let mut ports = Vec::new();
    let mut shares = Vec::new();
    let mut unsteered = Vec::new();
    let mut longest = crate::io::jumbo::LONGEST;
    for q in 0..queues {
        let w = crate::io::worker::worker_of(vif.index, q, umems.anchor.len());
        let sock = match (&umems.anchor[w], &umems.umem[w]) {
            (Some(s), _) => XskSocket::open_shared(idx, q, xcfg, s),
            (None, Some(u)) => XskSocket::open_on(idx, q, xcfg, u),
            (None, None) => XskSocket::open(idx, q, xcfg),
        }
        .map_err(|e| denied(&std::io::Error::new(e.kind(), format!("queue {q}: {e}"))))?;
        let share = sock.share().map_err(|e| e.to_string())?;
        umems.umem[w].get_or_insert_with(|| sock.umem());
        umems.anchor[w].get_or_insert_with(|| share.clone());
        shares.push((w, share));
        unsteered.push((q, sock.raw_fd()));
        if !sock.is_multi_buffer() {
            longest = xcfg.longest_rx_frame();
        }
        info!(
            vif = vif.index,
            interface = %vif.name,
            queue = q,
            worker = w,
            copy = if sock.is_zerocopy() { "zero-copy" } else { "copy" },
            jumbo = sock.is_multi_buffer(),
            "socket bound"
        );
        ports.push((w, Port::new(vif.index, sock)));
    }
    let prog = if vif.kind == VifKind::Fabric {
        Program::redirect_tunnels(&map, cfg.node.underlay)
    } else {
        Program::redirect_all(&map)
    }
    .map_err(|e| denied(&e))?;
    let link = Attachment::new(&prog, idx, cfg.dataplane.xdp_mode()).map_err(|e| denied(&e))?;
    let got = crate::io::netlink::xdp_attached(idx).ok().flatten().unwrap_or("unknown");
    info!(vif = vif.index, interface = %vif.name, queues, asked = ?cfg.dataplane.xdp_mode(), xdp = got, "port up");
    let open = OpenPort {
        interface: vif.name.clone(),
        ifindex: idx,
        kind: vif.kind,
        umems: shares,
        said: LinkWarnings::default(),
        unsteered,
        longest,
        _xdp: (link, map),
    };
    Ok((ports, open))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let (writer, tunnels) = prepare(&cfg)?;
    let workers = cfg.dataplane.cores.len().max(1);
    let limits = *writer.tables().limits();
    // One pipeline setting for every worker, and for the API's traces.
    let pipeline_config = PipelineConfig::default();
    let defaults = Defaults { router_mac: pipeline_config.router_mac, underlay: cfg.node.underlay };
    let node = NodeInfo {
        boot_id: NodeInfo::new_boot_id(),
        underlay: cfg.node.underlay,
        fabric: cfg.node.fabric.clone(),
        cores: cfg.dataplane.cores.clone(),
    };
    // Counters, per worker its own and the board's copy, sized by the
    // limits: as the flow table below, limits the machine cannot hold are
    // the operator's to lower, told before anything is touched.
    let counter_bytes = StatsBoard::bytes_per_worker(limits.vifs, limits.vrfs);
    let counters = |e: std::collections::TryReserveError| {
        fail(format!(
            "limits.vifs = {} and limits.vrfs = {}: their counters ({} MiB a worker) cannot be had: {e}; lower them",
            limits.vifs,
            limits.vrfs,
            counter_bytes >> 20
        ))
    };
    let board = StatsBoard::try_new(workers, limits.vifs, limits.vrfs).map_err(counters)?;
    let pipelines = (0..workers)
        .map(|_| Pipeline::try_new(pipeline_config, &limits))
        .collect::<Result<Vec<_>, _>>()
        .map_err(counters)?;
    info!(workers, mib_each = counter_bytes >> 20, "counters allocated");
    // The largest table, sized by the configuration alone: a capacity the
    // machine cannot hold is the operator's to lower, told before anything
    // is touched.
    let flows = crate::flow::FlowTable::try_new(cfg.flows.to_config(), limits.vifs, limits.vrfs).map_err(|e| {
        fail(format!("flows.capacity = {}: the flow table cannot be had: {e}; lower it", cfg.flows.capacity))
    })?;
    let flows = Arc::new(flows);
    info!(pairs = cfg.flows.capacity, mib = flows.memory_bytes() >> 20, "flow table allocated");
    // Workers and the API read flow times from one origin.
    let epoch = Instant::now();
    let tap = Arc::new(crate::capture::Tap::new());
    let control = Arc::new(
        Control::new(writer, defaults, Arc::clone(&board), node)
            .with_max_message(cfg.api.max_message)
            .with_flows(Arc::clone(&flows), epoch)
            .with_tap(Arc::clone(&tap))
            .with_pipeline(pipeline_config),
    );
    control.lock().resolved = tunnels.iter().map(|(id, _)| *id).collect();
    // The API socket and the metrics port first: if another vrouterd holds
    // them, stop before touching any interface.
    let listener = crate::api::server::bind(&cfg.api.socket, cfg.api.group.as_deref()).map_err(fail)?;
    let _socket_file = SocketFile(cfg.api.socket.clone());
    let metrics = if cfg.metrics.listen.is_empty() {
        None
    } else {
        let l = std::net::TcpListener::bind(&cfg.metrics.listen)
            .map_err(|e| fail(format!("metrics.listen {}: {e}", cfg.metrics.listen)))?;
        Some(l)
    };
    // Give the kernel a moment to resolve the remote nodes before we start.
    let mut probe_errors = ProbeErrors::default();
    for _ in 0..10 {
        if resolve_tunnels(&control, &mut probe_errors) == 0 {
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

    let handle = control.lock().writer.handle();
    let mut ports: Vec<Vec<Port>> = (0..workers).map(|_| Vec::new()).collect();
    let mut attached = std::collections::BTreeMap::new();
    let mut umems = WorkerUmems::new(workers);
    let first = control.lock().writer.tables().clone();
    // The fabric's port must open: without it the node has no tunnels, and
    // a fabric misnamed, or no privilege, is told at once. A pod's may
    // fail (its veth not made yet after a reboot, or gone while vrouterd
    // was down): it is tried again, as at run time, and vrouterd starts.
    let mut ports_down = false;
    for vif in port_vifs(&first) {
        let (vif_ports, open) = match open_port(&cfg, &vif, &mut umems) {
            Ok(opened) => opened,
            Err(why) if vif.kind == VifKind::Fabric => return Err(fail(port_error(&vif, &why))),
            Err(why) => {
                port_not_opened(&control, &vif, &why);
                ports_down = true;
                continue;
            }
        };
        for (w, port) in vif_ports {
            ports[w].push(port);
        }
        attached.insert(vif.index, open);
    }
    if let Ok(links) = crate::io::netlink::links() {
        follow_links(&mut attached, &links, &first, &control);
    }
    // A worker hands frames for ports it has no socket on to the worker
    // that owns the port's queue 0: a pair of rings from each worker to
    // each other one (`handoffs[from][to]`), 1024 buffers for each
    // worker's frames in all.
    let slots = (1024 / workers.saturating_sub(1).max(1)).max(128);
    let bells = (0..workers)
        .map(|_| crate::io::worker::Doorbell::new())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("the workers' doorbells: {e}")))?;
    let handoffs: Vec<Vec<Option<Arc<crate::io::worker::Handoff>>>> = (0..workers)
        .map(|from| {
            (0..workers)
                .map(|to| (from != to).then(|| crate::io::worker::Handoff::new(slots, Arc::clone(&bells[to]))))
                .collect()
        })
        .collect();
    // Ports a worker stopped using (their interface gone), to open again.
    let (broken_tx, broken_rx) = std::sync::mpsc::channel();
    let (filled_tx, filled) = std::sync::mpsc::channel();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    // Measured once, to turn the workers' stage cycles into time.
    let tsc_hz = crate::io::tsc_hz(Duration::from_millis(20));
    for ((w, worker_ports), pipeline) in ports.into_iter().enumerate().zip(pipelines) {
        let (control, commands) = std::sync::mpsc::channel();
        controls.push(control);
        let core = cfg.dataplane.cores.get(w).copied();
        let worker_stop = stop.clone();
        let busy_poll = Duration::from_micros(cfg.dataplane.busy_poll_us.into());
        let pipeline = pipeline.with_flows(Arc::clone(&flows));
        if w == 0 {
            info!(workers, mib_each = pipeline.flow_cache_bytes() >> 20, "flow caches allocated");
        }
        let board = Arc::clone(&board);
        let mut worker = Worker::new(worker_ports, pipeline, handle.clone())
            .with_control(commands)
            .with_broken_ports(broken_tx.clone())
            .with_filled_ports(filled_tx.clone())
            .with_doorbell(Arc::clone(&bells[w]))
            .with_tap(Arc::clone(&tap));
        if workers > 1 {
            let ins = handoffs.iter().filter_map(|to| to[w].clone()).collect();
            worker = worker.with_handoff_out(handoffs[w].clone()).with_handoff_in(ins);
        }
        let thread = std::thread::Builder::new()
            .name(format!("vrouter-worker-{w}"))
            .spawn(move || {
                if let Some(c) = core {
                    if let Err(e) = crate::io::pin_to_core(c) {
                        warn!("worker {w} not pinned to core {c}: {e}");
                    }
                }
                let started = Instant::now();
                let mut busy = Duration::ZERO;
                let mut published = Instant::now();
                let publish = |worker: &Worker, busy: Duration| {
                    let c = worker.counters();
                    let io = WorkerIo {
                        rx: c.rx,
                        tx: c.tx,
                        tx_dropped: c.tx_dropped,
                        unsent: c.unsent,
                        handed_off: c.handed_off,
                        wakeups: c.wakeups,
                        general_path: worker.pipeline().general_frames(),
                        general_causes: *worker.pipeline().general_causes(),
                        flow_cache: worker.pipeline().flow_cache_counts().unwrap_or_default(),
                        busy_ns: busy.as_nanos() as u64,
                        elapsed_ns: started.elapsed().as_nanos() as u64,
                        runtime: c.runtime,
                        tsc_hz,
                    };
                    board.publish(w, worker.pipeline().stats(), worker.pipeline().general_frames_by_vif(), io)
                };
                let mut last_frame = Instant::now();
                while !worker_stop.load(Ordering::Relaxed) {
                    let round = Instant::now();
                    worker.set_now(round.duration_since(epoch).as_millis() as u64);
                    match worker.poll() {
                        // Polling on (busy_poll_us): not counted as busy.
                        Ok(0) if round.duration_since(last_frame) < busy_poll => std::hint::spin_loop(),
                        Ok(0) => {
                            worker.age();
                            let _ = worker.wait(10);
                        }
                        Ok(_) => {
                            busy += round.elapsed();
                            last_frame = round;
                        }
                        Err(e) => {
                            error!("worker {w}: {e}");
                            break;
                        }
                    }
                    if published.elapsed() >= PUBLISH_EVERY && publish(&worker, busy) {
                        published = Instant::now();
                    }
                }
                publish(&worker, busy);
                worker
            })
            .map_err(|e| fail(format!("starting worker {w}: {e}")))?;
        threads.push(thread);
    }
    info!(workers, cores = ?cfg.dataplane.cores, "workers started");
    let workers = Workers { controls, bells, filled };
    // The workers filled their ports' fill rings as they were made
    // (`Worker::new`): the ports' queues can be steered to them.
    let vifs = port_vifs(&first);
    let refused = steer_ports(&vifs, &mut attached, &workers, &control);
    if let Some(fabric) = refused.iter().find(|v| v.kind == VifKind::Fabric) {
        return Err(fail(port_error(fabric, "its queues could not be steered to its sockets")));
    }
    ports_down |= !refused.is_empty();
    crate::api::server::spawn(Arc::clone(&control), listener, cfg.api.max_clients)
        .map_err(|e| fail(format!("starting the API: {e}")))?;
    info!(socket = %cfg.api.socket.display(), "API listening");
    if let Some(l) = metrics {
        metrics::spawn(Arc::clone(&control), l).map_err(|e| fail(format!("starting metrics: {e}")))?;
        info!(listen = %cfg.metrics.listen, "metrics listening");
    }

    let notifier = notify::Notifier::from_env();
    notifier.ready();
    info!(node = %cfg.node.underlay, fabric = %cfg.node.fabric, "vrouterd ready");
    let mut last_ping = Instant::now();
    let mut last_resolve = Instant::now();
    let (mut last_port_try, mut last_port_check) = (Instant::now(), Instant::now());
    let mut unresolved = 0;
    let mut seen = first.generation();
    drop(first);
    let mut last_advice = Instant::now();
    let mut unfinished = advice::RisingCounts::default();
    let mut lost_in_kernel = advice::RisingCounts::default();
    let mut said_links_failed = false;
    let mut retry_soon = false;
    let link_events = LinkEvents::open()
        .inspect_err(|e| warn!("{e}: ports follow their links once a second instead of as they change"))
        .ok();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if notifier.watchdog_due(last_ping) {
            notifier.watchdog();
            last_ping = Instant::now();
        }
        if reload.swap(false, Ordering::Relaxed) {
            info!("SIGHUP: nothing to reload; tables change through the API (vrctl, vrouter-agent)");
        }
        // Unresolved tunnels are retried soon; resolved ones are checked for
        // MAC changes once a second.
        let every = if unresolved > 0 { Duration::from_millis(200) } else { Duration::from_secs(1) };
        if control.take_resolve_request() || last_resolve.elapsed() >= every {
            unresolved = resolve_tunnels(&control, &mut probe_errors);
            last_resolve = Instant::now();
        }
        let tables = {
            let mut st = control.lock();
            st.writer.reclaim();
            st.writer.tables().clone()
        };
        // A vif whose interface is not there yet (a pod's veth made after
        // its vif) gets its port once the interface comes: at the kernel's
        // news of a link, within this loop's 100 ms, or at the next retry.
        // (Not more often than every `PORT_RETRY_SOONEST`: a port failing
        // to open may itself be news.)
        let news = link_events.as_ref().is_some_and(LinkEvents::changed);
        retry_soon |= news;
        let since_try = last_port_try.elapsed();
        let retry = ports_down && (since_try >= PORT_RETRY || (retry_soon && since_try >= PORT_RETRY_SOONEST));
        let check = news || last_port_check.elapsed() >= PORT_CHECK;
        if check {
            last_port_check = Instant::now();
        }
        let broken: std::collections::BTreeSet<u32> = broken_rx.try_iter().collect();
        let sync = tables.generation() != seen || retry || !broken.is_empty();
        // One read of the kernel's links a second, at its news, and for
        // every change of ports: which ports' interfaces were deleted or
        // made again, and which links went down or up.
        let links = (check || sync).then(crate::io::netlink::links).transpose().unwrap_or_else(|e| {
            if !said_links_failed {
                warn!("reading the kernel's links: {e}; ports are not checked until it works");
                said_links_failed = true;
            }
            None
        });
        let dead = links.as_ref().is_some_and(|l| attached.values().any(|o| o.link(l).is_none()));
        if sync || dead {
            seen = tables.generation();
            ports_down =
                sync_ports(&cfg, &tables, &mut attached, &workers, &mut umems, &control, &broken, links.as_deref());
            last_port_try = Instant::now();
            retry_soon = false;
        }
        if let Some(links) = &links {
            said_links_failed = false;
            follow_links(&mut attached, links, &tables, &control);
            for (&vif, open) in &attached {
                control.set_port_sockets(vif, open.socket_counters(), open.longest as u32);
            }
        }
        if last_advice.elapsed() >= Duration::from_secs(1) {
            last_advice = Instant::now();
            let stats = board.read().stats;
            let counts = stats.vif_drops.iter().enumerate();
            let counts = counts.map(|(i, d)| (i as u32, d[DropReason::UnfinishedChecksum as usize]));
            for (vif, dropped) in unfinished.due(counts, last_advice) {
                let interface = tables.vif(vif).map_or("?", |v| v.name.as_str());
                warn!(
                    dropped,
                    vif,
                    interface,
                    "a pod's TCP SYNs or UDP datagrams came with checksums left for a NIC to finish, and were \
                     dropped (vrctl dropstats --vif {vif}: unfinished_checksum): {}",
                    DropReason::UnfinishedChecksum.remedy().unwrap_or_default()
                );
            }
            // The kernel's drops for want of a free frame it counts twice,
            // as fill_ring_empty too (a port's first frames may come before
            // its fill ring is filled): what is left are frames too long.
            // Not on a port that takes chains of frames (jumbo): none is
            // too long for it, and a chain that found fewer free frames
            // than it needs is counted in rx_dropped alone.
            let too_long = |k: SocketCounters| k.rx_dropped.saturating_sub(k.fill_ring_empty);
            let kernel = attached
                .iter()
                .filter(|(_, open)| open.longest < crate::io::jumbo::LONGEST)
                .filter_map(|(&v, _)| Some((v, too_long(control.port(v)?.sockets?))));
            for (vif, dropped) in lost_in_kernel.due(kernel.collect::<Vec<_>>(), last_advice) {
                let interface = tables.vif(vif).map_or("?", |v| v.name.as_str());
                let longest = attached.get(&vif).map_or(0, |o| o.longest);
                warn!(
                    dropped,
                    vif,
                    interface,
                    "the kernel dropped frames longer than the {longest} bytes a port's frames hold on \
                     their way to vrouterd (vrctl vif get {vif}: kernel rx_dropped, less fill_ring_empty): the \
                     interface's MTU, or its pod's, is above {}",
                    longest.saturating_sub(crate::wire::ethernet::HEADER_LEN)
                );
            }
        }
        drop(tables);
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
            wakeups = c.wakeups,
            tx_dropped = c.tx_dropped,
            drops = worker.pipeline().stats().total_drops(),
            "worker stopped"
        );
        for (cause, n) in crate::stats::Unsent::ALL.iter().zip(c.unsent) {
            if n > 0 {
                info!(worker = w, cause = cause.as_str(), congestion = cause.is_congestion(), frames = n, "unsent");
            }
        }
        for (vif, xs, free, filled) in worker.port_stats() {
            if let Some(x) = xs {
                info!(
                    worker = w,
                    vif,
                    rx_dropped = x.rx_dropped,
                    rx_ring_full = x.rx_ring_full,
                    fill_ring_empty = x.fill_ring_empty,
                    tx_invalid = x.tx_invalid,
                    free_frames = free,
                    fill_ring = filled,
                    "af_xdp counters"
                );
            }
        }
    }
    let s = crate::stats::Stats::sum(done.iter().map(|w| w.pipeline().stats()));
    let last = control.lock().writer.tables().clone();
    for v in last.vifs() {
        let c = s.vif(v.index);
        info!(
            vif = v.index,
            interface = %v.name,
            rx_packets = c.rx_packets,
            tx_packets = c.tx_packets,
            tx_dropped = c.tx_dropped,
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

/// How long the daemon waits for workers to fill the fill rings of ports
/// it gave them before it steers the ports' queues to them anyway: a
/// worker takes its commands between rounds, and a round is a batch or a
/// sleep of up to 10 ms that the daemon's doorbell ends.
const FILL_WAIT: Duration = Duration::from_millis(500);

/// What the daemon holds of its running workers.
struct Workers {
    /// Port changes, by worker.
    controls: Vec<std::sync::mpsc::Sender<PortCommand>>,
    /// Their doorbells, rung when a port is given, so that a sleeping
    /// worker takes it at once.
    bells: Vec<Arc<crate::io::worker::Doorbell>>,
    /// Where they say a port given to them has frames to receive into.
    filled: std::sync::mpsc::Receiver<u32>,
}

impl Workers {
    /// Gives `ports` (worker, port) to their workers and waits until each
    /// has filled their fill rings, or `FILL_WAIT`.
    fn add(&self, ports: Vec<(usize, Port)>) {
        // Said of ports given before, once `FILL_WAIT` had passed.
        let _ = self.filled.try_iter().count();
        let mut waiting = 0;
        for (w, port) in ports {
            if self.controls[w].send(PortCommand::Add(Box::new(port))).is_ok() {
                self.bells[w].ring_if_asleep();
                waiting += 1;
            }
        }
        let deadline = Instant::now() + FILL_WAIT;
        while waiting > 0 {
            if self.filled.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                warn!(ports = waiting, "workers did not take new ports within {FILL_WAIT:?}: steering to them anyway");
                break;
            }
            waiting -= 1;
        }
    }

    /// Has every worker close vif `vif`'s ports.
    fn remove(&self, vif: u32) {
        for c in &self.controls {
            let _ = c.send(PortCommand::Remove(vif));
        }
    }
}

/// Steers the queues of `vifs`' new ports (in `attached`) to their
/// sockets, once their workers have filled them (`Workers::add`). A port
/// the kernel refuses is closed as one that did not open, tried again
/// later: detached first, then its sockets. Answers those it closed.
fn steer_ports<'v>(
    vifs: impl IntoIterator<Item = &'v crate::tables::Vif>,
    attached: &mut std::collections::BTreeMap<u32, OpenPort>,
    workers: &Workers,
    control: &Control,
) -> Vec<&'v crate::tables::Vif> {
    let mut refused = Vec::new();
    for vif in vifs {
        let Some(open) = attached.get_mut(&vif.index) else { continue };
        match open.steer() {
            Ok(()) => control.set_port_state(vif.index, Some("up".into())),
            Err(why) => {
                attached.remove(&vif.index);
                workers.remove(vif.index);
                port_not_opened(control, vif, &why);
                refused.push(vif);
            }
        }
    }
    refused
}

/// Opens ports for vifs the tables gained and closes those of vifs they
/// lost, that moved to another interface or kind, whose interface was
/// deleted or made again, or that a worker stopped using (`broken`), the
/// last three opened again, while the workers keep forwarding for the
/// rest (`links`: the kernel's, just read; none if they could not be). A
/// port that fails to open is tried again by the next call; true if one
/// did.
#[allow(clippy::too_many_arguments)]
fn sync_ports(
    cfg: &Config,
    tables: &Tables,
    attached: &mut std::collections::BTreeMap<u32, OpenPort>,
    workers: &Workers,
    umems: &mut WorkerUmems,
    control: &Control,
    broken: &std::collections::BTreeSet<u32>,
    links: Option<&[Link]>,
) -> bool {
    let wanted = port_vifs(tables);
    let gone: Vec<(u32, bool)> = attached
        .iter()
        .map(|(i, open)| (*i, open, links.is_none_or(|l| open.link(l).is_some())))
        .filter(|(i, open, alive)| {
            !alive || broken.contains(i) || !wanted.iter().any(|v| v.index == *i && open.serves(v))
        })
        .map(|(i, _, alive)| (i, alive))
        .collect();
    for &(vif, alive) in &gone {
        // Detach first: the interface's traffic goes back to the kernel
        // before the socket closes (and nothing redirects into it while
        // the worker takes its frames back).
        if let Some(open) = attached.remove(&vif) {
            if !alive {
                warn!(vif, interface = %open.interface, "the port's interface was deleted or made again");
            }
        }
        workers.remove(vif);
        control.set_port_state(vif, None);
        info!(vif, "port down");
    }
    if !gone.is_empty() {
        umems.anchor_on(attached);
    }
    // A vif whose port failed to open is retried at the next change.
    let new: Vec<_> = wanted.into_iter().filter(|v| !attached.contains_key(&v.index)).collect();
    let mut given = Vec::new();
    for vif in &new {
        match open_port(cfg, vif, umems) {
            Ok((ports, open)) => {
                attached.insert(vif.index, open);
                given.extend(ports);
            }
            Err(why) => port_not_opened(control, vif, &why),
        }
    }
    if !given.is_empty() {
        workers.add(given);
        steer_ports(&new, attached, workers, control);
    }
    new.iter().any(|v| !attached.contains_key(&v.index))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker core outside the cores the process may run on is refused,
    /// naming them; where the affinity cannot be read, none is.
    #[test]
    fn a_core_vrouterd_may_not_run_on_is_refused() {
        assert!(check_cores(&[1, 0], Ok(vec![0, 1])).is_ok());
        let e = check_cores(&[0, 5], Ok(vec![0, 1, 2, 4])).unwrap_err().to_string();
        assert!(e.contains("core 5 is not one vrouterd may run on here (it may run on 0-2,4)"), "{e}");
        let unreadable = std::io::Error::other("no affinity");
        assert!(check_cores(&[5], Err(unreadable)).is_ok());
    }

    #[test]
    fn cores_are_listed_as_ranges() {
        assert_eq!(core_list(&[]), "none");
        assert_eq!(core_list(&[3]), "3");
        assert_eq!(core_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }
}
