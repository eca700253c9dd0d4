//! Socket.IO clients over WebSocket: Engine.IO v4 (open packet, server-driven heartbeat) under
//! Socket.IO v5 on the main namespace `/`, speaking ringcast's pub/sub as events. The same
//! endpoint is the state of a long-polling session (`socketio_polling`): its packets then come
//! from POST bodies or the WebSocket it upgraded to, and its frames leave through whichever
//! connection carries it.
//!
//! A connection upgraded at `socketio_path` (`/socket.io/?EIO=4&transport=websocket`) is sent
//! the Engine.IO open packet at once. Its first Socket.IO packet must be a CONNECT: to `/` it is
//! answered `40{"sid":…}` (after the token in its `auth` payload is checked, when the upgrade
//! carried none), to any other namespace `44<nsp>,{"message":"Invalid namespace"}`; anything
//! else first closes the connection, as the protocol asks. After that the client's events are
//! ringcast's requests with the event's name as the `op`:
//!
//! - `["subscribe",{"topics":[…],"since":{…}}]`, `["unsubscribe",{"topics":[…]}]`,
//!   `["refresh",{"token":…}]`: acknowledged (when the client asks) with `[]` once the
//!   requests are handed to the broker, or with `[{"op":"error","reason":…}]`;
//! - `["publish",{"topic":…,"data":…}]`: acknowledged with `[{"op":"published","seq":…}]` once
//!   the topic's owner numbered it, or `[{"op":"error","reason":…}]`.
//!
//! The server's messages are events too: `["message",{"topic","seq","data"}]` for each delivery
//! (framed once per shard by the frame cache, like every other kind of endpoint), and
//! `subscribed`, `reset`, `unsubscribed`, `published`, `refreshed` and `error` carrying the same
//! JSON as `/ws` sends.
//!
//! The heartbeat is Engine.IO's: the server sends `2` every `ping_interval_ms` and closes the
//! connection when no `3` comes within `ping_timeout_ms`. WebSocket pings are answered as
//! always but are not the heartbeat (browsers cannot send them).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::outbound::Outbound;
use super::stream::TopicPositions;
use super::websocket::{Access, TOKEN_EXPIRED};
use super::{Context, EndpointCounters, EndpointSettings, Next};
use crate::auth::{AuthFailure, Identity};
use crate::broker::cursor::{CURSOR_TOPICS_LIMIT, Position};
use crate::broker::event::{CLOSE_CODE_ABNORMAL, CLOSE_CODE_NONE_GIVEN, CloseReason};
use crate::broker::grants::{Grants, TopicPatterns};
use crate::broker::idempotency::IdempotencyKey;
use crate::broker::owner::OwnerError;
use crate::broker::owner::Since;
use crate::broker::request::{Request, parse_event};
use crate::broker::topic::{Epoch, TOPIC_BYTES_LIMIT};
use crate::broker::{BrokerRequest, Message, Reply, TopicName};
use crate::protocol::CloseCode;
use crate::protocol::decimal::decimal;
use crate::protocol::engineio::{
    self, EngineError, EngineLimits, OpenSettings, PacketData, PacketType,
};
use crate::protocol::pool::BufferPool;
use crate::protocol::socketio::{
    self, MAIN_NAMESPACE, SocketLimits, SocketPacket, SocketPacketType,
};
use crate::protocol::websocket::frame::{FrameEncoder, HEAD_BYTES_MAX, OpCode, text_frame_head};
use crate::protocol::websocket::session::{Event, MessageKind, Session, SessionState};

/// Characters of a session id: 16 random bytes in base64url without padding (a long-polling
/// session's id also names its shard and slot: `socketio_polling::session_id`).
pub use crate::broker::command::SESSION_ID_BYTES;

/// The largest `socketio_polling_sessions_max`: with the largest connection table, a session's
/// slot still fits the 24 bits its id names it in (`config` asserts it).
pub const POLLING_SESSIONS_LIMIT: usize = 1 << 20;

/// Why a session ends when the client sends Engine.IO's close packet `1`.
const CLIENT_CLOSE: &str = "Engine.IO close";

/// The Engine.IO ping, the one text frame the heartbeat sends: `2`.
const PING_FRAME: &[u8] = b"\x81\x012";

/// Settings of the Socket.IO endpoint (`[socketio]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Serve Socket.IO clients at `socketio_path`. Default on: it costs nothing until a client
    /// comes.
    pub socketio_enabled: bool,
    /// Where Socket.IO clients connect. Default `/socket.io/`, socket.io-client's default
    /// `path`; a request for it without the trailing slash is taken too.
    pub socketio_path: String,
    /// How often the server pings (Engine.IO's `pingInterval`). Default 25 s, the reference
    /// server's: below most proxies' idle timeouts, and rare enough to cost nothing.
    pub ping_interval_ms: u64,
    /// How long a ping may go unanswered before the connection is closed (`pingTimeout`).
    /// Default 20 s, the reference server's.
    pub ping_timeout_ms: u64,
    /// Bytes of one Engine.IO packet (announced as `maxPayload`). Default 1,000,000, the
    /// reference server's `maxHttpBufferSize`; WebSocket frames are held to
    /// `message_bytes_max` besides.
    pub engineio_payload_bytes_max: usize,
    /// Bytes of a namespace name in a Socket.IO packet. Default 128: `/` is the only one
    /// served, and a refusal echoes the name back.
    pub socketio_namespace_bytes_max: usize,
    /// Publishes of one connection waiting for their acknowledgement (the owner's seq).
    /// Default 256: owners answer within a turn or two, so only a client publishing far
    /// faster than its shard can forward comes near; past it a publish is refused at once.
    pub socketio_acks_pending_max: usize,
    /// Serve Engine.IO's long polling (and the upgrade from it to WebSocket) besides
    /// WebSocket. Default on: it is socket.io-client's default first transport.
    pub socketio_polling_enabled: bool,
    /// Long-polling sessions one shard keeps at once (each a client of its broker without a
    /// connection of its own, in a slot beyond `connections_per_shard_max`), upgraded ones
    /// included: a session keeps its slot when it moves onto a WebSocket, so with the
    /// client's default transports every Socket.IO client holds one. Default 16,384, the
    /// default `connections_per_shard_max`. A slot costs about 700 bytes once first used
    /// (its queue is held to `outbound_queue_bytes_max` like any connection's) and about 65
    /// bytes of fixed tables until then; past the limit a handshake is answered 503 and the
    /// client retries.
    pub socketio_polling_sessions_max: usize,
    /// Long-polling sessions one client address (an IPv6 client's /64) may hold on one shard,
    /// so that one client cannot take every slot. Default 64: a browser opens one per tab,
    /// and a NAT of a few dozen users stays below it; past it a handshake is answered 429
    /// and counted. Counted under the address table of `connections_per_ip_max`: an address
    /// it does not track (per-address limits off, or the table full) is not held to it.
    pub socketio_polling_sessions_per_address_max: usize,
    /// Where an Engine.IO echo server is served (conformance and tests: the official
    /// engine.io-protocol suite runs against it): the same Engine.IO sessions as
    /// `socketio_path` (polling, WebSocket, the upgrade, the heartbeat and every limit), but
    /// each message packet is sent back on its session instead of being read as Socket.IO.
    /// Default empty: not served. `/engine.io/` is the suite's path.
    pub engineio_echo_path: String,
    /// Origins whose pages may long-poll from a browser (CORS, the reference server's `cors`
    /// option): `"*"` for any, or origins as browsers send them (`https://app.example`), at
    /// most 64. Default empty: no CORS headers, so browsers refuse polling from another
    /// origin (WebSocket needs none). A listed origin is echoed with credentials allowed.
    pub socketio_cors_origins: Vec<String>,
    /// How often, at most, a client's `cursor` event (its connection-state-recovery offset)
    /// goes out while messages move it. Default 250 ms: sent after every turn with a message,
    /// it was a second WebSocket message per delivery to a subscriber getting a few messages
    /// a second. A subscription's change (`subscribed`, `reset`, `unsubscribed`) still
    /// sends it at the end of its turn. A client that reconnects gets again what came after
    /// its last `cursor` event (the same seqs: it drops what it has seen), so a longer
    /// interval repeats more on a recovery and must stay well inside the topics' history;
    /// 0 sends it at the end of every turn in which it moved. A client of one topic finds
    /// its offset in each message instead ([`OneTopicOffset`]) and owes no `cursor` event for it.
    pub socketio_cursor_interval_ms: u64,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            socketio_enabled: true,
            socketio_path: "/socket.io/".into(),
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            engineio_payload_bytes_max: EngineLimits::default().payload_bytes_max,
            socketio_namespace_bytes_max: SocketLimits::default().namespace_bytes_max,
            socketio_acks_pending_max: 256,
            socketio_polling_enabled: true,
            socketio_polling_sessions_max: 16_384,
            socketio_polling_sessions_per_address_max: 64,
            engineio_echo_path: String::new(),
            socketio_cors_origins: Vec::new(),
            socketio_cursor_interval_ms: 250,
        }
    }
}

