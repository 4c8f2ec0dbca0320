//! Routing an IP packet in a VRF and sending it on: to a local vif with a
//! new L2 header, or into a tunnel to another node.
//!
//! On entry the frame is `[14 bytes of Ethernet][IP packet]`, with any
//! Ethernet padding trimmed; every function here keeps that shape until it
//! writes the final headers.

use super::{account, hash, icmp, neighbor, Ctx, Frame, Origin, TrapReason, Verdict, MAX_DEPTH};
use crate::stats::DropReason;
use crate::tables::{NextHop, RouteTarget, Tunnel, TunnelEncap, Vif, VifKind, Vrf};
use crate::wire::{
    checksum, ethernet, icmpv4, icmpv6, ip_proto, ipv4, ipv6, mpls, read_u16, tcp, udp, write_u16,
    EtherType, MacAddr, WireError,
};

/// Ethernet header length.
pub(super) const ETH: usize = ethernet::HEADER_LEN;
const DHCP_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// The IP header fields the pipeline decides on, read once.
#[derive(Debug, Clone, Copy)]
pub(super) struct IpInfo {
    pub v6: bool,
    /// Header length (IPv6: the fixed 40 bytes).
    pub hl: usize,
    /// Header and payload.
    pub total: usize,
    pub ttl: u8,
    /// Protocol or IPv6 next header.
    pub proto: u8,
    pub src4: u32,
    pub dst4: u32,
    pub src6: u128,
    pub dst6: u128,
    pub df: bool,
    /// Any fragment (IPv4 only; IPv6 fragments show as next header 44).
    pub frag: bool,
    /// Fragment offset in bytes and More Fragments, IPv4.
    pub frag_offset: u16,
    pub more_frags: bool,
}

fn wire_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => DropReason::InvalidPacket,
    }
}

/// Reads the IP header after the Ethernet header, checking it.
#[inline]
pub(super) fn parse_ip(d: &[u8], v6: bool) -> Result<IpInfo, DropReason> {
    let b = d.get(ETH..).ok_or(DropReason::Truncated)?;
    if v6 {
        let p = ipv6::Packet::new_checked(b).map_err(wire_drop)?;
        Ok(IpInfo {
            v6,
            hl: ipv6::HEADER_LEN,
            total: p.total_len(),
            ttl: p.hop_limit(),
            proto: p.next_header(),
            src4: 0,
            dst4: 0,
            src6: u128::from_be_bytes(p.src_bytes()),
            dst6: u128::from_be_bytes(p.dst_bytes()),
            df: true,
            frag: false,
            frag_offset: 0,
            more_frags: false,
        })
    } else {
        let p = ipv4::Packet::new_checked(b).map_err(wire_drop)?;
        if !p.verify_checksum() {
            return Err(DropReason::ChecksumError);
        }
        Ok(IpInfo {
            v6,
            hl: p.header_len(),
            total: usize::from(p.total_len()),
            ttl: p.ttl(),
            proto: p.protocol(),
            src4: u32::from_be_bytes(p.src_bytes()),
            dst4: u32::from_be_bytes(p.dst_bytes()),
            src6: 0,
            dst6: 0,
            df: p.dont_frag(),
            frag: p.is_fragment(),
            frag_offset: p.frag_offset(),
            more_frags: p.more_frags(),
        })
    }
}

impl IpInfo {
    /// The bytes of the transport header, when this packet carries it.
    #[inline]
    fn l4<'a>(&self, d: &'a [u8]) -> &'a [u8] {
        if self.frag_offset != 0 {
            return &[];
        }
        d.get(ETH + self.hl..ETH + self.total).unwrap_or(&[])
    }

    /// Source and destination port, or the echo identifier for ICMP echo.
    #[inline]
    fn ports(&self, d: &[u8]) -> (u16, u16) {
        let l4 = self.l4(d);
        if l4.len() < 4 {
            return (0, 0);
        }
        match self.proto {
            ip_proto::TCP | ip_proto::UDP => (read_u16(l4, 0), read_u16(l4, 2)),
            ip_proto::ICMP if matches!(l4[0], icmpv4::kind::ECHO_REQUEST | icmpv4::kind::ECHO_REPLY) && l4.len() >= 6 => {
                (read_u16(l4, 4), 0)
            }
            ip_proto::ICMPV6 if matches!(l4[0], icmpv6::kind::ECHO_REQUEST | icmpv6::kind::ECHO_REPLY) && l4.len() >= 6 => {
                (read_u16(l4, 4), 0)
            }
            _ => (0, 0),
        }
    }

    /// The flow hash. Any fragment hashes without ports, so all pieces of a
    /// packet take the same path.
    #[inline]
    pub(super) fn flow_hash(&self, d: &[u8], seed: u64) -> u32 {
        let (sp, dp) = if self.frag || self.more_frags { (0, 0) } else { self.ports(d) };
        if self.v6 {
            hash::flow_hash_v6(seed, self.src6, self.dst6, self.proto, sp, dp)
        } else {
            hash::flow_hash_v4(seed, self.src4, self.dst4, self.proto, sp, dp)
        }
    }
}

