//! ARP for IPv4 over Ethernet (RFC 826). Other hardware or protocol types are malformed here.

use super::{read_u16, write_u16, MacAddr, Result, WireError};
use std::net::Ipv4Addr;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP message.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Who has the target address?
    Request,
    /// The sender has the address.
    Reply,
}

/// A view of an Ethernet/IPv4 ARP message.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking its length and that it is Ethernet/IPv4 ARP.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(b, field::HTYPE) != 1
            || read_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buffer })
    }

    /// The raw operation code.
    pub fn oper(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        MacAddr(m)
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SPA];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Target hardware address.
    pub fn tha(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        MacAddr(m)
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::TPA];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_fixed(&mut self) {
        let b = self.buffer.as_mut();
        write_u16(b, field::HTYPE, 1);
        write_u16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    pub fn set_oper(&mut self, op: Operation) {
        let v = match op {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        write_u16(self.buffer.as_mut(), field::OPER, v);
    }

    /// Sets sender hardware and protocol addresses.
    pub fn set_sender(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::SHA].copy_from_slice(&mac.0);
        b[field::SPA].copy_from_slice(&ip.octets());
    }

    /// Sets target hardware and protocol addresses.
    pub fn set_target(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::THA].copy_from_slice(&mac.0);
        b[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// An ARP message as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Request or reply.
    pub operation: Operation,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Repr {
    /// Reads a message; operations other than request and reply are malformed.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        let operation = match p.oper() {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Err(WireError::Malformed),
        };
        Ok(Repr { operation, sha: p.sha(), spa: p.spa(), tha: p.tha(), tpa: p.tpa() })
    }

    /// Bytes the message takes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_fixed();
        p.set_oper(self.operation);
        p.set_sender(self.sha, self.spa);
        p.set_target(self.tha, self.tpa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 1, 1, 2, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 10, 1, 1, 1,
    ];

    fn repr() -> Repr {
        Repr {
            operation: Operation::Request,
            sha: MacAddr([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 1, 1, 2),
            tha: MacAddr([0; 6]),
            tpa: Ipv4Addr::new(10, 1, 1, 1),
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 28];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn too_short_and_malformed() {
        assert_eq!(Packet::new_checked(&PACKET_BYTES[..27]).unwrap_err(), WireError::Truncated);
        let mut bad = PACKET_BYTES;
        bad[5] = 16; // IPv6-sized protocol address
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), WireError::Malformed);
        let mut op = PACKET_BYTES;
        op[7] = 9;
        assert!(Repr::parse(&Packet::new_checked(&op[..]).unwrap()).is_err());
    }
}
