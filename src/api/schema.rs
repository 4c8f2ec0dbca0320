//! Table objects as they appear in files and API messages.

use crate::tables::{
    EcmpGroup, Label, NextHop, NhId, Object, ObjectKey, Op, RouteSpec, RouteTarget, TableError, Tunnel, TunnelEncap,
    Vif, VifFlags, VifIndex, VifKind, VrfId, VrfSpec,
};
use crate::wire::{ip_proto, MacAddr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Reads a MAC address written `aa:bb:cc:dd:ee:ff`, for `deserialize_with`.
pub(crate) fn mac<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")))
}

/// [`mac`] for an optional field.
pub(crate) fn opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    mac(d).map(Some)
}

fn ser_mac<S: Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(m)
}

fn ser_opt_mac<S: Serializer>(m: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.collect_str(m),
        None => s.serialize_none(),
    }
}

/// A VRF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfDef {
    /// Id.
    pub id: VrfId,
    /// Name.
    pub name: String,
    /// IPv4 gateway of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_v4: Option<Ipv4Addr>,
    /// IPv6 gateway of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_v6: Option<Ipv6Addr>,
}

/// A vif: an interface vrouter forwards for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VifDef {
    /// Index (`vif0/N`).
    pub index: VifIndex,
    /// The host interface.
    pub name: String,
    /// `fabric`, `virtual`, `host` or `agent`.
    pub kind: VifKindDef,
    /// VRF.
    pub vrf: VrfId,
    /// MAC: the pod's for a virtual vif, the NIC's for the fabric.
    #[serde(deserialize_with = "mac", serialize_with = "ser_mac")]
    pub mac: MacAddr,
    /// IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Answer ARP and ND (default true).
    #[serde(default = "yes")]
    pub proxy_arp: bool,
    /// Clamp TCP MSS (default true).
    #[serde(default = "yes")]
    pub mss_clamp: bool,
    /// Drop everything it receives.
    #[serde(default)]
    pub disabled: bool,
    /// Drop what a pod sends from an address not its own (default true).
    #[serde(default = "yes")]
    pub source_check: bool,
    /// Public addresses that reach this vif, NATed to its IPv4 address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating_ips: Vec<FloatingIpDef>,
}

/// A floating IP: a public address in a public VRF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpDef {
    /// The public address.
    pub address: Ipv4Addr,
    /// The VRF it lives in.
    pub vrf: VrfId,
    /// Forwarded ports: left out, every packet to the address reaches the
    /// pod, ports unchanged; given, only TCP and UDP to these ports do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapDef>,
}

/// A forwarded port of a floating IP: `port` reaches the pod's `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapDef {
    /// `tcp` or `udp`.
    pub proto: TransportDef,
    /// The floating IP's port.
    pub port: u16,
    /// The pod's port.
    pub target: u16,
}

/// A transport protocol with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportDef {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl FloatingIpDef {
    /// The floating IP.
    pub fn to_floating_ip(&self) -> crate::tables::FloatingIp {
        let ports = self.ports.iter().map(PortMapDef::to_port_map).collect();
        crate::tables::FloatingIp { address: self.address, vrf: self.vrf, ports }
    }

    /// As written, from the floating IP.
    pub fn from_floating_ip(f: &crate::tables::FloatingIp) -> FloatingIpDef {
        let ports = f.ports.iter().map(PortMapDef::from_port_map).collect();
        FloatingIpDef { address: f.address, vrf: f.vrf, ports }
    }
}

impl PortMapDef {
    /// The forwarded port.
    pub fn to_port_map(&self) -> crate::tables::PortMap {
        let proto = match self.proto {
            TransportDef::Tcp => crate::wire::ip_proto::TCP,
            TransportDef::Udp => crate::wire::ip_proto::UDP,
        };
        crate::tables::PortMap { proto, port: self.port, target: self.target }
    }

