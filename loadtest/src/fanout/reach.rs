//! Per-message reach: how long a message took to reach its last subscriber. Each worker keeps,
//! per message (topic, counter), the slowest delivery it saw and how many deliveries it made;
//! the coordinator takes the maximum and the sum across workers, which is exact, and counts a
//! message as complete when its deliveries equal the topic's subscribers.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::histogram::{new_histogram, record};

/// Messages one worker tracks per step. Past this, more messages are not tracked and the
/// step's reach is reported as partial (the delivery latencies are still all recorded).
pub const MESSAGES_TRACKED_MAX: usize = 200_000;

/// One message as one worker saw it, sent as a 4-element array to keep reports small:
/// `[topic, counter, slowest delivery ns, deliveries]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachEntry(pub u32, pub u64, pub u64, pub u64);

/// A multiply-rotate hasher (the Firefox/rustc "Fx" scheme) for the tally's integer keys:
/// it is looked up once per delivery, where SipHash's resistance to chosen keys buys nothing
/// (the keys are our own counters) and cost more than the rest of the lookup.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterHasher {
    hash: u64,
}

impl Hasher for CounterHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        self.hash = (self.hash.rotate_left(5) ^ value).wrapping_mul(SEED);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// One worker's (or thread's) per-message tally for one step.
#[derive(Clone, Debug, Default)]
pub struct ReachTally {
    messages: HashMap<(u32, u64), (u64, u64), BuildHasherDefault<CounterHasher>>,
    /// A message was left untracked for want of room.
    pub truncated: bool,
}

impl ReachTally {
    pub fn record(&mut self, topic: u32, counter: u64, latency_ns: u64) {
        let room = self.messages.len() < MESSAGES_TRACKED_MAX;
        match self.messages.get_mut(&(topic, counter)) {
            Some((slowest_ns, deliveries)) => {
                *slowest_ns = (*slowest_ns).max(latency_ns);
                *deliveries += 1;
            }
            None if room => {
                self.messages.insert((topic, counter), (latency_ns, 1));
            }
            None => self.truncated = true,
        }
    }

    /// Adds another tally of the same step (another thread's).
    pub fn merge(&mut self, other: &ReachTally) {
        self.truncated |= other.truncated;
        for (key, (slowest_ns, deliveries)) in &other.messages {
            let entry = self.messages.entry(*key).or_insert((0, 0));
            entry.0 = entry.0.max(*slowest_ns);
            entry.1 += deliveries;
        }
    }

    pub fn entries(&self) -> Vec<ReachEntry> {
        let mut entries: Vec<ReachEntry> = self
            .messages
            .iter()
            .map(|((topic, counter), (slowest_ns, deliveries))| {
                ReachEntry(*topic, *counter, *slowest_ns, *deliveries)
            })
            .collect();
        entries.sort_unstable_by_key(|entry| (entry.0, entry.1));
        entries
    }

    pub fn from_entries(entries: &[ReachEntry], truncated: bool) -> Self {
        let mut tally = ReachTally {
            truncated,
            ..Self::default()
        };
        for ReachEntry(topic, counter, slowest_ns, deliveries) in entries {
            let entry = tally.messages.entry((*topic, *counter)).or_insert((0, 0));
            entry.0 = entry.0.max(*slowest_ns);
            entry.1 += deliveries;
        }
        tally
    }

    /// Messages whose deliveries match `subscribers(topic)`, and the slowest delivery of
    /// each, as a histogram; and the messages that reached fewer subscribers.
    pub fn complete(&self, subscribers: impl Fn(u32) -> u64) -> (Histogram<u64>, u64) {
        let mut reach_ns = new_histogram();
        let mut incomplete = 0;
        for ((topic, _counter), (slowest_ns, deliveries)) in &self.messages {
            if *deliveries >= subscribers(*topic) {
                record(&mut reach_ns, *slowest_ns);
            } else {
                incomplete += 1;
            }
        }
        (reach_ns, incomplete)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers' tallies merge exactly: the slowest delivery is the maximum over both,
    /// deliveries add, and a message is complete only with every subscriber's delivery.
    #[test]
    fn merges_across_workers_exactly() {
        // Topic 0 has 3 subscribers: two in the first worker, one in the second.
        let mut first = ReachTally::default();
        first.record(0, 1, 1_000);
        first.record(0, 1, 5_000);
        first.record(0, 2, 2_000);
        first.record(0, 2, 2_500);
        let mut second = ReachTally::default();
        second.record(0, 1, 9_000);
        // Message 2 never reached the second worker's subscriber.
        let workers = [first.entries(), second.entries()];
        let mut merged = ReachTally::default();
        for entries in &workers {
            // Through the wire format, as the coordinator receives them.
            let line = serde_json::to_string(entries).unwrap();
            let entries: Vec<ReachEntry> = serde_json::from_str(&line).unwrap();
            merged.merge(&ReachTally::from_entries(&entries, false));
        }
        assert_eq!(
            merged.entries(),
            [ReachEntry(0, 1, 9_000, 3), ReachEntry(0, 2, 2_500, 2)]
        );
        let (reach, incomplete) = merged.complete(|_| 3);
        assert_eq!(reach.len(), 1);
        assert_eq!(incomplete, 1);
        assert!(reach.equivalent(reach.max(), 9_000));
    }

    /// Past the tracking limit new messages are dropped and the tally says so; known
    /// messages are still updated.
    #[test]
    fn tracking_is_bounded() {
        let mut tally = ReachTally::default();
        for counter in 0..MESSAGES_TRACKED_MAX as u64 {
            tally.record(1, counter, 10);
        }
        assert!(!tally.truncated);
        tally.record(1, u64::MAX, 10);
        assert!(tally.truncated);
        tally.record(1, 0, 99);
        assert_eq!(tally.len(), MESSAGES_TRACKED_MAX);
        assert_eq!(tally.entries()[0], ReachEntry(1, 0, 99, 2));
    }
}
