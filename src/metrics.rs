//! The text of `GET /metrics`: every shard's [`Counters`] and [`Gauges`] in the OpenMetrics text
//! format that Prometheus scrapes, written by the `prometheus-client` encoder.
//!
//! The shards publish plain [`ShardStats`] structs (see `crate::stats`); nothing on a shard's hot path touches an
//! atomic or a registry. A scrape hands the latest snapshots to [`MetricsRenderer::render`], which
//! writes one family per metric with a `shard` label on every series. Counters that count the same
//! thing for different reasons share one family with a reason label (`action`, `kind`, `op`,
//! `reason`), so that `sum by (action)` and the like work without knowing field names.
//!
//! The registry is built once, in [`MetricsRenderer::new`]; a scrape copies the snapshots into the
//! collector and encodes. The family table below is the single place that names a field.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

#[cfg(doc)]
use crate::stats::{Counters, Gauges};
use crate::stats::{PoolClassStats, ShardStats, TlsStats};

/// What to send as `Content-Type` with the text [`MetricsRenderer::render`] writes.
pub use crate::endpoint::http::METRICS_CONTENT_TYPE;

/// Every metric name starts with this (and an underscore).
pub const METRICS_PREFIX: &str = "ringcast";

/// One series of a family, per shard: the reason label's value (ignored in a family without a
/// reason label) and the field it reports.
type Series = (&'static str, fn(&ShardStats) -> u64);

/// One metric family: a name, its help and its series per shard.
struct Family {
    /// The name without the prefix, the unit and (for counters) the `_total` suffix, which the
    /// encoder adds.
    name: &'static str,
    /// Whether the family measures bytes: the encoder then appends `_bytes` and a `# UNIT` line.
    bytes: bool,
    /// What the family counts, in one line; no quotes or backslashes (the encoder does not escape
    /// help text of collected metrics).
    help: &'static str,
    metric_type: MetricType,
    /// The label that tells the series of one shard apart, or `None` for one series per shard.
    reason_label: Option<&'static str>,
    /// Each series of one shard.
    series: &'static [Series],
}

/// A family with one series per shard.
const fn single(
    name: &'static str,
    metric_type: MetricType,
    help: &'static str,
    series: &'static [Series],
) -> Family {
    Family {
        name,
        bytes: false,
        help,
        metric_type,
        reason_label: None,
        series,
    }
}

/// A family with one series per shard and reason.
const fn by_reason(
    name: &'static str,
    help: &'static str,
    reason_label: &'static str,
    series: &'static [Series],
) -> Family {
    Family {
        name,
        bytes: false,
        help,
        metric_type: MetricType::Counter,
        reason_label: Some(reason_label),
        series,
    }
}

/// A family of either type with one series per shard and value of `label`.
const fn labelled(
    name: &'static str,
    metric_type: MetricType,
    label: &'static str,
    help: &'static str,
    series: &'static [Series],
) -> Family {
    Family {
        metric_type,
        ..by_reason(name, help, label, series)
    }
}

/// A family measured in bytes, one series per shard.
const fn bytes(
    name: &'static str,
    metric_type: MetricType,
    help: &'static str,
    series: &'static [Series],
) -> Family {
    Family {
        bytes: true,
        ..single(name, metric_type, help, series)
    }
}

use MetricType::{Counter, Gauge};

/// Every family, in the order they are written. Each field of [`Counters`] and [`Gauges`]
/// appears exactly once; `every_field_is_exposed_once` fails otherwise.
#[rustfmt::skip]
static FAMILIES: &[Family] = &[
    single("connections_accepted", Counter, "Connections accepted.",
        &[("", |m| m.counters.connections_accepted)]),
    by_reason("connections_refused",
        "Connections refused because the shard's connection table was full, by how: answered_503 \
         = answered 503 Service Unavailable with Retry-After and closed, closed_unanswered = \
         closed without it (too many refusals in flight, or the client left first), dropped = \
         dropped by the kernel at accept (the table filled before the refusing accept took over).",
        "reason", &[
            ("answered_503", |m| m.counters.refusals_answered),
            ("closed_unanswered", |m| m.counters.refusals_unanswered),
            ("dropped", |m| m.counters.accept_table_full),
            ("per_ip_connections", |m| m.counters.address_connections_refused),
            ("per_ip_handshakes", |m| m.counters.address_handshakes_refused),
        ]),
    single("addresses_untracked", Counter,
        "Connections let through without per-address limits because addresses_tracked_max \
         addresses were tracked already.",
        &[("", |m| m.counters.addresses_untracked)]),
    by_reason("auth_failures",
        "Requests refused for authentication, by reason: 401 for a token that is missing, \
         malformed, of a bad signature or algorithm, expired, not yet valid, of another audience \
         or issuer, or of bad claims (failed refreshes count too); origin = 403 for an Origin \
         not in allowed_origins; metrics_token = GET /metrics without its token.",
        "reason", &[
            ("missing", |m| m.counters.auth_missing),
            ("malformed", |m| m.counters.auth_malformed),
            ("signature", |m| m.counters.auth_signature),
            ("algorithm", |m| m.counters.auth_algorithm),
            ("expired", |m| m.counters.auth_expired),
            ("not_yet_valid", |m| m.counters.auth_not_yet_valid),
            ("audience", |m| m.counters.auth_audience),
            ("issuer", |m| m.counters.auth_issuer),
            ("claims", |m| m.counters.auth_claims),
            ("origin", |m| m.counters.origin_refusals),
            ("metrics_token", |m| m.counters.metrics_refusals),
        ]),
    by_reason("forbidden",
        "Topics outside a token's grants, by kind: request = a subscribe or publish refused \
         (error reply or 403), revoked = a subscription ended because a refreshed token no \
         longer grants it.",
        "kind", &[
            ("request", |m| m.counters.forbidden_requests),
            ("revoked", |m| m.counters.subscriptions_revoked),
        ]),
    single("token_expiries", Counter,
        "WebSockets closed with 4001 because their token expired without a refresh, and SSE \
         and NDJSON streams ended at their token's expiry.",
        &[("", |m| m.counters.token_expiries)]),
    single("token_refreshes", Counter, "Token refreshes accepted over WebSockets.",
        &[("", |m| m.counters.token_refreshes)]),
    by_reason("cluster_ingests_skipped",
        "Clustered: messages from the stream the topic's owner did not deliver, by reason: \
         duplicate (it had that seq already: the stream read again after a reconnect), \
         table_full (its topic table had no room).",
        "reason", &[
            ("duplicate", |m| m.counters.cluster_duplicates),
            ("table_full", |m| m.counters.cluster_ingests_refused),
        ]),
    single("cluster_gaps", Counter,
        "Clustered: messages that came past a hole in their topic's seqs (JetStream dropped \
         messages before this node read them); subscribers see the seq jump.",
        &[("", |m| m.counters.cluster_gaps)]),
    single("cluster_catch_ups_held", Counter,
        "Clustered: subscriptions whose since this node had not read yet, held until it \
         caught up with the stream (a client failing over from a node that had read further).",
        &[("", |m| m.counters.cluster_catch_ups_held)]),
    by_reason("cluster_catch_ups",
        "Clustered: held subscriptions by how they were answered: caught_up (the node read \
         up to their since: no gap, no duplicate), timed_out (reset after nats_catch_up_ms, \
         or an epoch change), overflow (answered at once, nats_catch_up_subscriptions_max \
         already held).",
        "outcome", &[
            ("caught_up", |m| m.counters.cluster_catch_ups),
            ("timed_out", |m| m.counters.cluster_catch_up_timeouts),
            ("overflow", |m| m.counters.cluster_catch_up_overflows),
        ]),
    single("socketio_recoveries", Counter,
        "Socket.IO clients resubscribed from their connection-state-recovery offset.",
        &[("", |m| m.counters.socketio_recoveries)]),
    by_reason("socketio_polling_sessions",
        "Engine.IO long-polling sessions by event: opened, refused = a handshake answered 503 \
         because the shard keeps socketio_polling_sessions_max already, address_refused = a \
         handshake answered 429 because its address holds \
         socketio_polling_sessions_per_address_max of the shard's, upgraded = moved onto \
         a WebSocket, forwarded = a request of a connection handed to the session's shard \
         through the mailboxes (the connection landed on another shard).",
        "event", &[
            ("opened", |m| m.counters.socketio_sessions_opened),
            ("refused", |m| m.counters.socketio_sessions_refused),
            ("address_refused", |m| m.counters.socketio_sessions_address_refused),
            ("upgraded", |m| m.counters.socketio_upgrades),
            ("forwarded", |m| m.counters.socketio_forwards),
        ]),
    single("connections_closed", Counter, "Connections closed, for any reason.",
        &[("", |m| m.counters.connections_closed)]),
    single("websocket_upgrades", Counter, "HTTP connections upgraded to WebSocket.",
        &[("", |m| m.counters.upgrades)]),
    single("http_requests", Counter, "Plain HTTP requests (not upgrades) read.",
        &[("", |m| m.counters.http_requests)]),
    by_reason("peer_errors",
        "Peer mistakes by kind: handshake = request head refused or abandoned (the connection \
         closes), protocol = WebSocket protocol broken (closed with a close code), request = \
         request refused with an error reply or a 4xx status (bad JSON, unknown op, limits).",
        "kind", &[
            ("handshake", |m| m.counters.handshake_errors),
            ("protocol", |m| m.counters.protocol_errors),
            ("request", |m| m.counters.request_errors),
        ]),
    by_reason("timeouts",
        "Deadlines missed by kind: handshake = request head not complete in time (also between \
         keep-alive requests), pong = ping not answered, close = close sequence not over, \
         message = WebSocket message not finished in time.",
        "kind", &[
            ("handshake", |m| m.counters.handshake_timeouts),
            ("pong", |m| m.counters.pong_timeouts),
            ("close", |m| m.counters.close_timeouts),
            ("message", |m| m.counters.message_timeouts),
        ]),
    by_reason("slow_consumer_actions",
        "Slow-consumer policy actions by action: drop = newest message dropped, conflate = older \
         message replaced by a newer one of the same topic, disconnect = connection closed, \
         stall = connection closed because its queue made no progress.",
        "action", &[
            ("drop", |m| m.counters.slow_consumer_drops),
            ("conflate", |m| m.counters.slow_consumer_conflations),
            ("disconnect", |m| m.counters.slow_consumer_closes),
            ("stall", |m| m.counters.send_stalls),
        ]),
    by_reason("reading_pauses",
        "Times reading from a peer paused, by reason: replies_queued = replies to it piled up, \
         outbox_full = the shard's outbox to another shard was full (a publisher).",
        "reason", &[
            ("replies_queued", |m| m.counters.reading_pauses),
            ("outbox_full", |m| m.counters.publisher_pauses),
        ]),
    by_reason("requests",
        "Broker requests received from this shard's connections (WebSocket and HTTP), by op.",
        "op", &[
            ("publish", |m| m.counters.publish_requests),
            ("subscribe", |m| m.counters.subscribe_requests),
            ("unsubscribe", |m| m.counters.unsubscribe_requests),
        ]),
    single("messages_received", Counter, "WebSocket messages received from peers.",
        &[("", |m| m.counters.messages_received)]),
    bytes("received", Counter, "Bytes received from peers.",
        &[("", |m| m.counters.bytes_received)]),
    bytes("sent", Counter, "Bytes sent to peers.",
        &[("", |m| m.counters.bytes_sent)]),
    single("pings_sent", Counter, "Pings sent to idle WebSocket peers.",
        &[("", |m| m.counters.pings_sent)]),
    single("receive_buffer_shortages", Counter,
        "Receives that found no provided buffer free; the connection waits until buffers return.",
        &[("", |m| m.counters.receive_buffer_shortages)]),
    single("stale_completions", Counter,
        "Ring completions for a connection slot since reused by another connection (ignored).",
        &[("", |m| m.counters.stale_completions)]),
    single("messages_published", Counter,
        "Messages this shard assigned a sequence number to, as the owner of their topic.",
        &[("", |m| m.counters.messages_published)]),
    single("deliveries", Counter, "Frames queued to this shard's subscribers.",
        &[("", |m| m.counters.deliveries)]),
    single("replays", Counter, "Subscriptions served from history with since.",
        &[("", |m| m.counters.replays)]),
    single("replayed_messages", Counter, "Messages replayed from history to subscriptions.",
        &[("", |m| m.counters.replayed_messages)]),
    single("resets", Counter,
        "Subscriptions answered with reset because since + 1 had left the history.",
        &[("", |m| m.counters.resets)]),
    single("replay_pages", Counter,
        "Pages of replays served: a long replay comes in pages as the subscriber's queue drains.",
        &[("", |m| m.counters.replay_pages)]),
    single("replays_lost", Counter,
        "Replays cut short because what they asked for left history meanwhile (answered reset).",
        &[("", |m| m.counters.replays_lost)]),
    single("topics_expired", Counter,
        "Topics forgotten after topic_idle_ms without subscribers or publishes.",
        &[("", |m| m.counters.topics_expired)]),
    single("topic_creations_refused", Counter,
        "Topic creations refused because a client went past topic_creations_per_second (429).",
        &[("", |m| m.counters.topic_creations_refused)]),
    single("duplicate_publishes", Counter,
        "Publishes answered from the idempotency table (a retry), not published again.",
        &[("", |m| m.counters.duplicate_publishes)]),
    single("pool_exhausted", Counter,
        "Message buffers the pool could not lend because their size class was all in use \
         (the message was refused: 1013 on a WebSocket, 503 on HTTP); see pool_buffers.",
        &[("", |m| m.counters.pool_exhausted)]),
    single("inflaters_in_use", Gauge,
        "permessage-deflate inflaters lent now to connections inside a compressed message (at \
         most inflaters_max; one more is refused with 1013).",
        &[("", |m| m.gauges.inflaters_in_use)]),
    single("inflaters_created", Gauge,
        "permessage-deflate inflaters made so far (in use or free), each about 40 KiB.",
        &[("", |m| m.gauges.inflaters_created)]),
    single("mailbox_full", Counter,
        "Commands a full mailbox refused; they wait in this shard's outbox, never dropped.",
        &[("", |m| m.counters.mailbox_full)]),
    single("connections", Gauge, "Open connections, HTTP and WebSocket.",
        &[("", |m| m.gauges.connections)]),
    single("websocket_connections", Gauge, "Open WebSocket connections.",
        &[("", |m| m.gauges.websocket_connections)]),
    single("subscriptions", Gauge, "Subscriptions held by this shard's connections.",
        &[("", |m| m.gauges.subscriptions)]),
    single("topics_owned", Gauge,
        "Topics this shard owns (assigns sequence numbers to and keeps history for).",
        &[("", |m| m.gauges.topics_owned)]),
    single("topics_subscribed", Gauge, "Topics with at least one subscriber on this shard.",
        &[("", |m| m.gauges.topics_subscribed)]),
    bytes("history", Gauge, "Bytes of history this shard keeps for its owned topics.",
        &[("", |m| m.gauges.history_bytes)]),
    single("poll_answers", Counter, "Polls answered (with messages, or empty at their wait's end).",
        &[("", |m| m.counters.poll_answers)]),
    labelled("transport_deliveries", Counter, "transport",
        "Messages delivered to this shard's subscribers, by transport.",
        &[("websocket", |m| m.counters.transport_deliveries[0]),
          ("sse", |m| m.counters.transport_deliveries[1]),
          ("stream", |m| m.counters.transport_deliveries[2]),
          ("poll", |m| m.counters.transport_deliveries[3]),
          ("socketio", |m| m.counters.transport_deliveries[4])]),
    labelled("transport_slow_consumer_actions", Counter, "transport",
        "Slow-consumer actions (drops, conflations, closes) by the transport of the subscriber.",
        &[("websocket", |m| m.counters.transport_slow_consumer_actions[0]),
          ("sse", |m| m.counters.transport_slow_consumer_actions[1]),
          ("stream", |m| m.counters.transport_slow_consumer_actions[2]),
          ("poll", |m| m.counters.transport_slow_consumer_actions[3]),
          ("socketio", |m| m.counters.transport_slow_consumer_actions[4])]),
    labelled("transport_connections", Gauge, "transport",
        "Open connections by transport (a poll while it is held).",
        &[("websocket", |m| m.gauges.transport_connections[0]),
          ("sse", |m| m.gauges.transport_connections[1]),
          ("stream", |m| m.gauges.transport_connections[2]),
          ("poll", |m| m.gauges.transport_connections[3]),
          ("socketio", |m| m.gauges.transport_connections[4])]),
    single("message_buffers_created", Counter,
        "Message buffers allocated because none of their size class was free (warm-up, growth) \
         or for a message larger than every class; flat in a steady state.",
        &[("", |m| m.counters.message_buffers_created)]),
    bytes("message_pool_free", Gauge,
        "Bytes of free message buffers this shard keeps for reuse.",
        &[("", |m| m.gauges.message_pool_free_bytes)]),
    single("mailbox_depth", Gauge, "Commands waiting in this shard's mailboxes.",
        &[("", |m| m.gauges.mailbox_depth)]),
    single("outbox_depth", Gauge,
        "Commands waiting in this shard's outbox for full mailboxes of other shards.",
        &[("", |m| m.gauges.outbox_depth)]),
    bytes("outbound_queued", Gauge, "Bytes queued to this shard's connections and not yet sent.",
        &[("", |m| m.gauges.outbound_queued_bytes)]),
    bytes("outbound_memory", Gauge,
        "Memory this shard's queues hold: each shared message once, plus each queue's own \
         frames and bookkeeping (what outbound_shard_bytes_max bounds).",
        &[("", |m| m.gauges.outbound_memory_bytes)]),
];

/// Writes the `GET /metrics` text. Built once; each [`render`](Self::render) reuses the
/// registry, so a scrape allocates nothing once `out` and the snapshot copy have grown.
#[derive(Debug)]
pub struct MetricsRenderer {
    registry: Registry,
    snapshot: Arc<Snapshot>,
}

impl Default for MetricsRenderer {
    fn default() -> MetricsRenderer {
        MetricsRenderer::new()
    }
}

impl MetricsRenderer {
    pub fn new() -> MetricsRenderer {
        let snapshot = Arc::new(Snapshot::default());
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        registry.register_collector(Box::new(Arc::clone(&snapshot)));
        MetricsRenderer { registry, snapshot }
    }

    /// Adds families kept outside the shards' stats (the webhooks'), encoded after the shards'.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Appends the text for `shards` (index = shard number) to `out`, ending with `# EOF`.
    pub fn render(&mut self, shards: &[ShardStats], out: &mut String) {
        {
            // The registry owns the collector, so the snapshots reach it through a lock that
            // nothing else ever takes: it is uncontended.
            let mut held = self
                .snapshot
                .shards
                .lock()
                .expect("never poisoned: no panics inside");
            held.clear();
            held.extend_from_slice(shards);
        }
        prometheus_client::encoding::text::encode(out, &self.registry)
            .expect("writing to a String cannot fail");
    }
}

/// The shards' latest metrics, as the collector sees them during a scrape.
#[derive(Debug, Default)]
struct Snapshot {
    shards: Mutex<Vec<ShardStats>>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = self
            .shards
            .lock()
            .expect("never poisoned: no panics inside");
        let bytes_unit = Unit::Bytes;
        encode_pool(&shards, &mut encoder)?;
        encode_tls(&shards, &mut encoder)?;
        for family in FAMILIES {
            let unit = family.bytes.then_some(&bytes_unit);
            let mut family_encoder =
                encoder.encode_descriptor(family.name, family.help, unit, family.metric_type)?;
            for (shard_index, shard) in shards.iter().enumerate() {
                let shard_label = [("shard", shard_index)];
                for &(reason, value) in family.series {
                    let value = value(shard);
                    match family.reason_label {
                        None => {
                            let series_encoder = family_encoder.encode_family(&shard_label)?;
                            encode_value(family.metric_type, value, series_encoder)?;
                        }
                        Some(reason_label) => {
                            let labels = (shard_label, [(reason_label, reason)]);
                            let series_encoder = family_encoder.encode_family(&labels)?;
                            encode_value(family.metric_type, value, series_encoder)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Families `encode_pool` writes beside the table's.
const POOL_FAMILY_COUNT: usize = 3;

/// The buffer pool's classes, one series per shard and class (labelled with the class's buffer
/// size): buffers in use, created and allowed. A class with every buffer in use is why messages
/// of its size are refused.
fn encode_pool(shards: &[ShardStats], encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    type ClassValue = fn(&PoolClassStats) -> u64;
    let families: [(&str, &str, ClassValue); POOL_FAMILY_COUNT] = [
        (
            "pool_buffers_in_use",
            "Message buffers on loan now, per shard and size class.",
            |class| class.buffers_in_use,
        ),
        (
            "pool_buffers_created",
            "Message buffers allocated so far (in use or free), per shard and size class.",
            |class| class.buffers_created,
        ),
        (
            "pool_buffers_max",
            "Message buffers a size class may have, per shard.",
            |class| class.buffers_max,
        ),
    ];
    for (name, help, value) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (shard_index, shard) in shards.iter().enumerate() {
            for class in shard.pool.classes() {
                let labels = [
                    ("shard", shard_index as u64),
                    ("class_bytes", class.buffer_bytes),
                ];
                encode_value(
                    MetricType::Gauge,
                    value(class),
                    family.encode_family(&labels)?,
                )?;
            }
        }
    }
    Ok(())
}

/// One TLS family: name, type, help, its reason label, and each series' reason and field.
type TlsFamily = (
    &'static str,
    MetricType,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, fn(&TlsStats) -> u64)],
);

/// The TLS families, written for shards that have a TLS listener.
#[rustfmt::skip]
static TLS_FAMILIES: &[TlsFamily] = &[
    ("tls_connections", Gauge, "Open TLS connections, handshaking or not.", None,
        &[("", |tls| tls.connections)]),
    ("tls_handshakes", Counter,
        "TLS handshakes completed, by kind: full = a certificate signed, resumed = from a \
         session ticket.",
        Some("kind"), &[
            ("full", |tls| tls.counters.handshakes_full),
            ("resumed", |tls| tls.counters.handshakes_resumed),
        ]),
    ("tls_errors", Counter,
        "TLS connections that ended badly, by kind: handshake = handshake refused with an alert \
         (not TLS, bad ClientHello, nothing in common), handshake_timeout = handshake not done \
         within handshake_timeout_ms, record = record refused after the handshake with an alert \
         (bad MAC, overflow, unexpected), alert_received = the peer sent a fatal alert, \
         truncation = TCP ended without close_notify, buffers_exhausted = no TLS buffer free.",
        Some("kind"), &[
            ("handshake", |tls| tls.counters.handshake_failures),
            ("handshake_timeout", |tls| tls.counters.handshake_timeouts),
            ("record", |tls| tls.counters.record_errors),
            ("alert_received", |tls| tls.counters.alerts_received),
            ("truncation", |tls| tls.counters.truncations),
            ("buffers_exhausted", |tls| tls.counters.buffers_exhausted),
        ]),
    ("tls_close_notify", Counter, "TLS close_notify alerts, by direction.",
        Some("direction"), &[
            ("received", |tls| tls.counters.close_notify_received),
            ("sent", |tls| tls.counters.close_notify_sent),
        ]),
    ("tls_key_updates", Counter,
        "TLS 1.3 key updates: the peers', and the shard's own (asked for, or at the \
         confidentiality limit).",
        None, &[("", |tls| tls.counters.key_updates)]),
    ("tls_buffers_in_use_bytes", Gauge,
        "Bytes of pooled TLS buffers on loan now: ciphertext waiting to be sent, records cut \
         across reads.",
        None, &[("", |tls| tls.buffers_in_use_bytes)]),
    ("tls_buffers_created_bytes", Gauge,
        "Bytes of pooled TLS buffers allocated so far (on loan or free).",
        None, &[("", |tls| tls.buffers_created_bytes)]),
];

/// The TLS families, one series per shard (and reason) for each shard with TLS.
fn encode_tls(shards: &[ShardStats], encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    if shards.iter().all(|shard| shard.tls.is_none()) {
        return Ok(());
    }
    for &(name, metric_type, help, reason_label, series) in TLS_FAMILIES {
        let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
        for (shard_index, shard) in shards.iter().enumerate() {
            let Some(tls) = &shard.tls else {
                continue;
            };
            let shard_label = [("shard", shard_index)];
            for &(reason, value) in series {
                match reason_label {
                    None => {
                        encode_value(metric_type, value(tls), family.encode_family(&shard_label)?)?
                    }
                    Some(label) => {
                        let labels = (shard_label, [(label, reason)]);
                        encode_value(metric_type, value(tls), family.encode_family(&labels)?)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn encode_value(
    metric_type: MetricType,
    value: u64,
    encoder: MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match metric_type {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        MetricType::Gauge => ConstGauge::new(value).encode(encoder),
        other => unreachable!("no {other:?} families in the table"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::stats::{Counters, Gauges};

    /// How many fields Counters and Gauges have together, counted from their size: every field
    /// is a u64, so a new field changes this without anyone updating a number.
    const FIELD_COUNT: u64 =
        (size_of::<Counters>() / size_of::<u64>() + size_of::<Gauges>() / size_of::<u64>()) as u64;

    /// Metrics whose every field holds a distinct value: counters offset + 1, + 2, …, then the
    /// gauges. Struct literals without `..`: adding a field breaks the build here until it gets
    /// a value, and then `every_field_is_exposed_once` fails until the family table exposes it.
    fn distinct_values(offset: u64) -> ShardStats {
        let counters = Counters {
            connections_accepted: offset + 1,
            connections_closed: offset + 2,
            accept_table_full: offset + 3,
            refusals_answered: offset + 4,
            refusals_unanswered: offset + 5,
            upgrades: offset + 6,
            handshake_errors: offset + 7,
            http_requests: offset + 8,
            protocol_errors: offset + 9,
            messages_received: offset + 10,
            bytes_received: offset + 11,
            bytes_sent: offset + 12,
            receive_buffer_shortages: offset + 13,
            slow_consumer_closes: offset + 14,
            reading_pauses: offset + 15,
            pings_sent: offset + 16,
            pong_timeouts: offset + 17,
            handshake_timeouts: offset + 18,
            close_timeouts: offset + 19,
            stale_completions: offset + 20,
            publish_requests: offset + 21,
            messages_published: offset + 22,
            deliveries: offset + 23,
            subscribe_requests: offset + 24,
            unsubscribe_requests: offset + 25,
            request_errors: offset + 26,
            replays: offset + 27,
            replayed_messages: offset + 28,
            resets: offset + 29,
            slow_consumer_drops: offset + 30,
            slow_consumer_conflations: offset + 31,
            mailbox_full: offset + 32,
            publisher_pauses: offset + 33,
            send_stalls: offset + 34,
            message_timeouts: offset + 35,
            pool_exhausted: offset + 36,
            replay_pages: offset + 37,
            replays_lost: offset + 38,
            topics_expired: offset + 39,
            topic_creations_refused: offset + 40,
            duplicate_publishes: offset + 41,
            message_buffers_created: offset + 52,
            auth_missing: offset + 67,
            auth_malformed: offset + 68,
            auth_signature: offset + 69,
            auth_algorithm: offset + 70,
            auth_expired: offset + 71,
            auth_not_yet_valid: offset + 72,
            auth_audience: offset + 73,
            auth_issuer: offset + 74,
            auth_claims: offset + 75,
            origin_refusals: offset + 76,
            metrics_refusals: offset + 77,
            forbidden_requests: offset + 78,
            subscriptions_revoked: offset + 79,
            token_expiries: offset + 80,
            token_refreshes: offset + 81,
            socketio_recoveries: offset + 90,
            socketio_sessions_opened: offset + 91,
            socketio_sessions_refused: offset + 92,
            socketio_upgrades: offset + 93,
            socketio_forwards: offset + 94,
            cluster_duplicates: offset + 95,
            cluster_ingests_refused: offset + 96,
            cluster_gaps: offset + 97,
            socketio_sessions_address_refused: offset + 98,
            cluster_catch_ups_held: offset + 99,
            cluster_catch_ups: offset + 100,
            cluster_catch_up_timeouts: offset + 101,
            cluster_catch_up_overflows: offset + 102,
            address_connections_refused: offset + 82,
            address_handshakes_refused: offset + 83,
            addresses_untracked: offset + 84,
            poll_answers: offset + 54,
            transport_deliveries: [
                offset + 55,
                offset + 56,
                offset + 57,
                offset + 58,
                offset + 87,
            ],
            transport_slow_consumer_actions: [
                offset + 59,
                offset + 60,
                offset + 61,
                offset + 62,
                offset + 88,
            ],
        };
        let gauges = Gauges {
            connections: offset + 42,
            websocket_connections: offset + 43,
            subscriptions: offset + 44,
            topics_owned: offset + 45,
            topics_subscribed: offset + 46,
            history_bytes: offset + 47,
            mailbox_depth: offset + 48,
            outbox_depth: offset + 49,
            outbound_queued_bytes: offset + 50,
            outbound_memory_bytes: offset + 51,
            message_pool_free_bytes: offset + 53,
            inflaters_in_use: offset + 85,
            inflaters_created: offset + 86,
            transport_connections: [
                offset + 63,
                offset + 64,
                offset + 65,
                offset + 66,
                offset + 89,
            ],
        };
        ShardStats {
            counters,
            gauges,
            pool: Default::default(),
            tls: None,
        }
    }

    /// One sample line, split: the series name, its labels, its value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: u64,
    }

    /// The parsed exposition: families by name (type, help) and every sample.
    #[derive(Debug, Default)]
    struct Exposition {
        types: BTreeMap<String, String>,
        helps: BTreeMap<String, String>,
        samples: Vec<Sample>,
    }

    fn is_metric_name(name: &str) -> bool {
        let mut characters = name.chars();
        characters
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && characters.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Parses the text strictly: any line of an unexpected shape panics.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        assert!(
            text.ends_with("# EOF\n"),
            "the exposition must end with # EOF"
        );
        let body = text.strip_suffix("# EOF\n").expect("checked");
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(is_metric_name(name), "bad name in {line:?}");
                assert!(
                    !help.is_empty() && !help.contains(['"', '\\']),
                    "bad help: {line:?}"
                );
                let earlier = exposition.helps.insert(name.to_owned(), help.to_owned());
                assert!(earlier.is_none(), "family {name} declared twice");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, metric_type) = rest.split_once(' ').expect("TYPE name type");
                assert!(
                    ["counter", "gauge"].contains(&metric_type),
                    "bad type: {line:?}"
                );
                assert!(
                    exposition.helps.contains_key(name),
                    "TYPE before HELP: {line:?}"
                );
                exposition
                    .types
                    .insert(name.to_owned(), metric_type.to_owned());
            } else if let Some(rest) = line.strip_prefix("# UNIT ") {
                let (name, unit) = rest.split_once(' ').expect("UNIT name unit");
                assert!(
                    name.ends_with(&format!("_{unit}")),
                    "unit not last: {line:?}"
                );
            } else {
                exposition.samples.push(parse_sample(line));
            }
        }
        exposition
    }

    /// Parses `name{key="value",...} 123`.
    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels_text) = series.split_once('{').expect("every series has labels");
        let labels_text = labels_text.strip_suffix('}').expect("labels close");
        assert!(is_metric_name(name), "bad sample name: {line:?}");
        let mut labels = BTreeMap::new();
        for pair in labels_text.split(',') {
            let (key, quoted) = pair.split_once('=').expect("key=value");
            let value = quoted.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            let value = value.expect("quoted label value");
            assert!(is_metric_name(key), "bad label name: {line:?}");
            assert!(labels.insert(key.to_owned(), value.to_owned()).is_none());
        }
        let value = value.parse().expect("an integer value");
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }

    fn render(shards: &[ShardStats]) -> String {
        let mut text = String::new();
        MetricsRenderer::new().render(shards, &mut text);
        text
    }

    #[test]
    fn every_line_has_a_valid_shape_and_every_series_is_unique() {
        // Proves the text parses as OpenMetrics (HELP, TYPE, UNIT, samples, EOF), that every
        // sample belongs to a declared family and that no series is written twice.
        let shards: Vec<ShardStats> = (0..3).map(|shard| distinct_values(shard * 100)).collect();
        let exposition = parse(&render(&shards));
        let mut series = BTreeSet::new();
        for sample in &exposition.samples {
            let family = match sample.name.strip_suffix("_total") {
                Some(family) if exposition.types.get(family).is_some_and(|t| t == "counter") => {
                    family
                }
                _ => &sample.name,
            };
            assert!(
                exposition.types.contains_key(family),
                "no family for {sample:?}"
            );
            assert!(family.starts_with("ringcast_"), "unprefixed: {sample:?}");
            assert!(
                sample.labels.contains_key("shard"),
                "no shard label: {sample:?}"
            );
            assert!(
                series.insert((sample.name.clone(), sample.labels.clone())),
                "{sample:?}"
            );
        }
        assert_eq!(exposition.helps.len(), FAMILIES.len() + POOL_FAMILY_COUNT);
        assert_eq!(exposition.samples.len(), 3 * FIELD_COUNT as usize);
    }

    /// Proves the pool's classes are shown per shard and class, labelled by buffer size.
    #[test]
    fn pool_classes_are_shown_by_size() {
        let mut shard = ShardStats::default();
        shard.pool.class_count = 2;
        shard.pool.classes[0] = PoolClassStats {
            buffer_bytes: 128,
            buffers_max: 10,
            buffers_created: 4,
            buffers_in_use: 3,
        };
        shard.pool.classes[1] = PoolClassStats {
            buffer_bytes: 65_536,
            buffers_max: 2,
            buffers_created: 2,
            buffers_in_use: 2,
        };
        let text = render(&[shard]);
        for expected in [
            "ringcast_pool_buffers_in_use{shard=\"0\",class_bytes=\"128\"} 3",
            "ringcast_pool_buffers_in_use{shard=\"0\",class_bytes=\"65536\"} 2",
            "ringcast_pool_buffers_max{shard=\"0\",class_bytes=\"65536\"} 2",
            "ringcast_pool_buffers_created{shard=\"0\",class_bytes=\"128\"} 4",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing {expected:?}\n{text}"
            );
        }
    }

    #[test]
    fn every_field_is_exposed_once() {
        // Proves that each field of Counters and Gauges appears in exactly one series per shard,
        // and that each shard's series carry that shard's values.
        let exposition = parse(&render(&[distinct_values(0), distinct_values(1000)]));
        for (shard, offset) in [("0", 0), ("1", 1000)] {
            let mut values: Vec<u64> = exposition
                .samples
                .iter()
                .filter(|sample| sample.labels["shard"] == shard)
                .map(|sample| sample.value)
                .collect();
            values.sort_unstable();
            let expected: Vec<u64> = (1..=FIELD_COUNT).map(|value| offset + value).collect();
            assert_eq!(
                values, expected,
                "shard {shard}: a field is missing or repeated"
            );
        }
    }

    #[test]
    fn reasons_share_one_family_and_units_come_last() {
        // Proves the names the dashboards rely on: one family per reasoned counter, with the
        // reason as a label, and byte families ending in _bytes.
        let text = render(&[distinct_values(0)]);
        for expected in [
            "ringcast_slow_consumer_actions_total{shard=\"0\",action=\"drop\"} 30",
            "ringcast_slow_consumer_actions_total{shard=\"0\",action=\"conflate\"} 31",
            "ringcast_slow_consumer_actions_total{shard=\"0\",action=\"disconnect\"} 14",
            "ringcast_timeouts_total{shard=\"0\",kind=\"handshake\"} 18",
            "ringcast_timeouts_total{shard=\"0\",kind=\"pong\"} 17",
            "ringcast_timeouts_total{shard=\"0\",kind=\"close\"} 19",
            "ringcast_peer_errors_total{shard=\"0\",kind=\"protocol\"} 9",
            "ringcast_requests_total{shard=\"0\",op=\"publish\"} 21",
            "ringcast_received_bytes_total{shard=\"0\"} 11",
            "ringcast_sent_bytes_total{shard=\"0\"} 12",
            "ringcast_history_bytes{shard=\"0\"} 47",
            "ringcast_outbound_queued_bytes{shard=\"0\"} 50",
            "ringcast_connections{shard=\"0\"} 42",
            "ringcast_connections_refused_total{shard=\"0\",reason=\"answered_503\"} 4",
            "ringcast_connections_refused_total{shard=\"0\",reason=\"closed_unanswered\"} 5",
            "ringcast_connections_refused_total{shard=\"0\",reason=\"dropped\"} 3",
            "# TYPE ringcast_slow_consumer_actions counter",
            "# UNIT ringcast_history_bytes bytes",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing {expected:?}\n{text}"
            );
        }
    }

    #[test]
    fn tls_families_appear_only_with_tls() {
        // Proves the TLS series are written for a shard with TLS, with their reason labels,
        // and not at all for a server without.
        assert!(!render(&[distinct_values(0)]).contains("ringcast_tls"));
        let mut stats = distinct_values(0);
        let mut tls = TlsStats {
            connections: 7,
            buffers_in_use_bytes: 512,
            ..TlsStats::default()
        };
        tls.counters.handshakes_resumed = 3;
        tls.counters.truncations = 2;
        stats.tls = Some(tls);
        let text = render(&[stats]);
        for expected in [
            "ringcast_tls_connections{shard=\"0\"} 7",
            "ringcast_tls_handshakes_total{shard=\"0\",kind=\"resumed\"} 3",
            "ringcast_tls_errors_total{shard=\"0\",kind=\"truncation\"} 2",
            "ringcast_tls_buffers_in_use_bytes{shard=\"0\"} 512",
            "# TYPE ringcast_tls_close_notify counter",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "missing {expected:?}\n{text}"
            );
        }
        parse(&text);
    }

    #[test]
    fn a_renderer_reused_across_scrapes_writes_only_the_latest_values() {
        // Proves a long-lived renderer forgets the previous scrape's shards.
        let mut renderer = MetricsRenderer::new();
        let many = distinct_values(500);
        let mut text = String::new();
        renderer.render(&[many, many, many], &mut text);
        text.clear();
        renderer.render(&[ShardStats::default()], &mut text);
        let exposition = parse(&text);
        assert!(
            exposition
                .samples
                .iter()
                .all(|sample| sample.labels["shard"] == "0")
        );
        assert!(exposition.samples.iter().all(|sample| sample.value == 0));
    }
}
