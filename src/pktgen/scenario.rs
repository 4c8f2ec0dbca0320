//! The in-memory pipeline benchmark: one node's tables, a batch of frames,
//! and a loop that processes them. `vrpktgen pipeline` and
//! `benches/pipeline.rs` both run it, so their numbers are comparable.
//!
//! The node: fabric vif 0 (192.168.0.1), pods a1 (vif 1) and a2 (vif 2) in
//! VRF 1. VRF 1 also holds a BGP-like table of IPv4 prefixes and a set of
//! IPv6 prefixes, all resolving to the case's next hop; the frames'
//! destinations are spread over 10,000 addresses inside those prefixes.
//! `service_mix` adds 256 service addresses (/32s to the ECMP composite),
//! the destination of one flow in ten. The floating-IP cases add a public
//! VRF 2 in which a2 holds 185.22.97.188, reached by label 18 from a
//! gateway, whose clients (198.18.0.0/15) it routes back to over MPLS over
//! UDP; they always run with a flow table, which carries the NAT. The
//! cross-VRF cases add network green (VRF 3) with pod g1 (vif 3,
//! 10.3.0.2), which VRF 1 reaches by a route it imports from green (and
//! green VRF 1's default route): remote clients of VRF 1 reach g1 by label
//! 17, and g1's answers, looked up in green, are routed back in VRF 1 by
//! their pairs. They always run with a flow table and a policy in both
//! VRFs (one that allows all, unless `--flow-policy` gives each its 100
//! rules), since only a policy makes the pairs.

use super::build::{self, L2};
use crate::pipeline::{Frame, Pipeline, PipelineConfig, Spill, Verdict};
use crate::tables::{
    EcmpGroup, Limits, NextHop, Object, ObjectKey, Op, Prefix, RouteSpec, RouteTarget, Tables, TablesHandle,
    TablesWriter, Tunnel, TunnelEncap, Vif, VifKind, VrfSpec,
};
use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The benchmark cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Pod to pod on this node.
    LocalForward,
    /// Pod to a remote node over MPLS over UDP.
    EncapMplsoudp,
    /// Pod to a remote node over MPLS over GRE.
    EncapMplsogre,
    /// Pod to a service: ECMP over three remote nodes, MPLS over UDP.
    EncapMplsoudpEcmp,
    /// From a remote node over MPLS over UDP, to a local pod.
    DecapMplsoudp,
    /// From a remote node over MPLS over GRE, to a local pod.
    DecapMplsogre,
    /// A pod network's mix: pod to remote nodes over MPLS over UDP, and one
    /// flow in ten to one of `SERVICES` service addresses (/32 routes to
    /// an ECMP composite among the bulk routes), as a Kubernetes node
    /// carries it. With a flow table, only the service flows are tracked.
    ServiceMix,
    /// From a gateway over MPLS over UDP to pod a2's floating IP, in the
    /// public VRF: DNATed to the pod, as the clients of a service reached
    /// from outside the cluster are.
    FloatingIpIn,
    /// `FloatingIpIn` to a floating IP that pods a1 and a2 share, as the
    /// article's nginx pods share 185.22.97.188: the public VRF routes it
    /// to an ECMP composite over the two, and each client's flow is DNATed
    /// to the pod its hash picks, and pinned there.
    FloatingIpShared,
    /// Pod a2's answers to those clients: SNATed back to the floating IP
    /// and routed in the public VRF, to the gateway over MPLS over UDP.
    /// Their pairs are made by the clients' packets first (`Bench::new`).
    FloatingIpOut,
    /// Pod a2, which holds the floating IP, to remote pods over MPLS over
    /// UDP: its own flows in its network, which no NAT touches, as an
    /// OpenStack VM with a floating IP talks to the other VMs of its
    /// network. Every packet of such a pod is tracked, its answers'
    /// rewrites being in their flows.
    FloatingPodEncap,
    /// From a remote node over MPLS over UDP, by VRF 1's label, to pod g1
    /// of network green, by the route VRF 1 imports from green: a pair
    /// whose reverse entry lives in green.
    CrossVrfIn,
    /// g1's answers to those clients: looked up in green, routed back in
    /// VRF 1 by their pairs, to the remote node over MPLS over UDP. Their
    /// pairs are made by the clients' packets first (`Bench::new`).
    CrossVrfOut,
    /// `LocalForward` over IPv6: pod a1 to pod a2, fd00:1::2 to fd00:1::3.
    LocalForward6,
    /// `EncapMplsoudp` over IPv6: pod a1 to the bulk IPv6 prefixes, over
    /// MPLS over UDP on the IPv4 underlay.
    EncapMplsoudp6,
    /// `DecapMplsoudp` over IPv6: from the bulk IPv6 prefixes to pod a2,
    /// out of MPLS over UDP, by the VRF's label.
    DecapMplsoudp6,
    /// Pod a1 to `SERVICES` IPv6 service addresses (fd00:96::/120), each a
    /// /128 to the ECMP composite over three remote nodes: Kubernetes'
    /// IPv6 services. With a flow table and no policy, only these flows
    /// are tracked, their members pinned.
    Service6,
}

impl Case {
    /// Every case, in report order.
    pub const ALL: [Case; 17] = [
        Case::LocalForward,
        Case::EncapMplsoudp,
        Case::EncapMplsogre,
        Case::EncapMplsoudpEcmp,
        Case::DecapMplsoudp,
        Case::DecapMplsogre,
        Case::ServiceMix,
        Case::FloatingIpIn,
        Case::FloatingIpShared,
        Case::FloatingIpOut,
        Case::FloatingPodEncap,
        Case::CrossVrfIn,
        Case::CrossVrfOut,
        Case::LocalForward6,
        Case::EncapMplsoudp6,
        Case::DecapMplsoudp6,
        Case::Service6,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Case::LocalForward => "local_forward",
            Case::EncapMplsoudp => "encap_mplsoudp",
            Case::EncapMplsogre => "encap_mplsogre",
            Case::EncapMplsoudpEcmp => "encap_mplsoudp_ecmp",
            Case::DecapMplsoudp => "decap_mplsoudp",
            Case::DecapMplsogre => "decap_mplsogre",
            Case::ServiceMix => "service_mix",
            Case::FloatingIpIn => "floating_ip_in",
            Case::FloatingIpShared => "floating_ip_shared",
            Case::FloatingIpOut => "floating_ip_out",
            Case::FloatingPodEncap => "floating_pod_encap",
            Case::CrossVrfIn => "cross_vrf_in",
            Case::CrossVrfOut => "cross_vrf_out",
            Case::LocalForward6 => "local_forward6",
            Case::EncapMplsoudp6 => "encap_mplsoudp6",
            Case::DecapMplsoudp6 => "decap_mplsoudp6",
            Case::Service6 => "service6",
        }
    }

    /// The case with this name.
    pub fn from_name(s: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == s)
    }

    /// True for the verdict the frames of this case should get.
    pub fn delivers(self, v: Verdict) -> bool {
        match self {
            // Either pod behind the floating IP.
            Case::FloatingIpShared => matches!(v, Verdict::Tx(A1 | A2)),
            _ => v == self.expected(),
        }
    }

    /// The verdict every frame of this case should get (of a case that
    /// spreads its flows, one of them: `delivers`).
    fn expected(self) -> Verdict {
        match self {
            Case::LocalForward
            | Case::LocalForward6
            | Case::DecapMplsoudp
            | Case::DecapMplsogre
            | Case::DecapMplsoudp6
            | Case::FloatingIpIn => Verdict::Tx(A2),
            Case::CrossVrfIn => Verdict::Tx(G1),
            _ => Verdict::Tx(FABRIC),
        }
    }

    /// True for the cases through a floating IP, whose NAT a flow carries.
    pub fn floating(self) -> bool {
        matches!(self, Case::FloatingIpIn | Case::FloatingIpShared | Case::FloatingIpOut)
    }

    /// True for the cases whose pod a2 holds a floating IP (in the public
    /// VRF, `public_vrf_ops`).
    pub fn floating_pod(self) -> bool {
        self.floating() || self == Case::FloatingPodEncap
    }

    /// True for the cases to and from a pod of another VRF on this node.
    pub fn cross_vrf(self) -> bool {
        matches!(self, Case::CrossVrfIn | Case::CrossVrfOut)
    }

    /// True for the cases whose packets only a flow carries where they go:
    /// they run with a flow table whatever the parameters say.
    pub fn needs_flows(self) -> bool {
        self.floating_pod() || self.cross_vrf()
    }

    /// True for the cases whose pods' packets are IPv6.
    pub fn ipv6(self) -> bool {
        matches!(self, Case::LocalForward6 | Case::EncapMplsoudp6 | Case::DecapMplsoudp6 | Case::Service6)
    }

    /// For the cases of answers, the case of the clients' packets, which
    /// make the pairs the answers hit.
    pub fn opened_by(self) -> Option<Case> {
        match self {
            Case::FloatingIpOut => Some(Case::FloatingIpIn),
            Case::CrossVrfOut => Some(Case::CrossVrfIn),
            _ => None,
        }
    }

    /// The vif the case's frames come in on.
    pub fn in_vif(self) -> u32 {
        match self {
            Case::DecapMplsoudp
            | Case::DecapMplsogre
            | Case::DecapMplsoudp6
            | Case::FloatingIpIn
            | Case::FloatingIpShared
            | Case::CrossVrfIn => FABRIC,
            Case::FloatingIpOut | Case::FloatingPodEncap => A2,
            Case::CrossVrfOut => G1,
            _ => A1,
        }
    }
}

