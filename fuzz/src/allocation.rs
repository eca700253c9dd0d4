//! A counting global allocator with a cap, so that "no unbounded allocation" is an assertion and
//! not a hope.
//!
//! libFuzzer's own `-malloc_limit_mb` needs the malloc hooks of a sanitizer, which stable Rust
//! does not give us, and its `-rss_limit_mb` only notices after the machine has paid for the
//! memory. This allocator counts the bytes the target's Rust code holds and, inside
//! [`measure`], aborts the moment they would pass the target's cap: libFuzzer sees the abort as
//! a crash and keeps the input, with the message printed here saying how much was asked for.
//!
//! The counters are process-wide atomics: a fuzz target runs its inputs on one thread, and an
//! atomic with relaxed ordering costs next to nothing there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Forwards to the system allocator and keeps [`LIVE_BYTES`] and [`PEAK_BYTES`].
pub struct CappedAllocator;

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// Bytes allocated and not yet freed by Rust code in this process.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The most [`LIVE_BYTES`] reached since [`measure`] last reset it.
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The live bytes above which an allocation aborts; `usize::MAX` outside [`measure`].
static CAP_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);

impl CappedAllocator {
    fn grew(&self, bytes: usize) {
        let live = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        let cap = CAP_BYTES.load(Ordering::Relaxed);
        if live > cap {
            over_cap(bytes, live, cap);
        }
    }

    fn shrank(&self, bytes: usize) {
        LIVE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Reports the allocation that broke the cap and aborts. The cap is lifted first so that the
/// report itself may allocate without coming back here.
#[cold]
fn over_cap(bytes: usize, live: usize, cap: usize) -> ! {
    CAP_BYTES.store(usize::MAX, Ordering::Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "\n==fuzz== allocation cap broken: an allocation of {bytes} bytes brought the bytes \
         held to {live}, over the target's cap of {cap} (counted from the start of the run). \
         Some input-controlled size reaches an allocation without a limit.\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    std::process::abort();
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping touches
// only atomics, and the abort path lifts the cap before anything it does can allocate.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        self.shrank(layout.size());
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        if size > layout.size() {
            self.grew(size - layout.size());
        } else {
            self.shrank(layout.size() - size);
        }
        unsafe { System.realloc(pointer, layout, size) }
    }
}

/// How many bytes one run of a target may hold at once: a fixed part (the buffer pool the
/// target configures, tables sized by limits) and a part proportional to the input (what the
/// harness copies out to compare, collections an input may legitimately fill).
#[derive(Clone, Copy, Debug)]
pub struct AllocationBudget {
    pub fixed_bytes: usize,
    pub bytes_per_input_byte: usize,
}

impl AllocationBudget {
    /// The cap for an input of `input_bytes`.
    pub fn cap_bytes(&self, input_bytes: usize) -> usize {
        self.fixed_bytes
            .saturating_add(input_bytes.saturating_mul(self.bytes_per_input_byte))
    }
}

/// Runs `body` with the bytes it may hold at once capped at `budget` for an input of
/// `input_bytes`; aborts (a crash libFuzzer keeps) the moment an allocation would pass it.
/// Returns `body`'s result and the most bytes it held at once. Nested calls each count from
/// their own start and restore the outer cap when they end.
pub fn measure<T>(
    budget: AllocationBudget,
    input_bytes: usize,
    body: impl FnOnce() -> T,
) -> (T, usize) {
    let baseline = LIVE_BYTES.load(Ordering::Relaxed);
    let outer_cap = CAP_BYTES.load(Ordering::Relaxed);
    let outer_peak = PEAK_BYTES.swap(baseline, Ordering::Relaxed);
    let cap = baseline.saturating_add(budget.cap_bytes(input_bytes));
    CAP_BYTES.store(cap.min(outer_cap), Ordering::Relaxed);
    let result = body();
    let peak = PEAK_BYTES.load(Ordering::Relaxed);
    CAP_BYTES.store(outer_cap, Ordering::Relaxed);
    PEAK_BYTES.store(outer_peak.max(peak), Ordering::Relaxed);
    (result, peak - baseline)
}
