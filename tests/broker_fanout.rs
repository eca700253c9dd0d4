//! The pub/sub policy tested in memory, without sockets or threads, in the manner of
//! quinn-proto's `Pair`: several shards' brokers (`Fanout`) on a simulated network that carries
//! their commands in order per pair of shards (as the mailboxes do) but interleaves the pairs as
//! a seeded random schedule says, and clients that are plain queues the test drains when it
//! likes. Every figure here is exact: no clock, no scheduler, no luck.

use std::collections::VecDeque;

use bytes::Bytes;
use ringcast::broker::config::{BrokerConfig, SlowConsumerPolicy};
use ringcast::broker::event::{ConnectionId, EventKinds};
use ringcast::broker::idempotency::IdempotencyKey;
use ringcast::broker::owner::{OwnerError, Since};
use ringcast::broker::topic::Epoch;
use ringcast::broker::{
    BrokerRequest, Clients, Command, Event, EventFilter, EventKind, Fanout, Message, QueueLimits,
    Reply, ReplyKind, ShardMemory, TopicName, owner_shard,
};
use ringcast::protocol::CloseCode;

/// Connection slots per simulated shard.
const CLIENTS_PER_SHARD: usize = 64;

/// What a client got, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Received {
    Message { topic: String, seq: u64 },
    Reply { kind: ReplyKind, body: String },
}

/// A queued item: what it is, its bytes, and the message it shares (counted once per shard).
#[derive(Debug)]
struct Queued {
    item: Received,
    bytes: usize,
    shared: Option<Message>,
}

/// A client as the broker sees it: a queue with limits, nothing more.
#[derive(Debug, Default)]
struct FakeClient {
    open: bool,
    /// Queued and not yet "sent": what counts against the queue limits.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Taken off the queue by `Network::drain`, in order.
    received: Vec<Received>,
    closed_with: Option<(CloseCode, &'static str)>,
    publish_answers: Vec<(u32, Result<u64, OwnerError>)>,
}

#[derive(Debug, Default)]
struct FakeClients {
    clients: Vec<FakeClient>,
    /// Shared messages queued anywhere, by the address of their body: holders and bytes.
    shared: std::collections::HashMap<usize, (u32, usize)>,
    /// What every queue holds, each shared message once.
    memory_bytes: u64,
}

impl FakeClients {
    fn enqueue(&mut self, client: u32, item: Received, bytes: usize, shared: Option<Message>) {
        match &shared {
            Some(message) => {
                let key = message.body().as_ptr() as usize;
                let entry = self.shared.entry(key).or_insert((0, bytes));
                if entry.0 == 0 {
                    self.memory_bytes += bytes as u64;
                }
                entry.0 += 1;
            }
            None => self.memory_bytes += bytes as u64,
        }
        let client = &mut self.clients[client as usize];
        client.queued_bytes += bytes;
        client.queue.push_back(Queued {
            item,
            bytes,
            shared,
        });
    }

    /// Takes the front of `client`'s queue, as a send would.
    fn dequeue(&mut self, client: u32) -> Option<Queued> {
        let queued = self.clients[client as usize].queue.pop_front()?;
        self.clients[client as usize].queued_bytes -= queued.bytes;
        match &queued.shared {
            Some(message) => {
                let key = message.body().as_ptr() as usize;
                let entry = self.shared.get_mut(&key).expect("held");
                entry.0 -= 1;
                if entry.0 == 0 {
                    self.memory_bytes -= entry.1 as u64;
                    self.shared.remove(&key);
                }
            }
            None => self.memory_bytes -= queued.bytes as u64,
        }
        Some(queued)
    }

    /// The bytes every queue holds, each shared message once (the shard's ledger's rule).
    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}

fn received_message(message: &Message) -> Received {
    Received::Message {
        topic: String::from_utf8(message.topic().to_vec()).unwrap(),
        seq: message.seq(),
    }
}

impl Clients for FakeClients {
    fn takes_messages(&self, client: u32) -> bool {
        let client = &self.clients[client as usize];
        client.open && client.closed_with.is_none()
    }

    fn offer(&mut self, client: u32, message: &Message, limits: QueueLimits) -> bool {
        let bytes = message.websocket_frame().len();
        let record = &self.clients[client as usize];
        let over = record.queued_bytes + bytes > limits.bytes_max
            || record.queue.len() >= limits.frames_max;
        if over && !record.queue.is_empty() {
            return false;
        }
        self.push(client, message);
        true
    }

    fn push(&mut self, client: u32, message: &Message) {
        let bytes = message.websocket_frame().len();
        let item = received_message(message);
        self.enqueue(client, item, bytes, Some(message.clone()));
    }

    fn queued_bytes(&self, client: u32) -> usize {
        self.clients[client as usize].queued_bytes
    }

    fn memory(&self) -> ShardMemory {
        ShardMemory {
            bytes: self.memory_bytes(),
            nonempty_queues: self
                .clients
                .iter()
                .filter(|client| !client.queue.is_empty())
                .count() as u32,
        }
    }

    fn is_within(&self, client: u32, limits: QueueLimits) -> bool {
        let client = &self.clients[client as usize];
        client.queued_bytes <= limits.bytes_max && client.queue.len() <= limits.frames_max
    }

