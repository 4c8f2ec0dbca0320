//! Proxy ARP and proxy neighbour discovery: vrouter answers for the
//! gateway and for every address the pod's VRF routes, with its own MAC.
//! Without it a pod could not send a single packet (wire-formats.md).

use super::forward::{IpInfo, ETH};
use super::{Ctx, Frame, Verdict};
use crate::memory::Buffer;
use crate::stats::DropReason;
use crate::tables::{NextHop, Tables, Vif, Vrf};
use crate::wire::{arp, ethernet, icmpv6, ip_proto, ipv6};
use std::net::{Ipv4Addr, Ipv6Addr};

/// True when `nh` leads somewhere: proxying an address we would discard
/// would only hide the problem from the pod.
fn leads_somewhere(t: &Tables, nh: u32) -> bool {
    !matches!(t.nexthop(nh), None | Some(NextHop::Discard))
}

fn routes_v4(t: &Tables, vrf: &Vrf, a: Ipv4Addr) -> bool {
    vrf.gateway_v4 == Some(a) || vrf.v4.lookup(a.into()).is_some_and(|r| leads_somewhere(t, r.nh))
}

fn routes_v6(t: &Tables, vrf: &Vrf, a: Ipv6Addr) -> bool {
    vrf.gateway_v6 == Some(a) || vrf.v6.lookup(a.into()).is_some_and(|r| leads_somewhere(t, r.nh))
}

/// Answers an ARP request in place.
pub(super) fn arp<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif) -> Verdict {
    let d = f.data();
    let Ok(p) = arp::Packet::new_checked(&d[ETH..]) else {
        return Verdict::Drop(DropReason::InvalidArp);
    };
    let Ok(req) = arp::Repr::parse(&p) else {
        return Verdict::Drop(DropReason::InvalidArp);
    };
    // Replies, gratuitous ARP and probes for the pod's own address are
    // not questions vrouter should answer.
    if req.operation != arp::Operation::Request
        || !vif.flags.proxy_arp
        || req.tpa == req.spa
        || Some(req.tpa) == vif.ipv4
    {
        return Verdict::Drop(DropReason::ArpNotProxied);
    }
    let t = ctx.t;
    let Some(vrf) = t.vrf(vif.vrf) else { return Verdict::Drop(DropReason::ArpNotProxied) };
    if !routes_v4(t, vrf, req.tpa) {
        return Verdict::Drop(DropReason::ArpNotProxied);
    }
    let router = ctx.cfg.router_mac;
    let d = f.data_mut();
    let mut eth = ethernet::Packet::new_unchecked(&mut d[..ETH]);
    let peer = eth.src();
    eth.set_dst(peer);
    eth.set_src(router);
    let mut p = arp::Packet::new_unchecked(&mut d[ETH..]);
    p.set_oper(arp::Operation::Reply);
    p.set_sender(router, req.tpa);
    p.set_target(req.sha, req.spa);
    if let Some(c) = ctx.stats.vrf_mut(vif.vrf) {
        c.arp_proxies += 1;
    }
    Verdict::Tx(vif.index)
}

/// Answers a neighbour solicitation with an advertisement, in place.
pub(super) fn nd<B: Buffer>(ctx: &mut Ctx<'_, B>, f: &mut Frame<B>, vif: &Vif, info: &IpInfo) -> Verdict {
    let d = f.data();
    let body = &d[ETH + info.hl()..ETH + info.total()];
    let Ok(p) = icmpv6::Packet::new_checked(body) else {
        return Verdict::Drop(DropReason::InvalidNd);
    };
    let (src, dst) = (info.src.to_be_bytes(), info.dst.to_be_bytes());
    // RFC 4861 7.1.1: hop limit 255, code 0, valid checksum and options.
    if info.ttl != 255
        || p.code() != 0
        || !p.verify_checksum(src, dst)
        || p.nd_lladdr(icmpv6::OPT_SOURCE_LLADDR).is_err()
    {
        return Verdict::Drop(DropReason::InvalidNd);
    }
    let target = p.nd_target();
    if target.is_multicast() {
        return Verdict::Drop(DropReason::InvalidNd);
    }
    let asker = Ipv6Addr::from(info.src);
    // Duplicate address detection comes from the unspecified address; a
    // proxy answer would make the pod give up its own address.
    if asker.is_unspecified() || !vif.flags.proxy_arp || Some(target) == vif.ipv6 {
        return Verdict::Drop(DropReason::NdNotProxied);
    }
    let t = ctx.t;
    let Some(vrf) = t.vrf(vif.vrf) else { return Verdict::Drop(DropReason::NdNotProxied) };
    if !routes_v6(t, vrf, target) {
        return Verdict::Drop(DropReason::NdNotProxied);
    }
    let na_len = icmpv6::ND_LEN + icmpv6::LLADDR_OPT_LEN;
    if !f.set_len(ETH + ipv6::HEADER_LEN + na_len) {
        return Verdict::Drop(DropReason::PushFails);
    }
    let router = ctx.cfg.router_mac;
    let d = f.data_mut();
    let mut eth = ethernet::Packet::new_unchecked(&mut d[..ETH]);
    let peer = eth.src();
    eth.set_dst(peer);
    eth.set_src(router);
    let repr =
        ipv6::Repr { src: target, dst: asker, next_header: ip_proto::ICMPV6, payload_len: na_len, hop_limit: 255 };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut d[ETH..ETH + ipv6::HEADER_LEN]));
    let mut na = icmpv6::Packet::new_unchecked(&mut d[ETH + ipv6::HEADER_LEN..]);
    na.set_nd_target(target);
    na.set_nd_lladdr_option(icmpv6::OPT_TARGET_LLADDR, router);
    let icmp = icmpv6::Repr {
        msg_type: icmpv6::kind::NEIGHBOR_ADVERT,
        code: 0,
        rest: icmpv6::NA_FLAGS_ROUTER_SOLICITED_OVERRIDE,
    };
    icmp.emit(&mut na, target, asker);
    if let Some(c) = ctx.stats.vrf_mut(vif.vrf) {
        c.nd_proxies += 1;
    }
    Verdict::Tx(vif.index)
}