/// What the Engine.IO sessions of a path carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineMode {
    /// Socket.IO v5 on `/`: ringcast's pub/sub (`socketio_path`).
    SocketIo,
    /// Message packets sent back as they came (`engineio_echo_path`).
    Echo,
}

impl SocketIoConfig {
    /// Whether a request for `path` is for Engine.IO sessions, and what they carry.
    pub fn engine_mode(&self, path: &str) -> Option<EngineMode> {
        let at = |served: &str| path == served || path == served.trim_end_matches('/');
        if self.socketio_enabled && at(&self.socketio_path) {
            return Some(EngineMode::SocketIo);
        }
        if !self.engineio_echo_path.is_empty() && at(&self.engineio_echo_path) {
            return Some(EngineMode::Echo);
        }
        None
    }

    pub fn engine_limits(&self) -> EngineLimits {
        EngineLimits {
            payload_bytes_max: self.engineio_payload_bytes_max,
            ..EngineLimits::default()
        }
    }

    pub fn socket_limits(&self) -> SocketLimits {
        SocketLimits {
            namespace_bytes_max: self.socketio_namespace_bytes_max,
            ..SocketLimits::default()
        }
    }

    /// Checks the settings at start-up; the error names the setting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.socketio_path.starts_with('/') || self.socketio_path.contains(['?', '#', ' ']) {
            let reason = "a path starting with / without ?, # or spaces".into();
            return Err(("socketio_path", reason));
        }
        super::cors::validate_origins(&self.socketio_cors_origins)
            .map_err(|reason| ("socketio_cors_origins", reason))?;
        let echo_path = &self.engineio_echo_path;
        if !echo_path.is_empty() {
            let trimmed = |path: &str| path.trim_end_matches('/').to_owned();
            if !echo_path.starts_with('/') || echo_path.contains(['?', '#', ' ']) {
                let reason = "empty, or a path starting with / without ?, # or spaces".into();
                return Err(("engineio_echo_path", reason));
            }
            if trimmed(echo_path) == trimmed(&self.socketio_path) {
                let reason = "a path other than socketio_path".into();
                return Err(("engineio_echo_path", reason));
            }
        }
        let positive = [
            ("ping_interval_ms", self.ping_interval_ms as usize),
            ("ping_timeout_ms", self.ping_timeout_ms as usize),
            (
                "engineio_payload_bytes_max",
                self.engineio_payload_bytes_max,
            ),
            (
                "socketio_namespace_bytes_max",
                self.socketio_namespace_bytes_max,
            ),
            ("socketio_acks_pending_max", self.socketio_acks_pending_max),
            (
                "socketio_polling_sessions_max",
                self.socketio_polling_sessions_max,
            ),
            (
                "socketio_polling_sessions_per_address_max",
                self.socketio_polling_sessions_per_address_max,
            ),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err((setting, "must be above 0".into()));
            }
        }
        if self.socketio_polling_sessions_max > POLLING_SESSIONS_LIMIT {
            let reason = format!("at most {POLLING_SESSIONS_LIMIT} per shard");
            return Err(("socketio_polling_sessions_max", reason));
        }
        Ok(())
    }
}

/// Why a Socket.IO session ends at the client's doing (the connection closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketIoError {
    Engine(engineio::EngineError),
    Socket(socketio::SocketError),
    /// The first Socket.IO packet was not a CONNECT.
    NotConnectedFirst,
    /// A packet only a server sends (Engine.IO open, Socket.IO CONNECT_ERROR).
    ServerPacket,
    /// An echo session without a socket of its own (long polling) sent more than its queue
    /// holds (`outbound_queue_bytes_max`, `outbound_queue_frames_max`) without polling it.
    EchoQueueFull,
}

impl SocketIoError {
    pub fn reason(self) -> &'static str {
        match self {
            SocketIoError::Engine(error) => error.reason(),
            SocketIoError::Socket(error) => error.reason(),
            SocketIoError::NotConnectedFirst => "the first Socket.IO packet must be a CONNECT",
            SocketIoError::ServerPacket => "a packet only a server sends",
            SocketIoError::EchoQueueFull => "an echo session's queue is full: it is not polled",
        }
    }
}

/// Which deadline the endpoint's one timer stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// Send the next ping.
    Ping,
    /// The ping sent must be answered by then.
    Pong,
    /// Our close frame must be answered by then.
    Closing,
}

/// Where the Socket.IO session on `/` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespace {
    /// No CONNECT yet.
    Waiting,
    Connected,
}

/// One Socket.IO client over WebSocket: the WebSocket session, and everything else apart
/// from it (the session holds the read while its packets are handled).
#[derive(Debug)]
pub struct SocketIoEndpoint {
    session: Session,
    client: Client,
}

/// A Socket.IO client's state beside its WebSocket session.
#[derive(Debug)]
struct Client {
    session_id: [u8; SESSION_ID_BYTES],
    namespace: Namespace,
    /// The CONNECT must come by then (the shard's clock; `u64::MAX` once it came), so that a
    /// connection cannot be held open without one.
    connect_by_ms: u64,
    /// With `auth_mode = "jwt"`, the upgrade carried no token: the CONNECT must.
    token_pending: bool,
    access: Option<Box<Access>>,
    deadline: Deadline,
    deadline_ms: u64,
    message_started_ms: Option<u64>,
    message_timeout_ms: u64,
    /// Publishes waiting for the owner's seq: (ticket, the client's ack id), at most
    /// `socketio_acks_pending_max`.
    acks_pending: Vec<(u32, u64)>,
    next_ticket: u32,
    close_code: u16,
    close_reason: Option<CloseReason>,
    /// The session's connection-state-recovery id (`pid`): new, or the one a recovered
    /// client came back with.
    recovery_id: [u8; SESSION_ID_BYTES],
    recovery: Recovery,
    /// `socketio_cursor_interval_ms`.
    cursor_interval_ms: u64,
    /// A long-polling session (no connection of its own; `socketio_polling`): its close is
    /// Engine.IO's `1` packet rather than a WebSocket close handshake.
    polling: bool,
    /// The long-polling session was closed (`1` queued): it takes nothing more.
    ended: bool,
    /// An Engine.IO echo session (`engineio_echo_path`): message packets go back as they
    /// came, and there is no Socket.IO layer (no CONNECT, no events).
    echo: bool,
}

impl Client {
    fn session_id(&self) -> &str {
        std::str::from_utf8(&self.session_id).expect("base64url is ASCII")
    }

    fn note_close(&mut self, code: u16, reason: CloseReason) {
        if self.close_reason.is_none() {
            self.close_code = code;
            self.close_reason = Some(reason);
        }
    }
}

/// What an upgrade at `socketio_path` hands the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketIoStart {
    pub identity: Option<Box<Identity>>,
    /// The upgrade carried no token though one is required: the CONNECT's `auth` must.
    pub token_pending: bool,
    /// What the session carries: Socket.IO, or message packets echoed back.
    pub mode: EngineMode,
}

/// The identity a token proved, and when the connection ends for it.
fn access(identity: Identity, expiry_grace_ms: u64, unix_offset_ms: u64) -> Box<Access> {
    let close_at_unix_ms = identity.expires_unix_ms.saturating_add(expiry_grace_ms);
    Box::new(Access {
        identity,
        close_at_ms: close_at_unix_ms.saturating_sub(unix_offset_ms),
    })
}

impl SocketIoEndpoint {
    /// A connection whose upgrade was just accepted: queues the open packet.
    pub fn open(start: SocketIoStart, outbound: &mut Outbound, context: &mut Context) -> Self {
        let (endpoint, open) = Self::start(start, new_session_id(), false, context);
        outbound.push_control(context.encoder.encode(OpCode::Text, true, &open));
        endpoint
    }

