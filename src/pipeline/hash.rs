//! The flow hash: picks ECMP members and the UDP source port of tunnels.
//!
//! Same inputs, same hash, on every node and after every restart, so a
//! flow's path is stable. Fragments after the first carry no ports, so any
//! fragment hashes on addresses and protocol only, and all pieces of a
//! packet take one path.

/// The 64-bit finaliser of MurmurHash3: every input bit reaches every
/// output bit. The flow table hashes its keys with it too.
#[inline(always)]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The ports a flow hashes on: TCP and UDP ports, the identifier of an
/// ICMP or ICMPv6 echo (read only then, by `echo_ident`), zeros otherwise.
/// `l4` is the first four bytes of the transport header. The general and
/// the fast path both call this, so a flow hashes alike on either.
#[inline(always)]
pub fn flow_ports(proto: u8, l4: [u8; 4], echo_ident: impl FnOnce() -> u16) -> (u16, u16) {
    use crate::wire::{icmpv4, icmpv6, ip_proto};
    match proto {
        ip_proto::TCP | ip_proto::UDP => (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])),
        ip_proto::ICMP if matches!(l4[0], icmpv4::kind::ECHO_REQUEST | icmpv4::kind::ECHO_REPLY) => (echo_ident(), 0),
        ip_proto::ICMPV6 if matches!(l4[0], icmpv6::kind::ECHO_REQUEST | icmpv6::kind::ECHO_REPLY) => (echo_ident(), 0),
        _ => (0, 0),
    }
}

/// Hash of an IPv4 5-tuple.
#[inline(always)]
pub fn flow_hash_v4(seed: u64, src: u32, dst: u32, proto: u8, sport: u16, dport: u16) -> u32 {
    flow_hash_words(seed, (u64::from(src) << 32) | u64::from(dst), proto, (u32::from(sport) << 16) | u32::from(dport))
}

/// `flow_hash_v4` with the addresses as one word (source above) and the
/// ports as another (source above), as the fast path reads them.
#[inline(always)]
pub fn flow_hash_words(seed: u64, addresses: u64, proto: u8, ports: u32) -> u32 {
    let b = (u64::from(proto) << 32) | u64::from(ports);
    (fmix64(addresses ^ fmix64(b ^ seed)) >> 32) as u32
}

/// Hash of an IPv6 5-tuple.
#[inline]
pub fn flow_hash_v6(seed: u64, src: u128, dst: u128, proto: u8, sport: u16, dport: u16) -> u32 {
    let a = (src as u64) ^ ((src >> 64) as u64).rotate_left(17);
    let d = (dst as u64) ^ ((dst >> 64) as u64).rotate_left(29);
    let b = (u64::from(proto) << 32) | (u64::from(sport) << 16) | u64::from(dport);
    (fmix64(a ^ fmix64(d ^ fmix64(b ^ seed))) >> 32) as u32
}

/// The flow hash of the unfragmented packets of flow `key`: what
/// `flow_hash_v4` or `flow_hash_v6` gives for each of them. A flow entry
/// keeps it (`DirSpec::hash`), so that its packets need not hash again.
/// Keys hold an echo's identifier as both ports; the hash, as the source.
pub fn key_hash(seed: u64, key: &crate::flow::FlowKey) -> u32 {
    use crate::wire::ip_proto;
    let (sp, dp) = match key.proto {
        ip_proto::TCP | ip_proto::UDP => (key.sport, key.dport),
        ip_proto::ICMP | ip_proto::ICMPV6 => (key.sport, 0),
        _ => (0, 0),
    };
    if key.is_v4() {
        flow_hash_v4(seed, key.src as u32, key.dst as u32, key.proto, sp, dp)
    } else {
        flow_hash_v6(seed, key.src, key.dst, key.proto, sp, dp)
    }
}

/// The UDP source port of an MPLS-over-UDP tunnel: 49152-65535, from the hash.
#[inline]
pub fn tunnel_source_port(hash: u32) -> u16 {
    0xc000 | ((hash >> 8) as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(flow_hash_v4(0, 1, 2, 6, 3, 4), flow_hash_v4(0, 1, 2, 6, 3, 4));
        assert_ne!(flow_hash_v4(0, 1, 2, 6, 3, 4), flow_hash_v4(0, 1, 2, 6, 3, 5));
        assert_ne!(flow_hash_v4(0, 1, 2, 6, 3, 4), flow_hash_v4(1, 1, 2, 6, 3, 4));
        // 10,000 flows differing only in source port fill 256 buckets evenly.
        let mut buckets = [0u32; 256];
        for p in 0..10_000u16 {
            buckets[(flow_hash_v4(0, 0x0a01_0102, 0x0a02_0203, 17, p, 80) & 0xff) as usize] += 1;
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 15 && *max < 65, "uneven: {min}..{max}");
        let mut ports = std::collections::HashSet::new();
        for p in 0..10_000u16 {
            let sp = tunnel_source_port(flow_hash_v6(0, 1, 2, 6, p, 443));
            assert!(sp >= 49152);
            ports.insert(sp);
        }
        assert!(ports.len() > 7000, "source ports collapse: {}", ports.len());
    }

    /// An entry's kept hash is what its packets would hash to.
    #[test]
    fn a_key_hashes_as_its_packets_do() {
        use crate::flow::FlowKey;
        use crate::wire::ip_proto;
        let (src, dst) = (0x0a01_0102, 0x0a02_0203);
        let tcp = FlowKey::v4(3, ip_proto::TCP, src, dst, 40000, 443);
        assert_eq!(key_hash(9, &tcp), flow_hash_v4(9, src, dst, ip_proto::TCP, 40000, 443));
        assert_eq!(key_hash(9, &tcp.reversed()), flow_hash_v4(9, dst, src, ip_proto::TCP, 443, 40000));
        // An echo's key holds its identifier twice; its packets hash it once.
        let echo = FlowKey::v4(3, ip_proto::ICMP, src, dst, 77, 77);
        assert_eq!(key_hash(9, &echo), flow_hash_v4(9, src, dst, ip_proto::ICMP, 77, 0));
        let udp6 = FlowKey::v6(3, ip_proto::UDP, 1, 2, 53, 5353);
        assert_eq!(key_hash(9, &udp6), flow_hash_v6(9, 1, 2, ip_proto::UDP, 53, 5353));
    }
}
