//! The forwarding pipeline: deterministic, no I/O, no allocation, no locks.
//!
//! [`Pipeline::process`] takes a batch of received [`Frame`]s and a
//! [`Tables`] snapshot, rewrites each frame in place and leaves a
//! [`Verdict`] on it: transmit on a vif, hand to the host, trap to the
//! agent, or drop with a reason. The I/O layer around it moves buffers; it
//! makes no forwarding decision. Tests drive it with plain byte buffers.
//!
//! A frame's trip, by the vif it came in on:
//! - a pod, VM, host or agent vif: proxy ARP / ND, or route the IP packet
//!   in the vif's VRF (`forward`);
//! - the fabric: tunnel packets for this node are decapsulated and their
//!   label decides (`decap`); all else goes to the host stack.
//!
//! Encapsulation prepends into the buffer's headroom, so a frame is never
//! copied unless it must be fragmented.

mod decap;
mod express;
mod fast;
mod fast6;
mod flow;
mod forward;
mod frame;
mod general;
pub mod hash;
pub mod hold;
mod icmp;
mod lane;
pub mod nat;
mod neighbor;
mod trace;

pub use crate::memory::Buffer;
pub use flow::{judgement, Judgement, Ruling};
pub use frame::{Frame, Spill};
pub use trace::{trace, Traced, TracedFlow};

use crate::flow::{Forwarding, Probe};
use crate::stats::runtime::Stopwatch;
use crate::stats::{DropReason, GeneralCause, Stage, Stats};
use crate::tables::{Fib, Route, RouteTarget, Tables, VifIndex, VifKind, Vrf};
use crate::wire::MacAddr;

/// Why a frame is handed to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapReason {
    /// A DHCPv4 request from a pod: the agent is its DHCP server.
    Dhcp,
    /// A DHCPv6 request from a pod.
    Dhcpv6,
    /// An IPv6 router solicitation: the agent sends router advertisements.
    RouterSolicit,
}

impl TrapReason {
    /// Stable snake_case name, for the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            TrapReason::Dhcp => "dhcp",
            TrapReason::Dhcpv6 => "dhcpv6",
            TrapReason::RouterSolicit => "router_solicit",
        }
    }
}

/// What to do with a frame after processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this vif.
    Tx(VifIndex),
    /// Hand the frame to the host's own stack.
    ToHost,
    /// Trap the frame to the agent.
    ToAgent(TrapReason),
    /// Drop it; the reason has been counted.
    Drop(DropReason),
    /// Nothing to send: the pipeline kept a copy (a fragment waiting for
    /// its datagram's first, `hold`), and the frame's buffer is free.
    Held,
}

/// Settings of the pipeline that are not tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The MAC vrouter answers ARP and ND with, and sends from toward pods.
    pub router_mac: MacAddr,
    /// Fold into the flow hash, so that two layers of ECMP (ours and the
    /// fabric's) do not correlate.
    pub hash_seed: u64,
    /// Take the fast path for plain IPv4 from pods. Turning it off sends
    /// every frame down the general path, which gives the same result; the
    /// switch exists so that tests can prove that.
    pub fast_path: bool,
    /// Keep each worker's flow cache (`express`), which the fast path's
    /// hits on plain IPv4 flows take: the same result, with fewer steps.
    /// Off, for tests that prove it and benchmarks that weigh it.
    pub flow_cache: bool,
    /// The flow cache's sets (of three flows), where not sized from the
    /// flow table's capacity: rounded to a power of two, 64 to 32K. Tests
    /// make it small, so that flows crowd its sets.
    pub flow_cache_sets: Option<usize>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        // 00:00:5e:00:01:00 is the MAC Tungsten Fabric's vRouter uses.
        PipelineConfig {
            router_mac: MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00]),
            hash_seed: 0,
            fast_path: true,
            flow_cache: true,
            flow_cache_sets: None,
        }
    }
}

/// One worker's pipeline: its configuration, its own counters, and the
/// flow table it shares with the other workers.
pub struct Pipeline {
    config: PipelineConfig,
    stats: Stats,
    flows: Option<std::sync::Arc<crate::flow::FlowTable>>,
    /// The time, in milliseconds, as the caller last set it: flows are
    /// stamped and aged by it, and the pipeline never reads a clock.
    now: u64,
    /// Ageing: when this worker last swept, and the slot-milliseconds of
    /// sweeping it still owes.
    swept_at: u64,
    sweep_owed: u64,
    /// What each frame of a vector carries between the stages: kept here,
    /// not made for every vector (5 KB, cleared with `memset`: 80
    /// instructions a packet, callgrind). Each frame resets its own.
    scratch: Box<Scratch>,
    /// Fragments waiting for their datagram's first.
    hold: hold::FragmentHold,
    /// The frames the fast lane left to the general vector, counted.
    general: general::Counts,
    /// The flow cache, with a flow table (and `PipelineConfig::flow_cache`).
    cache: Option<Box<express::FlowCache>>,
}

/// A vector's per-frame state between its stages.
struct Scratch {
    pending: [Pending; VECTOR],
    /// Frame `i`'s flow probe, if bit `i` of the vector's `probed` mask is set.
    probes: [Probe; VECTOR],
    /// Frame `i`'s flow cache key and set, where the lane asked the cache.
    cached: express::Asked,
}

// A vector's frames fit the bit masks of `process_vector`.
const _: () = assert!(VECTOR <= 32);

