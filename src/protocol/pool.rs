//! A bounded pool of reusable message buffers in size classes.
//!
//! Messages that do not arrive whole in one read (split frames, fragmented messages, control
//! frames cut across reads, owed pongs) are assembled in buffers from this pool. Buffers are
//! created on first demand up to each class's `buffers_max` and then reused, so after warm-up
//! parsing allocates nothing, and the pool's memory never exceeds the sum of its classes. The
//! pool belongs to one shard and is not shared between threads.

use serde::{Deserialize, Serialize};

use super::websocket::deflate::Inflater;

/// Most size classes a pool may have: a handful serve every size from a control frame to the
/// largest message, and the metrics report each class.
pub const POOL_CLASSES_MAX: usize = 16;

/// One size class of the message buffer pool.
///
/// Both fields are required in the config file: a class with a default size or count would
/// silently change the pool's memory bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BufferClass {
    /// Capacity of each buffer in this class.
    pub buffer_bytes: usize,
    /// How many buffers of this class may exist at once (in use or free).
    pub buffers_max: usize,
}

/// Sizes and counts of the pooled buffers messages are assembled in. Each shard owns one pool.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolLimits {
    /// Size classes in ascending order. The defaults are sized from their consumers:
    /// - 128 B: a control frame's payload (≤ 125 B) split across reads, and an owed pong;
    /// - 4 KiB: a small data message split across reads (most market-data traffic);
    /// - 64 KiB: a larger message, such as a batch publish;
    /// - 1 MiB: a message at the default `message_bytes_max`.
    ///
    /// Counts bound the pool's memory to about 4 + 8 + 16 + 64 = 92 MiB per shard at worst.
    pub classes: Vec<BufferClass>,
    /// Inflaters (permessage-deflate) a shard may hold at once: one is lent to a connection
    /// from the first frame of a compressed message to its last, so this bounds how many
    /// connections may be in the middle of a compressed message together; one more is refused
    /// with 1013 (try again later). Each is about 40 KiB (a 32 KiB window and zlib's state),
    /// so the default 256 bounds them to about 10 MiB per shard. Made on first demand.
    pub inflaters_max: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            classes: vec![
                BufferClass {
                    buffer_bytes: 128,
                    buffers_max: 32 * 1024,
                },
                BufferClass {
                    buffer_bytes: 4 * 1024,
                    buffers_max: 2 * 1024,
                },
                BufferClass {
                    buffer_bytes: 64 * 1024,
                    buffers_max: 256,
                },
                BufferClass {
                    buffer_bytes: 1024 * 1024,
                    buffers_max: 64,
                },
            ],
            inflaters_max: 256,
        }
    }
}

impl PoolLimits {
    /// A pool whose largest class holds `message_bytes_max` (for example 16 MiB for conformance).
    pub fn for_message_bytes_max(message_bytes_max: usize) -> Self {
        let mut config = Self::default();
        let largest = config.classes.last().map_or(0, |class| class.buffer_bytes);
        if message_bytes_max > largest {
            config.classes.push(BufferClass {
                buffer_bytes: message_bytes_max,
                buffers_max: 8,
            });
        }
        config
    }

    /// Checks the classes ascend, are non-empty, and that the largest holds `message_bytes_max`.
    pub fn validate(&self, message_bytes_max: usize) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("the buffer pool needs at least one size class".into());
        }
        if self.classes.len() > POOL_CLASSES_MAX {
            return Err(format!(
                "the buffer pool has {} classes; at most {POOL_CLASSES_MAX}",
                self.classes.len()
            ));
        }
        for pair in self.classes.windows(2) {
            if pair[0].buffer_bytes >= pair[1].buffer_bytes {
                return Err("buffer pool classes must ascend strictly by buffer_bytes".into());
            }
        }
        if self
            .classes
            .iter()
            .any(|class| class.buffers_max == 0 || class.buffer_bytes < 128)
        {
            return Err(
                "each buffer pool class needs buffers_max > 0 and buffer_bytes ≥ 128".into(),
            );
        }
        let largest = self.classes.last().map_or(0, |class| class.buffer_bytes);
        if largest < message_bytes_max {
            return Err(format!(
                "largest pool buffer ({largest} B) is below message_bytes_max ({message_bytes_max} B)"
            ));
        }
        Ok(())
    }
}

