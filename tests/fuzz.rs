//! No frame can make the pipeline panic, loop or read out of bounds, and
//! every frame gets a verdict whose drop is counted.
//!
//! Random bytes and mutated valid frames of every kind go through the
//! pipeline in batches. `VROUTER_FUZZ_CASES` sets how many (default
//! 200,000; `tools/test` runs millions in release mode), `VROUTER_FUZZ_SEED`
//! the seed.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use vrouter::flow::{Endpoint, FlowConfig, FlowTable, Policy, PolicyAction, PortRange, Rule};
use vrouter::pipeline::{Frame, Pipeline, PipelineConfig, Spill, Verdict};
use vrouter::pktgen::build::{self, TracePacket, Tunnel, L2};
use vrouter::stats::DropReason;
use vrouter::wire::ip_proto;

/// One valid frame of every kind the pipeline handles, with its vif.
fn corpus() -> Vec<(u32, Vec<u8>)> {
    let inner = build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), a1_ip(), 1, 2, 64, 80);
    let inner6 =
        build::udp6_frame(L2 { src: mac(9), dst: mac(9) }, "fd00:2::1".parse().unwrap(), a2_ip6(), 1, 2, 64, 90);
    let syn = build::tcp4_syn_frame(from_a1(), a1_ip(), remote_ip(), 1, 443, 1460);
    let mut out = vec![
        (A1, build::udp4_frame(from_a1(), a1_ip(), a2_ip(), 1, 2, 64, 64)),
        (A1, build::udp4_frame(from_a1(), a1_ip(), remote_ip(), 1, 2, 64, 64)),
        (A1, build::udp4_frame(from_a1(), a1_ip(), gre_remote_ip(), 1, 2, 2, 64)),
        (A1, build::udp4_frame(from_a1(), a1_ip(), service_ip(), 1, 2, 64, 200)),
        (A1, build::udp4_frame(from_a1(), a1_ip(), remote_ip(), 1, 2, 1, 64)),
        (A1, build::udp4_frame(from_a1(), a1_ip(), Ipv4Addr::BROADCAST, 68, 67, 64, 300)),
        (A1, build::udp6_frame(from_a1(), a1_ip6(), a2_ip6(), 1, 2, 64, 90)),
        (A1, build::udp6_frame(from_a1(), a1_ip6(), "fd00:2::8".parse().unwrap(), 1, 2, 1, 90)),
        (A1, build::arp_request(mac(1), a1_ip(), gw())),
        (A1, build::neighbor_solicit(mac(1), a1_ip6(), gw6())),
        (A1, syn.clone()),
        (FABRIC, build::mpls_tunnel_frame(from_peer(), Tunnel::Gre, peer(1), node_ip(), LABEL_A1, 64, 1, &inner[14..])),
        (
            FABRIC,
            build::mpls_tunnel_frame(
                from_peer(),
                Tunnel::Udp(6635),
                peer(1),
                node_ip(),
                LABEL_BLUE,
                64,
                1,
                &inner[14..],
            ),
        ),
        (
            FABRIC,
            build::mpls_tunnel_frame(
                from_peer(),
                Tunnel::Udp(51234),
                peer(1),
                node_ip(),
                LABEL_BLUE,
                64,
                1,
                &inner6[14..],
            ),
        ),
        (FABRIC, build::mpls_tunnel_frame(from_peer(), Tunnel::Gre, peer(1), node_ip(), LABEL_A2, 64, 1, &syn[14..])),
        (FABRIC, build::tcp4_syn_frame(from_peer(), peer(1), node_ip(), 5, 22, 1460)),
    ];
    for df in [true, false] {
        let data = vec![7u8; 2900];
        let udp = build::udp4_segment(a1_ip(), remote_ip(), 1, 2, &data);
        out.push((A1, build::ip_frame(from_a1(), &build::ipv4(a1_ip(), remote_ip(), ip_proto::UDP, 64, df, &udp))));
    }
    out
}

fn mutate(rng: &mut Rng, corpus: &[(u32, Vec<u8>)]) -> (u32, Vec<u8>) {
    let vifs = [FABRIC, A1, A2, R1, DISABLED, 60];
    if rng.below(8) == 0 {
        let len = rng.below(200);
        return (vifs[rng.below(vifs.len())], (0..len).map(|_| rng.next() as u8).collect());
    }
    let (mut vif, mut f) = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            // Header bytes matter most: hit the first 80 hard.
            2 | 3 if !f.is_empty() => {
                let i = rng.below(f.len().min(80));
                f[i] = rng.next() as u8;
            }
            4 => f.truncate(rng.below(f.len() + 1)),
            5 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            6 => vif = vifs[rng.below(vifs.len())],
            _ => {}
        }
    }
    (vif, f)
}

