//! Proves, with a counting global allocator, that parsing allocates nothing after warm-up:
//! whole frames, frames split across reads, fragmented messages, and pings answered by pongs.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::pool::PoolLimits;
use ringcast::protocol::websocket::frame::OpCode;
use ringcast::protocol::websocket::session::{Event, Session};
use support::session::client_frame;

struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread while counting; other test threads are not counted.
    static ALLOCATIONS: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a
// const-initialised thread-local Cell, whose access never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System.alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn count() {
    let _ = ALLOCATIONS.try_with(|cell| cell.set(cell.get().map(|count| count + 1)));
}

fn allocations_during(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|cell| cell.set(Some(0)));
    work();
    ALLOCATIONS
        .with(|cell| cell.replace(None))
        .expect("counting")
}

/// A read sequence covering every path of the session.
fn reads() -> Vec<Vec<u8>> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let subscription = br#"{"op":"subscribe","topics":["AAPL","MSFT","GOOG","AMZN","NVDA"]}"#;
    let mut whole = Vec::new();
    for _ in 0..100 {
        whole.extend(client_frame(OpCode::Text, true, subscription, mask));
    }
    let mut fragmented = client_frame(OpCode::Text, false, "株価 ".as_bytes(), mask);
    fragmented.extend(client_frame(OpCode::Ping, true, b"beat", mask));
    fragmented.extend(client_frame(
        OpCode::Continuation,
        true,
        b"AAPL 191.2",
        mask,
    ));
    let large = client_frame(OpCode::Binary, true, &[7; 50_000], mask);
    let (first, second) = large.split_at(20_000);
    let (second, third) = second.split_at(17_000);
    vec![
        whole,
        fragmented,
        first.to_vec(),
        second.to_vec(),
        third.to_vec(),
    ]
}

fn run_reads(
    session: &mut Session,
    pool: &mut BufferPool,
    config: &ProtocolLimits,
    reads: &mut [Vec<u8>],
    pristine: &[Vec<u8>],
) -> usize {
    let mut messages = 0;
    for (read, original) in reads.iter_mut().zip(pristine) {
        read.copy_from_slice(original);
        let mut reader = session.handle_read(read, pool, config);
        while let Some(event) = reader.next_event() {
            if let Event::Message { .. } = event.expect("valid stream") {
                messages += 1;
            }
        }
        drop(reader);
        while let Some(frame) = session.poll_transmit(pool) {
            std::hint::black_box(frame.as_bytes());
        }
    }
    messages
}

/// Proves zero heap allocations per parsed message once buffers are warm.
#[test]
fn parsing_allocates_nothing_after_warm_up() {
    let config = ProtocolLimits::default();
    let mut pool = BufferPool::new(&PoolLimits::default());
    let mut session = Session::new();
    let pristine = reads();
    let mut reads = pristine.clone();
    assert_eq!(
        run_reads(&mut session, &mut pool, &config, &mut reads, &pristine),
        102
    );
    let mut messages = 0;
    let allocations = allocations_during(|| {
        for _ in 0..100 {
            messages += run_reads(&mut session, &mut pool, &config, &mut reads, &pristine);
        }
    });
    assert_eq!(messages, 10_200);
    assert_eq!(
        allocations, 0,
        "heap allocations while parsing {messages} messages"
    );
    // The counter does see allocations, so the zero above is meaningful.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}
