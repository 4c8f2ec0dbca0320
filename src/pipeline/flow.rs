//! The flow stage: for VRFs with a network policy, every TCP, UDP and ICMP
//! echo packet belongs to a flow pair. The first packet of a flow is
//! decided by the policy here, in the data path, and the pair is created at
//! once (no trip to an agent); the others find their pair. The answers of
//! an allowed flow find the pair's reverse entry, so policy is stateful.

use super::forward::{echo_ident, IpInfo, ETH};
use super::hash::key_hash;
use super::{Ctx, Frame};
use crate::flow::{
    DirSpec, FlowAction, FlowInfo, FlowKey, FlowTable, Forwarding, FragmentKey, FragmentTable, Hit, Nat, PolicyAction,
    Probe, Translation,
};
use crate::memory::Buffer;
use crate::stats::{DropReason, GeneralCause};
use crate::tables::{FloatingIp, NextHop, PortForward, RouteTarget, Tables, Vif, VifKind, Vrf};
use crate::wire::{icmpv4, icmpv6, ip_proto, ipv6ext};

/// What the flow stage knows about a packet before its next hop is carried out.
#[derive(Clone, Copy)]
pub(super) enum FlowStep {
    /// No policy in the VRF, no flow table, or a packet flows do not track.
    Off,
    /// The packet's flow exists.
    Hit(FlowKey, Hit),
    /// The packet is a later fragment whose datagram's first fragment, with
    /// the ports, has not been seen: it waits for it (`hold`).
    Early(FragmentKey),
    /// The packet starts a new flow.
    Miss(FlowKey),
    /// A packet flows do not track (another protocol, or an ICMP error with
    /// no flow), which the VRF's policy denies.
    Denied,
}

/// The packet's flow key, if flows track it (`Ok(Some)`): TCP, UDP and
/// ICMP echo. ICMP errors and other protocols pass untracked (`Ok(None)`).
/// A fragment after the first carries no ports: it takes those its
/// datagram's first fragment left in `fragments` (`record_first_fragment`),
/// or is untracked where that had no flow (an ICMP message other than an
/// echo). If that has not been seen, a TCP, UDP or ICMP fragment is early
/// (`Err`, with its datagram); another protocol's is untracked, as its
/// first is. Without `fragments`, later fragments are not keyed.
#[inline(always)]
pub(super) fn key_of(
    fragments: Option<(&FragmentTable, u64)>,
    vrf: u32,
    info: &IpInfo,
    d: &[u8],
) -> Result<Option<FlowKey>, FragmentKey> {
    let (sport, dport) = match info.proto {
        _ if info.frag_offset != 0 => {
            let (Some((table, now)), Some(datagram)) = (fragments, datagram_of(vrf, info, d)) else { return Ok(None) };
            match table.find(&datagram, now) {
                Some(Some(ports)) => ports,
                Some(None) => return Ok(None),
                None if may_have_flow(info) => return Err(datagram),
                None => return Ok(None),
            }
        }
        ip_proto::TCP | ip_proto::UDP => {
            (u16::from_be_bytes([info.l4[0], info.l4[1]]), u16::from_be_bytes([info.l4[2], info.l4[3]]))
        }
        ip_proto::ICMP if matches!(info.l4[0], icmpv4::kind::ECHO_REQUEST | icmpv4::kind::ECHO_REPLY) => {
            let id = echo_ident(d, info);
            (id, id)
        }
        ip_proto::ICMPV6 if matches!(info.l4[0], icmpv6::kind::ECHO_REQUEST | icmpv6::kind::ECHO_REPLY) => {
            let id = echo_ident(d, info);
            (id, id)
        }
        _ => return Ok(None),
    };
    Ok(Some(if info.v6 {
        FlowKey::v6(vrf, info.proto, info.src, info.dst, sport, dport)
    } else {
        FlowKey::v4(vrf, info.proto, info.src as u32, info.dst as u32, sport, dport)
    }))
}

/// The datagram a fragment is part of, in `vrf`: its identification is in
/// the IPv4 header, or in IPv6's fragment header.
fn datagram_of(vrf: u32, info: &IpInfo, d: &[u8]) -> Option<FragmentKey> {
    let ip = d.get(ETH..)?;
    if info.v6 {
        let ident = ipv6ext::Chain::walk(ip, info.total()).ok()?.fragment?.ident;
        return Some(FragmentKey::v6(vrf, info.proto, info.src, info.dst, ident));
    }
    let ident = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]);
    Some(FragmentKey::v4(vrf, info.proto, info.src as u32, info.dst as u32, ident))
}

/// True if a packet of `info`'s protocol may have a flow: TCP, UDP, and
/// ICMP (in its own IP version), whose echoes do.
fn may_have_flow(info: &IpInfo) -> bool {
    match info.proto {
        ip_proto::TCP | ip_proto::UDP => true,
        ip_proto::ICMP => !info.v6,
        ip_proto::ICMPV6 => info.v6,
        _ => false,
    }
}

/// Leaves what a first fragment says of its flow (`key`, in `vrf`) for
/// the later fragments of its datagram: its ports, or that it has none,
/// where a later fragment could not tell (an ICMP message other than an
/// echo).
fn record_first_fragment(table: &FragmentTable, vrf: u32, key: Option<&FlowKey>, info: &IpInfo, d: &[u8], now: u64) {
    if !info.frag || info.frag_offset != 0 || (key.is_none() && !may_have_flow(info)) {
        return;
    }
    if let Some(datagram) = datagram_of(vrf, info, d) {
        table.record(&datagram, key.map(|k| (k.sport, k.dport)), now);
    }
}