    /// A long-polling session just opened under `session_id`: the endpoint, and its open
    /// packet (the body of the answer to the handshake request), which offers the upgrade.
    pub fn open_polling(
        start: SocketIoStart,
        session_id: [u8; SESSION_ID_BYTES],
        context: &mut Context,
    ) -> (Self, Vec<u8>) {
        Self::start(start, session_id, true, context)
    }

    fn start(
        start: SocketIoStart,
        session_id: [u8; SESSION_ID_BYTES],
        polling: bool,
        context: &mut Context,
    ) -> (Self, Vec<u8>) {
        let settings = &context.settings.socketio;
        let grace_ms = context.settings.auth.expiry_grace_ms;
        let echo = start.mode == EngineMode::Echo;
        // An echo session has no Socket.IO CONNECT to wait for; the heartbeat bounds it.
        let connect_by_ms = match echo {
            true => u64::MAX,
            false => context.now_ms + context.settings.handshake_timeout_ms,
        };
        let client = Client {
            session_id,
            namespace: Namespace::Waiting,
            connect_by_ms,
            token_pending: start.token_pending,
            access: start
                .identity
                .map(|identity| access(*identity, grace_ms, context.unix_offset_ms)),
            deadline: Deadline::Ping,
            deadline_ms: context.now_ms + settings.ping_interval_ms,
            message_started_ms: None,
            message_timeout_ms: context.settings.message_timeout_ms,
            acks_pending: Vec::new(),
            next_ticket: 0,
            close_code: CLOSE_CODE_ABNORMAL,
            close_reason: None,
            recovery_id: new_session_id(),
            recovery: Recovery::default(),
            cursor_interval_ms: settings.socketio_cursor_interval_ms,
            polling,
            ended: false,
            echo,
        };
        let mut open = Vec::with_capacity(128);
        engineio::write_open(
            &OpenSettings {
                session_id: client.session_id(),
                upgrade_to_websocket: polling,
                ping_interval_ms: settings.ping_interval_ms,
                ping_timeout_ms: settings.ping_timeout_ms,
                payload_bytes_max: settings.engineio_payload_bytes_max,
            },
            &mut open,
        );
        let endpoint = SocketIoEndpoint {
            session: Session::new(),
            client,
        };
        (endpoint, open)
    }

    /// The session's id (a long-polling request names it as `sid`).
    pub fn session_id(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.client.session_id
    }