    /// As written, from the forwarded port.
    pub fn from_port_map(m: &crate::tables::PortMap) -> PortMapDef {
        // The tables hold only TCP and UDP maps (`check_port_maps`).
        let proto = if m.proto == crate::wire::ip_proto::UDP { TransportDef::Udp } else { TransportDef::Tcp };
        PortMapDef { proto, port: m.port, target: m.target }
    }
}

fn default_mtu() -> u16 {
    1500
}
pub(crate) fn yes() -> bool {
    true
}

/// Vif kinds as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VifKindDef {
    /// The fabric NIC.
    Fabric,
    /// A pod or VM.
    Virtual,
    /// The host stack.
    Host,
    /// The agent's trap path.
    Agent,
}

/// Tunnel encapsulations as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapDef {
    /// MPLS over UDP.
    #[serde(rename = "mpls-o-udp")]
    MplsOverUdp,
    /// MPLS over GRE.
    #[serde(rename = "mpls-o-gre")]
    MplsOverGre,
}

/// One ECMP member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDef {
    /// Next hop.
    pub nh: NhId,
    /// Label to push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
}

/// A next hop, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NextHopDef {
    /// Drop.
    Discard {
        /// Id.
        id: NhId,
    },
    /// To the host.
    Receive {
        /// Id.
        id: NhId,
    },
    /// To a local vif.
    Encap {
        /// Id.
        id: NhId,
        /// Output vif.
        oif: VifIndex,
        /// Destination MAC (the pod's).
        #[serde(deserialize_with = "mac", serialize_with = "ser_mac")]
        dmac: MacAddr,
        /// Source MAC; the router MAC by default.
        #[serde(
            default,
            deserialize_with = "opt_mac",
            serialize_with = "ser_opt_mac",
            skip_serializing_if = "Option::is_none"
        )]
        smac: Option<MacAddr>,
    },
    /// To a remote node.
    Tunnel {
        /// Id.
        id: NhId,
        /// The fabric vif.
        oif: VifIndex,
        /// Encapsulation.
        encap: EncapDef,
        /// Outer source; the node's underlay address by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sip: Option<Ipv4Addr>,
        /// Outer destination: the remote node.
        dip: Ipv4Addr,
        /// MAC of the underlay next hop. Leave it out and vrouterd takes it
        /// from the kernel's neighbour table, and follows its changes.
        #[serde(
            default,
            deserialize_with = "opt_mac",
            serialize_with = "ser_opt_mac",
            skip_serializing_if = "Option::is_none"
        )]
        dmac: Option<MacAddr>,
    },
    /// ECMP over members.
    CompositeEcmp {
        /// Id.
        id: NhId,
        /// Members.
        members: Vec<MemberDef>,
    },
    /// Route again in another VRF.
    VrfLookup {
        /// Id.
        id: NhId,
        /// The VRF.
        vrf: VrfId,
    },
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    /// VRF.
    pub vrf: VrfId,
    /// Prefix, `ADDR/LEN`.
    pub prefix: String,
    /// Next hop.
    pub nh: NhId,
    /// Label for tunnel next hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// The virtual network (VRF) the prefix's addresses belong to, where
    /// not the route's own VRF's: an imported route's. Policy rules that
    /// name a network match its addresses by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<VrfId>,
}

/// An incoming label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    /// Label.
    pub label: Label,
    /// Next hop it names.
    pub nh: NhId,
}

/// A whole set of tables: what a tables file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesDef {
    /// VRFs.
    #[serde(default)]
    pub vrf: Vec<VrfDef>,
    /// Vifs.
    #[serde(default)]
    pub vif: Vec<VifDef>,
    /// Next hops.
    #[serde(default)]
    pub nexthop: Vec<NextHopDef>,
    /// Labels.
    #[serde(default)]
    pub label: Vec<LabelDef>,
    /// Routes.
    #[serde(default)]
    pub route: Vec<RouteDef>,
}

/// What the schema needs from the node to fill in defaults.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The router MAC, source of encap rewrites.
    pub router_mac: MacAddr,
    /// The node's underlay address, source of tunnels.
    pub underlay: Ipv4Addr,
}

