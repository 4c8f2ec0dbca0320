//! The writer's list of one family's prefixes in a VRF, which the trie is
//! built from, with the lengths it holds.
//!
//! A change to a prefix needs the route that covers it (where its
//! addresses go without it): a remove hands it to the trie, and a policy
//! that names networks needs its network. Probing the hash at every
//! shorter length cost an IPv6 /128 128 probes: deleting 100,000 pod
//! addresses spent 43 % of its time there. A VRF's prefixes come in few
//! lengths (pods' /128s or /32s, a subnet, a default), so the search
//! probes only the lengths the list holds.

use std::ops::Deref;

use ahash::AHashMap;

use super::{FibKey, RouteEntry};

pub(super) struct Prefixes<K> {
    map: AHashMap<(K, u8), RouteEntry>,
    /// Prefixes of each length, 0 to `K::BITS`; empty until the first insert.
    per_length: Vec<u32>,
    /// Bit `l` set: some prefix is `l` long (`l` < 128; a covering prefix
    /// is shorter than another, so a 128-bit one is never looked for).
    lengths: u128,
}

impl<K> Default for Prefixes<K> {
    fn default() -> Self {
        Prefixes { map: AHashMap::new(), per_length: Vec::new(), lengths: 0 }
    }
}

/// Reading is the map's; every change goes through `insert` and `remove`,
/// which keep the lengths.
impl<K> Deref for Prefixes<K> {
    type Target = AHashMap<(K, u8), RouteEntry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K: FibKey> Prefixes<K> {
    pub(super) fn insert(&mut self, key: (K, u8), entry: RouteEntry) -> Option<RouteEntry> {
        let old = self.map.insert(key, entry);
        if old.is_none() {
            self.count(key.1, true);
        }
        old
    }

    pub(super) fn remove(&mut self, key: &(K, u8)) -> Option<RouteEntry> {
        let old = self.map.remove(key);
        if old.is_some() {
            self.count(key.1, false);
        }
        old
    }

    /// The longest prefix shorter than `len` that covers `key`, with its
    /// length: where `key/len`'s addresses go without that route.
    pub(super) fn covering(&self, key: K, len: u8) -> Option<(u8, RouteEntry)> {
        let mut shorter = self.lengths & low_bits(len);
        while shorter != 0 {
            let l = 127 - shorter.leading_zeros() as u8;
            if let Some(e) = self.map.get(&(key.mask(l), l)) {
                return Some((l, *e));
            }
            shorter &= !(1u128 << l);
        }
        None
    }

    /// Bytes held: the map's buckets (and their control bytes) and the counts.
    pub(super) fn memory_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<((K, u8), RouteEntry)>() + 1)
            + self.per_length.capacity() * std::mem::size_of::<u32>()
    }

    fn count(&mut self, len: u8, up: bool) {
        if self.per_length.is_empty() {
            self.per_length = vec![0; usize::from(K::BITS) + 1];
        }
        let Some(n) = self.per_length.get_mut(usize::from(len)) else { return };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        if len < 128 {
            let bit = 1u128 << len;
            self.lengths = if *n > 0 { self.lengths | bit } else { self.lengths & !bit };
        }
    }
}

/// Bits `0..len` set (all 128 for `len` 128 or more).
fn low_bits(len: u8) -> u128 {
    if len >= 128 {
        u128::MAX
    } else {
        (1u128 << len) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::RouteTarget;

    fn entry(n: u32) -> RouteEntry {
        RouteEntry { target: RouteTarget { nh: n, label: RouteTarget::NO_LABEL }, network: n }
    }

    /// The search by held lengths answers as probing every shorter length
    /// does, through inserts, removes of held and absent prefixes, and
    /// re-inserts, in both families; a length whose last prefix went is
    /// no longer probed, and one that comes back is again.
    fn matches_probing_every_length<K: FibKey>(key_of: impl Fn(u64) -> K) {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut p = Prefixes::<K>::default();
        let lens: Vec<u8> = (0..=K::BITS).collect();
        for round in 0..20_000u32 {
            let r = next();
            let len = lens[(r % lens.len() as u64) as usize];
            // Few distinct addresses, so that prefixes nest and cover.
            let key = (key_of(next() % 16), len);
            let key = (key.0.mask(len), len);
            if r & 0x300 == 0 {
                let held = p.map.contains_key(&key);
                assert_eq!(p.remove(&key).is_some(), held);
            } else {
                p.insert(key, entry(round));
            }
            if round % 10 == 0 {
                let probe = key_of(next() % 16);
                let want_len = lens[(next() % lens.len() as u64) as usize];
                let brute = (0..want_len).rev().find_map(|l| p.map.get(&(probe.mask(l), l)).map(|e| (l, *e)));
                assert_eq!(p.covering(probe, want_len), brute, "{probe:?}/{want_len}");
            }
        }
        let held: usize = p.per_length.iter().map(|&n| n as usize).sum();
        assert_eq!(held, p.map.len(), "the counts are the map's");
        for l in 0..=K::BITS.min(127) {
            let any = p.map.keys().any(|k| k.1 == l);
            assert_eq!(p.lengths & (1 << l) != 0, any, "length {l}");
        }
    }

    #[test]
    fn covering_matches_probing_every_length_ipv4() {
        matches_probing_every_length(|x| (x as u32).rotate_right(4).wrapping_mul(0x0101_0101));
    }

    #[test]
    fn covering_matches_probing_every_length_ipv6() {
        matches_probing_every_length(|x| u128::from(x).rotate_right(8).wrapping_mul(0x0101_0101_0101_0101_0101));
    }

    #[test]
    fn a_length_emptied_is_not_probed_and_comes_back() {
        let mut p = Prefixes::<u32>::default();
        p.insert((0x0a00_0000, 8), entry(1));
        p.insert((0x0a01_0000, 16), entry(2));
        assert_eq!(p.covering(0x0a01_0203, 32), Some((16, entry(2))));
        assert_eq!(p.remove(&(0x0a01_0000, 16)), Some(entry(2)));
        assert_eq!(p.lengths, 1 << 8);
        assert_eq!(p.covering(0x0a01_0203, 32), Some((8, entry(1))));
        assert_eq!(p.covering(0x0a01_0203, 8), None, "a prefix does not cover itself");
        assert_eq!(p.remove(&(0x0a01_0000, 16)), None);
        assert_eq!(p.lengths, 1 << 8, "removing what is not held changes no count");
        p.insert((0x0a01_0000, 16), entry(3));
        p.insert((0x0a01_0000, 16), entry(4));
        assert_eq!(p.per_length[16], 1, "a replaced prefix is counted once");
        assert_eq!(p.covering(0x0a01_0203, 24), Some((16, entry(4))));
    }
}
