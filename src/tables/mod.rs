//! The forwarding tables and how they are published to the data path.
//!
//! A `Tables` value is an immutable snapshot: the data path loads the
//! current one once per batch from a [`TablesHandle`] and reads it with no
//! lock. The single [`TablesWriter`] applies a batch of operations to a
//! private copy and publishes it in one atomic pointer swap (RCU): readers
//! see all of a batch or none of it, and forwarding never waits for it.
//! Copies are cheap because every table shares unchanged chunks and trie
//! nodes with the snapshot before it.
//!
//! Every table is bounded by [`Limits`]; a full table is an error for the
//! control side, never a silent loss.

mod cow;
pub mod ecmp;
mod ecmp_blocks;
mod hosts;
pub mod lpm;
pub mod nexthop;
mod prefixes;
pub mod vif;
mod writer;

pub use cow::CowVec;
pub use ecmp::EcmpGroup;
pub use ecmp_blocks::EcmpBlocks;
pub use lpm::{Fib, FibKey, Route};
pub use nexthop::{is_tunnel_endpoint, NextHop, NhId, Tunnel, TunnelEncap};
pub use vif::{
    check_port_maps, interface_name_problem, station_address_problem, FloatingIp, PortForward, PortMap, Vif, VifFlags,
    VifIndex, VifKind, MAX_PORT_MAPS,
};
pub use writer::{
    BatchError, Object, ObjectKey, Op, Prefix, RouteSpec, TableError, TablesHandle, TablesWriter, VrfSpec,
};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// VRF id, chosen by the caller.
pub type VrfId = u32;
/// An MPLS label.
pub type Label = u32;

/// What a route or an ECMP member resolves to: a next hop and the MPLS
/// label to push when that next hop is a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTarget {
    /// Next hop.
    pub nh: NhId,
    /// Label, or `NO_LABEL`.
    pub label: Label,
}

impl RouteTarget {
    /// No label: a route to a local next hop.
    pub const NO_LABEL: Label = u32::MAX;

    /// The label, if the target has one.
    pub fn label(&self) -> Option<Label> {
        (self.label != Self::NO_LABEL).then_some(self.label)
    }
}

/// What a prefix of a VRF holds: where its packets go, and the virtual
/// network its addresses belong to (a VRF's id) for policy rules that
/// name networks. A VRF's own routes are in its own network; a route it
/// imports from another keeps that one's, as Contrail's routes carry
/// their virtual network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// Where it goes.
    pub target: RouteTarget,
    /// Its addresses' network.
    pub network: VrfId,
}

/// Capacities of every table. Defaults follow Tungsten Fabric's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Vif slots (indexes 0..vifs).
    pub vifs: usize,
    /// VRF slots.
    pub vrfs: usize,
    /// Next-hop slots.
    pub nexthops: usize,
    /// Label slots: labels 16..labels are usable.
    pub labels: usize,
    /// Routes per VRF and address family.
    pub routes_per_vrf: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { vifs: 4355, vrfs: 4096, nexthops: 524_288, labels: 5120, routes_per_vrf: 2_000_000 }
    }
}

/// The networks whose policy changes moved a VRF's generation
/// (`Vrf::reached_changes`), newest last, each with the generation its last
/// change moved the VRF's to. Bounded: past `ReachedChanges::MAX`, the
/// oldest is forgotten, and a pair decided before the newest forgotten
/// change is taken as changed for any network without an entry, as if
/// every reached network had changed then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReachedChanges {
    changes: Vec<(VrfId, u32)>,
    forgotten: Option<u32>,
}

impl ReachedChanges {
    /// Networks remembered: a VRF's pairs reach few others' pods.
    pub const MAX: usize = 16;

    /// Notes that `network`'s change moved the generation to `at`.
    pub fn record(&mut self, network: VrfId, at: u32) {
        self.changes.retain(|&(n, _)| n != network);
        self.changes.push((network, at));
        if self.changes.len() > Self::MAX {
            self.forgotten = Some(self.changes.remove(0).1);
        }
    }

    /// Whether `network`'s policy changed after a decision made under
    /// generation `decided`, the VRF's generation being `now` (generations
    /// wrap: the later of two is fewer steps back from `now`).
    pub fn changed_since(&self, now: u32, network: VrfId, decided: u32) -> bool {
        let after = |at: u32| now.wrapping_sub(at) < now.wrapping_sub(decided);
        match self.changes.iter().find(|&&(n, _)| n == network) {
            Some(&(_, at)) => after(at),
            None => self.forgotten.is_some_and(after),
        }
    }
}

