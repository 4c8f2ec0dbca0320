//! AF_XDP sockets: a UMEM (packet memory shared with the kernel), its fill
//! and completion rings, and the rx and tx rings of one queue.
//!
//! Ownership of every UMEM frame is always clear: it is in the free stash
//! (ours), in the fill ring or tx ring (the kernel's until it comes back),
//! or received and not yet released (ours). We only ever read or write
//! frames we own, which is what makes handing out slices of shared memory
//! sound. A socket that closes gives every frame it can account for back
//! first (`surrender`), so a port's frames outlive the port.

use super::os_error;
use crate::memory::Mapping;
use crate::stats::SocketCounters;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// How to bind: zero-copy where the driver allows, copy otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Try zero-copy, fall back to copy.
    Auto,
    /// Copy mode only.
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// Sizes and switches of a socket.
#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    /// UMEM frames.
    pub frames: u32,
    /// Bytes per frame (2048 or 4096).
    pub frame_size: u32,
    /// Entries per ring (a power of two).
    pub ring_size: u32,
    /// Bind mode.
    pub mode: BindMode,
    /// Let the kernel say when it needs a wake-up, so an idle worker can
    /// sleep in `poll` instead of spinning.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig { frames: 16384, frame_size: 2048, ring_size: 2048, mode: BindMode::Auto, need_wakeup: true }
    }
}

impl XskConfig {
    /// The longest frame the kernel can receive into one of these frames:
    /// it keeps XDP_PACKET_HEADROOM (256 bytes) in front of each. A longer
    /// one it drops before vrouterd sees it (the socket's `rx_dropped`).
    /// 1792 with 2 KiB frames: an interface MTU up to 1778.
    pub fn longest_rx_frame(&self) -> usize {
        self.frame_size as usize - XDP_PACKET_HEADROOM
    }
}

/// What the kernel keeps in front of a received frame (XDP_PACKET_HEADROOM).
const XDP_PACKET_HEADROOM: usize = 256;

/// Binds tried while the queue is busy, 50 ms apart.
const BIND_TRIES: u32 = 20;

/// Frames a port keeps in its fill ring at most: enough for 35 µs of a
/// 10 Gb/s link's smallest frames while the worker is elsewhere.
pub const FILL_TARGET: u32 = 512;

/// Frames a port keeps in its fill ring at least, however many ports share
/// the UMEM (`FrameShare`).
pub const FILL_FLOOR: u32 = 32;

/// What each of the ports sharing a UMEM keeps of its frames: in its fill
/// ring, for the kernel to receive into, and in its stash, for copies and
/// the pipeline's spare frames. The kernel holds a fill ring's frames until
/// a packet comes, and nothing can take them back while the socket is
/// open, so an idle pod's port keeps what its ring holds: with every port
/// filled to `FILL_TARGET`, 32 ports took all of the default 16,384 frames,
/// and the next ports had none to receive into (the kernel dropped their
/// frames as `fill_ring_empty`). Half the UMEM goes to fill rings, in equal
/// shares between `FILL_FLOOR` and `FILL_TARGET`; a quarter at most to the
/// stashes' cushions; the rest moves, in flight or with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameShare {
    /// Frames kept in the fill ring.
    pub fill: u32,
    /// Frames kept in the stash besides what the fill ring lacks, as many
    /// as the fill ring's at most: for frames other workers hand over.
    pub cushion: u32,
}

impl FrameShare {
    /// The share of each of `ports` ports on a UMEM of `frames` frames.
    pub fn of(frames: u32, ports: usize) -> FrameShare {
        let ports = ports.max(1) as u32;
        FrameShare {
            fill: (frames / 2 / ports).clamp(FILL_FLOOR, FILL_TARGET),
            cushion: (frames / 4 / ports).clamp(1, FILL_TARGET),
        }
    }

    /// True if the fill ring's share is thin: a burst of more than 64
    /// frames while the worker is elsewhere is dropped in the kernel.
    pub fn is_thin(&self) -> bool {
        self.fill < 64
    }
}

