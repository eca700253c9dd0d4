//! TLS on a shard's connections, sans-IO: rustls 0.23's unbuffered server connection for the
//! handshake, then the record layer of [`record`] for the traffic.
//!
//! # Where the bytes live
//!
//! - **Ciphertext in** arrives in the shard's provided receive buffers. A whole record there is
//!   decrypted in place and its plaintext handed to the endpoint from the same buffer (which
//!   unmasks WebSocket frames in place too): no copy. Only a record cut across receive buffers
//!   is assembled first, in a pooled buffer (`incoming`) that goes back to the pool once the
//!   record is whole.
//! - **Plaintext out** is what the endpoint queued: frames shared by every subscriber of a
//!   message, encoded once. Each connection copies its share into a pooled ciphertext buffer
//!   (`outgoing`) at the place of a record's content and seals it there, several frames to a
//!   record: the one copy TLS cannot avoid, since every connection has its own keys. The shard
//!   sends that buffer; it goes back to the pool when the kernel has sent all of it.
//! - **An idle connection** holds neither buffer, only its two AEAD keys (aws-lc contexts of
//!   about 580 bytes each) and, for TLS 1.3 key updates, its two traffic secrets: rustls'
//!   remains of the connection are dropped after the handshake ([`secrets`] says how).
//!   `tests/tls_idle_memory.rs` counts the bytes.
//!
//! During the handshake rustls owns the state; its records are handled from the receive buffer
//! the same way (bytes rustls has not consumed yet wait in `incoming`), and what it has to send
//! is encoded into `outgoing`. Application data a client sends with its last handshake flight is
//! decrypted by rustls into a buffer of its own and copied into the shard's scratch buffer for
//! the endpoint. When rustls reports the handshake done, its traffic keys are taken out and the
//! record layer takes over.

pub mod buffers;
pub mod certificates;
pub mod record;
pub mod secrets;
pub mod validity;

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData};
use rustls::{HandshakeKind, ServerConfig};

use buffers::{CIPHER_CLASSES, CipherBuffer, CipherPool};
use record::{Alert, CONTENT_BYTES_MAX, ContentType, HEADER_BYTES, RecordLayer, Refused, Version};
use secrets::CapturedSecrets;

/// Content one send carries at most: four full records, so that bulk data (a replay, a large
/// message) goes out in sends of about 64 KiB while small deliveries take a small buffer.
pub const SEND_CONTENT_BYTES_MAX: usize = 4 * CONTENT_BYTES_MAX;

/// Room every ciphertext buffer keeps free after the records sealed into it, for the control
/// records that may have to follow while it is being sent: a key update (27 to 31 bytes), an
/// alert or close_notify (24 to 31 bytes), each at most once per connection at a time.
const CONTROL_RESERVE_BYTES: usize = 96;

/// rustls states handled in one read at most: a handshake flight is a handful of them. Beyond
/// it the connection is dropped rather than looping on a state that makes no progress.
const HANDSHAKE_STEPS_MAX: usize = 256;

/// Alert records rustls may queue after a failed handshake (one in practice).
const ALERTS_DRAINED_MAX: usize = 4;

/// The TLS 1.3 handshake message type of KeyUpdate (RFC 8446 §4.6.3).
const KEY_UPDATE: u8 = 24;

/// KeyUpdates a peer may send in a row without application data between them. Each costs a key
/// derivation and may ask for ours in return; a client flooding them does no work for anyone.
/// 32, as rustls' own record layer (and BoringSSL's `kMaxKeyUpdates`) allows, so that a client
/// rustls accepts we accept.
const KEY_UPDATES_IN_A_ROW_MAX: u8 = 32;

/// Warning alerts (user_canceled, the one TLS 1.3 allows) a peer may send in a connection's
/// life. A client that cancels sends one, then close_notify; each costs a record opened for
/// nothing, and a flood of them would be read for ever. 4, as rustls allows, so that a client
/// rustls accepts we accept; the next is refused.
const WARNING_ALERTS_MAX: u8 = 4;

/// What TLS counts, per shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCounters {
    /// Handshakes completed in full (a certificate signed).
    pub handshakes_full: u64,
    /// Handshakes that resumed a session from a ticket.
    pub handshakes_resumed: u64,
    /// Handshakes rustls refused (an alert was sent): not TLS, a bad ClientHello, no common
    /// version, suite or protocol.
    pub handshake_failures: u64,
    /// Handshakes not finished within `handshake_timeout_ms` (counted by the shard).
    pub handshake_timeouts: u64,
    /// Records refused after the handshake (an alert was sent): bad MAC, overflow, unexpected.
    pub record_errors: u64,
    /// Fatal alerts received from peers.
    pub alerts_received: u64,
    pub close_notify_received: u64,
    pub close_notify_sent: u64,
    /// Connections that ended at TCP level without close_notify after the handshake
    /// (counted by the shard).
    pub truncations: u64,
    /// TLS 1.3 key updates: the peer's, and ours (asked for, or at the confidentiality limit).
    pub key_updates: u64,
    /// Times a buffer the connection needed was not free (the pool at its counts).
    pub buffers_exhausted: u64,
}

