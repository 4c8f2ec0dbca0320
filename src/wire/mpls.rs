//! One MPLS label stack entry (RFC 3032): label, traffic class, bottom-of-stack, TTL.

use super::{read_u32, write_u32, Result, WireError};

/// Length of a label stack entry.
pub const HEADER_LEN: usize = 4;
/// The largest label (20 bits).
pub const MAX_LABEL: u32 = (1 << 20) - 1;
/// Labels 0 to 15 are reserved (RFC 3032).
pub const FIRST_UNRESERVED_LABEL: u32 = 16;
/// Outer TTL vrouter uses for its tunnels, and for labels over L2 payloads.
pub const DEFAULT_TTL: u8 = 64;

/// A view of one label stack entry.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking that it holds an entry.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline(always)]
    fn word(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 0)
    }

    /// The 20-bit label.
    #[inline]
    pub fn label(&self) -> u32 {
        self.word() >> 12
    }

    /// Traffic class.
    #[inline]
    pub fn tc(&self) -> u8 {
        ((self.word() >> 9) & 0x7) as u8
    }

    /// Bottom-of-stack bit.
    #[inline]
    pub fn bottom_of_stack(&self) -> bool {
        self.word() & 0x100 != 0
    }

    /// TTL.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.word() as u8
    }

    /// The bytes after the entry.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a whole entry.
    pub fn set(&mut self, label: u32, tc: u8, bottom_of_stack: bool, ttl: u8) {
        let w =
            ((label & MAX_LABEL) << 12) | (u32::from(tc & 7) << 9) | (u32::from(bottom_of_stack) << 8) | u32::from(ttl);
        write_u32(self.buffer.as_mut(), 0, w);
    }
}

/// A label stack entry as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The 20-bit label.
    pub label: u32,
    /// Traffic class.
    pub tc: u8,
    /// Bottom-of-stack bit.
    pub bottom_of_stack: bool,
    /// TTL.
    pub ttl: u8,
}

impl Repr {
    /// Reads an entry.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        Ok(Repr { label: p.label(), tc: p.tc(), bottom_of_stack: p.bottom_of_stack(), ttl: p.ttl() })
    }

    /// Bytes the entry takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the entry.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set(self.label, self.tc, self.bottom_of_stack, self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Label 16, TC 0, S=1, TTL 64; then label 0xfffff, TC 7, S=0, TTL 1.
    static PACKET_BYTES: [u8; 8] = [0x00, 0x01, 0x01, 0x40, 0xff, 0xff, 0xfe, 0x01];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), Repr { label: 16, tc: 0, bottom_of_stack: true, ttl: 64 });
        let q = Packet::new_checked(&PACKET_BYTES[4..]).unwrap();
        assert_eq!(Repr::parse(&q).unwrap(), Repr { label: MAX_LABEL, tc: 7, bottom_of_stack: false, ttl: 1 });
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 8];
        Repr { label: 16, tc: 0, bottom_of_stack: true, ttl: 64 }.emit(&mut Packet::new_unchecked(&mut buf[..4]));
        Repr { label: MAX_LABEL, tc: 7, bottom_of_stack: false, ttl: 1 }
            .emit(&mut Packet::new_unchecked(&mut buf[4..]));
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn too_short() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..3]).unwrap_err(), WireError::Truncated);
    }
}
