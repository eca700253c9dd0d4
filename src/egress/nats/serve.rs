//! The bridge at work, once the shards run: publishes from the shards' feeds go to JetStream,
//! and every message of the stream comes back to its topic's owner shard.
//!
//! **Publishing.** A topic's seq is assigned by JetStream's compare-and-set on the subject: the
//! bridge knows (or reads, by a direct get of the subject's last message) the topic's last seq
//! and the stream sequence of that message, and publishes with `Ringcast-Seq: seq + 1` and
//! `Nats-Expected-Last-Subject-Sequence: <that stream sequence>`. Another node that published
//! the topic meanwhile makes the server refuse it (wrong last sequence); the bridge reads the
//! last message again and retries. Every attempt of one publish carries the same
//! `Nats-Msg-Id` (the client's idempotency key when it gave one, else one unique to the
//! publish), so that an attempt whose acknowledgement was lost (a timeout, NATS restarting) and
//! that JetStream did store is answered as a duplicate with the first copy, whose seq is then
//! read back: no publish is stored twice, none is lost, and the publisher gets its seq or, after
//! `nats_publish_timeout_ms`, an error.
//!
//! **Confirming, with replicas.** nats-server 2.9's clustered streams check the expected last
//! sequence against the messages applied, not those proposed, so two nodes' publishes of one
//! topic at the same instant can both be stored with one seq (nats-io/nats-server#4320). With
//! `nats_replicas` > 1 a publish is answered only once this node's reading of the stream has
//! passed it and found it the first with its seq (every owner keeps the first); a later one is
//! published again under a new message id.
//!
//! **Pipelining.** The compare-and-set forbids two publishes of one topic in flight at once:
//! the second must name the stream sequence of the first, which JetStream gives only in the
//! first's acknowledgement (sent blind, the second would expect the stream sequence before
//! the first, and be refused as soon as the first is stored). So a topic's publishes go one
//! after the other, in the order the shards queued them, while publishes of different topics
//! go together, up to `nats_publishes_in_flight_max` in flight: a node's publish rate is then
//! bounded by the round trip per topic, not per node.
//!
//! **Delivering.** One ordered consumer reads the whole stream in order (from its first message
//! when the node starts, so that every owner's local history is JetStream's and replay with
//! `since` works on any node), and each message goes to its topic's owner as
//! `Command::Ingest` with the seq from its header. Every node takes every topic: the owners
//! then keep the history of topics without local subscribers too, so that a client arriving on
//! any node (a failover) resumes from local memory at once. The ordered consumer restarts
//! itself after the last stream sequence it delivered when the connection or the consumer is
//! lost; an owner drops a seq it already has. A mailbox that is full makes the bridge wait
//! (backpressure on the stream's reading, never a drop).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::feed::PublishFeed;
use super::metrics::{ClusterMetrics, RetryReason};
use super::{BridgeState, NatsSettings, ShardInbox, subject};
use crate::broker::owner::OwnerError;
use crate::broker::{ClusterPublish, Command, Epoch, TopicName};
use crate::egress::feed::IntakeSignal;

/// The header that carries a message's seq within its topic.
pub const SEQ_HEADER: &str = "Ringcast-Seq";
/// The header that names the node (its process start) that published a message: the one
/// node that sends its `message.published` webhook event.
pub const NODE_HEADER: &str = "Ringcast-Node";
/// Topics whose last seq and stream sequence the bridge remembers; past it the table is
/// emptied (each topic then costs one direct get on its next publish).
const LAST_KNOWN_TOPICS_MAX: usize = 65_536;
/// The first and the longest pause between a publish's attempts.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);
/// The pause before the stream's reading starts again after an error.
const CONSUMER_RESTART_PAUSE: Duration = Duration::from_millis(250);
/// How often the reading checks that the stream is still the one it reads, and that it moves:
/// a deleted stream, or a consumer lost with the NATS server it lived on, does not always end
/// an ordered consumer's reading, which would then wait for good.
const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Rounds of a publish whose seq another node's publish took (see [`confirm`]): each is rare,
/// two in a row rarer still.
const COLLISION_ROUNDS_MAX: u32 = 8;
/// Collisions the reading keeps for the publishes waiting to be confirmed: far more than can
/// be in flight at once.
const COLLISIONS_KEPT_MAX: usize = 4096;
/// The pause before a full mailbox is tried again.
const MAILBOX_FULL_PAUSE: Duration = Duration::from_millis(1);