/// Ageing: each worker looks over the whole flow table once per this much
/// of its clock, in steps of at most `SWEEP_PER_BATCH` slots per batch, or
/// `SWEEP_IDLE` when it has no frames, and no step where nothing is owed.
/// A fixed step per batch, as before, swept a small table dozens of times a
/// second at full rate and cost 8 % of the flow-hit path (perf), for
/// timeouts counted in seconds. So did a least step of 2 slots a batch: at
/// full rate (a thousand batches a millisecond) it looked over a
/// million-slot table three times as often as owed, and cost every packet
/// 3 instructions (callgrind) besides what was owed.
const SWEEP_PERIOD_MS: u64 = 1_000;
/// A batch's largest ageing step, in slots.
pub const SWEEP_PER_BATCH: u64 = 64;
/// An idle worker's step, every 10 ms or so: a table of 512K pairs (about
/// a million slots) in about a second and a half.
pub const SWEEP_IDLE: u64 = 8192;

/// Flows whose slots step two of the flow lookup prefetches ahead of the one it reads.
const FLOW_LOOKAHEAD: usize = 16;

/// Most VRF translations one packet may go through before it is a loop.
const MAX_DEPTH: u8 = 4;

/// Where the packet being routed came from: it decides where ICMP errors go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Received on this local vif.
    Vif(VifIndex),
    /// Decapsulated from a tunnel that arrived on this fabric vif.
    Tunnel(VifIndex),
}

/// What one processing step shares: the snapshot, the counters, the
/// configuration and the spare buffers.
struct Ctx<'a, B> {
    t: &'a Tables,
    stats: &'a mut Stats,
    cfg: &'a PipelineConfig,
    spill: &'a mut Spill<B>,
    flows: Option<&'a crate::flow::FlowTable>,
    /// Where a fragment that came before its datagram's first waits.
    hold: &'a mut hold::FragmentHold,
    now: u64,
    /// The route stage two found for the frame the general path has in
    /// hand (in its VRF's table of its family), if it was looked up there:
    /// a flow made for the frame remembers it, so that the flow's next
    /// packet is spared the lookup too. Set only for the length of that
    /// call (`resolve_routed`).
    route: Option<Route>,
    /// The source's network for the frame the general path has in hand,
    /// if stage two looked it up with the vector's routes (a new flow's, in
    /// a VRF whose policy judges sources by network): set, as `route`, only
    /// for the length of that call.
    source: Option<flow::KnownSource>,
    /// This worker's flow cache, if it keeps one.
    cache: Option<&'a mut express::FlowCache>,
}

impl Pipeline {
    /// A pipeline with counters sized for the tables' limits. Panics if
    /// their memory cannot be had; `try_new` says so instead.
    pub fn new(config: PipelineConfig, limits: &crate::tables::Limits) -> Self {
        Self::try_new(config, limits).unwrap_or_else(|e| panic!("counters for {limits:?}: {e}"))
    }

    /// A pipeline with counters sized for the tables' limits, or the
    /// allocator's refusal (limits too large for the machine).
    pub fn try_new(
        config: PipelineConfig,
        limits: &crate::tables::Limits,
    ) -> Result<Self, std::collections::TryReserveError> {
        Ok(Pipeline {
            config,
            stats: Stats::try_new(limits.vifs, limits.vrfs)?,
            flows: None,
            now: 0,
            swept_at: 0,
            sweep_owed: 0,
            scratch: Box::new(Scratch {
                pending: [Pending::EMPTY; VECTOR],
                probes: [Probe::UNUSED; VECTOR],
                cached: express::Asked::NONE,
            }),
            hold: hold::FragmentHold::new(),
            general: general::Counts::try_new(limits.vifs)?,
            cache: None,
        })
    }

    /// Tracks flows in the VRFs that track them (`Vrf::tracks_flows`), in
    /// `table` (shared with the other workers).
    pub fn with_flows(mut self, table: std::sync::Arc<crate::flow::FlowTable>) -> Self {
        self.set_flows(Some(table));
        self
    }

    /// Starts (`Some`) or stops (`None`) tracking flows. The flow cache
    /// starts empty with each table.
    pub fn set_flows(&mut self, table: Option<std::sync::Arc<crate::flow::FlowTable>>) {
        self.cache = match &table {
            Some(t) if self.config.flow_cache => Some(Box::new(match self.config.flow_cache_sets {
                Some(sets) => express::FlowCache::with_sets(sets, self.config.hash_seed),
                None => express::FlowCache::new(t.config().capacity, self.config.hash_seed),
            })),
            _ => None,
        };
        self.flows = table;
    }

