//! Two nodes in memory, and a trace of packets between their pods: what
//! `vrpktgen trace` prints. Node 1 holds pods a1, a2 (VRF blue) and r1 (VRF
//! red, reusing a1's address); node 2 holds b1, b2, b3 (blue). A service
//! address in blue is an ECMP composite over b1, b2 and b3.

use super::build::{self, L2};
use crate::pipeline::{Frame, Pipeline, PipelineConfig, Spill, Verdict};
use crate::tables::{
    EcmpGroup, Limits, NextHop, Object, Op, RouteSpec, RouteTarget, TablesHandle, TablesWriter, Tunnel, TunnelEncap,
    Vif, VifKind, VrfSpec,
};
use crate::wire::{ethernet, ip_proto, MacAddr};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

const FABRIC: u32 = 0;
const BLUE: u32 = 1;
const RED: u32 = 2;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("literal address")
}

fn mac(node: u8, n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, node, n])
}

/// One simulated node.
pub struct Node {
    /// Its name.
    pub name: &'static str,
    writer: TablesWriter,
    handle: TablesHandle,
    pipeline: Pipeline,
}

impl Node {
    fn new(name: &'static str, ops: Vec<Op>) -> Node {
        let (mut writer, handle) =
            TablesWriter::new(Limits { vifs: 16, vrfs: 8, nexthops: 64, labels: 64, routes_per_vrf: 64 });
        writer.apply(&ops).expect("the demo's tables are valid");
        let pipeline = Pipeline::new(PipelineConfig::default(), handle.load().limits());
        Node { name, writer, handle, pipeline }
    }

    /// Runs one frame arriving on `vif`; returns the verdict and the bytes.
    pub fn run(&mut self, vif: u32, bytes: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; 256 + bytes.len().max(1600)];
        buf[256..256 + bytes.len()].copy_from_slice(bytes);
        let mut frames = [Frame::new(buf, 256, bytes.len(), vif).expect("fits")];
        let tables = self.handle.load();
        self.pipeline.process(&tables, &mut frames, &mut Spill::none());
        (frames[0].verdict, frames[0].data().to_vec())
    }

    /// The vif's name.
    pub fn vif_name(&self, i: u32) -> String {
        self.handle.load().vif(i).map_or(format!("vif{i}"), |v| format!("vif{i} ({})", v.name))
    }

    /// The node's writer, to change its tables.
    pub fn writer(&mut self) -> &mut TablesWriter {
        &mut self.writer
    }
}

fn pod(i: u32, name: &str, vrf: u32, m: MacAddr, a: Ipv4Addr) -> Op {
    let mut v = Vif::new(i, name, VifKind::Virtual, vrf, m);
    v.ipv4 = Some(a);
    Op::Add(Object::Vif(v))
}

