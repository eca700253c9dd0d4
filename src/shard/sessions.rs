//! Engine.IO sessions that outlive a connection (`endpoint::socketio_polling`): the shard keeps
//! each in a slot beyond its connection table, as a client of its broker with no socket, and
//! routes what the connections carrying it receive, on this shard or any other.
//!
//! A carrier's request goes to the session's shard (named by the session id) through the
//! mailboxes, or straight to this shard's own handler; the answer comes back the same way.
//! Every transition of a session happens on its shard, in the order the requests arrive there:
//!
//! - a long-polling GET is held (one at a time: a second closes the session, as the reference
//!   server does) until frames are queued, then takes them all as one body;
//! - a POST's packets are handled by the session's endpoint, answered `ok` (400 or 413 for a
//!   body refused, which closes the session);
//! - `2probe` on an upgrading WebSocket answers a held GET (with what is queued, or `6`) so the
//!   client can pause polling; `5` makes the WebSocket the carrier, which takes the frames from
//!   then on as they are. The queue is one, so nothing is sent twice or skipped;
//! - a carrier that goes away closes the session (the reference server does the same for a
//!   GET cut short, and the client recovers through the `pid` and offset).

use std::collections::HashMap;
use std::io;

use bytes::BytesMut;
use tracing::debug;

use super::Shard;
use super::clients::shard_clients;
use super::connection::{Closing, Connection, Flag};
use crate::auth::address::AddressTicket;
use crate::broker::ClientRef;
use crate::broker::Command;
use crate::broker::command::{CarrierAnswer, CarrierRequest, SessionAddress};
use crate::endpoint::socketio::{SocketIoEndpoint, SocketIoStart};
use crate::endpoint::socketio_polling::{self, EngineCall};
use crate::endpoint::{Endpoint, EndpointKind, Next};
use crate::protocol::CloseCode;
use crate::protocol::engineio::EngineError;
use crate::protocol::http1::response::write_response;

/// The content type of long-polling bodies, the reference server's.
const PAYLOAD_CONTENT_TYPE: (&str, &str) = ("Content-Type", "text/plain; charset=UTF-8");
/// The content type of `ok`, the reference server's.
const POST_CONTENT_TYPE: (&str, &str) = ("Content-Type", "text/html; charset=UTF-8");
const JSON_CONTENT_TYPE: (&str, &str) = ("Content-Type", "application/json");
const SESSION_ID_UNKNOWN: &[u8] = br#"{"code":1,"message":"Session ID unknown"}"#;
const BAD_REQUEST: &[u8] = br#"{"code":3,"message":"Bad request"}"#;

/// The connections carrying one session.
#[derive(Clone, Copy, Debug, Default)]
struct Carriers {
    /// The GET held for the session's next frames, and whether its connection stays open.
    poll: Option<(ClientRef, bool)>,
    /// The WebSocket that answered the probe and has not upgraded yet.
    probing: Option<ClientRef>,
    /// The WebSocket the session upgraded to: it takes every frame from then on.
    websocket: Option<ClientRef>,
    /// The address the session counts against (the key of the handshake's connection in
    /// the address table; 0 for none).
    address: AddressTicket,
}

/// The session slots of a shard: `slot_start..slot_start + sessions_max`, after the
/// connection table. Slots are taken in order when first needed (so that the connection
/// table writes only as many as were used) and reused once freed.
pub(super) struct Sessions {
    slot_start: u32,
    sessions_max: usize,
    free: Vec<u32>,
    carriers: Vec<Carriers>,
    /// Sessions per client address, at most `per_address_max` each; an entry per address
    /// holding any, so at most `sessions_max` entries.
    per_address: HashMap<AddressTicket, u32>,
    per_address_max: u32,
}

