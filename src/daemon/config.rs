//! `/etc/vrouter/vrouterd.toml`.

use crate::io::bpf::XdpMode;
use crate::io::xsk::BindMode;
use crate::tables::Limits;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The node.
    pub node: Node,
    /// Workers and ports.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Table capacities.
    #[serde(default)]
    pub limits: LimitsDef,
    /// The control API.
    #[serde(default)]
    pub api: Api,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// The flow table.
    #[serde(default)]
    pub flows: FlowsDef,
    /// The initial tables.
    #[serde(default)]
    pub tables: TablesFile,
}

/// The node's place on the fabric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The fabric interface.
    pub fabric: String,
    /// The node's underlay address, which tunnels are addressed to.
    pub underlay: Ipv4Addr,
}

/// Workers and ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Cores to run workers on, one worker each (one worker for now).
    #[serde(default = "default_cores")]
    pub cores: Vec<usize>,
    /// `auto`, `native` or `generic`.
    #[serde(default = "default_mode")]
    pub xdp_mode: String,
    /// `auto`, `copy` or `zero-copy`.
    #[serde(default = "default_mode")]
    pub bind: String,
    /// Frames in the worker's UMEM, which all its ports share.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// Microseconds a worker keeps polling after the last frame it took
    /// before it sleeps, so that the next frame of a conversation (an
    /// answer, a hand-off from another worker) finds it awake instead of
    /// waiting for the scheduler to wake it. 0: sleep at once.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u32,
}

fn default_cores() -> Vec<usize> {
    vec![0]
}
fn default_mode() -> String {
    "auto".into()
}
fn default_frames() -> u32 {
    16384
}
fn default_busy_poll_us() -> u32 {
    BUSY_POLL_US
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            cores: default_cores(),
            xdp_mode: default_mode(),
            bind: default_mode(),
            frames: default_frames(),
            busy_poll_us: default_busy_poll_us(),
        }
    }
}

impl Dataplane {
    /// The XDP attach mode.
    pub fn xdp_mode(&self) -> XdpMode {
        match self.xdp_mode.as_str() {
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            _ => XdpMode::Auto,
        }
    }

    /// The AF_XDP bind mode.
    pub fn bind_mode(&self) -> BindMode {
        match self.bind.as_str() {
            "copy" => BindMode::Copy,
            "zero-copy" => BindMode::ZeroCopy,
            _ => BindMode::Auto,
        }
    }
}

/// Table capacities, Tungsten Fabric's defaults where unset.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsDef {
    /// Vifs.
    pub vifs: usize,
    /// VRFs.
    pub vrfs: usize,
    /// Next hops.
    pub nexthops: usize,
    /// Labels.
    pub labels: usize,
    /// Routes per VRF and family.
    pub routes_per_vrf: usize,
}

impl Default for LimitsDef {
    fn default() -> Self {
        let l = Limits::default();
        LimitsDef {
            vifs: l.vifs,
            vrfs: l.vrfs,
            nexthops: l.nexthops,
            labels: l.labels,
            routes_per_vrf: l.routes_per_vrf,
        }
    }
}

impl LimitsDef {
    /// As table limits.
    pub fn to_limits(self) -> Limits {
        Limits {
            vifs: self.vifs,
            vrfs: self.vrfs,
            nexthops: self.nexthops,
            labels: self.labels,
            routes_per_vrf: self.routes_per_vrf,
        }
    }
}

/// The control API's socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Unix socket path; mode 0660.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// The group that owns the socket, whose members may use the API
    /// (root only when unset).
    #[serde(default)]
    pub group: Option<String>,
    /// Clients served at once.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Longest message, in bytes.
    #[serde(default = "default_max_message")]
    pub max_message: usize,
}

fn default_socket() -> PathBuf {
    PathBuf::from(crate::api::proto::DEFAULT_SOCKET)
}
fn default_max_clients() -> usize {
    64
}
fn default_max_message() -> usize {
    crate::api::proto::MAX_MESSAGE
}

