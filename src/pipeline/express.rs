//! The flow cache: each worker's own copy of what a flow's hit
//! needs, kept so that the flow's next packets skip the shared flow table's
//! lookup, the route's recall and the next hop's resolution. Open vSwitch's
//! exact-match cache and VPP's rewrite strings are the models.
//!
//! An entry is filled when the lane has forwarded a hit the full way
//! (`lane::from_pod`): the flow's key, its slot in the flow table and that
//! slot's sequence count, the vif it leaves by, and the headers the full
//! way wrote in front of the packet, copied from the frame (a tunnel's
//! outer headers with the flow's label and UDP source port; a pod's
//! Ethernet header). A pod's answers to a client of another network on
//! this node, routed back unrewritten in the client's VRF, are kept the
//! same way, counted in that VRF. So are a tunnel's packets to a pod on
//! this node (`lane::from_fabric`), keyed by their label and inner packet:
//! a hit strips the tunnel and writes the pod's Ethernet header; a
//! floating IP's clients' packets are kept with their rewrite to the pod
//! (`Rewrite`), which the hit makes as the full way does. A pod's IPv6
//! flows are kept too (`lane::from_pod6`), keyed by a fold of their
//! addresses: a hit checks its flow's entry holds the packet's whole key
//! as it counts the packet. A later packet of the flow gets those headers,
//! with only what differs per packet written anew (lengths,
//! identification, checksums, TTLs), exactly as the full way writes them;
//! the differential tests hold the two together.
//!
//! Nothing is copied that could go stale unseen. A new tables snapshot
//! (`Tables::stamp`: a route, a next hop, a vif, a policy changed) makes
//! every entry stale at once; a change to the flow's entry (removed, given
//! to another flow, decided again, pinned to another member) changes its
//! sequence count, which every hit checks as it counts the packet
//! (`FlowTable::touch_unchanged`). Either way the packet takes the full
//! way, which fills the entry again.

use super::fast::HEAD;
use super::fast6;
use super::forward::ETH;
use super::{Frame, Verdict};
use crate::flow::{FlowTable, Forwarding, Nat};
use crate::memory::Buffer;
use crate::stats::{FlowCacheCounts, Stats, VrfCounters};
use crate::tables::{NextHop, RouteTarget, Tables, TunnelEncap, VifIndex};
use crate::wire::{checksum, ip_proto, ipv4, mpls};

const UDP_HEADERS: usize = ETH + TunnelEncap::MplsOverUdp.ip_overhead();
const GRE_HEADERS: usize = ETH + TunnelEncap::MplsOverGre.ip_overhead();
/// The longest headers an entry keeps: a tunnel's outer headers.
const HEADERS: usize = UDP_HEADERS;
const _: () = assert!(GRE_HEADERS <= HEADERS);

/// Entries of a set: as many as a set's line holds the keys and flow slots
/// of (`Set`). With two (and twice the sets), flows that are all busy (the
/// pipeline's benchmark: 10,000 flows over 32K sets) had 3.7 % of them in
/// sets of three or more, which miss every time in turn (callgrind: a fill
/// for one packet in 12).
const WAYS: usize = 3;
/// Sets of the cache, at most: 96K entries of 128 bytes and their sets'
/// lines, 14 MiB. As many entries as sets of four had, in more sets: with
/// 16K, flows that are all busy overflowed a set as often again.
const MOST_SETS: usize = 32 * 1024;
const LEAST_SETS: usize = 64;

/// A set full of live flows' entries lets a new flow take its oldest
/// entry's place once in this many tries (`FlowCacheCounts::crowded`),
/// and turns the others away. Flows that outnumber their set's ways, each
/// taking the place of the one before, would miss every packet in turn
/// (the pipeline's benchmark, 10,000 busy flows over 32K sets: one packet
/// in 160 a miss, each a full way and a fill, about 900 instructions); turned
/// away, the ones in place hit, and only the extra ones miss. Taken in
/// now and then, a new flow is not kept out for long by flows gone idle.
/// Open vSwitch's exact-match cache takes in one flow in 100 for the
/// same reason (`emc-insert-inv-prob`).
const CROWDED_TURN: u64 = 8;

/// How an entry's packets leave, which decides what a hit writes and which
/// of the VRF's counters it adds to (`Tally`), as `fast::count_way_out` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Way {
    /// To a pod on this node: a new Ethernet header.
    Pod,
    /// Into an MPLS-over-UDP tunnel.
    Udp,
    /// Into an MPLS-over-GRE tunnel.
    Gre,
}

impl Way {
    /// The VRF's counter of packets sent this way (`c`'s).
    #[inline(always)]
    pub(super) fn counter(self, c: &mut VrfCounters) -> &mut u64 {
        match self {
            Way::Pod => &mut c.encaps,
            Way::Udp => &mut c.udp_mpls_tunnels,
            Way::Gre => &mut c.gre_mpls_tunnels,
        }
    }

    /// The way of next hop `nh`, if the cache can take it.
    pub(super) fn of(nh: &NextHop) -> Option<Way> {
        match nh {
            NextHop::Encap { .. } => Some(Way::Pod),
            NextHop::Tunnel(t) if t.encap == TunnelEncap::MplsOverUdp => Some(Way::Udp),
            NextHop::Tunnel(_) => Some(Way::Gre),
            _ => None,
        }
    }
}

/// A packet's flow as the cache knows it: its addresses (an IPv6 packet's
/// folded) and ports as they lie in the header (compared, never read as
/// numbers), its VRF and its protocol. TCP's and UDP's flows alone are
/// filled: ICMP's identifier lies elsewhere, and its flows are few.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key {
    addrs: u64,
    /// The ports, in the high half, over the key's id (`Key::new`): two
    /// words a key, so that a lookup compares two pairs of words where it
    /// compared three, whose registers cost the hit 2-3 reloads.
    tail: u64,
}

impl Key {
    /// True if `self` is `other` and `stale` is 0: one test of the words
    /// or'ed together, not a branch a field (`==` compiled to three).
    #[inline(always)]
    fn same(&self, other: &Key, stale: u32) -> bool {
        (self.addrs ^ other.addrs) | (self.tail ^ other.tail) | u64::from(stale) == 0
    }

    /// A placeholder for arrays of keys.
    pub(super) const NONE: Key = Key { addrs: 0, tail: 0 };

    /// The key of `addrs`, the ports as they lie in the header (`ports`)
    /// and `id`: the VRF (21 bits) over the protocol, under
    /// `FROM_FLOATING` for a floating IP's pod's packet or `V6` for a pod's
    /// IPv6 packet; or, for a tunnelled packet, `FROM_FABRIC` and the
    /// tunnel's label over it; never 0, which marks a free entry.
    #[inline(always)]
    fn new(addrs: u64, ports: u32, id: u32) -> Key {
        Key { addrs, tail: u64::from(ports) << 32 | u64::from(id) }
    }

    /// The key's id (`new`).
    fn id(&self) -> u32 {
        self.tail as u32
    }

    /// The protocol of the key's flow.
    fn proto(&self) -> u8 {
        self.id() as u8
    }