impl Sessions {
    pub(super) fn new(slot_start: usize, sessions_max: usize, per_address_max: usize) -> Sessions {
        Sessions {
            slot_start: slot_start as u32,
            sessions_max,
            free: Vec::with_capacity(sessions_max),
            carriers: Vec::with_capacity(sessions_max),
            per_address: HashMap::new(),
            per_address_max: u32::try_from(per_address_max).unwrap_or(u32::MAX),
        }
    }

    /// Whether `address` may open one more session (an untracked one, 0, always may).
    fn address_has_room(&self, address: AddressTicket) -> bool {
        address == 0
            || self
                .per_address
                .get(&address)
                .is_none_or(|&count| count < self.per_address_max)
    }

    /// The session in `slot` counts against `address`.
    fn count_address(&mut self, slot: u32, address: AddressTicket) {
        self.carriers(slot).address = address;
        if address != 0 {
            *self.per_address.entry(address).or_insert(0) += 1;
        }
    }

    fn carriers(&mut self, slot: u32) -> &mut Carriers {
        &mut self.carriers[(slot - self.slot_start) as usize]
    }

    /// A free slot: one freed before, or a new one while fewer than `sessions_max` exist.
    fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        if self.carriers.len() == self.sessions_max {
            return None;
        }
        self.carriers.push(Carriers::default());
        Some(self.slot_start + self.carriers.len() as u32 - 1)
    }

    /// A session's slot is free again.
    pub(super) fn release(&mut self, slot: u32) {
        let address = self.carriers(slot).address;
        if let Some(count) = self.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
        *self.carriers(slot) = Carriers::default();
        self.free.push(slot);
    }
}

impl Shard {
    /// This shard's name for the client in `slot`.
    pub(super) fn client_ref(&self, slot: u32) -> ClientRef {
        let connection = self.connections[slot as usize]
            .as_ref()
            .expect("live connection");
        ClientRef {
            shard: self.shard_index as u16,
            slot,
            generation: connection.generation(),
        }
    }

    /// Carries out what the last read of `slot` asked of Engine.IO sessions.
    pub(super) fn handle_engine_calls(&mut self, slot: u32) -> io::Result<()> {
        let carrier = self.client_ref(slot);
        let mut calls = std::mem::take(&mut self.context.engine_calls);
        for call in calls.drain(..) {
            match call {
                EngineCall::Open { start, keep_alive } => {
                    self.open_session(carrier, start, keep_alive)?
                }
                EngineCall::Carry { session, request } => self.carry(session, carrier, request)?,
            }
        }
        self.context.engine_calls = calls;
        if self.outbox_depth > 0 {
            // As for a publisher: a carrier (a WebSocket can send packets without end) is not
            // read while what it asked of other shards waits for room in their mailboxes.
            self.pause_publisher(slot)?;
        }
        Ok(())
    }

    /// Hands a carrier's request to its session's shard.
    pub(super) fn carry(
        &mut self,
        session: SessionAddress,
        carrier: ClientRef,
        request: CarrierRequest,
    ) -> io::Result<()> {
        let target = usize::from(session.shard);
        if target == self.shard_index {
            return self.handle_session_request(session, carrier, request);
        }
        if target >= self.mailboxes.len() {
            return self.refuse_unknown(carrier, request);
        }
        self.context.counters.socketio_forwards += 1;
        let command = Command::ToSession {
            session,
            carrier,
            request,
        };
        self.send_command(target, command)
    }

    /// Hands a session's answer to its carrier's shard.
    fn answer_carrier(&mut self, carrier: ClientRef, answer: CarrierAnswer) -> io::Result<()> {
        let target = usize::from(carrier.shard);
        if target == self.shard_index {
            return self.handle_carrier_answer(carrier, answer);
        }
        self.send_command(target, Command::ToCarrier { carrier, answer })
    }

