//! ICMPv6 (RFC 4443) and the two Neighbour Discovery messages vrouter answers
//! and sends: Neighbour Solicitation and Advertisement (RFC 4861).

use super::checksum;
use super::{read_u16, write_u16, MacAddr, Result, WireError};
use std::net::Ipv6Addr;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    /// Target address of NS and NA.
    pub const ND_TARGET: Range<usize> = 8..24;
    /// First option of NS and NA.
    pub const ND_OPTIONS: usize = 24;
}

/// Length of the ICMPv6 header.
pub const HEADER_LEN: usize = 8;
/// Length of an NS or NA without options.
pub const ND_LEN: usize = 24;
/// Length of a link-layer address option for Ethernet.
pub const LLADDR_OPT_LEN: usize = 8;

/// ICMPv6 message types vrouter uses.
pub mod kind {
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// NA flags: router, solicited, override.
pub const NA_FLAGS_ROUTER_SOLICITED_OVERRIDE: u32 = 0xe000_0000;
/// ND option: source link-layer address.
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// ND option: target link-layer address.
pub const OPT_TARGET_LLADDR: u8 = 2;

/// True for ICMPv6 error messages (types below 128).
pub fn is_error(kind: u8) -> bool {
    kind < 128
}

/// A view of an ICMPv6 message.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Views `buffer`, checking that it holds the header, and the target
    /// address too for NS and NA.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if matches!(b[0], kind::NEIGHBOR_SOLICIT | kind::NEIGHBOR_ADVERT) && b.len() < ND_LEN {
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

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::REST)
    }

    /// Target address of an NS or NA (checked present by `new_checked`).
    pub fn nd_target(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::ND_TARGET]);
        Ipv6Addr::from(a)
    }

    /// The link-layer address in the first ND option of the given type, if any.
    /// Malformed options (length zero or past the end) yield `Err`.
    pub fn nd_lladdr(&self, opt_type: u8) -> Result<Option<MacAddr>> {
        let b = self.buffer.as_ref();
        let mut at = field::ND_OPTIONS;
        while at + 2 <= b.len() {
            let len = usize::from(b[at + 1]) * 8;
            if len == 0 || at + len > b.len() {
                return Err(WireError::Malformed);
            }
            if b[at] == opt_type && len >= LLADDR_OPT_LEN {
                let mut m = [0; 6];
                m.copy_from_slice(&b[at + 2..at + 8]);
                return Ok(Some(MacAddr(m)));
            }
            at += len;
        }
        Ok(None)
    }

    /// True when the checksum over the pseudo-header and message is right.
    pub fn verify_checksum(&self, src: [u8; 16], dst: [u8; 16]) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_v6(src, dst, super::ip_proto::ICMPV6, b.len() as u32);
        checksum::finish(checksum::sum(acc, b)) == 0
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

    /// Sets the target address of an NS or NA.
    pub fn set_nd_target(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::ND_TARGET].copy_from_slice(&a.octets());
    }

    /// Writes one link-layer address option as the first ND option.
    pub fn set_nd_lladdr_option(&mut self, opt_type: u8, mac: MacAddr) {
        let o = &mut self.buffer.as_mut()[field::ND_OPTIONS..field::ND_OPTIONS + LLADDR_OPT_LEN];
        o[0] = opt_type;
        o[1] = 1;
        o[2..8].copy_from_slice(&mac.0);
    }

    /// Computes the checksum with the pseudo-header.
    pub fn fill_checksum(&mut self, src: [u8; 16], dst: [u8; 16]) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_v6(src, dst, super::ip_proto::ICMPV6, b.len() as u32);
        let c = checksum::finish(checksum::sum(acc, b));
        write_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }
}

/// An ICMPv6 header as plain values; the body is left to the caller.
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
    /// Reads the header, checking the checksum against the IPv6 addresses.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, src: Ipv6Addr, dst: Ipv6Addr) -> Result<Repr> {
        if !p.verify_checksum(src.octets(), dst.octets()) {
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

    /// Writes the header and the checksum over the whole buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: Ipv6Addr, dst: Ipv6Addr) {
        p.set_type_code(self.msg_type, self.code);
        p.set_rest(self.rest);
        p.fill_checksum(src.octets(), dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }
    fn dst() -> Ipv6Addr {
        "fe80::2".parse().unwrap()
    }

    // NA from fe80::1 to fe80::2 for target fe80::1, flags R|S|O,
    // target link-layer address 00:00:5e:00:01:00. Checksum hand-computed.
    static NA_BYTES: [u8; 32] = [
        0x88, 0x00, 0x3b, 0x1c, 0xe0, 0x00, 0x00, 0x00, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02,
        0x01, 0x00, 0x00, 0x5e, 0x00, 0x01, 0x00,
    ];

    #[test]
    fn deconstruct_na() {
        let p = Packet::new_checked(&NA_BYTES[..]).unwrap();
        let r = Repr::parse(&p, src(), dst()).unwrap();
        assert_eq!(r.msg_type, kind::NEIGHBOR_ADVERT);
        assert_eq!(r.rest, NA_FLAGS_ROUTER_SOLICITED_OVERRIDE);
        assert_eq!(p.nd_target(), src());
        assert_eq!(p.nd_lladdr(OPT_TARGET_LLADDR).unwrap(), Some(MacAddr([0, 0, 0x5e, 0, 1, 0])));
        assert_eq!(p.nd_lladdr(OPT_SOURCE_LLADDR).unwrap(), None);
    }

    #[test]
    fn construct_na() {
        let mut buf = [0u8; 32];
        {
            let mut p = Packet::new_unchecked(&mut buf[..]);
            p.set_nd_target(src());
            p.set_nd_lladdr_option(OPT_TARGET_LLADDR, MacAddr([0, 0, 0x5e, 0, 1, 0]));
            let r = Repr { msg_type: kind::NEIGHBOR_ADVERT, code: 0, rest: NA_FLAGS_ROUTER_SOLICITED_OVERRIDE };
            r.emit(&mut p, src(), dst());
        }
        assert_eq!(buf, NA_BYTES);
    }

    #[test]
    fn too_short_and_bad_options() {
        assert_eq!(Packet::new_checked(&NA_BYTES[..7]).unwrap_err(), WireError::Truncated);
        assert_eq!(Packet::new_checked(&NA_BYTES[..23]).unwrap_err(), WireError::Truncated);
        let mut zero_len = NA_BYTES;
        zero_len[25] = 0;
        let p = Packet::new_checked(&zero_len[..]).unwrap();
        assert_eq!(p.nd_lladdr(OPT_TARGET_LLADDR), Err(WireError::Malformed));
        let mut bad = NA_BYTES;
        bad[2] ^= 1;
        assert!(Repr::parse(&Packet::new_checked(&bad[..]).unwrap(), src(), dst()).is_err());
    }
}
