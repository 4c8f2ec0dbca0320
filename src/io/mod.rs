//! The I/O shell's lowest layer: AF_XDP sockets and the XDP program that
//! steers packets to them, written directly on `libc` (the `afxdp` crate
//! loses transmitted packets and cannot choose its XDP mode; see
//! `shared/reference/afxdp-on-this-machine.md`).
//!
//! This is, with `crate::memory` (the mappings themselves), where the
//! crate's `unsafe` lives (memory shared with the kernel: the UMEM and the
//! rings); every block says why it is sound. Workers, the fabric's filtering program and the daemon build on
//! it in the daemon's issue.
#![allow(unsafe_code)]

pub mod bpf;
pub mod jumbo;
pub mod netlink;
pub mod worker;
pub mod xsk;

use std::io;

/// The errno of the last failed call, with context.
pub(crate) fn os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The index of the network interface `name` in this network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(os_error(&format!("interface {name}")));
    }
    Ok(i)
}

/// Moves the calling thread into the network namespace `name` (as made by
/// `ip netns add`). Sockets, interfaces and XDP attachments made by this
/// thread afterwards belong to that namespace.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: `f` is an open namespace file; setns only changes which
    // network namespace this thread uses from now on.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(os_error(&format!("entering network namespace {name}")));
    }
    Ok(())
}

/// All cores' busy time so far (user, nice, system, irq and softirq, as
/// /proc/stat counts it), in seconds: the difference over an interval,
/// divided by its length, is how many cores were busy.
pub fn busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| io::Error::other("no cpu line"))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let ticks: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf only reads a system setting.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / hz as f64)
}

/// The CPU's time-stamp counter: the cheapest clock there is (about 25 ns
/// to read on a virtual machine, against 80 for `Instant::now`), for timing
/// the data path's stages.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; it touches no memory. Every
    // x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Time-stamp counter ticks per second, measured against the system clock
/// over `over` (the counter runs at a constant rate on the CPUs vrouterd
/// runs on: `constant_tsc` in /proc/cpuinfo).
pub fn tsc_hz(over: std::time::Duration) -> u64 {
    let (t0, c0) = (std::time::Instant::now(), tsc());
    std::thread::sleep(over);
    let (t1, c1) = (std::time::Instant::now(), tsc());
    ((c1 - c0) as f64 / (t1 - t0).as_secs_f64()) as u64
}

/// Cores a CPU set can name (`CPU_SETSIZE`).
pub const MAX_CORES: usize = libc::CPU_SETSIZE as usize;

/// Pins the calling thread to one CPU core.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // `CPU_SET` asserts on a core past the set, and the worker aborts.
    if core >= MAX_CORES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("core {core} is past the {MAX_CORES} a CPU set holds"),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        return Err(os_error(&format!("pinning to core {core}")));
    }
    Ok(())
}

/// The cores this process may run on (its CPU affinity, which systemd's
/// `CPUAffinity=` or a container's cpuset narrows), in order.
pub fn allowed_cores() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity writes
    // at most the size given, and CPU_ISSET reads inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(os_error("reading the CPU affinity"));
        }
        Ok((0..MAX_CORES).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// The number of active receive queues of interface `name`, from sysfs
/// (1 when sysfs does not say). Packets can land on any of them, so each
/// needs its own socket.
pub fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count() as u32)
        .unwrap_or(1)
        .max(1)
}
