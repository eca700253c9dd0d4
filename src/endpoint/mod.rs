//! Per-connection state machines, sans-IO: what a connection speaks after its bytes are read.
//!
//! A connection starts as an [`http::HttpEndpoint`] (requests answered on the same port with
//! keep-alive and pipelining) and becomes a [`websocket::WebSocketEndpoint`] after a successful
//! upgrade; SSE, HTTP streams, polls and Engine.IO sessions slot in beside them. Each endpoint
//! takes the bytes of a read (`handle_read`), its deadline (`handle_deadline`), a server-side
//! close (`close`) and the broker's answers, and writes what it owes the peer into the
//! connection's [`outbound::Outbound`] queue. It asks the driver for one timer
//! ([`Endpoint::deadline_ms`]) and tells it, through [`Next`], when the connection should close.
//! Nothing here touches the ring; the shard submits the sends, arms the timer and walks the close
//! sequence.
//!
//! Broker requests read from a connection are left in [`Context::requests`] for the shard's
//! broker; messages the broker delivers are framed once per shard for each kind of endpoint by
//! the [`frame_cache::FrameCache`].

pub mod board;
pub mod cors;
pub mod frame_cache;
pub mod http;
pub mod outbound;
pub mod poll;
pub mod socketio;
pub mod socketio_polling;
pub mod stream;
pub mod websocket;

use std::sync::Arc;

use crate::auth::{AuthFailure, Authenticator};
use crate::broker::config::BrokerConfig;
use crate::broker::event::CloseReason;
use crate::broker::http_api::PublishConfig;
use crate::broker::message_pool::MessagePool;
use crate::broker::owner::OwnerError;
use crate::broker::{BrokerRequest, Message, Reply};
use crate::protocol::CloseCode;
use crate::protocol::ProtocolLimits;
use crate::protocol::http1::RequestLimits;
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::deflate::CompressorSet;
use crate::protocol::websocket::frame::FrameEncoder;
use frame_cache::FramingKey;
use http::HttpEndpoint;
use outbound::Outbound;
use socketio::{SocketIoConfig, SocketIoEndpoint};
use socketio_polling::{CarrierEndpoint, EngineCall, LocalSessions};
use stream::{StreamEndpoint, StreamFormat};
use websocket::WebSocketEndpoint;

/// What the driver does with a connection after an endpoint handled something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Keep reading and sending.
    Continue,
    /// Send what is queued, then close (within the close timeout).
    CloseAfterFlush,
    /// Shut the socket down now, whatever is queued (a close handshake that timed out).
    ShutDownNow,
}

/// The kinds of endpoint, each framing a delivery its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    Http,
    WebSocket,
    Sse,
    Ndjson,
    /// An HTTP connection holding a poll.
    Poll,
    /// A Socket.IO client (Engine.IO over WebSocket, or a long-polling session).
    SocketIo,
    /// A WebSocket carrying a long-polling Socket.IO session after its upgrade (the session
    /// is the broker's client, counted as `SocketIo`; this is not).
    EngineCarrier,
}

impl EndpointKind {
    /// The kinds that receive messages, in the order of the per-transport counters.
    pub const TRANSPORTS: [EndpointKind; crate::broker::TRANSPORT_COUNT] = [
        EndpointKind::WebSocket,
        EndpointKind::Sse,
        EndpointKind::Ndjson,
        EndpointKind::Poll,
        EndpointKind::SocketIo,
    ];

    /// The name `/metrics` labels a transport with.
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Http => "http",
            EndpointKind::WebSocket => "websocket",
            EndpointKind::Sse => "sse",
            EndpointKind::Ndjson => "stream",
            EndpointKind::Poll => "poll",
            EndpointKind::SocketIo => "socketio",
            EndpointKind::EngineCarrier => "socketio_carrier",
        }
    }

    /// Whether the connection reads on through a close handshake (WebSocket framing).
    pub fn reads_while_closing(self) -> bool {
        matches!(
            self,
            EndpointKind::WebSocket | EndpointKind::SocketIo | EndpointKind::EngineCarrier
        )
    }

    /// The index of a transport among [`EndpointKind::TRANSPORTS`]; HTTP has none.
    pub fn transport_index(self) -> Option<usize> {
        EndpointKind::TRANSPORTS
            .iter()
            .position(|&kind| kind == self)
    }
}