    /// What the keys of a pod's packets start from (`of`), once a vector:
    /// its VRF, marked for a pod with floating IPs (`floating`), whose hits
    /// may rewrite, so that no other pod's packet (one with the same
    /// addresses, from a pod whose source is not checked) finds its entry,
    /// whose rewrite a plain pod's hit would not make. `None`: a VRF too
    /// large for a key; the cache takes none of its flows.
    #[inline(always)]
    pub(super) fn pods(vrf: u32, floating: bool) -> Option<u32> {
        let mark = if floating { Key::FROM_FLOATING } else { 0 };
        (vrf < Key::V6 >> 8).then_some(mark | vrf << 8)
    }

    /// The key of the packet whose first `HEAD` bytes are `h` (a frame
    /// `fast::classify` took), from a pod whose keys start from `pods`
    /// (`Key::pods`), whatever its protocol (`with_id`): always `Some`, in
    /// the `Option` the lane's match takes (returned bare and wrapped
    /// there, it moved the lane's register allocation by 8 instructions a
    /// hit, callgrind).
    #[inline(always)]
    pub(super) fn of(h: &[u8; HEAD], pods: u32) -> Option<Key> {
        Some(Key::with_id(h, pods))
    }

    /// The key of the packet whose first `HEAD` bytes are `h`, inside a
    /// tunnel with label `label` (its inner packet, which `fast::inspect`
    /// took), if the cache takes its flows. The label, not the VRF it
    /// lands in: a pod's label and its VRF's lead the same flow to
    /// different ways out (the pod it names; the route), and in one
    /// tables snapshot a label always lands the same way.
    #[inline(always)]
    pub(super) fn of_tunnelled(h: &[u8; HEAD], label: u32) -> Option<Key> {
        if label >= 1 << 20 {
            return None;
        }
        Some(Key::with_id(h, Key::FROM_FABRIC | label << 8))
    }

    /// The key of a pod's IPv6 packet whose first `fast6::HEAD` bytes are
    /// `h` (a frame `fast6::classify` took), in the pod's VRF `vrf`, if the
    /// cache takes its flows. Its addresses, 32 bytes, are folded into
    /// `addrs`: two flows may share a key, so a hit checks its flow's
    /// entry holds the packet's whole key (`forward6`).
    #[inline(always)]
    pub(super) fn of6(h: &[u8; fast6::HEAD], vrf: u32) -> Option<Key> {
        if vrf >= Key::V6 >> 8 {
            return None;
        }
        Key::with_id6(h, Key::V6 | vrf << 8)
    }

    /// `of_tunnelled` for a tunnel around an IPv6 packet (its inner packet,
    /// which `fast6::inspect_packet` took), keyed as `of6` folds it.
    #[inline(always)]
    pub(super) fn of_tunnelled6(h: &[u8; fast6::HEAD], label: u32) -> Option<Key> {
        if label >= 1 << 20 {
            return None;
        }
        Key::with_id6(h, Key::FROM_FABRIC | Key::V6 | label << 8)
    }

    #[inline(always)]
    fn with_id6(h: &[u8; fast6::HEAD], id: u32) -> Option<Key> {
        use fast6::field;
        let proto = h[field::NEXT_HEADER];
        if !matches!(proto, ip_proto::TCP | ip_proto::UDP) {
            return None;
        }
        let word = |at: usize| {
            u64::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5], h[at + 6], h[at + 7]])
        };
        // Each address's halves meet rotated, so that its last bytes (the
        // top of the second word, native-endian), which vary the most,
        // reach the product's low bits as well as its high ones.
        let fold = |hi: u64, lo: u64, k: u64| (hi ^ lo.rotate_left(32)).wrapping_mul(k);
        let src = fold(word(field::SRC), word(field::SRC + 8), 0x9e37_79b9_7f4a_7c15);
        let dst = fold(word(field::DST), word(field::DST + 8), 0xc2b2_ae3d_27d4_eb4f);
        let l4 = field::L4;
        Some(Key::new(
            src ^ dst.rotate_left(29),
            u32::from_ne_bytes([h[l4], h[l4 + 1], h[l4 + 2], h[l4 + 3]]),
            id | u32::from(proto),
        ))
    }

    /// Marks a tunnelled packet's key (`of_tunnelled`), a floating IP's
    /// pod's (`of_floating`), and a pod's IPv6 packet's (`of6`): a pod's
    /// key's VRF stays below all three.
    const FROM_FABRIC: u32 = 1 << 31;
    const FROM_FLOATING: u32 = 1 << 30;
    const V6: u32 = 1 << 29;

    /// True if the key's hits may rewrite (`Rewrite`): a tunnelled
    /// packet's, or a floating IP's pod's.
    fn may_rewrite(&self) -> bool {
        self.id() & (Key::FROM_FABRIC | Key::FROM_FLOATING) != 0
    }

    /// True for a tunnelled packet's key.
    fn is_tunnelled(&self) -> bool {
        self.id() & Key::FROM_FABRIC != 0
    }

    /// Any protocol's packet has a key (the four bytes after its header
    /// taken as ports), so that pass one asks nothing more of it; a key
    /// that is not TCP's or UDP's is never filled (`FlowCache::fill`), so
    /// never found. (Refused here, they cost each TCP and UDP packet 2
    /// instructions, callgrind.)
    #[inline(always)]
    fn with_id(h: &[u8; HEAD], id: u32) -> Key {
        Key::new(
            u64::from_ne_bytes([h[26], h[27], h[28], h[29], h[30], h[31], h[32], h[33]]),
            u32::from_ne_bytes([h[34], h[35], h[36], h[37]]),
            id | u32::from(h[23]),
        )
    }
}

/// What an entry writes, on a line of its own: the headers, and the
/// flow's rewrite.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Written {
    headers: [u8; HEADERS],
    rewrite: Rewrite,
}

/// A flow's rewrite (`flow::Nat`), packed to fit beside a tunnel's headers.
#[repr(C)]
#[derive(Clone, Copy)]
struct Rewrite {
    /// The new source and destination ports, and addresses, where `which` says.
    ports: [u16; 2],
    addrs: [u32; 2],
    /// Bit 0: the source address; 1: the destination; 2 and 3: the ports.
    which: u8,
}

impl Rewrite {
    const NONE: Rewrite = Rewrite { ports: [0; 2], addrs: [0; 2], which: 0 };

    fn of(nat: &Nat) -> Rewrite {
        let bit = |b: bool, n: u8| u8::from(b) << n;
        Rewrite {
            ports: [nat.sport.unwrap_or(0), nat.dport.unwrap_or(0)],
            addrs: [nat.src.unwrap_or(0), nat.dst.unwrap_or(0)],
            which: bit(nat.src.is_some(), 0)
                | bit(nat.dst.is_some(), 1)
                | bit(nat.sport.is_some(), 2)
                | bit(nat.dport.is_some(), 3),
        }
    }

    /// The rewrite, if the flow has one.
    #[inline(always)]
    fn nat(&self) -> Option<Nat> {
        if self.which == 0 {
            return None;
        }
        let has = |n: u8| self.which & (1 << n) != 0;
        Some(Nat {
            src: has(0).then_some(self.addrs[0]),
            dst: has(1).then_some(self.addrs[1]),
            sport: has(2).then_some(self.ports[0]),
            dport: has(3).then_some(self.ports[1]),
        })
    }

