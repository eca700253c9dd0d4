//! A hashed timer wheel: one per shard, holding at most one deadline per connection.
//!
//! # Why a wheel
//!
//! Every connection has at most one pending deadline (handshake, idle, pong or close), and a
//! shard holds tens of thousands to a million connections. Arming one kernel timeout per
//! connection would cost a submission for every schedule and every cancel, and idle deadlines
//! move on every message. A binary heap would make each of those O(log n) and need a position
//! index to cancel. The wheel makes schedule, reschedule and cancel a handful of index writes in
//! memory, and the shard arms a single io_uring timeout for [`TimerWheel::next_expiry_ms`].
//!
//! This is a pure data structure: no clocks and no system calls. The shard reads a monotonic
//! clock once per loop iteration and passes the time in, in milliseconds; tests pass any time
//! they like.
//!
//! # Storage
//!
//! Each slot is an intrusive circular doubly-linked list threaded through one array of 16-byte
//! entries by `u32` index: first one sentinel per slot, then the sentinel of the due list (below),
//! then one entry per key. With sentinels, unlinking never needs to know which list an entry is
//! in. A bitmap with one bit per slot says which slots are occupied, so empty slots are skipped a
//! word at a time. Everything is allocated in [`TimerWheel::new`]; no method allocates after.
//! The keys' entries are reserved there but written only up to the highest key scheduled so far:
//! a shard reserves one per connection and session slot, and a server sized for a million
//! connections must not touch memory for the slots no connection has used.
//!
//! # Tick granularity
//!
//! Deadlines are rounded up to the next multiple of `tick_ms` (counted from the clock's zero),
//! so a deadline never fires early and fires at most one tick late when `expire` is called at
//! least once per tick. A coarser tick means fewer wake-ups and fewer slot visits for the same
//! work, at the price of lateness; with the same slot count it also widens the span the wheel
//! covers in one revolution. Protocol timeouts are seconds long, so a tick of about 100 ms costs
//! at most ten wake-ups a second and a lateness nobody can observe.
//!
//! # Deadlines beyond the span
//!
//! The span is `tick_ms * slot_count`. Entries keep their absolute deadline and live in the slot
//! of their due tick modulo the slot count, so a deadline several spans away shares a slot with
//! nearer ones. A sweep of a slot fires only the entries whose own due tick has come; the others
//! stay where they are and are looked at again once per revolution, so a deadline `k` spans away
//! costs `k` extra visits. Because each entry is compared with the target tick rather than with
//! the slot's tick, one sweep of every slot also suffices when time jumps by many revolutions.
//!
//! # Deadlines already past
//!
//! A deadline at or before the wheel's time (the latest `now_ms` given to `new` or `expire`)
//! cannot be placed in a slot that is still ahead, so it goes on a separate due list that the
//! next `expire` empties first.
//!
//! # The exact firing rule
//!
//! A key scheduled with deadline `d` while the wheel's time is `w` has a firing time: `w` when
//! `d <= w`, otherwise `d` rounded up to a multiple of `tick_ms`. Each `expire(now_ms)` returns
//! keys whose firing time is at or before `now_ms`: all of them when the caller's vector has
//! room, otherwise exactly as many as fit, the rest staying due for the next call.

/// Marks a link that points nowhere: an entry with this `next` is not scheduled.
const NONE: u32 = u32::MAX;

/// The largest `entries_max` accepted: 16 Mi keys (256 MiB of entries) is far beyond what one
/// shard serves, and the bound keeps every entry and sentinel index below [`NONE`].
pub const ENTRIES_MAX_LIMIT: usize = 1 << 24;

/// The largest `slot_count` accepted: finding the next occupied slot scans at most
/// `slot_count / 64` words of the bitmap, which stays cheap at this size.
pub const SLOT_COUNT_LIMIT: usize = 1 << 16;

const OCCUPANCY_WORD_BITS: usize = u64::BITS as usize;