/// The settings endpoints read, built once from the server's configuration.
#[derive(Clone, Debug)]
pub struct EndpointSettings {
    /// Echo every WebSocket message instead of brokering it (conformance and benchmarks).
    pub echo: bool,
    /// Serve the board page and the JavaScript client at `/` and `/ringcast.js`.
    pub board_enabled: bool,
    /// Accept upgrades at `/ws`; off, they get 403 (clients fall back to SSE or polling).
    pub websocket_enabled: bool,
    /// A request head must be complete this long after the connection opened or the previous
    /// answer (slowloris).
    pub handshake_timeout_ms: u64,
    /// A WebSocket quiet this long is pinged; a ping unanswered for `pong_timeout_ms` closes it.
    pub idle_timeout_ms: u64,
    pub pong_timeout_ms: u64,
    /// A close handshake the peer does not finish within this long ends with a shutdown.
    pub close_timeout_ms: u64,
    /// A WebSocket message begun and not finished within this long is refused with 1008.
    pub message_timeout_ms: u64,
    /// A poll's answer holds about this many bytes of messages at most (the connection's
    /// queue limit).
    pub outbound_queue_bytes_max: usize,
    /// Frames of one connection's queue; with the bytes, what an Engine.IO echo session
    /// (which has no socket to stop reading) may hold before it is closed.
    pub outbound_queue_frames_max: usize,
    pub protocol: ProtocolLimits,
    pub http_limits: RequestLimits,
    pub publish: PublishConfig,
    pub broker: BrokerConfig,
    /// Connection-time checks: origin, token, metrics token (shared by every shard).
    pub auth: Arc<Authenticator>,
    /// Keep the reason text of a peer's close frame (a copy per close), because a webhook
    /// reports `connection.closed`.
    pub close_reasons_kept: bool,
    /// Clustered: whether the NATS bridge is connected now. While it is not, `/health`
    /// answers 503 `degraded` (publishes cannot be made durable, nothing new arrives).
    pub cluster_connected: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Socket.IO clients: path, heartbeat, limits (`[socketio]`).
    pub socketio: SocketIoConfig,
}

/// Renders the text of `GET /metrics`; the shard provides it (endpoints know nothing of where
/// the figures come from).
pub trait MetricsText {
    fn render(&mut self) -> String;
    /// Every counter summed over the shards, as a JSON object (`GET /metrics/totals`).
    fn totals(&mut self) -> String;
}

/// What endpoints count; every error a peer causes is counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointCounters {
    pub upgrades: u64,
    pub handshake_errors: u64,
    pub http_requests: u64,
    pub protocol_errors: u64,
    pub messages_received: u64,
    /// Requests refused with an `error` reply or a 4xx status (bad JSON, unknown op, limits).
    pub request_errors: u64,
    /// Publish, subscribe and unsubscribe requests received (WebSocket messages and HTTP
    /// publishes).
    pub publish_requests: u64,
    pub subscribe_requests: u64,
    pub unsubscribe_requests: u64,
    pub pings_sent: u64,
    pub pong_timeouts: u64,
    pub handshake_timeouts: u64,
    pub close_timeouts: u64,
    /// WebSocket messages not finished within `message_timeout_ms` (closed with 1008).
    pub message_timeouts: u64,
    /// Requests refused for their token (401), by [`AuthFailure::index`]; failed refreshes
    /// count here too.
    pub auth_failures: [u64; AuthFailure::ALL.len()],
    /// Requests refused with 403 for an `Origin` not in `allowed_origins`.
    pub origin_refusals: u64,
    /// `GET /metrics` without the right `metrics_token`.
    pub metrics_refusals: u64,
    /// Subscribes and publishes outside the token's grants (WebSocket errors and HTTP 403s),
    /// and subscriptions dropped because a refreshed token no longer grants them are counted
    /// by the broker.
    pub forbidden_requests: u64,
    /// WebSockets closed with 4001, and SSE and NDJSON streams ended, because their token
    /// expired.
    pub token_expiries: u64,
    /// Refreshes accepted.
    pub token_refreshes: u64,
    /// Socket.IO clients that came back with a `pid` and an offset and were resubscribed
    /// from where they stood.
    pub socketio_recoveries: u64,
    /// Engine.IO long-polling sessions opened, refused (503 at `socketio_polling_sessions_max`)
    /// and upgraded to WebSocket (counted by the session's shard).
    pub socketio_sessions_opened: u64,
    pub socketio_sessions_refused: u64,
    /// Handshakes answered 429 because their address holds
    /// `socketio_polling_sessions_per_address_max` sessions of the shard already.
    pub socketio_sessions_address_refused: u64,
    pub socketio_upgrades: u64,
    /// Requests of connections carrying an Engine.IO session handed to the session's shard
    /// (the connection landed on another).
    pub socketio_forwards: u64,
    /// Polls answered (with messages, or empty when their wait ran out).
    pub poll_answers: u64,
}

