//! The shard's pool of TLS record buffers: ciphertext waiting to be sent, and a record that
//! arrived cut across receive buffers.
//!
//! A TLS connection holds at most one buffer of each kind, and only while it has something in
//! it: an idle connection holds none (its receive buffers are the shard's provided ring, and
//! its ciphertext buffer goes back here as soon as the kernel has sent it). Buffers come in a
//! few fixed size classes, are allocated on first demand up to each class's count and reused
//! after, so a steady state allocates nothing; the counts bound the pool's memory.

/// One size class: the capacity of its buffers and how many may exist at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherClass {
    pub buffer_bytes: usize,
    pub buffers_max: usize,
}

/// The largest TLS record on the wire a peer may send: a TLS 1.2 ciphertext of
/// 2^14 + 2,048 bytes (RFC 5246 §6.2.3) and its 5-byte header. TLS 1.3 records are smaller
/// (2^14 + 256 bytes of ciphertext, RFC 8446 §5.2).
pub const RECORD_WIRE_BYTES_MAX: usize = 5 + (1 << 14) + 2048;

/// The classes, sized from their consumers:
/// - 512 B: one small delivery or reply with its record overhead (22 to 29 bytes), an alert,
///   a key update, the first bytes of a record cut across receive buffers;
/// - 4 KiB: a burst of small messages sealed into one record, a handshake flight with a short
///   certificate chain, a small record cut across receive buffers;
/// - 18.5 KiB: the largest record a peer may send, or one full record to send;
/// - 65 KiB: four full records sent at once (bulk data), or a handshake flight with a long
///   chain.
///
/// The counts bound the pool at about 8 + 16 + 18.5 + 8.1 = 51 MiB per shard, allocated only as
/// connections need buffers at the same moment (a buffer is held from sealing until the kernel
/// has sent it, or from the first to the last piece of a record).
pub const CIPHER_CLASSES: [CipherClass; 4] = [
    CipherClass {
        buffer_bytes: 512,
        buffers_max: 16 * 1024,
    },
    CipherClass {
        buffer_bytes: 4 * 1024,
        buffers_max: 4 * 1024,
    },
    CipherClass {
        buffer_bytes: 18_944,
        buffers_max: 1024,
    },
    CipherClass {
        buffer_bytes: 65 * 1024,
        buffers_max: 128,
    },
];

const _: () = assert!(CIPHER_CLASSES[2].buffer_bytes >= RECORD_WIRE_BYTES_MAX);
const _: () = assert!(CIPHER_CLASSES[3].buffer_bytes >= 4 * ((1 << 14) + 29) + 64);

/// A buffer on loan from the pool: bytes `start..end` hold data (ciphertext not yet sent, or
/// the part of a record received so far); `end..` is room to write into. Its storage never
/// moves while it is on loan, so the kernel may read it during a send.
#[derive(Debug)]
pub struct CipherBuffer {
    bytes: Box<[u8]>,
    start: usize,
    end: usize,
    class_index: u8,
}

impl CipherBuffer {
    /// The data held: `start..end`.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// The data held, to change in place (decrypting a record).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.end]
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The whole buffer's capacity (what it costs in memory).
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Room after the data.
    pub fn spare_bytes(&self) -> usize {
        self.bytes.len() - self.end
    }

