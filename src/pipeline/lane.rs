//! The fast lane: a whole vector of frames from one vif, in the common
//! case, in three short passes with nothing carried between them but each
//! frame's destination or flow probe. From a pod it takes plain IPv4 that
//! the fast path handles (`fast::classify`, `fast::finish`); from the
//! fabric, the same inside MPLS over UDP or GRE. Untracked, or a hit on a
//! flow that only forwards (and, routed, remembers its route), or a hit
//! on a flow that forwards with a NAT rewrite or into another VRF (a
//! floating IP's, or an answer to a pod of another network: `translated`).
//! Every other frame is left as it came, for the general vector
//! (`process_vector`) to take afterwards from the start, so the lane needs
//! no fallback of its own.
//!
//! Why a lane beside the vector: the vector keeps a dozen per-frame
//! arrays (`Pending`, verdicts, VRFs, flows) so that any frame can take any
//! path, and filling and reading them cost more than the fast path's own
//! work (callgrind: about 220 of 660 instructions a packet for an ECMP
//! encap, 2.3 times the forwarding core's target).

use super::decap;
use super::express::{self, Asked, Taken};
use super::fast;
use super::fast6;
use super::flow;
use super::forward::ETH;
use super::{account, lanes, Ctx, Frame, VECTOR};
use crate::flow::{FlowTable, Forwarding, Nat, Probe, RouteMemo};
use crate::memory::Buffer;
use crate::stats::runtime::Stopwatch;
use crate::stats::Stage;
use crate::tables::{Fib, FibKey, Landing, NextHop, Route, RouteTarget, Tables, Vif, VifKind, Vrf};

mod late6;
use late6::{tracked6_late, Filling, Waiting};

/// Every frame of a vector, as a mask (bit `i`: frame `i`).
#[inline(always)]
pub(super) fn all(frames: usize) -> u32 {
    if frames >= 32 {
        u32::MAX
    } else {
        (1u32 << frames) - 1
    }
}

/// The frames of a vector the lane left untouched, as a mask, and which of
/// them it looked a flow up for (their probes are in the lane's array):
/// what `general::cause` starts from.
#[derive(Clone, Copy)]
pub(super) struct Left {
    pub frames: u32,
    pub probed: u32,
}

impl Left {
    fn all(frames: usize) -> Left {
        Left { frames: all(frames), probed: 0 }
    }
}

/// Takes what it can of `frames`, whose verdicts it sets, and answers with
/// those it left untouched. It takes frames only from the first frame's
/// vif (a receive queue's vector comes from one vif): from a pod
/// (`from_pod`) or from the fabric (`from_fabric`).
#[inline(always)]
pub(super) fn run<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    probes: &mut [Probe; VECTOR],
    asked: &mut Asked,
    watch: &mut Stopwatch<'_>,
) -> Left {
    let Some(first) = frames.first().map(|f| f.vif) else { return Left { frames: 0, probed: 0 } };
    let Some(vif) = ctx.t.vif(first) else { return Left::all(frames.len()) };
    // A pod with floating IPs too, unlike the vector's fast path: the lane
    // tracks all its packets and rewrites its flows' hits (`translated`).
    if vif.flags.disabled || !ctx.cfg.fast_path {
        return Left::all(frames.len());
    }
    match vif.kind {
        VifKind::Virtual => {
            let left = from_pod(ctx, frames, vif, probes, asked, watch);
            if left.frames == 0 {
                return left;
            }
            from_pod6(ctx, frames, vif, left, probes, asked, watch)
        }
        VifKind::Fabric => from_fabric(ctx, frames, vif, probes, asked, watch),
        _ => Left::all(frames.len()),
    }
}

