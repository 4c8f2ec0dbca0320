//! From intent to tables: which objects the node needs, with the ids the
//! agent allocates for them.
//!
//! Allocation is deterministic: objects are taken in a fixed order, and each
//! gets the id it already has in vrouterd when it has one, else the lowest
//! free id. The same intent over the same tables always gives the same ids,
//! a restart of the agent changes nothing, and a new pod never shifts the
//! ids of the others.

use super::intent::{Intent, FABRIC_VRF};
use crate::api::schema::{EncapDef, LabelDef, MemberDef, NextHopDef, PolicyDef, RouteDef, VifDef, VifKindDef, VrfDef};
use crate::tables::{Label, Limits, NhId, VifIndex, VrfId};
use crate::wire::MacAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

/// A whole set of tables, keyed as vrouterd keys them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// VRFs by id.
    pub vrfs: BTreeMap<VrfId, VrfDef>,
    /// Vifs by index.
    pub vifs: BTreeMap<VifIndex, VifDef>,
    /// Next hops by id.
    pub nexthops: BTreeMap<NhId, NextHopDef>,
    /// Labels.
    pub labels: BTreeMap<Label, LabelDef>,
    /// Routes by VRF and prefix.
    pub routes: BTreeMap<(VrfId, String), RouteDef>,
    /// Policies by VRF.
    pub policies: BTreeMap<VrfId, PolicyDef>,
}

impl Snapshot {
    /// The composite next hop the route for `prefix` in `vrf` leads to, if
    /// it leads to one: the id a service or shared address keeps.
    fn composite_route(&self, vrf: VrfId, prefix: &str) -> Option<NhId> {
        let nh = self.routes.get(&(vrf, prefix.to_string()))?.nh;
        matches!(self.nexthops.get(&nh), Some(NextHopDef::CompositeEcmp { .. })).then_some(nh)
    }
}

/// The fabric vif's index and the VRF it sits in, as in Contrail (vif0/0).
pub const FABRIC_VIF: VifIndex = 0;
/// The underlay VRF.
pub const FABRIC_VRF_ID: VrfId = 0;
/// The first vif index for pods: 1 and 2 stay free for the host and agent
/// vifs, as in Contrail.
pub const FIRST_POD_VIF: VifIndex = 3;
/// The first label the agent allocates (0–15 are reserved by MPLS).
pub const FIRST_LABEL: Label = 16;

/// Hands out ids: ones already held first, then the lowest free.
struct Ids {
    used: BTreeSet<u32>,
    min: u32,
    max: u32,
    what: &'static str,
}

impl Ids {
    fn new(what: &'static str, min: u32, max: u32) -> Ids {
        Ids { used: BTreeSet::new(), min, max, what }
    }

    /// Assigns ids to `keys` in order: each key's hint if it is free and in
    /// range, then the lowest free id for the rest.
    fn assign<K: Ord + Clone>(&mut self, keys: &[(K, Option<u32>)]) -> Result<BTreeMap<K, u32>, String> {
        let mut out = BTreeMap::new();
        for (k, hint) in keys {
            if let Some(h) = *hint {
                if (self.min..=self.max).contains(&h) && self.used.insert(h) {
                    out.insert(k.clone(), h);
                }
            }
        }
        let mut next = self.min;
        for (k, _) in keys {
            if out.contains_key(k) {
                continue;
            }
            while self.used.contains(&next) {
                next += 1;
            }
            if next > self.max {
                return Err(format!("no free {} id: the table holds {} at most", self.what, self.max + 1));
            }
            self.used.insert(next);
            out.insert(k.clone(), next);
        }
        Ok(out)
    }
}

