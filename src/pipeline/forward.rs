//! Routing an IP packet in a VRF and sending it on: to a local vif with a
//! new L2 header, or into a tunnel to another node.
//!
//! On entry the frame is `[14 bytes of Ethernet][IP packet]`, with any
//! Ethernet padding trimmed; every function here keeps that shape until it
//! writes the final headers.

use super::{account, hash, icmp, neighbor, Ctx, Frame, Origin, Pending, Step, TrapReason, Verdict, MAX_DEPTH};
use crate::flow::Probe;
use crate::memory::Buffer;
use crate::stats::DropReason;
use crate::stats::VrfCounters;
use crate::tables::{NextHop, NhId, RouteTarget, Tunnel, TunnelEncap, Vif, VifKind, Vrf};
use crate::wire::{
    checksum, ethernet, icmpv6, ip_proto, ipv4, ipv6, ipv6ext, mpls, read_u16, tcp, EtherType, MacAddr, WireError,
};

/// Ethernet header length.
pub(super) const ETH: usize = ethernet::HEADER_LEN;
const DHCP_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// The IP header fields the pipeline decides on, read once per packet and
/// kept small, since every frame of a vector carries one between stages.
#[derive(Debug, Clone, Copy)]
pub(super) struct IpInfo {
    /// Addresses; an IPv4 address sits in the low 32 bits.
    pub src: u128,
    pub dst: u128,
    /// The first four bytes of the transport header (ports, or ICMP type
    /// and code), zero when the packet does not carry them.
    pub l4: [u8; 4],
    /// Header and payload length.
    total_len: u16,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Header length: IPv4 with options; IPv6 with its extension headers,
    /// up to the transport header (or, in a later fragment, the data).
    header_len: u16,
    pub ttl: u8,
    /// Protocol: IPv6's past its extension headers.
    pub proto: u8,
    pub v6: bool,
    pub df: bool,
    /// Any fragment: the More Fragments flag or a non-zero offset (IPv4),
    /// or a fragment header (IPv6).
    pub frag: bool,
    pub more_frags: bool,
}

fn wire_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => DropReason::InvalidPacket,
    }
}

/// Reads and checks the IP header after the Ethernet header.
#[inline]
pub(super) fn parse_ip(d: &[u8], v6: bool) -> Result<IpInfo, DropReason> {
    let mut info = IpInfo::EMPTY;
    parse_ip_into(d, v6, &mut info)?;
    Ok(info)
}