/// The lane for a vector from pod `vif`.
#[inline(always)]
fn from_pod<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    vif: &Vif,
    probes: &mut [Probe; VECTOR],
    asked: &mut Asked,
    watch: &mut Stopwatch<'_>,
) -> Left {
    let t = ctx.t;
    let every = all(frames.len());
    let first = vif.index;
    let Some(vrf) = t.vrf(vif.vrf) else { return Left { frames: every, probed: 0 } };
    // Where flows are tracked, the lane takes the hits; where only the
    // ECMP routes track them, an address the VRF's hint names is looked
    // up, and any other is routed first: the hint rules it out of every
    // composite, or, where a route wider than the hint's blocks leads to
    // one (`unsure`), its route says whether to look its flow up
    // (`flow::tracked_to`).
    // A pod's floating IPs make every packet of its tracked: their
    // answers find their rewrite in their flow (`flow::tracked`).
    let floating = !vif.floating.is_empty();
    let table = ctx.flows.filter(|_| floating || vrf.tracks_flows());
    let every_flow = floating || vrf.tracks_every_flow();
    // Hits that may rewrite or route in another VRF, whose slot's second
    // line is fetched up front: a floating IP's answers, from its pod, or
    // its clients' packets, in its VRF; the answers of a network that
    // others import, to their pods on this node. (Any hit may be one: a
    // route without its network, for one. Then its line comes cold.)
    let whole_slot = floating || vrf.floating_ips > 0 || vrf.imported_elsewhere > 0;
    let hint_complete = vrf.ecmp_blocks.is_complete();
    let own = vif.ipv4.filter(|_| vif.flags.source_check);
    // The keys of the vif's packets start from `pods` (`Key::pods`); a VRF
    // too large for a key takes no cache.
    let pods = express::Key::pods(vrf.id, floating);
    let cache = ctx.cache.as_deref().filter(|_| pods.is_some());
    let pods = pods.unwrap_or(0);

    // Pass one: classify, and start each tracked frame's flow lookup: in
    // the flow cache where it may be there (`cached`), else in the table.
    let mut left = 0u32;
    let mut probed = 0u32;
    let mut cached = 0u32;
    let mut unsure = 0u32;
    let mut keys = [0u32; VECTOR];
    let mut at = [0u8; VECTOR];
    let mut n = 0;
    // Each frame's length as it came, to count it and to give it back
    // untrimmed if the lane leaves it after all.
    let mut came = [0u32; VECTOR];
    for (i, f) in frames.iter_mut().enumerate() {
        came[i] = f.len() as u32;
        let dst = match (f.vif == first).then(|| fast::classify(f, own)) {
            // Only an IPv4 packet may come from elsewhere, which the call
            // takes as checked: an IPv6 one (all IPv6 is the general
            // path's) paid the call for nothing.
            Some(None) if own.is_some() && f.data().get(12..14) == Some(&[0x08, 0x00]) => {
                from_elsewhere(t, f, vif, vrf)
            }
            dst => dst.flatten(),
        };
        let Some(dst) = dst else {
            left |= 1 << i;
            continue;
        };
        match table {
            None => {}
            // Not named: routed first.
            Some(_) if !every_flow && !vrf.ecmp_blocks.may_hold(dst) => unsure |= u32::from(!hint_complete) << i,
            Some(table) => {
                let key = match (cache, fast::head(f)) {
                    (Some(_), Some(h)) => express::Key::of(h, pods),
                    _ => None,
                };
                if let (Some(cache), Some(key)) = (cache, key) {
                    cached |= asked.ask(cache, i, key);
                } else if flow::prefetch_fast(table, f, vrf, &mut probes[i]) {
                    probed |= 1 << i;
                    if whole_slot {
                        probes[i].fetch_whole_slot();
                    }
                } else {
                    f.set_len(came[i] as usize);
                    left |= 1 << i;
                }
                continue;
            }
        }
        keys[n] = dst;
        at[n] = i as u8;
        n += 1;
    }
    watch.mark(Stage::Parse);

    // Pass two: the flows' slots are fetched while the routes are looked up.
    // A frame the cache has (`hits`) fetches its flow's slot; one it has
    // not (`unfilled`) is looked up in the table, and fills the cache if
    // the full way forwards it.
    let (mut hits, mut unfilled) = (0u32, 0u32);
    if let Some(table) = table {
        for i in lanes(probed) {
            table.prefetch_slots(&mut probes[i]);
        }
        if let (Some(cache), true) = (cache, cached != 0) {
            for i in lanes(cached) {
                let hit = asked.find::<false>(cache, i, table);
                if hit != 0 {
                    hits |= hit;
                } else if flow::prefetch_fast(table, &frames[i], vrf, &mut probes[i]) {
                    if whole_slot {
                        probes[i].fetch_whole_slot();
                    }
                    unfilled |= 1 << i;
                } else {
                    left |= give_back_as_came(&mut frames[i], came[i]) << i;
                }
            }
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n > 0 {
        let fibs: [&Fib<u32>; VECTOR] = [&vrf.v4; VECTOR];
        Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    }
    if let (Some(table), true) = (table, unfilled != 0) {
        for i in lanes(unfilled) {
            table.prefetch_slots(&mut probes[i]);
        }
        probed |= unfilled;
    }
    watch.mark(Stage::Lookup);

    // Pass three: each frame's next hop, carried out.
    let mut rx = Received::default();
    let give_back = |f: &mut Frame<B>, i: usize| give_back_as_came(f, came[i]) << i;
    if let (Some(table), Some(cache), true) = (table, ctx.cache.as_deref_mut(), hits != 0) {
        let (mut refused, mut bytes) = (0, 0);
        let mut tally = express::Tally::NONE;
        for i in lanes(hits) {
            let f = &mut frames[i];
            let (at, now) = (asked.at[i], ctx.now);
            let taken = match floating {
                true => cache.forward::<B, true>(at, table, f, now, &mut tally, ctx.stats),
                false => cache.forward::<B, false>(at, table, f, now, &mut tally, ctx.stats),
            };
            match taken {
                Ok(()) => bytes += u64::from(came[i]),
                Err(miss) => {
                    cache.refused(asked.at[i], miss);
                    refused |= give_back(f, i);
                }
            }
        }
        rx.add(hits & !refused, bytes);
        cache.count_hits(hits & !refused);
        left |= refused;
        tally.flush(ctx.stats);
    }
    if unsure != 0 {
        // A frame whose route, wider than the VRF's hint, leads to a
        // composite is tracked after all: its flow, looked up cold, pins
        // the member, and its hit is taken with the others below.
        let mut kept = 0;
        for j in 0..n {
            let i = usize::from(at[j]);
            let tracked = unsure & (1 << i) != 0
                && vrf.v4.target(routes[j]).is_some_and(|r| flow::tracked_to(t, vrf, Some(vif), r));
            if !tracked {
                (at[kept], routes[kept]) = (at[j], routes[j]);
                kept += 1;
                continue;
            }
            match table {
                Some(table) if flow::probe_cold(table, &frames[i], vrf, &mut probes[i]) => probed |= 1 << i,
                _ => left |= give_back(&mut frames[i], i),
            }
        }
        n = kept;
    }
    for j in 0..n {
        let i = usize::from(at[j]);
        let f = &mut frames[i];
        match vrf.v4.target(routes[j]) {
            Some(target) if deliver(ctx, f, came[i], vrf, target, None, None, &mut rx) => {}
            _ => left |= give_back(f, i),
        }
    }
    let mut stale = 0u32;
    for i in lanes(probed) {
        let f = &mut frames[i];
        // A pod with floating IPs: most of its hits are its answers, which
        // rewrite, but it has plain flows of its own too. One read says
        // which (`flow::translated` answers for any entry that forwards).
        // Asking for a plain hit first cost the answers 85 instructions;
        // asking for a rewriting one alone cost the plain flows 108 (the
        // generic way there, `translated_hit`: callgrind). (One match over
        // both kinds of pod, through an enum of the hits, cost the common
        // way's plain hits 34-38.)
        // Either fills the cache if it did not have the flow (`unfilled`),
        // with the rewrite, if any.
        if floating {
            let filling = (unfilled & (1 << i) != 0).then(|| (&asked.keys[i], asked.at[i]));
            match floating_hit(ctx, f, came[i], vrf, &probes[i], filling, &mut rx) {
                Some(true) => {}
                Some(false) => left |= give_back(f, i),
                None => stale |= 1 << i,
            }
            continue;
        }
        // A hit on a flow that only forwards, whose route is remembered in
        // this table version (and, where only ECMP routes track flows,
        // still leads to a composite: `fast::finish` checks); else one on
        // a flow that rewrites or routes in another VRF (asked second: a
        // plain hit is the cheaper read, and most hits are plain, even in
        // a pod network with a service's ports); anything else is the
        // general path's.
        // A hit whose route is remembered in an older table version (a
        // route of the VRF changed since) is taken below (`routed_again`).
        let settled = flow::settled(ctx, vrf, &probes[i]);
        let done = match settled.map(|s| vrf.v4.recall(s.route.route())) {
            Some(Some(Some(target))) => {
                let done = deliver(ctx, f, came[i], vrf, target, settled, None, &mut rx);
                if let (true, Some(hit)) = (done && unfilled & (1 << i) != 0, settled) {
                    let way = Taken::plain(hit, target, vrf.id);
                    fill(ctx, vrf, &asked.keys[i], asked.at[i], &probes[i], &way, f);
                }
                done
            }
            Some(None) => {
                stale |= 1 << i;
                continue;
            }
            None if unfilled & (1 << i) != 0 => {
                translated_filling(ctx, f, came[i], vrf, &probes[i], None, &asked.keys[i], asked.at[i], &mut rx)
            }
            None => translated(ctx, f, came[i], vrf, &probes[i], None, &mut rx),
            Some(Some(None)) => false,
        };
        if !done {
            left |= give_back(f, i);
        }
    }
    if stale != 0 {
        left |= routed_again(ctx, frames, &came, vrf, probes, stale, &mut rx);
    }
    rx.count(ctx.stats, first);
    watch.mark(Stage::Rewrite);
    Left { frames: left, probed }
}

/// The lane for the IPv6 frames of a vector from pod `vif` that
/// `from_pod` left (in `left`): plain IPv6 (`fast6::classify`), untracked,
/// or hits on flows that only forward where every flow is tracked (the
/// VRF's, or a floating-IP pod's), to a local pod or into a tunnel, in the
/// same three passes; hits that route in another VRF or drop
/// (`translated6`). A plain hit whose flow remembers its route in the
/// VRF's current table version is not looked up, as IPv4's are not; the
/// other hits are routed together after the rest (`routed6_again`).
/// Where only ECMP routes track flows, a packet to an address the VRF's
/// IPv6 hint names asks the flow cache first, and a packet that its route
/// says is tracked has its flow looked up late (`tracked6_late`), which
/// fills the cache for the next. Before, all
/// IPv6 took the general path: a pod's packets 4-5 times as long as
/// IPv4's (`vrpktgen pipeline --case local_forward6`). Out of line: an
/// IPv4 vector pays the call only when it left a frame, and then a look
/// at each left frame's Ethernet type.
#[inline(never)]
fn from_pod6<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    vif: &Vif,
    left: Left,
    probes: &mut [Probe; VECTOR],
    asked: &mut Asked,
    watch: &mut Stopwatch<'_>,
) -> Left {
    let t = ctx.t;
    let Some(vrf) = t.vrf(vif.vrf) else { return left };
    // A pod's floating IPs make every packet of its tracked, as in
    // `from_pod`. Its IPv6 flows are plain: a floating IP is IPv4.
    let table = ctx.flows.filter(|_| !vif.floating.is_empty() || vrf.tracks_every_flow());
    let own = vif.ipv6.map(u128::from).filter(|_| vif.flags.source_check);
    // Its TCP and UDP flows' hits are the flow cache's, as IPv4's are
    // (`Key::of6`), where the VRF's id fits a key.
    let cache = ctx.cache.as_deref();
    // Where only ECMP routes track flows (a service without a policy), a
    // packet to an address the VRF's IPv6 hint names asks the cache
    // before its route, as IPv4's do: a hit spares the route, the flow
    // table's lookup and the next hop; a miss is routed as any other, and
    // fills the cache if its flow takes it (`tracked6_late`). Before, each
    // of those packets had its flow looked up after its route: `service6`
    // 963 instructions, against 518 under a policy.
    let late_cache = cache.filter(|_| table.is_none() && ctx.flows.is_some() && !vrf.ecmp_blocks6.is_empty());

    // Pass one: classify, and start each tracked frame's flow lookup: in
    // the flow cache where it may be there (`cached`), else in the table;
    // the untracked frames' destinations are looked up in pass two.
    let mut probed = 0u32;
    let mut cached = 0u32;
    let mut keys = [0u128; VECTOR];
    let mut at = [0u8; VECTOR];
    let mut came = [0u32; VECTOR];
    let mut n = 0;
    for i in lanes(left.frames) {
        let f = &mut frames[i];
        came[i] = f.len() as u32;
        let Some(dst) = (f.vif == vif.index).then(|| fast6::classify(f, own)).flatten() else { continue };
        if let Some(cache) = late_cache.filter(|_| vrf.ecmp_blocks6.may_hold(dst)) {
            if let Some(key) = fast6::head(f).and_then(|h| express::Key::of6(h, vrf.id)) {
                cached |= asked.ask(cache, i, key);
                continue;
            }
        }
        if let Some(table) = table {
            // Classified, so its head is whole.
            if let Some(h) = fast6::head(f) {
                match cache.zip(express::Key::of6(h, vrf.id)) {
                    Some((cache, key)) => cached |= asked.ask(cache, i, key),
                    None => {
                        flow::prefetch_key(table, &fast6::flow_key(h, vrf.id), &mut probes[i]);
                        probed |= 1 << i;
                    }
                }
            }
            continue;
        }
        keys[n] = dst;
        at[n] = i as u8;
        n += 1;
    }
    watch.mark(Stage::Parse);

    // Pass two: the flows' slots are fetched while the routes are looked
    // up. A frame the cache has (`hits`) fetches its flow's slot; one it
    // has not (`unfilled`) is looked up in the table, and fills the cache
    // if the full way forwards it.
    let (mut hits, mut unfilled) = (0u32, 0u32);
    if let Some(table) = table {
        for i in lanes(probed) {
            table.prefetch_slots(&mut probes[i]);
        }
        if let (Some(cache), true) = (cache, cached != 0) {
            for i in lanes(cached) {
                let hit = asked.find::<true>(cache, i, table);
                if hit != 0 {
                    hits |= hit;
                } else if let Some(h) = fast6::head(&frames[i]) {
                    flow::prefetch_key(table, &fast6::flow_key(h, vrf.id), &mut probes[i]);
                    unfilled |= 1 << i;
                }
            }
        }
    }
    // Those the cache has not are routed with the rest.
    if let (Some(cache), Some(table), true) = (late_cache, ctx.flows, cached != 0) {
        for i in lanes(cached) {
            let hit = asked.find::<true>(cache, i, table);
            if hit != 0 {
                hits |= hit;
            } else if let Some(h) = fast6::head(&frames[i]) {
                (keys[n], at[n]) = (fast6::destination(h), i as u8);
                n += 1;
                unfilled |= 1 << i;
            }
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n > 0 {
        let fibs: [&Fib<u128>; VECTOR] = [&vrf.v6; VECTOR];
        Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    }
    if let (Some(table), true) = (table, unfilled != 0) {
        for i in lanes(unfilled) {
            table.prefetch_slots(&mut probes[i]);
        }
        probed |= unfilled;
    }
    watch.mark(Stage::Lookup);

    // Pass three: each frame's next hop, carried out. An untracked frame
    // that its route says is tracked after all waits, as it is, for its
    // flow (`tracked6_late`).
    let mut rx = Received::default();
    let mut taken = 0u32;
    if let (Some(table), Some(cache), true) = (ctx.flows, ctx.cache.as_deref_mut(), hits != 0) {
        let (mut tally, mut bytes) = (express::Tally::NONE, 0);
        for i in lanes(hits) {
            let f = &mut frames[i];
            match cache.forward6(asked.at[i], table, f, vrf.id, ctx.now, &mut tally, ctx.stats) {
                Ok(()) => {
                    bytes += u64::from(came[i]);
                    taken |= 1 << i;
                }
                // Left to the general path, as it came.
                Err(miss) => {
                    cache.refused(asked.at[i], miss);
                    f.set_len(came[i] as usize);
                }
            }
        }
        rx.add(hits & taken, bytes);
        cache.count_hits(hits & taken);
        tally.flush(ctx.stats);
    }
    let (mut later, mut waiting) = ([0u8; VECTOR], 0u32);
    let mut m = 0;
    for j in 0..n {
        let i = usize::from(at[j]);
        let f = &mut frames[i];
        let done = vrf.v6.target(routes[j]).is_some_and(|target| {
            deliver6(ctx, f, came[i], vrf, target, None, &mut rx) || {
                if tracked_after_all(ctx, vrf, Some(vif), target, None).is_some() {
                    later[m] = j as u8;
                    m += 1;
                    waiting |= 1 << i;
                }
                false
            }
        });
        if done {
            taken |= 1 << i;
        } else if waiting & (1 << i) == 0 {
            f.set_len(came[i] as usize);
        }
    }
    // The hits: a plain one whose route its flow remembers in this table
    // version is carried out; one whose flow remembers none here yet (its
    // first hit, or a route of the VRF changed since), and any other
    // entry's, are routed together below.
    let (mut stale, mut unplain) = (0u32, 0u32);
    for i in lanes(probed) {
        let f = &mut frames[i];
        let settled = flow::settled(ctx, vrf, &probes[i]);
        let done = match settled.map(|s| vrf.v6.recall(s.route.route())) {
            Some(Some(Some(target))) => {
                let done = deliver6(ctx, f, came[i], vrf, target, settled, &mut rx);
                if let (true, Some(hit)) = (done && unfilled & (1 << i) != 0, settled) {
                    let way = Taken::plain(hit, target, vrf.id);
                    fill(ctx, vrf, &asked.keys[i], asked.at[i], &probes[i], &way, f);
                }
                done
            }
            Some(Some(None)) => false,
            Some(None) => {
                stale |= 1 << i;
                continue;
            }
            // Not a plain hit. Where no entry may route in another VRF
            // (`translated6` asks for those first), a frame whose key's tag
            // is not in its first bucket is the general path's (a new flow,
            // nearly always: `dropped6` takes only hinted ones, and routing
            // it here cost each setup a lookup the general path makes
            // again); one that drops and remembers its route in this
            // version is dropped here.
            None if vrf.imported_elsewhere == 0 && !probes[i].hinted() => false,
            None if vrf.imported_elsewhere == 0
                && dropped6(
                    ctx,
                    f,
                    came[i],
                    vrf,
                    &probes[i],
                    |hit, _| vrf.v6.recall(hit.route.route()).flatten(),
                    &mut rx,
                ) =>
            {
                true
            }
            None => {
                unplain |= 1 << i;
                continue;
            }
        };
        if done {
            taken |= 1 << i;
        } else {
            f.set_len(came[i] as usize);
        }
    }
    if stale | unplain != 0 {
        taken |= routed6_again(ctx, frames, &came, vrf, probes, (stale, unplain), &mut rx);
    }
    let mut late = 0u32;
    if let (Some(table), true) = (ctx.flows, m > 0) {
        let filling = Filling { asked, unfilled };
        let waited = Waiting { later: &later[..m], at: &at, routes: &routes, came: &came, filling };
        let (t, p) = tracked6_late(ctx, table, frames, vrf, waited, probes, &mut rx);
        (taken, late) = (taken | t, p);
    }
    rx.count(ctx.stats, vif.index);
    watch.mark(Stage::Rewrite);
    let probed = probed | late;
    Left { frames: left.frames & !taken, probed: left.probed | (probed & !taken) }
}

/// `from_pod6`'s pass three for the hits whose routes their flows do not
/// remember in the VRF's current table version: plain hits (`stale`),
/// each route carried over where no change since covered the destination
/// (`Fib::carried_over`) or looked up again, and remembered for the flows'
/// next packets, as IPv4's `routed_again` does; and hits on entries that
/// are not plain (`unplain`: one that routes in another VRF, or drops),
/// routed for `translated6`. Answers with the frames it took; the others
/// are given back as they came. Before, every IPv6 hit had its route
/// looked up: local_forward6 under the 100-rule policy 762 instructions a
/// packet (callgrind), against 475 untracked.
#[inline(never)]
fn routed6_again<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    came: &[u32; VECTOR],
    vrf: &Vrf,
    probes: &[Probe; VECTOR],
    (stale, unplain): (u32, u32),
    rx: &mut Received,
) -> u32 {
    let mut taken = 0u32;
    let mut keys = [0u128; VECTOR];
    let mut at = [0u8; VECTOR];
    let mut n = 0;
    for i in lanes(stale | unplain) {
        // Classified, so its head is whole.
        let Some(dst) = fast6::head(&frames[i]).map(fast6::destination) else { continue };
        if stale & (1 << i) != 0 {
            let Some(settled) = flow::settled(ctx, vrf, &probes[i]) else { continue };
            if let Some(route) = vrf.v6.carried_over(settled.route.route(), dst) {
                let target = remember(ctx.flows, &vrf.v6, &settled, route);
                if target.is_some_and(|t| deliver6(ctx, &mut frames[i], came[i], vrf, t, Some(settled), rx)) {
                    taken |= 1 << i;
                }
                continue;
            }
        }
        keys[n] = dst;
        at[n] = i as u8;
        n += 1;
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    let fibs: [&Fib<u128>; VECTOR] = [&vrf.v6; VECTOR];
    Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    for j in 0..n {
        let i = usize::from(at[j]);
        let f = &mut frames[i];
        let done = if stale & (1 << i) != 0 {
            flow::settled(ctx, vrf, &probes[i]).is_some_and(|settled| {
                let target = remember(ctx.flows, &vrf.v6, &settled, routes[j]);
                target.is_some_and(|t| deliver6(ctx, f, came[i], vrf, t, Some(settled), rx))
            })
        } else {
            translated6(ctx, f, came[i], vrf, &probes[i], routes[j], rx)
        };
        if done {
            taken |= 1 << i;
        }
    }
    for i in lanes((stale | unplain) & !taken) {
        frames[i].set_len(came[i] as usize);
    }
    taken
}

/// `deliver` for a frame `fast6::classify` accepted: `fast6::finish` to
/// `target`, the verdict set and counted; false, with nothing changed, if
/// the fast path will not take it after all.
#[inline(always)]
fn deliver6<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    target: RouteTarget,
    settled: Option<Forwarding>,
    rx: &mut Received,
) -> bool {
    let Some(v) = fast6::finish(ctx, f, vrf, target, settled) else { return false };
    took(ctx.stats, f, came, v, rx);
    true
}

/// `fast::classify` for a frame from pod `vif` (in `vrf`) that it refused
/// with the pod's own address as the only source allowed: the frame, if
/// its source is another address the VRF routes back to the pod
/// (`forward::routes_back`), as a pod's answers from a service address it
/// holds are (Kubernetes' and Contrail's ECMP services, an allowed address
/// pair). The general path would take it, after the same check. Before,
/// each of those packets took the general path: in the lab, every answer
/// of the leonardo service (14 % of the frames of a TCP transfer to it).
/// Out of line: most frames it sees are the general path's anyway (a
/// SYN), and pay a second classification for nothing. Only IPv4 frames
/// come here (the caller checks their Ethernet type).
#[inline(never)]
fn from_elsewhere<B: Buffer>(t: &Tables, f: &mut Frame<B>, vif: &Vif, vrf: &Vrf) -> Option<u32> {
    // The frame's other checks first, changing nothing: most frames here
    // fail them (a SYN) and need no route lookup.
    let (dst, total) = fast::inspect(f.data(), None)?;
    let src = fast::head(f).map(fast::source)?;
    if !super::forward::routes_back(t, vif, vrf.v4.lookup(src)) {
        return None;
    }
    // As `fast::classify` trims it, once accepted.
    f.set_len(ETH + total);
    Some(dst)
}

/// Pass three for a hit of a pod with floating IPs (`probe`'s), which
/// `flow::translated` reads whether it rewrites or not: carried out, and
/// filled into the flow cache where it did not have the flow (`filling`:
/// its key and set), with the rewrite, if any. `Some(false)`: not taken,
/// the frame unchanged; `None`: a plain hit whose route is remembered in
/// an older table version (`routed_again`). Out of line: in `from_pod`'s
/// loop, its registers cost plain pods' cached hits instructions
/// (callgrind).
#[inline(never)]
fn floating_hit<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    filling: Option<(&express::Key, u32)>,
    rx: &mut Received,
) -> Option<bool> {
    let (taken, done) = match flow::translated(ctx, vrf, probe) {
        Some((hit, tr)) if tr.forwards_only() => match vrf.v4.recall(hit.route.route())? {
            Some(target) => {
                let done = deliver(ctx, f, came, vrf, target, Some(hit), None, rx);
                (Some(Taken { hit, target, vrf: vrf.id, landed: vrf.id, unpinned: false, tr: Some(tr) }), done)
            }
            None => (None, false),
        },
        Some((settled, tr)) => {
            let taken = translated_hit(ctx, f, came, vrf, settled, tr, None, rx);
            let done = taken.is_some();
            (taken, done)
        }
        None => (None, false),
    };
    if let (true, Some(way), Some((key, at))) = (done, &taken, filling) {
        fill(ctx, vrf, key, at, probe, way, f);
    }
    Some(done)
}

/// Fills the flow cache with a hit the full way forwarded (`way`), which
/// `probe` found in `vrf` (`express::FlowCache::fill`), once its flow's
/// entry is read again, stable and unchanged, for its sequence count. The
/// rare way: a flow's first hit, or one after a change.
#[cold]
#[inline(never)]
fn fill<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    vrf: &Vrf,
    key: &express::Key,
    at: u32,
    probe: &Probe,
    way: &Taken,
    f: &Frame<B>,
) {
    let (t, Some(table)) = (ctx.t, ctx.flows) else { return };
    let policy = vrf.policy_generations();
    let seq = match &way.tr {
        None => table.sequence_of(probe, &way.hit, policy),
        Some(tr) => {
            table.sequence_of_translated(probe, &way.hit, tr, policy, |id| t.vrf(id).map(|v| v.policy_generations()))
        }
    };
    // `None`: the entry changed since the full way read it; nothing is kept.
    if let (Some(cache), Some(seq)) = (ctx.cache.as_deref_mut(), seq) {
        cache.fill(t, table, *key, at, way, seq, f);
    }
}

