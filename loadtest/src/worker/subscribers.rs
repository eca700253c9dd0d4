//! Fanout subscribers on the io_uring client (`crate::engine`): the light path, whose CPU per
//! delivery must stay below the server's. Each thread runs one engine for its share of the
//! subscribers: a closed-loop ramp (`crate::ramp`) opens them, each subscribes to its topic and
//! waits for the acknowledgement, then every delivery is read with the fast scanner
//! (`crate::fanout::scan`; one in `FULL_PARSE_EVERY` is also fully parsed as a check) and
//! checked for order, seq and latency exactly as the tokio-uring path did. Checked deliveries
//! are batched per turn and added to the thread's tally under one lock, so the worker's main
//! thread collects steps exactly as before.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::connection::Target;
use super::fanout::{Delivery, FanoutThread};
use super::scenario::{Counters, Phase, StatsBoard, ThreadStats};
use crate::addresses::address_for;
use crate::engine::{Engine, EngineSettings, Handler, Kind, Message, Outbound};
use crate::fanout::http_stream::{Event, StreamReader, Transport};
use crate::fanout::nats::{NatsEvent, NatsParser};
use crate::fanout::payload::{self, PayloadData};
use crate::fanout::scan::{FULL_PARSE_EVERY, scan_delivery, scan_payload};
use crate::fanout::sequence::SequenceCheck;
use crate::fanout::steps::STEPS_MAX;
use crate::fanout::topic_index;
use crate::fanout::topic_name;
use crate::fanout::wire::{
    Incoming, Protocol, SOCKETIO_CURSOR_EVENT, SocketIoPacket, decode_json, decode_socketio,
};
use crate::protocol::{Cause, FanoutPlan, FanoutRole, FanoutTotals, WorkerPlan};
use crate::ramp::{RampController, RampSettings};

/// Longest a thread waits in the ring before it looks at the phase, the ramp and deadlines.
const TURN_WAIT_MAX: Duration = Duration::from_millis(10);

/// Longest message a subscriber accepts from the server.
const MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// How often a thread publishes a copy of its stats for a partial report.
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Receive buffers per thread. A burst larger than the pool ends some multishot receives with
/// ENOBUFS; they are re-armed in the same turn once the buffers are back.
const BUFFERS_COUNT: usize = 2048;

/// What one subscriber thread needs.
pub struct SubscriberThread {
    pub plan: Arc<WorkerPlan>,
    pub target: Arc<Target>,
    pub phase: watch::Receiver<Phase>,
    pub counters: Arc<Counters>,
    pub fanout: FanoutThread,
    /// The worker's connection indices this thread opens.
    pub indices: Vec<u64>,
    /// Connections per second this thread opens at most.
    pub rate: f64,
    pub ramp: RampSettings,
    /// Where the thread publishes copies of its stats for a partial report.
    pub board: Arc<StatsBoard>,
}