/// What the bridge's two tasks share on its one thread.
pub struct Bridge {
    pub settings: NatsSettings,
    pub context: jetstream::Context,
    pub stream: jetstream::stream::Stream,
    pub state: Arc<BridgeState>,
    pub metrics: Arc<ClusterMetrics>,
    pub inbox: RefCell<Box<dyn ShardInbox>>,
    /// Per topic: its last seq and that message's stream sequence, as last seen.
    last_known: RefCell<HashMap<TopicName, (u64, u64)>>,
    /// Numbers the publishes without a key, for their `Nats-Msg-Id`.
    publish_serial: Cell<u64>,
    /// Differs per process start: the publishes' ids of two nodes never meet.
    node_id: u64,
    /// The stream sequence the reading of the stream takes next, and its wake-up of the
    /// publishes waiting to be confirmed.
    read_next: Cell<u64>,
    read_notify: Notify,
    /// Per topic, the highest seq the reading met: a message at or below it repeats a seq.
    read_seqs: RefCell<HashMap<TopicName, u64>>,
    /// Stream sequences of the messages that repeated a topic's seq, the latest kept.
    collisions: RefCell<VecDeque<u64>>,
}

impl Bridge {
    pub fn new(
        settings: NatsSettings,
        context: jetstream::Context,
        stream: jetstream::stream::Stream,
        state: Arc<BridgeState>,
        metrics: Arc<ClusterMetrics>,
        inbox: Box<dyn ShardInbox>,
    ) -> Bridge {
        Bridge {
            settings,
            context,
            stream,
            state,
            metrics,
            inbox: RefCell::new(inbox),
            last_known: RefCell::new(HashMap::new()),
            publish_serial: Cell::new(0),
            node_id: fastrand::u64(..),
            read_next: Cell::new(1),
            read_notify: Notify::new(),
            read_seqs: RefCell::new(HashMap::new()),
            collisions: RefCell::new(VecDeque::new()),
        }
    }

    /// Hands `command` to `shard`, waiting while its mailbox is full.
    async fn send(&self, shard: usize, mut command: Command) {
        loop {
            match self.inbox.borrow_mut().send(shard, command) {
                Ok(()) => return,
                Err(back) => command = back,
            }
            tokio::time::sleep(MAILBOX_FULL_PAUSE).await;
        }
    }

    /// Notes the reading of `topic`'s `seq` at `stream_sequence`: whether it repeats a seq the
    /// reading met before (a collision, kept for [`confirm`]).
    fn note_read(&self, topic: &TopicName, seq: u64, stream_sequence: u64) {
        let mut read_seqs = self.read_seqs.borrow_mut();
        match read_seqs.get_mut(topic.as_bytes()) {
            Some(last) if seq <= *last => {
                let mut collisions = self.collisions.borrow_mut();
                if collisions.len() >= COLLISIONS_KEPT_MAX {
                    collisions.pop_front();
                }
                collisions.push_back(stream_sequence);
            }
            Some(last) => *last = seq,
            None => {
                if read_seqs.len() >= LAST_KNOWN_TOPICS_MAX {
                    read_seqs.clear();
                }
                read_seqs.insert(topic.to_kept(), seq);
            }
        }
    }

    /// The reading of the stream will take `next` next: publishes waiting for it look again.
    fn note_read_next(&self, next: u64) {
        self.read_next.set(next);
        self.read_notify.notify_waiters();
    }

