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

pub mod frame_cache;
pub mod http;
pub mod outbound;
pub mod websocket;

use std::sync::Arc;

use crate::broker::BrokerRequest;
use crate::broker::config::BrokerConfig;
use crate::broker::event::CloseReason;
use crate::broker::http_api::PublishConfig;
use crate::broker::owner::OwnerError;
use crate::protocol::CloseCode;
use crate::protocol::ProtocolLimits;
use crate::protocol::http1::RequestLimits;
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::frame::FrameEncoder;
use http::HttpEndpoint;
use outbound::Outbound;
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
}

/// The settings endpoints read, built once from the server's configuration.
#[derive(Clone, Debug)]
pub struct EndpointSettings {
    /// Echo every WebSocket message instead of brokering it (conformance and benchmarks).
    pub echo: bool,
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
    pub protocol: ProtocolLimits,
    pub http_limits: RequestLimits,
    pub publish: PublishConfig,
    pub broker: BrokerConfig,
    /// Keep the reason text of a peer's close frame (a copy per close), because a webhook
    /// reports `connection.closed`.
    pub close_reasons_kept: bool,
}

/// Renders the text of `GET /metrics`; the shard provides it (endpoints know nothing of where
/// the figures come from).
pub trait MetricsText {
    fn render(&mut self) -> String;
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
}

/// What endpoints need from their shard, lent beside one connection.
pub struct Context {
    pub pool: BufferPool,
    /// Encodes outgoing frames and copies requests into a reused arena (no allocation per
    /// frame).
    pub encoder: FrameEncoder,
    pub settings: Arc<EndpointSettings>,
    pub counters: EndpointCounters,
    /// The shard's clock, read once per loop turn.
    pub now_ms: u64,
    /// Broker requests of the read being handled, in the order they arrived.
    pub requests: Vec<BrokerRequest>,
    pub metrics: Box<dyn MetricsText>,
}

/// One connection's endpoint.
#[derive(Debug)]
pub enum Endpoint {
    Http(HttpEndpoint),
    WebSocket(WebSocketEndpoint),
}

impl Endpoint {
    /// A new connection: HTTP until it upgrades.
    pub fn new(now_ms: u64, settings: &EndpointSettings) -> Endpoint {
        Endpoint::Http(HttpEndpoint::new(now_ms, settings))
    }

    pub fn kind(&self) -> EndpointKind {
        match self {
            Endpoint::Http(_) => EndpointKind::Http,
            Endpoint::WebSocket(_) => EndpointKind::WebSocket,
        }
    }

    /// When the endpoint's deadline falls (the driver keeps one timer per connection).
    pub fn deadline_ms(&self) -> u64 {
        match self {
            Endpoint::Http(http) => http.deadline_ms(),
            Endpoint::WebSocket(websocket) => websocket.deadline_ms(),
        }
    }

    /// Whether messages may be queued to this endpoint: an open WebSocket (after a close frame
    /// nothing but the close handshake may follow).
    pub fn takes_messages(&self) -> bool {
        match self {
            Endpoint::Http(_) => false,
            Endpoint::WebSocket(websocket) => websocket.takes_messages(),
        }
    }

    /// Handles the bytes of one read; an accepted upgrade turns the endpoint into a WebSocket,
    /// which reads the bytes that followed the request head.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        match self {
            Endpoint::WebSocket(websocket) => websocket.handle_read(input, outbound, context),
            Endpoint::Http(http) => match http.handle_read(input, outbound, context) {
                http::Read::Done(next) => next,
                http::Read::Upgraded { rest_start } => {
                    http.release_buffers(&mut context.pool);
                    context.counters.upgrades += 1;
                    let mut websocket = WebSocketEndpoint::new(context.now_ms, &context.settings);
                    let rest = &mut input[rest_start..];
                    let next = match rest.is_empty() {
                        true => Next::Continue,
                        false => websocket.handle_read(rest, outbound, context),
                    };
                    *self = Endpoint::WebSocket(websocket);
                    next
                }
            },
        }
    }

    /// The deadline passed.
    pub fn handle_deadline(&mut self, outbound: &mut Outbound, context: &mut Context) -> Next {
        match self {
            Endpoint::Http(http) => http.handle_deadline(outbound, context),
            Endpoint::WebSocket(websocket) => websocket.handle_deadline(outbound, context),
        }
    }

    /// Starts a server-side close: a WebSocket close handshake with `code`, or for HTTP, closing
    /// once what is queued is sent.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        outbound: &mut Outbound,
        context: &mut Context,
    ) -> Next {
        match self {
            Endpoint::Http(_) => Next::CloseAfterFlush,
            Endpoint::WebSocket(websocket) => websocket.close(code, reason, outbound, context),
        }
    }

    /// The owner numbered (or refused) the HTTP publish waiting under `ticket`.
    pub fn answer_publish(
        &mut self,
        ticket: u32,
        result: Result<u64, OwnerError>,
        outbound: &mut Outbound,
    ) -> Next {
        match self {
            Endpoint::Http(http) => http.answer_publish(ticket, result, outbound),
            // The connection upgraded after the publish; nothing waits for the answer.
            Endpoint::WebSocket(_) => Next::Continue,
        }
    }

    /// How a WebSocket connection closed (code and reason); `None` for HTTP.
    pub fn close_record(&self) -> Option<(u16, CloseReason)> {
        match self {
            Endpoint::Http(_) => None,
            Endpoint::WebSocket(websocket) => Some(websocket.close_record()),
        }
    }

    /// Releases every pooled buffer (the connection is being freed).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        match self {
            Endpoint::Http(http) => http.release_buffers(pool),
            Endpoint::WebSocket(websocket) => websocket.release_buffers(pool),
        }
    }
}
