//! IPv4 headers (RFC 791).

use super::checksum;
use super::{read_u16, write_u16, Result, WireError};
use std::net::Ipv4Addr;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;

/// A view of an IPv4 packet.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// True when the checksum of a header without options is right. The
/// header is summed as three native words (8, 8 and 4 bytes) with
/// end-around carry: a one's-complement sum in swapped order is the
/// swapped sum (RFC 1071, 2.B), and since 2^16 = 1 modulo 2^16 - 1, the
/// 64-bit sum is congruent to the 16-bit one, which is all ones exactly
/// when the wide sum is a nonzero multiple of 0xffff: one multiply tells,
/// where folding to 16 bits took six steps (19 instructions a packet
/// became 13, callgrind).
#[inline(always)]
pub fn checksum_ok(b: &[u8; HEADER_LEN]) -> bool {
    let word =
        |i: usize| u64::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
    let tail = u64::from(u32::from_ne_bytes([b[16], b[17], b[18], b[19]]));
    // An end-around carry never carries again: a sum that wrapped is at
    // most 2^64 - 2.
    let (s, carried) = word(0).overflowing_add(word(8));
    let s = s + u64::from(carried);
    let (s, carried) = s.overflowing_add(tail);
    let s = s + u64::from(carried);
    // `s` is k * 0xffff, k >= 1, exactly when k - 1, got by multiplying
    // with 0xffff's inverse modulo 2^64, is below 2^64 / 0xffff (LLVM
    // divides instead, in 20 instructions, for `s != 0 && s % 0xffff == 0`).
    const INVERSE: u64 = 0xfffe_fffe_fffe_ffff;
    const _: () = assert!(INVERSE.wrapping_mul(0xffff) == 1);
    s.wrapping_mul(INVERSE).wrapping_sub(1) < u64::MAX / 0xffff
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking version, header length and total length
    /// against the buffer. Bytes past the total length (Ethernet padding) are allowed.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Packet { buffer };
        let hl = p.header_len();
        if p.version() != 4 || hl < HEADER_LEN || usize::from(p.total_len()) < hl {
            return Err(WireError::Malformed);
        }
        if p.buffer.as_ref().len() < usize::from(p.total_len()) {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length: header and payload.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & DONT_FRAG != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & MORE_FRAGS != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// True for any fragment but a whole packet.
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (MORE_FRAGS | 0x1fff) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Payload protocol.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address, raw.
    pub fn src_bytes(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::SRC];
        [b[0], b[1], b[2], b[3]]
    }

    /// Destination address, raw.
    pub fn dst_bytes(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::DST];
        [b[0], b[1], b[2], b[3]]
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// True when the header checksum is right. Always inlined: as a hint,
    /// LLVM's choice for the fabric lane (`decap::tunnel`) came and went
    /// with code elsewhere in the crate (the codegen units' partition), and
    /// out of line it cost decap 10-20 instructions a packet (callgrind).
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        if let (HEADER_LEN, Some(Ok(h))) = (hl, b.get(..HEADER_LEN).map(<&[u8; HEADER_LEN]>::try_from)) {
            return checksum_ok(h);
        }
        checksum::checksum(&b[..hl]) == 0
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and a header length in bytes.
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the flags and fragment offset (in bytes, a multiple of 8).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & 0x1fff;
        if dont_frag {
            v |= DONT_FRAG;
        }
        if more_frags {
            v |= MORE_FRAGS;
        }
        write_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the TTL without touching the checksum.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the stored checksum.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally. The caller
    /// has checked that the TTL is above 1.
    ///
    /// The TTL is the high byte of its 16-bit word, so the word drops by
    /// 0x0100 and the checksum rises by as much, with end-around carry
    /// (RFC 1141). That shortcut can give 0xffff, negative zero, where a
    /// full computation gives 0x0000 (RFC 1624 section 3); mapping it back
    /// keeps the result identical to recomputing.
    #[inline(always)]
    pub fn decrement_ttl(&mut self) {
        // In the machine's byte order (RFC 1071, 2.B) the rise is 1 on the
        // swapped word. Taken modulo 0xffff, it wraps with end-around carry
        // and maps negative zero to 0x0000 in one conditional subtract
        // (7 instructions where the swaps, the fold and the fix took 14).
        let b = self.buffer.as_mut();
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let at = field::CHECKSUM;
        let risen = u32::from(u16::from_ne_bytes([b[at], b[at + 1]])) + 1;
        let c = if risen >= 0xffff { risen - 0xffff } else { risen } as u16;
        b[at..at + 2].copy_from_slice(&c.to_ne_bytes());
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// An IPv4 header without options, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// Reads a header, rejecting a bad checksum. Options are skipped.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if !p.verify_checksum() {
            return Err(WireError::Malformed);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a correct checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(HEADER_LEN);
        p.set_dscp_ecn(0);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo header from 10.1.1.2 to 10.2.2.3, TTL 64, DF, ident 0x1234, 4-byte payload.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x11, 0xaa, 0x0a, 0x01, 0x01, 0x02, 0x0a, 0x02,
        0x02, 0x03, 0xde, 0xad, 0xbe, 0xef,
    ];

    fn repr() -> Repr {
        Repr {
            src: Ipv4Addr::new(10, 1, 1, 2),
            dst: Ipv4Addr::new(10, 2, 2, 3),
            protocol: 1,
            payload_len: 4,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(!p.is_fragment());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 24];
        buf[20..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut buf = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn decrement_ttl_matches_recompute_for_every_checksum() {
        // Walk the identification field so the checksum takes every value.
        let mut buf = PACKET_BYTES;
        for ident in 0..=u16::MAX {
            let mut p = Packet::new_unchecked(&mut buf[..]);
            p.set_ident(ident);
            p.set_ttl(64);
            p.fill_checksum();
            p.decrement_ttl();
            let inc = p.checksum();
            p.fill_checksum();
            assert_eq!(inc, p.checksum(), "ident {ident:#x}");
        }
    }

    #[test]
    fn checksum_ok_agrees_with_the_full_sum() {
        // Headers of random words, each with its right checksum and with a
        // wrong one, and the corners of the wide sum: all zeros (a sum of
        // +0, never a valid header), all ones, and words that carry.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut headers = vec![[0u8; HEADER_LEN], [0xff; HEADER_LEN]];
        let mut carrying = [0xff; HEADER_LEN];
        carrying[10..12].copy_from_slice(&[0, 0]);
        headers.push(carrying);
        for _ in 0..100_000 {
            let mut h = [0u8; HEADER_LEN];
            for b in h.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            headers.push(h);
            let mut right = h;
            right[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&right);
            right[10..12].copy_from_slice(&c.to_be_bytes());
            headers.push(right);
        }
        let mut valid = 0;
        for h in &headers {
            let full = checksum::checksum(h) == 0;
            assert_eq!(checksum_ok(h), full, "{h:02x?}");
            valid += usize::from(full);
        }
        assert!(valid >= 100_000, "each right checksum passes: {valid}");
    }

    #[test]
    fn fragment_fields() {
        let mut buf = PACKET_BYTES;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_frag(false, true, 1480);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn too_short_and_malformed() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..19]).unwrap_err(), WireError::Truncated);
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..23]).unwrap_err(), WireError::Truncated);
        let mut v6 = PACKET_BYTES;
        v6[0] = 0x65;
        assert_eq!(Packet::new_checked(&v6[..]).unwrap_err(), WireError::Malformed);
        let mut ihl = PACKET_BYTES;
        ihl[0] = 0x44;
        assert_eq!(Packet::new_checked(&ihl[..]).unwrap_err(), WireError::Malformed);
        let mut bad_sum = PACKET_BYTES;
        bad_sum[11] ^= 1;
        assert!(Repr::parse(&Packet::new_checked(&bad_sum[..]).unwrap()).is_err());
    }
}
