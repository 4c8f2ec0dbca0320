//! Batches of table changes, validated, applied to a private copy and
//! published atomically.

use super::ecmp::MAX_MEMBERS;
use super::ecmp_blocks::{EcmpBlockIndex, HintFamily};
use super::lpm::{Fib, FibKey, NodePool};
use super::prefixes::Prefixes;
use super::{
    EcmpBlocks, Label, NextHop, NhId, ReachedChanges, RouteEntry, RouteTarget, Tables, Vif, VifIndex, VifKind, Vrf,
    VrfId,
};
use crate::wire::mpls;
use ahash::AHashMap;
use arc_swap::ArcSwap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// An IP prefix with no bits set past its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix; an over-long length or host bits set past it are errors.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, TableError> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len > bits {
            return Err(TableError::Invalid {
                field: "prefix",
                reason: format!("length /{len} is longer than {bits} bits"),
            });
        }
        let canonical = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).mask(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).mask(len))),
        };
        if canonical != addr {
            return Err(TableError::Invalid {
                field: "prefix",
                reason: format!("{addr}/{len} has host bits set; did you mean {canonical}/{len}?"),
            });
        }
        Ok(Prefix { addr, len })
    }

    /// The /32 of one IPv4 address.
    pub const fn host_v4(a: Ipv4Addr) -> Prefix {
        Prefix { addr: IpAddr::V4(a), len: 32 }
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The length in bits.
    #[allow(clippy::len_without_is_empty)] // A prefix's length is its mask, not a count.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length (default) prefix.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// The prefix of length `len` that holds `addr` (host bits cleared;
    /// a length past the family's width is cut to it).
    pub fn covering(addr: IpAddr, len: u8) -> Prefix {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                Prefix { addr: IpAddr::V4(Ipv4Addr::from(u32::from(a).mask(len))), len }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                Prefix { addr: IpAddr::V6(Ipv6Addr::from(u128::from(a).mask(len))), len }
            }
        }
    }

    /// True if `addr` is in the prefix (and of its family).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Prefix::covering(addr, self.len) == *self
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = TableError;
    fn from_str(s: &str) -> Result<Prefix, TableError> {
        let bad = |reason: String| TableError::Invalid { field: "prefix", reason };
        let (a, l) = s.split_once('/').ok_or_else(|| bad(format!("{s:?} is not ADDR/LEN")))?;
        let addr: IpAddr = a.parse().map_err(|_| bad(format!("{a:?} is not an IP address")))?;
        let len: u8 = l.parse().map_err(|_| bad(format!("{l:?} is not a prefix length")))?;
        Prefix::new(addr, len)
    }
}

/// A VRF's settings (its routes are separate objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrfSpec {
    /// Id.
    pub id: VrfId,
    /// Name.
    pub name: String,
    /// IPv4 gateway address of the network.
    pub gateway_v4: Option<Ipv4Addr>,
    /// IPv6 gateway address of the network.
    pub gateway_v6: Option<Ipv6Addr>,
}

/// A route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// The VRF it belongs to.
    pub vrf: VrfId,
    /// Destination prefix.
    pub prefix: Prefix,
    /// Next hop and optional label.
    pub target: RouteTarget,
    /// The virtual network (VRF) the prefix's addresses belong to, where
    /// it is not this VRF's own: a route imported from another network
    /// keeps that network, for policy rules that name it.
    pub network: Option<VrfId>,
}

impl RouteSpec {
    /// A route of `vrf`'s own network.
    pub fn new(vrf: VrfId, prefix: Prefix, target: RouteTarget) -> Self {
        RouteSpec { vrf, prefix, target, network: None }
    }

    fn entry(&self) -> RouteEntry {
        RouteEntry { target: self.target, network: self.network.unwrap_or(self.vrf) }
    }

    fn from_entry(vrf: VrfId, prefix: Prefix, e: RouteEntry) -> Self {
        RouteSpec { vrf, prefix, target: e.target, network: (e.network != vrf).then_some(e.network) }
    }
}

/// A table object, as added or updated.
#[derive(Debug, Clone)]
pub enum Object {
    /// An interface.
    Vif(Vif),
    /// A VRF.
    Vrf(VrfSpec),
    /// A next hop with its id.
    NextHop(NhId, NextHop),
    /// A route.
    Route(RouteSpec),
    /// An incoming label and the next hop it names.
    Label(Label, NhId),
    /// A VRF's network policy.
    Policy(VrfId, crate::flow::Policy),
}

/// What names an object, for deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKey {
    /// Vif index.
    Vif(VifIndex),
    /// VRF id.
    Vrf(VrfId),
    /// Next-hop id.
    NextHop(NhId),
    /// A route's VRF and prefix.
    Route(VrfId, Prefix),
    /// A label.
    Label(Label),
    /// A VRF's policy (the VRF stays, without one).
    Policy(VrfId),
}

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create an object that must not exist yet.
    Add(Object),
    /// Replace an object that must exist.
    Update(Object),
    /// Remove an object that must exist and be unused.
    Delete(ObjectKey),
}

/// Why an operation was refused. Each names the field or object at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// Adding an object whose id is taken.
    Exists {
        /// Kind of object.
        what: &'static str,
        /// Its id, as text.
        id: String,
    },
    /// Updating or deleting an object that does not exist.
    NotFound {
        /// Kind of object.
        what: &'static str,
        /// Its id, as text.
        id: String,
    },
    /// A field refers to an object that does not exist.
    MissingReference {
        /// The field.
        field: &'static str,
        /// Kind of the object referred to.
        what: &'static str,
        /// Its id.
        id: u32,
    },
    /// Deleting an object that others still use.
    InUse {
        /// Kind of object.
        what: &'static str,
        /// Its id, as text.
        id: String,
        /// How many references remain.
        refs: u32,
    },
    /// A table is at its capacity.
    Full {
        /// The table.
        table: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// A field is outside its range.
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A field's value is not acceptable.
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Exists { what, id } => write!(f, "{what} {id} already exists"),
            TableError::NotFound { what, id } => write!(f, "{what} {id} does not exist"),
            TableError::MissingReference { field, what, id } => {
                write!(f, "field `{field}`: {what} {id} does not exist")
            }
            TableError::InUse { what, id, refs } => {
                write!(f, "{what} {id} is still in use ({refs} references)")
            }
            TableError::Full { table, capacity } => {
                write!(f, "{table} table is full ({capacity} entries)")
            }
            TableError::OutOfRange { field, value, min, max } => {
                write!(f, "field `{field}`: {value} is outside {min}..={max}")
            }
            TableError::Invalid { field, reason } => write!(f, "field `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for TableError {}

/// A batch that was refused: nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// Position of the failing operation in the batch.
    pub index: usize,
    /// Why it failed.
    pub error: TableError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation {}: {}", self.index, self.error)
    }
}

impl std::error::Error for BatchError {}

/// Where the data path loads the current snapshot from. Cheap to clone.
#[derive(Clone)]
pub struct TablesHandle {
    current: Arc<ArcSwap<Tables>>,
}

impl TablesHandle {
    /// The current snapshot: lock-free, for holding over one batch.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding longer.
    pub fn snapshot(&self) -> Arc<Tables> {
        self.current.load_full()
    }
}

/// A VRF's authoritative prefix lists. Hash maps keep inserts to one
/// probe; dumps sort the keys once and reuse them until the next change.
#[derive(Default)]
struct VrfRoutes {
    v4: Prefixes<u32>,
    v6: Prefixes<u128>,
    /// Keys in dump order, built by the first dump after a change.
    sorted: Option<SortedKeys>,
}

/// IPv4 and IPv6 prefix keys, sorted.
type SortedKeys = (Vec<(u32, u8)>, Vec<(u128, u8)>);

enum Undo {
    V4(VrfId, (u32, u8), Option<RouteEntry>),
    V6(VrfId, (u128, u8), Option<RouteEntry>),
    VrfCreated(VrfId),
    VrfRemoved(VrfId),
}