    /// Bytes the flow cache holds (0 without one).
    pub fn flow_cache_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.memory_bytes())
    }

    /// What the flow cache did, if the pipeline keeps one.
    pub fn flow_cache_counts(&self) -> Option<crate::stats::FlowCacheCounts> {
        self.cache.as_ref().map(|c| c.counts())
    }

    /// The flow table, if flows are tracked.
    pub fn flows(&self) -> Option<&std::sync::Arc<crate::flow::FlowTable>> {
        self.flows.as_ref()
    }

    /// Sets the time (milliseconds) for the next batches: the worker calls
    /// it once per round, tests whenever they like.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now = now_ms;
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Frames the pipeline routed out of vif `out` (counted there as
    /// sent) that the I/O layer could not send: `Stats::count_unsent`.
    pub fn count_unsent(&mut self, out: VifIndex, frames: u64, bytes: u64) {
        self.stats.count_unsent(out, frames, bytes);
    }

    /// A frame the I/O layer dropped before the pipeline saw it, for
    /// `reason`, counted on vif `vif` as the pipeline counts its own.
    pub fn count_drop(&mut self, vif: VifIndex, reason: crate::stats::DropReason) {
        self.stats.count_drop(vif, reason);
    }

    /// Frames the fast lane left to the general vector, since the start:
    /// those it may not take (a SYN, ARP, a new flow, a drop) and those it
    /// gave back (a flow whose decision is to be made again). A measure of
    /// how much of the traffic takes the slow way, not a counter of the
    /// data path's: `Stats` are the same whichever way a frame went.
    pub fn general_frames(&self) -> u64 {
        self.general.causes.iter().sum()
    }

    /// `general_frames`, by why the lane left each (`GeneralCause`, in its
    /// counter order): they add up to it.
    pub fn general_causes(&self) -> &[u64; GeneralCause::COUNT] {
        &self.general.causes
    }

    /// `general_frames`, by the index of the vif each came in on: which pod
    /// sends the traffic that takes the slow way. Kept apart from `Stats`'
    /// vif counters for the reason `general_frames` is.
    pub fn general_frames_by_vif(&self) -> &[u64] {
        &self.general.by_vif
    }

    /// Why the fast lane left frame `at` of the last batch to the general
    /// path; `None` if it took the frame (or the batch had more than 1,024
    /// general frames before it). A capture's copy of a frame carries it.
    pub fn general_cause_at(&self, at: usize) -> Option<GeneralCause> {
        self.general.cause_at(at)
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Processes a batch. Each frame gets its verdict in `frame.verdict`.
    /// Frames made along the way (extra fragments) are taken from
    /// `spill`'s free buffers and left, with their verdicts, in its output.
    ///
    /// The batch goes through in vectors of up to [`VECTOR`] frames, in
    /// three stages, as VPP does: classify every frame, look up all their
    /// routes together so that the trie's cache misses overlap, then finish
    /// each frame. The fast lane (`lane`) takes the common frames of a
    /// vector first, in the same three stages with nothing else to carry;
    /// the general vector takes the rest.
    pub fn process<B>(&mut self, tables: &Tables, frames: &mut [Frame<B>], spill: &mut Spill<B>)
    where
        B: Buffer,
    {
        self.process_timed(tables, frames, spill, &mut Stopwatch::off())
    }

    /// `process`, charging each stage's time to `watch` (parse, lookup and
    /// rewrite). The caller owns the clock: the pipeline reads none.
    pub fn process_timed<B>(
        &mut self,
        tables: &Tables,
        frames: &mut [Frame<B>],
        spill: &mut Spill<B>,
        watch: &mut Stopwatch<'_>,
    ) where
        B: Buffer,
    {
        let flows = self.flows.as_deref();
        let mut ctx = Ctx {
            t: tables,
            stats: &mut self.stats,
            cfg: &self.config,
            spill,
            flows,
            hold: &mut self.hold,
            now: self.now,
            route: None,
            source: None,
            cache: self.cache.as_deref_mut(),
        };
        if let Some(c) = ctx.cache.as_deref_mut() {
            c.begin(tables);
        }
        self.general.new_batch();
        for (v, vector) in frames.chunks_mut(VECTOR).enumerate() {
            // The fast lane first; the general vector takes what it left.
            let left = lane::run(&mut ctx, vector, &mut self.scratch.probes, &mut self.scratch.cached, watch);
            if left.frames == 0 {
                continue;
            }
            self.general.count(&ctx, vector, v * VECTOR, left, &self.scratch.probes);
            let left = left.frames;
            let mut from = [0u8; VECTOR];
            let k = if left == lane::all(vector.len()) { vector.len() } else { gather(vector, left, &mut from) };
            process_vector(&mut ctx, &mut vector[..k], &mut self.scratch, watch);
            if k < vector.len() {
                scatter(vector, &from[..k]);
            }
        }
        if !ctx.hold.is_empty() {
            release_held(&mut ctx);
        }
        self.age(SWEEP_PER_BATCH);
    }

    /// True while fragments wait for their datagram's first (`hold`): the
    /// caller then gives `process` spare buffers to let them go in, and
    /// calls it, with no frames, when idle too.
    pub fn has_held(&self) -> bool {
        !self.hold.is_empty()
    }

    /// Ageing: a look at up to `most` slots of the flow table, paced by the
    /// clock. Every batch does it (`SWEEP_PER_BATCH`); an idle worker calls
    /// it between its waits with a larger step (`SWEEP_IDLE`), so that
    /// flows expire on a quiet node too.
    pub fn age(&mut self, most: u64) {
        if let Some(t) = self.flows.as_deref() {
            // Owed in slot-milliseconds, so that no remainder is lost: a
            // whole table per period, however the clock advances.
            let elapsed = self.now.saturating_sub(self.swept_at);
            let slots = t.slot_count() as u64;
            if elapsed > 0 {
                self.swept_at = self.now;
                self.sweep_owed =
                    self.sweep_owed.saturating_add(slots.saturating_mul(elapsed)).min(slots * SWEEP_PERIOD_MS);
            }
            // Owed less than a slot: nothing now; the remainder waits.
            let budget = (self.sweep_owed / SWEEP_PERIOD_MS).min(most);
            if budget == 0 {
                return;
            }
            self.sweep_owed -= budget * SWEEP_PERIOD_MS;
            t.sweep(self.now, budget as usize);
        }
    }
}

/// Frames per vector: the width of the batched route lookup.
pub const VECTOR: usize = crate::tables::lpm::BATCH;

/// What stage one learned about a frame that still needs its next hop.
#[derive(Clone, Copy)]
pub(super) struct Pending {
    info: forward::IpInfo,
    vrf: u32,
    origin: Origin,
    /// Where the frame goes when stage one knows already (a decapsulated
    /// packet's label names its next hop): no route lookup, but its next
    /// hop is still carried out in stage three, after its flow's lines
    /// were fetched with the others'.
    target: Option<RouteTarget>,
    /// Its source's network, where stage two looked it up for a new flow
    /// (`source_networks`).
    source: Option<flow::KnownSource>,
}

impl Pending {
    const EMPTY: Pending =
        Pending { info: forward::IpInfo::EMPTY, vrf: 0, origin: Origin::Vif(0), target: None, source: None };
}

/// Stage one's answer for a frame: finished with a verdict, or `None`
/// when the frame's `Pending` slot was filled and it needs a route lookup.
type Step = Option<Verdict>;

/// Moves the frames of `vector` that `left` names to its front, in
/// order, for the general vector to take together; answers how many they
/// are, and `from` says where each came from (`scatter` puts them back).
#[inline(never)]
fn gather<B>(vector: &mut [Frame<B>], left: u32, from: &mut [u8; VECTOR]) -> usize {
    let mut k = 0;
    for i in lanes(left) {
        vector.swap(k, i);
        from[k] = i as u8;
        k += 1;
    }
    k
}

/// Undoes `gather`.
#[inline(never)]
fn scatter<B>(vector: &mut [Frame<B>], from: &[u8]) {
    for (j, &i) in from.iter().enumerate().rev() {
        vector.swap(j, usize::from(i));
    }
}

#[inline(always)]
fn process_vector<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    frames: &mut [Frame<B>],
    scratch: &mut Scratch,
    watch: &mut Stopwatch<'_>,
) {
    let t = ctx.t;
    let probes = &mut scratch.probes;
    let mut probed = 0u32;
    let pending = &mut scratch.pending;
    let mut done: [Step; VECTOR] = [None; VECTOR];
    let mut fast = [false; VECTOR];
    // Each frame's VRF, looked up once for the three stages.
    let mut vrfs: [Option<&Vrf>; VECTOR] = [None; VECTOR];
    // A vector's frames mostly share one vif and VRF (a receive queue
    // belongs to one vif), so they are looked up once while they last.
    let mut last = Last { vif: None, vrf: None };
    // Fast frames in VRFs that track flows for their ECMP routes alone,
    // whose routes may lead to a composite (the VRF's hint cannot say
    // they do not).
    let mut ecmp_alone = 0u32;
    for (i, f) in frames.iter_mut().enumerate() {
        let vif = match last.vif {
            Some((index, vif)) if index == f.vif => Some(vif),
            _ => {
                let vif = t.vif(f.vif);
                last.vif = vif.map(|v| (f.vif, v));
                vif
            }
        };
        done[i] = receive(ctx, f, vif, &mut pending[i], &mut fast[i]);
        vrfs[i] = match (done[i], last.vrf) {
            (Some(_), _) => None,
            (None, Some(v)) if v.id == pending[i].vrf => Some(v),
            (None, _) => {
                let v = t.vrf(pending[i].vrf);
                last.vrf = v.or(last.vrf);
                v
            }
        };
        // Flows, step one: start fetching the frame's flow bucket as soon
        // as its key is known, so that it arrives while the rest of the
        // vector is parsed. Only made probes are written (88 bytes each).
        let made = match (ctx.flows, vrfs[i]) {
            (Some(table), Some(v)) if fast[i] => {
                if v.tracks_every_flow() {
                    flow::prefetch_fast(table, f, v, &mut probes[i])
                } else if v.ecmp_routes == 0 {
                    false
                } else {
                    // Its route will say (see "Flows, late" below). A
                    // packet to an address the VRF's hint names (likely a
                    // service's) has its flow looked up from here on, as
                    // where every flow is tracked, so that a hit spares
                    // its route lookup too. One the hint does not name,
                    // where it leaves no route out, goes to no composite:
                    // untracked, its route need not be asked.
                    let named = v.ecmp_blocks.may_hold(pending[i].info.dst as u32);
                    ecmp_alone |= u32::from(named || !v.ecmp_blocks.is_complete()) << i;
                    named && flow::prefetch_fast(table, f, v, &mut probes[i])
                }
            }
            (Some(_), Some(v)) => flow::prefetch(ctx, v, vif, &pending[i].info, f.data(), &mut probes[i]),
            _ => false,
        };
        probed |= u32::from(made) << i;
    }
    watch.mark(Stage::Parse);
    // Flows, step two: the tag lines asked for in step one are in, so
    // start fetching the slots whose tags match, a few frames ahead, and
    // read each fast frame's flow. A flow that only forwards, and that
    // remembers its route in the VRF's current table version, spares its
    // packet the route lookup: the flow table is the route cache, as in
    // Contrail, where a flow holds its next hop. Such a packet is finished
    // at once, since the later stages have nothing for it: carrying its
    // state through them cost 46 instructions a packet (callgrind). The
    // stopwatch charges its rewrite to the lookup.
    let mut settled: [Option<Forwarding>; VECTOR] = [None; VECTOR];
    let mut found = [None; VECTOR];
    let mut recalled = [false; VECTOR];
    let mut fresh = 0;
    if let (Some(table), true) = (ctx.flows, probed != 0) {
        fresh = flow_hits(
            ctx,
            table,
            frames,
            probed,
            &fast,
            &vrfs,
            pending,
            probes,
            &mut settled,
            &mut found,
            &mut recalled,
            &mut done,
        );
    }
    // Stage two: every route lookup of the vector, per family, at once.
    let mut v4_fibs: [&Fib<u32>; VECTOR] = [t.empty_fib_v4(); VECTOR];
    let mut v4_keys = [0u32; VECTOR];
    let mut v4_at = [0u8; VECTOR];
    let mut n4 = 0;
    let mut v6_fibs: [&Fib<u128>; VECTOR] = [t.empty_fib_v6(); VECTOR];
    let mut v6_keys = [0u128; VECTOR];
    let mut v6_at = [0u8; VECTOR];
    let mut n6 = 0;
    for i in 0..frames.len() {
        if done[i].is_some() || recalled[i] {
            continue;
        }
        let p = &pending[i];
        if p.target.is_some() {
            found[i] = p.target;
            continue;
        }
        match vrfs[i] {
            Some(v) if !p.info.v6 => {
                v4_fibs[n4] = &v.v4;
                v4_keys[n4] = p.info.dst as u32;
                v4_at[n4] = i as u8;
                n4 += 1;
            }
            Some(v) => {
                v6_fibs[n6] = &v.v6;
                v6_keys[n6] = p.info.dst;
                v6_at[n6] = i as u8;
                n6 += 1;
            }
            None => {}
        }
    }
    let mut v4_routes = [Route { version: 0, leaf: 0 }; VECTOR];
    Fib::lookup_batch_routes(&v4_fibs[..n4], &v4_keys[..n4], &mut v4_routes[..n4]);
    for j in 0..n4 {
        let i = usize::from(v4_at[j]);
        found[i] = v4_fibs[j].target(v4_routes[j]);
        // The settled flows that had no route in this version keep this one.
        if let (Some(table), Some(s)) = (ctx.flows, settled[i]) {
            table.remember_route(&s, v4_routes[j]);
        }
    }
    let mut v6_routes = [Route { version: 0, leaf: 0 }; VECTOR];
    if n6 > 0 {
        Fib::lookup_batch_routes(&v6_fibs[..n6], &v6_keys[..n6], &mut v6_routes[..n6]);
        for j in 0..n6 {
            found[usize::from(v6_at[j])] = v6_fibs[j].target(v6_routes[j]);
        }
    }
    // Flows, late: in a VRF that tracks flows for its ECMP routes alone, a
    // fast frame's route says whether it is tracked (a composite's are).
    // Those frames' flows are looked up now, together, in the two prefetch
    // steps and then the reads, so that their misses overlap. Looked up one
    // by one, cold, in stage three, a service's packets took 1.4x as long
    // (`vrpktgen pipeline --case encap_mplsoudp_ecmp --flow-table`, 1M
    // routes: 155 ns against 108). The frames whose addresses the VRF's
    // hint named were probed in step one and read in step two already;
    // here their routes only say whether they are tracked.
    let (late, probed_late) = match ctx.flows {
        Some(table) if ecmp_alone != 0 => {
            flow_late(ctx, table, frames, ecmp_alone, probed, &done, &vrfs, &found, probes, &mut settled)
        }
        _ => (0, 0),
    };
    // New flows (`fresh`: no entry's tag matched): their sources' networks
    // where a policy asks, looked up together; and, as the tag lines their
    // pairs need came in during the route lookups, the slots `create` will
    // write, all of them at once. With `flow_hits`' first step, a setup is
    // 1.18-1.84x faster than when `create` fetched the tags, waited, then
    // the slots, and waited again (docs/architecture.md).
    if fresh != 0 {
        new_flows(ctx, frames, fresh, &vrfs, pending, probes, &found);
    }
    watch.mark(Stage::Lookup);
    probed |= probed_late;
    let probe_of = |i: usize| (probed & (1 << i) != 0).then(|| &probes[i]);
    // For the general path only: a scan, not a per-frame array to fill.
    let route_of = |i: usize| match v4_at[..n4].iter().position(|&a| usize::from(a) == i) {
        Some(j) => Some(v4_routes[j]),
        None => v6_at[..n6].iter().position(|&a| usize::from(a) == i).map(|j| v6_routes[j]),
    };
    // Stage three: carry out each frame's next hop.
    for (i, f) in frames.iter_mut().enumerate() {
        let in_vif = f.vif;
        let v = match done[i] {
            Some(v) => v,
            None => {
                let p = &mut pending[i];
                match (vrfs[i], found[i]) {
                    (Some(v), Some(target)) if fast[i] => {
                        // In a VRF that tracks flows, only packets of flows
                        // that need nothing more than forwarding stay fast.
                        // Where only the ECMP routes track them, only the
                        // packets to a composite (`late`) do. (The
                        // untracked test comes first, alone: folded into
                        // one match with the others, the untracked encap
                        // took 13 instructions more, callgrind.)
                        let finished = if ctx.flows.is_none() || !v.tracks_flows() {
                            fast::finish(ctx, f, v, target, None, None)
                        } else if v.tracks_every_flow() || late & (1 << i) != 0 {
                            settled[i].and_then(|settled| fast::finish(ctx, f, v, target, Some(settled), None))
                        } else {
                            fast::finish(ctx, f, v, target, None, None)
                        };
                        match finished {
                            Some(verdict) => verdict,
                            // Not one for the fast path after all: take the
                            // general one, from the untouched frame.
                            None => match forward::parse_ip_into(f.data(), false, &mut p.info) {
                                Ok(()) => resolve_routed(ctx, f, v, target, p, route_of(i), probe_of(i)),
                                Err(r) => Verdict::Drop(r),
                            },
                        }
                    }
                    (Some(v), Some(target)) => resolve_routed(ctx, f, v, target, p, route_of(i), probe_of(i)),
                    // No route here, but a floating IP's answer, or one
                    // to a pod of another VRF, routes elsewhere. A fast
                    // frame was classified, not parsed: its flow's key
                    // needs the whole header.
                    (Some(v), None) if ctx.flows.is_some() && (!fast[i] || v.tracks_flows()) => {
                        let parsed =
                            if fast[i] { forward::parse_ip_into(f.data(), false, &mut p.info) } else { Ok(()) };
                        match parsed {
                            Ok(()) => forward::unrouted(ctx, f, v, &p.info, p.origin, probe_of(i)),
                            Err(r) => Verdict::Drop(r),
                        }
                    }
                    _ => forward::no_route(ctx, f, p.vrf),
                }
            }
        };
        f.verdict = v;
        account(ctx.stats, in_vif, v, f.len());
    }
    watch.mark(Stage::Rewrite);
}

