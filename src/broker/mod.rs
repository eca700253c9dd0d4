//! The pub/sub broker: topics, sequence numbers, history and replay, subscriber tables and the
//! wire protocol of client requests and server messages.
//!
//! Sans-IO like `protocol`: nothing here touches a socket, a clock or another thread. The shard
//! owns one [`owner::OwnedTopics`] (the topics that hash to it: it numbers their messages, keeps
//! their history and knows which shards subscribe) and one [`subscribers::SubscriberTable`] (its
//! own connections' subscriptions), and moves commands between shards through its mailboxes.
//!
//! Ordering rests on two facts: a topic's owner is the only place its sequence numbers are
//! assigned, and commands from one shard to another arrive in the order they were sent. A
//! subscription takes effect when the owner's answer comes back, which carries the seq at that
//! moment and the replay up to it; every later message of the topic follows that answer.

pub mod demo;
pub mod message;
pub mod owner;
pub mod request;
pub mod subscribers;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// The largest `topic_bytes_max` the config accepts: message encoding escapes names on the stack.
pub const TOPIC_BYTES_LIMIT: usize = 256;

/// The shard that owns `topic`: a fixed hash of the name, the same in every thread and every run.
pub fn owner_shard(topic: &[u8], shards: usize) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(topic);
    (hash % shards as u64) as usize
}

/// A connection of some shard, named so that an answer can find it again: the generation tells a
/// reused slot from the connection that asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u16,
}

/// Why a topic name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong,
    /// A byte outside printable ASCII (0x20..=0x7E).
    NotPrintable,
}

impl TopicError {
    pub fn reason(self) -> &'static str {
        match self {
            TopicError::Empty => "topic name is empty",
            TopicError::TooLong => "topic name is longer than topic_bytes_max",
            TopicError::NotPrintable => "topic name has a byte outside printable ASCII",
        }
    }
}

/// Checks a topic name: 1..=`topic_bytes_max` bytes of printable ASCII.
pub fn validate_topic(topic: &str, topic_bytes_max: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > topic_bytes_max {
        return Err(TopicError::TooLong);
    }
    if !topic.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(TopicError::NotPrintable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves ownership is spread over the shards and stable for a name.
    #[test]
    fn owner_is_stable_and_spread() {
        let mut counts = [0usize; 4];
        for index in 0..4000 {
            let topic = format!("T{index}");
            let owner = owner_shard(topic.as_bytes(), 4);
            assert_eq!(owner, owner_shard(topic.as_bytes(), 4));
            counts[owner] += 1;
        }
        assert!(counts.iter().all(|&count| count > 800), "{counts:?}");
    }

    /// Proves topic names are checked for length and printable ASCII.
    #[test]
    fn topic_names() {
        assert_eq!(validate_topic("AAPL", 8), Ok(()));
        assert_eq!(validate_topic("FX EUR/USD", 16), Ok(()));
        assert_eq!(validate_topic("", 8), Err(TopicError::Empty));
        assert_eq!(validate_topic("ABCDEFGHI", 8), Err(TopicError::TooLong));
        assert_eq!(validate_topic("A\nB", 8), Err(TopicError::NotPrintable));
        assert_eq!(validate_topic("Ä", 8), Err(TopicError::NotPrintable));
    }
}