/// Fabric vif index.
pub const FABRIC: u32 = 0;
/// Pod a1's vif: the sender in the local and encap cases.
pub const A1: u32 = 1;
/// Pod a2's vif: the receiver in the local and decap cases.
pub const A2: u32 = 2;
/// The VRF of the pods.
pub const VRF: u32 = 1;
/// Pod a1's and a2's IPv4 addresses.
const A1_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const A2_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
/// Pod a1's IPv6 address.
const A1_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
/// Pod a2's IPv6 address.
const A2_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);
const NH_TO_A2: u32 = 1;
const NH_TO_A1: u32 = 3;
const NH_UDP: u32 = 10;
const NH_GRE: u32 = 11;
const NH_ECMP: u32 = 20;
/// `FloatingIpShared`'s composite over pods a1 and a2.
const NH_FLOATING_ECMP: u32 = 21;
const NH_VRF_LOOKUP: u32 = 30;
const NH_PUBLIC_LOOKUP: u32 = 31;
/// The public VRF of the floating-IP cases.
pub const PUBLIC_VRF: u32 = 2;
/// Pod a2's floating IP, in `PUBLIC_VRF` (the article's nginx address).
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(185, 22, 97, 188);
const LABEL_PUBLIC: u32 = 18;
/// Network green of the cross-VRF cases.
pub const GREEN_VRF: u32 = 3;
/// Green's pod g1's vif.
pub const G1: u32 = 3;
/// g1's address.
pub const G1_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const NH_TO_G1: u32 = 2;
/// Service addresses in `ServiceMix`: 10.96.0.0 onwards, Kubernetes'
/// default service range, as many as a mid-sized cluster has.
pub const SERVICES: u32 = 256;
const SERVICE_BASE: u32 = 0x0a60_0000;
/// One flow in this many is to a service, in `ServiceMix`.
const SERVICE_SHARE: usize = 10;
const LABEL_VRF: u32 = 17;
const HEADROOM: usize = 256;
const BUF_LEN: usize = 2048;

/// Node and peer addresses.
pub fn fabric_ip() -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 1)
}
fn peer_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 1 + n)
}
fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// A deterministic xorshift generator: same seed, same tables.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator; the seed must not be zero.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` distinct IPv4 prefixes with the length mix of a full BGP table:
/// about 60 % /24, 20 % /22-/23, 17 % /16-/21 and 3 % /8-/15, spread over
/// unicast space.
pub fn bgp_like_v4(n: usize, seed: u64) -> Vec<(u32, u8)> {
    let mut rng = Rng::new(seed);
    let mut seen = ahash::AHashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let len = match r % 100 {
            0..=59 => 24,
            60..=69 => 23,
            70..=79 => 22,
            80..=96 => 16 + (r >> 8) as u8 % 6,
            _ => 8 + (r >> 8) as u8 % 8,
        };
        // First octet 1-223, never 10 (the pods' own network) or 127.
        let a = (r >> 16) as u32;
        let first = 1 + (a >> 24) % 223;
        if first == 10 || first == 127 {
            continue;
        }
        let addr = (first << 24 | (a & 0x00ff_ffff)) & (u32::MAX << (32 - len));
        if seen.insert((addr, len)) {
            out.push((addr, len));
        }
    }
    out
}

/// `n` distinct IPv6 prefixes: mostly /48s inside a few thousand /32
/// allocations, the rest /32-/44, as in the global IPv6 table.
pub fn bgp_like_v6(n: usize, seed: u64) -> Vec<(u128, u8)> {
    let mut rng = Rng::new(seed);
    let allocations: Vec<u128> =
        (0..4096).map(|_| (0x2000u128 << 112) | (u128::from(rng.next_u64() as u32 & 0x0fff_ffff) << 96)).collect();
    let mut seen = ahash::AHashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let base = allocations[(r % 4096) as usize];
        let len = match (r >> 12) % 10 {
            0 => 32,
            1 => 36 + ((r >> 20) % 9) as u8,
            _ => 48,
        };
        let addr = (base | (u128::from(rng.next_u64() as u32) << 64)) & (u128::MAX << (128 - len));
        if seen.insert((addr, len)) {
            out.push((addr, len));
        }
    }
    out
}

/// Pods per node in `pod_hosts_v6`: each node's pods share its /64.
pub const PODS_PER_NODE_V6: usize = 100;

/// `n` distinct IPv6 pod addresses as /128s, `PODS_PER_NODE_V6` to a
/// node's /64 (fd00:0:0:NODE::/64), each with a random interface
/// identifier, as SLAAC or an IPAM that hashes gives them: the layout
/// where pods share no trie nodes below their subnet.
pub fn pod_hosts_v6(n: usize, seed: u64) -> Vec<u128> {
    let mut rng = Rng::new(seed);
    let mut seen = ahash::AHashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let node = (out.len() / PODS_PER_NODE_V6) as u128;
        let addr = (0xfd00u128 << 112) | (node << 64) | u128::from(rng.next_u64().max(1));
        if seen.insert(addr) {
            out.push(addr);
        }
    }
    out
}

/// Pod a1's or a2's vif (`index`), as the node's tables first hold it.
fn pod_vif(index: u32) -> Vif {
    let (name, ipv4, ipv6) = if index == A1 { ("veth-a1", A1_IP, A1_IP6) } else { ("veth-a2", A2_IP, A2_IP6) };
    let mut pod = Vif::new(index, name, VifKind::Virtual, VRF, mac(index as u8));
    (pod.ipv4, pod.ipv6) = (Some(ipv4), Some(ipv6));
    pod
}

/// Builds the node's tables. Bulk routes resolve to `bulk`.
fn node_ops(bulk: RouteTarget) -> Vec<Op> {
    let router = PipelineConfig::default().router_mac;
    let mut fabric = Vif::new(FABRIC, "eth0", VifKind::Fabric, 0, mac(0xf0));
    fabric.ipv4 = Some(fabric_ip());
    let (a1, a2) = (pod_vif(A1), pod_vif(A2));
    let tunnel = |encap, n| NextHop::Tunnel(Tunnel::new(FABRIC, encap, fabric_ip(), peer_ip(n), mac(0xe0 + n)));
    let route = |p: &str, target| {
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: VRF,
            prefix: p.parse().expect("literal prefix"),
            target,
        }))
    };
    let local = RouteTarget { nh: NH_TO_A2, label: RouteTarget::NO_LABEL };
    vec![
        Op::Add(Object::Vrf(VrfSpec { id: 0, name: "fabric".into(), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::Vrf(VrfSpec {
            id: VRF,
            name: "blue".into(),
            gateway_v4: Some(Ipv4Addr::new(10, 1, 0, 1)),
            gateway_v6: Some("fd00:1::1".parse().expect("literal")),
        })),
        Op::Add(Object::Vif(fabric)),
        Op::Add(Object::Vif(a1)),
        Op::Add(Object::Vif(a2)),
        Op::Add(Object::NextHop(NH_TO_A2, NextHop::Encap { oif: A2, smac: router, dmac: mac(2) })),
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
        Op::Add(Object::NextHop(NH_VRF_LOOKUP, NextHop::VrfLookup { vrf: VRF })),
        Op::Add(Object::Label(16, NH_TO_A2)),
        Op::Add(Object::Label(LABEL_VRF, NH_VRF_LOOKUP)),
        route("10.1.0.3/32", local),
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: VRF,
            prefix: Prefix::new(IpAddr::V6(A2_IP6), 128).expect("valid"),
            target: local,
        })),
        route("0.0.0.0/0", bulk),
    ]
}

/// A node's tables with `v4`/`v6` bulk prefixes, loaded in batches of
/// `batch` routes. Returns the writer, the prefixes, and the load time.
pub fn build_node(
    bulk: RouteTarget,
    v4: &[(u32, u8)],
    v6: &[(u128, u8)],
    batch: usize,
) -> (TablesWriter, TablesHandle, Duration) {
    let limits = Limits { routes_per_vrf: v4.len().max(v6.len()) + 16 + SERVICES as usize, ..Limits::default() };
    let (mut w, h) = TablesWriter::new(limits);
    w.apply(&node_ops(bulk)).expect("the node's base tables are valid");
    let started = Instant::now();
    let routes = v4
        .iter()
        .map(|&(a, l)| (IpAddr::V4(Ipv4Addr::from(a)), l))
        .chain(v6.iter().map(|&(a, l)| (IpAddr::V6(Ipv6Addr::from(a)), l)));
    let mut ops = Vec::with_capacity(batch);
    for (addr, len) in routes {
        let prefix = Prefix::new(addr, len).expect("generated prefixes are canonical");
        ops.push(Op::Add(Object::Route(RouteSpec { network: None, vrf: VRF, prefix, target: bulk })));
        if ops.len() == batch {
            w.apply(&ops).expect("bulk routes fit");
            ops.clear();
        }
    }
    if !ops.is_empty() {
        w.apply(&ops).expect("bulk routes fit");
    }
    (w, h, started.elapsed())
}

/// The frames of a case: `flows` distinct frames whose inner packets are
/// `inner_len` bytes of Ethernet frame.
pub fn frames(case: Case, bulk: &BulkPrefixes, flows: usize, inner_len: usize, seed: u64) -> Vec<Vec<u8>> {
    worker_frames(case, bulk, flows, inner_len, seed, 0)
}

/// The bulk prefixes a node routes, from which the encap cases pick their
/// destinations.
pub struct BulkPrefixes {
    /// IPv4 prefixes, as address and length.
    pub v4: Vec<(u32, u8)>,
    /// IPv6 prefixes, as address and length.
    pub v6: Vec<(u128, u8)>,
}

