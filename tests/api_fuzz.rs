//! No API request can make the control plane panic or answer with anything
//! but one JSON reply: `docs/api.md`'s requests, replayed to build real
//! tables, then mutated (values of every JSON type and edge, keys dropped,
//! arrays grown, unknown keys added) and sent in-process. Each must get one
//! JSON answer, a result or an error with a code and a message, and the
//! tables must still dump whole. A tenth of `VROUTER_FUZZ_CASES` sets how
//! many (default 20,000; `tools/test` runs 300,000 in release mode),
//! `VROUTER_FUZZ_SEED` the seed.

mod common;

use common::*;
use serde_json::{json, Value};
use vrouter::api::server::Session;
use vrouter::tables::{Limits, TablesWriter};

/// Values that sit on an edge somewhere: of a type, a width, a range.
fn edge(rng: &mut Rng) -> Value {
    let long = "x".repeat(5000);
    let picks = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(15),
        json!(16),
        json!(255),
        json!(256),
        json!(4095),
        json!(65535),
        json!(65536),
        json!(1048575),
        json!(1048576),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(1e308),
        json!(""),
        json!("x"),
        json!(long),
        json!([]),
        json!({}),
        json!("0.0.0.0/0"),
        json!("255.255.255.255/32"),
        json!("10.0.0.0/33"),
        json!("::/0"),
        json!("::/129"),
        json!("ffff::1"),
        json!("10.1.0.2:65535"),
        json!("ff:ff:ff:ff:ff:ff"),
        json!("00:00:00:00:00:00"),
        json!("tcp"),
        json!("icmp"),
        json!("allow"),
        json!("deny"),
        json!("virtual"),
        json!("fabric"),
        json!("composite-ecmp"),
        json!("vrf-lookup"),
        json!(-0.0),
        json!("\u{0}"),
        json!("é"),
    ];
    picks[rng.below(picks.len())].clone()
}

/// Every value's place in `v`, as a path of keys and indexes.
fn places(v: &Value, at: &mut Vec<Vec<Value>>, path: Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(json!(k));
                places(c, at, p);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = path.clone();
                p.push(json!(i));
                places(c, at, p);
            }
        }
        _ => {}
    }
    at.push(path);
}

fn at_mut<'v>(v: &'v mut Value, path: &[Value]) -> &'v mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(k) => &mut v[k.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

fn mutate(rng: &mut Rng, mut req: Value) -> Value {
    for _ in 0..1 + rng.below(3) {
        let mut at = Vec::new();
        places(&req, &mut at, Vec::new());
        let path = at[rng.below(at.len())].clone();
        if path.is_empty() {
            continue;
        }
        let (parent, last) = path.split_at(path.len() - 1);
        match rng.below(6) {
            // Drop it.
            0 => match (at_mut(&mut req, parent), &last[0]) {
                (Value::Object(m), Value::String(k)) => {
                    m.remove(k);
                }
                (Value::Array(a), Value::Number(i)) => {
                    a.remove(i.as_u64().unwrap() as usize);
                }
                _ => {}
            },
            // Repeat it, many times, in its array.
            1 => {
                if let Value::Array(a) = at_mut(&mut req, parent) {
                    let i = last[0].as_u64().unwrap() as usize;
                    let copy = a[i].clone();
                    for _ in 0..1 + rng.below(40) {
                        a.push(copy.clone());
                    }
                }
            }
            // A number nudged by one either way.
            2 => {
                let v = at_mut(&mut req, &path);
                if let Some(n) = v.as_i64() {
                    *v = json!(n.saturating_add(if rng.below(2) == 0 { 1 } else { -1 }));
                } else {
                    *v = edge(rng);
                }
            }
            // An unknown key beside it.
            3 => {
                if let Value::Object(m) = at_mut(&mut req, parent) {
                    m.insert("unexpected".into(), edge(rng));
                }
            }
            _ => *at_mut(&mut req, &path) = edge(rng),
        }
    }
    req
}

fn cases() -> usize {
    std::env::var("VROUTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(20_000, |n: usize| n / 10)
}

fn seed() -> u64 {
    std::env::var("VROUTER_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x00c0_ffee)
}

#[test]
fn mutated_api_requests_get_one_answer_and_never_break_the_server() {
    let doc = include_str!("../docs/api.md");
    let corpus: Vec<Value> =
        doc.lines().filter_map(|l| l.strip_prefix("→ ")).filter_map(|r| serde_json::from_str(r).ok()).collect();
    assert!(corpus.len() >= 34, "the docs' requests were found ({})", corpus.len());
    let (writer, _) =
        TablesWriter::new(Limits { vifs: 64, vrfs: 64, nexthops: 1024, labels: 4096, routes_per_vrf: 10_000 });
    let control = docs_control(writer, 64, 64);
    let mut session = Session::default();
    let ask = |session: &mut Session, req: &Value| -> Value {
        let line = serde_json::to_vec(req).unwrap();
        let reply = control.handle(session, &line);
        let r: Value = serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("not JSON ({e}) for {req}: {}", String::from_utf8_lossy(&reply)));
        assert!(r.get("result").is_some() != r.get("error").is_some(), "one of result and error for {req}: {r}");
        if let Some(e) = r.get("error") {
            assert!(e["code"].is_string() && !e["message"].as_str().unwrap_or("").is_empty(), "{req}: {r}");
        }
        r
    };
    for req in &corpus {
        ask(&mut session, req);
    }
    let mut rng = Rng(seed());
    let mut errors = 0usize;
    let n = cases();
    for i in 0..n {
        let pick = corpus[rng.below(corpus.len())].clone();
        let req = mutate(&mut rng, pick);
        let r = ask(&mut session, &req);
        if r.get("error").is_some() {
            errors += 1;
        }
        // Whatever was accepted left the tables whole: every table dumps.
        if i % 500 == 0 {
            for object in ["vif", "vrf", "nexthop", "label", "policy"] {
                let r = ask(&mut session, &json!({"id": 0, "method": "dump", "params": {"object": object}}));
                assert!(r.get("result").is_some(), "dump {object} after case {i}: {r}");
            }
        }
    }
    eprintln!("{n} mutated requests, {errors} refused");
    assert!(errors > n / 10 && errors < n, "the mutations reach both answers ({errors} of {n} refused)");
}
