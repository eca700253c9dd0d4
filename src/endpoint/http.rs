//! A connection speaking HTTP/1.1: requests read by the sans-IO `RequestReader` (heads and
//! bodies, keep-alive, pipelining), routed here (`/ws` upgrades) and by `broker::http_api`
//! (publishing, health, metrics), and answered in request order.
//!
//! A publish is answered only once its topic's owner has numbered it, possibly on another
//! shard; a response waits in `http_pending` until it and every response before it is ready, so
//! pipelined requests are answered in the order they came.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use tracing::debug;

use super::board;
use super::cors::{self, Cors};
use super::outbound::{Frame, Outbound};
use super::poll::HeldPoll;
use super::socketio::{EngineMode, SocketIoStart};
use super::socketio_polling::{self, EngineCall, LocalSessions, SessionWhere};
use super::{Context, EndpointCounters, EndpointSettings, MetricsText, Next};
use crate::auth::AuthFailure;
use crate::auth::{AuthRefusal, Identity};
use crate::broker::command::{CarrierRequest, SessionAddress};
use crate::broker::http_api::{
    self, HttpError, Route, write_batch_response, write_http_error, write_publish_response,
};
use crate::broker::idempotency::IdempotencyKey;
use crate::broker::owner::OwnerError;
use crate::broker::stream_api::{self, StreamKind, StreamRequest};
use crate::broker::{BrokerRequest, Message, Reply, TopicName};
use crate::protocol::HandshakeError;
use crate::protocol::http1::head::HEADERS_COUNT_MAX;
use crate::protocol::http1::response as handshake;
use crate::protocol::http1::{CONTINUE_RESPONSE, HttpEvent, Request, RequestHead, RequestReader};
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::deflate::DeflateAgreement;
use crate::protocol::websocket::frame::FrameEncoder;
use crate::protocol::websocket::upgrade;

/// What `GET /metrics` is answered with: OpenMetrics text, which Prometheus asks for in its
/// `Accept` header and parses when told so here.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An HTTP response not sent yet because it, or one before it, waits for seqs.
#[derive(Debug)]
pub struct PendingResponse {
    /// The ticket of the first message of a publish; the others follow on.
    first_ticket: u32,
    seqs: Vec<u64>,
    answered: usize,
    refused: Option<OwnerError>,
    /// `POST /publish` (answered with `seqs`) rather than `POST /publish/{topic}` (`seq`).
    batch: bool,
    keep_alive: bool,
    /// A response ready at once but queued behind one that waits.
    ready: Option<Frame>,
}

impl PendingResponse {
    fn is_complete(&self) -> bool {
        self.answered == self.seqs.len()
    }

    fn write(&self, out: &mut BytesMut) {
        if let Some(ready) = &self.ready {
            return out.extend_from_slice(ready.as_slice());
        }
        if let Some(error) = self.refused {
            let body = format!("{{\"error\":\"{}\"}}", error.reason());
            let headers = [("Content-Type", "application/json"), ("Retry-After", "1")];
            let status = error.status();
            return handshake::write_response(
                status,
                &headers,
                body.as_bytes(),
                self.keep_alive,
                out,
            );
        }
        match self.batch {
            true => write_batch_response(&self.seqs, self.keep_alive, out),
            false => write_publish_response(self.seqs[0], self.keep_alive, out),
        }
    }
}

/// Responses waiting for seqs, in request order.
#[derive(Debug, Default)]
pub struct Responses {
    pending: VecDeque<PendingResponse>,
    next_ticket: u32,
    /// The connection closes once the responses queued so far are sent.
    closing_after_responses: bool,
    /// A poll waiting for messages, or an Engine.IO request handed to a session's shard
    /// waiting for its answer; one box for either, as every connection's endpoint is as large
    /// as its largest state. Requests that come meanwhile are not read: the connection closes
    /// after the answer (no client pipelines behind a long poll).
    held: Option<Box<Held>>,
}

/// What a connection's request waits for.
#[derive(Debug)]
enum Held {
    Poll(HeldPoll),
    /// What the Engine.IO request waits for, and what its answer tells a browser of another
    /// origin.
    Engine(EngineWait, Cors),
}

impl Responses {
    fn poll(&self) -> Option<&HeldPoll> {
        match self.held.as_deref() {
            Some(Held::Poll(poll)) => Some(poll),
            _ => None,
        }
    }

    fn poll_mut(&mut self) -> Option<&mut HeldPoll> {
        match self.held.as_deref_mut() {
            Some(Held::Poll(poll)) => Some(poll),
            _ => None,
        }
    }

    fn take_poll(&mut self) -> Option<Box<Held>> {
        match self.held.as_deref() {
            Some(Held::Poll(_)) => self.held.take(),
            _ => None,
        }
    }

    fn engine_wait(&self) -> Option<&EngineWait> {
        match self.held.as_deref() {
            Some(Held::Engine(wait, _)) => Some(wait),
            _ => None,
        }
    }

    fn take_engine_wait(&mut self) -> Option<Box<Held>> {
        match self.held.as_deref() {
            Some(Held::Engine(..)) => self.held.take(),
            _ => None,
        }
    }
}

/// What an Engine.IO request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineWait {
    /// A new session's open packet (from this shard).
    Open,
    /// The answer of a session's shard to a GET or a POST.
    Session(SessionAddress),
}

/// What an accepted upgrade hands the endpoint it becomes.
#[derive(Debug)]
enum Upgraded {
    /// `/ws`: the identity its token proved, and the compression agreed.
    WebSocket(Option<Box<Identity>>, Option<DeflateAgreement>),
    /// `socketio_path`: a Socket.IO client.
    SocketIo(SocketIoStart),
    /// `socketio_path` with a `sid`: the WebSocket a long-polling session upgrades to.
    SocketIoCarrier(SessionAddress),
}

/// The reference server's Engine.IO handshake errors, answered 400 with their JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineHandshakeError {
    /// `transport` is neither `polling` nor `websocket` (or polling, which is not served).
    TransportUnknown,
    /// A `sid` this server does not know.
    SessionIdUnknown,
    /// A request that cannot start a session (a plain GET naming the WebSocket transport).
    BadRequest,
    /// `EIO` other than 4.
    UnsupportedProtocolVersion,
}

