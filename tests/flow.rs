//! Flows: the table (pairs, concurrency, limits, ageing on an injected
//! clock), and flows in the pipeline (stateful policy, policy changes,
//! pinned ECMP members).

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::sync::Arc;
use vrouter::flow::{stale_ends, Endpoint, Policy, PolicyAction, PortRange, Rule};
use vrouter::flow::{CreateError, DirSpec, FlowAction, FlowConfig, FlowKey, FlowTable, Nat, TcpState};
use vrouter::pipeline::Verdict;
use vrouter::pktgen::build::{self, L2};
use vrouter::stats::DropReason;
use vrouter::tables::{EcmpGroup, NextHop, Object, ObjectKey, Op, Route, RouteSpec, RouteTarget};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn key(i: u32, proto: u8) -> FlowKey {
    FlowKey::v4(1, proto, 0x0a01_0000 | (i >> 16), 0x0a02_0000 | (i & 0xffff), 1024 + (i % 50_000) as u16, 80)
}

fn pair(k: FlowKey) -> (DirSpec, DirSpec) {
    let f = DirSpec { hash: 0x1111, ..DirSpec::new(k, FlowAction::Forward) };
    (f, DirSpec { key: k.reversed(), hash: 0x2222, ..f })
}

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(FlowConfig { capacity, per_vif: u32::MAX, per_vrf: u32::MAX, ..FlowConfig::default() }, 8, 8)
}

#[test]
fn a_pair_is_two_linked_entries() {
    let t = table(1000);
    let k = key(1, TCP);
    let member = RouteTarget { nh: 7, label: 20 };
    // Where the plain entries keep their hash, these keep their ports.
    let nat = Nat { dst: Some(0x0a01_0002), dport: Some(8080), ..Nat::default() };
    let f = DirSpec {
        key: k,
        action: FlowAction::Forward,
        ecmp: Some(member),
        nat,
        route_vrf: None,
        hash: 0xdead_beef,
        one_way: false,
        route: None,
        unrouted: false,
    };
    let r = DirSpec {
        key: k.reversed(),
        action: FlowAction::Forward,
        ecmp: None,
        nat: Nat { src: Some(0xb916_61bc), ..Nat::default() },
        route_vrf: Some(6),
        hash: 0xdead_beef,
        one_way: false,
        route: None,
        unrouted: false,
    };
    let made = t.create(&f, &r, 3, 9, 1_000).unwrap();
    let fwd = t.lookup(&k).unwrap();
    let rev = t.lookup(&k.reversed()).unwrap();
    assert_eq!((fwd.slot, fwd.reverse), (made.slot, rev.slot));
    assert_eq!(rev.reverse, fwd.slot);
    assert_eq!((fwd.ecmp, fwd.nat, fwd.policy_generation), (Some(member), nat, 9));
    assert_eq!(
        (rev.nat, rev.route_vrf, fwd.route_vrf),
        (Nat { src: Some(0xb916_61bc), ..Nat::default() }, Some(6), None)
    );
    assert_eq!(t.len(), 1);
    // The same flow again: the existing pair.
    assert!(matches!(t.create(&f, &r, 3, 9, 1_000), Err(CreateError::Exists(h)) if h.slot == fwd.slot));
    // Counting and inspection.
    t.touch(fwd.slot, 100, 0x02, 1_500);
    t.touch(rev.slot, 60, 0x12, 1_600);
    t.touch(fwd.slot, 40, 0x10, 1_700);
    let info = t.get(fwd.slot, 2_000).unwrap();
    assert_eq!((info.packets, info.bytes, info.tcp, info.vif), (2, 140, TcpState::Established, 3));
    assert_eq!((info.age_ms, info.idle_ms, info.forward), (1_000, 300, true));
    assert!(!t.get(rev.slot, 2_000).unwrap().forward);
    // A policy change turns it to drop, both ways, and counts the pair once.
    t.decide_again(&k, &fwd, FlowAction::Drop(DropReason::Discard), 10, false);
    let again = t.lookup(&k).unwrap();
    assert_eq!((again.action, again.policy_generation), (FlowAction::Drop(DropReason::Discard), 10));
    assert_eq!(t.lookup(&k.reversed()).unwrap().action, FlowAction::Drop(DropReason::Discard));
    assert_eq!(t.redecided(), 1);
    // The TCP flags share the action word, and outlive the change.
    assert_eq!(t.get(fwd.slot, 2_000).unwrap().tcp, TcpState::Established);
    assert!(t.remove(rev.slot), "removing either entry removes the pair");
    assert!(t.lookup(&k).is_none() && t.lookup(&k.reversed()).is_none());
    assert_eq!((t.len(), t.churn()), (0, (1, 1)));
    assert!(!t.remove(fwd.slot), "gone already");
}

/// `forward_only`, the fast path's read, answers exactly for the entries
/// that need nothing but forwarding under the current policy, and agrees
/// with `lookup` on those.
#[test]
fn only_plain_forwarding_entries_are_settled() {
    use vrouter::flow::{Forwarding, PolicyGenerations, RouteMemo};
    let t = table(1000);
    // Under the VRF's generation `now`, its own policy last changed at `own`.
    let told = |k: &FlowKey, now, own| {
        let policy = Some(PolicyGenerations { now, own_change: own });
        t.forward_only(&t.probe(k), policy).map(|f| Forwarding { route: RouteMemo::NONE, ..f })
    };
    let settled = |k: &FlowKey, generation: Option<u32>| match generation {
        Some(g) => told(k, g, g),
        None => t.forward_only(&t.probe(k), None).map(|f| Forwarding { route: RouteMemo::NONE, ..f }),
    };
    let member = RouteTarget { nh: 7, label: 20 };
    // Plain both ways: the member pinned on the forward entry only.
    let k = key(1, TCP);
    let (mut f, r) = pair(k);
    f.ecmp = Some(member);
    let made = t.create(&f, &r, 3, 9, 0).unwrap();
    let rev = t.lookup(&k.reversed()).unwrap().slot;
    assert_eq!(
        settled(&k, Some(9)),
        Some(Forwarding { slot: made.slot, ecmp: Some(member), route: RouteMemo::NONE, hash: 0x1111 })
    );
    assert_eq!(
        settled(&k.reversed(), Some(9)),
        Some(Forwarding { slot: rev, ecmp: None, route: RouteMemo::NONE, hash: 0x2222 })
    );
    assert_eq!(
        settled(&k, None),
        Some(Forwarding { slot: made.slot, ecmp: Some(member), route: RouteMemo::NONE, hash: 0x1111 }),
        "no policy: any generation"
    );
    assert_eq!(settled(&k, Some(10)), None, "decided under another policy");
    // Another network's change moved the generation: the VRF's own
    // policy last changed at 9 or before, and decided the pair.
    assert_eq!(told(&k, 10, 9).map(|f| f.slot), Some(made.slot), "kept");
    assert_eq!(told(&k, 12, 3).map(|f| f.slot), Some(made.slot), "kept");
    assert_eq!(told(&k, 12, 10), None, "its own changed since");
    assert_eq!(told(&k, 3, 10), None, "its own changed since, and the generations wrapped past 0");
    assert_eq!(settled(&key(2, TCP), Some(9)), None, "no such flow");
    // A policy change keeps the entry plain: it settles under the new generation.
    t.decide_again(&k, &made, FlowAction::Drop(DropReason::FlowActionDrop), 10, false);
    assert_eq!(settled(&k, Some(10)), None, "dropped");
    t.decide_again(&k, &made, FlowAction::Forward, 11, false);
    assert_eq!(
        settled(&k, Some(11)),
        Some(Forwarding { slot: made.slot, ecmp: Some(member), route: RouteMemo::NONE, hash: 0x1111 })
    );
    // A rewrite, or another VRF to route in, is never settled: the general
    // path carries them out.
    let k = key(3, UDP);
    let (mut f, mut r) = pair(k);
    f.nat = Nat { dst: Some(0x0a01_0002), ..Nat::default() };
    r.nat = Nat { src: Some(0xb916_61bc), ..Nat::default() };
    r.route_vrf = Some(6);
    t.create(&f, &r, 3, 9, 0).unwrap();
    assert_eq!((settled(&k, Some(9)), settled(&k.reversed(), Some(9))), (None, None));
    let k = key(4, UDP);
    let (f, mut r) = pair(k);
    r.route_vrf = Some(6);
    r.key.vrf = 6;
    t.create(&f, &r, 3, 9, 0).unwrap();
    assert!(settled(&k, Some(9)).is_some() && settled(&r.key, Some(9)).is_none());
    // A pair of two VRFs (to a pod of another network), which that
    // network's policy may judge, is checked whichever change moved the
    // generation.
    assert_eq!(told(&k, 10, 9), None);
    // A dropped flow.
    let k = key(5, UDP);
    let (mut f, mut r) = pair(k);
    (f.action, r.action) = (FlowAction::Drop(DropReason::FlowActionDrop), FlowAction::Drop(DropReason::FlowActionDrop));
    t.create(&f, &r, 3, 9, 0).unwrap();
    assert_eq!(settled(&k, Some(9)), None);
    assert!(t.lookup(&k).is_some());
}

/// An entry remembers the route the data path looked up for it, for its
/// next packets. Workers update it without a lock, so an update made from
/// an old read must fail: when another worker remembered first, and when
/// the slot holds another entry now (whose route may differ).
#[test]
fn a_flow_remembers_its_route_until_its_slot_holds_another_entry() {
    let t = table(1000);
    let k = key(1, UDP);
    let (f, r) = pair(k);
    t.create(&f, &r, 3, 9, 0).unwrap();
    let read =
        || t.forward_only(&t.probe(&k), Some(vrouter::flow::PolicyGenerations { now: 9, own_change: 9 })).unwrap();
    let first = read();
    assert_eq!(first.route.route(), Route { version: 0, leaf: 0 }, "nothing remembered yet");
    let route = Route { version: 77, leaf: 5 };
    t.remember_route(&first, route);
    let second = read();
    assert_eq!(second.route.route(), route);
    t.remember_route(&first, Route { version: 78, leaf: 6 });
    assert_eq!(read().route.route(), route, "an update from a read older than the last update");
    t.remember_route(&second, Route { version: 79, leaf: 1 << 24 });
    assert_eq!(read().route.route(), route, "a leaf that does not fit is not remembered");
    // The slot's next entry starts with nothing, and no update meant for
    // the old one reaches it: not even from a read that saw nothing either.
    assert!(t.remove(second.slot));
    t.create(&f, &r, 3, 9, 0).unwrap();
    let fresh = read();
    assert_eq!(fresh.slot, second.slot, "the same slot, reused");
    assert_eq!(fresh.route.route().version, 0);
    t.remember_route(&first, Route { version: 80, leaf: 2 });
    t.remember_route(&second, Route { version: 81, leaf: 2 });
    assert_eq!(read().route.route().version, 0, "updates for the slot's old entry");
    t.remember_route(&fresh, route);
    assert_eq!(read().route.route(), route);
}

/// A new flow's forward entry remembers the route its first packet was
/// looked up with, so that its second packet is a full hit already (no
/// route lookup) and not only its third. The reverse entry remembers
/// nothing until its own first packet.
#[test]
fn a_new_flow_remembers_its_first_packets_route() {
    let (mut lab, flows) = lab_allowing_all();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    let first = [
        (udp(1, a1_ip(), a2_ip(), 2000, 53), FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(a2_ip()), 2000, 53)),
        (
            tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80),
            FlowKey::v4(BLUE, TCP, u32::from(a1_ip()), u32::from(a2_ip()), 40000, 80),
        ),
        (udp(1, a1_ip(), service, 2001, 53), FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(service), 2001, 53)),
    ];
    let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
    for (frame, key) in first {
        assert!(matches!(lab.run(A1, frame).0, Verdict::Tx(_)));
        let memo = flows.forward_only(&flows.probe(&key), None).expect("a plain forward entry").route;
        let dst = key.dst as u32;
        assert_eq!(blue.v4.recall(memo.route()), Some(blue.v4.lookup(dst)), "{key:?}: its route, in this version");
        let reverse = flows.forward_only(&flows.probe(&key.reversed()), None).expect("a plain reverse entry").route;
        assert_eq!(reverse.route().version, 0, "{key:?}: the answers' route is not this one");
    }
    // IPv6's, in the VRF's IPv6 table.
    for dst in [a2_ip6(), "fd00:2::9".parse().unwrap()] {
        let frame = build::udp6_frame(from_a1(), a1_ip6(), dst, 2002, 53, 64, 100);
        assert!(matches!(lab.run(A1, frame).0, Verdict::Tx(_)));
        let key = FlowKey::v6(BLUE, UDP, u128::from(a1_ip6()), u128::from(dst), 2002, 53);
        let memo = flows.forward_only(&flows.probe(&key), None).expect("a plain forward entry").route;
        let recalled = blue.v6.recall(memo.route());
        assert_eq!(recalled, Some(blue.v6.lookup(u128::from(dst))), "{dst}: its route, in this version");
        assert!(recalled.unwrap().is_some());
    }
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_the_old() {
    let t = table(100);
    for i in 0..100 {
        let (f, r) = pair(key(i, UDP));
        t.create(&f, &r, 1, 0, 0).unwrap();
    }
    let (f, r) = pair(key(100, UDP));
    assert_eq!(t.create(&f, &r, 1, 0, 0), Err(CreateError::TableFull));
    assert!((0..100).all(|i| t.lookup(&key(i, UDP)).is_some()), "existing flows unaffected");
    assert_eq!(t.len(), 100);
}

#[test]
fn per_vif_and_per_vrf_limits_keep_one_pod_from_taking_the_table() {
    let t = FlowTable::new(FlowConfig { capacity: 1000, per_vif: 10, per_vrf: 15, ..FlowConfig::default() }, 8, 8);
    for i in 0..10 {
        let (f, r) = pair(key(i, UDP));
        t.create(&f, &r, 2, 0, 0).unwrap();
    }
    let (f, r) = pair(key(10, UDP));
    assert_eq!(t.create(&f, &r, 2, 0, 0), Err(CreateError::VifLimit), "vif 2 is at its limit");
    for i in 10..15 {
        let (f, r) = pair(key(i, UDP));
        t.create(&f, &r, 3, 0, 0).unwrap();
    }
    let (f, r) = pair(key(15, UDP));
    assert_eq!(t.create(&f, &r, 4, 0, 0), Err(CreateError::VrfLimit), "VRF 1 is at its limit");
    let other_vrf = FlowKey { vrf: 2, ..key(15, UDP) };
    let (f, r) = pair(other_vrf);
    t.create(&f, &r, 4, 0, 0).unwrap();
    assert_eq!(t.counts(2, 1), (10, 15));
    assert_eq!(t.counts(4, 2), (1, 1));
}

#[test]
fn flows_age_by_state_on_the_callers_clock() {
    let cfg = FlowConfig {
        capacity: 100,
        idle_ms: 180_000,
        drop_ms: 30_000,
        closed_ms: 10_000,
        half_open_ms: 20_000,
        ..FlowConfig::default()
    };
    let t = FlowTable::new(cfg, 8, 8);
    let mk = |i: u32, proto: u8, action: FlowAction| {
        let k = key(i, proto);
        t.create(&DirSpec::new(k, action), &DirSpec::new(k.reversed(), action), 1, 0, 0).unwrap()
    };
    let udp = mk(1, UDP, FlowAction::Forward);
    let syn = mk(2, TCP, FlowAction::Forward);
    let est = mk(3, TCP, FlowAction::Forward);
    let fin = mk(4, TCP, FlowAction::Forward);
    let dropped = mk(5, UDP, FlowAction::Drop(DropReason::Discard));
    t.touch(syn.slot, 60, 0x02, 0);
    for (h, flags) in [(est, [0x02, 0x12, 0x10]), (fin, [0x02, 0x12, 0x10])] {
        t.touch(h.slot, 60, flags[0], 0);
        t.touch(h.reverse, 60, flags[1], 0);
        t.touch(h.slot, 60, flags[2], 0);
    }
    t.touch(fin.slot, 60, 0x11, 0);
    t.touch(fin.reverse, 60, 0x11, 0);
    assert_eq!(t.get(fin.slot, 0).unwrap().tcp, TcpState::Closed);
    assert_eq!(t.get(syn.slot, 0).unwrap().tcp, TcpState::HalfOpen);
    let sweep_all = |now| (0..4).map(|_| t.sweep(now, 100)).sum::<usize>();
    assert_eq!(sweep_all(9_999), 0, "nothing has timed out yet");
    assert_eq!(sweep_all(10_000), 1, "the closed flow goes first");
    assert!(t.lookup(&key(4, TCP)).is_none());
    assert_eq!(sweep_all(20_000), 1, "then the half-open one");
    assert_eq!(sweep_all(30_000), 1, "then the dropped one");
    // A packet keeps a flow alive; the other idles out.
    t.touch(udp.reverse, 60, 0, 100_000);
    assert_eq!(sweep_all(180_000), 1, "the idle established flow");
    assert!(t.lookup(&key(1, UDP)).is_some(), "the UDP flow saw a packet at 100 s");
    assert_eq!(sweep_all(280_000), 1);
    assert!(t.is_empty());
    let _ = (est, dropped);
}

/// An entry keeps its last packet's time in 32 bits of milliseconds:
/// idle times and ageing are right across the wrap (every 49.7 days of
/// the clock), and a timeout past 2^31 ms is cut to it.
#[test]
fn ageing_is_right_across_the_clocks_32_bit_wrap() {
    let t = FlowTable::new(FlowConfig { capacity: 100, idle_ms: 180_000, ..FlowConfig::default() }, 8, 8);
    let start = (1u64 << 32) - 5_000;
    let k = key(1, UDP);
    let made = t
        .create(&DirSpec::new(k, FlowAction::Forward), &DirSpec::new(k.reversed(), FlowAction::Forward), 1, 0, start)
        .unwrap();
    t.touch(made.reverse, 60, 0, start + 6_000);
    let info = t.get(made.slot, start + 10_000).unwrap();
    assert_eq!((info.idle_ms, info.age_ms), (4_000, 10_000));
    let sweep_all = |now| (0..4).map(|_| t.sweep(now, 100)).sum::<usize>();
    assert_eq!(sweep_all(start + 6_000 + 179_999), 0, "a packet after the wrap keeps it");
    assert_eq!(sweep_all(start + 6_000 + 180_000), 1);
    let long = FlowTable::new(FlowConfig { idle_ms: u64::MAX, ..FlowConfig::default() }, 8, 8);
    assert_eq!(long.config().idle_ms, vrouter::flow::MAX_TIMEOUT_MS);
}

#[test]
fn sweeping_does_a_bounded_amount_of_work() {
    let t = FlowTable::new(FlowConfig { capacity: 10_000, idle_ms: 1, ..FlowConfig::default() }, 8, 8);
    for i in 0..10_000 {
        let (f, r) = pair(key(i, UDP));
        t.create(&f, &r, 1, 0, 0).unwrap();
    }
    let removed = t.sweep(10, 64);
    assert!(removed <= 64, "at most one pair per slot looked at: {removed}");
    let mut total = removed;
    let mut rounds = 1;
    while !t.is_empty() {
        total += t.sweep(10, 64);
        rounds += 1;
    }
    assert_eq!(total, 10_000);
    assert!(rounds >= 10_000 * 2 * 5 / 4 / 64, "{rounds} rounds of 64 slots cover the table");
}

#[test]
fn workers_racing_to_create_the_same_flows_make_one_pair_each() {
    let t = Arc::new(table(50_000));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                let mut mine = 0;
                for i in 0..20_000 {
                    let (f, r) = pair(key(i, TCP));
                    match t.create(&f, &r, 1, 0, 0) {
                        Ok(_) => mine += 1,
                        Err(CreateError::Exists(h)) => assert_eq!(t.lookup(&key(i, TCP)).unwrap().slot, h.slot),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                mine
            })
        })
        .collect();
    let made: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(made, 20_000);
    assert_eq!(t.len(), 20_000);
    for i in 0..20_000 {
        let h = t.lookup(&key(i, TCP)).unwrap();
        assert_eq!(t.lookup(&key(i, TCP).reversed()).unwrap().slot, h.reverse);
    }
}

#[test]
fn readers_never_see_a_torn_entry_while_pairs_come_and_go() {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    let t = Arc::new(table(4_096));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds_done = Arc::new(AtomicU32::new(0));
    let writer = {
        let (t, stop, rounds_done) = (Arc::clone(&t), Arc::clone(&stop), Arc::clone(&rounds_done));
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..2_000 {
                    // The NAT address encodes the key, so a reader can check it.
                    let k = key(i, UDP);
                    let nat = Nat { dst: Some(i ^ round), ..Nat::default() };
                    let f = DirSpec { nat, ..DirSpec::new(k, FlowAction::Forward) };
                    let r = DirSpec::new(k.reversed(), FlowAction::Forward);
                    let _ = t.create(&f, &r, 1, round, 0);
                }
                for i in 0..2_000 {
                    if let Some(h) = t.lookup(&key(i, UDP)) {
                        t.remove(h.slot);
                    }
                }
                round += 1;
                rounds_done.store(round, Relaxed);
            }
            round
        })
    };
    // Reads until the writer has been through a few rounds: a fixed number
    // of reads raced too little when the writer's thread got the core late
    // (a loaded machine). Bounded, so that a stuck writer fails the test.
    let mut seen = 0u64;
    let started = std::time::Instant::now();
    for pass in 0.. {
        if (pass >= 200 && rounds_done.load(Relaxed) > 4) || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        for i in 0..2_000 {
            if let Some(h) = t.lookup(&key(i, UDP)) {
                // The action's generation and the NAT address were written together.
                assert_eq!(h.nat.dst, Some(i ^ h.policy_generation), "a torn entry for flow {i}");
                seen += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 2 && seen > 1000, "the test raced for real: {rounds} rounds, {seen} hits");
}

/// Workers and the control plane doing everything at once to a small,
/// crowded table (creating pairs, some across VRFs; removing, ageing,
/// flushing; deciding again, keeping decisions, re-pinning, counting)
/// leave it whole: each pair's entries name each other and are found by
/// their keys, the pair count and every vif's and VRF's count match the
/// pairs there are, and once flushed the table takes the same flows into
/// the same slots as a new one (no slot, count or tag was leaked). A count
/// leaked up would refuse a vif's flows for good under its limit; a slot
/// leaked, take capacity from every flow after.
#[test]
fn a_table_worked_on_from_every_side_at_once_stays_whole() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    const KEYS: u32 = 600;
    const VIFS: u32 = 4;
    const VRFS: u32 = 3;
    let cfg = FlowConfig {
        capacity: 128,
        per_vif: 36,
        per_vrf: 48,
        idle_ms: 40,
        drop_ms: 20,
        closed_ms: 10,
        half_open_ms: 30,
        ..FlowConfig::default()
    };
    // A third of the pairs answer in another VRF, as a floating IP's do.
    let spec = |i: u32| {
        let k = FlowKey::v4(i % VRFS, UDP, 0x0a01_0000 | i, 0x0a02_0000 | (i % 7), 1024 + i as u16, 53);
        let rvrf = if i % 3 == 0 { (i + 1) % VRFS } else { i % VRFS };
        let r = FlowKey::v4(rvrf, UDP, 0x0a02_0000 | (i % 7), 0x0a01_0000 | i, 53, 1024 + i as u16);
        let f = DirSpec { hash: i, ..DirSpec::new(k, FlowAction::Forward) };
        (f, DirSpec { key: r, hash: !i, ..DirSpec::new(r, FlowAction::Forward) })
    };
    let t = Arc::new(FlowTable::new(cfg, VIFS as usize, VRFS as usize));
    let clock = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (t, clock) = (Arc::clone(&t), Arc::clone(&clock));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                let mut made = 0u32;
                for op in 0..150_000u32 {
                    let now = clock.fetch_add(u64::from(rng.below(2) as u32), Relaxed);
                    let i = rng.below(KEYS as usize) as u32;
                    let (f, r) = spec(i);
                    let found = || t.lookup(&f.key);
                    match rng.below(12) {
                        0..=4 => {
                            if t.create(&f, &r, i % VIFS, op, now).is_ok() {
                                made += 1;
                            }
                        }
                        5 => {
                            // By either entry, as an operator's delete may.
                            if let Some(h) = t.lookup(if op % 2 == 0 { &f.key } else { &r.key }) {
                                t.remove(h.slot);
                            }
                        }
                        6 => {
                            t.sweep(now, 16);
                        }
                        7 => {
                            if let Some(h) = found() {
                                let action = if op % 2 == 0 {
                                    FlowAction::Forward
                                } else {
                                    FlowAction::Drop(DropReason::FlowActionDrop)
                                };
                                t.decide_again(&f.key, &h, action, op, false);
                            }
                        }
                        8 => {
                            if let Some(h) = found() {
                                t.keep_decision(&f.key, &h, op);
                            }
                        }
                        9 => {
                            if let Some(h) = found() {
                                t.set_ecmp(&f.key, h.slot, Some(RouteTarget { nh: op % 100, label: 16 }));
                            }
                        }
                        10 => {
                            // Either direction's packet, TCP flags and all.
                            let k = if op % 2 == 0 { f.key } else { r.key };
                            if let Some(h) = t.lookup(&k) {
                                t.touch(h.slot, 100, (op % 32) as u8, now);
                            }
                        }
                        _ => {
                            if op % 500 == 0 {
                                t.flush();
                            }
                        }
                    }
                }
                made
            })
        })
        .collect();
    let made: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(made > 10_000, "the workers made pairs ({made}), and so raced over slots");

    let now = clock.load(Relaxed);
    let entries = t.dump(None, usize::MAX, now);
    let forward: Vec<_> = entries.iter().filter(|e| e.forward).collect();
    assert!(!forward.is_empty() && forward.len() <= cfg.capacity, "{} pairs", forward.len());
    assert_eq!(entries.len(), 2 * forward.len(), "every entry has its other");
    for e in &entries {
        let other = t.get(e.reverse, now).unwrap_or_else(|| panic!("{e:?}: its other entry is gone"));
        assert_eq!((other.reverse, other.forward), (e.slot, !e.forward), "{e:?} and {other:?}");
        assert_eq!(t.lookup(&e.key).map(|h| h.slot), Some(e.slot), "{e:?} is found by its key");
    }
    assert_eq!(t.len(), forward.len(), "the pair count");
    for vif in 0..VIFS {
        let mine = forward.iter().filter(|e| e.vif == vif).count();
        assert_eq!(t.counts(vif, 0).0 as usize, mine, "vif {vif}'s count");
    }
    for vrf in 0..VRFS {
        let held = forward.iter().filter(|e| e.key.vrf == vrf).count();
        assert_eq!(t.counts(0, vrf).1 as usize, held, "VRF {vrf}'s count");
    }

    assert_eq!(t.flush(), forward.len());
    assert!(t.is_empty() && t.dump(None, usize::MAX, now).is_empty());
    assert!((0..VIFS.max(VRFS)).all(|n| t.counts(n, n) == (0, 0)), "every count is back to 0");
    let new = FlowTable::new(cfg, VIFS as usize, VRFS as usize);
    for i in 0..KEYS {
        let (f, r) = spec(i);
        let slots = |t: &FlowTable| {
            t.create(&f, &r, i % VIFS, 0, now).map(|h| (h.slot, h.reverse)).map_err(|e| format!("{e:?}"))
        };
        assert_eq!(slots(&t), slots(&new), "flow {i} in the flushed table and in a new one");
    }
}

