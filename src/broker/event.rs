//! What the broker tells the world outside its clients: topics becoming occupied and vacated,
//! subscriptions made and ended, messages published, connections opened and closed. Webhooks
//! deliver them (`crate::egress`); the broker only decides them, sans-IO, like everything else.
//!
//! Each event is decided where the fact is known, once for the whole process:
//!
//! - `topic.occupied` / `topic.vacated`: by the topic's owner, which keeps the set of shards
//!   with subscribers. Occupied is the set becoming non-empty (the first shard's first
//!   subscription reached the owner), vacated the set becoming empty (the last shard told it
//!   it has none left). They alternate strictly per topic.
//! - `message.published`: by the owner, as it numbers the message: one event per message, in
//!   seq order per topic.
//! - `subscription.created` / `subscription.removed`: by the subscriber's shard, when the
//!   subscription takes effect (the owner's answer arrived) and when one in effect ends.
//! - `connection.opened` / `connection.closed`: by the connection's shard, when it first becomes
//!   a client of the broker (a WebSocket, an SSE or NDJSON stream, a held poll) and when it is
//!   freed, with the WebSocket close code and reason.
//!
//! Deciding costs nothing when no webhook wants an event kind: the [`EventFilter`] is checked
//! first, and an empty filter records nothing.

use std::sync::Arc;

use super::message::Message;
use super::topic::TopicName;

/// The kinds of event, by their names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    TopicOccupied,
    TopicVacated,
    ConnectionOpened,
    ConnectionClosed,
    SubscriptionCreated,
    SubscriptionRemoved,
    MessagePublished,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::TopicOccupied,
        EventKind::TopicVacated,
        EventKind::ConnectionOpened,
        EventKind::ConnectionClosed,
        EventKind::SubscriptionCreated,
        EventKind::SubscriptionRemoved,
        EventKind::MessagePublished,
    ];

    /// The event's `type` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TopicOccupied => "topic.occupied",
            EventKind::TopicVacated => "topic.vacated",
            EventKind::ConnectionOpened => "connection.opened",
            EventKind::ConnectionClosed => "connection.closed",
            EventKind::SubscriptionCreated => "subscription.created",
            EventKind::SubscriptionRemoved => "subscription.removed",
            EventKind::MessagePublished => "message.published",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the kind is about a topic, so that a webhook's topic patterns apply to it.
    pub fn has_topic(self) -> bool {
        !matches!(
            self,
            EventKind::ConnectionOpened | EventKind::ConnectionClosed
        )
    }

    /// Whether the kind is a topic's occupancy changing (the pairs that coalesce).
    pub fn is_occupancy(self) -> bool {
        matches!(self, EventKind::TopicOccupied | EventKind::TopicVacated)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of event kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventKinds(u8);

impl EventKinds {
    pub fn insert(&mut self, kind: EventKind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: EventKinds) -> EventKinds {
        EventKinds(self.0 | other.0)
    }
}

impl FromIterator<EventKind> for EventKinds {
    fn from_iter<I: IntoIterator<Item = EventKind>>(kinds: I) -> EventKinds {
        let mut set = EventKinds::default();
        for kind in kinds {
            set.insert(kind);
        }
        set
    }
}

/// One connection for the whole life of the process: its shard and the how-manieth connection
/// of that shard it is (a slot and its generation are reused; this is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    pub shard: u16,
    pub serial: u64,
}

/// Why a connection closed, in words: ringcast's own reason when it closed the connection, the
/// peer's (as it sent it) when the peer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Static(&'static str),
    Peer(Box<str>),
}

impl CloseReason {
    pub fn as_str(&self) -> &str {
        match self {
            CloseReason::Static(reason) => reason,
            CloseReason::Peer(reason) => reason,
        }
    }
}

/// The close code of a connection that ended without a close frame either way (RFC 6455
/// §7.1.5: "abnormal closure", never sent on the wire).
pub const CLOSE_CODE_ABNORMAL: u16 = 1006;
/// The close code of a close frame that carried none (RFC 6455 §7.1.5).
pub const CLOSE_CODE_NONE_GIVEN: u16 = 1005;

