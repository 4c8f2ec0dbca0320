//! Packet headers as zero-copy views over byte buffers.
//!
//! Every protocol follows the same shape, after smoltcp's `wire` module:
//! - `Packet<T: AsRef<[u8]>>` is a view over a buffer. `new_checked` validates
//!   the length once, so no accessor can panic afterwards. Field byte ranges
//!   live in one `mod field`. Setters need `T: AsMut<[u8]>`.
//! - `Repr` is a plain struct with `parse`, `emit` and `buffer_len`, for
//!   control code and tests. The per-packet path uses `Packet` directly.
//!
//! Nothing here allocates.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ipv6ext;
pub mod mpls;
pub mod tcp;
pub mod udp;

pub use ethernet::{EtherType, MacAddr};

/// Why a buffer could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header says it is.
    Truncated,
    /// A field holds a value this header cannot have.
    Malformed,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "buffer shorter than the header",
            WireError::Malformed => "malformed header field",
        })
    }
}

impl std::error::Error for WireError {}

/// Result of parsing a header.
pub type Result<T> = core::result::Result<T, WireError>;

/// IP protocol numbers vrouter looks at.
pub mod ip_proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 fragment extension header.
    pub const IPV6_FRAGMENT: u8 = 44;
}

#[inline(always)]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
