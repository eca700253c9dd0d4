//! One connection as the shard driver sees it: the endpoint that speaks its protocol, the
//! transport under it, the queue of bytes to send, and where its ring operations and close
//! sequence stand.
//!
//! Nothing here touches the ring: the shard reads these fields to decide which operations to
//! submit, and updates them from their completions.

use crate::endpoint::outbound::{Outbound, QueueMemory, Reported};
use crate::endpoint::{Endpoint, EndpointKind, Next};
use crate::transport::Transport;

/// Where a connection's close sequence stands. Sockets are shut down before their descriptor is
/// closed: an armed multishot receive otherwise keeps the socket open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    Open,
    /// Send what is queued, then shut down.
    AfterFlush,
    /// `shutdown` submitted.
    ShuttingDown,
    /// Shut down (or the peer is gone); close once the receive and any send have completed.
    ShutDown,
    /// `close` submitted; the slot is freed on its completion.
    Closing,
}

/// One connection of a shard.
#[derive(Debug)]
pub struct Connection {
    generation: u16,
    pub(super) endpoint: Endpoint,
    pub(super) transport: Transport,
    pub(super) outbound: Outbound,
    pub(super) closing: Closing,
    /// When the close sequence must be over (set when it starts).
    pub(super) close_deadline_ms: u64,
    /// The deadline last mirrored into the shard's timer wheel.
    pub(super) scheduled_ms: u64,
    pub(super) receive_armed: bool,
    /// Reading is paused because replies to this peer piled up past the queue limits.
    pub(super) reading_paused: bool,
    /// Reading is paused because this publisher's shard cannot hand its publishes on (another
    /// shard's mailbox is full); resumed when the outbox empties.
    pub(super) publisher_paused: bool,
    /// Queued in the shard's list of connections with something to send.
    pub(super) send_listed: bool,
    /// Queued in the shard's list of TLS connections waiting for a ciphertext buffer.
    pub(super) tls_waiting: bool,
    /// Queued in the shard's list of connections owed something at the end of the turn.
    pub(super) turn_listed: bool,
    /// What the queue last reported to the shard's queue memory.
    pub(super) reported: Reported,
    /// When the queue last made progress: bytes sent, or frames queued to an empty queue. A
    /// queue with frames and no progress for `send_stall_timeout_ms` closes the connection.
    pub(super) send_progress_ms: u64,
    /// The connection was closed for a stalled queue (the stall deadline no longer applies).
    pub(super) stall_closed: bool,
    /// Bytes waited to be sent (frames, or a TLS connection's ciphertext) when the shard last
    /// accounted for the connection: the stall clock starts when they appear. A TLS handshake
    /// flight is unsent bytes with no frame queued, so the queue's report alone misses it.
    pub(super) unsent: bool,
    /// The kind it was first a client of the broker as (`connection.opened` recorded then, if a
    /// webhook wants it); `None` while it is plain HTTP.
    pub(super) announced: Option<EndpointKind>,
    /// An Engine.IO long-polling session: a client of the broker with no socket (in a slot
    /// beyond the connection table), whose queue the connections carrying it take
    /// (`shard::sessions`). No ring operation ever names its slot.
    pub(super) detached: bool,
}

impl Connection {
    pub fn new(generation: u16, endpoint: Endpoint) -> Connection {
        Connection {
            generation,
            endpoint,
            transport: Transport::Plain,
            outbound: Outbound::default(),
            closing: Closing::Open,
            close_deadline_ms: 0,
            scheduled_ms: u64::MAX,
            receive_armed: false,
            reading_paused: false,
            publisher_paused: false,
            send_listed: false,
            tls_waiting: false,
            turn_listed: false,
            reported: Reported::default(),
            send_progress_ms: 0,
            stall_closed: false,
            unsent: false,
            announced: None,
            detached: false,
        }
    }

    pub fn generation(&self) -> u16 {
        self.generation
    }

