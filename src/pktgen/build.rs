//! Builders for the frames tests and benchmarks send. They use the `wire`
//! module's `Repr`s; tests decode the results with independent decoders.

use crate::wire::{arp, checksum, ethernet, icmpv6, ip_proto, ipv4, ipv6, mpls, udp, EtherType, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Addresses of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct L2 {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
}

fn eth(l2: L2, t: EtherType, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + body.len()];
    ethernet::Repr { src: l2.src, dst: l2.dst, ethertype: t }.emit(&mut ethernet::Packet::new_unchecked(&mut f[..]));
    f[ethernet::HEADER_LEN..].copy_from_slice(body);
    f
}

/// An IPv4 packet with a valid header checksum around `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, dont_frag: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; ipv4::HEADER_LEN + payload.len()];
    let repr = ipv4::Repr { src, dst, protocol: proto, payload_len: payload.len(), ttl, ident: 0x1234, dont_frag };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut p[..]));
    p[ipv4::HEADER_LEN..].copy_from_slice(payload);
    p
}

/// An IPv6 packet around `payload`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; ipv6::HEADER_LEN + payload.len()];
    let repr = ipv6::Repr { src, dst, next_header: next, payload_len: payload.len(), hop_limit };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut p[..]));
    p[ipv6::HEADER_LEN..].copy_from_slice(payload);
    p
}

/// A UDP datagram with a correct IPv4 checksum.
pub fn udp4_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; udp::HEADER_LEN + data.len()];
    udp::Repr { src_port: sport, dst_port: dport, payload_len: data.len() }
        .emit(&mut udp::Packet::new_unchecked(&mut u[..]));
    u[udp::HEADER_LEN..].copy_from_slice(data);
    let acc = checksum::pseudo_v4(src.octets(), dst.octets(), ip_proto::UDP, u.len() as u16);
    let c = match checksum::finish(checksum::sum(acc, &u)) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A UDP datagram with a correct IPv6 checksum.
pub fn udp6_segment(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; udp::HEADER_LEN + data.len()];
    udp::Repr { src_port: sport, dst_port: dport, payload_len: data.len() }
        .emit(&mut udp::Packet::new_unchecked(&mut u[..]));
    u[udp::HEADER_LEN..].copy_from_slice(data);
    let acc = checksum::pseudo_v6(src.octets(), dst.octets(), ip_proto::UDP, u.len() as u32);
    let c = match checksum::finish(checksum::sum(acc, &u)) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An Ethernet frame with an IPv4 UDP datagram, `frame_len` bytes long
/// in all (at least 42).
#[allow(clippy::too_many_arguments)]
pub fn udp4_frame(l2: L2, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, ttl: u8, frame_len: usize) -> Vec<u8> {
    let data = vec![0x5a; frame_len.saturating_sub(42)];
    eth(l2, EtherType::IPV4, &ipv4(src, dst, ip_proto::UDP, ttl, false, &udp4_segment(src, dst, sport, dport, &data)))
}

/// An Ethernet frame with an IPv6 UDP datagram, `frame_len` bytes long (at least 62).
pub fn udp6_frame(
    l2: L2,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    hop_limit: u8,
    frame_len: usize,
) -> Vec<u8> {
    let data = vec![0x5a; frame_len.saturating_sub(62)];
    eth(l2, EtherType::IPV6, &ipv6(src, dst, ip_proto::UDP, hop_limit, &udp6_segment(src, dst, sport, dport, &data)))
}

/// An Ethernet frame around an IP packet (the EtherType from its version).
pub fn ip_frame(l2: L2, ip: &[u8]) -> Vec<u8> {
    let t = if ip.first().map(|b| b >> 4) == Some(6) { EtherType::IPV6 } else { EtherType::IPV4 };
    eth(l2, t, ip)
}

/// A TCP SYN header with an MSS option, its checksum left zero.
fn syn_segment(sport: u16, dport: u16, mss: u16) -> Vec<u8> {
    let mut seg = vec![0u8; 24];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&1u32.to_be_bytes());
    seg[12] = 6 << 4;
    seg[13] = crate::wire::tcp::FLAG_SYN;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    seg[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    seg
}

/// A TCP segment of an established connection (ACK, sequence 2, no
/// options), its checksum left zero.
fn ack_segment(sport: u16, dport: u16) -> Vec<u8> {
    let mut seg = vec![0u8; 20];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&2u32.to_be_bytes());
    seg[8..12].copy_from_slice(&1u32.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = crate::wire::tcp::FLAG_ACK;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    seg
}

/// A TCP SYN with an MSS option, IPv4, with correct checksums.
pub fn tcp4_syn_frame(l2: L2, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, mss: u16) -> Vec<u8> {
    let mut seg = syn_segment(sport, dport, mss);
    let acc = checksum::pseudo_v4(src.octets(), dst.octets(), ip_proto::TCP, seg.len() as u16);
    let c = checksum::finish(checksum::sum(acc, &seg));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    eth(l2, EtherType::IPV4, &ipv4(src, dst, ip_proto::TCP, 64, true, &seg))
}

/// A TCP SYN with an MSS option, IPv6, with a correct checksum.
pub fn tcp6_syn_frame(l2: L2, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, mss: u16) -> Vec<u8> {
    let mut seg = syn_segment(sport, dport, mss);
    let acc = checksum::pseudo_v6(src.octets(), dst.octets(), ip_proto::TCP, seg.len() as u32);
    let c = checksum::finish(checksum::sum(acc, &seg));
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    eth(l2, EtherType::IPV6, &ipv6(src, dst, ip_proto::TCP, 64, &seg))
}