impl Default for Api {
    fn default() -> Self {
        Api {
            socket: default_socket(),
            group: None,
            max_clients: default_max_clients(),
            max_message: default_max_message(),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// `ADDR:PORT` to serve `/metrics` on; empty to serve none. Loopback by
    /// default: counters name tenants' interfaces.
    #[serde(default = "default_metrics")]
    pub listen: String,
}

fn default_metrics() -> String {
    "127.0.0.1:9432".into()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { listen: default_metrics() }
    }
}

/// The flow table: its size, limits and timeouts (seconds).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsDef {
    /// Flow pairs (Contrail's default, 512K).
    pub capacity: usize,
    /// Pairs one vif may create.
    pub per_vif: u32,
    /// Pairs one VRF may hold.
    pub per_vrf: u32,
    /// Idle timeout of established and non-TCP flows.
    pub idle_timeout: u64,
    /// Idle timeout of denied flows.
    pub drop_timeout: u64,
    /// Timeout of closed TCP flows.
    pub closed_timeout: u64,
    /// Timeout of TCP flows not yet established.
    pub half_open_timeout: u64,
    /// Fragmented datagrams whose ports are kept for their later fragments.
    pub fragments: usize,
}

impl Default for FlowsDef {
    fn default() -> Self {
        let d = crate::flow::FlowConfig::default();
        FlowsDef {
            capacity: d.capacity,
            per_vif: d.per_vif,
            per_vrf: d.per_vrf,
            idle_timeout: d.idle_ms / 1000,
            drop_timeout: d.drop_ms / 1000,
            closed_timeout: d.closed_ms / 1000,
            half_open_timeout: d.half_open_ms / 1000,
            fragments: d.fragments,
        }
    }
}

impl FlowsDef {
    /// As the flow table's configuration.
    pub fn to_config(self) -> crate::flow::FlowConfig {
        crate::flow::FlowConfig {
            capacity: self.capacity,
            per_vif: self.per_vif,
            per_vrf: self.per_vrf,
            idle_ms: self.idle_timeout * 1000,
            drop_ms: self.drop_timeout * 1000,
            closed_ms: self.closed_timeout * 1000,
            half_open_ms: self.half_open_timeout * 1000,
            fragments: self.fragments,
        }
    }
}

/// Where the initial tables come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesFile {
    /// A tables file (vrf, vif, nexthop, label, route); relative to the
    /// configuration file's folder.
    pub file: Option<PathBuf>,
}

/// The most next hops a configuration may ask for: 16M, 2 MiB of chunk
/// pointers when empty.
const MAX_NEXTHOPS: usize = 1 << 24;
/// The most labels: every 20-bit MPLS label.
const MAX_LABELS: usize = 1 << 20;
/// UMEM frames per port: enough for the fill and completion rings, and at
/// most 8 GiB of 2 KiB frames.
const MIN_FRAMES: u32 = 1024;
const MAX_FRAMES: u32 = 1 << 22;
/// How long a worker polls on after its last frame, by default: past the
/// round trip of a request and its answer between pods (11-15 µs at 50,
/// 34-74 µs sleeping at once: `tools/bench --busy-poll`), and the kernel's
/// recommended `busy_poll`.
pub const BUSY_POLL_US: u32 = 50;
/// The longest: past a second a worker would never sleep between frames
/// anything sends.
const MAX_BUSY_POLL_US: u32 = 1_000_000;

