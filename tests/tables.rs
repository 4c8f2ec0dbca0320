//! The tables: bounds, precise errors, atomic batches, and readers that
//! keep forwarding while a writer changes them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vrouter::tables::{
    BatchError, Limits, NextHop, Object, ObjectKey, Op, Prefix, RouteSpec, RouteTarget, TableError, TablesHandle,
    TablesWriter, Vif, VifKind, VrfSpec,
};
use vrouter::wire::MacAddr;

fn limits() -> Limits {
    Limits { vifs: 8, vrfs: 4, nexthops: 16, labels: 64, routes_per_vrf: 100 }
}

fn vrf(id: u32) -> Op {
    Op::Add(Object::Vrf(VrfSpec { id, name: format!("v{id}"), gateway_v4: None, gateway_v6: None }))
}

fn route(vrf: u32, p: &str, nh: u32) -> Op {
    Op::Add(Object::Route(RouteSpec {
        network: None,
        vrf,
        prefix: p.parse().unwrap(),
        target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
    }))
}

fn base() -> TablesWriter {
    let (mut w, _) = TablesWriter::new(limits());
    w.apply(&[vrf(1), Op::Add(Object::NextHop(1, NextHop::Receive))]).unwrap();
    w
}

/// A writer with VRF 1 and next hops 1 to 4, room for 100,000 routes:
/// the random-batch model tests' start.
fn model_writer() -> (TablesWriter, TablesHandle) {
    let (mut w, handle) = TablesWriter::new(Limits { routes_per_vrf: 100_000, ..Limits::default() });
    let mut setup = vec![vrf(1)];
    for nh in 1..=4 {
        setup.push(Op::Add(Object::NextHop(nh, NextHop::Receive)));
    }
    w.apply(&setup).unwrap();
    (w, handle)
}

fn err(w: &mut TablesWriter, ops: &[Op]) -> BatchError {
    w.apply(ops).expect_err("the batch must be refused")
}

#[test]
fn references_to_missing_objects_name_the_field() {
    let mut w = base();
    let e = err(&mut w, &[route(1, "10.0.0.0/8", 7)]);
    assert_eq!(e.error, TableError::MissingReference { field: "nh", what: "next hop", id: 7 });
    assert_eq!(e.to_string(), "operation 0: field `nh`: next hop 7 does not exist");
    let e = err(&mut w, &[route(3, "10.0.0.0/8", 1)]);
    assert_eq!(e.error, TableError::MissingReference { field: "vrf", what: "VRF", id: 3 });
    let e = err(&mut w, &[Op::Add(Object::Label(20, 9))]);
    assert_eq!(e.error, TableError::MissingReference { field: "nh", what: "next hop", id: 9 });
    let e = err(
        &mut w,
        &[Op::Add(Object::NextHop(2, NextHop::Encap { oif: 5, smac: MacAddr::default(), dmac: MacAddr::default() }))],
    );
    assert_eq!(e.error, TableError::MissingReference { field: "oif", what: "vif", id: 5 });
    let pod = Vif::new(1, "veth1", VifKind::Virtual, 1, MacAddr([2, 0, 0, 0, 0, 1]));
    w.apply(&[Op::Add(Object::Vif(pod))]).unwrap();
    let tunnel = vrouter::tables::Tunnel::new(
        1,
        vrouter::tables::TunnelEncap::MplsOverUdp,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        MacAddr::default(),
    );
    let e = err(&mut w, &[Op::Add(Object::NextHop(3, NextHop::Tunnel(tunnel)))]);
    assert!(matches!(e.error, TableError::Invalid { field: "oif", .. }), "{e}");
}

#[test]
fn a_next_hop_takes_only_addresses_it_could_send_to_and_from() {
    let mut w = base();
    let fabric = Vif::new(0, "eth0", VifKind::Fabric, 1, MacAddr([2, 0, 0, 0, 0, 1]));
    let pod = Vif::new(1, "veth1", VifKind::Virtual, 1, MacAddr([2, 0, 0, 0, 0, 2]));
    w.apply(&[Op::Add(Object::Vif(fabric)), Op::Add(Object::Vif(pod))]).unwrap();
    let refused = |w: &mut TablesWriter, nh: NextHop| match err(w, &[Op::Add(Object::NextHop(9, nh))]).error {
        TableError::Invalid { field, reason } => format!("{field}: {reason}"),
        other => panic!("refused as {other:?}"),
    };
    let tunnel = |sip: [u8; 4], dip: [u8; 4]| {
        NextHop::Tunnel(vrouter::tables::Tunnel::new(
            0,
            vrouter::tables::TunnelEncap::MplsOverUdp,
            sip.into(),
            dip.into(),
            MacAddr([2, 0, 0, 0, 0, 9]),
        ))
    };
    let node = [192, 168, 0, 1];
    for dip in [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 5], [255, 255, 255, 255]] {
        let dip_text = Ipv4Addr::from(dip).to_string();
        assert_eq!(
            refused(&mut w, tunnel(node, dip)),
            format!("dip: {dip_text} is not an address a node's tunnel can use")
        );
        assert!(refused(&mut w, tunnel(dip, node)).starts_with("sip: "));
    }
    assert_eq!(
        refused(&mut w, tunnel(node, node)),
        "dip: 192.168.0.1 is this node's own (sip): a tunnel leads to another node"
    );
    w.apply(&[Op::Add(Object::NextHop(2, tunnel(node, [192, 168, 0, 2])))]).unwrap();
    let encap = |smac, dmac| NextHop::Encap { oif: 1, smac, dmac };
    let good = MacAddr([2, 0, 0, 0, 0, 3]);
    assert_eq!(refused(&mut w, encap(MacAddr::BROADCAST, good)), "smac: ff:ff:ff:ff:ff:ff is not a unicast address");
    assert_eq!(refused(&mut w, encap(good, MacAddr::default())), "dmac: 00:00:00:00:00:00 is not a unicast address");
    w.apply(&[Op::Add(Object::NextHop(3, encap(good, good)))]).unwrap();
}

