//! Reading what vrouterd holds, and the smallest batch that turns it into
//! what the intent asks for.

use super::desired::Snapshot;
use crate::api::client::{Client, ClientError};
use crate::api::schema::{
    KeyDef, LabelDef, NextHopDef, ObjectDef, OpDef, PolicyDef, RouteDef, RouteKeyDef, VifDef, VrfDef,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An object as the API shows it, without its read-only status.
fn object<T: DeserializeOwned>(mut v: Value) -> Result<T, ClientError> {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    serde_json::from_value(v).map_err(|e| ClientError::Io(format!("unreadable object from vrouterd: {e}")))
}

/// Everything vrouterd holds now.
pub fn fetch(c: &mut Client) -> Result<Snapshot, ClientError> {
    let mut s = Snapshot::default();
    for v in c.dump_all(json!({ "object": "vrf" }))? {
        let v: VrfDef = object(v)?;
        s.vrfs.insert(v.id, v);
    }
    for v in c.dump_all(json!({ "object": "vif" }))? {
        let v: VifDef = object(v)?;
        s.vifs.insert(v.index, v);
    }
    for v in c.dump_all(json!({ "object": "nexthop", "limit": 10_000 }))? {
        let n: NextHopDef = object(v)?;
        s.nexthops.insert(n.id(), n);
    }
    for v in c.dump_all(json!({ "object": "label", "limit": 10_000 }))? {
        let l: LabelDef = object(v)?;
        s.labels.insert(l.label, l);
    }
    for v in c.dump_all(json!({ "object": "policy" }))? {
        let p: PolicyDef = object(v)?;
        s.policies.insert(p.vrf, p);
    }
    let vrfs: Vec<u32> = s.vrfs.keys().copied().collect();
    for vrf in vrfs {
        for v in c.dump_all(json!({ "object": "route", "vrf": vrf, "limit": 10_000 }))? {
            let r: RouteDef = object(v)?;
            s.routes.insert((r.vrf, r.prefix.clone()), r);
        }
    }
    Ok(s)
}

/// The operations that turn `now` into `want`, in an order vrouterd
/// accepts as one batch: additions and updates from the used to the users
/// (VRFs, vifs, next hops, composites, labels, routes), then deletions the
/// other way round. Objects that are already right are not touched. Next
/// hop 0, vrouterd's own discard, is never deleted.
pub fn diff(now: &Snapshot, want: &Snapshot) -> Vec<OpDef> {
    let mut ops = Vec::new();
    fn put<K: Ord, T: Clone + PartialEq>(
        ops: &mut Vec<OpDef>,
        now: &std::collections::BTreeMap<K, T>,
        want: &std::collections::BTreeMap<K, T>,
        keep: impl Fn(&T) -> bool,
        wrap: impl Fn(T) -> ObjectDef,
    ) {
        for (k, w) in want.iter().filter(|(_, w)| keep(w)) {
            match now.get(k) {
                None => ops.push(OpDef::Add(wrap(w.clone()))),
                Some(n) if n != w => ops.push(OpDef::Update(wrap(w.clone()))),
                Some(_) => {}
            }
        }
    }
    let composite = |n: &NextHopDef| matches!(n, NextHopDef::CompositeEcmp { .. });
    put(&mut ops, &now.vrfs, &want.vrfs, |_| true, ObjectDef::Vrf);
    put(&mut ops, &now.vifs, &want.vifs, |_| true, ObjectDef::Vif);
    put(&mut ops, &now.nexthops, &want.nexthops, |n| !composite(n), ObjectDef::Nexthop);
    put(&mut ops, &now.nexthops, &want.nexthops, composite, ObjectDef::Nexthop);
    put(&mut ops, &now.labels, &want.labels, |_| true, ObjectDef::Label);
    put(&mut ops, &now.routes, &want.routes, |_| true, ObjectDef::Route);
    put(&mut ops, &now.policies, &want.policies, |_| true, ObjectDef::Policy);

    for vrf in now.policies.keys().filter(|k| !want.policies.contains_key(*k)) {
        ops.push(OpDef::Delete(KeyDef::Policy(*vrf)));
    }
    for (vrf, prefix) in now.routes.keys().filter(|k| !want.routes.contains_key(*k)) {
        ops.push(OpDef::Delete(KeyDef::Route(RouteKeyDef { vrf: *vrf, prefix: prefix.clone() })));
    }
    for l in now.labels.keys().filter(|k| !want.labels.contains_key(*k)) {
        ops.push(OpDef::Delete(KeyDef::Label(*l)));
    }
    let gone: Vec<(&u32, &NextHopDef)> =
        now.nexthops.iter().filter(|(id, _)| **id != 0 && !want.nexthops.contains_key(*id)).collect();
    for (id, _) in gone.iter().filter(|(_, n)| composite(n)) {
        ops.push(OpDef::Delete(KeyDef::Nexthop(**id)));
    }
    for (id, _) in gone.iter().filter(|(_, n)| !composite(n)) {
        ops.push(OpDef::Delete(KeyDef::Nexthop(**id)));
    }
    for i in now.vifs.keys().filter(|k| !want.vifs.contains_key(*k)) {
        ops.push(OpDef::Delete(KeyDef::Vif(*i)));
    }
    for v in now.vrfs.keys().filter(|k| !want.vrfs.contains_key(*k)) {
        ops.push(OpDef::Delete(KeyDef::Vrf(*v)));
    }
    ops
}
