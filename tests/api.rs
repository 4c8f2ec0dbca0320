//! The API's contract: every object and operation over a real Unix socket,
//! each error case, atomic batches, concurrent and stalled clients, paged
//! dumps, and packets that keep flowing while routes come and go.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vrouter::api::client::{Client, ClientError};
use vrouter::api::schema::Defaults;
use vrouter::api::server::{Control, NodeInfo};
use vrouter::pipeline::{Frame, Pipeline, PipelineConfig, Spill, Verdict};
use vrouter::stats::StatsBoard;
use vrouter::tables::{Limits, TablesHandle, TablesWriter};

fn limits() -> Limits {
    Limits { vifs: 64, vrfs: 16, nexthops: 1024, labels: 1024, routes_per_vrf: 300_000 }
}

/// A server over the common lab's tables on a fresh socket.
fn server(tag: &str) -> (Arc<Control>, Scratch, TablesHandle) {
    server_with(tag, |c| c)
}

/// A server over the common lab's tables on a fresh socket, its control
/// built on by `extra` (a tap).
fn server_with(tag: &str, extra: impl FnOnce(Control) -> Control) -> (Arc<Control>, Scratch, TablesHandle) {
    let (mut writer, handle) = TablesWriter::new(limits());
    writer.apply(&lab_ops()).unwrap();
    let board = StatsBoard::new(1, limits().vifs, limits().vrfs);
    let node =
        NodeInfo { boot_id: NodeInfo::new_boot_id(), underlay: node_ip(), fabric: "eth0".into(), cores: vec![0] };
    let control = Arc::new(extra(
        Control::new(writer, Defaults { router_mac: router_mac(), underlay: node_ip() }, board, node)
            .with_max_message(1 << 20),
    ));
    let sock = Scratch::socket(tag);
    let listener = vrouter::api::server::bind(&sock, None).unwrap();
    vrouter::api::server::spawn(Arc::clone(&control), listener, 8).unwrap();
    (control, sock, handle)
}

fn client(sock: &std::path::Path) -> Client {
    let c = Client::connect(sock, "test").unwrap();
    c.set_timeout(Some(Duration::from_secs(20)));
    c
}

