//! Deadlines and the close sequence: each connection's one timer, and the walk from open to
//! freed (flush what is queued, shut the socket down, wait for its operations, close the
//! descriptor, free the slot).

use std::io;

use io_uring::{opcode, types};
use tracing::{debug, warn};

use super::Shard;
use super::clients::list_for_send;
use super::connection::{Closing, Flag};
use super::ring::{Completion, Operation, Tag};
use crate::broker::event::CloseReason;
use crate::broker::{Event, EventKind};
use crate::endpoint::{EndpointKind, Next};
use crate::protocol::CloseCode;

impl Shard {
    /// After a connection's state changed: list it for sending, mirror its deadline, apply read
    /// backpressure, and walk its close sequence.
    pub(super) fn after_activity(&mut self, slot: u32) -> io::Result<()> {
        self.account(slot);
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        list_for_send(connection, slot, &mut self.send_list);
        self.sync_deadline(slot);
        self.apply_backpressure(slot)?;
        self.advance_close(slot)
    }

    /// Acts on what a connection's endpoint asked for.
    pub(super) fn follow(&mut self, slot: u32, next: Next) -> io::Result<()> {
        let (now_ms, close_timeout_ms) = (self.context.now_ms, self.config.close_timeout_ms);
        if self
            .connection_mut(slot)
            .follow(next, now_ms, close_timeout_ms)
        {
            self.force_shutdown(slot)?;
        }
        Ok(())
    }

