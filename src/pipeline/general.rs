//! Why the fast lane left a frame to the general path (`GeneralCause`),
//! for the counts operators read (`vrctl runtime`, by cause; `vrctl vif`,
//! by vif) and for captures (`vrctl vifdump --general`). Worked out again
//! from the frame and the tables, once the lane is done with a vector and
//! before the general path changes anything, in the order the lane makes
//! its checks (with the lane's own code where it can say why:
//! `fast::inspect_or_why`, `Tables::landing`, `flow::refused`). So the lane
//! carries no cause, and a frame it takes pays nothing for this: only the
//! general path's frames do.

use super::decap;
use super::fast;
use super::forward::{routes_back, ETH};
use super::lane::Left;
use super::{Ctx, Frame};
use crate::flow::Probe;
use crate::memory::Buffer;
use crate::stats::GeneralCause;
use crate::tables::{Landing, NextHop, Tables, Vif, VifKind, Vrf};

/// The frames the lane left to the general path: how many, why, from
/// which vif, and which of the last batch's (by position, for a capture
/// to say of each frame it copied). A measure of how much traffic takes
/// the slow way, not a counter of the data path's: `Stats` are the same
/// whichever way a frame went.
pub(super) struct Counts {
    /// By cause (`Pipeline::general_causes`): each frame once, so they add
    /// up to all of them (`Pipeline::general_frames`).
    pub(super) causes: [u64; GeneralCause::COUNT],
    /// By the index of the vif each came in on (`Pipeline::general_frames_by_vif`).
    pub(super) by_vif: Vec<u64>,
    /// The current batch's, by position, with why (`cause_at`).
    last_batch: Vec<(u32, GeneralCause)>,
}

/// How many of a batch's general-path frames `Counts::cause_at` can tell
/// of: a worker's batches are smaller, and beyond it the record stops
/// rather than allocates.
const RECORDED: usize = 1024;

impl Counts {
    /// Counts for `vifs` vif indexes.
    pub(super) fn try_new(vifs: usize) -> Result<Self, std::collections::TryReserveError> {
        Ok(Counts {
            causes: [0; GeneralCause::COUNT],
            by_vif: crate::memory::try_filled(vifs, 0)?,
            last_batch: Vec::with_capacity(RECORDED),
        })
    }

    /// A batch begins: the last one's record goes.
    #[inline(always)]
    pub(super) fn new_batch(&mut self) {
        self.last_batch.clear();
    }

    /// Counts the frames the lane `left` of `vector`, the batch's frames
    /// from `base` on. Out of line, and only for a vector the lane left
    /// frames of.
    #[inline(never)]
    pub(super) fn count<B: Buffer>(
        &mut self,
        ctx: &Ctx<'_, B>,
        vector: &[Frame<B>],
        base: usize,
        left: Left,
        probes: &[Probe],
    ) {
        for i in super::lanes(left.frames) {
            let why = cause(ctx, vector, i, left, probes);
            self.causes[why as usize] += 1;
            if let Some(n) = self.by_vif.get_mut(vector[i].vif as usize) {
                *n += 1;
            }
            if self.last_batch.len() < RECORDED {
                self.last_batch.push(((base + i) as u32, why));
            }
        }
    }

    /// Why the lane left frame `at` of the current (or last) batch, if it did.
    pub(super) fn cause_at(&self, at: usize) -> Option<GeneralCause> {
        let at = u32::try_from(at).ok()?;
        let i = self.last_batch.binary_search_by_key(&at, |(p, _)| *p).ok()?;
        Some(self.last_batch[i].1)
    }
}

/// Why the lane left frame `i` of `frames` (a vector it was given, as it
/// left them: `left`), whose flow probe is `probes[i]` if the lane made one.
#[inline]
fn cause<B: Buffer>(ctx: &Ctx<'_, B>, frames: &[Frame<B>], i: usize, left: Left, probes: &[Probe]) -> GeneralCause {
    let Some(first) = frames.first().map(|f| f.vif) else { return GeneralCause::OtherVif };
    let Some(vif) = ctx.t.vif(first).filter(|v| !v.flags.disabled && ctx.cfg.fast_path) else {
        return GeneralCause::FastPathOff;
    };
    let f = &frames[i];
    if f.vif != first {
        return GeneralCause::OtherVif;
    }
    let probe = (left.probed & (1 << i) != 0).then(|| &probes[i]);
    // A frame the lane probed a flow for passed its classification: its
    // flow says why first, without classifying it again (a new flow, the
    // general path's commonest frame, paid 5-7 % of its setup for that).
    if let (Some(probe), Some(table)) = (probe, ctx.flows) {
        let vrf = ctx.t.vrf(probe.key().vrf);
        if let Some(cause) = vrf.and_then(|vrf| super::flow::refused(ctx.t, table, probe, vrf)) {
            return cause;
        }
    }
    let found = match vif.kind {
        VifKind::Virtual => from_pod(ctx.t, f.data(), vif),
        VifKind::Fabric => from_fabric(ctx.t, f.data(), vif),
        _ => return GeneralCause::OtherVif,
    };
    let classified = match found {
        Ok(c) => c,
        Err(cause) => return cause,
    };
    // Where flows track it, a frame with no flow key.
    if probe.is_none() && ctx.flows.is_some() && classified.tracked && classified.keyless() {
        return GeneralCause::Protocol;
    }
    of_route(ctx.t, &classified)
}

