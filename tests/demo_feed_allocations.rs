//! The demo ticker feed allocates nothing per update after start-up: a counting allocator
//! watches a minute of simulated polls at a busy rate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringcast::broker::demo::{SYMBOLS_COUNT_DEFAULT, TickerFeed};

/// Counts allocations per thread, so tests running in parallel do not see each other's.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS_COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// const-initialised thread-local, which itself never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS_COUNT.try_with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let _ = ALLOCATIONS_COUNT.try_with(|count| count.set(count.get() + 1));
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_count() -> usize {
    ALLOCATIONS_COUNT.with(Cell::get)
}

#[test]
fn polling_allocates_nothing_after_start_up() {
    // Proves the per-update path (random walk, JSON into the reused buffer, the callback)
    // allocates nothing: 60 simulated seconds at 10,000 updates per second.
    let mut feed = TickerFeed::new(SYMBOLS_COUNT_DEFAULT, 10_000, 7);
    let mut data_bytes = 0;
    let mut count_bytes = |_topic: &str, data: &[u8]| data_bytes += data.len();
    feed.poll_due(0, &mut count_bytes);
    let before = allocations_count();
    let mut updates = 0;
    for now_ms in 1..=60_000 {
        updates += feed.poll_due(now_ms, &mut count_bytes);
    }
    assert_eq!(allocations_count() - before, 0);
    assert_eq!(updates, 600_000);
    assert!(data_bytes > 0);
}
