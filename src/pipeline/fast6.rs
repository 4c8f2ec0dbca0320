//! The fast path for IPv6 pods' packets: `fast`'s counterpart, for the
//! lane's IPv6 passes (`lane::from_pod6`, and `lane::from_fabric6` for
//! those of remote pods, out of their tunnels). A plain packet (no extension header,
//! TCP without SYN, UDP other than DHCPv6, ICMPv6 echo) routed to a local
//! pod or into a tunnel, untracked or on a flow that only forwards. It
//! decides everything before it changes or counts anything, so that any
//! packet it does not fully handle (neighbour discovery, a hop limit of 1,
//! a packet too big for its way out, a new flow, ...) falls back to the
//! general path untouched, which is the reference: the differential tests
//! (`tests/fuzz.rs`) run both and compare every byte and counter.
//!
//! Why not `fast` with a family parameter: an IPv4 hit is read from one
//! cache line of its header and its flow's slot, and the checks differ
//! (a header checksum and fragments in IPv4; extension headers and a
//! longer key in IPv6). Sharing the code made IPv4's registers IPv6's
//! width; the two share what is not per family (`push_tunnel`, the flow
//! reads, the counts).

use super::flow::{count_settled, policed_elsewhere};
use super::forward::{push_tunnel, ETH};
use super::{hash, Ctx, Frame, Verdict};
use crate::flow::{FlowKey, Forwarding};
use crate::memory::Buffer;
use crate::tables::{NextHop, RouteTarget, Vif, Vrf};
use crate::wire::{icmpv6, ip_proto, ipv6, tcp};

/// Ethernet, the IPv6 header, and the first 8 bytes of the transport
/// header: all the IPv6 fast path reads.
pub(super) const HEAD: usize = ETH + ipv6::HEADER_LEN + 8;
const DHCPV6_SERVER_PORT: u16 = 547;
/// Where the fields the fast path reads are, from the frame's start.
pub(super) mod field {
    use super::ETH;
    pub const PAYLOAD_LEN: usize = ETH + 4;
    pub const NEXT_HEADER: usize = ETH + 6;
    pub const HOP_LIMIT: usize = ETH + 7;
    pub const SRC: usize = ETH + 8;
    pub const DST: usize = ETH + 24;
    /// The transport header: ports, or an ICMPv6 type.
    pub const L4: usize = ETH + 40;
    /// TCP's flags.
    pub const TCP_FLAGS: usize = L4 + 13;
    /// An ICMPv6 echo's identifier.
    pub const ECHO_IDENT: usize = L4 + 4;
}

/// The first `HEAD` bytes of a frame.
#[inline(always)]
pub(super) fn head<B: Buffer>(f: &Frame<B>) -> Option<&[u8; HEAD]> {
    head_of(f.data())
}

/// The first `HEAD` bytes of `d`: a frame, or a tunnel's inner packet with
/// the 14 bytes before it, where its Ethernet header will be.
#[inline(always)]
pub(super) fn head_of(d: &[u8]) -> Option<&[u8; HEAD]> {
    d.get(..HEAD)?.try_into().ok()
}

/// The destination address of a frame `classify` accepted.
#[inline(always)]
pub(super) fn destination(h: &[u8; HEAD]) -> u128 {
    address(h, field::DST)
}

#[inline(always)]
fn address(h: &[u8; HEAD], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[at..at + 16]);
    u128::from_be_bytes(a)
}

