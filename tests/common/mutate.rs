//! Structure-aware mutation of JSON documents (API requests, intent
//! files read as JSON): values swapped for edge values, for values from
//! elsewhere in the same document, nudged, dropped, repeated, and unknown
//! keys added.

use super::Rng;
use serde_json::{json, Value};

/// Values that sit on an edge somewhere: of a type, a width, a range.
pub fn edge(rng: &mut Rng) -> Value {
    let long = "x".repeat(5000);
    let picks = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(15),
        json!(16),
        json!(255),
        json!(256),
        json!(4095),
        json!(65535),
        json!(65536),
        json!(1048575),
        json!(1048576),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(1e308),
        json!(""),
        json!("x"),
        json!(long),
        json!([]),
        json!({}),
        json!("0.0.0.0/0"),
        json!("255.255.255.255/32"),
        json!("10.0.0.0/33"),
        json!("::/0"),
        json!("::/129"),
        json!("ffff::1"),
        json!("10.1.0.2:65535"),
        json!("ff:ff:ff:ff:ff:ff"),
        json!("00:00:00:00:00:00"),
        json!("tcp"),
        json!("icmp"),
        json!("allow"),
        json!("deny"),
        json!("virtual"),
        json!("fabric"),
        json!("composite-ecmp"),
        json!("vrf-lookup"),
        json!(-0.0),
        json!("\u{0}"),
        json!("é"),
    ];
    picks[rng.below(picks.len())].clone()
}

/// Every value's place in `v`, as a path of keys and indexes.
pub fn places(v: &Value, at: &mut Vec<Vec<Value>>, path: Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(json!(k));
                places(c, at, p);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = path.clone();
                p.push(json!(i));
                places(c, at, p);
            }
        }
        _ => {}
    }
    at.push(path);
}

pub fn value_at<'v>(v: &'v Value, path: &[Value]) -> &'v Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(k) => &v[k.as_str()],
        Value::Number(i) => &v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

pub fn at_mut<'v>(v: &'v mut Value, path: &[Value]) -> &'v mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(k) => &mut v[k.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

pub fn mutate(rng: &mut Rng, mut req: Value) -> Value {
    for _ in 0..1 + rng.below(3) {
        let mut at = Vec::new();
        places(&req, &mut at, Vec::new());
        let path = at[rng.below(at.len())].clone();
        if path.is_empty() {
            continue;
        }
        let (parent, last) = path.split_at(path.len() - 1);
        match rng.below(7) {
            // Drop it.
            0 => match (at_mut(&mut req, parent), &last[0]) {
                (Value::Object(m), Value::String(k)) => {
                    m.remove(k);
                }
                (Value::Array(a), Value::Number(i)) => {
                    a.remove(i.as_u64().unwrap() as usize);
                }
                _ => {}
            },
            // Repeat it, many times, in its array.
            1 => {
                if let Value::Array(a) = at_mut(&mut req, parent) {
                    let i = last[0].as_u64().unwrap() as usize;
                    let copy = a[i].clone();
                    for _ in 0..1 + rng.below(40) {
                        a.push(copy.clone());
                    }
                }
            }
            // A number, or an IPv4 address, nudged by one either way.
            2 => {
                let up = rng.below(2) == 0;
                let v = at_mut(&mut req, &path);
                if let Some(n) = v.as_i64() {
                    *v = json!(n.saturating_add(if up { 1 } else { -1 }));
                } else if let Some(ip) = v.as_str().and_then(|s| s.parse::<std::net::Ipv4Addr>().ok()) {
                    let n = u32::from(ip);
                    *v = json!(std::net::Ipv4Addr::from(if up { n.wrapping_add(1) } else { n.wrapping_sub(1) }));
                } else {
                    *v = edge(rng);
                }
            }
            // An unknown key beside it.
            3 => {
                if let Value::Object(m) = at_mut(&mut req, parent) {
                    m.insert("unexpected".into(), edge(rng));
                }
            }
            // A value from elsewhere in the same document: a name, an
            // address or an id that another part refers to.
            4 => {
                let leaves: Vec<&Vec<Value>> =
                    at.iter().filter(|p| !matches!(value_at(&req, p), Value::Object(_) | Value::Array(_))).collect();
                if let Some(from) = leaves.get(rng.below(leaves.len())) {
                    let v = value_at(&req, from).clone();
                    *at_mut(&mut req, &path) = v;
                }
            }
            _ => *at_mut(&mut req, &path) = edge(rng),
        }
    }
    req
}
