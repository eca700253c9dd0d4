//! The shard's accepts, and opening a connection.
//!
//! While the connection table has a free slot, a multishot accept puts each connection into a
//! direct descriptor. Once the table is full that accept is cancelled and a second one takes
//! over: a plain multishot accept into a process descriptor, whose connections are answered
//! [`REFUSAL_RESPONSE`] (503 with `Retry-After`) and closed, so that a client learns at once
//! that the server is full instead of waiting in the listen backlog until it times out. As soon
//! as a slot frees, the direct accept comes back. [`Shard::sync_accepts`] keeps exactly the one
//! the table calls for armed.
//!
//! A refusal is a send of a static response and then a close, one after the other (the close
//! is pushed only when the send has completed, so the descriptor cannot be reused under it).
//! At most [`REFUSALS_IN_FLIGHT_MAX`] are answered at once; a connection beyond them is closed
//! at once, unanswered. Each kind is counted in `connections_refused`.
//!
//! With a TLS listener (`tls_listen`), the shard runs the same pair of accepts on it: its
//! connections start their handshake at once, and while the table is full they are closed
//! unanswered (a plain-text 503 means nothing to a TLS client, and an alert needs a handshake).

use std::io;

use io_uring::{opcode, types};
use tracing::{debug, warn};

use super::connection::{Closing, Connection};
use super::ring::{Completion, Operation, Tag};
use super::{LISTENER_SLOT, Shard, TLS_LISTENER_SLOT};
use crate::endpoint::Endpoint;
use crate::transport::Transport;

/// Refusals answered at once: each holds one process descriptor (and a send, then a close, in
/// flight) for a few microseconds. 64 keeps a shard's share of the process's descriptors small
/// (64 shards × 64 is 4,096, well under common limits) while a burst of clients past the limit
/// still hears why; beyond it they are closed at once, unanswered.
pub(super) const REFUSALS_IN_FLIGHT_MAX: usize = 64;

/// The answer to a connection that finds the table full. A static, so the kernel may read it
/// while the send is in flight; `refusal_response_is_well_formed` checks its length field.
pub(super) const REFUSAL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Retry-After: 1\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 44\r\n\
    Connection: close\r\n\
    \r\n\
    server at its connection limit, retry later\n";

/// One multishot accept's state: armed until its final completion, and whether a cancel of it
/// was pushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AcceptArm {
    armed: bool,
    cancelling: bool,
}

/// Which accept a state change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptKind {
    /// Into direct descriptors, while the table has room.
    Direct,
    /// Into process descriptors, to answer 503 while the table is full.
    Refusing,
    /// The TLS listener's, into direct descriptors.
    TlsDirect,
    /// The TLS listener's, into process descriptors closed at once while the table is full.
    TlsRefusing,
}

/// The shard's accepts (two per listener) and the refusals in flight.
#[derive(Debug, Default)]
pub(super) struct Accepts {
    direct: AcceptArm,
    refusing: AcceptArm,
    tls_direct: AcceptArm,
    tls_refusing: AcceptArm,
    /// Refusals whose 503 or following close is in flight (at most REFUSALS_IN_FLIGHT_MAX).
    pub(super) refusals_in_flight: usize,
    /// Unanswered closes in flight: at most the completions of one turn, each completing at
    /// the next submit (closing a socket never waits).
    pub(super) closes_in_flight: usize,
    /// The refusing accept failed for want of process descriptors; it is armed again once a
    /// refusal or a connection of this shard frees one. Until then, clients wait in the backlog.
    refusing_paused: bool,
}

impl Accepts {
    fn arm(&mut self, kind: AcceptKind) -> &mut AcceptArm {
        match kind {
            AcceptKind::Direct => &mut self.direct,
            AcceptKind::Refusing => &mut self.refusing,
            AcceptKind::TlsDirect => &mut self.tls_direct,
            AcceptKind::TlsRefusing => &mut self.tls_refusing,
        }
    }

