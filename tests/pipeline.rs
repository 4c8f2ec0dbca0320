//! The forwarding pipeline's behaviour, one capability at a time. Frames
//! are built with the crate's builders and checked with etherparse, an
//! independent decoder, and by hand-checked bytes for MPLS and GRE.

mod common;

use common::*;
use etherparse::{Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, UdpHeaderSlice};
use std::net::{Ipv4Addr, Ipv6Addr};
use vrouter::pipeline::{Pipeline, PipelineConfig};
use vrouter::pipeline::{TrapReason, Verdict};
use vrouter::pktgen::build::{self, Tunnel, L2};
use vrouter::stats::DropReason;
use vrouter::tables::{EcmpGroup, NextHop, Object, Op, RouteSpec, RouteTarget, Vif, VifKind};
use vrouter::wire::ip_proto;

fn udp_from_a1(dst: Ipv4Addr, sport: u16, ttl: u8) -> Vec<u8> {
    build::udp4_frame(from_a1(), a1_ip(), dst, sport, 80, ttl, 64)
}

fn ipv4_of(frame: &[u8]) -> Ipv4HeaderSlice<'_> {
    Ipv4HeaderSlice::from_slice(&frame[14..]).expect("an IPv4 header")
}

fn assert_ipv4_checksum(ip: &Ipv4HeaderSlice<'_>) {
    let h = ip.to_header();
    assert_eq!(ip.header_checksum(), h.calc_header_checksum(), "IPv4 header checksum");
}

/// The MPLS entry of a tunnel frame: (label, tc, s, ttl), read by hand.
fn mpls_at(frame: &[u8], at: usize) -> (u32, u8, bool, u8) {
    let w = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    (w >> 12, ((w >> 9) & 7) as u8, w & 0x100 != 0, w as u8)
}

#[test]
fn local_forward_rewrites_l2_and_decrements_ttl() {
    let mut lab = Lab::new();
    let input = udp_from_a1(a2_ip(), 1000, 64);
    let (v, out) = lab.run(A1, input.clone());
    assert_eq!(v, Verdict::Tx(A2));
    let eth = Ethernet2HeaderSlice::from_slice(&out).unwrap();
    assert_eq!(eth.destination(), mac(2).0);
    assert_eq!(eth.source(), router_mac().0);
    let ip = ipv4_of(&out);
    assert_eq!(ip.ttl(), 63);
    assert_ipv4_checksum(&ip);
    assert_eq!(&out[34..], &input[34..], "payload untouched");
    let s = lab.stats();
    assert_eq!((s.vif(A1).rx_packets, s.vif(A2).tx_packets), (1, 1));
    assert_eq!(s.vif(A2).tx_bytes, 64);
    assert_eq!(s.vrf(BLUE).encaps, 1);
}

#[test]
fn local_forward_ipv6_decrements_hop_limit() {
    let mut lab = Lab::new();
    let input = build::udp6_frame(from_a1(), a1_ip6(), a2_ip6(), 1000, 80, 64, 90);
    let (v, out) = lab.run(A1, input);
    assert_eq!(v, Verdict::Tx(A2));
    let ip = Ipv6HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.hop_limit(), 63);
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
}

#[test]
fn ethernet_padding_is_trimmed() {
    let mut lab = Lab::new();
    let mut input = build::udp4_frame(from_a1(), a1_ip(), a2_ip(), 1, 2, 64, 42);
    input.extend_from_slice(&[0u8; 18]); // padded to the 60-byte minimum
    let (v, out) = lab.run(A1, input);
    assert_eq!(v, Verdict::Tx(A2));
    assert_eq!(out.len(), 42);
}

#[test]
fn proxy_arp_answers_for_gateway_and_routed_addresses_only() {
    let mut lab = Lab::new();
    for target in [gw(), a2_ip(), remote_ip(), service_ip()] {
        let (v, out) = lab.run(A1, build::arp_request(mac(1), a1_ip(), target));
        assert_eq!(v, Verdict::Tx(A1), "ARP for {target}");
        assert_eq!(&out[0..6], &mac(1).0, "reply to the asker");
        assert_eq!(&out[6..12], &router_mac().0);
        assert_eq!(&out[12..14], &[0x08, 0x06]);
        assert_eq!(&out[20..22], &[0, 2], "operation: reply");
        assert_eq!(&out[22..28], &router_mac().0, "sender hardware address");
        assert_eq!(&out[28..32], &target.octets(), "sender protocol address");
        assert_eq!(&out[32..38], &mac(1).0);
        assert_eq!(&out[38..42], &a1_ip().octets());
    }
    assert_eq!(lab.stats().vrf(BLUE).arp_proxies, 4);
    // Not routed, routed to discard, the pod's own address, gratuitous.
    for (spa, tpa) in [
        (a1_ip(), Ipv4Addr::new(172, 16, 0, 1)),
        (a1_ip(), Ipv4Addr::new(10, 66, 0, 1)),
        (Ipv4Addr::UNSPECIFIED, a1_ip()),
        (a1_ip(), a1_ip()),
    ] {
        let (v, _) = lab.run(A1, build::arp_request(mac(1), spa, tpa));
        assert_eq!(v, Verdict::Drop(DropReason::ArpNotProxied), "ARP {spa} -> {tpa}");
    }
    let mut bad = build::arp_request(mac(1), a1_ip(), gw());
    bad[19] = 16; // protocol address length
    assert_eq!(lab.run(A1, bad).0, Verdict::Drop(DropReason::InvalidArp));
    let short = build::arp_request(mac(1), a1_ip(), gw())[..30].to_vec();
    assert_eq!(lab.run(A1, short).0, Verdict::Drop(DropReason::InvalidArp));
}

#[test]
fn neighbour_solicitation_gets_an_advertisement() {
    let mut lab = Lab::new();
    let (v, out) = lab.run(A1, build::neighbor_solicit(mac(1), a1_ip6(), gw6()));
    assert_eq!(v, Verdict::Tx(A1));
    let ip = Ipv6HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.source_addr(), gw6());
    assert_eq!(ip.destination_addr(), a1_ip6());
    assert_eq!(ip.hop_limit(), 255);
    assert_eq!(ip.next_header().0, ip_proto::ICMPV6);
    let icmp = &out[54..];
    assert_eq!(icmp.len(), 32);
    assert_eq!(icmp[0], 136, "neighbour advertisement");
    assert_eq!(icmp[4] & 0xe0, 0xe0, "router, solicited, override");
    assert_eq!(&icmp[8..24], &gw6().octets());
    assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&icmp[26..32], &router_mac().0);
    // Checksum over the pseudo-header, computed independently.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&gw6().octets());
    pseudo.extend_from_slice(&a1_ip6().octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(inet_checksum(&pseudo), 0);
    assert_eq!(lab.stats().vrf(BLUE).nd_proxies, 1);
    // Duplicate address detection and unrouted targets are not answered.
    let dad = build::neighbor_solicit(mac(1), Ipv6Addr::UNSPECIFIED, a1_ip6());
    assert_eq!(lab.run(A1, dad).0, Verdict::Drop(DropReason::NdNotProxied));
    let unrouted = build::neighbor_solicit(mac(1), a1_ip6(), "fd00:9::1".parse().unwrap());
    assert_eq!(lab.run(A1, unrouted).0, Verdict::Drop(DropReason::NdNotProxied));
    let mut hop = build::neighbor_solicit(mac(1), a1_ip6(), gw6());
    hop[21] = 64; // hop limit must be 255
    assert_eq!(lab.run(A1, hop).0, Verdict::Drop(DropReason::InvalidNd));
}

#[test]
fn ttl_expiry_sends_icmp_time_exceeded_to_the_sender() {
    let mut lab = Lab::new();
    let input = udp_from_a1(remote_ip(), 33434, 1);
    let (v, out) = lab.run(A1, input.clone());
    assert_eq!(v, Verdict::Tx(A1));
    assert_eq!(&out[0..6], &mac(1).0);
    let ip = ipv4_of(&out);
    assert_ipv4_checksum(&ip);
    assert_eq!(ip.source_addr(), gw());
    assert_eq!(ip.destination_addr(), a1_ip());
    assert_eq!(ip.protocol().0, ip_proto::ICMP);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (11, 0), "time exceeded in transit");
    assert_eq!(inet_checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[8..], &input[14..], "quotes the whole small packet");
    assert_eq!(lab.stats().dropped(DropReason::TtlExceeded), 1);
    assert_eq!(lab.stats().vrf(BLUE).icmp_errors, 1);
    // IPv6: ICMPv6 type 3.
    let input6 = build::udp6_frame(from_a1(), a1_ip6(), "fd00:2::7".parse().unwrap(), 1, 2, 1, 90);
    let (v, out) = lab.run(A1, input6);
    assert_eq!(v, Verdict::Tx(A1));
    let ip = Ipv6HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!((ip.source_addr(), ip.destination_addr()), (gw6(), a1_ip6()));
    assert_eq!(out[54], 3);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut lab = Lab::new();
    let mut icmp = vec![11u8, 0, 0, 0, 0, 0, 0, 0];
    let c = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let ip = build::ipv4(a1_ip(), remote_ip(), ip_proto::ICMP, 1, false, &icmp);
    let (v, _) = lab.run(A1, build::ip_frame(from_a1(), &ip));
    assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
}

