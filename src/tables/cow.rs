//! A bounded array of slots, shared between snapshots chunk by chunk.
//!
//! Cloning a `CowVec` copies one pointer per chunk; writing a slot copies only
//! that slot's chunk when an older snapshot still shares it. This is what
//! lets a writer build the next snapshot while readers keep the current one.
//!
//! Only the chunks up to the highest slot ever set exist. The writer copies
//! every table once a batch, and each pointer copied is a locked increment:
//! with chunks for the whole capacity (524,288 next hops, twice: the table
//! and its reference counts) that was 16,000 of them a batch, and as many
//! decrements when the batch's snapshot went, most of a small batch's cost.

use std::sync::Arc;

const CHUNK: usize = 64;

/// A fixed-capacity array of optional values with chunked copy-on-write.
#[derive(Clone)]
pub struct CowVec<T> {
    /// Up to the chunk of the highest slot set; a slot past them is empty.
    chunks: Vec<Arc<[Option<T>; CHUNK]>>,
    /// What `chunks` grows by: one empty chunk, shared.
    empty: Arc<[Option<T>; CHUNK]>,
    capacity: usize,
    occupied: usize,
}

/// A slot index at or beyond the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// The index asked for.
    pub index: usize,
    /// The capacity.
    pub capacity: usize,
}

impl<T: Clone> CowVec<T> {
    /// An empty array of `capacity` slots, taking no chunks yet.
    pub fn new(capacity: usize) -> Self {
        let empty: Arc<[Option<T>; CHUNK]> = Arc::new(std::array::from_fn(|_| None));
        CowVec { chunks: Vec::new(), empty, capacity, occupied: 0 }
    }

    /// The value in slot `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        // Slots past the capacity in the last chunk are never set, so the
        // chunk bound alone is enough.
        self.chunks.get(i / CHUNK)?[i % CHUNK].as_ref()
    }

    /// Puts `value` into slot `i` and returns what was there.
    pub fn set(&mut self, i: usize, value: Option<T>) -> Result<Option<T>, OutOfRange> {
        if i >= self.capacity {
            return Err(OutOfRange { index: i, capacity: self.capacity });
        }
        if i / CHUNK >= self.chunks.len() {
            if value.is_none() {
                return Ok(None);
            }
            self.chunks.resize(i / CHUNK + 1, Arc::clone(&self.empty));
        }
        let chunk = Arc::make_mut(&mut self.chunks[i / CHUNK]);
        let old = std::mem::replace(&mut chunk[i % CHUNK], value);
        self.occupied = self.occupied + usize::from(chunk[i % CHUNK].is_some()) - usize::from(old.is_some());
        Ok(old)
    }

    /// A mutable reference to slot `i`'s value, copying its chunk if shared.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.capacity || self.get(i).is_none() {
            return None;
        }
        Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK].as_mut()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.occupied
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// Occupied slots in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| {
                chunk.iter().enumerate().filter_map(move |(i, v)| Some((c * CHUNK + i, v.as_ref()?)))
            })
            .take_while(move |(i, _)| *i < self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counted() {
        let mut v = CowVec::new(100);
        assert_eq!(v.set(99, Some(7u32)), Ok(None));
        assert_eq!(v.set(100, Some(1)), Err(OutOfRange { index: 100, capacity: 100 }));
        assert_eq!(v.get(99), Some(&7));
        assert_eq!(v.get(100), None);
        assert_eq!(v.len(), 1);
        assert_eq!(v.set(99, Some(8)), Ok(Some(7)));
        assert_eq!(v.len(), 1);
        assert_eq!(v.set(99, None), Ok(Some(8)));
        assert!(v.is_empty());
    }

    /// Chunks exist up to the highest slot set, so a copy of a big, mostly
    /// empty table copies few pointers; slots past them read as empty.
    #[test]
    fn chunks_grow_to_the_highest_slot_set() {
        let mut v: CowVec<u32> = CowVec::new(524_288);
        assert_eq!(v.chunks.len(), 0);
        assert_eq!(v.get(0), None);
        assert_eq!(v.get(524_287), None);
        assert_eq!(v.get_mut(9), None);
        assert_eq!(v.set(200_000, None), Ok(None), "clearing an empty slot takes no chunk");
        assert_eq!(v.chunks.len(), 0);
        v.set(130, Some(1)).unwrap();
        assert_eq!(v.chunks.len(), 3);
        let copy = v.clone();
        v.set(524_287, Some(2)).unwrap();
        assert_eq!(v.chunks.len(), 524_288 / CHUNK);
        assert_eq!((copy.get(524_287), v.get(524_287)), (None, Some(&2)));
        assert_eq!(v.iter().map(|(i, &x)| (i, x)).collect::<Vec<_>>(), vec![(130, 1), (524_287, 2)]);
        assert_eq!(copy.iter().count(), 1);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn clone_is_isolated_from_later_writes() {
        let mut a = CowVec::new(1000);
        for i in 0..1000 {
            a.set(i, Some(i)).unwrap();
        }
        let b = a.clone();
        a.set(5, Some(555)).unwrap();
        *a.get_mut(700).unwrap() = 7777;
        assert_eq!(b.get(5), Some(&5));
        assert_eq!(b.get(700), Some(&700));
        assert_eq!(a.get(5), Some(&555));
        assert_eq!(a.iter().count(), 1000);
        assert_eq!(b.iter().map(|(_, v)| *v).sum::<usize>(), (0..1000usize).sum::<usize>());
    }
}