    /// A session's answer for a connection of this shard (which may have closed meanwhile:
    /// the answer is then dropped, and the session was told).
    pub(super) fn handle_carrier_answer(
        &mut self,
        carrier: ClientRef,
        answer: CarrierAnswer,
    ) -> io::Result<()> {
        let slot = carrier.slot;
        if self
            .connections
            .get(slot as usize)
            .is_none_or(Option::is_none)
        {
            return Ok(());
        }
        let connection = self.connections[slot as usize].as_mut().expect("checked");
        let closing = connection.closing != Closing::Open;
        if connection.generation() != carrier.generation
            || connection.flag(Flag::Detached)
            || closing
        {
            // On its way out, the connection sends nothing more (its session was told).
            return Ok(());
        }
        let context = &mut self.context;
        let outbound = &mut connection.outbound;
        let next = match (&mut connection.endpoint, answer) {
            (
                Endpoint::Http(http),
                CarrierAnswer::Response {
                    response,
                    keep_alive,
                },
            ) => http.answer_engine(response, keep_alive, outbound, context),
            (Endpoint::SocketIoCarrier(websocket), CarrierAnswer::Frames(frames)) => {
                websocket.take_frames(frames, outbound);
                Next::Continue
            }
            (Endpoint::SocketIoCarrier(websocket), CarrierAnswer::Close) => {
                websocket.close(CloseCode::NORMAL, "session closed", outbound, context)
            }
            // An answer for what the connection no longer is: nothing to do.
            _ => Next::Continue,
        };
        self.follow(slot, next)?;
        self.after_activity(slot)
    }

    /// A long-polling handshake checked on this shard: a session here, answered with its
    /// open packet; or 503 when the shard keeps `socketio_polling_sessions_max` already or is
    /// shutting down, 429 when the handshake's address holds
    /// `socketio_polling_sessions_per_address_max` of them.
    fn open_session(
        &mut self,
        carrier: ClientRef,
        start: SocketIoStart,
        keep_alive: bool,
    ) -> io::Result<()> {
        // A handshake is answered by the shard that read it: the carrier is this shard's.
        debug_assert_eq!(usize::from(carrier.shard), self.shard_index);
        let address = self.address_tickets[carrier.slot as usize];
        if !self.sessions.address_has_room(address) {
            self.context.counters.socketio_sessions_address_refused += 1;
            let body = b"{\"code\":4,\"message\":\"Too many sessions from this address\"}";
            let response = http_response(429, JSON_CONTENT_TYPE, body, keep_alive);
            return self.answer_carrier(carrier, response);
        }
        let slot = match self.drain_deadline_ms {
            None => self.sessions.take(),
            Some(_) => None,
        };
        let Some(slot) = slot else {
            self.context.counters.socketio_sessions_refused += 1;
            let body = b"{\"code\":4,\"message\":\"Too many sessions: retry\"}";
            let response = http_response(503, JSON_CONTENT_TYPE, body, keep_alive);
            return self.answer_carrier(carrier, response);
        };
        let index = slot as usize;
        self.generations[index] = self.generations[index].wrapping_add(1);
        let generation = self.generations[index];
        let session_id = socketio_polling::session_id(self.shard_index, slot);
        let mode = start.mode;
        self.context.engine_sessions.opened(slot, &session_id, mode);
        self.sessions.count_address(slot, address);
        let (endpoint, open) = SocketIoEndpoint::open_polling(start, session_id, &mut self.context);
        let mut connection = Connection::new(generation, Endpoint::SocketIo(Box::new(endpoint)));
        connection.set_flag(Flag::Detached, true);
        self.connections[index] = Some(connection);
        self.fanout.open_client(slot, generation);
        self.track_kind(slot, EndpointKind::Http, EndpointKind::SocketIo);
        self.context.counters.socketio_sessions_opened += 1;
        let response = http_response(200, PAYLOAD_CONTENT_TYPE, &open, keep_alive);
        self.answer_carrier(carrier, response)?;
        self.after_activity(slot)
    }

