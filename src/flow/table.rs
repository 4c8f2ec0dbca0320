//! The flow table: pairs of linked entries (forward and reverse), shared by
//! every worker.
//!
//! Lookups take no lock. Each slot is a small seqlock: a reader loads the
//! slot's sequence number, reads the key and the action, and loads the
//! sequence again; if it changed, or was odd (being written), the reader
//! skips the slot. Everything is an atomic, so this needs no `unsafe`.
//!
//! Creating or removing a pair takes one or two of 4,096 striped locks, so
//! that two workers creating the same flow at once make one pair, not two.
//! Packet and byte counts, the last-seen time and TCP flags are updated with
//! relaxed atomics on every hit, outside the seqlock.
//!
//! A key lives in one of two buckets of 16 slots, each chosen by its own
//! part of the key's hash. A new key goes to its first bucket while that
//! has 4 slots free, else to the emptier of the two: almost every key is
//! then found in its first bucket, and the second choice still keeps
//! buckets even ("the power of two choices"). With 50 % more slots than
//! entries, a simulation of a full table of 100,000 pairs under a million
//! replacements never found both of a key's buckets full; were it to
//! happen, the flow is refused as if the table were full.
//!
//! Each bucket's tags (a 32-bit fragment of each live slot's hash, 0 for a
//! free slot) fill exactly one cache line, and each slot is two aligned
//! lines, the first holding all a lookup compares. So a hit costs about
//! three lines and a new pair (two misses, two writes) eight: the table is
//! far larger than the caches, and lines fetched from memory are what flow
//! setup and hits spend their time on.
//!
//! Time is an argument (milliseconds from any origin): the table never
//! reads a clock, so tests age flows without sleeping.

use super::fragment::FragmentTable;
use super::key::{is_v6_words, FlowKey};
use super::stale::StaleEnd;
use crate::memory::{Zeroable, ZeroedSlice};
use crate::stats::DropReason;
use crate::tables::{Route, RouteTarget};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;

/// Slots per bucket: their tags fill one cache line.
const BUCKET: usize = 16;
/// A new entry goes to its first bucket while that keeps this many slots
/// free, else to the emptier of its two.
const SPARE: u32 = 4;
/// Slots per pair of capacity, in quarters: 1.5x the entries, so that both
/// of a key's buckets are full only very rarely when the table is.
const SLACK_QUARTERS: usize = 6;
/// Insert locks.
const STRIPES: usize = 4096;

/// Sizes and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Flow pairs the table holds (Contrail's default: 512K).
    pub capacity: usize,
    /// Pairs one vif may create.
    pub per_vif: u32,
    /// Pairs one VRF may hold.
    pub per_vrf: u32,
    /// Idle timeout of established and non-TCP flows (Contrail: 180 s).
    pub idle_ms: u64,
    /// Idle timeout of flows whose action is drop.
    pub drop_ms: u64,
    /// Timeout of closed TCP flows (FIN both ways, or RST).
    pub closed_ms: u64,
    /// Timeout of TCP flows not yet established.
    pub half_open_ms: u64,
    /// Fragmented datagrams whose ports are kept for their later fragments.
    pub fragments: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            capacity: 512 * 1024,
            per_vif: 64 * 1024,
            per_vrf: 256 * 1024,
            idle_ms: 180_000,
            drop_ms: 30_000,
            closed_ms: 10_000,
            half_open_ms: 30_000,
            fragments: 4096,
        }
    }
}

/// What a flow does with its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Forward (with the NAT rewrite, if the entry has one).
    Forward,
    /// Drop, counted under the reason.
    Drop(DropReason),
}

/// A NAT rewrite of one direction (IPv4): the new addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nat {
    /// New source address, if rewritten.
    pub src: Option<u32>,
    /// New destination address, if rewritten.
    pub dst: Option<u32>,
    /// New source port, if rewritten.
    pub sport: Option<u16>,
    /// New destination port, if rewritten.
    pub dport: Option<u16>,
}

impl Nat {
    /// True if nothing is rewritten.
    pub fn is_none(&self) -> bool {
        *self == Nat::default()
    }
}

/// One direction of a new pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirSpec {
    /// Its key.
    pub key: FlowKey,
    /// Its action.
    pub action: FlowAction,
    /// The ECMP member it is pinned to, if its route was a composite.
    pub ecmp: Option<RouteTarget>,
    /// Its NAT rewrite.
    pub nat: Nat,
    /// After the rewrite, route in this VRF instead of the packet's own (a
    /// floating IP's answers go back out through the public VRF).
    pub route_vrf: Option<u32>,
    /// The flow hash of its packets (`pipeline::hash::key_hash`), kept for
    /// `Forwarding::hash`.
    pub hash: u32,
    /// Only this direction's packets are tracked (in a VRF that tracks flows
    /// for its ECMP routes alone, the answers go to the client, not to a
    /// composite): the pair's TCP state is judged from this direction's
    /// flags alone. Read from the forward entry.
    pub one_way: bool,
    /// The route its first packet was looked up with, in the VRF of its
    /// key (in the table of its family), for its next packets to recall
    /// (`RouteMemo`).
    pub route: Option<Route>,
    /// Its action was decided while an address that a policy judges by
    /// its network had no route (a remote pod whose route had not come
    /// yet): the decision may change once the route comes, so the pair is
    /// decided again on each packet until then (`Hit::unrouted`).
    pub unrouted: bool,
}

impl DirSpec {
    /// An entry for `key` that only applies `action`: no NAT, no member
    /// pinned, no other VRF, no route remembered, hash 0, both directions
    /// tracked. The fields are public; set the others as needed.
    pub fn new(key: FlowKey, action: FlowAction) -> DirSpec {
        DirSpec {
            key,
            action,
            ecmp: None,
            nat: Nat::default(),
            route_vrf: None,
            hash: 0,
            one_way: false,
            route: None,
            unrouted: false,
        }
    }
}

/// Why a pair was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// The table holds its capacity, or the key's window is full.
    TableFull,
    /// The vif that created it is at its limit.
    VifLimit,
    /// The VRF is at its limit.
    VrfLimit,
    /// The forward key exists already (another worker was first): here it is.
    Exists(Hit),
}

/// What a lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The entry's slot.
    pub slot: u32,
    /// The other direction's slot.
    pub reverse: u32,
    /// The action.
    pub action: FlowAction,
    /// The policy generation the action was decided under.
    pub policy_generation: u32,
    /// The pinned ECMP member.
    pub ecmp: Option<RouteTarget>,
    /// The NAT rewrite.
    pub nat: Nat,
    /// True for the direction that created the pair.
    pub forward: bool,
    /// The VRF to route in after the rewrite, if not the packet's own.
    pub route_vrf: Option<u32>,
    /// Decided without a route for an address the policy judges by its
    /// network (`DirSpec::unrouted`): to be decided again.
    pub unrouted: bool,
}

impl CreateError {
    /// The drop reason of a packet whose flow could not be made.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            CreateError::TableFull | CreateError::Exists(_) => DropReason::FlowTableFull,
            CreateError::VifLimit | CreateError::VrfLimit => DropReason::FlowLimit,
        }
    }
}

/// TCP state of a pair, from the flags each direction has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Not TCP.
    None,
    /// A SYN, not yet answered and acknowledged.
    HalfOpen,
    /// SYN, SYN-ACK and ACK seen.
    Established,
    /// FIN one way.
    Closing,
    /// FIN both ways, or a RST.
    Closed,
}

impl TcpState {
    /// As `vrctl flow` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::None => "-",
            TcpState::HalfOpen => "syn",
            TcpState::Established => "established",
            TcpState::Closing => "fin",
            TcpState::Closed => "closed",
        }
    }
}

/// A whole entry, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// Slot.
    pub slot: u32,
    /// Key.
    pub key: FlowKey,
    /// The other direction's slot.
    pub reverse: u32,
    /// True for the direction that created the pair.
    pub forward: bool,
    /// Action.
    pub action: FlowAction,
    /// Pinned ECMP member.
    pub ecmp: Option<RouteTarget>,
    /// NAT rewrite.
    pub nat: Nat,
    /// The VRF routed in after the rewrite, if not the packet's own.
    pub route_vrf: Option<u32>,
    /// The vif whose packet created the pair.
    pub vif: u32,
    /// Packets and bytes of this direction.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// TCP state of the pair.
    pub tcp: TcpState,
    /// The pair tracks its forward direction alone (`DirSpec::one_way`):
    /// the reverse entry counts no packets.
    pub one_way: bool,
    /// The policy generation of the VRF that judged the pair, when its
    /// action was decided (`Vrf::policy_generation`).
    pub policy_generation: u32,
    /// Decided without a route for an address a policy judges by its
    /// network (`DirSpec::unrouted`): its next packet decides it again.
    pub unrouted: bool,
    /// Milliseconds since creation, at `now`.
    pub age_ms: u64,
    /// Milliseconds since the last packet either way, at `now`.
    pub idle_ms: u64,
}

// Sequence number bits.
const WRITING: u32 = 1;
const LIVE: u32 = 2;
const STEP: u32 = 4;

// Action word: kind, drop reason, flags, TCP flags seen, policy generation.
const KIND_FORWARD: u64 = 1;
const KIND_DROP: u64 = 2;
const FLAG_FORWARD_DIR: u64 = 1 << 16;
/// The entry rewrites nothing and routes in its own VRF: no NAT, no route
/// VRF. With `KIND_FORWARD`, a hit needs nothing but its pinned member,
/// which `forward_only` answers from the action word alone.
const FLAG_PLAIN: u64 = 1 << 17;
/// The other direction's packets are not tracked (`DirSpec::one_way`).
const FLAG_ONE_WAY: u64 = 1 << 18;
/// The pair's entries are in two VRFs: it reaches a pod of another network
/// on this node (or is a floating IP's), whose policy may judge it too. A
/// pair of one VRF is judged by that VRF's policy alone, so it keeps its
/// decision when another network's change moves its VRF's generation
/// (`forward_only`, `pipeline::flow::stale`); a pair of two VRFs is checked.
const FLAG_CROSS: u64 = 1 << 19;
/// Decided without a route for an address a policy judges by its network
/// (`DirSpec::unrouted`): never settled, decided again on each packet.
/// Above the TCP bits.
const FLAG_UNROUTED: u64 = 1 << 24;
/// The action word's flags that belong to the entry, not to its action.
const ENTRY_FLAGS: u64 = FLAG_FORWARD_DIR | FLAG_PLAIN | FLAG_ONE_WAY | FLAG_CROSS | FLAG_UNROUTED;