#[test]
fn half_a_million_pairs_fit_in_256_mib() {
    let bytes = FlowTable::memory_for(&FlowConfig::default(), 4355, 4096);
    let per_pair = bytes / (512 * 1024);
    eprintln!("flow table: {per_pair} bytes per pair, {:.1} MiB for 512K pairs", bytes as f64 / 1048576.0);
    assert!(bytes < 256 << 20, "{bytes} bytes");
    assert_eq!(
        table(1000).memory_bytes(),
        FlowTable::memory_for(&FlowConfig { capacity: 1000, ..FlowConfig::default() }, 8, 8)
    );
}

/// A decision made for a pair that has gone since it was read (aged out,
/// flushed, deleted on another thread), whose slots another pair took
/// meanwhile, leaves that other pair alone. Until this, that pair's actions
/// were rewritten with the gone pair's decision: a denied flow let
/// through, or its stamp made current so that no policy judged it again;
/// and an ECMP member pinned again for the gone pair moved it.
#[test]
fn a_decision_made_for_a_pair_that_went_leaves_the_next_one_alone() {
    let t = table(4);
    let (f, r) = pair(key(1, UDP));
    let gone = t.create(&f, &r, 1, 5, 0).unwrap();
    assert!(t.remove(gone.slot));
    let (f, r) = pair(key(2, UDP));
    let next = t.create(&f, &r, 1, 5, 0).unwrap();
    let reused = [next.slot, next.reverse].iter().any(|s| [gone.slot, gone.reverse].contains(s));
    assert!(reused, "the next pair takes a slot of the one that went");
    t.decide_again(&key(1, UDP), &gone, FlowAction::Drop(DropReason::FlowActionDrop), 6, false);
    t.keep_decision(&key(1, UDP), &gone, 7);
    for slot in [gone.slot, gone.reverse] {
        t.set_ecmp(&key(1, UDP), slot, Some(RouteTarget { nh: 7, label: 20 }));
    }
    for k in [key(2, UDP), key(2, UDP).reversed()] {
        let h = t.lookup(&k).unwrap();
        assert_eq!((h.action, h.policy_generation, h.ecmp), (FlowAction::Forward, 5, None), "{k:?}");
    }
    assert_eq!(t.redecided(), 0, "no pair decided again");
    // The pair itself, whole, is decided again, both ways.
    t.decide_again(&key(2, UDP), &next, FlowAction::Drop(DropReason::FlowActionDrop), 6, false);
    for k in [key(2, UDP), key(2, UDP).reversed()] {
        let h = t.lookup(&k).unwrap();
        assert_eq!((h.action, h.policy_generation), (FlowAction::Drop(DropReason::FlowActionDrop), 6), "{k:?}");
    }
    assert_eq!(t.redecided(), 1);
}

/// Two choices of a 16-slot bucket with 1.5x slots per entry: a table fills
/// to its capacity without a key finding both its buckets full.
#[test]
fn a_table_fills_to_its_capacity() {
    let t = table(100_000);
    for i in 0..100_000 {
        let (f, r) = pair(key(i, if i % 3 == 0 { TCP } else { UDP }));
        if let Err(e) = t.create(&f, &r, 1, 0, 0) {
            panic!("pair {i} refused ({e:?}) with {} in the table", t.len());
        }
    }
    assert_eq!(t.len(), 100_000);
}

/// A full table under steady replacement (a pair out, a new pair in) keeps
/// finding room: the second choice keeps buckets even over time, not only
/// while the table first fills.
#[test]
fn a_full_table_keeps_room_under_churn() {
    let t = table(50_000);
    let mut live: Vec<u32> = (0..50_000)
        .map(|i| {
            let (f, r) = pair(key(i, UDP));
            t.create(&f, &r, 1, 0, 0).expect("fills").slot
        })
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for n in 0..200_000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % live.len() as u64) as usize;
        assert!(t.remove(live[victim]), "replacement {n}: the pair was live");
        let (f, r) = pair(key(50_000 + n, TCP));
        match t.create(&f, &r, 1, 0, 0) {
            Ok(h) => live[victim] = h.slot,
            Err(e) => panic!("replacement {n} refused ({e:?}) with {} in the table", t.len()),
        }
    }
    assert_eq!(t.len(), 50_000);
}

// ---- flows in the pipeline ----

fn tcp(l2: L2, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    build::tcp4_syn_frame(l2, src, dst, sport, dport, 1460)
}

fn udp(m: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    build::udp4_frame(L2 { src: mac(m), dst: router_mac() }, src, dst, sport, dport, 64, 64)
}

/// The lab with a flow table of 10,000 pairs.
fn lab_with_flows() -> (Lab, Arc<FlowTable>) {
    let mut lab = Lab::new();
    let table = Arc::new(FlowTable::new(FlowConfig { capacity: 10_000, ..FlowConfig::default() }, 64, 16));
    lab.pipeline.set_flows(Some(table.clone()));
    (lab, table)
}

/// `lab_with_flows`, with BLUE tracking flows under a policy that allows all.
fn lab_allowing_all() -> (Lab, Arc<FlowTable>) {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, Policy::allow_all()))]).unwrap();
    (lab, table)
}

/// A rule that allows `proto` from `src` to `dst`, to ports `dport`.
fn allow(src: Endpoint, dst: Endpoint, proto: u8, dport: PortRange) -> Rule {
    Rule { src, dst, proto: Some(proto), sport: PortRange::ANY, dport, action: PolicyAction::Allow }
}

fn port(p: u16) -> PortRange {
    PortRange { lo: p, hi: p }
}

/// a1's and a2's addresses, as policy endpoints.
fn a1_a2() -> (Endpoint, Endpoint) {
    (Endpoint::Prefix("10.1.0.2/32".parse().unwrap()), Endpoint::Prefix("10.1.0.3/32".parse().unwrap()))
}

/// The lab with a flow table, and BLUE's policy: `rules`, else deny.
fn lab_allowing(rules: Vec<Rule>) -> (Lab, Arc<FlowTable>) {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, Policy { rules, default: PolicyAction::Deny }))]).unwrap();
    (lab, table)
}

/// The lab with a flow table, and BLUE's policy: a1 may reach a2 on TCP 80.
fn lab_with_policy() -> (Lab, Arc<FlowTable>) {
    let (a1, a2) = a1_a2();
    lab_allowing(vec![allow(a1, a2, TCP, port(80))])
}

#[test]
fn policy_is_stateful_both_ways() {
    let (mut lab, table) = lab_with_policy();
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2), "allowed by the rule");
    assert_eq!(lab.run(A2, tcp(a2_l2, a2_ip(), a1_ip(), 80, 40000)).0, Verdict::Tx(A1), "its answer passes");
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(A2, tcp(a2_l2, a2_ip(), a1_ip(), 40001, 80)).0, denied, "a2 may not open to a1");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40002, 22)).0, denied, "nor a1 to a2:22");
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 5, 80)).0, denied, "nor UDP");
    // Denied flows are kept too, so their next packets are dropped cheaply.
    assert_eq!(table.len(), 4);
    assert_eq!(lab.stats().dropped(DropReason::FlowActionDrop), 3);
    // Protocols flows do not track are still decided by the policy, packet by packet.
    let gre = build::ip_frame(from_a1(), &build::ipv4(a1_ip(), a2_ip(), 47, 64, false, &[0; 8]));
    assert_eq!(lab.run(A1, gre).0, denied, "GRE from a1 is denied too");
    assert_eq!(table.len(), 4, "and makes no flow");
    // Red has no policy: it tracks no flows.
    assert_eq!(lab.run(R1, udp(3, a1_ip(), a1_ip(), 1, 2)).0, Verdict::Tx(R1));
    assert_eq!(table.len(), 4);
}

/// The green network's VRF, and its pod g1 with its next hop and label.
/// `green_pod_ops`, and the routes by which a1 (blue) and g1 (green) reach
/// each other on this node: blue imports g1's and green a1's, each route
/// keeping its pod's network.
fn green_joined_to_blue_ops() -> Vec<Op> {
    let mut ops = green_pod_ops();
    ops.extend([
        route_in(BLUE, "10.5.0.2/32", NH_G1, NO, Some(GREEN)),
        route_in(GREEN, "10.5.0.2/32", NH_G1, NO, None),
        route_in(GREEN, "10.1.0.2/32", NH_A1, NO, Some(BLUE)),
    ]);
    ops
}

/// A remote pod's first packets may come before its route does (its
/// node's agent was faster than this one's). Its pair is decided with its
/// source in no network, marked so, and decided again on each packet
/// until the route comes, without a write while nothing changes; then it
/// settles, as a pair that had its route from the start. Both ways: a
/// denial the route lifts (green takes TCP 80 from blue alone: until
/// this, the SYNs' retries kept the denied pair alive, and the connection
/// waited for a gap longer than the dropped flows' timeout), and an
/// allowance it withdraws (red refuses TCP from blue, and allows the
/// rest: until this, such a pod kept a pair it may not have).
#[test]
fn a_pair_decided_before_its_sources_route_came_is_decided_again_when_it_comes() {
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_SYN};
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer.apply(&policies_naming_networks()).unwrap();
    let remote = Ipv4Addr::new(10, 2, 0, 7);
    let to_g1 = |flags| tunnelled_to_g1(&with_tcp_flags(&tcp(from_peer(), remote, g1_ip, 40000, 80), flags));
    let pair = || table.lookup(&FlowKey::v4(GREEN, TCP, remote.into(), g1_ip.into(), 40000, 80)).unwrap();
    let info = || table.get(pair().slot, 0).unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(FABRIC, to_g1(FLAG_SYN)).0, denied, "from no network, before its route");
    assert!(pair().unrouted);
    assert!(!vrouter::pipeline::judgement(lab.writer.tables(), &table, &info()).unwrap().current);
    assert_eq!(lab.run(FABRIC, to_g1(FLAG_SYN)).0, denied, "the SYN again, still without it");
    assert_eq!(table.redecided(), 0, "nothing changed, nothing written");
    // Blue's remote pod's route, in green: no policy or network moved.
    let generation = lab.writer.tables().vrf(GREEN).unwrap().policy_generation;
    lab.writer.apply(&[route_in(GREEN, "10.2.0.7/32", NH_UDP, 40, Some(BLUE))]).unwrap();
    assert_eq!(lab.writer.tables().vrf(GREEN).unwrap().policy_generation, generation);
    assert_eq!(lab.run(FABRIC, to_g1(FLAG_SYN)).0, Verdict::Tx(G1), "from blue now");
    assert_eq!((pair().unrouted, pair().action, table.redecided()), (false, FlowAction::Forward, 1));
    assert!(vrouter::pipeline::judgement(lab.writer.tables(), &table, &info()).unwrap().current);
    assert_eq!(lab.run(FABRIC, to_g1(FLAG_ACK)).0, Verdict::Tx(G1));
    assert_eq!(table.redecided(), 1);

    // The other way: a policy that allows what it does not know.
    let not_from_blue = Rule {
        src: Endpoint::Network(BLUE),
        action: PolicyAction::Deny,
        ..allow(Endpoint::Any, Endpoint::Any, TCP, PortRange::ANY)
    };
    let policy = Policy { rules: vec![not_from_blue], default: PolicyAction::Allow };
    lab.writer.apply(&[Op::Update(Object::Policy(GREEN, policy))]).unwrap();
    let later = Ipv4Addr::new(10, 2, 0, 8);
    let from_later = |flags| tunnelled_to_g1(&with_tcp_flags(&tcp(from_peer(), later, g1_ip, 40001, 80), flags));
    assert_eq!(lab.run(FABRIC, from_later(FLAG_SYN)).0, Verdict::Tx(G1), "in no network yet: allowed");
    lab.writer.apply(&[route_in(GREEN, "10.2.0.8/32", NH_UDP, 41, Some(BLUE))]).unwrap();
    assert_eq!(lab.run(FABRIC, from_later(FLAG_ACK)).0, denied, "blue's, once its route came");
}

/// Policies whose rules name networks: blue opens TCP 80 to green's
/// addresses alone, and green takes TCP 80 from blue's alone.
fn policies_naming_networks() -> [Op; 2] {
    let to_green = Rule { dst: Endpoint::Network(GREEN), ..allow(Endpoint::Any, Endpoint::Any, TCP, port(80)) };
    let from_blue = Rule { src: Endpoint::Network(BLUE), ..allow(Endpoint::Any, Endpoint::Any, TCP, port(80)) };
    let only = |rule| Policy { rules: vec![rule], default: PolicyAction::Deny };
    [Op::Add(Object::Policy(BLUE, only(to_green))), Op::Add(Object::Policy(GREEN, only(from_blue)))]
}

/// `frame` (an Ethernet frame) as a peer node sends it to g1: MPLS over
/// UDP, with g1's label.
fn tunnelled_to_g1(frame: &[u8]) -> Vec<u8> {
    use vrouter::pktgen::build::Tunnel as Encap;
    build::mpls_tunnel_frame(from_peer(), Encap::Udp(6635), peer(1), node_ip(), LABEL_G1, 64, 50000, &frame[14..])
}

/// `frame` as a peer node sends it to be routed in blue: MPLS over UDP,
/// with blue's label.
fn tunnelled_to_blue(frame: &[u8]) -> Vec<u8> {
    use vrouter::pktgen::build::Tunnel as Encap;
    build::mpls_tunnel_frame(from_peer(), Encap::Udp(6635), peer(1), node_ip(), LABEL_BLUE, 64, 50000, &frame[14..])
}

/// A pod reaches a pod of another VRF on the same node (a route one
/// network imports from the other), and each VRF's policy allows only what
/// comes in: the answers pass, on the pair's reverse entry, which lives in
/// the answering pod's VRF, where they are looked up; that pod may still
/// open nothing itself. (The reverse entry once stayed in the client's VRF,
/// and the answers were judged as new flows by the server's policy.)
#[test]
fn answers_from_a_pod_of_another_vrf_on_this_node_pass_its_policy() {
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_flows();
    let route = |vrf, p: &str, nh| route_in(vrf, p, nh, NO, None);
    let blue_net = Endpoint::Prefix("10.1.0.0/16".parse().unwrap());
    let g1_end = Endpoint::Prefix("10.5.0.2/32".parse().unwrap());
    let inbound_only = |rule| Policy { rules: vec![rule], default: PolicyAction::Deny };
    lab.writer.apply(&green_pod_ops()).unwrap();
    lab.writer
        .apply(&[
            route(BLUE, "10.5.0.2/32", NH_G1),
            route(GREEN, "10.5.0.2/32", NH_G1),
            route(GREEN, "10.1.0.2/32", NH_A1),
            Op::Add(Object::Policy(BLUE, inbound_only(allow(blue_net, g1_end, TCP, port(80))))),
            Op::Add(Object::Policy(GREEN, inbound_only(allow(blue_net, g1_end, TCP, port(80))))),
        ])
        .unwrap();
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40000, 80)).0, Verdict::Tx(G1), "allowed both ways in");
    assert_eq!(lab.run(G1, tcp(g1_l2, g1_ip, a1_ip(), 80, 40000)).0, Verdict::Tx(A1), "its answer passes");
    assert_eq!(lab.run(G1, tcp(g1_l2, g1_ip, a1_ip(), 80, 40000)).0, Verdict::Tx(A1), "and the next");
    let answers = table.lookup(&FlowKey::v4(GREEN, TCP, g1_ip.into(), a1_ip().into(), 80, 40000));
    let answers = answers.expect("the reverse entry, in the answering pod's VRF");
    assert_eq!((answers.forward, answers.route_vrf), (false, Some(BLUE)));
    let info = table.get(answers.slot, 0).unwrap();
    assert_eq!((info.packets, info.one_way), (2, false), "the answers are counted on it");
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(G1, tcp(g1_l2, g1_ip, a1_ip(), 80, 40001)).0, denied, "g1 opens nothing itself");
    assert_eq!(table.len(), 2);
    // The answers are routed back in the client's VRF: green need not
    // import blue's routes for blue to reach it.
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(GREEN, "10.1.0.2/32".parse().unwrap()))]).unwrap();
    assert_eq!(lab.run(G1, tcp(g1_l2, g1_ip, a1_ip(), 80, 40000)).0, Verdict::Tx(A1), "routed in blue");
    assert_eq!(lab.run(G1, tcp(g1_l2, g1_ip, a1_ip(), 80, 40002)).0, Verdict::Drop(DropReason::NoRoute));
    // Where green tracks no flows, its answers are never looked up: the
    // pair is judged from blue's side alone (`one_way`), as `vrctl flow
    // list` shows it, instead of waiting for answers it will not see.
    lab.writer.apply(&[Op::Delete(ObjectKey::Policy(GREEN))]).unwrap();
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40003, 80)).0, Verdict::Tx(G1));
    let opened = table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), g1_ip.into(), 40003, 80)).unwrap();
    assert!(table.get(opened.slot, 0).unwrap().one_way);
}

/// The same over IPv6, on the general path and in the fast lane: g1's
/// answers to a1, which green has no route to, pass on their pair's
/// reverse entry, routed back in blue. (The general path read the packet
/// it routed on in blue as IPv4 whatever it was, and dropped every IPv6
/// answer across networks as invalid; the lane's IPv6 pass took none of
/// them. The differential fuzz found it once the lane took them.)
#[test]
fn ipv6_answers_from_a_pod_of_another_vrf_route_back_in_the_clients_vrf() {
    use vrouter::pipeline::{Pipeline, PipelineConfig};
    let g1_ip6 = g1_ip6();
    for fast_path in [false, true] {
        let (mut lab, table) = lab_with_flows();
        let limits = *lab.handle.load().limits();
        lab.pipeline = Pipeline::new(PipelineConfig { fast_path, ..PipelineConfig::default() }, &limits);
        lab.pipeline.set_flows(Some(table.clone()));
        lab.writer.apply(&green_pod_ops()).unwrap();
        lab.writer
            .apply(&[
                route_in(BLUE, "fd00:5::2/128", NH_G1, NO, Some(GREEN)),
                route_in(GREEN, "fd00:5::2/128", NH_G1, NO, None),
                Op::Add(Object::Policy(BLUE, Policy::allow_all())),
                Op::Add(Object::Policy(GREEN, Policy::allow_all())),
            ])
            .unwrap();
        let g1_l2 = L2 { src: mac(7), dst: router_mac() };
        let to_g1 = build::udp6_frame(from_a1(), a1_ip6(), g1_ip6, 40000, 53, 64, 100);
        let answer = || build::udp6_frame(g1_l2, g1_ip6, a1_ip6(), 53, 40000, 64, 100);
        assert_eq!(lab.run(A1, to_g1).0, Verdict::Tx(G1), "fast path {fast_path}");
        let before = lab.pipeline.general_frames();
        for n in 0..5 {
            let (v, out) = lab.run(G1, answer());
            assert_eq!(v, Verdict::Tx(A1), "answer {n}, fast path {fast_path}");
            assert_eq!(out[14 + 7], 63, "its hop limit, decremented");
        }
        let taken_by_the_lane = 5 - (lab.pipeline.general_frames() - before);
        assert_eq!(taken_by_the_lane, if fast_path { 5 } else { 0 });
        let key = FlowKey::v6(GREEN, UDP, g1_ip6.into(), a1_ip6().into(), 53, 40000);
        let answers = table.lookup(&key).expect("the reverse entry, in g1's VRF");
        assert_eq!((answers.forward, answers.route_vrf), (false, Some(BLUE)));
        assert_eq!(table.get(answers.slot, 0).unwrap().packets, 5, "the answers are counted on it");
    }
}

/// `lab_with_flows`, with green's pod g1, whose route blue imports (green
/// has none back), and a policy that allows all in both networks.
fn lab_with_green_open() -> (Lab, Arc<FlowTable>) {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_pod_ops()).unwrap();
    lab.writer
        .apply(&[
            route_in(BLUE, "10.5.0.2/32", NH_G1, NO, Some(GREEN)),
            Op::Add(Object::Policy(BLUE, Policy::allow_all())),
            Op::Add(Object::Policy(GREEN, Policy::allow_all())),
        ])
        .unwrap();
    (lab, table)
}

/// The answers of a pod of another VRF whose network has no route back are
/// routed in the client's VRF by their pair whichever way they take: as
/// their own vector (the fast lane's) and behind another vif's frame in
/// one, where the general vector had classified them for its fast path
/// and looked their flow up by a key of unparsed fields, dropping them as
/// unrouted (only SYNs, which the fast path leaves, were tested).
#[test]
fn answers_from_a_pod_of_another_vrf_route_back_in_any_vector() {
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_green_open();
    assert_eq!(lab.run(A2, udp(2, a2_ip(), g1_ip, 5000, 53)).0, Verdict::Tx(G1));
    let answer = udp(7, g1_ip, a2_ip(), 53, 5000);
    assert_eq!(lab.run(G1, answer.clone()).0, Verdict::Tx(A2), "alone");
    let (out, _) = lab.run_with(&[(A1, udp(1, a1_ip(), a2_ip(), 1, 2)), (G1, answer.clone())], 0);
    assert_eq!(out[1].verdict, Verdict::Tx(A2), "behind another pod's frame");
    let unrouted = udp(7, g1_ip, a2_ip(), 53, 5001);
    let (out, _) = lab.run_with(&[(A1, udp(1, a1_ip(), a2_ip(), 1, 2)), (G1, unrouted)], 0);
    assert_eq!(out[1].verdict, Verdict::Drop(DropReason::NoRoute), "without a pair, green has no route");
    let answers = table.lookup(&FlowKey::v4(GREEN, UDP, g1_ip.into(), a2_ip().into(), 53, 5000)).unwrap();
    assert_eq!(table.get(answers.slot, 0).unwrap().packets, 2, "both counted on the pair");
}

/// A pair that reaches a pod of another network on this node is judged by
/// that network's policy too: it is decided again after that network's
/// change, and keeps its decision after the change of another network the
/// VRF's routes also reach, whose change moves the VRF's generation all
/// the same (until `Vrf::reached_changes`, any such change decided every
/// such pair again).
#[test]
fn a_pair_across_networks_is_decided_again_after_its_own_networks_change_alone() {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_pod_ops()).unwrap();
    lab.writer
        .apply(&[
            route_in(BLUE, "10.5.0.2/32", NH_G1, NO, Some(GREEN)),
            route_in(BLUE, "10.9.9.9/32", NH_R1, NO, Some(RED)),
            Op::Add(Object::Policy(BLUE, Policy::allow_all())),
            Op::Add(Object::Policy(GREEN, Policy::allow_all())),
            Op::Add(Object::Policy(RED, Policy::allow_all())),
        ])
        .unwrap();
    let to_g1 = || udp(1, a1_ip(), g1_ip(), 5000, 53);
    let generation = |lab: &Lab| lab.handle.load().vrf(BLUE).unwrap().policy_generation;
    assert_eq!(lab.run(A1, to_g1()).0, Verdict::Tx(G1));
    let (before, redecided) = (generation(&lab), table.redecided());
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer.apply(&[Op::Update(Object::Policy(RED, deny_all.clone()))]).unwrap();
    assert_ne!(generation(&lab), before, "blue reaches red's pod: red's change moves blue's generation");
    assert_eq!(lab.run(A1, to_g1()).0, Verdict::Tx(G1));
    assert_eq!(table.redecided(), redecided, "a pair to green's pod keeps its decision");
    lab.writer.apply(&[Op::Update(Object::Policy(GREEN, deny_all))]).unwrap();
    assert_eq!(lab.run(A1, to_g1()).0, Verdict::Drop(DropReason::FlowActionDrop), "green's change judges it");
    assert_eq!(table.redecided(), redecided + 1);
}