fn tcp_flags(d: &[u8], info: &IpInfo) -> u8 {
    if info.proto != ip_proto::TCP || info.frag_offset != 0 {
        return 0;
    }
    d.get(ETH + info.hl() + 13).copied().unwrap_or(0)
}

/// The flow an ICMP or ICMPv6 error belongs to: the reverse of the packet
/// it quotes. Without it, a policy with port rules would deny the errors of
/// the flows it allows, Packet Too Big included, and IPv6 path MTU
/// discovery with them.
fn error_key(vrf: u32, info: &IpInfo, d: &[u8]) -> Option<FlowKey> {
    if info.frag {
        return None;
    }
    // The quoted packet, up to the end of the error (not the frame's padding).
    let quote = d.get(ETH + info.hl() + 8..ETH + info.total())?;
    match (info.v6, info.proto) {
        (false, ip_proto::ICMP) if icmpv4::is_error(info.l4[0]) => quoted_v4(vrf, quote),
        (true, ip_proto::ICMPV6) if icmpv6::is_error(info.l4[0]) => quoted_v6(vrf, quote),
        _ => None,
    }
}

/// The transport ports of a quoted packet whose transport header starts at
/// `at`: TCP and UDP ports, or an ICMP or ICMPv6 echo's identifier twice.
fn quoted_ports(q: &[u8], at: usize, proto: u8) -> Option<(u16, u16)> {
    let port = |at: usize| Some(u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]));
    match proto {
        ip_proto::TCP | ip_proto::UDP => Some((port(at)?, port(at + 2)?)),
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let id = port(at + 4)?;
            Some((id, id))
        }
        _ => None,
    }
}

fn quoted_v4(vrf: u32, q: &[u8]) -> Option<FlowKey> {
    let qhl = usize::from(*q.first()? & 0x0f) * 4;
    let word = |at: usize| Some(u32::from_be_bytes([*q.get(at)?, *q.get(at + 1)?, *q.get(at + 2)?, *q.get(at + 3)?]));
    let (src, dst, proto) = (word(12)?, word(16)?, *q.get(9)?);
    let (sport, dport) = quoted_ports(q, qhl, proto)?;
    Some(FlowKey::v4(vrf, proto, dst, src, dport, sport))
}

fn quoted_v6(vrf: u32, q: &[u8]) -> Option<FlowKey> {
    let addr = |at: usize| Some(u128::from_be_bytes(q.get(at..at + 16)?.try_into().ok()?));
    let (src, dst) = (addr(8)?, addr(24)?);
    // The quote is often cut short of the packet's length: walk what is there.
    let chain = ipv6ext::Chain::walk(q, q.len()).ok()?;
    if chain.fragment.is_some_and(|f| f.offset != 0) {
        return None;
    }
    let (sport, dport) = quoted_ports(q, chain.header_len, chain.next_header)?;
    Some(FlowKey::v6(vrf, chain.next_header, dst, src, dport, sport))
}

/// True when a packet routed in `vrf`, from `in_vif`, belongs to a flow:
/// in VRFs that track flows (`Vrf::tracks_flows`), and from vifs with
/// floating IPs (their answers must find the NAT).
#[inline]
pub(super) fn tracked(vrf: &Vrf, in_vif: Option<&Vif>) -> bool {
    vrf.tracks_flows() || in_vif.is_some_and(|v| !v.floating.is_empty())
}

/// `tracked`, for every packet routed in `vrf` from `in_vif`, whatever its
/// route: what the first stage, before the route lookup, may probe for.
#[inline]
fn tracked_up_front(vrf: &Vrf, in_vif: Option<&Vif>) -> bool {
    vrf.tracks_every_flow() || in_vif.is_some_and(|v| !v.floating.is_empty())
}

/// True when a packet routed in `vrf` from `in_vif` to `target` belongs to
/// a flow: as `tracked_up_front` says; or, in a VRF that tracks flows for
/// its ECMP routes, when it goes to a composite (whose member the flow
/// pins); or when it goes to a pod of another network on this node whose
/// policy must judge it too (`policed_elsewhere`). Other pod-to-pod
/// packets in such a VRF stay untracked.
#[inline]
pub(super) fn tracked_to(t: &Tables, vrf: &Vrf, in_vif: Option<&Vif>, target: RouteTarget) -> bool {
    tracked_up_front(vrf, in_vif)
        || match t.nexthop(target.nh) {
            Some(NextHop::Composite(_)) => vrf.ecmp_routes > 0,
            Some(NextHop::Encap { oif, .. }) => t.vif(*oif).is_some_and(|out| policed_elsewhere(t, vrf, out)),
            _ => false,
        }
}

/// True when a packet routed in `vrf` to local vif `out` enters a pod of
/// another network whose policy judges its flows: that policy judges the
/// flow too (`judge`), as it would on the pod's node if the pod were
/// remote (where the tunnel delivers the packet into the pod's VRF). The
/// callers leave out a floating IP's flows, which are the public
/// network's.
#[inline]
pub(super) fn policed_elsewhere(t: &Tables, vrf: &Vrf, out: &Vif) -> bool {
    out.vrf != vrf.id && out.kind == VifKind::Virtual && t.vrf(out.vrf).is_some_and(|v| v.policy.is_some())
}

