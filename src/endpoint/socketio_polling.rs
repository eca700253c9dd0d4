//! Engine.IO sessions that outlive one connection: long polling and the upgrade to WebSocket.
//!
//! A long-polling session is a Socket.IO client with no connection of its own. Its state is the
//! very [`SocketIoEndpoint`](super::socketio::SocketIoEndpoint) a WebSocket client has (the
//! same namespace, subscriptions, acknowledgements, heartbeat and recovery), kept by the shard
//! that opened it in a slot beyond its connection table, and it is a client of that shard's
//! broker like any connection. Its queue holds WebSocket frames, as a WebSocket client's
//! would; the connections that carry it turn them into what they speak:
//!
//! - a long-polling GET takes every queued frame as one body, the frames' payloads joined by
//!   `\x1e` ([`write_frame_as_packet`]), or is held until one is queued;
//! - a long-polling POST hands its body's packets to the session, answered `ok`;
//! - a WebSocket opened with `transport=websocket&sid=…` answers `2probe` itself, and after
//!   `5` takes the queued frames as they are ([`CarrierEndpoint`]).
//!
//! Each request is a new TCP connection that any shard may accept, so the session id names
//! its owner (shard and slot, then 96 random bits: [`session_id`]), and a connection on another
//! shard forwards what it received through the shards' mailboxes and sends the owner's answer
//! (`broker::command::{CarrierRequest, CarrierAnswer}`). Forwarding was chosen over moving the
//! session: its subscriptions, queued frames and pending acknowledgements stay with the broker
//! client that has them, so nothing queued can be lost or delivered twice across a switch of
//! carrier, and any carrier on any shard sees the one queue in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tracing::debug;

use super::outbound::Outbound;
use super::socketio::{EngineMode, SocketIoStart};
use super::{Context, Next};
use crate::broker::command::{CarrierRequest, SESSION_ID_BYTES, SessionAddress};
use crate::broker::event::{CLOSE_CODE_ABNORMAL, CLOSE_CODE_NONE_GIVEN, CloseReason};
use crate::protocol::CloseCode;
use crate::protocol::engineio;
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::frame::{FrameHead, OpCode};
use crate::protocol::websocket::session::{Event, MessageKind, Session, SessionState};

/// What an endpoint asks of its shard about an Engine.IO session (left in
/// [`Context::engine_calls`]).
#[derive(Debug)]
pub enum EngineCall {
    /// A long-polling handshake was checked: open a session and answer its open packet.
    Open {
        start: SocketIoStart,
        keep_alive: bool,
    },
    /// Hand `request` to the session's shard.
    Carry {
        session: SessionAddress,
        request: CarrierRequest,
    },
}

/// Characters of a session id that name its owner: the shard (12 bits) and slot (24 bits).
const OWNER_CHARACTERS: usize = 6;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// The largest shard and slot an id can name.
pub const SESSION_SHARD_MAX: usize = (1 << 12) - 1;
pub const SESSION_SLOT_MAX: usize = (1 << 24) - 1;

/// A session id naming `shard` and `slot`, then 96 random bits from the system's generator
/// (the id is the session's only credential: it must not be guessable).
pub fn session_id(shard: usize, slot: u32) -> [u8; SESSION_ID_BYTES] {
    use base64::Engine as _;
    assert!(shard <= SESSION_SHARD_MAX && slot as usize <= SESSION_SLOT_MAX);
    let owner = ((shard as u64) << 24) | u64::from(slot);
    let mut id = [0u8; SESSION_ID_BYTES];
    for (index, character) in id[..OWNER_CHARACTERS].iter_mut().enumerate() {
        let shift = 6 * (OWNER_CHARACTERS - 1 - index);
        *character = ALPHABET[((owner >> shift) & 0x3f) as usize];
    }
    let mut random = [0u8; 12];
    // As for WebSocket sessions' ids: the system generator does not fail once booted.
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        random.copy_from_slice(&fastrand::u128(..).to_le_bytes()[..12]);
    }
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(random, &mut id[OWNER_CHARACTERS..])
        .expect("16 characters hold 12 bytes");
    assert_eq!(written, SESSION_ID_BYTES - OWNER_CHARACTERS);
    id
}

