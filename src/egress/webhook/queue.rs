//! One endpoint's queue of events, sans-IO: bounded in bytes, drained in batches, in order.
//!
//! - **Bound**: the queue holds at most `queue_bytes_max`: each waiting event's JSON and
//!   [`ENTRY_OVERHEAD_BYTES`] of bookkeeping, plus the request in flight. An event that does
//!   not fit makes room by dropping the oldest waiting events (counted); one that would not
//!   fit even in an empty queue (beside the request in flight) is itself dropped (counted).
//! - **Batches**: a request carries up to `batch_max` events. It goes when that many wait, or
//!   when the oldest has waited `batch_wait_ms` (at once when `batch_max` is 1), in the order
//!   the events came; one request is in flight at a time, so the endpoint sees them in order.
//! - **Coalescing**: `topic.occupied` and `topic.vacated` wait `batch_wait_ms` at the head of
//!   the queue whatever `batch_max` is. When the opposite event of the same topic comes within
//!   `batch_wait_ms` of one that still waits (not yet in a request), both are dropped (counted
//!   as coalesced): the topic ends as it was, and the endpoint hears nothing of a flap. A
//!   longer-lived state is always reported, even when both events waited behind a backlog
//!   (retries), so that a receiver sees every occupancy that lasted. A topic's occupancy events
//!   alternate (its owner decides them in order), so the one waiting is always the opposite.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::broker::event::EventKind;

/// What one queued event costs beyond its JSON: its entry here and its share of the tables.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The limits of one endpoint's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub bytes_max: usize,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
}

/// What became of an event offered to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, after dropping this many older events to make room.
    Queued { dropped: usize },
    /// It undid a waiting event of the opposite kind: both are gone.
    Coalesced,
    /// Larger than the queue can hold beside the request in flight: dropped.
    Refused,
}

#[derive(Debug)]
struct Entry {
    kind: EventKind,
    /// The topic of an occupancy event (the key of `EventQueue::occupancy`).
    topic: Option<Box<[u8]>>,
    json: Bytes,
    queued_ms: u64,
    /// Undone by a later opposite event: skipped, and costs only its overhead until it
    /// reaches the head.
    cancelled: bool,
}

impl Entry {
    fn cost(&self) -> usize {
        self.json.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// A request's events, taken from the queue.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub events: usize,
    /// When the oldest of them was queued (for the delivery latency).
    pub oldest_queued_ms: u64,
}

/// One endpoint's queue.
#[derive(Debug)]
pub struct EventQueue {
    limits: QueueLimits,
    entries: VecDeque<Entry>,
    /// The serial number of `entries[0]`; each entry's serial is its position plus this.
    first_serial: u64,
    /// Entries not cancelled.
    live_count: usize,
    /// What the entries and the request in flight hold.
    bytes: usize,
    in_flight: bool,
    in_flight_bytes: usize,
    /// For each topic with an occupancy event waiting, that event's serial.
    occupancy: HashMap<Box<[u8]>, u64>,
}

impl EventQueue {
    pub fn new(limits: QueueLimits) -> EventQueue {
        EventQueue {
            limits,
            entries: VecDeque::new(),
            first_serial: 0,
            live_count: 0,
            bytes: 0,
            in_flight: false,
            in_flight_bytes: 0,
            occupancy: HashMap::new(),
        }
    }

    /// Events waiting (not counting the request in flight).
    pub fn depth(&self) -> usize {
        self.live_count
    }

    /// Memory held: waiting events and the request in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offers an event of `kind` (with its topic, for occupancy events) encoded as `json`.
    pub fn push(
        &mut self,
        kind: EventKind,
        topic: Option<&[u8]>,
        json: Bytes,
        now_ms: u64,
    ) -> Pushed {
        if kind.is_occupancy()
            && let Some(topic) = topic
            && self.cancel_opposite(kind, topic, now_ms)
        {
            return Pushed::Coalesced;
        }
        let cost = json.len() + ENTRY_OVERHEAD_BYTES;
        if cost + self.in_flight_bytes > self.limits.bytes_max {
            return Pushed::Refused;
        }
        let mut dropped = 0;
        while self.bytes + cost > self.limits.bytes_max {
            let entry = self
                .pop_front()
                .expect("over the bound with nothing but the request");
            dropped += usize::from(!entry.cancelled);
        }
        let serial = self.first_serial + self.entries.len() as u64;
        let topic: Option<Box<[u8]>> = topic.filter(|_| kind.is_occupancy()).map(Box::from);
        if let Some(topic) = &topic {
            self.occupancy.insert(topic.clone(), serial);
        }
        self.bytes += cost;
        self.live_count += 1;
        self.entries.push_back(Entry {
            kind,
            topic,
            json,
            queued_ms: now_ms,
            cancelled: false,
        });
        Pushed::Queued { dropped }
    }

