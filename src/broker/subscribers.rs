//! The subscriptions held by one shard's connections, by topic.
//!
//! A topic's entry lists the connections (slots) whose subscription is in effect, in a vector
//! that a delivery walks without hashing; removal swaps the last entry into the gap, and the
//! caller fixes the moved connection's recorded position. Subscriptions still waiting for the
//! owner's answer are counted, so that the shard tells the owner it has no more subscribers
//! only when none is in effect and none is on its way.
//!
//! Topic indexes are stable while a topic is in use (connections keep them), so entries live in
//! a slab with a free list.

use std::collections::HashMap;

use super::topic::{Epoch, TopicName};

/// A subscription that waits for the owner's answer has this position.
pub const POSITION_PENDING: u32 = u32::MAX;

#[derive(Debug)]
struct LocalTopic {
    name: TopicName,
    active: Vec<u32>,
    pending: u32,
    /// The seq of the last message delivered here: a repeated subscribe is answered with it.
    last_seq: u64,
    /// The topic's epoch, as the owner's last answer gave it.
    epoch: Epoch,
}

/// One shard's subscriptions.
#[derive(Debug, Default)]
pub struct SubscriberTable {
    index: HashMap<TopicName, u32>,
    /// Entries by topic index; `None` for a freed index waiting in `free`.
    topics: Vec<Option<LocalTopic>>,
    free: Vec<u32>,
    active_count: usize,
}

impl SubscriberTable {
    /// Topics with a subscription in effect or on its way.
    pub fn topic_count(&self) -> usize {
        self.index.len()
    }

    /// Subscriptions in effect.
    pub fn subscription_count(&self) -> usize {
        self.active_count
    }

    pub fn find(&self, name: &[u8]) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The connections subscribed to `topic`.
    pub fn subscribers(&self, topic: u32) -> &[u32] {
        &self.entry(topic).active
    }

    pub fn last_seq(&self, topic: u32) -> u64 {
        self.entry(topic).last_seq
    }

    pub fn epoch(&self, topic: u32) -> Epoch {
        self.entry(topic).epoch
    }

    /// Clustered: the topic's sequence space started anew (JetStream's history was lost): its
    /// seqs count again from 0 in `epoch`.
    pub fn restart(&mut self, topic: u32, epoch: Epoch) {
        let entry = self.entry_mut(topic);
        entry.epoch = epoch;
        entry.last_seq = 0;
    }

    pub fn set_last_seq(&mut self, topic: u32, seq: u64) {
        self.entry_mut(topic).last_seq = seq;
    }

    /// Counts a subscription sent to the owner, creating the topic's entry if needed.
    pub fn add_pending(&mut self, name: &TopicName) -> u32 {
        let topic = match self.find(name.as_bytes()) {
            Some(topic) => topic,
            None => self.create(name),
        };
        self.entry_mut(topic).pending += 1;
        topic
    }

    /// The owner answered one pending subscription of `topic`.
    pub fn answer_arrived(&mut self, topic: u32) {
        let entry = self.entry_mut(topic);
        assert!(entry.pending > 0, "an answer nobody waited for");
        entry.pending -= 1;
    }

    /// Puts `slot` among the topic's subscribers; returns its position.
    pub fn activate(&mut self, topic: u32, slot: u32, seq: u64, epoch: Epoch) -> u32 {
        let entry = self.entry_mut(topic);
        entry.epoch = epoch;
        let position = entry.active.len() as u32;
        entry.active.push(slot);
        // The answer carries the owner's latest seq: nothing older can arrive after it.
        entry.last_seq = entry.last_seq.max(seq);
        self.active_count += 1;
        position
    }

    /// Removes the subscriber at `position`. Returns the slot of the subscriber moved into the
    /// gap (its recorded position is now `position`), if any.
    pub fn deactivate(&mut self, topic: u32, position: u32) -> Option<u32> {
        self.active_count -= 1;
        let entry = self.entry_mut(topic);
        entry.active.swap_remove(position as usize);
        entry.active.get(position as usize).copied()
    }

    /// Whether no subscription of `topic` is in effect or on its way: then the owner is told and
    /// the entry released.
    pub fn is_unused(&self, topic: u32) -> bool {
        let entry = self.entry(topic);
        entry.active.is_empty() && entry.pending == 0
    }

    /// Frees an unused topic's entry; returns its name for the message to the owner.
    pub fn release(&mut self, topic: u32) -> TopicName {
        assert!(self.is_unused(topic));
        let entry = self.topics[topic as usize]
            .take()
            .expect("a topic index in use has an entry");
        self.index.remove(&entry.name);
        self.free.push(topic);
        entry.name
    }

    /// The name of topic `topic`.
    pub fn name(&self, topic: u32) -> &TopicName {
        &self.entry(topic).name
    }

    fn entry(&self, topic: u32) -> &LocalTopic {
        self.topics[topic as usize]
            .as_ref()
            .expect("a topic index in use has an entry")
    }

    fn entry_mut(&mut self, topic: u32) -> &mut LocalTopic {
        self.topics[topic as usize]
            .as_mut()
            .expect("a topic index in use has an entry")
    }

    fn create(&mut self, name: &TopicName) -> u32 {
        // Kept for as long as the topic has subscribers here: a name of its own, not a slice
        // of the request it came in.
        let name = name.to_kept();
        let entry = LocalTopic {
            name: name.clone(),
            active: Vec::new(),
            pending: 0,
            last_seq: 0,
            epoch: Epoch(0),
        };
        let topic = match self.free.pop() {
            Some(topic) => {
                self.topics[topic as usize] = Some(entry);
                topic
            }
            None => {
                self.topics.push(Some(entry));
                (self.topics.len() - 1) as u32
            }
        };
        self.index.insert(name, topic);
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the pending count keeps a topic alive until its answers arrive, and removal
    /// reports the subscriber moved into the gap.
    #[test]
    fn pending_then_active_then_released() {
        let name = |text: &str| TopicName::copy_from(text.as_bytes(), 8).unwrap();
        let mut table = SubscriberTable::default();
        let topic = table.add_pending(&name("A"));
        assert_eq!(table.add_pending(&name("A")), topic);
        table.answer_arrived(topic);
        assert_eq!(table.activate(topic, 7, 3, Epoch(1)), 0);
        assert!(!table.is_unused(topic), "one answer is still on its way");
        table.answer_arrived(topic);
        assert_eq!(table.activate(topic, 9, 3, Epoch(1)), 1);
        assert_eq!(table.subscribers(topic), [7, 9]);
        assert_eq!(table.deactivate(topic, 0), Some(9), "9 moved to position 0");
        assert_eq!(table.deactivate(topic, 0), None);
        assert!(table.is_unused(topic));
        assert_eq!(table.release(topic).as_bytes(), b"A");
        assert_eq!(table.find(b"A"), None);
        let reused = table.add_pending(&name("B"));
        assert_eq!(reused, topic, "the slab reuses the freed entry");
        assert_eq!(table.topic_count(), 1);
    }
}
