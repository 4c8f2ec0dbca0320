//! Later fragments that come before their datagram's first, held until
//! its ports are known: TCP, UDP and ICMP (whose first says whether it is
//! an echo, with a flow, or not). Only the first fragment carries the ports, so a
//! later one judged alone could only be judged by its addresses: a policy
//! with port rules would decide it apart from its datagram, and ECMP could
//! send it to another member than the rest, where it is never reassembled.
//! So it waits, and once the first fragment has been seen (by any worker:
//! the ports are in the flow table's `FragmentTable`) it is finished where
//! it stopped, on its datagram's flow. Contrail's vRouter queues such
//! fragments for the same reason.
//!
//! Each worker holds its own, copied out of the frame they came in, so that
//! the frame goes back to its ring at once and holding never starves the
//! receive rings. Bounded: `SLOTS` fragments of up to `BYTES` bytes, of
//! which one sender may take `PER_SENDER`, so that one sending fragments
//! whose firsts never come cannot take the others' room. A local sender is
//! its vif; from the fabric, which carries every remote pod's, a sender is
//! an inner source address. A fragment that finds no room is dropped as
//! `FragmentQueueFull`; one that waits `HOLD_MS` for its first, as
//! `NoFragEntry`.
//!
//! A held fragment keeps the next hop it was going to, not only its id:
//! the tables may change while it waits, and an id deleted and given to
//! another next hop meanwhile must not send it elsewhere, perhaps to
//! another tenant's pod (`Waiting::still_goes_to`).

use super::forward::IpInfo;
use super::Origin;
use crate::flow::FragmentKey;
use crate::memory::Buffer;
use crate::stats::DropReason;
use crate::tables::{NextHop, RouteTarget, Tables, VifIndex};
use std::sync::{Arc, Weak};

/// Fragments one worker holds at most (Contrail's per-CPU queue: 256).
pub const SLOTS: usize = 64;
/// Fragments one worker holds at most from one sender.
pub const PER_SENDER: usize = SLOTS / 4;
/// The longest fragment held, in bytes from its Ethernet header: an AF_XDP
/// frame's.
pub const BYTES: usize = 2048;
/// How long a fragment waits for its datagram's first, in milliseconds.
/// The first fragment of a reordered datagram follows within a round trip;
/// one that has not come by now was lost, and the datagram with it.
pub const HOLD_MS: u64 = 2_000;

/// Where a held fragment stopped: what the pipeline had decided about it
/// before its flow lookup.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    /// The datagram it is part of: its first fragment releases it.
    pub datagram: FragmentKey,
    /// The vif it came in on.
    pub vif: VifIndex,
    /// The VRF it is routed in.
    pub vrf: u32,
    /// Where it goes, as its route or label said; `None` when it had no
    /// route (a floating IP's answer, which its flow routes elsewhere).
    pub target: Option<RouteTarget>,
    /// The next hop `target` named when the fragment was held. Weak: it
    /// keeps no next hop alive, but its address is not reused meanwhile.
    pub nh: Weak<NextHop>,
    /// Where it came from, for the ICMP errors it may cause.
    pub origin: Origin,
    /// Its IP header, as parsed (its offsets hold in the copy).
    pub info: IpInfo,
    /// When it was held.
    pub since: u64,
    /// Its length.
    pub len: u16,
}

impl Waiting {
    /// Where the fragment goes in tables `t`: its target, if that still
    /// names the next hop it was held for. Else the route for its
    /// destination, if that names the same id (the next hop was updated in
    /// place: a composite's members, a tunnel's MAC). If neither, the id was
    /// deleted, or given to another next hop, while it waited: `InvalidNh`.
    pub fn still_goes_to(&self, t: &Tables) -> Result<Option<RouteTarget>, DropReason> {
        let Some(target) = self.target else { return Ok(None) };
        let now = t.nexthop_shared(target.nh);
        if now.is_some_and(|nh| std::ptr::eq(Arc::as_ptr(nh), self.nh.as_ptr())) {
            return Ok(Some(target));
        }
        let routed = t.vrf(self.vrf).and_then(|v| v.lookup(self.info.v6, self.info.dst));
        routed.filter(|r| *r == target).map(Some).ok_or(DropReason::InvalidNh)
    }
}

/// One worker's held fragments (see the module's documentation).
pub(super) struct FragmentHold {
    waiting: Box<[Option<Waiting>; SLOTS]>,
    /// Slot `i`'s bytes are `bytes[i * BYTES..][..len]`.
    bytes: Box<[u8]>,
    /// The slots in use, kept rather than counted: every batch asks.
    held: usize,
}

impl FragmentHold {
    pub fn new() -> Self {
        FragmentHold {
            waiting: Box::new(std::array::from_fn(|_| None)),
            bytes: vec![0; SLOTS * BYTES].into_boxed_slice(),
            held: 0,
        }
    }

    /// True when no fragment waits: the pipeline's one test per batch.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Keeps a copy of `frame`, a later fragment, as `w` says, unless its
    /// sender (`w.vif`, and with `by_source` its source address) has its
    /// share held already.
    pub fn hold(&mut self, frame: &[u8], w: Waiting, by_source: bool) -> Result<(), DropReason> {
        let same = |h: &&Waiting| h.vif == w.vif && (!by_source || h.datagram.src == w.datagram.src);
        if self.waiting.iter().flatten().filter(same).count() >= PER_SENDER {
            return Err(DropReason::FragmentQueueFull);
        }
        let free = self.waiting.iter().position(Option::is_none);
        let (Some(slot), true) = (free, frame.len() <= BYTES) else { return Err(DropReason::FragmentQueueFull) };
        self.bytes[slot * BYTES..][..frame.len()].copy_from_slice(frame);
        self.waiting[slot] = Some(Waiting { len: frame.len() as u16, ..w });
        self.held += 1;
        Ok(())
    }

