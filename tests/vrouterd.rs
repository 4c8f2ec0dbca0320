//! vrouterd as a process: configuration errors, readiness, forwarding
//! between pods in network namespaces, table changes through the API while
//! traffic flows, metrics, and SIGTERM leaving no XDP program behind.
//! Needs root (CI is root); elsewhere it skips.

mod common;

use common::{root_or_skip, Scratch};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

const VROUTERD: &str = env!("CARGO_BIN_EXE_vrouterd");

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// A vrouterd configuration for a scratch directory: fabric eth0, one
/// worker on core 0, the API socket `api.sock` beside it with `api_extra`
/// lines, metrics on `metrics` ("" for none), `capacity` flow pairs.
fn scratch_config(api_extra: &str, metrics: &str, capacity: u32) -> String {
    format!(
        "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[dataplane]\ncores = [0]\n[api]\nsocket = \"api.sock\"\n{api_extra}[metrics]\nlisten = \"{metrics}\"\n[flows]\ncapacity = {capacity}\n"
    )
}

#[test]
fn a_bad_configuration_is_refused_with_file_and_line() {
    let dir = Scratch::dir("bad");
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[dataplane]\nxdp_mode = 7\n").unwrap();
    let out = Command::new(VROUTERD).arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vrouterd.toml") && err.contains("line 5"), "{err}");
    // A tables file that refers to a missing next hop fails before any interface is touched.
    std::fs::write(
        dir.join("tables.toml"),
        "[[vrf]]\nid = 1\nname = \"blue\"\n[[route]]\nvrf = 1\nprefix = \"10.0.0.0/8\"\nnh = 9\n",
    )
    .unwrap();
    std::fs::write(&cfg, "[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[tables]\nfile = \"tables.toml\"\n")
        .unwrap();
    let out = Command::new(VROUTERD).arg("--config").arg(&cfg).arg("--check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tables.toml") && err.contains("field `nh`: next hop 9 does not exist"), "{err}");
    // A pod's vif on the node's fabric interface would take the node off
    // its network (its port takes all of the interface's traffic).
    std::fs::write(
        dir.join("tables.toml"),
        "[[vrf]]\nid = 1\nname = \"blue\"\n[[vif]]\nindex = 1\nname = \"eth0\"\nkind = \"virtual\"\nvrf = 1\n\
         mac = \"02:00:00:00:00:02\"\nipv4 = \"10.1.0.2\"\n",
    )
    .unwrap();
    let out = Command::new(VROUTERD).arg("--config").arg(&cfg).arg("--check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("tables.toml: operation 1: field `name`: eth0 is this node's fabric interface"), "{err}");
    // A worker core the machine lacks (or this process may not run on) is
    // refused before anything starts, with the cores it may use.
    let allowed = vrouter::io::allowed_cores().unwrap();
    let missing = (0..vrouter::io::MAX_CORES).rev().find(|c| !allowed.contains(c)).unwrap();
    std::fs::write(
        &cfg,
        format!("[node]\nfabric = \"eth0\"\nunderlay = \"10.0.0.1\"\n[dataplane]\ncores = [{missing}]\n"),
    )
    .unwrap();
    let out = Command::new(VROUTERD).arg("--config").arg(&cfg).arg("--check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("dataplane.cores: core {missing} is not one vrouterd may run on here")), "{err}");
    // An API socket group that does not exist: --check says so (it passed
    // once, and the start failed with the socket made and left behind).
    std::fs::write(&cfg, scratch_config("group = \"no-such-group-here\"\n", "", 1024)).unwrap();
    for check in [true, false] {
        let mut cmd = Command::new(VROUTERD);
        cmd.arg("--config").arg(&cfg);
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check {check}: {err}");
        assert!(err.contains("api.group: no group named \"no-such-group-here\""), "check {check}: {err}");
        assert!(!dir.join("api.sock").exists(), "check {check}: no socket left behind");
    }
}

/// A flow table the machine (here, the process's address-space limit)
/// cannot hold is refused at start with what to lower, before the API
/// socket is bound: no panic, nothing left behind. So are counters for
/// more vifs and VRFs than it can hold.
#[test]
fn tables_the_process_cannot_hold_are_refused_at_start() {
    let dir = Scratch::dir("big-flows");
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, scratch_config("", "", 16777216)).unwrap();
    // 3 GB of address space: the 6 GiB the flow table maps cannot fit.
    let script = format!("ulimit -v 3000000 && exec {VROUTERD} --config {}", cfg.display());
    let out = Command::new("sh").args(["-c", &script]).env("RUST_BACKTRACE", "0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("flows.capacity = 16777216: the flow table cannot be had") && err.contains("lower it"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("api.sock").exists(), "refused before the API socket was bound");
    // Counters sized by the largest limits: 11 GiB a worker. They aborted
    // the process ("memory allocation failed") before.
    let huge = scratch_config("", "", 1024) + "[limits]\nvifs = 16777216\nvrfs = 8388607\n";
    std::fs::write(&cfg, huge).unwrap();
    let out = Command::new("sh").args(["-c", &script]).env("RUST_BACKTRACE", "0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("limits.vifs = 16777216 and limits.vrfs = 8388607: their counters (")
            && err.contains("MiB a worker) cannot be had")
            && err.contains("lower them"),
        "{err}"
    );
    assert!(!dir.join("api.sock").exists(), "refused before the API socket was bound");
}

/// A start that fails after the API socket was bound (here, the metrics
/// port is taken) leaves no socket behind for vrctl to meet.
#[test]
fn a_start_that_fails_after_binding_leaves_no_api_socket() {
    let dir = Scratch::dir("metrics-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, scratch_config("", &addr.to_string(), 1024)).unwrap();
    let out = Command::new(VROUTERD).arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("metrics.listen {addr}")), "{err}");
    assert!(!dir.join("api.sock").exists(), "the API socket it bound was removed");
}

/// vrouterd without the privilege its ports need (run as nobody) stops
/// at its first port saying what it needs, not only "Operation not
/// permitted", and leaves no API socket behind.
#[test]
fn a_vrouterd_without_privilege_says_what_its_ports_need() {
    if !common::root_or_skip("vrouterd tests") {
        return;
    }
    let ns = format!("vrt-np-{}", std::process::id() % 100_000);
    let _guard = Namespaces(vec![ns.clone()], None);
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    run(&["ip", "netns", "add", &ns]);
    in_ns(&ns, &["ip", "link", "add", "fab", "type", "veth", "peer", "name", "fab-peer"]);
    in_ns(&ns, &["ip", "link", "set", "fab", "up"]);
    in_ns(&ns, &["ip", "link", "set", "fab-peer", "up"]);
    let dir = Scratch::dir("no-privilege");
    // Nobody's to write in (the socket), and its own copy of vrouterd:
    // the build directory may be closed to other users.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.join("vrouterd");
    std::fs::copy(VROUTERD, &bin).unwrap();
    std::fs::write(
        dir.join("tables.toml"),
        "[[vrf]]\nid = 0\nname = \"fabric\"\n[[vif]]\nindex = 0\nname = \"fab\"\nkind = \"fabric\"\nvrf = 0\nmac = \"02:fa:00:00:00:01\"\nipv4 = \"192.168.77.1\"\n",
    )
    .unwrap();
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, "[node]\nfabric = \"fab\"\nunderlay = \"192.168.77.1\"\n[dataplane]\ncores = [0]\nxdp_mode = \"generic\"\n[api]\nsocket = \"api.sock\"\n[metrics]\nlisten = \"\"\n[flows]\ncapacity = 1024\n[tables]\nfile = \"tables.toml\"\n").unwrap();
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(nobody)
        .arg(&bin)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("vif 0 (fab): ") && err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("vrouterd needs root, or the capabilities its systemd unit gives it"), "{err}");
    assert!(!dir.join("api.sock").exists(), "no API socket left behind");
}

/// Kills and reaps a vrouterd the test started, however the test ends.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request to the metrics port, answered within `patience`: the
/// response's status line.
fn scrape(addr: std::net::SocketAddr, patience: Duration) -> std::io::Result<String> {
    let text = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", patience)?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// `request` sent to the metrics port, and the whole response.
fn http(addr: std::net::SocketAddr, request: &str, patience: Duration) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(patience))?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// A vrouterd serving metrics on a free local port, once it answers a
/// scrape: its scratch directory (kept while it runs), the process, and
/// the port's address.
fn vrouterd_with_metrics(tag: &str) -> (Scratch, Daemon, std::net::SocketAddr) {
    let dir = Scratch::dir(tag);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, scratch_config("", &addr.to_string(), 1024)).unwrap();
    let child = Command::new(VROUTERD).arg("--config").arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let daemon = Daemon(child);
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        scrape(addr, Duration::from_secs(5)).is_ok_and(|l| l.contains("200"))
    });
    assert!(up, "vrouterd answered on {addr}");
    (dir, daemon, addr)
}

