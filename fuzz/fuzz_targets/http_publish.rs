//! The HTTP publish API: every request the request reader completes from an arbitrary stream is
//! routed (`route`: path, method, topic, framing, media type, then the JSON body or batch), and
//! every `100 Continue` head is checked (`check_head`), as the shard's HTTP phase does.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input (a batch cannot
//!   make us hold more than its items, and never more than `publish_batch_items_max` of them);
//! - a single publish's data and every batch item's data are slices of the request body (the
//!   exact bytes sent, never re-serialised), with no whitespace around them;
//! - every topic routed is a valid topic name; a batch has at most `publish_batch_items_max`
//!   items;
//! - a head refused by `check_head` is refused by `route` with the same error;
//! - every refusal's response parses (httparse) with the refusal's status and a JSON body, and
//!   the connection stays open after it only when the error allows;
//! - the same routes for the whole stream and for the fuzzer's cut.
//!
//! Input layout: `fuzz/src/reads.rs`; the variant picks production or small batch limits.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::broker::http_api::{
    HttpError, PublishConfig, Route, check_head, route, write_http_error,
};
use ringcast::broker::topic::validate_topic;
use ringcast::protocol::http1::{HttpEvent, RequestReader};
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};

const HEADER_BYTES_MAX: usize = 8 * 1024;
/// The production classes with a few buffers each: the reader holds at most a head and a body.
const POOL_BUFFER_BYTES: [usize; 4] = [128, 4 * 1024, 64 * 1024, 1024 * 1024];
const POOL_BUFFERS_PER_CLASS: usize = 4;
/// The pool's bound (about 4.3 MiB) and the routes copied out of two runs.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 6 * 1024 * 1024,
    bytes_per_input_byte: 64,
};

/// A route copied out of its request, to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Routed {
    Health,
    Metrics,
    One {
        topic: String,
        data: Vec<u8>,
    },
    Batch(Vec<(String, Vec<u8>)>),
    Refused {
        error: HttpError,
        response: Vec<u8>,
    },
    /// The request stream failed (the reader's error).
    StreamFailed(String),
}

fuzz_target!(|data: &[u8]| {
    let input = SplitInput::parse(data);
    let config = match input.variant % 2 {
        0 => PublishConfig::default(),
        _ => PublishConfig {
            topic_bytes_max: 8,
            publish_body_bytes_max: 4096,
            publish_batch_items_max: 3,
            ..PublishConfig::default()
        },
    };
    allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| route_all(reads, &config))
    });
});

/// Reads `reads` as one connection and routes every request in order.
fn route_all(reads: &[&[u8]], config: &PublishConfig) -> Vec<Routed> {
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
    let limits = config.request_limits(HEADER_BYTES_MAX);
    let mut routes = Vec::new();
    for read in reads {
        let mut events = reader.handle_read(read, &mut pool, &limits);
        while let Some(event) = events.next_event() {
            match event {
                Ok(HttpEvent::Request(request)) => {
                    let head_verdict = check_head(&request.head, config);
                    let routed = routed(request.body, route(&request, config), config);
                    if let Err(error) = head_verdict {
                        assert!(
                            matches!(&routed, Routed::Refused { error: refused, .. } if *refused == error),
                            "check_head refused with {error:?}, route gave {routed:?}"
                        );
                    }
                    routes.push(routed);
                }
                // Answering 100 or refusing early is not part of the route; the route that
                // follows carries the same verdict, checked above.
                Ok(HttpEvent::ContinueExpected(head)) => drop(check_head(&head, config)),
                Ok(HttpEvent::Upgrade { .. }) => return routes,
                Err(error) => {
                    routes.push(Routed::StreamFailed(format!("{error:?}")));
                    return routes;
                }
            }
        }
    }
    reader.release_buffers(&mut pool);
    routes
}

fn routed(body: &[u8], route: Route<'_>, config: &PublishConfig) -> Routed {
    match route {
        Route::Health => Routed::Health,
        Route::Metrics => Routed::Metrics,
        Route::PublishOne { topic, data, .. } => {
            check_data(body, data.get().as_bytes());
            assert_eq!(validate_topic(&topic, config.topic_bytes_max), Ok(()));
            Routed::One {
                topic: topic.into_owned(),
                data: data.get().as_bytes().to_vec(),
            }
        }
        Route::PublishBatch { items, .. } => {
            assert!(items.len() <= config.publish_batch_items_max);
            let items = items
                .into_iter()
                .map(|(topic, data)| {
                    check_data(body, data.get().as_bytes());
                    assert_eq!(validate_topic(&topic, config.topic_bytes_max), Ok(()));
                    (topic.into_owned(), data.get().as_bytes().to_vec())
                })
                .collect();
            Routed::Batch(items)
        }
        Route::Refuse(error) => {
            let mut response = BytesMut::new();
            let keep_alive = write_http_error(&error, true, &mut response);
            assert_eq!(keep_alive, !error.closes_connection());
            check_error_response(&response, error.status());
            Routed::Refused {
                error,
                response: response.to_vec(),
            }
        }
    }
}

/// Published data is a non-empty slice of the body, without surrounding whitespace.
fn check_data(body: &[u8], data: &[u8]) {
    let body_range = body.as_ptr_range();
    let data_range = data.as_ptr_range();
    assert!(
        body_range.start <= data_range.start && data_range.end <= body_range.end,
        "data is not a slice of the body"
    );
    assert!(!data.is_empty());
    assert!(!data[0].is_ascii_whitespace() && !data[data.len() - 1].is_ascii_whitespace());
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
