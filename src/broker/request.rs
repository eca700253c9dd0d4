//! Client requests over the WebSocket: JSON text messages with an `op`.
//!
//! A publish is parsed without allocating: the topic borrows the message (unless it holds JSON
//! escapes) and `data` is a `RawValue`, the exact bytes the client sent, forwarded verbatim and
//! never re-serialised. Every failure is an [`RequestError`] the connection answers with an
//! `error` message and survives: a bad request does not cost the client its subscriptions.

use std::borrow::Cow;
use std::collections::HashMap;

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::BrokerConfig;
use super::grants::Grants;
use super::idempotency::{IDEMPOTENCY_KEY_BYTES_MAX, IdempotencyKey};
use super::json_bounds::{self, JsonBoundError};
use super::owner::Since;
use super::topic::{Epoch, TopicError, TopicName, validate_topic};

/// One request of a client, taken off its connection for the shard's broker to carry out (it
/// needs the other connections and the other shards). Topics are validated names; `data` is one
/// JSON value, verbatim.
#[derive(Debug)]
pub enum BrokerRequest {
    /// `ticket` names the HTTP response that waits for the seq; a WebSocket publish has none.
    /// With a `key`, a retry within the window is answered with the first one's seq.
    Publish {
        topic: TopicName,
        data: Bytes,
        ticket: Option<u32>,
        key: Option<IdempotencyKey>,
    },
    /// An HTTP batch: every item published, or none (item `i` answers ticket
    /// `first_ticket + i`; with a `key`, item `i` is published under `key#i`).
    PublishBatch {
        items: Vec<(TopicName, Bytes)>,
        first_ticket: u32,
        key: Option<IdempotencyKey>,
    },
    Subscribe {
        topic: TopicName,
        since: Option<Since>,
    },
    Unsubscribe {
        topic: TopicName,
    },
    /// The connection's token was refreshed: from now on it may hold only subscriptions of
    /// topics `grants` allows; the others end, each with an error.
    Regrant {
        grants: Arc<Grants>,
    },
}

/// One parsed request.
#[derive(Debug)]
pub enum Request<'a> {
    Subscribe {
        topics: Vec<Cow<'a, str>>,
        /// Per topic, the last seq the client has (and of which epoch): replay from the next.
        since: HashMap<Cow<'a, str>, Since>,
    },
    Unsubscribe {
        topics: Vec<Cow<'a, str>>,
    },
    /// `{"op":"ping"}`, answered `{"op":"pong"}`: a browser cannot see WebSocket pings, so a
    /// client that hears nothing for a while asks, and takes silence after it for a dead link.
    Ping,
    Publish {
        topic: Cow<'a, str>,
        data: &'a [u8],
        /// The client's idempotency key: the publish is acknowledged with
        /// `{"op":"published","id":…,"seq":…}`, and a retry with the same id is answered
        /// with the first one's seq instead of being published again.
        id: Option<Cow<'a, str>>,
    },
    /// A new token for the connection (`{"op":"refresh","token":…}`), checked by the endpoint.
    Refresh {
        token: Cow<'a, str>,
    },
}

/// Why a request was refused; the connection stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    Binary,
    TooLarge,
    MalformedJson,
    UnknownOp,
    MissingField(&'static str),
    Topic(TopicError),
    TooManyTopics,
    SinceWithoutSubscription,
    InvalidEpoch,
    /// A publish's `data` breaks a `publish_json_*` bound.
    Data(JsonBoundError),
    /// A publish's `id` is not 1 to 128 bytes of printable ASCII.
    InvalidId,
    /// A Socket.IO event whose name (the array's first item) is not a JSON string without
    /// escapes.
    EventName,
}