/// The metrics port answers as HTTP clients expect: a scrape with a query
/// (a scrape config's `params`) gets the metrics, HEAD their headers, and
/// another method, path or a line that is not HTTP a status that says so.
#[test]
fn the_metrics_port_answers_as_http_clients_expect() {
    let (_dir, _daemon, addr) = vrouterd_with_metrics("metrics-http");
    let ask = |request: &str| http(addr, &format!("{request}\r\nHost: x\r\n\r\n"), Duration::from_secs(5)).unwrap();
    let split = |r: &str| -> (String, String) {
        let (head, body) = r.split_once("\r\n\r\n").unwrap_or((r, ""));
        (head.to_string(), body.to_string())
    };
    let (head, body) = split(&ask("GET /metrics?target=node1 HTTP/1.1"));
    assert!(head.starts_with("HTTP/1.1 200 OK") && body.contains("vrouter_flow_capacity 1024"), "{head}");
    let (head, body) = split(&ask("HEAD /metrics HTTP/1.1"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{head}"));
    assert!(head.starts_with("HTTP/1.1 200 OK") && length > 1000 && body.is_empty(), "{head}\n{body}");
    let (head, _) = split(&ask("POST /metrics HTTP/1.1"));
    assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed") && head.contains("\r\nAllow: GET, HEAD"), "{head}");
    assert!(ask("GET /nothing HTTP/1.1").starts_with("HTTP/1.1 404 Not Found"));
    assert!(ask("garbage").starts_with("HTTP/1.1 400 Bad Request"));
}

/// Connections to the metrics port that send nothing hold only
/// themselves: a scrape is answered while they wait out their two seconds
/// (one thread for all once held a scrape behind each of them in turn),
/// and past the few answered at once, one more is told 503 at once.
#[test]
fn silent_connections_to_the_metrics_port_hold_no_scrape() {
    let (_dir, _daemon, addr) = vrouterd_with_metrics("metrics-silent");
    let silent: Vec<_> = (0..6).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Under the two seconds the first silent one may hold a thread.
    let status = scrape(addr, Duration::from_millis(1500)).expect("answered while six connections sat silent");
    assert!(status.contains("200 OK"), "{status}");
    // Eight at once, all new: each holds its slot for its own two seconds
    // from its accept, just before the scrape's. (Two more beside the six
    // above passed for eight until a slow scrape let the six's two seconds
    // run out: CI on e713169 got 200.) The six are let go first.
    drop(silent);
    std::thread::sleep(Duration::from_millis(2500));
    let full: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Told 503 and closed at once; closed before the request was read, the
    // connection may be reset before the client reads the answer. Either
    // way, not left waiting.
    match scrape(addr, Duration::from_millis(1500)) {
        Ok(status) => assert!(status.contains("503"), "past eight at once: {status}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "past eight at once: {e}"),
    }
    drop(full);
}

fn tables() -> String {
    r#"
[[vrf]]
id = 0
name = "fabric"

[[vrf]]
id = 1
name = "blue"
gateway_v4 = "10.1.0.1"

[[vif]]
index = 0
name = "fab"
kind = "fabric"
vrf = 0
mac = "02:fa:00:00:00:01"
ipv4 = "192.168.77.1"

[[vif]]
index = 1
name = "pa1"
kind = "virtual"
vrf = 1
mac = "02:00:00:00:01:01"
ipv4 = "10.1.0.2"

[[vif]]
index = 2
name = "pa2"
kind = "virtual"
vrf = 1
mac = "02:00:00:00:01:02"
ipv4 = "10.1.0.3"

[[nexthop]]
type = "encap"
id = 1
oif = 1
dmac = "02:00:00:00:01:01"

[[nexthop]]
type = "encap"
id = 2
oif = 2
dmac = "02:00:00:00:01:02"

[[nexthop]]
type = "receive"
id = 3

[[route]]
vrf = 1
prefix = "10.1.0.2/32"
nh = 1

[[route]]
vrf = 1
prefix = "10.1.0.3/32"
nh = 2

[[route]]
vrf = 1
prefix = "10.1.0.1/32"
nh = 3
"#
    .to_string()
}

/// A pod: namespace `pod`'s eth0 (`ip`/32, MAC `mac`, gateway 10.1.0.1,
/// checksums finished in software) paired with veth `port` in `node`.
fn add_pod(node: &str, port: &str, pod: &str, ip: &str, mac: &str) {
    run(&[
        "ip", "link", "add", port, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod, "address", mac,
    ]);
    in_ns(node, &["ip", "link", "set", port, "up"]);
    in_ns(pod, &["ip", "link", "set", "eth0", "up"]);
    in_ns(pod, &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    in_ns(pod, &["ip", "route", "add", "10.1.0.1", "dev", "eth0"]);
    in_ns(pod, &["ip", "route", "add", "default", "via", "10.1.0.1", "dev", "eth0"]);
    let _ = Command::new("ip").args(["netns", "exec", pod, "ethtool", "-K", "eth0", "tx", "off"]).output();
}

struct Namespaces(Vec<String>, Option<std::process::Child>);

/// Fresh namespaces `names`, removed with the guard returned, the first a
/// node with its fabric `fab` (192.168.77.1/24; its peer `fabpeer` beside
/// it), both up.
fn node_with_fabric(names: &[&String]) -> Namespaces {
    let guard = Namespaces(names.iter().map(|n| n.to_string()).collect(), None);
    for ns in names {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        run(&["ip", "netns", "add", ns]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }
    let node = names[0];
    in_ns(node, &["ip", "link", "add", "fab", "type", "veth", "peer", "name", "fabpeer"]);
    in_ns(node, &["ip", "addr", "add", "192.168.77.1/24", "dev", "fab"]);
    in_ns(node, &["ip", "link", "set", "fab", "up"]);
    in_ns(node, &["ip", "link", "set", "fabpeer", "up"]);
    guard
}

/// Fresh namespaces for a test tagged `tag`: a node with its fabric
/// (`node_with_fabric`), pod a1 on its veth pa1 (10.1.0.2, as `tables()`
/// has it), and a second pod's namespace, its veth the caller's to make:
/// the guard, the node, a1 and the second pod.
fn node_with_a1(tag: &str) -> (Namespaces, String, String, String) {
    let id = std::process::id() % 100_000;
    let [node, a1, second] = ["n", "1", "2"].map(|n| format!("vrt-{tag}{n}-{id}"));
    let guard = node_with_fabric(&[&node, &a1, &second]);
    add_pod(&node, "pa1", &a1, "10.1.0.2", "02:00:00:00:01:01");
    (guard, node, a1, second)
}

/// `node_with_a1`, with the second pod a2 on its veth pa2 (10.1.0.3, as
/// `tables()` has it).
fn node_with_a1_a2(tag: &str) -> (Namespaces, String, String, String) {
    let (guard, node, a1, a2) = node_with_a1(tag);
    add_pod(&node, "pa2", &a2, "10.1.0.3", "02:00:00:00:01:02");
    (guard, node, a1, a2)
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Some(c) = &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

type Api = vrouter::api::client::Client;

/// Vif `vif`'s status, as the API gives it.
fn vif_status(api: &mut Api, vif: u32) -> serde_json::Value {
    api.call("get", serde_json::json!({ "vif": vif })).unwrap()["status"].clone()
}

/// Vif `vif`'s port state (`up`, `link down`, `down: ` and why, ...).
fn port_state(api: &mut Api, vif: u32) -> String {
    vif_status(api, vif)["port"].as_str().unwrap_or("").to_string()
}

/// True once vif `vif`'s port is `want`, within 5 s.
fn port_becomes(api: &mut Api, vif: u32, want: &str) -> bool {
    (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        port_state(api, vif) == want
    })
}

/// vrouterd in namespace `node` with one worker, `dataplane` added to its
/// configuration's section of that name (`frames = 2048\n`), its tables
/// file `tables`, its files in `dir`, killed with `guard`: its pid, and a
/// client of its API once the socket is there.
fn one_worker_vrouterd(guard: &mut Namespaces, node: &str, dir: &Scratch, tables: &str, dataplane: &str) -> (u32, Api) {
    std::fs::write(dir.join("tables.toml"), tables).unwrap();
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, format!("[node]\nfabric = \"fab\"\nunderlay = \"192.168.77.1\"\n[dataplane]\ncores = [0]\n{dataplane}xdp_mode = \"native\"\n[api]\nsocket = \"api.sock\"\n[metrics]\nlisten = \"\"\n[tables]\nfile = \"tables.toml\"\n[flows]\ncapacity = 1024\n")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", node, VROUTERD, "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    guard.1 = Some(child);
    let sock = dir.join("api.sock");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (pid, Api::connect(&sock, "test").unwrap())
}

/// A scrape of the metrics port (9432) of the vrouterd in namespace `node`.
fn node_metrics(node: &str) -> String {
    in_ns(
        node,
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9432; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"],
    )
}

fn ping(ns: &str, dst: &str, count: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", count, "-i", "0.2", "-W", "1", dst])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn vrouterd_forwards_changes_tables_through_the_api_and_detaches_on_sigterm() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    let id = std::process::id() % 100_000;
    let (node, a1, a2, a3) =
        (format!("vrt-d-{id}"), format!("vrt-da1-{id}"), format!("vrt-da2-{id}"), format!("vrt-da3-{id}"));
    // A fabric interface for the node (unused by the pods, but configured).
    let mut guard = node_with_fabric(&[&node, &a1, &a2, &a3]);
    for (port, pod, ip, mac) in [
        ("pa1", &a1, "10.1.0.2", "02:00:00:00:01:01"),
        ("pa2", &a2, "10.1.0.3", "02:00:00:00:01:02"),
        ("pa3", &a3, "10.1.0.4", "02:00:00:00:01:03"),
    ] {
        add_pod(&node, port, pod, ip, mac);
    }
    // a1's link gets two queues on both ends: its packets can land on
    // queue 1, which a socket bound only to queue 0 would never see. Native
    // XDP, because veth keeps packets on their queues only in native mode
    // (generic XDP sees every packet on queue 0).
    in_ns(&node, &["ethtool", "-L", "pa1", "rx", "2", "tx", "2"]);
    in_ns(&a1, &["ethtool", "-L", "eth0", "rx", "2", "tx", "2"]);
    let dir = Scratch::dir("run");
    std::fs::write(dir.join("tables.toml"), tables()).unwrap();
    let cfg = dir.join("vrouterd.toml");
    std::fs::write(&cfg, "[node]\nfabric = \"fab\"\nunderlay = \"192.168.77.1\"\n[dataplane]\ncores = [0, 1]\nxdp_mode = \"native\"\n[api]\nsocket = \"api.sock\"\n[tables]\nfile = \"tables.toml\"\n[flows]\nidle_timeout = 1\n").unwrap();
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &node, VROUTERD, "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    guard.1 = Some(child);
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("vrouterd said READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(in_ns(&node, &["ip", "-d", "link", "show", "pa1"]).contains("prog/xdp"), "pod port has its program");

    assert!(ping(&a1, "10.1.0.3", "3"), "a1 reaches a2 through vrouterd");
    // Many flows: a1's two queues spread them over both workers; what
    // worker 1 receives for a2 (whose one queue is worker 0's) is handed
    // over, as a2's answers to a1 are the other way (a1's queue 0 is
    // worker 1's).
    let rx = |ns: &str| in_ns(ns, &["cat", "/sys/class/net/eth0/statistics/rx_packets"]).trim().parse::<u64>().unwrap();
    let before = rx(&a2);
    in_ns(&a1, &["bash", "-c", "for i in $(seq 200); do echo -n x > /dev/udp/10.1.0.3/7777; done"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx(&a2) - before >= 200, "all 200 flows reached a2: {}", rx(&a2) - before);
    assert!(!ping(&a1, "10.1.0.4", "1"), "a3 is not there yet");

    // The API socket is there, mode 0660.
    let sock = dir.join("api.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660, "socket mode");
    let mut api = Api::connect(&sock, "test").unwrap();

    // Flows age on a quiet node too. With a policy, a1's UDP flows are
    // tracked; after the last frame no batch comes to drive ageing, and
    // still they go within the idle timeout (1 s) and a sweep period (1 s).
    api.call("add", serde_json::json!({ "policy": { "vrf": 1, "default": "allow" } })).unwrap();
    // Each from a port of its own: the kernel's ephemeral ports are random
    // and may repeat within 20 sockets, and a repeat is rightly one flow.
    let send = concat!(
        "import socket\n",
        "for port in range(40000, 40020):\n",
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n",
        "    s.bind(('', port))\n",
        "    s.sendto(b'x', ('10.1.0.3', 7000))\n",
        "    s.close()\n",
    );
    let stats =
        |api: &mut Api, what: &str| api.call("flow.stats", serde_json::json!({})).unwrap()[what].as_u64().unwrap();
    let created_before = stats(&mut api, "created");
    in_ns(&a1, &["python3", "-c", send]);
    // Counted as made, not as live: with the other tests' daemons busy on
    // the same two cores, the workers may take a while to get to them,
    // and the first may idle out (1 s) before the last is made.
    let mut made = 0;
    for _ in 0..100 {
        made = stats(&mut api, "created") - created_before;
        if made >= 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(made, 20, "each datagram from its own port is a flow, once");
    let pairs = |api: &mut Api| stats(api, "pairs");
    let gone = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        pairs(&mut api) == 0
    });
    assert!(gone, "the idle flows expired within 4 s with no traffic: {} left", pairs(&mut api));
    api.call("delete", serde_json::json!({ "policy": 1 })).unwrap();

    // A pod arrives through the API: its port opens while a1 keeps pinging a2.
    let steady = Command::new("ip")
        .args(["netns", "exec", &a1, "ping", "-c", "25", "-i", "0.1", "-W", "1", "10.1.0.3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    api.call(
        "batch",
        serde_json::json!({ "ops": [
            { "add": { "vif": { "index": 3, "name": "pa3", "kind": "virtual", "vrf": 1,
                                "mac": "02:00:00:00:01:03", "ipv4": "10.1.0.4" } } },
            { "add": { "nexthop": { "type": "encap", "id": 4, "oif": 3, "dmac": "02:00:00:00:01:03" } } },
            { "add": { "route": { "vrf": 1, "prefix": "10.1.0.4/32", "nh": 4 } } },
        ]}),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    if !ping(&a1, "10.1.0.4", "3") {
        run(&["kill", "-TERM", &pid.to_string()]);
        let out = guard.1.take().unwrap().wait_with_output().unwrap();
        panic!("a1 does not reach a3, added at run time; vrouterd said:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let steady = steady.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&steady.stdout);
    assert!(text.contains("25 received"), "a1 -> a2 lost nothing while a3's port came up:\n{text}");
    let port = api.call("get", serde_json::json!({ "vif": 3 })).unwrap()["status"]["port"].clone();
    assert_eq!(port, "up");

    // Live counters through the API and in Prometheus form.
    std::thread::sleep(Duration::from_millis(300));
    let st = api.call("stats", serde_json::json!({})).unwrap();
    let a1_rx = st["vifs"].as_array().unwrap().iter().find(|v| v["name"] == "pa1").unwrap()["rx_packets"].clone();
    assert!(a1_rx.as_u64().unwrap() >= 200, "a1's frames counted while running: {a1_rx}");
    // Where the time went: the sampled batches were timed in every stage.
    let timed: Vec<&serde_json::Value> =
        st["workers"].as_array().unwrap().iter().map(|w| &w["runtime"]).filter(|r| r["packets"] != 0).collect();
    assert!(!timed.is_empty(), "some batch was timed: {}", st["workers"]);
    for rt in &timed {
        for stage in rt["stages"].as_array().unwrap() {
            assert!(stage["cycles"].as_u64().unwrap() > 0, "{stage} took time");
            assert!(stage["ns_per_packet"].as_f64().unwrap() > 0.0, "{stage} in nanoseconds too");
        }
    }
    let runtime =
        Command::new(env!("CARGO_BIN_EXE_vrctl")).args(["--socket"]).arg(&sock).arg("runtime").output().unwrap();
    let text = String::from_utf8_lossy(&runtime.stdout);
    assert!(runtime.status.success() && text.starts_with("WORKER") && text.contains("rewrite"), "{text}");
    assert!(text.contains("busy"), "busy time per packet, once frames have come: {text}");
    // The frames the fast lane left to the general path: a1's and a3's ARP
    // at least, and never more than came in.
    let sum = |k: &str| st["workers"].as_array().unwrap().iter().map(|w| w[k].as_u64().unwrap()).sum::<u64>();
    let (general, rx) = (sum("general_path"), sum("rx"));
    assert!(general > 0 && general <= rx, "{general} of {rx} frames to the general path");
    assert!(text.lines().any(|l| l.contains("general") && l.contains("% of rx")), "{text}");
    // By cause: they add up, and the ARP is there.
    let by_cause = |c: &str| -> u64 {
        st["workers"].as_array().unwrap().iter().map(|w| w["general_causes"][c].as_u64().unwrap()).sum()
    };
    let causes: u64 = vrouter::stats::GeneralCause::ALL.iter().map(|c| by_cause(c.as_str())).sum();
    assert_eq!(causes, general, "{}", st["workers"]);
    assert!(by_cause("arp") > 0, "{}", st["workers"]);
    // By vif, read at the same moment: they add up too, and a1's ARP is a1's.
    let vifs = st["vifs"].as_array().unwrap();
    assert_eq!(vifs.iter().map(|v| v["general_path"].as_u64().unwrap()).sum::<u64>(), general, "{vifs:?}");
    let pa1 = vifs.iter().find(|v| v["name"] == "pa1").unwrap();
    assert!(pa1["general_path"].as_u64().unwrap() > 0, "{pa1}");
    assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some("arp") && l.ends_with("% of general")), "{text}");
    // A client that sends a request without end first (64 MiB, no line
    // end): it is cut off without vrouterd holding what it sent (its peak
    // resident set grows by far less), and the scrape after it is answered.
    let peak_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let peak_before = peak_kib();
    let endless = in_ns(
        &node,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9432; head -c 67108864 /dev/zero >&3 2>/dev/null; cat <&3; echo sent",
        ],
    );
    assert!(endless.contains("sent"), "{endless}");
    // VmHWM is the larger of the recorded peak and the resident set as
    // last counted, and that count can fall back when vrouterd frees
    // memory: so the second read may be the lower one.
    let grown = peak_kib().saturating_sub(peak_before);
    assert!(grown < 16 * 1024, "vrouterd kept the endless request: peak resident set up {grown} KiB");
    let metrics = node_metrics(&node);
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert!(sample("vrouter_vif_rx_packets_total{vif=\"1\",name=\"pa1\"}") >= 200.0);
    assert_eq!(sample("vrouter_vif_port_up{vif=\"1\",name=\"pa1\"}"), 1.0);
    assert_eq!(sample("vrouter_table_entries{table=\"vifs\"}"), 4.0);
    assert!(sample("vrouter_worker_seconds_total{worker=\"1\"}") > 0.0);
    assert!(metrics.contains("# TYPE vrouter_worker_general_path_packets_total counter"), "{metrics}");
    let arp: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vrouter_worker_general_path_cause_packets_total{") && l.contains("cause=\"arp\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(arp > 0.0, "ARP by cause: {metrics}");
    assert!(sample("vrouter_vif_general_path_packets_total{vif=\"1\",name=\"pa1\"}") > 0.0, "{metrics}");
    assert!(metrics.contains("# TYPE vrouter_drops_total counter") && metrics.contains("reason=\"no_route\""));
    let flow_stats = api.call("flow.stats", serde_json::json!({})).unwrap();
    assert_eq!(Some(sample("vrouter_flow_capacity") as u64), flow_stats["capacity"].as_u64(), "{metrics}");
    assert!(metrics.contains("vrouter_vif_flow_pairs{vif=\"1\",name=\"pa1\"}"), "{metrics}");

    // Frames the kernel loses before vrouterd sees them, before any
    // counter of vrouterd's, are shown from the kernel's own count (they
    // vanished unseen before): here a1's datagrams past its port's fill
    // ring while vrouterd is stopped.
    let kernel_dropped = |api: &mut Api| {
        let vif = api.call("get", serde_json::json!({ "vif": 1 })).unwrap();
        vif["status"]["kernel"]["rx_dropped"].as_u64().unwrap_or_else(|| panic!("{vif}"))
    };
    let before = kernel_dropped(&mut api);
    run(&["kill", "-STOP", &pid.to_string()]);
    let burst = "import socket;s=socket.socket(2,2)\nfor i in range(2000): s.sendto(b'x',('10.1.0.3',9))";
    let sent = Command::new("ip").args(["netns", "exec", &a1, "python3", "-c", burst]).status();
    run(&["kill", "-CONT", &pid.to_string()]);
    assert!(sent.unwrap().success(), "a1 sent its burst");
    let seen = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        kernel_dropped(&mut api) >= before + 2
    });
    assert!(seen, "the kernel's drops shown: {} after {before}", kernel_dropped(&mut api));
    let sample =
        |metrics: &str, name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
    let m = node_metrics(&node);
    assert!(sample(&m, "vrouter_vif_kernel_rx_dropped_total{vif=\"1\",name=\"pa1\"}") >= Some(before + 2), "{m}");
    // And where an incident starts, `vrctl dropstats`, for the node and
    // for the vif: a line for each vif that lost some, none for the rest
    // (a port's first frame may be lost before its fill ring is filled, so
    // which others lost some is not for the test to say).
    for args in [&["dropstats"][..], &["dropstats", "--vif", "pa1"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_vrctl")).arg("--socket").arg(&sock).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.trim_start().starts_with("vif0/1 (pa1): rx_dropped "));
        assert!(line.is_some() && text.contains("dropped in the kernel before vrouterd saw them"), "{args:?}:\n{text}");
        let lost = |l: &str| -> u64 {
            let n = |k: &str| l.split(k).nth(1).and_then(|v| v.split(',').next()?.trim().parse::<u64>().ok());
            n("rx_dropped ").unwrap_or(0) + n("rx_ring_full ").unwrap_or(0)
        };
        assert!(text.lines().filter(|l| l.contains("): rx_dropped ")).all(|l| lost(l) > 0), "{text}");
    }

    // What a pod sends to its own link alone is told apart from a missing
    // route: pings to all nodes on the link, and to the limited broadcast
    // (which nothing answers, so ping's status is not asked for).
    let dropped = |api: &mut Api, reason: &str| {
        let st = api.call("stats", serde_json::json!({})).unwrap();
        st["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason).unwrap()["count"].as_u64().unwrap()
    };
    let link_local = dropped(&mut api, "link_local");
    in_ns(&a1, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "ff02::1%eth0"]);
    let broadcast = ["ip", "netns", "exec", &a1, "ping", "-b", "-c", "2", "-i", "0.2", "-W", "1", "255.255.255.255"];
    Command::new(broadcast[0]).args(&broadcast[1..]).output().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(dropped(&mut api, "link_local") >= link_local + 4, "counted as link_local, not as no_route");

    // `vrctl vifdump` shows a1's frames as vrouterd saw them, which tcpdump
    // on pa1 cannot (XDP redirects them first), read here by tshark from
    // its pcapng: a1's pings to a2 in, each with where it went, a2's
    // answers out, and a ping to an address with no route, with why it
    // dropped and why the fast lane left it to the general path. a1's
    // frames land on both queues, so both workers copy them.
    let pcap = dir.join("pa1.pcapng");
    let dump = Command::new(env!("CARGO_BIN_EXE_vrctl"))
        .arg("--socket")
        .arg(&sock)
        .args(["vifdump", "pa1", "--duration", "3", "-w"])
        .arg(&pcap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    in_ns(&a1, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.1.0.3"]);
    let unrouted = ["ip", "netns", "exec", &a1, "ping", "-c", "1", "-W", "1", "10.9.9.9"];
    Command::new(unrouted[0]).args(&unrouted[1..]).output().unwrap();
    let dump = dump.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&dump.stderr);
    assert!(dump.status.success() && said.contains("0 missed"), "{said}");
    let fields = ["frame.packet_flags_direction", "ip.src", "ip.dst", "icmp.type", "frame.comment"];
    let mut tshark = vec!["tshark", "-r", pcap.to_str().unwrap(), "-Y", "icmp", "-T", "fields"];
    tshark.extend(fields.iter().flat_map(|f| ["-e", f]));
    let seen = run(&tshark);
    let count = |line: &str| seen.lines().filter(|l| *l == line).count();
    assert_eq!(count("0x00000001\t10.1.0.2\t10.1.0.3\t8\ttx vif0/2 (pa2)"), 3, "requests in:\n{seen}");
    assert_eq!(count("0x00000002\t10.1.0.3\t10.1.0.2\t0\t"), 3, "answers out:\n{seen}");
    let unrouted = "0x00000001\t10.1.0.2\t10.9.9.9\t8\tdrop no_route, general path: no_route";
    assert_eq!(count(unrouted), 1, "dropped:\n{seen}");

    // A pod whose interface offloads TX checksums sends its segments with
    // the checksum unfinished, for a NIC that AF_XDP does not stand in
    // for: its SYNs are dropped, counted and named in the log, while ping
    // (checksummed by the kernel itself) works. Once the offload is off, the
    // same connection is answered: refused, as nothing listens on a2.
    let connect = concat!(
        "import socket\n",
        "s = socket.socket()\n",
        "s.settimeout(1.5)\n",
        "try:\n",
        "    s.connect(('10.1.0.3', 8081))\n",
        "    print('connected')\n",
        "except ConnectionRefusedError:\n",
        "    print('refused')\n",
        "except socket.timeout:\n",
        "    print('timed out')\n",
    );
    let unfinished = |api: &mut Api| dropped(api, "unfinished_checksum");
    in_ns(&a1, &["ethtool", "-K", "eth0", "tx", "on"]);
    assert!(ping(&a1, "10.1.0.3", "1"), "ping works with the offload on");
    assert_eq!(in_ns(&a1, &["python3", "-c", connect]).trim(), "timed out");
    std::thread::sleep(Duration::from_millis(300));
    let syns = unfinished(&mut api);
    assert!(syns >= 1, "a1's SYNs were counted");
    // Its datagrams too, where they would open a flow (the VRF tracks
    // them under a policy): a DNS-like query to a2, whose listener hears
    // it only once the offload is off.
    api.call("add", serde_json::json!({ "policy": { "vrf": 1, "default": "allow" } })).unwrap();
    let listen = concat!(
        "import socket\n",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n",
        "s.bind(('0.0.0.0', 5300))\n",
        "s.settimeout(1.5)\n",
        "try:\n",
        "    print(s.recv(64))\n",
        "except socket.timeout:\n",
        "    print('nothing')\n",
    );
    let heard = |ns: &str| {
        let listener = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", listen])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        in_ns(&a1, &["bash", "-c", "echo -n query > /dev/udp/10.1.0.3/5300"]);
        String::from_utf8_lossy(&listener.wait_with_output().unwrap().stdout).trim().to_string()
    };
    assert_eq!(heard(&a2), "nothing", "a datagram with its checksum left for the NIC");
    assert!(unfinished(&mut api) > syns, "counted as unfinished_checksum");
    // All of them against a1's vif, which `vrctl dropstats --vif` shows.
    let on_vif = |vif: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_vrctl"))
            .args(["--json", "--socket"])
            .arg(&sock)
            .args(["dropstats", "--vif", vif])
            .output()
            .unwrap();
        let drops: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let found = drops.as_array().and_then(|d| d.iter().find(|d| d["reason"] == "unfinished_checksum"));
        found.and_then(|d| d["count"].as_u64()).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    assert_eq!((on_vif("pa1"), on_vif("pa2")), (unfinished(&mut api), 0), "dropstats --vif");
    in_ns(&a1, &["ethtool", "-K", "eth0", "tx", "off"]);
    assert_eq!(heard(&a2), "b'query'", "heard once a1's offload was off");
    api.call("delete", serde_json::json!({ "policy": 1 })).unwrap();
    assert_eq!(in_ns(&a1, &["python3", "-c", connect]).trim(), "refused", "a2 answered once a1's offload was off");

    // a2's vif moved to another interface has its port moved with it:
    // closed and detached on the old, opened on the new (it stayed on the
    // old, shown as the new, before); moved back, it forwards again.
    in_ns(&node, &["ip", "link", "add", "pa2x", "type", "veth", "peer", "name", "pa2y"]);
    in_ns(&node, &["ip", "link", "set", "pa2x", "up"]);
    in_ns(&node, &["ip", "link", "set", "pa2y", "up"]);
    let move_a2 = |api: &mut Api, to: &str| {
        let mut vif = api.call("get", serde_json::json!({ "vif": 2 })).unwrap();
        vif["name"] = serde_json::json!(to);
        api.call("update", serde_json::json!({ "vif": vif })).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let port = api.call("get", serde_json::json!({ "vif": 2 })).unwrap()["status"]["port"].clone();
        assert_eq!(port, "up", "a2's port on {to}");
    };
    let xdp_on = |dev: &str| in_ns(&node, &["ip", "-d", "link", "show", dev]).contains("prog/xdp");
    move_a2(&mut api, "pa2x");
    assert!(xdp_on("pa2x") && !xdp_on("pa2"), "the port moved to pa2x");
    assert!(!ping(&a1, "10.1.0.3", "1"), "a2 is not on pa2x");
    move_a2(&mut api, "pa2");
    assert!(xdp_on("pa2") && !xdp_on("pa2x"), "the port moved back");
    assert!(ping(&a1, "10.1.0.3", "2"), "a1 reaches a2 again");

    // a2's link down: what is routed to a2 is its vif's tx_dropped, in
    // the API, the metrics and dropstats, and no longer counted as sent.
    let vif2 = |api: &mut Api| {
        let s = vif_status(api, 2);
        (s["tx_packets"].as_u64(), s["tx_dropped"].as_u64())
    };
    // And the workers' count of why: the link down, no other cause.
    let unsent_by_cause = |api: &mut Api| -> std::collections::BTreeMap<String, u64> {
        let st = api.call("stats", serde_json::json!({})).unwrap();
        let mut by = std::collections::BTreeMap::new();
        for w in st["workers"].as_array().unwrap() {
            for (cause, n) in w["unsent"].as_object().unwrap() {
                *by.entry(cause.clone()).or_default() += n.as_u64().unwrap();
            }
        }
        by
    };
    in_ns(&node, &["ip", "link", "set", "pa2", "down"]);
    assert!(port_becomes(&mut api, 2, "link down"), "pa2 set down: {}", port_state(&mut api, 2));
    std::thread::sleep(Duration::from_millis(300)); // the last ping's counts published
    let (sent, unsent) = vif2(&mut api);
    let causes = unsent_by_cause(&mut api);
    assert!(!ping(&a1, "10.1.0.3", "3"), "a2's link is down");
    std::thread::sleep(Duration::from_millis(300)); // the workers' counters, published every 100 ms
    let (sent_down, unsent_down) = vif2(&mut api);
    let lost = unsent_down.unwrap() - unsent.unwrap();
    assert_eq!((sent_down, lost), (sent, 3), "the three echo requests routed to a2: not sent, tx_dropped");
    let mut more = unsent_by_cause(&mut api);
    more.retain(|cause, n| *n != causes[cause]);
    let link_down = more.get("link_down").map(|n| n - causes["link_down"]);
    assert_eq!((link_down, more.len()), (Some(3), 1), "the workers' causes of the three: {more:?}");
    let metrics = node_metrics(&node);
    let metric = format!("\nvrouter_vif_tx_dropped_total{{vif=\"2\",name=\"pa2\"}} {}\n", unsent_down.unwrap());
    assert!(metrics.contains(&metric), "{metric} in\n{metrics}");
    let dropstats =
        Command::new(env!("CARGO_BIN_EXE_vrctl")).arg("--socket").arg(&sock).arg("dropstats").output().unwrap();
    let dropstats = String::from_utf8_lossy(&dropstats.stdout);
    assert!(
        dropstats.contains(&format!("routed out but not sent (no port open for the vif, its link down, or its transmit ring full):\n  vif0/2 (pa2): tx_dropped {}\n", unsent_down.unwrap())),
        "{dropstats}"
    );
    let why = dropstats.lines().find(|l| l.starts_with("  why, over the workers (per worker: vrctl runtime): "));
    let link_down = format!("link_down {} (a fault)", more["link_down"]);
    assert!(why.is_some_and(|l| l.contains(&link_down)), "{link_down} in\n{dropstats}");
    in_ns(&node, &["ip", "link", "set", "pa2", "up"]);
    assert!(ping(&a1, "10.1.0.3", "2"), "a1 reaches a2 with its link up again");

    // A vif whose interface comes later (a pod's veth made after its vif)
    // gets its port when it comes, without another table change.
    let mut late = api.call("get", serde_json::json!({ "vif": 2 })).unwrap();
    late["index"] = serde_json::json!(5);
    late["name"] = serde_json::json!("pa5");
    late["mac"] = serde_json::json!("02:00:00:00:01:05");
    late["ipv4"] = serde_json::json!("10.1.0.9");
    api.call("add", serde_json::json!({ "vif": late })).unwrap();
    let port5 = |api: &mut Api| port_state(api, 5);
    std::thread::sleep(Duration::from_millis(300));
    let why = port5(&mut api);
    assert!(why.starts_with("down: interface pa5: ") && why.contains("No such device"), "{why}");
    in_ns(&node, &["ip", "link", "add", "pa5", "type", "veth", "peer", "name", "pa5p"]);
    in_ns(&node, &["ip", "link", "set", "pa5", "up"]);
    let port5_becomes = |api: &mut Api, want: &str| port_becomes(api, 5, want);
    // Its peer still down, the port is open on a link with no carrier, and
    // says so (it said "up" before, while the kernel sent nothing).
    let came = port5_becomes(&mut api, "no carrier");
    assert!(came && xdp_on("pa5"), "pa5's port opened once pa5 came: {}", port5(&mut api));
    in_ns(&node, &["ip", "link", "set", "pa5p", "up"]);
    assert!(port5_becomes(&mut api, "up"), "the peer up: {}", port5(&mut api));
    in_ns(&node, &["ip", "link", "set", "pa5", "down"]);
    assert!(port5_becomes(&mut api, "link down"), "pa5 set down: {}", port5(&mut api));
    let metrics = node_metrics(&node);
    assert!(metrics.contains("\nvrouter_vif_port_up{vif=\"5\",name=\"pa5\"} 0\n"), "{metrics}");
    in_ns(&node, &["ip", "link", "set", "pa5", "up"]);
    assert!(port5_becomes(&mut api, "up"), "pa5 up again: {}", port5(&mut api));
    api.call("delete", serde_json::json!({ "vif": 5 })).unwrap();

    // a3 leaves and a2's route points at discard, in one batch.
    api.call(
        "batch",
        serde_json::json!({ "ops": [
            { "delete": { "route": { "vrf": 1, "prefix": "10.1.0.4/32" } } },
            { "delete": { "nexthop": 4 } },
            { "delete": { "vif": 3 } },
            { "update": { "route": { "vrf": 1, "prefix": "10.1.0.3/32", "nh": 0 } } },
        ]}),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ping(&a1, "10.1.0.3", "2"), "after the change a2 is unreachable");
    assert!(
        !in_ns(&node, &["ip", "-d", "link", "show", "pa3"]).contains("prog/xdp"),
        "a3's port was closed and detached"
    );
    // SIGHUP changes nothing now: tables change only through the API.
    run(&["kill", "-HUP", &pid.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ping(&a1, "10.1.0.3", "1"), "SIGHUP did not bring the tables file back");
    drop(api);

    // SIGTERM: clean exit, nothing attached.
    run(&["kill", "-TERM", &pid.to_string()]);
    let child = guard.1.take().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vrouterd exited cleanly:\n{log}");
    assert!(log.contains("port up") && log.contains("copy"), "the log says which mode each port got:\n{log}");
    assert!(log.contains("interface=pa1 queues=2"), "both of a1's queues were bound:\n{log}");
    assert!(log.contains("xdp=\"native\""), "the log says the mode each port got from the kernel:\n{log}");
    // Queue q of vif v's port is worker (v + q) % 2's: the pods' one-queue
    // veths are spread over both workers, not all worker 0's.
    for (port, queue, worker) in [("pa1", 0, 1), ("pa1", 1, 0), ("pa2", 0, 0), ("pa3", 0, 1), ("fab", 0, 0)] {
        let bound = format!("interface={port} queue={queue} worker={worker}");
        assert!(log.contains(&bound), "{bound}:\n{log}");
    }
    let field = |l: &str, k: &str| {
        l.split(&format!("{k}="))
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for w in ["worker=0", "worker=1"] {
        let stopped =
            log.lines().find(|l| l.contains("worker stopped") && l.contains(w)).unwrap_or_else(|| panic!("{log}"));
        assert!(
            field(stopped, "rx") > 0 && field(stopped, "handed_off") > 0,
            "{w} received, and handed the other frames for the ports it has no socket on: {stopped}"
        );
    }
    assert!(log.contains("SIGHUP: nothing to reload"), "{log}");
    let advice = log.lines().find(|l| l.contains("checksums left for a NIC")).unwrap_or_else(|| panic!("{log}"));
    assert!(advice.contains("interface=\"pa1\"") && advice.contains("ethtool -K eth0 tx off"), "{advice}");
    // What the links told, each once though they are read every second:
    // the fabric's MAC is not the vif's (fab was made with a MAC of its
    // own), pa5 had no carrier, was set down and up.
    let once = |what: &str, interface: &str| {
        let n = log.lines().filter(|l| l.contains(what) && l.contains(&format!("interface={interface}"))).count();
        assert_eq!(n, 1, "{what:?} for {interface} once:\n{log}");
    };
    once("the fabric vif's MAC 02:fa:00:00:00:01 is not its interface's", "fab");
    once("no carrier: nothing is sent on the port", "pa5");
    once("link down: nothing is sent on the port", "pa5");
    assert!(log.lines().filter(|l| l.contains("link up") && l.contains("interface=pa5")).count() >= 2, "{log}");
    let _ = notify.recv(&mut buf); // STOPPING=1
    assert!(!sock.exists(), "the API socket was removed on exit");
    for dev in ["pa1", "pa2", "fab"] {
        let link = in_ns(&node, &["ip", "-d", "link", "show", dev]);
        assert!(!link.contains("prog/xdp"), "{dev} still has an XDP program after SIGTERM:\n{link}");
    }
}

#[test]
fn the_packaged_configuration_is_valid() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/vrouterd.toml");
    let out = Command::new(VROUTERD).args(["--config", cfg, "--check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Its worker has core 1, as on a node that keeps core 0 for the
    // system: a one-core machine is told so.
    if vrouter::io::allowed_cores().unwrap().contains(&1) {
        assert!(out.status.success(), "{err}");
    } else {
        assert!(err.contains("dataplane.cores: core 1 is not one vrouterd may run on here"), "{err}");
    }
}

#[test]
fn the_packaged_intent_is_valid() {
    let intent = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/intent.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_vrouter-agent")).args(["--check", "--intent", intent]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 networks, 2 pods, 2 remotes, 1 services, 2 policies"), "{text}");
    // With a policy port the agent would be refused, --check fails too,
    // saying where: a check that passed it would send the operator on.
    let scratch = Scratch::dir("intent-check");
    let bad = scratch.join("intent.toml");
    let packaged = std::fs::read_to_string(intent).unwrap();
    assert_eq!(packaged.matches("dport = 80\n").count(), 2);
    std::fs::write(&bad, packaged.replacen("dport = 80\n", "dport = \"http\"\n", 1)).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_vrouter-agent")).args(["--check", "--intent"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("policy of \"default-pod-network\"") && err.contains("\"http\""),
        "{err}"
    );
}

/// Pods come and go under a running vrouterd: a port closed through the
/// API gives its UMEM frames back to the worker, and a pod's veth deleted
/// (and made again under its name) neither stops vrouterd nor leaves the
/// vif without a port. Before, each closed port took its frames with it
/// (about a thousand: after a dozen pods the node had none to receive
/// into), and the first frame sent to a deleted veth stopped the worker,
/// and vrouterd with it.
#[test]
fn pods_coming_and_going_keep_their_frames_and_ports() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    let id = std::process::id() % 100_000;
    let (node, a1, a2) = (format!("vrt-cn-{id}"), format!("vrt-c1-{id}"), format!("vrt-c2-{id}"));
    let mut guard = node_with_fabric(&[&node, &a1, &a2]);
    let pod = |port: &str, ns: &str, ip: &str, mac: &str| add_pod(&node, port, ns, ip, mac);
    pod("pa1", &a1, "10.1.0.2", "02:00:00:00:01:01");
    // a2's veth is made after vrouterd starts, as after a reboot, when the
    // tables file names pods whose veths are not back yet.
    in_ns(&node, &["ip", "link", "add", "pc", "type", "veth", "peer", "name", "pcpeer"]);
    in_ns(&node, &["ip", "link", "set", "pc", "up"]);
    in_ns(&node, &["ip", "link", "set", "pcpeer", "up"]);
    let dir = Scratch::dir("churn");
    // One worker, 4096 frames: three ports hold 1536 in their fill rings.
    let (pid, mut api) = one_worker_vrouterd(&mut guard, &node, &dir, &tables(), "frames = 4096\n");
    // vrouterd started (it refused to before), a2's port waiting for its veth.
    let why = port_state(&mut api, 2);
    assert!(why.starts_with("down: interface pa2: "), "{why}");
    pod("pa2", &a2, "10.1.0.3", "02:00:00:00:01:02");
    let came = port_becomes(&mut api, 2, "up");
    assert!(came, "a2's port opened once its veth came: {}", port_state(&mut api, 2));
    assert!(ping(&a1, "10.1.0.3", "2"), "a1 reaches a2 through vrouterd");

    // A dozen ports opened and closed.
    let vif = serde_json::json!({ "vif": { "index": 5, "name": "pc", "kind": "virtual", "vrf": 1,
                                            "mac": "02:00:00:00:05:01", "ipv4": "10.1.0.9" } });
    for _ in 0..12 {
        api.call("add", vif.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        api.call("delete", serde_json::json!({ "vif": 5 })).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ping(&a1, "10.1.0.3", "2"), "a1 still reaches a2");

    // a2's veth deleted while a1 sends to it, then made again.
    in_ns(&node, &["ip", "link", "del", "pa2"]);
    let _ = ping(&a1, "10.1.0.3", "3");
    std::thread::sleep(Duration::from_millis(1500));
    let vifs = api.call("dump", serde_json::json!({ "object": "vif" })).unwrap().to_string();
    assert!(vifs.contains("No such device"), "vif 2's port is down, saying why: {vifs}");
    pod("pa2", &a2, "10.1.0.3", "02:00:00:00:01:02");
    let mut back = false;
    for _ in 0..20 {
        if ping(&a1, "10.1.0.3", "1") {
            back = true;
            break;
        }
    }
    assert!(back, "vif 2 got a port on the new pa2, and a1 reaches a2 again");
    drop(api);

    run(&["kill", "-TERM", &pid.to_string()]);
    let out = guard.1.take().unwrap().wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vrouterd ran on and exited cleanly:\n{log}");
    assert!(log.contains("the port's interface was deleted or made again vif=2"), "{log}");
    // Every frame is in a port's stash or fill ring, but for a few in
    // flight: none went with the closed ports.
    let held = |field: &str| -> u64 {
        log.lines()
            .filter(|l| l.contains("af_xdp counters"))
            .filter_map(|l| l.split(&format!("{field}=")).nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (stashed, filled) = (held("free_frames"), held("fill_ring"));
    assert!(
        filled > 0 && stashed + filled >= 4096 - 64,
        "{stashed} stashed and {filled} in fill rings of 4096:\n{log}"
    );
}

/// More pods on one worker than its UMEM can give a full fill ring each
/// (512 frames): every pod's port still gets frames to receive into.
/// Before, the first ports filled their rings to 512 and idle pods kept
/// them, so that with one worker's 2048 frames the fifth pod on had none:
/// the kernel dropped nearly all it sent (`fill_ring_empty`), and at the
/// default 16,384 frames the same happened from the 32nd pod.
#[test]
fn more_pods_than_full_fill_rings_all_get_frames_to_receive_into() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    const PODS: usize = 12;
    let id = std::process::id() % 100_000;
    let node = format!("vrt-mn-{id}");
    let pods: Vec<String> = (1..=PODS).map(|i| format!("vrt-m{i}-{id}")).collect();
    let names: Vec<&String> = std::iter::once(&node).chain(&pods).collect();
    let mut guard = node_with_fabric(&names);
    let mut tables = String::from(
        "[[vrf]]\nid = 0\nname = \"fabric\"\n\n[[vrf]]\nid = 1\nname = \"blue\"\ngateway_v4 = \"10.1.0.1\"\n\n\
         [[vif]]\nindex = 0\nname = \"fab\"\nkind = \"fabric\"\nvrf = 0\nmac = \"02:fa:00:00:00:01\"\nipv4 = \"192.168.77.1\"\n",
    );
    for (i, pod) in pods.iter().enumerate().map(|(i, p)| (i + 1, p)) {
        let (port, ip, mac) = (format!("pm{i}"), format!("10.1.0.{}", i + 1), format!("02:00:00:00:01:{i:02x}"));
        add_pod(&node, &port, pod, &ip, &mac);
        tables += &format!(
            "\n[[vif]]\nindex = {i}\nname = \"{port}\"\nkind = \"virtual\"\nvrf = 1\nmac = \"{mac}\"\nipv4 = \"{ip}\"\n\n\
             [[nexthop]]\ntype = \"encap\"\nid = {i}\noif = {i}\ndmac = \"{mac}\"\n\n\
             [[route]]\nvrf = 1\nprefix = \"{ip}/32\"\nnh = {i}\n"
        );
    }
    in_ns(&node, &["ip", "link", "set", "fab", "address", "02:fa:00:00:00:01"]);
    let dir = Scratch::dir("pods");
    // One worker, 2048 frames: 13 ports would want 6656 at 512 each.
    let (_, mut api) = one_worker_vrouterd(&mut guard, &node, &dir, &tables, "frames = 2048\n");
    let all_up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        (1..=PODS as u32).all(|v| port_state(&mut api, v) == "up")
    });
    assert!(
        all_up,
        "every pod's port up: {:?}",
        (1..=PODS as u32).map(|v| port_state(&mut api, v)).collect::<Vec<_>>()
    );
    assert!(ping(&pods[0], "10.1.0.3", "2") && ping(&pods[PODS - 1], "10.1.0.3", "2"), "pods 1 and 12 reach pod 2");
    // The kernel's counters are read once a second.
    std::thread::sleep(Duration::from_millis(1200));
    // Pods 1 and 12 send 2000 datagrams each to pod 2, 40 at a time: half
    // of what each port's fill ring holds now (78), where pod 12's had none.
    let blast = "import socket, time\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for burst in range(50):\n    \
                     for i in range(40):\n        \
                         s.sendto(b'x' * 64, ('10.1.0.3', 9999))\n    \
                     time.sleep(0.005)\n";
    for sender in [1, PODS] {
        let before = vif_status(&mut api, sender as u32);
        in_ns(&pods[sender - 1], &["python3", "-c", blast]);
        // The kernel's counters are read once a second.
        std::thread::sleep(Duration::from_millis(1200));
        let after = vif_status(&mut api, sender as u32);
        let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        let empty = after["kernel"]["fill_ring_empty"].as_u64().unwrap_or(0)
            - before["kernel"]["fill_ring_empty"].as_u64().unwrap_or(0);
        assert!(
            delta("rx_packets") >= 1900 && empty <= 100,
            "pod {sender}: vrouterd received {} of 2000, the kernel found its fill ring empty for {empty}: {after}",
            delta("rx_packets")
        );
    }
}

#[test]
fn a_worker_polls_on_after_a_frame_so_that_a_conversation_keeps_it_awake() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    let (mut guard, node, a1, _a2) = node_with_a1_a2("b");
    // Wake-ups while a1 pings a2 a hundred times, 10 ms apart, with each
    // busy_poll_us. Only this test's pods send, and a worker that sleeps
    // between pings is woken by each.
    let mut wakeups = Vec::new();
    for busy_poll_us in [0, 1_000_000] {
        let dir = Scratch::dir(&format!("busy-poll-{busy_poll_us}"));
        let (pid, mut api) =
            one_worker_vrouterd(&mut guard, &node, &dir, &tables(), &format!("busy_poll_us = {busy_poll_us}\n"));
        assert!(port_becomes(&mut api, 1, "up") && port_becomes(&mut api, 2, "up"), "the pods' ports opened");
        assert!(ping(&a1, "10.1.0.3", "2"), "a1 reaches a2 through vrouterd");
        let woken = |api: &mut Api| {
            // Workers publish their counters every 100 ms.
            std::thread::sleep(Duration::from_millis(300));
            api.call("stats", serde_json::json!({})).unwrap()["workers"][0]["wakeups"].as_u64().unwrap()
        };
        let before = woken(&mut api);
        let out = in_ns(&a1, &["ping", "-c", "100", "-i", "0.01", "-q", "10.1.0.3"]);
        assert!(out.contains("100 received"), "{out}");
        wakeups.push(woken(&mut api) - before);
        drop(api);
        run(&["kill", "-TERM", &pid.to_string()]);
        let out = guard.1.take().unwrap().wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && log.contains(" wakeups="), "its exit log says its wake-ups:\n{log}");
    }
    // Sleeping at once, each ping's request woke the worker (104 for 100,
    // measured; its answer comes back within the send that delivers the
    // request, mostly), less those that came while its 10 ms timeout had it
    // up; polling on for a second, none after the first did (0, measured).
    assert!(wakeups[0] >= 80, "busy_poll_us = 0: {} wake-ups for 100 pings", wakeups[0]);
    assert!(wakeups[1] <= 3, "busy_poll_us = 1000000: {} wake-ups for 100 pings", wakeups[1]);
}

/// A port opened while its pod sends: the kernel finds frames in its fill
/// ring from the first packet. Before, vrouterd steered the interface's
/// queue to the socket as it opened it, and the worker filled the socket's
/// fill ring at its next round, up to 10 ms later: a pod's first packets
/// (its ARP for the gateway, its first SYN) were dropped as fill_ring_empty.
#[test]
fn a_port_opened_while_its_pod_sends_loses_none_of_the_first_frames() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    let (mut guard, node, _a1, b) = node_with_a1("f");
    add_pod(&node, "pc", &b, "10.1.0.9", "02:00:00:00:05:01");
    // b knows the gateway's MAC (vrouterd's), so that it sends its pings
    // before any port answers its ARP. Its answers have no route back, and
    // ping, unanswered, sends about 90 a second (120-130 counted in each
    // round, measured); the build before lost 1-3 of them to
    // fill_ring_empty each time the port opened.
    in_ns(&b, &["ip", "neigh", "replace", "10.1.0.1", "lladdr", "00:00:5e:00:01:00", "dev", "eth0"]);
    let dir = Scratch::dir("first-frames");
    let (_, mut api) = one_worker_vrouterd(&mut guard, &node, &dir, &tables(), "");
    assert!(port_becomes(&mut api, 1, "up"), "a1's port opened: {}", port_state(&mut api, 1));
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", &b, "ping", "-q", "-i", "0.002", "10.1.0.2"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let vif = serde_json::json!({ "vif": { "index": 5, "name": "pc", "kind": "virtual", "vrf": 1,
                                            "mac": "02:00:00:00:05:01", "ipv4": "10.1.0.9" } });
    let mut seen = Vec::new();
    for _ in 0..4 {
        api.call("add", vif.clone()).unwrap();
        let up = port_becomes(&mut api, 5, "up");
        // The kernel's counters are read once a second.
        std::thread::sleep(Duration::from_millis(1300));
        let status = vif_status(&mut api, 5);
        api.call("delete", serde_json::json!({ "vif": 5 })).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        seen.push((up, status));
    }
    let _ = pinger.kill();
    let _ = pinger.wait();
    for (up, status) in &seen {
        let kernel = |k: &str| status["kernel"][k].as_u64().unwrap_or(u64::MAX);
        assert!(
            *up && status["rx_packets"].as_u64().unwrap_or(0) >= 20
                && kernel("fill_ring_empty") == 0
                && kernel("rx_dropped") == 0,
            "each time pc's port opened, it received b's pings from the first: {seen:?}"
        );
    }
}

/// `tables()` with a1 and a2 at MTU 9000, the fabric at 9100, a remote pod network
/// (10.1.1.0/24) through an MPLS-over-UDP tunnel out of `fab` to
/// 192.168.77.2 (the MAC `fabpeer`'s, `peer_mac`), and label 100 to a1.
fn jumbo_tables(peer_mac: &str) -> String {
    let pods = tables()
        .replace("kind = \"virtual\"\n", "kind = \"virtual\"\nmtu = 9000\n")
        .replace("kind = \"fabric\"\n", "kind = \"fabric\"\nmtu = 9100\n");
    format!(
        "{pods}
[[nexthop]]
type = \"tunnel\"
id = 4
oif = 0
encap = \"mpls-o-udp\"
dip = \"192.168.77.2\"
dmac = \"{peer_mac}\"

[[route]]
vrf = 1
prefix = \"10.1.1.0/24\"
nh = 4
label = 200

[[label]]
label = 100
nh = 1
"
    )
}

/// A frame from the fabric's far end to node 192.168.77.1 (`fab`, MAC
/// 02:fa:00:00:00:01): MPLS over UDP, label 100, around an IPv4 UDP
/// datagram of `payload` bytes from 10.1.1.5 to a1 (10.1.0.2) port 9999,
/// sent out of `fabpeer` in namespace `node` by a raw socket.
fn send_tunnelled_datagram(node: &str, payload: usize) {
    let script = format!(
        r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def ip(src, dst, proto, body):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(body), 7, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + body
inner_udp = struct.pack('!HHHH', 40000, 9999, 8 + {payload}, 0) + b'j' * {payload}
inner = ip('10.1.1.5', '10.1.0.2', 17, inner_udp)
mpls = struct.pack('!I', (100 << 12) | (1 << 8) | 64)
outer_udp = struct.pack('!HHHH', 50000, 6635, 8 + 4 + len(inner), 0) + mpls + inner
peer = open('/sys/class/net/fabpeer/address').read().strip()
eth = bytes.fromhex('02fa00000001') + bytes.fromhex(peer.replace(':', '')) + b'\x08\x00'
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('fabpeer', 0))
s.send(eth + ip('192.168.77.2', '192.168.77.1', 17, outer_udp))
"#
    );
    in_ns(node, &["python3", "-c", &script]);
}

