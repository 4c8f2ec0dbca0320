//! A worker: the thin loop between AF_XDP ports and the pipeline. Each
//! round it takes a vector of frames from every port, runs the pipeline on
//! them against the current tables, and sends or releases each frame as its
//! verdict says. It makes no forwarding decision of its own.

use super::jumbo::{self, Assembly, Jumbo, JumboBuf, Piece};
use super::xsk::{FrameShare, RxDesc, UmemFrame, XskSocket};
use crate::capture::{Staged, Tap};
use crate::memory::Buffer;
use crate::pipeline::{Frame, Pipeline, Spill, Verdict, VECTOR};
use crate::stats::runtime::{Stopwatch, SAMPLE_EVERY};
use crate::stats::{Runtime, Stage, Unsent};
use crate::tables::{TablesHandle, VifIndex};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// One receive queue of a vif, served by an AF_XDP socket. A vif with
/// several active queues has one `Port` per queue; frames leave by the
/// first.
pub struct Port {
    /// The vif this port is.
    pub vif: VifIndex,
    /// Its socket.
    pub sock: XskSocket,
    /// The kernel refused to send from it for good (its interface went
    /// away): nothing more is received, sent or refilled on it until the
    /// daemon closes it (`PortCommand::Remove`), which it does once it sees
    /// the interface gone.
    broken: bool,
    /// What it keeps of its UMEM's frames (`xsk::FrameShare`), set as
    /// ports come and go.
    share: FrameShare,
    /// The jumbo frame it is receiving, whose chain of frames the last
    /// receive may have cut.
    chain: Assembly,
}

impl Port {
    /// Queue `sock` of vif `vif`.
    pub fn new(vif: VifIndex, sock: XskSocket) -> Port {
        let share = FrameShare::of(sock.umem_frames(), 1);
        Port { vif, sock, broken: false, share, chain: Assembly::Idle }
    }

    /// Frames it could give to other ports (positive) or lacks (negative):
    /// its stash, less what its fill ring lacks and its cushion. A broken
    /// port keeps nothing.
    fn spare_frames(&self) -> isize {
        let need = if self.broken {
            0
        } else {
            self.share.fill.saturating_sub(self.sock.fill_level()) as isize + self.share.cushion as isize
        };
        self.sock.free_frames() as isize - need
    }
}

/// A change to a running worker's ports, sent by the daemon.
pub enum PortCommand {
    /// Start serving this port (one queue of a vif).
    Add(Box<Port>),
    /// Stop serving every queue of this vif and close their sockets, its
    /// frames kept for the others. Sent once its XDP program is detached.
    Remove(VifIndex),
}

/// Spare frames a batch may cut its frames' extra pieces into.
const SPARES: usize = 16;

/// Headroom of a spare frame, as the kernel leaves in received ones
/// (XDP_PACKET_HEADROOM): room for the tunnel headers.
const SPARE_HEADROOM: usize = 256;

const ETH: usize = crate::wire::ethernet::HEADER_LEN;

/// Bytes a hand-off buffer holds: one UMEM frame.
pub const HANDOFF_FRAME: usize = 2048;

/// A hand-off's buffers for jumbo frames (`jumbo::LONGEST` bytes each),
/// as a share of its UMEM-frame ones: made as jumbo frames come, up to
/// that many, so that a node without them never pays for them.
const HANDOFF_JUMBO_SHARE: usize = 4;

type HandoffBuf = Box<[u8]>;

/// Frames one worker passes to the worker that owns the port they leave by
/// (worker 0 owns queue 0 of every port). Buffers circulate between two
/// lock-free rings, allocated once: nothing is allocated per frame.
pub struct Handoff {
    full: crossbeam_queue::ArrayQueue<(VifIndex, u16, HandoffBuf)>,
    free: crossbeam_queue::ArrayQueue<HandoffBuf>,
    free_jumbo: crossbeam_queue::ArrayQueue<HandoffBuf>,
    /// Jumbo buffers made so far (no more than `free_jumbo` holds).
    jumbo_made: std::sync::atomic::AtomicUsize,
    /// The receiving worker's, to wake it when it sleeps.
    bell: std::sync::Arc<Doorbell>,
}

impl Handoff {
    /// A hand-off with `slots` buffers to the worker that hears `bell`.
    pub fn new(slots: usize, bell: std::sync::Arc<Doorbell>) -> std::sync::Arc<Handoff> {
        let jumbo = (slots / HANDOFF_JUMBO_SHARE).max(1);
        let h = Handoff {
            full: crossbeam_queue::ArrayQueue::new(slots + jumbo),
            free: crossbeam_queue::ArrayQueue::new(slots),
            free_jumbo: crossbeam_queue::ArrayQueue::new(jumbo),
            jumbo_made: std::sync::atomic::AtomicUsize::new(0),
            bell,
        };
        for _ in 0..slots {
            let _ = h.free.push(vec![0u8; HANDOFF_FRAME].into_boxed_slice());
        }
        std::sync::Arc::new(h)
    }

    /// Posts a frame for `vif`: refused when every buffer of its size is
    /// in use, or it is longer than any.
    fn post(&self, vif: VifIndex, data: &[u8]) -> Result<(), Unsent> {
        let buf = match data.len() {
            n if n <= HANDOFF_FRAME => self.free.pop(),
            n if n <= jumbo::LONGEST => self.jumbo_buffer(),
            _ => return Err(Unsent::TooLong),
        };
        let Some(mut buf) = buf else { return Err(Unsent::HandoffFull) };
        buf[..data.len()].copy_from_slice(data);
        self.full.push((vif, data.len() as u16, buf)).map_err(|(_, _, buf)| {
            self.give_back(buf);
            Unsent::HandoffFull
        })
    }

