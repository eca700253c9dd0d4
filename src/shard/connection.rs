//! Glue between one connection's protocol state and the shard's ring operations.
//!
//! A connection starts in the HTTP phase (reading a request head: an upgrade, or a plain request
//! answered on the same port with keep-alive and pipelining) and moves to the WebSocket phase on
//! a successful upgrade. Nothing here touches the ring: methods take the bytes of a read, update
//! the protocol state and the outbound queue, and leave the shard to submit sends, arm timers and
//! walk the close sequence.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::http::HttpState;
use super::metrics_board::MetricsView;
use crate::broker::http_api::PublishConfig;
use crate::broker::message::encode_error;
use crate::broker::request::{Request, RequestError, parse_request};
use crate::broker::subscribers::POSITION_PENDING;
use crate::config::{BrokerConfig, ServerConfig};
use crate::protocol::CloseCode;
use crate::protocol::http1::RequestLimits;
use crate::protocol::http1::response as handshake;
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::frame::{FrameEncoder, OpCode};
use crate::protocol::websocket::session::{Event, MessageKind, Session, SessionState};

/// Where a connection's close sequence stands. Sockets are shut down before their descriptor is
/// closed: an armed multishot receive otherwise keeps the socket open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    Open,
    /// Send what is queued, then shut down.
    AfterFlush,
    /// `shutdown` submitted.
    ShuttingDown,
    /// Shut down (or the peer is gone); close once the receive and any send have completed.
    ShutDown,
    /// `close` submitted; the slot is freed on its completion.
    Closing,
}

/// Which deadline the connection's one timer stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// The request head must be complete by then (slowloris), also between keep-alive requests.
    Handshake,
    /// No traffic for the idle timeout: send a ping.
    Idle,
    /// The ping must be answered by then.
    Pong,
    /// The close sequence must be over by then, or the socket is shut down regardless.
    Closing,
}

/// The protocol phase.
#[derive(Debug)]
pub enum Phase {
    Http(HttpState),
    WebSocket { session: Session },
}

/// Why the outbound queue refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// The frames waiting to be sent, and the send in flight. Frames are shared `Bytes`: a frame
/// encoded once can sit in many connections' queues.
#[derive(Debug, Default)]
pub struct Outbound {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    /// Bytes of the front frame already sent (a partial send).
    front_offset: usize,
    /// Frames (from the front) that the send in flight carries; 0 when no send is in flight.
    frames_in_flight: usize,
}

impl Outbound {
    /// Queues a data frame within the limits. An empty queue takes any frame, so a message larger
    /// than the byte limit still goes out when the peer keeps up.
    pub fn push(
        &mut self,
        frame: Bytes,
        bytes_max: usize,
        frames_max: usize,
    ) -> Result<(), QueueFull> {
        let over = self.queued_bytes + frame.len() > bytes_max || self.frames.len() >= frames_max;
        if over && !self.frames.is_empty() {
            return Err(QueueFull);
        }
        self.push_control(frame);
        Ok(())
    }

