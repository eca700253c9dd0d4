//! The way events leave a shard: a bounded lock-free queue per shard (crossbeam's
//! `ArrayQueue`, allocated at start-up), read by the egress thread.
//!
//! A shard never waits and never allocates here. When its feed is full (the egress thread is
//! far behind), the push replaces the oldest event waiting, which is counted
//! (`webhook_feed_drops{shard}`); the newest facts are the ones worth delivering late.
//!
//! Waking: the egress thread takes events every [`INTAKE_INTERVAL`] while they keep coming,
//! and sleeps when a look finds every feed empty, saying so in [`IntakeSignal`]. A shard that
//! pushed during a turn wakes it at the end of the turn only if it sleeps, so a busy shard pays
//! an atomic load per turn, and a wake-up (a futex) costs at most one per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::broker::Event;

/// How often the egress thread takes events while they keep coming: short against any
/// `batch_wait_ms` worth setting, long enough that a steady flow costs few wake-ups.
pub const INTAKE_INTERVAL: Duration = Duration::from_millis(1);

/// Whether the egress thread sleeps waiting for events, and the means to wake it.
#[derive(Debug, Default)]
pub struct IntakeSignal {
    sleeping: AtomicBool,
    notify: Notify,
}

impl IntakeSignal {
    /// Marks the intake asleep. It must look at every feed once more afterwards, then wait.
    pub fn going_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Waits for a shard's wake-up (returns at once if one came since the last wait).
    pub async fn sleep(&self) {
        self.notify.notified().await;
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// The intake found events after all: it does not sleep.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Wakes the intake if it sleeps (a feed's producer, once per turn that pushed).
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }
}

/// One shard's feed of events to the egress thread.
#[derive(Debug)]
pub struct EventFeed {
    queue: ArrayQueue<Event>,
    drops: AtomicU64,
    signal: Arc<IntakeSignal>,
}

impl EventFeed {
    /// A feed holding up to `events_max` events (at least 1).
    pub fn new(events_max: usize, signal: Arc<IntakeSignal>) -> EventFeed {
        EventFeed {
            queue: ArrayQueue::new(events_max.max(1)),
            drops: AtomicU64::new(0),
            signal,
        }
    }

    /// Queues an event; when the feed is full the oldest waiting event goes, counted.
    pub fn push(&self, event: Event) {
        if self.queue.force_push(event).is_some() {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wakes the egress thread if it sleeps: once per shard turn that pushed anything.
    pub fn wake(&self) {
        self.signal.wake();
    }

    /// The oldest waiting event (the egress thread's side).
    pub fn pop(&self) -> Option<Event> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Events dropped because the feed was full.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::TopicName;

    fn event(name: &str) -> Event {
        Event::TopicOccupied {
            topic: TopicName::copy_from(name.as_bytes(), 16).unwrap(),
        }
    }

    /// Proves a full feed keeps the newest events and counts the oldest it dropped.
    #[test]
    fn full_feed_drops_the_oldest() {
        let feed = EventFeed::new(2, Arc::default());
        for name in ["A", "B", "C"] {
            feed.push(event(name));
        }
        assert_eq!(feed.drops(), 1);
        assert_eq!(feed.pop(), Some(event("B")));
        assert_eq!(feed.pop(), Some(event("C")));
        assert!(feed.is_empty());
    }

    /// Proves a wake-up reaches only a sleeping intake, and one sent between its last look
    /// and its wait is not lost.
    #[test]
    fn wake_reaches_a_sleeping_intake() {
        let signal = Arc::new(IntakeSignal::default());
        let feed = EventFeed::new(4, Arc::clone(&signal));
        feed.wake();
        assert!(
            !signal.sleeping.load(Ordering::SeqCst),
            "awake: nothing to do"
        );
        signal.going_to_sleep();
        feed.push(event("A"));
        feed.wake();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), signal.sleep())
                .await
                .expect("the wake-up was kept for the wait");
        });
    }
}