#[test]
fn vrfs_and_vifs_take_only_names_and_addresses_they_could_be_known_by() {
    let mut w = base();
    let refused = |w: &mut TablesWriter, op: Op| match err(w, &[op]).error {
        TableError::Invalid { field, reason } => format!("{field}: {reason}"),
        other => panic!("refused as {other:?}"),
    };
    let spec = |id, name: &str, g4: Option<[u8; 4]>, g6: Option<&str>| VrfSpec {
        id,
        name: name.into(),
        gateway_v4: g4.map(Ipv4Addr::from),
        gateway_v6: g6.map(|g| g.parse().unwrap()),
    };
    // A VRF's name: vrctl takes a VRF by id or name.
    assert_eq!(refused(&mut w, Op::Add(Object::Vrf(spec(2, "", None, None)))), "name: must not be empty");
    assert!(refused(&mut w, Op::Add(Object::Vrf(spec(2, "7", None, None)))).contains("is a number"));
    assert_eq!(refused(&mut w, Op::Add(Object::Vrf(spec(2, "v1", None, None)))), "name: VRF 1 is named \"v1\" already");
    w.apply(&[Op::Update(Object::Vrf(spec(1, "v1", Some([10, 1, 0, 1]), Some("fe80::1"))))]).unwrap();
    // Gateways no station could have.
    for (g4, g6, says) in [
        (Some([0, 0, 0, 0]), None, "gateway_v4: 0.0.0.0 is unspecified"),
        (Some([224, 0, 0, 1]), None, "gateway_v4: 224.0.0.1 is a multicast address"),
        (Some([255, 255, 255, 255]), None, "gateway_v4: 255.255.255.255 is the broadcast address"),
        (None, Some("ff02::1"), "gateway_v6: ff02::1 is a multicast address"),
        (None, Some("::1"), "gateway_v6: ::1 is a loopback address"),
    ] {
        assert_eq!(refused(&mut w, Op::Update(Object::Vrf(spec(1, "v1", g4, g6)))), says);
    }
    // A pod's addresses, and its floating IPs.
    let pod = |ipv4: [u8; 4], floating: Option<([u8; 4], u32)>| {
        let mut v = Vif::new(1, "veth1", VifKind::Virtual, 1, MacAddr([2, 0, 0, 0, 0, 2]));
        v.ipv4 = Some(ipv4.into());
        v.floating = floating
            .map(|(a, vrf)| vrouter::tables::FloatingIp { address: a.into(), vrf, ports: vec![] })
            .into_iter()
            .collect();
        v
    };
    w.apply(&[vrf(2)]).unwrap();
    assert_eq!(
        refused(&mut w, Op::Add(Object::Vif(pod([255, 255, 255, 255], None)))),
        "ipv4: 255.255.255.255 is the broadcast address"
    );
    assert_eq!(
        refused(&mut w, Op::Add(Object::Vif(pod([127, 0, 0, 1], None)))),
        "ipv4: 127.0.0.1 is a loopback address"
    );
    assert_eq!(
        refused(&mut w, Op::Add(Object::Vif(pod([10, 1, 0, 1], None)))),
        "ipv4: 10.1.0.1 is VRF 1's gateway, which vrouterd answers for"
    );
    assert_eq!(
        refused(&mut w, Op::Add(Object::Vif(pod([10, 1, 0, 2], Some(([0, 0, 0, 0], 2)))))),
        "floating_ips.address: 0.0.0.0 is unspecified"
    );
    assert_eq!(
        refused(&mut w, Op::Add(Object::Vif(pod([10, 1, 0, 2], Some(([10, 1, 0, 2], 1)))))),
        "floating_ips.address: 10.1.0.2 in VRF 1 is the vif's own address"
    );
    w.apply(&[Op::Add(Object::Vif(pod([10, 1, 0, 2], Some(([185, 22, 97, 188], 2)))))]).unwrap();
    // The gateway moved onto the pod's address.
    assert_eq!(
        refused(&mut w, Op::Update(Object::Vrf(spec(1, "v1", Some([10, 1, 0, 2]), None)))),
        "gateway_v4: 10.1.0.2 is vif 1's address"
    );
    // Unless the pod moves off it in the same batch, before or after.
    let mut moved = pod([10, 1, 0, 3], None);
    moved.floating.clear();
    w.apply(&[Op::Update(Object::Vrf(spec(1, "v1", Some([10, 1, 0, 2]), None))), Op::Update(Object::Vif(moved))])
        .unwrap();
}

#[test]
fn a_vif_is_on_an_interface_it_alone_may_have() {
    let mut w = base();
    w.set_node("eth0", Ipv4Addr::new(192, 168, 0, 1));
    let vif = |index, name: &str, kind| {
        let mut v = Vif::new(index, name, kind, 1, MacAddr([2, 0, 0, 0, 0, index as u8 + 1]));
        if kind == VifKind::Fabric {
            v.ipv4 = Some(Ipv4Addr::new(192, 168, 0, 1));
        }
        v
    };
    let refused = |w: &mut TablesWriter, v: Vif| match err(w, &[Op::Add(Object::Vif(v))]).error {
        TableError::Invalid { field, reason } => format!("{field}: {reason}"),
        other => panic!("refused as {other:?}"),
    };
    // Names Linux could not give an interface.
    assert_eq!(refused(&mut w, vif(1, "", VifKind::Virtual)), "name: \"\": empty");
    assert!(refused(&mut w, vif(1, "veth-with-a-long-name", VifKind::Virtual)).contains("longer than the 15 bytes"));
    assert!(refused(&mut w, vif(1, "a/b", VifKind::Virtual)).contains("no '/', ':' or white space"));
    // A pod's port takes all of its interface's traffic: not the fabric's.
    assert_eq!(
        refused(&mut w, vif(1, "eth0", VifKind::Virtual)),
        "name: eth0 is this node's fabric interface (node.fabric): only the fabric vif may be on it"
    );
    assert!(refused(&mut w, vif(0, "eth1", VifKind::Fabric)).contains("must be on this node's fabric interface, eth0"));
    // Its address is the one the fabric's XDP program steers tunnels to.
    let mut elsewhere = vif(0, "eth0", VifKind::Fabric);
    elsewhere.ipv4 = Some(Ipv4Addr::new(192, 168, 0, 9));
    assert_eq!(
        refused(&mut w, elsewhere),
        "ipv4: the fabric vif's address is this node's underlay address, 192.168.0.1 (node.underlay)"
    );
    w.apply(&[
        Op::Add(Object::Vif(vif(0, "eth0", VifKind::Fabric))),
        Op::Add(Object::Vif(vif(1, "veth1", VifKind::Virtual))),
    ])
    .unwrap();
    // One interface, one vif; a vif updated keeps its own.
    assert_eq!(refused(&mut w, vif(2, "veth1", VifKind::Virtual)), "name: interface veth1 is vif 1's already");
    w.apply(&[Op::Update(Object::Vif(vif(1, "veth1", VifKind::Virtual)))]).unwrap();
    // Judged on the batch's result: a batch may hand an interface from one
    // vif to another in any order (as the agent's, whose updates come
    // before its deletions).
    w.apply(&[Op::Add(Object::Vif(vif(2, "veth1", VifKind::Virtual))), Op::Delete(ObjectKey::Vif(1))]).unwrap();
    assert_eq!(refused(&mut w, vif(3, "veth1", VifKind::Virtual)), "name: interface veth1 is vif 2's already");
    // A station's MAC.
    for mac in [MacAddr::BROADCAST, MacAddr([1, 0, 0x5e, 0, 0, 1]), MacAddr::default()] {
        let mut v = vif(4, "veth4", VifKind::Virtual);
        v.mac = mac;
        assert_eq!(refused(&mut w, v), format!("mac: {mac} is not a unicast address"));
    }
    assert_eq!(w.tables().vifs().count(), 2, "nothing refused was kept");
    assert!(w.tables().vif(1).is_none() && w.tables().vif(2).is_some());
}

#[test]
fn objects_in_use_cannot_be_deleted() {
    let mut w = base();
    w.apply(&[route(1, "10.0.0.0/8", 1), Op::Add(Object::Label(16, 1))]).unwrap();
    let e = err(&mut w, &[Op::Delete(ObjectKey::NextHop(1))]);
    assert_eq!(e.error, TableError::InUse { what: "next hop", id: "1".into(), refs: 2 });
    let e = err(&mut w, &[Op::Delete(ObjectKey::Vrf(1))]);
    assert!(matches!(e.error, TableError::InUse { what: "VRF", .. }), "{e}");
    let e = err(&mut w, &[Op::Delete(ObjectKey::NextHop(0))]);
    assert!(matches!(e.error, TableError::Invalid { field: "id", .. }));
    // Removing the users first makes the delete legal, in one batch.
    w.apply(&[
        Op::Delete(ObjectKey::Route(1, "10.0.0.0/8".parse().unwrap())),
        Op::Delete(ObjectKey::Label(16)),
        Op::Delete(ObjectKey::NextHop(1)),
        Op::Delete(ObjectKey::Vrf(1)),
    ])
    .unwrap();
    assert!(w.tables().nexthop(1).is_none());
}