/// A rule that names a network matches that network's addresses wherever
/// they are: another network's pod on this node, whose route a VRF
/// imports (the route keeps its network), and a remote pod, whose packets
/// arrive by tunnel and are from the network its route names, as
/// Contrail takes a packet's source network from its source route. (Until
/// this, a network as destination matched nothing, and as source only the
/// VRF judging: a remote pod of another network was never from it.)
#[test]
fn policy_rules_that_name_networks_match_their_addresses_by_route() {
    let g1_ip = g1_ip();
    let (mut lab, _table) = lab_with_flows();
    let route = route_in;
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[
            // Remote pods: one of blue's, one of green's own.
            route(GREEN, "10.2.0.7/32", NH_UDP, 40, Some(BLUE)),
            route(GREEN, "10.2.0.0/24", NH_UDP, 41, None),
        ])
        .unwrap();
    lab.writer.apply(&policies_naming_networks()).unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40000, 80)).0, Verdict::Tx(G1), "to green's pod");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, denied, "a2 is in blue");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40001, 81)).0, denied, "the rule's port only");
    // From the tunnel, into green: blue's remote pod is from blue.
    let from_remote = |src: Ipv4Addr, sport| tunnelled_to_g1(&tcp(from_peer(), src, g1_ip, sport, 80));
    let (blue_pod, green_pod) = (Ipv4Addr::new(10, 2, 0, 7), Ipv4Addr::new(10, 2, 0, 8));
    assert_eq!(lab.run(FABRIC, from_remote(blue_pod, 40000)).0, Verdict::Tx(G1), "from blue's remote pod");
    assert_eq!(lab.run(FABRIC, from_remote(green_pod, 40000)).0, denied, "green's own remote pod is not blue's");
    // The route's network decides, not its next hop: g1's route in blue,
    // as blue's own, is no longer green's.
    lab.writer
        .apply(&[Op::Update(Object::Route(RouteSpec::new(
            BLUE,
            "10.5.0.2/32".parse().unwrap(),
            RouteTarget { nh: NH_G1, label: NO },
        )))])
        .unwrap();
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40002, 80)).0, denied, "a new flow, to blue's own route");
}

/// A vector of new flows from the tunnel, their sources of two networks
/// interleaved: each is judged by its own source's network, which the
/// vector's stage two looks up for all of them together
/// (`pipeline::source_networks`), not by its neighbour's. Blue's remote
/// pods may reach g1 on port 80; green's own may not.
#[test]
fn a_vector_of_new_flows_is_judged_each_by_its_own_sources_network() {
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[
            route_in(GREEN, "10.2.0.0/25", NH_UDP, 40, Some(BLUE)),
            route_in(GREEN, "10.2.0.128/25", NH_UDP, 41, None),
        ])
        .unwrap();
    lab.writer.apply(&policies_naming_networks()).unwrap();
    // SYNs, which the general path parses (it clamps their MSS), and then
    // packets of connections already open elsewhere (a flow table lost
    // with a restart), which the fast path classifies without parsing:
    // their sources are read from their headers.
    for (syn, sports) in [(true, 40000), (false, 41000)] {
        let from_remote = |src: Ipv4Addr, sport| {
            let segment = tcp(from_peer(), src, g1_ip, sport, 80);
            tunnelled_to_g1(&if syn { segment } else { with_tcp_flags(&segment, vrouter::wire::tcp::FLAG_ACK) })
        };
        // Blue's at even places, green's at odd, in one vector.
        let input: Vec<(u32, Vec<u8>)> = (0..32u8)
            .map(|n| {
                let src = if n % 2 == 0 { Ipv4Addr::new(10, 2, 0, n + 1) } else { Ipv4Addr::new(10, 2, 0, 128 + n) };
                (FABRIC, from_remote(src, sports + u16::from(n)))
            })
            .collect();
        let (frames, _) = lab.run_with(&input, 0);
        for (n, f) in frames.iter().enumerate() {
            let want = if n % 2 == 0 { Verdict::Tx(G1) } else { Verdict::Drop(DropReason::FlowActionDrop) };
            let from = if n % 2 == 0 { "blue" } else { "green" };
            assert_eq!(f.verdict, want, "frame {n} (SYN: {syn}): from {from}");
        }
    }
    assert_eq!(table.len(), 64, "each made its pair");
}

/// A route change that moves addresses to another network changes what
/// the rules that name networks match, as a change of the policy would:
/// the VRF's pairs are decided again on their next packet, and so are the
/// pairs reaching its pods. One that moves no address from one network to
/// another (a pod's route in the network of the subnet that covers it, or
/// a pod's route added where nothing covered it), or in a VRF whose policy
/// names no network, leaves every decision and generation alone. (Until this,
/// only a policy change decided flows again: a pair kept the network its
/// addresses were in when its first packet came.)
#[test]
fn a_route_that_moves_addresses_to_another_network_decides_flows_again() {
    use vrouter::wire::tcp::FLAG_ACK;
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[
            // Blue's remote pods, in green.
            route_in(GREEN, "10.2.0.0/24", NH_UDP, 41, Some(BLUE)),
            Op::Add(Object::Policy(RED, Policy::allow_all())),
        ])
        .unwrap();
    lab.writer.apply(&policies_naming_networks()).unwrap();
    let a1_to_g1 = || with_tcp_flags(&tcp(from_a1(), a1_ip(), g1_ip, 40000, 80), FLAG_ACK);
    let remote_to_g1 =
        || tunnelled_to_g1(&with_tcp_flags(&tcp(from_peer(), Ipv4Addr::new(10, 2, 0, 7), g1_ip, 40000, 80), FLAG_ACK));
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(A1, a1_to_g1()).0, Verdict::Tx(G1), "g1 is green's, by its route in blue");
    assert_eq!(lab.run(FABRIC, remote_to_g1()).0, Verdict::Tx(G1), "10.2.0.7 is blue's, by its route in green");
    let generations = |lab: &Lab| [BLUE, GREEN, RED].map(|v| lab.writer.tables().vrf(v).unwrap().policy_generation);
    let before = generations(&lab);
    lab.writer.apply(&[route_in(GREEN, "10.2.0.7/32", NH_UDP, 40, Some(BLUE))]).unwrap();
    lab.writer.apply(&[route_in(GREEN, "10.3.0.9/32", NH_UDP, 43, Some(BLUE))]).unwrap();
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(GREEN, "10.3.0.9/32".parse().unwrap()))]).unwrap();
    lab.writer.apply(&[route_in(RED, "10.9.0.0/16", NH_UDP, 42, None)]).unwrap();
    assert_eq!(generations(&lab), before, "no address moved between networks; red's policy names none");
    assert_eq!(lab.run(A1, a1_to_g1()).0, Verdict::Tx(G1));
    assert_eq!(lab.run(FABRIC, remote_to_g1()).0, Verdict::Tx(G1));
    assert_eq!(table.redecided(), 0);

    // g1's route in blue becomes blue's own: blue's rule no longer takes g1
    // for green's.
    let own = |vrf, p: &str, nh, label| RouteSpec::new(vrf, p.parse().unwrap(), RouteTarget { nh, label });
    lab.writer.apply(&[Op::Update(Object::Route(own(BLUE, "10.5.0.2/32", NH_G1, NO)))]).unwrap();
    assert_ne!(generations(&lab)[0], before[0]);
    assert_eq!(lab.run(A1, a1_to_g1()).0, denied, "the open connection to g1 stops");
    assert_eq!(table.redecided(), 1);
    // 10.2.0.7's route in green becomes green's own: not from blue now;
    // removed, 10.2.0.7 is in blue's subnet again.
    lab.writer.apply(&[Op::Update(Object::Route(own(GREEN, "10.2.0.7/32", NH_UDP, 40)))]).unwrap();
    assert_eq!(lab.run(FABRIC, remote_to_g1()).0, denied, "the remote pod's connection stops");
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(GREEN, "10.2.0.7/32".parse().unwrap()))]).unwrap();
    assert_eq!(lab.run(FABRIC, remote_to_g1()).0, Verdict::Tx(G1), "and goes on once the route is gone");
    assert_eq!(table.redecided(), 3);
    // A new route of green's own laid over blue's subnet (no route of that
    // prefix before: the network the address was in is its cover's).
    lab.writer.apply(&[route_in(GREEN, "10.2.0.7/32", NH_UDP, 40, None)]).unwrap();
    assert_eq!(lab.run(FABRIC, remote_to_g1()).0, denied, "the remote pod is green's again");
    assert_eq!(table.redecided(), 4);
}

/// A pod's network policy holds for its clients on its own node as it
/// does for remote ones (whose packets the tunnel delivers into its VRF,
/// where the policy judges them): a flow from another network's pod on
/// the same node is judged by both networks' policies, even where the
/// client's network has none and tracks no flows. (Until this, only the
/// client network's policy judged it: green's pod was open to any pod of
/// blue on its node.)
#[test]
fn a_pods_policy_holds_for_clients_of_another_network_on_its_node() {
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_flows();
    let from_blue = Rule { src: Endpoint::Network(BLUE), ..allow(Endpoint::Any, Endpoint::Any, TCP, port(80)) };
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[
            Op::Add(Object::Policy(GREEN, Policy { rules: vec![from_blue], default: PolicyAction::Deny })),
            // Blue's service route would make it track flows for it.
            Op::Delete(ObjectKey::Route(BLUE, "10.96.0.10/32".parse().unwrap())),
        ])
        .unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    let ack = |f: Vec<u8>| with_tcp_flags(&f, vrouter::wire::tcp::FLAG_ACK);
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    // Blue has no policy and tracks no flows of its own.
    assert!(!lab.writer.tables().vrf(BLUE).unwrap().tracks_flows());
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40000, 80)).0, Verdict::Tx(G1), "green allows :80");
    assert_eq!(lab.run(G1, ack(tcp(g1_l2, g1_ip, a1_ip(), 80, 40000))).0, Verdict::Tx(A1), "and its answers");
    assert_eq!(lab.run(A1, ack(tcp(from_a1(), a1_ip(), g1_ip, 40000, 80))).0, Verdict::Tx(G1), "the next packet");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40001, 81)).0, denied, "green denies :81");
    assert_eq!(lab.run(A1, ack(tcp(from_a1(), a1_ip(), g1_ip, 40001, 81))).0, denied, "every packet of it");
    let opened = table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), g1_ip.into(), 40000, 80));
    assert!(opened.is_some(), "the pair is kept in blue, where its packets are routed");
    // Green's policy changes: blue's flows to green's pods are decided again.
    lab.writer
        .apply(&[Op::Update(Object::Policy(GREEN, Policy { rules: vec![], default: PolicyAction::Deny }))])
        .unwrap();
    assert_eq!(lab.run(A1, ack(tcp(from_a1(), a1_ip(), g1_ip, 40000, 80))).0, denied, "now denied by green");
    // Under a policy of blue's own that allows all, green still judges.
    lab.writer
        .apply(&[
            Op::Add(Object::Policy(BLUE, Policy::allow_all())),
            Op::Update(Object::Policy(GREEN, Policy { rules: vec![from_blue], default: PolicyAction::Deny })),
        ])
        .unwrap();
    assert_eq!(lab.run(A1, ack(tcp(from_a1(), a1_ip(), g1_ip, 40000, 80))).0, Verdict::Tx(G1), "allowed again");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40002, 81)).0, denied, "green denies :81");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40002, 81)).0, Verdict::Tx(A2), "blue's own pods: blue's");
    // Which rule decides each pair, as the API and `vrctl flow list` show
    // it: the other network's, where its policy judges too.
    let tables = lab.writer.tables().clone();
    let judged = |vrf, src: Ipv4Addr, sport, dst: Ipv4Addr, dport| {
        let hit = table.lookup(&FlowKey::v4(vrf, TCP, src.into(), dst.into(), sport, dport)).unwrap();
        vrouter::pipeline::judgement(&tables, &table, &table.get(hit.slot, 0).unwrap()).unwrap()
    };
    let rule_of = |vrf, src, sport, dst, dport| judged(vrf, src, sport, dst, dport).rule;
    let ruled = |vrf, rule| Some(vrouter::pipeline::Ruling { vrf, rule });
    assert_eq!(rule_of(BLUE, a1_ip(), 40000, g1_ip, 80), ruled(GREEN, Some(0)), "green's rule let it reach g1");
    assert_eq!(rule_of(GREEN, g1_ip, 80, a1_ip(), 40000), ruled(GREEN, Some(0)), "its reverse entry says the same");
    assert_eq!(rule_of(BLUE, a1_ip(), 40002, g1_ip, 81), ruled(GREEN, None), "green's default stopped it");
    assert_eq!(rule_of(BLUE, a1_ip(), 40002, a2_ip(), 81), ruled(BLUE, None), "blue's default allows all");
    // Both rules behind it, where two policies judged: blue's let it on.
    let both = judged(BLUE, a1_ip(), 40000, g1_ip, 80);
    assert_eq!(both.passed_by, ruled(BLUE, None), "blue's default let it on to green's rule");
    assert_eq!(judged(BLUE, a1_ip(), 40002, a2_ip(), 81).passed_by, None, "one policy judged it");
    lab.writer.apply(&[Op::Delete(ObjectKey::Policy(BLUE)), Op::Delete(ObjectKey::Policy(GREEN))]).unwrap();
    let tables = lab.writer.tables().clone();
    let hit = table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), g1_ip.into(), 40000, 80)).unwrap();
    let info = table.get(hit.slot, 0).unwrap();
    assert_eq!(vrouter::pipeline::judgement(&tables, &table, &info).unwrap().rule, None, "no policy judges it now");
    // Removed after it was read (as ageing removes pairs while an operator
    // lists the table): judged as nothing, so a listing leaves it out,
    // rather than as a pair that no policy judges.
    assert!(table.remove(hit.slot));
    assert_eq!(vrouter::pipeline::judgement(&tables, &table, &info), None, "a pair gone is not judged");
}

/// A policy change decides again the flows it can judge, and only those:
/// the changed network's own, and its pods' clients in networks whose
/// routes lead to them on this node. Red's change leaves blue's flows
/// alone, as red's pod is out of blue's reach. Green's moves blue's
/// generation (blue has a route to green's pod), but only blue's flow to
/// g1 is decided again; blue's flow to its own a2 keeps its decision, on
/// the fast path, its stamp unwritten. (Until this session any
/// change decided every flow of the node again: about a thousand
/// instructions a flow with a hundred rules, all at once on a busy node.)
#[test]
fn a_policy_change_decides_again_only_the_flows_it_can_judge() {
    let g1_ip = g1_ip();
    let (mut lab, table) = lab_with_green_joined_allowing_all();
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2));
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), g1_ip, 40000, 80)).0, Verdict::Tx(G1));
    let hit = |dst: Ipv4Addr| table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), dst.into(), 40000, 80)).unwrap();
    let current = |lab: &Lab, dst: Ipv4Addr| {
        let info = table.get(hit(dst).slot, 0).unwrap();
        vrouter::pipeline::judgement(lab.writer.tables(), &table, &info).unwrap().current
    };
    let blue_generation = |lab: &Lab| lab.writer.tables().vrf(BLUE).unwrap().policy_generation;
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    let before = blue_generation(&lab);
    lab.writer.apply(&[Op::Add(Object::Policy(RED, deny_all.clone()))]).unwrap();
    assert_eq!(blue_generation(&lab), before, "red's pods are out of blue's reach");
    let ack = |dst| with_tcp_flags(&tcp(from_a1(), a1_ip(), dst, 40000, 80), vrouter::wire::tcp::FLAG_ACK);
    assert_eq!(lab.run(A1, ack(a2_ip())).0, Verdict::Tx(A2));
    assert_eq!(lab.run(A1, ack(g1_ip)).0, Verdict::Tx(G1));
    assert_eq!(table.redecided(), 0, "their packets went on as decided");
    lab.writer.apply(&[Op::Update(Object::Policy(GREEN, deny_all))]).unwrap();
    assert_ne!(blue_generation(&lab), before, "blue reaches green's pod");
    assert!(current(&lab, a2_ip()), "blue's flow to a2 is blue's policy's alone");
    assert!(!current(&lab, g1_ip), "green's policy judges blue's flow to g1");
    assert_eq!(lab.run(A1, ack(g1_ip)).0, Verdict::Drop(DropReason::FlowActionDrop), "denied by green now");
    assert_eq!(lab.run(A1, ack(a2_ip())).0, Verdict::Tx(A2));
    assert_eq!(table.redecided(), 1, "the flow to g1, once");
    // A pair of one VRF keeps its decision on the fast path, unwritten.
    assert_eq!(hit(a2_ip()).policy_generation, before, "a2's kept its stamp");
    assert!(current(&lab, g1_ip));
    // Blue's own change decides its flow to a2 again.
    lab.writer.apply(&[Op::Update(Object::Policy(BLUE, Policy::allow_all()))]).unwrap();
    assert!(!current(&lab, a2_ip()));
    assert_eq!(lab.run(A1, ack(a2_ip())).0, Verdict::Tx(A2));
    assert_eq!(table.redecided(), 2);
}

/// A denied pair of one VRF keeps its decision in the fast lane when
/// another network's policy moves its VRF's generation (green's, whose pod
/// blue reaches): its packets are dropped there, counted on the flow, and
/// nothing is decided again. Blue's own change still decides it again.
/// Before, each denied flow's next packet took the general path to be
/// stamped with the new generation.
#[test]
fn a_denied_flow_keeps_its_decision_in_the_lane_when_another_networks_policy_changes() {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    let (a1, a2) = a1_a2();
    let tcp_only = Policy { rules: vec![allow(a1, a2, TCP, PortRange::ANY)], default: PolicyAction::Deny };
    lab.writer
        .apply(&[Op::Add(Object::Policy(BLUE, tcp_only.clone())), Op::Add(Object::Policy(GREEN, Policy::allow_all()))])
        .unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    let send = |lab: &mut Lab| lab.run(A1, udp(1, a1_ip(), a2_ip(), 5000, 53)).0;
    assert_eq!(send(&mut lab), denied, "the first packet, making the pair");
    assert_eq!(send(&mut lab), denied);
    let blue_generation = |lab: &Lab| lab.writer.tables().vrf(BLUE).unwrap().policy_generation;
    let before = blue_generation(&lab);
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer.apply(&[Op::Update(Object::Policy(GREEN, deny_all))]).unwrap();
    assert_ne!(blue_generation(&lab), before, "blue reaches green's pod");
    let general = lab.pipeline.general_frames();
    for n in 0..3 {
        assert_eq!(send(&mut lab), denied, "packet {n}");
    }
    assert_eq!(lab.pipeline.general_frames(), general, "every packet dropped in the lane");
    assert_eq!(table.redecided(), 0, "nothing decided again");
    let key = FlowKey::v4(BLUE, UDP, a1_ip().into(), a2_ip().into(), 5000, 53);
    let flow = table.dump(None, 10, 0).into_iter().find(|f| f.forward && f.key == key).expect("the pair");
    assert_eq!((flow.packets, flow.policy_generation), (5, before), "counted, its stamp kept");
    // Blue's own change decides it again: allowed now.
    let udp_too = Policy { rules: vec![allow(a1, a2, UDP, PortRange::ANY)], ..tcp_only };
    lab.writer.apply(&[Op::Update(Object::Policy(BLUE, udp_too))]).unwrap();
    assert_eq!(send(&mut lab), Verdict::Tx(A2), "allowed by blue's new policy");
    assert_eq!(table.redecided(), 1);
}

/// The VRFs a policy change tells to decide their flows again: its own,
/// and every VRF with a route to one of its pods on this node, directly,
/// through an ECMP member, or through a lookup in another VRF (taken to
/// reach anything); the fabric's, with a label to a composite with such a
/// member. Removing the policy tells the same ones.
#[test]
fn a_policy_change_tells_the_vrfs_whose_routes_lead_to_its_pods() {
    let mut lab = Lab::new();
    lab.writer.apply(&green_pod_ops()).unwrap();
    const FABRIC_VRF: u32 = 0;
    let vrfs = [FABRIC_VRF, BLUE, RED, LOOP_VRF, GREEN];
    let generations = |lab: &Lab| vrfs.map(|v| lab.writer.tables().vrf(v).unwrap().policy_generation);
    let told_by = |lab: &mut Lab, ops: &[Op]| {
        let before = generations(lab);
        lab.writer.apply(ops).unwrap();
        let after = generations(lab);
        vrfs.iter().zip(before.iter().zip(after)).filter(|(_, (b, a))| **b != *a).map(|(v, _)| *v).collect::<Vec<_>>()
    };
    let green_policy = |op: fn(Object) -> Op| op(Object::Policy(GREEN, Policy::allow_all()));
    // Only the loop VRF's lookup route might lead to green's pod.
    assert_eq!(told_by(&mut lab, &[green_policy(Op::Add)]), [LOOP_VRF, GREEN]);
    // A route in red to g1.
    lab.writer.apply(&[route_in(RED, "10.5.0.2/32", NH_G1, NO, Some(GREEN))]).unwrap();
    assert_eq!(told_by(&mut lab, &[green_policy(Op::Update)]), [RED, LOOP_VRF, GREEN]);
    // A route in blue to a composite with g1 as a member, and a label to it.
    let composite = NextHop::Composite(EcmpGroup::new(vec![
        RouteTarget { nh: NH_UDP, label: 100 },
        RouteTarget { nh: NH_G1, label: NO },
    ]));
    lab.writer.apply(&[Op::Add(Object::NextHop(90, composite)), route_in(BLUE, "10.97.0.1/32", 90, NO, None)]).unwrap();
    assert_eq!(told_by(&mut lab, &[green_policy(Op::Update)]), [BLUE, RED, LOOP_VRF, GREEN]);
    lab.writer.apply(&[Op::Add(Object::Label(99, 90))]).unwrap();
    assert_eq!(told_by(&mut lab, &[Op::Delete(ObjectKey::Policy(GREEN))]), [FABRIC_VRF, BLUE, RED, LOOP_VRF, GREEN]);
    // Red's pod r1 is reached from red alone (and the lookup).
    assert_eq!(told_by(&mut lab, &[Op::Add(Object::Policy(RED, Policy::allow_all()))]), [RED, LOOP_VRF]);
    // One batch, one step each, whatever it changed.
    let both = [green_policy(Op::Add), Op::Update(Object::Policy(RED, Policy::allow_all()))];
    let before = generations(&lab);
    lab.writer.apply(&both).unwrap();
    let steps: Vec<u32> = generations(&lab).iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(steps, [1, 1, 1, 1, 1]);
}

/// The pair of an established connection goes while the connection is
/// idle (the idle timeout, or a restart of vrouterd). Its server then
/// speaks first: a segment a2 may not open a connection with, but the
/// answer of one a1 may open. It passes without making a pair; a1's
/// next segment makes it, the right way round. (A pair made from a2's
/// segment would have been denied, and stopped both sides for good.)
#[test]
fn a_connection_whose_pair_went_while_idle_survives_its_server_speaking_first() {
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_PSH, FLAG_SYN};
    let (mut lab, table) = lab_with_policy();
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    let from_a1_ = |flags| with_tcp_flags(&tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80), flags);
    let from_a2 = |flags| with_tcp_flags(&tcp(a2_l2, a2_ip(), a1_ip(), 80, 40000), flags);
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2));
    assert_eq!(lab.run(A2, from_a2(FLAG_SYN | FLAG_ACK)).0, Verdict::Tx(A1));
    assert_eq!(lab.run(A1, from_a1_(FLAG_ACK)).0, Verdict::Tx(A2));
    let idle = FlowConfig::default().idle_ms;
    assert_eq!((0..4).map(|_| table.sweep(idle, 10_000)).sum::<usize>(), 1, "the idle pair aged out");
    lab.pipeline.set_now(idle);

    assert_eq!(lab.run(A2, from_a2(FLAG_ACK | FLAG_PSH)).0, Verdict::Tx(A1), "the server's segment passes");
    assert!(table.is_empty(), "and makes no pair");
    assert_eq!(lab.run(A1, from_a1_(FLAG_ACK)).0, Verdict::Tx(A2), "the client's answer");
    let pair = table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), a2_ip().into(), 40000, 80));
    let pair = pair.expect("makes the pair, from the client's side");
    assert_eq!(pair.action, FlowAction::Forward);
    assert_eq!(lab.run(A2, from_a2(FLAG_ACK | FLAG_PSH)).0, Verdict::Tx(A1), "the server's next, on the pair");
    assert_eq!(table.get(pair.reverse, 0).unwrap().packets, 1, "counted on its reverse entry");
    assert_eq!(table.len(), 1);
}

/// A segment taken for an answer opens nothing: a2, which may not open a
/// connection to a1, sends from port 80 as if answering one a1 could open
/// to a2:80. It passes, a1 refuses it with a RST, and the RST makes no
/// pair, which would have let a2 open a connection to a1:22 in its name.
/// A segment that neither side may open is denied, as a pair, as before.
#[test]
fn a_segment_taken_for_an_answer_opens_nothing() {
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_RST};
    let (mut lab, table) = lab_with_policy();
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    let a2_to_a1 = |sport, dport, flags| with_tcp_flags(&tcp(a2_l2, a2_ip(), a1_ip(), sport, dport), flags);
    assert_eq!(lab.run(A2, a2_to_a1(80, 22, FLAG_ACK)).0, Verdict::Tx(A1));
    let rst = with_tcp_flags(&tcp(from_a1(), a1_ip(), a2_ip(), 22, 80), FLAG_RST | FLAG_ACK);
    assert_eq!(lab.run(A1, rst).0, Verdict::Tx(A2), "a1's refusal goes back");
    assert!(table.is_empty(), "and neither made a pair");
    assert_eq!(lab.run(A2, tcp(a2_l2, a2_ip(), a1_ip(), 80, 22)).0, denied, "so a2's SYN is judged as its own");

    assert_eq!(lab.run(A2, a2_to_a1(81, 22, FLAG_ACK)).0, denied, "neither side may open :81");
    assert_eq!(table.len(), 2, "its denial is kept as a pair, like the SYN's");
    assert_eq!(lab.run(A2, a2_to_a1(82, 23, FLAG_RST)).0, denied, "a RST neither side may send");
    assert_eq!(table.len(), 2, "makes no pair");
}

