//! Resilient ECMP: a composite next hop maps a flow hash onto a fixed
//! table of buckets, each naming one member.
//!
//! Changing the member list rewrites only the buckets that must change:
//! a removed member's buckets go to the least-loaded survivors, and a new
//! member takes buckets from the most-loaded ones. So removing a member
//! moves only its own flows, and adding one moves about 1/n of them.
//! Tungsten Fabric gets the first property by leaving holes; buckets give
//! both, with no re-hash on the packet path.

use super::RouteTarget;

/// Buckets per composite. With at most `MAX_MEMBERS` members, each gets at
/// least four, so shares stay within a few percent of even.
pub const BUCKETS: usize = 256;
/// The most members a composite can have.
pub const MAX_MEMBERS: usize = 64;

/// An ECMP group's members and bucket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcmpGroup {
    members: Vec<RouteTarget>,
    buckets: Box<[u8; BUCKETS]>,
}

impl EcmpGroup {
    /// A group with buckets dealt round-robin. `members` is non-empty and at
    /// most `MAX_MEMBERS` long (the writer checks).
    pub fn new(members: Vec<RouteTarget>) -> Self {
        let n = members.len().max(1);
        let mut buckets = Box::new([0u8; BUCKETS]);
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = (i % n) as u8;
        }
        EcmpGroup { members, buckets }
    }

    /// The group that `self` becomes with `members`, moving as few buckets as possible.
    pub fn rebalance(&self, members: Vec<RouteTarget>) -> Self {
        let n = members.len();
        if n == 0 {
            return EcmpGroup::new(members);
        }
        // Old member index -> new member index, for members that stay.
        let keep: Vec<Option<u8>> =
            self.members.iter().map(|m| members.iter().position(|x| x == m).map(|p| p as u8)).collect();
        let mut buckets = Box::new([u8::MAX; BUCKETS]);
        let mut load = vec![0usize; n];
        for (b, &old) in buckets.iter_mut().zip(self.buckets.iter()) {
            if let Some(Some(new)) = keep.get(usize::from(old)) {
                *b = *new;
                load[usize::from(*new)] += 1;
            }
        }
        let fair_max = BUCKETS.div_ceil(n);
        let fair_min = BUCKETS / n;
        // Buckets over a member's fair share, and orphaned ones, are handed
        // to the members furthest below theirs.
        for b in buckets.iter_mut() {
            let cur = usize::from(*b);
            let orphan = *b == u8::MAX;
            if !orphan && load[cur] <= fair_max {
                continue;
            }
            let Some((least, &least_load)) = load.iter().enumerate().min_by_key(|(_, l)| **l) else { break };
            if orphan || (least_load < fair_min && load[cur] > fair_max) {
                if !orphan {
                    load[cur] -= 1;
                }
                *b = least as u8;
                load[least] += 1;
            }
        }
        // A second pass evens out members still below their share.
        while let (Some((least, &ll)), Some((most, &ml))) =
            (load.iter().enumerate().min_by_key(|(_, l)| **l), load.iter().enumerate().max_by_key(|(_, l)| **l))
        {
            if ll >= fair_min || ml <= fair_min {
                break;
            }
            let Some(b) = buckets.iter().position(|&x| usize::from(x) == most) else { break };
            buckets[b] = least as u8;
            load[most] -= 1;
            load[least] += 1;
        }
        EcmpGroup { members, buckets }
    }

    /// The member a flow hash selects.
    #[inline]
    pub fn select(&self, hash: u32) -> Option<&RouteTarget> {
        let b = self.buckets[(hash as usize) & (BUCKETS - 1)];
        self.members.get(usize::from(b))
    }

    /// True while `pinned`, the member a flow with hash `hash` was pinned
    /// to, is still a member. The member the hash selects is asked first:
    /// it is nearly always the pinned one (the flow was pinned by it), and
    /// a scan of the members, which stops at a member that is random from
    /// packet to packet, is a branch the CPU mispredicts about every other
    /// packet. The scan remains for flows whose bucket moved to another
    /// member while theirs stayed.
    #[inline]
    pub fn keeps(&self, pinned: &RouteTarget, hash: u32) -> bool {
        self.select(hash) == Some(pinned) || self.members.contains(pinned)
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[RouteTarget] {
        &self.members
    }

    /// How many buckets each member holds.
    pub fn shares(&self) -> Vec<usize> {
        let mut s = vec![0; self.members.len()];
        for &b in self.buckets.iter() {
            if let Some(x) = s.get_mut(usize::from(b)) {
                *x += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(nh: u32) -> RouteTarget {
        RouteTarget { nh, label: 100 + nh }
    }

    fn picks(g: &EcmpGroup) -> Vec<RouteTarget> {
        (0..BUCKETS as u32).map(|h| *g.select(h).unwrap()).collect()
    }

    /// A pinned member is kept while it is a member, whichever member its
    /// hash's bucket names now, and not once it is gone.
    #[test]
    fn a_pinned_member_is_kept_while_it_is_one() {
        let g = EcmpGroup::new(vec![m(1), m(2), m(3)]);
        for h in 0..BUCKETS as u32 {
            for member in [m(1), m(2), m(3)] {
                assert!(g.keeps(&member, h), "{member:?} at bucket {h}");
            }
            assert!(!g.keeps(&m(4), h));
        }
        let without_2 = g.rebalance(vec![m(1), m(3)]);
        assert!((0..BUCKETS as u32).all(|h| !without_2.keeps(&m(2), h) && without_2.keeps(&m(3), h)));
    }

    #[test]
    fn removing_a_member_moves_only_its_buckets() {
        let g = EcmpGroup::new(vec![m(1), m(2), m(3)]);
        let before = picks(&g);
        let h = g.rebalance(vec![m(1), m(3)]);
        let after = picks(&h);
        for (b, a) in before.iter().zip(&after) {
            if b.nh != 2 {
                assert_eq!(b, a, "a surviving member's bucket moved");
            } else {
                assert_ne!(a.nh, 2);
            }
        }
        let s = h.shares();
        assert!(s.iter().all(|&x| x == 128), "{s:?}");
    }

    #[test]
    fn adding_a_member_moves_about_one_nth() {
        let mut g = EcmpGroup::new(vec![m(1), m(2), m(3)]);
        for n in 4..=10u32 {
            let before = picks(&g);
            let mut members = g.members().to_vec();
            members.push(m(n));
            let h = g.rebalance(members);
            let after = picks(&h);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            // Every moved bucket went to the new member, and about 1/n moved.
            assert!(before.iter().zip(&after).all(|(b, a)| b == a || a.nh == n));
            let ideal = BUCKETS / n as usize;
            assert!(moved <= ideal + 1, "n={n} moved {moved}, ideal {ideal}");
            let s = h.shares();
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{s:?}");
            g = h;
        }
    }

    #[test]
    fn reorder_and_replace_keep_survivors() {
        let g = EcmpGroup::new(vec![m(1), m(2), m(3), m(4)]);
        let h = g.rebalance(vec![m(4), m(3), m(5), m(1)]);
        for (b, a) in picks(&g).iter().zip(&picks(&h)) {
            if b.nh != 2 {
                assert_eq!(b, a);
            } else {
                assert_eq!(a.nh, 5, "the replacement takes the removed member's buckets");
            }
        }
    }
}