/// A frame from a pod, VM, the host or the agent.
#[inline]
pub(super) fn from_vif<B: AsRef<[u8]> + AsMut<[u8]>>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif) -> Verdict {
    let d = f.data();
    if d.len() < ETH {
        return Verdict::Drop(DropReason::Truncated);
    }
    let v6 = match EtherType(read_u16(d, 12)) {
        EtherType::IPV4 => false,
        EtherType::IPV6 => true,
        EtherType::ARP => return neighbor::arp(ctx, f, vif),
        _ => return Verdict::Drop(DropReason::InvalidProtocol),
    };
    let info = match parse_ip(d, v6) {
        Ok(i) => i,
        Err(r) => return Verdict::Drop(r),
    };
    if vif.kind == VifKind::Virtual {
        if let Some(v) = trap_or_neighbor(ctx, f, vif, &info) {
            return v;
        }
    }
    f.set_len(ETH + info.total);
    route(ctx, f, vif.vrf, Origin::Vif(vif.index), 0)
}

/// The control packets a pod sends to its router rather than through it.
fn trap_or_neighbor<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vif: &Vif,
    info: &IpInfo,
) -> Option<Verdict> {
    let l4 = info.l4(f.data());
    match (info.v6, info.proto) {
        (false, ip_proto::UDP) if l4.len() >= 4 && read_u16(l4, 2) == DHCP_SERVER_PORT => {
            Some(Verdict::ToAgent(TrapReason::Dhcp))
        }
        (true, ip_proto::UDP) if l4.len() >= 4 && read_u16(l4, 2) == DHCPV6_SERVER_PORT => {
            Some(Verdict::ToAgent(TrapReason::Dhcpv6))
        }
        (true, ip_proto::ICMPV6) if !l4.is_empty() => match l4[0] {
            icmpv6::kind::ROUTER_SOLICIT => Some(Verdict::ToAgent(TrapReason::RouterSolicit)),
            icmpv6::kind::NEIGHBOR_SOLICIT => Some(neighbor::nd(ctx, f, vif, info)),
            _ => None,
        },
        _ => None,
    }
}

/// Routes the packet in VRF `vrf_id` by its destination.
pub(super) fn route<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf_id: u32,
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
    let d = f.data();
    let v6 = d.len() > ETH && d[ETH] >> 4 == 6;
    let info = match parse_ip(d, v6) {
        Ok(i) => i,
        Err(r) => return Verdict::Drop(r),
    };
    let target = if v6 { vrf.v6.lookup(info.dst6) } else { vrf.v4.lookup(info.dst4) };
    let Some(target) = target else {
        if let Some(c) = ctx.stats.vrf_mut(vrf_id) {
            c.discards += 1;
        }
        return Verdict::Drop(DropReason::NoRoute);
    };
    resolve(ctx, f, vrf, target, &info, origin, depth, None)
}

