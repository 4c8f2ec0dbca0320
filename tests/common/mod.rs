//! A one-node lab for pipeline tests: VRFs blue and red (reusing
//! addresses), local pods, tunnels to three other nodes, an ECMP service,
//! labels, and helpers to run frames through the pipeline.
#![allow(dead_code)]

pub mod mutate;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// A directory of one test's own under the system's temporary directory,
/// removed with what is in it when dropped, whether the test passed or
/// not: a run leaves nothing behind. It stands for `path`: the directory
/// itself, or the API socket in it.
pub struct Scratch {
    dir: PathBuf,
    path: PathBuf,
}

impl Scratch {
    /// An empty directory named after `tag` and this process.
    pub fn dir(tag: &str) -> Scratch {
        let dir = Self::fresh(tag);
        Scratch { path: dir.clone(), dir }
    }

    /// A place for an API server's socket, in a directory of its own.
    pub fn socket(tag: &str) -> Scratch {
        let dir = Self::fresh(tag);
        Scratch { path: dir.join("api.sock"), dir }
    }

    fn fresh(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vrouter-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small deterministic generator (xorshift), so that a failing fuzz
/// case can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
use vrouter::pipeline::{Frame, Pipeline, PipelineConfig, Spill, Verdict};
use vrouter::pktgen::build::{self, L2};
use vrouter::stats::{GeneralCause, Stats};
use vrouter::tables::{
    EcmpGroup, Limits, NextHop, Object, Op, RouteSpec, RouteTarget, TablesHandle, TablesWriter, Tunnel, TunnelEncap,
    Vif, VifKind, VrfSpec,
};
use vrouter::wire::MacAddr;

pub const FABRIC: u32 = 0;
pub const A1: u32 = 1;
pub const A2: u32 = 2;
pub const R1: u32 = 3;
pub const DISABLED: u32 = 4;
pub const BLUE: u32 = 1;
pub const RED: u32 = 2;
pub const LOOP_VRF: u32 = 5;
pub const NH_A1: u32 = 1;
pub const NH_A2: u32 = 2;
pub const NH_R1: u32 = 3;
pub const NH_UDP: u32 = 10;
pub const NH_GRE: u32 = 11;
pub const NH_ECMP: u32 = 20;
pub const NH_BLUE_LOOKUP: u32 = 30;
pub const NH_RECEIVE: u32 = 31;
pub const NH_LOOP: u32 = 32;
pub const NH_MISSING_OIF: u32 = 33;
pub const LABEL_A1: u32 = 16;
pub const LABEL_A2: u32 = 17;
pub const LABEL_BLUE: u32 = 18;
pub const LABEL_R1: u32 = 19;
pub const HEADROOM: usize = 256;
pub const BUF: usize = 10_240;

pub fn router_mac() -> MacAddr {
    PipelineConfig::default().router_mac
}
pub fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}
pub fn fabric_mac() -> MacAddr {
    MacAddr([0x02, 0xfa, 0, 0, 0, 1])
}
pub fn node_ip() -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 1)
}
pub fn peer(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 1 + n)
}
pub fn peer_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0xfa, 0, 0, 0, 1 + n])
}
pub fn a1_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 2)
}
pub fn a2_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 3)
}
pub fn gw() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 1)
}
pub fn a1_ip6() -> Ipv6Addr {
    "fd00:1::2".parse().unwrap()
}
pub fn a2_ip6() -> Ipv6Addr {
    "fd00:1::3".parse().unwrap()
}
pub fn gw6() -> Ipv6Addr {
    "fd00:1::1".parse().unwrap()
}
pub fn remote_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 5)
}
pub fn gre_remote_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, 5)
}
pub fn service_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, 10)
}
/// L2 header of a frame a1 sends to its router.
pub fn from_a1() -> L2 {
    L2 { src: mac(1), dst: router_mac() }
}
/// L2 header of a frame node 2 sends to this node.
pub fn from_peer() -> L2 {
    L2 { src: peer_mac(1), dst: fabric_mac() }
}

