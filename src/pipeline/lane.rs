//! The fast lane: a whole vector of frames from one pod, in the common
//! case, in three short passes with nothing carried between them but each
//! frame's destination or flow probe. It takes plain IPv4 that the fast
//! path handles (`fast::classify`, `fast::finish`): untracked, or a hit on
//! a flow that only forwards and remembers its route. Every other frame is
//! left as it came, for the general vector (`process_vector`) to take
//! afterwards from the start, so the lane needs no fallback of its own.
//!
//! Why a lane beside the vector: the vector keeps a dozen per-frame
//! arrays (`Pending`, verdicts, VRFs, flows) so that any frame can take any
//! path, and filling and reading them cost more than the fast path's own
//! work (callgrind: about 220 of 660 instructions a packet for an ECMP
//! encap, 2.3 times the forwarding core's target).

use super::fast;
use super::flow;
use super::{account, lanes, Ctx, Frame, VECTOR};
use crate::flow::{Forwarding, Probe};
use crate::stats::runtime::Stopwatch;
use crate::stats::Stage;
use crate::tables::{Fib, Route, RouteTarget, VifKind, Vrf};

/// Every frame of a vector, as a mask (bit `i`: frame `i`).
#[inline(always)]
pub(super) fn all(frames: usize) -> u32 {
    if frames >= 32 {
        u32::MAX
    } else {
        (1u32 << frames) - 1
    }
}

/// Takes what it can of `frames`, whose verdicts it sets, and answers with
/// the mask of those it left untouched. It takes frames only from the
/// first frame's vif (a receive queue's vector comes from one vif), and
/// only from a pod that may take the fast path.
#[inline(always)]
pub(super) fn run<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    probes: &mut [Probe; VECTOR],
    watch: &mut Stopwatch<'_>,
) -> u32 {
    let t = ctx.t;
    let every = all(frames.len());
    let Some(first) = frames.first().map(|f| f.vif) else { return 0 };
    let Some(vif) = t.vif(first) else { return every };
    if vif.kind != VifKind::Virtual || vif.flags.disabled || !fast::allowed(ctx.cfg, vif) {
        return every;
    }
    let Some(vrf) = t.vrf(vif.vrf) else { return every };
    // Where flows are tracked, the lane takes the hits; where only the
    // ECMP routes track them, an address the VRF's hint rules out of
    // every composite is untracked, and one it names is looked up.
    let table = ctx.flows.filter(|_| vrf.tracks_flows());
    let every_flow = vrf.tracks_every_flow();
    let hint_complete = vrf.ecmp_blocks.is_complete();
    let own = vif.ipv4.filter(|_| vif.flags.source_check);

    // Pass one: classify, and start each tracked frame's flow lookup.
    let mut left = 0u32;
    let mut probed = 0u32;
    let mut keys = [0u32; VECTOR];
    let mut at = [0u8; VECTOR];
    let mut n = 0;
    // Each frame's length as it came, to count it and to give it back
    // untrimmed if the lane leaves it after all.
    let mut came = [0u32; VECTOR];
    for (i, f) in frames.iter_mut().enumerate() {
        came[i] = f.len() as u32;
        let dst = if f.vif == first { fast::classify(f, own) } else { None };
        let Some(dst) = dst else {
            left |= 1 << i;
            continue;
        };
        let untracked = match table {
            None => true,
            Some(table) => {
                let named = every_flow || vrf.ecmp_blocks.may_hold(dst);
                if named && flow::prefetch_fast(table, f, vrf, &mut probes[i]) {
                    probed |= 1 << i;
                    false
                } else {
                    !named && hint_complete
                }
            }
        };
        if untracked {
            keys[n] = dst;
            at[n] = i as u8;
            n += 1;
        } else if probed & (1 << i) == 0 {
            f.set_len(came[i] as usize);
            left |= 1 << i;
        }
    }
    watch.mark(Stage::Parse);

    // Pass two: the flows' slots are fetched while the routes are looked up.
    if let Some(table) = table {
        for i in lanes(probed) {
            table.prefetch_slots(&mut probes[i]);
        }
    }
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n > 0 {
        let fibs: [&Fib<u32>; VECTOR] = [&vrf.v4; VECTOR];
        Fib::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
    }
    watch.mark(Stage::Lookup);

    // Pass three: each frame's next hop, carried out.
    let mut rx = Received::default();
    for j in 0..n {
        let i = usize::from(at[j]);
        left |= finish(ctx, &mut frames[i], i, came[i], vrf, vrf.v4.target(routes[j]), None, &mut rx);
    }
    for i in lanes(probed) {
        // A hit on a flow that only forwards, whose route is remembered in
        // this table version and (where only ECMP routes track flows) still
        // leads to a composite; anything else is the general path's.
        let hit = flow::settled(ctx, vrf, &probes[i]).and_then(|s| {
            let target = vrf.v4.recall(s.route.route())??;
            flow::tracked_to_composite(t, vrf, None, target).then_some((target, s))
        });
        left |= match hit {
            Some((target, s)) => finish(ctx, &mut frames[i], i, came[i], vrf, Some(target), Some(s), &mut rx),
            None => {
                frames[i].set_len(came[i] as usize);
                1 << i
            }
        };
    }
    if let Some(c) = ctx.stats.vifs.get_mut(first as usize) {
        c.rx_packets += rx.packets;
        c.rx_bytes += rx.bytes;
    }
    watch.mark(Stage::Rewrite);
    left
}

/// What the lane received and finished from its vif, counted once a vector.
#[derive(Default)]
struct Received {
    packets: u64,
    bytes: u64,
}

/// Pass three for frame `i`, which came `came` bytes long: `fast::finish`
/// to `target`, and the verdict counted; or, if the fast path will not
/// take it after all, the frame given back as it came, and its bit in the
/// mask of those left.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // One frame's state, kept in registers.
fn finish<B: AsRef<[u8]> + AsMut<[u8]>>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    i: usize,
    came: u32,
    vrf: &Vrf,
    target: Option<RouteTarget>,
    settled: Option<Forwarding>,
    rx: &mut Received,
) -> u32 {
    match target.and_then(|target| fast::finish(ctx, f, vrf, target, settled)) {
        Some(v) => {
            f.verdict = v;
            rx.packets += 1;
            rx.bytes += u64::from(came);
            account(ctx.stats, f.vif, v, f.len());
            0
        }
        None => {
            f.set_len(came as usize);
            1 << i
        }
    }
}
