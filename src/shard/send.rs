//! Sending: every connection with something queued gets one send per turn, all of them reaching
//! the kernel in the same enter. One frame goes out with a plain `send`; several are gathered
//! into one `sendmsg` whose `msghdr` and iovecs live in a send slot until the completion.

use std::io;
use std::num::NonZeroU32;

use io_uring::{opcode, types};
use tracing::warn;

use super::Shard;
use super::clients::{list_for_send, shard_clients};
use super::connection::{Closing, Flag};
use super::ring::{Completion, Operation, Tag};
use crate::protocol::prefetch::PREFETCH_DISTANCE;
use crate::transport::tls::Sealed;

/// Gathered sends in flight at once per shard; a connection beyond it sends one frame at a time.
const SEND_SLOTS_MAX: usize = 1024;

/// A `msghdr` and its iovecs, kept still while a gathered send is in flight.
struct SendSlot {
    header: libc::msghdr,
    iovecs: Vec<libc::iovec>,
}

/// The shard's send slots: which are free, and which one each connection's send uses.
///
/// Slots are made on first demand, up to `SEND_SLOTS_MAX`, as the pool's buffers are: made all
/// at start-up they wrote about 1.1 MB a shard (a kilobyte of iovecs each), 70 MB of an idle
/// 64-shard server, for gathered sends that only a busy shard has in flight at once.
pub(super) struct SendSlots {
    /// Within the capacity reserved at start-up, so a slot never moves while the kernel reads
    /// its `msghdr`.
    slots: Vec<SendSlot>,
    free: Vec<u32>,
    iovecs_max: usize,
    /// The slot of each connection's send in flight, plus one; `None` for none (all zeros, so
    /// the table is not written until used).
    slot_of: Vec<Option<NonZeroU32>>,
}

impl SendSlots {
    pub(super) fn new(connections_max: usize, iovecs_max: usize) -> SendSlots {
        SendSlots {
            slots: Vec::with_capacity(SEND_SLOTS_MAX),
            free: Vec::with_capacity(SEND_SLOTS_MAX),
            iovecs_max,
            slot_of: vec![None; connections_max],
        }
    }

    /// A free slot, made now if none is and fewer than `SEND_SLOTS_MAX` exist.
    fn acquire(&mut self) -> Option<u32> {
        if let Some(send_slot) = self.free.pop() {
            return Some(send_slot);
        }
        if self.slots.len() == SEND_SLOTS_MAX {
            return None;
        }
        self.slots.push(new_send_slot(self.iovecs_max));
        Some(self.slots.len() as u32 - 1)
    }

    /// Frees the slot connection `slot`'s finished send used, if it used one.
    fn release(&mut self, slot: u32) {
        if let Some(send_slot) = self.slot_of[slot as usize].take() {
            self.free.push(send_slot.get() - 1);
        }
    }
}

impl Shard {
    pub(super) fn handle_send(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        self.sends.release(slot);
        let now_ms = self.context.now_ms;
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        match completion.result {
            sent if sent >= 0 => {
                match connection.transport.tls_mut() {
                    None => connection
                        .outbound
                        .complete(sent as usize, &mut self.queue_memory.shared),
                    Some(tls) => {
                        tls.complete_send(sent as usize, &mut self.tls_workspace);
                        // A ciphertext buffer may have come back: those that found none try
                        // again.
                        for (waiting, generation) in self.tls_send_waiting.drain(..) {
                            let Some(other) = self.connections[waiting as usize].as_mut() else {
                                continue;
                            };
                            if other.generation() == generation {
                                other.set_flag(Flag::TlsWaiting, false);
                                list_for_send(other, waiting, &mut self.send_list);
                            }
                        }
                    }
                }
                let connection = self.connections[slot as usize]
                    .as_mut()
                    .expect("live connection");
                if sent > 0 {
                    connection.send_progress_ms = now_ms;
                }
                self.counters.bytes_sent += sent as u64;
                self.account(slot);
                let mut clients = shard_clients!(self);
                self.fanout.handle_sent(slot, &mut clients);
                self.after_broker()?;
            }
            error => {
                connection.outbound.abandon();
                if let Some(tls) = connection.transport.tls_mut() {
                    tls.abandon_send();
                }
                match -error {
                    // The peer is gone, or the send was cancelled by a shutdown.
                    libc::EPIPE
                    | libc::ECONNRESET
                    | libc::ECANCELED
                    | libc::ETIMEDOUT
                    | libc::ENOTCONN
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH => {}
                    // Nothing else is documented for a send on a connected TCP socket (it is
                    // blocking under io_uring, so no EAGAIN): the connection cannot go on.
                    errno => warn!(errno, "send failed with an unexpected error"),
                }
                self.peer_gone(slot);
            }
        }
        self.after_activity(slot)
    }

    /// Submits one send for every listed connection: all of them reach the kernel in the next
    /// enter together.
    pub(super) fn flush_sends(&mut self) -> io::Result<()> {
        let mut index = 0;
        while index < self.send_list.len() {
            let slot = self.send_list[index];
            if let Some(&ahead) = self.send_list.get(index + PREFETCH_DISTANCE) {
                self.connections.prefetch(ahead as usize);
            }
            index += 1;
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            connection.set_flag(Flag::SendListed, false);
            if connection.flag(Flag::Detached) {
                self.flush_session(slot)?;
                continue;
            }
            if connection.has_sendable() && connection.closing != Closing::Closing {
                match connection.transport.tls().is_some() {
                    false => self.submit_send(slot)?,
                    true => self.submit_tls_send(slot)?,
                }
            }
        }
        self.send_list.clear();
        Ok(())
    }