    /// Whether a refusal's send or close is still in flight (the shard waits for them to exit).
    pub(super) fn in_flight(&self) -> bool {
        self.refusals_in_flight > 0 || self.closes_in_flight > 0
    }
}

impl AcceptKind {
    fn operation(self) -> Operation {
        match self {
            Self::Direct => Operation::Accept,
            Self::Refusing => Operation::RefusingAccept,
            Self::TlsDirect => Operation::TlsAccept,
            Self::TlsRefusing => Operation::TlsRefusingAccept,
        }
    }

    fn listener_slot(self) -> u32 {
        match self {
            Self::Direct | Self::Refusing => LISTENER_SLOT,
            Self::TlsDirect | Self::TlsRefusing => TLS_LISTENER_SLOT,
        }
    }

    fn is_direct(self) -> bool {
        matches!(self, Self::Direct | Self::TlsDirect)
    }
}

impl Shard {
    /// Arms or cancels the two accepts so that the one the table calls for runs: the direct
    /// accept while a slot is free, the refusing one while the table is full, neither once the
    /// shard stops accepting. Run after every change of the table or of an accept.
    pub(super) fn sync_accepts(&mut self) -> io::Result<()> {
        let table_full = self.connection_count >= self.config.connections_per_shard_max;
        let refusing_wanted = self.accepting && table_full && !self.accepts.refusing_paused;
        if refusing_wanted && !self.accepts.refusing.armed {
            self.log_table_full();
        }
        self.sync_accept(AcceptKind::Direct, self.accepting && !table_full)?;
        self.sync_accept(AcceptKind::Refusing, refusing_wanted)?;
        if self.tls_config.is_some() {
            self.sync_accept(AcceptKind::TlsDirect, self.accepting && !table_full)?;
            self.sync_accept(AcceptKind::TlsRefusing, refusing_wanted)?;
        }
        Ok(())
    }

    fn sync_accept(&mut self, kind: AcceptKind, wanted: bool) -> io::Result<()> {
        let tag = Tag::new(kind.operation(), 0, 0).encode();
        let arm = self.accepts.arm(kind);
        let entry = match (wanted, arm.armed, arm.cancelling) {
            (true, false, _) => {
                *arm = AcceptArm {
                    armed: true,
                    cancelling: false,
                };
                let accept = opcode::AcceptMulti::new(types::Fixed(kind.listener_slot()));
                match kind.is_direct() {
                    true => accept.allocate_file_index(true),
                    false => accept.flags(libc::SOCK_CLOEXEC),
                }
                .build()
                .user_data(tag)
            }
            // Its final completion (ECANCELED) clears `armed`; the next sync looks again.
            (false, true, false) => {
                arm.cancelling = true;
                opcode::AsyncCancel::new(tag)
                    .build()
                    .user_data(Tag::new(Operation::CancelAccept, 0, 0).encode())
            }
            _ => return Ok(()),
        };
        // SAFETY: an accept names the listener's registered slot and points at no memory of
        // ours (a multishot accept takes no address buffer); a cancel names a request by its
        // user data and points at no memory.
        unsafe { self.ring.push(&entry) }
    }

    /// A slot of the table was freed: a descriptor is free again, and the direct accept may
    /// come back.
    pub(super) fn connection_freed(&mut self) -> io::Result<()> {
        self.accepts.refusing_paused = false;
        self.sync_accepts()
    }

    /// A connection accepted into the table, on the plain listener or (`tls`) the TLS one.
    pub(super) fn handle_accept(&mut self, completion: Completion, tls: bool) -> io::Result<()> {
        if !completion.more() {
            *self.accepts.arm(match tls {
                false => AcceptKind::Direct,
                true => AcceptKind::TlsDirect,
            }) = AcceptArm::default();
        }
        match completion.result {
            slot if slot >= 0 => self.open_connection(slot as u32, tls)?,
            error => match -error {
                // The table filled before the refusing accept took over: the kernel dropped
                // this connection and ended the accept. Counted; the sync below switches over.
                libc::ENFILE => self.counters.accept_table_full += 1,
                // Cancelled: the table is full, or the shard is shutting down.
                libc::ECANCELED => {}
                errno => log_accept_error(errno),
            },
        }
        self.sync_accepts()
    }

