//! Our longest-prefix match against prefix-trie, an established crate, on
//! the same prefixes and addresses in the same run: IPv4 with 1,000,000
//! BGP-like prefixes, IPv6 with 100,000. Both single lookups and our
//! batched lookup (a vector of 32 keys walked level by level) are shown.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use vrouter::pktgen::scenario::{bgp_like_v4, bgp_like_v6, Rng};
use vrouter::tables::lpm::BATCH;
use vrouter::tables::{Fib, Limits, NextHop, Object, Op, Prefix, RouteSpec, RouteTarget, TablesWriter, VrfSpec};

const LOOKUPS: usize = 10_000;

/// Loads prefixes through the real writer, so the trie is built as in production.
fn our_fibs(v4: &[(u32, u8)], v6: &[(u128, u8)]) -> TablesWriter {
    let (mut w, _) = TablesWriter::new(Limits { routes_per_vrf: v4.len().max(v6.len()) + 1, ..Limits::default() });
    w.apply(&[
        Op::Add(Object::Vrf(VrfSpec { id: 1, name: "bench".into(), gateway_v4: None, gateway_v6: None })),
        Op::Add(Object::NextHop(1, NextHop::Receive)),
    ])
    .unwrap();
    let routes = v4
        .iter()
        .map(|&(a, l)| (std::net::IpAddr::V4(a.into()), l))
        .chain(v6.iter().map(|&(a, l)| (std::net::IpAddr::V6(a.into()), l)));
    let ops: Vec<Op> = routes
        .enumerate()
        .map(|(i, (a, l))| {
            let target = RouteTarget { nh: 1, label: (i % 1000) as u32 };
            Op::Add(Object::Route(RouteSpec { network: None, vrf: 1, prefix: Prefix::new(a, l).unwrap(), target }))
        })
        .collect();
    for chunk in ops.chunks(50_000) {
        w.apply(chunk).unwrap();
    }
    w
}

/// Addresses inside random prefixes of the set, so most lookups hit.
fn addresses_v4(v4: &[(u32, u8)], rng: &mut Rng) -> Vec<u32> {
    (0..LOOKUPS)
        .map(|_| {
            let (p, l) = v4[(rng.next_u64() % v4.len() as u64) as usize];
            p | (rng.next_u64() as u32 & !(u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0)))
        })
        .collect()
}

fn addresses_v6(v6: &[(u128, u8)], rng: &mut Rng) -> Vec<u128> {
    (0..LOOKUPS)
        .map(|_| {
            let (p, l) = v6[(rng.next_u64() % v6.len() as u64) as usize];
            p | ((u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
                & !(u128::MAX.checked_shl(128 - u32::from(l)).unwrap_or(0)))
        })
        .collect()
}

fn lpm(c: &mut Criterion) {
    let quick = std::env::var_os("VROUTER_BENCH_QUICK").is_some();
    let (n4, n6) = if quick { (10_000, 1_000) } else { (1_000_000, 100_000) };
    let v4 = bgp_like_v4(n4, 0x5eed_0004);
    let v6 = bgp_like_v6(n6, 0x5eed_0006);
    let mut rng = Rng::new(42);
    let q4 = addresses_v4(&v4, &mut rng);
    let q6 = addresses_v6(&v6, &mut rng);

    let w = our_fibs(&v4, &v6);
    let tables = w.tables().clone();
    let vrf = tables.vrf(1).unwrap();
    let mut ref4: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    for (i, &(a, l)) in v4.iter().enumerate() {
        ref4.insert(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap(), i as u32);
    }
    let mut ref6: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
    for (i, &(a, l)) in v6.iter().enumerate() {
        ref6.insert(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap(), i as u32);
    }
    // Both must agree on which prefix matches, before either is timed.
    for &a in q4.iter().take(2000) {
        let ours = vrf.v4.lookup_with_len(a).map(|(_, l)| l);
        let theirs = ref4.get_lpm(&Ipv4Net::new(Ipv4Addr::from(a), 32).unwrap()).map(|(p, _)| p.prefix_len());
        assert_eq!(ours, theirs, "{}", Ipv4Addr::from(a));
    }
    for &a in q6.iter().take(2000) {
        let ours = vrf.v6.lookup_with_len(a).map(|(_, l)| l);
        let theirs = ref6.get_lpm(&Ipv6Net::new(Ipv6Addr::from(a), 128).unwrap()).map(|(p, _)| p.prefix_len());
        assert_eq!(ours, theirs, "{}", Ipv6Addr::from(a));
    }

    let mut g = c.benchmark_group("lpm");
    g.measurement_time(Duration::from_secs(if quick { 1 } else { 4 }));
    g.sample_size(if quick { 10 } else { 30 });
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_function(format!("v4_{n4}/vrouter"), |b| {
        b.iter(|| q4.iter().filter(|&&a| vrf.v4.lookup(black_box(a)).is_some()).count())
    });
    g.bench_function(format!("v4_{n4}/vrouter_batched"), |b| {
        let fibs: [&Fib<u32>; BATCH] = [&vrf.v4; BATCH];
        let mut out = [None; BATCH];
        b.iter(|| {
            let mut hits = 0;
            for keys in q4.chunks(BATCH) {
                Fib::lookup_batch(&fibs[..keys.len()], black_box(keys), &mut out[..keys.len()]);
                hits += out[..keys.len()].iter().filter(|o| o.is_some()).count();
            }
            hits
        })
    });
    let q4net: Vec<Ipv4Net> = q4.iter().map(|&a| Ipv4Net::new(Ipv4Addr::from(a), 32).unwrap()).collect();
    g.bench_function(format!("v4_{n4}/prefix-trie"), |b| {
        b.iter(|| q4net.iter().filter(|a| ref4.get_lpm(black_box(a)).is_some()).count())
    });
    g.bench_function(format!("v6_{n6}/vrouter"), |b| {
        b.iter(|| q6.iter().filter(|&&a| vrf.v6.lookup(black_box(a)).is_some()).count())
    });
    let q6net: Vec<Ipv6Net> = q6.iter().map(|&a| Ipv6Net::new(Ipv6Addr::from(a), 128).unwrap()).collect();
    g.bench_function(format!("v6_{n6}/prefix-trie"), |b| {
        b.iter(|| q6net.iter().filter(|a| ref6.get_lpm(black_box(a)).is_some()).count())
    });
    g.finish();
}

criterion_group!(benches, lpm);
criterion_main!(benches);
