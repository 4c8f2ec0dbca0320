//! No API request can make the control plane panic or answer with anything
//! but one JSON reply: `docs/api.md`'s requests, replayed to build real
//! tables, then mutated (values of every JSON type and edge, keys dropped,
//! arrays grown, unknown keys added) and sent in-process. Each must get one
//! JSON answer, a result or an error with a code and a message, and the
//! tables must still dump whole. A tenth of `VROUTER_FUZZ_CASES` sets how
//! many (default 20,000; `tools/test` runs 300,000 in release mode),
//! `VROUTER_FUZZ_SEED` the seed.

mod common;

use common::mutate::mutate;
use common::*;
use serde_json::{json, Value};
use vrouter::api::server::Session;
use vrouter::tables::{Limits, TablesWriter};

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
