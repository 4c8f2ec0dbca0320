//! The forwarding pipeline in memory, per case, as `vrpktgen pipeline`
//! runs it: 64-byte inner frames to 10,000 destinations, VRFs holding
//! 1,000,000 IPv4 and 100,000 IPv6 prefixes with a BGP-like length mix.
//! Throughput is in packets (elements) per second.
//!
//! `pipeline_flows` runs the ECMP and local cases with a flow table, as
//! vrouterd runs them: without a policy (a VRF tracks the flows to its ECMP
//! composites, to pin their members) and with a 100-rule one (every packet
//! tracked), against the untracked cases above.
//!
//! `VROUTER_BENCH_QUICK=1` shrinks the tables to 10,000 prefixes, for a
//! smoke run (`cargo bench --bench pipeline -- --test`).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use vrouter::pktgen::scenario::{Bench, BenchParams, Case};

/// A smoke run's shrunken tables and timings (`VROUTER_BENCH_QUICK`).
fn quick() -> bool {
    std::env::var_os("VROUTER_BENCH_QUICK").is_some()
}

/// A group with this file's timings.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let quick = quick();
    let mut group = c.benchmark_group(name);
    group.measurement_time(Duration::from_secs(if quick { 1 } else { 4 }));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(if quick { 10 } else { 30 });
    group
}

/// The tables every case runs on, in batches of `batch`.
fn params(batch: usize) -> BenchParams {
    let quick = quick();
    BenchParams {
        v4_routes: if quick { 10_000 } else { 1_000_000 },
        v6_routes: if quick { 1_000 } else { 100_000 },
        batch,
        ..BenchParams::default()
    }
}

fn pipeline(c: &mut Criterion) {
    let mut group = group(c, "pipeline");
    for case in Case::ALL {
        for batch in [32usize, 256] {
            let params = params(batch);
            let mut bench = Bench::new(case, params);
            assert_eq!(bench.run_batch(), batch, "{} forwards every frame", case.name());
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(case.name(), batch), |b| b.iter(|| bench.run_batch()));
        }
    }
    group.finish();
}

fn pipeline_flows(c: &mut Criterion) {
    let mut group = group(c, "pipeline_flows");
    for case in [Case::EncapMplsoudpEcmp, Case::LocalForward] {
        for (mode, flow_table, flow_policy) in [("flow_table", true, false), ("flow_policy", false, true)] {
            let params = BenchParams { flow_table, flow_policy, ..params(32) };
            let mut bench = Bench::new(case, params);
            // The warm-up sets the flows up; the measurement hits them.
            bench.warm_up();
            assert_eq!(bench.run_batch(), 32, "{} {mode} forwards every frame", case.name());
            group.throughput(Throughput::Elements(32));
            group.bench_function(BenchmarkId::new(case.name(), mode), |b| b.iter(|| bench.run_batch()));
        }
    }
    group.finish();
}

criterion_group!(benches, pipeline, pipeline_flows);
criterion_main!(benches);