fn api_err(r: Result<Value, ClientError>) -> vrouter::api::proto::ApiError {
    match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn the_handshake_comes_first_and_settles_the_version() {
    let (_c, sock, _) = server("hello");
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut read = std::io::BufReader::new(s.try_clone().unwrap());
    let mut ask = |line: &str| -> Value {
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut out = String::new();
        std::io::BufRead::read_line(&mut read, &mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let r = ask(r#"{"id":1,"method":"info"}"#);
    assert_eq!(r["error"]["code"], "hello_first", "{r}");
    let r = ask(r#"{"id":"x","method":"hello","params":{"version":99}}"#);
    assert_eq!(r["error"]["code"], "version_mismatch", "{r}");
    assert_eq!(r["id"], "x", "the id is echoed, whatever its type");
    let r = ask(r#"{"id":2,"method":"hello","params":{"version":1,"client":"socat"}}"#);
    assert_eq!(r["result"]["version"], 1, "{r}");
    assert!(r["result"]["boot_id"].as_str().is_some_and(|b| !b.is_empty()));
    let r = ask(r#"{"id":3,"method":"info"}"#);
    assert_eq!(r["result"]["api_version"], 1, "{r}");
}

#[test]
fn every_object_can_be_added_read_updated_dumped_and_deleted() {
    let (_c, sock, handle) = server("crud");
    let mut c = client(&sock);
    let objects = [
        json!({ "vrf": { "id": 7, "name": "green", "gateway_v4": "10.7.0.1", "gateway_v6": "fd07::1" } }),
        json!({ "vif": { "index": 9, "name": "veth-g1", "kind": "virtual", "vrf": 7, "mac": "02:00:00:00:07:01",
                         "ipv4": "10.7.0.2", "ipv6": "fd07::2", "mtu": 9000, "proxy_arp": true, "mss_clamp": false,
                         "disabled": false, "source_check": false } }),
        json!({ "nexthop": { "type": "encap", "id": 70, "oif": 9, "dmac": "02:00:00:00:07:01" } }),
        json!({ "nexthop": { "type": "tunnel", "id": 71, "oif": 0, "encap": "mpls-o-gre", "dip": "192.168.0.9",
                             "dmac": "02:fa:00:00:00:09" } }),
        json!({ "nexthop": { "type": "composite-ecmp", "id": 72, "members": [ { "nh": 70 }, { "nh": 71, "label": 500 } ] } }),
        json!({ "nexthop": { "type": "vrf-lookup", "id": 73, "vrf": 7 } }),
        json!({ "nexthop": { "type": "discard", "id": 74 } }),
        json!({ "nexthop": { "type": "receive", "id": 75 } }),
        json!({ "label": { "label": 700, "nh": 70 } }),
        json!({ "route": { "vrf": 7, "prefix": "10.7.0.2/32", "nh": 70 } }),
        json!({ "route": { "vrf": 7, "prefix": "10.70.0.0/16", "nh": 71, "label": 501 } }),
        json!({ "route": { "vrf": 7, "prefix": "fd07::/64", "nh": 72 } }),
    ];
    for o in &objects {
        c.call("add", o.clone()).unwrap_or_else(|e| panic!("add {o}: {e}"));
    }
    // What was written reads back the same (plus a status).
    for o in &objects {
        let (kind, body) = o.as_object().unwrap().iter().next().unwrap();
        let key = match kind.as_str() {
            "vrf" => json!({ "vrf": body["id"] }),
            "vif" => json!({ "vif": body["index"] }),
            "nexthop" => json!({ "nexthop": body["id"] }),
            "label" => json!({ "label": body["label"] }),
            _ => json!({ "route": { "vrf": body["vrf"], "prefix": body["prefix"] } }),
        };
        let mut got = c.call("get", key).unwrap();
        if let Some(o) = got.as_object_mut() {
            o.remove("status");
        }
        assert_eq!(&got, body, "{kind} reads back as written");
    }
    // The data path sees them.
    let t = handle.load();
    assert_eq!(t.vrf(7).unwrap().v4.lookup(0x0a07_0002).unwrap().nh, 70);
    assert_eq!(t.label(700), Some(70));
    assert_eq!(c.call("get", json!({ "nexthop": 70 })).unwrap()["status"]["refs"], 3, "route, label, composite");

    // Update in place.
    c.call("update", json!({ "route": { "vrf": 7, "prefix": "10.7.0.2/32", "nh": 73 } })).unwrap();
    c.call(
        "update",
        json!({ "vif": { "index": 9, "name": "veth-g1", "kind": "virtual", "vrf": 7,
                                       "mac": "02:00:00:00:07:01", "mtu": 1400 } }),
    )
    .unwrap();
    assert_eq!(handle.load().vif(9).unwrap().mtu, 1400);
    assert_eq!(handle.load().vrf(7).unwrap().v4.lookup(0x0a07_0002).unwrap().nh, 73);

    // Dumps of every kind.
    let dump = |c: &mut Client, p: Value| c.dump_all(p).unwrap();
    assert!(dump(&mut c, json!({ "object": "vrf" })).iter().any(|v| v["name"] == "green"));
    assert!(dump(&mut c, json!({ "object": "vif" })).iter().any(|v| v["index"] == 9));
    assert_eq!(dump(&mut c, json!({ "object": "nexthop", "limit": 2 })).len(), handle.load().nexthops().count());
    assert!(dump(&mut c, json!({ "object": "label" })).contains(&json!({ "label": 700, "nh": 70 })));
    let routes = dump(&mut c, json!({ "object": "route", "vrf": 7 }));
    let prefixes: Vec<&str> = routes.iter().map(|r| r["prefix"].as_str().unwrap()).collect();
    assert_eq!(prefixes, ["10.7.0.2/32", "10.70.0.0/16", "fd07::/64"], "address order, IPv4 first");
    let v6 = dump(&mut c, json!({ "object": "route", "vrf": 7, "family": "inet6" }));
    assert_eq!(v6.len(), 1);

    // Longest-prefix match, as the data path sees it.
    let hit = c.call("lookup", json!({ "vrf": 7, "address": "10.70.3.4" })).unwrap();
    assert_eq!(
        (hit["prefix"].as_str(), hit["nh"].as_u64(), hit["label"].as_u64()),
        (Some("10.70.0.0/16"), Some(71), Some(501))
    );
    assert_eq!(hit["nexthop"]["type"], "tunnel");
    let miss = api_err(c.call("lookup", json!({ "vrf": 7, "address": "192.0.2.1" })));
    assert_eq!(miss.code, "not_found");
    // A route imported from another network keeps that network: it reads
    // back, and the lookup names it (a VRF's own routes, its own).
    let imported = json!({ "vrf": 7, "prefix": "10.1.0.2/32", "nh": 70, "network": 1 });
    c.call("add", json!({ "route": imported })).unwrap();
    let mut got = c.call("get", json!({ "route": { "vrf": 7, "prefix": "10.1.0.2/32" } })).unwrap();
    got.as_object_mut().unwrap().remove("status");
    assert_eq!(got, imported);
    assert_eq!(c.call("lookup", json!({ "vrf": 7, "address": "10.1.0.2" })).unwrap()["network"], 1);
    assert_eq!(c.call("lookup", json!({ "vrf": 7, "address": "10.70.3.4" })).unwrap()["network"], 7);
    c.call("delete", json!({ "route": { "vrf": 7, "prefix": "10.1.0.2/32" } })).unwrap();

    // Delete, users first.
    let ops = json!({ "ops": [
        { "delete": { "route": { "vrf": 7, "prefix": "10.7.0.2/32" } } },
        { "delete": { "route": { "vrf": 7, "prefix": "10.70.0.0/16" } } },
        { "delete": { "route": { "vrf": 7, "prefix": "fd07::/64" } } },
        { "delete": { "label": 700 } },
        { "delete": { "nexthop": 72 } },
        { "delete": { "nexthop": 70 } },
        { "delete": { "nexthop": 71 } },
        { "delete": { "nexthop": 73 } },
        { "delete": { "vif": 9 } },
        { "delete": { "vrf": 7 } },
    ]});
    let r = c.call("batch", ops).unwrap();
    assert_eq!(r["applied"], 10);
    for key in [json!({ "vrf": 7 }), json!({ "vif": 9 }), json!({ "nexthop": 70 }), json!({ "label": 700 })] {
        assert_eq!(api_err(c.call("get", key.clone())).code, "not_found", "{key}");
    }
    let e = api_err(c.call("get", json!({ "route": { "vrf": 1, "prefix": "10.99.0.0/16" } })));
    assert_eq!(e.code, "not_found");
}

#[test]
fn a_batch_applies_whole_or_not_at_all_and_names_the_item_at_fault() {
    let (_c, sock, handle) = server("atomic");
    let mut c = client(&sock);
    let before = c.call("info", json!({})).unwrap()["generation"].clone();
    let e = api_err(c.call(
        "batch",
        json!({ "ops": [
            { "add": { "nexthop": { "type": "discard", "id": 500 } } },
            { "add": { "route": { "vrf": 1, "prefix": "10.50.0.0/16", "nh": 500 } } },
            { "add": { "label": { "label": 900, "nh": 500 } } },
            { "add": { "route": { "vrf": 1, "prefix": "10.51.0.0/16", "nh": 99 } } },
        ]}),
    ));
    assert_eq!((e.code.as_str(), e.index, e.field.as_deref()), ("missing_reference", Some(3), Some("nh")), "{e:?}");
    assert!(e.message.contains("operation 3") && e.message.contains("next hop 99"), "{}", e.message);
    assert_eq!(c.call("info", json!({})).unwrap()["generation"], before, "nothing was published");
    let t = handle.load();
    assert!(t.nexthop(500).is_none() && t.label(900).is_none());
    assert_ne!(t.vrf(1).unwrap().v4.lookup(0x0a32_0001).map(|r| r.nh), Some(500));
    // The same batch without the bad item goes through, all at once.
    let r = c.call(
        "batch",
        json!({ "ops": [
            { "add": { "nexthop": { "type": "discard", "id": 500 } } },
            { "add": { "route": { "vrf": 1, "prefix": "10.50.0.0/16", "nh": 500 } } },
            { "add": { "label": { "label": 900, "nh": 500 } } },
        ]}),
    );
    assert_eq!(r.unwrap()["generation"], before.as_u64().unwrap() + 1, "one batch, one generation");
}

#[test]
fn every_error_is_precise_and_leaves_the_connection_usable() {
    let (_c, sock, _) = server("errors");
    let mut c = client(&sock);
    let cases: Vec<(Value, &str, Option<&str>, &str)> = vec![
        (
            json!({ "route": { "vrf": 1, "prefix": "10.9.0.0/16", "nh": 999 } }),
            "missing_reference",
            Some("nh"),
            "next hop 999",
        ),
        (json!({ "label": { "label": 600, "nh": 999 } }), "missing_reference", Some("nh"), "next hop 999"),
        (
            json!({ "route": { "vrf": 99, "prefix": "10.9.0.0/16", "nh": 1 } }),
            "missing_reference",
            Some("vrf"),
            "VRF 99",
        ),
        (json!({ "route": { "vrf": 1, "prefix": "10.9.0.1/16", "nh": 1 } }), "invalid", Some("prefix"), "host bits"),
        (
            json!({ "route": { "vrf": 1, "prefix": "10.9.0.0/16", "nh": 1, "network": 99 } }),
            "missing_reference",
            Some("network"),
            "VRF 99",
        ),
        (
            json!({ "route": { "vrf": 1, "prefix": "10.9.0.0/33", "nh": 1 } }),
            "invalid",
            Some("prefix"),
            "longer than 32",
        ),
        (json!({ "label": { "label": 1048576, "nh": 1 } }), "out_of_range", Some("label"), "1048576"),
        (
            json!({ "vif": { "index": 64, "name": "x", "kind": "virtual", "vrf": 1, "mac": "02:00:00:00:00:99" } }),
            "out_of_range",
            Some("index"),
            "64",
        ),
        (
            json!({ "vif": { "index": 5, "name": "x", "kind": "pod", "vrf": 1, "mac": "02:00:00:00:00:99" } }),
            "invalid_params",
            Some("vif.kind"),
            "unknown variant",
        ),
        (
            json!({ "vif": { "index": "five", "name": "x", "kind": "virtual", "vrf": 1, "mac": "02:00:00:00:00:99" } }),
            "invalid_params",
            Some("vif.index"),
            "invalid type",
        ),
        (
            json!({ "vif": { "index": -1, "name": "x", "kind": "virtual", "vrf": 1, "mac": "02:00:00:00:00:99" } }),
            "invalid_params",
            Some("vif.index"),
            "-1",
        ),
        (
            json!({ "vif": { "index": 5, "name": "x", "kind": "virtual", "vrf": 1, "mac": "zz" } }),
            "invalid_params",
            Some("vif.mac"),
            "not a MAC",
        ),
        (
            json!({ "nexthop": { "type": "encap", "id": 1, "oif": 1, "dmac": "02:00:00:00:00:01" } }),
            "exists",
            None,
            "already exists",
        ),
        (
            json!({ "nexthop": { "type": "encap", "id": 80, "oif": 1, "dmac": "02:00:00:00:00:01", "colour": 1 } }),
            "invalid_params",
            Some("nexthop"),
            "unknown field",
        ),
        (json!({ "table": {} }), "invalid_params", None, "unknown variant"),
        // Where serde would say only "expected value": what was found.
        (json!(16), "invalid_params", Some("params"), "params: expected an object, not 16"),
        (
            json!({}),
            "invalid_params",
            None,
            "params: expected an object with one key, naming what it holds, not 0 keys",
        ),
        (
            json!({ "vrf": { "id": 9, "name": "x" }, "label": { "label": 99, "nh": 1 } }),
            "invalid_params",
            None,
            "not 2 keys",
        ),
        (
            json!({ "vif": { "index": 5, "name": "x", "kind": 7, "vrf": 1, "mac": "02:00:00:00:00:99" } }),
            "invalid_params",
            Some("vif.kind"),
            "vif.kind: expected a name, not 7",
        ),
    ];
    // A floating IP's forwarded ports: the protocol by name, no port 0,
    // each port once, a bounded list.
    let fip = |ports: Value| {
        json!({ "vif": { "index": 5, "name": "x", "kind": "virtual", "vrf": 1, "mac": "02:00:00:00:00:99",
                         "ipv4": "10.1.0.99", "floating_ips": [{ "address": "185.22.97.9", "vrf": 1, "ports": ports }] } })
    };
    let map = |port: u16| json!({ "proto": "tcp", "port": port, "target": 8080 });
    let mut cases = cases;
    cases.extend([
        (
            fip(json!([{ "proto": "icmp", "port": 1, "target": 1 }])),
            "invalid_params",
            Some("vif.floating_ips[0].ports[0].proto"),
            "unknown variant",
        ),
        (fip(json!([map(0)])), "invalid", Some("floating_ips.ports"), "port 0"),
        (
            json!({ "vif": { "index": 5, "name": "x", "kind": "virtual", "vrf": 1, "mac": "02:00:00:00:00:99",
                             "ipv4": "10.1.0.99", "floating_ips": [{ "address": "185.22.97.9", "vrf": 1 },
                                                                   { "address": "185.22.97.9", "vrf": 1 }] } }),
            "invalid",
            Some("floating_ips"),
            "185.22.97.9 in VRF 1 is given twice",
        ),
        (fip(json!([map(80), map(443), map(80)])), "invalid", Some("floating_ips.ports"), "port 80 is forwarded twice"),
        (
            fip(Value::Array((1..=17).map(map).collect())),
            "invalid",
            Some("floating_ips.ports"),
            "17 forwarded ports; at most 16",
        ),
    ]);
    for (params, code, field, text) in cases {
        let e = api_err(c.call("add", params.clone()));
        assert_eq!(e.code, code, "{params}: {e:?}");
        if let Some(f) = field {
            assert_eq!(e.field.as_deref(), Some(f), "{params}: {e:?}");
        }
        assert!(e.message.contains(text), "{params}: {:?} lacks {text:?}", e.message);
    }
    // Deleting what is in use names the references.
    let e = api_err(c.call("delete", json!({ "nexthop": NH_A1 })));
    assert_eq!(e.code, "in_use", "{e:?}");
    assert!(e.message.contains("references"), "{}", e.message);
    let e = api_err(c.call("delete", json!({ "vif": 77 })));
    assert_eq!(e.code, "not_found");
    // Malformed lines and unknown methods.
    for (line, code) in [
        (&b"{not json"[..], "parse_error"),
        (b"[1,2,3]", "parse_error"),
        (b"{\"id\":1}", "parse_error"),
        (b"{\"id\":1,\"method\":\"frobnicate\"}", "unknown_method"),
        (b"{\"id\":1,\"method\":\"dump\",\"params\":{\"object\":\"flows\"}}", "invalid"),
        (b"{\"id\":1,\"method\":\"dump\",\"params\":{\"object\":\"route\"}}", "invalid"),
        (b"{\"id\":1,\"method\":\"batch\",\"params\":{\"ops\":[{\"add\":{\"vrf\":{\"id\":1}}}]}}", "invalid_params"),
    ] {
        let r = c.raw(line).unwrap();
        assert_eq!(r["error"]["code"], code, "{}: {r}", String::from_utf8_lossy(line));
    }
    let r = c.raw(br#"{"id":1,"method":"batch","params":{"ops":[{"add":{"discard":1}},{"add":{"vrf":{"id":"x","name":"n"}}}]}}"#).unwrap();
    assert_eq!(r["error"]["index"], 0, "a typing error in a batch names its item: {r}");
    // An oversized message is refused, read to its end, and the connection goes on.
    let big = format!(r#"{{"id":1,"method":"info","params":{{"pad":"{}"}}}}"#, "x".repeat(2 << 20));
    let r = c.raw(big.as_bytes()).unwrap();
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    assert!(c.call("info", json!({})).is_ok(), "the same connection still works");
}

#[test]
fn a_stalled_client_blocks_nobody_and_clients_work_concurrently() {
    let (_c, sock, handle) = server("concurrent");
    // Half a message, then silence: its thread waits, nobody else does.
    let mut stalled = UnixStream::connect(&sock).unwrap();
    stalled.write_all(b"{\"id\":1,\"method\":\"hello\",\"params\":{\"vers").unwrap();
    // A client that never reads its answers.
    let mut deaf = Client::connect(&sock, "deaf").unwrap();
    for _ in 0..50 {
        let _ = deaf.raw(b"{\"id\":1,\"method\":\"stats\"}");
    }
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = client(&sock);
                c.call("add", json!({ "vrf": { "id": 10 + t, "name": format!("t{t}") } })).unwrap();
                for chunk in 0..10u32 {
                    let ops: Vec<Value> = (0..100u32)
                        .map(|i| {
                            let p = format!("10.{}.{}.{}/32", 100 + t, chunk, i);
                            json!({ "add": { "route": { "vrf": 10 + t, "prefix": p, "nh": NH_A1 } } })
                        })
                        .collect();
                    c.call("batch", json!({ "ops": ops })).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = client(&sock);
    for t in 0..4u32 {
        let v = c.call("get", json!({ "vrf": 10 + t })).unwrap();
        assert_eq!(v["status"]["routes_v4"], 1000, "every client's every route landed");
    }
    assert_eq!(handle.load().nexthop_refs(NH_A1) as usize, 4000 + 3);
    drop(stalled);
}

#[test]
fn clients_beyond_the_limit_are_told_so() {
    let (_c, sock, _) = server("limit");
    let held: Vec<Client> = (0..8).map(|_| client(&sock)).collect();
    let e = match Client::connect(&sock, "one-too-many") {
        Err(ClientError::Api(e)) => e,
        Err(ClientError::Io(e)) => panic!("expected an API error, got I/O: {e}"),
        Ok(_) => panic!("a ninth client was served"),
    };
    assert_eq!(e.code, "too_many_clients");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert!(Client::connect(&sock, "again").is_ok(), "room again once others left");
}

#[test]
fn a_large_route_dump_streams_in_pages() {
    let (_c, sock, _) = server("dump");
    let mut c = client(&sock);
    c.call("add", json!({ "vrf": { "id": 9, "name": "big" } })).unwrap();
    let n = 25_000u32;
    for chunk in (0..n).step_by(5_000) {
        let ops: Vec<Value> = (chunk..chunk + 5_000)
            .map(|i| json!({ "add": { "route": { "vrf": 9, "prefix": format!("10.{}.{}.0/24", i >> 8, i & 255), "nh": 0 } } }))
            .collect();
        c.call("batch", json!({ "ops": ops })).unwrap();
    }
    let mut params = json!({ "object": "route", "vrf": 9, "limit": 10_000 });
    let mut pages = 0;
    let mut all = Vec::new();
    loop {
        let page = c.call("dump", params.clone()).unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 10_000);
        all.extend(items.iter().map(|r| r["prefix"].as_str().unwrap().to_string()));
        if page["next"].is_null() {
            break;
        }
        params["after"] = page["next"].clone();
    }
    assert_eq!((pages, all.len()), (3, n as usize));
    let parsed: Vec<std::net::Ipv4Addr> = all.iter().map(|p| p.split('/').next().unwrap().parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] < w[1]), "address order across pages");
    let e = api_err(c.call("dump", json!({ "object": "route", "vrf": 9, "after": "10.1.2.3/40" })));
    assert_eq!(e.field.as_deref(), Some("after"));
}

#[test]
fn stats_and_info_report_counters_and_occupancy() {
    let (control, sock, _) = server("stats");
    let mut s = vrouter::stats::Stats::new(limits().vifs, limits().vrfs);
    s.vifs[A1 as usize].rx_packets = 42;
    s.drops[vrouter::stats::DropReason::NoRoute as usize] = 5;
    s.vrfs[BLUE as usize].encaps = 9;
    let mut general_by_vif = vec![0; limits().vifs];
    general_by_vif[A1 as usize] = 3;
    control.stats().publish(
        0,
        &s,
        &general_by_vif,
        vrouter::stats::WorkerIo {
            rx: 42,
            busy_ns: 10,
            elapsed_ns: 100,
            general_path: 3,
            general_causes: std::array::from_fn(|c| u64::from(c == vrouter::stats::GeneralCause::TcpSyn as usize) * 3),
            flow_cache: vrouter::stats::FlowCacheCounts { hits: 30, fills: 2, forgotten: 1, renewals: 4, crowded: 3 },
            tx_dropped: 2,
            unsent: std::array::from_fn(|c| u64::from(c == vrouter::stats::Unsent::HandoffFull as usize) * 2),
            ..Default::default()
        },
    );
    let mut c = client(&sock);
    let st = c.call("stats", json!({})).unwrap();
    let a1 = st["vifs"].as_array().unwrap().iter().find(|v| v["index"] == A1).unwrap();
    assert_eq!((&a1["rx_packets"], &a1["general_path"]), (&json!(42), &json!(3)));
    let nr = st["drops"].as_array().unwrap().iter().find(|d| d["reason"] == "no_route").unwrap();
    assert_eq!(nr["count"], 5);
    assert_eq!(st["drops"].as_array().unwrap().len(), vrouter::stats::DropReason::COUNT, "every reason, zero or not");
    let blue = st["vrfs"].as_array().unwrap().iter().find(|v| v["id"] == BLUE).unwrap();
    assert_eq!(blue["encaps"], 9);
    assert_eq!(st["workers"][0]["busy_ns"], 10);
    assert_eq!(st["workers"][0]["general_path"], 3);
    let causes = st["workers"][0]["general_causes"].as_object().unwrap();
    assert_eq!(causes.len(), vrouter::stats::GeneralCause::COUNT, "every cause, zero or not");
    assert_eq!((causes["tcp_syn"].as_u64(), causes["arp"].as_u64()), (Some(3), Some(0)));
    let cache = &st["workers"][0]["flow_cache"];
    assert_eq!(cache, &json!({ "hits": 30, "fills": 2, "forgotten": 1, "renewals": 4, "crowded": 3 }));
    let unsent = st["workers"][0]["unsent"].as_object().unwrap();
    assert_eq!(unsent.len(), vrouter::stats::Unsent::COUNT, "every cause, zero or not");
    assert_eq!((unsent["handoff_full"].as_u64(), unsent["no_frame"].as_u64()), (Some(2), Some(0)));
    let status = c.call("get", json!({ "vif": A1 })).unwrap()["status"].clone();
    assert_eq!((&status["rx_packets"], &status["general_path"]), (&json!(42), &json!(3)));
    let listed = c.call("dump", json!({ "object": "vif" })).unwrap()["items"].clone();
    let a1 = listed.as_array().unwrap().iter().find(|v| v["index"] == A1).unwrap();
    assert_eq!(a1["status"]["general_path"], 3);
    let info = c.call("info", json!({})).unwrap();
    let table = |n: &str| info["tables"].as_array().unwrap().iter().find(|t| t["table"] == n).unwrap().clone();
    assert_eq!(table("vifs")["used"], 5);
    assert_eq!(table("vifs")["capacity"], 64);
    assert_eq!(
        table("routes")["used"],
        lab_ops().iter().filter(|o| matches!(o, vrouter::tables::Op::Add(vrouter::tables::Object::Route(_)))).count()
    );
    assert_eq!(info["limits"]["labels"], 1024);
    let vrfs = c.call("dump", json!({ "object": "vrf" })).unwrap()["items"].clone();
    let route_bytes: u64 = vrfs.as_array().unwrap().iter().map(|v| v["status"]["memory_bytes"].as_u64().unwrap()).sum();
    let (spares, pooled) = {
        let st = control.lock();
        (st.writer.spare_bytes(), st.writer.pooled_node_bytes())
    };
    assert!(route_bytes > 0);
    assert_eq!(
        info["memory"],
        json!({ "routes_bytes": route_bytes, "writer_spare_bytes": spares, "writer_pooled_bytes": pooled })
    );

    // A vif added where another was counts from zero; updated, it keeps its counts.
    let vif = |name: &str| json!({ "vif": { "index": 20, "name": name, "kind": "virtual", "vrf": BLUE, "mac": "02:00:00:00:00:20" } });
    c.call("add", vif("veth-old")).unwrap();
    s.vifs[20].rx_packets = 500;
    s.vif_drops.resize(21, [0; vrouter::stats::DropReason::COUNT]);
    s.vif_drops[20][vrouter::stats::DropReason::NoRoute as usize] = 7;
    general_by_vif[20] = 40;
    control.stats().publish(0, &s, &general_by_vif, vrouter::stats::WorkerIo::default());
    let counted = |c: &mut vrouter::api::client::Client| {
        let st = c.call("get", json!({ "vif": 20 })).unwrap()["status"].clone();
        (st["rx_packets"].as_u64().unwrap(), st["drop_reasons"].clone(), st["general_path"].as_u64().unwrap())
    };
    assert_eq!(counted(&mut c), (500, json!({ "no_route": 7 }), 40));
    c.call("update", vif("veth-renamed")).unwrap();
    assert_eq!(counted(&mut c), (500, json!({ "no_route": 7 }), 40), "the same vif, updated");
    c.call("delete", json!({ "vif": 20 })).unwrap();
    c.call("add", vif("veth-new")).unwrap();
    assert_eq!(counted(&mut c), (0, json!({}), 0), "a new vif at the index");
    s.vifs[20].rx_packets += 3;
    general_by_vif[20] += 2;
    control.stats().publish(0, &s, &general_by_vif, vrouter::stats::WorkerIo::default());
    assert_eq!((counted(&mut c).0, counted(&mut c).2), (3, 2), "its own frames");
}

/// Forwards a fixed stream of frames from a1 to a2 on another thread while a client
/// adds 100,000 unrelated routes and removes them again, in batches. Every
/// frame must reach a1: not one lost or misrouted across some 40 publishes.
#[test]
fn flows_unrelated_to_a_route_load_lose_no_packet() {
    let (_c, sock, handle) = server("churn");
    let done = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let done = Arc::clone(&done);
        let handle = handle.clone();
        std::thread::spawn(move || {
            let mut pipeline = Pipeline::new(PipelineConfig::default(), handle.load().limits());
            let frame = vrouter::pktgen::build::udp4_frame(from_a1(), a1_ip(), a2_ip(), 1000, 2000, 64, 64);
            let (mut sent, mut delivered, mut generations) = (0u64, 0u64, std::collections::BTreeSet::new());
            let mut batch: Vec<Frame<Vec<u8>>> = Vec::new();
            while !done.load(Ordering::Relaxed) || sent < 100_000 {
                batch.clear();
                for _ in 0..32 {
                    let mut buf = vec![0u8; 512];
                    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
                    batch.push(Frame::new(buf, HEADROOM, frame.len(), A1).unwrap());
                }
                let tables = handle.load();
                generations.insert(tables.generation());
                let mut spill = Spill::with_buffers(Vec::new(), HEADROOM);
                pipeline.process(&tables, &mut batch, &mut spill);
                sent += batch.len() as u64;
                delivered += batch.iter().filter(|f| f.verdict == Verdict::Tx(A2)).count() as u64;
            }
            (sent, delivered, generations.len(), pipeline.stats().total_drops())
        })
    };
    let mut c = client(&sock);
    c.call("add", json!({ "vrf": { "id": 12, "name": "churn" } })).unwrap();
    let prefix = |i: u32| format!("10.{}.{}.{}/32", 128 + (i >> 16), (i >> 8) & 255, i & 255);
    for add in [true, false] {
        for chunk in (0..100_000u32).step_by(5_000) {
            let ops: Vec<Value> = (chunk..chunk + 5_000)
                .map(|i| {
                    if add {
                        json!({ "add": { "route": { "vrf": 12, "prefix": prefix(i), "nh": NH_UDP, "label": 77 } } })
                    } else {
                        json!({ "delete": { "route": { "vrf": 12, "prefix": prefix(i) } } })
                    }
                })
                .collect();
            c.call("batch", json!({ "ops": ops })).unwrap();
        }
        if add {
            assert_eq!(c.call("get", json!({ "vrf": 12 })).unwrap()["status"]["routes_v4"], 100_000);
        }
    }
    done.store(true, Ordering::Relaxed);
    let (sent, delivered, generations, drops) = forwarder.join().unwrap();
    assert_eq!(c.call("get", json!({ "vrf": 12 })).unwrap()["status"]["routes_v4"], 0);
    assert!(generations > 10, "the forwarder saw the tables change under it ({generations} generations)");
    assert_eq!(delivered, sent, "every frame of the unrelated flow reached a2");
    assert_eq!(drops, 0);
}

/// `docs/api.md` shows requests (`→`) and answers (`←`). They are sent, in
/// order, to a fresh server; each answer must match the documented one:
/// the same keys and values (but for what differs per run), and for errors
/// the same code and message.
#[test]
fn docs_examples_are_true() {
    let doc = include_str!("../docs/api.md");
    let (writer, _) = TablesWriter::new(Limits::default());
    let control = Arc::new(docs_control(writer, 8, 8));
    let sock = Scratch::socket("docs");
    let listener = vrouter::api::server::bind(&sock, None).unwrap();
    vrouter::api::server::spawn(control, listener, 8).unwrap();
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut read = std::io::BufReader::new(s.try_clone().unwrap());
    let mut pairs = 0;
    let mut lines = doc.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(req) = l.strip_prefix("→ ") else { continue };
        let want = lines.next().and_then(|n| n.strip_prefix("← ")).unwrap_or_else(|| panic!("no ← after {req}"));
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut got = String::new();
        std::io::BufRead::read_line(&mut read, &mut got).unwrap();
        let got: Value = serde_json::from_str(&got).unwrap();
        let want: Value = serde_json::from_str(want).unwrap_or_else(|e| panic!("docs: bad JSON after {req}: {e}"));
        if let Some(e) = want.get("error") {
            assert_eq!(got["error"]["code"], e["code"], "{req}\n got {got}");
            let (g, w) = (got["error"]["message"].as_str().unwrap(), e["message"].as_str().unwrap());
            assert!(g.starts_with(w), "{req}\n documented message {w:?}\n actual {g:?}");
        } else {
            assert!(got.get("error").is_none(), "{req}\n got {got}");
            same_shape(&want["result"], &got["result"], req);
        }
        pairs += 1;
    }
    assert!(pairs >= 34, "the examples were found ({pairs})");
}

/// `got` has every key of `want`, with equal values, except values that
/// differ from run to run; an empty array or object in `want` stands for any.
fn same_shape(want: &Value, got: &Value, ctx: &str) {
    const VOLATILE: [&str; 4] = ["boot_id", "uptime_s", "server", "version"];
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g.get(k).unwrap_or_else(|| panic!("{ctx}\n no key {k:?} in {got}"));
                if !VOLATILE.contains(&k.as_str()) {
                    same_shape(wv, gv, ctx);
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.is_empty() => {
            let _ = g;
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{ctx}\n want {want}\n got {got}");
            for (a, b) in w.iter().zip(g) {
                same_shape(a, b, ctx);
            }
        }
        (w, g) => assert_eq!(w, g, "{ctx}"),
    }
}

/// The docs' socat recipe works: newline-delimited JSON needs nothing more.
#[test]
fn socat_speaks_the_api() {
    if Command::new("socat").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs socat (tools/test), so this test must run there");
        eprintln!("SKIPPED: socat is not installed");
        return;
    }
    let (_c, sock, _) = server("socat");
    let script = format!(
        "printf '%s\\n' '{}' '{}' '{}' | socat -t 2 - UNIX-CONNECT:{}",
        r#"{"id":1,"method":"hello","params":{"version":1,"client":"socat"}}"#,
        r#"{"id":2,"method":"info"}"#,
        r#"{"id":3,"method":"dump","params":{"object":"vif"}}"#,
        sock.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 3, "{text}");
    assert_eq!(answers[1]["result"]["api_version"], 1);
    assert_eq!(answers[2]["result"]["items"].as_array().unwrap().len(), 5);
}

#[test]
fn the_socket_is_0660_and_owned_by_the_configured_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = Scratch::dir("group");
    let sock = dir.join("api.sock");
    let group = std::fs::read_to_string("/etc/group").unwrap();
    let (name, gid) = group
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2).then(|| (f[0].to_string(), f[2].parse::<u32>().ok()))
        })
        .and_then(|(n, g)| g.map(|g| (n, g)))
        .unwrap();
    let listener = vrouter::api::server::bind(&sock, Some(&name));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _l = listener.unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o660, gid));
        // A live socket is not taken over by a second server.
        let e = vrouter::api::server::bind(&sock, None).unwrap_err();
        assert!(e.contains("another vrouterd"), "{e}");
    }
    let e = vrouter::api::server::bind(&dir.join("other.sock"), Some("no-such-group-here")).unwrap_err();
    assert!(e.contains("no group named"), "{e}");
}