/// Where the session `id` lives, or `None` when it is not an id of this server's shape (it is
/// then unknown, as the owner would find it).
pub fn session_address(id: &str) -> Option<SessionAddress> {
    let bytes = id.as_bytes();
    if bytes.len() != SESSION_ID_BYTES {
        return None;
    }
    if !bytes.iter().all(|byte| ALPHABET.contains(byte)) {
        return None;
    }
    let owner = bytes[..OWNER_CHARACTERS].iter().fold(0u64, |owner, byte| {
        let value = ALPHABET.iter().position(|character| character == byte);
        (owner << 6) | value.unwrap_or(0) as u64
    });
    Some(SessionAddress {
        shard: (owner >> 24) as u16,
        slot: (owner & SESSION_SLOT_MAX as u64) as u32,
        id: bytes.try_into().expect("length checked"),
    })
}

/// What a shard knows of a session id before asking any other shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionWhere {
    /// Open on this shard (a request for it may still find it closing: its shard decides).
    Here,
    /// Open on another shard of this server, as far as the directory tells (that shard checks
    /// the whole id, and may find the session closing).
    OtherShard,
    /// Not a session: no open session of any shard has that id in that slot, or it names no
    /// shard of this server.
    Unknown,
}

/// Every shard's open sessions, by shard and slot, as a 32-bit mark of each one's id (0: no
/// session): enough for a WebSocket naming a session, on whatever shard it lands, to be
/// refused before its 101 when no shard has that session (the reference server's 400
/// `Session ID unknown`). Each shard writes only its own row, when a session opens and when
/// its slot is freed; every shard reads any row, without waiting for the owner. A mark is a
/// filter, not the credential: an id that matches one still goes to its shard, which compares
/// the whole id. 4 bytes per session slot of every shard (64 KiB a shard at the default
/// 16,384), made at start-up and only when long polling is served.
#[derive(Debug)]
pub struct SessionDirectory {
    shard_count: usize,
    /// The first session slot (after the connection table's); the same on every shard.
    slot_start: u32,
    slots_per_shard: usize,
    marks: Box<[AtomicU32]>,
}

impl SessionDirectory {
    pub fn new(shard_count: usize, slot_start: usize, slots_per_shard: usize) -> SessionDirectory {
        let marks = (0..shard_count * slots_per_shard)
            .map(|_| AtomicU32::new(0))
            .collect();
        SessionDirectory {
            shard_count,
            slot_start: slot_start as u32,
            slots_per_shard,
            marks,
        }
    }

    fn entry(&self, shard: usize, slot: u32) -> Option<&AtomicU32> {
        let index = slot.checked_sub(self.slot_start)? as usize;
        if shard >= self.shard_count || index >= self.slots_per_shard {
            return None;
        }
        self.marks.get(shard * self.slots_per_shard + index)
    }
}

/// The mark of a session id in the directory, for sessions of `mode`: never 0 (no session).
/// The mode is in it so that a session is unknown at the other path (an echo session at
/// `socketio_path`, a Socket.IO session at `engineio_echo_path`), as on two servers.
fn mark(id: &[u8; SESSION_ID_BYTES], mode: EngineMode) -> u32 {
    let seed = match mode {
        EngineMode::SocketIo => 0,
        EngineMode::Echo => 1,
    };
    (xxhash_rust::xxh3::xxh3_64_with_seed(id, seed) as u32).max(1)
}