/// What the node's tables should be, given the intent, the fabric MAC, the
/// tables' limits, and what vrouterd holds now (for keeping ids).
pub fn desired(intent: &Intent, fabric_mac: MacAddr, limits: &Limits, now: &Snapshot) -> Result<Snapshot, String> {
    let mut out = Snapshot::default();
    let cap = |n: usize| u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX);

    // VRFs: the underlay's at 0, then each network, keeping ids by name.
    let mut vrf_ids = Ids::new("VRF", 1, cap(limits.vrfs));
    let by_name: BTreeMap<&str, VrfId> = now.vrfs.values().map(|v| (v.name.as_str(), v.id)).collect();
    let mut nets: Vec<&super::intent::Network> = intent.network.iter().collect();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    let keys: Vec<(String, Option<u32>)> =
        nets.iter().map(|n| (n.name.clone(), by_name.get(n.name.as_str()).copied())).collect();
    let vrf_of = vrf_ids.assign(&keys)?;
    out.vrfs.insert(
        FABRIC_VRF_ID,
        VrfDef { id: FABRIC_VRF_ID, name: FABRIC_VRF.into(), gateway_v4: None, gateway_v6: None },
    );
    for n in &nets {
        let id = vrf_of[&n.name];
        out.vrfs.insert(id, VrfDef { id, name: n.name.clone(), gateway_v4: n.gateway, gateway_v6: n.gateway6 });
    }

    // Vifs: the fabric at 0, pods from 3, keeping indexes by interface name.
    out.vifs.insert(
        FABRIC_VIF,
        VifDef {
            index: FABRIC_VIF,
            name: intent.node.fabric.clone(),
            kind: VifKindDef::Fabric,
            vrf: FABRIC_VRF_ID,
            mac: fabric_mac,
            ipv4: Some(intent.node.underlay),
            ipv6: None,
            mtu: intent.node.fabric_mtu,
            proxy_arp: true,
            mss_clamp: true,
            disabled: false,
            source_check: true,
            floating_ips: Vec::new(),
        },
    );
    let vif_by_name: BTreeMap<&str, VifIndex> = now.vifs.values().map(|v| (v.name.as_str(), v.index)).collect();
    let mut pods: Vec<&super::intent::Pod> = intent.pod.iter().collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    let mut vif_ids = Ids::new("vif", FIRST_POD_VIF, cap(limits.vifs));
    let keys: Vec<(String, Option<u32>)> =
        pods.iter().map(|p| (p.name.clone(), vif_by_name.get(p.interface.as_str()).copied())).collect();
    let vif_of = vif_ids.assign(&keys)?;
    for p in &pods {
        let index = vif_of[&p.name];
        out.vifs.insert(
            index,
            VifDef {
                index,
                name: p.interface.clone(),
                kind: VifKindDef::Virtual,
                vrf: vrf_of[&p.network],
                mac: p.mac,
                ipv4: Some(p.ip),
                ipv6: p.ip6,
                mtu: p.mtu.unwrap_or(1500),
                proxy_arp: true,
                mss_clamp: true,
                disabled: false,
                source_check: p.source_check,
                floating_ips: p
                    .floating_ips
                    .iter()
                    .map(|f| crate::api::schema::FloatingIpDef {
                        address: f.address,
                        vrf: vrf_of[&f.network],
                        ports: f.ports.clone(),
                    })
                    .chain(intent.port_services(p).map(|(s, address)| crate::api::schema::FloatingIpDef {
                        address,
                        vrf: vrf_of[&s.network],
                        ports: s.ports.clone(),
                    }))
                    .collect(),
            },
        );
    }

    // Next hops, in a fixed order of kinds: receive, pods' encaps, tunnels,
    // services' composites. Each keeps the id it has now.
    #[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum NhKey {
        Receive,
        Pod(String),
        Tunnel(Ipv4Addr, u8),
        Service(String, IpAddr),
        Held(String, String),
        NetworkLookup(String),
        Remote(String, String),
    }
    let encap_code = |e: EncapDef| match e {
        EncapDef::MplsOverUdp => 0u8,
        EncapDef::MplsOverGre => 1u8,
    };
    let encap_of = |code: u8| if code == 0 { EncapDef::MplsOverUdp } else { EncapDef::MplsOverGre };
    let mut nh_keys: Vec<(NhKey, Option<u32>)> = Vec::new();
    let held = |f: &dyn Fn(&NextHopDef) -> bool| now.nexthops.values().find(|n| f(n)).map(NextHopDef::id);
    let needs_receive = nets.iter().any(|n| n.gateway.is_some() || n.gateway6.is_some());
    if needs_receive {
        nh_keys.push((NhKey::Receive, held(&|n| matches!(n, NextHopDef::Receive { .. }))));
    }
    for p in &pods {
        let oif = vif_of[&p.name];
        let hint = held(&|n| matches!(n, NextHopDef::Encap { oif: o, .. } if *o == oif));
        nh_keys.push((NhKey::Pod(p.name.clone()), hint));
    }
    let mut tunnels = BTreeSet::new();
    for r in &intent.remote {
        tunnels.insert((r.node, encap_code(r.encap.unwrap_or(intent.node.encap))));
    }
    for &(dip, code) in &tunnels {
        let enc = encap_of(code);
        let hint = held(
            &|n| matches!(n, NextHopDef::Tunnel { dip: d, encap, oif, .. } if *d == dip && *encap == enc && *oif == FABRIC_VIF),
        );
        nh_keys.push((NhKey::Tunnel(dip, code), hint));
    }
    let mut services: Vec<&super::intent::Service> = intent.service.iter().collect();
    services.sort_by(|a, b| (&a.network, a.address).cmp(&(&b.network, b.address)));
    for s in &services {
        let vrf = vrf_of[&s.network];
        let hint = now.composite_route(vrf, &host(s.address));
        nh_keys.push((NhKey::Service(s.network.clone(), s.address), hint));
    }
    // Networks reachable by label: a VRF-lookup next hop each.
    for n in &nets {
        if n.label.is_some() {
            let vrf = vrf_of[&n.name];
            let hint = held(&|h| matches!(h, NextHopDef::VrfLookup { vrf: v, .. } if *v == vrf));
            nh_keys.push((NhKey::NetworkLookup(n.name.clone()), hint));
        }
    }
    // What local pods hold besides their own addresses, by network and
    // prefix: floating IPs (in their public network) and allowed addresses
    // (in the pod's own), each with the pods that hold it.
    let mut held: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut hold = |network: &str, prefix: String, pod: &str| {
        let owners = held.entry((network.to_owned(), prefix)).or_default();
        // A pod that holds a prefix both ways (a floating IP in its own
        // network that it also lists as allowed) is one member.
        if !owners.iter().any(|o| o == pod) {
            owners.push(pod.to_owned());
        }
    };
    for p in &pods {
        for f in &p.floating_ips {
            hold(&f.network, host(IpAddr::V4(f.address)), &p.name);
        }
        for a in &p.allowed_addresses {
            hold(&p.network, super::intent::address_or_prefix(a)?.to_string(), &p.name);
        }
    }
    // A prefix several nodes serve (a floating IP on pods of several nodes):
    // ECMP over their tunnels. One that a pod here holds is routed to it,
    // without a tunnel.
    let mut remote_groups: BTreeMap<(String, String), Vec<&super::intent::Remote>> = BTreeMap::new();
    for r in &intent.remote {
        let at = (r.network.clone(), r.prefix()?.to_string());
        if !held.contains_key(&at) {
            remote_groups.entry(at).or_default().push(r);
        }
    }
    for ((network, prefix), rs) in &remote_groups {
        if rs.len() > 1 {
            let hint = now.composite_route(vrf_of[network], prefix);
            nh_keys.push((NhKey::Remote(network.clone(), prefix.clone()), hint));
        }
    }
    // A floating IP or allowed address several local pods hold: an ECMP
    // composite each.
    for ((network, prefix), owners) in &held {
        if owners.len() > 1 {
            let hint = now.composite_route(vrf_of[network], prefix);
            nh_keys.push((NhKey::Held(network.clone(), prefix.clone()), hint));
        }
    }
    // Next hop 0 is vrouterd's built-in discard.
    let mut nh_ids = Ids::new("next-hop", 1, cap(limits.nexthops));
    let nh_of = nh_ids.assign(&nh_keys)?;

    let receive = nh_of.get(&NhKey::Receive).copied();
    if let Some(id) = receive {
        out.nexthops.insert(id, NextHopDef::Receive { id });
    }
    for p in &pods {
        let id = nh_of[&NhKey::Pod(p.name.clone())];
        out.nexthops.insert(id, NextHopDef::Encap { id, oif: vif_of[&p.name], dmac: p.mac, smac: None });
    }
    for &(dip, code) in &tunnels {
        let id = nh_of[&NhKey::Tunnel(dip, code)];
        out.nexthops
            .insert(id, NextHopDef::Tunnel { id, oif: FABRIC_VIF, encap: encap_of(code), sip: None, dip, dmac: None });
    }

    // Labels: pinned ones as given, the others keep theirs or get the lowest free.
    let mut label_ids = Ids::new("label", FIRST_LABEL, cap(limits.labels).min(crate::wire::mpls::MAX_LABEL));
    let label_held: BTreeMap<NhId, Label> = now.labels.values().map(|l| (l.nh, l.label)).collect();
    // Pinned labels first: pods', and networks' (keyed apart from pods).
    let mut pinned: Vec<(String, Option<u32>)> =
        pods.iter().filter(|p| p.label.is_some()).map(|p| (p.name.clone(), p.label)).collect();
    pinned.extend(nets.iter().filter(|n| n.label.is_some()).map(|n| (format!("network {:?}", n.name), n.label)));
    let mut label_of = label_ids.assign(&pinned)?;
    for (name, want) in &pinned {
        if label_of.get(name) != want.as_ref() {
            return Err(format!("{name}: label {} is pinned twice or out of range", want.unwrap_or(0)));
        }
    }
    let rest: Vec<(String, Option<u32>)> = pods
        .iter()
        .filter(|p| p.label.is_none())
        .map(|p| (p.name.clone(), label_held.get(&nh_of[&NhKey::Pod(p.name.clone())]).copied()))
        .collect();
    label_of.extend(label_ids.assign(&rest)?);
    for p in &pods {
        let label = label_of[&p.name];
        out.labels.insert(label, LabelDef { label, nh: nh_of[&NhKey::Pod(p.name.clone())] });
    }

    // Routes.
    let mut route = |vrf: VrfId, prefix: String, nh: NhId, label: Option<Label>| {
        out.routes.insert((vrf, prefix.clone()), RouteDef { vrf, prefix, nh, label, network: None });
    };
    for n in &nets {
        let vrf = vrf_of[&n.name];
        if let (Some(g), Some(rcv)) = (n.gateway, receive) {
            route(vrf, host(IpAddr::V4(g)), rcv, None);
        }
        if let (Some(g), Some(rcv)) = (n.gateway6, receive) {
            route(vrf, host(IpAddr::V6(g)), rcv, None);
        }
    }
    for p in &pods {
        let (vrf, nh) = (vrf_of[&p.network], nh_of[&NhKey::Pod(p.name.clone())]);
        route(vrf, host(IpAddr::V4(p.ip)), nh, None);
        if let Some(a) = p.ip6 {
            route(vrf, host(IpAddr::V6(a)), nh, None);
        }
    }
    let tunnel_of =
        |r: &super::intent::Remote| nh_of[&NhKey::Tunnel(r.node, encap_code(r.encap.unwrap_or(intent.node.encap)))];
    let mut remote_composites = Vec::new();
    for ((network, prefix), rs) in &remote_groups {
        let vrf = vrf_of[network];
        if let [r] = rs.as_slice() {
            route(vrf, prefix.clone(), tunnel_of(r), Some(r.label));
        } else {
            let id = nh_of[&NhKey::Remote(network.clone(), prefix.clone())];
            let mut members: Vec<MemberDef> =
                rs.iter().map(|r| MemberDef { nh: tunnel_of(r), label: Some(r.label) }).collect();
            members.sort_by_key(|m| (m.nh, m.label));
            remote_composites.push((id, members));
            route(vrf, prefix.clone(), id, None);
        }
    }
    for s in &services {
        let vrf = vrf_of[&s.network];
        let id = nh_of[&NhKey::Service(s.network.clone(), s.address)];
        let mut endpoints = s.endpoints.clone();
        endpoints.sort();
        endpoints.dedup();
        let members = endpoints
            .iter()
            .map(|e| {
                if let Some(p) = pods.iter().find(|p| p.network == s.network && IpAddr::V4(p.ip) == *e) {
                    return Ok(MemberDef { nh: nh_of[&NhKey::Pod(p.name.clone())], label: None });
                }
                let r = intent
                    .remote
                    .iter()
                    .find(|r| r.network == s.network && r.ip.parse::<IpAddr>() == Ok(*e))
                    .ok_or_else(|| format!("service {}: endpoint {e} is unknown", s.address))?;
                let code = encap_code(r.encap.unwrap_or(intent.node.encap));
                Ok(MemberDef { nh: nh_of[&NhKey::Tunnel(r.node, code)], label: Some(r.label) })
            })
            .collect::<Result<Vec<_>, String>>()?;
        route(vrf, host(s.address), id, None);
        out.nexthops.insert(id, NextHopDef::CompositeEcmp { id, members });
    }

    for (id, members) in remote_composites {
        out.nexthops.insert(id, NextHopDef::CompositeEcmp { id, members });
    }
    // Network labels: a VRF lookup each.
    for n in &nets {
        if let Some(label) = n.label {
            let id = nh_of[&NhKey::NetworkLookup(n.name.clone())];
            out.nexthops.insert(id, NextHopDef::VrfLookup { id, vrf: vrf_of[&n.name] });
            out.labels.insert(label, LabelDef { label, nh: id });
        }
    }

    // Floating IPs and allowed addresses: their network routes each to the
    // local pods that hold it, straight to one, or by ECMP over several.
    for ((network, prefix), owners) in &held {
        let vrf = vrf_of[network];
        let nh = if let [only] = owners.as_slice() {
            nh_of[&NhKey::Pod(only.clone())]
        } else {
            let id = nh_of[&NhKey::Held(network.clone(), prefix.clone())];
            let members = owners.iter().map(|o| MemberDef { nh: nh_of[&NhKey::Pod(o.clone())], label: None }).collect();
            out.nexthops.insert(id, NextHopDef::CompositeEcmp { id, members });
            id
        };
        out.routes
            .insert((vrf, prefix.clone()), RouteDef { vrf, prefix: prefix.clone(), nh, label: None, network: None });
    }

    // Imports: a network that imports another gets its routes (its pods,
    // remotes and services), as Contrail joins networks that share a route
    // target. Its own routes win where both have one; gateways stay apart.
    // An imported route keeps its network, for policies that name it.
    for n in &nets {
        let into = vrf_of[&n.name];
        for m in &n.import {
            let from = vrf_of[m];
            let copies: Vec<RouteDef> = out
                .routes
                .values()
                .filter(|r| r.vrf == from && Some(r.nh) != receive)
                .map(|r| RouteDef {
                    vrf: into,
                    network: Some(r.network.unwrap_or(from)).filter(|&n| n != into),
                    ..r.clone()
                })
                .collect();
            for r in copies {
                out.routes.entry((into, r.prefix.clone())).or_insert(r);
            }
        }
    }

    // Policies, with networks named by their VRFs.
    for p in &intent.policy {
        let vrf = vrf_of[&p.network];
        let def = p.to_def(vrf, |network| vrf_of.get(network).copied().unwrap_or(u32::MAX));
        // As vrouterd reads it back, so that an unchanged policy diffs as equal.
        let canonical = def
            .to_policy()
            .map(|pol| PolicyDef::from_policy(vrf, &pol))
            .map_err(|e| format!("policy of {:?}: {e}", p.network))?;
        out.policies.insert(vrf, canonical);
    }
    Ok(out)
}

/// `ADDR/32` or `ADDR/128`.
fn host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}