/// A route in another network names that network's VRF: the VRF stays
/// while such a route does (replaced by one of its own VRF's, or removed,
/// it lets go), and a route may not name a VRF that does not exist. The
/// network counts the routes others import from it (a failed batch
/// leaves the count as it was).
#[test]
fn a_network_named_by_a_policy_exists_and_stays_while_named() {
    use vrouter::flow::{Endpoint, Policy, PolicyAction, PortRange, Rule};
    let mut w = base();
    let from = |n: u32| Rule {
        src: Endpoint::Network(n),
        dst: Endpoint::Network(1),
        proto: None,
        sport: PortRange::ANY,
        dport: PortRange::ANY,
        action: PolicyAction::Allow,
    };
    let policy = |rules: Vec<Rule>| Policy { rules, default: PolicyAction::Deny };
    let e = err(&mut w, &[Op::Add(Object::Policy(1, policy(vec![from(3)])))]);
    assert_eq!(e.error, TableError::MissingReference { field: "rules.src.network", what: "VRF", id: 3 });
    w.apply(&[vrf(2), vrf(3), Op::Add(Object::Policy(1, policy(vec![from(2), from(3)])))]).unwrap();
    // Named, a network stays: its id given to another would be judged so.
    let e = err(&mut w, &[Op::Delete(ObjectKey::Vrf(2))]);
    assert_eq!(e.error, TableError::InUse { what: "VRF", id: "2".into(), refs: 1 });
    w.apply(&[Op::Update(Object::Policy(1, policy(vec![from(3)])))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Vrf(2))]).unwrap();
    // A policy that names its own network goes with its VRF, and lets go
    // of the others it named.
    w.apply(&[vrf(0), Op::Add(Object::Policy(0, policy(vec![from(0), from(3)])))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Vrf(0))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Policy(1)), Op::Delete(ObjectKey::Vrf(3))]).unwrap();
}

#[test]
fn a_network_named_by_a_route_cannot_be_deleted() {
    let mut w = base();
    let in_net = |p: &str, network| {
        let target = RouteTarget { nh: 1, label: RouteTarget::NO_LABEL };
        RouteSpec { vrf: 1, prefix: p.parse().unwrap(), target, network }
    };
    let imported = |w: &TablesWriter| w.tables().vrf(2).map(|v| v.imported_elsewhere);
    let e = err(&mut w, &[Op::Add(Object::Route(in_net("10.2.0.0/16", Some(3))))]);
    assert_eq!(e.error, TableError::MissingReference { field: "network", what: "VRF", id: 3 });
    w.apply(&[vrf(2), Op::Add(Object::Route(in_net("10.2.0.0/16", Some(2))))]).unwrap();
    assert_eq!(imported(&w), Some(1));
    let e = err(&mut w, &[Op::Add(Object::Route(in_net("10.4.0.0/16", Some(2)))), route(1, "10.2.0.0/16", 1)]);
    assert!(matches!(e.error, TableError::Exists { .. }));
    assert_eq!(imported(&w), Some(1), "the failed batch counts nothing");
    let e = err(&mut w, &[Op::Delete(ObjectKey::Vrf(2))]);
    assert_eq!(e.error, TableError::InUse { what: "VRF", id: "2".into(), refs: 1 });
    w.apply(&[Op::Update(Object::Route(in_net("10.2.0.0/16", None)))]).unwrap();
    assert_eq!(imported(&w), Some(0));
    w.apply(&[Op::Delete(ObjectKey::Vrf(2))]).unwrap();
    w.apply(&[vrf(2), Op::Add(Object::Route(in_net("10.3.0.0/16", Some(2))))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Route(1, "10.3.0.0/16".parse().unwrap())), Op::Delete(ObjectKey::Vrf(2))]).unwrap();
}

#[test]
fn every_table_is_bounded() {
    let mut w = base();
    let e = err(&mut w, &[Op::Add(Object::Vif(Vif::new(8, "x", VifKind::Virtual, 1, MacAddr::default())))]);
    assert_eq!(e.error, TableError::OutOfRange { field: "index", value: 8, min: 0, max: 7 });
    let e = err(&mut w, &[vrf(4)]);
    assert!(matches!(e.error, TableError::OutOfRange { field: "id", value: 4, .. }));
    let e = err(&mut w, &[Op::Add(Object::NextHop(16, NextHop::Receive))]);
    assert!(matches!(e.error, TableError::OutOfRange { field: "id", .. }));
    let e = err(&mut w, &[Op::Add(Object::Label(64, 1))]);
    assert!(matches!(e.error, TableError::OutOfRange { field: "label", .. }));
    let e = err(&mut w, &[Op::Add(Object::Label(15, 1))]);
    assert_eq!(e.error, TableError::OutOfRange { field: "label", value: 15, min: 16, max: 63 });
    let ops: Vec<Op> = (0..100).map(|i| route(1, &format!("10.{i}.0.0/16"), 1)).collect();
    w.apply(&ops).unwrap();
    let e = err(&mut w, &[route(1, "11.0.0.0/8", 1)]);
    assert_eq!(e.error, TableError::Full { table: "route", capacity: 100 });
    assert_eq!(e.error.to_string(), "route table is full (100 entries)");
    // Replacing a route in a full table is fine.
    w.apply(&[Op::Update(Object::Route(RouteSpec {
        network: None,
        vrf: 1,
        prefix: "10.5.0.0/16".parse().unwrap(),
        target: RouteTarget { nh: 1, label: 77 },
    }))])
    .unwrap();
    let bad = Op::Add(Object::Route(RouteSpec {
        network: None,
        vrf: 1,
        prefix: "12.0.0.0/8".parse().unwrap(),
        target: RouteTarget { nh: 1, label: 1 << 20 },
    }));
    assert!(matches!(
        err(&mut w, &[bad]).error,
        TableError::Full { .. } | TableError::OutOfRange { field: "label", .. }
    ));
}

#[test]
fn prefixes_are_validated() {
    assert!("10.0.0.1/8".parse::<Prefix>().unwrap_err().to_string().contains("did you mean 10.0.0.0/8"));
    assert!("10.0.0.0/33".parse::<Prefix>().is_err());
    assert!("fd00::/129".parse::<Prefix>().is_err());
    assert!("banana/8".parse::<Prefix>().is_err());
    assert!("10.0.0.0".parse::<Prefix>().is_err());
    assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().len(), 0);
    assert_eq!("fd00:1::/64".parse::<Prefix>().unwrap().to_string(), "fd00:1::/64");
}

