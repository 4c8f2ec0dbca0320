//! Counters: one plain set per worker, never shared while counting, summed
//! when read. Every drop has a reason, and every reason has a counter.

mod board;
mod drop;
mod general;
pub mod runtime;
mod unsent;

pub use board::{FlowCacheCounts, Reading, StatsBoard, WorkerIo, PUBLISH_EVERY};
pub use drop::DropReason;
pub use general::GeneralCause;
pub use runtime::{Runtime, Stage};
pub use unsent::Unsent;

/// The kernel's counters of a vif's AF_XDP sockets (XDP_STATISTICS),
/// summed over its queues: what was lost before vrouterd saw it, which no
/// counter of its own can count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Frames the kernel could not give the socket: longer than a UMEM
    /// frame holds, or no free frame in the fill ring.
    pub rx_dropped: u64,
    /// Frames dropped because the rx ring was full (vrouterd behind).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
    /// Transmit descriptors the kernel refused as invalid.
    pub tx_invalid: u64,
}

/// Two queues' sockets summed.
impl std::ops::Add for SocketCounters {
    type Output = SocketCounters;

    fn add(self, other: SocketCounters) -> SocketCounters {
        SocketCounters {
            rx_dropped: self.rx_dropped + other.rx_dropped,
            rx_ring_full: self.rx_ring_full + other.rx_ring_full,
            fill_ring_empty: self.fill_ring_empty + other.fill_ring_empty,
            tx_invalid: self.tx_invalid + other.tx_invalid,
        }
    }
}

/// Counters of one vif.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent: routed out of the vif and taken by its port.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames routed out of the vif that its port did not send: no port
    /// open for it, its link down, or its transmit ring (or the hand-off
    /// to the worker that owns the port) full. Not in `tx_packets`.
    pub tx_dropped: u64,
    /// Received frames that were malformed.
    pub rx_errors: u64,
    /// Received frames that were dropped, for any reason.
    pub drops: u64,
}

impl VifCounters {
    /// Each counter of `self` with its fellow of `o`, by `f`.
    fn combine(&self, o: &VifCounters, f: impl Fn(u64, u64) -> u64) -> VifCounters {
        VifCounters {
            rx_packets: f(self.rx_packets, o.rx_packets),
            rx_bytes: f(self.rx_bytes, o.rx_bytes),
            tx_packets: f(self.tx_packets, o.tx_packets),
            tx_bytes: f(self.tx_bytes, o.tx_bytes),
            tx_dropped: f(self.tx_dropped, o.tx_dropped),
            rx_errors: f(self.rx_errors, o.rx_errors),
            drops: f(self.drops, o.drops),
        }
    }

    /// The counts since `then` (an earlier reading of the same counters).
    pub(crate) fn since(&self, then: &VifCounters) -> VifCounters {
        self.combine(then, u64::saturating_sub)
    }
}

/// Counters of one VRF: packets by what their next hop did, as Contrail's `vrfstats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VrfCounters {
    /// Sent to a discard next hop, or with no route.
    pub discards: u64,
    /// Handed to the host.
    pub receives: u64,
    /// Delivered to a local vif.
    pub encaps: u64,
    /// Resolved through an ECMP composite.
    pub ecmp_composites: u64,
    /// Encapsulated in MPLS over GRE.
    pub gre_mpls_tunnels: u64,
    /// Encapsulated in MPLS over UDP.
    pub udp_mpls_tunnels: u64,
    /// Decapsulated from a tunnel into this VRF.
    pub decaps: u64,
    /// Routed again in another VRF.
    pub vrf_translates: u64,
    /// ARP requests answered.
    pub arp_proxies: u64,
    /// Neighbour solicitations answered.
    pub nd_proxies: u64,
    /// ICMP and ICMPv6 errors sent.
    pub icmp_errors: u64,
    /// Extra fragments made.
    pub fragments: u64,
}