/// The general path for a frame of the vector, routed to `target` in
/// `vrf`: `forward::resolve` from the top, with the frame's route as
/// stage two found it (`None` if it looked none up) in `Ctx::route` for
/// that call alone, for a flow the frame makes to remember.
fn resolve_routed<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vrf: &Vrf,
    target: RouteTarget,
    p: &Pending,
    route: Option<Route>,
    probe: Option<&Probe>,
) -> Verdict {
    (ctx.route, ctx.source) = (route, p.source);
    let verdict = forward::resolve(ctx, f, vrf, target, &p.info, p.origin, 0, probe);
    (ctx.route, ctx.source) = (None, None);
    verdict
}

/// Stage two for the vector's new flows (`fresh`, no entry's tag matched),
/// once their routes are known: their sources' networks
/// (`source_networks`), and the prefetch of the slots `create` will
/// write, both entries' of each pair (`FlowTable::prefetch_pair_slots`).
/// Where a pair's reverse entry is not under its key reversed in its VRF
/// (`flow::answers_apart`: a floating IP's clients' flows, a flow to a pod
/// of another network), its place was not fetched with the probe's: its
/// tag lines are fetched first, all the vector's together, then, once
/// they are in, its slot. Left to `create`, each such setup waited on
/// both, one flow after the other: 1.23-1.33x and 1.41-1.45x as long for the
/// floating IP's clients and the other network's (tools/perf-compare
/// --modes flow-setup). Out of line, apart from the hits' path: inlined,
/// a hit took up to 13 instructions more (callgrind).
#[inline(never)]
fn new_flows<B: Buffer>(
    ctx: &Ctx<'_, B>,
    frames: &[Frame<B>],
    fresh: u32,
    vrfs: &[Option<&Vrf>; VECTOR],
    pending: &mut [Pending; VECTOR],
    probes: &[Probe; VECTOR],
    found: &[Option<RouteTarget>; VECTOR],
) {
    source_networks(ctx.t, frames, fresh, vrfs, pending);
    let Some(table) = ctx.flows else { return };
    let mut apart = [crate::flow::ReverseAhead::default(); VECTOR];
    let mut n = 0;
    for i in lanes(fresh) {
        let in_vif = frames.get(i).map_or(0, |f| f.vif);
        match vrfs[i].and_then(|v| flow::answers_apart(ctx, v, &probes[i], found[i], in_vif)) {
            Some(answers) => {
                apart[n] = table.prefetch_pair_apart(&probes[i], &answers);
                n += 1;
            }
            None => table.prefetch_pair_slots(&probes[i]),
        }
    }
    for &ahead in &apart[..n] {
        table.prefetch_reverse_slot(ahead);
    }
}

