//! Where workers publish their counters for the control side to read.
//!
//! A worker never waits here: it copies its counters into its own slot
//! every few milliseconds, and skips the copy when a reader happens to hold
//! the slot. Readers lock one slot at a time, briefly, and sum.

use super::{DropReason, Stats, VifCounters};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a worker's flow cache did since the worker started
/// (`Pipeline::flow_cache_counts`): the hits it forwarded, against the
/// worker's `rx`, say how much of the traffic took the shortest way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCacheCounts {
    /// Packets forwarded from the cache.
    pub hits: u64,
    /// Entries filled: flows' first hits, and hits after a change.
    pub fills: u64,
    /// Entries found changed under their flow (removed, decided or pinned
    /// again) and forgotten.
    pub forgotten: u64,
    /// Times a new tables snapshot made every entry stale.
    pub renewals: u64,
    /// Fills that found their flow's set full of other live flows: one in
    /// the cache's `CROWDED_TURN` took the place of the set's oldest, the
    /// others were turned away.
    pub crowded: u64,
}

/// A worker's own I/O counters and how it spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerIo {
    /// Frames received from ports.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames that found no port, free frame or tx slot.
    pub tx_dropped: u64,
    /// `tx_dropped` by cause (`Unsent`, in its counter order).
    pub unsent: [u64; super::Unsent::COUNT],
    /// Frames handed to another worker.
    pub handed_off: u64,
    /// Sleeps that a frame ended (`WorkerCounters::wakeups`).
    pub wakeups: u64,
    /// Frames the fast lane left to the general path
    /// (`Pipeline::general_frames`): ARP and ND, TCP SYNs, new flows,
    /// drops, decisions to make again. A steady share of plain traffic here
    /// is a performance bug.
    pub general_path: u64,
    /// `general_path` by cause (`GeneralCause`, in its counter order).
    pub general_causes: [u64; super::GeneralCause::COUNT],
    /// What the worker's flow cache did (all 0 without one).
    pub flow_cache: FlowCacheCounts,
    /// Time spent in rounds that received frames.
    pub busy_ns: u64,
    /// Time since the worker started.
    pub elapsed_ns: u64,
    /// Cycles per stage over the sampled batches.
    pub runtime: super::Runtime,
    /// Time-stamp counter ticks per second, to turn cycles into time.
    pub tsc_hz: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    stats: Stats,
    io: WorkerIo,
    /// `io.general_path` by vif index (`Pipeline::general_frames_by_vif`).
    general_by_vif: Vec<u64>,
}

/// Every worker's last published counters.
#[derive(Debug)]
pub struct StatsBoard {
    slots: Vec<Mutex<Slot>>,
    /// Per vif index, its counters when a vif was last added there
    /// (`restart_vif`). Workers count by index for as long as they run, so
    /// reads count from these: a new vif starts from zero, not with the
    /// counts of the one it took the index from, as Contrail's vifs do.
    restarts: Mutex<HashMap<u32, Restart>>,
}

/// A vif's counters when it was added.
#[derive(Debug, Clone, Copy)]
struct Restart {
    counters: VifCounters,
    drops: [u64; DropReason::COUNT],
    general: u64,
}

/// How often a worker publishes: often enough for a per-second rate view.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

impl StatsBoard {
    /// A board for `workers` workers whose counters are sized for `vifs` and `vrfs`.
    pub fn new(workers: usize, vifs: usize, vrfs: usize) -> Arc<StatsBoard> {
        Self::try_new(workers, vifs, vrfs).unwrap_or_else(|e| panic!("counters for {vifs} vifs and {vrfs} VRFs: {e}"))
    }

    /// As `new`, or the allocator's refusal (limits too large for the
    /// machine).
    pub fn try_new(
        workers: usize,
        vifs: usize,
        vrfs: usize,
    ) -> Result<Arc<StatsBoard>, std::collections::TryReserveError> {
        // Each slot made, not cloned: a clone would not keep the room
        // `Stats::new` reserves, and a worker's first copy would allocate.
        let slot = || -> Result<_, std::collections::TryReserveError> {
            let general_by_vif = crate::memory::try_with_capacity(vifs)?;
            Ok(Mutex::new(Slot { stats: Stats::try_new(vifs, vrfs)?, io: WorkerIo::default(), general_by_vif }))
        };
        let slots = (0..workers).map(|_| slot()).collect::<Result<_, _>>()?;
        Ok(Arc::new(StatsBoard { slots, restarts: Mutex::default() }))
    }

