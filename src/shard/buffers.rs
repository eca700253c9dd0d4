//! The receive pool: a provided buffer ring (io_uring "pbuf ring").
//!
//! Every connection's multishot receive draws from this one ring, so an idle connection holds no
//! receive buffer at all; the kernel picks a buffer only when bytes arrive. The shard hands each
//! buffer back as soon as the protocol core has consumed it (the core never keeps a reference
//! into a receive buffer). The ring and the buffers are anonymous mappings: pages are committed
//! only when first written, so an idle shard's resident memory stays small.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The largest ring the kernel accepts.
pub const BUFFERS_COUNT_MAX: usize = 32_768;

/// An anonymous, page-aligned mapping, unmapped on drop.
struct Mapping {
    address: NonNull<u8>,
    length: usize,
}

impl Mapping {
    fn new(length: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let address = NonNull::new(address.cast()).expect("mmap never returns null on success");
        Ok(Mapping { address, length })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `address` and `length` are exactly what mmap returned and nothing uses the
        // mapping after drop (the owning ring is dropped, and with it the kernel's use, first).
        unsafe { libc::munmap(self.address.as_ptr().cast(), self.length) };
    }
}

/// The provided buffer ring of one shard. Must be dropped after the io_uring it is registered
/// with (the `Shard` declares the ring field first for that reason).
pub struct ReceiveBuffers {
    entries: Mapping,
    memory: Mapping,
    buffer_bytes: usize,
    buffers_count: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    group_id: u16,
    /// Buffers the kernel may fill now.
    buffers_provided: usize,
}

impl ReceiveBuffers {
    /// Maps `buffers_count` buffers of `buffer_bytes`, provides them all and registers the ring
    /// as buffer group `group_id`.
    pub fn new(
        submitter: &io_uring::Submitter<'_>,
        group_id: u16,
        buffers_count: usize,
        buffer_bytes: usize,
    ) -> io::Result<ReceiveBuffers> {
        assert!(buffers_count.is_power_of_two() && buffers_count <= BUFFERS_COUNT_MAX);
        assert!(buffer_bytes > 0 && buffer_bytes <= u32::MAX as usize);
        let entries = Mapping::new(buffers_count * size_of::<BufRingEntry>())?;
        let memory = Mapping::new(buffers_count * buffer_bytes)?;
        let mut buffers = ReceiveBuffers {
            entries,
            memory,
            buffer_bytes,
            buffers_count: buffers_count as u16,
            tail: 0,
            group_id,
            buffers_provided: 0,
        };
        for buffer_id in 0..buffers_count {
            buffers.recycle(buffer_id as u16);
        }
        buffers.publish();
        // SAFETY: the entries mapping is page aligned, holds `buffers_count` entries and lives
        // until after the ring is dropped (see the type's documentation).
        unsafe {
            submitter.register_buf_ring_with_flags(
                buffers.entries.address.as_ptr() as u64,
                buffers_count as u16,
                group_id,
                0,
            )?;
        }
        Ok(buffers)
    }

    pub fn group_id(&self) -> u16 {
        self.group_id
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Buffers the kernel may fill now.
    pub fn buffers_provided(&self) -> usize {
        self.buffers_provided
    }

    /// The first `length` bytes of buffer `buffer_id`, which the kernel just filled.
    ///
    /// # Safety
    /// The caller must have received `buffer_id` in a completion and not yet recycled it: until
    /// then the kernel does not write to it, and the shard holds no other reference to it.
    pub unsafe fn filled(&mut self, buffer_id: u16, length: usize) -> &mut [u8] {
        assert!(buffer_id < self.buffers_count && length <= self.buffer_bytes);
        self.buffers_provided -= 1;
        let start = usize::from(buffer_id) * self.buffer_bytes;
        // SAFETY: the range lies inside the memory mapping (asserted above) and, per the
        // caller's contract, nobody else reads or writes it until `recycle`.
        unsafe { std::slice::from_raw_parts_mut(self.memory.address.as_ptr().add(start), length) }
    }

    /// Gives buffer `buffer_id` back to the kernel (visible after `publish`).
    pub fn recycle(&mut self, buffer_id: u16) {
        let mask = self.buffers_count - 1;
        let index = usize::from(self.tail & mask);
        let address = self.memory.address.as_ptr() as u64
            + (usize::from(buffer_id) * self.buffer_bytes) as u64;
        // SAFETY: `index` < buffers_count, so the entry lies inside the entries mapping; the
        // kernel reads entries only up to the published tail, which does not include this one yet.
        let entry = unsafe {
            &mut *self
                .entries
                .address
                .as_ptr()
                .cast::<BufRingEntry>()
                .add(index)
        };
        entry.set_addr(address);
        entry.set_len(self.buffer_bytes as u32);
        entry.set_bid(buffer_id);
        self.tail = self.tail.wrapping_add(1);
        self.buffers_provided += 1;
    }

    /// Publishes recycled buffers to the kernel with one release store of the tail.
    pub fn publish(&self) {
        let base = self.entries.address.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the first entry's reserved field, inside the mapping;
        // the kernel reads it atomically, so we write it atomically with release ordering so
        // that the entries written before are visible first.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}
