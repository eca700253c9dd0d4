//! Every counter and gauge of a shard, in one place: each layer counts its own events (the
//! shard driver's [`ShardCounters`], the endpoints' `EndpointCounters`, the broker's
//! `BrokerCounters`), the shard gathers them into one [`ShardStats`] once per loop turn, and
//! `metrics` renders that for `GET /metrics`.

use crate::auth::AuthFailure;
use crate::broker::{BrokerCounters, BrokerGauges};
use crate::endpoint::EndpointCounters;
use crate::protocol::pool::{BufferPool, POOL_CLASSES_MAX};
use crate::transport::tls::{TlsCounters, TlsWorkspace};

/// One size class of a shard's message buffer pool, as `GET /metrics` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolClassStats {
    pub buffer_bytes: u64,
    pub buffers_max: u64,
    /// Buffers allocated so far (in use or free).
    pub buffers_created: u64,
    /// Buffers on loan now: a class with all of them in use refuses the next message that needs
    /// one (1013 on a WebSocket, 503 on HTTP).
    pub buffers_in_use: u64,
}

/// A shard's message buffer pool, class by class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub classes: [PoolClassStats; POOL_CLASSES_MAX],
    pub class_count: usize,
}

impl PoolStats {
    pub fn of(pool: &BufferPool) -> PoolStats {
        let mut stats = PoolStats::default();
        for (index, class) in pool.statistics().take(POOL_CLASSES_MAX).enumerate() {
            stats.classes[index] = PoolClassStats {
                buffer_bytes: class.buffer_bytes as u64,
                buffers_max: class.buffers_max as u64,
                buffers_created: class.buffers_created as u64,
                buffers_in_use: class.buffers_in_use as u64,
            };
            stats.class_count = index + 1;
        }
        stats
    }

    /// The classes the pool has.
    pub fn classes(&self) -> &[PoolClassStats] {
        &self.classes[..self.class_count]
    }
}

/// What the shard driver counts itself: connections, bytes, the ring and the mailboxes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardCounters {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub accept_table_full: u64,
    /// Connections accepted while the table was full and answered 503.
    pub refusals_answered: u64,
    /// Connections accepted while the table was full and closed without the 503 (too many
    /// refusals in flight, or the client left first).
    pub refusals_unanswered: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub receive_buffer_shortages: u64,
    /// Times reading from a peer paused because replies to it piled up.
    pub reading_pauses: u64,
    pub stale_completions: u64,
    /// Commands a full mailbox refused; they wait in this shard's outbox, never dropped.
    pub mailbox_full: u64,
    /// Times a publisher's reading paused because this shard's outbox to another shard was full.
    pub publisher_pauses: u64,
    /// Connections closed because their queue made no progress for `send_stall_timeout_ms`.
    pub send_stalls: u64,
    /// Connections answered 429 because their source address held `connections_per_ip_max`
    /// connections, or had opened `handshakes_per_ip_per_second` in the last second.
    pub address_connections_refused: u64,
    pub address_handshakes_refused: u64,
    /// Connections let through untracked because the address table was full.
    pub addresses_untracked: u64,
    /// Messages delivered per transport (`EndpointKind::TRANSPORTS`).
    pub transport_deliveries: [u64; crate::broker::TRANSPORT_COUNT],
}

