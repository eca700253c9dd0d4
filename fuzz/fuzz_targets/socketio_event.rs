//! The JSON of the Socket.IO EVENTs clients send (`["publish",{"topic":…,"data":…}]`): the
//! event's name is a request's `op`, its first argument the request's fields.
//!
//! The input is one event's JSON array, whole (the Engine.IO and Socket.IO packets around it
//! are the `socketio_packet` target's). Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the event;
//! - a publish's `data` is a slice of the event (the exact bytes sent) within the
//!   `publish_json_*` bounds, its topic valid, its idempotency `id` (if any) a valid key;
//! - a subscribe or unsubscribe names 0 to `subscriptions_per_connection_max` valid topics, and
//!   `since` names only topics being subscribed;
//! - serde_json's own reading of the event as a `Value` agrees: what we accept is an array
//!   whose first item is the request's `op` (as a string) and whose second, if any, is an
//!   object with the same `topic` or `topics`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use serde_json::Value;

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::broker::idempotency::IDEMPOTENCY_KEY_BYTES_MAX;
use ringcast::broker::json_bounds;
use ringcast::broker::request::{Request, parse_event};
use ringcast::broker::topic::validate_topic;
use ringcast::config::BrokerConfig;

/// serde_json's scratch space, the array of arguments, and the parsed topic lists and maps.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 64 * 1024,
    bytes_per_input_byte: 48,
};

fuzz_target!(|data: &[u8]| {
    let config = BrokerConfig::default();
    let (parsed, _) = allocation::measure(BUDGET, data.len(), || {
        parse_event(data, &config).map(|request| check(data, request, &config))
    });
    let Ok((op, topics)) = parsed else {
        return;
    };
    let value: Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(error) if refused_only_for_data(&error) => return,
        Err(error) => panic!("we accepted what serde_json refuses: {error}"),
    };
    let items = value.as_array().expect("an event is an array");
    assert_eq!(items.first().and_then(Value::as_str), Some(op));
    let empty = Value::Object(Default::default());
    let fields = items.get(1).unwrap_or(&empty);
    assert!(fields.is_object(), "the argument is an object");
    match op {
        "publish" => assert_eq!(
            fields.get("topic").and_then(Value::as_str),
            Some(&*topics[0])
        ),
        "ping" => {}
        "refresh" => assert_eq!(
            fields.get("token").and_then(Value::as_str),
            Some(&*topics[0])
        ),
        _ => {
            let theirs: Vec<&str> = fields["topics"]
                .as_array()
                .expect("topics is an array")
                .iter()
                .map(|topic| topic.as_str().expect("topics are strings"))
                .collect();
            assert_eq!(theirs, topics);
        }
    }
});

/// Checks the invariants of an accepted request; returns its `op` and topics to compare.
fn check(event: &[u8], request: Request<'_>, config: &BrokerConfig) -> (&'static str, Vec<String>) {
    let valid = |topic: &str| validate_topic(topic, config.topic_bytes_max) == Ok(());
    match request {
        Request::Publish { topic, data, id } => {
            let event_range = event.as_ptr_range();
            let data_range = data.as_ptr_range();
            assert!(event_range.start <= data_range.start && data_range.end <= event_range.end);
            assert!(!data.is_empty());
            assert!(!data[0].is_ascii_whitespace() && !data[data.len() - 1].is_ascii_whitespace());
            assert_eq!(json_bounds::check(data, &config.json_bounds()), Ok(()));
            assert!(valid(&topic));
            if let Some(id) = id {
                assert_eq!(validate_topic(&id, IDEMPOTENCY_KEY_BYTES_MAX), Ok(()));
            }
            ("publish", vec![topic.into_owned()])
        }
        Request::Subscribe { topics, since } => {
            assert!(topics.len() <= config.subscriptions_per_connection_max);
            assert!(topics.iter().all(|topic| valid(topic)));
            assert!(since.keys().all(|topic| topics.contains(topic)));
            (
                "subscribe",
                topics.into_iter().map(|topic| topic.into_owned()).collect(),
            )
        }
        Request::Unsubscribe { topics } => {
            assert!(topics.len() <= config.subscriptions_per_connection_max);
            assert!(topics.iter().all(|topic| valid(topic)));
            (
                "unsubscribe",
                topics.into_iter().map(|topic| topic.into_owned()).collect(),
            )
        }
        Request::Ping => ("ping", Vec::new()),
        Request::Refresh { token } => ("refresh", vec![token.into_owned()]),
    }
}

/// Whether serde_json's `Value` refuses an event for what only a field or argument we ignore
/// (or publish `data`) may hold, since those are skipped over unread: nesting past its
/// recursion limit, a number no `f64` holds, an escaped lone surrogate.
fn refused_only_for_data(error: &serde_json::Error) -> bool {
    let message = error.to_string();
    [
        "recursion limit exceeded",
        "number out of range",
        "lone leading surrogate",
        "unexpected end of hex escape",
        "invalid unicode code point",
    ]
    .iter()
    .any(|known| message.contains(known))
}
