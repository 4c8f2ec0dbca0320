//! Which flow a fragment belongs to. Only a datagram's first fragment
//! carries its ports, so the data path records them here, under
//! the datagram's identity (VRF, addresses, protocol and identification),
//! and its later fragments look them up: every fragment then counts on the
//! datagram's flow and is judged by the same policy rule. Contrail's
//! vRouter keeps such a table for the same reason. An ICMP message's
//! first fragment is recorded whether or not it has a flow (only an echo
//! has one), so that a later fragment that comes first can wait for it
//! and learn which it is.
//!
//! Bounded (a fixed number of sets of `WAYS` entries, the oldest replaced
//! first) and lock-free for readers and writers. An entry lives
//! `FRAGMENT_MS` at most: a datagram's fragments follow each other within
//! milliseconds, and an entry that outlived its datagram could only lend
//! its ports to a later one that reuses the identification.

use super::key::{map_v4, unmap, FlowKey};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// How long a first fragment's ports are kept for its datagram's other
/// fragments, in milliseconds.
pub const FRAGMENT_MS: u64 = 5_000;

/// Entries per set: a datagram may take any entry of its set.
const WAYS: usize = 4;

/// A datagram's identity: what all its fragments share. Addresses are
/// kept as a `FlowKey` keeps them (IPv4 mapped into IPv6), so that the two
/// families never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentKey {
    /// The VRF the datagram is routed in.
    pub vrf: u32,
    /// IP protocol (IPv6: the one after the fragment header).
    pub proto: u8,
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// The identification field (16 bits in IPv4, 32 in IPv6).
    pub ident: u32,
}

impl FragmentKey {
    /// An IPv4 datagram.
    pub fn v4(vrf: u32, proto: u8, src: u32, dst: u32, ident: u16) -> FragmentKey {
        FragmentKey { vrf, proto, src: map_v4(src), dst: map_v4(dst), ident: u32::from(ident) }
    }

    /// An IPv6 datagram.
    pub fn v6(vrf: u32, proto: u8, src: u128, dst: u128, ident: u32) -> FragmentKey {
        FragmentKey { vrf, proto, src, dst, ident }
    }

    /// The source address, as `FlowKey` shows it.
    pub fn src_ip(&self) -> std::net::IpAddr {
        unmap(self.src)
    }

    /// The destination address.
    pub fn dst_ip(&self) -> std::net::IpAddr {
        unmap(self.dst)
    }

    fn hash(&self) -> u64 {
        let words = FlowKey::v6(self.vrf, self.proto, self.src, self.dst, 0, 0).words();
        super::key::hash_words(&words) ^ crate::pipeline::hash::fmix64(u64::from(self.ident))
    }
}

/// What a datagram's first fragment left for its later ones: its flow's
/// ports (for ICMP echo, the identifier twice), or `None` where it has no
/// flow (an ICMP message other than an echo), whose later fragments then
/// pass untracked, as it did.
pub type FirstPorts = Option<(u16, u16)>;

/// A recorded datagram, as `dump` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// The datagram.
    pub key: FragmentKey,
    /// The ports its first fragment carried, or `None` for no flow.
    pub ports: FirstPorts,
    /// Milliseconds it is kept for, from `now`.
    pub expires_in_ms: u64,
}

/// What the table did since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentCounts {
    /// First fragments recorded.
    pub recorded: u64,
    /// Later fragments that found their datagram's ports.
    pub matched: u64,
    /// Later fragments that did not: their first fragment came later, or
    /// never, or was replaced. TCP, UDP and ICMP ones wait for it
    /// (`pipeline::hold`); others pass untracked.
    pub unmatched: u64,
}

/// One recorded datagram, one cache line. `seq` is a seqlock: odd while
/// being written. `expires` is 0 for an entry never used.
#[derive(Default)]
#[repr(C, align(64))]
struct Entry {
    seq: AtomicU32,
    /// The VRF (24 bits) above the protocol.
    vrf_proto: AtomicU32,
    /// Source then destination, each as two halves, high first.
    addrs: [AtomicU64; 4],
    /// Identification (the high 32 bits) and the two ports (16 each, below).
    ident_ports: AtomicU64,
    expires: AtomicU64,
    /// 1 if the ports are a flow's, 0 if the datagram has none.
    flow: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// The table of first fragments' ports.
pub struct FragmentTable {
    entries: Box<[Entry]>,
    recorded: AtomicU64,
    matched: AtomicU64,
    unmatched: AtomicU64,
}

impl FragmentTable {
    /// A table of about `capacity` entries (rounded up to whole sets).
    pub fn new(capacity: usize) -> FragmentTable {
        FragmentTable {
            entries: (0..Self::entries_for(capacity)).map(|_| Entry::default()).collect(),
            recorded: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        }
    }