#[test]
fn policies_are_objects_like_any_other() {
    let (_c, sock, handle) = server("policy");
    let mut c = client(&sock);
    let policy = json!({ "vrf": BLUE, "default": "deny", "rules": [
        { "src": { "network": BLUE }, "dst": "10.254.98.15/32", "proto": "tcp", "dport": 80, "action": "allow" },
        { "dst": "10.0.0.0/8", "proto": 17, "sport": "1000-2000", "action": "deny" },
    ] });
    c.call("add", json!({ "policy": policy.clone() })).unwrap();
    let mut got = c.call("get", json!({ "policy": BLUE })).unwrap();
    assert_eq!(got["status"]["generation"], 1);
    got.as_object_mut().unwrap().remove("status");
    let mut want = policy.clone();
    want["rules"][1]["src"] = json!("any");
    want["rules"][1]["proto"] = json!("udp");
    assert_eq!(got, want, "reads back as written, with defaults spelled out");
    assert_eq!(handle.load().vrf(BLUE).unwrap().policy.as_ref().unwrap().compiled.len(), 2);
    let e = api_err(c.call("add", json!({ "policy": policy.clone() })));
    assert_eq!(e.code, "exists");
    c.call("update", json!({ "policy": { "vrf": BLUE, "default": "allow" } })).unwrap();
    assert_eq!(c.call("get", json!({ "policy": BLUE })).unwrap()["status"]["generation"], 2, "a change bumps it");
    assert_eq!(c.dump_all(json!({ "object": "policy" })).unwrap().len(), 1);
    for (bad, code, field) in [
        (json!({ "vrf": 99, "default": "deny" }), "missing_reference", "vrf"),
        (
            json!({ "vrf": RED, "default": "deny", "rules": [{ "dst": "10.0.0.1/8", "action": "allow" }] }),
            "invalid",
            "dst",
        ),
        (
            json!({ "vrf": RED, "default": "deny", "rules": [{ "proto": "sctp", "action": "allow" }] }),
            "invalid",
            "proto",
        ),
        (
            json!({ "vrf": RED, "default": "deny", "rules": [{ "dport": "90-80", "action": "allow" }] }),
            "invalid",
            "dport",
        ),
        (json!({ "vrf": RED, "default": "maybe" }), "invalid_params", "policy.default"),
    ] {
        let e = api_err(c.call("add", json!({ "policy": bad.clone() })));
        assert_eq!((e.code.as_str(), e.field.as_deref()), (code, Some(field)), "{bad}: {e:?}");
    }
    c.call("delete", json!({ "policy": BLUE })).unwrap();
    assert!(handle.load().vrf(BLUE).unwrap().policy.is_none());
    assert_eq!(api_err(c.call("delete", json!({ "policy": BLUE }))).code, "not_found");
    let e = api_err(c.call("flow.list", json!({})));
    assert!(e.message.contains("no flow table"), "a server without flows says so: {e:?}");
}