#[test]
fn encap_mpls_over_udp_matches_the_wire_format() {
    let mut lab = Lab::new();
    let input = udp_from_a1(remote_ip(), 40000, 64);
    let (v, out) = lab.run(A1, input.clone());
    assert_eq!(v, Verdict::Tx(FABRIC));
    assert_eq!(out.len(), input.len() + 32, "outer IPv4 + UDP + MPLS, Ethernet reused");
    let eth = Ethernet2HeaderSlice::from_slice(&out).unwrap();
    assert_eq!((eth.source(), eth.destination()), (fabric_mac().0, peer_mac(1).0));
    let ip = ipv4_of(&out);
    assert_ipv4_checksum(&ip);
    assert_eq!((ip.source_addr(), ip.destination_addr()), (node_ip(), peer(1)));
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.protocol().0, ip_proto::UDP);
    assert!(!ip.dont_fragment());
    assert_eq!(ip.identification(), 0x1234, "inner IPv4 ID copied");
    assert_eq!(usize::from(ip.total_len()), out.len() - 14);
    let udp = UdpHeaderSlice::from_slice(&out[34..]).unwrap();
    assert_eq!(udp.destination_port(), 6635);
    assert!(udp.source_port() >= 49152);
    assert_eq!(udp.checksum(), 0);
    assert_eq!(usize::from(udp.length()), out.len() - 34);
    assert_eq!(mpls_at(&out, 42), (40, 0, true, 63), "label from the route, S=1, inner TTL");
    let inner = Ipv4HeaderSlice::from_slice(&out[46..]).unwrap();
    assert_eq!(inner.ttl(), 63);
    assert_ipv4_checksum(&inner);
    assert_eq!(&out[46 + 20..], &input[34..]);
    assert_eq!(lab.stats().vrf(BLUE).udp_mpls_tunnels, 1);
    assert_eq!(lab.stats().vif(FABRIC).tx_packets, 1);
}

#[test]
fn encap_mpls_over_gre_matches_the_wire_format() {
    let mut lab = Lab::new();
    let input = udp_from_a1(gre_remote_ip(), 40000, 64);
    let (v, out) = lab.run(A1, input.clone());
    assert_eq!(v, Verdict::Tx(FABRIC));
    assert_eq!(out.len(), input.len() + 28);
    let ip = ipv4_of(&out);
    assert_ipv4_checksum(&ip);
    assert_eq!(ip.protocol().0, ip_proto::GRE);
    assert_eq!(ip.ttl(), 64);
    assert_eq!(&out[34..38], &[0, 0, 0x88, 0x47], "GRE: no flags, version 0, MPLS unicast");
    assert_eq!(mpls_at(&out, 38), (41, 0, true, 63));
    assert_eq!(lab.stats().vrf(BLUE).gre_mpls_tunnels, 1);
}

#[test]
fn a_tunnel_route_without_label_is_dropped() {
    let mut lab = Lab::new();
    let (v, _) = lab.run(A1, udp_from_a1(Ipv4Addr::new(10, 88, 0, 1), 1, 64));
    assert_eq!(v, Verdict::Drop(DropReason::InvalidLabel));
}

#[test]
fn udp_source_port_follows_the_flow() {
    let mut lab = Lab::new();
    let sport_of = |lab: &mut Lab, p: u16| {
        let (_, out) = lab.run(A1, udp_from_a1(remote_ip(), p, 64));
        UdpHeaderSlice::from_slice(&out[34..]).unwrap().source_port()
    };
    let first: Vec<u16> = (0..200).map(|p| sport_of(&mut lab, 1000 + p)).collect();
    let again: Vec<u16> = (0..200).map(|p| sport_of(&mut lab, 1000 + p)).collect();
    assert_eq!(first, again, "stable per flow");
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert!(distinct.len() > 180, "spread over flows: {} distinct of 200", distinct.len());
    assert!(first.iter().all(|&p| p >= 49152));
}

fn ecmp_member_of(lab: &mut Lab, sport: u16) -> Ipv4Addr {
    let (v, out) = lab.run(A1, udp_from_a1(service_ip(), sport, 64));
    assert_eq!(v, Verdict::Tx(FABRIC));
    ipv4_of(&out).destination_addr()
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_its_member() {
    let mut lab = Lab::new();
    let picks: Vec<Ipv4Addr> = (0..3000).map(|p| ecmp_member_of(&mut lab, p)).collect();
    for n in 1..=3 {
        let share = picks.iter().filter(|&&a| a == peer(n)).count();
        assert!((800..1200).contains(&share), "member {n} got {share} of 3000 flows");
    }
    assert_eq!(picks, (0..3000).map(|p| ecmp_member_of(&mut lab, p)).collect::<Vec<_>>(), "stable");
    // The member's own label goes on the wire.
    let (_, out) = lab.run(A1, udp_from_a1(service_ip(), 7, 64));
    let label = mpls_at(&out, 42).0;
    let dst = ipv4_of(&out).destination_addr();
    let want = [(peer(1), 100), (peer(2), 101), (peer(3), 102)];
    assert!(want.contains(&(dst, label)), "{dst} with label {label}");
}

#[test]
fn removing_an_ecmp_member_moves_only_its_flows() {
    let mut lab = Lab::new();
    let before: Vec<Ipv4Addr> = (0..3000).map(|p| ecmp_member_of(&mut lab, p)).collect();
    let members = vec![RouteTarget { nh: 10, label: 100 }, RouteTarget { nh: 13, label: 102 }];
    lab.writer.apply(&[Op::Update(Object::NextHop(NH_ECMP, NextHop::Composite(EcmpGroup::new(members))))]).unwrap();
    let after: Vec<Ipv4Addr> = (0..3000).map(|p| ecmp_member_of(&mut lab, p)).collect();
    for (b, a) in before.iter().zip(&after) {
        if *b != peer(2) {
            assert_eq!(b, a, "a flow on a surviving member moved");
        } else {
            assert_ne!(*a, peer(2));
        }
    }
    // Adding one back moves about a third of the flows, all to it.
    let members = vec![
        RouteTarget { nh: 10, label: 100 },
        RouteTarget { nh: 13, label: 102 },
        RouteTarget { nh: 12, label: 101 },
    ];
    lab.writer.apply(&[Op::Update(Object::NextHop(NH_ECMP, NextHop::Composite(EcmpGroup::new(members))))]).unwrap();
    let again: Vec<Ipv4Addr> = (0..3000).map(|p| ecmp_member_of(&mut lab, p)).collect();
    let moved = after.iter().zip(&again).filter(|(a, b)| a != b).count();
    assert!(after.iter().zip(&again).all(|(a, b)| a == b || *b == peer(2)));
    assert!((800..1200).contains(&moved), "adding a third member moved {moved} of 3000");
}

fn tunnel_frame(tunnel: Tunnel, dst: Ipv4Addr, label: u32, mpls_ttl: u8, inner: &[u8]) -> Vec<u8> {
    build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), dst, label, mpls_ttl, 50000, inner)
}

fn inner_from_remote(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), dst, 5000, 80, ttl, 64)[14..].to_vec()
}

#[test]
fn decap_delivers_by_label_over_udp_legacy_udp_and_gre() {
    let mut lab = Lab::new();
    for tunnel in [Tunnel::Udp(6635), Tunnel::Udp(51234), Tunnel::Gre] {
        let inner = inner_from_remote(a2_ip(), 60);
        let (v, out) = lab.run(FABRIC, tunnel_frame(tunnel, node_ip(), LABEL_A2, 64, &inner));
        assert_eq!(v, Verdict::Tx(A2), "{tunnel:?}");
        assert_eq!(out.len(), 14 + inner.len());
        let eth = Ethernet2HeaderSlice::from_slice(&out).unwrap();
        assert_eq!((eth.source(), eth.destination()), (router_mac().0, mac(2).0));
        assert_eq!(eth.ether_type(), etherparse::EtherType::IPV4);
        let ip = ipv4_of(&out);
        assert_eq!(ip.ttl(), 59);
        assert_ipv4_checksum(&ip);
        assert_eq!(&out[34..], &inner[20..]);
    }
    assert_eq!(lab.stats().vrf(BLUE).decaps, 3);
}

#[test]
fn decap_to_a_vrf_label_routes_the_inner_packet() {
    let mut lab = Lab::new();
    let inner = inner_from_remote(a1_ip(), 60);
    let (v, out) = lab.run(FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_BLUE, 64, &inner));
    assert_eq!(v, Verdict::Tx(A1));
    assert_eq!(&out[0..6], &mac(1).0);
    let inner6 =
        build::udp6_frame(L2 { src: mac(9), dst: mac(9) }, "fd00:2::5".parse().unwrap(), a2_ip6(), 1, 2, 9, 90);
    let (v, out) = lab.run(FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), LABEL_BLUE, 64, &inner6[14..]));
    assert_eq!(v, Verdict::Tx(A2));
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    assert_eq!(Ipv6HeaderSlice::from_slice(&out[14..]).unwrap().hop_limit(), 8);
}

#[test]
fn isolation_same_address_in_two_vrfs() {
    let mut lab = Lab::new();
    // 10.1.0.2 is a1 in blue and r1 in red; the label decides which.
    let inner = inner_from_remote(a1_ip(), 60);
    assert_eq!(lab.run(FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner)).0, Verdict::Tx(A1));
    assert_eq!(lab.run(FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_R1, 64, &inner)).0, Verdict::Tx(R1));
    // r1 cannot reach blue's pods or remote networks: red has no route.
    let from_r1 = L2 { src: mac(3), dst: router_mac() };
    for dst in [a2_ip(), remote_ip(), service_ip()] {
        let (v, _) = lab.run(R1, build::udp4_frame(from_r1, a1_ip(), dst, 1, 2, 64, 64));
        assert_eq!(v, Verdict::Drop(DropReason::NoRoute), "red to {dst}");
    }
    // And red's ARP proxy does not answer for blue's addresses.
    let (v, _) = lab.run(R1, build::arp_request(mac(3), a1_ip(), a2_ip()));
    assert_eq!(v, Verdict::Drop(DropReason::ArpNotProxied));
    assert_eq!(lab.stats().vrf(RED).discards, 3);
}