    fn reply(&mut self, client: u32, reply: &Reply) {
        let body = String::from_utf8(reply.body().to_vec()).unwrap();
        let bytes = reply.websocket_frame().len();
        let item = Received::Reply {
            kind: reply.kind,
            body,
        };
        self.enqueue(client, item, bytes, None);
    }

    fn answer_publish(&mut self, client: u32, ticket: u32, result: Result<u64, OwnerError>) {
        self.clients[client as usize]
            .publish_answers
            .push((ticket, result));
    }

    fn close(&mut self, client: u32, code: CloseCode, reason: &'static str) {
        self.clients[client as usize].closed_with = Some((code, reason));
    }
}

/// One simulated shard: its broker and its clients.
struct SimulatedShard {
    fanout: Fanout,
    clients: FakeClients,
}

/// Several shards and the commands in flight between them: one FIFO per (from, to) pair, as
/// the mailboxes keep order per pair.
struct Network {
    shards: Vec<SimulatedShard>,
    in_flight: Vec<Vec<VecDeque<Command>>>,
    random: fastrand::Rng,
    /// The events the brokers decided (for the webhooks), with the shard that decided each,
    /// in the order they were taken.
    events: Vec<(usize, Event)>,
}

impl Network {
    fn new(shard_count: usize, config: &BrokerConfig, limits: QueueLimits, seed: u64) -> Network {
        let shards = (0..shard_count)
            .map(|shard| SimulatedShard {
                fanout: Fanout::new(
                    config,
                    limits,
                    shard,
                    shard_count,
                    CLIENTS_PER_SHARD,
                    seed + shard as u64,
                ),
                clients: FakeClients {
                    clients: (0..CLIENTS_PER_SHARD)
                        .map(|_| FakeClient::default())
                        .collect(),
                    ..FakeClients::default()
                },
            })
            .collect();
        let in_flight = (0..shard_count)
            .map(|_| (0..shard_count).map(|_| VecDeque::new()).collect())
            .collect();
        Network {
            shards,
            in_flight,
            random: fastrand::Rng::with_seed(seed),
            events: Vec::new(),
        }
    }

    fn connect(&mut self, shard: usize, slot: u32) {
        self.shards[shard].fanout.open_client(slot, 1);
        self.shards[shard].clients.clients[slot as usize].open = true;
    }

    fn disconnect(&mut self, shard: usize, slot: u32) {
        let clients = &mut self.shards[shard].clients;
        clients.clients[slot as usize].open = false;
        while clients.dequeue(slot).is_some() {}
        self.shards[shard].fanout.close_client(slot);
        self.collect(shard);
    }

    fn request(&mut self, shard: usize, slot: u32, request: BrokerRequest) {
        let simulated = &mut self.shards[shard];
        simulated
            .fanout
            .handle_request(slot, request, &mut simulated.clients);
        self.collect(shard);
    }

    fn publish(&mut self, shard: usize, slot: u32, topic: &str, data: &str) {
        let request = BrokerRequest::Publish {
            topic: name(topic),
            data: Bytes::copy_from_slice(data.as_bytes()),
            ticket: None,
            key: None,
        };
        self.request(shard, slot, request);
    }

    fn subscribe(&mut self, shard: usize, slot: u32, topic: &str, since: Option<u64>) {
        let since = since.map(|seq| Since { seq, epoch: None });
        let request = BrokerRequest::Subscribe {
            topic: name(topic),
            since,
        };
        self.request(shard, slot, request);
    }

    /// Moves the commands `shard`'s broker made onto the network.
    fn collect(&mut self, shard: usize) {
        while let Some((target, command)) = self.shards[shard].fanout.poll_command() {
            self.in_flight[shard][target].push_back(command);
        }
        while let Some(event) = self.shards[shard].fanout.poll_event() {
            self.events.push((shard, event));
        }
    }

    /// Delivers one command from a randomly chosen non-empty pair; false when none is left.
    fn step(&mut self) -> bool {
        let pairs: Vec<(usize, usize)> = (0..self.shards.len())
            .flat_map(|from| (0..self.shards.len()).map(move |to| (from, to)))
            .filter(|&(from, to)| !self.in_flight[from][to].is_empty())
            .collect();
        if pairs.is_empty() {
            return false;
        }
        let (from, to) = pairs[self.random.usize(..pairs.len())];
        let command = self.in_flight[from][to].pop_front().unwrap();
        let simulated = &mut self.shards[to];
        simulated
            .fanout
            .handle_command(command, &mut simulated.clients);
        self.collect(to);
        true
    }

    /// Delivers every command in flight, and what they beget.
    fn settle(&mut self) {
        while self.step() {}
    }

    /// The client reads everything queued to it (the broker hears of each send).
    fn drain(&mut self, shard: usize, slot: u32) {
        let simulated = &mut self.shards[shard];
        while let Some(queued) = simulated.clients.dequeue(slot) {
            simulated.clients.clients[slot as usize]
                .received
                .push(queued.item);
            simulated.fanout.handle_sent(slot, &mut simulated.clients);
        }
        self.collect(shard);
    }

    /// One turn of the shard's loop.
    fn turn(&mut self, shard: usize) {
        let simulated = &mut self.shards[shard];
        simulated.fanout.handle_turn(&mut simulated.clients);
        self.collect(shard);
    }

    fn received(&self, shard: usize, slot: u32) -> &[Received] {
        &self.shards[shard].clients.clients[slot as usize].received
    }

