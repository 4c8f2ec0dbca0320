//! Per-vif packet capture: Contrail's `vifdump`.
//!
//! tcpdump on a pod's veth does not see what the XDP program redirects to
//! vrouterd, and on the fabric NIC it sees none of the tunnelled frames
//! vrouterd takes: only vrouterd sees its vifs' traffic. Workers copy a
//! watched vif's frames into the `tap` (received ones with what vrouterd
//! did with them); the API drains it (`capture.read`); `vrctl vifdump`
//! prints each frame in a line (`summary`) or writes pcapng (`pcapng`).

mod dissect;
mod filter;
pub mod pcapng;
mod summary;
mod tap;

pub use filter::Filter;
pub use summary::summary;

pub use tap::{
    now_ns, Captured, Direction, Session, Staged, StartError, Tap, MAX_SNAPLEN, RING as SESSION_FRAMES, SESSIONS,
};

/// `data` in lowercase hex, as `capture.read` carries frames.
pub fn to_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of `hex` (`to_hex`), or `None` if it is not an even number
/// of hex digits.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let h = hex.as_bytes();
    if h.len() % 2 != 0 {
        return None;
    }
    h.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_ways() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(from_hex("000fA5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