/// Runs `cases` random and mutated frames of `corpus` through `lab`'s
/// pipeline in batches, on a clock that advances `ms_per_batch` a batch,
/// and checks what no input may break: no panic, a verdict for every
/// frame, a valid IPv4 header checksum on every frame sent, and every drop
/// counted once.
fn fuzz(lab: &mut Lab, corpus: &[(u32, Vec<u8>)], seed: u64, ms_per_batch: u64) {
    let cases: usize = std::env::var("VROUTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut rng = Rng(seed.max(1));
    let tables = lab.handle.snapshot();
    let mut drop_verdicts = 0u64;
    let mut held_verdicts = 0u64;
    let mut done = 0usize;
    let mut frames: Vec<Frame<Vec<u8>>> = Vec::with_capacity(64);
    while done < cases {
        let batch: Vec<(u32, Vec<u8>)> = (0..64.min(cases - done)).map(|_| mutate(&mut rng, corpus)).collect();
        frames.clear();
        for (vif, bytes) in &batch {
            let headroom = if rng.below(16) == 0 { rng.below(64) } else { HEADROOM };
            let mut buf = vec![0u8; headroom + bytes.len() + rng.below(3000)];
            buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
            frames.push(Frame::new(buf, headroom, bytes.len(), *vif).unwrap());
        }
        let mut spill = Spill::with_buffers((0..rng.below(4)).map(|_| vec![0u8; 4096]).collect(), HEADROOM);
        lab.pipeline.set_now(done as u64 / 64 * ms_per_batch);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lab.pipeline.process(&tables, &mut frames, &mut spill);
        }));
        if let Err(e) = run {
            for (vif, bytes) in &batch {
                eprintln!("vif {vif}: {}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
            }
            eprintln!("seed {seed}, after {done} cases: the pipeline panicked on one of the frames above");
            std::panic::resume_unwind(e);
        }
        for f in frames.iter().chain(spill.out.iter()) {
            match f.verdict {
                Verdict::Drop(_) => drop_verdicts += 1,
                Verdict::Tx(out) => {
                    assert!(tables.vif(out).is_some(), "transmit on a vif that does not exist");
                    let d = f.data();
                    assert!(d.len() >= 14, "a transmitted frame has an Ethernet header");
                    if d[12..14] == [0x08, 0x00] && d.len() >= 34 && d[14] == 0x45 {
                        assert_eq!(
                            inet_checksum(&d[14..34]),
                            0,
                            "every IPv4 header sent has a valid checksum: {d:02x?}"
                        );
                    }
                }
                Verdict::ToHost | Verdict::ToAgent(_) => {}
                Verdict::Held => held_verdicts += 1,
            }
        }
        done += batch.len();
    }
    let s = lab.stats();
    let icmp_errors: u64 = s.vrfs.iter().map(|v| v.icmp_errors).sum();
    // A held fragment that waits in vain is dropped with no frame to carry
    // the verdict.
    let expired = s.dropped(DropReason::NoFragEntry);
    assert_eq!(s.total_drops(), drop_verdicts + icmp_errors + expired, "every drop is counted exactly once");
    assert_eq!(s.fragments_held, held_verdicts, "every held fragment is counted");
    assert!(s.fragments_released + expired <= held_verdicts, "a held fragment goes once");
    let rx: u64 = s.vifs.iter().map(|v| v.rx_packets).sum();
    assert!(rx > 0 && s.total_drops() > 0 && s.vifs.iter().map(|v| v.tx_packets).sum::<u64>() > 0);
    eprintln!(
        "{cases} cases, {} dropped, {} sent, {} fragments held ({} let go, {expired} expired)",
        s.total_drops(),
        s.vifs.iter().map(|v| v.tx_packets).sum::<u64>(),
        s.fragments_held,
        s.fragments_released
    );
}

fn seed() -> u64 {
    std::env::var("VROUTER_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x00c0_ffee)
}

#[test]
fn random_and_mutated_frames_never_break_the_pipeline() {
    fuzz(&mut Lab::new(), &corpus(), seed(), 0);
}

/// The same through the flow stage: a small flow table (so that it fills,
/// and limits and ageing act), a policy with port rules in blue, floating
/// IPs (NAT both ways, ports forwarded on one pod), and a corpus with what the flow stage reads beyond
/// the headers: fragments, ICMP errors that quote a packet, echo requests.
#[test]
fn random_and_mutated_frames_never_break_the_flow_stage() {
    use vrouter::tables::{Object, Op};
    let mut lab = Lab::new();
    add_floating_ip(&mut lab);
    add_v6_routes(&mut lab);
    // a1 forwards two of the floating IP's ports, to others; a2 takes all.
    let t = lab.handle.load();
    let mut a1 = t.vif(A1).unwrap().clone();
    drop(t);
    a1.floating[0].ports = vec![
        vrouter::tables::PortMap { proto: ip_proto::UDP, port: 2, target: 20 },
        vrouter::tables::PortMap { proto: ip_proto::TCP, port: 443, target: 8443 },
    ];
    lab.writer.apply(&[Op::Update(Object::Vif(a1))]).unwrap();
    let rule = |proto, dport, action| Rule {
        src: Endpoint::Any,
        dst: Endpoint::Any,
        proto: Some(proto),
        sport: PortRange::ANY,
        dport,
        action,
    };
    let blue = Policy {
        rules: vec![
            rule(ip_proto::UDP, PortRange { lo: 2, hi: 2 }, PolicyAction::Allow),
            rule(ip_proto::TCP, PortRange { lo: 443, hi: 443 }, PolicyAction::Allow),
            rule(ip_proto::ICMP, PortRange::ANY, PolicyAction::Allow),
        ],
        default: PolicyAction::Deny,
    };
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, blue))]).unwrap();
    let cfg = FlowConfig { capacity: 2_000, per_vif: 1_500, fragments: 64, ..FlowConfig::default() };
    let table = Arc::new(FlowTable::new(cfg, 64, 16));
    lab.pipeline.set_flows(Some(table.clone()));

    let mut corpus = corpus();
    let gw = L2 { src: mac(9), dst: router_mac() };
    let a2 = L2 { src: mac(2), dst: router_mac() };
    let udp = build::udp4_segment(a1_ip(), a2_ip(), 1, 2, &[0x5a; 1500]);
    let mut echo = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    echo.extend_from_slice(&[0x44; 600]);
    let c = inet_checksum(&echo);
    echo[2..4].copy_from_slice(&c.to_be_bytes());
    for (l2, src, dst, vif) in [(from_a1(), a1_ip(), a2_ip(), A1), (gw, CLIENT, FIP, GW)] {
        for f in ipv4_fragments(l2, src, dst, ip_proto::UDP, 7, &udp, 512) {
            corpus.push((vif, f));
        }
        for f in ipv4_fragments(l2, src, dst, ip_proto::ICMP, 8, &echo, 304) {
            corpus.push((vif, f));
        }
        corpus.push((vif, build::udp4_frame(l2, src, dst, 1000, 2, 64, 100)));
        corpus.push((vif, build::tcp4_syn_frame(l2, src, dst, 1000, 443, 1460)));
    }
    // IPv6: fragments, and UDP behind hop-by-hop and destination options.
    let udp6 = build::udp6_segment(a1_ip6(), a2_ip6(), 1, 2, &[0x5a; 1500]);
    for f in ipv6_fragments(from_a1(), a1_ip6(), a2_ip6(), ip_proto::UDP, 9, &udp6, 504) {
        corpus.push((A1, f));
    }
    let mut options = vec![60, 0, 1, 4, 0, 0, 0, 0, ip_proto::UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    options.extend_from_slice(&build::udp6_segment(a1_ip6(), a2_ip6(), 1, 2, &[3; 40]));
    corpus.push((A1, build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), a2_ip6(), 0, 64, &options))));
    let mut too_big = vec![2u8, 0, 0, 0, 0, 0, 0x05, 0x00];
    too_big.extend_from_slice(&build::ipv6(a1_ip6(), a2_ip6(), 0, 63, &options));
    corpus.push((A2, build::ip_frame(a2, &build::ipv6(a2_ip6(), a1_ip6(), ip_proto::ICMPV6, 64, &too_big))));
    // a2's answers to the client, NATed back to the floating IP, and an ICMP
    // error from a2 about a packet it got from the client.
    corpus.push((A2, build::udp4_frame(a2, a2_ip(), CLIENT, 2, 1000, 64, 100)));
    let quoted =
        build::ipv4(CLIENT, a2_ip(), ip_proto::UDP, 63, false, &build::udp4_segment(CLIENT, a2_ip(), 1000, 2, &[1; 8]));
    let mut error = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    error.extend_from_slice(&quoted);
    let c = inet_checksum(&error);
    error[2..4].copy_from_slice(&c.to_be_bytes());
    corpus.push((A2, build::ip_frame(a2, &build::ipv4(a2_ip(), CLIENT, ip_proto::ICMP, 64, false, &error))));

    // A second per batch: flows age while the run goes on.
    fuzz(&mut lab, &corpus, seed() ^ 0x0f10, 1_000);
    assert!(table.len() <= 2_000, "the table holds at most its capacity: {}", table.len());
    assert!(table.fragments().dump(0).len() <= 64);
    let (created, removed) = table.churn();
    assert!(created > 2_000 && removed > 0, "the run filled and aged the table: {created} made, {removed} removed");
    let frags = table.fragments().counts();
    assert!(frags.recorded > 0 && frags.matched > 0, "fragments found their flows: {frags:?}");
}