    fn entries_for(capacity: usize) -> usize {
        capacity.div_ceil(WAYS).max(1) * WAYS
    }

    /// Bytes a table of `capacity` entries takes.
    pub fn memory_for(capacity: usize) -> usize {
        Self::entries_for(capacity) * std::mem::size_of::<Entry>()
    }

    /// Entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the table takes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
    }

    fn set(&self, key: &FragmentKey) -> &[Entry] {
        let sets = (self.entries.len() / WAYS) as u64;
        let s = (((key.hash() >> 32) * sets) >> 32) as usize;
        &self.entries[s * WAYS..(s + 1) * WAYS]
    }

    /// The entry's datagram, ports and expiry, if it is not being written.
    fn read(e: &Entry) -> Option<(FragmentKey, FirstPorts, u64)> {
        let v = e.seq.load(Acquire);
        if v & 1 != 0 {
            return None;
        }
        let vp = e.vrf_proto.load(Relaxed);
        let a = e.addrs.each_ref().map(|w| u128::from(w.load(Relaxed)));
        let (ip, expires, flow) = (e.ident_ports.load(Relaxed), e.expires.load(Relaxed), e.flow.load(Relaxed));
        fence(Acquire);
        if e.seq.load(Relaxed) != v || expires == 0 {
            return None;
        }
        let key = FragmentKey {
            vrf: vp >> 8,
            proto: vp as u8,
            src: a[0] << 64 | a[1],
            dst: a[2] << 64 | a[3],
            ident: (ip >> 32) as u32,
        };
        Some((key, (flow != 0).then_some(((ip >> 16) as u16, ip as u16)), expires))
    }

    /// Records what datagram `key`'s first fragment says of its flow, at `now`.
    /// The datagram's own entry is refreshed; otherwise a free or expired
    /// entry of its set is taken, else the one closest to expiry. A writer
    /// that meets another on the entry it chose takes the next best one,
    /// even where that was the datagram's own (the other may be replacing
    /// it): giving up would leave the datagram's later fragments
    /// unmatched, to wait for ports already seen and be lost. It gives up
    /// only where other writers hold every entry of the set.
    pub fn record(&self, key: &FragmentKey, ports: FirstPorts, now: u64) {
        let set = self.set(key);
        let mut busy = 0u32;
        for _ in 0..WAYS {
            let Some(victim) = Self::choose(set, key, now, busy) else { return };
            if Self::write(&set[victim], key, ports, now) {
                self.recorded.fetch_add(1, Relaxed);
                return;
            }
            busy |= 1 << victim;
        }
    }