/// Runs one thread's subscribers until the stop; returns what it measured.
pub fn run_thread(thread: SubscriberThread) -> Result<ThreadStats, String> {
    let ScenarioFanout {
        plan: fanout,
        first_index,
    } = fanout_plan(&thread.plan)?;
    let settings = engine_settings(&thread, &fanout);
    let mut engine = Engine::new(settings, thread.indices.len(), Arc::clone(&thread.counters))
        .map_err(|error| format!("cannot set up the io_uring client: {error}"))?;
    let topics = thread
        .indices
        .iter()
        .map(|index| ((first_index + index) % u64::from(fanout.topics)) as u32)
        .collect();
    let mut handler = Subscribers::new(&thread, &fanout, topics, settings_host(&thread));
    let kind = match fanout.transport {
        Transport::Ws => Kind::WebSocket,
        _ => Kind::Raw,
    };
    let mut ramp = RampController::new(thread.ramp);
    let ramp_started = Instant::now();
    let mut next = 0usize;
    let mut limited = Duration::ZERO;
    let mut expired = Vec::new();
    let mut published_at = Instant::now();
    while *thread.phase.borrow() != Phase::Stop {
        let turn_started = Instant::now();
        let due = ((ramp_started.elapsed().as_secs_f64() * thread.rate) as usize + 1)
            .min(thread.indices.len());
        while next < due && ramp.may_start(next as u64 - handler.settled_before_ready()) {
            let source = address_for(&thread.plan.source_addresses, thread.indices[next]);
            engine
                .open(next as u32, source, kind, &mut handler)
                .map_err(|error| format!("io_uring submission failed: {error}"))?;
            next += 1;
        }
        let window_limited = next < due;
        handler.expired_acks(Instant::now(), &mut expired);
        for index in expired.drain(..) {
            engine.fail(index, Cause::NoSubscribeAck, &mut handler);
        }
        let wait = if next < thread.indices.len() && !window_limited {
            let next_due = Duration::from_secs_f64(next as f64 / thread.rate);
            next_due
                .saturating_sub(ramp_started.elapsed())
                .min(TURN_WAIT_MAX)
        } else {
            TURN_WAIT_MAX
        };
        engine
            .turn(&mut handler, wait)
            .map_err(|error| format!("io_uring failed: {error}"))?;
        handler.flush();
        handler.feed_ramp(&mut ramp);
        if window_limited {
            limited += turn_started.elapsed();
        }
        if published_at.elapsed() >= STATS_PUBLISH_INTERVAL {
            published_at = Instant::now();
            let stats = stats_of(&engine, &handler, &ramp, limited);
            thread.board.publish(thread.fanout.thread_index, &stats);
        }
    }
    // What was measured up to the stop, in case shutting down takes too long.
    let stats = stats_of(&engine, &handler, &ramp, limited);
    thread.board.publish(thread.fanout.thread_index, &stats);
    engine.stop(&mut handler);
    handler.flush();
    Ok(stats_of(&engine, &handler, &ramp, limited))
}

fn stats_of(
    engine: &Engine,
    handler: &Subscribers,
    ramp: &RampController,
    limited: Duration,
) -> ThreadStats {
    let mut stats = ThreadStats::new();
    stats.attempted = engine.stats.attempted;
    stats.established = engine.stats.established;
    stats.failures = engine.stats.failures;
    stats.connect_latency_ns = engine.stats.connect_latency_ns.clone();
    // Before the stop, those subscribed now are the ones that will have lasted to the end.
    stats.alive = handler.alive + handler.subscribed_now;
    stats.ramp.window_final = ramp.window();
    stats.ramp.cuts = ramp.cuts;
    stats.ramp.limited_ms = limited.as_millis() as u64;
    stats.buffer_shortages = engine.stats.buffer_shortages;
    stats
}

struct ScenarioFanout {
    plan: FanoutPlan,
    first_index: u64,
}

fn fanout_plan(plan: &WorkerPlan) -> Result<ScenarioFanout, String> {
    match &plan.scenario {
        crate::protocol::ScenarioPlan::Fanout(fanout) => match fanout.role {
            FanoutRole::Subscribers { first_index } => Ok(ScenarioFanout {
                plan: fanout.clone(),
                first_index,
            }),
            FanoutRole::Publishers { .. } => {
                Err("publishers do not run on the io_uring client".into())
            }
        },
        other => Err(format!("not a fanout plan: {other:?}")),
    }
}

/// `host:port` for requests' `Host` header.
fn settings_host(thread: &SubscriberThread) -> String {
    let uri = &thread.target.uri;
    uri.authority().map_or_else(
        || thread.target.address.to_string(),
        |authority| authority.to_string(),
    )
}

/// `Bearer <token>` of `--token-file`, for upgrades and the HTTP transports' requests.
fn authorization(thread: &SubscriberThread) -> Option<String> {
    let value = thread.target.authorization.as_ref()?;
    value.to_str().ok().map(str::to_owned)
}

fn engine_settings(thread: &SubscriberThread, fanout: &FanoutPlan) -> EngineSettings {
    let uri = &thread.target.uri;
    // A buffer holds a few deliveries (data plus about 60 bytes of envelope and head each).
    let buffer_bytes = ((fanout.payload_bytes + 64) * 4)
        .next_power_of_two()
        .clamp(2048, 65_536);
    EngineSettings {
        target: thread.target.address,
        host: uri.authority().map_or_else(
            || thread.target.address.to_string(),
            |authority| authority.to_string(),
        ),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
        authorization: authorization(thread),
        connect_timeout: Duration::from_millis(thread.plan.connect_timeout_ms),
        buffers_count: BUFFERS_COUNT,
        buffer_bytes,
        message_bytes_max: MESSAGE_BYTES_MAX,
        seed: (thread.plan.worker_index as u64) << 32 | thread.fanout.thread_index as u64,
        tls: thread.target.tls.clone(),
        deflate: fanout.compression,
    }
}