impl EngineHandshakeError {
    fn body(self) -> &'static [u8] {
        match self {
            EngineHandshakeError::TransportUnknown => {
                br#"{"code":0,"message":"Transport unknown"}"#
            }
            EngineHandshakeError::SessionIdUnknown => {
                br#"{"code":1,"message":"Session ID unknown"}"#
            }
            EngineHandshakeError::BadRequest => br#"{"code":3,"message":"Bad request"}"#,
            EngineHandshakeError::UnsupportedProtocolVersion => {
                br#"{"code":5,"message":"Unsupported protocol version"}"#
            }
        }
    }
}

/// What a request at `socketio_path` asks for, once its query is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineQuery {
    /// A new session: over WebSocket (an upgrade) or long polling (a GET).
    Open,
    /// A request of the session the `sid` names: a long-polling GET or POST, or (an upgrade)
    /// the WebSocket the session moves to.
    Session(SessionAddress),
}

/// Checks the query of a request at `socketio_path`: Engine.IO 4, a transport this server
/// serves (WebSocket only as an upgrade, polling never as one), and a `sid` of this server's
/// shape if any, naming a shard it has and, when that is this shard, a session open in the
/// slot it names (whether another shard's session exists is that shard's to say).
fn check_engine_query(
    query: Option<&str>,
    upgrade: bool,
    polling_enabled: bool,
    sessions: &LocalSessions,
    mode: EngineMode,
) -> Result<EngineQuery, EngineHandshakeError> {
    use crate::protocol::engineio::{PROTOCOL_REVISION, Transport};
    use crate::protocol::http1::query::query_raw;
    let query = query.unwrap_or("");
    if query_raw(query, "EIO") != Some(PROTOCOL_REVISION) {
        return Err(EngineHandshakeError::UnsupportedProtocolVersion);
    }
    let transport = query_raw(query, "transport").and_then(Transport::parse);
    match (transport, upgrade) {
        (Some(Transport::WebSocket), true) => {}
        (Some(Transport::Polling), false) if polling_enabled => {}
        (Some(Transport::WebSocket), false) | (Some(Transport::Polling), true) => {
            return Err(EngineHandshakeError::BadRequest);
        }
        (Some(Transport::Polling), false) | (None, _) => {
            return Err(EngineHandshakeError::TransportUnknown);
        }
    }
    match query_raw(query, "sid") {
        None => Ok(EngineQuery::Open),
        Some(sid) => socketio_polling::session_address(sid)
            .filter(|_| polling_enabled)
            .filter(|address| sessions.locate(address, mode) != SessionWhere::Unknown)
            .map(EngineQuery::Session)
            .ok_or(EngineHandshakeError::SessionIdUnknown),
    }
}

/// `response` (a whole HTTP response) with header `lines` (each ending in CRLF) after its
/// status line, in one copy.
fn with_header_lines(response: &[u8], lines: &[u8], encoder: &mut FrameEncoder) -> Bytes {
    let status_end = response
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map_or(response.len(), |index| index + 2);
    let (status, rest) = response.split_at(status_end);
    encoder.copy_parts(&[status, lines, rest])
}

/// How a read ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Done(Next),
    /// An upgrade was accepted (its 101 is queued): the connection speaks WebSocket from
    /// `rest_start` of the read on, as `identity` when its token proved one, compressed as
    /// `deflate` says when permessage-deflate was negotiated.
    Upgraded {
        rest_start: usize,
        identity: Option<Box<Identity>>,
        deflate: Option<DeflateAgreement>,
    },
    /// A stream (SSE or NDJSON) was asked for and checked: the connection becomes one, and
    /// ends at `ends_at_ms` (the shard's clock) when its token runs out.
    Stream {
        request: StreamRequest,
        ends_at_ms: Option<u64>,
    },
    /// An upgrade at `socketio_path` was accepted: the connection is a Socket.IO client from
    /// `rest_start` of the read on.
    SocketIo {
        rest_start: usize,
        start: SocketIoStart,
    },
    /// An upgrade naming a long-polling session was accepted: the connection carries that
    /// session from `rest_start` of the read on.
    SocketIoCarrier {
        rest_start: usize,
        address: SessionAddress,
    },
}

/// One connection speaking HTTP/1.1.
#[derive(Debug)]
pub struct HttpEndpoint {
    reader: RequestReader,
    responses: Responses,
    /// The next request head must be complete by then (slowloris).
    deadline_ms: u64,
}

/// What answering a request needs while the request reader holds the read and the pool: the
/// other parts of the endpoint and of the context, borrowed apart.
struct Answer<'a> {
    responses: &'a mut Responses,
    outbound: &'a mut Outbound,
    counters: &'a mut EndpointCounters,
    encoder: &'a mut FrameEncoder,
    requests: &'a mut Vec<BrokerRequest>,
    engine_calls: &'a mut Vec<EngineCall>,
    engine_sessions: &'a LocalSessions,
    settings: &'a EndpointSettings,
    metrics: &'a mut dyn MetricsText,
    /// The shard's clock and the same instant in Unix milliseconds (tokens speak Unix time).
    now_ms: u64,
    unix_ms: u64,
    /// A stream the request asked for, handed to the caller.
    stream: Option<StreamRequest>,
    /// When that stream's token runs out (its `exp` plus `expiry_grace_ms`), on the shard's
    /// clock; `None` without a token.
    stream_ends_at_ms: Option<u64>,
}

impl HttpEndpoint {
    pub fn new(now_ms: u64, settings: &EndpointSettings) -> HttpEndpoint {
        HttpEndpoint {
            reader: RequestReader::default(),
            responses: Responses::default(),
            deadline_ms: now_ms + settings.handshake_timeout_ms,
        }
    }

    pub fn deadline_ms(&self) -> u64 {
        match self.responses.poll() {
            Some(poll) => poll.deadline_ms(),
            None => self.deadline_ms,
        }
    }

    /// The session whose answer this connection waits for.
    pub fn engine_waiting(&self) -> Option<SessionAddress> {
        match self.responses.engine_wait() {
            Some(&EngineWait::Session(address)) => Some(address),
            Some(EngineWait::Open) | None => None,
        }
    }

