//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// Adds `data` to a running one's-complement sum, partly folded.
///
/// It adds 32-bit big-endian words into a 64-bit accumulator: since
/// 2^16 = 1 modulo 2^16 - 1, folding the wide sum gives the same result as
/// adding 16-bit words, in half the steps.
#[inline]
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut wide = u64::from(acc);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        wide += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    match *chunks.remainder() {
        [a] => wide += u64::from(a) << 8,
        [a, b] => wide += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => wide += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => {}
    }
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    wide = (wide & 0xffff_ffff) + (wide >> 32);
    // Leave head room for callers that add a few more 16-bit values.
    let folded = (wide & 0xffff) + (wide >> 16);
    folded as u32
}

/// Folds a running sum into 16 bits and complements it, with no loop: a
/// loop's exit depends on whether the packet's sum carried, a branch the
/// CPU mispredicts on a share of packets. The sum plus itself rotated by
/// 16 holds, in its high half, the halves' sum with the carry out of the
/// low half added back: one fold with its end-around carry, which any
/// 32-bit sum fits (Linux's generic `csum_fold`). Two folds of masks and
/// shifts, as before, took two instructions more.
#[inline]
pub fn finish(acc: u32) -> u16 {
    !(acc.wrapping_add(acc.rotate_right(16)) >> 16) as u16
}

/// The checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    finish(acc)
}

/// The new checksum after a 32-bit field changed from `old` to `new`.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// The IPv4 pseudo-header sum for TCP, UDP: source, destination, protocol, length.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let acc = sum(sum(0, &src), &dst);
    acc + u32::from(proto) + u32::from(len)
}

/// The IPv6 pseudo-header sum for TCP, UDP and ICMPv6.
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, len: u32) -> u32 {
    let acc = sum(sum(0, &src), &dst);
    acc + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), !0xab00);
        assert_eq!(checksum(&[0x12, 0x34, 0xab]), !(0x1234 + 0xab00));
        assert_eq!(checksum(&[0x12, 0x34, 0x56, 0x78, 0x9a]), !0x02ad); // 0x1234 + 0x5678 + 0x9a00 = 0x102ac, folded
    }

    #[test]
    fn wide_sum_matches_sixteen_bit_sum() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut narrow = 0u64;
            for (i, b) in data.iter().enumerate() {
                narrow += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
            }
            while narrow > 0xffff {
                narrow = (narrow & 0xffff) + (narrow >> 16);
            }
            assert_eq!(checksum(&data), !(narrow as u16), "len {len}");
        }
    }

    /// `finish`'s one fold gives what folding until it fits gives, for any sum.
    #[test]
    fn finish_folds_any_sum() {
        let folded = |mut acc: u64| {
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        };
        let mut x = 0x9e37_79b9u32;
        let edges = [0, 1, 0xfffe, 0xffff, 0x1_0000, 0x1_fffe, 0x1_ffff, 0xfffe_ffff, 0xffff_0000, u32::MAX];
        for acc in edges.into_iter().chain((0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })) {
            assert_eq!(finish(acc), folded(u64::from(acc)), "{acc:#x}");
        }
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut hdr =
            [0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 1, 1, 2, 10, 2, 2, 3];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        for ttl in (1..=64u8).rev() {
            let old = u16::from_be_bytes([hdr[8], hdr[9]]);
            hdr[8] = ttl - 1;
            let new = u16::from_be_bytes([hdr[8], hdr[9]]);
            let inc = update16(u16::from_be_bytes([hdr[10], hdr[11]]), old, new);
            hdr[10..12].copy_from_slice(&inc.to_be_bytes());
            assert_eq!(checksum(&hdr), 0, "ttl {ttl}");
        }
        let old = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        hdr[12..16].copy_from_slice(&[192, 168, 7, 9]);
        let inc = update32(u16::from_be_bytes([hdr[10], hdr[11]]), old, 0xc0a8_0709);
        hdr[10..12].copy_from_slice(&inc.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }
}
