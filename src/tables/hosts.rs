//! A table's full-length prefixes (IPv6 /128s), found by hash beside the
//! trie.
//!
//! A pod's IPv6 address is a /128, and the trie walks sixteen 8-bit levels
//! to reach one: about half of an IPv6 packet's instructions. A /128 is
//! the longest prefix there is, so a key found among the /128s needs no
//! walk: its leaf is the longest match. Every lookup of an IPv6 table
//! therefore asks this table first, one cache line, and walks the trie only
//! on a miss.
//!
//! A bucket holds `WAYS` keys; a host whose bucket is full goes to a
//! spill list that lookups never read and that is kept only so that a
//! resize or a remove can place it again. A table holds one bucket or more
//! per host, so few hosts spill (about 2 % at the fullest, well under 1 %
//! on average). The trie holds only the hosts that spilled, since a lookup
//! reads it only when this table does not answer: every change here says
//! which hosts it left on the spill list, for the trie to take them. A
//! host in a bucket costs the trie nothing, where its sixteen levels cost
//! about 7 KiB of nodes for a pod with a random interface identifier.
//!
//! Buckets live in pages behind `Arc`s, like the trie's nodes: a snapshot's
//! copy shares them, and a change copies only its own page.

use super::lpm::{copy_slots, FibKey, EMPTY};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Keys a bucket holds: three 128-bit keys and their leaves fill one
/// 64-byte line.
const WAYS: usize = 3;
/// Buckets a page holds, copied together on a change.
const PAGE: usize = 16;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket<K> {
    keys: [K; WAYS],
    leaves: [u32; WAYS],
}

type Page<K> = [Bucket<K>; PAGE];

/// True if `key` may take a free way of `bucket`: one is free, and no
/// other key there has its low half, nor has an empty way (whose key is
/// zero), so that a lookup's low half picks one way only (`leaf`). A key
/// whose low half is zero, a subnet's first address, always spills.
fn fits<K: FibKey>(bucket: &Bucket<K>, key: K) -> bool {
    let low = key.fold_low();
    low != 0
        && bucket.leaves.contains(&EMPTY)
        && (0..WAYS).all(|w| bucket.leaves[w] == EMPTY || bucket.keys[w].fold_low() != low)
}

/// What a change to `HostRoutes` did to its spill list, for the trie to
/// follow (`Fib`): the hosts taken off it into a bucket, and the hosts put
/// on it, with their leaves (a host already there, given a new leaf,
/// included). Followed in that order: one change may take a host off (to
/// a freed way) and put it back (by the resize that follows).
pub(super) struct SpillChanges<K> {
    pub(super) placed: Vec<K>,
    pub(super) spilled: Vec<(K, u32)>,
}

impl<K> Default for SpillChanges<K> {
    fn default() -> Self {
        SpillChanges { placed: Vec::new(), spilled: Vec::new() }
    }
}

/// The full-length prefixes of one table, each with its trie leaf value.
#[derive(Clone)]
pub(super) struct HostRoutes<K: FibKey> {
    /// Empty while the table holds no host; else a power of two of buckets.
    pages: Vec<Arc<Page<K>>>,
    /// 64 less the log2 of the bucket count: a hash's top bits pick the bucket.
    shift: u32,
    /// Hosts held, spilled ones included.
    len: usize,
    /// Hosts whose bucket was full, by bucket and key: never read by a
    /// lookup. Ordered by bucket so that a freed way finds the hosts that
    /// spilled from its bucket without a scan: a list scanned for each
    /// change took a third of deleting 100,000 pods' /128s.
    spilled: Arc<BTreeMap<(usize, K), u32>>,
    /// The high halves' bits that every host shares (`cover_mask`) and
    /// their values (`cover`): a key that differs in one of them is no
    /// host, so a lookup off the hosts' subnets, to a prefix out of the
    /// cluster, pays three instructions and no probe. A remove leaves
    /// them as they were, covering more than the hosts; a resize makes
    /// them exact again.
    cover: u64,
    cover_mask: u64,
}

