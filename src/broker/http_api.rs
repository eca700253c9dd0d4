//! The broker's HTTP endpoints: which operation a request asks for, and the exact responses.
//!
//! | Request                      | Answer                                                |
//! |------------------------------|-------------------------------------------------------|
//! | `GET /health`, `GET /metrics`| [`Route::Health`], [`Route::Metrics`] (caller renders)|
//! | `POST /publish/{topic}`      | body is one JSON value → `200 {"seq":N}`              |
//! | `POST /publish`              | body `[{"topic":..,"data":..},..]` → `200 {"seqs":[..]}`|
//!
//! Everything here is a pure function of a request that [`crate::protocol::http1`] completed: no
//! I/O, no broker state. Published data is validated as JSON without building a tree
//! ([`RawValue`]) and is forwarded as the exact bytes the client sent, never re-serialised.
//! Refusals are [`HttpError`]s, answered with a JSON body `{"error":"..."}`.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};

use bytes::BytesMut;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::config::BrokerConfig;
use super::idempotency::IDEMPOTENCY_KEY_BYTES_MAX;
use super::json_bounds::{self, JsonBoundError, JsonBounds};
use super::stream_api::StreamError;
use super::topic::{self as topic_name, TopicError, TopicName};
use crate::protocol::HandshakeError;
use crate::protocol::decimal::write_decimal;
use crate::protocol::http1::response as handshake;
use crate::protocol::http1::{BodyFraming, Request, RequestHead, RequestLimits};
use crate::protocol::pool::PoolLimits;

/// Room for an error response body: `{"error":"` + an escaped one-line message + `"}`. Every
/// message is short; one echoing a long field name from a client's JSON is cut to fit.
const ERROR_BODY_BYTES_MAX: usize = 256;
const CONTENT_TYPE_JSON: (&str, &str) = ("Content-Type", "application/json");
/// What the read-only endpoints accept, sent in `Allow` with a 405.
const ALLOW_READ: &str = "GET, HEAD";
const ALLOW_PUBLISH: &str = "POST";

/// Limits of HTTP publishing: a view of the `BrokerConfig` settings of the same names (which say
/// why each default is what it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishConfig {
    pub topic_bytes_max: usize,
    /// Largest publish request body, by `Content-Length` or decoded chunks; 413 beyond. 1 MiB,
    /// like `message_bytes_max`: what is published goes out as WebSocket messages, so a larger
    /// body could not be delivered. A body cut across reads waits in one pooled buffer, so the
    /// pool's largest class must hold it.
    pub publish_body_bytes_max: usize,
    /// Most items in one batch publish; 413 beyond. 1000 bounds the work one request hands the
    /// broker between two reads of other connections, and the response (≤ 21 bytes per item).
    pub publish_batch_items_max: usize,
    /// Most requests one connection may have waiting for their answers; 503 and close beyond.
    pub http_pipelined_requests_max: usize,
    /// The bounds on each published `data` (`publish_json_depth_max`,
    /// `publish_json_number_bytes_max`, paired surrogates); 400 beyond.
    pub json_bounds: JsonBounds,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self::from_broker(&BrokerConfig::default())
    }
}

impl PublishConfig {
    pub fn from_broker(broker: &BrokerConfig) -> Self {
        Self {
            topic_bytes_max: broker.topic_bytes_max,
            publish_body_bytes_max: broker.publish_body_bytes_max,
            publish_batch_items_max: broker.publish_batch_items_max,
            http_pipelined_requests_max: broker.http_pipelined_requests_max,
            json_bounds: broker.json_bounds(),
        }
    }

    /// Checks the limits against each other and against the pool that holds bodies.
    pub fn validate(&self, pool: &PoolLimits) -> Result<(), String> {
        if self.publish_batch_items_max == 0 {
            return Err("publish_batch_items_max must be above zero".into());
        }
        if self.http_pipelined_requests_max == 0 {
            return Err("http_pipelined_requests_max must be above zero".into());
        }
        let largest = pool.classes.last().map_or(0, |class| class.buffer_bytes);
        if self.publish_body_bytes_max > largest {
            return Err(format!(
                "publish_body_bytes_max = {} is above the pool's largest buffer ({largest} \
                 bytes): a body cut across reads would find no buffer",
                self.publish_body_bytes_max
            ));
        }
        Ok(())
    }