/// `parse_ip`, writing into `out` in place.
#[inline(always)]
pub(super) fn parse_ip_into(d: &[u8], v6: bool, out: &mut IpInfo) -> Result<(), DropReason> {
    let b = d.get(ETH..).ok_or(DropReason::Truncated)?;
    if v6 {
        return parse_ipv6_into(b, out);
    }
    // A fixed-size view: every field read below compiles without a bounds check.
    let fixed: &[u8; ipv4::HEADER_LEN] =
        b.get(..ipv4::HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(DropReason::Truncated)?;
    let h = ipv4::Packet::new_unchecked(fixed);
    let hl = h.header_len();
    let total = usize::from(h.total_len());
    if h.version() != 4 || hl < ipv4::HEADER_LEN || total < hl {
        return Err(DropReason::InvalidPacket);
    }
    if b.len() < total {
        return Err(DropReason::Truncated);
    }
    let header_ok = if hl == ipv4::HEADER_LEN { h.verify_checksum() } else { checksum::checksum(&b[..hl]) == 0 };
    if !header_ok {
        return Err(DropReason::ChecksumError);
    }
    let frag_offset = h.frag_offset();
    *out = IpInfo {
        src: u128::from(u32::from_be_bytes(h.src_bytes())),
        dst: u128::from(u32::from_be_bytes(h.dst_bytes())),
        l4: if frag_offset == 0 { first_word(b, hl, total) } else { [0; 4] },
        total_len: total as u16,
        frag_offset,
        header_len: hl as u16,
        ttl: h.ttl(),
        proto: h.protocol(),
        v6,
        df: h.dont_frag(),
        frag: h.is_fragment(),
        more_frags: h.more_frags(),
    };
    Ok(())
}

/// `parse_ip_into` for IPv6 (`b` from the IP header on).
fn parse_ipv6_into(b: &[u8], out: &mut IpInfo) -> Result<(), DropReason> {
    let p = ipv6::Packet::new_checked(b).map_err(wire_drop)?;
    let total = p.total_len();
    // The transport header may sit behind extension headers.
    let chain = ipv6ext::Chain::walk(b, total).map_err(wire_drop)?;
    let frag_offset = chain.fragment.map_or(0, |f| f.offset);
    *out = IpInfo {
        src: u128::from_be_bytes(p.src_bytes()),
        dst: u128::from_be_bytes(p.dst_bytes()),
        l4: if frag_offset == 0 { first_word(b, chain.header_len, total) } else { [0; 4] },
        total_len: total as u16,
        frag_offset,
        header_len: chain.header_len as u16,
        ttl: p.hop_limit(),
        proto: chain.next_header,
        v6: true,
        df: true,
        frag: chain.fragment.is_some(),
        more_frags: chain.fragment.is_some_and(|f| f.more),
    };
    Ok(())
}

/// The first four bytes after the IP header, if the packet has them.
#[inline]
fn first_word(ip: &[u8], hl: usize, total: usize) -> [u8; 4] {
    match ip.get(hl..hl + 4) {
        Some(w) if total >= hl + 4 => [w[0], w[1], w[2], w[3]],
        _ => [0; 4],
    }
}

impl IpInfo {
    /// A placeholder, overwritten before use.
    pub(super) const EMPTY: IpInfo = IpInfo {
        src: 0,
        dst: 0,
        l4: [0; 4],
        total_len: 0,
        frag_offset: 0,
        header_len: 0,
        ttl: 0,
        proto: 0,
        v6: false,
        df: false,
        frag: false,
        more_frags: false,
    };

    /// Header and payload length.
    #[inline]
    pub fn total(&self) -> usize {
        usize::from(self.total_len)
    }

    /// Header length.
    #[inline]
    pub fn hl(&self) -> usize {
        usize::from(self.header_len)
    }

    /// False for `EMPTY`, where the fast path classified a frame without
    /// parsing it (only `dst` is filled in); a parsed header is at least
    /// 20 bytes long.
    #[inline]
    pub fn is_parsed(&self) -> bool {
        self.header_len != 0
    }

    /// The same packet with a new total length: for fragments.
    fn with_total(&self, total: usize) -> IpInfo {
        IpInfo { total_len: total as u16, frag: true, ..*self }
    }

    /// The flow hash. Any fragment hashes without ports, so all pieces of a
    /// packet take the same path.
    #[inline]
    pub(super) fn flow_hash(&self, d: &[u8], seed: u64) -> u32 {
        let (sp, dp) = if self.frag { (0, 0) } else { hash::flow_ports(self.proto, self.l4, || echo_ident(d, self)) };
        if self.v6 {
            hash::flow_hash_v6(seed, self.src, self.dst, self.proto, sp, dp)
        } else {
            hash::flow_hash_v4(seed, self.src as u32, self.dst as u32, self.proto, sp, dp)
        }
    }
}

/// The identifier of an ICMP or ICMPv6 echo (0 if the packet is too short).
pub(super) fn echo_ident(d: &[u8], info: &IpInfo) -> u16 {
    let at = ETH + info.hl() + 4;
    if info.total() < info.hl() + 6 {
        return 0;
    }
    d.get(at..at + 2).map_or(0, |w| u16::from_be_bytes([w[0], w[1]]))
}

/// A frame from a pod, VM, the host or the agent: answered here, or to be
/// routed in the vif's VRF.
#[inline]
pub(super) fn from_vif<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif, p: &mut Pending) -> Step {
    let d = f.data();
    if d.len() < ETH {
        return Some(Verdict::Drop(DropReason::Truncated));
    }
    let v6 = match EtherType(read_u16(d, 12)) {
        EtherType::IPV4 => false,
        EtherType::IPV6 => true,
        EtherType::ARP => return Some(neighbor::arp(ctx, f, vif)),
        _ => return Some(Verdict::Drop(DropReason::InvalidProtocol)),
    };
    if let Err(r) = parse_ip_into(d, v6, &mut p.info) {
        return Some(Verdict::Drop(r));
    }
    let info = &p.info;
    if vif.kind == VifKind::Virtual && matches!(info.proto, ip_proto::UDP | ip_proto::ICMPV6) {
        if let Some(v) = trap_or_neighbor(ctx, f, vif, info) {
            return Some(v);
        }
    }
    // What a pod sends to its own link alone no router forwards: told
    // apart from a missing route, so that a pod's MLD reports when its
    // interface comes up do not look like a routing fault in `dropstats`.
    // Before the source check, since its first come from the unspecified
    // address. (IPv6 alone, which takes this path alone: IPv4's is told
    // apart in `no_route`.)
    if vif.kind == VifKind::Virtual && link_scoped_v6(info) {
        count(ctx, vif.vrf, |c| &mut c.discards);
        return Some(Verdict::Drop(DropReason::LinkLocal));
    }
    if vif.kind == VifKind::Virtual && vif.flags.source_check && !source_ok(ctx.t, vif, info) {
        return Some(Verdict::Drop(DropReason::InvalidSource));
    }
    if vif.kind == VifKind::Virtual && info.proto == ip_proto::TCP {
        if let Err(r) = pod_checksum(f.data(), info) {
            return Some(Verdict::Drop(r));
        }
    }
    f.set_len(ETH + info.total());
    p.vrf = vif.vrf;
    p.origin = Origin::Vif(vif.index);
    None
}

