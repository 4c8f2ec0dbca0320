//! IPv6 extension headers (RFC 8200 section 4): the fragment header as a
//! view, and the walk past the chain that finds the upper-layer header.
//! Policy, flows and the tunnel hash need the transport protocol and ports
//! of every packet, including those behind hop-by-hop or destination
//! options, and the datagram a fragment belongs to.

use super::{read_u16, read_u32, write_u16, Result, WireError};

/// Next-header values of the extension headers the walk steps over.
pub mod kind {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (RFC 4302), whose length is counted in 4-byte units.
    pub const AUTH: u8 = 51;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

mod field {
    use core::ops::Range;
    pub const NXT_HDR: usize = 0;
    /// Offset (13 bits, in 8-byte units), two reserved bits, More Fragments.
    pub const OFFSET_FLAGS: usize = 2;
    pub const IDENT: Range<usize> = 4..8;
}

/// Length of a fragment header.
pub const FRAGMENT_LEN: usize = 8;

/// Extension headers walked at most: a longer chain is left unread, and
/// the packet is taken for one of an unknown upper-layer protocol.
pub const MAX_CHAIN: usize = 8;

/// A view of a fragment header.
#[derive(Debug)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Fragment<T> {
    /// Views `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Fragment<T> {
        Fragment { buffer }
    }

    /// Views `buffer`, checking that it holds a whole fragment header.
    pub fn new_checked(buffer: T) -> Result<Fragment<T>> {
        if buffer.as_ref().len() < FRAGMENT_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Fragment { buffer })
    }

    /// The header after this one, in the first fragment.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Offset of this fragment's data in the datagram, in bytes.
    pub fn offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OFFSET_FLAGS) & 0xfff8
    }

    /// True if fragments follow.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::OFFSET_FLAGS) & 1 != 0
    }

    /// The identification every fragment of the datagram carries.
    pub fn ident(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::IDENT.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fragment<T> {
    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
        self.buffer.as_mut()[field::NXT_HDR + 1] = 0;
    }

    /// Sets the offset (in bytes, a multiple of 8) and the More Fragments flag.
    pub fn set_offset(&mut self, offset: u16, more: bool) {
        write_u16(self.buffer.as_mut(), field::OFFSET_FLAGS, (offset & 0xfff8) | u16::from(more));
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u32) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }
}

/// A fragment header as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRepr {
    /// The header after it (in the first fragment).
    pub next_header: u8,
    /// Offset of the data in the datagram, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

impl FragmentRepr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(p: &Fragment<T>) -> Result<FragmentRepr> {
        Ok(FragmentRepr { next_header: p.next_header(), offset: p.offset(), more: p.more_frags(), ident: p.ident() })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        FRAGMENT_LEN
    }

    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Fragment<T>) {
        p.set_next_header(self.next_header);
        p.set_offset(self.offset, self.more);
        p.set_ident(self.ident);
    }
}

/// Where a packet's upper-layer header is, past its extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// Bytes from the start of the fixed header to the upper-layer header.
    pub header_len: usize,
    /// The upper-layer protocol (or, in a fragment after the first, the
    /// protocol the first fragment carries after its fragment header).
    pub next_header: u8,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<FragmentRepr>,
}