/// One whole UMEM frame that the worker owns, as a byte buffer. Made only
/// by `XskSocket::umem_frame`, whose contract makes it unique and keeps it
/// from outliving the mapping.
pub struct UmemFrame {
    ptr: NonNull<u8>,
    len: usize,
}

impl AsRef<[u8]> for UmemFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `umem_frame`'s contract: the frame is ours, unique, and mapped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for UmemFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_ref`; `&mut self` makes the slice exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: a frame buffer is plain memory owned by one worker at a time.
unsafe impl Send for UmemFrame {}

// SAFETY: `len` is set once, when `umem_frame` makes the frame.
unsafe impl crate::memory::Buffer for UmemFrame {}

/// Waits until one of `fds` is readable, or `timeout_ms` passes: whether
/// one was (false: the time passed, or a signal came).
pub(crate) fn poll_all(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<bool> {
    // SAFETY: `fds` is a live, writable array of pollfd and its length is passed.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
        return Err(os_error("poll"));
    }
    Ok(r > 0)
}

/// Binds `fd` as `sa` says. A queue stays taken for a moment after the
/// socket that held it is closed: the kernel frees its buffer pool from a
/// work queue. So a bind right after another process let go (a restart,
/// the next run of a tool) can see EBUSY; it is retried for up to a second.
fn bind_retrying(fd: &OwnedFd, sa: libc::sockaddr_xdp) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        // SAFETY: `sa` is a valid sockaddr_xdp and the length says so.
        let r = unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_xdp).cast(), std::mem::size_of_val(&sa) as u32)
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if attempt == BIND_TRIES || e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A UMEM's memory and shape. It outlives the sockets bound to it: when a
/// worker's last port closes, the next one registers the same memory
/// again (`XskSocket::open_on`), so that frames a worker still holds (a
/// fragment waiting for the rest of its datagram) stay valid.
#[derive(Clone)]
pub struct Umem {
    mapping: Arc<Mapping>,
    frame_size: u32,
    frames: u32,
}

/// What another socket needs to bind to the same UMEM: a descriptor of a
/// socket bound to it (duplicated, so that it stays valid) and the memory
/// itself. Holding it keeps that socket bound: let it go with the port.
#[derive(Clone)]
pub struct UmemShare {
    fd: Arc<OwnedFd>,
    umem: Umem,
    /// The owner was bound for several buffers a packet, which a socket
    /// sharing its UMEM inherits (it may not ask for itself).
    multi_buffer: bool,
}

impl UmemShare {
    /// The kernel's counters of the socket it holds.
    pub fn socket_counters(&self) -> io::Result<SocketCounters> {
        socket_counters(&self.fd)
    }
}

/// The kernel's counters of the AF_XDP socket `fd`.
fn socket_counters(fd: &OwnedFd) -> io::Result<SocketCounters> {
    // SAFETY: `xdp_statistics` is integers only, and is what this option writes.
    let s: libc::xdp_statistics = unsafe { getsockopt(fd, libc::XDP_STATISTICS, "reading AF_XDP statistics")? };
    Ok(SocketCounters {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        fill_ring_empty: s.rx_fill_ring_empty_descs,
        tx_invalid: s.tx_invalid_descs,
    })
}

/// Where a new socket's UMEM comes from.
#[derive(Clone, Copy)]
enum Memory<'a> {
    /// New memory, registered by this socket; every frame in its stash.
    New,
    /// Memory no bound socket holds any more, registered again; the stash
    /// starts empty (the frames are the worker's to give).
    Again(&'a Umem),
    /// A UMEM another bound socket holds; the stash starts empty.
    Shared(&'a UmemShare),
}

/// A received frame: where it is in the UMEM and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxDesc {
    /// UMEM address of the first byte.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// The packet goes on in the next descriptor (XDP_PKT_CONTD): a packet
    /// longer than a frame, on a socket bound for several buffers a packet.
    pub more: bool,
}

/// A single-producer, single-consumer ring shared with the kernel.
struct Ring {
    /// Keeps the ring mapped as long as the pointers above are used.
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    size: u32,
}