    /// Bytes a worker's counters take for `vifs` and `vrfs`, its own and
    /// the board's copy of them, once every vif has dropped.
    pub fn bytes_per_worker(vifs: usize, vrfs: usize) -> usize {
        2 * (Stats::bytes_for(vifs, vrfs) + vifs * std::mem::size_of::<u64>())
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Worker `w` publishes its counters, its frames on the general path
    /// by vif index, and its I/O. Returns false, having copied nothing,
    /// when a reader holds the slot; the next publication catches up.
    pub fn publish(&self, w: usize, stats: &Stats, general_by_vif: &[u64], io: WorkerIo) -> bool {
        let Some(slot) = self.slots.get(w) else { return false };
        match slot.try_lock() {
            Ok(mut s) => {
                // Same sizes every time: `clone_from` copies without allocating.
                s.stats.clone_from(stats);
                s.general_by_vif.clear();
                s.general_by_vif.extend_from_slice(general_by_vif);
                s.io = io;
                true
            }
            Err(_) => false,
        }
    }

    /// A vif was added at index `vif`: its counters start from zero. What
    /// the workers counted there until now, and have published (they
    /// publish every `PUBLISH_EVERY`), belongs to the vif it replaced.
    pub fn restart_vif(&self, vif: u32) {
        let now = self.sum();
        let general = now.general_by_vif.get(vif as usize).copied().unwrap_or(0);
        let r = Restart { counters: now.stats.vif(vif), drops: now.stats.vif_drops(vif), general };
        self.restarts.lock().unwrap_or_else(|e| e.into_inner()).insert(vif, r);
    }

    /// The sum of every worker's counters, each worker's I/O, and the
    /// frames on the general path by vif; a vif's counted from when it was
    /// added (`restart_vif`).
    pub fn read(&self) -> Reading {
        let mut total = self.sum();
        let restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        for (&vif, r) in restarts.iter() {
            let i = vif as usize;
            if let Some(c) = total.stats.vifs.get_mut(i) {
                *c = c.since(&r.counters);
            }
            if let Some(d) = total.stats.vif_drops.get_mut(i) {
                for (d, r) in d.iter_mut().zip(r.drops) {
                    *d = d.saturating_sub(r);
                }
            }
            if let Some(n) = total.general_by_vif.get_mut(i) {
                *n = n.saturating_sub(r.general);
            }
        }
        total
    }

    /// The sum of every worker's counters as they counted them, each
    /// worker's taken at one moment.
    fn sum(&self) -> Reading {
        let mut total =
            Reading { stats: Stats::new(0, 0), io: Vec::with_capacity(self.slots.len()), general_by_vif: vec![] };
        for slot in &self.slots {
            // A worker never panics while holding its slot (it only copies),
            // so a poisoned lock still holds whole counters.
            let s = slot.lock().unwrap_or_else(|e| e.into_inner());
            total.stats.add(&s.stats);
            total.io.push(s.io);
            let general = &mut total.general_by_vif;
            if general.len() < s.general_by_vif.len() {
                general.resize(s.general_by_vif.len(), 0);
            }
            for (t, n) in general.iter_mut().zip(&s.general_by_vif) {
                *t += n;
            }
        }
        total
    }
}

/// What the workers have published, summed (`StatsBoard::read`).
#[derive(Debug, Clone)]
pub struct Reading {
    /// Every worker's counters, added up.
    pub stats: Stats,
    /// Each worker's I/O, in worker order.
    pub io: Vec<WorkerIo>,
    /// Frames the workers' fast lanes left to the general path, by the
    /// index of the vif they came in on (`Pipeline::general_frames_by_vif`).
    /// An index past the end counted none.
    pub general_by_vif: Vec<u64>,
}

impl Reading {
    /// Frames from vif index `vif` that took the general path.
    pub fn general_from(&self, vif: u32) -> u64 {
        self.general_by_vif.get(vif as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DropReason;

    #[test]
    fn readers_see_the_sum_of_what_workers_published() {
        let board = StatsBoard::new(2, 4, 2);
        let mut a = Stats::new(4, 2);
        a.drops[DropReason::NoRoute as usize] = 2;
        a.vifs[1].rx_packets = 7;
        let mut b = Stats::new(4, 2);
        b.vifs[1].rx_packets = 3;
        assert!(board.publish(0, &a, &[0, 4, 0, 0], WorkerIo { rx: 7, busy_ns: 5, ..Default::default() }));
        assert!(board.publish(1, &b, &[0, 1, 0, 2], WorkerIo { rx: 3, ..Default::default() }));
        let read = board.read();
        let (s, io) = (&read.stats, &read.io);
        assert_eq!(read.general_by_vif, vec![0, 5, 0, 2]);
        assert_eq!((read.general_from(3), read.general_from(4)), (2, 0), "past the end: none");
        assert_eq!(s.vif(1).rx_packets, 10);
        assert_eq!(s.dropped(DropReason::NoRoute), 2);
        assert_eq!(io.iter().map(|w| w.rx).collect::<Vec<_>>(), vec![7, 3]);
        assert!(!board.publish(2, &a, &[], WorkerIo::default()), "no such worker");
    }

    #[test]
    fn publishing_copies_into_the_slots_own_buffers() {
        let board = StatsBoard::new(1, 64, 8);
        let buffers = || {
            let slot = board.slots[0].lock().unwrap();
            let s = &slot.stats;
            (s.vifs.as_ptr(), s.vif_drops.as_ptr(), s.vrfs.as_ptr(), slot.general_by_vif.as_ptr())
        };
        let before = buffers();
        let mut s = Stats::new(64, 8);
        s.count_drop(63, DropReason::NoRoute);
        assert!(board.publish(0, &s, &[1; 64], WorkerIo::default()));
        assert_eq!(buffers(), before, "no allocation on the worker's side");
        assert_eq!(board.read().stats.vif_drops(63)[DropReason::NoRoute as usize], 1);
    }

    #[test]
    fn a_vif_added_again_counts_from_zero() {
        let board = StatsBoard::new(1, 8, 2);
        let mut s = Stats::new(8, 2);
        for _ in 0..3 {
            s.count_drop(5, DropReason::NoRoute);
        }
        s.vifs[5].rx_packets = 3;
        s.vifs[4].rx_packets = 9;
        let mut general = [0, 0, 0, 0, 6, 2, 0, 0];
        assert!(board.publish(0, &s, &general, WorkerIo::default()));
        board.restart_vif(5);
        let read = board.read();
        assert_eq!((read.stats.vif(5), read.stats.vif_drops(5)), (VifCounters::default(), [0; DropReason::COUNT]));
        assert_eq!(&read.general_by_vif[4..6], [6, 0]);
        assert_eq!(
            (read.stats.vif(4).rx_packets, read.stats.dropped(DropReason::NoRoute)),
            (9, 3),
            "others, and the node's"
        );
        // The new vif's own frames.
        s.count_drop(5, DropReason::Truncated);
        s.vifs[5].rx_packets += 1;
        general[5] += 1;
        assert!(board.publish(0, &s, &general, WorkerIo::default()));
        let read = board.read();
        assert_eq!((read.stats.vif(5).rx_packets, read.stats.vif(5).drops, read.stats.vif(5).rx_errors), (1, 1, 1));
        assert_eq!(read.stats.vif_drops(5)[DropReason::Truncated as usize], 1);
        assert_eq!(read.stats.vif_drops(5)[DropReason::NoRoute as usize], 0);
        // Added again: from zero again.
        assert_eq!(read.general_from(5), 1);
        board.restart_vif(5);
        assert_eq!(board.read().stats.vif(5), VifCounters::default());
        assert_eq!(board.read().general_from(5), 0);
    }

    #[test]
    fn a_worker_skips_publishing_rather_than_wait_for_a_reader() {
        let board = StatsBoard::new(1, 1, 1);
        let held = board.slots[0].lock().unwrap();
        assert!(!board.publish(0, &Stats::new(1, 1), &[], WorkerIo::default()));
        drop(held);
        assert!(board.publish(0, &Stats::new(1, 1), &[], WorkerIo::default()));
    }
}
