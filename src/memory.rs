//! Mapped memory: the one owner of `mmap`ed ranges (the AF_XDP UMEM and
//! rings, large tables), and large tables' memory, zeroed and backed by
//! huge pages where the kernel allows it.
//!
//! The flow table is hundreds of megabytes read at random. With 4 KiB pages
//! nearly every access also misses the TLB, and in a virtual machine a TLB
//! miss walks two sets of page tables: `cargo bench --bench flow` sets up
//! flows about 15 % faster on 2 MiB pages. The kernel's usual setting
//! (`transparent_hugepage=madvise`) gives them only to memory that asks,
//! before its pages are first touched. So the memory is mapped here,
//! zeroed and untouched, and advised before anyone writes to it. (The
//! allocator cannot do this: for alignments above 16 bytes it clears
//! memory with `memset`, which touches every page first.)
//!
//! A frame's window of valid bytes (`window`) lives here too: it is read
//! unchecked, once checked where it moves.
//!
//! This is one of the two places with `unsafe` (the other is `io`).
#![allow(unsafe_code)]

mod window;
pub use window::{Buffer, Window};

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for types made of integers and atomics (no
/// references, no enums without a zero variant, no `NonZero`).
pub(crate) unsafe trait Zeroable: Sized {}

/// `n` copies of `v`, or the allocator's refusal: for tables sized by
/// configured limits, which the operator should be told to lower rather
/// than have the process abort.
pub fn try_filled<T: Clone>(n: usize, v: T) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)?;
    out.resize(n, v);
    Ok(out)
}

/// An empty vector with room for `n`, or the allocator's refusal.
pub fn try_with_capacity<T>(n: usize) -> Result<Vec<T>, std::collections::TryReserveError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)?;
    Ok(out)
}

const HUGE_PAGE: usize = 2 << 20;

/// Starts fetching the cache line of `r` into every cache level, without
/// waiting for it: a hint that lets a batch's memory misses overlap. (A
/// plain load would make the CPU wait for it before retiring what follows,
/// and a batch's loads would stall one after another.)
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    prefetch_addr((r as *const T).cast::<u8>());
}

/// `prefetch` for the line `offset` bytes into item `i` of `items`, with
/// no bounds check: a hint needs none. An index out of bounds (which a
/// caller's own lookup would refuse) makes it fetch an address no one
/// reads, which is harmless (`prefetch_addr`). A flow cache's hit made
/// three such fetches behind checks, 10 of its instructions (callgrind).
#[inline(always)]
pub(crate) fn prefetch_item<T>(items: &[T], i: usize, offset: usize) {
    prefetch_addr(items.as_ptr().wrapping_add(i).cast::<u8>().wrapping_add(offset));
}

/// `prefetch` for an address that need not be a value's, such as the
/// reference counts just before an `Arc`'s value.
#[inline(always)]
pub(crate) fn prefetch_addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it never faults, not even on a bad
    // address, and changes no state a program can observe.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Memory mapped with `mmap`, unmapped when dropped: the flow table's, the
/// AF_XDP UMEM and the rings the kernel shares with us.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is an address range; who may touch which bytes is
// governed by its owner (the typed slice below, the UMEM's frame ownership
// rule), not by which thread holds the handle.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes of fresh, zero-filled private memory. With `populate`,
    /// every page is faulted in now; without it, no page is touched yet.
    pub(crate) fn anonymous(len: usize, populate: bool, what: &str) -> io::Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh private anonymous mapping: no file, no fixed
        // address, so it aliases nothing.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        Self::checked(p, len, what)
    }

    /// `len` bytes of what `fd` shares at `offset` (an AF_XDP ring), faulted in now.
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: usize, offset: u64, what: &str) -> io::Result<Mapping> {
        // SAFETY: mapping what the kernel created on this descriptor, at the
        // offset and length it told the caller; the kernel keeps it alive
        // while mapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        Self::checked(p, len, what)
    }

    fn checked(p: *mut libc::c_void, len: usize, what: &str) -> io::Result<Mapping> {
        let failed = || {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("{what} ({len} bytes): {e}"))
        };
        if p == libc::MAP_FAILED {
            return Err(failed());
        }
        NonNull::new(p.cast::<u8>()).map(|ptr| Mapping { ptr, len }).ok_or_else(failed)
    }

    /// The first byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Asks for huge pages over the whole 2 MiB pages of the mapping.
    /// Advice only: where the kernel says no (THP disabled), the memory
    /// works the same on small pages.
    fn advise_huge_pages(&self) {
        let addr = self.ptr.as_ptr() as usize;
        let start = addr.next_multiple_of(HUGE_PAGE);
        let end = (addr + self.len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: the range lies inside this mapping, and MADV_HUGEPAGE
            // changes no content, only how pages are backed.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `mmap` returned; nothing borrows it
        // past the owner's lifetime.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `len` zeroed values of `T` in a mapping of their own, advised to the
/// kernel as huge-page memory. Shared through `&`: `T` is made of atomics.
pub(crate) struct ZeroedSlice<T: Zeroable> {
    map: Mapping,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Zeroable> ZeroedSlice<T> {
    /// Maps `len` zeroed values, or says why the memory cannot be had: for
    /// a table sized by configuration, whose owner tells the operator.
    pub(crate) fn try_new(len: usize) -> io::Result<Self> {
        assert!(std::mem::align_of::<T>() <= 4096, "pages align to 4 KiB");
        let too_big = || io::Error::new(io::ErrorKind::OutOfMemory, format!("{len} values: past the address space"));
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(too_big)?.max(1);
        // Not populated: the advice must come before the first touch.
        let map = Mapping::anonymous(bytes, false, "mapping a table")?;
        map.advise_huge_pages();
        Ok(ZeroedSlice { map, len, _values: PhantomData })
    }
}

impl<T: Zeroable> Deref for ZeroedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds at least `len` values of `T`,
        // page-aligned (so aligned for `T`), zero-filled (a valid `T` by
        // `Zeroable`), alive as long as `self`, and never handed out mutably.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<T>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    struct Cell(AtomicU64);
    // SAFETY: an atomic integer; zero is a valid value.
    unsafe impl Zeroable for Cell {}

    #[test]
    fn slices_are_zeroed_and_usable_at_every_size() {
        for n in [0, 1, 1000, (HUGE_PAGE / 8) * 3 + 5] {
            let s = ZeroedSlice::<Cell>::try_new(n).unwrap();
            assert_eq!(s.len(), n);
            assert!(s.iter().all(|c| c.0.load(Relaxed) == 0));
            if let Some(last) = s.last() {
                last.0.store(7, Relaxed);
                assert_eq!(last.0.load(Relaxed), 7);
            }
        }
    }
}
