//! Per-vif packet capture: Contrail's `vifdump`.
//!
//! tcpdump on a pod's veth does not see what the XDP program redirects to
//! vrouterd, and on the fabric NIC it sees none of the tunnelled frames
//! vrouterd takes: only vrouterd sees its vifs' traffic. Workers copy a
//! watched vif's frames into the `tap` (received ones with what vrouterd
//! did with them); the API drains it (`capture.read`); `vrctl vifdump`
//! prints each frame in a line (`summary`) or writes pcapng (`pcapng`).

pub mod pcapng;
mod tap;

pub use tap::{
    now_ns, Captured, Direction, Session, Staged, StartError, Tap, MAX_SNAPLEN, RING as SESSION_FRAMES, SESSIONS,
};

use crate::tables::nexthop::{MPLS_UDP_LEGACY_PORT, MPLS_UDP_PORT};
use crate::wire::{arp, ethernet, gre, ip_proto, ipv4, ipv6, mpls, tcp, udp};
use std::fmt::Write;

/// `data` in lowercase hex, as `capture.read` carries frames.
pub fn to_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of `hex` (`to_hex`), or `None` if it is not an even number
/// of hex digits.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let h = hex.as_bytes();
    if h.len() % 2 != 0 {
        return None;
    }
    h.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// One line on what a frame holds, as tcpdump's would read: its addresses,
/// protocol and ports, and, for a tunnelled frame, its label and the
/// packet inside. A cut or malformed header ends the line with what was
/// read so far.
pub fn summary(frame: &[u8]) -> String {
    let mut s = String::new();
    let Ok(eth) = ethernet::Packet::new_checked(frame) else { return "truncated Ethernet header".into() };
    match eth.ethertype() {
        ethernet::EtherType::ARP => arp_summary(&mut s, eth.payload()),
        ethernet::EtherType::IPV4 | ethernet::EtherType::IPV6 => ip_summary(&mut s, eth.payload(), 0),
        t => {
            let _ = write!(s, "{} > {} ethertype 0x{:04x}", eth.src(), eth.dst(), t.0);
        }
    }
    s
}

fn arp_summary(s: &mut String, b: &[u8]) {
    let Ok(a) = arp::Packet::new_checked(b) else {
        s.push_str("ARP, truncated");
        return;
    };
    let _ = match a.oper() {
        1 => write!(s, "ARP who-has {} tell {}", a.tpa(), a.spa()),
        2 => write!(s, "ARP {} is-at {}", a.spa(), a.sha()),
        op => write!(s, "ARP op {op}"),
    };
}

/// An IP packet (of either version, by its first nibble) at tunnel depth
/// `depth`.
fn ip_summary(s: &mut String, b: &[u8], depth: u8) {
    let (src, dst, proto, payload): (std::net::IpAddr, std::net::IpAddr, u8, &[u8]) = match b.first().map(|v| v >> 4) {
        Some(4) => match ipv4::Packet::new_checked(b) {
            Ok(p) if p.frag_offset() != 0 => {
                let _ = write!(s, "IP {} > {}: fragment at {}", p.src(), p.dst(), p.frag_offset() * 8);
                return;
            }
            Ok(p) => {
                let end = usize::from(p.total_len()).min(b.len());
                (p.src().into(), p.dst().into(), p.protocol(), b.get(p.header_len()..end).unwrap_or_default())
            }
            Err(_) => {
                s.push_str("IP, truncated or malformed");
                return;
            }
        },
        Some(6) => match ipv6::Packet::new_checked(b) {
            Ok(p) => {
                let end = p.total_len().min(b.len());
                (p.src().into(), p.dst().into(), p.next_header(), b.get(ipv6::HEADER_LEN..end).unwrap_or_default())
            }
            Err(_) => {
                s.push_str("IP6, truncated or malformed");
                return;
            }
        },
        _ => {
            s.push_str("not IP");
            return;
        }
    };
    let family = if src.is_ipv4() { "IP" } else { "IP6" };
    match proto {
        ip_proto::TCP => match tcp::Packet::new_checked(payload) {
            Ok(t) => {
                let _ =
                    write!(s, "{family} {src}.{} > {dst}.{}: TCP [{}]", t.src_port(), t.dst_port(), flags(t.flags()));
            }
            Err(_) => {
                let _ = write!(s, "{family} {src} > {dst}: TCP, truncated");
            }
        },
        ip_proto::UDP => match udp::Packet::new_checked(payload) {
            Ok(u) => {
                let _ = write!(s, "{family} {src}.{} > {dst}.{}: UDP", u.src_port(), u.dst_port());
                if depth == 0 && matches!(u.dst_port(), MPLS_UDP_PORT | MPLS_UDP_LEGACY_PORT) {
                    s.push_str(", MPLS");
                    mpls_summary(s, u.payload(), depth);
                }
            }
            Err(_) => {
                let _ = write!(s, "{family} {src} > {dst}: UDP, truncated");
            }
        },
        ip_proto::GRE if depth == 0 => {
            let _ = write!(s, "{family} {src} > {dst}: GRE");
            match gre::Packet::new_checked(payload) {
                Ok(g) if g.protocol() == ethernet::EtherType::MPLS_UNICAST => mpls_summary(s, g.payload(), depth),
                Ok(g) => {
                    let _ = write!(s, " ethertype 0x{:04x}", g.protocol().0);
                }
                Err(_) => s.push_str(", truncated"),
            }
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let kind = if proto == ip_proto::ICMP { "ICMP" } else { "ICMP6" };
            let _ = match payload {
                [t, c, ..] => write!(s, "{family} {src} > {dst}: {kind} {}", icmp_name(proto, *t, *c)),
                _ => write!(s, "{family} {src} > {dst}: {kind}, truncated"),
            };
        }
        p => {
            let _ = write!(s, "{family} {src} > {dst}: protocol {p}");
        }
    }
}