/// The single writer of the tables.
pub struct TablesWriter {
    handle: TablesHandle,
    current: Arc<Tables>,
    /// The authoritative prefix lists, which the tries are built from. Only
    /// the writer reads them, so they are changed in place, with an undo
    /// log for batches that fail.
    routes: AHashMap<VrfId, VrfRoutes>,
    undo: Vec<Undo>,
    /// The IPv4 routes to composites that the batch being applied gained
    /// (true) or lost, in order: counted into `ecmp_blocks` once the batch
    /// holds, forgotten if it fails.
    ecmp_changes: Vec<(VrfId, u32, u8, bool)>,
    /// Each VRF's count behind its `Vrf::ecmp_blocks` hint.
    ecmp_blocks: AHashMap<VrfId, EcmpBlockIndex>,
    /// `ecmp_changes` and `ecmp_blocks` for IPv6 (`Vrf::ecmp_blocks6`).
    ecmp_changes6: Vec<(VrfId, u128, u8, bool)>,
    ecmp_blocks6: AHashMap<VrfId, EcmpBlockIndex<u128>>,
    /// The VRFs whose policy the batch being applied changed: once it
    /// holds, the VRFs whose flows their pods may be reached from are told
    /// (`judge_again_reaching`).
    policy_changes: Vec<VrfId>,
    /// The VRFs where the batch being applied moved an address to another
    /// network (a route added, changed or removed), whose policy names
    /// networks: their policy means something else now (`network_moved`).
    network_moves: Vec<VrfId>,
    /// Snapshots replaced but perhaps still read by a worker. The writer
    /// frees them once it holds the last reference, so that freeing an old
    /// snapshot (tens of thousands of trie nodes) never lands on a worker.
    /// Each with the VRFs whose route tables the batch after it changed:
    /// the ones to keep as spares when it goes.
    retired: Vec<(Arc<Tables>, Vec<VrfId>)>,
    /// Trie nodes this writer's batches took out of the tables, reused
    /// once no snapshot holds them.
    node_pool: NodePool,
    /// Route tables of freed snapshots, by VRF, each made a copy of the
    /// VRF's current table when its snapshot went (`Fib::copy_from`, which
    /// takes a reference only to the nodes that differ). The next batch
    /// that changes the VRF's table changes its spare instead of cloning
    /// the current one, a reference to every node: 21 µs a batch, not 0.34
    /// ms, for one route a batch in a VRF growing to 100,000.
    spares: SpareTables,
    /// The node's fabric interface and underlay address (vrouterd.toml's
    /// `node`), where known: the fabric vif must be on that interface and
    /// no other vif may, since a pod's port takes all of an interface's
    /// traffic and would take the node off its network; and the fabric
    /// vif's address is the underlay's, the one its XDP program steers
    /// tunnels to (any other, and every tunnel would be dropped as not
    /// for us).
    node: Option<(String, Ipv4Addr)>,
}

#[derive(Default)]
struct SpareTables {
    v4: AHashMap<VrfId, Fib<u32>>,
    v6: AHashMap<VrfId, Fib<u128>>,
    /// The VRFs whose tables the batch being applied has copied to change.
    changed: Vec<VrfId>,
}

/// Makes change `f` to VRF `vrf`'s table `fib` in a batch's tables, with
/// the writer's node pool to hand. The table changed is its own if no
/// snapshot shares it, else a copy: the VRF's spare if it has one, else a
/// clone. A spare was made a copy of the table when it was kept, and only
/// this function changes a table, taking the spare as it does; so the
/// spare is the table still, and has its version (versions are never
/// reused: `next_version`). It is made a copy again only if its version
/// says otherwise: copying the lists anyway (node pointers compared,
/// targets and singles copied) was about half of a one-route batch in a
/// big VRF.
fn change_fib<K: Family>(
    spares: &mut SpareTables,
    pool: &mut NodePool,
    vrf: VrfId,
    fib: &mut Arc<Fib<K>>,
    f: impl FnOnce(&mut Fib<K>),
) {
    if Arc::get_mut(fib).is_none() {
        spares.changed.push(vrf);
        if let Some(mut spare) = K::spares(spares).remove(&vrf) {
            if spare.version() != fib.version() {
                spare.copy_from(fib);
            }
            #[cfg(debug_assertions)]
            assert!(spare.is_copy_of(fib), "VRF {vrf}'s spare table is not a copy of the table it stands for");
            *fib = Arc::new(spare);
        }
        // The batch's copy records the nodes it writes, for the spare
        // made of the table it copied (`keep_spare`).
        Arc::make_mut(fib).record_writes();
    }
    Arc::make_mut(fib).with_pool(pool, f);
}

/// Fewest trie nodes and host pages (`Fib::host_pages`; a clone takes a
/// reference to each, as to a node) for which a VRF's table is worth
/// keeping a spare of: a clone of a smaller one is quick, and a spare for
/// each of a thousand small VRFs made loading them (`vrpktgen tables
/// --vrfs 1000 --routes 10 --batch 10`) slower and 1.5 MiB bigger.
const SPARE_MIN_NODES: usize = 64;

/// Keeps `old`, VRF `vrf`'s table in a freed snapshot, as its spare, made
/// a copy of `now`, unless an older snapshot still holds it too or it is
/// small.
fn keep_spare<K: Family>(spares: &mut SpareTables, vrf: VrfId, old: Arc<Fib<K>>, now: &Fib<K>) {
    if now.node_count() + now.host_pages() < SPARE_MIN_NODES {
        return;
    }
    if let Some(mut spare) = Arc::into_inner(old) {
        spare.copy_from(now);
        #[cfg(debug_assertions)]
        assert!(spare.is_copy_of(now), "VRF {vrf}'s spare table was not made a copy of its table");
        K::spares(spares).insert(vrf, spare);
    }
}

/// An address family: how its keys, prefix lists and tries are reached.
trait Family: FibKey {
    fn routes(r: &mut VrfRoutes) -> &mut Prefixes<Self>;
    fn fib(v: &mut Vrf) -> &mut Arc<Fib<Self>>;
    fn spares(s: &mut SpareTables) -> &mut AHashMap<VrfId, Fib<Self>>;
    fn undo(vrf: VrfId, key: (Self, u8), old: Option<RouteEntry>) -> Undo;
    /// The batch's changes of the family's routes to composites
    /// (`TablesWriter::ecmp_changes`, `ecmp_changes6`).
    fn ecmp_changes<'a>(
        v4: &'a mut Vec<(VrfId, u32, u8, bool)>,
        v6: &'a mut Vec<(VrfId, u128, u8, bool)>,
    ) -> &'a mut Vec<(VrfId, Self, u8, bool)>;
}

impl Family for u32 {
    fn routes(r: &mut VrfRoutes) -> &mut Prefixes<u32> {
        r.sorted = None;
        &mut r.v4
    }
    fn fib(v: &mut Vrf) -> &mut Arc<Fib<u32>> {
        &mut v.v4
    }
    fn spares(s: &mut SpareTables) -> &mut AHashMap<VrfId, Fib<u32>> {
        &mut s.v4
    }
    fn undo(vrf: VrfId, key: (u32, u8), old: Option<RouteEntry>) -> Undo {
        Undo::V4(vrf, key, old)
    }
    fn ecmp_changes<'a>(
        v4: &'a mut Vec<(VrfId, u32, u8, bool)>,
        _: &'a mut Vec<(VrfId, u128, u8, bool)>,
    ) -> &'a mut Vec<(VrfId, u32, u8, bool)> {
        v4
    }
}

impl Family for u128 {
    fn routes(r: &mut VrfRoutes) -> &mut Prefixes<u128> {
        r.sorted = None;
        &mut r.v6
    }
    fn fib(v: &mut Vrf) -> &mut Arc<Fib<u128>> {
        &mut v.v6
    }
    fn spares(s: &mut SpareTables) -> &mut AHashMap<VrfId, Fib<u128>> {
        &mut s.v6
    }
    fn undo(vrf: VrfId, key: (u128, u8), old: Option<RouteEntry>) -> Undo {
        Undo::V6(vrf, key, old)
    }
    fn ecmp_changes<'a>(
        _: &'a mut Vec<(VrfId, u32, u8, bool)>,
        v6: &'a mut Vec<(VrfId, u128, u8, bool)>,
    ) -> &'a mut Vec<(VrfId, u128, u8, bool)> {
        v6
    }
}

/// `TablesWriter::count_ecmp_blocks` for one family: `changes` counted into
/// `index`, each changed VRF's hint made from it (and from the VRF's routes
/// of the family, `prefixes`, when its set must be sized again) and
/// published (`publish`).
fn count_hints<A: HintFamily + FibKey>(
    changes: &[(VrfId, A, u8, bool)],
    index: &mut AHashMap<VrfId, EcmpBlockIndex<A>>,
    routes: &AHashMap<VrfId, VrfRoutes>,
    w: &mut Tables,
    prefixes: impl Fn(&VrfRoutes) -> &Prefixes<A>,
    publish: impl Fn(&mut Vrf, EcmpBlocks<A>),
) {
    let mut changed: Vec<VrfId> = Vec::new();
    for &(vrf, addr, len, add) in changes {
        index.entry(vrf).or_default().route(addr, len, add);
        changed.push(vrf);
    }
    changed.sort_unstable();
    changed.dedup();
    for id in changed {
        let (Some(counted), Some(routes)) = (index.get_mut(&id), routes.get(&id)) else {
            index.remove(&id);
            continue;
        };
        let to_composites = || {
            prefixes(routes)
                .iter()
                .filter(|&(_, e)| w.nexthop(e.target.nh).is_some_and(NextHop::is_composite))
                .map(|(&key, _)| key)
        };
        let hint = counted.hint(to_composites);
        if counted.is_empty() {
            index.remove(&id);
        }
        if let Some(vrf) = w.vrfs.get_mut(id as usize) {
            publish(Arc::make_mut(vrf), hint);
        }
    }
}

