//! Longest-prefix match: a multibit trie with 8-bit strides, in the spirit
//! of Tungsten Fabric's mtrie, with copy-on-write nodes.
//!
//! A lookup reads one 32-bit slot per byte of the address until it meets a
//! leaf: an IPv4 /24 takes three slot reads, with no branches on prefix
//! length. Prefixes are expanded into every slot they cover (controlled
//! prefix expansion), so each slot records how deep its prefix is, and each
//! child node records the prefix it inherited from its parent slot; that is
//! what lets a delete restore the covering prefix without rescanning.
//!
//! IPv6 prefixes are sparse: a node of an IPv6 trie that holds one prefix
//! and no children, or one child and nothing else, is kept as a
//! twelve-byte `Single` rather than a kilobyte of slots.
//!
//! Nodes live behind `Arc`s. Cloning a `Fib` for the next snapshot copies
//! the node pointers; an insert or delete copies only the nodes on its path
//! that an older snapshot still shares. Readers keep their snapshot intact.
//!
//! Expansion can hide a prefix entirely (a /5 covered by two /6s), so the
//! trie cannot list its routes: the writer keeps the authoritative prefix
//! list (see `tables::writer`), and this structure holds only what the data
//! path needs.

use super::hosts::{HostRoutes, SpillChanges};
use super::{RouteEntry, RouteTarget, VrfId};
use std::collections::VecDeque;
use std::sync::Arc;

const STRIDE: usize = 8;
const FANOUT: usize = 1 << STRIDE;
const CHILD: u32 = 1 << 31;
/// With `CHILD`: the child is a `Single`, not a node.
const SINGLE: u32 = 1 << 30;
/// A child slot's index into the nodes, or into the singles.
const INDEX_MASK: u32 = SINGLE - 1;
const REL_SHIFT: u32 = 27;
const VALUE_MASK: u32 = (1 << REL_SHIFT) - 1;
/// No leaf: a slot, or a `HostRoutes` way, that names no target.
pub(super) const EMPTY: u32 = 0;
/// Most keys `lookup_batch` takes at once.
pub const BATCH: usize = 32;

/// An address family's key: an unsigned integer in network bit order.
pub trait FibKey: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug + Send + Sync + 'static {
    /// Address width in bits.
    const BITS: u8;
    /// The `level`th byte, most significant first.
    fn byte(self, level: usize) -> usize;
    /// The key with every bit past `len` cleared.
    fn mask(self, len: u8) -> Self;
    /// The key with byte `level` set to `b`.
    fn with_byte(self, level: usize, b: usize) -> Self;
    /// The zero key.
    fn zero() -> Self;
    /// The key's bytes, most significant first.
    type Bytes: Copy + AsRef<[u8]>;
    /// The key as `Bytes`: a batch walk reads one a level (`lookup_batch_routes`).
    fn be_bytes(self) -> Self::Bytes;
    /// True if the family's full-length prefixes are found by hash before
    /// the trie is walked (`HostRoutes`): IPv6's, whose walk is sixteen levels.
    const HOSTS_BY_HASH: bool;
    /// The key folded to 64 bits, for `HostRoutes`' hash.
    fn fold(self) -> u64;
    /// The key's low 64 bits, where `HostRoutes` compares keys first.
    fn fold_low(self) -> u64;
    /// The key's bits above the low 64 (none for IPv4).
    fn fold_high(self) -> u64;
    /// True if a bottom node that holds one prefix and no children is
    /// kept as a `Single`: IPv6's, whose sparse prefixes each sat alone in
    /// a kilobyte node. IPv4's dense /24s fill their nodes, and its walk
    /// stays without the check.
    const SINGLES: bool;
}

macro_rules! fib_key {
    ($t:ty, $hosts_by_hash:expr, $singles:expr) => {
        impl FibKey for $t {
            const BITS: u8 = <$t>::BITS as u8;
            #[inline(always)]
            fn byte(self, level: usize) -> usize {
                ((self >> (Self::BITS as usize - STRIDE * (level + 1))) & 0xff) as usize
            }
            #[inline]
            fn mask(self, len: u8) -> Self {
                if len == 0 {
                    0
                } else {
                    self & (<$t>::MAX << (<Self as FibKey>::BITS - len))
                }
            }
            #[inline]
            fn with_byte(self, level: usize, b: usize) -> Self {
                let shift = Self::BITS as usize - STRIDE * (level + 1);
                (self & !((0xff as $t) << shift)) | ((b as $t) << shift)
            }
            fn zero() -> Self {
                0
            }
            type Bytes = [u8; std::mem::size_of::<$t>()];
            #[inline(always)]
            fn be_bytes(self) -> Self::Bytes {
                self.to_be_bytes()
            }
            const HOSTS_BY_HASH: bool = $hosts_by_hash;
            const SINGLES: bool = $singles;
            #[inline(always)]
            fn fold(self) -> u64 {
                // The high half of an IPv6 pod's address is its subnet's,
                // the same for all of them: mixed in, never cancelling out.
                (self as u64) ^ self.fold_high().rotate_left(29)
            }
            #[inline(always)]
            fn fold_high(self) -> u64 {
                (u128::from(self) >> 64) as u64
            }
            #[inline(always)]
            fn fold_low(self) -> u64 {
                self as u64
            }
        }
    };
}
// An IPv4 /32 is four levels: a hash probe would save little and cost
// every other lookup its miss.
fib_key!(u32, false, false);
fib_key!(u128, true, true);

#[derive(Clone)]
struct Node {
    slots: [u32; FANOUT],
    /// The leaf this node's parent slot held when the node was made, kept
    /// current since: the best prefix from the levels above.
    inherited: u32,
}

impl Node {
    /// Starts fetching every line of the node and of the counts before it
    /// in its `Arc`.
    #[inline(always)]
    fn prefetch(self: &Arc<Self>) {
        prefetch_counts(self);
        for line in self.slots.chunks(16) {
            crate::memory::prefetch(&line[0]);
        }
        crate::memory::prefetch(&self.inherited);
    }
}

/// Starts fetching the reference counts of `node`, which an `Arc` keeps
/// just before its value (a hint: were they elsewhere, nothing but the
/// time would change).
#[inline(always)]
fn prefetch_counts(node: &Arc<Node>) {
    crate::memory::prefetch_addr(Arc::as_ptr(node).cast::<u8>().wrapping_sub(ARC_COUNTS));
}

/// A node that holds one prefix of its own and no children, or one child
/// and nothing else, kept as what its slots would be: that prefix's leaf
/// over `span` slots from `first` (or the child's entry in slot `first`,
/// `span` 1: a "pass"), and the leaf from above elsewhere. Twelve bytes
/// where a node takes a kilobyte: 100,000 IPv6 prefixes, most of them
/// /48s each alone in its /40, took 103.6 MiB of nodes, and the nodes
/// above them, each /32 allocation's own /24 and /32 nodes with one child
/// apiece, 5.8 MiB of the 21.4 left. The writer expands a single into a
/// node to change it, and folds a node back into one when a change leaves
/// it so (`Fib::compact`).
#[derive(Clone, Copy, PartialEq)]
struct Single {
    first: u16,
    span: u16,
    leaf: u32,
    inherited: u32,
}

impl Single {
    /// The slot a node would hold for `byte`: a leaf, or (a pass's) a child.
    #[inline(always)]
    fn slot(&self, byte: usize) -> u32 {
        if byte.wrapping_sub(usize::from(self.first)) < usize::from(self.span) {
            self.leaf
        } else {
            self.inherited & VALUE_MASK
        }
    }
}

#[inline(always)]
fn leaf(value: u32, rel: u8) -> u32 {
    (u32::from(rel) << REL_SHIFT) | value
}

#[inline(always)]
fn rel_of(e: u32) -> u8 {
    ((e >> REL_SHIFT) & 0xf) as u8
}

/// Makes `mine` the list `theirs`, writing only the slots that differ
/// (`same` says which do not: for `Arc`s, that they point alike, so that
/// a slot kept takes no reference). With `written`, the slots `theirs`
/// was written at since it was `mine` (`Writes`), only those are looked
/// at, and the slots past `mine`'s end.
pub(super) fn copy_slots<T: Clone>(
    mine: &mut Vec<T>,
    theirs: &[T],
    written: Option<&[u32]>,
    same: impl Fn(&T, &T) -> bool,
) {
    let copy = |m: &mut T, t: &T| {
        if !same(m, t) {
            *m = t.clone();
        }
    };
    match written {
        Some(written) if mine.len() <= theirs.len() => {
            let have = mine.len();
            mine.extend_from_slice(&theirs[have..]);
            for &i in written {
                copy(&mut mine[i as usize], &theirs[i as usize]);
            }
        }
        _ => {
            mine.truncate(theirs.len());
            for (m, t) in mine.iter_mut().zip(theirs) {
                copy(m, t);
            }
            let have = mine.len();
            mine.extend_from_slice(&theirs[have..]);
        }
    }
}

/// Puts `item` in a free slot of `items` (one of `free`, else a new one)
/// and returns its index.
fn take_slot<T>(items: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop() {
        Some(i) => {
            items[i as usize] = item;
            i
        }
        None => {
            items.push(item);
            (items.len() - 1) as u32
        }
    }
}

/// Where a child entry is kept: in a node's slot, or as a pass's one child.
#[derive(Clone, Copy)]
enum Link {
    Slot(u32, usize),
    Pass(u32),
}

/// Level of the node that holds a prefix of `len` bits, and the prefix's
/// depth within that node's stride (1..=8; 0 for the default route).
fn place(len: u8) -> (usize, u8) {
    if len == 0 {
        (0, 0)
    } else {
        let level = (usize::from(len) - 1) / STRIDE;
        (level, len - (level * STRIDE) as u8)
    }
}

/// Trie nodes a writer took out of its tables, to be written again
/// rather than freed and allocated anew. Loading a million routes in
/// batches copies a node the published snapshot shares for nearly every
/// route, and frees the old one once the snapshot goes: the allocator's
/// part in that, coalescing each freed kilobyte with its cold
/// neighbours, was the largest cost left once the nodes were prefetched
/// (`vrpktgen tables`, perf). A node is reused only when no snapshot holds
/// it any more (`Arc::get_mut`).
pub struct NodePool {
    /// Nodes taken out, oldest first: the ones at the front are the first
    /// whose snapshots go.
    retired: VecDeque<Arc<Node>>,
    /// Nodes made since the last `trim`, from the pool or new.
    made: usize,
    /// Nodes retired since the last `trim`: the last ones in `retired`.
    retired_lately: usize,
}

/// Bytes of the reference counts an `Arc` keeps before its value.
const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();

/// Bytes a node takes in memory, with its `Arc`'s counts.
const NODE_BYTES: usize = std::mem::size_of::<Node>() + ARC_COUNTS;

/// Spare nodes a pool keeps at least, whatever the last batch made.
const POOL_MIN: usize = 64;

impl NodePool {
    /// An empty pool.
    pub fn new() -> Self {
        NodePool { retired: VecDeque::new(), made: 0, retired_lately: 0 }
    }

    /// `node` in a node of its own, reusing the oldest retired node if
    /// nothing else holds it, else the newest: one these changes made and
    /// freed again (IPv6's nodes folded back into singles).
    fn make(&mut self, node: &Node) -> Arc<Node> {
        self.made += 1;
        if let Some(front) = self.retired.front_mut() {
            if let Some(spare) = Arc::get_mut(front) {
                spare.clone_from(node);
                let made = self.retired.pop_front().expect("the front was there");
                // The next node, which the next call checks and writes.
                if let Some(next) = self.retired.front() {
                    next.prefetch();
                }
                return made;
            }
        }
        if let Some(spare) = self.retired.back_mut().and_then(Arc::get_mut) {
            spare.clone_from(node);
            self.retired_lately = self.retired_lately.saturating_sub(1);
            return self.retired.pop_back().expect("the back was there");
        }
        Arc::new(node.clone())
    }

    fn retire(&mut self, node: Arc<Node>) {
        self.retired.push_back(node);
        self.retired_lately += 1;
    }

    /// Forgets the nodes retired since the last `trim`, by changes that
    /// were thrown away: the published tables still hold them, and would
    /// keep any reuse behind them waiting for as long as they do.
    /// (A node made and retired by the same changes may have been reused
    /// since, so the count can exceed what is left: then all goes.)
    pub fn abandon(&mut self) {
        self.retired.truncate(self.retired.len().saturating_sub(self.retired_lately));
        self.retired_lately = 0;
    }

    /// Frees the spare nodes past what the changes since the last trim
    /// made (at least `POOL_MIN`): a batch that deletes half the table
    /// leaves its nodes to the allocator, not to this pool. Nodes that a
    /// snapshot still holds stay, and do not count: with a worker holding
    /// the last snapshot a while, the spare nodes are the batch before
    /// last's, and the next batch needs them.
    pub fn trim(&mut self) {
        let keep = self.made.max(POOL_MIN);
        let spare = self.retired.iter().take_while(|n| Arc::strong_count(n) == 1).count();
        self.retired.drain(..spare.saturating_sub(keep));
        self.made = 0;
        self.retired_lately = 0;
    }

