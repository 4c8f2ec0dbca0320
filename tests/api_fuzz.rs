//! No API request can make the control plane panic or answer with anything
//! but one JSON reply: `docs/api.md`'s requests, replayed to build real
//! tables, then mutated (values of every JSON type and edge, keys dropped,
//! arrays grown, unknown keys added, values copied from elsewhere in the
//! request) and sent in-process. Each must get one JSON answer, a result or
//! an error with a code and a message; the tables must still dump whole,
//! and be restored whole from those dumps into a second vrouterd, as the
//! agent would. A tenth of `VROUTER_FUZZ_CASES` sets how many (default
//! 20,000; `tools/test` runs 300,000 in release mode), `VROUTER_FUZZ_SEED`
//! the seed.

mod common;

use common::mutate::mutate;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use vrouter::agent::{reconcile, Snapshot};
use vrouter::api::client::Client;
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
    let limits = Limits { vifs: 64, vrfs: 64, nexthops: 1024, labels: 4096, routes_per_vrf: 10_000 };
    let control = Arc::new(docs_control(TablesWriter::new(limits).0, 64, 64));
    let sock = serve_api("api-fuzz", Arc::clone(&control));
    let mut held = api_client(&sock, "api-fuzz");
    // A second vrouterd, to restore what the first holds into.
    let fresh_sock = serve_api("api-fuzz-fresh", Arc::new(docs_control(TablesWriter::new(limits).0, 64, 64)));
    let mut fresh = api_client(&fresh_sock, "api-fuzz");
    let empty = reconcile::fetch(&mut fresh).unwrap();
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
        // Whatever was accepted left the tables whole: every table dumps,
        // and what they hold is restored whole into another vrouterd.
        if i % 500 == 0 || i == n - 1 {
            for object in ["vif", "vrf", "nexthop", "label", "policy"] {
                let r = ask(&mut session, &json!({"id": 0, "method": "dump", "params": {"object": object}}));
                assert!(r.get("result").is_some(), "dump {object} after case {i}: {r}");
            }
            restores_whole(&mut held, &mut fresh, &empty, i);
        }
    }
    eprintln!("{n} mutated requests, {errors} refused");
    assert!(errors > n / 10 && errors < n, "the mutations reach both answers ({errors} of {n} refused)");
}

/// What vrouterd dumps, another takes back as it was: emptied as the agent
/// empties it and then filled as the agent fills it (the order of
/// `reconcile::diff`, one batch each), `fresh` must then dump the same
/// tables as `held`. The agent relies on this: it reads a vrouterd's
/// tables back to change only what differs, and a field a dump left out
/// or showed otherwise than it is taken would be rewritten on every pass,
/// or lost when a restarted vrouterd is refilled.
fn restores_whole(held: &mut Client, fresh: &mut Client, empty: &Snapshot, case: usize) {
    let tables = reconcile::fetch(held).unwrap();
    for (from, to) in [(reconcile::fetch(fresh).unwrap(), empty), (empty.clone(), &tables)] {
        let ops = reconcile::diff(&from, to);
        if !ops.is_empty() {
            let r = fresh.call("batch", json!({ "ops": ops }));
            assert!(r.is_ok(), "after case {case}: {r:?}\n{ops:#?}");
        }
    }
    let restored = reconcile::fetch(fresh).unwrap();
    assert!(restored == tables, "after case {case}: restored\n{restored:#?}\nfrom\n{tables:#?}");
}
