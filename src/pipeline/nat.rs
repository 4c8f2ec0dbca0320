//! NAT rewrites of IPv4 packets: addresses and ports, with every checksum
//! they touch updated incrementally (RFC 1624), including what an ICMP
//! error carries of the packet it is about.
//!
//! All functions take the IP packet (from its header on) and leave it
//! untouched when it is too short for what they would change.

use crate::flow::Nat;
use crate::stats::DropReason;
use crate::wire::checksum::{finish, update16, update32};
use crate::wire::{icmpv4, ip_proto};

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn get32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// The changes one rewrite makes, for the checksums that cover them.
#[derive(Default, Clone, Copy)]
struct Delta {
    src: Option<(u32, u32)>,
    dst: Option<(u32, u32)>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

impl Delta {
    /// Applied to a checksum over the addresses (IP header, or the pseudo header).
    fn addrs(&self, mut c: u16) -> u16 {
        if let Some((o, n)) = self.src {
            c = update32(c, o, n);
        }
        if let Some((o, n)) = self.dst {
            c = update32(c, o, n);
        }
        c
    }

    /// Applied to a transport checksum: pseudo-header addresses and ports.
    fn l4(&self, c: u16) -> u16 {
        let mut c = self.addrs(c);
        if let Some((o, n)) = self.sport {
            c = update16(c, o, n);
        }
        if let Some((o, n)) = self.dport {
            c = update16(c, o, n);
        }
        c
    }
}

/// Rewrites the IP header's addresses and the transport ports at `ip`
/// (a whole or truncated packet) and returns what changed, for checksums
/// outside it. Does not touch the transport checksum.
fn rewrite_headers(ip: &mut [u8], nat: &Nat, swap: bool) -> Option<(Delta, usize, u8, bool)> {
    let hl = usize::from(ip.first()? & 0x0f) * 4;
    if hl < 20 || ip.len() < hl {
        return None;
    }
    let proto = ip[9];
    let first = get16(ip, 6)? & 0x1fff == 0;
    // An ICMP error's copy runs the other way: what the outer header's
    // source became, its destination becomes.
    let (new_src, new_dst, new_sport, new_dport) =
        if swap { (nat.dst, nat.src, nat.dport, nat.sport) } else { (nat.src, nat.dst, nat.sport, nat.dport) };
    let mut d = Delta::default();
    if let Some(n) = new_src {
        let o = get32(ip, 12)?;
        put32(ip, 12, n);
        d.src = Some((o, n));
    }
    if let Some(n) = new_dst {
        let o = get32(ip, 16)?;
        put32(ip, 16, n);
        d.dst = Some((o, n));
    }
    let c = get16(ip, 10)?;
    put16(ip, 10, d.addrs(c));
    let ports = first && matches!(proto, ip_proto::TCP | ip_proto::UDP) && ip.len() >= hl + 4;
    if ports {
        if let Some(n) = new_sport {
            let o = get16(ip, hl)?;
            put16(ip, hl, n);
            d.sport = Some((o, n));
        }
        if let Some(n) = new_dport {
            let o = get16(ip, hl + 2)?;
            put16(ip, hl + 2, n);
            d.dport = Some((o, n));
        }
    }
    Some((d, hl, proto, first))
}

/// Updates the TCP or UDP checksum at `ip` (if present in what is there)
/// for `d`; returns the field's old and new value, for an enclosing ICMP
/// checksum.
fn fix_l4(ip: &mut [u8], hl: usize, proto: u8, d: &Delta) -> Option<(usize, u16, u16)> {
    let at = match proto {
        ip_proto::TCP => hl + 16,
        ip_proto::UDP => hl + 6,
        _ => return None,
    };
    let old = get16(ip, at)?;
    // A UDP checksum of zero means none; it stays none.
    if proto == ip_proto::UDP && old == 0 {
        return None;
    }
    let mut new = d.l4(old);
    if proto == ip_proto::UDP && new == 0 {
        new = 0xffff;
    }
    put16(ip, at, new);
    Some((at, old, new))
}

/// Applies `nat` to the IPv4 packet `ip`. An ICMP error gets the reverse
/// rewrite in the packet it quotes, so that it still matches the flow on
/// the other side of the NAT.
pub fn apply_v4(ip: &mut [u8], nat: &Nat) -> Result<(), DropReason> {
    let (d, hl, proto, first) = rewrite_headers(ip, nat, false).ok_or(DropReason::Truncated)?;
    if !first {
        return Ok(());
    }
    if proto != ip_proto::ICMP {
        fix_l4(ip, hl, proto, &d);
        return Ok(());
    }
    let Some(&kind) = ip.get(hl) else { return Ok(()) };
    if !icmpv4::is_error(kind) {
        // ICMP has no pseudo header: addresses alone leave its checksum be.
        return Ok(());
    }
    // The quoted packet starts 8 bytes into the ICMP message.
    let inner_at = hl + 8;
    let icmp_sum_at = hl + 2;
    if ip.len() < inner_at + 20 {
        return Ok(());
    }
    // Every 16-bit word of the ICMP message that the rewrite may change
    // moves the ICMP checksum: the quoted header's checksum and addresses,
    // its ports, and its UDP or TCP checksum.
    let ihl = usize::from(ip[inner_at] & 0x0f) * 4;
    let offs = [10, 12, 14, 16, 18, ihl, ihl + 2, ihl + 6, ihl + 16];
    let words = |b: &[u8]| offs.map(|o| get16(b, inner_at + o).unwrap_or(0));
    let old = words(ip);
    let inner = &mut ip[inner_at..];
    if let Some((di, ihl, iproto, ifirst)) = rewrite_headers(inner, nat, true) {
        if ifirst {
            fix_l4(inner, ihl, iproto, &di);
        }
    }
    let new = words(ip);
    // A word past the end reads 0 before and after: no change.
    let mut c = get16(ip, icmp_sum_at).ok_or(DropReason::Truncated)?;
    for k in 0..offs.len() {
        if old[k] != new[k] {
            c = update16(c, old[k], new[k]);
        }
    }
    put16(ip, icmp_sum_at, c);
    Ok(())
}

/// `apply_v4` for a packet the fast path took (`fast::classify`): a
/// 20-byte IPv4 header, not a fragment, then TCP, UDP or an ICMP echo,
/// whole in `ip`. The same bytes, in a fraction of the steps: each
/// checksum takes the whole rewrite's difference at once (RFC 1624's
/// update, summed: one's-complement sums do not depend on their order).
pub(super) fn apply_v4_plain(ip: &mut [u8], nat: &Nat) {
    let Some((addrs, ports)) = rewrite_plain_fields(ip, nat) else { return };
    let ip_sum = u16::from_be_bytes([ip[10], ip[11]]);
    ip[10..12].copy_from_slice(&finish(u32::from(!ip_sum) + addrs).to_be_bytes());
    let proto = ip[9];
    if !matches!(proto, ip_proto::TCP | ip_proto::UDP) {
        return;
    }
    let all = addrs + ports;
    let at = if proto == ip_proto::TCP { 36 } else { 26 };
    let Some(field) = ip.get_mut(at..at + 2) else { return };
    let old = u16::from_be_bytes([field[0], field[1]]);
    // A UDP checksum of zero means none; it stays none.
    if proto == ip_proto::UDP && old == 0 {
        return;
    }
    let mut new = finish(u32::from(!old) + all);
    if proto == ip_proto::UDP && new == 0 {
        new = 0xffff;
    }
    field.copy_from_slice(&new.to_be_bytes());
}

/// The fields `apply_v4_plain` rewrites, rewritten, checksums left as
/// they were: the addresses, and TCP's and UDP's ports. Answers with the
/// changes as RFC 1624 sums them (each old word complemented, and the
/// new), of the addresses and of the ports, or `None` (nothing changed)
/// for a packet shorter than an IPv4 header and 8 bytes. The fast path
/// also hashes a packet as a rewrite leaves it, on a copy
/// (`fast::translated_hash`).
#[inline(always)]
pub(super) fn rewrite_plain_fields(ip: &mut [u8], nat: &Nat) -> Option<(u32, u32)> {
    if ip.len() < 28 {
        return None;
    }
    let mut addrs = 0u32;
    for (at, new) in [(12, nat.src), (16, nat.dst)] {
        if let Some(n) = new {
            let o = u32::from_be_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
            ip[at..at + 4].copy_from_slice(&n.to_be_bytes());
            addrs += u32::from(!(o >> 16) as u16) + u32::from(!o as u16) + (n >> 16) + (n & 0xffff);
        }
    }
    let mut ports = 0u32;
    if matches!(ip[9], ip_proto::TCP | ip_proto::UDP) {
        for (at, new) in [(20, nat.sport), (22, nat.dport)] {
            if let Some(n) = new {
                let o = u16::from_be_bytes([ip[at], ip[at + 1]]);
                ip[at..at + 2].copy_from_slice(&n.to_be_bytes());
                ports += u32::from(!o) + u32::from(n);
            }
        }
    }
    Some((addrs, ports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::scenario::Rng;

    /// The fast path's rewrite makes the same bytes as the general one, for
    /// any addresses, ports and checksums (0x0000 and 0xffff among them, the
    /// one's-complement edge cases), and packets too short for a TCP
    /// checksum.
    #[test]
    fn the_plain_rewrite_matches_the_general_one() {
        let mut rng = Rng::new(0x5eed_04a7);
        for round in 0..200_000 {
            let proto = [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP][round % 3];
            let len = 28 + (rng.next_u64() % 40) as usize;
            let mut ip: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            ip[0] = 0x45;
            ip[6] = 0;
            ip[7] = 0;
            ip[9] = proto;
            if proto == ip_proto::ICMP {
                ip[20] = if round % 2 == 0 { icmpv4::kind::ECHO_REQUEST } else { icmpv4::kind::ECHO_REPLY };
            }
            let edge = [0x0000u16, 0xffff, 0x0001, 0xfffe];
            for at in [10, 26, 36] {
                if at + 2 <= len && rng.next_u64() % 4 == 0 {
                    ip[at..at + 2].copy_from_slice(&edge[(rng.next_u64() % 4) as usize].to_be_bytes());
                }
            }
            let pick = |r: &mut Rng| r.next_u64() % 2 == 0;
            let nat = Nat {
                src: pick(&mut rng).then(|| rng.next_u64() as u32),
                dst: pick(&mut rng).then(|| rng.next_u64() as u32),
                sport: pick(&mut rng).then(|| rng.next_u64() as u16),
                dport: pick(&mut rng).then(|| rng.next_u64() as u16),
            };
            let (mut general, mut plain) = (ip.clone(), ip.clone());
            apply_v4(&mut general, &nat).unwrap();
            apply_v4_plain(&mut plain, &nat);
            assert_eq!(plain, general, "{nat:?} on {ip:02x?}");
        }
        // Every transport checksum a packet may carry, under one rewrite:
        // the ones that become zero (UDP's "none") among them.
        let nat = Nat { src: Some(0xb916_61bc), dst: None, sport: Some(8080), dport: None };
        for (proto, at) in [(ip_proto::UDP, 26), (ip_proto::TCP, 36)] {
            let mut ip = vec![0u8; 40];
            ip[0] = 0x45;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&[10, 1, 0, 3]);
            ip[20..22].copy_from_slice(&80u16.to_be_bytes());
            for sum in 0..=u16::MAX {
                ip[at..at + 2].copy_from_slice(&sum.to_be_bytes());
                let (mut general, mut plain) = (ip.clone(), ip.clone());
                apply_v4(&mut general, &nat).unwrap();
                apply_v4_plain(&mut plain, &nat);
                assert_eq!(plain[at..at + 2], general[at..at + 2], "proto {proto}, checksum {sum:#06x}");
            }
        }
    }
}
