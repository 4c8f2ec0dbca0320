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
/// ask it, so they take the same packets as tunnels. The common tunnel is
/// read at once (`tunnel_plain`); any other is checked a header at a time,
/// out of line (`tunnel_checked`).
#[inline(always)]
pub(super) fn tunnel(d: &[u8], vif: &Vif) -> Option<Result<(u32, usize, usize), DropReason>> {
    match tunnel_plain(d, vif) {
        Some(found) => Some(Ok(found)),
        None => tunnel_checked(d, vif),
    }
}

/// `tunnel` a header at a time: any tunnel, and why one is dropped.
#[inline(never)]
fn tunnel_checked(d: &[u8], vif: &Vif) -> Option<Result<(u32, usize, usize), DropReason>> {
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

/// How much of a frame `tunnel_plain` reads: Ethernet, IPv4 without
/// options, UDP (GRE is 4 bytes shorter) and the label stack entry.
const PLAIN: usize = ETH + ipv4::HEADER_LEN + udp::HEADER_LEN + mpls::HEADER_LEN;

/// `tunnel` for the common tunnel, read as one fixed-size array: an outer
/// IPv4 header without options, MPLS over UDP or plain GRE, one label,
/// every check passed. `None` for anything else, which `tunnel_checked`
/// then takes (and says why it drops): so its answer, where it gives one,
/// is `tunnel_checked`'s (`tunnel_plain_answers_as_tunnel_checked_does`
/// keeps them together). `tunnel_checked`'s views check lengths and header
/// lengths one header at a time: 97 instructions a tunnel in the fabric
/// lane, about half of them for that (callgrind, `decap_mplsoudp`).
#[inline(always)]
fn tunnel_plain(d: &[u8], vif: &Vif) -> Option<(u32, usize, usize)> {
    let h: &[u8; PLAIN] = d.get(..PLAIN)?.try_into().ok()?;
    if h[12..14] != [0x08, 0x00] || h[ETH] != 0x45 {
        return None;
    }
    const L4: usize = ETH + ipv4::HEADER_LEN;
    let udp = match h[ETH + 9] {
        ip_proto::UDP => {
            let port = u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]);
            if port != MPLS_UDP_PORT && port != MPLS_UDP_LEGACY_PORT {
                return None;
            }
            true
        }
        // Plain: no flags, version 0, MPLS.
        ip_proto::GRE if h[L4..L4 + 4] == [0, 0, 0x88, 0x47] => false,
        _ => return None,
    };
    let ip: &[u8; ipv4::HEADER_LEN] = h[ETH..L4].try_into().ok()?;
    if !ipv4::checksum_ok(ip) || vif.ipv4.map(|a| a.octets()) != Some([h[30], h[31], h[32], h[33]]) {
        return None;
    }
    // More fragments, or an offset: a fragment (Don't Fragment is fine).
    if u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0 {
        return None;
    }
    let ip_end = ETH + usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mpls_at = if udp { L4 + udp::HEADER_LEN } else { L4 + gre::HEADER_LEN };
    let inner_at = mpls_at + mpls::HEADER_LEN;
    // The inner packet's first byte inside the outer packet, which ends
    // inside the frame: every header before it is whole.
    if inner_at >= ip_end || ip_end > d.len() {
        return None;
    }
    if udp {
        let len = usize::from(u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]));
        if len < udp::HEADER_LEN || len > ip_end - L4 {
            return None;
        }
    }
    let entry = u32::from_be_bytes([h[mpls_at], h[mpls_at + 1], h[mpls_at + 2], h[mpls_at + 3]]);
    // Bottom of the stack, and a TTL that lives on.
    if entry & 0x100 == 0 || entry as u8 <= 1 {
        return None;
    }
    Some((entry >> 12, inner_at, ip_end))
}

/// `tunnel` for the general path, out of line: inlined into the vector,
/// its checks cost the other cases 10 instructions a packet in registers
/// (callgrind). The fast lane inlines it (its common tunnel's read,
/// `tunnel_plain`: out of line there, decap took 39 more).
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

#[cfg(test)]
mod tests {
    use super::{tunnel_checked, tunnel_plain, PLAIN};
    use crate::pktgen::build::{self, Tunnel, L2};
    use crate::tables::nexthop::{MPLS_UDP_LEGACY_PORT, MPLS_UDP_PORT};
    use crate::tables::{Vif, VifKind};
    use crate::wire::{checksum, ip_proto, MacAddr};
    use std::net::Ipv4Addr;

    /// Every tunnel `tunnel_plain` answers for, `tunnel_checked` answers for alike,
    /// and it answers for the common tunnels: well-formed ones of each
    /// kind, and each of them with every byte of the headers it reads
    /// changed to several values, cut short, or padded.
    #[test]
    fn tunnel_plain_answers_as_tunnel_checked_does() {
        let node = Ipv4Addr::new(192, 0, 2, 1);
        let mut vif = Vif::new(0, "eth0", VifKind::Fabric, 0, MacAddr([2, 0, 0, 0, 0, 1]));
        vif.ipv4 = Some(node);
        let l2 = L2 { src: MacAddr([2, 0, 0, 0, 0, 2]), dst: MacAddr([2, 0, 0, 0, 0, 1]) };
        let inner =
            build::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), ip_proto::UDP, 64, false, &[7; 12]);
        let mut answered = 0;
        let mut checked = 0;
        for tunnel_kind in [Tunnel::Gre, Tunnel::Udp(MPLS_UDP_PORT), Tunnel::Udp(MPLS_UDP_LEGACY_PORT)] {
            let good =
                build::mpls_tunnel_frame(l2, tunnel_kind, Ipv4Addr::new(192, 0, 2, 9), node, 17, 64, 4000, &inner);
            assert_eq!(tunnel_plain(&good, &vif).map(|(label, ..)| label), Some(17), "{tunnel_kind:?}");
            let mut frames = vec![good.clone(), [good.clone(), vec![0; 20]].concat()];
            frames.extend((0..good.len()).map(|n| good[..n].to_vec()));
            // Each changed byte as it is, and with the outer header's
            // checksum made right again, so that the checks after the
            // checksum see it too.
            let values = [0u8, 1, 2, 0x08, 0x11, 0x20, 0x2f, 0x3f, 0x40, 0x45, 0x46, 0x47, 0x80, 0x88, 0xff];
            for at in 0..PLAIN {
                for v in values.into_iter().chain([good[at] ^ 1, good[at].wrapping_add(1), good[at].wrapping_sub(1)]) {
                    let mut f = good.clone();
                    f[at] = v;
                    frames.push(f.clone());
                    f[24..26].copy_from_slice(&[0, 0]);
                    let sum = checksum::checksum(&f[14..34]);
                    f[24..26].copy_from_slice(&sum.to_be_bytes());
                    frames.push(f);
                }
            }
            for f in &frames {
                if let Some(plain) = tunnel_plain(f, &vif) {
                    assert_eq!(tunnel_checked(f, &vif), Some(Ok(plain)), "{f:02x?}");
                    answered += 1;
                }
                checked += 1;
            }
        }
        // Changes it reads past (the label's value, the source port, the
        // TTL, a checksum made right) leave a tunnel it answers for; the
        // rest it refuses.
        assert!(answered > 1_000 && answered < checked * 3 / 4, "{answered} of {checked}");
    }
}