impl<K: FibKey> Default for HostRoutes<K> {
    fn default() -> Self {
        HostRoutes { pages: Vec::new(), shift: 63, len: 0, spilled: Arc::default(), cover: 0, cover_mask: 0 }
    }
}

impl<K: FibKey> HostRoutes<K> {
    #[inline(always)]
    fn bucket_of(&self, key: K) -> usize {
        // Fibonacci hashing: the multiply spreads keys that differ only in
        // their low bits, as a subnet's pods do, over the top bits.
        (key.fold().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// `key`'s leaf, or `EMPTY` if it is not held here (a trie walk may
    /// still find it).
    #[inline(always)]
    pub(super) fn leaf(&self, key: K) -> u32 {
        if (key.fold_high() ^ self.cover) & self.cover_mask != 0 {
            return EMPTY;
        }
        let b = self.bucket_of(key);
        let Some(page) = self.pages.get(b / PAGE) else { return EMPTY };
        let bucket = &page[b % PAGE];
        // The low halves pick the way and one whole key confirms it: a
        // miss, the common case off a pod's subnet, reads a half of each.
        // Two hosts of a bucket with the same low half leave the one that
        // is not picked to the trie.
        let low = key.fold_low();
        let mut way = WAYS;
        for w in 0..WAYS {
            if bucket.keys[w].fold_low() == low {
                way = w;
            }
        }
        match (bucket.keys.get(way), bucket.leaves.get(way)) {
            (Some(&k), Some(&leaf)) if k == key => leaf,
            _ => EMPTY,
        }
    }

    /// Makes this table `src` again, taking a reference only to the pages
    /// that differ from its own: the writer's spare tables
    /// (`Fib::copy_from`). A clone takes one for every page, a locked
    /// increment each: 8,192 pages for 100,000 pods, most of a one-route
    /// batch's cost in such a VRF.
    pub(super) fn copy_from(&mut self, src: &Self) {
        // Every field named: one added later must be copied here too.
        let HostRoutes { pages, shift, len, spilled, cover, cover_mask } = src;
        copy_slots(&mut self.pages, pages, None, Arc::ptr_eq);
        if !Arc::ptr_eq(&self.spilled, spilled) {
            self.spilled = Arc::clone(spilled);
        }
        (self.shift, self.len, self.cover, self.cover_mask) = (*shift, *len, *cover, *cover_mask);
    }

    /// True if this table is `other` as `copy_from` would make it.
    #[cfg(debug_assertions)]
    pub(super) fn is_copy_of(&self, other: &Self) -> bool {
        let HostRoutes { pages, shift, len, spilled, cover, cover_mask } = other;
        self.pages.len() == pages.len()
            && self.pages.iter().zip(pages).all(|(a, b)| Arc::ptr_eq(a, b))
            && *self.spilled == **spilled
            && (self.shift, self.len, self.cover, self.cover_mask) == (*shift, *len, *cover, *cover_mask)
    }

    /// Pages of buckets, a kilobyte each.
    pub(super) fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Hosts held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Hosts held but found only by the trie.
    pub(super) fn spilled(&self) -> usize {
        self.spilled.len()
    }

    /// Bytes held in buckets and the spill list's entries (the tree's
    /// nodes, at least half full, can take up to about twice those): what
    /// a copy shares (`copy_from`).
    pub(super) fn shared_bytes(&self) -> usize {
        self.pages.len() * std::mem::size_of::<Page<K>>()
            + self.spilled.len() * std::mem::size_of::<((usize, K), u32)>()
    }

    /// Bytes of the table's own list of pages, which a copy does not share.
    pub(super) fn list_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Arc<Page<K>>>()
    }

    fn buckets(&self) -> usize {
        self.pages.len() * PAGE
    }

    /// Sets `key`'s leaf, adding it if new. `leaf` is not `EMPTY`. Every
    /// host that this leaves on the spill list, `key` or another that a
    /// resize moved, is in `changes.spilled` with its leaf; every host a
    /// resize took off it, in `changes.placed`.
    pub(super) fn insert(&mut self, key: K, leaf: u32, changes: &mut SpillChanges<K>) {
        debug_assert_ne!(leaf, EMPTY);
        if self.replace(key, leaf, changes) {
            return;
        }
        self.len += 1;
        self.widen_cover(key, self.len == 1);
        if self.len > self.buckets() {
            self.resize((self.buckets() * 2).max(PAGE), changes);
        }
        self.place(key, leaf, changes);
    }

    /// The bucket and way that hold `key`, if its bucket does.
    fn way_of(&self, key: K) -> Option<(usize, usize)> {
        let b = self.bucket_of(key);
        let bucket = &self.pages.get(b / PAGE)?[b % PAGE];
        (0..WAYS).find(|&w| bucket.keys[w] == key && bucket.leaves[w] != EMPTY).map(|w| (b, w))
    }

    /// Drops `key`, if held, and says what that did to the spill list, as
    /// `insert` does: a host may take the freed way, and a resize may move
    /// others.
    pub(super) fn remove(&mut self, key: K, changes: &mut SpillChanges<K>) {
        let spill_key = (self.bucket_of(key), key);
        if self.spilled.contains_key(&spill_key) {
            Arc::make_mut(&mut self.spilled).remove(&spill_key);
        } else {
            let Some((b, w)) = self.way_of(key) else { return };
            let bucket = &mut Arc::make_mut(&mut self.pages[b / PAGE])[b % PAGE];
            bucket.keys[w] = K::zero();
            bucket.leaves[w] = EMPTY;
            // A host that spilled from this bucket takes the freed way.
            let bucket = &self.pages[b / PAGE][b % PAGE];
            let from_bucket = self.spilled.range((b, K::zero())..).take_while(|((sb, _), _)| *sb == b);
            if let Some((k, l)) = from_bucket.map(|(&(_, k), &l)| (k, l)).find(|&(k, _)| fits(bucket, k)) {
                Arc::make_mut(&mut self.spilled).remove(&(b, k));
                let bucket = &mut Arc::make_mut(&mut self.pages[b / PAGE])[b % PAGE];
                bucket.keys[w] = k;
                bucket.leaves[w] = l;
                changes.placed.push(k);
            }
        }
        self.len -= 1;
        if self.len == 0 {
            *self = HostRoutes::default();
        } else if self.buckets() > PAGE && self.len < self.buckets() / 4 {
            self.resize(self.buckets() / 2, changes);
        }
    }

    /// Sets the leaf of `key` if it is held; true if it was. A spilled
    /// host is in `changes.spilled` with its new leaf.
    fn replace(&mut self, key: K, leaf: u32, changes: &mut SpillChanges<K>) -> bool {
        let spill_key = (self.bucket_of(key), key);
        if self.spilled.contains_key(&spill_key) {
            Arc::make_mut(&mut self.spilled).insert(spill_key, leaf);
            changes.spilled.push((key, leaf));
            return true;
        }
        let Some((b, w)) = self.way_of(key) else { return false };
        Arc::make_mut(&mut self.pages[b / PAGE])[b % PAGE].leaves[w] = leaf;
        true
    }

    /// Clears from the cover every bit from the highest where `key`
    /// differs from it down; `key`'s alone if it is the `first` host.
    fn widen_cover(&mut self, key: K, first: bool) {
        if first {
            (self.cover, self.cover_mask) = (key.fold_high(), u64::MAX);
            return;
        }
        let differ = (key.fold_high() ^ self.cover) & self.cover_mask;
        if differ != 0 {
            self.cover_mask &= u64::MAX.checked_shl(64 - differ.leading_zeros()).unwrap_or(0);
        }
    }

    /// Puts a host that is not held into its bucket, or the spill list
    /// and `changes.spilled`.
    fn place(&mut self, key: K, leaf: u32, changes: &mut SpillChanges<K>) {
        let b = self.bucket_of(key);
        if !fits(&self.pages[b / PAGE][b % PAGE], key) {
            Arc::make_mut(&mut self.spilled).insert((b, key), leaf);
            changes.spilled.push((key, leaf));
            return;
        }
        let bucket = &mut Arc::make_mut(&mut self.pages[b / PAGE])[b % PAGE];
        let w = bucket.leaves.iter().position(|&l| l == EMPTY).expect("fits: a way is free");
        bucket.keys[w] = key;
        bucket.leaves[w] = leaf;
    }

    /// Rehashes every host into `buckets` buckets (a power of two, a page or more).
    fn resize(&mut self, buckets: usize, changes: &mut SpillChanges<K>) {
        let hosts = self.held();
        let was_spilled = std::mem::take(&mut self.spilled);
        let empty = Bucket { keys: [K::zero(); WAYS], leaves: [EMPTY; WAYS] };
        self.pages = (0..buckets / PAGE).map(|_| Arc::new([empty; PAGE])).collect();
        self.shift = 64 - buckets.trailing_zeros();
        // Hosts spilled before are placed first (`held`), so most find room.
        for (i, &(k, l)) in hosts.iter().enumerate() {
            self.place(k, l, changes);
            self.widen_cover(k, i == 0);
        }
        let now_spilled = |k: &K| self.spilled.contains_key(&(self.bucket_of(*k), *k));
        changes.placed.extend(was_spilled.keys().map(|&(_, k)| k).filter(|k| !now_spilled(k)));
    }

    /// Every host held, with its leaf: the spilled ones, then the buckets'.
    fn held(&self) -> Vec<(K, u32)> {
        let mut v: Vec<(K, u32)> = self.spilled.iter().map(|(&(_, k), &l)| (k, l)).collect();
        for bucket in self.pages.iter().flat_map(|p| p.iter()) {
            v.extend((0..WAYS).filter(|&w| bucket.leaves[w] != EMPTY).map(|w| (bucket.keys[w], bucket.leaves[w])));
        }
        v
    }

    /// `held`, sorted, for tests.
    #[cfg(test)]
    fn all(&self) -> Vec<(K, u32)> {
        let mut v = self.held();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::scenario::Rng;
    use std::collections::BTreeMap;

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket<u128>>(), 64);
    }

