//! A connection's queue of encoded bytes to send (frames, responses), the send in flight, and
//! what the queue costs in memory.
//!
//! A message encoded once sits in many connections' queues as the same shared `Bytes`, so its
//! bytes are real memory once per shard, not once per queue. The [`SharedFrames`] ledger counts
//! them once: each shared frame is registered when its first queue takes it and released when
//! the last one sends or drops it. A queue's own cost ([`Outbound::charge_bytes`]) is what it
//! alone holds: its exclusive frames (replies, echoes, responses) and its bookkeeping (the
//! capacity of its entry array). The shard's memory is the ledger's total plus the sum of the
//! charges; its budget is checked against that.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::broker::Message;
use crate::broker::QueueLimits as Limits;
use crate::broker::message_pool::SharedBuffer;

/// An entry not registered in the ledger: its bytes belong to this queue alone.
const NOT_SHARED: u32 = u32::MAX;

/// A queue whose entry array grew past this many entries gives the memory back once it drains,
/// so that a burst (or an attacker's stalled queue) does not keep it for good; below it the
/// array stays, so that an ordinary reader allocates nothing per delivery.
const ENTRIES_KEPT_MAX: usize = 256;

/// Why the outbound queue refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A frame to send: bytes of one queue's own (a reply, an echo, a response), a delivered
/// message framed for WebSocket, which is the message's own buffer (no copy), or a pooled
/// buffer (a message framed for SSE or NDJSON, an SSE event id, a poll's answer).
#[derive(Clone, Debug)]
pub enum Frame {
    Bytes(Bytes),
    Message(Message),
    Shared(SharedBuffer),
}

impl Frame {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Frame::Bytes(bytes) => bytes,
            Frame::Message(message) => message.websocket_frame(),
            Frame::Shared(buffer) => buffer,
        }
    }

    /// The memory the frame holds: a pooled buffer's whole capacity, a message's buffer, or
    /// the bytes themselves (a share of the shard's encoder arena).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Frame::Bytes(bytes) => bytes.len(),
            Frame::Message(message) => message.memory_bytes(),
            Frame::Shared(buffer) => buffer.memory_bytes(),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Frame {
        Frame::Bytes(bytes)
    }
}

impl From<SharedBuffer> for Frame {
    fn from(buffer: SharedBuffer) -> Frame {
        Frame::Shared(buffer)
    }
}

/// One queued frame, and its entry in the ledger if it is shared.
#[derive(Debug)]
struct Entry {
    frame: Frame,
    shared: u32,
}

/// The bytes of memory one queue entry takes (the entry array's element).
pub const ENTRY_BYTES: usize = size_of::<Entry>();

/// The frames shared by several queues of one shard, each counted once: registered by the
/// first queue that takes it, released when the last one lets it go.
#[derive(Debug, Default)]
pub struct SharedFrames {
    /// Per registered frame: the queues holding it, its bytes, and how many frames the slot has
    /// stood for (so that a stale reference to a released slot is recognised).
    holders: Vec<u32>,
    frame_bytes: Vec<u32>,
    generations: Vec<u32>,
    free: Vec<u32>,
    bytes_total: u64,
}

impl SharedFrames {
    /// Registers a frame of `bytes` that a queue is about to take; returns its slot and the
    /// slot's generation.
    pub fn register(&mut self, bytes: usize) -> (u32, u32) {
        let bytes = bytes.min(u32::MAX as usize) as u32;
        self.bytes_total += u64::from(bytes);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.holders[slot as usize] = 0;
                self.frame_bytes[slot as usize] = bytes;
                self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
                slot
            }
            None => {
                self.holders.push(0);
                self.frame_bytes.push(bytes);
                self.generations.push(0);
                (self.holders.len() - 1) as u32
            }
        };
        (slot, self.generations[slot as usize])
    }

    /// Whether `slot` still stands for the frame it was registered for as `generation`: some
    /// queue holds it and it was not released and registered again since.
    pub fn is_current(&self, slot: u32, generation: u32) -> bool {
        self.holders[slot as usize] > 0 && self.generations[slot as usize] == generation
    }

    /// The bytes of every frame some queue holds, each counted once.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// Frames registered and still held.
    pub fn frame_count(&self) -> usize {
        self.holders.len() - self.free.len()
    }

    fn hold(&mut self, slot: u32) {
        self.holders[slot as usize] += 1;
    }

    fn release(&mut self, slot: u32) {
        let holders = &mut self.holders[slot as usize];
        assert!(*holders > 0, "a shared frame released more often than held");
        *holders -= 1;
        if *holders == 0 {
            self.bytes_total -= u64::from(self.frame_bytes[slot as usize]);
            self.free.push(slot);
        }
    }
}