    /// Queues a control frame or HTTP response. Never refused: pongs and closes are not dropped.
    pub fn push_control(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Something queued and no send in flight.
    pub fn is_sendable(&self) -> bool {
        !self.frames.is_empty() && self.frames_in_flight == 0
    }

    /// Frames queued, including those of the send in flight.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn in_flight(&self) -> bool {
        self.frames_in_flight > 0
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether the queue holds more than `bytes_max` bytes or `frames_max` frames.
    pub fn is_over(&self, bytes_max: usize, frames_max: usize) -> bool {
        self.queued_bytes > bytes_max || self.frames.len() > frames_max
    }

    /// Drops queued frames that are not part of the send in flight (the peer is gone).
    pub fn discard_unsent(&mut self) {
        while self.frames.len() > self.frames_in_flight {
            let frame = self.frames.pop_back().expect("len checked");
            self.queued_bytes -= frame.len();
        }
    }

    /// Describes up to `iovecs.len()` queued frames for one gathered send and marks it in
    /// flight. Returns how many iovecs were filled.
    pub fn gather(&mut self, iovecs: &mut [libc::iovec]) -> usize {
        assert!(self.frames_in_flight == 0 && !self.frames.is_empty());
        let mut count = 0;
        for (index, frame) in self.frames.iter().take(iovecs.len()).enumerate() {
            let skip = if index == 0 { self.front_offset } else { 0 };
            iovecs[index] = libc::iovec {
                iov_base: frame[skip..].as_ptr() as *mut libc::c_void,
                iov_len: frame.len() - skip,
            };
            count += 1;
        }
        self.frames_in_flight = count;
        count
    }

    /// The front frame's unsent bytes, for a single-frame send; marks it in flight.
    pub fn front(&mut self) -> &[u8] {
        assert!(self.frames_in_flight == 0);
        self.frames_in_flight = 1;
        &self.frames.front().expect("sendable")[self.front_offset..]
    }

    /// Accounts a completed send of `sent_bytes`.
    pub fn complete(&mut self, mut sent_bytes: usize) {
        assert!(self.frames_in_flight > 0);
        self.frames_in_flight = 0;
        while sent_bytes > 0 {
            let front_left =
                self.frames.front().expect("sent bytes were queued").len() - self.front_offset;
            if sent_bytes < front_left {
                self.front_offset += sent_bytes;
                self.queued_bytes -= sent_bytes;
                return;
            }
            sent_bytes -= front_left;
            self.queued_bytes -= front_left;
            self.front_offset = 0;
            self.frames.pop_front();
        }
    }

    /// Ends the send in flight without progress (it failed).
    pub fn abandon(&mut self) {
        self.frames_in_flight = 0;
    }
}

/// Counters a shard keeps; every drop and every peer error is counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub accept_table_full: u64,
    pub upgrades: u64,
    pub handshake_errors: u64,
    pub http_requests: u64,
    pub protocol_errors: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub receive_buffer_shortages: u64,
    pub slow_consumer_closes: u64,
    /// Times reading from a peer paused because replies to it piled up.
    pub reading_pauses: u64,
    pub pings_sent: u64,
    pub pong_timeouts: u64,
    pub handshake_timeouts: u64,
    pub close_timeouts: u64,
    pub stale_completions: u64,
    /// Publish requests received from this shard's connections (WebSocket and HTTP).
    pub publish_requests: u64,
    /// Messages this shard assigned a sequence number to, as the owner of their topic.
    pub messages_published: u64,
    /// Frames queued to this shard's subscribers.
    pub deliveries: u64,
    pub subscribe_requests: u64,
    pub unsubscribe_requests: u64,
    /// Requests refused with an `error` reply or a 4xx status (bad JSON, unknown op, limits).
    pub request_errors: u64,
    /// Subscriptions served from history with `since`, and the messages replayed for them.
    pub replays: u64,
    pub replayed_messages: u64,
    /// Subscriptions answered with `reset` because `since + 1` had left the history.
    pub resets: u64,
    /// Slow-consumer policy actions: newest message dropped, older message replaced by a newer
    /// one of the same topic (conflate). Closes are `slow_consumer_closes`.
    pub slow_consumer_drops: u64,
    pub slow_consumer_conflations: u64,
    /// Commands a full mailbox refused; they wait in this shard's outbox, never dropped.
    pub mailbox_full: u64,
    /// Times a publisher's reading paused because this shard's outbox to another shard was full.
    pub publisher_pauses: u64,
}

/// Levels (not totals) a shard reports with its counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub connections: u64,
    pub websocket_connections: u64,
    /// Subscriptions held by this shard's connections.
    pub subscriptions: u64,
    /// Topics this shard owns (assigns sequence numbers to and keeps history for).
    pub topics_owned: u64,
    /// Topics with at least one subscriber on this shard.
    pub topics_subscribed: u64,
    /// Bytes of history this shard keeps for its owned topics.
    pub history_bytes: u64,
    /// Commands waiting in this shard's mailboxes.
    pub mailbox_depth: u64,
    /// Commands waiting in this shard's outbox for full mailboxes of other shards.
    pub outbox_depth: u64,
    /// Bytes queued to this shard's connections and not yet sent.
    pub outbound_queued_bytes: u64,
}

/// What one shard reports to `GET /metrics`: published by the shard every loop turn.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardMetrics {
    pub counters: Counters,
    pub gauges: Gauges,
}

/// A broker request of the connection being read, for the shard to carry out once the read is
/// handled (it needs the other connections and the other shards).
#[derive(Debug)]
pub enum BrokerRequest {
    /// `message` holds the topic's `topic_bytes` bytes, then the data.
    Publish {
        message: Bytes,
        topic_bytes: usize,
    },
    Subscribe {
        topic: Bytes,
        since: Option<u64>,
    },
    /// An HTTP publish: its answer goes to the response waiting under `ticket`.
    HttpPublish {
        message: Bytes,
        topic_bytes: usize,
        ticket: u32,
    },
    Unsubscribe {
        topic: Bytes,
    },
}