/// Gives a frame the lane leaves back its length as it came (`came`):
/// `fast::classify` trimmed it. Answers 1, for the frame's bit in a mask.
#[inline(always)]
fn give_back_as_came<B: Buffer>(f: &mut Frame<B>, came: u32) -> u32 {
    f.set_len(came as usize);
    1
}

/// What the lane received and finished from its vif, counted once a vector.
#[derive(Default)]
struct Received {
    packets: u64,
    bytes: u64,
}

impl Received {
    /// Adds a loop's `taken` frames (a mask), `bytes` long together, summed
    /// in a register as the loop went: counted into `self` a frame at a
    /// time, which lives on the stack, a cache hit took 2-3 instructions
    /// more (callgrind).
    #[inline(always)]
    fn add(&mut self, taken: u32, bytes: u64) {
        self.packets += u64::from(taken.count_ones());
        self.bytes += bytes;
    }

    /// Adds what the vector brought to vif `vif`'s counters.
    #[inline(always)]
    fn count(self, stats: &mut crate::stats::Stats, vif: crate::tables::VifIndex) {
        if let Some(c) = stats.vifs.get_mut(vif as usize) {
            c.rx_packets += self.packets;
            c.rx_bytes += self.bytes;
        }
    }
}

/// Pass three for a frame that came `came` bytes long: `fast::finish` to
/// `target`, the verdict set and counted. False if the fast path will not
/// take it after all, having changed nothing: the caller gives the frame
/// back as it came.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `fast::finish`'s, and the frame's count.
fn deliver<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    target: RouteTarget,
    settled: Option<Forwarding>,
    nat: Option<&Nat>,
    rx: &mut Received,
) -> bool {
    let Some(v) = fast::finish(ctx, f, vrf, target, settled, nat) else { return false };
    took(ctx.stats, f, came, v, rx);
    true
}