/// The networks of the sources of the vector's new flows (`fresh`) whose
/// VRF's policy judges sources by network and which came from no pod
/// (whose own network a policy takes: `flow::decide`), looked up together,
/// per family, so that their walks' misses overlap; each in its frame's
/// `Pending::source`, which `decide` takes only for the address and VRF
/// it was looked up for.
#[cold]
#[inline(never)]
fn source_networks<B: Buffer>(
    t: &Tables,
    frames: &[Frame<B>],
    fresh: u32,
    vrfs: &[Option<&Vrf>; VECTOR],
    pending: &mut [Pending; VECTOR],
) {
    let (mut v4_fibs, mut v4_keys, mut v4_at, mut n4) = ([t.empty_fib_v4(); VECTOR], [0u32; VECTOR], [0u8; VECTOR], 0);
    let (mut v6_fibs, mut v6_keys, mut v6_at, mut n6) = ([t.empty_fib_v6(); VECTOR], [0u128; VECTOR], [0u8; VECTOR], 0);
    for i in lanes(fresh) {
        let (Some(v), Some(f)) = (vrfs[i], frames.get(i)) else { continue };
        let judges_sources = v.policy.as_ref().is_some_and(|p| p.compiled.names_networks().0);
        if !judges_sources || t.vif(f.vif).is_some_and(|vif| vif.kind == VifKind::Virtual) {
            continue;
        }
        let p = &mut pending[i];
        // A fast frame (a tunnel's, here) was classified, not parsed: its
        // source is read from its IPv4 header, where the general path
        // will find it.
        let (v6, src) = if p.info.is_parsed() {
            (p.info.v6, p.info.src)
        } else {
            let Some(h) = fast::head(f) else { continue };
            (false, u128::from(fast::source(h)))
        };
        // Its network comes with the batch's routes (`networks_of`).
        let addr = if v6 { src } else { crate::flow::key::map_v4(src as u32) };
        p.source = Some(flow::KnownSource { vrf: v.id, addr, v6, network: None });
        if v6 {
            (v6_fibs[n6], v6_keys[n6], v6_at[n6]) = (&v.v6, src, i as u8);
            n6 += 1;
        } else {
            (v4_fibs[n4], v4_keys[n4], v4_at[n4]) = (&v.v4, src as u32, i as u8);
            n4 += 1;
        }
    }
    networks_of(&v4_fibs[..n4], &v4_keys[..n4], &v4_at[..n4], pending);
    networks_of(&v6_fibs[..n6], &v6_keys[..n6], &v6_at[..n6], pending);
}

