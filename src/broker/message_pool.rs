//! The buffers published messages are encoded in, recycled so that publishing allocates nothing
//! after warm-up, each message in a buffer of its own so that what history and queues count is
//! what they hold.
//!
//! A message is shared by every shard it is forwarded to, every subscriber's queue and its
//! topic's history, and any of those may let go of it last, on any thread. A [`SharedBuffer`]
//! counts its holders; the one that lets go last puts the buffer back on its size class's free
//! list (a bounded lock-free queue), where the owner shard takes it for its next message. The
//! count is our own rather than the `Arc`'s strong count because `fetch_sub` tells exactly one
//! holder that it was the last, where comparing the strong count before dropping would race.
//!
//! Classes are powers of two from 128 B to 2 MiB, so a buffer wastes less than half of itself;
//! a message larger than the largest class gets an exact buffer that is freed, not kept. The
//! free lists together keep at most `message_pool_free_bytes_max`: past it a returned buffer is
//! freed, so a burst of large messages does not stay resident.

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::sync::{Arc, Weak};

use crossbeam_queue::ArrayQueue;

/// The smallest class: a typical tick with its topic, seq and frame head fits.
const CLASS_BYTES_MIN: usize = 128;
/// The largest class: a message at the default `publish_body_bytes_max` (1 MiB) and its
/// encoding fit.
const CLASS_BYTES_MAX: usize = 2 * 1024 * 1024;
const CLASS_COUNT: usize = (CLASS_BYTES_MAX / CLASS_BYTES_MIN).trailing_zeros() as usize + 1;

/// What a buffer costs beyond its capacity: the `Arc`'s counts, the slot's fields, the
/// allocator's rounding of two allocations.
pub const SLOT_OVERHEAD_BYTES: usize = 96;

type FreeList = ArrayQueue<Arc<Slot>>;

#[derive(Debug)]
struct Slot {
    /// The [`SharedBuffer`]s holding this slot.
    holders: AtomicU32,
    /// The free list it goes back to (none for an exact, unpooled buffer). Weak, so that the
    /// free lists, which hold slots, do not keep themselves alive after the pool is gone.
    home: Weak<FreeList>,
    bytes: Vec<u8>,
}

/// Bytes shared by reference count; cloning is one count. Read-only once made.
#[derive(Debug)]
pub struct SharedBuffer {
    /// Always `Some` but while being dropped (the last holder moves the slot to its free list).
    slot: Option<Arc<Slot>>,
}

impl SharedBuffer {
    /// A buffer of exactly `bytes`, written by `write`, freed (not pooled) when its last holder
    /// lets go.
    pub fn exact(bytes: usize, write: impl FnOnce(&mut Vec<u8>)) -> SharedBuffer {
        let mut exact = Vec::with_capacity(bytes);
        write(&mut exact);
        SharedBuffer::hold(Arc::new(Slot {
            holders: AtomicU32::new(0),
            home: Weak::new(),
            bytes: exact,
        }))
    }

    /// The memory this buffer holds: its capacity and its slot.
    pub fn memory_bytes(&self) -> usize {
        self.slot().bytes.capacity() + SLOT_OVERHEAD_BYTES
    }

    /// Whether `other` holds this very buffer.
    pub fn is_same(&self, other: &SharedBuffer) -> bool {
        Arc::ptr_eq(self.slot(), other.slot())
    }

    fn hold(mut slot: Arc<Slot>) -> SharedBuffer {
        match Arc::get_mut(&mut slot) {
            Some(fresh) => *fresh.holders.get_mut() = 1,
            None => {
                slot.holders.fetch_add(1, Ordering::Relaxed);
            }
        }
        SharedBuffer { slot: Some(slot) }
    }

    fn slot(&self) -> &Arc<Slot> {
        self.slot.as_ref().expect("present until dropped")
    }
}

impl std::ops::Deref for SharedBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.slot().bytes
    }
}

impl Clone for SharedBuffer {
    fn clone(&self) -> SharedBuffer {
        // Relaxed, as for `Arc`: a new holder is made from an existing one, which keeps the
        // slot alive meanwhile.
        self.slot().holders.fetch_add(1, Ordering::Relaxed);
        SharedBuffer {
            slot: self.slot.clone(),
        }
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        if slot.holders.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other holder's reads happened before their release above.
        fence(Ordering::Acquire);
        if let Some(home) = slot.home.upgrade() {
            // A full free list refuses the slot, which is then freed.
            let _ = home.push(slot);
        }
    }
}