    /// The seqs of `topic` a client received, in order.
    fn seqs(&self, shard: usize, slot: u32, topic: &str) -> Vec<u64> {
        self.received(shard, slot)
            .iter()
            .filter_map(|item| match item {
                Received::Message { topic: got, seq } if got == topic => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn replies(&self, shard: usize, slot: u32) -> Vec<serde_json::Value> {
        self.received(shard, slot)
            .iter()
            .filter_map(|item| match item {
                Received::Reply { body, .. } => Some(serde_json::from_str(body).unwrap()),
                _ => None,
            })
            .collect()
    }
}

fn name(topic: &str) -> TopicName {
    TopicName::copy_from(topic.as_bytes(), 128).unwrap()
}

fn roomy() -> QueueLimits {
    QueueLimits {
        bytes_max: 1 << 30,
        frames_max: 1 << 20,
    }
}

/// A topic owned by `shard` among `shards`, found by trying names.
fn topic_owned_by(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|index| format!("{prefix}{index}"))
        .find(|topic| owner_shard(topic.as_bytes(), shards) == shard)
        .unwrap()
}

/// Proves one gap-free seq space per topic, in order, for every subscriber on every shard,
/// with publishers of the same topics on every shard and commands interleaved across pairs of
/// shards in many random schedules.
#[test]
fn cross_shard_order_without_gaps() {
    const SHARDS: usize = 4;
    const PUBLISHES_PER_PUBLISHER: u64 = 25;
    let topics: Vec<String> = (0..SHARDS)
        .map(|shard| topic_owned_by(shard, SHARDS, "T"))
        .collect();
    for seed in 0..20 {
        let mut network = Network::new(SHARDS, &BrokerConfig::default(), roomy(), seed);
        for shard in 0..SHARDS {
            for slot in 0..3 {
                network.connect(shard, slot);
            }
            // Slot 0 subscribes to every topic; slots 1 and 2 publish.
            for topic in &topics {
                network.subscribe(shard, 0, topic, None);
            }
        }
        network.settle();
        for round in 0..PUBLISHES_PER_PUBLISHER {
            for shard in 0..SHARDS {
                for topic in &topics {
                    network.publish(shard, 1, topic, &round.to_string());
                    network.publish(shard, 2, topic, &round.to_string());
                }
                // Part of the traffic is delivered while more is published.
                for _ in 0..network.random.usize(0..8) {
                    network.step();
                }
            }
        }
        network.settle();
        let expected: Vec<u64> = (1..=2 * SHARDS as u64 * PUBLISHES_PER_PUBLISHER).collect();
        for shard in 0..SHARDS {
            network.drain(shard, 0);
            for topic in &topics {
                assert_eq!(network.seqs(shard, 0, topic), expected, "seed {seed}");
            }
        }
    }
}

/// What the owner answers a subscription with `since` when the topic is at `latest` and
/// history keeps the last `kept` messages: whether it is a reset, and the seqs it replays (for a
/// reset, the latest as a snapshot). The model the broker is checked against.
fn replay_model(since: Option<u64>, latest: u64, kept: u64) -> (bool, Vec<u64>) {
    let oldest_kept = latest.saturating_sub(kept - 1).max(1);
    match since {
        None => (false, vec![]),
        Some(since) if since == latest => (false, vec![]),
        Some(since) if since < latest && since + 1 >= oldest_kept => {
            (false, (since + 1..=latest).collect())
        }
        Some(_) => (true, vec![latest]),
    }
}

/// Proves replay at every seam, with the subscriber on another shard than the owner and
/// publishes racing the subscriptions (so the owner answers at seq 10, 11 or 12): `since` =
/// latest, inside history, the oldest kept, before history, ahead of the topic, and none. Each
/// client sees `subscribed` at seq S, then exactly what the model says (a replay up to S, or
/// `reset` and S as a snapshot), then S+1, S+2, … live: no gap and no duplicate at the seam.
#[test]
fn replay_seams_across_shards() {
    const SHARDS: usize = 2;
    const KEPT: u64 = 4;
    let config = BrokerConfig {
        history_messages_max: KEPT as usize,
        ..BrokerConfig::default()
    };
    let topic = topic_owned_by(0, SHARDS, "R");
    let cases = [Some(10), Some(8), Some(6), Some(5), Some(11), None];
    let mut answered_at = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let mut network = Network::new(SHARDS, &config, roomy(), seed);
        network.connect(0, 0);
        for round in 1..=10 {
            network.publish(0, 0, &topic, &round.to_string());
        }
        network.settle();
        for (slot, since) in cases.iter().enumerate() {
            network.connect(1, slot as u32 + 1);
            network.subscribe(1, slot as u32 + 1, &topic, *since);
        }
        // Two publishes race the subscriptions on their way to the owner.
        network.publish(0, 0, &topic, "11");
        for _ in 0..network.random.usize(0..4) {
            network.step();
        }
        network.publish(0, 0, &topic, "12");
        network.settle();
        for (slot, since) in cases.iter().enumerate() {
            let slot = slot as u32 + 1;
            network.drain(1, slot);
            let replies = network.replies(1, slot);
            assert_eq!(replies[0]["op"], "subscribed", "since {since:?}");
            let at = replies[0]["seq"].as_u64().unwrap();
            answered_at.insert(at);
            let (reset, mut expected) = replay_model(*since, at, KEPT);
            let got_reset = replies.iter().any(|reply| reply["op"] == "reset");
            assert_eq!(got_reset, reset, "since {since:?} at {at}");
            expected.extend(at + 1..=12);
            let seqs = network.seqs(1, slot, &topic);
            assert_eq!(
                seqs, expected,
                "since {since:?}, answered at {at}, seed {seed}"
            );
        }
    }
    assert!(
        answered_at.len() > 1,
        "the races covered several seams: {answered_at:?}"
    );
}

/// Proves a long replay is paced by the subscriber's queue: with 500 messages in history and
/// publishing going on, a subscriber on another shard with room for 32 messages never has
/// more than its limit plus one page queued, and ends with every seq exactly once, in order:
/// the replay, then the live messages that waited behind it.
#[test]
fn replay_is_paced_by_the_queue_and_seamless() {
    const SHARDS: usize = 2;
    let config = BrokerConfig {
        history_messages_max: 1024,
        ..BrokerConfig::default()
    };
    let limits = QueueLimits {
        bytes_max: 1 << 20,
        frames_max: 32,
    };
    let topic = topic_owned_by(0, SHARDS, "P");
    let mut network = Network::new(SHARDS, &config, limits, 5);
    network.connect(0, 0);
    for round in 1..=500 {
        network.publish(0, 0, &topic, &round.to_string());
    }
    network.settle();
    network.connect(1, 1);
    network.subscribe(1, 1, &topic, Some(0));
    let mut round = 500;
    let mut queued_max = 0;
    for step in 0..2_000 {
        if step % 7 == 0 && round < 700 {
            round += 1;
            network.publish(0, 0, &topic, &round.to_string());
        }
        network.step();
        if step % 5 == 0 {
            network.turn(1);
        }
        queued_max = queued_max.max(network.shards[1].clients.clients[1].queue.len());
        if step % 3 == 0 {
            // The client reads one message.
            let simulated = &mut network.shards[1];
            if let Some(queued) = simulated.clients.dequeue(1) {
                simulated.clients.clients[1].received.push(queued.item);
                simulated.fanout.handle_sent(1, &mut simulated.clients);
            }
            network.collect(1);
        }
    }
    while round < 700 {
        round += 1;
        network.publish(0, 0, &topic, &round.to_string());
    }
    for _ in 0..100 {
        network.settle();
        network.turn(1);
        network.drain(1, 1);
    }
    assert!(queued_max <= 32 + 64 + 2, "queued at most {queued_max}");
    assert_eq!(network.seqs(1, 1, &topic), (1..=700).collect::<Vec<_>>());
    assert!(network.shards[0].fanout.counters().replay_pages > 1);
}

/// A network of one shard whose subscriber (slot 1) has room for `frames_max` messages, a
/// publisher (slot 0), and 10 messages published to a topic the subscriber never reads.
fn slow_subscriber(policy: SlowConsumerPolicy, frames_max: usize) -> Network {
    let config = BrokerConfig {
        slow_consumer_policy: policy,
        ..BrokerConfig::default()
    };
    let limits = QueueLimits {
        bytes_max: 1 << 20,
        frames_max,
    };
    let mut network = Network::new(1, &config, limits, 1);
    network.connect(0, 0);
    network.connect(0, 1);
    network.subscribe(0, 1, "Q", None);
    network.settle();
    network.drain(0, 1); // The `subscribed` reply.
    for round in 1..=10 {
        network.publish(0, 0, "Q", &round.to_string());
    }
    network.settle();
    network
}

/// Proves the drop policy drops the newest messages once the queue is full, counts each, and
/// leaves the subscriber open.
#[test]
fn drop_policy_drops_the_newest() {
    let mut network = slow_subscriber(SlowConsumerPolicy::Drop, 3);
    network.drain(0, 1);
    assert_eq!(network.seqs(0, 1, "Q"), [1, 2, 3]);
    let counters = network.shards[0].fanout.counters();
    assert_eq!((counters.deliveries, counters.slow_consumer_drops), (3, 7));
    assert_eq!(network.shards[0].clients.clients[1].closed_with, None);
}

/// Proves the conflate policy keeps only the newest message past a full queue, replaces older
/// held ones (counted), and releases it once the queue drains, so the subscriber ends with the
/// latest seq and sees seqs only move forward.
#[test]
fn conflate_policy_ends_with_the_latest() {
    let mut network = slow_subscriber(SlowConsumerPolicy::Conflate, 3);
    network.drain(0, 1);
    // Draining the three queued messages releases the held one (the newest, 10).
    network.drain(0, 1);
    assert_eq!(network.seqs(0, 1, "Q"), [1, 2, 3, 10]);
    let counters = network.shards[0].fanout.counters();
    assert_eq!(counters.slow_consumer_conflations, 6, "4..9 replaced");
    // Later messages flow normally again, in order after the conflated one.
    network.publish(0, 0, "Q", "11");
    network.settle();
    network.drain(0, 1);
    assert_eq!(network.seqs(0, 1, "Q"), [1, 2, 3, 10, 11]);
}

/// Proves the disconnect policy closes a subscriber whose queue is full with 1008 "slow
/// consumer", once, and delivers nothing more to it.
#[test]
fn disconnect_policy_closes_with_1008() {
    let mut network = slow_subscriber(SlowConsumerPolicy::Disconnect, 3);
    let client = &network.shards[0].clients.clients[1];
    assert_eq!(
        client.closed_with,
        Some((CloseCode::POLICY_VIOLATION, "slow consumer"))
    );
    assert_eq!(network.shards[0].fanout.counters().slow_consumer_closes, 1);
    network.drain(0, 1);
    assert_eq!(network.seqs(0, 1, "Q"), [1, 2, 3]);
}

/// Proves the budget falls on the slow, counting shared messages once: 300 subscribers of a
/// busy topic that never read hold the same messages (counted once), and once their queues
/// pass the shard's budget they, and only they, are conflated; a reader of the same topic and
/// a reader of another topic, draining after every tick, get every seq.
#[test]
fn the_budget_falls_on_the_slow_and_counts_shared_messages_once() {
    const ATTACKERS: u32 = 40;
    let config = BrokerConfig {
        outbound_shard_bytes_max: 4_000,
        ..BrokerConfig::default()
    };
    let mut network = Network::new(1, &config, roomy(), 1);
    let (publisher, reader, other_reader) = (0, 1, 2);
    for slot in 0..3 + ATTACKERS {
        network.connect(0, slot);
    }
    network.subscribe(0, reader, "BUSY", None);
    network.subscribe(0, other_reader, "CALM", None);
    for attacker in 3..3 + ATTACKERS {
        network.subscribe(0, attacker, "BUSY", None);
    }
    network.settle();
    for slot in 0..3 + ATTACKERS {
        network.drain(0, slot);
    }
    for round in 1..=200 {
        network.publish(0, publisher, "BUSY", &round.to_string());
        network.publish(0, publisher, "CALM", &round.to_string());
        network.settle();
        network.drain(0, reader);
        network.drain(0, other_reader);
        let memory = network.shards[0].clients.memory_bytes();
        // One shared message per attacker queue entry would be 40 × 200 × ~40 B; counted once
        // it stays near the budget.
        assert!(memory < 2 * 4_000 + 1_000, "round {round}: {memory} bytes");
    }
    let all: Vec<u64> = (1..=200).collect();
    assert_eq!(network.seqs(0, reader, "BUSY"), all);
    assert_eq!(network.seqs(0, other_reader, "CALM"), all);
    let counters = network.shards[0].fanout.counters();
    assert!(
        counters.slow_consumer_conflations > 0,
        "the attackers were conflated"
    );
    // Every attacker got a prefix and holds the latest: nothing older is queued after it.
    network.drain(0, 3);
    network.turn(0);
    network.drain(0, 3);
    let seqs = network.seqs(0, 3, "BUSY");
    assert_eq!(seqs.last(), Some(&200), "{seqs:?}");
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]));
}