#[derive(Clone, Copy)]
enum Dep {
    Vif(VifIndex),
    Vrf(VrfId),
    Nh(NhId),
}

fn deps(nh: &NextHop, mut f: impl FnMut(Dep)) {
    match nh {
        NextHop::Discard | NextHop::Receive => {}
        NextHop::Encap { oif, .. } => f(Dep::Vif(*oif)),
        NextHop::Tunnel(t) => f(Dep::Vif(t.oif)),
        NextHop::Composite(g) => g.members().iter().for_each(|m| f(Dep::Nh(m.nh))),
        NextHop::VrfLookup { vrf } => f(Dep::Vrf(*vrf)),
    }
}

fn bump(refs: &mut super::CowVec<u32>, i: u32, up: bool) {
    let cur = refs.get(i as usize).copied().unwrap_or(0);
    let next = if up { cur + 1 } else { cur.saturating_sub(1) };
    let _ = refs.set(i as usize, (next > 0).then_some(next));
}

/// Counts a floating IP in (or out of) VRF `vrf`, which tracks flows while it has any.
fn count_floating(w: &mut Tables, vrf: VrfId, up: bool) {
    if let Some(old) = w.vrf(vrf) {
        let n = if up { old.floating_ips + 1 } else { old.floating_ips.saturating_sub(1) };
        let _ = w.vrfs.set(vrf as usize, Some(Arc::new(Vrf { floating_ips: n, ..old.clone() })));
    }
}

fn check_label(field: &'static str, label: Label) -> Result<(), TableError> {
    if label != RouteTarget::NO_LABEL && label > mpls::MAX_LABEL {
        return Err(TableError::OutOfRange { field, value: label.into(), min: 0, max: mpls::MAX_LABEL.into() });
    }
    Ok(())
}

/// The networks (VRFs) `p`'s rules name, once per mention, with the field
/// each is in.
fn named_networks(p: &crate::flow::Policy) -> impl Iterator<Item = (&'static str, VrfId)> + '_ {
    use crate::flow::Endpoint;
    p.rules.iter().flat_map(|r| {
        let side = |field, e: &Endpoint| match *e {
            Endpoint::Network(n) => Some((field, n)),
            _ => None,
        };
        side("rules.src.network", &r.src).into_iter().chain(side("rules.dst.network", &r.dst))
    })
}

/// The vifs' interfaces and the VRFs' names in a batch's result, to find
/// an object's name held by another.
struct BatchNames<'t> {
    vifs: AHashMap<&'t str, Holders>,
    vrfs: AHashMap<&'t str, Holders>,
}

impl<'t> BatchNames<'t> {
    fn of(w: &'t Tables) -> Self {
        BatchNames {
            vifs: holders(w.vifs().map(|v| (v.name.as_str(), v.index))),
            vrfs: holders(w.vrfs().map(|v| (v.name.as_str(), v.id))),
        }
    }
}

/// The first two objects (by id) that hold a name: enough to name another
/// holder to any of them.
#[derive(Clone, Copy)]
struct Holders(u32, Option<u32>);

impl Holders {
    fn other_than(self, id: u32) -> Option<u32> {
        match self {
            Holders(first, Some(second)) => Some(if first == id { second } else { first }),
            Holders(first, None) => (first != id).then_some(first),
        }
    }
}

fn holders<'t>(named: impl Iterator<Item = (&'t str, u32)>) -> AHashMap<&'t str, Holders> {
    let mut out: AHashMap<&str, Holders> = AHashMap::new();
    for (name, id) in named {
        out.entry(name).and_modify(|h| h.1 = h.1.or(Some(id))).or_insert(Holders(id, None));
    }
    out
}