#[test]
fn decap_drops_each_fault_with_its_own_reason() {
    let mut lab = Lab::new();
    let inner = inner_from_remote(a1_ip(), 60);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (tunnel_frame(Tunnel::Udp(6635), node_ip(), 999, 64, &inner), DropReason::InvalidLabel),
        (tunnel_frame(Tunnel::Gre, peer(7), LABEL_A1, 64, &inner), DropReason::TunnelNotForUs),
        (tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 1, &inner), DropReason::TtlExceeded),
        (
            {
                let mut f = tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner);
                f[40] &= !1; // clear bottom-of-stack
                f
            },
            DropReason::BadTunnelHeader,
        ),
        (
            {
                let mut f = tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner);
                f[34] = 0x20; // key present
                f
            },
            DropReason::BadTunnelHeader,
        ),
        (
            {
                let mut f = tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner);
                f[24] ^= 0xff; // outer checksum
                f
            },
            DropReason::ChecksumError,
        ),
        (tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner)[..40].to_vec(), DropReason::Truncated),
        (tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &[0x11; 30]), DropReason::InvalidProtocol),
    ];
    for (frame, want) in cases {
        assert_eq!(lab.run(FABRIC, frame).0, Verdict::Drop(want));
        assert!(lab.stats().dropped(want) > 0);
    }
}

#[test]
fn other_fabric_traffic_goes_to_the_host() {
    let mut lab = Lab::new();
    let ssh = build::tcp4_syn_frame(from_peer(), peer(1), node_ip(), 40000, 22, 1460);
    let arp = build::arp_request(peer_mac(1), peer(1), node_ip());
    let v6 = build::udp6_frame(from_peer(), "fe80::2".parse().unwrap(), "fe80::1".parse().unwrap(), 1, 2, 64, 90);
    let vxlan = build::udp4_frame(from_peer(), peer(1), node_ip(), 1, 4789, 64, 90);
    for f in [ssh, arp, v6, vxlan] {
        assert_eq!(lab.run(FABRIC, f).0, Verdict::ToHost);
    }
    assert_eq!(lab.stats().to_host, 4);
}

fn big_frame(dst: Ipv4Addr, len: usize, df: bool) -> Vec<u8> {
    let data = vec![0xab; len - 42];
    let udp = build::udp4_segment(a1_ip(), dst, 1234, 80, &data);
    build::ip_frame(from_a1(), &build::ipv4(a1_ip(), dst, ip_proto::UDP, 64, df, &udp))
}

#[test]
fn too_big_with_df_gets_fragmentation_needed_with_the_tunnel_mtu() {
    let mut lab = Lab::new();
    let (v, out) = lab.run(A1, big_frame(remote_ip(), 1514, true));
    assert_eq!(v, Verdict::Tx(A1));
    let ip = ipv4_of(&out);
    assert_eq!((ip.source_addr(), ip.destination_addr()), (gw(), a1_ip()));
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1500 - 32, "fabric MTU less MPLS-over-UDP overhead");
    assert_eq!(inet_checksum(icmp), 0);
    assert!(out.len() <= 14 + 576);
    assert_eq!(lab.stats().dropped(DropReason::MtuExceeded), 1);
    // A packet that fits after encapsulation passes.
    let (v, _) = lab.run(A1, big_frame(remote_ip(), 14 + 1468, true));
    assert_eq!(v, Verdict::Tx(FABRIC));
    // IPv6 gets Packet Too Big with the GRE path's MTU.
    let data = vec![0u8; 1500 - 48];
    let dst6: Ipv6Addr = "fd00:2::9".parse().unwrap();
    let udp = build::udp6_segment(a1_ip6(), dst6, 1, 2, &data);
    let (v, out) = lab.run(A1, build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), dst6, ip_proto::UDP, 64, &udp)));
    assert_eq!(v, Verdict::Tx(A1));
    assert_eq!(out[54], 2, "packet too big");
    assert_eq!(u32::from_be_bytes([out[58], out[59], out[60], out[61]]), 1468);
    assert!(out.len() - 14 <= 1280, "fits the IPv6 minimum MTU");
}

#[test]
fn df_clear_packets_are_fragmented_then_encapsulated() {
    let mut lab = Lab::new();
    let input = big_frame(remote_ip(), 3014, false);
    let (frames, extra) = lab.run_with(&[(A1, input.clone())], 4);
    let all: Vec<&[u8]> = std::iter::once(frames[0].data()).chain(extra.iter().map(|f| f.data())).collect();
    assert_eq!(frames[0].verdict, Verdict::Tx(FABRIC));
    assert!(extra.iter().all(|f| f.verdict == Verdict::Tx(FABRIC)));
    assert_eq!(all.len(), 3, "3000 bytes of IP over a 1468-byte path");
    let mut payload = vec![];
    let mut pieces: Vec<(u16, bool, Vec<u8>)> = vec![];
    for f in &all {
        assert!(f.len() - 14 <= 1500, "each outer packet fits the fabric MTU");
        let outer = ipv4_of(f);
        assert_ipv4_checksum(&outer);
        assert_eq!(mpls_at(f, 42).0, 40);
        let inner = Ipv4HeaderSlice::from_slice(&f[46..]).unwrap();
        assert_ipv4_checksum(&inner);
        assert_eq!(inner.ttl(), 63);
        assert_eq!(inner.identification(), 0x1234);
        let off = inner.fragments_offset().byte_offset();
        pieces.push((off, inner.more_fragments(), f[46 + 20..46 + usize::from(inner.total_len())].to_vec()));
    }
    pieces.sort_by_key(|p| p.0);
    for (i, (off, more, data)) in pieces.iter().enumerate() {
        assert_eq!(usize::from(*off), payload.len(), "fragments are contiguous");
        assert_eq!(*more, i + 1 < pieces.len());
        payload.extend_from_slice(data);
    }
    assert_eq!(payload, input[34..].to_vec(), "reassembles to the original payload");
    assert_eq!(lab.stats().vrf(BLUE).fragments, 2);
    // Without spare buffers, fragmenting fails with its own reason.
    let (frames, _) = lab.run_with(&[(A1, input)], 0);
    assert_eq!(frames[0].verdict, Verdict::Drop(DropReason::FragmentError));
}

fn mss_of(frame: &[u8], tcp_at: usize) -> u16 {
    u16::from_be_bytes([frame[tcp_at + 22], frame[tcp_at + 23]])
}

fn tcp_checksum_ok(src: [u8; 4], dst: [u8; 4], seg: &[u8]) -> bool {
    transport_checksum_v4(src, dst, 6, seg) == 0
}

#[test]
fn tcp_syn_mss_is_clamped_to_fit_the_tunnel() {
    let mut lab = Lab::new();
    let syn = build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 40000, 443, 1460);
    let (v, out) = lab.run(A1, syn);
    assert_eq!(v, Verdict::Tx(FABRIC));
    assert_eq!(mss_of(&out, 46 + 20), 1500 - 32 - 40);
    assert!(tcp_checksum_ok(a1_ip().octets(), remote_ip().octets(), &out[66..]));
    // A small MSS is left alone.
    let syn = build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 40000, 443, 1200);
    assert_eq!(mss_of(&lab.run(A1, syn).1, 66), 1200);
    // A SYN arriving through a tunnel for a local pod is clamped too.
    let syn = build::tcp4_syn_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), a2_ip(), 40000, 80, 1460);
    let (v, out) = lab.run(FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A2, 64, &syn[14..]));
    assert_eq!(v, Verdict::Tx(A2));
    assert_eq!(mss_of(&out, 34), 1428);
    assert!(tcp_checksum_ok(remote_ip().octets(), a2_ip().octets(), &out[34..]));
    // Pod to pod on the node is not clamped.
    let syn = build::tcp4_syn_frame(from_a1(), a1_ip(), a2_ip(), 40000, 80, 1460);
    assert_eq!(mss_of(&lab.run(A1, syn).1, 34), 1460);
}

#[test]
fn mss_clamp_can_be_turned_off_per_vif() {
    let mut lab = Lab::new();
    let mut a1 = lab.handle.load().vif(A1).unwrap().clone();
    a1.flags.mss_clamp = false;
    lab.writer.apply(&[Op::Update(Object::Vif(a1))]).unwrap();
    let syn = build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 40000, 443, 1460);
    assert_eq!(mss_of(&lab.run(A1, syn).1, 66), 1460);
}

#[test]
fn control_packets_from_pods_are_trapped_to_the_agent() {
    let mut lab = Lab::new();
    let dhcp = build::udp4_frame(from_a1(), Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, 64, 300);
    assert_eq!(lab.run(A1, dhcp).0, Verdict::ToAgent(TrapReason::Dhcp));
    let dhcp6 =
        build::udp6_frame(from_a1(), "fe80::2".parse().unwrap(), "ff02::1:2".parse().unwrap(), 546, 547, 1, 100);
    assert_eq!(lab.run(A1, dhcp6).0, Verdict::ToAgent(TrapReason::Dhcpv6));
    let mut rs = vec![133u8, 0, 0, 0, 0, 0, 0, 0];
    let (src, dst): (Ipv6Addr, Ipv6Addr) = ("fe80::2".parse().unwrap(), "ff02::2".parse().unwrap());
    let mut pseudo = [src.octets().to_vec(), dst.octets().to_vec(), vec![0, 0, 0, 8, 0, 0, 0, 58], rs.clone()].concat();
    let c = inet_checksum(&pseudo);
    rs[2..4].copy_from_slice(&c.to_be_bytes());
    pseudo.clear();
    let (v, _) = lab.run(A1, build::ip_frame(from_a1(), &build::ipv6(src, dst, ip_proto::ICMPV6, 255, &rs)));
    assert_eq!(v, Verdict::ToAgent(TrapReason::RouterSolicit));
    assert_eq!(lab.stats().to_agent, 3);
}

