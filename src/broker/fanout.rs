//! The pub/sub of one shard, sans-IO: its clients' subscriptions, the topics it owns, and the
//! delivery of each message to its subscribers under the slow-consumer policy and the shard's
//! budget.
//!
//! [`Fanout`] takes inputs (`handle_request` for a client's request, `handle_command` for a
//! command from some shard, `handle_sent` when a client's queue drained) and decides. Its
//! decisions reach the clients through the [`Clients`] trait (queue this message, this reply,
//! close with this code), the other shards through [`Fanout::poll_command`], and the webhooks
//! through [`Fanout::poll_event`] (only the kinds its [`EventFilter`] asks for). The shard
//! implements `Clients` over its connections, carries commands through the mailboxes and events
//! to the webhook thread; the tests implement it over plain vectors and move commands between
//! several `Fanout`s in memory.
//!
//! Ordering rests on two facts: a topic's owner is the only place its sequence numbers are
//! assigned, and commands from one shard to another arrive in the order they were sent. A
//! subscription takes effect when the owner's answer comes back, which carries the seq at that
//! moment and the replay up to it; every later message of the topic follows that answer.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::catch_up::{CatchUp, Waiting};
use super::clients::{Clients, QueueLimits, ShardMemory};
use super::cluster::ClusterPublish;
use super::command::{ClientRef, Command, PublishReply};
use super::config::BrokerConfig;
use super::counters::{BrokerCounters, BrokerGauges};
use super::delivery::{ClientRecords, Delivery, Replay, Subscription};
use super::event::{ConnectionId, Event, EventFilter, EventKind};
use super::grants::TopicPatterns;
use super::idempotency::{IdempotencyKey, IdempotencyKeys};
use super::message::{Message, Reply};
use super::owner::{OwnedTopics, OwnerError, ReplayPage, Since, SubscribeAnswer};
use super::request::BrokerRequest;
use super::subscribers::{POSITION_PENDING, SubscriberTable};
use super::topic::{Epoch, TopicName};
use crate::protocol::prefetch::PREFETCH_DISTANCE;
use crate::protocol::websocket::frame::FrameEncoder;

/// Chunk size of the broker's encoder (messages and replies): one allocation serves many small
/// messages, and a chunk whose messages are all gone is reused.
const ENCODER_ARENA_BYTES: usize = 64 * 1024;
/// Clients whose held messages one turn looks at, so that a turn stays short.
const HOLDING_RELEASED_PER_TURN_MAX: usize = 1024;
/// Owned topics one turn looks at for idleness.
const EXPIRY_VISITS_PER_TURN_MAX: usize = 256;
/// Batches one shard's clients may have waiting for their owners at once; beyond it a batch
/// is refused at once (its items held meanwhile are bounded by this and the body limit).
const PENDING_BATCHES_MAX: usize = 1024;

/// A batch waiting for its owners to prepare it.
#[derive(Debug)]
struct PendingBatch {
    client: ClientRef,
    items: Vec<(TopicName, Bytes)>,
    first_ticket: u32,
    key: Option<IdempotencyKey>,
    /// Owners that have not answered yet.
    waiting: usize,
    refused: Option<OwnerError>,
}

/// The pub/sub of one shard.
pub struct Fanout {
    shard: usize,
    shards: usize,
    config: BrokerConfig,
    queue_limits: QueueLimits,
    owned: OwnedTopics,
    subscribers: SubscriberTable,
    clients: ClientRecords,
    encoder: FrameEncoder,
    /// Commands for shards (this one included), in the order they were made.
    outgoing: VecDeque<(usize, Command)>,
    /// Clients holding conflated messages, each once (see `ClientRecord::listed_holding`).
    holding: Vec<u32>,
    /// Clients with a replay waiting for room in their queue to ask for its next page.
    replaying: Vec<u32>,
    /// As owner: the seqs recent idempotency keys got.
    idempotency: IdempotencyKeys,
    /// Batches of this shard's clients waiting for their owners to prepare them, by number.
    batches: HashMap<u32, PendingBatch>,
    next_batch: u32,
    /// The shard's clock, set every turn.
    now_ms: u64,
    counters: BrokerCounters,
    /// Which events to record for the webhooks; empty (nothing recorded) unless one is set.
    event_filter: EventFilter,
    /// Events recorded and not yet taken by `poll_event`, in the order they happened.
    events: VecDeque<Event>,
    /// Clients opened so far (the serial of the latest).
    clients_opened: u64,
    /// Clustered (`nats_urls`): JetStream numbers the messages, not the owner.
    clustered: bool,
    /// Clustered: publishes checked and waiting for the shard to hand them to the bridge.
    cluster_publishes: VecDeque<ClusterPublish>,
    /// Clustered, as an owner: subscriptions whose `since` is past what this node has read of
    /// the stream, held until it catches up.
    catch_up: CatchUp,
    /// Where `catch_up` leaves the subscriptions it lets go (kept, so as not to allocate).
    caught_up: Vec<Waiting>,
}