    /// A free jumbo buffer, made if none is free and fewer than the queue
    /// holds were made. Only the posting worker makes them.
    fn jumbo_buffer(&self) -> Option<HandoffBuf> {
        self.free_jumbo.pop().or_else(|| {
            let made = self.jumbo_made.load(Ordering::Relaxed);
            (made < self.free_jumbo.capacity()).then(|| {
                self.jumbo_made.store(made + 1, Ordering::Relaxed);
                vec![0u8; jumbo::LONGEST].into_boxed_slice()
            })
        })
    }

    /// Returns a buffer to the free queue of its size.
    fn give_back(&self, buf: HandoffBuf) {
        let _ = if buf.len() == HANDOFF_FRAME { self.free.push(buf) } else { self.free_jumbo.push(buf) };
    }
}

/// Wakes a worker asleep in poll(2) when another hands it frames, so that
/// a worker that takes hand-offs sleeps as long as any other (10 ms), not
/// 1 ms, and when the daemon gives it ports. Rung only while it sleeps: a byte on a socket pair that the
/// sleeper polls, one syscall for a sleep, none while it runs.
pub struct Doorbell {
    asleep: AtomicBool,
    ring: std::os::unix::net::UnixDatagram,
    hear: std::os::unix::net::UnixDatagram,
}

impl Doorbell {
    /// A doorbell, its worker awake.
    pub fn new() -> io::Result<std::sync::Arc<Doorbell>> {
        let (ring, hear) = std::os::unix::net::UnixDatagram::pair()?;
        ring.set_nonblocking(true)?;
        hear.set_nonblocking(true)?;
        Ok(std::sync::Arc::new(Doorbell { asleep: AtomicBool::new(false), ring, hear }))
    }

    /// Wakes its worker if it sleeps, after frames were posted to it. The
    /// fence orders the posts before the look at `asleep`, as the sleeper's
    /// orders `asleep` before its look at the hand-offs (`Worker::wait`):
    /// one of the two sees the other.
    pub fn ring_if_asleep(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            let _ = self.ring.send(&[1]);
        }
    }

    /// Going to sleep: from now on posters ring.
    fn sleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Awake again: the rings heard while asleep are forgotten.
    fn wake(&self) {
        self.asleep.store(false, Ordering::SeqCst);
        let mut b = [0u8; 16];
        while self.hear.recv(&mut b).is_ok() {}
    }
}

/// What a worker has done, besides the pipeline's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Frames received from ports.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames the pipeline sent to a vif this worker has no port for, or
    /// that found no free frame or tx slot there.
    pub tx_dropped: u64,
    /// `tx_dropped` by cause (`Unsent`, in its counter order).
    pub unsent: [u64; Unsent::COUNT],
    /// Frames for the host or agent, which this worker cannot deliver yet.
    pub punted: u64,
    /// Frames sent out of another port by address, the UMEM being shared.
    pub moved: u64,
    /// Frames copied to another port's UMEM.
    pub copied: u64,
    /// Frames handed to the worker that owns their output port.
    pub handed_off: u64,
    /// Times it slept and was woken by a frame (its ports' or another
    /// worker's hand-off), rather than by its timeout: the frame that woke
    /// it waited for the scheduler, tens of microseconds on an idle core.
    pub wakeups: u64,
    /// Cycles per stage over the sampled batches.
    pub runtime: Runtime,
}

/// One worker's ports, pipeline and scratch space.
pub struct Worker {
    ports: Vec<Port>,
    /// Index in `ports` of the first port of each vif, by vif index: frames
    /// leave by it. Rebuilt when ports change, so sending finds its port
    /// without a search per frame.
    port_of: Vec<Option<u16>>,
    pipeline: Pipeline,
    tables: TablesHandle,
    descs: [RxDesc; VECTOR],
    batch: Vec<Frame<UmemFrame>>,
    counters: WorkerCounters,
    /// Batches received, to time one in `SAMPLE_EVERY`.
    batches: u64,
    pollfds: Vec<libc::pollfd>,
    control: Option<std::sync::mpsc::Receiver<PortCommand>>,
    /// Where the worker says which vif's port it stopped using.
    broken_ports: Option<std::sync::mpsc::Sender<VifIndex>>,
    /// Where it says which vif's new port has frames to receive into.
    filled_ports: Option<std::sync::mpsc::Sender<VifIndex>>,
    /// Where frames go that leave by a port this worker has no socket on:
    /// by worker, to the one that owns the port's queue 0 (`worker_of`);
    /// none for this worker itself.
    handoff_out: Vec<Option<std::sync::Arc<Handoff>>>,
    /// Hand-offs this round posted to, by worker: their doorbells are
    /// rung once the round is done.
    posted: Vec<bool>,
    /// Frames other workers passed to this one.
    handoff_in: Vec<std::sync::Arc<Handoff>>,
    /// What other workers ring, when they hand this one frames.
    bell: Option<std::sync::Arc<Doorbell>>,
    /// Spare frames for the pieces of frames the pipeline fragments, and
    /// the pieces it made; reserved once, filled per batch when needed.
    spill: Spill<UmemFrame>,
    /// Frames that came in chains of UMEM frames, put together.
    jumbo: Jumbo,
    /// The tables' generation, and the frame length above which a frame
    /// may have to be fragmented under them.
    fragment_floor: (u64, usize),
    /// Where frames of vifs being captured (`vrctl vifdump`) are copied.
    tap: Option<std::sync::Arc<Tap>>,
    /// When the current batch was taken, if a capture runs; 0 if none
    /// does, so that sending a frame tests one field.
    tap_now: u64,
    /// Copies of the batch's received frames, waiting for their verdicts;
    /// reserved once for a whole batch.
    staged: Vec<Staged>,
    /// Frames of the worker's UMEM that no port holds: those of closed
    /// ports while no other port is open, given to the next one.
    orphans: Vec<u64>,
    /// Per port, in `rebalance`: the frames it can spare (`Port::spare_frames`).
    spare: Vec<isize>,
    /// The ports sharing a UMEM when their fill share was last said to be
    /// thin (0: never).
    said_thin_share: usize,
}

