//! Each shard's bounded lock-free queue of publishes to the NATS bridge (crossbeam's
//! `ArrayQueue`, allocated at start-up), with the bridge's wake-up.
//!
//! Unlike the webhook feed, nothing is dropped here: a publish that finds the queue full is
//! handed back to the shard, whose broker answers its publisher 503
//! (`cluster_publish_failures{reason="queue_full"}`, counted here). A shard never waits and never
//! allocates here; the bridge is woken at most once per shard turn, only when it sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::broker::ClusterPublish;
use crate::egress::feed::IntakeSignal;

/// One shard's publishes waiting for the bridge.
#[derive(Debug)]
pub struct PublishFeed {
    queue: ArrayQueue<ClusterPublish>,
    signal: Arc<IntakeSignal>,
    /// Publishes handed back because the queue was full (an atomic touched only then).
    refusals: AtomicU64,
}

impl PublishFeed {
    /// A feed holding up to `publishes_max` publishes (at least 1).
    pub fn new(publishes_max: usize, signal: Arc<IntakeSignal>) -> PublishFeed {
        PublishFeed {
            queue: ArrayQueue::new(publishes_max.max(1)),
            signal,
            refusals: AtomicU64::new(0),
        }
    }

    /// Queues `publish`, or hands it back when the feed is full.
    pub fn push(&self, publish: ClusterPublish) -> Result<(), ClusterPublish> {
        self.queue.push(publish).inspect_err(|_| {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Wakes the bridge if it sleeps: once per shard turn that pushed anything.
    pub fn wake(&self) {
        self.signal.wake();
    }

    /// The oldest waiting publish (the bridge's side).
    pub fn pop(&self) -> Option<ClusterPublish> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Publishes refused so far because the queue was full.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Publishes waiting.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }
}
