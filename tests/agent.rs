//! The agent against a real API server: intent in, tables out; stable
//! allocation; minimal diffs; reconciliation without flushing.

mod common;

use common::Scratch;
use serde_json::json;
use vrouter::agent::{self, Intent};
use vrouter::api::client::Client;
use vrouter::api::schema::{Defaults, OpDef};
use vrouter::api::server::{Control, NodeInfo};
use vrouter::stats::StatsBoard;
use vrouter::tables::{Limits, NextHop, TablesHandle, TablesWriter};
use vrouter::wire::MacAddr;

const INTENT: &str = r#"
[node]
fabric = "fab"
fabric_mac = "02:fa:00:00:00:01"
underlay = "192.168.100.1"

[[network]]
name = "blue"
subnets = ["10.1.0.0/16"]
gateway = "10.1.0.1"

[[network]]
name = "red"
gateway = "10.1.0.1"

[[pod]]
name = "a1"
interface = "t-a1"
network = "blue"
ip = "10.1.0.2"
mac = "02:00:00:00:00:11"
label = 16

[[pod]]
name = "a2"
interface = "t-a2"
network = "blue"
ip = "10.1.0.3"
mac = "02:00:00:00:00:12"

[[pod]]
name = "r1"
interface = "t-r1"
network = "red"
ip = "10.1.0.2"
mac = "02:00:00:00:00:13"

[[remote]]
network = "blue"
ip = "10.1.1.2"
node = "192.168.100.2"
label = 16

[[remote]]
network = "blue"
ip = "10.1.1.3"
node = "192.168.100.2"
label = 17

[[remote]]
network = "red"
ip = "10.1.1.2"
node = "192.168.100.2"
label = 19
encap = "mpls-o-gre"

[[service]]
name = "web"
network = "blue"
address = "10.96.0.10"
endpoints = ["10.1.1.2", "10.1.1.3", "10.1.0.3"]
"#;

fn server(tag: &str) -> (Scratch, TablesHandle) {
    let limits = Limits { vifs: 64, vrfs: 16, nexthops: 1024, labels: 1024, routes_per_vrf: 1000 };
    let (writer, handle) = TablesWriter::new(limits);
    let defaults = Defaults { router_mac: MacAddr([0, 0, 0x5e, 0, 1, 0]), underlay: "192.168.100.1".parse().unwrap() };
    let node = NodeInfo {
        boot_id: NodeInfo::new_boot_id(),
        underlay: defaults.underlay,
        fabric: "fab".into(),
        cores: vec![0],
    };
    (
        common::serve_api(tag, std::sync::Arc::new(Control::new(writer, defaults, StatsBoard::new(1, 64, 16), node))),
        handle,
    )
}

fn client(sock: &std::path::Path) -> Client {
    common::api_client(sock, "agent-test")
}

fn intent(text: &str) -> Intent {
    Intent::from_toml(text).unwrap()
}

fn mac(i: &Intent) -> MacAddr {
    agent::fabric_mac(i).unwrap()
}

#[test]
fn intent_becomes_tables_and_a_second_pass_changes_nothing() {
    let (sock, handle) = server("basic");
    let mut c = client(&sock);
    let i = intent(INTENT);
    let o = agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    assert!(o.added > 15 && o.updated == 0 && o.deleted == 0, "{o:?}");
    let t = handle.load();
    // Contrail's layout: fabric vif0/0 in VRF 0, pods from vif0/3.
    assert_eq!(t.vif(0).unwrap().name, "fab");
    assert_eq!(t.vif(0).unwrap().mtu, 1500, "the fabric's MTU unless the intent gives one");
    let names: Vec<(u32, String)> = t.vifs().map(|v| (v.index, v.name.clone())).collect();
    assert_eq!(names, [(0, "fab".into()), (3, "t-a1".into()), (4, "t-a2".into()), (5, "t-r1".into())]);
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let red = t.vrfs().find(|v| v.name == "red").unwrap();
    // Pods, remotes, gateway and service all route.
    let nh = |vrf: &vrouter::tables::Vrf, a: [u8; 4]| vrf.v4.lookup(u32::from_be_bytes(a)).unwrap();
    assert!(matches!(t.nexthop(nh(blue, [10, 1, 0, 2]).nh), Some(NextHop::Encap { oif: 3, .. })));
    assert!(matches!(t.nexthop(nh(blue, [10, 1, 0, 1]).nh), Some(NextHop::Receive)));
    let remote = nh(blue, [10, 1, 1, 3]);
    assert_eq!(remote.label(), Some(17));
    assert!(matches!(t.nexthop(remote.nh), Some(NextHop::Tunnel(tun)) if tun.dip.octets() == [192, 168, 100, 2]));
    let red_remote = nh(red, [10, 1, 1, 2]);
    assert!(matches!(t.nexthop(red_remote.nh), Some(NextHop::Tunnel(tun)) if tun.encap.as_str().contains("gre")));
    let Some(NextHop::Composite(g)) = t.nexthop(nh(blue, [10, 96, 0, 10]).nh) else { panic!("service is ECMP") };
    assert_eq!(g.members().len(), 3);
    // The pinned label, and an allocated one that skips it.
    assert_eq!(t.label(16), Some(nh(blue, [10, 1, 0, 2]).nh));
    assert!(t.labels().count() == 3 && t.label(17).is_some());
    // The same intent again: nothing to do.
    let again = agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
    // A fresh agent (a restart) over the same tables: nothing to do either.
    let mut c2 = client(&sock);
    assert!(agent::plan(&mut c2, &i, mac(&i)).unwrap().is_empty());
}