impl Ring {
    fn new(map: Mapping, off: &libc::xdp_ring_offset, size: u32) -> Ring {
        let base = map.as_ptr();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this very
        // mapping and lie inside it; the kernel aligns the indices for atomics.
        unsafe {
            Ring {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                desc: base.add(off.desc as usize),
                mask: size - 1,
                size,
                _map: map,
            }
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into `self.map`, alive as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Free slots, for a ring we produce into.
    fn free(&self) -> u32 {
        let cons = self.consumer().load(Ordering::Acquire);
        self.size - self.producer().load(Ordering::Relaxed).wrapping_sub(cons)
    }

    /// Entries ready, for a ring we consume from.
    fn ready(&self) -> u32 {
        self.producer().load(Ordering::Acquire).wrapping_sub(self.consumer().load(Ordering::Relaxed))
    }

    fn write_u64(&mut self, idx: u32, v: u64) {
        // SAFETY: `idx & mask` is inside the descriptor array of a u64 ring
        // (fill); slots between consumer and producer are ours to write.
        unsafe { self.desc.cast::<u64>().add((idx & self.mask) as usize).write(v) }
    }

    fn read_u64(&self, idx: u32) -> u64 {
        // SAFETY: as above: `idx & mask` is inside a u64 ring (completion,
        // or fill when `surrender` reads back what we wrote).
        unsafe { self.desc.cast::<u64>().add((idx & self.mask) as usize).read() }
    }

    fn write_desc(&mut self, idx: u32, d: libc::xdp_desc) {
        // SAFETY: as `write_u64`, for the tx ring's `xdp_desc` array.
        unsafe { self.desc.cast::<libc::xdp_desc>().add((idx & self.mask) as usize).write(d) }
    }

    fn read_desc(&self, idx: u32) -> libc::xdp_desc {
        // SAFETY: as `read_u64`, for an `xdp_desc` ring (rx, or tx when
        // frames are taken back from it).
        unsafe { self.desc.cast::<libc::xdp_desc>().add((idx & self.mask) as usize).read() }
    }
}

/// An AF_XDP socket bound to one queue of one interface, with its own UMEM.
pub struct XskSocket {
    fd: OwnedFd,
    /// Shared with every socket bound to the same UMEM.
    umem: Arc<Mapping>,
    frame_size: u32,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    free: Vec<u64>,
    zerocopy: bool,
    need_wakeup: bool,
    multi_buffer: bool,
}

// SAFETY: the socket owns its mappings and descriptors outright; nothing in
// it is tied to the thread that created it.
unsafe impl Send for XskSocket {}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T, what: &str) -> io::Result<()> {
    // SAFETY: `v` is a live value of the type the option expects.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (v as *const T).cast(), std::mem::size_of::<T>() as u32)
    };
    if r != 0 {
        return Err(os_error(what));
    }
    Ok(())
}

/// # Safety
/// `T` must be a C struct made only of integers (all zeros valid), the one
/// the kernel writes for `opt`.
unsafe fn getsockopt<T: Copy>(fd: &OwnedFd, opt: libc::c_int, what: &str) -> io::Result<T> {
    // SAFETY: the caller promises that all-zero bytes are a valid `T`.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes and `len` says so.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) };
    if r != 0 {
        return Err(os_error(what));
    }
    Ok(v)
}

impl XskSocket {
    /// Opens a socket on queue `queue` of interface `ifindex`.
    pub fn open(ifindex: u32, queue: u32, config: XskConfig) -> io::Result<XskSocket> {
        Self::open_mode(ifindex, queue, config, Memory::New)
    }

    /// Opens a socket on another interface or queue that shares `share`'s
    /// UMEM, so that frames move between the two by address. Its free
    /// stash starts empty: the caller gives it frames (`give_frames`).
    pub fn open_shared(ifindex: u32, queue: u32, config: XskConfig, share: &UmemShare) -> io::Result<XskSocket> {
        let config = XskConfig { frames: share.umem.frames, frame_size: share.umem.frame_size, ..config };
        Self::open_mode(ifindex, queue, config, Memory::Shared(share))
    }