/// Checks the checksum of a pod's TCP SYN or SYN-ACK, and whether a pod's
/// UDP datagram left its checksum for a NIC to finish (`d` a whole packet
/// from a pod that `parse_ip` read into `info`; fragments and anything
/// else pass unchecked). The drop is counted against the pod's vif, which
/// is how vrouterd's log names it.
///
/// A pod whose interface offloads TX checksums leaves in each TCP and UDP
/// checksum field only the pseudo-header's sum, for a NIC to finish;
/// AF_XDP hands vrouterd the frame without the mark that says so, so
/// nothing finishes it, and the receiver drops every segment and datagram
/// while ping, which the kernel checksums itself, works: its connections
/// hang, and its DNS lookups time out. That is `UnfinishedChecksum`, so
/// that `dropstats` and vrouterd's log tell the operator what to turn off.
///
/// Only what takes the general path anyway is looked at, so that the
/// check costs the fast path nothing: every connection opens with a SYN,
/// which the fast path never takes (`from_vif` checks it), and a datagram
/// that would open a flow in a VRF that tracks flows (`resolve` checks
/// it; a DNS service address is an ECMP route, which makes its VRF track).
/// A SYN is summed whole, being short, and any other mismatch is a
/// `ChecksumError`. A datagram may be long and is summed only where its
/// field holds what an offloading pod leaves there, to tell that from a
/// right checksum that happens to be equal; other mismatches are the
/// receiver's to judge.
fn pod_checksum(d: &[u8], info: &IpInfo) -> Result<(), DropReason> {
    if info.frag {
        return Ok(());
    }
    let Some(seg) = d.get(ETH + info.hl()..ETH + info.total()) else { return Ok(()) };
    let (field, whole) = match info.proto {
        ip_proto::TCP if seg.len() >= tcp::HEADER_LEN && seg[13] & tcp::FLAG_SYN != 0 => (16, true),
        // Zero: an IPv4 datagram without a checksum.
        ip_proto::UDP if seg.len() >= 8 && seg[6..8] != [0, 0] => (6, false),
        _ => return Ok(()),
    };
    let pseudo = if info.v6 {
        checksum::pseudo_v6(info.src.to_be_bytes(), info.dst.to_be_bytes(), info.proto, seg.len() as u32)
    } else {
        let (src, dst) = ((info.src as u32).to_be_bytes(), (info.dst as u32).to_be_bytes());
        checksum::pseudo_v4(src, dst, info.proto, seg.len() as u16)
    };
    // What Linux leaves for the NIC: the pseudo-header's sum, folded but
    // not complemented.
    let unfinished = u16::from_be_bytes([seg[field], seg[field + 1]]) == !checksum::finish(pseudo);
    if (!whole && !unfinished) || checksum::finish(checksum::sum(pseudo, seg)) == 0 {
        return Ok(());
    }
    Err(if unfinished { DropReason::UnfinishedChecksum } else { DropReason::ChecksumError })
}

/// The reverse path check of a pod's packet, as Contrail's vRouter makes
/// it: the source is the pod's own address (of that family; a pod with
/// none is not checked), an IPv6 link-local one, or an address its VRF
/// routes back to this pod (directly, or as a member of a composite: a
/// pod answering from a service address it holds). Without it, a pod could
/// send as another network's pod, and a policy rule that names that
/// network (a remote node judges a packet's network by its source's
/// route) would let it through.
fn source_ok(t: &crate::tables::Tables, vif: &Vif, info: &IpInfo) -> bool {
    let own = if info.v6 {
        match vif.ipv6 {
            None => return true,
            Some(a) => u128::from(a) == info.src || info.src >> 118 == 0xfe80 >> 6,
        }
    } else {
        match vif.ipv4 {
            None => return true,
            Some(a) => u128::from(u32::from(a)) == info.src,
        }
    };
    own || routes_back(t, vif, t.vrf(vif.vrf).and_then(|v| v.lookup(info.v6, info.src)))
}