impl Config {
    /// Reads and checks a configuration file. Errors name the file and line.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad =
            |field: &str, v: &str, allowed: &str| format!("{}: {field} = {v:?}: expected {allowed}", path.display());
        if !matches!(cfg.dataplane.xdp_mode.as_str(), "auto" | "native" | "generic") {
            return Err(bad("dataplane.xdp_mode", &cfg.dataplane.xdp_mode, "auto, native or generic"));
        }
        if !matches!(cfg.dataplane.bind.as_str(), "auto" | "copy" | "zero-copy") {
            return Err(bad("dataplane.bind", &cfg.dataplane.bind, "auto, copy or zero-copy"));
        }
        if let Some(why) = crate::tables::interface_name_problem(&cfg.node.fabric) {
            return Err(format!("{}: node.fabric = {:?}: {why}", path.display(), cfg.node.fabric));
        }
        // The source of every tunnel and what peers address theirs to.
        let u = cfg.node.underlay;
        if !crate::tables::is_tunnel_endpoint(u) {
            return Err(format!("{}: node.underlay = {u}: expected a unicast address of this node", path.display()));
        }
        if cfg.dataplane.cores.is_empty() {
            return Err(format!("{}: dataplane.cores: at least one core", path.display()));
        }
        if !cfg.metrics.listen.is_empty() && cfg.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("metrics.listen", &cfg.metrics.listen, "ADDR:PORT, or \"\" for none"));
        }
        if cfg.api.max_clients == 0 || cfg.api.max_message < 1024 {
            return Err(format!(
                "{}: api.max_clients must be at least 1, api.max_message at least 1024",
                path.display()
            ));
        }
        // Tables are made for their whole capacity at start: a limit past
        // these would fail the allocation, not the configuration. Flow
        // entries hold vif and VRF numbers in 24 bits; a label is 20 bits
        // on the wire.
        let l = &cfg.limits;
        for (field, value, max) in [
            ("vifs", l.vifs, crate::flow::MAX_VIFS),
            ("vrfs", l.vrfs, crate::flow::MAX_VRFS),
            ("nexthops", l.nexthops, MAX_NEXTHOPS),
            ("labels", l.labels, MAX_LABELS),
        ] {
            if value == 0 || value > max {
                return Err(format!("{}: limits.{field} = {value}: expected 1..={max}", path.display()));
            }
        }
        // Zero would refuse every route, or every new flow of a vif or a
        // VRF, under a limit drop: a node that starts and forwards nothing.
        if l.routes_per_vrf == 0 {
            return Err(format!("{}: limits.routes_per_vrf = 0: expected at least 1", path.display()));
        }
        for (field, value) in [("per_vif", cfg.flows.per_vif), ("per_vrf", cfg.flows.per_vrf)] {
            if value == 0 {
                return Err(format!("{}: flows.{field} = 0: expected at least 1", path.display()));
            }
        }
        if !(MIN_FRAMES..=MAX_FRAMES).contains(&cfg.dataplane.frames) {
            let f = cfg.dataplane.frames;
            return Err(format!("{}: dataplane.frames = {f}: expected {MIN_FRAMES}..={MAX_FRAMES}", path.display()));
        }
        if cfg.dataplane.busy_poll_us > MAX_BUSY_POLL_US {
            let us = cfg.dataplane.busy_poll_us;
            return Err(format!("{}: dataplane.busy_poll_us = {us}: expected 0..={MAX_BUSY_POLL_US}", path.display()));
        }
        if let Some(c) = cfg.dataplane.cores.iter().find(|&&c| c >= crate::io::MAX_CORES) {
            let max = crate::io::MAX_CORES - 1;
            return Err(format!("{}: dataplane.cores: core {c}: expected 0..={max}", path.display()));
        }
        // A worker a core: two pinned to one take turns, unseen.
        let cores = &cfg.dataplane.cores;
        if let Some(c) = cores.iter().enumerate().find_map(|(i, c)| cores[..i].contains(c).then_some(c)) {
            return Err(format!(
                "{}: dataplane.cores: core {c} twice: each worker takes a core of its own",
                path.display()
            ));
        }
        if cfg.flows.capacity == 0 || cfg.flows.capacity > 16 << 20 {
            return Err(format!("{}: flows.capacity must be 1..=16777216", path.display()));
        }
        // A flow entry keeps its last packet's time in 32 bits of milliseconds.
        let max_timeout = crate::flow::MAX_TIMEOUT_MS / 1000;
        let f = &cfg.flows;
        for (field, value) in [
            ("idle_timeout", f.idle_timeout),
            ("drop_timeout", f.drop_timeout),
            ("closed_timeout", f.closed_timeout),
            ("half_open_timeout", f.half_open_timeout),
        ] {
            if value == 0 || value > max_timeout {
                return Err(format!("{}: flows.{field} = {value}: expected 1..={max_timeout} seconds", path.display()));
            }
        }
        if cfg.flows.fragments == 0 || cfg.flows.fragments > 1 << 20 {
            return Err(format!("{}: flows.fragments must be 1..=1048576", path.display()));
        }
        if cfg.api.socket.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            cfg.api.socket = base.join(&cfg.api.socket);
        }
        if let Some(f) = &cfg.tables.file {
            if f.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                cfg.tables.file = Some(base.join(f));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in a directory of its own, removed with it when dropped.
    struct Written(PathBuf);

    impl std::ops::Deref for Written {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for Written {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn write(name: &str, text: &str) -> Written {
        let dir = std::env::temp_dir().join(format!("vrouter-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        Written(p)
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let p =
            write("min.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"192.168.0.1\"\n[tables]\nfile = \"t.toml\"\n");
        let c = Config::load(&p).unwrap();
        assert_eq!(c.dataplane.cores, vec![0]);
        assert_eq!(c.limits.to_limits(), Limits::default());
        assert_eq!(c.tables.file.unwrap(), p.parent().unwrap().join("t.toml"));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let p = write("bad.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"192.168.0.300\"\n");
        let e = Config::load(&p).unwrap_err();
        assert!(e.contains("bad.toml") && e.contains("line 3"), "{e}");
        let p = write("typo.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[dataplane]\ncorez = [1]\n");
        let e = Config::load(&p).unwrap_err();
        assert!(e.contains("line 5") && e.contains("corez"), "{e}");
        let p = write(
            "mode.toml",
            "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[dataplane]\nxdp_mode = \"fast\"\n",
        );
        assert!(Config::load(&p).unwrap_err().contains("dataplane.xdp_mode"));
        let p = write("limits.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[limits]\nvifs = 20000000\n");
        assert!(Config::load(&p).unwrap_err().contains("limits.vifs = 20000000: expected 1..=16777216"));
        let p = write("frags.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[flows]\nfragments = 0\n");
        assert!(Config::load(&p).unwrap_err().contains("flows.fragments must be 1..=1048576"));
        let p = write("vrfs.toml", "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[limits]\nvrfs = 8388608\n");
        assert!(Config::load(&p).unwrap_err().contains("limits.vrfs = 8388608: expected 1..=8388607"));
        // Values that once made vrouterd abort at start (an allocation of
        // the whole capacity, a CPU set's assertion), or start useless.
        let base = "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n";
        for (text, says) in [
            (
                "[limits]\nnexthops = 9223372036854775807\n",
                "limits.nexthops = 9223372036854775807: expected 1..=16777216",
            ),
            ("[limits]\nlabels = 2000000\n", "limits.labels = 2000000: expected 1..=1048576"),
            ("[limits]\nvrfs = 0\n", "limits.vrfs = 0"),
            ("[dataplane]\nframes = 3\n", "dataplane.frames = 3: expected 1024..=4194304"),
            ("[dataplane]\nbusy_poll_us = 2000000\n", "dataplane.busy_poll_us = 2000000: expected 0..=1000000"),
            ("[dataplane]\ncores = [1, 9999]\n", "dataplane.cores: core 9999: expected 0..=1023"),
            ("[dataplane]\ncores = [1, 0, 1]\n", "dataplane.cores: core 1 twice"),
            // A timeout in seconds once overflowed its milliseconds.
            (
                "[flows]\nidle_timeout = 9223372036854775807\n",
                "flows.idle_timeout = 9223372036854775807: expected 1..=2147483 seconds",
            ),
            ("[flows]\nclosed_timeout = 0\n", "flows.closed_timeout = 0: expected 1..="),
            ("[limits]\nroutes_per_vrf = 0\n", "limits.routes_per_vrf = 0: expected at least 1"),
            ("[flows]\nper_vif = 0\n", "flows.per_vif = 0: expected at least 1"),
            ("[flows]\nper_vrf = 0\n", "flows.per_vrf = 0: expected at least 1"),
        ] {
            let p = write("range.toml", &format!("{base}{text}"));
            let e = Config::load(&p).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        // The node: a fabric Linux could not name, an underlay no tunnel
        // could come from (each passed once, and failed only at its port
        // or on the wire).
        for (fabric, underlay, says) in [
            ("", "10.0.0.1", "node.fabric = \"\": empty"),
            ("a-name-of-16-byt", "10.0.0.1", "longer than the 15 bytes"),
            ("eth0:1", "10.0.0.1", "no '/', ':' or white space"),
            ("eth 0", "10.0.0.1", "no '/', ':' or white space"),
            ("..", "10.0.0.1", "not an interface name"),
            ("eth0", "0.0.0.0", "node.underlay = 0.0.0.0: expected a unicast address"),
            ("eth0", "224.0.0.5", "node.underlay = 224.0.0.5"),
            ("eth0", "255.255.255.255", "node.underlay = 255.255.255.255"),
            ("eth0", "127.0.0.1", "node.underlay = 127.0.0.1"),
        ] {
            let p = write("node.toml", &format!("[node]\nfabric = {fabric:?}\nunderlay = \"{underlay}\"\n"));
            let e = Config::load(&p).unwrap_err();
            assert!(e.contains(says), "{fabric:?} {underlay}: {e}");
        }
        let p = write("node.toml", "[node]\nfabric = \"a-name-of-15-by\"\nunderlay = \"10.0.0.1\"\n");
        assert!(Config::load(&p).is_ok(), "15 bytes is a name");
        assert!(Config::load(Path::new("/nonexistent/vrouterd.toml"))
            .unwrap_err()
            .contains("/nonexistent/vrouterd.toml"));
    }
}