/// What TLS connections of a shard share: the buffer pool, a scratch buffer, the counters.
#[derive(Debug)]
pub struct TlsWorkspace {
    pub pool: CipherPool,
    /// Application data rustls decrypted into a buffer of its own during the handshake, copied
    /// where the endpoint may change it in place.
    scratch: Box<[u8]>,
    pub counters: TlsCounters,
}

impl Default for TlsWorkspace {
    fn default() -> Self {
        TlsWorkspace {
            pool: CipherPool::new(&CIPHER_CLASSES),
            scratch: vec![0u8; CONTENT_BYTES_MAX].into_boxed_slice(),
            counters: TlsCounters::default(),
        }
    }
}

/// What a read did to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Every byte was handled; more may come.
    Open,
    /// The peer sent close_notify: it sends nothing more. What is queued may still go out,
    /// followed by our close_notify.
    PeerClosed,
    /// The peer broke the protocol: an alert is queued. Send it, then close; nothing else is
    /// sealed.
    Refused,
    /// The connection cannot go on and has nothing to say: close it now (the peer sent a fatal
    /// alert, or no buffer was left for the alert).
    Aborted,
}

/// What [`TlsConnection::seal`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// Records are ready for [`TlsConnection::start_send`] (or there was nothing to seal).
    Ready,
    /// No ciphertext buffer was free: try again when one comes back to the pool.
    NoBuffer,
    /// The keys are used up (TLS 1.2 at the suite's limit) or sealing failed: close.
    Failed,
}

enum State {
    Handshaking(Box<Handshake>),
    Traffic(RecordLayer),
    /// The handshake or a record failed, or the peer aborted: nothing more is read or sealed.
    Done,
}

/// rustls' connection while it runs the handshake, and the traffic secrets its key log gave.
struct Handshake {
    connection: UnbufferedServerConnection,
    secrets: CapturedSecrets,
}

impl Handshake {
    /// One call into rustls, its secrets captured (see [`secrets`]).
    fn process<'c, 'i>(
        &'c mut self,
        buffer: &'i mut [u8],
    ) -> rustls::unbuffered::UnbufferedStatus<'c, 'i, rustls::server::ServerConnectionData> {
        let connection = &mut self.connection;
        secrets::capture(&mut self.secrets, || connection.process_tls_records(buffer))
    }
}

/// One connection's TLS. See the module documentation.
pub struct TlsConnection {
    state: State,
    /// A record cut across receive buffers, or handshake bytes rustls has not consumed yet.
    incoming: Option<CipherBuffer>,
    /// Ciphertext to send: records, handshake messages, alerts.
    outgoing: Option<CipherBuffer>,
    /// Bytes at the front of `outgoing` that the send in flight carries (0: none in flight).
    in_flight_bytes: usize,
    /// close_notify (or a fatal alert) is sealed: no application data follows it.
    closing_sealed: bool,
    /// The peer sent close_notify: nothing it sends after it is read.
    peer_closed: bool,
    /// The peer's KeyUpdate asked for ours (TLS 1.3): sealed before our next record.
    key_update_owed: bool,
    /// The peer's KeyUpdates since its last application data record.
    key_updates_in_a_row: u8,
    /// The peer's warning alerts so far.
    warning_alerts_count: u8,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Handshaking(_) => "handshaking",
            State::Traffic(_) => "traffic",
            State::Done => "done",
        };
        formatter
            .debug_struct("TlsConnection")
            .field("state", &state)
            .field(
                "incoming_bytes",
                &self.incoming.as_ref().map(CipherBuffer::len),
            )
            .field(
                "outgoing_bytes",
                &self.outgoing.as_ref().map(CipherBuffer::len),
            )
            .field("in_flight_bytes", &self.in_flight_bytes)
            .finish_non_exhaustive()
    }
}