impl Worker {
    /// A worker over `ports`.
    pub fn new(ports: Vec<Port>, pipeline: Pipeline, tables: TablesHandle) -> Worker {
        let mut w = Worker {
            port_of: index_ports(&ports),
            ports,
            pipeline,
            tables,
            descs: [RxDesc { addr: 0, len: 0, more: false }; VECTOR],
            batch: Vec::with_capacity(VECTOR),
            counters: WorkerCounters::default(),
            batches: 0,
            pollfds: Vec::new(),
            control: None,
            broken_ports: None,
            filled_ports: None,
            handoff_out: Vec::new(),
            posted: Vec::new(),
            handoff_in: Vec::new(),
            bell: None,
            spill: Spill::with_capacity(SPARES, SPARE_HEADROOM),
            jumbo: Jumbo::new(VECTOR, SPARES),
            fragment_floor: (u64::MAX, 0),
            tap: None,
            tap_now: 0,
            staged: Vec::new(),
            orphans: Vec::new(),
            spare: Vec::new(),
            said_thin_share: 0,
        };
        w.share_frames();
        w.fill_rings();
        w
    }

    /// Gives each port its share of its UMEM's frames (`xsk::FrameShare`),
    /// counting the ports on the same UMEM that can still receive. A port
    /// holding more than its new share in its fill ring keeps the excess
    /// until packets come (the kernel owns it), and is not refilled until
    /// it is below.
    fn share_frames(&mut self) {
        let mut thin = None;
        for i in 0..self.ports.len() {
            let sock = &self.ports[i].sock;
            let sharing = self.ports.iter().filter(|p| !p.broken && p.sock.shares_umem_with(sock)).count();
            let share = FrameShare::of(sock.umem_frames(), sharing);
            if share.is_thin() && sharing > 1 {
                thin = Some((sharing, sock.umem_frames(), share.fill));
            }
            self.ports[i].share = share;
        }
        // Said when it first happens, and again only as the ports double:
        // not for every pod added past it.
        if let Some((ports, frames, fill)) = thin.filter(|&(ports, ..)| ports >= 2 * self.said_thin_share) {
            self.said_thin_share = ports;
            tracing::warn!(
                ports,
                frames,
                fill,
                "{ports} ports share this worker's {frames} UMEM frames: each keeps {fill} to receive into, and a \
                 longer burst while the worker is busy elsewhere is dropped in the kernel (fill_ring_empty in \
                 vrctl vif get); raise dataplane.frames to {} for 128 a port",
                ports * 256
            );
        }
    }

    /// Copies the frames of vifs being captured into `tap`.
    pub fn with_tap(mut self, tap: std::sync::Arc<Tap>) -> Worker {
        self.tap = Some(tap);
        self.staged = Vec::with_capacity(VECTOR * crate::capture::SESSIONS);
        self
    }

    /// Notes whether a capture runs, for the batch about to be processed.
    fn check_tap(&mut self) {
        self.tap_now = match &self.tap {
            Some(tap) if tap.armed() => crate::capture::now_ns(),
            _ => 0,
        };
    }

    /// Sends frames for ports this worker lacks through `outs`, indexed by
    /// worker: to the worker that owns the port's queue 0 (`worker_of`).
    pub fn with_handoff_out(mut self, outs: Vec<Option<std::sync::Arc<Handoff>>>) -> Worker {
        self.posted = vec![false; outs.len()];
        self.handoff_out = outs;
        self
    }

    /// Transmits what other workers pass through `hs` (which ring its
    /// doorbell: `with_doorbell`).
    pub fn with_handoff_in(mut self, hs: Vec<std::sync::Arc<Handoff>>) -> Worker {
        self.handoff_in = hs;
        self
    }

    /// Sleeps until `bell` rings too: other workers ring it when they hand
    /// this one frames, the daemon when it gives it ports.
    pub fn with_doorbell(mut self, bell: std::sync::Arc<Doorbell>) -> Worker {
        self.bell = Some(bell);
        self
    }

    /// Says through `tx` the vif of each port it was given (`PortCommand::Add`)
    /// once the port's fill ring has frames: the daemon steers the port's
    /// queue to it only then, so that the kernel finds a frame for the
    /// first packet, where the first packets after the XDP program was
    /// attached were dropped until the worker's next round.
    pub fn with_filled_ports(mut self, tx: std::sync::mpsc::Sender<VifIndex>) -> Worker {
        self.filled_ports = Some(tx);
        self
    }

    /// Wakes the workers this round handed frames to, if they sleep.
    fn ring_bells(&mut self) {
        for (to, posted) in self.posted.iter_mut().enumerate() {
            if std::mem::take(posted) {
                if let Some(Some(h)) = self.handoff_out.get(to) {
                    h.bell.ring_if_asleep();
                }
            }
        }
    }

