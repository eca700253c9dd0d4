//! The topics a shard owns: their sequence numbers and epochs, history and subscribing shards.
//!
//! Every message of a topic passes through its owner, which numbers it (1, 2, 3, … with no
//! gaps), encodes it once as a [`Message`], keeps it in a bounded history, and names the shards
//! to forward it to. A subscription is answered here with the latest seq, the topic's epoch and
//! the first page of what to replay, so the subscriber's shard can join the live stream exactly
//! after it; further pages are asked for as the subscriber's queue drains.
//!
//! Everything here is bounded: topics per shard (and their creation, per client, by a token
//! bucket), history per topic by count and bytes, history per shard by bytes counting every
//! kept message's real memory (the newest message of each topic included: past the shard's
//! budget the oldest messages of any topic go first), and topics nobody uses are forgotten
//! after `topic_idle_ms` (a topic created again gets a new epoch).

use std::collections::{HashMap, VecDeque};

use super::config::BrokerConfig;
use super::message::Message;
use super::message_pool::MessagePool;
use super::topic::{Epoch, EpochSource, TopicName};

/// How long a topic that never had a message nor a subscriber is kept: one created by a batch's
/// prepare whose batch another owner refused, or one subscribed to and left (a mistyped name,
/// a poll between two polls). A batch commits within milliseconds of its prepare, so after
/// this its topics are forgotten rather than held for `topic_idle_ms`, and refused batches
/// cannot fill the table.
pub const RESERVATION_MS: u64 = 10_000;
/// Messages in one page of a replay: a subscriber's shard asks for the next page once its
/// queue has room, so a replay never floods a queue.
pub const REPLAY_PAGE_MESSAGES_MAX: usize = 64;
/// Bytes in one page of a replay (a page holds at least one message).
pub const REPLAY_PAGE_BYTES_MAX: usize = 64 * 1024;
/// What keeping a message in history costs beyond the message itself: its entry in the topic's
/// history (32 bytes) and in the shard's eviction order (48 bytes).
const HISTORY_ENTRY_OVERHEAD_BYTES: usize = 80;
/// Clients whose topic creations one shard tracks at once. Buckets that refilled are dropped
/// when the table is full; beyond it a new client cannot create topics until some refill.
const CREATION_CLIENTS_TRACKED_MAX: usize = 4096;

/// The shards with subscribers of one topic, one bit each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSet {
    words: Box<[u64]>,
}

impl ShardSet {
    pub fn new(shards: usize) -> ShardSet {
        ShardSet {
            words: vec![0; shards.div_ceil(64)].into_boxed_slice(),
        }
    }

    pub fn insert(&mut self, shard: usize) {
        self.words[shard / 64] |= 1 << (shard % 64);
    }

    pub fn remove(&mut self, shard: usize) {
        self.words[shard / 64] &= !(1 << (shard % 64));
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&word| word == 0)
    }

    /// The shards in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(index * 64 + bit)
            })
        })
    }
}

/// Where a client stands in a topic: the last seq it has, and in which epoch (absent for a
/// bare seq, which is then trusted to be of the current epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since {
    pub seq: u64,
    pub epoch: Option<Epoch>,
}

/// One owned topic.
#[derive(Debug)]
struct OwnedTopic {
    /// The name, shared with every command about the topic.
    name: TopicName,
    epoch: Epoch,
    /// The seq of the latest message; 0 before the first.
    seq: u64,
    /// The latest messages, oldest first (each knows its seq). The newest is kept even when
    /// history is off, for snapshots and resets.
    history: VecDeque<Message>,
    /// The memory `history` holds.
    history_bytes: usize,
    subscriber_shards: ShardSet,
    /// The last publish, subscription change or creation: a topic idle for `topic_idle_ms`
    /// with no subscribers is forgotten.
    active_ms: u64,
}

/// A message just numbered.
#[derive(Debug)]
pub struct Published<'a> {
    pub message: Message,
    /// Shards to deliver it to (the owner itself included when it has subscribers).
    pub subscriber_shards: &'a ShardSet,
}

/// The owner's answer to a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeAnswer {
    /// The topic's latest seq: live messages continue from the next.
    pub latest: u64,
    pub epoch: Epoch,
    /// The replay asked for is not in history, or `since` is of another epoch or ahead of the
    /// topic: the latest message follows as a snapshot, if the topic has one.
    pub reset: bool,
    /// Messages to send after `subscribed`: the first page of the replay, or the snapshot.
    pub messages: Vec<Message>,
    /// The seq of the replay's next page, when this page did not reach `latest`.
    pub replay_next: Option<u64>,
}