/// Counters a shard keeps; every drop and every peer error is counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub accept_table_full: u64,
    pub refusals_answered: u64,
    pub refusals_unanswered: u64,
    pub upgrades: u64,
    pub handshake_errors: u64,
    pub http_requests: u64,
    pub protocol_errors: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub receive_buffer_shortages: u64,
    pub slow_consumer_closes: u64,
    /// Times reading from a peer paused because replies to it piled up.
    pub reading_pauses: u64,
    pub pings_sent: u64,
    pub pong_timeouts: u64,
    pub handshake_timeouts: u64,
    pub close_timeouts: u64,
    pub stale_completions: u64,
    /// Publish requests received from this shard's connections (WebSocket and HTTP).
    pub publish_requests: u64,
    /// Messages this shard assigned a sequence number to, as the owner of their topic.
    pub messages_published: u64,
    /// Frames queued to this shard's subscribers.
    pub deliveries: u64,
    pub subscribe_requests: u64,
    pub unsubscribe_requests: u64,
    /// Requests refused with an `error` reply or a 4xx status (bad JSON, unknown op, limits).
    pub request_errors: u64,
    /// Subscriptions served from history with `since`, and the messages replayed for them.
    pub replays: u64,
    pub replayed_messages: u64,
    /// Subscriptions answered with `reset` because `since + 1` had left the history.
    pub resets: u64,
    /// Slow-consumer policy actions: newest message dropped, older message replaced by a newer
    /// one of the same topic (conflate). Closes are `slow_consumer_closes`.
    pub slow_consumer_drops: u64,
    pub slow_consumer_conflations: u64,
    /// Commands a full mailbox refused; they wait in this shard's outbox, never dropped.
    pub mailbox_full: u64,
    /// Times a publisher's reading paused because this shard's outbox to another shard was full.
    pub publisher_pauses: u64,
    /// Connections closed because their queue made no progress for `send_stall_timeout_ms`.
    pub send_stalls: u64,
    /// WebSocket messages not finished within `message_timeout_ms`.
    pub message_timeouts: u64,
    /// Buffers the message pool could not lend (its class was all in use).
    pub pool_exhausted: u64,
    /// Pages of replays served, and replays cut short (what they asked for left history).
    pub replay_pages: u64,
    pub replays_lost: u64,
    /// Topics forgotten after `topic_idle_ms` unused, and creations refused for rate.
    pub topics_expired: u64,
    pub topic_creations_refused: u64,
    /// Publishes answered from the idempotency table (retries), not published again.
    pub duplicate_publishes: u64,
    /// Message buffers made rather than reused (zero in a steady state).
    pub message_buffers_created: u64,
    /// Requests refused with 401 for their token, by reason (failed refreshes count too).
    pub auth_missing: u64,
    pub auth_malformed: u64,
    pub auth_signature: u64,
    pub auth_algorithm: u64,
    pub auth_expired: u64,
    pub auth_not_yet_valid: u64,
    pub auth_audience: u64,
    pub auth_issuer: u64,
    pub auth_claims: u64,
    /// Requests refused with 403 for their `Origin`.
    pub origin_refusals: u64,
    /// `GET /metrics` refused for a missing or wrong `metrics_token`.
    pub metrics_refusals: u64,
    /// Subscribes and publishes outside the token's grants.
    pub forbidden_requests: u64,
    /// Subscriptions ended because a refreshed token no longer grants them.
    pub subscriptions_revoked: u64,
    /// WebSockets closed with 4001 "token expired".
    pub token_expiries: u64,
    /// Refreshes accepted.
    pub token_refreshes: u64,
    /// Socket.IO clients resubscribed from their connection-state-recovery offset.
    pub socketio_recoveries: u64,
    /// Engine.IO long-polling sessions opened, refused for the shard's limit, upgraded.
    pub socketio_sessions_opened: u64,
    pub socketio_sessions_refused: u64,
    /// Handshakes refused for their address's sessions.
    pub socketio_sessions_address_refused: u64,
    pub socketio_upgrades: u64,
    /// Requests of Engine.IO carriers handed to another shard, the session's.
    pub socketio_forwards: u64,
    /// Clustered: messages from JetStream the owner already had, or could not keep (its topic
    /// table full), and messages that came past a hole in their topic's seqs.
    pub cluster_duplicates: u64,
    pub cluster_ingests_refused: u64,
    pub cluster_gaps: u64,
    /// Clustered: subscriptions held for this node to catch up with the stream, and how
    /// each ended (caught up, `reset` after the wait, answered at once past the limit).
    pub cluster_catch_ups_held: u64,
    pub cluster_catch_ups: u64,
    pub cluster_catch_up_timeouts: u64,
    pub cluster_catch_up_overflows: u64,
    /// Connections refused (429) for their source address: too many at once, too many new.
    pub address_connections_refused: u64,
    pub address_handshakes_refused: u64,
    /// Connections let through untracked because the address table was full.
    pub addresses_untracked: u64,
    /// Polls answered.
    pub poll_answers: u64,
    /// Deliveries and slow-consumer actions per transport (websocket, sse, stream, poll,
    /// socketio).
    pub transport_deliveries: [u64; crate::broker::TRANSPORT_COUNT],
    pub transport_slow_consumer_actions: [u64; crate::broker::TRANSPORT_COUNT],
}