/// The corpus weighted toward what the fast path takes: plain IPv4 (UDP,
/// TCP without SYN, ICMP echo) from a pod, to every kind of destination.
fn fast_corpus() -> Vec<(u32, Vec<u8>)> {
    let mut corpus = corpus();
    for sport in 0..20u16 {
        for dst in [
            a2_ip(),
            remote_ip(),
            gre_remote_ip(),
            service_ip(),
            Ipv4Addr::new(10, 66, 0, 1),
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(10, 88, 0, 1),
        ] {
            corpus.push((A1, build::udp4_frame(from_a1(), a1_ip(), dst, sport, 80, 64, 64 + usize::from(sport))));
        }
        corpus.push((A1, tcp_ack(from_a1(), a1_ip(), service_ip(), 2000 + sport, 443)));
        // Tunnels from a remote pod to ours, for the fabric's fast lane.
        let inner = build::udp4_frame(from_peer(), remote_ip(), a1_ip(), sport, 80, 64, 64 + usize::from(sport));
        for (tunnel, label) in [(Tunnel::Udp(6635), LABEL_A1), (Tunnel::Gre, LABEL_A2)] {
            let frame =
                build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), label, 64, sport, &inner[14..]);
            corpus.push((FABRIC, frame));
        }
        // Too big for the pod: the lane strips it, then must give it back.
        let data = vec![0x5a; 1480 + usize::from(sport)];
        let big = build::ipv4(remote_ip(), a2_ip(), ip_proto::UDP, 64, sport % 2 == 0, &data);
        corpus.push((
            FABRIC,
            build::mpls_tunnel_frame(from_peer(), Tunnel::Gre, peer(1), node_ip(), LABEL_A2, 64, 1, &big),
        ));
        corpus.push((A1, echo(from_a1(), a1_ip(), service_ip(), sport, 8)));
        // IPv6, for the lane's IPv6 pass: to a2, into both kinds of tunnel,
        // to a service, to no route; and from another source, and too big.
        for dst in [a2_ip6(), remote_ip6(), gre_remote_ip6(), service_ip6(), "fd00:66::1".parse().unwrap()] {
            let len = 80 + usize::from(sport);
            corpus.push((A1, build::udp6_frame(from_a1(), a1_ip6(), dst, sport, 80, 64, len)));
            let ends = (IpAddr::V6(a1_ip6()), IpAddr::V6(dst));
            for proto in [ip_proto::TCP, ip_proto::ICMPV6] {
                let next = build::probe(from_a1(), ends, proto, 3000 + sport, 443, TracePacket::Next).unwrap();
                corpus.push((A1, next));
            }
        }
        corpus.push((A1, build::udp6_frame(from_a1(), a2_ip6(), remote_ip6(), sport, 80, 64, 100)));
        // And a remote IPv6 pod's, out of their tunnels: to a pod by its
        // label, or routed in blue (to a pod, or back out by a tunnel).
        let ends = (IpAddr::V6(remote_ip6()), IpAddr::V6(a1_ip6()));
        let ack = build::probe(from_peer(), ends, ip_proto::TCP, 443, 3000 + sport, TracePacket::Next).unwrap();
        let udp = build::udp6_frame(from_peer(), remote_ip6(), a2_ip6(), sport, 80, 64, 80 + usize::from(sport));
        let routed = build::udp6_frame(from_peer(), remote_ip6(), gre_remote_ip6(), sport, 80, 64, 100);
        // Too big for the pod: stripped, then given back.
        let big = build::udp6_frame(from_peer(), remote_ip6(), a2_ip6(), sport, 80, 64, 1520 + usize::from(sport));
        for (tunnel, label, inner) in [
            (Tunnel::Udp(6635), LABEL_A1, &ack),
            (Tunnel::Gre, LABEL_A2, &udp),
            (Tunnel::Udp(6635), LABEL_BLUE, &udp),
            (Tunnel::Gre, LABEL_BLUE, &routed),
            (Tunnel::Udp(6635), LABEL_A2, &big),
            (Tunnel::Gre, LABEL_BLUE, &big),
        ] {
            let frame =
                build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), label, 64, sport, &inner[14..]);
            corpus.push((FABRIC, frame));
        }
        corpus
            .push((A1, build::udp6_frame(from_a1(), a1_ip6(), remote_ip6(), sport, 80, 64, 1480 + usize::from(sport))));
        // a1's answers from the service address it holds (where the test
        // adds it: `add_a1_service_address`; elsewhere a spoofed source),
        // and from a2's address, which never routes back to a1.
        for src in [a1_service_ip(), a2_ip()] {
            for dst in [remote_ip(), a2_ip()] {
                corpus.push((A1, build::udp4_frame(from_a1(), src, dst, 80, 3000 + sport, 64, 80)));
                corpus.push((A1, tcp_ack(from_a1(), src, dst, 80, 3000 + sport)));
            }
        }
    }
    corpus
}

