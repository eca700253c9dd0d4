//! The NATS JetStream settings (`[nats]` in the config file), with their defaults and the
//! reasons for them, and their validation at start-up. Without `nats_urls` ringcast is a single
//! node and none of the rest is read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most NATS URLs in `nats_urls`: the client tries them in turn, and a cluster is reached
/// through any of its servers (they tell the client of the others).
pub const NATS_URLS_MAX: usize = 16;
/// Most replicas JetStream keeps of a stream.
pub const REPLICAS_MAX: usize = 5;
/// Longest name JetStream takes for a stream (it becomes a directory and a subject token).
pub const STREAM_NAME_BYTES_MAX: usize = 255;
/// Longest subject prefix: a topic's subject is the prefix, a dot and up to three bytes per
/// byte of the topic name, and must stay far below NATS' own limits.
pub const SUBJECT_PREFIX_BYTES_MAX: usize = 128;
/// Longest time limit accepted for connecting, one request and a publish's retries: a minute.
pub const TIMEOUT_MS_LIMIT: u64 = 60_000;
/// Most publishes one shard's queue to the bridge may hold: a million slots is 80 MiB per shard.
pub const SHARD_PUBLISHES_LIMIT: usize = 1024 * 1024;
/// Most publishes the bridge may have in flight to JetStream at once: each holds its message
/// and an acknowledgement subscription until JetStream answers.
pub const PUBLISHES_IN_FLIGHT_LIMIT: usize = 4096;
/// Most subscriptions one shard may hold for its node to catch up with the stream: each is
/// about 64 bytes while it waits.
pub const CATCH_UP_SUBSCRIPTIONS_LIMIT: usize = 1024 * 1024;
/// Most local changes of occupancy waiting for the cluster: each is about 40 bytes.
pub const OCCUPANCY_CHANGES_LIMIT: usize = 1024 * 1024;

/// How ringcast joins other nodes through NATS JetStream (`[nats]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS servers to connect to, comma-separated (`nats://10.0.0.5:4222,nats://10.0.0.6:4222`;
    /// a bare `host:port` is taken as `nats://`). Default "" (none): a single node, exactly as
    /// without NATS. With it, the node joins the cluster of every ringcast node on the same
    /// stream: topics, seqs and history are shared.
    pub nats_urls: String,
    /// The JetStream stream holding every topic's messages. Default "ringcast". Nodes on the
    /// same stream are one cluster; created at start-up when missing, checked when present.
    pub nats_stream: String,
    /// The subjects of the stream: topic `T` is subject `<prefix>.<T>` (bytes NATS gives a
    /// meaning to, such as `.` or `*`, percent-escaped). Default "ringcast.topic".
    pub nats_subject_prefix: String,
    /// Copies JetStream keeps of each message (1 to 5; a NATS cluster of at least as many
    /// servers). Default 1: Debian's single nats-server. Use 3 in production.
    pub nats_replicas: usize,
    /// Messages JetStream keeps per topic (`max_messages_per_subject`): how far back a client
    /// can resume with `since` on any node and after restarts. Default 1,024, like the local
    /// `history_messages_max`.
    pub nats_history_messages_max: u64,
    /// Bytes the stream may hold over every topic before JetStream drops the oldest messages
    /// (`max_bytes`). Default 1 GiB.
    pub nats_stream_bytes_max: u64,
    /// Time to connect to a NATS server at start-up (the start fails after it, naming the
    /// URLs) and each time afterwards. Default 5 s.
    pub nats_connect_timeout_ms: u64,
    /// Time one JetStream request (a stream check, a publish acknowledgement) may take before
    /// it is retried or reported. Default 5 s.
    pub nats_request_timeout_ms: u64,
    /// How long a publish is retried (NATS reconnecting, a stream leader being elected, another
    /// node publishing the same topic) before its publisher is answered with an error (HTTP
    /// 503): never a silent drop. Default 10 s.
    pub nats_publish_timeout_ms: u64,
    /// Publishes each shard may have waiting for the bridge (a lock-free queue allocated at
    /// start-up, about 80 bytes a slot); past it a publish is refused at once with 503
    /// (`cluster_publish_failures{reason="queue_full"}`). Default 4,096.
    pub nats_shard_publishes_max: usize,
    /// Publishes the bridge has in flight to JetStream at once, each of another topic: a
    /// topic's next publish must name the stream sequence of its previous one (the
    /// compare-and-set), which is known only from that one's acknowledgement, so one topic
    /// has one in flight and its next wait behind it, in order. 1 publishes one at a time.
    /// Default 64.
    pub nats_publishes_in_flight_max: usize,
    /// How long a topic's owner holds a subscription whose `since` is past what this node has
    /// read of the stream (a client failing over from a node that had read further), waiting
    /// to read up to it, before it answers `reset` (`since` never published in this epoch, or
    /// the stream unreadable). Default 2 s: far above a consumer's lag between nodes.
    pub nats_catch_up_ms: u64,
    /// Such subscriptions a shard holds at once; past it one is answered at once (`reset`).
    /// Default 4,096.
    pub nats_catch_up_subscriptions_max: usize,
    /// With webhooks for `topic.occupied`/`vacated`: how long a node that stopped writing its
    /// heartbeat (killed, cut off) still counts as having its subscribers; after it, another
    /// node removes them and sends the `topic.vacated` they owed. Default 10 s.
    pub nats_node_liveness_ms: u64,
    /// Local changes of occupancy waiting to be made cluster-wide; past it one is dropped
    /// (counted). Default 4,096.
    pub nats_occupancy_changes_max: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            nats_urls: String::new(),
            nats_stream: "ringcast".into(),
            nats_subject_prefix: "ringcast.topic".into(),
            nats_replicas: 1,
            nats_history_messages_max: 1024,
            nats_stream_bytes_max: 1024 * 1024 * 1024,
            nats_connect_timeout_ms: 5_000,
            nats_request_timeout_ms: 5_000,
            nats_publish_timeout_ms: 10_000,
            nats_shard_publishes_max: 4096,
            nats_publishes_in_flight_max: 64,
            nats_catch_up_ms: 2_000,
            nats_catch_up_subscriptions_max: 4_096,
            nats_node_liveness_ms: 10_000,
            nats_occupancy_changes_max: 4_096,
        }
    }
}