    /// The packets of a long-polling POST's body. A body that does not parse is refused as a
    /// whole (the caller answers 400, or 413 for [`EngineError::TooLong`], and closes the
    /// session, as the reference server does).
    pub fn handle_payload(
        &mut self,
        body: &[u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Result<Next, EngineError> {
        debug_assert!(self.client.polling);
        let limits = context.settings.socketio.engine_limits();
        let packets = engineio::parse_payload(body, &limits)?;
        let mut handler = Handler::new(&mut self.client, outbound, context);
        let mut failure = None;
        for packet in packets {
            if failure.is_some() || handler.close.is_some() {
                break;
            }
            handler.counters.messages_received += 1;
            failure = match packet.data {
                PacketData::Text(data) => handler.handle_parsed(packet.kind, data).err(),
                PacketData::Base64(encoded) if handler.client.echo => {
                    handler.echo_base64(encoded).err()
                }
                // Binary attachments follow a BINARY_EVENT, which is refused: dropped.
                PacketData::Base64(_) | PacketData::Binary(_) => None,
            };
        }
        let close = handler.close;
        Ok(self.finish_packets(failure, close, outbound, context))
    }

    /// One packet the upgraded WebSocket of a long-polling session received (the text of one
    /// message; a carrier forwards nothing longer than `engineio_payload_bytes_max`).
    pub fn handle_carried_packet(
        &mut self,
        payload: &[u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        let mut handler = Handler::new(&mut self.client, outbound, context);
        handler.counters.messages_received += 1;
        let failure = match std::str::from_utf8(payload) {
            Ok(text) => handler.handle_packet(text).err(),
            Err(_) => Some(SocketIoError::Engine(EngineError::NotUtf8)),
        };
        let close = handler.close;
        self.finish_packets(failure, close, outbound, context)
    }

    /// One binary message the upgraded WebSocket of a long-polling session received: sent
    /// back by an echo session, dropped by a Socket.IO one (binary attachments follow a
    /// BINARY_EVENT, which is refused).
    pub fn handle_carried_binary(
        &mut self,
        payload: &[u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        let mut handler = Handler::new(&mut self.client, outbound, context);
        handler.counters.messages_received += 1;
        let failure = match handler.client.echo {
            true => handler.echo_binary(payload).err(),
            false => None,
        };
        self.finish_packets(failure, None, outbound, context)
    }

    /// After a session's packets (over polling or a WebSocket): closes it for a broken
    /// protocol or at the client's asking.
    fn finish_packets(
        &mut self,
        failure: Option<SocketIoError>,
        close: Option<&'static str>,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        if let Some(SocketIoError::EchoQueueFull) = failure {
            debug!("an Engine.IO echo session is not polled: closing");
            let reason = SocketIoError::EchoQueueFull.reason();
            return self.close(CloseCode::POLICY_VIOLATION, reason, outbound, context);
        }
        if let Some(error) = failure {
            context.counters.protocol_errors += 1;
            debug!(reason = error.reason(), "Socket.IO peer broke the protocol");
            return self.close(CloseCode::PROTOCOL_ERROR, error.reason(), outbound, context);
        }
        if let Some(reason) = close {
            return self.close(CloseCode::NORMAL, reason, outbound, context);
        }
        Next::Continue
    }

    pub fn close_record(&self) -> (u16, CloseReason) {
        let reason = self.client.close_reason.clone();
        (
            self.client.close_code,
            reason.unwrap_or(CloseReason::Static("")),
        )
    }

    pub fn deadline_ms(&self) -> u64 {
        if self.client.ended {
            return u64::MAX;
        }
        self.client
            .deadline_ms
            .min(self.message_deadline_ms())
            .min(self.expiry_deadline_ms())
            .min(self.connect_deadline_ms())
            .min(self.cursor_deadline_ms())
    }

    /// When the `cursor` event owed is due (`socketio_cursor_interval_ms`); never once the
    /// session is closing or ended.
    fn cursor_deadline_ms(&self) -> u64 {
        if self.session.state() != SessionState::Open || self.client.ended {
            return u64::MAX;
        }
        self.client.recovery.due_ms(self.client.cursor_interval_ms)
    }

    fn connect_deadline_ms(&self) -> u64 {
        match self.session.state() {
            SessionState::Open => self.client.connect_by_ms,
            _ => u64::MAX,
        }
    }

    fn expiry_deadline_ms(&self) -> u64 {
        match (&self.client.access, self.session.state()) {
            (Some(access), SessionState::Open) => access.close_at_ms,
            _ => u64::MAX,
        }
    }

    fn message_deadline_ms(&self) -> u64 {
        match (self.client.message_started_ms, self.session.state()) {
            (Some(started_ms), SessionState::Open) => started_ms + self.client.message_timeout_ms,
            _ => u64::MAX,
        }
    }

    /// Deliveries go out once the namespace is connected, while the session is open.
    pub fn takes_messages(&self) -> bool {
        self.client.namespace == Namespace::Connected
            && self.session.state() == SessionState::Open
            && !self.client.ended
    }

    /// Reads frames from one read: each text frame is an Engine.IO packet.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        let now_ms = context.now_ms;
        let Context {
            pool,
            encoder,
            settings,
            counters,
            requests,
            unix_offset_ms,
            ..
        } = &mut *context;
        let settings: &EndpointSettings = settings.as_ref();
        let mut reader = self.session.handle_read(input, pool, &settings.protocol);
        let mut handler = Handler {
            client: &mut self.client,
            outbound,
            encoder,
            counters,
            requests,
            settings,
            now_ms,
            unix_offset_ms: *unix_offset_ms,
            close: None,
        };
        let mut failure = None;
        while let Some(result) = reader.next_event() {
            match result {
                Ok(Event::Message { kind, payload })
                    if failure.is_none() && handler.close.is_none() =>
                {
                    handler.counters.messages_received += 1;
                    failure = match kind {
                        // Checked UTF-8 by the session.
                        MessageKind::Text => match std::str::from_utf8(payload) {
                            Ok(text) => handler.handle_packet(text).err(),
                            Err(_) => Some(SocketIoError::Engine(EngineError::NotUtf8)),
                        },
                        MessageKind::Binary if handler.client.echo => {
                            handler.echo_binary(payload).err()
                        }
                        // Binary attachments follow a BINARY_EVENT, which is refused: they are
                        // read and dropped.
                        MessageKind::Binary => None,
                    };
                }
                Ok(Event::Message { .. } | Event::Ping(_) | Event::Pong(_)) => {}
                Ok(Event::Close { code, reason }) => {
                    let code = code.map_or(CLOSE_CODE_NONE_GIVEN, |code| code.0);
                    let reason = match settings.close_reasons_kept && !reason.is_empty() {
                        true => CloseReason::Peer(reason.into()),
                        false => CloseReason::Static(""),
                    };
                    handler.client.note_close(code, reason);
                }
                Err(error) => {
                    handler.counters.protocol_errors += 1;
                    debug!(%error, "Socket.IO peer broke the WebSocket protocol");
                    let reason = CloseReason::Static(error.close_reason());
                    handler.client.note_close(error.close_code().0, reason);
                }
            }
            while let Some(frame) = reader.poll_transmit() {
                let frame = handler.encoder.copy(frame.as_bytes());
                handler.outbound.push_control(frame);
            }
        }
        let close = handler.close;
        drop(reader);
        self.client.message_started_ms = match self.session.is_mid_message() {
            true => self.client.message_started_ms.or(Some(now_ms)),
            false => None,
        };
        if failure.is_some() || close.is_some() {
            return self.finish_packets(failure, close, outbound, context);
        }
        self.flush_transmits(outbound, context)
    }

    /// A broker's reply to this client, as an event named after its kind. Returns whether
    /// the client's offset moved (a `cursor` event is owed at the end of the turn).
    pub fn reply(&mut self, reply: &Reply, outbound: &mut Outbound, context: &mut Context) -> bool {
        push_event(reply, outbound, &mut context.encoder);
        self.client.recovery.took_reply(reply)
    }

    /// The shared framing of `message` was just queued (the one [`Self::message_offset_epoch`]
    /// chose). Returns whether a `cursor` event is owed at the end of the turn.
    pub fn took_message(&mut self, message: &Message) -> bool {
        self.client.recovery.took_message(message)
    }

    /// `Some(epoch)` when this client's offset, once it has `message`, is the one every
    /// client of that topic alone would have: it then takes the framing of `message` that
    /// carries that offset as its last argument (made once per shard), and owes no `cursor`
    /// event for it.
    pub fn message_offset_epoch(&self, message: &Message) -> Option<Epoch> {
        self.client.recovery.offset_epoch(message)
    }

    /// The end of a turn in which the client's offset moved: one `cursor` event, if it is
    /// due (else the deadline brings it).
    pub fn handle_turn_end(&mut self, outbound: &mut Outbound, context: &mut Context) {
        if context.now_ms >= self.cursor_deadline_ms() {
            self.push_cursor(outbound, context);
        }
    }

    fn push_cursor(&mut self, outbound: &mut Outbound, context: &mut Context) {
        let recovery = &mut self.client.recovery;
        if let Some(frame) = recovery.cursor_event(&mut context.encoder, context.now_ms) {
            outbound.push_control(frame);
        }
    }

    /// The owner numbered (or refused) the publish waiting under `ticket`: its acknowledgement.
    pub fn answer_publish(
        &mut self,
        ticket: u32,
        result: Result<u64, OwnerError>,
        outbound: &mut Outbound,
        context: &mut Context,
    ) {
        let acks_pending = &mut self.client.acks_pending;
        let Some(index) = acks_pending
            .iter()
            .position(|&(pending, _)| pending == ticket)
        else {
            return;
        };
        let (_, ack_id) = acks_pending.swap_remove(index);
        let mut handler = Handler::new(&mut self.client, outbound, context);
        match result {
            Ok(seq) => handler.acknowledge_seq(ack_id, seq),
            Err(error) => handler.refuse(Some(ack_id), error.reason()),
        }
    }

    /// Starts the close handshake from our side (shutdown, slow consumer, token expiry).
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        if self.client.polling {
            // Engine.IO's close packet, for whichever carrier takes the queue next; a client
            // that closed itself is sent the noop `6` instead, which ends its pending GET
            // cleanly (as the reference server does).
            if !self.client.ended {
                self.client.note_close(code.0, CloseReason::Static(reason));
                self.client.ended = true;
                let packet: &[u8] = if reason == CLIENT_CLOSE { b"6" } else { b"1" };
                outbound.push_control(context.encoder.encode(OpCode::Text, true, packet));
            }
            return Next::CloseAfterFlush;
        }
        if self.session.state() == SessionState::Open {
            self.client.note_close(code.0, CloseReason::Static(reason));
        }
        self.session.close(code, reason);
        self.flush_transmits(outbound, context)
    }

    /// The deadline passed: ping, give up on a client that did not answer, end a close
    /// handshake it ignored, or end a connection whose token expired.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        let now_ms = context.now_ms;
        if now_ms >= self.expiry_deadline_ms() {
            context.counters.token_expiries += 1;
            debug!("token expired and not refreshed: closing with 4001");
            return self.close(TOKEN_EXPIRED, "token expired", outbound, context);
        }
        if now_ms >= self.connect_deadline_ms() {
            context.counters.handshake_timeouts += 1;
            debug!("no Socket.IO CONNECT in time: closing");
            self.client.connect_by_ms = u64::MAX;
            let code = CloseCode::POLICY_VIOLATION;
            return self.close(code, "no CONNECT in time", outbound, context);
        }
        if now_ms >= self.message_deadline_ms() {
            context.counters.message_timeouts += 1;
            self.client.message_started_ms = None;
            let code = CloseCode::POLICY_VIOLATION;
            return self.close(code, "message too slow", outbound, context);
        }
        if now_ms >= self.cursor_deadline_ms() {
            self.push_cursor(outbound, context);
        }
        if now_ms < self.client.deadline_ms {
            return Next::Continue;
        }
        match self.client.deadline {
            Deadline::Ping => {
                context.counters.pings_sent += 1;
                outbound.push_control(Bytes::from_static(PING_FRAME));
                // Due a timeout after the ping was due (not after the timer fired, a tick
                // later), as the client counts: pingInterval + pingTimeout between pings.
                let timeout_ms = context.settings.socketio.ping_timeout_ms;
                let pong_due_ms = (self.client.deadline_ms + timeout_ms).max(now_ms + 1);
                self.set_deadline(Deadline::Pong, pong_due_ms);
            }
            Deadline::Pong => {
                context.counters.pong_timeouts += 1;
                debug!("Engine.IO ping unanswered: closing");
                let _ = self.close(CloseCode::GOING_AWAY, "ping timeout", outbound, context);
                return Next::CloseAfterFlush;
            }
            Deadline::Closing => {
                context.counters.close_timeouts += 1;
                return Next::ShutDownNow;
            }
        }
        Next::Continue
    }

    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.session.release_buffers(pool);
    }

    fn set_deadline(&mut self, deadline: Deadline, deadline_ms: u64) {
        self.client.deadline = deadline;
        self.client.deadline_ms = deadline_ms;
    }

    fn flush_transmits(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        while let Some(frame) = self.session.poll_transmit(&mut context.pool) {
            outbound.push_control(context.encoder.copy(frame.as_bytes()));
        }
        match self.session.state() {
            SessionState::Open => Next::Continue,
            SessionState::CloseSent => {
                if self.client.deadline != Deadline::Closing {
                    let deadline_ms = context.now_ms + context.settings.close_timeout_ms;
                    self.set_deadline(Deadline::Closing, deadline_ms);
                }
                Next::Continue
            }
            SessionState::Closed => Next::CloseAfterFlush,
        }
    }
}

/// `reply` as the event `42["<kind>",<the /ws JSON>]`.
fn push_event(reply: &Reply, outbound: &mut Outbound, encoder: &mut FrameEncoder) {
    let name = reply.kind.name().as_bytes();
    let parts: [&[u8]; 5] = [b"42[\"", name, b"\",", reply.body(), b"]"];
    outbound.push_control(encoder.encode_parts(OpCode::Text, &parts));
}