/// True if `back`, the route of a packet's source in its pod's VRF, leads
/// to that pod (`vif`): directly, or as a member of a composite (a pod
/// answering from a service address it holds). `source_ok`'s test of a
/// source that is not the pod's own, which the fast lane makes too.
pub(super) fn routes_back(t: &crate::tables::Tables, vif: &Vif, back: Option<RouteTarget>) -> bool {
    let Some(back) = back else { return false };
    let to_vif = |nh: NhId| match t.nexthop(nh) {
        Some(NextHop::Encap { oif, .. }) => *oif == vif.index,
        _ => false,
    };
    match t.nexthop(back.nh) {
        Some(NextHop::Composite(group)) => group.members().iter().any(|m| to_vif(m.nh)),
        _ => to_vif(back.nh),
    }
}

/// The control packets a pod sends to its router rather than through it.
fn trap_or_neighbor<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif, info: &IpInfo) -> Option<Verdict> {
    if info.total() < info.hl() + 4 || info.frag_offset != 0 {
        return None;
    }
    let w = info.l4;
    let dport = u16::from_be_bytes([w[2], w[3]]);
    match (info.v6, info.proto) {
        (false, ip_proto::UDP) if dport == DHCP_SERVER_PORT => Some(Verdict::ToAgent(TrapReason::Dhcp)),
        (true, ip_proto::UDP) if dport == DHCPV6_SERVER_PORT => Some(Verdict::ToAgent(TrapReason::Dhcpv6)),
        (true, ip_proto::ICMPV6) => match w[0] {
            icmpv6::kind::ROUTER_SOLICIT => Some(Verdict::ToAgent(TrapReason::RouterSolicit)),
            icmpv6::kind::NEIGHBOR_SOLICIT => Some(neighbor::nd(ctx, f, vif, info)),
            _ => None,
        },
        _ => None,
    }
}

/// Parses the packet again and routes it: for packets vrouter built itself.
pub(super) fn reroute<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf_id: u32,
    origin: Origin,
    depth: u8,
) -> Verdict {
    let d = f.data();
    let v6 = d.len() > ETH && d[ETH] >> 4 == 6;
    match parse_ip(d, v6) {
        Ok(info) => route(ctx, f, vrf_id, &info, origin, depth),
        Err(r) => Verdict::Drop(r),
    }
}

/// Routes the packet in VRF `vrf_id` by its destination.
#[inline]
pub(super) fn route<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf_id: u32,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
) -> Verdict {
    if depth > MAX_DEPTH {
        return Verdict::Drop(DropReason::PacketLoop);
    }
    let t = ctx.t;
    let Some(vrf) = t.vrf(vrf_id) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let target = vrf.lookup(info.v6, info.dst);
    match target {
        Some(target) => resolve(ctx, f, vrf, target, info, origin, depth, None),
        None => no_route(ctx, f, vrf_id),
    }
}

/// No route for the destination in the packet's VRF: unless its flow says
/// to route it in another (the answer of a floating IP), a drop.
pub(super) fn unrouted<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    origin: Origin,
    probe: Option<&Probe>,
) -> Verdict {
    let in_vif = ctx.t.vif(f.vif);
    if !super::flow::tracked(vrf, in_vif) {
        return no_route(ctx, f, vrf.id);
    }
    let flow = super::flow::lookup(ctx, vrf, in_vif, info, f.data(), probe);
    if let super::flow::FlowStep::Early(datagram) = flow {
        return super::hold::hold_fragment(ctx, f, datagram, vrf.id, None, info, origin);
    }
    if let super::flow::FlowStep::Hit(key, hit) = flow {
        if hit.route_vrf.is_some() {
            if let Some(v) = follow_flow(ctx, f, vrf, &key, &hit, info, origin, 0) {
                return v;
            }
        }
    }
    no_route(ctx, f, vrf.id)
}

/// A packet of an existing flow: counted, then dropped, NATed, or (a
/// floating IP's answer, or an answer from a pod of another VRF) NATed if
/// its entry says so and routed on in the VRF its flow came from. Returns
/// the verdict when the flow settled the packet, `None` to go on with its
/// route.
#[allow(clippy::too_many_arguments)] // The packet, where it is, and its flow.
fn follow_flow<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    key: &crate::flow::FlowKey,
    hit: &crate::flow::Hit,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
) -> Option<Verdict> {
    if let Err(r) = super::flow::on_hit(ctx, vrf, key, hit, f.data(), info) {
        return Some(Verdict::Drop(r));
    }
    if hit.nat.is_none() && hit.route_vrf.is_none() {
        return None;
    }
    if !hit.nat.is_none() {
        if let Err(r) = super::nat::apply_v4(&mut f.data_mut()[ETH..], &hit.nat) {
            return Some(Verdict::Drop(r));
        }
    }
    let public = hit.route_vrf?;
    // Read again: a rewrite changed it. (Read as IPv4 whatever it was, an
    // IPv6 answer from a pod of another network was dropped as invalid.)
    Some(match parse_ip(f.data(), info.v6) {
        Ok(natted) => route(ctx, f, public, &natted, origin, depth + 1),
        Err(r) => Verdict::Drop(r),
    })
}