/// Distinct 5-tuples a worker's frames carry: `worker_frames` wraps its
/// source ports there.
const PORTS_PER_WORKER: usize = 60_000;

/// `frames` for worker `worker` of several: its flows differ from the
/// others' by destination port, as a NIC's RSS would give each queue
/// flows of its own.
pub fn worker_frames(
    case: Case,
    bulk: &BulkPrefixes,
    flows: usize,
    inner_len: usize,
    seed: u64,
    worker: u16,
) -> Vec<Vec<u8>> {
    let udp = |l2, src, dst, sport, dport| {
        by_family(
            src,
            dst,
            |s, d| build::udp4_frame(l2, s, d, sport, dport, 64, inner_len),
            |s, d| build::udp6_frame(l2, s, d, sport, dport, 64, inner_len),
        )
    };
    worker_packets(case, bulk, flows, seed, worker, &udp)
}

/// A packet from `src` to `dst`, made by `v4` or `v6` as their family is
/// (the cases never mix families).
fn by_family(
    src: IpAddr,
    dst: IpAddr,
    v4: impl FnOnce(Ipv4Addr, Ipv4Addr) -> Vec<u8>,
    v6: impl FnOnce(Ipv6Addr, Ipv6Addr) -> Vec<u8>,
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => v6(s, d),
        _ => unreachable!("a case's packets are of one family"),
    }
}

/// A pod's packet from its L2 header, addresses (of one family) and ports.
type MakePacket<'a> = &'a dyn Fn(L2, IpAddr, IpAddr, u16, u16) -> Vec<u8>;

/// `worker_frames` with the packets `packet` makes (a pod's, or the one
/// inside a tunnel for the decap cases).
fn worker_packets(
    case: Case,
    bulk: &BulkPrefixes,
    flows: usize,
    seed: u64,
    worker: u16,
    packet: MakePacket<'_>,
) -> Vec<Vec<u8>> {
    let dport = 80 + worker;
    let mut rng = Rng::new(seed);
    let router = PipelineConfig::default().router_mac;
    let a1_l2 = L2 { src: mac(1), dst: router };
    let src = Ipv4Addr::new(10, 1, 0, 2);
    let client = |i: usize| Ipv4Addr::from(0xc612_0000 + i as u32);
    let packet4 = |l2, src: Ipv4Addr, dst: Ipv4Addr, sport, dport| packet(l2, src.into(), dst.into(), sport, dport);
    // A packet from peer 1, over `tunnel` with `label`.
    let tunnelled = |tunnel, label: u32, i: usize, inner: &[u8]| {
        let outer = L2 { src: mac(0xe1), dst: mac(0xf0) };
        let sp = crate::pipeline::hash::tunnel_source_port((i as u32).wrapping_mul(2654435761));
        build::mpls_tunnel_frame(outer, tunnel, peer_ip(1), fabric_ip(), label, 64, sp, inner)
    };
    (0..flows)
        .map(|i| {
            let sport = 1024 + (i % PORTS_PER_WORKER) as u16;
            match case {
                Case::LocalForward => packet4(a1_l2, src, Ipv4Addr::new(10, 1, 0, 3), sport, dport),
                Case::ServiceMix if i % SERVICE_SHARE == 0 => {
                    let service = SERVICE_BASE + (i / SERVICE_SHARE) as u32 % SERVICES;
                    packet4(a1_l2, src, Ipv4Addr::from(service), sport, dport)
                }
                Case::EncapMplsoudp
                | Case::EncapMplsogre
                | Case::EncapMplsoudpEcmp
                | Case::ServiceMix
                | Case::FloatingPodEncap => {
                    let (p, l) = bulk.v4[(rng.next_u64() % bulk.v4.len() as u64) as usize];
                    let host = (rng.next_u64() as u32) & !(u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0));
                    if case == Case::FloatingPodEncap {
                        let a2_l2 = L2 { src: mac(2), dst: router };
                        packet4(a2_l2, Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::from(p | host), sport, dport)
                    } else {
                        packet4(a1_l2, src, Ipv4Addr::from(p | host), sport, dport)
                    }
                }
                Case::DecapMplsoudp | Case::DecapMplsogre => {
                    let dst = Ipv4Addr::new(10, 1, 0, 3);
                    let remote = Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8);
                    let inner = packet4(a1_l2, remote, dst, sport, dport);
                    let tunnel =
                        if case == Case::DecapMplsogre { build::Tunnel::Gre } else { build::Tunnel::Udp(6635) };
                    tunnelled(tunnel, LABEL_VRF, i, &inner[14..])
                }
                Case::FloatingIpIn | Case::FloatingIpShared => {
                    let inner = packet4(a1_l2, client(i), FLOATING_IP, sport, dport);
                    tunnelled(build::Tunnel::Udp(6635), LABEL_PUBLIC, i, &inner[14..])
                }
                Case::FloatingIpOut => {
                    let a2_l2 = L2 { src: mac(2), dst: router };
                    packet4(a2_l2, Ipv4Addr::new(10, 1, 0, 3), client(i), dport, sport)
                }
                Case::CrossVrfIn => {
                    let inner = packet4(a1_l2, client(i), G1_IP, sport, dport);
                    tunnelled(build::Tunnel::Udp(6635), LABEL_VRF, i, &inner[14..])
                }
                Case::CrossVrfOut => {
                    let g1_l2 = L2 { src: mac(G1 as u8), dst: router };
                    packet4(g1_l2, G1_IP, client(i), dport, sport)
                }
                Case::LocalForward6 => packet(a1_l2, A1_IP6.into(), A2_IP6.into(), sport, dport),
                Case::EncapMplsoudp6 => {
                    let (p, l) = bulk.v6[(rng.next_u64() % bulk.v6.len() as u64) as usize];
                    let host = u128::from(rng.next_u64()) & !(u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0));
                    packet(a1_l2, A1_IP6.into(), Ipv6Addr::from(p | host).into(), sport, dport)
                }
                // From the bulk prefixes, routed in the VRF: its policy
                // allows what comes from its own network.
                Case::DecapMplsoudp6 => {
                    let (p, l) = bulk.v6[(rng.next_u64() % bulk.v6.len() as u64) as usize];
                    let host = u128::from(rng.next_u64()) & !(u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0));
                    let inner = packet(a1_l2, Ipv6Addr::from(p | host).into(), A2_IP6.into(), sport, dport);
                    tunnelled(build::Tunnel::Udp(6635), LABEL_VRF, i, &inner[14..])
                }
                Case::Service6 => {
                    let service = service6(i as u32 % SERVICES);
                    packet(a1_l2, A1_IP6.into(), service.into(), sport, dport)
                }
            }
        })
        .collect()
}

/// Where the bulk routes of a case lead.
pub fn bulk_target(case: Case) -> RouteTarget {
    match case {
        Case::LocalForward
        | Case::LocalForward6
        | Case::DecapMplsoudp
        | Case::DecapMplsogre
        | Case::DecapMplsoudp6
        | Case::FloatingIpIn
        | Case::FloatingIpShared => RouteTarget { nh: NH_TO_A2, label: RouteTarget::NO_LABEL },
        Case::EncapMplsoudp
        | Case::EncapMplsoudp6
        | Case::ServiceMix
        | Case::FloatingIpOut
        | Case::FloatingPodEncap
        | Case::CrossVrfIn
        | Case::CrossVrfOut => RouteTarget { nh: NH_UDP, label: 16 },
        Case::EncapMplsogre => RouteTarget { nh: NH_GRE, label: 16 },
        Case::EncapMplsoudpEcmp => RouteTarget { nh: NH_ECMP, label: RouteTarget::NO_LABEL },
        // Its frames go to its service addresses alone (`case_routes`).
        Case::Service6 => RouteTarget { nh: NH_UDP, label: 16 },
    }
}

/// `Service6`'s `k`th service address.
fn service6(k: u32) -> Ipv6Addr {
    Ipv6Addr::from(0xfd00_0096_u128 << 96 | u128::from(k))
}

/// The routes a case has besides its bulk routes: `ServiceMix`'s service
/// addresses, each a /32 to the ECMP composite; the floating-IP cases'
/// public VRF; the cross-VRF cases' network green.
fn case_routes(case: Case) -> Vec<Op> {
    if case.floating_pod() {
        return public_vrf_ops(case == Case::FloatingIpShared);
    }
    if case.cross_vrf() {
        return green_vrf_ops();
    }
    let service = |k: u32| match case {
        Case::ServiceMix => Some((IpAddr::V4(Ipv4Addr::from(SERVICE_BASE + k)), 32)),
        Case::Service6 => Some((IpAddr::V6(service6(k)), 128)),
        _ => None,
    };
    let ecmp = RouteTarget { nh: NH_ECMP, label: RouteTarget::NO_LABEL };
    (0..SERVICES)
        .map_while(|k| {
            let (addr, len) = service(k)?;
            let prefix = Prefix::new(addr, len).expect("a host route");
            Some(Op::Add(Object::Route(RouteSpec { network: None, vrf: VRF, prefix, target: ecmp })))
        })
        .collect()
}