    /// Rewrites the IPv4 packet behind `f`'s Ethernet header as the full
    /// way does (`fast::finish`), before its TTL and its new headers, if
    /// the flow has a rewrite.
    #[inline(always)]
    fn apply<B: Buffer>(&self, f: &mut Frame<B>) {
        if self.which != 0 {
            self.rewrite(f);
        }
    }

    /// `apply`'s rewrite, out of line: inlined, its registers cost every
    /// plain hit 14-40 instructions (callgrind).
    #[inline(never)]
    fn rewrite<B: Buffer>(&self, f: &mut Frame<B>) {
        if let (Some(nat), Some(ip)) = (self.nat(), f.data_mut().get_mut(ETH..)) {
            super::nat::apply_v4_plain(ip, &nat);
        }
    }
}

/// A set's keys, the flow slots their entries count on, and the epoch
/// they were filled in (`FlowCache::epoch`), on one line: a lookup reads
/// this line alone, and a hit its entry's two lines and its flow's slot.
/// With the keys in the entries, a lookup read a line an entry, four.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Set {
    keys: [Key; WAYS],
    slots: [u32; WAYS],
    epoch: u32,
}

const _: () = assert!(std::mem::size_of::<Set>() == 64);

impl Set {
    /// No entry, of no epoch: stale for every one.
    const FREE: Set = Set { keys: [Key::NONE; WAYS], slots: [0; WAYS], epoch: 0 };
}

/// A cached flow: 128 bytes, what a hit reads first on the first line,
/// what it writes on the second. Its key is its set's (`Set`).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Entry {
    /// The flow's slot in the flow table, and its sequence count then.
    /// (Its set keeps a copy of the slot, so that a lookup starts fetching
    /// the slot before the entry has come.)
    slot: u32,
    seq: u32,
    /// The VRF a tunnel's packets land in, which counts them decapsulated:
    /// the one they are routed in, but for a floating IP's clients' (the
    /// public network's).
    landed: u32,
    /// The outer IPv4 header's constant words, summed (`Tunnel::ip_sum`).
    ip_sum: u32,
    /// The longest packet (IPv4 total length) the way out takes whole.
    longest: u16,
    /// How its packets leave, which its run holds too (`Run`): the hit's
    /// match reads this byte, where decoding the run's bits took 3
    /// instructions more (callgrind), and the way at the run's top bits
    /// 21 more (layout).
    way: Way,
    /// A TCP flow's (its key's protocol): only its hits read the packet's
    /// flags, which a UDP hit spared cost 2 instructions (callgrind).
    tcp: bool,
    /// How its hits are counted and where they go: the vif they leave by
    /// (`Run::out`, the entry's only copy), `way`, the VRF whose counters
    /// count them (the one they are routed in: another network's, for a
    /// pod's answers to a client of it), and whether a composite chose
    /// their way (`Run`).
    run: Run,
    written: Written,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 128);

impl Entry {
    const FREE: Entry = Entry {
        slot: 0,
        seq: 0,
        landed: 0,
        ip_sum: 0,
        longest: 0,
        way: Way::Pod,
        tcp: false,
        run: Run::NONE,
        written: Written { headers: [0; HEADERS], rewrite: Rewrite::NONE },
    };

    /// The TCP flags of an IPv4 packet of the entry's flow (first `HEAD`
    /// bytes `h`, `d` whole, as `fast::tcp_flags` reads them), read only
    /// for a TCP flow's entry.
    #[inline(always)]
    fn tcp_flags(&self, h: &[u8; HEAD], d: &[u8]) -> u8 {
        if self.tcp {
            super::fast::tcp_flags(h, d)
        } else {
            0
        }
    }
}

/// Why a cached flow's packet was not forwarded from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Miss {
    /// Longer than its way out takes whole: the full way cuts it or answers
    /// it. The entry stays.
    TooLong,
    /// The flow's entry changed since the cache copied it: the cache
    /// forgets it.
    Changed,
}

/// One worker's flow cache: sets of `WAYS` entries, each a flow's hash's.
pub struct FlowCache {
    sets: Box<[Set]>,
    /// Set `s`'s entries are `WAYS * s` on, in its keys' order.
    entries: Box<[Entry]>,
    /// 64 less the bits of a set's number: the set of a hash is `hash >> shift`.
    shift: u32,
    /// The tables snapshot the entries of `epoch` were filled from.
    stamp: u64,
    epoch: u32,
    seed: u64,
    counts: FlowCacheCounts,
}

impl FlowCache {
    /// A cache sized for a flow table of `pairs` pairs (an entry for each
    /// direction, within bounds).
    pub fn new(pairs: usize, seed: u64) -> FlowCache {
        FlowCache::with_sets(2 * pairs / WAYS, seed)
    }

    /// A cache of `sets` sets, rounded up to a power of two within bounds.
    pub fn with_sets(sets: usize, seed: u64) -> FlowCache {
        let sets = sets.clamp(LEAST_SETS, MOST_SETS).next_power_of_two();
        let entries = vec![Entry::FREE; WAYS * sets].into_boxed_slice();
        let shift = 64 - sets.trailing_zeros();
        let sets = vec![Set::FREE; sets].into_boxed_slice();
        FlowCache { sets, entries, shift, stamp: 0, epoch: 1, seed, counts: FlowCacheCounts::default() }
    }

