//! Our output, read back by an independent decoder: tshark (Wireshark's
//! dissectors). tshark must be installed; `tools/test` installs it. Where
//! it is missing outside CI the test says so and skips; in CI it fails.

mod common;

use common::*;
use vrouter::pipeline::Verdict;
use vrouter::pktgen::build;
use vrouter::wire::ip_proto;

/// Wireshark's checksum status values.
const GOOD: &str = "1";
const BAD: &str = "0";

fn tx(lab: &mut Lab, vif: u32, frame: Vec<u8>, want: Verdict) -> Vec<u8> {
    let (v, out) = lab.run(vif, frame);
    assert_eq!(v, want);
    out
}

#[test]
fn tshark_decodes_our_tunnels() {
    let mut lab = Lab::new();
    let udp =
        tx(&mut lab, A1, build::udp4_frame(from_a1(), a1_ip(), remote_ip(), 4000, 53, 64, 100), Verdict::Tx(FABRIC));
    let gre = tx(
        &mut lab,
        A1,
        build::udp4_frame(from_a1(), a1_ip(), gre_remote_ip(), 4000, 53, 64, 100),
        Verdict::Tx(FABRIC),
    );
    let syn =
        tx(&mut lab, A1, build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 4000, 443, 1460), Verdict::Tx(FABRIC));
    // A negative control: tshark must call a broken outer checksum bad.
    let mut broken = udp.clone();
    broken[24] ^= 0xff;
    let fields = [
        "ip.src",
        "ip.dst",
        "ip.ttl",
        "ip.proto",
        "ip.checksum.status",
        "ip.flags.df",
        "udp.dstport",
        "gre.proto",
        "mpls.label",
        "mpls.bottom",
        "mpls.ttl",
        "tcp.options.mss_val",
        "tcp.checksum.status",
    ];
    let Some(rows) = tshark(&[udp, gre, syn, broken], &fields) else { return };
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3][4], format!("{BAD},{GOOD}"), "the control shows tshark checks checksums");
    let udp = &rows[0];
    // Outer, then inner IPv4 fields, aggregated with commas.
    assert_eq!(udp[0], "192.168.0.1,10.1.0.2");
    assert_eq!(udp[1], "192.168.0.2,10.2.0.5");
    assert_eq!(udp[2], "64,63", "outer TTL 64, inner decremented");
    assert_eq!(udp[3], "17,17");
    assert_eq!(udp[4], format!("{GOOD},{GOOD}"), "both IPv4 header checksums good");
    assert_eq!(udp[5], "0,0", "DF clear");
    assert_eq!(udp[6], "6635,53");
    assert_eq!(udp[8], "40");
    assert_eq!(udp[9], "1", "bottom of stack");
    assert_eq!(udp[10], "63");
    let gre = &rows[1];
    assert_eq!(gre[3], "47,17");
    assert_eq!(gre[7], "0x8847");
    assert_eq!(gre[8], "41");
    assert_eq!(gre[9], "1");
    assert_eq!(gre[4], format!("{GOOD},{GOOD}"));
    let syn = &rows[2];
    assert_eq!(syn[11], "1428", "MSS clamped to fit MPLS over UDP in a 1500-byte fabric");
    assert_eq!(syn[12], GOOD, "TCP checksum still good after the clamp");
}

#[test]
fn tshark_decodes_our_replies_and_errors() {
    let mut lab = Lab::new();
    let arp = tx(&mut lab, A1, build::arp_request(mac(1), a1_ip(), gw()), Verdict::Tx(A1));
    let na = tx(&mut lab, A1, build::neighbor_solicit(mac(1), a1_ip6(), gw6()), Verdict::Tx(A1));
    let ttl =
        tx(&mut lab, A1, build::udp4_frame(from_a1(), a1_ip(), remote_ip(), 4000, 33434, 1, 100), Verdict::Tx(A1));
    let data = vec![0u8; 1600];
    let udp = build::udp4_segment(a1_ip(), remote_ip(), 1, 2, &data);
    let big = build::ip_frame(from_a1(), &build::ipv4(a1_ip(), remote_ip(), ip_proto::UDP, 64, true, &udp));
    let frag_needed = tx(&mut lab, A1, big, Verdict::Tx(A1));
    let fields = [
        "arp.opcode",
        "arp.src.proto_ipv4",
        "arp.src.hw_mac",
        "icmpv6.type",
        "icmpv6.nd.na.target_address",
        "icmpv6.opt.linkaddr",
        "icmpv6.checksum.status",
        "icmp.type",
        "icmp.code",
        "icmp.checksum.status",
        "icmp.mtu",
    ];
    let Some(rows) = tshark(&[arp, na, ttl, frag_needed], &fields) else { return };
    assert_eq!(rows[0][0], "2");
    assert_eq!(rows[0][1], "10.1.0.1");
    assert_eq!(rows[0][2], "00:00:5e:00:01:00");
    assert_eq!(rows[1][3], "136");
    assert_eq!(rows[1][4], "fd00:1::1");
    assert_eq!(rows[1][5], "00:00:5e:00:01:00");
    assert_eq!(rows[1][6], GOOD, "ICMPv6 checksum good");
    assert_eq!((rows[2][7].as_str(), rows[2][8].as_str(), rows[2][9].as_str()), ("11", "0", GOOD));
    assert_eq!((rows[3][7].as_str(), rows[3][8].as_str(), rows[3][9].as_str()), ("3", "4", GOOD));
    assert_eq!(rows[3][10], "1468");
}

