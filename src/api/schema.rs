//! Table objects as they appear in files and API messages.

use crate::tables::{
    EcmpGroup, Label, NextHop, NhId, Object, Op, RouteSpec, RouteTarget, Tunnel, TunnelEncap, Vif, VifFlags, VifIndex,
    VifKind, VrfId, VrfSpec,
};
use crate::wire::MacAddr;
use serde::{Deserialize, Deserializer};
use std::net::{Ipv4Addr, Ipv6Addr};

fn mac<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")))
}

fn opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    mac(d).map(Some)
}

/// A VRF.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfDef {
    /// Id.
    pub id: VrfId,
    /// Name.
    pub name: String,
    /// IPv4 gateway of the network.
    #[serde(default)]
    pub gateway_v4: Option<Ipv4Addr>,
    /// IPv6 gateway of the network.
    #[serde(default)]
    pub gateway_v6: Option<Ipv6Addr>,
}

/// A vif: an interface vrouter forwards for.
#[derive(Debug, Clone, Deserialize)]
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
    #[serde(deserialize_with = "mac")]
    pub mac: MacAddr,
    /// IPv4 address.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    #[serde(default)]
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
}

fn default_mtu() -> u16 {
    1500
}
fn yes() -> bool {
    true
}

/// Vif kinds as written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum EncapDef {
    /// MPLS over UDP.
    #[serde(rename = "mpls-o-udp")]
    MplsOverUdp,
    /// MPLS over GRE.
    #[serde(rename = "mpls-o-gre")]
    MplsOverGre,
}

/// One ECMP member.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDef {
    /// Next hop.
    pub nh: NhId,
    /// Label to push.
    #[serde(default)]
    pub label: Option<Label>,
}

/// A next hop, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
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
        #[serde(deserialize_with = "mac")]
        dmac: MacAddr,
        /// Source MAC; the router MAC by default.
        #[serde(default, deserialize_with = "opt_mac")]
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
        #[serde(default)]
        sip: Option<Ipv4Addr>,
        /// Outer destination: the remote node.
        dip: Ipv4Addr,
        /// MAC of the underlay next hop. Leave it out and vrouterd takes it
        /// from the kernel's neighbour table, and follows its changes.
        #[serde(default, deserialize_with = "opt_mac")]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDef {
    /// VRF.
    pub vrf: VrfId,
    /// Prefix, `ADDR/LEN`.
    pub prefix: String,
    /// Next hop.
    pub nh: NhId,
    /// Label for tunnel next hops.
    #[serde(default)]
    pub label: Option<Label>,
}

/// An incoming label.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    /// Label.
    pub label: Label,
    /// Next hop it names.
    pub nh: NhId,
}

/// A whole set of tables: what a tables file holds.
#[derive(Debug, Clone, Default, Deserialize)]
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
            flags: VifFlags { proxy_arp: self.proxy_arp, mss_clamp: self.mss_clamp, disabled: self.disabled },
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
            ops.push(Op::Add(Object::Vrf(VrfSpec {
                id: v.id,
                name: v.name.clone(),
                gateway_v4: v.gateway_v4,
                gateway_v6: v.gateway_v6,
            })));
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
            let prefix = r.prefix.parse().map_err(|e| format!("route {} ({}): {e}", i + 1, r.prefix))?;
            let target = RouteTarget { nh: r.nh, label: r.label.unwrap_or(RouteTarget::NO_LABEL) };
            ops.push(Op::Add(Object::Route(RouteSpec { vrf: r.vrf, prefix, target })));
        }
        Ok(ops)
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
}
