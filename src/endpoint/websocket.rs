//! A WebSocket connection after the upgrade: the protocol session, its heartbeat and close
//! deadlines, and the client's JSON requests (or, in echo mode, an echo of every message).
//!
//! The endpoint keeps one deadline at a time: idle (no traffic for `idle_timeout_ms`: send a
//! ping), pong (the ping must be answered in `pong_timeout_ms`), or closing (we sent a close and
//! the peer must answer within `close_timeout_ms`). The driver arms a timer for
//! [`WebSocketEndpoint::deadline_ms`] and calls [`WebSocketEndpoint::handle_deadline`] when it
//! passes.
//!
//! A connection that proved an identity with a token (`auth_mode = "jwt"`) keeps it boxed, so
//! that connections without one pay a pointer: its grants (checked on every subscribe and
//! publish) and a second deadline, the token's `exp` plus `expiry_grace_ms`, at which it is
//! closed with 4001 "token expired" unless a `{"op":"refresh","token":…}` for the same `sub`
//! moved it.

use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use super::outbound::Outbound;
use super::{Context, EndpointCounters, EndpointSettings, Next};
use crate::auth::{AuthFailure, Authenticator, Identity};
use crate::broker::config::BrokerConfig;
use crate::broker::event::{CLOSE_CODE_ABNORMAL, CLOSE_CODE_NONE_GIVEN, CloseReason};
use crate::broker::idempotency::IdempotencyKey;
use crate::broker::request::{Request, RequestError, parse_request};
use crate::broker::{BrokerRequest, Reply, TopicName};
use crate::protocol::CloseCode;
use crate::protocol::websocket::deflate::DeflateAgreement;
use crate::protocol::websocket::frame::{FrameEncoder, OpCode};
use crate::protocol::websocket::session::{Event, MessageKind, Session, SessionState};

/// The answer to `{"op":"ping"}`: the text frame `{"op":"pong"}`, framed once at compile time.
const PONG_FRAME: &[u8] = b"\x81\x0d{\"op\":\"pong\"}";
const _: () = assert!(PONG_FRAME.len() == 2 + 13);

/// Which deadline the endpoint's one timer stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// No traffic for the idle timeout: send a ping.
    Idle,
    /// The ping must be answered by then.
    Pong,
    /// Our close frame must be answered by then, or the socket is shut down regardless.
    Closing,
}

/// The close code of a connection whose token expired (4000–4999 are private use).
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

/// What a connection's token proved, and when the connection ends for it.
#[derive(Debug)]
pub(super) struct Access {
    pub(super) identity: Identity,
    /// The shard's clock when the token's `exp` plus `expiry_grace_ms` passes.
    pub(super) close_at_ms: u64,
}

impl Access {
    pub(super) fn new(identity: Identity, context: &Context) -> Access {
        let grace_ms = context.settings.auth.expiry_grace_ms;
        let close_at_unix_ms = identity.expires_unix_ms.saturating_add(grace_ms);
        Access {
            identity,
            close_at_ms: close_at_unix_ms.saturating_sub(context.unix_offset_ms),
        }
    }
}

/// One WebSocket connection.
#[derive(Debug)]
pub struct WebSocketEndpoint {
    session: Session,
    deadline: Deadline,
    deadline_ms: u64,
    last_receive_ms: u64,
    ping_sent_ms: u64,
    /// When the frame or message the peer is in the middle of must end (`message_timeout_ms`
    /// after it began); `u64::MAX` when it is not in the middle of one. One field rather than
    /// the start and the timeout: every connection slot holds it.
    message_deadline_ms: u64,
    /// The token's identity and expiry; `None` without authentication.
    access: Option<Box<Access>>,
    /// How the connection closed, from whichever side closed first: the code and reason of the
    /// first close frame sent or received (for the `connection.closed` webhook). The code is
    /// 1006 until a close is noted (1006 is never sent or received on the wire). The reason is
    /// kept, boxed, only when a webhook reports it: every connection slot holds this field,
    /// and an inline reason took 24 bytes where the box takes 8.
    close_code: u16,
    close_reason: Option<Box<CloseReason>>,
    /// permessage-deflate as agreed in the upgrade; `None` when not negotiated.
    deflate: Option<DeflateAgreement>,
}