/// One topic a connection subscribes to.
#[derive(Debug)]
pub struct Subscription {
    /// The topic's index in the shard's `SubscriberTable`.
    pub topic: u32,
    /// Where the connection sits in the topic's subscriber list; `POSITION_PENDING` until the
    /// owner's answer arrives.
    pub position: u32,
    /// Under the conflate policy, the newest message that did not fit the queue; it replaces
    /// any older one and goes out once the queue drains.
    pub conflated: Option<Bytes>,
}

impl Subscription {
    pub fn is_pending(&self) -> bool {
        self.position == POSITION_PENDING
    }
}

/// What a connection's handlers need from the shard, kept together so that the shard lends it
/// beside a borrow of one connection.
pub struct Context {
    pub pool: BufferPool,
    /// Encodes outgoing frames into a reused arena (no allocation per frame).
    pub encoder: FrameEncoder,
    pub config: Arc<ServerConfig>,
    pub counters: Counters,
    /// The shard's clock, read once per loop turn.
    pub now_ms: u64,
    /// Broker requests of the read being handled, in the order they arrived.
    pub broker_requests: Vec<BrokerRequest>,
    /// Limits of HTTP requests and publishing, built once from `config`.
    pub http_limits: RequestLimits,
    pub publish_config: PublishConfig,
    /// Every shard's metrics, for `GET /metrics`.
    pub metrics: MetricsView,
    /// Connections in the WebSocket phase.
    pub websocket_connections: u64,
    /// The bytes queued to all connections: summed exactly every OUTBOUND_SUM_INTERVAL_MS and
    /// kept up to date in between by deliveries (+) and completed sends (−). Over
    /// `outbound_shard_bytes_max`, every subscriber is treated as slow.
    pub outbound_bytes: u64,
}

impl Context {
    /// Whether the shard's queues together are over their budget.
    pub fn outbound_over_budget(&self) -> bool {
        self.outbound_bytes > self.config.broker.outbound_shard_bytes_max as u64
    }
}

/// One connection of a shard.
#[derive(Debug)]
pub struct Connection {
    pub generation: u16,
    pub phase: Phase,
    pub outbound: Outbound,
    pub closing: Closing,
    pub deadline: Deadline,
    /// When the deadline falls; the shard mirrors it into its timer wheel when `deadline_changed`.
    pub deadline_ms: u64,
    pub deadline_changed: bool,
    pub receive_armed: bool,
    /// Reading is paused because replies to this peer piled up past the queue limits.
    pub reading_paused: bool,
    /// Queued in the shard's list of connections with something to send.
    pub send_listed: bool,
    pub last_receive_ms: u64,
    pub ping_sent_ms: u64,
    /// Reading is paused because this publisher's shard cannot hand its publishes on (another
    /// shard's mailbox is full); resumed when the outbox empties.
    pub publisher_paused: bool,
    pub subscriptions: Vec<Subscription>,
    /// Subscriptions holding a conflated message.
    pub conflated_count: u32,
}

impl Connection {
    pub fn new(generation: u16, now_ms: u64, handshake_timeout_ms: u64) -> Connection {
        Connection {
            generation,
            phase: Phase::Http(HttpState::default()),
            outbound: Outbound::default(),
            closing: Closing::Open,
            deadline: Deadline::Handshake,
            deadline_ms: now_ms + handshake_timeout_ms,
            deadline_changed: true,
            receive_armed: false,
            reading_paused: false,
            send_listed: false,
            last_receive_ms: now_ms,
            ping_sent_ms: 0,
            publisher_paused: false,
            subscriptions: Vec::new(),
            conflated_count: 0,
        }
    }

    /// Queues the conflated messages (newest per topic) once the queue is below half its limits;
    /// returns whether none is left held.
    pub fn release_conflated(&mut self, bytes_max: usize, frames_max: usize) -> bool {
        if self.conflated_count == 0 {
            return true;
        }
        if self.outbound.is_over(bytes_max / 2, frames_max / 2) {
            return false;
        }
        for subscription in &mut self.subscriptions {
            if let Some(frame) = subscription.conflated.take() {
                self.outbound.push_control(frame);
            }
        }
        self.conflated_count = 0;
        true
    }