impl RequestError {
    /// The reason sent back in `{"op":"error","reason":…}` (plain ASCII, no quotes to escape).
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Binary => "requests are JSON text messages",
            RequestError::TooLarge => "request is larger than request_bytes_max",
            RequestError::MalformedJson => "malformed JSON",
            RequestError::UnknownOp => {
                "unknown op: expected subscribe, unsubscribe, publish, refresh or ping"
            }
            RequestError::MissingField("topic") => "publish needs a topic",
            RequestError::MissingField("data") => "publish needs data",
            RequestError::MissingField("token") => "refresh needs a token",
            RequestError::MissingField(_) => "subscribe and unsubscribe need topics",
            RequestError::Topic(error) => error.reason(),
            RequestError::TooManyTopics => {
                "more topics than subscriptions_per_connection_max in one request"
            }
            RequestError::SinceWithoutSubscription => "since names a topic not being subscribed",
            RequestError::InvalidEpoch => {
                "an epoch is 16 hex digits, as subscribed and reset give it"
            }
            RequestError::Data(error) => error.reason(),
            RequestError::InvalidId => "an id is 1 to 128 bytes of printable ASCII",
            RequestError::EventName => "an event name is a JSON string without escapes",
        }
    }
}

/// The fields any request may carry; which are required depends on `op`. A flat struct rather
/// than a tagged enum: serde buffers tagged enums, which would copy `data` and allocate.
#[derive(Deserialize)]
struct Fields<'a> {
    /// Required in a `/ws` request; a Socket.IO event names it instead.
    #[serde(borrow, default)]
    op: Option<Text<'a>>,
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    #[serde(borrow, default)]
    topics: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    since: Option<HashMap<Text<'a>, SinceValue<'a>>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    token: Option<Text<'a>>,
}

/// A `since` value: a bare seq, or `{"seq":…,"epoch":"…"}` (what `subscribed` and `reset`
/// said), so that a seq of another sequence space is recognised.
#[derive(Deserialize)]
#[serde(untagged)]
enum SinceValue<'a> {
    Seq(u64),
    WithEpoch {
        seq: u64,
        #[serde(borrow)]
        epoch: Text<'a>,
    },
}

/// A JSON string that borrows the message unless it holds escapes. serde borrows a `Cow<str>`
/// only as a direct field; inside an `Option` or a `Vec` it would always copy.
#[derive(Deserialize, PartialEq, Eq, Hash)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Parses one request message.
pub fn parse_request<'a>(
    payload: &'a [u8],
    config: &BrokerConfig,
) -> Result<Request<'a>, RequestError> {
    if payload.len() > config.request_bytes_max {
        return Err(RequestError::TooLarge);
    }
    let fields = read_fields(payload)?;
    let op = fields
        .op
        .as_ref()
        .ok_or(RequestError::MalformedJson)?
        .0
        .clone();
    request_of(&op, fields, config)
}

/// Parses the argument of a Socket.IO event named `op` (`["publish",{"topic":…,"data":…}]`):
/// the same fields as a `/ws` request, whose `op` the event's name gives (an `op` inside is
/// ignored).
pub fn parse_named_request<'a>(
    op: &str,
    argument: &'a [u8],
    config: &BrokerConfig,
) -> Result<Request<'a>, RequestError> {
    if argument.len() > config.request_bytes_max {
        return Err(RequestError::TooLarge);
    }
    request_of(op, read_fields(argument)?, config)
}

/// A request's fields, which must be a JSON object: serde reads a struct from an array too
/// (its fields by position), which no client means and the protocol does not allow.
fn read_fields(json: &[u8]) -> Result<Fields<'_>, RequestError> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(RequestError::MalformedJson);
    }
    serde_json::from_slice(json).map_err(|_| RequestError::MalformedJson)
}

/// Parses the JSON array of a Socket.IO EVENT (`["publish",{"topic":…,"data":…}]`): the
/// event's name is the request's `op`, its first argument the request's fields (an event
/// without one reads as `{}`; further arguments are ignored).
pub fn parse_event<'a>(data: &'a [u8], config: &BrokerConfig) -> Result<Request<'a>, RequestError> {
    if data.len() > config.request_bytes_max {
        return Err(RequestError::TooLarge);
    }
    let arguments: Vec<&'a RawValue> =
        serde_json::from_slice(data).map_err(|_| RequestError::MalformedJson)?;
    let name = arguments
        .first()
        .and_then(|name| serde_json::from_str::<&'a str>(name.get()).ok())
        .ok_or(RequestError::EventName)?;
    let argument = arguments.get(1).map_or("{}", |argument| argument.get());
    parse_named_request(name, argument.as_bytes(), config)
}