/// A frame that came `came` bytes long, taken with verdict `v`: set and counted.
#[inline(always)]
fn took<B: Buffer>(stats: &mut crate::stats::Stats, f: &mut Frame<B>, came: u32, v: super::Verdict, rx: &mut Received) {
    f.verdict = v;
    rx.packets += 1;
    rx.bytes += u64::from(came);
    account(stats, f.vif, v, f.len());
}

/// Pass three for the plain hits (`stale`) whose flows remember their
/// routes in an older version of the VRF's table: each route carried over
/// to the current version where no change since covered the destination
/// (`Fib::carried_over`), the others looked up again together, and
/// remembered for the flows' next packets. Any route change in the VRF (a
/// pod come or gone on another node) makes its table a new version. Left
/// to the general path, every active flow of the VRF took it once after
/// each change: its pass cost 1.8-3.0x a hit pass, against 1.1-1.4x now
/// (`vrpktgen pipeline --case all --route-change`). Answers with the
/// frames it gave back, as they came.
#[inline(never)]
fn routed_again<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    came: &[u32; VECTOR],
    vrf: &Vrf,
    probes: &[Probe; VECTOR],
    stale: u32,
    rx: &mut Received,
) -> u32 {
    let mut left = stale;
    // Where no change since covered its destination, its route holds;
    // the others are looked up together.
    let mut keys = [0u32; VECTOR];
    let mut at = [0u8; VECTOR];
    let mut n = 0;
    for i in lanes(stale) {
        // Classified, so its head is whole.
        let (Some(settled), Some(h)) = (flow::settled(ctx, vrf, &probes[i]), fast::head(&frames[i])) else {
            continue;
        };
        let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
        match vrf.v4.carried_over(settled.route.route(), dst) {
            Some(route) => {
                let target = remember(ctx.flows, &vrf.v4, &settled, route);
                if target.is_some_and(|t| deliver(ctx, &mut frames[i], came[i], vrf, t, Some(settled), None, rx)) {
                    left &= !(1 << i);
                }
            }
            None => {
                keys[n] = dst;
                at[n] = i as u8;
                n += 1;
            }
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    let fibs: [&Fib<u32>; VECTOR] = [&vrf.v4; VECTOR];
    Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    for j in 0..n {
        let i = usize::from(at[j]);
        let Some(settled) = flow::settled(ctx, vrf, &probes[i]) else { continue };
        let target = remember(ctx.flows, &vrf.v4, &settled, routes[j]);
        if target.is_some_and(|t| deliver(ctx, &mut frames[i], came[i], vrf, t, Some(settled), None, rx)) {
            left &= !(1 << i);
        }
    }
    for i in lanes(left) {
        frames[i].set_len(came[i] as usize);
    }
    left
}

/// `route`, of `fib`'s current version (a VRF's table of either family),
/// remembered in the hit's flow (`settled`) for its next packets; answers
/// with its target.
#[inline(always)]
fn remember<K: FibKey>(
    flows: Option<&FlowTable>,
    fib: &Fib<K>,
    settled: &Forwarding,
    route: Route,
) -> Option<RouteTarget> {
    remember_at(flows, fib, settled.slot, settled.route, route)
}

/// `remember` for the hit in `slot` whose flow remembered `memo`.
#[inline(always)]
fn remember_at<K: FibKey>(
    flows: Option<&FlowTable>,
    fib: &Fib<K>,
    slot: u32,
    memo: RouteMemo,
    route: Route,
) -> Option<RouteTarget> {
    if let Some(table) = flows {
        table.remember_route_at(slot, memo, route);
    }
    fib.target(route)
}

/// The target of the route the hit in `slot` remembers (`memo`), if it is
/// of `fib`'s current version; else `dst`'s (its destination, read only
/// then) taken again and remembered (`route_again`). What every hit that
/// is not routed in a batch (the fabric lanes, the rewriting hits, the
/// drops) does first.
#[inline(always)]
fn recalled<K: FibKey>(
    flows: Option<&FlowTable>,
    fib: &Fib<K>,
    slot: u32,
    memo: RouteMemo,
    dst: impl FnOnce() -> Option<K>,
) -> Option<RouteTarget> {
    fib.recall(memo.route()).unwrap_or_else(|| route_again(flows, fib, slot, memo, dst()?))
}

/// The route of `dst` in `fib` (a VRF's table of either family) for the
/// hit in `slot` whose flow remembers it (`memo`) in an older version of
/// the table, carried over or looked up again (`Fib::route_again`), and
/// remembered: `routed_again` a frame at a time, for the fabric lanes, the
/// rewriting hits and the drops. Out of line: it is the rare way (marked
/// `#[cold]` as well, it cost the IPv4 lane 10-19 instructions a packet
/// elsewhere, in code laid out around it: callgrind).
/// Given the hit's fields, not the hit: a drop's hit would then have to be
/// copied whole out of the answer `FlowTable::dropping` had just written,
/// and that copy (a 16-byte load of what was stored in smaller pieces)
/// stalled every drop, 5-10 ns a packet (`perf annotate`).
#[inline(never)]
fn route_again<K: FibKey>(
    flows: Option<&FlowTable>,
    fib: &Fib<K>,
    slot: u32,
    memo: RouteMemo,
    dst: K,
) -> Option<RouteTarget> {
    remember_at(flows, fib, slot, memo, fib.route_again(memo.route(), dst))
}

/// Pass three for a hit on a flow that drops (`FlowTable::dropping`), from
/// a pod (once `translated` found no entry that forwards), or from the
/// fabric with `pod` the next hop its label named, if it named a pod's:
/// dropped and counted on its flow, as the general path drops it
/// (`flow::on_hit`) once it has routed it, so only where its route, as the
/// flow remembers it, still holds and has flows tracked.
/// Before, a pod that kept sending what its policy denies (a UDP flood, a
/// retrying client) sent every packet through the general path (72-75 ns
/// a packet to a local pod, 88-91 into a tunnel, as `--general-path`
/// measures it), and from another node each was stripped, refused and put
/// back first (124-126 ns); now 45-46 ns a packet (`vrpktgen pipeline
/// --case CASE --flow-policy --flow-deny`). False, with nothing changed,
/// for any other frame: a new flow (no tag of its key found: asked first,
/// and nearly free), an entry decided under an older policy, and the
/// reverse entry of a pair (a denied pair's other side may be one the
/// policy lets open the conversation; a floating IP's answers are judged
/// by their pair's forward entry: `FlowTable::dropping`). A floating-IP
/// pod's own denied flows are not asked: the call, even out of the hit
/// loop, cost its answers' hits 13-15 instructions (callgrind).
#[inline(never)]
fn dropped<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    pod: Option<RouteTarget>,
    rx: &mut Received,
) -> bool {
    // Routed first on the general path: no route is a drop of its own, and
    // a route to the node itself has no flow looked up. A route the flow
    // remembers in an older version is taken again and remembered: the
    // general path, which would take it, remembers no dropping flow's, and
    // after any route change in the VRF every packet of a denied flow went
    // there.
    let flows = ctx.flows;
    let target = |hit: &Forwarding, f: &Frame<B>| {
        pod.or_else(|| {
            recalled(flows, &vrf.v4, hit.slot, hit.route, || {
                fast::head(f).map(|h| u32::from_be_bytes([h[30], h[31], h[32], h[33]]))
            })
        })
    };
    let count = |f: &Frame<B>| {
        let h = fast::head(f)?;
        Some((usize::from(u16::from_be_bytes([h[16], h[17]])), fast::tcp_flags(h, f.data())))
    };
    drop_on_flow(ctx, f, came, vrf, probe, rx, target, count)
}

/// `dropped` and `dropped6`: the frame dropped and counted on its flow if
/// the flow drops, where the hit's route (`target`) has flows tracked;
/// `count` gives the packet's length and TCP flags.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `dropped`'s, and the family's two reads.
fn drop_on_flow<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    rx: &mut Received,
    target: impl FnOnce(&Forwarding, &Frame<B>) -> Option<RouteTarget>,
    count: impl FnOnce(&Frame<B>) -> Option<(usize, u8)>,
) -> bool {
    let Some(table) = ctx.flows.filter(|_| probe.hinted() && vrf.tracks_every_flow()) else { return false };
    let Some((hit, reason)) = table.dropping(probe, vrf.policy_generations()) else { return false };
    let Some(target) = target(&hit, f) else { return false };
    if !flow::tracked_to(ctx.t, vrf, ctx.t.vif(f.vif), target) {
        return false;
    }
    let Some((total, flags)) = count(f) else { return false };
    flow::count_settled(ctx, hit.slot, total, flags);
    took(ctx.stats, f, came, super::Verdict::Drop(reason), rx);
    true
}

