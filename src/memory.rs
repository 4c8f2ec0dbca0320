//! Large tables' memory: zeroed, and backed by huge pages where the kernel
//! allows it.
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
//! This is one of the two places with `unsafe` (the other is `io`).
#![allow(unsafe_code)]

use std::ops::Deref;

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement it only for types made of integers and atomics (no
/// references, no enums without a zero variant, no `NonZero`).
pub(crate) unsafe trait Zeroable: Sized {}

const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed values of `T` in memory of their own, advised to the kernel
/// as huge-page memory. Shared through `&`: `T` is made of atomics.
pub(crate) struct ZeroedSlice<T: Zeroable> {
    ptr: *mut T,
    len: usize,
    /// Bytes mapped: `len * size_of::<T>()`, at least one.
    mapped: usize,
}

// SAFETY: the slice owns its memory like a `Box<[T]>` does, and hands out
// only `&[T]`: it may move and be shared between threads when `T` may.
unsafe impl<T: Zeroable + Send> Send for ZeroedSlice<T> {}
// SAFETY: as above.
unsafe impl<T: Zeroable + Sync> Sync for ZeroedSlice<T> {}

impl<T: Zeroable> ZeroedSlice<T> {
    /// Maps `len` zeroed values. Panics, like an allocation, if the memory
    /// cannot be had.
    pub(crate) fn new(len: usize) -> Self {
        assert!(std::mem::align_of::<T>() <= 4096, "pages align to 4 KiB");
        let mapped = len.checked_mul(std::mem::size_of::<T>()).expect("table size fits the address space").max(1);
        // SAFETY: a fresh private anonymous mapping: no file, no fixed
        // address, so it aliases nothing. The kernel gives it zero-filled.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "cannot map {mapped} bytes: {}", std::io::Error::last_os_error());
        advise_huge_pages(ptr as usize, mapped);
        ZeroedSlice { ptr: ptr.cast(), len, mapped }
    }
}

impl<T: Zeroable> Deref for ZeroedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` maps at least `len` values of `T`, page-aligned (so
        // aligned for `T`), zero-filled (a valid `T` by `Zeroable`), alive
        // until `drop`, and never handed out mutably.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Zeroable> Drop for ZeroedSlice<T> {
    fn drop(&mut self) {
        // Atomics and integers need no drop of their own.
        // SAFETY: unmaps exactly the mapping made in `new`, once; no
        // reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.mapped) };
    }
}

/// Asks for huge pages over the whole 2 MiB pages inside `[addr, addr + len)`.
/// Advice only: where the kernel says no (THP disabled), the memory works
/// the same on small pages.
fn advise_huge_pages(addr: usize, len: usize) {
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: the range lies inside a mapping of ours, and
        // MADV_HUGEPAGE changes no content, only how pages are backed.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
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
            let s = ZeroedSlice::<Cell>::new(n);
            assert_eq!(s.len(), n);
            assert!(s.iter().all(|c| c.0.load(Relaxed) == 0));
            if let Some(last) = s.last() {
                last.0.store(7, Relaxed);
                assert_eq!(last.0.load(Relaxed), 7);
            }
        }
    }
}