/// The checked settings the bridge starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSettings {
    pub urls: Vec<String>,
    pub stream: String,
    pub subject_prefix: String,
    pub replicas: usize,
    pub history_messages_max: u64,
    pub stream_bytes_max: u64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub publish_timeout: Duration,
    pub catch_up: Duration,
    pub catch_up_subscriptions_max: usize,
    pub node_liveness: Duration,
    pub occupancy_changes_max: usize,
    pub shard_publishes_max: usize,
    pub publishes_in_flight_max: usize,
    /// The broker's `topic_bytes_max`: a subject whose topic is longer is not ringcast's.
    pub topic_bytes_max: usize,
    /// JetStream's deduplication window: the broker's `idempotency_window_ms`, so that a key
    /// retried on any node within it is answered with the first seq.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    /// Whether the node is clustered (`nats_urls` is set).
    pub fn is_enabled(&self) -> bool {
        !self.nats_urls.trim().is_empty()
    }

    /// The checked settings, or `None` when `nats_urls` is empty. The error names the setting.
    pub fn settings(&self) -> Result<Option<NatsSettings>, (&'static str, String)> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let urls = parse_urls(&self.nats_urls).map_err(|reason| ("nats_urls", reason))?;
        check_stream_name(&self.nats_stream).map_err(|reason| ("nats_stream", reason))?;
        check_subject_prefix(&self.nats_subject_prefix)
            .map_err(|reason| ("nats_subject_prefix", reason))?;
        if !(1..=REPLICAS_MAX).contains(&self.nats_replicas) {
            let reason = format!("{} is outside 1..={REPLICAS_MAX}", self.nats_replicas);
            return Err(("nats_replicas", reason));
        }
        if self.nats_history_messages_max == 0 || self.nats_history_messages_max > i64::MAX as u64 {
            let reason = "must be at least 1 (the latest message of each topic)".to_owned();
            return Err(("nats_history_messages_max", reason));
        }
        if self.nats_stream_bytes_max == 0 || self.nats_stream_bytes_max > i64::MAX as u64 {
            let reason = format!("{} is outside 1..={}", self.nats_stream_bytes_max, i64::MAX);
            return Err(("nats_stream_bytes_max", reason));
        }
        let count = |name: &'static str, value: usize, limit: usize| {
            if (1..=limit).contains(&value) {
                Ok(value)
            } else {
                Err((name, format!("{value} is outside 1..={limit}")))
            }
        };
        let shard_publishes_max = count(
            "nats_shard_publishes_max",
            self.nats_shard_publishes_max,
            SHARD_PUBLISHES_LIMIT,
        )?;
        let publishes_in_flight_max = count(
            "nats_publishes_in_flight_max",
            self.nats_publishes_in_flight_max,
            PUBLISHES_IN_FLIGHT_LIMIT,
        )?;
        let catch_up_subscriptions_max = count(
            "nats_catch_up_subscriptions_max",
            self.nats_catch_up_subscriptions_max,
            CATCH_UP_SUBSCRIPTIONS_LIMIT,
        )?;
        let occupancy_changes_max = count(
            "nats_occupancy_changes_max",
            self.nats_occupancy_changes_max,
            OCCUPANCY_CHANGES_LIMIT,
        )?;
        let timeout = |name: &'static str, milliseconds: u64| {
            if (1..=TIMEOUT_MS_LIMIT).contains(&milliseconds) {
                Ok(Duration::from_millis(milliseconds))
            } else {
                Err((
                    name,
                    format!("{milliseconds} is outside 1..={TIMEOUT_MS_LIMIT}"),
                ))
            }
        };
        Ok(Some(NatsSettings {
            urls,
            stream: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
            replicas: self.nats_replicas,
            history_messages_max: self.nats_history_messages_max,
            stream_bytes_max: self.nats_stream_bytes_max,
            connect_timeout: timeout("nats_connect_timeout_ms", self.nats_connect_timeout_ms)?,
            request_timeout: timeout("nats_request_timeout_ms", self.nats_request_timeout_ms)?,
            publish_timeout: timeout("nats_publish_timeout_ms", self.nats_publish_timeout_ms)?,
            catch_up: timeout("nats_catch_up_ms", self.nats_catch_up_ms)?,
            catch_up_subscriptions_max,
            node_liveness: timeout("nats_node_liveness_ms", self.nats_node_liveness_ms)?,
            occupancy_changes_max,
            shard_publishes_max,
            publishes_in_flight_max,
            topic_bytes_max: crate::broker::TOPIC_BYTES_LIMIT,
            duplicate_window: Duration::from_secs(120),
        }))
    }
}