    /// The request reader's limits: the head limit of the protocol, the body limit of ours.
    pub fn request_limits(&self, header_bytes_max: usize) -> RequestLimits {
        RequestLimits {
            header_bytes_max,
            body_bytes_max: self.publish_body_bytes_max,
        }
    }
}

/// Why a request was refused. Each variant maps to a status; the message is the reason sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The request stream itself could not be read (from the protocol's request reader). The
    /// connection closes after the answer: what follows cannot be trusted to start a request.
    Request(HandshakeError),
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// A publish without `Content-Length` or `Transfer-Encoding`.
    LengthRequired,
    /// A publish whose `Content-Type` is missing or not `application/json`.
    UnsupportedMediaType,
    /// A `%` in the topic not followed by two hex digits.
    InvalidPercentEncoding,
    InvalidTopic(TopicError),
    /// The batch item at `index` (from 0) names an invalid topic.
    InvalidBatchTopic {
        index: usize,
        error: TopicError,
    },
    /// The body is not the JSON the endpoint takes; serde_json's message says where.
    InvalidJson(String),
    /// The published data breaks a bound of [`json_bounds`] (a parser bomb).
    InvalidData(JsonBoundError),
    /// The data of the batch item at `index` (from 0) breaks a bound.
    InvalidBatchData {
        index: usize,
        error: JsonBoundError,
    },
    BatchTooLarge {
        items_max: usize,
    },
    /// An `Idempotency-Key` that is not 1 to 128 bytes of printable ASCII.
    InvalidIdempotencyKey,
    /// More requests waiting for answers than `http_pipelined_requests_max`.
    TooManyPipelined {
        requests_max: usize,
    },
    /// The token does not grant publishing on the topic (of batch item `index`, for a batch).
    Forbidden {
        index: Option<usize>,
    },
    /// The token does not grant subscribing to `topic` (of an `/sse`, `/stream` or `/poll`).
    SubscribeForbidden {
        topic: TopicName,
    },
    /// A reading request (`/sse`, `/stream`, `/poll`) the endpoint refused.
    Stream(StreamError),
}

impl HttpError {
    /// The status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Request(error) => error.status(),
            Self::NotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::LengthRequired => 411,
            Self::BatchTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyPipelined { .. } => 503,
            Self::Forbidden { .. } | Self::SubscribeForbidden { .. } => 403,
            Self::Stream(error) => error.status(),
            Self::InvalidPercentEncoding
            | Self::InvalidTopic(_)
            | Self::InvalidBatchTopic { .. }
            | Self::InvalidJson(_)
            | Self::InvalidData(_)
            | Self::InvalidBatchData { .. }
            | Self::InvalidIdempotencyKey => 400,
        }
    }

    /// Whether the connection must close after the answer. Only errors of the request stream
    /// do; after the others the whole request was read and the next one can follow.
    pub fn closes_connection(&self) -> bool {
        matches!(self, Self::Request(_) | Self::TooManyPipelined { .. })
    }
}

impl From<HandshakeError> for HttpError {
    fn from(error: HandshakeError) -> Self {
        Self::Request(error)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(error) => write!(formatter, "{error}"),
            Self::NotFound => write!(formatter, "no endpoint at this path"),
            Self::MethodNotAllowed { allow } => {
                write!(formatter, "method not allowed here; use {allow}")
            }
            Self::LengthRequired => write!(
                formatter,
                "publish needs a Content-Length or Transfer-Encoding: chunked"
            ),
            Self::UnsupportedMediaType => {
                write!(formatter, "publish needs Content-Type: application/json")
            }
            Self::InvalidPercentEncoding => {
                write!(formatter, "topic has a % not followed by two hex digits")
            }
            Self::InvalidTopic(error) => write!(formatter, "{error}"),
            Self::InvalidBatchTopic { index, error } => write!(formatter, "item {index}: {error}"),
            Self::InvalidJson(message) => write!(formatter, "invalid json body: {message}"),
            Self::InvalidData(error) => write!(formatter, "{}", error.reason()),
            Self::InvalidBatchData { index, error } => {
                write!(formatter, "item {index}: {}", error.reason())
            }
            Self::BatchTooLarge { items_max } => {
                write!(formatter, "batch has more than {items_max} items")
            }
            Self::InvalidIdempotencyKey => write!(
                formatter,
                "Idempotency-Key must be 1 to 128 bytes of printable ASCII"
            ),
            Self::TooManyPipelined { requests_max } => write!(
                formatter,
                "more than {requests_max} requests waiting for answers; wait for them"
            ),
            Self::Forbidden { index: None } => {
                write!(
                    formatter,
                    "forbidden: the token grants no publishing on this topic"
                )
            }
            Self::Forbidden { index: Some(index) } => write!(
                formatter,
                "forbidden: item {index}: the token grants no publishing on its topic"
            ),
            Self::SubscribeForbidden { topic } => write!(
                formatter,
                "forbidden: the token grants no subscription to topic {}",
                topic.as_str()
            ),
            Self::Stream(error) => write!(formatter, "{}", error.reason()),
        }
    }
}