fn remote_ip6() -> Ipv6Addr {
    "fd00:2::5".parse().unwrap()
}
fn gre_remote_ip6() -> Ipv6Addr {
    "fd00:3::5".parse().unwrap()
}
fn service_ip6() -> Ipv6Addr {
    "fd00:96::10".parse().unwrap()
}

/// The IPv6 routes `fast_corpus` sends to besides the lab's: into a GRE
/// tunnel, and to the service's composite.
fn add_v6_routes(lab: &mut Lab) {
    lab.writer
        .apply(&[route_in(BLUE, "fd00:3::/64", NH_GRE, 43, None), route_in(BLUE, "fd00:96::10/128", NH_ECMP, NO, None)])
        .unwrap();
}

/// Runs the same mutated batches through `fast` and `general` (the fast
/// path off), asserting that every frame comes out of both with the same
/// verdict and bytes. `between(batch)` runs before each batch, to change
/// the tables mid-run.
fn compare_paths(
    lab: &mut Lab,
    corpus: &[(u32, Vec<u8>)],
    fast: &mut Pipeline,
    general: &mut Pipeline,
    mut between: impl FnMut(usize, &mut Lab),
) {
    let cases: usize = std::env::var("VROUTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut rng = Rng(seed() ^ 0xfa57_0001);
    let mut done = 0;
    for round in 0.. {
        if done >= cases {
            break;
        }
        between(round, lab);
        let tables = lab.handle.snapshot();
        fast.set_now(round as u64);
        general.set_now(round as u64);
        let mut batch: Vec<(u32, Vec<u8>)> = (0..64).map(|_| mutate(&mut rng, corpus)).collect();
        // Each vif's frames together, in the order they came, as a
        // worker's batches are (one receive queue's). The fast lane takes
        // a vector's first vif's frames before the general vector takes the
        // rest, so frames of two vifs interleaved in a vector could go in
        // another order than the general path alone takes them: a pod's
        // answer forwarded on its pair's old decision, which a packet of the
        // other pod before it in the vector has just made again (seed 15).
        // Either order is one the wire could have brought.
        batch.sort_by_key(|(vif, _)| *vif);
        let make = || -> Vec<Frame<Vec<u8>>> {
            batch
                .iter()
                .map(|(vif, bytes)| {
                    let mut buf = vec![0u8; HEADROOM + bytes.len() + 2000];
                    buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
                    Frame::new(buf, HEADROOM, bytes.len(), *vif).unwrap()
                })
                .collect()
        };
        let (mut a, mut b) = (make(), make());
        let (mut sa, mut sb) = (
            Spill::with_buffers(vec![vec![0u8; 4096]; 3], HEADROOM),
            Spill::with_buffers(vec![vec![0u8; 4096]; 3], HEADROOM),
        );
        // Every other batch, each vif's frames go in vectors of their own,
        // as a receive queue's do: the lane serves a vector's first vif
        // alone, so a vif that sorts late (g1) would rarely lead one.
        let runs: Vec<(usize, usize)> = if round % 2 == 0 {
            vec![(0, batch.len())]
        } else {
            let mut runs = Vec::new();
            let mut start = 0;
            for i in 1..=batch.len() {
                if i == batch.len() || batch[i].0 != batch[start].0 {
                    runs.push((start, i));
                    start = i;
                }
            }
            runs
        };
        for &(start, end) in &runs {
            fast.process(&tables, &mut a[start..end], &mut sa);
            general.process(&tables, &mut b[start..end], &mut sb);
        }
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.verdict, y.verdict, "verdicts differ for vif {} frame {:02x?}", batch[i].0, batch[i].1);
            assert_eq!(x.data(), y.data(), "bytes differ for frame {:02x?}", batch[i].1);
        }
        assert_eq!(sa.out.len(), sb.out.len());
        done += batch.len();
    }
    assert_eq!(fast.stats(), general.stats(), "counters differ");
    // Each frame left to the general path is counted once, by its cause:
    // with the fast path off, every frame, as `fast_path_off`.
    let off = general.general_causes()[vrouter::stats::GeneralCause::FastPathOff as usize];
    assert_eq!((off, general.general_frames()), (done as u64, done as u64), "with the fast path off, every frame");
    assert!(fast.general_frames() < done as u64, "the lane took some");
    let sent: u64 = fast.stats().vifs.iter().map(|v| v.tx_packets).sum();
    // A twentieth: the floating-IP comparison, whose corpus has the IPv6
    // frames too, sent 9.6 % of 20 million (seeds 60-64), under the tenth
    // asked for before them.
    assert!(sent > (cases / 20) as u64, "the comparison exercised forwarding: {sent} sent");
}