    /// The slot of the session `address` names, if it is open on this shard.
    fn session_slot(&self, address: &SessionAddress) -> Option<u32> {
        let sessions = self.connections.session_slots();
        if !sessions.contains(&address.slot) {
            return None;
        }
        let connection = self.connections[address.slot as usize].as_ref()?;
        let Endpoint::SocketIo(endpoint) = &connection.endpoint else {
            return None;
        };
        let open = connection.closing == Closing::Open;
        (open && *endpoint.session_id() == address.id).then_some(address.slot)
    }

    /// What a carrier on any shard received for a session of this shard.
    pub(super) fn handle_session_request(
        &mut self,
        address: SessionAddress,
        carrier: ClientRef,
        request: CarrierRequest,
    ) -> io::Result<()> {
        let Some(mut slot) = self.session_slot(&address) else {
            return self.refuse_unknown(carrier, request);
        };
        // The timer wheel fires a tick late at most; a deadline already past (a pong that did
        // not come in time) is acted on before the request, which then finds the session as
        // the client's clock says it is.
        let deadline_ms = self.connection_mut(slot).endpoint.deadline_ms();
        if deadline_ms <= self.context.now_ms {
            self.fire_deadline(slot)?;
            match self.session_slot(&address) {
                Some(open) => slot = open,
                None => return self.refuse_unknown(carrier, request),
            }
        }
        match request {
            CarrierRequest::Poll { keep_alive } => self.session_poll(slot, carrier, keep_alive),
            CarrierRequest::Post { body, keep_alive } => {
                self.session_post(slot, carrier, &body, keep_alive)
            }
            // Once upgraded, a session keeps its WebSocket: another naming it is closed (the
            // reference server ignores it the same way).
            CarrierRequest::Attach | CarrierRequest::Probe | CarrierRequest::Upgrade
                if self
                    .sessions
                    .carriers(slot)
                    .websocket
                    .is_some_and(|websocket| websocket != carrier) =>
            {
                self.answer_carrier(carrier, CarrierAnswer::Close)
            }
            CarrierRequest::Attach => Ok(()),
            CarrierRequest::Probe => {
                self.sessions.carriers(slot).probing = Some(carrier);
                self.release_poll(slot)
            }
            CarrierRequest::Upgrade => {
                // A GET still held (the client pauses polling before it upgrades, so only a
                // client that did not) is answered first, with what waits or `6`.
                self.release_poll(slot)?;
                let carriers = self.sessions.carriers(slot);
                carriers.probing = None;
                carriers.websocket = Some(carrier);
                self.context.counters.socketio_upgrades += 1;
                self.flush_session(slot)
            }
            CarrierRequest::Packet(packet) => {
                let connection = self.connections[slot as usize]
                    .as_mut()
                    .expect("session_slot checked");
                let Endpoint::SocketIo(endpoint) = &mut connection.endpoint else {
                    unreachable!("session_slot checked");
                };
                let next = endpoint.handle_carried_packet(
                    &packet,
                    &mut connection.outbound,
                    &mut self.context,
                );
                self.after_session_input(slot, next)
            }
            CarrierRequest::Binary(payload) => {
                let connection = self.connections[slot as usize]
                    .as_mut()
                    .expect("session_slot checked");
                let Endpoint::SocketIo(endpoint) = &mut connection.endpoint else {
                    unreachable!("session_slot checked");
                };
                let next = endpoint.handle_carried_binary(
                    &payload,
                    &mut connection.outbound,
                    &mut self.context,
                );
                self.after_session_input(slot, next)
            }
            CarrierRequest::Gone => {
                let carriers = self.sessions.carriers(slot);
                if carriers.probing == Some(carrier) {
                    carriers.probing = None;
                    return Ok(());
                }
                let polling = carriers.poll.is_some_and(|(poll, _)| poll == carrier);
                if polling {
                    carriers.poll = None;
                }
                if polling || carriers.websocket == Some(carrier) {
                    debug!("the connection carrying an Engine.IO session closed");
                    return self.close_connection(slot, CloseCode::GOING_AWAY, "transport close");
                }
                Ok(())
            }
        }
    }