/// Carries out what `target`'s next hop says.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    target: RouteTarget,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
    hash: Option<u32>,
) -> Verdict {
    let t = ctx.t;
    let Some(nh) = t.nexthop(target.nh) else {
        return Verdict::Drop(DropReason::InvalidNh);
    };
    let counters = ctx.stats.vrf_mut(vrf.id);
    match nh {
        NextHop::Discard => {
            if let Some(c) = counters {
                c.discards += 1;
            }
            Verdict::Drop(DropReason::Discard)
        }
        NextHop::Receive => {
            if let Some(c) = counters {
                c.receives += 1;
            }
            Verdict::ToHost
        }
        NextHop::Encap { oif, smac, dmac } => {
            if let Some(c) = counters {
                c.encaps += 1;
            }
            forward(ctx, f, vrf, info, origin, depth, Egress::Local { oif: *oif, smac: *smac, dmac: *dmac })
        }
        NextHop::Tunnel(tun) => {
            if let Some(c) = counters {
                match tun.encap {
                    TunnelEncap::MplsOverGre => c.gre_mpls_tunnels += 1,
                    TunnelEncap::MplsOverUdp => c.udp_mpls_tunnels += 1,
                }
            }
            let Some(label) = target.label() else {
                return Verdict::Drop(DropReason::InvalidLabel);
            };
            let hash = hash.unwrap_or_else(|| info.flow_hash(f.data(), ctx.cfg.hash_seed));
            forward(ctx, f, vrf, info, origin, depth, Egress::Tunnel { tun, label, hash })
        }
        NextHop::Composite(group) => {
            if let Some(c) = counters {
                c.ecmp_composites += 1;
            }
            if hash.is_some() {
                // A composite member that became a composite: refuse to recurse.
                return Verdict::Drop(DropReason::InvalidNh);
            }
            let h = info.flow_hash(f.data(), ctx.cfg.hash_seed);
            match group.select(h) {
                Some(m) => resolve(ctx, f, vrf, *m, info, origin, depth, Some(h)),
                None => Verdict::Drop(DropReason::InvalidNh),
            }
        }
        NextHop::VrfLookup { vrf: next } => {
            if let Some(c) = counters {
                c.vrf_translates += 1;
            }
            route(ctx, f, *next, origin, depth + 1)
        }
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
fn forward<B: AsRef<[u8]> + AsMut<[u8]>>(
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
    if info.total > avail {
        if !info.v6 && !info.df {
            return fragment(ctx, f, vrf, info, avail, egress);
        }
        return icmp::too_big(ctx, f, vrf, info, origin, depth, avail);
    }
    emit(ctx, f, info, egress, out)
}

#[inline]
fn decrement_ttl<B: AsRef<[u8]> + AsMut<[u8]>>(f: &mut Frame<B>, v6: bool) {
    let ip = &mut f.data_mut()[ETH..];
    if v6 {
        ip[7] -= 1;
    } else {
        ipv4::Packet::new_unchecked(ip).decrement_ttl();
    }
}

/// Lowers the MSS of a SYN so that its segments fit through the tunnel:
/// on the way into a tunnel, and on the way from one to a pod.
fn clamp_mss<B: AsRef<[u8]> + AsMut<[u8]>>(
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
    let (start, end) = (ETH + info.hl, ETH + info.total);
    if let Ok(mut seg) = tcp::Packet::new_checked(&mut f.data_mut()[start..end]) {
        if seg.flags() & tcp::FLAG_SYN != 0 {
            seg.clamp_mss(max);
        }
    }
}

/// Splits an IPv4 packet with DF clear into fragments that fit `avail`
/// bytes, the way the DPDK vRouter does: the inner packet is fragmented and
/// each piece is sent on alone. Pieces after the first go into spare buffers.
fn fragment<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    avail: usize,
    egress: Egress<'_>,
) -> Verdict {
    let hl = info.hl;
    let payload = info.total - hl;
    let chunk = avail.saturating_sub(hl) / 8 * 8;
    if chunk == 0 {
        return Verdict::Drop(DropReason::FragmentError);
    }
    let pieces = payload.div_ceil(chunk);
    if ctx.spill.free.len() < pieces - 1 || ctx.spill.out.capacity() - ctx.spill.out.len() < pieces - 1 {
        return Verdict::Drop(DropReason::FragmentError);
    }
    let out = match egress {
        Egress::Local { oif, .. } => ctx.t.vif(oif),
        Egress::Tunnel { tun, .. } => ctx.t.vif(tun.oif),
    };
    let Some(out) = out else { return Verdict::Drop(DropReason::IfTxDiscard) };
    for i in 1..pieces {
        let off = i * chunk;
        let len = chunk.min(payload - off);
        let Some(buf) = ctx.spill.free.pop() else { return Verdict::Drop(DropReason::FragmentError) };
        let Some(mut g) = Frame::new(buf, ctx.spill.headroom, ETH + hl + len, f.vif) else {
            return Verdict::Drop(DropReason::FragmentError);
        };
        let src = f.data();
        let dst = g.data_mut();
        dst[..ETH + hl].copy_from_slice(&src[..ETH + hl]);
        dst[ETH + hl..].copy_from_slice(&src[ETH + hl + off..ETH + hl + off + len]);
        let last = i == pieces - 1;
        set_fragment(&mut dst[ETH..], hl + len, info.frag_offset + off as u16, !last || info.more_frags);
        let piece = IpInfo { total: hl + len, frag: true, ..*info };
        let v = emit(ctx, &mut g, &piece, egress, out);
        account(ctx.stats, f.vif, v, g.len());
        g.verdict = v;
        ctx.spill.out.push(g);
        if let Some(c) = ctx.stats.vrf_mut(vrf.id) {
            c.fragments += 1;
        }
    }
    set_fragment(&mut f.data_mut()[ETH..], hl + chunk, info.frag_offset, true);
    f.set_len(ETH + hl + chunk);
    let first = IpInfo { total: hl + chunk, frag: true, ..*info };
    emit(ctx, f, &first, egress, out)
}

fn set_fragment(ip: &mut [u8], total: usize, offset: u16, more: bool) {
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_total_len(total as u16);
    p.set_frag(false, more, offset);
    p.fill_checksum();
}

/// Writes the final headers: a new Ethernet header for a local vif, or the
/// whole tunnel stack for a remote node.
#[inline]
fn emit<B: AsRef<[u8]> + AsMut<[u8]>>(
    _ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    info: &IpInfo,
    egress: Egress<'_>,
    out: &Vif,
) -> Verdict {
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
            match push_tunnel(f, tun, out.mac, label, hash, inner_ttl, ident) {
                Ok(()) => Verdict::Tx(tun.oif),
                Err(r) => Verdict::Drop(r),
            }
        }
    }
}