fn request_of<'a>(
    op: &str,
    fields: Fields<'a>,
    config: &BrokerConfig,
) -> Result<Request<'a>, RequestError> {
    match op {
        "publish" => {
            let topic = fields.topic.ok_or(RequestError::MissingField("topic"))?.0;
            validate_topic(&topic, config.topic_bytes_max).map_err(RequestError::Topic)?;
            let data = fields.data.ok_or(RequestError::MissingField("data"))?.get();
            // Kept and replayed verbatim to every subscriber, so held to the bounds first.
            json_bounds::check(data.as_bytes(), &config.json_bounds())
                .map_err(RequestError::Data)?;
            let id = fields.id.map(|id| id.0);
            if let Some(id) = &id {
                validate_topic(id, IDEMPOTENCY_KEY_BYTES_MAX)
                    .map_err(|_| RequestError::InvalidId)?;
            }
            Ok(Request::Publish {
                topic,
                data: data.as_bytes(),
                id,
            })
        }
        "subscribe" => {
            let topics = checked_topics(fields.topics, config)?;
            let since = since_values(fields.since.unwrap_or_default())?;
            if since.keys().any(|topic| !topics.contains(topic)) {
                return Err(RequestError::SinceWithoutSubscription);
            }
            Ok(Request::Subscribe { topics, since })
        }
        "ping" => Ok(Request::Ping),
        "unsubscribe" => Ok(Request::Unsubscribe {
            topics: checked_topics(fields.topics, config)?,
        }),
        "refresh" => Ok(Request::Refresh {
            token: fields.token.ok_or(RequestError::MissingField("token"))?.0,
        }),
        _ => Err(RequestError::UnknownOp),
    }
}

/// Reads a `since` object on its own (`{"AAPL":41,"MSFT":{"seq":7,"epoch":"…"}}`), as the
/// streaming and polling endpoints take it in their query.
pub fn parse_since(text: &str) -> Result<HashMap<Cow<'_, str>, Since>, RequestError> {
    let values: HashMap<Text<'_>, SinceValue<'_>> =
        serde_json::from_str(text).map_err(|_| RequestError::MalformedJson)?;
    since_values(values)
}

fn since_values<'a>(
    values: HashMap<Text<'a>, SinceValue<'a>>,
) -> Result<HashMap<Cow<'a, str>, Since>, RequestError> {
    let mut since = HashMap::with_capacity(values.len());
    for (topic, value) in values {
        let value = match value {
            SinceValue::Seq(seq) => Since { seq, epoch: None },
            SinceValue::WithEpoch { seq, epoch } => Since {
                seq,
                epoch: Some(Epoch::parse(&epoch.0).ok_or(RequestError::InvalidEpoch)?),
            },
        };
        since.insert(topic.0, value);
    }
    Ok(since)
}