    /// Nodes held, spare or still in a snapshot.
    pub fn len(&self) -> usize {
        self.retired.len()
    }

    /// True if the pool holds no node.
    pub fn is_empty(&self) -> bool {
        self.retired.is_empty()
    }

    /// Bytes of the nodes held.
    pub fn memory_bytes(&self) -> usize {
        self.retired.len() * NODE_BYTES
    }
}

impl Default for NodePool {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of a table starts with a pool of its own, empty: a pool's
/// nodes are its writer's, lent to one table for one change
/// (`Fib::with_pool`).
impl Clone for NodePool {
    fn clone(&self) -> Self {
        Self::new()
    }
}

/// A table's index of its targets: the position in `targets` (and
/// `networks`) of each entry in use, found by the entry's hash. It holds
/// positions alone, four bytes and a control byte a slot, and reads the
/// entries from the lists themselves: a map keyed by the entries held
/// seventeen bytes a slot, two thirds of what a million prefixes with a
/// label each took beyond their trie (`vrpktgen tables --routes 1000000
/// --labels`). The writer's alone: lookups read `targets`.
#[derive(Default)]
struct TargetIndex(hashbrown::HashTable<u32>);

impl Clone for TargetIndex {
    fn clone(&self) -> Self {
        TargetIndex(self.0.clone())
    }

    /// Into the table it has (`Fib::copy_from`, every batch), not a new one.
    fn clone_from(&mut self, source: &Self) {
        self.0.clone_from(&source.0);
    }
}

impl TargetIndex {
    /// Fixed seeds: a table made a copy of another (`copy_from`) takes its
    /// hashes as they are.
    const HASHER: ahash::RandomState = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );

    fn hash(e: RouteEntry) -> u64 {
        Self::HASHER.hash_one(e)
    }

    fn entry(i: u32, targets: &[RouteTarget], networks: &[VrfId]) -> RouteEntry {
        RouteEntry { target: targets[i as usize], network: networks[i as usize] }
    }

    /// The position of `e`, if a target in use holds it.
    fn find(&self, e: RouteEntry, targets: &[RouteTarget], networks: &[VrfId]) -> Option<u32> {
        self.0.find(Self::hash(e), |&i| Self::entry(i, targets, networks) == e).copied()
    }

    /// Indexes position `i`, whose entry no other position in use holds.
    fn insert(&mut self, i: u32, targets: &[RouteTarget], networks: &[VrfId]) {
        let hash = Self::hash(Self::entry(i, targets, networks));
        self.0.insert_unique(hash, i, |&j| Self::hash(Self::entry(j, targets, networks)));
    }

    /// Forgets position `i`, before its entry is overwritten.
    fn remove(&mut self, i: u32, targets: &[RouteTarget], networks: &[VrfId]) {
        let hash = Self::hash(Self::entry(i, targets, networks));
        if let Ok(found) = self.0.find_entry(hash, |&j| j == i) {
            found.remove();
        }
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// True if both index the same positions: for `Fib::is_copy_of`, whose
    /// lists it is given.
    #[cfg(any(debug_assertions, test))]
    fn is_copy_of(&self, other: &Self, targets: &[RouteTarget], networks: &[VrfId]) -> bool {
        self.0.len() == other.0.len()
            && other.0.iter().all(|&i| self.find(Self::entry(i, targets, networks), targets, networks) == Some(i))
    }
}

/// One address family's forwarding table.
#[derive(Clone)]
pub struct Fib<K: FibKey> {
    nodes: Vec<Arc<Node>>,
    free_nodes: Vec<u32>,
    /// Stands in the slot of a freed node, so freeing never pins a live one.
    vacant: Arc<Node>,
    /// Bottom nodes with one prefix, where `K::SINGLES`.
    singles: Vec<Single>,
    free_singles: Vec<u32>,
    /// Indexed by leaf value - 1: what the data path reads on every lookup.
    targets: Vec<RouteTarget>,
    /// The network of each target's addresses, indexed alike: read only
    /// where a policy names networks, so kept out of `targets`' lines.
    networks: Vec<VrfId>,
    target_refs: Vec<u32>,
    /// Where each target in use is in `targets`, found by its entry's hash
    /// (`TargetIndex`).
    target_index: TargetIndex,
    free_targets: Vec<u32>,
    /// Changed by every insert and remove, never reused by another table
    /// in this process: what a flow that remembers its route (`Route`)
    /// checks its memory against.
    version: u32,
    /// The last inserts' and removes' prefixes, for a route remembered in
    /// an older version to be kept where none of them covers its key.
    recent: RecentChanges<K>,
    /// The full-length prefixes, by hash, where `K::HOSTS_BY_HASH`.
    hosts: HostRoutes<K>,
    /// Prefixes longer than the last level's start and shorter than a
    /// host (IPv6's /121-/127): while there are none, the trie can drop a
    /// host's leaf on its own (`follow_spills`).
    near_hosts: u32,
    /// Where nodes copied or freed go and new ones come from: the
    /// writer's, lent for each change (`with_pool`). A table changed
    /// without one (tests) keeps its own, never trimmed.
    pool: NodePool,
    /// The nodes and singles written since the writer copied the table
    /// for a batch (`record_writes`), for the spare made of the table that
    /// batch copied to take only those (`copy_from`); `None` when no
    /// record was asked for, or once it passed `MAX_RECORDED_WRITES`.
    writes: Option<Writes>,
}

/// Node and single slots a table's changes wrote since its version was
/// `since`, and its targets' positions.
#[derive(Clone, Default)]
struct Writes {
    since: u32,
    nodes: Vec<u32>,
    singles: Vec<u32>,
    /// `None` once past `MAX_RECORDED_WRITES` on their own, so that a big
    /// batch to one shared target (every insert counts it again) leaves
    /// the nodes' record whole.
    targets: Option<TargetWrites>,
}

/// Target positions a table's changes wrote (an entry or its count), and
/// how far down its list of free positions the changes took it: a list
/// only pushed and popped at its end, so the positions below stayed as
/// they were.
#[derive(Clone, Default)]
struct TargetWrites {
    positions: Vec<u32>,
    free_kept: usize,
}

/// A slot a change wrote.
enum Wrote {
    Node(u32),
    Single(u32),
}

/// Most writes recorded: past it a copy compares every slot, which costs
/// about what copying this many does.
const MAX_RECORDED_WRITES: usize = 4096;

/// Most changes a table remembers (`RecentChanges`). A route remembered
/// before the oldest is looked up again, as before any was kept.
pub const RECENT_CHANGES: usize = 16;

/// The prefixes of a table's last changes, each with the version it made.
/// A key's longest match depends only on the prefixes that cover the key,
/// so a route looked up in an older version still holds in this one if no
/// later change covered its key: the leaf it names stays interned for the
/// prefix that still holds it. In a cluster where pods come and go on
/// other nodes (a /32 added or deleted on every node each time), that
/// spares every other flow its route lookup after each change.
#[derive(Clone, PartialEq)]
struct RecentChanges<K: FibKey> {
    /// (the version the change made, its prefix, its length), the oldest
    /// at `next` once full.
    changes: [(u32, K, u8); RECENT_CHANGES],
    len: u8,
    next: u8,
    /// The oldest version from which every later change is kept.
    since: u32,
}

impl<K: FibKey> RecentChanges<K> {
    fn new(version: u32) -> Self {
        RecentChanges { changes: [(0, K::zero(), 0); RECENT_CHANGES], len: 0, next: 0, since: version }
    }

    /// Notes that the change of `key/len` made `version`.
    fn record(&mut self, version: u32, key: K, len: u8) {
        let at = usize::from(self.next);
        if usize::from(self.len) == RECENT_CHANGES {
            // Forgotten: routes remembered before the oldest change kept.
            self.since = self.changes[at].0;
        } else {
            self.len += 1;
        }
        self.changes[at] = (version, key.mask(len), len);
        self.next = ((at + 1) % RECENT_CHANGES) as u8;
    }

    /// True if no change kept after `version` covered `key`, and every
    /// change since `version` is kept.
    fn untouched_since(&self, version: u32, key: K) -> bool {
        for k in 1..=usize::from(self.len) {
            let (made, prefix, len) = self.changes[(usize::from(self.next) + RECENT_CHANGES - k) % RECENT_CHANGES];
            if made == version {
                return true;
            }
            if key.mask(len) == prefix {
                return false;
            }
        }
        version == self.since
    }
}

/// Where a lookup ended: a leaf value of one table version, which names
/// its target without walking the trie again (`Fib::route`). The data
/// path keeps it in a flow, so that the flow's later packets skip the
/// route lookup while the table is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The table version the lookup was made in (`Fib::version`).
    pub version: u32,
    /// The leaf value: 0 for no route, else the target's index + 1.
    pub leaf: u32,
}

/// The source of table versions. 32 bits wrap after four billion route
/// changes; a flow could only mistake an old version for the current one
/// if it saw no packet through all of them, and idle flows are aged out
/// long before (at 1 M changes a second, a wrap takes 71 minutes).
static VERSIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn next_version() -> u32 {
    loop {
        // 0 stays free: a flow that has never looked its route up.
        let v = VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if v != 0 {
            return v;
        }
    }
}

impl<K: FibKey> Default for Fib<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: FibKey> Fib<K> {
    /// An empty table: one root node.
    pub fn new() -> Self {
        let version = next_version();
        Fib {
            nodes: vec![Arc::new(Node { slots: [EMPTY; FANOUT], inherited: EMPTY })],
            free_nodes: Vec::new(),
            vacant: Arc::new(Node { slots: [EMPTY; FANOUT], inherited: EMPTY }),
            singles: Vec::new(),
            free_singles: Vec::new(),
            targets: Vec::new(),
            networks: Vec::new(),
            target_refs: Vec::new(),
            target_index: TargetIndex::default(),
            free_targets: Vec::new(),
            version,
            recent: RecentChanges::new(version),
            hosts: HostRoutes::default(),
            near_hosts: 0,
            pool: NodePool::new(),
            writes: None,
        }
    }

    /// The table's version: see `Route`.
    #[inline(always)]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The target of a lookup made in this version (`lookup_batch_routes`).
    #[inline(always)]
    pub fn target(&self, route: Route) -> Option<RouteTarget> {
        debug_assert_eq!(route.version, self.version, "a route from another version");
        self.target_of(route.leaf)
    }

    /// The target `route` names, if it was looked up in this version; else
    /// `None`, and it must be taken again (`route_again`).
    #[inline(always)]
    pub fn recall(&self, route: Route) -> Option<Option<RouteTarget>> {
        (route.version == self.version).then(|| self.target_of(route.leaf))
    }

    /// `route`, looked up for `key` in an older version, made this
    /// version's if no change since covered `key` (`RecentChanges`); else
    /// `key` looked up again. Either way a route of this version, for the
    /// caller to remember.
    pub fn route_again(&self, route: Route, key: K) -> Route {
        self.carried_over(route, key).unwrap_or_else(|| self.lookup_route(key))
    }

    /// `route`, looked up for `key` in an older version, made this
    /// version's if no change since covered `key`: `route_again` without
    /// the lookup, for a caller that batches those.
    #[inline]
    pub fn carried_over(&self, route: Route, key: K) -> Option<Route> {
        self.recent.untouched_since(route.version, key).then_some(Route { version: self.version, ..route })
    }

    #[inline(always)]
    fn target_of(&self, leaf: u32) -> Option<RouteTarget> {
        if leaf == 0 {
            None
        } else {
            self.targets.get(leaf as usize - 1).copied()
        }
    }

    /// The longest-prefix match for `key`.
    #[inline]
    pub fn lookup(&self, key: K) -> Option<RouteTarget> {
        if K::HOSTS_BY_HASH {
            return self.lookup_hosts_first(key);
        }
        self.walk(key)
    }

    /// `lookup` for a family whose full-length prefixes are found by hash
    /// (`HostRoutes`): asked first, then the trie. Out of line: `lookup` is
    /// inlined into the general vector, and the probe there, in IPv6's
    /// copy, moved IPv4's lane by 14-18 instructions a packet (callgrind).
    #[inline(never)]
    fn lookup_hosts_first(&self, key: K) -> Option<RouteTarget> {
        let host = self.hosts.leaf(key);
        if host != EMPTY {
            return self.target_of(host);
        }
        self.walk(key)
    }