/// `translated` for a frame of `from_pod6` whose flow is not a plain hit
/// (`flow::settled` found none), with `route` its route in `vrf`'s
/// current table version: a hit on an entry that routes in another VRF (a pod's answers
/// to a client of another network on this node, routed back in that
/// network, where this VRF has no route to it), else perhaps one on a
/// flow that drops (`dropped6`). An entry that rewrites is the general
/// path's: a floating IP, a service's port, is IPv4. A composite in the
/// other VRF takes the member the packet's hash selects, unpinned, as in
/// `translated_hit`. Before, every IPv6 answer across networks took the
/// general path.
#[inline(never)]
fn translated6<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    route: Route,
    rx: &mut Received,
) -> bool {
    // Only the answers of a network that others import route elsewhere
    // (`Vrf::imported_elsewhere`); elsewhere, reading for one first cost a
    // denied flow's drop 149 instructions (callgrind, local_forward6
    // --flow-deny). A hint: an entry it misses is the general path's.
    let found = (vrf.imported_elsewhere > 0).then(|| flow::translated(ctx, vrf, probe)).flatten();
    let Some((settled, tr)) = found else {
        // A flow that drops remembers its route too, for its next
        // packets' drops (`from_pod6`).
        let flows = ctx.flows;
        let remembered = |hit: &Forwarding, _: &Frame<B>| remember(flows, &vrf.v6, hit, route);
        return dropped6(ctx, f, came, vrf, probe, remembered, rx);
    };
    if !tr.nat.is_none() {
        return false;
    }
    let (routed_in, target) = match tr.route_vrf {
        None => (vrf, vrf.v6.target(route)),
        Some(id) => {
            let Some((routed_in, h)) = ctx.t.vrf(id).zip(fast6::head(f)) else { return false };
            (routed_in, routed_in.v6.lookup(fast6::destination(h)))
        }
    };
    let Some((target, ecmp)) = target.and_then(|t| unpinned_member(ctx.t, tr.route_vrf, t, settled.hash)) else {
        return false;
    };
    if !deliver6(ctx, f, came, routed_in, target, Some(settled), rx) {
        return false;
    }
    if ecmp {
        count_unpinned(ctx.stats, routed_in.id);
    }
    true
}

/// For a frame of an IPv6 pass that `fast6::finish` refused untracked
/// (`settled` is `None`) in a VRF that does not track every flow: its
/// verdict, if its route to `target` is one flows track there after all
/// (`flow::tracked_to`: a composite, whose member the flow pins, where the
/// VRF tracks flows for its ECMP routes; a pod of another network whose
/// policy judges it) and its flow, looked up cold, only forwards. The IPv4
/// pass knows those up front from the VRF's ECMP hint; an IPv6 route is
/// known only once looked up. Before, every IPv6 packet to a service's
/// address in a VRF without a policy (Kubernetes' default) took the
/// general path. Out of line: other frames never come here.
#[inline(never)]
fn tracked6_cold<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    in_vif: Option<&Vif>,
    target: RouteTarget,
    settled: Option<Forwarding>,
    probe: &mut Probe,
) -> Option<super::Verdict> {
    let table = tracked_after_all(ctx, vrf, in_vif, target, settled)?;
    flow::prefetch_key(table, &fast6::flow_key(fast6::head(f)?, vrf.id), probe);
    table.prefetch_slots(probe);
    let settled = flow::settled(ctx, vrf, probe)?;
    fast6::finish(ctx, f, vrf, target, Some(settled))
}

/// The flow table, if a frame of an IPv6 pass that `fast6::finish` refused
/// untracked (`settled` is `None`) in `vrf` is tracked after all: the VRF
/// does not track every flow, but its route to `target` is one flows track
/// there (`flow::tracked_to`).
#[inline(always)]
fn tracked_after_all<'c, B>(
    ctx: &Ctx<'c, B>,
    vrf: &Vrf,
    in_vif: Option<&Vif>,
    target: RouteTarget,
    settled: Option<Forwarding>,
) -> Option<&'c FlowTable> {
    let table = ctx.flows.filter(|_| settled.is_none() && !vrf.tracks_every_flow())?;
    flow::tracked_to(ctx.t, vrf, in_vif, target).then_some(table)
}

/// `dropped` for a frame of an IPv6 lane (`from_pod6`, `from_fabric6`)
/// that `fast6::classify` accepted, whose target `target` gives from the
/// flow's hit: the pod its tunnel's label named, the route the flow
/// remembers, or the route the lane looked up. Before, a pod that kept
/// sending what its policy denies sent every IPv6 packet through the
/// general path.
#[inline(never)]
fn dropped6<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    target: impl FnOnce(&Forwarding, &Frame<B>) -> Option<RouteTarget>,
    rx: &mut Received,
) -> bool {
    let count = |f: &Frame<B>| fast6::head(f).map(|h| fast6::flow_count(h, f.data()));
    drop_on_flow(ctx, f, came, vrf, probe, rx, target, count)
}

/// Pass three for a hit that is not plain (`flow::translated`): the
/// flow's entry forwards, perhaps with a NAT rewrite, perhaps into another
/// VRF to route in (a floating IP's answers, routed in its public VRF; a
/// pod's answers to a pod of another network, routed in that network).
/// `pod` is the next hop a tunnel's label named, if it named a pod's. The
/// route is the one the entry remembers in the VRF it routes in, or looked
/// up now and remembered: no vector-wide lookup knew which VRF to look in. False, with nothing
/// changed, for the general path to take the frame: a new flow, a drop, a
/// decision to make again, an ECMP member to pin again.
#[inline(never)]
fn translated<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    pod: Option<RouteTarget>,
    rx: &mut Received,
) -> bool {
    let Some((settled, tr)) = flow::translated(ctx, vrf, probe) else {
        return dropped(ctx, f, came, vrf, probe, pod, rx);
    };
    translated_hit(ctx, f, came, vrf, settled, tr, pod, rx).is_some()
}