/// A routing instance: one tenant's IPv4 and IPv6 tables.
#[derive(Clone)]
pub struct Vrf {
    /// Id.
    pub id: VrfId,
    /// Name, for operators.
    pub name: String,
    /// The gateway address pods use; the source of ICMP errors vrouter sends
    /// in this VRF, and always answered by proxy ARP.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The IPv6 gateway address, likewise.
    pub gateway_v6: Option<Ipv6Addr>,
    /// IPv4 routes.
    pub v4: Arc<Fib<u32>>,
    /// IPv6 routes.
    pub v6: Arc<Fib<u128>>,
    /// The network policy: flows in this VRF are tracked and decided by it.
    /// `None`: no policy, everything routed goes.
    pub policy: Option<Arc<VrfPolicy>>,
    /// Grows with every change of the policy, its removal included (a
    /// policy's own `generation` is this, as of its change), with a batch
    /// of routes that moved addresses to another network where the policy
    /// names networks (its rules match other addresses now), and with a
    /// change of another VRF's whose pods this VRF's routes lead to (that
    /// policy judges this VRF's flows to them too): a pair stamped with an
    /// older one is checked on its next packet, and decided again if the
    /// change can judge it (`pipeline::flow::stale`). Had it restarted with
    /// a policy added after a removal, flows decided under the removed one
    /// would have passed for decided under the new one.
    pub policy_generation: u32,
    /// The `policy_generation` its own policy last changed at, in its rules
    /// or in the networks they name (0: never):
    /// a pair decided since, that no other network's policy judges, keeps
    /// its decision when another network's change moves the generation
    /// (`pipeline::flow::stale`).
    pub policy_changed_at: u32,
    /// The other networks whose policy changes moved `policy_generation`,
    /// each with the generation its last one moved it to: a pair that
    /// reaches a pod of one of them is decided again only after that
    /// network's own change, not after any other's (`pipeline::flow::stale`).
    pub reached_changes: ReachedChanges,
    /// Floating IPs that vifs hold in this VRF. While there are any, flows
    /// are tracked here, even without a policy: they carry the NAT.
    pub floating_ips: u32,
    /// Routes of this network that other VRFs hold (imports, which keep
    /// their network). Where there are any, its pods may be reached from
    /// those VRFs, and the reverse entries of such pairs, which route the
    /// answers back there, live here: a hint for the fast path to fetch a
    /// hit's whole slot, not for any decision.
    pub imported_elsewhere: u32,
    /// Routes in this VRF (either family) to an ECMP composite, such as a
    /// service address. While there are any, flows are tracked here, even
    /// without a policy: a flow pins its member, so that a connection
    /// stays on its pod while endpoints come and go.
    pub ecmp_routes: u32,
    /// The /24 blocks with addresses routed to a composite, as a hint for
    /// the first pipeline stage (`EcmpBlocks`). The writer publishes it
    /// again after a batch that changed the VRF's ECMP routes.
    pub ecmp_blocks: EcmpBlocks,
    /// The same for its IPv6 space, by /120 blocks (`EcmpBlocks<u128>`):
    /// where only ECMP routes track flows, the addresses it names ask the
    /// flow cache before their route (`pipeline::lane::from_pod6`).
    pub ecmp_blocks6: EcmpBlocks<u128>,
}

impl Vrf {
    /// The longest-prefix match for `addr` (IPv4 in the low 32 bits unless `v6`).
    #[inline]
    pub fn lookup(&self, v6: bool, addr: u128) -> Option<RouteTarget> {
        if v6 {
            self.v6.lookup(addr)
        } else {
            self.v4.lookup(addr as u32)
        }
    }

    /// The network of `addr`'s route (`Fib::network_of`), by family as `lookup`.
    pub fn network_of(&self, v6: bool, addr: u128) -> Option<VrfId> {
        if v6 {
            self.v6.network_of(addr)
        } else {
            self.v4.network_of(addr as u32)
        }
    }

    /// Its policy generation, and the one its own policy last changed at,
    /// as a flow's decision is checked against them.
    #[inline]
    pub fn policy_generations(&self) -> crate::flow::PolicyGenerations {
        crate::flow::PolicyGenerations { now: self.policy_generation, own_change: self.policy_changed_at }
    }

    /// True when packets routed in this VRF belong to flows.
    #[inline]
    pub fn tracks_flows(&self) -> bool {
        self.tracks_every_flow() || self.ecmp_routes > 0
    }

    /// True when every packet routed here belongs to a flow, which is
    /// known before its route is: a policy judges them all, or floating
    /// IPs' NAT may apply. In a VRF that tracks flows for its ECMP routes
    /// alone, only the packets routed to a composite do.
    #[inline]
    pub fn tracks_every_flow(&self) -> bool {
        self.policy.is_some() || self.floating_ips > 0
    }
}