/// What handling a client's packets needs: its state and the shard's parts, borrowed apart
/// from the WebSocket session and the buffer pool that hold the read.
struct Handler<'a> {
    client: &'a mut Client,
    outbound: &'a mut Outbound,
    encoder: &'a mut FrameEncoder,
    counters: &'a mut EndpointCounters,
    requests: &'a mut Vec<BrokerRequest>,
    settings: &'a EndpointSettings,
    now_ms: u64,
    unix_offset_ms: u64,
    /// The client asked to end the session (Engine.IO close, Socket.IO DISCONNECT).
    close: Option<&'static str>,
}

impl<'a> Handler<'a> {
    fn new(client: &'a mut Client, outbound: &'a mut Outbound, context: &'a mut Context) -> Self {
        Handler {
            client,
            outbound,
            encoder: &mut context.encoder,
            counters: &mut context.counters,
            requests: &mut context.requests,
            settings: &context.settings,
            now_ms: context.now_ms,
            unix_offset_ms: context.unix_offset_ms,
            close: None,
        }
    }

    /// One Engine.IO packet (a text frame).
    fn handle_packet(&mut self, text: &str) -> Result<(), SocketIoError> {
        let socketio = &self.settings.socketio;
        let packet = engineio::parse_text_packet(text, &socketio.engine_limits())
            .map_err(SocketIoError::Engine)?;
        let PacketData::Text(data) = packet.data else {
            unreachable!("a text frame's packet has text data");
        };
        self.handle_parsed(packet.kind, data)
    }

    /// One Engine.IO packet with text data, from a WebSocket frame or a long-polling body.
    fn handle_parsed(&mut self, kind: PacketType, data: &str) -> Result<(), SocketIoError> {
        let socketio = &self.settings.socketio;
        match kind {
            PacketType::Pong => {
                if self.client.deadline == Deadline::Pong {
                    self.client.deadline = Deadline::Ping;
                    self.client.deadline_ms = self.now_ms + socketio.ping_interval_ms;
                }
                Ok(())
            }
            // A probe (of a client that upgrades) is answered in kind.
            PacketType::Ping => {
                let pong = self
                    .encoder
                    .encode_parts(OpCode::Text, &[b"3", data.as_bytes()]);
                self.outbound.push_control(pong);
                Ok(())
            }
            PacketType::Close => {
                self.close = Some(CLIENT_CLOSE);
                Ok(())
            }
            PacketType::Upgrade | PacketType::Noop => Ok(()),
            PacketType::Open => Err(SocketIoError::ServerPacket),
            PacketType::Message if self.client.echo => {
                self.echo(OpCode::Text, &[b"4", data.as_bytes()])
            }
            PacketType::Message => self.handle_socket_packet(data),
        }
    }

    /// An echo session's message, queued back on the session as it came: `4<data>` in a text
    /// frame, binary data in a binary frame (a long-polling body writes it `b<base64>` again).
    /// A session without a socket (long polling) cannot be made to stop sending by not
    /// reading it, so it is held to its queue's limits here: past them it is closed, and the
    /// client that never polls pays for itself. A WebSocket is held to them by its shard,
    /// which stops reading it while its queue is over them, as for any connection.
    fn echo(&mut self, opcode: OpCode, parts: &[&[u8]]) -> Result<(), SocketIoError> {
        let payload_bytes: usize = parts.iter().map(|part| part.len()).sum();
        let limits = crate::broker::QueueLimits {
            bytes_max: self.settings.outbound_queue_bytes_max,
            frames_max: self.settings.outbound_queue_frames_max,
        };
        if self.client.polling
            && !self
                .outbound
                .has_room(payload_bytes + HEAD_BYTES_MAX, limits)
        {
            return Err(SocketIoError::EchoQueueFull);
        }
        let frame = self.encoder.encode_parts(opcode, parts);
        self.outbound.push_control(frame);
        Ok(())
    }

    /// An echo session's binary message from a WebSocket frame, held to `maxPayload`.
    fn echo_binary(&mut self, payload: &[u8]) -> Result<(), SocketIoError> {
        let limits = self.settings.socketio.engine_limits();
        engineio::parse_binary_packet(payload, &limits).map_err(SocketIoError::Engine)?;
        self.echo(OpCode::Binary, &[payload])
    }

    /// An echo session's binary message from a long-polling body (`b<base64>`), decoded to
    /// go back as binary (the body was held to `maxPayload`, so is its data). The decoded
    /// copy is allocated per message: echo is a conformance mode, not a path to make fast.
    fn echo_base64(&mut self, encoded: &str) -> Result<(), SocketIoError> {
        let bytes_max = self.settings.socketio.engineio_payload_bytes_max;
        let mut decoded = Vec::new();
        engineio::decode_binary_into(encoded, bytes_max, &mut decoded)
            .map_err(SocketIoError::Engine)?;
        self.echo(OpCode::Binary, &[&decoded])
    }

    /// One Socket.IO packet (the data of an Engine.IO message).
    fn handle_socket_packet(&mut self, text: &str) -> Result<(), SocketIoError> {
        let limits = self.settings.socketio.socket_limits();
        let packet = socketio::parse(text, &limits).map_err(SocketIoError::Socket)?;
        match (packet.kind, self.client.namespace) {
            (SocketPacketType::Connect, _) => {
                self.connect(&packet);
                Ok(())
            }
            (_, Namespace::Waiting) => Err(SocketIoError::NotConnectedFirst),
            (SocketPacketType::ConnectError, _) => Err(SocketIoError::ServerPacket),
            // Other namespaces were refused; what the client still sends them is dropped.
            _ if packet.namespace != MAIN_NAMESPACE => Ok(()),
            (SocketPacketType::Disconnect, _) => {
                // `/` is the only namespace: leaving it ends the session.
                self.close = Some("Socket.IO disconnect");
                Ok(())
            }
            (SocketPacketType::Event, _) => {
                self.event(&packet);
                Ok(())
            }
            // The server asks for no acknowledgements.
            (SocketPacketType::Ack, _) => Ok(()),
            (SocketPacketType::BinaryEvent | SocketPacketType::BinaryAck, _) => {
                self.refuse(packet.ack_id, "binary data is not supported: send JSON");
                Ok(())
            }
        }
    }

    fn push_text(&mut self, payload: &[u8]) {
        let frame = self.encoder.encode(OpCode::Text, true, payload);
        self.outbound.push_control(frame);
    }

    /// CONNECT: `/` is served (after its token is checked, when the upgrade had none), any
    /// other namespace refused.
    fn connect(&mut self, packet: &SocketPacket<'_>) {
        let mut out = Vec::with_capacity(64);
        out.push(PacketType::Message.digit());
        if packet.namespace != MAIN_NAMESPACE {
            socketio::write_connect_error(packet.namespace, "Invalid namespace", &mut out);
            return self.push_text(&out);
        }
        if self.client.namespace == Namespace::Connected {
            return; // Already connected: a repeated CONNECT changes nothing.
        }
        let auth = ConnectAuth::parse(packet.data, self.settings.broker.request_bytes_max);
        if self.client.token_pending {
            match self.verify_connect_token(auth.as_ref()) {
                Ok(identity) => {
                    let grace_ms = self.settings.auth.expiry_grace_ms;
                    self.client.access = Some(access(identity, grace_ms, self.unix_offset_ms));
                    self.client.token_pending = false;
                }
                Err(failure) => {
                    self.counters.count_auth_failure(failure);
                    let message = format!("unauthorized: {}", failure.label());
                    socketio::write_connect_error(MAIN_NAMESPACE, &message, &mut out);
                    return self.push_text(&out);
                }
            }
        }
        if let Some(auth) = &auth {
            self.recover(auth);
        }
        let recovery_id = std::str::from_utf8(&self.client.recovery_id).unwrap_or("");
        let session_id = self.client.session_id();
        socketio::write_connected(MAIN_NAMESPACE, session_id, Some(recovery_id), &mut out);
        self.client.namespace = Namespace::Connected;
        self.client.connect_by_ms = u64::MAX;
        self.push_text(&out);
    }

