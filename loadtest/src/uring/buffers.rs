//! A provided buffer ring ("pbuf ring"): the pool every multishot receive of a ring draws
//! from, so an idle connection holds no receive buffer; the kernel takes one only when bytes
//! arrive, and the owner hands it back as soon as it has read them.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The largest ring the kernel accepts.
pub const BUFFERS_COUNT_MAX: usize = 32_768;

/// An anonymous private mapping, unmapped on drop. Pages are committed when first written.
struct Mapping {
    address: NonNull<u8>,
    length: usize,
}

impl Mapping {
    fn new(length: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping without an address hint touches no existing
        // memory.
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
        // SAFETY: exactly what mmap returned; the ring that used it is gone (see
        // `ProvidedBuffers`).
        unsafe { libc::munmap(self.address.as_ptr().cast(), self.length) };
    }
}

/// The provided buffers of one ring. Must be dropped after the ring it is registered with:
/// owners declare the ring field first.
pub struct ProvidedBuffers {
    entries: Mapping,
    memory: Mapping,
    buffer_bytes: usize,
    buffers_count: u16,
    /// Our copy of the tail, published to the kernel by `publish`.
    tail: u16,
}

impl ProvidedBuffers {
    /// Maps `buffers_count` buffers of `buffer_bytes`, provides them all and registers them
    /// as buffer group `group_id`.
    pub fn new(
        submitter: &io_uring::Submitter<'_>,
        group_id: u16,
        buffers_count: usize,
        buffer_bytes: usize,
    ) -> io::Result<ProvidedBuffers> {
        assert!(buffers_count.is_power_of_two() && buffers_count <= BUFFERS_COUNT_MAX);
        assert!(buffer_bytes > 0 && buffer_bytes <= u32::MAX as usize);
        let mut buffers = ProvidedBuffers {
            entries: Mapping::new(buffers_count * size_of::<BufRingEntry>())?,
            memory: Mapping::new(buffers_count * buffer_bytes)?,
            buffer_bytes,
            buffers_count: buffers_count as u16,
            tail: 0,
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

    /// The first `length` bytes of buffer `buffer_id`, which the kernel just filled.
    ///
    /// # Safety
    /// `buffer_id` must come from a completion and not have been recycled since: until then
    /// the kernel does not write to it and nothing else refers to it.
    pub unsafe fn filled(&mut self, buffer_id: u16, length: usize) -> &mut [u8] {
        assert!(buffer_id < self.buffers_count && length <= self.buffer_bytes);
        let start = usize::from(buffer_id) * self.buffer_bytes;
        // SAFETY: inside the mapping (asserted above), and exclusively ours until `recycle`
        // per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.memory.address.as_ptr().add(start), length) }
    }

    /// Gives buffer `buffer_id` back to the kernel (visible after `publish`).
    pub fn recycle(&mut self, buffer_id: u16) {
        let index = usize::from(self.tail & (self.buffers_count - 1));
        let address = self.memory.address.as_ptr() as u64
            + (usize::from(buffer_id) * self.buffer_bytes) as u64;
        // SAFETY: `index` < buffers_count, inside the entries mapping; the kernel reads entries
        // only up to the published tail, which does not include this one yet.
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
    }

    /// Publishes recycled buffers to the kernel with one release store of the tail.
    pub fn publish(&self) {
        let base = self.entries.address.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail overlays the first entry's reserved field, inside the mapping; the
        // kernel reads it atomically, so it is written atomically with release ordering, after
        // the entries it makes visible.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}
