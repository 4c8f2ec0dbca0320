//! rtnetlink: the kernel's neighbour table, its links, and how XDP is
//! attached to a link. The neighbour table gives the MAC of the underlay
//! next hop toward a remote node, so that no MAC is configured by hand
//! (the fabric interface keeps its address in the kernel, which keeps
//! resolving it, ARP, as the node's own traffic needs). The links tell the
//! daemon which interfaces are there, and which are up with a carrier.

use super::os_error;
use crate::wire::MacAddr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
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

/// A netlink route socket of our own.
fn route_socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the result is checked.
    let raw =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(os_error("netlink socket"));
    }
    // SAFETY: just returned to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The kernel's news of links: a link added, deleted, or changed (up,
/// down, carrier, MTU, name), so that ports follow their interfaces at
/// once rather than at the next periodic look.
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    /// Subscribes to the link group (RTMGRP_LINK) of this network namespace.
    pub fn open() -> io::Result<LinkEvents> {
        const RTMGRP_LINK: u32 = 1;
        let fd = route_socket(libc::SOCK_NONBLOCK)?;
        // SAFETY: all-zero is a valid sockaddr_nl; the fields set are plain integers.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` is a live sockaddr_nl of the length passed.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
            return Err(os_error("netlink link events"));
        }
        Ok(LinkEvents { fd })
    }

    /// True if any link changed since the last call (or so many did that
    /// the kernel dropped some news: ENOBUFS). Takes all the news there
    /// is; never waits.
    pub fn changed(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                any = true;
                continue;
            }
            return any;
        }
    }
}

/// Sends one rtnetlink request and calls `each` with the payload of every
/// message of type `want` in the reply, until the kernel says done (dumps)
/// or the first reply arrives (single requests).
fn request(kind: u16, flags: u16, body: &[u8], want: u16, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let fd = route_socket(0)?;
    let total = 16 + body.len();
    let mut req = vec![0u8; total];
    req[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16..].copy_from_slice(body);
    // SAFETY: `req` is a live buffer of the length passed.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(os_error("netlink request"));
    }
    let dump = flags & NLM_F_DUMP != 0;
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
            let t = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < 16 || len > msgs.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message"));
            }
            match t {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => return Err(io::Error::other("netlink error reply")),
                t if t == want => each(&msgs[16..len]),
                _ => {}
            }
            msgs = &msgs[((len + 3) & !3).min(msgs.len())..];
        }
        if !dump {
            return Ok(());
        }
    }
}

/// The rtattrs of a message body after a fixed header of `skip` bytes.
fn attrs(m: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = m.get(skip..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            return None;
        }
        let v = &rest[4..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some((kind & 0x3fff, v))
    })
}

/// One network interface, as the kernel has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index, which a deleted and remade interface of the same name
    /// does not keep.
    pub ifindex: u32,
    /// Its name.
    pub name: String,
    /// Set up by an administrator (`ip link set NAME up`: IFF_UP).
    pub up: bool,
    /// It has a carrier (IFF_LOWER_UP): for a veth, its peer is up too.
    /// The kernel sends nothing on a link without one.
    pub carrier: bool,
    /// Its MTU (0 if the kernel did not say).
    pub mtu: u32,
    /// Its MAC, if it has an Ethernet one.
    pub mac: Option<MacAddr>,
}

impl Link {
    /// The link's state as `vrctl vif` shows it for an open port: "up",
    /// "link down" (set down) or "no carrier" (up, its other end not).
    pub fn state(&self) -> &'static str {
        match (self.up, self.carrier) {
            (false, _) => "link down",
            (true, false) => "no carrier",
            (true, true) => "up",
        }
    }
}

/// Every network interface in this network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let mut body = [0u8; 16]; // ifinfomsg
    body[0] = libc::AF_UNSPEC as u8;
    dump(RTM_GETLINK, &body, RTM_NEWLINK, parse_link)
}

/// A dump request (`kind`, with its header `body`): what `parse` makes of
/// each reply of type `want`, where it makes something.
fn dump<T>(kind: u16, body: &[u8], want: u16, parse: fn(&[u8]) -> Option<T>) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    request(kind, NLM_F_DUMP, body, want, |m| out.extend(parse(m)))?;
    Ok(out)
}