/// A further page of a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayPage {
    /// The page; when `lost`, the latest message as a snapshot instead (if there is one).
    pub messages: Vec<Message>,
    /// The seq of the next page, if the replay has not reached the topic's latest.
    pub next: Option<u64>,
    /// The seqs asked for left history (or the topic was forgotten, or started anew) while the
    /// replay went on: the replay ends with a reset at `latest`.
    pub lost: bool,
    /// The topic's latest seq when the page was made.
    pub latest: u64,
}

/// Why the owner refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerError {
    TooManyTopics,
    /// The client created topics faster than `topic_creations_per_second` allows.
    CreationRateExceeded,
    /// The client's shard has too many batches waiting for their owners.
    BatchesInFlight,
    /// Clustered: this node's queue of publishes to NATS JetStream is full.
    ClusterBusy,
    /// Clustered: JetStream did not take the message within `nats_publish_timeout_ms` (NATS
    /// unreachable, the stream gone): it was not published.
    ClusterUnavailable,
}

impl OwnerError {
    pub fn reason(self) -> &'static str {
        match self {
            OwnerError::TooManyTopics => "the shard owning this topic has topics_per_shard_max",
            OwnerError::CreationRateExceeded => {
                "topics created faster than topic_creations_per_second"
            }
            OwnerError::BatchesInFlight => "too many batches in flight on this shard",
            OwnerError::ClusterBusy => "too many publishes waiting for NATS JetStream on this node",
            OwnerError::ClusterUnavailable => {
                "NATS JetStream did not take the message in time: it was not published"
            }
        }
    }

    /// The HTTP status a refused publish is answered with: 429 when the client went too fast
    /// (it may retry after a while), 503 when the server is full.
    pub fn status(self) -> u16 {
        match self {
            OwnerError::CreationRateExceeded => 429,
            OwnerError::TooManyTopics
            | OwnerError::BatchesInFlight
            | OwnerError::ClusterBusy
            | OwnerError::ClusterUnavailable => 503,
        }
    }
}

/// A client's allowance of topic creations: `burst` at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a creation, so that refills are exact in integers.
    tokens_milli: u64,
    refilled_ms: u64,
}

/// Per-client token buckets for topic creation, so that one client cannot fill a shard's
/// topic table and deny new topics to everyone else.
#[derive(Debug)]
struct CreationLimiter {
    buckets: HashMap<u64, Bucket>,
    per_second: u64,
    burst: u64,
}

impl CreationLimiter {
    /// Takes `count` creations from `client`'s bucket (all or none). A creation by no client
    /// (the server's own feed) is always allowed.
    fn take(&mut self, client: Option<u64>, count: u64, now_ms: u64) -> bool {
        let Some(client) = client else {
            return true;
        };
        let full_milli = self.burst * 1000;
        if !self.buckets.contains_key(&client) && self.buckets.len() >= CREATION_CLIENTS_TRACKED_MAX
        {
            let (per_second, burst) = (self.per_second, self.burst);
            self.buckets.retain(|_, bucket| {
                refill(bucket, per_second, burst, now_ms);
                bucket.tokens_milli < full_milli
            });
            if self.buckets.len() >= CREATION_CLIENTS_TRACKED_MAX {
                return false;
            }
        }
        let bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens_milli: full_milli,
            refilled_ms: now_ms,
        });
        refill(bucket, self.per_second, self.burst, now_ms);
        let wanted = count * 1000;
        if bucket.tokens_milli < wanted {
            return false;
        }
        bucket.tokens_milli -= wanted;
        true
    }
}

fn refill(bucket: &mut Bucket, per_second: u64, burst: u64, now_ms: u64) {
    let elapsed_ms = now_ms.saturating_sub(bucket.refilled_ms);
    bucket.tokens_milli = (bucket.tokens_milli + elapsed_ms * per_second).min(burst * 1000);
    bucket.refilled_ms = now_ms;
}