    /// A connection accepted while the table is full: answer it 503 and close it (a TLS one is
    /// closed at once).
    pub(super) fn handle_refusing_accept(
        &mut self,
        completion: Completion,
        tls: bool,
    ) -> io::Result<()> {
        if !completion.more() {
            *self.accepts.arm(match tls {
                false => AcceptKind::Refusing,
                true => AcceptKind::TlsRefusing,
            }) = AcceptArm::default();
        }
        match completion.result {
            descriptor if descriptor >= 0 => self.refuse(descriptor, tls)?,
            error => match -error {
                // No process descriptor left (this process, or the system): the connection
                // stays in the backlog, and accepting again would fail the same way at once.
                libc::EMFILE | libc::ENFILE => {
                    self.accepts.refusing_paused = true;
                    warn!(
                        errno = -error,
                        refusals_in_flight = self.accepts.refusals_in_flight,
                        "no descriptor to answer 503 with: clients wait until one frees"
                    );
                }
                libc::ECANCELED => {}
                errno => log_accept_error(errno),
            },
        }
        self.sync_accepts()
    }

    /// Sends the 503 on `descriptor`, or closes it at once when enough refusals are in flight
    /// or the client speaks TLS.
    fn refuse(&mut self, descriptor: i32, tls: bool) -> io::Result<()> {
        let slot = descriptor as u32;
        let entry = if !tls && self.accepts.refusals_in_flight < REFUSALS_IN_FLIGHT_MAX {
            self.accepts.refusals_in_flight += 1;
            let length = REFUSAL_RESPONSE.len() as u32;
            opcode::Send::new(types::Fd(descriptor), REFUSAL_RESPONSE.as_ptr(), length)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(Tag::new(Operation::RefusalSend, slot, 0).encode())
        } else {
            self.accepts.closes_in_flight += 1;
            self.counters.refusals_unanswered += 1;
            opcode::Close::new(types::Fd(descriptor))
                .build()
                .user_data(Tag::new(Operation::RefusalClose, slot, 0).encode())
        };
        // SAFETY: the response is a static, valid for the whole program. The descriptor was
        // just accepted and is owned by this refusal alone: it is closed only by the close
        // pushed after this send completes (or by this close), so no operation ever names a
        // descriptor number the process has reused for something else.
        unsafe { self.ring.push(&entry) }
    }

    /// The 503 went out (or the peer was gone): close the descriptor.
    pub(super) fn handle_refusal_send(
        &mut self,
        tag: Tag,
        completion: Completion,
    ) -> io::Result<()> {
        match completion.result {
            sent if sent as usize == REFUSAL_RESPONSE.len() => {
                self.counters.refusals_answered += 1;
            }
            // A fresh socket's send buffer holds the whole response; a short send or an error
            // (EPIPE, ECONNRESET: the client left first) means it was not answered.
            result => {
                debug!(result, "a 503 refusal was not sent whole");
                self.counters.refusals_unanswered += 1;
            }
        }
        let entry = opcode::Close::new(types::Fd(tag.slot as i32))
            .build()
            .user_data(Tag::new(Operation::RefusalClose, tag.slot, 1).encode());
        // SAFETY: the descriptor is the refusal's own and still open (see `refuse`); a close
        // points at no memory.
        unsafe { self.ring.push(&entry) }
    }

    /// A refusal's descriptor is closed: one more may be answered, and a paused refusing
    /// accept may go on.
    pub(super) fn handle_refusal_close(
        &mut self,
        tag: Tag,
        completion: Completion,
    ) -> io::Result<()> {
        // The descriptor is released even when close reports an error (Linux close(2)).
        if completion.result < 0 {
            warn!(
                errno = -completion.result,
                "closing a refused connection failed"
            );
        }
        // Generation 1 marks the close after a send, 0 a close at once (see `refuse`).
        match tag.generation {
            1 => self.accepts.refusals_in_flight -= 1,
            _ => self.accepts.closes_in_flight -= 1,
        }
        self.accepts.refusing_paused = false;
        self.sync_accepts()
    }