/// Looks `keys` up together, each in its table, and gives each frame
/// (`at`) its key's network in its `Pending::source`.
fn networks_of<K: crate::tables::FibKey>(fibs: &[&Fib<K>], keys: &[K], at: &[u8], pending: &mut [Pending; VECTOR]) {
    let mut routes = [Route { version: 0, leaf: 0 }; VECTOR];
    let routes = &mut routes[..keys.len()];
    Fib::lookup_batch_routes(fibs, keys, routes);
    for ((fib, route), &i) in fibs.iter().zip(routes.iter()).zip(at) {
        if let Some(s) = &mut pending[usize::from(i)].source {
            s.network = fib.network_at(*route);
        }
    }
}

/// Flows, step two (see `process_vector`), for the frames with a probe
/// (`probed`): fetches their slots, a few frames ahead, reads each fast
/// frame's flow into `settled`, and finishes the frames whose flow
/// remembers their route (`recalled`, `found`) in `done`. Returns the
/// frames whose keys found no entry (new flows, most likely), whose pairs'
/// lines it has begun to fetch (`FlowTable::prefetch_pair`). Out of line, and
/// called only when some frame has a probe, so that the untracked path's
/// registers do not pay for it.
#[inline(never)]
#[allow(clippy::too_many_arguments)] // The vector's per-frame arrays.
fn flow_hits<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    table: &crate::flow::FlowTable,
    frames: &mut [Frame<B>],
    probed: u32,
    fast: &[bool; VECTOR],
    vrfs: &[Option<&Vrf>; VECTOR],
    pending: &[Pending; VECTOR],
    probes: &mut [Probe; VECTOR],
    settled: &mut [Option<Forwarding>; VECTOR],
    found: &mut [Option<RouteTarget>; VECTOR],
    recalled: &mut [bool; VECTOR],
    done: &mut [Step; VECTOR],
) -> u32 {
    let mut fresh = 0;
    for (i, probe) in probes.iter_mut().enumerate().take(FLOW_LOOKAHEAD) {
        if probed & (1 << i) != 0 {
            table.prefetch_slots(probe);
        }
    }
    for i in 0..frames.len() {
        let ahead = i + FLOW_LOOKAHEAD;
        if ahead < VECTOR && probed & (1 << ahead) != 0 {
            table.prefetch_slots(&mut probes[ahead]);
        }
        // Tested first and alone: in a pod network, only the few frames
        // to services have a probe.
        if probed & (1 << i) == 0 {
            continue;
        }
        // A frame for the general path (a TCP SYN): a new flow's, perhaps.
        if !fast[i] {
            fresh |= u32::from(table.prefetch_pair(&probes[i])) << i;
            continue;
        }
        // A fast frame has a probe only in a VRF that tracks flows.
        if let Some(v) = vrfs[i] {
            // Used from here, not read back from `settled`: the array
            // is written field by field, and reading it whole at once
            // stalls on the store forward (perf).
            let Some(s) = flow::settled(ctx, v, &probes[i]) else {
                fresh |= u32::from(table.prefetch_pair(&probes[i])) << i;
                continue;
            };
            settled[i] = Some(s);
            // A decapsulated packet's label named its next hop already.
            let target = match pending[i].target {
                Some(target) => Some(target),
                None => {
                    let Some(target) = v.v4.recall(s.route.route()) else { continue };
                    (found[i], recalled[i]) = (target, true);
                    target
                }
            };
            // (Where only the ECMP routes track flows, `fast::finish`
            // takes the flow's packet only if its route still is one.)
            if let Some(target) = target {
                done[i] = fast::finish(ctx, &mut frames[i], v, target, Some(s), None);
            }
        }
    }
    fresh
}

