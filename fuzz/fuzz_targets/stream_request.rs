//! The reading endpoints' requests: every request the request reader completes from an
//! arbitrary stream whose path is `/sse`, `/stream` or `/poll` is read by `stream_api::parse`
//! (the query's `topics`, `since`, `cursor`, `last_event_id` and `wait_ms`, the `Accept` and
//! `Last-Event-ID` headers), as the shard's HTTP phase does; every request's query is also read
//! pair by pair with `protocol::http1::query`.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input;
//! - an accepted request names 1 to `stream_topics_max` distinct, valid topics, each the
//!   form-decoding (`form_urlencoded`, the url crate's) of its comma-separated piece of the
//!   first `topics` parameter; one position per topic; a poll waits at most `poll_wait_ms_max`,
//!   a stream not at all; an NDJSON stream is HTTP/1.1; its positions survive a cursor made of
//!   them;
//! - a refusal is 400 or 406 (406 only with an `Accept` header), with a reason, and its
//!   response parses (httparse) with that status and a JSON body;
//! - `query_pairs` splits a query as `form_urlencoded` does, and wherever `percent_decode`
//!   decodes a name or value it decodes it as `form_urlencoded` does (which, unlike us, keeps a
//!   bad escape as it is and replaces bytes that are not UTF-8 instead of refusing);
//! - the same outcome for the whole stream and for the fuzzer's cut.
//!
//! Input layout: `fuzz/src/reads.rs`; the variant picks production or small limits.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::broker::cursor::{cursor_text_bytes_max, decode, encode, topics_digest};
use ringcast::broker::http_api::{HttpError, write_http_error};
use ringcast::broker::stream_api::{self, StreamError, StreamKind, StreamRequest};
use ringcast::broker::topic::validate_topic;
use ringcast::config::BrokerConfig;
use ringcast::protocol::http1::query::{percent_decode, query_pairs, query_raw};
use ringcast::protocol::http1::{HttpEvent, RequestHead, RequestLimits, RequestReader};
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};

const HEADER_BYTES_MAX: usize = 8 * 1024;
/// A GET has no body to speak of; the reader still holds what a POST in the stream sends.
const BODY_BYTES_MAX: usize = 64 * 1024;
const POOL_BUFFER_BYTES: [usize; 3] = [128, 4 * 1024, 64 * 1024];
const POOL_BUFFERS_PER_CLASS: usize = 4;
/// The pool (about 270 KiB), the parsed requests and their copies from two runs.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 1024 * 1024,
    bytes_per_input_byte: 64,
};

/// What became of one request, copied out to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Not a reading endpoint: only its query was checked.
    Other,
    Accepted(StreamRequest),
    Refused {
        error: StreamError,
        response: Vec<u8>,
    },
    /// The request stream failed (the reader's error).
    StreamFailed(String),
}

fuzz_target!(|data: &[u8]| {
    let input = SplitInput::parse(data);
    let config = match input.variant % 2 {
        0 => BrokerConfig::default(),
        _ => BrokerConfig {
            topic_bytes_max: 4,
            stream_topics_max: 3,
            poll_wait_ms_default: 7,
            poll_wait_ms_max: 9,
            ..BrokerConfig::default()
        },
    };
    allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| read_all(reads, &config))
    });
});

/// Reads `reads` as one connection and reads every request in order.
fn read_all(reads: &[&[u8]], config: &BrokerConfig) -> Vec<Outcome> {
    let mut pool = BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        classes: POOL_BUFFER_BYTES
            .iter()
            .map(|&buffer_bytes| BufferClass {
                buffer_bytes,
                buffers_max: POOL_BUFFERS_PER_CLASS,
            })
            .collect(),
    });
    let mut reader = RequestReader::new();
    let limits = RequestLimits {
        header_bytes_max: HEADER_BYTES_MAX,
        body_bytes_max: BODY_BYTES_MAX,
    };
    let mut outcomes = Vec::new();
    for read in reads {
        let mut events = reader.handle_read(read, &mut pool, &limits);
        while let Some(event) = events.next_event() {
            match event {
                Ok(HttpEvent::Request(request)) => outcomes.push(outcome(&request.head, config)),
                Ok(HttpEvent::ContinueExpected(_)) => {}
                Ok(HttpEvent::Upgrade { .. }) => return outcomes,
                Err(error) => {
                    outcomes.push(Outcome::StreamFailed(format!("{error:?}")));
                    return outcomes;
                }
            }
        }
    }
    reader.release_buffers(&mut pool);
    outcomes
}