    /// Whether messages may be queued to this connection: an open WebSocket that has not
    /// started closing (after a close frame nothing but the close handshake may follow).
    pub fn takes_messages(&self) -> bool {
        self.closing == Closing::Open
            && matches!(&self.phase, Phase::WebSocket { session } if session.state() == SessionState::Open)
    }

    pub(super) fn set_deadline(&mut self, deadline: Deadline, deadline_ms: u64) {
        self.deadline = deadline;
        self.deadline_ms = deadline_ms;
        self.deadline_changed = true;
    }

    /// Starts closing: send what is queued, then shut down, within the close timeout.
    pub fn close_after_flush(&mut self, context: &Context) {
        if self.closing == Closing::Open {
            self.closing = Closing::AfterFlush;
            self.set_deadline(
                Deadline::Closing,
                context.now_ms + context.config.close_timeout_ms,
            );
        }
    }

    /// Handles the bytes of one read.
    pub fn handle_bytes(&mut self, input: &mut [u8], context: &mut Context) {
        context.counters.bytes_received += input.len() as u64;
        self.last_receive_ms = context.now_ms;
        if self.closing != Closing::Open && !matches!(self.phase, Phase::WebSocket { .. }) {
            return; // An HTTP connection on its way out reads nothing more.
        }
        match self.phase {
            Phase::Http { .. } => self.handle_http_bytes(input, context),
            Phase::WebSocket { .. } => self.handle_websocket_bytes(input, context),
        }
    }

    /// Releases every pooled buffer (the connection is being freed).
    pub fn release_buffers(&mut self, pool: &mut BufferPool) {
        match &mut self.phase {
            Phase::Http(http) => http.reader.release_buffers(pool),
            Phase::WebSocket { session } => session.release_buffers(pool),
        }
    }

    pub(super) fn start_websocket(&mut self, early_bytes: &mut [u8], context: &mut Context) {
        context.counters.upgrades += 1;
        context.websocket_connections += 1;
        self.phase = Phase::WebSocket {
            session: Session::new(),
        };
        self.set_deadline(
            Deadline::Idle,
            context.now_ms + context.config.idle_timeout_ms,
        );
        if !early_bytes.is_empty() {
            self.handle_websocket_bytes(early_bytes, context);
        }
    }

    fn handle_websocket_bytes(&mut self, input: &mut [u8], context: &mut Context) {
        let Phase::WebSocket { session } = &mut self.phase else {
            unreachable!()
        };
        let config = &context.config;
        let mut reader = session.handle_read(input, &mut context.pool, &config.protocol);
        while let Some(result) = reader.next_event() {
            match result {
                Ok(Event::Message { kind, payload }) => {
                    context.counters.messages_received += 1;
                    if !config.echo {
                        let requests = RequestSink {
                            outbound: &mut self.outbound,
                            encoder: &mut context.encoder,
                            counters: &mut context.counters,
                            requests: &mut context.broker_requests,
                        };
                        requests.handle(kind, payload, &config.broker);
                    } else {
                        // A reply to the peer's own message is never refused: when replies pile
                        // up, the shard pauses reading from this peer instead, so TCP pushes
                        // back on it. The overshoot is bounded by what one turn received.
                        let opcode = match kind {
                            MessageKind::Text => OpCode::Text,
                            MessageKind::Binary => OpCode::Binary,
                        };
                        self.outbound
                            .push_control(context.encoder.encode(opcode, true, payload));
                    }
                }
                Ok(Event::Ping(_) | Event::Pong(_) | Event::Close { .. }) => {}
                Err(error) => {
                    context.counters.protocol_errors += 1;
                    debug!(%error, close_code = %error.close_code(), "peer broke the protocol");
                }
            }
            while let Some(frame) = reader.poll_transmit() {
                self.outbound
                    .push_control(context.encoder.copy(frame.as_bytes()));
            }
        }
        drop(reader);
        self.flush_transmits(context);
    }

    /// Queues the control frames the session owes and follows its close handshake.
    pub fn flush_transmits(&mut self, context: &mut Context) {
        let Phase::WebSocket { session } = &mut self.phase else {
            return;
        };
        while let Some(frame) = session.poll_transmit(&mut context.pool) {
            self.outbound
                .push_control(context.encoder.copy(frame.as_bytes()));
        }
        match session.state() {
            SessionState::Open => {}
            SessionState::CloseSent if self.deadline != Deadline::Closing => {
                self.set_deadline(
                    Deadline::Closing,
                    context.now_ms + context.config.close_timeout_ms,
                );
            }
            SessionState::CloseSent => {}
            SessionState::Closed => self.close_after_flush(context),
        }
    }

