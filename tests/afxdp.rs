//! AF_XDP on a real veth pair, in a network namespace the test creates and
//! removes: the redirect program steers what the peer sends to our socket,
//! frames we transmit reach the peer (counted by its `rx_packets`), and
//! nothing stays attached once the socket and link are gone.
//!
//! Needs root. CI runs as root; elsewhere, without root, it says so and skips.

mod common;

use common::{root_or_skip, run};
use std::process::Command;
use std::time::{Duration, Instant};
use vrouter::io::bpf::{Attachment, Program, XdpMode, XskMap};
use vrouter::io::ifindex;
use vrouter::io::xsk::{BindMode, RxDesc, XskConfig, XskSocket};
use vrouter::pktgen::build::{self, L2};
use vrouter::wire::MacAddr;

/// A veth pair: `outer` in our namespace (the port vrouterd would own),
/// `inner` in a namespace of its own. Removed on drop.
struct Veth {
    ns: String,
    outer: String,
    inner: String,
}

const OUTER_MAC: &str = "02:00:00:00:aa:01";
const INNER_MAC: &str = "02:00:00:00:aa:02";

impl Veth {
    fn new(tag: &str) -> Veth {
        let id = std::process::id() % 100_000;
        let v = Veth { ns: format!("vrt-{tag}-{id}"), outer: format!("vo{tag}{id}"), inner: format!("vi{tag}{id}") };
        let _ = Command::new("ip").args(["netns", "del", &v.ns]).output();
        run(&["ip", "netns", "add", &v.ns]);
        run(&[
            "ip", "link", "add", &v.outer, "address", OUTER_MAC, "type", "veth", "peer", "name", &v.inner, "address",
            INNER_MAC, "netns", &v.ns,
        ]);
        run(&["ip", "link", "set", &v.outer, "up"]);
        v.exec(&["ip", "link", "set", &v.inner, "up"]);
        v.exec(&["ip", "addr", "add", "10.250.0.2/24", "dev", &v.inner]);
        // Nothing behind `outer` answers ARP while its traffic goes to AF_XDP.
        v.exec(&["ip", "neigh", "replace", "10.250.0.1", "lladdr", OUTER_MAC, "dev", &v.inner]);
        // One frame in, one frame out: no offloads merging or splitting them.
        for (dev, inside) in [(&v.outer, false), (&v.inner, true)] {
            let args = ["ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off", "tx", "off", "rx", "off"];
            let _ = if inside {
                Command::new("ip").args(["netns", "exec", &v.ns]).args(args).output()
            } else {
                Command::new(args[0]).args(&args[1..]).output()
            };
        }
        v
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        run(&full)
    }

    fn inner_rx_packets(&self) -> u64 {
        self.exec(&["cat", &format!("/sys/class/net/{}/statistics/rx_packets", self.inner)]).trim().parse().unwrap()
    }

    /// Sends `n` UDP datagrams from the namespace to 10.250.0.1:9999.
    fn send_from_inside(&self, n: usize) {
        let script = format!("for i in $(seq 1 {n}); do printf 'vrouter-%05d' $i > /dev/udp/10.250.0.1/9999; done");
        self.exec(&["bash", "-c", &script]);
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.outer]).output();
    }
}

fn receive(sock: &mut XskSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut descs = [RxDesc { addr: 0, len: 0, more: false }; 64];
    while got.len() < want && start.elapsed() < timeout {
        sock.refill(64);
        let n = sock.receive(&mut descs);
        if n == 0 {
            let _ = sock.poll_rx(10);
            continue;
        }
        for d in &descs[..n] {
            let (frame, at) = sock.frame_mut(d.addr).expect("a received frame lies in the UMEM");
            got.push(frame[at..at + d.len as usize].to_vec());
            sock.release(d.addr);
        }
    }
    got
}

fn attach_and_open(veth: &Veth, mode: XdpMode) -> (XskSocket, XskMap, Attachment) {
    let idx = ifindex(&veth.outer).unwrap();
    let sock = XskSocket::open(idx, 0, XskConfig { mode: BindMode::Auto, ..XskConfig::default() }).unwrap();
    assert!(!sock.is_zerocopy(), "veth has no zero-copy support; copy mode was expected");
    let map = XskMap::new(4).unwrap();
    map.set(0, sock.raw_fd()).unwrap();
    let prog = Program::redirect_all(&map).unwrap();
    let link = Attachment::new(&prog, idx, mode).unwrap();
    (sock, map, link)
}