/// Prepends outer Ethernet, IPv4, GRE or UDP, and one MPLS label
/// (wire-formats.md): outer TTL 64, DF clear, the inner IPv4 ID copied,
/// UDP checksum 0 and a source port from the flow hash.
#[inline]
fn push_tunnel<B: AsRef<[u8]> + AsMut<[u8]>>(
    f: &mut Frame<B>,
    tun: &Tunnel,
    smac: MacAddr,
    label: u32,
    hash: u32,
    inner_ttl: u8,
    ident: u16,
) -> Result<(), DropReason> {
    let overhead = tun.encap.ip_overhead();
    if !f.push_front(overhead) {
        return Err(DropReason::PushFails);
    }
    let outer_len = f.len() - ETH;
    let d = f.data_mut();
    let mut eth = ethernet::Packet::new_unchecked(&mut d[..ETH]);
    eth.set_dst(tun.dmac);
    eth.set_src(smac);
    eth.set_ethertype(EtherType::IPV4);
    let ip = &mut d[ETH..ETH + ipv4::HEADER_LEN];
    let (proto, tunnel_hdr) = match tun.encap {
        TunnelEncap::MplsOverGre => (ip_proto::GRE, 4),
        TunnelEncap::MplsOverUdp => (ip_proto::UDP, udp::HEADER_LEN),
    };
    ip[0] = 0x45;
    ip[1] = 0;
    write_u16(ip, 2, outer_len as u16);
    write_u16(ip, 4, ident);
    write_u16(ip, 6, 0);
    ip[8] = mpls::DEFAULT_TTL;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&tun.sip.octets());
    ip[16..20].copy_from_slice(&tun.dip.octets());
    let sum = checksum::finish(tun.ip_sum + outer_len as u32 + u32::from(ident));
    write_u16(ip, 10, sum);
    let at = ETH + ipv4::HEADER_LEN;
    match tun.encap {
        TunnelEncap::MplsOverGre => {
            crate::wire::gre::Packet::new_unchecked(&mut d[at..at + 4]).set_plain(EtherType::MPLS_UNICAST);
        }
        TunnelEncap::MplsOverUdp => {
            let mut u = udp::Packet::new_unchecked(&mut d[at..at + udp::HEADER_LEN]);
            u.set_src_port(hash::tunnel_source_port(hash));
            u.set_dst_port(crate::pipeline::decap::MPLS_UDP_PORT);
            u.set_len((outer_len - ipv4::HEADER_LEN) as u16);
            u.set_checksum(0);
        }
    }
    let at = at + tunnel_hdr;
    mpls::Packet::new_unchecked(&mut d[at..at + mpls::HEADER_LEN]).set(label, 0, true, inner_ttl);
    Ok(())
}