/// Replaces one value somewhere in `v` (or drops a member) with something
/// an API must refuse or survive: wrong types, huge and negative numbers,
/// odd addresses and prefixes, long strings.
fn mutate(v: &mut Value, rng: &mut Rng) {
    let odd = [
        json!(null),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(u32::MAX),
        json!(4_294_967_296u64),
        json!(1e308),
        json!(true),
        json!(""),
        json!("x".repeat(5000)),
        json!("10.0.0.0/33"),
        json!("::/129"),
        json!("255.255.255.255"),
        json!("fe80::1%eth0"),
        json!("1-0"),
        json!("65535-65536"),
        json!([]),
        json!({}),
        json!([1, 2, 3]),
        json!({ "network": 99999 }),
    ];
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, odd[rng.below(odd.len())].clone());
                }
                _ => mutate(m.get_mut(&k).unwrap(), rng),
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            if rng.below(3) == 0 {
                a.push(a[i].clone());
            } else {
                mutate(&mut a[i], rng);
            }
        }
        _ => *v = odd[rng.below(odd.len())].clone(),
    }
}

/// Every request gets an answer, an error or a result, and never a panic:
/// about 20,000 requests of every method and object (the flow methods on a
/// flow table with pairs in it), every other round each with a value or
/// two made wrong (or a member dropped), applied to one server in turn.
/// (It found `flow.get` with an index past the table panicking.)
/// Afterwards the server still works, and the data path's tables are
/// still whole.
/// A capture (`vrctl vifdump`) belongs to the connection that started it:
/// one each, four at most on a node, each taking only its vif's frames
/// with what became of them, and stopped when its connection closes.
#[test]
fn captures_belong_to_their_connection_and_are_bounded() {
    use vrouter::capture::{Tap, SESSIONS};
    // A server with no tap says so.
    let (_, sock, _) = server("capture");
    let mut plain = client(&sock);
    assert_eq!(api_err(plain.call("capture.start", json!({ "vif": A1 }))).message, "this vrouterd captures nothing");

    let tap = Arc::new(Tap::new());
    let (_, sock, _) = server_with("tap", |c| c.with_tap(Arc::clone(&tap)));

    let mut c = client(&sock);
    assert_eq!(api_err(c.call("capture.read", json!({}))).code, "not_found");
    let e = api_err(c.call("capture.start", json!({ "vif": 60 })));
    assert_eq!((e.code.as_str(), e.field.as_deref()), ("missing_reference", Some("vif")));
    let e = api_err(c.call("capture.start", json!({ "vif": A1, "snaplen": 0 })));
    assert_eq!((e.code.as_str(), e.field.as_deref()), ("out_of_range", Some("snaplen")));
    assert!(!tap.armed(), "nothing started");
    let started = c.call("capture.start", json!({ "vif": A1, "snaplen": 64 })).unwrap();
    assert_eq!((started["vif"].as_u64(), started["snaplen"].as_u64()), (Some(u64::from(A1)), Some(64)));
    assert_eq!(api_err(c.call("capture.start", json!({ "vif": A2 }))).code, "exists");

    // What a worker does: a frame sent out of A1, one received with its verdict, one of another vif.
    let frame: Vec<u8> = (0..100).collect();
    tap.sent(A1, &frame, 5);
    let mut staged = Vec::with_capacity(SESSIONS);
    tap.stage(A1, 0, &frame, 6, &mut staged);
    tap.stage(A2, 1, &frame, 6, &mut staged);
    let no_route =
        (Some(Verdict::Drop(vrouter::stats::DropReason::NoRoute)), Some(vrouter::stats::GeneralCause::NoRoute));
    tap.post_staged(&mut staged, |_| no_route);
    let read = c.call("capture.read", json!({})).unwrap();
    let packets = read["packets"].as_array().unwrap();
    assert_eq!(packets.len(), 2, "{read}");
    assert_eq!((packets[0]["dir"].as_str(), packets[0]["len"].as_u64()), (Some("out"), Some(frame.len() as u64)));
    assert_eq!(packets[0]["data"].as_str().unwrap(), vrouter::capture::to_hex(&frame[..64]), "cut at 64 bytes");
    assert!(packets[0].get("verdict").is_none() && packets[0].get("general").is_none(), "a sent frame has none");
    assert_eq!(packets[1]["verdict"], json!({ "action": "drop", "reason": "no_route" }));
    assert_eq!(packets[1]["general"], "no_route", "and why it took the general path");
    assert_eq!((packets[1]["dir"].as_str(), packets[1]["time_ns"].as_u64()), (Some("in"), Some(6)));
    assert_eq!(read["missed"], 0);

    // A filter, as flow.list's match: addresses, ports and a protocol,
    // never a vrf or vif (a capture is of one vif).
    let mut m = client(&sock);
    let e = api_err(m.call("capture.start", json!({ "vif": A1, "match": { "vrf": 1 } })));
    assert_eq!((e.code.as_str(), e.field.as_deref()), ("invalid", Some("match.vrf")));
    let e = api_err(m.call("capture.start", json!({ "vif": A1, "match": { "proto": "nonsense" } })));
    assert_eq!(e.field.as_deref(), Some("match.proto"));
    m.call("capture.start", json!({ "vif": A1, "match": { "port": 53, "proto": "udp" } })).unwrap();
    let dns = vrouter::pktgen::build::ip_frame(
        from_a1(),
        &vrouter::pktgen::build::ipv4(a1_ip(), a2_ip(), 17, 64, false, &[0x30, 0x39, 0, 53, 0, 8, 0, 0]),
    );
    tap.sent(A1, &frame, 7);
    tap.sent(A1, &dns, 8);
    let kept = m.call("capture.read", json!({})).unwrap();
    let times: Vec<u64> = kept["packets"].as_array().unwrap().iter().map(|p| p["time_ns"].as_u64().unwrap()).collect();
    assert_eq!(times, [8], "only the DNS query: {kept}");
    assert_eq!(c.call("capture.read", json!({})).unwrap()["packets"].as_array().unwrap().len(), 2, "c keeps all");
    m.call("capture.stop", json!({})).unwrap();
    c.call("capture.read", json!({})).unwrap();

    // `general`: only the received frames the fast lane left to the
    // general path; c, which asked for all, gets the others too.
    let mut g = client(&sock);
    let started = g.call("capture.start", json!({ "vif": A1, "general": true })).unwrap();
    assert_eq!(started["general"], true);
    tap.sent(A1, &frame, 9);
    let mut staged = Vec::with_capacity(SESSIONS * 2);
    tap.stage(A1, 0, &frame, 10, &mut staged);
    tap.stage(A1, 1, &dns, 11, &mut staged);
    tap.post_staged(&mut staged, |at| {
        (Some(Verdict::Tx(A2)), (at == 1).then_some(vrouter::stats::GeneralCause::NewFlow))
    });
    let kept = g.call("capture.read", json!({})).unwrap();
    let packets = kept["packets"].as_array().unwrap();
    assert_eq!(packets.len(), 1, "{kept}");
    assert_eq!((packets[0]["time_ns"].as_u64(), packets[0]["general"].as_str()), (Some(11), Some("new_flow")));
    assert_eq!(c.call("capture.read", json!({})).unwrap()["packets"].as_array().unwrap().len(), 3, "c keeps all");
    g.call("capture.stop", json!({})).unwrap();

    // A vif that goes ends its capture.
    let mut gone = client(&sock);
    gone.call("capture.start", json!({ "vif": DISABLED })).unwrap();
    gone.call(
        "batch",
        json!({ "ops": [
            { "delete": { "route": { "vrf": BLUE, "prefix": "10.77.0.0/16" } } },
            { "delete": { "nexthop": NH_MISSING_OIF } },
            { "delete": { "vif": DISABLED } },
        ] }),
    )
    .unwrap();
    let e = api_err(gone.call("capture.read", json!({})));
    assert_eq!((e.code.as_str(), e.message.as_str()), ("not_found", "vif 4 (veth-off) is gone; its capture stopped"));
    assert_eq!(gone.call("capture.stop", json!({})).unwrap()["stopped"], false, "already stopped");

    // Four at most, on the node; a fifth is told.
    let mut others: Vec<Client> = (1..SESSIONS).map(|_| client(&sock)).collect();
    for o in &mut others {
        o.call("capture.start", json!({ "vif": A2 })).unwrap();
    }
    let mut fifth = client(&sock);
    assert_eq!(api_err(fifth.call("capture.start", json!({ "vif": A2 }))).code, "full");
    // Stopping frees a place, and so does closing a connection.
    assert_eq!(c.call("capture.stop", json!({})).unwrap()["stopped"], true);
    assert_eq!(c.call("capture.stop", json!({})).unwrap()["stopped"], false);
    fifth.call("capture.start", json!({ "vif": A2 })).unwrap();
    drop(others);
    drop(fifth);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tap.armed() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!tap.armed(), "closed connections stop their captures");
}