/// The first of a vector's two prefetch steps, for one packet: where its
/// flow lives, if flows track it, with that place's tag lines on their way
/// (the second step is `FlowTable::prefetch_slots`). The probe is written
/// into `probe`, in place (it is 88 bytes), and the answer says whether one
/// was made. ICMP errors and untracked packets get none: they are rare, and
/// looked up cold.
#[inline]
pub(super) fn prefetch<B>(
    ctx: &Ctx<'_, B>,
    vrf: &Vrf,
    in_vif: Option<&Vif>,
    info: &IpInfo,
    d: &[u8],
    probe: &mut Probe,
) -> bool {
    // A later fragment's key is known only once the fragments before it
    // in the vector were looked up: it is looked up cold.
    let (Some(table), true, 0) = (ctx.flows, tracked_up_front(vrf, in_vif), info.frag_offset) else { return false };
    match key_of(None, vrf.id, info, d) {
        Ok(Some(key)) => start_probe(table, table.probe_whole(&key), probe),
        _ => false,
    }
}

/// `prefetch`, for a frame the fast path took (`fast::classify`), routed in
/// `vrf`, once the caller knows flows may track it: in a VRF that tracks
/// every flow, from a vif with floating IPs (the lane's, `fast::allowed`),
/// or, in one that tracks flows for its ECMP routes alone, when the VRF's
/// hint names its address (`Vrf::ecmp_blocks`) or its route named a
/// composite (`tracked_to`). The key comes straight from its header.
/// False if it has none.
#[inline(always)]
pub(super) fn prefetch_fast<B: Buffer>(table: &FlowTable, f: &Frame<B>, vrf: &Vrf, probe: &mut Probe) -> bool {
    match super::fast::head(f) {
        Some(h) => prefetch_head(table, h, vrf, probe),
        None => false,
    }
}

/// `prefetch_fast` from the first `fast::HEAD` bytes of a frame, or of a
/// tunnel's inner packet with the 14 bytes before it, before it is stripped.
#[inline(always)]
pub(super) fn prefetch_head(table: &FlowTable, h: &[u8; super::fast::HEAD], vrf: &Vrf, probe: &mut Probe) -> bool {
    // A match, not `is_some_and`: its closure was compiled out of line,
    // and the key went through memory (40 instructions a hit, callgrind).
    match super::fast::flow_key(h, vrf.id) {
        Some(key) => start_probe(table, table.probe(&key), probe),
        None => false,
    }
}

/// `prefetch_head` for a key the caller made: the IPv6 lane's
/// (`fast6::flow_key`), whose probe fetches the whole slot, where an IPv6
/// key's second half is.
#[inline(always)]
pub(super) fn prefetch_key(table: &FlowTable, key: &FlowKey, probe: &mut Probe) {
    start_probe(table, table.probe(key), probe);
}

/// Keeps a key's probe (`made`: `FlowTable::probe`, or `probe_whole` for
/// the general path, which reads the whole slot) and starts fetching its
/// tag line: the first lookup step, for both paths. Always true, for
/// `is_some_and`.
#[inline(always)]
fn start_probe(table: &FlowTable, made: Probe, probe: &mut Probe) -> bool {
    *probe = made;
    table.prefetch_tags(probe);
    true
}

/// Looks the packet's flow up, once the caller has found that flows track
/// it (`tracked_to` for a routed packet, `tracked` for one with no route).
/// An ICMP error finds the flow of the packet it quotes. `probe` is the one
/// `prefetch` made for this packet in this VRF, if any: its hash is not
/// computed again, and its slot is already on its way.
#[inline]
pub(super) fn lookup<B>(
    ctx: &Ctx<'_, B>,
    vrf: &Vrf,
    in_vif: Option<&Vif>,
    info: &IpInfo,
    d: &[u8],
    probe: Option<&Probe>,
) -> FlowStep {
    let Some(table) = ctx.flows else { return FlowStep::Off };
    let keyed = match key_of(Some((table.fragments(), ctx.now)), vrf.id, info, d) {
        Ok(keyed) => keyed,
        Err(datagram) => return FlowStep::Early(datagram),
    };
    record_first_fragment(table.fragments(), vrf.id, keyed.as_ref(), info, d, ctx.now);
    if let Some(key) = keyed {
        let found = match probe {
            Some(p) => {
                debug_assert!(p.is_for(&key), "a probe made for another packet");
                table.find(p)
            }
            None => table.lookup(&key),
        };
        return match found {
            Some(hit) if opens_what_was_denied(vrf, in_vif, &key, &hit) => {
                table.remove(hit.slot);
                FlowStep::Miss(key)
            }
            Some(hit) => FlowStep::Hit(key, hit),
            None => FlowStep::Miss(key),
        };
    }
    if let Some((key, hit)) = error_key(vrf.id, info, d).and_then(|k| table.lookup(&k).map(|h| (k, h))) {
        return FlowStep::Hit(key, hit);
    }
    // Untracked, but not unpoliced: the policy decides each such packet on
    // its own, by addresses and protocol (ports 0).
    let bare = if info.v6 {
        FlowKey::v6(vrf.id, info.proto, info.src, info.dst, 0, 0)
    } else {
        FlowKey::v4(vrf.id, info.proto, info.src as u32, info.dst as u32, 0, 0)
    };
    match decide(vrf, &bare, in_vif, None).action {
        FlowAction::Drop(_) => FlowStep::Denied,
        FlowAction::Forward => FlowStep::Off,
    }
}

/// True for a packet on the reverse entry of a pair its policy denied,
/// which this VRF's policy lets open the conversation from this side: the
/// pair was made by the other side, which may not open it (a datagram or
/// a SYN from a server whose client's pair had aged out, say), and would
/// drop this side's packets too, for as long as they kept coming. The
/// pair is made again from this side (`create`), the whole policy
/// judging; a segment without SYN from the other side never makes such a
/// pair (`midstream`). A denial stays cached for the side it denies.
fn opens_what_was_denied(vrf: &Vrf, in_vif: Option<&Vif>, key: &FlowKey, hit: &Hit) -> bool {
    !hit.forward
        && hit.action == FlowAction::Drop(DropReason::FlowActionDrop)
        && hit.nat.is_none()
        && hit.route_vrf.is_none()
        && decide(vrf, key, in_vif, None).action == FlowAction::Forward
}

