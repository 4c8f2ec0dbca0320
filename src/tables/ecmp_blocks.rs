//! Which /24 blocks of a VRF's IPv4 space (/120 blocks of its IPv6 space)
//! hold addresses routed to an ECMP composite, such as a service range: a
//! bit set the first pipeline stage reads before any route lookup.
//!
//! In a VRF that tracks flows for its ECMP routes alone, a packet's route
//! says whether it belongs to a flow, so its flow lookup had to wait for
//! the route lookup, and a hit could not spare it. With this hint the
//! first stage starts the flow lookups of the packets it names, as it does
//! where every packet is tracked. A hint, not an answer: it may name an
//! address that has no such route (another address of its block does, or
//! a hash collision, about one block in sixteen at most), which costs that
//! packet a probe for nothing; it leaves out the routes wider than
//! `WIDEST` (whose packets are looked up after their route, as before).
//! The route still decides whether a packet is tracked. Where no route
//! was left out (`is_complete`), the hint can also say no: an address it
//! does not name is routed to no composite, so the pipeline need not ask
//! its route (most of a pod network's packets, which go to other pods).

use super::lpm::FibKey;
use std::sync::Arc;

/// An address family the hint is kept for: its blocks, and the widest
/// route it counts. The rest is the address's (`FibKey`): its width, and
/// its fold to 64 bits, whose product's top bits index the set.
pub trait HintFamily:
    FibKey + Default + std::ops::Shr<u32, Output = Self> + std::ops::Add<Output = Self> + From<u8>
{
    /// The block's prefix length: a service range's addresses share few.
    const BLOCK_LEN: u8;
    /// Routes wider than this are left out: 256 blocks at most. (An IPv4
    /// /15 would mark 512, a default route all of them, and make the hint
    /// name everything.)
    const WIDEST: u8;

    /// The block of `addr`.
    #[inline(always)]
    fn block_of(addr: Self) -> Self {
        addr >> u32::from(Self::BITS - Self::BLOCK_LEN)
    }

    /// The block `k` blocks after `first`: a route spans 256 at most.
    #[inline(always)]
    fn nth(first: Self, k: u8) -> Self {
        first + Self::from(k)
    }

    /// The block's bit, of a set of 2^(64 - `shift`): multiplicative
    /// (Fibonacci) hashing of the block's fold, the product's top bits, so
    /// that consecutive blocks spread over the set.
    #[inline(always)]
    fn index(block: Self, shift: u32) -> usize {
        (block.fold().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
    }
}

impl HintFamily for u32 {
    const BLOCK_LEN: u8 = 24;
    const WIDEST: u8 = 16;
}

impl HintFamily for u128 {
    const BLOCK_LEN: u8 = 120;
    const WIDEST: u8 = 112;
}

/// Bits kept per block, at least: the share of other blocks a hint names
/// falls to about 1 in this many.
const BITS_PER_BLOCK: usize = 16;
/// The smallest set, in bits.
const MIN_BITS: usize = 1 << 10;
/// The largest set, in bits (512 KiB; the writer's counts for it, 8 MiB): a
/// VRF whose wide ECMP routes cover more blocks than this allows for gets
/// more false hints, nothing worse.
const MAX_BITS: usize = 1 << 22;

/// The hint. Empty (naming no address) by default, and while the VRF has
/// no route of the family of `WIDEST` bits or longer to a composite.
#[derive(Clone)]
pub struct EcmpBlocks<A: HintFamily = u32> {
    bits: Option<Arc<[u64]>>,
    /// 64 minus log2 of the set's size in bits: a product's top bits index it.
    shift: u32,
    /// No route of the family to a composite was left out (none is wider
    /// than `WIDEST`). False by default: a hint no writer made claims nothing.
    complete: bool,
    family: std::marker::PhantomData<A>,
}

impl<A: HintFamily> Default for EcmpBlocks<A> {
    fn default() -> Self {
        EcmpBlocks { bits: None, shift: 0, complete: false, family: std::marker::PhantomData }
    }
}

impl<A: HintFamily> EcmpBlocks<A> {
    /// The hint for these routes (address and prefix length, the address
    /// masked to it), made at once; the writer counts its changes in
    /// (`EcmpBlockIndex`) instead.
    #[cfg(test)]
    fn new(routes: impl Iterator<Item = (A, u8)> + Clone) -> EcmpBlocks<A> {
        let mut index = EcmpBlockIndex::<A>::default();
        for (addr, len) in routes.clone() {
            index.route(addr, len, true);
        }
        index.hint(|| routes.clone())
    }

    /// False if no route of `WIDEST` bits or longer to a composite covers
    /// an address of `addr`'s block; true if one may.
    #[inline(always)]
    pub fn may_hold(&self, addr: A) -> bool {
        let Some(bits) = &self.bits else { return false };
        let i = A::index(A::block_of(addr), self.shift);
        bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
    }

    /// True while it names no address.
    pub fn is_empty(&self) -> bool {
        self.bits.is_none()
    }

    /// True if every route of the family to a composite is counted in, so that an
    /// address `may_hold` does not name is routed to no composite.
    #[inline(always)]
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// The writer's side of one VRF's hint: per bit of the set, how many
/// (route, block) pairs hash to it, so that a route's change sets or
/// clears bits in place, with no scan of the VRF's routes. The set is
/// sized again, from the routes, only when the number of pairs has grown
/// past it or shrunk to a quarter of it: a VRF that gains a million ECMP
/// routes in a thousand batches scans its routes about a dozen times, not
/// a thousand.
pub(crate) struct EcmpBlockIndex<A: HintFamily = u32> {
    /// Per bit, the pairs that hash to it; one that reaches `u16::MAX`
    /// stays there, and its bit set, until the set is sized again.
    refs: Vec<u16>,
    bits: Vec<u64>,
    shift: u32,
    /// (route, block) pairs counted.
    pairs: usize,
    /// Routes to composites left out, as wider than `WIDEST`.
    wide: usize,
    family: std::marker::PhantomData<A>,
}

impl<A: HintFamily> Default for EcmpBlockIndex<A> {
    fn default() -> Self {
        EcmpBlockIndex {
            refs: Vec::new(),
            bits: Vec::new(),
            shift: 0,
            pairs: 0,
            wide: 0,
            family: std::marker::PhantomData,
        }
    }
}

impl<A: HintFamily> EcmpBlockIndex<A> {
    /// Counts (`add`) or uncounts a route to a composite, as its address
    /// and prefix length. Routes wider than `WIDEST` are left out.
    pub(crate) fn route(&mut self, addr: A, len: u8, add: bool) {
        if !(A::WIDEST..=A::BITS).contains(&len) {
            self.wide = if add { self.wide + 1 } else { self.wide.saturating_sub(1) };
            return;
        }
        let first = A::block_of(addr);
        let n = blocks::<A>(len);
        self.pairs = if add { self.pairs + n } else { self.pairs.saturating_sub(n) };
        if self.bits.is_empty() {
            // Sized (and filled) by the next `hint`.
            return;
        }
        for k in 0..n {
            let i = A::index(A::nth(first, k as u8), self.shift);
            let r = &mut self.refs[i];
            match (add, *r) {
                (_, u16::MAX) => {}
                (true, _) => {
                    *r += 1;
                    self.bits[i / 64] |= 1 << (i % 64);
                }
                (false, 0) => {}
                (false, _) => {
                    *r -= 1;
                    if *r == 0 {
                        self.bits[i / 64] &= !(1 << (i % 64));
                    }
                }
            }
        }
    }

    /// The hint as counted, to publish. `routes` lists the VRF's routes to
    /// composites as they are now, for when the set must be sized again.
    pub(crate) fn hint<I: Iterator<Item = (A, u8)>>(&mut self, routes: impl Fn() -> I) -> EcmpBlocks<A> {
        let complete = self.wide == 0;
        if self.pairs == 0 {
            *self = EcmpBlockIndex { wide: self.wide, ..EcmpBlockIndex::default() };
            return EcmpBlocks { complete, ..EcmpBlocks::default() };
        }
        let size = size_for(self.pairs);
        let have = self.bits.len() * 64;
        if size > have || size * 4 <= have {
            self.refs = vec![0; size];
            self.bits = vec![0; size / 64];
            self.shift = 64 - size.trailing_zeros();
            (self.pairs, self.wide) = (0, 0);
            for (addr, len) in routes() {
                self.route(addr, len, true);
            }
        }
        EcmpBlocks {
            bits: Some(self.bits.as_slice().into()),
            shift: self.shift,
            complete,
            family: std::marker::PhantomData,
        }
    }

    /// True while it counts nothing: no route to a composite, kept or left out.
    pub(crate) fn is_empty(&self) -> bool {
        self.pairs == 0 && self.wide == 0
    }
}

fn blocks<A: HintFamily>(len: u8) -> usize {
    1 << (A::BLOCK_LEN - len.min(A::BLOCK_LEN))
}

fn size_for(pairs: usize) -> usize {
    pairs.saturating_mul(BITS_PER_BLOCK).next_power_of_two().clamp(MIN_BITS, MAX_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn others() -> impl Iterator<Item = u32> {
        (0..100_000u32).map(|i| 0x0a01_0000 + i).chain((0..100_000u32).map(|i| i.wrapping_mul(2_654_435_761)))
    }

    #[test]
    fn names_every_service_address_and_few_others() {
        // A thousand services, consecutive in 10.96.0.0/12, as Kubernetes
        // gives them: four blocks.
        let services: Vec<u32> = (0..1000).map(|i| 0x0a60_0000 + i).collect();
        let h = EcmpBlocks::<u32>::new(services.iter().map(|&a| (a, 32)));
        assert!(services.iter().all(|&a| h.may_hold(a)));
        let in_service_blocks = |a: u32| (0x0a60_0000..=0x0a60_03ff).contains(&a);
        let (mut named, mut n) = (0, 0);
        for a in others().filter(|&a| !in_service_blocks(a)) {
            named += u32::from(h.may_hold(a));
            n += 1;
        }
        let share = f64::from(named) / f64::from(n);
        assert!(share < 1.5 / BITS_PER_BLOCK as f64, "{named} of {n} other addresses named");
    }

    #[test]
    fn a_prefix_names_its_whole_range_and_a_too_wide_one_nothing() {
        let h = EcmpBlocks::<u32>::new([(0xc0a8_0000, 20), (0x0a00_0000, 8)].into_iter());
        assert!((0xc0a8_0000..0xc0a8_1000u32).all(|a| h.may_hold(a)));
        assert!(!h.may_hold(0xc0a8_1000) || !h.may_hold(0xc0a8_2000), "the next blocks, both named");
        assert!(!h.is_complete(), "a /8 was left out");
        let wide = EcmpBlocks::<u32>::new([(0x0a00_0000, 8), (0, 0)].into_iter());
        assert!(wide.is_empty() && !wide.is_complete());
        assert!(!wide.may_hold(0x0a01_0203));
        assert!(EcmpBlocks::<u32>::new([(0xc0a8_0000, 20)].into_iter()).is_complete());
    }

    /// Routes come and go, overlapping, in batches: the hint counted in
    /// place is the one made from scratch at the same size, bit for bit,
    /// and complete exactly while no route wider than `WIDEST` is live.
    #[test]
    fn a_hint_counted_in_place_matches_one_made_from_scratch() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut live: Vec<(u32, u8)> = Vec::new();
        let mut counted = EcmpBlockIndex::<u32>::default();
        for batch in 0..300 {
            for _ in 0..(next() % 40) {
                if live.is_empty() || next() % 3 != 0 {
                    // Now and then one too wide to count (/12-/15).
                    let len = if next() % 50 == 0 { 12 + (next() % 4) as u8 } else { 16 + (next() % 17) as u8 };
                    // A small space, so that routes overlap and share blocks.
                    let addr = (0x0a60_0000 | (next() as u32 & 0x000f_ffff)) & (u32::MAX << (32 - len));
                    live.push((addr, len));
                    counted.route(addr, len, true);
                } else {
                    let (addr, len) = live.swap_remove((next() % live.len() as u64) as usize);
                    counted.route(addr, len, false);
                }
            }
            let hint = counted.hint(|| live.iter().copied());
            let wide = live.iter().filter(|&&(_, len)| len < u32::WIDEST).count();
            assert_eq!(hint.is_empty(), live.len() == wide, "batch {batch}");
            assert_eq!(hint.is_complete(), wide == 0, "batch {batch}: {wide} wide routes");
            assert_eq!(counted.is_empty(), live.is_empty(), "batch {batch}");
            let Some(bits) = &hint.bits else { continue };
            let mut fresh = vec![0u64; bits.len()];
            for &(addr, len) in live.iter().filter(|&&(_, len)| len >= u32::WIDEST) {
                for block in (addr >> 8)..(addr >> 8) + blocks::<u32>(len) as u32 {
                    let i = u32::index(block, hint.shift);
                    fresh[i / 64] |= 1 << (i % 64);
                }
            }
            assert_eq!(&bits[..], &fresh[..], "batch {batch}: {} routes", live.len());
            assert!(live
                .iter()
                .filter(|&&(_, len)| len >= u32::WIDEST)
                .all(|&(a, len)| hint.may_hold(a)
                    && hint.may_hold(a | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0))));
        }
        // Grown for many routes, the set shrinks again when few are left;
        // a wide route counted before it is sized again counts once after.
        counted = EcmpBlockIndex::<u32>::default();
        let wide = (0x0a00_0000, 12);
        counted.route(wide.0, wide.1, true);
        let many: Vec<(u32, u8)> = (0..5000u32).map(|i| (0x0a60_0000 + (i << 8), 24)).collect();
        many.iter().for_each(|&(a, l)| counted.route(a, l, true));
        let big = counted.hint(|| many.iter().copied().chain([wide])).bits.map_or(0, |b| b.len() * 64);
        counted.route(wide.0, wide.1, false);
        many[1..].iter().for_each(|&(a, l)| counted.route(a, l, false));
        let small = counted.hint(|| many[..1].iter().copied());
        assert!(small.is_complete(), "the wide route went");
        let small = small.bits.map_or(0, |b| b.len() * 64);
        assert_eq!((big, small), (size_for(5000), MIN_BITS));
    }

    #[test]
    fn an_empty_hint_names_nothing() {
        let h = EcmpBlocks::<u32>::new(std::iter::empty());
        assert!(h.is_empty() && h.is_complete(), "counted, and nothing left out");
        assert!(!EcmpBlocks::<u32>::default().is_complete(), "made by no writer: claims nothing");
        assert!(!others().any(|a| h.may_hold(a)));
        assert!(!EcmpBlocks::<u32>::default().may_hold(0));
    }

    #[test]
    fn a_huge_set_stays_bounded_and_still_names_its_routes() {
        let routes: Vec<(u32, u8)> = (0..2_000_000u32).map(|i| (i.wrapping_mul(7919) << 8, 24)).collect();
        let h = EcmpBlocks::<u32>::new(routes.iter().copied());
        assert_eq!(h.bits.as_ref().map(|b| b.len() * 64), Some(MAX_BITS));
        assert!(routes.iter().all(|&(a, _)| h.may_hold(a | 0x7f)));
    }

    /// IPv6: a thousand service addresses of a /108 (a Kubernetes IPv6
    /// service range) and a /112 are named, few other addresses are, and
    /// a /104 is left out.
    #[test]
    fn ipv6_names_its_service_addresses_and_few_others() {
        const RANGE: u128 = 0xfd00_0010_0096 << 80;
        let services: Vec<u128> = (0..1000).map(|i| RANGE + i * 7).collect();
        let routed = services.iter().map(|&a| (a, 128)).chain([(RANGE | 1 << 40, 112)]);
        let h = EcmpBlocks::<u128>::new(routed.clone());
        assert!(h.is_complete());
        assert!(services.iter().all(|&a| h.may_hold(a)));
        assert!((0..0x1_0000u128).step_by(97).all(|k| h.may_hold(RANGE | 1 << 40 | k)), "the /112's every block");
        let named_blocks = |a: u128| services.iter().any(|&s| s >> 8 == a >> 8) || (a >> 16) == (RANGE | 1 << 40) >> 16;
        let others = (0..200_000u128).map(|i| RANGE + (i << 8) + 5).chain(
            (0..100_000u128)
                .map(|i| (0xfd00_0001u128 << 96) | i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        );
        let (mut named, mut n) = (0, 0);
        for a in others.filter(|&a| !named_blocks(a)) {
            named += u32::from(h.may_hold(a));
            n += 1;
        }
        let share = f64::from(named) / f64::from(n);
        assert!(share < 1.5 / BITS_PER_BLOCK as f64, "{named} of {n} other addresses named");
        let wide = EcmpBlocks::<u128>::new(routed.chain([(RANGE, 104)]));
        assert!(!wide.is_complete() && wide.may_hold(services[0]), "the /104 left out, the rest kept");
    }
}