    /// The entry of `set` that `record` writes `key` into, leaving out the
    /// entries in `busy` (a mask): the datagram's own, else the first free
    /// or expired one, else the one closest to expiry.
    fn choose(set: &[Entry], key: &FragmentKey, now: u64, busy: u32) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, e) in set.iter().enumerate() {
            if busy & (1 << i) != 0 {
                continue;
            }
            let expires = match Self::read(e) {
                Some((k, _, _)) if k == *key => return Some(i),
                Some((_, _, x)) if x > now => x,
                _ => 0,
            };
            if best.is_none_or(|(_, soonest)| expires < soonest) {
                best = Some((i, expires));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Writes `key` and `ports` into `e`, unless another writer has it
    /// (false).
    fn write(e: &Entry, key: &FragmentKey, ports: FirstPorts, now: u64) -> bool {
        let v = e.seq.load(Relaxed);
        if v & 1 != 0 || e.seq.compare_exchange(v, v.wrapping_add(1), Acquire, Relaxed).is_err() {
            return false;
        }
        // Readers that see any of the writes below see the odd sequence.
        fence(Release);
        e.vrf_proto.store(key.vrf << 8 | u32::from(key.proto), Relaxed);
        for (w, v) in e.addrs.iter().zip([key.src >> 64, key.src, key.dst >> 64, key.dst]) {
            w.store(v as u64, Relaxed);
        }
        let (sport, dport) = ports.unwrap_or_default();
        e.ident_ports.store(u64::from(key.ident) << 32 | u64::from(sport) << 16 | u64::from(dport), Relaxed);
        e.flow.store(u32::from(ports.is_some()), Relaxed);
        e.expires.store(now.saturating_add(FRAGMENT_MS).max(1), Relaxed);
        e.seq.store(v.wrapping_add(2), Release);
        true
    }

    /// What datagram `key`'s first fragment left, if it was recorded and
    /// has not expired at `now`. Counts the answer.
    pub fn find(&self, key: &FragmentKey, now: u64) -> Option<FirstPorts> {
        let found = self.peek(key, now);
        let counter = if found.is_some() { &self.matched } else { &self.unmatched };
        counter.fetch_add(1, Relaxed);
        found
    }

    /// `find`, uncounted: whether a held fragment's first has come is not
    /// a fragment's lookup.
    pub fn peek(&self, key: &FragmentKey, now: u64) -> Option<FirstPorts> {
        self.set(key).iter().find_map(|e| match Self::read(e) {
            Some((k, ports, expires)) if k == *key && expires > now => Some(ports),
            _ => None,
        })
    }

    /// The datagrams recorded and not expired at `now`.
    pub fn dump(&self, now: u64) -> Vec<FragmentInfo> {
        self.entries
            .iter()
            .filter_map(Self::read)
            .filter(|&(_, _, expires)| expires > now)
            .map(|(key, ports, expires)| FragmentInfo { key, ports, expires_in_ms: expires - now })
            .collect()
    }

    /// What the table did since the start.
    pub fn counts(&self) -> FragmentCounts {
        FragmentCounts {
            recorded: self.recorded.load(Relaxed),
            matched: self.matched.load(Relaxed),
            unmatched: self.unmatched.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragmentKey {
        FragmentKey::v4(3, 17, 0x0a01_0002, 0x0a01_0003, ident)
    }

    #[test]
    fn a_first_fragments_ports_are_found_until_they_expire() {
        let t = FragmentTable::new(64);
        assert_eq!(t.find(&key(1), 0), None);
        t.record(&key(1), Some((40000, 53)), 1_000);
        assert_eq!(t.find(&key(1), 1_000), Some(Some((40000, 53))));
        assert_eq!(t.find(&key(1), 1_000 + FRAGMENT_MS - 1), Some(Some((40000, 53))));
        assert_eq!(t.find(&key(1), 1_000 + FRAGMENT_MS), None, "expired");
        // Each part of the identity counts.
        t.record(&key(1), Some((40000, 53)), 10_000);
        for other in [
            key(2),
            FragmentKey { vrf: 4, ..key(1) },
            FragmentKey { proto: 6, ..key(1) },
            FragmentKey { src: 1, ..key(1) },
            FragmentKey { dst: 1, ..key(1) },
            // The same numbers in IPv6 are another datagram.
            FragmentKey::v6(3, 17, 0x0a01_0002, 0x0a01_0003, 1),
        ] {
            assert_eq!(t.find(&other, 10_000), None, "{other:?}");
        }
        assert_eq!(t.counts(), FragmentCounts { recorded: 2, matched: 2, unmatched: 8 });
        // IPv6, with a 32-bit identification.
        let six = FragmentKey::v6(3, 17, 0xfd00 << 112 | 2, 0xfd00 << 112 | 3, 0x8000_0001);
        t.record(&six, Some((5353, 5353)), 10_000);
        assert_eq!(t.find(&six, 10_000), Some(Some((5353, 5353))));
        assert_eq!(t.find(&FragmentKey { ident: 1, ..six }, 10_000), None);
        assert_eq!(six.src_ip().to_string(), "fd00::2");
        assert_eq!(key(1).src_ip().to_string(), "10.1.0.2");
        // An ICMP message other than an echo: seen, with no flow.
        let error = FragmentKey::v4(3, 1, 0x0a01_0002, 0x0a01_0003, 9);
        t.record(&error, None, 10_000);
        assert_eq!(t.find(&error, 10_000), Some(None));
        let dump = t.dump(10_001);
        assert_eq!(dump.len(), 3);
        assert!(dump.contains(&FragmentInfo { key: error, ports: None, expires_in_ms: FRAGMENT_MS - 1 }));
        t.record(&error, Some((7, 7)), 10_000);
        assert_eq!(t.find(&error, 10_000), Some(Some((7, 7))), "the same entry, rewritten whole");
        assert!(dump.contains(&FragmentInfo { key: key(1), ports: Some((40000, 53)), expires_in_ms: FRAGMENT_MS - 1 }));
    }

    #[test]
    fn the_table_is_bounded_and_replaces_the_oldest() {
        let t = FragmentTable::new(8);
        assert_eq!(t.capacity(), 8);
        assert_eq!(t.memory_bytes(), 8 * 64);
        for i in 0..1_000u16 {
            t.record(&key(i), Some((i, i)), u64::from(i));
        }
        assert!(t.dump(1_000).len() <= 8);
        // The newest datagrams are the ones kept: the last 8 recorded land
        // in sets whose older entries they replace first.
        let kept: Vec<u32> = t.dump(1_000).iter().map(|f| f.key.ident).collect();
        assert!(kept.contains(&999), "{kept:?}");
        assert!(kept.iter().all(|&i| i >= 1_000 - 8 * 4), "only recent datagrams: {kept:?}");
        // A datagram recorded again keeps one entry.
        t.record(&key(999), Some((1, 2)), 1_001);
        assert_eq!(t.dump(1_001).iter().filter(|f| f.key.ident == 999).count(), 1);
        assert_eq!(t.find(&key(999), 1_001), Some(Some((1, 2))));
    }

    #[test]
    fn a_writer_that_meets_another_takes_another_entry() {
        // One set: every datagram may take any entry.
        let t = FragmentTable::new(WAYS);
        t.record(&key(1), Some((1, 1)), 0);
        for ident in 100..100 + WAYS as u16 - 1 {
            t.record(&key(ident), Some((0, 0)), 1_000);
        }
        // Key 2 would replace key 1, the closest to expiry; but another
        // writer is there.
        let victim = FragmentTable::choose(&t.entries, &key(2), 1_000, 0);
        assert_eq!(victim.map(|i| t.entries[i].ident_ports.load(Relaxed) >> 32), Some(1));
        let victim = victim.unwrap_or_default();
        t.entries[victim].seq.fetch_add(1, Relaxed);
        t.record(&key(2), Some((2, 2)), 1_000);
        assert_eq!(t.find(&key(2), 1_000), Some(Some((2, 2))), "recorded in the next best entry");
        // Where other writers hold every entry, it gives up.
        t.entries.iter().enumerate().filter(|&(i, _)| i != victim).for_each(|(_, e)| _ = e.seq.fetch_add(1, Relaxed));
        t.record(&key(3), Some((3, 3)), 1_000);
        assert_eq!(t.counts().recorded, WAYS as u64 + 1, "key 3 gave up");
    }

    #[test]
    fn readers_never_see_a_torn_entry_while_writers_race() {
        let t = std::sync::Arc::new(FragmentTable::new(4));
        let writers: Vec<_> = (0..2u16)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u16 {
                        // Ports always mirror the identification: a torn
                        // entry would break the rule.
                        let ident = i.wrapping_mul(2).wrapping_add(w);
                        t.record(&key(ident), Some((ident, !ident)), 1);
                        t.record(&FragmentKey::v6(3, 17, u128::MAX, 1, ident.into()), Some((ident, !ident)), 1);
                    }
                })
            })
            .collect();
        let consistent = |t: &FragmentTable| {
            for f in t.dump(1) {
                let ident = f.key.ident as u16;
                assert_eq!((f.key.ident >> 16, f.ports), (0, Some((ident, !ident))), "torn: {f:?}");
                let v4 = key(ident);
                let v6 = FragmentKey::v6(3, 17, u128::MAX, 1, ident.into());
                assert!(f.key == v4 || f.key == v6, "torn: {f:?}");
            }
        };
        while !writers.iter().all(|w| w.is_finished()) {
            consistent(&t);
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        consistent(&t);
        assert!(!t.dump(1).is_empty() && t.dump(1).len() <= 4);
    }
}