/// The fast path is an optimisation, not a second behaviour: with it on
/// and off, every frame must come out with the same verdict and bytes, and
/// every counter must agree.
#[test]
fn the_fast_path_matches_the_general_path_byte_for_byte() {
    let mut lab = Lab::new();
    add_a1_service_address(&mut lab);
    add_v6_routes(&mut lab);
    let limits = *lab.handle.load().limits();
    let mut fast = Pipeline::new(PipelineConfig::default(), &limits);
    let mut general = Pipeline::new(PipelineConfig { fast_path: false, ..PipelineConfig::default() }, &limits);
    compare_paths(&mut lab, &fast_corpus(), &mut fast, &mut general, |_, _| {});
}

/// The same with a policy in the pods' VRF: the fast path takes the
/// packets of flows that only forward, and leaves new flows, denied ones,
/// flows whose policy changed and flows whose ECMP member went away to the
/// general path. Both must agree on every frame, every counter and every
/// flow entry (its action, pinned member, packets, bytes and TCP flags),
/// while the policy, the service's members and the VRF's ECMP routes
/// change under them.
#[test]
fn the_fast_path_matches_the_general_path_with_flows() {
    use vrouter::tables::{EcmpGroup, NextHop, Object, ObjectKey, Op, RouteSpec, RouteTarget};
    let mut lab = Lab::new();
    add_a1_service_address(&mut lab);
    add_v6_routes(&mut lab);
    // The fast path's flow cache is its smallest, 64 sets of three for the
    // corpus's hundreds of flows: they crowd its sets, which take some in
    // the place of others, and the two paths must still agree.
    let small_cache = PipelineConfig { flow_cache_sets: Some(64), ..PipelineConfig::default() };
    let (mut fast, mut general, fast_flows, general_flows) = pipelines_with_flows(&lab, small_cache);
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, deny_udp_from(0, 4)))]).unwrap();
    let route = |p: &str, nh: u32, label: u32| {
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: BLUE,
            prefix: p.parse().unwrap(),
            target: RouteTarget { nh, label },
        }))
    };
    let unroute = |p: &str| Op::Delete(ObjectKey::Route(BLUE, p.parse().unwrap()));
    let reroute = |p: &str, nh: u32| match route(p, nh, NO) {
        Op::Add(o) => Op::Update(o),
        op => op,
    };
    compare_paths(&mut lab, &fast_corpus(), &mut fast, &mut general, |round, lab| {
        let change = match round {
            // After 300 batches the policy denies more: the flows it now
            // denies stop, on both paths alike.
            300 => vec![Op::Update(Object::Policy(BLUE, deny_udp_from(0, 9)))],
            // After 450 an IPv6 destination's flows, which remember their
            // routes, are routed by a longer prefix to another node; after
            // 750 by the /64 again, and the next change carries their
            // routes over (`lane::routed6_again`).
            450 => vec![route("fd00:2::5/128", 12, 50)],
            750 => vec![unroute("fd00:2::5/128")],
            // After 500 and 800 the same for an IPv4 destination and a
            // local pod, while the policy still denies flows to them: the
            // denied flows' drops take their routes again in the lane
            // (`lane::dropped`).
            500 => vec![route("10.2.0.5/32", 12, 50), reroute("10.1.0.3/32", NH_A1)],
            800 => vec![unroute("10.2.0.5/32"), reroute("10.1.0.3/32", NH_A2)],
            // After 600 the service loses a member: its flows move.
            600 => vec![Op::Update(Object::NextHop(
                NH_ECMP,
                NextHop::Composite(EcmpGroup::new(vec![
                    RouteTarget { nh: NH_UDP, label: 100 },
                    RouteTarget { nh: 13, label: 102 },
                ])),
            ))],
            // After 900 the policy goes: blue tracks flows for its service
            // route alone, and its flows are decided again (they forward).
            900 => vec![Op::Delete(ObjectKey::Policy(BLUE))],
            // After 1200 10.88.0.1 goes to the composite by a /15, wider
            // than the VRF's ECMP hint counts: the hint is no longer
            // complete, and its packets are tracked by their route alone.
            1200 => vec![unroute("10.88.0.0/16"), route("10.88.0.0/15", NH_ECMP, NO)],
            // After 1800 the /16 is back: the hint is complete again, and
            // says which packets are not tracked.
            1800 => vec![unroute("10.88.0.0/15"), route("10.88.0.0/16", NH_UDP, NO)],
            _ => return,
        };
        lab.writer.apply(&change).unwrap();
    });
    same_flows(&fast_flows, &general_flows);
    // The fast path's flow cache took hits, every route and policy change
    // above made it stale, and its sets were crowded.
    let cache = fast.flow_cache_counts().expect("a flow cache by default");
    assert!(cache.hits > 1000 && cache.fills > 100, "{cache:?}");
    assert!(cache.renewals >= 10, "{cache:?}");
    assert!(cache.crowded > 100, "{cache:?}");
}

/// A policy that denies UDP from source ports `lo..=hi` and allows the rest.
fn deny_udp_from(lo: u16, hi: u16) -> Policy {
    Policy {
        rules: vec![Rule {
            src: Endpoint::Any,
            dst: Endpoint::Any,
            proto: Some(ip_proto::UDP),
            sport: PortRange { lo, hi },
            dport: PortRange::ANY,
            action: PolicyAction::Deny,
        }],
        default: PolicyAction::Allow,
    }
}