/// The fast path's flow check, for a packet of a VRF that tracks flows,
/// with the probe made for it: its flow, if that flow's entry says only
/// "forward", under the current policy, with no NAT and no other VRF to
/// route in. Anything else (a new flow, a drop, a policy changed since, a
/// floating IP's rewrite) is `None`: the general path creates, decides
/// again, rewrites or drops. Always inlined: out of line, in the fabric's
/// lane, a hit cost 40 instructions more (callgrind).
#[inline(always)]
pub(super) fn settled<B>(ctx: &Ctx<'_, B>, vrf: &Vrf, probe: &Probe) -> Option<Forwarding> {
    ctx.flows?.forward_only(probe, Some(vrf.policy_generations()))
}

/// `settled`, for a hit that is not plain: its flow, if that flow's entry
/// forwards, with the rewrite it makes and the VRF it routes in (a
/// floating IP's NAT, its answers' public VRF; the network of the client
/// a pod of another network answers). Judged as `on_hit` judges: the
/// reverse entry of a pair across VRFs by its forward entry, under the
/// policy of the VRF it routes in, the forward entry's (`judging`).
#[inline]
pub(super) fn translated<B>(ctx: &Ctx<'_, B>, vrf: &Vrf, probe: &Probe) -> Option<(Forwarding, Translation)> {
    ctx.flows?.forward_translated(probe, vrf.policy_generations(), |id| judging(ctx.t, id))
}

/// The policy generations of VRF `id` of `t`, which judges the pairs whose
/// reverse entries route in it (`FlowTable::forward_translated`). Inlined:
/// out of line, the answers' hits took 15-26 instructions more (callgrind,
/// one codegen unit).
#[inline(always)]
fn judging(t: &crate::tables::Tables, id: u32) -> Option<crate::flow::PolicyGenerations> {
    t.vrf(id).map(|v| v.policy_generations())
}

/// Why the fast lane refused the flow `probe` found, for the count of why
/// frames took the general path (`general::cause`): the table holds none
/// (a new flow), or its entry does not forward under `vrf`'s policy now.
/// `None`: its entry forwards, and something past the flow refused it.
/// Here, beside the lane's own reads, not in `general`: called from there,
/// `find` moved the crate's partition into codegen units, and LLVM inlined
/// less into the fabric lane (decap +18-29 instructions a packet,
/// callgrind; built with one codegen unit, no lane paid for the count).
#[inline(never)]
pub(super) fn refused(t: &crate::tables::Tables, table: &FlowTable, probe: &Probe, vrf: &Vrf) -> Option<GeneralCause> {
    // No tag of its key in its first bucket, where nearly every key lives:
    // new, without a look at its second (a cache miss a new flow's frame
    // paid for nothing: flow setup took 1.3x as long).
    if !probe.hinted() || table.find(probe).is_none() {
        return Some(GeneralCause::NewFlow);
    }
    let elsewhere = |id| judging(t, id);
    table.forward_translated(probe, vrf.policy_generations(), elsewhere).is_none().then_some(GeneralCause::FlowDecision)
}

/// `prefetch_fast` and `FlowTable::prefetch_slots` at once, for a frame
/// whose route, looked up first, says that flows track it: its flow is
/// looked up cold. Out of line: it is the rare way (a route wider than
/// the VRF's hint), and the lane's registers are the common way's.
#[inline(never)]
pub(super) fn probe_cold<B: Buffer>(table: &FlowTable, f: &Frame<B>, vrf: &Vrf, probe: &mut Probe) -> bool {
    if !prefetch_fast(table, f, vrf, probe) {
        return false;
    }
    table.prefetch_slots(probe);
    true
}

/// Counts a packet of `bytes` (with `tcp_flags`) on its settled flow (in
/// `slot`), once the fast path has decided to send it, as `on_hit` counts
/// the others.
/// Out of line: inlined into the copies of `fast::finish`, its loads and
/// stores cost the untracked path 15-20 instructions a packet in spilled
/// registers, more than the call costs a hit (callgrind).
#[inline(never)]
pub(super) fn count_settled<B>(ctx: &Ctx<'_, B>, slot: u32, bytes: usize, tcp_flags: u8) {
    if let Some(table) = ctx.flows {
        table.touch(slot, bytes as u32, tcp_flags, ctx.now);
    }
}

/// The action on a flow routed in `vrf` whose first packet (`key`) came
/// in on `from`: `vrf`'s policy decides, and where the flow `reaches` a
/// pod of another network on this node (`policed_elsewhere`: that
/// network's VRF), that network's policy too; both must allow it. Had the
/// pod been remote, its node would have judged the flow by its network's
/// policy (the tunnel delivers it into that VRF): so a pod's policy holds
/// alike whether its clients are on its node or not. With the action, the
/// rule that decided it (`Ruling`): the other network's where that judged
/// too and has a policy, `None` where no policy judged.
/// And whether an address a policy judged by its network had no route
/// (`Decision::unrouted`). `source`: the source's network, where the
/// vector's stage two looked it up (`KnownSource`; `decide` checks it is
/// this key's).
fn judge(
    vrf: &Vrf,
    key: &FlowKey,
    from: Option<&Vif>,
    reaches: Option<&Vrf>,
    source: Option<KnownSource>,
) -> (FlowAction, Option<Ruling>, bool) {
    let (d, rulings) = judge_by_both(vrf, key, from, reaches, source);
    (d.action, rulings.decided, d.unrouted)
}