    /// Starts a server-side close of a WebSocket (shutdown, policy); other phases just close.
    pub fn close_websocket(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        context: &mut Context,
    ) {
        match &mut self.phase {
            Phase::WebSocket { session } => {
                session.close(code, reason);
                self.flush_transmits(context);
            }
            Phase::Http { .. } => self.close_after_flush(context),
        }
    }

    /// The connection's deadline passed. Returns whether it must be shut down at once.
    pub fn handle_deadline(&mut self, ping_frame: &Bytes, context: &mut Context) -> bool {
        let idle_timeout_ms = context.config.idle_timeout_ms;
        let pong_timeout_ms = context.config.pong_timeout_ms;
        match self.deadline {
            Deadline::Handshake => {
                context.counters.handshake_timeouts += 1;
                let mut response = BytesMut::new();
                handshake::write_response(
                    408,
                    &[],
                    b"request head not received in time\n",
                    false,
                    &mut response,
                );
                self.outbound.push_control(response.freeze());
                self.close_after_flush(context);
            }
            Deadline::Idle if context.now_ms < self.last_receive_ms + idle_timeout_ms => {
                self.set_deadline(Deadline::Idle, self.last_receive_ms + idle_timeout_ms);
            }
            Deadline::Idle => {
                context.counters.pings_sent += 1;
                self.outbound.push_control(ping_frame.clone());
                self.ping_sent_ms = context.now_ms;
                self.set_deadline(Deadline::Pong, context.now_ms + pong_timeout_ms);
            }
            // A ping goes out only once `idle_timeout_ms` (at least 1) passed since the last
            // receive, so any receive stamped at or after `ping_sent_ms` came after the ping. A
            // strict `>` missed a pong that arrived within the same millisecond, as on a LAN,
            // and closed a live client with "ping timeout".
            Deadline::Pong if self.last_receive_ms >= self.ping_sent_ms => {
                self.set_deadline(Deadline::Idle, self.last_receive_ms + idle_timeout_ms);
            }
            Deadline::Pong => {
                context.counters.pong_timeouts += 1;
                debug!("ping unanswered: closing");
                self.close_websocket(CloseCode::GOING_AWAY, "ping timeout", context);
                self.close_after_flush(context);
            }
            Deadline::Closing => {
                context.counters.close_timeouts += 1;
                return true;
            }
        }
        false
    }
}

/// Where a connection's broker requests go while its session is being read (the session holds
/// the rest of the context).
struct RequestSink<'a> {
    outbound: &'a mut Outbound,
    encoder: &'a mut FrameEncoder,
    counters: &'a mut Counters,
    requests: &'a mut Vec<BrokerRequest>,
}

impl RequestSink<'_> {
    /// Parses one request; answers a bad one with an `error` message at once, and leaves a good
    /// one to the shard.
    fn handle(self, kind: MessageKind, payload: &[u8], config: &BrokerConfig) {
        let parsed = match kind {
            MessageKind::Text => parse_request(payload, config),
            MessageKind::Binary => Err(RequestError::Binary),
        };
        let request = match parsed {
            Ok(request) => request,
            Err(error) => {
                self.counters.request_errors += 1;
                debug!(reason = error.reason(), "bad request");
                let frame = encode_error(self.encoder, error.reason());
                return self.outbound.push_control(frame);
            }
        };
        match request {
            Request::Publish { topic, data } => {
                self.counters.publish_requests += 1;
                let message = self.encoder.copy_parts(&[topic.as_bytes(), data]);
                self.requests.push(BrokerRequest::Publish {
                    message,
                    topic_bytes: topic.len(),
                });
            }
            Request::Subscribe { topics, since } => {
                self.counters.subscribe_requests += 1;
                for topic in topics {
                    self.requests.push(BrokerRequest::Subscribe {
                        since: since.get(&topic).copied(),
                        topic: self.encoder.copy(topic.as_bytes()),
                    });
                }
            }
            Request::Unsubscribe { topics } => {
                self.counters.unsubscribe_requests += 1;
                for topic in topics {
                    let topic = self.encoder.copy(topic.as_bytes());
                    self.requests.push(BrokerRequest::Unsubscribe { topic });
                }
            }
        }
    }
}
