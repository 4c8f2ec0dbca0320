//! GRE (RFC 2784) as MPLS over GRE (RFC 4023) uses it: four bytes, no
//! checksum, key or sequence number, protocol type 0x8847.

use super::{read_u16, write_u16, EtherType, Result, WireError};

mod field {
    pub const FLAGS_VER: usize = 0;
    pub const PROTOCOL: usize = 2;
}

/// Length of the base GRE header.
pub const HEADER_LEN: usize = 4;
const FLAG_CHECKSUM: u16 = 0x8000;
const FLAG_KEY: u16 = 0x2000;
const FLAG_SEQ: u16 = 0x1000;

/// A view of a GRE header.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking that the header, with any optional fields, fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Packet { buffer };
        if p.header_len() > p.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// Flags and version, raw.
    #[inline(always)]
    pub fn flags_version(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_VER)
    }

    /// Version (0 for RFC 2784).
    pub fn version(&self) -> u8 {
        (self.flags_version() & 0x7) as u8
    }

    /// Protocol type of the payload.
    #[inline(always)]
    pub fn protocol(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PROTOCOL))
    }

    /// Header length including optional checksum, key and sequence fields.
    #[inline]
    pub fn header_len(&self) -> usize {
        let f = self.flags_version();
        let mut n = HEADER_LEN;
        if f & FLAG_CHECKSUM != 0 {
            n += 4;
        }
        if f & FLAG_KEY != 0 {
            n += 4;
        }
        if f & FLAG_SEQ != 0 {
            n += 4;
        }
        n
    }

    /// True for the exact header MPLS over GRE uses: no options, version 0, MPLS.
    #[inline(always)]
    pub fn is_plain_mpls(&self) -> bool {
        self.flags_version() == 0 && self.protocol() == EtherType::MPLS_UNICAST
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes flags and version zero and the protocol type.
    pub fn set_plain(&mut self, protocol: EtherType) {
        write_u16(self.buffer.as_mut(), field::FLAGS_VER, 0);
        write_u16(self.buffer.as_mut(), field::PROTOCOL, protocol.0);
    }
}

/// A plain GRE header as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Protocol type of the payload.
    pub protocol: EtherType,
}

impl Repr {
    /// Reads a header; optional fields and non-zero versions are rejected,
    /// since MPLS over GRE never uses them.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if p.flags_version() != 0 {
            return Err(WireError::Malformed);
        }
        Ok(Repr { protocol: p.protocol() })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_plain(self.protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET_BYTES: [u8; 8] = [0x00, 0x00, 0x88, 0x47, 0x00, 0x01, 0x01, 0x40];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert!(p.is_plain_mpls());
        assert_eq!(Repr::parse(&p).unwrap(), Repr { protocol: EtherType::MPLS_UNICAST });
        assert_eq!(p.payload(), &[0x00, 0x01, 0x01, 0x40]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 4];
        Repr { protocol: EtherType::MPLS_UNICAST }.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET_BYTES[..4]);
    }

    #[test]
    fn too_short_and_options() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..3]).unwrap_err(), WireError::Truncated);
        let with_key = [0x20u8, 0x00, 0x88, 0x47, 0, 0];
        assert_eq!(Packet::new_checked(&with_key[..]).unwrap_err(), WireError::Truncated);
        let with_key = [0x20u8, 0x00, 0x88, 0x47, 0, 0, 0, 7];
        let p = Packet::new_checked(&with_key[..]).unwrap();
        assert_eq!(p.header_len(), 8);
        assert!(!p.is_plain_mpls());
        assert!(Repr::parse(&p).is_err());
    }
}
