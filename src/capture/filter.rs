//! Which frames a capture keeps: by address, port and protocol, as `vrctl
//! flow list --match` picks flows, applied by the worker before it copies,
//! so that a capture of a busy vif (the fabric) copies only what it is
//! after, and keeps up.

use super::dissect::innermost;
use std::net::IpAddr;

/// One endpoint: an address, a port, or both (`None`: any).
pub type Endpoint = (Option<IpAddr>, Option<u16>);

/// A capture's filter. A frame matches when the packet it carries (the one
/// inside its tunnel, for a tunnelled frame: what a pod sent or is sent)
/// goes from `one` to `peer` or from `peer` to `one`, with protocol
/// `proto`. Ports are those of TCP and UDP; a frame that is not IP, or a
/// later fragment, has none to match, and matches only a filter that asks
/// for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// Either end.
    pub one: Endpoint,
    /// The other end.
    pub peer: Endpoint,
    /// IP protocol.
    pub proto: Option<u8>,
}

impl Filter {
    /// True if it asks for nothing: every frame matches.
    pub fn is_any(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `frame` matches.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(ip) = innermost(frame) else { return false };
        self.matches_ends(ip.proto, ip.src, ip.dst, ip.ports())
    }

    /// Whether a packet or flow of protocol `proto` from `src` to `dst`
    /// matches, with its source and destination `ports` (`None`: it has
    /// none, and matches no filter that asks for a port). `flow.list`
    /// picks flows by it too.
    pub fn matches_ends(&self, proto: u8, src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> bool {
        if self.proto.is_some_and(|p| p != proto) {
            return false;
        }
        let wants_port = self.one.1.is_some() || self.peer.1.is_some();
        let Some((sport, dport)) = ports.or((!wants_port).then_some((0, 0))) else { return false };
        let is = |(ip, port): Endpoint, at: IpAddr, on: u16| {
            ip.is_none_or(|want| want == at) && port.is_none_or(|want| want == on)
        };
        is(self.one, src, sport) && is(self.peer, dst, dport) || is(self.one, dst, dport) && is(self.peer, src, sport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::build::{self, L2};
    use crate::wire::ethernet::MacAddr;
    use crate::wire::ip_proto;
    use std::net::Ipv4Addr;

    const A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

    fn l2() -> L2 {
        L2 { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]) }
    }

    fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        build::udp4_frame(l2(), src, dst, sport, dport, 64, 64)
    }

    /// `inner` wrapped in MPLS over UDP between two nodes, as vrouterd sends it.
    fn tunnelled(inner: &[u8]) -> Vec<u8> {
        let (n1, n2) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        let to_6635 = build::Tunnel::Udp(crate::tables::nexthop::MPLS_UDP_PORT);
        build::mpls_tunnel_frame(l2(), to_6635, n1, n2, 16, 64, 50000, &inner[14..])
    }

    #[test]
    fn endpoints_match_either_way_round() {
        let f = Filter { one: (Some(A.into()), Some(80)), ..Filter::default() };
        assert!(f.matches(&udp(A, B, 80, 5000)));
        assert!(f.matches(&udp(B, A, 5000, 80)), "the answer too");
        assert!(!f.matches(&udp(A, B, 81, 80)), "A's port is not 80");
        let between = Filter { one: (Some(A.into()), None), peer: (Some(B.into()), Some(53)), proto: None };
        assert!(between.matches(&udp(A, B, 1000, 53)) && between.matches(&udp(B, A, 53, 1000)));
        assert!(!between.matches(&udp(A, B, 53, 1000)), "B's port is not 53");
        assert!(!between.matches(&udp(A, A, 1000, 53)));
    }

    #[test]
    fn a_tunnelled_frame_matches_by_the_packet_inside() {
        let f = Filter { one: (Some(B.into()), Some(5000)), proto: Some(ip_proto::UDP), ..Filter::default() };
        assert!(f.matches(&tunnelled(&udp(A, B, 40000, 5000))));
        assert!(!f.matches(&tunnelled(&udp(A, B, 40000, 5001))));
        let outer = Filter { one: (Some(Ipv4Addr::new(192, 0, 2, 1).into()), None), ..Filter::default() };
        assert!(!outer.matches(&tunnelled(&udp(A, B, 1, 2))), "not by the tunnel's own addresses");
    }

    #[test]
    fn protocol_and_what_has_no_ports() {
        let tcp = Filter { proto: Some(ip_proto::TCP), ..Filter::default() };
        assert!(!tcp.matches(&udp(A, B, 1, 2)));
        let ping = build::ip_frame(l2(), &build::ipv4(A, B, ip_proto::ICMP, 64, false, &[8, 0, 0, 0, 0, 1, 0, 1]));
        let port = Filter { one: (None, Some(1)), ..Filter::default() };
        assert!(!port.matches(&ping), "ICMP has no ports");
        assert!(Filter { one: (Some(A.into()), None), ..Filter::default() }.matches(&ping));
        assert!(Filter::default().matches(&[0u8; 3]), "no filter: everything, even a runt");
        assert!(!port.matches(&[0u8; 3]));
    }
}