/// The frames of a vector that the fast path took in VRFs that track
/// flows for their ECMP routes alone, and that may go to a composite
/// (`candidates`: the VRF's hint did not rule them out), and that their routes
/// sent to a composite: their flows, looked up together (see "Flows, late" in
/// `process_vector`). Answers those frames, and those that had a flow key
/// and so a probe; `settled` gets their flows. The frames the first stage
/// probed already (`early`: the VRF's hint named their address) were read
/// in step two, and are not looked up again. Out of line, and called only
/// when there are such frames: inlined, it cost the vector's other paths
/// 3-7 instructions a packet in spilled registers (callgrind).
#[inline(never)]
#[allow(clippy::too_many_arguments)] // The vector's per-frame arrays.
fn flow_late<B: Buffer>(
    ctx: &Ctx<'_, B>,
    table: &crate::flow::FlowTable,
    frames: &[Frame<B>],
    candidates: u32,
    early: u32,
    done: &[Step; VECTOR],
    vrfs: &[Option<&Vrf>; VECTOR],
    found: &[Option<RouteTarget>; VECTOR],
    probes: &mut [Probe; VECTOR],
    settled: &mut [Option<Forwarding>; VECTOR],
) -> (u32, u32) {
    let (mut late, mut probed) = (0u32, 0u32);
    for i in lanes(candidates) {
        if let (None, Some(v), Some(target)) = (done[i], vrfs[i], found[i]) {
            if flow::tracked_to(ctx.t, v, None, target) {
                late |= 1 << i;
                // A frame with no flow key keeps `settled` empty: the general
                // path's. One the first stage probed (`early`) was read.
                if early & (1 << i) == 0 && flow::prefetch_fast(table, &frames[i], v, &mut probes[i]) {
                    probed |= 1 << i;
                }
            }
        }
    }
    // All their tag lines are on their way, then all their slots: the
    // misses overlap.
    for i in lanes(probed) {
        table.prefetch_slots(&mut probes[i]);
    }
    for i in lanes(probed) {
        if let Some(v) = vrfs[i] {
            settled[i] = flow::settled(ctx, v, &probes[i]);
        }
    }
    (late, probed)
}