/// Proves a value held by conflation while the shard was over its budget goes out as soon as
/// the shard is back under it, with no further publish: a client whose queue is empty hears of
/// no send, so the shard's turn releases it.
#[test]
fn a_held_value_goes_out_when_the_budget_recovers() {
    let config = BrokerConfig {
        outbound_shard_bytes_max: 1_000,
        ..BrokerConfig::default()
    };
    let mut network = Network::new(1, &config, roomy(), 1);
    for slot in 0..3 {
        network.connect(0, slot);
    }
    network.subscribe(0, 1, "B", None);
    network.subscribe(0, 2, "C", None);
    network.settle();
    network.drain(0, 1);
    network.drain(0, 2);
    // Client 2 stops reading topic C until its queue alone is over the budget.
    for round in 1..=40 {
        network.publish(0, 0, "C", &format!("\"{:040}\"", round));
    }
    network.settle();
    // Client 1 has read nothing of B yet: B's messages queue behind client 2's backlog in
    // the shard's budget, and client 1 holds more than its share only after a few.
    for round in 1..=20 {
        network.publish(0, 0, "B", &format!("\"{:040}\"", round));
    }
    network.settle();
    let held_before = network.shards[0]
        .fanout
        .counters()
        .slow_consumer_conflations;
    // Client 1 reads what it has; client 2 disconnects: the shard is back under its budget.
    network.drain(0, 1);
    network.disconnect(0, 2);
    network.turn(0);
    network.drain(0, 1);
    let seqs = network.seqs(0, 1, "B");
    assert_eq!(
        seqs.last(),
        Some(&20),
        "the latest B went out: {seqs:?} ({held_before})"
    );
}