/// A new flow's source address and its network in a VRF, looked up in the
/// vector's stage two with its other route lookups, so that the misses of
/// the vector's new flows overlap: looked up one at a time as each is
/// decided (`decide`), a tunnel's new flows from addresses of a large
/// table waited on each walk in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KnownSource {
    /// The VRF whose routes it was looked up in.
    pub vrf: u32,
    /// The address as a flow key holds it (`FlowKey::src`), and its family.
    pub addr: u128,
    pub v6: bool,
    /// Its route's network (`Fib::network_at`).
    pub network: Option<crate::tables::VrfId>,
}

impl KnownSource {
    /// The network of `key`'s source in `vrf`, if this is it.
    fn of(self, vrf: &Vrf, key: &FlowKey) -> Option<Option<crate::tables::VrfId>> {
        (self.vrf == vrf.id && self.v6 != key.is_v4() && self.addr == key.src).then_some(self.network)
    }
}

/// The rules behind a flow's action: the one that decided it and, where
/// two policies judged it, the one of the flow's own VRF that let it on
/// to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rulings {
    /// The rule that decided (`None`: no policy judged the flow).
    decided: Option<Ruling>,
    /// Where the pod's network's policy decided, the rule of the flow's
    /// own VRF's policy that allowed it first (`None`: only one judged).
    passed_by: Option<Ruling>,
}

/// `judge`, with both policies' rules where two judged: for operators,
/// who ask which rules let a flow through, not only which decided.
fn judge_by_both(
    vrf: &Vrf,
    key: &FlowKey,
    from: Option<&Vif>,
    reaches: Option<&Vrf>,
    source: Option<KnownSource>,
) -> (Decision, Rulings) {
    let here = decide(vrf, key, from, source);
    let Some(other) = reaches.filter(|_| here.action == FlowAction::Forward) else {
        return (here, Rulings { decided: here.rule, passed_by: None });
    };
    let there = decide(other, &FlowKey { vrf: other.id, ..*key }, from, None);
    let both = Decision { unrouted: here.unrouted || there.unrouted, ..there };
    match there.rule {
        // No policy there: this one's rule let it through.
        None => (both, Rulings { decided: here.rule, passed_by: None }),
        Some(_) => (both, Rulings { decided: there.rule, passed_by: here.rule }),
    }
}

/// One policy's decision on a flow (`decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    action: FlowAction,
    /// The rule that decided (`None`: no policy).
    rule: Option<Ruling>,
    /// The policy names networks on a side whose address had no route, so
    /// was in no network: once its route comes, the decision may differ.
    unrouted: bool,
}

/// Which rule decided a flow: the VRF whose policy it is, and the rule's
/// index in that policy (`None`: the policy's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ruling {
    /// The VRF whose policy decided.
    pub vrf: u32,
    /// The rule's index, as `vrctl policy list` numbers them (`None`: the default).
    pub rule: Option<usize>,
}

/// What the current policies say of a pair (`judgement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The rule that decides it (`None`: no policy judges it).
    pub rule: Option<Ruling>,
    /// Where the policy of the network of the pod it reaches decides it,
    /// the rule of its own VRF's policy that allowed it first
    /// (`Rulings::passed_by`).
    pub passed_by: Option<Ruling>,
    /// False if the policies changed since its action was decided: its
    /// next packet decides it again (`on_hit`), so until then its action
    /// may not be what `rule` says.
    pub current: bool,
}

/// What the current policies in `t` say of the pair that entry `f` of
/// `table` belongs to, as the data path judges a pair (`on_hit`): by its
/// forward entry, in that entry's VRF and, where the pair reaches a pod of
/// another network on this node, in that network's too. For operators:
/// "which rule let this through, or stopped it?" A pair whose VRF is gone
/// is judged by nothing, and claimed current.
///
/// `None` if the pair is no longer whole: its other entry was removed
/// since `f` was read (ageing goes on while an operator lists the table,
/// and removes a pair one entry after the other) or belongs to another
/// pair by now. Such an entry is on its way out, and a listing leaves it
/// out rather than show it judged by nothing.
pub fn judgement(t: &Tables, table: &FlowTable, f: &FlowInfo) -> Option<Judgement> {
    let other = table.get(f.reverse, 0).filter(|o| o.reverse == f.slot)?;
    let (fwd, rev) = if f.forward { (f, &other) } else { (&other, f) };
    let Some(vrf) = t.vrf(fwd.key.vrf) else { return Some(Judgement { rule: None, passed_by: None, current: true }) };
    let reaches = reached(t, vrf, &fwd.key, rev.key.vrf, !fwd.nat.is_none());
    let rulings = judge_by_both(vrf, &fwd.key, t.vif(fwd.vif), reaches, None).1;
    Some(Judgement {
        rule: rulings.decided,
        passed_by: rulings.passed_by,
        current: !fwd.unrouted && !stale(vrf, fwd.policy_generation, reaches),
    })
}

/// Whether a pair of `vrf` decided under `generation` must be decided
/// again. Its VRF's generation moves with a change of the VRF's own policy
/// and with one of another network's whose pods its routes reach
/// (`TablesWriter::judge_again_reaching`, VRF by VRF). A pair is judged by
/// its own VRF's policy and by that of the network whose pod it reaches
/// (`reaches`), if any: unless one of those changed since, its decision
/// stands, and only its stamp needs the new generation
/// (`FlowTable::keep_decision`), once. (Until `Vrf::reached_changes`, a
/// pair that reached another network's pod was decided again after any
/// network's change.) The fast path's test for its entries of one VRF is
/// the same (`flow::table::PolicyGenerations::keeps`); it leaves those
/// that reach another network's to this one.
fn stale(vrf: &Vrf, generation: u32, reaches: Option<&Vrf>) -> bool {
    let now = vrf.policy_generation;
    now != generation
        && (!vrf.policy_generations().own_unchanged_since(generation)
            || reaches.is_some_and(|r| vrf.reached_changes.changed_since(now, r.id, generation)))
}