#[test]
fn mutated_requests_get_answers_never_panics() {
    let (mut writer, handle) = TablesWriter::new(limits());
    writer.apply(&lab_ops()).unwrap();
    let board = StatsBoard::new(1, limits().vifs, limits().vrfs);
    let node =
        NodeInfo { boot_id: NodeInfo::new_boot_id(), underlay: node_ip(), fabric: "eth0".into(), cores: vec![0] };
    // A flow table with a few pairs, for the flow methods.
    use vrouter::flow::{DirSpec, FlowAction, FlowConfig, FlowKey, FlowTable};
    let flows = Arc::new(FlowTable::new(FlowConfig { capacity: 1000, ..FlowConfig::default() }, 64, 16));
    let slots: Vec<u32> = (0..20u16)
        .map(|p| {
            let key = FlowKey::v4(BLUE, 6, u32::from(a1_ip()), u32::from(a2_ip()), 1000 + p, 80);
            let (f, r) = (DirSpec::new(key, FlowAction::Forward), DirSpec::new(key.reversed(), FlowAction::Forward));
            flows.create(&f, &r, A1, 0, 0).unwrap().slot
        })
        .collect();
    let control = Control::new(writer, Defaults { router_mac: router_mac(), underlay: node_ip() }, board, node)
        .with_flows(flows, std::time::Instant::now())
        .with_tap(Arc::new(vrouter::capture::Tap::new()));
    let mut session = vrouter::api::server::Session::default();
    let ask = |session: &mut vrouter::api::server::Session, req: &Value| -> Value {
        let line = req.to_string();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| control.handle(session, line.as_bytes())))
            .unwrap_or_else(|_| panic!("the server panicked on {line}"));
        let answer: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: no JSON answer to {line}"));
        assert!(answer.get("result").is_some() != answer.get("error").is_some(), "{line} -> {answer}");
        answer
    };
    assert!(ask(&mut session, &json!({ "id": 0, "method": "hello", "params": { "version": 1 } }))
        .get("result")
        .is_some());
    let objects = [
        json!({ "vrf": { "id": 7, "name": "green", "gateway_v4": "10.7.0.1", "gateway_v6": "fd07::1" } }),
        json!({ "vif": { "index": 9, "name": "veth-g1", "kind": "virtual", "vrf": 7, "mac": "02:00:00:00:07:01",
                         "ipv4": "10.7.0.2", "ipv6": "fd07::2", "mtu": 9000, "proxy_arp": true, "mss_clamp": false,
                         "disabled": false, "source_check": true,
                         "floating_ips": [{ "address": "185.22.97.9", "vrf": 7,
                                            "ports": [{ "proto": "tcp", "port": 80, "target": 8080 }] }] } }),
        json!({ "nexthop": { "type": "encap", "id": 70, "oif": 9, "dmac": "02:00:00:00:07:01" } }),
        json!({ "nexthop": { "type": "tunnel", "id": 71, "oif": 0, "encap": "mpls-o-gre", "dip": "192.168.0.9",
                             "dmac": "02:fa:00:00:00:09" } }),
        json!({ "nexthop": { "type": "composite-ecmp", "id": 72, "members": [ { "nh": 70 }, { "nh": 71, "label": 500 } ] } }),
        json!({ "nexthop": { "type": "vrf-lookup", "id": 73, "vrf": 7 } }),
        json!({ "label": { "label": 700, "nh": 70 } }),
        json!({ "route": { "vrf": 7, "prefix": "10.7.0.2/32", "nh": 70 } }),
        json!({ "route": { "vrf": 7, "prefix": "fd07::/64", "nh": 72 } }),
        json!({ "policy": { "vrf": 7, "default": "deny", "rules": [
            { "src": "any", "dst": { "network": 7 }, "proto": "tcp", "sport": "1000-2000", "dport": 80, "action": "allow" },
            { "src": "10.7.0.0/16", "dst": "fd07::/64", "action": "deny" } ] } }),
    ];
    let key_of = |o: &Value| {
        let (kind, body) = o.as_object().unwrap().iter().next().unwrap();
        match kind.as_str() {
            "vrf" => json!({ "vrf": body["id"] }),
            "vif" => json!({ "vif": body["index"] }),
            "nexthop" => json!({ "nexthop": body["id"] }),
            "label" => json!({ "label": body["label"] }),
            "policy" => json!({ "policy": body["vrf"] }),
            _ => json!({ "route": { "vrf": body["vrf"], "prefix": body["prefix"] } }),
        }
    };
    let mut requests = vec![
        json!({ "method": "info", "params": {} }),
        json!({ "method": "stats", "params": {} }),
        json!({ "method": "lookup", "params": { "vrf": 1, "address": "10.1.0.2" } }),
        json!({ "method": "dump", "params": { "object": "route", "vrf": 1, "limit": 2, "after": "10.1.1.0/24" } }),
        json!({ "method": "dump", "params": { "object": "vif" } }),
        json!({ "method": "flow.list", "params": {
            "match": { "ip": "10.1.0.2", "port": 80, "vrf": 1, "proto": "tcp", "vif": A1 }, "limit": 10 } }),
        json!({ "method": "flow.get", "params": { "index": slots[3] } }),
        json!({ "method": "flow.stats", "params": {} }),
        json!({ "method": "flow.delete", "params": { "index": slots[4] } }),
        json!({ "method": "capture.start", "params": { "vif": A1, "snaplen": 128, "match": { "ip": "10.1.0.2", "port": 53 } } }),
        json!({ "method": "capture.read", "params": { "max_packets": 10 } }),
        json!({ "method": "trace", "params": { "vif": A1, "dst": "10.1.0.3", "proto": "tcp", "sport": 1, "dport": 2 } }),
        json!({ "method": "trace", "params": { "vif": 0, "dst": "10.7.0.2", "src": "203.0.113.7", "label": 700,
                                                "encap": "mpls-o-gre", "from": "192.168.0.9", "proto": "icmp" } }),
        json!({ "method": "capture.stop", "params": {} }),
    ];
    for o in &objects {
        requests.push(json!({ "method": "add", "params": o }));
        requests.push(json!({ "method": "update", "params": o }));
        requests.push(json!({ "method": "get", "params": key_of(o) }));
        requests.push(json!({ "method": "batch", "params": { "ops": [{ "update": o }] } }));
    }
    for o in objects.iter().rev() {
        requests.push(json!({ "method": "delete", "params": key_of(o) }));
    }
    requests.push(json!({ "method": "flow.flush", "params": {} }));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut results, mut errors) = (0, 0);
    for round in 0..400 {
        for (i, r) in requests.iter().enumerate() {
            let mut req = r.clone();
            req["id"] = json!(round * 1000 + i);
            // Every other round, each request unchanged: so that the
            // objects exist for the mutated updates and deletes of the next.
            if round % 2 == 1 {
                for _ in 0..=rng.below(2) {
                    mutate(&mut req["params"], &mut rng);
                }
            }
            let answer = ask(&mut session, &req);
            match answer.get("result") {
                Some(_) => results += 1,
                None if round == 0 => panic!("the unchanged request {req} failed: {answer}"),
                None => errors += 1,
            }
        }
    }
    assert!(results > 100 && errors > 100, "both kinds of answer: {results} results, {errors} errors");
    // Still serving, and the lab's tables are whole.
    let info = ask(&mut session, &json!({ "id": 1, "method": "info", "params": {} }));
    assert!(info.get("result").is_some(), "{info}");
    assert_eq!(handle.load().vrf(BLUE).unwrap().v4.lookup(u32::from(a1_ip())).map(|t| t.nh), Some(NH_A1));
}

/// A client sees at once, without a call and without waiting, that
/// vrouterd closed its connection (the agent's cue that vrouterd
/// restarted with empty tables), and a connection that is open is not
/// taken for closed, nor loses what the server sent meanwhile.
#[test]
fn a_client_sees_its_connection_closed_without_a_call() {
    let path = Scratch::socket("closed");
    let listener = std::os::unix::net::UnixListener::bind(&*path).unwrap();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        w.write_all(b"{\"id\":1,\"result\":{\"boot_id\":\"b1\"}}\n").unwrap();
        line.clear();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        // The answer written before the client reads it.
        w.write_all(b"{\"id\":2,\"result\":{\"n\":7}}\n").unwrap();
        close_rx.recv().unwrap();
    });
    let mut c = Client::connect(&path, "test").unwrap();
    c.set_timeout(Some(Duration::from_secs(5)));
    assert_eq!(c.boot_id(), "b1");
    assert!(!c.closed(), "open, nothing sent");
    c.send_call("info", "{}").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!c.closed(), "open, an answer waiting");
    assert_eq!(c.receive_result().unwrap()["n"], 7, "the answer kept for the call");
    close_tx.send(()).unwrap();
    server.join().unwrap();
    assert!(c.closed(), "closed by the server");
}
