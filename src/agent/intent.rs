//! What the agent is told the node should look like, and where that comes
//! from. A file today; a cluster store later, behind [`IntentSource`].

use crate::api::schema::EncapDef;
use crate::api::schema::{mac, opt_mac};
use crate::tables::{Label, Prefix};
use crate::wire::MacAddr;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::SystemTime;

/// The node's whole intent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// The node itself.
    pub node: NodeIntent,
    /// Virtual networks.
    #[serde(default)]
    pub network: Vec<Network>,
    /// Pods on this node.
    #[serde(default)]
    pub pod: Vec<Pod>,
    /// Endpoints on other nodes.
    #[serde(default)]
    pub remote: Vec<Remote>,
    /// Service addresses, load-balanced over endpoints.
    #[serde(default)]
    pub service: Vec<Service>,
    /// Network policies, one per network at most.
    #[serde(default)]
    pub policy: Vec<PolicyIntent>,
}

/// A network's policy: what its pods' flows may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIntent {
    /// The network whose flows it decides.
    pub network: String,
    /// `allow` or `deny` when no rule matches.
    pub default: crate::api::schema::ActionDef,
    /// Rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleIntent>,
}

impl PolicyIntent {
    /// The policy as the API takes it for VRF `vrf`, each network a rule
    /// names given the VRF `vrf_of` says.
    pub fn to_def(&self, vrf: u32, vrf_of: impl Fn(&str) -> u32) -> crate::api::schema::PolicyDef {
        use crate::api::schema::{EndpointDef, RuleDef};
        let side = |e: &Option<EndpointIntent>| match e {
            None => EndpointDef::Text("any".into()),
            Some(EndpointIntent::Text(t)) => EndpointDef::Text(t.clone()),
            Some(EndpointIntent::Network { network }) => EndpointDef::Network { network: vrf_of(network) },
        };
        let rules = self
            .rules
            .iter()
            .map(|r| RuleDef {
                src: side(&r.src),
                dst: side(&r.dst),
                proto: r.proto.clone(),
                sport: r.sport.clone(),
                dport: r.dport.clone(),
                action: r.action,
            })
            .collect();
        crate::api::schema::PolicyDef { vrf, default: self.default, rules }
    }
}

/// A rule, with networks named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleIntent {
    /// `"any"`, a prefix, or `{ network = "NAME" }`.
    #[serde(default)]
    pub src: Option<EndpointIntent>,
    /// Likewise.
    #[serde(default)]
    pub dst: Option<EndpointIntent>,
    /// Protocol: name or number.
    #[serde(default)]
    pub proto: Option<crate::api::schema::ProtoDef>,
    /// Source ports.
    #[serde(default)]
    pub sport: Option<crate::api::schema::PortsDef>,
    /// Destination ports.
    #[serde(default)]
    pub dport: Option<crate::api::schema::PortsDef>,
    /// What a match does.
    pub action: crate::api::schema::ActionDef,
}

/// A rule's side, with networks named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EndpointIntent {
    /// `"any"` or a prefix.
    Text(String),
    /// A network by name.
    Network {
        /// Its name.
        network: String,
    },
}

/// The node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIntent {
    /// The fabric interface.
    pub fabric: String,
    /// Its MAC; read from the interface when left out.
    #[serde(default, deserialize_with = "opt_mac")]
    pub fabric_mac: Option<MacAddr>,
    /// The node's underlay address.
    pub underlay: Ipv4Addr,
    /// Tunnel encapsulation to other nodes, unless a remote says otherwise.
    #[serde(default = "default_encap")]
    pub encap: EncapDef,
    /// The fabric's MTU, which the tunnels and their ICMP "too big" answers
    /// are sized by: 1500 unless given (9000 and up on a jumbo fabric,
    /// whose pods may then be given MTUs up to it less 32 or 28 bytes).
    #[serde(default = "default_fabric_mtu")]
    pub fabric_mtu: u16,
}