    fn log_table_full(&mut self) {
        let interval = self.config.log_interval_ms;
        if self
            .last_table_full_log_ms
            .is_none_or(|last| self.context.now_ms >= last + interval)
        {
            self.last_table_full_log_ms = Some(self.context.now_ms);
            warn!(
                connections = self.connection_count,
                connections_per_shard_max = self.config.connections_per_shard_max,
                refused_total = self.counters.refusals_answered + self.counters.refusals_unanswered,
                "connection table full: answering new connections 503 until slots free"
            );
        }
    }

    fn open_connection(&mut self, slot: u32, tls: bool) -> io::Result<()> {
        let index = slot as usize;
        assert!(
            self.connections[index].is_none(),
            "kernel reused a slot we still hold"
        );
        self.generations[index] = self.generations[index].wrapping_add(1);
        let generation = self.generations[index];
        let endpoint = Endpoint::new(self.context.now_ms, &self.context.settings);
        let mut connection = Connection::new(generation, endpoint);
        if let (true, Some(config)) = (tls, &self.tls_config) {
            match Transport::new_tls(config) {
                Ok(transport) => {
                    connection.transport = transport;
                    self.tls_connections += 1;
                }
                // rustls refuses only a configuration without protocol versions, which
                // start-up never builds: close this connection rather than serve it plain.
                Err(error) => {
                    warn!(%error, "a TLS connection could not start");
                    connection.closing = Closing::ShutDown;
                }
            }
        }
        self.connections[index] = Some(connection);
        self.fanout.open_client(slot, generation);
        self.connection_count += 1;
        self.counters.connections_accepted += 1;
        self.sync_deadline(slot);
        if self.connection_mut(slot).closing != Closing::Open {
            return self.advance_close(slot);
        }
        if self.drain_deadline_ms.is_some() {
            let (now_ms, close_timeout_ms) = (self.context.now_ms, self.config.close_timeout_ms);
            self.connection_mut(slot)
                .close_after_flush(now_ms, close_timeout_ms);
            self.sync_deadline(slot);
            return self.advance_close(slot);
        }
        self.arm_receive(slot)
    }
}

/// Errors of the connection being accepted (reset before accept, a protocol error, out of
/// memory for its socket, the process's limits): logged, and accepting goes on; the multishot
/// accept usually stays armed, and the sync after it re-arms it if not.
fn log_accept_error(errno: i32) {
    match errno {
        libc::ECONNABORTED
        | libc::EPROTO
        | libc::EPERM
        | libc::ENOMEM
        | libc::ENOBUFS
        | libc::EMFILE
        | libc::EINTR
        | libc::EAGAIN => warn!(errno, "accept failed"),
        // Nothing else is documented for accept on a listening TCP socket; keep accepting
        // rather than end the shard over it.
        errno => warn!(errno, "accept failed with an unexpected error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the static refusal is one whole HTTP/1.1 503 with Retry-After, Connection: close
    /// and a Content-Length that matches its body.
    #[test]
    fn refusal_response_is_well_formed() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_bytes) = response.parse(REFUSAL_RESPONSE).unwrap()
        else {
            panic!("incomplete head");
        };
        assert_eq!(response.code, Some(503));
        assert_eq!(response.reason, Some("Service Unavailable"));
        let header = |name: &str| {
            let found = response.headers.iter().find(|header| header.name == name);
            std::str::from_utf8(found.unwrap().value).unwrap()
        };
        assert_eq!(header("Retry-After"), "1");
        assert_eq!(header("Connection"), "close");
        let body_bytes = REFUSAL_RESPONSE.len() - head_bytes;
        assert_eq!(header("Content-Length"), body_bytes.to_string());
    }
}
