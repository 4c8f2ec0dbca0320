//! The fast path: IPv4 from a pod, routed to a local pod, into a tunnel, or
//! through an ECMP composite of those. In a VRF that tracks flows it takes
//! the packets of flows that only forward (`flow::settled`): their pinned
//! ECMP member is used, the route the flow remembers spares them the route
//! lookup (`process_vector`), and the flow counts them; a new flow, a drop, a NAT
//! or a policy changed since goes to the general path. It reads the headers as one
//! fixed-size array and decides everything before it changes or counts
//! anything, so that any packet it does not fully handle (options,
//! fragments, TTL expiry, TCP SYN, DHCP, MTU, a missing vif, ...) falls back
//! to the general path untouched. The general path is the reference: a
//! differential test runs both and compares every byte and counter.

use super::express::Way;
use super::flow::{count_settled, policed_elsewhere};
use super::forward::{push_tunnel, ETH};
use super::{hash, Ctx, Frame, PipelineConfig, Verdict};
use crate::flow::{FlowKey, Forwarding, Nat};
use crate::memory::Buffer;
use crate::stats::GeneralCause;
use crate::tables::{NextHop, RouteTarget, TunnelEncap, Vif, Vrf};
use crate::wire::{icmpv4, ip_proto, ipv4, tcp};
use std::net::Ipv4Addr;

/// Ethernet, IPv4 without options, and the first 8 bytes of the transport
/// header: all the fast path reads.
pub(super) const HEAD: usize = ETH + ipv4::HEADER_LEN + 8;
const DHCP_SERVER_PORT: u16 = 67;

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

/// The source address of the IPv4 packet whose first `HEAD` bytes are `h`.
#[inline(always)]
pub(super) fn source(h: &[u8; HEAD]) -> u32 {
    u32::from_be_bytes([h[26], h[27], h[28], h[29]])
}

/// True if frames from `vif` may take the vector's fast path at all: not
/// where it is turned off, and not from a vif with floating IPs, whose
/// answers need their flow's NAT (so, for the fast path, the VRF and its
/// route say whether flows track a frame: `flow::prefetch_fast`). The
/// fast lane takes such a vif's frames, every one tracked, and rewrites
/// its flows' hits (`lane::translated`).
#[inline(always)]
pub(super) fn allowed(cfg: &PipelineConfig, vif: &Vif) -> bool {
    cfg.fast_path && vif.floating.is_empty()
}

/// Stage one: if the frame is one the fast path handles, trims its padding
/// and returns its destination address. From a pod with an IPv4 address
/// (`own`), only a packet from that address is one: any other source goes
/// to the general path's reverse path check (`forward::source_ok`).
#[inline(always)]
pub(super) fn classify<B: Buffer>(f: &mut Frame<B>, own: Option<Ipv4Addr>) -> Option<u32> {
    if f.data().get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let (dst, total) = inspect(f.data(), own)?;
    f.set_len(ETH + total);
    Some(dst)
}