/// Levels (not totals) a shard reports with its counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub connections: u64,
    pub websocket_connections: u64,
    /// Open connections per transport (`EndpointKind::TRANSPORTS`: websocket, sse, stream,
    /// poll, socketio; a poll counts while it is held).
    pub transport_connections: [u64; crate::broker::TRANSPORT_COUNT],
    /// Subscriptions held by this shard's connections.
    pub subscriptions: u64,
    /// Topics this shard owns (assigns sequence numbers to and keeps history for).
    pub topics_owned: u64,
    /// Topics with at least one subscriber on this shard.
    pub topics_subscribed: u64,
    /// Bytes of history this shard keeps for its owned topics.
    pub history_bytes: u64,
    /// Commands waiting in this shard's mailboxes.
    pub mailbox_depth: u64,
    /// Commands waiting in this shard's outbox for full mailboxes of other shards.
    pub outbox_depth: u64,
    /// Bytes queued to this shard's connections and not yet sent.
    pub outbound_queued_bytes: u64,
    /// Memory the queues hold: each shared frame once, plus each queue's own frames and
    /// bookkeeping. What `outbound_shard_bytes_max` bounds.
    pub outbound_memory_bytes: u64,
    /// Bytes of free message buffers kept for reuse (`message_pool_free_bytes_max`).
    pub message_pool_free_bytes: u64,
    /// permessage-deflate inflaters lent now to connections inside a compressed message (at
    /// most `inflaters_max`), and made so far.
    pub inflaters_in_use: u64,
    pub inflaters_created: u64,
}

/// What one shard reports to `GET /metrics`: gathered by the shard every loop turn.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardStats {
    pub counters: Counters,
    pub gauges: Gauges,
    pub pool: PoolStats,
    /// TLS figures, when the server has a TLS listener.
    pub tls: Option<TlsStats>,
}

/// A shard's TLS connections: the TLS layer's counters, and what its buffers hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    pub counters: TlsCounters,
    /// Open TLS connections (handshaking or not).
    pub connections: u64,
    /// Bytes of pooled TLS buffers on loan now (ciphertext waiting to be sent, records cut
    /// across reads) and allocated so far.
    pub buffers_in_use_bytes: u64,
    pub buffers_created_bytes: u64,
}

impl TlsStats {
    pub fn of(workspace: &TlsWorkspace, connections: u64) -> TlsStats {
        let (mut in_use, mut created) = (0, 0);
        for class in workspace.pool.statistics() {
            in_use += (class.buffers_in_use * class.buffer_bytes) as u64;
            created += (class.buffers_created * class.buffer_bytes) as u64;
        }
        TlsStats {
            counters: workspace.counters,
            connections,
            buffers_in_use_bytes: in_use,
            buffers_created_bytes: created,
        }
    }
}