impl WebSocketEndpoint {
    /// A connection whose upgrade was just accepted.
    pub fn new(now_ms: u64, settings: &EndpointSettings) -> WebSocketEndpoint {
        WebSocketEndpoint {
            session: Session::new(),
            deadline: Deadline::Idle,
            deadline_ms: now_ms + settings.idle_timeout_ms,
            last_receive_ms: now_ms,
            ping_sent_ms: 0,
            message_deadline_ms: u64::MAX,
            access: None,
            close_code: CLOSE_CODE_ABNORMAL,
            close_reason: None,
            deflate: None,
        }
    }

    /// Takes the permessage-deflate agreement of the upgrade: the peer may then send
    /// compressed messages, and messages to it are compressed.
    pub fn set_deflate(&mut self, deflate: Option<DeflateAgreement>) {
        self.deflate = deflate;
        self.session.set_compression(deflate.is_some());
    }

    /// The window our compressed frames for this connection are made with, or `None` when it
    /// takes uncompressed frames only (not negotiated, or a window zlib cannot make).
    pub fn compression_window_bits(&self) -> Option<u8> {
        self.deflate
            .filter(DeflateAgreement::compresses)
            .map(|deflate| deflate.server_window_bits)
    }

    /// The close code and reason the connection ended with: those of the first close frame
    /// either side sent, or 1006 with no reason when none was (the peer went away, the close
    /// timed out before anything was sent).
    pub fn close_record(&self) -> (u16, CloseReason) {
        let reason = self.close_reason.as_deref().cloned();
        (self.close_code, reason.unwrap_or(CloseReason::Static("")))
    }

    /// Gives the connection the identity its upgrade request's token proved.
    pub fn authenticate(&mut self, identity: Option<Box<Identity>>, context: &Context) {
        self.access = identity.map(|identity| Box::new(Access::new(*identity, context)));
    }

    /// The heartbeat or close deadline, or the unfinished message's or the token's if sooner.
    pub fn deadline_ms(&self) -> u64 {
        let expiry_ms = self.expiry_deadline_ms();
        self.deadline_ms
            .min(self.message_deadline_ms())
            .min(expiry_ms)
    }

    /// When the token's grace ends; never once the close handshake began.
    fn expiry_deadline_ms(&self) -> u64 {
        match (&self.access, self.session.state()) {
            (Some(access), SessionState::Open) => access.close_at_ms,
            _ => u64::MAX,
        }
    }

    fn message_deadline_ms(&self) -> u64 {
        match self.session.state() {
            SessionState::Open => self.message_deadline_ms,
            _ => u64::MAX,
        }
    }

    /// Whether messages may be queued: the session is open (after a close frame nothing but the
    /// close handshake may follow).
    pub fn takes_messages(&self) -> bool {
        self.session.state() == SessionState::Open
    }