#[inline(always)]
fn port(h: &[u8; HEAD], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

/// The checks of `classify`, changing nothing, of frame `d` from a pod
/// whose own address is `own` (if its source is checked): its destination
/// and the IPv6 packet's length (header and payload). A source other than
/// the pod's own (a link-local one, a service address it holds) and a
/// multicast destination are the general path's, which checks the one
/// and drops or routes the other.
#[inline(always)]
pub(super) fn inspect(d: &[u8], own: Option<u128>) -> Option<(u128, usize)> {
    if d.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    inspect_packet(d, own)
}

/// `inspect`'s checks of the IPv6 packet behind the 14 bytes at the start
/// of `d`, whose Ethernet type it does not read: a tunnel's inner packet
/// has none yet (`lane::from_fabric6`).
#[inline(always)]
pub(super) fn inspect_packet(d: &[u8], own: Option<u128>) -> Option<(u128, usize)> {
    let h = head_of(d)?;
    if h[ETH] >> 4 != 6 {
        return None;
    }
    let payload = usize::from(port(h, field::PAYLOAD_LEN));
    let total = ipv6::HEADER_LEN + payload;
    if payload < 8 || ETH + total > d.len() || h[field::HOP_LIMIT] <= 1 {
        return None;
    }
    if own.is_some_and(|a| a != address(h, field::SRC)) || h[field::DST] == 0xff {
        return None;
    }
    let plain = match h[field::NEXT_HEADER] {
        ip_proto::UDP => port(h, field::L4 + 2) != DHCPV6_SERVER_PORT,
        // SYNs have their MSS clamped on the general path.
        ip_proto::TCP => payload >= tcp::HEADER_LEN && d[field::TCP_FLAGS] & tcp::FLAG_SYN == 0,
        // Neighbour discovery, router solicitations and errors are the
        // general path's.
        ip_proto::ICMPV6 => matches!(h[field::L4], icmpv6::kind::ECHO_REQUEST | icmpv6::kind::ECHO_REPLY),
        _ => false,
    };
    plain.then(|| (address(h, field::DST), total))
}

/// If frame `f` is one the IPv6 fast path handles, trims its padding and
/// returns its destination address.
#[inline(always)]
pub(super) fn classify<B: Buffer>(f: &mut Frame<B>, own: Option<u128>) -> Option<u128> {
    let (dst, total) = inspect(f.data(), own)?;
    f.set_len(ETH + total);
    Some(dst)
}

/// The flow key of a frame `classify` accepted (its first `HEAD` bytes),
/// in VRF `vrf`, as `flow::key_of` makes it on the general path.
#[inline(always)]
pub(super) fn flow_key(h: &[u8; HEAD], vrf: u32) -> FlowKey {
    let (sport, dport) = match h[field::NEXT_HEADER] {
        ip_proto::ICMPV6 => (port(h, field::ECHO_IDENT), port(h, field::ECHO_IDENT)),
        _ => (port(h, field::L4), port(h, field::L4 + 2)),
    };
    FlowKey::v6(vrf, h[field::NEXT_HEADER], address(h, field::SRC), address(h, field::DST), sport, dport)
}

/// The flow hash of a frame `classify` accepted, the general path's for
/// the same packet (`IpInfo::flow_hash`): an echo hashes its identifier
/// as the source port alone.
#[inline(always)]
fn flow_hash(h: &[u8; HEAD], seed: u64) -> u32 {
    let (sport, dport) = match h[field::NEXT_HEADER] {
        ip_proto::ICMPV6 => (port(h, field::ECHO_IDENT), 0),
        _ => (port(h, field::L4), port(h, field::L4 + 2)),
    };
    hash::flow_hash_v6(seed, address(h, field::SRC), address(h, field::DST), h[field::NEXT_HEADER], sport, dport)
}

/// The TCP flags of a frame `classify` accepted (0 for other protocols).
#[inline(always)]
fn tcp_flags(h: &[u8; HEAD], d: &[u8]) -> u8 {
    if h[field::NEXT_HEADER] == ip_proto::TCP {
        d.get(field::TCP_FLAGS).copied().unwrap_or(0)
    } else {
        0
    }
}

/// What a frame `classify` accepted counts on its flow: the IPv6 packet's
/// length, and its TCP flags (0 for other protocols).
#[inline(always)]
pub(super) fn flow_count(h: &[u8; HEAD], d: &[u8]) -> (usize, u8) {
    (ipv6::HEADER_LEN + usize::from(port(h, field::PAYLOAD_LEN)), tcp_flags(h, d))
}

/// Carries out `target` for a frame `classify` accepted, or returns
/// `None`, having changed nothing, for the general path to take it. In a
/// VRF that tracks every flow, `flow` is the packet's settled flow: an
/// ECMP route takes the member it is pinned to, and the flow counts the
/// packet. Untracked, a composite is the general path's where flows track
/// a VRF's ECMP routes (`flow::tracked_to`): the flow pins its member.
#[inline(always)]
pub(super) fn finish<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    target: RouteTarget,
    flow: Option<Forwarding>,
) -> Option<Verdict> {
    let t = ctx.t;
    let h = head(f)?;
    let (total, flags) = flow_count(h, f.data());
    let mut nh = t.nexthop(target.nh)?;
    let mut label = target.label;
    let mut hash = flow.map(|s| s.hash);
    let mut ecmp = false;
    if let NextHop::Composite(group) = nh {
        let m = match flow {
            // A flow whose member went away is pinned again on the general path.
            Some(s) => s.ecmp.filter(|m| group.keeps(m, s.hash))?,
            None if ctx.flows.is_some() && vrf.ecmp_routes > 0 => return None,
            None => {
                let hv = flow_hash(h, ctx.cfg.hash_seed);
                hash = Some(hv);
                *group.select(hv)?
            }
        };
        nh = t.nexthop(m.nh)?;
        label = m.label;
        ecmp = true;
    }
    let usable = |v: &Vif, overhead: usize| !v.flags.disabled && total + overhead <= usize::from(v.mtu);
    let hop_limit = h[field::HOP_LIMIT];
    // Its flow counts the packet once it is sure to leave, as `on_hit` does.
    let count = |ctx: &Ctx<'_, B>| {
        if let Some(s) = flow {
            count_settled(ctx, s.slot, total, flags);
        }
    };
    let verdict = match nh {
        NextHop::Encap { oif, smac, dmac } => {
            let out = t.vif(*oif)?;
            // A pod of another network whose policy must judge the flow
            // (`tracked_to`): its flow is made on the general path.
            if !usable(out, 0) || (flow.is_none() && policed_elsewhere(t, vrf, out)) {
                return None;
            }
            let Some(Ok(hdr)) = f.data_mut().get_mut(..=field::HOP_LIMIT).map(<&mut [u8; ETH + 8]>::try_from) else {
                return None;
            };
            count(ctx);
            hdr[0..6].copy_from_slice(&dmac.0);
            hdr[6..12].copy_from_slice(&smac.0);
            hdr[field::HOP_LIMIT] = hop_limit - 1;
            Verdict::Tx(*oif)
        }
        NextHop::Tunnel(tun) => {
            let out = t.vif(tun.oif)?;
            if label == RouteTarget::NO_LABEL || !usable(out, tun.encap.ip_overhead()) {
                return None;
            }
            // The outer IPv4 header's identification comes from the hash
            // too: the inner packet has none to copy.
            let hv = hash.unwrap_or_else(|| flow_hash(h, ctx.cfg.hash_seed));
            count(ctx);
            f.data_mut()[field::HOP_LIMIT] = hop_limit - 1;
            if let Err(r) = push_tunnel::<_, false>(f, tun, out.mac, label, hv, hop_limit - 1, hv as u16) {
                return Some(Verdict::Drop(r));
            }
            Verdict::Tx(tun.oif)
        }
        _ => return None,
    };
    super::fast::count_way_out(ctx.stats, vrf.id, nh, ecmp);
    Some(verdict)
}