impl Counters {
    /// Every counter with its name, for logs (the shard's summary when it stops).
    pub fn named(&self) -> [(&'static str, u64); 84] {
        [
            ("connections_accepted", self.connections_accepted),
            ("connections_closed", self.connections_closed),
            ("accept_table_full", self.accept_table_full),
            ("refusals_answered", self.refusals_answered),
            ("refusals_unanswered", self.refusals_unanswered),
            ("upgrades", self.upgrades),
            ("handshake_errors", self.handshake_errors),
            ("http_requests", self.http_requests),
            ("protocol_errors", self.protocol_errors),
            ("messages_received", self.messages_received),
            ("bytes_received", self.bytes_received),
            ("bytes_sent", self.bytes_sent),
            ("receive_buffer_shortages", self.receive_buffer_shortages),
            ("slow_consumer_closes", self.slow_consumer_closes),
            ("reading_pauses", self.reading_pauses),
            ("pings_sent", self.pings_sent),
            ("pong_timeouts", self.pong_timeouts),
            ("handshake_timeouts", self.handshake_timeouts),
            ("close_timeouts", self.close_timeouts),
            ("stale_completions", self.stale_completions),
            ("publish_requests", self.publish_requests),
            ("messages_published", self.messages_published),
            ("deliveries", self.deliveries),
            ("subscribe_requests", self.subscribe_requests),
            ("unsubscribe_requests", self.unsubscribe_requests),
            ("request_errors", self.request_errors),
            ("replays", self.replays),
            ("replayed_messages", self.replayed_messages),
            ("resets", self.resets),
            ("slow_consumer_drops", self.slow_consumer_drops),
            ("slow_consumer_conflations", self.slow_consumer_conflations),
            ("mailbox_full", self.mailbox_full),
            ("publisher_pauses", self.publisher_pauses),
            ("send_stalls", self.send_stalls),
            ("message_timeouts", self.message_timeouts),
            ("pool_exhausted", self.pool_exhausted),
            ("replay_pages", self.replay_pages),
            ("replays_lost", self.replays_lost),
            ("topics_expired", self.topics_expired),
            ("topic_creations_refused", self.topic_creations_refused),
            ("duplicate_publishes", self.duplicate_publishes),
            ("message_buffers_created", self.message_buffers_created),
            ("auth_missing", self.auth_missing),
            ("auth_malformed", self.auth_malformed),
            ("auth_signature", self.auth_signature),
            ("auth_algorithm", self.auth_algorithm),
            ("auth_expired", self.auth_expired),
            ("auth_not_yet_valid", self.auth_not_yet_valid),
            ("auth_audience", self.auth_audience),
            ("auth_issuer", self.auth_issuer),
            ("auth_claims", self.auth_claims),
            ("origin_refusals", self.origin_refusals),
            ("metrics_refusals", self.metrics_refusals),
            ("forbidden_requests", self.forbidden_requests),
            ("subscriptions_revoked", self.subscriptions_revoked),
            ("token_expiries", self.token_expiries),
            ("token_refreshes", self.token_refreshes),
            ("socketio_recoveries", self.socketio_recoveries),
            ("socketio_sessions_opened", self.socketio_sessions_opened),
            ("socketio_sessions_refused", self.socketio_sessions_refused),
            (
                "socketio_sessions_address_refused",
                self.socketio_sessions_address_refused,
            ),
            ("socketio_upgrades", self.socketio_upgrades),
            ("socketio_forwards", self.socketio_forwards),
            ("cluster_duplicates", self.cluster_duplicates),
            ("cluster_ingests_refused", self.cluster_ingests_refused),
            ("cluster_gaps", self.cluster_gaps),
            ("cluster_catch_ups_held", self.cluster_catch_ups_held),
            ("cluster_catch_ups", self.cluster_catch_ups),
            ("cluster_catch_up_timeouts", self.cluster_catch_up_timeouts),
            (
                "cluster_catch_up_overflows",
                self.cluster_catch_up_overflows,
            ),
            (
                "address_connections_refused",
                self.address_connections_refused,
            ),
            (
                "address_handshakes_refused",
                self.address_handshakes_refused,
            ),
            ("addresses_untracked", self.addresses_untracked),
            ("poll_answers", self.poll_answers),
            ("deliveries_websocket", self.transport_deliveries[0]),
            ("deliveries_sse", self.transport_deliveries[1]),
            ("deliveries_stream", self.transport_deliveries[2]),
            ("deliveries_poll", self.transport_deliveries[3]),
            ("deliveries_socketio", self.transport_deliveries[4]),
            (
                "slow_consumer_actions_websocket",
                self.transport_slow_consumer_actions[0],
            ),
            (
                "slow_consumer_actions_sse",
                self.transport_slow_consumer_actions[1],
            ),
            (
                "slow_consumer_actions_stream",
                self.transport_slow_consumer_actions[2],
            ),
            (
                "slow_consumer_actions_poll",
                self.transport_slow_consumer_actions[3],
            ),
            (
                "slow_consumer_actions_socketio",
                self.transport_slow_consumer_actions[4],
            ),
        ]
    }

    /// The counters that are not zero, as `name=value` pairs: a short line for a log.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.named() {
            if value != 0 {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(name);
                text.push('=');
                text.push_str(&value.to_string());
            }
        }
        text
    }
}