fn default_fabric_mtu() -> u16 {
    1500
}

fn default_encap() -> EncapDef {
    EncapDef::MplsOverUdp
}

/// A virtual network: one VRF.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Name, unique on the node.
    pub name: String,
    /// Its address ranges; pods' addresses must fall in them.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// The IPv4 gateway pods use.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// The label by which other nodes send packets to be routed in this
    /// network here (as for a floating IP or a gateway): an MPLS label
    /// naming a VRF lookup. Pinned, as pods' labels are, so that other
    /// nodes can be told it.
    #[serde(default)]
    pub label: Option<Label>,
    /// Networks whose routes this one gets (pods, remotes, services): how
    /// two networks are joined. Policy then decides which flows may cross.
    #[serde(default)]
    pub import: Vec<String>,
}

/// A pod (or VM) on this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Name, unique on the node.
    pub name: String,
    /// The host side of its interface (a veth or tap).
    pub interface: String,
    /// Its network.
    pub network: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The MAC of its interface.
    #[serde(deserialize_with = "mac")]
    pub mac: MacAddr,
    /// The label other nodes reach it by. Left out, the agent allocates
    /// one; a cluster source pins it so that other nodes can be told.
    #[serde(default)]
    pub label: Option<Label>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Public addresses that reach the pod, NATed to its address.
    #[serde(default)]
    pub floating_ips: Vec<FloatingIpIntent>,
    /// Drop what it sends from an address not its own (default true): off
    /// for a pod that routes.
    #[serde(default = "crate::api::schema::yes")]
    pub source_check: bool,
    /// Further addresses or prefixes the pod uses as its own (OpenStack's
    /// allowed address pairs: a keepalived or VRRP address, an anycast
    /// one): its network routes them to it, and the source check lets them
    /// through. One that several pods of this node hold is routed over all
    /// of them (ECMP, Contrail's active-active mode); which of them holds
    /// it at a time (VRRP's master) is not learned.
    #[serde(default)]
    pub allowed_addresses: Vec<String>,
}

impl Pod {
    /// Its own addresses, IPv4 then IPv6 where it has one.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        [Some(IpAddr::V4(self.ip)), self.ip6.map(IpAddr::V6)].into_iter().flatten()
    }
}

/// A floating IP of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpIntent {
    /// The public address.
    pub address: Ipv4Addr,
    /// The public network it lives in.
    pub network: String,
    /// Forwarded ports (`{ proto = "tcp", port = 80, target = 8080 }`):
    /// only these reach the pod, each at its target port. Left out, every
    /// port does, unchanged.
    #[serde(default)]
    pub ports: Vec<crate::api::schema::PortMapDef>,
}

/// An endpoint on another node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Its network.
    pub network: String,
    /// Its address, or a prefix behind that node.
    pub ip: String,
    /// The other node's underlay address.
    pub node: Ipv4Addr,
    /// The label that node gave it.
    pub label: Label,
    /// Encapsulation toward that node, if not the node default.
    #[serde(default)]
    pub encap: Option<EncapDef>,
}

/// A service address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name, for messages.
    #[serde(default)]
    pub name: Option<String>,
    /// Its network.
    pub network: String,
    /// The service address.
    pub address: IpAddr,
    /// Endpoint addresses: local pods or remotes of the same network.
    pub endpoints: Vec<IpAddr>,
    /// Its ports, each to the endpoints' target port (a Kubernetes
    /// service's `port` and `targetPort`): the address becomes a floating
    /// IP of each local endpoint, in the service's network, forwarding
    /// these ports and no others, so that the pods need not hold it. Left
    /// out, the pods hold the address themselves and every port reaches
    /// them unchanged (Contrail's ECMP service).
    #[serde(default)]
    pub ports: Vec<crate::api::schema::PortMapDef>,
}