    /// Bytes the cache holds: its sets' lines and their entries.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.sets) + std::mem::size_of_val(&*self.entries)
    }

    /// What the cache did.
    pub fn counts(&self) -> FlowCacheCounts {
        self.counts
    }

    /// Counts a vector's hits (`mask`: a bit a packet, those forwarded), once a vector.
    #[inline(always)]
    pub(super) fn count_hits(&mut self, mask: u32) {
        self.counts.hits += u64::from(mask.count_ones());
    }

    /// Starts a batch on snapshot `t`: if it is not the one the entries
    /// were filled from, they are all stale from here.
    #[inline(always)]
    pub(super) fn begin(&mut self, t: &Tables) {
        if t.stamp() != self.stamp {
            self.renew(t.stamp());
        }
    }

    #[cold]
    fn renew(&mut self, stamp: u64) {
        self.stamp = stamp;
        self.epoch = self.epoch.wrapping_add(1);
        self.counts.renewals += 1;
        // Once in 4G snapshots: no entry of the epoch before the wrap may
        // pass for one of the new.
        if self.epoch == 0 {
            self.sets.fill(Set::FREE);
            self.epoch = 1;
        }
    }

    /// `key`'s set, whose line it starts fetching.
    #[inline(always)]
    pub(super) fn prefetch(&self, key: &Key) -> u32 {
        // The two words multiplied into 128 bits, the halves folded
        // together (ahash's and wyhash's folded multiply): every bit of
        // each word reaches every bit of the high half, so the last bytes
        // of the words (an address's last octet, a port's low byte: read
        // native-endian, the top of their words), which vary the most,
        // reach the set's bits, which are the fold's top ones. One product
        // where three were (each word's, then theirs: 26 instructions a
        // lookup, callgrind). Mixed by one plain product, a pod's answers
        // to successive clients from successive ports (client .n, port
        // 1024 + n) shared a handful of sets; `structured_flows_spread_over_the_sets`
        // keeps such flows apart.
        let a = key.addrs ^ self.seed;
        let b = key.tail ^ 0x9e37_79b9_7f4a_7c15;
        let product = u128::from(a) * u128::from(b);
        let h = (product as u64 ^ (product >> 64) as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
        let set = (h >> self.shift) as usize;
        crate::memory::prefetch_item(&self.sets, set, 0);
        set as u32
    }

    /// The entry of `key` in set `set` (`prefetch`), if it is current;
    /// then starts fetching the entry and the flow's slot, which a hit
    /// counts on: both its lines for an IPv6 key (`V6`), whose hit reads
    /// the rest of the key there (`forward6`).
    #[inline(always)]
    pub(super) fn find<const V6: bool>(&self, key: &Key, set: u32, flows: &FlowTable) -> Option<u32> {
        let s = self.sets.get(set as usize)?;
        let stale = s.epoch ^ self.epoch;
        let k = s.keys.iter().position(|k| k.same(key, stale))?;
        if V6 {
            flows.prefetch_whole_slot(s.slots[k]);
        } else {
            flows.prefetch_slot(s.slots[k]);
        }
        let at = set as usize * WAYS + k;
        crate::memory::prefetch_item(&self.entries, at, 0);
        crate::memory::prefetch_item(&self.entries, at, std::mem::offset_of!(Entry, written));
        Some(at as u32)
    }

    /// Forwards the frame of a cached flow (entry `at`, from `find`), a frame
    /// `fast::classify` took, sets its verdict and counts it on its flow as
    /// the full way does, and in `tally` for the vector's counters. Changes
    /// nothing if it refuses. `REWRITES`: from a floating IP's pod, whose
    /// entries may rewrite (`Key::of_floating`); no other pod asks.
    #[inline(always)]
    pub(super) fn forward<B: Buffer, const REWRITES: bool>(
        &self,
        at: u32,
        flows: &FlowTable,
        f: &mut Frame<B>,
        now: u64,
        tally: &mut Tally,
        stats: &mut Stats,
    ) -> Result<(), Miss> {
        let Some(e) = self.entries.get(at as usize) else { return Err(Miss::Changed) };
        let d = f.data();
        let Some(h) = super::fast::head_of(d) else { return Err(Miss::Changed) };
        let total = u16::from_be_bytes([h[16], h[17]]);
        if total > e.longest {
            return Err(Miss::TooLong);
        }
        let (ttl, ident) = (h[22] - 1, u16::from_be_bytes([h[18], h[19]]));
        if !flows.touch_unchanged(e.slot, e.seq, u32::from(total), e.tcp_flags(h, d), now) {
            return Err(Miss::Changed);
        }
        if REWRITES {
            e.written.rewrite.apply(f);
        }
        let pushed = match e.way {
            Way::Pod => Ok(put_pod::<B, false>(f, e, None)?),
            Way::Udp => put::<B, UDP_HEADERS, { UDP_HEADERS + ipv4::HEADER_LEN }, false>(f, e, ttl, ident),
            Way::Gre => put::<B, GRE_HEADERS, { GRE_HEADERS + ipv4::HEADER_LEN }, false>(f, e, ttl, ident),
        };
        // A verdict written in each arm: one written after both, from
        // either, took 3 instructions more (callgrind).
        match pushed {
            Ok(()) => {
                f.verdict = Verdict::Tx(e.run.out());
                tally.took(e, f.len() as u64, stats);
            }
            Err(r) => {
                f.verdict = Verdict::Drop(r);
                stats.count_drop(f.vif, r);
                e.run.count_routed(1, stats);
            }
        }
        Ok(())
    }

    /// `forward` for a pod's IPv6 packet (entry `at`, from `find::<true>`), a frame
    /// `fast6::classify` took from a pod in VRF `vrf`, as `fast6::finish`
    /// forwards it: the flow's entry must hold the packet's whole key (its
    /// cache key folds the addresses). Changes nothing if it refuses.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // `forward`'s, and the VRF of the packet's flow key.
    pub(super) fn forward6<B: Buffer>(
        &self,
        at: u32,
        flows: &FlowTable,
        f: &mut Frame<B>,
        vrf: u32,
        now: u64,
        tally: &mut Tally,
        stats: &mut Stats,
    ) -> Result<(), Miss> {
        use fast6::field;
        let Some(e) = self.entries.get(at as usize) else { return Err(Miss::Changed) };
        let d = f.data();
        let Some(h) = fast6::head_of(d) else { return Err(Miss::Changed) };
        let (total, flags) = fast6::flow_count(h, d);
        if total > usize::from(e.longest) {
            return Err(Miss::TooLong);
        }
        let hop_limit = h[field::HOP_LIMIT] - 1;
        let words = fast6::flow_key(h, vrf).words();
        if !flows.touch_unchanged_holding(e.slot, e.seq, &words, total as u32, flags, now) {
            return Err(Miss::Changed);
        }
        // The outer identification is the flow's hash's (`fast6::finish`):
        // the one the entry was filled with.
        let ident = u16::from_be_bytes([e.written.headers[18], e.written.headers[19]]);
        let pushed = match e.way {
            Way::Pod => Ok(put_pod::<B, true>(f, e, None)?),
            Way::Udp => put::<B, UDP_HEADERS, { UDP_HEADERS + 8 }, true>(f, e, hop_limit, ident),
            Way::Gre => put::<B, GRE_HEADERS, { GRE_HEADERS + 8 }, true>(f, e, hop_limit, ident),
        };
        match pushed {
            Ok(()) => {
                f.verdict = Verdict::Tx(e.run.out());
                tally.took(e, f.len() as u64, stats);
            }
            // As `fast6::finish`: counted on its flow, dropped, not routed.
            Err(r) => {
                f.verdict = Verdict::Drop(r);
                stats.count_drop(f.vif, r);
            }
        }
        Ok(())
    }

    /// Forwards the frame of a cached tunnelled flow (entry `at`, from
    /// `find`), a tunnel `lane::tunnel_in` took whose inner packet, `inner_len`
    /// bytes long, starts `strip` bytes in (its Ethernet header's room):
    /// strips the tunnel and gives the packet its pod's Ethernet header, as
    /// the full way does, sets its verdict and counts it on its flow, and in
    /// `tally`. Changes nothing if it refuses.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // `forward`'s, and where the inner packet lies.
    pub(super) fn forward_tunnelled<B: Buffer>(
        &self,
        at: u32,
        flows: &FlowTable,
        f: &mut Frame<B>,
        strip: usize,
        inner_len: u16,
        now: u64,
        tally: &mut Tally,
        stats: &mut Stats,
    ) -> Result<(), Miss> {
        let Some(e) = self.entries.get(at as usize) else { return Err(Miss::Changed) };
        if inner_len > e.longest {
            return Err(Miss::TooLong);
        }
        // `tunnel_in` checked that the inner packet lies whole in the frame:
        // asked again, so that nothing below fails once the frame changes.
        // (Written out here and in `forward_tunnelled6`: a helper answering
        // the entry and the inner packet cost the IPv6 hit 26 instructions
        // and the IPv4 one 5, callgrind.)
        let end = strip + ETH + usize::from(inner_len);
        let Some(inner) = f.data().get(strip..end) else { return Err(Miss::Changed) };
        let Some(h) = super::fast::head_of(inner) else { return Err(Miss::Changed) };
        if !flows.touch_unchanged(e.slot, e.seq, u32::from(inner_len), e.tcp_flags(h, inner), now) {
            return Err(Miss::Changed);
        }
        land::<B, false>(f, e, strip, inner_len, tally, stats)
    }

    /// `forward_tunnelled` for a tunnel around an IPv6 packet, landed in VRF
    /// `vrf` (its flow key's): the flow's entry must hold the inner
    /// packet's whole key, as `forward6` asks.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // `forward_tunnelled`'s, and the VRF of the flow key.
    pub(super) fn forward_tunnelled6<B: Buffer>(
        &self,
        at: u32,
        flows: &FlowTable,
        f: &mut Frame<B>,
        (strip, inner_len): (usize, u16),
        vrf: u32,
        now: u64,
        tally: &mut Tally,
        stats: &mut Stats,
    ) -> Result<(), Miss> {
        let Some(e) = self.entries.get(at as usize) else { return Err(Miss::Changed) };
        if inner_len > e.longest {
            return Err(Miss::TooLong);
        }
        let end = strip + ETH + usize::from(inner_len);
        let Some(inner) = f.data().get(strip..end) else { return Err(Miss::Changed) };
        let Some(h) = fast6::head_of(inner) else { return Err(Miss::Changed) };
        let (total, flags) = fast6::flow_count(h, inner);
        let words = fast6::flow_key(h, vrf).words();
        if !flows.touch_unchanged_holding(e.slot, e.seq, &words, total as u32, flags, now) {
            return Err(Miss::Changed);
        }
        land::<B, true>(f, e, strip, inner_len, tally, stats)
    }

    /// Takes note that entry `at` refused its frame (`miss`): one whose
    /// flow changed is forgotten.
    #[inline]
    pub(super) fn refused(&mut self, at: u32, miss: Miss) {
        let (set, k) = (at as usize / WAYS, at as usize % WAYS);
        if let (Miss::Changed, Some(s)) = (miss, self.sets.get_mut(set)) {
            s.keys[k] = Key::NONE;
            self.counts.forgotten += 1;
        }
    }

    /// Fills set `at` (`prefetch`) with `key`'s flow, whose packet in `f` the
    /// full way has just forwarded as `way`, and whose entry in the flow table
    /// (`flows`) has sequence count `seq` (`FlowTable::sequence_of`), in the
    /// set's first entry: the others move down one, and the one that goes
    /// is the flow's own, a free one or one whose flow changed, in that
    /// order; a set filled in an epoch before is emptied first. A set full
    /// of other live flows takes one in `CROWDED_TURN` in the place of its
    /// last (the oldest filled), and turns the others away.
    /// Nothing is filled either if the frame's way out is not one the
    /// cache takes.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)] // The snapshot and the flow table, the flow, its set and its frame.
    pub(super) fn fill<B: Buffer>(
        &mut self,
        t: &Tables,
        flows: &FlowTable,
        key: Key,
        at: u32,
        way: &Taken,
        seq: u32,
        f: &Frame<B>,
    ) {
        // ICMP's identifier lies past the key's ports (`Key`).
        if !matches!(key.proto(), ip_proto::TCP | ip_proto::UDP) {
            return;
        }
        let tcp = key.proto() == ip_proto::TCP;
        let Some(entry) = self.entry_for(t, way, seq, tcp, f) else { return };
        // A tunnelled packet's hit writes a pod's Ethernet header alone
        // (`forward_tunnelled`): one routed on into another tunnel is not
        // kept. A plain pod's hit rewrites nothing (`forward` asks only for
        // a floating IP's pod's: asking for every pod's hit cost each 11
        // instructions, callgrind).
        let kept = match (key.is_tunnelled(), key.may_rewrite()) {
            (true, _) => entry.way == Way::Pod,
            (false, floating) => floating || entry.written.rewrite.which == 0,
        };
        if !kept {
            return;
        }
        self.place(at as usize, key, entry, |e| flows.unchanged(e.slot, e.seq));
    }

    /// `fill`'s choice of place in set `set` for `key`'s `entry`, and its
    /// move of the others down one; `live` tells whether an entry's flow
    /// is unchanged.
    fn place(&mut self, set: usize, key: Key, entry: Entry, live: impl Fn(&Entry) -> bool) {
        let (epoch, at) = (self.epoch, set * WAYS);
        let (Some(s), Some(entries)) = (self.sets.get_mut(set), self.entries.get_mut(at..at + WAYS)) else { return };
        // A set of an epoch before holds nothing current.
        if s.epoch != epoch {
            *s = Set { epoch, ..Set::FREE };
        }
        // The flow's own entry or a free one, else one whose flow changed.
        let own_or_free = s.keys.iter().position(|k| *k == key || *k == Key::NONE);
        let gone = match own_or_free.or_else(|| entries.iter().position(|e| !live(e))) {
            Some(w) => w,
            None => {
                self.counts.crowded += 1;
                if self.counts.crowded % CROWDED_TURN != 0 {
                    return;
                }
                WAYS - 1
            }
        };
        s.keys[..=gone].rotate_right(1);
        s.slots[..=gone].rotate_right(1);
        entries[..=gone].rotate_right(1);
        (s.keys[0], s.slots[0], entries[0]) = (key, entry.slot, entry);
        self.counts.fills += 1;
    }

    /// The entry of a TCP (`tcp`) or UDP flow whose frame `f` the full way
    /// sent by `way`, its slot's sequence count `seq`, if the cache can
    /// take its way out.
    fn entry_for<B: Buffer>(&self, t: &Tables, way: &Taken, seq: u32, tcp: bool, f: &Frame<B>) -> Option<Entry> {
        let Verdict::Tx(out) = f.verdict else { return None };
        let hit = &way.hit;
        // The next hop the full way took (`fast::finish`): a composite's
        // member is the one the flow is pinned to.
        let (nh, ecmp) = match t.nexthop(way.target.nh)? {
            NextHop::Composite(group) => {
                let m = hit.ecmp.filter(|m| group.keeps(m, hit.hash))?;
                (t.nexthop(m.nh)?, true)
            }
            nh => (nh, way.unpinned),
        };
        let (kind, oif, len, overhead, ip_sum) = match nh {
            NextHop::Encap { oif, .. } => (Way::Pod, *oif, 12, 0, 0),
            NextHop::Tunnel(tun) => {
                let (kind, len) = match tun.encap {
                    TunnelEncap::MplsOverUdp => (Way::Udp, UDP_HEADERS),
                    TunnelEncap::MplsOverGre => (Way::Gre, GRE_HEADERS),
                };
                (kind, tun.oif, len, tun.encap.ip_overhead(), tun.ip_sum)
            }
            _ => return None,
        };
        let vif = t.vif(oif)?;
        if oif != out || vif.flags.disabled {
            return None;
        }
        let mut written = Written { headers: [0; HEADERS], rewrite: Rewrite::NONE };
        written.headers[..len].copy_from_slice(f.data().get(..len)?);
        if let Some(tr) = &way.tr {
            written.rewrite = Rewrite::of(&tr.nat);
        }
        Some(Entry {
            slot: hit.slot,
            seq,
            landed: way.landed,
            ip_sum,
            longest: vif.mtu.saturating_sub(overhead as u16),
            way: kind,
            tcp,
            run: Run::of(out, way.vrf, kind, ecmp)?,
            written,
        })
    }
}

