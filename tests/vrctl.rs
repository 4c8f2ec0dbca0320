//! vrctl, the binary, against an API server over the common lab's tables:
//! every command in its table and JSON forms, rates, and its failures.

mod common;

use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use vrouter::api::schema::Defaults;
use vrouter::api::server::{Control, NodeInfo};
use vrouter::stats::{DropReason, FlowCacheCounts, GeneralCause, Stats, StatsBoard, Unsent, WorkerIo};
use vrouter::tables::{Limits, TablesHandle, TablesWriter};

const VRCTL: &str = env!("CARGO_BIN_EXE_vrctl");

fn limits() -> Limits {
    Limits { vifs: 64, vrfs: 16, nexthops: 1024, labels: 1024, routes_per_vrf: 1000 }
}

fn server(tag: &str) -> (Arc<Control>, Scratch) {
    let (control, sock, _) = server_with(tag, |c| c);
    (control, sock)
}

/// A server over the common lab's tables whose control `extra` builds on
/// (a flow table, a tap), and the data path's handle on its tables.
fn server_with(tag: &str, extra: impl FnOnce(Control) -> Control) -> (Arc<Control>, Scratch, TablesHandle) {
    let (mut writer, handle) = TablesWriter::new(limits());
    writer.apply(&lab_ops()).unwrap();
    let node = NodeInfo { boot_id: "test-boot".into(), underlay: node_ip(), fabric: "eth0".into(), cores: vec![1] };
    let control = Arc::new(extra(Control::new(
        writer,
        Defaults { router_mac: router_mac(), underlay: node_ip() },
        StatsBoard::new(1, limits().vifs, limits().vrfs),
        node,
    )));
    let sock = Scratch::socket(tag);
    let listener = vrouter::api::server::bind(&sock, None).unwrap();
    vrouter::api::server::spawn(Arc::clone(&control), listener, 8).unwrap();
    (control, sock, handle)
}

