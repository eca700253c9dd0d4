//! The topics a shard owns: their sequence numbers, history and subscribing shards.
//!
//! Every message of a topic passes through its owner, which numbers it (1, 2, 3, … with no
//! gaps), encodes it once as a [`Message`], keeps it in a bounded history, and names the shards
//! to forward it to. A subscription is answered here with the latest seq and what to replay, so the
//! subscriber's shard can join the live stream exactly after it.

use std::collections::{HashMap, VecDeque};

use super::config::BrokerConfig;
use super::message::Message;
use super::topic::TopicName;
use crate::protocol::websocket::frame::FrameEncoder;

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

/// One owned topic.
#[derive(Debug)]
struct OwnedTopic {
    /// The name, shared with every command about the topic.
    name: TopicName,
    /// The seq of the latest message; 0 before the first.
    seq: u64,
    /// The latest messages, oldest first (each knows its seq).
    history: VecDeque<Message>,
    history_bytes: usize,
    /// The latest message, kept for snapshots even when history is off.
    last: Option<Message>,
    subscriber_shards: ShardSet,
}

/// A message just numbered.
#[derive(Debug)]
pub struct Published<'a> {
    pub message: Message,
    /// Shards to deliver it to (the owner itself included when it has subscribers).
    pub subscriber_shards: &'a ShardSet,
}

/// The owner's answer to a subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeAnswer {
    /// The topic's latest seq: live messages continue from the next.
    pub latest: u64,
    /// The replay asked for is not in history (or `since` is ahead of the topic).
    pub reset: bool,
    /// Messages to send after `subscribed`: the replay, or the snapshot.
    pub messages: Vec<Message>,
}

/// Why the owner refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerError {
    TooManyTopics,
}

impl OwnerError {
    pub fn reason(self) -> &'static str {
        match self {
            OwnerError::TooManyTopics => "the shard owning this topic has topics_per_shard_max",
        }
    }
}

/// Every topic one shard owns.
#[derive(Debug)]
pub struct OwnedTopics {
    index: HashMap<TopicName, u32>,
    topics: Vec<OwnedTopic>,
    shards: usize,
    topics_max: usize,
    history_messages_max: usize,
    history_bytes_max: usize,
    history_shard_bytes_max: usize,
    history_bytes_total: usize,
}