/// No route for the destination of the packet in `f` in VRF `vrf`:
/// counted as a discard there. IPv4 for the sender's link alone is told
/// apart here, where the lookup has already missed, rather than in
/// `from_vif` as IPv6's is: there the fast path's loop would pay for the
/// test on every packet (callgrind).
#[cold]
#[inline(never)]
pub(super) fn no_route<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &Frame<B>, vrf: u32) -> Verdict {
    count(ctx, vrf, |c| &mut c.discards);
    Verdict::Drop(if link_scoped_v4(f.data()) { DropReason::LinkLocal } else { DropReason::NoRoute })
}

/// Whether `d`, a frame, holds an IPv4 packet whose destination no router
/// forwards: the local network control block 224.0.0.0/24 (IGMP reports,
/// mDNS, VRRP, OSPF hellos; RFC 5771) or the limited broadcast.
fn link_scoped_v4(d: &[u8]) -> bool {
    let Some(&[version_ihl, ..]) = d.get(ETH..) else { return false };
    let Some(dst) = d.get(ETH + 16..ETH + 20) else { return false };
    version_ihl >> 4 == 4 && (dst[..3] == [224, 0, 0] || dst == [255; 4])
}

/// Whether an IPv6 packet's destination is on the sender's link alone,
/// which no router forwards: multicast of interface- or link-local scope
/// (ff01::/16, ff02::/16: MLD reports, neighbour discovery, mDNS).
fn link_scoped_v6(info: &IpInfo) -> bool {
    info.v6 && info.dst >> 120 == 0xff && matches!((info.dst >> 112) & 0xf, 1 | 2)
}

#[inline(always)]
fn count<B>(ctx: &mut Ctx<'_, B>, vrf: u32, field: impl FnOnce(&mut VrfCounters) -> &mut u64) {
    if let Some(c) = ctx.stats.vrf_mut(vrf) {
        *field(c) += 1;
    }
}