#[test]
fn the_same_intent_allocates_the_same_ids_on_a_fresh_vrouterd() {
    let i = intent(INTENT);
    let mut dumps = Vec::new();
    for tag in ["fresh-a", "fresh-b"] {
        let (sock, _) = server(tag);
        let mut c = client(&sock);
        agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
        dumps.push(agent::reconcile::fetch(&mut c).unwrap());
    }
    assert_eq!(dumps[0], dumps[1]);
}

#[test]
fn a_change_is_applied_as_the_minimal_diff() {
    let (sock, handle) = server("diff");
    let mut c = client(&sock);
    let i = intent(INTENT);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let before = handle.load();

    // A new pod named to sort first: the others keep their ids.
    let more = INTENT.to_string()
        + r#"
[[pod]]
name = "a0"
interface = "t-a0"
network = "blue"
ip = "10.1.0.9"
mac = "02:00:00:00:00:19"
"#;
    let i2 = intent(&more);
    let ops = agent::plan(&mut c, &i2, mac(&i2)).unwrap();
    let kinds: Vec<String> = ops.iter().map(|o| serde_json::to_value(o).unwrap().to_string()).collect();
    assert_eq!(ops.len(), 4, "vif, next hop, label, route of the new pod only: {kinds:#?}");
    assert!(ops.iter().all(|o| matches!(o, OpDef::Add(_))), "{kinds:#?}");
    agent::reconcile_once(&mut c, &i2, mac(&i2)).unwrap();
    let after = handle.load();
    for v in before.vifs() {
        assert_eq!(after.vif(v.index).map(|x| &x.name), Some(&v.name), "vif0/{} kept its index", v.index);
    }
    for (l, nh) in before.labels() {
        assert_eq!(after.label(l), Some(nh), "label {l} kept its next hop");
    }
    assert_eq!(after.vifs().find(|v| v.name == "t-a0").unwrap().index, 6, "the lowest free index");

    // One endpoint leaves the service: one update of its composite.
    let fewer =
        more.replace(r#"endpoints = ["10.1.1.2", "10.1.1.3", "10.1.0.3"]"#, r#"endpoints = ["10.1.1.2", "10.1.0.3"]"#);
    let i3 = intent(&fewer);
    let ops = agent::plan(&mut c, &i3, mac(&i3)).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(&ops[0], OpDef::Update(vrouter::api::schema::ObjectDef::Nexthop(_))));
    agent::reconcile_once(&mut c, &i3, mac(&i3)).unwrap();

    // A pod leaves: only its objects go.
    let without_a2 = fewer.replace("\n[[pod]]\nname = \"a2\"\ninterface = \"t-a2\"\nnetwork = \"blue\"\nip = \"10.1.0.3\"\nmac = \"02:00:00:00:00:12\"\n", "\n")
        .replace(r#"endpoints = ["10.1.1.2", "10.1.0.3"]"#, r#"endpoints = ["10.1.1.2"]"#);
    let i4 = intent(&without_a2);
    let ops = agent::plan(&mut c, &i4, mac(&i4)).unwrap();
    let deletes = ops.iter().filter(|o| matches!(o, OpDef::Delete(_))).count();
    assert_eq!((deletes, ops.len() - deletes), (4, 1), "a2's vif, nh, label, route; the service update: {ops:?}");
    agent::reconcile_once(&mut c, &i4, mac(&i4)).unwrap();
    assert!(handle.load().vifs().all(|v| v.name != "t-a2"));
}

#[test]
fn the_agent_reconciles_against_what_vrouterd_holds_without_flushing() {
    let (sock, handle) = server("headless");
    let mut c = client(&sock);
    let i = intent(INTENT);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let g0 = handle.load().generation();
    // While the agent was away: something stale appeared, something went missing.
    c.call("add", json!({ "route": { "vrf": 1, "prefix": "10.200.0.0/16", "nh": 0 } })).unwrap();
    c.call("delete", json!({ "route": { "vrf": 1, "prefix": "10.1.1.3/32" } })).unwrap();
    let ops = agent::plan(&mut c, &i, mac(&i)).unwrap();
    assert_eq!(ops.len(), 2, "add the missing route, remove the stale one: {ops:?}");
    let o = agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    assert_eq!((o.added, o.updated, o.deleted), (1, 0, 1));
    assert_eq!(handle.load().generation(), g0 + 3, "one batch, no flush-and-refill");
}

#[test]
fn bad_intent_is_refused_with_a_reason() {
    let cases = [
        (
            INTENT.replace("network = \"red\"\nip = \"10.1.0.2\"", "network = \"green\"\nip = \"10.1.0.2\""),
            "not declared",
        ),
        (INTENT.replace("ip = \"10.1.0.3\"", "ip = \"10.9.0.3\""), "outside"),
        (INTENT.replace("label = 16\n\n[[pod]]", "label = 3\n\n[[pod]]"), "outside 16"),
        (INTENT.replace("\"10.1.0.3\"]", "\"10.1.0.99\"]"), "neither a pod"),
        (INTENT.replace("interface = \"t-a2\"", "interface = \"t-a1\""), "already used"),
        (INTENT.replace("underlay = \"192.168.100.1\"", "underlay = \"192.168.100\""), "line"),
        (INTENT.replace("[[service]]", "[[servise]]"), "servise"),
        (
            INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"10.1.0.3\"]\n"),
            "pod \"a2\"'s own",
        ),
        (
            INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"10.1.0.1/32\"]\n"),
            "gateway",
        ),
        (
            INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"10.96.0.10\"]\n"),
            "pod \"a1\": allowed address 10.96.0.10 is service web's address",
        ),
        (
            INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"10.1.0.1/8\"]\n"),
            "allowed address",
        ),
        (
            INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"vip\"]\n"),
            "not an address",
        ),
        (
            INTENT.replace(
                "00:11\"\nlabel = 16\n",
                "00:11\"\nlabel = 16\nfloating_ips = [{ address = \"10.1.0.50\", network = \"blue\", ports = [\
                 { proto = \"tcp\", port = 80, target = 8080 }, { proto = \"tcp\", port = 80, target = 81 }] }]\n",
            ),
            "pod \"a1\", floating IP 10.1.0.50: port map 1: port 80 is forwarded twice",
        ),
        (
            INTENT.replace(
                "00:11\"\nlabel = 16\n",
                "00:11\"\nlabel = 16\nfloating_ips = [{ address = \"10.1.0.50\", network = \"blue\", ports = [\
                 { proto = \"sctp\", port = 80, target = 8080 }] }]\n",
            ),
            "unknown variant `sctp`",
        ),
        (
            INTENT.replace("\"10.1.0.3\"]\n", "\"10.1.0.3\"]\nports = [{ proto = \"udp\", port = 0, target = 53 }]\n"),
            "service web: port map 0: port 0",
        ),
        (
            INTENT.replace(
                "00:12\"\n",
                "00:12\"\nfloating_ips = [{ address = \"185.22.97.9\", network = \"red\" }, \
                 { address = \"185.22.97.9\", network = \"red\" }]\n",
            ),
            "pod \"a2\", floating IP 185.22.97.9 is given twice",
        ),
        (
            INTENT
                .replace("00:12\"\n", "00:12\"\nfloating_ips = [{ address = \"10.96.0.10\", network = \"blue\" }]\n")
                .replace("\"10.1.0.3\"]\n", "\"10.1.0.3\"]\nports = [{ proto = \"tcp\", port = 80, target = 8080 }]\n"),
            "is service web's address, already a floating IP of its endpoints",
        ),
        (
            INTENT.to_string()
                + "\n[[service]]\nnetwork = \"blue\"\naddress = \"fd00:96::1\"\nendpoints = [\"10.1.0.3\"]\n\
                   ports = [{ proto = \"tcp\", port = 80, target = 8080 }]\n",
            "forwarded ports need an IPv4 service address",
        ),
        (INTENT.replace("fabric = \"fab\"", "fabric = \"\""), "node.fabric = \"\": empty"),
        (INTENT.replace("interface = \"t-a2\"", "interface = \"\""), "pod \"a2\": interface \"\": empty"),
        // Names Linux would refuse, which vrouterd refuses too.
        (
            INTENT.replace("interface = \"t-a2\"", "interface = \"t-a2-with-a-long-name\""),
            "pod \"a2\": interface \"t-a2-with-a-long-name\": longer than the 15 bytes",
        ),
        (INTENT.replace("fabric = \"fab\"", "fabric = \"eth0:1\""), "node.fabric = \"eth0:1\": an interface name has no"),
        (
            INTENT.replace("mac = \"02:00:00:00:00:12\"", "mac = \"ff:ff:ff:ff:ff:ff\""),
            "pod \"a2\": mac ff:ff:ff:ff:ff:ff: not a unicast address",
        ),
        (
            INTENT.replace("fabric_mac = \"02:fa:00:00:00:01\"", "fabric_mac = \"01:00:5e:00:00:01\""),
            "node.fabric_mac = 01:00:5e:00:00:01: not a unicast address",
        ),
        (
            INTENT.replace("fabric_mac = \"02:fa:00:00:00:01\"", "fabric_mac = \"02:fa:00:00:00:01\"\nfabric_mtu = 9217"),
            "node.fabric_mtu = 9217: not in 68..=9216",
        ),
        // Addresses vrouterd would refuse: none a station could have.
        (INTENT.replace("ip = \"10.1.0.3\"", "ip = \"224.0.0.9\""), "pod \"a2\", ip: 224.0.0.9 is a multicast address"),
        (INTENT.replace("ip = \"10.1.0.3\"", "ip = \"10.1.0.1\""), "pod \"a2\": its address is network \"blue\"'s gateway"),
        (INTENT.replace("node = \"192.168.100.2\"", "node = \"192.168.100.1\""), "node 192.168.100.1 is this node (node.underlay)"),
        (INTENT.replace("name = \"red\"", "name = \"42\""), "network \"42\": a network's name is a word"),
        (
            INTENT.to_string()
                + "\n[[service]]\nname = \"web2\"\nnetwork = \"blue\"\naddress = \"10.96.0.10\"\nendpoints = [\"10.1.0.3\"]\n",
            "service web2: address 10.96.0.10 in network \"blue\" is service web's too",
        ),
    ];
    // A prefix served by more nodes than vrouterd's composites hold.
    let many: String = (1..=65)
        .map(|n| {
            format!("\n[[remote]]\nnetwork = \"blue\"\nip = \"10.1.9.9\"\nnode = \"192.168.101.{n}\"\nlabel = 16\n")
        })
        .collect();
    // An address held by more pods than vrouterd's composites hold.
    let holders = |n: usize| -> String {
        (1..=n)
            .map(|n| {
                format!(
                    "\n[[pod]]\nname = \"h{n}\"\ninterface = \"t-h{n}\"\nnetwork = \"blue\"\nip = \"10.1.2.{n}\"\n\
                     mac = \"02:00:00:00:01:{n:02x}\"\nallowed_addresses = [\"10.1.3.1\"]\n"
                )
            })
            .collect()
    };
    assert!(Intent::from_toml(&(INTENT.to_string() + &holders(64))).is_ok(), "64 pods hold one address");
    let cases = cases.into_iter().chain([
        (
            INTENT.to_string() + &holders(65),
            "10.1.3.1/32 in network \"blue\": held by 65 pods (floating IPs and allowed addresses), more than 64, \
             vrouterd's ECMP limit",
        ),
        (
            INTENT.replace(
                "00:11\"\nlabel = 16\n",
                "00:11\"\nlabel = 16\nallowed_addresses = [\"10.1.0.100\", \"10.1.0.100/32\"]\n",
            ),
            "pod \"a1\": allowed address 10.1.0.100/32 is given twice",
        ),
        (
            INTENT.replace(
                "label = 17\n",
                "label = 17\n\n[[remote]]\nnetwork = \"blue\"\nip = \"10.1.1.3\"\nnode = \"192.168.100.2\"\nlabel = 18\n",
            ),
            "remote 10.1.1.3 in \"blue\": node 192.168.100.2 is given twice",
        ),
        (INTENT.to_string() + &many, "remote 10.1.9.9 in \"blue\": served by more than 64 nodes, vrouterd's ECMP limit"),
    ]);
    for (text, want) in cases {
        let e = Intent::from_toml(&text).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

const POLICY: &str = r#"
[[policy]]
network = "blue"
default = "deny"

[[policy.rule]]
src = { network = "blue" }
dst = "10.96.0.10/32"
proto = "tcp"
dport = 80
action = "allow"

[[policy.rule]]
dst = "10.1.1.0/24"
proto = "icmp"
action = "allow"
"#;

#[test]
fn policies_come_from_the_intent_with_networks_by_name() {
    let (sock, handle) = server("policy");
    let mut c = client(&sock);
    let i = intent(&(INTENT.to_string() + POLICY));
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let p = blue.policy.as_ref().expect("blue has its policy");
    assert_eq!(p.policy.rules.len(), 2);
    assert_eq!(p.policy.rules[0].src, vrouter::flow::Endpoint::Network(blue.id), "the network by its VRF");
    assert!(t.vrfs().find(|v| v.name == "red").unwrap().policy.is_none());
    assert_eq!(agent::plan(&mut c, &i, mac(&i)).unwrap().len(), 0, "an unchanged policy diffs as equal");
    // A rule changes: one update.
    let changed = intent(&(INTENT.to_string() + &POLICY.replace("dport = 80", "dport = \"80-81\"")));
    let ops = agent::plan(&mut c, &changed, mac(&changed)).unwrap();
    assert!(matches!(ops.as_slice(), [OpDef::Update(vrouter::api::schema::ObjectDef::Policy(_))]), "{ops:?}");
    // The policy goes: one delete.
    let ops = agent::plan(&mut c, &intent(INTENT), mac(&i)).unwrap();
    assert!(matches!(ops.as_slice(), [OpDef::Delete(vrouter::api::schema::KeyDef::Policy(_))]), "{ops:?}");
    let bad = INTENT.to_string() + &POLICY.replace("src = { network = \"blue\" }", "src = { network = \"green\" }");
    assert!(Intent::from_toml(&bad).unwrap_err().contains("network \"green\" is not declared"));
    // A port the policy cannot take is refused as the file is read (so
    // `vrouter-agent --check` finds it), naming the policy.
    let bad = INTENT.to_string() + &POLICY.replace("dport = 80", "dport = \"http\"");
    let e = Intent::from_toml(&bad).unwrap_err();
    assert!(e.starts_with("policy of \"blue\": ") && e.contains("\"http\" is not a port"), "{e}");
}

/// A pod that routes, or shares a VRRP address, has its source check
/// turned off in the intent; the others keep it.
#[test]
fn a_jumbo_fabric_and_its_pods_mtus_come_from_the_intent() {
    let (sock, handle) = server("jumbo");
    let mut c = client(&sock);
    let text = INTENT
        .replace("fabric_mac = \"02:fa:00:00:00:01\"", "fabric_mac = \"02:fa:00:00:00:01\"\nfabric_mtu = 9100")
        .replace("mac = \"02:00:00:00:00:12\"", "mac = \"02:00:00:00:00:12\"\nmtu = 9000");
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let mtu = |name: &str| t.vifs().find(|v| v.name == name).unwrap().mtu;
    assert_eq!((mtu("fab"), mtu("t-a2"), mtu("t-a1")), (9100, 9000, 1500));
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");
}

#[test]
fn a_pods_source_check_comes_from_the_intent() {
    let (sock, handle) = server("rpf");
    let mut c = client(&sock);
    let text = INTENT.replace("mac = \"02:00:00:00:00:12\"", "mac = \"02:00:00:00:00:12\"\nsource_check = false");
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let check = |name: &str| t.vifs().find(|v| v.name == name).unwrap().flags.source_check;
    assert!(check("t-a1"), "on by default");
    assert!(!check("t-a2"), "off where the intent says");
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");
}

#[test]
fn floating_ips_come_from_the_intent() {
    let (sock, handle) = server("fip");
    let mut c = client(&sock);
    let text = INTENT
        .replace(
            "mac = \"02:00:00:00:00:11\"\nlabel = 16",
            "mac = \"02:00:00:00:00:11\"\nlabel = 16\nfloating_ips = [{ address = \"185.22.97.188\", network = \"public\" }]",
        )
        .replace(
            "mac = \"02:00:00:00:00:12\"",
            "mac = \"02:00:00:00:00:12\"\nfloating_ips = [{ address = \"185.22.97.188\", network = \"public\" }, { address = \"185.22.97.189\", network = \"public\", ports = [{ proto = \"tcp\", port = 80, target = 8080 }, { proto = \"udp\", port = 53, target = 5353 }] }]",
        )
        + "\n[[network]]\nname = \"public\"\nsubnets = [\"185.22.97.0/24\"]\n";
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let public = t.vrfs().find(|v| v.name == "public").unwrap();
    assert_eq!(public.floating_ips, 3, "three floating IPs live in the public VRF");
    assert!(public.tracks_flows());
    let shared = public.v4.lookup(u32::from_be_bytes([185, 22, 97, 188])).unwrap();
    let Some(NextHop::Composite(g)) = t.nexthop(shared.nh) else { panic!("a shared floating IP is ECMP") };
    assert_eq!(g.members().len(), 2);
    let single = public.v4.lookup(u32::from_be_bytes([185, 22, 97, 189])).unwrap();
    assert!(matches!(t.nexthop(single.nh), Some(NextHop::Encap { .. })), "one owner: straight to it");
    let a2 = t.vifs().find(|v| v.name == "t-a2").unwrap();
    assert_eq!(a2.floating.len(), 2);
    let ported = a2.floating.iter().find(|f| f.address == std::net::Ipv4Addr::new(185, 22, 97, 189)).unwrap();
    let maps: Vec<_> = ported.ports.iter().map(|m| (m.proto, m.port, m.target)).collect();
    assert_eq!(maps, [(6, 80, 8080), (17, 53, 5353)], "its forwarded ports");
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");
}

/// `bytes` through pipeline `p` over tables `t`, as received on vif `from`.
fn through(
    p: &mut vrouter::pipeline::Pipeline,
    t: &vrouter::tables::Tables,
    bytes: &[u8],
    from: u32,
) -> vrouter::pipeline::Frame<Vec<u8>> {
    use vrouter::pipeline::{Frame, Spill};
    let mut buf = vec![0u8; 256 + bytes.len()];
    buf[256..].copy_from_slice(bytes);
    let mut frames = vec![Frame::new(buf, 256, bytes.len(), from).unwrap()];
    p.process(t, &mut frames, &mut Spill::none());
    frames.remove(0)
}

/// A service with ports (a Kubernetes service's port and target port):
/// its address becomes a floating IP of each local endpoint, forwarding
/// those ports, and its route spreads over the endpoints, local and
/// remote, as for any service. In the data path, a connection that lands
/// on the local endpoint reaches its target port; one that lands on the
/// remote leaves by the tunnel untranslated, for that node to translate.
#[test]
fn a_service_with_ports_is_a_floating_ip_of_its_local_endpoints() {
    use std::sync::Arc;
    use vrouter::flow::{FlowConfig, FlowTable};
    use vrouter::pipeline::{Pipeline, PipelineConfig, Verdict};
    use vrouter::pktgen::build::{tcp4_syn_frame, L2};
    let (sock, handle) = server("svcports");
    let mut c = client(&sock);
    let text = INTENT.to_string()
        + r#"
[[service]]
name = "web-k8s"
network = "blue"
address = "10.96.0.30"
endpoints = ["10.1.1.2", "10.1.0.3"]
ports = [{ proto = "tcp", port = 80, target = 8080 }]
"#;
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let a2 = t.vifs().find(|v| v.name == "t-a2").unwrap();
    let svc = std::net::Ipv4Addr::new(10, 96, 0, 30);
    let fip = a2.floating.iter().find(|f| f.address == svc).unwrap_or_else(|| panic!("{:?}", a2.floating));
    let maps: Vec<_> = fip.ports.iter().map(|m| (m.proto, m.port, m.target)).collect();
    assert_eq!((fip.vrf, maps), (a2.vrf, vec![(6, 80, 8080)]), "in the service's network, with its ports");
    assert!(t.vifs().find(|v| v.name == "t-a1").unwrap().floating.is_empty(), "a1 is no endpoint");
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let route = blue.v4.lookup(u32::from(svc)).unwrap();
    let Some(NextHop::Composite(g)) = t.nexthop(route.nh) else { panic!("ECMP over the endpoints") };
    assert_eq!(g.members().len(), 2);
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");

    let mut p = Pipeline::new(PipelineConfig::default(), t.limits());
    p.set_flows(Some(Arc::new(FlowTable::new(FlowConfig { capacity: 1000, ..FlowConfig::default() }, 64, 16))));
    let router = PipelineConfig::default().router_mac;
    let a1 = t.vifs().find(|v| v.name == "t-a1").unwrap().index;
    let (mut local, mut remote) = (0, 0);
    for sport in 40000..40032u16 {
        let l2 = L2 { src: MacAddr([2, 0, 0, 0, 0, 0x11]), dst: router };
        let bytes = tcp4_syn_frame(l2, "10.1.0.2".parse().unwrap(), svc, sport, 80, 1460);
        let frame = through(&mut p, &t, &bytes, a1);
        let out = frame.data();
        // The inner IPv4 header: after Ethernet, or after the tunnel's.
        let ip = match frame.verdict {
            Verdict::Tx(v) if v == a2.index => 14,
            Verdict::Tx(0) => 14 + 20 + 8 + 4,
            other => panic!("{other:?}"),
        };
        let dst = std::net::Ipv4Addr::new(out[ip + 16], out[ip + 17], out[ip + 18], out[ip + 19]);
        let dport = u16::from_be_bytes([out[ip + 22], out[ip + 23]]);
        if ip == 14 {
            assert_eq!((dst, dport), ("10.1.0.3".parse().unwrap(), 8080), "a2's target port");
            local += 1;
        } else {
            assert_eq!((dst, dport), (svc, 80), "for the remote's node to translate");
            remote += 1;
        }
    }
    assert!(local >= 4 && remote >= 4, "over both endpoints: {local} local, {remote} remote");
}

/// Allowed addresses (OpenStack's allowed address pairs): a VRRP-style
/// address two pods hold, routed by ECMP over both; a prefix and an IPv6
/// address one holds, routed to it in place of a remote's route; and the
/// data path's source check lets each pod send from what it holds, and
/// only that.
#[test]
fn allowed_addresses_come_from_the_intent() {
    use vrouter::pipeline::{Pipeline, PipelineConfig, Verdict};
    use vrouter::pktgen::build::{udp4_frame, L2};
    let (sock, handle) = server("aap");
    let mut c = client(&sock);
    let text =
        INTENT.replace("00:11\"\nlabel = 16\n", "00:11\"\nlabel = 16\nallowed_addresses = [\"10.1.0.100\"]\n").replace(
            "mac = \"02:00:00:00:00:12\"",
            "mac = \"02:00:00:00:00:12\"\nallowed_addresses = [\"10.1.0.100\", \"10.1.5.0/28\", \"fd00:1::64\"]",
        ) + "\n[[remote]]\nnetwork = \"blue\"\nip = \"10.1.5.0/28\"\nnode = \"192.168.100.2\"\nlabel = 30\n";
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let vif = |name: &str| t.vifs().find(|v| v.name == name).unwrap().index;
    let (a1, a2) = (vif("t-a1"), vif("t-a2"));
    let to = |nh: u32| match t.nexthop(nh) {
        Some(NextHop::Encap { oif, .. }) => vec![*oif],
        Some(NextHop::Composite(g)) => g
            .members()
            .iter()
            .map(|m| match t.nexthop(m.nh) {
                Some(NextHop::Encap { oif, .. }) => *oif,
                other => panic!("a member to a pod: {other:?}"),
            })
            .collect(),
        other => panic!("to pods: {other:?}"),
    };
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let v4 = |a: [u8; 4]| to(blue.v4.lookup(u32::from_be_bytes(a)).unwrap().nh);
    let mut shared = v4([10, 1, 0, 100]);
    shared.sort();
    assert_eq!(shared, [a1, a2], "held by both: ECMP");
    assert_eq!(v4([10, 1, 5, 7]), [a2], "a2's prefix, not the remote's tunnel");
    let v6 = blue.v6.lookup(u128::from("fd00:1::64".parse::<std::net::Ipv6Addr>().unwrap())).unwrap();
    assert_eq!(to(v6.nh), [a2]);
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");

    // The source check: each pod sends from what it holds, and only that.
    let mut p = Pipeline::new(PipelineConfig::default(), t.limits());
    let router = PipelineConfig::default().router_mac;
    let mut send = |from: u32, pod_mac: [u8; 6], src: [u8; 4]| {
        let l2 = L2 { src: MacAddr(pod_mac), dst: router };
        let bytes = udp4_frame(l2, src.into(), "10.1.0.2".parse().unwrap(), 5000, 53, 64, 64);
        through(&mut p, &t, &bytes, from).verdict
    };
    let a2_mac = [2, 0, 0, 0, 0, 0x12];
    assert_eq!(send(a2, a2_mac, [10, 1, 0, 100]), Verdict::Tx(a1), "the shared address");
    assert_eq!(send(a2, a2_mac, [10, 1, 5, 9]), Verdict::Tx(a1), "a2's prefix");
    let refused = Verdict::Drop(vrouter::stats::DropReason::InvalidSource);
    assert_eq!(send(a2, a2_mac, [10, 1, 6, 9]), refused, "outside what a2 holds");
    assert_eq!(send(a1, [2, 0, 0, 0, 0, 0x11], [10, 1, 5, 9]), refused, "a2's prefix is not a1's");
}

#[test]
fn network_labels_and_prefixes_served_by_several_nodes() {
    let (sock, handle) = server("netlabel");
    let mut c = client(&sock);
    let text = INTENT.to_string()
        + r#"
[[network]]
name = "public"
label = 100

[[remote]]
network = "public"
ip = "185.22.97.188"
node = "192.168.100.2"
label = 100

[[remote]]
network = "public"
ip = "185.22.97.188"
node = "192.168.100.3"
label = 100
"#;
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let public = t.vrfs().find(|v| v.name == "public").unwrap();
    assert!(matches!(t.nexthop(t.label(100).unwrap()), Some(NextHop::VrfLookup { vrf }) if *vrf == public.id));
    let fip = public.v4.lookup(u32::from_be_bytes([185, 22, 97, 188])).unwrap();
    let Some(NextHop::Composite(g)) = t.nexthop(fip.nh) else { panic!("two nodes: ECMP") };
    assert!(g.members().iter().all(|m| m.label == 100) && g.members().len() == 2);
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty());
    // A pod pinned to the network's label is refused, naming both.
    let clash = text.replace("label = 16\n", "label = 100\n");
    let e = Intent::from_toml(&clash).unwrap_err();
    assert_eq!(e, "pod \"a1\": label 100 is pinned by network \"public\" too");
}