    /// Reads frames from one read; answers what they ask for and leaves broker requests in the
    /// context.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        self.last_receive_ms = context.now_ms;
        let settings = &*context.settings;
        let kept = settings.close_reasons_kept;
        let mut close_note = CloseNote::new(&mut self.close_code, &mut self.close_reason, kept);
        let mut reader = self
            .session
            .handle_read(input, &mut context.pool, &settings.protocol);
        while let Some(result) = reader.next_event() {
            match result {
                Ok(Event::Message { kind, payload }) => {
                    context.counters.messages_received += 1;
                    if settings.echo {
                        // A reply to the peer's own message is never refused: when replies pile
                        // up, the shard pauses reading from this peer instead, so TCP pushes
                        // back on it. The overshoot is bounded by what one turn received.
                        let opcode = match kind {
                            MessageKind::Text => OpCode::Text,
                            MessageKind::Binary => OpCode::Binary,
                        };
                        let window_bits = self
                            .deflate
                            .filter(DeflateAgreement::compresses)
                            .map(|deflate| deflate.server_window_bits)
                            .filter(|_| {
                                payload.len() >= settings.protocol.compression_message_bytes_min
                            });
                        let frame = match window_bits {
                            Some(window_bits) => {
                                let compressed = context.compressors.compress(payload, window_bits);
                                context.encoder.encode_compressed(opcode, compressed)
                            }
                            None => context.encoder.encode(opcode, true, payload),
                        };
                        outbound.push_control(frame);
                    } else {
                        let sink = RequestSink {
                            outbound: &mut *outbound,
                            encoder: &mut context.encoder,
                            counters: &mut context.counters,
                            requests: &mut context.requests,
                            access: &mut self.access,
                            auth: &settings.auth,
                            now_ms: context.now_ms,
                            unix_offset_ms: context.unix_offset_ms,
                        };
                        sink.handle(kind, payload, &settings.broker);
                    }
                }
                Ok(Event::Close { code, reason }) => {
                    let code = code.map_or(CLOSE_CODE_NONE_GIVEN, |code| code.0);
                    // The peer's words are kept only for a webhook that reports them: a copy
                    // per close is not worth making otherwise.
                    close_note.note(code, || CloseReason::Peer(reason.into()));
                }
                Ok(Event::Ping(_) | Event::Pong(_)) => {}
                Err(error) => {
                    context.counters.protocol_errors += 1;
                    debug!(%error, close_code = %error.close_code(), "peer broke the protocol");
                    let reason = || CloseReason::Static(error.close_reason());
                    close_note.note(error.close_code().0, reason);
                }
            }
            while let Some(frame) = reader.poll_transmit() {
                outbound.push_control(context.encoder.copy(frame.as_bytes()));
            }
        }
        drop(reader);
        self.message_deadline_ms = match self.session.is_mid_message() {
            true if self.message_deadline_ms == u64::MAX => {
                context.now_ms + context.settings.message_timeout_ms
            }
            true => self.message_deadline_ms,
            false => u64::MAX,
        };
        self.flush_transmits(outbound, context)
    }

    /// Starts the close handshake from our side (shutdown 1001, slow consumer 1008).
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        if self.session.state() == SessionState::Open {
            let kept = context.settings.close_reasons_kept;
            CloseNote::new(&mut self.close_code, &mut self.close_reason, kept)
                .note(code.0, || CloseReason::Static(reason));
        }
        self.session.close(code, reason);
        self.flush_transmits(outbound, context)
    }

    /// The deadline passed: ping, give up on the peer, or end a close handshake it ignored.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        let settings = &*context.settings;
        let now_ms = context.now_ms;
        if now_ms >= self.expiry_deadline_ms() {
            context.counters.token_expiries += 1;
            debug!("token expired and not refreshed: closing with 4001");
            return self.close(TOKEN_EXPIRED, "token expired", outbound, context);
        }
        if now_ms >= self.message_deadline_ms() {
            // A message begun and trickled holds pooled buffers that others need: refused.
            context.counters.message_timeouts += 1;
            debug!("message not finished in time: closing with 1008");
            self.message_deadline_ms = u64::MAX;
            return self.close(
                CloseCode::POLICY_VIOLATION,
                "message too slow",
                outbound,
                context,
            );
        }
        if now_ms < self.deadline_ms {
            return Next::Continue;
        }
        match self.deadline {
            Deadline::Idle if now_ms < self.last_receive_ms + settings.idle_timeout_ms => {
                self.set_deadline(
                    Deadline::Idle,
                    self.last_receive_ms + settings.idle_timeout_ms,
                );
            }
            Deadline::Idle => {
                context.counters.pings_sent += 1;
                outbound.push_control(context.encoder.encode(OpCode::Ping, true, b""));
                self.ping_sent_ms = now_ms;
                self.set_deadline(Deadline::Pong, now_ms + settings.pong_timeout_ms);
            }
            // A ping goes out only once `idle_timeout_ms` (at least 1) passed since the last
            // receive, so any receive stamped at or after `ping_sent_ms` came after the ping. A
            // strict `>` missed a pong that arrived within the same millisecond, as on a LAN,
            // and closed a live client with "ping timeout".
            Deadline::Pong if self.last_receive_ms >= self.ping_sent_ms => {
                self.set_deadline(
                    Deadline::Idle,
                    self.last_receive_ms + settings.idle_timeout_ms,
                );
            }
            Deadline::Pong => {
                context.counters.pong_timeouts += 1;
                debug!("ping unanswered: closing");
                // The peer is gone or stuck: send the close, but do not wait for its answer.
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

    pub fn release_buffers(&mut self, pool: &mut crate::protocol::pool::BufferPool) {
        self.session.release_buffers(pool);
    }

    fn set_deadline(&mut self, deadline: Deadline, deadline_ms: u64) {
        self.deadline = deadline;
        self.deadline_ms = deadline_ms;
    }

    /// Queues the control frames the session owes and follows its close handshake.
    fn flush_transmits(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        while let Some(frame) = self.session.poll_transmit(&mut context.pool) {
            outbound.push_control(context.encoder.copy(frame.as_bytes()));
        }
        match self.session.state() {
            SessionState::Open => Next::Continue,
            SessionState::CloseSent => {
                if self.deadline != Deadline::Closing {
                    let deadline_ms = context.now_ms + context.settings.close_timeout_ms;
                    self.set_deadline(Deadline::Closing, deadline_ms);
                }
                Next::Continue
            }
            SessionState::Closed => Next::CloseAfterFlush,
        }
    }
}

/// Where a connection's requests go while its session is being read (the session holds the
/// rest of the context).
struct RequestSink<'a> {
    outbound: &'a mut Outbound,
    encoder: &'a mut FrameEncoder,
    counters: &'a mut EndpointCounters,
    requests: &'a mut Vec<BrokerRequest>,
    access: &'a mut Option<Box<Access>>,
    auth: &'a Authenticator,
    now_ms: u64,
    unix_offset_ms: u64,
}