/// The floating-IP cases' public VRF (with `shared`, pods a1 and a2 share
/// the address behind a composite): pod a2 holds `FLOATING_IP` in it,
/// label 18 reaches it from the gateway, and its default route leads back
/// to the gateway (peer 1), as the agent lays a public network out.
fn public_vrf_ops(shared: bool) -> Vec<Op> {
    let route = |p: &str, target| {
        let prefix = p.parse().expect("literal prefix");
        Op::Add(Object::Route(RouteSpec { network: None, vrf: PUBLIC_VRF, prefix, target }))
    };
    let holding = |index| {
        let mut pod = pod_vif(index);
        pod.floating = vec![crate::tables::FloatingIp { address: FLOATING_IP, vrf: PUBLIC_VRF, ports: Vec::new() }];
        Op::Update(Object::Vif(pod))
    };
    let pod = |nh| RouteTarget { nh, label: RouteTarget::NO_LABEL };
    let mut ops = vec![
        Op::Add(Object::Vrf(VrfSpec { id: PUBLIC_VRF, name: "public".into(), gateway_v4: None, gateway_v6: None })),
        holding(A2),
        Op::Add(Object::NextHop(NH_PUBLIC_LOOKUP, NextHop::VrfLookup { vrf: PUBLIC_VRF })),
        Op::Add(Object::Label(LABEL_PUBLIC, NH_PUBLIC_LOOKUP)),
        route("0.0.0.0/0", RouteTarget { nh: NH_UDP, label: 16 }),
    ];
    if shared {
        let router = PipelineConfig::default().router_mac;
        ops.extend([
            holding(A1),
            Op::Add(Object::NextHop(NH_TO_A1, NextHop::Encap { oif: A1, smac: router, dmac: mac(1) })),
            Op::Add(Object::NextHop(
                NH_FLOATING_ECMP,
                NextHop::Composite(EcmpGroup::new(vec![pod(NH_TO_A1), pod(NH_TO_A2)])),
            )),
            route("185.22.97.188/32", pod(NH_FLOATING_ECMP)),
        ]);
    } else {
        ops.push(route("185.22.97.188/32", pod(NH_TO_A2)));
    }
    ops
}