/// Every topic one shard owns.
#[derive(Debug)]
pub struct OwnedTopics {
    index: HashMap<TopicName, u32>,
    topics: Vec<OwnedTopic>,
    shards: usize,
    topics_max: usize,
    /// Messages kept per topic: at least the newest, even with `history_messages_max` 0.
    history_kept_max: usize,
    replay: bool,
    history_bytes_max: usize,
    history_shard_bytes_max: usize,
    topic_idle_ms: u64,
    history_bytes_total: usize,
    /// Every kept message, oldest first: the order the shard's budget evicts in. Entries of
    /// messages a topic already evicted (or of forgotten topics) are skipped, and compacted
    /// away when they outnumber the kept ones.
    eviction_order: VecDeque<(TopicName, Epoch, u64)>,
    kept_count: usize,
    epochs: EpochSource,
    /// Clustered: the epoch of every topic (the JetStream stream's), instead of one drawn per
    /// topic.
    cluster_epoch: Option<Epoch>,
    creations: CreationLimiter,
    /// Where the last sweep for idle topics stopped.
    expiry_cursor: usize,
    /// The buffers this shard's messages are encoded in.
    pub pool: MessagePool,
    /// Topics forgotten for being idle, and creations refused for rate (for the counters).
    pub topics_expired: u64,
    pub creations_refused: u64,
    /// Clustered: messages that came past a hole in a topic's seqs (for the counters).
    pub ingest_gaps: u64,
}

impl OwnedTopics {
    /// The topics of one shard among `shards`; `epoch_seed` differs per process start.
    pub fn new(config: &BrokerConfig, shards: usize, epoch_seed: u64) -> OwnedTopics {
        OwnedTopics {
            index: HashMap::new(),
            topics: Vec::new(),
            shards,
            topics_max: config.topics_per_shard_max,
            history_kept_max: config.history_messages_max.max(1),
            replay: config.history_messages_max > 0,
            history_bytes_max: config.history_bytes_max,
            history_shard_bytes_max: config.history_shard_bytes_max,
            topic_idle_ms: config.topic_idle_ms,
            history_bytes_total: 0,
            eviction_order: VecDeque::new(),
            kept_count: 0,
            epochs: EpochSource::new(epoch_seed),
            cluster_epoch: None,
            creations: CreationLimiter {
                buckets: HashMap::new(),
                per_second: config.topic_creations_per_second,
                burst: config.topic_creations_burst,
            },
            expiry_cursor: 0,
            pool: MessagePool::new(config.message_pool_free_bytes_max),
            topics_expired: 0,
            creations_refused: 0,
            ingest_gaps: 0,
        }
    }

    /// Clustered: every topic's seqs are JetStream's ([`OwnedTopics::ingest`]) in the sequence
    /// space `epoch`. Set before any topic exists.
    pub fn set_cluster_epoch(&mut self, epoch: Epoch) {
        assert!(
            self.topics.is_empty(),
            "the cluster epoch is set at start-up"
        );
        self.cluster_epoch = Some(epoch);
    }