    fn remember(&self, topic: &TopicName, seq: u64, stream_sequence: u64) {
        let mut last_known = self.last_known.borrow_mut();
        if let Some(known) = last_known.get_mut(topic.as_bytes()) {
            if seq > known.0 {
                *known = (seq, stream_sequence);
            }
            return;
        }
        if last_known.len() >= LAST_KNOWN_TOPICS_MAX {
            last_known.clear();
        }
        last_known.insert(topic.to_kept(), (seq, stream_sequence));
    }
}

/// Publishes waiting behind their topic's publish in flight, per publish that may be in
/// flight: past it the bridge leaves publishes in the shards' feeds (which refuse with 503
/// when full) rather than hold them itself.
const WAITING_PER_IN_FLIGHT: usize = 4;

/// The publishes the bridge holds: up to `nats_publishes_in_flight_max` in flight, each of
/// another topic, and per topic those waiting behind it, in the order they came.
struct Pipeline {
    in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = TopicName>>>>,
    /// Every topic with a publish in flight, and its publishes waiting.
    waiting: HashMap<TopicName, VecDeque<ClusterPublish>>,
    waiting_count: usize,
    in_flight_max: usize,
    waiting_max: usize,
}

impl Pipeline {
    fn has_room(&self) -> bool {
        self.in_flight.len() < self.in_flight_max && self.waiting_count < self.waiting_max
    }

    /// Sends `publish` now, or queues it behind its topic's publish in flight.
    fn start(&mut self, bridge: &Rc<Bridge>, publish: ClusterPublish) {
        if let Some(queue) = self.waiting.get_mut(publish.topic.as_bytes()) {
            queue.push_back(publish);
            self.waiting_count += 1;
            return;
        }
        self.waiting
            .insert(publish.topic.to_kept(), VecDeque::new());
        self.send(bridge, publish);
    }

    fn send(&mut self, bridge: &Rc<Bridge>, publish: ClusterPublish) {
        let bridge = Rc::clone(bridge);
        let topic = publish.topic.to_kept();
        self.in_flight.push(Box::pin(async move {
            publish_one(&bridge, publish).await;
            topic
        }));
    }

    /// `topic`'s publish was answered: its next waiting one goes.
    fn finished(&mut self, bridge: &Rc<Bridge>, topic: &TopicName) {
        let next = self
            .waiting
            .get_mut(topic.as_bytes())
            .and_then(VecDeque::pop_front);
        match next {
            Some(publish) => {
                self.waiting_count -= 1;
                self.send(bridge, publish);
            }
            None => {
                self.waiting.remove(topic.as_bytes());
            }
        }
    }

    /// Takes publishes from the feeds in turn, one from each per round, while there is room;
    /// returns how many.
    fn take(&mut self, bridge: &Rc<Bridge>, feeds: &[Arc<PublishFeed>]) -> usize {
        let mut taken = 0;
        loop {
            let before = taken;
            for feed in feeds {
                if !self.has_room() {
                    return taken;
                }
                if let Some(publish) = feed.pop() {
                    taken += 1;
                    self.start(bridge, publish);
                }
            }
            if taken == before {
                return taken;
            }
        }
    }

    fn note_levels(&self, metrics: &ClusterMetrics) {
        let in_flight = self.in_flight.len() as u64;
        metrics.in_flight.store(in_flight, Ordering::Relaxed);
        metrics
            .waiting
            .store(self.waiting_count as u64, Ordering::Relaxed);
    }
}