    /// What slot `slot` holds, if anything.
    pub fn get(&self, slot: usize) -> Option<&Waiting> {
        self.waiting[slot].as_ref()
    }

    /// Lets slot `slot` go, its bytes copied into `out`, which is as long
    /// as they are (`Waiting::len`). `None` if the slot is empty or `out`
    /// is not that long; the slot is then kept.
    pub fn take(&mut self, slot: usize, out: &mut [u8]) -> Option<Waiting> {
        if self.waiting[slot].as_ref().is_none_or(|w| usize::from(w.len) != out.len()) {
            return None;
        }
        let w = self.waiting[slot].take()?;
        self.held -= 1;
        out.copy_from_slice(&self.bytes[slot * BYTES..][..out.len()]);
        Some(w)
    }

    /// Drops slot `slot`'s fragment without looking at it.
    pub fn discard(&mut self, slot: usize) -> Option<Waiting> {
        let w = self.waiting[slot].take()?;
        self.held -= 1;
        Some(w)
    }
}

/// Holds `f`, a later fragment of `datagram` routed in `vrf` to `target`
/// (see `Waiting`), whose first fragment has not been seen.
#[cold]
#[inline(never)]
pub(super) fn hold_fragment<B: Buffer>(
    ctx: &mut super::Ctx<'_, B>,
    f: &super::Frame<B>,
    datagram: FragmentKey,
    vrf: u32,
    target: Option<RouteTarget>,
    info: &IpInfo,
    origin: Origin,
) -> super::Verdict {
    let nh = target.and_then(|r| ctx.t.nexthop_shared(r.nh)).map_or_else(Weak::new, Arc::downgrade);
    let w = Waiting { datagram, vif: f.vif, vrf, target, nh, origin, info: *info, since: ctx.now, len: 0 };
    let fabric = ctx.t.vif(f.vif).is_some_and(|v| v.kind == crate::tables::VifKind::Fabric);
    match ctx.hold.hold(f.data(), w, fabric) {
        Ok(()) => {
            ctx.stats.fragments_held += 1;
            super::Verdict::Held
        }
        Err(r) => super::Verdict::Drop(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(vif: VifIndex, src: u32, ident: u16) -> Waiting {
        Waiting {
            datagram: FragmentKey::v4(1, 17, src, 0x0a01_0003, ident),
            vif,
            vrf: 1,
            target: None,
            nh: Weak::new(),
            origin: Origin::Vif(vif),
            info: IpInfo::EMPTY,
            since: 0,
            len: 0,
        }
    }

    #[test]
    fn holds_copies_up_to_its_bound_and_gives_them_back() {
        let mut hold = FragmentHold::new();
        assert!(hold.is_empty());
        // From the fabric, from as many sources as it takes.
        for i in 0..SLOTS {
            let frame = vec![i as u8; 60 + i];
            hold.hold(&frame, waiting(0, i as u32, i as u16), true).unwrap();
        }
        assert_eq!(hold.hold(&[0; 60], waiting(0, 999, 999), true), Err(DropReason::FragmentQueueFull), "full");
        let mut out = [0u8; 67];
        assert!(hold.take(7, &mut out[..66]).is_none(), "not into a window of another length");
        let w = hold.take(7, &mut out).unwrap();
        assert_eq!((w.datagram.ident, w.len), (7, 67));
        assert_eq!(out, [7u8; 67], "its own bytes");
        assert!(hold.take(7, &mut out).is_none(), "taken once");
        let long = hold.hold(&[0; BYTES + 1], waiting(0, 1000, 1), true);
        assert_eq!(long, Err(DropReason::FragmentQueueFull), "too long");
        hold.hold(&[0xee; 100], waiting(0, 1000, 1000), true).unwrap();
        assert_eq!(hold.get(7).map(|w| w.datagram.ident), Some(1000), "the freed slot is reused");
        for slot in 0..SLOTS {
            hold.discard(slot).unwrap();
        }
        assert!(hold.is_empty());
    }

    #[test]
    fn one_sender_takes_at_most_its_share() {
        let mut hold = FragmentHold::new();
        // A pod is its vif, whatever addresses it sends from.
        for i in 0..PER_SENDER as u16 {
            hold.hold(&[0; 60], waiting(1, u32::from(i), i), false).unwrap();
        }
        let over = hold.hold(&[0; 60], waiting(1, 5000, 5000), false);
        assert_eq!(over, Err(DropReason::FragmentQueueFull), "vif 1's share is taken");
        hold.hold(&[0; 60], waiting(2, 1, 1), false).expect("vif 2 has its own");
        // Through the fabric, a sender is a source address.
        for i in 0..PER_SENDER as u16 {
            hold.hold(&[0; 60], waiting(0, 7, i), true).unwrap();
        }
        assert_eq!(hold.hold(&[0; 60], waiting(0, 7, 99), true), Err(DropReason::FragmentQueueFull));
        hold.hold(&[0; 60], waiting(0, 8, 99), true).expect("another remote source has its own");
        // A slot let go makes room in its sender's share.
        hold.discard(0).unwrap();
        hold.hold(&[0; 60], waiting(1, 5000, 5000), false).unwrap();
    }
}