/// Where one subscriber is.
enum State {
    Connecting,
    /// Subscription sent; `attempted_at` is when its connection was opened.
    Subscribing {
        attempted_at: Instant,
    },
    Subscribed {
        check: SequenceCheck,
        /// The topic's seq at subscription (JSON protocols): delivery seq = this + counter.
        subscribed_seq: Option<u64>,
    },
    Gone,
}

struct Slot {
    topic: u32,
    state: State,
    /// NATS only: the protocol stream, which frames may split anywhere.
    nats: Option<Box<NatsParser>>,
    /// HTTP transports only: the response stream, which receives may split anywhere.
    stream: Option<Box<StreamReader>>,
}

/// What the ramp learns from one subscriber.
enum RampEvent {
    Ready(Duration),
    Failed,
}

/// The subscribers of one thread, as the engine's handler.
struct Subscribers {
    protocol: Protocol,
    transport: Transport,
    /// `host:port` for the HTTP transports' requests.
    host: String,
    /// Their `Authorization` (`--token-file`).
    authorization: Option<String>,
    fanout: FanoutThread,
    counters: Arc<Counters>,
    slots: Vec<Slot>,
    subscribe_timeout: Duration,
    /// Subscription deadlines, in the order subscriptions were sent.
    ack_deadlines: VecDeque<(Instant, u32)>,
    /// This turn's checked deliveries and counts, added to the tally under one lock.
    deliveries: Vec<Delivery>,
    totals: FanoutTotals,
    topic_changes: Vec<(u32, bool)>,
    /// Deliveries read by the scanner, for the sampled full parse.
    scanned: u64,
    ramp_events: Vec<RampEvent>,
    ready: u64,
    failed_before_ready: u64,
    /// Subscribed and still open at the stop.
    alive: u64,
    /// Subscribed and open now.
    subscribed_now: u64,
}

impl Subscribers {
    fn new(thread: &SubscriberThread, fanout: &FanoutPlan, topics: Vec<u32>, host: String) -> Self {
        let slots = topics
            .into_iter()
            .map(|topic| Slot {
                topic,
                state: State::Connecting,
                nats: None,
                stream: None,
            })
            .collect();
        Self {
            protocol: fanout.protocol,
            transport: fanout.transport,
            host,
            authorization: authorization(thread),
            fanout: thread.fanout.clone(),
            counters: Arc::clone(&thread.counters),
            slots,
            subscribe_timeout: Duration::from_millis(fanout.subscribe_timeout_ms),
            ack_deadlines: VecDeque::new(),
            deliveries: Vec::new(),
            totals: FanoutTotals::default(),
            topic_changes: Vec::new(),
            scanned: 0,
            ramp_events: Vec::new(),
            ready: 0,
            failed_before_ready: 0,
            alive: 0,
            subscribed_now: 0,
        }
    }

    /// Connections that got subscribed or failed before: the rest of those opened are still
    /// in flight for the ramp.
    fn settled_before_ready(&self) -> u64 {
        self.ready + self.failed_before_ready
    }

    /// Subscribers whose acknowledgement is overdue.
    fn expired_acks(&mut self, now: Instant, expired: &mut Vec<u32>) {
        while let Some(&(deadline, index)) = self.ack_deadlines.front() {
            if deadline > now {
                break;
            }
            self.ack_deadlines.pop_front();
            if matches!(self.slots[index as usize].state, State::Subscribing { .. }) {
                expired.push(index);
            }
        }
    }

    fn feed_ramp(&mut self, ramp: &mut RampController) {
        for event in self.ramp_events.drain(..) {
            match event {
                RampEvent::Ready(latency) => ramp.on_success(latency),
                RampEvent::Failed => ramp.on_failure(),
            }
        }
    }