    /// Sends what other workers handed this one: how many frames.
    fn drain_handoffs(&mut self) -> usize {
        // Taken for the loop (no allocation), as sending needs the worker.
        let handoffs = std::mem::take(&mut self.handoff_in);
        let mut taken = 0;
        for h in &handoffs {
            while let Some((vif, len, buf)) = h.full.pop() {
                taken += 1;
                let sent = match port_for(&self.port_of, vif) {
                    Some(o) => self.copy_to(o, &buf[..usize::from(len)]),
                    None => Err(Unsent::NoPort),
                };
                self.count_sent(vif, sent, usize::from(len));
                h.give_back(buf);
            }
        }
        self.handoff_in = handoffs;
        taken
    }

    /// Takes port changes from `rx` between rounds, so that ports come and
    /// go while the others keep forwarding.
    pub fn with_control(mut self, rx: std::sync::mpsc::Receiver<PortCommand>) -> Worker {
        self.control = Some(rx);
        self
    }

    /// Says through `tx` which vif's port the worker stopped using
    /// (`port_failed`), for the daemon to close and open again.
    pub fn with_broken_ports(mut self, tx: std::sync::mpsc::Sender<VifIndex>) -> Worker {
        self.broken_ports = Some(tx);
        self
    }

    /// The kernel's counters for each port's socket, its free frames and
    /// those in its fill ring.
    pub fn port_stats(&self) -> Vec<(VifIndex, Option<crate::stats::SocketCounters>, usize, u32)> {
        self.ports.iter().map(|p| (p.vif, p.sock.stats().ok(), p.sock.free_frames(), p.sock.fill_level())).collect()
    }

