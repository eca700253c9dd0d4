//! Receiving: one multishot receive per connection on the provided buffer ring, the bytes of
//! each completion handed to the connection's transport and endpoint, and reading paused (the
//! receive cancelled, so TCP pushes back) while a peer's replies pile up or while its requests
//! cannot be handed on.

use std::io;

use io_uring::{opcode, types};
use tracing::{debug, warn};

use super::connection::{Closing, Flag};
use super::ring::{Completion, Operation, Tag};
use super::{RECEIVE_GROUP_ID, Shard};
use crate::broker::QueueLimits;
use crate::endpoint::Next;
use crate::transport::tls::ReadOutcome;

impl Shard {
    pub(super) fn arm_receive(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        connection.set_flag(Flag::ReceiveArmed, true);
        let generation = connection.generation();
        let entry = opcode::RecvMulti::new(types::Fixed(slot), RECEIVE_GROUP_ID)
            .build()
            .user_data(Tag::new(Operation::Receive, slot, generation).encode());
        // SAFETY: the receive writes only into the provided buffer ring, which the shard owns
        // and unregisters only when the ring itself is gone.
        unsafe { self.ring.push(&entry) }
    }

    pub(super) fn handle_receive(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        let ended = !completion.more();
        if ended {
            self.connection_mut(slot)
                .set_flag(Flag::ReceiveArmed, false);
        }
        let mut parked = false;
        match completion.result {
            length if length > 0 => {
                let Some(buffer_id) = completion.buffer_id() else {
                    unreachable!("a receive with data names its buffer: {completion:?}");
                };
                self.handle_bytes(slot, buffer_id, length as usize)?;
                self.receive_buffers.recycle(buffer_id);
                if !self.context.requests.is_empty() {
                    self.handle_requests(slot)?;
                }
                if !self.context.engine_calls.is_empty() {
                    self.handle_engine_calls(slot)?;
                }
            }
            0 => {
                if self
                    .connection_mut(slot)
                    .transport
                    .tls()
                    .is_some_and(|tls| tls.expects_close_notify())
                {
                    // The TCP end came before close_notify: whatever was in flight may be cut.
                    self.tls_workspace.counters.truncations += 1;
                }
                self.peer_gone(slot);
            }
            error => match -error {
                libc::ENOBUFS => {
                    // Out of receive buffers: park until buffers return (re-arming at once would
                    // spin on ENOBUFS). The bytes wait in the socket meanwhile.
                    self.counters.receive_buffer_shortages += 1;
                    let generation = self.connection_mut(slot).generation();
                    self.parked.push((slot, generation));
                    parked = true;
                }
                // Cancelled to pause reading, or by shutdown: re-armed below if still wanted.
                libc::ECANCELED => {}
                libc::ECONNRESET
                | libc::EPIPE
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENOTCONN => {
                    debug!(errno = -error, "connection lost");
                    self.peer_gone(slot);
                }
                // A signal or no memory for the request: the receive ended without harm; it is
                // re-armed below.
                libc::EINTR | libc::ENOMEM | libc::EAGAIN => {}
                // Nothing else is documented for a receive on a connected TCP socket: treat
                // the connection as lost rather than retry something that cannot work.
                errno => {
                    warn!(errno, "receive failed with an unexpected error");
                    self.peer_gone(slot);
                }
            },
        }
        if ended && !parked && self.wants_receive(slot) {
            self.arm_receive(slot)?;
        }
        self.after_activity(slot)
    }

    /// Whether a connection should have a receive armed and has none.
    pub(super) fn wants_receive(&mut self, slot: u32) -> bool {
        let connection = self.connection_mut(slot);
        !connection.flag(Flag::ReceiveArmed)
            && !connection.flag(Flag::Detached)
            && !connection.flag(Flag::ReadingPaused)
            && !connection.flag(Flag::PublisherPaused)
            && connection.closing == Closing::Open
    }

    fn handle_bytes(&mut self, slot: u32, buffer_id: u16, length: usize) -> io::Result<()> {
        self.counters.bytes_received += length as u64;
        // SAFETY: the kernel just handed us `buffer_id` in this completion and it is recycled
        // only after this call, which keeps no reference into it.
        let input = unsafe { self.receive_buffers.filled(buffer_id, length) };
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("checked by the caller");
        let before = connection.endpoint.kind();
        if connection.closing != Closing::Open && !before.reads_while_closing() {
            // An HTTP connection or stream on its way out reads nothing more (a WebSocket
            // still reads the peer's close frame).
            return Ok(());
        }
        let context = &mut self.context;
        let (endpoint, outbound) = (&mut connection.endpoint, &mut connection.outbound);
        let mut next = Next::Continue;
        let outcome = connection
            .transport
            .handle_read(input, &mut self.tls_workspace, |bytes| {
                // One TLS read can carry several records. Once an HTTP endpoint or stream has
                // decided to close, what follows is not for it (as a plain read after that is
                // never read); a WebSocket reads on through its close handshake.
                if next == Next::Continue || endpoint.kind().reads_while_closing() {
                    next = strongest(next, endpoint.handle_read(bytes, outbound, context));
                }
            });
        let after = connection.endpoint.kind();
        self.track_kind(slot, before, after);
        self.account(slot);
        self.follow(slot, next)?;
        self.follow_transport(slot, outcome)
    }

