//! Virtual interfaces: every port vrouter forwards between.

use crate::wire::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Vif index, chosen by the caller as in Contrail (`vif0/N`).
pub type VifIndex = u32;

/// What sits behind a vif. It decides how the pipeline treats what arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VifKind {
    /// The fabric NIC: tunnels to and from other nodes arrive here.
    Fabric,
    /// A pod or VM.
    Virtual,
    /// The node's own stack (vhost0 in Contrail).
    Host,
    /// The trap path to the agent (pkt0 in Contrail).
    Agent,
}

impl VifKind {
    /// Lower-case name as operators type it.
    pub fn as_str(self) -> &'static str {
        match self {
            VifKind::Fabric => "fabric",
            VifKind::Virtual => "virtual",
            VifKind::Host => "host",
            VifKind::Agent => "agent",
        }
    }
}

/// A vif's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// Index.
    pub index: VifIndex,
    /// Interface name on the host (`veth…`, `eth0`).
    pub name: String,
    /// Kind.
    pub kind: VifKind,
    /// The VRF its traffic is routed in.
    pub vrf: u32,
    /// Its MAC: for a pod, the pod's; for the fabric, the NIC's.
    pub mac: MacAddr,
    /// IPv4 address: the pod's, or the node's underlay address on the fabric.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// MTU of the link, in bytes of IP packet.
    pub mtu: u16,
    /// Behaviour flags.
    pub flags: VifFlags,
    /// Floating IPs: public addresses, each in a public VRF, that traffic
    /// reaches this vif by, NATed to its own address.
    pub floating: Vec<FloatingIp>,
}

/// A floating IP of a vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    /// The public address.
    pub address: Ipv4Addr,
    /// The VRF it lives in.
    pub vrf: u32,
    /// Its forwarded ports. Empty: every packet to the address reaches the
    /// pod, its ports unchanged. Otherwise only TCP and UDP to these do,
    /// each to its target port (Contrail's floating IP port mappings,
    /// OpenStack's port forwarding, a Kubernetes service's port and target
    /// port); the rest is dropped.
    pub ports: Vec<PortMap>,
}

/// At most this many forwarded ports a floating IP.
pub const MAX_PORT_MAPS: usize = 16;

/// The MTUs a vif may have: IPv4's least, and the largest jumbo frames
/// switches carry (`io::jumbo` receives frames of them whole).
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 68..=9216;

/// A forwarded port of a floating IP: `port` of the floating IP, for
/// protocol `proto` (TCP or UDP), reaches the pod's `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// The floating IP's port.
    pub port: u16,
    /// The pod's port it reaches.
    pub target: u16,
}

/// Whether Linux would take `name` for an interface (the kernel's
/// `dev_valid_name`): 1 to 15 bytes, not `.` or `..`, and no `/`, `:` or
/// white space. The reason, if not.
pub fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than the 15 bytes an interface name has")
    } else if name == "." || name == ".." {
        Some("not an interface name")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some("an interface name has no '/', ':' or white space")
    } else {
        None
    }
}

/// Whether a station (a pod, a node, a gateway) could have address `a`:
/// not unspecified, loopback, multicast or broadcast, which no packet
/// could be answered from. The reason, if not.
pub fn station_address_problem(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        a if a.is_unspecified() => Some("unspecified"),
        a if a.is_loopback() => Some("a loopback address"),
        a if a.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// Whether a floating IP's forwarded ports can be used: TCP or UDP, no
/// port 0, each of the floating IP's ports once, at most `MAX_PORT_MAPS`.
pub fn check_port_maps(maps: &[PortMap]) -> Result<(), String> {
    if maps.len() > MAX_PORT_MAPS {
        return Err(format!("{} forwarded ports; at most {MAX_PORT_MAPS}", maps.len()));
    }
    for (i, m) in maps.iter().enumerate() {
        if m.proto != crate::wire::ip_proto::TCP && m.proto != crate::wire::ip_proto::UDP {
            return Err(format!("port map {i}: protocol {} is neither TCP nor UDP", m.proto));
        }
        if m.port == 0 || m.target == 0 {
            return Err(format!("port map {i}: port 0"));
        }
        if maps[..i].iter().any(|o| (o.proto, o.port) == (m.proto, m.port)) {
            return Err(format!("port map {i}: port {} is forwarded twice", m.port));
        }
    }
    Ok(())
}

/// Where a floating IP takes a packet to one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortForward {
    /// To the pod, the port unchanged: the floating IP forwards no ports
    /// in particular.
    Same,
    /// To the pod's port.
    To(u16),
    /// Nowhere: the floating IP forwards some ports, not this one.
    Closed,
}

impl FloatingIp {
    /// Where a packet of protocol `proto` to `port` goes.
    pub fn forward(&self, proto: u8, port: u16) -> PortForward {
        if self.ports.is_empty() {
            return PortForward::Same;
        }
        match self.ports.iter().find(|m| m.proto == proto && m.port == port) {
            Some(m) => PortForward::To(m.target),
            None => PortForward::Closed,
        }
    }
}

/// Per-vif switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VifFlags {
    /// Answer ARP and neighbour solicitations from this vif (on by default).
    pub proxy_arp: bool,
    /// Clamp the MSS of TCP SYNs from and to this vif so that they fit
    /// through tunnels (on by default).
    pub mss_clamp: bool,
    /// Drop everything the vif receives, counting it (`IfDrop`).
    pub disabled: bool,
    /// Drop what a pod sends from an address that is not its own (reverse
    /// path check, `InvalidSource`; on by default). Off for a pod that
    /// sends as others by right: a router, a VRRP pair's shared address.
    pub source_check: bool,
}

impl Default for VifFlags {
    fn default() -> Self {
        VifFlags { proxy_arp: true, mss_clamp: true, disabled: false, source_check: true }
    }
}

impl Vif {
    /// A vif with default flags and a 1500-byte MTU.
    pub fn new(index: VifIndex, name: &str, kind: VifKind, vrf: u32, mac: MacAddr) -> Self {
        Vif {
            index,
            name: name.to_string(),
            kind,
            vrf,
            mac,
            ipv4: None,
            ipv6: None,
            mtu: 1500,
            flags: VifFlags::default(),
            floating: Vec::new(),
        }
    }
}