/// A pipeline with the fast path (configured as `fast`) and one without,
/// each with a flow table of its own, on `lab`'s limits.
fn pipelines_with_flows(lab: &Lab, fast: PipelineConfig) -> (Pipeline, Pipeline, Arc<FlowTable>, Arc<FlowTable>) {
    let limits = *lab.handle.load().limits();
    let table = || Arc::new(FlowTable::new(FlowConfig { capacity: 50_000, ..FlowConfig::default() }, 64, 16));
    let (fast_flows, general_flows) = (table(), table());
    let fast = Pipeline::new(fast, &limits).with_flows(fast_flows.clone());
    let general = Pipeline::new(PipelineConfig { fast_path: false, ..PipelineConfig::default() }, &limits)
        .with_flows(general_flows.clone());
    (fast, general, fast_flows, general_flows)
}

/// Asserts that the two flow tables hold the same entries, each with the
/// same action, pinned member, rewrite, packets, bytes and TCP flags, and
/// that the comparison made and hit flows.
fn same_flows(fast: &FlowTable, general: &FlowTable) {
    let entries = |t: &FlowTable| {
        let mut v: Vec<_> = t
            .dump(None, usize::MAX, 10_000)
            .into_iter()
            .map(|e| (e.key, e.action, e.ecmp, e.nat, e.packets, e.bytes, e.tcp))
            .collect();
        v.sort_by_key(|e| format!("{:?}", e));
        v
    };
    let (a, b) = (entries(fast), entries(general));
    assert!(a.len() > 100, "the comparison made flows: {}", a.len());
    assert!(a.iter().any(|e| e.4 > 10), "and hit them");
    assert_eq!(a, b, "the flow tables differ");
}

/// The same through floating IPs: clients (from the public VRF's gateway
/// vif, and from the fabric, by the public network's label) reach pods a1
/// and a2 through the floating IP they share, DNATed; the pods' answers are
/// SNATed back and routed in the public VRF; a service's address that a1
/// holds in its own network, with a forwarded port, reached by a2 and by
/// a1 itself (hairpin NAT). The fast path takes the hits
/// of those pairs, rewrite and all; both paths must agree on every byte,
/// counter and flow entry while the public policy, the pods' policy, the
/// floating IP's members and the way back to the clients (one gateway,
/// then three by ECMP) change under them.
#[test]
fn the_fast_path_matches_the_general_path_through_floating_ips() {
    use vrouter::tables::{EcmpGroup, FloatingIp, NextHop, Object, ObjectKey, Op, PortMap, RouteSpec, RouteTarget};
    const NH_PUBLIC_LOOKUP: u32 = 52;
    const LABEL_PUBLIC: u32 = 40;
    const NH_SERVICE: u32 = 53;
    let mut lab = Lab::new();
    add_floating_ip(&mut lab);
    add_v6_routes(&mut lab);
    let remote_client = |n: u16| Ipv4Addr::new(198, 18, 0, n as u8);
    lab.writer
        .apply(&[
            Op::Add(Object::NextHop(NH_PUBLIC_LOOKUP, NextHop::VrfLookup { vrf: PUBLIC })),
            Op::Add(Object::Label(LABEL_PUBLIC, NH_PUBLIC_LOOKUP)),
            Op::Add(Object::Route(RouteSpec {
                network: None,
                vrf: PUBLIC,
                prefix: "198.18.0.0/15".parse().unwrap(),
                target: RouteTarget { nh: NH_UDP, label: 41 },
            })),
        ])
        .unwrap();
    // A service's address held by a1 as a floating IP of its own network,
    // port 80 forwarded to 8080, its other endpoint on another node: a2
    // calls it, and so does a1 (hairpin, whose answers are routed to a1
    // again, not to the service).
    let service = Ipv4Addr::new(10, 96, 0, 30);
    let mut a1 = lab.handle.load().vif(A1).unwrap().clone();
    let ports = [ip_proto::TCP, ip_proto::UDP].map(|proto| PortMap { proto, port: 80, target: 8080 });
    a1.floating.push(FloatingIp { address: service, vrf: BLUE, ports: ports.to_vec() });
    lab.writer
        .apply(&[
            Op::Update(Object::Vif(a1)),
            Op::Add(Object::NextHop(
                NH_SERVICE,
                NextHop::Composite(EcmpGroup::new(vec![
                    RouteTarget { nh: NH_A1, label: RouteTarget::NO_LABEL },
                    RouteTarget { nh: NH_UDP, label: 43 },
                ])),
            )),
            Op::Add(Object::Route(RouteSpec {
                network: None,
                vrf: BLUE,
                prefix: "10.96.0.30/32".parse().unwrap(),
                target: RouteTarget { nh: NH_SERVICE, label: RouteTarget::NO_LABEL },
            })),
        ])
        .unwrap();
    let (mut fast, mut general, fast_flows, general_flows) = pipelines_with_flows(&lab, PipelineConfig::default());
    let from_gw = L2 { src: mac(9), dst: router_mac() };
    let from = |vif: u32| L2 { src: mac(vif as u8), dst: router_mac() };
    let pod_ip = |vif: u32| if vif == A1 { a1_ip() } else { a2_ip() };
    let mut corpus = fast_corpus();
    for sport in 0..20u16 {
        let len = 64 + usize::from(sport);
        corpus.push((GW, build::udp4_frame(from_gw, CLIENT, FIP, 1000 + sport, 80, 64, len)));
        corpus.push((GW, tcp_ack(from_gw, CLIENT, FIP, 2000 + sport, 443)));
        corpus.push((GW, echo(from_gw, CLIENT, FIP, sport, 8)));
        let inner = build::udp4_frame(from_peer(), remote_client(sport), FIP, 3000 + sport, 80, 64, len);
        let tunnelled = build::mpls_tunnel_frame(
            from_peer(),
            Tunnel::Udp(6635),
            peer(1),
            node_ip(),
            LABEL_PUBLIC,
            64,
            sport,
            &inner[14..],
        );
        corpus.push((FABRIC, tunnelled));
        // The answers, from both pods: only the one a client's flow was
        // pinned to has its pair; the other's makes a flow of its own.
        for pod in [A1, A2] {
            corpus.push((pod, build::udp4_frame(from(pod), pod_ip(pod), CLIENT, 80, 1000 + sport, 64, len)));
            corpus.push((pod, tcp_ack(from(pod), pod_ip(pod), CLIENT, 443, 2000 + sport)));
            corpus.push((pod, echo(from(pod), pod_ip(pod), CLIENT, sport, 0)));
            corpus.push((
                pod,
                build::udp4_frame(from(pod), pod_ip(pod), remote_client(sport), 80, 3000 + sport, 64, len),
            ));
            // To the service, and a1's answers: to a2, or to itself from
            // the service's address.
            corpus.push((pod, build::udp4_frame(from(pod), pod_ip(pod), service, 4000 + sport, 80, 64, len)));
            corpus.push((pod, tcp_ack(from(pod), pod_ip(pod), service, 4000 + sport, 80)));
            let back_to = if pod == A1 { service } else { a2_ip() };
            corpus.push((A1, build::udp4_frame(from(A1), a1_ip(), back_to, 8080, 4000 + sport, 64, len)));
            corpus.push((A1, tcp_ack(from(A1), a1_ip(), back_to, 8080, 4000 + sport)));
        }
    }
    compare_paths(&mut lab, &corpus, &mut fast, &mut general, |round, lab| {
        let change = match round {
            // The public network denies some clients' ports: their pairs
            // stop, their answers with them.
            300 => vec![Op::Add(Object::Policy(PUBLIC, deny_udp_from(1000, 1004)))],
            // The pods' network gets a policy: the answers' entries are
            // judged by the public one, not by it.
            600 => vec![Op::Add(Object::Policy(BLUE, deny_udp_from(0, 79)))],
            // a2 stops serving the floating IP: its clients move to a1.
            900 => vec![Op::Update(Object::NextHop(
                51,
                NextHop::Composite(EcmpGroup::new(vec![RouteTarget { nh: NH_A1, label: RouteTarget::NO_LABEL }])),
            ))],
            // The public policy goes; the way back to remote clients moves.
            1200 => vec![
                Op::Delete(ObjectKey::Policy(PUBLIC)),
                Op::Update(Object::Route(RouteSpec {
                    network: None,
                    vrf: PUBLIC,
                    prefix: "198.18.0.0/15".parse().unwrap(),
                    target: RouteTarget { nh: NH_GRE, label: 42 },
                })),
            ],
            // The way back to remote clients goes over three gateways: an
            // answer takes the member its rewritten packet's hash selects.
            1500 => vec![Op::Update(Object::Route(RouteSpec {
                network: None,
                vrf: PUBLIC,
                prefix: "198.18.0.0/15".parse().unwrap(),
                target: RouteTarget { nh: NH_ECMP, label: RouteTarget::NO_LABEL },
            }))],
            _ => return,
        };
        lab.writer.apply(&change).unwrap();
    });
    same_flows(&fast_flows, &general_flows);
    let natted =
        fast_flows.dump(None, usize::MAX, 10_000).into_iter().filter(|e| !e.nat.is_none() && e.packets > 10).count();
    assert!(natted > 10, "the comparison hit floating IPs' pairs: {natted}");
}