/// The cross-VRF cases' network green: pod g1, its route in green, the
/// route VRF 1 imports from green to it, and the default route green
/// imports from VRF 1, each keeping its network, as a policy between two
/// networks leaks their routes both ways: green's policy then knows the
/// clients for VRF 1's. g1's answers are still routed back in VRF 1, by
/// their pairs.
fn green_vrf_ops() -> Vec<Op> {
    let router = PipelineConfig::default().router_mac;
    let mut g1 = Vif::new(G1, "veth-g1", VifKind::Virtual, GREEN_VRF, mac(G1 as u8));
    g1.ipv4 = Some(G1_IP);
    let to_g1 = RouteTarget { nh: NH_TO_G1, label: RouteTarget::NO_LABEL };
    let prefix = Prefix::new(IpAddr::V4(G1_IP), 32).expect("a host route");
    vec![
        Op::Add(Object::Vrf(VrfSpec { id: GREEN_VRF, name: "green".into(), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::Vif(g1)),
        Op::Add(Object::NextHop(NH_TO_G1, NextHop::Encap { oif: G1, smac: router, dmac: mac(G1 as u8) })),
        Op::Add(Object::Route(RouteSpec { network: None, vrf: GREEN_VRF, prefix, target: to_g1 })),
        Op::Add(Object::Route(RouteSpec { network: Some(GREEN_VRF), vrf: VRF, prefix, target: to_g1 })),
        Op::Add(Object::Route(RouteSpec {
            network: Some(VRF),
            vrf: GREEN_VRF,
            prefix: "0.0.0.0/0".parse().expect("literal prefix"),
            target: RouteTarget { nh: NH_UDP, label: GREEN_DEFAULT_LABEL },
        })),
    ]
}

/// The label of green's default route, which g1's answers do not take:
/// their pairs route them in VRF 1, whose routes label 16.
const GREEN_DEFAULT_LABEL: u32 = 19;

/// The seed of a bench's frames.
const FRAME_SEED: u64 = 0x5eed_f10e;

/// Frames back to back with a fixed stride, as a NIC's receive ring lays
/// them out: the bytes, each frame's length, and the stride.
fn lay_out(list: &[Vec<u8>]) -> (Vec<u8>, Vec<u16>, usize) {
    let stride = list.iter().map(Vec::len).max().unwrap_or(64).next_multiple_of(64);
    let mut bytes = vec![0u8; stride * list.len()];
    for (i, t) in list.iter().enumerate() {
        bytes[i * stride..i * stride + t.len()].copy_from_slice(t);
    }
    (bytes, list.iter().map(|t| t.len() as u16).collect(), stride)
}

/// A batch of `n` empty receive buffers on vif `in_vif`.
fn buffers(n: usize, in_vif: u32) -> Vec<Frame<Box<[u8]>>> {
    (0..n).map(|_| Frame::new(vec![0u8; BUF_LEN].into_boxed_slice(), HEADROOM, 0, in_vif).expect("fits")).collect()
}

/// A ready-to-run benchmark: tables, a pipeline and a batch of buffers.
pub struct Bench {
    /// The case.
    pub case: Case,
    handle: TablesHandle,
    /// The tables' writer, kept so that they outlive the bench and so that a
    /// measurement can change them (`apply`); siblings have none.
    writer: Option<TablesWriter>,
    pipeline: Pipeline,
    config: PipelineConfig,
    flows: Option<std::sync::Arc<crate::flow::FlowTable>>,
    params: BenchParams,
    /// The bulk prefixes, from which siblings make frames of their own.
    bulk: std::sync::Arc<BulkPrefixes>,
    /// Workers made so far from this bench, itself included.
    workers: u16,
    /// The frames to send, back to back with a fixed stride, the way a
    /// NIC's receive ring lays them out.
    templates: Vec<u8>,
    template_lens: Vec<u16>,
    stride: usize,
    batch: Vec<Frame<Box<[u8]>>>,
    spill: Spill<Box<[u8]>>,
    in_vif: u32,
    next: usize,
    /// Time taken to load the bulk routes.
    pub load_time: Duration,
}

/// The parameters of a bench.
#[derive(Debug, Clone, Copy)]
pub struct BenchParams {
    /// IPv4 prefixes in the VRF.
    pub v4_routes: usize,
    /// IPv6 prefixes in the VRF.
    pub v6_routes: usize,
    /// Distinct flows (destinations or sources).
    pub flows: usize,
    /// Frames per batch.
    pub batch: usize,
    /// Inner frame length.
    pub frame_len: usize,
    /// Take the fast path (the default); off sends every frame down the
    /// general path, as a same-run baseline.
    pub fast_path: bool,
    /// Keep a flow cache (the default, as vrouterd does); off, the flows'
    /// hits take the flow table every time, as a same-run baseline.
    pub flow_cache: bool,
    /// Give the VRF a 100-rule policy, so that every packet goes through
    /// the flow table (the warm-up creates the flows; the measurement hits them).
    pub flow_policy: bool,
    /// Give the pipeline a flow table even without a policy (`flow_policy`
    /// implies one), as vrouterd always has: a VRF then tracks the flows
    /// routed to its ECMP composites, to pin their member.
    pub flow_table: bool,
    /// With `flow_policy`: the policy without its last rule, so that it
    /// denies every flow; the warm-up makes the pairs, and the measurement
    /// drops their packets as they say (`flow_action_drop`).
    pub flow_deny: bool,
}

/// A 100-rule policy: 99 rules that miss (other networks' prefixes and
/// ports) and a last one that allows what comes from network `from` (a
/// network's own, in most cases).
pub fn policy_100(from: u32) -> crate::flow::Policy {
    use crate::flow::{Endpoint, Policy, PolicyAction, PortRange, Rule};
    let mut rules: Vec<Rule> = (0..99u32)
        .map(|i| Rule {
            src: Endpoint::Prefix(format!("172.{}.0.0/16", 16 + i % 16).parse().expect("a prefix")),
            dst: Endpoint::Prefix(format!("192.168.{i}.0/24").parse().expect("a prefix")),
            proto: Some(6),
            sport: PortRange::ANY,
            dport: PortRange { lo: 1000 + i as u16, hi: 1000 + i as u16 },
            action: PolicyAction::Deny,
        })
        .collect();
    rules.push(Rule {
        src: Endpoint::Network(from),
        dst: Endpoint::Any,
        proto: None,
        sport: PortRange::ANY,
        dport: PortRange::ANY,
        action: PolicyAction::Allow,
    });
    Policy { rules, default: PolicyAction::Deny }
}

/// The bench's policy for a VRF whose clients are of network `from`:
/// `policy_100`, without its allowing rule where `deny` (`--flow-deny`).
fn bench_policy(from: u32, deny: bool) -> crate::flow::Policy {
    let mut p100 = policy_100(from);
    if deny {
        p100.rules.pop();
    }
    p100
}

impl Default for BenchParams {
    fn default() -> Self {
        BenchParams {
            v4_routes: 1_000_000,
            v6_routes: 100_000,
            flows: 10_000,
            batch: 64,
            frame_len: 64,
            fast_path: true,
            flow_cache: true,
            flow_policy: false,
            flow_table: false,
            flow_deny: false,
        }
    }
}

impl Bench {
    /// Builds the node and the frames.
    pub fn new(case: Case, p: BenchParams) -> Bench {
        let v4 = bgp_like_v4(p.v4_routes.max(1), 0x5eed_0004);
        // The IPv6 cases' frames go to the IPv6 prefixes: at least one.
        let v6 = bgp_like_v6(if case.ipv6() { p.v6_routes.max(1) } else { p.v6_routes }, 0x5eed_0006);
        let (writer, handle, load_time) = build_node(bulk_target(case), &v4, &v6, 10_000);
        let bulk = BulkPrefixes { v4, v6 };
        let (templates, template_lens, stride) = lay_out(&frames(case, &bulk, p.flows.max(1), p.frame_len, FRAME_SEED));
        let in_vif = case.in_vif();
        let batch = buffers(p.batch.max(1), in_vif);
        let config = PipelineConfig { fast_path: p.fast_path, flow_cache: p.flow_cache, ..PipelineConfig::default() };
        let mut pipeline = Pipeline::new(config, handle.load().limits());
        let mut writer = writer;
        writer.apply(&case_routes(case)).expect("the case's routes are valid");
        let mut flows = None;
        if p.flow_policy {
            let vrfs: Vec<u32> = handle.load().vrfs().map(|v| v.id).collect();
            // Green takes what VRF 1's clients send its pod.
            let from = |v| if v == GREEN_VRF { VRF } else { v };
            let ops: Vec<Op> =
                vrfs.iter().map(|&v| Op::Add(Object::Policy(v, bench_policy(from(v), p.flow_deny)))).collect();
            writer.apply(&ops).expect("a valid policy");
        } else if case.cross_vrf() {
            let allow = |v| Op::Add(Object::Policy(v, crate::flow::Policy::allow_all()));
            writer.apply(&[allow(VRF), allow(GREEN_VRF)]).expect("a valid policy");
        }
        if p.flow_policy || p.flow_table || case.needs_flows() {
            let cfg = crate::flow::FlowConfig {
                // Room for two workers' flows (--threads 2) at half load.
                capacity: (p.flows * 4).max(1024),
                per_vif: u32::MAX,
                per_vrf: u32::MAX,
                ..crate::flow::FlowConfig::default()
            };
            let limits = *handle.load().limits();
            let table = std::sync::Arc::new(crate::flow::FlowTable::new(cfg, limits.vifs, limits.vrfs));
            pipeline = pipeline.with_flows(std::sync::Arc::clone(&table));
            flows = Some(table);
        }
        let mut bench = Bench {
            case,
            handle,
            writer: Some(writer),
            pipeline,
            config,
            flows,
            params: p,
            bulk: std::sync::Arc::new(bulk),
            workers: 1,
            templates,
            template_lens,
            stride,
            batch,
            spill: Spill::none(),
            in_vif,
            next: 0,
            load_time,
        };
        bench.let_clients_open(0);
        bench
    }

    /// Another worker on the same tables and flow table, with its own
    /// pipeline, buffers and flows (as RSS gives each queue its own), as
    /// vrouterd's workers are.
    pub fn sibling(&mut self) -> Bench {
        let mut pipeline = Pipeline::new(self.config, self.handle.load().limits());
        if let Some(f) = &self.flows {
            pipeline = pipeline.with_flows(std::sync::Arc::clone(f));
        }
        let batch = buffers(self.batch.len(), self.in_vif);
        let worker = self.workers;
        self.workers += 1;
        let p = self.params;
        let list = worker_frames(self.case, &self.bulk, p.flows.max(1), p.frame_len, FRAME_SEED, worker);
        let (templates, template_lens, stride) = lay_out(&list);
        let mut sibling = Bench {
            case: self.case,
            handle: self.handle.clone(),
            writer: None,
            pipeline,
            config: self.config,
            flows: self.flows.clone(),
            params: p,
            bulk: std::sync::Arc::clone(&self.bulk),
            workers: 1,
            templates,
            template_lens,
            stride,
            batch,
            spill: Spill::none(),
            in_vif: self.in_vif,
            next: 0,
            load_time: Duration::ZERO,
        };
        sibling.let_clients_open(worker);
        sibling
    }

    /// Refills the batch from the templates (as a NIC would write it) and
    /// processes it. Returns how many frames got the expected verdict.
    #[inline]
    pub fn run_batch(&mut self) -> usize {
        // In locals, not read from `self` a frame: the copy's call to
        // memcpy, which might write anywhere, made the loop load them again
        // and store `next` each time.
        let (templates, lens, stride, vif) = (&self.templates[..], &self.template_lens[..], self.stride, self.in_vif);
        let mut next = self.next;
        for f in self.batch.iter_mut() {
            let len = usize::from(lens[next]);
            let at = next * stride;
            next = if next + 1 == lens.len() { 0 } else { next + 1 };
            f.reset(HEADROOM, len, vif);
            f.data_mut().copy_from_slice(&templates[at..at + len]);
        }
        self.next = next;
        let tables = self.handle.load();
        self.pipeline.process(&tables, &mut self.batch, &mut self.spill);
        let denied = Verdict::Drop(crate::stats::DropReason::FlowActionDrop);
        if self.params.flow_deny {
            self.batch.iter().filter(|f| f.verdict == denied).count()
        } else {
            self.batch.iter().filter(|f| self.case.delivers(f.verdict)).count()
        }
    }

    /// For the cases of answers (`Case::opened_by`), worker `worker`'s
    /// clients' packets, once each: the pod's answers then hit the pairs
    /// they made, as they do in a service's life.
    fn let_clients_open(&mut self, worker: u16) {
        let Some(clients) = self.case.opened_by() else { return };
        let p = self.params;
        let list = worker_frames(clients, &self.bulk, p.flows.max(1), p.frame_len, FRAME_SEED, worker);
        let mut batch = buffers(self.batch.len(), FABRIC);
        let tables = self.handle.load();
        for chunk in list.chunks(batch.len()) {
            for (f, t) in batch.iter_mut().zip(chunk) {
                f.reset(HEADROOM, t.len(), FABRIC);
                f.data_mut().copy_from_slice(t);
            }
            self.pipeline.process(&tables, &mut batch[..chunk.len()], &mut self.spill);
        }
    }

    /// Frames per batch.
    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// The tables.
    pub fn tables(&self) -> std::sync::Arc<Tables> {
        self.handle.snapshot()
    }

    /// The pipeline's counters.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// One processed frame of the batch, for inspection.
    pub fn frame(&self, i: usize) -> &[u8] {
        self.batch[i].data()
    }
}

/// What a measured run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Frames processed.
    pub packets: u64,
    /// Frames that got the expected verdict.
    pub ok: u64,
    /// Time spent processing (batch refills included).
    pub elapsed: Duration,
}

impl Report {
    /// Million packets per second.
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    /// Nanoseconds per packet.
    pub fn ns_per_packet(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.packets.max(1) as f64
    }
}

impl Bench {
    /// Applies `ops` to the bench's tables, as the agent would while it
    /// forwards. Panics on a sibling, which has no writer, or on ops the
    /// tables refuse: a bench's own batches are valid.
    fn apply(&mut self, ops: &[Op]) {
        let writer = self.writer.as_mut().expect("the bench owns its writer");
        writer.apply(ops).expect("the bench's batch is valid");
    }

    /// Sends every flow through twice: flows are set up, caches warm (a
    /// worker's flow cache is filled by a flow's first hit, its second
    /// packet).
    pub fn warm_up(&mut self) {
        for _ in 0..2 * (self.params.flows / self.batch_len() + 1) {
            self.run_batch();
        }
    }

    /// Times `packets` frames (whole batches).
    pub fn timed(&mut self, packets: u64) -> Report {
        let batches = packets.div_ceil(self.batch_len() as u64).max(1);
        let started = Instant::now();
        let mut ok = 0u64;
        for _ in 0..batches {
            ok += self.run_batch() as u64;
        }
        Report { packets: batches * self.batch_len() as u64, ok, elapsed: started.elapsed() }
    }
}

/// Builds a bench, warms it, and times `packets` frames.
pub fn measure(case: Case, p: BenchParams, packets: u64) -> Report {
    let mut b = Bench::new(case, p);
    b.warm_up();
    b.timed(packets)
}

/// Runs `threads` workers at once on one set of tables (and flow table),
/// each on its own core when `pin` allows, each timing `packets` frames
/// after a shared warm-up. Side by side, their packets add up and the time
/// is the slowest's.
pub fn measure_threads(case: Case, p: BenchParams, packets: u64, threads: usize, pin: bool) -> Report {
    let mut first = Bench::new(case, p);
    let mut benches: Vec<Bench> = (1..threads.max(1)).map(|_| first.sibling()).collect();
    benches.insert(0, first);
    let start = std::sync::Arc::new(std::sync::Barrier::new(benches.len()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let handles: Vec<_> = benches
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                let start = std::sync::Arc::clone(&start);
                scope.spawn(move || {
                    if pin {
                        let _ = crate::io::pin_to_core(i % cores);
                    }
                    b.warm_up();
                    start.wait();
                    b.timed(packets)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a bench thread")).fold(
            Report { packets: 0, ok: 0, elapsed: Duration::ZERO },
            |sum, r| Report {
                packets: sum.packets + r.packets,
                ok: sum.ok + r.ok,
                elapsed: sum.elapsed.max(r.elapsed),
            },
        )
    })
}

/// What `measure_setup` measured.
#[derive(Debug, Clone, Copy)]
pub struct SetupReport {
    /// The frames that each set up a flow.
    pub setup: Report,
    /// The same frames again, each a hit on the pair its first made: the
    /// baseline of the same run.
    pub hit: Report,
    /// Pairs the setup passes made, all rounds together: one a frame if
    /// every frame was a new flow.
    pub pairs: u64,
    /// The flow table's capacity in pairs.
    pub capacity: usize,
    /// Timed rounds, each on the table emptied.
    pub rounds: u32,
}

/// Flow setup in the pipeline, as the data path does it on a flow's first
/// packet: about `flows` frames whose 5-tuples all differ go through a VRF
/// with a 100-rule policy into an empty flow table of vrouterd's default
/// size, so each is parsed, routed, judged by the policy, made a pair
/// (with its ECMP member pinned) and forwarded; then the same frames
/// again, each a hit on its pair. In rounds of at most three quarters of
/// the table, whole batches, each on the table emptied (untimed), after an
/// untimed round that touches its memory the way a running vrouterd's
/// table is touched. With `syn`, each flow's frame is a TCP SYN (a
/// connection's first packet, which takes the general path, its checksum
/// checked and its MSS clamped), not a UDP datagram.
pub fn measure_setup(case: Case, p: BenchParams, flows: u64, syn: bool) -> SetupReport {
    let cfg = crate::flow::FlowConfig { per_vif: u32::MAX, per_vrf: u32::MAX, ..crate::flow::FlowConfig::default() };
    // A one-flow bench for its node and pipeline; its frames and table are replaced.
    let mut b = Bench::new(case, BenchParams { flow_policy: true, flows: 1, ..p });
    let batch = b.batch_len();
    let rounds = flows.div_ceil((cfg.capacity * 3 / 4) as u64).max(1) as u32;
    let flows = (flows.div_ceil(u64::from(rounds)) as usize / batch).max(1) * batch;
    // Each worker's frames take other destination ports (`worker_frames`).
    let list: Vec<Vec<u8>> = (0..flows.div_ceil(PORTS_PER_WORKER))
        .flat_map(|w| {
            let n = PORTS_PER_WORKER.min(flows - w * PORTS_PER_WORKER);
            let seed = FRAME_SEED + w as u64;
            if syn {
                let syn = |l2, src, dst, sport, dport| {
                    by_family(
                        src,
                        dst,
                        |s, d| build::tcp4_syn_frame(l2, s, d, sport, dport, 1460),
                        |s, d| build::tcp6_syn_frame(l2, s, d, sport, dport, 1460),
                    )
                };
                worker_packets(case, &b.bulk, n, seed, w as u16, &syn)
            } else {
                worker_frames(case, &b.bulk, n, p.frame_len, seed, w as u16)
            }
        })
        .collect();
    (b.templates, b.template_lens, b.stride) = lay_out(&list);
    let limits = *b.handle.load().limits();
    let table = std::sync::Arc::new(crate::flow::FlowTable::new(cfg, limits.vifs, limits.vrfs));
    b.pipeline.set_flows(Some(std::sync::Arc::clone(&table)));
    b.flows = Some(std::sync::Arc::clone(&table));
    let zero = Report { packets: 0, ok: 0, elapsed: Duration::ZERO };
    let add = |a: Report, r: Report| Report {
        packets: a.packets + r.packets,
        ok: a.ok + r.ok,
        elapsed: a.elapsed + r.elapsed,
    };
    let (mut setup, mut hit, mut pairs) = (zero, zero, 0);
    for round in 0..=rounds {
        table.flush();
        b.next = 0;
        let s = b.timed(flows as u64);
        let made = table.len() as u64;
        b.next = 0;
        let h = b.timed(flows as u64);
        if round > 0 {
            (setup, hit, pairs) = (add(setup, s), add(hit, h), pairs + made);
        }
    }
    SetupReport { setup, hit, pairs, capacity: cfg.capacity, rounds }
}

/// What `measure_policy_change` measured: three passes over the same
/// flows, and how many pairs each pass decided again.
#[derive(Debug, Clone, Copy)]
pub struct PolicyChangeReport {
    /// Hits, with no policy change: the baseline of the same run.
    pub hit: Report,
    /// The first pass after another network's policy changed, one whose
    /// pods this VRF's routes do not reach.
    pub after_other: Report,
    /// Pairs that pass decided again.
    pub redecided_other: u64,
    /// The first pass after that network's policy changed again, once the
    /// VRF has a route to its pod: the VRF's generation moves, and each
    /// pair, which reaches no pod of that network, keeps its decision, on
    /// the fast path where it was on it (`PolicyGenerations::keeps`).
    pub after_reached: Report,
    /// Pairs that pass decided again.
    pub redecided_reached: u64,
    /// The first pass after the VRF's own policy changed: every pair is
    /// decided again, by its 100 rules.
    pub after_own: Report,
    /// Pairs that pass decided again.
    pub redecided_own: u64,
}

/// What a policy change costs the data path: a VRF with a 100-rule policy
/// and `p.flows` flows set up, passed over once as hits, once after
/// another network's policy changed (a network with a pod on this node,
/// which the VRF's routes do not reach: its flows keep their decisions),
/// once after that network's changed again with a route to its pod in the
/// VRF (the VRF's flows take the new generation, their decisions kept),
/// and once after the VRF's own policy changed (each flow decided again,
/// once, on its next packet).
pub fn measure_policy_change(case: Case, p: BenchParams) -> PolicyChangeReport {
    use crate::flow::Policy;
    const OTHER: u32 = 7;
    let mut b = Bench::new(case, BenchParams { flow_policy: true, ..p });
    let table = b.flows.clone().expect("a policy gives the bench a flow table");
    let pass = b.params.flows.div_ceil(b.batch_len()) * b.batch_len();
    let over_every_flow = |b: &mut Bench| {
        b.next = 0;
        let before = table.redecided();
        let r = b.timed(pass as u64);
        (r, table.redecided() - before)
    };
    over_every_flow(&mut b);
    let (hit, _) = over_every_flow(&mut b);
    let (pod, nh) = (Ipv4Addr::new(10, 7, 0, 2), 90);
    b.apply(&pod_network_ops(OTHER, 9, nh, pod));
    let (after_other, redecided_other) = over_every_flow(&mut b);
    b.apply(&[host_route(VRF, pod, nh, Some(OTHER))]);
    // A route change makes the flows look their routes up again: once, untimed.
    over_every_flow(&mut b);
    b.apply(&[Op::Update(Object::Policy(OTHER, Policy::allow_all()))]);
    let (after_reached, redecided_reached) = over_every_flow(&mut b);
    // The same rules again, a new policy all the same: under `--flow-deny`
    // without the allowing one, so that the flows stay denied.
    b.apply(&[Op::Update(Object::Policy(VRF, bench_policy(VRF, p.flow_deny)))]);
    let (after_own, redecided_own) = over_every_flow(&mut b);
    PolicyChangeReport { hit, after_other, redecided_other, after_reached, redecided_reached, after_own, redecided_own }
}

/// What `measure_route_change` measured: passes over the same flows, and
/// how many of each pass's frames the fast lane left to the general path
/// (`Pipeline::general_frames`).
#[derive(Debug, Clone, Copy)]
pub struct RouteChangeReport {
    /// Hits, with no route change: the baseline of the same run.
    pub hit: Report,
    /// Frames of that pass the general path took.
    pub general_hit: u64,
    /// The first pass after a pod's route was added to the VRF the flows
    /// route in: a route none of them takes.
    pub after_add: Report,
    /// Frames of that pass the general path took.
    pub general_after_add: u64,
    /// The first pass after that route was deleted again.
    pub after_delete: Report,
    /// Frames of that pass the general path took.
    pub general_after_delete: u64,
}

/// What a route change costs the flows it does not move, as pods come and
/// go on other nodes (each a /32 added to, then deleted from, every node's
/// VRF of its network): a VRF with a 100-rule policy and `p.flows` flows
/// set up, passed over once as hits, once after a route was added to the
/// VRF the flows route in, and once after it was deleted. A route change
/// makes the VRF's table a new version, which no flow's remembered route
/// is of: each flow's next packet takes its route again, carried over
/// where the change did not cover its destination (`Fib::route_again`).
pub fn measure_route_change(case: Case, p: BenchParams) -> RouteChangeReport {
    let mut b = Bench::new(case, BenchParams { flow_policy: true, ..p });
    let pass = b.params.flows.div_ceil(b.batch_len()) * b.batch_len();
    let over_every_flow = |b: &mut Bench| {
        b.next = 0;
        let before = b.pipeline.general_frames();
        let r = b.timed(pass as u64);
        (r, b.pipeline.general_frames() - before)
    };
    over_every_flow(&mut b);
    let (hit, general_hit) = over_every_flow(&mut b);
    // A pod of the network on another node, or another floating IP.
    let (vrf, pod) = if case.floating() {
        (PUBLIC_VRF, Ipv4Addr::new(185, 22, 97, 189))
    } else {
        (VRF, Ipv4Addr::new(10, 1, 254, 254))
    };
    let prefix = Prefix::new(IpAddr::V4(pod), 32).expect("a host prefix is canonical");
    let target = RouteTarget { nh: NH_UDP, label: 16 };
    b.apply(&[Op::Add(Object::Route(RouteSpec { network: None, vrf, prefix, target }))]);
    let (after_add, general_after_add) = over_every_flow(&mut b);
    b.apply(&[Op::Delete(ObjectKey::Route(vrf, prefix))]);
    let (after_delete, general_after_delete) = over_every_flow(&mut b);
    RouteChangeReport { hit, general_hit, after_add, general_after_add, after_delete, general_after_delete }
}

/// Network `vrf` with one pod on this node, vif `vif` at `addr`, its next
/// hop `nh` and its host route, under a policy that allows all.
fn pod_network_ops(vrf: u32, vif: u32, nh: u32, addr: Ipv4Addr) -> Vec<Op> {
    let mut pod = Vif::new(vif, "pod", VifKind::Virtual, vrf, mac(9));
    pod.ipv4 = Some(addr);
    vec![
        Op::Add(Object::Vrf(VrfSpec { id: vrf, name: format!("pods{vrf}"), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::Vif(pod)),
        Op::Add(Object::NextHop(nh, NextHop::Encap { oif: vif, smac: mac(0), dmac: mac(9) })),
        host_route(vrf, addr, nh, None),
        Op::Add(Object::Policy(vrf, crate::flow::Policy::allow_all())),
    ]
}

/// A route in `vrf` to `addr` alone, by next hop `nh`, of `network`
/// (`None`: `vrf`'s own).
fn host_route(vrf: u32, addr: Ipv4Addr, nh: u32, network: Option<u32>) -> Op {
    Op::Add(Object::Route(RouteSpec {
        network,
        vrf,
        prefix: Prefix::new(IpAddr::V4(addr), 32).expect("a host prefix is canonical"),
        target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
    }))
}

/// Table memory and load rate.
#[derive(Debug, Clone, Copy)]
pub struct TablesReport {
    /// Growth of the resident set while the tables were built. It includes
    /// the batches themselves and memory the allocator kept from copies
    /// that were freed, so it is an upper bound.
    pub rss_bytes: u64,
    /// Bytes the tables hold, counted from their structures.
    pub table_bytes: u64,
    /// Time to load the routes.
    pub load: Duration,
    /// Routes loaded.
    pub routes: u64,
    /// Lookups the reader threads completed while the routes loaded.
    pub reader_lookups: u64,
    /// Median time of a batch that changes the policy of a network with a
    /// pod on this node that no loaded route reaches: the writer looks
    /// through every VRF's route targets (each once, however many routes
    /// share it) to find which VRFs' flows the change can judge.
    pub policy_change: Duration,
    /// Mean time of a batch of routes while they loaded: the same run's
    /// baseline for `policy_change`.
    pub route_batch: Duration,
    /// Time to delete the routes again, in batches of the same size.
    pub unload: Duration,
}

impl TablesReport {
    /// Routes loaded per second.
    pub fn routes_per_second(&self) -> f64 {
        self.routes as f64 / self.load.as_secs_f64()
    }
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// What `measure_tables` loads: `vrfs` VRFs of `v4` IPv4 prefixes, `v6`
/// IPv6 ones and `hosts6` IPv6 pod addresses each, in batches of `batch`
/// routes, with `readers` threads looking routes up meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablesParams {
    pub vrfs: usize,
    pub v4: usize,
    pub v6: usize,
    pub hosts6: usize,
    pub batch: usize,
    pub readers: usize,
    /// Each route a label of its own, as remote pods' routes have (their
    /// interfaces' labels): a target each in the tables, where otherwise
    /// every route shares one.
    pub labels: bool,
    /// Each VRF with a policy that names networks, as Contrail's policies
    /// between virtual networks do: each route change then asks which
    /// network the addresses were in (the covering route's).
    pub policy_networks: bool,
}

impl Default for TablesParams {
    fn default() -> Self {
        TablesParams {
            vrfs: 1,
            v4: 1_000_000,
            v6: 0,
            hosts6: 0,
            batch: 10_000,
            readers: 0,
            labels: false,
            policy_networks: false,
        }
    }
}

/// Builds the VRFs and routes `p` says and reports memory, load rate,
/// the cost of a policy change and the deletes' rate. The prefix lists are
/// generated before measuring starts.
pub fn measure_tables(p: TablesParams) -> TablesReport {
    let TablesParams { vrfs, v4, v6, hosts6, batch, readers, labels, policy_networks } = p;
    let batch = batch.max(1);
    let p4 = bgp_like_v4(v4, 0x5eed_0004);
    let mut p6 = bgp_like_v6(v6, 0x5eed_0006);
    p6.extend(pod_hosts_v6(hosts6, 0x5eed_0128).into_iter().map(|a| (a, 128)));
    let limits = Limits { vrfs: vrfs + 2, routes_per_vrf: v4.max(p6.len()) + 1, ..Limits::default() };
    let before = resident_bytes();
    let (mut w, handle) = TablesWriter::new(limits);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers do what a worker does: load the current snapshot, look up a
    // vector of addresses in it, and go again.
    let reader_threads: Vec<_> = (0..readers)
        .map(|r| {
            let (handle, stop) = (handle.clone(), stop.clone());
            let keys: Vec<u32> = p4.iter().skip(r).step_by(97).take(32).map(|&(a, _)| a).collect();
            std::thread::spawn(move || {
                let mut lookups = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = handle.load();
                    if let Some(v) = t.vrf(1) {
                        lookups += keys.iter().filter(|&&k| v.v4.lookup(k).is_some()).count() as u64;
                    }
                    lookups += 1;
                }
                lookups
            })
        })
        .collect();
    let mut ops = vec![Op::Add(Object::NextHop(1, NextHop::Receive))];
    for id in 1..=vrfs as u32 {
        ops.push(Op::Add(Object::Vrf(VrfSpec { id, name: format!("vrf{id}"), gateway_v4: None, gateway_v6: None })));
    }
    w.apply(&ops).expect("VRFs fit");
    if policy_networks {
        w.apply(&(1..=vrfs as u32).map(|id| Op::Add(Object::Policy(id, policy_naming(id)))).collect::<Vec<_>>())
            .expect("the VRFs are there");
    }
    let first = crate::wire::mpls::FIRST_UNRESERVED_LABEL;
    let target = |i: usize| RouteTarget {
        nh: 1,
        label: if labels {
            first + i as u32 % (crate::wire::mpls::MAX_LABEL + 1 - first)
        } else {
            RouteTarget::NO_LABEL
        },
    };
    // Each VRF's prefixes, IPv4 then IPv6.
    let prefixes = || {
        let v4 = p4.iter().map(|&(a, l)| (IpAddr::V4(a.into()), l));
        v4.chain(p6.iter().map(|&(a, l)| (IpAddr::V6(a.into()), l))).map(|(a, l)| Prefix::new(a, l).expect("canonical"))
    };
    let started = Instant::now();
    let mut ops = Vec::with_capacity(batch);
    for id in 1..=vrfs as u32 {
        for (i, prefix) in prefixes().enumerate() {
            ops.push(Op::Add(Object::Route(RouteSpec { network: None, vrf: id, prefix, target: target(i) })));
            if ops.len() == batch {
                w.apply(&ops).expect("routes fit");
                ops.clear();
            }
        }
    }
    if !ops.is_empty() {
        w.apply(&ops).expect("routes fit");
    }
    let load = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reader_lookups = reader_threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    // As a daemon's writer does once its batches stop: what it kept to
    // copy into goes (`TablesWriter::reclaim`).
    w.reclaim();
    let rss = resident_bytes().saturating_sub(before);
    let table_bytes = (1..=vrfs as u32).map(|id| w.vrf_memory_bytes(id)).sum::<usize>() as u64;
    let routes = (vrfs * (v4 + p6.len())) as u64;
    let route_batch = load / routes.div_ceil(batch as u64).max(1) as u32;
    let policy_change = time_policy_changes(&mut w, vrfs as u32 + 1);
    // Made after the resident set was read, which it would swell.
    let deletes: Vec<Op> =
        (1..=vrfs as u32).flat_map(|id| prefixes().map(move |p| Op::Delete(ObjectKey::Route(id, p)))).collect();
    let started = Instant::now();
    for ops in deletes.chunks(batch) {
        w.apply(ops).expect("the routes are there");
    }
    let unload = started.elapsed();
    drop(w);
    TablesReport { rss_bytes: rss, table_bytes, load, routes, reader_lookups, policy_change, route_batch, unload }
}

/// A policy for VRF `id` that names its own network: its addresses may
/// reach TCP port 80 anywhere, and nothing else passes.
fn policy_naming(id: u32) -> crate::flow::Policy {
    use crate::flow::{Endpoint, PolicyAction, PortRange, Rule};
    let web = Rule {
        src: Endpoint::Network(id),
        dst: Endpoint::Any,
        proto: Some(crate::wire::ip_proto::TCP),
        sport: PortRange::ANY,
        dport: PortRange { lo: 80, hi: 80 },
        action: PolicyAction::Allow,
    };
    crate::flow::Policy { rules: vec![web], default: PolicyAction::Deny }
}

/// The median of nine batches that each change the policy of VRF `id`, made
/// here with a pod and its route: a network none of the other VRFs reach.
fn time_policy_changes(w: &mut TablesWriter, id: u32) -> Duration {
    use crate::flow::Policy;
    w.apply(&pod_network_ops(id, 1, 2, Ipv4Addr::new(10, 9, 0, 2))).expect("a pod fits");
    let mut times: Vec<Duration> = (0..9)
        .map(|_| {
            let started = Instant::now();
            w.apply(&[Op::Update(Object::Policy(id, Policy::allow_all()))]).expect("the policy is there");
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floating-IP cases measure what they say: the clients' packets
    /// reach a2 DNATed to its address, and a2's answers leave in a tunnel
    /// to the gateway, SNATed back to the floating IP, on the pairs the
    /// clients made (the answers make none), on both paths alike.
    #[test]
    fn the_floating_ip_cases_translate_every_frame() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 100, batch: 32, ..BenchParams::default() };
        for fast_path in [true, false] {
            let p = BenchParams { fast_path, ..p };
            let mut inbound = Bench::new(Case::FloatingIpIn, p);
            inbound.warm_up();
            assert_eq!(inbound.run_batch(), 32);
            assert_eq!(inbound.frame(0)[30..34], [10, 1, 0, 3], "DNATed to a2");
            let mut answers = Bench::new(Case::FloatingIpOut, p);
            assert_eq!(answers.run_batch(), 32);
            // Outer Ethernet, IPv4, UDP and MPLS, then the inner source.
            assert_eq!(answers.frame(0)[46 + 12..46 + 16], FLOATING_IP.octets(), "SNATed back");
            assert_eq!(answers.flows.as_ref().map(|f| f.len()), Some(100), "one pair a client");
        }
    }

    /// `floating_ip_shared` measures what it says: the clients' flows are
    /// spread over both pods behind the floating IP, each frame DNATed to
    /// the address of the pod it reaches, and a flow stays with its pod.
    #[test]
    fn the_shared_floating_ip_spreads_its_clients_over_both_pods() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 32, batch: 32, ..BenchParams::default() };
        for fast_path in [true, false] {
            let mut b = Bench::new(Case::FloatingIpShared, BenchParams { fast_path, ..p });
            let mut first = Vec::new();
            for pass in 0..3 {
                b.next = 0;
                assert_eq!(b.run_batch(), 32, "pass {pass}: each to a pod");
                let verdicts: Vec<Verdict> = b.batch.iter().map(|f| f.verdict).collect();
                for (i, v) in verdicts.iter().enumerate() {
                    let pod = if *v == Verdict::Tx(A1) { A1_IP } else { A2_IP };
                    assert_eq!(b.frame(i)[30..34], pod.octets(), "frame {i} DNATed to the pod it reaches");
                }
                if pass == 0 {
                    let to_a1 = verdicts.iter().filter(|v| **v == Verdict::Tx(A1)).count();
                    assert!((4..=28).contains(&to_a1), "spread over both pods: {to_a1} of 32 to a1");
                    first = verdicts;
                } else {
                    assert_eq!(verdicts, first, "pass {pass}: each flow stays with its pod");
                }
            }
        }
    }

    /// The cross-VRF cases measure what they say: the clients' packets
    /// reach g1 in green, and g1's answers leave by VRF 1's route (label
    /// 16), not green's (`GREEN_DEFAULT_LABEL`), on the pairs the clients
    /// made, whose reverse entries live in green; on both paths alike.
    #[test]
    fn the_cross_vrf_cases_route_the_answers_back_by_their_pairs() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 100, batch: 32, ..BenchParams::default() };
        for (fast_path, flow_policy) in [(true, false), (false, false), (true, true)] {
            let p = BenchParams { fast_path, flow_policy, ..p };
            let mut inbound = Bench::new(Case::CrossVrfIn, p);
            inbound.warm_up();
            assert_eq!(inbound.run_batch(), 32, "to g1");
            let mut answers = Bench::new(Case::CrossVrfOut, p);
            assert_eq!(answers.run_batch(), 32);
            // Outer Ethernet, IPv4 and UDP, then the MPLS label's 20 bits.
            let label = u32::from_be_bytes(answers.frame(0)[42..46].try_into().expect("4 bytes")) >> 12;
            assert_eq!(label, 16, "routed in VRF 1, not in green");
            let entries = answers.flows.as_ref().expect("a flow table").dump(None, usize::MAX, 1000);
            let back = entries.iter().filter(|e| e.key.vrf == GREEN_VRF && e.route_vrf == Some(VRF)).count();
            assert_eq!((entries.len(), back), (200, 100), "one pair a client, its reverse entry in green");
        }
    }

    /// The policy-change measurement passes over every flow four times:
    /// another network's change decides none again, reached or not (for
    /// `CrossVrfIn`, whose pairs reach green's pod, not that network's),
    /// the VRF's own every one, once, and every frame is forwarded
    /// throughout.
    #[test]
    fn a_policy_change_measurement_decides_again_only_after_the_vrfs_own_change() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 500, batch: 32, ..BenchParams::default() };
        for case in [Case::EncapMplsoudpEcmp, Case::DecapMplsoudp, Case::CrossVrfIn] {
            let r = measure_policy_change(case, p);
            let passes = [r.hit, r.after_other, r.after_reached, r.after_own];
            assert!(passes.iter().all(|p| p.ok == p.packets && p.packets >= 500));
            assert_eq!((r.redecided_other, r.redecided_reached, r.redecided_own), (0, 0, 500), "{}", case.name());
        }
    }

    /// The route-change measurement forwards every frame of every pass,
    /// and the fast lane takes every hit, after a route change too: a flow
    /// whose remembered route is of an older table version takes it again
    /// in the lane, not on the general path (an IPv6 hit's route is
    /// looked up every time: `lane::from_pod6`).
    #[test]
    fn after_a_route_change_the_fast_lane_still_takes_every_hit() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 500, batch: 32, ..BenchParams::default() };
        for case in Case::ALL {
            let r = measure_route_change(case, p);
            let passes = [r.hit, r.after_add, r.after_delete];
            assert!(passes.iter().all(|p| p.ok == p.packets && p.packets >= 500), "{}", case.name());
            let general = (r.general_hit, r.general_after_add, r.general_after_delete);
            assert_eq!(general, (0, 0, 0), "{}", case.name());
        }
    }

    /// Once its flows are set up, every case's traffic takes the fast lane
    /// alone, in every mode: none of its frames is left to the general
    /// path, and all are forwarded. A floating-IP pod's own flows in a VRF
    /// without a policy (`floating_pod_encap`, untracked and flow-table)
    /// left every one there until `dc0c260`; IPv6 pods' packets, all of
    /// them until the lane's IPv6 pass (`lane::from_pod6`).
    #[test]
    fn every_cases_settled_traffic_takes_the_fast_lane_alone_in_every_mode() {
        let base = BenchParams { v4_routes: 1000, v6_routes: 10, flows: 500, batch: 32, ..BenchParams::default() };
        let modes = [
            ("untracked", base),
            ("flow-table", BenchParams { flow_table: true, ..base }),
            ("flow-policy", BenchParams { flow_policy: true, ..base }),
        ];
        for (mode, p) in modes {
            for case in Case::ALL {
                let (general, r) = settled_run(case, p);
                assert_eq!((general, r.ok), (0, r.packets), "{} {mode}: to the general path, forwarded", case.name());
            }
        }
    }

    /// 1024 of `case`'s frames once the warm-up has set its flows up: how
    /// many took the general path, and the run's report.
    fn settled_run(case: Case, p: BenchParams) -> (u64, Report) {
        let mut b = Bench::new(case, p);
        b.warm_up();
        let before = b.pipeline.general_frames();
        let r = b.timed(1024);
        (b.pipeline.general_frames() - before, r)
    }

    /// Denied flows' packets are dropped in the fast lane once their pairs
    /// are made, from a pod or from the fabric, in every case whose packets
    /// hit their pairs' forward entries, a floating IP's clients' included;
    /// the answers (`floating_ip_out`, `cross_vrf_out`: reverse entries) and
    /// a floating-IP pod's own flows (`lane::dropped` says why) are still
    /// the general path's, dropped there alike. IPv6's are dropped in the
    /// lane's IPv6 pass (`lane::dropped6`).
    #[test]
    fn denied_flows_are_dropped_in_the_fast_lane() {
        let p = BenchParams {
            v4_routes: 1000,
            v6_routes: 10,
            flows: 500,
            batch: 32,
            flow_policy: true,
            flow_deny: true,
            ..BenchParams::default()
        };
        let general_path = [Case::FloatingIpOut, Case::FloatingPodEncap, Case::CrossVrfOut];
        for case in Case::ALL {
            let (general, r) = settled_run(case, p);
            let expected = if general_path.contains(&case) { r.packets } else { 0 };
            assert_eq!((general, r.ok), (expected, r.packets), "{}: to the general path, dropped", case.name());
        }
    }

    /// The tables measurement loads what it says, and times policy changes,
    /// route batches and the routes' deletion (all run: a policy change
    /// or a delete that fails panics).
    #[test]
    fn the_tables_measurement_loads_every_route_and_times_a_policy_change() {
        for policy_networks in [false, true] {
            let p = TablesParams {
                vrfs: 2,
                v4: 1000,
                v6: 10,
                hosts6: 250,
                batch: 100,
                policy_networks,
                ..TablesParams::default()
            };
            let r = measure_tables(p);
            assert_eq!(r.routes, 2 * 1260);
            assert!(r.table_bytes > 0 && r.policy_change > Duration::ZERO && r.route_batch > Duration::ZERO);
            assert!(r.unload > Duration::ZERO);
        }
    }

    /// The setup measurement counts what it says: each frame a flow of its
    /// own (past the 60,000 ports one worker's frames wrap at, too), each
    /// making its pair and forwarded, then each a hit; TCP SYNs too.
    #[test]
    fn every_frame_of_a_setup_run_makes_a_pair_and_is_forwarded() {
        let p = BenchParams { v4_routes: 1000, v6_routes: 10, ..BenchParams::default() };
        let runs = [(Case::LocalForward, PORTS_PER_WORKER + 1000, false), (Case::EncapMplsoudpEcmp, 5000, false)];
        let syns = [(Case::EncapMplsoudp, 5000, true), (Case::DecapMplsogre, 5000, true)];
        for (case, flows, syn) in runs.into_iter().chain(syns) {
            let r = measure_setup(case, p, flows as u64, syn);
            let whole = flows / p.batch * p.batch;
            assert_eq!((r.setup.packets, r.pairs), (whole as u64, whole as u64), "{case:?}");
            assert_eq!((r.setup.ok, r.hit.ok), (r.setup.packets, r.setup.packets), "{case:?}: forwarded");
        }
    }
}