/// Splits `nats_urls` at commas; each must be `nats://host:port` (or `host:port`), without
/// credentials in it (they would show in the log).
fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for url in text.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(format!("{text:?} has an empty URL between commas"));
        }
        let rest = url.strip_prefix("nats://").unwrap_or(url);
        if rest.contains("://") {
            return Err(format!("{url:?}: only nats:// URLs are taken"));
        }
        if rest.contains('@') {
            return Err(format!("{url:?}: credentials in the URL are not taken"));
        }
        let port_ok = rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{url:?} is not HOST:PORT"));
        }
        urls.push(format!("nats://{rest}"));
    }
    if urls.len() > NATS_URLS_MAX {
        return Err(format!("{} URLs, at most {NATS_URLS_MAX}", urls.len()));
    }
    Ok(urls)
}

fn check_stream_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= STREAM_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: 1 to {STREAM_NAME_BYTES_MAX} letters, digits, '-' or '_'"
        ))
    }
}

fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    let token_ok = |token: &str| {
        !token.is_empty()
            && token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    };
    if !prefix.is_empty()
        && prefix.len() <= SUBJECT_PREFIX_BYTES_MAX
        && prefix.split('.').all(token_ok)
    {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?}: dot-separated tokens of letters, digits, '-' or '_', at most \
             {SUBJECT_PREFIX_BYTES_MAX} bytes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the settings are read only when `nats_urls` is set, and each bad value is refused
    /// naming its setting.
    #[test]
    fn settings_are_checked_and_named() {
        assert_eq!(NatsConfig::default().settings(), Ok(None));
        let config = NatsConfig {
            nats_urls: "127.0.0.1:4222, nats://nats.example:4223".into(),
            ..NatsConfig::default()
        };
        let settings = config.settings().unwrap().unwrap();
        assert_eq!(
            settings.urls,
            ["nats://127.0.0.1:4222", "nats://nats.example:4223"]
        );
        let refused = |change: fn(&mut NatsConfig)| {
            let mut config = config.clone();
            change(&mut config);
            config.settings().unwrap_err().0
        };
        assert_eq!(refused(|c| c.nats_urls = "a:1,,b:2".into()), "nats_urls");
        assert_eq!(refused(|c| c.nats_urls = "tls://a:1".into()), "nats_urls");
        assert_eq!(refused(|c| c.nats_urls = "u:p@a:1".into()), "nats_urls");
        assert_eq!(refused(|c| c.nats_urls = "a".into()), "nats_urls");
        assert_eq!(refused(|c| c.nats_stream = "a.b".into()), "nats_stream");
        assert_eq!(
            refused(|c| c.nats_subject_prefix = "a.*".into()),
            "nats_subject_prefix"
        );
        assert_eq!(
            refused(|c| c.nats_subject_prefix = "a..b".into()),
            "nats_subject_prefix"
        );
        assert_eq!(refused(|c| c.nats_replicas = 6), "nats_replicas");
        assert_eq!(
            refused(|c| c.nats_history_messages_max = 0),
            "nats_history_messages_max"
        );
        assert_eq!(
            refused(|c| c.nats_connect_timeout_ms = 0),
            "nats_connect_timeout_ms"
        );
        assert_eq!(
            refused(|c| c.nats_publishes_in_flight_max = 0),
            "nats_publishes_in_flight_max"
        );
    }
}