impl EndpointCounters {
    pub fn count_auth_failure(&mut self, failure: AuthFailure) {
        self.auth_failures[failure.index()] += 1;
    }
}

/// What endpoints need from their shard, lent beside one connection.
pub struct Context {
    pub pool: BufferPool,
    /// Encodes outgoing frames and copies requests into a reused arena (no allocation per
    /// frame).
    pub encoder: FrameEncoder,
    pub settings: Arc<EndpointSettings>,
    /// Pooled buffers for what is framed per shard or per connection beyond WebSocket: SSE
    /// and NDJSON framings of messages, SSE event ids, cursor lines, poll answers.
    pub frames: MessagePool,
    pub counters: EndpointCounters,
    /// The shard's clock, read once per loop turn.
    pub now_ms: u64,
    /// Unix time in milliseconds when the shard's clock read 0: token times are Unix times,
    /// and deadlines follow the shard's (monotonic) clock from there.
    pub unix_offset_ms: u64,
    /// Broker requests of the read being handled, in the order they arrived.
    pub requests: Vec<BrokerRequest>,
    /// What the read being handled asks of Engine.IO sessions (opening one, a long-polling
    /// request, a carrier's packet), for the shard to route to the session's shard.
    pub engine_calls: Vec<EngineCall>,
    /// The ids of this shard's Engine.IO sessions (kept by the shard), so that a request
    /// naming one that cannot exist is refused at once.
    pub engine_sessions: LocalSessions,
    pub metrics: Box<dyn MetricsText>,
    /// The shard's permessage-deflate compressors (echo replies, fanout frames).
    pub compressors: CompressorSet,
}

/// One connection's endpoint.
#[derive(Debug)]
pub enum Endpoint {
    Http(HttpEndpoint),
    WebSocket(WebSocketEndpoint),
    Stream(StreamEndpoint),
    /// Boxed: its state (recovery offset, pending acks) is several times a WebSocket's, and
    /// every connection's endpoint is as large as the largest variant.
    SocketIo(Box<SocketIoEndpoint>),
    /// A WebSocket carrying a long-polling session on this or another shard.
    SocketIoCarrier(Box<CarrierEndpoint>),
}

impl Context {
    /// The shard's clock as Unix time in milliseconds.
    pub fn unix_ms(&self) -> u64 {
        self.now_ms + self.unix_offset_ms
    }
}

impl Endpoint {
    /// A new connection: HTTP until it upgrades or opens a stream.
    pub fn new(now_ms: u64, settings: &EndpointSettings) -> Endpoint {
        Endpoint::Http(HttpEndpoint::new(now_ms, settings))
    }

    pub fn kind(&self) -> EndpointKind {
        match self {
            Endpoint::Http(http) if http.is_polling() => EndpointKind::Poll,
            Endpoint::Http(_) => EndpointKind::Http,
            Endpoint::WebSocket(_) => EndpointKind::WebSocket,
            Endpoint::SocketIo(_) => EndpointKind::SocketIo,
            Endpoint::SocketIoCarrier(_) => EndpointKind::EngineCarrier,
            Endpoint::Stream(stream) => match stream.format() {
                StreamFormat::Sse => EndpointKind::Sse,
                StreamFormat::Ndjson => EndpointKind::Ndjson,
            },
        }
    }

    /// The window of the compressed frames this endpoint takes: `Some` only for a WebSocket
    /// that negotiated permessage-deflate with a window zlib can compress for.
    /// Which shared framing of `message` this endpoint takes: the compressed one for a
    /// compressing WebSocket (unless the body is shorter than `compression_bytes_min`), the one
    /// with the offset for a Socket.IO client of that topic alone, else its kind's plain one.
    pub fn framing_key(&self, message: &Message, compression_bytes_min: usize) -> FramingKey {
        match self {
            Endpoint::WebSocket(websocket) => match websocket.compression_window_bits() {
                Some(window_bits) if message.body().len() >= compression_bytes_min => {
                    FramingKey::CompressedWebSocket(window_bits)
                }
                _ => FramingKey::Plain(EndpointKind::WebSocket),
            },
            Endpoint::SocketIo(socketio) => match socketio.message_offset_epoch(message) {
                Some(epoch) => FramingKey::SocketIoWithOffset(epoch),
                None => FramingKey::Plain(EndpointKind::SocketIo),
            },
            _ => FramingKey::Plain(self.kind()),
        }
    }

    pub fn compression_window_bits(&self) -> Option<u8> {
        match self {
            Endpoint::WebSocket(websocket) => websocket.compression_window_bits(),
            Endpoint::Http(_)
            | Endpoint::Stream(_)
            | Endpoint::SocketIo(_)
            | Endpoint::SocketIoCarrier(_) => None,
        }
    }