    /// Against a map, under random adds, changes and removes in a narrow
    /// key space (so that buckets fill and hosts spill): every held host
    /// is either found in its bucket or on the spill list, never stale;
    /// a trie that follows what each change says of the spill list holds
    /// exactly the spilled hosts, with their current leaves (what `Fib`
    /// relies on); and the table grows and shrinks with its hosts.
    #[test]
    fn matches_a_map_under_churn_and_spills_only_from_full_buckets() {
        let mut rng = Rng::new(0x4057);
        let mut hosts = HostRoutes::<u128>::default();
        let mut model = BTreeMap::new();
        let (mut spilled_seen, mut placed_seen) = (0, 0);
        let mut trie = BTreeMap::new();
        // Random low halves: a subnet's consecutive addresses never share a
        // bucket while the table has a bucket a host, so they would not spill.
        let mut pool: Vec<u128> = (0..3000).map(|_| 0xfd00_0001_u128 << 96 | u128::from(rng.next_u64())).collect();
        // Keys that share a low half with another, or whose low half is zero.
        for i in 0..30 {
            pool[i] = pool[i + 100] ^ 1 << 70;
            pool[i + 30] = pool[i + 200] & !u128::from(u64::MAX);
        }
        for step in 0..40_000u32 {
            // Grow for the first half, then shrink.
            let add = rng.next_u64() % 100 < if step < 20_000 { 70 } else { 30 };
            let key = pool[(rng.next_u64() % 3000) as usize];
            // What the trie would hold: what each change said it spilled,
            // less what it placed, kept current as `Fib` keeps it.
            let mut changes = SpillChanges::default();
            if add {
                let leaf = 1 + (rng.next_u64() % 1000) as u32;
                hosts.insert(key, leaf, &mut changes);
                model.insert(key, leaf);
                if let Some(l) = trie.get_mut(&key) {
                    *l = leaf;
                }
            } else {
                hosts.remove(key, &mut changes);
                model.remove(&key);
                trie.remove(&key);
            }
            placed_seen += changes.placed.len();
            for k in changes.placed {
                assert!(trie.remove(&k).is_some(), "placed a host that had not spilled: {k:x}");
            }
            trie.extend(changes.spilled);
            assert_eq!(hosts.len(), model.len());
            spilled_seen = spilled_seen.max(hosts.spilled());
            if step % 997 == 0 || step == 39_999 {
                assert_eq!(hosts.all(), model.iter().map(|(&k, &l)| (k, l)).collect::<Vec<_>>());
                for (&k, &l) in &model {
                    let found = hosts.leaf(k);
                    let spilled = hosts.spilled.get(&(hosts.bucket_of(k), k)) == Some(&l);
                    assert!((found == l && !spilled) || (found == EMPTY && spilled), "{k:x}");
                }
                assert!(
                    hosts.len() <= hosts.buckets() && (hosts.buckets() <= PAGE || hosts.len() >= hosts.buckets() / 4)
                );
                assert_eq!(trie.len(), hosts.spilled(), "the trie holds hosts that no longer spill");
                for (&(b, k), &l) in hosts.spilled.iter() {
                    assert_eq!(trie.get(&k), Some(&l), "a spilled host was not handed to the trie: {k:x}");
                    assert_eq!(b, hosts.bucket_of(k), "a spilled host kept under another bucket");
                    assert!(!fits(&hosts.pages[b / PAGE][b % PAGE], k), "a host spilled from a bucket with room");
                }
            }
            for probe in [key, key ^ 1 << 100] {
                if !model.contains_key(&probe) {
                    assert_eq!(hosts.leaf(probe), EMPTY, "a host not held is not found");
                }
            }
        }
        assert!(spilled_seen > 0, "the test never filled a bucket: it checks nothing of the spill list");
        assert!(placed_seen > 0, "no spilled host ever found room: it checks nothing of the placing");
        for k in model.keys().copied().collect::<Vec<_>>() {
            hosts.remove(k, &mut SpillChanges::default());
        }
        assert_eq!((hosts.len(), hosts.buckets(), hosts.spilled()), (0, 0, 0));
    }