/// Carries out what `target`'s next hop says. An ECMP composite picks a
/// member by flow hash; members cannot be composites themselves. `probe`
/// is the packet's flow probe from stage one (depth 0 only).
#[inline]
#[allow(clippy::too_many_arguments)] // The packet, where it is, and its flow probe.
pub(super) fn resolve<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    mut target: RouteTarget,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
    probe: Option<&Probe>,
) -> Verdict {
    let t = ctx.t;
    let mut hash = None;
    // Flows are tracked in the VRF the packet entered by.
    let in_vif = t.vif(f.vif);
    let flow = if depth == 0 && super::flow::tracked_to(t, vrf, in_vif, target) {
        super::flow::lookup(ctx, vrf, in_vif, info, f.data(), probe)
    } else {
        super::flow::FlowStep::Off
    };
    match flow {
        super::flow::FlowStep::Denied => return Verdict::Drop(DropReason::FlowActionDrop),
        super::flow::FlowStep::Early(datagram) => {
            return super::hold::hold_fragment(ctx, f, datagram, vrf.id, Some(target), info, origin);
        }
        _ => {}
    }
    // A pod's datagram that would open a flow, the one of its flow that
    // the general path sees: its checksum may be left for a NIC (`pod_checksum`).
    if let (super::flow::FlowStep::Miss(_), Some(vif)) = (&flow, in_vif) {
        if vif.kind == VifKind::Virtual && info.proto == ip_proto::UDP {
            if let Err(r) = pod_checksum(f.data(), info) {
                return Verdict::Drop(r);
            }
        }
    }
    if let super::flow::FlowStep::Hit(key, hit) = &flow {
        if let Some(v) = follow_flow(ctx, f, vrf, key, hit, info, origin, depth) {
            return v;
        }
    }
    let mut member = None;
    loop {
        let Some(nh) = t.nexthop(target.nh) else {
            return Verdict::Drop(DropReason::InvalidNh);
        };
        // A new flow is decided, and made, once its egress is known.
        if let (super::flow::FlowStep::Miss(key), NextHop::Tunnel(_) | NextHop::Encap { .. }) = (&flow, nh) {
            let out = match nh {
                NextHop::Encap { oif, .. } => t.vif(*oif),
                _ => None,
            };
            match super::flow::create(ctx, vrf, key, f.vif, out, member, f.data(), info) {
                Ok(nat) if !nat.is_none() => {
                    if let Err(r) = super::nat::apply_v4(&mut f.data_mut()[ETH..], &nat) {
                        return Verdict::Drop(r);
                    }
                }
                Ok(_) => {}
                Err(r) => return Verdict::Drop(r),
            }
        }
        return match nh {
            NextHop::Composite(group) => {
                if hash.is_some() {
                    return Verdict::Drop(DropReason::InvalidNh);
                }
                count(ctx, vrf.id, |c| &mut c.ecmp_composites);
                let h = info.flow_hash(f.data(), ctx.cfg.hash_seed);
                // A flow keeps the member it was pinned to while that member lives.
                let pinned = match &flow {
                    super::flow::FlowStep::Hit(_, hit) => hit.ecmp.filter(|m| group.keeps(m, h)),
                    _ => None,
                };
                match pinned.as_ref().or_else(|| group.select(h)) {
                    Some(m) => {
                        // The flow's member went away: pin it to its new one.
                        if let (super::flow::FlowStep::Hit(key, hit), None, Some(table)) = (&flow, pinned, ctx.flows) {
                            table.set_ecmp(key, hit.slot, Some(*m));
                        }
                        target = *m;
                        member = Some(*m);
                        hash = Some(h);
                        continue;
                    }
                    None => Verdict::Drop(DropReason::InvalidNh),
                }
            }
            NextHop::Tunnel(tun) => {
                count(ctx, vrf.id, |c| match tun.encap {
                    TunnelEncap::MplsOverGre => &mut c.gre_mpls_tunnels,
                    TunnelEncap::MplsOverUdp => &mut c.udp_mpls_tunnels,
                });
                let Some(label) = target.label() else {
                    return Verdict::Drop(DropReason::InvalidLabel);
                };
                let hash = hash.unwrap_or_else(|| info.flow_hash(f.data(), ctx.cfg.hash_seed));
                forward(ctx, f, vrf, info, origin, depth, Egress::Tunnel { tun, label, hash })
            }
            NextHop::Encap { oif, smac, dmac } => {
                count(ctx, vrf.id, |c| &mut c.encaps);
                forward(ctx, f, vrf, info, origin, depth, Egress::Local { oif: *oif, smac: *smac, dmac: *dmac })
            }
            NextHop::Discard => {
                count(ctx, vrf.id, |c| &mut c.discards);
                Verdict::Drop(DropReason::Discard)
            }
            NextHop::Receive => {
                count(ctx, vrf.id, |c| &mut c.receives);
                Verdict::ToHost
            }
            NextHop::VrfLookup { vrf: next } => {
                count(ctx, vrf.id, |c| &mut c.vrf_translates);
                route(ctx, f, *next, info, origin, depth + 1)
            }
        };
    }
}

/// Where a forwarded packet leaves.
#[derive(Clone, Copy)]
pub(super) enum Egress<'t> {
    /// A local vif.
    Local { oif: u32, smac: MacAddr, dmac: MacAddr },
    /// A tunnel, with the label to push and the flow hash.
    Tunnel { tun: &'t Tunnel, label: u32, hash: u32 },
}

/// TTL, MSS clamping and MTU, then the final headers.
#[inline(always)]
fn forward<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
    egress: Egress<'_>,
) -> Verdict {
    let t = ctx.t;
    let (out, overhead) = match egress {
        Egress::Local { oif, .. } => (t.vif(oif), 0),
        Egress::Tunnel { tun, .. } => (t.vif(tun.oif), tun.encap.ip_overhead()),
    };
    let Some(out) = out.filter(|v| !v.flags.disabled) else {
        return Verdict::Drop(DropReason::IfTxDiscard);
    };
    if info.ttl <= 1 {
        return icmp::time_exceeded(ctx, f, vrf, info, origin, depth);
    }
    decrement_ttl(f, info.v6);
    let avail = usize::from(out.mtu).saturating_sub(overhead);
    if info.proto == ip_proto::TCP && info.frag_offset == 0 {
        clamp_mss(ctx, f, info, origin, out, egress, avail);
    }
    if info.total() > avail {
        if !info.v6 && !info.df {
            return fragment(ctx, f, vrf, info, avail, egress, out);
        }
        return icmp::too_big(ctx, f, vrf, info, origin, depth, avail);
    }
    emit(f, info, egress, out)
}