#[test]
fn a_failed_batch_changes_nothing() {
    let mut w = base();
    w.apply(&[route(1, "10.0.0.0/8", 1)]).unwrap();
    let before = w.tables().clone();
    let generation = before.generation();
    let e = err(
        &mut w,
        &[
            route(1, "10.1.0.0/16", 1),
            Op::Add(Object::NextHop(2, NextHop::Discard)),
            Op::Delete(ObjectKey::Route(1, "10.0.0.0/8".parse().unwrap())),
            route(1, "10.2.0.0/16", 99),
        ],
    );
    assert_eq!(e.index, 3);
    assert_eq!(w.tables().generation(), generation, "nothing published");
    let t = w.tables();
    let v = t.vrf(1).unwrap();
    assert_eq!(v.v4.lookup(0x0a01_0101).map(|r| r.nh), Some(1), "10.0.0.0/8 still routes");
    assert!(t.nexthop(2).is_none());
    assert_eq!(w.route_count(1), (1, 0), "the writer's prefix list was rolled back");
    // And the writer still works: the same routes can be added now.
    w.apply(&[route(1, "10.1.0.0/16", 1)]).unwrap();
    assert_eq!(w.route_count(1), (2, 0));
    assert_eq!(w.tables().generation(), generation + 1);
}

#[test]
fn dumps_page_through_routes_in_address_order() {
    let mut w = base();
    let prefixes = ["10.0.0.0/8", "10.0.0.0/16", "9.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0", "fd00::/8", "fd00:1::/64"];
    w.apply(&prefixes.iter().map(|p| route(1, p, 1)).collect::<Vec<_>>()).unwrap();
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = w.routes_page(1, after, 2).unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().prefix);
        all.extend(page.into_iter().map(|r| r.prefix.to_string()));
    }
    assert_eq!(all, ["0.0.0.0/0", "9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "10.1.0.0/16", "fd00::/8", "fd00:1::/64"]);
    assert!(w.routes_page(3, None, 10).is_none());
    // A change after a dump is seen by the next one.
    w.apply(&[route(1, "9.1.0.0/16", 1)]).unwrap();
    let page = w.routes_page(1, Some("9.0.0.0/8".parse().unwrap()), 1).unwrap();
    assert_eq!(page[0].prefix.to_string(), "9.1.0.0/16");
}

#[test]
fn readers_see_whole_batches_while_the_writer_works() {
    // Each batch moves 10.0.0.0/8 and 11.0.0.0/8 together to the same next
    // hop. A reader that ever sees them disagree has seen half a batch.
    let (mut w, handle) = TablesWriter::new(Limits { routes_per_vrf: 10_000, ..Limits::default() });
    let mut setup = vec![vrf(1)];
    for nh in 1..=8 {
        setup.push(Op::Add(Object::NextHop(nh, NextHop::Receive)));
    }
    setup.push(route(1, "10.0.0.0/8", 1));
    setup.push(route(1, "11.0.0.0/8", 1));
    w.apply(&setup).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (h, stop, reads) = (handle.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut last_gen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = h.load();
                    assert!(t.generation() >= last_gen, "generations go forward");
                    last_gen = t.generation();
                    let v = t.vrf(1).unwrap();
                    let (a, b) = (v.v4.lookup(0x0a00_0001), v.v4.lookup(0x0b00_0001));
                    assert_eq!(a, b, "saw half a batch at generation {}", t.generation());
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let target = |nh| RouteTarget { nh, label: RouteTarget::NO_LABEL };
    // At least 2,000 batches, and on until the readers have read a while
    // (a fast writer can finish before they start), in rounds of 400,
    // each of which adds the /16s below and removes them again.
    let mut i = 0u32;
    while i < 2000 || reads.load(Ordering::Relaxed) < 1000 || i % 400 != 0 {
        assert!(i < 2_000_000, "the readers never ran");
        let nh = 1 + i % 8;
        let mut ops = vec![
            Op::Update(Object::Route(RouteSpec {
                network: None,
                vrf: 1,
                prefix: "10.0.0.0/8".parse().unwrap(),
                target: target(nh),
            })),
            Op::Update(Object::Route(RouteSpec {
                network: None,
                vrf: 1,
                prefix: "11.0.0.0/8".parse().unwrap(),
                target: target(nh),
            })),
        ];
        // Churn more specifics alongside, so the tries really change shape.
        let p = Prefix::new(IpAddr::V4(Ipv4Addr::new(12, (i % 200) as u8, 0, 0)), 16).unwrap();
        ops.push(if i % 400 < 200 {
            Op::Add(Object::Route(RouteSpec { network: None, vrf: 1, prefix: p, target: target(nh) }))
        } else {
            Op::Delete(ObjectKey::Route(1, p))
        });
        w.apply(&ops).unwrap();
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw an inconsistent snapshot");
    }
    assert!(reads.load(Ordering::Relaxed) >= 1000, "the readers ran");
    assert_eq!(w.route_count(1), (2, 0));
}

#[test]
fn an_old_snapshot_stays_valid_after_later_batches() {
    let mut w = base();
    w.apply(&[route(1, "10.0.0.0/8", 1)]).unwrap();
    let old = w.tables().clone();
    w.apply(&[
        Op::Delete(ObjectKey::Route(1, "10.0.0.0/8".parse().unwrap())),
        Op::Add(Object::NextHop(2, NextHop::Discard)),
    ])
    .unwrap();
    assert_eq!(old.vrf(1).unwrap().v4.lookup(0x0a00_0001).map(|t| t.nh), Some(1));
    assert!(old.nexthop(2).is_none());
    assert_eq!(w.tables().vrf(1).unwrap().v4.lookup(0x0a00_0001), None);
}

/// Batches that meet a prefix more than once (added, changed, removed and
/// added again, its covers changing around it), in both families, with
/// next hops added midway, and failing batches that change nothing: after
/// every batch each lookup, with its matched length, matches a model, and
/// removing every route leaves empty tries, IPv6's singles included.
#[test]
fn routes_changed_many_times_in_one_batch_match_a_model() {
    use std::collections::BTreeMap;
    use std::net::Ipv6Addr;
    use vrouter::pktgen::scenario::Rng;
    let (mut w, _) = TablesWriter::new(Limits { nexthops: 4096, routes_per_vrf: 10_000, ..Limits::default() });
    w.apply(&[vrf(1), Op::Add(Object::NextHop(1, NextHop::Receive))]).unwrap();
    let mut rng = Rng::new(0xba7c);
    // Few distinct addresses, so that a batch meets a prefix more than
    // once, and prefixes nest.
    let v4 = |r: &mut Rng| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (r.next_u64() as u32 & 0x0003_0103)));
    let v6 = |r: &mut Rng| {
        let bits = u128::from(r.next_u64() & 0x0003_0103);
        IpAddr::V6(Ipv6Addr::from(0xfd00u128 << 112 | (bits & 0xff00) << 64 | (bits & 0x0003_00ff)))
    };
    let mut model: BTreeMap<Prefix, u32> = BTreeMap::new();
    let mut nexthops = 1u32;
    let (mut failed, mut repeated) = (0, 0);
    for batch in 0..300 {
        let before = model.clone();
        let mut ops = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..40 {
            if rng.next_u64() % 16 == 0 {
                nexthops += 1;
                ops.push(Op::Add(Object::NextHop(nexthops, NextHop::Receive)));
                continue;
            }
            let prefix = if rng.next_u64() % 2 == 0 {
                Prefix::covering(v4(&mut rng), 8 + (rng.next_u64() % 25) as u8)
            } else {
                let len = if rng.next_u64() % 3 == 0 { 128 } else { 16 + (rng.next_u64() % 113) as u8 };
                Prefix::covering(v6(&mut rng), len)
            };
            repeated += usize::from(seen.contains(&prefix));
            seen.push(prefix);
            if model.contains_key(&prefix) && rng.next_u64() % 2 == 0 {
                model.remove(&prefix);
                ops.push(Op::Delete(ObjectKey::Route(1, prefix)));
                continue;
            }
            let nh = 1 + (rng.next_u64() % u64::from(nexthops)) as u32;
            let spec =
                RouteSpec { network: None, vrf: 1, prefix, target: RouteTarget { nh, label: RouteTarget::NO_LABEL } };
            ops.push(if model.insert(prefix, nh).is_some() {
                Op::Update(Object::Route(spec))
            } else {
                Op::Add(Object::Route(spec))
            });
        }
        if batch % 7 == 3 {
            // Fails at its end: nothing of the batch may stay.
            ops.push(route(1, "10.200.0.0/16", 4095));
            assert!(w.apply(&ops).is_err());
            model = before;
            nexthops = (1..=nexthops).rev().find(|&n| w.tables().nexthop(n).is_some()).unwrap_or(1);
            failed += 1;
        } else {
            w.apply(&ops).unwrap();
        }
        let t = w.tables();
        let v = t.vrf(1).unwrap();
        for _ in 0..100 {
            let (q4, q6) = (v4(&mut rng), v6(&mut rng));
            let want = |q: IpAddr, bits: u8| {
                (0..=bits).rev().find_map(|l| model.get(&Prefix::covering(q, l)).map(|&nh| (nh, l)))
            };
            let IpAddr::V4(a) = q4 else { unreachable!() };
            let IpAddr::V6(b) = q6 else { unreachable!() };
            assert_eq!(v.v4.lookup_with_len(a.into()).map(|(t, l)| (t.nh, l)), want(q4, 32), "batch {batch}: {q4}");
            assert_eq!(v.v6.lookup_with_len(b.into()).map(|(t, l)| (t.nh, l)), want(q6, 128), "batch {batch}: {q6}");
            assert_eq!(v.v6.lookup(b.into()).map(|t| t.nh), want(q6, 128).map(|(nh, _)| nh));
        }
        let (n4, n6) = w.route_count(1);
        assert_eq!(n4 + n6, model.len(), "batch {batch}");
    }
    assert!(failed > 30 && repeated > 1000, "{failed} batches failed, {repeated} prefixes met again in a batch");
    // Removing every route, in one batch, leaves empty tries.
    let ops: Vec<Op> = model.keys().map(|&p| Op::Delete(ObjectKey::Route(1, p))).collect();
    w.apply(&ops).unwrap();
    let t = w.tables();
    let v = t.vrf(1).unwrap();
    assert_eq!((v.v4.node_count(), v.v6.node_count(), v.v6.single_count()), (1, 1, 0));
}