/// How the full way forwarded a hit, for `FlowCache::fill`: the flow as
/// read, the route's target it took, the VRF it was routed (and counted)
/// in, and whether that VRF's composite gave it a member unpinned (an
/// answer routed in another network: `lane::translated_hit`).
pub(super) struct Taken {
    pub hit: Forwarding,
    pub target: RouteTarget,
    pub vrf: u32,
    /// The VRF a tunnel's packet landed in (`Entry::landed`); else `vrf`.
    pub landed: u32,
    pub unpinned: bool,
    /// What else the flow's entry does: a plain hit's `None`.
    pub tr: Option<crate::flow::Translation>,
}

impl Taken {
    /// A plain hit's way (`hit`, routed to `target`) in VRF `vrf`, where it
    /// came and was routed: no rewrite, its member pinned.
    pub fn plain(hit: Forwarding, target: RouteTarget, vrf: u32) -> Taken {
        Taken { hit, target, vrf, landed: vrf, unpinned: false, tr: None }
    }
}

/// A pod's Ethernet addresses, entry `e`'s, on the front of the frame (and
/// `ethertype`, where the frame had none: a tunnel's inner packet), and the
/// IPv4 TTL decremented with its checksum, or the IPv6 hop limit (`V6`),
/// as `fast::finish` and `fast6::finish` write them.
#[inline(always)]
fn put_pod<B: Buffer, const V6: bool>(f: &mut Frame<B>, e: &Entry, ethertype: Option<[u8; 2]>) -> Result<(), Miss> {
    // An IPv4 header's end: an IPv6 packet's hop limit lies before it.
    const HDR: usize = ETH + ipv4::HEADER_LEN;
    let Some(Ok(hdr)) = f.data_mut().get_mut(..HDR).map(<&mut [u8; HDR]>::try_from) else {
        return Err(Miss::Changed);
    };
    hdr[..12].copy_from_slice(&e.written.headers[..12]);
    if let Some(t) = ethertype {
        hdr[12..14].copy_from_slice(&t);
    }
    if V6 {
        hdr[fast6::field::HOP_LIMIT] -= 1;
    } else {
        ipv4::Packet::new_unchecked(&mut hdr[ETH..]).decrement_ttl();
    }
    Ok(())
}