#[inline(always)]
pub(super) fn decrement_ttl<B: Buffer>(f: &mut Frame<B>, v6: bool) {
    let Some(ip) = f.data_mut().get_mut(ETH..ETH + ipv4::HEADER_LEN) else { return };
    let Ok(fixed) = <&mut [u8; ipv4::HEADER_LEN]>::try_from(ip) else { return };
    if v6 {
        fixed[7] -= 1;
    } else {
        ipv4::Packet::new_unchecked(fixed).decrement_ttl();
    }
}

/// Lowers the MSS of a SYN so that its segments fit through the tunnel:
/// on the way into a tunnel, and on the way from one to a pod.
#[inline(never)]
fn clamp_mss<B: Buffer>(
    ctx: &Ctx<'_, B>,
    f: &mut Frame<B>,
    info: &IpInfo,
    origin: Origin,
    out: &Vif,
    egress: Egress<'_>,
    avail: usize,
) {
    let path_mtu = match (egress, origin) {
        (Egress::Tunnel { .. }, Origin::Vif(i)) if ctx.t.vif(i).is_some_and(|v| v.flags.mss_clamp) => avail,
        (Egress::Local { .. }, Origin::Tunnel(fabric)) if out.flags.mss_clamp => match ctx.t.vif(fabric) {
            Some(fv) => usize::from(fv.mtu).saturating_sub(TunnelEncap::MplsOverUdp.ip_overhead()),
            None => return,
        },
        _ => return,
    };
    let ip_hl = if info.v6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN };
    let max = path_mtu.saturating_sub(ip_hl + tcp::HEADER_LEN).min(usize::from(u16::MAX)) as u16;
    let (start, end) = (ETH + info.hl(), ETH + info.total());
    if let Ok(mut seg) = tcp::Packet::new_checked(&mut f.data_mut()[start..end]) {
        if seg.flags() & tcp::FLAG_SYN != 0 {
            seg.clamp_mss(max);
        }
    }
}

/// Splits an IPv4 packet with DF clear into fragments that fit `avail`
/// bytes, the way the DPDK vRouter does: the inner packet is fragmented and
/// each piece is sent on alone. Pieces after the first go into spare buffers.
#[cold]
#[inline(never)]
fn fragment<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    avail: usize,
    egress: Egress<'_>,
    out: &Vif,
) -> Verdict {
    let hl = info.hl();
    let payload = info.total() - hl;
    let chunk = avail.saturating_sub(hl) / 8 * 8;
    if chunk == 0 {
        return Verdict::Drop(DropReason::FragmentError);
    }
    let pieces = payload.div_ceil(chunk);
    if ctx.spill.free.len() < pieces - 1 || ctx.spill.out.capacity() - ctx.spill.out.len() < pieces - 1 {
        return Verdict::Drop(DropReason::FragmentError);
    }
    for i in 1..pieces {
        let off = i * chunk;
        let len = chunk.min(payload - off);
        let Some(mut g) = ctx.spill.take_frame(ETH + hl + len, f.vif) else {
            return Verdict::Drop(DropReason::FragmentError);
        };
        let src = f.data();
        let dst = g.data_mut();
        dst[..ETH + hl].copy_from_slice(&src[..ETH + hl]);
        dst[ETH + hl..].copy_from_slice(&src[ETH + hl + off..ETH + hl + off + len]);
        let last = i == pieces - 1;
        set_fragment(&mut dst[ETH..], hl + len, info.frag_offset + off as u16, !last || info.more_frags);
        let piece = info.with_total(hl + len);
        let v = emit(&mut g, &piece, egress, out);
        account(ctx.stats, f.vif, v, g.len());
        g.verdict = v;
        ctx.spill.out.push(g);
        if let Some(c) = ctx.stats.vrf_mut(vrf.id) {
            c.fragments += 1;
        }
    }
    set_fragment(&mut f.data_mut()[ETH..], hl + chunk, info.frag_offset, true);
    f.set_len(ETH + hl + chunk);
    let first = info.with_total(hl + chunk);
    emit(f, &first, egress, out)
}

fn set_fragment(ip: &mut [u8], total: usize, offset: u16, more: bool) {
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_total_len(total as u16);
    p.set_frag(false, more, offset);
    p.fill_checksum();
}