/// IPv6 pods' packets that the fast lane carries (`lane::from_pod6`), read
/// by tshark: into an MPLS-over-UDP tunnel (a UDP datagram and a TCP
/// segment), to a local pod (an ICMPv6 echo) and out of a tunnel to a pod
/// (a remote pod's UDP answer), with the hop limit
/// decremented, the outer IPv4 header's checksum right and every inner
/// checksum still right; and none of them took the general path.
#[test]
fn tshark_decodes_ipv6_packets_the_fast_lane_carries() {
    use std::net::IpAddr;
    use vrouter::pktgen::build::TracePacket;
    let mut lab = Lab::new();
    let remote: std::net::Ipv6Addr = "fd00:2::5".parse().unwrap();
    let next = |dst, proto, sport| {
        build::probe(from_a1(), (IpAddr::V6(a1_ip6()), IpAddr::V6(dst)), proto, sport, 443, TracePacket::Next).unwrap()
    };
    let general = lab.pipeline.general_frames();
    let frames = [
        tx(&mut lab, A1, build::udp6_frame(from_a1(), a1_ip6(), remote, 4000, 53, 64, 100), Verdict::Tx(FABRIC)),
        tx(&mut lab, A1, next(remote, ip_proto::TCP, 40000), Verdict::Tx(FABRIC)),
        tx(&mut lab, A1, next(a2_ip6(), ip_proto::ICMPV6, 7), Verdict::Tx(A2)),
        // A remote pod's answer, out of its tunnel, to a1 by its label.
        {
            let inner = build::udp6_frame(from_peer(), remote, a1_ip6(), 53, 4000, 64, 100);
            let tunnel = build::Tunnel::Udp(6635);
            let frame =
                build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), LABEL_A1, 64, 9, &inner[14..]);
            tx(&mut lab, FABRIC, frame, Verdict::Tx(A1))
        },
    ];
    assert_eq!(lab.pipeline.general_frames(), general, "the lane took them all");
    let fields = [
        "eth.dst",
        "ip.ttl",
        "ip.checksum.status",
        "udp.dstport",
        "mpls.label",
        "mpls.ttl",
        "ipv6.dst",
        "ipv6.hlim",
        "udp.checksum.status",
        "tcp.checksum.status",
        "icmpv6.checksum.status",
    ];
    let Some(rows) = tshark(&frames, &fields) else { return };
    assert_eq!(rows.len(), 4);
    for (row, inner_sum) in rows[..2].iter().zip([8, 9]) {
        assert_eq!((row[1].as_str(), row[2].as_str()), ("64", GOOD), "the outer IPv4 header: {row:?}");
        assert_eq!((row[4].as_str(), row[5].as_str()), ("42", "63"), "the route's label, the inner hop limit");
        assert_eq!((row[6].as_str(), row[7].as_str()), ("fd00:2::5", "63"), "{row:?}");
        assert_eq!(row[inner_sum].rsplit(',').next(), Some(GOOD), "the inner checksum: {row:?}");
    }
    assert_eq!(rows[0][3], "6635,53", "MPLS over UDP, then the pod's datagram");
    let local = &rows[2];
    assert_eq!(local[0], "02:00:00:00:00:02", "to a2's MAC");
    assert_eq!((local[6].as_str(), local[7].as_str(), local[10].as_str()), ("fd00:1::3", "63", GOOD), "{local:?}");
    let answer = &rows[3];
    assert_eq!(answer[0], "02:00:00:00:00:01", "to a1's MAC, the tunnel gone: {answer:?}");
    assert_eq!((answer[1].as_str(), answer[4].as_str()), ("", ""), "no outer IPv4 header, no label: {answer:?}");
    assert_eq!((answer[6].as_str(), answer[7].as_str(), answer[8].as_str()), ("fd00:1::2", "63", GOOD), "{answer:?}");
}