    /// The trie's walk for `key`.
    #[inline(always)]
    fn walk(&self, key: K) -> Option<RouteTarget> {
        let mut node = &self.nodes[0];
        let mut level = 0;
        loop {
            let e = node.slots[key.byte(level)];
            if e & CHILD != 0 {
                // A single's index, flagged, is past every node: the
                // bounds check that a node step pays anyway finds it.
                match self.nodes.get((e & !CHILD) as usize) {
                    Some(child) => node = child,
                    None if K::SINGLES => {
                        let single = self.singles.get((e & INDEX_MASK) as usize)?;
                        let e = single.slot(key.byte(level + 1));
                        if e & CHILD != 0 {
                            return self.walk_on(key, e, level + 1);
                        }
                        return self.target_of(e & VALUE_MASK);
                    }
                    None => return None,
                }
                level += 1;
                continue;
            }
            return self.target_of(e & VALUE_MASK);
        }
    }

    /// `walk` from child entry `e` in the node (or single) at `level`, met
    /// past a pass. Out of line: only IPv6 tables have passes, and `walk`
    /// is inlined where IPv4's lookups run.
    #[inline(never)]
    fn walk_on(&self, key: K, mut e: u32, mut level: usize) -> Option<RouteTarget> {
        while e & CHILD != 0 {
            level += 1;
            let byte = *key.be_bytes().as_ref().get(level)?;
            e = match self.nodes.get((e & !CHILD) as usize) {
                Some(node) => node.slots[usize::from(byte)],
                None => self.singles.get((e & INDEX_MASK) as usize)?.slot(usize::from(byte)),
            };
        }
        self.target_of(e & VALUE_MASK)
    }

    /// The network of `key`'s longest-prefix match (`RouteEntry::network`):
    /// the virtual network a policy takes the address to be in. Asked only
    /// when a flow is decided, so it walks the trie as a batch of one
    /// rather than through a second copy of `lookup`'s walk (`lookup` is
    /// inlined into the vector, where any change to it moved every case's
    /// count: a shared walk cost local forwarding 17 instructions a packet).
    pub fn network_of(&self, key: K) -> Option<VrfId> {
        self.network_at(self.lookup_route(key))
    }

    /// The network of the route a lookup ended at (`network_of`), for a
    /// caller that looked it up with others (`lookup_batch_routes`).
    pub fn network_at(&self, route: Route) -> Option<VrfId> {
        route.leaf.checked_sub(1).and_then(|i| self.networks.get(i as usize)).copied()
    }

    /// Where `key`'s lookup ends in this version (`Route`), for a caller
    /// that keeps it: a batch of one (`lookup_batch_routes`), off the
    /// vector's way (`network_of` says why not through `lookup`).
    pub fn lookup_route(&self, key: K) -> Route {
        let mut route = [Route { version: 0, leaf: 0 }];
        Self::lookup_batch_routes(&[self], &[key], &mut route);
        route[0]
    }

    /// Looks up many keys, each in its own table, one trie level at a time.
    ///
    /// A single lookup is a chain of dependent loads; when its nodes are not
    /// in cache each load waits on memory in turn. Advancing a whole vector
    /// of keys level by level makes the loads of different keys independent,
    /// so the CPU overlaps their misses. `out[i]` gets `fibs[i]`'s match
    /// for `keys[i]`. At most `BATCH` keys; the rest are left untouched.
    #[inline]
    pub fn lookup_batch(fibs: &[&Fib<K>], keys: &[K], out: &mut [Option<RouteTarget>]) {
        let mut routes = [Route { version: 0, leaf: 0 }; BATCH];
        let n = fibs.len().min(keys.len()).min(out.len()).min(BATCH);
        Self::lookup_batch_routes(&fibs[..n], &keys[..n], &mut routes[..n]);
        for i in 0..n {
            out[i] = fibs[i].target_of(routes[i].leaf);
        }
    }

    /// `lookup_batch`, answering with where each lookup ended, for
    /// callers that keep it (`Route`); `fibs[i].target(out[i])` is the target.
    #[inline]
    pub fn lookup_batch_routes(fibs: &[&Fib<K>], keys: &[K], out: &mut [Route]) {
        let n = fibs.len().min(keys.len()).min(out.len()).min(BATCH);
        let (fibs, keys, out) = (&fibs[..n], &keys[..n], &mut out[..n]);
        // Each key's current slot entry; a leaf once its walk is over.
        let mut entry = [EMPTY; BATCH];
        // Each key's bytes: a byte a level, read from memory, where an
        // IPv6 key's shift by a varying count took 8 instructions (callgrind).
        let mut bytes = [K::zero().be_bytes(); BATCH];
        let mut pending = 0u64;
        for i in 0..n {
            bytes[i] = keys[i].be_bytes();
            let root = fibs[i].nodes[0].slots[keys[i].byte(0)];
            // A full-length prefix is the longest match: no walk.
            let host = if K::HOSTS_BY_HASH { fibs[i].hosts.leaf(keys[i]) } else { EMPTY };
            entry[i] = if host != EMPTY { host } else { root };
            pending |= u64::from(entry[i] & CHILD != 0) << i;
        }
        let mut level = 1;
        while pending != 0 {
            let mut next = 0u64;
            let mut left = pending;
            while left != 0 {
                let i = left.trailing_zeros() as usize;
                left &= left - 1;
                let e = match (fibs[i].nodes.get((entry[i] & !CHILD) as usize), bytes[i].as_ref().get(level)) {
                    (Some(node), Some(&b)) => node.slots[usize::from(b)],
                    // A single, found as `walk` finds one.
                    (None, Some(&b)) if K::SINGLES => {
                        fibs[i].singles.get((entry[i] & INDEX_MASK) as usize).map_or(EMPTY, |s| s.slot(usize::from(b)))
                    }
                    _ => EMPTY,
                };
                entry[i] = e;
                next |= u64::from(e & CHILD != 0) << i;
            }
            pending = next;
            level += 1;
        }
        for i in 0..n {
            out[i] = Route { version: fibs[i].version, leaf: entry[i] & VALUE_MASK };
        }
    }

    /// The longest-prefix match with the matched prefix length, for
    /// inspection (`vrctl rt get`). Same answer as `lookup`.
    pub fn lookup_with_len(&self, key: K) -> Option<(RouteTarget, u8)> {
        if K::HOSTS_BY_HASH {
            let host = self.hosts.leaf(key);
            if host != EMPTY {
                return self.target_of(host).map(|t| (t, K::BITS));
            }
        }
        let (e, level, inherited) = self.trie_leaf(key);
        let v = e & VALUE_MASK;
        if v == 0 {
            return None;
        }
        let target = self.targets[v as usize - 1];
        // A depth of 0 means the prefix came from an upper level: climb
        // through the nodes' inherited leaves until one says how deep.
        let mut rel = rel_of(e);
        let mut at = level;
        while rel == 0 && at > 0 {
            rel = rel_of(inherited[at]);
            at -= 1;
        }
        let len = if rel == 0 { 0 } else { (at * STRIDE) as u8 + rel };
        Some((target, len))
    }

    /// The trie's leaf entry for `key`, hosts held by hash aside; the level
    /// of the node (or single) it is in; and each level's leaf from above,
    /// down to that one.
    fn trie_leaf(&self, key: K) -> (u32, usize, [u32; 16]) {
        let mut inherited = [EMPTY; 16];
        inherited[0] = self.nodes[0].inherited;
        let mut e = self.nodes[0].slots[key.byte(0)];
        let mut level = 0;
        while e & CHILD != 0 {
            level += 1;
            if e & SINGLE != 0 {
                let single = self.single(e);
                inherited[level] = single.inherited;
                e = single.slot(key.byte(level));
            } else {
                let node = &self.nodes[(e & !CHILD) as usize];
                inherited[level] = node.inherited;
                e = node.slots[key.byte(level)];
            }
        }
        (e, level, inherited)
    }

    /// The longest prefix shorter than `len` that covers `key`, with its
    /// length and entry: what a delete of `key/len` hands the trie
    /// (`remove`). The trie keeps the covers from the levels above
    /// (`cover_from_above`) and mostly shows those of `len`'s own level
    /// (`cover_in_level`); `held` answers for a length the slots cannot
    /// tell about (the writer's list of prefixes: the entry of `key`'s
    /// prefix of that length, if held).
    pub(crate) fn covering(
        &self,
        key: K,
        len: u8,
        held: impl Fn(u8) -> Option<RouteEntry>,
    ) -> Option<(u8, RouteEntry)> {
        if len == 0 {
            return None;
        }
        let (level, rel) = place(len);
        self.cover_in_level(key, level, rel, held).or_else(|| self.cover_from_above(key, len))
    }