/// Something that happened, for the webhooks. Cheap to make and move: names and messages are
/// shared buffers, so recording an event allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    TopicOccupied {
        topic: TopicName,
    },
    TopicVacated {
        topic: TopicName,
    },
    SubscriptionCreated {
        topic: TopicName,
        connection: ConnectionId,
    },
    SubscriptionRemoved {
        topic: TopicName,
        connection: ConnectionId,
    },
    MessagePublished {
        message: Message,
    },
    /// `subject` is the authenticated subject (`sub`) once authentication exists; `None` now.
    /// `transport` names how the client reads: websocket, sse, stream (NDJSON) or poll.
    ConnectionOpened {
        connection: ConnectionId,
        transport: &'static str,
        subject: Option<Arc<str>>,
    },
    /// `code` is the WebSocket close code; streams and polls have none.
    ConnectionClosed {
        connection: ConnectionId,
        transport: &'static str,
        code: Option<u16>,
        reason: CloseReason,
        subject: Option<Arc<str>>,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::TopicOccupied { .. } => EventKind::TopicOccupied,
            Event::TopicVacated { .. } => EventKind::TopicVacated,
            Event::SubscriptionCreated { .. } => EventKind::SubscriptionCreated,
            Event::SubscriptionRemoved { .. } => EventKind::SubscriptionRemoved,
            Event::MessagePublished { .. } => EventKind::MessagePublished,
            Event::ConnectionOpened { .. } => EventKind::ConnectionOpened,
            Event::ConnectionClosed { .. } => EventKind::ConnectionClosed,
        }
    }

    /// The topic the event is about, if it is about one.
    pub fn topic(&self) -> Option<&[u8]> {
        match self {
            Event::TopicOccupied { topic }
            | Event::TopicVacated { topic }
            | Event::SubscriptionCreated { topic, .. }
            | Event::SubscriptionRemoved { topic, .. } => Some(topic.as_bytes()),
            Event::MessagePublished { message } => Some(message.topic()),
            Event::ConnectionOpened { .. } | Event::ConnectionClosed { .. } => None,
        }
    }
}

/// Whether `topic` matches `pattern`: a name, or a prefix ending in `*` (`"*"` is every topic).
/// The same patterns as `snapshot_topics`.
pub fn topic_matches(pattern: &str, topic: &[u8]) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix.as_bytes()),
        None => topic == pattern.as_bytes(),
    }
}

/// Which events a shard's broker records: the kinds some webhook wants, and for published
/// messages (the only frequent kind) the topic patterns of the webhooks that want them, so
/// that a message no webhook wants costs one check on its owner and nothing more. The webhooks
/// apply their own patterns to the other kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    kinds: EventKinds,
    message_topics: Vec<String>,
}

impl EventFilter {
    /// `message_topics` matters only when `kinds` holds `message.published`.
    pub fn new(kinds: EventKinds, message_topics: Vec<String>) -> EventFilter {
        EventFilter {
            kinds,
            message_topics,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.kinds.contains(kind)
    }

    /// Whether a published message of `topic` is wanted.
    pub fn wants_message(&self, topic: &[u8]) -> bool {
        self.kinds.contains(EventKind::MessagePublished)
            && self
                .message_topics
                .iter()
                .any(|pattern| topic_matches(pattern, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves every kind round-trips through its name and sets hold exactly what was put in.
    #[test]
    fn kinds_round_trip_and_sets_hold_them() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::from_name("topic.occupy"), None);
        let set: EventKinds = [EventKind::TopicVacated, EventKind::MessagePublished]
            .into_iter()
            .collect();
        let held: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|kind| set.contains(*kind))
            .collect();
        assert_eq!(held, [EventKind::TopicVacated, EventKind::MessagePublished]);
        assert!(EventKinds::default().is_empty());
    }

    /// Proves patterns match names exactly and prefixes ending in `*`, and that the filter asks
    /// the patterns only for published messages.
    #[test]
    fn patterns_and_filter() {
        assert!(topic_matches("*", b"AAPL"));
        assert!(topic_matches("FX.*", b"FX.EURUSD"));
        assert!(!topic_matches("FX.*", b"FX"));
        assert!(topic_matches("AAPL", b"AAPL"));
        assert!(!topic_matches("AAPL", b"AAPL2"));
        let kinds = [EventKind::MessagePublished].into_iter().collect();
        let filter = EventFilter::new(kinds, vec!["FX.*".into()]);
        assert!(filter.wants_message(b"FX.EURUSD"));
        assert!(!filter.wants_message(b"AAPL"));
        assert!(!filter.wants(EventKind::TopicOccupied));
        assert!(!EventFilter::default().wants_message(b"FX.EURUSD"));
    }
}