    /// The answer to the Engine.IO request this connection waited for (a whole response);
    /// ignored when it waits for none (it timed out meanwhile).
    pub fn answer_engine(
        &mut self,
        response: Bytes,
        keep_alive: bool,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        let Some(held) = self.responses.take_engine_wait() else {
            return Next::Continue;
        };
        let response = match *held {
            Held::Engine(_, Cors::Off) | Held::Poll(_) => response,
            Held::Engine(_, cors) => {
                let origins = &context.settings.socketio.socketio_cors_origins;
                let mut lines = Vec::with_capacity(128);
                cors.write_headers(origins, &mut lines);
                with_header_lines(&response, &lines, &mut context.encoder)
            }
        };
        Answer::respond_to(&mut self.responses, outbound, Frame::from(response));
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        self.deadline_ms = context.now_ms + context.settings.handshake_timeout_ms;
        self.close_when_answered()
    }

    /// Whether a poll is held (the connection takes messages meanwhile).
    pub fn is_polling(&self) -> bool {
        self.responses.poll().is_some()
    }

    /// A message for the held poll.
    pub fn collect(&mut self, message: &Message) {
        if let Some(poll) = self.responses.poll_mut() {
            poll.collect(message);
        }
    }

    /// A reply for the held poll.
    pub fn collect_reply(&mut self, reply: &Reply) {
        if let Some(poll) = self.responses.poll_mut() {
            poll.collect_reply(reply);
        }
    }

    /// The end of the shard's turn: a held poll with something to say answers.
    pub fn handle_turn_end(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        match self.responses.poll() {
            Some(poll) if poll.is_ready() => self.answer_poll(outbound, context),
            _ => Next::Continue,
        }
    }

    /// Answers the held poll with what it collected and ends its subscriptions (left in the
    /// context's requests for the broker).
    fn answer_poll(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        let Some(held) = self.responses.take_poll() else {
            return Next::Continue;
        };
        let Held::Poll(poll) = *held else {
            unreachable!("take_poll takes a poll");
        };
        context.counters.poll_answers += 1;
        let keep_alive = poll.keep_alive();
        let answer = poll.answer(&mut context.frames, &mut context.requests);
        Answer::respond_to(&mut self.responses, outbound, answer);
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        self.deadline_ms = context.now_ms + context.settings.handshake_timeout_ms;
        self.close_when_answered()
    }

    /// The server closes the connection: a held poll is answered first (its client gets the
    /// cursor to resume from), without ending its subscriptions (the connection's close does).
    pub fn close(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        if self.responses.engine_wait().is_some() {
            // The session's shard owes the answer (in a shutdown it closes the session, and a
            // held GET gets `1`): the connection closes once it is sent, or at its deadline.
            self.responses.closing_after_responses = true;
            return Next::Continue;
        }
        if let Some(held) = self.responses.take_poll() {
            let Held::Poll(poll) = *held else {
                unreachable!("take_poll takes a poll");
            };
            let mut unsubscribes = Vec::new();
            let answer = poll.answer(&mut context.frames, &mut unsubscribes);
            Answer::respond_to(&mut self.responses, outbound, answer);
        }
        self.responses.closing_after_responses = true;
        Next::CloseAfterFlush
    }

    /// Reads requests from `input` and answers each; hands over to the WebSocket after an
    /// accepted upgrade, with the bytes that followed its head.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Read {
        if self.responses.closing_after_responses {
            return Read::Done(Next::Continue); // On its way out: reads nothing more.
        }
        if self.responses.held.is_some() {
            // A request behind a held poll: not read; the connection closes after the answer.
            self.responses.closing_after_responses = true;
            return Read::Done(Next::Continue);
        }
        let mut answer = Answer {
            responses: &mut self.responses,
            outbound,
            counters: &mut context.counters,
            encoder: &mut context.encoder,
            requests: &mut context.requests,
            engine_calls: &mut context.engine_calls,
            engine_sessions: &context.engine_sessions,
            settings: &context.settings,
            metrics: &mut *context.metrics,
            now_ms: context.now_ms,
            unix_ms: context.now_ms + context.unix_offset_ms,
            stream: None,
            stream_ends_at_ms: None,
        };
        let mut upgraded_at = None;
        let mut answered = false;
        let mut events =
            self.reader
                .handle_read(input, &mut context.pool, &context.settings.http_limits);
        while let Some(event) = events.next_event() {
            let keep_going = match event {
                Ok(HttpEvent::Request(_)) if answer.pipeline_is_full() => {
                    let requests_max = answer.settings.publish.http_pipelined_requests_max;
                    answer.refuse(&HttpError::TooManyPipelined { requests_max }, false)
                }
                Ok(HttpEvent::Request(request)) => answer.request(&request),
                Ok(HttpEvent::ContinueExpected(head)) => answer.continue_expected(&head),
                Ok(HttpEvent::Upgrade { head, rest_start }) => {
                    upgraded_at = answer.upgrade(&head).map(|upgraded| (rest_start, upgraded));
                    false
                }
                Err(error) => answer.refuse(&HttpError::Request(error), false),
            };
            answered = true;
            if !keep_going || answer.responses.held.is_some() {
                break;
            }
        }
        if let Some(request) = answer.stream.take() {
            return Read::Stream {
                request,
                ends_at_ms: answer.stream_ends_at_ms,
            };
        }
        match upgraded_at {
            Some((rest_start, Upgraded::WebSocket(identity, deflate))) => {
                return Read::Upgraded {
                    rest_start,
                    identity,
                    deflate,
                };
            }
            Some((rest_start, Upgraded::SocketIo(start))) => {
                return Read::SocketIo { rest_start, start };
            }
            Some((rest_start, Upgraded::SocketIoCarrier(address))) => {
                return Read::SocketIoCarrier {
                    rest_start,
                    address,
                };
            }
            None => {}
        }
        if self.responses.engine_wait().is_some() {
            // The session's answer must come within a heartbeat (a held GET is answered with
            // the next ping at the latest); past that the connection gives up on it.
            let socketio = &context.settings.socketio;
            let wait_ms = socketio.ping_interval_ms + socketio.ping_timeout_ms;
            self.deadline_ms = context.now_ms + wait_ms + context.settings.handshake_timeout_ms;
            return Read::Done(Next::Continue);
        }
        if self.responses.closing_after_responses {
            return Read::Done(self.close_when_answered());
        }
        // After an answer, the next request must come in time, like the first; a request still
        // arriving keeps the deadline it started with (a slowloris client cannot extend it).
        if answered {
            self.deadline_ms = context.now_ms + context.settings.handshake_timeout_ms;
        }
        Read::Done(Next::Continue)
    }

    /// The request head did not come in time: 408, then close. Or a held poll's wait is over:
    /// its answer. Or the server still owes answers to requests that came in full (a clustered
    /// publish waits for JetStream up to `nats_publish_timeout_ms`, past this deadline): the
    /// client is not late, the deadline starts again. The owed answers always come (a seq or
    /// an error), so a client cannot hold the connection this way past the publish timeout.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        if self.responses.poll().is_some() {
            return self.answer_poll(outbound, context);
        }
        // A publish's answer owed (clustered: JetStream can take past this deadline) keeps
        // the connection; an Engine.IO answer is not a publish and waits no longer than a head.
        if self.responses.engine_wait().is_none() && !self.responses.pending.is_empty() {
            self.deadline_ms = context.now_ms + context.settings.handshake_timeout_ms;
            return Next::Continue;
        }
        // An Engine.IO answer that never came ends like a request that never came (the
        // session is told when the connection closes).
        self.responses.take_engine_wait();
        context.counters.handshake_timeouts += 1;
        let mut response = BytesMut::new();
        handshake::write_response(
            408,
            &[],
            b"request head not received in time\n",
            false,
            &mut response,
        );
        outbound.push_control(response.freeze());
        self.responses.closing_after_responses = true;
        Next::CloseAfterFlush
    }

    /// Records an owner's answer for HTTP publish `ticket` and sends every response at the
    /// front that is now complete.
    pub fn answer_publish(
        &mut self,
        ticket: u32,
        result: Result<u64, OwnerError>,
        outbound: &mut Outbound,
    ) -> Next {
        let responses = &mut self.responses;
        let Some(pending) = responses
            .pending
            .iter_mut()
            .find(|pending| ticket.wrapping_sub(pending.first_ticket) < pending.seqs.len() as u32)
        else {
            return Next::Continue;
        };
        let index = ticket.wrapping_sub(pending.first_ticket) as usize;
        match result {
            Ok(seq) => pending.seqs[index] = seq,
            Err(error) => pending.refused = Some(error),
        }
        pending.answered += 1;
        flush_complete(responses, outbound);
        self.close_when_answered()
    }

    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.reader.release_buffers(pool);
    }

    /// A connection closing after its responses closes once none waits for a seq.
    fn close_when_answered(&self) -> Next {
        match self.responses.closing_after_responses && self.responses.pending.is_empty() {
            true => Next::CloseAfterFlush,
            false => Next::Continue,
        }
    }
}