impl VifDef {
    /// The vif.
    pub fn to_vif(&self) -> Vif {
        let kind = match self.kind {
            VifKindDef::Fabric => VifKind::Fabric,
            VifKindDef::Virtual => VifKind::Virtual,
            VifKindDef::Host => VifKind::Host,
            VifKindDef::Agent => VifKind::Agent,
        };
        Vif {
            index: self.index,
            name: self.name.clone(),
            kind,
            vrf: self.vrf,
            mac: self.mac,
            ipv4: self.ipv4,
            ipv6: self.ipv6,
            mtu: self.mtu,
            flags: VifFlags {
                proxy_arp: self.proxy_arp,
                mss_clamp: self.mss_clamp,
                disabled: self.disabled,
                source_check: self.source_check,
            },
            floating: self.floating_ips.iter().map(FloatingIpDef::to_floating_ip).collect(),
        }
    }
}

impl NextHopDef {
    /// The next hop's id.
    pub fn id(&self) -> NhId {
        match self {
            NextHopDef::Discard { id }
            | NextHopDef::Receive { id }
            | NextHopDef::Encap { id, .. }
            | NextHopDef::Tunnel { id, .. }
            | NextHopDef::CompositeEcmp { id, .. }
            | NextHopDef::VrfLookup { id, .. } => *id,
        }
    }

    /// The next hop.
    pub fn to_nexthop(&self, d: &Defaults) -> NextHop {
        let target = |m: &MemberDef| RouteTarget { nh: m.nh, label: m.label.unwrap_or(RouteTarget::NO_LABEL) };
        match self {
            NextHopDef::Discard { .. } => NextHop::Discard,
            NextHopDef::Receive { .. } => NextHop::Receive,
            NextHopDef::Encap { oif, dmac, smac, .. } => {
                NextHop::Encap { oif: *oif, smac: smac.unwrap_or(d.router_mac), dmac: *dmac }
            }
            NextHopDef::Tunnel { oif, encap, sip, dip, dmac, .. } => {
                let encap = match encap {
                    EncapDef::MplsOverUdp => TunnelEncap::MplsOverUdp,
                    EncapDef::MplsOverGre => TunnelEncap::MplsOverGre,
                };
                NextHop::Tunnel(Tunnel::new(*oif, encap, sip.unwrap_or(d.underlay), *dip, dmac.unwrap_or_default()))
            }
            NextHopDef::CompositeEcmp { members, .. } => {
                NextHop::Composite(EcmpGroup::new(members.iter().map(target).collect()))
            }
            NextHopDef::VrfLookup { vrf, .. } => NextHop::VrfLookup { vrf: *vrf },
        }
    }
}

impl TablesDef {
    /// Tunnel next hops whose MAC is to come from the neighbour table:
    /// (next-hop id, remote address).
    pub fn resolved_tunnels(&self) -> Vec<(NhId, Ipv4Addr)> {
        self.nexthop
            .iter()
            .filter_map(|n| match n {
                NextHopDef::Tunnel { id, dip, dmac: None, .. } => Some((*id, *dip)),
                _ => None,
            })
            .collect()
    }

    /// Reads a tables file's text. Errors carry the line and column.
    pub fn from_toml(text: &str) -> Result<TablesDef, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The operations that add every object, in dependency order.
    pub fn add_ops(&self, d: &Defaults) -> Result<Vec<Op>, String> {
        let mut ops = Vec::new();
        for v in &self.vrf {
            ops.push(Op::Add(Object::Vrf(v.to_spec())));
        }
        for v in &self.vif {
            ops.push(Op::Add(Object::Vif(v.to_vif())));
        }
        // Members before composites: a composite refers to its members.
        let (composites, plain): (Vec<_>, Vec<_>) =
            self.nexthop.iter().partition(|n| matches!(n, NextHopDef::CompositeEcmp { .. }));
        for n in plain.into_iter().chain(composites) {
            ops.push(Op::Add(Object::NextHop(n.id(), n.to_nexthop(d))));
        }
        for l in &self.label {
            ops.push(Op::Add(Object::Label(l.label, l.nh)));
        }
        for (i, r) in self.route.iter().enumerate() {
            let spec = r.to_spec().map_err(|e| format!("route {} ({}): {e}", i + 1, r.prefix))?;
            ops.push(Op::Add(Object::Route(spec)));
        }
        Ok(ops)
    }
}