impl std::error::Error for HttpError {}

/// What a request asks for.
#[derive(Debug)]
pub enum Route<'a> {
    Health,
    Metrics,
    /// Publish `data`, the body's JSON value as sent, to `topic` (percent-decoded, valid),
    /// under the request's `Idempotency-Key` if it has one.
    PublishOne {
        topic: Cow<'a, str>,
        data: &'a RawValue,
        key: Option<&'a [u8]>,
    },
    /// Publish each `(topic, data)` in order, all or none; topics are JSON-unescaped and valid.
    PublishBatch {
        items: Vec<(Cow<'a, str>, &'a RawValue)>,
        key: Option<&'a [u8]>,
    },
    Refuse(HttpError),
}

/// The endpoint a head asks for, before its body is looked at.
enum Target<'a> {
    Health,
    Metrics,
    PublishOne { topic: Cow<'a, str> },
    PublishBatch,
}

/// Routes a whole request: the head's endpoint, method and headers, then the body.
pub fn route<'a>(request: &Request<'a>, config: &PublishConfig) -> Route<'a> {
    let result = target(&request.head, config).and_then(|target| match target {
        Target::Health => Ok(Route::Health),
        Target::Metrics => Ok(Route::Metrics),
        Target::PublishOne { topic } => {
            let key = idempotency_key(&request.head)?;
            let data = parse_one(request.body)?;
            json_bounds::check(data.get().as_bytes(), &config.json_bounds)
                .map_err(HttpError::InvalidData)?;
            Ok(Route::PublishOne { topic, data, key })
        }
        Target::PublishBatch => Ok(Route::PublishBatch {
            key: idempotency_key(&request.head)?,
            items: parse_batch(request.body, config)?,
        }),
    });
    result.unwrap_or_else(Route::Refuse)
}

/// The request's `Idempotency-Key`, if it has one and it is valid.
fn idempotency_key<'a>(head: &RequestHead<'a>) -> Result<Option<&'a [u8]>, HttpError> {
    let Some(key) = head.header("idempotency-key") else {
        return Ok(None);
    };
    topic_name::validate_topic_bytes(key, IDEMPOTENCY_KEY_BYTES_MAX)
        .map_err(|_| HttpError::InvalidIdempotencyKey)?;
    Ok(Some(key))
}

/// Checks what can be checked before the body arrives, for a client that waits on
/// `Expect: 100-continue`: on `Err`, answer with the error instead of 100 and close.
pub fn check_head(head: &RequestHead<'_>, config: &PublishConfig) -> Result<(), HttpError> {
    target(head, config).map(drop)
}

/// In the order a client fixes them: the path (404), the method (405), the topic (400), the
/// framing (411), the media type (415).
fn target<'a>(head: &RequestHead<'a>, config: &PublishConfig) -> Result<Target<'a>, HttpError> {
    let path = head.path();
    let (allow, topic) = match path {
        "/health" | "/metrics" => (ALLOW_READ, None),
        "/publish" => (ALLOW_PUBLISH, None),
        _ => match path.strip_prefix("/publish/") {
            Some(encoded) => (ALLOW_PUBLISH, Some(encoded)),
            None => return Err(HttpError::NotFound),
        },
    };
    let method = head.method();
    let allowed = match allow {
        ALLOW_READ => method == "GET" || method == "HEAD",
        _ => method == "POST",
    };
    if !allowed {
        return Err(HttpError::MethodNotAllowed { allow });
    }
    match path {
        "/health" => return Ok(Target::Health),
        "/metrics" => return Ok(Target::Metrics),
        _ => {}
    }
    let topic = topic
        .map(|topic| decode_topic(topic, config.topic_bytes_max))
        .transpose()?;
    if head.body_framing() == BodyFraming::None {
        return Err(HttpError::LengthRequired);
    }
    if !is_json(head.content_type()) {
        return Err(HttpError::UnsupportedMediaType);
    }
    Ok(match topic {
        Some(topic) => Target::PublishOne { topic },
        None => Target::PublishBatch,
    })
}

