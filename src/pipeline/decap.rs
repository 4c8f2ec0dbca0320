//! Frames from the fabric: MPLS over GRE or UDP addressed to this node is
//! stripped, and its label says where the inner packet goes. Everything
//! else belongs to the host's own stack. A plain IPv4 inner packet goes on
//! by the fast path, as a pod's would; the rest by the general path.

use super::forward::{parse_ip_into, ETH};
use super::{fast, Ctx, Frame, Origin, Pending, Step, Verdict};
use crate::memory::Buffer;
use crate::stats::DropReason;
use crate::tables::nexthop::{MPLS_UDP_LEGACY_PORT, MPLS_UDP_PORT};
use crate::tables::{NextHop, RouteTarget, Vif};
use crate::wire::{gre, ip_proto, ipv4, mpls, read_u16, udp, write_u16, EtherType, WireError};

/// A frame from the fabric vif `vif`. Like `receive`, it sets `fast` for a
/// frame the fast path takes.
#[inline]
pub(super) fn from_fabric<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vif: &Vif,
    p: &mut Pending,
    fast: &mut bool,
) -> Step {
    decap(ctx, f, vif, p, fast).unwrap_or_else(|r| Some(Verdict::Drop(r)))
}

fn decap<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vif: &Vif,
    p: &mut Pending,
    fast: &mut bool,
) -> Result<Step, DropReason> {
    let d = f.data();
    let Some(tunnel) = tunnel_out_of_line(d, vif) else { return Ok(Some(Verdict::ToHost)) };
    let (label, inner_at, ip_end) = tunnel?;
    let ethertype = match d[inner_at] >> 4 {
        4 => EtherType::IPV4,
        6 => EtherType::IPV6,
        _ => return Err(DropReason::InvalidProtocol),
    };
    let t = ctx.t;
    let nh_id = t.label(label).ok_or(DropReason::InvalidLabel)?;
    // Keep 14 bytes in front of the inner packet for its new Ethernet header.
    f.pull_front(inner_at - ETH);
    f.set_len(ETH + ip_end - inner_at);
    write_u16(f.data_mut(), 12, ethertype.0);
    // The fast path reads the header itself, and hands anything it does not
    // finish to the general path, which parses it then.
    match if fast::allowed(ctx.cfg, vif) { fast::classify(f, None) } else { None } {
        Some(dst) => {
            *fast = true;
            p.info.dst = u128::from(dst);
        }
        None => {
            parse_ip_into(f.data(), ethertype == EtherType::IPV6, &mut p.info)?;
            f.set_len(ETH + p.info.total());
        }
    }
    let origin = Origin::Tunnel(vif.index);
    let nh = t.nexthop(nh_id).ok_or(DropReason::InvalidNh)?;
    // The VRF the packet lands in: the one the label names, or the one of
    // the vif it is delivered to.
    let vrf_id = match nh {
        NextHop::VrfLookup { vrf } => {
            if let Some(c) = ctx.stats.vrf_mut(*vrf) {
                c.decaps += 1;
            }
            p.vrf = *vrf;
            p.origin = origin;
            return Ok(None);
        }
        NextHop::Encap { oif, .. } => t.vif(*oif).map_or(vif.vrf, |v| v.vrf),
        _ => vif.vrf,
    };
    if t.vrf(vrf_id).is_none() {
        return Err(DropReason::InvalidNh);
    }
    if let Some(c) = ctx.stats.vrf_mut(vrf_id) {
        c.decaps += 1;
    }
    p.vrf = vrf_id;
    p.origin = origin;
    p.target = Some(RouteTarget { nh: nh_id, label: RouteTarget::NO_LABEL });
    Ok(None)
}

/// A frame from the fabric vif `vif`, as MPLS over GRE or UDP: `None` if it
/// is not a tunnel packet at all (the host's); else its label, where its
/// inner packet starts and where the outer packet ends, or why it is
/// dropped. The general path and the fast lane (`lane::tunnel_in`) both
/// ask it, so they take the same packets as tunnels.
#[inline(always)]
pub(super) fn tunnel(d: &[u8], vif: &Vif) -> Option<Result<(u32, usize, usize), DropReason>> {
    // Only tunnel packets are ours; look no further into anything else.
    if d.len() < ETH + ipv4::HEADER_LEN || EtherType(read_u16(d, 12)) != EtherType::IPV4 {
        return None;
    }
    let hl = usize::from(d[ETH] & 0x0f) * 4;
    let is_tunnel = match d[ETH + 9] {
        ip_proto::GRE => true,
        ip_proto::UDP => {
            d.len() >= ETH + hl + 4 && {
                let port = read_u16(d, ETH + hl + 2);
                port == MPLS_UDP_PORT || port == MPLS_UDP_LEGACY_PORT
            }
        }
        _ => false,
    };
    is_tunnel.then(|| strip(d, vif))
}

/// `tunnel` for the general path, out of line: inlined into the vector,
/// its checks cost the other cases 10 instructions a packet in registers
/// (callgrind). The fast lane inlines it: out of line there, decap took 39
/// more.
#[inline(never)]
pub(super) fn tunnel_out_of_line(d: &[u8], vif: &Vif) -> Option<Result<(u32, usize, usize), DropReason>> {
    tunnel(d, vif)
}

/// Checks the outer headers; returns the label, where the inner packet
/// starts and where the outer packet ends.
#[inline(always)]
fn strip(d: &[u8], vif: &Vif) -> Result<(u32, usize, usize), DropReason> {
    let ip = ipv4::Packet::new_checked(&d[ETH..]).map_err(|e| match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => DropReason::InvalidPacket,
    })?;
    if !ip.verify_checksum() {
        return Err(DropReason::ChecksumError);
    }
    if Some(ip.dst()) != vif.ipv4 {
        return Err(DropReason::TunnelNotForUs);
    }
    if ip.is_fragment() {
        return Err(DropReason::FragmentError);
    }
    let ip_end = ETH + usize::from(ip.total_len());
    let l4 = ETH + ip.header_len();
    let payload = &d[l4..ip_end];
    let mpls_at = if ip.protocol() == ip_proto::GRE {
        let g = gre::Packet::new_checked(payload).map_err(|_| DropReason::Truncated)?;
        if !g.is_plain_mpls() {
            return Err(DropReason::BadTunnelHeader);
        }
        l4 + gre::HEADER_LEN
    } else {
        let u = udp::Packet::new_checked(payload).map_err(|e| match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::Malformed => DropReason::BadTunnelHeader,
        })?;
        let _ = u;
        l4 + udp::HEADER_LEN
    };
    let m = mpls::Packet::new_checked(&d[mpls_at..ip_end]).map_err(|_| DropReason::Truncated)?;
    if !m.bottom_of_stack() {
        return Err(DropReason::BadTunnelHeader);
    }
    if m.ttl() <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let inner_at = mpls_at + mpls::HEADER_LEN;
    if inner_at >= ip_end {
        return Err(DropReason::Truncated);
    }
    Ok((m.label(), inner_at, ip_end))
}