#[test]
fn packets_to_the_gateway_go_to_the_host() {
    let mut lab = Lab::new();
    assert_eq!(lab.run(A1, udp_from_a1(gw(), 1, 64)).0, Verdict::ToHost);
    assert_eq!(lab.stats().vrf(BLUE).receives, 1);
}

/// The whole TCP or UDP pseudo-header (`proto`) of a segment of `len`
/// bytes, `pseudo` being its source and destination addresses.
fn pseudo_header(pseudo: &[u8], v6: bool, proto: u8, len: u16) -> Vec<u8> {
    let mut head = pseudo.to_vec();
    if v6 {
        head.extend_from_slice(&u32::from(len).to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        head.extend_from_slice(&[0, proto]);
        head.extend_from_slice(&len.to_be_bytes());
    }
    head
}

/// A TCP segment from a pod with flags `flags`, whose checksum field is
/// right, or (`unfinished`) holds only the pseudo-header's sum, folded and
/// not complemented, as a Linux pod whose interface offloads TX checksums
/// leaves it for the NIC. `pseudo` is the two addresses, for
/// `pseudo_header`; checksums by the tests' own `inet_checksum`.
fn tcp_segment(pseudo: &[u8], v6: bool, flags: u8, unfinished: bool) -> Vec<u8> {
    let mut seg = vec![0u8; 24];
    seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
    seg[2..4].copy_from_slice(&80u16.to_be_bytes());
    seg[12] = 6 << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    seg[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let head = pseudo_header(pseudo, v6, ip_proto::TCP, seg.len() as u16);
    let c = if unfinished { !inet_checksum(&head) } else { inet_checksum(&[head.as_slice(), &seg].concat()) };
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    seg
}

fn tcp_from_a1(flags: u8, unfinished: bool) -> Vec<u8> {
    let pseudo = [a1_ip().octets(), a2_ip().octets()].concat();
    let seg = tcp_segment(&pseudo, false, flags, unfinished);
    build::ip_frame(from_a1(), &build::ipv4(a1_ip(), a2_ip(), ip_proto::TCP, 64, true, &seg))
}

/// A pod whose interface offloads TX checksums sends every segment with
/// its checksum unfinished, and AF_XDP does not say so: its connections
/// would hang while ping works. Its SYN is dropped as `unfinished_checksum`
/// and counted against its vif, which the log names; a SYN wrong otherwise is a
/// `checksum_error`; other segments are not summed.
#[test]
fn a_pods_syn_with_a_checksum_left_for_the_nic_is_dropped_and_its_vif_named() {
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_SYN};
    let mut lab = Lab::new();
    assert_eq!(lab.run(A1, tcp_from_a1(FLAG_SYN, false)).0, Verdict::Tx(A2), "a finished SYN goes");
    assert_eq!(lab.stats().vif_drops(A1)[DropReason::UnfinishedChecksum as usize], 0);

    let (v, _) = lab.run(A1, tcp_from_a1(FLAG_SYN, true));
    assert_eq!(v, Verdict::Drop(DropReason::UnfinishedChecksum));
    assert_eq!(lab.stats().vif_drops(A1)[DropReason::UnfinishedChecksum as usize], 1, "counted against a1");
    assert_eq!(lab.stats().vif(A1).rx_errors, 1, "malformed input from the pod");
    // A SYN-ACK too: a pod that serves.
    let (v, _) = lab.run(A1, tcp_from_a1(FLAG_SYN | FLAG_ACK, true));
    assert_eq!(v, Verdict::Drop(DropReason::UnfinishedChecksum));

    let mut corrupt = tcp_from_a1(FLAG_SYN, false);
    corrupt[14 + 20 + 17] ^= 0x01;
    assert_eq!(lab.run(A1, corrupt).0, Verdict::Drop(DropReason::ChecksumError));
    assert_eq!(lab.stats().dropped(DropReason::UnfinishedChecksum), 2);

    // IPv6, with its own pseudo-header.
    let pseudo6 = [a1_ip6().octets(), a2_ip6().octets()].concat();
    let syn6 = |unfinished| {
        let seg = tcp_segment(&pseudo6, true, FLAG_SYN, unfinished);
        build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), a2_ip6(), ip_proto::TCP, 64, &seg))
    };
    assert_eq!(lab.run(A1, syn6(false)).0, Verdict::Tx(A2));
    assert_eq!(lab.run(A1, syn6(true)).0, Verdict::Drop(DropReason::UnfinishedChecksum));

    // The rest of a connection is not summed, on either path: it goes on
    // as it came, for the receiver to judge.
    for fast in [true, false] {
        let mut lab = Lab::new();
        lab.pipeline =
            Pipeline::new(PipelineConfig { fast_path: fast, ..PipelineConfig::default() }, lab.handle.load().limits());
        let (v, out) = lab.run(A1, tcp_from_a1(FLAG_ACK, true));
        assert_eq!(v, Verdict::Tx(A2), "fast path {fast}");
        assert_eq!(out[14 + 20 + 16..14 + 20 + 18], tcp_from_a1(FLAG_ACK, true)[14 + 20 + 16..14 + 20 + 18]);
    }
}

/// A UDP datagram from a pod (`payload` after an 8-byte header, from
/// port `sport` to 53) whose checksum field holds `check`, or, where that
/// is `None`, the right checksum. `pseudo` as for `tcp_segment`.
fn udp_segment(pseudo: &[u8], v6: bool, sport: u16, payload: &[u8], check: Option<u16>) -> Vec<u8> {
    let mut seg = [&sport.to_be_bytes()[..], &53u16.to_be_bytes(), &[0; 4], payload].concat();
    let len = seg.len() as u16;
    seg[4..6].copy_from_slice(&len.to_be_bytes());
    let head = pseudo_header(pseudo, v6, ip_proto::UDP, len);
    let c = check.unwrap_or_else(|| inet_checksum(&[head.as_slice(), &seg].concat()));
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    seg
}

/// The pod that offloads TX checksums sends its UDP datagrams unfinished
/// too: the field holds the pseudo-header's sum, folded, not complemented,
/// so its DNS lookups time out. Those that would open a flow in a VRF that
/// tracks flows are dropped as `unfinished_checksum`, against the vif. A
/// datagram is summed only where its field holds what such a pod leaves
/// there, so a right checksum that happens to be equal passes, and other
/// mismatches are the receiver's.
#[test]
fn a_pods_udp_datagram_with_a_checksum_left_for_the_nic_is_dropped_where_it_opens_a_flow() {
    use vrouter::flow::{FlowConfig, FlowTable, Policy};
    let pseudo = [a1_ip().octets(), a2_ip().octets()].concat();
    let to_a2 = |seg: &[u8]| build::ip_frame(from_a1(), &build::ipv4(a1_ip(), a2_ip(), ip_proto::UDP, 64, true, seg));
    let query = b"a DNS query, or as long as one";
    let len = 8 + query.len() as u16;
    let left_for_the_nic = !inet_checksum(&pseudo_header(&pseudo, false, ip_proto::UDP, len));
    let unfinished = |sport| to_a2(&udp_segment(&pseudo, false, sport, query, Some(left_for_the_nic)));

    // Untracked, the fast path takes it, unlooked at: no cost there.
    let mut lab = Lab::new();
    assert_eq!(lab.run(A1, unfinished(5353)).0, Verdict::Tx(A2), "the fast path does not sum");

    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, Policy::allow_all()))]).unwrap();
    lab.pipeline.set_flows(Some(std::sync::Arc::new(FlowTable::new(FlowConfig::default(), 64, 16))));
    let (v, _) = lab.run(A1, unfinished(5353));
    assert_eq!(v, Verdict::Drop(DropReason::UnfinishedChecksum), "it would open a flow");
    assert_eq!(lab.stats().vif_drops(A1)[DropReason::UnfinishedChecksum as usize], 1, "counted against a1");
    assert_eq!(lab.stats().vif(A1).rx_errors, 1, "malformed input from the pod");
    assert_eq!(lab.run(A1, unfinished(5353)).0, Verdict::Drop(DropReason::UnfinishedChecksum), "and made none");

    // A right checksum goes, and one that is wrong some other way (or
    // absent: zero in IPv4) is left to the receiver. Each its own flow.
    let right = udp_segment(&pseudo, false, 5354, query, None);
    let mut corrupt = udp_segment(&pseudo, false, 5355, query, None);
    corrupt[7] ^= 0x01;
    let none = udp_segment(&pseudo, false, 5356, query, Some(0));
    for (seg, what) in [(right, "right"), (corrupt, "corrupt"), (none, "none")] {
        assert_eq!(lab.run(A1, to_a2(&seg)).0, Verdict::Tx(A2), "{what}");
    }
    // A right checksum equal to what an offloading pod leaves: two payload
    // bytes chosen to make the sum come out right with that field.
    let mut payload = query.to_vec();
    payload[0..2].fill(0);
    let zeroed = udp_segment(&pseudo, false, 5357, &payload, Some(left_for_the_nic));
    payload[0..2].copy_from_slice(
        &inet_checksum(&[pseudo_header(&pseudo, false, ip_proto::UDP, len), zeroed].concat()).to_be_bytes(),
    );
    let coincident = udp_segment(&pseudo, false, 5357, &payload, Some(left_for_the_nic));
    assert_eq!(udp_segment(&pseudo, false, 5357, &payload, None), coincident, "the right checksum is that field");
    assert_eq!(lab.run(A1, to_a2(&coincident)).0, Verdict::Tx(A2), "summed, and right");
    assert_eq!(lab.stats().dropped(DropReason::UnfinishedChecksum), 2);

    // IPv6, with its own pseudo-header.
    let pseudo6 = [a1_ip6().octets(), a2_ip6().octets()].concat();
    let udp6 = |sport, check| {
        let seg = udp_segment(&pseudo6, true, sport, query, check);
        build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), a2_ip6(), ip_proto::UDP, 64, &seg))
    };
    let left_for_the_nic6 = !inet_checksum(&pseudo_header(&pseudo6, true, ip_proto::UDP, len));
    assert_eq!(lab.run(A1, udp6(5353, Some(left_for_the_nic6))).0, Verdict::Drop(DropReason::UnfinishedChecksum));
    assert_eq!(lab.run(A1, udp6(5354, None)).0, Verdict::Tx(A2));
}

