//! What the webhook delivery counts, per endpoint, for `GET /metrics`: plain atomics the egress
//! thread adds to, read by a `prometheus-client` collector that any shard's scrape encodes
//! beside its own families (every series labelled `endpoint`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::retry::FailureClass;
use crate::egress::feed::EventFeed;

/// Why events were dropped without being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The endpoint's queue was full: the oldest waiting went (or the event was too large).
    QueueFull,
    /// Their request failed `attempts_max` times.
    AttemptsExhausted,
    /// The endpoint answered 410 Gone and takes nothing more.
    Disabled,
    /// The process stopped before they were delivered.
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::AttemptsExhausted,
        DropReason::Disabled,
        DropReason::Shutdown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::AttemptsExhausted => "attempts_exhausted",
            DropReason::Disabled => "disabled",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// Upper bounds of the delivery latency histogram, in seconds: from a millisecond (a local
/// receiver) to ten minutes (retries over an outage).
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 600.0,
];

/// One endpoint's counters and levels.
#[derive(Debug)]
pub struct EndpointMetrics {
    pub name: String,
    /// Events accepted into the queue (coalesced ones included, dropped ones too).
    pub events: AtomicU64,
    pub attempts: AtomicU64,
    /// Requests answered 2xx, and the events they carried.
    pub requests_delivered: AtomicU64,
    pub events_delivered: AtomicU64,
    /// Attempts that were followed by another.
    pub retries: AtomicU64,
    failures: [AtomicU64; FailureClass::ALL.len()],
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Events never sent because their opposite followed within the wait.
    pub coalesced: AtomicU64,
    pub queue_depth: AtomicU64,
    pub queue_bytes: AtomicU64,
    pub disabled: AtomicU64,
    /// From the oldest event of a request being queued to its 2xx.
    pub latency: Histogram,
}

