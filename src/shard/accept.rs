//! The shard's accepts, and opening a connection.
//!
//! While the connection table has a free slot, accepts put each connection into a
//! direct descriptor. Once the table is full that accept is cancelled and a second one takes
//! over: a plain multishot accept into a process descriptor, whose connections are answered
//! [`REFUSAL_RESPONSE`] (503 with `Retry-After`) and closed, so that a client learns at once
//! that the server is full instead of waiting in the listen backlog until it times out. As soon
//! as a slot frees, the direct accept comes back. [`Shard::sync_accepts`] keeps exactly the one
//! the table calls for armed.
//!
//! The direct accept is [`ADDRESSED_ACCEPTS`] single-shot accepts rather than one multishot,
//! each with its own address buffer: per-address limits need the peer's address, a multishot
//! accept writes every address into one buffer (only the last would be left to read by the time
//! a batch of completions is handled), `getpeername` needs a process descriptor and a direct
//! descriptor is none, and the ring's `getsockname`/`getpeername` command is not in this
//! kernel (6.18). Re-arming one accept per connection costs one submission entry, nothing next
//! to the handshake. An address over its limit (`connections_per_ip_max`,
//! `handshakes_per_ip_per_second`) gets [`TOO_MANY_RESPONSE`] (429) and is closed.
//!
//! A refusal is a send of a static response and then a close, one after the other (the close
//! is pushed only when the send has completed, so the descriptor cannot be reused under it).
//! At most [`REFUSALS_IN_FLIGHT_MAX`] are answered at once; a connection beyond them is closed
//! at once, unanswered. Each kind is counted in `connections_refused`.
//!
//! With a TLS listener (`tls_listen`), the shard runs the same accepts on it: addressed ones
//! while the table has room, whose connections start their handshake at once, and a refusing
//! one while the table is full, whose connections are closed unanswered (a plain-text 503 means
//! nothing to a TLS client, and an alert needs a handshake). The per-address limits apply to
//! TLS connections too, counted against the same address as plain ones; one over them is closed
//! at once for the same reason, counted like a 429.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use io_uring::{opcode, types};
use tracing::{debug, warn};

use super::connection::{Closing, Connection};
use super::ring::{Completion, Operation, Tag};
use super::{LISTENER_SLOT, Shard, TLS_LISTENER_SLOT};
use crate::auth::AddressAdmission;
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

/// Single-shot accepts into direct descriptors kept armed at once, each with its own address
/// buffer. Eight take a burst of connections between two turns of the loop as fast as one
/// multishot did; the listen backlog holds the rest meanwhile.
pub(super) const ADDRESSED_ACCEPTS: usize = 8;

/// The answer to a connection whose source address is over its limits. A static, like the 503.
pub(super) const TOO_MANY_RESPONSE: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
    Retry-After: 1\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 45\r\n\
    Connection: close\r\n\
    \r\n\
    too many connections from this address, wait\n";

/// Where one addressed accept's peer address is written; boxed so that it does not move while
/// the kernel holds the pointer.
#[derive(Clone, Copy)]
struct AddressBuffer {
    storage: libc::sockaddr_storage,
    length: libc::socklen_t,
}

impl std::fmt::Debug for AddressBuffer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AddressBuffer")
    }
}

impl AddressBuffer {
    fn empty() -> AddressBuffer {
        // SAFETY: sockaddr_storage is plain bytes; all zeroes is a valid (AF_UNSPEC) value.
        let storage = unsafe { std::mem::zeroed() };
        AddressBuffer {
            storage,
            length: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The IP address the kernel wrote, if it is one.
    fn address(&self) -> Option<IpAddr> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in, which it is large
                // and aligned enough for.
                let v4 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let v6 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// The addressed accepts: which are armed, and whether a cancel of them is under way.
#[derive(Debug)]
pub(super) struct AddressedAccepts {
    buffers: Box<[AddressBuffer; ADDRESSED_ACCEPTS]>,
    armed: [bool; ADDRESSED_ACCEPTS],
    cancelling: bool,
}

impl Default for AddressedAccepts {
    fn default() -> Self {
        AddressedAccepts {
            buffers: Box::new([AddressBuffer::empty(); ADDRESSED_ACCEPTS]),
            armed: [false; ADDRESSED_ACCEPTS],
            cancelling: false,
        }
    }
}

/// One multishot accept's state: armed until its final completion, and whether a cancel of it
/// was pushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AcceptArm {
    armed: bool,
    cancelling: bool,
}

/// Which listener an accept is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Listener {
    Plain,
    Tls,
}

impl Listener {
    fn slot(self) -> u32 {
        match self {
            Listener::Plain => LISTENER_SLOT,
            Listener::Tls => TLS_LISTENER_SLOT,
        }
    }