/// Which packet of its flow a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePacket {
    /// The first: for TCP, a SYN with an MSS.
    First,
    /// One after it: for TCP, a segment of the connection (ACK, no SYN).
    Next,
}

/// A packet of a flow from `src` to `dst`, as `vrctl trace` sends one
/// through the pipeline (`which`: the flow's first, then its next): a UDP
/// datagram, a TCP segment, or an ICMP echo request (its id `sport`), in
/// either family, every checksum right. `None` for another protocol, or
/// addresses of two families.
pub fn probe(
    l2: L2,
    (src, dst): (std::net::IpAddr, std::net::IpAddr),
    proto: u8,
    sport: u16,
    dport: u16,
    which: TracePacket,
) -> Option<Vec<u8>> {
    use std::net::IpAddr::{V4, V6};
    let icmp = if src.is_ipv4() { ip_proto::ICMP } else { ip_proto::ICMPV6 };
    let (mut seg, check_at) = match proto {
        ip_proto::UDP => {
            let mut u = vec![0u8; udp::HEADER_LEN + 4];
            udp::Repr { src_port: sport, dst_port: dport, payload_len: 4 }
                .emit(&mut udp::Packet::new_unchecked(&mut u[..]));
            u[udp::HEADER_LEN..].copy_from_slice(b"vrtr");
            (u, 6)
        }
        ip_proto::TCP if which == TracePacket::First => (syn_segment(sport, dport, 1460), 16),
        ip_proto::TCP => (ack_segment(sport, dport), 16),
        p if p == icmp => {
            let echo = if p == ip_proto::ICMP { 8 } else { 128 };
            let mut e = vec![echo, 0, 0, 0, 0, 0, 0, 1, b'v', b'r', b't', b'r'];
            e[4..6].copy_from_slice(&sport.to_be_bytes());
            (e, 2)
        }
        _ => return None,
    };
    let len = seg.len();
    let acc = match (src, dst) {
        (V4(_), V4(_)) if proto == ip_proto::ICMP => 0,
        (V4(s), V4(d)) => checksum::pseudo_v4(s.octets(), d.octets(), proto, len as u16),
        (V6(s), V6(d)) => checksum::pseudo_v6(s.octets(), d.octets(), proto, len as u32),
        _ => return None,
    };
    let c = match checksum::finish(checksum::sum(acc, &seg)) {
        0 if proto == ip_proto::UDP => 0xffff,
        c => c,
    };
    seg[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    let ip = match (src, dst) {
        (V4(s), V4(d)) => ipv4(s, d, proto, 64, proto == ip_proto::TCP, &seg),
        (V6(s), V6(d)) => ipv6(s, d, proto, 64, &seg),
        _ => return None,
    };
    Some(ip_frame(l2, &ip))
}

/// An ARP request from `sha`/`spa` for `tpa`, broadcast.
pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut body = vec![0u8; arp::PACKET_LEN];
    arp::Repr { operation: arp::Operation::Request, sha, spa, tha: MacAddr::default(), tpa }
        .emit(&mut arp::Packet::new_unchecked(&mut body[..]));
    eth(L2 { src: sha, dst: MacAddr::BROADCAST }, EtherType::ARP, &body)
}

/// The solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// A neighbour solicitation from `src` (with its MAC as option) for `target`.
pub fn neighbor_solicit(mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut body = vec![0u8; icmpv6::ND_LEN + icmpv6::LLADDR_OPT_LEN];
    {
        let mut p = icmpv6::Packet::new_unchecked(&mut body[..]);
        p.set_nd_target(target);
        p.set_nd_lladdr_option(icmpv6::OPT_SOURCE_LLADDR, mac);
        icmpv6::Repr { msg_type: icmpv6::kind::NEIGHBOR_SOLICIT, code: 0, rest: 0 }.emit(&mut p, src, dst);
    }
    let o = dst.octets();
    let l2 = L2 { src: mac, dst: MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]) };
    eth(l2, EtherType::IPV6, &ipv6(src, dst, ip_proto::ICMPV6, 255, &body))
}

/// Which tunnel to wrap a packet in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// MPLS over GRE.
    Gre,
    /// MPLS over UDP to the given port.
    Udp(u16),
}

/// An inner IP packet wrapped as another node would send it to this one.
#[allow(clippy::too_many_arguments)]
pub fn mpls_tunnel_frame(
    l2: L2,
    tunnel: Tunnel,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    label: u32,
    mpls_ttl: u8,
    sport: u16,
    inner: &[u8],
) -> Vec<u8> {
    let mut m = vec![0u8; mpls::HEADER_LEN + inner.len()];
    mpls::Packet::new_unchecked(&mut m[..]).set(label, 0, true, mpls_ttl);
    m[mpls::HEADER_LEN..].copy_from_slice(inner);
    let (proto, body) = match tunnel {
        Tunnel::Gre => {
            let mut g = vec![0u8, 0, 0x88, 0x47];
            g.extend_from_slice(&m);
            (ip_proto::GRE, g)
        }
        Tunnel::Udp(port) => {
            let mut u = vec![0u8; udp::HEADER_LEN + m.len()];
            udp::Repr { src_port: sport, dst_port: port, payload_len: m.len() }
                .emit(&mut udp::Packet::new_unchecked(&mut u[..]));
            u[udp::HEADER_LEN..].copy_from_slice(&m);
            (ip_proto::UDP, u)
        }
    };
    eth(l2, EtherType::IPV4, &ipv4(src, dst, proto, 64, false, &body))
}