    fn submit_send(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("listed connections are live");
        debug_assert!(connection.transport.sends_queued_bytes());
        let tag = Tag::new(Operation::Send, slot, connection.generation()).encode();
        // One frame goes out with a plain send: sendmsg's extra work measured 2.3% of an echo
        // shard's time (flamegraphs/README.md). Several frames are gathered into one sendmsg.
        let gather = connection.outbound.frame_count() > 1;
        let send_slot = if gather { self.sends.acquire() } else { None };
        let entry = match send_slot {
            Some(send_slot) => {
                let gathered = &mut self.sends.slots[send_slot as usize];
                let count = connection.outbound.gather(&mut gathered.iovecs);
                gathered.header.msg_iov = gathered.iovecs.as_mut_ptr();
                gathered.header.msg_iovlen = count;
                self.sends.slot_of[slot as usize] = NonZeroU32::new(send_slot + 1);
                opcode::SendMsg::new(types::Fixed(slot), &gathered.header)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
            None => {
                let front = connection.outbound.front();
                opcode::Send::new(types::Fixed(slot), front.as_ptr(), front.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
        };
        // SAFETY: the frames sent stay in the connection's queue (marked in flight, so nothing
        // drops them) and the send slot stays reserved for it until this send's completion; a
        // connection is freed only after its sends completed (`advance_close` waits for them).
        unsafe { self.ring.push(&entry.user_data(tag)) }
    }
}

impl Shard {
    /// Seals what a TLS connection has queued (as much as one buffer holds) and sends the
    /// ciphertext with a plain send: the records are already one contiguous run.
    fn submit_tls_send(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("listed connections are live");
        let generation = connection.generation();
        let connection_waiting = connection.flag(Flag::TlsWaiting);
        let tls = connection.transport.tls_mut().expect("a TLS connection");
        let outbound = &mut connection.outbound;
        let shared = &mut self.queue_memory.shared;
        let queued_bytes = outbound.queued_bytes();
        let sealed = tls.seal(&mut self.tls_workspace, queued_bytes, |out| {
            outbound.take_front(out, shared)
        });
        let (mut failed, mut newly_waiting) = (false, false);
        match sealed {
            Sealed::Ready => {}
            // Every ciphertext buffer is lent out: the next send completion brings one back.
            Sealed::NoBuffer if !connection_waiting => {
                self.tls_send_waiting.push((slot, generation));
                newly_waiting = true;
            }
            Sealed::NoBuffer => {}
            Sealed::Failed => failed = true,
        }
        if let Some(ciphertext) = tls.start_send() {
            let tag = Tag::new(Operation::Send, slot, generation).encode();
            let length = ciphertext.len() as u32;
            let entry = opcode::Send::new(types::Fixed(slot), ciphertext.as_ptr(), length)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(tag);
            // SAFETY: the ciphertext stays in the connection's pooled buffer, which does not
            // move or go back to the pool while the send is in flight (`start_send` marks it,
            // and only `complete_send` or `abandon_send` at the completion clear the mark); a
            // connection is freed only after its sends completed (`advance_close` waits).
            unsafe { self.ring.push(&entry)? };
        }
        if newly_waiting {
            self.connection_mut(slot).set_flag(Flag::TlsWaiting, true);
        }
        self.account(slot);
        if failed {
            // The keys are used up (TLS 1.2 at its limit) or sealing failed: end it here.
            return self.force_shutdown(slot);
        }
        Ok(())
    }
}

fn new_send_slot(iovecs_max: usize) -> SendSlot {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid (empty) value.
    let header: libc::msghdr = unsafe { std::mem::zeroed() };
    let iovecs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        iovecs_max
    ];
    SendSlot { header, iovecs }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves send slots are made on first demand up to `SEND_SLOTS_MAX`, reused once freed,
    /// and never moved (the kernel reads a slot's `msghdr` while its send is in flight).
    #[test]
    fn send_slots_are_made_on_demand_and_reused() {
        let mut sends = SendSlots::new(SEND_SLOTS_MAX + 8, 4);
        assert!(sends.slots.is_empty());
        let first = sends.acquire().expect("a slot");
        let address = &sends.slots[first as usize].header as *const libc::msghdr;
        sends.slot_of[7] = NonZeroU32::new(first + 1);
        for connection in 0..SEND_SLOTS_MAX as u32 - 1 {
            let send_slot = sends.acquire().expect("below the maximum");
            sends.slot_of[connection as usize + 8] = NonZeroU32::new(send_slot + 1);
        }
        assert_eq!(sends.slots.len(), SEND_SLOTS_MAX);
        assert_eq!(sends.acquire(), None, "every slot is in flight");
        assert_eq!(&sends.slots[first as usize].header as *const _, address);
        sends.release(7);
        sends.release(7);
        assert_eq!(sends.acquire(), Some(first), "freed once, reused");
        assert_eq!(sends.acquire(), None);
    }
}