/// What one queue last reported to its shard's [`QueueMemory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    charge_bytes: usize,
    queued_bytes: usize,
    nonempty: bool,
}

impl Reported {
    /// Whether the queue held anything when it last reported.
    pub fn nonempty(&self) -> bool {
        self.nonempty
    }
}

/// What all of a shard's queues hold in memory, each shared frame once, and how many queues
/// hold anything.
#[derive(Debug, Default)]
pub struct QueueMemory {
    pub shared: SharedFrames,
    charges_bytes: u64,
    /// Bytes waiting to be sent over all queues (a shared frame once per queue): how far
    /// behind the shard's clients are, not what it costs.
    queued_bytes: u64,
    nonempty_queues: u32,
}

impl QueueMemory {
    /// The bytes every queue of the shard holds: shared frames once, plus each queue's charge.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes_total() + self.charges_bytes
    }

    /// Bytes waiting to be sent, summed over the queues.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Queues holding at least one frame.
    pub fn nonempty_queues(&self) -> u32 {
        self.nonempty_queues
    }

    /// Takes a queue that goes away (its connection is freed) out of the totals: what it last
    /// reported counts no more.
    pub fn forget(&mut self, reported: &mut Reported) {
        self.charges_bytes -= reported.charge_bytes as u64;
        self.queued_bytes -= reported.queued_bytes as u64;
        if reported.nonempty {
            self.nonempty_queues -= 1;
        }
        *reported = Reported::default();
    }

    /// Brings the totals up to date with `outbound`, whose last report is `reported`.
    pub fn sync(&mut self, outbound: &Outbound, reported: &mut Reported) {
        self.sync_with_transport(outbound, 0, reported);
    }

    /// [`QueueMemory::sync`] for a queue whose connection also holds `transport_bytes` for it
    /// alone (a TLS connection's ciphertext and the record it is assembling): memory charged
    /// to the connection like its exclusive frames.
    pub fn sync_with_transport(
        &mut self,
        outbound: &Outbound,
        transport_bytes: usize,
        reported: &mut Reported,
    ) {
        let now = Reported {
            charge_bytes: outbound.charge_bytes() + transport_bytes,
            queued_bytes: outbound.queued_bytes(),
            nonempty: !outbound.is_empty(),
        };
        if now == *reported {
            return;
        }
        self.charges_bytes =
            self.charges_bytes + now.charge_bytes as u64 - reported.charge_bytes as u64;
        self.queued_bytes =
            self.queued_bytes + now.queued_bytes as u64 - reported.queued_bytes as u64;
        match (reported.nonempty, now.nonempty) {
            (false, true) => self.nonempty_queues += 1,
            (true, false) => self.nonempty_queues -= 1,
            _ => {}
        }
        *reported = now;
    }
}

/// The frames waiting to be sent, and the send in flight.
#[derive(Debug, Default)]
pub struct Outbound {
    frames: VecDeque<Entry>,
    /// Bytes still to send (the front frame's sent part excluded).
    queued_bytes: usize,
    /// Memory of the exclusive frames queued: what this queue alone holds.
    exclusive_bytes: usize,
    /// Bytes of the front frame already sent (a partial send).
    front_offset: usize,
    /// Frames (from the front) that the send in flight carries; 0 when no send is in flight.
    frames_in_flight: usize,
}