/// A VRF's network policy: ordered rules, first match wins, and a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    /// The VRF (virtual network) whose flows it decides.
    pub vrf: VrfId,
    /// `allow` or `deny` when no rule matches.
    pub default: ActionDef,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionDef {
    /// Let the flow through.
    Allow,
    /// Drop it.
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Source: `any`, a prefix, or `{"network": VRF}`.
    #[serde(default = "any")]
    pub src: EndpointDef,
    /// Destination, likewise.
    #[serde(default = "any")]
    pub dst: EndpointDef,
    /// `tcp`, `udp`, `icmp`, `icmp6`, a protocol number, or left out for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<ProtoDef>,
    /// Source ports: `80`, `"1000-2000"`, or left out for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortsDef>,
    /// Destination ports, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortsDef>,
    /// What a match does.
    pub action: ActionDef,
}

fn any() -> EndpointDef {
    EndpointDef::Text("any".into())
}

/// A rule's source or destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointDef {
    /// `any`, or a prefix `ADDR/LEN`.
    Text(String),
    /// Every address of a virtual network.
    Network {
        /// Its VRF.
        network: VrfId,
    },
}

/// A protocol by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProtoDef {
    /// Its number.
    Number(u8),
    /// `tcp`, `udp`, `icmp` or `icmp6`.
    Name(String),
}

/// One port or a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortsDef {
    /// One port.
    One(u16),
    /// `"LO-HI"`, or one port as text.
    Range(String),
}

/// Protocols known by name, both ways.
const PROTO_NAMES: [(&str, u8); 4] = [("tcp", 6), ("udp", 17), ("icmp", 1), ("icmp6", 58)];

impl ProtoDef {
    /// The protocol number.
    pub fn number(&self) -> Result<u8, String> {
        match self {
            ProtoDef::Number(n) => Ok(*n),
            ProtoDef::Name(n) => PROTO_NAMES
                .iter()
                .find(|(name, _)| name == n)
                .map(|&(_, num)| num)
                // A number given as text, as ports may be.
                .or_else(|| n.trim().parse().ok())
                .ok_or_else(|| format!("{n:?}: tcp, udp, icmp, icmp6 or a number up to 255")),
        }
    }

    /// A number, by name where it has one.
    pub fn from_number(n: u8) -> ProtoDef {
        match PROTO_NAMES.iter().find(|&&(_, num)| num == n) {
            Some((name, _)) => ProtoDef::Name((*name).into()),
            None => ProtoDef::Number(n),
        }
    }
}