/// `application/json`, with any parameters (`; charset=utf-8`), ignoring case (RFC 9110 §8.3.1).
fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|value| {
        let media_type = value.split(|&byte| byte == b';').next().unwrap_or(value);
        media_type
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/json")
    })
}

/// The topic of `/publish/{topic}`, percent-decoded (borrowed when there is nothing to decode)
/// and validated. `+` stays `+`: it means a space only in form-encoded queries.
fn decode_topic(encoded: &str, topic_bytes_max: usize) -> Result<Cow<'_, str>, HttpError> {
    if !encoded.contains('%') {
        topic_name::validate_topic(encoded, topic_bytes_max).map_err(HttpError::InvalidTopic)?;
        return Ok(Cow::Borrowed(encoded));
    }
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'%' {
            decoded.push(bytes[index]);
            index += 1;
            continue;
        }
        let digit = |offset: usize| {
            bytes
                .get(index + offset)
                .and_then(|&byte| (byte as char).to_digit(16))
        };
        let (Some(high), Some(low)) = (digit(1), digit(2)) else {
            return Err(HttpError::InvalidPercentEncoding);
        };
        decoded.push((high * 16 + low) as u8);
        index += 3;
    }
    topic_name::validate_topic_bytes(&decoded, topic_bytes_max).map_err(HttpError::InvalidTopic)?;
    Ok(Cow::Owned(
        String::from_utf8(decoded).expect("a valid topic is ASCII"),
    ))
}

/// The single-topic body: exactly one JSON value, whitespace around it allowed.
fn parse_one(body: &[u8]) -> Result<&RawValue, HttpError> {
    serde_json::from_slice(body).map_err(|error| HttpError::InvalidJson(error.to_string()))
}

/// One element of a batch body. Unknown fields are refused so that a typo (`"dta"`) is an
/// error rather than a publish of nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Reads a batch array, stopping at the first item past the limit rather than collecting a
/// body's worth of items first. The limit's breach is flagged beside serde's error, which
/// cannot carry our type.
struct BatchSeed<'flag> {
    items_max: usize,
    over_limit: &'flag Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "an array of {{\"topic\": ..., \"data\": ...}} objects"
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element::<BatchItem<'de>>()? {
            if items.len() == self.items_max {
                self.over_limit.set(true);
                return Err(de::Error::custom("too many items"));
            }
            items.push((item.topic, item.data));
        }
        Ok(items)
    }
}

fn parse_batch<'a>(
    body: &'a [u8],
    config: &PublishConfig,
) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>, HttpError> {
    let items_max = config.publish_batch_items_max;
    let over_limit = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let seed = BatchSeed {
        items_max,
        over_limit: &over_limit,
    };
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|items| deserializer.end().map(|()| items));
    let items = match parsed {
        Ok(items) => items,
        Err(_) if over_limit.get() => return Err(HttpError::BatchTooLarge { items_max }),
        Err(error) => return Err(HttpError::InvalidJson(error.to_string())),
    };
    for (index, (topic, data)) in items.iter().enumerate() {
        topic_name::validate_topic(topic, config.topic_bytes_max)
            .map_err(|error| HttpError::InvalidBatchTopic { index, error })?;
        // Each item is kept and replayed verbatim, so each is held to the bounds.
        json_bounds::check(data.get().as_bytes(), &config.json_bounds)
            .map_err(|error| HttpError::InvalidBatchData { index, error })?;
    }
    Ok(items)
}

/// Appends `200 {"seq":N}`.
pub fn write_publish_response(seq: u64, keep_alive: bool, out: &mut BytesMut) {
    const PREFIX: &[u8] = b"{\"seq\":";
    let body_bytes = PREFIX.len() + decimal_digits(seq) + 1;
    handshake::write_response_head(200, &[CONTENT_TYPE_JSON], body_bytes, keep_alive, out);
    out.extend_from_slice(PREFIX);
    write_decimal(seq, out);
    out.extend_from_slice(b"}");
}