    /// Connection-state recovery: a client that comes back with the `pid` and the `offset`
    /// (the last `cursor` event) of its previous session is subscribed again to every topic the
    /// offset names, each from where it stood (replay from history, or `reset` where history
    /// no longer has it), and keeps its `pid`, so that socket.io-client reports `recovered`.
    /// An offset that does not decode recovers nothing: the client gets a new `pid` and
    /// subscribes again itself.
    fn recover(&mut self, auth: &ConnectAuth<'_>) {
        let (Some(pid), Some(offset)) = (&auth.pid, &auth.offset) else {
            return;
        };
        let pid_valid = pid.len() == SESSION_ID_BYTES
            && pid
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        let topic_bytes_max = self.settings.broker.topic_bytes_max;
        let Some((topics, positions)) = decode_offset(offset, topic_bytes_max) else {
            return;
        };
        if !pid_valid || topics.len() > self.settings.broker.subscriptions_per_connection_max {
            return;
        }
        self.counters.socketio_recoveries += 1;
        self.client.recovery_id.copy_from_slice(pid.as_bytes());
        for (topic, since) in topics.into_iter().zip(positions) {
            if !self.grants(topic.as_str(), |grants| &grants.subscribe) {
                self.forbid(topic.as_str());
                continue;
            }
            self.client.recovery.add(&topic, since);
            self.requests
                .push(BrokerRequest::Subscribe { topic, since });
        }
    }

    /// The token of a CONNECT's `auth` payload (`{"token":…}`).
    fn verify_connect_token(
        &self,
        auth: Option<&ConnectAuth<'_>>,
    ) -> Result<Identity, AuthFailure> {
        let auth = auth.ok_or(AuthFailure::Malformed)?;
        let token = auth.token.as_ref().ok_or(AuthFailure::Missing)?;
        let unix_ms = self.now_ms + self.unix_offset_ms;
        self.settings.auth.verify(token.as_bytes(), unix_ms)
    }

    /// An EVENT on `/`: one of ringcast's requests, named by the event.
    fn event(&mut self, packet: &SocketPacket<'_>) {
        let ack_id = packet.ack_id;
        let data = packet.data.unwrap_or("[]");
        let settings = self.settings;
        match parse_event(data.as_bytes(), &settings.broker) {
            Ok(request) => self.handle(request, ack_id),
            Err(error) => self.refuse(ack_id, error.reason()),
        }
    }

    fn handle(&mut self, request: Request<'_>, ack_id: Option<u64>) {
        match request {
            Request::Publish { topic, data, id } => {
                self.counters.publish_requests += 1;
                self.publish(&topic, data, id.as_deref(), ack_id);
            }
            Request::Subscribe { topics, since } => {
                self.counters.subscribe_requests += 1;
                for name in &topics {
                    if !self.grants(name, |grants| &grants.subscribe) {
                        self.forbid(name);
                        continue;
                    }
                    let since = since.get(name).copied();
                    if let Some(topic) = self.topic(name) {
                        self.client.recovery.add(&topic, since);
                        self.requests
                            .push(BrokerRequest::Subscribe { topic, since });
                    }
                }
                self.acknowledge(ack_id);
            }
            Request::Unsubscribe { topics } => {
                self.counters.unsubscribe_requests += 1;
                for name in &topics {
                    if let Some(topic) = self.topic(name) {
                        self.client.recovery.remove(&topic);
                        self.requests.push(BrokerRequest::Unsubscribe { topic });
                    }
                }
                self.acknowledge(ack_id);
            }
            Request::Refresh { token } => self.refresh(token.as_bytes(), ack_id),
            Request::Ping => self.acknowledge(ack_id),
        }
    }

    fn publish(&mut self, name: &str, data: &[u8], id: Option<&str>, ack_id: Option<u64>) {
        if !self.grants(name, |grants| &grants.publish) {
            return match ack_id {
                Some(_) => {
                    self.counters.forbidden_requests += 1;
                    self.refuse(ack_id, "forbidden");
                }
                None => self.forbid(name),
            };
        }
        let acks_pending_max = self.settings.socketio.socketio_acks_pending_max;
        if ack_id.is_some() && self.client.acks_pending.len() >= acks_pending_max {
            return self.refuse(ack_id, "too many publishes awaiting acknowledgement");
        }
        let id = id.unwrap_or("");
        // Topic, data and id in one copy: the request outlives this read's buffer.
        let copied = self
            .encoder
            .copy_parts(&[name.as_bytes(), data, id.as_bytes()]);
        let (topic_end, data_end) = (name.len(), name.len() + data.len());
        let topic_bytes_max = self.settings.broker.topic_bytes_max;
        let topic = match TopicName::new(copied.slice(..topic_end), topic_bytes_max) {
            Ok(topic) => topic,
            Err(error) => return self.refuse(ack_id, error.reason()),
        };
        let key = match id.is_empty() {
            true => None,
            // Checked by the request parser; a refusal here would be a bug.
            false => match IdempotencyKey::new(copied.slice(data_end..)) {
                Ok(key) => Some(key),
                Err(error) => return self.refuse(ack_id, error.reason()),
            },
        };
        let ticket = ack_id.map(|ack_id| {
            let ticket = self.client.next_ticket;
            self.client.next_ticket = ticket.wrapping_add(1);
            self.client.acks_pending.push((ticket, ack_id));
            ticket
        });
        self.requests.push(BrokerRequest::Publish {
            topic,
            data: copied.slice(topic_end..data_end),
            ticket,
            key,
        });
    }

    fn grants(&self, topic: &str, scope: impl Fn(&Grants) -> &TopicPatterns) -> bool {
        let access = self.client.access.as_deref();
        access.is_none_or(|access| scope(&access.identity.grants).allows(topic))
    }

    /// The `error` event `{"op":"error","reason":"forbidden","topic":…}`.
    fn forbid(&mut self, name: &str) {
        self.counters.forbidden_requests += 1;
        debug!(topic = name, "Socket.IO request outside the token's grants");
        if let Some(topic) = self.topic(name) {
            let reply = Reply::topic_error(self.encoder, "forbidden", &topic);
            push_event(&reply, self.outbound, self.encoder);
        }
    }

    /// `["refresh",{"token":…}]`, as `/ws`'s `{"op":"refresh"}`.
    fn refresh(&mut self, token: &[u8], ack_id: Option<u64>) {
        let Some(access) = self.client.access.as_deref_mut() else {
            return self.refuse(ack_id, "refresh needs a connection opened with a token");
        };
        let auth = &self.settings.auth;
        let unix_ms = self.now_ms + self.unix_offset_ms;
        let identity = match auth.verify(token, unix_ms) {
            Ok(identity) if identity.subject == access.identity.subject => identity,
            Ok(_) => {
                self.counters.count_auth_failure(AuthFailure::Claims);
                return self.refuse(ack_id, "refresh refused: the token names another sub");
            }
            Err(failure) => {
                self.counters.count_auth_failure(failure);
                return self.refuse(ack_id, "refresh refused: the token does not verify");
            }
        };
        self.counters.token_refreshes += 1;
        let grants = Arc::clone(&identity.grants);
        let expires_seconds = identity.expires_unix_ms / 1000;
        access.close_at_ms = identity
            .expires_unix_ms
            .saturating_add(auth.expiry_grace_ms)
            .saturating_sub(self.unix_offset_ms);
        access.identity = identity;
        self.requests.push(BrokerRequest::Regrant { grants });
        let reply = Reply::refreshed(self.encoder, expires_seconds);
        match ack_id {
            Some(ack_id) => self.acknowledge_with(ack_id, &[reply.body()]),
            None => push_event(&reply, self.outbound, self.encoder),
        }
    }

    fn topic(&mut self, name: &str) -> Option<TopicName> {
        let copied = self.encoder.copy(name.as_bytes());
        match TopicName::new(copied, self.settings.broker.topic_bytes_max) {
            Ok(topic) => Some(topic),
            Err(error) => {
                self.refuse(None, error.reason());
                None
            }
        }
    }

    /// `43<id>[]`: the requests were handed to the broker.
    fn acknowledge(&mut self, ack_id: Option<u64>) {
        if let Some(ack_id) = ack_id {
            self.acknowledge_with(ack_id, &[]);
        }
    }