impl PartialEq for SharedBuffer {
    fn eq(&self, other: &SharedBuffer) -> bool {
        **self == **other
    }
}

impl Eq for SharedBuffer {}

/// One shard's message buffers: a free list per size class, made when its class is first
/// used. A free list is a bounded queue whose slots are all written when it is made (about
/// 280 KB for the fifteen classes of a 16 MiB pool), and most shards use one or two classes:
/// made at start-up, 64 idle shards wrote 36 MB for them.
#[derive(Debug)]
pub struct MessagePool {
    free_lists: Vec<Option<Arc<FreeList>>>,
    /// Each class's share of `free_bytes_max`.
    class_share_bytes: usize,
    /// Buffers made because their class's free list was empty, and exact buffers for messages
    /// larger than every class (for the counters).
    pub buffers_created: u64,
    pub buffers_unpooled: u64,
}

impl MessagePool {
    /// A pool whose free lists keep at most about `free_bytes_max` between them (each class
    /// an equal share, and at least one buffer).
    pub fn new(free_bytes_max: usize) -> MessagePool {
        MessagePool {
            free_lists: vec![None; CLASS_COUNT],
            class_share_bytes: free_bytes_max / CLASS_COUNT,
            buffers_created: 0,
            buffers_unpooled: 0,
        }
    }

    /// A buffer of `bytes`, written by `write` (which must write exactly `bytes`): a free one
    /// of its class when there is one.
    pub fn fill(&mut self, bytes: usize, write: impl FnOnce(&mut Vec<u8>)) -> SharedBuffer {
        let Some(class) = class_of(bytes) else {
            self.buffers_unpooled += 1;
            return SharedBuffer::exact(bytes, write);
        };
        let share = self.class_share_bytes;
        let free_list = self.free_lists[class]
            .get_or_insert_with(|| Arc::new(ArrayQueue::new(free_list_capacity(share, class))));
        let mut slot = free_list
            .pop()
            .filter(|slot| Arc::strong_count(slot) == 1)
            .unwrap_or_else(|| {
                self.buffers_created += 1;
                Arc::new(Slot {
                    holders: AtomicU32::new(0),
                    home: Arc::downgrade(free_list),
                    bytes: Vec::with_capacity(class_bytes(class)),
                })
            });
        let fresh = Arc::get_mut(&mut slot).expect("a free slot has no holder");
        fresh.bytes.clear();
        write(&mut fresh.bytes);
        debug_assert_eq!(fresh.bytes.len(), bytes);
        SharedBuffer::hold(slot)
    }

    /// Bytes the free lists hold now.
    pub fn free_bytes(&self) -> usize {
        self.free_lists
            .iter()
            .enumerate()
            .filter_map(|(class, free_list)| Some((class, free_list.as_ref()?)))
            .map(|(class, free_list)| free_list.len() * (class_bytes(class) + SLOT_OVERHEAD_BYTES))
            .sum()
    }

    /// The most the free lists can hold.
    pub fn free_bytes_max(&self) -> usize {
        (0..CLASS_COUNT)
            .map(|class| {
                free_list_capacity(self.class_share_bytes, class)
                    * (class_bytes(class) + SLOT_OVERHEAD_BYTES)
            })
            .sum()
    }
}

/// How many buffers the free list of `class` keeps: its share, and at least one.
fn free_list_capacity(class_share_bytes: usize, class: usize) -> usize {
    (class_share_bytes / class_bytes(class)).max(1)
}

fn class_bytes(class: usize) -> usize {
    CLASS_BYTES_MIN << class
}