impl Counters {
    /// One shard's counters, gathered from its layers.
    pub fn gather(
        shard: &ShardCounters,
        endpoint: &EndpointCounters,
        broker: &BrokerCounters,
    ) -> Counters {
        let auth = |failure: AuthFailure| endpoint.auth_failures[failure.index()];
        Counters {
            connections_accepted: shard.connections_accepted,
            connections_closed: shard.connections_closed,
            accept_table_full: shard.accept_table_full,
            refusals_answered: shard.refusals_answered,
            refusals_unanswered: shard.refusals_unanswered,
            upgrades: endpoint.upgrades,
            handshake_errors: endpoint.handshake_errors,
            http_requests: endpoint.http_requests,
            protocol_errors: endpoint.protocol_errors,
            messages_received: endpoint.messages_received,
            bytes_received: shard.bytes_received,
            bytes_sent: shard.bytes_sent,
            receive_buffer_shortages: shard.receive_buffer_shortages,
            slow_consumer_closes: broker.slow_consumer_closes,
            reading_pauses: shard.reading_pauses,
            pings_sent: endpoint.pings_sent,
            pong_timeouts: endpoint.pong_timeouts,
            handshake_timeouts: endpoint.handshake_timeouts,
            close_timeouts: endpoint.close_timeouts,
            stale_completions: shard.stale_completions,
            publish_requests: endpoint.publish_requests,
            messages_published: broker.messages_published,
            deliveries: broker.deliveries,
            subscribe_requests: endpoint.subscribe_requests,
            unsubscribe_requests: endpoint.unsubscribe_requests,
            request_errors: endpoint.request_errors + broker.request_errors,
            replays: broker.replays,
            replayed_messages: broker.replayed_messages,
            resets: broker.resets,
            slow_consumer_drops: broker.slow_consumer_drops,
            slow_consumer_conflations: broker.slow_consumer_conflations,
            mailbox_full: shard.mailbox_full,
            publisher_pauses: shard.publisher_pauses,
            send_stalls: shard.send_stalls,
            message_timeouts: endpoint.message_timeouts,
            pool_exhausted: 0,
            replay_pages: broker.replay_pages,
            replays_lost: broker.replays_lost,
            topics_expired: broker.topics_expired,
            topic_creations_refused: broker.topic_creations_refused,
            duplicate_publishes: broker.duplicate_publishes,
            message_buffers_created: broker.message_buffers_created,
            auth_missing: auth(AuthFailure::Missing),
            auth_malformed: auth(AuthFailure::Malformed),
            auth_signature: auth(AuthFailure::Signature),
            auth_algorithm: auth(AuthFailure::Algorithm),
            auth_expired: auth(AuthFailure::Expired),
            auth_not_yet_valid: auth(AuthFailure::NotYetValid),
            auth_audience: auth(AuthFailure::Audience),
            auth_issuer: auth(AuthFailure::Issuer),
            auth_claims: auth(AuthFailure::Claims),
            origin_refusals: endpoint.origin_refusals,
            metrics_refusals: endpoint.metrics_refusals,
            forbidden_requests: endpoint.forbidden_requests,
            subscriptions_revoked: broker.subscriptions_revoked,
            token_expiries: endpoint.token_expiries,
            token_refreshes: endpoint.token_refreshes,
            socketio_recoveries: endpoint.socketio_recoveries,
            socketio_sessions_opened: endpoint.socketio_sessions_opened,
            socketio_sessions_refused: endpoint.socketio_sessions_refused,
            socketio_sessions_address_refused: endpoint.socketio_sessions_address_refused,
            socketio_upgrades: endpoint.socketio_upgrades,
            socketio_forwards: endpoint.socketio_forwards,
            cluster_duplicates: broker.cluster_duplicates,
            cluster_ingests_refused: broker.cluster_ingests_refused,
            cluster_gaps: broker.cluster_gaps,
            cluster_catch_ups_held: broker.cluster_catch_ups_held,
            cluster_catch_ups: broker.cluster_catch_ups,
            cluster_catch_up_timeouts: broker.cluster_catch_up_timeouts,
            cluster_catch_up_overflows: broker.cluster_catch_up_overflows,
            address_connections_refused: shard.address_connections_refused,
            address_handshakes_refused: shard.address_handshakes_refused,
            addresses_untracked: shard.addresses_untracked,
            poll_answers: endpoint.poll_answers,
            transport_deliveries: shard.transport_deliveries,
            transport_slow_consumer_actions: broker.slow_consumer_actions_by_transport,
        }
    }
}

impl Gauges {
    /// The broker's part of a shard's gauges; the driver fills in the rest.
    pub fn with_broker(self, broker: BrokerGauges) -> Gauges {
        Gauges {
            subscriptions: broker.subscriptions,
            topics_owned: broker.topics_owned,
            topics_subscribed: broker.topics_subscribed,
            history_bytes: broker.history_bytes,
            message_pool_free_bytes: broker.message_pool_free_bytes,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every counter has a name in `named` (counted from the struct's size: every field
    /// is a u64) and that the summary names exactly the non-zero ones.
    #[test]
    fn every_counter_is_named_and_summarised() {
        assert_eq!(
            Counters::default().named().len(),
            size_of::<Counters>() / size_of::<u64>()
        );
        let counters = Counters {
            deliveries: 3,
            reading_pauses: 1,
            ..Counters::default()
        };
        assert_eq!(counters.summary(), "reading_pauses=1 deliveries=3");
    }
}