/// A pod's MLDv2 report (ICMPv6 143 behind a Hop-by-Hop header with a
/// router alert) from `src`, as Linux sends them when an interface comes up.
fn mld_report_from_a1(src: std::net::Ipv6Addr) -> Vec<u8> {
    let hop_by_hop = [ip_proto::ICMPV6, 0, 5, 2, 0, 0, 1, 0];
    let mut report = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
    report.extend_from_slice(&"ff02::1:ff00:11".parse::<std::net::Ipv6Addr>().unwrap().octets());
    let dst = "ff02::16".parse().unwrap();
    build::ip_frame(from_a1(), &build::ipv6(src, dst, 0, 1, &[&hop_by_hop[..], &report].concat()))
}

/// What a pod sends over IPv6 to its own link alone (MLD reports when
/// its interface comes up, mDNS) no router forwards. It is dropped as
/// `link_local`, not as `no_route`, so that this chatter does not look like
/// a routing fault in `dropstats`; before the source check, since a pod's
/// first MLD reports come from the unspecified address. IPv4's (IGMP
/// reports, mDNS, the limited broadcast) is told apart once its lookup
/// has missed. Multicast of wider scope, with no route, is still
/// `no_route`.
#[test]
fn a_pods_link_local_chatter_is_told_apart_from_a_missing_route() {
    let link_local = Verdict::Drop(DropReason::LinkLocal);
    let mut lab = Lab::new();
    for src in ["fe80::ff:fe00:11", "::"] {
        assert_eq!(lab.run(A1, mld_report_from_a1(src.parse().unwrap())).0, link_local, "MLD from {src}");
    }
    let to = |dst: &str| {
        let udp =
            build::ipv6(a1_ip6(), dst.parse().unwrap(), ip_proto::UDP, 255, &[0x14, 0xe9, 0x14, 0xe9, 0, 8, 0, 0]);
        build::ip_frame(from_a1(), &udp)
    };
    assert_eq!(lab.run(A1, to("ff02::fb")).0, link_local, "mDNS");
    assert_eq!(lab.run(A1, to("ff01::1")).0, link_local, "interface-local");
    assert_eq!(lab.run(A1, to("ff05::1:3")).0, Verdict::Drop(DropReason::NoRoute), "site-local: no route");
    let v4 = |dst: [u8; 4], proto, payload: &[u8]| {
        build::ip_frame(from_a1(), &build::ipv4(a1_ip(), Ipv4Addr::from(dst), proto, 1, false, payload))
    };
    let igmp = v4([224, 0, 0, 22], 2, &[0x22, 0, 0xfa, 0xfd, 0, 0, 0, 0]);
    assert_eq!(lab.run(A1, igmp).0, link_local, "IGMPv3 report");
    let udp = [0x14, 0xe9, 0x14, 0xe9, 0, 8, 0, 0];
    assert_eq!(lab.run(A1, v4([224, 0, 0, 251], ip_proto::UDP, &udp)).0, link_local, "IPv4 mDNS");
    assert_eq!(lab.run(A1, v4([255; 4], ip_proto::UDP, &udp)).0, link_local, "limited broadcast");
    let no_route = Verdict::Drop(DropReason::NoRoute);
    assert_eq!(lab.run(A1, v4([239, 255, 255, 250], ip_proto::UDP, &udp)).0, no_route, "SSDP: wider scope");
    assert_eq!(lab.run(A1, v4([224, 0, 1, 1], ip_proto::UDP, &udp)).0, no_route, "NTP's group: wider scope");
    assert_eq!(lab.stats().dropped(DropReason::LinkLocal), 7);
    assert_eq!(lab.stats().vif(A1).rx_errors, 0, "not malformed: chatter");
    assert_eq!(lab.stats().vrf(BLUE).discards, 10, "discarded in the pod's VRF, as a missing route is");
}

