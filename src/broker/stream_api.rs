//! The reading endpoints besides the WebSocket: `GET /sse`, `GET /stream` (NDJSON) and
//! `GET /poll`, each naming topics and where to start in them.
//!
//! | request                                             | answer                                |
//! |-----------------------------------------------------|---------------------------------------|
//! | `GET /sse?topics=A,B[&since=…]`                     | `200 text/event-stream`, until closed |
//! | `GET /stream?topics=A,B[&since=…│&cursor=…]`        | `200 application/x-ndjson`, chunked   |
//! | `GET /poll?topics=A,B[&since=…│&cursor=…][&wait_ms=…]` | `200 {"messages":[…],"cursor":"…"}` |
//!
//! `topics` is a comma-separated list (each name percent-encoded as needed, a comma in a name
//! as `%2C`). Where to start comes from, in this order: the `Last-Event-ID` header (what a
//! browser's EventSource sends when it reconnects by itself), `last_event_id=`, `cursor=`
//! (each a cursor this server made), then `since=` (the URL-encoded JSON object `/ws` takes).
//! Without any, each topic starts at its latest message, as a `/ws` subscription does.

use std::borrow::Cow;

use super::config::BrokerConfig;
use super::cursor::{self, Position};
use super::request::parse_since;
use super::topic::TopicName;
use crate::protocol::http1::RequestHead;
use crate::protocol::http1::query::{accepts, percent_decode, query_raw, query_value};
use crate::protocol::{ndjson, sse};

/// Which reading endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Sse,
    Ndjson,
    Poll,
}

impl StreamKind {
    /// The endpoint at `path`, if it is one of these.
    pub fn at(path: &str) -> Option<StreamKind> {
        match path {
            "/sse" => Some(StreamKind::Sse),
            "/stream" => Some(StreamKind::Ndjson),
            "/poll" => Some(StreamKind::Poll),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            StreamKind::Sse => sse::CONTENT_TYPE,
            StreamKind::Ndjson => ndjson::CONTENT_TYPE,
            StreamKind::Poll => "application/json",
        }
    }
}

/// A request to read topics, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    pub kind: StreamKind,
    pub topics: Vec<TopicName>,
    /// Where to start in each topic (same order as `topics`): `None` for its latest message.
    pub positions: Vec<Position>,
    /// How long a poll waits for a message (0: answer at once); 0 for the streams.
    pub wait_ms: u64,
}

/// Why a reading request was refused: a status and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// 400: the query or a header is not what the endpoint takes.
    Invalid(Cow<'static, str>),
    /// 406: `Accept` excludes the endpoint's media type.
    NotAcceptable(&'static str),
}

impl StreamError {
    pub fn status(&self) -> u16 {
        match self {
            StreamError::Invalid(_) => 400,
            StreamError::NotAcceptable(_) => 406,
        }
    }

    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            StreamError::Invalid(reason) => reason.clone(),
            StreamError::NotAcceptable(media_type) => Cow::Owned(format!(
                "this endpoint answers {media_type}, which Accept excludes"
            )),
        }
    }
}

fn invalid(reason: impl Into<Cow<'static, str>>) -> StreamError {
    StreamError::Invalid(reason.into())
}

/// Reads a `GET` of a reading endpoint (the method was checked by the router).
pub fn parse(
    head: &RequestHead<'_>,
    kind: StreamKind,
    config: &BrokerConfig,
) -> Result<StreamRequest, StreamError> {
    if !accepts(head.header("accept"), kind.media_type()) {
        return Err(StreamError::NotAcceptable(kind.media_type()));
    }
    if kind == StreamKind::Ndjson && head.version_minor() == 0 {
        return Err(invalid("an NDJSON stream is chunked, which needs HTTP/1.1"));
    }
    let query = head.query().unwrap_or("");
    let value = |name: &str| query_value(query, name).map_err(|error| invalid(error.reason()));
    let topics = topics(query_raw(query, "topics"), config)?;
    let positions = positions(
        head,
        &topics,
        value("last_event_id")?,
        value("cursor")?,
        value("since")?,
    )?;
    let wait_ms = match (kind, value("wait_ms")?) {
        (StreamKind::Poll, None) => config.poll_wait_ms_default,
        (StreamKind::Poll, Some(text)) => text
            .parse::<u64>()
            .map_err(|_| invalid("wait_ms is a number of milliseconds"))?
            .min(config.poll_wait_ms_max),
        (_, _) => 0,
    };
    Ok(StreamRequest {
        kind,
        topics,
        positions,
        wait_ms,
    })
}

/// The `topics` list: 1 to `stream_topics_max` valid, distinct names.
fn topics(list: Option<&str>, config: &BrokerConfig) -> Result<Vec<TopicName>, StreamError> {
    let list = list
        .filter(|list| !list.is_empty())
        .ok_or_else(|| invalid("topics=A,B,… is required"))?;
    let mut topics = Vec::new();
    for encoded in list.split(',') {
        if topics.len() == config.stream_topics_max {
            return Err(invalid(format!(
                "more than stream_topics_max ({}) topics",
                config.stream_topics_max
            )));
        }
        let name = percent_decode(encoded, true).map_err(|error| invalid(error.reason()))?;
        let topic = TopicName::copy_from(name.as_bytes(), config.topic_bytes_max)
            .map_err(|error| invalid(format!("a topic in topics: {}", error.reason())))?;
        if topics.contains(&topic) {
            return Err(invalid(format!("topic {} is listed twice", topic.as_str())));
        }
        topics.push(topic);
    }
    Ok(topics)
}

