//! The HTTP/1.1 request reader (heads, Content-Length, chunked bodies, pipelining, upgrades)
//! on arbitrary streams cut at fuzzer-chosen read boundaries.
//!
//! Invariants, for every input:
//! - no panic, and no more memory held at once than the buffer pool's bound plus copies of the
//!   input (the capped allocator);
//! - every read is consumed whole (`position() == read.len()`), except after an upgrade, whose
//!   `rest_start` lies within the read; after an error no read yields anything;
//! - an upgrade's head re-parses whole with `parse_request_head`, as the driver does;
//! - at most two pooled buffers are held between reads, none between requests, and none after
//!   `release_buffers`;
//! - `100 Continue` is offered at most once per request, before that request;
//! - the same requests and the same end for the whole stream and for the fuzzer's cut;
//! - agreement with the reference reader built on httparse (`http1_reference`).
//!
//! With the variant's high bit set, the reader runs with a starved pool (one 128-byte buffer),
//! so that refusing with 503 mid-request is exercised too: then only the invariants that hold
//! whatever the pool are checked (no panic, bounded memory, reads consumed, buffers returned),
//! since whether a request needs a buffer depends on where reads end.
//!
//! Input layout: `fuzz/src/reads.rs`; the variant's low bit picks production or small limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::http1_reference::{self, End, Exchange, Limits, Outcome};
use ringcast_fuzz::reads::{self, SplitInput};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::protocol::http1::{HttpEvent, RequestLimits, RequestReader, parse_request_head};
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};

/// Limits to run with, picked by the input's variant: the production defaults, and limits
/// small enough that the fuzzer crosses them with short inputs.
const LIMITS: [RequestLimits; 2] = [
    RequestLimits {
        header_bytes_max: 8 * 1024,
        body_bytes_max: 1024 * 1024,
    },
    RequestLimits {
        header_bytes_max: 256,
        body_bytes_max: 1024,
    },
];
/// The production classes with a few buffers each: a reader holds at most a head and a body,
/// so the pool never runs out and a 503 never depends on the reads.
const POOL_BUFFER_BYTES: [usize; 4] = [128, 4 * 1024, 64 * 1024, 1024 * 1024];
const POOL_BUFFERS_PER_CLASS: usize = 4;
/// The variant bit that starves the pool.
const STARVED_POOL_VARIANT: u8 = 0x80;
/// The pool's bound (about 4.3 MiB) and two runs' copies of requests and error texts.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 6 * 1024 * 1024,
    bytes_per_input_byte: 64,
};

fuzz_target!(|data: &[u8]| {
    let input = SplitInput::parse(data);
    let limits = LIMITS[usize::from(input.variant) % LIMITS.len()];
    if input.variant & STARVED_POOL_VARIANT != 0 {
        allocation::measure(BUDGET, data.len(), || {
            read_requests(input.reads(), limits, &starved_pool())
        });
        return;
    }
    let (ours, _) = allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| read_requests(reads, limits, &new_pool()))
    });
    let reference = http1_reference::read(
        input.stream,
        Limits {
            header_bytes_max: limits.header_bytes_max,
            body_bytes_max: limits.body_bytes_max,
        },
    );
    if let Err(disagreement) = http1_reference::compare(&ours, &reference) {
        panic!("{disagreement}");
    }
});

fn new_pool() -> PoolLimits {
    PoolLimits {
        inflaters_max: 1,
        classes: POOL_BUFFER_BYTES
            .iter()
            .map(|&buffer_bytes| BufferClass {
                buffer_bytes,
                buffers_max: POOL_BUFFERS_PER_CLASS,
            })
            .collect(),
    }
}

/// One small buffer: a request cut across reads soon finds none.
fn starved_pool() -> PoolLimits {
    PoolLimits {
        inflaters_max: 1,
        classes: vec![BufferClass {
            buffer_bytes: 128,
            buffers_max: 1,
        }],
    }
}

fn buffers_in_use(pool: &BufferPool) -> usize {
    pool.statistics().map(|class| class.buffers_in_use).sum()
}

/// Feeds `reads` to a new reader as a driver does, checking the per-read invariants, and
/// describes what it read.
fn read_requests(reads: &[&[u8]], limits: RequestLimits, pool_limits: &PoolLimits) -> Outcome {
    let mut pool = BufferPool::new(pool_limits);
    let mut reader = RequestReader::new();
    let mut exchanges = Vec::new();
    let mut end = End::NeedMore;
    let mut read_start = 0;
    // The path of the request a 100 Continue was offered for, until that request completes.
    let mut continue_offered: Option<String> = None;
    for read in reads {
        if end == End::Upgraded {
            break;
        }
        let failed_before = matches!(end, End::Refused(_));
        let mut events = reader.handle_read(read, &mut pool, &limits);
        while let Some(event) = events.next_event() {
            assert!(!failed_before, "an event after the request stream failed");
            match event {
                Ok(HttpEvent::Request(request)) => {
                    if let Some(path) = continue_offered.take() {
                        assert_eq!(path, request.head.path(), "continue for another request");
                    }
                    let head = request.head;
                    exchanges.push(Exchange::Request {
                        method: head.method().to_owned(),
                        path: head.path().to_owned(),
                        query: head.query().map(str::to_owned),
                        version_minor: head.version_minor(),
                        keep_alive: head.keep_alive(),
                        body: request.body.to_vec(),
                    });
                }
                Ok(HttpEvent::ContinueExpected(head)) => {
                    assert!(head.expects_continue());
                    assert!(continue_offered.is_none(), "100 Continue offered twice");
                    continue_offered = Some(head.path().to_owned());
                }
                Ok(HttpEvent::Upgrade { head, rest_start }) => {
                    assert!(rest_start <= read.len(), "rest_start past the read");
                    assert!(head.is_websocket_upgrade());
                    let mut fields = [httparse::EMPTY_HEADER; 64];
                    let reparsed =
                        parse_request_head(head.bytes(), &mut fields, limits.header_bytes_max);
                    let Ok(Some(reparsed)) = reparsed else {
                        panic!("the upgrade's head does not re-parse: {reparsed:?}");
                    };
                    assert_eq!(reparsed.head_bytes(), head.bytes().len());
                    exchanges.push(Exchange::Upgrade {
                        path: head.path().to_owned(),
                        rest_start: read_start + rest_start,
                    });
                    end = End::Upgraded;
                    break;
                }
                Err(error) => {
                    end = End::Refused(format!("{error:?}"));
                    continue_offered = None;
                }
            }
        }
        if end != End::Upgraded {
            assert_eq!(events.position(), read.len(), "a read not consumed whole");
        }
        check_buffers(&reader, &pool);
        read_start += read.len();
    }
    reader.release_buffers(&mut pool);
    assert_eq!(buffers_in_use(&pool), 0, "a buffer not handed back");
    Outcome { exchanges, end }
}

/// Between reads a reader holds at most a partial request's head and body, and nothing when
/// no request is partly received.
fn check_buffers(reader: &RequestReader, pool: &BufferPool) {
    let in_use = buffers_in_use(pool);
    assert!(in_use <= 2, "{in_use} buffers held between reads");
    if !reader.is_mid_request() && !reader.is_upgraded() {
        assert!(!reader.holds_buffers(), "buffers held between requests");
        assert_eq!(in_use, 0, "buffers on loan between requests");
    }
}