impl Answer<'_> {
    /// Whether `path` is served by Engine.IO sessions (never in the server-wide echo mode,
    /// which echoes WebSocket frames at every path), and what they carry.
    fn engine_mode(&self, path: &str) -> Option<EngineMode> {
        match self.settings.echo {
            true => None,
            false => self.settings.socketio.engine_mode(path),
        }
    }

    /// Answers one whole request; returns whether the connection reads on.
    fn request(&mut self, request: &Request<'_>) -> bool {
        self.counters.http_requests += 1;
        let keep_alive = request.head.keep_alive();
        let is_head = request.head.method() == "HEAD";
        let path = request.head.path();
        if path == "/ws" && !self.settings.echo {
            return self.refuse_handshake(&HandshakeError::PlainRequestToWebSocket);
        }
        if let Some(mode) = self.engine_mode(path) {
            return self.engine_request(request, mode, keep_alive);
        }
        let readable = request.head.method() == "GET" || is_head;
        if let Some(asset) = board::asset(path).filter(|_| self.settings.board_enabled && readable)
        {
            let headers = [
                ("Content-Type", asset.content_type),
                ("Cache-Control", "no-cache"),
            ];
            self.respond_ok(&headers, asset.body, is_head, keep_alive);
            return self.read_on(keep_alive);
        }
        let identity = match self.admit(&request.head) {
            Ok(identity) => identity,
            Err(()) => return false,
        };
        if let Some(kind) = StreamKind::at(path) {
            return self.read_topics(request, kind, identity.as_ref());
        }
        if path == "/metrics/totals" && readable {
            let body = self.metrics.totals();
            let headers = [("Content-Type", "application/json")];
            self.respond_ok(&headers, body.as_bytes(), is_head, keep_alive);
            return self.read_on(keep_alive);
        }
        let grants = identity.as_ref().map(|identity| &*identity.grants);
        let publish_allowed =
            |topic: &str| grants.is_none_or(|grants| grants.publish.allows(topic));
        match http_api::route(request, &self.settings.publish) {
            Route::Health => {
                let headers = [("Content-Type", "text/plain; charset=utf-8")];
                let connected = self.settings.cluster_connected.as_ref();
                if connected.is_none_or(|connected| connected.load(Ordering::Acquire)) {
                    self.respond_ok(&headers, b"ok\n", is_head, keep_alive);
                } else {
                    let body = b"degraded: NATS JetStream unreachable\n";
                    self.respond_status(503, &headers, body, is_head, keep_alive);
                }
            }
            Route::Metrics => {
                let body = self.metrics.render();
                let headers = [("Content-Type", METRICS_CONTENT_TYPE)];
                self.respond_ok(&headers, body.as_bytes(), is_head, keep_alive);
            }
            Route::PublishOne { topic, .. } if !publish_allowed(&topic) => {
                self.counters.forbidden_requests += 1;
                return self.refuse(&HttpError::Forbidden { index: None }, keep_alive);
            }
            Route::PublishOne { topic, data, key } => {
                let first_ticket = self.responses.next_ticket;
                if let Err(error) = self.publish_one(&topic, data.get().as_bytes(), key) {
                    return self.refuse(&error, keep_alive);
                }
                self.queue_publish(first_ticket, 1, false, keep_alive);
            }
            Route::PublishBatch { items, .. } if items.is_empty() => {
                let mut response = BytesMut::new();
                write_batch_response(&[], keep_alive, &mut response);
                self.respond(response.freeze());
            }
            Route::PublishBatch { items, .. }
                if items.iter().any(|(topic, _)| !publish_allowed(topic)) =>
            {
                self.counters.forbidden_requests += 1;
                let index = items.iter().position(|(topic, _)| !publish_allowed(topic));
                return self.refuse(&HttpError::Forbidden { index }, keep_alive);
            }
            Route::PublishBatch { items, key } => {
                let first_ticket = self.responses.next_ticket;
                let count = items.len();
                if let Err(error) = self.publish_batch(&items, key) {
                    return self.refuse(&error, keep_alive);
                }
                self.queue_publish(first_ticket, count, true, keep_alive);
            }
            Route::Refuse(error) => return self.refuse(&error, keep_alive),
        }
        self.read_on(keep_alive)
    }

    /// After an answer: the connection reads on, or closes once its responses are sent.
    fn read_on(&mut self, keep_alive: bool) -> bool {
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        keep_alive
    }

    /// Refuses a request the way a refused upgrade is refused (text, the status's headers,
    /// close); returns that the connection reads no more.
    fn refuse_handshake(&mut self, error: &HandshakeError) -> bool {
        debug!(%error, status = error.status(), "refusing upgrade");
        self.counters.handshake_errors += 1;
        let mut response = BytesMut::new();
        handshake::write_error_response(error, &mut response);
        self.respond(response.freeze());
        self.responses.closing_after_responses = true;
        false
    }

    fn respond_ok(
        &mut self,
        headers: &[(&str, &str)],
        body: &[u8],
        is_head: bool,
        keep_alive: bool,
    ) {
        self.respond_status(200, headers, body, is_head, keep_alive);
    }

    fn respond_status(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        is_head: bool,
        keep_alive: bool,
    ) {
        let mut response = BytesMut::new();
        if is_head {
            handshake::write_response_head(status, headers, body.len(), keep_alive, &mut response);
        } else {
            handshake::write_response(status, headers, body, keep_alive, &mut response);
        }
        self.respond(response.freeze());
    }

    /// A client waiting on `Expect: 100-continue`: 100 if the head is acceptable, or the
    /// refusal (and close: the body it would send next is not read).
    fn continue_expected(&mut self, head: &RequestHead<'_>) -> bool {
        if self.admit(head).is_err() {
            return false;
        }
        match http_api::check_head(head, &self.settings.publish) {
            Ok(()) => {
                self.respond(Bytes::from_static(CONTINUE_RESPONSE));
                true
            }
            Err(error) => self.refuse(&error, false),
        }
    }

    /// Hands one message to the broker for its owner, under the next ticket.
    fn publish_one(
        &mut self,
        topic: &str,
        data: &[u8],
        key: Option<&[u8]>,
    ) -> Result<(), HttpError> {
        self.counters.publish_requests += 1;
        let (topic, data) = self.copy_item(topic, data)?;
        let key = self.copy_key(key)?;
        let ticket = self.next_tickets(1);
        self.requests.push(BrokerRequest::Publish {
            topic,
            data,
            ticket: Some(ticket),
            key,
        });
        Ok(())
    }

    /// Hands a batch to the broker, published all or none, under consecutive tickets.
    fn publish_batch(
        &mut self,
        items: &[(Cow<'_, str>, &RawValue)],
        key: Option<&[u8]>,
    ) -> Result<(), HttpError> {
        self.counters.publish_requests += items.len() as u64;
        let mut copied = Vec::with_capacity(items.len());
        for (topic, data) in items {
            copied.push(self.copy_item(topic, data.get().as_bytes())?);
        }
        let key = self.copy_key(key)?;
        let first_ticket = self.next_tickets(items.len());
        self.requests.push(BrokerRequest::PublishBatch {
            items: copied,
            first_ticket,
            key,
        });
        Ok(())
    }

    /// Topic and data in one copy (the request outlives this read's buffer), the topic as a
    /// `TopicName`. The router checked the name; a refusal here would be a bug, answered
    /// rather than left without a response.
    fn copy_item(&mut self, topic: &str, data: &[u8]) -> Result<(TopicName, Bytes), HttpError> {
        let copied = self.encoder.copy_parts(&[topic.as_bytes(), data]);
        let name = TopicName::new(
            copied.slice(..topic.len()),
            self.settings.broker.topic_bytes_max,
        )
        .map_err(HttpError::InvalidTopic)?;
        Ok((name, copied.slice(topic.len()..)))
    }

    fn copy_key(&mut self, key: Option<&[u8]>) -> Result<Option<IdempotencyKey>, HttpError> {
        key.map(|key| {
            IdempotencyKey::new(self.encoder.copy(key))
                .map_err(|_| HttpError::InvalidIdempotencyKey)
        })
        .transpose()
    }

    /// Takes `count` consecutive tickets; returns the first.
    fn next_tickets(&mut self, count: usize) -> u32 {
        let first = self.responses.next_ticket;
        self.responses.next_ticket = first.wrapping_add(count as u32);
        first
    }

    /// Queues the response of a publish of `count` messages, answered as their seqs come.
    fn queue_publish(&mut self, first_ticket: u32, count: usize, batch: bool, keep_alive: bool) {
        self.responses.pending.push_back(PendingResponse {
            first_ticket,
            seqs: vec![0; count],
            answered: 0,
            refused: None,
            batch,
            keep_alive,
            ready: None,
        });
        flush_complete(self.responses, self.outbound);
    }

    /// Sends `response` now, or queues it behind responses still waiting for seqs.
    fn respond(&mut self, response: impl Into<Frame>) {
        Answer::respond_to(self.responses, self.outbound, response.into());
    }

    fn respond_to(responses: &mut Responses, outbound: &mut Outbound, response: Frame) {
        if responses.pending.is_empty() {
            return outbound.push_control(response);
        }
        responses.pending.push_back(PendingResponse {
            first_ticket: 0,
            seqs: Vec::new(),
            answered: 0,
            refused: None,
            batch: false,
            keep_alive: true,
            ready: Some(response),
        });
    }

    /// `GET /sse`, `/stream` or `/poll`: a stream is handed to the caller, a poll is held.
    /// Every topic must be within the token's `subscribe` grants (403 otherwise, before any
    /// subscription); the stream ends, and a held poll answers, when the token runs out.
    fn read_topics(
        &mut self,
        request: &Request<'_>,
        kind: StreamKind,
        identity: Option<&Identity>,
    ) -> bool {
        let keep_alive = request.head.keep_alive();
        if request.head.method() != "GET" {
            return self.refuse(&HttpError::MethodNotAllowed { allow: "GET" }, keep_alive);
        }
        let mut parsed = match stream_api::parse(&request.head, kind, &self.settings.broker) {
            Ok(parsed) => parsed,
            Err(error) => return self.refuse(&HttpError::Stream(error), keep_alive),
        };
        if let Some(identity) = identity {
            let forbidden = parsed
                .topics
                .iter()
                .position(|topic| !identity.grants.subscribe.allows(topic.as_str()));
            if let Some(index) = forbidden {
                self.counters.forbidden_requests += 1;
                let topic = parsed.topics[index].clone();
                return self.refuse(&HttpError::SubscribeForbidden { topic }, keep_alive);
            }
        }
        let ends_at_ms = identity.map(|identity| self.token_end_ms(identity));
        self.counters.subscribe_requests += 1;
        if kind != StreamKind::Poll {
            if !self.responses.pending.is_empty() {
                // Answers to earlier requests still wait for seqs, and a stream's body
                // never ends for them to follow.
                let error = HandshakeError::MalformedRequest("stream pipelined behind a publish");
                return self.refuse(&HttpError::Request(error), false);
            }
            self.stream = Some(parsed);
            self.stream_ends_at_ms = ends_at_ms;
            return false;
        }
        if let Some(ends_at_ms) = ends_at_ms {
            // A held poll answers when its token runs out, whatever wait it asked for.
            parsed.wait_ms = parsed.wait_ms.min(ends_at_ms.saturating_sub(self.now_ms));
        }
        let broker = &self.settings.broker;
        let poll = HeldPoll::hold(
            parsed,
            keep_alive,
            self.now_ms,
            broker.poll_messages_max,
            self.settings.outbound_queue_bytes_max,
            self.requests,
        );
        self.responses.held = Some(Box::new(Held::Poll(poll)));
        keep_alive
    }

    /// When `identity`'s token runs out (`exp` plus `expiry_grace_ms`), on the shard's clock.
    fn token_end_ms(&self, identity: &Identity) -> u64 {
        let ends_at_unix_ms = identity
            .expires_unix_ms
            .saturating_add(self.settings.auth.expiry_grace_ms);
        let unix_offset_ms = self.unix_ms - self.now_ms;
        ends_at_unix_ms.saturating_sub(unix_offset_ms)
    }

    /// Whether as many requests wait for answers as one connection may have.
    fn pipeline_is_full(&self) -> bool {
        self.responses.pending.len() >= self.settings.publish.http_pipelined_requests_max
    }

    /// Answers a refused request; returns whether the connection reads on.
    fn refuse(&mut self, error: &HttpError, keep_alive: bool) -> bool {
        self.counters.request_errors += 1;
        debug!(%error, status = error.status(), "refusing HTTP request");
        let mut response = BytesMut::new();
        let keep_alive = write_http_error(error, keep_alive, &mut response);
        self.respond(response.freeze());
        if !keep_alive {
            self.responses.closing_after_responses = true;
        }
        keep_alive
    }

    /// Answers an upgrade request with 101 or a refusal; returns the identity its token
    /// proved (if one is required) and the compression agreed when it was accepted.
    fn upgrade(&mut self, head: &RequestHead<'_>) -> Option<Upgraded> {
        if !self.responses.pending.is_empty() {
            // Responses to earlier requests still wait for seqs, and after a 101 there is no
            // HTTP left to send them in.
            let error = HandshakeError::MalformedRequest("upgrade pipelined behind a publish");
            self.refuse(&HttpError::Request(error), false);
            return None;
        }
        if let Some(mode) = self.engine_mode(head.path()) {
            return self.upgrade_socketio(head, mode);
        }
        // Before any upgrade: a refused client never speaks WebSocket. Echo mode (conformance
        // and benchmarks of the transport) asks for nothing.
        let identity = match self.settings.echo {
            true => None,
            false => self.admit(head).ok()?,
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let settings = self.settings;
        let accepted = upgrade::parse_request(head.bytes(), &mut headers, &settings.protocol)
            .and_then(|request| {
                request.ok_or(HandshakeError::MalformedRequest("incomplete upgrade head"))
            })
            .and_then(|request| {
                if !settings.echo && request.path() != "/ws" {
                    return Err(HandshakeError::NotFound);
                }
                if !settings.echo && !settings.websocket_enabled {
                    return Err(HandshakeError::WebSocketDisabled);
                }
                upgrade::accept_upgrade(&request, &settings.protocol)
            });
        let mut response = BytesMut::new();
        match accepted {
            Ok(upgrade) => {
                upgrade::write_switching_protocols(&upgrade, &mut response);
                self.respond(response.freeze());
                Some(Upgraded::WebSocket(identity.map(Box::new), upgrade.deflate))
            }
            Err(error) => {
                self.refuse_handshake(&error);
                None
            }
        }
    }

    /// An upgrade at `socketio_path`: the Engine.IO query, the origin and token (a missing
    /// token may come in the Socket.IO CONNECT instead), then the WebSocket handshake, without
    /// permessage-deflate (Socket.IO frames are not compressed).
    fn upgrade_socketio(&mut self, head: &RequestHead<'_>, mode: EngineMode) -> Option<Upgraded> {
        let polling_enabled = self.settings.socketio.socketio_polling_enabled;
        let sessions = self.engine_sessions;
        let upgraded = match check_engine_query(head.query(), true, polling_enabled, sessions, mode)
        {
            Ok(EngineQuery::Open) => Upgraded::SocketIo(self.socketio_start(head, mode)?),
            // The session's id is its credential, checked by its shard (an id no shard has
            // open was refused above; one whose session is closing closes the WebSocket at
            // once); the handshake's token was checked when it opened.
            Ok(EngineQuery::Session(address)) => Upgraded::SocketIoCarrier(address),
            Err(refusal) => {
                self.refuse_engine_handshake(refusal);
                return None;
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let settings = self.settings;
        let accepted = upgrade::parse_request(head.bytes(), &mut headers, &settings.protocol)
            .and_then(|request| {
                request.ok_or(HandshakeError::MalformedRequest("incomplete upgrade head"))
            })
            .and_then(|request| {
                if !settings.websocket_enabled {
                    return Err(HandshakeError::WebSocketDisabled);
                }
                upgrade::accept_upgrade(&request, &settings.protocol)
            });
        match accepted {
            Ok(mut upgrade) => {
                upgrade.deflate = None;
                let mut response = BytesMut::new();
                upgrade::write_switching_protocols(&upgrade, &mut response);
                self.respond(response.freeze());
                Some(upgraded)
            }
            Err(error) => {
                self.refuse_handshake(&error);
                None
            }
        }
    }

    /// A long-polling request at `socketio_path`: a handshake (a GET without `sid`, checked
    /// like an upgrade) opens a session on this shard; a GET or POST with one goes to its
    /// session's shard. The connection waits for the answer either way.
    fn engine_request(
        &mut self,
        request: &Request<'_>,
        mode: EngineMode,
        keep_alive: bool,
    ) -> bool {
        let origins = &self.settings.socketio.socketio_cors_origins;
        let cors = Cors::for_request(origins, &request.head);
        // Without origins configured (or an `Origin`), a preflight is refused as before: 400.
        if request.head.method() == "OPTIONS" && cors != Cors::Off {
            return self.preflight(&request.head, cors, keep_alive);
        }
        let polling_enabled = self.settings.socketio.socketio_polling_enabled;
        let sessions = self.engine_sessions;
        let query = match check_engine_query(
            request.head.query(),
            false,
            polling_enabled,
            sessions,
            mode,
        ) {
            Ok(query) => query,
            Err(refusal) => return self.refuse_engine_request(refusal, cors),
        };
        let method = request.head.method();
        let (call, wait) = match (query, method) {
            (EngineQuery::Open, "GET") => {
                let Some(start) = self.socketio_start(&request.head, mode) else {
                    return false;
                };
                (EngineCall::Open { start, keep_alive }, EngineWait::Open)
            }
            (EngineQuery::Session(session), "GET") => {
                let request = CarrierRequest::Poll { keep_alive };
                (
                    EngineCall::Carry { session, request },
                    EngineWait::Session(session),
                )
            }
            (EngineQuery::Session(session), "POST") => {
                let body = Bytes::copy_from_slice(request.body);
                let request = CarrierRequest::Post { body, keep_alive };
                (
                    EngineCall::Carry { session, request },
                    EngineWait::Session(session),
                )
            }
            _ => return self.refuse_engine_request(EngineHandshakeError::BadRequest, cors),
        };
        self.engine_calls.push(call);
        self.responses.held = Some(Box::new(Held::Engine(wait, cors)));
        false
    }

    /// A preflight (`OPTIONS`) at an Engine.IO path: 204, with what `socketio_cors_origins`
    /// allows the request's origin (`cors`).
    fn preflight(&mut self, head: &RequestHead<'_>, cors: Cors, keep_alive: bool) -> bool {
        let origins = &self.settings.socketio.socketio_cors_origins;
        let mut lines = Vec::with_capacity(256);
        cors::write_preflight_headers(cors, origins, head, &mut lines);
        let mut response = BytesMut::new();
        handshake::write_response(204, &[], b"", keep_alive, &mut response);
        let response = with_header_lines(&response, &lines, self.encoder);
        self.respond(response);
        self.read_on(keep_alive)
    }

    /// [`Answer::refuse_engine_handshake`] for a long-polling request, with its CORS headers
    /// (so that a browser of an allowed origin can read why).
    fn refuse_engine_request(&mut self, refusal: EngineHandshakeError, cors: Cors) -> bool {
        if cors == Cors::Off {
            return self.refuse_engine_handshake(refusal);
        }
        debug!(?refusal, "refusing Engine.IO request");
        self.counters.handshake_errors += 1;
        let mut response = BytesMut::new();
        let headers = [("Content-Type", "application/json")];
        handshake::write_response(400, &headers, refusal.body(), false, &mut response);
        let mut lines = Vec::with_capacity(128);
        cors.write_headers(&self.settings.socketio.socketio_cors_origins, &mut lines);
        let response = with_header_lines(&response, &lines, self.encoder);
        self.respond(response);
        self.responses.closing_after_responses = true;
        false
    }

    /// The connection-time checks of a Socket.IO handshake: the origin, and the token (a
    /// missing one may come in the Socket.IO CONNECT instead). A refusal is answered. An echo
    /// session (a conformance mode, which touches no topic) asks for nothing, as `echo` does.
    fn socketio_start(
        &mut self,
        head: &RequestHead<'_>,
        mode: EngineMode,
    ) -> Option<SocketIoStart> {
        if mode == EngineMode::Echo {
            return Some(SocketIoStart {
                identity: None,
                token_pending: false,
                mode,
            });
        }
        let auth = &*self.settings.auth;
        match auth.check_request(head, self.unix_ms) {
            Ok(identity) => Some(SocketIoStart {
                identity: identity.map(Box::new),
                token_pending: false,
                mode,
            }),
            Err(AuthRefusal::Unauthorized(AuthFailure::Missing)) => Some(SocketIoStart {
                identity: None,
                token_pending: true,
                mode,
            }),
            Err(refusal) => {
                match refusal {
                    AuthRefusal::Unauthorized(failure) => self.counters.count_auth_failure(failure),
                    AuthRefusal::ForeignOrigin => self.counters.origin_refusals += 1,
                }
                self.refuse_access(refusal);
                None
            }
        }
    }

    /// Answers a request at `socketio_path` that cannot start a session: 400 with the
    /// reference server's JSON, then close.
    fn refuse_engine_handshake(&mut self, refusal: EngineHandshakeError) -> bool {
        debug!(?refusal, "refusing Engine.IO handshake");
        self.counters.handshake_errors += 1;
        let mut response = BytesMut::new();
        let headers = [("Content-Type", "application/json")];
        handshake::write_response(400, &headers, refusal.body(), false, &mut response);
        self.respond(response.freeze());
        self.responses.closing_after_responses = true;
        false
    }

    /// The connection-time checks of a request: `/health` is open, `/metrics` asks for its own
    /// token, everything else for an allowed `Origin` and (with `auth_mode = "jwt"`) a valid
    /// token. A refusal is answered (401 or 403) and closes the connection; `Err` then.
    fn admit(&mut self, head: &RequestHead<'_>) -> Result<Option<Identity>, ()> {
        let auth = &*self.settings.auth;
        match head.path() {
            "/health" => return Ok(None),
            "/metrics" if auth.allows_metrics(head) => return Ok(None),
            "/metrics" => {
                self.counters.metrics_refusals += 1;
                self.refuse_access(AuthRefusal::Unauthorized(AuthFailure::Missing));
                return Err(());
            }
            _ => {}
        }
        match auth.check_request(head, self.unix_ms) {
            Ok(identity) => Ok(identity),
            Err(refusal) => {
                match refusal {
                    AuthRefusal::Unauthorized(failure) => self.counters.count_auth_failure(failure),
                    AuthRefusal::ForeignOrigin => self.counters.origin_refusals += 1,
                }
                self.refuse_access(refusal);
                Err(())
            }
        }
    }

    /// Answers a refused request (401 or 403) and closes once it is sent.
    fn refuse_access(&mut self, refusal: AuthRefusal) {
        debug!(?refusal, status = refusal.status(), "refusing access");
        let mut response = BytesMut::new();
        refusal.write_response(&mut response);
        self.respond(response.freeze());
        self.responses.closing_after_responses = true;
    }
}

/// Sends every response at the front that is complete, in order.
fn flush_complete(responses: &mut Responses, outbound: &mut Outbound) {
    while responses
        .pending
        .front()
        .is_some_and(PendingResponse::is_complete)
    {
        let pending = responses.pending.pop_front().expect("checked");
        let mut response = BytesMut::new();
        pending.write(&mut response);
        outbound.push_control(response.freeze());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Authenticator;
    use crate::broker::config::BrokerConfig;
    use crate::broker::http_api::PublishConfig;
    use crate::protocol::ProtocolLimits;
    use crate::protocol::pool::{BufferPool, PoolLimits};
    use crate::protocol::websocket::frame::FrameEncoder;

    struct NoMetrics;

    impl MetricsText for NoMetrics {
        fn render(&mut self) -> String {
            String::new()
        }

        fn totals(&mut self) -> String {
            String::new()
        }
    }

    pub(in crate::endpoint) fn context(pipelined_max: usize) -> Context {
        let broker = BrokerConfig {
            http_pipelined_requests_max: pipelined_max,
            ..BrokerConfig::default()
        };
        let publish = PublishConfig::from_broker(&broker);
        let settings = EndpointSettings {
            echo: false,
            board_enabled: true,
            websocket_enabled: true,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            pong_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            message_timeout_ms: 30_000,
            outbound_queue_bytes_max: 1 << 20,
            outbound_queue_frames_max: 4096,
            protocol: ProtocolLimits::default(),
            http_limits: publish.request_limits(8192),
            publish,
            broker,
            auth: Arc::new(Authenticator::open()),
            close_reasons_kept: false,
            cluster_connected: None,
            socketio: Default::default(),
        };
        Context {
            pool: BufferPool::new(&PoolLimits::default()),
            encoder: FrameEncoder::new(4096),
            compressors: crate::protocol::websocket::deflate::CompressorSet::new(1),
            settings: Arc::new(settings),
            frames: crate::broker::MessagePool::new(1 << 20),
            counters: EndpointCounters::default(),
            now_ms: 0,
            unix_offset_ms: 0,
            requests: Vec::new(),
            engine_calls: Vec::new(),
            engine_sessions: Default::default(),
            metrics: Box::new(NoMetrics),
        }
    }

    fn sent(outbound: &mut Outbound) -> String {
        let mut text = Vec::new();
        while !outbound.is_empty() {
            let front = outbound.front().to_vec();
            text.extend_from_slice(&front);
            outbound.complete(front.len(), &mut Default::default());
        }
        String::from_utf8(text).unwrap()
    }

    /// Proves the request-head deadline does not cut off a publish whose answer is slow to
    /// come (clustered: JetStream electing a leader): the deadline starts again while the
    /// answer is owed, the answer is sent when it comes, and a head that then does not come
    /// in time still gets 408.
    #[test]
    fn a_slow_answer_is_not_a_late_request() {
        let mut context = context(3);
        let mut endpoint = HttpEndpoint::new(0, &context.settings);
        let mut outbound = Outbound::default();
        let mut input = b"POST /publish/AAPL HTTP/1.1\r\nHost: x\r\n\
                          Content-Type: application/json\r\nContent-Length: 1\r\n\r\n1"
            .to_vec();
        endpoint.handle_read(&mut input, &mut outbound, &mut context);
        context.now_ms = endpoint.deadline_ms();
        let next = endpoint.handle_deadline(&mut outbound, &mut context);
        assert_eq!(next, Next::Continue);
        assert!(outbound.is_empty(), "no 408 while the answer is owed");
        assert!(
            endpoint.deadline_ms() > context.now_ms,
            "the deadline starts again"
        );
        assert_eq!(
            endpoint.answer_publish(0, Ok(7), &mut outbound),
            Next::Continue
        );
        let text = sent(&mut outbound);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        context.now_ms = endpoint.deadline_ms();
        let next = endpoint.handle_deadline(&mut outbound, &mut context);
        assert_eq!(next, Next::CloseAfterFlush);
        assert!(sent(&mut outbound).starts_with("HTTP/1.1 408"));
    }

    /// Proves a connection cannot make the shard hold more than `http_pipelined_requests_max`
    /// unanswered requests: the one past it is answered 503 (after the answers before it) and
    /// the connection closes.
    #[test]
    fn requests_past_the_pipeline_bound_get_503_and_close() {
        let mut context = context(3);
        let mut endpoint = HttpEndpoint::new(0, &context.settings);
        let mut outbound = Outbound::default();
        let publish = "POST /publish/AAPL HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                       Content-Length: 1\r\n\r\n1";
        let mut input = publish.repeat(5).into_bytes();
        let read = endpoint.handle_read(&mut input, &mut outbound, &mut context);
        assert_eq!(
            read,
            Read::Done(Next::Continue),
            "the answers are still owed"
        );
        assert_eq!(
            context.requests.len(),
            3,
            "three publishes went to the broker"
        );
        assert!(
            outbound.is_empty(),
            "the 503 waits behind the three answers"
        );
        let nexts: Vec<Next> = (0..3)
            .map(|ticket| endpoint.answer_publish(ticket, Ok(u64::from(ticket) + 1), &mut outbound))
            .collect();
        assert_eq!(
            nexts,
            [Next::Continue, Next::Continue, Next::CloseAfterFlush]
        );
        let text = sent(&mut outbound);
        assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
        assert!(text.contains("HTTP/1.1 503"), "{text}");
        assert!(text.contains("more than 3 requests waiting"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            4,
            "nothing after the 503: {text}"
        );
    }
}