fn checked_topics<'a>(
    topics: Option<Vec<Text<'a>>>,
    config: &BrokerConfig,
) -> Result<Vec<Cow<'a, str>>, RequestError> {
    let topics: Vec<Cow<'a, str>> = topics
        .ok_or(RequestError::MissingField("topics"))?
        .into_iter()
        .map(|topic| topic.0)
        .collect();
    if topics.len() > config.subscriptions_per_connection_max {
        return Err(RequestError::TooManyTopics);
    }
    for topic in &topics {
        validate_topic(topic, config.topic_bytes_max).map_err(RequestError::Topic)?;
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request<'_>, RequestError> {
        parse_request(text.as_bytes(), &BrokerConfig::default())
    }

    /// Proves `{"op":"ping"}` is a request of its own (answered `pong` by the endpoint).
    #[test]
    fn ping_is_a_request() {
        assert!(matches!(parse(r#"{"op":"ping"}"#), Ok(Request::Ping)));
    }

    /// Proves a request's fields must be an object, over `/ws` and as a Socket.IO event's
    /// argument: serde would read them from an array by position (the socketio_event fuzz
    /// target found `["ping",[]]` accepted).
    #[test]
    fn fields_in_an_array_are_refused() {
        let config = BrokerConfig::default();
        for request in [
            r#"["ping"]"#,
            r#"["subscribe",["AAPL"]]"#,
            r#" [null,"AAPL"]"#,
        ] {
            let parsed = parse(request);
            assert!(
                matches!(parsed, Err(RequestError::MalformedJson)),
                "{request}: {parsed:?}"
            );
        }
        for event in [
            r#"["ping",[]]"#,
            "[\"ping\",\r\t[\t]\r]",
            r#"["publish",["x","AAPL",1]]"#,
            r#"["subscribe",[null,null,["AAPL"]]]"#,
        ] {
            let parsed = parse_event(event.as_bytes(), &config);
            assert!(
                matches!(parsed, Err(RequestError::MalformedJson)),
                "{event}: {parsed:?}"
            );
        }
        let parsed = parse_event(br#"["ping", {}]"#, &config);
        assert!(matches!(parsed, Ok(Request::Ping)));
        assert!(matches!(
            parse_event(br#"["ping"]"#, &config),
            Ok(Request::Ping)
        ));
    }

    /// Proves a publish keeps `data` byte for byte, whitespace and key order included.
    #[test]
    fn publish_keeps_data_verbatim() {
        let request = parse(r#"{"op":"publish","topic":"AAPL","data":{"px": 191.20, "a":[1]}}"#);
        let Ok(Request::Publish { topic, data, .. }) = request else {
            panic!("{request:?}")
        };
        assert_eq!(topic, "AAPL");
        assert!(matches!(topic, Cow::Borrowed(_)), "no copy of the topic");
        assert_eq!(data, br#"{"px": 191.20, "a":[1]}"#);
    }

    /// Proves subscribe reads topics and `since`, and field order does not matter.
    #[test]
    fn subscribe_with_since() {
        let request = parse(r#"{"since":{"AAPL":41},"topics":["AAPL","MSFT"],"op":"subscribe"}"#);
        let Ok(Request::Subscribe { topics, since }) = request else {
            panic!("{request:?}")
        };
        assert_eq!(topics, ["AAPL", "MSFT"]);
        assert_eq!(
            since.get("AAPL"),
            Some(&Since {
                seq: 41,
                epoch: None
            })
        );
        assert_eq!(since.len(), 1);
        let request = parse(
            r#"{"op":"subscribe","topics":["A"],"since":{"A":{"seq":7,"epoch":"00000000000000ff"}}}"#,
        );
        let Ok(Request::Subscribe { since, .. }) = request else {
            panic!("{request:?}")
        };
        assert_eq!(since["A"].epoch, Some(Epoch(0xff)));
    }

    /// Proves every bad request maps to its error rather than a panic.
    #[test]
    fn bad_requests() {
        let cases = [
            ("{", RequestError::MalformedJson),
            ("[]", RequestError::MalformedJson),
            (r#"{"op":"dance"}"#, RequestError::UnknownOp),
            (r#"{"topic":"A"}"#, RequestError::MalformedJson),
            (
                r#"{"op":"publish","data":1}"#,
                RequestError::MissingField("topic"),
            ),
            (
                r#"{"op":"publish","topic":"A"}"#,
                RequestError::MissingField("data"),
            ),
            (
                r#"{"op":"publish","topic":"","data":1}"#,
                RequestError::Topic(TopicError::Empty),
            ),
            (
                r#"{"op":"publish","topic":"A\nB","data":1}"#,
                RequestError::Topic(TopicError::InvalidByte {
                    index: 1,
                    byte: b'\n',
                }),
            ),
            (
                r#"{"op":"subscribe"}"#,
                RequestError::MissingField("topics"),
            ),
            (
                r#"{"op":"subscribe","topics":"A"}"#,
                RequestError::MalformedJson,
            ),
            (
                r#"{"op":"subscribe","topics":["A"],"since":{"B":1}}"#,
                RequestError::SinceWithoutSubscription,
            ),
            (
                r#"{"op":"subscribe","topics":["A"],"since":{"A":-1}}"#,
                RequestError::MalformedJson,
            ),
            (
                r#"{"op":"subscribe","topics":["A"],"since":{"A":{"seq":1,"epoch":"zz"}}}"#,
                RequestError::InvalidEpoch,
            ),
            (
                r#"{"op":"publish","topic":"A","data":}"#,
                RequestError::MalformedJson,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).unwrap_err(), expected, "{text}");
            assert!(!expected.reason().contains('"'));
        }
    }

    /// Proves the request size limit is checked before parsing.
    #[test]
    fn oversized_request() {
        let config = BrokerConfig {
            request_bytes_max: 16,
            ..BrokerConfig::default()
        };
        let text = br#"{"op":"publish","topic":"A","data":1}"#;
        assert_eq!(
            parse_request(text, &config).unwrap_err(),
            RequestError::TooLarge
        );
    }

    /// Proves a publish whose data is a parser bomb is refused with the bound it broke: nested
    /// 100,000 deep, a 60,000-digit number, an unpaired surrogate; data at the bounds passes.
    #[test]
    fn bombs_in_data_are_refused() {
        let publish = |data: &str| format!(r#"{{"op":"publish","topic":"A","data":{data}}}"#);
        let config = BrokerConfig {
            request_bytes_max: 1024 * 1024,
            ..BrokerConfig::default()
        };
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let long = "7".repeat(60_000);
        let cases = [
            (deep, JsonBoundError::TooDeep),
            (long, JsonBoundError::NumberTooLong),
            (
                r#"{"s":"\ud800"}"#.to_owned(),
                JsonBoundError::UnpairedSurrogate,
            ),
            (
                r#"["\udc00"]"#.to_owned(),
                JsonBoundError::UnpairedSurrogate,
            ),
        ];
        for (data, error) in cases {
            let text = publish(&data);
            let refused = parse_request(text.as_bytes(), &config).unwrap_err();
            assert_eq!(refused, RequestError::Data(error));
            assert!(!refused.reason().contains('"'));
        }
        let at_bounds = format!("{}{}{}", "[".repeat(63), "9".repeat(64), "]".repeat(63));
        let text = publish(&format!(r#"[{at_bounds}, "\ud83d\ude00"]"#));
        assert!(matches!(
            parse_request(text.as_bytes(), &config),
            Ok(Request::Publish { .. })
        ));
    }

    /// Proves a Socket.IO event reads as the request its name and first argument make (an
    /// `op` inside is ignored, an event without an argument reads as `{}`), and that an event
    /// that is not an array with a plain string first is refused.
    #[test]
    fn socketio_events_are_requests() {
        let config = BrokerConfig::default();
        let event = |text: &'static str| parse_event(text.as_bytes(), &config);
        let request = event(r#"["publish",{"op":"subscribe","topic":"A","data":[1]},"x"]"#);
        let Ok(Request::Publish { topic, data, id }) = request else {
            panic!("{request:?}")
        };
        assert_eq!((&*topic, data, id), ("A", &b"[1]"[..], None));
        assert!(matches!(event(r#"["ping"]"#), Ok(Request::Ping)));
        let request = event(r#"["subscribe",{"topics":["A","B"]}]"#);
        assert!(matches!(request, Ok(Request::Subscribe { ref topics, .. }) if topics.len() == 2));
        let cases = [
            ("[]", RequestError::EventName),
            (r#"[1,{}]"#, RequestError::EventName),
            (r#"["p\u0075blish",{}]"#, RequestError::EventName),
            (r#"{"op":"ping"}"#, RequestError::MalformedJson),
            (r#"["dance",{}]"#, RequestError::UnknownOp),
            (r#"["subscribe"]"#, RequestError::MissingField("topics")),
            (r#"["publish",7]"#, RequestError::MalformedJson),
        ];
        for (text, expected) in cases {
            assert_eq!(event(text).unwrap_err(), expected, "{text}");
        }
    }

    /// Proves a topic with a JSON escape is decoded (and then checked like any other).
    #[test]
    fn escaped_topic_is_decoded() {
        let request = parse(r#"{"op":"unsubscribe","topics":["A\u0042"]}"#);
        let Ok(Request::Unsubscribe { topics }) = request else {
            panic!("{request:?}")
        };
        assert_eq!(topics, ["AB"]);
    }
}