// Every key, every slot sentinel and the due-list sentinel need an index distinct from NONE.
const _: () = assert!(ENTRIES_MAX_LIMIT + SLOT_COUNT_LIMIT + 1 < NONE as usize);
const _: () = assert!(SLOT_COUNT_LIMIT.is_power_of_two());
// Indices are stored as u32 and used as usize; the cast back must not truncate.
const _: () = assert!(usize::BITS >= u32::BITS);
// The memory figure promised in the module documentation.
const _: () = assert!(size_of::<Entry>() == 16);

/// One link of a circular list: a key's entry or a list's sentinel (whose deadline is unused).
#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline_ms: u64,
    previous: u32,
    next: u32,
}

/// The wheel. See the module documentation.
pub struct TimerWheel {
    tick_ms: u64,
    slot_count: usize,
    entries_max: usize,
    /// Slot sentinels, then the due-list sentinel, then keys' entries: `list_count + key`, written
    /// up to the highest key scheduled so far within the capacity reserved for `entries_max`.
    entries: Vec<Entry>,
    /// Bit `slot % 64` of word `slot / 64` is set while that slot's list is not empty.
    occupancy: Vec<u64>,
    /// Every slot has been swept for every tick up to and including this one; each entry in a
    /// slot has a due tick after it.
    tick_swept: u64,
    /// The wheel's time: the latest `now_ms` given to `new` or `expire`.
    now_ms: u64,
    scheduled_count: usize,
}