impl Fanout {
    /// The broker of shard `shard` of `shards`, for clients in slots `0..clients_max`.
    /// `epoch_seed` must differ from one process start to the next (and between shards), so
    /// that sequence spaces started anew get new epochs.
    pub fn new(
        config: &BrokerConfig,
        queue_limits: QueueLimits,
        shard: usize,
        shards: usize,
        clients_max: usize,
        epoch_seed: u64,
    ) -> Fanout {
        Fanout {
            shard,
            shards,
            config: config.clone(),
            queue_limits,
            owned: OwnedTopics::new(config, shards, epoch_seed),
            subscribers: SubscriberTable::default(),
            clients: ClientRecords::new(clients_max),
            encoder: FrameEncoder::new(ENCODER_ARENA_BYTES),
            outgoing: VecDeque::new(),
            holding: Vec::new(),
            replaying: Vec::new(),
            idempotency: IdempotencyKeys::new(
                config.idempotency_keys_max,
                config.idempotency_window_ms,
            ),
            batches: HashMap::new(),
            next_batch: 0,
            now_ms: 0,
            counters: BrokerCounters::default(),
            event_filter: EventFilter::default(),
            events: VecDeque::new(),
            clients_opened: 0,
            clustered: false,
            cluster_publishes: VecDeque::new(),
            catch_up: CatchUp::default(),
            caught_up: Vec::new(),
        }
    }

    /// Makes this shard a part of a cluster whose messages JetStream numbers, in sequence space
    /// `epoch` (the stream's). A subscription whose `since` is past what this node has read
    /// waits for it up to `catch_up_ms`, at most `catch_up_max` at once (`catch_up`). Called at
    /// start-up, before any client.
    pub fn set_cluster(&mut self, epoch: Epoch, catch_up_ms: u64, catch_up_max: usize) {
        self.clustered = true;
        self.owned.set_cluster_epoch(epoch);
        self.catch_up = CatchUp::new(catch_up_ms, catch_up_max);
    }

