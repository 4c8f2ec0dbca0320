//! Reading a captured frame's headers, for its one-line summary and for a
//! capture's filter: the IP packet a frame carries and, for a tunnelled
//! frame (MPLS over UDP or GRE, as vrouterd sends and takes them), the
//! label and the packet inside.

use crate::tables::nexthop::{MPLS_UDP_LEGACY_PORT, MPLS_UDP_PORT};
use crate::wire::{ethernet, gre, ip_proto, ipv4, ipv6, mpls, tcp, udp, WireError};
use std::net::IpAddr;

/// An IP packet's addresses, protocol and payload.
pub(super) struct IpLayer<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// The bytes after the IP header, as far as the packet and the frame go.
    pub payload: &'a [u8],
    /// A later fragment's offset in bytes: its payload starts mid-datagram.
    pub fragment_at: Option<u32>,
}

impl<'a> IpLayer<'a> {
    /// "IP" or "IP6", as tcpdump says.
    pub fn family(&self) -> &'static str {
        if self.src.is_ipv4() {
            "IP"
        } else {
            "IP6"
        }
    }

    /// Source and destination ports of a TCP or UDP packet that holds its
    /// header whole.
    pub fn ports(&self) -> Option<(u16, u16)> {
        if self.fragment_at.is_some() {
            return None;
        }
        match self.proto {
            ip_proto::TCP => tcp::Packet::new_checked(self.payload).ok().map(|t| (t.src_port(), t.dst_port())),
            ip_proto::UDP => udp_header(self.payload).map(|u| (u.src_port(), u.dst_port())),
            _ => None,
        }
    }

    /// The MPLS header onward, if this is a tunnel packet as vrouterd sends
    /// them: UDP to 6635 or 51234, or GRE carrying MPLS.
    pub fn tunnelled(&self) -> Option<&'a [u8]> {
        if self.fragment_at.is_some() {
            return None;
        }
        match self.proto {
            ip_proto::UDP => {
                let u = udp_header(self.payload)?;
                let payload: &'a [u8] = self.payload;
                matches!(u.dst_port(), MPLS_UDP_PORT | MPLS_UDP_LEGACY_PORT).then(|| &payload[udp::HEADER_LEN..])
            }
            ip_proto::GRE => {
                let g = gre::Packet::new_checked(self.payload).ok()?;
                let payload: &'a [u8] = self.payload;
                (g.protocol() == ethernet::EtherType::MPLS_UNICAST).then(|| &payload[g.header_len()..])
            }
            _ => None,
        }
    }
}

/// A header's view as `new_checked` gives it, or, where only the packet's
/// length runs past the bytes there (a capture cut at its snap length:
/// 2,048 bytes of a 9,000-byte jumbo frame), `cut`'s view of its header,
/// read as far as it goes, as tcpdump reads it. None if malformed.
fn whole_or_cut<P>(checked: Result<P, WireError>, cut: impl FnOnce() -> Option<P>) -> Option<P> {
    match checked {
        Ok(p) => Some(p),
        Err(WireError::Truncated) => cut(),
        Err(_) => None,
    }
}

/// The UDP header at the start of `b`, its datagram whole or cut short.
fn udp_header(b: &[u8]) -> Option<udp::Packet<&[u8]>> {
    whole_or_cut(udp::Packet::new_checked(b), || (b.len() >= udp::HEADER_LEN).then(|| udp::Packet::new_unchecked(b)))
}

/// Why a frame's IP packet could not be read, as its summary says it.
pub(super) type Unreadable = &'static str;

/// The IP packet in `b`, of either version by its first nibble, whole or
/// cut short after its header (`whole_or_cut`).
pub(super) fn ip_layer(b: &[u8]) -> Result<IpLayer<'_>, Unreadable> {
    match b.first().map(|v| v >> 4) {
        Some(4) => {
            // Truncated with 20 bytes or more: the header checked out and
            // only its total length runs past the bytes there.
            let cut =
                || Some(ipv4::Packet::new_unchecked(b)).filter(|p| b.len() >= ipv4::HEADER_LEN.max(p.header_len()));
            let p = whole_or_cut(ipv4::Packet::new_checked(b), cut).ok_or("IP, truncated or malformed")?;
            let end = usize::from(p.total_len()).min(b.len());
            Ok(IpLayer {
                src: p.src().into(),
                dst: p.dst().into(),
                proto: p.protocol(),
                payload: b.get(p.header_len()..end).unwrap_or_default(),
                fragment_at: (p.frag_offset() != 0).then(|| u32::from(p.frag_offset()) * 8),
            })
        }
        Some(6) => {
            let cut = || (b.len() >= ipv6::HEADER_LEN).then(|| ipv6::Packet::new_unchecked(b));
            let p = whole_or_cut(ipv6::Packet::new_checked(b), cut).ok_or("IP6, truncated or malformed")?;
            let end = p.total_len().min(b.len());
            Ok(IpLayer {
                src: p.src().into(),
                dst: p.dst().into(),
                proto: p.next_header(),
                payload: b.get(ipv6::HEADER_LEN..end).unwrap_or_default(),
                fragment_at: None,
            })
        }
        _ => Err("not IP"),
    }
}

/// An MPLS header and the IP packet behind it.
pub(super) fn mpls_layer(b: &[u8]) -> Option<(u32, &[u8])> {
    let m = mpls::Packet::new_checked(b).ok()?;
    Some((m.label(), &b[mpls::HEADER_LEN..]))
}

/// The IP packet a frame carries, the one inside its tunnel if it has one:
/// what a pod sent or is sent.
pub(super) fn innermost(frame: &[u8]) -> Option<IpLayer<'_>> {
    let eth = ethernet::Packet::new_checked(frame).ok()?;
    if !matches!(eth.ethertype(), ethernet::EtherType::IPV4 | ethernet::EtherType::IPV6) {
        return None;
    }
    let outer = ip_layer(&frame[ethernet::HEADER_LEN..]).ok()?;
    match outer.tunnelled() {
        Some(inside) => ip_layer(mpls_layer(inside)?.1).ok(),
        None => Some(outer),
    }
}