/// Proves the subscription limit is refused with an error about the topic, a repeated
/// subscribe is answered at the seq it stands at (no replay), and unsubscribing and
/// disconnecting release the topic at its owner (a topic never published is forgotten).
#[test]
fn limits_repeats_and_release() {
    const SHARDS: usize = 2;
    let config = BrokerConfig {
        subscriptions_per_connection_max: 2,
        ..BrokerConfig::default()
    };
    let mut network = Network::new(SHARDS, &config, roomy(), 7);
    network.connect(1, 0);
    let owned = topic_owned_by(0, SHARDS, "L");
    network.subscribe(1, 0, &owned, None);
    network.subscribe(1, 0, "other-a", None);
    network.subscribe(1, 0, "other-b", None);
    network.settle();
    network.subscribe(1, 0, &owned, None);
    network.settle();
    network.drain(1, 0);
    let replies = network.replies(1, 0);
    let refused = replies
        .iter()
        .find(|reply| reply["op"] == "error")
        .expect("the third subscription is refused");
    assert_eq!(refused["topic"], "other-b");
    let repeats = replies
        .iter()
        .filter(|reply| reply["op"] == "subscribed" && reply["topic"] == owned.as_str())
        .count();
    assert_eq!(repeats, 2, "the repeat is answered again");
    let topics_owned = |network: &Network| -> u64 {
        network
            .shards
            .iter()
            .map(|shard| shard.fanout.gauges().topics_owned)
            .sum()
    };
    assert_eq!(
        topics_owned(&network),
        2,
        "the refused topic was never created"
    );
    network.disconnect(1, 0);
    network.settle();
    assert_eq!(network.shards[1].fanout.gauges().subscriptions, 0);
    // Topics that never had a message are forgotten a while after their last subscriber left.
    for shard in 0..SHARDS {
        network.shards[shard]
            .fanout
            .set_now(ringcast::broker::owner::RESERVATION_MS);
        network.turn(shard);
    }
    assert_eq!(topics_owned(&network), 0);
}