/// The IPv6 fragment header as we build and parse it (`wire::ipv6ext`),
/// read by tshark from frames the pipeline forwarded: next header, offset,
/// More Fragments and the 32-bit identification.
#[test]
fn tshark_reads_our_ipv6_fragment_headers() {
    let mut lab = Lab::new();
    let udp = build::udp6_segment(a1_ip6(), a2_ip6(), 40000, 53, &[0x11; 3000]);
    let frames: Vec<Vec<u8>> = ipv6_fragments(from_a1(), a1_ip6(), a2_ip6(), ip_proto::UDP, 0x8000_0001, &udp, 1232)
        .into_iter()
        .map(|f| tx(&mut lab, A1, f, Verdict::Tx(A2)))
        .collect();
    let fields = ["ipv6.fraghdr.nxt", "ipv6.fraghdr.offset", "ipv6.fraghdr.more", "ipv6.fraghdr.ident", "ipv6.hlim"];
    let Some(rows) = tshark(&frames, &fields) else { return };
    let want = [("17", "0", "1"), ("17", "154", "1"), ("17", "308", "0")];
    for (row, (nxt, offset, more)) in rows.iter().zip(want) {
        // tshark gives the offset in 8-byte units.
        assert_eq!((row[0].as_str(), row[1].as_str(), row[2].as_str()), (nxt, offset, more), "{rows:?}");
        assert_eq!(row[3], "0x80000001");
        assert_eq!(row[4], "63", "forwarded: hop limit decremented");
    }
    assert_eq!(rows.len(), 3);
}

/// `vrctl trace`'s probes (`build::probe`): a UDP datagram, a TCP SYN and
/// an ICMP echo request, in both families, each read by tshark with every
/// checksum right; and one traced through the pipeline to a2 comes out
/// with its checksums still right. Then the TCP segments trace sends after
/// the SYN (`TracePacket::Next`), in both families: no SYN, checksums right.
#[test]
fn tshark_reads_trace_probes_with_every_checksum_right() {
    use std::net::IpAddr;
    use vrouter::pktgen::build::TracePacket;
    let (a4, b4) = (IpAddr::V4(a1_ip()), IpAddr::V4(a2_ip()));
    let (a6, b6) = (IpAddr::V6(a1_ip6()), IpAddr::V6(a2_ip6()));
    let mut frames = Vec::new();
    for (src, dst, icmp) in [(a4, b4, ip_proto::ICMP), (a6, b6, ip_proto::ICMPV6)] {
        for proto in [ip_proto::UDP, ip_proto::TCP, icmp] {
            frames.push(build::probe(from_a1(), (src, dst), proto, 40000, 80, TracePacket::First).unwrap());
        }
    }
    assert!(build::probe(from_a1(), (a4, b6), ip_proto::UDP, 1, 2, TracePacket::First).is_none(), "two families");
    assert!(build::probe(from_a1(), (a4, b4), ip_proto::GRE, 1, 2, TracePacket::First).is_none());
    let lab = Lab::new();
    let traced = vrouter::pipeline::trace(&lab.handle.load(), Default::default(), A1, &frames[1], None);
    assert_eq!(traced.verdict, Verdict::Tx(A2));
    frames.push(traced.frame);
    for (src, dst) in [(a4, b4), (a6, b6)] {
        frames.push(build::probe(from_a1(), (src, dst), ip_proto::TCP, 40000, 80, TracePacket::Next).unwrap());
    }
    let fields = [
        "ip.checksum.status",
        "udp.checksum.status",
        "tcp.checksum.status",
        "icmp.checksum.status",
        "icmpv6.checksum.status",
        "udp.dstport",
        "tcp.flags.syn",
        "icmp.type",
        "icmpv6.type",
    ];
    let Some(rows) = tshark(&frames, &fields) else { return };
    assert_eq!(rows.len(), 9);
    for (i, r) in rows.iter().enumerate() {
        let statuses: Vec<&str> = r[..5].iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        let v4 = i < 3 || i == 6 || i == 7;
        assert_eq!(statuses, vec![GOOD; if v4 { 2 } else { 1 }], "probe {i}: {r:?}");
    }
    let what: Vec<&str> = rows.iter().map(|r| r[5..].iter().find(|f| !f.is_empty()).unwrap().as_str()).collect();
    assert_eq!(what, ["80", "1", "8", "80", "1", "128", "1", "0", "0"], "{rows:?}");
}