impl PolicyDef {
    /// The policy, or an error naming the rule and field at fault.
    pub fn to_policy(&self) -> Result<crate::flow::Policy, TableError> {
        use crate::flow::{Endpoint, Policy, PolicyAction, PortRange, Rule};
        let action = |a: ActionDef| match a {
            ActionDef::Allow => PolicyAction::Allow,
            ActionDef::Deny => PolicyAction::Deny,
        };
        let bad = |field: &'static str, reason: String| TableError::Invalid { field, reason };
        let endpoint = |field: &'static str, e: &EndpointDef, i: usize| -> Result<Endpoint, TableError> {
            match e {
                EndpointDef::Network { network } => Ok(Endpoint::Network(*network)),
                EndpointDef::Text(t) if t == "any" => Ok(Endpoint::Any),
                EndpointDef::Text(t) => t.parse().map(Endpoint::Prefix).map_err(|e: TableError| {
                    let why = match e {
                        TableError::Invalid { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    bad(field, format!("rule {i}: {why}"))
                }),
            }
        };
        let ports = |field: &'static str, p: &Option<PortsDef>, i: usize| -> Result<PortRange, TableError> {
            let range = match p {
                None => return Ok(PortRange::ANY),
                Some(PortsDef::One(p)) => (*p, *p),
                Some(PortsDef::Range(t)) => {
                    let parse = |x: &str| x.trim().parse::<u16>().ok();
                    match t.split_once('-') {
                        Some((a, b)) => parse(a).zip(parse(b)),
                        None => parse(t).map(|p| (p, p)),
                    }
                    .filter(|(a, b)| a <= b)
                    .ok_or_else(|| bad(field, format!("rule {i}: {t:?} is not a port or a range LO-HI")))?
                }
            };
            Ok(PortRange { lo: range.0, hi: range.1 })
        };
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let proto = r
                .proto
                .as_ref()
                .map(ProtoDef::number)
                .transpose()
                .map_err(|e| bad("proto", format!("rule {i}: {e}")))?;
            let (sport, dport) = (ports("sport", &r.sport, i)?, ports("dport", &r.dport, i)?);
            // Another protocol's flows have no ports (an ICMP echo's key
            // holds its identifier there): such a rule would match by
            // chance or never.
            let ported = [("sport", sport), ("dport", dport)].into_iter().find(|&(_, r)| r != PortRange::ANY);
            if let (Some(p), Some((field, _))) = (proto.filter(|p| ![ip_proto::TCP, ip_proto::UDP].contains(p)), ported)
            {
                return Err(bad(field, format!("rule {i}: ports are for tcp and udp, not protocol {p}")));
            }
            rules.push(Rule {
                src: endpoint("src", &r.src, i)?,
                dst: endpoint("dst", &r.dst, i)?,
                proto,
                sport,
                dport,
                action: action(r.action),
            });
        }
        Ok(Policy { rules, default: action(self.default) })
    }

    /// As the API shows it.
    pub fn from_policy(vrf: VrfId, p: &crate::flow::Policy) -> PolicyDef {
        use crate::flow::{Endpoint, PolicyAction, PortRange};
        let action = |a: PolicyAction| match a {
            PolicyAction::Allow => ActionDef::Allow,
            PolicyAction::Deny => ActionDef::Deny,
        };
        let endpoint = |e: &Endpoint| match e {
            Endpoint::Any => EndpointDef::Text("any".into()),
            Endpoint::Prefix(p) => EndpointDef::Text(p.to_string()),
            Endpoint::Network(n) => EndpointDef::Network { network: *n },
        };
        let ports = |r: &PortRange| match (r.lo, r.hi) {
            (0, u16::MAX) => None,
            (a, b) if a == b => Some(PortsDef::One(a)),
            (a, b) => Some(PortsDef::Range(format!("{a}-{b}"))),
        };
        let proto = |p: Option<u8>| p.map(ProtoDef::from_number);
        PolicyDef {
            vrf,
            default: action(p.default),
            rules: p
                .rules
                .iter()
                .map(|r| RuleDef {
                    src: endpoint(&r.src),
                    dst: endpoint(&r.dst),
                    proto: proto(r.proto),
                    sport: ports(&r.sport),
                    dport: ports(&r.dport),
                    action: action(r.action),
                })
                .collect(),
        }
    }
}

/// Any table object, named by its kind: `{"route": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ObjectDef {
    /// A VRF.
    Vrf(VrfDef),
    /// A vif.
    Vif(VifDef),
    /// A next hop.
    Nexthop(NextHopDef),
    /// An incoming MPLS label.
    Label(LabelDef),
    /// A route.
    Route(RouteDef),
    /// A VRF's network policy.
    Policy(PolicyDef),
}

/// What names an object, for get and delete: `{"vif": 3}`,
/// `{"route": {"vrf": 1, "prefix": "10.1.0.0/24"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyDef {
    /// VRF id.
    Vrf(VrfId),
    /// Vif index.
    Vif(VifIndex),
    /// Next-hop id.
    Nexthop(NhId),
    /// Label.
    Label(Label),
    /// A route's VRF and prefix.
    Route(RouteKeyDef),
    /// The policy of a VRF.
    Policy(VrfId),
}

