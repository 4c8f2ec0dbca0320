//! Next hops: what a route or label resolves to.

use super::ecmp::EcmpGroup;
use super::vif::VifIndex;
use crate::wire::{checksum, ip_proto, mpls, MacAddr};
use std::net::Ipv4Addr;

/// Next-hop id, chosen by the caller. Id 0 is always `Discard`, as in Contrail.
pub type NhId = u32;

/// The tunnel encapsulation of a `Tunnel` next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelEncap {
    /// MPLS over GRE (RFC 4023).
    MplsOverGre,
    /// MPLS over UDP (RFC 7510), destination port 6635.
    MplsOverUdp,
}

impl TunnelEncap {
    /// Outer IPv4 + GRE or UDP + MPLS: what encapsulation adds to an IP packet's length.
    pub const fn ip_overhead(self) -> usize {
        match self {
            TunnelEncap::MplsOverGre => 20 + 4 + mpls::HEADER_LEN,
            TunnelEncap::MplsOverUdp => 20 + 8 + mpls::HEADER_LEN,
        }
    }

    /// Name as operators type it.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelEncap::MplsOverGre => "mpls-o-gre",
            TunnelEncap::MplsOverUdp => "mpls-o-udp",
        }
    }
}

/// A tunnel to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The fabric vif it leaves by.
    pub oif: VifIndex,
    /// Encapsulation.
    pub encap: TunnelEncap,
    /// Outer source: this node's underlay address.
    pub sip: Ipv4Addr,
    /// Outer destination: the remote node's underlay address.
    pub dip: Ipv4Addr,
    /// MAC of the underlay next hop toward `dip`.
    pub dmac: MacAddr,
    /// One's-complement sum of the outer IPv4 header's constant words, so
    /// the per-packet checksum needs only the length and identification.
    pub(crate) ip_sum: u32,
}

impl Tunnel {
    /// A tunnel with its header sum precomputed.
    pub fn new(
        oif: VifIndex,
        encap: TunnelEncap,
        sip: Ipv4Addr,
        dip: Ipv4Addr,
        dmac: MacAddr,
    ) -> Self {
        let proto = match encap {
            TunnelEncap::MplsOverGre => ip_proto::GRE,
            TunnelEncap::MplsOverUdp => ip_proto::UDP,
        };
        // Version/IHL/DSCP, TTL/protocol, addresses; DF clear, offset zero.
        let mut acc = 0x4500u32 + ((u32::from(mpls::DEFAULT_TTL) << 8) | u32::from(proto));
        acc = checksum::sum(acc, &sip.octets());
        acc = checksum::sum(acc, &dip.octets());
        Tunnel {
            oif,
            encap,
            sip,
            dip,
            dmac,
            ip_sum: acc,
        }
    }
}

/// What a next hop does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// Drop, counted as `Discard`.
    Discard,
    /// Hand to the host stack.
    Receive,
    /// Deliver on a local vif with a new L2 header.
    Encap {
        /// Output vif.
        oif: VifIndex,
        /// Source MAC (the vrouter's).
        smac: MacAddr,
        /// Destination MAC (the pod's).
        dmac: MacAddr,
    },
    /// Encapsulate to a remote node.
    Tunnel(Tunnel),
    /// Pick a member by flow hash.
    Composite(EcmpGroup),
    /// Route the inner destination again, in another VRF.
    VrfLookup {
        /// The VRF to look in.
        vrf: u32,
    },
}

impl NextHop {
    /// Type name as `vrctl nh` shows it.
    pub fn type_name(&self) -> &'static str {
        match self {
            NextHop::Discard => "discard",
            NextHop::Receive => "receive",
            NextHop::Encap { .. } => "encap",
            NextHop::Tunnel(_) => "tunnel",
            NextHop::Composite(_) => "composite-ecmp",
            NextHop::VrfLookup { .. } => "vrf-lookup",
        }
    }
}
