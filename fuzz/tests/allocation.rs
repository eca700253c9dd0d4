//! The capped allocator's accounting. Its counters are process-wide, so this binary holds one
//! test: tests running in parallel threads would see each other's allocations.

use ringcast_fuzz::allocation::{AllocationBudget, measure};

const ROOMY: AllocationBudget = AllocationBudget {
    fixed_bytes: 1 << 20,
    bytes_per_input_byte: 0,
};

/// Proves `measure` reports the most bytes held at once (not the total allocated), that a
/// nested measurement counts from its own start, and that the cap grows with the input.
#[test]
fn measure_reports_the_peak_and_the_cap_scales() {
    let (_, peak) = measure(ROOMY, 0, || {
        for _ in 0..10 {
            drop(std::hint::black_box(vec![0u8; 1000]));
        }
        let kept = vec![0u8; 3000];
        let (_, inner_peak) = measure(ROOMY, 0, || drop(std::hint::black_box(vec![0u8; 500])));
        assert!((500..3000).contains(&inner_peak), "{inner_peak}");
        kept
    });
    assert!((3000..4000).contains(&peak), "{peak}");

    let budget = AllocationBudget {
        fixed_bytes: 100,
        bytes_per_input_byte: 8,
    };
    assert_eq!(budget.cap_bytes(10), 180);
    assert_eq!(budget.cap_bytes(usize::MAX), usize::MAX);
}
