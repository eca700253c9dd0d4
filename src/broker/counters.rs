//! What a shard's broker counts and reports: the counters (every drop among them) and the
//! levels, gathered by the shard into its statistics each turn.

use super::clients::TRANSPORT_COUNT;

/// What a shard's broker counts; every drop is counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerCounters {
    /// Messages this shard assigned a sequence number to, as the owner of their topic.
    pub messages_published: u64,
    /// Messages queued to this shard's subscribers.
    pub deliveries: u64,
    /// Requests refused by the broker with an `error` reply (limits, an owner's refusal).
    pub request_errors: u64,
    /// Subscriptions served from history with `since`, and the messages replayed for them.
    pub replays: u64,
    pub replayed_messages: u64,
    /// Subscriptions answered with `reset` because `since + 1` had left the history.
    pub resets: u64,
    /// Slow-consumer policy actions: the newest message dropped; an older message replaced by
    /// a newer one of the same topic (conflate); the subscriber closed with 1008.
    pub slow_consumer_drops: u64,
    pub slow_consumer_conflations: u64,
    pub slow_consumer_closes: u64,
    /// The same actions, of every kind, by the transport of the client they fell on.
    pub slow_consumer_actions_by_transport: [u64; TRANSPORT_COUNT],
    /// Pages of replays served (a long replay comes in pages as the queue drains), and
    /// replays cut short because what they asked for left history meanwhile.
    pub replay_pages: u64,
    pub replays_lost: u64,
    /// Topics forgotten after `topic_idle_ms` without subscribers or publishes.
    pub topics_expired: u64,
    /// Topic creations refused for `topic_creations_per_second`.
    pub topic_creations_refused: u64,
    /// Publishes answered from the idempotency table (a retry), not published again.
    pub duplicate_publishes: u64,
    /// Message buffers made because their class's free list was empty (warm-up, growth), or
    /// for a message larger than every class; zero in a steady state.
    pub message_buffers_created: u64,
    /// Subscriptions ended because a refreshed token no longer grants their topic.
    pub subscriptions_revoked: u64,
    /// Clustered: publishes refused because the bridge's queue was full (answered 503).
    pub cluster_publishes_refused: u64,
    /// Clustered: messages from JetStream this owner already had (not delivered again).
    pub cluster_duplicates: u64,
    /// Clustered: messages from JetStream this owner could not keep (its topic table full).
    pub cluster_ingests_refused: u64,
    /// Clustered: messages that came past a hole in their topic's seqs (JetStream dropped
    /// messages before this node read them); subscribers see the seq jump.
    pub cluster_gaps: u64,
    /// Clustered: subscriptions whose `since` this node had not read yet, held
    /// (`broker::catch_up`); of those, answered once it caught up, and answered `reset`
    /// after `nats_catch_up_ms` (or an epoch change); and those answered at once because
    /// `nats_catch_up_subscriptions_max` already waited.
    pub cluster_catch_ups_held: u64,
    pub cluster_catch_ups: u64,
    pub cluster_catch_up_timeouts: u64,
    pub cluster_catch_up_overflows: u64,
}

/// Levels a shard's broker reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerGauges {
    /// Subscriptions in effect held by this shard's clients.
    pub subscriptions: u64,
    /// Topics this shard owns (assigns sequence numbers to and keeps history for).
    pub topics_owned: u64,
    /// Topics with at least one subscription on this shard (in effect or on its way).
    pub topics_subscribed: u64,
    /// Bytes of history this shard keeps for its owned topics.
    pub history_bytes: u64,
    /// Bytes of free message buffers kept for reuse.
    pub message_pool_free_bytes: u64,
}