    /// Opens a socket that registers `umem` again, once no bound socket
    /// holds it. Its stash starts empty, as `open_shared`'s.
    pub fn open_on(ifindex: u32, queue: u32, config: XskConfig, umem: &Umem) -> io::Result<XskSocket> {
        let config = XskConfig { frames: umem.frames, frame_size: umem.frame_size, ..config };
        Self::open_mode(ifindex, queue, config, Memory::Again(umem))
    }

    fn open_mode(ifindex: u32, queue: u32, config: XskConfig, memory: Memory<'_>) -> io::Result<XskSocket> {
        match config.mode {
            BindMode::Auto => match Self::open_with(ifindex, queue, config, libc::XDP_ZEROCOPY, memory) {
                Ok(s) => Ok(s),
                Err(_) => Self::open_with(ifindex, queue, config, libc::XDP_COPY, memory),
            },
            BindMode::Copy => Self::open_with(ifindex, queue, config, libc::XDP_COPY, memory),
            BindMode::ZeroCopy => Self::open_with(ifindex, queue, config, libc::XDP_ZEROCOPY, memory),
        }
    }

    /// What another socket needs to share this one's UMEM.
    pub fn share(&self) -> io::Result<UmemShare> {
        Ok(UmemShare { fd: Arc::new(self.fd.try_clone()?), umem: self.umem(), multi_buffer: self.multi_buffer })
    }

    /// This socket's UMEM, to register again once no socket holds it.
    pub fn umem(&self) -> Umem {
        Umem {
            mapping: Arc::clone(&self.umem),
            frame_size: self.frame_size,
            frames: (self.umem.len() / self.frame_size as usize) as u32,
        }
    }

    /// True when `other` uses the same UMEM, so frames can move between
    /// the two by address.
    pub fn shares_umem_with(&self, other: &XskSocket) -> bool {
        Arc::ptr_eq(&self.umem, &other.umem)
    }

    /// Moves up to `n` free frames from this socket's stash to `to`'s.
    pub fn give_frames(&mut self, to: &mut XskSocket, n: usize) -> usize {
        if !self.shares_umem_with(to) {
            return 0;
        }
        let n = n.min(self.free.len());
        let at = self.free.len() - n;
        to.free.extend(self.free.drain(at..));
        n
    }

