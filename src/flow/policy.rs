//! Network policy: per VRF, an ordered list of rules and a default.
//!
//! A rule matches a flow's first packet by source and destination (a prefix,
//! or a whole virtual network, i.e. a VRF), protocol and port ranges; the
//! first rule that matches decides. Policy is stateful through the flow
//! table: once a flow is allowed, its answers are too.

use super::key::FlowKey;
use crate::tables::{FibKey, Prefix};
use std::net::IpAddr;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// Let the flow through.
    Allow,
    /// Drop it.
    Deny,
}

/// One side of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Anything.
    Any,
    /// Addresses in a prefix.
    Prefix(Prefix),
    /// Addresses of a virtual network: the VRF the address belongs to, as
    /// the caller resolves it (`Rule::matches` is given both sides' VRFs).
    Network(u32),
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub lo: u16,
    /// Highest port.
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };

    fn contains(&self, p: u16) -> bool {
        (self.lo..=self.hi).contains(&p)
    }
}

/// A rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Source.
    pub src: Endpoint,
    /// Destination.
    pub dst: Endpoint,
    /// IP protocol, or any.
    pub proto: Option<u8>,
    /// Source ports.
    pub sport: PortRange,
    /// Destination ports.
    pub dport: PortRange,
    /// What to do on a match.
    pub action: PolicyAction,
}

/// A VRF's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// What happens when no rule matches.
    pub default: PolicyAction,
}

/// A policy compiled for the data path: prefixes as masks over the key's
/// 128-bit addresses, so that a rule is a handful of compares, and the
/// rules indexed by protocol and destination port (`RuleIndex`), so that a
/// flow's first packet is compared with the rules that may match it, not
/// with every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// The rules, each in one of the index's lists.
    index: RuleIndex,
    len: usize,
    default: PolicyAction,
    /// Whether some rule names a network as its source, and as its
    /// destination: only then must the caller find an address's network.
    networks: (bool, bool),
}

/// A policy's rules by protocol and destination port: split by protocol
/// (one protocol's, and any protocol's), and each part by destination port
/// (one port's, by port; a range's, any port included). A flow's
/// candidates are four lists (its protocol's and any protocol's, each its
/// port's and the ranges'), each in rule order; the lowest of the lists'
/// first matches is the policy's first match. Each rule is in one list,
/// where it is kept whole with its place (`Compiled::at`), so that a list
/// is scanned in sequence as the policy was without the index: the index
/// is as large as the policy.
///
/// Policies name a protocol and a port in most rules (Kubernetes network
/// policies, Contrail's): a flow is compared with the few that name its
/// own, and with the rules for any protocol or port. A policy of rules
/// for any protocol and port is scanned whole, as without the index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleIndex {
    /// Per protocol number, its part in `parts`, or `NO_PART`.
    part_of: Box<[u16; 256]>,
    /// The rules of each protocol some rule names.
    parts: Vec<PortIndex>,
    /// The rules for any protocol.
    any: PortIndex,
}

const NO_PART: u16 = u16::MAX;

/// Rules of one part of a policy, by destination port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PortIndex {
    /// The ports some rule names alone, sorted, each with the range of
    /// `by_port` that holds its rules.
    ports: Vec<(u16, u32, u32)>,
    /// The rules of one port, grouped by port (`ports`), each group in
    /// rule order.
    by_port: Vec<Compiled>,
    /// The rules of a range of ports, in rule order.
    ranged: Vec<Compiled>,
}

impl PortIndex {
    fn of(rules: Vec<Compiled>) -> PortIndex {
        let (mut single, ranged): (Vec<Compiled>, Vec<Compiled>) =
            rules.into_iter().partition(|r| r.dport.0 == r.dport.1);
        // Stable: each port's rules stay in rule order.
        single.sort_by_key(|r| r.dport.0);
        let mut ports: Vec<(u16, u32, u32)> = Vec::new();
        for (k, r) in single.iter().enumerate() {
            match ports.last_mut() {
                Some((port, _, end)) if *port == r.dport.0 => *end += 1,
                _ => ports.push((r.dport.0, k as u32, k as u32 + 1)),
            }
        }
        PortIndex { ports, by_port: single, ranged }
    }