    /// When the broker next needs a turn with nothing else happening (a held subscription due),
    /// on the shard's clock.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.catch_up.next_due_ms()
    }

    /// Clustered: the next publish to hand to the NATS bridge, in the order they came.
    pub fn poll_cluster_publish(&mut self) -> Option<ClusterPublish> {
        self.cluster_publishes.pop_front()
    }

    /// Clustered: the bridge's queue had no room for `publish`: its publisher hears so (503),
    /// and it is not published.
    pub fn refuse_cluster_publish(&mut self, publish: ClusterPublish) {
        self.counters.cluster_publishes_refused += 1;
        let result = Err(OwnerError::ClusterBusy);
        self.answer_publisher(publish.reply, result, publish.key);
    }

    /// Sets which events to record for the webhooks (none until called).
    pub fn set_event_filter(&mut self, filter: EventFilter) {
        self.event_filter = filter;
    }

    /// Whether events of `kind` are recorded: the shard asks before making a connection event.
    pub fn wants_event(&self, kind: EventKind) -> bool {
        self.event_filter.wants(kind)
    }

    /// Records an event the shard itself decided (a connection opened or closed), in order with
    /// the broker's own.
    pub fn record_event(&mut self, event: Event) {
        debug_assert!(self.event_filter.wants(event.kind()));
        self.events.push_back(event);
    }

    /// The next event for the webhooks, in the order they happened on this shard.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The id of the client in `slot` in events.
    pub fn connection_id(&self, slot: u32) -> ConnectionId {
        ConnectionId {
            shard: self.shard as u16,
            serial: self.clients[slot as usize].serial,
        }
    }

    pub fn counters(&self) -> BrokerCounters {
        BrokerCounters {
            topics_expired: self.owned.topics_expired,
            topic_creations_refused: self.owned.creations_refused,
            cluster_gaps: self.owned.ingest_gaps,
            message_buffers_created: self.owned.pool.buffers_created
                + self.owned.pool.buffers_unpooled,
            ..self.counters
        }
    }

    /// Sets the shard's clock (milliseconds since it started), once per turn.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    pub fn gauges(&self) -> BrokerGauges {
        BrokerGauges {
            subscriptions: self.subscribers.subscription_count() as u64,
            topics_owned: self.owned.topic_count() as u64,
            topics_subscribed: self.subscribers.topic_count() as u64,
            history_bytes: self.owned.history_bytes() as u64,
            message_pool_free_bytes: self.owned.pool.free_bytes() as u64,
        }
    }

    /// A client connected in `slot`.
    pub fn open_client(&mut self, slot: u32, generation: u16) {
        let client = &mut self.clients[slot as usize];
        assert!(!client.open && client.subscriptions.is_empty());
        client.generation = generation;
        client.open = true;
        self.clients_opened += 1;
        client.serial = self.clients_opened;
    }

    /// The client in `slot` is gone: its subscriptions end.
    pub fn close_client(&mut self, slot: u32) {
        while let Some(index) = self.clients[slot as usize]
            .subscriptions
            .last()
            .map(|subscription| subscription.topic)
        {
            self.drop_subscription(slot, index);
        }
        self.clients[slot as usize].open = false;
    }

    /// The next command for a shard (possibly this one), in the order they were made.
    pub fn poll_command(&mut self) -> Option<(usize, Command)> {
        self.outgoing.pop_front()
    }

    /// Whether the shard's queues together hold more than `outbound_shard_bytes_max`.
    pub fn over_budget(&self, memory: ShardMemory) -> bool {
        memory.bytes > self.config.outbound_shard_bytes_max as u64
    }

    /// Carries out one request of the client in `slot`.
    pub fn handle_request(
        &mut self,
        slot: u32,
        request: BrokerRequest,
        clients: &mut impl Clients,
    ) {
        match request {
            BrokerRequest::Publish {
                topic,
                data,
                ticket,
                key,
            } => {
                let reply = PublishReply {
                    client: self.client_ref(slot),
                    ticket,
                };
                self.send_publish(topic, data, reply, key);
            }
            BrokerRequest::PublishBatch {
                items,
                first_ticket,
                key,
            } => self.prepare_batch(slot, items, first_ticket, key, clients),
            BrokerRequest::Subscribe { topic, since } => {
                self.subscribe(slot, topic, since, clients)
            }
            BrokerRequest::Unsubscribe { topic } => self.unsubscribe(slot, &topic, clients),
            BrokerRequest::Regrant { grants } => {
                self.revoke_ungranted(slot, &grants.subscribe, clients)
            }
        }
    }

    /// Carries out a command from some shard (this one included). `Shutdown` is the shard's.
    pub fn handle_command(&mut self, command: Command, clients: &mut impl Clients) {
        match command {
            Command::Shutdown | Command::ToSession { .. } | Command::ToCarrier { .. } => {
                debug_assert!(
                    false,
                    "the shard handles shutdown and Engine.IO carriers itself"
                )
            }
            Command::Publish {
                topic,
                data,
                reply,
                key,
            } if self.clustered => self.publish_to_cluster(topic, data, reply, key),
            Command::Publish {
                topic,
                data,
                reply,
                key,
            } => self.publish(&topic, &data, reply, key),
            Command::Ingest {
                topic,
                seq,
                data,
                local,
            } => self.ingest(&topic, seq, &data, local),
            Command::ClusterEpoch { epoch } => self.restart_epoch(epoch),
            Command::TopicRestarted { topic, epoch } => {
                self.handle_topic_restarted(&topic, epoch, clients)
            }
            Command::Prepare {
                topics,
                client,
                batch,
            } => {
                let creator = Some(client.key());
                let result = self.owned.prepare(&topics, creator, self.now_ms);
                let command = Command::Prepared {
                    client,
                    batch,
                    result,
                };
                self.outgoing
                    .push_back((usize::from(client.shard), command));
            }
            Command::Prepared {
                client,
                batch,
                result,
            } => self.handle_prepared(client, batch, result, clients),
            Command::Subscribe {
                topic,
                subscriber,
                since,
            } => self.answer_subscribe(topic, subscriber, since),
            Command::ReplayMore {
                topic,
                subscriber,
                epoch,
                from,
            } => {
                let page = self.owned.replay_page(&topic, epoch, from);
                self.counters.replay_pages += 1;
                let command = Command::Replayed {
                    topic,
                    subscriber,
                    page,
                };
                self.outgoing
                    .push_back((usize::from(subscriber.shard), command));
            }
            Command::Replayed {
                topic,
                subscriber,
                page,
            } => self.handle_replayed(&topic, subscriber, page, clients),
            Command::Unsubscribe { topic, shard } => {
                let watched = self.event_filter.wants(EventKind::TopicVacated);
                let occupied = watched && self.owned.is_occupied(topic.as_bytes());
                self.owned
                    .unsubscribe(topic.as_bytes(), usize::from(shard), self.now_ms);
                if occupied && !self.owned.is_occupied(topic.as_bytes()) {
                    self.events.push_back(Event::TopicVacated { topic });
                }
            }
            Command::Deliver { message } => self.deliver(&message, clients),
            Command::Subscribed {
                topic,
                subscriber,
                answer,
            } => self.handle_subscribed(&topic, subscriber, answer, clients),
            Command::Published { reply, result, key } => {
                self.handle_published(reply, result, key.as_ref(), clients)
            }
        }
    }

    /// A send of the client in `slot` completed: once its queue is below half its limits, the
    /// messages conflation held for it are queued.
    pub fn handle_sent(&mut self, slot: u32, clients: &mut impl Clients) {
        if self.clients[slot as usize].held_count > 0 && !self.over_budget(clients.memory()) {
            self.release_held(slot, clients);
        }
        if self.clients[slot as usize].replaying_count > 0 {
            self.continue_replays(slot, clients);
        }
    }

    /// Once per turn of the shard: releases held messages of clients whose queue has room,
    /// including those that have nothing queued and so hear of no send (a reader conflated
    /// while the shard was over its budget gets the latest value as soon as it is back under).
    pub fn handle_turn(&mut self, clients: &mut impl Clients) {
        self.owned
            .expire_idle(self.now_ms, EXPIRY_VISITS_PER_TURN_MAX);
        if !self.catch_up.is_empty() {
            self.catch_up.take_due(self.now_ms, &mut self.caught_up);
            self.counters.cluster_catch_up_timeouts += self.caught_up.len() as u64;
            self.answer_held();
        }
        self.continue_all_replays(clients);
        if self.holding.is_empty() || self.over_budget(clients.memory()) {
            return;
        }
        let mut index = 0;
        let mut visited = 0;
        while index < self.holding.len() && visited < HOLDING_RELEASED_PER_TURN_MAX {
            visited += 1;
            let slot = self.holding[index];
            let client = &self.clients[slot as usize];
            if client.open && client.held_count > 0 {
                self.release_held(slot, clients);
            }
            let client = &mut self.clients[slot as usize];
            if client.open && client.held_count > 0 {
                index += 1;
            } else {
                client.listed_holding = false;
                self.holding.swap_remove(index);
            }
        }
    }

    fn client_ref(&self, slot: u32) -> ClientRef {
        ClientRef {
            shard: self.shard as u16,
            slot,
            generation: self.clients[slot as usize].generation,
        }
    }

    /// As the topic's owner: numbers the message, keeps it, and sends it to every shard with
    /// subscribers (this one included); answers the publisher when it waits for the seq or was
    /// refused.
    fn send_publish(
        &mut self,
        topic: TopicName,
        data: Bytes,
        reply: PublishReply,
        key: Option<IdempotencyKey>,
    ) {
        let owner = topic.owner(self.shards);
        let command = Command::Publish {
            topic,
            data,
            reply: Some(reply),
            key,
        };
        self.outgoing.push_back((owner, command));
    }

    /// As the topic's owner: numbers the message, keeps it, and sends it to every shard with
    /// subscribers (this one included); answers the publisher when it waits for the seq, asked
    /// for an acknowledgement (a key) or was refused. A key seen within the window is answered
    /// with its first seq, and nothing is published.
    fn publish(
        &mut self,
        topic: &TopicName,
        data: &[u8],
        reply: Option<PublishReply>,
        key: Option<IdempotencyKey>,
    ) {
        let seen = key
            .as_ref()
            .and_then(|key| self.idempotency.seq_of(topic, key, self.now_ms));
        let result = match seen {
            Some(seq) => {
                self.counters.duplicate_publishes += 1;
                Ok(seq)
            }
            None => self.publish_new(topic, data, reply),
        };
        if let (Ok(seq), None, Some(key)) = (result, seen, &key) {
            self.idempotency
                .remember(topic, key.clone(), seq, self.now_ms);
        }
        self.answer_publisher(reply, result, key);
    }

    /// Tells the publisher the seq when it waits for it or asked for an acknowledgement (a
    /// key), and always when its publish was refused.
    fn answer_publisher(
        &mut self,
        reply: Option<PublishReply>,
        result: Result<u64, OwnerError>,
        key: Option<IdempotencyKey>,
    ) {
        match reply {
            Some(reply) if reply.ticket.is_some() || result.is_err() || key.is_some() => {
                let shard = usize::from(reply.client.shard);
                let command = Command::Published { reply, result, key };
                self.outgoing.push_back((shard, command));
            }
            _ => {}
        }
    }

    fn publish_new(
        &mut self,
        topic: &TopicName,
        data: &[u8],
        reply: Option<PublishReply>,
    ) -> Result<u64, OwnerError> {
        let creator = reply.map(|reply| reply.client.key());
        let published = self.owned.publish(topic, data, creator, self.now_ms)?;
        self.counters.messages_published += 1;
        let seq = published.message.seq();
        if self.event_filter.wants_message(topic.as_bytes()) {
            let message = published.message.clone();
            self.events.push_back(Event::MessagePublished { message });
        }
        for shard in published.subscriber_shards.iter() {
            let message = published.message.clone();
            self.outgoing
                .push_back((shard, Command::Deliver { message }));
        }
        Ok(seq)
    }

    /// Clustered, as the topic's owner: checks the publish as a local one would be (the topic's
    /// creation within the client's allowance and the shard's table) and queues it for the
    /// bridge, which answers the publisher once JetStream numbered it.
    fn publish_to_cluster(
        &mut self,
        topic: TopicName,
        data: Bytes,
        reply: Option<PublishReply>,
        key: Option<IdempotencyKey>,
    ) {
        let creator = reply.map(|reply| reply.client.key());
        let topics = std::slice::from_ref(&topic);
        if let Err(error) = self.owned.prepare(topics, creator, self.now_ms) {
            self.answer_publisher(reply, Err(error), key);
            return;
        }
        self.cluster_publishes.push_back(ClusterPublish {
            topic,
            data,
            reply,
            key,
        });
    }

    /// Clustered, as the topic's owner: keeps a message JetStream numbered and sends it to
    /// every shard with subscribers, like one this shard numbered. Only the node that published
    /// it (`local`) records its `message.published`: every node reads every message, and the
    /// cluster's receivers want it once.
    fn ingest(&mut self, topic: &TopicName, seq: u64, data: &[u8], local: bool) {
        let published = match self.owned.ingest(topic, seq, data, self.now_ms) {
            Ok(Some(published)) => published,
            Ok(None) => {
                self.counters.cluster_duplicates += 1;
                return;
            }
            Err(_) => {
                self.counters.cluster_ingests_refused += 1;
                return;
            }
        };
        self.counters.messages_published += 1;
        if local && self.event_filter.wants_message(topic.as_bytes()) {
            let message = published.message.clone();
            self.events.push_back(Event::MessagePublished { message });
        }
        for shard in published.subscriber_shards.iter() {
            let message = published.message.clone();
            self.outgoing
                .push_back((shard, Command::Deliver { message }));
        }
        if !self.catch_up.is_empty() {
            self.catch_up
                .take_caught_up(topic, seq, &mut self.caught_up);
            self.counters.cluster_catch_ups += self.caught_up.len() as u64;
            self.answer_held();
        }
    }

    /// Clustered, as an owner: JetStream's history was lost; every owned topic starts again in
    /// `epoch`, and the shards with subscribers of one are told.
    fn restart_epoch(&mut self, epoch: Epoch) {
        // Held subscriptions name the old epoch: each is answered `reset` now.
        self.catch_up.take_all(&mut self.caught_up);
        self.counters.cluster_catch_up_timeouts += self.caught_up.len() as u64;
        self.answer_held();
        for (topic, shards) in self.owned.restart_epoch(epoch) {
            for shard in shards {
                let topic = topic.clone();
                self.outgoing
                    .push_back((shard, Command::TopicRestarted { topic, epoch }));
            }
        }
    }

    /// Clustered, as a subscribing shard: the topic's seqs start again at 0 in `epoch`; every
    /// subscriber gets `reset` (seq 0, the new epoch) and drops what conflation held for it.
    fn handle_topic_restarted(
        &mut self,
        topic: &TopicName,
        epoch: Epoch,
        clients: &mut impl Clients,
    ) {
        let Some(index) = self.subscribers.find(topic.as_bytes()) else {
            return;
        };
        self.subscribers.restart(index, epoch);
        for &slot in self.subscribers.subscribers(index) {
            let client = &mut self.clients[slot as usize];
            let subscription = client
                .subscriptions
                .iter_mut()
                .find(|subscription| subscription.topic == index);
            if subscription.is_some_and(|subscription| subscription.held.take().is_some()) {
                client.held_count -= 1;
            }
            self.counters.resets += 1;
            let reply = Reply::reset(&mut self.encoder, topic, 0, epoch);
            clients.reply(slot, &reply);
        }
    }

    /// A batch is published all or nothing: first every owner involved creates the batch's
    /// new topics (all or none, answering `Prepared`); only when all agreed are the items
    /// published, and then nothing can refuse them.
    fn prepare_batch(
        &mut self,
        slot: u32,
        items: Vec<(TopicName, Bytes)>,
        first_ticket: u32,
        key: Option<IdempotencyKey>,
        clients: &mut impl Clients,
    ) {
        let client = self.client_ref(slot);
        if self.batches.len() >= PENDING_BATCHES_MAX {
            self.counters.request_errors += 1;
            for index in 0..items.len() as u32 {
                let refusal = Err(OwnerError::BatchesInFlight);
                clients.answer_publish(slot, first_ticket.wrapping_add(index), refusal);
            }
            return;
        }
        let mut owners: Vec<(usize, Vec<TopicName>)> = Vec::new();
        for (topic, _) in &items {
            let owner = topic.owner(self.shards);
            match owners.iter_mut().find(|(shard, _)| *shard == owner) {
                Some((_, topics)) => topics.push(topic.clone()),
                None => owners.push((owner, vec![topic.clone()])),
            }
        }
        self.next_batch = self.next_batch.wrapping_add(1);
        let batch = self.next_batch;
        self.batches.insert(
            batch,
            PendingBatch {
                client,
                items,
                first_ticket,
                key,
                waiting: owners.len(),
                refused: None,
            },
        );
        for (owner, topics) in owners {
            let command = Command::Prepare {
                topics,
                client,
                batch,
            };
            self.outgoing.push_back((owner, command));
        }
    }

    /// An owner prepared (or refused) its part of a batch; once all answered, the batch is
    /// published, or every item answered with the refusal.
    fn handle_prepared(
        &mut self,
        client: ClientRef,
        batch: u32,
        result: Result<(), OwnerError>,
        clients: &mut impl Clients,
    ) {
        let Some(pending) = self.batches.get_mut(&batch) else {
            return;
        };
        pending.waiting -= 1;
        if let Err(error) = result {
            pending.refused = Some(error);
        }
        if pending.waiting > 0 {
            return;
        }
        let pending = self.batches.remove(&batch).expect("found above");
        debug_assert_eq!(pending.client, client);
        let client = pending.client;
        let record = &self.clients[client.slot as usize];
        if !record.open || record.generation != client.generation {
            return; // The client left; nothing waits for the answers.
        }
        if let Some(error) = pending.refused {
            self.counters.request_errors += 1;
            for index in 0..pending.items.len() as u32 {
                let ticket = pending.first_ticket.wrapping_add(index);
                clients.answer_publish(client.slot, ticket, Err(error));
            }
            return;
        }
        for (index, (topic, data)) in pending.items.into_iter().enumerate() {
            let reply = PublishReply {
                client,
                ticket: Some(pending.first_ticket.wrapping_add(index as u32)),
            };
            let key = pending.key.as_ref().map(|key| key.for_item(index));
            self.send_publish(topic, data, reply, key);
        }
    }

    fn subscribe(
        &mut self,
        slot: u32,
        topic: TopicName,
        since: Option<Since>,
        clients: &mut impl Clients,
    ) {
        let client = &mut self.clients[slot as usize];
        let existing = self.subscribers.find(topic.as_bytes()).and_then(|index| {
            let subscription = client
                .subscriptions
                .iter()
                .find(|subscription| subscription.topic == index)?;
            Some((index, subscription.is_pending()))
        });
        match existing {
            // Already subscribed: say so again with the seq it stands at (a replay would
            // duplicate what the client already got).
            Some((index, false)) => {
                let (seq, epoch) = (
                    self.subscribers.last_seq(index),
                    self.subscribers.epoch(index),
                );
                let reply = Reply::subscribed(&mut self.encoder, &topic, seq, epoch);
                clients.reply(slot, &reply);
            }
            Some((_, true)) => {} // The answer is on its way.
            None if client.subscriptions.len() >= self.config.subscriptions_per_connection_max => {
                self.counters.request_errors += 1;
                let reason = "subscriptions_per_connection_max reached";
                let reply = Reply::topic_error(&mut self.encoder, reason, &topic);
                clients.reply(slot, &reply);
            }
            None => {
                let index = self.subscribers.add_pending(&topic);
                // Up to four, room for one more at a time: many subscribers take one or two
                // topics, and the first growth would make four (128 bytes kept for the
                // connection's life).
                let subscriptions = &mut client.subscriptions;
                if subscriptions.len() == subscriptions.capacity() && subscriptions.capacity() < 4 {
                    subscriptions.reserve_exact(1);
                }
                client.subscriptions.push(Subscription {
                    topic: index,
                    position: POSITION_PENDING,
                    held: None,
                    replay: None,
                });
                let subscriber = self.client_ref(slot);
                let command = Command::Subscribe {
                    topic: topic.clone(),
                    subscriber,
                    since,
                };
                self.outgoing.push_back((topic.owner(self.shards), command));
            }
        }
    }

    /// Ends every subscription of `slot` whose topic `granted` does not allow, answering each
    /// with `{"op":"error","reason":"forbidden","topic":…}`.
    fn revoke_ungranted(&mut self, slot: u32, granted: &TopicPatterns, clients: &mut impl Clients) {
        let mut at = 0;
        while let Some(subscription) = self.clients[slot as usize].subscriptions.get(at) {
            let index = subscription.topic;
            let topic = self.subscribers.name(index);
            if granted.allows(topic.as_str()) {
                at += 1;
                continue;
            }
            // `drop_subscription` swap-removes: the one moved into `at` is looked at next.
            let reply = Reply::topic_error(&mut self.encoder, "forbidden", topic);
            clients.reply(slot, &reply);
            self.counters.subscriptions_revoked += 1;
            self.drop_subscription(slot, index);
        }
    }

    fn unsubscribe(&mut self, slot: u32, topic: &TopicName, clients: &mut impl Clients) {
        let reply = Reply::unsubscribed(&mut self.encoder, topic);
        clients.reply(slot, &reply);
        if let Some(index) = self.subscribers.find(topic.as_bytes()) {
            self.drop_subscription(slot, index);
        }
    }

    /// Ends `slot`'s subscription of topic `index`, if it has one, and tells the owner when the
    /// shard has no subscriber of the topic left.
    fn drop_subscription(&mut self, slot: u32, index: u32) {
        let client = &mut self.clients[slot as usize];
        let Some(at) = client
            .subscriptions
            .iter()
            .position(|subscription| subscription.topic == index)
        else {
            return;
        };
        let subscription = client.subscriptions.swap_remove(at);
        if subscription.held.is_some() {
            client.held_count -= 1;
        }
        if subscription.replay.is_some() {
            client.replaying_count -= 1;
        }
        if !subscription.is_pending() {
            if self.event_filter.wants(EventKind::SubscriptionRemoved) {
                let topic = self.subscribers.name(index).clone();
                let connection = self.connection_id(slot);
                self.events
                    .push_back(Event::SubscriptionRemoved { topic, connection });
            }
            let moved = self.subscribers.deactivate(index, subscription.position);
            if let Some(moved_slot) = moved {
                let record = self.clients[moved_slot as usize]
                    .subscriptions
                    .iter_mut()
                    .find(|record| record.topic == index)
                    .expect("a subscriber records its subscription");
                record.position = subscription.position;
            }
        }
        self.release_if_unused(index);
    }

    fn release_if_unused(&mut self, index: u32) {
        if !self.subscribers.is_unused(index) {
            return;
        }
        let topic = self.subscribers.release(index);
        let owner = topic.owner(self.shards);
        let shard = self.shard as u16;
        self.outgoing
            .push_back((owner, Command::Unsubscribe { topic, shard }));
    }

    /// The owner answered a subscription of one of this shard's clients.
    fn handle_subscribed(
        &mut self,
        topic: &TopicName,
        subscriber: ClientRef,
        answer: Result<SubscribeAnswer, OwnerError>,
        clients: &mut impl Clients,
    ) {
        let index = self
            .subscribers
            .find(topic.as_bytes())
            .expect("a pending subscription keeps its topic");
        self.subscribers.answer_arrived(index);
        let slot = subscriber.slot;
        let client = &self.clients[slot as usize];
        let waiting = (client.open
            && client.generation == subscriber.generation
            && clients.takes_messages(slot))
        .then(|| {
            client
                .subscriptions
                .iter()
                .position(|record| record.topic == index && record.is_pending())
        })
        .flatten();
        if let Some(at) = waiting {
            match answer {
                Ok(answer) => self.activate(slot, at, index, topic, answer, clients),
                Err(error) => {
                    self.clients[slot as usize].subscriptions.swap_remove(at);
                    self.counters.request_errors += 1;
                    let reply = Reply::topic_error(&mut self.encoder, error.reason(), topic);
                    clients.reply(slot, &reply);
                }
            }
        }
        self.release_if_unused(index);
    }

    /// Puts a client among a topic's subscribers and queues `subscribed`, then `reset` or the
    /// first page of the replay. Further pages are asked for as the client's queue drains;
    /// live messages that arrive meanwhile wait behind the replay.
    fn activate(
        &mut self,
        slot: u32,
        at: usize,
        index: u32,
        topic: &TopicName,
        answer: SubscribeAnswer,
        clients: &mut impl Clients,
    ) {
        let position = self
            .subscribers
            .activate(index, slot, answer.latest, answer.epoch);
        if self.event_filter.wants(EventKind::SubscriptionCreated) {
            let connection = self.connection_id(slot);
            let topic = topic.clone();
            self.events
                .push_back(Event::SubscriptionCreated { topic, connection });
        }
        let reply = Reply::subscribed(&mut self.encoder, topic, answer.latest, answer.epoch);
        clients.reply(slot, &reply);
        if answer.reset {
            self.counters.resets += 1;
            let reply = Reply::reset(&mut self.encoder, topic, answer.latest, answer.epoch);
            clients.reply(slot, &reply);
        } else if !answer.messages.is_empty() {
            self.counters.replays += 1;
        }
        self.counters.replayed_messages += answer.messages.len() as u64;
        for message in &answer.messages {
            clients.push(slot, message);
        }
        let client = &mut self.clients[slot as usize];
        let subscription = &mut client.subscriptions[at];
        subscription.position = position;
        if let Some(next) = answer.replay_next {
            subscription.replay = Some(Box::new(Replay {
                epoch: answer.epoch,
                next,
                requested: false,
            }));
            client.replaying_count += 1;
            self.replaying.push(slot);
            self.continue_replays(slot, clients);
        }
    }

    /// As the topic's owner: answers a subscription (creating the topic if it is new, within
    /// the subscriber's creation allowance); clustered, holds one whose `since` this node has
    /// not read yet (`catch_up`).
    fn answer_subscribe(&mut self, topic: TopicName, subscriber: ClientRef, since: Option<Since>) {
        let ahead = since.filter(|since| self.clustered && self.owned.is_behind(&topic, *since));
        let Some(ahead) = ahead else {
            return self.answer_subscribe_now(topic, subscriber, since);
        };
        match self.catch_up.hold(topic, subscriber, ahead, self.now_ms) {
            Ok(()) => self.counters.cluster_catch_ups_held += 1,
            Err((topic, subscriber, since)) => {
                self.counters.cluster_catch_up_overflows += 1;
                self.answer_subscribe_now(topic, subscriber, Some(since));
            }
        }
    }

    /// Answers the subscriptions `catch_up` let go, in the order they came.
    fn answer_held(&mut self) {
        let mut held = std::mem::take(&mut self.caught_up);
        for waiting in held.drain(..) {
            self.answer_subscribe_now(waiting.topic, waiting.subscriber, Some(waiting.since));
        }
        self.caught_up = held;
    }

    fn answer_subscribe_now(
        &mut self,
        topic: TopicName,
        subscriber: ClientRef,
        since: Option<Since>,
    ) {
        let snapshot = self.config.wants_snapshot(topic.as_str());
        let shard = usize::from(subscriber.shard);
        let creator = Some(subscriber.key());
        let watched = self.event_filter.wants(EventKind::TopicOccupied);
        let occupied = watched && self.owned.is_occupied(topic.as_bytes());
        let answer = self
            .owned
            .subscribe(&topic, shard, since, snapshot, creator, self.now_ms);
        if watched && !occupied && answer.is_ok() {
            let topic = topic.clone();
            self.events.push_back(Event::TopicOccupied { topic });
        }
        let command = Command::Subscribed {
            topic,
            subscriber,
            answer,
        };
        self.outgoing.push_back((shard, command));
    }

    /// Asks for the next page of each of `slot`'s replays that waits, once its queue is below
    /// half its limits.
    fn continue_replays(&mut self, slot: u32, clients: &mut impl Clients) {
        if !clients.takes_messages(slot) || !clients.is_within(slot, self.queue_limits.half()) {
            return;
        }
        let subscriber = self.client_ref(slot);
        for subscription in &mut self.clients[slot as usize].subscriptions {
            let Some(replay) = subscription.replay.as_mut() else {
                continue;
            };
            if replay.requested {
                continue;
            }
            replay.requested = true;
            let topic = self.subscribers.name(subscription.topic).clone();
            let owner = topic.owner(self.shards);
            let command = Command::ReplayMore {
                topic,
                subscriber,
                epoch: replay.epoch,
                from: replay.next,
            };
            self.outgoing.push_back((owner, command));
        }
    }

    /// Once per turn: asks for the next pages of replays whose clients' queues drained without
    /// a send to tell of it, and drops clients done replaying from the list.
    fn continue_all_replays(&mut self, clients: &mut impl Clients) {
        let mut index = 0;
        while index < self.replaying.len() {
            let slot = self.replaying[index];
            let client = &self.clients[slot as usize];
            if client.open && client.replaying_count > 0 {
                self.continue_replays(slot, clients);
                index += 1;
            } else {
                self.replaying.swap_remove(index);
            }
        }
    }

    /// A page of a replay came: it is queued; the replay ends when the page reaches the topic's
    /// latest (or what it asked for was lost: `reset` and the latest as a snapshot), and the
    /// live messages after it follow as they come.
    fn handle_replayed(
        &mut self,
        topic: &TopicName,
        subscriber: ClientRef,
        page: ReplayPage,
        clients: &mut impl Clients,
    ) {
        let slot = subscriber.slot;
        let Some(index) = self.subscribers.find(topic.as_bytes()) else {
            return;
        };
        let client = &mut self.clients[slot as usize];
        if !client.open || client.generation != subscriber.generation {
            return;
        }
        let Some(subscription) = client
            .subscriptions
            .iter_mut()
            .find(|subscription| subscription.topic == index && subscription.replay.is_some())
        else {
            return; // Unsubscribed meanwhile.
        };
        let replay = subscription.replay.as_mut().expect("found with a replay");
        replay.requested = false;
        let epoch = replay.epoch;
        match page.next {
            Some(next) if !page.lost => replay.next = next,
            _ => {
                subscription.replay = None;
                client.replaying_count -= 1;
            }
        }
        if page.lost {
            self.counters.replays_lost += 1;
            let reply = Reply::reset(&mut self.encoder, topic, page.latest, epoch);
            clients.reply(slot, &reply);
        } else {
            self.counters.replayed_messages += page.messages.len() as u64;
        }
        for message in &page.messages {
            clients.push(slot, message);
        }
        if self.clients[slot as usize].replaying_count > 0 {
            self.continue_replays(slot, clients);
        }
    }

    /// The owner numbered (or refused) a publish of one of this shard's clients.
    fn handle_published(
        &mut self,
        reply: PublishReply,
        result: Result<u64, OwnerError>,
        key: Option<&IdempotencyKey>,
        clients: &mut impl Clients,
    ) {
        let slot = reply.client.slot;
        let client = &self.clients[slot as usize];
        if !client.open || client.generation != reply.client.generation {
            return;
        }
        if let Some(ticket) = reply.ticket {
            clients.answer_publish(slot, ticket, result);
            return;
        }
        let reply = match (result, key) {
            (Ok(seq), Some(key)) => Reply::published(&mut self.encoder, key.as_str(), seq),
            (Ok(_), None) => return,
            (Err(error), Some(key)) => {
                self.counters.request_errors += 1;
                Reply::publish_error(&mut self.encoder, error.reason(), key.as_str())
            }
            (Err(error), None) => {
                self.counters.request_errors += 1;
                Reply::error(&mut self.encoder, error.reason())
            }
        };
        clients.reply(slot, &reply);
    }

    /// Queues `message` to every subscriber of its topic on this shard, applying the
    /// slow-consumer policy to those whose queue is full, and, when the shard's queues are
    /// over their budget, to those that hold more than their share of it.
    fn deliver(&mut self, message: &Message, clients: &mut impl Clients) {
        let Some(index) = self.subscribers.find(message.topic()) else {
            return; // The last subscriber left while the message was on its way.
        };
        self.subscribers.set_last_seq(index, message.seq());
        let mut delivery = Delivery {
            message,
            topic: index,
            limits: self.queue_limits,
            policy: self.config.slow_consumer_policy,
            budget_bytes: self.config.outbound_shard_bytes_max as u64,
            holding: &mut self.holding,
            counters: &mut self.counters,
        };
        let subscribers = self.subscribers.subscribers(index);
        for (position, &slot) in subscribers.iter().enumerate() {
            if let Some(&ahead) = subscribers.get(position + PREFETCH_DISTANCE) {
                clients.prefetch(ahead);
                self.clients.prefetch(ahead as usize);
            }
            delivery.reach(slot, &mut self.clients[slot as usize], clients);
        }
    }

    /// Queues the messages conflation held for `slot` once its queue is below half its limits.
    fn release_held(&mut self, slot: u32, clients: &mut impl Clients) {
        if !clients.is_within(slot, self.queue_limits.half()) {
            return;
        }
        let client = &mut self.clients[slot as usize];
        for subscription in &mut client.subscriptions {
            if let Some(message) = subscription.held.take() {
                clients.push(slot, &message);
            }
        }
        client.held_count = 0;
    }
}