/// Where to start in each topic, from the first source given (see the module's docs).
fn positions(
    head: &RequestHead<'_>,
    topics: &[TopicName],
    last_event_id: Option<Cow<'_, str>>,
    cursor: Option<Cow<'_, str>>,
    since: Option<Cow<'_, str>>,
) -> Result<Vec<Position>, StreamError> {
    let header = head
        .header("last-event-id")
        .map(|value| std::str::from_utf8(value).map_err(|_| invalid("Last-Event-ID is not text")))
        .transpose()?
        .filter(|value| !value.is_empty());
    let cursor = header
        .map(Cow::Borrowed)
        .or(last_event_id.filter(|value| !value.is_empty()))
        .or(cursor);
    if let Some(cursor) = cursor {
        return cursor::decode(&cursor, topics).map_err(|error| invalid(error.reason()));
    }
    let Some(since) = since else {
        return Ok(vec![None; topics.len()]);
    };
    let since =
        parse_since(&since).map_err(|error| invalid(format!("since: {}", error.reason())))?;
    if since
        .keys()
        .any(|name| !topics.iter().any(|topic| topic.as_str() == name))
    {
        return Err(invalid("since names a topic not in topics"));
    }
    Ok(topics
        .iter()
        .map(|topic| since.get(topic.as_str()).copied())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::cursor::{cursor_text_bytes_max, encode, topics_digest};
    use crate::broker::owner::Since;
    use crate::broker::topic::Epoch;
    use crate::protocol::http1::{HttpEvent, RequestLimits, RequestReader};
    use crate::protocol::pool::{BufferPool, PoolLimits};

    fn parsed(request: &str, kind: StreamKind) -> Result<StreamRequest, StreamError> {
        let mut pool = BufferPool::new(&PoolLimits::default());
        let mut reader = RequestReader::new();
        let limits = RequestLimits {
            header_bytes_max: 8192,
            body_bytes_max: 1024,
        };
        let mut events = reader.handle_read(request.as_bytes(), &mut pool, &limits);
        let Some(Ok(HttpEvent::Request(request))) = events.next_event() else {
            panic!("not one whole request: {request}");
        };
        parse(&request.head, kind, &BrokerConfig::default())
    }

    fn get(target: &str, headers: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n")
    }

    #[test]
    fn topics_and_since() {
        let request = parsed(
            &get("/sse?topics=AAPL,EUR%2FUSD&since=%7B%22AAPL%22%3A41%7D", ""),
            StreamKind::Sse,
        )
        .unwrap();
        assert_eq!(request.topics.len(), 2);
        assert_eq!(request.topics[1].as_str(), "EUR/USD");
        assert_eq!(
            request.positions,
            vec![
                Some(Since {
                    seq: 41,
                    epoch: None
                }),
                None
            ]
        );
        assert_eq!(request.wait_ms, 0);
    }

    #[test]
    fn the_header_cursor_wins() {
        let topics = vec![TopicName::copy_from(b"AAPL", 128).unwrap()];
        let position = Some(Since {
            seq: 9,
            epoch: Some(Epoch(5)),
        });
        let mut text = vec![0u8; cursor_text_bytes_max(1)];
        let length = encode(topics_digest(&topics), &[position], &mut text);
        let cursor = std::str::from_utf8(&text[..length]).unwrap();
        let request = parsed(
            &get(
                "/sse?topics=AAPL&since=%7B%22AAPL%22%3A41%7D",
                &format!("Last-Event-ID: {cursor}\r\n"),
            ),
            StreamKind::Sse,
        )
        .unwrap();
        assert_eq!(request.positions, vec![position]);
        let polled = parsed(
            &get(
                &format!("/poll?topics=AAPL&cursor={cursor}&wait_ms=999999"),
                "",
            ),
            StreamKind::Poll,
        )
        .unwrap();
        assert_eq!(polled.positions, vec![position]);
        assert_eq!(polled.wait_ms, 55_000, "capped at poll_wait_ms_max");
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let cases = [
            ("/sse", "", 400),
            ("/sse?topics=", "", 400),
            ("/sse?topics=A,A", "", 400),
            ("/sse?topics=A%ZZ", "", 400),
            ("/sse?topics=A,%01bad", "", 400),
            ("/sse?topics=A&since=%7B%22B%22%3A1%7D", "", 400),
            ("/sse?topics=A&since=notjson", "", 400),
            ("/sse?topics=A&cursor=abc", "", 400),
            ("/sse?topics=A", "Accept: application/json\r\n", 406),
            ("/poll?topics=A&wait_ms=soon", "", 400),
        ];
        for (target, headers, status) in cases {
            let kind = StreamKind::at(target.split('?').next().unwrap()).unwrap();
            let error = parsed(&get(target, headers), kind).unwrap_err();
            assert_eq!(error.status(), status, "{target}: {error:?}");
            assert!(!error.reason().is_empty());
        }
        let many = (0..65)
            .map(|index| format!("T{index}"))
            .collect::<Vec<_>>()
            .join(",");
        let error = parsed(&get(&format!("/sse?topics={many}"), ""), StreamKind::Sse).unwrap_err();
        assert!(error.reason().contains("stream_topics_max"), "{error:?}");
        let old = "GET /stream?topics=A HTTP/1.0\r\n\r\n";
        assert_eq!(parsed(old, StreamKind::Ndjson).unwrap_err().status(), 400);
    }
}