/// Takes publishes from the shards' feeds while they come and has JetStream store them, up to
/// `nats_publishes_in_flight_max` at once and one per topic at a time (see the module's
/// doc); sleeps when there is nothing to do.
pub async fn publish_loop(
    bridge: Rc<Bridge>,
    feeds: Vec<Arc<PublishFeed>>,
    signal: Arc<IntakeSignal>,
) {
    let in_flight_max = bridge.settings.publishes_in_flight_max;
    let mut pipeline = Pipeline {
        in_flight: FuturesUnordered::new(),
        waiting: HashMap::new(),
        waiting_count: 0,
        in_flight_max,
        waiting_max: in_flight_max * WAITING_PER_IN_FLIGHT,
    };
    loop {
        let taken = pipeline.take(&bridge, &feeds);
        pipeline.note_levels(&bridge.metrics);
        if pipeline.in_flight.is_empty() {
            if taken > 0 {
                continue;
            }
            signal.going_to_sleep();
            if feeds.iter().any(|feed| !feed.is_empty()) {
                signal.awake();
                continue;
            }
            signal.sleep().await;
            continue;
        }
        let room = pipeline.has_room();
        tokio::select! {
            Some(topic) = pipeline.in_flight.next() => pipeline.finished(&bridge, &topic),
            () = wait_for_publishes(&signal, &feeds), if room => {}
            else => {}
        }
    }
}

/// Returns once a feed has publishes: at once when one has, else after a shard's wake-up.
async fn wait_for_publishes(signal: &IntakeSignal, feeds: &[Arc<PublishFeed>]) {
    signal.going_to_sleep();
    if feeds.iter().any(|feed| !feed.is_empty()) {
        signal.awake();
        return;
    }
    signal.sleep().await;
}

/// Publishes one message durably and answers its publisher (when it waits for an answer).
async fn publish_one(bridge: &Bridge, publish: ClusterPublish) {
    let metrics = &bridge.metrics;
    ClusterMetrics::add(&metrics.publishes);
    let started = Instant::now();
    let result = publish_durably(bridge, &publish).await;
    match result {
        Ok(_) => {
            ClusterMetrics::add(&metrics.acknowledged);
            let latency = started.elapsed().as_secs_f64();
            metrics.publish_latency.observe(latency);
        }
        Err(_) => metrics.timed_out(),
    }
    if let Err(error) = result {
        warn!(
            topic = publish.topic.as_str(),
            reason = error.reason(),
            "publish refused"
        );
    }
    let Some(reply) = publish.reply else {
        return;
    };
    if reply.ticket.is_none() && publish.key.is_none() && result.is_ok() {
        return; // A WebSocket publish without an id hears back only about a refusal.
    }
    let command = Command::Published {
        reply,
        result,
        key: publish.key,
    };
    bridge.send(usize::from(reply.client.shard), command).await;
}

/// Has JetStream store the message as the topic's next seq; returns that seq. With more than
/// one replica, the seq stands only once this node's reading of the stream found the message
/// to be the first with it (see [`confirm`]); otherwise the message goes again, under a new
/// message id.
async fn publish_durably(bridge: &Bridge, publish: &ClusterPublish) -> Result<u64, OwnerError> {
    let settings = &bridge.settings;
    let subject = subject::of_topic(&settings.subject_prefix, publish.topic.as_bytes());
    let deadline = Instant::now() + settings.publish_timeout;
    let base_id = message_id(bridge, publish, &subject);
    for round in 0..COLLISION_ROUNDS_MAX {
        let message_id = match round {
            0 => base_id.clone(),
            round => format!("{base_id}:r{round}"),
        };
        let (seq, stream_sequence) =
            publish_until(bridge, publish, &subject, &message_id, deadline).await?;
        if settings.replicas == 1 || confirm(bridge, stream_sequence, deadline).await {
            return Ok(seq);
        }
        bridge.metrics.retried(RetryReason::Collision);
        warn!(
            topic = publish.topic.as_str(),
            seq, stream_sequence, "another node's publish took the same seq: publishing again"
        );
    }
    Err(OwnerError::ClusterUnavailable)
}

