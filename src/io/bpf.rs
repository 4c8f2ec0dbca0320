//! The XDP side: an XSKMAP, the redirect program, and its attachment to an
//! interface through a bpf_link, which the kernel detaches by itself when
//! the link's last file descriptor closes, even if the process dies.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_F_XDP_HAS_FRAGS` ("xdp.frags"): the program takes packets in
/// several buffers. Without it, the kernel refuses to attach to a veth
/// whose peer's MTU does not fit a page (ERANGE: a pod at MTU 9000), and a
/// driver delivers no jumbo frame to it.
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native if the driver has it, else generic: the kernel decides.
    Auto,
    /// In the driver.
    Native,
    /// In the generic (skb) path: works on every interface.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, writable buffer of the length passed, laid
    // out as the kernel's `union bpf_attr` for `cmd`, with unused bytes zero.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as RawFd)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Takes ownership of a descriptor a syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An XSKMAP: receive queue index -> AF_XDP socket.
pub struct XskMap {
    fd: OwnedFd,
}

impl XskMap {
    /// A map for queues `0..entries`.
    pub fn new(entries: u32) -> io::Result<XskMap> {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_XSKMAP);
        put_u32(&mut attr, 4, 4); // key: queue index
        put_u32(&mut attr, 8, 4); // value: socket fd
        put_u32(&mut attr, 12, entries);
        let fd = bpf(BPF_MAP_CREATE, &mut attr)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the XSKMAP: {e}")))?;
        Ok(XskMap { fd: owned(fd) })
    }

    /// Steers queue `queue` to the AF_XDP socket `socket`.
    pub fn set(&self, queue: u32, socket: RawFd) -> io::Result<()> {
        let (key, value) = (queue, socket as u32);
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        put_u64(&mut attr, 16, &value as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("XSKMAP[{queue}]: {e}")))
    }

    /// Stops steering queue `queue`.
    pub fn clear(&self, queue: u32) -> io::Result<()> {
        let key = queue;
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, &key as *const u32 as u64);
        bpf(BPF_MAP_DELETE_ELEM, &mut attr)
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("XSKMAP[{queue}]: {e}")))
    }
}