impl VrfCounters {
    /// Counter names and values, for display.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("discards", self.discards),
            ("receives", self.receives),
            ("encaps", self.encaps),
            ("ecmp_composites", self.ecmp_composites),
            ("gre_mpls_tunnels", self.gre_mpls_tunnels),
            ("udp_mpls_tunnels", self.udp_mpls_tunnels),
            ("decaps", self.decaps),
            ("vrf_translates", self.vrf_translates),
            ("arp_proxies", self.arp_proxies),
            ("nd_proxies", self.nd_proxies),
            ("icmp_errors", self.icmp_errors),
            ("fragments", self.fragments),
        ]
    }

    fn add(&mut self, o: &VrfCounters) {
        self.discards += o.discards;
        self.receives += o.receives;
        self.encaps += o.encaps;
        self.ecmp_composites += o.ecmp_composites;
        self.gre_mpls_tunnels += o.gre_mpls_tunnels;
        self.udp_mpls_tunnels += o.udp_mpls_tunnels;
        self.decaps += o.decaps;
        self.vrf_translates += o.vrf_translates;
        self.arp_proxies += o.arp_proxies;
        self.nd_proxies += o.nd_proxies;
        self.icmp_errors += o.icmp_errors;
        self.fragments += o.fragments;
    }
}

/// All counters of one worker. Sized once from the table limits: counting
/// never allocates.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Per vif, by index.
    pub vifs: Vec<VifCounters>,
    /// Per vif, by index: its drops by reason (Contrail's `dropstats
    /// --vif`), which tell one pod's trouble from another's. Only as long as
    /// the highest vif that has dropped anything, so that publishing and
    /// summing copy what is there, not a row for every vif the limits
    /// allow; it grows within the capacity `new` reserved, so counting
    /// never allocates.
    pub vif_drops: Vec<[u64; DropReason::COUNT]>,
    /// Per VRF, by id.
    pub vrfs: Vec<VrfCounters>,
    /// Frames handed to the host stack.
    pub to_host: u64,
    /// Frames trapped to the agent.
    pub to_agent: u64,
    /// Fragments held to wait for their datagram's first fragment.
    pub fragments_held: u64,
    /// Held fragments let go once their datagram's first came (the others
    /// were dropped as `NoFragEntry`, or wait still).
    pub fragments_released: u64,
}

impl Clone for Stats {
    fn clone(&self) -> Self {
        let mut c = Stats::new(0, 0);
        c.clone_from(self);
        c
    }

    /// Field by field, so that copying into counters of the same size (a
    /// worker publishing to the stats board, every 100 ms) reuses their
    /// buffers: a derived `Clone`'s `clone_from` allocates anew. Taken
    /// apart whole, so that a field added later cannot be left out.
    fn clone_from(&mut self, o: &Self) {
        let Stats { drops, vifs, vif_drops, vrfs, to_host, to_agent, fragments_held, fragments_released } = o;
        self.drops = *drops;
        self.vifs.clone_from(vifs);
        self.vif_drops.clone_from(vif_drops);
        self.vrfs.clone_from(vrfs);
        (self.to_host, self.to_agent) = (*to_host, *to_agent);
        (self.fragments_held, self.fragments_released) = (*fragments_held, *fragments_released);
    }
}

impl Stats {
    /// Zeroed counters for `vifs` vifs and `vrfs` VRFs. Panics if the
    /// memory cannot be had; `try_new` says so instead.
    pub fn new(vifs: usize, vrfs: usize) -> Self {
        Self::try_new(vifs, vrfs).unwrap_or_else(|e| panic!("counters for {vifs} vifs and {vrfs} VRFs: {e}"))
    }