    /// Clustered: keeps message `seq` of `topic` as JetStream numbered it, and names the shards
    /// to deliver it to. `None` for a seq already kept (a message seen twice). A seq past the
    /// next one (JetStream dropped messages before this node read them) starts the topic's
    /// history anew at it, so that no replay crosses the hole.
    pub fn ingest(
        &mut self,
        topic: &TopicName,
        seq: u64,
        data: &[u8],
        now_ms: u64,
    ) -> Result<Option<Published<'_>>, OwnerError> {
        let index = self.find_or_create(topic, None, now_ms)?;
        let owned = &mut self.topics[index];
        if seq <= owned.seq {
            return Ok(None);
        }
        if seq != owned.seq + 1 {
            if owned.seq > 0 {
                self.ingest_gaps += 1;
            }
            while !self.topics[index].history.is_empty() {
                self.evict_oldest_of(index);
            }
        }
        let owned = &mut self.topics[index];
        owned.seq = seq;
        owned.active_ms = now_ms;
        let message = Message::encode(&mut self.pool, &owned.name, seq, data);
        self.keep(index, message.clone());
        Ok(Some(Published {
            message,
            subscriber_shards: &self.topics[index].subscriber_shards,
        }))
    }

    /// Clustered: JetStream's history was lost (the stream deleted and made anew, a new
    /// epoch): every topic starts again at seq 0 in `epoch`, its history forgotten. Returns
    /// the topics with subscribers and their shards, which the owner tells.
    pub fn restart_epoch(&mut self, epoch: Epoch) -> Vec<(TopicName, Vec<usize>)> {
        self.cluster_epoch = Some(epoch);
        let mut restarted = Vec::new();
        for index in 0..self.topics.len() {
            while !self.topics[index].history.is_empty() {
                self.evict_oldest_of(index);
            }
            let owned = &mut self.topics[index];
            owned.seq = 0;
            owned.epoch = epoch;
            if !owned.subscriber_shards.is_empty() {
                let shards = owned.subscriber_shards.iter().collect();
                restarted.push((owned.name.clone(), shards));
            }
        }
        restarted
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// The memory history holds over all topics (messages and their entries).
    pub fn history_bytes(&self) -> usize {
        self.history_bytes_total
    }

    /// Numbers a message of `topic` (creating the topic for `creator` if it is new), keeps it
    /// in history, and names the shards to deliver it to.
    pub fn publish(
        &mut self,
        topic: &TopicName,
        data: &[u8],
        creator: Option<u64>,
        now_ms: u64,
    ) -> Result<Published<'_>, OwnerError> {
        let index = self.find_or_create(topic, creator, now_ms)?;
        let owned = &mut self.topics[index];
        owned.seq += 1;
        owned.active_ms = now_ms;
        let message = Message::encode(&mut self.pool, &owned.name, owned.seq, data);
        self.keep(index, message.clone());
        Ok(Published {
            message,
            subscriber_shards: &self.topics[index].subscriber_shards,
        })
    }

    /// Registers `shard` as subscribing to `topic` and says where its new subscriber starts:
    /// after `since` when history still has `since + 1` (first page now, more on request),
    /// otherwise at the latest message.
    pub fn subscribe(
        &mut self,
        topic: &TopicName,
        shard: usize,
        since: Option<Since>,
        snapshot: bool,
        creator: Option<u64>,
        now_ms: u64,
    ) -> Result<SubscribeAnswer, OwnerError> {
        let index = self.find_or_create(topic, creator, now_ms)?;
        let owned = &mut self.topics[index];
        owned.subscriber_shards.insert(shard);
        owned.active_ms = now_ms;
        let owned = &self.topics[index];
        let answer = SubscribeAnswer {
            latest: owned.seq,
            epoch: owned.epoch,
            reset: false,
            messages: Vec::new(),
            replay_next: None,
        };
        let newest = || owned.history.back().cloned().into_iter().collect();
        let answer = match since {
            None if snapshot => SubscribeAnswer {
                messages: newest(),
                ..answer
            },
            None => answer,
            // A client at seq 0 has nothing of any epoch to confuse: it starts from the first
            // message of this one.
            Some(since)
                if since.seq > 0 && since.epoch.is_some_and(|epoch| epoch != owned.epoch) =>
            {
                SubscribeAnswer {
                    reset: true,
                    messages: newest(),
                    ..answer
                }
            }
            Some(since) if since.seq == owned.seq => answer,
            Some(since) if since.seq < owned.seq && self.in_history(owned, since.seq + 1) => {
                let page = self.page(owned, since.seq + 1, owned.seq);
                SubscribeAnswer {
                    messages: page.messages,
                    replay_next: page.next,
                    ..answer
                }
            }
            Some(_) => SubscribeAnswer {
                reset: true,
                messages: newest(),
                ..answer
            },
        };
        Ok(answer)
    }

    /// The page of `topic`'s replay from `from` up to its latest message, or `lost` when
    /// history no longer has `from` (or the topic was forgotten, or started anew). A replay
    /// goes on until it reaches the latest: what is published meanwhile comes through it.
    pub fn replay_page(&self, topic: &TopicName, epoch: Epoch, from: u64) -> ReplayPage {
        let Some(&index) = self.index.get(topic) else {
            return ReplayPage {
                messages: Vec::new(),
                next: None,
                lost: true,
                latest: 0,
            };
        };
        let owned = &self.topics[index as usize];
        if owned.epoch != epoch || !self.in_history(owned, from) {
            return ReplayPage {
                messages: owned.history.back().cloned().into_iter().collect(),
                next: None,
                lost: true,
                latest: owned.seq,
            };
        }
        self.page(owned, from, owned.seq)
    }

    /// Creates every topic of a batch that does not exist yet, all or none: a batch admitted
    /// here cannot be refused afterwards for a topic.
    pub fn prepare(
        &mut self,
        topics: &[TopicName],
        creator: Option<u64>,
        now_ms: u64,
    ) -> Result<(), OwnerError> {
        let mut missing: Vec<&TopicName> = Vec::new();
        for topic in topics {
            if !self.index.contains_key(topic) && !missing.contains(&topic) {
                missing.push(topic);
            }
        }
        if self.topics.len() + missing.len() > self.topics_max {
            return Err(OwnerError::TooManyTopics);
        }
        if !self.creations.take(creator, missing.len() as u64, now_ms) {
            self.creations_refused += 1;
            return Err(OwnerError::CreationRateExceeded);
        }
        for topic in missing {
            self.create(topic, now_ms);
        }
        for topic in topics {
            if let Some(&index) = self.index.get(topic) {
                self.topics[index as usize].active_ms = now_ms;
            }
        }
        Ok(())
    }

    /// Whether some shard has subscribers of `topic` (its occupancy, for the webhooks).
    /// Clustered: whether a client asking to resume `topic` after `since` is ahead of what
    /// this node has read of it, in the same epoch (a bare `since` counts as this epoch's).
    pub fn is_behind(&self, topic: &TopicName, since: Since) -> bool {
        let (epoch, seq) = match self.index.get(topic) {
            Some(&index) => {
                let owned = &self.topics[index as usize];
                (owned.epoch, owned.seq)
            }
            None => match self.cluster_epoch {
                Some(epoch) => (epoch, 0),
                None => return false,
            },
        };
        since.seq > seq && since.epoch.is_none_or(|asked| asked == epoch)
    }

    pub fn is_occupied(&self, topic: &[u8]) -> bool {
        self.index
            .get(topic)
            .is_some_and(|&index| !self.topics[index as usize].subscriber_shards.is_empty())
    }

    /// `shard` has no subscribers of `topic` any more. A topic that never had a message and has
    /// no subscribers left is forgotten after [`RESERVATION_MS`] (a subscription to a mistyped
    /// name leaves nothing for long), not at once: a poller that comes back within it finds the
    /// same epoch.
    pub fn unsubscribe(&mut self, topic: &[u8], shard: usize, now_ms: u64) {
        let Some(&index) = self.index.get(topic) else {
            return;
        };
        let owned = &mut self.topics[index as usize];
        owned.subscriber_shards.remove(shard);
        owned.active_ms = now_ms;
    }

    /// Forgets topics with no subscribers and no activity for `topic_idle_ms` (topics that never
    /// had a message: [`RESERVATION_MS`]), looking at no
    /// more than `visits_max` topics (round robin, so that every topic is looked at in turn).
    pub fn expire_idle(&mut self, now_ms: u64, visits_max: usize) {
        for _ in 0..visits_max.min(self.topics.len()) {
            if self.expiry_cursor >= self.topics.len() {
                self.expiry_cursor = 0;
            }
            let owned = &self.topics[self.expiry_cursor];
            let idle_ms = match owned.seq {
                0 => self.topic_idle_ms.min(RESERVATION_MS),
                _ => self.topic_idle_ms,
            };
            let idle = owned.subscriber_shards.is_empty()
                && now_ms.saturating_sub(owned.active_ms) >= idle_ms;
            if idle {
                self.topics_expired += 1;
                self.remove(self.expiry_cursor);
            } else {
                self.expiry_cursor += 1;
            }
        }
    }

    fn in_history(&self, owned: &OwnedTopic, seq: u64) -> bool {
        self.replay
            && owned
                .history
                .front()
                .is_some_and(|first| first.seq() <= seq && seq <= owned.seq)
    }

    /// Messages `from..=until` of a topic that holds `from`, at most one page of them.
    fn page(&self, owned: &OwnedTopic, from: u64, until: u64) -> ReplayPage {
        let skip = (from - owned.history[0].seq()) as usize;
        let mut messages = Vec::new();
        let mut bytes = 0;
        for message in owned.history.iter().skip(skip) {
            let full = messages.len() == REPLAY_PAGE_MESSAGES_MAX
                || (!messages.is_empty()
                    && bytes + message.encoded_bytes() > REPLAY_PAGE_BYTES_MAX);
            if message.seq() > until || full {
                break;
            }
            bytes += message.encoded_bytes();
            messages.push(message.clone());
        }
        let last = messages.last().map_or(from - 1, Message::seq);
        ReplayPage {
            messages,
            next: (last < until).then_some(last + 1),
            lost: false,
            latest: owned.seq,
        }
    }

    /// Keeps `message` as the newest of topic `index`, then evicts: the topic's oldest past its
    /// own limits (keeping the newest), then the shard's oldest of any topic past the shard's.
    fn keep(&mut self, index: usize, message: Message) {
        let cost = message.memory_bytes() + HISTORY_ENTRY_OVERHEAD_BYTES;
        let owned = &mut self.topics[index];
        self.eviction_order
            .push_back((owned.name.clone(), owned.epoch, message.seq()));
        owned.history.push_back(message);
        owned.history_bytes += cost;
        self.history_bytes_total += cost;
        self.kept_count += 1;
        loop {
            let owned = &self.topics[index];
            let over = owned.history.len() > self.history_kept_max
                || (owned.history_bytes > self.history_bytes_max && owned.history.len() > 1);
            if !over {
                break;
            }
            self.evict_oldest_of(index);
        }
        // The message just kept is the last in the order: it alone is never evicted here.
        while self.history_bytes_total > self.history_shard_bytes_max && self.evict_oldest_kept() {}
        if self.eviction_order.len() > 2 * self.kept_count + 64 {
            self.compact_eviction_order();
        }
    }

    fn evict_oldest_of(&mut self, index: usize) {
        let owned = &mut self.topics[index];
        let evicted = owned.history.pop_front().expect("over a limit: not empty");
        let cost = evicted.memory_bytes() + HISTORY_ENTRY_OVERHEAD_BYTES;
        owned.history_bytes -= cost;
        self.history_bytes_total -= cost;
        self.kept_count -= 1;
    }

    /// Evicts the shard's oldest kept message, of whatever topic, but never the newest one
    /// kept (the last in the order). Returns whether it evicted one.
    fn evict_oldest_kept(&mut self) -> bool {
        while self.eviction_order.len() > 1 {
            let (name, epoch, seq) = self.eviction_order.pop_front().expect("length checked");
            let Some(&index) = self.index.get(&name) else {
                continue; // The topic was forgotten.
            };
            let owned = &self.topics[index as usize];
            let kept = owned.epoch == epoch
                && owned
                    .history
                    .front()
                    .is_some_and(|first| first.seq() == seq);
            if kept {
                self.evict_oldest_of(index as usize);
                return true;
            }
        }
        false
    }

    /// Drops the order's entries of messages no longer kept.
    fn compact_eviction_order(&mut self) {
        let (index, topics) = (&self.index, &self.topics);
        self.eviction_order.retain(|(name, epoch, seq)| {
            index.get(name).is_some_and(|&at| {
                let owned = &topics[at as usize];
                owned.epoch == *epoch
                    && owned
                        .history
                        .front()
                        .is_some_and(|first| first.seq() <= *seq && *seq <= owned.seq)
            })
        });
    }

    fn remove(&mut self, index: usize) {
        let removed = self.topics.swap_remove(index);
        self.history_bytes_total -= removed.history_bytes;
        self.kept_count -= removed.history.len();
        self.index.remove(&removed.name);
        if let Some(moved) = self.topics.get(index) {
            *self.index.get_mut(&moved.name).expect("indexed") = index as u32;
        }
    }

    fn find_or_create(
        &mut self,
        topic: &TopicName,
        creator: Option<u64>,
        now_ms: u64,
    ) -> Result<usize, OwnerError> {
        if let Some(&index) = self.index.get(topic) {
            return Ok(index as usize);
        }
        if self.topics.len() >= self.topics_max {
            return Err(OwnerError::TooManyTopics);
        }
        if !self.creations.take(creator, 1, now_ms) {
            self.creations_refused += 1;
            return Err(OwnerError::CreationRateExceeded);
        }
        Ok(self.create(topic, now_ms))
    }

    fn create(&mut self, topic: &TopicName, now_ms: u64) -> usize {
        let index = self.topics.len();
        let name = topic.to_kept();
        self.index.insert(name.clone(), index as u32);
        self.topics.push(OwnedTopic {
            name,
            epoch: match self.cluster_epoch {
                Some(epoch) => epoch,
                None => self.epochs.next_epoch(),
            },
            seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            subscriber_shards: ShardSet::new(self.shards),
            active_ms: now_ms,
        });
        index
    }
}

#[cfg(test)]
#[path = "owner_tests.rs"]
mod tests;