/// A pair denied to the side that made it (a2, which may not open
/// conversations to a1) stays denied to that side, cached; but the other
/// side, which may open the conversation, is not stopped by it: its
/// packet makes the pair again, its own way round. Before, a2's datagram
/// or SYN, sent first (a server whose client's pair had aged out),
/// stopped a1 for as long as both kept trying.
#[test]
fn a_pair_denied_to_one_side_does_not_stop_the_side_that_may_open_it() {
    let (a1, a2) = a1_a2();
    let (mut lab, table) = lab_allowing(vec![allow(a1, a2, UDP, port(53)), allow(a1, a2, TCP, port(80))]);
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    for _ in 0..2 {
        assert_eq!(lab.run(A2, udp(2, a2_ip(), a1_ip(), 53, 40000)).0, denied, "a2 may not send first");
    }
    assert_eq!(table.len(), 1, "the denial is cached as a pair");
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 40000, 53)).0, Verdict::Tx(A2), "a1 may");
    let pair = table.lookup(&FlowKey::v4(BLUE, UDP, a1_ip().into(), a2_ip().into(), 40000, 53));
    assert_eq!(pair.map(|h| (h.forward, h.action)), Some((true, FlowAction::Forward)), "made again, a1's way");
    assert_eq!(lab.run(A2, udp(2, a2_ip(), a1_ip(), 53, 40000)).0, Verdict::Tx(A1), "and a2 answers");
    assert_eq!(table.len(), 1);

    assert_eq!(lab.run(A2, tcp(a2_l2, a2_ip(), a1_ip(), 80, 22)).0, denied, "a2's SYN");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 22, 80)).0, Verdict::Tx(A2), "a1's SYN opens it");

    assert_eq!(lab.run(A2, udp(2, a2_ip(), a1_ip(), 54, 40000)).0, denied);
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 40000, 54)).0, denied, "neither side may: denied both ways");
    let kept = table.lookup(&FlowKey::v4(BLUE, UDP, a2_ip().into(), a1_ip().into(), 54, 40000));
    assert_eq!(kept.map(|h| h.forward), Some(true), "still a2's pair");
}

/// The same from another node: a1's denied pair does not stop a remote
/// pod whose packets the policy lets open the conversation, arriving by
/// tunnel with a1's label. Each of its packets hits the reverse entry of
/// a1's denial; the fast lane drops hits on denied pairs itself
/// (`lane::dropped`), and once dropped these too, where the general path
/// makes the pair again the remote pod's way (found by the differential
/// test through floating IPs with another seed). A packet of the side the
/// pair denies is still dropped in the lane.
#[test]
fn a_pair_denied_to_a_pod_does_not_stop_a_remote_pod_that_may_open_it() {
    let (a1, _) = a1_a2();
    let (mut lab, table) = lab_allowing(vec![allow(Endpoint::Any, a1, UDP, port(53))]);
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    let remote = remote_ip();
    let from_remote = |sport| {
        let inner = build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote, a1_ip(), sport, 53, 64, 64);
        let udp = build::Tunnel::Udp(6635);
        build::mpls_tunnel_frame(from_peer(), udp, peer(1), node_ip(), LABEL_A1, 64, 50000, &inner[14..])
    };
    for _ in 0..3 {
        assert_eq!(lab.run(A1, udp(1, a1_ip(), remote, 53, 40000)).0, denied, "a1 may not send first");
    }
    let general = lab.pipeline.general_frames();
    assert_eq!(lab.run(A1, udp(1, a1_ip(), remote, 53, 40000)).0, denied);
    assert_eq!(lab.pipeline.general_frames(), general, "dropped in the lane");
    assert_eq!(lab.run(FABRIC, from_remote(40000)).0, Verdict::Tx(A1), "the remote pod may");
    let pair = table.lookup(&FlowKey::v4(BLUE, UDP, remote.into(), a1_ip().into(), 40000, 53));
    assert_eq!(pair.map(|h| (h.forward, h.action)), Some((true, FlowAction::Forward)), "made again, its way");
    assert_eq!(lab.run(A1, udp(1, a1_ip(), remote, 53, 40000)).0, Verdict::Tx(FABRIC), "and a1 answers");
    assert_eq!(table.len(), 1);
}

/// The same across networks on one node: g1 (green) serves blue's a1,
/// green's policy allowing blue's pods to reach :80. After the pair went,
/// g1's segment to a1 is judged as a1's would have been: by blue (no
/// policy) and by green, whose pod it reaches.
#[test]
fn a_pod_of_another_network_may_speak_first_once_its_clients_pair_went() {
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_PSH};
    let (mut lab, table) = lab_with_flows();
    let from_blue = Rule { src: Endpoint::Network(BLUE), ..allow(Endpoint::Any, Endpoint::Any, TCP, port(80)) };
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[Op::Add(Object::Policy(GREEN, Policy { rules: vec![from_blue], default: PolicyAction::Deny }))])
        .unwrap();
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    let from_g1 = |sport, dport| with_tcp_flags(&tcp(g1_l2, g1_ip(), a1_ip(), sport, dport), FLAG_ACK | FLAG_PSH);
    assert_eq!(lab.run(G1, from_g1(80, 40000)).0, Verdict::Tx(A1), "the answer of what blue may open");
    assert!(table.is_empty());
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(lab.run(G1, from_g1(81, 40000)).0, denied, "not of what green forbids blue");
}

#[test]
fn a_policy_change_stops_flows_it_now_denies() {
    let (mut lab, table) = lab_with_policy();
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2));
    lab.writer
        .apply(&[Op::Update(Object::Policy(BLUE, Policy { rules: vec![], default: PolicyAction::Deny }))])
        .unwrap();
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    assert_eq!(
        lab.run(A2, tcp(a2_l2, a2_ip(), a1_ip(), 80, 40000)).0,
        Verdict::Drop(DropReason::FlowActionDrop),
        "the answer of a flow the new policy denies"
    );
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Drop(DropReason::FlowActionDrop));
    assert_eq!(table.len(), 1, "the same pair, decided again");
    // And back: allowed again.
    lab.writer.apply(&[Op::Delete(vrouter::tables::ObjectKey::Policy(BLUE))]).unwrap();
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2), "no policy: routed");
}

/// A policy removed and another added in its place (here in one batch)
/// is a change like any other: the flows are decided again. (The
/// policy's generation once restarted after a removal, and the flows
/// decided under the first policy passed for decided under the new one.)
#[test]
fn a_policy_replaced_after_a_removal_decides_flows_again() {
    let (mut lab, _table) = lab_allowing_all();
    let send = |lab: &mut Lab| lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0;
    assert_eq!(send(&mut lab), Verdict::Tx(A2));
    assert_eq!(send(&mut lab), Verdict::Tx(A2), "the flow's second packet");
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer
        .apply(&[Op::Delete(vrouter::tables::ObjectKey::Policy(BLUE)), Op::Add(Object::Policy(BLUE, deny_all))])
        .unwrap();
    assert_eq!(send(&mut lab), Verdict::Drop(DropReason::FlowActionDrop));
}

/// The lab with a flow table, and BLUE's policy: a1 may reach a2 on UDP 53
/// and ICMP.
fn lab_with_dns_policy() -> (Lab, Arc<FlowTable>) {
    let (a1, a2) = a1_a2();
    lab_allowing(vec![allow(a1, a2, UDP, port(53)), allow(a1, a2, ICMP, PortRange::ANY)])
}

#[test]
fn every_fragment_of_an_allowed_datagram_belongs_to_its_flow() {
    let (mut lab, table) = lab_with_dns_policy();
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    let query = build::udp4_segment(a1_ip(), a2_ip(), 40000, 53, &[0x11; 1200]);
    for (i, f) in ipv4_fragments(from_a1(), a1_ip(), a2_ip(), UDP, 7, &query, 512).into_iter().enumerate() {
        assert_eq!(lab.run(A1, f).0, Verdict::Tx(A2), "fragment {i} of a query to port 53");
    }
    let flows = table.dump(None, 10, 0);
    assert_eq!(flows.len(), 2, "one pair: {flows:?}");
    let fwd = flows.iter().find(|f| f.forward).unwrap();
    assert_eq!((fwd.key.sport, fwd.key.dport, fwd.packets), (40000, 53, 3), "the later fragments counted on it");
    // The fragmented answer is the pair's reverse direction.
    let answer = build::udp4_segment(a2_ip(), a1_ip(), 53, 40000, &[0x22; 1500]);
    for (i, f) in ipv4_fragments(a2_l2, a2_ip(), a1_ip(), UDP, 7, &answer, 504).into_iter().enumerate() {
        assert_eq!(lab.run(A2, f).0, Verdict::Tx(A1), "fragment {i} of the answer");
    }
    assert_eq!(table.len(), 1);
    // Another port stays denied, fragment by fragment.
    let other = build::udp4_segment(a1_ip(), a2_ip(), 40000, 54, &[0x33; 1200]);
    for f in ipv4_fragments(from_a1(), a1_ip(), a2_ip(), UDP, 8, &other, 512) {
        assert_eq!(lab.run(A1, f).0, Verdict::Drop(DropReason::FlowActionDrop));
    }
    // A fragment that comes before its datagram's first cannot know its
    // ports: it waits for the first (no spare buffer is needed to hold
    // it), and goes with it, on the flow, in a spare buffer.
    let late = ipv4_fragments(from_a1(), a1_ip(), a2_ip(), UDP, 9, &query, 512);
    assert_eq!(lab.run(A1, late[2].clone()).0, Verdict::Held, "no ports yet");
    assert!(lab.pipeline.has_held());
    let (first, released) = lab.run_with(&[(A1, late[0].clone())], 4);
    assert_eq!(first[0].verdict, Verdict::Tx(A2));
    assert_eq!(released.len(), 1, "the held fragment went with its first");
    assert_eq!(released[0].verdict, Verdict::Tx(A2));
    let mut expected = late[2][14..].to_vec();
    let mut ip = vrouter::wire::ipv4::Packet::new_unchecked(&mut expected[..]);
    ip.set_ttl(63);
    ip.fill_checksum();
    assert_eq!(&released[0].data()[14..], &expected[..], "the fragment, forwarded once: its TTL down by one");
    assert!(!lab.pipeline.has_held());
    assert_eq!(lab.run(A1, late[1].clone()).0, Verdict::Tx(A2));
    let fwd = table.dump(None, 10, 0).into_iter().find(|f| f.forward && f.key.dport == 53).unwrap();
    assert_eq!(fwd.packets, 6, "all three of the second query's fragments counted on the flow");
    assert_eq!((lab.stats().fragments_held, lab.stats().fragments_released), (1, 1));
    // A big ping makes one pair, not one per fragment.
    let before = table.len();
    let echo = icmp_echo_message(8, 0x1234, 1, 0x44, 2000);
    for f in ipv4_fragments(from_a1(), a1_ip(), a2_ip(), ICMP, 10, &echo, 800) {
        assert_eq!(lab.run(A1, f).0, Verdict::Tx(A2));
    }
    assert_eq!(table.len(), before + 1, "{:?}", table.dump(None, 20, 0));
    let ping = table.dump(None, 20, 0).into_iter().find(|f| f.forward && f.key.proto == ICMP).unwrap();
    assert_eq!((ping.key.sport, ping.packets), (0x1234, 3), "every fragment counted on the echo's flow");
    let counts = table.fragments().counts();
    assert_eq!((counts.recorded, counts.unmatched), (5, 1), "five first fragments, one fragment before its first");
}

/// A flow to a service, pinned to its member by its first, whole packets,
/// then a fragmented datagram of it whose fragments come out of order: the
/// later one waits for the first, and both go to the flow's member. A
/// fragment is hashed without ports (so that a datagram's pieces stay
/// together where no flow pins them); judged without its ports, the later
/// one made a flow of its own, on the member of that hash, another than
/// its flow's two times in three, where it could never be reassembled.
#[test]
fn a_fragment_before_its_first_goes_to_its_flows_ecmp_member() {
    let (mut lab, table) = lab_allowing_all();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    let mut members = std::collections::HashSet::new();
    for i in 0..60u16 {
        let segment = build::udp4_segment(a1_ip(), service, 2000 + i, 53, &[0x55; 1000]);
        let pieces = ipv4_fragments(from_a1(), a1_ip(), service, UDP, 100 + i, &segment, 512);
        members.insert(pinned_then_reordered(&mut lab, udp(1, a1_ip(), service, 2000 + i, 53), &pieces, i));
    }
    assert_eq!(members.len(), 3, "the flows spread over the members: {members:?}");
    let flows = table.dump(None, 200, 0);
    assert_eq!(flows.len(), 120, "one pair per flow, none for a portless fragment");
    assert!(flows.iter().filter(|f| f.forward).all(|f| f.packets == 3), "each packet and fragment on its flow");
    assert_eq!((lab.stats().fragments_held, lab.stats().fragments_released), (60, 60));
}

/// Sends `whole`, a packet from a1 to the service, whose flow pins its
/// member, then the two `pieces` of a datagram of that flow, the second
/// first: it waits, and both go to the member (flow `i`), which it returns.
fn pinned_then_reordered(lab: &mut Lab, whole: Vec<u8>, pieces: &[Vec<u8>], i: u16) -> u8 {
    let (v, sent) = lab.run(A1, whole);
    assert_eq!(v, Verdict::Tx(FABRIC));
    let member = peer_of(&sent);
    assert_eq!(lab.run(A1, pieces[1].clone()).0, Verdict::Held, "flow {i}: its first fragment is not there yet");
    let (first, released) = lab.run_with(&[(A1, pieces[0].clone())], 2);
    assert_eq!((first[0].verdict, released.len()), (Verdict::Tx(FABRIC), 1), "flow {i}");
    assert_eq!(released[0].verdict, Verdict::Tx(FABRIC));
    assert_eq!(peer_of(first[0].data()), member, "flow {i}: the first fragment on the flow's member");
    assert_eq!(peer_of(released[0].data()), member, "flow {i}: the later one too");
    member
}

/// ICMP is held too: a big ping's later fragment that comes first waits for
/// it and goes to the echo flow's member. An ICMP message that is not an
/// echo has no flow, but its later fragment cannot tell: it waits the same
/// way, and passes untracked once its first has said so.
#[test]
fn an_icmp_fragment_before_its_first_waits_and_learns_its_flow() {
    let (mut lab, table) = lab_allowing_all();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    let icmp = |kind: u8, id: u16, len: usize| icmp_echo_message(kind, id, 1, 0x5a, len);
    let mut members = std::collections::HashSet::new();
    for i in 0..45u16 {
        let whole = build::ip_frame(from_a1(), &build::ipv4(a1_ip(), service, ICMP, 64, false, &icmp(8, i, 56)));
        let pieces = ipv4_fragments(from_a1(), a1_ip(), service, ICMP, 500 + i, &icmp(8, i, 1000), 512);
        members.insert(pinned_then_reordered(&mut lab, whole, &pieces, i));
    }
    assert_eq!(members.len(), 3, "the echoes spread over the members: {members:?}");
    let flows = table.dump(None, 200, 0);
    assert_eq!(flows.len(), 90, "one pair per echo");
    assert!(flows.iter().filter(|f| f.forward).all(|f| f.packets == 3), "each packet and fragment on its flow");
    // Not an echo (an unreachable, quoting a big datagram): no flow, and
    // the later fragment goes on untracked once the first has come.
    let unreachable = icmp(3, 0, 1000);
    let pieces = ipv4_fragments(from_a1(), a1_ip(), a2_ip(), ICMP, 900, &unreachable, 512);
    assert_eq!(lab.run(A1, pieces[1].clone()).0, Verdict::Held);
    let (first, released) = lab.run_with(&[(A1, pieces[0].clone())], 1);
    assert_eq!((first[0].verdict, released.len()), (Verdict::Tx(A2), 1));
    assert_eq!(released[0].verdict, Verdict::Tx(A2));
    assert_eq!(table.len(), 45, "pairs: none for it");
    let recorded = table.fragments().dump(0).into_iter().find(|f| f.key.ident == 900).map(|f| f.ports);
    assert_eq!(recorded, Some(None), "its first fragment recorded, with no flow");
    assert_eq!(lab.run(A1, pieces[1].clone()).0, Verdict::Tx(A2), "after its first, at once");
    assert_eq!((lab.stats().fragments_held, lab.stats().fragments_released), (46, 46));
}

/// A fragment that came through a tunnel before its first waits decapsulated,
/// and is delivered by its label once the first has been seen: as it would
/// have been, had it come after its first.
#[test]
fn a_tunnels_fragment_before_its_first_waits_and_goes_to_its_pod() {
    let (mut lab, table) = lab_allowing_all();
    let segment = build::udp4_segment(remote_ip(), a1_ip(), 5000, 80, &[0x99; 1000]);
    let inner = ipv4_fragments(L2 { src: mac(9), dst: mac(9) }, remote_ip(), a1_ip(), UDP, 77, &segment, 512);
    let tunnel = |i: usize| {
        build::mpls_tunnel_frame(
            from_peer(),
            build::Tunnel::Udp(6635),
            peer(1),
            node_ip(),
            LABEL_A1,
            64,
            50000,
            &inner[i][14..],
        )
    };
    assert_eq!(lab.run(FABRIC, tunnel(1)).0, Verdict::Held);
    let (first, released) = lab.run_with(&[(FABRIC, tunnel(0))], 1);
    assert_eq!(first[0].verdict, Verdict::Tx(A1));
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].verdict, Verdict::Tx(A1));
    let (again, after_first) = lab.run(FABRIC, tunnel(1));
    assert_eq!(again, Verdict::Tx(A1));
    assert_eq!(released[0].data(), &after_first[..], "as if it had come after its first");
    let fwd = table.dump(None, 10, 0).into_iter().find(|f| f.forward).unwrap();
    assert_eq!((fwd.key.sport, fwd.key.dport, fwd.packets), (5000, 80, 3));
}

/// Held fragments are bounded in number and in time, and judged by their
/// datagram's flow when let go: a denied datagram's later fragment is
/// dropped with it. Each worker holds its own; the first fragment may come
/// to another, and the holder lets its fragment go when it next runs, with
/// no frames of its own.
#[test]
fn held_fragments_are_bounded_judged_by_their_flow_and_let_go_by_their_worker() {
    use vrouter::pipeline::hold;
    let (mut lab, table) = lab_with_dns_policy();
    let datagram = |dport: u16, ident: u16| {
        let segment = build::udp4_segment(a1_ip(), a2_ip(), 40000, dport, &[0x66; 1000]);
        ipv4_fragments(from_a1(), a1_ip(), a2_ip(), UDP, ident, &segment, 512)
    };
    // Denied: the later fragment waits, then goes the first's way.
    let denied = datagram(54, 1);
    assert_eq!(lab.run(A1, denied[1].clone()).0, Verdict::Held);
    let (first, released) = lab.run_with(&[(A1, denied[0].clone())], 2);
    assert_eq!(first[0].verdict, Verdict::Drop(DropReason::FlowActionDrop));
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].verdict, Verdict::Drop(DropReason::FlowActionDrop), "denied with its datagram");
    // Without a spare buffer to go in, a fragment whose first came waits on.
    let allowed = datagram(53, 2);
    assert_eq!(lab.run(A1, allowed[1].clone()).0, Verdict::Held);
    let (first, released) = lab.run_with(&[(A1, allowed[0].clone())], 0);
    assert_eq!((first[0].verdict, released.len()), (Verdict::Tx(A2), 0));
    assert!(lab.pipeline.has_held());
    let (_, released) = lab.run_with(&[], 1);
    assert_eq!(released.len(), 1, "let go by a batch with no frames");
    assert_eq!(released[0].verdict, Verdict::Tx(A2));
    // One pod may fill `hold::PER_SENDER` slots, its next is dropped at
    // once, and another pod's still waits.
    for ident in 0..hold::PER_SENDER as u16 {
        assert_eq!(lab.run(A1, datagram(53, 1000 + ident)[1].clone()).0, Verdict::Held);
    }
    let over = lab.run(A1, datagram(53, 999)[1].clone()).0;
    assert_eq!(over, Verdict::Drop(DropReason::FragmentQueueFull), "a1's share is taken");
    let a2_l2 = L2 { src: mac(2), dst: router_mac() };
    let answer = build::udp4_segment(a2_ip(), a1_ip(), 53, 40000, &[0x67; 1000]);
    let answer = ipv4_fragments(a2_l2, a2_ip(), a1_ip(), UDP, 5, &answer, 512);
    assert_eq!(lab.run(A2, answer[1].clone()).0, Verdict::Held, "a2 has its own share");
    // Through the fabric, which carries every remote pod's, a sender is a
    // remote source address: one takes its share, many the rest.
    let through_fabric = |src: Ipv4Addr, ident: u16| {
        let remote = build::udp4_segment(src, a1_ip(), 5000, 53, &[0x68; 1000]);
        let inner = ipv4_fragments(L2 { src: mac(9), dst: mac(9) }, src, a1_ip(), UDP, ident, &remote, 512);
        let (tunnel, to) = (build::Tunnel::Udp(6635), node_ip());
        build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), to, LABEL_A1, 64, 50000, &inner[1][14..])
    };
    for ident in 0..hold::PER_SENDER as u16 {
        assert_eq!(lab.run(FABRIC, through_fabric(remote_ip(), ident)).0, Verdict::Held);
    }
    let over = lab.run(FABRIC, through_fabric(remote_ip(), 999)).0;
    assert_eq!(over, Verdict::Drop(DropReason::FragmentQueueFull), "the remote source's share is taken");
    for k in 0..(hold::SLOTS - 2 * hold::PER_SENDER - 1) as u8 {
        assert_eq!(lab.run(FABRIC, through_fabric(Ipv4Addr::new(10, 200, 0, k), 1)).0, Verdict::Held);
    }
    let full = lab.run(FABRIC, through_fabric(Ipv4Addr::new(10, 200, 1, 1), 1)).0;
    assert_eq!(full, Verdict::Drop(DropReason::FragmentQueueFull), "all taken");
    // Their firsts never come: after `HOLD_MS` they are dropped, counted
    // against a1's vif.
    let a1_drops = lab.stats().vif(A1).drops;
    lab.pipeline.set_now(hold::HOLD_MS - 1);
    lab.run_with(&[], 0);
    assert!(lab.pipeline.has_held(), "not before their time");
    lab.pipeline.set_now(hold::HOLD_MS);
    lab.run_with(&[], 0);
    assert!(!lab.pipeline.has_held());
    assert_eq!(lab.stats().dropped(DropReason::NoFragEntry), hold::SLOTS as u64);
    assert_eq!(lab.stats().vif(A1).drops - a1_drops, hold::PER_SENDER as u64);
    assert_eq!(lab.stats().fragments_held, 2 + hold::SLOTS as u64);
    assert_eq!(lab.stats().fragments_released, 2);
    // Another worker holds a fragment whose first comes to this one.
    let mut other = another_worker(&lab, &table);
    other.set_now(hold::HOLD_MS);
    let later = datagram(53, 3);
    let (held, _) = run_on(&mut other, &lab, &[(A1, later[1].clone())], 0);
    assert_eq!(held[0].verdict, Verdict::Held);
    assert_eq!(lab.run(A1, later[0].clone()).0, Verdict::Tx(A2), "the first, on this worker");
    assert!(other.has_held(), "the other worker has not run since");
    let (_, released) = run_on(&mut other, &lab, &[], 1);
    assert_eq!(released.iter().map(|f| f.verdict).collect::<Vec<_>>(), vec![Verdict::Tx(A2)]);
    assert!(!other.has_held());
}

/// A second worker on the lab's tables and flow table.
fn another_worker(lab: &Lab, table: &Arc<FlowTable>) -> vrouter::pipeline::Pipeline {
    use vrouter::pipeline::{Pipeline, PipelineConfig};
    Pipeline::new(PipelineConfig::default(), lab.handle.load().limits()).with_flows(table.clone())
}

/// `Lab::run_with` on worker `worker`.
fn run_on(
    worker: &mut vrouter::pipeline::Pipeline,
    lab: &Lab,
    input: &[(u32, Vec<u8>)],
    spares: usize,
) -> (Frames, Frames) {
    let frame_of = |vif: u32, b: &[u8]| {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + b.len()].copy_from_slice(b);
        vrouter::pipeline::Frame::new(buf, HEADROOM, b.len(), vif).unwrap()
    };
    let mut frames: Frames = input.iter().map(|(vif, b)| frame_of(*vif, b)).collect();
    let mut spill = vrouter::pipeline::Spill::with_buffers(vec![vec![0u8; BUF]; spares], HEADROOM);
    worker.process(&lab.handle.load(), &mut frames, &mut spill);
    (frames, spill.out)
}