/// A tunnelled hit's packet (`strip` bytes in, `inner_len` long), counted
/// on its flow, stripped and given its pod's Ethernet header by entry `e`
/// (and, IPv4's, the entry's rewrite first), its verdict set and counted
/// in `tally`.
#[inline(always)]
fn land<B: Buffer, const V6: bool>(
    f: &mut Frame<B>,
    e: &Entry,
    strip: usize,
    inner_len: u16,
    tally: &mut Tally,
    stats: &mut Stats,
) -> Result<(), Miss> {
    f.pull_front(strip);
    f.set_len(ETH + usize::from(inner_len));
    if !V6 {
        e.written.rewrite.apply(f);
    }
    put_pod::<B, V6>(f, e, Some(if V6 { [0x86, 0xdd] } else { [0x08, 0x00] }))?;
    tally.landed(e, f, stats);
    Ok(())
}

/// A tunnel's outer headers of `N` bytes, an entry's, in front of the frame,
/// with the fields that differ per packet written as `forward::push_tunnel`
/// writes them: the outer lengths, identification (`ident`: an IPv4
/// packet's own, an IPv6 one's flow hash's) and checksum, the label's TTL
/// (`ttl`), and the inner TTL, or IPv6 hop limit (`V6`), decremented to it.
#[inline(always)]
fn put<B: Buffer, const N: usize, const M: usize, const V6: bool>(
    f: &mut Frame<B>,
    e: &Entry,
    ttl: u8,
    ident: u16,
) -> Result<(), crate::stats::DropReason> {
    use crate::stats::DropReason::PushFails;
    if !f.push_front(N - ETH) {
        return Err(PushFails);
    }
    let outer_len = f.len() - ETH;
    let Some(Ok(whole)) = f.data_mut().get_mut(..M).map(<&mut [u8; M]>::try_from) else { return Err(PushFails) };
    let (hdr, inner) = whole.split_at_mut(N);
    if V6 {
        inner[fast6::field::HOP_LIMIT - ETH] = ttl;
    } else {
        ipv4::Packet::new_unchecked(inner).decrement_ttl();
    }
    hdr.copy_from_slice(&e.written.headers[..N]);
    hdr[16..18].copy_from_slice(&(outer_len as u16).to_be_bytes());
    hdr[18..20].copy_from_slice(&ident.to_be_bytes());
    let sum = checksum::finish(e.ip_sum + outer_len as u32 + u32::from(ident));
    hdr[24..26].copy_from_slice(&sum.to_be_bytes());
    if N == UDP_HEADERS {
        hdr[38..40].copy_from_slice(&((outer_len - ipv4::HEADER_LEN) as u16).to_be_bytes());
    }
    hdr[N - mpls::HEADER_LEN + 3] = ttl;
    Ok(())
}

/// What a run of hits shares, and the tally counts once the run ends: the
/// vif they leave by (the low 32 bits), the VRF they are
/// routed in (24 bits over it), their way (`Entry::way`, 2 bits) and
/// whether a composite chose it (the bit over those): a hit compares one
/// word with the run's, where comparing the vif and the VRF apart and
/// adding to the way's and the composites' counts took 5 instructions
/// more (callgrind).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Run(u64);

impl Run {
    /// No run: above every packed one.
    const NONE: Run = Run(u64::MAX);

    /// The run of hits out of `out`, routed in `vrf` by `way`, through a
    /// composite if `ecmp`; `None` for a VRF past 24 bits (not cached).
    fn of(out: VifIndex, vrf: u32, way: Way, ecmp: bool) -> Option<Run> {
        (vrf < 1 << 24)
            .then(|| Run(u64::from(out) | u64::from(vrf) << 32 | u64::from(way as u8) << 56 | u64::from(ecmp) << 58))
    }

    fn out(self) -> VifIndex {
        self.0 as u32
    }

    /// Adds `packets` routed this run's way to its VRF's counters.
    fn count_routed(self, packets: u64, stats: &mut Stats) {
        let vrf = (self.0 >> 32) as u32 & 0xff_ffff;
        let way = match self.0 >> 56 & 3 {
            0 => Way::Pod,
            1 => Way::Udp,
            _ => Way::Gre,
        };
        if let (Some(c), false) = (stats.vrf_mut(vrf), self == Run::NONE) {
            *way.counter(c) += packets;
            if self.0 >> 58 & 1 != 0 {
                c.ecmp_composites += packets;
            }
        }
    }
}