    /// Cancels the waiting occupancy event of `topic` if it is the opposite of `kind` and came
    /// no more than `batch_wait_ms` before `now_ms`.
    fn cancel_opposite(&mut self, kind: EventKind, topic: &[u8], now_ms: u64) -> bool {
        let Some(&serial) = self.occupancy.get(topic) else {
            return false;
        };
        let index = (serial - self.first_serial) as usize;
        let entry = &mut self.entries[index];
        let flap = now_ms.saturating_sub(entry.queued_ms) <= self.limits.batch_wait_ms;
        if entry.cancelled || entry.kind == kind || !flap {
            return false;
        }
        entry.cancelled = true;
        self.bytes -= entry.json.len();
        entry.json = Bytes::new();
        self.live_count -= 1;
        self.occupancy.remove(topic);
        self.trim_front();
        true
    }

    /// When the next request is due (compare with the clock), or `None` when nothing waits.
    pub fn due_ms(&self) -> Option<u64> {
        let head = self.entries.iter().find(|entry| !entry.cancelled)?;
        let batched = self.limits.batch_max > 1;
        if !head.kind.is_occupancy() && self.live_count >= self.limits.batch_max {
            return Some(0);
        }
        let wait_ms = match batched || head.kind.is_occupancy() {
            true => self.limits.batch_wait_ms,
            false => 0,
        };
        Some(head.queued_ms + wait_ms)
    }

    /// Takes the next request's events if it is due, writing its body into `body` (one event,
    /// or an array when `batch_max` is above 1). Its memory stays counted until
    /// [`EventQueue::finish`].
    pub fn take(&mut self, now_ms: u64, body: &mut Vec<u8>) -> Option<Batch> {
        if self.in_flight || self.due_ms()? > now_ms {
            return None;
        }
        body.clear();
        let array = self.limits.batch_max > 1;
        if array {
            body.push(b'[');
        }
        let mut events = 0;
        let mut oldest_queued_ms = now_ms;
        while events < self.limits.batch_max {
            let Some(entry) = self.pop_front() else {
                break;
            };
            if entry.cancelled {
                continue;
            }
            if events > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&entry.json);
            oldest_queued_ms = oldest_queued_ms.min(entry.queued_ms);
            events += 1;
        }
        if array {
            body.push(b']');
        }
        self.trim_front();
        self.in_flight = true;
        self.in_flight_bytes = body.len();
        self.bytes += self.in_flight_bytes;
        Some(Batch {
            events,
            oldest_queued_ms,
        })
    }

    /// The request in flight is over (delivered or given up): its memory is free.
    pub fn finish(&mut self) {
        self.bytes -= self.in_flight_bytes;
        self.in_flight = false;
        self.in_flight_bytes = 0;
    }

    /// Drops every waiting event (the endpoint was disabled). Returns how many.
    pub fn clear(&mut self) -> usize {
        let dropped = self.live_count;
        while self.pop_front().is_some() {}
        dropped
    }

