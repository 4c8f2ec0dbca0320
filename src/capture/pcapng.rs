//! A pcapng writer (draft-ietf-opsawg-pcapng), for what `vrctl vifdump`
//! captures: one section, one Ethernet interface (the vif), and each frame
//! as an Enhanced Packet Block that carries its direction (`epb_flags`) and,
//! for a received frame, what vrouterd did with it as a comment. tcpdump,
//! tshark and Wireshark read it; classic pcap has no room for either.

use super::Direction;
use std::io::{self, Write};

mod block {
    pub const SECTION_HEADER: u32 = 0x0a0d_0d0a;
    pub const INTERFACE: u32 = 0x0000_0001;
    pub const ENHANCED_PACKET: u32 = 0x0000_0006;
}

mod option {
    pub const END: u16 = 0;
    pub const COMMENT: u16 = 1;
    pub const IF_NAME: u16 = 2;
    pub const IF_TSRESOL: u16 = 9;
    pub const EPB_FLAGS: u16 = 2;
}

const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const LINKTYPE_ETHERNET: u16 = 1;
/// Timestamps in nanoseconds (10^-9).
const TSRESOL_NANOSECONDS: u8 = 9;

/// Writes a pcapng stream, one block per call, each with one `write_all`.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Starts the stream: the section header, and the interface, named
    /// `interface` (as `vif0/3 (tap1)`), whose frames are cut at `snaplen`.
    pub fn new(mut out: W, interface: &str, snaplen: u32) -> io::Result<Writer<W>> {
        let mut shb = Vec::new();
        put_u32(&mut shb, BYTE_ORDER_MAGIC);
        put_u16(&mut shb, 1);
        put_u16(&mut shb, 0);
        shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        out.write_all(&framed(block::SECTION_HEADER, &shb))?;

        let mut idb = Vec::new();
        put_u16(&mut idb, LINKTYPE_ETHERNET);
        put_u16(&mut idb, 0);
        put_u32(&mut idb, snaplen);
        put_option(&mut idb, option::IF_NAME, interface.as_bytes());
        put_option(&mut idb, option::IF_TSRESOL, &[TSRESOL_NANOSECONDS]);
        put_option(&mut idb, option::END, &[]);
        out.write_all(&framed(block::INTERFACE, &idb))?;
        Ok(Writer { out })
    }

    /// Writes one frame: `data` as kept, `len` as it was on the wire, at
    /// `time_ns` since the Unix epoch, with a `comment` if given.
    pub fn packet(
        &mut self,
        time_ns: u64,
        direction: Direction,
        len: u32,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        let mut epb = Vec::with_capacity(data.len() + 64);
        put_u32(&mut epb, 0); // the interface
        put_u32(&mut epb, (time_ns >> 32) as u32);
        put_u32(&mut epb, time_ns as u32);
        put_u32(&mut epb, data.len() as u32);
        put_u32(&mut epb, len);
        epb.extend_from_slice(data);
        pad(&mut epb);
        // Bits 0-1 of epb_flags: 1 inbound, 2 outbound.
        let flags: u32 = match direction {
            Direction::In => 1,
            Direction::Out => 2,
        };
        put_option(&mut epb, option::EPB_FLAGS, &flags.to_le_bytes());
        if let Some(c) = comment {
            put_option(&mut epb, option::COMMENT, c.as_bytes());
        }
        put_option(&mut epb, option::END, &[]);
        self.out.write_all(&framed(block::ENHANCED_PACKET, &epb))
    }

    /// Flushes what was written, so that a reader at the other end of a
    /// pipe sees each frame as it comes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A block: its type, its total length before and after the body.
fn framed(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    put_u32(&mut b, kind);
    put_u32(&mut b, total);
    b.extend_from_slice(body);
    put_u32(&mut b, total);
    b
}

fn put_option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    put_u16(b, code);
    put_u16(b, value.len() as u16);
    b.extend_from_slice(value);
    pad(b);
}

fn pad(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(4), 0);
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_a_packet_golden_bytes() {
        let mut w = Writer::new(Vec::new(), "vif0/3", 2048).unwrap();
        w.packet(0x0000_0001_0000_0002, Direction::In, 60, &[0xde, 0xad, 0xbe], Some("tx 1")).unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            // Section header block: 28 bytes.
            0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0,
            0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            28, 0, 0, 0,
            // Interface description block: Ethernet, snaplen 2048,
            // if_name "vif0/3", if_tsresol 9, end.
            1, 0, 0, 0, 44, 0, 0, 0,
            1, 0, 0, 0, 0, 8, 0, 0,
            2, 0, 6, 0, b'v', b'i', b'f', b'0', b'/', b'3', 0, 0,
            9, 0, 1, 0, 9, 0, 0, 0,
            0, 0, 0, 0,
            44, 0, 0, 0,
            // Enhanced packet block: interface 0, time 1:2, 3 of 60 bytes
            // kept, the data padded, epb_flags inbound, a comment, end.
            6, 0, 0, 0, 56, 0, 0, 0,
            0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 60, 0, 0, 0,
            0xde, 0xad, 0xbe, 0,
            2, 0, 4, 0, 1, 0, 0, 0,
            1, 0, 4, 0, b't', b'x', b' ', b'1',
            0, 0, 0, 0,
            56, 0, 0, 0,
        ];
        assert_eq!(w.out, want);
    }

    #[test]
    fn an_outbound_frame_without_a_comment() {
        let mut w = Writer::new(Vec::new(), "x", 64).unwrap();
        let start = w.out.len();
        w.packet(5, Direction::Out, 4, &[1, 2, 3, 4], None).unwrap();
        let epb = &w.out[start..];
        assert_eq!(epb.len(), 12 + 20 + 4 + 8 + 4);
        assert_eq!(&epb[32..40], &[2, 0, 4, 0, 2, 0, 0, 0], "epb_flags outbound");
        assert_eq!(&epb[epb.len() - 4..], &(epb.len() as u32).to_le_bytes());
    }
}