#[test]
fn thousands_of_routes_match_a_model_after_random_batches() {
    let (mut w, _) = model_writer();
    let mut model = std::collections::BTreeMap::new();
    let mut rng = vrouter::pktgen::scenario::Rng::new(0x1234_5678);
    let mut rnd = || rng.next_u64();
    for _ in 0..200 {
        let mut ops = Vec::new();
        for _ in 0..50 {
            let len = (rnd() % 33) as u8;
            let a = (rnd() as u32 & 0x0f0f_ffff) | 0x0a00_0000;
            let a = if len == 0 { 0 } else { a & (u32::MAX << (32 - len)) };
            let p = Prefix::new(IpAddr::V4(a.into()), len).unwrap();
            let nh = (rnd() % 4) as u32 + 1;
            let key = (a, len);
            if ops
                .iter()
                .any(|o| matches!(o, Op::Add(Object::Route(r)) | Op::Update(Object::Route(r)) if r.prefix == p))
                || ops.iter().any(|o| matches!(o, Op::Delete(ObjectKey::Route(_, q)) if *q == p))
            {
                continue;
            }
            if model.contains_key(&key) && rnd() % 2 == 0 {
                model.remove(&key);
                ops.push(Op::Delete(ObjectKey::Route(1, p)));
            } else {
                let spec = RouteSpec {
                    network: None,
                    vrf: 1,
                    prefix: p,
                    target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
                };
                ops.push(if model.insert(key, nh).is_some() {
                    Op::Update(Object::Route(spec))
                } else {
                    Op::Add(Object::Route(spec))
                });
            }
        }
        w.apply(&ops).unwrap();
    }
    let t = w.tables();
    let fib = &t.vrf(1).unwrap().v4;
    for _ in 0..20_000 {
        let q = (rnd() as u32 & 0x0f0f_ffff) | 0x0a00_0000;
        let want = (0..=32u8).rev().find_map(|l| {
            let m = if l == 0 { 0 } else { q & (u32::MAX << (32 - l)) };
            model.get(&(m, l)).map(|nh| (*nh, l))
        });
        assert_eq!(fib.lookup_with_len(q).map(|(t, l)| (t.nh, l)), want, "{q:#x}");
    }
    assert_eq!(w.route_count(1).0, model.len());
}

/// The same through the writer for sparse IPv6 prefixes, whose paths are
/// passes and singles that batches take apart and fold back (with the
/// writer's node pool and spare tables at work): after every tenth batch,
/// the current tables and a snapshot kept from ten batches before answer
/// as the model did then, single and batched.
#[test]
fn sparse_ipv6_routes_match_a_model_after_random_batches() {
    use std::collections::BTreeMap;
    use vrouter::tables::lpm::{Fib, Route};
    let (mut w, handle) = model_writer();
    let mut rng = vrouter::pktgen::scenario::Rng::new(0x6_5eed);
    let mut rnd = move || rng.next_u64();
    // Few bits set past /16, so that prefixes nest, share paths and part.
    let addr = |r: u64| (0x2001u128 << 112) | (u128::from(r & 0x0003_0301_8300_0000) << 48) | u128::from(r >> 60);
    let longest = |model: &BTreeMap<(u128, u8), u32>, q: u128| {
        (0..=128u8).rev().find_map(|l| {
            let m = if l == 0 { 0 } else { q & (u128::MAX << (128 - l)) };
            model.get(&(m, l)).map(|nh| (*nh, l))
        })
    };
    // At random, and at the edges of (some 300 of) the model's prefixes and
    // inside them.
    let check = |fib: &Fib<u128>, model: &BTreeMap<(u128, u8), u32>, r: &mut dyn FnMut() -> u64| {
        let mut qs: Vec<u128> = (0..64).map(|_| addr(r()) ^ u128::from(r() & 0xffff) << 64).collect();
        for &(a, len) in model.keys().step_by(model.len() / 300 + 1) {
            let past = a.wrapping_add(1u128.checked_shl(u32::from(128 - len)).unwrap_or(0));
            let inside = if len == 128 { 0 } else { u128::from(r()) & (u128::MAX >> len) };
            qs.extend([a, a.wrapping_sub(1), past, a | inside]);
        }
        for qs in qs.chunks(32) {
            let mut routes = [Route { version: 0, leaf: 0 }; 32];
            Fib::lookup_batch_routes(&vec![fib; qs.len()], qs, &mut routes[..qs.len()]);
            for (&q, route) in qs.iter().zip(routes) {
                let want = longest(model, q);
                assert_eq!(fib.lookup_with_len(q).map(|(t, l)| (t.nh, l)), want, "{q:#x}");
                assert_eq!(fib.target(route).map(|t| t.nh), want.map(|w| w.0), "{q:#x}, batched");
            }
        }
    };
    let mut model = BTreeMap::new();
    let mut kept = None;
    for batch in 0..300 {
        let mut ops = Vec::new();
        let mut touched = std::collections::HashSet::new();
        for _ in 0..40 {
            let len = match rnd() % 4 {
                0 => 16 + (rnd() % 32) as u8,
                1 => 57 + (rnd() % 72) as u8,
                _ => 48 + (rnd() % 9) as u8,
            };
            let a = addr(rnd()) & (u128::MAX << (128 - len));
            if !touched.insert((a, len)) {
                continue;
            }
            let p = Prefix::new(IpAddr::V6(a.into()), len).unwrap();
            if model.contains_key(&(a, len)) && rnd() % 2 == 0 {
                model.remove(&(a, len));
                ops.push(Op::Delete(ObjectKey::Route(1, p)));
            } else {
                let nh = (rnd() % 4) as u32 + 1;
                let spec = RouteSpec {
                    network: None,
                    vrf: 1,
                    prefix: p,
                    target: RouteTarget { nh, label: RouteTarget::NO_LABEL },
                };
                ops.push(if model.insert((a, len), nh).is_some() {
                    Op::Update(Object::Route(spec))
                } else {
                    Op::Add(Object::Route(spec))
                });
            }
        }
        w.apply(&ops).unwrap();
        if batch % 10 == 9 {
            check(&w.tables().vrf(1).unwrap().v6, &model, &mut rnd);
            if let Some((old, old_model)) = kept.take() {
                let old: Arc<vrouter::tables::Tables> = old;
                check(&old.vrf(1).unwrap().v6, &old_model, &mut rnd);
            }
            kept = Some((handle.snapshot(), model.clone()));
        }
    }
    assert_eq!(w.route_count(1).1, model.len());
    assert!(w.tables().vrf(1).unwrap().v6.single_count() > 100, "the prefixes made singles");
}

