//! What names a flow: the VRF, the protocol, both addresses and both ports.

use crate::pipeline::hash::fmix64;
use std::net::IpAddr;

/// A flow's key. IPv4 addresses are stored as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), so one key type serves both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The VRF the packet is routed in.
    pub vrf: u32,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port; for ICMP echo, the identifier.
    pub sport: u16,
    /// Destination port; for ICMP echo, the identifier too, so that the
    /// request's and the reply's keys mirror each other.
    pub dport: u16,
}

/// `::ffff:0:0/96`, where IPv4 addresses live in a key.
const V4_MAPPED: u128 = 0xffff_0000_0000;

impl FlowKey {
    /// An IPv4 key.
    #[inline]
    pub fn v4(vrf: u32, proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> FlowKey {
        FlowKey { vrf, proto, src: map_v4(src), dst: map_v4(dst), sport, dport }
    }

    /// An IPv6 key.
    #[inline]
    pub fn v6(vrf: u32, proto: u8, src: u128, dst: u128, sport: u16, dport: u16) -> FlowKey {
        FlowKey { vrf, proto, src, dst, sport, dport }
    }

    /// The key of the other direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }

    /// True for an IPv4 flow.
    pub fn is_v4(&self) -> bool {
        self.src >> 32 == V4_MAPPED >> 32 && self.dst >> 32 == V4_MAPPED >> 32
    }

    /// The source address.
    pub fn src_ip(&self) -> IpAddr {
        unmap(self.src)
    }

    /// The destination address.
    pub fn dst_ip(&self) -> IpAddr {
        unmap(self.dst)
    }

    /// The key's words, as the table stores them. An IPv4 key fits in the
    /// first two, which a table slot keeps on the line a hit reads: the
    /// family, the VRF (`VRF_BITS`), the protocol and both ports in the
    /// first, both addresses in the second; the other four are 0. An IPv6
    /// key takes five: the same first word, then the source's and the
    /// destination's halves.
    #[inline(always)]
    pub(crate) fn words(&self) -> [u64; 6] {
        let head = (u64::from(self.vrf & VRF_MASK) << 40)
            | (u64::from(self.proto) << 32)
            | (u64::from(self.sport) << 16)
            | u64::from(self.dport);
        if self.is_v4() {
            [head, ((self.src as u64) << 32) | (self.dst as u32 as u64), 0, 0, 0, 0]
        } else {
            let (src, dst) = (self.src, self.dst);
            [V6_WORD | head, (src >> 64) as u64, src as u64, (dst >> 64) as u64, dst as u64, 0]
        }
    }

    /// The key back from its words.
    pub(crate) fn from_words(w: &[u64; 6]) -> FlowKey {
        let (vrf, proto) = (((w[0] >> 40) as u32) & VRF_MASK, (w[0] >> 32) as u8);
        let (sport, dport) = ((w[0] >> 16) as u16, w[0] as u16);
        if w[0] & V6_WORD == 0 {
            FlowKey::v4(vrf, proto, (w[1] >> 32) as u32, w[1] as u32, sport, dport)
        } else {
            let src = (u128::from(w[1]) << 64) | u128::from(w[2]);
            let dst = (u128::from(w[3]) << 64) | u128::from(w[4]);
            FlowKey::v6(vrf, proto, src, dst, sport, dport)
        }
    }

    /// The table's hash of the key: stable, and spread over every bit.
    /// The words are mixed by independent multiplications (which the CPU
    /// runs side by side) and one finaliser, not a chain of six. An IPv4
    /// key's last four words are 0, so its hash is two multiplications
    /// and the finaliser where the key is built in line.
    #[inline]
    pub fn hash(&self) -> u64 {
        hash_words(&self.words())
    }
}

/// VRF ids a key holds: 23 bits, under the family bit (`FlowKey::words`).
pub(crate) const VRF_BITS: u32 = 23;
const VRF_MASK: u32 = (1 << VRF_BITS) - 1;
/// The family bit of a key's first word: set for IPv6.
const V6_WORD: u64 = 1 << 63;

/// True if a key's words (`FlowKey::words`) are an IPv6 key's, whose last
/// four words count.
#[inline(always)]
pub(crate) fn is_v6_words(w: &[u64; 6]) -> bool {
    w[0] & V6_WORD != 0
}

/// `FlowKey::hash`, from the key's words.
#[inline(always)]
pub(crate) fn hash_words(w: &[u64; 6]) -> u64 {
    let a = (w[1] ^ w[2].rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = (w[3] ^ w[4].rotate_left(32)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let c = (w[0] ^ w[5].rotate_left(17)).wrapping_mul(0x1656_67b1_9e37_79f9);
    fmix64(a ^ b.rotate_left(29) ^ c.rotate_left(43))
}

/// An IPv4 address as keys keep it: mapped into IPv6, so that the two
/// families never meet.
#[inline(always)]
pub(crate) fn map_v4(a: u32) -> u128 {
    V4_MAPPED | u128::from(a)
}

/// A kept address back as an address of its family.
pub(crate) fn unmap(a: u128) -> IpAddr {
    if a >> 32 == V4_MAPPED >> 32 {
        IpAddr::V4((a as u32).into())
    } else {
        IpAddr::V6(a.into())
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, d) = (self.src_ip(), self.dst_ip());
        let (s, d) = if self.is_v4() { (s.to_string(), d.to_string()) } else { (format!("[{s}]"), format!("[{d}]")) };
        write!(f, "vrf {} proto {} {}:{} -> {}:{}", self.vrf, self.proto, s, self.sport, d, self.dport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_mirror() {
        let k = FlowKey::v4(3, 6, 0x0a01_0002, 0x0a01_0103, 40000, 80);
        assert!(k.is_v4());
        assert_eq!(FlowKey::from_words(&k.words()), k);
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src_ip(), "10.1.1.3".parse::<IpAddr>().unwrap());
        assert_eq!(k.to_string(), "vrf 3 proto 6 10.1.0.2:40000 -> 10.1.1.3:80");
        let k6 = FlowKey::v6(1, 17, 1, 2, 5, 6);
        assert!(!k6.is_v4());
        assert_eq!(FlowKey::from_words(&k6.words()), k6);
        let big = FlowKey::v6((1 << VRF_BITS) - 1, 6, u128::MAX - 7, 1 << 100, 65535, 1);
        assert_eq!(FlowKey::from_words(&big.words()), big);
        // An IPv4 key takes two words, and never equals an IPv6 key's.
        assert_eq!(k.words()[2..], [0; 4]);
        assert!(!is_v6_words(&k.words()) && is_v6_words(&k6.words()));
        let mapped = FlowKey::v6(3, 6, map_v4(0x0a01_0002), 0x0a01_0103, 40000, 80);
        assert_ne!(mapped.words()[..2], k.words()[..2]);
        assert_ne!(k.hash(), k.reversed().hash());
        assert_ne!(FlowKey { vrf: 4, ..k }.hash(), k.hash());
    }
}
