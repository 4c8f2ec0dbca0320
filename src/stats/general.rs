//! Why the fast lane left a frame to the general path.
//!
//! The general path takes every frame the fast lane did not, and is right
//! for all of them; it is also several times slower (`vrpktgen pipeline
//! --general-path`). Steady traffic that lands there is a performance bug,
//! and each one found so far was a class of plain traffic the lane refused
//! (a floating-IP pod's own flows, a service's answers from its address).
//! The count by cause says which class, the way VPP's per-node error
//! counters do, without a packet capture.

macro_rules! general_causes {
    ($($(#[doc = $doc:literal])* $name:ident => $key:literal;)*) => {
        /// Why the fast lane left a frame to the general path: the first
        /// of its checks the frame failed, in the order the lane makes them.
        /// Each cause is a counter of the worker's (`Pipeline::general_causes`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum GeneralCause {
            $($(#[doc = $doc])* $name,)*
        }

        impl GeneralCause {
            /// Every cause, in counter order.
            pub const ALL: &'static [GeneralCause] = &[$(GeneralCause::$name,)*];
            /// Number of causes.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, for the API, metrics and `--json`.
            pub const fn as_str(self) -> &'static str {
                match self { $(GeneralCause::$name => $key,)* }
            }

            /// The cause named `key` (`as_str`).
            pub fn from_key(key: &str) -> Option<GeneralCause> {
                Self::ALL.iter().copied().find(|c| c.as_str() == key)
            }
        }
    };
}

general_causes! {
    /// The fast path is turned off (`fast_path = false`), or the frame's
    /// vif is disabled or gone.
    FastPathOff => "fast_path_off";
    /// From a vif the lane does not serve (the host's, the agent's), or in
    /// a vector that began with another vif's frames.
    OtherVif => "other_vif";
    /// ARP: answered or learnt on the general path.
    Arp => "arp";
    /// IPv6 the lane's IPv6 pass does not take: extension headers, a hop
    /// limit of 1, a SYN, DHCPv6, neighbour discovery, multicast, another
    /// source than the pod's own; a new flow, or one decided under an
    /// older policy; a next hop it does not carry out, a packet too big
    /// for it.
    Ipv6 => "ipv6";
    /// Any other Ethernet type (a VLAN tag, LLDP, ...).
    OtherEthertype => "other_ethertype";
    /// An IPv4 header the lane does not take: options, a wrong checksum or
    /// length, too short a packet.
    Ipv4Header => "ipv4_header";
    /// An IP fragment: reassembled flows are looked up on the general path.
    Fragment => "fragment";
    /// A TTL of 1 or less: the general path answers with an ICMP error.
    TtlExpiry => "ttl_expiry";
    /// A TCP SYN: its MSS is clamped, and its flow made, on the general path.
    TcpSyn => "tcp_syn";
    /// DHCP, to the server vrouterd answers as.
    Dhcp => "dhcp";
    /// A pod's packet from an address that is neither its own nor one its
    /// VRF routes back to it: the general path's reverse path check drops it.
    Source => "source";
    /// From the fabric, IPv4 that is not MPLS over UDP or GRE: the host's.
    NotTunnel => "not_tunnel";
    /// A tunnel packet the lane does not take: malformed, not to this node,
    /// or a label it does not carry (unknown, or not to a pod or a VRF).
    Tunnel => "tunnel";
    /// A protocol flows do not key in a VRF that tracks them (an ICMP error,
    /// GRE, SCTP): the general path finds its flow, or tracks none.
    Protocol => "protocol";
    /// The first packet of a flow the table does not hold: the general path
    /// judges it by policy and makes the flow. (Told by the lane's probe:
    /// a key with no tag in its first bucket, where nearly every key lives.)
    NewFlow => "new_flow";
    /// A flow the lane may not carry out: its decision is to be made again
    /// (its policy changed), or it drops or rewrites where only the general
    /// path does (a floating IP's, a pair across networks).
    FlowDecision => "flow_decision";
    /// No route, or a discard route: the general path drops it and says why.
    NoRoute => "no_route";
    /// To the node itself (its `receive` routes: the gateway's address, the
    /// host's): answered or handed to the host on the general path.
    Local => "local";
    /// Too big for the vif it leaves by, with the tunnel's headers: the
    /// general path fragments it, or answers "fragmentation needed". A
    /// steady count here is a pod MTU larger than the fabric's less the
    /// tunnel's overhead.
    Mtu => "mtu";
    /// A frame, and its flow if it has one, that the lane accepted, but whose
    /// next hop it does not carry out: a vif down, a route into another
    /// VRF, an ECMP member to pin again, a tunnel without a label.
    NextHop => "next_hop";
}

#[cfg(test)]
mod tests {
    use super::GeneralCause;

    #[test]
    fn each_cause_has_its_own_name_and_is_found_by_it() {
        for (i, c) in GeneralCause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "counter order");
            assert_eq!(GeneralCause::from_key(c.as_str()), Some(*c));
            assert!(
                c.as_str().chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{}",
                c.as_str()
            );
        }
        assert_eq!(GeneralCause::from_key("nothing"), None);
    }
}