/// A held fragment keeps the next hop it was going to, not only its id.
/// The tables may change while it waits: a next hop updated in place, its
/// route unchanged, still takes it; an id deleted and given to another
/// next hop (here, to a pod of another network) does not: the fragment is
/// dropped, not sent to that pod.
#[test]
fn a_held_fragment_goes_nowhere_its_next_hops_id_was_given_to_meanwhile() {
    let (mut lab, table) = lab_allowing_all();
    let datagram = |ident: u16| {
        let segment = build::udp4_segment(a1_ip(), a2_ip(), 40000, 53, &[0x6a; 1000]);
        ipv4_fragments(from_a1(), a1_ip(), a2_ip(), UDP, ident, &segment, 512)
    };
    let a2_nh =
        |vif: u32, dmac: u8| Object::NextHop(NH_A2, NextHop::Encap { oif: vif, smac: router_mac(), dmac: mac(dmac) });
    // Its first comes to another worker, before the tables change; the
    // holder lets it go on its next batch, after.
    let mut other = another_worker(&lab, &table);
    let updated = datagram(1);
    assert_eq!(lab.run(A1, updated[1].clone()).0, Verdict::Held);
    assert_eq!(run_on(&mut other, &lab, &[(A1, updated[0].clone())], 0).0[0].verdict, Verdict::Tx(A2));
    lab.writer.apply(&[Op::Update(a2_nh(A2, 12))]).unwrap();
    let (_, released) = lab.run_with(&[], 1);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].verdict, Verdict::Tx(A2), "updated in place: its route still names it");
    assert_eq!(&released[0].data()[..6], &mac(12).0, "with the next hop as it is now");
    let moved = datagram(2);
    assert_eq!(lab.run(A1, moved[1].clone()).0, Verdict::Held);
    assert_eq!(run_on(&mut other, &lab, &[(A1, moved[0].clone())], 0).0[0].verdict, Verdict::Tx(A2));
    lab.writer
        .apply(&[
            Op::Delete(ObjectKey::Route(BLUE, "10.1.0.3/32".parse().unwrap())),
            Op::Delete(ObjectKey::Route(BLUE, "fd00:1::3/128".parse().unwrap())),
            Op::Delete(ObjectKey::Label(LABEL_A2)),
            Op::Delete(ObjectKey::NextHop(NH_A2)),
            Op::Add(a2_nh(R1, 3)),
        ])
        .unwrap();
    let invalid = lab.stats().dropped(DropReason::InvalidNh);
    let (_, released) = lab.run_with(&[], 1);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].verdict, Verdict::Drop(DropReason::InvalidNh), "not to red's pod");
    assert_eq!(lab.stats().dropped(DropReason::InvalidNh) - invalid, 1);
    assert_eq!(lab.stats().vif(R1).tx_packets, 0);
}

#[test]
fn ipv6_flows_see_past_extension_headers_and_through_fragments() {
    use vrouter::wire::ipv6ext::kind;
    let (mut lab, table) = lab_allowing(vec![allow(Endpoint::Any, Endpoint::Any, UDP, port(53))]);
    // UDP behind hop-by-hop and destination options: the rule sees port 53.
    let with_options = |dport: u16| {
        let mut body = vec![kind::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0, UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&build::udp6_segment(a1_ip6(), a2_ip6(), 40000, dport, &[7; 32]));
        build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), a2_ip6(), kind::HOP_BY_HOP, 64, &body))
    };
    assert_eq!(lab.run(A1, with_options(53)).0, Verdict::Tx(A2), "to port 53 past two option headers");
    assert_eq!(lab.run(A1, with_options(54)).0, Verdict::Drop(DropReason::FlowActionDrop));
    let ports = |t: &FlowTable| {
        let mut v: Vec<(u8, u16, u16)> =
            t.dump(None, 20, 0).iter().filter(|f| f.forward).map(|f| (f.key.proto, f.key.sport, f.key.dport)).collect();
        v.sort();
        v
    };
    assert_eq!(ports(&table), vec![(UDP, 40000, 53), (UDP, 40000, 54)]);
    // A fragmented query: every piece on the query's flow.
    let query = build::udp6_segment(a1_ip6(), a2_ip6(), 40001, 53, &[0x11; 3000]);
    for (i, f) in ipv6_fragments(from_a1(), a1_ip6(), a2_ip6(), UDP, 0x8000_0001, &query, 1232).into_iter().enumerate()
    {
        assert_eq!(lab.run(A1, f).0, Verdict::Tx(A2), "fragment {i}");
    }
    assert_eq!(ports(&table), vec![(UDP, 40000, 53), (UDP, 40000, 54), (UDP, 40001, 53)]);
    let query_flow = table.dump(None, 20, 0).into_iter().find(|f| f.forward && f.key.sport == 40001).unwrap();
    assert_eq!(query_flow.packets, 3);
    assert_eq!(table.fragments().counts().matched, 2);
    // Out of order: the last piece waits for the first, then goes on the
    // flow; one to a denied port waits, then is denied with its datagram.
    for (dport, ident, want) in
        [(53, 0x8000_0002, Verdict::Tx(A2)), (54, 0x8000_0003, Verdict::Drop(DropReason::FlowActionDrop))]
    {
        let query = build::udp6_segment(a1_ip6(), a2_ip6(), 40001, dport, &[0x12; 3000]);
        let pieces = ipv6_fragments(from_a1(), a1_ip6(), a2_ip6(), UDP, ident, &query, 1232);
        assert_eq!(lab.run(A1, pieces[2].clone()).0, Verdict::Held, "port {dport}: before its first");
        let (first, released) = lab.run_with(&[(A1, pieces[0].clone())], 1);
        assert_eq!((first[0].verdict, released.len()), (want, 1), "port {dport}");
        assert_eq!(released[0].verdict, want, "port {dport}: the held piece goes its datagram's way");
        assert_eq!(lab.run(A1, pieces[1].clone()).0, want);
    }
    let query_flow =
        table.dump(None, 20, 0).into_iter().find(|f| f.forward && f.key.sport == 40001 && f.key.dport == 53);
    assert_eq!(query_flow.unwrap().packets, 6);
    // A big ICMPv6 echo out of order: its last piece waits for the first
    // too, and is denied with it (the policy allows no ICMPv6).
    let mut echo = vec![128, 0, 0, 0, 0x43, 0x21, 0, 1];
    echo.extend_from_slice(&[0x13; 3000]);
    let pieces = ipv6_fragments(from_a1(), a1_ip6(), a2_ip6(), ICMPV6, 0x8000_0004, &echo, 1232);
    assert_eq!(lab.run(A1, pieces[2].clone()).0, Verdict::Held, "an echo's piece before its first");
    let (first, released) = lab.run_with(&[(A1, pieces[0].clone())], 1);
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!((first[0].verdict, released.len()), (denied, 1));
    assert_eq!(released[0].verdict, denied, "the echo's held piece is denied with it");
    // ICMPv6 errors about the allowed flow find it, though the policy
    // allows no ICMPv6: port unreachable, and Packet Too Big (path MTU
    // discovery needs it). One about a packet of no flow is denied.
    let a2 = L2 { src: mac(2), dst: router_mac() };
    let error = |kind: u8, code: u8, dport: u16| {
        let quoted =
            build::ipv6(a1_ip6(), a2_ip6(), UDP, 63, &build::udp6_segment(a1_ip6(), a2_ip6(), 40000, dport, &[7; 32]));
        let mut body = vec![kind, code, 0, 0, 0, 0, 0x05, 0x00];
        body.extend_from_slice(&quoted);
        build::ip_frame(a2, &build::ipv6(a2_ip6(), a1_ip6(), ICMPV6, 64, &body))
    };
    assert_eq!(lab.run(A2, error(1, 4, 53)).0, Verdict::Tx(A1), "port unreachable");
    assert_eq!(lab.run(A2, error(2, 0, 53)).0, Verdict::Tx(A1), "packet too big");
    assert_eq!(lab.run(A2, error(1, 4, 99)).0, Verdict::Drop(DropReason::FlowActionDrop), "no such flow");
    let reverse = table.dump(None, 20, 0).into_iter().find(|f| !f.forward && (f.key.sport, f.key.dport) == (53, 40000));
    let reverse = reverse.unwrap();
    assert_eq!(reverse.packets, 2, "the errors counted on the flow's reverse entry");
}

/// The tunnel a frame left by, from its outer destination address.
fn peer_of(frame: &[u8]) -> u8 {
    frame[33] - 1
}

#[test]
fn a_flow_stays_on_its_ecmp_member_while_members_change() {
    let (lab, _flows) = lab_allowing_all();
    flows_stay_on_their_members(lab, Ipv4Addr::new(10, 96, 0, 10));
}

/// Without a policy too: a VRF that routes to an ECMP composite tracks
/// flows for the pinning alone, or adding a pod to a service would move
/// some of its open connections to the new pod.
#[test]
fn a_vrf_with_an_ecmp_route_pins_flows_without_a_policy() {
    let (lab, flows) = lab_with_flows();
    let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
    assert!(blue.policy.is_none() && blue.ecmp_routes > 0 && blue.tracks_flows());
    flows_stay_on_their_members(lab, Ipv4Addr::new(10, 96, 0, 10));
    assert!(flows.len() >= 600, "a flow per connection: {}", flows.len());
    // Each connection's packets count on its flow: three rounds of sends.
    let key = FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(Ipv4Addr::new(10, 96, 0, 10)), 1000, 53);
    let entry = flows.get(flows.lookup(&key).unwrap().slot, 0).unwrap();
    assert_eq!(entry.packets, 3);
}

/// In a VRF that tracks flows for its ECMP routes alone, only the packets
/// routed to a composite belong to flows: pod-to-pod traffic there stays
/// untracked, and costs what it did.
#[test]
fn only_packets_to_a_composite_are_tracked_for_ecmp_alone() {
    let (mut lab, flows) = lab_with_flows();
    for sport in 0..20 {
        assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 2000 + sport, 53)).0, Verdict::Tx(A2));
    }
    // A SYN takes the general path (its MSS is clamped there): no flow either.
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2));
    assert_eq!(flows.len(), 0, "pod to pod: no flow");
    let (v, _) = lab.run(A1, udp(1, a1_ip(), Ipv4Addr::new(10, 96, 0, 10), 2000, 53));
    assert_eq!((v, flows.len()), (Verdict::Tx(FABRIC), 1), "to the service: a flow");
    // With a policy every packet is tracked again.
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, Policy::allow_all()))]).unwrap();
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 2000, 53)).0, Verdict::Tx(A2));
    assert_eq!(flows.len(), 2);
    let both = flows.dump(None, 10, 0);
    assert!(both.iter().any(|f| f.one_way) && both.iter().any(|f| !f.one_way), "one-way before the policy only");
}

/// A tunnel with its VRF's label, in a VRF that tracks flows for its ECMP
/// routes alone, to an address that may lead to a composite (a service's)
/// is the general path's: its flow pins its member. Behind an untracked
/// tunnel in the same vector, the fast lane once kept it and carried it
/// out on that tunnel's route (to a2; debug builds: "a route from another
/// version"), with no flow.
#[test]
fn a_tunnel_to_a_service_behind_an_untracked_tunnel_is_pinned_by_its_flow() {
    let (mut lab, flows) = lab_with_flows();
    add_a1_service_address(&mut lab);
    let to_a2 = tunnelled_to_blue(&udp(1, remote_ip(), a2_ip(), 7000, 53));
    let to_service = tunnelled_to_blue(&udp(1, remote_ip(), a1_service_ip(), 7000, 53));
    let (alone, _) = lab.run_with(&[(FABRIC, to_service.clone())], 0);
    assert!(matches!(alone[0].verdict, Verdict::Tx(A1) | Verdict::Tx(FABRIC)), "alone: {:?}", alone[0].verdict);
    assert_eq!(flows.len(), 1, "alone: its flow");
    for sport in 0..8 {
        let to_service = tunnelled_to_blue(&udp(1, remote_ip(), a1_service_ip(), 7100 + sport, 53));
        let (out, _) = lab.run_with(&[(FABRIC, to_a2.clone()), (FABRIC, to_service)], 0);
        assert_eq!(out[0].verdict, Verdict::Tx(A2), "the untracked tunnel");
        assert!(matches!(out[1].verdict, Verdict::Tx(A1) | Verdict::Tx(FABRIC)), "behind it: {:?}", out[1].verdict);
        assert_eq!(flows.len(), 2 + usize::from(sport), "behind it: a flow of its own");
    }
}

/// A route to a composite wider than the VRF's hint's blocks (as a
/// default route to a set of gateways is) leaves the hint unable to rule
/// addresses out. Its packets still belong to flows that pin their members,
/// and pod-to-pod packets beside it stay untracked.
#[test]
fn flows_under_a_wide_route_to_a_composite_keep_their_members() {
    let (mut lab, flows) = lab_with_flows();
    let wide = Object::Route(RouteSpec {
        network: None,
        vrf: BLUE,
        prefix: "172.16.0.0/12".parse().unwrap(),
        target: RouteTarget { nh: NH_ECMP, label: NO },
    });
    lab.writer.apply(&[Op::Add(wide)]).unwrap();
    assert!(!lab.writer.tables().vrf(BLUE).unwrap().ecmp_blocks.is_complete());
    for sport in 0..20 {
        assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 2000 + sport, 53)).0, Verdict::Tx(A2));
    }
    assert_eq!(flows.len(), 0, "pod to pod: no flow");
    flows_stay_on_their_members(lab, Ipv4Addr::new(172, 20, 1, 1));
    assert!(flows.len() >= 600, "a flow per connection: {}", flows.len());
    let key = FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(Ipv4Addr::new(172, 20, 1, 1)), 1000, 53);
    let entry = flows.get(flows.lookup(&key).unwrap().slot, 0).unwrap();
    assert_eq!(entry.packets, 3, "each round's packet counted on the flow");
}

/// In a VRF that tracks flows for its ECMP routes alone, the first stage
/// looks up the flows of packets to addresses near a service (the VRF's
/// hint), before their route. A flow outlives its route: once the route no
/// longer leads to a composite, its packets are not the flow's any more,
/// though the flow still remembers the new route.
#[test]
fn a_service_flow_stops_counting_once_its_route_leaves_the_composite() {
    let (mut lab, flows) = lab_with_flows();
    let route = blue_route;
    // A second service in the same block: BLUE keeps tracking flows for
    // its ECMP routes after the first one's route changes.
    lab.writer.apply(&[Op::Add(route("10.96.0.11/32", NH_ECMP, NO))]).unwrap();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    let send = |lab: &mut Lab| {
        let (v, out) = lab.run(A1, udp(1, a1_ip(), service, 2000, 53));
        assert_eq!(v, Verdict::Tx(FABRIC));
        (peer_of(&out), udp_label_of(&out))
    };
    let key = FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(service), 2000, 53);
    let packets = || flows.get(flows.lookup(&key).unwrap().slot, 0).unwrap().packets;
    // The first packet makes the flow, the second looks its route up, the
    // rest recall it: all on the pinned member.
    let member = send(&mut lab);
    for _ in 0..3 {
        assert_eq!(send(&mut lab), member);
    }
    assert_eq!(packets(), 4);
    lab.writer.apply(&[Op::Update(route("10.96.0.10/32", NH_UDP, 40))]).unwrap();
    for n in 0..3 {
        assert_eq!(send(&mut lab), (1, 40), "packet {n}: the plain route");
    }
    assert_eq!(packets(), 4, "not the flow's packets any more");
    lab.writer.apply(&[Op::Update(route("10.96.0.10/32", NH_ECMP, NO))]).unwrap();
    assert_eq!(send(&mut lab), member, "a composite again: the flow's member");
    assert_eq!(send(&mut lab), member);
    assert_eq!(packets(), 6);
}

/// In a VRF that tracks flows for its ECMP routes alone, an ICMP error a
/// pod sends about a service's answer has no flow key of its own: it goes
/// the general way, finds the connection's flow by the packet it quotes,
/// and so reaches the member the connection is pinned to (hashed on its
/// addresses alone, it would reach another for some connections).
#[test]
fn an_icmp_error_to_a_service_follows_the_connection_to_its_member() {
    let (mut lab, flows) = lab_with_flows();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    let l2 = L2 { src: mac(1), dst: router_mac() };
    for sport in 3000..3040u16 {
        let (v, out) = lab.run(A1, udp(1, a1_ip(), service, sport, 53));
        assert_eq!(v, Verdict::Tx(FABRIC));
        let pinned = peer_of(&out);
        // Port unreachable, about the service's answer to that connection.
        let answer =
            build::ipv4(service, a1_ip(), UDP, 63, false, &build::udp4_segment(service, a1_ip(), 53, sport, &[7; 8]));
        let mut body = vec![3, 3, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&answer);
        let error = build::ip_frame(l2, &build::ipv4(a1_ip(), service, ICMP, 64, false, &body));
        let (v, out) = lab.run(A1, error);
        assert_eq!(v, Verdict::Tx(FABRIC), "connection {sport}");
        assert_eq!(peer_of(&out), pinned, "the error of connection {sport} reached its pinned member");
    }
    assert_eq!(flows.len(), 40, "a flow per connection, none for the errors");
}

/// `frame`, a TCP segment from `tcp`, with its flags set to `flags` (and
/// its TCP checksum made right again).
fn with_tcp_flags(frame: &[u8], flags: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 20 + 13] = flags;
    f[14 + 20 + 16..14 + 20 + 18].fill(0);
    let (src, dst) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
    let c = transport_checksum_v4(src, dst, TCP, &f[14 + 20..]);
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&c.to_be_bytes());
    f
}

/// A VRF that tracks flows for its ECMP routes alone does not track the
/// answers of a service's connections (they are routed to the client, not
/// to a composite), so the TCP state of their flows is judged from the
/// client's side: after its handshake ACK a connection is established and
/// idles out after the idle timeout (180 s), keeping its pinned member that
/// long, not after the half-open one (30 s). A connection that never got
/// past its SYN still goes after 30 s.
#[test]
fn a_service_connection_whose_answers_are_not_tracked_ages_as_established() {
    let (mut lab, flows) = lab_with_flows();
    let service = Ipv4Addr::new(10, 96, 0, 10);
    lab.pipeline.set_now(1_000);
    let syn = tcp(from_a1(), a1_ip(), service, 40000, 80);
    assert_eq!(lab.run(A1, syn.clone()).0, Verdict::Tx(FABRIC));
    assert_eq!(lab.run(A1, with_tcp_flags(&syn, 0x10)).0, Verdict::Tx(FABRIC), "the handshake's ACK");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), service, 40001, 80)).0, Verdict::Tx(FABRIC), "a SYN alone");
    let slot = |sport| flows.lookup(&FlowKey::v4(BLUE, TCP, u32::from(a1_ip()), u32::from(service), sport, 80));
    let entry = flows.get(slot(40000).unwrap().slot, 1_000).unwrap();
    assert_eq!((entry.tcp, entry.packets, entry.one_way), (TcpState::Established, 2, true));
    assert!(flows.get(entry.reverse, 1_000).unwrap().one_way, "either entry says so");
    assert_eq!(flows.get(slot(40001).unwrap().slot, 1_000).unwrap().tcp, TcpState::HalfOpen);
    let sweep_all = |now| flows.sweep(now, 1 << 20);
    sweep_all(1_000 + 60_000);
    assert!(slot(40000).is_some(), "established: still there after 60 s idle");
    assert!(slot(40001).is_none(), "half-open: gone after 30 s");
    sweep_all(1_000 + 180_000);
    assert!(slot(40000).is_none(), "gone after 180 s idle");
}

/// Connections to `service`, routed to the lab's composite, keep their
/// members while the members change.
fn flows_stay_on_their_members(mut lab: Lab, service: Ipv4Addr) {
    let send = |lab: &mut Lab, sport: u16| {
        let (v, out) = lab.run(A1, udp(1, a1_ip(), service, sport, 53));
        assert_eq!(v, Verdict::Tx(FABRIC));
        peer_of(&out)
    };
    let before: Vec<u8> = (0..300).map(|p| send(&mut lab, 1000 + p)).collect();
    for peer in 1..=3 {
        assert!(before.iter().filter(|&&p| p == peer).count() > 50, "spread over three members: {before:?}");
    }
    let members = |ids: &[(u32, u32)]| {
        NextHop::Composite(EcmpGroup::new(ids.iter().map(|&(nh, label)| RouteTarget { nh, label }).collect()))
    };
    // Member 3 (next hop 13) leaves: only its flows move.
    lab.writer.apply(&[Op::Update(Object::NextHop(NH_ECMP, members(&[(NH_UDP, 100), (12, 101)])))]).unwrap();
    let after: Vec<u8> = (0..300).map(|p| send(&mut lab, 1000 + p)).collect();
    for (b, a) in before.iter().zip(&after) {
        if *b != 3 {
            assert_eq!(a, b, "a flow not on the removed member stayed put");
        } else {
            assert_ne!(*a, 3);
        }
    }
    // A new member arrives (next hop 13 again, in a new group whose hash
    // buckets all differ): pinned flows do not move at all.
    lab.writer.apply(&[Op::Update(Object::NextHop(NH_ECMP, members(&[(13, 102), (12, 101), (NH_UDP, 100)])))]).unwrap();
    let later: Vec<u8> = (0..300).map(|p| send(&mut lab, 1000 + p)).collect();
    assert_eq!(later, after, "every flow kept its member");
    // New flows use the new member too.
    let fresh: Vec<u8> = (0..300).map(|p| send(&mut lab, 5000 + p)).collect();
    assert!(fresh.contains(&3));
}

/// Every packet and byte of settled flows counts on its entry, however
/// the flows interleave in a batch and across the vectors a long batch is
/// cut into. (It guards any scheme that counts a flow's packets together,
/// as OVS does per batch; one was tried, and dropped as slower on traffic
/// spread over many flows.)
#[test]
fn a_batch_counts_every_packet_of_interleaved_flows() {
    let (mut lab, table) = lab_allowing_all();
    let (x, y) = (udp(1, a1_ip(), a2_ip(), 1000, 53), udp(1, a1_ip(), a2_ip(), 1001, 53));
    let key = |sport| FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(a2_ip()), sport, 53);
    // First packets: the general path makes the flows and counts them.
    assert_eq!((lab.run(A1, x.clone()).0, lab.run(A1, y.clone()).0), (Verdict::Tx(A2), Verdict::Tx(A2)));
    let counts = |sport| {
        let f = table.get(table.lookup(&key(sport)).unwrap().slot, 0).unwrap();
        (f.packets, f.bytes)
    };
    let one = counts(1000).1;
    // 40 frames, more than a vector: runs of x and y, and a run across
    // the vectors' border.
    let order = "xxxyxxyyx".repeat(4) + "xxxx";
    let input: Vec<(u32, Vec<u8>)> =
        order.chars().map(|c| (A1, if c == 'x' { x.clone() } else { y.clone() })).collect();
    let (out, _) = lab.run_with(&input, 0);
    assert!(out.iter().all(|f| f.verdict == Verdict::Tx(A2)));
    let (nx, ny) = (order.matches('x').count() as u64, order.matches('y').count() as u64);
    assert_eq!(counts(1000), (1 + nx, (1 + nx) * one));
    assert_eq!(counts(1001), (1 + ny, (1 + ny) * one));
}

/// A route in BLUE, of no network, to `nh` with `label`.
fn blue_route(prefix: &str, nh: u32, label: u32) -> Object {
    Object::Route(RouteSpec {
        network: None,
        vrf: BLUE,
        prefix: prefix.parse().unwrap(),
        target: RouteTarget { nh, label },
    })
}

/// The MPLS label of a frame encapsulated in MPLS over UDP.
fn udp_label_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes([0, frame[42], frame[43], frame[44]]) >> 4
}

/// A settled flow's packets skip the route lookup while its VRF's routes
/// are unchanged (the flow remembers the route). When a route changes,
/// the next packet goes where the new routes say, and when none is left,
/// it is dropped as any unrouted packet is.
#[test]
fn a_flow_follows_route_changes() {
    let (mut lab, table) = lab_allowing_all();
    let send = |lab: &mut Lab, dst: Ipv4Addr| {
        let (v, out) = lab.run(A1, udp(1, a1_ip(), dst, 4000, 53));
        (v, (v == Verdict::Tx(FABRIC)).then(|| (peer_of(&out), udp_label_of(&out))))
    };
    let route = blue_route;
    // The first packet makes the flow, the second takes the fast path and
    // looks the route up, the rest recall it.
    for n in 0..4 {
        assert_eq!(send(&mut lab, remote_ip()).1, Some((1, 40)), "packet {n}: 10.2.0.0/24 to peer 1");
    }
    lab.writer.apply(&[Op::Add(route("10.2.0.5/32", 12, 50))]).unwrap();
    for n in 0..3 {
        assert_eq!(send(&mut lab, remote_ip()).1, Some((2, 50)), "packet {n}: a longer prefix to peer 2");
    }
    lab.writer.apply(&[Op::Update(route("10.2.0.5/32", 13, 51))]).unwrap();
    for n in 0..3 {
        assert_eq!(send(&mut lab, remote_ip()).1, Some((3, 51)), "packet {n}: the route moved to peer 3");
    }
    // A change elsewhere in the VRF changes no answer.
    lab.writer.apply(&[Op::Add(route("10.9.0.0/16", 12, 52))]).unwrap();
    assert_eq!(send(&mut lab, remote_ip()).1, Some((3, 51)));
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(BLUE, "10.2.0.5/32".parse().unwrap()))]).unwrap();
    assert_eq!(send(&mut lab, remote_ip()).1, Some((1, 40)), "back to the /24");
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(BLUE, "10.2.0.0/24".parse().unwrap()))]).unwrap();
    let (unrouted, _) = send(&mut lab, Ipv4Addr::new(10, 2, 0, 6));
    assert!(matches!(unrouted, Verdict::Drop(_)), "{unrouted:?}");
    for n in 0..2 {
        assert_eq!(send(&mut lab, remote_ip()).0, unrouted, "packet {n}: no route left");
    }
    assert_eq!(table.len(), 1, "the same pair all along (an unrouted packet makes none)");
}