    /// The room after the data, to write into before [`CipherBuffer::commit`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.end..]
    }

    /// Counts `bytes` written into the spare room as data.
    pub fn commit(&mut self, bytes: usize) {
        assert!(bytes <= self.spare_bytes(), "committed past the buffer");
        self.end += bytes;
    }

    /// Appends `bytes`; the caller has checked they fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Drops `bytes` from the front of the data (sent, or handed on).
    pub fn consume(&mut self, bytes: usize) {
        assert!(bytes <= self.len(), "consumed more than the buffer holds");
        self.start += bytes;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves the data to the front, so that the room after it is as large as it can be. Only
    /// for a buffer no send is reading.
    pub fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Counters of one class, for `GET /metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CipherClassStatistics {
    pub buffer_bytes: usize,
    pub buffers_max: usize,
    pub buffers_created: usize,
    pub buffers_in_use: usize,
}

#[derive(Debug)]
struct Class {
    limits: CipherClass,
    created: usize,
    free: Vec<Box<[u8]>>,
}

/// The pool of one shard. See the module documentation.
#[derive(Debug)]
pub struct CipherPool {
    classes: Vec<Class>,
    /// Requests refused because every class that could serve them was at its maximum.
    exhausted_count: u64,
}

impl CipherPool {
    /// An empty pool of `classes` (ascending). The free lists get their full capacity now, so
    /// that giving a buffer back never allocates.
    pub fn new(classes: &[CipherClass]) -> CipherPool {
        assert!(
            classes
                .windows(2)
                .all(|pair| pair[0].buffer_bytes < pair[1].buffer_bytes)
        );
        assert!(classes.len() <= usize::from(u8::MAX));
        CipherPool {
            classes: classes
                .iter()
                .map(|&limits| Class {
                    limits,
                    created: 0,
                    free: Vec::with_capacity(limits.buffers_max),
                })
                .collect(),
            exhausted_count: 0,
        }
    }

    /// The largest buffer any class lends.
    pub fn largest_bytes(&self) -> usize {
        self.classes
            .last()
            .map_or(0, |class| class.limits.buffer_bytes)
    }

    /// A buffer of at least `preferred_bytes` from the smallest class that has one; failing
    /// that, the largest one of at least `minimum_bytes` that is free. `None` when no class of
    /// at least `minimum_bytes` has a buffer to lend.
    pub fn acquire(
        &mut self,
        minimum_bytes: usize,
        preferred_bytes: usize,
    ) -> Option<CipherBuffer> {
        let preferred_bytes = preferred_bytes.max(minimum_bytes);
        let fits = |class: &Class, bytes: usize| class.limits.buffer_bytes >= bytes;
        let larger = (0..self.classes.len())
            .find(|&index| fits(&self.classes[index], preferred_bytes) && self.has_one(index));
        let chosen = larger.or_else(|| {
            (0..self.classes.len())
                .rev()
                .find(|&index| fits(&self.classes[index], minimum_bytes) && self.has_one(index))
        });
        let Some(index) = chosen else {
            self.exhausted_count += 1;
            return None;
        };
        let class = &mut self.classes[index];
        let bytes = class.free.pop().unwrap_or_else(|| {
            class.created += 1;
            vec![0u8; class.limits.buffer_bytes].into_boxed_slice()
        });
        Some(CipherBuffer {
            bytes,
            start: 0,
            end: 0,
            class_index: index as u8,
        })
    }

    fn has_one(&self, index: usize) -> bool {
        let class = &self.classes[index];
        !class.free.is_empty() || class.created < class.limits.buffers_max
    }

    /// Takes a buffer back for reuse.
    pub fn release(&mut self, buffer: CipherBuffer) {
        let class = &mut self.classes[usize::from(buffer.class_index)];
        assert!(class.free.len() < class.created, "a buffer released twice");
        class.free.push(buffer.bytes);
    }

    /// Makes `buffer` hold at least `bytes` in all, moving its data to a larger buffer when
    /// needed. Only for a buffer no send is reading. `false` when no larger buffer is free,
    /// with `buffer` untouched.
    pub fn grow(&mut self, buffer: &mut CipherBuffer, bytes: usize) -> bool {
        if buffer.capacity() >= bytes {
            buffer.compact();
            return true;
        }
        let Some(mut larger) = self.acquire(bytes, bytes) else {
            return false;
        };
        larger.extend_from_slice(buffer.data());
        let smaller = std::mem::replace(buffer, larger);
        self.release(smaller);
        true
    }

    /// Counters per class, smallest first.
    pub fn statistics(&self) -> impl Iterator<Item = CipherClassStatistics> + '_ {
        self.classes.iter().map(|class| CipherClassStatistics {
            buffer_bytes: class.limits.buffer_bytes,
            buffers_max: class.limits.buffers_max,
            buffers_created: class.created,
            buffers_in_use: class.created - class.free.len(),
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

    const SMALL: [CipherClass; 2] = [
        CipherClass {
            buffer_bytes: 512,
            buffers_max: 2,
        },
        CipherClass {
            buffer_bytes: 4096,
            buffers_max: 1,
        },
    ];

    /// Proves buffers come from the smallest class that fits, fall back to a larger one, then to
    /// a smaller one of at least the minimum, and are refused (and counted) past the counts.
    #[test]
    fn classes_lend_within_their_counts() {
        let mut pool = CipherPool::new(&SMALL);
        let first = pool.acquire(100, 100).unwrap();
        assert_eq!(first.capacity(), 512);
        let large = pool.acquire(100, 3000).unwrap();
        assert_eq!(large.capacity(), 4096);
        let second = pool.acquire(100, 3000).unwrap();
        assert_eq!(
            second.capacity(),
            512,
            "a smaller buffer of at least the minimum"
        );
        assert!(pool.acquire(100, 100).is_none());
        assert!(pool.acquire(600, 600).is_none());
        assert_eq!(pool.exhausted_count(), 2);
        pool.release(first);
        assert_eq!(pool.acquire(1, 1).unwrap().capacity(), 512);
        let in_use: Vec<usize> = pool
            .statistics()
            .map(|class| class.buffers_in_use)
            .collect();
        assert_eq!(in_use, [2, 1]);
        drop((large, second));
    }

    /// Proves data is consumed from the front, compacted, and moved whole into a larger buffer.
    #[test]
    fn data_moves_and_grows_intact() {
        let mut pool = CipherPool::new(&SMALL);
        let mut buffer = pool.acquire(1, 1).unwrap();
        buffer.extend_from_slice(&[1, 2, 3, 4, 5]);
        buffer.consume(2);
        assert_eq!(buffer.data(), [3, 4, 5]);
        assert!(pool.grow(&mut buffer, 510));
        assert_eq!(buffer.capacity(), 512, "compacted in place");
        assert_eq!(buffer.data(), [3, 4, 5]);
        assert!(pool.grow(&mut buffer, 1000));
        assert_eq!(buffer.capacity(), 4096);
        assert_eq!(buffer.data(), [3, 4, 5]);
        assert!(!pool.grow(&mut buffer, 5000), "no class holds it");
        assert_eq!(buffer.data(), [3, 4, 5], "untouched on failure");
        buffer.consume(3);
        assert!(buffer.is_empty());
        assert_eq!(buffer.spare_bytes(), 4096, "an emptied buffer starts over");
        pool.release(buffer);
    }
}