    /// Adds this turn's deliveries and counts to the thread's tally, under one lock.
    fn flush(&mut self) {
        if self.deliveries.is_empty()
            && self.topic_changes.is_empty()
            && self.totals == FanoutTotals::default()
        {
            return;
        }
        let delivered = self.deliveries.len() as u64;
        let mut tally = self.fanout.tally();
        for (topic, joined) in self.topic_changes.drain(..) {
            let count = tally.subscribers_per_topic.entry(topic).or_default();
            if joined {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
            }
        }
        for delivery in self.deliveries.drain(..) {
            tally.record(&delivery);
        }
        tally.totals.merge(&self.totals);
        drop(tally);
        self.totals = FanoutTotals::default();
        self.counters
            .messages
            .fetch_add(delivered, Ordering::Relaxed);
    }

    /// The subscription of `index` took effect; `seq` is its topic's seq then, when known.
    fn subscribed(&mut self, index: u32, seq: Option<u64>) {
        let slot = &mut self.slots[index as usize];
        let State::Subscribing { attempted_at } = slot.state else {
            return;
        };
        self.ramp_events
            .push(RampEvent::Ready(attempted_at.elapsed()));
        slot.state = State::Subscribed {
            // Every subscriber is in before the first publish, so counters start at 1.
            check: SequenceCheck::new(1),
            subscribed_seq: seq.filter(|_| self.protocol.has_sequence_numbers()),
        };
        self.topic_changes.push((slot.topic, true));
        self.ready += 1;
        self.subscribed_now += 1;
        self.counters.ready.fetch_add(1, Ordering::Relaxed);
    }

    /// A message while waiting for the acknowledgement: the JSON protocols' `subscribed`.
    fn json_while_subscribing(&mut self, index: u32, payload: &[u8]) -> Result<(), Cause> {
        let topic = self.slots[index as usize].topic;
        match decode_json(payload) {
            Incoming::Subscribed { topic: acked, seq } if acked == Some(topic) => {
                self.subscribed(index, Some(seq));
                Ok(())
            }
            Incoming::Error(_) => Err(Cause::NoSubscribeAck),
            _ => Ok(()),
        }
    }

    /// A delivery of the JSON protocols, read by the scanner (one in `FULL_PARSE_EVERY` is
    /// also fully parsed), or by the full parse when the scanner does not recognise it.
    fn json_delivery(&mut self, index: u32, payload: &[u8], received_ns: u64) {
        let reading = match scan_delivery(payload) {
            Some(scanned) => {
                let full = self.sample(|| match decode_json(payload) {
                    Incoming::Delivery {
                        topic,
                        seq: Some(seq),
                        data,
                    } => Some((topic, seq, data)),
                    _ => None,
                });
                let quick = Some((scanned.topic, scanned.seq, scanned.data));
                match full {
                    Some(full) if full != quick => {
                        self.totals.scanner_mismatches += 1;
                        full
                    }
                    _ => quick,
                }
            }
            None => match decode_json(payload) {
                Incoming::Delivery { topic, seq, data } => seq.map(|seq| (topic, seq, data)),
                Incoming::Reset => {
                    self.totals.resets += 1;
                    return;
                }
                Incoming::Error(_) => {
                    self.totals.server_errors += 1;
                    return;
                }
                _ => None,
            },
        };
        match reading {
            Some((topic, seq, data)) => self.check(index, topic, Some(seq), data, received_ns),
            None => self.totals.unexpected += 1,
        }
    }

    /// Every `FULL_PARSE_EVERY`th scanned delivery, the full parse's reading of it.
    fn sample<T>(&mut self, full_parse: impl FnOnce() -> Option<T>) -> Option<Option<T>> {
        self.scanned += 1;
        if self.scanned % FULL_PARSE_EVERY != 0 {
            return None;
        }
        self.totals.fully_parsed += 1;
        Some(full_parse())
    }

    /// Checks a delivery on `topic` against subscriber `index`'s topic, order and seq.
    fn check(
        &mut self,
        index: u32,
        topic: u32,
        seq: Option<u64>,
        data: PayloadData,
        received_ns: u64,
    ) {
        let slot = &mut self.slots[index as usize];
        let State::Subscribed {
            check,
            subscribed_seq,
        } = &mut slot.state
        else {
            return;
        };
        if topic != slot.topic || data.step as usize >= STEPS_MAX {
            self.totals.unexpected += 1;
            return;
        }
        let expected_seq = subscribed_seq.map(|base| base + data.counter);
        self.deliveries.push(Delivery {
            data,
            topic,
            latency_ns: received_ns.saturating_sub(data.sent_ns),
            verdict: check.observe(data.counter),
            seq_mismatch: expected_seq.is_some() && seq != expected_seq,
        });
    }