/// Appends `200 {"seqs":[N1,N2,...]}`, the sequence numbers in the batch's order, written in
/// place (the body is not assembled first).
pub fn write_batch_response(seqs: &[u64], keep_alive: bool, out: &mut BytesMut) {
    const PREFIX: &[u8] = b"{\"seqs\":[";
    const SUFFIX: &[u8] = b"]}";
    let digits: usize = seqs.iter().copied().map(decimal_digits).sum();
    let commas = seqs.len().saturating_sub(1);
    let body_bytes = PREFIX.len() + digits + commas + SUFFIX.len();
    handshake::write_response_head(200, &[CONTENT_TYPE_JSON], body_bytes, keep_alive, out);
    let body_start = out.len();
    out.extend_from_slice(PREFIX);
    for (index, seq) in seqs.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b",");
        }
        write_decimal(*seq, out);
    }
    out.extend_from_slice(SUFFIX);
    assert_eq!(out.len() - body_start, body_bytes);
}

/// Appends the answer to a refused request: the error's status, `Allow` with a 405, and
/// `{"error":"<reason>"}`. Returns whether the connection stays open: `keep_alive` (the
/// request's wish) unless the error closes it. When `false`, close after sending.
#[must_use]
pub fn write_http_error(error: &HttpError, keep_alive: bool, out: &mut BytesMut) -> bool {
    let keep_alive = keep_alive && !error.closes_connection();
    let mut body = JsonErrorBody::new();
    // A message longer than the buffer is cut; the body stays valid JSON either way.
    let _ = write!(body, "{error}");
    let allow_header;
    let headers: &[(&str, &str)] = match error {
        HttpError::MethodNotAllowed { allow } => {
            allow_header = [CONTENT_TYPE_JSON, ("Allow", *allow)];
            &allow_header
        }
        _ => &[CONTENT_TYPE_JSON],
    };
    handshake::write_response(error.status(), headers, body.finish(), keep_alive, out);
    keep_alive
}

fn decimal_digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// `{"error":"..."}` formatted into a fixed array: the text written is escaped as a JSON
/// string, and what does not fit is cut at a whole character or escape.
struct JsonErrorBody {
    bytes: [u8; ERROR_BODY_BYTES_MAX],
    length: usize,
}

impl JsonErrorBody {
    const PREFIX: &'static [u8] = b"{\"error\":\"";
    const SUFFIX: &'static [u8] = b"\"}";

    fn new() -> Self {
        let mut bytes = [0; ERROR_BODY_BYTES_MAX];
        bytes[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        Self {
            bytes,
            length: Self::PREFIX.len(),
        }
    }

    fn finish(&mut self) -> &[u8] {
        let end = self.length + Self::SUFFIX.len();
        self.bytes[self.length..end].copy_from_slice(Self::SUFFIX);
        &self.bytes[..end]
    }

    fn push(&mut self, piece: &[u8]) -> fmt::Result {
        let room = ERROR_BODY_BYTES_MAX - Self::SUFFIX.len() - self.length;
        if piece.len() > room {
            return Err(fmt::Error);
        }
        self.bytes[self.length..self.length + piece.len()].copy_from_slice(piece);
        self.length += piece.len();
        Ok(())
    }
}

impl fmt::Write for JsonErrorBody {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for character in text.chars() {
            let mut escape = [0u8; 6];
            let mut utf8 = [0u8; 4];
            let piece: &[u8] = match character {
                '"' => b"\\\"",
                '\\' => b"\\\\",
                '\u{0}'..='\u{1f}' => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let code = character as usize;
                    escape.copy_from_slice(b"\\u0000");
                    escape[4] = HEX[code >> 4];
                    escape[5] = HEX[code & 0xF];
                    &escape
                }
                _ => character.encode_utf8(&mut utf8).as_bytes(),
            };
            self.push(piece)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::{HttpEvent, RequestReader};
    use crate::protocol::pool::BufferPool;

    const CONFIG: PublishConfig = PublishConfig {
        topic_bytes_max: 128,
        publish_body_bytes_max: 1024 * 1024,
        publish_batch_items_max: 3,
        http_pipelined_requests_max: 1024,
        json_bounds: JsonBounds {
            depth_max: 64,
            number_bytes_max: 64,
        },
    };