/// A vector's hits' counters, added to the worker's once a run of them
/// ends and once a vector (`flush`): the frames of one `Run` in a row
/// (sent out of one vif, routed one way in one VRF), and the tunnels
/// stripped in one VRF in a row. Counted a packet at a time, they were a
/// tenth of a hit's instructions (callgrind).
pub(super) struct Tally {
    run: Run,
    /// The run's packets (over `SENT_BYTES`) and their bytes (under it),
    /// added in one sum: a vector's hundreds of kilobytes fit below.
    sent: u64,
    /// The VRF the run of tunnels landed in (`FlowCache::forward_tunnelled`),
    /// and how many.
    landed: u32,
    decaps: u64,
}

impl Tally {
    pub(super) const NONE: Tally = Tally { run: Run::NONE, sent: 0, landed: u32::MAX, decaps: 0 };

    /// Where a run's packets start in `sent`.
    const SENT_BYTES: u32 = 48;

    /// A tunnel's packet entry `e` stripped and sent to its pod, `f`:
    /// its verdict, and counted sent, routed and decapsulated.
    #[inline(always)]
    fn landed<B: Buffer>(&mut self, e: &Entry, f: &mut Frame<B>, stats: &mut Stats) {
        f.verdict = Verdict::Tx(e.run.out());
        self.took(e, f.len() as u64, stats);
        self.decapped(e.landed, stats);
    }

    /// A packet of `bytes` that entry `e` sent: counted in the entry's run.
    #[inline(always)]
    fn took(&mut self, e: &Entry, bytes: u64, stats: &mut Stats) {
        if e.run != self.run {
            self.switch_run(e.run, stats);
        }
        self.sent += 1 << Tally::SENT_BYTES | bytes;
    }

    #[inline(always)]
    fn decapped(&mut self, landed: u32, stats: &mut Stats) {
        if landed != self.landed {
            self.switch_landed(landed, stats);
        }
        self.decaps += 1;
    }

    /// Tunnels landed in another VRF than the run before.
    #[cold]
    #[inline(never)]
    fn switch_landed(&mut self, landed: u32, stats: &mut Stats) {
        self.count_decapped(stats);
        self.landed = landed;
    }

    #[inline(always)]
    fn count_decapped(&mut self, stats: &mut Stats) {
        if let (Some(c), true) = (stats.vrf_mut(self.landed), self.decaps != 0) {
            c.decaps += self.decaps;
        }
        self.decaps = 0;
    }

    /// Another run than the one before: rare but for vectors to several
    /// pods, or to pods and tunnels, or of several networks' answers.
    #[cold]
    #[inline(never)]
    fn switch_run(&mut self, run: Run, stats: &mut Stats) {
        self.count_run(stats);
        self.run = run;
    }

    #[inline(always)]
    fn count_run(&mut self, stats: &mut Stats) {
        let (packets, bytes) = (self.sent >> Tally::SENT_BYTES, self.sent & ((1 << Tally::SENT_BYTES) - 1));
        if packets != 0 {
            if let Some(c) = stats.vifs.get_mut(self.run.out() as usize) {
                c.tx_packets += packets;
                c.tx_bytes += bytes;
            }
            self.run.count_routed(packets, stats);
        }
        self.sent = 0;
    }

    /// Adds what the vector's hits left uncounted to the worker's counters.
    #[inline(always)]
    pub(super) fn flush(mut self, stats: &mut Stats) {
        self.count_run(stats);
        self.count_decapped(stats);
    }
}

/// What the lane asked the cache for a vector's frames: frame `i`'s key,
/// and its set (`FlowCache::prefetch`), or, once found, its entry.
pub(super) struct Asked {
    pub keys: [Key; super::VECTOR],
    pub at: [u32; super::VECTOR],
}

impl Asked {
    /// Nothing asked yet.
    pub const NONE: Asked = Asked { keys: [Key::NONE; super::VECTOR], at: [0; super::VECTOR] };

    /// Asks `cache` for frame `i`'s flow, `key`, whose set it starts
    /// fetching; answers frame `i`'s bit, for the lane's mask of those asked.
    #[inline(always)]
    pub fn ask(&mut self, cache: &FlowCache, i: usize, key: Key) -> u32 {
        self.keys[i] = key;
        self.at[i] = cache.prefetch(&key);
        1 << i
    }