/// `classify`'s checks, changing nothing, of the IPv4 packet behind the
/// Ethernet header at the start of `d` (whose type it does not read: a
/// tunnel's inner packet has none yet), `d` ending where the frame would:
/// its destination address and total length.
#[inline(always)]
pub(super) fn inspect(d: &[u8], own: Option<Ipv4Addr>) -> Option<(u32, usize)> {
    let h = head_of(d)?;
    if h[14] != 0x45 {
        return None;
    }
    if matches!(own, Some(a) if a.octets() != [h[26], h[27], h[28], h[29]]) {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let flags_offset = u16::from_be_bytes([h[20], h[21]]);
    let (ttl, proto) = (h[22], h[23]);
    // `total` at least the header and 8 bytes, and within the frame, in one
    // compare: below, the subtraction wraps past any frame's room.
    let within = total.wrapping_sub(ipv4::HEADER_LEN + 8) <= d.len() - HEAD;
    if !within || flags_offset & 0x3fff != 0 || ttl <= 1 {
        return None;
    }
    let dport = u16::from_be_bytes([h[36], h[37]]);
    match proto {
        ip_proto::UDP if dport == DHCP_SERVER_PORT => return None,
        // SYNs have their MSS clamped on the general path.
        ip_proto::TCP if d.get(ETH + ipv4::HEADER_LEN + 13).is_none_or(|fl| fl & tcp::FLAG_SYN != 0) => return None,
        _ => {}
    }
    let ip: &[u8; ipv4::HEADER_LEN] = h[ETH..ETH + ipv4::HEADER_LEN].try_into().ok()?;
    if !ipv4::checksum_ok(ip) {
        return None;
    }
    Some((u32::from_be_bytes([h[30], h[31], h[32], h[33]]), total))
}

/// `inspect`, or the first of its checks that `d` fails, for the count of
/// why frames took the general path (`general::cause`).
#[inline]
pub(super) fn inspect_or_why(d: &[u8], own: Option<Ipv4Addr>) -> Result<(u32, usize), GeneralCause> {
    // `refusal` finds a cause wherever `inspect` refuses (a unit test
    // keeps them together); the header's is the safe answer if not.
    inspect(d, own).ok_or_else(|| refusal(d, own).unwrap_or(GeneralCause::Ipv4Header))
}

/// Why `inspect` refuses `d`: its checks again, one at a time, in its
/// order. Written apart from `inspect`: made to say why (a `Result` of the
/// cause, compiled out where unused), `inspect` took 7-39 instructions a
/// packet more (callgrind), in branches LLVM no longer merged.
/// `refusal_names_a_cause_exactly_where_inspect_refuses` keeps the two
/// together. `None`: `d` passes them all.
#[cold]
#[inline(never)]
fn refusal(d: &[u8], own: Option<Ipv4Addr>) -> Option<GeneralCause> {
    let Some(h) = head_of(d).filter(|h| h[14] == 0x45) else { return Some(GeneralCause::Ipv4Header) };
    if matches!(own, Some(a) if a.octets() != [h[26], h[27], h[28], h[29]]) {
        return Some(GeneralCause::Source);
    }
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    if total < ipv4::HEADER_LEN + 8 || ETH + total > d.len() {
        return Some(GeneralCause::Ipv4Header);
    }
    if u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0 {
        return Some(GeneralCause::Fragment);
    }
    if h[22] <= 1 {
        return Some(GeneralCause::TtlExpiry);
    }
    match (h[23], d.get(ETH + ipv4::HEADER_LEN + 13)) {
        (ip_proto::UDP, _) if u16::from_be_bytes([h[36], h[37]]) == DHCP_SERVER_PORT => {
            return Some(GeneralCause::Dhcp)
        }
        (ip_proto::TCP, None) => return Some(GeneralCause::Ipv4Header),
        (ip_proto::TCP, Some(fl)) if fl & tcp::FLAG_SYN != 0 => return Some(GeneralCause::TcpSyn),
        _ => {}
    }
    let ip: &[u8; ipv4::HEADER_LEN] = h[ETH..ETH + ipv4::HEADER_LEN].try_into().ok()?;
    (!ipv4::checksum_ok(ip)).then_some(GeneralCause::Ipv4Header)
}

/// The flow key of a frame `classify` accepted (its first `HEAD` bytes),
/// in VRF `vrf`, if flows track it: TCP, UDP and ICMP echo, as
/// `flow::key_of` makes it on the general path (`classify` lets no
/// fragment through).
#[inline(always)]
pub(super) fn flow_key(h: &[u8; HEAD], vrf: u32) -> Option<FlowKey> {
    let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let port = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let (sport, dport) = match h[23] {
        ip_proto::TCP | ip_proto::UDP => (port(34), port(36)),
        ip_proto::ICMP if matches!(h[34], icmpv4::kind::ECHO_REQUEST | icmpv4::kind::ECHO_REPLY) => {
            (port(38), port(38))
        }
        _ => return None,
    };
    Some(FlowKey::v4(vrf, h[23], word(26), word(30), sport, dport))
}

/// The TCP flags of a frame `classify` accepted (0 for other protocols),
/// which a flow keeps for its TCP state.
#[inline(always)]
pub(super) fn tcp_flags(h: &[u8; HEAD], d: &[u8]) -> u8 {
    if h[23] == ip_proto::TCP {
        d.get(ETH + ipv4::HEADER_LEN + 13).copied().unwrap_or(0)
    } else {
        0
    }
}

/// The flow hash of an IPv4 header without options, the same value as the
/// general path's for the same packet. The addresses, and a TCP or UDP
/// packet's ports, are each read as one word (`flow_hash_v4` takes them
/// in these halves).
#[inline(always)]
fn flow_hash(h: &[u8; HEAD], seed: u64) -> u32 {
    let addresses = u64::from_be_bytes([h[26], h[27], h[28], h[29], h[30], h[31], h[32], h[33]]);
    let proto = h[23];
    let ports = match proto {
        ip_proto::TCP | ip_proto::UDP => u32::from_be_bytes([h[34], h[35], h[36], h[37]]),
        _ => {
            let (sp, dp) = hash::flow_ports(proto, [h[34], h[35], h[36], h[37]], || u16::from_be_bytes([h[38], h[39]]));
            (u32::from(sp) << 16) | u32::from(dp)
        }
    };
    hash::flow_hash_words(seed, addresses, proto, ports)
}

/// The flow hash of the packet whose first `HEAD` bytes are `h` once `nat`
/// has rewritten it, as the general path hashes a floating IP's answer,
/// routed on after its rewrite: the rewrite's fields (not its checksums),
/// on a copy.
#[inline]
pub(super) fn translated_hash(h: &[u8; HEAD], nat: &Nat, seed: u64) -> u32 {
    let mut t = *h;
    let _ = super::nat::rewrite_plain_fields(&mut t[ETH..], nat);
    flow_hash(&t, seed)
}

/// Stage three: carries out `target` for a frame `classify` accepted, or
/// returns `None`, having changed nothing, for the general path to take it.
/// In a VRF that tracks flows, `flow` is the packet's settled flow: an
/// ECMP route takes the member the flow is pinned to, and the flow counts
/// the packet. (Where only ECMP routes track flows, that is the only
/// route a flow's packet is finished by.) `nat` is the flow's rewrite, made
/// once everything else is decided (a floating IP's: `flow::translated`).
#[inline(always)]
pub(super) fn finish<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    target: RouteTarget,
    flow: Option<Forwarding>,
    nat: Option<&Nat>,
) -> Option<Verdict> {
    let t = ctx.t;
    let h = head(f)?;
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mut nh = t.nexthop(target.nh)?;
    let mut label = target.label;
    // A flow knows its hash; otherwise it is worked out once it is needed
    // (not for a GRE tunnel to a single next hop).
    let mut hash = flow.map(|s| s.hash);
    let mut ecmp = false;
    if let NextHop::Composite(group) = nh {
        let m = match flow {
            // A flow whose member went away is pinned again on the general path.
            Some(s) => s.ecmp.filter(|m| group.keeps(m, s.hash))?,
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
    // Where only the ECMP routes track flows, a flow's packet is finished
    // here only on its way to a composite (a flow outlives a route that
    // changed); the general path takes any other as untracked. Not from a
    // pod with floating IPs, every packet of which is tracked, in any VRF
    // (`flow::tracked`): refused here, each of its plain flows' packets
    // took the general path (asked last: the common ways never get there).
    if flow.is_some() && !ecmp && !vrf.tracks_every_flow() && t.vif(f.vif).is_none_or(|v| v.floating.is_empty()) {
        return None;
    }
    let usable = |v: &Vif, overhead: usize| !v.flags.disabled && total + overhead <= usize::from(v.mtu);
    let verdict = match nh {
        NextHop::Encap { oif, smac, dmac } => {
            let out = t.vif(*oif)?;
            if !usable(out, 0) {
                return None;
            }
            // A pod of another network whose policy must judge the flow
            // (`tracked_to`): its flow is made on the general path.
            if flow.is_none() && policed_elsewhere(t, vrf, out) {
                return None;
            }
            let count = flow.map(|s| (s.slot, tcp_flags(h, f.data())));
            if let Some(nat) = nat {
                translate(f, nat);
            }
            // The Ethernet header and the TTL, in one write.
            const HDR: usize = ETH + ipv4::HEADER_LEN;
            let Some(Ok(hdr)) = f.data_mut().get_mut(..HDR).map(<&mut [u8; HDR]>::try_from) else { return None };
            hdr[0..6].copy_from_slice(&dmac.0);
            hdr[6..12].copy_from_slice(&smac.0);
            ipv4::Packet::new_unchecked(&mut hdr[ETH..]).decrement_ttl();
            if let Some((slot, flags)) = count {
                count_settled(ctx, slot, total, flags);
            }
            Verdict::Tx(*oif)
        }
        NextHop::Tunnel(tun) => {
            let out = t.vif(tun.oif)?;
            if label == RouteTarget::NO_LABEL || !usable(out, tun.encap.ip_overhead()) {
                return None;
            }
            let hv = match tun.encap {
                TunnelEncap::MplsOverUdp => hash.unwrap_or_else(|| flow_hash(h, ctx.cfg.hash_seed)),
                TunnelEncap::MplsOverGre => 0,
            };
            let (ttl, ident) = (h[22] - 1, u16::from_be_bytes([h[18], h[19]]));
            if let Some(s) = flow {
                count_settled(ctx, s.slot, total, tcp_flags(h, f.data()));
            }
            if let Some(nat) = nat {
                translate(f, nat);
            }
            if let Err(r) = push_tunnel::<_, true>(f, tun, out.mac, label, hv, ttl, ident) {
                return Some(Verdict::Drop(r));
            }
            Verdict::Tx(tun.oif)
        }
        _ => return None,
    };
    count_way_out(ctx.stats, vrf.id, nh, ecmp);
    Some(verdict)
}

/// Counts, in VRF `vrf`'s counters, the way out the fast path sent a
/// packet (a tunnel of either kind or a local vif, `nh`, through a
/// composite if `ecmp`), as the general path counts it (`forward::resolve`).
#[inline(always)]
pub(super) fn count_way_out(stats: &mut crate::stats::Stats, vrf: u32, nh: &NextHop, ecmp: bool) {
    if let Some(c) = stats.vrf_mut(vrf) {
        if ecmp {
            c.ecmp_composites += 1;
        }
        *Way::of(nh).unwrap_or(Way::Pod).counter(c) += 1;
    }
}

/// Rewrites the packet in `f` as its flow's `nat` says, before its new
/// headers and its TTL, as the general path does (`forward::follow_flow`).
#[inline(always)]
fn translate<B: Buffer>(f: &mut Frame<B>, nat: &Nat) {
    if let Some(ip) = f.data_mut().get_mut(ETH..) {
        super::nat::apply_v4_plain(ip, nat);
    }
}

#[cfg(test)]
mod tests {
    use super::{inspect, refusal};
    use crate::pktgen::build::{self, L2};
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    /// `refusal` says why `inspect` refuses a packet, check by check, in
    /// code of its own: it must find a cause for every packet `inspect`
    /// refuses, and none for any it accepts. Random packets near the
    /// checks' edges: a valid UDP datagram, a SYN and an ACK, with a few
    /// bytes of their headers changed and their ends cut.
    #[test]
    fn refusal_names_a_cause_exactly_where_inspect_refuses() {
        let l2 = L2 { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]) };
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        let syn = build::tcp4_syn_frame(l2, a, b, 40000, 80, 1460);
        let mut ack = syn.clone();
        ack[ETH_TCP_FLAGS] = 0x10;
        let seeds =
            [build::udp4_frame(l2, a, b, 1000, 80, 64, 80), syn, ack, build::udp4_frame(l2, a, b, 68, 67, 64, 300)];
        // Header bytes whose values the checks read, and values at their edges.
        let spots = [14, 16, 17, 20, 21, 22, 23, 24, 26, 29, 36, 37, ETH_TCP_FLAGS];
        let values = [0x00, 0x01, 0x02, 0x20, 0x40, 0x43, 0x45, 0x46, 0xff];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let mut d = seeds[next(seeds.len())].clone();
            for _ in 0..next(3) {
                let at = spots[next(spots.len())];
                if let Some(byte) = d.get_mut(at) {
                    *byte = values[next(values.len())];
                }
            }
            // Mostly with the header's checksum made right again, so
            // that the checks after it are reached.
            if next(4) != 0 && d.len() >= 34 {
                d[24..26].copy_from_slice(&[0, 0]);
                let sum = crate::wire::checksum::checksum(&d[14..34]);
                d[24..26].copy_from_slice(&sum.to_be_bytes());
            }
            if next(4) == 0 {
                d.truncate(next(d.len() + 1));
            }
            let own = [None, Some(a), Some(b)][next(3)];
            let (took, why) = (inspect(&d, own), refusal(&d, own));
            assert_eq!(took.is_none(), why.is_some(), "{why:?} for {d:02x?}, own {own:?}");
            if took.is_some() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 10_000 && refused > 10_000, "{accepted} accepted, {refused} refused");
    }

    /// Where a TCP header's flags are in a frame without IP options.
    const ETH_TCP_FLAGS: usize = 14 + 20 + 13;
}