    /// Whether messages may be queued to this connection: its endpoint takes them and it has
    /// not started closing.
    pub fn takes_messages(&self) -> bool {
        self.closing == Closing::Open && self.endpoint.takes_messages()
    }

    /// The one deadline the shard's timer wheel holds for this connection: the endpoint's (or
    /// the queue's stall deadline, if sooner) while open, the close sequence's while it flushes,
    /// and none (`u64::MAX`) once the socket is being shut down: what remains is waiting for the
    /// kernel's completions.
    pub fn deadline_ms(&self, send_stall_timeout_ms: u64) -> u64 {
        match self.closing {
            Closing::Open => self
                .endpoint
                .deadline_ms()
                .min(self.stall_deadline_ms(send_stall_timeout_ms)),
            Closing::AfterFlush => self.close_deadline_ms,
            Closing::ShuttingDown | Closing::ShutDown | Closing::Closing => u64::MAX,
        }
    }

    /// When a queue that makes no progress counts as stalled; `u64::MAX` when nothing waits.
    pub fn stall_deadline_ms(&self, send_stall_timeout_ms: u64) -> u64 {
        // A session's queue waits for its next poll; the heartbeat ends a session not polled.
        match !self.has_unsent() || self.stall_closed || self.detached {
            true => u64::MAX,
            false => self.send_progress_ms.saturating_add(send_stall_timeout_ms),
        }
    }

    /// Whether a send should be submitted now: something to send, and no send in flight. For
    /// TLS, ciphertext waiting, or plaintext queued that may be sealed.
    pub fn has_sendable(&self) -> bool {
        if self.detached {
            return false;
        }
        match self.transport.tls() {
            None => self.outbound.is_sendable(),
            Some(tls) => {
                !tls.send_in_flight()
                    && (tls.has_sendable() || (tls.can_seal() && !self.outbound.is_empty()))
            }
        }
    }

    /// Whether everything queued has gone out (or never can: a TLS connection that cannot seal
    /// any more), with no send in flight: the close sequence may go on.
    pub fn is_flushed(&self) -> bool {
        match self.transport.tls() {
            None => self.outbound.is_idle(),
            Some(tls) => !tls.has_unsent() && (self.outbound.is_empty() || !tls.can_seal()),
        }
    }

    /// Whether a send is in flight (the kernel reads the connection's memory).
    pub fn send_in_flight(&self) -> bool {
        match self.transport.tls() {
            None => self.outbound.in_flight(),
            Some(tls) => tls.send_in_flight(),
        }
    }

    /// Whether bytes wait to be sent: queued frames, or ciphertext.
    pub fn has_unsent(&self) -> bool {
        !self.outbound.is_empty() || self.transport.tls().is_some_and(|tls| tls.has_unsent())
    }

    /// Brings the shard's queue memory up to date with this connection's queue (and what its
    /// transport holds for it), and starts the stall clock when the queue stops being empty.
    pub fn account(&mut self, memory: &mut QueueMemory, now_ms: u64) {
        let transport_bytes = self.transport.held_bytes();
        memory.sync_with_transport(&self.outbound, transport_bytes, &mut self.reported);
        let had_unsent = self.unsent;
        self.unsent = self.has_unsent();
        if !had_unsent && self.unsent {
            self.send_progress_ms = now_ms;
        }
    }

    /// Acts on what an endpoint asked for. Returns whether the socket must be shut down now.
    pub fn follow(&mut self, next: Next, now_ms: u64, close_timeout_ms: u64) -> bool {
        match next {
            Next::Continue => false,
            Next::CloseAfterFlush => {
                self.close_after_flush(now_ms, close_timeout_ms);
                false
            }
            Next::ShutDownNow => true,
        }
    }

    /// Starts closing: send what is queued, then shut down, within the close timeout.
    pub fn close_after_flush(&mut self, now_ms: u64, close_timeout_ms: u64) {
        if self.closing == Closing::Open {
            self.closing = Closing::AfterFlush;
            self.close_deadline_ms = now_ms + close_timeout_ms;
        }
    }
}