    /// When the endpoint's deadline falls (the driver keeps one timer per connection).
    pub fn deadline_ms(&self) -> u64 {
        match self {
            Endpoint::Http(http) => http.deadline_ms(),
            Endpoint::WebSocket(websocket) => websocket.deadline_ms(),
            Endpoint::Stream(stream) => stream.deadline_ms(),
            Endpoint::SocketIo(socketio) => socketio.deadline_ms(),
            Endpoint::SocketIoCarrier(carrier) => carrier.deadline_ms(),
        }
    }

    /// Whether messages may be delivered to this endpoint: an open WebSocket (after a close
    /// frame nothing but the close handshake may follow), an open stream, a held poll.
    pub fn takes_messages(&self) -> bool {
        match self {
            Endpoint::Http(http) => http.is_polling(),
            Endpoint::WebSocket(websocket) => websocket.takes_messages(),
            Endpoint::Stream(stream) => stream.takes_messages(),
            Endpoint::SocketIo(socketio) => socketio.takes_messages(),
            Endpoint::SocketIoCarrier(_) => false,
        }
    }

    /// Handles the bytes of one read; an accepted upgrade turns the endpoint into a WebSocket,
    /// which reads the bytes that followed the request head, and a stream request into a
    /// stream.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        match self {
            Endpoint::WebSocket(websocket) => websocket.handle_read(input, outbound, context),
            Endpoint::SocketIo(socketio) => socketio.handle_read(input, outbound, context),
            Endpoint::SocketIoCarrier(carrier) => carrier.handle_read(input, outbound, context),
            // A stream's client has nothing more to say; what it sends is read and dropped.
            Endpoint::Stream(_) => Next::Continue,
            Endpoint::Http(http) => match http.handle_read(input, outbound, context) {
                http::Read::Done(next) => next,
                http::Read::Upgraded {
                    rest_start,
                    identity,
                    deflate,
                } => {
                    http.release_buffers(&mut context.pool);
                    context.counters.upgrades += 1;
                    let mut websocket = WebSocketEndpoint::new(context.now_ms, &context.settings);
                    websocket.authenticate(identity, context);
                    websocket.set_deflate(deflate);
                    let rest = &mut input[rest_start..];
                    let next = match rest.is_empty() {
                        true => Next::Continue,
                        false => websocket.handle_read(rest, outbound, context),
                    };
                    *self = Endpoint::WebSocket(websocket);
                    next
                }
                http::Read::SocketIo { rest_start, start } => {
                    http.release_buffers(&mut context.pool);
                    context.counters.upgrades += 1;
                    let mut socketio = SocketIoEndpoint::open(start, outbound, context);
                    let rest = &mut input[rest_start..];
                    let next = match rest.is_empty() {
                        true => Next::Continue,
                        false => socketio.handle_read(rest, outbound, context),
                    };
                    *self = Endpoint::SocketIo(Box::new(socketio));
                    next
                }
                http::Read::SocketIoCarrier {
                    rest_start,
                    address,
                } => {
                    http.release_buffers(&mut context.pool);
                    context.counters.upgrades += 1;
                    let mut carrier = CarrierEndpoint::new(address, context);
                    context.engine_calls.push(EngineCall::Carry {
                        session: address,
                        request: crate::broker::command::CarrierRequest::Attach,
                    });
                    let rest = &mut input[rest_start..];
                    let next = match rest.is_empty() {
                        true => Next::Continue,
                        false => carrier.handle_read(rest, outbound, context),
                    };
                    *self = Endpoint::SocketIoCarrier(Box::new(carrier));
                    next
                }
                http::Read::Stream {
                    request,
                    ends_at_ms,
                } => {
                    http.release_buffers(&mut context.pool);
                    let stream = StreamEndpoint::open(request, ends_at_ms, outbound, context);
                    *self = Endpoint::Stream(stream);
                    Next::Continue
                }
            },
        }
    }

    /// The deadline passed.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        match self {
            Endpoint::Http(http) => http.handle_deadline(outbound, context),
            Endpoint::WebSocket(websocket) => websocket.handle_deadline(outbound, context),
            Endpoint::Stream(stream) => stream.handle_deadline(outbound, context),
            Endpoint::SocketIo(socketio) => socketio.handle_deadline(outbound, context),
            Endpoint::SocketIoCarrier(carrier) => carrier.handle_deadline(outbound, context),
        }
    }

    /// Starts a server-side close: a WebSocket close handshake with `code`; for a stream its
    /// end; for HTTP the answer of a held poll; then closing once what is queued is sent.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        match self {
            Endpoint::Http(http) => http.close(outbound, context),
            Endpoint::WebSocket(websocket) => websocket.close(code, reason, outbound, context),
            Endpoint::Stream(stream) => stream.close(outbound),
            Endpoint::SocketIo(socketio) => socketio.close(code, reason, outbound, context),
            Endpoint::SocketIoCarrier(carrier) => carrier.close(code, reason, outbound, context),
        }
    }

    /// The shared framing of `message` was just queued (WebSocket, SSE, NDJSON), or (a poll)
    /// the message is offered to be collected. Returns whether the endpoint owes something at
    /// the end of the shard's turn ([`Endpoint::handle_turn_end`]).
    pub fn took_message(
        &mut self,
        message: &Message,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> bool {
        match self {
            Endpoint::Http(http) => {
                http.collect(message);
                http.is_polling()
            }
            Endpoint::WebSocket(_) | Endpoint::SocketIoCarrier(_) => false,
            Endpoint::SocketIo(socketio) => socketio.took_message(message),
            Endpoint::Stream(stream) => {
                stream.took_message(message, outbound, &mut context.frames, context.now_ms)
            }
        }
    }

    /// A reply of the broker to this client. Returns whether the endpoint owes something at
    /// the end of the shard's turn.
    pub fn reply(&mut self, reply: &Reply, outbound: &mut Outbound, context: &mut Context) -> bool {
        match self {
            Endpoint::Http(http) => {
                http.collect_reply(reply);
                http.is_polling()
            }
            Endpoint::WebSocket(_) => {
                outbound.push_control(reply.websocket_frame().clone());
                false
            }
            Endpoint::SocketIo(socketio) => socketio.reply(reply, outbound, context),
            Endpoint::SocketIoCarrier(_) => false,
            Endpoint::Stream(stream) => {
                stream.took_reply(reply, outbound, &mut context.frames, context.now_ms)
            }
        }
    }

    /// The end of the shard's turn, for an endpoint that asked for it: NDJSON's cursor line,
    /// a ready poll's answer (whose unsubscriptions are left in the context's requests).
    pub fn handle_turn_end(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        match self {
            Endpoint::Http(http) => http.handle_turn_end(outbound, context),
            Endpoint::WebSocket(_) | Endpoint::SocketIoCarrier(_) => Next::Continue,
            Endpoint::SocketIo(socketio) => {
                socketio.handle_turn_end(outbound, context);
                Next::Continue
            }
            Endpoint::Stream(stream) => {
                stream.handle_turn_end(outbound, &mut context.frames);
                Next::Continue
            }
        }
    }

    /// The owner numbered (or refused) the HTTP publish waiting under `ticket`.
    pub fn answer_publish(
        &mut self,
        ticket: u32,
        result: Result<u64, OwnerError>,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        match self {
            Endpoint::Http(http) => http.answer_publish(ticket, result, outbound),
            Endpoint::SocketIo(socketio) => {
                socketio.answer_publish(ticket, result, outbound, context);
                Next::Continue
            }
            // The connection upgraded after the publish; nothing waits for the answer.
            Endpoint::WebSocket(_) | Endpoint::Stream(_) | Endpoint::SocketIoCarrier(_) => {
                Next::Continue
            }
        }
    }

    /// How a WebSocket connection closed (code and reason); `None` for HTTP, streams and polls,
    /// which have no close code.
    pub fn close_record(&self) -> Option<(u16, CloseReason)> {
        match self {
            Endpoint::Http(_) | Endpoint::Stream(_) => None,
            Endpoint::WebSocket(websocket) => Some(websocket.close_record()),
            Endpoint::SocketIo(socketio) => Some(socketio.close_record()),
            Endpoint::SocketIoCarrier(carrier) => Some(carrier.close_record()),
        }
    }

    /// The Engine.IO session this connection carries or waits on (told when it closes).
    pub fn carried_session(&self) -> Option<crate::broker::command::SessionAddress> {
        match self {
            Endpoint::Http(http) => http.engine_waiting(),
            Endpoint::SocketIoCarrier(carrier) => Some(carrier.address()),
            _ => None,
        }
    }

    /// Releases every pooled buffer (the connection is being freed).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        match self {
            Endpoint::Http(http) => http.release_buffers(pool),
            Endpoint::WebSocket(websocket) => websocket.release_buffers(pool),
            Endpoint::SocketIo(socketio) => socketio.release_buffers(pool),
            Endpoint::SocketIoCarrier(carrier) => carrier.release_buffers(pool),
            Endpoint::Stream(_) => {}
        }
    }
}
