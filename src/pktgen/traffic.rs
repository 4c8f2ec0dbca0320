//! What `vrpktgen send` puts on the wire and `vrpktgen sink` reads back,
//! without the I/O: frame templates (sizes, IMIX, flows, IPv4 or IPv6,
//! plain or already in an MPLS tunnel), the stamp each frame carries, and
//! the sink's tallies (per flow, loss, reordering, latency percentiles).
//!
//! The stamp is 16 bytes at the start of the innermost UDP payload: a magic
//! number, the flow (32 bits), a sequence number and the send time (the low
//! 48 bits of the clock's nanoseconds: 78 hours before it wraps). A flow is
//! the innermost UDP port pair, so a million flows need no more templates
//! than one: a frame is a copy of its size's template, its ports and stamp
//! written in, and one incremental UDP checksum update for both.

use super::build::{self, Tunnel, L2};
use crate::wire::{checksum, ip_proto};
use std::net::IpAddr;

/// Bytes of the stamp.
pub const STAMP_LEN: usize = 16;
/// Marks a stamped payload.
const MAGIC: u16 = 0x5650;
/// Frame sizes of the simple IMIX (7:4:1), FCS included, in sending order.
pub const IMIX: [u16; 12] = [64, 576, 64, 64, 1500, 64, 576, 64, 64, 576, 64, 576];
/// The FCS, counted in a frame's size but not in the bytes we hand over.
const FCS: usize = 4;
/// UDP source ports of the flows start here.
const FIRST_SPORT: u16 = 10_000;
/// Source ports per destination port: flow `f` has source port
/// `FIRST_SPORT + f % SPORTS` and destination port `DPORT + f / SPORTS`.
const SPORTS: u32 = 50_000;
/// UDP destination port of the first 50,000 flows.
pub const DPORT: u16 = 9;
/// Most flows a spec may ask for.
pub const MAX_FLOWS: u32 = 1 << 24;
/// The send time's bits in a stamp.
const TIME_MASK: u64 = (1 << 48) - 1;

/// Frame sizes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Every frame this size (FCS included, as on the wire).
    Fixed(u16),
    /// The simple IMIX: 64, 576 and 1500 bytes, 7:4:1.
    Imix,
}

impl std::str::FromStr for Sizes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Sizes::Imix);
        }
        match s.parse::<u16>() {
            Ok(n) if (64..=1518).contains(&n) => Ok(Sizes::Fixed(n)),
            _ => Err(format!("frame size {s:?}: a number from 64 to 1518, or imix")),
        }
    }
}

impl Sizes {
    /// The sizes in the order frames take them, repeated.
    pub fn cycle(&self) -> Vec<u16> {
        match self {
            Sizes::Fixed(n) => vec![*n],
            Sizes::Imix => IMIX.to_vec(),
        }
    }
}

/// An MPLS tunnel the frames arrive in, as another node would send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// MPLS over GRE or over UDP.
    pub tunnel: Tunnel,
    /// Outer source (the sending node).
    pub src: std::net::Ipv4Addr,
    /// Outer destination (the receiving node).
    pub dst: std::net::Ipv4Addr,
    /// The MPLS label.
    pub label: u32,
}

impl Encap {
    /// From `vrpktgen`'s settings: `kind` is udp or gre, and a tunnel
    /// needs both outer addresses and a 20-bit label.
    pub fn from_settings(
        kind: &str,
        src: Option<std::net::Ipv4Addr>,
        dst: Option<std::net::Ipv4Addr>,
        label: Option<u32>,
    ) -> Result<Encap, String> {
        let tunnel = match kind {
            "udp" => Tunnel::Udp(crate::tables::nexthop::MPLS_UDP_PORT),
            "gre" => Tunnel::Gre,
            _ => return Err(format!("encap {kind:?}: udp or gre")),
        };
        let (Some(src), Some(dst), Some(label)) = (src, dst, label) else {
            return Err("encap needs outer-src, outer-dst and label".into());
        };
        if label >= 1 << 20 {
            return Err(format!("label {label}: MPLS labels are 20 bits"));
        }
        Ok(Encap { tunnel, src, dst, label })
    }
}

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Ethernet addresses.
    pub l2: L2,
    /// Source address (the flows' ports differ).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Distinct flows (UDP port pairs), from 1 to `MAX_FLOWS`.
    pub flows: u32,
    /// Frame sizes.
    pub sizes: Sizes,
    /// Wrap each frame in this tunnel.
    pub encap: Option<Encap>,
}

