//! The broker's limits and policies (`[broker]` in the config file), with their defaults and the
//! reasons for them. The server's configuration composes them; the broker reads nothing else.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::json_bounds::JsonBounds;

/// What happens to a subscriber whose outbound queue is full (`outbound_queue_bytes_max` or
/// `outbound_queue_frames_max` reached) when a message for it arrives. Pings, pongs and closes
/// are never dropped or conflated; every action is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Keep only the newest message per topic for that subscriber until its queue drains; it
    /// then sees the topic's seq jump forward. The market-data default: a price that is late is
    /// worth less than the current one.
    #[default]
    Conflate,
    /// Drop the newest message (the subscriber sees a seq gap).
    Drop,
    /// Close the connection with 1008 and the reason "slow consumer".
    Disconnect,
}

impl FromStr for SlowConsumerPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "conflate" => Ok(Self::Conflate),
            "drop" => Ok(Self::Drop),
            "disconnect" => Ok(Self::Disconnect),
            other => Err(format!(
                "{other:?} is not one of conflate, drop, disconnect"
            )),
        }
    }
}

/// Limits and policies of the pub/sub broker (`[broker]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Longest topic name in bytes. Default 128: longer than any ticker or instrument key, short
    /// enough that names cost little in every message.
    pub topic_bytes_max: usize,
    /// Topics one shard owns at once (a topic exists from its first publish or subscription).
    /// Default 65,536. Together with the history limits this bounds a shard's history memory.
    pub topics_per_shard_max: usize,
    /// Topics one connection subscribes to at once. Default 1,024.
    pub subscriptions_per_connection_max: usize,
    /// Messages kept per topic for replay (`since`). Default 1,024: minutes of a busy ticker.
    /// 0 keeps no history (a `since` then always gets `reset`).
    pub history_messages_max: usize,
    /// Bytes of encoded frames kept per topic for replay. Default 256 KiB.
    pub history_bytes_max: usize,
    /// Bytes of history one shard keeps over all its topics, counting each kept message's real
    /// memory (its buffer and bookkeeping), the newest message of every topic included. Default
    /// 256 MiB. Past it, the oldest kept messages of any topic are evicted first; a topic may
    /// lose even its newest message (then it offers no snapshot until it publishes again).
    pub history_shard_bytes_max: usize,
    /// Bytes of free message buffers one shard keeps for reuse, over all size classes (each
    /// class an equal share, at least one buffer). Default 16 MiB. Publishing takes its buffer
    /// from here, so after warm-up it allocates nothing; a buffer returned to a full free list
    /// is freed, so a burst of large messages does not stay resident.
    pub message_pool_free_bytes_max: usize,
    /// A topic with no subscribers and no publish for this long is forgotten, with its history;
    /// if it comes back it starts a new sequence space (a new epoch). Default 10 minutes: a
    /// quiet symbol keeps its last value well past a trading pause, and names nobody uses do
    /// not fill the table for good.
    pub topic_idle_ms: u64,
    /// Topics one client may create per second (by publishing or subscribing to a new name),
    /// after a burst of `topic_creations_burst`. Default 100 per second after 1,000: a batch of
    /// a thousand new symbols goes through, a flood of fresh names from one client does not
    /// fill the table for everyone else.
    pub topic_creations_per_second: u64,
    pub topic_creations_burst: u64,
    /// How long a topic's owner remembers the seq an idempotency key got (HTTP's
    /// `Idempotency-Key`, a WebSocket publish's `"id"`): a retry within it is answered with the
    /// first seq instead of being published again. Default 5 minutes, beyond any client's
    /// retry schedule.
    pub idempotency_window_ms: u64,
    /// Keys one shard remembers at once (past it the oldest are forgotten first). Default
    /// 65,536: about 20 MB per shard at most, for keys of up to 128 bytes.
    pub idempotency_keys_max: usize,
    /// Largest JSON request a client may send over the WebSocket (a publish's whole message).
    /// Default 64 KiB. A larger request is answered with an `error` and the connection stays.
    pub request_bytes_max: usize,
    /// Largest HTTP publish body, by `Content-Length` or decoded chunks; 413 beyond. Default
    /// 1 MiB, like `message_bytes_max`: what is published goes out as WebSocket messages. A body
    /// cut across reads waits in one pooled buffer, so the pool's largest class must hold it.
    pub publish_body_bytes_max: usize,
    /// Most items in one `POST /publish` batch; 413 beyond. Default 1,000: bounds the work one
    /// request hands the broker between two reads of other connections.
    pub publish_batch_items_max: usize,
    /// Most HTTP requests one connection may have waiting for their answers (publishes waiting
    /// for seqs from other shards, and the requests pipelined behind them). A request past it
    /// is answered 503 and the connection closed. Default 1,024: far more than any publisher
    /// needs in flight, and it bounds the answers one connection makes the shard hold.
    pub http_pipelined_requests_max: usize,
    /// Topics one SSE stream, NDJSON stream or poll may read. Default 64. Every SSE event
    /// carries the stream's cursor (about 14 bytes per topic) so that a browser's reconnect
    /// resumes every topic exactly; this bounds that cost. Clients needing more topics use
    /// several streams or the WebSocket.
    pub stream_topics_max: usize,
    /// A comment line (SSE) or a heartbeat line (NDJSON) goes out when a stream has sent
    /// nothing for this long. Default 15 s: inside the 30–60 s idle cut-offs of proxies and
    /// browsers.
    pub stream_heartbeat_ms: u64,
    /// The reconnection delay SSE clients are told to use (`retry:`). Default 2 s.
    pub sse_retry_ms: u64,
    /// A poll without `wait_ms` is held this long for a message. Default 25 s.
    pub poll_wait_ms_default: u64,
    /// The longest a poll may ask to be held (`wait_ms`). Default 55 s: under the 60 s idle
    /// timeouts of common proxies, so the answer arrives before a proxy gives up.
    pub poll_wait_ms_max: u64,
    /// Messages in one poll answer at most; the rest wait for the next poll (its cursor resumes
    /// after the last one answered). Default 100.
    pub poll_messages_max: usize,
    /// Most arrays and objects open at once in a publish's `data` (`[[1]]` is 2); deeper data
    /// is refused (an `error` reply, or 400). Default 64: far beyond any market-data message,
    /// and well inside what recursive JSON parsers of subscribers survive (serde_json stops at
    /// 128). Data is replayed to every subscriber, so one bomb would break them all.
    pub publish_json_depth_max: usize,
    /// Longest number in a publish's `data`, in characters (sign, digits, point, exponent);
    /// longer is refused. Default 64: a 64-bit integer needs 20 and a double 24 at most, while
    /// numbers of thousands of digits cost some parsers quadratic time to convert.
    pub publish_json_number_bytes_max: usize,
    /// What to do with a subscriber that cannot keep up: conflate (default), drop or disconnect.
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// Bytes queued to all of one shard's connections before every subscriber of the shard is
    /// treated as slow (the policy applies to new messages until the total is back under it).
    /// Default 128 MiB. The per-connection limit bounds one subscriber; with 16,000 of them a
    /// shard could otherwise hold 16 GB when the machine cannot send as fast as it publishes.
    pub outbound_shard_bytes_max: usize,
    /// Topic patterns whose subscribers get the latest message right after `subscribed` (a
    /// last-value snapshot), when they give no `since`. A pattern is a name or a prefix ending
    /// in `*`; `"*"` is every topic. Default none.
    pub snapshot_topics: Vec<String>,
    /// Commands each shard's mailbox holds per kind (control, publish). Default 4,096. A full
    /// mailbox pushes back on publishers; nothing is dropped.
    pub mailbox_commands_max: usize,
    /// Commands a shard holds for full mailboxes of other shards before it stops taking
    /// publishes. Default 65,536. Beyond it the publishers pause instead of queueing more.
    pub outbox_commands_max: usize,
    /// Run the built-in ticker simulator (`--demo`). Default off.
    pub demo: bool,
    /// Symbols the demo feed quotes. Default 500.
    pub demo_symbols: usize,
    /// Messages per second the demo feed publishes, over all symbols. Default 1,000.
    pub demo_messages_per_second: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            topic_bytes_max: 128,
            topics_per_shard_max: 64 * 1024,
            subscriptions_per_connection_max: 1024,
            history_messages_max: 1024,
            history_bytes_max: 256 * 1024,
            history_shard_bytes_max: 256 * 1024 * 1024,
            message_pool_free_bytes_max: 16 * 1024 * 1024,
            topic_idle_ms: 600_000,
            topic_creations_per_second: 100,
            topic_creations_burst: 1000,
            idempotency_window_ms: 300_000,
            idempotency_keys_max: 64 * 1024,
            request_bytes_max: 64 * 1024,
            publish_body_bytes_max: 1024 * 1024,
            publish_batch_items_max: 1000,
            http_pipelined_requests_max: 1024,
            stream_topics_max: 64,
            stream_heartbeat_ms: 15_000,
            sse_retry_ms: 2_000,
            poll_wait_ms_default: 25_000,
            poll_wait_ms_max: 55_000,
            poll_messages_max: 100,
            publish_json_depth_max: 64,
            publish_json_number_bytes_max: 64,
            slow_consumer_policy: SlowConsumerPolicy::Conflate,
            outbound_shard_bytes_max: 128 * 1024 * 1024,
            snapshot_topics: Vec::new(),
            mailbox_commands_max: 4096,
            outbox_commands_max: 64 * 1024,
            demo: false,
            demo_symbols: 500,
            demo_messages_per_second: 1000,
        }
    }
}