fn mpls_summary(s: &mut String, b: &[u8], depth: u8) {
    match mpls::Packet::new_checked(b) {
        Ok(m) => {
            let _ = write!(s, " label {}: ", m.label());
            ip_summary(s, m.payload(), depth + 1);
        }
        Err(_) => s.push_str(", truncated"),
    }
}

fn flags(f: u8) -> String {
    let names =
        [(tcp::FLAG_SYN, 'S'), (tcp::FLAG_FIN, 'F'), (tcp::FLAG_RST, 'R'), (tcp::FLAG_PSH, 'P'), (tcp::FLAG_ACK, '.')];
    names.iter().filter(|(bit, _)| f & bit != 0).map(|(_, c)| *c).collect()
}

fn icmp_name(proto: u8, kind: u8, code: u8) -> String {
    let name = match (proto, kind) {
        (ip_proto::ICMP, 0) | (ip_proto::ICMPV6, 129) => "echo reply",
        (ip_proto::ICMP, 8) | (ip_proto::ICMPV6, 128) => "echo request",
        (ip_proto::ICMP, 3) => "unreachable",
        (ip_proto::ICMP, 11) | (ip_proto::ICMPV6, 3) => "time exceeded",
        (ip_proto::ICMPV6, 1) => "unreachable",
        (ip_proto::ICMPV6, 2) => "packet too big",
        (ip_proto::ICMPV6, 133) => "router solicitation",
        (ip_proto::ICMPV6, 134) => "router advertisement",
        (ip_proto::ICMPV6, 135) => "neighbor solicitation",
        (ip_proto::ICMPV6, 136) => "neighbor advertisement",
        (ip_proto::ICMPV6, 143) => "multicast listener report v2",
        _ => return format!("type {kind} code {code}"),
    };
    if code == 0 {
        name.to_string()
    } else {
        format!("{name} code {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::build;
    use std::net::Ipv4Addr;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_datagram_a_ping_and_a_tunnelled_segment() {
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        let udp = [0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0];
        assert_eq!(
            summary(&eth(0x0800, &build::ipv4(a, b, ip_proto::UDP, 64, false, &udp))),
            "IP 10.1.0.2.12345 > 10.1.0.3.53: UDP"
        );
        let ping = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(
            summary(&eth(0x0800, &build::ipv4(a, b, ip_proto::ICMP, 64, false, &ping))),
            "IP 10.1.0.2 > 10.1.0.3: ICMP echo request"
        );

        let mut syn = [0u8; 20];
        syn[..4].copy_from_slice(&[0xc0, 0x00, 0x00, 0x50]);
        syn[12] = 5 << 4;
        syn[13] = tcp::FLAG_SYN;
        let inner = build::ipv4(a, b, ip_proto::TCP, 64, false, &syn);
        let udp_len = (8 + 4 + inner.len()) as u16;
        let mut tunnel = vec![0xc3, 0x50, 0x19, 0xeb]; // 50000 > 6635
        tunnel.extend_from_slice(&udp_len.to_be_bytes());
        tunnel.extend_from_slice(&[0, 0]);
        tunnel.extend_from_slice(&[0x00, 0x01, 0x01, 0x40]); // label 16, bottom, ttl 64
        tunnel.extend_from_slice(&inner);
        let outer =
            build::ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), ip_proto::UDP, 64, false, &tunnel);
        assert_eq!(
            summary(&eth(0x0800, &outer)),
            "IP 192.0.2.1.50000 > 192.0.2.2.6635: UDP, MPLS label 16: IP 10.1.0.2.49152 > 10.1.0.3.80: TCP [S]"
        );
    }

    #[test]
    fn hex_both_ways() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(from_hex("000fA5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn arp_and_what_cannot_be_read() {
        let mut who_has = vec![0, 1, 8, 0, 6, 4, 0, 1];
        who_has.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 10, 1, 0, 1]);
        assert_eq!(summary(&eth(0x0806, &who_has)), "ARP who-has 10.1.0.1 tell 10.1.0.2");
        assert_eq!(summary(&[0; 10]), "truncated Ethernet header");
        assert_eq!(summary(&eth(0x0800, &[0x45, 0])), "IP, truncated or malformed");
        assert!(summary(&eth(0x88cc, &[])).ends_with("ethertype 0x88cc"));
    }
}
