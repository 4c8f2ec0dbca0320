//! The tap: where workers leave copies of a watched vif's frames for the
//! API to collect.
//!
//! A capture session watches one vif. Its frames are copied into buffers
//! the session allocated when it started, and queued on a bounded ring;
//! the API drains the ring and hands the buffers back. Workers take no
//! lock and allocate nothing: when the reader falls behind and every
//! buffer is queued, a frame is counted as missed instead (tcpdump's
//! "dropped by kernel"). With no session running, a worker pays one atomic
//! load per batch.

use super::Filter;
use crate::pipeline::Verdict;
use crate::stats::GeneralCause;
use crate::tables::VifIndex;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Sessions that can run at once, on the same vif or on others.
pub const SESSIONS: usize = 4;

/// Frames a session holds between two reads: about 100 ms of a busy pod
/// at the rate `vrctl vifdump` reads.
pub const RING: usize = 1024;

/// The most of a frame a session keeps: one UMEM frame, so every frame whole.
pub const MAX_SNAPLEN: usize = 2048;

const NO_VIF: u32 = u32::MAX;

/// Which way a frame crossed the vif, as vrouterd sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the vif: what the pod or the fabric sent.
    In,
    /// Sent out of the vif, as rewritten.
    Out,
}

/// One frame copied by a session.
#[derive(Debug)]
pub struct Captured {
    generation: u32,
    /// When the worker took the frame, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The vif.
    pub vif: VifIndex,
    /// Which way it went.
    pub direction: Direction,
    /// Its length on the wire; `data` may be shorter (the session's snap length).
    pub len: u32,
    /// What vrouterd did with a received frame (`None` for one sent).
    pub verdict: Option<Verdict>,
    /// Why the fast lane left a received frame to the general path (`None`:
    /// the lane took it, or the frame was sent).
    pub general: Option<GeneralCause>,
    buf: Box<[u8]>,
    caplen: u16,
}

impl Captured {
    /// The bytes kept.
    pub fn data(&self) -> &[u8] {
        &self.buf[..usize::from(self.caplen)]
    }
}

/// A received frame copied before the pipeline ran, waiting for its
/// verdict (`Tap::stage`, `Tap::post_staged`).
#[derive(Debug)]
pub struct Staged {
    slot: u8,
    /// Its position in the batch.
    at: u16,
    captured: Captured,
}

struct Slot {
    vif: AtomicU32,
    snaplen: AtomicU32,
    /// Bumped at each start, so that a frame a worker copied for the
    /// previous session is not read as this one's.
    generation: AtomicU32,
    /// Which frames it keeps; `None`: all. Set before the slot is armed.
    filter: ArcSwapOption<Filter>,
    /// Keeps only the received frames the fast lane left to the general
    /// path (`post_staged` decides, once the pipeline has run).
    general_only: AtomicBool,
    ring: ArrayQueue<Captured>,
    free: ArrayQueue<Box<[u8]>>,
    missed: AtomicU64,
}

/// Every session's rings, shared by the workers and the API.
pub struct Tap {
    /// Bit `i` set while session slot `i` captures.
    armed: AtomicU32,
    slots: [Slot; SESSIONS],
    /// Which slots are taken: starts and stops only, never a worker.
    taken: Mutex<[bool; SESSIONS]>,
}

/// A running session, as the API holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    slot: u8,
    generation: u32,
}

/// Why a session could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// `SESSIONS` are running already.
    Busy,
}

impl Default for Tap {
    fn default() -> Self {
        Tap::new()
    }
}

impl Tap {
    /// A tap with no session running. Its rings hold no buffers until a
    /// session starts.
    pub fn new() -> Tap {
        Tap {
            armed: AtomicU32::new(0),
            slots: std::array::from_fn(|_| Slot {
                vif: AtomicU32::new(NO_VIF),
                snaplen: AtomicU32::new(0),
                generation: AtomicU32::new(0),
                filter: ArcSwapOption::empty(),
                general_only: AtomicBool::new(false),
                ring: ArrayQueue::new(RING),
                free: ArrayQueue::new(RING),
                missed: AtomicU64::new(0),
            }),
            taken: Mutex::new([false; SESSIONS]),
        }
    }