fn route(vrf: u32, p: &str, nh: u32, label: u32) -> Op {
    route_in(vrf, p, nh, label, None)
}

/// Adds a route of `vrf`, in `network` (`None`: `vrf`'s own).
pub fn route_in(vrf: u32, prefix: &str, nh: u32, label: u32, network: Option<u32>) -> Op {
    Op::Add(Object::Route(RouteSpec {
        vrf,
        prefix: prefix.parse().unwrap(),
        target: RouteTarget { nh, label },
        network,
    }))
}

pub const NO: u32 = RouteTarget::NO_LABEL;

pub fn lab_ops() -> Vec<Op> {
    let vrf = |id, name: &str, g4: Option<Ipv4Addr>, g6: Option<Ipv6Addr>| {
        Op::Add(Object::Vrf(VrfSpec { id, name: name.into(), gateway_v4: g4, gateway_v6: g6 }))
    };
    let mut fabric = Vif::new(FABRIC, "eth0", VifKind::Fabric, 0, fabric_mac());
    fabric.ipv4 = Some(node_ip());
    let pod = |i, name: &str, v, m, ip: Ipv4Addr, ip6: Option<Ipv6Addr>| {
        let mut p = Vif::new(i, name, VifKind::Virtual, v, m);
        p.ipv4 = Some(ip);
        p.ipv6 = ip6;
        p
    };
    let mut disabled = pod(DISABLED, "veth-off", BLUE, mac(4), Ipv4Addr::new(10, 1, 0, 9), None);
    disabled.flags.disabled = true;
    let tunnel = |encap, n| NextHop::Tunnel(Tunnel::new(FABRIC, encap, node_ip(), peer(n), peer_mac(n)));
    vec![
        vrf(0, "fabric", None, None),
        vrf(BLUE, "blue", Some(gw()), Some(gw6())),
        vrf(RED, "red", Some(gw()), None),
        vrf(LOOP_VRF, "loop", None, None),
        Op::Add(Object::Vif(fabric)),
        Op::Add(Object::Vif(pod(A1, "veth-a1", BLUE, mac(1), a1_ip(), Some(a1_ip6())))),
        Op::Add(Object::Vif(pod(A2, "veth-a2", BLUE, mac(2), a2_ip(), Some(a2_ip6())))),
        Op::Add(Object::Vif(pod(R1, "veth-r1", RED, mac(3), a1_ip(), None))),
        Op::Add(Object::Vif(disabled)),
        Op::Add(Object::NextHop(NH_A1, NextHop::Encap { oif: A1, smac: router_mac(), dmac: mac(1) })),
        Op::Add(Object::NextHop(NH_A2, NextHop::Encap { oif: A2, smac: router_mac(), dmac: mac(2) })),
        Op::Add(Object::NextHop(NH_R1, NextHop::Encap { oif: R1, smac: router_mac(), dmac: mac(3) })),
        Op::Add(Object::NextHop(NH_UDP, tunnel(TunnelEncap::MplsOverUdp, 1))),
        Op::Add(Object::NextHop(NH_GRE, tunnel(TunnelEncap::MplsOverGre, 1))),
        Op::Add(Object::NextHop(12, tunnel(TunnelEncap::MplsOverUdp, 2))),
        Op::Add(Object::NextHop(13, tunnel(TunnelEncap::MplsOverUdp, 3))),
        Op::Add(Object::NextHop(
            NH_ECMP,
            NextHop::Composite(EcmpGroup::new(vec![
                RouteTarget { nh: NH_UDP, label: 100 },
                RouteTarget { nh: 12, label: 101 },
                RouteTarget { nh: 13, label: 102 },
            ])),
        )),
        Op::Add(Object::NextHop(NH_BLUE_LOOKUP, NextHop::VrfLookup { vrf: BLUE })),
        Op::Add(Object::NextHop(NH_RECEIVE, NextHop::Receive)),
        Op::Add(Object::NextHop(NH_LOOP, NextHop::VrfLookup { vrf: LOOP_VRF })),
        Op::Add(Object::NextHop(NH_MISSING_OIF, NextHop::Encap { oif: DISABLED, smac: router_mac(), dmac: mac(4) })),
        Op::Add(Object::Label(LABEL_A1, NH_A1)),
        Op::Add(Object::Label(LABEL_A2, NH_A2)),
        Op::Add(Object::Label(LABEL_BLUE, NH_BLUE_LOOKUP)),
        Op::Add(Object::Label(LABEL_R1, NH_R1)),
        route(BLUE, "10.1.0.1/32", NH_RECEIVE, NO),
        route(BLUE, "10.1.0.2/32", NH_A1, NO),
        route(BLUE, "10.1.0.3/32", NH_A2, NO),
        route(BLUE, "10.2.0.0/24", NH_UDP, 40),
        route(BLUE, "10.3.0.0/24", NH_GRE, 41),
        route(BLUE, "10.96.0.10/32", NH_ECMP, NO),
        route(BLUE, "10.66.0.0/16", 0, NO),
        route(BLUE, "10.77.0.0/16", NH_MISSING_OIF, NO),
        route(BLUE, "10.88.0.0/16", NH_UDP, NO),
        route(BLUE, "fd00:1::2/128", NH_A1, NO),
        route(BLUE, "fd00:1::3/128", NH_A2, NO),
        route(BLUE, "fd00:2::/64", NH_UDP, 42),
        route(RED, "10.1.0.2/32", NH_R1, NO),
        route(LOOP_VRF, "0.0.0.0/0", NH_LOOP, NO),
    ]
}

