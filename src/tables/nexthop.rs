//! Next hops: what a route or label resolves to.

use super::ecmp::EcmpGroup;
use super::vif::VifIndex;
use crate::wire::{checksum, ip_proto, mpls, EtherType, MacAddr};

/// IANA's port for MPLS over UDP (RFC 7510).
pub const MPLS_UDP_PORT: u16 = 6635;
/// Tungsten Fabric's legacy MPLS-over-UDP port, accepted on receive.
pub const MPLS_UDP_LEGACY_PORT: u16 = 51234;
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
    /// The outer headers as far as they are the same for every packet:
    /// Ethernet (but the source MAC, which is the fabric vif's), IPv4, GRE
    /// or UDP, room for the label. Encapsulation copies it and fills in the
    /// rest.
    pub(crate) template: [u8; TEMPLATE_LEN],
    /// One's-complement sum of the outer IPv4 header's constant words, so
    /// the per-packet checksum needs only the length and identification.
    pub(crate) ip_sum: u32,
}

/// Whether `a` could be a node's underlay address, a tunnel's end: not
/// unspecified, loopback, multicast or broadcast, which a tunnel's packets
/// could not be sent from or to.
pub fn is_tunnel_endpoint(a: Ipv4Addr) -> bool {
    super::vif::station_address_problem(a.into()).is_none()
}

/// Longest tunnel header: Ethernet, IPv4, UDP, MPLS.
pub(crate) const TEMPLATE_LEN: usize = 14 + 20 + 8 + 4;

impl Tunnel {
    /// A tunnel with its header sum precomputed.
    pub fn new(oif: VifIndex, encap: TunnelEncap, sip: Ipv4Addr, dip: Ipv4Addr, dmac: MacAddr) -> Self {
        let proto = match encap {
            TunnelEncap::MplsOverGre => ip_proto::GRE,
            TunnelEncap::MplsOverUdp => ip_proto::UDP,
        };
        // Version/IHL/DSCP, TTL/protocol, addresses; DF clear, offset zero.
        let mut acc = 0x4500u32 + ((u32::from(mpls::DEFAULT_TTL) << 8) | u32::from(proto));
        acc = checksum::sum(acc, &sip.octets());
        acc = checksum::sum(acc, &dip.octets());
        let mut t = [0u8; TEMPLATE_LEN];
        t[0..6].copy_from_slice(&dmac.0);
        t[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
        t[14] = 0x45;
        t[22] = mpls::DEFAULT_TTL;
        t[23] = proto;
        t[26..30].copy_from_slice(&sip.octets());
        t[30..34].copy_from_slice(&dip.octets());
        match encap {
            TunnelEncap::MplsOverGre => t[34..38].copy_from_slice(&[0, 0, 0x88, 0x47]),
            TunnelEncap::MplsOverUdp => t[36..38].copy_from_slice(&MPLS_UDP_PORT.to_be_bytes()),
        }
        Tunnel { oif, encap, sip, dip, dmac, template: t, ip_sum: acc }
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
    /// True for an ECMP composite: a VRF with routes to one tracks flows,
    /// to pin their members (`Vrf::ecmp_routes`).
    #[inline]
    pub fn is_composite(&self) -> bool {
        matches!(self, NextHop::Composite(_))
    }

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