/// `translated` for a frame the flow cache did not have (its key and set:
/// `key`, `at`): a hit it forwards (a pod's answers to a client of another
/// network, routed back there; a floating IP's client's packet out of a
/// tunnel, rewritten to its pod) fills the cache, with its rewrite, as a
/// plain hit does. Apart from `translated`, so that the lanes' loops carry
/// none of it (kept in `translated` as an answer to fill in, it cost the
/// fabric's floating-IP hits 36 instructions and the untracked pod frames
/// 12, callgrind).
#[inline(never)]
#[allow(clippy::too_many_arguments)] // `translated`'s, and the cache's key and set.
fn translated_filling<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    probe: &Probe,
    pod: Option<RouteTarget>,
    key: &express::Key,
    at: u32,
    rx: &mut Received,
) -> bool {
    let Some((settled, tr)) = flow::translated(ctx, vrf, probe) else {
        return dropped(ctx, f, came, vrf, probe, pod, rx);
    };
    let Some(way) = translated_hit(ctx, f, came, vrf, settled, tr, pod, rx) else { return false };
    fill(ctx, vrf, key, at, probe, &way, f);
    true
}

/// `translated` for the hit its read found: `settled`, with `tr`. How it
/// forwarded the hit, if it did (`None`: it changed nothing).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // `translated`'s, read.
fn translated_hit<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    came: u32,
    vrf: &Vrf,
    settled: Forwarding,
    tr: crate::flow::Translation,
    pod: Option<RouteTarget>,
    rx: &mut Received,
) -> Option<Taken> {
    let h = fast::head(f)?;
    let routed_in = match tr.route_vrf {
        None => vrf,
        Some(id) => ctx.t.vrf(id)?,
    };
    let target = match (pod, tr.route_vrf) {
        (Some(pod), None) => Some(pod),
        _ => recalled(ctx.flows, &routed_in.v4, settled.slot, settled.route, || {
            // Routed in another VRF, the packet is routed as rewritten (to
            // the pod again, for a hairpin's answers); otherwise as it came.
            let came_to = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
            Some(tr.nat.dst.filter(|_| tr.route_vrf.is_some()).unwrap_or(came_to))
        }),
    };
    let mut target = target?;
    let nat = (!tr.nat.is_none()).then_some(&tr.nat);
    // Routed on after its rewrite, the packet is hashed as rewritten, as
    // the general path hashes it there; the entry's own hash is of the
    // packet as it came (the flow cache checks the entry against it: `hit`).
    let hit = settled;
    let settled = match (nat, tr.route_vrf) {
        (Some(nat), Some(_)) => Forwarding { hash: fast::translated_hash(h, nat, ctx.cfg.hash_seed), ..settled },
        _ => settled,
    };
    // Routed on in another VRF to a composite (a public network's
    // gateways), the packet takes the member its hash selects, unpinned:
    // its entry pins nothing there, as the general path does not. (Through
    // `unpinned_member`, as `translated6` does, this cost the answers
    // across networks 37 instructions: callgrind, cross_vrf_out.)
    let mut ecmp = false;
    if let (Some(_), Some(NextHop::Composite(group))) = (tr.route_vrf, ctx.t.nexthop(target.nh)) {
        target = *group.select(settled.hash)?;
        ecmp = true;
    }
    if !deliver(ctx, f, came, routed_in, target, Some(settled), nat, rx) {
        return None;
    }
    if ecmp {
        count_unpinned(ctx.stats, routed_in.id);
    }
    Some(Taken { hit, target, vrf: routed_in.id, landed: vrf.id, unpinned: ecmp, tr: Some(tr) })
}

/// A hit's `target` in the VRF its entry routes it in (`route_vrf`): there,
/// a composite (a public network's gateways, a client network's nodes)
/// gives the member the packet's `hash` selects, unpinned, since its entry
/// pins nothing there, as the general path does not; with `true`, for
/// `count_unpinned`. Any other target as it is. `None`: an empty composite.
#[inline(always)]
fn unpinned_member(
    t: &crate::tables::Tables,
    route_vrf: Option<u32>,
    target: RouteTarget,
    hash: u32,
) -> Option<(RouteTarget, bool)> {
    match (route_vrf, t.nexthop(target.nh)) {
        (Some(_), Some(NextHop::Composite(group))) => group.select(hash).map(|m| (*m, true)),
        _ => Some((target, false)),
    }
}

/// Counts a packet sent to an `unpinned_member` on its VRF's composites.
#[inline(always)]
fn count_unpinned(stats: &mut crate::stats::Stats, vrf: u32) {
    if let Some(c) = stats.vrf_mut(vrf) {
        c.ecmp_composites += 1;
    }
}

