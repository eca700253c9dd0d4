//! The WebSocket session (frames, fragments, control frames, close payloads, UTF-8 across
//! reads) on arbitrary client streams cut at fuzzer-chosen read boundaries.
//!
//! Invariants, for every input:
//! - no panic, and no more memory held at once than the buffer pool's bound plus copies of the
//!   input (the capped allocator);
//! - every read is consumed whole (`consumed_bytes() == read.len()`), also after the session
//!   closed, and nothing is read once it is closed;
//! - what the session transmits is a valid unmasked control frame, and nothing follows a close;
//! - at most three pooled buffers are held between reads (message, control, owed pong), none
//!   after `release_buffers`;
//! - the same events, errors, transmitted frames and final state for the whole stream and for
//!   the fuzzer's cut;
//! - agreement with tungstenite on the events and on whether and in which frame the stream is
//!   refused, up to the differences listed in `fuzz/src/websocket_reference.rs`.
//!
//! With the variant's high bit set, the session runs with a starved pool (one 128-byte buffer),
//! so that running out of buffers mid-message is exercised too: then only the invariants that
//! hold whatever the pool are checked (no panic, bounded memory, reads consumed, transmits valid,
//! buffers returned), since whether a message needs a buffer depends on where reads end.
//!
//! With the variant's bit 0x40 set, the session starts by closing from our side (as at
//! shutdown), so that the closing state is fuzzed too: the peer's messages are then read and
//! discarded until its close. The split comparison holds; tungstenite, which does not know we
//! closed, is not asked.
//!
//! Input layout: `fuzz/src/reads.rs`; the variant's low bit picks production or small limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};
use ringcast_fuzz::websocket_reference::{self, FrameLimits, OurRun, Seen};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};
use ringcast::protocol::websocket::frame::{CONTROL_PAYLOAD_BYTES_MAX, FrameHead, OpCode};
use ringcast::protocol::websocket::session::{Event, MessageKind, Session, SessionState};
use ringcast::protocol::{CloseCode, ProtocolError, ProtocolLimits};

/// Frame and message limits, picked by the input's variant: the production defaults, and the
/// small limits of `tests/differential.rs` (a frame limit below the message limit, so that
/// fragmented messages can break the message limit with allowed frames).
const LIMITS: [FrameLimits; 2] = [
    FrameLimits {
        frame_bytes_max: 1024 * 1024,
        message_bytes_max: 1024 * 1024,
    },
    FrameLimits {
        frame_bytes_max: 1024,
        message_bytes_max: 2048,
    },
];
/// The production classes with a few buffers each: a session holds at most a message, a
/// control frame and a pong, so the pool never runs out and an error never depends on reads.
const POOL_BUFFER_BYTES: [usize; 4] = [128, 4 * 1024, 64 * 1024, 1024 * 1024];
const POOL_BUFFERS_PER_CLASS: usize = 4;
/// The variant bit that starves the pool.
const STARVED_POOL_VARIANT: u8 = 0x80;
/// The variant bit that closes from our side before the first read.
const CLOSING_VARIANT: u8 = 0x40;
/// The pool's bound (about 4.3 MiB) and two runs' copies of payloads and frames.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 6 * 1024 * 1024,
    bytes_per_input_byte: 64,
};

