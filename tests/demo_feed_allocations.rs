//! The demo ticker feed allocates nothing per update after start-up: a counting allocator
//! watches a minute of simulated polls at a busy rate.

use ringcast::broker::demo::{SYMBOLS_COUNT_DEFAULT, TickerFeed};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use counting_allocator::allocations_count;

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