impl Outbound {
    /// Queues an exclusive data frame within `limits`. An empty queue takes any frame, so a
    /// message larger than the byte limit still goes out when the peer keeps up.
    pub fn push(&mut self, frame: impl Into<Frame>, limits: Limits) -> Result<(), QueueFull> {
        let frame = frame.into();
        if !self.has_room(frame.len(), limits) {
            return Err(QueueFull);
        }
        self.push_control(frame);
        Ok(())
    }

    /// Queues a frame of the shared ledger's `slot` within `limits` (see [`Outbound::push`]).
    pub fn push_shared(
        &mut self,
        frame: Frame,
        slot: u32,
        shared: &mut SharedFrames,
        limits: Limits,
    ) -> Result<(), QueueFull> {
        if !self.has_room(frame.len(), limits) {
            return Err(QueueFull);
        }
        self.push_shared_always(frame, slot, shared);
        Ok(())
    }

    /// Queues a shared frame whatever the queue holds (a replay, a conflated message released).
    pub fn push_shared_always(&mut self, frame: Frame, slot: u32, shared: &mut SharedFrames) {
        shared.hold(slot);
        self.queued_bytes += frame.len();
        self.push_entry(Entry {
            frame,
            shared: slot,
        });
    }

    /// Queues a control frame, reply or HTTP response, exclusive to this queue. Never refused:
    /// pongs and closes are not dropped.
    pub fn push_control(&mut self, frame: impl Into<Frame>) {
        let frame = frame.into();
        self.queued_bytes += frame.len();
        self.exclusive_bytes += frame.memory_bytes();
        self.push_entry(Entry {
            frame,
            shared: NOT_SHARED,
        });
    }

