//! `vrpktgen send` and `sink`: the generator's two ends on AF_XDP sockets,
//! on the same `io::xsk` module vrouterd uses.
//!
//! Times in stamps are the system clock in nanoseconds: both ends run on
//! one machine (in different namespaces), so one clock serves both, read
//! once per burst rather than per frame.

use super::traffic::{write_stamp, Stamp, Tally, Templates};
use crate::io::bpf::{Attachment, Program, XdpMode, XskMap};
use crate::io::xsk::{RxDesc, XskConfig, XskSocket};
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Frames per burst, as a worker's batch.
const BURST: u64 = 64;

/// Nanoseconds on the clock both ends share.
pub fn clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// How long and how fast to send.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Frames per second; 0 for as fast as possible.
    pub rate: u64,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

/// What a send did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendReport {
    /// Frames the kernel took.
    pub sent: u64,
    /// Their bytes (FCS excluded).
    pub bytes: u64,
    /// From the first frame to the last.
    pub seconds: f64,
}

impl SendReport {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
}

/// Sends the templates' frames out of `dev` (queue 0), in turn, stamped.
pub fn send(dev: &str, templates: &Templates, o: &SendOptions) -> io::Result<SendReport> {
    let mut sock = XskSocket::open(crate::io::ifindex(dev)?, 0, XskConfig::default())?;
    let start = Instant::now();
    let mut last_progress = start;
    let mut r = SendReport::default();
    let limit = o.count.unwrap_or(u64::MAX);
    while r.sent < limit && start.elapsed() < o.duration {
        sock.complete();
        let due = if o.rate == 0 {
            limit
        } else {
            (start.elapsed().as_nanos() * u128::from(o.rate) / 1_000_000_000).min(u128::from(limit)) as u64
        };
        // At a fixed rate, frames go in bursts of about 50 µs' worth, and
        // the generator sleeps between them rather than spinning: its CPU
        // then stays off the forwarder's account in tools/bench.
        let least = if o.rate == 0 { 1 } else { (o.rate / 20_000).clamp(1, BURST) };
        let burst = due.saturating_sub(r.sent).min(BURST);
        if burst < least.min(limit - r.sent) {
            let next = Duration::from_nanos((r.sent + least) * 1_000_000_000 / o.rate.max(1));
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            continue;
        }
        let now = clock_ns();
        for _ in 0..burst {
            let Some(addr) = sock.alloc() else { break };
            let (template, flow) = templates.nth(r.sent);
            let len = template.bytes.len();
            let Some((buf, at)) = sock.frame_mut(addr) else { break };
            let frame = &mut buf[at..at + len];
            frame.copy_from_slice(&template.bytes);
            write_stamp(frame, template, Stamp { flow, seq: r.sent as u32, sent_ns: now });
            if !sock.transmit(addr, len as u32) {
                sock.release(addr);
                break;
            }
            r.sent += 1;
            r.bytes += len as u64;
        }
        sock.kick_tx().map_err(transmit_error)?;
        if o.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let s = start.elapsed().as_secs_f64();
            eprintln!("vrpktgen send: {:.1} s, {} frames, {:.3} Mpps", s, r.sent, r.sent as f64 / s / 1e6);
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    // Until the kernel has taken every frame, for at most a second.
    let drain = Instant::now();
    while sock.tx_pending() > 0 && drain.elapsed() < Duration::from_secs(1) {
        sock.kick_tx().map_err(transmit_error)?;
        sock.complete();
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(r)
}

/// When a sink stops.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// At most this long.
    pub duration: Duration,
    /// After this many stamped frames.
    pub count: Option<u64>,
    /// After this long without a frame, once frames have come.
    pub idle: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

/// What a sink saw.
#[derive(Debug, Clone)]
pub struct SinkReport {
    /// Frames, flows, loss, latency.
    pub tally: Tally,
    /// From the first stamped frame to the last.
    pub seconds: f64,
    /// The XDP mode its program runs in.
    pub mode: XdpMode,
}

/// Receives everything that arrives on `dev` (queue 0) and tallies it.
pub fn sink(dev: &str, o: &SinkOptions) -> io::Result<SinkReport> {
    sink_until_ready(dev, o, || {})
}

/// `sink`, calling `ready` once its XDP program is attached: from then on
/// no frame is missed.
pub fn sink_until_ready(dev: &str, o: &SinkOptions, ready: impl FnOnce()) -> io::Result<SinkReport> {
    let index = crate::io::ifindex(dev)?;
    let mut sock = XskSocket::open(index, 0, XskConfig::default())?;
    let map = XskMap::new(1)?;
    map.set(0, sock.raw_fd())?;
    let prog = Program::redirect_all(&map)?;
    // Native where the driver has it (veth does), else generic.
    let (_link, mode) = match Attachment::new(&prog, index, XdpMode::Native) {
        Ok(l) => (l, XdpMode::Native),
        Err(_) => (Attachment::new(&prog, index, XdpMode::Generic)?, XdpMode::Generic),
    };
    ready();
    let mut tally = Tally::new();
    let mut descs = [RxDesc { addr: 0, len: 0, more: false }; BURST as usize];
    let start = Instant::now();
    let (mut first, mut last) = (None, start);
    let mut last_progress = start;
    let limit = o.count.unwrap_or(u64::MAX);
    while tally.stamped < limit && start.elapsed() < o.duration && (first.is_none() || last.elapsed() < o.idle) {
        sock.refill(BURST as u32);
        let n = sock.receive(&mut descs);
        if n == 0 {
            sock.poll_rx(10)?;
            continue;
        }
        let now = clock_ns();
        let before = tally.stamped;
        for d in &descs[..n] {
            if let Some((buf, at)) = sock.frame_mut(d.addr) {
                tally.record(&buf[at..at + d.len as usize], now);
            }
            sock.release(d.addr);
        }
        // The rate counts from the first stamped frame to the last, not the
        // neighbour discovery around them.
        if tally.stamped > before {
            last = Instant::now();
            first.get_or_insert(last);
        }
        if o.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!("vrpktgen sink: {:.1} s, {} frames", start.elapsed().as_secs_f64(), tally.stamped);
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok(SinkReport { tally, seconds, mode })
}

fn transmit_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("AF_XDP transmit: {e}"))
}
