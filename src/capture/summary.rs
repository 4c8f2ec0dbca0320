//! A captured frame in one line, as tcpdump would print it.

use super::dissect::{ip_layer, mpls_layer, IpLayer};
use crate::wire::{arp, ethernet, ip_proto, tcp};
use std::fmt::Write;

/// One line on what a frame holds, as tcpdump's would read: its addresses,
/// protocol and ports, and, for a tunnelled frame, its label and the
/// packet inside. A cut or malformed header ends the line with what was
/// read so far.
pub fn summary(frame: &[u8]) -> String {
    let mut s = String::new();
    let Ok(eth) = ethernet::Packet::new_checked(frame) else { return "truncated Ethernet header".into() };
    match eth.ethertype() {
        ethernet::EtherType::ARP => arp_summary(&mut s, eth.payload()),
        ethernet::EtherType::IPV4 | ethernet::EtherType::IPV6 => ip_summary(&mut s, eth.payload(), true),
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

/// An IP packet; `outer` if it may be a tunnel (a tunnel inside a tunnel
/// is not ours, and not looked into).
fn ip_summary(s: &mut String, b: &[u8], outer: bool) {
    let ip = match ip_layer(b) {
        Ok(ip) => ip,
        Err(why) => {
            s.push_str(why);
            return;
        }
    };
    let IpLayer { src, dst, proto, payload, .. } = ip;
    let family = ip.family();
    if let Some(at) = ip.fragment_at {
        let _ = write!(s, "{family} {src} > {dst}: fragment at {at}");
        return;
    }
    match (proto, ip.ports()) {
        (ip_proto::TCP, Some((sport, dport))) => {
            let _ = write!(
                s,
                "{family} {src}.{sport} > {dst}.{dport}: TCP [{}]",
                flags(tcp::Packet::new_checked(payload).map_or(0, |t| t.flags()))
            );
        }
        (ip_proto::UDP, Some((sport, dport))) => {
            let _ = write!(s, "{family} {src}.{sport} > {dst}.{dport}: UDP");
        }
        (ip_proto::TCP | ip_proto::UDP, None) => {
            let name = if proto == ip_proto::TCP { "TCP" } else { "UDP" };
            let _ = write!(s, "{family} {src} > {dst}: {name}, truncated");
        }
        (ip_proto::GRE, _) => {
            let _ = write!(s, "{family} {src} > {dst}: GRE");
        }
        (ip_proto::ICMP | ip_proto::ICMPV6, _) => {
            let kind = if proto == ip_proto::ICMP { "ICMP" } else { "ICMP6" };
            let _ = match payload {
                [t, c, ..] => write!(s, "{family} {src} > {dst}: {kind} {}", icmp_name(proto, *t, *c)),
                _ => write!(s, "{family} {src} > {dst}: {kind}, truncated"),
            };
        }
        (p, _) => {
            let _ = write!(s, "{family} {src} > {dst}: protocol {p}");
        }
    }
    if let Some(inside) = ip.tunnelled().filter(|_| outer) {
        match mpls_layer(inside) {
            Some((label, packet)) => {
                let _ = write!(s, ", MPLS label {label}: ");
                ip_summary(s, packet, false);
            }
            None => s.push_str(", MPLS, truncated"),
        }
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

        let l2 =
            build::L2 { src: crate::wire::MacAddr([2, 0, 0, 0, 0, 1]), dst: crate::wire::MacAddr([2, 0, 0, 0, 0, 2]) };
        let syn = build::tcp4_syn_frame(l2, a, b, 49152, 80, 1460);
        let (n1, n2) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        let to_6635 = build::Tunnel::Udp(crate::tables::nexthop::MPLS_UDP_PORT);
        let outer = build::mpls_tunnel_frame(l2, to_6635, n1, n2, 16, 64, 50000, &syn[14..]);
        assert_eq!(
            summary(&outer),
            "IP 192.0.2.1.50000 > 192.0.2.2.6635: UDP, MPLS label 16: IP 10.1.0.2.49152 > 10.1.0.3.80: TCP [S]"
        );
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

    #[test]
    fn a_jumbo_frame_cut_at_the_snap_length_reads_as_far_as_its_headers() {
        let (a, b) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        let mut ping = vec![0x5a; 8908];
        ping[..4].copy_from_slice(&[8, 0, 0, 0]);
        let frame = eth(0x0800, &build::ipv4(a, b, ip_proto::ICMP, 64, false, &ping));
        assert_eq!(summary(&frame[..2048]), "IP 10.1.0.2 > 10.1.0.3: ICMP echo request");
        let l2 =
            build::L2 { src: crate::wire::MacAddr([2, 0, 0, 0, 0, 1]), dst: crate::wire::MacAddr([2, 0, 0, 0, 0, 2]) };
        let six = build::udp6_frame(l2, "fd00::2".parse().unwrap(), "fd00::3".parse().unwrap(), 5000, 53, 64, 9000);
        assert_eq!(summary(&six[..2048]), "IP6 fd00::2.5000 > fd00::3.53: UDP");
        let to_6635 = build::Tunnel::Udp(crate::tables::nexthop::MPLS_UDP_PORT);
        let (n1, n2) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        let tunnel = build::mpls_tunnel_frame(l2, to_6635, n1, n2, 16, 64, 50000, &frame[14..]);
        assert_eq!(
            summary(&tunnel[..2048]),
            "IP 192.0.2.1.50000 > 192.0.2.2.6635: UDP, MPLS label 16: IP 10.1.0.2 > 10.1.0.3: ICMP echo request"
        );
        // Cut inside the header it is still not read.
        assert_eq!(summary(&frame[..14 + 19]), "IP, truncated or malformed");
    }
}