#[test]
fn an_imported_network_s_routes_are_joined_in() {
    let (sock, handle) = server("import");
    let mut c = client(&sock);
    let text = INTENT.replace(
        "name = \"red\"\ngateway = \"10.1.0.1\"",
        "name = \"red\"\ngateway = \"10.1.0.1\"\nimport = [\"blue\"]",
    );
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let red = t.vrfs().find(|v| v.name == "red").unwrap();
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let at = |v: &vrouter::tables::Vrf, a: [u8; 4]| v.v4.lookup(u32::from_be_bytes(a)).map(|r| r.nh);
    assert_eq!(at(red, [10, 96, 0, 10]), at(blue, [10, 96, 0, 10]), "blue's service, in red");
    assert_eq!(at(red, [10, 1, 0, 3]), at(blue, [10, 1, 0, 3]), "blue's pod a2, in red");
    assert_ne!(at(red, [10, 1, 0, 2]), at(blue, [10, 1, 0, 2]), "red's own r1 wins over blue's a1 at the same address");
    // Imported routes keep their network, for policies that name it.
    let net = |v: &vrouter::tables::Vrf, a: [u8; 4]| v.v4.network_of(u32::from_be_bytes(a));
    assert_eq!(net(red, [10, 1, 0, 3]), Some(blue.id), "blue's pod a2, in red, is in blue");
    assert_eq!(net(red, [10, 1, 0, 2]), Some(red.id), "red's own r1");
    assert_eq!(net(blue, [10, 1, 0, 3]), Some(blue.id));
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "the network diffs as equal");
    let bad = INTENT.replace(
        "name = \"red\"\ngateway = \"10.1.0.1\"",
        "name = \"red\"\ngateway = \"10.1.0.1\"\nimport = [\"green\"]",
    );
    assert!(Intent::from_toml(&bad).unwrap_err().contains("imports \"green\""));
}