/// The `Nats-Msg-Id` of every attempt of `publish`: the client's key when it gave one (the same
/// key on any node within the window is the same message), else one unique to the publish.
fn message_id(bridge: &Bridge, publish: &ClusterPublish, subject: &str) -> String {
    let settings = &bridge.settings;
    match &publish.key {
        // The same key on any node within the window is the same message.
        Some(key) => format!(
            "k:{}:{}",
            &subject[settings.subject_prefix.len() + 1..],
            key.as_str()
        ),
        None => {
            let serial = bridge.publish_serial.get() + 1;
            bridge.publish_serial.set(serial);
            format!("p:{:016x}:{serial}", bridge.node_id)
        }
    }
}

/// Attempts the publish until JetStream stores it (or answers that it has) or `deadline`;
/// returns its seq and stream sequence.
async fn publish_until(
    bridge: &Bridge,
    publish: &ClusterPublish,
    subject: &str,
    message_id: &str,
    deadline: Instant,
) -> Result<(u64, u64), OwnerError> {
    let mut pause = RETRY_PAUSE_FIRST;
    loop {
        match attempt(bridge, publish, subject, message_id).await {
            Ok(stored) => return Ok(stored),
            Err(Retry::Now) if Instant::now() < deadline => {
                bridge.metrics.retried(RetryReason::Conflict);
            }
            Err(_) if Instant::now() + pause < deadline => {
                bridge.metrics.retried(RetryReason::Error);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            Err(_) => return Err(OwnerError::ClusterUnavailable),
        }
    }
}

/// Why an attempt did not give a seq.
enum Retry {
    /// Another node published the topic meanwhile: try again at once with its last seq.
    Now,
    /// NATS did not answer, or answered an error: try again after a pause.
    Later,
}

/// One attempt: the compare-and-set publish after the topic's last known message.
async fn attempt(
    bridge: &Bridge,
    publish: &ClusterPublish,
    subject: &str,
    message_id: &str,
) -> Result<(u64, u64), Retry> {
    let known = bridge
        .last_known
        .borrow()
        .get(publish.topic.as_bytes())
        .copied();
    let (last_seq, last_stream_sequence) = match known {
        Some(known) => known,
        None => last_of_subject(&bridge.stream, subject).await?,
    };
    // async-nats keeps what is published while it is disconnected and sends it once it is
    // back: an attempt made now could be stored after its publisher was answered 503 (past
    // `nats_publish_timeout_ms`). Only an attempt made just before the connection went is
    // still sent late.
    if !bridge.state.is_connected() {
        return Err(Retry::Later);
    }
    let seq = last_seq + 1;
    let message = PublishMessage::build()
        .payload(publish.data.clone())
        .message_id(message_id)
        .expected_last_subject_sequence(last_stream_sequence)
        .header(SEQ_HEADER, seq.to_string().as_str())
        .header(NODE_HEADER, format!("{:016x}", bridge.node_id).as_str());
    ClusterMetrics::add(&bridge.metrics.attempts);
    let acknowledged = match bridge
        .context
        .send_publish(subject.to_owned(), message)
        .await
    {
        Ok(future) => future.await,
        Err(error) => Err(error),
    };
    match acknowledged {
        Ok(ack) if !ack.duplicate => {
            bridge.remember(&publish.topic, seq, ack.sequence);
            Ok((seq, ack.sequence))
        }
        // An earlier attempt (or the same key on another node) was stored: its seq stands.
        Ok(ack) => {
            ClusterMetrics::add(&bridge.metrics.duplicates);
            let seq = seq_at(&bridge.stream, ack.sequence).await?;
            Ok((seq, ack.sequence))
        }
        Err(error) => {
            bridge
                .last_known
                .borrow_mut()
                .remove(publish.topic.as_bytes());
            match error.kind() {
                PublishErrorKind::WrongLastSequence => Err(Retry::Now),
                _ => {
                    debug!(%error, subject, "publish attempt failed");
                    Err(Retry::Later)
                }
            }
        }
    }
}

/// Whether the message stored at `stream_sequence` keeps its seq: waits (until `deadline`)
/// for this node's reading of the stream to pass it, then asks whether that reading found an
/// earlier message of the topic with the same seq. nats-server 2.9's clustered streams check
/// `Nats-Expected-Last-Subject-Sequence` against the messages applied, not those proposed, so
/// two nodes' publishes of one topic made at the same instant can both be stored with one seq
/// (nats-io/nats-server#4320). Every node reads the stream in one order, so every owner keeps
/// the first and drops the later; the later's publisher must not be told it has the seq. A
/// reading that does not get there in time says nothing: the seq stands.
async fn confirm(bridge: &Bridge, stream_sequence: u64, deadline: Instant) -> bool {
    loop {
        let read = bridge.read_notify.notified();
        if bridge.read_next.get() > stream_sequence {
            return !bridge.collisions.borrow().contains(&stream_sequence);
        }
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            return true;
        }
    }
}