/// Frames over plain vectors.
pub type Frames = Vec<Frame<Vec<u8>>>;

pub struct Lab {
    pub writer: TablesWriter,
    pub handle: TablesHandle,
    pub pipeline: Pipeline,
}

impl Lab {
    pub fn new() -> Lab {
        let (mut writer, handle) =
            TablesWriter::new(Limits { vifs: 64, vrfs: 16, nexthops: 1024, labels: 1024, routes_per_vrf: 1000 });
        writer.apply(&lab_ops()).expect("lab tables are valid");
        let pipeline = Pipeline::new(PipelineConfig::default(), handle.load().limits());
        Lab { writer, handle, pipeline }
    }

    /// Runs frames, each with the vif it arrives on, with `spares` spare
    /// buffers. Returns the processed frames and any extra ones made.
    pub fn run_with(&mut self, input: &[(u32, Vec<u8>)], spares: usize) -> (Frames, Frames) {
        let mut frames: Vec<Frame<Vec<u8>>> = input
            .iter()
            .map(|(vif, bytes)| {
                let mut buf = vec![0u8; BUF.max(HEADROOM + bytes.len())];
                buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
                Frame::new(buf, HEADROOM, bytes.len(), *vif).unwrap()
            })
            .collect();
        let mut spill = Spill::with_buffers((0..spares).map(|_| vec![0u8; BUF]).collect(), HEADROOM);
        let tables = self.handle.load();
        self.pipeline.process(&tables, &mut frames, &mut spill);
        (frames, spill.out)
    }

    /// Runs one frame and returns its verdict and bytes.
    pub fn run(&mut self, vif: u32, bytes: Vec<u8>) -> (Verdict, Vec<u8>) {
        let (frames, _) = self.run_with(&[(vif, bytes)], 0);
        let f = &frames[0];
        (f.verdict, f.data().to_vec())
    }

    pub fn stats(&self) -> &Stats {
        self.pipeline.stats()
    }
}

/// The frames `p` left to the general path since its `general_causes`
/// were `before`, by cause name: the causes that counted any, in counter order.
pub fn general_since(p: &Pipeline, before: &[u64; GeneralCause::COUNT]) -> Vec<(&'static str, u64)> {
    let counts = p.general_causes().iter().zip(before);
    GeneralCause::ALL.iter().zip(counts).filter(|(_, (n, b))| n > b).map(|(c, (n, b))| (c.as_str(), n - b)).collect()
}