fn xdp_attached(dev: &str) -> bool {
    let out = run(&["ip", "-d", "link", "show", "dev", dev]);
    out.contains("prog/xdp") || out.contains("xdpgeneric") || out.contains(" xdp ")
}

#[test]
fn af_xdp_receives_transmits_and_detaches() {
    if !root_or_skip("AF_XDP tests") {
        return;
    }
    for (tag, mode) in [("g", XdpMode::Generic), ("n", XdpMode::Native)] {
        let veth = Veth::new(tag);
        let (mut sock, _map, link) = attach_and_open(&veth, mode);
        assert!(xdp_attached(&veth.outer), "{mode:?}: the program is attached");
        let idx = ifindex(&veth.outer).unwrap();
        let want = if mode == XdpMode::Native { "native" } else { "generic" };
        assert_eq!(vrouter::io::netlink::xdp_attached(idx).unwrap(), Some(want), "the kernel reports the mode");

        // Receive: what the namespace sends reaches our socket, whole.
        veth.send_from_inside(100);
        let frames = receive(&mut sock, 100, Duration::from_secs(5));
        let ours: Vec<&Vec<u8>> =
            frames.iter().filter(|f| f.len() >= 42 && f[23] == 17 && f[36..38] == 9999u16.to_be_bytes()).collect();
        assert_eq!(ours.len(), 100, "{mode:?}: all 100 datagrams received (got {} frames)", frames.len());
        assert!(ours.iter().all(|f| f[42..].starts_with(b"vrouter-")));
        assert_eq!(&ours[0][0..6], &OUTER_MAC.parse::<MacAddr>().unwrap().0);

        // Transmit: 1,000 frames in bursts, more than one kick can send.
        let before = veth.inner_rx_packets();
        let l2 = L2 { src: OUTER_MAC.parse().unwrap(), dst: INNER_MAC.parse().unwrap() };
        let frame =
            build::udp4_frame(l2, "10.250.0.1".parse().unwrap(), "10.250.0.2".parse().unwrap(), 9999, 7777, 64, 64);
        let mut sent = 0;
        let start = Instant::now();
        while sent < 1000 && start.elapsed() < Duration::from_secs(5) {
            sock.complete();
            while sent < 1000 {
                let Some(addr) = sock.alloc() else { break };
                let (buf, at) = sock.frame_mut(addr).unwrap();
                buf[at..at + frame.len()].copy_from_slice(&frame);
                if !sock.transmit(addr, frame.len() as u32) {
                    sock.release(addr);
                    break;
                }
                sent += 1;
            }
            sock.kick_tx().unwrap();
        }
        // Keep kicking until the kernel has taken every frame.
        let start = Instant::now();
        while (sock.tx_pending() > 0 || veth.inner_rx_packets() < before + 1000)
            && start.elapsed() < Duration::from_secs(5)
        {
            sock.kick_tx().unwrap();
            sock.complete();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sent, 1000);
        let arrived = veth.inner_rx_packets() - before;
        assert!(arrived >= 1000, "{mode:?}: {arrived} of 1000 transmitted frames reached the peer");
        let stats = sock.stats().unwrap();
        assert_eq!(stats.tx_invalid, 0);

        // Closing: three frames queued and never kicked are handed back
        // with every other frame, and said to be unsent (the vif's
        // tx_dropped), not lost or taken for sent.
        for _ in 0..3 {
            let addr = sock.alloc().unwrap();
            let (buf, at) = sock.frame_mut(addr).unwrap();
            buf[at..at + frame.len()].copy_from_slice(&frame);
            assert!(sock.transmit(addr, frame.len() as u32));
        }
        drop(link);
        assert!(!xdp_attached(&veth.outer), "{mode:?}: nothing stays attached");
        let mut frames = Vec::new();
        let (handed, unsent) = sock.surrender(&mut frames);
        assert_eq!(unsent, (3, 3 * frame.len() as u64), "{mode:?}: the three queued frames were not sent");
        assert_eq!(handed, sock.umem_frames() as usize, "{mode:?}: every frame of the UMEM handed back");
        frames.sort_unstable();
        frames.dedup();
        assert_eq!(frames.len(), handed, "{mode:?}: no frame twice");

        // Detach: dropping the link removes the program from the interface.
        drop(sock);
        assert!(!xdp_attached(&veth.outer), "{mode:?}: nothing stays attached");
        assert_eq!(vrouter::io::netlink::xdp_attached(idx).unwrap(), None);
    }
}