/// An RTM_NEWLINK message's body: `ifinfomsg` (family, type, index,
/// flags, change mask) and its attributes, of which the name is the one
/// needed, the MTU and MAC kept where given.
fn parse_link(m: &[u8]) -> Option<Link> {
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    const IFF_UP: u32 = 0x1;
    const IFF_LOWER_UP: u32 = 0x1_0000;
    let ifindex = i32::from_ne_bytes(m.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(m.get(8..12)?.try_into().ok()?);
    let (mut name, mut mtu, mut mac) = (None, 0, None);
    for (kind, v) in attrs(m, 16) {
        match (kind, v.len()) {
            // The name comes NUL-terminated.
            (IFLA_IFNAME, _) => name = v.split(|b| *b == 0).next(),
            (IFLA_MTU, 4) => mtu = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            (IFLA_ADDRESS, 6) => mac = Some(MacAddr([v[0], v[1], v[2], v[3], v[4], v[5]])),
            _ => {}
        }
    }
    Some(Link {
        ifindex: u32::try_from(ifindex).ok()?,
        name: String::from_utf8_lossy(name?).into_owned(),
        up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        mtu,
        mac,
    })
}

/// How the XDP program on interface `ifindex` is attached, as the kernel
/// reports it: `Some("native")`, `Some("generic")`, `Some("offload")`, or
/// `None` for none.
pub fn xdp_attached(ifindex: u32) -> io::Result<Option<&'static str>> {
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_ATTACHED: u16 = 2;
    let mut body = [0u8; 16]; // ifinfomsg
    body[0] = libc::AF_UNSPEC as u8;
    body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    let mut mode = None;
    request(RTM_GETLINK, 0, &body, RTM_NEWLINK, |m| {
        for (k, v) in attrs(m, 16) {
            if k == IFLA_XDP {
                for (k2, v2) in attrs(v, 0) {
                    if k2 == IFLA_XDP_ATTACHED && !v2.is_empty() {
                        mode = match v2[0] {
                            1 => Some("native"),
                            2 => Some("generic"),
                            3 => Some("offload"),
                            4 => Some("multiple"),
                            _ => None,
                        };
                    }
                }
            }
        }
    })?;
    Ok(mode)
}

/// Every usable IPv4 neighbour in this network namespace.
pub fn neighbors() -> io::Result<Vec<Neighbor>> {
    let mut body = [0u8; 12]; // ndmsg
    body[0] = libc::AF_INET as u8;
    dump(RTM_GETNEIGH, &body, RTM_NEWNEIGH, parse_neighbor)
}

fn parse_neighbor(m: &[u8]) -> Option<Neighbor> {
    if m.len() < 12 || m[0] != libc::AF_INET as u8 {
        return None;
    }
    let ifindex = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]) as u32;
    let state = u16::from_ne_bytes([m[8], m[9]]);
    if state & USABLE == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for (kind, v) in attrs(m, 12) {
        match (kind, v.len()) {
            (NDA_DST, 4) => ip = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (NDA_LLADDR, 6) => mac = Some(MacAddr([v[0], v[1], v[2], v[3], v[4], v[5]])),
            _ => {}
        }
    }
    Some(Neighbor { ip: ip?, mac: mac?, ifindex })
}

/// Makes the kernel resolve `ip`: one empty UDP datagram to the discard
/// port, which sends an ARP request if the address is not known yet.
pub fn probe(ip: Ipv4Addr) -> io::Result<()> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.send_to(&[], (ip, 9)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWLINK body: ifinfomsg, then IFLA_MTU, IFLA_ADDRESS and
    /// IFLA_IFNAME.
    fn newlink(index: i32, flags: u32, name: &str) -> Vec<u8> {
        let mut m = vec![0u8; 16];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        m[8..12].copy_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&4u16.to_ne_bytes()); // IFLA_MTU
        m.extend_from_slice(&1500u32.to_ne_bytes());
        m.extend_from_slice(&10u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes()); // IFLA_ADDRESS, padded to 4
        m.extend_from_slice(&[2, 0, 0, 0, 0, 0x11, 0, 0]);
        let len = 4 + name.len() + 1;
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&3u16.to_ne_bytes()); // IFLA_IFNAME
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn a_link_s_name_index_and_state_come_from_its_message() {
        // IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST | IFF_LOWER_UP
        let l = parse_link(&newlink(7, 0x1_1043, "t-a1")).unwrap();
        assert_eq!((l.ifindex, l.name.as_str(), l.up, l.carrier, l.mtu), (7, "t-a1", true, true, 1500));
        assert_eq!(l.mac, Some(MacAddr([2, 0, 0, 0, 0, 0x11])));
        assert_eq!(l.state(), "up");
        // Set up, its veth peer down: no carrier.
        assert_eq!(parse_link(&newlink(7, 0x1003, "t-a1")).unwrap().state(), "no carrier");
        assert_eq!(parse_link(&newlink(7, 0x1002, "t-a1")).unwrap().state(), "link down");
    }

    #[test]
    fn a_short_or_nameless_link_message_is_no_link() {
        let m = newlink(7, 1, "x");
        for cut in [0, 8, 15] {
            assert_eq!(parse_link(&m[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse_link(&m[..16]), None, "no name");
        assert_eq!(parse_link(&newlink(-1, 1, "x")), None, "a negative index");
    }

    #[test]
    fn the_namespace_s_links_include_its_loopback() {
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("every namespace has lo");
        assert_eq!(crate::io::ifindex("lo").unwrap(), lo.ifindex);
    }
}