    fn take_commands(&mut self) {
        let Some(rx) = &self.control else { return };
        let mut changed = false;
        // Allocates only when a port comes.
        let mut added = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                PortCommand::Add(port) => {
                    added.push(port.vif);
                    self.ports.push(*port);
                }
                PortCommand::Remove(vif) => {
                    added.retain(|&v| v != vif);
                    for mut port in extract(&mut self.ports, |p| p.vif == vif) {
                        let (n, (unsent, bytes)) = port.sock.surrender(&mut self.orphans);
                        // Counted as sent when queued: they never left.
                        let (counters, pipeline) = (&mut self.counters, &mut self.pipeline);
                        count_unsent(counters, pipeline, Unsent::PortClosed, vif, u64::from(unsent), bytes);
                        tracing::debug!(vif, frames = n, unsent, "port closed, its frames kept");
                    }
                }
            }
            changed = true;
        }
        if changed {
            self.port_of = index_ports(&self.ports);
            self.share_frames();
            // The daemon opens every port of a worker on one UMEM, so
            // any port takes the orphans; rebalancing spreads them.
            if let Some(port) = self.ports.iter_mut().find(|p| !p.broken) {
                port.sock.adopt(&mut self.orphans);
            }
            self.fill_rings();
            if let Some(tx) = &self.filled_ports {
                for vif in added {
                    let _ = tx.send(vif);
                }
            }
        }
    }

    /// After the kernel refused to send from port `p`: a link that is
    /// down has what waited dropped (counted), not kept until it comes up;
    /// any other refusal (ENXIO: the interface is gone) makes the port
    /// unusable, and the daemon is told, to close it and open it again
    /// when it can. A worker never stops for one port's trouble.
    fn port_failed(&mut self, p: usize, e: &io::Error) {
        let port = &mut self.ports[p];
        if e.raw_os_error() == Some(libc::ENETDOWN) {
            let (frames, bytes) = port.sock.cancel_tx();
            let vif = port.vif;
            self.count_unsent(Unsent::LinkDown, vif, u64::from(frames), bytes);
            return;
        }
        port.broken = true;
        tracing::warn!(vif = port.vif, "port unusable until opened again: the kernel refused to send from it: {e}");
        if let Some(tx) = &self.broken_ports {
            let _ = tx.send(port.vif);
        }
        self.port_of = index_ports(&self.ports);
        self.share_frames();
    }

    /// Frames the pipeline may need to cut a batch's frames into pieces
    /// (IPv4 with DF clear, longer than the path's MTU), taken from port
    /// `p`'s free frames. Only when some frame of the batch may need it:
    /// longer than the smallest MTU of any vif, less the largest tunnel
    /// overhead (the bound is recomputed when the tables change).
    fn take_spares(&mut self, p: usize, tables: &crate::tables::Tables) {
        if self.fragment_floor.0 != tables.generation() {
            let mtu = tables.vifs().map(|v| usize::from(v.mtu)).min().unwrap_or(usize::MAX);
            let overhead = crate::tables::TunnelEncap::MplsOverUdp.ip_overhead();
            self.fragment_floor = (tables.generation(), (mtu + ETH).saturating_sub(overhead));
        }
        if !self.pipeline.has_held() && !self.batch.iter().any(|f| f.len() > self.fragment_floor.1) {
            return;
        }
        let sock = &mut self.ports[p].sock;
        while self.spill.free.len() < SPARES {
            let Some(addr) = sock.alloc() else { break };
            // SAFETY: the frame was just taken from the free stash, so it is
            // ours and no other `UmemFrame` for it exists; it is sent or
            // given back before `poll_port` or `age` returns, while the
            // socket lives.
            match unsafe { sock.umem_frame(addr) } {
                Some((buf, _)) => self.spill.free.push(buf),
                None => sock.release(addr),
            }
        }
    }

    /// Sends a frame the pipeline is done with as its verdict says, or
    /// gives it back to port `p`, whose frame it is.
    fn send(&mut self, p: usize, f: Frame<UmemFrame>) {
        self.tap_sent(&f);
        let rx_addr = self.ports[p].sock.addr_of(f.buf(), f.headroom());
        match f.verdict {
            Verdict::Tx(out) => {
                let sent = match port_for(&self.port_of, out) {
                    // Out the port it came in on: send the frame itself.
                    Some(o) if o == p => {
                        let ok = self.ports[p].sock.transmit(rx_addr, f.len() as u32);
                        if !ok {
                            self.ports[p].sock.release(rx_addr);
                        }
                        ok.then_some(()).ok_or(Unsent::TxRingFull)
                    }
                    // Another port on the same UMEM: hand over the frame itself.
                    Some(o) if self.ports[o].sock.shares_umem_with(&self.ports[p].sock) => {
                        let ok = self.ports[o].sock.transmit(rx_addr, f.len() as u32);
                        if ok {
                            self.counters.moved += 1;
                        } else {
                            self.ports[p].sock.release(rx_addr);
                        }
                        ok.then_some(()).ok_or(Unsent::TxRingFull)
                    }
                    // Another UMEM, or another worker's port.
                    _ => {
                        let sent = self.copy_out_of(out, f.data());
                        self.ports[p].sock.release(rx_addr);
                        sent
                    }
                };
                self.count_sent(out, sent, f.len());
            }
            Verdict::ToHost | Verdict::ToAgent(_) => {
                self.counters.punted += 1;
                self.ports[p].sock.release(rx_addr);
            }
            Verdict::Drop(_) | Verdict::Held => self.ports[p].sock.release(rx_addr),
        }
    }

    /// `send` for a jumbo frame: copied out in a chain of frames, its
    /// buffer kept for the next.
    fn send_jumbo(&mut self, f: Frame<JumboBuf>) {
        self.tap_sent(&f);
        if let Verdict::Tx(out) = f.verdict {
            let sent = self.copy_out_of(out, f.data());
            self.count_sent(out, sent, f.len());
        } else if matches!(f.verdict, Verdict::ToHost | Verdict::ToAgent(_)) {
            self.counters.punted += 1;
        }
        self.jumbo.give(f.into_buf());
    }

    /// Copies a frame the pipeline sends to the capture, if one runs.
    fn tap_sent<B: Buffer>(&self, f: &Frame<B>) {
        if self.tap_now != 0 {
            if let (Some(tap), Verdict::Tx(out)) = (&self.tap, f.verdict) {
                tap.sent(out, f.data(), self.tap_now);
            }
        }
    }

    /// Sends a copy of `data` out of vif `out`: into frames of this
    /// worker's port for it, or, with none here, to the owner of the
    /// port's queue 0 (`hand_off`).
    fn copy_out_of(&mut self, out: VifIndex, data: &[u8]) -> Result<(), Unsent> {
        match port_for(&self.port_of, out) {
            Some(o) => {
                let sent = self.copy_to(o, data);
                self.counters.copied += u64::from(sent.is_ok());
                sent
            }
            None => self.hand_off(out, data),
        }
    }

    /// Passes `data`, leaving by vif `out`, on which this worker has no
    /// socket, to the owner of the port's queue 0.
    fn hand_off(&mut self, out: VifIndex, data: &[u8]) -> Result<(), Unsent> {
        let owner = worker_of(out, 0, self.handoff_out.len());
        let Some(Some(h)) = self.handoff_out.get(owner) else { return Err(Unsent::NoPort) };
        h.post(out, data)?;
        self.posted[owner] = true;
        self.counters.handed_off += 1;
        Ok(())
    }

    /// Counts a frame of `len` bytes the pipeline sent out of vif `out`:
    /// queued, or not (`tx_dropped`, and no longer in the vif's sent).
    fn count_sent(&mut self, out: VifIndex, sent: Result<(), Unsent>, len: usize) {
        match sent {
            Ok(()) => self.counters.tx += 1,
            Err(cause) => self.count_unsent(cause, out, 1, len as u64),
        }
    }

    fn count_unsent(&mut self, cause: Unsent, out: VifIndex, frames: u64, bytes: u64) {
        count_unsent(&mut self.counters, &mut self.pipeline, cause, out, frames, bytes);
    }

    /// Copies `data` into a frame of port `o`'s (a chain of them, for a
    /// jumbo frame) and sends it; with too few in its stash, from the stash
    /// of the port on its UMEM that has the most to spare (`rebalance` tops
    /// stashes up once a round; a burst handed over from other workers can
    /// empty one sooner).
    fn copy_to(&mut self, o: usize, data: &[u8]) -> Result<(), Unsent> {
        // Asked only for as many as the frame needs: a jumbo frame found a
        // stash of 1-4 frames too few, and was dropped though others had
        // frames to spare (a 9000-byte ping with the fabric's fill ring
        // holding most of a small UMEM).
        let need = data.len().div_ceil(self.ports[o].sock.frame_size()).max(1);
        if self.ports[o].sock.free_frames() < need {
            let richest = (0..self.ports.len())
                .filter(|&j| j != o && self.ports[j].sock.shares_umem_with(&self.ports[o].sock))
                .map(|j| (j, self.ports[j].spare_frames()))
                .max_by_key(|&(_, spare)| spare);
            if let Some((j, spare)) = richest.filter(|&(_, spare)| spare > 0) {
                give_frames(&mut self.ports, j, o, (spare as usize).min(VECTOR.max(need)));
            }
        }
        copy_out(&mut self.ports[o].sock, data)
    }

    /// Runs the round's jumbo frames through the pipeline and sends them,
    /// as `poll_port` does its batch (`jumbo`).
    fn process_jumbo(&mut self, vif: VifIndex, tables: &crate::tables::Tables, watch: &mut Stopwatch<'_>) {
        if self.jumbo.batch.is_empty() {
            return;
        }
        if let Some(tap) = self.tap.as_ref().filter(|t| self.tap_now != 0 && t.watches(vif)) {
            for (at, f) in self.jumbo.batch.iter().enumerate() {
                tap.stage(vif, at, f.data(), self.tap_now, &mut self.staged);
            }
        }
        // Spares to cut a frame for a smaller MTU (`take_spares` has just
        // worked out above which length a frame may need them).
        if self.pipeline.has_held() || self.jumbo.batch.iter().any(|f| f.len() > self.fragment_floor.1) {
            self.jumbo.fill_spill(SPARES);
        }
        let mut batch = std::mem::take(&mut self.jumbo.batch);
        self.pipeline.process_timed(tables, &mut batch, &mut self.jumbo.spill, watch);
        if let (false, Some(tap)) = (self.staged.is_empty(), &self.tap) {
            let pipeline = &self.pipeline;
            tap.post_staged(&mut self.staged, |at| (batch.get(at).map(|f| f.verdict), pipeline.general_cause_at(at)));
        }
        for f in batch.drain(..) {
            self.send_jumbo(f);
        }
        self.jumbo.batch = batch;
        let mut made = std::mem::take(&mut self.jumbo.spill.out);
        for f in made.drain(..) {
            self.send_jumbo(f);
        }
        self.jumbo.spill.out = made;
        while let Some(buf) = self.jumbo.spill.free.pop() {
            self.jumbo.give(buf);
        }
    }

    /// Sends the frames the pipeline made from port `p`'s spare buffers,
    /// and gives back the spares it did not use.
    fn send_spill(&mut self, p: usize) {
        let mut made = std::mem::take(&mut self.spill.out);
        for f in made.drain(..) {
            self.send(p, f);
        }
        self.spill.out = made;
        for buf in self.spill.free.drain(..) {
            let addr = self.ports[p].sock.addr_of(&buf, 0);
            self.ports[p].sock.release(addr);
        }
    }

    /// The pipeline, for its counters.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Ages flows while no frames come (a batch does it otherwise), and
    /// lets go the held fragments whose datagram's first fragment another
    /// worker has seen since (or drops those that waited too long).
    pub fn age(&mut self) {
        self.pipeline.age(crate::pipeline::SWEEP_IDLE);
        if self.pipeline.has_held() && !self.ports.is_empty() {
            self.check_tap();
            let tables = self.tables.load();
            self.take_spares(0, &tables);
            self.pipeline.process(&tables, &mut [], &mut self.spill);
            self.send_spill(0);
        }
    }

    /// Sets the time (milliseconds) the pipeline stamps and ages flows by.
    pub fn set_now(&mut self, now_ms: u64) {
        self.pipeline.set_now(now_ms);
    }

    /// The worker's own counters.
    pub fn counters(&self) -> WorkerCounters {
        self.counters
    }

    /// One round over every port. Returns how many frames it took: those
    /// its ports received and those other workers handed it.
    pub fn poll(&mut self) -> io::Result<usize> {
        self.take_commands();
        let mut received = 0;
        let timed_before = self.counters.runtime.batches;
        for p in 0..self.ports.len() {
            received += self.poll_port(p)?;
        }
        self.ring_bells();
        received += self.drain_handoffs();
        let t0 = (self.counters.runtime.batches != timed_before).then(super::tsc);
        for p in 0..self.ports.len() {
            let port = &mut self.ports[p];
            port.sock.complete();
            if port.sock.tx_pending() > 0 && !port.broken {
                if let Err(e) = port.sock.kick_tx() {
                    self.port_failed(p, &e);
                }
            }
        }
        self.fill_rings();
        if let Some(t0) = t0 {
            self.counters.runtime.cycles[Stage::Kick as usize] += super::tsc().wrapping_sub(t0);
        }
        Ok(received)
    }

    /// Tops every port's fill ring up to its share, from its own stash and
    /// others' (`rebalance`).
    fn fill_rings(&mut self) {
        self.rebalance();
        for port in self.ports.iter_mut().filter(|p| !p.broken) {
            port.sock.refill_to(port.share.fill);
        }
    }

    /// Frames forwarded by address end up in the stash of the port that
    /// sent them; this moves them to the ports short of frames to top their
    /// fill rings up with (`Port::spare_frames`), from those with frames to
    /// spare on the same UMEM, so that every fill ring keeps frames to
    /// receive into. One pass over the ports for each UMEM (a worker has
    /// one), however many ports are short.
    fn rebalance(&mut self) {
        /// Marks a port whose UMEM is balanced for this round.
        const BALANCED: isize = isize::MIN;
        let n = self.ports.len();
        self.spare.clear();
        self.spare.extend(self.ports.iter().map(Port::spare_frames));
        // The ports of the first UMEM not yet balanced.
        while let Some(first) = self.spare.iter().position(|&s| s != BALANCED) {
            let umem = self.ports[first].sock.umem_id();
            let mut giver = first;
            for taker in first..n {
                if self.ports[taker].sock.umem_id() != umem {
                    continue;
                }
                while self.spare[taker] < 0 {
                    while giver < n && (self.ports[giver].sock.umem_id() != umem || self.spare[giver] <= 0) {
                        giver += 1;
                    }
                    if giver == n {
                        break;
                    }
                    let want = self.spare[giver].min(-self.spare[taker]) as usize;
                    let moved = give_frames(&mut self.ports, giver, taker, want) as isize;
                    self.spare[giver] -= moved;
                    self.spare[taker] += moved;
                    if moved == 0 {
                        break;
                    }
                }
            }
            for i in first..n {
                if self.ports[i].sock.umem_id() == umem {
                    self.spare[i] = BALANCED;
                }
            }
        }
    }

    /// Sleeps until any port has something to receive, another worker
    /// hands this one frames (its `Doorbell`), or `timeout_ms`.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.pollfds.clear();
        self.pollfds.extend(self.ports.iter().filter(|p| !p.broken).map(|p| libc::pollfd {
            fd: p.sock.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let woken = match &self.bell {
            None => super::xsk::poll_all(&mut self.pollfds, timeout_ms)?,
            Some(bell) => {
                bell.sleep();
                // Frames posted before the posters could see it asleep.
                if self.handoff_in.iter().any(|h| !h.full.is_empty()) {
                    bell.wake();
                    return Ok(());
                }
                self.pollfds.push(libc::pollfd { fd: bell.hear.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                let slept = super::xsk::poll_all(&mut self.pollfds, timeout_ms);
                bell.wake();
                slept?
            }
        };
        self.counters.wakeups += u64::from(woken);
        Ok(())
    }

    fn poll_port(&mut self, p: usize) -> io::Result<usize> {
        // One batch in SAMPLE_EVERY is timed, stage by stage; the others
        // do not even read the clock.
        let timed = (self.batches + 1) % SAMPLE_EVERY == 0;
        let t0 = if timed { super::tsc() } else { 0 };
        let n = self.ports[p].sock.receive(&mut self.descs);
        if n == 0 {
            return Ok(0);
        }
        self.batches += 1;
        let mut runtime = Runtime::default();
        let mut watch = if timed { Stopwatch::started_at(super::tsc, t0, &mut runtime) } else { Stopwatch::off() };
        let vif = self.ports[p].vif;
        self.batch.clear();
        let mut packets = 0;
        for d in &self.descs[..n] {
            let Port { sock, chain, .. } = &mut self.ports[p];
            if d.more || !matches!(chain, Assembly::Idle) {
                let piece = match sock.frame_mut(d.addr) {
                    Some((buf, at)) => buf.get(at..at + d.len as usize).unwrap_or(&[]),
                    None => &[],
                };
                match self.jumbo.piece(chain, piece, d.more, vif) {
                    Piece::More => {}
                    Piece::Whole => packets += 1,
                    Piece::TooLong => {
                        packets += 1;
                        self.pipeline.count_drop(vif, crate::stats::DropReason::FrameTooLong);
                    }
                }
                sock.release(d.addr);
                continue;
            }
            packets += 1;
            // SAFETY: each descriptor was just received, so its frame is
            // ours and appears once; the batch is emptied below, before the
            // socket can be dropped.
            let Some((buf, head)) = (unsafe { sock.umem_frame(d.addr) }) else { continue };
            match Frame::new(buf, head, d.len as usize, vif) {
                Some(f) => self.batch.push(f),
                None => sock.release(d.addr),
            }
        }
        self.counters.rx += packets;
        self.check_tap();
        if let Some(tap) = self.tap.as_ref().filter(|t| self.tap_now != 0 && t.watches(vif)) {
            for (at, f) in self.batch.iter().enumerate() {
                tap.stage(vif, at, f.data(), self.tap_now, &mut self.staged);
            }
        }
        watch.mark(Stage::Rx);
        let tables = self.tables.load();
        self.take_spares(p, &tables);
        self.pipeline.process_timed(&tables, &mut self.batch, &mut self.spill, &mut watch);
        if let (false, Some(tap)) = (self.staged.is_empty(), &self.tap) {
            let (batch, pipeline) = (&self.batch, &self.pipeline);
            tap.post_staged(&mut self.staged, |at| (batch.get(at).map(|f| f.verdict), pipeline.general_cause_at(at)));
        }
        let mut batch = std::mem::take(&mut self.batch);
        for f in batch.drain(..) {
            self.send(p, f);
        }
        self.batch = batch;
        self.send_spill(p);
        watch.mark(Stage::Tx);
        self.process_jumbo(vif, &tables, &mut watch);
        if watch.is_on() {
            // Frames, not descriptors: a jumbo frame came in several.
            runtime.packets = packets;
            runtime.batches = 1;
            self.counters.runtime.add(&runtime);
        }
        Ok(n)
    }
}

/// Moves up to `n` frames from port `from`'s stash to port `to`'s (two
/// ports of one UMEM): how many it moved.
fn give_frames(ports: &mut [Port], from: usize, to: usize, n: usize) -> usize {
    let (a, b) = ports.split_at_mut(from.max(to));
    let (giver, taker) = if from < to { (&mut a[from], &mut b[0]) } else { (&mut b[0], &mut a[to]) };
    giver.sock.give_frames(&mut taker.sock, n)
}

/// The worker of `workers` that serves queue `queue` of vif `vif`'s port.
/// Offset by the vif, so that pods' veths, which mostly have one queue,
/// spread over the workers instead of all landing on the first; queue 0's
/// worker sends what leaves by the port, and the others hand it theirs.
pub fn worker_of(vif: VifIndex, queue: u32, workers: usize) -> usize {
    (vif as usize + queue as usize) % workers.max(1)
}

/// The port a frame for `vif` leaves by, if the worker has one.
#[inline]
fn port_for(port_of: &[Option<u16>], vif: VifIndex) -> Option<usize> {
    port_of.get(vif as usize).copied().flatten().map(usize::from)
}

/// For each vif index, the position of its first port in `ports` that
/// can send.
fn index_ports(ports: &[Port]) -> Vec<Option<u16>> {
    let len = ports.iter().map(|p| p.vif as usize + 1).max().unwrap_or(0);
    let mut of = vec![None; len];
    for (i, p) in ports.iter().enumerate().rev().filter(|(_, p)| !p.broken) {
        of[p.vif as usize] = Some(i as u16);
    }
    of
}

/// Takes the ports `which` picks out of `ports`, keeping the others' order.
fn extract(ports: &mut Vec<Port>, which: impl Fn(&Port) -> bool) -> Vec<Port> {
    let (out, kept) = std::mem::take(ports).into_iter().partition(which);
    *ports = kept;
    out
}

/// Takes back `frames` frames (`bytes` bytes) the pipeline counted as sent
/// out of vif `out`, and counts them dropped, by cause.
fn count_unsent(
    c: &mut WorkerCounters,
    pipeline: &mut Pipeline,
    cause: Unsent,
    out: VifIndex,
    frames: u64,
    bytes: u64,
) {
    c.tx_dropped += frames;
    c.unsent[cause as usize] += frames;
    pipeline.count_unsent(out, frames, bytes);
}

/// Frames a jumbo frame is cut into at most: `jumbo::LONGEST` in 2 KiB frames.
const CHAIN: usize = jumbo::LONGEST.div_ceil(2048);

/// Copies `data` into free frames of `sock` and queues it: one frame, or a
/// chain of them for a frame longer than one holds (a jumbo frame, where
/// the socket takes chains). Refused, with every frame given back, if it
/// has too few free frames or tx slots, or is longer than it can send.
fn copy_out(sock: &mut XskSocket, data: &[u8]) -> Result<(), Unsent> {
    let frame = sock.frame_size();
    let pieces = data.len().div_ceil(frame);
    if data.is_empty() || pieces > CHAIN || pieces > 1 && !sock.is_multi_buffer() {
        return Err(Unsent::TooLong);
    }
    let mut chain = [(0u64, 0u32); CHAIN];
    let mut taken = 0;
    for part in data.chunks(frame) {
        let Some(addr) = sock.alloc() else { break };
        chain[taken] = (addr, part.len() as u32);
        taken += 1;
        match sock.frame_mut(addr) {
            Some((buf, at)) if at + part.len() <= buf.len() => buf[at..at + part.len()].copy_from_slice(part),
            _ => break,
        }
    }
    let sent = if taken < pieces {
        Err(Unsent::NoFrame)
    } else if sock.transmit_chain(&chain[..pieces]) {
        return Ok(());
    } else {
        Err(Unsent::TxRingFull)
    };
    for &(addr, _) in &chain[..taken] {
        sock.release(addr);
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(bell: &Doorbell) -> bool {
        bell.hear.recv(&mut [0u8; 4]).is_ok()
    }

    #[test]
    fn a_doorbell_rings_once_for_a_sleeping_worker_and_not_for_an_awake_one() {
        let bell = Doorbell::new().unwrap();
        bell.ring_if_asleep();
        assert!(!heard(&bell), "awake: no syscall, nothing to hear");
        bell.sleep();
        bell.ring_if_asleep();
        bell.ring_if_asleep();
        assert!(heard(&bell) && !heard(&bell), "asleep: one ring, however many posts");
        bell.sleep();
        bell.ring_if_asleep();
        bell.wake();
        assert!(!heard(&bell), "waking forgets the rings heard asleep");
    }

    #[test]
    fn a_worker_asleep_in_poll_wakes_when_another_hands_it_a_frame() {
        let bell = Doorbell::new().unwrap();
        let handoff = Handoff::new(4, std::sync::Arc::clone(&bell));
        bell.sleep();
        let sender = {
            let handoff = std::sync::Arc::clone(&handoff);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                assert_eq!(handoff.post(7, b"frame"), Ok(()));
                handoff.bell.ring_if_asleep();
            })
        };
        // Ten seconds unless rung: poll returns with the bell readable.
        let mut fds = [libc::pollfd { fd: bell.hear.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        super::super::xsk::poll_all(&mut fds, 10_000).unwrap();
        bell.wake();
        sender.join().unwrap();
        assert_eq!(fds[0].revents & libc::POLLIN, libc::POLLIN, "woken by the ring, not the timeout");
        assert_eq!(handoff.full.pop().map(|(vif, len, _)| (vif, len)), Some((7, 5)));
    }

    #[test]
    fn a_hand_off_takes_jumbo_frames_in_buffers_it_makes_as_they_come_up_to_a_share_of_its_slots() {
        let handoff = Handoff::new(16, Doorbell::new().unwrap());
        let jumbo = vec![0x6a; 9000];
        // 16 slots: 4 jumbo buffers, none made until the first jumbo frame.
        assert_eq!(handoff.jumbo_made.load(Ordering::Relaxed), 0);
        for n in 0..4 {
            assert_eq!(handoff.post(n, &jumbo), Ok(()), "jumbo frame {n}");
        }
        assert_eq!(handoff.post(4, &jumbo), Err(Unsent::HandoffFull), "a fifth waits for a buffer back");
        assert_eq!(handoff.post(5, &[1; 60]), Ok(()), "small frames have their own buffers");
        let too_long = vec![0; jumbo::LONGEST + 1];
        assert_eq!(handoff.post(6, &too_long), Err(Unsent::TooLong), "longer than any buffer");
        let (vif, len, buf) = handoff.full.pop().unwrap();
        assert_eq!((vif, usize::from(len), &buf[..9000]), (0, 9000, &jumbo[..]));
        handoff.give_back(buf);
        assert_eq!(handoff.post(7, &jumbo), Ok(()), "its buffer taken again");
        assert_eq!(handoff.jumbo_made.load(Ordering::Relaxed), 4, "and not made again");
    }
}