    fn accept_operation(self) -> Operation {
        match self {
            Listener::Plain => Operation::Accept,
            Listener::Tls => Operation::TlsAccept,
        }
    }

    fn refusing_operation(self) -> Operation {
        match self {
            Listener::Plain => Operation::RefusingAccept,
            Listener::Tls => Operation::TlsRefusingAccept,
        }
    }
}

/// The shard's accepts (addressed ones and a refusing one per listener) and the refusals in
/// flight.
#[derive(Debug, Default)]
pub(super) struct Accepts {
    direct: AddressedAccepts,
    refusing: AcceptArm,
    tls_direct: AddressedAccepts,
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
    fn direct(&mut self, listener: Listener) -> &mut AddressedAccepts {
        match listener {
            Listener::Plain => &mut self.direct,
            Listener::Tls => &mut self.tls_direct,
        }
    }

    fn refusing(&mut self, listener: Listener) -> &mut AcceptArm {
        match listener {
            Listener::Plain => &mut self.refusing,
            Listener::Tls => &mut self.tls_refusing,
        }
    }

    /// Whether a refusal's send or close is still in flight (the shard waits for them to exit).
    pub(super) fn in_flight(&self) -> bool {
        self.refusals_in_flight > 0 || self.closes_in_flight > 0
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
        let direct_wanted = self.accepting && !table_full;
        self.sync_addressed_accepts(Listener::Plain, direct_wanted)?;
        self.sync_refusing_accept(Listener::Plain, refusing_wanted)?;
        if self.tls_config.is_some() {
            self.sync_addressed_accepts(Listener::Tls, direct_wanted)?;
            self.sync_refusing_accept(Listener::Tls, refusing_wanted)?;
        }
        Ok(())
    }

    /// Arms every addressed accept of `listener` not armed, or cancels the armed ones.
    fn sync_addressed_accepts(&mut self, listener: Listener, wanted: bool) -> io::Result<()> {
        if self.accepts.direct(listener).cancelling {
            return Ok(()); // Their final completions come first; the next sync looks again.
        }
        for index in 0..ADDRESSED_ACCEPTS {
            let tag = Tag::new(listener.accept_operation(), index as u32, 0).encode();
            let direct = self.accepts.direct(listener);
            let entry = match (wanted, direct.armed[index]) {
                (true, false) => {
                    direct.armed[index] = true;
                    let buffer = &mut direct.buffers[index];
                    *buffer = AddressBuffer::empty();
                    let address = &mut buffer.storage as *mut _ as *mut libc::sockaddr;
                    let listener_slot = types::Fixed(listener.slot());
                    opcode::Accept::new(listener_slot, address, &mut buffer.length)
                        .file_index(Some(types::DestinationSlot::auto_target()))
                        .build()
                        .user_data(tag)
                }
                (false, true) => {
                    direct.cancelling = true;
                    opcode::AsyncCancel::new(tag)
                        .build()
                        .user_data(Tag::new(Operation::CancelAccept, 0, 0).encode())
                }
                _ => continue,
            };
            // SAFETY: an accept names the listener's registered slot and the address buffer of
            // its index, boxed in `Accepts` (which the shard drops after the ring) and written
            // again only once this accept's completion came; a cancel points at no memory.
            unsafe { self.ring.push(&entry)? }
        }
        Ok(())
    }