/// A loaded XDP program.
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// The pod-port program: every packet goes to the socket of its
    /// receive queue, or to the kernel when that queue has none. In C:
    /// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
    pub fn redirect_all(map: &XskMap) -> io::Result<Program> {
        let fd = map.fd.as_raw_fd();
        let code = [
            insn(0x61, 2, 1, 16, 0),                 // r2 = *(u32 *)(r1 + 16): rx_queue_index
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, fd), // r1 = &xsks (64-bit immediate, two slots)
            insn(0x00, 0, 0, 0, 0),
            insn(0xb7, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS: the action when the slot is empty
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
            insn(0x95, 0, 0, 0, 0), // return r0
        ];
        Program::load(&code, "vrouter_xsk")
    }

    /// The fabric-port program: only tunnel packets addressed to this node
    /// (`node`, the underlay IPv4 address) go to the socket: MPLS over GRE,
    /// and MPLS over UDP to port 6635 or 51234. Everything else, the node's
    /// own SSH, ARP and control traffic included, passes to the kernel.
    pub fn redirect_tunnels(map: &XskMap, node: std::net::Ipv4Addr) -> io::Result<Program> {
        const PASS: usize = 25;
        const REDIRECT: usize = 19;
        // A jump's offset counts from the next instruction.
        let to = |from: usize, target: usize| (target - from - 1) as i16;
        // Loads from packets are in host order: compare against the wire
        // bytes read as little-endian numbers.
        let le16 = |v: u16| i32::from(u16::from_le_bytes(v.to_be_bytes()));
        let node = i32::from_le_bytes(node.octets());
        let fd = map.fd.as_raw_fd();
        let code = [
            insn(0xbf, 6, 1, 0, 0),                          // 0: r6 = ctx
            insn(0x61, 2, 6, 0, 0),                          // 1: r2 = ctx->data
            insn(0x61, 3, 6, 4, 0),                          // 2: r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                          // 3: r4 = r2
            insn(0x07, 4, 0, 0, 38),                         // 4: r4 += 38: Ethernet, IPv4, UDP ports
            insn(0x2d, 4, 3, to(5, PASS), 0),                // 5: if r4 > data_end: pass
            insn(0x69, 5, 2, 12, 0),                         // 6: r5 = ethertype
            insn(0x55, 5, 0, to(7, PASS), le16(0x0800)),     // 7: not IPv4: pass
            insn(0x71, 5, 2, 14, 0),                         // 8: r5 = version and header length
            insn(0x55, 5, 0, to(9, PASS), 0x45),             // 9: options (never ours): pass
            insn(0x61, 5, 2, 30, 0),                         // 10: r5 = destination address
            insn(0x56, 5, 0, to(11, PASS), node),            // 11: (32-bit) not for this node: pass
            insn(0x71, 5, 2, 23, 0),                         // 12: r5 = protocol
            insn(0x15, 5, 0, to(13, REDIRECT), 47),          // 13: GRE: ours
            insn(0x55, 5, 0, to(14, PASS), 17),              // 14: not UDP: pass
            insn(0x69, 5, 2, 36, 0),                         // 15: r5 = UDP destination port
            insn(0x15, 5, 0, to(16, REDIRECT), le16(6635)),  // 16: MPLS over UDP: ours
            insn(0x15, 5, 0, to(17, REDIRECT), le16(51234)), // 17: Tungsten Fabric's legacy port: ours
            insn(0x05, 0, 0, to(18, PASS), 0),               // 18: anything else: pass
            insn(0x61, 2, 6, 16, 0),                         // 19: r2 = rx_queue_index
            insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, fd),         // 20: r1 = &xsks
            insn(0x00, 0, 0, 0, 0),                          // 21
            insn(0xb7, 3, 0, 0, XDP_PASS),                   // 22: no socket on this queue: pass
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),      // 23
            insn(0x95, 0, 0, 0, 0),                          // 24: return
            insn(0xb7, 0, 0, 0, XDP_PASS),                   // 25: r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),                          // 26: return
        ];
        Program::load(&code, "vrouter_fabric")
    }

    /// Loads `code` as a multi-buffer program, or, where the kernel has no
    /// such programs (before 5.18: EINVAL), as a plain one.
    fn load(code: &[Insn], name: &str) -> io::Result<Program> {
        match Program::load_with(code, name, BPF_F_XDP_HAS_FRAGS) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Program::load_with(code, name, 0),
            loaded => loaded,
        }
    }

    fn load_with(code: &[Insn], name: &str, prog_flags: u32) -> io::Result<Program> {
        let license = b"GPL\0";
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, code.len() as u32);
        put_u64(&mut attr, 8, code.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        put_u32(&mut attr, 24, 1); // log level
        put_u32(&mut attr, 28, log.len() as u32);
        put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        put_u32(&mut attr, 44, prog_flags);
        let n = name.as_bytes();
        attr[48..48 + n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
        put_u32(&mut attr, 68, BPF_XDP); // expected attach type
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Ok(Program { fd: owned(fd) }),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(e.kind(), format!("loading the XDP program: {e}; verifier says: {}", text.trim())))
            }
        }
    }
}

/// An XDP program attached to an interface. Dropping it detaches it.
pub struct Attachment {
    _link: OwnedFd,
    /// The interface.
    pub ifindex: u32,
    /// The mode asked for.
    pub mode: XdpMode,
}

impl Attachment {
    /// Attaches `prog` to interface `ifindex` in `mode` through a bpf_link.
    pub fn new(prog: &Program, ifindex: u32, mode: XdpMode) -> io::Result<Attachment> {
        let mut attr = [0u8; 64];
        put_u32(&mut attr, 0, prog.fd.as_raw_fd() as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_XDP);
        put_u32(&mut attr, 12, mode.flags());
        let fd = bpf(BPF_LINK_CREATE, &mut attr).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EEXIST) {
                " (another XDP program is attached, perhaps through netlink: `ip link set dev IF xdp off`)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("attaching XDP ({mode:?}) to interface {ifindex}: {e}{hint}"))
        })?;
        Ok(Attachment { _link: owned(fd), ifindex, mode })
    }
}