impl BrokerConfig {
    /// The bounds every publish's `data` is checked against.
    pub fn json_bounds(&self) -> JsonBounds {
        JsonBounds {
            depth_max: self.publish_json_depth_max,
            number_bytes_max: self.publish_json_number_bytes_max,
        }
    }

    /// Whether subscribers of `topic` get a last-value snapshot.
    pub fn wants_snapshot(&self, topic: &str) -> bool {
        self.snapshot_topics
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => topic == pattern,
            })
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("topic_bytes_max", self.topic_bytes_max),
            ("topics_per_shard_max", self.topics_per_shard_max),
            (
                "subscriptions_per_connection_max",
                self.subscriptions_per_connection_max,
            ),
            ("request_bytes_max", self.request_bytes_max),
            ("mailbox_commands_max", self.mailbox_commands_max),
            ("outbox_commands_max", self.outbox_commands_max),
            ("outbound_shard_bytes_max", self.outbound_shard_bytes_max),
            ("topic_creations_burst", self.topic_creations_burst as usize),
            ("demo_symbols", self.demo_symbols),
            ("publish_json_depth_max", self.publish_json_depth_max),
            (
                "publish_json_number_bytes_max",
                self.publish_json_number_bytes_max,
            ),
            ("stream_topics_max", self.stream_topics_max),
            ("stream_heartbeat_ms", self.stream_heartbeat_ms as usize),
            ("poll_wait_ms_max", self.poll_wait_ms_max as usize),
            ("poll_messages_max", self.poll_messages_max),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.topic_bytes_max > super::topic::TOPIC_BYTES_LIMIT {
            return Err(format!(
                "topic_bytes_max {} exceeds {}",
                self.topic_bytes_max,
                super::topic::TOPIC_BYTES_LIMIT
            ));
        }
        if self.stream_topics_max > super::cursor::CURSOR_TOPICS_LIMIT {
            return Err(format!(
                "stream_topics_max {} exceeds {}: a cursor must fit in a request header",
                self.stream_topics_max,
                super::cursor::CURSOR_TOPICS_LIMIT
            ));
        }
        if self.poll_wait_ms_default > self.poll_wait_ms_max {
            return Err("poll_wait_ms_default must not exceed poll_wait_ms_max".into());
        }
        use super::demo::{MESSAGES_PER_SECOND_MAX, SYMBOLS_COUNT_MAX};
        if !(1..=MESSAGES_PER_SECOND_MAX).contains(&self.demo_messages_per_second) {
            return Err(format!(
                "demo_messages_per_second must be within 1..={MESSAGES_PER_SECOND_MAX}"
            ));
        }
        if self.demo_symbols > SYMBOLS_COUNT_MAX {
            return Err(format!(
                "demo_symbols must be within 1..={SYMBOLS_COUNT_MAX}"
            ));
        }
        Ok(())
    }
}