/// A buffer on loan from a [`BufferPool`]. Its capacity is its class's size and never grows:
/// writing past it is a bug caught by an assertion. Hand it back with [`BufferPool::release`].
///
/// The capacity names the class (classes differ in size, and `Vec::with_capacity` gives
/// exactly the capacity asked for), so the buffer is a bare vector: a connection slot holds
/// several of these as `Option`s, each 24 bytes rather than 32 with a class index.
#[derive(Debug)]
pub struct PooledBuffer {
    bytes: Vec<u8>,
}

impl PooledBuffer {
    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes written so far, to change in place (for example to unmask them).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// How many bytes are written.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many bytes fit without a larger buffer.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends `bytes`; the caller has checked they fit (see [`BufferPool::grow`]).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(
            self.bytes.len() + bytes.len() <= self.bytes.capacity(),
            "pooled buffer overrun"
        );
        self.bytes.extend_from_slice(bytes);
    }

    /// Keeps the first `bytes` bytes and forgets the rest (for example bytes copied past the end
    /// of a request head, which belong to what follows it).
    pub fn truncate(&mut self, bytes: usize) {
        self.bytes.truncate(bytes);
    }

    /// The vector itself, for a writer that fills its spare capacity in place (an inflater).
    /// It must never grow it: a pooled buffer's capacity is its class's size.
    pub(in crate::protocol) fn bytes_without_growing(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Forgets the contents, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// How many buffers one holder keeps: a WebSocket session's message, control frame and owed
/// pong.
pub const HELD_BUFFERS_COUNT: usize = 3;

/// The pooled buffers one connection holds at once, in a box lent from the pool while it holds
/// any: most connections hold none between reads, and three `Option`s inline would cost every
/// connection slot 72 bytes where the box's pointer costs 8.
pub type HeldBuffers = [Option<PooledBuffer>; HELD_BUFFERS_COUNT];

/// Counters of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStatistics {
    pub buffer_bytes: usize,
    pub buffers_max: usize,
    /// Buffers allocated so far (in use or free); never above `buffers_max`.
    pub buffers_created: usize,
    /// Buffers on loan now.
    pub buffers_in_use: usize,
}

#[derive(Debug)]
struct SizeClass {
    buffer_bytes: usize,
    buffers_max: usize,
    buffers_created: usize,
    free: Vec<Vec<u8>>,
}

/// Boxed values lent out and taken back, made on first demand up to `max`: the free list has
/// its full capacity from the start, so taking one back never allocates.
#[derive(Debug)]
struct Lender<T> {
    /// Boxes, not values: lent values move between the pool and sessions as a pointer each.
    free: Vec<Box<T>>,
    max: usize,
    created: usize,
}

impl<T> Lender<T> {
    fn new(max: usize) -> Lender<T> {
        Lender {
            free: Vec::with_capacity(max),
            max,
            created: 0,
        }
    }

    /// A free value, or one made now by `make`; `None` when `max` are lent out.
    fn lend(&mut self, make: impl FnOnce() -> T) -> Option<Box<T>> {
        if let Some(value) = self.free.pop() {
            return Some(value);
        }
        if self.created == self.max {
            return None;
        }
        self.created += 1;
        Some(Box::new(make()))
    }

    fn take_back(&mut self, value: Box<T>) {
        assert!(self.free.len() < self.created, "taken back twice");
        self.free.push(value);
    }

    /// Made so far, and lent out now.
    fn statistics(&self) -> (usize, usize) {
        (self.created, self.created - self.free.len())
    }
}

/// The pool. See the module documentation.
#[derive(Debug)]
pub struct BufferPool {
    classes: Vec<SizeClass>,
    /// Never more than `inflaters_max` made. Boxed: a session holds one only while a
    /// compressed message arrives, and every connection slot would otherwise carry an
    /// inflater's 150 bytes inline.
    inflaters: Lender<Inflater>,
    /// A holder is lent only to keep a buffer and given back once empty, so no more are made
    /// than buffers may exist: the classes' counts summed.
    holders: Lender<HeldBuffers>,
    /// Requests refused because every class large enough was at its maximum.
    exhausted_count: u64,
}