    /// Up to four entries the array grows one at a time: most connections never hold more
    /// than one or two frames at once (the 101, a pong, a reply, a tick to an idle
    /// subscriber), and the array's first growth would otherwise make four (192 bytes kept
    /// for the connection's life, a fifth of an idle connection's memory). Past four it grows
    /// as usual; it keeps what it grew to, so a busy queue stops allocating after warm-up.
    fn push_entry(&mut self, entry: Entry) {
        if self.frames.len() == self.frames.capacity() && self.frames.capacity() < 4 {
            self.frames.reserve_exact(1);
        }
        self.frames.push_back(entry);
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Something queued and no send in flight.
    pub fn is_sendable(&self) -> bool {
        !self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Whether nothing is queued (a send may still be completing).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames queued, including those of the send in flight.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn in_flight(&self) -> bool {
        self.frames_in_flight > 0
    }

    /// Bytes still to send.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The memory this queue alone holds: its exclusive frames and its entry array. Shared
    /// frames are the ledger's.
    pub fn charge_bytes(&self) -> usize {
        self.exclusive_bytes + self.frames.capacity() * ENTRY_BYTES
    }

    /// Whether the queue holds more than `limits` allow.
    pub fn is_over(&self, limits: Limits) -> bool {
        self.queued_bytes > limits.bytes_max || self.frames.len() > limits.frames_max
    }

    /// Drops queued frames that are not part of the send in flight (the peer is gone).
    pub fn discard_unsent(&mut self, shared: &mut SharedFrames) {
        while self.frames.len() > self.frames_in_flight {
            let entry = self.frames.pop_back().expect("len checked");
            // The front frame's sent part was already taken off `queued_bytes`.
            let sent = if self.frames.is_empty() {
                std::mem::take(&mut self.front_offset)
            } else {
                0
            };
            self.queued_bytes -= entry.frame.len() - sent;
            self.let_go(&entry, shared);
        }
        self.give_back_memory();
    }

    /// Describes up to `iovecs.len()` queued frames for one gathered send and marks it in
    /// flight. Returns how many iovecs were filled.
    pub fn gather(&mut self, iovecs: &mut [libc::iovec]) -> usize {
        assert!(self.frames_in_flight == 0 && !self.frames.is_empty());
        let mut count = 0;
        for (index, entry) in self.frames.iter().take(iovecs.len()).enumerate() {
            let skip = if index == 0 { self.front_offset } else { 0 };
            let unsent = &entry.frame.as_slice()[skip..];
            iovecs[index] = libc::iovec {
                iov_base: unsent.as_ptr() as *mut libc::c_void,
                iov_len: unsent.len(),
            };
            count += 1;
        }
        self.frames_in_flight = count;
        count
    }

    /// The front frame's unsent bytes, for a single-frame send; marks it in flight.
    pub fn front(&mut self) -> &[u8] {
        assert!(self.frames_in_flight == 0);
        self.frames_in_flight = 1;
        &self.frames.front().expect("sendable").frame.as_slice()[self.front_offset..]
    }

    /// Accounts a completed send of `sent_bytes`.
    pub fn complete(&mut self, mut sent_bytes: usize, shared: &mut SharedFrames) {
        assert!(self.frames_in_flight > 0);
        self.frames_in_flight = 0;
        while sent_bytes > 0 {
            let front = self.frames.front().expect("sent bytes were queued");
            let front_left = front.frame.len() - self.front_offset;
            if sent_bytes < front_left {
                self.front_offset += sent_bytes;
                self.queued_bytes -= sent_bytes;
                return;
            }
            sent_bytes -= front_left;
            self.queued_bytes -= front_left;
            self.front_offset = 0;
            let entry = self.frames.pop_front().expect("checked");
            self.let_go(&entry, shared);
        }
        self.give_back_memory();
    }

    /// Copies queued bytes from the front into `out` (as many as fit) and takes them off the
    /// queue as sent: for a transport that sends its own copy (TLS seals them into records).
    /// Returns how many bytes were copied. Not while a send of the queue itself is in flight.
    pub fn take_front(&mut self, out: &mut [u8], shared: &mut SharedFrames) -> usize {
        assert!(
            self.frames_in_flight == 0,
            "the queue's own send is in flight"
        );
        let mut copied = 0;
        while copied < out.len() {
            let Some(front) = self.frames.front() else {
                break;
            };
            let unsent = &front.frame.as_slice()[self.front_offset..];
            let count = unsent.len().min(out.len() - copied);
            out[copied..copied + count].copy_from_slice(&unsent[..count]);
            copied += count;
            self.queued_bytes -= count;
            if count < unsent.len() {
                self.front_offset += count;
                break;
            }
            self.front_offset = 0;
            let entry = self.frames.pop_front().expect("checked");
            self.let_go(&entry, shared);
        }
        self.give_back_memory();
        copied
    }

    /// Takes every queued frame off the queue, handing each whole to `each`: the queue of an
    /// Engine.IO session, which is never sent itself but by whichever connection carries the
    /// session, in its own framing. Never while a send of the queue is in flight.
    pub fn drain_frames(&mut self, shared: &mut SharedFrames, mut each: impl FnMut(&[u8])) {
        assert!(
            self.frames_in_flight == 0 && self.front_offset == 0,
            "a session's queue is never sent itself"
        );
        while let Some(entry) = self.frames.pop_front() {
            each(entry.frame.as_slice());
            self.queued_bytes -= entry.frame.len();
            self.let_go(&entry, shared);
        }
        self.give_back_memory();
    }

    /// Ends the send in flight without progress (it failed).
    pub fn abandon(&mut self) {
        self.frames_in_flight = 0;
    }

    /// Whether a frame of `frame_bytes` fits within `limits` (an empty queue takes any frame).
    pub fn has_room(&self, frame_bytes: usize, limits: Limits) -> bool {
        let over = self.queued_bytes + frame_bytes > limits.bytes_max
            || self.frames.len() >= limits.frames_max;
        !over || self.frames.is_empty()
    }

    fn let_go(&mut self, entry: &Entry, shared: &mut SharedFrames) {
        match entry.shared {
            NOT_SHARED => self.exclusive_bytes -= entry.frame.memory_bytes(),
            slot => shared.release(slot),
        }
    }

    /// Frees a drained entry array that grew large.
    fn give_back_memory(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > ENTRIES_KEPT_MAX {
            self.frames = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Limits = Limits {
        bytes_max: 1 << 20,
        frames_max: 1 << 10,
    };

    /// Proves discarding after a partial send takes off only the unsent bytes of the front
    /// frame (its sent part was already counted out), so the byte count cannot underflow.
    #[test]
    fn discard_after_a_partial_send_keeps_the_count() {
        let mut shared = SharedFrames::default();
        let mut outbound = Outbound::default();
        outbound.push_control(Bytes::from_static(b"0123456789"));
        outbound.push_control(Bytes::from_static(b"abc"));
        assert_eq!(outbound.front().len(), 10);
        outbound.complete(4, &mut shared);
        assert_eq!(outbound.queued_bytes(), 9);
        outbound.discard_unsent(&mut shared);
        assert_eq!(outbound.queued_bytes(), 0);
        assert!(outbound.is_idle());
        outbound.push_control(Bytes::from_static(b"xy"));
        assert_eq!(
            outbound.front(),
            b"xy",
            "a new frame starts at its first byte"
        );
    }

    /// Proves a frame shared by many queues is counted once in the ledger, charged to no queue,
    /// and released when the last queue sends or drops it; exclusive frames are charged to
    /// their queue.
    #[test]
    fn shared_frames_are_counted_once() {
        let mut shared = SharedFrames::default();
        let frame = Bytes::from(vec![7u8; 1000]);
        let (slot, _) = shared.register(frame.len());
        let mut queues: Vec<Outbound> = (0..300).map(|_| Outbound::default()).collect();
        for queue in &mut queues {
            queue
                .push_shared(Frame::from(frame.clone()), slot, &mut shared, ROOMY)
                .unwrap();
        }
        assert_eq!(shared.bytes_total(), 1000);
        let entries_bytes = queues[0].charge_bytes();
        assert_eq!(
            entries_bytes, ENTRY_BYTES,
            "a queue is charged its entry, not the frame"
        );
        queues[0].push_control(Bytes::from(vec![1u8; 500]));
        // The frame's bytes, and the entry array as it grew (one entry at a time up to four).
        assert_eq!(queues[0].frames.capacity(), 2);
        assert_eq!(queues[0].charge_bytes(), 2 * ENTRY_BYTES + 500);
        for queue in &mut queues[..299] {
            queue.front();
            queue.complete(1000, &mut shared);
        }
        assert_eq!(shared.bytes_total(), 1000, "one queue still holds it");
        queues[299].discard_unsent(&mut shared);
        assert_eq!((shared.bytes_total(), shared.frame_count()), (0, 0));
    }

    /// Proves taking bytes from the front copies them in order across frames, stops inside a
    /// frame and resumes there, and releases shared frames once taken whole.
    #[test]
    fn take_front_copies_in_order_and_releases() {
        let mut shared = SharedFrames::default();
        let frame = Bytes::from_static(b"shared-frame");
        let (slot, _) = shared.register(frame.len());
        let mut outbound = Outbound::default();
        outbound.push_control(Bytes::from_static(b"0123"));
        outbound.push_shared_always(frame.into(), slot, &mut shared);
        let mut out = [0u8; 7];
        assert_eq!(outbound.take_front(&mut out, &mut shared), 7);
        assert_eq!(&out, b"0123sha");
        assert_eq!(outbound.queued_bytes(), 9);
        assert_eq!(
            shared.frame_count(),
            1,
            "a frame partly taken is still held"
        );
        let mut rest = [0u8; 32];
        assert_eq!(outbound.take_front(&mut rest, &mut shared), 9);
        assert_eq!(&rest[..9], b"red-frame");
        assert!(outbound.is_idle());
        assert_eq!((shared.bytes_total(), shared.frame_count()), (0, 0));
        assert_eq!(
            outbound.charge_bytes() % ENTRY_BYTES,
            0,
            "only the entry array is left to charge"
        );
    }

    /// Proves a queue that grew large gives its entry array back once drained.
    #[test]
    fn a_drained_large_queue_gives_memory_back() {
        let mut shared = SharedFrames::default();
        let mut outbound = Outbound::default();
        for _ in 0..1000 {
            outbound.push_control(Bytes::from_static(b"x"));
        }
        assert!(outbound.charge_bytes() >= 1000 * ENTRY_BYTES);
        let mut iovecs = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            1024
        ];
        outbound.gather(&mut iovecs);
        outbound.complete(1000, &mut shared);
        assert_eq!(outbound.charge_bytes(), 0);
    }
}