#[test]
fn old_snapshots_are_freed_by_the_writer_not_by_a_worker() {
    let (mut w, handle) = TablesWriter::new(limits());
    w.apply(&[vrf(1), Op::Add(Object::NextHop(1, NextHop::Receive))]).unwrap();
    // A worker is in the middle of a batch with the current snapshot.
    let held = handle.load();
    let generation = held.generation();
    w.apply(&[route(1, "10.0.0.0/8", 1)]).unwrap();
    assert_eq!(w.retired(), 1, "the snapshot the worker holds is kept");
    // The worker finishes its batch: it gives the snapshot back, and the
    // writer, not the worker, holds the last reference.
    let weak = std::sync::Arc::downgrade(&*held);
    drop(held);
    assert!(weak.upgrade().is_some(), "dropping the guard did not free it on the worker");
    assert_eq!(w.reclaim(), 1);
    assert!(weak.upgrade().is_none(), "the writer freed it");
    assert_eq!(w.retired(), 0);
    assert_eq!(handle.load().generation(), generation + 1);
    // With no worker holding anything, replaced snapshots go at once.
    w.apply(&[route(1, "11.0.0.0/8", 1)]).unwrap();
    assert_eq!(w.retired(), 0);
}

/// The writer keeps the trie nodes its batches copy or free, to write
/// again once no snapshot holds them. A batch that fails has copied
/// nodes the published tables still hold: they must not stay in the pool,
/// where they would hold up every reuse behind them while the tables
/// keep them, and the pool would grow with every batch.
#[test]
fn a_failed_batch_leaves_the_writer_no_nodes_to_hold_up_its_pool() {
    use std::collections::HashSet;
    use vrouter::pktgen::scenario::Rng;
    let (mut w, _) = TablesWriter::new(Limits { routes_per_vrf: 100_000, ..limits() });
    let receive = |id| Op::Add(Object::NextHop(id, NextHop::Receive));
    w.apply(&[vrf(1), receive(1), receive(2)]).unwrap();
    let mut rng = Rng::new(0xfa11);
    // /24s over 4,096 /16s: nearly every change copies a node of its own.
    let mut prefixes = HashSet::new();
    while prefixes.len() < 20_000 {
        prefixes.insert(format!("{}/24", Ipv4Addr::from((rng.next_u64() as u32 & 0x0fff_ff00) | 0x1000_0000)));
    }
    let prefixes: Vec<String> = prefixes.into_iter().collect();
    for chunk in prefixes.chunks(1000) {
        w.apply(&chunk.iter().map(|p| route(1, p, 1)).collect::<Vec<_>>()).unwrap();
    }
    let mut updates = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|_| match route(1, &prefixes[(rng.next_u64() % 20_000) as usize], 2) {
                Op::Add(o) => Op::Update(o),
                _ => unreachable!(),
            })
            .collect()
    };
    let mut failing = updates(2000);
    failing.push(route(1, "10.0.0.0/8", 99));
    assert!(matches!(err(&mut w, &failing).error, TableError::MissingReference { what: "next hop", .. }));
    for _ in 0..100 {
        w.apply(&updates(200)).unwrap();
    }
    assert!(w.pooled_nodes() <= 1000, "{} nodes pooled", w.pooled_nodes());
}

/// The writer keeps the route table of a big VRF that a batch changed as a
/// spare for the next batch, counts what it takes, and lets it go with
/// the VRF; a small VRF gets none.
#[test]
fn the_writer_keeps_a_spare_table_of_a_changed_vrf_until_it_goes() {
    let (mut w, _) = TablesWriter::new(Limits { routes_per_vrf: 10_000, ..limits() });
    w.apply(&[vrf(1), vrf(2), Op::Add(Object::NextHop(1, NextHop::Receive))]).unwrap();
    // 200 /24s, each in a /16 of its own: 200 bottom nodes.
    let big: Vec<Op> = (0..200u32).map(|i| route(1, &format!("{}.{}.1.0/24", 20 + i / 100, i % 100), 1)).collect();
    w.apply(&big).unwrap();
    let kept = w.spare_bytes();
    assert!(kept > 0, "VRF 1's table before the batch is kept");
    w.apply(&[route(2, "10.1.0.0/16", 1)]).unwrap();
    assert_eq!(w.spare_bytes(), kept, "the small VRF gets none");
    // The next change takes the spare, and leaves another.
    w.apply(&[route(1, "30.0.0.0/24", 1)]).unwrap();
    assert!(w.spare_bytes() >= kept);
    let routes: Vec<Op> =
        w.routes_page(1, None, 1000).unwrap().into_iter().map(|r| Op::Delete(ObjectKey::Route(1, r.prefix))).collect();
    w.apply(&routes).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Vrf(1))]).unwrap();
    assert_eq!(w.spare_bytes(), 0, "a deleted VRF's spare goes");

    // A VRF of pods' IPv6 /128s has few trie nodes but many pages of
    // their hash, a reference each in a clone: it keeps a spare too.
    w.apply(&[vrf(3)]).unwrap();
    let pods: Vec<Op> = (0..2000u32).map(|i| route(3, &format!("fd00:3::{:x}:{:x}/128", 0x100 + i, i), 1)).collect();
    w.apply(&pods).unwrap();
    let (nodes, pages) = {
        let v6 = &w.tables().vrf(3).unwrap().v6;
        (v6.node_count(), v6.host_pages())
    };
    assert!(nodes < 64 && pages >= 64, "{nodes} nodes, {pages} pages");
    w.apply(&[route(3, "fd00:3::1:1/128", 1)]).unwrap();
    assert!(w.spare_bytes() >= pages * 8, "the pods' VRF keeps a spare, its page list its own");
}