/// A frame longer than a UMEM frame (veths at MTU 9000): it comes as a
/// chain of frames, each but the last marked to go on, and a chain queued
/// with `transmit_chain` reaches the peer as one datagram, whole.
#[test]
fn a_jumbo_frame_comes_in_a_chain_of_frames_and_leaves_in_one() {
    if !root_or_skip("AF_XDP tests") {
        return;
    }
    let veth = Veth::new("j");
    run(&["ip", "link", "set", &veth.outer, "mtu", "9000"]);
    veth.exec(&["ip", "link", "set", &veth.inner, "mtu", "9000"]);
    let (mut sock, _map, _link) = attach_and_open(&veth, XdpMode::Native);
    assert!(sock.is_multi_buffer(), "bound for several frames a packet");

    // In: an 8,900-byte datagram, an 8,942-byte frame.
    veth.exec(&["python3", "-c", "import socket;socket.socket(2,2).sendto(b'v'*8900,('10.250.0.1',9999))"]);
    let mut descs = [RxDesc { addr: 0, len: 0, more: false }; 64];
    let mut chain = Vec::new();
    let start = Instant::now();
    while chain.last().is_none_or(|(_, more, _)| *more) && start.elapsed() < Duration::from_secs(5) {
        sock.refill(64);
        let n = sock.receive(&mut descs);
        for d in &descs[..n] {
            let (frame, at) = sock.frame_mut(d.addr).unwrap();
            let bytes = frame[at..at + d.len as usize].to_vec();
            // Only the datagram's chain: IPv6 neighbour chatter comes too,
            // before it and after it, in the same receive as its end.
            let open = chain.last().is_none_or(|(_, more, _)| *more);
            if open && (!chain.is_empty() || d.more) {
                chain.push((d.len, d.more, bytes));
            }
            sock.release(d.addr);
        }
        if n == 0 {
            let _ = sock.poll_rx(10);
        }
    }
    let whole: Vec<u8> = chain.iter().flat_map(|(_, _, b)| b.iter().copied()).collect();
    let marks: Vec<bool> = chain.iter().map(|(_, more, _)| *more).collect();
    assert!(chain.len() >= 3 && marks[..marks.len() - 1].iter().all(|m| *m) && !marks[marks.len() - 1], "{marks:?}");
    assert_eq!(whole.len(), 8942);
    assert_eq!((whole[23], &whole[36..38]), (17, &9999u16.to_be_bytes()[..]), "UDP to port 9999");
    assert!(whole[42..].iter().all(|&b| b == b'v'), "every byte of the datagram, in order");

    // Out: a 9,000-byte frame in a chain of 2 KiB frames.
    let listener = Command::new("ip")
        .args(["netns", "exec", &veth.ns, "python3", "-c"])
        .arg("import socket;s=socket.socket(2,2);s.bind(('10.250.0.2',7777));s.settimeout(5);print(len(s.recv(65535)))")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let l2 = L2 { src: OUTER_MAC.parse().unwrap(), dst: INNER_MAC.parse().unwrap() };
    let frame =
        build::udp4_frame(l2, "10.250.0.1".parse().unwrap(), "10.250.0.2".parse().unwrap(), 9999, 7777, 64, 9000);
    let mut pieces = Vec::new();
    for part in frame.chunks(2048) {
        let addr = sock.alloc().unwrap();
        let (buf, at) = sock.frame_mut(addr).unwrap();
        buf[at..at + part.len()].copy_from_slice(part);
        pieces.push((addr, part.len() as u32));
    }
    assert!(sock.transmit_chain(&pieces));
    let start = Instant::now();
    while sock.tx_pending() > 0 && start.elapsed() < Duration::from_secs(5) {
        sock.kick_tx().unwrap();
        sock.complete();
    }
    let heard = listener.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&heard.stdout).trim(), "8958", "the peer received the datagram whole");
    assert_eq!(sock.stats().unwrap().tx_invalid, 0);
}