/// One shard's view of the [`SessionDirectory`]: it records its own sessions and places any
/// id before a connection is upgraded or a request forwarded.
#[derive(Debug, Default)]
pub struct LocalSessions {
    shard_index: usize,
    /// `None` (endpoints tested without one): every id is another shard's to judge.
    directory: Option<Arc<SessionDirectory>>,
}

impl LocalSessions {
    pub fn new(shard_index: usize, directory: Arc<SessionDirectory>) -> LocalSessions {
        LocalSessions {
            shard_index,
            directory: Some(directory),
        }
    }

    /// A session of `mode` opened in `slot` under `id`.
    pub fn opened(&mut self, slot: u32, id: &[u8; SESSION_ID_BYTES], mode: EngineMode) {
        if let Some(entry) = self.own_entry(slot) {
            // Release: a shard that reads the mark after the client learnt the id (which
            // goes out after this) finds it.
            entry.store(mark(id, mode), Ordering::Release);
        }
    }

    /// The session in `slot` is gone.
    pub fn closed(&mut self, slot: u32) {
        if let Some(entry) = self.own_entry(slot) {
            entry.store(0, Ordering::Release);
        }
    }

    fn own_entry(&self, slot: u32) -> Option<&AtomicU32> {
        self.directory.as_ref()?.entry(self.shard_index, slot)
    }

    /// Where the session `address` names is, for a request at the path of `mode`.
    pub fn locate(&self, address: &SessionAddress, mode: EngineMode) -> SessionWhere {
        let Some(directory) = &self.directory else {
            return SessionWhere::OtherShard;
        };
        let shard = usize::from(address.shard);
        let entry = directory.entry(shard, address.slot);
        let expected = mark(&address.id, mode);
        match entry.map(|entry| entry.load(Ordering::Acquire)) {
            Some(found) if found == expected && shard == self.shard_index => SessionWhere::Here,
            Some(found) if found == expected => SessionWhere::OtherShard,
            _ => SessionWhere::Unknown,
        }
    }
}

/// Appends the Engine.IO packet one queued WebSocket frame of a session carries to a
/// long-polling body: a text frame's payload as it is, a binary frame's as `b<base64>`,
/// preceded by `\x1e` unless it is the body's first (the body starts at `body_start`). The
/// frames are the server's own (unmasked, whole); one that does not parse is a bug, and is
/// skipped rather than sent broken.
pub fn write_frame_as_packet(frame: &[u8], body_start: usize, out: &mut Vec<u8>) {
    let head = match FrameHead::parse(frame) {
        Ok(Some(head)) if head.mask.is_none() && head.fin => head,
        _ => {
            debug_assert!(false, "a session queued a frame that does not parse");
            return;
        }
    };
    let start = usize::from(head.head_bytes);
    let Some(payload) = frame.get(start..start + head.payload_bytes as usize) else {
        debug_assert!(false, "a session queued a cut frame");
        return;
    };
    match head.opcode {
        OpCode::Text => {
            engineio::write_separator_if_needed(body_start, out);
            out.extend_from_slice(payload);
        }
        OpCode::Binary => {
            engineio::write_separator_if_needed(body_start, out);
            engineio::write_binary_for_polling(payload, out);
        }
        // Sessions queue no WebSocket control frames: their close is Engine.IO's `1`.
        _ => debug_assert!(false, "a session queued a control frame"),
    }
}

/// The WebSocket a long-polling session upgrades to (`transport=websocket&sid=…`), on
/// whichever shard accepted it. It answers the probe itself and forwards every other packet
/// to the session's shard; the session's frames come back to it once the client sent `5`.
/// The session keeps the heartbeat: its pings come through here, the pongs go back.
#[derive(Debug)]
pub struct CarrierEndpoint {
    session: Session,
    address: SessionAddress,
    /// The client sent `5`: the session is carried here from now on.
    upgraded: bool,
    /// The upgrade must come by then (the shard's clock), so that a probe cannot hold a
    /// connection open without moving the session onto it.
    upgrade_by_ms: u64,
    close_by_ms: u64,
    close_code: u16,
    close_reason: Option<CloseReason>,
}

