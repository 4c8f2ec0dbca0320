//! NAT rewrites: every checksum after a rewrite equals a full
//! recomputation, tshark agrees, and an ICMP error about a NATed packet
//! quotes, after the reverse rewrite, exactly what the sender sent.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vrouter::flow::Nat;
use vrouter::pipeline::nat::apply_v4;
use vrouter::pktgen::build::{self, L2};

const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const FIP: Ipv4Addr = Ipv4Addr::new(185, 22, 97, 188);
const POD: Ipv4Addr = Ipv4Addr::new(10, 32, 1, 2);

fn l2() -> L2 {
    L2 { src: mac(9), dst: router_mac() }
}

/// The IPv4 header checksum and the transport checksum, recomputed in full;
/// both are 0 when the packet's own fields are right.
fn verify(ip: &[u8]) {
    let hl = usize::from(ip[0] & 0x0f) * 4;
    assert_eq!(inet_checksum(&ip[..hl]), 0, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &ip[hl..total];
    match ip[9] {
        6 | 17 => {
            if ip[9] == 17 && l4[6..8] == [0, 0] {
                return;
            }
            let (src, dst) = (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap());
            assert_eq!(transport_checksum_v4(src, dst, ip[9], l4), 0, "transport checksum");
        }
        1 => assert_eq!(inet_checksum(l4), 0, "ICMP checksum"),
        _ => {}
    }
}

fn ip_of(frame: &mut [u8]) -> &mut [u8] {
    &mut frame[14..]
}

#[test]
fn dnat_and_snat_keep_every_checksum_right() {
    let dnat = Nat { dst: Some(POD.into()), ..Nat::default() };
    let snat = Nat { src: Some(FIP.into()), ..Nat::default() };
    let pat = Nat { src: Some(FIP.into()), sport: Some(61000), dport: Some(8080), ..Nat::default() };
    let mut cases = vec![
        (build::tcp4_syn_frame(l2(), CLIENT, FIP, 40000, 80, 1460), dnat),
        (build::udp4_frame(l2(), CLIENT, FIP, 5353, 53, 64, 200), dnat),
        (build::tcp4_syn_frame(l2(), POD, CLIENT, 80, 40000, 1460), snat),
        (build::udp4_frame(l2(), POD, CLIENT, 53, 5353, 64, 90), pat),
        (build::tcp4_syn_frame(l2(), POD, CLIENT, 80, 40000, 1460), pat),
    ];
    // Many address and port values, to reach the checksum's corner cases.
    for i in 0..2000u32 {
        let a = Ipv4Addr::from(0x0a00_0000 ^ i.wrapping_mul(0x9e37_79b9));
        let nat = Nat { dst: Some(a.into()), dport: Some(i as u16 ^ 0xffff), ..Nat::default() };
        cases.push((build::udp4_frame(l2(), CLIENT, FIP, i as u16, 53, 64, 64), nat));
    }
    for (frame, nat) in &mut cases {
        apply_v4(ip_of(frame), nat).unwrap();
        verify(ip_of(frame));
        let ip = ip_of(frame);
        if let Some(d) = nat.dst {
            assert_eq!(u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]), d);
        }
        if let Some(p) = nat.dport {
            assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), p);
        }
    }
    // A UDP datagram without a checksum keeps none.
    let mut f = build::udp4_frame(l2(), CLIENT, FIP, 1, 2, 64, 64);
    f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    apply_v4(ip_of(&mut f), &dnat).unwrap();
    assert_eq!(f[40..42], [0, 0]);
    // Echo: addresses change, the ICMP checksum (no pseudo header) stays right.
    let mut echo = build::ip_frame(l2(), &build::ipv4(CLIENT, FIP, 1, 64, false, &icmp_echo(7, 1)));
    apply_v4(ip_of(&mut echo), &dnat).unwrap();
    verify(ip_of(&mut echo));
    // tshark agrees on every checksum.
    let frames: Vec<Vec<u8>> = cases.iter().map(|(f, _)| f.clone()).chain([echo]).collect();
    if let Some(rows) =
        tshark(&frames, &["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status"])
    {
        assert_eq!(rows.len(), frames.len());
        for r in &rows {
            assert_eq!(r[0], "1", "{r:?}");
            assert!(r[1..].iter().all(|c| c.is_empty() || c == "1"), "{r:?}");
        }
    }
}

fn icmp_echo(id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"payload!");
    let c = inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// The ICMP error a host sends about `ip`, quoting `quote` bytes of it.
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: u8, ip: &[u8], quote: usize) -> Vec<u8> {
    let mut m = vec![kind, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&ip[..quote.min(ip.len())]);
    let c = inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    build::ip_frame(l2(), &build::ipv4(from, to, 1, 64, false, &m))
}

/// A client sends to the floating IP; the pod gets it DNATed and answers
/// with an ICMP error; SNAT of the error gives the client back its own
/// packet in the quote, byte for byte, with every checksum right.
#[test]
fn icmp_errors_quote_what_the_sender_sent() {
    let dnat = Nat { dst: Some(POD.into()), ..Nat::default() };
    let snat = Nat { src: Some(FIP.into()), ..Nat::default() };
    let originals = [
        build::udp4_frame(l2(), CLIENT, FIP, 5353, 53, 64, 120),
        build::tcp4_syn_frame(l2(), CLIENT, FIP, 40000, 80, 1460),
    ];
    let mut errors = Vec::new();
    for original in &originals {
        for quote in [28, 576] {
            let mut seen_by_pod = original.clone();
            apply_v4(ip_of(&mut seen_by_pod), &dnat).unwrap();
            let mut err = icmp_error(POD, CLIENT, 3, &seen_by_pod[14..], quote);
            apply_v4(ip_of(&mut err), &snat).unwrap();
            verify(ip_of(&mut err));
            let ip = &err[14..];
            assert_eq!(&ip[12..16], &FIP.octets(), "the error comes from the floating IP");
            let quoted = &ip[28..];
            let sent = &original[14..14 + quoted.len()];
            assert_eq!(quoted, sent, "the quote is what the client sent ({quote} bytes quoted)");
            errors.push(err);
        }
    }
    if let Some(rows) = tshark(&errors, &["icmp.checksum.status", "ip.checksum.status"]) {
        for r in &rows {
            assert_eq!(r[0], "1", "ICMP checksum good: {r:?}");
            assert!(r[1].split(',').all(|c| c == "1"), "outer and quoted IP checksums good: {r:?}");
        }
    }
}

#[test]
fn short_packets_are_refused_not_read_past() {
    let nat = Nat { dst: Some(POD.into()), dport: Some(1), ..Nat::default() };
    for len in [0, 1, 10, 19] {
        let mut b = vec![0x45u8; len];
        assert!(apply_v4(&mut b, &nat).is_err(), "{len} bytes");
    }
    // A header that claims options it lacks.
    let mut b = build::ipv4(CLIENT, FIP, 17, 64, false, &[0; 8]);
    b[0] = 0x4f;
    assert!(apply_v4(&mut b, &nat).is_err());
    // A truncated transport header: addresses change, ports cannot.
    let mut b = build::ipv4(CLIENT, FIP, 17, 64, false, &[0; 8]);
    b.truncate(22);
    assert!(apply_v4(&mut b, &nat).is_ok());
    assert_eq!(&b[16..20], &POD.octets());
}