/// A route's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteKeyDef {
    /// VRF.
    pub vrf: VrfId,
    /// Prefix, `ADDR/LEN`.
    pub prefix: String,
}

/// One change in a batch: `{"add": {"route": {...}}}`, `{"delete": {"vif": 3}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OpDef {
    /// Create an object that must not exist.
    Add(ObjectDef),
    /// Replace an object that must exist.
    Update(ObjectDef),
    /// Remove an object that must exist and be unused.
    Delete(KeyDef),
}

impl ObjectDef {
    /// The object's kind, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectDef::Vrf(_) => "vrf",
            ObjectDef::Vif(_) => "vif",
            ObjectDef::Nexthop(_) => "nexthop",
            ObjectDef::Label(_) => "label",
            ObjectDef::Route(_) => "route",
            ObjectDef::Policy(_) => "policy",
        }
    }

    /// The key that names this object.
    pub fn key(&self) -> KeyDef {
        match self {
            ObjectDef::Vrf(v) => KeyDef::Vrf(v.id),
            ObjectDef::Vif(v) => KeyDef::Vif(v.index),
            ObjectDef::Nexthop(n) => KeyDef::Nexthop(n.id()),
            ObjectDef::Label(l) => KeyDef::Label(l.label),
            ObjectDef::Route(r) => KeyDef::Route(RouteKeyDef { vrf: r.vrf, prefix: r.prefix.clone() }),
            ObjectDef::Policy(p) => KeyDef::Policy(p.vrf),
        }
    }

    /// The table object.
    pub fn to_object(&self, d: &Defaults) -> Result<Object, TableError> {
        Ok(match self {
            ObjectDef::Vrf(v) => Object::Vrf(v.to_spec()),
            ObjectDef::Vif(v) => Object::Vif(v.to_vif()),
            ObjectDef::Nexthop(n) => Object::NextHop(n.id(), n.to_nexthop(d)),
            ObjectDef::Label(l) => Object::Label(l.label, l.nh),
            ObjectDef::Route(r) => Object::Route(r.to_spec()?),
            ObjectDef::Policy(p) => Object::Policy(p.vrf, p.to_policy()?),
        })
    }
}

impl KeyDef {
    /// The table key.
    pub fn to_key(&self) -> Result<ObjectKey, TableError> {
        Ok(match self {
            KeyDef::Vrf(id) => ObjectKey::Vrf(*id),
            KeyDef::Vif(i) => ObjectKey::Vif(*i),
            KeyDef::Nexthop(id) => ObjectKey::NextHop(*id),
            KeyDef::Label(l) => ObjectKey::Label(*l),
            KeyDef::Route(r) => ObjectKey::Route(r.vrf, r.prefix.parse()?),
            KeyDef::Policy(vrf) => ObjectKey::Policy(*vrf),
        })
    }
}

impl OpDef {
    /// The table operation.
    pub fn to_op(&self, d: &Defaults) -> Result<Op, TableError> {
        Ok(match self {
            OpDef::Add(o) => Op::Add(o.to_object(d)?),
            OpDef::Update(o) => Op::Update(o.to_object(d)?),
            OpDef::Delete(k) => Op::Delete(k.to_key()?),
        })
    }
}

impl VrfDef {
    /// The VRF's settings.
    pub fn to_spec(&self) -> VrfSpec {
        VrfSpec { id: self.id, name: self.name.clone(), gateway_v4: self.gateway_v4, gateway_v6: self.gateway_v6 }
    }

    /// As the API shows it.
    pub fn from_vrf(v: &crate::tables::Vrf) -> VrfDef {
        VrfDef { id: v.id, name: v.name.clone(), gateway_v4: v.gateway_v4, gateway_v6: v.gateway_v6 }
    }
}