const NO_ECMP: u64 = u64::MAX;

// TCP flags as seen per direction (TCP's own bits), and RST.
const TCP_FIN: u32 = 0x01;
const TCP_SYN: u32 = 0x02;
const TCP_RST: u32 = 0x04;
const TCP_ACK: u32 = 0x10;
/// Where the action word keeps them: FIN, SYN and RST as they are, ACK
/// next to them, all shifted by 20, on the line a hit writes anyway. Not
/// compared by `forward_only`, and kept by `decide_again`.
const TCP_SHIFT: u32 = 20;
const TCP_BITS: u64 = 0xf << TCP_SHIFT;
/// The longest timeout a table keeps to (`FlowConfig`'s are cut to it):
/// `last_seen` is 32 bits of milliseconds, read with wrapping.
pub const MAX_TIMEOUT_MS: u64 = 1 << 31;
/// The vif in `origin`, under the creation time (40 bits of milliseconds:
/// 34 years of the caller's clock).
const VIF_BITS: u32 = 24;
const VIF_MASK: u64 = (1 << VIF_BITS) - 1;
/// The route VRF in `nat_which`, + 1, above the NAT and TCP flags.
const ROUTE_VRF_SHIFT: u32 = 8;

/// Vif indexes an entry can hold: a daemon's `limits.vifs` may not exceed it.
pub const MAX_VIFS: usize = 1 << VIF_BITS;
/// VRF ids a key holds (`key::VRF_BITS`), and an entry can route in (+ 1,
/// in 24 bits): a daemon's `limits.vrfs` may not exceed it.
pub const MAX_VRFS: usize = (1 << super::key::VRF_BITS) - 1;
const _: () = assert!(MAX_VRFS < 1 << (32 - ROUTE_VRF_SHIFT));

/// An `origin` word: the creating vif, and when.
fn pack_origin(vif: u32, now: u64) -> u64 {
    (now << VIF_BITS) | (u64::from(vif) & VIF_MASK)
}

/// The creating vif, from an `origin` word.
fn origin_vif(origin: u64) -> u32 {
    (origin & VIF_MASK) as u32
}

/// The creation time, from an `origin` word.
fn origin_time(origin: u64) -> u64 {
    origin >> VIF_BITS
}

/// TCP flags (TCP's bits) as the action word keeps them.
#[inline(always)]
fn pack_tcp(flags: u32) -> u64 {
    u64::from((flags & (TCP_FIN | TCP_SYN | TCP_RST)) | ((flags & TCP_ACK) >> 1)) << TCP_SHIFT
}

/// TCP flags (TCP's bits) from an action word.
fn unpack_tcp(action: u64) -> u32 {
    let f = ((action & TCP_BITS) >> TCP_SHIFT) as u32;
    (f & (TCP_FIN | TCP_SYN | TCP_RST)) | ((f & 0x8) << 1)
}

/// A held stripe lock.
type StripeLock<'a> = std::sync::MutexGuard<'a, ()>;

/// Both stripe locks of a pair's keys (one, where they share a stripe).
type PairLocks<'a> = (StripeLock<'a>, Option<StripeLock<'a>>);

/// One entry: two cache lines. The first holds everything a hit on an
/// IPv4 entry that only forwards reads and writes: the key (two words, see
/// `FlowKey::words`), the action, the pinned member, the route, the hash
/// and the counts. A hit is three lines from memory (its tag line, the
/// slot's first line, the frame), not four: 31-32 instructions fewer and
/// 1.02-1.05x (docs/architecture.md, "One line a hit"). The second
/// holds the rest of an IPv6 key, the NAT rewrite and what only the
/// control plane and the general path read.
#[derive(Default)]
#[repr(C, align(64))]
struct Slot {
    seq: AtomicU32,
    /// The flow hash of the entry's packets (`DirSpec::hash`).
    hash: AtomicU32,
    /// The key's first two words: an IPv4 key whole.
    key: [AtomicU64; 2],
    /// The action word, with the TCP flags seen (`TCP_BITS`).
    action: AtomicU64,
    ecmp: AtomicU64,
    /// The route the data path last looked up for the entry (`RouteMemo`).
    route: AtomicU64,
    /// Packets, the low 32 bits (`packets_high` has the rest).
    packets: AtomicU32,
    /// When the last packet came: the low 32 bits of the caller's clock, in
    /// milliseconds, compared with wrapping (`idle`): 49 days around, far
    /// past the longest timeout (`MAX_TIMEOUT_MS`).
    last_seen: AtomicU32,
    bytes: AtomicU64,
    // Second line.
    /// An IPv6 key's other four words (0 for IPv4).
    key_rest: [AtomicU64; 4],
    reverse: AtomicU32,
    nat_ports: AtomicU32,
    /// From the bottom: the NAT flags (4 bits), and the route VRF + 1
    /// (24 bits; 0 for none) above `ROUTE_VRF_SHIFT`.
    nat_which: AtomicU32,
    /// Packets over 2^32, added to once in 4G packets.
    packets_high: AtomicU32,
    nat_addrs: AtomicU64,
    /// The creating vif (24 bits, `VIF_BITS`) under the creation time.
    origin: AtomicU64,
}

impl Slot {
    /// The key's words (`FlowKey::words`).
    #[inline(always)]
    fn key_words(&self) -> [u64; 6] {
        let [a, b] = self.key.each_ref().map(|k| k.load(Relaxed));
        let [c, d, e, f] = self.key_rest.each_ref().map(|k| k.load(Relaxed));
        [a, b, c, d, e, f]
    }

    /// True if the slot holds the key whose words are `w`: the first line
    /// alone for an IPv4 key (the family is in the first word, so an IPv6
    /// entry never answers an IPv4 key).
    #[inline(always)]
    fn holds(&self, w: &[u64; 6]) -> bool {
        let first = (self.key[0].load(Relaxed) ^ w[0]) | (self.key[1].load(Relaxed) ^ w[1]);
        first == 0 && (!is_v6_words(w) || same_words(&self.key_words(), w))
    }

    /// Packets counted. Read without a lock: at the very moment the low
    /// word wraps, once in 4G packets, a reader may see 2^32 too few.
    fn packets(&self) -> u64 {
        (u64::from(self.packets_high.load(Relaxed)) << 32) | u64::from(self.packets.load(Relaxed))
    }

    /// Milliseconds since the entry's last packet (or its creation), at `now`.
    #[inline(always)]
    fn idle(&self, now: u64) -> u64 {
        u64::from((now as u32).wrapping_sub(self.last_seen.load(Relaxed)))
    }
}

// SAFETY: both are made of atomic integers only; zero is a valid value.
#[allow(unsafe_code)]
unsafe impl Zeroable for Slot {}
#[allow(unsafe_code)]
unsafe impl Zeroable for Tags {}

// The layout the costs above count on.
const _: () = assert!(std::mem::size_of::<Slot>() == 128 && std::mem::size_of::<Tags>() == 64);
const _: () = assert!(std::mem::offset_of!(Slot, key_rest) == 64);

/// A bucket's tags, one cache line: per slot, a fragment of its live key's
/// hash (never 0), or 0 for a free slot.
#[derive(Default)]
#[repr(align(64))]
struct Tags([AtomicU32; BUCKET]);

impl Tags {
    /// The first slot whose tag is `tag`. Four tags at a time, each four
    /// compared with no early exit: where in its bucket a key lives is
    /// random from packet to packet, so a scan that stops at it is a branch
    /// the CPU mispredicts on most packets, while a bucket's first four
    /// slots hold nearly every key (a bucket fills from its first free
    /// slot, and holds a few keys at the table's load). `locate` keeps a
    /// branch per tag on purpose: its tags are still on their way, and a
    /// predicted "no match" lets the CPU run ahead into the next lookup;
    /// here the line was asked for while the vector was parsed.
    #[inline(always)]
    fn position(&self, tag: u32) -> Option<usize> {
        self.0.chunks_exact(4).enumerate().find_map(|(g, four)| {
            let m = four.iter().enumerate().fold(0u32, |m, (i, t)| m | (u32::from(t.load(Relaxed) == tag) << i));
            (m != 0).then(|| g * 4 + m.trailing_zeros() as usize)
        })
    }

    /// The free slots, as a bit mask.
    #[inline]
    fn free(&self) -> u32 {
        self.0.iter().enumerate().fold(0, |m, (i, t)| m | (u32::from(t.load(Relaxed) == 0) << i))
    }
}

/// True if two keys' words are equal: one branch, not a `memcmp` call.
#[inline(always)]
fn same_words(a: &[u64; 6], b: &[u64; 6]) -> bool {
    a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A VRF's policy generation as a hit checks its entry against it
/// (`forward_only`): `Vrf::policy_generation` and `Vrf::policy_changed_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyGenerations {
    /// The VRF's generation now.
    pub now: u32,
    /// The generation its own policy last changed at.
    pub own_change: u32,
}

impl PolicyGenerations {
    /// Whether a decision made under generation `decided` is at or after
    /// the VRF's own policy last changed: the moves since, if any, were
    /// other networks' changes. Generations only grow (wrapping), so the
    /// own change is the older when it is more steps back from now.
    #[inline]
    pub fn own_unchanged_since(self, decided: u32) -> bool {
        self.now.wrapping_sub(decided) <= self.now.wrapping_sub(self.own_change)
    }

    /// Whether a plain forward entry (`action`) decided under an older
    /// generation keeps its decision: its VRF's own policy is unchanged
    /// since, and the pair is of one VRF (not `FLAG_CROSS`), which no other
    /// network's policy judges. The general path's test for the same
    /// (`pipeline::flow::stale`). Cold and out of line: a hit under the
    /// current generation, the common case, pays for the branch alone.
    #[cold]
    #[inline(never)]
    fn keeps(self, action: u64) -> bool {
        action & (0xffff | FLAG_PLAIN | FLAG_CROSS | FLAG_UNROUTED) == KIND_FORWARD | FLAG_PLAIN
            && self.own_unchanged_since((action >> 32) as u32)
    }