/// Two pods, each a namespace behind a veth, and a worker running the
/// pipeline between their AF_XDP ports: `ping` from one pod to the other
/// works through vrouter (proxy ARP for the gateway, routing in VRF blue,
/// MAC rewrite and TTL decrement on the way).
#[test]
fn pods_ping_each_other_through_the_pipeline() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use vrouter::io::worker::{Port, Worker};
    use vrouter::pipeline::{Pipeline, PipelineConfig};
    use vrouter::tables::{Limits, NextHop, Object, Op, RouteSpec, RouteTarget, TablesWriter, Vif, VifKind, VrfSpec};

    if !root_or_skip("AF_XDP tests") {
        return;
    }
    let id = std::process::id() % 100_000;
    struct Pod {
        ns: String,
        outer: String,
    }
    impl Drop for Pod {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
            let _ = Command::new("ip").args(["link", "del", &self.outer]).output();
        }
    }
    let make_pod = |name: &str, ip: &str, mac: &str| -> Pod {
        let pod = Pod { ns: format!("vrt-{name}-{id}"), outer: format!("vp{name}{id}") };
        let _ = Command::new("ip").args(["netns", "del", &pod.ns]).output();
        run(&["ip", "netns", "add", &pod.ns]);
        run(&[
            "ip", "link", "add", &pod.outer, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", &pod.ns,
        ]);
        run(&["ip", "link", "set", &pod.outer, "up"]);
        let ns = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", &pod.ns];
            full.extend_from_slice(args);
            run(&full);
        };
        ns(&["ip", "link", "set", "lo", "up"]);
        ns(&["ip", "link", "set", "eth0", "up"]);
        ns(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns(&["ip", "route", "add", "10.1.0.1", "dev", "eth0"]);
        ns(&["ip", "route", "add", "default", "via", "10.1.0.1", "dev", "eth0"]);
        let _ = Command::new("ip")
            .args(["netns", "exec", &pod.ns, "ethtool", "-K", "eth0", "tx", "off", "gso", "off", "tso", "off"])
            .output();
        let _ = Command::new("ethtool").args(["-K", &pod.outer, "gro", "off", "tx", "off"]).output();
        pod
    };
    let a1 = make_pod("a1", "10.1.0.2", "02:00:00:00:01:01");
    let a2 = make_pod("a2", "10.1.0.3", "02:00:00:00:01:02");

    let router = PipelineConfig::default().router_mac;
    let (mut writer, handle) =
        TablesWriter::new(Limits { vifs: 8, vrfs: 4, nexthops: 16, labels: 32, routes_per_vrf: 16 });
    let pod_vif = |i: u32, name: &str, mac: &str, ip: &str| {
        let mut v = Vif::new(i, name, VifKind::Virtual, 1, mac.parse().unwrap());
        v.ipv4 = Some(ip.parse().unwrap());
        Op::Add(Object::Vif(v))
    };
    let route = |p: &str, nh| {
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: 1,
            prefix: p.parse().unwrap(),
            target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
        }))
    };
    writer
        .apply(&[
            Op::Add(Object::Vrf(VrfSpec {
                id: 1,
                name: "blue".into(),
                gateway_v4: Some("10.1.0.1".parse().unwrap()),
                gateway_v6: None,
            })),
            pod_vif(1, &a1.outer, "02:00:00:00:01:01", "10.1.0.2"),
            pod_vif(2, &a2.outer, "02:00:00:00:01:02", "10.1.0.3"),
            Op::Add(Object::NextHop(
                1,
                NextHop::Encap { oif: 1, smac: router, dmac: "02:00:00:00:01:01".parse().unwrap() },
            )),
            Op::Add(Object::NextHop(
                2,
                NextHop::Encap { oif: 2, smac: router, dmac: "02:00:00:00:01:02".parse().unwrap() },
            )),
            Op::Add(Object::NextHop(3, NextHop::Receive)),
            route("10.1.0.2/32", 1),
            route("10.1.0.3/32", 2),
            route("10.1.0.1/32", 3),
        ])
        .unwrap();

    let mut ports: Vec<Port> = Vec::new();
    let mut keep = Vec::new();
    for (vif, pod) in [(1u32, &a1), (2, &a2)] {
        let idx = ifindex(&pod.outer).unwrap();
        // The second port shares the first one's UMEM.
        let sock = match ports.first() {
            Some(first) => XskSocket::open_shared(idx, 0, XskConfig::default(), &first.sock.share().unwrap()).unwrap(),
            None => XskSocket::open(idx, 0, XskConfig::default()).unwrap(),
        };
        let map = XskMap::new(1).unwrap();
        map.set(0, sock.raw_fd()).unwrap();
        let prog = Program::redirect_all(&map).unwrap();
        keep.push((Attachment::new(&prog, idx, XdpMode::Generic).unwrap(), map));
        ports.push(Port::new(vif, sock));
    }
    let pipeline = Pipeline::new(PipelineConfig::default(), handle.load().limits());
    let mut worker = Worker::new(ports, pipeline, handle.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            if worker.poll().unwrap() == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        worker
    });
    let out = Command::new("ip")
        .args(["netns", "exec", &a1.ns, "ping", "-c", "5", "-i", "0.2", "-W", "2", "10.1.0.3"])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let worker = thread.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let c = worker.counters();
    let s = worker.pipeline().stats();
    assert!(
        out.status.success(),
        "ping through vrouter failed:\n{text}\nworker {c:?}\nblue {:?}\ndrops {:?}",
        s.vrf(1),
        s.drops
    );
    assert!(text.contains("5 received"), "{text}");
    assert!(s.vrf(1).arp_proxies >= 2, "both pods learned the gateway from vrouter: {:?}", s.vrf(1));
    assert!(s.vif(1).rx_packets >= 5 && s.vif(2).tx_packets >= 5 && s.vif(1).tx_packets >= 5);
    assert!(c.moved >= 10 && c.copied == 0, "frames moved between ports by address, none copied: {c:?}");
    drop(keep);
}