    /// One Socket.IO packet. The handshake needs no state of its own: each step answers the
    /// server's previous one (open → CONNECT, connected → subscribe, `subscribed`), so the
    /// order is the server's. Deliveries are the JSON protocol's, read the same way.
    fn socketio_packet(
        &mut self,
        index: u32,
        payload: &[u8],
        received_ns: u64,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let slot = &self.slots[index as usize];
        let subscribing = matches!(slot.state, State::Subscribing { .. });
        match decode_socketio(payload) {
            SocketIoPacket::Ping => out.text(self.protocol.pong().as_bytes()),
            SocketIoPacket::Open if subscribing => {
                let hello = self.protocol.publisher_hello();
                out.text(hello.expect("Socket.IO has a CONNECT").as_bytes());
            }
            SocketIoPacket::Connected if subscribing => {
                out.text(self.protocol.subscribe(&topic_name(slot.topic)).as_bytes());
            }
            SocketIoPacket::Refused if subscribing => return Err(Cause::NoSubscribeAck),
            SocketIoPacket::Refused => return Err(Cause::ClosedEarly),
            SocketIoPacket::Event { name, .. } if name == SOCKETIO_CURSOR_EVENT => {}
            SocketIoPacket::Event { argument, .. } if subscribing => {
                return self.json_while_subscribing(index, argument);
            }
            SocketIoPacket::Event { argument, .. } => {
                if matches!(slot.state, State::Subscribed { .. }) {
                    self.json_delivery(index, argument, received_ns);
                }
            }
            SocketIoPacket::Ignored => {}
            SocketIoPacket::Open | SocketIoPacket::Connected | SocketIoPacket::Other => {
                self.totals.unexpected += 1;
            }
        }
        Ok(())
    }

    /// Bytes of an HTTP transport's response stream: JSON texts handled as WebSocket messages
    /// are; a poll answer's cursor starts the next poll (the first answer, of the short poll
    /// sent at connect, is the subscription's acknowledgement).
    fn http_bytes(
        &mut self,
        index: u32,
        bytes: &[u8],
        received_ns: u64,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let Some(mut reader) = self.slots[index as usize].stream.take() else {
            return Ok(());
        };
        let mut outcome = Ok(());
        let read = reader.push(bytes, |event| match event {
            Event::Json(json) => match self.slots[index as usize].state {
                State::Subscribed { .. } => self.json_delivery(index, json, received_ns),
                State::Subscribing { .. } => {
                    if let Err(cause) = self.json_while_subscribing(index, json) {
                        outcome = outcome.and(Err(cause));
                    }
                }
                _ => {}
            },
            Event::PollAnswered { cursor } => {
                if matches!(self.slots[index as usize].state, State::Subscribing { .. }) {
                    self.subscribed(index, None);
                }
                let topic = topic_name(self.slots[index as usize].topic);
                out.raw(
                    self.transport
                        .request(
                            &self.host,
                            self.authorization.as_deref(),
                            &topic,
                            Some(cursor),
                        )
                        .as_bytes(),
                );
            }
        });
        self.slots[index as usize].stream = Some(reader);
        match read {
            Ok(()) => outcome,
            Err(_) if matches!(self.slots[index as usize].state, State::Subscribing { .. }) => {
                Err(Cause::NoSubscribeAck)
            }
            Err(_) => Err(Cause::ClosedEarly),
        }
    }

    /// A binary frame of the NATS stream: any number of protocol messages, or part of one.
    fn nats_frame(
        &mut self,
        index: u32,
        payload: &[u8],
        received_ns: u64,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let mut parser = self.slots[index as usize].nats.take().unwrap_or_default();
        parser.push(payload);
        let mut outcome = Ok(());
        while let Some(event) = parser.next_event() {
            outcome = self.nats_event(index, event, received_ns, out);
            if outcome.is_err() {
                break;
            }
        }
        if parser.is_broken() {
            outcome = Err(Cause::ClosedEarly);
        }
        self.slots[index as usize].nats = Some(parser);
        outcome
    }