/// A pod that holds an address both as a floating IP of its own network
/// and as an allowed address is that address's one holder: routed to the
/// pod, not to a composite that names it twice.
#[test]
fn an_address_a_pod_holds_twice_over_is_routed_to_it_once() {
    let (sock, handle) = server("held-twice");
    let mut c = client(&sock);
    let text = INTENT.replace(
        "mac = \"02:00:00:00:00:12\"",
        "mac = \"02:00:00:00:00:12\"\nallowed_addresses = [\"10.1.0.100\"]\n\
         floating_ips = [{ address = \"10.1.0.100\", network = \"blue\" }]",
    );
    let i = intent(&text);
    agent::reconcile_once(&mut c, &i, mac(&i)).unwrap();
    let t = handle.load();
    let a2 = t.vifs().find(|v| v.name == "t-a2").unwrap().index;
    let blue = t.vrfs().find(|v| v.name == "blue").unwrap();
    let nh = blue.v4.lookup(u32::from_be_bytes([10, 1, 0, 100])).unwrap().nh;
    match t.nexthop(nh) {
        Some(NextHop::Encap { oif, .. }) => assert_eq!(*oif, a2),
        other => panic!("to a2 alone: {other:?}"),
    }
    assert!(agent::plan(&mut c, &i, mac(&i)).unwrap().is_empty(), "a second pass changes nothing");
}
