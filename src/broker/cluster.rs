//! What a shard hands to the NATS bridge when ringcast runs as several nodes (`nats_urls`).
//!
//! Clustered, a topic's owner shard numbers nothing itself: it checks a publish (topic creation
//! limits) and hands it on as a [`ClusterPublish`]; the bridge has JetStream number and keep
//! it, answers the publisher with the seq (or the refusal), and brings every message of the
//! stream, from any node, back to its topic's owner as [`super::Command::Ingest`], which keeps
//! and fans it out like a message it had numbered.

use bytes::Bytes;

use super::command::PublishReply;
use super::idempotency::IdempotencyKey;
use super::topic::TopicName;

/// A publish on its way to JetStream.
#[derive(Debug)]
pub struct ClusterPublish {
    pub topic: TopicName,
    /// One JSON value, verbatim.
    pub data: Bytes,
    /// Who waits for the seq (`None`: the demo feed).
    pub reply: Option<PublishReply>,
    /// The client's idempotency key: JetStream deduplicates on it across nodes.
    pub key: Option<IdempotencyKey>,
}