/// The lane for a vector from the fabric: MPLS over UDP or GRE to this node
/// around a plain IPv4 packet, whose label names a local pod (`encap`) or
/// a VRF to route it in (`vrf-lookup`), as `decap` and the fast path would
/// carry it. The flows of the packets are looked up as from a pod, in the
/// VRF each lands in, and a plain flow's hits to a pod are taken from
/// the flow cache, as a pod's are (`express`). Each frame is checked whole
/// before anything changes; one stripped in pass three that the fast path
/// then refuses is given back its outer headers, as it came.
#[inline(never)]
fn from_fabric<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    vif: &Vif,
    probes: &mut [Probe; VECTOR],
    asked: &mut Asked,
    watch: &mut Stopwatch<'_>,
) -> Left {
    let t = ctx.t;
    let first = vif.index;
    let cache = ctx.cache.as_deref();

    // Pass one: check each tunnel and its inner packet; queue the route
    // lookups, and start the flow lookups, that the VRF it lands in asks
    // for: in the flow cache where it may be there (`cached`), else in
    // the table.
    let mut left = 0u32;
    let mut probed = 0u32;
    let mut cached = 0u32;
    let mut came = [0u32; VECTOR];
    let mut inbound = [Inbound::NONE; VECTOR];
    let mut vrfs: [Option<&Vrf>; VECTOR] = [None; VECTOR];
    let mut last: Option<&Vrf> = None;
    let mut fibs: [&Fib<u32>; VECTOR] = [t.empty_fib_v4(); VECTOR];
    let mut keys = [0u32; VECTOR];
    let mut lookup_of = [0u8; VECTOR];
    let mut n = 0;
    // Tunnels around IPv6, for `from_fabric6`, with what their outer
    // headers said.
    let mut six = 0u32;
    let mut outer6 = [Outer::NONE; VECTOR];
    for (i, f) in frames.iter_mut().enumerate() {
        came[i] = f.len() as u32;
        let found = if f.vif == first { tunnel_in(t, f.data(), vif) } else { Found::Neither };
        let (tun, label) = match found {
            Found::V4(tun, label) => (tun, label),
            Found::V6(outer) => {
                six |= 1 << i;
                outer6[i] = outer;
                left |= 1 << i;
                continue;
            }
            Found::Neither => {
                left |= 1 << i;
                continue;
            }
        };
        let vrf = match last {
            Some(v) if v.id == tun.vrf => Some(v),
            _ => {
                let v = t.vrf(tun.vrf);
                last = v.or(last);
                v
            }
        };
        let Some(vrf) = vrf else {
            left |= 1 << i;
            continue;
        };
        let lookup = tun.nh.is_none();
        let untracked = match ctx.flows.filter(|_| vrf.tracks_flows()) {
            None => true,
            Some(table) if vrf.tracks_every_flow() => {
                // Written out, not `Inbound::inner_head`: through it, a
                // hit took 15 instructions more (callgrind).
                let inner = f.data().get(usize::from(tun.inner_at) - ETH..).and_then(fast::head_of);
                let key = match (cache, inner) {
                    (Some(_), Some(h)) => express::Key::of_tunnelled(h, label),
                    _ => None,
                };
                if let (Some(cache), Some(key)) = (cache, key) {
                    cached |= asked.ask(cache, i, key);
                } else if inner.is_some_and(|h| flow::prefetch_head(table, h, vrf, &mut probes[i])) {
                    probed |= 1 << i;
                    // Its hit reads the rewrite too (`translated`).
                    if vrf.floating_ips > 0 {
                        probes[i].fetch_whole_slot();
                    }
                } else {
                    left |= 1 << i;
                    continue;
                }
                false
            }
            // Only the ECMP routes track flows: a pod's label goes to no
            // composite; a VRF's, where the hint rules the address out.
            Some(_) if !lookup || (!vrf.ecmp_blocks.may_hold(tun.dst) && vrf.ecmp_blocks.is_complete()) => true,
            // Any other may reach a composite: the general path's.
            Some(_) => {
                left |= 1 << i;
                continue;
            }
        };
        if untracked && lookup {
            fibs[n] = &vrf.v4;
            keys[n] = tun.dst;
            lookup_of[i] = n as u8;
            n += 1;
        }
        inbound[i] = tun;
        vrfs[i] = Some(vrf);
    }
    watch.mark(Stage::Parse);

    // Pass two: the flows' slots are fetched while the routes are looked
    // up. A tunnel the cache has (`hits`) fetches its flow's slot; one it
    // has not (`unfilled`) is looked up in the table, and fills the cache
    // if the full way forwards it.
    let (mut hits, mut unfilled) = (0u32, 0u32);
    if let Some(table) = ctx.flows {
        for i in lanes(probed) {
            table.prefetch_slots(&mut probes[i]);
        }
        if let (Some(cache), true) = (cache, cached != 0) {
            for i in lanes(cached) {
                let hit = asked.find::<false>(cache, i, table);
                if hit != 0 {
                    hits |= hit;
                    continue;
                }
                match (inbound[i].inner_head(&frames[i]), vrfs[i]) {
                    (Some(h), Some(vrf)) if flow::prefetch_head(table, h, vrf, &mut probes[i]) => {
                        if vrf.floating_ips > 0 {
                            probes[i].fetch_whole_slot();
                        }
                        table.prefetch_slots(&mut probes[i]);
                        unfilled |= 1 << i;
                    }
                    _ => {
                        vrfs[i] = None;
                        left |= 1 << i;
                    }
                }
            }
            probed |= unfilled;
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n > 0 {
        Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    }
    watch.mark(Stage::Lookup);

    // Pass three: strip each tunnel and carry out its packet's next hop;
    // the cache's hits first.
    let mut rx = Received::default();
    if let (Some(table), Some(cache), true) = (ctx.flows, ctx.cache.as_deref_mut(), hits != 0) {
        let (mut refused, mut bytes) = (0, 0);
        let mut tally = express::Tally::NONE;
        for i in lanes(hits) {
            let (f, tun) = (&mut frames[i], &inbound[i]);
            let strip = usize::from(tun.inner_at) - ETH;
            match cache.forward_tunnelled(asked.at[i], table, f, strip, tun.inner_len, ctx.now, &mut tally, ctx.stats) {
                Ok(()) => bytes += u64::from(came[i]),
                Err(miss) => {
                    cache.refused(asked.at[i], miss);
                    refused |= 1 << i;
                }
            }
            vrfs[i] = None;
        }
        rx.add(hits & !refused, bytes);
        cache.count_hits(hits & !refused);
        left |= refused;
        tally.flush(ctx.stats);
    }
    for (i, f) in frames.iter_mut().enumerate() {
        let Some(vrf) = vrfs[i] else { continue };
        let tun = inbound[i];
        // The pod the label names, or the VRF's route.
        let pod = tun.nh.map(|nh| RouteTarget { nh, label: RouteTarget::NO_LABEL });
        let carry = if probed & (1 << i) != 0 {
            // A hit on a flow that only forwards; routed in a VRF, its
            // route remembered in this table version. In a VRF with
            // floating IPs, else one on a flow that rewrites, whose target
            // comes with its rewrite once the tunnel is stripped.
            // Its route remembered in an older version (a route of the
            // VRF changed since): carried over or looked up again
            // (`route_again`; `routed_again` says why).
            let settled = flow::settled(ctx, vrf, &probes[i]);
            let target =
                settled.and_then(|s| pod.or_else(|| recalled(ctx.flows, &vrf.v4, s.slot, s.route, || Some(tun.dst))));
            match target {
                Some(t) => Some(Carry::To(t, settled)),
                None if settled.is_none() && vrf.floating_ips > 0 => Some(Carry::Translated),
                // Elsewhere, one on a flow that drops (`dropped`; `translated`
                // asks it too).
                None if settled.is_none() && probes[i].hinted() => Some(Carry::Dropped),
                None => None,
            }
        } else {
            let j = usize::from(lookup_of[i]);
            pod.or_else(|| fibs[j].target(routes[j])).map(|t| Carry::To(t, None))
        };
        let Some(carry) = carry else {
            left |= 1 << i;
            continue;
        };
        let filling = match carry {
            Carry::To(target, Some(hit)) if unfilled & (1 << i) != 0 => Some((target, hit)),
            _ => None,
        };
        let strip = usize::from(tun.inner_at) - ETH;
        let kept = [f.data()[strip + 12], f.data()[strip + 13]];
        f.pull_front(strip);
        f.set_len(ETH + usize::from(tun.inner_len));
        f.data_mut()[12..14].copy_from_slice(&[0x08, 0x00]);
        let delivered = match carry {
            Carry::To(target, settled) => deliver(ctx, f, came[i], vrf, target, settled, None, &mut rx),
            Carry::Translated if unfilled & (1 << i) != 0 => {
                translated_filling(ctx, f, came[i], vrf, &probes[i], pod, &asked.keys[i], asked.at[i], &mut rx)
            }
            Carry::Translated => translated(ctx, f, came[i], vrf, &probes[i], pod, &mut rx),
            Carry::Dropped => dropped(ctx, f, came[i], vrf, &probes[i], pod, &mut rx),
        };
        if delivered {
            if let Some(c) = ctx.stats.vrf_mut(vrf.id) {
                c.decaps += 1;
            }
            if let Some((target, hit)) = filling {
                let way = Taken::plain(hit, target, vrf.id);
                fill(ctx, vrf, &asked.keys[i], asked.at[i], &probes[i], &way, f);
            }
        } else {
            f.data_mut()[12..14].copy_from_slice(&kept);
            f.push_front(strip);
            f.set_len(came[i] as usize);
            left |= 1 << i;
        }
    }
    rx.count(ctx.stats, first);
    watch.mark(Stage::Rewrite);
    let left = Left { frames: left, probed };
    if six == 0 {
        return left;
    }
    from_fabric6(ctx, frames, vif, left, (six, &outer6), probes, asked, watch)
}

/// The lane for the tunnels `from_fabric` left (in `left`) because they
/// carry IPv6 (`six`, with what their outer headers said: `outer`): a
/// plain IPv6 packet (`fast6::inspect_packet`) whose label names a local
/// pod or a VRF to route it in (`landing`), stripped and carried out as
/// `from_pod6` carries a pod's, untracked, a hit on a flow that only
/// forwards or drops (`dropped6`) in the VRF it lands in, or one whose
/// route says it is tracked after all (`tracked6_cold`). A hit routed in
/// the VRF takes the route its flow remembers, as in `from_fabric`: before,
/// each was looked up (decap_mplsoudp6 under the 100-rule policy 1,094
/// instructions a packet, against 993 since; callgrind). One the fast
/// path then refuses is given back its outer headers, as it came. Out of
/// line, as `from_pod6`. Before the lane, each such packet took the
/// general path (`vrpktgen pipeline --case decap_mplsoudp6 --general-path`
/// measures it).
#[inline(never)]
#[allow(clippy::too_many_arguments)] // `from_fabric`'s, and what it found.
fn from_fabric6<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    vif: &Vif,
    left: Left,
    (six, outer): (u32, &[Outer; VECTOR]),
    probes: &mut [Probe; VECTOR],
    asked: &mut Asked,
    watch: &mut Stopwatch<'_>,
) -> Left {
    let t = ctx.t;
    let cache = ctx.cache.as_deref();

    // Pass one: check each tunnel and its inner packet; start the flow
    // lookups that the VRF it lands in asks for (in the flow cache where
    // it may be there, `cached`, as `from_fabric` does), and queue the
    // others' route lookups.
    let mut tunnels = 0u32;
    let mut probed = 0u32;
    let mut cached = 0u32;
    let mut came = [0u32; VECTOR];
    let mut inbound = [Inbound::NONE; VECTOR];
    let mut vrfs: [Option<&Vrf>; VECTOR] = [None; VECTOR];
    let mut fibs: [&Fib<u128>; VECTOR] = [t.empty_fib_v6(); VECTOR];
    let mut keys = [0u128; VECTOR];
    let mut lookup_of = [0u8; VECTOR];
    let mut n = 0;
    for i in lanes(six) {
        let f = &frames[i];
        let Some((tun, dst)) = tunnel6_in(t, f.data(), outer[i]) else { continue };
        let Some(vrf) = t.vrf(tun.vrf) else { continue };
        let inner = f.data().get(usize::from(tun.inner_at) - ETH..).and_then(fast6::head_of);
        if let (Some(table), Some(h)) = (ctx.flows.filter(|_| vrf.tracks_every_flow()), inner) {
            match cache.zip(express::Key::of_tunnelled6(h, outer[i].label)) {
                Some((cache, key)) => cached |= asked.ask(cache, i, key),
                None => {
                    flow::prefetch_key(table, &fast6::flow_key(h, vrf.id), &mut probes[i]);
                    probed |= 1 << i;
                }
            }
        } else if tun.nh.is_none() {
            fibs[n] = &vrf.v6;
            keys[n] = dst;
            lookup_of[i] = n as u8;
            n += 1;
        }
        came[i] = f.len() as u32;
        inbound[i] = tun;
        vrfs[i] = Some(vrf);
        tunnels |= 1 << i;
    }
    watch.mark(Stage::Parse);

    // Pass two: the flows' slots are fetched while the routes are looked
    // up; a tunnel the cache has not (`unfilled`) is looked up in the
    // table, and fills the cache if the full way forwards it.
    let (mut hits, mut unfilled) = (0u32, 0u32);
    if let Some(table) = ctx.flows {
        for i in lanes(probed) {
            table.prefetch_slots(&mut probes[i]);
        }
        if let (Some(cache), true) = (cache, cached != 0) {
            for i in lanes(cached) {
                let hit = asked.find::<true>(cache, i, table);
                let inner = || frames[i].data().get(usize::from(inbound[i].inner_at) - ETH..).and_then(fast6::head_of);
                if hit != 0 {
                    hits |= hit;
                } else if let (Some(vrf), Some(h)) = (vrfs[i], inner()) {
                    flow::prefetch_key(table, &fast6::flow_key(h, vrf.id), &mut probes[i]);
                    unfilled |= 1 << i;
                }
            }
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n > 0 {
        Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    }
    if let (Some(table), true) = (ctx.flows, unfilled != 0) {
        for i in lanes(unfilled) {
            table.prefetch_slots(&mut probes[i]);
        }
        probed |= unfilled;
    }
    watch.mark(Stage::Lookup);

    // Pass three: strip each tunnel and carry out its packet's next hop;
    // the cache's hits first.
    let mut rx = Received::default();
    let mut taken = 0u32;
    if let (Some(table), Some(cache), true) = (ctx.flows, ctx.cache.as_deref_mut(), hits != 0) {
        let (mut tally, mut bytes) = (express::Tally::NONE, 0);
        for i in lanes(hits) {
            let (Some(vrf), tun) = (vrfs[i], inbound[i]) else { continue };
            let inner = (usize::from(tun.inner_at) - ETH, tun.inner_len);
            let f = &mut frames[i];
            match cache.forward_tunnelled6(asked.at[i], table, f, inner, vrf.id, ctx.now, &mut tally, ctx.stats) {
                Ok(()) => {
                    bytes += u64::from(came[i]);
                    taken |= 1 << i;
                }
                // Left to the general path, as it came.
                Err(miss) => cache.refused(asked.at[i], miss),
            }
        }
        rx.add(hits & taken, bytes);
        cache.count_hits(hits & taken);
        tally.flush(ctx.stats);
        tunnels &= !hits;
    }
    for i in lanes(tunnels) {
        let (Some(vrf), tun) = (vrfs[i], inbound[i]) else { continue };
        let f = &mut frames[i];
        let strip = usize::from(tun.inner_at) - ETH;
        // The pod the label names, or the VRF's route: for a hit, the one
        // its flow remembers in this table version, else carried over or
        // looked up again (`route_again`), and remembered. A tracked
        // packet that is not a hit that forwards may be one on a flow that
        // drops (`dropped6`), on the route that flow remembers.
        let pod = tun.nh.map(|nh| RouteTarget { nh, label: RouteTarget::NO_LABEL });
        let carry = if probed & (1 << i) != 0 {
            match flow::settled(ctx, vrf, &probes[i]) {
                Some(s) => pod
                    .or_else(|| {
                        recalled(ctx.flows, &vrf.v6, s.slot, s.route, || {
                            fast6::head_of(&f.data()[strip..]).map(fast6::destination)
                        })
                    })
                    .map(|t| Carry::To(t, Some(s))),
                None if probes[i].hinted() => Some(Carry::Dropped),
                None => None,
            }
        } else {
            let j = usize::from(lookup_of[i]);
            pod.or_else(|| fibs[j].target(routes[j])).map(|t| Carry::To(t, None))
        };
        let Some(carry) = carry else { continue };
        let kept = [f.data()[strip + 12], f.data()[strip + 13]];
        f.pull_front(strip);
        f.set_len(ETH + usize::from(tun.inner_len));
        f.data_mut()[12..14].copy_from_slice(&[0x86, 0xdd]);
        let done = match carry {
            Carry::Dropped => {
                // As `dropped`'s: a route of an older version taken again.
                let flows = ctx.flows;
                let target = |hit: &Forwarding, f: &Frame<B>| {
                    pod.or_else(|| {
                        recalled(flows, &vrf.v6, hit.slot, hit.route, || fast6::head(f).map(fast6::destination))
                    })
                };
                dropped6(ctx, f, came[i], vrf, &probes[i], target, &mut rx)
            }
            // No IPv6 entry rewrites: a floating IP is IPv4.
            Carry::Translated => false,
            Carry::To(target, settled) => {
                let finished = fast6::finish(ctx, f, vrf, target, settled);
                // A hit the full way forwarded fills the cache.
                let filling = settled.filter(|_| finished.is_some() && unfilled & (1 << i) != 0);
                let done = finished
                    .or_else(|| tracked6_cold(ctx, f, vrf, Some(vif), target, settled, &mut probes[i]))
                    .is_some_and(|v| {
                        took(ctx.stats, f, came[i], v, &mut rx);
                        true
                    });
                if let (true, Some(hit)) = (done, filling) {
                    let way = Taken::plain(hit, target, vrf.id);
                    fill(ctx, vrf, &asked.keys[i], asked.at[i], &probes[i], &way, f);
                }
                done
            }
        };
        if done {
            if let Some(c) = ctx.stats.vrf_mut(vrf.id) {
                c.decaps += 1;
            }
            taken |= 1 << i;
        } else {
            f.data_mut()[12..14].copy_from_slice(&kept);
            f.push_front(strip);
            f.set_len(came[i] as usize);
        }
    }
    rx.count(ctx.stats, vif.index);
    watch.mark(Stage::Rewrite);
    Left { frames: left.frames & !taken, probed: left.probed | (probed & !taken) }
}

/// `tunnel_in` for a tunnel around an IPv6 packet, from what its outer
/// headers said (`outer`): its inner packet, if `fast6::inspect_packet`
/// accepts it, with its destination.
#[inline(always)]
fn tunnel6_in(t: &Tables, d: &[u8], outer: Outer) -> Option<(Inbound, u128)> {
    let (inner_at, ip_end) = (usize::from(outer.inner_at), usize::from(outer.ip_end));
    let (dst, inner_len) = fast6::inspect_packet(d.get(inner_at - ETH..ip_end)?, None)?;
    let Landing { vrf, pod: nh } = t.landing(outer.label)?;
    Some((Inbound { inner_at: outer.inner_at, inner_len: inner_len as u16, dst: 0, vrf, nh }, dst))
}

/// How the fabric lane's pass three carries out a packet, once its tunnel
/// is stripped.
#[derive(Clone, Copy)]
enum Carry {
    /// To its route's or its label's target, with its settled flow, if any.
    To(RouteTarget, Option<Forwarding>),
    /// As its flow's entry says, rewrite and all, or dropped (`translated`).
    Translated,
    /// Dropped, if its flow's entry says so (`dropped`): the read of a
    /// rewrite first, off the slot's first line, cost such a drop 17 ns.
    Dropped,
}

/// A tunnel packet the fabric lane takes: where its inner packet starts,
/// its length and destination, the VRF it lands in, and the pod's next
/// hop its label names (`None`: the label names the VRF, to route it in).
#[derive(Clone, Copy)]
struct Inbound {
    inner_at: u16,
    inner_len: u16,
    /// An IPv4 packet's (`tunnel6_in` answers with an IPv6 one's beside).
    dst: u32,
    vrf: u32,
    nh: Option<u32>,
}

impl Inbound {
    const NONE: Inbound = Inbound { inner_at: 0, inner_len: 0, dst: 0, vrf: 0, nh: None };

    /// The first `HEAD` bytes of the inner packet in `f`, the tunnel's
    /// frame, from its Ethernet header's room on.
    #[inline(always)]
    fn inner_head<'f, B: Buffer>(&self, f: &'f Frame<B>) -> Option<&'f [u8; fast::HEAD]> {
        f.data().get(usize::from(self.inner_at) - ETH..).and_then(fast::head_of)
    }
}

/// `d`, a frame from fabric vif `vif`, if it is a tunnel to this node that
/// `decap::tunnel` accepts, whose label names an `encap` next hop to a
/// local pod or a VRF to route in, around a plain IPv4 packet that
/// `fast::inspect` accepts (`Found::V4`). A tunnel to this node around an
/// IPv6 packet is told apart (`Found::V6`), with what its outer headers
/// said, so that `from_fabric6` does not read them again (a second read
/// cost its packets 80 instructions, callgrind). Anything else is the
/// general path's, which says why it drops it.
#[inline(always)]
fn tunnel_in(t: &Tables, d: &[u8], vif: &Vif) -> Found {
    let Some(Ok((label, inner_at, ip_end))) = decap::tunnel(d, vif) else { return Found::Neither };
    let Some(inner) = d.get(inner_at - ETH..ip_end) else { return Found::Neither };
    let Some((dst, inner_len)) = fast::inspect(inner, None) else {
        return match inner.get(ETH) {
            Some(v) if v >> 4 == 6 => Found::V6(Outer { label, inner_at: inner_at as u16, ip_end: ip_end as u16 }),
            _ => Found::Neither,
        };
    };
    match t.landing(label) {
        Some(Landing { vrf, pod: nh }) => {
            Found::V4(Inbound { inner_at: inner_at as u16, inner_len: inner_len as u16, dst, vrf, nh }, label)
        }
        None => Found::Neither,
    }
}

/// What `tunnel_in` found in a frame from the fabric.
enum Found {
    /// A tunnel the IPv4 lane takes, and its label (kept apart: the IPv6
    /// lane's vector of `Inbound`s has no use for it).
    V4(Inbound, u32),
    /// A tunnel to this node around an IPv6 packet, for `from_fabric6`.
    V6(Outer),
    /// Anything else: the general path's.
    Neither,
}

/// What a tunnel's outer headers said (`decap::tunnel`): its label, where
/// its inner packet starts, and where the outer packet ends.
#[derive(Clone, Copy)]
struct Outer {
    label: u32,
    inner_at: u16,
    ip_end: u16,
}

impl Outer {
    const NONE: Outer = Outer { label: 0, inner_at: 0, ip_end: 0 };
}