impl TlsConnection {
    /// A connection at the start of its handshake.
    pub fn new(config: &Arc<ServerConfig>) -> Result<TlsConnection, rustls::Error> {
        Ok(TlsConnection {
            state: State::Handshaking(Box::new(Handshake {
                connection: UnbufferedServerConnection::new(Arc::clone(config))?,
                secrets: CapturedSecrets::default(),
            })),
            incoming: None,
            outgoing: None,
            in_flight_bytes: 0,
            closing_sealed: false,
            peer_closed: false,
            key_update_owed: false,
            key_updates_in_a_row: 0,
            warning_alerts_count: 0,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshaking(_))
    }

    /// Whether the handshake is over and the connection may still seal application data.
    pub fn can_seal(&self) -> bool {
        matches!(self.state, State::Traffic(_)) && !self.closing_sealed
    }

    /// The negotiated version, once the handshake is over.
    pub fn version(&self) -> Option<Version> {
        match &self.state {
            State::Traffic(records) => Some(records.version()),
            _ => None,
        }
    }

    /// Whether the traffic keys are in place and close_notify has not been received: a TCP end
    /// now would be a truncation.
    pub fn expects_close_notify(&self) -> bool {
        matches!(self.state, State::Traffic(_)) && !self.peer_closed
    }

    /// Bytes of pooled buffers this connection holds (its charge against the shard's budget).
    pub fn held_bytes(&self) -> usize {
        let capacity = |buffer: &Option<CipherBuffer>| buffer.as_ref().map_or(0, |b| b.capacity());
        capacity(&self.incoming) + capacity(&self.outgoing)
    }

    /// Handles the bytes of one receive: handshake records go to rustls, records after it are
    /// opened here, and each piece of application data is handed to `read` (in place, to be
    /// consumed whole).
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        workspace: &mut TlsWorkspace,
        mut read: impl FnMut(&mut [u8]),
    ) -> ReadOutcome {
        match self.state {
            // The connection is already closing (every way into Done said so): what the peer
            // sends now is not read.
            State::Done => ReadOutcome::Open,
            _ if self.peer_closed => ReadOutcome::PeerClosed,
            State::Handshaking(_) => {
                let outcome = self.read_handshake(input, workspace, &mut read);
                // A last flight can carry application records rustls left for the record layer;
                // they wait whole in `incoming` (see `establish`).
                match (outcome, self.incoming.take()) {
                    (ReadOutcome::Open, Some(mut pending)) if !self.is_handshaking() => {
                        let outcome = self.read_records(pending.data_mut(), workspace, &mut read);
                        workspace.pool.release(pending);
                        outcome
                    }
                    (outcome, pending) => {
                        self.incoming = pending;
                        outcome
                    }
                }
            }
            State::Traffic(_) => self.read_records(input, workspace, &mut read),
        }
    }

    /// Feeds the handshake: bytes waiting from earlier reads first, joined by `input`.
    fn read_handshake(
        &mut self,
        input: &mut [u8],
        workspace: &mut TlsWorkspace,
        read: &mut impl FnMut(&mut [u8]),
    ) -> ReadOutcome {
        let Some(mut pending) = self.incoming.take() else {
            let (outcome, consumed) = self.drive_handshake(input, workspace, read);
            let rest = &input[consumed..];
            if outcome == ReadOutcome::Open && !rest.is_empty() {
                let wanted = rest.len().max(CIPHER_CLASSES[1].buffer_bytes);
                let Some(mut buffer) = workspace.pool.acquire(rest.len(), wanted) else {
                    workspace.counters.buffers_exhausted += 1;
                    return self.abort();
                };
                buffer.extend_from_slice(rest);
                self.incoming = Some(buffer);
            }
            return outcome;
        };
        let total_bytes = pending.len() + input.len();
        if !workspace.pool.grow(&mut pending, total_bytes) {
            // Handshake bytes beyond the largest buffer, or none free: a ClientHello this large
            // is an attack or a mistake.
            workspace.counters.buffers_exhausted += 1;
            workspace.pool.release(pending);
            return self.abort();
        }
        pending.extend_from_slice(input);
        let (outcome, consumed) = self.drive_handshake(pending.data_mut(), workspace, read);
        pending.consume(consumed);
        if pending.is_empty() || outcome != ReadOutcome::Open {
            workspace.pool.release(pending);
        } else {
            self.incoming = Some(pending);
        }
        outcome
    }