/// A VRF's policy as written, and compiled for the data path. Its
/// generation grows with every change, so that flows decided under an
/// older one are decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrfPolicy {
    /// As written.
    pub policy: crate::flow::Policy,
    /// As evaluated.
    pub compiled: crate::flow::CompiledPolicy,
    /// The VRF's `policy_generation` this policy came with.
    pub generation: u32,
}

/// The next snapshot's `Tables::stamp`.
pub(crate) fn next_stamp() -> u64 {
    static STAMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One consistent snapshot of every table.
#[derive(Clone)]
pub struct Tables {
    limits: Limits,
    generation: u64,
    /// Which snapshot this is, unique in the process (`stamp`).
    stamp: u64,
    vifs: CowVec<Arc<Vif>>,
    vrfs: CowVec<Arc<Vrf>>,
    nexthops: CowVec<Arc<NextHop>>,
    labels: CowVec<NhId>,
    /// Where each label lands a tunnel's packet (`landing`), worked out by
    /// the writer from the label's next hop and its vif whenever a batch
    /// changes labels, next hops or vifs: one lookup a tunnel, where the
    /// three took about 30 instructions (callgrind, decap).
    landings: CowVec<Landing>,
    // Reference counts, for refusing deletes of objects still in use. The
    // data path never reads them; they ride along so a failed batch is
    // dropped whole with its copy.
    vif_refs: CowVec<u32>,
    vrf_refs: CowVec<u32>,
    nh_refs: CowVec<u32>,
    empty_v4: Arc<Fib<u32>>,
    empty_v6: Arc<Fib<u128>>,
}

/// Where a label lands a tunnel's packet (`Tables::landing`): the VRF it
/// is routed or delivered in, and the pod's next hop if the label names one
/// (`None`: the label names the VRF, to route in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landing {
    /// The VRF.
    pub vrf: VrfId,
    /// The pod's next hop.
    pub pod: Option<NhId>,
}

impl Tables {
    /// Empty tables, but for next hop 0, `Discard`.
    pub fn new(limits: Limits) -> Self {
        let mut nexthops = CowVec::new(limits.nexthops.max(1));
        let _ = nexthops.set(0, Some(Arc::new(NextHop::Discard)));
        Tables {
            limits,
            generation: 0,
            stamp: next_stamp(),
            vifs: CowVec::new(limits.vifs),
            vrfs: CowVec::new(limits.vrfs),
            nexthops,
            labels: CowVec::new(limits.labels),
            landings: CowVec::new(limits.labels),
            vif_refs: CowVec::new(limits.vifs),
            vrf_refs: CowVec::new(limits.vrfs),
            nh_refs: CowVec::new(limits.nexthops.max(1)),
            empty_v4: Arc::new(Fib::new()),
            empty_v6: Arc::new(Fib::new()),
        }
    }

    /// An empty IPv4 table, to fill fixed-size arrays of table references.
    pub fn empty_fib_v4(&self) -> &Fib<u32> {
        &self.empty_v4
    }

    /// An empty IPv6 table, likewise.
    pub fn empty_fib_v6(&self) -> &Fib<u128> {
        &self.empty_v6
    }

    /// The capacities.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many batches have been published before this snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A number no other snapshot in the process has, its writer's or
    /// another's: what a worker's flow cache was filled from
    /// (`pipeline::express`), which a new snapshot makes stale whatever it
    /// changed. `generation` counts one writer's batches, and two writers'
    /// snapshots (tests have many) share it.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Vif `i`.
    #[inline]
    pub fn vif(&self, i: VifIndex) -> Option<&Vif> {
        self.vifs.get(i as usize).map(|v| &**v)
    }

    /// VRF `id`.
    #[inline]
    pub fn vrf(&self, id: VrfId) -> Option<&Vrf> {
        self.vrfs.get(id as usize).map(|v| &**v)
    }

    /// Next hop `id`.
    #[inline]
    pub fn nexthop(&self, id: NhId) -> Option<&NextHop> {
        self.nexthop_shared(id).map(|n| &**n)
    }

    /// Next hop `id` as shared, for a holder that must tell it apart from
    /// a next hop given the same id later (a held fragment's).
    #[inline]
    pub fn nexthop_shared(&self, id: NhId) -> Option<&Arc<NextHop>> {
        self.nexthops.get(id as usize)
    }

    /// The next hop label `l` names.
    #[inline]
    pub fn label(&self, l: Label) -> Option<NhId> {
        self.labels.get(l as usize).copied()
    }