/// `a_flow_follows_route_changes` for IPv6: a pod's IPv6 flow remembers
/// the route its first packet was looked up with, in the VRF's IPv6
/// table, so that its later packets skip the lookup; a route change sends
/// its next packet where the new routes say (the lane looks it up again,
/// or carries it over, and remembers it), and with no route left it is
/// dropped. Every packet after the first stays in the lane.
#[test]
fn an_ipv6_flow_remembers_its_route_and_follows_route_changes() {
    let (mut lab, table) = lab_allowing_all();
    let remote: std::net::Ipv6Addr = "fd00:2::5".parse().unwrap();
    let key = FlowKey::v6(BLUE, UDP, u128::from(a1_ip6()), u128::from(remote), 4000, 53);
    let send = |lab: &mut Lab| {
        let (v, out) = lab.run(A1, build::udp6_frame(from_a1(), a1_ip6(), remote, 4000, 53, 64, 100));
        (v, (v == Verdict::Tx(FABRIC)).then(|| (peer_of(&out), udp_label_of(&out))))
    };
    let memo = |lab: &Lab| {
        let hit = table.forward_only(&table.probe(&key), None).expect("a plain forward entry");
        let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
        (blue.v6.recall(hit.route.route()), blue.v6.lookup(u128::from(remote)))
    };
    let route = blue_route;
    assert_eq!(send(&mut lab).1, Some((1, 42)), "the first packet, making the flow");
    let (recalled, looked_up) = memo(&lab);
    assert_eq!(recalled, Some(looked_up), "its route, remembered in this version");
    let general = lab.pipeline.general_frames();
    for n in 0..3 {
        assert_eq!(send(&mut lab).1, Some((1, 42)), "packet {n}: recalled");
    }
    lab.writer.apply(&[Op::Add(route("fd00:2::5/128", 12, 50))]).unwrap();
    assert_eq!(memo(&lab).0, None, "a route of an older version");
    for n in 0..2 {
        assert_eq!(send(&mut lab).1, Some((2, 50)), "packet {n}: a longer prefix to peer 2");
    }
    assert_eq!(memo(&lab).0, Some(memo(&lab).1), "remembered again");
    lab.writer.apply(&[Op::Update(route("fd00:2::5/128", 13, 51))]).unwrap();
    assert_eq!(send(&mut lab).1, Some((3, 51)), "the route moved to peer 3");
    // A change elsewhere in the VRF carries the route over.
    lab.writer.apply(&[Op::Add(route("fd00:9::/64", 12, 52))]).unwrap();
    assert_eq!(send(&mut lab).1, Some((3, 51)));
    assert_eq!(memo(&lab).0, Some(memo(&lab).1), "carried over to this version");
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(BLUE, "fd00:2::5/128".parse().unwrap()))]).unwrap();
    assert_eq!(send(&mut lab).1, Some((1, 42)), "back to the /64");
    assert_eq!(lab.pipeline.general_frames(), general, "every packet after the first in the lane");
    lab.writer.apply(&[Op::Delete(ObjectKey::Route(BLUE, "fd00:2::/64".parse().unwrap()))]).unwrap();
    let (unrouted, _) = send(&mut lab);
    assert!(matches!(unrouted, Verdict::Drop(_)), "no route left: {unrouted:?}");
    assert_eq!(send(&mut lab).0, unrouted);
    assert_eq!(table.len(), 1, "the same pair all along");
}

/// A pod's denied IPv6 flow remembers its route too: its packets are
/// dropped in the lane on their flow, the route recalled from the second
/// drop in the lane on, and followed when it changes.
#[test]
fn a_denied_ipv6_flow_remembers_its_route() {
    let (a1, _) = a1_a2();
    let (mut lab, table) =
        lab_allowing(vec![allow(a1, Endpoint::Prefix("10.0.0.0/8".parse().unwrap()), UDP, PortRange::ANY)]);
    let remote: std::net::Ipv6Addr = "fd00:2::5".parse().unwrap();
    let key = FlowKey::v6(BLUE, UDP, u128::from(a1_ip6()), u128::from(remote), 4000, 53);
    let send = |lab: &mut Lab| lab.run(A1, build::udp6_frame(from_a1(), a1_ip6(), remote, 4000, 53, 64, 100)).0;
    let memo = |lab: &Lab| {
        let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
        let (hit, _) = table.dropping(&table.probe(&key), blue.policy_generations()).expect("a dropping entry");
        (blue.v6.recall(hit.route.route()), blue.v6.lookup(u128::from(remote)))
    };
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(send(&mut lab), denied, "the first packet, making the pair");
    let general = lab.pipeline.general_frames();
    assert_eq!(send(&mut lab), denied);
    assert_eq!(memo(&lab).0, Some(memo(&lab).1), "its route, remembered in this version");
    for _ in 0..3 {
        assert_eq!(send(&mut lab), denied);
    }
    lab.writer.apply(&[Op::Add(blue_route("fd00:2::5/128", 12, 50))]).unwrap();
    assert_eq!(send(&mut lab), denied);
    assert_eq!(memo(&lab).0, Some(memo(&lab).1), "the new route, remembered");
    assert_eq!(lab.pipeline.general_frames(), general, "every packet after the first dropped in the lane");
    let flow = table.dump(None, 10, 0).into_iter().find(|f| f.forward && f.key == key).expect("the pair");
    assert_eq!(flow.packets, 6, "every packet counted on its flow");
}

/// `an_ipv6_flow_remembers_its_route_and_follows_route_changes` from the
/// fabric: an IPv6 flow whose tunnel's label names the VRF (not a pod)
/// remembers its route there, and its later packets, stripped in the
/// fabric's IPv6 pass, skip the lookup; a route change sends the next
/// where the new routes say, and is remembered again (looked up, or
/// carried over where the change did not cover the destination). A denied
/// flow's packets are dropped there on the route their flow remembers.
#[test]
fn an_ipv6_flow_from_the_fabric_remembers_its_route() {
    let client: std::net::Ipv6Addr = "fd00:2::7".parse().unwrap();
    let (mut lab, table) =
        lab_allowing(vec![allow(Endpoint::Prefix("fd00:2::/64".parse().unwrap()), Endpoint::Any, UDP, port(53))]);
    let send = |lab: &mut Lab, dport: u16| {
        let inner = build::udp6_frame(from_peer(), client, a1_ip6(), 5000, dport, 64, 100);
        lab.run(FABRIC, tunnelled_to_blue(&inner)).0
    };
    let memo = |lab: &Lab, dport: u16| {
        let key = FlowKey::v6(BLUE, UDP, u128::from(client), u128::from(a1_ip6()), 5000, dport);
        let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
        let probe = table.probe(&key);
        let hit =
            table.forward_only(&probe, None).or_else(|| table.dropping(&probe, blue.policy_generations()).map(|d| d.0));
        let hit = hit.expect("the flow's entry");
        (blue.v6.recall(hit.route.route()), blue.v6.lookup(u128::from(a1_ip6())))
    };
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(send(&mut lab, 53), Verdict::Tx(A1), "the first packet, making the flow");
    assert_eq!(send(&mut lab, 80), denied, "the first packet, making the pair");
    let general = lab.pipeline.general_frames();
    for n in 0..3 {
        assert_eq!((send(&mut lab, 53), send(&mut lab, 80)), (Verdict::Tx(A1), denied), "packet {n}");
    }
    for dport in [53, 80] {
        assert_eq!(memo(&lab, dport).0, Some(memo(&lab, dport).1), "port {dport}: its route, remembered");
    }
    lab.writer.apply(&[Op::Update(blue_route("fd00:1::2/128", NH_A2, NO))]).unwrap();
    assert_eq!(memo(&lab, 53).0, None, "a route of an older version");
    assert_eq!(send(&mut lab, 53), Verdict::Tx(A2), "followed the route");
    assert_eq!(memo(&lab, 53).0, Some(memo(&lab, 53).1), "the new route, remembered");
    for _ in 0..3 {
        assert_eq!(send(&mut lab, 80), denied);
    }
    assert_eq!(memo(&lab, 80).0, Some(memo(&lab, 80).1), "the denied flow's new route, remembered");
    lab.writer.apply(&[Op::Update(blue_route("fd00:1::2/128", NH_A1, NO))]).unwrap();
    assert_eq!(send(&mut lab, 53), Verdict::Tx(A1), "and back");
    // A change elsewhere in the VRF carries the route over.
    lab.writer.apply(&[Op::Add(blue_route("fd00:9::/64", 12, 52))]).unwrap();
    assert_eq!(send(&mut lab, 53), Verdict::Tx(A1));
    assert_eq!(memo(&lab, 53).0, Some(memo(&lab, 53).1), "carried over to this version");
    for _ in 0..3 {
        assert_eq!(send(&mut lab, 53), Verdict::Tx(A1));
    }
    assert_eq!(lab.pipeline.general_frames(), general, "every packet after the first two in the lane");
    let flow = table.dump(None, 10, 0).into_iter().find(|f| f.forward && f.key.dport == 80).expect("the denied pair");
    assert_eq!(flow.packets, 7, "every denied packet counted on its flow");
}

#[test]
fn the_pipeline_ages_flows_by_the_time_it_is_given() {
    let (mut lab, table) = lab_with_policy();
    lab.pipeline.set_now(1_000);
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 5, 80)).0, Verdict::Drop(DropReason::FlowActionDrop));
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80)).0, Verdict::Tx(A2));
    assert_eq!(table.len(), 2);
    // Empty batches still sweep a bounded part of the table each, paced
    // to cover the whole table once per second of the pipeline's clock.
    let a_second_from = |lab: &mut Lab, from: u64| {
        for ms in 0..1_000 {
            lab.pipeline.set_now(from + ms);
            lab.run_with(&[], 0);
        }
    };
    a_second_from(&mut lab, 1_000 + 28_999);
    assert_eq!(table.len(), 2, "at most 29,998 ms after their last packets");
    a_second_from(&mut lab, 1_000 + 30_000);
    assert_eq!(table.len(), 0, "the dropped flow after 30 s, the half-open TCP one too");
    // Paced, not more: a second of the clock in steps of a millisecond looks
    // over the table once, and batches at a clock that stands still look at
    // nothing (a least step a batch looked over a busy worker's table many
    // times a second).
    let before = table.swept_slots();
    a_second_from(&mut lab, 1_000 + 31_000);
    assert_eq!(table.swept_slots() - before, table.slot_count(), "a second's sweeps: the table once");
    let before = table.swept_slots();
    for _ in 0..100 {
        lab.run_with(&[], 0);
    }
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 5, 80)).0, Verdict::Drop(DropReason::FlowActionDrop));
    assert_eq!(table.swept_slots(), before, "no time passed: nothing owed");
}

// ---- floating IPs ----

/// The lab plus a public VRF with the floating IP 185.22.97.188 on a1 and
/// a2 (`add_floating_ip`). No policy anywhere: the floating IPs alone make
/// the VRFs track flows.
fn lab_with_floating_ip() -> (Lab, Arc<FlowTable>) {
    let (mut lab, table) = lab_with_flows();
    add_floating_ip(&mut lab);
    (lab, table)
}

/// The ICMP port unreachable that pod `pod` (`pod_ip`) sends to `to` about
/// `frame`, quoting its IPv4 header and 8 bytes.
fn port_unreachable(pod: u32, pod_ip: Ipv4Addr, to: Ipv4Addr, frame: &[u8]) -> Vec<u8> {
    let mut m = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&frame[14..14 + 28]);
    let c = inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    build::ip_frame(L2 { src: mac(pod as u8), dst: router_mac() }, &build::ipv4(pod_ip, to, 1, 64, false, &m))
}

fn ip_addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    (a(26), a(30))
}

/// A pod with floating IPs has every packet tracked, its own flows in its
/// network too (no NAT), wherever they go: their hits take the fast lane,
/// as any pod's do, and are counted on their flows. Refused there in a VRF
/// that tracks only its ECMP routes' flows (the lab's, with no policy),
/// each of their packets took the general path.
#[test]
fn a_floating_ip_pods_own_flows_take_the_fast_lane() {
    let (mut lab, table) = lab_with_floating_ip();
    for (dst, out) in [(remote_ip(), FABRIC), (a2_ip(), A2)] {
        let before = lab.pipeline.general_frames();
        for _ in 0..10 {
            let (v, _) = lab.run(A1, udp(1, a1_ip(), dst, 5000, 53));
            assert_eq!(v, Verdict::Tx(out), "to {dst}");
        }
        assert_eq!(lab.pipeline.general_frames() - before, 1, "to {dst}: the first packet alone, making its flow");
        let flow = table
            .dump(None, 10, 0)
            .into_iter()
            .find(|f| f.forward && f.key.dst == u128::from(dst.to_ipv6_mapped()))
            .unwrap();
        assert_eq!((flow.packets, flow.nat.is_none()), (10, true), "to {dst}");
    }
    // Its IPv6 too, which no floating IP (IPv4) rewrites, in its VRF
    // without a policy: tracked, as its IPv4 is, and in the lane after the
    // first packet. Until the lane's IPv6 pass took them, the general path's.
    let before = lab.pipeline.general_frames();
    for _ in 0..10 {
        let frame = build::udp6_frame(from_a1(), a1_ip6(), a2_ip6(), 5000, 53, 64, 100);
        assert_eq!(lab.run(A1, frame).0, Verdict::Tx(A2));
    }
    assert_eq!(lab.pipeline.general_frames() - before, 1, "IPv6: the first packet alone, making its flow");
    let flow =
        table.dump(None, 10, 0).into_iter().find(|f| f.forward && f.key.dst == u128::from(a2_ip6())).expect("tracked");
    assert_eq!(flow.packets, 10, "every packet counted on its flow");
}

/// An IPv6 service address (a /128 to a composite of the node's two pods)
/// in a VRF that tracks flows for its ECMP routes alone (the lab's, with
/// no policy), reached from another node: the first packet makes the flow
/// on the general path, and the others follow it in the lane, to the
/// member it pinned, counted on it. The fabric's IPv6 pass learns they are
/// tracked only from their route, and then looks each flow up
/// (`tracked6_cold`; a pod's pass fetches them together, `tracked6_late`).
#[test]
fn ipv6_service_flows_from_the_fabric_take_the_fast_lane_to_their_member() {
    const NH_LOCAL_ECMP: u32 = 45;
    let (mut lab, table) = lab_with_flows();
    let members = [NH_A1, NH_A2].map(|nh| RouteTarget { nh, label: RouteTarget::NO_LABEL }).to_vec();
    let service: std::net::Ipv6Addr = "fd00:96::a".parse().unwrap();
    lab.writer
        .apply(&[
            Op::Add(Object::NextHop(NH_LOCAL_ECMP, NextHop::Composite(EcmpGroup::new(members)))),
            route_in(BLUE, "fd00:96::a/128", NH_LOCAL_ECMP, RouteTarget::NO_LABEL, None),
        ])
        .unwrap();
    let client: std::net::Ipv6Addr = "fd00:2::7".parse().unwrap();
    for sport in [5000, 5001, 5002, 5003] {
        let inner = build::udp6_frame(from_peer(), client, service, sport, 53, 64, 100);
        let frame = || tunnelled_to_blue(&inner);
        let before = lab.pipeline.general_frames();
        let causes = *lab.pipeline.general_causes();
        let (first, _) = lab.run(FABRIC, frame());
        assert!(matches!(first, Verdict::Tx(A1) | Verdict::Tx(A2)), "{first:?}");
        for _ in 0..9 {
            assert_eq!(lab.run(FABRIC, frame()).0, first, "port {sport}: pinned");
        }
        let why = general_since(&lab.pipeline, &causes);
        assert_eq!(
            lab.pipeline.general_frames() - before,
            1,
            "port {sport}: the first alone, making its flow: {why:?}"
        );
        let flow = table
            .dump(None, 100, 0)
            .into_iter()
            .find(|f| f.forward && f.key.dst == u128::from(service) && f.key.sport == sport)
            .expect("tracked");
        assert_eq!(flow.packets, 10, "port {sport}: every packet counted on its flow");
    }
}

/// A floating IP's flows are the public network's: the policy of the
/// pods' own network, which judges flows from other networks' pods on
/// the node, does not judge them (the floating IP is what exposes them).
#[test]
fn a_floating_ips_flows_are_judged_by_the_public_network_alone() {
    let (mut lab, _table) = lab_with_floating_ip();
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer.apply(&[Op::Add(Object::Policy(BLUE, deny_all))]).unwrap();
    let client = L2 { src: mac(9), dst: router_mac() };
    let (v, _) = lab.run(GW, tcp(client, CLIENT, FIP, 40000, 80));
    assert!(matches!(v, Verdict::Tx(p) if p == A1 || p == A2), "{v:?}");
    let (v, _) = lab.run(A1, tcp(from_a1(), a1_ip(), a2_ip(), 40000, 80));
    assert_eq!(v, Verdict::Drop(DropReason::FlowActionDrop), "blue's own flows are blue's");
}

/// A policy change that denies a floating IP's client stops the pod's
/// answers to it at once, not only once the client sends again. The
/// answers' entry, in the pod's network, is judged in the public network
/// by the pair's forward entry, and was decided again only from that side:
/// a pod streaming to its client over UDP went on through the denial for
/// as long as the client stayed silent. Judged so alone, by the fast lane
/// (a vector of answers) and by the general path (behind another pod's
/// frame); and allowed again, the answers pass before the client sends.
#[test]
fn a_policy_change_stops_a_floating_ips_answers_at_once() {
    let (mut lab, table) = lab_with_floating_ip();
    lab.writer.apply(&[Op::Add(Object::Policy(PUBLIC, Policy::allow_all()))]).unwrap();
    let (v, at_pod) = lab.run(GW, udp(9, CLIENT, FIP, 6000, 53));
    let Verdict::Tx(pod) = v else { panic!("the client's datagram went to {v:?}") };
    let answer = || udp(pod as u8, ip_addrs(&at_pod).1, CLIENT, 53, 6000);
    let elsewhere = || udp(1, a1_ip(), a2_ip(), 7, 7);
    let both_ways = |lab: &mut Lab| {
        let alone = lab.run(pod, answer()).0;
        let (out, _) = lab.run_with(&[(if pod == A1 { A2 } else { A1 }, elsewhere()), (pod, answer())], 0);
        [alone, out[1].verdict]
    };
    assert_eq!(both_ways(&mut lab), [Verdict::Tx(GW); 2]);
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer.apply(&[Op::Update(Object::Policy(PUBLIC, deny_all))]).unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(both_ways(&mut lab), [denied; 2], "the answers, the client silent");
    assert_eq!(both_ways(&mut lab), [denied; 2], "and the next");
    assert_eq!(lab.run(GW, udp(9, CLIENT, FIP, 6000, 53)).0, denied, "the client");
    assert_eq!(table.len(), 1, "the same pair, decided again");
    lab.writer.apply(&[Op::Update(Object::Policy(PUBLIC, Policy::allow_all()))]).unwrap();
    assert_eq!(both_ways(&mut lab), [Verdict::Tx(GW); 2], "allowed again, the client still silent");
    let before = lab.pipeline.general_frames();
    for _ in 0..5 {
        assert_eq!(lab.run(pod, answer()).0, Verdict::Tx(GW));
    }
    assert_eq!(lab.pipeline.general_frames(), before, "decided again, the answers take the fast lane");
}

/// The same for a pair to a pod of another network on this node: the
/// pod's answers, whose entry lives in its own network, stop as soon as
/// the client's network denies the pair, and as soon as the pod's own
/// network does (it judges the pair too).
#[test]
fn a_policy_change_stops_answers_from_a_pod_of_another_network_at_once() {
    let (mut lab, _table) = lab_with_green_open();
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    for judge in [BLUE, GREEN] {
        assert_eq!(lab.run(A2, udp(2, a2_ip(), g1_ip(), 5000, 53)).0, Verdict::Tx(G1), "judged by {judge}");
        let answer = || udp(7, g1_ip(), a2_ip(), 53, 5000);
        assert_eq!(lab.run(G1, answer()).0, Verdict::Tx(A2));
        lab.writer.apply(&[Op::Update(Object::Policy(judge, deny_all.clone()))]).unwrap();
        assert_eq!(lab.run(G1, answer()).0, denied, "{judge} denies it, a2 silent");
        let (out, _) = lab.run_with(&[(A1, udp(1, a1_ip(), a2_ip(), 7, 7)), (G1, answer())], 0);
        assert_eq!(out[1].verdict, denied, "{judge}: on the general path too");
        lab.writer.apply(&[Op::Update(Object::Policy(judge, Policy::allow_all()))]).unwrap();
        assert_eq!(lab.run(G1, answer()).0, Verdict::Tx(A2), "{judge} allows it again");
    }
}

#[test]
fn a_floating_ip_reaches_its_pods_and_their_answers_come_from_it() {
    let (mut lab, table) = lab_with_floating_ip();
    let client = L2 { src: mac(9), dst: router_mac() };
    let mut seen = [0u32; 3];
    let mut out_frames = Vec::new();
    for port in 0..40u16 {
        let syn = tcp(client, CLIENT, FIP, 40000 + port, 80);
        let (v, inbound) = lab.run(GW, syn);
        let pod = match v {
            Verdict::Tx(p) if p == A1 || p == A2 => p,
            other => panic!("the SYN went to {other:?}"),
        };
        seen[pod as usize] += 1;
        let pod_ip = if pod == A1 { a1_ip() } else { a2_ip() };
        assert_eq!(ip_addrs(&inbound), (CLIENT, pod_ip), "DNAT to the pod's own address");
        // The pod answers from its own address; the client sees the floating IP.
        let (v, outbound) =
            lab.run(pod, tcp(L2 { src: mac(pod as u8), dst: router_mac() }, pod_ip, CLIENT, 80, 40000 + port));
        assert_eq!(v, Verdict::Tx(GW), "the answer leaves through the public VRF");
        assert_eq!(ip_addrs(&outbound), (FIP, CLIENT), "SNAT back to the floating IP");
        out_frames.push(inbound);
        out_frames.push(outbound);
    }
    assert!(seen[A1 as usize] >= 8 && seen[A2 as usize] >= 8, "ECMP over both pods: {seen:?}");
    assert_eq!(table.len(), 40);
    // Later datagrams of a flow, and the pod's answers (which, unlike SYNs,
    // the fast path rewrites), are NATed like the first: to the same pod,
    // and back from the floating IP.
    for port in 0..8u16 {
        let first = lab.run(GW, udp(9, CLIENT, FIP, 6000 + port, 53));
        for _ in 0..3 {
            let again = lab.run(GW, udp(9, CLIENT, FIP, 6000 + port, 53));
            assert_eq!((again.0, ip_addrs(&again.1)), (first.0, ip_addrs(&first.1)), "datagram {port}");
            assert_ne!(ip_addrs(&again.1).1, FIP, "datagram {port} is DNATed");
            let Verdict::Tx(pod) = again.0 else { unreachable!() };
            let (v, answer) = lab.run(pod, udp(pod as u8, ip_addrs(&again.1).1, CLIENT, 53, 6000 + port));
            assert_eq!((v, ip_addrs(&answer)), (Verdict::Tx(GW), (FIP, CLIENT)), "answer {port}");
            out_frames.push(again.1);
            out_frames.push(answer);
        }
    }
    // Pods' own traffic inside blue is not NATed.
    let (v, plain) = lab.run(A1, udp(1, a1_ip(), a2_ip(), 7, 7));
    assert_eq!((v, ip_addrs(&plain)), (Verdict::Tx(A2), (a1_ip(), a2_ip())));
    // An ICMP error from a pod about the client's datagram reaches the
    // client from the floating IP, quoting what the client sent.
    let sent = udp(9, CLIENT, FIP, 5353, 53);
    let (v, at_pod) = lab.run(GW, sent.clone());
    let pod = match v {
        Verdict::Tx(p) => p,
        other => panic!("{other:?}"),
    };
    let pod_ip = if pod == A1 { a1_ip() } else { a2_ip() };
    let (v, to_client) = lab.run(pod, port_unreachable(pod, pod_ip, CLIENT, &at_pod));
    assert_eq!(v, Verdict::Tx(GW));
    assert_eq!(ip_addrs(&to_client), (FIP, CLIENT));
    // The quote is the client's packet as the pod got it: one hop (TTL) on.
    let (quote, original) = (&to_client[14 + 28..14 + 56], &sent[14..14 + 28]);
    assert_eq!(&quote[12..], &original[12..], "addresses, ports and UDP checksum as the client sent them");
    assert_eq!(quote[8], original[8] - 1);
    assert_eq!(inet_checksum(&quote[..20]), 0, "the quoted header's checksum is right");
    out_frames.push(to_client);
    let fields = ["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status"];
    if let Some(rows) = tshark(&out_frames, &fields) {
        assert_eq!(rows.len(), out_frames.len());
        for r in &rows {
            assert!(r[0].split(',').all(|c| c == "1"), "{r:?}");
            // The datagram an ICMP error quotes is cut short: tshark
            // cannot verify its checksum (2).
            let icmp = !r[3].is_empty();
            assert!(r[1..].iter().all(|c| c.is_empty() || c == "1" || (icmp && c == "2")), "{r:?}");
        }
        let datagrams = rows.iter().filter(|r| r[2] == "1").count();
        assert_eq!(datagrams, 48, "every rewritten datagram's checksum verified");
    }
    // The flows show the rewrite on both sides.
    let fwd = table.lookup(&FlowKey::v4(PUBLIC, TCP, CLIENT.into(), FIP.into(), 40000, 80)).unwrap();
    assert!(fwd.nat.dst.is_some() && fwd.route_vrf.is_none());
    let rev = table.get(fwd.reverse, 0).unwrap();
    assert_eq!((rev.nat.src, rev.route_vrf, rev.key.vrf), (Some(FIP.into()), Some(PUBLIC), BLUE));
}