#[test]
fn jumbo_frames_cross_the_node_and_its_tunnels_whole() {
    if !root_or_skip("vrouterd tests") {
        return;
    }
    let (mut guard, node, a1, a2) = node_with_a1_a2("j");
    let pods = [(&node, "pa1"), (&a1, "eth0"), (&node, "pa2"), (&a2, "eth0")].map(|(ns, dev)| (ns, dev, "9000"));
    for (ns, dev, mtu) in pods.into_iter().chain([(&node, "fab", "9100"), (&node, "fabpeer", "9100")]) {
        in_ns(ns, &["ip", "link", "set", dev, "mtu", mtu]);
    }
    let peer_mac = in_ns(&node, &["cat", "/sys/class/net/fabpeer/address"]).trim().to_string();
    let dir = Scratch::dir("jumbo");
    let (_, mut api) = one_worker_vrouterd(&mut guard, &node, &dir, &jumbo_tables(&peer_mac), "");
    assert!(port_becomes(&mut api, 1, "up") && port_becomes(&mut api, 2, "up"), "a1's and a2's ports opened");
    // What a port receives, as the API says it (read once a second).
    let longest = (0..30).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        vif_status(&mut api, 1)["longest_frame"].as_u64()
    });
    assert_eq!(longest, Some(9984), "{}", vif_status(&mut api, 1));

    // Pod to pod: 8,928-byte frames each way, which a 4 KiB UMEM frame
    // cannot hold, with DF set: whole or not at all.
    let out = in_ns(&a1, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "8900", "10.1.0.3"]);
    assert!(out.contains("3 received"), "jumbo pings between pods on the node: {out}");

    // Pod to tunnel: a datagram of 8,000 bytes leaves in one MPLS-over-UDP
    // frame, as tshark reads it on the far end of the fabric.
    let one_datagram =
        "import socket;socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'j'*8000,('10.1.1.5',7777))";
    let fields = ["ip.len", "mpls.label", "ip.checksum.status"];
    let rows = common::capture_in(&node, "fabpeer", "udp port 6635", &fields, || {
        in_ns(&a1, &["python3", "-c", one_datagram]);
    });
    assert!(
        rows.iter().any(|r| r[0] == "8060,8028" && r[1] == "200" && r[2] == "1,1"),
        "an 8,000-byte datagram in one tunnel frame (outer IP 8060, inner 8028, label 200, both checksums good): {rows:?}"
    );

    // Through a fabric of MTU 1500, the same datagram, DF clear, leaves
    // cut into fragments before it is encapsulated, each a tunnel frame.
    let fabric_1500 = serde_json::json!({ "vif": { "index": 0, "name": "fab", "kind": "fabric", "vrf": 0,
        "mac": "02:fa:00:00:00:01", "ipv4": "192.168.77.1", "mtu": 1500 } });
    api.call("update", fabric_1500).unwrap();
    let df_clear = "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.setsockopt(0,10,0);s.sendto(b'j'*8000,('10.1.1.5',7777))";
    let rows = common::capture_in(&node, "fabpeer", "udp port 6635", &["ip.len", "mpls.label"], || {
        in_ns(&a1, &["python3", "-c", df_clear]);
    });
    let inner: Vec<u32> =
        rows.iter().filter(|r| r[1] == "200").filter_map(|r| r[0].split(',').nth(1)?.parse().ok()).collect();
    assert!(
        inner.len() == 6 && inner.iter().all(|&l| l <= 1500 - 32) && inner.iter().map(|l| l - 20).sum::<u32>() == 8008,
        "8,008 bytes of datagram in six fragments of at most 1,468 bytes, each in its tunnel frame: {rows:?}"
    );

    // Tunnel to pod: a jumbo frame from the fabric reaches a1 whole.
    let listener = Command::new("ip")
        .args(["netns", "exec", &a1, "python3", "-c"])
        .arg("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',9999));s.settimeout(5);print(len(s.recvfrom(65535)[0]))")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    send_tunnelled_datagram(&node, 8500);
    let heard = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&heard.stdout).trim(), "8500", "a1 received the tunnelled datagram whole");

    // Longer than a worker puts together: dropped and counted as such.
    let drops_before = too_long(&mut api);
    for (ns, dev) in [(&node, "pa1"), (&a1, "eth0")] {
        in_ns(ns, &["ip", "link", "set", dev, "mtu", "12000"]);
    }
    let _ = Command::new("ip")
        .args(["netns", "exec", &a1, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-s", "11000", "10.1.0.3"])
        .output();
    // The workers publish their counters every few milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    let drops = too_long(&mut api);
    assert!(
        drops >= drops_before + 2,
        "frames longer than 9,984 bytes count as frame_too_long: {drops_before} -> {drops}"
    );
    // And the log says why, once, from the link's MTU (read every second).
    std::thread::sleep(Duration::from_millis(1200));
    let vrouterd = guard.1.take().unwrap();
    run(&["kill", "-TERM", &vrouterd.id().to_string()]);
    let log = String::from_utf8_lossy(&vrouterd.wait_with_output().unwrap().stderr).into_owned();
    let said =
        log.lines().filter(|l| l.contains("MTU is above the 9970 its port can receive") && l.contains("=pa1")).count();
    assert_eq!(said, 1, "{log}");
}

/// The node's count of frames dropped as `frame_too_long`.
fn too_long(api: &mut Api) -> u64 {
    let st = api.call("stats", serde_json::json!({})).unwrap();
    st["drops"].as_array().unwrap().iter().find(|d| d["reason"] == "frame_too_long").unwrap()["count"].as_u64().unwrap()
}