/// `frame` (Ethernet, then IPv4) after `edit`, with its IPv4 header
/// checksum made right again.
pub fn reheadered(mut frame: Vec<u8>, edit: impl Fn(&mut [u8])) -> Vec<u8> {
    edit(&mut frame);
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = inet_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// Writes frames to a pcap file (Ethernet link type) for tshark.
pub fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// The Internet checksum of a TCP or UDP segment `seg` of protocol `proto`
/// from `src` to `dst` over IPv4, with its pseudo-header: 0 when the
/// segment's own checksum field is right.
pub fn transport_checksum_v4(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + seg.len());
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    inet_checksum(&pseudo)
}

/// An ICMP message of type `kind` (an echo request's 8, its reply's 0)
/// with identifier `id` and sequence number `seq`, and `len` bytes of
/// `fill` after them, its checksum computed independently of the crate.
pub fn icmp_echo_message(kind: u8, id: u16, seq: u16, fill: u8, len: usize) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend(std::iter::repeat_n(fill, len));
    let c = inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// The Internet checksum of `data`, computed independently of the crate.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn tshark_available() -> bool {
    std::process::Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Decodes `frames` with tshark and returns, per frame, the requested fields.
pub fn tshark(frames: &[Vec<u8>], fields: &[&str]) -> Option<Vec<Vec<String>>> {
    if !tshark_available() {
        assert!(std::env::var_os("CI").is_none(), "tshark is required in CI: tools/test installs it");
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark, or run tools/test)");
        return None;
    }
    // Tests in one binary run in parallel: each call gets its own file, and removes only that file.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("vrouter-decoders-{}-{call}.pcap", std::process::id()));
    write_pcap(&path, frames);
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(&path);
    tshark_fields(&mut cmd, fields);
    let out = cmd.output().expect("tshark runs");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(tshark_rows(&out.stdout))
}