    /// A subnet's consecutive addresses, as pods get them, go one to a
    /// bucket: none spills, so the trie is never walked for them.
    #[test]
    fn consecutive_addresses_never_spill() {
        let mut hosts = HostRoutes::<u128>::default();
        let subnet = 0xfd00_0000_0000_0001_u128 << 64;
        for i in 1..=5000u128 {
            hosts.insert(subnet | i, 1, &mut SpillChanges::default());
        }
        assert_eq!((hosts.len(), hosts.spilled()), (5000, 0));
        assert!((1..=5000u128).all(|i| hosts.leaf(subnet | i) == 1));
    }

    /// The cover lets through every key of the hosts' subnets, and turns
    /// away a key that differs from all of them in a bit they share.
    #[test]
    fn the_cover_turns_away_keys_off_the_hosts_subnets() {
        let mut hosts = HostRoutes::<u128>::default();
        let subnet = |s: u128| (0xfd00_0000_0000_0000_u128 | s) << 64;
        let covered = |h: &HostRoutes<u128>, k: u128| (k.fold_high() ^ h.cover) & h.cover_mask == 0;
        hosts.insert(subnet(1) | 5, 1, &mut SpillChanges::default());
        assert!(covered(&hosts, subnet(1) | 99) && !covered(&hosts, subnet(2) | 5));
        hosts.insert(subnet(2) | 6, 1, &mut SpillChanges::default());
        assert!(covered(&hosts, subnet(2) | 5) && covered(&hosts, subnet(3) | 5), "fd00::/62 is shared");
        assert!(!covered(&hosts, subnet(4) | 5) && !covered(&hosts, 0x2001_0db8_u128 << 96 | 5));
        assert_eq!(hosts.leaf(subnet(4) | 6), EMPTY);
        // A remove leaves the cover wide; it never shrinks below a host held.
        hosts.remove(subnet(2) | 6, &mut SpillChanges::default());
        assert!(covered(&hosts, subnet(1) | 5) && covered(&hosts, subnet(3) | 5));
        assert_eq!(hosts.leaf(subnet(1) | 5), 1);
    }