/// The network of the pod a pair reaches on this node, where that is not
/// the pair's own (`forward`'s VRF, `vrf`): the reverse entry's VRF
/// (`reverse_vrf`), where the pair's answers come from. Its policy judges
/// the pair too (`judge`). A pair translated through a floating IP
/// (`natted`) reaches it so only where the floating IP is of the pod's own
/// network (a service's address, routed here by an import, which keeps
/// its network): a public floating IP's pair is the public network's
/// alone, which exposes the pod.
fn reached<'t>(t: &'t Tables, vrf: &Vrf, forward: &FlowKey, reverse_vrf: u32, natted: bool) -> Option<&'t Vrf> {
    if reverse_vrf == forward.vrf || (natted && vrf.network_of(!forward.is_v4(), forward.dst) != Some(reverse_vrf)) {
        return None;
    }
    t.vrf(reverse_vrf)
}

/// `vrf`'s policy on a flow whose first packet (`key`) came in on `from`.
/// A rule that names a network matches an address of that network: a
/// packet from a pod is from the pod's network; any other address is in
/// the network its route in `vrf` names (`RouteEntry::network`: the VRF's
/// own, or the one an imported route came from), and in none without a
/// route. So a policy judges a remote pod's packets, which arrive by
/// tunnel, by the pod's network, as Contrail does by the source route's.
/// `source`, if it is this key's source in `vrf`, spares that lookup.
fn decide(vrf: &Vrf, key: &FlowKey, from: Option<&Vif>, source: Option<KnownSource>) -> Decision {
    let Some(p) = &vrf.policy else { return Decision { action: FlowAction::Forward, rule: None, unrouted: false } };
    let (src_named, dst_named) = p.compiled.names_networks();
    let network_of = |addr: u128| vrf.network_of(!key.is_v4(), addr);
    let (src, src_routed) = match from {
        Some(v) if v.kind == VifKind::Virtual => (Some(v.vrf), true),
        _ if src_named => {
            let network = source.and_then(|s| s.of(vrf, key)).unwrap_or_else(|| network_of(key.src));
            network.map_or((None, false), |n| (Some(n), true))
        }
        _ => (None, true),
    };
    let dst = if dst_named { network_of(key.dst) } else { None };
    let (action, rule) = p.compiled.evaluate(key, src, dst);
    let action = match action {
        PolicyAction::Allow => FlowAction::Forward,
        PolicyAction::Deny => FlowAction::Drop(DropReason::FlowActionDrop),
    };
    Decision { action, rule: Some(Ruling { vrf: vrf.id, rule }), unrouted: !src_routed || (dst_named && dst.is_none()) }
}

/// A packet of an existing flow: decided again if the policy changed since,
/// counted, and dropped if the flow's action says so.
#[inline]
pub(super) fn on_hit<B>(
    ctx: &Ctx<'_, B>,
    vrf: &Vrf,
    key: &FlowKey,
    hit: &Hit,
    d: &[u8],
    info: &IpInfo,
) -> Result<(), DropReason> {
    let Some(table) = ctx.flows else { return Ok(()) };
    let mut action = hit.action;
    // A pair is judged by its forward direction, in its forward entry's
    // VRF (`forward_vrf`), from whichever side its packet comes. The
    // reverse entry of a floating IP's pair, or of a pair to a pod in
    // another VRF, lives in the pod's VRF, under another policy, and
    // routes in the forward entry's (`create`): judged in its own, the two
    // VRFs' policies would take turns rewriting the pair on every packet;
    // not judged at all, as until `277b551`, the pod's answers went on
    // through a denial for as long as the client stayed silent. A pair
    // whose VRF is gone is judged by nothing.
    let elsewhere = !hit.forward && hit.route_vrf.is_some();
    let forward_vrf = match hit.route_vrf.filter(|_| elsewhere) {
        Some(id) => ctx.t.vrf(id),
        None => Some(vrf),
    };
    // Decided again after a change of a policy that judges it (a new one,
    // or none left: then the pair forwards), and while an address it
    // judges by network has no route.
    let current = forward_vrf.is_none_or(|v| v.policy_generation == hit.policy_generation);
    if let Some(forward_vrf) = forward_vrf.filter(|_| !current || hit.unrouted) {
        // The pair's forward key, and the VRF of its reverse entry, where
        // the answers come from (`None`: the forward entry's). Across VRFs,
        // the forward entry's own key: the reverse entry's may be rewritten
        // (a floating IP's). A pair torn meanwhile is on its way out.
        let ends = match (hit.forward, elsewhere) {
            (true, _) => Some((*key, table.key(hit.reverse).map(|r| r.vrf))),
            (false, false) => Some((key.reversed(), None)),
            (false, true) => table.key(hit.reverse).map(|f| (f, Some(key.vrf))),
        };
        if let Some((forward_key, reverse_vrf)) = ends {
            // The pod the pair reaches on this node, if it is of another
            // network: its policy judges the pair too (`judge`).
            let natted = !hit.nat.is_none();
            let reaches = reverse_vrf.and_then(|r| reached(ctx.t, forward_vrf, &forward_key, r, natted));
            if hit.unrouted || stale(forward_vrf, hit.policy_generation, reaches) {
                let creator = ctx.t.vif(table.creator(hit.slot));
                let (again, _, unrouted) = judge(forward_vrf, &forward_key, creator, reaches, None);
                // Still without its route, and as decided: nothing to write.
                if !(current && unrouted && again == action) {
                    table.decide_again(key, hit, again, forward_vrf.policy_generation, unrouted);
                }
                action = again;
            } else {
                table.keep_decision(key, hit, forward_vrf.policy_generation);
            }
        }
    }
    table.touch(hit.slot, info.total() as u32, tcp_flags(d, info), ctx.now);
    match action {
        FlowAction::Forward => Ok(()),
        FlowAction::Drop(r) => Err(r),
    }
}