    /// `keeps` for the forward entry of a pair that drops (`dropping`): of
    /// one VRF, decided with its routes, and its VRF's own policy unchanged
    /// since. Before, a change of another network's policy that moved the
    /// VRF's generation (one whose pods its routes reach) sent each denied
    /// flow's next packet to the general path, at 7x a drop's cost, to be
    /// stamped with the new generation (`vrpktgen pipeline --case all
    /// --policy-change --flow-deny`, "reached").
    #[cold]
    #[inline(never)]
    fn keeps_drop(self, action: u64) -> bool {
        action & (0xff | FLAG_FORWARD_DIR | FLAG_CROSS | FLAG_UNROUTED) == KIND_DROP | FLAG_FORWARD_DIR
            && self.own_unchanged_since((action >> 32) as u32)
    }
}

/// Whether an entry's action word (`action`) says "forward", with the entry
/// flags `flags` (`FLAG_PLAIN`, or none), as decided under its VRF's
/// current policy (`policy`; `None`: any), not waiting for a route: the
/// fast path's test of a hit (`forward_only`, `forward_translated`). An
/// entry decided before the generation last moved is checked off the
/// common way, after the first compare (`PolicyGenerations::keeps`).
#[inline(always)]
fn decided_now(action: u64, flags: u64, policy: Option<PolicyGenerations>) -> bool {
    let want = KIND_FORWARD | flags | policy.map_or(0, |g| u64::from(g.now) << 32);
    let mask = 0xffff | flags | FLAG_UNROUTED | policy.map_or(0, |_| 0xffff_ffff << 32);
    action & mask == want || policy.is_some_and(|g| g.keeps(action))
}

/// True if an entry with action word `action`, routing in `route_vrf`,
/// forwards as decided now: a reverse entry routing in another VRF under
/// that VRF's current generation (`judging`), any other under `policy`
/// (`FlowTable::forward_translated`).
#[inline(always)]
fn translated_current(
    action: u64,
    route_vrf: Option<u32>,
    policy: PolicyGenerations,
    judging: impl Fn(u32) -> Option<PolicyGenerations>,
) -> bool {
    match route_vrf.filter(|_| action & FLAG_FORWARD_DIR == 0) {
        // Never plain, so decided under the current generation alone
        // (`PolicyGenerations::keeps`).
        Some(id) => {
            action & (0xffff | FLAG_UNROUTED) == KIND_FORWARD
                && judging(id).is_some_and(|g| (action >> 32) as u32 == g.now)
        }
        None => decided_now(action, 0, Some(policy)),
    }
}

/// What a hit on an entry that only forwards needs (`forward_only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// The entry's slot, where the packet is counted (`touch`).
    pub slot: u32,
    /// The pinned ECMP member.
    pub ecmp: Option<RouteTarget>,
    /// The entry's route, as the data path last looked it up.
    pub route: RouteMemo,
    /// The flow hash of the entry's packets (`DirSpec::hash`): a hit reads
    /// it instead of hashing the packet (30-40 instructions, callgrind).
    pub hash: u32,
}

/// What a hit on an entry that rewrites or routes elsewhere does besides
/// forwarding (`forward_translated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The rewrite of the entry's packets.
    pub nat: Nat,
    /// The VRF its packets are routed in, once rewritten: the public one,
    /// for a floating IP's answers (`None`: the one they were looked up in).
    pub route_vrf: Option<u32>,
}

impl Translation {
    /// True if the entry neither rewrites nor routes elsewhere: a plain
    /// entry's (`forward_only` would have taken it).
    pub fn forwards_only(&self) -> bool {
        self.nat.is_none() && self.route_vrf.is_none()
    }
}

/// A flow entry's memory of its route: the route lookup's answer in one
/// table version (`Route`), which spares the flow's packets the lookup
/// while that version lasts. One word, so that workers can update it
/// without the entry's lock: the table version (32 bits), the entry's
/// incarnation (8 bits) and the leaf value (24 bits). The incarnation
/// changes whenever the slot is given to a new entry, so an update meant
/// for the old entry fails (`FlowTable::remember_route`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMemo(u64);

const LEAF_BITS: u32 = 24;
const LEAF_MASK: u64 = (1 << LEAF_BITS) - 1;
const INCARNATION_MASK: u64 = 0xff << LEAF_BITS;

impl RouteMemo {
    /// No route remembered.
    pub const NONE: RouteMemo = RouteMemo(0);

    /// The route remembered, if any (version 0: none yet).
    #[inline(always)]
    pub fn route(self) -> Route {
        Route { version: (self.0 >> 32) as u32, leaf: (self.0 & LEAF_MASK) as u32 }
    }

    /// The same entry's memory of `route`, if its leaf fits.
    #[inline(always)]
    fn with(self, route: Route) -> Option<RouteMemo> {
        (u64::from(route.leaf) <= LEAF_MASK).then_some(RouteMemo(
            (u64::from(route.version) << 32) | (self.0 & INCARNATION_MASK) | u64::from(route.leaf),
        ))
    }

    /// The memory of the slot's next entry: nothing, under a new incarnation.
    fn next_incarnation(self) -> RouteMemo {
        RouteMemo((self.0 & INCARNATION_MASK).wrapping_add(1 << LEAF_BITS) & INCARNATION_MASK)
    }
}

/// Which direction of its pair an entry is, and whether the pair is
/// one-way (`DirSpec::one_way`), from one read of each action word.
#[derive(Clone, Copy)]
struct Directions {
    forward: bool,
    one_way: bool,
}

/// Who made a pair, when, and under which policy generation.
#[derive(Clone, Copy)]
struct Stamp {
    vif: u32,
    now: u64,
    generation: u32,
    /// The pair's entries are in two VRFs (`FLAG_CROSS`).
    cross: bool,
}

/// Where a key lives.
#[derive(Clone, Copy)]
struct Place {
    buckets: [usize; 2],
    stripe: usize,
    tag: u32,
}

/// A key made ready for lookups: its words as slots store them, and its
/// place, computed once per packet although the packet is looked up in
/// steps (`prefetch_tags`, `prefetch_slots`, `find`).
#[derive(Clone, Copy)]
pub struct Probe {
    words: [u64; 6],
    at: Place,
    /// The slot whose tag `prefetch_slots` matched, tried first by `find`
    /// (which checks the key), so that the tags are scanned once.
    hint: u32,
    /// `prefetch_slots` fetches the slot's second line too: for an IPv6
    /// key (the rest of it is there) and for `find` (`probe_whole`).
    whole: bool,
}

const NO_HINT: u32 = u32::MAX;

// The size the pipeline's comments give (it writes probes in place).
const _: () = assert!(std::mem::size_of::<Probe>() == 88);

impl Probe {
    /// A placeholder, for arrays of probes: made for no key.
    pub const UNUSED: Probe =
        Probe { words: [0; 6], at: Place { buckets: [0; 2], stripe: 0, tag: 0 }, hint: NO_HINT, whole: false };

    /// True if the probe was made for `key`.
    pub fn is_for(&self, key: &FlowKey) -> bool {
        same_words(&self.words, &key.words())
    }

    /// The key the probe was made for.
    pub fn key(&self) -> FlowKey {
        FlowKey::from_words(&self.words)
    }

    /// True if `FlowTable::prefetch_slots` found a tag of the key's in its
    /// first bucket: false for nearly every new flow.
    #[inline(always)]
    pub fn hinted(&self) -> bool {
        self.hint != NO_HINT
    }

    /// Asks `FlowTable::prefetch_slots` for the slot's second line too,
    /// where a rewrite and a route VRF are: for `forward_translated`.
    #[inline(always)]
    pub fn fetch_whole_slot(&mut self) {
        self.whole = true;
    }
}

/// Where `FlowTable::prefetch_pair_apart` found a reverse entry would go,
/// for `prefetch_reverse_slot`.
#[derive(Clone, Copy, Default)]
pub struct ReverseAhead {
    bucket: usize,
}

/// The flow table.
pub struct FlowTable {
    cfg: FlowConfig,
    /// Slot `i` is in bucket `i / BUCKET`.
    slots: ZeroedSlice<Slot>,
    tags: ZeroedSlice<Tags>,
    stripes: Box<[Mutex<()>]>,
    pairs: AtomicU32,
    per_vif: Box<[AtomicU32]>,
    per_vrf: Box<[AtomicU32]>,
    cursor: AtomicUsize,
    created: AtomicU64,
    removed: AtomicU64,
    redecided: AtomicU64,
    fragments: FragmentTable,
}

/// The action word: the action, the policy generation it was decided
/// under, and the entry's `flags` (of `ENTRY_FLAGS`).
fn encode_action(a: FlowAction, flags: u64, generation: u32) -> u64 {
    let kind = match a {
        FlowAction::Forward => KIND_FORWARD,
        FlowAction::Drop(r) => KIND_DROP | ((r as u64) << 8),
    };
    kind | (flags & ENTRY_FLAGS) | (u64::from(generation) << 32)
}

fn decode_action(w: u64) -> FlowAction {
    if w & 0xff == KIND_DROP {
        let r = ((w >> 8) & 0xff) as usize;
        FlowAction::Drop(DropReason::ALL.get(r).copied().unwrap_or(DropReason::Discard))
    } else {
        FlowAction::Forward
    }
}

fn encode_ecmp(t: Option<RouteTarget>) -> u64 {
    t.map_or(NO_ECMP, |t| (u64::from(t.nh) << 32) | u64::from(t.label))
}

fn decode_ecmp(w: u64) -> Option<RouteTarget> {
    (w != NO_ECMP).then_some(RouteTarget { nh: (w >> 32) as u32, label: w as u32 })
}

fn encode_nat(n: &Nat) -> (u64, u32, u32) {
    let which = u32::from(n.src.is_some())
        | u32::from(n.dst.is_some()) << 1
        | u32::from(n.sport.is_some()) << 2
        | u32::from(n.dport.is_some()) << 3;
    let addrs = (u64::from(n.src.unwrap_or(0)) << 32) | u64::from(n.dst.unwrap_or(0));
    let ports = (u32::from(n.sport.unwrap_or(0)) << 16) | u32::from(n.dport.unwrap_or(0));
    (addrs, ports, which)
}

fn decode_nat(addrs: u64, ports: u32, which: u32) -> Nat {
    Nat {
        src: (which & 1 != 0).then_some((addrs >> 32) as u32),
        dst: (which & 2 != 0).then_some(addrs as u32),
        sport: (which & 4 != 0).then_some((ports >> 16) as u16),
        dport: (which & 8 != 0).then_some(ports as u16),
    }
}