    /// Removes the head entry, forgetting it in the occupancy table if it is listed there.
    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        let serial = self.first_serial;
        self.first_serial += 1;
        self.bytes -= match entry.cancelled {
            true => ENTRY_OVERHEAD_BYTES,
            false => entry.cost(),
        };
        if !entry.cancelled {
            self.live_count -= 1;
            if let Some(topic) = &entry.topic
                && self.occupancy.get(topic) == Some(&serial)
            {
                self.occupancy.remove(topic);
            }
        }
        Some(entry)
    }

    /// Drops cancelled entries at the head.
    fn trim_front(&mut self) {
        while self.entries.front().is_some_and(|entry| entry.cancelled) {
            self.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCCUPIED: EventKind = EventKind::TopicOccupied;
    const VACATED: EventKind = EventKind::TopicVacated;
    const MESSAGE: EventKind = EventKind::MessagePublished;

    fn queue(bytes_max: usize, batch_max: usize) -> EventQueue {
        EventQueue::new(QueueLimits {
            bytes_max,
            batch_max,
            batch_wait_ms: 100,
        })
    }

    fn json(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn take_text(queue: &mut EventQueue, now_ms: u64) -> Option<String> {
        let mut body = Vec::new();
        queue.take(now_ms, &mut body)?;
        queue.finish();
        Some(String::from_utf8(body).unwrap())
    }

    /// Proves single events go at once, one per request, in order, and one at a time.
    #[test]
    fn single_events_go_in_order_one_at_a_time() {
        let mut queue = queue(1 << 20, 1);
        queue.push(MESSAGE, None, json("1"), 0);
        queue.push(MESSAGE, None, json("2"), 0);
        assert_eq!(queue.due_ms(), Some(0));
        let mut body = Vec::new();
        assert_eq!(queue.take(0, &mut body).unwrap().events, 1);
        assert_eq!(body, b"1");
        assert!(queue.take(0, &mut body).is_none(), "one request in flight");
        queue.finish();
        assert_eq!(take_text(&mut queue, 0).unwrap(), "2");
        assert_eq!((queue.depth(), queue.bytes()), (0, 0));
    }

    /// Proves a batch goes when full or when its oldest event has waited, as a JSON array.
    #[test]
    fn batches_fill_or_wait() {
        let mut queue = queue(1 << 20, 3);
        queue.push(MESSAGE, None, json("1"), 10);
        queue.push(MESSAGE, None, json("2"), 20);
        assert_eq!(queue.due_ms(), Some(110));
        assert_eq!(take_text(&mut queue, 109), None);
        queue.push(MESSAGE, None, json("3"), 30);
        queue.push(MESSAGE, None, json("4"), 40);
        assert_eq!(take_text(&mut queue, 40).unwrap(), "[1,2,3]");
        assert_eq!(queue.due_ms(), Some(140));
        assert_eq!(take_text(&mut queue, 140).unwrap(), "[4]");
    }

    /// Proves the oldest events make room for new ones and are counted, that the request in
    /// flight counts against the bound, and that an event too large is refused.
    #[test]
    fn overflow_drops_the_oldest() {
        let cost = 1 + ENTRY_OVERHEAD_BYTES;
        let mut queue = queue(3 * cost, 1);
        for text in ["1", "2", "3"] {
            assert_eq!(
                queue.push(MESSAGE, None, json(text), 0),
                Pushed::Queued { dropped: 0 }
            );
        }
        assert_eq!(
            queue.push(MESSAGE, None, json("4"), 0),
            Pushed::Queued { dropped: 1 }
        );
        let mut body = Vec::new();
        queue.take(0, &mut body).unwrap();
        assert_eq!(body, b"2");
        // The request in flight holds one byte; 3 and 4 and a new one need more: 3 goes.
        assert_eq!(
            queue.push(MESSAGE, None, json("5"), 0),
            Pushed::Queued { dropped: 1 }
        );
        assert!(queue.bytes() <= 3 * cost);
        let huge = "x".repeat(3 * cost);
        assert_eq!(queue.push(MESSAGE, None, json(&huge), 0), Pushed::Refused);
        queue.finish();
        assert_eq!(take_text(&mut queue, 0).unwrap(), "4");
        assert_eq!(take_text(&mut queue, 0).unwrap(), "5");
    }

    /// Proves a vacated undone by an occupied within its wait is sent not at all, while other
    /// events keep their order, and a pair split by a request already sent is not coalesced.
    #[test]
    fn occupancy_flaps_coalesce() {
        let mut queue = queue(1 << 20, 1);
        queue.push(OCCUPIED, Some(b"A"), json("occupied A"), 0);
        assert_eq!(queue.due_ms(), Some(100), "occupancy events wait");
        assert_eq!(take_text(&mut queue, 100).unwrap(), "occupied A");
        queue.push(VACATED, Some(b"A"), json("vacated A"), 200);
        queue.push(MESSAGE, None, json("m"), 210);
        assert_eq!(
            queue.push(OCCUPIED, Some(b"A"), json("occupied A"), 250),
            Pushed::Coalesced
        );
        assert_eq!(queue.depth(), 1);
        assert_eq!(queue.due_ms(), Some(0));
        assert_eq!(take_text(&mut queue, 250).unwrap(), "m");
        assert_eq!(queue.due_ms(), None);
        assert_eq!(queue.bytes(), 0);
        // The same in the other direction, behind a waiting event of another topic.
        queue.push(VACATED, Some(b"B"), json("vacated B"), 300);
        queue.push(OCCUPIED, Some(b"A"), json("occupied A"), 300);
        queue.push(VACATED, Some(b"A"), json("vacated A"), 350);
        assert_eq!(take_text(&mut queue, 400).unwrap(), "vacated B");
        assert_eq!(take_text(&mut queue, 400), None);
        assert_eq!(queue.bytes(), 0);
        // A state that lasted longer than the wait is reported, although both events waited
        // (as they do behind a request being retried).
        queue.push(OCCUPIED, Some(b"A"), json("occupied A"), 500);
        let pushed = queue.push(VACATED, Some(b"A"), json("vacated A"), 601);
        assert!(matches!(pushed, Pushed::Queued { .. }));
        assert_eq!(take_text(&mut queue, 700).unwrap(), "occupied A");
        assert_eq!(take_text(&mut queue, 800).unwrap(), "vacated A");
    }

    /// Proves an occupancy event dropped for room is forgotten: its opposite then queues.
    #[test]
    fn dropped_occupancy_event_is_forgotten() {
        let mut queue = queue(2 * (10 + ENTRY_OVERHEAD_BYTES), 1);
        queue.push(OCCUPIED, Some(b"A"), json("occupied A"), 0);
        queue.push(MESSAGE, None, json("0123456789"), 0);
        queue.push(MESSAGE, None, json("0123456789"), 0);
        assert_eq!(
            queue.push(VACATED, Some(b"A"), json("vacated A"), 0),
            Pushed::Queued { dropped: 1 }
        );
        assert_eq!(queue.depth(), 2);
        assert_eq!(queue.clear(), 2);
        assert_eq!(queue.bytes(), 0);
    }
}