impl RouteDef {
    /// The route; a malformed prefix is an error naming the field.
    pub fn to_spec(&self) -> Result<RouteSpec, TableError> {
        let prefix = self.prefix.parse()?;
        let target = RouteTarget { nh: self.nh, label: self.label.unwrap_or(RouteTarget::NO_LABEL) };
        Ok(RouteSpec { vrf: self.vrf, prefix, target, network: self.network })
    }

    /// As the API shows it.
    pub fn from_spec(r: &RouteSpec) -> RouteDef {
        let (vrf, nh, label, network) = (r.vrf, r.target.nh, r.target.label(), r.network);
        RouteDef { vrf, prefix: r.prefix.to_string(), nh, label, network }
    }
}

impl VifDef {
    /// As the API shows it.
    pub fn from_vif(v: &Vif) -> VifDef {
        let kind = match v.kind {
            VifKind::Fabric => VifKindDef::Fabric,
            VifKind::Virtual => VifKindDef::Virtual,
            VifKind::Host => VifKindDef::Host,
            VifKind::Agent => VifKindDef::Agent,
        };
        VifDef {
            index: v.index,
            name: v.name.clone(),
            kind,
            vrf: v.vrf,
            mac: v.mac,
            ipv4: v.ipv4,
            ipv6: v.ipv6,
            mtu: v.mtu,
            proxy_arp: v.flags.proxy_arp,
            mss_clamp: v.flags.mss_clamp,
            disabled: v.flags.disabled,
            source_check: v.flags.source_check,
            floating_ips: v.floating.iter().map(FloatingIpDef::from_floating_ip).collect(),
        }
    }
}

impl NextHopDef {
    /// As the API shows it: values equal to their defaults are left out,
    /// and a tunnel whose MAC vrouterd resolves itself (`resolved`) shows
    /// no `dmac`, so that what a client wrote reads back the same.
    pub fn from_nexthop(id: NhId, nh: &NextHop, d: &Defaults, resolved: bool) -> NextHopDef {
        let member = |t: &RouteTarget| MemberDef { nh: t.nh, label: t.label() };
        match nh {
            NextHop::Discard => NextHopDef::Discard { id },
            NextHop::Receive => NextHopDef::Receive { id },
            NextHop::Encap { oif, smac, dmac } => {
                NextHopDef::Encap { id, oif: *oif, dmac: *dmac, smac: (*smac != d.router_mac).then_some(*smac) }
            }
            NextHop::Tunnel(t) => NextHopDef::Tunnel {
                id,
                oif: t.oif,
                encap: match t.encap {
                    TunnelEncap::MplsOverUdp => EncapDef::MplsOverUdp,
                    TunnelEncap::MplsOverGre => EncapDef::MplsOverGre,
                },
                sip: (t.sip != d.underlay).then_some(t.sip),
                dip: t.dip,
                dmac: (!resolved).then_some(t.dmac),
            },
            NextHop::Composite(g) => {
                NextHopDef::CompositeEcmp { id, members: g.members().iter().map(member).collect() }
            }
            NextHop::VrfLookup { vrf } => NextHopDef::VrfLookup { id, vrf: *vrf },
        }
    }