/// Proves an HTTP publish (with a ticket) is answered with its seq from the owner on another
/// shard, and a refused one (topics_per_shard_max) with the reason.
#[test]
fn http_publishes_are_answered_across_shards() {
    const SHARDS: usize = 2;
    let config = BrokerConfig {
        topics_per_shard_max: 1,
        ..BrokerConfig::default()
    };
    let mut network = Network::new(SHARDS, &config, roomy(), 3);
    network.connect(1, 0);
    let first = topic_owned_by(0, SHARDS, "H");
    let second = topic_owned_by(0, SHARDS, "I");
    for (ticket, topic) in [(7, &first), (8, &first), (9, &second)] {
        let request = BrokerRequest::Publish {
            topic: name(topic),
            data: Bytes::from_static(b"1"),
            ticket: Some(ticket),
            key: None,
        };
        network.request(1, 0, request);
    }
    network.settle();
    let answers = &network.shards[1].clients.clients[0].publish_answers;
    assert_eq!(answers[0], (7, Ok(1)));
    assert_eq!(answers[1], (8, Ok(2)));
    assert_eq!(answers[2].0, 9);
    assert!(answers[2].1.is_err());
}

/// Proves a batch is published all or nothing across owners: when one owner cannot create
/// its new topic, no item is published anywhere and every item is answered with the refusal;
/// when all can, every item gets its seq.
#[test]
fn batches_are_all_or_nothing_across_owners() {
    const SHARDS: usize = 2;
    let config = BrokerConfig {
        topics_per_shard_max: 2,
        ..BrokerConfig::default()
    };
    let mut network = Network::new(SHARDS, &config, roomy(), 11);
    network.connect(1, 0);
    let on_zero: Vec<String> = (0..3)
        .map(|index| topic_owned_by(0, SHARDS, &format!("Z{index}-")))
        .collect();
    let on_one = topic_owned_by(1, SHARDS, "O");
    // Owner 0 can take two new topics: a batch naming three of them and one of owner 1.
    let batch = |topics: &[&String]| BrokerRequest::PublishBatch {
        items: topics
            .iter()
            .map(|topic| (name(topic), Bytes::from_static(b"1")))
            .collect(),
        first_ticket: 100,
        key: None,
    };
    network.request(
        1,
        0,
        batch(&[&on_one, &on_zero[0], &on_zero[1], &on_zero[2]]),
    );
    network.settle();
    let answers = network.shards[1].clients.clients[0].publish_answers.clone();
    assert_eq!(answers.len(), 4);
    assert!(
        answers.iter().all(|(_, result)| result.is_err()),
        "{answers:?}"
    );
    let published: u64 = network
        .shards
        .iter()
        .map(|shard| shard.fanout.counters().messages_published)
        .sum();
    assert_eq!(published, 0, "nothing of a refused batch is published");
    network.shards[1].clients.clients[0].publish_answers.clear();
    network.request(1, 0, batch(&[&on_one, &on_zero[0], &on_zero[1]]));
    network.settle();
    let answers = &network.shards[1].clients.clients[0].publish_answers;
    assert_eq!(
        answers
            .iter()
            .map(|(ticket, _)| *ticket)
            .collect::<Vec<_>>(),
        [100, 101, 102]
    );
    assert!(
        answers.iter().all(|(_, result)| *result == Ok(1)),
        "{answers:?}"
    );
}

/// Proves a publish retried with the same idempotency key is answered with the first seq and
/// not published again, per topic, and a WebSocket publish with an id is acknowledged.
#[test]
fn idempotent_retries_get_the_first_seq() {
    const SHARDS: usize = 2;
    let mut network = Network::new(SHARDS, &BrokerConfig::default(), roomy(), 13);
    network.connect(1, 0);
    network.connect(1, 1);
    let topic = topic_owned_by(0, SHARDS, "I");
    network.subscribe(1, 1, &topic, None);
    network.settle();
    let key =
        |text: &str| Some(IdempotencyKey::new(Bytes::copy_from_slice(text.as_bytes())).unwrap());
    for (ticket, key_text) in [
        (1, "order-1"),
        (2, "order-1"),
        (3, "order-2"),
        (4, "order-1"),
    ] {
        let request = BrokerRequest::Publish {
            topic: name(&topic),
            data: Bytes::from_static(b"1"),
            ticket: Some(ticket),
            key: key(key_text),
        };
        network.request(1, 0, request);
        network.settle();
    }
    let answers = &network.shards[1].clients.clients[0].publish_answers;
    assert_eq!(answers, &[(1, Ok(1)), (2, Ok(1)), (3, Ok(2)), (4, Ok(1))]);
    network.drain(1, 1);
    assert_eq!(
        network.seqs(1, 1, &topic),
        [1, 2],
        "each key published once"
    );
    assert_eq!(network.shards[0].fanout.counters().duplicate_publishes, 2);
    // A WebSocket publish (no ticket) with an id is acknowledged, retry or not.
    for _ in 0..2 {
        let request = BrokerRequest::Publish {
            topic: name(&topic),
            data: Bytes::from_static(b"1"),
            ticket: None,
            key: key("ws-9"),
        };
        network.request(1, 0, request);
        network.settle();
    }
    network.drain(1, 0);
    let acks: Vec<serde_json::Value> = network
        .replies(1, 0)
        .into_iter()
        .filter(|reply| reply["op"] == "published")
        .collect();
    assert_eq!(acks.len(), 2);
    assert!(
        acks.iter()
            .all(|ack| ack["id"] == "ws-9" && ack["seq"] == 3),
        "{acks:?}"
    );
}

