//! The JSON requests clients send over the WebSocket (subscribe, unsubscribe, publish, since).
//!
//! The input is one whole text message: the session assembles messages before the broker sees
//! them, so read boundaries do not reach this parser (the session target covers them).
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the message (a request
//!   cannot make us hold more than the topics it names);
//! - a publish's `data` is a slice of the message (the exact bytes sent), with no whitespace
//!   around it, within the `publish_json_*` bounds (depth, number length, paired surrogates);
//!   its topic is a valid topic name, its idempotency `id` (if any) a valid key;
//! - a subscribe or unsubscribe names 0 to `subscriptions_per_connection_max` topics, all valid,
//!   and `since` names only topics being subscribed;
//! - serde_json's own reading of the message as a `Value` agrees: what we accept is a JSON
//!   object with the same `op`, `topic` and `topics`. (A message serde_json's `Value` refuses
//!   only for nesting deeper than its recursion limit, such as deeply nested publish `data`,
//!   is not compared: `data` is held to the bounds above, but fields we ignore are skipped
//!   unread, in linear time and without recursion.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use serde_json::Value;

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::broker::idempotency::IDEMPOTENCY_KEY_BYTES_MAX;
use ringcast::broker::json_bounds;
use ringcast::broker::request::{Request, parse_request};
use ringcast::broker::topic::validate_topic;
use ringcast::config::BrokerConfig;

/// serde_json's scratch space and the parsed topic lists and maps.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 64 * 1024,
    bytes_per_input_byte: 32,
};

fuzz_target!(|data: &[u8]| {
    let config = BrokerConfig::default();
    let (parsed, _) = allocation::measure(BUDGET, data.len(), || {
        parse_request(data, &config).map(|request| check(data, request, &config))
    });
    let Ok((op, topics)) = parsed else {
        return;
    };
    let value: Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(error) if refused_only_for_data(&error) => return,
        Err(error) => panic!("we accepted what serde_json refuses: {error}"),
    };
    assert_eq!(value.get("op").and_then(Value::as_str), Some(op));
    match op {
        "publish" => assert_eq!(
            value.get("topic").and_then(Value::as_str),
            Some(&*topics[0])
        ),
        _ => {
            let theirs: Vec<&str> = value["topics"]
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
fn check(
    message: &[u8],
    request: Request<'_>,
    config: &BrokerConfig,
) -> (&'static str, Vec<String>) {
    let valid = |topic: &str| validate_topic(topic, config.topic_bytes_max) == Ok(());
    match request {
        Request::Publish { topic, data, id } => {
            let message_range = message.as_ptr_range();
            let data_range = data.as_ptr_range();
            assert!(message_range.start <= data_range.start && data_range.end <= message_range.end);
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
    }
}

/// Whether serde_json's `Value` refuses a message for what only a field we ignore (or publish
/// `data`, for a number no `f64` holds) may hold, since those are skipped over unread: nesting
/// past its recursion limit, a number no `f64` holds, an escaped lone surrogate.
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