    /// Runs rustls over `buffer` until it needs more bytes, is done, or fails. Returns the
    /// outcome and how many bytes of `buffer` rustls consumed.
    fn drive_handshake(
        &mut self,
        buffer: &mut [u8],
        workspace: &mut TlsWorkspace,
        read: &mut impl FnMut(&mut [u8]),
    ) -> (ReadOutcome, usize) {
        let mut consumed = 0;
        let mut step = Step::Continue;
        for _ in 0..HANDSHAKE_STEPS_MAX {
            let State::Handshaking(handshake) = &mut self.state else {
                unreachable!("driven only while handshaking");
            };
            let Some(status) = contain(|| handshake.process(&mut buffer[consumed..])) else {
                step = Step::Panicked;
                break;
            };
            let discard = status.discard;
            step = match status.state {
                Ok(state) => handle_state(
                    state,
                    &mut self.outgoing,
                    self.in_flight_bytes,
                    workspace,
                    read,
                ),
                Err(error) => Step::Failed(error),
            };
            consumed += discard;
            if step != Step::Continue {
                break;
            }
        }
        let outcome = match step {
            // Out of steps without an end: drop the connection rather than spin.
            Step::Continue => self.abort(),
            Step::NeedMore => ReadOutcome::Open,
            Step::Established => self.establish(workspace, &mut buffer[consumed..]),
            Step::PeerClosed => {
                workspace.counters.close_notify_received += 1;
                self.peer_closed = true;
                self.state = State::Done;
                // A client that closes at once sends its close_notify right behind its
                // Finished, and one read often carries both: what rustls encoded meanwhile
                // (the session tickets) still goes out before the close, or the client's next
                // connection could not resume.
                match self
                    .outgoing
                    .as_ref()
                    .is_some_and(|buffer| !buffer.is_empty())
                {
                    true => ReadOutcome::PeerClosed,
                    false => ReadOutcome::Aborted,
                }
            }
            Step::Failed(error) => self.fail_handshake(error, workspace, &mut buffer[consumed..]),
            Step::NoBuffer => {
                workspace.counters.buffers_exhausted += 1;
                self.abort()
            }
            Step::Panicked => {
                workspace.counters.handshake_failures += 1;
                self.abort()
            }
        };
        // Bytes past the handshake belong to the record layer (`establish` keeps them).
        match outcome {
            ReadOutcome::Open if !self.is_handshaking() => (outcome, buffer.len()),
            _ => (outcome, consumed),
        }
    }