/// The same across networks: blue's pods a1 and a2, and remote clients of
/// blue by its label, reach g1, a pod of green on this node, by a route
/// blue imports from green. The pairs' reverse entries live in green and
/// route g1's answers back in blue; the fast path takes those hits. Both
/// paths must agree on every byte, counter and flow entry while green's
/// policy (which judges the pairs too), blue's, the way back to the
/// remote clients (three nodes by ECMP: the answer's hash picks) and
/// green's tracking change under them.
#[test]
fn the_fast_path_matches_the_general_path_across_networks() {
    use vrouter::tables::{Object, ObjectKey, Op, RouteSpec, RouteTarget};
    let mut lab = Lab::new();
    lab.writer.apply(&green_pod_ops()).unwrap();
    add_v6_routes(&mut lab);
    // g1 speaks IPv6 too, reached from blue by the /128 it imports.
    let g1_ip6 = g1_ip6();
    lab.writer
        .apply(&[
            route_in(BLUE, "10.5.0.2/32", NH_G1, NO, Some(GREEN)),
            route_in(GREEN, "10.5.0.2/32", NH_G1, NO, None),
            route_in(BLUE, "fd00:5::2/128", NH_G1, NO, Some(GREEN)),
            route_in(GREEN, "fd00:5::2/128", NH_G1, NO, None),
            Op::Add(Object::Policy(BLUE, deny_udp_from(0, 4))),
            Op::Add(Object::Policy(GREEN, Policy::allow_all())),
        ])
        .unwrap();
    let (mut fast, mut general, fast_flows, general_flows) = pipelines_with_flows(&lab, PipelineConfig::default());
    let g1 = g1_ip();
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    let from = |vif: u32| L2 { src: mac(vif as u8), dst: router_mac() };
    let remote_client = |n: u16| Ipv4Addr::new(10, 2, 0, 10 + n as u8);
    let mut corpus = fast_corpus();
    for sport in 0..20u16 {
        let len = 64 + usize::from(sport);
        for (pod, ip) in [(A1, a1_ip()), (A2, a2_ip())] {
            corpus.push((pod, build::udp4_frame(from(pod), ip, g1, 1000 + sport, 80, 64, len)));
            corpus.push((pod, tcp_ack(from(pod), ip, g1, 2000 + sport, 443)));
            corpus.push((pod, echo(from(pod), ip, g1, sport, 8)));
            corpus.push((G1, build::udp4_frame(g1_l2, g1, ip, 80, 1000 + sport, 64, len)));
            corpus.push((G1, tcp_ack(g1_l2, g1, ip, 443, 2000 + sport)));
            corpus.push((G1, echo(g1_l2, g1, ip, sport, 0)));
        }
        // IPv6 both ways between blue's pods and g1: the answers' entries
        // route back in blue.
        for (pod, ip) in [(A1, a1_ip6()), (A2, a2_ip6())] {
            corpus.push((pod, build::udp6_frame(from(pod), ip, g1_ip6, 1000 + sport, 80, 64, len + 20)));
            corpus.push((G1, build::udp6_frame(g1_l2, g1_ip6, ip, 80, 1000 + sport, 64, len + 20)));
            let ack = |l2, src: Ipv6Addr, dst: Ipv6Addr, sport, dport| {
                build::probe(l2, (IpAddr::V6(src), IpAddr::V6(dst)), ip_proto::TCP, sport, dport, TracePacket::Next)
                    .unwrap()
            };
            corpus.push((pod, ack(from(pod), ip, g1_ip6, 2000 + sport, 443)));
            corpus.push((G1, ack(g1_l2, g1_ip6, ip, 443, 2000 + sport)));
        }
        let inner = build::udp4_frame(from_peer(), remote_client(sport), g1, 3000 + sport, 80, 64, len);
        let tunnelled = |tunnel| {
            build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), LABEL_BLUE, 64, sport, &inner[14..])
        };
        corpus.push((FABRIC, tunnelled(Tunnel::Udp(6635))));
        corpus.push((FABRIC, tunnelled(Tunnel::Gre)));
        corpus.push((G1, build::udp4_frame(g1_l2, g1, remote_client(sport), 80, 3000 + sport, 64, len)));
    }
    compare_paths(&mut lab, &corpus, &mut fast, &mut general, |round, lab| {
        let change = match round {
            // Green's policy denies some of blue's ports: the pairs it
            // judges stop, their answers with them.
            300 => vec![Op::Update(Object::Policy(GREEN, deny_udp_from(1000, 1004)))],
            // Blue's denies more of its own.
            600 => vec![Op::Update(Object::Policy(BLUE, deny_udp_from(1005, 1009)))],
            // The remote clients are reached over three nodes: an answer
            // takes the member its hash selects.
            900 => vec![Op::Update(Object::Route(RouteSpec {
                network: None,
                vrf: BLUE,
                prefix: "10.2.0.0/24".parse().unwrap(),
                target: RouteTarget { nh: NH_ECMP, label: RouteTarget::NO_LABEL },
            }))],
            // Green tracks no flows any more: its answers are not looked
            // up, and it has no route back to blue.
            1200 => vec![Op::Delete(ObjectKey::Policy(GREEN))],
            _ => return,
        };
        lab.writer.apply(&change).unwrap();
    });
    same_flows(&fast_flows, &general_flows);
    let answered = fast_flows
        .dump(None, usize::MAX, 10_000)
        .into_iter()
        .filter(|e| e.key.vrf == GREEN && e.route_vrf == Some(BLUE) && e.packets > 10)
        .map(|e| e.key.src >> 32 == 0xffff || e.key.src >> 32 == 0)
        .fold((0, 0), |(v4, v6), mapped| if mapped { (v4 + 1, v6) } else { (v4, v6 + 1) });
    // Fewer IPv6 frames than IPv4 in the corpus: over 16 seeds its busy answer pairs
    // ranged 13-25, and CI's random seed 3816054057 made 10.
    assert!(
        answered.0 > 10 && answered.1 >= 5,
        "the comparison hit pairs' answers across networks (IPv4, IPv6): {answered:?}"
    );
}