    /// Whether any session runs: a worker asks once per batch.
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire) != 0
    }

    /// Whether a session watches `vif`: a worker asks once per batch, before
    /// staging the batch's frames.
    #[inline]
    pub fn watches(&self, vif: VifIndex) -> bool {
        let mut watching = false;
        self.each_watching(vif, |_, _, _| watching = true);
        watching
    }

    /// Starts copying `vif`'s frames that `filter` matches, keeping at most
    /// `snaplen` bytes of each (capped at `MAX_SNAPLEN`); with
    /// `general_only`, only the received ones the fast lane left to the
    /// general path. Those are known once the pipeline has run, so each
    /// frame is copied first: the others' buffers go back unqueued, and a
    /// busy vif's capture misses none of those it keeps for them.
    pub fn start(
        &self,
        vif: VifIndex,
        snaplen: usize,
        filter: Filter,
        general_only: bool,
    ) -> Result<Session, StartError> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let i = taken.iter().position(|t| !t).ok_or(StartError::Busy)?;
        taken[i] = true;
        let slot = &self.slots[i];
        Self::empty(slot);
        let snaplen = snaplen.clamp(1, MAX_SNAPLEN);
        for _ in 0..RING {
            let _ = slot.free.push(vec![0u8; snaplen].into_boxed_slice());
        }
        let generation = slot.generation.load(Ordering::Relaxed).wrapping_add(1);
        slot.generation.store(generation, Ordering::Relaxed);
        slot.snaplen.store(snaplen as u32, Ordering::Relaxed);
        slot.missed.store(0, Ordering::Relaxed);
        slot.filter.store((!filter.is_any()).then(|| std::sync::Arc::new(filter)));
        slot.general_only.store(general_only, Ordering::Relaxed);
        slot.vif.store(vif, Ordering::Relaxed);
        // Release: a worker that sees the bit sees the slot as set above.
        self.armed.fetch_or(1 << i, Ordering::Release);
        Ok(Session { slot: i as u8, generation })
    }

    /// Stops a session and frees its buffers. A frame a worker was copying
    /// meanwhile may still land in the ring; the next start empties it.
    pub fn stop(&self, s: Session) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let i = usize::from(s.slot);
        if !taken[i] || self.slots[i].generation.load(Ordering::Relaxed) != s.generation {
            return;
        }
        self.armed.fetch_and(!(1 << i), Ordering::Release);
        self.slots[i].vif.store(NO_VIF, Ordering::Relaxed);
        Self::empty(&self.slots[i]);
        taken[i] = false;
    }

    fn empty(slot: &Slot) {
        while slot.ring.pop().is_some() {}
        while slot.free.pop().is_some() {}
    }

    /// Takes the session's frames, oldest first, while `keep` says there is
    /// room for more (it gets each frame; once it returns false, no more
    /// are taken). Each frame's buffer goes back to the session once
    /// `keep` has seen it. Returns the frames missed so far, for want of a
    /// free buffer.
    pub fn read(&self, s: Session, mut keep: impl FnMut(&Captured) -> bool) -> u64 {
        let slot = &self.slots[usize::from(s.slot)];
        while let Some(c) = slot.ring.pop() {
            if c.generation != s.generation {
                continue;
            }
            let more = keep(&c);
            let _ = slot.free.push(c.buf);
            if !more {
                break;
            }
        }
        slot.missed.load(Ordering::Relaxed)
    }

    /// Copies a frame received from `vif`, at position `at` of its batch,
    /// for every session that watches `vif`; the copies wait in `staged`
    /// for the pipeline's verdict (`post_staged`). `staged` never grows
    /// past `SESSIONS` entries a frame, which its owner reserves.
    #[inline]
    pub fn stage(&self, vif: VifIndex, at: usize, data: &[u8], time_ns: u64, staged: &mut Vec<Staged>) {
        self.each_watching(vif, |i, slot, generation| {
            if !Self::keeps(slot, data) {
                return;
            }
            if staged.len() == staged.capacity() {
                slot.missed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Some(captured) = Self::copy(slot, generation, vif, Direction::In, data, time_ns) {
                staged.push(Staged { slot: i as u8, at: at as u16, captured });
            }
        });
    }

    /// Queues the staged copies of a batch, each with the verdict of the
    /// frame at its position and why it took the general path, if it did
    /// (`outcome_at`).
    pub fn post_staged(
        &self,
        staged: &mut Vec<Staged>,
        outcome_at: impl Fn(usize) -> (Option<Verdict>, Option<GeneralCause>),
    ) {
        for mut s in staged.drain(..) {
            (s.captured.verdict, s.captured.general) = outcome_at(usize::from(s.at));
            let slot = &self.slots[usize::from(s.slot)];
            if s.captured.general.is_none() && slot.general_only.load(Ordering::Relaxed) {
                let _ = slot.free.push(s.captured.buf);
                continue;
            }
            Self::post(slot, s.captured);
        }
    }

    /// Copies a frame sent out of `vif` for every session that watches it.
    #[inline]
    pub fn sent(&self, vif: VifIndex, data: &[u8], time_ns: u64) {
        self.each_watching(vif, |_, slot, generation| {
            if slot.general_only.load(Ordering::Relaxed) || !Self::keeps(slot, data) {
                return;
            }
            if let Some(c) = Self::copy(slot, generation, vif, Direction::Out, data, time_ns) {
                Self::post(slot, c);
            }
        });
    }

    #[inline]
    fn each_watching(&self, vif: VifIndex, mut f: impl FnMut(usize, &Slot, u32)) {
        let mut armed = self.armed.load(Ordering::Acquire);
        while armed != 0 {
            let i = armed.trailing_zeros() as usize;
            armed &= armed - 1;
            let slot = &self.slots[i];
            if slot.vif.load(Ordering::Relaxed) == vif {
                f(i, slot, slot.generation.load(Ordering::Relaxed));
            }
        }
    }

    fn keeps(slot: &Slot, data: &[u8]) -> bool {
        slot.filter.load().as_ref().is_none_or(|f| f.matches(data))
    }

    fn copy(
        slot: &Slot,
        generation: u32,
        vif: VifIndex,
        direction: Direction,
        data: &[u8],
        time_ns: u64,
    ) -> Option<Captured> {
        let Some(mut buf) = slot.free.pop() else {
            slot.missed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let caplen = data.len().min(buf.len()).min(slot.snaplen.load(Ordering::Relaxed) as usize);
        buf[..caplen].copy_from_slice(&data[..caplen]);
        Some(Captured {
            generation,
            time_ns,
            vif,
            direction,
            len: data.len() as u32,
            verdict: None,
            general: None,
            buf,
            caplen: caplen as u16,
        })
    }

    fn post(slot: &Slot, c: Captured) {
        if let Err(c) = slot.ring.push(c) {
            // Only a stale frame of a stopped session can take a place:
            // the ring has room for every buffer.
            slot.missed.fetch_add(1, Ordering::Relaxed);
            let _ = slot.free.push(c.buf);
        }
    }
}

/// Now, in nanoseconds since the Unix epoch, as captures are stamped.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DropReason;

    /// A frame as read: vif, direction, length, bytes kept, verdict, why it
    /// took the general path.
    type Read = (VifIndex, Direction, u32, Vec<u8>, Option<Verdict>, Option<GeneralCause>);

    fn drain(tap: &Tap, s: Session) -> (Vec<Read>, u64) {
        let mut got = Vec::new();
        let missed = tap.read(s, |c| {
            got.push((c.vif, c.direction, c.len, c.data().to_vec(), c.verdict, c.general));
            true
        });
        (got, missed)
    }

    #[test]
    fn nothing_is_copied_until_a_session_watches_the_vif() {
        let tap = Tap::new();
        assert!(!tap.armed());
        tap.sent(3, &[1, 2, 3], 1);
        let s = tap.start(3, MAX_SNAPLEN, Filter::default(), false).unwrap();
        assert!(tap.armed() && tap.watches(3) && !tap.watches(4));
        tap.sent(4, &[9], 1);
        tap.sent(3, &[1, 2, 3], 5);
        let (got, missed) = drain(&tap, s);
        assert_eq!(got, vec![(3, Direction::Out, 3, vec![1, 2, 3], None, None)]);
        assert_eq!(missed, 0);
    }

    #[test]
    fn a_filtered_session_copies_only_what_matches() {
        let tap = Tap::new();
        let frame = |dport: u8| {
            let mut f = vec![0u8; 42];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14..34].copy_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
            f[34..42].copy_from_slice(&[0, 9, 0, dport, 0, 8, 0, 0]);
            f
        };
        let filter = Filter { one: (None, Some(53)), ..Filter::default() };
        let s = tap.start(1, MAX_SNAPLEN, filter, false).unwrap();
        let all = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        tap.sent(1, &frame(53), 0);
        tap.sent(1, &frame(54), 0);
        let mut staged = Vec::with_capacity(8);
        tap.stage(1, 0, &frame(54), 0, &mut staged);
        assert_eq!(staged.len(), 1, "only the unfiltered session stages it");
        tap.post_staged(&mut staged, |_| (None, None));
        assert_eq!(drain(&tap, s).0.iter().map(|g| g.3[37]).collect::<Vec<_>>(), [53]);
        assert_eq!(drain(&tap, all).0.len(), 3);
        tap.stop(s);
        let again = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        tap.sent(1, &frame(54), 0);
        assert_eq!(drain(&tap, again).0.len(), 1, "a new session has its own filter");
    }

    #[test]
    fn received_frames_wait_for_their_verdict() {
        let tap = Tap::new();
        let s = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        let mut staged = Vec::with_capacity(4);
        tap.stage(1, 0, &[0xaa], 7, &mut staged);
        tap.stage(2, 1, &[0xbb], 7, &mut staged);
        tap.stage(1, 2, &[0xcc], 7, &mut staged);
        assert_eq!(staged.len(), 2);
        let verdicts = [Verdict::Tx(2), Verdict::ToHost, Verdict::Drop(DropReason::NoRoute)];
        let general = [None, None, Some(GeneralCause::NoRoute)];
        tap.post_staged(&mut staged, |at| (verdicts.get(at).copied(), general.get(at).copied().flatten()));
        assert!(staged.is_empty());
        let (got, _) = drain(&tap, s);
        assert_eq!(got[0], (1, Direction::In, 1, vec![0xaa], Some(Verdict::Tx(2)), None));
        assert_eq!(got[1].4, Some(Verdict::Drop(DropReason::NoRoute)), "the verdict of its own position");
        assert_eq!(got[1].5, Some(GeneralCause::NoRoute), "and why it took the general path");
    }

    /// `general_only`: only the received frames that took the general
    /// path are queued, and the others' buffers go back, so that a busy
    /// vif's frames the lane takes never crowd them out.
    #[test]
    fn a_general_only_session_keeps_what_took_the_general_path() {
        let tap = Tap::new();
        let s = tap.start(1, MAX_SNAPLEN, Filter::default(), true).unwrap();
        tap.sent(1, &[0x01], 1);
        // Batches of 64, ten times the ring's frames in all.
        let batches = 10 * RING / 64;
        for _ in 0..batches {
            let mut staged = Vec::with_capacity(64);
            for at in 0..64 {
                tap.stage(1, at, &[0xaa], 2, &mut staged);
            }
            tap.post_staged(&mut staged, |at| (Some(Verdict::Tx(2)), (at == 5).then_some(GeneralCause::TcpSyn)));
        }
        let (got, missed) = drain(&tap, s);
        assert_eq!((got.len(), missed), (batches, 0), "one a batch, none missed, none sent");
        assert!(got.iter().all(|g| g.1 == Direction::In && g.5 == Some(GeneralCause::TcpSyn)), "{got:?}");
    }

    #[test]
    fn a_reader_that_falls_behind_misses_frames_and_counts_them() {
        let tap = Tap::new();
        let s = tap.start(1, 64, Filter::default(), false).unwrap();
        for i in 0..RING + 10 {
            tap.sent(1, &[i as u8; 100], 0);
        }
        let (got, missed) = drain(&tap, s);
        assert_eq!((got.len(), missed), (RING, 10));
        assert_eq!((got[0].2, got[0].3.len()), (100, 64), "cut to the snap length");
        tap.sent(1, &[1], 0);
        assert_eq!(drain(&tap, s).0.len(), 1, "buffers came back");
    }

    #[test]
    fn a_read_stops_where_the_reader_says() {
        let tap = Tap::new();
        let s = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        for i in 0..5u8 {
            tap.sent(1, &[i], 0);
        }
        let mut first = Vec::new();
        tap.read(s, |c| {
            first.push(c.data()[0]);
            first.len() < 2
        });
        assert_eq!(first, [0, 1]);
        assert_eq!(drain(&tap, s).0.iter().map(|g| g.3[0]).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn sessions_are_bounded_and_separate() {
        let tap = Tap::new();
        let sessions: Vec<_> =
            (0..SESSIONS as u32).map(|v| tap.start(v % 2, MAX_SNAPLEN, Filter::default(), false).unwrap()).collect();
        assert_eq!(tap.start(1, MAX_SNAPLEN, Filter::default(), false), Err(StartError::Busy));
        tap.sent(1, &[1], 0);
        assert_eq!(drain(&tap, sessions[1]).0.len(), 1);
        assert_eq!(drain(&tap, sessions[3]).0.len(), 1, "each watcher of vif 1 gets its copy");
        assert_eq!(drain(&tap, sessions[0]).0.len(), 0);
        tap.stop(sessions[1]);
        tap.stop(sessions[1]);
        let again = tap.start(5, MAX_SNAPLEN, Filter::default(), false).unwrap();
        assert!(!sessions.contains(&again), "a new generation");
        tap.stop(sessions[1]);
        tap.sent(5, &[5], 0);
        assert_eq!(drain(&tap, again).0.len(), 1, "a stale stop does not end the new session");
    }

    #[test]
    fn a_stopped_session_leaves_nothing_for_the_next() {
        let tap = Tap::new();
        let old = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        tap.sent(1, &[1], 0);
        let mut staged = Vec::with_capacity(1);
        tap.stage(1, 0, &[2], 0, &mut staged);
        tap.stop(old);
        assert!(!tap.armed());
        let new = tap.start(1, MAX_SNAPLEN, Filter::default(), false).unwrap();
        // A worker that staged a frame before the stop posts it after.
        tap.post_staged(&mut staged, |_| (None, None));
        tap.sent(1, &[3], 0);
        assert_eq!(drain(&tap, new).0.iter().map(|g| g.3[0]).collect::<Vec<_>>(), [3]);
    }
}
