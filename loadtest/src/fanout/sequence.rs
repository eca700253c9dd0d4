//! The per-topic order check a subscriber runs on every delivery: the counter a publisher puts
//! in each message goes 1, 2, 3, ... per topic, so any other arrival order is a gap (messages
//! skipped), a duplicate (a counter seen before) or out of order (a skipped counter arriving
//! late).

use std::collections::VecDeque;

/// Skipped counters remembered, to tell a late arrival from a duplicate. Beyond this, the
/// oldest are forgotten, and their late arrival counts as a duplicate.
const SKIPPED_REMEMBERED_MAX: usize = 1024;

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next counter expected.
    InOrder,
    /// Ahead of the next expected: this many counters were skipped.
    Gap(u64),
    /// Seen before.
    Duplicate,
    /// Skipped earlier and arriving now.
    OutOfOrder,
}

/// The order check of one topic at one subscriber.
#[derive(Clone, Debug)]
pub struct SequenceCheck {
    expected: u64,
    /// Counters below `expected` not seen yet, as ranges [start, end).
    skipped: VecDeque<(u64, u64)>,
}

impl SequenceCheck {
    /// A check whose first expected counter is `first`.
    pub fn new(first: u64) -> Self {
        Self {
            expected: first,
            skipped: VecDeque::new(),
        }
    }

    pub fn observe(&mut self, counter: u64) -> Verdict {
        if counter == self.expected {
            self.expected += 1;
            return Verdict::InOrder;
        }
        if counter > self.expected {
            let skipped = counter - self.expected;
            if self.skipped.len() == SKIPPED_REMEMBERED_MAX {
                self.skipped.pop_front();
            }
            self.skipped.push_back((self.expected, counter));
            self.expected = counter + 1;
            return Verdict::Gap(skipped);
        }
        let Some(index) = self
            .skipped
            .iter()
            .position(|(start, end)| (*start..*end).contains(&counter))
        else {
            return Verdict::Duplicate;
        };
        let (start, end) = self.skipped[index];
        // Take the counter out of its range, splitting it in two if it was in the middle.
        match (counter == start, counter + 1 == end) {
            (true, true) => {
                self.skipped.remove(index);
            }
            (true, false) => self.skipped[index].0 += 1,
            (false, true) => self.skipped[index].1 -= 1,
            (false, false) => {
                self.skipped[index].1 = counter;
                self.skipped.insert(index + 1, (counter + 1, end));
            }
        }
        Verdict::OutOfOrder
    }
}

/// Counts of order faults, added up over deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderFaults {
    /// Counters skipped when a later one arrived (summed over every jump).
    pub gaps: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Deliveries whose server sequence number was not the topic's subscribed sequence number
    /// plus the counter (ringcast and the uws peer only).
    pub seq_mismatches: u64,
}

impl OrderFaults {
    pub fn record(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::InOrder => {}
            Verdict::Gap(skipped) => self.gaps += skipped,
            Verdict::Duplicate => self.duplicates += 1,
            Verdict::OutOfOrder => self.out_of_order += 1,
        }
    }

    pub fn merge(&mut self, other: &OrderFaults) {
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.seq_mismatches += other.seq_mismatches;
    }

    pub fn total(&self) -> u64 {
        self.gaps + self.duplicates + self.out_of_order + self.seq_mismatches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(counters: &[u64]) -> (Vec<Verdict>, OrderFaults) {
        let mut check = SequenceCheck::new(1);
        let mut faults = OrderFaults::default();
        let verdicts = counters
            .iter()
            .map(|counter| {
                let verdict = check.observe(*counter);
                faults.record(verdict);
                verdict
            })
            .collect();
        (verdicts, faults)
    }

    /// 1, 2, 3 in order is clean.
    #[test]
    fn in_order_is_clean() {
        let (verdicts, faults) = verdicts(&[1, 2, 3, 4]);
        assert!(verdicts.iter().all(|verdict| *verdict == Verdict::InOrder));
        assert_eq!(faults, OrderFaults::default());
    }

    /// A jump counts the skipped counters; repeats are duplicates.
    #[test]
    fn gaps_and_duplicates() {
        let (verdicts, faults) = verdicts(&[1, 2, 5, 5, 6, 2, 10]);
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                InOrder,
                InOrder,
                Gap(2),
                Duplicate,
                InOrder,
                Duplicate,
                Gap(3)
            ]
        );
        assert_eq!(faults.gaps, 5);
        assert_eq!(faults.duplicates, 2);
        assert_eq!(faults.out_of_order, 0);
    }

    /// Skipped counters that arrive late are out of order, once; a second copy is a duplicate.
    #[test]
    fn late_arrivals_are_out_of_order() {
        let (verdicts, faults) = verdicts(&[1, 6, 3, 2, 5, 4, 4, 7, 3]);
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                InOrder,
                Gap(4),
                OutOfOrder,
                OutOfOrder,
                OutOfOrder,
                OutOfOrder,
                Duplicate,
                InOrder,
                Duplicate
            ]
        );
        assert_eq!(faults.gaps, 4);
        assert_eq!(faults.out_of_order, 4);
        assert_eq!(faults.duplicates, 2);
        assert_eq!(faults.total(), 10);
    }

    /// A check can start anywhere (a subscriber joining a topic already under way).
    #[test]
    fn starts_where_told() {
        let mut check = SequenceCheck::new(41);
        assert_eq!(check.observe(41), Verdict::InOrder);
        assert_eq!(check.observe(40), Verdict::Duplicate);
        assert_eq!(check.observe(43), Verdict::Gap(1));
    }
}