impl RequestSink<'_> {
    /// Parses one request; answers a bad one with an `error` message at once, and leaves a good
    /// one to the broker.
    fn handle(mut self, kind: MessageKind, payload: &[u8], config: &BrokerConfig) {
        let parsed = match kind {
            MessageKind::Text => parse_request(payload, config),
            MessageKind::Binary => Err(RequestError::Binary),
        };
        match parsed {
            Ok(Request::Publish { topic, .. }) if !self.grants_publish(&topic) => {
                self.counters.publish_requests += 1;
                self.forbid(&topic, config);
            }
            Ok(Request::Publish { topic, data, id }) => {
                self.counters.publish_requests += 1;
                // Topic, data and id in one copy: the request outlives this read's buffer.
                let id = id.as_deref().unwrap_or("");
                let copied = self
                    .encoder
                    .copy_parts(&[topic.as_bytes(), data, id.as_bytes()]);
                let (topic_end, data_end) = (topic.len(), topic.len() + data.len());
                let Some(topic) = self.topic(copied.slice(..topic_end), config) else {
                    return;
                };
                let key = match id.is_empty() {
                    true => None,
                    // Checked by the request parser; a refusal here would be a bug.
                    false => match IdempotencyKey::new(copied.slice(data_end..)) {
                        Ok(key) => Some(key),
                        Err(error) => return self.refuse(error.reason()),
                    },
                };
                self.requests.push(BrokerRequest::Publish {
                    topic,
                    data: copied.slice(topic_end..data_end),
                    ticket: None,
                    key,
                });
            }
            Ok(Request::Subscribe { topics, since }) => {
                self.counters.subscribe_requests += 1;
                for name in topics {
                    if !self.grants_subscribe(&name) {
                        self.forbid(&name, config);
                        continue;
                    }
                    let since = since.get(&name).copied();
                    let copied = self.encoder.copy(name.as_bytes());
                    if let Some(topic) = self.topic(copied, config) {
                        self.requests
                            .push(BrokerRequest::Subscribe { topic, since });
                    }
                }
            }
            Ok(Request::Unsubscribe { topics }) => {
                self.counters.unsubscribe_requests += 1;
                for name in topics {
                    let copied = self.encoder.copy(name.as_bytes());
                    if let Some(topic) = self.topic(copied, config) {
                        self.requests.push(BrokerRequest::Unsubscribe { topic });
                    }
                }
            }
            Ok(Request::Ping) => self.outbound.push_control(Bytes::from_static(PONG_FRAME)),
            Ok(Request::Refresh { token }) => self.refresh(token.as_bytes()),
            Err(error) => self.refuse(error.reason()),
        }
    }

    fn grants_subscribe(&self, topic: &str) -> bool {
        let access = self.access.as_deref();
        access.is_none_or(|access| access.identity.grants.subscribe.allows(topic))
    }

    fn grants_publish(&self, topic: &str) -> bool {
        let access = self.access.as_deref();
        access.is_none_or(|access| access.identity.grants.publish.allows(topic))
    }

    /// `{"op":"error","reason":"forbidden","topic":…}`: outside the token's grants. The
    /// connection stays open.
    fn forbid(&mut self, name: &str, config: &BrokerConfig) {
        self.counters.forbidden_requests += 1;
        debug!(topic = name, "request outside the token's grants");
        let copied = self.encoder.copy(name.as_bytes());
        // The parser checked the name; were it refused here, the refusal says so instead.
        if let Some(topic) = self.topic(copied, config) {
            let reply = Reply::topic_error(self.encoder, "forbidden", &topic);
            self.outbound.push_control(reply.websocket_frame().clone());
        }
    }

    /// `{"op":"refresh","token":…}`: a token for the same `sub` moves the expiry and replaces
    /// the grants at once (the broker drops subscriptions they no longer cover). A refused
    /// refresh changes nothing: the connection still ends at the old expiry.
    fn refresh(&mut self, token: &[u8]) {
        let Some(access) = self.access.as_deref_mut() else {
            return self.refuse("refresh needs a connection opened with a token");
        };
        let unix_ms = self.now_ms + self.unix_offset_ms;
        let identity = match self.auth.verify(token, unix_ms) {
            Ok(identity) if identity.subject == access.identity.subject => identity,
            Ok(_) => {
                self.counters.count_auth_failure(AuthFailure::Claims);
                return self.refuse("refresh refused: the token names another sub");
            }
            Err(failure) => {
                self.counters.count_auth_failure(failure);
                return self.refuse(refresh_refusal(failure));
            }
        };
        self.counters.token_refreshes += 1;
        let grants = Arc::clone(&identity.grants);
        let expires_seconds = identity.expires_unix_ms / 1000;
        let grace_ms = self.auth.expiry_grace_ms;
        access.close_at_ms = identity
            .expires_unix_ms
            .saturating_add(grace_ms)
            .saturating_sub(self.unix_offset_ms);
        access.identity = identity;
        self.requests.push(BrokerRequest::Regrant { grants });
        let reply = Reply::refreshed(self.encoder, expires_seconds);
        self.outbound.push_control(reply.websocket_frame().clone());
    }

    /// A name the request parser already checked, as a `TopicName` (checked again: cheap, and no
    /// name reaches the broker unchecked).
    fn topic(&mut self, name: Bytes, config: &BrokerConfig) -> Option<TopicName> {
        match TopicName::new(name, config.topic_bytes_max) {
            Ok(topic) => Some(topic),
            Err(error) => {
                self.refuse(error.reason());
                None
            }
        }
    }

    fn refuse(&mut self, reason: &'static str) {
        debug_assert!(!reason.contains('"'));
        self.counters.request_errors += 1;
        debug!(reason, "bad request");
        let reply = Reply::error(self.encoder, reason);
        self.outbound.push_control(reply.websocket_frame().clone());
    }
}