    /// Acts on what the TLS layer made of a read: the peer's close_notify closes gracefully
    /// (what is queued, then ours); a refused record sends its alert and closes; an abort
    /// shuts down at once.
    fn follow_transport(&mut self, slot: u32, outcome: ReadOutcome) -> io::Result<()> {
        let (now_ms, close_timeout_ms) = (self.context.now_ms, self.config.close_timeout_ms);
        match outcome {
            ReadOutcome::Open => Ok(()),
            ReadOutcome::PeerClosed => {
                self.connection_mut(slot)
                    .close_after_flush(now_ms, close_timeout_ms);
                Ok(())
            }
            ReadOutcome::Refused => {
                let connection = self.connections[slot as usize]
                    .as_mut()
                    .expect("live connection");
                // Nothing more is sealed: only the alert goes out.
                connection
                    .outbound
                    .discard_unsent(&mut self.queue_memory.shared);
                connection.close_after_flush(now_ms, close_timeout_ms);
                Ok(())
            }
            ReadOutcome::Aborted => self.force_shutdown(slot),
        }
    }

    /// The peer closed or reset the connection: nothing more will be read or delivered.
    pub(super) fn peer_gone(&mut self, slot: u32) {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        connection.set_flag(Flag::ReceiveArmed, false);
        connection
            .outbound
            .discard_unsent(&mut self.queue_memory.shared);
        if let Some(tls) = connection.transport.tls_mut() {
            tls.discard_unsent(&mut self.tls_workspace);
        }
        if matches!(connection.closing, Closing::Open | Closing::AfterFlush) {
            connection.closing = Closing::ShutDown;
        }
        self.account(slot);
    }

    /// Pauses reading from a peer whose replies piled up past the queue limits (its receive is
    /// cancelled and the bytes wait in its socket, so TCP pushes back), and resumes once the
    /// queue has drained below half of them.
    pub(super) fn apply_backpressure(&mut self, slot: u32) -> io::Result<()> {
        let limits = QueueLimits {
            bytes_max: self.config.outbound_queue_bytes_max,
            frames_max: self.config.outbound_queue_frames_max,
        };
        let connection = self.connection_mut(slot);
        let over = connection.outbound.is_over(limits);
        if !connection.flag(Flag::ReadingPaused) && over && connection.closing == Closing::Open {
            connection.set_flag(Flag::ReadingPaused, true);
            self.counters.reading_pauses += 1;
            return self.cancel_receive(slot);
        } else if connection.flag(Flag::ReadingPaused)
            && !connection.outbound.is_over(limits.half())
        {
            connection.set_flag(Flag::ReadingPaused, false);
            if self.wants_receive(slot) {
                return self.arm_receive(slot);
            }
        }
        Ok(())
    }

    /// Cancels a connection's armed receive (to pause reading); its completion, ECANCELED,
    /// re-arms nothing while a pause holds.
    fn cancel_receive(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if !connection.flag(Flag::ReceiveArmed) {
            return Ok(());
        }
        let generation = connection.generation();
        let receive = Tag::new(Operation::Receive, slot, generation).encode();
        let entry = opcode::AsyncCancel::new(receive)
            .build()
            .user_data(Tag::new(Operation::CancelReceive, slot, generation).encode());
        // SAFETY: a cancel names a request by its user data and points at no memory.
        unsafe { self.ring.push(&entry) }
    }

    /// Re-arms receives that ran out of buffers, as many as there are buffers to receive into.
    pub(super) fn rearm_parked(&mut self) -> io::Result<()> {
        while self.receive_buffers.buffers_provided() > self.config.receive_buffers_count / 4 {
            let Some((slot, generation)) = self.parked.pop() else {
                return Ok(());
            };
            let live = self.connections[slot as usize]
                .as_ref()
                .is_some_and(|connection| connection.generation() == generation);
            if !live {
                continue;
            }
            if self.connection_mut(slot).closing == Closing::Open {
                if self.wants_receive(slot) {
                    self.arm_receive(slot)?;
                }
            } else {
                self.advance_close(slot)?;
            }
        }
        Ok(())
    }

    /// Pauses reading from a client while the outbox holds commands: its requests would only
    /// pile up here. The bytes wait in its socket, so TCP pushes back on it.
    pub(super) fn pause_publisher(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if connection.flag(Flag::PublisherPaused) || connection.closing != Closing::Open {
            return Ok(());
        }
        connection.set_flag(Flag::PublisherPaused, true);
        let generation = connection.generation();
        self.counters.publisher_pauses += 1;
        self.publishers_paused.push((slot, generation));
        self.cancel_receive(slot)
    }

    pub(super) fn resume_publishers(&mut self) -> io::Result<()> {
        while let Some((slot, generation)) = self.publishers_paused.pop() {
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            if connection.generation() != generation {
                continue;
            }
            connection.set_flag(Flag::PublisherPaused, false);
            if self.wants_receive(slot) {
                self.arm_receive(slot)?;
            }
        }
        Ok(())
    }
}

/// The stronger of two endpoint requests: shutting down now over closing after a flush over
/// going on.
fn strongest(first: Next, second: Next) -> Next {
    let rank = |next: Next| match next {
        Next::Continue => 0,
        Next::CloseAfterFlush => 1,
        Next::ShutDownNow => 2,
    };
    if rank(second) > rank(first) {
        second
    } else {
        first
    }
}