/// A TCP segment with ACK alone (no SYN: the fast path's kind), checksummed.
fn tcp_ack(l2: L2, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = build::tcp4_syn_frame(l2, src, dst, sport, dport, 1460);
    let tcp_at = 14 + 20;
    f[tcp_at + 13] = 0x10;
    f[tcp_at + 16..tcp_at + 18].fill(0);
    let ip = &f[14..];
    let c = transport_checksum_v4(
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
        ip_proto::TCP,
        &ip[20..usize::from(u16::from_be_bytes([ip[2], ip[3]]))],
    );
    f[tcp_at + 16..tcp_at + 18].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ICMP echo request (`kind` 8) or reply (0) with identifier `id`.
fn echo(l2: L2, src: Ipv4Addr, dst: Ipv4Addr, id: u16, kind: u8) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
    let c = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    build::ip_frame(l2, &build::ipv4(src, dst, ip_proto::ICMP, 64, true, &icmp))
}

/// A capture reads every frame of the vif it watches, as it came in: its
/// filter runs in the worker and its one-line summary in vrctl, on whatever
/// a pod or the fabric sent. Neither may panic on any of the fuzzed frames
/// (tunnels with mangled labels, GRE options, cut headers), and a filter
/// that asks for nothing keeps every frame.
#[test]
fn random_and_mutated_frames_never_break_a_capture() {
    use vrouter::capture::{summary, Filter};
    let cases: usize = std::env::var("VROUTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let corpus = corpus();
    let mut rng = Rng(seed().max(1));
    let filters = [
        Filter::default(),
        Filter { one: (Some(a1_ip().into()), None), ..Filter::default() },
        Filter { one: (None, Some(2)), peer: (Some(remote_ip().into()), Some(1)), proto: Some(ip_proto::UDP) },
        Filter { proto: Some(ip_proto::TCP), ..Filter::default() },
    ];
    let mut kept = [0usize; 4];
    for _ in 0..cases {
        let (_, frame) = mutate(&mut rng, &corpus);
        for (i, f) in filters.iter().enumerate() {
            kept[i] += usize::from(f.matches(&frame));
        }
        assert!(!summary(&frame).is_empty());
    }
    assert_eq!(kept[0], cases, "no filter keeps everything");
    assert!(kept[1] > 0 && kept[1] < cases, "an address filter keeps some: {kept:?}");
    assert!(kept[2] > 0 && kept[2] < kept[1], "so does one of both ends, fewer: {kept:?}");
}