fn node_ops(me: u8) -> Vec<Op> {
    let underlay = |n: u8| Ipv4Addr::new(192, 168, 100, n);
    let mut fabric = Vif::new(FABRIC, "eth0", VifKind::Fabric, 0, mac(me, 0xf0));
    fabric.ipv4 = Some(underlay(me));
    let router = PipelineConfig::default().router_mac;
    let route = |vrf, p: &str, nh, label| {
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf,
            prefix: p.parse().expect("literal"),
            target: RouteTarget { nh, label },
        }))
    };
    let peer = if me == 1 { 2 } else { 1 };
    let tunnel = |encap| NextHop::Tunnel(Tunnel::new(FABRIC, encap, underlay(me), underlay(peer), mac(peer, 0xf0)));
    let mut ops = vec![
        Op::Add(Object::Vrf(VrfSpec { id: 0, name: "fabric".into(), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::Vrf(VrfSpec {
            id: BLUE,
            name: "blue".into(),
            gateway_v4: Some(ip("10.1.0.1")),
            gateway_v6: None,
        })),
        Op::Add(Object::Vrf(VrfSpec {
            id: RED,
            name: "red".into(),
            gateway_v4: Some(ip("10.1.0.1")),
            gateway_v6: None,
        })),
        Op::Add(Object::Vif(fabric)),
        Op::Add(Object::NextHop(9, NextHop::Receive)),
        Op::Add(Object::NextHop(10, tunnel(TunnelEncap::MplsOverUdp))),
        Op::Add(Object::NextHop(11, tunnel(TunnelEncap::MplsOverGre))),
        route(BLUE, "10.1.0.1/32", 9, RouteTarget::NO_LABEL),
        route(RED, "10.1.0.1/32", 9, RouteTarget::NO_LABEL),
    ];
    // Pods: (vif, name, vrf, address, label). Labels are per pod, as in Contrail.
    let pods: [(u8, u32, &str, u32, &str, u32); 6] = [
        (1, 1, "a1", BLUE, "10.1.0.2", 16),
        (1, 2, "a2", BLUE, "10.1.0.3", 17),
        (1, 3, "r1", RED, "10.1.0.2", 18),
        (2, 1, "b1", BLUE, "10.1.1.2", 16),
        (2, 2, "b2", BLUE, "10.1.1.3", 17),
        (2, 3, "b3", BLUE, "10.1.1.4", 18),
    ];
    for (node, vif, name, vrf, addr, label) in pods {
        let prefix = format!("{addr}/32");
        if node == me {
            ops.push(pod(vif, &format!("veth-{name}"), vrf, mac(me, vif as u8), ip(addr)));
            ops.push(Op::Add(Object::NextHop(
                vif,
                NextHop::Encap { oif: vif, smac: router, dmac: mac(me, vif as u8) },
            )));
            ops.push(Op::Add(Object::Label(label, vif)));
            ops.push(route(vrf, &prefix, vif, RouteTarget::NO_LABEL));
        } else if vrf == BLUE {
            // Remote blue pods: b1 over MPLS over UDP, the others over GRE.
            ops.push(route(vrf, &prefix, if name == "b1" { 10 } else { 11 }, label));
        }
    }
    if me == 1 {
        let members = (16..=18).map(|label| RouteTarget { nh: 10, label }).collect();
        ops.push(Op::Add(Object::NextHop(20, NextHop::Composite(EcmpGroup::new(members)))));
        ops.push(route(BLUE, "10.96.0.10/32", 20, RouteTarget::NO_LABEL));
    }
    ops
}

/// The two nodes.
pub fn two_nodes() -> (Node, Node) {
    (Node::new("node1", node_ops(1)), Node::new("node2", node_ops(2)))
}

/// A one-line decode of a frame, for traces.
pub fn describe(f: &[u8]) -> String {
    let Ok(eth) = ethernet::Packet::new_checked(f) else { return format!("{} bytes, too short", f.len()) };
    let mut s = format!("{} > {}", eth.src(), eth.dst());
    let p = eth.payload();
    match eth.ethertype().0 {
        0x0806 if p.len() >= 28 => {
            let (spa, tpa) = (Ipv4Addr::new(p[14], p[15], p[16], p[17]), Ipv4Addr::new(p[24], p[25], p[26], p[27]));
            let sha = MacAddr([p[8], p[9], p[10], p[11], p[12], p[13]]);
            let _ = if p[7] == 1 {
                write!(s, " ARP who-has {tpa} tell {spa}")
            } else {
                write!(s, " ARP {spa} is-at {sha}")
            };
        }
        0x0800 if p.len() >= 20 => {
            describe_ip(&mut s, p);
        }
        t => {
            let _ = write!(s, " ethertype {t:#06x}");
        }
    }
    s
}

fn describe_ip(s: &mut String, p: &[u8]) {
    let hl = usize::from(p[0] & 0xf) * 4;
    let (src, dst) = (Ipv4Addr::new(p[12], p[13], p[14], p[15]), Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let _ = write!(s, " IPv4 {src} > {dst} ttl {}", p[8]);
    let l4 = p.get(hl..).unwrap_or(&[]);
    let mpls = |s: &mut String, m: &[u8]| {
        if m.len() >= 4 {
            let w = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
            let _ = write!(s, " | MPLS label {} s {} ttl {} |", w >> 12, (w >> 8) & 1, w & 0xff);
            if let Some(inner) = m.get(4..) {
                if inner.len() >= 20 {
                    describe_ip(s, inner);
                }
            }
        }
    };
    match p[9] {
        ip_proto::GRE if l4.len() >= 4 => {
            let _ = write!(s, " GRE proto {:#06x}", u16::from_be_bytes([l4[2], l4[3]]));
            mpls(s, &l4[4..]);
        }
        ip_proto::UDP if l4.len() >= 8 => {
            let (sp, dp) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
            let _ = write!(s, " UDP {sp} > {dp}");
            if dp == 6635 || dp == 51234 {
                mpls(s, &l4[8..]);
            }
        }
        ip_proto::ICMP if l4.len() >= 2 => {
            let _ = write!(s, " ICMP type {} code {}", l4[0], l4[1]);
        }
        proto => {
            let _ = write!(s, " proto {proto}");
        }
    }
}

/// Traces one frame from `vif` of `from` across the fabric to the other
/// node, if it goes there. Returns the trace lines and the final verdict.
pub fn trace(from: &mut Node, to: &mut Node, vif: u32, frame: &[u8]) -> (Vec<String>, Verdict) {
    let mut lines = vec![format!("  {} {} in:  {}", from.name, from.vif_name(vif), describe(frame))];
    let (v, out) = from.run(vif, frame);
    let verdict_line = |node: &Node, v: Verdict| match v {
        Verdict::Tx(o) => format!("{} out: ", node.vif_name(o)),
        other => format!("{other:?}"),
    };
    match v {
        Verdict::Tx(FABRIC) => {
            lines.push(format!("  {} {}{}", from.name, verdict_line(from, v), describe(&out)));
            lines.push(format!("  {} {} in:  (the frame above, over the fabric)", to.name, to.vif_name(FABRIC)));
            let (v2, out2) = to.run(FABRIC, &out);
            let tail = if matches!(v2, Verdict::Tx(_)) { describe(&out2) } else { String::new() };
            lines.push(format!("  {} {}{}", to.name, verdict_line(to, v2), tail));
            (lines, v2)
        }
        Verdict::Tx(_) => {
            lines.push(format!("  {} {}{}", from.name, verdict_line(from, v), describe(&out)));
            (lines, v)
        }
        other => {
            lines.push(format!("  {} {}", from.name, verdict_line(from, other)));
            (lines, other)
        }
    }
}

/// The frame pod `n` of node 1 (a1 = 1, r1 = 3) sends to `dst`.
pub fn from_pod(n: u8, src: &str, dst: &str, sport: u16, ttl: u8) -> Vec<u8> {
    let l2 = L2 { src: mac(1, n), dst: PipelineConfig::default().router_mac };
    build::udp4_frame(l2, ip(src), ip(dst), sport, 8080, ttl, 64)
}

/// An ARP request from pod `n` of node 1.
pub fn arp_from_pod(n: u8, src: &str, target: &str) -> Vec<u8> {
    build::arp_request(mac(1, n), ip(src), ip(target))
}