fn l4_ports(frame: &[u8]) -> (u16, u16) {
    let l4 = 14 + usize::from(frame[14] & 0xf) * 4;
    (u16::from_be_bytes([frame[l4], frame[l4 + 1]]), u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]))
}

/// A floating IP that forwards ports (Contrail's port mappings, a
/// Kubernetes service's port and target port): the client's port 80 is
/// the pod's 8080, and its answers come from port 80 again; ports it does
/// not forward, and ICMP, are dropped without a pair.
#[test]
fn a_floating_ip_forwards_its_ports_to_the_pods_and_no_others() {
    use vrouter::tables::PortMap;
    let (mut lab, table) = lab_with_floating_ip();
    let maps = vec![PortMap { proto: 6, port: 80, target: 8080 }, PortMap { proto: 17, port: 53, target: 5353 }];
    let t = lab.handle.load();
    let ported = |i: u32| {
        let mut v = t.vif(i).unwrap().clone();
        v.floating[0].ports = maps.clone();
        Op::Update(Object::Vif(v))
    };
    let ops = [ported(A1), ported(A2)];
    drop(t);
    lab.writer.apply(&ops).unwrap();
    let client = L2 { src: mac(9), dst: router_mac() };
    let pod_of = |v: &Verdict| match v {
        Verdict::Tx(p) if *p == A1 => (A1, a1_ip()),
        Verdict::Tx(p) if *p == A2 => (A2, a2_ip()),
        other => panic!("{other:?}"),
    };
    let mut frames = Vec::new();
    for port in 0..4u16 {
        let (v, inbound) = lab.run(GW, tcp(client, CLIENT, FIP, 40000 + port, 80));
        let (pod, pod_ip) = pod_of(&v);
        assert_eq!((ip_addrs(&inbound), l4_ports(&inbound)), ((CLIENT, pod_ip), (40000 + port, 8080)));
        let answer = tcp(L2 { src: mac(pod as u8), dst: router_mac() }, pod_ip, CLIENT, 8080, 40000 + port);
        let (v, outbound) = lab.run(pod, answer);
        assert_eq!(v, Verdict::Tx(GW));
        assert_eq!((ip_addrs(&outbound), l4_ports(&outbound)), ((FIP, CLIENT), (80, 40000 + port)), "from port 80");
        frames.extend([inbound, outbound]);
    }
    let fwd = table.lookup(&FlowKey::v4(PUBLIC, TCP, CLIENT.into(), FIP.into(), 40000, 80)).unwrap();
    assert_eq!(fwd.nat.dport, Some(8080));
    let rev = table.get(fwd.reverse, 0).unwrap();
    assert_eq!((rev.key.sport, rev.nat.src, rev.nat.sport), (8080, Some(FIP.into()), Some(80)));
    // UDP too, its later datagrams (hits) alike, and an ICMP error from the
    // pod quotes what the client sent: port 53 of the floating IP.
    let sent = udp(9, CLIENT, FIP, 6000, 53);
    let (v, at_pod) = lab.run(GW, sent.clone());
    let (pod, pod_ip) = pod_of(&v);
    assert_eq!(l4_ports(&at_pod), (6000, 5353));
    assert_eq!(l4_ports(&lab.run(GW, sent.clone()).1), (6000, 5353), "a hit");
    let (v, to_client) = lab.run(pod, port_unreachable(pod, pod_ip, CLIENT, &at_pod));
    assert_eq!((v, ip_addrs(&to_client)), (Verdict::Tx(GW), (FIP, CLIENT)));
    let (quote, original) = (&to_client[14 + 28..14 + 56], &sent[14..14 + 28]);
    assert_eq!(&quote[12..], &original[12..], "addresses, ports and UDP checksum as the client sent them");
    frames.extend([at_pod, to_client]);
    if let Some(rows) = tshark(
        &frames,
        &["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status", "tcp.dstport"],
    ) {
        assert_eq!(rows.len(), frames.len());
        let good = |c: &String| c.is_empty() || c.split(',').all(|c| c == "1");
        for r in &rows {
            assert!(r[0].split(',').all(|c| c == "1"), "{r:?}");
            assert!(good(&r[1]) && good(&r[3]), "{r:?}");
            // (An ICMP error quotes a datagram's header alone, whose
            // checksum tshark cannot verify.)
            assert!(!r[3].is_empty() || good(&r[2]), "{r:?}");
        }
        assert_eq!(rows[0][4], "8080", "tshark reads the pod's port");
        assert_eq!(rows[rows.len() - 2][2], "1", "the datagram's checksum, its port rewritten");
    }
    // Not forwarded: another TCP port, another protocol's port, ICMP.
    let pairs = table.len();
    for (frame, what) in [
        (tcp(client, CLIENT, FIP, 41000, 22), "TCP 22"),
        (udp(9, CLIENT, FIP, 41000, 80), "UDP 80"),
        (build::ip_frame(client, &build::ipv4(CLIENT, FIP, 1, 64, false, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0])), "ping"),
    ] {
        let (v, _) = lab.run(GW, frame);
        assert_eq!(v, Verdict::Drop(DropReason::PortNotForwarded), "{what}");
    }
    assert_eq!(table.len(), pairs, "no pair for what is not forwarded");
    // Other ports forwarded: the pairs of the old ones go.
    let t = lab.handle.load();
    let mut a1 = t.vif(A1).unwrap().clone();
    drop(t);
    a1.floating[0].ports = vec![PortMap { proto: 6, port: 443, target: 8443 }];
    let ops = [Op::Update(Object::Vif(a1))];
    let ends = stale_ends(&lab.handle.load(), &ops);
    lab.writer.apply(&ops).unwrap();
    let to_a1 = pairs_to(&table, a1_ip()).0;
    assert!(to_a1 > 0);
    assert_eq!(table.remove_stale(&ends), to_a1, "the pairs translated to a1");
}

/// A Kubernetes ClusterIP service as vrouter can carry it: the service
/// address is a floating IP of its endpoints in their own network, which
/// forwards the service's port to the pods' target port. A client on
/// another node reaches it by the network's label; the pod it lands on
/// sees the client's address at its own port, and its answers go back
/// through the tunnel from the service's address and port.
#[test]
fn a_service_address_held_as_a_floating_ip_in_its_network_forwards_its_port() {
    use vrouter::pktgen::build::Tunnel as Encap;
    use vrouter::tables::{FloatingIp, PortMap};
    let (mut lab, _table) = lab_with_flows();
    let cluster_ip = Ipv4Addr::new(10, 96, 0, 20);
    let t = lab.handle.load();
    let held = |i: u32| {
        let mut v = t.vif(i).unwrap().clone();
        let ports = vec![PortMap { proto: TCP, port: 80, target: 8080 }];
        v.floating = vec![FloatingIp { address: cluster_ip, vrf: BLUE, ports }];
        Op::Update(Object::Vif(v))
    };
    let member = |nh| RouteTarget { nh, label: RouteTarget::NO_LABEL };
    let ops = [
        held(A1),
        held(A2),
        Op::Add(Object::NextHop(60, NextHop::Composite(EcmpGroup::new(vec![member(NH_A1), member(NH_A2)])))),
        Op::Add(Object::Route(RouteSpec {
            network: None,
            vrf: BLUE,
            prefix: "10.96.0.20/32".parse().unwrap(),
            target: member(60),
        })),
    ];
    drop(t);
    lab.writer.apply(&ops).unwrap();
    let mut seen = [0u32; 3];
    for port in 0..16u16 {
        let syn = tcp(L2 { src: mac(9), dst: mac(9) }, remote_ip(), cluster_ip, 40000 + port, 80);
        let frame = tunnelled_to_blue(&syn);
        let (v, at_pod) = lab.run(FABRIC, frame);
        let (pod, pod_ip) = match v {
            Verdict::Tx(p) if p == A1 => (A1, a1_ip()),
            Verdict::Tx(p) if p == A2 => (A2, a2_ip()),
            other => panic!("{other:?}"),
        };
        seen[pod as usize] += 1;
        assert_eq!((ip_addrs(&at_pod), l4_ports(&at_pod)), ((remote_ip(), pod_ip), (40000 + port, 8080)));
        let answer = tcp(L2 { src: mac(pod as u8), dst: router_mac() }, pod_ip, remote_ip(), 8080, 40000 + port);
        let (v, out) = lab.run(pod, answer);
        assert_eq!(v, Verdict::Tx(FABRIC), "back through the tunnel");
        // Ethernet, the outer IPv4 and UDP headers, one label: then the answer.
        let inner = [&out[..14], &out[14 + 20 + 8 + 4..]].concat();
        assert_eq!((ip_addrs(&inner), l4_ports(&inner)), ((cluster_ip, remote_ip()), (80, 40000 + port)));
    }
    assert!(seen[A1 as usize] >= 3 && seen[A2 as usize] >= 3, "spread over both endpoints: {seen:?}");
    // A node whose route to the service picked a1 sends by a1's own label:
    // translated the same.
    let syn = tcp(L2 { src: mac(9), dst: mac(9) }, remote_ip(), cluster_ip, 41000, 80);
    let frame =
        build::mpls_tunnel_frame(from_peer(), Encap::Udp(6635), peer(1), node_ip(), LABEL_A1, 64, 50000, &syn[14..]);
    let (v, at_pod) = lab.run(FABRIC, frame);
    assert_eq!((v, ip_addrs(&at_pod), l4_ports(&at_pod)), (Verdict::Tx(A1), (remote_ip(), a1_ip()), (41000, 8080)));
    // An endpoint calling its own service: where the hash sends it back to
    // itself, it sees the service's address as the source (or it would
    // answer itself past the translation), and its answer comes back to
    // it from the service's port.
    let (mut hairpins, mut across, mut frames) = (0, 0, Vec::new());
    for sport in 42000..42032u16 {
        let (v, got) = lab.run(A1, tcp(from_a1(), a1_ip(), cluster_ip, sport, 80));
        if v == Verdict::Tx(A2) {
            assert_eq!((ip_addrs(&got), l4_ports(&got)), ((a1_ip(), a2_ip()), (sport, 8080)), "to the other endpoint");
            across += 1;
            continue;
        }
        assert_eq!(v, Verdict::Tx(A1));
        assert_eq!((ip_addrs(&got), l4_ports(&got)), ((cluster_ip, a1_ip()), (sport, 8080)), "from the service");
        let (v, back) = lab.run(A1, tcp(from_a1(), a1_ip(), cluster_ip, 8080, sport));
        assert_eq!(v, Verdict::Tx(A1));
        assert_eq!((ip_addrs(&back), l4_ports(&back)), ((cluster_ip, a1_ip()), (80, sport)), "the answer");
        frames.extend([got, back]);
        hairpins += 1;
    }
    assert!(hairpins >= 4 && across >= 4, "{hairpins} back to a1, {across} to a2");
    if let Some(rows) = tshark(&frames, &["ip.checksum.status", "tcp.checksum.status"]) {
        assert!(rows.len() == frames.len() && rows.iter().all(|r| r[0] == "1" && r[1] == "1"), "{rows:?}");
    }
}

/// A service with ports of another network, reached on the same node by
/// an imported route: translated as from its own network, and judged by
/// the service's network's policy too, as a flow to that network's pod is
/// without a floating IP; its answers go back translated.
#[test]
fn a_service_of_another_network_is_translated_and_judged_by_its_network_too() {
    use vrouter::tables::{FloatingIp, PortMap};
    let (mut lab, table) = lab_with_flows();
    let svc = Ipv4Addr::new(10, 5, 0, 100);
    let mut ops = green_joined_to_blue_ops();
    let mut g1 = vrouter::tables::Vif::new(G1, "veth-g1", vrouter::tables::VifKind::Virtual, GREEN, mac(7));
    g1.ipv4 = Some(g1_ip());
    g1.floating =
        vec![FloatingIp { address: svc, vrf: GREEN, ports: vec![PortMap { proto: TCP, port: 80, target: 8080 }] }];
    ops.extend([
        Op::Update(Object::Vif(g1)),
        route_in(GREEN, "10.5.0.100/32", NH_G1, NO, None),
        route_in(BLUE, "10.5.0.100/32", NH_G1, NO, Some(GREEN)),
        Op::Add(Object::Policy(
            GREEN,
            Policy { rules: vec![allow(Endpoint::Any, Endpoint::Any, TCP, port(80))], default: PolicyAction::Deny },
        )),
    ]);
    lab.writer.apply(&ops).unwrap();
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    let (v, at_g1) = lab.run(A1, tcp(from_a1(), a1_ip(), svc, 40000, 80));
    assert_eq!((v, ip_addrs(&at_g1), l4_ports(&at_g1)), (Verdict::Tx(G1), (a1_ip(), g1_ip()), (40000, 8080)));
    let (v, back) = lab.run(G1, tcp(g1_l2, g1_ip(), a1_ip(), 8080, 40000));
    assert_eq!((v, ip_addrs(&back), l4_ports(&back)), (Verdict::Tx(A1), (svc, a1_ip()), (80, 40000)), "the answer");
    let tables = lab.writer.tables().clone();
    let hit = table.lookup(&FlowKey::v4(BLUE, TCP, a1_ip().into(), svc.into(), 40000, 80)).unwrap();
    let judged = vrouter::pipeline::judgement(&tables, &table, &table.get(hit.slot, 0).unwrap()).unwrap();
    assert_eq!(judged.rule, Some(vrouter::pipeline::Ruling { vrf: GREEN, rule: Some(0) }), "green's rule");
    // Green stops it: the pair's next packet is denied, and a new one too.
    lab.writer
        .apply(&[Op::Update(Object::Policy(GREEN, Policy { rules: vec![], default: PolicyAction::Deny }))])
        .unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    let ack = |f: Vec<u8>| with_tcp_flags(&f, vrouter::wire::tcp::FLAG_ACK);
    assert_eq!(lab.run(A1, ack(tcp(from_a1(), a1_ip(), svc, 40000, 80))).0, denied, "decided again by green");
    assert_eq!(lab.run(A1, tcp(from_a1(), a1_ip(), svc, 40001, 80)).0, denied, "a new one");
}

/// The pairs in `table` whose forward entry translates to `pod`, and the others.
fn pairs_to(table: &FlowTable, pod: Ipv4Addr) -> (usize, usize) {
    let all = table.dump(None, 100_000, 0);
    let forward: Vec<_> = all.iter().filter(|f| f.forward).collect();
    let to_pod = forward.iter().filter(|f| f.nat.dst == Some(u32::from(pod))).count();
    (to_pod, forward.len() - to_pod)
}

#[test]
fn a_vif_changed_under_its_flows_takes_them_with_it() {
    let (mut lab, table) = lab_with_floating_ip();
    let client = L2 { src: mac(9), dst: router_mac() };
    for port in 0..40u16 {
        assert!(matches!(lab.run(GW, tcp(client, CLIENT, FIP, 40000 + port, 80)).0, Verdict::Tx(_)));
    }
    assert_eq!(lab.run(A1, udp(1, a1_ip(), a2_ip(), 7, 7)).0, Verdict::Tx(A2));
    let (to_a1, others) = pairs_to(&table, a1_ip());
    assert!(to_a1 >= 8 && others > 8, "{to_a1} pairs to a1, {others} others (a2 and the plain pair)");
    let before = lab.handle.load();
    let a1 = before.vif(A1).unwrap().clone();
    let remove = |lab: &mut Lab, ops: &[Op]| {
        let ends = stale_ends(&lab.handle.load(), ops);
        lab.writer.apply(ops).unwrap();
        table.remove_stale(&ends)
    };

    // A change that leaves the flows valid removes none.
    let mut bigger = a1.clone();
    bigger.mtu = 9000;
    assert_eq!(remove(&mut lab, &[Op::Update(Object::Vif(bigger))]), 0);
    assert_eq!(table.len(), to_a1 + others);

    // Taking the floating IP off a1 removes the pairs translated to a1,
    // and only those: a2 shares the address and keeps its connections.
    let mut without = a1.clone();
    without.floating.clear();
    assert_eq!(remove(&mut lab, &[Op::Update(Object::Vif(without.clone()))]), to_a1);
    assert_eq!(pairs_to(&table, a1_ip()), (0, others));

    // Moving a1 to another address removes its own flows, and those to it.
    let mut moved = without;
    moved.ipv4 = Some(Ipv4Addr::new(10, 1, 0, 42));
    assert_eq!(remove(&mut lab, &[Op::Update(Object::Vif(moved))]), 1, "the a1 to a2 pair");
    assert_eq!(table.len(), others - 1);
    assert_eq!(table.counts(A1, BLUE).0, 0, "a1's pairs are counted down");
}

/// The general path's count by cause, where flows are tracked: a flow's
/// first packet is a new flow's, its next ones take the lane, and once a
/// policy change denies it, its next packet is the flow's decision's; the
/// packets after it the lane drops itself, counted on the flow and as the
/// flow's drop reason. A protocol flows do not key is counted as such, not
/// as a new flow.
#[test]
fn the_general_path_counts_new_flows_and_flow_decisions_apart() {
    let (mut lab, table) = lab_allowing_all();
    let counted = |lab: &mut Lab, frame: Vec<u8>, expect: Verdict| {
        let before = *lab.pipeline.general_causes();
        assert_eq!(lab.run(A1, frame).0, expect);
        general_since(&lab.pipeline, &before)
    };
    let packet = || udp(1, a1_ip(), a2_ip(), 5000, 53);
    assert_eq!(counted(&mut lab, packet(), Verdict::Tx(A2)), vec![("new_flow", 1)]);
    assert_eq!(counted(&mut lab, packet(), Verdict::Tx(A2)), vec![], "its flow's next packet takes the lane");
    let deny_all = Policy { rules: vec![], default: PolicyAction::Deny };
    lab.writer.apply(&[Op::Update(Object::Policy(BLUE, deny_all))]).unwrap();
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!(counted(&mut lab, packet(), denied), vec![("flow_decision", 1)], "decided again");
    let drops = lab.stats().dropped(DropReason::FlowActionDrop);
    for _ in 0..3 {
        assert_eq!(counted(&mut lab, packet(), denied), vec![], "a flow that drops, in the lane");
    }
    assert_eq!(lab.stats().dropped(DropReason::FlowActionDrop), drops + 3);
    let key = FlowKey::v4(BLUE, vrouter::wire::ip_proto::UDP, a1_ip().into(), a2_ip().into(), 5000, 53);
    let flow = table.get(table.lookup(&key).unwrap().slot, 0).unwrap();
    assert_eq!(flow.packets, 6, "each packet counted on its flow");
    let gre = build::ip_frame(from_a1(), &build::ipv4(a1_ip(), a2_ip(), 47, 64, false, &[0; 8]));
    assert_eq!(counted(&mut lab, gre, denied), vec![("protocol", 1)]);
}

/// A denied IPv4 flow's packets are dropped in the lane after a route
/// change in their VRF too, from a pod and from the fabric: the lane takes
/// the route the flow remembers in an older version again, and remembers
/// it. Before, the lane left such a packet to the general path, which
/// remembers no dropping flow's route, and after any route change (a pod
/// come or gone on another node) every packet of a denied flow took it.
#[test]
fn a_denied_flow_stays_in_the_lane_after_a_route_change() {
    let client = Ipv4Addr::new(10, 2, 0, 7);
    let (mut lab, table) =
        lab_allowing(vec![allow(Endpoint::Prefix("10.2.0.0/24".parse().unwrap()), Endpoint::Any, UDP, port(53))]);
    let from_fabric = |lab: &mut Lab| lab.run(FABRIC, tunnelled_to_blue(&udp(9, client, a1_ip(), 5000, 80))).0;
    let from_pod = |lab: &mut Lab| lab.run(A1, udp(1, a1_ip(), remote_ip(), 5000, 99)).0;
    let memo = |lab: &Lab, key: FlowKey, dst: Ipv4Addr| {
        let blue = lab.writer.tables().vrf(BLUE).unwrap().clone();
        let (hit, _) = table.dropping(&table.probe(&key), blue.policy_generations()).expect("a dropping entry");
        (blue.v4.recall(hit.route.route()), blue.v4.lookup(u32::from(dst)))
    };
    let keys = [
        (FlowKey::v4(BLUE, UDP, u32::from(client), u32::from(a1_ip()), 5000, 80), a1_ip()),
        (FlowKey::v4(BLUE, UDP, u32::from(a1_ip()), u32::from(remote_ip()), 5000, 99), remote_ip()),
    ];
    let denied = Verdict::Drop(DropReason::FlowActionDrop);
    assert_eq!((from_fabric(&mut lab), from_pod(&mut lab)), (denied, denied), "the first packets, making the pairs");
    let general = lab.pipeline.general_frames();
    // Both flows' routes change: a1's address moves to a2's next hop, the
    // remote one gets a longer prefix; then a change that covers neither.
    let changes =
        [blue_route("10.1.0.2/32", NH_A2, NO), blue_route("10.2.0.5/32", 12, 50), blue_route("10.9.0.0/16", 12, 52)];
    for (n, change) in changes.into_iter().enumerate() {
        let op = if n == 0 { Op::Update(change) } else { Op::Add(change) };
        lab.writer.apply(&[op]).unwrap();
        for (key, dst) in keys {
            assert_eq!(memo(&lab, key, dst).0, None, "change {n}: a route of an older version");
        }
        for _ in 0..3 {
            assert_eq!((from_fabric(&mut lab), from_pod(&mut lab)), (denied, denied), "change {n}");
        }
        for (key, dst) in keys {
            assert_eq!(memo(&lab, key, dst).0, Some(memo(&lab, key, dst).1), "change {n}: {dst}'s route, remembered");
        }
    }
    assert_eq!(lab.pipeline.general_frames(), general, "every packet after the first two dropped in the lane");
    let counted = table.dump(None, 10, 0).into_iter().filter(|f| f.forward).map(|f| f.packets).collect::<Vec<_>>();
    assert_eq!(counted, [10, 10], "every packet counted on its flow");
}

/// A worker's flow cache is an optimisation, not a second behaviour: with
/// it and without it, the same packets of plain flows come out with the
/// same verdicts, bytes and counters, flow entries included. Each packet
/// differs from the last of its flow in what a hit writes anew (its length,
/// identification and TTL), to a local pod, into an MPLS-over-UDP tunnel,
/// into an MPLS-over-GRE one and through the service's composite. A flow
/// removed under the cache (`flush`, as `vrctl flow flush` does) is made
/// again by its next packet, not forwarded on what the cache kept; one
/// longer than its way out takes whole is cut by the full way.
#[test]
fn the_flow_cache_forwards_as_the_full_way_does() {
    let mut labs = with_and_without_cache(lab_allowing_all);
    let dsts = [a2_ip(), remote_ip(), gre_remote_ip(), service_ip()];
    // Packet `n` of the flow to `dst` (one source port a destination).
    let packet = |n: usize, dst: Ipv4Addr| {
        let f = build::udp4_frame(from_a1(), a1_ip(), dst, 7000, 53, 64 - n as u8, 100 + 37 * n);
        reheadered(f, |ip| ip[4..6].copy_from_slice(&(n as u16 * 7919).to_be_bytes()))
    };
    let run = |labs: &mut [(Lab, Arc<FlowTable>); 2], f, what: &str| run_alike(labs, A1, f, what).0;
    for n in 0..6 {
        for dst in dsts {
            let v = run(&mut labs, packet(n, dst), &format!("packet {n} to {dst}"));
            assert!(matches!(v, Verdict::Tx(_)), "packet {n} to {dst}: {v:?}");
        }
    }
    let counts = |labs: &[(Lab, Arc<FlowTable>); 2]| labs[0].0.pipeline.flow_cache_counts().expect("on");
    let c = counts(&labs);
    // The first packet of each makes its flow, the second fills the cache,
    // the other four are its hits.
    assert_eq!((c.fills, c.hits), (4, 16), "{c:?}");
    assert_eq!(labs[1].0.pipeline.flow_cache_counts(), None, "the second lab keeps none");

    for (_, table) in &labs {
        assert_eq!(table.flush(), 4);
    }
    for dst in dsts {
        run(&mut labs, packet(6, dst), &format!("the first packet to {dst} after the flush"));
        assert_eq!(labs[0].1.len(), labs[1].1.len());
    }
    let c = counts(&labs);
    assert_eq!((c.forgotten, c.hits), (4, 16), "every entry found its flow gone: {c:?}");
    assert_eq!(labs[0].1.len(), 4, "the flows are made again");

    // Longer than the fabric's MTU, with DF clear: the full way cuts it.
    for n in 7..9 {
        run(&mut labs, packet(n, remote_ip()), "a hit");
    }
    let long = reheadered(build::udp4_frame(from_a1(), a1_ip(), remote_ip(), 7000, 53, 64, 1600), |ip| ip[6] = 0);
    let (lens, extra) = {
        let mut out = Vec::new();
        for (lab, _) in labs.iter_mut() {
            let (frames, extra) = lab.run_with(&[(A1, long.clone())], 4);
            out.push((frames[0].verdict, frames[0].data().to_vec(), extra.len()));
        }
        (out[0].clone(), out[1].clone())
    };
    assert_eq!(lens.0, extra.0);
    assert_eq!(lens, extra, "the long datagram, cut alike");
    assert!(lens.2 > 0, "into fragments");
    assert_eq!(labs[0].0.stats(), labs[1].0.stats());
    assert_flows_counted_alike(&labs);
}

