//! What the NATS bridge counts, for `GET /metrics`: plain atomics the bridge thread (and, for
//! refusals, the shards' feeds) add to, read by a `prometheus-client` collector that any
//! shard's scrape encodes beside its own families. Every family is named `cluster_*`.
//!
//! The counters follow one publish from the shard to JetStream and one message from JetStream
//! to the owner shard, so that a dashboard can tell a slow NATS (`cluster_publish_latency`,
//! `cluster_queue_depth`), a contended topic (`cluster_publish_retries{reason="conflict"}`) and
//! a lost NATS (`cluster_state`, `cluster_reconnects`, `cluster_publish_failures`) apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::feed::PublishFeed;

/// Why a publish attempt was followed by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// JetStream's compare-and-set refused it: another node published the topic meanwhile.
    Conflict,
    /// No answer within `nats_request_timeout_ms`, NATS gone, or another error.
    Error,
    /// Stored, but another node's publish of the topic was stored first with the same seq
    /// (nats-server 2.9's clustered compare-and-set): published again.
    Collision,
}

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [
        RetryReason::Conflict,
        RetryReason::Error,
        RetryReason::Collision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RetryReason::Conflict => "conflict",
            RetryReason::Error => "error",
            RetryReason::Collision => "collision",
        }
    }
}

/// Why a publish was answered with an error (HTTP 503) rather than a seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Its attempts went on for `nats_publish_timeout_ms` without an acknowledgement.
    Timeout,
    /// The shard's queue to the bridge was full (`nats_shard_publishes_max`).
    QueueFull,
}

impl FailureReason {
    pub const ALL: [FailureReason; 2] = [FailureReason::Timeout, FailureReason::QueueFull];

    pub fn name(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::QueueFull => "queue_full",
        }
    }
}

/// Upper bounds of the publish latency histogram, in seconds: from a tenth of a millisecond
/// (loopback, one JetStream server) to the longest `nats_publish_timeout_ms` accepted.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0, 60.0,
];

/// The bridge's counters and levels.
#[derive(Debug)]
pub struct ClusterMetrics {
    /// Publishes the bridge took from the shards' feeds.
    pub publishes: AtomicU64,
    /// Publish messages sent to JetStream, retries included.
    pub attempts: AtomicU64,
    /// Publishes JetStream stored, whose publisher got a seq.
    pub acknowledged: AtomicU64,
    /// Attempts JetStream answered as duplicates of a stored one (an acknowledgement lost).
    pub duplicates: AtomicU64,
    retries: [AtomicU64; RetryReason::ALL.len()],
    /// Publishes that failed after their deadline (`Timeout`); queue-full refusals are counted
    /// by the feeds themselves.
    timeouts: AtomicU64,
    /// Messages the ordered consumer read from the stream, ringcast's or not.
    pub messages_received: AtomicU64,
    /// Of those, messages ringcast did not write (no seq header, a subject that is no topic).
    pub messages_foreign: AtomicU64,
    /// Times the client connected again after losing its connection.
    pub reconnects: AtomicU64,
    /// Times the stream's reading started again (a lost connection or consumer).
    pub consumer_restarts: AtomicU64,
    /// Publishes sent to JetStream and not yet answered, and those waiting behind another of
    /// their topic (levels the publish loop sets).
    pub in_flight: AtomicU64,
    pub waiting: AtomicU64,
    /// Whether the client is connected now; shared with `/health`.
    pub connected: Arc<AtomicBool>,
    /// From a publish's first attempt to its acknowledgement.
    pub publish_latency: Histogram,
    /// The shards' feeds, for their depth, size and refusals.
    pub feeds: Vec<Arc<PublishFeed>>,
    /// Each feed's size (`nats_shard_publishes_max`).
    pub feed_publishes_max: usize,
}

impl ClusterMetrics {
    pub fn new(
        connected: Arc<AtomicBool>,
        feeds: Vec<Arc<PublishFeed>>,
        feed_publishes_max: usize,
    ) -> ClusterMetrics {
        ClusterMetrics {
            publishes: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retries: Default::default(),
            timeouts: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            messages_foreign: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            consumer_restarts: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            connected,
            publish_latency: Histogram::new(LATENCY_BUCKETS_SECONDS),
            feeds,
            feed_publishes_max,
        }
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self, reason: RetryReason) {
        let index = RetryReason::ALL.iter().position(|&other| other == reason);
        self.retries[index.expect("every reason is listed")].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self, reason: RetryReason) -> u64 {
        let index = RetryReason::ALL.iter().position(|&other| other == reason);
        self.retries[index.expect("every reason is listed")].load(Ordering::Relaxed)
    }

    pub fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        match reason {
            FailureReason::Timeout => self.timeouts.load(Ordering::Relaxed),
            FailureReason::QueueFull => self.feeds.iter().map(|feed| feed.refusals()).sum(),
        }
    }
}

/// The collector a shard's metrics registry holds.
#[derive(Debug)]
pub struct ClusterCollector(pub Arc<ClusterMetrics>);

type Read = fn(&ClusterMetrics) -> u64;