impl OwnedTopics {
    pub fn new(config: &BrokerConfig, shards: usize) -> OwnedTopics {
        OwnedTopics {
            index: HashMap::new(),
            topics: Vec::new(),
            shards,
            topics_max: config.topics_per_shard_max,
            history_messages_max: config.history_messages_max,
            history_bytes_max: config.history_bytes_max,
            history_shard_bytes_max: config.history_shard_bytes_max,
            history_bytes_total: 0,
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    pub fn history_bytes(&self) -> usize {
        self.history_bytes_total
    }

    /// Numbers a message of `topic`, encodes it and keeps it in history.
    pub fn publish(
        &mut self,
        topic: &TopicName,
        data: &[u8],
        encoder: &mut FrameEncoder,
    ) -> Result<Published<'_>, OwnerError> {
        let index = self.find_or_create(topic)?;
        let topic = &mut self.topics[index];
        topic.seq += 1;
        let message = Message::encode(encoder, &topic.name, topic.seq, data);
        topic.last = Some(message.clone());
        if self.history_messages_max > 0 {
            let message_bytes = message.encoded_bytes();
            topic.history.push_back(message.clone());
            topic.history_bytes += message_bytes;
            self.history_bytes_total += message_bytes;
            // Over the shard's budget, the topic being published pays: the busiest topics
            // hold the most history, and evicting here costs no search.
            while topic.history.len() > self.history_messages_max
                || (topic.history_bytes > self.history_bytes_max && topic.history.len() > 1)
                || (self.history_bytes_total > self.history_shard_bytes_max
                    && topic.history.len() > 1)
            {
                let evicted = topic.history.pop_front().expect("length checked");
                topic.history_bytes -= evicted.encoded_bytes();
                self.history_bytes_total -= evicted.encoded_bytes();
            }
        }
        Ok(Published {
            message,
            subscriber_shards: &topic.subscriber_shards,
        })
    }

    /// Registers `shard` as subscribing to `topic` and says where its new subscriber starts:
    /// after `since` when history still has `since + 1`, otherwise at the latest message.
    pub fn subscribe(
        &mut self,
        topic: &TopicName,
        shard: usize,
        since: Option<u64>,
        snapshot: bool,
    ) -> Result<SubscribeAnswer, OwnerError> {
        let index = self.find_or_create(topic)?;
        let topic = &mut self.topics[index];
        topic.subscriber_shards.insert(shard);
        let latest = topic.seq;
        let latest_message = || topic.last.iter().cloned().collect::<Vec<_>>();
        let answer = match since {
            None if snapshot => SubscribeAnswer {
                latest,
                reset: false,
                messages: latest_message(),
            },
            None => SubscribeAnswer {
                latest,
                ..SubscribeAnswer::default()
            },
            Some(since) if since == latest => SubscribeAnswer {
                latest,
                ..SubscribeAnswer::default()
            },
            Some(since) if since < latest && Self::in_history(topic, since + 1) => {
                let skip = (since + 1 - topic.history[0].seq()) as usize;
                SubscribeAnswer {
                    latest,
                    reset: false,
                    messages: topic.history.iter().skip(skip).cloned().collect(),
                }
            }
            Some(_) => SubscribeAnswer {
                latest,
                reset: true,
                messages: latest_message(),
            },
        };
        Ok(answer)
    }

    fn in_history(topic: &OwnedTopic, seq: u64) -> bool {
        topic
            .history
            .front()
            .is_some_and(|first| first.seq() <= seq)
    }

    /// `shard` has no subscribers of `topic` any more. A topic that never had a message and has
    /// no subscribers left is forgotten (a subscription to a mistyped name leaves nothing).
    pub fn unsubscribe(&mut self, topic: &[u8], shard: usize) {
        let Some(&index) = self.index.get(topic) else {
            return;
        };
        let owned = &mut self.topics[index as usize];
        owned.subscriber_shards.remove(shard);
        if owned.seq == 0 && owned.subscriber_shards.is_empty() {
            self.remove(index as usize);
        }
    }

    fn remove(&mut self, index: usize) {
        let removed = self.topics.swap_remove(index);
        self.index.remove(&removed.name);
        if let Some(moved) = self.topics.get(index) {
            *self.index.get_mut(&moved.name).expect("indexed") = index as u32;
        }
    }

    fn find_or_create(&mut self, topic: &TopicName) -> Result<usize, OwnerError> {
        if let Some(&index) = self.index.get(topic) {
            return Ok(index as usize);
        }
        if self.topics.len() >= self.topics_max {
            return Err(OwnerError::TooManyTopics);
        }
        let name = topic.clone();
        let index = self.topics.len();
        self.index.insert(name.clone(), index as u32);
        self.topics.push(OwnedTopic {
            name,
            seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            last: None,
            subscriber_shards: ShardSet::new(self.shards),
        });
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(history_messages_max: usize) -> (OwnedTopics, FrameEncoder) {
        let config = BrokerConfig {
            history_messages_max,
            topics_per_shard_max: 3,
            ..BrokerConfig::default()
        };
        (OwnedTopics::new(&config, 130), FrameEncoder::new(4096))
    }

    fn seqs_of(messages: &[Message]) -> Vec<u64> {
        messages
            .iter()
            .map(|message| {
                let value: serde_json::Value = serde_json::from_slice(message.body()).unwrap();
                assert_eq!(value["seq"], message.seq());
                message.seq()
            })
            .collect()
    }

    fn name(text: &str) -> TopicName {
        TopicName::copy_from(text.as_bytes(), 128).unwrap()
    }

    /// Proves seqs count 1, 2, 3 per topic and each topic counts on its own.
    #[test]
    fn seqs_are_per_topic_without_gaps() {
        let (mut owned, mut encoder) = topics(8);
        for expected in 1..=5 {
            assert_eq!(
                owned
                    .publish(&name("A"), b"1", &mut encoder)
                    .unwrap()
                    .message
                    .seq(),
                expected
            );
        }
        assert_eq!(
            owned
                .publish(&name("B"), b"1", &mut encoder)
                .unwrap()
                .message
                .seq(),
            1
        );
    }

    /// Proves replay at every seam: since = latest, since inside history, since before history,
    /// since ahead of the topic, and no since.
    #[test]
    fn replay_seams() {
        let (mut owned, mut encoder) = topics(4);
        for _ in 0..10 {
            owned.publish(&name("A"), b"{}", &mut encoder).unwrap();
        }
        let answer =
            |owned: &mut OwnedTopics, since| owned.subscribe(&name("A"), 1, since, false).unwrap();
        let latest = answer(&mut owned, Some(10));
        assert_eq!(
            (latest.latest, latest.reset, latest.messages.len()),
            (10, false, 0)
        );
        let inside = answer(&mut owned, Some(7));
        assert!(!inside.reset);
        assert_eq!(seqs_of(&inside.messages), [8, 9, 10]);
        let oldest = answer(&mut owned, Some(6));
        assert_eq!(seqs_of(&oldest.messages), [7, 8, 9, 10]);
        let before = answer(&mut owned, Some(5));
        assert!(before.reset);
        assert_eq!(
            seqs_of(&before.messages),
            [10],
            "reset comes with the latest as a snapshot"
        );
        let ahead = answer(&mut owned, Some(11));
        assert!(ahead.reset);
        let plain = answer(&mut owned, None);
        assert_eq!(
            (plain.latest, plain.reset, plain.messages.len()),
            (10, false, 0)
        );
        let snapshot = owned.subscribe(&name("A"), 1, None, true).unwrap();
        assert_eq!(seqs_of(&snapshot.messages), [10]);
    }

    /// Proves history obeys both of its bounds, keeping at least the latest message.
    #[test]
    fn history_is_bounded() {
        let config = BrokerConfig {
            history_messages_max: 100,
            history_bytes_max: 100,
            ..BrokerConfig::default()
        };
        let (mut owned, mut encoder) = (OwnedTopics::new(&config, 1), FrameEncoder::new(4096));
        for _ in 0..20 {
            owned
                .publish(&name("A"), &[b'1'; 30], &mut encoder)
                .unwrap();
        }
        let answer = owned.subscribe(&name("A"), 0, Some(0), false).unwrap();
        assert!(answer.reset);
        assert!(owned.history_bytes() <= 100);
        let answer = owned.subscribe(&name("A"), 0, Some(19), false).unwrap();
        assert_eq!(seqs_of(&answer.messages), [20]);
    }

    /// Proves the shard-wide history budget is kept by evicting from the topic published to.
    #[test]
    fn shard_history_budget() {
        let config = BrokerConfig {
            history_shard_bytes_max: 1000,
            ..BrokerConfig::default()
        };
        let (mut owned, mut encoder) = (OwnedTopics::new(&config, 1), FrameEncoder::new(4096));
        for round in 0..50 {
            for topic in ["A", "B", "C"] {
                owned
                    .publish(&name(topic), &[b'1'; 40], &mut encoder)
                    .unwrap();
                assert!(owned.history_bytes() <= 1000 + 100, "round {round}");
            }
        }
        let answer = owned.subscribe(&name("C"), 0, Some(49), false).unwrap();
        assert_eq!(seqs_of(&answer.messages), [50], "the latest is always kept");
    }

    /// Proves the topic limit refuses a new topic but not an existing one, and that a topic
    /// subscribed but never published is forgotten with its last subscriber.
    #[test]
    fn topic_limit_and_forgetting() {
        let (mut owned, mut encoder) = topics(0);
        for topic in ["A", "B", "C"] {
            owned.subscribe(&name(topic), 0, None, false).unwrap();
        }
        assert_eq!(
            owned.publish(&name("D"), b"1", &mut encoder).unwrap_err(),
            OwnerError::TooManyTopics
        );
        owned.publish(&name("A"), b"1", &mut encoder).unwrap();
        owned.unsubscribe(b"B", 0);
        owned.unsubscribe(b"A", 0);
        assert_eq!(owned.topic_count(), 2, "B is forgotten, A has a message");
        assert_eq!(
            owned
                .publish(&name("D"), b"1", &mut encoder)
                .unwrap()
                .message
                .seq(),
            1
        );
        assert_eq!(
            owned
                .publish(&name("C"), b"1", &mut encoder)
                .unwrap()
                .message
                .seq(),
            1
        );
    }

    /// Proves the shard set tracks shards past the first word.
    #[test]
    fn shard_set() {
        let mut set = ShardSet::new(130);
        for shard in [0, 63, 64, 129] {
            set.insert(shard);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        set.remove(63);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 64, 129]);
        for shard in [0, 64, 129] {
            set.remove(shard);
        }
        assert!(set.is_empty());
    }
}