/// Every drop reason, produced by a frame, and counted.
#[test]
fn every_drop_reason_is_reachable_and_counted() {
    let mut lab = Lab::new();
    let mut bad_sum = udp_from_a1(a2_ip(), 1, 64);
    bad_sum[24] ^= 0x55;
    let mut bad_version = udp_from_a1(a2_ip(), 1, 64);
    bad_version[14] = 0x35;
    let mut unknown_type = udp_from_a1(a2_ip(), 1, 64);
    unknown_type[12..14].copy_from_slice(&[0x88, 0xb5]);
    let inner = inner_from_remote(a1_ip(), 60);
    let mut bad_gre = tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner);
    bad_gre[35] = 1; // version 1
    let mut outer_frag = tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &inner);
    outer_frag[20] = 0x20; // More Fragments
    let sum = {
        outer_frag[24..26].copy_from_slice(&[0, 0]);
        inet_checksum(&outer_frag[14..34])
    };
    outer_frag[24..26].copy_from_slice(&sum.to_be_bytes());
    let loop_frame = build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), a1_ip(), 1, 2, 64, 64);
    let mut cases: Vec<(u32, Vec<u8>, DropReason)> = vec![
        (A1, udp_from_a1(Ipv4Addr::new(10, 66, 1, 1), 1, 64), DropReason::Discard),
        (A1, build::udp4_frame(from_a1(), a2_ip(), remote_ip(), 1, 80, 64, 64), DropReason::InvalidSource),
        (A1, udp_from_a1(Ipv4Addr::new(172, 20, 0, 1), 1, 64), DropReason::NoRoute),
        (A1, mld_report_from_a1("fe80::ff:fe00:11".parse().unwrap()), DropReason::LinkLocal),
        (60, udp_from_a1(a2_ip(), 1, 64), DropReason::InvalidIf),
        (DISABLED, udp_from_a1(a2_ip(), 1, 64), DropReason::IfDrop),
        (A1, udp_from_a1(Ipv4Addr::new(10, 77, 0, 1), 1, 64), DropReason::IfTxDiscard),
        (A1, build::arp_request(mac(1), a1_ip(), gw())[..20].to_vec(), DropReason::InvalidArp),
        (A1, build::arp_request(mac(1), a1_ip(), Ipv4Addr::new(1, 1, 1, 1)), DropReason::ArpNotProxied),
        (A1, build::neighbor_solicit(mac(1), a1_ip6(), "ff02::1".parse().unwrap()), DropReason::InvalidNd),
        (A1, build::neighbor_solicit(mac(1), Ipv6Addr::UNSPECIFIED, gw6()), DropReason::NdNotProxied),
        (A1, unknown_type, DropReason::InvalidProtocol),
        (A1, udp_from_a1(a2_ip(), 1, 64)[..30].to_vec(), DropReason::Truncated),
        (A1, bad_version, DropReason::InvalidPacket),
        (A1, bad_sum, DropReason::ChecksumError),
        (A1, tcp_from_a1(vrouter::wire::tcp::FLAG_SYN, true), DropReason::UnfinishedChecksum),
        (FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), 33, 64, &inner), DropReason::InvalidLabel),
        (FABRIC, bad_gre, DropReason::BadTunnelHeader),
        (FABRIC, tunnel_frame(Tunnel::Gre, peer(5), LABEL_A1, 64, &inner), DropReason::TunnelNotForUs),
        (FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 1, &inner), DropReason::TtlExceeded),
        (A1, big_frame(remote_ip(), 1600, true), DropReason::MtuExceeded),
        (FABRIC, outer_frag, DropReason::FragmentError),
    ];
    // A loop: the loop VRF's default route looks up the loop VRF again.
    lab.writer.apply(&[Op::Add(Object::Label(20, 32))]).unwrap();
    cases.push((FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), 20, 64, &loop_frame[14..]), DropReason::PacketLoop));
    // A next hop that vanished under a label.
    lab.writer.apply(&[Op::Add(Object::NextHop(40, NextHop::Receive)), Op::Add(Object::Label(21, 40))]).unwrap();
    let mut composite_member = vrouter::tables::Tunnel::new(
        FABRIC,
        vrouter::tables::TunnelEncap::MplsOverGre,
        node_ip(),
        peer(1),
        peer_mac(1),
    );
    composite_member.dmac = peer_mac(1);
    lab.writer
        .apply(&[
            Op::Add(Object::NextHop(41, NextHop::Tunnel(composite_member))),
            Op::Add(Object::NextHop(42, NextHop::Composite(EcmpGroup::new(vec![RouteTarget { nh: 41, label: 5 }])))),
            Op::Add(Object::Route(vrouter::tables::RouteSpec {
                network: None,
                vrf: BLUE,
                prefix: "10.55.0.0/16".parse().unwrap(),
                target: RouteTarget { nh: 42, label: RouteTarget::NO_LABEL },
            })),
        ])
        .unwrap();
    // The member turns into a composite after the fact: the data path refuses.
    lab.writer
        .apply(&[Op::Update(Object::NextHop(
            41,
            NextHop::Composite(EcmpGroup::new(vec![RouteTarget { nh: 40, label: 5 }])),
        ))])
        .unwrap();
    cases.push((A1, udp_from_a1(Ipv4Addr::new(10, 55, 0, 1), 1, 64), DropReason::InvalidNh));
    for (vif, frame, want) in &cases {
        let before = lab.stats().dropped(*want);
        let on_vif = |lab: &Lab| (lab.stats().vif_drops(*vif)[*want as usize], lab.stats().vif(*vif).drops);
        let before_on_vif = on_vif(&lab);
        let (v, _) = lab.run(*vif, frame.clone());
        if *want == DropReason::MtuExceeded {
            // The frame itself becomes the ICMP error sent back to the pod.
            assert_eq!(v, Verdict::Tx(A1));
        } else {
            assert_eq!(v, Verdict::Drop(*want), "case {want:?}");
        }
        assert_eq!(lab.stats().dropped(*want), before + 1, "{want:?} counted once");
        let (reason, all) = before_on_vif;
        assert_eq!(on_vif(&lab), (reason + 1, all + 1), "{want:?} counted against vif {vif}");
    }
    // Headroom too small to prepend a tunnel.
    let frame = udp_from_a1(remote_ip(), 1, 64);
    let mut buf = vec![0u8; 20 + frame.len()];
    buf[20..].copy_from_slice(&frame);
    let mut frames = vec![vrouter::pipeline::Frame::new(buf, 20, frame.len(), A1).unwrap()];
    let tables = lab.handle.load();
    lab.pipeline.process(&tables, &mut frames, &mut vrouter::pipeline::Spill::none());
    assert_eq!(frames[0].verdict, Verdict::Drop(DropReason::PushFails));
    let mut seen: Vec<DropReason> = cases.iter().map(|c| c.2).collect();
    seen.push(DropReason::PushFails);
    // Flows: red denies UDP to port 9; a table of two pairs, one per vif.
    use vrouter::flow::{Endpoint, FlowConfig, FlowTable, Policy, PolicyAction, PortRange, Rule};
    let deny9 = Rule {
        src: Endpoint::Any,
        dst: Endpoint::Any,
        proto: Some(17),
        sport: PortRange::ANY,
        dport: PortRange { lo: 9, hi: 9 },
        action: PolicyAction::Deny,
    };
    lab.writer
        .apply(&[
            Op::Add(Object::Policy(RED, Policy { rules: vec![deny9], default: PolicyAction::Allow })),
            Op::Add(Object::Policy(BLUE, Policy::allow_all())),
            Op::Add(Object::Route(vrouter::tables::RouteSpec {
                network: None,
                vrf: RED,
                prefix: "10.9.0.0/16".parse().unwrap(),
                target: RouteTarget { nh: NH_R1, label: RouteTarget::NO_LABEL },
            })),
        ])
        .unwrap();
    let table = std::sync::Arc::new(FlowTable::new(
        FlowConfig { capacity: 2, per_vif: 1, per_vrf: 100, ..FlowConfig::default() },
        64,
        16,
    ));
    lab.pipeline.set_flows(Some(table.clone()));
    let from = |m: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16| {
        build::udp4_frame(L2 { src: mac(m), dst: router_mac() }, src, dst, sport, dport, 64, 64)
    };
    let flow_cases = [
        (R1, from(3, a1_ip(), Ipv4Addr::new(10, 9, 0, 1), 1000, 9), Verdict::Drop(DropReason::FlowActionDrop)),
        (R1, from(3, a1_ip(), Ipv4Addr::new(10, 9, 0, 2), 1000, 10), Verdict::Drop(DropReason::FlowLimit)),
        (A1, from(1, a1_ip(), a2_ip(), 1000, 10), Verdict::Tx(A2)),
        (A2, from(2, a2_ip(), a1_ip(), 2000, 20), Verdict::Drop(DropReason::FlowTableFull)),
        // The answer of a1's flow finds its pair, though the table is full.
        (A2, from(2, a2_ip(), a1_ip(), 10, 1000), Verdict::Tx(A1)),
    ];
    for (vif, frame, want) in flow_cases {
        let (v, _) = lab.run(vif, frame);
        assert_eq!(v, want);
        if let Verdict::Drop(r) = want {
            seen.push(r);
        }
    }
    assert_eq!(table.len(), 2);
    // A floating IP that forwards a port drops what comes to another.
    add_floating_ip(&mut lab);
    let t = lab.handle.load();
    let forward_53 = |i: u32| {
        let mut v = t.vif(i).unwrap().clone();
        v.floating[0].ports = vec![vrouter::tables::PortMap { proto: 17, port: 53, target: 5353 }];
        Op::Update(Object::Vif(v))
    };
    let ops = [forward_53(A1), forward_53(A2)];
    drop(t);
    lab.writer.apply(&ops).unwrap();
    assert_eq!(lab.run(GW, from(9, CLIENT, FIP, 1000, 54)).0, Verdict::Drop(DropReason::PortNotForwarded));
    seen.push(DropReason::PortNotForwarded);
    // Later fragments whose firsts never come: held while there is room,
    // and dropped once they have waited their time.
    use vrouter::pipeline::hold;
    let segment = build::udp4_segment(a1_ip(), a2_ip(), 3000, 30, &[0x77; 900]);
    let later = |ident: u16| ipv4_fragments(from_a1(), a1_ip(), a2_ip(), 17, ident, &segment, 512).remove(1);
    for ident in 0..hold::PER_SENDER as u16 {
        assert_eq!(lab.run(A1, later(ident)).0, Verdict::Held);
    }
    assert_eq!(lab.run(A1, later(999)).0, Verdict::Drop(DropReason::FragmentQueueFull));
    lab.pipeline.set_now(hold::HOLD_MS);
    lab.run_with(&[], 0);
    assert_eq!(lab.stats().dropped(DropReason::NoFragEntry), hold::PER_SENDER as u64);
    seen.extend([DropReason::FragmentQueueFull, DropReason::NoFragEntry]);
    // Counted by the I/O layer before the pipeline sees a frame (a chain of
    // AF_XDP frames too long to put together, which tests/vrouterd.rs
    // sends), through the pipeline's counters.
    lab.pipeline.count_drop(A1, DropReason::FrameTooLong);
    seen.push(DropReason::FrameTooLong);
    for r in DropReason::ALL {
        assert!(seen.contains(r), "no test frame produces {r:?}");
        assert!(lab.stats().dropped(*r) >= 1, "{r:?} was not counted");
    }
    // Drops are charged to the vif they arrived on; malformed ones are errors too.
    assert!(lab.stats().vif(A1).drops >= 10);
    assert!(lab.stats().vif(A1).rx_errors >= 4);
    // Every drop is in some vif's breakdown (`dropstats --vif`), and each
    // vif's breakdown adds up to its drops.
    let stats = lab.stats();
    for r in DropReason::ALL {
        let on_vifs: u64 = (0..64).map(|i| stats.vif_drops(i)[*r as usize]).sum();
        assert_eq!(on_vifs, stats.dropped(*r), "{r:?}");
    }
    for i in [FABRIC, A1, A2, R1, DISABLED] {
        assert_eq!(stats.vif_drops(i).iter().sum::<u64>(), stats.vif(i).drops, "vif {i}");
    }
}

static TICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A clock that moves 7 ticks per reading.
fn seven_ticks() -> u64 {
    TICKS.fetch_add(7, std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn stage_timing_charges_parse_lookup_and_rewrite_and_changes_no_verdict() {
    use vrouter::pipeline::{Frame, Spill};
    use vrouter::stats::runtime::Stopwatch;
    use vrouter::stats::{Runtime, Stage};
    let mut lab = Lab::new();
    let mut frames: Vec<Frame<Vec<u8>>> = (0..40)
        .map(|i| {
            let bytes = udp_from_a1(a2_ip(), 1000 + i, 64);
            let mut buf = vec![0u8; BUF];
            buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(&bytes);
            Frame::new(buf, HEADROOM, bytes.len(), A1).unwrap()
        })
        .collect();
    let mut rt = Runtime::default();
    let tables = lab.handle.load();
    lab.pipeline.process_timed(&tables, &mut frames, &mut Spill::none(), &mut Stopwatch::start(seven_ticks, &mut rt));
    assert!(frames.iter().all(|f| f.verdict == Verdict::Tx(A2)), "timed frames forward as untimed ones");
    // 40 frames are two vectors: each stage is marked once per vector.
    assert_eq!(rt.cycles[Stage::Parse as usize], 14);
    assert_eq!(rt.cycles[Stage::Lookup as usize], 14);
    assert_eq!(rt.cycles[Stage::Rewrite as usize], 14);
    assert_eq!((rt.cycles[Stage::Rx as usize], rt.cycles[Stage::Tx as usize]), (0, 0), "the caller's stages");
}

/// A pod sends only from its own addresses: its vif's, an IPv6
/// link-local one, or one its VRF routes back to it (a service address
/// it is a member of, which it answers from). Anything else is dropped and
/// counted as an invalid source, on the fast path and the general one
/// alike (the service's source taking the fast lane, checked there):
/// without the check, a pod could pass for another network's pod under a
/// policy rule that names that network.
#[test]
fn a_pod_sends_only_from_its_own_addresses() {
    for fast_path in [true, false] {
        let mut lab = Lab::new();
        lab.pipeline =
            Pipeline::new(PipelineConfig { fast_path, ..PipelineConfig::default() }, lab.handle.load().limits());
        // A service on this node with a1 among its members.
        let members = vec![RouteTarget { nh: NH_A1, label: NO }, RouteTarget { nh: NH_UDP, label: 100 }];
        let service = Ipv4Addr::new(10, 96, 0, 20);
        lab.writer
            .apply(&[
                Op::Add(Object::NextHop(40, NextHop::Composite(EcmpGroup::new(members)))),
                Op::Add(Object::Route(RouteSpec {
                    vrf: BLUE,
                    prefix: "10.96.0.20/32".parse().unwrap(),
                    target: RouteTarget { nh: 40, label: NO },
                    network: None,
                })),
            ])
            .unwrap();
        let from = |src: Ipv4Addr| build::udp4_frame(from_a1(), src, a2_ip(), 1, 80, 64, 64);
        let invalid = Verdict::Drop(DropReason::InvalidSource);
        assert_eq!(lab.run(A1, from(a1_ip())).0, Verdict::Tx(A2), "its own (fast path {fast_path})");
        assert_eq!(lab.run(A1, from(a2_ip())).0, invalid, "a2's");
        assert_eq!(lab.run(A1, from(remote_ip())).0, invalid, "a remote pod's");
        assert_eq!(lab.run(A1, from(Ipv4Addr::new(192, 0, 2, 1))).0, invalid, "one routed nowhere");
        assert_eq!(lab.run(A1, from(service)).0, Verdict::Tx(A2), "a service's it is a member of");
        // The fast lane checks such a source itself, as the general path
        // would (every answer of a service's endpoint came its way before).
        let before = lab.pipeline.general_frames();
        assert_eq!(lab.run(A1, from(service)).0, Verdict::Tx(A2));
        let general = lab.pipeline.general_frames() - before;
        assert_eq!(general, u64::from(!fast_path), "to the general path (fast path {fast_path})");
        assert_eq!(
            lab.run(A2, build::udp4_frame(L2 { src: mac(2), dst: router_mac() }, service, a1_ip(), 1, 80, 64, 64)).0,
            invalid,
            "not a2"
        );
        let v6 = |src: Ipv6Addr| build::udp6_frame(from_a1(), src, a2_ip6(), 1, 80, 64, 100);
        assert_eq!(lab.run(A1, v6(a1_ip6())).0, Verdict::Tx(A2), "its own IPv6");
        assert_eq!(lab.run(A1, v6("fe80::1".parse().unwrap())).0, Verdict::Tx(A2), "link-local");
        assert_eq!(lab.run(A1, v6(a2_ip6())).0, invalid, "a2's IPv6");
        assert_eq!(lab.pipeline.stats().drops[DropReason::InvalidSource as usize], 5);
        // A pod that sends as others by right (a router, a VRRP address)
        // has the check turned off.
        let mut router = lab.handle.load().vif(A1).unwrap().clone();
        router.flags.source_check = false;
        lab.writer.apply(&[Op::Update(Object::Vif(router))]).unwrap();
        assert_eq!(lab.run(A1, from(remote_ip())).0, Verdict::Tx(A2), "the check off");
        assert_eq!(lab.run(A1, v6(a2_ip6())).0, Verdict::Tx(A2), "the check off, IPv6");
        // A pod with no address of a family is not checked in it.
        let mut bare = Vif::new(A1, "veth-a1", VifKind::Virtual, BLUE, mac(1));
        bare.ipv4 = None;
        lab.writer.apply(&[Op::Update(Object::Vif(bare))]).unwrap();
        assert_eq!(lab.run(A1, from(a2_ip())).0, Verdict::Tx(A2), "no address to check against");
    }
}

/// The fast lane takes the plain packets of a vector from one pod and
/// leaves the rest, untouched, to the general path: a vector that mixes
/// both must come out frame by frame, in order, byte for byte, and with
/// the same counters, as the general path alone makes it. Among the
/// frames the lane leaves: one it trimmed before finding that it must
/// (padded, and too big for the tunnel with DF set), which must be
/// counted at the length it came with.
#[test]
fn a_vector_the_fast_lane_takes_in_part_comes_out_as_the_general_path_alone_makes_it() {
    let mut padded_too_big = big_frame(remote_ip(), 1514, true);
    let ip_len = padded_too_big.len() - 14;
    padded_too_big.extend_from_slice(&[0u8; 20]);
    assert_eq!(u16::from_be_bytes([padded_too_big[16], padded_too_big[17]]) as usize, ip_len);
    let mut padded = build::udp4_frame(from_a1(), a1_ip(), a2_ip(), 1, 2, 64, 42);
    padded.extend_from_slice(&[0u8; 18]);
    let vector: Vec<(u32, Vec<u8>)> = vec![
        (A1, udp_from_a1(a2_ip(), 1000, 64)),
        (A1, build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 40000, 443, 1460)),
        (A1, udp_from_a1(remote_ip(), 1001, 64)),
        (A1, build::arp_request(mac(1), a1_ip(), gw())),
        (A1, padded_too_big),
        (A2, build::udp4_frame(L2 { src: mac(2), dst: router_mac() }, a2_ip(), a1_ip(), 5, 6, 64, 64)),
        (A1, udp_from_a1(service_ip(), 1002, 64)),
        (A1, udp_from_a1(remote_ip(), 1003, 1)),
        (A1, padded),
        (A1, udp_from_a1(gre_remote_ip(), 1004, 64)),
    ];
    let (lane, a, _) = both_ways(&vector);
    // The mix is what it claims: plain packets forwarded, the SYN clamped,
    // ARP answered, the big one refused with an ICMP error, TTL 1 expired.
    let verdicts: Vec<Verdict> = a.iter().map(|f| f.verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Tx(A2),
            Verdict::Tx(FABRIC),
            Verdict::Tx(FABRIC),
            Verdict::Tx(A1),
            Verdict::Tx(A1),
            Verdict::Tx(A1),
            Verdict::Tx(FABRIC),
            Verdict::Tx(A1),
            Verdict::Tx(A2),
            Verdict::Tx(FABRIC),
        ]
    );
    assert_eq!(lane.stats().dropped(DropReason::MtuExceeded), 1);
    assert_eq!(lane.stats().dropped(DropReason::TtlExceeded), 1);
    assert_eq!(mss_of(a[1].data(), 66), 1500 - 32 - 40, "the SYN went the general way");
}

/// The same from the fabric: the lane strips the tunnels that deliver a
/// plain IPv4 packet to a local pod and leaves the rest. Among those it
/// leaves, one it stripped before the fast path refused it (too big for
/// the pod's MTU, so the general path fragments it), which must be given
/// back its outer headers as it came.
#[test]
fn a_vector_from_the_fabric_the_fast_lane_takes_in_part_comes_out_as_the_general_path_alone_makes_it() {
    let big = {
        let udp = build::udp4_segment(remote_ip(), a2_ip(), 5000, 80, &[0xab; 1500]);
        build::ipv4(remote_ip(), a2_ip(), ip_proto::UDP, 64, false, &udp)
    };
    let syn = build::tcp4_syn_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), a2_ip(), 40000, 80, 1460);
    let plain = |dst| inner_from_remote(dst, 60);
    let mut not_a_tunnel = build::udp4_frame(from_peer(), peer(1), node_ip(), 5000, 53, 64, 80);
    not_a_tunnel[12..14].copy_from_slice(&[0x08, 0x00]);
    let vector: Vec<(u32, Vec<u8>)> = vec![
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), LABEL_A1, 64, &plain(a1_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A2, 64, &plain(a2_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Udp(51234), node_ip(), LABEL_A2, 64, &big)),
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), 999, 64, &plain(a1_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_BLUE, 64, &plain(a1_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), LABEL_A2, 64, &syn[14..])),
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), LABEL_A1, 1, &plain(a1_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), node_ip(), LABEL_A1, 64, &inner_from_remote(a1_ip(), 1))),
        (FABRIC, not_a_tunnel),
        (A1, udp_from_a1(a2_ip(), 1000, 64)),
        (FABRIC, tunnel_frame(Tunnel::Udp(6635), peer(2), LABEL_A1, 64, &plain(a1_ip()))),
        (FABRIC, tunnel_frame(Tunnel::Gre, node_ip(), LABEL_A1, 64, &plain(a1_ip()))),
    ];
    let (lane, a, extra) = both_ways(&vector);
    assert!(!extra.is_empty(), "the big packet was fragmented");
    let v: Vec<Verdict> = a.iter().map(|f| f.verdict).collect();
    assert_eq!(v[..3], [Verdict::Tx(A1), Verdict::Tx(A2), Verdict::Tx(A2)]);
    assert_eq!(v[3], Verdict::Drop(DropReason::InvalidLabel));
    assert_eq!((v[4], v[5]), (Verdict::Tx(A1), Verdict::Tx(A2)));
    assert_eq!(v[6], Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!((v[8], v[9]), (Verdict::ToHost, Verdict::Tx(A2)));
    assert_eq!(v[10], Verdict::Drop(DropReason::TunnelNotForUs));
    assert_eq!(v[11], Verdict::Tx(A1));
    assert_eq!(mss_of(a[5].data(), 34), 1428, "the SYN went the general way: clamped");
    assert_eq!(lane.stats().vrf(BLUE).decaps, 7);
}

/// Runs `vector` through the pipeline with the fast path (so the fast
/// lane) and without, asserting that every frame, every extra fragment and
/// every counter come out the same; answers the fast run's lab, frames and
/// extra fragments.
fn both_ways(vector: &[(u32, Vec<u8>)]) -> (Lab, Frames, Frames) {
    let mut lane = Lab::new();
    let mut general = Lab::new();
    general.pipeline =
        Pipeline::new(PipelineConfig { fast_path: false, ..PipelineConfig::default() }, general.handle.load().limits());
    let (a, a_extra) = lane.run_with(vector, 4);
    let (b, b_extra) = general.run_with(vector, 4);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!((x.vif, x.verdict), (y.vif, y.verdict), "frame {i}'s verdict");
        assert_eq!(x.data(), y.data(), "frame {i}'s bytes");
    }
    let extra = |e: &Frames| -> Vec<(Verdict, Vec<u8>)> { e.iter().map(|f| (f.verdict, f.data().to_vec())).collect() };
    assert_eq!(extra(&a_extra), extra(&b_extra), "the extra fragments");
    assert_eq!(lane.stats(), general.stats(), "counters");
    (lane, a, a_extra)
}