    /// `43<id>[{"op":"published","seq":…}]`.
    fn acknowledge_seq(&mut self, ack_id: u64, seq: u64) {
        let mut digits = [0u8; 20];
        let seq_text = decimal(seq, &mut digits);
        self.acknowledge_with(ack_id, &[b"{\"op\":\"published\",\"seq\":", seq_text, b"}"]);
    }

    /// `43<id>[<body parts joined>]` (at most four parts).
    fn acknowledge_with(&mut self, ack_id: u64, body: &[&[u8]]) {
        let mut digits = [0u8; 20];
        let id_text = decimal(ack_id, &mut digits);
        let mut parts: [&[u8]; 8] = [b"43", id_text, b"[", b"", b"", b"", b"", b"]"];
        assert!(body.len() <= 4, "an acknowledgement has at most four parts");
        parts[3..3 + body.len()].copy_from_slice(body);
        let frame = self.encoder.encode_parts(OpCode::Text, &parts);
        self.outbound.push_control(frame);
    }

    /// A refused request: its acknowledgement says why, or (with none asked for) an `error`
    /// event. The connection stays open.
    fn refuse(&mut self, ack_id: Option<u64>, reason: &'static str) {
        debug_assert!(!reason.contains('"'));
        self.counters.request_errors += 1;
        debug!(reason, "bad Socket.IO request");
        match ack_id {
            Some(ack_id) => {
                let body: [&[u8]; 3] = [
                    b"{\"op\":\"error\",\"reason\":\"",
                    reason.as_bytes(),
                    b"\"}",
                ];
                self.acknowledge_with(ack_id, &body);
            }
            None => {
                let reply = Reply::error(self.encoder, reason);
                push_event(&reply, self.outbound, self.encoder);
            }
        }
    }
}

/// The `auth` payload of a CONNECT: a token, and what socket.io-client sends back to recover
/// its session.
#[derive(Debug, Default, Deserialize)]
struct ConnectAuth<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    offset: Option<Cow<'a, str>>,
}

impl<'a> ConnectAuth<'a> {
    /// The payload, or `None` when there is none or it is not such an object (or longer than
    /// `bytes_max`).
    fn parse(data: Option<&'a str>, bytes_max: usize) -> Option<ConnectAuth<'a>> {
        let data = data.unwrap_or("{}");
        if data.len() > bytes_max {
            return None;
        }
        serde_json::from_str(data).ok()
    }
}

/// Separates the two parts of an offset: the cursor and the topics' names.
const OFFSET_SEPARATOR: u8 = b'.';
/// Separates the topics' names before they are base64url-encoded (never in a name: names are
/// printable ASCII).
const NAME_SEPARATOR: u8 = b'\n';

/// What the client's connection-state-recovery offset says: where it stands in each topic it
/// subscribed to. socket.io-client keeps the last string argument of the events it receives
/// as its offset, and sends it back (with the `pid`) when it reconnects; ringcast sends it as
/// the event `42["cursor","<offset>"]` at the end of each turn in which it moved. The offset
/// is `<cursor>.<names>`: the resume cursor of SSE and polls (per topic its epoch and last
/// seq, with a digest of the topic list), then the topics' names, newline-joined, in
/// base64url, so that any shard can resume it. A client that drops after messages but before
/// their `cursor` event gets them again (with the same seqs: drop what is not past the last
/// seq seen); it never misses one.
#[derive(Debug, Default)]
struct Recovery {
    positions: Option<TopicPositions>,
    /// The names part of the offset, made when the topics change.
    names_text: String,
    /// The offset moved since the last `cursor` event.
    owed: bool,
    /// It moved by a subscription's change (`subscribed`, `reset`, `unsubscribed`): the
    /// event goes out at the end of the turn, not held to the interval.
    urgent: bool,
    /// When the last `cursor` event was queued (the shard's clock).
    sent_ms: u64,
    /// More topics than a cursor holds: the offset is empty, and the client resubscribes
    /// itself after a reconnect.
    disabled: bool,
    /// Where the cursor is written (kept, so that a steady stream of events allocates nothing).
    scratch: Vec<u8>,
}

impl Recovery {
    /// The client subscribes to `topic` from `since`.
    fn add(&mut self, topic: &TopicName, since: Option<Since>) {
        if self.disabled {
            return;
        }
        let (mut topics, mut positions) = self.parts();
        match topics.iter().position(|known| known == topic) {
            Some(index) => positions[index] = since.or(positions[index]),
            None => {
                topics.push(topic.clone());
                positions.push(since);
            }
        }
        self.rebuild(topics, positions);
    }

    fn remove(&mut self, topic: &TopicName) {
        if self.disabled {
            return;
        }
        let (mut topics, mut positions) = self.parts();
        if let Some(index) = topics.iter().position(|known| known == topic) {
            topics.remove(index);
            positions.remove(index);
            self.rebuild(topics, positions);
        }
    }

    fn parts(&self) -> (Vec<TopicName>, Vec<Position>) {
        match &self.positions {
            Some(positions) => (positions.topics().to_vec(), positions.positions().to_vec()),
            None => (Vec::new(), Vec::new()),
        }
    }

    fn rebuild(&mut self, topics: Vec<TopicName>, positions: Vec<Position>) {
        use base64::Engine as _;
        self.owed = true;
        self.urgent = true;
        if topics.len() > CURSOR_TOPICS_LIMIT {
            self.disabled = true;
            self.positions = None;
            self.names_text = String::new();
            return;
        }
        let mut names = Vec::new();
        for (index, topic) in topics.iter().enumerate() {
            if index > 0 {
                names.push(NAME_SEPARATOR);
            }
            names.extend_from_slice(topic.as_bytes());
        }
        self.names_text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(names);
        self.positions = Some(TopicPositions::new(topics, positions));
    }

    fn took_message(&mut self, message: &Message) -> bool {
        let offset_carried = self.offset_epoch(message).is_some();
        match &mut self.positions {
            Some(positions) => {
                positions.took_message(message);
                // The message's framing carried the whole offset: the client holds it.
                self.owed = !offset_carried;
                self.urgent &= !offset_carried;
                !offset_carried
            }
            None => false,
        }
    }

    /// The epoch of the client's one topic when that topic is `message`'s and the client knows
    /// its epoch: its offset after `message` is then [`OneTopicOffset`]'s, the same for every
    /// such client, and the message's shared framing can carry it.
    fn offset_epoch(&self, message: &Message) -> Option<Epoch> {
        let positions = self.positions.as_ref()?;
        match (positions.topics(), positions.positions()) {
            ([topic], [Some(position)]) if topic.as_bytes() == message.topic() => position.epoch,
            _ => None,
        }
    }

    fn took_reply(&mut self, reply: &Reply) -> bool {
        match &mut self.positions {
            Some(positions) if reply.topic.is_some() => {
                positions.took_reply(reply);
                self.owed = true;
                self.urgent = true;
                true
            }
            _ => self.owed,
        }
    }

    /// When the next `cursor` event is due: never while the offset has not moved, at once
    /// after a subscription's change, else `interval_ms` after the last one.
    fn due_ms(&self, interval_ms: u64) -> u64 {
        match (self.owed, self.urgent) {
            (false, _) => u64::MAX,
            (true, true) => 0,
            (true, false) => self.sent_ms.saturating_add(interval_ms),
        }
    }