impl FlowTable {
    /// An empty table for `cfg.capacity` pairs, counting limits over `vifs`
    /// vifs and `vrfs` VRFs.
    /// Timeouts past `MAX_TIMEOUT_MS` are cut to it. Panics, like an
    /// allocation, if the memory cannot be had (`try_new` says why).
    pub fn new(cfg: FlowConfig, vifs: usize, vrfs: usize) -> FlowTable {
        Self::try_new(cfg, vifs, vrfs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `new`, or why the memory for its slots cannot be had (the kernel
    /// refused the mapping: too little memory, or the process's limit).
    pub fn try_new(cfg: FlowConfig, vifs: usize, vrfs: usize) -> std::io::Result<FlowTable> {
        let n = Self::slots_for(cfg.capacity);
        let cut = |ms: u64| ms.min(MAX_TIMEOUT_MS);
        let cfg = FlowConfig {
            idle_ms: cut(cfg.idle_ms),
            drop_ms: cut(cfg.drop_ms),
            closed_ms: cut(cfg.closed_ms),
            half_open_ms: cut(cfg.half_open_ms),
            ..cfg
        };
        Ok(FlowTable {
            slots: ZeroedSlice::try_new(n)?,
            tags: ZeroedSlice::try_new(n / BUCKET)?,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            pairs: AtomicU32::new(0),
            per_vif: (0..vifs).map(|_| AtomicU32::new(0)).collect(),
            per_vrf: (0..vrfs).map(|_| AtomicU32::new(0)).collect(),
            cursor: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            redecided: AtomicU64::new(0),
            fragments: FragmentTable::new(cfg.fragments),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Pairs in the table.
    pub fn len(&self) -> usize {
        self.pairs.load(Relaxed) as usize
    }

    /// True when the table holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pairs created and removed since the start: setup and teardown rates
    /// are their differences over time.
    pub fn churn(&self) -> (u64, u64) {
        (self.created.load(Relaxed), self.removed.load(Relaxed))
    }

    /// Pairs decided again since the start (`decide_again`): after a policy
    /// change, each pair it can judge, once, on its next packet. What a
    /// policy push cost the data path, and whether it reached the flows it
    /// was meant for.
    pub fn redecided(&self) -> u64 {
        self.redecided.load(Relaxed)
    }

    /// Bytes a table configured as `cfg` takes, all of it allocated up front.
    pub fn memory_for(cfg: &FlowConfig, vifs: usize, vrfs: usize) -> usize {
        Self::slots_for(cfg.capacity) * (std::mem::size_of::<Slot>() + 4)
            + FragmentTable::memory_for(cfg.fragments)
            + STRIPES * std::mem::size_of::<Mutex<()>>()
            + (vifs + vrfs) * 4
    }

    fn slots_for(capacity: usize) -> usize {
        (capacity.max(1) * 2 * SLACK_QUARTERS / 4).div_ceil(BUCKET).max(2) * BUCKET
    }

    /// Entries (slots), both directions of every pair.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table holds, all of it allocated up front.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
            + self.tags.len() * std::mem::size_of::<Tags>()
            + self.stripes.len() * std::mem::size_of::<Mutex<()>>()
            + (self.per_vif.len() + self.per_vrf.len()) * 4
            + self.fragments.memory_bytes()
    }

    /// The ports of fragmented datagrams, kept for their later fragments.
    pub fn fragments(&self) -> &FragmentTable {
        &self.fragments
    }

    /// From one hash of the key: its two buckets, its lock stripe, and its
    /// tag (a hash fragment, never 0, which marks a free slot).
    #[inline]
    fn place(&self, key: &FlowKey) -> Place {
        self.place_of(&key.words())
    }

    #[inline(always)]
    fn place_of(&self, words: &[u64; 6]) -> Place {
        let h = super::key::hash_words(words);
        let n = self.tags.len() as u64;
        let first = (((h >> 32) * n) >> 32) as usize;
        let second = (((h & 0xffff_ffff) * n) >> 32) as usize;
        Place {
            buckets: [first, second],
            stripe: (h.rotate_right(7) as usize) % STRIPES,
            tag: (h.rotate_right(17) as u32) | 1,
        }
    }

    fn lock(&self, stripe: usize) -> StripeLock<'_> {
        // The guarded data is `()`: a poisoned stripe is still a good lock.
        self.stripes[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stripe locks of a pair's two keys, taken in stripe order, as
    /// every holder of two takes them (no two can deadlock); one lock when
    /// both keys share a stripe.
    fn lock_stripes(&self, s1: usize, s2: usize) -> PairLocks<'_> {
        let (a, b) = (s1.min(s2), s1.max(s2));
        (self.lock(a), (a != b).then(|| self.lock(b)))
    }

    /// Reads slot `i` if it is live and stable: its key and what a hit needs.
    fn read(&self, i: usize) -> Option<(FlowKey, Hit)> {
        // Slot numbers come from outside here (the API's `flow.get` and
        // `flow.delete`): one past the table is no flow, not a panic.
        self.slots.get(i)?;
        self.read_slot(i, None).map(|(w, hit)| (FlowKey::from_words(&w), hit))
    }

    /// The seqlock read of slot `i`: what `read` takes from the slot, if the
    /// slot is live and nobody wrote it meanwhile. `read` may give up early
    /// (`None`), as when the key is not the one looked for.
    #[inline(always)]
    fn read_stable<R>(&self, i: usize, read: impl FnOnce(&Slot) -> Option<R>) -> Option<R> {
        let s = &self.slots[i];
        let v1 = s.seq.load(Acquire);
        if v1 & (LIVE | WRITING) != LIVE {
            return None;
        }
        let r = read(s)?;
        fence(Acquire);
        (s.seq.load(Relaxed) == v1).then_some(r)
    }

    /// Slot `i`'s key words and what a hit needs, if it is live and stable
    /// (and holds `expect`, if given: compared before anything else is read).
    #[inline(always)]
    fn read_slot(&self, i: usize, expect: Option<&[u64; 6]>) -> Option<([u64; 6], Hit)> {
        let (w, action, ecmp, (addrs, ports, which), reverse) = self.read_stable(i, |s| {
            if expect.is_some_and(|e| !s.holds(e)) {
                return None;
            }
            let w = s.key_words();
            let nat = (s.nat_addrs.load(Relaxed), s.nat_ports.load(Relaxed), s.nat_which.load(Relaxed));
            Some((w, s.action.load(Relaxed), s.ecmp.load(Relaxed), nat, s.reverse.load(Relaxed)))
        })?;
        let hit = Hit {
            slot: i as u32,
            reverse,
            action: decode_action(action),
            policy_generation: (action >> 32) as u32,
            ecmp: decode_ecmp(ecmp),
            nat: decode_nat(addrs, ports, which),
            forward: action & FLAG_FORWARD_DIR != 0,
            route_vrf: (which >> ROUTE_VRF_SHIFT).checked_sub(1),
            unrouted: action & FLAG_UNROUTED != 0,
        };
        Some((w, hit))
    }

    /// Starts fetching a key's two tag lines, without waiting for them.
    #[inline]
    fn fetch(&self, at: &Place) {
        for b in at.buckets {
            crate::memory::prefetch(&self.tags[b]);
        }
    }

    /// The entry for `key`, if any. Lock-free. The steps of a vector's
    /// lookups, one right after the other: the hint the tag scan leaves
    /// lets `find` read the common case in line (`search`).
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        let mut p = self.probe(key);
        self.prefetch_slots(&mut p);
        self.find(&p)
    }

    /// `key`, ready for the lookup steps. Always inlined: the key is built
    /// in registers just before, and a call would pass it through memory.
    /// For `forward_only`: an IPv4 key's slot is fetched one line.
    #[inline(always)]
    pub fn probe(&self, key: &FlowKey) -> Probe {
        let words = key.words();
        Probe { at: self.place_of(&words), words, hint: NO_HINT, whole: is_v6_words(&words) }
    }

    /// `probe`, for `find`, which reads the whole slot (the NAT rewrite,
    /// the other entry): both lines are fetched.
    #[inline(always)]
    pub fn probe_whole(&self, key: &FlowKey) -> Probe {
        Probe { whole: true, ..self.probe(key) }
    }

    /// The first of a batch's two prefetch steps: starts fetching the
    /// key's tag line. A vector calls it for all its packets, does
    /// other work, then calls `prefetch_slots`: the misses of the whole
    /// vector overlap instead of coming one packet after another.
    /// Only the first bucket: nearly every key lives there (see `order`),
    /// and fetching both doubled the misses in flight for 3 % of the keys.
    #[inline]
    pub fn prefetch_tags(&self, p: &Probe) {
        crate::memory::prefetch(&self.tags[p.at.buckets[0]]);
    }

    /// The second step, once the tag line is in: starts fetching the
    /// first slot in the first bucket whose tag matches, and notes it in
    /// the probe for `find`. Its first line, all an IPv4 hit that only
    /// forwards reads and writes; its second too if the probe is `whole`.
    #[inline(always)]
    pub fn prefetch_slots(&self, p: &mut Probe) {
        let at = &p.at;
        let b = at.buckets[0];
        if let Some(k) = self.tags[b].position(at.tag) {
            let i = b * BUCKET + k;
            let slot = &self.slots[i];
            crate::memory::prefetch(&slot.seq);
            if p.whole {
                crate::memory::prefetch(&slot.key_rest);
            }
            p.hint = i as u32;
        }
    }

    /// For a probe whose key `prefetch_slots` found no tag for: a new
    /// flow, whose pair `create` will make. Starts fetching what `create`
    /// reads first, and would otherwise wait for there, one miss after
    /// the other: the key's second tag line and the tag lines of the
    /// reverse key in the same VRF (its answers' key, in the common case;
    /// `create` fetches the right one whatever it is). A vector makes its
    /// new flows' misses overlap this way.
    ///
    /// True if it did: the probe found no tag (`prefetch_pair_slots` is
    /// the second step).
    #[inline(never)]
    pub fn prefetch_pair(&self, p: &Probe) -> bool {
        if p.hint != NO_HINT {
            return false;
        }
        self.fetch(&p.at);
        self.fetch(&self.place(&FlowKey::from_words(&p.words).reversed()));
        true
    }

    /// `prefetch_pair`'s second step, once its tag lines are in: starts
    /// fetching both lines of the slot each of the pair's entries would
    /// take, which `create` writes: the first free one in its first bucket,
    /// where nearly every entry goes (`order`). Weighing both buckets, as
    /// `first_choice` does, cost a setup 240 instructions more (callgrind).
    #[inline(never)]
    pub fn prefetch_pair_slots(&self, p: &Probe) {
        let reverse = self.place(&FlowKey::from_words(&p.words).reversed());
        for b in [p.at.buckets[0], reverse.buckets[0]] {
            self.prefetch_free_slot(b);
        }
    }

    /// `prefetch_pair_slots` for a new flow whose reverse entry's key is
    /// not the probe's reversed (`reverse`: a floating IP's answers', say),
    /// whose tag lines `prefetch_pair` did not fetch: the forward entry's
    /// slot, and the reverse's tag lines. Once those are in,
    /// `prefetch_reverse_slot` fetches its slot, from the place worked out
    /// here.
    #[inline(never)]
    pub fn prefetch_pair_apart(&self, p: &Probe, reverse: &FlowKey) -> ReverseAhead {
        self.prefetch_free_slot(p.at.buckets[0]);
        let at = self.place(reverse);
        self.fetch(&at);
        ReverseAhead { bucket: at.buckets[0] }
    }

    /// `prefetch_pair_apart`'s second step: starts fetching the slot
    /// `create` would write the reverse entry to, both lines.
    #[inline(never)]
    pub fn prefetch_reverse_slot(&self, ahead: ReverseAhead) {
        self.prefetch_free_slot(ahead.bucket);
    }

    /// Starts fetching the first free slot of bucket `b`, both lines.
    #[inline(always)]
    fn prefetch_free_slot(&self, b: usize) {
        let free = self.tags[b].free();
        if free != 0 {
            self.prefetch_whole_slot((b * BUCKET) as u32 + free.trailing_zeros());
        }
    }

    /// The entry a probe names, if any: `lookup` after the prefetch steps.
    #[inline]
    pub fn find(&self, p: &Probe) -> Option<Hit> {
        self.search(p, |i| self.read_slot(i, Some(&p.words)).map(|(_, hit)| hit))
    }

    /// The probe's entry if it only forwards, as decided under its VRF's
    /// current policy (`policy`; `None`: any): no drop, no NAT, no other
    /// VRF to route in. Then a hit needs only its slot (to count the
    /// packet) and its pinned member, and this reads nothing else: the
    /// data path's common case, at a fraction of `find`'s cost. `None`
    /// says nothing about the entry: `find` tells the rest.
    #[inline(always)]
    pub fn forward_only(&self, p: &Probe, policy: Option<PolicyGenerations>) -> Option<Forwarding> {
        // The entry that holds the key, whatever its action: a key is in
        // one slot at most, so its action is judged once it is found,
        // outside the closure `locate` takes as a `dyn Fn` (with the
        // judging inside, LLVM stopped inlining the closure: 30 more
        // instructions a hit, callgrind).
        let (i, action, ecmp, route, hash) = self.search(p, |i| {
            self.read_stable(i, |s| {
                if !s.holds(&p.words) {
                    return None;
                }
                Some((i, s.action.load(Relaxed), s.ecmp.load(Relaxed), s.route.load(Relaxed), s.hash.load(Relaxed)))
            })
        })?;
        decided_now(action, FLAG_PLAIN, policy).then(|| Forwarding {
            slot: i as u32,
            ecmp: decode_ecmp(ecmp),
            route: RouteMemo(route),
            hash,
        })
    }

    /// The probe's entry if it drops, as decided under its VRF's current
    /// generation (`policy`), not waiting for a route, and is the forward
    /// entry of its pair: the entry and why it drops. The fast lane drops
    /// such a flow's packets itself, as `pipeline::flow::on_hit` would (a
    /// pod that keeps sending what its policy denies, a UDP flood among
    /// them, or a client a floating IP's policy denies, took the general
    /// path with every packet). A forward entry routes in its own VRF; its
    /// rewrite, if it has one (a floating IP's DNAT), is never made for a
    /// drop. An entry decided under an older generation is left to the
    /// general path, which decides it again or keeps its decision for the
    /// next packet, unless its VRF's own policy is unchanged since and the
    /// pair is of that VRF alone (`PolicyGenerations::keeps_drop`): then no
    /// change since can judge it. So is a reverse entry: the other side of a denied pair
    /// may be one the policy lets open the conversation, and the general
    /// path then makes the pair again, its way round
    /// (`pipeline::flow::lookup`), which takes the policy's verdict.
    #[inline]
    pub fn dropping(&self, p: &Probe, policy: PolicyGenerations) -> Option<(Forwarding, DropReason)> {
        let (i, action, ecmp, route, hash) = self.search(p, |i| {
            self.read_stable(i, |s| {
                if !s.holds(&p.words) {
                    return None;
                }
                Some((i, s.action.load(Relaxed), s.ecmp.load(Relaxed), s.route.load(Relaxed), s.hash.load(Relaxed)))
            })
        })?;
        let want = KIND_DROP | FLAG_FORWARD_DIR | (u64::from(policy.now) << 32);
        let mask = 0xff | FLAG_FORWARD_DIR | FLAG_UNROUTED | (0xffff_ffff << 32);
        if action & mask != want && !policy.keeps_drop(action) {
            return None;
        }
        let FlowAction::Drop(reason) = decode_action(action) else { return None };
        let hit = Forwarding { slot: i as u32, ecmp: decode_ecmp(ecmp), route: RouteMemo(route), hash };
        Some((hit, reason))
    }

    /// `forward_only` for the entries that rewrite or route elsewhere: a
    /// floating IP's pair, or a pair across VRFs. The entry forwards, with
    /// the rewrite it makes and the VRF its packets are routed in
    /// (`Translation`). The reverse entry of such a pair (one with a route
    /// VRF) is judged as its forward entry is, under the policy of the VRF
    /// it routes in, the forward entry's, whose generations `judging`
    /// gives by its id (`None`: that VRF is gone), as the general path
    /// judges it (`pipeline::flow::on_hit`). Reads the slot's second line,
    /// where the rewrite is.
    /// Inlined: out of line, its answer came back through memory, and a
    /// hit took 37-108 instructions more (callgrind: a floating IP's
    /// clients, a pod's answers across networks, and a floating-IP pod's
    /// plain flows).
    #[inline(always)]
    pub fn forward_translated(
        &self,
        p: &Probe,
        policy: PolicyGenerations,
        judging: impl Fn(u32) -> Option<PolicyGenerations>,
    ) -> Option<(Forwarding, Translation)> {
        let (i, action, ecmp, route, hash, (addrs, ports, which)) = self.search(p, |i| {
            self.read_stable(i, |s| {
                if !s.holds(&p.words) {
                    return None;
                }
                let nat = (s.nat_addrs.load(Relaxed), s.nat_ports.load(Relaxed), s.nat_which.load(Relaxed));
                let (action, ecmp, route) = (s.action.load(Relaxed), s.ecmp.load(Relaxed), s.route.load(Relaxed));
                Some((i, action, ecmp, route, s.hash.load(Relaxed), nat))
            })
        })?;
        let route_vrf = (which >> ROUTE_VRF_SHIFT).checked_sub(1);
        translated_current(action, route_vrf, policy, judging).then(|| {
            let forwarding = Forwarding { slot: i as u32, ecmp: decode_ecmp(ecmp), route: RouteMemo(route), hash };
            (forwarding, Translation { nat: decode_nat(addrs, ports, which), route_vrf })
        })
    }

    /// The first answer of `read` for the probe's slots: the hinted slot,
    /// then the slots whose tags match, bucket by bucket.
    ///
    /// The answer is read in line on both ways, from the hinted slot or from
    /// the one `locate` names, so that it stays in registers. (When the tag
    /// scan returned the answer itself, through memory, the two ways met in
    /// a stack slot written piecewise and read whole: a stalled store
    /// forward, the pipeline's hottest instruction in a run of flow hits,
    /// with a tenth of its samples: `perf record -e cpu-clock`.)
    #[inline(always)]
    fn search<R>(&self, p: &Probe, read: impl Fn(usize) -> Option<R>) -> Option<R> {
        if p.hint != NO_HINT {
            if let Some(r) = read(p.hint as usize) {
                return Some(r);
            }
        }
        read(self.locate(p, &|i| read(i).is_some())?)
    }

    /// The first slot of the probe's buckets whose tag matches and that
    /// `found` accepts: the way of lookups without a hint, or whose hint
    /// was not the entry (it lives in its second bucket, or shares a tag).
    /// Tag by tag, with a branch each rather than a mask: the branches
    /// predict "no match", so the CPU runs ahead, past this lookup into the
    /// next, and the next one's misses overlap this one's. (Computing a
    /// mask first made the slot's address wait for the tags: a whole
    /// memory round trip more per hit, measured.)
    #[inline(never)]
    fn locate(&self, p: &Probe, found: &dyn Fn(usize) -> bool) -> Option<usize> {
        p.at.buckets.into_iter().find_map(|b| {
            let tags = &self.tags[b].0;
            (0..BUCKET).find(|&k| tags[k].load(Relaxed) == p.at.tag && found(b * BUCKET + k)).map(|k| b * BUCKET + k)
        })
    }

    /// Both buckets' free slots, as bit masks.
    #[inline]
    fn free(&self, at: &Place) -> [u32; 2] {
        at.buckets.map(|b| self.tags[b].free())
    }

    /// Which of a key's buckets a new entry tries first: its first bucket
    /// while that has room to spare, else the emptier one.
    fn order(free: &[u32; 2]) -> [usize; 2] {
        let free = free.map(u32::count_ones);
        if free[0] < SPARE && free[1] > free[0] {
            [1, 0]
        } else {
            [0, 1]
        }
    }

    /// The slot a key not in the table would take, unless another creator
    /// takes it first.
    fn first_choice(at: &Place, free: &[u32; 2]) -> Option<usize> {
        let k = Self::order(free)[0];
        (free[k] != 0).then(|| at.buckets[k] * BUCKET + free[k].trailing_zeros() as usize)
    }

    /// Counts a packet of `bytes` on the entry at `slot`, with the TCP
    /// flags it carried (0 for other protocols), at `now`.
    ///
    /// The counts are a load and a store, not a locked add: an entry is
    /// one direction of a flow, whose packets arrive on one receive queue
    /// (RSS), which one worker owns, so each entry has one writer. Two
    /// locked adds were 18 % of a flow hit's samples (`perf record -e
    /// cpu-clock vrpktgen pipeline --case encap_mplsoudp_ecmp
    /// --flow-policy`): each is a full fence that waits for the vector's
    /// stores. Open vSwitch's userspace datapath counts its flows the
    /// same way (`non_atomic_ullong_add`). Should a direction's packets
    /// move between queues (RSS reprogrammed), two workers' adds could
    /// meet and one be lost: a count, never the entry's state. All of it
    /// is on the slot's first line, which the lookup read.
    #[inline]
    pub fn touch(&self, slot: u32, bytes: u32, tcp_flags: u8, now: u64) {
        if let Some(s) = self.slots.get(slot as usize) {
            Self::count(s, bytes, tcp_flags, now);
        }
    }

    /// `touch`, if entry `slot` is unchanged since a reader found its
    /// sequence count `seq` there (`sequence_of`): the flow cache's check
    /// that what it copied of the entry still holds (the entry was not
    /// removed, nor given to another flow, nor decided or pinned again).
    /// False, counting nothing, if it changed.
    #[inline(always)]
    pub fn touch_unchanged(&self, slot: u32, seq: u32, bytes: u32, tcp_flags: u8, now: u64) -> bool {
        let Some(s) = self.slots.get(slot as usize) else { return false };
        if s.seq.load(Acquire) != seq {
            return false;
        }
        Self::count(s, bytes, tcp_flags, now);
        true
    }

    /// True if entry `slot` is unchanged since a reader found its sequence
    /// count `seq` there: `touch_unchanged`'s test, counting nothing. The
    /// flow cache asks it of a full set's entries, to give a new flow the
    /// place of one whose flow is gone.
    pub fn unchanged(&self, slot: u32, seq: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|s| s.seq.load(Acquire) == seq)
    }

    /// `touch_unchanged` for a flow the caller knows by its key's words
    /// (`FlowKey::words`) too: the entry must hold them, read stable. The
    /// flow cache's IPv6 entries keep a fold of the addresses, not the
    /// addresses: a hit is sure of its flow only here.
    #[inline(always)]
    pub fn touch_unchanged_holding(
        &self,
        slot: u32,
        seq: u32,
        words: &[u64; 6],
        bytes: u32,
        tcp_flags: u8,
        now: u64,
    ) -> bool {
        let Some(s) = self.slots.get(slot as usize) else { return false };
        if s.seq.load(Acquire) != seq || !s.holds(words) {
            return false;
        }
        fence(Acquire);
        if s.seq.load(Relaxed) != seq {
            return false;
        }
        Self::count(s, bytes, tcp_flags, now);
        true
    }

    /// Starts fetching both lines of entry `slot`: `prefetch_slot`'s, and
    /// the rest of an IPv6 key (`touch_unchanged_holding` reads it).
    #[inline(always)]
    pub fn prefetch_whole_slot(&self, slot: u32) {
        crate::memory::prefetch_item(&self.slots, slot as usize, std::mem::offset_of!(Slot, seq));
        crate::memory::prefetch_item(&self.slots, slot as usize, std::mem::offset_of!(Slot, key_rest));
    }

    /// The sequence count of the entry a `forward_only` hit (`hit`, found by
    /// `p` under `policy`) came from, if the entry still is what the hit
    /// read: for the flow cache, which keeps it to tell later whether the
    /// entry changed (`touch_unchanged`). Read again, with the seqlock's
    /// two loads: `forward_only` does not keep the count, and making it do
    /// so cost every hit the field.
    pub fn sequence_of(&self, p: &Probe, hit: &Forwarding, policy: PolicyGenerations) -> Option<u32> {
        self.sequence_where(p, hit, |s| decided_now(s.action.load(Relaxed), FLAG_PLAIN, Some(policy)))
    }

    /// `sequence_of` for a `forward_translated` hit (`hit`, with `tr`),
    /// judged as that judges it.
    pub fn sequence_of_translated(
        &self,
        p: &Probe,
        hit: &Forwarding,
        tr: &Translation,
        policy: PolicyGenerations,
        judging: impl Fn(u32) -> Option<PolicyGenerations>,
    ) -> Option<u32> {
        self.sequence_where(p, hit, |s| {
            let which = s.nat_which.load(Relaxed);
            let route_vrf = (which >> ROUTE_VRF_SHIFT).checked_sub(1);
            let nat = decode_nat(s.nat_addrs.load(Relaxed), s.nat_ports.load(Relaxed), which);
            route_vrf == tr.route_vrf
                && nat == tr.nat
                && translated_current(s.action.load(Relaxed), route_vrf, policy, &judging)
        })
    }

    /// The sequence count of `hit`'s entry if, read stable, it holds `p`'s
    /// key, the hit's pinned member and hash, and passes `still`.
    fn sequence_where(&self, p: &Probe, hit: &Forwarding, still: impl FnOnce(&Slot) -> bool) -> Option<u32> {
        let s = self.slots.get(hit.slot as usize)?;
        let v1 = s.seq.load(Acquire);
        if v1 & (LIVE | WRITING) != LIVE {
            return None;
        }
        let same = s.holds(&p.words)
            && decode_ecmp(s.ecmp.load(Relaxed)) == hit.ecmp
            && s.hash.load(Relaxed) == hit.hash
            && still(s);
        fence(Acquire);
        (same && s.seq.load(Relaxed) == v1).then_some(v1)
    }

    /// Starts fetching the first line of entry `slot`, where a hit's count
    /// and its sequence count are: the flow cache's second step.
    #[inline(always)]
    pub fn prefetch_slot(&self, slot: u32) {
        crate::memory::prefetch_item(&self.slots, slot as usize, std::mem::offset_of!(Slot, seq));
    }

    #[inline(always)]
    fn count(s: &Slot, bytes: u32, tcp_flags: u8, now: u64) {
        let packets = s.packets.load(Relaxed).wrapping_add(1);
        s.packets.store(packets, Relaxed);
        if packets == 0 {
            s.packets_high.fetch_add(1, Relaxed);
        }
        s.bytes.store(s.bytes.load(Relaxed).wrapping_add(u64::from(bytes)), Relaxed);
        s.last_seen.store(now as u32, Relaxed);
        // Tested first: most packets carry no flags (UDP's, ICMP's).
        if tcp_flags != 0 {
            let f = pack_tcp(u32::from(tcp_flags));
            if f != 0 && s.action.load(Relaxed) & f != f {
                s.action.fetch_or(f, Relaxed);
            }
        }
    }

    /// Remembers `route` in the entry a `forward_only` hit answered with,
    /// for the entry's next packets. Lock-free: if the entry changed since
    /// (another worker remembered first, or the slot holds another entry
    /// now), nothing is written.
    #[inline]
    pub fn remember_route(&self, hit: &Forwarding, route: Route) {
        self.remember_route_at(hit.slot, hit.route, route);
    }

    /// `remember_route` for the entry in `slot` that remembered `memo`
    /// when it was hit: for a caller that keeps a hit's fields apart.
    #[inline]
    pub fn remember_route_at(&self, slot: u32, memo: RouteMemo, route: Route) {
        let (Some(s), Some(new)) = (self.slots.get(slot as usize), memo.with(route)) else { return };
        if new != memo {
            let _ = s.route.compare_exchange(memo.0, new.0, Relaxed, Relaxed);
        }
    }

    /// Takes a free slot for a key with buckets `at` (whose free slots are
    /// `free`), in the bucket `order` says first. Slot `taken` (the pair's
    /// other half, not yet tagged) is skipped.
    fn claim(&self, at: &Place, free: &[u32; 2], taken: Option<usize>) -> Option<usize> {
        Self::order(free).into_iter().find_map(|k| {
            let mut m = free[k];
            while m != 0 {
                let i = at.buckets[k] * BUCKET + m.trailing_zeros() as usize;
                m &= m - 1;
                if Some(i) == taken {
                    continue;
                }
                // Another creator may have claimed it since the tags were read.
                let s = &self.slots[i];
                let v = s.seq.load(Relaxed);
                if v & (LIVE | WRITING) == 0 && s.seq.compare_exchange(v, v | WRITING, Acquire, Relaxed).is_ok() {
                    return Some(i);
                }
            }
            None
        })
    }

    fn set_tag(&self, i: usize, tag: u32) {
        self.tags[i / BUCKET].0[i % BUCKET].store(tag, Release);
    }

    fn tag(&self, i: usize) -> u32 {
        self.tags[i / BUCKET].0[i % BUCKET].load(Relaxed)
    }

    fn write(&self, i: usize, d: &DirSpec, reverse: usize, forward: bool, stamp: Stamp) {
        let Stamp { vif, now, generation, cross } = stamp;
        let s = &self.slots[i];
        for (k, w) in s.key.iter().chain(&s.key_rest).zip(d.key.words()) {
            k.store(w, Relaxed);
        }
        let dir = if forward { FLAG_FORWARD_DIR } else { 0 };
        let plain = if d.nat.is_none() && d.route_vrf.is_none() { FLAG_PLAIN } else { 0 };
        let one_way = if d.one_way { FLAG_ONE_WAY } else { 0 };
        let cross = if cross { FLAG_CROSS } else { 0 };
        let unrouted = if d.unrouted { FLAG_UNROUTED } else { 0 };
        s.action.store(encode_action(d.action, dir | plain | one_way | cross | unrouted, generation), Relaxed);
        s.ecmp.store(encode_ecmp(d.ecmp), Relaxed);
        let (a, p, w) = encode_nat(&d.nat);
        // The route VRF rides in the word of NAT flags, above them (+1, so 0 is none).
        let route = d.route_vrf.map_or(0, |v| (v & MAX_VRFS as u32) + 1) << ROUTE_VRF_SHIFT;
        s.nat_addrs.store(a, Relaxed);
        s.nat_ports.store(p, Relaxed);
        s.nat_which.store(w | route, Relaxed);
        s.hash.store(d.hash, Relaxed);
        let memo = RouteMemo(s.route.load(Relaxed)).next_incarnation();
        s.route.store(d.route.and_then(|r| memo.with(r)).unwrap_or(memo).0, Relaxed);
        s.reverse.store(reverse as u32, Relaxed);
        s.origin.store(pack_origin(vif, now), Relaxed);
        s.packets.store(0, Relaxed);
        s.packets_high.store(0, Relaxed);
        s.bytes.store(0, Relaxed);
        s.last_seen.store(now as u32, Relaxed);
    }

    fn publish(&self, i: usize) {
        let s = &self.slots[i];
        let v = s.seq.load(Relaxed);
        s.seq.store(((v & !(STEP - 1)) + STEP) | LIVE, Release);
    }

    fn release(&self, i: usize) {
        let s = &self.slots[i];
        let v = s.seq.load(Relaxed);
        s.seq.store((v & !(STEP - 1)) + STEP, Release);
    }

    fn count_up(&self, vif: u32, vrf: u32) -> Result<(), CreateError> {
        let bump = |c: &AtomicU32, max: u32| {
            c.fetch_add(1, Relaxed) < max || {
                c.fetch_sub(1, Relaxed);
                false
            }
        };
        if !bump(&self.pairs, self.cfg.capacity as u32) {
            return Err(CreateError::TableFull);
        }
        if let Some(c) = self.per_vif.get(vif as usize) {
            if !bump(c, self.cfg.per_vif) {
                self.pairs.fetch_sub(1, Relaxed);
                return Err(CreateError::VifLimit);
            }
        }
        if let Some(c) = self.per_vrf.get(vrf as usize) {
            if !bump(c, self.cfg.per_vrf) {
                self.pairs.fetch_sub(1, Relaxed);
                if let Some(c) = self.per_vif.get(vif as usize) {
                    c.fetch_sub(1, Relaxed);
                }
                return Err(CreateError::VrfLimit);
            }
        }
        Ok(())
    }

    fn count_down(&self, vif: u32, vrf: u32) {
        self.pairs.fetch_sub(1, Relaxed);
        if let Some(c) = self.per_vif.get(vif as usize) {
            c.fetch_sub(1, Relaxed);
        }
        if let Some(c) = self.per_vrf.get(vrf as usize) {
            c.fetch_sub(1, Relaxed);
        }
    }

    /// Creates a pair: `fwd` for the packet at hand, `rev` for its answers.
    /// `vif` is the vif the packet came in on (its limit applies) and
    /// `generation` the policy generation the actions were decided under.
    /// Returns the forward entry. If another worker created the same flow
    /// first, that one is returned as `Exists`.
    pub fn create(
        &self,
        fwd: &DirSpec,
        rev: &DirSpec,
        vif: u32,
        generation: u32,
        now: u64,
    ) -> Result<Hit, CreateError> {
        let (fwd_probe, rev_probe) = (self.probe(&fwd.key), self.probe(&rev.key));
        let (fp, rp) = (fwd_probe.at, rev_probe.at);
        // The table is far larger than the caches: what a creation reads
        // is fetched in two rounds of misses that overlap within each
        // round, rather than one miss after another. First the four tag
        // lines, all at once (the lock below waits for them).
        self.fetch(&fp);
        self.fetch(&rp);
        let _locked = self.lock_stripes(fp.stripe, rp.stripe);
        let (ff, rf) = (self.free(&fp), self.free(&rp));
        // Then both slots the pair will likely take, both their lines.
        for i in [Self::first_choice(&fp, &ff), Self::first_choice(&rp, &rf)].into_iter().flatten() {
            crate::memory::prefetch(&self.slots[i].seq);
            crate::memory::prefetch(&self.slots[i].ecmp);
        }
        if let Some(h) = self.find(&fwd_probe) {
            return Err(CreateError::Exists(h));
        }
        // The reverse key taken already (by a flow seen the other way
        // first) is treated as a full table: counted, never overwritten.
        if self.find(&rev_probe).is_some() {
            return Err(CreateError::TableFull);
        }
        self.count_up(vif, fwd.key.vrf)?;
        let Some(fi) = self.claim(&fp, &ff, None) else {
            self.count_down(vif, fwd.key.vrf);
            return Err(CreateError::TableFull);
        };
        let Some(ri) = self.claim(&rp, &rf, Some(fi)) else {
            self.release(fi);
            self.count_down(vif, fwd.key.vrf);
            return Err(CreateError::TableFull);
        };
        let stamp = Stamp { vif, now, generation, cross: fwd.key.vrf != rev.key.vrf };
        self.write(fi, fwd, ri, true, stamp);
        self.write(ri, rev, fi, false, stamp);
        self.publish(ri);
        self.publish(fi);
        self.set_tag(ri, rp.tag);
        self.set_tag(fi, fp.tag);
        self.created.fetch_add(1, Relaxed);
        Ok(Hit {
            slot: fi as u32,
            reverse: ri as u32,
            action: fwd.action,
            policy_generation: generation,
            ecmp: fwd.ecmp,
            nat: fwd.nat,
            forward: true,
            route_vrf: fwd.route_vrf,
            unrouted: fwd.unrouted,
        })
    }

    /// Rewrites part of entry `slot` under its stripe lock and its seqlock,
    /// if it holds `key`: under that lock no one removes it, nor gives its
    /// slot to another key (a pair that went since the caller read it, and
    /// its slot taken by another, once had that one rewritten).
    fn rewrite(&self, key: &FlowKey, slot: u32, change: impl FnOnce(&Slot)) {
        let _g = self.lock(self.place(key).stripe);
        let Some(s) = self.slots.get(slot as usize) else { return };
        let v = s.seq.load(Relaxed);
        if v & (LIVE | WRITING) != LIVE || FlowKey::from_words(&s.key_words()) != *key {
            return;
        }
        Self::write_live(s, change);
    }

    /// Changes live slot `s`, whose key's stripe lock the caller holds,
    /// under its seqlock: readers retry rather than see it half-written.
    fn write_live(s: &Slot, change: impl FnOnce(&Slot)) {
        let v = s.seq.load(Relaxed);
        s.seq.store(v | WRITING, Relaxed);
        fence(Release);
        change(s);
        s.seq.store(((v & !(STEP - 1)) + STEP) | LIVE, Release);
    }

    /// Stamps both entries of the pair that `hit`, found by `key`, belongs
    /// to with `generation`, their action kept: a policy change moved their
    /// VRF's generation, but cannot change what decided them
    /// (`pipeline::flow::stale`). Nothing, if that pair has gone since.
    pub fn keep_decision(&self, key: &FlowKey, hit: &Hit, generation: u32) {
        self.rewrite_actions(key, hit, |w| (w & 0xffff_ffff) | (u64::from(generation) << 32));
    }

    /// Gives both entries of the pair that `hit`, found by `key`, belongs
    /// to the action a policy decided again, under `generation`, and
    /// whether it was decided without a route for an address it judges by
    /// network (`unrouted`), and counts the pair. Nothing, if that pair has
    /// gone since.
    pub fn decide_again(&self, key: &FlowKey, hit: &Hit, action: FlowAction, generation: u32, unrouted: bool) {
        let unrouted = if unrouted { FLAG_UNROUTED } else { 0 };
        let done = self.rewrite_actions(key, hit, |w| {
            encode_action(action, (w & !FLAG_UNROUTED) | unrouted, generation) | (w & TCP_BITS)
        });
        if done {
            self.redecided.fetch_add(1, Relaxed);
        }
    }

    /// Both stripe locks of the pair whose entry `slot` held `key` and named
    /// `reverse` when the caller read it, in stripe order, and the reverse
    /// entry's key: if, once they are held, the pair is still whole (`slot`
    /// holds `key`, and the two entries name each other). Then no one can
    /// remove the pair, nor give its slots to another, until they drop.
    /// `None` if the pair went meanwhile.
    fn lock_whole_pair(&self, key: &FlowKey, slot: u32, reverse: u32) -> Option<(FlowKey, PairLocks<'_>)> {
        let (rkey, _) = self.read(reverse as usize)?;
        let locks = self.lock_stripes(self.place(key).stripe, self.place(&rkey).stripe);
        match (self.read(slot as usize), self.read(reverse as usize)) {
            (Some((k1, h1)), Some((k2, h2)))
                if k1 == *key && k2 == rkey && h1.reverse == reverse && h2.reverse == slot =>
            {
                Some((rkey, locks))
            }
            _ => None,
        }
    }

    /// Rewrites the action words of both entries of the pair that `hit`,
    /// found by `key`, belongs to, under both keys' stripe locks, as
    /// `remove` takes them (`lock_whole_pair`). Until this, each entry
    /// was rewritten under its own lock after a check of its own key alone:
    /// a pair removed after the caller read it (aged out, flushed) and its
    /// slots taken by another pair had that pair's actions rewritten with
    /// this one's decision, a denied flow let through, or its stamp made
    /// current so that no policy judged it again
    /// (`a_decision_made_for_a_pair_that_went_leaves_the_next_one_alone`).
    /// An update, not a store: the data path adds TCP flags to the word
    /// without the lock (`touch`), and `new` keeps them. False if the pair
    /// has gone.
    fn rewrite_actions(&self, key: &FlowKey, hit: &Hit, new: impl Fn(u64) -> u64) -> bool {
        let Some((_, _locked)) = self.lock_whole_pair(key, hit.slot, hit.reverse) else { return false };
        for entry in [hit.slot, hit.reverse] {
            Self::write_live(&self.slots[entry as usize], |s| {
                let _ = s.action.fetch_update(Relaxed, Relaxed, |w| Some(new(w)));
            });
        }
        true
    }

    /// Pins entry `slot`, if it still holds `key`, to another ECMP member
    /// (its own went away).
    pub fn set_ecmp(&self, key: &FlowKey, slot: u32, member: Option<RouteTarget>) {
        self.rewrite(key, slot, |s| s.ecmp.store(encode_ecmp(member), Relaxed));
    }

    /// Removes the pair that entry `slot` belongs to. False if it was gone.
    pub fn remove(&self, slot: u32) -> bool {
        let Some((key, hit)) = self.read(slot as usize) else { return false };
        // Another remover may have been first.
        let Some((rkey, _locked)) = self.lock_whole_pair(&key, slot, hit.reverse) else { return false };
        // The pair was counted against its creating vif and the forward key's VRF.
        let s = &self.slots[slot as usize];
        let vif = origin_vif(s.origin.load(Relaxed));
        let vrf = if s.action.load(Relaxed) & FLAG_FORWARD_DIR != 0 { key.vrf } else { rkey.vrf };
        for i in [slot as usize, hit.reverse as usize] {
            self.set_tag(i, 0);
            let s = &self.slots[i];
            let v = s.seq.load(Relaxed);
            s.seq.store(v | WRITING, Relaxed);
            fence(Release);
            self.release(i);
        }
        self.count_down(vif, vrf);
        self.removed.fetch_add(1, Relaxed);
        true
    }

    /// Whether entry `slot` (whose other entry is `reverse`) is its pair's
    /// forward direction, and whether the pair tracks that direction alone.
    fn directions(&self, slot: usize, reverse: usize) -> Directions {
        let action = self.slots[slot].action.load(Relaxed);
        let forward = action & FLAG_FORWARD_DIR != 0;
        let forward_action =
            if forward { action } else { self.slots.get(reverse).map_or(0, |s| s.action.load(Relaxed)) };
        Directions { forward, one_way: forward_action & FLAG_ONE_WAY != 0 }
    }

    /// The TCP state of the pair entry `slot` belongs to, whose
    /// directions are `dirs` (`directions`).
    fn tcp_state(&self, slot: usize, reverse: usize, proto: u8, dirs: Directions) -> TcpState {
        if proto != crate::wire::ip_proto::TCP {
            return TcpState::None;
        }
        let a = unpack_tcp(self.slots[slot].action.load(Relaxed));
        let b = self.slots.get(reverse).map_or(0, |s| unpack_tcp(s.action.load(Relaxed)));
        let (fwd, rev) = if dirs.forward { (a, b) } else { (b, a) };
        // With only the client's side to go by, its ACK after its SYN says
        // the server's SYN-ACK came; a FIN says the pair is closing.
        if dirs.one_way {
            return if fwd & TCP_RST != 0 {
                TcpState::Closed
            } else if fwd & TCP_FIN != 0 {
                TcpState::Closing
            } else if fwd & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                TcpState::Established
            } else {
                TcpState::HalfOpen
            };
        }
        if (a | b) & TCP_RST != 0 || (fwd & TCP_FIN != 0 && rev & TCP_FIN != 0) {
            TcpState::Closed
        } else if (fwd | rev) & TCP_FIN != 0 {
            TcpState::Closing
        } else if fwd & TCP_SYN != 0 && rev & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK && fwd & TCP_ACK != 0 {
            TcpState::Established
        } else {
            TcpState::HalfOpen
        }
    }

    /// How long the pair of entry `slot` may stay idle.
    fn timeout(&self, key: &FlowKey, hit: &Hit) -> u64 {
        if let FlowAction::Drop(_) = hit.action {
            return self.cfg.drop_ms;
        }
        let (slot, reverse) = (hit.slot as usize, hit.reverse as usize);
        match self.tcp_state(slot, reverse, key.proto, self.directions(slot, reverse)) {
            TcpState::Closed => self.cfg.closed_ms,
            TcpState::HalfOpen => self.cfg.half_open_ms,
            _ => self.cfg.idle_ms,
        }
    }

    /// Looks at up to `budget` slots from where the last sweep stopped and
    /// removes the pairs that have been idle past their timeout. Workers
    /// call it once per batch with a small budget, so ageing costs a
    /// bounded amount of work and no thread of its own. Returns how many
    /// pairs it removed.
    pub fn sweep(&self, now: u64, budget: usize) -> usize {
        let n = self.slots.len();
        let budget = budget.min(n);
        let start = self.cursor.fetch_add(budget, Relaxed) % n;
        let mut removed = 0;
        let shortest = self.cfg.idle_ms.min(self.cfg.drop_ms).min(self.cfg.closed_ms).min(self.cfg.half_open_ms);
        for k in 0..budget {
            let i = if start + k >= n { start + k - n } else { start + k };
            // Most slots are free, or were seen too recently to expire
            // under any timeout: ruled out from two words, without the
            // full read.
            if self.tag(i) == 0 || self.slots[i].idle(now) < shortest {
                continue;
            }
            let Some((key, hit)) = self.read(i) else { continue };
            // Each pair is judged from its forward entry.
            if self.slots[i].action.load(Relaxed) & FLAG_FORWARD_DIR == 0 {
                continue;
            }
            let idle = self.slots[i].idle(now).min(self.slots[hit.reverse as usize].idle(now));
            if idle >= self.timeout(&key, &hit) && self.remove(i as u32) {
                removed += 1;
            }
        }
        removed
    }

    /// Slots the sweeps have looked at, every worker's together, since the
    /// table was made (wrapping): the pace of ageing.
    pub fn swept_slots(&self) -> usize {
        self.cursor.load(Relaxed)
    }

    /// The key of the entry in `slot`, if it holds one.
    pub fn key(&self, slot: u32) -> Option<FlowKey> {
        self.read(slot as usize).map(|(key, _)| key)
    }

    /// The vif whose packet created the entry in `slot` (both of a pair's
    /// entries name it); a vif index past any table's for a free slot.
    pub fn creator(&self, slot: u32) -> u32 {
        self.slots.get(slot as usize).map_or(u32::MAX, |s| origin_vif(s.origin.load(Relaxed)))
    }

    /// Entry `slot`, whole, as seen at `now`.
    pub fn get(&self, slot: u32, now: u64) -> Option<FlowInfo> {
        let (key, hit) = self.read(slot as usize)?;
        let s = &self.slots[slot as usize];
        let r = self.slots.get(hit.reverse as usize)?;
        let idle_ms = s.idle(now).min(r.idle(now));
        // The action words read once, for both what they say.
        let dirs = self.directions(slot as usize, hit.reverse as usize);
        Some(FlowInfo {
            slot,
            key,
            reverse: hit.reverse,
            forward: dirs.forward,
            action: hit.action,
            ecmp: hit.ecmp,
            nat: hit.nat,
            route_vrf: hit.route_vrf,
            vif: origin_vif(s.origin.load(Relaxed)),
            packets: s.packets(),
            bytes: s.bytes.load(Relaxed),
            tcp: self.tcp_state(slot as usize, hit.reverse as usize, key.proto, dirs),
            one_way: dirs.one_way,
            policy_generation: hit.policy_generation,
            unrouted: hit.unrouted,
            age_ms: now.saturating_sub(origin_time(s.origin.load(Relaxed))),
            idle_ms,
        })
    }

    /// Up to `limit` live entries after slot `after`, in slot order.
    pub fn dump(&self, after: Option<u32>, limit: usize, now: u64) -> Vec<FlowInfo> {
        let from = after.map_or(0, |a| a as usize + 1);
        (from..self.slots.len()).filter_map(|i| self.get(i as u32, now)).take(limit).collect()
    }

    /// Removes every pair. Returns how many.
    pub fn flush(&self) -> usize {
        self.remove_where(|i| self.slots[i].action.load(Relaxed) & FLAG_FORWARD_DIR != 0)
    }

    /// Removes the pair of every slot `doomed` says, in one scan of the
    /// table; counts the pairs removed (a pair's other entry, read after,
    /// is gone by then). For the control plane, not the data path.
    fn remove_where(&self, doomed: impl Fn(usize) -> bool) -> usize {
        (0..self.slots.len()).filter(|&i| doomed(i) && self.remove(i as u32)).count()
    }

    /// Removes the pairs that vif changes leave behind: those a deleted or
    /// moved vif created (so that its per-vif count does not pass to the
    /// next vif with its index), and those with an entry to or from an
    /// address that left its VRF (flows other vifs opened to it, a floating
    /// IP's pairs). Returns how many. One scan of the whole table, however
    /// many ends: for the control plane when vifs change, not for the data
    /// path.
    pub fn remove_stale(&self, ends: &[StaleEnd]) -> usize {
        if ends.is_empty() {
            return 0;
        }
        self.remove_where(|i| {
            let Some((key, hit)) = self.read(i) else { return false };
            let creator = origin_vif(self.slots[i].origin.load(Relaxed));
            let stale = |e: &StaleEnd| {
                (hit.forward && e.creator == Some(creator))
                    || (key.vrf == e.vrf
                        && (e.addrs.contains(&key.src_ip()) || e.addrs.contains(&key.dst_ip()))
                        && e.nat_to.is_none_or(|to| hit.nat.dst == Some(to)))
            };
            ends.iter().any(stale)
        })
    }

    /// Pairs created by vif `vif`, and held by VRF `vrf`.
    pub fn counts(&self, vif: u32, vrf: u32) -> (u32, u32) {
        (
            self.per_vif.get(vif as usize).map_or(0, |c| c.load(Relaxed)),
            self.per_vrf.get(vrf as usize).map_or(0, |c| c.load(Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(at: &[(usize, u32)]) -> Tags {
        let t = Tags::default();
        for &(k, tag) in at {
            t.0[k].store(tag, Relaxed);
        }
        t
    }

    /// The packet count's low word wraps into the high one, which a hit
    /// never reads.
    #[test]
    fn packets_count_past_32_bits() {
        let t = FlowTable::new(FlowConfig { capacity: 16, ..FlowConfig::default() }, 1, 1);
        let s = &t.slots[3];
        s.packets.store(u32::MAX - 1, Relaxed);
        t.touch(3, 100, 0, 7);
        assert_eq!(s.packets(), u64::from(u32::MAX));
        t.touch(3, 100, 0, 8);
        assert_eq!((s.packets(), s.bytes.load(Relaxed), s.idle(10)), (1 << 32, 200, 2));
        t.touch(3, 100, 0, 9);
        assert_eq!(s.packets(), (1 << 32) + 1);
    }

    /// The scan in groups finds the first matching slot wherever it is:
    /// in the first group, a later one, the last slot, or none.
    #[test]
    fn a_bucket_scan_finds_the_first_slot_with_the_tag() {
        assert_eq!(tags(&[]).position(7), None);
        assert_eq!(tags(&[(0, 7)]).position(7), Some(0));
        assert_eq!(tags(&[(0, 5), (3, 7)]).position(7), Some(3));
        assert_eq!(tags(&[(0, 5), (1, 6), (2, 8), (3, 9), (4, 7)]).position(7), Some(4));
        assert_eq!(tags(&[(6, 7), (13, 7)]).position(7), Some(6), "the first of two");
        assert_eq!(tags(&[(15, 7)]).position(7), Some(15));
        assert_eq!(tags(&[(15, 7)]).position(8), None);
        for k in 0..BUCKET {
            assert_eq!(tags(&[(k, 9), ((k + 1) % BUCKET, 9)]).position(9), Some(k.min((k + 1) % BUCKET)));
        }
    }
}