/// ICMP's flows are never kept in the cache, which keys a packet by the
/// four bytes after its IP header as a TCP or UDP packet's ports: an
/// echo's are its type, code and checksum, which two echoes of different
/// identifiers share when their sequence numbers make up for it. Each
/// echo below, to the service's composite (whose members they are spread
/// over by identifier) and into a tunnel, is forwarded and counted on its
/// own flow as without a cache, and none fills an entry.
#[test]
fn icmp_flows_are_never_kept_in_the_flow_cache() {
    let mut labs = with_and_without_cache(lab_allowing_all);
    let echo = |dst: Ipv4Addr, id: u16, seq: u16| {
        let m = icmp_echo_message(8, id, seq, 0x5a, 56);
        build::ip_frame(from_a1(), &build::ipv4(a1_ip(), dst, ICMP, 64, false, &m))
    };
    for dst in [service_ip(), remote_ip()] {
        // Identifiers 1..=8, each with the sequence number that gives
        // every echo the same checksum.
        for round in 0..3u16 {
            for id in 1..=8u16 {
                let f = echo(dst, id, 20 + 3 * round - id);
                let v = run_alike(&mut labs, A1, f, &format!("echo {id} to {dst}, round {round}")).0;
                assert!(matches!(v, Verdict::Tx(_)), "echo {id} to {dst}: {v:?}");
            }
        }
    }
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    assert_eq!((c.fills, c.hits), (0, 0), "{c:?}");
    for (_, table) in &labs {
        let flows = table.dump(None, 100, 0);
        assert_eq!(flows.len(), 32, "a pair for each echo's identifier and destination");
        assert!(flows.iter().filter(|f| f.forward).all(|f| f.packets == 3), "each echo on its own flow");
    }
}

/// A pod's IPv6 flows take the flow cache too (`Key::of6`), with the same
/// bytes, verdicts and counters as the full way: to a local pod, into an
/// MPLS-over-UDP tunnel, into an MPLS-over-GRE one and through the
/// service's composite, a datagram flow each and a TCP connection whose
/// FIN closes it alike. An IPv6 entry keeps a fold of the addresses: a
/// packet of another flow that folds to the same key is not forwarded on
/// it (its flow's entry must hold its whole key).
#[test]
fn the_flow_cache_forwards_ipv6_as_the_full_way_does() {
    use std::net::Ipv6Addr;
    let mut labs = with_and_without_cache(|| with_ipv6_ways(lab_allowing_all()));
    let dsts: [Ipv6Addr; 4] =
        [a2_ip6(), "fd00:2::5".parse().unwrap(), "fd00:3::5".parse().unwrap(), "fd00:96::10".parse().unwrap()];
    send_ipv6_flows_alike(&mut labs, &dsts);
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    // Each datagram flow's first packet makes it, its second fills the
    // cache, its four others hit it; each connection's SYN makes it, its
    // first segment fills the cache, its five others and its FIN hit it.
    assert_eq!((c.fills, c.hits), (8, 4 * 4 + 4 * 6), "{c:?}");
    // The FINs closed the connections alike, too.
    assert_flows_counted_alike(&labs);

    // A datagram to an address that folds as fd00:2::5 does (a bit of
    // its high half and the same bit of its low half, rotated by 32,
    // flipped: the fold xors the halves so rotated), from the same port
    // to the same port: its cache key is the cached flow's. Its flow's
    // entry does not hold its whole key, so it is not sent on the cached
    // flow's way (label 42) but made its own flow on the full way, by the
    // /16 (label 44), and the entry it found is forgotten.
    let twin: Ipv6Addr = "fd00:2:0:1:0:1:0:5".parse().unwrap();
    let before = labs[0].0.pipeline.flow_cache_counts().expect("on");
    let (v, out) =
        run_alike(&mut labs, A1, build::udp6_frame(from_a1(), a1_ip6(), twin, 7000, 53, 64, 100), "the twin");
    assert_eq!((v, udp_label_of(&out)), (Verdict::Tx(FABRIC), 44), "by its own route");
    let after = labs[0].0.pipeline.flow_cache_counts().expect("on");
    assert_eq!((after.hits, after.forgotten), (before.hits, before.forgotten + 1), "{after:?}");
    assert_flows_counted_alike(&labs);
}

/// Where no policy tracks every flow, only a service's (an ECMP route's)
/// are tracked, and its IPv6 packets ask the flow cache before their route
/// when the VRF's IPv6 hint names their address: from their second packet
/// on, the cache forwards them as the full way does (bytes, verdicts,
/// counters, flows and TCP states alike, against a lab without a cache).
/// An address the hint names that no composite routes (another of the
/// service's block) asks, misses and is routed untracked, every time.
#[test]
fn the_flow_cache_takes_an_ipv6_service_without_a_policy() {
    use std::net::Ipv6Addr;
    let mut labs = with_and_without_cache(|| with_ipv6_ways(lab_with_flows()));
    let service: Ipv6Addr = "fd00:96::10".parse().unwrap();
    let neighbour: Ipv6Addr = "fd00:96::11".parse().unwrap();
    {
        let blue = labs[0].0.writer.tables();
        let blue = blue.vrf(BLUE).unwrap();
        assert!(blue.tracks_flows() && !blue.tracks_every_flow(), "the service's flows alone");
        assert!(blue.ecmp_blocks6.may_hold(u128::from(neighbour)), "the neighbour shares the service's block");
    }
    let dsts: [Ipv6Addr; 4] = [a2_ip6(), "fd00:3::5".parse().unwrap(), service, neighbour];
    send_ipv6_flows_alike(&mut labs, &dsts);
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    // The service's datagram flow: its first packet makes it, its second
    // fills the cache, its four others hit it; its connection: the SYN
    // makes it, the first segment fills, five segments and the FIN hit.
    assert_eq!((c.fills, c.hits), (2, 4 + 6), "{c:?}");
    assert_flows_counted_alike(&labs);
    let flows = labs[0].1.dump(None, usize::MAX, 0);
    assert_eq!(flows.len(), 2 * 2, "the service's two pairs and no other: {flows:?}");
}

/// The flow cache takes a tunnel's packets to a pod on this node, whether
/// its label names the pod or the VRF to route in, over UDP and GRE: they
/// come out stripped as the full way sends them, and are counted alike
/// (decapsulated, on their flow, out of the pod's vif). A new tables
/// snapshot sends them the full way again.
#[test]
fn the_flow_cache_takes_tunnels_to_pods_as_the_full_way_does() {
    use vrouter::pktgen::build::Tunnel;
    let mut labs = with_and_without_cache(lab_allowing_all);
    let ways = [
        (LABEL_A1, a1_ip(), Tunnel::Udp(6635), A1),
        (LABEL_BLUE, a2_ip(), Tunnel::Udp(6635), A2),
        (LABEL_BLUE, a1_ip(), Tunnel::Gre, A1),
    ];
    // Packet `n` of the flow to `dst` (one source port a way), its inner
    // header's TTL, identification and length differing from packet to packet.
    let packet = |n: usize, (label, dst, tunnel, _): (u32, Ipv4Addr, Tunnel, u32)| {
        let sport = 7000 + label as u16 + u16::from(tunnel == Tunnel::Gre);
        let inner =
            build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), dst, sport, 53, 64 - n as u8, 90 + 37 * n);
        let inner = reheadered(inner, |ip| ip[4..6].copy_from_slice(&(n as u16).wrapping_mul(7919).to_be_bytes()));
        build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), label, 64, 50000 + n as u16, &inner[14..])
    };
    let run = |labs: &mut [(Lab, Arc<FlowTable>); 2], n: usize| {
        for way in ways {
            let (v, _) = run_alike(labs, FABRIC, packet(n, way), &format!("packet {n} of {way:?}"));
            assert_eq!(v, Verdict::Tx(way.3), "packet {n} of {way:?}");
        }
    };
    for n in 0..6 {
        run(&mut labs, n);
    }
    let counts = |labs: &[(Lab, Arc<FlowTable>); 2]| labs[0].0.pipeline.flow_cache_counts().expect("on");
    let c = counts(&labs);
    // The first packet of each makes its flow, the second fills the cache,
    // the other four are its hits.
    assert_eq!((c.fills, c.hits), (3, 12), "{c:?}");
    assert_eq!(labs[0].0.stats().vrf(BLUE).decaps, 18, "every packet counted decapsulated");

    // A route added anywhere: the next packets take the full way, which
    // fills the cache again.
    for (lab, _) in labs.iter_mut() {
        let route = RouteSpec::new(BLUE, "10.9.9.0/24".parse().unwrap(), RouteTarget { nh: NH_UDP, label: 40 });
        lab.writer.apply(&[Op::Add(Object::Route(route))]).unwrap();
    }
    run(&mut labs, 6);
    run(&mut labs, 7);
    let c = counts(&labs);
    assert_eq!((c.renewals > 0, c.fills, c.hits), (true, 6, 15), "{c:?}");

    // The flows flushed: each entry finds its flow changed and is
    // forgotten, and its packet takes the general path, which makes the
    // flow again.
    for (_, table) in &labs {
        assert_eq!(table.flush(), 3);
    }
    run(&mut labs, 8);
    let c = counts(&labs);
    assert_eq!((c.forgotten, c.hits), (3, 15), "{c:?}");
    assert_eq!(labs[0].1.len(), 3, "the flows are made again");

    // Longer than a1's MTU, with DF clear, on a flow the cache has: the
    // full way cuts it.
    run(&mut labs, 9);
    run(&mut labs, 10);
    let (label, dst, tunnel, _) = ways[0];
    let sport = 7000 + label as u16;
    let inner = build::udp4_frame(L2 { src: mac(9), dst: mac(9) }, remote_ip(), dst, sport, 53, 64, 1600);
    let inner = reheadered(inner, |ip| ip[6] = 0);
    let long = build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), label, 64, 50000, &inner[14..]);
    let mut out = Vec::new();
    for (lab, _) in labs.iter_mut() {
        let (frames, extra) = lab.run_with(&[(FABRIC, long.clone())], 4);
        out.push((
            frames[0].verdict,
            frames[0].data().to_vec(),
            extra.iter().map(|f| f.data().to_vec()).collect::<Vec<_>>(),
        ));
    }
    assert_eq!(out[0], out[1], "the long datagram, cut alike");
    assert!(!out[0].2.is_empty(), "into fragments: {:?}", out[0].0);
    assert_eq!(labs[0].0.stats(), labs[1].0.stats());
    let c = counts(&labs);
    assert_eq!((c.fills, c.hits, c.forgotten), (9, 18, 3), "the long one refused, its entry kept: {c:?}");
    assert_flows_counted_alike(&labs);
}

/// The flow cache takes a tunnel's IPv6 packets to a pod on this node too,
/// whether its label names the pod or the VRF, over UDP and GRE: stripped
/// and counted as the full way does them; an inner packet whose addresses
/// fold as a cached flow's takes the full way, by its own flow.
#[test]
fn the_flow_cache_takes_ipv6_tunnels_to_pods_as_the_full_way_does() {
    use std::net::Ipv6Addr;
    use vrouter::pktgen::build::Tunnel;
    let mut labs = with_and_without_cache(lab_allowing_all);
    let ways = [
        (LABEL_A1, a1_ip6(), Tunnel::Udp(6635), A1),
        (LABEL_BLUE, a2_ip6(), Tunnel::Udp(6635), A2),
        (LABEL_BLUE, a1_ip6(), Tunnel::Gre, A1),
    ];
    let client: Ipv6Addr = "fd00:2::7".parse().unwrap();
    // Packet `n` of the flow from `src` on a way (one source port a way),
    // its hop limit and length differing from packet to packet.
    let packet = |n: usize, src: Ipv6Addr, (label, dst, tunnel, _): (u32, Ipv6Addr, Tunnel, u32)| {
        let sport = 7000 + label as u16 + u16::from(tunnel == Tunnel::Gre);
        let inner = build::udp6_frame(L2 { src: mac(9), dst: mac(9) }, src, dst, sport, 53, 64 - n as u8, 90 + 37 * n);
        build::mpls_tunnel_frame(from_peer(), tunnel, peer(1), node_ip(), label, 64, 50000 + n as u16, &inner[14..])
    };
    let run = |labs: &mut [(Lab, Arc<FlowTable>); 2], n: usize, src: Ipv6Addr| {
        for way in ways {
            let (v, _) = run_alike(labs, FABRIC, packet(n, src, way), &format!("packet {n} of {way:?}"));
            assert_eq!(v, Verdict::Tx(way.3), "packet {n} of {way:?}");
        }
    };
    for n in 0..6 {
        run(&mut labs, n, client);
    }
    let counts = |labs: &[(Lab, Arc<FlowTable>); 2]| labs[0].0.pipeline.flow_cache_counts().expect("on");
    let c = counts(&labs);
    // The first packet of each makes its flow, the second fills the cache,
    // the other four are its hits.
    assert_eq!((c.fills, c.hits), (3, 12), "{c:?}");
    assert_eq!(labs[0].0.stats().vrf(BLUE).decaps, 18, "every packet counted decapsulated");
    assert_flows_counted_alike(&labs);

    // From an address that folds as the client's (a bit of its high half
    // and the same bit of its low half, rotated by 32, flipped), on the
    // same ways: the same cache keys, other flows. Each is made on the
    // full way, and the entry it found forgotten.
    let twin: Ipv6Addr = "fd00:2:0:1:0:1:0:7".parse().unwrap();
    run(&mut labs, 6, twin);
    let c = counts(&labs);
    assert_eq!((c.hits, c.forgotten), (12, 3), "{c:?}");
    assert_eq!(labs[0].1.len(), labs[1].1.len());
    assert_flows_counted_alike(&labs);
}

/// The flow cache takes a floating IP's clients' packets out of a tunnel
/// (the public network's label), rewritten to their pod: they come out as
/// the full way sends them (the destination rewritten, the IP, UDP and TCP
/// checksums updated), counted alike (decapsulated in the public network,
/// routed in the pod's).
#[test]
fn the_flow_cache_takes_a_floating_ips_clients_out_of_tunnels() {
    use vrouter::pktgen::build::Tunnel;
    use vrouter::wire::tcp::{FLAG_ACK, FLAG_SYN};
    const LABEL_PUBLIC: u32 = 52;
    let mut labs = with_and_without_cache(|| {
        let (mut lab, table) = lab_with_floating_ip();
        let lookup = NextHop::VrfLookup { vrf: PUBLIC };
        lab.writer.apply(&[Op::Add(Object::NextHop(52, lookup)), Op::Add(Object::Label(LABEL_PUBLIC, 52))]).unwrap();
        (lab, table)
    });
    let client = L2 { src: mac(9), dst: mac(9) };
    let tunnelled = |inner: Vec<u8>, n: usize| {
        let sport = 50000 + n as u16;
        build::mpls_tunnel_frame(
            from_peer(),
            Tunnel::Udp(6635),
            peer(1),
            node_ip(),
            LABEL_PUBLIC,
            64,
            sport,
            &inner[14..],
        )
    };
    // Packet `n` of a datagram flow and of a TCP connection (its SYN first),
    // TTL, identification and length changing from packet to packet.
    let packets = |n: usize| {
        let ident = |ip: &mut [u8]| ip[4..6].copy_from_slice(&(n as u16).wrapping_mul(7919).to_be_bytes());
        let datagram = reheadered(build::udp4_frame(client, CLIENT, FIP, 6000, 53, 64 - n as u8, 90 + 37 * n), ident);
        let flags = if n == 0 { FLAG_SYN } else { FLAG_ACK };
        let segment = reheadered(with_tcp_flags(&tcp(client, CLIENT, FIP, 40000, 80), flags), ident);
        [tunnelled(datagram, n), tunnelled(segment, n)]
    };
    for n in 0..6 {
        for (k, f) in packets(n).into_iter().enumerate() {
            let a = run_alike(&mut labs, FABRIC, f, &format!("packet {n} of flow {k}"));
            assert!(matches!(a.0, Verdict::Tx(A1 | A2)), "packet {n} of flow {k}: {:?}", a.0);
            assert!(matches!(ip_addrs(&a.1), (CLIENT, to) if to == a1_ip() || to == a2_ip()), "packet {n} of flow {k}");
        }
    }
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    // The first packet of each makes its flow on the general path, the
    // second fills the cache, the other four are its hits.
    assert_eq!((c.fills, c.hits), (2, 8), "{c:?}");
    assert_eq!(labs[0].0.stats().vrf(PUBLIC).decaps, 12, "decapsulated in the public network");
    assert_flows_counted_alike(&labs);
}

/// The flow cache takes a floating IP's pod's packets too: its answers to
/// the floating IP's client, rewritten back to the floating IP and routed
/// in the public network, and its own flows in its network, unrewritten.
/// They come out as the full way sends them, counted alike.
#[test]
fn the_flow_cache_takes_a_floating_ips_pods_answers() {
    let mut labs = with_and_without_cache(lab_with_floating_ip);
    let first = udp(9, CLIENT, FIP, 6000, 53);
    let (a, b) = (labs[0].0.run(GW, first.clone()), labs[1].0.run(GW, first));
    assert_eq!(a, b, "the client's first datagram");
    let Verdict::Tx(pod) = a.0 else { panic!("the client's datagram went to {:?}", a.0) };
    let pod_ip = ip_addrs(&a.1).1;
    let other_ip = if pod_ip == a1_ip() { a2_ip() } else { a1_ip() };
    let from_pod = L2 { src: mac(pod as u8), dst: router_mac() };
    // Packet `n` of the pod's answers and of its own flow, TTL,
    // identification and length changing from packet to packet.
    let packets = |n: usize| {
        let ident = |ip: &mut [u8]| ip[4..6].copy_from_slice(&(n as u16).wrapping_mul(7919).to_be_bytes());
        let ttl = 64 - n as u8;
        [
            reheadered(build::udp4_frame(from_pod, pod_ip, CLIENT, 53, 6000, ttl, 90 + 37 * n), ident),
            reheadered(build::udp4_frame(from_pod, pod_ip, other_ip, 7, 7, ttl, 80 + 29 * n), ident),
        ]
    };
    for n in 0..6 {
        for (k, f) in packets(n).into_iter().enumerate() {
            let a = run_alike(&mut labs, pod, f, &format!("packet {n} of flow {k}"));
            if k == 0 {
                assert_eq!((a.0, ip_addrs(&a.1)), (Verdict::Tx(GW), (FIP, CLIENT)), "answer {n}, from the floating IP");
            }
        }
    }
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    // The answers' flow was made by the client: their first fills the
    // cache, the other five hit it. The pod's own flow is made by its
    // first packet, filled by its second, and hit by the other four.
    assert_eq!((c.fills, c.hits), (2, 9), "{c:?}");
    assert_flows_counted_alike(&labs);
}

/// The flow cache takes a pod's answers to a client of another network on
/// this node too (routed back in the client's VRF, unrewritten), and they
/// come out as the full way sends them, counted in the client's VRF.
#[test]
fn the_flow_cache_takes_answers_routed_in_the_clients_network() {
    let mut labs = with_and_without_cache(lab_with_green_joined_allowing_all);
    let g1_l2 = L2 { src: mac(7), dst: router_mac() };
    let answer = |n: usize| {
        let f = build::udp4_frame(g1_l2, g1_ip(), a1_ip(), 53, 7000, 64 - n as u8, 90 + 41 * n);
        reheadered(f, |ip| ip[4..6].copy_from_slice(&(n as u16 * 7717).to_be_bytes()))
    };
    for (lab, _) in labs.iter_mut() {
        assert_eq!(lab.run(A1, udp(1, a1_ip(), g1_ip(), 7000, 53)).0, Verdict::Tx(G1), "a1 asks g1");
    }
    for n in 0..6 {
        let (v, _) = run_alike(&mut labs, G1, answer(n), &format!("answer {n}"));
        assert_eq!(v, Verdict::Tx(A1), "answer {n}");
    }
    let c = labs[0].0.pipeline.flow_cache_counts().expect("on");
    assert_eq!((c.fills, c.hits), (1, 5), "the first answer filled the cache, the next five hit it: {c:?}");
    assert_eq!(labs[0].0.stats().vrf(BLUE).encaps, 7, "counted where routed: the question and six answers");
}

/// Runs frame `f` from vif `vif` through both labs (`with_and_without_cache`):
/// it must come out of them alike, and leave their counters alike (`what`
/// names it). Answers with what came out.
fn run_alike(labs: &mut [(Lab, Arc<FlowTable>); 2], vif: u32, f: Vec<u8>, what: &str) -> (Verdict, Vec<u8>) {
    let (a, b) = (labs[0].0.run(vif, f.clone()), labs[1].0.run(vif, f));
    assert_eq!(a, b, "{what}");
    assert_eq!(labs[0].0.stats(), labs[1].0.stats(), "counters after {what}");
    a
}

/// `lab` with IPv6 ways out of BLUE besides its pods: fd00:3::/64 into a
/// GRE tunnel (label 43), the service fd00:96::10 through the composite,
/// and the rest of fd00::/16 into a UDP tunnel (label 44).
fn with_ipv6_ways((mut lab, table): (Lab, Arc<FlowTable>)) -> (Lab, Arc<FlowTable>) {
    let routes = [
        blue_route("fd00:3::/64", NH_GRE, 43),
        blue_route("fd00:96::10/128", NH_ECMP, NO),
        blue_route("fd00::/16", NH_UDP, 44),
    ];
    lab.writer.apply(&routes.map(Op::Add)).unwrap();
    (lab, table)
}

/// From a1 to each of `dsts`, through both labs alike (`run_alike`): a
/// TCP connection (its SYN, six segments, its FIN) and a datagram flow of
/// six, each packet forwarded. Packet `n` of a flow differs from the last
/// in what a hit writes anew: its length and hop limit.
fn send_ipv6_flows_alike(labs: &mut [(Lab, Arc<FlowTable>); 2], dsts: &[std::net::Ipv6Addr]) {
    let datagram = |n: usize, dst| build::udp6_frame(from_a1(), a1_ip6(), dst, 7000, 53, 64 - n as u8, 100 + 37 * n);
    let segment = |n: usize, dst, flags: u8| {
        let mut tcp = vec![0u8; 20 + n];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        tcp[4..8].copy_from_slice(&(1000 + n as u32).to_be_bytes());
        (tcp[12], tcp[13], tcp[14]) = (5 << 4, flags, 0x20);
        build::ip_frame(from_a1(), &build::ipv6(a1_ip6(), dst, TCP, 64 - n as u8, &tcp))
    };
    for &dst in dsts {
        let syn = build::tcp6_syn_frame(from_a1(), a1_ip6(), dst, 40000, 80, 1400);
        run_alike(labs, A1, syn, &format!("the SYN to {dst}"));
    }
    for n in 0..6 {
        for &dst in dsts {
            let (v, _) = run_alike(labs, A1, datagram(n, dst), &format!("datagram {n} to {dst}"));
            assert!(matches!(v, Verdict::Tx(_)), "datagram {n} to {dst}: {v:?}");
            let (v, _) = run_alike(labs, A1, segment(n, dst, 0x10), &format!("segment {n} to {dst}"));
            assert!(matches!(v, Verdict::Tx(_)), "segment {n} to {dst}: {v:?}");
        }
    }
    for &dst in dsts {
        run_alike(labs, A1, segment(6, dst, 0x11), &format!("the FIN to {dst}"));
    }
}

/// The two labs' flow tables (`with_and_without_cache`) hold the same
/// flows, with the same packets, bytes, pinned members and TCP states.
fn assert_flows_counted_alike(labs: &[(Lab, Arc<FlowTable>); 2]) {
    let mut flows = labs.iter().map(|(_, t)| {
        let mut v: Vec<_> =
            t.dump(None, usize::MAX, 0).into_iter().map(|e| (e.key, e.packets, e.bytes, e.ecmp, e.tcp)).collect();
        v.sort_by_key(|e| format!("{e:?}"));
        v
    });
    assert_eq!(flows.next(), flows.next(), "the flows counted alike");
}

/// Two labs `make` makes, with their flow tables: the first keeps a flow
/// cache (the default), the second none.
fn with_and_without_cache(make: fn() -> (Lab, Arc<FlowTable>)) -> [(Lab, Arc<FlowTable>); 2] {
    use vrouter::pipeline::{Pipeline, PipelineConfig};
    [true, false].map(|flow_cache| {
        let (mut lab, table) = make();
        let limits = *lab.handle.load().limits();
        lab.pipeline = Pipeline::new(PipelineConfig { flow_cache, ..PipelineConfig::default() }, &limits);
        lab.pipeline.set_flows(Some(table.clone()));
        (lab, table)
    })
}

/// Frame `f`, an IPv4 packet's, with its IP header changed by `edit`
/// and its header checksum made again.
fn reheadered(mut f: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut f[14..34]);
    f[24..26].fill(0);
    let sum = vrouter::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

/// `lab_with_flows`, with green joined to blue (`green_joined_to_blue_ops`)
/// and both allowing all.
fn lab_with_green_joined_allowing_all() -> (Lab, Arc<FlowTable>) {
    let (mut lab, table) = lab_with_flows();
    lab.writer.apply(&green_joined_to_blue_ops()).unwrap();
    lab.writer
        .apply(&[
            Op::Add(Object::Policy(BLUE, Policy::allow_all())),
            Op::Add(Object::Policy(GREEN, Policy::allow_all())),
        ])
        .unwrap();
    (lab, table)
}