    /// Zeroed counters for `vifs` vifs and `vrfs` VRFs, or the allocator's
    /// refusal (limits too large for the machine).
    pub fn try_new(vifs: usize, vrfs: usize) -> Result<Self, std::collections::TryReserveError> {
        use crate::memory::{try_filled, try_with_capacity};
        Ok(Stats {
            drops: [0; DropReason::COUNT],
            vifs: try_filled(vifs, VifCounters::default())?,
            vif_drops: try_with_capacity(vifs)?,
            vrfs: try_filled(vrfs, VrfCounters::default())?,
            to_host: 0,
            to_agent: 0,
            fragments_held: 0,
            fragments_released: 0,
        })
    }

    /// Bytes `Stats::new(vifs, vrfs)` takes once every vif has dropped.
    pub fn bytes_for(vifs: usize, vrfs: usize) -> usize {
        vifs * (std::mem::size_of::<VifCounters>() + std::mem::size_of::<[u64; DropReason::COUNT]>())
            + vrfs * std::mem::size_of::<VrfCounters>()
    }

    /// The count of one drop reason.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Counters of vif `i` (zero for an index out of range).
    pub fn vif(&self, i: u32) -> VifCounters {
        self.vifs.get(i as usize).copied().unwrap_or_default()
    }

    /// Drops of frames that came in on vif `i`, by reason (all zero for an
    /// index out of range or a vif that has dropped nothing).
    pub fn vif_drops(&self, i: u32) -> [u64; DropReason::COUNT] {
        self.vif_drops.get(i as usize).copied().unwrap_or([0; DropReason::COUNT])
    }

    /// The reasons vif `i` dropped frames for, with their counts (those
    /// with none left out).
    pub fn vif_drop_reasons(&self, i: u32) -> impl Iterator<Item = (DropReason, u64)> {
        DropReason::ALL.iter().copied().zip(self.vif_drops(i)).filter(|&(_, n)| n > 0)
    }

    /// Counts a frame that came in on vif `vif` and was dropped for `r`:
    /// by reason, against the vif, and in the vif's own breakdown.
    #[inline]
    pub(crate) fn count_drop(&mut self, vif: u32, r: DropReason) {
        self.drops[r as usize] += 1;
        let i = vif as usize;
        if let Some(c) = self.vifs.get_mut(i) {
            c.drops += 1;
            c.rx_errors += u64::from(r.is_malformed_input());
            if i >= self.vif_drops.len() {
                self.grow_vif_drops(i);
            }
            if let Some(d) = self.vif_drops.get_mut(i) {
                d[r as usize] += 1;
            }
        }
    }

    /// Takes back `frames` frames of `bytes` bytes that were counted as
    /// sent on vif `out` (`tx_packets`) when the pipeline routed them there,
    /// and counts them as `tx_dropped`: the worker found no port to send
    /// them by, or the port refused them. Wrapping, as `add`.
    pub(crate) fn count_unsent(&mut self, out: u32, frames: u64, bytes: u64) {
        if let Some(c) = self.vifs.get_mut(out as usize) {
            c.tx_packets = c.tx_packets.wrapping_sub(frames);
            c.tx_bytes = c.tx_bytes.wrapping_sub(bytes);
            c.tx_dropped += frames;
        }
    }

    /// Makes room for vif `i`'s drops: within the capacity `new` reserved
    /// for every vif, so without allocating.
    #[cold]
    fn grow_vif_drops(&mut self, i: usize) {
        self.vif_drops.resize(i + 1, [0; DropReason::COUNT]);
    }

    /// Counters of VRF `id` (zero for an id out of range).
    pub fn vrf(&self, id: u32) -> VrfCounters {
        self.vrfs.get(id as usize).copied().unwrap_or_default()
    }

    #[inline]
    pub(crate) fn vrf_mut(&mut self, id: u32) -> Option<&mut VrfCounters> {
        self.vrfs.get_mut(id as usize)
    }