    /// The handshake is done: counts it, takes the traffic keys out of rustls and keeps the
    /// records that followed it (`rest`) for the record layer.
    fn establish(&mut self, workspace: &mut TlsWorkspace, rest: &mut [u8]) -> ReadOutcome {
        let State::Handshaking(handshake) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("established while handshaking");
        };
        let Handshake {
            connection,
            secrets,
        } = *handshake;
        match connection.handshake_kind() {
            Some(HandshakeKind::Resumed) => workspace.counters.handshakes_resumed += 1,
            _ => workspace.counters.handshakes_full += 1,
        }
        let records = connection
            .dangerous_into_kernel_connection()
            .map_err(|_| Refused(Alert::InternalError))
            .and_then(|(extracted, kernel)| RecordLayer::new(extracted, kernel, secrets));
        let Ok(records) = records else {
            // Nothing can be sealed without the keys, not even an alert.
            return self.abort();
        };
        self.state = State::Traffic(records);
        tracing::debug!(
            rest_bytes = rest.len(),
            "TLS handshake done: the record layer takes over"
        );
        if rest.is_empty() {
            return ReadOutcome::Open;
        }
        let Some(mut buffer) = workspace.pool.acquire(rest.len(), rest.len()) else {
            workspace.counters.buffers_exhausted += 1;
            return self.abort();
        };
        buffer.extend_from_slice(rest);
        if let Some(previous) = self.incoming.replace(buffer) {
            workspace.pool.release(previous);
        }
        ReadOutcome::Open
    }

    /// rustls refused the handshake: sends the alert it queued, and closes. `rest` is what
    /// rustls had not discarded when it failed: it keeps positions into those bytes, so the
    /// alert is drained with them still in front of it.
    fn fail_handshake(
        &mut self,
        error: rustls::Error,
        workspace: &mut TlsWorkspace,
        rest: &mut [u8],
    ) -> ReadOutcome {
        tracing::debug!(%error, "TLS handshake refused");
        workspace.counters.handshake_failures += 1;
        if let rustls::Error::AlertReceived(_) = error {
            workspace.counters.alerts_received += 1;
        }
        let State::Handshaking(handshake) = &mut self.state else {
            unreachable!("failed while handshaking");
        };
        // Only while rustls has records queued: a call with none would read the bad bytes
        // again (and rustls asserts it never sends two fatal alerts).
        let mut queued = false;
        for _ in 0..ALERTS_DRAINED_MAX {
            if !handshake.connection.wants_write() {
                break;
            }
            let Some(status) = contain(|| handshake.process(rest)) else {
                break;
            };
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else {
                break;
            };
            let outgoing = &mut self.outgoing;
            if encode_into(outgoing, self.in_flight_bytes, &mut encode, workspace) != Step::Continue
            {
                break;
            }
            queued = true;
        }
        self.state = State::Done;
        self.closing_sealed = true;
        match queued {
            true => ReadOutcome::Refused,
            false => ReadOutcome::Aborted,
        }
    }

    fn abort(&mut self) -> ReadOutcome {
        self.state = State::Done;
        self.closing_sealed = true;
        ReadOutcome::Aborted
    }

    /// Opens every whole record of `input` in place (after completing one cut across reads),
    /// and keeps a record cut at the end for the next read.
    fn read_records(
        &mut self,
        input: &mut [u8],
        workspace: &mut TlsWorkspace,
        read: &mut impl FnMut(&mut [u8]),
    ) -> ReadOutcome {
        let mut rest = input;
        if let Some(mut pending) = self.incoming.take() {
            let completed = self.complete_record(&mut pending, &mut rest, workspace);
            let outcome = match completed {
                Ok(false) => {
                    self.incoming = Some(pending);
                    return ReadOutcome::Open;
                }
                Ok(true) => self.open_record(pending.data_mut(), workspace, read),
                Err(refused) => self.refuse(refused, workspace),
            };
            workspace.pool.release(pending);
            if outcome != ReadOutcome::Open {
                return outcome;
            }
        }
        loop {
            let record_bytes = match self.next_record_bytes(rest) {
                Ok(Some(bytes)) if bytes <= rest.len() => bytes,
                Ok(_) => break,
                Err(refused) => return self.refuse(refused, workspace),
            };
            let (record, tail) = std::mem::take(&mut rest).split_at_mut(record_bytes);
            rest = tail;
            let outcome = self.open_record(record, workspace, read);
            if outcome != ReadOutcome::Open {
                return outcome;
            }
        }
        if rest.is_empty() {
            return ReadOutcome::Open;
        }
        let record_bytes = self
            .next_record_bytes(rest)
            .ok()
            .flatten()
            .unwrap_or(HEADER_BYTES);
        let Some(mut buffer) = workspace.pool.acquire(record_bytes, record_bytes) else {
            workspace.counters.buffers_exhausted += 1;
            return self.refuse(Refused(Alert::InternalError), workspace);
        };
        buffer.extend_from_slice(rest);
        self.incoming = Some(buffer);
        ReadOutcome::Open
    }

    /// The whole length of the record starting `bytes`, once its header is there.
    fn next_record_bytes(&self, bytes: &[u8]) -> Result<Option<usize>, Refused> {
        let State::Traffic(records) = &self.state else {
            return Err(Refused(Alert::InternalError));
        };
        match bytes.first_chunk::<HEADER_BYTES>() {
            Some(header) => records.record_bytes(header).map(Some),
            None => Ok(None),
        }
    }

    /// Moves bytes from the front of `rest` into `pending` until it holds one whole record.
    /// Returns whether it does.
    fn complete_record(
        &self,
        pending: &mut CipherBuffer,
        rest: &mut &mut [u8],
        workspace: &mut TlsWorkspace,
    ) -> Result<bool, Refused> {
        if pending.len() < HEADER_BYTES {
            let taken = (HEADER_BYTES - pending.len()).min(rest.len());
            take_into(pending, rest, taken);
            if pending.len() < HEADER_BYTES {
                return Ok(false);
            }
        }
        let record_bytes = self
            .next_record_bytes(pending.data())?
            .expect("a whole header");
        if !workspace.pool.grow(pending, record_bytes) {
            workspace.counters.buffers_exhausted += 1;
            return Err(Refused(Alert::InternalError));
        }
        let taken = (record_bytes - pending.len()).min(rest.len());
        take_into(pending, rest, taken);
        Ok(pending.len() == record_bytes)
    }

    /// Opens one whole record and acts on its content.
    fn open_record(
        &mut self,
        record: &mut [u8],
        workspace: &mut TlsWorkspace,
        read: &mut impl FnMut(&mut [u8]),
    ) -> ReadOutcome {
        let State::Traffic(records) = &mut self.state else {
            return ReadOutcome::Aborted;
        };
        let (content_type, content) = match records.open(record) {
            Ok(opened) => opened,
            Err(refused) => return self.refuse(refused, workspace),
        };
        let result = match content_type {
            ContentType::ApplicationData => {
                self.key_updates_in_a_row = 0;
                if !content.is_empty() {
                    read(content);
                }
                Ok(ReadOutcome::Open)
            }
            ContentType::Alert => Ok(self.handle_alert(content, workspace)),
            ContentType::Handshake => self.handle_post_handshake(content, workspace),
            ContentType::ChangeCipherSpec => Err(Refused(Alert::UnexpectedMessage)),
        };
        result.unwrap_or_else(|refused| self.refuse(refused, workspace))
    }

    /// An alert from the peer: close_notify ends its sending, user_canceled (a warning) is
    /// followed by one, up to [`WARNING_ALERTS_MAX`] of them; anything else ends the connection
    /// (RFC 8446 §6).
    fn handle_alert(&mut self, content: &[u8], workspace: &mut TlsWorkspace) -> ReadOutcome {
        const WARNING: u8 = 1;
        const CLOSE_NOTIFY: u8 = 0;
        const USER_CANCELED: u8 = 90;
        match content {
            [_, CLOSE_NOTIFY] => {
                workspace.counters.close_notify_received += 1;
                self.peer_closed = true;
                ReadOutcome::PeerClosed
            }
            [WARNING, USER_CANCELED] if self.warning_alerts_count >= WARNING_ALERTS_MAX => {
                self.refuse(Refused(Alert::UnexpectedMessage), workspace)
            }
            [WARNING, USER_CANCELED] => {
                self.warning_alerts_count += 1;
                ReadOutcome::Open
            }
            [_, _] => {
                workspace.counters.alerts_received += 1;
                self.abort()
            }
            _ => self.refuse(Refused(Alert::DecodeError), workspace),
        }
    }

    /// A handshake message after the handshake: TLS 1.3 KeyUpdate is followed; anything else
    /// (a TLS 1.2 renegotiation, a message a client must not send) is refused.
    fn handle_post_handshake(
        &mut self,
        content: &[u8],
        workspace: &mut TlsWorkspace,
    ) -> Result<ReadOutcome, Refused> {
        let State::Traffic(records) = &mut self.state else {
            return Ok(ReadOutcome::Aborted);
        };
        if records.version() != Version::Tls13 {
            return Err(Refused(Alert::UnexpectedMessage));
        }
        // One KeyUpdate per record, alone: a key change may not share a record with what
        // follows it (RFC 8446 §5.1), and clients send it alone.
        match content {
            [KEY_UPDATE, 0, 0, 1, _] if self.key_updates_in_a_row >= KEY_UPDATES_IN_A_ROW_MAX => {
                Err(Refused(Alert::UnexpectedMessage))
            }
            [KEY_UPDATE, 0, 0, 1, request] if *request <= 1 => {
                self.key_updates_in_a_row += 1;
                records.update_rx_key()?;
                workspace.counters.key_updates += 1;
                self.key_update_owed |= *request == 1;
                Ok(ReadOutcome::Open)
            }
            [KEY_UPDATE, ..] => Err(Refused(Alert::DecodeError)),
            _ => Err(Refused(Alert::UnexpectedMessage)),
        }
    }

    /// Refuses the peer's record: seals the alert and stops reading and sealing.
    fn refuse(&mut self, refused: Refused, workspace: &mut TlsWorkspace) -> ReadOutcome {
        workspace.counters.record_errors += 1;
        if let Some(pending) = self.incoming.take() {
            workspace.pool.release(pending);
        }
        let queued =
            self.seal_control(workspace, |records, out| records.seal_alert(out, refused.0));
        self.state = State::Done;
        self.closing_sealed = true;
        match queued {
            true => ReadOutcome::Refused,
            false => ReadOutcome::Aborted,
        }
    }

    /// Seals one control record (alert, key update) after what `outgoing` holds, in the room
    /// kept for it. Returns whether it was sealed.
    fn seal_control(
        &mut self,
        workspace: &mut TlsWorkspace,
        seal: impl FnOnce(&mut RecordLayer, &mut [u8]) -> Result<usize, Refused>,
    ) -> bool {
        let State::Traffic(records) = &mut self.state else {
            return false;
        };
        if self.closing_sealed {
            return false;
        }
        let needed = records.alert_bytes().max(5 + records.overhead());
        let buffer = match &mut self.outgoing {
            Some(buffer) => buffer,
            empty => match workspace
                .pool
                .acquire(needed, CIPHER_CLASSES[0].buffer_bytes)
            {
                Some(buffer) => empty.insert(buffer),
                None => {
                    workspace.counters.buffers_exhausted += 1;
                    return false;
                }
            },
        };
        if buffer.spare_bytes() < needed {
            // Only a buffer the kernel is not reading may move.
            if self.in_flight_bytes > 0 || !workspace.pool.grow(buffer, buffer.len() + needed) {
                return false;
            }
        }
        match seal(records, buffer.spare_mut()) {
            Ok(written) => {
                buffer.commit(written);
                true
            }
            Err(_) => false,
        }
    }

    /// Seals our close_notify after everything queued (a graceful close). Returns whether one
    /// was sealed now.
    pub fn queue_close_notify(&mut self, workspace: &mut TlsWorkspace) -> bool {
        let sealed = self.seal_control(workspace, |records, out| {
            records.seal_alert(out, Alert::CloseNotify)
        });
        if sealed {
            workspace.counters.close_notify_sent += 1;
        }
        self.closing_sealed = true;
        sealed
    }

    /// Whether a graceful close still owes the peer our close_notify.
    pub fn owes_close_notify(&self) -> bool {
        self.can_seal()
    }

    /// Seals the plaintext `fill` copies in (up to `queued_bytes`, at most
    /// [`SEND_CONTENT_BYTES_MAX`]) into records in a pooled buffer. `fill` copies the front of
    /// the connection's queue into the slice it is given and returns how many bytes it copied.
    /// Seals nothing while ciphertext waits to be sent (it goes first) or before the handshake.
    pub fn seal(
        &mut self,
        workspace: &mut TlsWorkspace,
        queued_bytes: usize,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> Sealed {
        let waiting = self
            .outgoing
            .as_ref()
            .is_some_and(|buffer| !buffer.is_empty());
        if !self.can_seal() || waiting || (queued_bytes == 0 && !self.key_update_owed) {
            return Sealed::Ready;
        }
        let State::Traffic(records) = &mut self.state else {
            unreachable!("can_seal checked the state");
        };
        let content_bytes = queued_bytes.min(SEND_CONTENT_BYTES_MAX);
        let record_count = content_bytes.div_ceil(CONTENT_BYTES_MAX).max(1);
        let overhead = records.overhead() + CONTROL_RESERVE_BYTES;
        let minimum = records.overhead() + 1 + overhead;
        let wanted = content_bytes + record_count * records.overhead() + overhead;
        let mut buffer = match self.outgoing.take() {
            Some(buffer) if buffer.capacity() >= minimum => buffer,
            held => {
                if let Some(held) = held {
                    workspace.pool.release(held);
                }
                let Some(buffer) = workspace.pool.acquire(minimum, wanted) else {
                    workspace.counters.buffers_exhausted += 1;
                    return Sealed::NoBuffer;
                };
                buffer
            }
        };
        let result = seal_records(
            records,
            &mut buffer,
            &mut self.key_update_owed,
            workspace,
            &mut fill,
        );
        self.outgoing = Some(buffer);
        match result {
            Ok(()) => Sealed::Ready,
            Err(_) => {
                self.state = State::Done;
                self.closing_sealed = true;
                Sealed::Failed
            }
        }
    }

    /// The ciphertext to send next, marked in flight until [`TlsConnection::complete_send`];
    /// `None` while a send is in flight or nothing waits. The bytes stay where they are until
    /// then (the buffer never moves while in flight).
    pub fn start_send(&mut self) -> Option<&[u8]> {
        if self.in_flight_bytes > 0 {
            return None;
        }
        let buffer = self.outgoing.as_ref().filter(|buffer| !buffer.is_empty())?;
        self.in_flight_bytes = buffer.len();
        Some(buffer.data())
    }

    /// Whether ciphertext waits to be sent and no send is in flight.
    pub fn has_sendable(&self) -> bool {
        self.in_flight_bytes == 0 && self.outgoing.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// Whether any ciphertext waits, in flight or not.
    pub fn has_unsent(&self) -> bool {
        self.outgoing
            .as_ref()
            .is_some_and(|buffer| !buffer.is_empty())
    }

    pub fn send_in_flight(&self) -> bool {
        self.in_flight_bytes > 0
    }

    /// The send in flight wrote `sent_bytes`; a drained buffer goes back to the pool.
    pub fn complete_send(&mut self, sent_bytes: usize, workspace: &mut TlsWorkspace) {
        assert!(
            sent_bytes <= self.in_flight_bytes,
            "sent more than was in flight"
        );
        self.in_flight_bytes = 0;
        let buffer = self.outgoing.as_mut().expect("a send came from the buffer");
        buffer.consume(sent_bytes);
        if buffer.is_empty() {
            let buffer = self.outgoing.take().expect("checked above");
            workspace.pool.release(buffer);
        }
    }

    /// The send in flight failed: nothing more will be sent.
    pub fn abandon_send(&mut self) {
        self.in_flight_bytes = 0;
    }

    /// The peer is gone: lets go of what is not in flight, and seals nothing more.
    pub fn discard_unsent(&mut self, workspace: &mut TlsWorkspace) {
        self.closing_sealed = true;
        if let Some(pending) = self.incoming.take() {
            workspace.pool.release(pending);
        }
        if self.in_flight_bytes == 0
            && let Some(buffer) = self.outgoing.take()
        {
            workspace.pool.release(buffer);
        }
    }

    /// Lowers the confidentiality limit, so that tests reach it.
    #[cfg(test)]
    pub(crate) fn set_tx_records_max_for_test(&mut self, records: u64) {
        if let State::Traffic(records_layer) = &mut self.state {
            records_layer.set_tx_records_max_for_test(records);
        }
    }

    /// Gives every buffer back (the connection is being freed; nothing is in flight).
    pub fn release(&mut self, workspace: &mut TlsWorkspace) {
        assert_eq!(self.in_flight_bytes, 0, "freed with a send in flight");
        self.discard_unsent(workspace);
    }
}

/// Where the handshake stands after one rustls state.
#[derive(Debug, PartialEq)]
enum Step {
    Continue,
    NeedMore,
    Established,
    PeerClosed,
    NoBuffer,
    Failed(rustls::Error),
    /// rustls panicked on this connection's bytes.
    Panicked,
}

/// Runs one call into rustls' handshake, containing a panic to this connection: rustls parses
/// what any client sends, and a panic there (a bug, or our misuse of its buffer contract, as
/// once happened) must close one connection, not end the shard and all of its connections.
/// `None` when it panicked; the connection is then dropped. The panic message is printed by
/// the panic hook and logged here.
fn contain<T>(call: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(
                "rustls panicked on a connection's handshake bytes: connection dropped"
            );
            None
        }
    }
}