/// The topic's last seq and its stream sequence; (0, 0) when the subject has no message.
async fn last_of_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<(u64, u64), Retry> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(message) => Ok((
            header_seq(&message.headers).ok_or(Retry::Later)?,
            message.sequence,
        )),
        Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok((0, 0)),
        Err(error) => {
            debug!(%error, subject, "reading the subject's last message failed");
            Err(Retry::Later)
        }
    }
}

/// The seq in the header of the message at `stream_sequence`.
async fn seq_at(stream: &jetstream::stream::Stream, stream_sequence: u64) -> Result<u64, Retry> {
    match stream.direct_get(stream_sequence).await {
        Ok(message) => header_seq(&message.headers).ok_or(Retry::Later),
        Err(_) => Err(Retry::Later),
    }
}

fn header_seq(headers: &async_nats::HeaderMap) -> Option<u64> {
    headers.get(SEQ_HEADER)?.as_str().parse().ok()
}

/// Reads the whole stream in order and hands each message to its topic's owner, for as long
/// as the bridge runs; starts again after the last message delivered when reading fails.
pub async fn consume_loop(bridge: Rc<Bridge>) {
    let mut next_sequence = 1;
    let mut restarting = false;
    loop {
        if restarting {
            ClusterMetrics::add(&bridge.metrics.consumer_restarts);
            next_sequence = check_epoch(&bridge, next_sequence).await;
        }
        restarting = true;
        let config = OrderedConfig {
            deliver_policy: match next_sequence {
                1 => DeliverPolicy::All,
                start_sequence => DeliverPolicy::ByStartSequence { start_sequence },
            },
            ..OrderedConfig::default()
        };
        let messages = match bridge.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                let mut check = tokio::time::interval(STREAM_CHECK_INTERVAL);
                check.tick().await;
                let mut checked_next = next_sequence;
                loop {
                    tokio::select! {
                        item = messages.next() => match item {
                            Some(Ok(message)) => {
                                next_sequence = ingest(&bridge, message, next_sequence).await
                            }
                            Some(Err(error)) => {
                                warn!(%error, "reading the stream: starting again");
                                break;
                            }
                            None => break,
                        },
                        _ = check.tick() => {
                            let stalled = next_sequence == checked_next;
                            checked_next = next_sequence;
                            match check_stream(&bridge, next_sequence).await {
                                StreamCheck::Replaced => break,
                                StreamCheck::Behind if stalled => {
                                    warn!(
                                        next_sequence,
                                        "the stream's reading stalled behind its end: \
                                         starting it again"
                                    );
                                    break;
                                }
                                StreamCheck::Behind | StreamCheck::Current => {}
                            }
                        }
                    }
                }
            }
            Err(error) => warn!(%error, "cannot read the stream yet"),
        }
        tokio::time::sleep(CONSUMER_RESTART_PAUSE).await;
    }
}