impl Chain {
    /// Walks the extension headers of the IPv6 packet `ip` (the fixed
    /// header on; only its first `total` bytes are the packet's). Stops at
    /// the first header that is not an extension header, after a fragment
    /// header whose offset is not 0 (the rest of the chain is in the first
    /// fragment), or after `MAX_CHAIN` headers. An extension header that
    /// runs past the packet is malformed.
    pub fn walk(ip: &[u8], total: usize) -> Result<Chain> {
        let ip = ip.get(..total).ok_or(WireError::Truncated)?;
        let mut next = *ip.get(6).ok_or(WireError::Truncated)?;
        let mut at = super::ipv6::HEADER_LEN;
        let mut fragment = None;
        for _ in 0..MAX_CHAIN {
            let len = match next {
                kind::HOP_BY_HOP | kind::ROUTING | kind::DEST_OPTS => {
                    (usize::from(*ip.get(at + 1).ok_or(WireError::Malformed)?) + 1) * 8
                }
                kind::AUTH => (usize::from(*ip.get(at + 1).ok_or(WireError::Malformed)?) + 2) * 4,
                kind::FRAGMENT => FRAGMENT_LEN,
                _ => break,
            };
            let header = ip.get(at..at + len).ok_or(WireError::Malformed)?;
            let this = next;
            next = header[0];
            at += len;
            if this == kind::FRAGMENT {
                let f = FragmentRepr::parse(&Fragment::new_unchecked(header))?;
                fragment = Some(f);
                if f.offset != 0 {
                    break;
                }
            }
        }
        Ok(Chain { header_len: at, next_header: next, fragment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragment header: next UDP, offset 1448 bytes, more to come, ident 0xdeadbeef.
    static FRAGMENT_BYTES: [u8; 8] = [0x11, 0x00, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef];

    fn frag_repr() -> FragmentRepr {
        FragmentRepr { next_header: 17, offset: 1448, more: true, ident: 0xdead_beef }
    }

    #[test]
    fn fragment_deconstruct_and_construct() {
        let p = Fragment::new_checked(&FRAGMENT_BYTES[..]).unwrap();
        assert_eq!(FragmentRepr::parse(&p).unwrap(), frag_repr());
        let mut buf = [0xffu8; 8];
        frag_repr().emit(&mut Fragment::new_unchecked(&mut buf[..]));
        assert_eq!(buf, FRAGMENT_BYTES);
        assert_eq!(Fragment::new_checked(&FRAGMENT_BYTES[..7]).unwrap_err(), WireError::Truncated);
    }

    /// A fixed header with next header `first`, then `rest`.
    fn packet(first: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        p[6] = first;
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn the_walk_finds_the_upper_layer_past_options_and_the_fragment_header() {
        // Hop-by-hop (8 bytes), destination options (16), fragment (offset
        // 0, more), then UDP.
        let mut rest = vec![kind::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[kind::FRAGMENT, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        rest.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 9]);
        rest.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0, 8, 0, 0]);
        let p = packet(kind::HOP_BY_HOP, &rest);
        let c = Chain::walk(&p, p.len()).unwrap();
        assert_eq!(c.header_len, 40 + 8 + 16 + 8);
        assert_eq!(c.next_header, 17);
        assert_eq!(c.fragment, Some(FragmentRepr { next_header: 17, offset: 0, more: true, ident: 9 }));
        // No extension header: the fixed header's next header.
        let plain = packet(6, &[0; 20]);
        assert_eq!(Chain::walk(&plain, plain.len()).unwrap(), Chain { header_len: 40, next_header: 6, fragment: None });
    }

    #[test]
    fn a_later_fragment_stops_the_walk_at_its_fragment_header() {
        // The first fragment has destination options after its fragment
        // header; in this one, what follows is data, though it would read
        // as an 8-byte options header.
        let p = packet(kind::FRAGMENT, &[kind::DEST_OPTS, 0, 0x05, 0xa8, 0, 0, 0, 1, 17, 0, 0, 0, 0, 0, 0, 0]);
        let c = Chain::walk(&p, p.len()).unwrap();
        assert_eq!((c.header_len, c.next_header), (48, kind::DEST_OPTS));
        assert_eq!(c.fragment.map(|f| (f.offset, f.more)), Some((1448, false)));
    }

    #[test]
    fn a_header_past_the_packet_is_malformed_and_a_long_chain_is_left_unread() {
        let p = packet(kind::DEST_OPTS, &[17, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Chain::walk(&p, p.len()).unwrap_err(), WireError::Malformed, "16 bytes claimed, 8 there");
        assert_eq!(Chain::walk(&p, p.len() + 1).unwrap_err(), WireError::Truncated, "total past the buffer");
        let one = [kind::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        let p = packet(kind::DEST_OPTS, &one.repeat(MAX_CHAIN + 1));
        let c = Chain::walk(&p, p.len()).unwrap();
        assert_eq!((c.header_len, c.next_header), (40 + 8 * MAX_CHAIN, kind::DEST_OPTS));
    }
}