/// Acts on one state rustls reached during the handshake.
fn handle_state(
    state: ConnectionState<'_, '_, rustls::server::ServerConnectionData>,
    outgoing: &mut Option<CipherBuffer>,
    in_flight_bytes: usize,
    workspace: &mut TlsWorkspace,
    read: &mut impl FnMut(&mut [u8]),
) -> Step {
    match state {
        ConnectionState::EncodeTlsData(mut encode) => {
            encode_into(outgoing, in_flight_bytes, &mut encode, workspace)
        }
        // What was encoded goes out with the connection's next send.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Step::Continue
        }
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                let record = match record {
                    Ok(record) => record,
                    Err(error) => return Step::Failed(error),
                };
                let bytes = record.payload.len();
                workspace.scratch[..bytes].copy_from_slice(record.payload);
                read(&mut workspace.scratch[..bytes]);
            }
            Step::Continue
        }
        ConnectionState::BlockedHandshake => Step::NeedMore,
        ConnectionState::WriteTraffic(_) => Step::Established,
        ConnectionState::PeerClosed | ConnectionState::Closed => Step::PeerClosed,
        // Early data is off (max_early_data_size 0), and no other state is known.
        _ => Step::Failed(rustls::Error::General("unexpected TLS state".into())),
    }
}

/// Encodes one handshake record (or alert) rustls produced after what `outgoing` holds.
fn encode_into(
    outgoing: &mut Option<CipherBuffer>,
    in_flight_bytes: usize,
    encode: &mut EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    workspace: &mut TlsWorkspace,
) -> Step {
    loop {
        if outgoing.is_none() {
            let Some(buffer) = workspace.pool.acquire(512, CIPHER_CLASSES[1].buffer_bytes) else {
                return Step::NoBuffer;
            };
            *outgoing = Some(buffer);
        }
        let buffer = outgoing.as_mut().expect("acquired above");
        match encode.encode(buffer.spare_mut()) {
            Ok(written) => {
                buffer.commit(written);
                return Step::Continue;
            }
            Err(EncodeError::AlreadyEncoded) => return Step::Continue,
            Err(EncodeError::InsufficientSize(size)) => {
                let total = buffer.len() + size.required_size;
                // A buffer the kernel is reading cannot move; a flight larger than the largest
                // buffer (an enormous certificate chain) cannot be sent.
                if in_flight_bytes > 0 || !workspace.pool.grow(buffer, total) {
                    return Step::NoBuffer;
                }
            }
        }
    }
}