    /// The two lists whose rules may match destination port `port`.
    #[inline]
    fn lists(&self, port: u16) -> [&[Compiled]; 2] {
        let one = match self.ports.binary_search_by_key(&port, |&(p, _, _)| p) {
            Ok(k) => {
                let (_, start, end) = self.ports[k];
                self.by_port.get(start as usize..end as usize).unwrap_or(&[])
            }
            Err(_) => &[],
        };
        [one, &self.ranged]
    }
}

impl RuleIndex {
    fn of(rules: impl Iterator<Item = Compiled>) -> RuleIndex {
        let mut part_of = Box::new([NO_PART; 256]);
        let mut parts: Vec<Vec<Compiled>> = Vec::new();
        let mut any = Vec::new();
        for rule in rules {
            match u8::try_from(rule.proto) {
                Ok(p) => {
                    let part = &mut part_of[usize::from(p)];
                    if *part == NO_PART {
                        *part = parts.len() as u16;
                        parts.push(Vec::new());
                    }
                    parts[usize::from(*part)].push(rule);
                }
                Err(_) => any.push(rule),
            }
        }
        RuleIndex { part_of, parts: parts.into_iter().map(PortIndex::of).collect(), any: PortIndex::of(any) }
    }

    /// The lists whose rules may match a flow of protocol `proto` to port
    /// `dport`, each in rule order: the rules for any protocol and port
    /// first.
    #[inline]
    fn candidates(&self, proto: u8, dport: u16) -> [&[Compiled]; 4] {
        let [any_port, any_range] = self.any.lists(dport);
        match self.parts.get(usize::from(self.part_of[usize::from(proto)])) {
            Some(part) => {
                let [port, range] = part.lists(dport);
                [any_range, port, range, any_port]
            }
            None => [any_range, any_port, &[], &[]],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Any,
    Net { addr: u128, mask: u128 },
    Vrf(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Compiled {
    /// The rule's place in the policy (its index in `Policy::rules`).
    at: u32,
    src: Side,
    dst: Side,
    /// 0..=255 a protocol; 256 any.
    proto: u16,
    sport: (u16, u16),
    dport: (u16, u16),
    action: PolicyAction,
}

impl Side {
    fn of(e: &Endpoint) -> Side {
        match e {
            Endpoint::Any => Side::Any,
            Endpoint::Prefix(p) => {
                let n = net(p);
                Side::Net { addr: n.addr, mask: n.mask }
            }
            Endpoint::Network(v) => Side::Vrf(*v),
        }
    }

    #[inline(always)]
    fn matches(&self, addr: u128, vrf: Option<u32>) -> bool {
        match *self {
            Side::Any => true,
            Side::Net { addr: a, mask } => addr & mask == a,
            Side::Vrf(v) => vrf == Some(v),
        }
    }
}

impl CompiledPolicy {
    /// The action for a flow's first packet, and the index of the rule that
    /// decided (`None`: the default). Same answers as [`Policy::evaluate`].
    #[inline]
    pub fn evaluate(&self, key: &FlowKey, src_vrf: Option<u32>, dst_vrf: Option<u32>) -> (PolicyAction, Option<usize>) {
        let proto = u16::from(key.proto);
        let matches = |r: &Compiled| {
            (r.proto == 256 || r.proto == proto)
                && (r.dport.0..=r.dport.1).contains(&key.dport)
                && (r.sport.0..=r.sport.1).contains(&key.sport)
                && r.dst.matches(key.dst, dst_vrf)
                && r.src.matches(key.src, src_vrf)
        };
        // The first match is the lowest of each list's first match. The
        // rules for any protocol and port first, whole, as a policy was
        // scanned without the index (in a policy the index cannot narrow,
        // they are all its rules); then each other list up to the best
        // found so far.
        let [first, rest @ ..] = self.index.candidates(key.proto, key.dport);
        let mut best = first.iter().find(|r| matches(r));
        for list in rest {
            let before = best.map_or(u32::MAX, |b| b.at);
            if let Some(r) = list.iter().take_while(|r| r.at < before).find(|r| matches(r)) {
                best = Some(r);
            }
        }
        best.map_or((self.default, None), |r| (r.action, Some(r.at as usize)))
    }

    /// Whether some rule names a network (`Endpoint::Network`) as its
    /// source, and as its destination: the sides whose networks
    /// `evaluate` must be given.
    #[inline]
    pub fn names_networks(&self) -> (bool, bool) {
        self.networks
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True with no rules.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An address and length as integers of the key's width, for matching.
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: u128,
    mask: u128,
}

fn net(p: &Prefix) -> Net {
    // Keys hold IPv4 as IPv4-mapped IPv6; prefixes are matched the same way.
    let (addr, len) = match p.addr() {
        IpAddr::V4(a) => (0xffff_0000_0000u128 | u128::from(u32::from(a)), 96 + u32::from(p.len())),
        IpAddr::V6(a) => (u128::from(a), u32::from(p.len())),
    };
    let len = len as u8;
    Net { addr: addr.mask(len), mask: u128::MAX.mask(len) }
}

impl Endpoint {
    #[inline]
    fn matches(&self, addr: u128, vrf: Option<u32>) -> bool {
        match self {
            Endpoint::Any => true,
            Endpoint::Prefix(p) => {
                let n = net(p);
                addr & n.mask == n.addr
            }
            Endpoint::Network(v) => vrf == Some(*v),
        }
    }
}

impl Rule {
    /// True if the rule matches the flow. `src_vrf` and `dst_vrf` are the
    /// networks the addresses belong to, where the caller knows them.
    #[inline]
    pub fn matches(&self, key: &FlowKey, src_vrf: Option<u32>, dst_vrf: Option<u32>) -> bool {
        self.proto.is_none_or(|p| p == key.proto)
            && self.sport.contains(key.sport)
            && self.dport.contains(key.dport)
            && self.src.matches(key.src, src_vrf)
            && self.dst.matches(key.dst, dst_vrf)
    }
}

impl Policy {
    /// The form the data path evaluates.
    pub fn compile(&self) -> CompiledPolicy {
        let rules = self.rules.iter().enumerate().map(|(at, r)| Compiled {
            at: at as u32,
            src: Side::of(&r.src),
            dst: Side::of(&r.dst),
            proto: r.proto.map_or(256, u16::from),
            sport: (r.sport.lo, r.sport.hi),
            dport: (r.dport.lo, r.dport.hi),
            action: r.action,
        });
        CompiledPolicy {
            index: RuleIndex::of(rules),
            len: self.rules.len(),
            default: self.default,
            networks: (
                self.rules.iter().any(|r| matches!(r.src, Endpoint::Network(_))),
                self.rules.iter().any(|r| matches!(r.dst, Endpoint::Network(_))),
            ),
        }
    }

    /// Allows everything.
    pub fn allow_all() -> Policy {
        Policy { rules: Vec::new(), default: PolicyAction::Allow }
    }

    /// The action for a flow's first packet, and the index of the rule that
    /// decided (`None`: the default).
    pub fn evaluate(&self, key: &FlowKey, src_vrf: Option<u32>, dst_vrf: Option<u32>) -> (PolicyAction, Option<usize>) {
        match self.rules.iter().position(|r| r.matches(key, src_vrf, dst_vrf)) {
            Some(i) => (self.rules[i].action, Some(i)),
            None => (self.default, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> FlowKey {
        FlowKey::v4(1, proto, u32::from_be_bytes(src), u32::from_be_bytes(dst), 40000, dport)
    }

    /// The founding article: the nginx network may reach the leonardo
    /// service address, and nothing else.
    #[test]
    fn nginx_reaches_the_leonardo_service_and_nothing_else() {
        let svc: Prefix = "10.254.98.15/32".parse().unwrap();
        let p = Policy {
            rules: vec![Rule {
                src: Endpoint::Network(1),
                dst: Endpoint::Prefix(svc),
                proto: Some(6),
                sport: PortRange::ANY,
                dport: PortRange { lo: 80, hi: 80 },
                action: PolicyAction::Allow,
            }],
            default: PolicyAction::Deny,
        };
        let ok = key([10, 32, 1, 2], [10, 254, 98, 15], 6, 80);
        assert_eq!(p.evaluate(&ok, Some(1), None), (PolicyAction::Allow, Some(0)));
        assert_eq!(p.evaluate(&key([10, 32, 1, 2], [10, 254, 98, 15], 6, 22), Some(1), None).0, PolicyAction::Deny);
        assert_eq!(p.evaluate(&key([10, 32, 1, 2], [10, 47, 255, 250], 6, 80), Some(1), None).0, PolicyAction::Deny);
        assert_eq!(p.evaluate(&ok, Some(2), None).0, PolicyAction::Deny, "another network");
        let c = p.compile();
        for (k, v) in [(ok, Some(1)), (ok, Some(2)), (key([10, 32, 1, 2], [10, 254, 98, 15], 6, 22), Some(1))] {
            assert_eq!(c.evaluate(&k, v, None), p.evaluate(&k, v, None));
        }
        assert_eq!(p.evaluate(&key([10, 32, 1, 2], [10, 254, 98, 15], 17, 80), Some(1), None).0, PolicyAction::Deny);
    }

    #[test]
    fn first_match_wins_and_prefixes_match_by_length() {
        let p = Policy {
            rules: vec![
                Rule {
                    src: Endpoint::Any,
                    dst: Endpoint::Prefix("10.1.0.0/16".parse().unwrap()),
                    proto: None,
                    sport: PortRange::ANY,
                    dport: PortRange::ANY,
                    action: PolicyAction::Deny,
                },
                Rule {
                    src: Endpoint::Any,
                    dst: Endpoint::Prefix("10.0.0.0/8".parse().unwrap()),
                    proto: None,
                    sport: PortRange::ANY,
                    dport: PortRange::ANY,
                    action: PolicyAction::Allow,
                },
            ],
            default: PolicyAction::Deny,
        };
        assert_eq!(p.evaluate(&key([1, 1, 1, 1], [10, 1, 2, 3], 17, 53), None, None), (PolicyAction::Deny, Some(0)));
        assert_eq!(p.evaluate(&key([1, 1, 1, 1], [10, 2, 2, 3], 17, 53), None, None), (PolicyAction::Allow, Some(1)));
        assert_eq!(p.evaluate(&key([1, 1, 1, 1], [11, 2, 2, 3], 17, 53), None, None), (PolicyAction::Deny, None));
        let v6: Prefix = "fd00::/8".parse().unwrap();
        let r = Rule { dst: Endpoint::Prefix(v6), action: PolicyAction::Allow, ..p.rules[0] };
        assert!(r.matches(&FlowKey::v6(1, 6, 1, 0xfd00 << 112, 1, 2), None, None));
        assert!(!r.matches(&key([1, 1, 1, 1], [253, 0, 0, 1], 6, 2), None, None), "an IPv4 key never matches IPv6");
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        let r = Rule { dst: Endpoint::Prefix(all), ..r };
        assert!(r.matches(&key([1, 1, 1, 1], [253, 0, 0, 1], 6, 2), None, None));
        assert!(!r.matches(&FlowKey::v6(1, 6, 1, 0xfd00 << 112, 1, 2), None, None), "0.0.0.0/0 is IPv4 only");
    }

    /// The compiled policy, whose index takes a flow to the rules that may
    /// match it (`RuleIndex`), answers as the rules in order do, whatever
    /// the rules: random policies of rules for one protocol or any, one
    /// port, a range or any, prefixes of both families and networks, on
    /// random flows from the same few protocols, ports and addresses, so
    /// that most flows match some rule, often several.
    #[test]
    fn the_index_answers_as_the_rules_in_order_do() {
        let mut rng = crate::pktgen::scenario::Rng::new(0x00c0_ffee);
        let mut pick = |n: u64| (rng.next_u64() % n) as usize;
        const PROTOS: [u8; 5] = [1, 6, 17, 47, 58];
        const PORTS: [u16; 7] = [0, 22, 53, 80, 443, 1000, 65535];
        const V4: [[u8; 4]; 4] = [[10, 1, 0, 2], [10, 1, 1, 7], [192, 168, 3, 4], [172, 16, 0, 9]];
        let prefixes: Vec<Prefix> = ["10.1.0.0/16", "10.1.1.0/24", "192.168.0.0/16", "0.0.0.0/0", "fd00::/8", "::/0"]
            .iter()
            .map(|p| p.parse().expect("a prefix"))
            .collect();
        let (mut compared, mut matched) = (0, 0);
        for _ in 0..2000 {
            let endpoint = |pick: &mut dyn FnMut(u64) -> usize| match pick(4) {
                0 => Endpoint::Any,
                1 => Endpoint::Network(1 + pick(3) as u32),
                _ => Endpoint::Prefix(prefixes[pick(prefixes.len() as u64)]),
            };
            let ports = |pick: &mut dyn FnMut(u64) -> usize| match pick(4) {
                0 => PortRange::ANY,
                1 => {
                    let (a, b) = (PORTS[pick(7)], PORTS[pick(7)]);
                    PortRange { lo: a.min(b), hi: a.max(b) }
                }
                _ => {
                    let p = PORTS[pick(7)];
                    PortRange { lo: p, hi: p }
                }
            };
            let rules = (0..pick(40))
                .map(|_| Rule {
                    src: endpoint(&mut pick),
                    dst: endpoint(&mut pick),
                    proto: (pick(3) != 0).then(|| PROTOS[pick(5)]),
                    sport: if pick(3) == 0 { ports(&mut pick) } else { PortRange::ANY },
                    dport: ports(&mut pick),
                    action: if pick(2) == 0 { PolicyAction::Allow } else { PolicyAction::Deny },
                })
                .collect();
            let policy = Policy { rules, default: PolicyAction::Deny };
            let compiled = policy.compile();
            for _ in 0..50 {
                let (proto, sport, dport) = (PROTOS[pick(5)], PORTS[pick(7)], PORTS[pick(7)]);
                let key = if pick(4) == 0 {
                    FlowKey::v6(1, proto, 0xfd00 << 112 | pick(3) as u128, pick(2) as u128, sport, dport)
                } else {
                    let [src, dst] = [V4[pick(4)], V4[pick(4)]].map(u32::from_be_bytes);
                    FlowKey::v4(1, proto, src, dst, sport, dport)
                };
                let (src_vrf, dst_vrf) = (Some(1 + pick(3) as u32).filter(|_| pick(4) != 0), Some(1 + pick(3) as u32));
                let want = policy.evaluate(&key, src_vrf, dst_vrf);
                assert_eq!(
                    compiled.evaluate(&key, src_vrf, dst_vrf),
                    want,
                    "{key:?} {src_vrf:?} {dst_vrf:?} under {policy:?}"
                );
                compared += 1;
                matched += usize::from(want.1.is_some());
            }
        }
        assert!(matched > compared / 4, "the flows match too seldom to test the order: {matched} of {compared}");
    }
}