    /// Finds frame `i`'s flow in `cache` (`FlowCache::find`; `V6`: its key
    /// is an IPv6 packet's), keeping its entry in place of its set; answers
    /// frame `i`'s bit if found, else 0.
    #[inline(always)]
    pub fn find<const V6: bool>(&mut self, cache: &FlowCache, i: usize, flows: &FlowTable) -> u32 {
        match cache.find::<V6>(&self.keys[i], self.at[i], flows) {
            Some(entry) => {
                self.at[i] = entry;
                1 << i
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Entry, FlowCache, Key, CROWDED_TURN, WAYS};

    /// Flows that differ where real ones do (the last octet of an
    /// address, the low byte of a port, often together) spread over the
    /// cache's sets as random keys would: no set gets more than a few,
    /// where the first hash put 10,000 such flows in a handful of sets.
    #[test]
    fn structured_flows_spread_over_the_sets() {
        let cache = FlowCache::new(40_000, 0);
        let sets = cache.sets.len();
        fn key(src: u32, dst: u32, sport: u16, dport: u16) -> Key {
            let mut h = [0u8; super::HEAD];
            h[23] = 17;
            h[26..30].copy_from_slice(&src.to_be_bytes());
            h[30..34].copy_from_slice(&dst.to_be_bytes());
            h[34..36].copy_from_slice(&sport.to_be_bytes());
            h[36..38].copy_from_slice(&dport.to_be_bytes());
            Key::of(&h, 1).unwrap()
        }
        type Flows = fn(u32) -> Key;
        let patterns: [(&str, Flows); 4] = [
            ("a client and its port together", |n| key(0x0a01_0002, 0xc612_0000 + n, 80, 1024 + n as u16)),
            ("one server, successive ports", |n| key(0x0a01_0002, 0x0a01_0003, 1024 + n as u16, 80)),
            ("successive servers", |n| key(0x0a01_0002, 0x0a02_0000 + n, 40000, 443)),
            ("the first octet", |n| key((n % 256) << 24 | 5, 0x0a01_0003, 7000 + (n / 256) as u16, 53)),
        ];
        for (what, make) in patterns {
            let mut per_set = vec![0u32; sets];
            for n in 0..10_000 {
                per_set[cache.prefetch(&make(n)) as usize] += 1;
            }
            let used = per_set.iter().filter(|&&n| n > 0).count();
            let most = per_set.iter().max().copied().unwrap_or(0);
            // 10,000 random keys over 32K sets use about 8,600 and put at
            // most 5 or 6 in one.
            assert!(used > 8_200 && most <= 8, "{what}: {used} sets used, at most {most} in one");
        }
    }

    /// `n` keys of one set of `cache`, and that set.
    fn keys_of_one_set(cache: &FlowCache, n: usize) -> (Vec<Key>, usize) {
        let key = |p: u32| Key::new(0x0a01_0002_0a02_0003, p, 17 << 8 | 1);
        let set = cache.prefetch(&key(0)) as usize;
        let keys = (0..1_000_000).map(key).filter(|k| cache.prefetch(k) as usize == set).take(n).collect();
        (keys, set)
    }

    /// Whether `key` has an entry in `set`, of the current epoch: a hit.
    fn holds(cache: &FlowCache, set: usize, key: &Key) -> bool {
        let s = &cache.sets[set];
        s.epoch == cache.epoch && s.keys.contains(key)
    }

    /// Flows that outnumber their set's ways, each packet of the flows in
    /// turn: those in place keep their entries, and only the extra one
    /// misses, where taking the place of the oldest each time (the rule
    /// before `CROWDED_TURN`) made every packet of them a miss. It still
    /// gets in, once in `CROWDED_TURN` tries, in the oldest's place.
    #[test]
    fn a_crowded_set_keeps_the_flows_in_place_and_lets_a_new_one_in_now_and_then() {
        let mut cache = FlowCache::new(100, 0);
        let (keys, set) = keys_of_one_set(&cache, WAYS + 1);
        assert_eq!(keys.len(), WAYS + 1);
        let (mut hits, mut misses, mut filled) = (0, 0, vec![0; keys.len()]);
        for _round in 0..40 {
            for (n, key) in keys.iter().enumerate() {
                if holds(&cache, set, key) {
                    hits += 1;
                } else {
                    misses += 1;
                    let fills = cache.counts.fills;
                    cache.place(set, *key, Entry { slot: n as u32, ..Entry::FREE }, |_| true);
                    filled[n] += cache.counts.fills - fills;
                }
            }
        }
        // Every miss after the first WAYS fills found the set full, and
        // one in CROWDED_TURN of those was let in.
        let c = cache.counts;
        assert_eq!(misses as u64, WAYS as u64 + c.crowded, "{c:?}");
        let let_in = c.fills as usize - WAYS;
        assert_eq!(let_in as u64, c.crowded / CROWDED_TURN, "{c:?}");
        // After the first round, one miss a round, and one more for each
        // flow let in (the one it put out, later in the round).
        assert!(let_in >= 4 && hits >= 39 * WAYS - let_in, "{hits} hits, {misses} misses: {c:?}");
        assert!(filled.iter().all(|&n| n > 0), "each flow got in: {filled:?}");
        for (n, key) in keys.iter().enumerate() {
            if let Some(w) = cache.sets[set].keys.iter().position(|k| k == key) {
                assert_eq!(cache.sets[set].slots[w], n as u32, "a key's slot kept with it");
                assert_eq!(cache.entries[set * WAYS + w].slot, n as u32, "and its entry");
            }
        }
    }

    /// A new flow takes, in turn: its own entry (never a second), a free
    /// one, one whose flow changed; and none of a set of live flows but
    /// on its turn.
    #[test]
    fn a_new_flow_takes_its_own_entry_a_free_one_or_a_changed_ones() {
        let mut cache = FlowCache::new(100, 0);
        let (keys, set) = keys_of_one_set(&cache, WAYS + 2);
        let entry = |slot: u32| Entry { slot, ..Entry::FREE };
        for (n, key) in keys[..WAYS].iter().enumerate() {
            cache.place(set, *key, entry(n as u32), |_| panic!("a free entry is taken first"));
        }
        cache.place(set, keys[1], entry(10), |_| panic!("its own entry is taken first"));
        assert_eq!(cache.sets[set].keys.iter().filter(|k| **k == keys[1]).count(), 1, "one entry a flow");
        assert_eq!((cache.sets[set].keys[0], cache.sets[set].slots[0]), (keys[1], 10), "refilled, first");
        assert_eq!(cache.counts.fills, WAYS as u64 + 1);

        // Slot 0's flow changed: the next flow takes its place at once.
        cache.place(set, keys[WAYS], entry(20), |e| e.slot != 0);
        assert!(holds(&cache, set, &keys[WAYS]) && !holds(&cache, set, &keys[0]));
        assert_eq!(cache.counts.crowded, 0);

        // Every flow live: turned away, but on the turn, which takes the oldest's place.
        let oldest = cache.sets[set].keys[WAYS - 1];
        for tries in 1..=CROWDED_TURN {
            cache.place(set, keys[WAYS + 1], entry(30), |_| true);
            assert_eq!(holds(&cache, set, &keys[WAYS + 1]), tries == CROWDED_TURN, "try {tries}");
        }
        assert!(!holds(&cache, set, &oldest), "the oldest went");
        assert_eq!(cache.counts.crowded, CROWDED_TURN);

        // A new epoch (a new tables snapshot): the set is free again.
        cache.renew(7);
        cache.place(set, keys[0], entry(0), |_| panic!("nothing current to ask of"));
        assert_eq!(cache.sets[set].keys[1..], [Key::NONE; WAYS - 1]);
    }

    /// A cache for the default flow table (512K pairs) takes its most
    /// sets: 14 MiB, the figure the README gives a worker.
    #[test]
    fn a_cache_takes_at_most_14_mib() {
        let cache = FlowCache::new(512 * 1024, 0);
        assert_eq!(cache.memory_bytes(), 14 << 20);
        assert_eq!(FlowCache::new(4 * 1024 * 1024, 0).memory_bytes(), 14 << 20, "whatever the table's size");
        assert!(FlowCache::new(1000, 0).memory_bytes() < 1 << 20, "less for a small table");
    }

    /// IPv6 flows that differ where real ones do spread as IPv4's: the
    /// fold of their addresses (`Key::of6`) keeps what varies.
    #[test]
    fn structured_ipv6_flows_spread_over_the_sets() {
        use crate::pipeline::fast6::{field, HEAD};
        let cache = FlowCache::new(40_000, 0);
        let sets = cache.sets.len();
        fn key(src: u128, dst: u128, sport: u16, dport: u16) -> Key {
            let mut h = [0u8; HEAD];
            h[field::NEXT_HEADER] = 6;
            h[field::SRC..field::SRC + 16].copy_from_slice(&src.to_be_bytes());
            h[field::DST..field::DST + 16].copy_from_slice(&dst.to_be_bytes());
            h[field::L4..field::L4 + 2].copy_from_slice(&sport.to_be_bytes());
            h[field::L4 + 2..field::L4 + 4].copy_from_slice(&dport.to_be_bytes());
            Key::of6(&h, 1).unwrap()
        }
        const PODS: u128 = 0xfd00_0001 << 96;
        const REMOTE: u128 = 0x2001_0db8 << 96;
        type Flows = fn(u32) -> Key;
        let patterns: [(&str, Flows); 4] = [
            ("a client and its port together", |n| key(PODS | 2, REMOTE | u128::from(n), 80, 1024 + n as u16)),
            ("one server, successive ports", |n| key(PODS | 2, PODS | 3, 1024 + n as u16, 80)),
            ("successive servers", |n| key(PODS | 2, PODS | (u128::from(n) << 64) | 3, 40000, 443)),
            ("the client's interface identifier", |n| key(REMOTE | u128::from(n) << 32, PODS | 3, 7000, 53)),
        ];
        for (what, make) in patterns {
            let mut per_set = vec![0u32; sets];
            for n in 0..10_000 {
                per_set[cache.prefetch(&make(n)) as usize] += 1;
            }
            let used = per_set.iter().filter(|&&n| n > 0).count();
            let most = per_set.iter().max().copied().unwrap_or(0);
            assert!(used > 8_200 && most <= 8, "{what}: {used} sets used, at most {most} in one");
        }
    }
}