/// Sparse IPv6 prefixes, each /48 in a /32 of its own as most of the
/// global table's are, take no trie node but the root once their batch is
/// applied: every node on their paths is kept as a single (a pass, or the
/// /48's own). Their lookups answer as before; a /48 added beside one
/// makes the level where they part a node, and taken away leaves it a
/// pass again.
#[test]
fn a_batch_leaves_sparse_ipv6_prefixes_in_singles() {
    let (mut w, _) = TablesWriter::new(Limits { routes_per_vrf: 10_000, ..limits() });
    w.apply(&[vrf(1), Op::Add(Object::NextHop(1, NextHop::Receive)), Op::Add(Object::NextHop(2, NextHop::Receive))])
        .unwrap();
    let p = |i: u32| format!("2001:{:x}:{:x}::/48", 0x100 + i, i);
    let routes: Vec<Op> = (0..100).map(|i| route(1, &p(i), 1 + i % 2)).collect();
    w.apply(&routes).unwrap();
    let v6 = |w: &TablesWriter| {
        let t = w.tables().vrf(1).unwrap().v6.clone();
        (t.node_count(), t.single_count())
    };
    // Nodes: the root, and the /24's where the hundred /32s part. Singles:
    // passes for the /16 and /24 above, and per /48 its /32's pass and its
    // own single.
    assert_eq!(v6(&w), (2, 2 + 100 * 2), "trie nodes and singles after the batch");
    let nh = |w: &TablesWriter, a: &str| {
        w.tables().vrf(1).unwrap().lookup(true, u128::from(a.parse::<std::net::Ipv6Addr>().unwrap())).map(|t| t.nh)
    };
    assert_eq!(nh(&w, "2001:105:5::1"), Some(2));
    assert_eq!(nh(&w, "2001:105:6::1"), None);
    w.apply(&[route(1, "2001:105:5:100::/56", 1)]).unwrap();
    assert_eq!(v6(&w), (2, 2 + 100 * 2 + 1), "the /48's own level is a pass to the /56's single");
    assert_eq!((nh(&w, "2001:105:5:100::1"), nh(&w, "2001:105:5:200::1")), (Some(1), Some(2)));
    w.apply(&[Op::Delete(ObjectKey::Route(1, "2001:105:5:100::/56".parse().unwrap()))]).unwrap();
    assert_eq!(v6(&w), (2, 2 + 100 * 2));
    assert_eq!(nh(&w, "2001:105:5:100::1"), Some(2));
}

/// A composite of next hops `members`, without labels.
fn ecmp(members: &[u32]) -> NextHop {
    NextHop::Composite(vrouter::tables::EcmpGroup::new(
        members.iter().map(|&nh| RouteTarget { nh, label: RouteTarget::NO_LABEL }).collect(),
    ))
}

/// A VRF counts its routes to ECMP composites (it tracks flows while it
/// has any, to pin their members), through route and next-hop changes
/// and failed batches alike.
#[test]
fn a_vrf_counts_its_routes_to_ecmp_composites() {
    let mut w = base();
    let count = |w: &TablesWriter, id: u32| {
        let v = w.tables().vrf(id).unwrap();
        (v.ecmp_routes, v.tracks_flows())
    };
    // The first pipeline stage's hint: whether an address's block holds
    // one routed to a composite.
    let hinted = |w: &TablesWriter, id: u32, a: &str| {
        w.tables().vrf(id).unwrap().ecmp_blocks.may_hold(u32::from(a.parse::<Ipv4Addr>().unwrap()))
    };
    w.apply(&[vrf(2), Op::Add(Object::NextHop(2, NextHop::Receive)), Op::Add(Object::NextHop(3, ecmp(&[1, 2])))])
        .unwrap();
    assert_eq!(count(&w, 1), (0, false));
    w.apply(&[route(1, "10.96.0.10/32", 3), route(1, "10.96.0.11/32", 3), route(2, "10.96.0.10/32", 3)]).unwrap();
    w.apply(&[route(1, "10.0.0.0/8", 1), route(1, "fd00::/64", 3)]).unwrap();
    assert_eq!((count(&w, 1), count(&w, 2)), ((3, true), (1, true)));
    assert!(hinted(&w, 1, "10.96.0.10") && hinted(&w, 1, "10.96.0.11") && hinted(&w, 2, "10.96.0.10"));
    assert!(!hinted(&w, 1, "10.1.0.2"), "routed, but not to a composite");
    // A route moved off the composite, and one deleted.
    let moved = RouteSpec {
        network: None,
        vrf: 1,
        prefix: "10.96.0.11/32".parse().unwrap(),
        target: RouteTarget { nh: 2, label: 0 },
    };
    w.apply(&[Op::Update(Object::Route(moved))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Route(1, "fd00::/64".parse().unwrap()))]).unwrap();
    assert_eq!(count(&w, 1), (1, true));
    // Next hop 2 becomes a composite: the route to it counts now, in a
    // batch that fails later, and then in one that holds.
    w.apply(&[route(1, "10.97.0.0/20", 2)]).unwrap();
    assert!(!hinted(&w, 1, "10.97.15.200"), "not to a composite yet");
    let to_ecmp = Op::Update(Object::NextHop(2, ecmp(&[1])));
    err(&mut w, &[to_ecmp.clone(), route(3, "10.0.0.0/8", 1)]);
    assert_eq!(count(&w, 1), (1, true), "the failed batch counted nothing");
    assert!(!hinted(&w, 1, "10.97.15.200"), "nor changed the hint");
    w.apply(&[to_ecmp]).unwrap();
    assert_eq!(count(&w, 1), (3, true));
    assert!(hinted(&w, 1, "10.97.15.200"), "its next hop became one");
    // And stops being one; the last composite route goes.
    w.apply(&[Op::Update(Object::NextHop(2, NextHop::Receive))]).unwrap();
    w.apply(&[Op::Delete(ObjectKey::Route(1, "10.96.0.10/32".parse().unwrap()))]).unwrap();
    assert_eq!((count(&w, 1), count(&w, 2)), ((0, false), (1, true)));
    assert!(w.tables().vrf(1).unwrap().ecmp_blocks.is_empty(), "no composite routes, no hint");
    assert!(hinted(&w, 2, "10.96.0.10"), "the other VRF's stays");
    // A composite route wider than the hint counts (/15) leaves it
    // incomplete: it no longer says which addresses go to no composite.
    let complete = |w: &TablesWriter, id: u32| w.tables().vrf(id).unwrap().ecmp_blocks.is_complete();
    assert!(complete(&w, 1) && complete(&w, 2));
    w.apply(&[route(1, "10.200.0.0/15", 2), route(2, "10.200.0.0/15", 2)]).unwrap();
    assert!(complete(&w, 1) && complete(&w, 2), "not to a composite yet");
    let to_ecmp = Op::Update(Object::NextHop(2, ecmp(&[1])));
    err(&mut w, &[to_ecmp.clone(), route(3, "10.0.0.0/8", 1)]);
    assert!(complete(&w, 1) && complete(&w, 2), "the failed batch changed nothing");
    w.apply(&[to_ecmp]).unwrap();
    assert!(!complete(&w, 1) && !complete(&w, 2), "its next hop became one");
    assert!(!hinted(&w, 1, "10.200.1.1") && hinted(&w, 2, "10.96.0.10"), "left out, the rest still named");
    // The wide route alone, then with a counted one again: still left out.
    w.apply(&[Op::Delete(ObjectKey::Route(2, "10.96.0.10/32".parse().unwrap()))]).unwrap();
    assert!(!complete(&w, 2) && w.tables().vrf(2).unwrap().ecmp_blocks.is_empty());
    w.apply(&[route(2, "10.96.0.20/32", 3)]).unwrap();
    assert!(!complete(&w, 2) && hinted(&w, 2, "10.96.0.20"));
    w.apply(&[Op::Delete(ObjectKey::Route(2, "10.200.0.0/15".parse().unwrap()))]).unwrap();
    assert!(!complete(&w, 1) && complete(&w, 2), "one VRF's route went");
    w.apply(&[Op::Update(Object::NextHop(2, NextHop::Receive))]).unwrap();
    assert!(complete(&w, 1), "the other's next hop stopped being a composite");
}