/// A vif's own addresses, by field.
fn vif_addresses(v: &Vif) -> [(&'static str, Option<IpAddr>); 2] {
    [("ipv4", v.ipv4.map(IpAddr::V4)), ("ipv6", v.ipv6.map(IpAddr::V6))]
}

/// A VRF's gateways, by field, in the order of `vif_addresses`' families.
fn gateways(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> [(&'static str, Option<IpAddr>); 2] {
    [("gateway_v4", v4.map(IpAddr::V4)), ("gateway_v6", v6.map(IpAddr::V6))]
}

/// The first of `addresses` no station could have, as the error for its field.
fn check_station_addresses(
    addresses: impl IntoIterator<Item = (&'static str, Option<IpAddr>)>,
) -> Result<(), TableError> {
    for (field, a) in addresses {
        if let Some((a, why)) = a.and_then(|a| Some((a, super::station_address_problem(a)?))) {
            return Err(TableError::Invalid { field, reason: format!("{a} is {why}") });
        }
    }
    Ok(())
}

fn check_node_address(field: &'static str, a: Ipv4Addr) -> Result<(), TableError> {
    if !super::nexthop::is_tunnel_endpoint(a) {
        return Err(TableError::Invalid { field, reason: format!("{a} is not an address a node's tunnel can use") });
    }
    Ok(())
}

fn check_index(field: &'static str, value: u32, capacity: usize, min: u64) -> Result<(), TableError> {
    if u64::from(value) < min || value as usize >= capacity {
        return Err(TableError::OutOfRange { field, value: value.into(), min, max: capacity.saturating_sub(1) as u64 });
    }
    Ok(())
}

impl TablesWriter {
    /// A writer over empty tables, and the handle readers load from.
    pub fn new(limits: super::Limits) -> (TablesWriter, TablesHandle) {
        let current = Arc::new(Tables::new(limits));
        let handle = TablesHandle { current: Arc::new(ArcSwap::new(Arc::clone(&current))) };
        let w = TablesWriter {
            handle: handle.clone(),
            current,
            routes: AHashMap::new(),
            undo: Vec::new(),
            ecmp_changes: Vec::new(),
            ecmp_blocks: AHashMap::new(),
            ecmp_changes6: Vec::new(),
            ecmp_blocks6: AHashMap::new(),
            policy_changes: Vec::new(),
            network_moves: Vec::new(),
            retired: Vec::new(),
            node_pool: NodePool::new(),
            spares: SpareTables::default(),
            node: None,
        };
        (w, handle)
    }

    /// Names the node's fabric interface and underlay address: from now on
    /// the fabric vif must be on that interface with that address, and no
    /// other vif may be on it.
    pub fn set_node(&mut self, fabric: &str, underlay: Ipv4Addr) {
        self.node = Some((fabric.to_owned(), underlay));
    }

    /// A handle readers load snapshots from.
    pub fn handle(&self) -> TablesHandle {
        self.handle.clone()
    }

    /// The last published snapshot.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.current
    }

    /// Bytes held for VRF `vrf`: its tries and the writer's prefix lists,
    /// counted from the structures' sizes and capacities.
    pub fn vrf_memory_bytes(&self, vrf: VrfId) -> usize {
        let fibs = self.current.vrf(vrf).map_or(0, |v| v.v4.memory_bytes() + v.v6.memory_bytes());
        let lists = self.routes.get(&vrf).map_or(0, |r| r.v4.memory_bytes() + r.v6.memory_bytes());
        fibs + lists
    }

    /// Number of routes of one family in a VRF.
    pub fn route_count(&self, vrf: VrfId) -> (usize, usize) {
        self.routes.get(&vrf).map_or((0, 0), |r| (r.v4.len(), r.v6.len()))
    }

    /// The route for exactly `prefix` in VRF `vrf`.
    pub fn route(&self, vrf: VrfId, prefix: Prefix) -> Option<RouteSpec> {
        let r = self.routes.get(&vrf)?;
        let entry = match prefix.addr {
            IpAddr::V4(a) => r.v4.get(&(u32::from(a), prefix.len)),
            IpAddr::V6(a) => r.v6.get(&(u128::from(a), prefix.len)),
        }?;
        Some(RouteSpec::from_entry(vrf, prefix, *entry))
    }

    /// Up to `limit` routes of VRF `vrf`, in address order (a shorter prefix
    /// before the longer ones at the same address), IPv4 before IPv6,
    /// starting after `after`. Dumps of any size are read page by page; the
    /// first page after a change sorts the VRF's prefixes once.
    pub fn routes_page(&mut self, vrf: VrfId, after: Option<Prefix>, limit: usize) -> Option<Vec<RouteSpec>> {
        let r = self.routes.get_mut(&vrf)?;
        if r.sorted.is_none() {
            let mut k4: Vec<(u32, u8)> = r.v4.keys().copied().collect();
            let mut k6: Vec<(u128, u8)> = r.v6.keys().copied().collect();
            k4.sort_unstable();
            k6.sort_unstable();
            r.sorted = Some((k4, k6));
        }
        let (k4, k6) = r.sorted.as_ref()?;
        let (from4, from6) = match after.map(|p| (p.addr, p.len)) {
            None => (0, 0),
            Some((IpAddr::V4(a), l)) => (k4.partition_point(|k| *k <= (u32::from(a), l)), 0),
            Some((IpAddr::V6(a), l)) => (k4.len(), k6.partition_point(|k| *k <= (u128::from(a), l))),
        };
        let spec = |addr: IpAddr, len: u8, e: RouteEntry| RouteSpec::from_entry(vrf, Prefix { addr, len }, e);
        let v4 = k4[from4..].iter().map(|&(a, l)| spec(IpAddr::V4(a.into()), l, r.v4[&(a, l)]));
        let v6 = k6[from6..].iter().map(|&(a, l)| spec(IpAddr::V6(a.into()), l, r.v6[&(a, l)]));
        Some(v4.chain(v6).take(limit).collect())
    }

    /// Applies `ops` in order. Either all of them take effect, published to
    /// readers at once, or none does and the error names the failing one.
    /// Returns the generation of the new snapshot.
    pub fn apply(&mut self, ops: &[Op]) -> Result<u64, BatchError> {
        let mut work = (*self.current).clone();
        self.ecmp_changes.clear();
        self.ecmp_changes6.clear();
        self.policy_changes.clear();
        self.network_moves.clear();
        self.spares.changed.clear();
        for (index, op) in ops.iter().enumerate() {
            if let Some(ahead) = ops.get(index + PREFETCH_AHEAD) {
                prefetch_route_change(&work, ahead);
            }
            if let Err(error) = self.apply_one(&mut work, op) {
                self.rollback();
                self.node_pool.abandon();
                return Err(BatchError { index, error });
            }
        }
        let mut names = None;
        for (index, op) in ops.iter().enumerate() {
            if let Err(error) = Self::check_against_others(&work, op, &mut names) {
                drop(names);
                self.rollback();
                self.node_pool.abandon();
                return Err(BatchError { index, error });
            }
        }
        self.undo.clear();
        // A label lands by its next hop and, for a pod's, the vif's VRF:
        // a batch that changes none of those leaves every landing as it was.
        let lands = |o: &Op| match o {
            Op::Add(o) | Op::Update(o) => matches!(o, Object::Vif(_) | Object::NextHop(..) | Object::Label(..)),
            Op::Delete(k) => matches!(k, ObjectKey::Vif(_) | ObjectKey::NextHop(_) | ObjectKey::Label(_)),
        };
        if ops.iter().any(lands) {
            work.land_labels();
        }
        self.count_ecmp_blocks(&mut work);
        self.policies_changed_by_routes(&mut work);
        self.judge_again_reaching(&mut work);
        work.generation += 1;
        work.stamp = super::next_stamp();
        let generation = work.generation;
        let published = Arc::new(work);
        // `store` turns every reader's claim on the old snapshot into a real
        // reference before it returns, so the counts below are exact.
        self.handle.current.store(Arc::clone(&published));
        let old = std::mem::replace(&mut self.current, published);
        let mut changed = std::mem::take(&mut self.spares.changed);
        changed.sort_unstable();
        changed.dedup();
        self.retired.push((old, changed));
        self.reclaim();
        Ok(generation)
    }

    /// Counts the batch's changes of routes to composites into the VRFs'
    /// hints, and publishes each changed VRF's hint once, per family.
    fn count_ecmp_blocks(&mut self, w: &mut Tables) {
        count_hints(&self.ecmp_changes, &mut self.ecmp_blocks, &self.routes, w, |r| &r.v4, |v, h| v.ecmp_blocks = h);
        count_hints(&self.ecmp_changes6, &mut self.ecmp_blocks6, &self.routes, w, |r| &r.v6, |v, h| v.ecmp_blocks6 = h);
    }

    /// Frees the replaced snapshots no worker holds any more, keeping their
    /// route tables that the current snapshot no longer shares as spares
    /// (`spares`), and frees the spare trie nodes past what the batches
    /// since the last call made (`NodePool::trim`). `apply` calls it; a
    /// daemon also calls it now and then, so that the last batch's
    /// snapshot does not wait for the next one, and a writer gone quiet
    /// keeps no spare nodes. Returns how many snapshots it freed.
    pub fn reclaim(&mut self) -> usize {
        let (held, freed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retired).into_iter().partition(|(t, _)| Arc::strong_count(t) > 1);
        self.retired = held;
        let count = freed.len();
        for (t, changed) in freed {
            self.keep_spares(t, &changed);
        }
        self.node_pool.trim();
        count
    }

    /// Frees snapshot `t`, which no worker holds, keeping as spares the
    /// route tables of VRFs `changed` that the current snapshot no longer
    /// shares with it, each made a copy of the current one at once: so a
    /// spare holds only nodes the current tables hold, never one the node
    /// pool waits for. A spare never outlives its VRF: a VRF must lose its
    /// routes to go, which takes the spare (`change_fib`), and a table
    /// emptied is too small to be given another.
    fn keep_spares(&mut self, t: Arc<Tables>, changed: &[VrfId]) {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &id in changed {
            let (Some(v), Some(now)) = (t.vrf(id), self.current.vrf(id)) else { continue };
            if !Arc::ptr_eq(&now.v4, &v.v4) {
                v4.push((v.id, Arc::clone(&v.v4)));
            }
            if !Arc::ptr_eq(&now.v6, &v.v6) {
                v6.push((v.id, Arc::clone(&v.v6)));
            }
        }
        drop(t);
        for (id, fib) in v4 {
            keep_spare(&mut self.spares, id, fib, &self.current.vrf(id).expect("found above").v4);
        }
        for (id, fib) in v6 {
            keep_spare(&mut self.spares, id, fib, &self.current.vrf(id).expect("found above").v6);
        }
    }

    /// Replaced snapshots still held by a worker.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Trie nodes the writer took out of its tables and keeps to write
    /// again: spare, or waiting for a replaced snapshot to go.
    pub fn pooled_nodes(&self) -> usize {
        self.node_pool.len()
    }

    /// Bytes of those nodes: memory the writer holds outside any VRF's
    /// routes (`vrf_memory_bytes`).
    pub fn pooled_node_bytes(&self) -> usize {
        self.node_pool.memory_bytes()
    }

    /// Bytes of the spare route tables the writer keeps (`spares`), but
    /// for the nodes they share with the current tables.
    pub fn spare_bytes(&self) -> usize {
        self.spares.v4.values().map(Fib::list_bytes).sum::<usize>()
            + self.spares.v6.values().map(Fib::list_bytes).sum::<usize>()
    }

    fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::V4(vrf, key, old) => restore(self.routes.get_mut(&vrf).map(u32::routes), key, old),
                Undo::V6(vrf, key, old) => restore(self.routes.get_mut(&vrf).map(u128::routes), key, old),
                Undo::VrfCreated(vrf) => {
                    self.routes.remove(&vrf);
                }
                Undo::VrfRemoved(vrf) => {
                    self.routes.insert(vrf, VrfRoutes::default());
                }
            }
        }
    }

    fn apply_one(&mut self, w: &mut Tables, op: &Op) -> Result<(), TableError> {
        match op {
            Op::Add(o) | Op::Update(o) => {
                let add = matches!(op, Op::Add(_));
                match o {
                    Object::Vif(v) => self.put_vif(w, v, add),
                    Object::Vrf(v) => self.put_vrf(w, v, add),
                    Object::NextHop(id, nh) => self.put_nh(w, *id, nh, add),
                    Object::Route(r) => self.put_route(w, r, add),
                    Object::Label(l, nh) => self.put_label(w, *l, *nh, add),
                    Object::Policy(vrf, p) => self.put_policy(w, *vrf, Some(p), add),
                }
            }
            Op::Delete(k) => match *k {
                ObjectKey::Vif(i) => self.del_vif(w, i),
                ObjectKey::Vrf(id) => self.del_vrf(w, id),
                ObjectKey::NextHop(id) => self.del_nh(w, id),
                ObjectKey::Route(vrf, p) => self.del_route(w, vrf, p),
                ObjectKey::Label(l) => self.del_label(w, l),
                ObjectKey::Policy(vrf) => self.put_policy(w, vrf, None, false),
            },
        }
    }

    fn exists_check(what: &'static str, id: u32, present: bool, add: bool) -> Result<(), TableError> {
        match (present, add) {
            (true, true) => Err(TableError::Exists { what, id: id.to_string() }),
            (false, false) => Err(TableError::NotFound { what, id: id.to_string() }),
            _ => Ok(()),
        }
    }

    fn put_vif(&mut self, w: &mut Tables, v: &Vif, add: bool) -> Result<(), TableError> {
        check_index("index", v.index, w.limits.vifs, 0)?;
        let old = w.vif(v.index).cloned();
        Self::exists_check("vif", v.index, old.is_some(), add)?;
        if w.vrf(v.vrf).is_none() {
            return Err(TableError::MissingReference { field: "vrf", what: "VRF", id: v.vrf });
        }
        if !super::vif::MTU_RANGE.contains(&v.mtu) {
            let (min, max) = (*super::vif::MTU_RANGE.start(), *super::vif::MTU_RANGE.end());
            return Err(TableError::OutOfRange { field: "mtu", value: v.mtu.into(), min: min.into(), max: max.into() });
        }
        self.check_vif_on_node(v)?;
        Self::check_vif_addresses(v)?;
        if !v.mac.is_unicast() {
            return Err(TableError::Invalid { field: "mac", reason: format!("{} is not a unicast address", v.mac) });
        }
        for (i, fip) in v.floating.iter().enumerate() {
            if v.floating[..i].iter().any(|o| (o.address, o.vrf) == (fip.address, fip.vrf)) {
                return Err(TableError::Invalid {
                    field: "floating_ips",
                    reason: format!("{} in VRF {} is given twice", fip.address, fip.vrf),
                });
            }
            if w.vrf(fip.vrf).is_none() {
                return Err(TableError::MissingReference { field: "floating_ips.vrf", what: "VRF", id: fip.vrf });
            }
            if v.ipv4.is_none() || v.kind != VifKind::Virtual {
                return Err(TableError::Invalid {
                    field: "floating_ips",
                    reason: "a floating IP needs a virtual vif with an IPv4 address to NAT to".into(),
                });
            }
            if let Err(reason) = super::vif::check_port_maps(&fip.ports) {
                return Err(TableError::Invalid { field: "floating_ips.ports", reason });
            }
        }
        if let Some(old) = &old {
            for fip in &old.floating {
                bump(&mut w.vrf_refs, fip.vrf, false);
                count_floating(w, fip.vrf, false);
            }
            if old.kind != v.kind && w.vif_refs.get(v.index as usize).is_some() {
                return Err(TableError::Invalid {
                    field: "kind",
                    reason: "cannot change the kind of a vif that next hops use".into(),
                });
            }
            bump(&mut w.vrf_refs, old.vrf, false);
        }
        bump(&mut w.vrf_refs, v.vrf, true);
        for fip in &v.floating {
            bump(&mut w.vrf_refs, fip.vrf, true);
            count_floating(w, fip.vrf, true);
        }
        let _ = w.vifs.set(v.index as usize, Some(Arc::new(v.clone())));
        Ok(())
    }

    /// Whether `v` fits the node: its interface one Linux could have, the
    /// node's fabric for the fabric vif alone (with the underlay address);
    /// that no other vif is on it is checked on the batch's result
    /// (`check_against_others`): two ports on one interface would fight
    /// over its XDP program.
    fn check_vif_on_node(&self, v: &Vif) -> Result<(), TableError> {
        let invalid = |reason: String| Err(TableError::Invalid { field: "name", reason });
        if let Some(why) = super::interface_name_problem(&v.name) {
            return invalid(format!("{:?}: {why}", v.name));
        }
        if let Some((fabric, underlay)) = &self.node {
            if v.kind == VifKind::Fabric && v.ipv4 != Some(*underlay) {
                return Err(TableError::Invalid {
                    field: "ipv4",
                    reason: format!(
                        "the fabric vif's address is this node's underlay address, {underlay} (node.underlay)"
                    ),
                });
            }
            if v.kind == VifKind::Fabric && v.name != *fabric {
                return invalid(format!(
                    "the fabric vif must be on this node's fabric interface, {fabric} (node.fabric), not {}",
                    v.name
                ));
            }
            if v.kind != VifKind::Fabric && v.name == *fabric {
                return invalid(format!(
                    "{fabric} is this node's fabric interface (node.fabric): only the fabric vif may be on it"
                ));
            }
        }
        Ok(())
    }

    /// A vif's own addresses, and its floating IPs, must be ones a station
    /// could have; a floating IP is not its own address.
    fn check_vif_addresses(v: &Vif) -> Result<(), TableError> {
        let floating = v.floating.iter().map(|f| ("floating_ips.address", Some(IpAddr::V4(f.address))));
        check_station_addresses(vif_addresses(v).into_iter().chain(floating))?;
        for f in &v.floating {
            if (Some(f.address), f.vrf) == (v.ipv4, v.vrf) {
                return Err(TableError::Invalid {
                    field: "floating_ips.address",
                    reason: format!("{} in VRF {} is the vif's own address", f.address, f.vrf),
                });
            }
        }
        Ok(())
    }

    /// What an object may not share with others, checked on the batch's
    /// result (`names`: the vifs' interfaces and the VRFs' names there, made
    /// at the first need), so that a batch may move a name or an address
    /// from one object to another in any order: a vif's interface is no
    /// other vif's, a VRF's name no other VRF's, and no vif holds its VRF's
    /// gateway (which vrouterd answers for).
    fn check_against_others<'t>(w: &'t Tables, op: &Op, names: &mut Option<BatchNames<'t>>) -> Result<(), TableError> {
        let invalid = |field, reason: String| Err(TableError::Invalid { field, reason });
        match op {
            Op::Add(Object::Vif(v)) | Op::Update(Object::Vif(v)) => {
                // The vif as the batch left it, if it did.
                let Some(v) = w.vif(v.index) else { return Ok(()) };
                if let Some(other) = names
                    .get_or_insert_with(|| BatchNames::of(w))
                    .vifs
                    .get(v.name.as_str())
                    .and_then(|h| h.other_than(v.index))
                {
                    return invalid("name", format!("interface {} is vif {other}'s already", v.name));
                }
                let Some(vrf) = w.vrf(v.vrf) else { return Ok(()) };
                for ((field, a), (_, g)) in vif_addresses(v).into_iter().zip(gateways(vrf.gateway_v4, vrf.gateway_v6)) {
                    if let Some(a) = a.filter(|&a| Some(a) == g) {
                        return invalid(field, format!("{a} is VRF {}'s gateway, which vrouterd answers for", v.vrf));
                    }
                }
                Ok(())
            }
            Op::Add(Object::Vrf(spec)) | Op::Update(Object::Vrf(spec)) => {
                let Some(v) = w.vrf(spec.id) else { return Ok(()) };
                if let Some(other) = names
                    .get_or_insert_with(|| BatchNames::of(w))
                    .vrfs
                    .get(v.name.as_str())
                    .and_then(|h| h.other_than(v.id))
                {
                    return invalid("name", format!("VRF {other} is named {:?} already", v.name));
                }
                for (field, g) in gateways(v.gateway_v4, v.gateway_v6) {
                    let Some(g) = g else { continue };
                    // Linear in the vifs held, for a change as rare as a network's.
                    let holder =
                        w.vifs().find(|x| x.vrf == v.id && vif_addresses(x).iter().any(|&(_, a)| a == Some(g)));
                    if let Some(x) = holder {
                        return invalid(field, format!("{g} is vif {}'s address", x.index));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn del_vif(&mut self, w: &mut Tables, i: VifIndex) -> Result<(), TableError> {
        let Some(old) = w.vif(i).cloned() else {
            return Err(TableError::NotFound { what: "vif", id: i.to_string() });
        };
        if let Some(&refs) = w.vif_refs.get(i as usize) {
            return Err(TableError::InUse { what: "vif", id: i.to_string(), refs });
        }
        bump(&mut w.vrf_refs, old.vrf, false);
        for fip in &old.floating {
            bump(&mut w.vrf_refs, fip.vrf, false);
            count_floating(w, fip.vrf, false);
        }
        let _ = w.vifs.set(i as usize, None);
        Ok(())
    }

    fn put_vrf(&mut self, w: &mut Tables, v: &VrfSpec, add: bool) -> Result<(), TableError> {
        check_index("id", v.id, w.limits.vrfs, 0)?;
        let old = w.vrfs.get(v.id as usize).cloned();
        Self::exists_check("VRF", v.id, old.is_some(), add)?;
        Self::check_vrf(v)?;
        let vrf = match old {
            Some(o) => Vrf { name: v.name.clone(), gateway_v4: v.gateway_v4, gateway_v6: v.gateway_v6, ..(*o).clone() },
            None => {
                self.routes.insert(v.id, VrfRoutes::default());
                self.undo.push(Undo::VrfCreated(v.id));
                Vrf {
                    id: v.id,
                    name: v.name.clone(),
                    gateway_v4: v.gateway_v4,
                    gateway_v6: v.gateway_v6,
                    v4: Arc::new(Fib::new()),
                    v6: Arc::new(Fib::new()),
                    policy: None,
                    policy_generation: 0,
                    policy_changed_at: 0,
                    reached_changes: ReachedChanges::default(),
                    floating_ips: 0,
                    imported_elsewhere: 0,
                    ecmp_routes: 0,
                    ecmp_blocks: EcmpBlocks::default(),
                    ecmp_blocks6: EcmpBlocks::default(),
                }
            }
        };
        let _ = w.vrfs.set(v.id as usize, Some(Arc::new(vrf)));
        Ok(())
    }

    /// A VRF's name is its own and not a number (vrctl takes a VRF by
    /// either), and its gateways are addresses a station could have and no
    /// vif of it holds.
    fn check_vrf(v: &VrfSpec) -> Result<(), TableError> {
        let invalid = |field, reason: String| Err(TableError::Invalid { field, reason });
        if v.name.is_empty() {
            return invalid("name", "must not be empty".into());
        }
        if v.name.parse::<u64>().is_ok() {
            return invalid("name", format!("{:?} is a number, which vrctl would take for a VRF's id", v.name));
        }
        check_station_addresses(gateways(v.gateway_v4, v.gateway_v6))
    }

    /// Sets (`Some`) or removes (`None`) VRF `id`'s policy. Add needs none
    /// there yet, update and delete need one.
    fn put_policy(
        &mut self,
        w: &mut Tables,
        id: VrfId,
        p: Option<&crate::flow::Policy>,
        add: bool,
    ) -> Result<(), TableError> {
        let Some(old) = w.vrf(id).cloned() else {
            return Err(TableError::MissingReference { field: "vrf", what: "VRF", id });
        };
        let present = old.policy.is_some();
        match (present, add, p.is_some()) {
            (true, true, _) => return Err(TableError::Exists { what: "policy of VRF", id: id.to_string() }),
            (false, false, _) => return Err(TableError::NotFound { what: "policy of VRF", id: id.to_string() }),
            _ => {}
        }
        // The networks its rules name exist, and stay while named, as a
        // route's network does: a rule naming a VRF that is gone would
        // judge the next VRF given its id.
        for (field, n) in p.into_iter().flat_map(named_networks) {
            if w.vrf(n).is_none() {
                return Err(TableError::MissingReference { field, what: "VRF", id: n });
            }
        }
        for (_, n) in old.policy.iter().flat_map(|o| named_networks(&o.policy)) {
            bump(&mut w.vrf_refs, n, false);
        }
        for (_, n) in p.into_iter().flat_map(named_networks) {
            bump(&mut w.vrf_refs, n, true);
        }
        let generation = old.policy_generation.wrapping_add(1);
        let policy = p.map(|p| Arc::new(super::VrfPolicy { policy: p.clone(), compiled: p.compile(), generation }));
        let _ = w.vrfs.set(
            id as usize,
            Some(Arc::new(Vrf { policy, policy_generation: generation, policy_changed_at: generation, ..old })),
        );
        self.policy_changes.push(id);
        Ok(())
    }

    /// Takes a batch that moved addresses of a VRF to another network, where
    /// the VRF's policy names networks, for a change of that policy: the
    /// rules that name networks now match other addresses. The VRF's pairs
    /// are decided again, and those reaching its pods from other VRFs
    /// (`judge_again_reaching`), as by a policy change, once a batch
    /// (whichever prefix moved: a move is rare, a route's network changed
    /// or one of another network laid over or taken off a covering one,
    /// and a pair does not keep its addresses' routes). A pod's route
    /// added or removed, the common case, moves nothing (`network_moved`).
    fn policies_changed_by_routes(&mut self, w: &mut Tables) {
        for &id in &self.network_moves {
            if self.policy_changes.contains(&id) {
                continue;
            }
            if let Some(vrf) = w.vrfs.get_mut(id as usize) {
                let vrf = Arc::make_mut(vrf);
                vrf.policy_generation = vrf.policy_generation.wrapping_add(1);
                vrf.policy_changed_at = vrf.policy_generation;
                self.policy_changes.push(id);
            }
        }
    }

    /// Notes that the batch moved addresses of `vrf` from network `was` to
    /// `now` (`None`: no route), where that matters to its policy. Giving
    /// unrouted addresses a network, or taking theirs away, is a pod added
    /// or removed, the common case, and moves nothing, rather than every
    /// pod's arrival sending the VRF's pairs through the policy again: a
    /// pair to an unrouted address was never made, and one from an
    /// unrouted source (a remote pod whose route came after its first
    /// packet) is decided again on each packet until its route comes
    /// (`DirSpec::unrouted`). A removed pod's pairs idle out.
    fn network_moved(&mut self, w: &Tables, vrf: VrfId, was: Option<VrfId>, now: Option<VrfId>) {
        let moved = matches!((was, now), (Some(a), Some(b)) if a != b);
        if moved && !self.network_moves.contains(&vrf) && names_networks(w, vrf) {
            self.network_moves.push(vrf);
        }
    }

    /// Moves the policy generation of the VRFs whose flows may reach a pod
    /// of a VRF whose policy the batch changed: such a flow is judged by
    /// the pod's network's policy too (`pipeline::flow::judge`), wherever
    /// it is kept. A VRF's flows can reach a pod of VRF `o` on this node by
    /// a route to the pod's next hop, or to a composite with it as a
    /// member, or to a lookup in another VRF (taken to reach anything), and
    /// a fabric vif's VRF by a label to such a composite. Each pair of a
    /// VRF told is checked once, on its next packet, and decided again if
    /// the change can judge it (`pipeline::flow::stale`). The other VRFs'
    /// pairs are not even checked: one tenant's policy change does not send
    /// every flow of the node off the fast path.
    fn judge_again_reaching(&self, w: &mut Tables) {
        if self.policy_changes.is_empty() {
            return;
        }
        let changed = &self.policy_changes;
        let to_changed_pod = |nh: NhId| match w.nexthop(nh) {
            Some(NextHop::Encap { oif, .. }) => {
                w.vif(*oif).is_some_and(|v| v.kind == VifKind::Virtual && changed.contains(&v.vrf))
            }
            _ => false,
        };
        // By next hop, looked up once: a VRF may hold millions of routes, a
        // node far fewer next hops.
        let mut reaching = vec![false; w.nexthops().map(|(id, _)| id as usize + 1).max().unwrap_or(0)];
        for (id, nh) in w.nexthops() {
            reaching[id as usize] = match nh {
                NextHop::Composite(g) => g.members().iter().any(|m| to_changed_pod(m.nh)),
                NextHop::VrfLookup { .. } => true,
                _ => to_changed_pod(id),
            };
        }
        if !reaching.contains(&true) {
            return;
        }
        let reaches = |nh: NhId| reaching.get(nh as usize).copied().unwrap_or(false);
        // By the tables' targets, each once, not by prefix: a million
        // routes to one gateway are one target.
        let by_route = |id: VrfId| {
            w.vrf(id).is_some_and(|v| v.v4.targets_in_use().chain(v.v6.targets_in_use()).any(|t| reaches(t.nh)))
        };
        let by_label = w.labels().any(|(_, nh)| matches!(w.nexthop(nh), Some(NextHop::Composite(_))) && reaches(nh));
        let fabric_vrfs: Vec<VrfId> = if by_label {
            w.vifs().filter(|v| v.kind != VifKind::Virtual).map(|v| v.vrf).collect()
        } else {
            Vec::new()
        };
        let told: Vec<VrfId> = w
            .vrfs()
            .map(|v| v.id)
            .filter(|id| !changed.contains(id) && (fabric_vrfs.contains(id) || by_route(*id)))
            .collect();
        for id in told {
            if let Some(vrf) = w.vrfs.get_mut(id as usize) {
                let vrf = Arc::make_mut(vrf);
                vrf.policy_generation = vrf.policy_generation.wrapping_add(1);
                // Every network changed in the batch, reached or not: a
                // pair reaches one only if the VRF's routes did.
                for &network in changed {
                    vrf.reached_changes.record(network, vrf.policy_generation);
                }
            }
        }
    }

    fn del_vrf(&mut self, w: &mut Tables, id: VrfId) -> Result<(), TableError> {
        let Some(vrf) = w.vrf(id).cloned() else {
            return Err(TableError::NotFound { what: "VRF", id: id.to_string() });
        };
        // Its own policy goes with it, and the references its rules held
        // (on itself too); a refusal below discards the batch's tables.
        for (_, n) in vrf.policy.iter().flat_map(|o| named_networks(&o.policy)) {
            bump(&mut w.vrf_refs, n, false);
        }
        if let Some(&refs) = w.vrf_refs.get(id as usize) {
            return Err(TableError::InUse { what: "VRF", id: id.to_string(), refs });
        }
        let (v4, v6) = self.route_count(id);
        if v4 + v6 > 0 {
            return Err(TableError::InUse { what: "VRF", id: id.to_string(), refs: (v4 + v6) as u32 });
        }
        self.routes.remove(&id);
        self.undo.push(Undo::VrfRemoved(id));
        let _ = w.vrfs.set(id as usize, None);
        Ok(())
    }

    fn check_nh(w: &Tables, id: NhId, nh: &NextHop) -> Result<(), TableError> {
        let vif_of =
            |field, oif: VifIndex| w.vif(oif).ok_or(TableError::MissingReference { field, what: "vif", id: oif });
        match nh {
            NextHop::Discard | NextHop::Receive => Ok(()),
            NextHop::Encap { oif, smac, dmac } => {
                vif_of("oif", *oif)?;
                for (field, mac) in [("smac", smac), ("dmac", dmac)] {
                    if !mac.is_unicast() {
                        return Err(TableError::Invalid { field, reason: format!("{mac} is not a unicast address") });
                    }
                }
                Ok(())
            }
            NextHop::Tunnel(t) => {
                if vif_of("oif", t.oif)?.kind != VifKind::Fabric {
                    return Err(TableError::Invalid {
                        field: "oif",
                        reason: format!("vif {} is not a fabric vif", t.oif),
                    });
                }
                check_node_address("sip", t.sip)?;
                check_node_address("dip", t.dip)?;
                if t.dip == t.sip {
                    return Err(TableError::Invalid {
                        field: "dip",
                        reason: format!("{} is this node's own (sip): a tunnel leads to another node", t.dip),
                    });
                }
                Ok(())
            }
            NextHop::VrfLookup { vrf } => match w.vrf(*vrf) {
                Some(_) => Ok(()),
                None => Err(TableError::MissingReference { field: "vrf", what: "VRF", id: *vrf }),
            },
            NextHop::Composite(g) => {
                let n = g.members().len();
                if n == 0 || n > MAX_MEMBERS {
                    return Err(TableError::OutOfRange {
                        field: "members",
                        value: n as u64,
                        min: 1,
                        max: MAX_MEMBERS as u64,
                    });
                }
                for m in g.members() {
                    check_label("members.label", m.label)?;
                    match w.nexthop(m.nh) {
                        None => {
                            return Err(TableError::MissingReference {
                                field: "members.nh",
                                what: "next hop",
                                id: m.nh,
                            })
                        }
                        Some(NextHop::Composite(_)) | Some(NextHop::VrfLookup { .. }) => {
                            return Err(TableError::Invalid {
                                field: "members.nh",
                                reason: format!("next hop {} cannot be an ECMP member", m.nh),
                            })
                        }
                        // Updating a next hop into a composite of itself.
                        Some(_) if m.nh == id => {
                            return Err(TableError::Invalid {
                                field: "members.nh",
                                reason: format!("next hop {id} cannot be a member of itself"),
                            })
                        }
                        Some(_) => {}
                    }
                }
                Ok(())
            }
        }
    }

    fn put_nh(&mut self, w: &mut Tables, id: NhId, nh: &NextHop, add: bool) -> Result<(), TableError> {
        check_index("id", id, w.limits.nexthops, 1)?;
        let old = w.nexthops.get(id as usize).cloned();
        Self::exists_check("next hop", id, old.is_some(), add)?;
        Self::check_nh(w, id, nh)?;
        let nh = match (old.as_deref(), nh) {
            (Some(NextHop::Composite(prev)), NextHop::Composite(next)) => {
                NextHop::Composite(prev.rebalance(next.members().to_vec()))
            }
            _ => nh.clone(),
        };
        if let Some(o) = &old {
            deps(o, |d| Self::bump_dep(w, d, false));
        }
        deps(&nh, |d| Self::bump_dep(w, d, true));
        let (was, now) = (old.as_deref().is_some_and(NextHop::is_composite), nh.is_composite());
        let _ = w.nexthops.set(id as usize, Some(Arc::new(nh)));
        if was != now {
            self.recount_ecmp_routes(w, id, now);
        }
        Ok(())
    }

    /// Next hop `id` became (`now`) or stopped being an ECMP composite:
    /// every VRF's routes to it change its `ecmp_routes`, and their hints
    /// (`ecmp_changes`, `ecmp_changes6`). A scan of all routes, for a rare
    /// change (a service's next hop is made a composite from the start).
    fn recount_ecmp_routes(&mut self, w: &mut Tables, id: NhId, now: bool) {
        for (&vrf_id, routes) in &self.routes {
            let before = self.ecmp_changes.len() + self.ecmp_changes6.len();
            let v4 = routes.v4.iter().filter(|(_, e)| e.target.nh == id);
            self.ecmp_changes.extend(v4.map(|(&(addr, len), _)| (vrf_id, addr, len, now)));
            let v6 = routes.v6.iter().filter(|(_, e)| e.target.nh == id);
            self.ecmp_changes6.extend(v6.map(|(&(addr, len), _)| (vrf_id, addr, len, now)));
            let n = (self.ecmp_changes.len() + self.ecmp_changes6.len() - before) as u32;
            if n == 0 {
                continue;
            }
            if let Some(vrf) = w.vrfs.get_mut(vrf_id as usize) {
                let vrf = Arc::make_mut(vrf);
                vrf.ecmp_routes = if now { vrf.ecmp_routes + n } else { vrf.ecmp_routes.saturating_sub(n) };
            }
        }
    }

    fn bump_dep(w: &mut Tables, d: Dep, up: bool) {
        match d {
            Dep::Vif(i) => bump(&mut w.vif_refs, i, up),
            Dep::Vrf(i) => bump(&mut w.vrf_refs, i, up),
            Dep::Nh(i) => bump(&mut w.nh_refs, i, up),
        }
    }

    fn del_nh(&mut self, w: &mut Tables, id: NhId) -> Result<(), TableError> {
        if id == 0 {
            return Err(TableError::Invalid { field: "id", reason: "next hop 0 (discard) is permanent".into() });
        }
        let Some(old) = w.nexthops.get(id as usize).cloned() else {
            return Err(TableError::NotFound { what: "next hop", id: id.to_string() });
        };
        if let Some(&refs) = w.nh_refs.get(id as usize) {
            return Err(TableError::InUse { what: "next hop", id: id.to_string(), refs });
        }
        deps(&old, |d| Self::bump_dep(w, d, false));
        let _ = w.nexthops.set(id as usize, None);
        Ok(())
    }

    fn put_label(&mut self, w: &mut Tables, l: Label, nh: NhId, add: bool) -> Result<(), TableError> {
        check_index("label", l, w.limits.labels, mpls::FIRST_UNRESERVED_LABEL.into())?;
        let old = w.label(l);
        Self::exists_check("label", l, old.is_some(), add)?;
        if w.nexthop(nh).is_none() {
            return Err(TableError::MissingReference { field: "nh", what: "next hop", id: nh });
        }
        if let Some(o) = old {
            bump(&mut w.nh_refs, o, false);
        }
        bump(&mut w.nh_refs, nh, true);
        let _ = w.labels.set(l as usize, Some(nh));
        Ok(())
    }

    fn del_label(&mut self, w: &mut Tables, l: Label) -> Result<(), TableError> {
        let Some(old) = w.label(l) else {
            return Err(TableError::NotFound { what: "label", id: l.to_string() });
        };
        bump(&mut w.nh_refs, old, false);
        let _ = w.labels.set(l as usize, None);
        Ok(())
    }

    fn put_route(&mut self, w: &mut Tables, r: &RouteSpec, add: bool) -> Result<(), TableError> {
        if w.vrf(r.vrf).is_none() {
            return Err(TableError::MissingReference { field: "vrf", what: "VRF", id: r.vrf });
        }
        if w.nexthop(r.target.nh).is_none() {
            return Err(TableError::MissingReference { field: "nh", what: "next hop", id: r.target.nh });
        }
        check_label("label", r.target.label)?;
        if let Some(n) = r.network.filter(|&n| w.vrf(n).is_none()) {
            return Err(TableError::MissingReference { field: "network", what: "VRF", id: n });
        }
        match r.prefix.addr() {
            IpAddr::V4(a) => self.put_route_in::<u32>(w, r, u32::from(a), add),
            IpAddr::V6(a) => self.put_route_in::<u128>(w, r, u128::from(a), add),
        }
    }

    fn put_route_in<K: Family>(&mut self, w: &mut Tables, r: &RouteSpec, key: K, add: bool) -> Result<(), TableError> {
        let limit = w.limits.routes_per_vrf;
        let Some(routes) = self.routes.get_mut(&r.vrf) else {
            return Err(TableError::MissingReference { field: "vrf", what: "VRF", id: r.vrf });
        };
        let map = K::routes(routes);
        let k = (key, r.prefix.len());
        let old = map.get(&k).copied();
        match (old.is_some(), add) {
            (true, true) => {
                return Err(TableError::Exists { what: "route", id: format!("{} in VRF {}", r.prefix, r.vrf) })
            }
            (false, false) => {
                return Err(TableError::NotFound { what: "route", id: format!("{} in VRF {}", r.prefix, r.vrf) })
            }
            _ => {}
        }
        if old.is_none() && map.len() >= limit {
            return Err(TableError::Full { table: "route", capacity: limit });
        }
        let entry = r.entry();
        // Only a policy that names networks needs the network the addresses
        // were in (`was`, below): the search for the covering route stays
        // off the common path.
        let names = names_networks(w, r.vrf);
        map.insert(k, entry);
        self.undo.push(K::undo(r.vrf, k, old));
        if let Some(o) = old {
            bump(&mut w.nh_refs, o.target.nh, false);
            bump_network(w, r.vrf, o.network, false);
        }
        bump(&mut w.nh_refs, r.target.nh, true);
        bump_network(w, r.vrf, entry.network, true);
        let ecmp =
            |t: Option<RouteTarget>| u32::from(t.and_then(|t| w.nexthop(t.nh)).is_some_and(NextHop::is_composite));
        let (gained, lost) = (ecmp(Some(r.target)), ecmp(old.map(|o| o.target)));
        let vrf = Arc::make_mut(w.vrfs.get_mut(r.vrf as usize).expect("checked above"));
        // From the trie, as a delete's cover is (`del_route_in`): the list
        // probed a hash for every shorter length it holds. The list took
        // the prefix above and the trie takes it below: neither changes
        // what they say of the shorter prefixes, the only ones asked.
        let was = names.then(|| {
            let len = r.prefix.len();
            let covering =
                old.is_none().then(|| K::fib(vrf).covering(key, len, |l| map.get(&(key.mask(l), l)).copied()));
            debug_assert!(covering.is_none_or(|c| c == map.covering(key, len)), "{} in VRF {}", r.prefix, r.vrf);
            old.or(covering.flatten().map(|(_, e)| e)).map(|e| e.network)
        });
        vrf.ecmp_routes = (vrf.ecmp_routes + gained).saturating_sub(lost);
        let changes = K::ecmp_changes(&mut self.ecmp_changes, &mut self.ecmp_changes6);
        if lost > 0 {
            changes.push((r.vrf, key, r.prefix.len(), false));
        }
        if gained > 0 {
            changes.push((r.vrf, key, r.prefix.len(), true));
        }
        change_fib(&mut self.spares, &mut self.node_pool, r.vrf, K::fib(vrf), |f| {
            f.insert(key, r.prefix.len(), entry, old)
        });
        if let Some(was) = was {
            self.network_moved(w, r.vrf, was, Some(entry.network));
        }
        Ok(())
    }

    fn del_route(&mut self, w: &mut Tables, vrf: VrfId, p: Prefix) -> Result<(), TableError> {
        match p.addr() {
            IpAddr::V4(a) => self.del_route_in::<u32>(w, vrf, p, u32::from(a)),
            IpAddr::V6(a) => self.del_route_in::<u128>(w, vrf, p, u128::from(a)),
        }
    }

    fn del_route_in<K: Family>(&mut self, w: &mut Tables, vrf_id: VrfId, p: Prefix, key: K) -> Result<(), TableError> {
        let not_found = || TableError::NotFound { what: "route", id: format!("{p} in VRF {vrf_id}") };
        let routes = self.routes.get_mut(&vrf_id).ok_or_else(not_found)?;
        let map = K::routes(routes);
        let k = (key, p.len());
        let old = map.remove(&k).ok_or_else(not_found)?;
        self.undo.push(K::undo(vrf_id, k, Some(old)));
        bump(&mut w.nh_refs, old.target.nh, false);
        bump_network(w, vrf_id, old.network, false);
        let lost = u32::from(w.nexthop(old.target.nh).is_some_and(NextHop::is_composite));
        let vrf = Arc::make_mut(w.vrfs.get_mut(vrf_id as usize).ok_or_else(not_found)?);
        // The cover from the trie, the list asked only for a length the
        // trie's slots cannot tell about: a hash probe for each length
        // held, a cache miss each, was a sixth of a delete in a BGP
        // table's mix (perf).
        let cover = K::fib(vrf).covering(key, p.len(), |l| map.get(&(key.mask(l), l)).copied());
        debug_assert_eq!(cover, map.covering(key, p.len()), "{p} in VRF {vrf_id}: the trie's cover is the list's");
        vrf.ecmp_routes = vrf.ecmp_routes.saturating_sub(lost);
        if lost > 0 {
            K::ecmp_changes(&mut self.ecmp_changes, &mut self.ecmp_changes6).push((vrf_id, key, p.len(), false));
        }
        change_fib(&mut self.spares, &mut self.node_pool, vrf_id, K::fib(vrf), |f| f.remove(key, p.len(), old, cover));
        self.network_moved(w, vrf_id, Some(old.network), cover.map(|(_, e)| e.network));
        Ok(())
    }
}

/// How many changes ahead of the one being applied a batch starts
/// fetching the trie node a route change will write: enough for the
/// miss to land before that change comes, few enough that the lines
/// fetched are still cached when it does.
const PREFETCH_AHEAD: usize = 8;

/// Starts fetching the trie node that `op` will write, if it changes a
/// route of a VRF that exists (`Fib::prefetch_change`).
fn prefetch_route_change(w: &Tables, op: &Op) {
    let (vrf, prefix) = match op {
        Op::Add(Object::Route(r)) | Op::Update(Object::Route(r)) => (r.vrf, r.prefix),
        Op::Delete(ObjectKey::Route(vrf, p)) => (*vrf, *p),
        _ => return,
    };
    let Some(v) = w.vrf(vrf) else { return };
    match prefix.addr() {
        IpAddr::V4(a) => v.v4.prefetch_change(u32::from(a), prefix.len()),
        IpAddr::V6(a) => v.v6.prefetch_change(u128::from(a), prefix.len()),
    }
}

/// Whether `vrf`'s policy has a rule that names a network, whose addresses
/// are those its routes say are in it.
fn names_networks(w: &Tables, vrf: VrfId) -> bool {
    let policy = w.vrf(vrf).and_then(|v| v.policy.as_ref());
    policy.is_some_and(|p| p.compiled.names_networks() != (false, false))
}

/// A route of `vrf` whose addresses are in another network refers to that
/// network's VRF, which may not be removed while such routes name it, and
/// which counts it (`Vrf::imported_elsewhere`).
fn bump_network(w: &mut Tables, vrf: VrfId, network: VrfId, up: bool) {
    if network != vrf {
        bump(&mut w.vrf_refs, network, up);
        if let Some(n) = w.vrfs.get_mut(network as usize) {
            let n = Arc::make_mut(n);
            n.imported_elsewhere = if up { n.imported_elsewhere + 1 } else { n.imported_elsewhere.saturating_sub(1) };
        }
    }
}

fn restore<K: FibKey>(map: Option<&mut Prefixes<K>>, key: (K, u8), old: Option<RouteEntry>) {
    if let Some(map) = map {
        match old {
            Some(t) => map.insert(key, t),
            None => map.remove(&key),
        };
    }
}