impl EndpointMetrics {
    pub fn new(name: &str) -> EndpointMetrics {
        EndpointMetrics {
            name: name.to_owned(),
            events: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            requests_delivered: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failures: Default::default(),
            drops: Default::default(),
            coalesced: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_bytes: AtomicU64::new(0),
            disabled: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS_SECONDS),
        }
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn failure(&self, class: FailureClass) {
        let index = FailureClass::ALL.iter().position(|&other| other == class);
        self.failures[index.expect("every class is listed")].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason, events: u64) {
        let index = DropReason::ALL.iter().position(|&other| other == reason);
        self.drops[index.expect("every reason is listed")].fetch_add(events, Ordering::Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        let index = DropReason::ALL.iter().position(|&other| other == reason);
        self.drops[index.expect("every reason is listed")].load(Ordering::Relaxed)
    }
}

/// Every endpoint's metrics, and the shards' feeds (for their drops).
#[derive(Debug)]
pub struct WebhookMetrics {
    pub endpoints: Vec<EndpointMetrics>,
    pub feeds: Vec<Arc<EventFeed>>,
    /// Clustered, with occupancy webhooks: what the occupancy task counts.
    pub occupancy: Option<Arc<crate::egress::occupancy::OccupancyCounters>>,
}

/// The collector a shard's metrics registry holds.
#[derive(Debug)]
pub struct WebhookCollector(pub Arc<WebhookMetrics>);

type Read = fn(&EndpointMetrics) -> u64;

/// Families with one series per endpoint: name, help, type, value.
#[rustfmt::skip]
const ENDPOINT_FAMILIES: [(&str, &str, MetricType, Read); 9] = [
    ("webhook_events", "Events queued for the endpoint (before coalescing and drops).",
        MetricType::Counter, |m| m.events.load(Ordering::Relaxed)),
    ("webhook_attempts", "HTTP requests attempted to the endpoint, retries included.",
        MetricType::Counter, |m| m.attempts.load(Ordering::Relaxed)),
    ("webhook_successes", "Requests the endpoint answered 2xx.",
        MetricType::Counter, |m| m.requests_delivered.load(Ordering::Relaxed)),
    ("webhook_delivered_events", "Events in requests the endpoint answered 2xx.",
        MetricType::Counter, |m| m.events_delivered.load(Ordering::Relaxed)),
    ("webhook_retries", "Attempts that failed and were tried again.",
        MetricType::Counter, |m| m.retries.load(Ordering::Relaxed)),
    ("webhook_coalesced_events",
        "topic.occupied/vacated events never sent because their opposite followed in time.",
        MetricType::Counter, |m| m.coalesced.load(Ordering::Relaxed)),
    ("webhook_queue_depth", "Events waiting for the endpoint (not counting the request in flight).",
        MetricType::Gauge, |m| m.queue_depth.load(Ordering::Relaxed)),
    ("webhook_queue", "Memory the endpoint's queue holds, the request in flight included.",
        MetricType::Gauge, |m| m.queue_bytes.load(Ordering::Relaxed)),
    ("webhook_disabled", "1 once the endpoint answered 410 Gone: it takes no more events.",
        MetricType::Gauge, |m| m.disabled.load(Ordering::Relaxed)),
];

impl Collector for WebhookCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = &self.0;
        for (name, help, metric_type, read) in &ENDPOINT_FAMILIES {
            let unit = (*name == "webhook_queue").then_some(&Unit::Bytes);
            let mut family = encoder.encode_descriptor(name, help, unit, *metric_type)?;
            for endpoint in &metrics.endpoints {
                let labels = [("endpoint", endpoint.name.as_str())];
                let series = family.encode_family(&labels)?;
                match metric_type {
                    MetricType::Counter => ConstCounter::new(read(endpoint)).encode(series)?,
                    _ => ConstGauge::new(read(endpoint) as i64).encode(series)?,
                }
            }
        }
        encode_by_label(
            &mut encoder,
            "webhook_failures",
            "Failed attempts by class: timeout, connection, destination_refused (a name that \
             resolved only to private addresses), redirect (3xx, not followed), client_error \
             (4xx), throttled (429), server_error (5xx), gone (410, which disables).",
            "class",
            &metrics.endpoints,
            &FailureClass::ALL.map(FailureClass::name),
            |endpoint, index| endpoint.failures[index].load(Ordering::Relaxed),
        )?;
        encode_by_label(
            &mut encoder,
            "webhook_dropped_events",
            "Events never delivered, by reason: queue_full (the oldest went to make room), \
             attempts_exhausted, disabled (after 410 Gone), shutdown.",
            "reason",
            &metrics.endpoints,
            &DropReason::ALL.map(DropReason::name),
            |endpoint, index| endpoint.drops[index].load(Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "webhook_delivery_latency",
            "From the oldest event of a request being queued to the endpoint's 2xx.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for endpoint in &metrics.endpoints {
            let labels = [("endpoint", endpoint.name.as_str())];
            endpoint.latency.encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "webhook_feed_drops",
            "Events a shard dropped because its feed to the webhook thread was full (the oldest \
             went).",
            None,
            MetricType::Counter,
        )?;
        for (shard, feed) in metrics.feeds.iter().enumerate() {
            let labels = [("shard", shard as u64)];
            ConstCounter::new(feed.drops()).encode(family.encode_family(&labels)?)?;
        }
        if let Some(occupancy) = &metrics.occupancy {
            let mut family = encoder.encode_descriptor(
                "cluster_occupancy_changes",
                "Clustered: this node's changes of a topic's occupancy made cluster-wide \
                 (applied), dropped because nats_occupancy_changes_max waited, failed (NATS \
                 refused them), and ids of dead nodes removed (swept).",
                None,
                MetricType::Counter,
            )?;
            let outcomes = [
                ("applied", &occupancy.applied),
                ("dropped", &occupancy.dropped),
                ("failed", &occupancy.failed),
                ("swept", &occupancy.swept),
            ];
            for (outcome, value) in outcomes {
                let labels = [("outcome", outcome)];
                let value = value.load(Ordering::Relaxed);
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A counter family with one series per endpoint and label value.
fn encode_by_label(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    endpoints: &[EndpointMetrics],
    values: &[&str],
    read: impl Fn(&EndpointMetrics, usize) -> u64,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for endpoint in endpoints {
        for (index, value) in values.iter().enumerate() {
            let labels = [("endpoint", endpoint.name.as_str()), (label, value)];
            ConstCounter::new(read(endpoint, index)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}