    /// Where label `l` lands a tunnel's packet, if it names a pod's next
    /// hop or a VRF to route in; what `land` works out, kept per label by
    /// the writer.
    #[inline]
    pub fn landing(&self, l: Label) -> Option<Landing> {
        self.landings.get(l as usize).copied()
    }

    /// `landing` worked out from the tables: the label's next hop, and the
    /// VRF of its vif for a pod's.
    pub fn land(&self, l: Label) -> Option<Landing> {
        let nh = self.label(l)?;
        match self.nexthop(nh)? {
            NextHop::Encap { oif, .. } => Some(Landing { vrf: self.vif(*oif)?.vrf, pod: Some(nh) }),
            NextHop::VrfLookup { vrf } => Some(Landing { vrf: *vrf, pod: None }),
            _ => None,
        }
    }

    /// Works every label's `landing` out again (`land`), writing only the
    /// ones that changed, so that a batch copies no chunk for nothing. The
    /// landings have the labels' capacity: no slot is out of range.
    fn land_labels(&mut self) {
        // A landing whose label lands nowhere now (gone, or to a next hop
        // that is neither a pod's nor a lookup) goes; every label that lands
        // is written where it moved.
        let gone: Vec<usize> =
            self.landings.iter().filter(|(l, _)| self.land(*l as Label).is_none()).map(|(l, _)| l).collect();
        for l in gone {
            let _ = self.landings.set(l, None);
        }
        let want: Vec<(usize, Landing)> =
            self.labels.iter().filter_map(|(l, _)| Some((l, self.land(l as Label)?))).collect();
        for (l, x) in want {
            if self.landings.get(l) != Some(&x) {
                let _ = self.landings.set(l, Some(x));
            }
        }
    }

    /// Every vif, by index.
    pub fn vifs(&self) -> impl Iterator<Item = &Vif> {
        self.vifs.iter().map(|(_, v)| &**v)
    }

    /// Every VRF, by id.
    pub fn vrfs(&self) -> impl Iterator<Item = &Vrf> {
        self.vrfs.iter().map(|(_, v)| &**v)
    }

    /// Every next hop, by id.
    pub fn nexthops(&self) -> impl Iterator<Item = (NhId, &NextHop)> {
        self.nexthops.iter().map(|(i, n)| (i as NhId, &**n))
    }

    /// Every label with its next hop, by label.
    pub fn labels(&self) -> impl Iterator<Item = (Label, NhId)> + '_ {
        self.labels.iter().map(|(l, n)| (l as Label, *n))
    }

    /// How many times next hop `id` is referenced by routes, labels and composites.
    pub fn nexthop_refs(&self, id: NhId) -> u32 {
        self.nh_refs.get(id as usize).copied().unwrap_or(0)
    }

    /// Occupied and total slots of each table, for `vrctl info`.
    pub fn occupancy(&self) -> [(&'static str, usize, usize); 4] {
        [
            ("vifs", self.vifs.len(), self.vifs.capacity()),
            ("vrfs", self.vrfs.len(), self.vrfs.capacity()),
            ("nexthops", self.nexthops.len(), self.nexthops.capacity()),
            ("labels", self.labels.len(), self.labels.capacity()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::ReachedChanges;

    /// A network's change is after a decision made before it, and not after
    /// one made at or after it, whatever other networks changed since and
    /// across the generations' wrap; a network forgotten for room is taken
    /// as changed after any decision older than its change, and a network
    /// never recorded as unchanged.
    #[test]
    fn reached_changes_tell_which_network_changed_since_a_decision() {
        for base in [0u32, u32::MAX - 3] {
            let g = |n: u32| base.wrapping_add(n);
            let mut r = ReachedChanges::default();
            r.record(7, g(2));
            r.record(8, g(3));
            let now = g(3);
            assert!(r.changed_since(now, 7, g(1)));
            assert!(!r.changed_since(now, 7, g(2)), "decided under the generation the change moved to");
            assert!(!r.changed_since(now, 7, g(3)));
            assert!(r.changed_since(now, 8, g(2)));
            assert!(!r.changed_since(now, 9, g(1)), "a network that never changed");
            r.record(7, g(4));
            assert!(r.changed_since(g(4), 7, g(3)), "its last change counts");
        }
        let mut r = ReachedChanges::default();
        for n in 0..=ReachedChanges::MAX as u32 {
            r.record(100 + n, n + 1);
        }
        let now = ReachedChanges::MAX as u32 + 1;
        assert!(r.changed_since(now, 100, 0), "forgotten: taken as changed after an older decision");
        assert!(r.changed_since(now, 5, 0), "so is any network without an entry");
        assert!(!r.changed_since(now, 5, 1), "but not after a decision at the forgotten change");
        assert!(!r.changed_since(now, 116, now), "the newest is remembered");
    }
}