/// Namespaces removed on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Two nodes, each a namespace with its own worker, joined by a fabric
/// link; a pod on each. The pods ping each other over MPLS over UDP, and
/// the nodes still reach each other through their kernels.
#[test]
fn pods_on_two_nodes_talk_over_mpls_over_udp() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use vrouter::io::worker::{Port, Worker};
    use vrouter::pipeline::{Pipeline, PipelineConfig};
    use vrouter::tables::{
        Limits, NextHop, Object, Op, RouteSpec, RouteTarget, TablesWriter, Tunnel, TunnelEncap, Vif, VifKind, VrfSpec,
    };

    if !root_or_skip("AF_XDP tests") {
        return;
    }
    let id = std::process::id() % 100_000;
    // Names of their own: other tests in this binary run at the same time.
    let name = |s: &str| format!("vrt-t{s}-{id}");
    let (n1, n2, a1, b1) = (name("n1"), name("n2"), name("a1"), name("b1"));
    let _cleanup = Namespaces(vec![n1.clone(), n2.clone(), a1.clone(), b1.clone()]);
    for ns in [&n1, &n2, &a1, &b1] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        run(&["ip", "netns", "add", ns]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }
    let fab_mac = |n: u8| format!("02:fa:00:00:00:0{n}");
    let pod_mac = |n: u8| format!("02:00:00:00:0{n}:01");
    run(&[
        "ip",
        "link",
        "add",
        "fab",
        "netns",
        &n1,
        "address",
        &fab_mac(1),
        "type",
        "veth",
        "peer",
        "name",
        "fab",
        "netns",
        &n2,
        "address",
        &fab_mac(2),
    ]);
    for (n, ns) in [(1u8, &n1), (2, &n2)] {
        in_ns(ns, &["ip", "addr", "add", &format!("192.168.77.{n}/24"), "dev", "fab"]);
        in_ns(ns, &["ip", "link", "set", "fab", "up"]);
        let _ =
            Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", "fab", "gro", "off", "tx", "off"]).output();
    }
    for (n, node, pod, ip) in [(1u8, &n1, &a1, "10.1.0.2"), (2, &n2, &b1, "10.1.1.2")] {
        run(&[
            "ip",
            "link",
            "add",
            "pod",
            "netns",
            node,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod,
            "address",
            &pod_mac(n),
        ]);
        in_ns(node, &["ip", "link", "set", "pod", "up"]);
        in_ns(pod, &["ip", "link", "set", "eth0", "up"]);
        in_ns(pod, &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        in_ns(pod, &["ip", "route", "add", "10.1.0.1", "dev", "eth0"]);
        in_ns(pod, &["ip", "route", "add", "default", "via", "10.1.0.1", "dev", "eth0"]);
        let _ = Command::new("ip").args(["netns", "exec", pod, "ethtool", "-K", "eth0", "tx", "off"]).output();
    }

    // Each node's tables: its pod local, the other node's pod behind a
    // tunnel with label 16 (the remote pod's label), label 16 for its own pod.
    let tables = |me: u8| {
        let other = 3 - me;
        let router = PipelineConfig::default().router_mac;
        let (mine, theirs) = if me == 1 { ("10.1.0.2/32", "10.1.1.2/32") } else { ("10.1.1.2/32", "10.1.0.2/32") };
        let (mut w, h) = TablesWriter::new(Limits { vifs: 8, vrfs: 4, nexthops: 16, labels: 32, routes_per_vrf: 16 });
        let mut fabric = Vif::new(0, "fab", VifKind::Fabric, 0, fab_mac(me).parse().unwrap());
        fabric.ipv4 = Some(format!("192.168.77.{me}").parse().unwrap());
        let pod = Vif::new(1, "pod", VifKind::Virtual, 1, pod_mac(me).parse().unwrap());
        let tunnel = Tunnel::new(
            0,
            TunnelEncap::MplsOverUdp,
            format!("192.168.77.{me}").parse().unwrap(),
            format!("192.168.77.{other}").parse().unwrap(),
            fab_mac(other).parse().unwrap(),
        );
        let route = |p: &str, nh, label| {
            Op::Add(Object::Route(RouteSpec {
                network: None,
                vrf: 1,
                prefix: p.parse().unwrap(),
                target: RouteTarget { nh, label },
            }))
        };
        w.apply(&[
            Op::Add(Object::Vrf(VrfSpec { id: 0, name: "fabric".into(), gateway_v4: None, gateway_v6: None })),
            Op::Add(Object::Vrf(VrfSpec {
                id: 1,
                name: "blue".into(),
                gateway_v4: Some("10.1.0.1".parse().unwrap()),
                gateway_v6: None,
            })),
            Op::Add(Object::Vif(fabric)),
            Op::Add(Object::Vif(pod)),
            Op::Add(Object::NextHop(1, NextHop::Encap { oif: 1, smac: router, dmac: pod_mac(me).parse().unwrap() })),
            Op::Add(Object::NextHop(2, NextHop::Tunnel(tunnel))),
            Op::Add(Object::NextHop(3, NextHop::Receive)),
            Op::Add(Object::Label(16, 1)),
            route(mine, 1, RouteTarget::NO_LABEL),
            route(theirs, 2, 16),
            route("10.1.0.1/32", 3, RouteTarget::NO_LABEL),
        ])
        .unwrap();
        (w, h)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let nodes: Vec<_> = [(1u8, n1.clone()), (2, n2.clone())]
        .into_iter()
        .map(|(me, ns)| {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            let (writer, handle) = tables(me);
            std::thread::spawn(move || {
                vrouter::io::enter_netns(&ns).unwrap();
                let open = |dev: &str, fabric: bool| {
                    let idx = ifindex(dev).unwrap();
                    let sock = XskSocket::open(idx, 0, XskConfig::default()).unwrap();
                    let map = XskMap::new(1).unwrap();
                    map.set(0, sock.raw_fd()).unwrap();
                    let node: std::net::Ipv4Addr = format!("192.168.77.{me}").parse().unwrap();
                    let prog = if fabric { Program::redirect_tunnels(&map, node) } else { Program::redirect_all(&map) }
                        .unwrap();
                    (sock, map, Attachment::new(&prog, idx, XdpMode::Generic).unwrap())
                };
                let (fab, fab_map, fab_link) = open("fab", true);
                let (pod, pod_map, pod_link) = open("pod", false);
                let pipeline = Pipeline::new(PipelineConfig::default(), handle.load().limits());
                let mut worker = Worker::new(vec![Port::new(0, fab), Port::new(1, pod)], pipeline, handle);
                ready.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if worker.poll().unwrap() == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                drop((fab_link, pod_link, fab_map, pod_map, writer));
                worker
            })
        })
        .collect();
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    let ping = |ns: &str, dst: &str| {
        Command::new("ip").args(["netns", "exec", ns, "ping", "-c", "4", "-i", "0.2", "-W", "2", dst]).output().unwrap()
    };
    let pods = ping(&a1, "10.1.1.2");
    // The fabric program passes everything but tunnels: the nodes' own
    // traffic (ARP, ICMP here; SSH in real life) still reaches their kernels.
    let kernels = ping(&n1, "192.168.77.2");
    stop.store(true, Ordering::Relaxed);
    let workers: Vec<_> = nodes.into_iter().map(|t| t.join().unwrap()).collect();
    let (s1, s2) = (workers[0].pipeline().stats(), workers[1].pipeline().stats());
    let pods_out = String::from_utf8_lossy(&pods.stdout);
    assert!(
        pods.status.success() && pods_out.contains("4 received"),
        "pod to pod over the tunnel failed:\n{pods_out}\nnode1 {:?} drops {:?}\nnode2 {:?} drops {:?}",
        s1.vrf(1),
        s1.drops,
        s2.vrf(1),
        s2.drops
    );
    assert!(
        kernels.status.success(),
        "node to node through the kernels failed: {}",
        String::from_utf8_lossy(&kernels.stdout)
    );
    for s in [s1, s2] {
        assert!(s.vrf(1).udp_mpls_tunnels >= 4, "each node encapsulated: {:?}", s.vrf(1));
        assert!(s.vrf(1).decaps >= 4, "each node decapsulated: {:?}", s.vrf(1));
        assert_eq!(s.vif(0).rx_packets, s.vrf(1).decaps, "only tunnel packets reached vrouter from the fabric");
    }
}

/// The kernel's link news reaches a subscriber in the namespace it was
/// made in: a link set down, one deleted, and nothing when nothing
/// changed (what vrouterd's ports follow their interfaces by). And the
/// links it dumps carry the state and MTU a port shows.
#[test]
fn link_events_and_links_follow_the_namespace_s_interfaces() {
    use vrouter::io::netlink::{links, LinkEvents};
    if !root_or_skip("AF_XDP tests") {
        return;
    }
    let v = Veth::new("le");
    let ns = v.ns.clone();
    let inner = v.inner.clone();
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let (said_tx, said_rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        vrouter::io::enter_netns(&ns).unwrap();
        let events = LinkEvents::open().unwrap();
        let state = |name: &str| links().unwrap().into_iter().find(|l| l.name == name).map(|l| (l.state(), l.mtu));
        // For each step: was there news, and the link as it is then.
        while let Ok(step) = rx.recv() {
            let told = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                events.changed()
            });
            said_tx.send((step, told, state(&inner))).unwrap();
        }
    });
    let step = |what: &'static str, cmd: &[&str]| {
        if !cmd.is_empty() {
            v.exec(cmd);
        }
        tx.send(what).unwrap();
        said_rx.recv().unwrap()
    };
    // Before anything changes the watcher may see the veth's own setup
    // (made just before it subscribed): take that first.
    step("settle", &[]);
    assert_eq!(step("nothing", &[]), ("nothing", false, Some(("up", 1500))));
    assert_eq!(step("mtu", &["ip", "link", "set", &v.inner, "mtu", "1400"]), ("mtu", true, Some(("up", 1400))));
    assert_eq!(step("down", &["ip", "link", "set", &v.inner, "down"]), ("down", true, Some(("link down", 1400))));
    let gone = step("deleted", &["ip", "link", "del", &v.inner]);
    assert_eq!(gone, ("deleted", true, None));
    drop(tx);
    watcher.join().unwrap();
}