/// A new flow's first packet, once its next hop (and ECMP member) is
/// known: the policy decides, and the pair is made with the member pinned.
/// A packet to a floating IP of the vif it leaves by is DNATed to the vif's
/// address, and the pair's reverse entry, in the vif's own VRF, SNATs the
/// answers back and routes them in this (public) VRF. A packet to a pod of
/// another VRF on this node (a route one network imports from another)
/// gets its reverse entry in that pod's VRF, where its answers are looked
/// up, routing them back in this one: without it the answers were judged
/// as new flows by the other VRF's policy, and denied where that policy
/// allows only what comes in. Returns the rewrite for this packet.
#[allow(clippy::too_many_arguments)] // The packet, its flow and its two ends: each is needed.
pub(super) fn create<B>(
    ctx: &Ctx<'_, B>,
    vrf: &Vrf,
    key: &FlowKey,
    in_vif: u32,
    out: Option<&Vif>,
    ecmp: Option<RouteTarget>,
    d: &[u8],
    info: &IpInfo,
) -> Result<Nat, DropReason> {
    let Some(table) = ctx.flows else { return Ok(Nat::default()) };
    let pod = out.filter(|v| v.kind == VifKind::Virtual);
    let (fip, target_port) = match pod {
        Some(v) => to_floating(v, vrf.id, key)?,
        None => (None, None),
    };
    // A pod of another network on this node whose policy judges the flow too.
    let reaches =
        pod.filter(|o| policed_elsewhere(ctx.t, vrf, o)).and_then(|o| reached(ctx.t, vrf, key, o.vrf, fip.is_some()));
    let from = ctx.t.vif(in_vif);
    let (action, _, unrouted) = judge(vrf, key, from, reaches, ctx.source);
    if let Some(stateless) = midstream(ctx.t, vrf, key, from, out, action, d, info) {
        return stateless.map(|()| Nat::default());
    }
    let generation = vrf.policy_generation;
    let seed = ctx.cfg.hash_seed;
    // Where the ECMP routes alone make the VRF track flows, the answers,
    // routed to the client and not to a composite, are not tracked.
    let one_way = !vrf.tracks_every_flow();
    let route = ctx.route;
    let mut fwd = DirSpec { ecmp, hash: key_hash(seed, key), one_way, route, unrouted, ..DirSpec::new(*key, action) };
    let mut rev = DirSpec { unrouted, ..DirSpec::new(key.reversed(), action) };
    let answers = pod.and_then(|v| answers_in_pod(vrf.id, key, in_vif, v, fip, target_port).map(|a| (v, a)));
    if let Some((vif, answers)) = answers {
        // The answers come in on that vif and are looked up in its VRF:
        // the reverse entry lives there, and routes them back in this one.
        rev.key = answers.key;
        rev.route_vrf = Some(vrf.id);
        // Where they are not looked up at all, the pair is judged from
        // this direction alone.
        fwd.one_way |= ctx.t.vrf(vif.vrf).is_none_or(|v| !tracked_up_front(v, Some(vif)));
        if let Some(fip) = fip {
            let (pod, hairpin) = (answers.key.src as u32, answers.hairpin);
            fwd.nat = Nat { src: hairpin.then_some(fip), dst: Some(pod), dport: target_port, ..Nat::default() };
            rev.nat =
                Nat { src: Some(fip), dst: hairpin.then_some(pod), sport: target_port.map(|_| key.dport), dport: None };
        }
    }
    rev.hash = key_hash(seed, &rev.key);
    let hit = match table.create(&fwd, &rev, in_vif, generation, ctx.now) {
        Ok(h) => h,
        // Another worker made it a moment ago: count on theirs.
        Err(crate::flow::CreateError::Exists(h)) => h,
        Err(e) => return Err(e.drop_reason()),
    };
    table.touch(hit.slot, info.total() as u32, tcp_flags(d, info), ctx.now);
    match action {
        FlowAction::Forward => Ok(hit.nat),
        FlowAction::Drop(r) => Err(r),
    }
}

/// The key a new flow's answers are looked up under, where it is not the
/// flow's reversed, in its VRF (`answers_in_pod`).
struct Answers {
    key: FlowKey,
    /// The pod sent back to itself through a floating IP it holds.
    hairpin: bool,
}

/// Where the answers of a new flow (`key`, in `vrf`, from vif `in_vif`)
/// that leaves by pod `vif` are looked up, where not under its key
/// reversed, in its VRF (`None`): in the pod's VRF, where it is of another
/// network, or where the flow came to a floating IP of the pod (`fip`,
/// forwarded to `target_port` if a port forward says so); then from the
/// pod's address.
fn answers_in_pod(
    vrf: u32,
    key: &FlowKey,
    in_vif: u32,
    vif: &Vif,
    fip: Option<u32>,
    target_port: Option<u16>,
) -> Option<Answers> {
    if vif.vrf == vrf && fip.is_none() {
        return None;
    }
    let Some(fip) = fip else {
        return Some(Answers { key: FlowKey { vrf: vif.vrf, ..key.reversed() }, hairpin: false });
    };
    let pod = vif.ipv4.map_or(0, u32::from);
    // A pod sent back to itself through a floating IP it holds (a
    // service's endpoint calling its own service): from its own address,
    // it would answer itself inside its kernel, past the translation, so
    // its source becomes the floating IP too (hairpin NAT), and the
    // answers' destination the pod again.
    let hairpin = vif.index == in_vif && key.src as u32 == pod;
    let peer = if hairpin { fip } else { key.src as u32 };
    let dport = target_port.unwrap_or(key.dport);
    Some(Answers { key: FlowKey::v4(vif.vrf, key.proto, pod, peer, dport, key.sport), hairpin })
}