/// The `reason` of a refused refresh.
fn refresh_refusal(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::Missing => "refresh refused: authentication is off",
        AuthFailure::Malformed => "refresh refused: malformed",
        AuthFailure::Signature => "refresh refused: signature",
        AuthFailure::Algorithm => "refresh refused: algorithm",
        AuthFailure::Expired => "refresh refused: expired",
        AuthFailure::NotYetValid => "refresh refused: not_yet_valid",
        AuthFailure::Audience => "refresh refused: audience",
        AuthFailure::Issuer => "refresh refused: issuer",
        AuthFailure::Claims => "refresh refused: claims",
    }
}

/// The close code and kept reason of a connection, borrowed apart from its session (which a
/// reader holds while closes are noted).
struct CloseNote<'a> {
    code: &'a mut u16,
    reason: &'a mut Option<Box<CloseReason>>,
    /// Whether a webhook reports reasons.
    kept: bool,
}

impl<'a> CloseNote<'a> {
    fn new(
        code: &'a mut u16,
        reason: &'a mut Option<Box<CloseReason>>,
        kept: bool,
    ) -> CloseNote<'a> {
        CloseNote { code, reason, kept }
    }

    /// Notes the first close, ours or the peer's: its code, and its reason when kept. An empty
    /// reason is not kept: it reads as empty anyway.
    fn note(&mut self, code: u16, reason: impl FnOnce() -> CloseReason) {
        if *self.code != CLOSE_CODE_ABNORMAL {
            return;
        }
        *self.code = code;
        let reason = if self.kept { Some(reason()) } else { None };
        *self.reason = reason
            .filter(|reason| !reason.as_str().is_empty())
            .map(Box::new);
    }
}