    /// Adds another worker's counters into these.
    pub fn add(&mut self, o: &Stats) {
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        if self.vifs.len() < o.vifs.len() {
            self.vifs.resize(o.vifs.len(), VifCounters::default());
        }
        for (a, b) in self.vifs.iter_mut().zip(&o.vifs) {
            // Wrapping: a worker may take back a frame another worker
            // counted as sent (`count_unsent`), so one worker's own count
            // can pass below zero; their sum cannot.
            *a = a.combine(b, u64::wrapping_add);
        }
        if self.vif_drops.len() < o.vif_drops.len() {
            self.vif_drops.resize(o.vif_drops.len(), [0; DropReason::COUNT]);
        }
        for (a, b) in self.vif_drops.iter_mut().zip(&o.vif_drops) {
            for (a, b) in a.iter_mut().zip(b) {
                *a += b;
            }
        }
        if self.vrfs.len() < o.vrfs.len() {
            self.vrfs.resize(o.vrfs.len(), VrfCounters::default());
        }
        for (a, b) in self.vrfs.iter_mut().zip(&o.vrfs) {
            a.add(b);
        }
        self.to_host += o.to_host;
        self.to_agent += o.to_agent;
        self.fragments_held += o.fragments_held;
        self.fragments_released += o.fragments_released;
    }

    /// The sum of several workers' counters.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Stats>) -> Stats {
        let mut total = Stats::new(0, 0);
        for s in all {
            total.add(s);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_workers() {
        let mut a = Stats::new(4, 2);
        let mut b = Stats::new(4, 2);
        a.drops[DropReason::NoRoute as usize] = 3;
        b.drops[DropReason::NoRoute as usize] = 4;
        a.vifs[1].rx_packets = 10;
        b.vifs[1].rx_packets = 5;
        b.vrfs[1].encaps = 2;
        let s = Stats::sum([&a, &b]);
        assert_eq!(s.dropped(DropReason::NoRoute), 7);
        assert_eq!(s.total_drops(), 7);
        assert_eq!(s.vif(1).rx_packets, 15);
        assert_eq!(s.vrf(1).encaps, 2);
        assert_eq!(s.vif(99), VifCounters::default());
    }

    #[test]
    fn a_frame_one_worker_routed_and_another_could_not_send_is_tx_dropped_not_sent() {
        // Worker a routed 2 frames of 100 bytes out of vif 1 and handed
        // them to worker b, which owns vif 1's port and could not send
        // one: b's own count passes below zero, the sum does not.
        let (mut a, mut b) = (Stats::new(4, 1), Stats::new(4, 1));
        (a.vifs[1].tx_packets, a.vifs[1].tx_bytes) = (2, 200);
        b.count_unsent(1, 1, 100);
        b.count_unsent(99, 1, 100); // no such vif: nothing
        let v = Stats::sum([&a, &b]).vif(1);
        assert_eq!((v.tx_packets, v.tx_bytes, v.tx_dropped), (1, 100, 1));
    }

    #[test]
    fn a_vifs_drops_are_broken_down_by_reason_without_allocating() {
        use DropReason::{NoRoute, Truncated};
        let mut s = Stats::new(8, 1);
        let room = s.vif_drops.capacity();
        s.count_drop(5, NoRoute);
        s.count_drop(5, Truncated);
        s.count_drop(2, NoRoute);
        s.count_drop(99, NoRoute); // no such vif: counted by reason alone
        assert_eq!(s.vif_drops.capacity(), room, "grown within the room `new` reserved");
        assert_eq!(s.vif_drops.len(), 6, "as long as the highest vif that dropped");
        assert_eq!((s.vif_drops(5)[NoRoute as usize], s.vif_drops(5)[Truncated as usize]), (1, 1));
        assert_eq!((s.vif(5).drops, s.vif(5).rx_errors), (2, 1), "truncated is malformed input");
        assert_eq!((s.dropped(NoRoute), s.vif_drops(99)), (3, [0; DropReason::COUNT]));
        let other = Stats::new(8, 1);
        let total = Stats::sum([&other, &s, &s]);
        assert_eq!(total.vif_drops(5)[NoRoute as usize], 2, "summed across workers");
        assert_eq!(total.vif_drops(2)[NoRoute as usize], 2);
    }
}
