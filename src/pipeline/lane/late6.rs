//! The second stage of a pod's IPv6 pass (`lane::from_pod6`): the frames
//! whose flows it learned of only from their routes, their flows fetched
//! together (`tracked6_late`). Apart from the passes because nothing else
//! reads what it keeps (`Waiting`).

use super::{fast6, fill, flow, lanes, took, Ctx, Frame, Received, VECTOR};
use crate::flow::Probe;
use crate::memory::Buffer;
use crate::pipeline::express::{Asked, Taken};
use crate::tables::{Route, Vrf};

/// The frames of `from_pod6`'s pass three that wait for their flows
/// (`later`, by their place in the pass), and what the pass knows of them.
pub(super) struct Waiting<'a> {
    pub(super) later: &'a [u8],
    pub(super) at: &'a [u8; VECTOR],
    pub(super) routes: &'a [Route; VECTOR],
    pub(super) came: &'a [u32; VECTOR],
    pub(super) filling: Filling<'a>,
}

/// The frames that asked the flow cache in pass one and missed
/// (`unfilled`, with their keys in `asked`): a hit taken here fills it.
pub(super) struct Filling<'a> {
    pub(super) asked: &'a Asked,
    pub(super) unfilled: u32,
}

/// IPv4's `flow_late` for `from_pod6`: the frames of its pass three that
/// `fast6::finish` refused untracked and that their routes say are
/// tracked after all (`tracked_after_all`: to a composite, whose member
/// the flow pins, where the VRF tracks flows for its ECMP routes alone, a
/// Kubernetes service without a policy; or to a pod of another network
/// whose policy judges them). Their flows' tag lines are fetched, then all
/// their slots, so that the misses overlap; then each hit that only
/// forwards is carried out. Answers those taken, and those probed; the
/// others are given back as they came, for the general path. Before, each
/// one's flow was looked up cold, one after another (`tracked6_cold`,
/// which the fabric's IPv6 pass still uses). Out of line: other frames
/// never come here, and the pass pays nothing for it but the refused
/// frames' check.
#[inline(never)]
pub(super) fn tracked6_late<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    table: &crate::flow::FlowTable,
    frames: &mut [Frame<B>],
    vrf: &Vrf,
    w: Waiting<'_>,
    probes: &mut [Probe; VECTOR],
    rx: &mut Received,
) -> (u32, u32) {
    let mut probed = 0u32;
    for &j in w.later {
        let i = usize::from(w.at[usize::from(j)]);
        if let Some(h) = fast6::head(&frames[i]) {
            flow::prefetch_key(table, &fast6::flow_key(h, vrf.id), &mut probes[i]);
            probed |= 1 << i;
        }
    }
    for i in lanes(probed) {
        table.prefetch_slots(&mut probes[i]);
    }
    let mut taken = 0u32;
    for &j in w.later {
        let i = usize::from(w.at[usize::from(j)]);
        let f = &mut frames[i];
        let target = vrf.v6.target(w.routes[usize::from(j)]);
        let hit = (probed & (1 << i) != 0).then(|| flow::settled(ctx, vrf, &probes[i])).flatten();
        let finished =
            hit.zip(target).and_then(|(s, target)| Some((fast6::finish(ctx, f, vrf, target, Some(s))?, s, target)));
        match finished {
            Some((v, hit, target)) => {
                took(ctx.stats, f, w.came[i], v, rx);
                taken |= 1 << i;
                if w.filling.unfilled & (1 << i) != 0 {
                    let way = Taken::plain(hit, target, vrf.id);
                    let asked = w.filling.asked;
                    fill(ctx, vrf, &asked.keys[i], asked.at[i], &probes[i], &way, f);
                }
            }
            None => {
                f.set_len(w.came[i] as usize);
            }
        }
    }
    (taken, probed)
}