/// Proves the events the webhooks get, across shards in many random schedules: a topic's
/// occupancy is decided by its owner alone and alternates occupied, vacated, … matching
/// whether any shard has a subscriber once the network settles; every subscription in effect is
/// created and removed once per client; every message is published once, by the owner, in seq
/// order; and nothing is decided for topics outside the patterns or without a filter.
#[test]
fn webhook_events_follow_occupancy_across_shards() {
    const SHARDS: usize = 3;
    const SLOTS: u32 = 2;
    let topic = topic_owned_by(1, SHARDS, "W");
    for seed in 0..30 {
        let mut network = Network::new(SHARDS, &BrokerConfig::default(), roomy(), seed);
        let every_kind: EventKinds = EventKind::ALL.into_iter().collect();
        for shard in &mut network.shards {
            shard
                .fanout
                .set_event_filter(EventFilter::new(every_kind, vec!["W*".into()]));
        }
        let mut subscribed = [[false; SLOTS as usize]; SHARDS];
        let mut publishes = 0;
        for shard in 0..SHARDS {
            for slot in 0..SLOTS {
                network.connect(shard, slot);
            }
        }
        for round in 0..80 {
            let shard = network.random.usize(..SHARDS);
            let slot = network.random.u32(..SLOTS);
            match network.random.u8(..3) {
                0 => {
                    network.subscribe(shard, slot, &topic, None);
                    subscribed[shard][slot as usize] = true;
                }
                1 => {
                    let request = BrokerRequest::Unsubscribe {
                        topic: name(&topic),
                    };
                    network.request(shard, slot, request);
                    subscribed[shard][slot as usize] = false;
                }
                _ => {
                    network.publish(shard, slot, &topic, "1");
                    network.publish(shard, slot, "other", "1");
                    publishes += 1;
                }
            }
            for _ in 0..network.random.usize(0..4) {
                network.step();
            }
            if round % 20 == 19 {
                network.settle();
                let occupied = subscribed.iter().flatten().any(|&on| on);
                let last = occupancy(&network.events).last().copied();
                let expected = occupied.then_some(EventKind::TopicOccupied);
                let expected = expected.or(last.map(|_| EventKind::TopicVacated));
                assert_eq!(last, expected, "seed {seed} round {round}");
            }
        }
        for shard in 0..SHARDS {
            network.disconnect(shard, 0);
            let request = BrokerRequest::Unsubscribe {
                topic: name(&topic),
            };
            network.request(shard, 1, request);
        }
        network.settle();
        check_webhook_events(&network.events, &topic, 1, publishes, seed);
    }
}

/// The occupancy events of a run, in order.
fn occupancy(events: &[(usize, Event)]) -> Vec<EventKind> {
    events
        .iter()
        .map(|(_, event)| event.kind())
        .filter(|kind| kind.is_occupancy())
        .collect()
}

/// Checks a run's events once every client left the topic.
fn check_webhook_events(
    events: &[(usize, Event)],
    topic: &str,
    owner: usize,
    publishes: u64,
    seed: u64,
) {
    let occupancy = occupancy(events);
    for (index, kind) in occupancy.iter().enumerate() {
        let expected = match index % 2 {
            0 => EventKind::TopicOccupied,
            _ => EventKind::TopicVacated,
        };
        assert_eq!(*kind, expected, "seed {seed}: {occupancy:?}");
    }
    assert_eq!(occupancy.len() % 2, 0, "seed {seed}: ends vacated");
    let mut created: std::collections::HashMap<ConnectionId, i32> = Default::default();
    let mut seqs = Vec::new();
    for (shard, event) in events {
        if event.topic().is_some() {
            assert_eq!(
                event.topic(),
                Some(topic.as_bytes()),
                "seed {seed}: {event:?}"
            );
        }
        match event {
            Event::TopicOccupied { .. } | Event::TopicVacated { .. } => {
                assert_eq!(*shard, owner, "seed {seed}: decided by the owner");
            }
            Event::SubscriptionCreated { connection, .. } => {
                assert_eq!(usize::from(connection.shard), *shard);
                let balance = created.entry(*connection).or_default();
                *balance += 1;
                assert_eq!(*balance, 1, "seed {seed}: created twice");
            }
            Event::SubscriptionRemoved { connection, .. } => {
                let balance = created.entry(*connection).or_default();
                *balance -= 1;
                assert_eq!(*balance, 0, "seed {seed}: removed without being created");
            }
            Event::MessagePublished { message } => {
                assert_eq!(*shard, owner, "seed {seed}: published by the owner");
                seqs.push(message.seq());
            }
            other => panic!("seed {seed}: the broker decided {other:?}"),
        }
    }
    assert!(created.values().all(|&balance| balance == 0), "seed {seed}");
    assert_eq!(seqs, (1..=publishes).collect::<Vec<_>>(), "seed {seed}");
}