    fn open_with(ifindex: u32, queue: u32, c: XskConfig, copy_flag: u16, memory: Memory<'_>) -> io::Result<XskSocket> {
        if !c.ring_size.is_power_of_two() || !c.frame_size.is_power_of_two() || c.frames == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring and frame sizes must be powers of two"));
        }
        // SAFETY: a plain socket call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_error("AF_XDP socket"));
        }
        // SAFETY: `raw` was just returned to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = c.frames as usize * c.frame_size as usize;
        let umem = match memory {
            Memory::Shared(s) => Arc::clone(&s.umem.mapping),
            Memory::Again(u) => Arc::clone(&u.mapping),
            Memory::New => Arc::new(Mapping::anonymous(umem_len, true, "mapping the UMEM")?),
        };
        if !matches!(memory, Memory::Shared(_)) {
            let reg = libc::xdp_umem_reg {
                addr: umem.as_ptr() as u64,
                len: umem_len as u64,
                chunk_size: c.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(&fd, libc::XDP_UMEM_REG, &reg, "registering the UMEM (RLIMIT_MEMLOCK? CAP_IPC_LOCK?)")?;
        }
        for opt in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING, libc::XDP_TX_RING] {
            setsockopt(&fd, opt, &c.ring_size, "sizing an AF_XDP ring")?;
        }
        // SAFETY: `xdp_mmap_offsets` is integers only, and is what this option writes.
        let off: libc::xdp_mmap_offsets = unsafe { getsockopt(&fd, libc::XDP_MMAP_OFFSETS, "reading ring offsets")? };
        let n = c.ring_size as usize;
        let u64_ring = |o: &libc::xdp_ring_offset| o.desc as usize + n * 8;
        let desc_ring = |o: &libc::xdp_ring_offset| o.desc as usize + n * std::mem::size_of::<libc::xdp_desc>();
        let fill = Ring::new(
            Mapping::shared(fd.as_fd(), u64_ring(&off.fr), libc::XDP_UMEM_PGOFF_FILL_RING, "mapping an AF_XDP ring")?,
            &off.fr,
            c.ring_size,
        );
        let comp = Ring::new(
            Mapping::shared(
                fd.as_fd(),
                u64_ring(&off.cr),
                libc::XDP_UMEM_PGOFF_COMPLETION_RING,
                "mapping an AF_XDP ring",
            )?,
            &off.cr,
            c.ring_size,
        );
        let rx = Ring::new(
            Mapping::shared(fd.as_fd(), desc_ring(&off.rx), libc::XDP_PGOFF_RX_RING as u64, "mapping an AF_XDP ring")?,
            &off.rx,
            c.ring_size,
        );
        let tx = Ring::new(
            Mapping::shared(fd.as_fd(), desc_ring(&off.tx), libc::XDP_PGOFF_TX_RING as u64, "mapping an AF_XDP ring")?,
            &off.tx,
            c.ring_size,
        );
        // A socket that shares a UMEM takes the owner's copy mode and
        // wake-up flag; it may not set its own.
        let (flags, shared_fd) = match memory {
            Memory::Shared(s) => (libc::XDP_SHARED_UMEM, s.fd.as_raw_fd() as u32),
            _ => (copy_flag | if c.need_wakeup { libc::XDP_USE_NEED_WAKEUP } else { 0 }, 0),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // Several buffers a packet (XDP_USE_SG), so that a frame longer than
        // a UMEM frame (jumbo) comes in a chain of them instead of being
        // dropped; where the kernel or the zero-copy driver has no such
        // binding (before 6.6: EINVAL; EOPNOTSUPP), one buffer a packet.
        // A socket sharing a UMEM inherits its owner's and may not ask.
        let (mut multi_buffer, sg) = match memory {
            Memory::Shared(s) => (s.multi_buffer, 0),
            _ => (true, libc::XDP_USE_SG),
        };
        let mut bound = bind_retrying(&fd, libc::sockaddr_xdp { sxdp_flags: flags | sg, ..sa });
        if sg != 0 && matches!(&bound, Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))) {
            multi_buffer = false;
            bound = bind_retrying(&fd, sa);
        }
        if let Err(e) = bound {
            let mode = if copy_flag == libc::XDP_ZEROCOPY { "zero-copy" } else { "copy" };
            return Err(io::Error::new(
                e.kind(),
                format!("binding AF_XDP ({mode}) to interface {ifindex} queue {queue}: {e}"),
            ));
        }
        // SAFETY: `xdp_options` is integers only, and is what this option writes.
        let opts: io::Result<libc::xdp_options> =
            unsafe { getsockopt(&fd, libc::XDP_OPTIONS, "reading socket options") };
        let mut s = XskSocket {
            zerocopy: opts.is_ok_and(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0),
            fd,
            umem,
            frame_size: c.frame_size,
            fill,
            comp,
            rx,
            tx,
            free: match memory {
                Memory::New => (0..c.frames as u64).rev().map(|i| i * u64::from(c.frame_size)).collect(),
                _ => Vec::with_capacity(c.frames as usize),
            },
            need_wakeup: c.need_wakeup,
            multi_buffer,
        };
        // Some frames wait in the fill ring for packets; the rest stay in the
        // stash for transmitting and for other ports sharing the UMEM.
        s.refill((c.frames / 2).min(c.ring_size).min(FILL_TARGET));
        Ok(s)
    }

    /// The socket's descriptor, for the XSKMAP.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// True if a packet may come, and may be sent, in several frames
    /// (`RxDesc::more`, `transmit_chain`).
    pub fn is_multi_buffer(&self) -> bool {
        self.multi_buffer
    }

    /// True if the driver gave us zero-copy.
    pub fn is_zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Frames in the UMEM the socket is bound to.
    pub fn umem_frames(&self) -> u32 {
        (self.umem.len() / self.frame_size as usize) as u32
    }

    /// Frames in the stash.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Frames waiting in the fill ring for the kernel to receive into.
    pub fn fill_level(&self) -> u32 {
        self.fill.size - self.fill.free()
    }

    /// Tops the fill ring up to `target` frames from the stash. Keeping it
    /// near a target, not full, leaves the frames of a shared UMEM where
    /// traffic is, instead of parked in idle ports' fill rings.
    pub fn refill_to(&mut self, target: u32) -> u32 {
        let want = target.saturating_sub(self.fill_level());
        self.refill(want)
    }

    /// Moves up to `max` stashed frames into the fill ring, as many as fit.
    pub fn refill(&mut self, max: u32) -> u32 {
        let n = self.fill.free().min(max).min(self.free.len() as u32);
        let prod = self.fill.producer().load(Ordering::Relaxed);
        for i in 0..n {
            let addr = self.free.pop().unwrap_or(0);
            self.fill.write_u64(prod.wrapping_add(i), addr);
        }
        self.fill.producer().store(prod.wrapping_add(n), Ordering::Release);
        n
    }

    /// Takes up to `out.len()` received frames. They are ours until
    /// `release` or `transmit` gives them back.
    pub fn receive(&mut self, out: &mut [RxDesc]) -> usize {
        let n = self.rx.ready().min(out.len() as u32);
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        for (i, slot) in out.iter_mut().enumerate().take(n as usize) {
            let d = self.rx.read_desc(cons.wrapping_add(i as u32));
            *slot = RxDesc { addr: d.addr, len: d.len, more: d.options & libc::XDP_PKT_CONTD != 0 };
        }
        self.rx.consumer().store(cons.wrapping_add(n), Ordering::Release);
        n as usize
    }

    /// Waits up to `timeout_ms` for something to receive.
    pub fn poll_rx(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            return Err(os_error("poll"));
        }
        Ok(r > 0)
    }

    /// Gives a frame back to the stash.
    pub fn release(&mut self, addr: u64) {
        self.free.push(addr - addr % u64::from(self.frame_size));
    }

    /// Takes a free frame to build a packet in.
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// The whole frame that holds `addr`, and the offset of `addr` in it:
    /// the space in front of the offset is headroom for prepending headers.
    /// The frame must be ours (received or allocated, not yet given back).
    pub fn frame_mut(&mut self, addr: u64) -> Option<(&mut [u8], usize)> {
        let fs = u64::from(self.frame_size);
        let base = addr - addr % fs;
        if base + fs > self.umem.len() as u64 {
            return None;
        }
        // SAFETY: inside the UMEM mapping (checked above); the frame is ours
        // by the ownership rule in this module's header, so the kernel does
        // not touch it while the slice lives, and `&mut self` keeps a second
        // slice from existing.
        let s = unsafe { std::slice::from_raw_parts_mut(self.umem.as_ptr().add(base as usize), fs as usize) };
        Some((s, (addr - base) as usize))
    }

    /// The frame that holds `addr` as a buffer the pipeline can rewrite in
    /// place, and the offset of `addr` in it.
    ///
    /// # Safety
    /// The frame must be ours (received or allocated, not given back), no
    /// other `UmemFrame` for it may exist, and the returned buffer must be
    /// dropped before this socket is.
    pub(crate) unsafe fn umem_frame(&self, addr: u64) -> Option<(UmemFrame, usize)> {
        let fs = u64::from(self.frame_size);
        let base = addr - addr % fs;
        if base + fs > self.umem.len() as u64 {
            return None;
        }
        // SAFETY: `base` is inside the mapping (checked above).
        let ptr = unsafe { NonNull::new_unchecked(self.umem.as_ptr().add(base as usize)) };
        Some((UmemFrame { ptr, len: fs as usize }, (addr - base) as usize))
    }

    /// The UMEM address of a byte in a frame from `umem_frame`.
    pub(crate) fn addr_of(&self, frame: &UmemFrame, offset: usize) -> u64 {
        frame.ptr.as_ptr() as u64 - self.umem.as_ptr() as u64 + offset as u64
    }

    /// Queues the frame at `addr`, `len` bytes, for transmission. False when
    /// the tx ring is full (the frame is still ours).
    pub fn transmit(&mut self, addr: u64, len: u32) -> bool {
        if self.tx.free() == 0 {
            return false;
        }
        let prod = self.tx.producer().load(Ordering::Relaxed);
        self.tx.write_desc(prod, libc::xdp_desc { addr, len, options: 0 });
        self.tx.producer().store(prod.wrapping_add(1), Ordering::Release);
        true
    }

    /// Queues one packet in several frames (`(address, length)` each, in
    /// order), all or none: false, with nothing queued, when the tx ring
    /// has not room for all, or the socket takes one frame a packet.
    pub fn transmit_chain(&mut self, frames: &[(u64, u32)]) -> bool {
        if frames.len() > 1 && !self.multi_buffer || (self.tx.free() as usize) < frames.len() {
            return false;
        }
        let prod = self.tx.producer().load(Ordering::Relaxed);
        for (i, &(addr, len)) in frames.iter().enumerate() {
            let options = if i + 1 < frames.len() { libc::XDP_PKT_CONTD } else { 0 };
            self.tx.write_desc(prod.wrapping_add(i as u32), libc::xdp_desc { addr, len, options });
        }
        self.tx.producer().store(prod.wrapping_add(frames.len() as u32), Ordering::Release);
        true
    }

    /// The bytes a frame holds for sending: all of it, no headroom.
    pub fn frame_size(&self) -> usize {
        self.frame_size as usize
    }

    /// Frames queued for transmission and not yet taken by the kernel.
    pub fn tx_pending(&self) -> u32 {
        self.tx.size - self.tx.free()
    }

    /// Tells the kernel to send what is queued. In copy mode it sends a
    /// bounded number of frames per call, so callers keep kicking while
    /// `tx_pending` is not zero.
    pub fn kick_tx(&self) -> io::Result<()> {
        if self.need_wakeup && !self.tx.needs_wakeup() && self.zerocopy {
            return Ok(());
        }
        // SAFETY: a zero-length sendto on our own socket, no buffers.
        let r =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // Busy or out of buffers: the frames stay queued; kick again.
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)) {
                return Ok(());
            }
            // As the kernel said it, so that callers can tell a link that
            // is down (ENETDOWN) from a socket its interface left (ENXIO).
            return Err(e);
        }
        Ok(())
    }

    /// Takes back the frames queued for sending that the kernel has not
    /// taken, and answers how many, and their bytes: for a link that is
    /// down, whose queue would otherwise hold them until it comes up. Copy
    /// mode only, where the kernel reads the tx ring in our own `kick_tx`
    /// alone; a zero-copy driver may be reading it now, so there they stay.
    pub fn cancel_tx(&mut self) -> (u32, u64) {
        if self.zerocopy {
            return (0, 0);
        }
        let mut taken = std::mem::take(&mut self.free);
        let cancelled = self.take_back_tx(&mut taken);
        self.free = taken;
        cancelled
    }

    /// Moves what waits in the tx ring untaken into `into` (frame
    /// addresses), and empties the ring: how many frames, of how many bytes.
    fn take_back_tx(&mut self, into: &mut Vec<u64>) -> (u32, u64) {
        let fs = u64::from(self.frame_size);
        let cons = self.tx.consumer().load(Ordering::Acquire);
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let n = prod.wrapping_sub(cons);
        let (mut packets, mut bytes) = (0, 0);
        for i in 0..n {
            let d = self.tx.read_desc(cons.wrapping_add(i));
            into.push(d.addr - d.addr % fs);
            bytes += u64::from(d.len);
            // A packet in several frames counts once, at its last.
            packets += u32::from(d.options & libc::XDP_PKT_CONTD == 0);
        }
        self.tx.producer().store(cons, Ordering::Release);
        (packets, bytes)
    }

    /// Hands every frame this socket holds to `into`, to go on serving
    /// the UMEM's other sockets once this one closes: its stash, what it
    /// received and has not taken, what the kernel finished sending, and
    /// what waits in its fill and tx rings untaken. Without it a closed
    /// port took its share of the UMEM (a thousand frames and more) along,
    /// and a node whose pods came and went ran out of frames to receive
    /// into. Frames a zero-copy driver had already taken from the rings
    /// are lost with the socket.
    ///
    /// Only once nothing can put a packet into the socket any more: its
    /// XDP program detached (nothing redirects to it) or its interface
    /// gone (the kernel unbound it). Then the kernel reads the fill ring
    /// no further, and the socket is dropped right after.
    ///
    /// Returns how many frames it handed over, and of them how many (and
    /// their bytes) were waiting to be sent: frames that will never leave,
    /// for the vif's `tx_dropped`.
    pub fn surrender(&mut self, into: &mut Vec<u64>) -> (usize, (u32, u64)) {
        let before = into.len();
        self.complete();
        let fs = u64::from(self.frame_size);
        let rx_cons = self.rx.consumer().load(Ordering::Relaxed);
        for i in 0..self.rx.ready() {
            let addr = self.rx.read_desc(rx_cons.wrapping_add(i)).addr;
            into.push(addr - addr % fs);
        }
        let fill_cons = self.fill.consumer().load(Ordering::Acquire);
        let fill_prod = self.fill.producer().load(Ordering::Relaxed);
        for i in 0..fill_prod.wrapping_sub(fill_cons) {
            let addr = self.fill.read_u64(fill_cons.wrapping_add(i));
            into.push(addr - addr % fs);
        }
        let unsent = self.take_back_tx(into);
        into.append(&mut self.free);
        // Nothing is left for the kernel to take, should it still look.
        self.rx.consumer().store(self.rx.producer().load(Ordering::Acquire), Ordering::Release);
        self.fill.producer().store(fill_cons, Ordering::Release);
        (into.len() - before, unsent)
    }

    /// Takes `frames` (of this socket's UMEM, owned by the caller) into
    /// the stash.
    pub fn adopt(&mut self, frames: &mut Vec<u64>) {
        self.free.append(frames);
    }

    /// Which UMEM the socket's frames are in: sockets that answer the
    /// same move frames between them by address.
    pub fn umem_id(&self) -> usize {
        self.umem.as_ptr() as usize
    }

    /// Takes back frames the kernel finished sending. Returns how many.
    pub fn complete(&mut self) -> u32 {
        let n = self.comp.ready();
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        for i in 0..n {
            let addr = self.comp.read_u64(cons.wrapping_add(i));
            self.free.push(addr - addr % u64::from(self.frame_size));
        }
        self.comp.consumer().store(cons.wrapping_add(n), Ordering::Release);
        n
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<SocketCounters> {
        socket_counters(&self.fd)
    }
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket").field("fd", &self.fd).field("zerocopy", &self.zerocopy).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_sharing_a_umem_keep_half_of_it_in_fill_rings_at_most() {
        let share = |frames, ports| FrameShare::of(frames, ports);
        // Few ports: each a full ring, and a cushion as large.
        assert_eq!(share(16384, 3), FrameShare { fill: 512, cushion: 512 });
        // A node's 110 pods and its fabric on one worker: 73 each, 8103 in
        // all, where 512 each would want 56,832 of the 16,384.
        let pods = share(16384, 111);
        assert_eq!((pods.fill, pods.cushion), (73, 36));
        assert!(pods.fill as usize * 111 <= 16384 / 2 && !pods.is_thin());
        // Past 256 ports the floor holds, more than half the UMEM: thin.
        assert_eq!(share(16384, 300).fill, FILL_FLOOR);
        assert!(share(16384, 300).is_thin() && share(16384, 130).is_thin());
        // No ports counted is one.
        assert_eq!(share(4096, 0), share(4096, 1));
    }
}