/// One frame to copy, and where its stamp and UDP checksum lie.
#[derive(Debug, Clone)]
pub struct Template {
    /// The frame of flow 0, stamp zeroed.
    pub bytes: Vec<u8>,
    /// The innermost UDP header's; the stamp follows it.
    udp_at: usize,
    /// The innermost UDP checksum; `None` when it is 0 (not used, IPv4).
    checksum_at: Option<usize>,
}

/// The templates of a spec, one per distinct frame size.
#[derive(Debug, Clone)]
pub struct Templates {
    templates: Vec<Template>,
    /// For each position of the size cycle, the index of its size.
    cycle: Vec<usize>,
    flows: u32,
}

impl Templates {
    /// Builds them. Sizes too small for the headers and the stamp are an error.
    pub fn new(spec: &Spec) -> Result<Templates, String> {
        if spec.flows == 0 || spec.flows > MAX_FLOWS {
            return Err(format!("flows: from 1 to {MAX_FLOWS}"));
        }
        let cycle_sizes = spec.sizes.cycle();
        let mut distinct = cycle_sizes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let cycle = cycle_sizes.iter().map(|s| distinct.iter().position(|d| d == s).unwrap_or(0)).collect();
        // IMIX's 64 bytes cannot hold IPv6 or a tunnel, headers and stamp:
        // its small frames are then the smallest that can.
        let imix = spec.sizes == Sizes::Imix;
        let templates =
            distinct.iter().map(|&size| template(spec, usize::from(size), imix)).collect::<Result<_, _>>()?;
        Ok(Templates { templates, cycle, flows: spec.flows })
    }

    /// The template of the `n`th frame sent, and its flow: flows take turns,
    /// and sizes follow the cycle.
    #[inline]
    pub fn nth(&self, n: u64) -> (&Template, u32) {
        let flow = (n % u64::from(self.flows)) as u32;
        let k = self.cycle[(n % self.cycle.len() as u64) as usize];
        (&self.templates[k], flow)
    }

    /// The largest frame, in bytes handed over.
    pub fn max_len(&self) -> usize {
        self.templates.iter().map(|t| t.bytes.len()).max().unwrap_or(0)
    }
}

/// The innermost UDP ports of `flow`.
pub fn flow_ports(flow: u32) -> (u16, u16) {
    (FIRST_SPORT + (flow % SPORTS) as u16, DPORT + (flow / SPORTS) as u16)
}

fn template(spec: &Spec, size: usize, grow: bool) -> Result<Template, String> {
    // Headers first, to size the payload so that the frame is `size` long.
    let probe = frame(spec, &[])?;
    let least = probe.bytes.len() + STAMP_LEN;
    let len = match size - FCS {
        l if l >= least => l,
        _ if grow => least,
        _ => return Err(format!("frame size {size}: this traffic needs at least {} bytes", least + FCS)),
    };
    frame(spec, &vec![0u8; len - probe.bytes.len()])
}

fn frame(spec: &Spec, data: &[u8]) -> Result<Template, String> {
    let sport = FIRST_SPORT;
    let (ip, udp_at) = match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            (build::ipv4(s, d, ip_proto::UDP, 64, false, &build::udp4_segment(s, d, sport, DPORT, data)), 20)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            (build::ipv6(s, d, ip_proto::UDP, 64, &build::udp6_segment(s, d, sport, DPORT, data)), 40)
        }
        _ => return Err("source and destination must be of one family".into()),
    };
    let bytes = match spec.encap {
        None => build::ip_frame(spec.l2, &ip),
        Some(e) => build::mpls_tunnel_frame(spec.l2, e.tunnel, e.src, e.dst, e.label, 64, sport, &ip),
    };
    // The inner packet is the frame's tail, whatever wraps it.
    let udp = bytes.len() - ip.len() + udp_at;
    let checksum_at = (bytes[udp + 6..udp + 8] != [0, 0]).then_some(udp + 6);
    Ok(Template { bytes, udp_at: udp, checksum_at })
}

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The flow (0 for the first).
    pub flow: u32,
    /// Its place in the whole send (the `n` of `Templates::nth`).
    pub seq: u32,
    /// When it was sent: the low 48 bits of the sender's clock in nanoseconds.
    pub sent_ns: u64,
}