impl BufferPool {
    /// Builds an empty pool; the free lists get their full capacity now so that returning a
    /// buffer never allocates.
    pub fn new(config: &PoolLimits) -> Self {
        assert!(
            config
                .classes
                .windows(2)
                .all(|pair| pair[0].buffer_bytes < pair[1].buffer_bytes),
            "pool classes ascend strictly: a buffer's capacity names its class"
        );
        let classes = config
            .classes
            .iter()
            .map(|class| SizeClass {
                buffer_bytes: class.buffer_bytes,
                buffers_max: class.buffers_max,
                buffers_created: 0,
                free: Vec::with_capacity(class.buffers_max),
            })
            .collect();
        let holders_max = config.classes.iter().map(|class| class.buffers_max).sum();
        Self {
            classes,
            holders: Lender::new(holders_max),
            inflaters: Lender::new(config.inflaters_max),
            exhausted_count: 0,
        }
    }

    /// An inflater for one compressed message, made on first demand up to `inflaters_max`.
    /// `None` (counted as exhaustion) when that many are lent out.
    pub fn acquire_inflater(&mut self) -> Option<Box<Inflater>> {
        let inflater = self.inflaters.lend(Inflater::new);
        if inflater.is_none() {
            self.exhausted_count += 1;
        }
        inflater
    }

    /// Takes an inflater back, reset for its next message.
    pub fn release_inflater(&mut self, mut inflater: Box<Inflater>) {
        inflater.reset();
        self.inflaters.take_back(inflater);
    }

    /// A holder for the buffers of one connection, made on first demand. Lent only with a buffer
    /// to keep, so the pool's buffer counts bound how many exist.
    pub fn acquire_holder(&mut self) -> Box<HeldBuffers> {
        self.holders
            .lend(HeldBuffers::default)
            .expect("no more holders than buffers")
    }

    /// Takes an empty holder back.
    pub fn release_holder(&mut self, holder: Box<HeldBuffers>) {
        assert!(
            holder.iter().all(Option::is_none),
            "a holder came back holding buffers"
        );
        self.holders.take_back(holder);
    }

    /// Holders made so far and lent out now.
    pub fn holder_statistics(&self) -> (usize, usize) {
        self.holders.statistics()
    }

    /// Inflaters made so far and lent out now.
    pub fn inflater_statistics(&self) -> (usize, usize) {
        self.inflaters.statistics()
    }

    /// An empty buffer holding at least `bytes`, from the smallest class that fits and has one to
    /// lend (a larger class stands in when a smaller one is at its maximum). `None` when every
    /// class that fits is at its maximum or `bytes` is above the largest class.
    pub fn acquire(&mut self, bytes: usize) -> Option<PooledBuffer> {
        let class_count = self.classes.len();
        let first = self
            .classes
            .iter()
            .position(|class| class.buffer_bytes >= bytes);
        for class_index in first.unwrap_or(class_count)..class_count {
            let class = &mut self.classes[class_index];
            let bytes = if let Some(buffer) = class.free.pop() {
                buffer
            } else if class.buffers_created < class.buffers_max {
                class.buffers_created += 1;
                Vec::with_capacity(class.buffer_bytes)
            } else {
                continue;
            };
            return Some(PooledBuffer { bytes });
        }
        self.exhausted_count += 1;
        None
    }

    /// Takes a buffer back for reuse.
    pub fn release(&mut self, mut buffer: PooledBuffer) {
        buffer.bytes.clear();
        let capacity = buffer.bytes.capacity();
        let class_index = self
            .classes
            .partition_point(|class| class.buffer_bytes < capacity);
        let class = &mut self.classes[class_index];
        assert_eq!(capacity, class.buffer_bytes, "a pooled buffer grew");
        assert!(
            class.free.len() < class.buffers_max,
            "released a buffer twice"
        );
        class.free.push(buffer.bytes);
    }

    /// Makes sure `buffer` can hold `bytes` in total, moving its contents to a larger class when
    /// needed. On failure the original buffer is handed back untouched.
    pub fn grow(
        &mut self,
        buffer: PooledBuffer,
        bytes: usize,
    ) -> Result<PooledBuffer, PooledBuffer> {
        if buffer.capacity() >= bytes {
            return Ok(buffer);
        }
        let Some(mut larger) = self.acquire(bytes) else {
            return Err(buffer);
        };
        larger.extend_from_slice(buffer.as_slice());
        self.release(buffer);
        Ok(larger)
    }