/// Runs vrctl; returns (success, stdout, stderr).
fn vrctl(sock: &PathBuf, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(VRCTL).arg("--socket").arg(sock).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(sock: &PathBuf, args: &[&str]) -> String {
    let (good, out, err) = vrctl(sock, args);
    assert!(good, "vrctl {args:?} failed: {err}");
    out
}

fn json(sock: &PathBuf, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(sock, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vrctl {args:?} --json is not JSON ({e}):\n{out}"))
}

/// The row of a table whose first cell is `first`, split into cells.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_prints_an_aligned_table_and_json() {
    let (control, sock) = server("all");
    let mut s = Stats::new(limits().vifs, limits().vrfs);
    s.vifs[A1 as usize].rx_packets = 1234;
    s.vifs[A1 as usize].drops = 7;
    s.drops[DropReason::NoRoute as usize] = 7;
    s.drops[DropReason::UnfinishedChecksum as usize] = 2;
    // a1's share of them: 5 of the no_routes and both unfinished checksums.
    s.vif_drops.resize(A1 as usize + 1, [0; DropReason::COUNT]);
    s.vif_drops[A1 as usize][DropReason::NoRoute as usize] = 5;
    s.vif_drops[A1 as usize][DropReason::UnfinishedChecksum as usize] = 2;
    s.vrfs[BLUE as usize].udp_mpls_tunnels = 99;
    let mut general_causes = [0; GeneralCause::COUNT];
    general_causes[GeneralCause::Arp as usize] = 17;
    general_causes[GeneralCause::NewFlow as usize] = 600;
    // a1 sent 600 of the general path's frames; vif 2, 17.
    let mut general_by_vif = vec![0; limits().vifs];
    general_by_vif[A1 as usize] = 600;
    general_by_vif[2] = 17;
    control.stats().publish(
        0,
        &s,
        &general_by_vif,
        WorkerIo {
            rx: 1234,
            tx: 1000,
            busy_ns: 250,
            elapsed_ns: 1000,
            general_path: 617,
            general_causes,
            flow_cache: FlowCacheCounts { hits: 300, fills: 7, forgotten: 2, renewals: 1, crowded: 5 },
            tx_dropped: 12,
            unsent: std::array::from_fn(|c| match Unsent::ALL[c] {
                Unsent::TxRingFull => 9,
                Unsent::NoPort => 3,
                _ => 0,
            }),
            ..Default::default()
        },
    );
    // runtime: the share of frames the fast lane left to the general path,
    // then why, the largest cause first, the causes that counted none left out.
    let t = ok(&sock, &["runtime"]);
    let at = t.lines().position(|l| l.split_whitespace().nth(1) == Some("general")).unwrap_or_else(|| panic!("{t}"));
    let lines: Vec<&str> = t.lines().skip(at).collect();
    assert!(lines[0].ends_with("617 pkts, 50.0% of rx"), "{t}");
    assert_eq!(lines[1].split_whitespace().nth(1), Some("new_flow"), "{t}");
    assert!(lines[1].ends_with("600 pkts, 97.2% of general"), "{t}");
    assert_eq!(lines[2].split_whitespace().nth(1), Some("arp"), "{t}");
    assert!(lines[2].ends_with("17 pkts, 2.8% of general"), "{t}");
    // Then what the worker's flow cache forwarded, against its rx.
    assert_eq!(lines[3].split_whitespace().nth(1), Some("flow"), "{t}");
    assert!(lines[3].ends_with("300 pkts, 24.3% of rx; 7 filled, 2 forgotten, 5 crowded"), "{t}");
    // Then the frames it routed and could not send, and why.
    assert!(lines[4].contains(" tx dropped ") && lines[4].ends_with("12 pkts, 1.0% of rx"), "{t}");
    assert_eq!(lines[5].split_whitespace().nth(1), Some("tx_ring_full"), "{t}");
    assert!(lines[5].ends_with("9 pkts, 75.0% of tx dropped"), "{t}");
    assert_eq!(lines[6].split_whitespace().nth(1), Some("no_port"), "{t}");
    assert!(lines[6].ends_with("3 pkts, 25.0% of tx dropped"), "{t}");
    assert_eq!(lines.len(), 7, "{t}");
    let j = json(&sock, &["runtime"]);
    assert_eq!(j[0]["general_path"], 617);
    assert_eq!(j[0]["flow_cache"]["hits"], 300);
    assert_eq!((j[0]["tx_dropped"].as_u64(), j[0]["unsent"]["tx_ring_full"].as_u64()), (Some(12), Some(9)));
    assert_eq!(
        (j[0]["general_causes"]["arp"].as_u64(), j[0]["general_causes"]["tcp_syn"].as_u64()),
        (Some(17), Some(0))
    );

    // vif
    let t = ok(&sock, &["vif", "list"]);
    let header = t.lines().next().unwrap();
    assert!(header.starts_with("VIF") && header.contains("RX PKTS") && header.ends_with("DROPS  GENERAL"), "{t}");
    let a1 = row(&t, "vif0/1");
    assert_eq!(&a1[..4], ["vif0/1", "veth-a1", "virtual", "1"], "{t}");
    assert_eq!(a1.last().map(String::as_str), Some("600"), "{t}");
    assert_eq!(row(&t, "vif0/2").last().map(String::as_str), Some("17"), "{t}");
    assert!(a1.contains(&"1234".to_string()) && a1.contains(&"10.1.0.2 fd00:1::2".to_string()), "{a1:?}");
    // Aligned: every row's second column starts where the header's does.
    let col = header.find("NAME").unwrap();
    assert!(t.lines().skip(1).all(|l| l[col..].starts_with("veth") || l[col..].starts_with("eth0")), "{t}");
    let j = json(&sock, &["vif", "list"]);
    assert_eq!(j.as_array().unwrap().len(), 5);
    assert_eq!(j[1]["status"]["rx_packets"], 1234);
    let one = json(&sock, &["vif", "get", "1"]);
    assert_eq!((one["name"].as_str(), one["mac"].as_str()), (Some("veth-a1"), Some("02:00:00:00:00:01")));
    assert_eq!(json(&sock, &["vif", "get", "veth-a1"])["index"], 1, "by name too");
    let detail = ok(&sock, &["vif", "get", "1"]);
    assert!(detail.lines().any(|l| l.split_whitespace().eq(["rx_packets", "1234"])), "{detail}");
    assert!(detail.lines().any(|l| l.split_whitespace().eq(["source_check", "true"])), "{detail}");
    assert!(detail.lines().any(|l| l.split_whitespace().eq(["general_path", "600"])), "{detail}");
    assert_eq!(one["status"]["general_path"], 600);
    let reasons = detail.lines().find(|l| l.starts_with("drop_reasons")).unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(reasons.split_whitespace().collect::<Vec<_>>()[1..], ["no_route", "5,", "unfinished_checksum", "2"]);
    assert_eq!(one["status"]["drop_reasons"], serde_json::json!({ "no_route": 5, "unfinished_checksum": 2 }));
    // A floating IP, with the ports it forwards.
    let mut a2 = json(&sock, &["vif", "get", "veth-a2"]);
    a2.as_object_mut().unwrap().remove("status");
    let plain = a2.clone();
    a2["floating_ips"] = serde_json::json!([{ "address": "185.22.97.188", "vrf": 1, "ports": [
        { "proto": "tcp", "port": 80, "target": 8080 }, { "proto": "udp", "port": 53, "target": 5353 } ] }]);
    let mut c = vrouter::api::client::Client::connect(&sock, "test").unwrap();
    c.call("update", serde_json::json!({ "vif": a2 })).unwrap();
    let detail = ok(&sock, &["vif", "get", "veth-a2"]);
    let fip = detail.lines().find(|l| l.starts_with("floating_ip")).unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(
        fip.split_whitespace().collect::<Vec<_>>()[1..].join(" "),
        "185.22.97.188 in VRF 1, tcp 80->8080 udp 53->5353"
    );
    c.call("update", serde_json::json!({ "vif": plain })).unwrap();

    // nh
    let t = ok(&sock, &["nh", "list"]);
    assert!(row(&t, &NH_ECMP.to_string()).iter().any(|c| c.contains("members 10/L100 12/L101 13/L102")), "{t}");
    assert!(row(&t, &NH_GRE.to_string()).iter().any(|c| c.contains("mpls-o-gre")), "{t}");
    let j = json(&sock, &["nh", "get", &NH_A1.to_string()]);
    assert_eq!((j["type"].as_str(), j["oif"].as_u64()), (Some("encap"), Some(A1.into())));
    assert!(j["status"]["refs"].as_u64().unwrap() >= 3);

    // rt
    let t = ok(&sock, &["rt", "dump", "--vrf", "blue"]);
    assert!(t.lines().next().unwrap().starts_with("PREFIX"), "{t}");
    // NET: "-" for the VRF's own routes (an imported one names its network).
    assert_eq!(row(&t, "10.2.0.0/24")[1..4], ["40", &NH_UDP.to_string(), "-"], "{t}");
    assert!(t.contains("fd00:2::/64") && t.trim_end().ends_with("12 routes"), "{t}");
    let inet6 = json(&sock, &["rt", "dump", "--vrf", "1", "--family", "inet6"]);
    assert_eq!(inet6.as_array().unwrap().len(), 3);
    let hit = json(&sock, &["rt", "get", "10.96.0.10", "--vrf", "blue"]);
    assert_eq!(
        (hit["prefix"].as_str(), hit["nexthop"]["type"].as_str()),
        (Some("10.96.0.10/32"), Some("composite-ecmp"))
    );
    let t = ok(&sock, &["rt", "get", "10.2.0.77", "--vrf", "1"]);
    assert_eq!(row(&t, "10.2.0.0/24")[1..5], ["40", &NH_UDP.to_string(), "1", "tunnel"], "longest match: {t}");
    let exact = json(&sock, &["rt", "get", "10.66.0.0/16", "--vrf", "blue"]);
    assert_eq!(exact["nh"], 0);

    // mpls, vrf
    let t = ok(&sock, &["mpls", "list"]);
    assert_eq!(row(&t, &LABEL_A1.to_string())[1..3], [NH_A1.to_string(), "encap".to_string()], "{t}");
    assert_eq!(json(&sock, &["mpls", "get", &LABEL_BLUE.to_string()])["nh"], NH_BLUE_LOOKUP);
    let t = ok(&sock, &["vrf", "list"]);
    assert_eq!(row(&t, "1")[1..3], ["blue", "10.1.0.1"], "{t}");
    // Why each VRF tracks flows: blue routes a service to an ECMP composite.
    assert_eq!(row(&t, "1").last().unwrap(), "ecmp_routes", "{t}");
    assert_eq!(row(&t, &RED.to_string()).last().unwrap(), "-", "{t}");
    let vrfs = json(&sock, &["vrf", "list"]);
    let blue = vrfs.as_array().unwrap().iter().find(|v| v["id"] == BLUE).unwrap();
    assert_eq!(
        (&blue["status"]["ecmp_routes"], &blue["status"]["tracks_flows"]),
        (&1.into(), &serde_json::json!(["ecmp_routes"]))
    );
    assert_eq!(json(&sock, &["vrf", "list"]).as_array().unwrap().len(), 4);
    // Blue's two IPv6 pods' /128s are found by hash, none spilled, and
    // what its routes take is shown.
    assert_eq!(row(&t, "1")[6], "2", "HOSTS6: {t}");
    assert_eq!((&blue["status"]["hosts_v6"], &blue["status"]["hosts_v6_spilled"]), (&2.into(), &0.into()));
    let bytes = blue["status"]["memory_bytes"].as_u64().unwrap();
    assert!(bytes > 1024, "{bytes}");
    assert!(row(&t, "1")[7].ends_with(" KiB") || row(&t, "1")[7].ends_with(" MiB"), "MEMORY: {t}");
    // A /128 whose low 64 bits are zero (a subnet's first address) always
    // spills (`tables::hosts`): the trie alone finds it, and the count says so.
    let first = serde_json::json!({ "route": { "vrf": BLUE, "prefix": "fd00:1::/128", "nh": NH_A1 } });
    c.call("add", first.clone()).unwrap();
    let t = ok(&sock, &["vrf", "list"]);
    assert_eq!(row(&t, "1")[6], "3 (1 spilled)", "{t}");
    let hit = json(&sock, &["rt", "get", "fd00:1::", "--vrf", "blue"]);
    assert_eq!(
        (hit["prefix"].as_str(), hit["nexthop"]["type"].as_str()),
        (Some("fd00:1::/128"), Some("encap")),
        "found by the walk: {hit}"
    );
    c.call("delete", serde_json::json!({ "route": { "vrf": BLUE, "prefix": "fd00:1::/128" } })).unwrap();
    let vrfs = json(&sock, &["vrf", "list"]);
    let blue = vrfs.as_array().unwrap().iter().find(|v| v["id"] == BLUE).unwrap();
    assert_eq!((&blue["status"]["hosts_v6"], &blue["status"]["hosts_v6_spilled"]), (&2.into(), &0.into()));

    // dropstats, vrfstats, info
    let t = ok(&sock, &["dropstats"]);
    assert_eq!(row(&t, "no_route").last().unwrap(), "7", "{t}");
    assert!(t.contains("total drops: 9"), "{t}");
    let hint = t.lines().find(|l| l.starts_with("unfinished_checksum:")).unwrap_or_else(|| panic!("{t}"));
    assert!(hint.contains("ethtool -K eth0 tx off"), "what to do about it: {t}");
    assert!(hint.ends_with("; on vif0/1 (veth-a1)"), "and where: {t}");
    assert!(!t.lines().any(|l| l.starts_with("no_route:")), "no hint where vrouterd knows of none: {t}");
    assert!(ok(&sock, &["dropstats", "--all"]).lines().count() > DropReason::COUNT);
    let d = json(&sock, &["dropstats"]);
    assert_eq!(d.as_array().unwrap().len(), DropReason::COUNT);
    // One vif's share, by index or by name.
    for which in ["1", "veth-a1"] {
        let t = ok(&sock, &["dropstats", "--vif", which]);
        assert!(t.starts_with("vif0/1 (veth-a1)\n"), "{t}");
        assert_eq!(row(&t, "no_route").last().unwrap(), "5", "{t}");
        assert!(t.contains("total drops: 7") && t.contains("ethtool -K eth0 tx off"), "{t}");
    }
    let t = ok(&sock, &["dropstats", "--vif", "2"]);
    assert!(t.contains("total drops: 0") && !t.contains("no_route"), "{t}");
    let d = json(&sock, &["dropstats", "--vif", "1"]);
    let no_route = d.as_array().unwrap().iter().find(|d| d["reason"] == "no_route").unwrap();
    assert_eq!((d.as_array().unwrap().len(), &no_route["count"]), (DropReason::COUNT, &serde_json::json!(5)));
    let t = ok(&sock, &["vrfstats", "--vrf", "blue"]);
    assert!(t.starts_with("VRF 1 (blue)") && row(&t, "udp_mpls_tunnels")[1] == "99", "{t}");
    assert_eq!(json(&sock, &["vrfstats"]).as_array().unwrap().len(), 4);
    let (good, _, err) = vrctl(&sock, &["vrfstats", "--vrf", "77"]);
    assert!(!good && err.trim() == "vrctl: VRF 77 does not exist", "{err}");
    let t = ok(&sock, &["info"]);
    assert!(row(&t, "vifs")[1..] == ["5", "64"] && row(&t, "0")[1..3] == ["1", "1234"], "{t}");
    assert!(row(&t, "0").last().unwrap() == "25.0%", "busy share: {t}");
    let memory = t.lines().find(|l| l.starts_with("routes take ")).unwrap_or_else(|| panic!("{t}"));
    assert!(memory.contains(" KiB;") && memory.contains("of spare route tables"), "{t}");
    let i = json(&sock, &["info"]);
    assert_eq!(i["info"]["boot_id"], "test-boot");
}

#[test]
fn rates_show_per_second_deltas() {
    let (control, sock) = server("rate");
    let board = Arc::clone(control.stats());
    // A worker's counters grow by 1,000 frames per 100 ms on a1 while vrctl watches.
    let feeder = std::thread::spawn(move || {
        let mut s = Stats::new(limits().vifs, limits().vrfs);
        let mut general_by_vif = vec![0; limits().vifs];
        for _ in 0..50 {
            general_by_vif[A1 as usize] += 200;
            s.vifs[A1 as usize].rx_packets += 1000;
            s.drops[DropReason::TtlExceeded as usize] += 100;
            s.vif_drops.resize(A1 as usize + 1, [0; DropReason::COUNT]);
            s.vif_drops[A1 as usize][DropReason::TtlExceeded as usize] += 50;
            board.publish(0, &s, &general_by_vif, WorkerIo::default());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let out = ok(&sock, &["vif", "list", "--rate", "--count", "2", "--interval", "1", "--json"]);
    let dropout = ok(&sock, &["dropstats", "--rate", "--count", "1", "--interval", "0.5"]);
    let vifout = ok(&sock, &["dropstats", "--vif", "veth-a1", "--rate", "--count", "1", "--interval", "1", "--json"]);
    feeder.join().unwrap();
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one JSON line per refresh:\n{out}");
    let a1 = lines[1]["vifs"].as_array().unwrap().iter().find(|v| v["index"] == A1).unwrap();
    let pps = a1["rx_packets_per_s"].as_f64().unwrap();
    assert!((5_000.0..=15_000.0).contains(&pps), "about 10,000 frames/s on a1: {pps}");
    let general = a1["general_path_per_s"].as_f64().unwrap();
    assert!((1_000.0..=3_000.0).contains(&general), "about 2,000 of them to the general path: {general}");
    assert!(dropout.contains("ttl_exceeded") && dropout.contains("DROPS/S"), "{dropout}");
    let v: Value = serde_json::from_str(&vifout).unwrap();
    let ttl = v["drops"].as_array().unwrap().iter().find(|d| d["reason"] == "ttl_exceeded").unwrap();
    let per_s = ttl["per_s"].as_f64().unwrap();
    assert!((250.0..=750.0).contains(&per_s), "a1's share, about 500 a second: {vifout}");
}

#[test]
fn failures_are_one_line_and_non_zero() {
    let (_c, sock) = server("fail");
    let (good, out, err) = vrctl(&sock, &["vif", "get", "42"]);
    assert!(!good && out.is_empty());
    assert_eq!(err.trim(), "vrctl: vif 42 does not exist");
    let (good, _, err) = vrctl(&sock, &["dropstats", "--vif", "veth-zz"]);
    assert!(!good && err.contains("no vif \"veth-zz\""), "{err}");
    let (good, _, err) = vrctl(&sock, &["rt", "dump", "--vrf", "purple"]);
    assert!(!good && err.contains("no VRF named \"purple\""), "{err}");
    let (good, _, err) = vrctl(&sock, &["rt", "get", "192.0.2.1", "--vrf", "blue"]);
    assert!(!good && err.contains("no route to 192.0.2.1"), "{err}");
    let gone = PathBuf::from("/nonexistent/vrouterd.sock");
    let (good, _, err) = vrctl(&gone, &["info"]);
    assert!(!good && err.lines().count() == 1 && err.contains("is vrouterd running?"), "{err}");
}

/// `vrctl ... | head`: once the reader has gone vrctl ends, quietly and
/// with success, whether it printed once or was refreshing rates for ever.
#[test]
fn a_closed_pipe_ends_vrctl_quietly() {
    let (_c, sock) = server("closed-pipe");
    for args in [&["vif", "list"][..], &["rt", "dump", "--vrf", "blue"], &["dropstats", "--rate", "--interval", "0.1"]]
    {
        let mut cmd = Command::new(VRCTL);
        cmd.arg("--socket").arg(&sock).args(args);
        let (status, err) = run_into_closed_pipe(&mut cmd, std::time::Duration::from_secs(30));
        assert!(status.success() && err.is_empty(), "vrctl {args:?}: {status}: {err}");
    }
}

#[test]
fn shell_completion_is_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(VRCTL).args(["completion", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("vrctl") && text.contains("dropstats"), "{shell}");
    }
}

/// A server whose tables have BLUE's policy (a1 may reach a2 on TCP 80),
/// a flow table, and a pipeline over the same tables that fills it.
fn server_with_flows(tag: &str) -> (Scratch, vrouter::pipeline::Pipeline, vrouter::tables::TablesHandle) {
    use vrouter::api::client::Client;
    let table = Arc::new(vrouter::flow::FlowTable::new(
        vrouter::flow::FlowConfig { capacity: 1000, ..Default::default() },
        64,
        16,
    ));
    let (_, sock, handle) = server_with(tag, |c| c.with_flows(table.clone(), std::time::Instant::now()));
    let mut c = Client::connect(&sock, "test").unwrap();
    c.call(
        "add",
        serde_json::json!({ "policy": { "vrf": BLUE, "default": "deny", "rules": [
            { "src": "10.1.0.2/32", "dst": "10.1.0.3/32", "proto": "tcp", "dport": 80, "action": "allow" }
        ] } }),
    )
    .unwrap();
    let pipeline =
        vrouter::pipeline::Pipeline::new(vrouter::pipeline::PipelineConfig::default(), &limits()).with_flows(table);
    (sock, pipeline, handle)
}

fn run(
    p: &mut vrouter::pipeline::Pipeline,
    h: &vrouter::tables::TablesHandle,
    vif: u32,
    bytes: Vec<u8>,
) -> vrouter::pipeline::Verdict {
    let mut buf = vec![0u8; 256 + bytes.len() + 64];
    buf[256..256 + bytes.len()].copy_from_slice(&bytes);
    let mut frames = vec![vrouter::pipeline::Frame::new(buf, 256, bytes.len(), vif).unwrap()];
    p.process(&h.load(), &mut frames, &mut vrouter::pipeline::Spill::none());
    frames[0].verdict
}

/// The cell of `row` under `header` in `table`, whose cells hold no spaces.
fn column(table: &str, row: &str, header: &str) -> String {
    let at = table.lines().next().and_then(|h| h.split_whitespace().position(|c| c == header));
    at.and_then(|i| row.split_whitespace().nth(i)).unwrap_or_else(|| panic!("no {header} in {row}")).to_string()
}

#[test]
fn flows_are_listed_matched_watched_and_removed() {
    use vrouter::pipeline::Verdict;
    use vrouter::pktgen::build::{self, L2};
    let (sock, mut p, h) = server_with_flows("flows");
    let a2 = L2 { src: mac(2), dst: router_mac() };
    assert_eq!(
        run(&mut p, &h, A1, build::tcp4_syn_frame(from_a1(), a1_ip(), a2_ip(), 40000, 80, 1460)),
        Verdict::Tx(A2)
    );
    assert_eq!(run(&mut p, &h, A2, build::tcp4_syn_frame(a2, a2_ip(), a1_ip(), 80, 40000, 1460)), Verdict::Tx(A1));
    let denied = run(&mut p, &h, A1, build::tcp4_syn_frame(from_a1(), a1_ip(), a2_ip(), 40001, 22, 1460));
    assert_eq!(denied, Verdict::Drop(DropReason::FlowActionDrop));

    let t = ok(&sock, &["flow", "list"]);
    assert!(t.lines().next().unwrap().starts_with("INDEX") && t.contains("4 entries shown; 2 pairs of 1000"), "{t}");
    let allowed =
        t.lines().find(|l| l.contains("10.1.0.2:40000") && l.contains(" F<=>")).unwrap_or_else(|| panic!("{t}"));
    assert!(allowed.contains(" tcp ") && allowed.contains(" F ") && allowed.contains(" syn"), "{allowed}");
    assert_eq!(column(&t, allowed, "RULE"), "vrf1:0", "the rule that allowed it: {allowed}");
    let denied = t.lines().find(|l| l.contains("10.1.0.3:22") && l.contains("D(flow_action_drop)"));
    assert_eq!(denied.map(|l| column(&t, l, "RULE")), Some("vrf1:default".into()), "{t}");
    let j = json(&sock, &["flow", "list", "--match", "10.1.0.3:22"]);
    assert_eq!(j.as_array().unwrap().len(), 2, "both directions of the denied pair: {j}");
    assert_eq!(json(&sock, &["flow", "list", "--match", "vrf 1 & proto udp"]).as_array().unwrap().len(), 0);
    assert_eq!(json(&sock, &["flow", "list", "--match", ":80 & proto tcp & vif 1"]).as_array().unwrap().len(), 2);
    // By the rule that decides them, as RULE shows it, or by the VRF's name.
    let by_rule = |m: &str| -> Vec<String> {
        let flows = json(&sock, &["flow", "list", "--match", m]);
        let mut ports: Vec<String> =
            flows.as_array().unwrap().iter().map(|f| format!("{}:{}", f["sport"], f["dport"])).collect();
        ports.sort();
        ports
    };
    assert_eq!(by_rule("rule vrf1:0"), ["40000:80", "80:40000"], "the allowed pair");
    assert_eq!(by_rule("rule blue:0 & proto tcp"), ["40000:80", "80:40000"]);
    assert_eq!(by_rule("rule 1:default"), ["22:40001", "40001:22"], "the denied pair");
    assert_eq!(by_rule("rule vrf2:0"), Vec::<String>::new());
    let (succeeded, _, err) = vrctl(&sock, &["flow", "list", "--match", "rule vrf1"]);
    assert!(!succeeded && err.contains("rule VRF:N|VRF:default"), "{err}");
    // Between two endpoints, either way round (Contrail's "IP:PORT,IP:PORT").
    let between = |m: &str| json(&sock, &["flow", "list", "--match", m]).as_array().map_or(0, Vec::len);
    assert_eq!(between("10.1.0.2:40000,10.1.0.3:80"), 2, "the allowed pair");
    assert_eq!(between("10.1.0.3:80,10.1.0.2"), 2, "named the other way round");
    assert_eq!(between("10.1.0.2,10.1.0.3"), 4, "both pairs");
    assert_eq!(between("10.1.0.2,10.1.0.3:22 & proto tcp"), 2, "the denied pair");
    assert_eq!(between("10.1.0.2:40000,10.1.0.3:22"), 0, "no such pair");
    assert_eq!(between("10.1.0.2,10.1.0.2"), 0, "not a flow to itself");
    // IPv6 in brackets, with or without a port.
    assert_eq!(between("[fd00::2]"), 0);
    assert_eq!(between("[fd00::2]:80,10.1.0.2"), 0);
    let (done, _, err) = vrctl(&sock, &["flow", "list", "--match", "[fd00::2]80"]);
    assert!(!done && err.contains("cannot read"), "{err}");
    // A term given twice would have replaced the first unseen: an error.
    let (done, _, err) = vrctl(&sock, &["flow", "list", "--match", "10.1.0.2 & 10.1.0.3"]);
    assert!(!done && err.contains("gives ip a second time") && err.contains("IP:PORT,IP:PORT"), "{err}");
    let (done, _, err) = vrctl(&sock, &["flow", "list", "--match", "10.1.0.2 & & vrf 1"]);
    assert!(!done && err.contains("cannot read \"\""), "{err}");
    let first = j[0]["index"].as_u64().unwrap().to_string();
    let one = json(&sock, &["flow", "get", &first]);
    assert_eq!(one["action"]["drop"], "flow_action_drop");
    assert_eq!(one["rule"], serde_json::json!({ "vrf": 1, "index": null }), "the default denied it");
    assert_eq!(one["one_way"], false, "under a policy both directions are tracked");
    assert_eq!(one["packets"], u64::from(one["direction"] == "forward"), "the forward entry counted one packet");

    // A fragmented segment of the allowed flow: its second fragment, with
    // no ports of its own, finds them in the fragment table.
    let mut segment = vec![0u8; 20 + 1000];
    segment[0..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]); // 40000 -> 80
    (segment[12], segment[13]) = (0x50, 0x10); // 20-byte header, ACK
    for f in ipv4_fragments(from_a1(), a1_ip(), a2_ip(), 6, 0x4242, &segment, 512) {
        assert_eq!(run(&mut p, &h, A1, f), Verdict::Tx(A2));
    }
    let frags = ok(&sock, &["flow", "fragments"]);
    let row = frags.lines().find(|l| l.contains("10.1.0.2")).unwrap_or_else(|| panic!("{frags}"));
    assert!(
        row.contains(" tcp ") && row.contains("10.1.0.3") && row.contains("16962") && row.contains("40000:80"),
        "{row}"
    );
    assert!(frags.contains("first fragments recorded 1; later fragments matched 1, unmatched 0"), "{frags}");
    assert!(frags.contains("held before their first 0: let go 0, expired 0, no room 0"), "{frags}");
    assert_eq!(json(&sock, &["flow", "fragments"])["entries"][0]["ident"], 0x4242);
    // An ICMP message other than an echo has no flow: its row says so.
    let mut unreachable = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend_from_slice(&[0; 1000]);
    for f in ipv4_fragments(from_a1(), a1_ip(), a2_ip(), 1, 0x4343, &unreachable, 512) {
        run(&mut p, &h, A1, f);
    }
    let frags = ok(&sock, &["flow", "fragments"]);
    let row = frags.lines().find(|l| l.contains("17219")).unwrap_or_else(|| panic!("{frags}"));
    assert!(row.contains(" icmp ") && row.contains("no flow"), "{row}");
    let entries = json(&sock, &["flow", "fragments"])["entries"].clone();
    let entry = entries.as_array().into_iter().flatten().find(|e| e["ident"] == 0x4343).cloned();
    assert_eq!(entry.map(|e| (e["sport"].is_null(), e["dport"].is_null())), Some((true, true)), "{entries}");

    let stats = ok(&sock, &["flow", "stats"]);
    assert!(stats.contains("pairs      2 of 1000 (0.2%)"), "{stats}");
    assert!(
        stats.contains("timeouts   idle 180 s,")
            && stats.contains("so far     2 set up, 0 torn down, 0 decided again after policy changes"),
        "{stats}"
    );
    assert_eq!(json(&sock, &["flow", "stats"])["capacity"], 1000);
    let rate = ok(&sock, &["flow", "rate", "--count", "1", "--interval", "0.2"]);
    assert!(rate.starts_with("setup 0/s") && rate.contains("pairs 2"), "{rate}");
    let top = ok(&sock, &["flow", "top", "--count", "1", "--interval", "0.2", "--sort", "bps"]);
    assert!(top.contains("top flows by bits/s") && top.contains("10.1.0.2:40000"), "{top}");

    // A policy change: the denied pair's action stands until its next
    // packet, marked, beside the rule that will decide it.
    let allow_port = |p: u16| serde_json::json!({ "src": "10.1.0.2/32", "dst": "10.1.0.3/32", "proto": "tcp", "dport": p, "action": "allow" });
    let mut c = vrouter::api::client::Client::connect(&sock, "test").unwrap();
    c.call(
        "update",
        serde_json::json!({ "policy": { "vrf": BLUE, "default": "deny", "rules": [allow_port(80), allow_port(22),
            { "src": { "network": RED }, "action": "deny" }] } }),
    )
    .unwrap();
    let denied_row = |t: &str| t.lines().find(|l| l.contains("10.1.0.3:22") && l.contains(" F<=>")).map(String::from);
    let t = ok(&sock, &["flow", "list"]);
    let row = denied_row(&t).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(
        (column(&t, &row, "ACTION"), column(&t, &row, "RULE")),
        ("D(flow_action_drop)*".into(), "vrf1:1".into())
    );
    assert_eq!(json(&sock, &["flow", "get", &first])["stale"], true);
    let again = run(&mut p, &h, A1, build::tcp4_syn_frame(from_a1(), a1_ip(), a2_ip(), 40001, 22, 1460));
    assert_eq!(again, Verdict::Tx(A2), "decided again by rule 1");
    let t = ok(&sock, &["flow", "list"]);
    let row = denied_row(&t).unwrap_or_else(|| panic!("{t}"));
    assert_eq!((column(&t, &row, "ACTION"), column(&t, &row, "RULE")), ("F".into(), "vrf1:1".into()));
    assert_eq!(json(&sock, &["flow", "get", &first])["stale"], false);

    // Where only an ECMP route makes a VRF track flows (red has no
    // policy), a pair tracks its forward way alone: its reverse counts
    // nothing, and says so rather than showing 0.
    c.call("add", serde_json::json!({ "route": { "vrf": RED, "prefix": "10.96.0.10/32", "nh": NH_ECMP } })).unwrap();
    let r1 = L2 { src: mac(3), dst: router_mac() };
    let to_service = build::udp4_frame(r1, a1_ip(), Ipv4Addr::new(10, 96, 0, 10), 5353, 53, 64, 64);
    assert_eq!(run(&mut p, &h, R1, to_service), Verdict::Tx(FABRIC));
    let t = ok(&sock, &["flow", "list", "--match", "vrf 2"]);
    let fwd = t.lines().find(|l| l.contains(" F=>")).unwrap_or_else(|| panic!("{t}"));
    let rev = t.lines().find(|l| l.contains(" R<=")).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(column(&t, fwd, "PKTS"), "1", "{fwd}");
    assert_eq!((column(&t, rev, "PKTS"), column(&t, rev, "BYTES")), ("-".into(), "-".into()), "{rev}");
    assert_eq!(column(&t, fwd, "RULE"), "-", "no policy judges it: {fwd}");
    assert!(t.contains("DIR ") && t.contains("ACTION ") && t.contains("ECMP "), "the legend: {t}");
    let red = json(&sock, &["flow", "list", "--match", "vrf 2"]);
    assert_eq!(red.as_array().unwrap().len(), 2);
    // By name, as every other command takes a VRF or a vif.
    let indexes = |m: &str| -> Vec<Value> {
        json(&sock, &["flow", "list", "--match", m]).as_array().unwrap().iter().map(|f| f["index"].clone()).collect()
    };
    let red_indexes: Vec<Value> = red.as_array().unwrap().iter().map(|f| f["index"].clone()).collect();
    assert_eq!(indexes("vrf red"), red_indexes);
    assert_eq!(indexes("vif veth-r1 & vrf red"), red_indexes);
    assert_eq!(indexes("vif veth-a1 & vrf red"), Vec::<Value>::new());
    let (succeeded, _, err) = vrctl(&sock, &["flow", "list", "--match", "vrf purple"]);
    assert!(!succeeded && err.contains("no VRF named \"purple\""), "{err}");
    ok(&sock, &["flow", "delete", &red[0]["index"].to_string()]);
    c.call("delete", serde_json::json!({ "route": { "vrf": RED, "prefix": "10.96.0.10/32" } })).unwrap();

    // Policies deleted and made again: none listed says so; a range keeps
    // its dash, and ports left out are any.
    c.call("delete", serde_json::json!({ "policy": BLUE })).unwrap();
    assert_eq!(ok(&sock, &["policy", "list"]), "no policies\n");
    c.call(
        "add",
        serde_json::json!({ "policy": { "vrf": BLUE, "default": "deny", "rules": [allow_port(80), allow_port(22),
            { "src": { "network": RED }, "proto": "udp", "sport": "1000-2000", "action": "deny" }] } }),
    )
    .unwrap();
    c.call("add", serde_json::json!({ "policy": { "vrf": RED, "default": "allow" } })).unwrap();
    let t = ok(&sock, &["policy", "list"]);
    let tail = |needle: &str| -> Vec<String> {
        let row = t.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle}: {t}"));
        let words: Vec<String> = row.split_whitespace().map(String::from).collect();
        words[words.len() - 4..].to_vec()
    };
    assert_eq!(tail("1000-2000"), ["udp", "1000-2000", "any", "deny"], "PROTO SPORT DPORT ACTION: {t}");
    assert_eq!(tail("tcp"), ["tcp", "any", "80", "allow"], "{t}");
    assert!(t.contains("VRF 2 (red)  default allow") && t.contains("no rules: the default decides"), "{t}");
    assert!(t.contains("VRF 1 (blue)  default deny") && t.contains("10.1.0.3/32") && t.contains("allow"), "{t}");
    let red_rule = t.lines().find(|l| l.trim_start().starts_with('2')).unwrap_or_else(|| panic!("{t}"));
    assert!(red_rule.contains("network 2 (red)") && red_rule.contains("deny"), "the network by name: {t}");

    ok(&sock, &["flow", "delete", &first]);
    assert_eq!(json(&sock, &["flow", "list"]).as_array().unwrap().len(), 2);
    let (good, _, err) = vrctl(&sock, &["flow", "get", &first]);
    assert!(!good && err.contains("does not exist"), "{err}");
    assert!(ok(&sock, &["flow", "flush"]).contains("1 flow pairs removed"));
    assert_eq!(json(&sock, &["flow", "list"]).as_array().unwrap().len(), 0);
}

/// A deleted vif takes its flows with it: those it created (its per-vif
/// count starts again from zero for the next vif with its index) and those
/// to or from its addresses in its VRF. Other flows stay.
#[test]
fn deleting_a_vif_removes_its_flows() {
    use vrouter::api::client::Client;
    use vrouter::pipeline::Verdict;
    use vrouter::pktgen::build::{self, L2};
    let (sock, mut p, h) = server_with_flows("vif-delete");
    let a2 = L2 { src: mac(2), dst: router_mac() };
    let syn = |src, dst, sport, dport| build::tcp4_syn_frame(from_a1(), src, dst, sport, dport, 1460);
    assert_eq!(run(&mut p, &h, A1, syn(a1_ip(), a2_ip(), 40000, 80)), Verdict::Tx(A2));
    let denied = run(&mut p, &h, A2, build::tcp4_syn_frame(a2, a2_ip(), a1_ip(), 40001, 22, 1460));
    assert_eq!(denied, Verdict::Drop(DropReason::FlowActionDrop), "a2 opens a pair of its own");
    // A flow that does not involve a2: it stays.
    assert_eq!(run(&mut p, &h, A1, syn(a1_ip(), remote_ip(), 40002, 443)), Verdict::Drop(DropReason::FlowActionDrop));
    assert_eq!(json(&sock, &["flow", "list"]).as_array().unwrap().len(), 6);

    let mut c = Client::connect(&sock, "test").unwrap();
    // An update that leaves a2 where it was keeps its flows; one that moves it does not.
    // What `get` answers goes back as it is, its read-only status included.
    let mut a2 = c.call("get", serde_json::json!({ "vif": A2 })).unwrap();
    assert!(a2["status"].is_object());
    a2["mtu"] = 9000.into();
    let r = c.call("update", serde_json::json!({ "vif": a2.clone() })).unwrap();
    assert_eq!((r["applied"].as_u64(), r.get("flows_removed")), (Some(1), None), "{r}");
    let r = c.call("batch", serde_json::json!({ "ops": [{ "update": { "vif": a2 } }] })).unwrap();
    assert_eq!(r["applied"].as_u64(), Some(1), "in a batch too: {r}");
    assert_eq!(c.call("get", serde_json::json!({ "vif": A2 })).unwrap()["mtu"], 9000);
    assert_eq!(json(&sock, &["flow", "list"]).as_array().unwrap().len(), 6);
    let r = c
        .call(
            "batch",
            serde_json::json!({ "ops": [
                { "delete": { "route": { "vrf": BLUE, "prefix": "10.1.0.3/32" } } },
                { "delete": { "route": { "vrf": BLUE, "prefix": "fd00:1::3/128" } } },
                { "delete": { "label": LABEL_A2 } },
                { "delete": { "nexthop": NH_A2 } },
                { "delete": { "vif": A2 } },
            ] }),
        )
        .unwrap();
    assert_eq!(r["flows_removed"], 2, "{r}");
    let left = json(&sock, &["flow", "list"]);
    let left = left.as_array().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    let remote = remote_ip().to_string();
    assert!(left.iter().all(|f| f["src"] == remote.as_str() || f["dst"] == remote.as_str()), "{left:?}");
    let stats = c.call("flow.stats", serde_json::json!({})).unwrap();
    assert_eq!((stats["pairs"].as_u64(), stats["removed"].as_u64()), (Some(1), Some(2)), "{stats}");
}

/// `vrctl vifdump`: a line a frame, received ones with what vrouterd did
/// with them (the vif they left by, by name, or the drop reason), sent
/// ones as they left; a JSON object a frame with --json; and it stops
/// after -c frames, stopping its capture. The frames come from the tap, as
/// a worker leaves them.
#[test]
fn vifdump_prints_each_frame_with_its_verdict() {
    use vrouter::capture::Tap;
    use vrouter::pipeline::Verdict;
    use vrouter::pktgen::build;
    let tap = Arc::new(Tap::new());
    let (_, sock, _) = server_with("dump", |c| c.with_tap(Arc::clone(&tap)));

    let ping = |dst: Ipv4Addr, kind: u8| {
        let icmp = [kind, 0, 0, 0, 0, 1, 0, 1];
        build::ip_frame(from_a1(), &build::ipv4(a1_ip(), dst, 1, 64, false, &icmp))
    };
    let feed = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !tap.armed() {
            assert!(std::time::Instant::now() < deadline, "vifdump started no capture");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut staged = Vec::with_capacity(4);
        tap.stage(A1, 0, &ping(a2_ip(), 8), 1_000_000, &mut staged);
        tap.stage(A1, 1, &ping(Ipv4Addr::new(10, 9, 9, 9), 8), 1_000_000, &mut staged);
        // The second took the general path, the lane having found no route.
        let verdicts = [Verdict::Tx(A2), Verdict::Drop(DropReason::NoRoute)];
        let general = [None, Some(vrouter::stats::GeneralCause::NoRoute)];
        tap.post_staged(&mut staged, |at| (verdicts.get(at).copied(), general.get(at).copied().flatten()));
        tap.sent(A1, &ping(a2_ip(), 0), 2_000_000);
    };
    let run = |args: &[&str]| {
        let child = Command::new(VRCTL)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        feed();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "vrctl {args:?}: {err}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };

    let (text, said) = run(&["vifdump", "veth-a1", "-c", "3"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("00:00:00.001000 in "), "{text}");
    assert!(lines[0].ends_with("IP 10.1.0.2 > 10.1.0.3: ICMP echo request => tx vif0/2 (veth-a2)"), "{text}");
    assert!(
        lines[1].ends_with("IP 10.1.0.2 > 10.9.9.9: ICMP echo request => drop no_route, general path: no_route"),
        "{text}"
    );
    assert!(lines[2].starts_with("00:00:00.002000 out"), "{text}");
    assert!(lines[2].ends_with("ICMP echo reply"), "a sent frame has no verdict: {text}");
    assert!(said.contains("3 frames captured on vif0/1 (veth-a1); 0 missed"), "{said}");
    assert!(!tap.armed(), "vifdump stopped its capture");

    let (json, _) = run(&["vifdump", "1", "-c", "2", "--json"]);
    let objects: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{json}");
    assert_eq!(objects[1]["verdict"], serde_json::json!({ "action": "drop", "reason": "no_route" }));
    assert_eq!((objects[0]["general"].as_str(), objects[1]["general"].as_str()), (None, Some("no_route")));
    assert_eq!(
        objects[1]["data"].as_str(),
        Some(vrouter::capture::to_hex(&ping(Ipv4Addr::new(10, 9, 9, 9), 8)).as_str())
    );

    // --match: vrouterd copies only what matches.
    let (text, _) = run(&["vifdump", "veth-a1", "-c", "1", "--match", "10.9.9.9 & proto icmp"]);
    assert!(
        text.trim_end().ends_with("IP 10.1.0.2 > 10.9.9.9: ICMP echo request => drop no_route, general path: no_route"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    // --general: only what took the general path.
    let (text, said) = run(&["vifdump", "veth-a1", "-c", "1", "--general"]);
    assert!(
        text.trim_end().ends_with("10.9.9.9: ICMP echo request => drop no_route, general path: no_route"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(said.contains("1 frames captured"), "{said}");
    // A reader gone (`vifdump ... | head` done) ends the capture as Ctrl-C
    // does: stopped, with its summary, and success.
    let child = Command::new(VRCTL)
        .arg("--socket")
        .arg(&sock)
        .args(["vifdump", "veth-a1"])
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    feed();
    let out = wait_within(child, std::time::Duration::from_secs(30));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("0 frames captured on vif0/1"), "{}: {said}", out.status);
    assert!(!tap.armed(), "vifdump stopped its capture");

    let (succeeded, _, err) = vrctl(&sock, &["vifdump", "veth-a1", "--match", "vrf 1"]);
    assert!(!succeeded && err.contains("no vrf, vif or rule"), "{err}");
}

/// `vrctl trace` from the fabric: a packet as another node sends it, in
/// MPLS over UDP or GRE with a label that names a pod or a VRF to route in.
#[test]
fn trace_from_the_fabric_follows_the_label() {
    let (_, sock, _) = server_with("trace-fabric", |c| c);
    let to_pod =
        ok(&sock, &["trace", "eth0", "10.1.0.2", "--label", "16", "--src", "10.2.0.5", "--from", "192.168.0.2"]);
    assert!(
        to_pod.contains("in      vif0/0 (eth0), VRF 1: IP 192.168.0.2.49152 > 192.168.0.1.6635: UDP, MPLS label 16: IP 10.2.0.5.40000 > 10.1.0.2.80: UDP"),
        "{to_pod}"
    );
    assert!(to_pod.contains("label   16 -> nh 1 (encap)"), "{to_pod}");
    assert!(to_pod.contains("route   none: the label names where it goes"), "{to_pod}");
    assert!(to_pod.contains("=>      tx vif0/1 (veth-a1)"), "{to_pod}");
    assert!(to_pod.contains("out     IP 10.2.0.5.40000 > 10.1.0.2.80: UDP"), "stripped: {to_pod}");
    assert!(to_pod.contains("path    first packet: fast lane; next ones: fast lane\n"), "the fabric's lane: {to_pod}");
    let syn = ok(&sock, &["trace", "eth0", "10.1.0.2", "--label", "16", "--src", "10.2.0.5", "--proto", "tcp"]);
    assert!(syn.contains("path    first packet: general path (tcp_syn); next ones: fast lane\n"), "{syn}");

    // A VRF's label: the packet is routed there, here to the other pod.
    let routed =
        json(&sock, &["trace", "0", "10.1.0.3", "--label", "18", "--src", "10.2.0.5", "--encap", "mpls-o-gre"]);
    assert_eq!(routed["in"]["label"]["nexthop"]["type"], "vrf-lookup", "{routed}");
    assert_eq!(routed["in"]["vrf"], 1, "{routed}");
    assert_eq!(routed["route"]["prefix"], "10.1.0.3/32", "{routed}");
    assert_eq!(routed["verdict"], serde_json::json!({ "action": "tx", "vif": 2 }), "{routed}");
    let summary = routed["in"]["frame"]["summary"].as_str().unwrap();
    assert!(summary.contains("GRE") && summary.contains("MPLS label 18"), "{summary}");

    // An IPv6 packet in the IPv4 underlay's tunnel.
    let v6 = ok(&sock, &["trace", "eth0", "fd00:1::2", "--label", "16", "--src", "fd00:2::5", "--proto", "icmp"]);
    assert!(v6.contains("MPLS label 16: IP6 fd00:2::5 > fd00:1::2: ICMP6 echo request"), "{v6}");
    assert!(v6.contains("=>      tx vif0/1 (veth-a1)"), "{v6}");

    let unknown = ok(&sock, &["trace", "eth0", "10.1.0.2", "--label", "999", "--src", "10.2.0.5"]);
    assert!(
        unknown.contains("label   999 names nothing") && unknown.contains("=>      drop invalid_label"),
        "{unknown}"
    );
    assert!(unknown.contains("in      vif0/0 (eth0): IP") && unknown.contains("policy  none: no VRF"), "{unknown}");

    let (succeeded, _, err) = vrctl(&sock, &["trace", "eth0", "10.1.0.2", "--label", "16"]);
    assert!(!succeeded && err.contains("needs src"), "{err}");
    let (succeeded, _, err) = vrctl(&sock, &["trace", "eth0", "10.1.0.2", "--label", "2000000", "--src", "10.2.0.5"]);
    assert!(!succeeded && err.contains("20 bits"), "{err}");
    let (succeeded, _, err) =
        vrctl(&sock, &["trace", "eth0", "10.1.0.2", "--label", "16", "--src", "10.2.0.5", "--encap", "vxlan"]);
    assert!(!succeeded && err.contains("encap"), "{err}");
}

/// `vrctl trace`: the first packet of a flow from a pod, through a pipeline
/// of its own over the live tables: its route, the policy rule that judges
/// it, the ECMP member its hash picks, what becomes of it and the frame as
/// it would leave (tunnel and all); nothing is sent and no flow is made.
#[test]
fn trace_says_what_the_data_path_would_do() {
    let flows = Arc::new(vrouter::flow::FlowTable::new(
        vrouter::flow::FlowConfig { capacity: 1000, ..Default::default() },
        64,
        16,
    ));
    let (_, sock, handle) = server_with("trace", |c| c.with_flows(Arc::clone(&flows), std::time::Instant::now()));
    let to_a2 = ok(&sock, &["trace", "veth-a1", "10.1.0.3"]);
    assert!(to_a2.contains("in      vif0/1 (veth-a1), VRF 1: IP 10.1.0.2.40000 > 10.1.0.3.80: UDP"), "{to_a2}");
    assert!(to_a2.contains("route   10.1.0.3/32 -> nh 2 (encap)"), "{to_a2}");
    assert!(to_a2.contains("policy  none: the VRF tracks no flows"), "{to_a2}");
    assert!(to_a2.contains("=>      tx vif0/2 (veth-a2)"), "{to_a2}");
    // Which way the flow's packets go: an untracked datagram, the fast lane.
    assert!(to_a2.contains("path    first packet: fast lane; next ones: fast lane\n"), "{to_a2}");

    let tunnel = ok(&sock, &["trace", "veth-a1", "10.2.0.9", "--proto", "tcp", "--dport", "443"]);
    assert!(tunnel.contains("route   10.2.0.0/24 -> nh 10 (tunnel), label 40"), "{tunnel}");
    assert!(tunnel.contains("=>      tx vif0/0 (eth0)"), "{tunnel}");
    assert!(tunnel.contains(", MPLS label 40: IP 10.1.0.2.40000 > 10.2.0.9.443: TCP [S]"), "{tunnel}");
    // A connection: its SYN the general path's (the MSS is clamped there),
    // its segments after it the lane's.
    assert!(tunnel.contains("path    first packet: general path (tcp_syn); next ones: fast lane\n"), "{tunnel}");

    let service = json(&sock, &["trace", "1", "10.96.0.10", "--sport", "5555"]);
    let member = &service["flow"]["ecmp"];
    let members = service["route"]["nexthop"]["members"].as_array().unwrap();
    assert!(members.iter().any(|m| m["nh"] == member["nh"] && m["label"] == member["label"]), "{service}");
    assert_eq!(service["flow"]["rule"], Value::Null, "tracked for the ECMP route, judged by no policy");
    // A new flow's first packet is the general path's; its next, the lane's.
    let path = serde_json::json!({
        "first": { "lane": "general", "cause": "new_flow" },
        "next": { "verdict": service["verdict"], "path": { "lane": "fast" } },
    });
    assert_eq!(service["path"], path, "{service}");
    let again = json(&sock, &["trace", "1", "10.96.0.10", "--sport", "5555"]);
    assert_eq!(again["flow"]["ecmp"], *member, "the same flow, the same member");
    assert_eq!(again["existing"], Value::Null, "no live flow yet");

    // Live flows to the service: a trace says which one its key finds, and
    // when the members changed since, that the flow keeps its own.
    let mut p = vrouter::pipeline::Pipeline::new(Default::default(), &limits()).with_flows(Arc::clone(&flows));
    let sports = 5000..5016u16;
    for sport in sports.clone() {
        let datagram = vrouter::pktgen::build::udp4_frame(from_a1(), a1_ip(), service_ip(), sport, 80, 64, 64);
        assert!(matches!(run(&mut p, &handle, A1, datagram), vrouter::pipeline::Verdict::Tx(_)));
    }
    let live = json(&sock, &["trace", "1", "10.96.0.10", "--sport", "5000"]);
    assert_eq!(live["existing"]["ecmp"], live["flow"]["ecmp"], "{live}");
    assert_eq!(
        (live["existing"]["direction"].as_str(), live["existing"]["packets"].as_u64()),
        (Some("forward"), Some(1))
    );
    let mut c = vrouter::api::client::Client::connect(&sock, "test").unwrap();
    let members = serde_json::json!([{ "nh": 10, "label": 100 }, { "nh": 12, "label": 101 }, { "nh": 13, "label": 102 },
                                     { "nh": 12, "label": 103 }, { "nh": 13, "label": 104 }]);
    c.call("update", serde_json::json!({ "nexthop": { "type": "composite-ecmp", "id": 20, "members": members } }))
        .unwrap();
    let moved = sports.clone().find_map(|sport| {
        let text = ok(&sock, &["trace", "veth-a1", "10.96.0.10", "--sport", &sport.to_string()]);
        text.contains("pinned to another member").then_some(text)
    });
    let moved = moved.expect("of 16 flows, one whose new pick is another member");
    assert!(moved.contains("live    flow ") && moved.contains("(forward) has this key: F, member nh "), "{moved}");

    let v6 = ok(&sock, &["trace", "veth-a1", "fd00:1::3", "--proto", "icmp"]);
    assert!(v6.contains("IP6 fd00:1::2 > fd00:1::3: ICMP6 echo request") && v6.contains("tx vif0/2"), "{v6}");
    let nowhere = ok(&sock, &["trace", "veth-a1", "10.99.0.1", "--proto", "icmp"]);
    assert!(nowhere.contains("route   none") && nowhere.contains("=>      drop no_route"), "{nowhere}");
    assert!(nowhere.contains("policy  not reached: dropped before a flow is made"), "{nowhere}");
    let slow = "path    first packet: general path (no_route); next ones: general path (no_route)\n";
    assert!(nowhere.contains(slow), "{nowhere}");
    assert!(!nowhere.contains("out "), "a dropped packet leaves by nothing: {nowhere}");

    // A policy that denies everything: the trace names its default.
    let mut c = vrouter::api::client::Client::connect(&sock, "test").unwrap();
    c.call("add", serde_json::json!({ "policy": { "vrf": BLUE, "default": "deny" } })).unwrap();
    let denied = ok(&sock, &["trace", "veth-a1", "10.1.0.3"]);
    assert!(
        denied.contains("policy  the default of VRF 1") && denied.contains("=>      drop flow_action_drop"),
        "{denied}"
    );
    // Its pair denies the next ones too, dropped in the lane.
    assert!(denied.contains("path    first packet: general path (new_flow); next ones: fast lane\n"), "{denied}");
    assert_eq!(flows.len(), 16, "the live flow table holds the pipeline's flows, none of the traces'");

    let (succeeded, _, err) = vrctl(&sock, &["trace", "eth0", "10.1.0.3"]);
    assert!(!succeeded && err.contains("needs the label"), "{err}");
    let (succeeded, _, err) = vrctl(&sock, &["trace", "veth-a1", "10.1.0.3", "--label", "16"]);
    assert!(!succeeded && err.contains("label is for a trace from the fabric"), "{err}");
    let (succeeded, _, err) = vrctl(&sock, &["trace", "veth-a1", "10.1.0.3", "--proto", "47"]);
    assert!(!succeeded && err.contains("udp, tcp or icmp"), "{err}");
    let (succeeded, _, err) = vrctl(&sock, &["trace", "veth-a1", "fd00:9::1", "--src", "10.1.0.2"]);
    assert!(!succeeded && err.contains("two families"), "{err}");
}