/// Every frame the fast lane leaves to the general path is counted once,
/// under the first of the lane's checks it failed: the count `vrctl
/// runtime` breaks the general path's share down by, to say which traffic
/// takes the slow way. A frame the lane takes counts under none.
#[test]
fn the_general_path_counts_each_frame_under_why_the_lane_left_it() {
    let plain = || udp_from_a1(a2_ip(), 1, 64);
    let udp_tunnel = |dst, label, inner: &[u8]| tunnel_frame(Tunnel::Udp(6635), dst, label, 64, inner);
    let cases: Vec<(&str, u32, Vec<u8>)> = vec![
        ("", A1, plain()),
        ("arp", A1, build::arp_request(mac(1), a1_ip(), gw())),
        // The lane's IPv6 pass takes a plain packet; what it does not
        // take counts as IPv6, whatever the reason.
        ("", A1, build::udp6_frame(from_a1(), a1_ip6(), a2_ip6(), 1, 80, 64, 100)),
        ("ipv6", A1, build::udp6_frame(from_a1(), a1_ip6(), a2_ip6(), 1, 80, 1, 100)),
        ("ipv6", A1, build::tcp6_syn_frame(from_a1(), a1_ip6(), a2_ip6(), 40000, 80, 1460)),
        ("other_ethertype", A1, {
            let mut f = plain();
            f[12..14].copy_from_slice(&[0x88, 0xcc]);
            f
        }),
        ("ipv4_header", A1, {
            let mut f = plain();
            f[24] ^= 0xff;
            f
        }),
        ("ipv4_header", A1, reheadered(plain(), |f| f[14] = 0x46)),
        ("fragment", A1, reheadered(plain(), |f| f[20] = 0x20)),
        ("ttl_expiry", A1, udp_from_a1(a2_ip(), 1, 1)),
        ("tcp_syn", A1, build::tcp4_syn_frame(from_a1(), a1_ip(), a2_ip(), 40000, 80, 1460)),
        ("dhcp", A1, build::udp4_frame(from_a1(), a1_ip(), gw(), 68, 67, 64, 300)),
        ("source", A1, build::udp4_frame(from_a1(), a2_ip(), remote_ip(), 1, 80, 64, 64)),
        ("local", A1, udp_from_a1(gw(), 1, 64)),
        ("next_hop", A1, udp_from_a1(Ipv4Addr::new(10, 77, 0, 1), 1, 64)),
        ("no_route", A1, udp_from_a1(Ipv4Addr::new(10, 66, 0, 1), 1, 64)),
        ("no_route", A1, udp_from_a1(Ipv4Addr::new(192, 0, 2, 1), 1, 64)),
        ("mtu", A1, big_frame(remote_ip(), 1514, true)),
        ("mtu", A1, big_frame(remote_ip(), 3014, false)),
        ("", A1, big_frame(a2_ip(), 1514, true)),
        ("", FABRIC, udp_tunnel(node_ip(), LABEL_A2, &inner_from_remote(a2_ip(), 60))),
        ("arp", FABRIC, build::arp_request(peer_mac(1), peer(1), node_ip())),
        ("not_tunnel", FABRIC, build::udp4_frame(from_peer(), peer(1), node_ip(), 1, 22, 64, 64)),
        ("tunnel", FABRIC, udp_tunnel(node_ip(), 999, &inner_from_remote(a2_ip(), 60))),
        ("tunnel", FABRIC, udp_tunnel(peer(2), LABEL_A2, &inner_from_remote(a2_ip(), 60))),
        ("ttl_expiry", FABRIC, udp_tunnel(node_ip(), LABEL_A2, &inner_from_remote(a2_ip(), 1))),
        ("", FABRIC, udp_tunnel(node_ip(), LABEL_BLUE, &inner_from_remote(a2_ip(), 60))),
        ("no_route", FABRIC, udp_tunnel(node_ip(), LABEL_BLUE, &inner_from_remote(Ipv4Addr::new(10, 66, 0, 1), 60))),
        ("local", FABRIC, udp_tunnel(node_ip(), LABEL_BLUE, &inner_from_remote(gw(), 60))),
        ("fast_path_off", DISABLED, build::udp4_frame(from_a1(), Ipv4Addr::new(10, 1, 0, 9), a2_ip(), 1, 80, 64, 64)),
    ];
    let mut lab = Lab::new();
    // Each vif's frames on the general path, since `then`.
    let by_vif_since = |p: &Pipeline, then: &[u64]| -> Vec<(usize, u64)> {
        let now = p.general_frames_by_vif();
        now.iter().zip(then).enumerate().filter(|(_, (n, t))| n > t).map(|(v, (n, t))| (v, n - t)).collect()
    };
    for (cause, vif, frame) in &cases {
        let before = *lab.pipeline.general_causes();
        let (general, by_vif) = (lab.pipeline.general_frames(), lab.pipeline.general_frames_by_vif().to_vec());
        lab.run(*vif, frame.clone());
        let expected: Vec<(&str, u64)> = if cause.is_empty() { vec![] } else { vec![(*cause, 1)] };
        assert_eq!(general_since(&lab.pipeline, &before), expected, "{cause:?} from vif {vif}");
        assert_eq!(lab.pipeline.general_frames() - general, expected.len() as u64, "{cause:?} from vif {vif}");
        let on_its_vif: Vec<(usize, u64)> = expected.iter().map(|_| (*vif as usize, 1)).collect();
        assert_eq!(by_vif_since(&lab.pipeline, &by_vif), on_its_vif, "{cause:?} from vif {vif}");
        // The frame's own record, for a capture.
        let recorded = lab.pipeline.general_cause_at(0).map(|c| c.as_str());
        assert_eq!(recorded, (!cause.is_empty()).then_some(*cause), "{cause:?} from vif {vif}");
    }
    // In one vector, the lane takes the first frame's vif's: the others
    // are counted as another vif's, whatever they are.
    let before = *lab.pipeline.general_causes();
    let by_vif = lab.pipeline.general_frames_by_vif().to_vec();
    let vector: Vec<(u32, Vec<u8>)> = cases.iter().map(|(_, vif, f)| (*vif, f.clone())).collect();
    lab.run_with(&vector, 4);
    let from_a1 = cases.iter().filter(|(c, vif, _)| *vif == A1 && !c.is_empty()).count() as u64;
    let others = cases.iter().filter(|(_, vif, _)| *vif != A1).count() as u64;
    let mut counted = general_since(&lab.pipeline, &before);
    counted.retain(|(c, _)| *c == "other_vif");
    assert_eq!(counted, vec![("other_vif", others)]);
    assert_eq!(
        lab.pipeline.general_causes().iter().zip(&before).map(|(n, b)| n - b).sum::<u64>(),
        from_a1 + others,
        "each frame once"
    );
    // Each frame's record by its place in the batch: its own cause where
    // the lane served its vif.
    let recorded: Vec<Option<&str>> =
        (0..vector.len() + 1).map(|at| lab.pipeline.general_cause_at(at).map(|c| c.as_str())).collect();
    assert_eq!(recorded.iter().flatten().count() as u64, from_a1 + others, "{recorded:?}");
    for (at, (cause, vif, _)) in cases.iter().enumerate() {
        let expected = if *vif != A1 { Some("other_vif") } else { (!cause.is_empty()).then_some(*cause) };
        assert_eq!(recorded[at], expected, "frame {at}, {cause:?} from vif {vif}: {recorded:?}");
    }
    // By the vif each came in on, the lane's or not.
    let from_fabric = cases.iter().filter(|(_, vif, _)| *vif == FABRIC).count() as u64;
    let mut on_vifs = vec![(A1 as usize, from_a1), (FABRIC as usize, from_fabric), (DISABLED as usize, 1)];
    on_vifs.sort();
    assert_eq!(by_vif_since(&lab.pipeline, &by_vif), on_vifs);
    // A batch of more than a vector: each frame is recorded by its place
    // in the batch, not in its vector.
    let arp = (A1, build::arp_request(mac(1), a1_ip(), gw()));
    let n = vrouter::pipeline::VECTOR + 3;
    lab.run_with(&vec![arp; n], 0);
    let recorded: Vec<_> = (0..n + 1).map(|at| lab.pipeline.general_cause_at(at).map(|c| c.as_str())).collect();
    assert_eq!(recorded, [vec![Some("arp"); n], vec![None]].concat());
    // With the fast path off, every frame is counted as such.
    let mut off = Lab::new();
    off.pipeline =
        Pipeline::new(PipelineConfig { fast_path: false, ..PipelineConfig::default() }, off.handle.load().limits());
    off.run_with(&[(A1, plain()), (A1, plain())], 0);
    assert_eq!(general_since(&off.pipeline, &[0; vrouter::stats::GeneralCause::COUNT]), vec![("fast_path_off", 2)]);
    // A vif the lane does not serve: the node's own stack.
    let host = Vif::new(9, "vhost0", VifKind::Host, BLUE, mac(9));
    lab.writer.apply(&[Op::Add(Object::Vif(host))]).unwrap();
    let before = *lab.pipeline.general_causes();
    lab.run(9, build::udp4_frame(L2 { src: mac(9), dst: router_mac() }, gw(), a2_ip(), 1, 80, 64, 64));
    assert_eq!(general_since(&lab.pipeline, &before), vec![("other_vif", 1)]);
}