/// What the session did, in order.
#[derive(Debug, PartialEq, Eq)]
enum Output {
    Event(Seen),
    Error(ProtocolError),
    Transmit(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
struct SessionRun {
    outputs: Vec<Output>,
    state: SessionState,
}

fuzz_target!(|data: &[u8]| {
    let input = SplitInput::parse(data);
    let limits = LIMITS[usize::from(input.variant) % LIMITS.len()];
    let config = ProtocolLimits {
        frame_bytes_max: limits.frame_bytes_max,
        message_bytes_max: limits.message_bytes_max,
        ..ProtocolLimits::default()
    };
    let closing = input.variant & CLOSING_VARIANT != 0;
    if input.variant & STARVED_POOL_VARIANT != 0 {
        allocation::measure(BUDGET, data.len(), || {
            run_session(input.reads(), &config, &starved_pool(), closing)
        });
        return;
    }
    let (run, _) = allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| {
            run_session(reads, &config, &new_pool(), closing)
        })
    });
    if closing {
        return;
    }
    let ours = OurRun {
        error: run.outputs.iter().find_map(|output| match output {
            Output::Error(error) => Some(error.clone()),
            _ => None,
        }),
        events: run
            .outputs
            .into_iter()
            .filter_map(|output| match output {
                Output::Event(seen) => Some(seen),
                _ => None,
            })
            .collect(),
        closed: run.state == SessionState::Closed,
    };
    let fails_within = |length: usize| {
        let prefix_run = run_session(&[&input.stream[..length]], &config, &new_pool(), false);
        let failed = |output: &Output| matches!(output, Output::Error(_));
        prefix_run.outputs.iter().any(failed)
    };
    let agreement = websocket_reference::check_agreement(input.stream, &ours, limits, fails_within);
    if let Err(disagreement) = agreement {
        panic!("tungstenite disagrees: {disagreement}");
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

/// One small buffer: a message cut across reads, or a control frame with a pong owed, soon
/// finds none.
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

/// Feeds `reads` to a new session as the driver does (each read copied into a buffer the
/// session unmasks in place; transmits taken after each event and after each read), checking
/// the per-read invariants. `closing`: close from our side first. Returns what it did.
fn run_session(
    reads: &[&[u8]],
    config: &ProtocolLimits,
    pool_limits: &PoolLimits,
    closing: bool,
) -> SessionRun {
    let mut pool = BufferPool::new(pool_limits);
    let mut session = Session::new();
    let mut outputs = Vec::new();
    if closing {
        // The driver sends our close at once, before reading anything more.
        session.close(CloseCode(1001), "going away");
        while let Some(frame) = session.poll_transmit(&mut pool) {
            outputs.push(Output::Transmit(frame.as_bytes().to_vec()));
        }
    }
    let mut read_buffer = Vec::new();
    let mut reads_after_close = 0;
    for read in reads {
        let closed_before = session.state() == SessionState::Closed;
        if closed_before {
            // One non-empty read after the close shows that nothing more is read; more would
            // only cost time (a stream read a byte at a time can be long).
            if reads_after_close == 1 {
                break;
            }
            reads_after_close += usize::from(!read.is_empty());
        }
        read_buffer.clear();
        read_buffer.extend_from_slice(read);
        let mut reader = session.handle_read(&mut read_buffer, &mut pool, config);
        while let Some(result) = reader.next_event() {
            assert!(!closed_before, "an event after the session closed");
            match result {
                Ok(event) => outputs.push(Output::Event(seen(&event))),
                Err(error) => outputs.push(Output::Error(error)),
            }
            while let Some(frame) = reader.poll_transmit() {
                outputs.push(Output::Transmit(frame.as_bytes().to_vec()));
            }
        }
        assert_eq!(
            reader.consumed_bytes(),
            read.len(),
            "a read not consumed whole"
        );
        drop(reader);
        while let Some(frame) = session.poll_transmit(&mut pool) {
            outputs.push(Output::Transmit(frame.as_bytes().to_vec()));
        }
        let in_use = buffers_in_use(&pool);
        assert!(in_use <= 3, "{in_use} buffers held between reads");
    }
    check_transmits(&outputs);
    session.release_buffers(&mut pool);
    assert_eq!(buffers_in_use(&pool), 0, "a buffer not handed back");
    let state = session.state();
    SessionRun { outputs, state }
}

fn seen(event: &Event<'_>) -> Seen {
    match *event {
        Event::Message {
            kind: MessageKind::Text,
            payload,
        } => Seen::Text(String::from_utf8(payload.to_vec()).expect("validated text")),
        Event::Message {
            kind: MessageKind::Binary,
            payload,
        } => Seen::Binary(payload.to_vec()),
        Event::Ping(payload) => Seen::Ping(payload.to_vec()),
        Event::Pong(payload) => Seen::Pong(payload.to_vec()),
        Event::Close { code, reason } => Seen::Close(code.map(|code| (code.0, reason.to_owned()))),
    }
}

/// Every transmitted frame is one whole, final, unmasked control frame, and a close is last.
fn check_transmits(outputs: &[Output]) {
    let mut closed = false;
    for output in outputs {
        let Output::Transmit(frame) = output else {
            continue;
        };
        assert!(!closed, "a frame transmitted after the close");
        let head = FrameHead::parse(frame)
            .expect("a valid frame")
            .expect("a whole frame");
        assert!(head.fin && head.mask.is_none() && head.opcode.is_control());
        assert!(head.payload_bytes as usize <= CONTROL_PAYLOAD_BYTES_MAX);
        assert_eq!(
            usize::from(head.head_bytes) + head.payload_bytes as usize,
            frame.len()
        );
        closed = head.opcode == OpCode::Close;
    }
}
