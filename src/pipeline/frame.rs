//! Frames: a buffer with headroom, a window of valid bytes, and a verdict.

use super::Verdict;
use crate::memory::{Buffer, Window};
use crate::stats::DropReason;
use crate::tables::VifIndex;

/// A received frame in a buffer that keeps headroom in front of the data,
/// so that headers can be prepended in place.
#[derive(Debug)]
pub struct Frame<B> {
    window: Window<B>,
    /// The vif the frame arrived on.
    pub vif: VifIndex,
    /// Set by the pipeline.
    pub verdict: Verdict,
}

impl<B: Buffer> Frame<B> {
    /// A frame whose data is `len` bytes at offset `head` of `buf`. `None`
    /// when that window does not fit in the buffer.
    pub fn new(buf: B, head: usize, len: usize, vif: VifIndex) -> Option<Self> {
        Some(Frame { window: Window::new(buf, head, len)?, vif, verdict: Verdict::Drop(DropReason::Discard) })
    }

    /// The frame's bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        self.window.bytes()
    }

    /// The frame's bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.window.bytes_mut()
    }

    /// Length of the frame.
    #[inline]
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// True for a zero-length frame.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Offset of the data in the buffer: the room left for headers.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.window.head()
    }

    /// Grows the frame by `n` bytes at the front. False if the headroom is short.
    #[inline]
    pub(crate) fn push_front(&mut self, n: usize) -> bool {
        self.window.push_front(n)
    }

    /// Drops `n` bytes from the front. False if the frame is shorter.
    #[inline]
    pub(crate) fn pull_front(&mut self, n: usize) -> bool {
        self.window.pull_front(n)
    }

    /// Sets the length. False if the buffer has no room for it.
    #[inline]
    pub(crate) fn set_len(&mut self, len: usize) -> bool {
        self.window.set_len(len)
    }

    /// Reuses the buffer for a new frame of `len` bytes at `head`. A window
    /// that does not fit leaves an empty frame.
    pub fn reset(&mut self, head: usize, len: usize, vif: VifIndex) {
        self.window.reset(head, len);
        self.vif = vif;
        self.verdict = Verdict::Drop(DropReason::Discard);
    }

    /// Gives the buffer back.
    pub fn into_buf(self) -> B {
        self.window.into_buf()
    }

    /// The buffer.
    pub fn buf(&self) -> &B {
        self.window.buf()
    }
}

/// Spare buffers for frames the pipeline makes (extra fragments), and
/// where those frames are left. Both vectors are reserved up front by the
/// caller, so the pipeline never allocates.
pub struct Spill<B> {
    /// Empty buffers the pipeline may take.
    pub free: Vec<B>,
    /// Frames the pipeline made, with their verdicts.
    pub out: Vec<Frame<B>>,
    /// Headroom to leave in a spare buffer.
    pub headroom: usize,
}

impl<B> Spill<B> {
    /// A spill with no spare buffers: fragmentation is then impossible and
    /// counted as `FragmentError`.
    pub fn none() -> Self {
        Spill { free: Vec::new(), out: Vec::new(), headroom: 0 }
    }

    /// An empty spill with room reserved for `capacity` spare buffers and
    /// as many frames made, so that filling it does not allocate.
    pub fn with_capacity(capacity: usize, headroom: usize) -> Self {
        Spill { free: Vec::with_capacity(capacity), out: Vec::with_capacity(capacity), headroom }
    }

    /// A spill that owns `free` buffers with `headroom` bytes kept in front.
    pub fn with_buffers(free: Vec<B>, headroom: usize) -> Self {
        let cap = free.len();
        Spill { free, out: Vec::with_capacity(cap), headroom }
    }
}

impl<B: Buffer> Spill<B> {
    /// A spare buffer as a frame of `len` bytes after the headroom, from
    /// vif `vif`: for a piece the pipeline makes (`forward::fragment`) or a
    /// held fragment it lets go (`hold`). `None` if no spare is left, or
    /// one is too short; the spare is then kept.
    pub(super) fn take_frame(&mut self, len: usize, vif: VifIndex) -> Option<Frame<B>> {
        let buf = self.free.pop()?;
        if self.headroom.checked_add(len).is_none_or(|end| end > buf.as_ref().len()) {
            self.free.push(buf);
            return None;
        }
        Frame::new(buf, self.headroom, len, vif)
    }
}