    /// [`BufferPool::grow`] for a buffer that stays where it is (in a state enum, say): `false`
    /// when no larger buffer is free, with `buffer` untouched.
    pub fn grow_in_place(&mut self, buffer: &mut PooledBuffer, bytes: usize) -> bool {
        if buffer.capacity() >= bytes {
            return true;
        }
        let Some(mut larger) = self.acquire(bytes) else {
            return false;
        };
        larger.extend_from_slice(buffer.as_slice());
        let smaller = std::mem::replace(buffer, larger);
        self.release(smaller);
        true
    }

    /// Counters per class, smallest first.
    pub fn statistics(&self) -> impl Iterator<Item = ClassStatistics> + '_ {
        self.classes.iter().map(|class| ClassStatistics {
            buffer_bytes: class.buffer_bytes,
            buffers_max: class.buffers_max,
            buffers_created: class.buffers_created,
            buffers_in_use: class.buffers_created - class.free.len(),
        })
    }

    /// How many requests found no buffer.
    pub fn exhausted_count(&self) -> u64 {
        self.exhausted_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_pool() -> BufferPool {
        BufferPool::new(&PoolLimits {
            inflaters_max: 1,
            classes: vec![
                BufferClass {
                    buffer_bytes: 128,
                    buffers_max: 2,
                },
                BufferClass {
                    buffer_bytes: 1024,
                    buffers_max: 1,
                },
            ],
        })
    }

    /// Proves buffers come from the smallest fitting class and are reused after release.
    #[test]
    fn reuses_released_buffers() {
        let mut pool = small_pool();
        let buffer = pool.acquire(100).unwrap();
        assert_eq!(buffer.capacity(), 128);
        pool.release(buffer);
        let again = pool.acquire(1).unwrap();
        assert_eq!(pool.statistics().next().unwrap().buffers_created, 1);
        pool.release(again);
    }

    /// Proves the bound: a full class spills into a larger one, then requests are refused.
    #[test]
    fn bounded_and_spills_upward() {
        let mut pool = small_pool();
        let first = pool.acquire(10).unwrap();
        let second = pool.acquire(10).unwrap();
        let third = pool.acquire(10).unwrap();
        assert_eq!(third.capacity(), 1024);
        assert!(pool.acquire(10).is_none());
        assert!(pool.acquire(4096).is_none());
        assert_eq!(pool.exhausted_count(), 2);
        for buffer in [first, second, third] {
            pool.release(buffer);
        }
        assert!(pool.statistics().all(|class| class.buffers_in_use == 0));
    }

    /// Proves growing keeps the contents and hands the buffer back when no larger one exists.
    #[test]
    fn grow_keeps_contents() {
        let mut pool = small_pool();
        let mut buffer = pool.acquire(10).unwrap();
        buffer.extend_from_slice(b"price");
        let mut grown = pool.grow(buffer, 500).unwrap();
        assert_eq!(grown.as_slice(), b"price");
        assert_eq!(grown.capacity(), 1024);
        grown.extend_from_slice(&[0; 500]);
        let refused = pool.grow(grown, 2000).unwrap_err();
        assert_eq!(refused.len(), 505);
        pool.release(refused);
    }

    /// Proves growing in place keeps the contents, returns the small buffer to its class, and
    /// leaves the buffer as it was when no larger one is free; truncating keeps a prefix.
    #[test]
    fn grow_in_place_keeps_contents() {
        let mut pool = small_pool();
        let mut buffer = pool.acquire(10).unwrap();
        buffer.extend_from_slice(b"price");
        assert!(pool.grow_in_place(&mut buffer, 100));
        assert_eq!(buffer.capacity(), 128);
        assert!(pool.grow_in_place(&mut buffer, 500));
        assert_eq!(
            (buffer.as_slice(), buffer.capacity()),
            (&b"price"[..], 1024)
        );
        assert_eq!(pool.statistics().next().unwrap().buffers_in_use, 0);
        assert!(!pool.grow_in_place(&mut buffer, 2000));
        assert_eq!(buffer.as_slice(), b"price");
        buffer.truncate(2);
        assert_eq!(buffer.as_slice(), b"pr");
        pool.release(buffer);
        assert!(pool.statistics().all(|class| class.buffers_in_use == 0));
    }
}