/// Asks tshark for `fields` of every frame, '|'-separated, with checksums
/// verified and our MPLS-over-UDP port decoded as MPLS.
pub fn tshark_fields(cmd: &mut std::process::Command, fields: &[&str]) {
    cmd.args(["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]);
    cmd.args([
        "-d",
        "udp.port==6635,mpls",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
}

/// Captures what `filter` takes on interface `dev` of namespace `ns` while
/// `traffic` runs (for up to 6 s in all), and reads `fields` of it with
/// tshark.
pub fn capture_in(ns: &str, dev: &str, filter: &str, fields: &[&str], traffic: impl FnOnce()) -> Vec<Vec<String>> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns, "timeout", "6", "tshark", "-n", "-i", dev, "-f", filter]);
    tshark_fields(&mut cmd, fields);
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Send only once tshark is capturing, however long it takes to start.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // "Capturing on" comes before the capture process runs; "Capture started" after.
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 && !line.contains("Capture started") {
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    std::thread::sleep(std::time::Duration::from_millis(200));
    traffic();
    let out = child.wait_with_output().unwrap();
    tshark_rows(&out.stdout)
}

/// tshark's output for `tshark_fields`: per frame, the fields.
pub fn tshark_rows(stdout: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(stdout).lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// Runs a command, which must succeed; its standard output.
pub fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A standard output for a child that nobody reads: a pipe whose reader
/// has gone, as `| head` leaves it once `head` has its lines.
pub fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "a pipe");
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing
    // else owns; each is owned (and closed) once.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    writer.into()
}

/// Waits for `child` to end and takes what it wrote (stdout and stderr, if
/// piped); fails the test, killing it, if it is still running after
/// `limit`: a tool that loops on unread output never ends by itself.
pub fn wait_within(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("the child's status").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("the child's output")
}

/// Runs `cmd` with its standard output a [`closed_pipe`]: its status and
/// what it said on stderr, within `limit` (see [`wait_within`]).
pub fn run_into_closed_pipe(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> (std::process::ExitStatus, String) {
    let child = cmd.stdout(closed_pipe()).stderr(std::process::Stdio::piped()).spawn().expect("the command starts");
    let out = wait_within(child, limit);
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// True as root. Elsewhere it says the test (which `needs` root) is skipped,
/// except in CI, which runs as root: there it fails.
pub fn root_or_skip(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs as root, so this test must run there");
    eprintln!("SKIPPED: {needs} need root (network namespaces, bpf)");
    false
}

/// `segment` (a transport header and what follows) cut into `piece`-byte
/// chunks (a multiple of 8), each with its offset in bytes and whether more
/// follow: a datagram's fragments, as the sender's IP layer cuts them.
fn pieces(segment: &[u8], piece: usize) -> impl Iterator<Item = (u16, bool, &[u8])> {
    segment.chunks(piece).enumerate().map(move |(i, c)| ((i * piece) as u16, (i + 1) * piece < segment.len(), c))
}

/// `segment` from `src` to `dst` as IPv4 fragments of `piece` bytes with
/// identification `ident`, each in a frame from `l2`.
pub fn ipv4_fragments(
    l2: L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
    segment: &[u8],
    piece: usize,
) -> Vec<Vec<u8>> {
    pieces(segment, piece)
        .map(|(offset, more, chunk)| {
            let mut ip = build::ipv4(src, dst, proto, 64, false, chunk);
            let mut p = vrouter::wire::ipv4::Packet::new_unchecked(&mut ip[..]);
            p.set_ident(ident);
            p.set_frag(false, more, offset);
            p.fill_checksum();
            build::ip_frame(l2, &ip)
        })
        .collect()
}

/// The same over IPv6: each fragment has a fragment header with next
/// header `proto` and identification `ident`.
pub fn ipv6_fragments(
    l2: L2,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    ident: u32,
    segment: &[u8],
    piece: usize,
) -> Vec<Vec<u8>> {
    use vrouter::wire::ipv6ext::{kind, Fragment, FragmentRepr, FRAGMENT_LEN};
    pieces(segment, piece)
        .map(|(offset, more, chunk)| {
            let mut body = vec![0u8; FRAGMENT_LEN];
            FragmentRepr { next_header: proto, offset, more, ident }.emit(&mut Fragment::new_unchecked(&mut body[..]));
            body.extend_from_slice(chunk);
            build::ip_frame(l2, &build::ipv6(src, dst, kind::FRAGMENT, 64, &body))
        })
        .collect()
}

/// The public VRF of `add_floating_ip`, its gateway vif, the floating IP,
/// and a client address behind the gateway.
pub const PUBLIC: u32 = 6;
pub const GW: u32 = 6;
pub const FIP: Ipv4Addr = Ipv4Addr::new(185, 22, 97, 188);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// A second network on the node: green, with its pod g1.
pub const GREEN: u32 = 7;
pub const G1: u32 = 20;
pub const NH_G1: u32 = 40;
pub const LABEL_G1: u32 = 21;

pub fn g1_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 5, 0, 2)
}

/// Adds green and its pod g1 (no routes): a second network on the node.
/// g1's IPv6 address.
pub fn g1_ip6() -> Ipv6Addr {
    "fd00:5::2".parse().unwrap()
}

pub fn green_pod_ops() -> Vec<Op> {
    let mut g1 = Vif::new(G1, "veth-g1", VifKind::Virtual, GREEN, mac(7));
    g1.ipv4 = Some(g1_ip());
    g1.ipv6 = Some(g1_ip6());
    vec![
        Op::Add(Object::Vrf(VrfSpec { id: GREEN, name: "green".into(), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::Vif(g1)),
        Op::Add(Object::NextHop(NH_G1, NextHop::Encap { oif: G1, smac: router_mac(), dmac: mac(7) })),
        Op::Add(Object::Label(LABEL_G1, NH_G1)),
    ]
}

/// A service address that a1 holds, as a Kubernetes or Contrail ECMP
/// service's endpoints do: its route in blue is a composite of a1 and a
/// remote endpoint, so a1 may send from it (the reverse path check).
pub fn a1_service_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, 20)
}

/// The next hop of `a1_service_ip`'s route.
pub const NH_A1_SERVICE: u32 = 60;

/// Adds `a1_service_ip`'s composite and route to the lab's blue.
pub fn add_a1_service_address(lab: &mut Lab) {
    lab.writer
        .apply(&[
            Op::Add(Object::NextHop(
                NH_A1_SERVICE,
                NextHop::Composite(EcmpGroup::new(vec![
                    RouteTarget { nh: NH_A1, label: RouteTarget::NO_LABEL },
                    RouteTarget { nh: NH_UDP, label: 44 },
                ])),
            )),
            route(BLUE, "10.96.0.20/32", NH_A1_SERVICE, NO),
        ])
        .unwrap();
}

/// Adds a public VRF to the lab: a gateway vif toward the client network
/// (203.0.113.0/24), and the floating IP 185.22.97.188 on a1 and a2, routed
/// by ECMP over both.
pub fn add_floating_ip(lab: &mut Lab) {
    use vrouter::tables::FloatingIp;
    let t = lab.handle.load();
    let with_fip = |i: u32| {
        let mut v = t.vif(i).unwrap().clone();
        v.floating = vec![FloatingIp { address: FIP, vrf: PUBLIC, ports: vec![] }];
        Op::Update(Object::Vif(v))
    };
    let mut gw = Vif::new(GW, "gw", VifKind::Virtual, PUBLIC, mac(9));
    gw.ipv4 = Some(Ipv4Addr::new(203, 0, 113, 1));
    let route = |p: &str, nh: u32| {
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: PUBLIC,
            prefix: p.parse().unwrap(),
            target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
        }))
    };
    lab.writer
        .apply(&[
            Op::Add(Object::Vrf(VrfSpec { id: PUBLIC, name: "public".into(), gateway_v4: None, gateway_v6: None })),
            Op::Add(Object::Vif(gw)),
            with_fip(A1),
            with_fip(A2),
            Op::Add(Object::NextHop(50, NextHop::Encap { oif: GW, smac: router_mac(), dmac: mac(9) })),
            Op::Add(Object::NextHop(
                51,
                NextHop::Composite(EcmpGroup::new(vec![
                    RouteTarget { nh: NH_A1, label: RouteTarget::NO_LABEL },
                    RouteTarget { nh: NH_A2, label: RouteTarget::NO_LABEL },
                ])),
            )),
            route("185.22.97.188/32", 51),
            route("203.0.113.0/24", 50),
        ])
        .unwrap();
    drop(t);
}