impl CarrierEndpoint {
    pub fn new(address: SessionAddress, context: &Context) -> CarrierEndpoint {
        CarrierEndpoint {
            session: Session::new(),
            address,
            upgraded: false,
            upgrade_by_ms: context.now_ms + context.settings.handshake_timeout_ms,
            close_by_ms: u64::MAX,
            close_code: CLOSE_CODE_ABNORMAL,
            close_reason: None,
        }
    }

    /// The session this connection carries (told when the connection closes).
    pub fn address(&self) -> SessionAddress {
        self.address
    }

    pub fn deadline_ms(&self) -> u64 {
        match self.session.state() {
            SessionState::Open if !self.upgraded => self.upgrade_by_ms,
            SessionState::Open => u64::MAX,
            _ => self.close_by_ms,
        }
    }

    pub fn close_record(&self) -> (u16, CloseReason) {
        let reason = self.close_reason.clone();
        (self.close_code, reason.unwrap_or(CloseReason::Static("")))
    }

    /// Reads frames: `2probe` is answered here, `5` and every other packet (binary messages
    /// too) go to the session's shard.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        let Context {
            pool,
            encoder,
            settings,
            counters,
            engine_calls,
            ..
        } = &mut *context;
        let mut reader = self.session.handle_read(input, pool, &settings.protocol);
        let mut refused = None;
        while let Some(result) = reader.next_event() {
            match result {
                Ok(Event::Message {
                    kind: MessageKind::Text,
                    payload,
                }) if refused.is_none() => {
                    counters.messages_received += 1;
                    let request = match payload {
                        b"2probe" => {
                            outbound.push_control(encoder.encode(OpCode::Text, true, b"3probe"));
                            CarrierRequest::Probe
                        }
                        b"5" => {
                            self.upgraded = true;
                            CarrierRequest::Upgrade
                        }
                        _ if payload.len() > settings.socketio.engineio_payload_bytes_max => {
                            refused = Some(CloseCode::MESSAGE_TOO_BIG);
                            continue;
                        }
                        _ => CarrierRequest::Packet(Bytes::copy_from_slice(payload)),
                    };
                    engine_calls.push(EngineCall::Carry {
                        session: self.address,
                        request,
                    });
                }
                Ok(Event::Message {
                    kind: MessageKind::Binary,
                    payload,
                }) if refused.is_none() => {
                    counters.messages_received += 1;
                    if payload.len() > settings.socketio.engineio_payload_bytes_max {
                        refused = Some(CloseCode::MESSAGE_TOO_BIG);
                        continue;
                    }
                    engine_calls.push(EngineCall::Carry {
                        session: self.address,
                        request: CarrierRequest::Binary(Bytes::copy_from_slice(payload)),
                    });
                }
                Ok(Event::Close { code, .. }) => {
                    if self.close_reason.is_none() {
                        self.close_code = code.map_or(CLOSE_CODE_NONE_GIVEN, |code| code.0);
                        self.close_reason = Some(CloseReason::Static(""));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    counters.protocol_errors += 1;
                    debug!(%error, "Socket.IO carrier broke the WebSocket protocol");
                    if self.close_reason.is_none() {
                        self.close_code = error.close_code().0;
                        self.close_reason = Some(CloseReason::Static(error.close_reason()));
                    }
                }
            }
            while let Some(frame) = reader.poll_transmit() {
                outbound.push_control(encoder.copy(frame.as_bytes()));
            }
        }
        drop(reader);
        if let Some(code) = refused {
            return self.close(code, "Engine.IO packet too long", outbound, context);
        }
        self.flush_transmits(outbound, context)
    }

    /// The session's frames, to send as they are.
    pub fn take_frames(&mut self, frames: Bytes, outbound: &mut Outbound) {
        if self.session.state() == SessionState::Open {
            outbound.push_control(frames);
        }
    }

    /// Starts the close handshake (the session ended, the upgrade did not come, shutdown).
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        if self.session.state() == SessionState::Open && self.close_reason.is_none() {
            self.close_code = code.0;
            self.close_reason = Some(CloseReason::Static(reason));
        }
        self.session.close(code, reason);
        self.flush_transmits(outbound, context)
    }

    /// The deadline passed: the upgrade did not come, or the close handshake was ignored.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        match self.session.state() {
            SessionState::Open => {
                context.counters.handshake_timeouts += 1;
                let code = CloseCode::POLICY_VIOLATION;
                self.close(code, "no Engine.IO upgrade in time", outbound, context)
            }
            _ => {
                context.counters.close_timeouts += 1;
                Next::ShutDownNow
            }
        }
    }

    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.session.release_buffers(pool);
    }

    fn flush_transmits(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        while let Some(frame) = self.session.poll_transmit(&mut context.pool) {
            outbound.push_control(context.encoder.copy(frame.as_bytes()));
        }
        match self.session.state() {
            SessionState::Open => Next::Continue,
            SessionState::CloseSent => {
                if self.close_by_ms == u64::MAX {
                    self.close_by_ms = context.now_ms + context.settings.close_timeout_ms;
                }
                Next::Continue
            }
            SessionState::Closed => Next::CloseAfterFlush,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::endpoint::outbound::SharedFrames;
    use crate::endpoint::socketio::SocketIoEndpoint;
    use crate::protocol::engineio::EngineError;
    use crate::protocol::websocket::frame::encode_frame;

    /// What a GET would take from a session's queue: its body.
    fn polled(outbound: &mut Outbound) -> String {
        let mut body = Vec::new();
        outbound.drain_frames(&mut SharedFrames::default(), |frame| {
            write_frame_as_packet(frame, 0, &mut body)
        });
        String::from_utf8(body).expect("UTF-8")
    }

    /// Proves a long-polling session without sockets: its open packet offers the upgrade and
    /// names the session; a body's packets are handled in order (the CONNECT answered, an
    /// event acknowledged and handed to the broker); a body over `maxPayload` or malformed is
    /// refused whole, before any of its packets acts; the close queues `1`, after which the
    /// session takes no message.
    #[test]
    fn a_polling_session_takes_bodies_within_bounds() {
        let mut context = crate::endpoint::http::tests::context(16);
        let settings = Arc::get_mut(&mut context.settings).expect("not shared yet");
        settings.socketio.engineio_payload_bytes_max = 64;
        let start = SocketIoStart {
            identity: None,
            token_pending: false,
            mode: crate::endpoint::socketio::EngineMode::SocketIo,
        };
        let (mut endpoint, open) =
            SocketIoEndpoint::open_polling(start, session_id(0, 5), &mut context);
        let open = String::from_utf8(open).expect("UTF-8");
        assert!(open.starts_with("0{\"sid\":\"AAAAAF"), "{open}");
        assert!(open.contains("\"upgrades\":[\"websocket\"]"), "{open}");
        let mut outbound = Outbound::default();
        let body = b"40\x1e421[\"subscribe\",{\"topics\":[\"A\"]}]";
        let next = endpoint.handle_payload(body, &mut outbound, &mut context);
        assert_eq!(next, Ok(Next::Continue));
        let answer = polled(&mut outbound);
        let packets: Vec<&str> = answer.split('\x1e').collect();
        assert!(packets[0].starts_with("40{\"sid\":\"AAAAAF"), "{answer}");
        assert_eq!(packets[1], "431[]", "{answer}");
        assert_eq!(context.requests.len(), 1);
        assert!(endpoint.takes_messages());

        let long = [b'4'; 65];
        let refused = endpoint.handle_payload(&long, &mut outbound, &mut context);
        assert_eq!(refused, Err(EngineError::TooLong));
        let refused = endpoint.handle_payload(b"40\x1e9", &mut outbound, &mut context);
        assert_eq!(refused, Err(EngineError::UnknownType(b'9')));
        assert!(outbound.is_empty(), "nothing of a refused body acted");

        let next = endpoint.close(CloseCode::NORMAL, "done", &mut outbound, &mut context);
        assert_eq!(next, Next::CloseAfterFlush);
        assert_eq!(polled(&mut outbound), "1");
        assert!(!endpoint.takes_messages());
    }

    /// Proves an echo session without sockets: message packets come back as they came (text
    /// as text, `b<base64>` as binary, which a body writes `b<base64>` again), with no
    /// Socket.IO layer (`40` is echoed, not answered, and nothing goes to the broker) and no
    /// CONNECT deadline; a session whose echoes would pass its queue's limits is closed (`1`).
    #[test]
    fn an_echo_session_sends_messages_back_within_its_queue() {
        let mut context = crate::endpoint::http::tests::context(16);
        let settings = Arc::get_mut(&mut context.settings).expect("not shared yet");
        settings.outbound_queue_bytes_max = 64;
        let start = SocketIoStart {
            identity: None,
            token_pending: false,
            mode: crate::endpoint::socketio::EngineMode::Echo,
        };
        let (mut endpoint, _) =
            SocketIoEndpoint::open_polling(start, session_id(0, 1), &mut context);
        let ping_due_ms = context.now_ms + context.settings.socketio.ping_interval_ms;
        assert_eq!(
            endpoint.deadline_ms(),
            ping_due_ms,
            "no CONNECT to wait for"
        );
        let mut outbound = Outbound::default();
        let body = b"4hello\x1ebAQIDBA==\x1e40\x1e2probe";
        let next = endpoint.handle_payload(body, &mut outbound, &mut context);
        assert_eq!(next, Ok(Next::Continue));
        assert_eq!(polled(&mut outbound), "4hello\x1ebAQIDBA==\x1e40\x1e3probe");
        assert!(context.requests.is_empty());
        assert!(!endpoint.takes_messages());

        // 40 bytes queued, then 40 more would pass 64: the session closes at the second.
        let forty = [b"4".as_slice(), &[b'x'; 37]].concat();
        let next = endpoint.handle_payload(&forty, &mut outbound, &mut context);
        assert_eq!(next, Ok(Next::Continue));
        let next = endpoint.handle_payload(&forty, &mut outbound, &mut context);
        assert_eq!(next, Ok(Next::CloseAfterFlush));
        let answer = polled(&mut outbound);
        assert_eq!(
            answer.split('\x1e').collect::<Vec<_>>(),
            [&forty[..], b"1"].map(|p| std::str::from_utf8(p).unwrap())
        );
    }

    /// A session id names its owner's shard and slot, and reads back as them.
    #[test]
    fn session_ids_name_their_owner() {
        for (shard, slot) in [
            (0, 0),
            (1, 70_000),
            (SESSION_SHARD_MAX, SESSION_SLOT_MAX as u32),
        ] {
            let id = session_id(shard, slot);
            let text = std::str::from_utf8(&id).expect("ASCII");
            let address = session_address(text).expect("an id of ours");
            assert_eq!((address.shard as usize, address.slot), (shard, slot));
            assert_eq!(address.id, id);
        }
        assert_ne!(session_id(3, 9), session_id(3, 9), "96 random bits");
    }

    const SOCKETIO: EngineMode = EngineMode::SocketIo;

    /// Proves shards tell open sessions, theirs and the others', from ids that cannot be one
    /// (a free slot, a slot of another session, a shard or slot the server does not have, a
    /// session of the other path), and forget a session once its slot is freed.
    #[test]
    fn shards_know_every_open_session() {
        let directory = Arc::new(SessionDirectory::new(3, 100, 8));
        let mut first = LocalSessions::new(1, Arc::clone(&directory));
        let mut second = LocalSessions::new(2, Arc::clone(&directory));
        let id = session_id(1, 105);
        let address = |id: &[u8; SESSION_ID_BYTES]| {
            session_address(std::str::from_utf8(id).expect("ASCII")).expect("ours")
        };
        assert_eq!(first.locate(&address(&id), SOCKETIO), SessionWhere::Unknown);
        assert_eq!(
            second.locate(&address(&id), SOCKETIO),
            SessionWhere::Unknown
        );
        first.opened(105, &id, EngineMode::SocketIo);
        assert_eq!(first.locate(&address(&id), SOCKETIO), SessionWhere::Here);
        assert_eq!(
            second.locate(&address(&id), SOCKETIO),
            SessionWhere::OtherShard
        );
        let impostor = session_id(1, 105);
        assert_eq!(
            first.locate(&address(&impostor), SOCKETIO),
            SessionWhere::Unknown
        );
        assert_eq!(
            second.locate(&address(&impostor), SOCKETIO),
            SessionWhere::Unknown
        );
        for (shard, slot) in [(1, 104), (1, 5), (1, 106), (1, 108), (2, 105), (3, 105)] {
            let other = session_id(shard, slot);
            assert_eq!(
                first.locate(&address(&other), SOCKETIO),
                SessionWhere::Unknown
            );
            assert_eq!(
                second.locate(&address(&other), SOCKETIO),
                SessionWhere::Unknown
            );
        }
        let theirs = session_id(2, 107);
        second.opened(107, &theirs, EngineMode::SocketIo);
        assert_eq!(
            first.locate(&address(&theirs), SOCKETIO),
            SessionWhere::OtherShard
        );
        assert_eq!(
            second.locate(&address(&theirs), SOCKETIO),
            SessionWhere::Here
        );
        assert_eq!(
            first.locate(&address(&id), EngineMode::Echo),
            SessionWhere::Unknown,
            "a Socket.IO session is unknown at the echo path"
        );
        assert_eq!(
            second.locate(&address(&id), EngineMode::Echo),
            SessionWhere::Unknown
        );
        first.closed(105);
        first.closed(7);
        assert_eq!(first.locate(&address(&id), SOCKETIO), SessionWhere::Unknown);
        assert_eq!(
            second.locate(&address(&id), SOCKETIO),
            SessionWhere::Unknown
        );
        let untold = LocalSessions::default();
        assert_eq!(
            untold.locate(&address(&id), SOCKETIO),
            SessionWhere::OtherShard
        );
    }

    /// Ids of another shape are unknown before any shard is asked.
    #[test]
    fn foreign_ids_are_refused() {
        for id in [
            "",
            "short",
            "AAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "é",
        ] {
            assert_eq!(session_address(id), None, "{id:?}");
        }
    }

    /// Queued frames become a long-polling body: payloads joined by `\x1e`, binary in base64.
    #[test]
    fn frames_become_a_payload() {
        let mut long = vec![b'x'; 70_000];
        long[0] = b'4';
        let frames = [
            encode_frame(OpCode::Text, true, b"2"),
            encode_frame(OpCode::Text, true, b"42[\"message\",{}]"),
            encode_frame(OpCode::Binary, true, &[1, 2, 3]),
            encode_frame(OpCode::Text, true, &long),
        ];
        let mut body = b"HTTP head".to_vec();
        let body_start = body.len();
        for frame in &frames {
            write_frame_as_packet(frame, body_start, &mut body);
        }
        let mut expected = b"HTTP head2\x1e42[\"message\",{}]\x1ebAQID\x1e".to_vec();
        expected.extend_from_slice(&long);
        assert_eq!(body, expected);
        let packets: Vec<_> = engineio::parse_payload(&body[body_start..], &Default::default())
            .expect("a body the reference client reads")
            .collect();
        assert_eq!(packets.len(), 4);
    }
}