    /// A route copied out of its request, to compare.
    #[derive(Debug, PartialEq, Eq)]
    enum Routed {
        Health,
        Metrics,
        One {
            topic: String,
            borrowed: bool,
            data: String,
        },
        Batch(Vec<(String, String)>),
        Refuse(HttpError),
    }

    /// Reads `raw` (one whole request) and routes it.
    fn routed(raw: &[u8]) -> Routed {
        let mut pool = BufferPool::new(&PoolLimits::default());
        let mut reader = RequestReader::new();
        let limits = CONFIG.request_limits(8192);
        let mut events = reader.handle_read(raw, &mut pool, &limits);
        let Some(Ok(HttpEvent::Request(request))) = events.next_event() else {
            panic!("not one whole request: {}", String::from_utf8_lossy(raw));
        };
        match route(&request, &CONFIG) {
            Route::Health => Routed::Health,
            Route::Metrics => Routed::Metrics,
            Route::PublishOne { topic, data, .. } => Routed::One {
                borrowed: matches!(topic, Cow::Borrowed(_)),
                topic: topic.into_owned(),
                data: data.get().to_owned(),
            },
            Route::PublishBatch { items, .. } => Routed::Batch(
                items
                    .into_iter()
                    .map(|(topic, data)| (topic.into_owned(), data.get().to_owned()))
                    .collect(),
            ),
            Route::Refuse(error) => Routed::Refuse(error),
        }
    }

