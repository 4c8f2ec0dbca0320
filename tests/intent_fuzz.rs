//! Whatever intent the agent accepts, vrouterd accepts, and one pass brings
//! it there; whatever it refuses, it says why, and nothing panics.
//! `packaging/intent.toml` (the documented example: floating IPs with
//! forwarded ports, allowed addresses, imports, a service, policy), with a
//! service with ports added, is mutated two ways: as text, a line dropped,
//! repeated or given an odd value, as an operator's slip would; and as
//! JSON, values swapped for edge values and for values from elsewhere in
//! it, numbers and addresses nudged, keys dropped, entries repeated. A
//! mutant the agent takes must be taken whole by a real API server, from
//! whatever the previous one left there, and a second pass must find
//! nothing to change: an intent that validates but that vrouterd refuses
//! would leave the agent retrying it forever, the node's tables stale. A
//! hundredth of `VROUTER_FUZZ_CASES` sets how many (default 3,000;
//! `tools/test` runs 30,000 in release mode), `VROUTER_FUZZ_SEED` the seed.

mod common;

use common::mutate::mutate;
use common::*;
use serde_json::Value;
use vrouter::agent::{self, Intent};
use vrouter::tables::{Limits, TablesWriter};

fn cases() -> usize {
    std::env::var("VROUTER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(3000, |n: usize| n / 100)
}

fn seed() -> u64 {
    std::env::var("VROUTER_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x00c0_ffee)
}

/// The documented example, with the fabric's MAC given (the example reads
/// it from eth0) and a service with ports, so that mutations reach each
/// kind of entry.
fn example() -> String {
    let text = include_str!("../packaging/intent.toml").replacen(
        "[node]\n",
        "[node]\nfabric_mac = \"02:fa:00:00:00:01\"\n",
        1,
    );
    text + r#"
[[service]]
name = "nginx-svc"
network = "default-pod-network"
address = "10.254.1.1"
endpoints = ["10.32.1.2", "10.32.2.2"]
ports = [{ proto = "tcp", port = 80, target = 8080 }]
"#
}

/// Values an operator might slip into a line.
const ODD: [&str; 19] = [
    "\"\"",
    "-1",
    "0",
    "4294967296",
    "1048576",
    "\"10.0.0.0/33\"",
    "\"300.1.1.1\"",
    "\"::1\"",
    "[]",
    "true",
    "\"02:00:00:00:00\"",
    "\"leonardo\"",
    "\"public\"",
    "[\"10.32.0.0/16\", \"10.32.0.0/16\"]",
    "\"mpls-o-vxlan\"",
    "\"0.0.0.0\"",
    "\"255.255.255.255\"",
    "16",
    "\"x\"",
];

/// The example's text with a few lines dropped, repeated or given an odd
/// value; and what changed, for a failure to show.
fn mutate_lines(rng: &mut Rng, text: &str) -> (String, String) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut what = Vec::new();
    for _ in 0..=rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(4) {
            0 => what.push(format!("  dropped: {}", lines.remove(i))),
            1 => {
                what.push(format!("  repeated: {}", lines[i]));
                lines.insert(i, lines[i].clone());
            }
            _ => {
                if let Some((k, _)) = lines[i].clone().split_once('=') {
                    lines[i] = format!("{k}= {}", ODD[rng.below(ODD.len())]);
                    what.push(format!("  now: {}", lines[i]));
                }
            }
        }
    }
    (lines.join("\n"), what.join("\n"))
}

#[test]
fn every_intent_the_agent_accepts_vrouterd_takes_in_one_pass() {
    let text = example();
    let first = Intent::from_toml(&text).unwrap();
    let base: Value = toml::from_str(&text).unwrap();
    let (writer, _) =
        TablesWriter::new(Limits { vifs: 64, vrfs: 16, nexthops: 1024, labels: 4096, routes_per_vrf: 10_000 });
    let sock = serve_api("intent-fuzz", std::sync::Arc::new(docs_control(writer, 64, 16)));
    let mut c = api_client(&sock, "intent-fuzz");
    let mac = agent::fabric_mac(&first).unwrap();
    agent::reconcile_once(&mut c, &first, mac).unwrap();
    assert!(agent::plan(&mut c, &first, mac).unwrap().is_empty(), "the example settles in one pass");

    let mut rng = Rng(seed());
    let (mut refused, mut unplanned, mut applied) = (0usize, 0usize, 0usize);
    let n = cases();
    for _ in 0..n {
        // As the agent reads its file, or a mutant of its structure.
        let (read, changed) = if rng.below(2) == 0 {
            let (mutant, changed) = mutate_lines(&mut rng, &text);
            (Intent::from_toml(&mutant), format!("the example's lines, changed:\n{changed}"))
        } else {
            let mutant = mutate(&mut rng, base.clone());
            let read = serde_json::from_value::<Intent>(mutant.clone()).map_err(|e| e.to_string());
            (read.and_then(|i| i.validate().map(|()| i)), changes(&base, &mutant))
        };
        // Without fabric_mac, the MAC is read from the fabric interface,
        // which this machine may not have: a refusal with the reason too.
        let read = read.and_then(|i| agent::fabric_mac(&i).map(|mac| (i, mac)));
        let (intent, mac) = match read {
            Ok(read) => read,
            Err(e) => {
                assert!(!e.trim().is_empty(), "a refusal says why: {changed}");
                refused += 1;
                continue;
            }
        };
        match agent::reconcile_once(&mut c, &intent, mac) {
            Ok(_) => {}
            // The agent's own checks as it plans the tables (vrouterd's
            // limits, a policy's ports and protocols): refused with the
            // reason, before anything is sent.
            Err(e) if !e.starts_with("vrouterd refused") => {
                assert!(!e.trim().is_empty(), "{changed}");
                unplanned += 1;
                continue;
            }
            Err(e) => panic!("the agent took this intent, vrouterd did not: {e}\n{changed}"),
        }
        let again = agent::plan(&mut c, &intent, mac).unwrap_or_else(|e| panic!("{e}: {changed}"));
        assert!(again.is_empty(), "a second pass would change {again:?}\n{changed}");
        applied += 1;
    }
    eprintln!("{n} mutated intents: {refused} refused, {unplanned} refused in planning, {applied} applied");
    assert!(applied > n / 10 && refused > n / 10, "the mutations reach both outcomes");
}

/// What a mutant changed in the example, a line a place (the whole intent
/// is long).
fn changes(base: &Value, mutant: &Value) -> String {
    fn walk(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    walk(format!("{path}.{k}"), x.get(k), y.get(k), out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                for i in 0..x.len().max(y.len()) {
                    walk(format!("{path}[{i}]"), x.get(i), y.get(i), out);
                }
            }
            (a, b) if a != b => out.push(format!(
                "  {path}: {} -> {}",
                a.map_or("(none)".into(), Value::to_string),
                b.map_or("(none)".into(), Value::to_string)
            )),
            _ => {}
        }
    }
    let mut out = vec!["the example, changed:".to_string()];
    walk(String::new(), Some(base), Some(mutant), &mut out);
    out.join("\n")
}