    /// The type as the API names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            NextHopDef::Discard { .. } => "discard",
            NextHopDef::Receive { .. } => "receive",
            NextHopDef::Encap { .. } => "encap",
            NextHopDef::Tunnel { .. } => "tunnel",
            NextHopDef::CompositeEcmp { .. } => "composite-ecmp",
            NextHopDef::VrfLookup { .. } => "vrf-lookup",
        }
    }

    /// True for a tunnel whose MAC is to come from the neighbour table.
    pub fn resolves_mac(&self) -> bool {
        matches!(self, NextHopDef::Tunnel { dmac: None, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[vrf]]
id = 1
name = "blue"
gateway_v4 = "10.1.0.1"

[[vif]]
index = 1
name = "veth-a1"
kind = "virtual"
vrf = 1
mac = "02:00:00:00:01:01"
ipv4 = "10.1.0.2"

[[nexthop]]
type = "encap"
id = 1
oif = 1
dmac = "02:00:00:00:01:01"

[[nexthop]]
type = "composite-ecmp"
id = 2
members = [{ nh = 1 }]

[[label]]
label = 16
nh = 1

[[route]]
vrf = 1
prefix = "10.1.0.2/32"
nh = 1
"#;

    fn defaults() -> Defaults {
        Defaults { router_mac: MacAddr([0, 0, 0x5e, 0, 1, 0]), underlay: Ipv4Addr::new(192, 168, 0, 1) }
    }

    #[test]
    fn a_tables_file_becomes_a_valid_batch() {
        let t = TablesDef::from_toml(FILE).unwrap();
        let ops = t.add_ops(&defaults()).unwrap();
        assert_eq!(ops.len(), 6);
        let (mut w, _) = crate::tables::TablesWriter::new(crate::tables::Limits::default());
        w.apply(&ops).unwrap();
        assert_eq!(w.tables().vrf(1).unwrap().v4.lookup(0x0a01_0002).map(|t| t.nh), Some(1));
        assert!(matches!(w.tables().nexthop(1), Some(NextHop::Encap { smac, .. }) if *smac == defaults().router_mac));
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let typo = FILE.replace("oif = 1", "ofi = 1");
        let e = TablesDef::from_toml(&typo).unwrap_err();
        assert!(e.contains("line") && e.contains("ofi"), "{e}");
        let bad_mac = FILE.replace("mac = \"02:00:00:00:01:01\"", "mac = \"02:00:00\"");
        let e = TablesDef::from_toml(&bad_mac).unwrap_err();
        assert!(e.contains("line 12") && e.contains("not a MAC address"), "{e}");
        let bad_kind = FILE.replace("\"virtual\"", "\"pod\"");
        assert!(TablesDef::from_toml(&bad_kind).unwrap_err().contains("unknown variant"));
        let bad_prefix = FILE.replace("10.1.0.2/32", "10.1.0.2/40");
        let e = TablesDef::from_toml(&bad_prefix).unwrap().add_ops(&defaults()).unwrap_err();
        assert!(e.contains("route 1") && e.contains("longer than 32"), "{e}");
    }

    #[test]
    fn a_rule_takes_a_protocol_by_name_or_number_and_ports_only_where_flows_have_them() {
        let policy = |rule: &str| {
            let json = format!(r#"{{"vrf": 1, "default": "deny", "rules": [{rule}]}}"#);
            serde_json::from_str::<PolicyDef>(&json).unwrap().to_policy()
        };
        let proto = |rule: &str| policy(rule).map(|p| p.rules[0].proto);
        assert_eq!(
            proto(r#"{"proto": "gre", "action": "allow"}"#).unwrap_err().to_string(),
            "field `proto`: rule 0: \"gre\": tcp, udp, icmp, icmp6 or a number up to 255"
        );
        assert_eq!(proto(r#"{"proto": "47", "action": "allow"}"#), Ok(Some(47)));
        assert_eq!(proto(r#"{"proto": 47, "action": "allow"}"#), Ok(Some(47)));
        assert!(proto(r#"{"proto": "300", "action": "allow"}"#).is_err());
        assert_eq!(proto(r#"{"proto": "udp", "dport": "53", "action": "allow"}"#), Ok(Some(17)));
        // An echo's key holds its identifier where ports go: a rule of
        // ICMP ports would match by chance.
        let e = policy(r#"{"proto": "icmp", "dport": 80, "action": "allow"}"#).unwrap_err();
        assert_eq!(e.to_string(), "field `dport`: rule 0: ports are for tcp and udp, not protocol 1");
        let e = policy(r#"{"proto": 47, "sport": "1-2", "action": "allow"}"#).unwrap_err();
        assert_eq!(e.to_string(), "field `sport`: rule 0: ports are for tcp and udp, not protocol 47");
    }
}