    /// Starts a server-side close of a connection (shutdown, policy).
    pub(super) fn close_connection(
        &mut self,
        slot: u32,
        code: CloseCode,
        reason: &'static str,
    ) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        let before = connection.endpoint.kind();
        let next =
            connection
                .endpoint
                .close(code, reason, &mut connection.outbound, &mut self.context);
        let after = connection.endpoint.kind();
        self.track_kind(slot, before, after);
        self.follow(slot, next)?;
        self.after_activity(slot)
    }

    pub(super) fn sync_deadline(&mut self, slot: u32) {
        let send_stall_timeout_ms = self.config.send_stall_timeout_ms;
        let connection = self.connection_mut(slot);
        let deadline_ms = connection.deadline_ms(send_stall_timeout_ms);
        if connection.scheduled_ms != deadline_ms {
            connection.scheduled_ms = deadline_ms;
            match deadline_ms {
                u64::MAX => self.timers.cancel(slot),
                _ => self.timers.schedule(slot, deadline_ms),
            }
        }
    }

    pub(super) fn fire_deadlines(&mut self) -> io::Result<()> {
        self.expired.clear();
        self.timers.expire(self.context.now_ms, &mut self.expired);
        for index in 0..self.expired.len() {
            let slot = self.expired[index];
            self.fire_deadline(slot)?;
        }
        Ok(())
    }

    /// Acts on the deadline of the connection in `slot`, which is due.
    pub(super) fn fire_deadline(&mut self, slot: u32) -> io::Result<()> {
        let before = self.connection_mut(slot).endpoint.kind();
        let next = self.handle_deadline(slot);
        let after = self.connection_mut(slot).endpoint.kind();
        self.track_kind(slot, before, after);
        self.follow(slot, next)?;
        if !self.context.requests.is_empty() {
            // A poll answered at its deadline ends its subscriptions.
            self.handle_requests(slot)?;
        }
        self.after_activity(slot)
    }

    /// A connection's one timer fired: a stalled queue, the endpoint's deadline, or the close
    /// sequence's.
    fn handle_deadline(&mut self, slot: u32) -> Next {
        let (now_ms, stall_ms) = (self.context.now_ms, self.config.send_stall_timeout_ms);
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("timers of freed slots are cancelled");
        // The wheel no longer holds this connection: whatever the deadline is now, it is
        // scheduled again by `after_activity`.
        connection.scheduled_ms = u64::MAX;
        if connection.closing != Closing::Open {
            // The close sequence did not end in time: shut down regardless.
            self.context.counters.close_timeouts += 1;
            return Next::ShutDownNow;
        }
        if now_ms >= connection.stall_deadline_ms(stall_ms) {
            // Frames wait and none went out for `send_stall_timeout_ms`, pings answered or not:
            // the peer does not read. Its queue is not held for it any longer.
            self.counters.send_stalls += 1;
            connection.set_flag(Flag::StallClosed, true);
            debug!("send stalled: closing with 1008");
            return connection.endpoint.close(
                CloseCode::POLICY_VIOLATION,
                "send stalled",
                &mut connection.outbound,
                &mut self.context,
            );
        }
        if now_ms >= connection.endpoint.deadline_ms() {
            // The request head's deadline counts from the connection's start, so it covers the
            // TLS handshake too; a handshake not done by then is cut without an answer (a 408
            // cannot be sealed without keys).
            if connection
                .transport
                .tls()
                .is_some_and(|tls| tls.is_handshaking())
            {
                self.tls_workspace.counters.handshake_timeouts += 1;
                return Next::ShutDownNow;
            }
            return connection
                .endpoint
                .handle_deadline(&mut connection.outbound, &mut self.context);
        }
        Next::Continue
    }

    /// Takes the next step of the close sequence once its conditions hold. A TLS connection
    /// sends close_notify after the last of what it queued (and after the WebSocket close
    /// handshake, which is part of that), before its socket is shut down.
    pub(super) fn advance_close(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        if connection.flag(Flag::Detached) {
            // A session has no socket: once it closes, what it queued goes to its carrier and
            // the slot is freed at once.
            return match connection.closing {
                // `Closing` while `end_session` runs: what it calls may come back here.
                Closing::Open | Closing::Closing => Ok(()),
                Closing::AfterFlush | Closing::ShuttingDown | Closing::ShutDown => {
                    self.end_session(slot)
                }
            };
        }
        if connection.closing == Closing::AfterFlush
            && connection.is_flushed()
            && let Some(tls) = connection.transport.tls_mut()
            && tls.owes_close_notify()
        {
            tls.queue_close_notify(&mut self.tls_workspace);
            list_for_send(connection, slot, &mut self.send_list);
            self.account(slot);
            return Ok(());
        }
        let connection = self.connection_mut(slot);
        let generation = connection.generation();
        let entry = match connection.closing {
            Closing::AfterFlush if connection.is_flushed() => {
                connection.closing = Closing::ShuttingDown;
                opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                    .build()
                    .user_data(Tag::new(Operation::Shutdown, slot, generation).encode())
            }
            Closing::ShutDown
                if !connection.flag(Flag::ReceiveArmed) && !connection.send_in_flight() =>
            {
                connection.closing = Closing::Closing;
                opcode::Close::new(types::Fixed(slot))
                    .build()
                    .user_data(Tag::new(Operation::Close, slot, generation).encode())
            }
            _ => return Ok(()),
        };
        // SAFETY: shutdown and close name a direct descriptor and point at no memory.
        unsafe { self.ring.push(&entry) }
    }

    /// Shuts a connection down regardless of what is still queued (a close that timed out, a
    /// TLS connection that cannot go on).
    pub(super) fn force_shutdown(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        if !matches!(connection.closing, Closing::Open | Closing::AfterFlush) {
            return Ok(());
        }
        if connection.flag(Flag::Detached) {
            // Freed by `advance_close`, which the caller's `after_activity` reaches.
            connection.closing = Closing::AfterFlush;
            return Ok(());
        }
        connection
            .outbound
            .discard_unsent(&mut self.queue_memory.shared);
        if let Some(tls) = connection.transport.tls_mut() {
            tls.discard_unsent(&mut self.tls_workspace);
        }
        connection.closing = Closing::ShuttingDown;
        let generation = connection.generation();
        let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(Tag::new(Operation::Shutdown, slot, generation).encode());
        // SAFETY: a shutdown names a direct descriptor and points at no memory.
        unsafe { self.ring.push(&entry) }
    }

    pub(super) fn handle_shutdown(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        match completion.result {
            0 => {}
            // The peer already reset the connection: the socket is done either way.
            error if -error == libc::ENOTCONN => {}
            // Nothing else is expected of a shutdown on a connected socket; the socket is
            // closed next regardless.
            error => debug!(errno = -error, "shutdown failed"),
        }
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        connection.closing = Closing::ShutDown;
        connection
            .outbound
            .discard_unsent(&mut self.queue_memory.shared);
        if let Some(tls) = connection.transport.tls_mut() {
            tls.discard_unsent(&mut self.tls_workspace);
        }
        self.account(slot);
        // A parked connection has no receive armed; one still armed ends with EOF now.
        self.advance_close(slot)
    }

    /// Records `connection.opened` for the connection in `slot`, which just became a client of
    /// the broker as `kind`, unless it was announced before (a connection holding one poll
    /// after another is opened once).
    pub(super) fn announce_opened(&mut self, slot: u32, kind: EndpointKind) {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        if connection.announced.is_some() || !self.fanout.wants_event(EventKind::ConnectionOpened) {
            // Without the opened event, the closed one is not recorded either: a webhook
            // wanting only closes is not told of connections it could not have seen open.
            connection.announced = connection.announced.or(Some(kind));
            return;
        }
        connection.announced = Some(kind);
        let event = Event::ConnectionOpened {
            connection: self.fanout.connection_id(slot),
            transport: kind.name(),
            subject: None, // The authenticated subject, once authentication exists.
        };
        self.fanout.record_event(event);
    }

    /// Records `connection.closed` for a connection being freed that was a client of the broker,
    /// after the ends of its subscriptions (`close_client` recorded them): a WebSocket with the
    /// code and reason it closed with, a stream or poll with none.
    fn record_closed(&mut self, slot: u32) {
        if !self.fanout.wants_event(EventKind::ConnectionClosed) {
            return;
        }
        let connection = self.connections[slot as usize]
            .as_ref()
            .expect("live connection");
        let Some(kind) = connection.announced else {
            return; // Plain HTTP all along: not a client of the broker.
        };
        let (code, reason) = match connection.endpoint.close_record() {
            Some((code, reason)) => (Some(code), reason),
            None => (None, CloseReason::Static("")),
        };
        let event = Event::ConnectionClosed {
            connection: self.fanout.connection_id(slot),
            transport: kind.name(),
            code,
            reason,
            subject: None, // The authenticated subject, once authentication exists.
        };
        self.fanout.record_event(event);
    }

    pub(super) fn handle_close(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        if completion.result < 0 {
            // The slot is freed by the kernel even when the close itself reports an error.
            warn!(errno = -completion.result, "closing a connection failed");
        }
        self.free_connection(slot)
    }

    pub(super) fn free_connection(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_ref()
            .expect("live connection");
        let detached = connection.flag(Flag::Detached);
        if let Some(session) = connection.endpoint.carried_session() {
            let carrier = self.client_ref(slot);
            self.carry(
                session,
                carrier,
                crate::broker::command::CarrierRequest::Gone,
            )?;
        }
        self.fanout.close_client(slot);
        self.record_closed(slot);
        // Every operation of the connection has completed: nothing is in flight, and whatever
        // is still queued is let go.
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        connection.outbound.abandon();
        connection
            .outbound
            .discard_unsent(&mut self.queue_memory.shared);
        if let Some(tls) = connection.transport.tls_mut() {
            tls.release(&mut self.tls_workspace);
            self.tls_connections -= 1;
        }
        let mut connection = self.connections[slot as usize]
            .take()
            .expect("live connection");
        // Its entry array (kept when small) goes with it: it counts no more.
        self.queue_memory.forget(&mut connection.reported);
        connection.endpoint.release_buffers(&mut self.context.pool);
        self.count_kind(connection.endpoint.kind(), EndpointKind::Http);
        self.timers.cancel(slot);
        if detached {
            self.sessions.release(slot);
            self.context.engine_sessions.closed(slot);
            return self.after_broker();
        }
        let ticket = std::mem::take(&mut self.address_tickets[slot as usize]);
        self.address_limits.release(ticket, self.context.unix_ms());
        self.connection_count -= 1;
        self.counters.connections_closed += 1;
        self.after_broker()?;
        self.connection_freed()
    }
}
