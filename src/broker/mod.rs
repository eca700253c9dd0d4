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
pub mod http_api;
pub mod message;
pub mod owner;
pub mod request;
pub mod subscribers;
pub mod topic_name;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

pub use topic_name::TOPIC_BYTES_LIMIT;

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
}
