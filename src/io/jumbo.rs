//! Jumbo frames. A UMEM frame holds at most 4 KiB, so a packet longer than
//! one (a pod or a fabric at MTU 9000) comes from a socket bound for
//! several buffers a packet as a chain of frames (`RxDesc::more`). The
//! worker puts each chain together in a buffer of its own (`Assembly`),
//! where the pipeline takes it as it takes any frame (it is generic over
//! its buffers), and what it sends is cut into a chain again
//! (`XskSocket::transmit_chain`). A copy each way: jumbo frames are long
//! and few, and the pipeline keeps its one buffer a frame.

use crate::pipeline::{Frame, Spill};
use crate::tables::VifIndex;

/// Room in front of a jumbo frame for the headers the pipeline prepends,
/// as the kernel leaves in a received UMEM frame (XDP_PACKET_HEADROOM).
pub const HEADROOM: usize = 256;

/// Bytes of a jumbo buffer.
const BUFFER: usize = 10 * 1024;

/// The longest frame a worker puts together: above the 9,216-byte MTU a
/// vif may have (`tables`), with its Ethernet and VLAN headers. A longer
/// chain is dropped as `frame_too_long`.
pub const LONGEST: usize = BUFFER - HEADROOM;

/// A jumbo buffer, allocated once and passed around by value.
pub struct JumboBuf(Box<[u8]>);

impl JumboBuf {
    fn new() -> JumboBuf {
        JumboBuf(vec![0u8; BUFFER].into_boxed_slice())
    }
}

impl AsRef<[u8]> for JumboBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for JumboBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

// SAFETY: a boxed slice's length is fixed, and both views are the whole of it.
unsafe impl crate::memory::Buffer for JumboBuf {}

/// A port's chain in progress: a chain's frames may be split between two
/// rounds' receives.
#[derive(Default)]
pub enum Assembly {
    /// No chain begun.
    #[default]
    Idle,
    /// Taking a chain: its buffer, and its bytes so far.
    Taking(JumboBuf, usize),
    /// Dropping the rest of a chain that ran past `LONGEST`.
    Dropping,
}

/// What a piece of a chain made.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The chain goes on.
    More,
    /// The chain ended and its frame is in the batch.
    Whole,
    /// The chain ended, longer than `LONGEST`: dropped.
    TooLong,
}

/// A worker's jumbo buffers, and the batch and spill the pipeline takes
/// jumbo frames in.
pub struct Jumbo {
    /// Free buffers. It grows to the most ever in use at once (bounded by
    /// the ports, one chain each, and a batch's frames and spares), not
    /// per frame.
    pool: Vec<JumboBuf>,
    /// The round's whole jumbo frames, for the pipeline.
    pub batch: Vec<Frame<JumboBuf>>,
    /// Spare buffers for the pieces the pipeline cuts jumbo frames into
    /// (an MTU below theirs), and the pieces.
    pub spill: Spill<JumboBuf>,
}

impl Jumbo {
    /// None allocated: a node without jumbo frames never pays for them.
    pub fn new(vector: usize, spares: usize) -> Jumbo {
        Jumbo { pool: Vec::new(), batch: Vec::with_capacity(vector), spill: Spill::with_capacity(spares, HEADROOM) }
    }

    /// A free buffer.
    pub fn take(&mut self) -> JumboBuf {
        self.pool.pop().unwrap_or_else(JumboBuf::new)
    }

    /// Gives a buffer back.
    pub fn give(&mut self, buf: JumboBuf) {
        self.pool.push(buf);
    }

    /// Adds `data`, a piece of a chain received on vif `vif`, to the port's
    /// `chain`; `more` if the chain goes on. At its end, the whole frame
    /// goes into the batch.
    pub fn piece(&mut self, chain: &mut Assembly, data: &[u8], more: bool, vif: VifIndex) -> Piece {
        let taken = match std::mem::take(chain) {
            Assembly::Idle => Some((self.take(), 0)),
            Assembly::Taking(buf, len) => Some((buf, len)),
            Assembly::Dropping => None,
        };
        let grown = match taken {
            Some((mut buf, len)) if len + data.len() <= LONGEST => {
                buf.0[HEADROOM + len..][..data.len()].copy_from_slice(data);
                Some((buf, len + data.len()))
            }
            Some((buf, _)) => {
                self.give(buf);
                None
            }
            None => None,
        };
        match (grown, more) {
            (Some((buf, len)), true) => {
                *chain = Assembly::Taking(buf, len);
                Piece::More
            }
            (Some((buf, len)), false) => match Frame::new(buf, HEADROOM, len, vif) {
                Some(f) => {
                    self.batch.push(f);
                    Piece::Whole
                }
                None => Piece::TooLong,
            },
            (None, true) => {
                *chain = Assembly::Dropping;
                Piece::More
            }
            (None, false) => Piece::TooLong,
        }
    }

    /// Gives the spill enough spare buffers for the pipeline to cut a
    /// jumbo frame at the smallest MTU.
    pub fn fill_spill(&mut self, spares: usize) {
        while self.spill.free.len() < spares {
            let b = self.take();
            self.spill.free.push(b);
        }
    }

    /// Buffers the worker has made, in use or free.
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.pool.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_split_across_rounds_becomes_one_frame_with_every_byte_in_order() {
        let mut j = Jumbo::new(32, 4);
        let mut chain = Assembly::Idle;
        let whole: Vec<u8> = (0..9014u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut parts = whole.chunks(3840).peekable();
        while let Some(part) = parts.next() {
            let more = parts.peek().is_some();
            let made = j.piece(&mut chain, part, more, 5);
            assert_eq!(made, if more { Piece::More } else { Piece::Whole });
        }
        assert!(matches!(chain, Assembly::Idle));
        let f = j.batch.pop().expect("the frame");
        assert_eq!((f.vif, f.headroom()), (5, HEADROOM));
        assert_eq!(f.data(), &whole[..]);
        j.give(f.into_buf());
        // The buffer is used again, not made again.
        let _ = j.piece(&mut chain, &[1, 2, 3], false, 5);
        assert_eq!(j.pooled(), 0);
    }

    #[test]
    fn a_chain_longer_than_the_longest_frame_is_dropped_whole_and_the_next_is_taken() {
        let mut j = Jumbo::new(32, 4);
        let mut chain = Assembly::Idle;
        let part = [0xab; 4096];
        assert_eq!(j.piece(&mut chain, &part, true, 1), Piece::More);
        assert_eq!(j.piece(&mut chain, &part, true, 1), Piece::More);
        // 12,288 bytes: past LONGEST; the rest of the chain is dropped.
        assert_eq!(j.piece(&mut chain, &part, true, 1), Piece::More);
        assert!(matches!(chain, Assembly::Dropping));
        assert_eq!(j.piece(&mut chain, &part, false, 1), Piece::TooLong);
        assert!(j.batch.is_empty());
        assert_eq!(j.pooled(), 1, "its buffer went back");
        assert_eq!(j.piece(&mut chain, &[9; 100], false, 1), Piece::Whole);
        assert_eq!(j.batch[0].data(), &[9; 100][..]);
    }

    #[test]
    fn a_chain_of_exactly_the_longest_frame_is_taken() {
        let mut j = Jumbo::new(32, 4);
        let mut chain = Assembly::Idle;
        assert_eq!(j.piece(&mut chain, &vec![1; LONGEST - 10], true, 1), Piece::More);
        assert_eq!(j.piece(&mut chain, &[2; 10], false, 1), Piece::Whole);
        assert_eq!(j.batch[0].len(), LONGEST);
    }
}