/// The IPv6 hint follows the VRF's IPv6 routes to composites as the IPv4
/// one follows IPv4's: through route and next-hop changes, failed batches
/// and routes too wide to count.
#[test]
fn a_vrf_hints_its_ipv6_routes_to_ecmp_composites() {
    let mut w = base();
    let hinted = |w: &TablesWriter, a: &str| {
        w.tables().vrf(1).unwrap().ecmp_blocks6.may_hold(u128::from(a.parse::<std::net::Ipv6Addr>().unwrap()))
    };
    let complete = |w: &TablesWriter| w.tables().vrf(1).unwrap().ecmp_blocks6.is_complete();
    w.apply(&[Op::Add(Object::NextHop(2, NextHop::Receive)), Op::Add(Object::NextHop(3, ecmp(&[1, 2])))]).unwrap();
    w.apply(&[route(1, "fd00:10:96::a/128", 3), route(1, "fd00:10:97::/120", 2), route(1, "10.96.0.10/32", 3)])
        .unwrap();
    assert!(hinted(&w, "fd00:10:96::a") && complete(&w));
    assert!(!hinted(&w, "fd00:10:97::5"), "routed, but not to a composite");
    assert!(!hinted(&w, "fd00:10:98::a"), "not routed");
    let to_ecmp = Op::Update(Object::NextHop(2, ecmp(&[1])));
    err(&mut w, &[to_ecmp.clone(), route(3, "10.0.0.0/8", 1)]);
    assert!(!hinted(&w, "fd00:10:97::5"), "the failed batch changed nothing");
    w.apply(&[to_ecmp]).unwrap();
    assert!(hinted(&w, "fd00:10:97::5") && hinted(&w, "fd00:10:97::ff"), "its next hop became one");
    w.apply(&[route(1, "fd00::/64", 3)]).unwrap();
    assert!(!complete(&w) && hinted(&w, "fd00:10:96::a"), "a /64 left out, the rest still named");
    w.apply(&[
        Op::Delete(ObjectKey::Route(1, "fd00::/64".parse().unwrap())),
        Op::Delete(ObjectKey::Route(1, "fd00:10:96::a/128".parse().unwrap())),
        Op::Update(Object::NextHop(2, NextHop::Receive)),
    ])
    .unwrap();
    let v = w.tables().vrf(1).unwrap();
    assert!(v.ecmp_blocks6.is_empty() && v.ecmp_blocks6.is_complete(), "no IPv6 composite routes, no hint");
    assert!(v.ecmp_blocks.may_hold(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 10))), "IPv4's stays");
}

/// A next hop cannot be made a composite of itself: a clear error.
#[test]
fn a_composite_cannot_be_its_own_member() {
    let mut w = base();
    w.apply(&[Op::Add(Object::NextHop(2, NextHop::Receive))]).unwrap();
    let own = NextHop::Composite(vrouter::tables::EcmpGroup::new(vec![
        RouteTarget { nh: 1, label: RouteTarget::NO_LABEL },
        RouteTarget { nh: 2, label: RouteTarget::NO_LABEL },
    ]));
    let e = err(&mut w, &[Op::Update(Object::NextHop(2, own))]);
    assert!(matches!(e.error, TableError::Invalid { field: "members.nh", .. }), "{e}");
}

/// A label's landing, which the fabric lane reads (`Tables::landing`), is
/// after every batch what its next hop and vif say (`Tables::land`): a
/// pod's label lands in its vif's VRF, and moves with the vif; a VRF's
/// label in the VRF it names; a label to a tunnel, or gone, nowhere. A
/// batch that fails leaves the landings as they were.
#[test]
fn a_label_lands_where_its_next_hop_and_vif_say() {
    use vrouter::tables::Landing;
    let mut w = base();
    let mac = |b| MacAddr([2, 0, 0, 0, 0, b]);
    let encap = |oif| NextHop::Encap { oif, smac: mac(9), dmac: mac(oif as u8) };
    let pod = |vrf| Vif::new(3, "veth3", VifKind::Virtual, vrf, mac(3));
    let agrees = |w: &TablesWriter| {
        let t = w.tables();
        for l in 0..limits().labels as u32 {
            assert_eq!(t.landing(l), t.land(l), "label {l}");
        }
    };
    w.apply(&[
        vrf(2),
        Op::Add(Object::Vif(pod(1))),
        Op::Add(Object::NextHop(3, encap(3))),
        Op::Add(Object::NextHop(4, NextHop::VrfLookup { vrf: 2 })),
        Op::Add(Object::Label(20, 3)),
        Op::Add(Object::Label(21, 4)),
        Op::Add(Object::Label(22, 1)),
    ])
    .unwrap();
    agrees(&w);
    assert_eq!(w.tables().landing(20), Some(Landing { vrf: 1, pod: Some(3) }));
    assert_eq!(w.tables().landing(21), Some(Landing { vrf: 2, pod: None }));
    assert_eq!(w.tables().landing(22), None, "a label to a next hop that is neither");
    // The pod moves to VRF 2: its label's packets land there.
    w.apply(&[Op::Update(Object::Vif(pod(2)))]).unwrap();
    agrees(&w);
    assert_eq!(w.tables().landing(20), Some(Landing { vrf: 2, pod: Some(3) }));
    // The VRF's label now names the pod's next hop; the label to the
    // lookup goes.
    w.apply(&[Op::Update(Object::Label(21, 3)), Op::Delete(ObjectKey::Label(20))]).unwrap();
    agrees(&w);
    assert_eq!(w.tables().landing(20), None);
    assert_eq!(w.tables().landing(21), Some(Landing { vrf: 2, pod: Some(3) }));
    // The next hop becomes a lookup in VRF 1.
    w.apply(&[Op::Update(Object::NextHop(3, NextHop::VrfLookup { vrf: 1 }))]).unwrap();
    agrees(&w);
    assert_eq!(w.tables().landing(21), Some(Landing { vrf: 1, pod: None }));
    // A batch that fails (its last operation) changes no landing.
    let e = err(&mut w, &[Op::Update(Object::Label(21, 4)), Op::Add(Object::Label(23, 15))]);
    assert_eq!(e.index, 1);
    assert_eq!(w.tables().landing(21), Some(Landing { vrf: 1, pod: None }));
    agrees(&w);
}