    fn nats_event(
        &mut self,
        index: u32,
        event: NatsEvent<'_>,
        received_ns: u64,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let subscribing = matches!(self.slots[index as usize].state, State::Subscribing { .. });
        match event {
            NatsEvent::Message { subject, payload } => {
                let topic = std::str::from_utf8(subject).ok().and_then(topic_index);
                let data = match scan_payload(payload) {
                    Some(quick) => match self.sample(|| payload::decode(payload)) {
                        Some(full) if full != Some(quick) => {
                            self.totals.scanner_mismatches += 1;
                            full
                        }
                        _ => Some(quick),
                    },
                    None => payload::decode(payload),
                };
                match (topic, data) {
                    (Some(topic), Some(data)) => self.check(index, topic, None, data, received_ns),
                    _ => self.totals.unexpected += 1,
                }
            }
            NatsEvent::Ping => out.binary(b"PONG\r\n"),
            // The PONG to the PING sent after SUB: the subscription is in place.
            NatsEvent::Pong if subscribing => self.subscribed(index, None),
            NatsEvent::Error(_) if subscribing => return Err(Cause::NoSubscribeAck),
            NatsEvent::Error(_) => self.totals.server_errors += 1,
            NatsEvent::Pong | NatsEvent::Info | NatsEvent::Ok => {}
        }
        Ok(())
    }
}

impl Handler for Subscribers {
    fn opened(
        &mut self,
        index: u32,
        since_attempt: Duration,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let now = Instant::now();
        let slot = &mut self.slots[index as usize];
        if self.transport != Transport::Ws {
            out.raw(
                self.transport
                    .request(
                        &self.host,
                        self.authorization.as_deref(),
                        &topic_name(slot.topic),
                        None,
                    )
                    .as_bytes(),
            );
            slot.stream = Some(Box::new(StreamReader::new(self.transport)));
        } else if self.protocol.is_binary() {
            out.binary(self.protocol.subscribe(&topic_name(slot.topic)).as_bytes());
        } else if self.protocol.server_speaks_first() {
            // Socket.IO: the subscription follows the server's open packet and CONNECT answer.
        } else {
            out.text(self.protocol.subscribe(&topic_name(slot.topic)).as_bytes());
        }
        slot.state = State::Subscribing {
            attempted_at: now - since_attempt,
        };
        self.ack_deadlines
            .push_back((now + self.subscribe_timeout, index));
        Ok(())
    }

    fn message(
        &mut self,
        index: u32,
        message: Message<'_>,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        if self.transport != Transport::Ws {
            return self.http_bytes(index, message.payload, message.received_ns, out);
        }
        self.totals.data_messages += 1;
        self.totals.data_message_wire_bytes += message.wire_bytes as u64;
        self.totals.compressed_messages += u64::from(message.compressed);
        if self.protocol.is_binary() {
            if !message.text {
                return self.nats_frame(index, message.payload, message.received_ns, out);
            }
            self.totals.unexpected += 1;
            return Ok(());
        }
        if self.protocol == Protocol::SocketIo {
            if !message.text {
                self.totals.unexpected += 1;
                return Ok(());
            }
            return self.socketio_packet(index, message.payload, message.received_ns, out);
        }
        match self.slots[index as usize].state {
            State::Subscribed { .. } if message.text => {
                self.json_delivery(index, message.payload, message.received_ns);
                Ok(())
            }
            State::Subscribing { .. } if message.text => {
                self.json_while_subscribing(index, message.payload)
            }
            _ => {
                self.totals.unexpected += 1;
                Ok(())
            }
        }
    }

    fn ended(&mut self, index: u32, outcome: Result<(), Cause>) {
        let slot = &mut self.slots[index as usize];
        match (&slot.state, outcome) {
            (State::Subscribed { .. }, outcome) => {
                self.topic_changes.push((slot.topic, false));
                self.subscribed_now -= 1;
                if outcome.is_ok() {
                    self.alive += 1;
                }
            }
            (State::Connecting | State::Subscribing { .. }, Err(_)) => {
                self.failed_before_ready += 1;
                self.ramp_events.push(RampEvent::Failed);
            }
            (State::Connecting | State::Subscribing { .. } | State::Gone, _) => {}
        }
        slot.state = State::Gone;
        slot.nats = None;
        slot.stream = None;
    }
}