/// Counter families without labels: name, help, value.
#[rustfmt::skip]
const COUNTER_FAMILIES: [(&str, &str, Read); 8] = [
    ("cluster_publishes", "Publishes the NATS bridge took from the shards' queues.",
        |m| m.publishes.load(Ordering::Relaxed)),
    ("cluster_publish_attempts", "Publish messages sent to JetStream, retries included.",
        |m| m.attempts.load(Ordering::Relaxed)),
    ("cluster_publishes_acknowledged",
        "Publishes JetStream acknowledged as stored: their publisher got a seq.",
        |m| m.acknowledged.load(Ordering::Relaxed)),
    ("cluster_publish_duplicates",
        "Attempts JetStream answered as duplicates of a stored one (an acknowledgement lost, a \
         key retried on another node): the first copy's seq stands.",
        |m| m.duplicates.load(Ordering::Relaxed)),
    ("cluster_messages_received",
        "Messages the node read from the stream (every node reads every topic's).",
        |m| m.messages_received.load(Ordering::Relaxed)),
    ("cluster_foreign_messages",
        "Messages of the stream that ringcast did not write (no seq header), skipped.",
        |m| m.messages_foreign.load(Ordering::Relaxed)),
    ("cluster_reconnects", "Times the NATS connection came back after it was lost.",
        |m| m.reconnects.load(Ordering::Relaxed)),
    ("cluster_consumer_restarts",
        "Times the stream's reading started again after the last message read.",
        |m| m.consumer_restarts.load(Ordering::Relaxed)),
];

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = &self.0;
        for (name, help, read) in &COUNTER_FAMILIES {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(read(metrics)).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "cluster_publish_retries",
            "Publish attempts followed by another, by reason: conflict (JetStream's \
             compare-and-set refused it: another node published the topic), error (no answer \
             in nats_request_timeout_ms, NATS gone, another error), collision (stored, but \
             another node's publish of the topic was stored first with the same seq: \
             published again).",
            None,
            MetricType::Counter,
        )?;
        for reason in RetryReason::ALL {
            let labels = [("reason", reason.name())];
            ConstCounter::new(metrics.retries(reason)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "cluster_publish_failures",
            "Publishes answered with an error (503), never stored, by reason: timeout (no \
             acknowledgement within nats_publish_timeout_ms), queue_full (the shard's queue \
             to the bridge was full).",
            None,
            MetricType::Counter,
        )?;
        for reason in FailureReason::ALL {
            let labels = [("reason", reason.name())];
            ConstCounter::new(metrics.failures(reason)).encode(family.encode_family(&labels)?)?;
        }
        let connected = metrics.connected.load(Ordering::Acquire);
        let mut family = encoder.encode_descriptor(
            "cluster_state",
            "1 for the bridge's state now: connected to NATS, or degraded (reconnecting; \
             publishes wait, /health answers 503).",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("connected", connected), ("degraded", !connected)] {
            let labels = [("state", state)];
            ConstGauge::new(i64::from(value)).encode(family.encode_family(&labels)?)?;
        }
        encode_feeds(metrics, &mut encoder)?;
        let family = encoder.encode_descriptor(
            "cluster_publish_latency",
            "From a publish's first attempt to JetStream's acknowledgement, retries included \
             (not the wait behind an earlier publish of its topic).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metrics.publish_latency.encode(family)?;
        Ok(())
    }
}

/// Each shard's queue to the bridge: publishes waiting, and the most it holds; and the
/// bridge's publishes in flight and waiting behind their topic's.
fn encode_feeds(metrics: &ClusterMetrics, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    #[rustfmt::skip]
    let levels = [
        ("cluster_publishes_in_flight",
            "Publishes sent to JetStream and not yet answered (at most \
             nats_publishes_in_flight_max, one per topic).",
            &metrics.in_flight),
        ("cluster_publishes_waiting",
            "Publishes the bridge holds behind the publish in flight of their topic.",
            &metrics.waiting),
    ];
    for (name, help, level) in levels {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(level.load(Ordering::Relaxed) as i64).encode(family)?;
    }
    let mut family = encoder.encode_descriptor(
        "cluster_queue_depth",
        "Publishes waiting in the shard's queue to the NATS bridge.",
        None,
        MetricType::Gauge,
    )?;
    for (shard, feed) in metrics.feeds.iter().enumerate() {
        let labels = [("shard", shard as u64)];
        ConstGauge::new(feed.depth() as i64).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "cluster_queue_depth_max",
        "Publishes the shard's queue to the NATS bridge holds (nats_shard_publishes_max); one \
         more is refused with 503.",
        None,
        MetricType::Gauge,
    )?;
    for shard in 0..metrics.feeds.len() {
        let labels = [("shard", shard as u64)];
        let value = metrics.feed_publishes_max as i64;
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::feed::IntakeSignal;

    fn render(metrics: ClusterMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("ringcast");
        registry.register_collector(Box::new(ClusterCollector(Arc::new(metrics))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn every_family_is_written_with_its_labels() {
        // Proves the names dashboards and the cluster tests read, with reasons as labels.
        let signal = Arc::new(IntakeSignal::default());
        let feeds = vec![Arc::new(PublishFeed::new(2, Arc::clone(&signal)))];
        let metrics = ClusterMetrics::new(Arc::new(AtomicBool::new(true)), feeds, 2);
        ClusterMetrics::add(&metrics.attempts);
        metrics.retried(RetryReason::Conflict);
        metrics.timed_out();
        let text = render(metrics);
        for expected in [
            "ringcast_cluster_publish_attempts_total 1",
            "ringcast_cluster_publishes_acknowledged_total 0",
            "ringcast_cluster_publish_retries_total{reason=\"conflict\"} 1",
            "ringcast_cluster_publish_retries_total{reason=\"error\"} 0",
            "ringcast_cluster_publish_failures_total{reason=\"timeout\"} 1",
            "ringcast_cluster_publish_failures_total{reason=\"queue_full\"} 0",
            "ringcast_cluster_state{state=\"connected\"} 1",
            "ringcast_cluster_state{state=\"degraded\"} 0",
            "ringcast_cluster_queue_depth{shard=\"0\"} 0",
            "ringcast_cluster_queue_depth_max{shard=\"0\"} 2",
            "ringcast_cluster_publish_latency_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing {expected:?}\n{text}"
            );
        }
    }
}