/// A frame the lane's classification accepted: the VRF it is routed in,
/// its destination and the pod its label names (if it came by a tunnel
/// whose label does), its first bytes and length, and whether flows track
/// it there.
struct Classified<'a> {
    vrf: &'a Vrf,
    dst: u32,
    pod: Option<u32>,
    head: Option<&'a [u8; fast::HEAD]>,
    total: usize,
    tracked: bool,
}

impl Classified<'_> {
    fn keyless(&self) -> bool {
        self.head.is_none_or(|h| fast::flow_key(h, self.vrf.id).is_none())
    }
}

/// The Ethernet types the lane does not take, by what they are.
fn not_ipv4(d: &[u8]) -> Option<GeneralCause> {
    match d.get(12..14)? {
        [0x08, 0x00] => None,
        [0x08, 0x06] => Some(GeneralCause::Arp),
        [0x86, 0xdd] => Some(GeneralCause::Ipv6),
        _ => Some(GeneralCause::OtherEthertype),
    }
}

/// `d`, from pod `vif`, as the lane classifies it (`fast::classify`, then
/// `lane::from_elsewhere` for a source other than the pod's own).
fn from_pod<'a>(t: &'a Tables, d: &'a [u8], vif: &Vif) -> Result<Classified<'a>, GeneralCause> {
    if let Some(c) = not_ipv4(d).or((d.len() < ETH).then_some(GeneralCause::OtherEthertype)) {
        return Err(c);
    }
    let vrf = t.vrf(vif.vrf).ok_or(GeneralCause::NoRoute)?;
    let own = vif.ipv4.filter(|_| vif.flags.source_check);
    let (dst, total) = match fast::inspect_or_why(d, own) {
        Err(GeneralCause::Source) => {
            let found = fast::inspect_or_why(d, None)?;
            let src = u32::from_be_bytes([d[26], d[27], d[28], d[29]]);
            if !routes_back(t, vif, vrf.v4.lookup(src)) {
                return Err(GeneralCause::Source);
            }
            found
        }
        found => found?,
    };
    let tracked =
        !vif.floating.is_empty() || vrf.tracks_every_flow() || (vrf.tracks_flows() && vrf.ecmp_blocks.may_hold(dst));
    Ok(Classified { vrf, dst, pod: None, head: fast::head_of(d), total, tracked })
}

/// `d`, from fabric vif `vif`, as the lane takes a tunnel (`lane::tunnel_in`),
/// with the general path's copy of the outer checks (`tunnel` is inlined
/// where it is called).
fn from_fabric<'a>(t: &'a Tables, d: &'a [u8], vif: &Vif) -> Result<Classified<'a>, GeneralCause> {
    let (label, inner_at, ip_end) = match decap::tunnel_out_of_line(d, vif) {
        None => return Err(not_ipv4(d).unwrap_or(GeneralCause::NotTunnel)),
        Some(Err(_)) => return Err(GeneralCause::Tunnel),
        Some(Ok(found)) => found,
    };
    let inner = d.get(inner_at - ETH..ip_end).ok_or(GeneralCause::Tunnel)?;
    let (dst, total) = fast::inspect_or_why(inner, None)?;
    let Landing { vrf, pod } = t.landing(label).ok_or(GeneralCause::Tunnel)?;
    let vrf = t.vrf(vrf).ok_or(GeneralCause::NoRoute)?;
    Ok(Classified { vrf, dst, pod, head: fast::head_of(inner), total, tracked: vrf.tracks_every_flow() })
}

/// What the route of a frame the lane accepted leads to that the lane
/// does not carry out, as `fast::finish` refuses it. Looked up only here:
/// a new flow's frame, the most common of the general path's, is told
/// without it (a lookup in a large table cost a new flow a quarter of
/// its time: `tools/perf-compare --modes flow-setup`).
fn of_route(t: &Tables, c: &Classified<'_>) -> GeneralCause {
    let nh = match c.pod {
        Some(pod) => pod,
        None => match c.vrf.v4.lookup(c.dst) {
            Some(to) => to.nh,
            None => return GeneralCause::NoRoute,
        },
    };
    let mut nh = t.nexthop(nh);
    // Any member: they leave by the same kind of way, in practice.
    if let Some(NextHop::Composite(group)) = nh {
        nh = group.members().first().and_then(|m| t.nexthop(m.nh));
    }
    let leaving = |oif, overhead| match t.vif(oif) {
        Some(out) if !out.flags.disabled && c.total + overhead > usize::from(out.mtu) => GeneralCause::Mtu,
        _ => GeneralCause::NextHop,
    };
    match nh {
        None | Some(NextHop::Discard) => GeneralCause::NoRoute,
        Some(NextHop::Receive) => GeneralCause::Local,
        Some(NextHop::Encap { oif, .. }) => leaving(*oif, 0),
        Some(NextHop::Tunnel(tun)) => leaving(tun.oif, tun.encap.ip_overhead()),
        Some(_) => GeneralCause::NextHop,
    }
}
