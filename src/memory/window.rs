//! A window of valid bytes in a buffer that keeps room in front of them:
//! a frame's bytes, read without a bounds check.
//!
//! A frame's bytes are read a dozen times a packet, each time as
//! `&buf[head..head + len]`: two compares and a branch that never fails,
//! because every way the window moves is checked when it moves. Those
//! checks were 26 of the 470 instructions of a flow cache's hit
//! (callgrind, `encap_mplsoudp_ecmp` under policy). Here the window is
//! checked where it moves, and read unchecked: sound only if the buffer
//! under it keeps its length, which `Buffer` promises.

use std::ops::Range;

/// A byte buffer whose length does not change while it is owned.
///
/// # Safety
/// `as_ref` and `as_mut`, called any number of times on a value that no
/// one else can reach, must return slices of one and the same length. A
/// `Window` owns its buffer, calls nothing else on it, and reads inside
/// the length it saw when its window was last checked, unchecked.
pub unsafe trait Buffer: AsRef<[u8]> + AsMut<[u8]> {}

// SAFETY: a vector's length changes only through its `&mut` methods
// other than `as_mut`, and no window calls them.
unsafe impl Buffer for Vec<u8> {}
// SAFETY: a boxed slice's length is fixed.
unsafe impl Buffer for Box<[u8]> {}
// SAFETY: an array's length is its type's.
unsafe impl<const N: usize> Buffer for [u8; N] {}
// SAFETY: a slice's length is fixed for the borrow's life.
unsafe impl Buffer for &mut [u8] {}

/// `len` valid bytes at offset `head` of `buf`. Always
/// `head + len <= buf.as_ref().len()`: every constructor and every
/// method that moves the window keeps it so.
#[derive(Debug)]
pub struct Window<B> {
    buf: B,
    head: usize,
    len: usize,
}

impl<B: Buffer> Window<B> {
    /// `len` bytes at offset `head` of `buf`; `None` where they do not fit.
    #[inline]
    pub fn new(buf: B, head: usize, len: usize) -> Option<Window<B>> {
        let mut w = Window { buf, head: 0, len: 0 };
        w.reset(head, len).then_some(w)
    }

    /// The window's bytes.
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        let buf = self.buf.as_ref();
        let at = self.range();
        debug_assert!(at.end <= buf.len());
        // SAFETY: `range` ends within the buffer (the struct's invariant),
        // whose length `Buffer` keeps.
        unsafe { buf.get_unchecked(at) }
    }

    /// The window's bytes, writable.
    #[inline(always)]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let at = self.range();
        let buf = self.buf.as_mut();
        debug_assert!(at.end <= buf.len());
        // SAFETY: as `bytes`.
        unsafe { buf.get_unchecked_mut(at) }
    }

    #[inline(always)]
    fn range(&self) -> Range<usize> {
        // No overflow: the sum is at most the buffer's length.
        self.head..self.head + self.len
    }

    /// The number of valid bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty window.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The room in front of the bytes.
    #[inline(always)]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Takes `n` bytes of the room in front into the window. False, and
    /// nothing moved, if the room is shorter.
    #[inline(always)]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        // The end stays where it was.
        self.head -= n;
        self.len += n;
        true
    }

    /// Gives the window's first `n` bytes back to the room in front.
    /// False, and nothing moved, if the window is shorter.
    #[inline(always)]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        // The end stays where it was.
        self.head += n;
        self.len -= n;
        true
    }

    /// Makes the window `len` bytes long. False, and nothing moved, if
    /// the buffer ends before.
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.buf.as_ref().len() - self.head {
            return false;
        }
        self.len = len;
        true
    }

    /// Moves the window to `len` bytes at `head`; if they do not fit,
    /// makes it empty at the buffer's start and answers false.
    #[inline]
    pub fn reset(&mut self, head: usize, len: usize) -> bool {
        let fits = head.checked_add(len).is_some_and(|end| end <= self.buf.as_ref().len());
        (self.head, self.len) = if fits { (head, len) } else { (0, 0) };
        fits
    }

    /// The buffer.
    pub fn buf(&self) -> &B {
        &self.buf
    }

    /// Gives the buffer back.
    pub fn into_buf(self) -> B {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_window_moves_only_within_its_buffer() {
        assert!(Window::new(vec![0u8; 10], 4, 7).is_none());
        assert!(Window::new(vec![0u8; 10], usize::MAX, 2).is_none());
        let mut w = Window::new(vec![0u8; 10], 4, 6).unwrap();
        assert_eq!(w.bytes().len(), 6);
        assert!(!w.set_len(7));
        assert!(w.set_len(2) && w.bytes().len() == 2);
        assert!(!w.push_front(5));
        assert!(w.push_front(4) && (w.head(), w.len()) == (0, 6));
        assert!(!w.pull_front(7));
        assert!(w.pull_front(6) && (w.head(), w.len()) == (6, 0));
        assert!(w.set_len(4) && !w.set_len(5));
        w.bytes_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&w.buf()[6..], &[1, 2, 3, 4]);
        assert!(!w.reset(8, 3));
        assert_eq!((w.head(), w.len()), (0, 0));
        assert!(w.reset(8, 2) && w.bytes() == [3, 4]);
    }
}