    /// A request for a session this shard does not have: 400 `Session ID unknown` to a
    /// long-polling request, a close to a WebSocket.
    fn refuse_unknown(&mut self, carrier: ClientRef, request: CarrierRequest) -> io::Result<()> {
        self.context.counters.handshake_errors += 1;
        let answer = match request {
            CarrierRequest::Poll { .. } | CarrierRequest::Post { .. } => {
                http_response(400, JSON_CONTENT_TYPE, SESSION_ID_UNKNOWN, false)
            }
            CarrierRequest::Attach
            | CarrierRequest::Probe
            | CarrierRequest::Upgrade
            | CarrierRequest::Packet(_)
            | CarrierRequest::Binary(_) => CarrierAnswer::Close,
            CarrierRequest::Gone => return Ok(()),
        };
        self.answer_carrier(carrier, answer)
    }

    /// A long-polling GET: held for the next frames (answered at once when some wait, or
    /// with `6` while an upgrade is being probed). A second GET while one is held is a broken
    /// client: 400, and the session closes (the held one gets its `1`).
    fn session_poll(&mut self, slot: u32, carrier: ClientRef, keep_alive: bool) -> io::Result<()> {
        let carriers = self.sessions.carriers(slot);
        if carriers.websocket.is_some() || carriers.poll.is_some() {
            let overlapping = carriers.poll.is_some();
            self.context.counters.protocol_errors += 1;
            let response = http_response(400, JSON_CONTENT_TYPE, BAD_REQUEST, false);
            self.answer_carrier(carrier, response)?;
            if overlapping {
                debug!("a second long-polling GET while one is held: closing the session");
                return self.close_connection(slot, CloseCode::PROTOCOL_ERROR, "overlapping GET");
            }
            return Ok(());
        }
        carriers.poll = Some((carrier, keep_alive));
        let probing = carriers.probing.is_some();
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("session_slot checked");
        if !connection.outbound.is_empty() {
            return self.flush_session(slot);
        }
        if probing {
            return self.release_poll(slot);
        }
        Ok(())
    }