    /// The longest prefix of level `level`, shallower there than `rel`,
    /// that covers `key`. For each depth `q` from the deepest, the half of
    /// the depth-`q` block of the level's node that `key` is not in tells:
    /// a slot there as deep as `q` is the prefix (no other of that depth
    /// holds it), one shallower says there is none. Only where longer
    /// prefixes wrote over the whole half (a /23 whose other /24 is
    /// there too) is `held` asked.
    fn cover_in_level(
        &self,
        key: K,
        level: usize,
        rel: u8,
        held: impl Fn(u8) -> Option<RouteEntry>,
    ) -> Option<(u8, RouteEntry)> {
        if rel <= 1 {
            return None;
        }
        // The node (or single) of `level` on `key`'s path; none, and no
        // prefix of that level covers `key`.
        let mut e = CHILD; // the root, as a child entry naming node 0
        for l in 0..level {
            e = self.slot_of(e, key.byte(l));
            if e & CHILD == 0 {
                return None;
            }
        }
        let byte = key.byte(level);
        let entry_of = |leaf: u32| {
            let i = (leaf & VALUE_MASK).checked_sub(1)? as usize;
            Some(RouteEntry { target: *self.targets.get(i)?, network: *self.networks.get(i)? })
        };
        'depth: for q in (1..rel).rev() {
            let half = FANOUT >> (q + 1);
            let other = (byte & !(2 * half - 1)) | ((byte & half) ^ half);
            let q_len = (level * STRIDE) as u8 + q;
            for j in other..other + half {
                let s = self.slot_of(e, j);
                let leaf = if s & CHILD != 0 { self.inherited_of(s) } else { s };
                match rel_of(leaf).cmp(&q) {
                    std::cmp::Ordering::Equal => return entry_of(leaf).map(|entry| (q_len, entry)),
                    std::cmp::Ordering::Less => continue 'depth,
                    std::cmp::Ordering::Greater => {}
                }
            }
            if let Some(entry) = held(q_len) {
                return Some((q_len, entry));
            }
        }
        None
    }

    /// Slot `byte` of the node or single that child entry `e` names.
    fn slot_of(&self, e: u32, byte: usize) -> u32 {
        if e & SINGLE != 0 {
            self.single(e).slot(byte)
        } else {
            self.nodes[(e & !CHILD) as usize].slots[byte]
        }
    }

    /// The longest prefix of the levels above `len`'s that covers `key`,
    /// with its length and entry: the leaf from above that the nodes on
    /// `key`'s path keep, each with its depth in its own level.
    fn cover_from_above(&self, key: K, len: u8) -> Option<(u8, RouteEntry)> {
        if len == 0 {
            return None;
        }
        let (level, _) = place(len);
        let (e, deepest, inherited) = self.trie_leaf(key);
        // `(leaf, at)`: the leaf a node of level `at` takes from above, its
        // depth counted in level `at - 1`; a walk that ended above `level`
        // ended on such a leaf.
        let (mut leaf, mut at) = if deepest >= level { (inherited[level], level) } else { (e, deepest + 1) };
        // A leaf of depth 0 was itself taken from above, or is the root's
        // (`/0`).
        while rel_of(leaf) == 0 && at > 0 {
            at -= 1;
            leaf = inherited[at];
        }
        let i = (leaf & VALUE_MASK).checked_sub(1)? as usize;
        let cover_len = if at == 0 { 0 } else { ((at - 1) * STRIDE) as u8 + rel_of(leaf) };
        let entry = RouteEntry { target: *self.targets.get(i)?, network: *self.networks.get(i)? };
        Some((cover_len, entry))
    }

    /// The single that child slot entry `e` names.
    fn single(&self, e: u32) -> &Single {
        &self.singles[(e & INDEX_MASK) as usize]
    }

    /// The targets of the table's routes, each once however many prefixes
    /// share it: where its routes go, in as many steps as there are
    /// targets, far fewer than prefixes where they share next hops.
    pub fn targets_in_use(&self) -> impl Iterator<Item = RouteTarget> + '_ {
        self.targets.iter().zip(&self.target_refs).filter(|&(_, &refs)| refs > 0).map(|(&target, _)| target)
    }

    /// Bytes this table holds in nodes and targets (approximate).
    pub fn memory_bytes(&self) -> usize {
        let live = self.nodes.len() - self.free_nodes.len();
        live * NODE_BYTES + self.list_bytes() + self.hosts.shared_bytes()
    }

    /// Bytes of this table's own lists (node and host page pointers,
    /// targets, singles), leaving out the nodes and host pages, which a
    /// copy shares with the table it was copied from (`copy_from`).
    pub fn list_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Arc<Node>>()
            + self.hosts.list_bytes()
            + self.targets.capacity() * (std::mem::size_of::<RouteTarget>() + std::mem::size_of::<VrfId>() + 4)
            + self.target_index.bytes()
            + self.singles.capacity() * std::mem::size_of::<Single>()
    }

    /// Full-length prefixes found by hash (`HostRoutes`), and how many of
    /// those only the trie finds, their bucket being full.
    pub fn host_routes(&self) -> (usize, usize) {
        (self.hosts.len(), self.hosts.spilled())
    }

    /// Number of trie nodes in use, singles not counted.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free_nodes.len()
    }

    /// Pages of the full-length prefixes' hash (`HostRoutes`), a kilobyte
    /// each as a node is.
    pub fn host_pages(&self) -> usize {
        self.hosts.pages()
    }

    /// Number of nodes kept as singles.
    pub fn single_count(&self) -> usize {
        self.singles.len() - self.free_singles.len()
    }

    fn intern(&mut self, e: RouteEntry) -> u32 {
        if let Some(i) = self.target_index.find(e, &self.targets, &self.networks) {
            self.target_refs[i as usize] += 1;
            self.wrote_target(i);
            return i + 1;
        }
        let i = match self.free_targets.pop() {
            Some(i) => {
                self.targets[i as usize] = e.target;
                self.networks[i as usize] = e.network;
                self.target_refs[i as usize] = 1;
                i
            }
            None => {
                self.targets.push(e.target);
                self.networks.push(e.network);
                self.target_refs.push(1);
                (self.targets.len() - 1) as u32
            }
        };
        self.target_index.insert(i, &self.targets, &self.networks);
        self.wrote_target(i);
        i + 1
    }

    fn release(&mut self, value: u32) {
        let i = (value - 1) as usize;
        self.target_refs[i] -= 1;
        if self.target_refs[i] == 0 {
            self.target_index.remove(i as u32, &self.targets, &self.networks);
            self.free_targets.push(i as u32);
        }
        self.wrote_target(i as u32);
    }

    fn value_of(&self, e: RouteEntry) -> u32 {
        self.target_index.find(e, &self.targets, &self.networks).map_or(EMPTY, |i| i + 1)
    }

    fn alloc_node(&mut self, inherited: u32) -> u32 {
        // Lookups take an index past the nodes for a single's.
        assert!(self.nodes.len() < SINGLE as usize, "trie nodes exhausted");
        let fill = inherited & VALUE_MASK;
        let node = self.pool.make(&Node { slots: [fill; FANOUT], inherited });
        let idx = take_slot(&mut self.nodes, &mut self.free_nodes, node);
        self.wrote(Wrote::Node(idx));
        idx
    }

    /// Starts the record of the nodes this table's changes write: the
    /// writer calls it on the copy it makes for a batch.
    pub(crate) fn record_writes(&mut self) {
        let targets = TargetWrites { positions: Vec::new(), free_kept: self.free_targets.len() };
        self.writes = Some(Writes { since: self.version, targets: Some(targets), ..Writes::default() });
    }

    /// Records target position `i` written: its entry or its count.
    fn wrote_target(&mut self, i: u32) {
        let Some(w) = &mut self.writes else { return };
        let Some(t) = &mut w.targets else { return };
        t.free_kept = t.free_kept.min(self.free_targets.len());
        // A run of routes to one target (a label each is not) counts it
        // again and again: one record does.
        if t.positions.last() == Some(&i) {
            return;
        }
        if t.positions.len() >= MAX_RECORDED_WRITES {
            w.targets = None;
            return;
        }
        t.positions.push(i);
    }

    fn wrote(&mut self, slot: Wrote) {
        let Some(w) = &mut self.writes else { return };
        if w.nodes.len() + w.singles.len() >= MAX_RECORDED_WRITES {
            self.writes = None;
            return;
        }
        match slot {
            Wrote::Node(i) => w.nodes.push(i),
            Wrote::Single(i) => w.singles.push(i),
        }
    }

    /// Takes a slot for a new single.
    fn new_single(&mut self, single: Single) -> u32 {
        let i = take_slot(&mut self.singles, &mut self.free_singles, single);
        self.wrote(Wrote::Single(i));
        i
    }

    /// Single `i`, to change.
    fn single_mut(&mut self, i: u32) -> &mut Single {
        self.wrote(Wrote::Single(i));
        &mut self.singles[i as usize]
    }

    /// Frees node `idx`, which no slot names any more.
    fn free_node(&mut self, idx: u32) {
        let node = std::mem::replace(&mut self.nodes[idx as usize], Arc::clone(&self.vacant));
        self.pool.retire(node);
        self.free_nodes.push(idx);
        self.wrote(Wrote::Node(idx));
    }

    /// Node `idx`, to change: copied first if a snapshot shares it.
    fn node_mut(&mut self, idx: u32) -> &mut Node {
        if Arc::get_mut(&mut self.nodes[idx as usize]).is_none() {
            self.wrote(Wrote::Node(idx));
            let slot = &mut self.nodes[idx as usize];
            let copy = self.pool.make(slot);
            self.pool.retire(std::mem::replace(slot, copy));
        }
        Arc::get_mut(&mut self.nodes[idx as usize]).expect("a node just copied is this table's alone")
    }

    /// Makes this table a copy of `src`, as `clone` would, keeping its own
    /// allocations and taking a reference only to the nodes that differ.
    /// A table from a freed snapshot, made a copy of the current one, costs
    /// the writer what one batch changed, where a clone takes a reference,
    /// a locked increment, to every node, whatever the batch: a third of a
    /// millisecond a batch, on average, while a VRF grew to 100,000 routes
    /// one a batch (`vrpktgen tables --routes 100000 --batch 1`).
    pub(crate) fn copy_from(&mut self, src: &Self) {
        // Every field named: one added later must be copied here too.
        let Fib {
            nodes,
            free_nodes,
            vacant,
            singles,
            free_singles,
            targets,
            networks,
            target_refs,
            target_index,
            free_targets,
            version,
            recent,
            hosts,
            near_hosts,
            pool: _,
            writes,
        } = src;
        // This table is the one `src` was copied from for its last batch
        // if `src`'s record began at this table's version (never reused):
        // then only the slots that batch wrote differ.
        let written = writes.as_ref().filter(|w| w.since == self.version);
        copy_slots(&mut self.nodes, nodes, written.map(|w| &w.nodes[..]), Arc::ptr_eq);
        copy_slots(&mut self.singles, singles, written.map(|w| &w.singles[..]), |a, b| a == b);
        self.writes.clone_from(writes);
        self.free_nodes.clone_from(free_nodes);
        self.vacant = Arc::clone(vacant);
        self.free_singles.clone_from(free_singles);
        match written.and_then(|w| w.targets.as_ref()) {
            Some(t) if self.targets.len() <= targets.len() => self.copy_targets(src, t),
            _ => {
                self.targets.clone_from(targets);
                self.networks.clone_from(networks);
                self.target_refs.clone_from(target_refs);
                self.target_index.clone_from(target_index);
                self.free_targets.clone_from(free_targets);
            }
        }
        self.version = *version;
        self.recent = recent.clone();
        self.hosts.copy_from(hosts);
        self.near_hosts = *near_hosts;
    }

    /// `copy_from`'s part for the targets where `src`'s record of them
    /// (`written`) began at this table's version: only the positions it
    /// names are copied, and indexed again. A table with a label per
    /// prefix has a target per prefix, and copying them all for every
    /// batch was most of a one-route batch.
    fn copy_targets(&mut self, src: &Self, written: &TargetWrites) {
        let positions = &written.positions[..];
        // Out with the entries being overwritten first: an entry may have
        // moved from one written position to another.
        for &i in positions {
            if self.target_refs.get(i as usize).is_some_and(|&refs| refs > 0) {
                self.target_index.remove(i, &self.targets, &self.networks);
            }
        }
        copy_slots(&mut self.targets, &src.targets, Some(positions), |a, b| a == b);
        copy_slots(&mut self.networks, &src.networks, Some(positions), |a, b| a == b);
        copy_slots(&mut self.target_refs, &src.target_refs, Some(positions), |a, b| a == b);
        for &i in positions {
            // A position written twice (not in a row) is named twice.
            if self.target_refs[i as usize] > 0
                && self
                    .target_index
                    .find(TargetIndex::entry(i, &self.targets, &self.networks), &self.targets, &self.networks)
                    .is_none()
            {
                self.target_index.insert(i, &self.targets, &self.networks);
            }
        }
        self.free_targets.truncate(written.free_kept);
        self.free_targets.extend_from_slice(&src.free_targets[written.free_kept..]);
    }

    /// True if this table is `other` as `copy_from` would make it: the
    /// same nodes and host pages, shared, and equal lists. For the
    /// writer's debug check that a spare of `other`'s version is a copy of
    /// it (`change_fib`).
    #[cfg(debug_assertions)]
    pub(crate) fn is_copy_of(&self, other: &Self) -> bool {
        // Every field named, as in `copy_from`.
        let Fib {
            nodes,
            free_nodes,
            vacant,
            singles,
            free_singles,
            targets,
            networks,
            target_refs,
            target_index,
            free_targets,
            version,
            recent,
            hosts,
            near_hosts,
            pool: _,
            writes: _,
        } = other;
        self.nodes.len() == nodes.len()
            && self.nodes.iter().zip(nodes).all(|(a, b)| Arc::ptr_eq(a, b))
            && self.free_nodes == *free_nodes
            && Arc::ptr_eq(&self.vacant, vacant)
            && self.singles == *singles
            && self.free_singles == *free_singles
            && self.targets == *targets
            && self.networks == *networks
            && self.target_refs == *target_refs
            && self.target_index.is_copy_of(target_index, targets, networks)
            && self.free_targets == *free_targets
            && self.version == *version
            && self.recent == *recent
            && self.hosts.is_copy_of(hosts)
            && self.near_hosts == *near_hosts
    }

    /// Makes the changes in `f` with `pool`'s nodes to hand, and hands the
    /// nodes they take out back to it.
    pub(crate) fn with_pool<R>(&mut self, pool: &mut NodePool, f: impl FnOnce(&mut Self) -> R) -> R {
        std::mem::swap(&mut self.pool, pool);
        let r = f(self);
        std::mem::swap(&mut self.pool, pool);
        r
    }

    /// The leaf from above of the node or single that slot entry `child`
    /// names.
    fn inherited_of(&self, child: u32) -> u32 {
        if child & SINGLE != 0 {
            self.single(child).inherited
        } else {
            self.nodes[(child & !CHILD) as usize].inherited
        }
    }

    /// Sets the best-from-above leaf of the node or single that slot entry
    /// `child` names to `inherited`, rewriting every slot that took its
    /// value from above, down through the subtree.
    fn set_inherited(&mut self, child: u32, inherited: u32) {
        if child & SINGLE != 0 {
            let single = self.single_mut(child & INDEX_MASK);
            single.inherited = inherited;
            // A pass's child takes the leaf from above through it.
            let under = single.leaf;
            if under & CHILD != 0 && rel_of(self.inherited_of(under)) == 0 {
                self.set_inherited(under, inherited & VALUE_MASK);
            }
            return;
        }
        let value = inherited & VALUE_MASK;
        let node = self.node_mut(child & !CHILD);
        node.inherited = inherited;
        let mut children = [0u32; FANOUT];
        let mut n = 0;
        for s in node.slots.iter_mut() {
            if *s & CHILD != 0 {
                children[n] = *s;
                n += 1;
            } else if rel_of(*s) == 0 {
                *s = value;
            }
        }
        for &c in &children[..n] {
            if rel_of(self.inherited_of(c)) == 0 {
                self.set_inherited(c, value);
            }
        }
    }

    /// The child entry `at` holds.
    fn link(&self, at: Link) -> u32 {
        match at {
            Link::Slot(node, slot) => self.nodes[node as usize].slots[slot],
            Link::Pass(single) => self.singles[single as usize].leaf,
        }
    }

    /// Puts child entry (or leaf) `e` where `at` says.
    fn set_link(&mut self, at: Link, e: u32) {
        match at {
            Link::Slot(node, slot) => self.node_mut(node).slots[slot] = e,
            Link::Pass(single) => self.single_mut(single).leaf = e,
        }
    }

    /// Walks to the node at `level` on `key`'s path to put `key`'s leaf
    /// `new` in its slots `start..start + span`, creating nodes as needed,
    /// going through the passes on the way and expanding other singles;
    /// with where the parent names it (none for the root). `None` if the
    /// walk met a leaf where a family that keeps singles needed nodes:
    /// then the leaf is in singles made for it (`grow_singles`), and no
    /// node is left to change.
    fn descend_creating(
        &mut self,
        key: K,
        level: usize,
        start: usize,
        span: usize,
        new: u32,
    ) -> Option<(u32, Option<Link>)> {
        let mut idx = 0u32;
        let mut parent = None;
        let mut l = 0;
        while l < level {
            let mut at = Link::Slot(idx, key.byte(l));
            let mut e = self.link(at);
            // A pass that leads the key's way is not taken apart: the
            // levels of a sparse prefix's path stay singles.
            while K::SINGLES && e & SINGLE != 0 && e & CHILD != 0 && l + 1 < level {
                let pass = *self.single(e);
                if pass.leaf & CHILD == 0 || usize::from(pass.first) != key.byte(l + 1) {
                    break;
                }
                at = Link::Pass(e & INDEX_MASK);
                e = pass.leaf;
                l += 1;
            }
            idx = if e & CHILD == 0 {
                if K::SINGLES {
                    self.grow_singles(at, e, key, l + 1, level, start, span, new);
                    // The node above, taken apart from a single of one
                    // leaf where the new ones hang, may be a pass now.
                    if let Some(above) = parent {
                        self.compact(above);
                    }
                    return None;
                }
                let child = self.alloc_node(e);
                self.set_link(at, CHILD | child);
                child
            } else if e & SINGLE != 0 {
                self.expand(at)
            } else {
                e & !CHILD
            };
            parent = Some(at);
            l += 1;
        }
        Some((idx, parent))
    }

    /// Puts leaf `new`, over slots `start..start + span` of the node at
    /// `level` on `key`'s path, where `at`, naming the node at level
    /// `from`, holds leaf `above`: in a single there, and a pass at each
    /// level between, never a node. A sparse prefix's nodes, made only to
    /// be folded into singles, cost a kilobyte to fill and another to look
    /// through, at each level.
    #[allow(clippy::too_many_arguments)]
    fn grow_singles(
        &mut self,
        at: Link,
        above: u32,
        key: K,
        from: usize,
        level: usize,
        start: usize,
        span: usize,
        new: u32,
    ) {
        // The level under `at` takes its leaf from above; the levels below
        // it take that leaf's value, from slots of no depth.
        let inherited = |l: usize| if l == from { above } else { above & VALUE_MASK };
        let bottom = Single { first: start as u16, span: span as u16, leaf: new, inherited: inherited(level) };
        let mut child = CHILD | SINGLE | self.new_single(bottom);
        for l in (from..level).rev() {
            let pass = Single { first: key.byte(l) as u16, span: 1, leaf: child, inherited: inherited(l) };
            child = CHILD | SINGLE | self.new_single(pass);
        }
        self.set_link(at, child);
    }

    /// Puts the node that the single `at` names in its place, to be
    /// changed, and returns it.
    fn expand(&mut self, at: Link) -> u32 {
        let e = self.link(at);
        let single = *self.single(e);
        self.free_singles.push(e & INDEX_MASK);
        let idx = self.alloc_node(single.inherited);
        let first = usize::from(single.first);
        self.node_mut(idx).slots[first..first + usize::from(single.span)].fill(single.leaf);
        self.set_link(at, CHILD | idx);
        idx
    }

    /// Keeps the node `at` names as a `Single` if it has no children and
    /// one prefix of its own, or one child and nothing else, where the
    /// family keeps singles.
    fn compact(&mut self, at: Link) {
        let e = self.link(at);
        if !K::SINGLES || e & CHILD == 0 || e & SINGLE != 0 {
            return;
        }
        let idx = e & !CHILD;
        let node = &self.nodes[idx as usize];
        let own = |x: u32| x & CHILD != 0 || rel_of(x) != 0;
        let Some(first) = node.slots.iter().position(|&x| own(x)) else { return };
        let leaf = node.slots[first];
        // A child takes one slot; a child's entry holds no depth.
        let span = if leaf & CHILD != 0 { 1 } else { FANOUT >> rel_of(leaf) };
        if first % span != 0
            || node.slots[first..first + span].iter().any(|&x| x != leaf)
            || node.slots[first + span..].iter().any(|&x| own(x))
        {
            return;
        }
        let single = Single { first: first as u16, span: span as u16, leaf, inherited: node.inherited };
        let i = self.new_single(single);
        self.set_link(at, CHILD | SINGLE | i);
        self.free_node(idx);
    }

    /// Starts fetching the node that a change of `key/len` will write,
    /// without waiting for it: a writer that calls this some changes ahead
    /// finds the node in cache. In a table of a million routes the bottom
    /// nodes are 60-odd MiB read at random, and the miss on each was the
    /// largest single cost of loading it (`vrpktgen tables`, perf). Only
    /// for a node at most two levels down: the root and its children are
    /// few and stay cached, so the walk there costs little. Deeper, as an
    /// IPv6 /48 is, the walk stalls on the same misses as the change
    /// itself, and prefetching measured slower (`--routes6 100000`).
    pub(crate) fn prefetch_change(&self, key: K, len: u8) {
        let (level, _) = place(len);
        if level > 2 {
            return;
        }
        let mut node = &self.nodes[0];
        for l in 0..level {
            let e = node.slots[key.byte(l)];
            if e & CHILD == 0 || e & SINGLE != 0 {
                return;
            }
            let Some(child) = self.nodes.get((e & !CHILD) as usize) else { return };
            node = child;
        }
        // All of it: the change copies the node if a snapshot shares it,
        // as it mostly does.
        node.prefetch();
    }

    /// Installs `key/len → entry`, replacing the same prefix's old entry
    /// `old` if there was one. `key` has no bits set past `len`.
    pub(crate) fn insert(&mut self, key: K, len: u8, entry: RouteEntry, old: Option<RouteEntry>) {
        self.version = next_version();
        self.recent.record(self.version, key, len);
        let value = self.intern(entry);
        if let Some(o) = old {
            let ov = self.value_of(o);
            self.release(ov);
        }
        if K::HOSTS_BY_HASH && len == K::BITS {
            // Held in its bucket, a host needs no trie nodes: a lookup
            // that finds it there never walks (`HostRoutes`). The trie
            // takes what spilled, and keeps current a host it took before.
            let in_trie = self.trie_holds_host(key);
            let mut changes = SpillChanges::default();
            self.hosts.insert(key, value, &mut changes);
            if in_trie && !changes.spilled.iter().any(|&(k, _)| k == key) {
                changes.spilled.push((key, value));
            }
            self.follow_spills(changes);
            return;
        }
        if old.is_none() && Self::near_host(len) {
            self.near_hosts += 1;
        }
        self.install(key, len, value);
    }

    /// True if the trie holds `key` as a full-length prefix of its own.
    fn trie_holds_host(&self, key: K) -> bool {
        let (e, level, _) = self.trie_leaf(key);
        level == usize::from(K::BITS) / STRIDE - 1 && usize::from(rel_of(e)) == STRIDE
    }

    /// True for a length between a host's last trie level and a host's.
    fn near_host(len: u8) -> bool {
        len > K::BITS - STRIDE as u8 && len < K::BITS
    }

    /// Makes the trie follow what a change did to the hosts' spill list:
    /// it takes each host put there, and lets go of each host taken off it
    /// if it can tell what the host's slot holds without it. That is the
    /// leaf from above unless a prefix of the last level (`near_hosts`)
    /// is beneath it, perhaps hidden by hosts on both sides; then the
    /// leaf stays, never read, until the host goes.
    fn follow_spills(&mut self, changes: SpillChanges<K>) {
        if self.near_hosts == 0 {
            for key in changes.placed {
                if self.trie_holds_host(key) {
                    self.unlink(key, K::BITS, Some((0, EMPTY)));
                }
            }
        }
        for (key, value) in changes.spilled {
            self.install(key, K::BITS, value);
        }
    }

    /// Puts `key/len` in the trie's slots as leaf value `value`.
    fn install(&mut self, key: K, len: u8, value: u32) {
        let (level, rel) = place(len);
        let span = FANOUT >> rel;
        let start = key.byte(level) & !(span - 1);
        let new = leaf(value, rel);
        let Some((idx, parent)) = self.descend_creating(key, level, start, span, new) else { return };
        if len == 0 {
            self.node_mut(0).inherited = new;
        }
        for s in start..start + span {
            let e = self.nodes[idx as usize].slots[s];
            if e & CHILD != 0 {
                if rel_of(self.inherited_of(e)) <= rel {
                    self.set_inherited(e, new);
                }
            } else if rel_of(e) <= rel {
                self.node_mut(idx).slots[s] = new;
            }
        }
        if let Some(at) = parent {
            self.compact(at);
        }
    }

    /// Removes `key/len`, whose entry is `old`. `replacement` is the longest
    /// prefix shorter than `len` that covers it, with its length, if any.
    pub(crate) fn remove(&mut self, key: K, len: u8, old: RouteEntry, replacement: Option<(u8, RouteEntry)>) {
        self.version = next_version();
        self.recent.record(self.version, key, len);
        if K::HOSTS_BY_HASH && len == K::BITS {
            let mut changes = SpillChanges::default();
            self.hosts.remove(key, &mut changes);
            self.follow_spills(changes);
        }
        if Self::near_host(len) {
            self.near_hosts = self.near_hosts.saturating_sub(1);
        }
        // The trie may never have held it (a host held by hash), but the
        // entry was interned all the same.
        let ov = self.value_of(old);
        if ov != EMPTY {
            self.release(ov);
        }
        let replacement = replacement.map(|(rlen, t)| (rlen, self.value_of(t)));
        self.unlink(key, len, replacement);
    }

    /// Takes `key/len`'s leaf out of the trie's slots, if there, for
    /// `replacement`: the longest prefix shorter than `len` that covers
    /// it, as its length and leaf value, if any.
    fn unlink(&mut self, key: K, len: u8, replacement: Option<(u8, u32)>) {
        let (level, rel) = place(len);
        // Where each level's node (or pass) is named, from level 1 down.
        let mut path = [Link::Slot(0, 0); 16];
        let mut at = Link::Slot(0, key.byte(0));
        let mut idx = 0u32;
        for (l, step) in path.iter_mut().enumerate().take(level) {
            *step = at;
            let e = self.link(at);
            if e & CHILD == 0 {
                return; // Never installed: nothing to undo.
            }
            if e & SINGLE == 0 {
                idx = e & !CHILD;
            } else if l + 1 == level {
                // The single it is in, taken apart to be changed.
                idx = self.expand(at);
            } else if self.single(e).slot(key.byte(l + 1)) & CHILD != 0 {
                // A pass on the way to it: gone through, as a change does.
                at = Link::Pass(e & INDEX_MASK);
                continue;
            } else {
                return; // Off a pass's one child, or under a leaf: never installed.
            }
            at = Link::Slot(idx, key.byte(l + 1));
        }
        let with = match replacement {
            Some((rlen, value)) if usize::from(rlen) > level * STRIDE => leaf(value, rlen - (level * STRIDE) as u8),
            Some(_) => self.nodes[idx as usize].inherited & VALUE_MASK,
            None => EMPTY,
        };
        if len == 0 {
            self.node_mut(0).inherited = EMPTY;
        }
        let span = FANOUT >> rel;
        let start = key.byte(level) & !(span - 1);
        for s in start..start + span {
            let e = self.nodes[idx as usize].slots[s];
            if e & CHILD != 0 {
                if rel_of(self.inherited_of(e)) == rel {
                    self.set_inherited(e, with);
                }
            } else if rel_of(e) == rel {
                self.node_mut(idx).slots[s] = with;
            }
        }
        // Fold back the nodes and passes left holding nothing of their
        // own: a pass whose child folded holds that child's leaf from
        // above, which is its own only if it has a depth.
        let mut at = level;
        while at > 0 {
            let e = self.link(path[at - 1]);
            let (empty, inherited) = if e & SINGLE != 0 {
                let pass = self.single(e);
                (pass.leaf & CHILD == 0 && rel_of(pass.leaf) == 0, pass.inherited)
            } else {
                let n = &self.nodes[(e & !CHILD) as usize];
                (!n.slots.iter().any(|&x| x & CHILD != 0 || rel_of(x) != 0), n.inherited)
            };
            if !empty {
                break;
            }
            self.set_link(path[at - 1], inherited);
            if e & SINGLE != 0 {
                self.free_singles.push(e & INDEX_MASK);
            } else {
                self.free_node(e & !CHILD);
            }
            at -= 1;
        }
        // The lowest left, if a node, may be a single now.
        if at > 0 {
            self.compact(path[at - 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::scenario::Rng;
    use std::collections::BTreeMap;

    fn t(nh: u32) -> RouteTarget {
        RouteTarget { nh, label: RouteTarget::NO_LABEL }
    }

    /// `target`'s entry in the table's own network (0).
    fn own(target: RouteTarget) -> RouteEntry {
        RouteEntry { target, network: 0 }
    }

    /// A model: the longest of all prefixes that match, by brute force.
    struct Model<K: FibKey = u32>(BTreeMap<(K, u8), RouteTarget>);

    impl<K: FibKey> Model<K> {
        fn lookup(&self, a: K) -> Option<(RouteTarget, u8)> {
            (0..=K::BITS).rev().find_map(|l| self.0.get(&(a.mask(l), l)).map(|t| (*t, l)))
        }
        fn covering(&self, a: K, len: u8) -> Option<(u8, RouteTarget)> {
            (0..len).rev().find_map(|l| self.0.get(&(a.mask(l), l)).map(|t| (l, *t)))
        }
    }

    fn apply_insert<K: FibKey>(fib: &mut Fib<K>, m: &mut Model<K>, a: K, len: u8, target: RouteTarget) {
        let a = a.mask(len);
        let old = m.0.insert((a, len), target);
        fib.insert(a, len, own(target), old.map(own));
    }

    fn apply_remove<K: FibKey>(fib: &mut Fib<K>, m: &mut Model<K>, a: K, len: u8) {
        let a = a.mask(len);
        if let Some(old) = m.0.remove(&(a, len)) {
            let rep = m.covering(a, len);
            fib.remove(a, len, own(old), rep.map(|(l, t)| (l, own(t))));
        }
    }

    /// Each of `keys` (at most `BATCH`) looked up singly, with its length,
    /// and as a batch, answers as the model does.
    fn assert_lookups_match<K: FibKey>(fib: &Fib<K>, m: &Model<K>, keys: &[K], round: usize) {
        let mut routes = [Route { version: 0, leaf: 0 }; BATCH];
        Fib::lookup_batch_routes(&[fib; BATCH][..keys.len()], keys, &mut routes[..keys.len()]);
        for (&q, route) in keys.iter().zip(routes) {
            let want = m.lookup(q);
            assert_eq!(fib.lookup_with_len(q), want, "round {round} q {q:?}");
            assert_eq!(fib.lookup(q), want.map(|x| x.0));
            assert_eq!(fib.target(route), want.map(|x| x.0));
            // The cover of a prefix of `q` from the levels above its own,
            // at a few lengths: the longest, one a level up, and one
            // that `q` picks.
            for len in [K::BITS, K::BITS - 9, (q.fold() % (u64::from(K::BITS) + 1)) as u8] {
                let own_level = (place(len).0 * STRIDE) as u8 + 1;
                let above = (0..own_level.min(len)).rev().find_map(|l| m.0.get(&(q.mask(l), l)).map(|&t| (l, own(t))));
                assert_eq!(fib.cover_from_above(q, len), above, "round {round} q {q:?}/{len}: its cover from above");
                // The whole search, with the model for the lengths the
                // slots do not tell about.
                let held = |l: u8| m.0.get(&(q.mask(l), l)).map(|&t| own(t));
                let want = m.covering(q, len).map(|(l, t)| (l, own(t)));
                assert_eq!(fib.covering(q, len, held), want, "round {round} q {q:?}/{len}: its cover");
            }
        }
    }

    /// A route looked up in one version of a table names its target in
    /// that version only: every change makes a version no table had.
    #[test]
    fn a_route_is_recalled_only_in_the_version_it_was_looked_up_in() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        apply_insert(&mut fib, &mut m, 0x0a00_0000, 8, t(2));
        let keys = [0x0a01_0203, 0x0b00_0000];
        let mut routes = [Route { version: 0, leaf: 0 }; 2];
        Fib::lookup_batch_routes(&[&fib, &fib], &keys, &mut routes);
        assert_eq!(routes.map(|r| fib.target(r)), [Some(t(2)), None]);
        assert_eq!(routes.map(|r| fib.recall(r)), [Some(Some(t(2))), Some(None)], "same version: no lookup needed");
        let (before, copy) = (fib.version(), fib.clone());
        apply_insert(&mut fib, &mut m, 0x0a01_0000, 16, t(3));
        assert_ne!(fib.version(), before, "an insert is a new version");
        assert_eq!(copy.version(), before, "a copy keeps its own");
        assert_eq!(routes.map(|r| fib.recall(r)), [None, None], "look up again");
        let mut after = routes;
        Fib::lookup_batch_routes(&[&fib, &fib], &keys, &mut after);
        assert_eq!(after.map(|r| fib.target(r)), [Some(t(3)), None]);
        let inserted = fib.version();
        apply_remove(&mut fib, &mut m, 0x0a01_0000, 16);
        assert!(fib.version() != inserted && fib.version() != before, "a remove too, never an old one");
        assert_eq!(after.map(|r| fib.recall(r)), [None, None]);
        assert_ne!(Fib::<u32>::new().version(), fib.version(), "nor another table's");
        assert_ne!(Fib::<u32>::new().version(), 0, "0 is no version");
    }

    /// A route remembered in an older version is carried over to the
    /// current one while no change since covered its key, and only while
    /// the table keeps every change since: else it is looked up again.
    #[test]
    fn a_remembered_route_holds_until_a_change_covers_its_key() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        apply_insert(&mut fib, &mut m, 0x0a00_0000, 8, t(2));
        let (key, other) = (0x0a01_0203, 0x0b00_0001);
        let (memo, none) = (fib.lookup_route(key), fib.lookup_route(other));
        apply_insert(&mut fib, &mut m, 0x0a09_0000, 16, t(3));
        let carried = fib.carried_over(memo, key).expect("10.9/16 does not cover 10.1.2.3");
        assert_eq!((carried.version, fib.target(carried)), (fib.version(), Some(t(2))));
        assert_eq!(fib.carried_over(none, other).map(|r| fib.target(r)), Some(None), "no route still");
        apply_insert(&mut fib, &mut m, 0x0a01_0000, 16, t(4));
        assert_eq!(fib.carried_over(memo, key), None, "10.1/16 covers it");
        assert_eq!(fib.carried_over(carried, key), None, "from the version after 10.9/16 too");
        assert_eq!(fib.target(fib.route_again(memo, key)), Some(t(4)), "looked up again");
        let fresh = fib.lookup_route(key);
        apply_remove(&mut fib, &mut m, 0x0a01_0000, 16);
        assert_eq!(fib.carried_over(fresh, key), None, "a remove that covers it");
        let fresh = fib.lookup_route(key);
        for i in 0..RECENT_CHANGES as u32 {
            apply_insert(&mut fib, &mut m, 0x0c00_0000 + (i << 8), 24, t(5));
        }
        assert!(fib.carried_over(fresh, key).is_some(), "every change since is kept");
        apply_insert(&mut fib, &mut m, 0x0d00_0000, 24, t(5));
        assert_eq!(fib.carried_over(fresh, key), None, "the first change after it is forgotten");
        assert_eq!(fib.target(fib.route_again(fresh, key)), Some(t(2)));
        assert_eq!(fib.carried_over(Route { version: 0, leaf: 0 }, key), None, "never looked up");
        let elsewhere = Fib::<u32>::new().lookup_route(key);
        assert_eq!(fib.carried_over(elsewhere, key), None, "another table's");
    }

    /// Under random churn, a route remembered any number of changes ago
    /// and taken again (`route_again`) names what a lookup now finds.
    #[test]
    fn a_route_taken_again_matches_a_lookup_under_random_churn() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        let mut rng = Rng::new(0x5eed_0c4a);
        let addr = |r: &mut Rng| ((r.next_u64() as u32) & 0x0f0f_0f0f) | 0x0a00_0000;
        let keys: Vec<u32> = (0..64).map(|_| addr(&mut rng)).collect();
        let mut memos: Vec<Route> = keys.iter().map(|&k| fib.lookup_route(k)).collect();
        let mut carried = 0;
        for round in 0..3000 {
            let (a, len) = (addr(&mut rng), 8 + (rng.next_u64() % 25) as u8);
            if rng.next_u64() % 3 == 0 {
                apply_remove(&mut fib, &mut m, a, len);
            } else {
                apply_insert(&mut fib, &mut m, a, len, t((rng.next_u64() % 5) as u32 + 1));
            }
            // Some flows see a packet after this change; the others keep
            // their memory for a later one.
            for (memo, &key) in memos.iter_mut().zip(&keys) {
                if rng.next_u64() % 4 != 0 {
                    continue;
                }
                carried += usize::from(fib.carried_over(*memo, key).is_some());
                *memo = fib.route_again(*memo, key);
                assert_eq!(memo.version, fib.version());
                assert_eq!(fib.target(*memo), m.lookup(key).map(|x| x.0), "round {round} key {key:#x}");
            }
        }
        assert!(carried > 1000, "most changes cover few keys: {carried} carried over");
    }

    #[test]
    fn longest_match_wins_and_deletes_restore_cover() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        apply_insert(&mut fib, &mut m, 0, 0, t(1));
        apply_insert(&mut fib, &mut m, 0x0a00_0000, 8, t(2));
        apply_insert(&mut fib, &mut m, 0x0a01_0000, 16, t(3));
        apply_insert(&mut fib, &mut m, 0x0a01_0100, 24, t(4));
        apply_insert(&mut fib, &mut m, 0x0a01_0102, 32, t(5));
        apply_insert(&mut fib, &mut m, 0x0a01_0000, 20, t(6));
        for (a, want) in
            [(0x0a01_0102, 5), (0x0a01_0103, 4), (0x0a01_0203, 6), (0x0a01_f000, 3), (0x0a02_0000, 2), (0x0b00_0000, 1)]
        {
            assert_eq!(fib.lookup(a).map(|t| t.nh), Some(want), "{a:#x}");
            assert_eq!(fib.lookup_with_len(a), m.lookup(a), "{a:#x}");
        }
        apply_remove(&mut fib, &mut m, 0x0a01_0100, 24);
        assert_eq!(fib.lookup(0x0a01_0103).map(|t| t.nh), Some(6));
        apply_remove(&mut fib, &mut m, 0x0a01_0000, 20);
        assert_eq!(fib.lookup(0x0a01_0103).map(|t| t.nh), Some(3));
        apply_remove(&mut fib, &mut m, 0, 0);
        assert_eq!(fib.lookup(0x0b00_0000), None);
        assert_eq!(fib.lookup(0x0a01_0102).map(|t| t.nh), Some(5));
    }

    #[test]
    fn matches_brute_force_model_under_random_churn() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        // Few distinct high bits, so prefixes nest and overlap a lot.
        let addr = |r: &mut Rng| ((r.next_u64() as u32) & 0x0f0f_0f0f) | 0x0a00_0000;
        for round in 0..4000 {
            let a = addr(&mut rng);
            let len = (rng.next_u64() % 33) as u8;
            if rng.next_u64() % 3 == 0 {
                apply_remove(&mut fib, &mut m, a, len);
            } else {
                apply_insert(&mut fib, &mut m, a, len, t((rng.next_u64() % 5) as u32 + 1));
            }
            if round % 50 == 0 {
                let keys: Vec<u32> = (0..200).map(|_| addr(&mut rng)).collect();
                for chunk in keys.chunks(BATCH) {
                    assert_lookups_match(&fib, &m, chunk, round);
                }
            }
        }
        // Deleting everything folds the trie back to its root.
        let keys: Vec<_> = m.0.keys().copied().collect();
        for (a, l) in keys {
            apply_remove(&mut fib, &mut m, a, l);
        }
        assert_eq!(fib.node_count(), 1);
        assert!(fib.targets.iter().enumerate().all(|(i, _)| fib.target_refs[i] == 0));
    }

    /// Routes with a label each (a VPN's), most targets used once, some
    /// shared, coming and going: each target in use has one position, the
    /// index finds it there, a freed position is taken again, lookups match
    /// the model, and a copy (`copy_from`, as the writer makes each batch's
    /// table) indexes the same positions and goes on from there alike.
    #[test]
    fn per_prefix_labels_are_interned_once_and_released() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model::<u32>(BTreeMap::new());
        let mut rng = Rng::new(0x1abe1);
        let addr = |r: &mut Rng| 0x0a00_0000 | (r.next_u64() as u32 & 0x000f_ff00);
        let label = |r: &mut Rng| RouteTarget { nh: 7, label: (r.next_u64() % 3000) as u32 + 16 };
        let check = |fib: &Fib<u32>, m: &Model<u32>, round: usize| {
            let live: std::collections::BTreeSet<RouteTarget> = m.0.values().copied().collect();
            let used = fib.target_refs.iter().filter(|&&r| r > 0).count();
            assert_eq!(used, live.len(), "round {round}: one position for each target in use");
            for &target in &live {
                let at = fib.value_of(own(target));
                assert_ne!(at, EMPTY, "round {round}: {target:?} indexed");
                assert_eq!(fib.targets[at as usize - 1], target, "round {round}: at its position");
            }
            assert_eq!(fib.value_of(own(RouteTarget { nh: 8, label: 16 })), EMPTY, "round {round}: never used");
        };
        for round in 0..8000 {
            let a = addr(&mut rng);
            if rng.next_u64() % 3 == 0 {
                apply_remove(&mut fib, &mut m, a, 24);
            } else {
                apply_insert(&mut fib, &mut m, a, 24, label(&mut rng));
            }
            if round % 1000 == 999 {
                check(&fib, &m, round);
                let keys: Vec<u32> = (0..BATCH).map(|_| addr(&mut rng) | 5).collect();
                assert_lookups_match(&fib, &m, &keys, round);
                let mut copy = Fib::<u32>::new();
                copy.copy_from(&fib);
                assert!(copy.target_index.is_copy_of(&fib.target_index, &fib.targets, &fib.networks));
                fib = copy;
            }
        }
        assert!(fib.targets.len() < 3000, "freed positions taken again: {}", fib.targets.len());
        for (a, l) in m.0.keys().copied().collect::<Vec<_>>() {
            apply_remove(&mut fib, &mut m, a, l);
        }
        assert_eq!(fib.target_index.0.len(), 0, "every target released from the index");
    }

    /// The writer's two tables a VRF, as it swaps them: the batch's copy
    /// records what it writes, and the table it was copied from is made
    /// its copy again from that record alone (`copy_targets`), for the
    /// targets as for the nodes. With a label a prefix, positions are
    /// freed, taken again, and moved between entries; every round both
    /// tables must index each target in use at its one position and
    /// answer as the model does. A few batches pass the record's limit
    /// and are copied whole.
    #[test]
    fn labelled_tables_copied_from_their_record_of_writes_are_the_table() {
        let mut rng = Rng::new(0x7a49e7);
        let mut m = Model::<u32>(BTreeMap::new());
        let addr = |r: &mut Rng| 0x0a00_0000 | (r.next_u64() as u32 & 0x0003_ff00);
        let label = |r: &mut Rng| RouteTarget { nh: 7, label: (r.next_u64() % 600) as u32 + 16 };
        let mut now = Fib::<u32>::new();
        for _ in 0..2000 {
            let a = addr(&mut rng);
            apply_insert(&mut now, &mut m, a, 24, label(&mut rng));
        }
        let mut spare = now.clone();
        let mut recorded = 0;
        for round in 0..300 {
            // `spare` is `now` as the last batch left it: the batch's copy.
            spare.record_writes();
            let changes = if round % 50 == 49 { 5000 } else { 1 + rng.next_u64() as usize % 8 };
            for _ in 0..changes {
                let a = addr(&mut rng);
                if rng.next_u64() % 2 == 0 {
                    apply_remove(&mut spare, &mut m, a, 24);
                } else {
                    apply_insert(&mut spare, &mut m, a, 24, label(&mut rng));
                }
            }
            std::mem::swap(&mut now, &mut spare);
            recorded += usize::from(now.writes.as_ref().is_some_and(|w| w.targets.is_some()));
            spare.copy_from(&now);
            for fib in [&now, &spare] {
                let live: std::collections::BTreeSet<RouteTarget> = m.0.values().copied().collect();
                assert_eq!(fib.target_index.0.len(), live.len(), "round {round}: one position a target in use");
                let in_use: Vec<RouteTarget> = fib.targets_in_use().collect();
                assert_eq!(in_use.len(), live.len(), "round {round}: each target in use once");
                assert!(in_use.iter().all(|t| live.contains(t)), "round {round}: only targets in use");
                for &target in &live {
                    let at = fib.value_of(own(target));
                    assert_ne!(at, EMPTY, "round {round}: {target:?} indexed");
                    assert_eq!(fib.targets[at as usize - 1], target, "round {round}: at its position");
                    assert!(fib.target_refs[at as usize - 1] > 0, "round {round}: {target:?} counted");
                }
                let keys: Vec<u32> = (0..BATCH).map(|_| addr(&mut rng) | 5).collect();
                assert_lookups_match(fib, &m, &keys, round);
            }
            assert_eq!(spare.free_targets, now.free_targets, "round {round}: the free positions");
            assert_eq!(spare.target_refs, now.target_refs, "round {round}: the counts");
            #[cfg(debug_assertions)]
            assert!(spare.is_copy_of(&now), "round {round}");
        }
        assert!(recorded >= 290, "the small batches copied from their record: {recorded} of 300");
    }

    /// IPv6 with most changes to /128s, which lookups find by hash
    /// (`HostRoutes`) before the trie: every lookup, single and batched,
    /// matches the brute-force model while hosts are added, moved to other
    /// targets and removed among shorter prefixes that cover them, and a
    /// snapshot taken midway keeps its own answers.
    #[test]
    fn ipv6_host_routes_match_brute_force_model_under_random_churn() {
        let mut fib = Fib::<u128>::new();
        let mut m = Model::<u128>(BTreeMap::new());
        let mut rng = Rng::new(0x0128);
        let addr = |r: &mut Rng| (0xfd00_0000_0000_0001u128 << 64) | u128::from(r.next_u64() & 0x0300_0000_0000_01ff);
        let mut snapshot = None;
        for round in 0..6000 {
            let a = addr(&mut rng);
            let len = match rng.next_u64() % 10 {
                0 => 64 + (rng.next_u64() % 64) as u8,
                1 => (rng.next_u64() % 65) as u8,
                _ => 128,
            };
            if rng.next_u64() % 3 == 0 {
                apply_remove(&mut fib, &mut m, a, len);
            } else {
                apply_insert(&mut fib, &mut m, a, len, t((rng.next_u64() % 9) as u32 + 1));
            }
            if round == 3000 {
                snapshot = Some((fib.clone(), m.0.clone()));
            }
            if round % 100 == 0 {
                let keys: Vec<u128> = (0..BATCH).map(|_| addr(&mut rng)).collect();
                assert_lookups_match(&fib, &m, &keys, round);
                let hosts = m.0.keys().filter(|&&(_, l)| l == 128).count();
                assert_eq!(fib.host_routes().0, hosts, "every /128 is in the hash table");
            }
        }
        assert!(fib.host_routes().0 > 500, "hosts enough to fill buckets: {:?}", fib.host_routes());
        let (old, model) = snapshot.expect("taken at round 3000");
        let m = Model(model);
        for _ in 0..2000 {
            let q = addr(&mut rng);
            assert_eq!(old.lookup(q), m.lookup(q).map(|x| x.0), "the snapshot's answer for {q:#x}");
        }
        // Deleting everything empties the hash table, and folds the trie.
        let mut m = m;
        let mut fib = old;
        for (a, l) in m.0.keys().copied().collect::<Vec<_>>() {
            apply_remove(&mut fib, &mut m, a, l);
        }
        assert_eq!((fib.host_routes(), fib.node_count(), fib.single_count()), ((0, 0), 1, 0));
        assert!(fib.target_refs.iter().all(|&refs| refs == 0), "every target released");
    }

    /// Sparse IPv6 prefixes, most alone at the bottom of their path and
    /// so kept as singles, others nesting over and under them: while they
    /// come and go, singles are made, expanded and made again, and every
    /// lookup, with its length, single or batched, matches the model; a
    /// snapshot keeps its answers; and deleting everything leaves the root.
    #[test]
    fn sparse_ipv6_prefixes_kept_as_singles_match_brute_force_model() {
        let mut fib = Fib::<u128>::new();
        let mut m = Model::<u128>(BTreeMap::new());
        let mut rng = Rng::new(0x5167);
        let addr = |r: &mut Rng| (0x2001u128 << 112) | (u128::from(r.next_u64() & 0x0003_0301_8300_0000) << 48);
        let (mut most_singles, mut snapshot) = (0, None);
        for round in 0..6000 {
            let a = addr(&mut rng);
            let len = match rng.next_u64() % 8 {
                0 => 16 + (rng.next_u64() % 32) as u8,
                1 => 57 + (rng.next_u64() % 72) as u8,
                _ => 48 + (rng.next_u64() % 9) as u8,
            };
            if rng.next_u64() % 5 < 2 {
                apply_remove(&mut fib, &mut m, a, len);
            } else {
                apply_insert(&mut fib, &mut m, a, len, t((rng.next_u64() % 9) as u32 + 1));
            }
            most_singles = most_singles.max(fib.single_count());
            // At the edges of the prefix just changed, and inside it.
            let a = a.mask(len);
            let inside = if len == 128 { 0 } else { u128::from(rng.next_u64()) & (u128::MAX >> len) };
            for q in
                [a.wrapping_sub(1), a.wrapping_add(1u128.checked_shl(u32::from(128 - len)).unwrap_or(0)), a | inside]
            {
                assert_eq!(fib.lookup_with_len(q), m.lookup(q), "round {round} q {q:#x} next to {a:#x}/{len}");
                assert_eq!(fib.lookup(q), m.lookup(q).map(|x| x.0), "round {round} q {q:#x} next to {a:#x}/{len}");
            }
            if round == 3000 {
                snapshot = Some((fib.clone(), m.0.clone()));
            }
            if round % 100 == 0 {
                let keys: Vec<u128> = (0..BATCH).map(|_| addr(&mut rng) | u128::from(rng.next_u64() & 0xff)).collect();
                assert_lookups_match(&fib, &m, &keys, round);
            }
        }
        assert!(most_singles > 50, "the prefixes made few singles: {most_singles}");
        let (old, model) = snapshot.expect("taken at round 3000");
        let m = Model(model);
        for _ in 0..2000 {
            let q = addr(&mut rng);
            assert_eq!(old.lookup_with_len(q), m.lookup(q), "the snapshot's answer for {q:#x}");
        }
        let (mut m, mut fib) = (m, old);
        for (a, l) in m.0.keys().copied().collect::<Vec<_>>() {
            apply_remove(&mut fib, &mut m, a, l);
        }
        assert_eq!((fib.node_count(), fib.single_count()), (1, 0));
        assert!(fib.target_refs.iter().all(|&refs| refs == 0), "every target released");
    }

    /// A /48 alone in its /32, as most of the global table's are, takes
    /// singles all the way up: passes from the root's child down, and its
    /// own at the bottom, twelve bytes each where a node is a kilobyte. A
    /// second /48 that parts from it at the /32 makes that level a node
    /// again; removed, it leaves the path as it was, and the first,
    /// removed, the root alone.
    #[test]
    fn a_sparse_prefix_takes_singles_all_the_way_up() {
        let (mut fib, mut m) = (Fib::<u128>::new(), Model::<u128>(BTreeMap::new()));
        let a = 0x2001_0db8_0001u128 << 80;
        let b = 0x2001_0db8_0101u128 << 80;
        let check = |fib: &Fib<u128>, m: &Model<u128>| {
            let keys = [a, a | 1, a - 1, a + (1 << 80), b, b | 0xffff, b - 1, b + (1 << 80), 0x2001u128 << 112];
            assert_lookups_match(fib, m, &keys, 0);
        };
        let shape = |fib: &Fib<u128>, m: &Model<u128>| {
            check(fib, m);
            (fib.node_count(), fib.single_count())
        };
        apply_insert(&mut fib, &mut m, a, 48, t(1));
        assert_eq!(shape(&fib, &m), (1, 5), "the root, four passes and the /48's own");
        apply_insert(&mut fib, &mut m, b, 48, t(2));
        assert_eq!(shape(&fib, &m), (2, 5), "the /32 where they part is a node");
        let snapshot = (fib.clone(), Model(m.0.clone()));
        apply_remove(&mut fib, &mut m, b, 48);
        assert_eq!(shape(&fib, &m), (1, 5));
        check(&snapshot.0, &snapshot.1);
        // A /56 under the /48: its level is a pass to the /56's single,
        // which takes the /48's leaf from above.
        let c = a | (0x01 << 72);
        apply_insert(&mut fib, &mut m, c, 56, t(4));
        assert_eq!(shape(&fib, &m), (1, 6));
        assert_lookups_match(&fib, &m, &[c, c | 1, c - 1, c + (1 << 72)], 0);
        apply_remove(&mut fib, &mut m, c, 56);
        assert_eq!(shape(&fib, &m), (1, 5));
        // A /40 over the first's pass, then the first gone: the /32's level
        // is the /40's single; the /40 gone, nothing is left.
        apply_insert(&mut fib, &mut m, a, 40, t(3));
        assert_eq!(shape(&fib, &m), (1, 5));
        apply_remove(&mut fib, &mut m, a, 48);
        assert_eq!(shape(&fib, &m), (1, 4));
        apply_remove(&mut fib, &mut m, a, 40);
        assert_eq!(shape(&fib, &m), (1, 0));
    }

    /// A host that spilled into the trie and later found room in its bucket
    /// leaves the trie, and the cover beneath it shows again once the host
    /// goes: while 3,000 hosts come and then go one by one, each removed
    /// host's address matches its /64, and the trie ends as it began.
    #[test]
    fn hosts_taken_off_the_spill_list_leave_the_trie_to_their_cover() {
        let (mut fib, mut m) = (Fib::<u128>::new(), Model::<u128>(BTreeMap::new()));
        let subnet = 0xfd00_0000_0000_0001u128 << 64;
        apply_insert(&mut fib, &mut m, subnet, 64, t(1));
        let empty = (fib.node_count(), fib.single_count());
        let mut rng = Rng::new(0x0c0e);
        let keys: Vec<u128> = (0..3000).map(|_| subnet | u128::from(rng.next_u64() | 1)).collect();
        // A resize that leaves fewer hosts spilled took some off the list.
        let (mut spilled, mut fewer) = (0usize, 0);
        for &k in &keys {
            apply_insert(&mut fib, &mut m, k, 128, t(2));
            let now = fib.host_routes().1;
            fewer += spilled.saturating_sub(now);
            spilled = now;
        }
        assert!(fewer > 0, "no spilled host found room");
        for &k in &keys {
            apply_remove(&mut fib, &mut m, k, 128);
            assert_eq!(fib.lookup_with_len(k), Some((t(1), 64)), "{k:#x}");
        }
        assert_eq!((fib.node_count(), fib.single_count()), empty);
    }

    /// The reason hosts go by hash: 1,000 pods' random /128s in one /64
    /// take a small part of the trie that as many /127s take. The trie
    /// holds only the hosts that spilled: at most the /64's path and
    /// eight nodes or singles for each.
    #[test]
    fn ipv6_hosts_held_by_hash_take_few_trie_nodes() {
        let subnet = 0xfd00_0000_0000_0001u128 << 64;
        let trie_for = |len: u8| {
            let mut fib = Fib::<u128>::new();
            let mut rng = Rng::new(0x0064);
            fib.insert(subnet, 64, own(t(1)), None);
            for i in 0..1000u32 {
                let key = subnet | u128::from(rng.next_u64() | 1);
                fib.insert(key.mask(len), len, own(t(2 + i % 3)), None);
            }
            let (nodes, singles) = (fib.node_count(), fib.single_count());
            (nodes * NODE_BYTES + singles * std::mem::size_of::<Single>(), nodes + singles, fib.host_routes())
        };
        let (by_hash, by_hash_parts, (hosts, spilled)) = trie_for(128);
        let (in_trie, in_trie_parts, _) = trie_for(127);
        assert_eq!(hosts, 1000);
        assert!(spilled < 50, "most hosts fit their buckets: {spilled} spilled");
        // About six a /127 (a single at the bottom and the passes above it).
        assert!(in_trie_parts > 6000, "{in_trie_parts} trie nodes and singles for 1,000 /127s");
        assert!(by_hash * 10 < in_trie, "{by_hash} trie bytes for 1,000 hosts, {spilled} spilled, against {in_trie}");
        // The root and the /64's seven levels, then eight a spilled host.
        assert!(by_hash_parts <= 8 + 8 * spilled, "{by_hash_parts} trie nodes for {spilled} spilled hosts");
    }

    #[test]
    fn batch_lookup_matches_single_lookups() {
        let mut a = Fib::<u32>::new();
        let mut b = Fib::<u32>::new();
        let mut rng = Rng::new(77);
        for _ in 0..3000 {
            let k = (rng.next_u64() as u32) & 0xff0f_f0ff;
            let len = (rng.next_u64() % 33) as u8;
            a.insert(k.mask(len), len, own(t((rng.next_u64() % 7) as u32)), None);
            let k = (rng.next_u64() as u32) & 0xff0f_f0ff;
            b.insert(k.mask(len), len, own(t((rng.next_u64() % 7) as u32 + 10)), None);
        }
        for round in 0..200 {
            let keys: Vec<u32> = (0..BATCH).map(|_| (rng.next_u64() as u32) & 0xff0f_f0ff).collect();
            let fibs: Vec<&Fib<u32>> = (0..BATCH).map(|i| if (i + round) % 3 == 0 { &b } else { &a }).collect();
            let mut out = [Some(t(99)); BATCH];
            Fib::lookup_batch(&fibs, &keys, &mut out);
            for i in 0..BATCH {
                assert_eq!(out[i], fibs[i].lookup(keys[i]), "key {:#x}", keys[i]);
            }
        }
    }

    /// The same for IPv6 keys, whose walks read a byte a level from the
    /// key's bytes: prefixes of every length, deep in a narrow space so
    /// that walks go down to the 16th level (host routes).
    #[test]
    fn batch_lookup_matches_single_lookups_for_ipv6() {
        let mut fib = Fib::<u128>::new();
        let mut rng = Rng::new(78);
        let key = |rng: &mut Rng| (0xfd00u128 << 112) | (u128::from(rng.next_u64()) & 0x0f0f_00ff_0000_0000_0000_f0ff);
        for _ in 0..3000 {
            let len = (rng.next_u64() % 129) as u8;
            let k = key(&mut rng);
            fib.insert(k.mask(len), len, own(t((rng.next_u64() % 7) as u32)), None);
        }
        let mut deep = 0;
        for _ in 0..200 {
            let keys: Vec<u128> = (0..BATCH).map(|_| key(&mut rng)).collect();
            let fibs = vec![&fib; BATCH];
            let mut out = [Some(t(99)); BATCH];
            Fib::lookup_batch(&fibs, &keys, &mut out);
            for i in 0..BATCH {
                assert_eq!(out[i], fib.lookup(keys[i]), "key {:#x}", keys[i]);
                deep += usize::from(fib.lookup_with_len(keys[i]).is_some_and(|(_, len)| len > 120));
            }
        }
        assert!(deep > 100, "walks to the last levels: {deep}");
    }

    /// The writer's pool: nodes copied or freed while a snapshot holds
    /// them wait in the pool, and no change writes them until the
    /// snapshot is gone; then changes reuse them. The snapshot answers as
    /// it did throughout, and the table as the model does.
    #[test]
    fn pooled_nodes_are_reused_only_once_no_snapshot_holds_them() {
        let mut fib = Fib::<u32>::new();
        let mut m = Model(BTreeMap::new());
        let mut pool = NodePool::new();
        let mut rng = Rng::new(0x5eed_9001);
        // /24s over 4,096 /16s, so that most changes copy a node of their own.
        let addr = |r: &mut Rng| (r.next_u64() as u32 & 0x0fff_ff00) | 0x1000_0000;
        let change = |fib: &mut Fib<u32>, m: &mut Model<u32>, pool: &mut NodePool, rng: &mut Rng| {
            let (a, nh) = (addr(rng), (rng.next_u64() % 5) as u32 + 1);
            let len = [16, 20, 24][(rng.next_u64() % 3) as usize];
            fib.with_pool(pool, |f| {
                if rng.next_u64() % 4 == 0 {
                    apply_remove(f, m, a, len);
                } else {
                    apply_insert(f, m, a, len, t(nh));
                }
            });
        };
        for _ in 0..3000 {
            change(&mut fib, &mut m, &mut pool, &mut rng);
        }
        pool.trim();
        let snapshot = fib.clone();
        let then = Model(m.0.clone());
        for _ in 0..500 {
            change(&mut fib, &mut m, &mut pool, &mut rng);
        }
        let pooled: std::collections::HashSet<*const Node> = pool.retired.iter().map(Arc::as_ptr).collect();
        let shared = pool.retired.iter().filter(|n| Arc::strong_count(n) > 1).count();
        assert!(shared > 100, "{shared} of the pool's nodes are the snapshot's");
        let keys: Vec<u32> = (0..2000).map(|_| addr(&mut rng) | (rng.next_u64() as u32 & 0xff)).collect();
        for &q in &keys {
            assert_eq!(snapshot.lookup_with_len(q), then.lookup(q), "snapshot, q {q:#x}");
        }
        drop(snapshot);
        pool.trim();
        for _ in 0..500 {
            change(&mut fib, &mut m, &mut pool, &mut rng);
        }
        let reused = fib.nodes.iter().filter(|n| pooled.contains(&Arc::as_ptr(n))).count();
        assert!(reused > 100, "{reused} nodes reused");
        for chunk in keys.chunks(BATCH) {
            assert_lookups_match(&fib, &m, chunk, 0);
        }
        // Emptying the table frees its nodes into the pool, and the pool
        // gives back what those changes did not make again.
        pool.trim();
        let keys: Vec<_> = m.0.keys().copied().collect();
        for (a, len) in keys {
            fib.with_pool(&mut pool, |f| apply_remove(f, &mut m, a, len));
        }
        assert_eq!(fib.node_count(), 1);
        assert!(pool.len() > 1000, "{} nodes freed", pool.len());
        pool.trim();
        assert!(pool.len() <= POOL_MIN, "{} nodes kept", pool.len());
    }

    /// A table made a copy of another (`copy_from`) holds the same nodes
    /// and answers alike, whether it was that table a few changes ago or
    /// something else entirely; and it stays a copy: changing it leaves
    /// the other as it was.
    #[test]
    fn a_table_copied_into_is_the_other_table() {
        let mut rng = Rng::new(0xc0b1e5);
        let mut m = Model(BTreeMap::new());
        let mut fib = Fib::<u32>::new();
        let addr = |r: &mut Rng| (r.next_u64() as u32 & 0x0f0f_ffff) | 0x1000_0000;
        let churn = |fib: &mut Fib<u32>, m: &mut Model<u32>, rng: &mut Rng, n: usize| {
            for _ in 0..n {
                let (a, len, nh) = (addr(rng), 8 + (rng.next_u64() % 25) as u8, (rng.next_u64() % 5) as u32 + 1);
                if rng.next_u64() % 3 == 0 {
                    apply_remove(fib, m, a, len);
                } else {
                    apply_insert(fib, m, a, len, t(nh));
                }
            }
        };
        churn(&mut fib, &mut m, &mut rng, 3000);
        let mut old = fib.clone();
        let mut other = Fib::<u32>::new();
        let mut other_model = Model(BTreeMap::new());
        churn(&mut other, &mut other_model, &mut rng, 500);
        churn(&mut fib, &mut m, &mut rng, 300);
        for copy in [&mut old, &mut other] {
            copy.copy_from(&fib);
            assert_eq!(copy.nodes.len(), fib.nodes.len());
            assert!(copy.nodes.iter().zip(fib.nodes.iter()).all(|(a, b)| Arc::ptr_eq(a, b)));
            assert_eq!(
                (copy.node_count(), copy.single_count(), copy.version()),
                (fib.node_count(), fib.single_count(), fib.version())
            );
            let keys: Vec<u32> = (0..2000).map(|_| addr(&mut rng)).collect();
            for chunk in keys.chunks(BATCH) {
                assert_lookups_match(copy, &m, chunk, 0);
            }
        }
        // Changing the copy leaves the table it copied alone.
        let before = Model(m.0.clone());
        let mut changed = Model(m.0.clone());
        churn(&mut old, &mut changed, &mut rng, 300);
        let keys: Vec<u32> = (0..2000).map(|_| addr(&mut rng)).collect();
        for chunk in keys.chunks(BATCH) {
            assert_lookups_match(&fib, &before, chunk, 1);
            assert_lookups_match(&old, &changed, chunk, 1);
        }
    }

    #[test]
    fn snapshots_are_unaffected_by_later_changes() {
        let mut fib = Fib::<u32>::new();
        fib.insert(0x0a00_0000, 8, own(t(1)), None);
        let snapshot = fib.clone();
        fib.insert(0x0a01_0100, 24, own(t(2)), None);
        fib.remove(0x0a00_0000, 8, own(t(1)), None);
        assert_eq!(snapshot.lookup(0x0a01_0101).map(|t| t.nh), Some(1));
        assert_eq!(fib.lookup(0x0a01_0101).map(|t| t.nh), Some(2));
        assert_eq!(fib.lookup(0x0a02_0000), None);
    }

    #[test]
    fn ipv6_host_and_default() {
        let mut fib = Fib::<u128>::new();
        let a: u128 = "fd00::1:2".parse::<std::net::Ipv6Addr>().unwrap().into();
        fib.insert(a, 128, own(t(9)), None);
        fib.insert(a.mask(64), 64, own(t(8)), None);
        fib.insert(0, 0, own(t(7)), None);
        assert_eq!(fib.lookup_with_len(a), Some((t(9), 128)));
        assert_eq!(fib.lookup_with_len(a + 1), Some((t(8), 64)));
        assert_eq!(fib.lookup_with_len(1), Some((t(7), 0)));
    }

    /// Two prefixes with one next hop, in two networks, are two entries:
    /// each answers with its own network, and removing one leaves the other.
    #[test]
    fn a_prefix_answers_with_its_own_network() {
        let mut fib = Fib::<u32>::new();
        let (own_net, imported) = (RouteEntry { target: t(4), network: 1 }, RouteEntry { target: t(4), network: 7 });
        fib.insert(0x0a01_0000, 16, own_net, None);
        fib.insert(0x0a05_0002, 32, imported, None);
        assert_eq!((fib.network_of(0x0a01_0009), fib.network_of(0x0a05_0002)), (Some(1), Some(7)));
        assert_eq!(fib.lookup(0x0a05_0002), fib.lookup(0x0a01_0009), "the same next hop");
        assert_eq!(fib.network_of(0x0b00_0000), None, "no route, no network");
        fib.remove(0x0a05_0002, 32, imported, None);
        assert_eq!(fib.network_of(0x0a05_0002), None);
        assert_eq!(fib.network_of(0x0a01_0009), Some(1));
        fib.insert(0x0a01_0000, 16, RouteEntry { network: 3, ..own_net }, Some(own_net));
        assert_eq!(fib.network_of(0x0a01_0009), Some(3), "replaced");
    }
}