    /// A snapshot's copy keeps its hosts while the original changes.
    /// `copy_from` makes an older version of the table, or an unrelated
    /// one, the table it copies: the same hosts and leaves, spilled ones
    /// included, the same answers, and the same pages, shared; and a
    /// change to the copy leaves the table it copied alone.
    #[test]
    fn a_table_copied_into_is_the_other_table() {
        let mut rng = Rng::new(0xc0b1);
        // One key in ten with a low half of zero, which always spills.
        let key = |r: &mut Rng| match r.next_u64() % 5000 {
            x if x % 10 == 0 => 0xfd00_0001_u128 << 96 | u128::from(x) << 64,
            x => 0xfd00_0001_u128 << 96 | u128::from(x) << 40 | 7,
        };
        let churn = |h: &mut HostRoutes<u128>, m: &mut BTreeMap<u128, u32>, r: &mut Rng, n: usize| {
            for _ in 0..n {
                let (k, leaf) = (key(r), 1 + (r.next_u64() % 100) as u32);
                if r.next_u64() % 3 == 0 {
                    h.remove(k, &mut SpillChanges::default());
                    m.remove(&k);
                } else {
                    h.insert(k, leaf, &mut SpillChanges::default());
                    m.insert(k, leaf);
                }
            }
        };
        let (mut table, mut model) = (HostRoutes::<u128>::default(), BTreeMap::new());
        churn(&mut table, &mut model, &mut rng, 3000);
        let mut old = table.clone();
        // Another table, of hosts of one high half: its cover is another.
        let mut other = HostRoutes::<u128>::default();
        for i in 1..500u128 {
            other.insert(0xfe00_u128 << 112 | i, 1, &mut SpillChanges::default());
        }
        // Enough to resize the table, so that the copies' pages differ in number.
        churn(&mut table, &mut model, &mut rng, 3000);
        assert!(table.spilled() > 0, "the test's keys spill");
        for copy in [&mut old, &mut other] {
            copy.copy_from(&table);
            assert_eq!(copy.all(), model.iter().map(|(&k, &l)| (k, l)).collect::<Vec<_>>());
            assert!(
                copy.pages.len() == table.pages.len()
                    && copy.pages.iter().zip(&table.pages).all(|(a, b)| Arc::ptr_eq(a, b))
            );
            assert!(Arc::ptr_eq(&copy.spilled, &table.spilled));
            for _ in 0..5000 {
                let k = key(&mut rng);
                assert_eq!(copy.leaf(k), table.leaf(k), "{k:x}");
            }
            for (&k, &l) in &model {
                assert!(copy.leaf(k) == l || copy.spilled.contains_key(&(copy.bucket_of(k), k)), "{k:x}");
            }
        }
        let before = model.clone();
        churn(&mut old, &mut model, &mut rng, 1000);
        assert_eq!(table.all(), before.iter().map(|(&k, &l)| (k, l)).collect::<Vec<_>>());
        assert_eq!(old.all(), model.iter().map(|(&k, &l)| (k, l)).collect::<Vec<_>>());
    }

    #[test]
    fn a_copy_is_isolated_from_later_changes() {
        let mut a = HostRoutes::<u128>::default();
        for k in 1..=100u128 {
            a.insert(k, k as u32, &mut SpillChanges::default());
        }
        let b = a.clone();
        a.insert(5, 555, &mut SpillChanges::default());
        a.remove(7, &mut SpillChanges::default());
        for k in 101..=400u128 {
            a.insert(k, 1, &mut SpillChanges::default());
        }
        assert_eq!(b.all(), (1..=100u128).map(|k| (k, k as u32)).collect::<Vec<_>>());
        assert_eq!(a.len(), 399);
        assert!(a.leaf(5) == 555 || a.spilled.get(&(a.bucket_of(5), 5)) == Some(&555));
    }
}