/// The smallest class that holds `bytes`; `None` past the largest.
fn class_of(bytes: usize) -> Option<usize> {
    if bytes > CLASS_BYTES_MAX {
        return None;
    }
    let rounded = bytes.max(CLASS_BYTES_MIN).next_power_of_two();
    Some((rounded / CLASS_BYTES_MIN).trailing_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(pool: &mut MessagePool, bytes: usize, value: u8) -> SharedBuffer {
        pool.fill(bytes, |buffer| buffer.resize(bytes, value))
    }

    #[test]
    fn classes_are_powers_of_two_from_128_bytes() {
        assert_eq!(class_of(0), Some(0));
        assert_eq!(class_of(128), Some(0));
        assert_eq!(class_of(129), Some(1));
        assert_eq!(class_of(CLASS_BYTES_MAX), Some(CLASS_COUNT - 1));
        assert_eq!(class_of(CLASS_BYTES_MAX + 1), None);
        assert_eq!(class_bytes(CLASS_COUNT - 1), CLASS_BYTES_MAX);
    }

    #[test]
    fn the_last_holder_returns_the_buffer_for_reuse() {
        let mut pool = MessagePool::new(1 << 20);
        let first = filled(&mut pool, 100, 1);
        let copy = first.clone();
        drop(first);
        assert_eq!(pool.free_bytes(), 0, "a holder remains");
        assert_eq!(&copy[..3], &[1, 1, 1]);
        drop(copy);
        assert_eq!(pool.free_bytes(), 128 + SLOT_OVERHEAD_BYTES);
        let second = filled(&mut pool, 120, 2);
        assert_eq!(pool.buffers_created, 1, "the buffer was reused");
        assert_eq!(second.len(), 120);
        assert!(second.iter().all(|&byte| byte == 2));
        assert_eq!(second.memory_bytes(), 128 + SLOT_OVERHEAD_BYTES);
    }

    #[test]
    fn holders_on_other_threads_return_the_buffer_once() {
        let mut pool = MessagePool::new(1 << 20);
        for round in 0..200u8 {
            let buffer = filled(&mut pool, 64, round);
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let held = buffer.clone();
                    std::thread::spawn(move || assert_eq!(held[0], round))
                })
                .collect();
            drop(buffer);
            for thread in threads {
                thread.join().unwrap();
            }
        }
        assert_eq!(pool.buffers_created, 1, "one buffer served every round");
        assert_eq!(pool.free_bytes(), 128 + SLOT_OVERHEAD_BYTES);
    }

    /// Proves a class's free list is made the first time a message of that class is, and that
    /// the bound the pool reports counts every class, made or not.
    #[test]
    fn free_lists_are_made_on_first_use() {
        let mut pool = MessagePool::new(CLASS_COUNT * 1024);
        let free_bytes_max = pool.free_bytes_max();
        assert!(pool.free_lists.iter().all(Option::is_none));
        drop(filled(&mut pool, 300, 0));
        let made: Vec<usize> = (0..CLASS_COUNT)
            .filter(|&class| pool.free_lists[class].is_some())
            .collect();
        assert_eq!(made, [class_of(300).unwrap()]);
        assert_eq!(pool.free_bytes(), 512 + SLOT_OVERHEAD_BYTES);
        assert_eq!(pool.free_bytes_max(), free_bytes_max);
    }

    #[test]
    fn free_lists_are_bounded_and_large_messages_are_not_kept() {
        let mut pool = MessagePool::new(CLASS_COUNT * 1024);
        // The 128-byte class keeps 1,024 / 128 = 8 buffers; the rest are freed.
        let buffers: Vec<_> = (0..20).map(|_| filled(&mut pool, 100, 0)).collect();
        drop(buffers);
        assert_eq!(pool.free_bytes(), 8 * (128 + SLOT_OVERHEAD_BYTES));
        let large = filled(&mut pool, CLASS_BYTES_MAX + 1, 0);
        assert_eq!(pool.buffers_unpooled, 1);
        assert_eq!(
            large.memory_bytes(),
            CLASS_BYTES_MAX + 1 + SLOT_OVERHEAD_BYTES
        );
        drop(large);
        assert_eq!(pool.free_bytes(), 8 * (128 + SLOT_OVERHEAD_BYTES));
    }

    #[test]
    fn buffers_outliving_their_pool_are_freed() {
        let mut pool = MessagePool::new(1 << 20);
        let buffer = filled(&mut pool, 10, 9);
        drop(pool);
        assert_eq!(&buffer[..], &[9; 10]);
        drop(buffer);
    }
}