/// For a new flow (`probe`'s, in `vrf`, from vif `in_vif`) routed to
/// `target` (a composite's member, as `forward::resolve` will choose it):
/// the key its answers will be looked up under, where that is not the
/// probe's reversed, in its VRF (`answers_in_pod`).
pub(super) fn answers_apart<B>(
    ctx: &Ctx<'_, B>,
    vrf: &Vrf,
    probe: &Probe,
    target: Option<RouteTarget>,
    in_vif: u32,
) -> Option<FlowKey> {
    let t = ctx.t;
    let key = probe.key();
    let nh = match t.nexthop(target?.nh)? {
        // The member `forward::resolve` will choose: by the packet's hash,
        // which is its key's (`key_hash`, for all but later fragments,
        // whose keys are not probed).
        NextHop::Composite(group) => t.nexthop(group.select(key_hash(ctx.cfg.hash_seed, &key))?.nh)?,
        nh => nh,
    };
    let vif = match nh {
        NextHop::Encap { oif, .. } => t.vif(*oif).filter(|v| v.kind == VifKind::Virtual)?,
        _ => return None,
    };
    let (fip, target_port) = to_floating(vif, vrf.id, &key).ok()?;
    answers_in_pod(vrf.id, &key, in_vif, vif, fip, target_port).map(|a| a.key)
}

/// The floating IP of pod `vif` that a flow of `vrf` (`key`) comes to, if
/// any, and the port it forwards the flow to where that is not `key`'s.
/// A floating IP that forwards some ports takes packets to those alone,
/// with no pair for the rest: a scan of its ports fills no table.
fn to_floating(vif: &Vif, vrf: u32, key: &FlowKey) -> Result<(Option<u32>, Option<u16>), DropReason> {
    let Some(fip) = floating(vif, vrf, key) else { return Ok((None, None)) };
    let port = match fip.forward(key.proto, key.dport) {
        PortForward::Closed => return Err(DropReason::PortNotForwarded),
        PortForward::To(port) => Some(port),
        PortForward::Same => None,
    };
    Ok((Some(u32::from(fip.address)), port))
}

/// A TCP segment without SYN that finds no pair, decided without making
/// one (`Some`), or `None` for `create` to make the pair as for any first
/// packet. Such a segment is from the middle of a connection whose pair
/// went: aged out while the connection was idle, or lost when vrouterd
/// restarted. If the policies deny this side opening it (`action`) but
/// let the other side open it, it is taken for that connection's answer
/// and passes; the other side's next segment (its ACK of this one, at the
/// latest) makes the pair, as its SYN did. Made here, the pair would have
/// been denied, and stopped both sides for as long as they kept trying:
/// a connection idle for the idle timeout died when its server spoke
/// first. A RST makes no pair either way: nothing follows it, and a pair
/// would let its receiver open a connection in its sender's name (an ACK
/// taken for an answer is refused with one). Not with floating IPs, whose
/// NAT only a pair carries.
#[allow(clippy::too_many_arguments)] // `create`'s packet and its two ends.
fn midstream(
    t: &Tables,
    vrf: &Vrf,
    key: &FlowKey,
    from: Option<&Vif>,
    out: Option<&Vif>,
    action: FlowAction,
    d: &[u8],
    info: &IpInfo,
) -> Option<Result<(), DropReason>> {
    let flags = tcp_flags(d, info);
    let floating = |v: Option<&Vif>| v.is_some_and(|v| !v.floating.is_empty());
    if key.proto != ip_proto::TCP || info.frag || flags & crate::wire::tcp::FLAG_SYN != 0 {
        return None;
    }
    if floating(from) || floating(out) {
        return None;
    }
    let rst = flags & crate::wire::tcp::FLAG_RST != 0;
    if action == FlowAction::Forward {
        return rst.then_some(Ok(()));
    }
    // The other side's first packet: from the pod this one goes to, in its
    // VRF, or from the fabric into this VRF; judged, as `create` judges,
    // by the network of a pod it reaches here too.
    let pod = out.filter(|o| o.kind == VifKind::Virtual);
    let there = match pod {
        Some(o) => t.vrf(o.vrf)?,
        None => vrf,
    };
    let reaches = from.filter(|v| policed_elsewhere(t, there, v)).and_then(|v| t.vrf(v.vrf));
    let answer = FlowKey { vrf: there.id, ..key.reversed() };
    match judge(there, &answer, pod, reaches, None).0 {
        FlowAction::Forward => Some(Ok(())),
        FlowAction::Drop(r) if rst => Some(Err(r)),
        FlowAction::Drop(_) => None,
    }
}

/// The floating IP of `vif` that `key`, routed in VRF `vrf`, is addressed
/// to: one of that VRF, or one of the pod's own network (a service's
/// address) that `vrf` routes to it by an import.
fn floating<'v>(vif: &'v Vif, vrf: u32, key: &FlowKey) -> Option<&'v FloatingIp> {
    if !key.is_v4() {
        return None;
    }
    let dst = key.dst as u32;
    vif.floating.iter().find(|f| (f.vrf == vrf || f.vrf == vif.vrf) && u32::from(f.address) == dst)
}
