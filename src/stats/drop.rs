//! The one list of reasons a frame is dropped.

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $key:literal, $contrail:literal;)*) => {
        /// Why a frame was dropped. Each reason is a counter; the same enum
        /// serves the pipeline, the stats, the API and the CLI.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, for the API, metrics and `--json`.
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$name => $key,)* }
            }

            /// True for input that was not a valid frame, which also counts
            /// as a receive error on the vif it came in on.
            pub const fn is_malformed_input(self) -> bool {
                matches!(
                    self,
                    DropReason::Truncated
                        | DropReason::InvalidPacket
                        | DropReason::ChecksumError
                        | DropReason::UnfinishedChecksum
                        | DropReason::InvalidArp
                        | DropReason::InvalidNd
                        | DropReason::BadTunnelHeader
                )
            }

            /// The closest counter in Tungsten Fabric's `dropstats`, for
            /// operators who know those names.
            pub const fn contrail_name(self) -> &'static str {
                match self { $(DropReason::$name => $contrail,)* }
            }

            /// The reason named `key` (`as_str`).
            pub fn from_key(key: &str) -> Option<DropReason> {
                Self::ALL.iter().copied().find(|r| r.as_str() == key)
            }

            /// What an operator can do where the cause lies outside
            /// vrouterd, for its log and `vrctl dropstats` to say.
            pub const fn remedy(self) -> Option<&'static str> {
                match self {
                    DropReason::UnfinishedChecksum => Some(
                        "a pod's interface offloads TX checksums, which vrouterd cannot carry out, so its \
                         connections and DNS lookups hang while ping works; turn the offload off in the pod \
                         (ethtool -K eth0 tx off)",
                    ),
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    /// The route or label resolved to a discard next hop.
    Discard => "discard", "Discard";
    /// No route in the VRF for the destination.
    NoRoute => "no_route", "Nowhere to go";
    /// What is for the sender's own link alone, which no router forwards:
    /// IPv6 multicast of interface- or link-local scope (a pod's MLD
    /// reports when its interface comes up, mDNS), IPv4's 224.0.0.0/24
    /// (IGMP reports, mDNS) and the limited broadcast. Harmless chatter,
    /// told apart from `no_route` so that it does not look like a routing
    /// fault.
    LinkLocal => "link_local", "Nowhere to go";
    /// The frame arrived on a vif that does not exist.
    InvalidIf => "invalid_if", "Invalid IF";
    /// The frame arrived on a disabled vif.
    IfDrop => "if_drop", "IF Drop";
    /// The output vif of the next hop does not exist or is disabled.
    IfTxDiscard => "if_tx_discard", "IF TX Discard";
    /// A malformed ARP message.
    InvalidArp => "invalid_arp", "Invalid ARP";
    /// An ARP message vrouter does not answer: a reply, a gratuitous ARP,
    /// or a request for an address the VRF does not route.
    ArpNotProxied => "arp_not_proxied", "Invalid ARP";
    /// A malformed neighbour discovery message.
    InvalidNd => "invalid_nd", "Invalid ARP";
    /// A neighbour solicitation vrouter does not answer (duplicate address
    /// detection, or an address the VRF does not route).
    NdNotProxied => "nd_not_proxied", "Invalid ARP";
    /// A pod sent from an address that is not its own: neither its vif's
    /// address nor one its VRF routes back to it (reverse path check).
    InvalidSource => "invalid_source", "Invalid Source";
    /// An EtherType or inner protocol vrouter does not forward.
    InvalidProtocol => "invalid_protocol", "Invalid Protocol";
    /// The frame is shorter than its headers say.
    Truncated => "truncated", "Pull fails";
    /// An IP header with impossible fields.
    InvalidPacket => "invalid_packet", "Invalid Packet";
    /// An IPv4 header checksum that does not verify, or a pod's TCP SYN
    /// whose checksum does not.
    ChecksumError => "checksum_error", "Checksum errors";
    /// A pod's TCP SYN or UDP datagram whose checksum was left for a NIC to
    /// finish: the pod's interface offloads TX checksums, which vrouterd
    /// cannot carry out (AF_XDP does not say which frames need it). Its
    /// segments and datagrams would all be dropped by their receiver; turn
    /// the offload off in the pod (`ethtool -K eth0 tx off`).
    /// `forward::pod_checksum`.
    UnfinishedChecksum => "unfinished_checksum", "Checksum errors";
    /// The next hop is missing or cannot be used.
    InvalidNh => "invalid_nh", "Invalid NH";
    /// A label with no entry in the label table, or a tunnel route without one.
    InvalidLabel => "invalid_label", "Invalid Label";
    /// A GRE or MPLS header vrouter does not accept (options, label stacks).
    BadTunnelHeader => "bad_tunnel_header", "Invalid Protocol";
    /// A tunnel packet addressed to another node.
    TunnelNotForUs => "tunnel_not_for_us", "Invalid underlay ECMP";
    /// TTL or hop limit ran out (an ICMP error is sent where one can be).
    TtlExceeded => "ttl_exceeded", "TTL Exceeded";
    /// Too big for the path with DF set, or IPv6: ICMP Fragmentation Needed
    /// or Packet Too Big was sent instead.
    MtuExceeded => "mtu_exceeded", "Mcast DF bit";
    /// Fragmenting failed: no spare buffer, or an outer tunnel fragment.
    FragmentError => "fragment_error", "Fragment errors";
    /// Not enough headroom in the buffer to prepend headers.
    PushFails => "push_fails", "Push fails";
    /// Too many VRF translations for one packet: a routing loop.
    PacketLoop => "packet_loop", "Packet Loop";
    /// The VRF's policy denies the flow.
    FlowActionDrop => "flow_action_drop", "Flow Action Drop";
    /// A new flow found the flow table full.
    FlowTableFull => "flow_table_full", "Flow Table Full";
    /// A new flow's vif or VRF is at its flow limit.
    FlowLimit => "flow_limit", "New Flow Drops";
    /// A packet to a floating IP that forwards some ports (TCP or UDP, each
    /// to a port of its pod), not this one: no pair is made for it.
    PortNotForwarded => "port_not_forwarded", "Flow Action Drop";
    /// A fragment waited for its datagram's first fragment, which did not
    /// come in time (`pipeline::hold`).
    NoFragEntry => "no_frag_entry", "No Frag Entry";
    /// A fragment that came before its datagram's first found no room to
    /// wait for it.
    FragmentQueueFull => "fragment_queue_full", "Fragment Queueing Failures";
    /// A frame that came in several buffers (a jumbo frame) longer than a
    /// worker puts together (`io::jumbo::LONGEST`): longer than any vif's
    /// MTU may be.
    FrameTooLong => "frame_too_long", "Invalid Packet";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