/// The control plane `docs/api.md`'s examples are written against, over
/// `writer`'s tables: node 192.168.100.1 on eth1, a flow table of 1,000
/// pairs and a capture tap.
pub fn docs_control(writer: TablesWriter, vifs: usize, vrfs: usize) -> vrouter::api::server::Control {
    use vrouter::api::schema::Defaults;
    use vrouter::api::server::{Control, NodeInfo};
    let underlay: Ipv4Addr = "192.168.100.1".parse().unwrap();
    let node = NodeInfo { boot_id: NodeInfo::new_boot_id(), underlay, fabric: "eth1".into(), cores: vec![0] };
    let flows = vrouter::flow::FlowTable::new(vrouter::flow::FlowConfig { capacity: 1000, ..Default::default() }, 8, 8);
    Control::new(
        writer,
        Defaults { router_mac: router_mac(), underlay },
        vrouter::stats::StatsBoard::new(1, vifs, vrfs),
        node,
    )
    .with_flows(std::sync::Arc::new(flows), std::time::Instant::now())
    .with_tap(std::sync::Arc::new(vrouter::capture::Tap::new()))
}

/// Serves `control`'s API on a socket of the test's own, from threads of
/// its own, as vrouterd does.
pub fn serve_api(tag: &str, control: std::sync::Arc<vrouter::api::server::Control>) -> Scratch {
    let sock = Scratch::socket(tag);
    let listener = vrouter::api::server::bind(&sock, None).unwrap();
    vrouter::api::server::spawn(control, listener, 8).unwrap();
    sock
}

/// A client of the API at `sock`, as the agent connects.
pub fn api_client(sock: &std::path::Path, name: &str) -> vrouter::api::client::Client {
    let c = vrouter::api::client::Client::connect(sock, name).unwrap();
    c.set_timeout(Some(std::time::Duration::from_secs(20)));
    c
}