    /// A long-polling POST: its packets, then `ok`; a body refused is answered 400 (413 when
    /// over `maxPayload`) and closes the session.
    fn session_post(
        &mut self,
        slot: u32,
        carrier: ClientRef,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<()> {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("session_slot checked");
        let Endpoint::SocketIo(endpoint) = &mut connection.endpoint else {
            unreachable!("session_slot checked");
        };
        match endpoint.handle_payload(body, &mut connection.outbound, &mut self.context) {
            Ok(next) => {
                let response = http_response(200, POST_CONTENT_TYPE, b"ok", keep_alive);
                self.answer_carrier(carrier, response)?;
                self.after_session_input(slot, next)
            }
            Err(error) => {
                self.context.counters.protocol_errors += 1;
                debug!(reason = error.reason(), "long-polling body refused");
                let (status, body): (u16, &[u8]) = match error {
                    EngineError::TooLong => {
                        (413, b"{\"code\":3,\"message\":\"Payload too large\"}")
                    }
                    _ => (400, BAD_REQUEST),
                };
                let response = http_response(status, JSON_CONTENT_TYPE, body, false);
                self.answer_carrier(carrier, response)?;
                self.close_connection(slot, CloseCode::PROTOCOL_ERROR, error.reason())
            }
        }
    }

    /// After a session's endpoint took packets: its broker requests, what it asked for, and
    /// the frames it queued on their way.
    fn after_session_input(&mut self, slot: u32, next: Next) -> io::Result<()> {
        if !self.context.requests.is_empty() {
            self.handle_requests(slot)?;
        }
        if self.connections[slot as usize].is_none() {
            return Ok(());
        }
        self.follow(slot, next)?;
        self.after_activity(slot)
    }

    /// Answers the held GET, if any, with what is queued, or `6` when nothing is: the client
    /// probing an upgrade waits for its poll to return before it sends `5`.
    fn release_poll(&mut self, slot: u32) -> io::Result<()> {
        let carriers = *self.sessions.carriers(slot);
        let Some((poll, keep_alive)) = carriers.poll else {
            return Ok(());
        };
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live session");
        if !connection.outbound.is_empty() {
            return self.flush_session(slot);
        }
        self.sessions.carriers(slot).poll = None;
        let response = http_response(200, PAYLOAD_CONTENT_TYPE, b"6", keep_alive);
        self.answer_carrier(poll, response)
    }

    /// Hands a session's queued frames to its carrier: all of them, to the WebSocket it
    /// upgraded to as they are, or to the held GET as one long-polling body. Without a carrier
    /// they wait (within the queue's limits, the slow-consumer policy applying as to any
    /// client) for the next GET.
    pub(super) fn flush_session(&mut self, slot: u32) -> io::Result<()> {
        let carriers = *self.sessions.carriers(slot);
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("listed sessions are live");
        if connection.outbound.is_empty() {
            return Ok(());
        }
        let shared = &mut self.queue_memory.shared;
        let (carrier, answer) = if let Some(websocket) = carriers.websocket {
            let mut frames = BytesMut::with_capacity(connection.outbound.queued_bytes());
            connection
                .outbound
                .drain_frames(shared, |frame| frames.extend_from_slice(frame));
            (websocket, CarrierAnswer::Frames(frames.freeze()))
        } else if let Some((poll, keep_alive)) = carriers.poll {
            self.sessions.carriers(slot).poll = None;
            let mut body = Vec::with_capacity(connection.outbound.queued_bytes());
            connection.outbound.drain_frames(shared, |frame| {
                socketio_polling::write_frame_as_packet(frame, 0, &mut body)
            });
            let response = http_response(200, PAYLOAD_CONTENT_TYPE, &body, keep_alive);
            (poll, response)
        } else {
            return Ok(());
        };
        self.account(slot);
        self.answer_carrier(carrier, answer)?;
        // The queue drained: the broker may release what it held back for the session.
        let mut clients = shard_clients!(self);
        self.fanout.handle_sent(slot, &mut clients);
        self.after_broker()
    }

    /// A session closed: its last frames (its `1`) go to its carrier, a held GET still
    /// waiting gets `1`, an upgraded WebSocket is closed, and the slot is freed.
    pub(super) fn end_session(&mut self, slot: u32) -> io::Result<()> {
        // Marked first: flushing hands the broker a turn, which may reach this session again.
        self.connection_mut(slot).closing = Closing::Closing;
        self.flush_session(slot)?;
        let carriers = *self.sessions.carriers(slot);
        if let Some((poll, keep_alive)) = carriers.poll {
            let response = http_response(200, PAYLOAD_CONTENT_TYPE, b"1", keep_alive);
            self.answer_carrier(poll, response)?;
        }
        for websocket in [carriers.websocket, carriers.probing].into_iter().flatten() {
            self.answer_carrier(websocket, CarrierAnswer::Close)?;
        }
        // Its address stays counted until the slot is released with the connection.
        let carriers = self.sessions.carriers(slot);
        *carriers = Carriers {
            address: carriers.address,
            ..Carriers::default()
        };
        self.free_connection(slot)
    }
}

/// A whole HTTP response for a long-polling request.
fn http_response(
    status: u16,
    content_type: (&str, &str),
    body: &[u8],
    keep_alive: bool,
) -> CarrierAnswer {
    let mut response = BytesMut::with_capacity(body.len() + 160);
    write_response(status, &[content_type], body, keep_alive, &mut response);
    CarrierAnswer::Response {
        response: response.freeze(),
        keep_alive,
    }
}