    fn sync_refusing_accept(&mut self, listener: Listener, wanted: bool) -> io::Result<()> {
        let tag = Tag::new(listener.refusing_operation(), 0, 0).encode();
        let arm = self.accepts.refusing(listener);
        let entry = match (wanted, arm.armed, arm.cancelling) {
            (true, false, _) => {
                *arm = AcceptArm {
                    armed: true,
                    cancelling: false,
                };
                opcode::AcceptMulti::new(types::Fixed(listener.slot()))
                    .flags(libc::SOCK_CLOEXEC)
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

    /// A connection accepted into the table by one of `listener`'s addressed accepts.
    pub(super) fn handle_accept(
        &mut self,
        tag: Tag,
        completion: Completion,
        listener: Listener,
    ) -> io::Result<()> {
        let index = tag.slot as usize;
        let direct = self.accepts.direct(listener);
        direct.armed[index] = false;
        if !direct.armed.contains(&true) {
            direct.cancelling = false;
        }
        match completion.result {
            slot if slot >= 0 => {
                let address = direct.buffers[index].address();
                self.open_connection(slot as u32, address, listener)?
            }
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
        listener: Listener,
    ) -> io::Result<()> {
        if !completion.more() {
            *self.accepts.refusing(listener) = AcceptArm::default();
        }
        match completion.result {
            descriptor if descriptor >= 0 => self.refuse(descriptor, listener)?,
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
    fn refuse(&mut self, descriptor: i32, listener: Listener) -> io::Result<()> {
        let slot = descriptor as u32;
        let answerable = listener == Listener::Plain;
        let entry = if answerable && self.accepts.refusals_in_flight < REFUSALS_IN_FLIGHT_MAX {
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

    fn open_connection(
        &mut self,
        slot: u32,
        address: Option<IpAddr>,
        listener: Listener,
    ) -> io::Result<()> {
        let index = slot as usize;
        assert!(
            self.connections[index].is_none(),
            "kernel reused a slot we still hold"
        );
        let admission = match address {
            Some(address) => self.address_limits.admit(address, self.context.unix_ms()),
            // Not an IP socket (the listener is TCP, so never): nothing to count it under.
            None => AddressAdmission::Untracked { table_full: false },
        };
        self.address_tickets[index] = match admission {
            AddressAdmission::Admitted(ticket) => ticket,
            AddressAdmission::Untracked { table_full } => {
                self.counters.addresses_untracked += u64::from(table_full);
                0
            }
            AddressAdmission::TooManyConnections => {
                self.counters.address_connections_refused += 1;
                0
            }
            AddressAdmission::TooManyHandshakes => {
                self.counters.address_handshakes_refused += 1;
                0
            }
        };
        let refused = matches!(
            admission,
            AddressAdmission::TooManyConnections | AddressAdmission::TooManyHandshakes
        );
        self.generations[index] = self.generations[index].wrapping_add(1);
        let generation = self.generations[index];
        let endpoint = Endpoint::new(self.context.now_ms, &self.context.settings);
        let mut connection = Connection::new(generation, endpoint);
        match (listener, &self.tls_config) {
            // Over its address's limits: a plain-text 429 means nothing to a TLS client and an
            // alert needs a handshake, so it is closed unanswered (counted above).
            (Listener::Tls, _) if refused => connection.closing = Closing::ShutDown,
            (Listener::Tls, Some(config)) => match Transport::new_tls(config) {
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
            },
            // No TLS listener without its configuration (the accept is never armed).
            (Listener::Tls, None) => connection.closing = Closing::ShutDown,
            (Listener::Plain, _) => {}
        }
        self.connections[index] = Some(connection);
        self.fanout.open_client(slot, generation);
        self.connection_count += 1;
        self.counters.connections_accepted += 1;
        self.sync_deadline(slot);
        if self.connection_mut(slot).closing != Closing::Open {
            return self.advance_close(slot);
        }
        if refused {
            // Answered through the connection's own queue and close sequence, like any reply.
            let (now_ms, close_timeout_ms) = (self.context.now_ms, self.config.close_timeout_ms);
            let connection = self.connection_mut(slot);
            connection
                .outbound
                .push_control(bytes::Bytes::from_static(TOO_MANY_RESPONSE));
            connection.close_after_flush(now_ms, close_timeout_ms);
            return self.after_activity(slot);
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

    /// Proves the static 429 is one whole response with a Content-Length that matches its body.
    #[test]
    fn too_many_response_is_well_formed() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_bytes) = response.parse(TOO_MANY_RESPONSE).unwrap()
        else {
            panic!("incomplete head");
        };
        assert_eq!(response.code, Some(429));
        let length = response
            .headers
            .iter()
            .find(|header| header.name == "Content-Length")
            .map(|header| std::str::from_utf8(header.value).unwrap().to_owned());
        assert_eq!(
            length,
            Some((TOO_MANY_RESPONSE.len() - head_bytes).to_string())
        );
    }

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