/// The frames a vector's mask names (bit `i`: frame `i`), in order.
#[inline(always)]
fn lanes(mask: u32) -> impl Iterator<Item = usize> {
    let mut left = mask;
    std::iter::from_fn(move || {
        (left != 0).then(|| {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            i
        })
    })
}

/// The vif and VRF the previous frame of a vector had.
struct Last<'t> {
    vif: Option<(VifIndex, &'t crate::tables::Vif)>,
    vrf: Option<&'t Vrf>,
}

/// Lets go the held fragments whose datagram's first fragment has been
/// seen: each is copied into a spare buffer and finished where it stopped,
/// on its datagram's flow, and left in the spill's output. Those that
/// waited too long are dropped. One without a spare buffer waits for the
/// next batch.
#[cold]
#[inline(never)]
fn release_held<B: Buffer>(ctx: &mut Ctx<'_, B>) {
    for slot in 0..hold::SLOTS {
        let Some(w) = ctx.hold.get(slot) else { continue };
        let (vif, len) = (w.vif, usize::from(w.len));
        let first_seen = ctx.flows.is_some_and(|t| t.fragments().peek(&w.datagram, ctx.now).is_some());
        if !first_seen {
            if ctx.now.saturating_sub(w.since) >= hold::HOLD_MS || ctx.flows.is_none() {
                ctx.hold.discard(slot);
                account(ctx.stats, vif, Verdict::Drop(DropReason::NoFragEntry), len);
            }
            continue;
        }
        if ctx.spill.free.is_empty() {
            return;
        }
        let Some(mut f) = ctx.spill.take_frame(len, vif) else { continue };
        let Some(w) = ctx.hold.take(slot, f.data_mut()) else {
            // Not a frame of the fragment's length: the spare goes back.
            ctx.spill.free.push(f.into_buf());
            continue;
        };
        let v = resume(ctx, &mut f, &w);
        f.verdict = v;
        ctx.stats.fragments_released += 1;
        account(ctx.stats, w.vif, v, f.len());
        ctx.spill.out.push(f);
    }
}

/// A held fragment, from where `hold::hold_fragment` stopped it: its flow
/// lookup, now that its datagram's ports are known.
fn resume<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, w: &hold::Waiting) -> Verdict {
    let Some(vrf) = ctx.t.vrf(w.vrf) else { return forward::no_route(ctx, f, w.vrf) };
    let target = match w.still_goes_to(ctx.t) {
        Ok(target) => target,
        Err(r) => return Verdict::Drop(r),
    };
    match target {
        Some(target) => forward::resolve(ctx, f, vrf, target, &w.info, w.origin, 0, None),
        None => forward::unrouted(ctx, f, vrf, &w.info, w.origin, None),
    }
}

/// Counts a verdict against the vif the frame came in on and the one it leaves by.
#[inline]
fn account(stats: &mut Stats, in_vif: VifIndex, v: Verdict, len: usize) {
    match v {
        Verdict::Tx(out) => {
            if let Some(c) = stats.vifs.get_mut(out as usize) {
                c.tx_packets += 1;
                c.tx_bytes += len as u64;
            }
        }
        Verdict::ToHost => stats.to_host += 1,
        Verdict::Held => {}
        Verdict::ToAgent(_) => stats.to_agent += 1,
        Verdict::Drop(r) => stats.count_drop(in_vif, r),
    }
}

#[inline]
fn receive<B: Buffer>(
    ctx: &mut Ctx<'_, B>,
    f: &mut Frame<B>,
    vif: Option<&crate::tables::Vif>,
    p: &mut Pending,
    fast: &mut bool,
) -> Step {
    // The slot held the previous vector's frame.
    *p = Pending::EMPTY;
    let Some(vif) = vif else {
        return Some(Verdict::Drop(DropReason::InvalidIf));
    };
    if let Some(c) = ctx.stats.vifs.get_mut(f.vif as usize) {
        c.rx_packets += 1;
        c.rx_bytes += f.len() as u64;
    }
    if vif.flags.disabled {
        return Some(Verdict::Drop(DropReason::IfDrop));
    }
    if vif.kind == VifKind::Virtual && fast::allowed(ctx.cfg, vif) {
        if let Some(dst) = fast::classify(f, vif.ipv4.filter(|_| vif.flags.source_check)) {
            *fast = true;
            p.info.dst = u128::from(dst);
            p.vrf = vif.vrf;
            p.origin = Origin::Vif(vif.index);
            return None;
        }
    }
    match vif.kind {
        VifKind::Fabric => decap::from_fabric(ctx, f, vif, p, fast),
        VifKind::Virtual | VifKind::Host | VifKind::Agent => forward::from_vif(ctx, f, vif, p),
    }
}
