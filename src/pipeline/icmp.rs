//! ICMP errors vrouter sends as a router: Time Exceeded, so that
//! traceroute works through it, and Fragmentation Needed / Packet Too Big,
//! so that path MTU discovery works across tunnels.
//!
//! The error is built in place over the packet it quotes, from the VRF's
//! gateway address. It goes back out of the vif the packet came in on, or,
//! for a packet that came out of a tunnel, is routed back like any other.

use super::forward::{reroute, IpInfo, ETH};
use super::{Ctx, Frame, Origin, Verdict};
use crate::memory::Buffer;
use crate::stats::DropReason;
use crate::tables::Vrf;
use crate::wire::{ethernet, icmpv4, icmpv6, ip_proto, ipv4, ipv6, EtherType, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 1812 4.3.2.3: quote as much as fits in 576 bytes.
const V4_QUOTE_MAX: usize = 576 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;
/// RFC 4443 2.4(c): the error must fit in the minimum IPv6 MTU.
const V6_QUOTE_MAX: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;

/// TTL or hop limit ran out.
#[cold]
#[inline(never)]
pub(super) fn time_exceeded<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
) -> Verdict {
    let (kind, code) = if info.v6 {
        (icmpv6::kind::TIME_EXCEEDED, 0)
    } else {
        (icmpv4::kind::TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED)
    };
    send(ctx, f, vrf, info, origin, depth, DropReason::TtlExceeded, kind, code, 0)
}

/// Too big for the path, and not to be fragmented: tell the sender the MTU.
#[cold]
#[inline(never)]
pub(super) fn too_big<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
    mtu: usize,
) -> Verdict {
    let (kind, code) = if info.v6 {
        (icmpv6::kind::PACKET_TOO_BIG, 0)
    } else {
        (icmpv4::kind::DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED)
    };
    send(ctx, f, vrf, info, origin, depth, DropReason::MtuExceeded, kind, code, mtu as u32)
}

#[allow(clippy::too_many_arguments)]
fn send<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    origin: Origin,
    depth: u8,
    reason: DropReason,
    kind: u8,
    code: u8,
    rest: u32,
) -> Verdict {
    // The offending packet is dropped whatever happens: count it now, since
    // the frame's own verdict will be the error's.
    let built = if info.v6 {
        build_v6(f, vrf, info, ctx.cfg.router_mac, kind, code, rest)
    } else {
        build_v4(f, vrf, info, ctx.cfg.router_mac, kind, code, rest)
    };
    if !built {
        return Verdict::Drop(reason);
    }
    ctx.stats.count_drop(f.vif, reason);
    if let Some(c) = ctx.stats.vrf_mut(vrf.id) {
        c.icmp_errors += 1;
    }
    match origin {
        Origin::Vif(i) => Verdict::Tx(i),
        Origin::Tunnel(_) => reroute(ctx, f, vrf.id, origin, depth + 1),
    }
}

/// An ICMP error must not answer an ICMP error, a non-initial fragment, or
/// a packet from or to an address that names no single host (RFC 1812 4.3.2.7).
fn may_answer_v4(f: &[u8], info: &IpInfo) -> bool {
    let (src, dst) = (Ipv4Addr::from(info.src as u32), Ipv4Addr::from(info.dst as u32));
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || dst.is_multicast() || dst.is_broadcast() {
        return false;
    }
    if info.frag_offset != 0 {
        return false;
    }
    if info.proto == ip_proto::ICMP {
        let t = f.get(ETH + info.hl()).copied().unwrap_or(icmpv4::kind::DEST_UNREACHABLE);
        return !icmpv4::is_error(t);
    }
    true
}

fn may_answer_v6(f: &[u8], info: &IpInfo) -> bool {
    let (src, dst) = (Ipv6Addr::from(info.src), Ipv6Addr::from(info.dst));
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() {
        return false;
    }
    if info.proto == ip_proto::ICMPV6 {
        let t = f.get(ETH + info.hl()).copied().unwrap_or(icmpv6::kind::TIME_EXCEEDED);
        return !icmpv6::is_error(t);
    }
    true
}

/// Makes room for an IP and ICMP header (`grow` bytes) in front of the
/// packet being quoted, keeps `quote` bytes of it, and addresses the new
/// Ethernet header back to the sender. False when the headroom is short.
fn reply_frame<B: Buffer>(
    f: &mut Frame<B>,
    grow: usize,
    quote: usize,
    router_mac: MacAddr,
    ethertype: EtherType,
) -> bool {
    let peer_mac = ethernet::Packet::new_unchecked(f.data()).src();
    if !f.push_front(grow) {
        return false;
    }
    f.set_len(ETH + grow + quote);
    let mut eth = ethernet::Packet::new_unchecked(&mut f.data_mut()[..ETH]);
    eth.set_dst(peer_mac);
    eth.set_src(router_mac);
    eth.set_ethertype(ethertype);
    true
}

fn build_v4<B: Buffer>(
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    router_mac: MacAddr,
    kind: u8,
    code: u8,
    rest: u32,
) -> bool {
    let Some(gw) = vrf.gateway_v4 else { return false };
    if !may_answer_v4(f.data(), info) {
        return false;
    }
    let quote = info.total().min(V4_QUOTE_MAX);
    if !reply_frame(f, ipv4::HEADER_LEN + icmpv4::HEADER_LEN, quote, router_mac, EtherType::IPV4) {
        return false;
    }
    let d = f.data_mut();
    let repr = ipv4::Repr {
        src: gw,
        dst: Ipv4Addr::from(info.src as u32),
        protocol: ip_proto::ICMP,
        payload_len: icmpv4::HEADER_LEN + quote,
        ttl: 64,
        ident: 0,
        dont_frag: false,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut d[ETH..ETH + ipv4::HEADER_LEN]));
    let icmp = icmpv4::Repr { msg_type: kind, code, rest };
    icmp.emit(&mut icmpv4::Packet::new_unchecked(&mut d[ETH + ipv4::HEADER_LEN..]));
    true
}

fn build_v6<B: Buffer>(
    f: &mut Frame<B>,
    vrf: &Vrf,
    info: &IpInfo,
    router_mac: MacAddr,
    kind: u8,
    code: u8,
    rest: u32,
) -> bool {
    let Some(gw) = vrf.gateway_v6 else { return false };
    if !may_answer_v6(f.data(), info) {
        return false;
    }
    let quote = info.total().min(V6_QUOTE_MAX);
    if !reply_frame(f, ipv6::HEADER_LEN + icmpv6::HEADER_LEN, quote, router_mac, EtherType::IPV6) {
        return false;
    }
    let d = f.data_mut();
    let dst = Ipv6Addr::from(info.src);
    let repr = ipv6::Repr {
        src: gw,
        dst,
        next_header: ip_proto::ICMPV6,
        payload_len: icmpv6::HEADER_LEN + quote,
        hop_limit: 64,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut d[ETH..ETH + ipv6::HEADER_LEN]));
    let icmp = icmpv6::Repr { msg_type: kind, code, rest };
    icmp.emit(&mut icmpv6::Packet::new_unchecked(&mut d[ETH + ipv6::HEADER_LEN..]), gw, dst);
    true
}