#[cfg(test)]
mod tests {
    use super::{flow_hash, flow_key, inspect, HEAD};
    use crate::pipeline::forward::{parse_ip, ETH};
    use crate::pktgen::build::{self, TracePacket, L2};
    use crate::wire::{ip_proto, MacAddr};
    use std::net::{IpAddr, Ipv6Addr};

    fn l2() -> L2 {
        L2 { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]) }
    }

    fn a() -> Ipv6Addr {
        "fd00:1::2".parse().unwrap()
    }

    fn b() -> Ipv6Addr {
        "fd00:2::7".parse().unwrap()
    }

    /// A packet of a flow from `a` to `b`, after its first.
    fn next(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        build::probe(l2(), (IpAddr::V6(a()), IpAddr::V6(b())), proto, sport, dport, TracePacket::Next).unwrap()
    }

    /// What `inspect` accepts, the general path parses to the same
    /// destination and length, and keys and hashes the same.
    #[test]
    fn accepted_packets_read_as_the_general_path_reads_them() {
        let mut udp = build::udp6_frame(l2(), a(), b(), 4000, 53, 64, 100);
        udp.extend_from_slice(&[0; 6]); // Ethernet padding, past the packet.
        for d in [udp, next(ip_proto::TCP, 40000, 80), next(ip_proto::ICMPV6, 0x1234, 0)] {
            let (dst, total) = inspect(&d, Some(u128::from(a()))).expect("a plain packet is taken");
            let info = parse_ip(&d, true).unwrap();
            assert_eq!((dst, total), (info.dst, info.total()));
            let h: &[u8; HEAD] = d[..HEAD].try_into().unwrap();
            assert_eq!(Ok(Some(flow_key(h, 7))), crate::pipeline::flow::key_of(None, 7, &info, &d));
            assert_eq!(flow_hash(h, 99), info.flow_hash(&d, 99));
        }
    }

    /// What the general path must see: a SYN, DHCPv6, neighbour
    /// discovery, another source, a hop limit of 1, an extension header,
    /// multicast, a length past the frame, IPv4 in an IPv6 frame.
    #[test]
    fn the_general_paths_packets_are_refused() {
        let own = Some(u128::from(a()));
        let udp = build::udp6_frame(l2(), a(), b(), 4000, 53, 64, 100);
        assert!(inspect(&udp, own).is_some());
        let changed = |mut d: Vec<u8>, at: usize, v: u8| {
            d[at] = v;
            d
        };
        let elsewhere: Ipv6Addr = "fd00:1::9".parse().unwrap();
        let refused = [
            build::tcp6_syn_frame(l2(), a(), b(), 40000, 80, 1440),
            build::udp6_frame(l2(), a(), b(), 546, 547, 64, 100),
            changed(next(ip_proto::ICMPV6, 1, 0), ETH + 40, 135),
            build::udp6_frame(l2(), elsewhere, b(), 4000, 53, 64, 100),
            build::udp6_frame(l2(), a(), b(), 4000, 53, 1, 100),
            build::udp6_frame(l2(), a(), "ff05::2".parse().unwrap(), 4000, 53, 64, 100),
            changed(udp.clone(), ETH + 6, 0), // hop-by-hop options
            changed(udp.clone(), ETH + 5, 0xff),
            changed(udp.clone(), ETH, 0x45),
            udp[..HEAD - 1].to_vec(),
        ];
        for d in &refused {
            assert_eq!(inspect(d, own), None, "{d:02x?}");
        }
        // Unchecked, another source is taken.
        assert!(inspect(&refused[3], None).is_some());
    }
}
