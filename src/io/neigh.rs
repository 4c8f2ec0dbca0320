//! The kernel's neighbour table, read over rtnetlink: the MAC of the
//! underlay next hop toward a remote node, so that no MAC is configured by
//! hand. The fabric interface keeps its address in the kernel, which keeps
//! resolving it (ARP) as the node's own traffic needs.

use super::os_error;
use crate::wire::MacAddr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// States in which the entry's address can be used: reachable, stale,
/// delay, probe, noarp, permanent.
const USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// One usable IPv4 neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// The interface it is on.
    pub ifindex: u32,
}

/// Every usable IPv4 neighbour in this network namespace.
pub fn dump() -> io::Result<Vec<Neighbor>> {
    // SAFETY: a plain socket call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(os_error("netlink socket"));
    }
    // SAFETY: just returned to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // nlmsghdr (16 bytes) + ndmsg (12 bytes)
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&28u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_INET as u8;
    // SAFETY: `req` is a live buffer of the length passed.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(os_error("netlink request"));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(os_error("netlink reply"));
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= 16 {
            let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < 16 || len > msgs.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => return Err(io::Error::other("netlink error reply")),
                RTM_NEWNEIGH => {
                    if let Some(nb) = parse(&msgs[16..len]) {
                        out.push(nb);
                    }
                }
                _ => {}
            }
            msgs = &msgs[(len + 3) & !3..];
        }
    }
}

fn parse(m: &[u8]) -> Option<Neighbor> {
    if m.len() < 12 || m[0] != libc::AF_INET as u8 {
        return None;
    }
    let ifindex = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]) as u32;
    let state = u16::from_ne_bytes([m[8], m[9]]);
    if state & USABLE == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    let mut attrs = &m[12..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let v = &attrs[4..len];
        match (kind, v.len()) {
            (NDA_DST, 4) => ip = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (NDA_LLADDR, 6) => mac = Some(MacAddr([v[0], v[1], v[2], v[3], v[4], v[5]])),
            _ => {}
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Some(Neighbor { ip: ip?, mac: mac?, ifindex })
}

/// The MAC of `ip`, if the kernel knows it.
pub fn lookup(ip: Ipv4Addr) -> io::Result<Option<MacAddr>> {
    Ok(dump()?.into_iter().find(|n| n.ip == ip).map(|n| n.mac))
}

/// Makes the kernel resolve `ip`: one empty UDP datagram to the discard
/// port, which sends an ARP request if the address is not known yet.
pub fn probe(ip: Ipv4Addr) -> io::Result<()> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.send_to(&[], (ip, 9)).map(|_| ())
}