impl Intent {
    /// Reads an intent file's text; errors carry line and column.
    pub fn from_toml(text: &str) -> Result<Intent, String> {
        let i: Intent = toml::from_str(text).map_err(|e| e.to_string())?;
        i.validate()?;
        Ok(i)
    }

    /// Checks what the types alone cannot: references, uniqueness, ranges.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(why) = crate::tables::interface_name_problem(&self.node.fabric) {
            return Err(format!("node.fabric = {:?}: {why}", self.node.fabric));
        }
        if let Some(mac) = self.node.fabric_mac.filter(|m| !m.is_unicast()) {
            return Err(format!("node.fabric_mac = {mac}: not a unicast address"));
        }
        // vrouterd's range for a vif's MTU, said here with its name.
        let mtus = crate::tables::vif::MTU_RANGE;
        if !mtus.contains(&self.node.fabric_mtu) {
            return Err(format!("node.fabric_mtu = {}: not in {mtus:?}", self.node.fabric_mtu));
        }
        // Addresses vrouterd would refuse: none a station could have.
        let station = |what: &str, a: IpAddr| match crate::tables::station_address_problem(a) {
            Some(why) => Err(format!("{what}: {a} is {why}")),
            None => Ok(()),
        };
        station("node.underlay", IpAddr::V4(self.node.underlay))?;
        let mut names = std::collections::BTreeSet::new();
        // Labels pinned by networks and pods: one owner each.
        let mut pinned = std::collections::BTreeMap::new();
        let mut pin = |what: String, l: Label| -> Result<(), String> {
            check_label(&what, l)?;
            match pinned.insert(l, what.clone()) {
                Some(other) => Err(format!("{what}: label {l} is pinned by {other} too")),
                None => Ok(()),
            }
        };
        for n in &self.network {
            if n.name == FABRIC_VRF {
                return Err(format!("network {:?}: the name is reserved for the underlay", n.name));
            }
            if !names.insert(n.name.as_str()) {
                return Err(format!("network {:?} is declared twice", n.name));
            }
            if n.name.is_empty() || n.name.parse::<u64>().is_ok() {
                return Err(format!("network {:?}: a network's name is a word, not empty or a number", n.name));
            }
            let what = format!("network {:?}", n.name);
            if let Some(g) = n.gateway {
                station(&format!("{what}, gateway"), IpAddr::V4(g))?;
            }
            if let Some(g) = n.gateway6 {
                station(&format!("{what}, gateway6"), IpAddr::V6(g))?;
            }
            for s in &n.subnets {
                s.parse::<Prefix>().map_err(|e| format!("network {:?}: subnet {s:?}: {e}", n.name))?;
            }
            if let Some(l) = n.label {
                pin(format!("network {:?}", n.name), l)?;
            }
            for m in &n.import {
                if !self.network.iter().any(|x| &x.name == m) {
                    return Err(format!("network {:?} imports {m:?}, which is not declared", n.name));
                }
            }
        }
        let net = |name: &str, what: &str| {
            self.network
                .iter()
                .find(|n| n.name == name)
                .ok_or_else(|| format!("{what}: network {name:?} is not declared"))
        };
        let mut pods = std::collections::BTreeSet::new();
        let mut ifaces = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        // The pods that hold each floating IP and allowed address, by
        // network: the members of its ECMP composite where several do.
        let mut held: std::collections::BTreeMap<(&str, Prefix), std::collections::BTreeSet<&str>> = Default::default();
        for p in &self.pod {
            let what = format!("pod {:?}", p.name);
            let n = net(&p.network, &what)?;
            if !pods.insert(p.name.as_str()) {
                return Err(format!("{what} is declared twice"));
            }
            if let Some(why) = crate::tables::interface_name_problem(&p.interface) {
                return Err(format!("{what}: interface {:?}: {why}", p.interface));
            }
            if !p.mac.is_unicast() {
                return Err(format!("{what}: mac {}: not a unicast address", p.mac));
            }
            for a in p.addresses() {
                station(&format!("{what}, {}", if a.is_ipv4() { "ip" } else { "ip6" }), a)?;
            }
            if n.gateway == Some(p.ip) || (p.ip6.is_some() && n.gateway6 == p.ip6) {
                return Err(format!("{what}: its address is network {:?}'s gateway", n.name));
            }
            if !ifaces.insert(p.interface.as_str()) || p.interface == self.node.fabric {
                return Err(format!("{what}: interface {:?} is already used", p.interface));
            }
            if !addrs.insert((p.network.as_str(), IpAddr::V4(p.ip))) {
                return Err(format!("{what}: address {} is already used in network {:?}", p.ip, p.network));
            }
            if !n.subnets.is_empty()
                && !n.subnets.iter().any(|s| s.parse::<Prefix>().is_ok_and(|s| s.contains(IpAddr::V4(p.ip))))
            {
                return Err(format!("{what}: {} is outside network {:?}'s subnets {:?}", p.ip, n.name, n.subnets));
            }
            if let Some(l) = p.label {
                pin(what.clone(), l)?;
            }
            for (i, f) in p.floating_ips.iter().enumerate() {
                let fip = format!("{what}, floating IP {}", f.address);
                net(&f.network, &fip)?;
                station(&fip, IpAddr::V4(f.address))?;
                if (f.address, &f.network) == (p.ip, &p.network) {
                    return Err(format!("{fip} is the pod's own address"));
                }
                // One address of a network, one way to translate it.
                if p.floating_ips[..i].iter().any(|o| (o.address, &o.network) == (f.address, &f.network)) {
                    return Err(format!("{fip} is given twice"));
                }
                let service = self.port_services(p).find(|&(s, a)| (&s.network, a) == (&f.network, f.address));
                if let Some((s, _)) = service {
                    let name = s.name.clone().unwrap_or_else(|| s.address.to_string());
                    return Err(format!("{fip} is service {name}'s address, already a floating IP of its endpoints"));
                }
                check_ports(&f.ports).map_err(|e| format!("{fip}: {e}"))?;
                let host = Prefix::covering(IpAddr::V4(f.address), 32);
                held.entry((f.network.as_str(), host)).or_default().insert(p.name.as_str());
            }
            let mut allowed = std::collections::BTreeSet::new();
            for a in &p.allowed_addresses {
                let prefix = address_or_prefix(a).map_err(|e| format!("{what}: allowed address {a:?}: {e}"))?;
                // The same prefix twice, however written ("10.0.0.5" and
                // "10.0.0.5/32"): the pod would be its composite's member
                // twice over.
                if !allowed.insert(prefix) {
                    return Err(format!("{what}: allowed address {a} is given twice"));
                }
                held.entry((p.network.as_str(), prefix)).or_default().insert(p.name.as_str());
                // A pod's own address, or the gateway, would be taken from
                // it: its packets would go to this pod. (A wider prefix, as
                // a router pod's 0.0.0.0/0, leaves them be: their host
                // routes are longer.)
                let is = |addr: IpAddr| prefix == Prefix::covering(addr, if addr.is_ipv4() { 32 } else { 128 });
                let owner = self.pod.iter().find(|o| o.network == p.network && o.addresses().any(is));
                if let Some(o) = owner {
                    return Err(format!("{what}: allowed address {a} is pod {:?}'s own address", o.name));
                }
                let gateways = [n.gateway.map(IpAddr::V4), n.gateway6.map(IpAddr::V6)];
                if gateways.into_iter().flatten().any(is) {
                    return Err(format!("{what}: allowed address {a} is network {:?}'s gateway", n.name));
                }
                // A service's address is its endpoints' composite already:
                // two sets of members for one route.
                if let Some(s) = self.service.iter().find(|s| s.network == p.network && is(s.address)) {
                    let name = s.name.clone().unwrap_or_else(|| s.address.to_string());
                    return Err(format!("{what}: allowed address {a} is service {name}'s address"));
                }
            }
        }
        if let Some(((network, prefix), pods)) = held.iter().find(|(_, pods)| pods.len() > MAX_MEMBERS) {
            return Err(format!(
                "{prefix} in network {network:?}: held by {} pods (floating IPs and allowed addresses), more than {MAX_MEMBERS}, vrouterd's ECMP limit",
                pods.len()
            ));
        }
        // The nodes that serve each remote prefix: the members of its ECMP
        // composite, one each, at most as many as vrouterd's composites hold.
        let mut served: std::collections::BTreeMap<(&str, Prefix), Vec<Ipv4Addr>> = Default::default();
        for r in &self.remote {
            let what = format!("remote {} in {:?}", r.ip, r.network);
            net(&r.network, &what)?;
            let prefix = r.prefix().map_err(|e| format!("{what}: {e}"))?;
            check_label(&what, r.label)?;
            station(&format!("{what}, node"), IpAddr::V4(r.node))?;
            if r.node == self.node.underlay {
                return Err(format!("{what}: node {} is this node (node.underlay)", r.node));
            }
            let nodes = served.entry((r.network.as_str(), prefix)).or_default();
            if nodes.contains(&r.node) {
                return Err(format!("{what}: node {} is given twice", r.node));
            }
            nodes.push(r.node);
            if nodes.len() > MAX_MEMBERS {
                return Err(format!("{what}: served by more than {MAX_MEMBERS} nodes, vrouterd's ECMP limit"));
            }
        }
        let mut with_policy = std::collections::BTreeSet::new();
        for p in &self.policy {
            let what = format!("policy of {:?}", p.network);
            net(&p.network, &what)?;
            if !with_policy.insert(p.network.as_str()) {
                return Err(format!("{what} is declared twice"));
            }
            for (i, r) in p.rules.iter().enumerate() {
                for e in [&r.src, &r.dst].into_iter().flatten() {
                    match e {
                        EndpointIntent::Network { network } => {
                            net(network, &format!("{what}, rule {i}"))?;
                        }
                        EndpointIntent::Text(t) if t == "any" => {}
                        EndpointIntent::Text(t) => {
                            t.parse::<Prefix>().map_err(|e| format!("{what}, rule {i}: {t:?}: {e}"))?;
                        }
                    }
                }
            }
            // Its ports and protocols as vrouterd reads them, so that
            // `vrouter-agent --check` finds what the agent would be refused
            // (the VRFs are placeholders: the networks were checked above).
            p.to_def(0, |_| 0).to_policy().map_err(|e| format!("{what}: {e}"))?;
        }
        for (i, s) in self.service.iter().enumerate() {
            let what = format!("service {}", s.name.clone().unwrap_or_else(|| s.address.to_string()));
            net(&s.network, &what)?;
            // One address of a network, one set of endpoints behind it.
            if let Some(o) = self.service[..i].iter().find(|o| (&o.network, o.address) == (&s.network, s.address)) {
                let other = o.name.clone().unwrap_or_else(|| o.address.to_string());
                return Err(format!(
                    "{what}: address {} in network {:?} is service {other}'s too",
                    s.address, s.network
                ));
            }
            if s.endpoints.is_empty() {
                return Err(format!("{what}: no endpoints"));
            }
            station(&what, s.address)?;
            let owner = self.pod.iter().find(|p| p.network == s.network && p.addresses().any(|a| a == s.address));
            if let Some(p) = owner {
                return Err(format!("{what}: address {} is pod {:?}'s own", s.address, p.name));
            }
            let distinct: std::collections::BTreeSet<_> = s.endpoints.iter().collect();
            if distinct.len() > MAX_MEMBERS {
                return Err(format!("{what}: more than {MAX_MEMBERS} endpoints, vrouterd's ECMP limit"));
            }
            if !s.ports.is_empty() {
                if !s.address.is_ipv4() {
                    return Err(format!("{what}: forwarded ports need an IPv4 service address"));
                }
                check_ports(&s.ports).map_err(|e| format!("{what}: {e}"))?;
            }
            for e in &s.endpoints {
                let local = self.pod.iter().any(|p| p.network == s.network && IpAddr::V4(p.ip) == *e);
                let remote = self.remote.iter().any(|r| r.network == s.network && r.ip.parse::<IpAddr>() == Ok(*e));
                if !local && !remote {
                    return Err(format!(
                        "{what}: endpoint {e} is neither a pod nor a remote endpoint of network {:?}",
                        s.network
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Intent {
    /// The services with forwarded ports that pod `p` is an endpoint of,
    /// with their (IPv4, as `validate` checks) addresses: each is a
    /// floating IP of the pod in the service's network, whose route is the
    /// service's own, not a held address's.
    pub fn port_services<'i>(&'i self, p: &'i Pod) -> impl Iterator<Item = (&'i Service, Ipv4Addr)> + 'i {
        self.service.iter().filter_map(move |s| match s.address {
            IpAddr::V4(a)
                if !s.ports.is_empty() && s.network == p.network && s.endpoints.contains(&IpAddr::V4(p.ip)) =>
            {
                Some((s, a))
            }
            _ => None,
        })
    }
}

/// Whether forwarded ports as written can be used (`tables::check_port_maps`).
fn check_ports(ports: &[crate::api::schema::PortMapDef]) -> Result<(), String> {
    let maps: Vec<_> = ports.iter().map(crate::api::schema::PortMapDef::to_port_map).collect();
    crate::tables::check_port_maps(&maps)
}

impl Remote {
    /// The remote's prefix: an address is its host prefix.
    pub fn prefix(&self) -> Result<Prefix, String> {
        address_or_prefix(&self.ip)
    }
}

/// `text`, an address or a prefix, as a prefix: an address is its host
/// prefix.
pub fn address_or_prefix(text: &str) -> Result<Prefix, String> {
    let text = if text.contains('/') {
        text.to_string()
    } else {
        let a: IpAddr = text.parse().map_err(|_| format!("{text:?} is not an address or prefix"))?;
        format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
    };
    text.parse().map_err(|e: crate::tables::TableError| e.to_string())
}

/// The most members an ECMP composite holds.
const MAX_MEMBERS: usize = crate::tables::ecmp::MAX_MEMBERS;

/// The VRF that holds the fabric vif.
pub const FABRIC_VRF: &str = "fabric";

fn check_label(what: &str, l: Label) -> Result<(), String> {
    if !(16..=crate::wire::mpls::MAX_LABEL).contains(&l) {
        return Err(format!("{what}: label {l} is outside 16..={}", crate::wire::mpls::MAX_LABEL));
    }
    Ok(())
}

/// Where intent comes from. The agent asks it now and then; it answers with
/// a new intent when there is one.
pub trait IntentSource {
    /// A new intent if it changed since the last call (or on the first
    /// call), `Ok(None)` if not, an error if the new one is unusable (the
    /// agent then keeps the last good one).
    fn poll(&mut self) -> Result<Option<Intent>, String>;

    /// Forces the next `poll` to read afresh (SIGHUP).
    fn refresh(&mut self);

    /// Where the intent comes from, for logs.
    fn describe(&self) -> String;
}

/// Intent from a TOML file, reread when its modification time or size changes.
pub struct FileSource {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path, seen: None }
    }
}

impl IntentSource for FileSource {
    fn poll(&mut self) -> Result<Option<Intent>, String> {
        let shown = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("{shown}: {e}"))?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if self.seen == Some(stamp) {
            return Ok(None);
        }
        self.seen = Some(stamp);
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{shown}: {e}"))?;
        Intent::from_toml(&text).map(Some).map_err(|e| format!("{shown}: {e}"))
    }

    fn refresh(&mut self) {
        self.seen = None;
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
