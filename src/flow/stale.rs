//! What a change of vifs means for the flows: which of them it leaves
//! stale, for the control plane to remove (`FlowTable::remove_stale`).

use crate::tables::{Object, ObjectKey, Op, Tables, Vif};
use std::net::IpAddr;

/// The flows a vif change leaves stale (`remove_stale`): those `creator`
/// created, and those with an entry in VRF `vrf` to or from one of `addrs`
/// (and translated to `nat_to`, if it is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEnd {
    /// The vif whose own flows go, if any: a deleted vif, or one moved to
    /// another VRF or address.
    pub creator: Option<u32>,
    /// The VRF the addresses were in.
    pub vrf: u32,
    /// The addresses that left it.
    pub addrs: Vec<IpAddr>,
    /// For a floating IP that another pod may share: only the pairs its
    /// entry translates to this pod's address.
    pub nat_to: Option<u32>,
}

/// The flows that `ops` leave stale, judged against the tables before
/// them. A deleted vif takes the pairs it created and those to or from its
/// addresses, as Contrail's agent does when an interface goes. So does a
/// vif updated into another VRF or to other addresses: its flows were keyed
/// and decided there. A floating IP taken off a vif takes the pairs that
/// translate it to the vif, or they would go on reaching the pod; the pods
/// that share it keep theirs.
pub fn stale_ends(before: &Tables, ops: &[Op]) -> Vec<StaleEnd> {
    let addrs = |v: &Vif| v.ipv4.map(IpAddr::V4).into_iter().chain(v.ipv6.map(IpAddr::V6)).collect();
    let whole = |v: &Vif| StaleEnd { creator: Some(v.index), vrf: v.vrf, addrs: addrs(v), nat_to: None };
    let mut ends = Vec::new();
    for op in ops {
        match op {
            Op::Delete(ObjectKey::Vif(i)) => ends.extend(before.vif(*i).map(whole)),
            Op::Update(Object::Vif(new)) => {
                let Some(old) = before.vif(new.index) else { continue };
                if (old.vrf, old.ipv4, old.ipv6) != (new.vrf, new.ipv4, new.ipv6) {
                    ends.push(whole(old));
                }
                let dropped = old.floating.iter().filter(|f| !new.floating.contains(f));
                ends.extend(dropped.map(|f| StaleEnd {
                    creator: None,
                    vrf: f.vrf,
                    addrs: vec![IpAddr::V4(f.address)],
                    nat_to: old.ipv4.map(u32::from),
                }));
            }
            _ => {}
        }
    }
    ends
}