    /// `42["cursor","<offset>"]` when the offset moved since the last one.
    fn cursor_event(&mut self, encoder: &mut FrameEncoder, now_ms: u64) -> Option<Bytes> {
        if !self.owed {
            return None;
        }
        self.owed = false;
        self.urgent = false;
        self.sent_ms = now_ms;
        let Some(positions) = &self.positions else {
            return Some(encoder.encode(OpCode::Text, true, b"42[\"cursor\",\"\"]"));
        };
        self.scratch.resize(positions.cursor_bytes_max(), 0);
        let length = positions.write_cursor(&mut self.scratch);
        let parts: [&[u8]; 5] = [
            b"42[\"cursor\",\"",
            &self.scratch[..length],
            &[OFFSET_SEPARATOR],
            self.names_text.as_bytes(),
            b"\"]",
        ];
        Some(encoder.encode_parts(OpCode::Text, &parts))
    }
}

/// Reads an offset made by [`Recovery::cursor_event`]: the topics and where the client stands
/// in each. `None` for anything else (an offset of another server, or tampered with).
fn decode_offset(offset: &str, topic_bytes_max: usize) -> Option<(Vec<TopicName>, Vec<Position>)> {
    use base64::Engine as _;
    let names_bytes_max = CURSOR_TOPICS_LIMIT * (topic_bytes_max + 1);
    let cursor_bytes_max = crate::broker::cursor::cursor_text_bytes_max(CURSOR_TOPICS_LIMIT);
    if offset.len() > cursor_bytes_max + 1 + names_bytes_max.div_ceil(3) * 4 {
        return None;
    }
    let (cursor_text, names_text) = offset.split_once(OFFSET_SEPARATOR as char)?;
    let names = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(names_text)
        .ok()?;
    let mut topics = Vec::new();
    if !names.is_empty() {
        for name in names.split(|&byte| byte == NAME_SEPARATOR) {
            let name = Bytes::copy_from_slice(name);
            topics.push(TopicName::new(name, topic_bytes_max).ok()?);
            if topics.len() > CURSOR_TOPICS_LIMIT {
                return None;
            }
        }
    }
    let positions = crate::broker::cursor::decode(cursor_text, &topics).ok()?;
    (positions.len() == topics.len()).then_some((topics, positions))
}

/// A fresh session id: 16 random bytes from the system's generator, base64url.
fn new_session_id() -> [u8; SESSION_ID_BYTES] {
    use base64::Engine as _;
    let mut random = [0u8; 16];
    // The system generator does not fail on Linux once booted; were it to, a counter-seeded
    // id is still unique on this shard (ids are names, not secrets, over WebSocket).
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        random = fastrand::u128(..).to_le_bytes();
    }
    let mut id = [0u8; SESSION_ID_BYTES];
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(random, &mut id)
        .expect("22 characters hold 16 bytes");
    assert_eq!(written, SESSION_ID_BYTES);
    id
}

/// Characters of the cursor of one topic at most.
const ONE_TOPIC_CURSOR_BYTES_MAX: usize = crate::broker::cursor::cursor_text_bytes_max(1);
/// Characters of one topic's name in base64url at most.
const ONE_TOPIC_NAMES_BYTES_MAX: usize = TOPIC_BYTES_LIMIT.div_ceil(3) * 4;

/// The offset of a client whose one topic is a delivered message's, once it has that message:
/// what its `cursor` event would say (same cursor, same names), so that the message's framing
/// can carry it as the event's last argument, `42["message",<body>,"<offset>"]`, for every
/// such client of the shard at once. socket.io-client keeps that argument as its offset.
pub struct OneTopicOffset {
    cursor: [u8; ONE_TOPIC_CURSOR_BYTES_MAX],
    cursor_bytes: usize,
    names: [u8; ONE_TOPIC_NAMES_BYTES_MAX],
    names_bytes: usize,
}

impl OneTopicOffset {
    /// The offset of standing at `message` in `epoch`.
    pub fn new(message: &Message, epoch: Epoch) -> OneTopicOffset {
        use base64::Engine as _;
        let topic = message.topic();
        let position = Some(Since {
            seq: message.seq(),
            epoch: Some(epoch),
        });
        let digest = crate::broker::cursor::names_digest([topic]);
        let mut offset = OneTopicOffset {
            cursor: [0; ONE_TOPIC_CURSOR_BYTES_MAX],
            cursor_bytes: 0,
            names: [0; ONE_TOPIC_NAMES_BYTES_MAX],
            names_bytes: 0,
        };
        offset.cursor_bytes =
            crate::broker::cursor::encode(digest, &[position], &mut offset.cursor);
        offset.names_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(topic, &mut offset.names)
            .expect("a topic's name is at most TOPIC_BYTES_LIMIT bytes");
        offset
    }

    fn parts<'a>(&'a self, body: &'a [u8]) -> [&'a [u8]; 7] {
        [
            MESSAGE_PREFIX,
            body,
            b",\"",
            &self.cursor[..self.cursor_bytes],
            &[OFFSET_SEPARATOR],
            &self.names[..self.names_bytes],
            b"\"]",
        ]
    }

    /// Bytes of the framing of `body` with this offset: one WebSocket text frame holding
    /// `42["message",<body>,"<offset>"]`.
    pub fn message_frame_bytes(&self, body: &[u8]) -> usize {
        let payload_bytes: usize = self.parts(body).iter().map(|part| part.len()).sum();
        let mut head = [0u8; HEAD_BYTES_MAX];
        text_frame_head(payload_bytes, &mut head) + payload_bytes
    }

    /// Writes the framing [`OneTopicOffset::message_frame_bytes`] counts.
    pub fn write_message_frame(&self, body: &[u8], out: &mut Vec<u8>) {
        let parts = self.parts(body);
        let payload_bytes: usize = parts.iter().map(|part| part.len()).sum();
        let mut head = [0u8; HEAD_BYTES_MAX];
        let head_bytes = text_frame_head(payload_bytes, &mut head);
        out.extend_from_slice(&head[..head_bytes]);
        for part in parts {
            out.extend_from_slice(part);
        }
    }
}

/// What a delivered message's framing for Socket.IO clients starts with.
const MESSAGE_PREFIX: &[u8] = b"42[\"message\",";

/// Bytes of the framing of a delivered message for Socket.IO clients: one WebSocket text frame
/// holding `42["message",<body>]`.
pub fn message_frame_bytes(body: &[u8]) -> usize {
    let payload_bytes = MESSAGE_PREFIX.len() + body.len() + 1;
    let mut head = [0u8; HEAD_BYTES_MAX];
    text_frame_head(payload_bytes, &mut head) + payload_bytes
}

/// Writes the framing [`message_frame_bytes`] counts.
pub fn write_message_frame(body: &[u8], out: &mut Vec<u8>) {
    let payload_bytes = MESSAGE_PREFIX.len() + body.len() + 1;
    let mut head = [0u8; HEAD_BYTES_MAX];
    let head_bytes = text_frame_head(payload_bytes, &mut head);
    out.extend_from_slice(&head[..head_bytes]);
    out.extend_from_slice(MESSAGE_PREFIX);
    out.extend_from_slice(body);
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &'static str) -> TopicName {
        TopicName::new(Bytes::from_static(name.as_bytes()), TOPIC_BYTES_LIMIT).unwrap()
    }

    /// The text of the string argument that ends a frame's event (`…,"<offset>"]`).
    fn last_argument(frame: &[u8]) -> String {
        let text = String::from_utf8_lossy(frame);
        let end = text.rfind("\"]").unwrap();
        let start = text[..end].rfind('"').unwrap() + 1;
        text[start..end].to_owned()
    }

    /// The offset a message's shared framing carries for a client of its topic alone is the
    /// one that client's own `cursor` event would send, which resumes right after the message;
    /// a client of two topics gets no such framing and owes its `cursor` event.
    #[test]
    fn a_one_topic_offset_is_the_cursor_event_offset() {
        let epoch = Epoch(0x0123_4567_89ab_cdef);
        let message = Message::new(&topic("AAPL"), 42, b"1.5");
        let mut recovery = Recovery::default();
        recovery.add(
            &topic("AAPL"),
            Some(Since {
                seq: 40,
                epoch: Some(epoch),
            }),
        );
        assert_eq!(recovery.offset_epoch(&message), Some(epoch));
        assert!(!recovery.took_message(&message), "nothing owed after it");
        assert_eq!(recovery.due_ms(0), u64::MAX);

        let offset = OneTopicOffset::new(&message, epoch);
        let mut frame = Vec::new();
        offset.write_message_frame(message.body(), &mut frame);
        assert_eq!(frame.len(), offset.message_frame_bytes(message.body()));
        let carried = last_argument(&frame);
        recovery.owed = true;
        let mut encoder = FrameEncoder::new(4096);
        let event = recovery.cursor_event(&mut encoder, 0).unwrap();
        assert_eq!(carried, last_argument(&event));
        let (topics, positions) = decode_offset(&carried, TOPIC_BYTES_LIMIT).unwrap();
        assert_eq!(topics, [topic("AAPL")]);
        assert_eq!(
            positions,
            [Some(Since {
                seq: 42,
                epoch: Some(epoch)
            })]
        );

        recovery.add(&topic("MSFT"), None);
        let next = Message::new(&topic("AAPL"), 43, b"1.6");
        assert_eq!(recovery.offset_epoch(&next), None);
        assert!(recovery.took_message(&next), "a cursor event owed");
    }
}