/// Writes the final headers: a new Ethernet header for a local vif, or the
/// whole tunnel stack for a remote node.
#[inline(always)]
fn emit<B: Buffer>(f: &mut Frame<B>, info: &IpInfo, egress: Egress<'_>, out: &Vif) -> Verdict {
    match egress {
        Egress::Local { oif, smac, dmac } => {
            let ethertype = if info.v6 { EtherType::IPV6 } else { EtherType::IPV4 };
            let mut eth = ethernet::Packet::new_unchecked(f.data_mut());
            eth.set_dst(dmac);
            eth.set_src(smac);
            eth.set_ethertype(ethertype);
            Verdict::Tx(oif)
        }
        Egress::Tunnel { tun, label, hash } => {
            // The inner TTL was decremented already; MPLS carries it on.
            let inner_ttl = info.ttl - 1;
            let ident = if info.v6 { hash as u16 } else { read_u16(f.data(), ETH + 4) };
            match push_tunnel::<_, false>(f, tun, out.mac, label, hash, inner_ttl, ident) {
                Ok(()) => Verdict::Tx(tun.oif),
                Err(r) => Verdict::Drop(r),
            }
        }
    }
}

/// Prepends outer Ethernet, IPv4, GRE or UDP, and one MPLS label
/// (wire-formats.md): outer TTL 64, DF clear, the inner IPv4 ID copied,
/// UDP checksum 0 and a source port from the flow hash. The constant part
/// comes from the tunnel's template; only the per-packet fields are written.
/// `ROUTED`: the packet is IPv4 without options, being routed
/// (`fast::finish`), and its TTL is decremented (to `inner_ttl`) in the
/// same write, not through a second look at the frame.
#[inline]
pub(super) fn push_tunnel<B: Buffer, const ROUTED: bool>(
    f: &mut Frame<B>,
    tun: &Tunnel,
    smac: MacAddr,
    label: u32,
    hash: u32,
    inner_ttl: u8,
    ident: u16,
) -> Result<(), DropReason> {
    const GRE: usize = ETH + TunnelEncap::MplsOverGre.ip_overhead();
    const UDP: usize = ETH + TunnelEncap::MplsOverUdp.ip_overhead();
    const IP: usize = ipv4::HEADER_LEN;
    let args = (tun, smac, label, hash, inner_ttl, ident);
    match tun.encap {
        TunnelEncap::MplsOverGre if ROUTED => push_headers::<B, GRE, { GRE + IP }>(f, args),
        TunnelEncap::MplsOverGre => push_headers::<B, GRE, GRE>(f, args),
        TunnelEncap::MplsOverUdp if ROUTED => push_headers::<B, UDP, { UDP + IP }>(f, args),
        TunnelEncap::MplsOverUdp => push_headers::<B, UDP, UDP>(f, args),
    }
}

/// `push_tunnel` for one header length: `N` is a constant, so the header
/// is a fixed-size array and every write below is free of bounds checks.
/// `M` is `N`, or `N` and the inner IPv4 header, whose TTL is then
/// decremented too (`push_tunnel`'s `ROUTED`).
#[inline(always)]
fn push_headers<B: Buffer, const N: usize, const M: usize>(
    f: &mut Frame<B>,
    (tun, smac, label, hash, inner_ttl, ident): (&Tunnel, MacAddr, u32, u32, u8, u16),
) -> Result<(), DropReason> {
    if !f.push_front(N - ETH) {
        return Err(DropReason::PushFails);
    }
    let outer_len = f.len() - ETH;
    let Some(Ok(whole)) = f.data_mut().get_mut(..M).map(<&mut [u8; M]>::try_from) else {
        return Err(DropReason::PushFails);
    };
    let (hdr, inner) = whole.split_at_mut(N);
    if M > N {
        ipv4::Packet::new_unchecked(inner).decrement_ttl();
    }
    let Ok(hdr) = <&mut [u8; N]>::try_from(hdr) else {
        return Err(DropReason::PushFails);
    };
    let Some(Ok(template)) = tun.template.get(..N).map(<&[u8; N]>::try_from) else {
        return Err(DropReason::PushFails);
    };
    *hdr = *template;
    hdr[6..12].copy_from_slice(&smac.0);
    hdr[16..18].copy_from_slice(&(outer_len as u16).to_be_bytes());
    hdr[18..20].copy_from_slice(&ident.to_be_bytes());
    let sum = checksum::finish(tun.ip_sum + outer_len as u32 + u32::from(ident));
    hdr[24..26].copy_from_slice(&sum.to_be_bytes());
    if N == ETH + TunnelEncap::MplsOverUdp.ip_overhead() {
        hdr[34..36].copy_from_slice(&hash::tunnel_source_port(hash).to_be_bytes());
        hdr[38..40].copy_from_slice(&((outer_len - ipv4::HEADER_LEN) as u16).to_be_bytes());
    }
    mpls::Packet::new_unchecked(&mut hdr[N - mpls::HEADER_LEN..]).set(label, 0, true, inner_ttl);
    Ok(())
}