/// Proves a broker without an event filter decides no events at all.
#[test]
fn no_filter_no_events() {
    let mut network = Network::new(2, &BrokerConfig::default(), roomy(), 3);
    network.connect(0, 0);
    network.subscribe(0, 0, "A", None);
    network.publish(0, 0, "A", "1");
    network.settle();
    network.disconnect(0, 0);
    network.settle();
    assert!(network.events.is_empty());
}

/// Clustered: the owner of `topic` reads message `seq` from the stream (as the NATS bridge
/// hands it over).
fn ingest(network: &mut Network, owner: usize, topic: &str, seq: u64) {
    let command = Command::Ingest {
        topic: name(topic),
        seq,
        data: Bytes::from_static(b"1"),
        local: false,
    };
    let simulated = &mut network.shards[owner];
    simulated
        .fanout
        .handle_command(command, &mut simulated.clients);
    network.collect(owner);
    network.settle();
}

/// The kinds of the replies a client got, in order.
fn reply_kinds(network: &Network, shard: usize, slot: u32) -> Vec<ReplyKind> {
    network
        .received(shard, slot)
        .iter()
        .filter_map(|item| match item {
            Received::Reply { kind, .. } => Some(*kind),
            Received::Message { .. } => None,
        })
        .collect()
}

/// Proves a clustered owner holds a subscription whose `since` it has not read yet (a client
/// failing over from a node that had read further) until it reads up to it, then answers it
/// with no reset, no gap and no duplicate; answers `reset` once `catch_up_ms` passed without
/// it, or at once when `catch_up_max` already wait or the epoch differs.
#[test]
fn clustered_subscriptions_wait_for_the_node_to_catch_up() {
    const EPOCH: Epoch = Epoch(0x5eed);
    const CATCH_UP_MS: u64 = 100;
    let topic = topic_owned_by(0, 2, "C");
    let mut network = Network::new(2, &BrokerConfig::default(), roomy(), 1);
    for shard in 0..2 {
        network.shards[shard]
            .fanout
            .set_cluster(EPOCH, CATCH_UP_MS, 2);
    }
    for slot in 0..6 {
        network.connect(1, slot);
    }
    for seq in 1..=3 {
        ingest(&mut network, 0, &topic, seq);
    }
    let resume = |seq, epoch| {
        Some(Since {
            seq,
            epoch: Some(epoch),
        })
    };
    let subscribe = |network: &mut Network, slot, since| {
        let request = BrokerRequest::Subscribe {
            topic: name(&topic),
            since,
        };
        network.request(1, slot, request);
        network.settle();
        network.drain(1, slot);
    };

    // Ahead by two: nothing until the owner has read seq 5, then `subscribed` and what follows.
    subscribe(&mut network, 0, resume(5, EPOCH));
    assert_eq!(network.received(1, 0), []);
    ingest(&mut network, 0, &topic, 4);
    network.drain(1, 0);
    assert_eq!(network.received(1, 0), []);
    ingest(&mut network, 0, &topic, 5);
    ingest(&mut network, 0, &topic, 6);
    network.drain(1, 0);
    assert_eq!(reply_kinds(&network, 1, 0), [ReplyKind::Subscribed]);
    assert_eq!(network.seqs(1, 0, &topic), [6]);

    // Ahead of anything published: `reset` once the wait is over, not before.
    subscribe(&mut network, 1, resume(50, EPOCH));
    network.shards[0].fanout.set_now(CATCH_UP_MS - 1);
    network.turn(0);
    network.settle();
    network.drain(1, 1);
    assert_eq!(network.received(1, 1), []);
    network.shards[0].fanout.set_now(CATCH_UP_MS);
    network.turn(0);
    network.settle();
    network.drain(1, 1);
    let answered_reset = [ReplyKind::Subscribed, ReplyKind::Reset];
    assert_eq!(reply_kinds(&network, 1, 1), answered_reset);

    // Two wait at most; a third is answered at once, as is another epoch's `since`.
    subscribe(&mut network, 2, resume(60, EPOCH));
    subscribe(&mut network, 3, resume(60, EPOCH));
    subscribe(&mut network, 4, resume(60, EPOCH));
    subscribe(&mut network, 5, resume(7, Epoch(1)));
    for slot in [2, 3] {
        assert_eq!(network.received(1, slot), [], "slot {slot}");
    }
    for slot in [4, 5] {
        assert_eq!(
            reply_kinds(&network, 1, slot),
            answered_reset,
            "slot {slot}"
        );
    }
    let counters = network.shards[0].fanout.counters();
    assert_eq!(
        (
            counters.cluster_catch_ups_held,
            counters.cluster_catch_ups,
            counters.cluster_catch_up_timeouts,
            counters.cluster_catch_up_overflows,
        ),
        (4, 1, 1, 1)
    );
}
