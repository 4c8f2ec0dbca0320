//! ICMP for IPv4 (RFC 792): the common 8-byte header. vrouter emits Time
//! Exceeded and Destination Unreachable / Fragmentation Needed.

use super::checksum;
use super::{read_u16, write_u16, Result, WireError};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
}

/// Length of the ICMP header.
pub const HEADER_LEN: usize = 8;

/// ICMP message types vrouter uses.
pub mod kind {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Destination Unreachable code: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time Exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// True for ICMP error messages, which must never cause another ICMP error.
pub fn is_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// A view of an ICMP message.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking that it holds the header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Stored checksum.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (bytes 4-5), which flows use in place of a port.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST)
    }

    /// Next-hop MTU of a Fragmentation Needed message (bytes 6-7).
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST + 2)
    }

    /// True when the checksum over the whole buffer is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Data after the header: for errors, the offending packet.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets type and code.
    pub fn set_type_code(&mut self, kind: u8, code: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = kind;
        b[field::CODE] = code;
    }

    /// Sets bytes 4-7, whose meaning depends on the type.
    pub fn set_rest(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST..field::REST + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Computes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let c = checksum::checksum(self.buffer.as_ref());
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Data after the header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An ICMP header as plain values; the data is left to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub code: u8,
    /// Bytes 4-7.
    pub rest: u32,
}

impl Repr {
    /// Reads the header, rejecting a bad checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if !p.verify_checksum() {
            return Err(WireError::Malformed);
        }
        let b = p.buffer.as_ref();
        let rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        Ok(Repr { msg_type: p.msg_type(), code: p.code(), rest })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header and the checksum over the whole buffer (data included).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_type_code(self.msg_type, self.code);
        p.set_rest(self.rest);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fragmentation Needed, next-hop MTU 1472, quoting 4 bytes.
    static PACKET_BYTES: [u8; 12] = [0x03, 0x04, 0xac, 0x5f, 0x00, 0x00, 0x05, 0xc0, 0x45, 0x00, 0x05, 0xdc];

    fn repr() -> Repr {
        Repr { msg_type: kind::DEST_UNREACHABLE, code: CODE_FRAG_NEEDED, rest: 1472 }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert_eq!(p.next_hop_mtu(), 1472);
        assert_eq!(p.data(), &[0x45, 0x00, 0x05, 0xdc]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(&[0x45, 0x00, 0x05, 0xdc]);
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn too_short_and_bad_checksum() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..7]).unwrap_err(), WireError::Truncated);
        let mut bad = PACKET_BYTES;
        bad[3] ^= 0xff;
        assert!(Repr::parse(&Packet::new_checked(&bad[..]).unwrap()).is_err());
        assert!(is_error(kind::TIME_EXCEEDED) && !is_error(kind::ECHO_REQUEST));
    }
}
