//! The flow table: setting up new flows under a 100-rule policy, hitting
//! established ones, steady churn (flows created and aged out all the
//! time), and the scan for a deleted vif's flows, on one core. `VROUTER_BENCH_QUICK=1` shrinks it to a smoke run.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use vrouter::flow::{CompiledPolicy, DirSpec, FlowAction, FlowConfig, FlowKey, FlowTable, PolicyAction, StaleEnd};
use vrouter::stats::DropReason;

fn quick() -> bool {
    std::env::var_os("VROUTER_BENCH_QUICK").is_some()
}

fn key(i: u64) -> FlowKey {
    FlowKey::v4(
        1,
        17,
        0x0a01_0000 | (i as u32 & 0xffff),
        0x0a02_0000 | ((i >> 16) as u32 & 0xffff),
        (i >> 32) as u16 ^ 1234,
        53,
    )
}

/// A new flow's whole setup: policy, then the pair.
#[inline]
fn setup(t: &FlowTable, p: &CompiledPolicy, k: FlowKey, now: u64) -> bool {
    let (verdict, _) = p.evaluate(&k, Some(1), None);
    let action = match verdict {
        PolicyAction::Allow => FlowAction::Forward,
        PolicyAction::Deny => FlowAction::Drop(DropReason::Discard),
    };
    let f = DirSpec::new(k, action);
    let r = DirSpec::new(k.reversed(), action);
    t.create(&f, &r, 1, 0, now).is_ok()
}

fn flows(c: &mut Criterion) {
    let capacity = if quick() { 20_000 } else { 512 * 1024 };
    let cfg = FlowConfig { capacity, per_vif: u32::MAX, per_vrf: u32::MAX, idle_ms: 1_000, ..FlowConfig::default() };
    let table = FlowTable::new(cfg, 64, 64);
    let policy = vrouter::pktgen::scenario::policy_100(1).compile();
    eprintln!(
        "flow table: {} pairs in {:.1} MiB, {} bytes per pair",
        capacity,
        table.memory_bytes() as f64 / 1048576.0,
        table.memory_bytes() / capacity
    );
    let mut g = c.benchmark_group("flow");
    if quick() {
        g.sample_size(10).measurement_time(Duration::from_millis(200)).warm_up_time(Duration::from_millis(50));
    }
    g.throughput(Throughput::Elements(1));

    // The policy alone: 100 rules, the last one deciding.
    let mut j = 0u64;
    g.bench_function("policy100_evaluate", |b| {
        b.iter(|| {
            j += 1;
            black_box(policy.evaluate(&key(j), Some(1), None))
        })
    });
    // The same 100 rules for any protocol and port, which the policy's
    // index cannot narrow (each is compared with every flow, as every rule
    // was before the index): the same-run baseline of the one above.
    let unindexed = {
        let mut p = vrouter::pktgen::scenario::policy_100(1);
        for r in &mut p.rules {
            (r.proto, r.dport) = (None, vrouter::flow::PortRange::ANY);
        }
        p.compile()
    };
    g.bench_function("policy100_evaluate_any_port", |b| {
        b.iter(|| {
            j += 1;
            black_box(unindexed.evaluate(&key(j), Some(1), None))
        })
    });

    // Setup: new keys each time; the table is emptied (untimed) before it fills.
    let mut next = 0u64;
    g.bench_function("setup_policy100", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if table.len() > capacity * 3 / 4 {
                    table.flush();
                }
                let n = left.min((capacity / 4) as u64);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(setup(&table, &policy, key(next), 0));
                    next += 1;
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });
    table.flush();

    // Hits: lookups and counting on established flows.
    let live = capacity / 2;
    for i in 0..live as u64 {
        setup(&table, &policy, key(i), 0);
    }
    let mut i = 0u64;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 7919) % live as u64;
            let h = table.lookup(&key(i));
            if let Some(h) = h {
                table.touch(h.slot, 64, 0, 1);
            }
            black_box(h)
        })
    });
    // Deleting a vif: the control plane scans the whole table for its
    // flows (here it has none, so the scan is all there is), with half the
    // table live.
    let gone = [StaleEnd { creator: Some(63), vrf: 9, addrs: vec!["10.9.9.9".parse().unwrap()], nat_to: None }];
    g.bench_function("vif_delete_scan", |b| b.iter(|| black_box(table.remove_stale(&gone))));
    table.flush();

    // Hits on a table small enough for the caches: what a hit costs when
    // memory is not the limit.
    let small = FlowTable::new(FlowConfig { capacity: 1024, ..cfg }, 64, 64);
    for i in 0..512u64 {
        setup(&small, &policy, key(i), 0);
    }
    let mut i = 0u64;
    g.bench_function("hit_cached", |b| {
        b.iter(|| {
            i = (i + 7) % 512;
            let h = small.lookup(&key(i));
            if let Some(h) = h {
                small.touch(h.slot, 64, 0, 1);
            }
            black_box(h)
        })
    });

    // Churn: every new flow lives 1 s of simulated time (1,000 flows per
    // simulated ms); each setup also sweeps 8 slots, as a worker would per
    // packet of a batch. Steady state: about 1 M flows live.
    let mut now = 0u64;
    let mut n = 0u64;
    let churn_live = (capacity / 2) as u64;
    g.bench_function("churn_setup_and_age", |b| {
        b.iter(|| {
            n += 1;
            if n % (churn_live / 1000).max(1) == 0 {
                now += 1;
            }
            let ok = setup(&table, &policy, key(next), now);
            next += 1;
            table.sweep(now, 8);
            black_box(ok)
        })
    });
    eprintln!("after churn: {} pairs live, created/removed {:?}", table.len(), table.churn());
    g.finish();
}

criterion_group!(benches, flows);
criterion_main!(benches);