/// Writes the ports of `stamp.flow` and `stamp` into `frame`, a copy of
/// `t`, and updates the UDP checksum.
#[inline]
pub fn write_stamp(frame: &mut [u8], t: &Template, stamp: Stamp) {
    let mut s = [0u8; STAMP_LEN];
    s[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    s[2..6].copy_from_slice(&stamp.flow.to_be_bytes());
    s[6..10].copy_from_slice(&stamp.seq.to_be_bytes());
    s[10..16].copy_from_slice(&(stamp.sent_ns & TIME_MASK).to_be_bytes()[2..]);
    let (sport, dport) = flow_ports(stamp.flow);
    let udp = t.udp_at;
    frame[udp..udp + 2].copy_from_slice(&sport.to_be_bytes());
    frame[udp + 2..udp + 4].copy_from_slice(&dport.to_be_bytes());
    frame[udp + 8..udp + 8 + STAMP_LEN].copy_from_slice(&s);
    if let Some(at) = t.checksum_at {
        // The template summed flow 0's ports and zeros where the stamp now
        // is: take the old ports out, put the new ports and the stamp's
        // words in (RFC 1624).
        let mut ports = [0u8; 8];
        ports[0..2].copy_from_slice(&(!FIRST_SPORT).to_be_bytes());
        ports[2..4].copy_from_slice(&(!DPORT).to_be_bytes());
        ports[4..6].copy_from_slice(&sport.to_be_bytes());
        ports[6..8].copy_from_slice(&dport.to_be_bytes());
        let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
        let c = match checksum::finish(checksum::sum(checksum::sum(u32::from(!old), &ports), &s)) {
            0 => 0xffff,
            c => c,
        };
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// The stamp of a frame we sent, if it is one: through Ethernet, IPv4 or
/// IPv6, and an MPLS over UDP or GRE tunnel if the frame is still in one.
pub fn read_stamp(frame: &[u8]) -> Option<Stamp> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let payload = udp_payload(frame.get(14..)?, ethertype, 2)?;
    let s = payload.get(..STAMP_LEN)?;
    (u16::from_be_bytes([s[0], s[1]]) == MAGIC).then(|| Stamp {
        flow: u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        seq: u32::from_be_bytes([s[6], s[7], s[8], s[9]]),
        sent_ns: u64::from_be_bytes([0, 0, s[10], s[11], s[12], s[13], s[14], s[15]]),
    })
}

/// The innermost UDP payload of an IP packet; `depth` tunnels may wrap it.
fn udp_payload(ip: &[u8], ethertype: u16, depth: u8) -> Option<&[u8]> {
    let (proto, body) = match ethertype {
        0x0800 => {
            let hl = usize::from(ip.first()? & 0x0f) * 4;
            (*ip.get(9)?, ip.get(hl..)?)
        }
        0x86dd => (*ip.get(6)?, ip.get(40..)?),
        _ => return None,
    };
    let mpls = match proto {
        ip_proto::UDP
            if u16::from_be_bytes([*body.get(2)?, *body.get(3)?]) == crate::tables::nexthop::MPLS_UDP_PORT =>
        {
            body.get(8..)?
        }
        ip_proto::UDP => return body.get(8..),
        ip_proto::GRE if body.get(2..4)? == [0x88, 0x47] => body.get(4..)?,
        _ => return None,
    };
    let depth = depth.checked_sub(1)?;
    // Labels until the bottom of the stack, then the packet's version.
    let mut at = 0;
    while mpls.get(at + 2)? & 1 == 0 {
        at += 4;
    }
    let inner = mpls.get(at + 4..)?;
    let ethertype = if inner.first()? >> 4 == 6 { 0x86dd } else { 0x0800 };
    udp_payload(inner, ethertype, depth)
}

/// What the sink counts.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Frames that carried our stamp.
    pub stamped: u64,
    /// Frames that did not.
    pub other: u64,
    /// Bytes of the stamped frames (FCS excluded).
    pub bytes: u64,
    /// Per flow: frames received.
    pub per_flow: Vec<u64>,
    /// Frames whose sequence number was below one seen before.
    pub reordered: u64,
    /// The highest sequence number seen, plus one.
    pub seq_end: u64,
    /// One-way latencies in nanoseconds, as sampled.
    latencies: Vec<u32>,
    /// Keep one latency in this many.
    sample_every: u64,
}

/// Latencies kept at most, so that a long run needs bounded memory.
const MAX_SAMPLES: usize = 4_000_000;

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally { sample_every: 1, ..Tally::default() }
    }

    /// Counts one frame received at `now_ns` (the sender's clock).
    #[inline]
    pub fn record(&mut self, frame: &[u8], now_ns: u64) {
        let Some(s) = read_stamp(frame) else {
            self.other += 1;
            return;
        };
        self.stamped += 1;
        self.bytes += frame.len() as u64;
        let flow = s.flow as usize;
        if flow >= self.per_flow.len() {
            self.per_flow.resize(flow + 1, 0);
        }
        self.per_flow[flow] += 1;
        if u64::from(s.seq) + 1 < self.seq_end {
            self.reordered += 1;
        }
        self.seq_end = self.seq_end.max(u64::from(s.seq) + 1);
        if self.stamped % self.sample_every == 0 {
            if self.latencies.len() == MAX_SAMPLES {
                // Keep every other sample, and sample half as often.
                let mut i = 0;
                self.latencies.retain(|_| {
                    i += 1;
                    i % 2 == 0
                });
                self.sample_every *= 2;
            }
            // Both ends' clocks in 48 bits: the difference modulo 2^48.
            let latency = now_ns.wrapping_sub(s.sent_ns) & TIME_MASK;
            self.latencies.push(latency.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Flows that delivered at least one frame.
    pub fn flows_seen(&self) -> usize {
        self.per_flow.iter().filter(|&&n| n > 0).count()
    }

    /// Latency percentiles (`p` from 0 to 100), in nanoseconds.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<Option<u64>> {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        ps.iter()
            .map(|p| {
                let last = l.len().checked_sub(1)?;
                Some(u64::from(l[((p / 100.0) * last as f64).round() as usize]))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    fn spec(src: &str, dst: &str, sizes: Sizes, encap: Option<Encap>) -> Spec {
        Spec {
            l2: L2 { src: MacAddr([2, 0, 0, 0, 0, 1]), dst: MacAddr([2, 0, 0, 0, 0, 2]) },
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            flows: 3,
            sizes,
            encap,
        }
    }

    fn udp_checksum_ok(frame: &[u8]) -> bool {
        let ip = &frame[14..];
        let (pseudo, udp) = if ip[0] >> 4 == 4 {
            let udp = &ip[20..];
            (
                checksum::pseudo_v4(
                    ip[12..16].try_into().unwrap(),
                    ip[16..20].try_into().unwrap(),
                    17,
                    udp.len() as u16,
                ),
                udp,
            )
        } else {
            let udp = &ip[40..];
            (
                checksum::pseudo_v6(
                    ip[8..24].try_into().unwrap(),
                    ip[24..40].try_into().unwrap(),
                    17,
                    udp.len() as u32,
                ),
                udp,
            )
        };
        checksum::finish(checksum::sum(pseudo, udp)) == 0
    }

    #[test]
    fn frames_have_their_size_flows_and_a_stamp_that_keeps_checksums_right() {
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let t = Templates::new(&spec(src, dst, Sizes::Fixed(128), None)).unwrap();
            let mut ports = Vec::new();
            for n in 0..6u64 {
                let (tpl, flow) = t.nth(n);
                assert_eq!(tpl.bytes.len(), 124, "128 on the wire, FCS excluded");
                assert_eq!(u64::from(flow), n % 3);
                let mut f = tpl.bytes.clone();
                let stamp = Stamp { flow, seq: n as u32 + 7, sent_ns: 0x4567_89ab_cdef };
                write_stamp(&mut f, tpl, stamp);
                assert!(udp_checksum_ok(&f), "{src}: the UDP checksum stays valid");
                assert_eq!(read_stamp(&f), Some(stamp));
                let l4 = if src.contains(':') { 54 } else { 34 };
                ports.push(u16::from_be_bytes([f[l4], f[l4 + 1]]));
            }
            assert_eq!(ports[0..3], [FIRST_SPORT, FIRST_SPORT + 1, FIRST_SPORT + 2], "flows differ by source port");
        }
    }

    #[test]
    fn a_million_flows_are_distinct_port_pairs_with_valid_checksums() {
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let mut s = spec(src, dst, Sizes::Fixed(128), None);
            s.flows = 1_000_000;
            let t = Templates::new(&s).unwrap();
            let l4 = if src.contains(':') { 54 } else { 34 };
            let mut seen = std::collections::HashSet::new();
            for n in [0u64, 1, 49_999, 50_000, 50_001, 999_999, 1_000_000] {
                let (tpl, flow) = t.nth(n);
                let mut f = tpl.bytes.clone();
                write_stamp(&mut f, tpl, Stamp { flow, seq: n as u32, sent_ns: n });
                assert!(udp_checksum_ok(&f), "{src} flow {flow}: checksum");
                assert_eq!(read_stamp(&f).map(|s| s.flow), Some(flow));
                let ports = (u16::from_be_bytes([f[l4], f[l4 + 1]]), u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]));
                assert_eq!(ports, flow_ports(flow));
                seen.insert(ports);
            }
            assert_eq!(seen.len(), 6, "frame 1,000,000 is flow 0 again; the others differ");
            assert_eq!(flow_ports(999_999), (FIRST_SPORT + 49_999, DPORT + 19));
        }
        let mut s = spec("10.0.0.1", "10.0.0.2", Sizes::Fixed(64), None);
        s.flows = MAX_FLOWS + 1;
        assert!(Templates::new(&s).is_err());
    }

    #[test]
    fn latency_survives_the_stamp_clock_wrapping() {
        let t = Templates::new(&spec("10.0.0.1", "10.0.0.2", Sizes::Fixed(64), None)).unwrap();
        let (tpl, flow) = t.nth(0);
        let mut f = tpl.bytes.clone();
        let sent = (5 << 48) + TIME_MASK - 10;
        write_stamp(&mut f, tpl, Stamp { flow, seq: 0, sent_ns: sent });
        let mut tally = Tally::new();
        tally.record(&f, sent + 250);
        assert_eq!(tally.percentiles(&[50.0]), vec![Some(250)]);
    }

    #[test]
    fn tunnelled_frames_carry_the_stamp_inside() {
        let v4 = std::net::Ipv4Addr::new(192, 168, 0, 1);
        for tunnel in [Tunnel::Udp(6635), Tunnel::Gre] {
            let e = Encap { tunnel, src: v4, dst: std::net::Ipv4Addr::new(192, 168, 0, 2), label: 20 };
            let t = Templates::new(&spec("10.0.0.1", "10.0.0.2", Sizes::Fixed(128), Some(e))).unwrap();
            let (tpl, flow) = t.nth(1);
            let mut f = tpl.bytes.clone();
            write_stamp(&mut f, tpl, Stamp { flow, seq: 1, sent_ns: 5 });
            assert_eq!(f.len(), 124);
            assert_eq!(read_stamp(&f).map(|s| (s.flow, s.seq)), Some((1, 1)), "{tunnel:?}");
        }
    }

    #[test]
    fn imix_follows_7_4_1_and_small_sizes_are_refused() {
        let t = Templates::new(&spec("10.0.0.1", "10.0.0.2", Sizes::Imix, None)).unwrap();
        let lens: Vec<usize> = (0..12).map(|n| t.nth(n).0.bytes.len() + FCS).collect();
        assert_eq!(lens.iter().filter(|&&l| l == 64).count(), 7);
        assert_eq!(lens.iter().filter(|&&l| l == 576).count(), 4);
        assert_eq!(lens.iter().filter(|&&l| l == 1500).count(), 1);
        let e = Templates::new(&spec("fd00::1", "fd00::2", Sizes::Fixed(64), None)).unwrap_err();
        assert!(e.contains("at least 82"), "{e}");
        let v6 = Templates::new(&spec("fd00::1", "fd00::2", Sizes::Imix, None)).unwrap();
        assert_eq!(v6.nth(0).0.bytes.len() + FCS, 82, "IMIX's small IPv6 frames are the smallest that fit");
        assert!("63".parse::<Sizes>().is_err() && "IMIX".parse::<Sizes>() == Ok(Sizes::Imix));
    }

    #[test]
    fn the_tally_counts_flows_loss_reordering_and_latency() {
        let t = Templates::new(&spec("10.0.0.1", "10.0.0.2", Sizes::Fixed(64), None)).unwrap();
        let mut tally = Tally::new();
        for n in [0u64, 1, 2, 4, 3, 5] {
            let (tpl, flow) = t.nth(n);
            let mut f = tpl.bytes.clone();
            write_stamp(&mut f, tpl, Stamp { flow, seq: n as u32, sent_ns: 1000 * n });
            tally.record(&f, 1000 * n + 100 * (n + 1));
        }
        tally.record(&[0u8; 60], 0);
        assert_eq!((tally.stamped, tally.other, tally.reordered, tally.seq_end), (6, 1, 1, 6));
        assert_eq!(tally.per_flow, vec![2, 2, 2]);
        assert_eq!(tally.percentiles(&[0.0, 50.0, 100.0]), vec![Some(100), Some(400), Some(600)]);
        assert_eq!(Tally::new().percentiles(&[50.0]), vec![None]);
    }
}
