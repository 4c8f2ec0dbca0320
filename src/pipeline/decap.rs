//! Frames from the fabric: MPLS over GRE or UDP addressed to this node is
//! stripped, and its label says where the inner packet goes. Everything
//! else belongs to the host's own stack.

use super::forward::{parse_ip, resolve, route, ETH};
use super::{Ctx, Frame, Origin, Verdict};
use crate::stats::DropReason;
use crate::tables::{NextHop, RouteTarget, Vif};
use crate::wire::{gre, ip_proto, ipv4, mpls, read_u16, udp, write_u16, EtherType, WireError};

/// IANA's port for MPLS over UDP (RFC 7510).
pub const MPLS_UDP_PORT: u16 = 6635;
/// Tungsten Fabric's legacy MPLS-over-UDP port, accepted on receive.
pub const MPLS_UDP_LEGACY_PORT: u16 = 51234;

/// A frame from the fabric vif `vif`.
#[inline]
pub(super) fn from_fabric<B: AsRef<[u8]> + AsMut<[u8]>>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif) -> Verdict {
    let d = f.data();
    // Only tunnel packets are ours; look no further into anything else.
    if d.len() < ETH + ipv4::HEADER_LEN || EtherType(read_u16(d, 12)) != EtherType::IPV4 {
        return Verdict::ToHost;
    }
    let hl = usize::from(d[ETH] & 0x0f) * 4;
    let is_tunnel = match d[ETH + 9] {
        ip_proto::GRE => true,
        ip_proto::UDP => d.len() >= ETH + hl + 4 && {
            let port = read_u16(d, ETH + hl + 2);
            port == MPLS_UDP_PORT || port == MPLS_UDP_LEGACY_PORT
        },
        _ => false,
    };
    if !is_tunnel {
        return Verdict::ToHost;
    }
    let (label, inner_at, ip_end) = match strip(d, vif) {
        Ok(x) => x,
        Err(r) => return Verdict::Drop(r),
    };
    let ethertype = match d[inner_at] >> 4 {
        4 => EtherType::IPV4,
        6 => EtherType::IPV6,
        _ => return Verdict::Drop(DropReason::InvalidProtocol),
    };
    let t = ctx.t;
    let Some(nh_id) = t.label(label) else {
        return Verdict::Drop(DropReason::InvalidLabel);
    };
    // Keep 14 bytes in front of the inner packet for its new Ethernet header.
    f.pull_front(inner_at - ETH);
    f.set_len(ETH + ip_end - inner_at);
    write_u16(f.data_mut(), 12, ethertype.0);
    let info = match parse_ip(f.data(), ethertype == EtherType::IPV6) {
        Ok(i) => i,
        Err(r) => return Verdict::Drop(r),
    };
    f.set_len(ETH + info.total);
    let origin = Origin::Tunnel(vif.index);
    let Some(nh) = t.nexthop(nh_id) else {
        return Verdict::Drop(DropReason::InvalidNh);
    };
    // The VRF the packet lands in: the one the label names, or the one of
    // the vif it is delivered to.
    let vrf_id = match nh {
        NextHop::VrfLookup { vrf } => {
            if let Some(c) = ctx.stats.vrf_mut(*vrf) {
                c.decaps += 1;
            }
            return route(ctx, f, *vrf, origin, 0);
        }
        NextHop::Encap { oif, .. } => t.vif(*oif).map_or(vif.vrf, |v| v.vrf),
        _ => vif.vrf,
    };
    let Some(vrf) = t.vrf(vrf_id) else {
        return Verdict::Drop(DropReason::InvalidNh);
    };
    if let Some(c) = ctx.stats.vrf_mut(vrf_id) {
        c.decaps += 1;
    }
    let target = RouteTarget { nh: nh_id, label: RouteTarget::NO_LABEL };
    resolve(ctx, f, vrf, target, &info, origin, 0, None)
}

/// Checks the outer headers; returns the label, where the inner packet
/// starts and where the outer packet ends.
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