    fn publish(path: &str, content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn one(topic: &str, borrowed: bool, data: &str) -> Routed {
        Routed::One {
            topic: topic.into(),
            borrowed,
            data: data.into(),
        }
    }

    /// Proves the read-only endpoints route for GET and HEAD.
    #[test]
    fn health_and_metrics_route() {
        assert_eq!(
            routed(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"),
            Routed::Health
        );
        assert_eq!(
            routed(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n"),
            Routed::Health
        );
        assert_eq!(
            routed(b"GET /metrics?x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Routed::Metrics
        );
    }

    /// Proves a single publish forwards the body's JSON verbatim (inner whitespace and number
    /// spelling kept), allows whitespace around it, and decodes the topic only when needed.
    #[test]
    fn publish_one_keeps_the_data_verbatim() {
        let json = "application/json";
        let data = "{\"px\": 1.50e2, \"tags\":[ \"a\" ]}";
        assert_eq!(
            routed(&publish("/publish/AAPL", json, data)),
            one("AAPL", true, data)
        );
        let spaced = format!("{data} \r\n\t");
        assert_eq!(
            routed(&publish("/publish/AAPL", json, &spaced)),
            one("AAPL", true, data)
        );
        assert_eq!(
            routed(&publish(
                "/publish/fx%2FEUR%20usd+1",
                "Application/JSON; charset=utf-8",
                "1"
            )),
            one("fx/EUR usd+1", false, "1")
        );
        let chunked = b"POST /publish/A HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
            Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n";
        assert_eq!(routed(chunked), one("A", true, "[]"));
    }

    /// Proves a batch keeps its order, unescapes topics and forwards each data verbatim.
    #[test]
    fn publish_batch_keeps_order() {
        let body = r#" [{"topic":"AAPL","data":{"px":1}}, {"data":[1, 2],"topic":"M\u0053FT"}] "#;
        assert_eq!(
            routed(&publish("/publish", "application/json", body)),
            Routed::Batch(vec![
                ("AAPL".into(), "{\"px\":1}".into()),
                ("MSFT".into(), "[1, 2]".into()),
            ])
        );
        let empty = routed(&publish("/publish", "application/json", "[]"));
        assert_eq!(empty, Routed::Batch(Vec::new()));
    }

    /// Proves each refusal of the router gets its status, in the documented order.
    #[test]
    fn refusals_map_to_statuses() {
        let json = "application/json";
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 404),
            (b"GET /publishing HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 404),
            (
                b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec(),
                405,
            ),
            (b"GET /publish/A HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 405),
            (
                b"POST /publish/A HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\r\n"
                    .to_vec(),
                411,
            ),
            (publish("/publish/A", "text/plain", "1"), 415),
            (publish("/publish/A", "application/jsonx", "1"), 415),
            (
                b"POST /publish/A HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n1".to_vec(),
                415,
            ),
            (publish("/publish/", json, "1"), 400),
            (publish("/publish/A%4", json, "1"), 400),
            (publish("/publish/A%zz", json, "1"), 400),
            (publish("/publish/A%0A", json, "1"), 400),
            (publish("/publish/%C3%A9", json, "1"), 400),
            (
                publish(&format!("/publish/{}", "x".repeat(129)), json, "1"),
                400,
            ),
            (publish("/publish/A", json, ""), 400),
            (publish("/publish/A", json, "{\"a\":1} 2"), 400),
            (publish("/publish/A", json, "{\"a\":}"), 400),
            (
                b"POST /publish/A HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
                  Content-Length: 3\r\n\r\n\"\xff\""
                    .to_vec(),
                400,
            ),
            (publish("/publish", json, "{}"), 400),
            (publish("/publish", json, "[{\"topic\":\"A\"}]"), 400),
            (
                publish("/publish", json, "[{\"topic\":\"A\",\"data\":1,\"x\":2}]"),
                400,
            ),
            (
                publish("/publish", json, "[{\"topic\":\"\",\"data\":1}]"),
                400,
            ),
            (publish("/publish", json, "[1,2,3,4]"), 400),
            (
                publish("/publish", json, "[{\"topic\":\"A\",\"data\":1}] x"),
                400,
            ),
        ];
        for (raw, status) in cases {
            let Routed::Refuse(error) = routed(&raw) else {
                panic!("accepted: {}", String::from_utf8_lossy(&raw));
            };
            assert_eq!(
                error.status(),
                status,
                "{error}: {}",
                String::from_utf8_lossy(&raw)
            );
            assert!(!error.closes_connection());
        }
    }

    /// Proves parser bombs in a single or a batch publish are refused with 400 and a JSON
    /// reason naming the bound (and the batch item), and that data at the bounds is accepted.
    #[test]
    fn parser_bombs_are_400() {
        let json = "application/json";
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let long = "1".repeat(60_000);
        let lone = r#"{"s":"\ud800"}"#;
        let cases = [
            (deep.as_str(), JsonBoundError::TooDeep),
            (long.as_str(), JsonBoundError::NumberTooLong),
            (lone, JsonBoundError::UnpairedSurrogate),
        ];
        for (data, error) in cases {
            let refused = routed(&publish("/publish/A", json, data));
            assert_eq!(refused, Routed::Refuse(HttpError::InvalidData(error)));
            let batch = format!(r#"[{{"topic":"A","data":1}},{{"topic":"B","data":{data}}}]"#);
            let refused = routed(&publish("/publish", json, &batch));
            let expected = HttpError::InvalidBatchData { index: 1, error };
            assert_eq!(refused, Routed::Refuse(expected.clone()));
            assert_eq!(expected.status(), 400);
            let mut out = BytesMut::new();
            let _ = write_http_error(&expected, true, &mut out);
            let text = String::from_utf8(out.to_vec()).unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap();
            let reason = format!("item 1: {}", error.reason());
            assert_eq!(body, serde_json::json!({ "error": reason }).to_string());
        }
        let at_bounds = format!("{}{}{}", "[".repeat(64), "9".repeat(64), "]".repeat(64));
        let accepted = routed(&publish("/publish/A", json, &at_bounds));
        assert_eq!(accepted, one("A", true, &at_bounds));
    }

    /// Proves the batch limit answers 413 and counts items, not bytes.
    #[test]
    fn batch_over_the_limit_is_413() {
        let item = r#"{"topic":"A","data":0}"#;
        let three = format!("[{item},{item},{item}]");
        let accepted = routed(&publish("/publish", "application/json", &three));
        assert!(matches!(accepted, Routed::Batch(items) if items.len() == 3));
        let four = format!("[{item},{item},{item},{item}]");
        assert_eq!(
            routed(&publish("/publish", "application/json", &four)),
            Routed::Refuse(HttpError::BatchTooLarge { items_max: 3 })
        );
        let bad_topic = format!("[{item},{{\"topic\":\"a\\u0000\",\"data\":0}}]");
        assert_eq!(
            routed(&publish("/publish", "application/json", &bad_topic)),
            Routed::Refuse(HttpError::InvalidBatchTopic {
                index: 1,
                error: TopicError::InvalidByte { index: 1, byte: 0 }
            })
        );
    }

    /// Proves the head check, run on 100-continue, refuses a bad head before its body arrives
    /// and passes a good one.
    #[test]
    fn head_check_runs_before_the_body() {
        let mut pool = BufferPool::new(&PoolLimits::default());
        let limits = CONFIG.request_limits(8192);
        let expect = "Expect: 100-continue\r\nContent-Length: 1\r\n";
        let heads = [
            ("POST", "Content-Type: application/json\r\n", None),
            ("POST", "", Some(415)),
            ("PUT", "Content-Type: application/json\r\n", Some(405)),
        ];
        for (method, content_type, status) in heads {
            let head =
                format!("{method} /publish/A HTTP/1.1\r\nHost: a\r\n{expect}{content_type}\r\n");
            let head = head.as_bytes();
            let mut reader = RequestReader::new();
            let mut events = reader.handle_read(head, &mut pool, &limits);
            let Some(Ok(HttpEvent::ContinueExpected(head))) = events.next_event() else {
                panic!("no continue");
            };
            assert_eq!(
                check_head(&head, &CONFIG).err().map(|error| error.status()),
                status
            );
            reader.release_buffers(&mut pool);
        }
        assert!(pool.statistics().all(|class| class.buffers_in_use == 0));
    }

    /// Proves the publish and batch responses byte for byte, with keep-alive and close.
    #[test]
    fn success_responses_are_exact() {
        let mut out = BytesMut::new();
        write_publish_response(42, true, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\
              Connection: keep-alive\r\n\r\n{\"seq\":42}"
        );
        out.clear();
        write_batch_response(&[0, 9, 10, u64::MAX], false, &mut out);
        let body = format!("{{\"seqs\":[0,9,10,{}]}}", u64::MAX);
        let expected = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(&out[..], expected.as_bytes());
        out.clear();
        write_batch_response(&[], true, &mut out);
        assert!(
            out.ends_with(b"Content-Length: 11\r\nConnection: keep-alive\r\n\r\n{\"seqs\":[]}")
        );
    }

    /// Proves error responses carry a JSON reason, Allow with a 405, and close after errors of
    /// the request stream whatever the client asked.
    #[test]
    fn error_responses_are_json() {
        let mut out = BytesMut::new();
        let error = HttpError::MethodNotAllowed {
            allow: ALLOW_PUBLISH,
        };
        assert!(write_http_error(&error, true, &mut out));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nAllow: POST\r\n") && text.contains("keep-alive"),
            "{text}"
        );
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"], "method not allowed here; use POST");

        out.clear();
        let error = HttpError::Request(HandshakeError::BodyTooLarge {
            body_bytes: 2,
            body_bytes_max: 1,
        });
        assert!(!write_http_error(&error, true, &mut out));
        assert!(out.starts_with(b"HTTP/1.1 413 Content Too Large\r\n"));
        assert!(out.windows(17).any(|window| window == b"Connection: close"));
    }

    /// Proves every status the router and reader produce has a reason phrase, and that a long
    /// message with quotes and control bytes still makes a valid, cut JSON body.
    #[test]
    fn error_bodies_escape_and_fit() {
        for status in [400, 404, 405, 411, 413, 415, 431, 501, 503] {
            assert!(!handshake::reason_phrase(status).is_empty(), "{status}");
        }
        let message = format!("unknown field `\"\\\n{}é`", "x".repeat(300));
        let mut out = BytesMut::new();
        assert!(write_http_error(
            &HttpError::InvalidJson(message),
            true,
            &mut out
        ));
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.len() <= ERROR_BODY_BYTES_MAX);
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            value["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid json body: unknown field `\"\\\n")
        );
    }

    /// Proves the publish limits are checked against the pool that must hold a body.
    #[test]
    fn config_validates_against_the_pool() {
        let pool = PoolLimits::default();
        PublishConfig::default().validate(&pool).unwrap();
        let too_large = PublishConfig {
            publish_body_bytes_max: 2 * 1024 * 1024,
            ..PublishConfig::default()
        };
        assert!(
            too_large
                .validate(&pool)
                .unwrap_err()
                .contains("publish_body_bytes_max")
        );
        let no_items = PublishConfig {
            publish_batch_items_max: 0,
            ..PublishConfig::default()
        };
        assert!(no_items.validate(&pool).is_err());
    }
}