fn outcome(head: &RequestHead<'_>, config: &BrokerConfig) -> Outcome {
    let query = head.query().unwrap_or("");
    check_query(query);
    let Some(kind) = StreamKind::at(head.path()) else {
        return Outcome::Other;
    };
    match stream_api::parse(head, kind, config) {
        Ok(request) => {
            check_accepted(head, query, &request, config);
            Outcome::Accepted(request)
        }
        Err(error) => {
            if matches!(error, StreamError::NotAcceptable(_)) {
                assert!(head.header("accept").is_some());
            }
            assert!(!error.reason().is_empty());
            let status = error.status();
            assert!(status == 400 || status == 406);
            let error_of_route = HttpError::Stream(error.clone());
            let mut response = BytesMut::new();
            let keep_alive = write_http_error(&error_of_route, true, &mut response);
            assert_eq!(keep_alive, !error_of_route.closes_connection());
            check_error_response(&response, status);
            Outcome::Refused {
                error,
                response: response.to_vec(),
            }
        }
    }
}

fn check_accepted(
    head: &RequestHead<'_>,
    query: &str,
    request: &StreamRequest,
    config: &BrokerConfig,
) {
    let topics = &request.topics;
    assert!((1..=config.stream_topics_max).contains(&topics.len()));
    assert_eq!(request.positions.len(), topics.len());
    for (index, topic) in topics.iter().enumerate() {
        assert_eq!(
            validate_topic(topic.as_str(), config.topic_bytes_max),
            Ok(())
        );
        assert!(!topics[..index].contains(topic), "a topic listed twice");
    }
    let pieces: Vec<String> = query_raw(query, "topics")
        .expect("accepted without topics")
        .split(',')
        .map(form_decoded)
        .collect();
    let names: Vec<&str> = topics.iter().map(|topic| topic.as_str()).collect();
    assert_eq!(names, pieces);
    match request.kind {
        StreamKind::Poll => assert!(request.wait_ms <= config.poll_wait_ms_max),
        StreamKind::Sse | StreamKind::Ndjson => assert_eq!(request.wait_ms, 0),
    }
    if request.kind == StreamKind::Ndjson {
        assert_eq!(head.version_minor(), 1);
    }
    // What a stream answers with: a cursor of these positions resumes exactly them, a bare
    // since (no epoch yet, the topic unanswered) included.
    let mut text = vec![0u8; cursor_text_bytes_max(topics.len())];
    let length = encode(topics_digest(topics), &request.positions, &mut text);
    let text = std::str::from_utf8(&text[..length]).expect("base64 is ASCII");
    assert_eq!(decode(text, topics), Ok(request.positions.clone()));
}

/// Our reading of a query against the url crate's `form_urlencoded`.
fn check_query(query: &str) {
    let ours: Vec<(&str, &str)> = query_pairs(query).collect();
    let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
    assert_eq!(ours.len(), theirs.len(), "pairs of {query:?}");
    for ((name, value), (their_name, their_value)) in ours.iter().zip(&theirs) {
        if let Ok(name) = percent_decode(name, true) {
            assert_eq!(name, *their_name);
        }
        if let Ok(value) = percent_decode(value, true) {
            assert_eq!(value, *their_value);
        }
    }
}

/// How `form_urlencoded` decodes one value.
fn form_decoded(encoded: &str) -> String {
    let query = format!("x={encoded}");
    let (_, value) = form_urlencoded::parse(query.as_bytes())
        .next()
        .expect("one pair");
    value.into_owned()
}

/// A refusal is one whole response with its status and a JSON object body.
fn check_error_response(response: &[u8], status: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_bytes)) = parsed.parse(response) else {
        panic!(
            "our response does not parse: {}",
            String::from_utf8_lossy(response)
        );
    };
    assert_eq!(parsed.code, Some(status));
    let body: serde_json::Value =
        serde_json::from_slice(&response[head_bytes..]).expect("a JSON error body");
    assert!(body.get("error").is_some_and(serde_json::Value::is_string));
}