/// Seals records into `buffer` while plaintext comes and room lasts, each after any key update
/// owed.
fn seal_records(
    records: &mut RecordLayer,
    buffer: &mut CipherBuffer,
    key_update_owed: &mut bool,
    workspace: &mut TlsWorkspace,
    fill: &mut impl FnMut(&mut [u8]) -> usize,
) -> Result<(), Refused> {
    let reserve = records.overhead() + CONTROL_RESERVE_BYTES;
    let offset = records.content_offset();
    loop {
        if *key_update_owed || records.tx_needs_new_key() {
            if records.version() != Version::Tls13 {
                // TLS 1.2 has no key update: the connection must end (as rustls does).
                return Err(Refused(Alert::InternalError));
            }
            // Ours asks nothing of the peer (update_not_requested), sealed under the old key.
            let written = records.seal_copy(
                buffer.spare_mut(),
                &[KEY_UPDATE, 0, 0, 1, 0],
                ContentType::Handshake,
            )?;
            buffer.commit(written);
            records.update_tx_key()?;
            workspace.counters.key_updates += 1;
            *key_update_owed = false;
        }
        let room = buffer.spare_bytes().saturating_sub(reserve);
        if room == 0 {
            return Ok(());
        }
        let spare = buffer.spare_mut();
        let content_max = room.min(CONTENT_BYTES_MAX);
        let copied = fill(&mut spare[offset..offset + content_max]);
        if copied == 0 {
            return Ok(());
        }
        let written = records.seal(spare, copied, ContentType::ApplicationData)?;
        buffer.commit(written);
    }
}

/// Moves `count` bytes from the front of `rest` to the end of `pending`.
fn take_into(pending: &mut CipherBuffer, rest: &mut &mut [u8], count: usize) {
    let (taken, tail) = std::mem::take(rest).split_at_mut(count);
    pending.extend_from_slice(taken);
    *rest = tail;
}

#[cfg(test)]
mod tests;