/// Whether the stream is gone or is another one than the node read (made anew: another
/// creation time), or holds messages past `next_sequence`. An answer that does not come says
/// nothing: the reading goes on.
async fn check_stream(bridge: &Bridge, next_sequence: u64) -> StreamCheck {
    match bridge.context.get_stream(&bridge.settings.stream).await {
        Ok(stream) => {
            let info = stream.cached_info();
            let created = info.created.unix_timestamp_nanos() as u64;
            if created != bridge.state.epoch().0 {
                StreamCheck::Replaced
            } else if info.state.last_sequence >= next_sequence {
                StreamCheck::Behind
            } else {
                StreamCheck::Current
            }
        }
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                StreamCheck::Replaced
            }
            _ => StreamCheck::Current,
        },
    }
}

/// What a look at the stream found while reading it.
enum StreamCheck {
    /// Gone, or made anew: the reading starts again (and the epoch is checked).
    Replaced,
    /// It holds messages past those read. Twice in a row without a message read between, the
    /// reading is stalled (its consumer lived on a NATS server that died, and the client did
    /// not notice): it starts again after the last message read.
    Behind,
    /// Read to its end, or no answer (which says nothing).
    Current,
}

/// After the stream's reading failed: makes sure the stream exists (another node may have made
/// it anew, or this one does now). When its creation time changed, JetStream's history is
/// lost: every shard hears of the new epoch (its subscribers get `reset`), and the reading
/// starts at the new stream's first message. Returns the stream sequence to read from.
async fn check_epoch(bridge: &Bridge, next: u64) -> u64 {
    let info = match super::ensure_stream(&bridge.context, &bridge.settings).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "checking the stream");
            return next;
        }
    };
    let epoch = Epoch(info.created.unix_timestamp_nanos() as u64);
    if epoch == bridge.state.epoch() {
        return next;
    }
    warn!(
        epoch = format_args!("{:016x}", epoch.0),
        "the stream was made anew: its history is lost, every topic starts again (reset)"
    );
    bridge.state.epoch.store(epoch.0, Ordering::Release);
    bridge.last_known.borrow_mut().clear();
    bridge.read_seqs.borrow_mut().clear();
    bridge.collisions.borrow_mut().clear();
    bridge.note_read_next(1);
    let shards = bridge.inbox.borrow().shards();
    for shard in 0..shards {
        bridge.send(shard, Command::ClusterEpoch { epoch }).await;
    }
    1
}

/// Hands one message of the stream to its topic's owner; returns the stream sequence to read
/// from next (`next` when the message does not say its own).
async fn ingest(bridge: &Bridge, message: jetstream::Message, next: u64) -> u64 {
    let (stream_sequence, pending) = match message.info() {
        Ok(info) => (info.stream_sequence, info.pending),
        Err(error) => {
            warn!(%error, "a stream message without its sequence");
            return next;
        }
    };
    ClusterMetrics::add(&bridge.metrics.messages_received);
    let prefix = &bridge.settings.subject_prefix;
    let topic = subject::to_topic(prefix, message.subject.as_str())
        .and_then(|name| TopicName::copy_from(&name, bridge.settings.topic_bytes_max).ok());
    let seq = message.headers.as_ref().and_then(header_seq);
    let node = format!("{:016x}", bridge.node_id);
    let local = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(NODE_HEADER))
        .is_some_and(|value| value.as_str() == node);
    if let (Some(topic), Some(seq)) = (topic, seq) {
        bridge.note_read(&topic, seq, stream_sequence);
        bridge.remember(&topic, seq, stream_sequence);
        let owner = topic.owner(bridge.inbox.borrow().shards());
        let data = message.message.payload.clone();
        bridge
            .send(
                owner,
                Command::Ingest {
                    topic,
                    seq,
                    data,
                    local,
                },
            )
            .await;
    } else {
        ClusterMetrics::add(&bridge.metrics.messages_foreign);
    }
    if pending == 0 && !bridge.state.caught_up.swap(true, Ordering::AcqRel) {
        info!(stream_sequence, "read the stream up to its end");
    }
    bridge.note_read_next(stream_sequence + 1);
    stream_sequence + 1
}