/// A summary: the arrays hold up to millions of entries and would drown any log line.
impl std::fmt::Debug for TimerWheel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("slot_count", &self.slot_count)
            .field("entries_max", &self.entries_max)
            .field("scheduled_count", &self.scheduled_count)
            .field("tick_swept", &self.tick_swept)
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl TimerWheel {
    /// `tick_ms`: granularity; `slot_count`: power of two; `entries_max`: keys are
    /// `0..entries_max`. Allocates everything here (entries and slot sentinels), never again.
    pub fn new(tick_ms: u64, slot_count: usize, entries_max: usize, now_ms: u64) -> Self {
        assert!(tick_ms > 0, "tick_ms must be positive");
        assert!(
            slot_count.is_power_of_two(),
            "slot_count must be a power of two"
        );
        assert!(
            slot_count <= SLOT_COUNT_LIMIT,
            "slot_count above SLOT_COUNT_LIMIT"
        );
        assert!(
            entries_max <= ENTRIES_MAX_LIMIT,
            "entries_max above ENTRIES_MAX_LIMIT"
        );
        // One sentinel per slot plus the due list's; each starts as an empty circle.
        let list_count = slot_count + 1;
        let mut entries = Vec::with_capacity(list_count + entries_max);
        entries.extend((0..list_count as u32).map(|index| Entry {
            deadline_ms: 0,
            previous: index,
            next: index,
        }));
        Self {
            tick_ms,
            slot_count,
            entries_max,
            entries,
            occupancy: vec![0; slot_count.div_ceil(OCCUPANCY_WORD_BITS)],
            tick_swept: now_ms / tick_ms,
            now_ms,
            scheduled_count: 0,
        }
    }

    /// Sets the deadline of `key`, replacing any it had. A deadline at or before the wheel's time
    /// is returned by the next `expire`.
    pub fn schedule(&mut self, key: u32, deadline_ms: u64) {
        let index = self.key_index(key);
        if index >= self.entries.len() {
            self.write_up_to(index);
        }
        if self.is_scheduled(index) {
            self.unlink(index);
        }
        self.entries[index].deadline_ms = deadline_ms;
        let list_index = if deadline_ms <= self.now_ms {
            self.due_list_index()
        } else {
            let tick_due = deadline_ms.div_ceil(self.tick_ms);
            // The slot must not have been swept for this tick already, or the key would be
            // skipped for a whole revolution.
            assert!(tick_due > self.tick_swept);
            self.slot_index(tick_due)
        };
        self.link(index, list_index);
    }

    /// Removes the deadline of `key`; does nothing if it has none.
    pub fn cancel(&mut self, key: u32) {
        let index = self.key_index(key);
        if self.is_scheduled(index) {
            self.unlink(index);
        }
    }

    /// The deadline of `key`, as given to `schedule`, if it has one.
    pub fn deadline_ms(&self, key: u32) -> Option<u64> {
        let index = self.key_index(key);
        self.is_scheduled(index)
            .then(|| self.entries[index].deadline_ms)
    }

    /// Writes unscheduled entries up to `index`, within the capacity reserved in `new`: never
    /// reallocates.
    #[cold]
    #[inline(never)]
    fn write_up_to(&mut self, index: usize) {
        assert!(index < self.entries.capacity());
        let unscheduled = Entry {
            deadline_ms: 0,
            previous: NONE,
            next: NONE,
        };
        self.entries.resize(index + 1, unscheduled);
    }

    /// How many keys have a deadline.
    pub fn len(&self) -> usize {
        self.scheduled_count
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.scheduled_count == 0
    }

    /// When to call `expire` next, or `None` if no key has a deadline. The answer is never later
    /// than the earliest firing time (see the module documentation) or the wheel's time,
    /// whichever is later; a value at or before the wheel's time means "call `expire` now". It
    /// is the start of the next occupied slot's tick, so it may be early when that slot holds
    /// only deadlines of later revolutions: `expire` then returns nothing and the caller asks
    /// again, at most once per occupied slot per revolution.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        if self.scheduled_count == 0 {
            return None;
        }
        if !self.list_is_empty(self.due_list_index()) {
            return Some(self.now_ms);
        }
        let slot_first = self.slot_index(self.tick_swept + 1);
        let distance = self
            .next_occupied_distance(slot_first, self.slot_count)
            .expect("a scheduled key is on the due list or in a slot");
        let tick = self.tick_swept + 1 + distance as u64;
        Some(tick.saturating_mul(self.tick_ms))
    }

    /// Removes up to `expired.capacity() - expired.len()` keys whose firing time is at or before
    /// `now_ms` and pushes them onto `expired`, so that this never allocates; when `expired`
    /// fills, the rest stay due for the next call. Returns how many were pushed.
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<u32>) -> usize {
        assert!(now_ms >= self.now_ms, "the clock went backwards");
        self.now_ms = now_ms;
        let expired_count_before = expired.len();
        let due_list_emptied = self.expire_list(self.due_list_index(), u64::MAX, expired);
        if due_list_emptied {
            self.sweep(now_ms / self.tick_ms, expired);
        }
        expired.len() - expired_count_before
    }

    /// Sweeps the slots of the ticks after `tick_swept` up to `tick_target`, visiting each slot at
    /// most once: entries are compared with the target tick, so a jump of many revolutions needs
    /// no second visit.
    fn sweep(&mut self, tick_target: u64, expired: &mut Vec<u32>) {
        assert!(tick_target >= self.tick_swept);
        let ticks_pending = tick_target - self.tick_swept;
        let distance_limit = ticks_pending.min(self.slot_count as u64) as usize;
        let slot_first = self.slot_index(self.tick_swept + 1);
        let mut distance = 0;
        while let Some(found) =
            self.next_occupied_distance(slot_first + distance, distance_limit - distance)
        {
            distance += found;
            let slot_index = (slot_first + distance) % self.slot_count;
            if !self.expire_list(slot_index, tick_target, expired) {
                // `expired` is full: the ticks before this slot's are swept, this one is not.
                self.tick_swept += distance as u64;
                return;
            }
            distance += 1;
        }
        self.tick_swept = tick_target;
    }

    /// Moves the entries of one list whose due tick is at most `tick_target` into `expired`.
    /// Returns false if `expired` filled before every such entry was moved.
    fn expire_list(&mut self, list_index: usize, tick_target: u64, expired: &mut Vec<u32>) -> bool {
        let sentinel = self.sentinel_index(list_index);
        let mut index = self.entries[sentinel].next as usize;
        while index != sentinel {
            let entry = self.entries[index];
            if entry.deadline_ms.div_ceil(self.tick_ms) <= tick_target {
                if expired.len() == expired.capacity() {
                    return false;
                }
                self.unlink(index);
                expired.push(self.key_of(index));
            }
            index = entry.next as usize;
        }
        true
    }

    /// The distance from `slot_from` (wrapping) to the first occupied slot, if one is nearer than
    /// `distance_limit`, which is at most `slot_count`.
    fn next_occupied_distance(&self, slot_from: usize, distance_limit: usize) -> Option<usize> {
        assert!(distance_limit <= self.slot_count);
        let mut distance = 0;
        while distance < distance_limit {
            let slot_index = (slot_from + distance) % self.slot_count;
            let bit_index = slot_index % OCCUPANCY_WORD_BITS;
            let word = self.occupancy[slot_index / OCCUPANCY_WORD_BITS] >> bit_index;
            if word != 0 {
                let found = distance + word.trailing_zeros() as usize;
                return (found < distance_limit).then_some(found);
            }
            // Skip to the end of the word, or of the wheel when it is smaller than a word.
            let step = (OCCUPANCY_WORD_BITS - bit_index).min(self.slot_count - slot_index);
            distance += step;
        }
        None
    }

    fn key_index(&self, key: u32) -> usize {
        assert!((key as usize) < self.entries_max, "key out of range");
        self.list_count() + key as usize
    }

    fn key_of(&self, index: usize) -> u32 {
        (index - self.list_count()) as u32
    }

    fn list_count(&self) -> usize {
        self.slot_count + 1
    }

    /// An entry not yet written has never been scheduled.
    fn is_scheduled(&self, index: usize) -> bool {
        self.entries
            .get(index)
            .is_some_and(|entry| entry.next != NONE)
    }

    fn slot_index(&self, tick: u64) -> usize {
        // slot_count is a power of two, so the modulo keeps the low bits.
        (tick % self.slot_count as u64) as usize
    }

    fn due_list_index(&self) -> usize {
        self.slot_count
    }

    fn sentinel_index(&self, list_index: usize) -> usize {
        list_index
    }

    fn list_is_empty(&self, list_index: usize) -> bool {
        let sentinel = self.sentinel_index(list_index);
        self.entries[sentinel].next as usize == sentinel
    }

    /// Appends the entry at `index` to a list and counts it as scheduled.
    fn link(&mut self, index: usize, list_index: usize) {
        assert!(!self.is_scheduled(index));
        let sentinel = self.sentinel_index(list_index);
        let tail = self.entries[sentinel].previous as usize;
        self.entries[index].previous = tail as u32;
        self.entries[index].next = sentinel as u32;
        self.entries[tail].next = index as u32;
        self.entries[sentinel].previous = index as u32;
        if list_index < self.slot_count {
            self.occupancy[list_index / OCCUPANCY_WORD_BITS] |=
                1 << (list_index % OCCUPANCY_WORD_BITS);
        }
        self.scheduled_count += 1;
    }

    /// Takes the entry at `index` out of its list and marks it unscheduled.
    fn unlink(&mut self, index: usize) {
        assert!(self.is_scheduled(index));
        let Entry { previous, next, .. } = self.entries[index];
        self.entries[previous as usize].next = next;
        self.entries[next as usize].previous = previous;
        self.entries[index].previous = NONE;
        self.entries[index].next = NONE;
        // Only a sentinel left, pointing at itself both ways: the list is now empty.
        let list_index = previous as usize;
        if previous == next && list_index < self.slot_count {
            self.occupancy[list_index / OCCUPANCY_WORD_BITS] &=
                !(1 << (list_index % OCCUPANCY_WORD_BITS));
        }
        self.scheduled_count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Calls `expire` with plenty of room and returns the keys, sorted.
    fn expire_all(wheel: &mut TimerWheel, now_ms: u64) -> Vec<u32> {
        let mut expired = Vec::with_capacity(wheel.len());
        wheel.expire(now_ms, &mut expired);
        expired.sort_unstable();
        expired
    }

    /// Proves schedule, reschedule and cancel keep one deadline per key and the count right.
    #[test]
    fn schedule_cancel_and_reschedule() {
        let mut wheel = TimerWheel::new(10, 8, 4, 0);
        assert!(wheel.is_empty());
        assert_eq!(wheel.deadline_ms(0), None);
        wheel.cancel(0); // Cancelling a key without a deadline is a no-op.
        assert_eq!(wheel.len(), 0);

        wheel.schedule(0, 100);
        wheel.schedule(1, 50);
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.deadline_ms(0), Some(100));
        // Rescheduling replaces the deadline rather than adding one.
        wheel.schedule(0, 30);
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.deadline_ms(0), Some(30));

        wheel.cancel(1);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.deadline_ms(1), None);
        // The cancelled key and the replaced deadline never fire.
        assert_eq!(expire_all(&mut wheel, 29), Vec::<u32>::new());
        assert_eq!(expire_all(&mut wheel, 30), vec![0]);
        assert_eq!(expire_all(&mut wheel, 1_000), Vec::<u32>::new());
        assert!(wheel.is_empty());
        assert_eq!(wheel.deadline_ms(0), None);
    }

    /// Proves keys fire at their deadline rounded up to the tick: never early, and less than one
    /// tick late when `expire` runs at every tick boundary, with deadlines across several spans.
    #[test]
    fn fires_on_time_when_called_every_tick() {
        let tick_ms = 10;
        let key_count = 500;
        for step_ms in [1, tick_ms] {
            // 16 slots of 10 ms: a 160 ms span, so most deadlines lie revolutions away.
            let mut wheel = TimerWheel::new(tick_ms, 16, key_count, 0);
            let deadline = |key: u32| u64::from(key) * 37 % 1_000 + 1;
            for key in 0..key_count as u32 {
                wheel.schedule(key, deadline(key));
            }
            let mut fired_count = 0;
            for now_ms in (0..=1_010).step_by(step_ms as usize) {
                for key in expire_all(&mut wheel, now_ms) {
                    assert!(deadline(key) <= now_ms, "key {key} fired early at {now_ms}");
                    assert!(
                        now_ms < deadline(key) + tick_ms,
                        "key {key} late at {now_ms}"
                    );
                    // Calls at every millisecond see the exact rounded-up deadline.
                    if step_ms == 1 {
                        assert_eq!(now_ms, deadline(key).div_ceil(tick_ms) * tick_ms);
                    }
                    fired_count += 1;
                }
            }
            assert_eq!(fired_count, key_count);
            assert!(wheel.is_empty());
        }
    }

    /// Proves deadlines ten spans away fire at their tick, not when their slot first comes round.
    #[test]
    fn deadlines_beyond_the_span() {
        let tick_ms = 100;
        let slot_count = 8;
        let span_ms = tick_ms * slot_count as u64;
        let mut wheel = TimerWheel::new(tick_ms, slot_count, 3, 0);
        wheel.schedule(0, 10 * span_ms);
        wheel.schedule(1, 10 * span_ms + 1);
        wheel.schedule(2, 10 * span_ms + tick_ms * 3 + 50);
        for now_ms in (0..10 * span_ms).step_by(tick_ms as usize) {
            assert_eq!(
                expire_all(&mut wheel, now_ms),
                Vec::<u32>::new(),
                "early at {now_ms}"
            );
        }
        assert_eq!(expire_all(&mut wheel, 10 * span_ms), vec![0]);
        assert_eq!(expire_all(&mut wheel, 10 * span_ms + 99), Vec::<u32>::new());
        assert_eq!(expire_all(&mut wheel, 10 * span_ms + tick_ms), vec![1]);
        assert_eq!(
            expire_all(&mut wheel, 10 * span_ms + tick_ms * 4 - 1),
            Vec::<u32>::new()
        );
        assert_eq!(expire_all(&mut wheel, 10 * span_ms + tick_ms * 4), vec![2]);
    }

    /// Proves one call after a jump of many revolutions fires exactly the keys now due.
    #[test]
    fn time_jump_over_many_revolutions() {
        let tick_ms = 10;
        let mut wheel = TimerWheel::new(tick_ms, 8, 1_000, 0);
        let deadline = |key: u32| u64::from(key) * 20 + 5;
        for key in 0..1_000 {
            wheel.schedule(key, deadline(key));
        }
        let fired = expire_all(&mut wheel, 10_000);
        let expected: Vec<u32> = (0..1_000)
            .filter(|&key| deadline(key).div_ceil(tick_ms) * tick_ms <= 10_000)
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(
            expire_all(&mut wheel, 100_000).len(),
            1_000 - expected.len()
        );
    }

    /// Proves a deadline at or before the wheel's time fires at the very next call, even one at
    /// the same time and inside the same tick.
    #[test]
    fn deadline_in_the_past_fires_at_next_expire() {
        let mut wheel = TimerWheel::new(100, 8, 4, 1_050);
        wheel.schedule(0, 1_020);
        wheel.schedule(1, 1_050);
        wheel.schedule(2, 0);
        assert_eq!(wheel.next_expiry_ms(), Some(1_050));
        assert_eq!(expire_all(&mut wheel, 1_050), vec![0, 1, 2]);
        // Just after the wheel's time: rounded up to the tick like any future deadline.
        wheel.schedule(3, 1_051);
        assert_eq!(wheel.next_expiry_ms(), Some(1_100));
        assert_eq!(expire_all(&mut wheel, 1_099), Vec::<u32>::new());
        assert_eq!(expire_all(&mut wheel, 1_100), vec![3]);
    }

    /// Proves `next_expiry_ms` is None when empty, never after the earliest rounded deadline, and
    /// that a shard sleeping until it alone fires every key on time.
    #[test]
    fn next_expiry_drives_the_loop() {
        let tick_ms = 100;
        let mut wheel = TimerWheel::new(tick_ms, 8, 3, 0);
        assert_eq!(wheel.next_expiry_ms(), None);
        wheel.schedule(0, 1_234);
        wheel.schedule(1, 250);
        assert_eq!(wheel.next_expiry_ms(), Some(300));
        wheel.cancel(1);
        // 1_234 is beyond the 800 ms span: the answer may be early but never late.
        let next_ms = wheel.next_expiry_ms().unwrap();
        assert!(0 < next_ms && next_ms <= 1_300);
        wheel.schedule(2, 20 * 800 + 1);

        let mut now_ms = 0;
        let mut fired = Vec::new();
        let mut wake_count = 0;
        while let Some(next_ms) = wheel.next_expiry_ms() {
            assert!(
                next_ms > now_ms,
                "a wake-up that expires nothing must move time forward"
            );
            now_ms = next_ms;
            wake_count += 1;
            for key in expire_all(&mut wheel, now_ms) {
                let deadline_ms = [1_234, 250, 20 * 800 + 1][key as usize];
                assert_eq!(now_ms, u64::div_ceil(deadline_ms, tick_ms) * tick_ms);
                fired.push(key);
            }
        }
        assert_eq!(fired, vec![0, 2]);
        // At most one wake-up per revolution for each key's slot: 21 revolutions until the far
        // deadline (tick 161 of 8-tick revolutions), 2 until the near one (tick 13).
        assert!(wake_count <= 21 + 2, "{wake_count} wake-ups");
        assert_eq!(wheel.next_expiry_ms(), None);
    }

    /// Proves `expire` pushes no more than the vector's spare capacity and the rest come next.
    #[test]
    fn expired_capacity_is_honoured() {
        let mut wheel = TimerWheel::new(10, 4, 16, 0);
        // Due keys on the due list, in several slots, and in a slot shared with a later key.
        for key in 0..10 {
            wheel.schedule(key, u64::from(key) * 7);
        }
        wheel.schedule(10, 10_000);
        let mut expired = Vec::with_capacity(3);
        expired.push(u32::MAX); // A leftover entry: only the spare capacity may be used.
        let room = expired.capacity() - expired.len();
        let mut fired = Vec::new();
        loop {
            let pushed_count = wheel.expire(1_000, &mut expired);
            assert_eq!(pushed_count, expired.len() - 1);
            assert!(pushed_count <= room);
            fired.extend(expired.drain(1..));
            if pushed_count < room {
                break;
            }
        }
        fired.sort_unstable();
        assert_eq!(fired, (0..10).collect::<Vec<u32>>());
        assert_eq!(wheel.deadline_ms(10), Some(10_000));
        // A vector without room takes nothing and loses nothing.
        wheel.schedule(11, 1_000);
        assert_eq!(wheel.expire(1_000, &mut Vec::new()), 0);
        assert_eq!(expire_all(&mut wheel, 1_000), vec![11]);
    }

    #[derive(Clone, Debug)]
    enum Operation {
        /// Deadline `delay_ms` from the test's clock; negative delays are in the past.
        Schedule {
            key: u32,
            delay_ms: i64,
        },
        Cancel {
            key: u32,
        },
        /// Moves the test's clock only; the wheel learns the time at the next `expire`.
        Advance {
            elapsed_ms: u64,
        },
        /// Calls `expire` with a vector holding `leftover_count` entries and `room` spare slots.
        Expire {
            room: usize,
            leftover_count: usize,
        },
    }

    fn operation_strategy(key_count: u32) -> impl Strategy<Value = Operation> {
        prop_oneof![
            4 => (0..key_count, -300i64..3_000)
                .prop_map(|(key, delay_ms)| Operation::Schedule { key, delay_ms }),
            1 => (0..key_count).prop_map(|key| Operation::Cancel { key }),
            3 => prop_oneof![0..25u64, 0..5_000u64]
                .prop_map(|elapsed_ms| Operation::Advance { elapsed_ms }),
            3 => (0..6usize, 0..3usize)
                .prop_map(|(room, leftover_count)| Operation::Expire { room, leftover_count }),
        ]
    }

    /// The reference: each key's deadline and firing time, by the rule in the module
    /// documentation.
    struct Model {
        tick_ms: u64,
        clock_ms: u64,
        /// The latest time given to the wheel, as the wheel's own `now_ms`.
        wheel_now_ms: u64,
        /// Key to (deadline, firing time).
        keys: BTreeMap<u32, (u64, u64)>,
    }

    impl Model {
        fn schedule(&mut self, key: u32, deadline_ms: u64) {
            let firing_ms = if deadline_ms <= self.wheel_now_ms {
                self.wheel_now_ms
            } else {
                deadline_ms.div_ceil(self.tick_ms) * self.tick_ms
            };
            self.keys.insert(key, (deadline_ms, firing_ms));
        }

        fn due_keys(&self) -> Vec<u32> {
            let due = self
                .keys
                .iter()
                .filter(|(_, (_, firing_ms))| *firing_ms <= self.clock_ms);
            due.map(|(key, _)| *key).collect()
        }
    }

    /// Runs one `expire` on both and checks the wheel returned as many due keys as fit, only due
    /// keys, and each once; right after a call that did not fill the vector, nothing is due.
    fn check_expire(
        wheel: &mut TimerWheel,
        model: &mut Model,
        room: usize,
        leftover_count: usize,
    ) -> Result<(), TestCaseError> {
        let mut expired = Vec::with_capacity(leftover_count + room);
        expired.resize(leftover_count, u32::MAX);
        let room = expired.capacity() - expired.len();
        let due = model.due_keys();
        let pushed_count = wheel.expire(model.clock_ms, &mut expired);
        model.wheel_now_ms = model.clock_ms;
        prop_assert_eq!(pushed_count, room.min(due.len()));
        prop_assert_eq!(expired.len(), leftover_count + pushed_count);
        let mut fired = expired.split_off(leftover_count);
        fired.sort_unstable();
        fired.dedup();
        prop_assert_eq!(fired.len(), pushed_count, "a key was returned twice");
        for key in fired {
            prop_assert!(
                due.contains(&key),
                "key {} fired before its firing time",
                key
            );
            model.keys.remove(&key);
        }
        if pushed_count < room {
            let next_ms = wheel.next_expiry_ms();
            prop_assert!(next_ms.is_none_or(|next_ms| next_ms > model.clock_ms));
        }
        Ok(())
    }

    /// Checks the state every operation must leave behind: the same keys and deadlines, and an
    /// answer from `next_expiry_ms` no later than the earliest firing time or the wheel's time.
    fn check_state(wheel: &TimerWheel, model: &Model, key_count: u32) -> Result<(), TestCaseError> {
        prop_assert_eq!(wheel.len(), model.keys.len());
        prop_assert_eq!(wheel.is_empty(), model.keys.is_empty());
        for key in 0..key_count {
            let deadline_ms = model.keys.get(&key).map(|(deadline_ms, _)| *deadline_ms);
            prop_assert_eq!(wheel.deadline_ms(key), deadline_ms);
        }
        let firing_ms_min = model.keys.values().map(|(_, firing_ms)| *firing_ms).min();
        match (wheel.next_expiry_ms(), firing_ms_min) {
            (None, None) => {}
            (Some(next_ms), Some(firing_ms_min)) => {
                prop_assert!(next_ms <= firing_ms_min.max(model.wheel_now_ms));
            }
            (next_ms, firing_ms_min) => {
                prop_assert!(false, "next {:?} but earliest {:?}", next_ms, firing_ms_min);
            }
        }
        Ok(())
    }

    proptest! {
        /// Proves random schedules, cancels, clock moves and bounded expires agree with the
        /// model on every wheel shape, from one slot to spans far shorter than the deadlines.
        #[test]
        fn agrees_with_model(
            tick_ms in 1..=20u64,
            slot_count_log2 in 0..=7u32,
            key_count in 1..=24u32,
            start_ms in 0..10_000u64,
            operations in proptest::collection::vec(operation_strategy(24), 0..200),
        ) {
            let slot_count = 1 << slot_count_log2;
            let mut wheel = TimerWheel::new(tick_ms, slot_count, key_count as usize, start_ms);
            let mut model = Model {
                tick_ms,
                clock_ms: start_ms,
                wheel_now_ms: start_ms,
                keys: BTreeMap::new(),
            };
            for operation in operations {
                match operation {
                    Operation::Schedule { key, delay_ms } => {
                        let key = key % key_count;
                        let deadline_ms = model.clock_ms.saturating_add_signed(delay_ms);
                        wheel.schedule(key, deadline_ms);
                        model.schedule(key, deadline_ms);
                    }
                    Operation::Cancel { key } => {
                        wheel.cancel(key % key_count);
                        model.keys.remove(&(key % key_count));
                    }
                    Operation::Advance { elapsed_ms } => model.clock_ms += elapsed_ms,
                    Operation::Expire { room, leftover_count } => {
                        check_expire(&mut wheel, &mut model, room, leftover_count)?;
                    }
                }
                check_state(&wheel, &model, key_count)?;
            }
        }
    }

    /// Proves the keys' entries are written only up to the highest key scheduled, inside the
    /// memory reserved at creation, and that keys never written read as unscheduled.
    #[test]
    fn entries_are_written_on_first_use() {
        let mut wheel = TimerWheel::new(10, 8, 1_000, 0);
        let reserved = wheel.entries.as_ptr();
        assert_eq!(wheel.entries.len(), 9, "only the sentinels");
        assert_eq!(wheel.deadline_ms(999), None);
        wheel.cancel(999);
        wheel.schedule(10, 100);
        assert_eq!(wheel.entries.len(), 9 + 11);
        assert_eq!(wheel.deadline_ms(10), Some(100));
        assert_eq!(wheel.deadline_ms(9), None);
        assert_eq!(wheel.deadline_ms(500), None);
        wheel.schedule(999, 50);
        assert_eq!(wheel.entries.len(), 9 + 1_000);
        assert_eq!(wheel.entries.as_ptr(), reserved, "never reallocated");
        assert_eq!(expire_all(&mut wheel, 100), vec![10, 999]);
        assert!(wheel.is_empty());
    }

    /// Proves a key at or beyond `entries_max` is refused.
    #[test]
    #[should_panic(expected = "key out of range")]
    fn key_out_of_range_panics() {
        TimerWheel::new(10, 8, 4, 0).schedule(4, 100);
    }

    /// Proves a clock that runs backwards is caught.
    #[test]
    #[should_panic(expected = "the clock went backwards")]
    fn clock_backwards_panics() {
        TimerWheel::new(10, 8, 4, 100).expire(99, &mut Vec::new());
    }
}
