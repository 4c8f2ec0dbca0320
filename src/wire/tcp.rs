//! The parts of TCP (RFC 9293) a router touches: ports, flags, and the MSS
//! option of a SYN, which vrouter clamps so that segments fit after encapsulation.

use super::checksum;
use super::{read_u16, write_u16, Result, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// FIN flag.
pub const FLAG_FIN: u8 = 0x01;
/// SYN flag.
pub const FLAG_SYN: u8 = 0x02;
/// RST flag.
pub const FLAG_RST: u8 = 0x04;
/// PSH flag.
pub const FLAG_PSH: u8 = 0x08;
/// ACK flag.
pub const FLAG_ACK: u8 = 0x10;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// A view of a TCP segment.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking that the header with its options fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let p = Packet { buffer };
        if p.header_len() < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if p.header_len() > p.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header length with options.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Stored checksum.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Byte offset of the MSS option's value, if the segment carries one.
    /// Malformed option lists yield `None`: the segment passes untouched.
    pub fn mss_offset(&self) -> Option<usize> {
        let b = self.buffer.as_ref();
        let end = self.header_len();
        let mut at = field::OPTIONS;
        while at < end {
            match b[at] {
                OPT_END => return None,
                OPT_NOP => at += 1,
                kind => {
                    let len = usize::from(*b.get(at + 1)?);
                    if len < 2 || at + len > end {
                        return None;
                    }
                    if kind == OPT_MSS && len == 4 {
                        return Some(at + 2);
                    }
                    at += len;
                }
            }
        }
        None
    }

    /// The MSS option's value, if any.
    pub fn mss(&self) -> Option<u16> {
        self.mss_offset().map(|at| read_u16(self.buffer.as_ref(), at))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Lowers the MSS option to `max` when it is larger, updating the checksum
    /// incrementally. Returns true when it changed the segment.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some(at) = self.mss_offset() else {
            return false;
        };
        let b = self.buffer.as_mut();
        let old = read_u16(b, at);
        if old <= max {
            return false;
        }
        write_u16(b, at, max);
        let c = checksum::update16(read_u16(b, field::CHECKSUM), old, max);
        write_u16(b, field::CHECKSUM, c);
        true
    }

    /// Sets the ports.
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, src);
        write_u16(self.buffer.as_mut(), field::DST_PORT, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SYN 40000 -> 80 with options NOP, NOP, MSS 1460; checksum over the
    // pseudo-header of 10.1.1.2 -> 10.2.2.3. Checksums in these golden arrays
    // were computed with an independent Python implementation of RFC 1071.
    static SYN_BYTES: [u8; 28] = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x70, 0x02, 0xff, 0xff, 0xd3, 0x88, 0x00, 0x00, 0x01, 0x01,
        0x02, 0x04, 0x05, 0xb4, 0x00, 0x00,
    ];

    fn tcp_checksum(seg: &[u8]) -> u16 {
        let acc = checksum::pseudo_v4([10, 1, 1, 2], [10, 2, 2, 3], 6, seg.len() as u16);
        checksum::finish(checksum::sum(acc, seg))
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SYN_BYTES[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 80));
        assert_eq!(p.flags(), FLAG_SYN);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.mss(), Some(1460));
        assert_eq!(tcp_checksum(&SYN_BYTES), 0);
    }

    #[test]
    fn clamp_keeps_checksum_valid() {
        let mut buf = SYN_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.clamp_mss(1500));
        assert!(p.clamp_mss(1414));
        assert_eq!(p.mss(), Some(1414));
        assert_eq!(tcp_checksum(&buf), 0);
    }

    #[test]
    fn too_short_and_malformed_options() {
        assert_eq!(Packet::new_checked(&SYN_BYTES[..19]).unwrap_err(), WireError::Truncated);
        assert_eq!(Packet::new_checked(&SYN_BYTES[..27]).unwrap_err(), WireError::Truncated);
        let mut bad = SYN_BYTES;
        bad[23] = 40; // option length past the header
        assert_eq!(Packet::new_checked(&bad[..]).unwrap().mss(), None);
        let mut zero = SYN_BYTES;
        zero[23] = 0;
        assert_eq!(Packet::new_checked(&zero[..]).unwrap().mss(), None);
    }
}
