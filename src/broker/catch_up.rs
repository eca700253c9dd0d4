//! Clustered: subscriptions that wait for their topic's owner to catch up with the stream.
//!
//! Every node reads the whole JetStream stream with its own consumer, so at any instant one
//! node may have read a few messages more than another. A client that fails over from a node
//! that had read further asks this one to resume after a `since` its owner has not read yet.
//! Answering at once would be a `reset` although nothing is lost: the node is only behind by
//! the time its consumer takes. The owner holds such a subscription instead, until it has read
//! up to `since` (then answers it as any other: nothing to replay, or the replay of what it
//! read past `since`, so no gap and no duplicate), or until `nats_catch_up_ms` passed (then
//! `reset`: `since` was never published in this epoch, or the node cannot read the stream).
//! At most `nats_catch_up_subscriptions_max` wait on a shard; past it a subscription is
//! answered at once. Each outcome is counted (`cluster_catch_ups{outcome}`).

use std::collections::{HashMap, VecDeque};

use super::command::ClientRef;
use super::owner::Since;
use super::topic::TopicName;

/// A subscription held until its topic's owner has read up to `since`.
#[derive(Debug)]
pub struct Waiting {
    pub topic: TopicName,
    pub subscriber: ClientRef,
    pub since: Since,
    /// When it is answered whatever the owner has read (the shard's clock).
    until_ms: u64,
}

/// The subscriptions one owner holds, in the order they came: all wait the same time, so the
/// first is always the first due.
#[derive(Debug, Default)]
pub struct CatchUp {
    waiting: VecDeque<Waiting>,
    /// Per topic with held subscriptions, the lowest `since` among them: a message below it
    /// lets none go, so reading the stream looks through the held ones only when one can
    /// leave (a client holding many with a `since` far ahead costs the stream's reading
    /// nothing).
    lowest_since: HashMap<TopicName, u64>,
    wait_ms: u64,
    waiting_max: usize,
}

impl CatchUp {
    /// Holds at most `waiting_max` subscriptions, each for at most `wait_ms`.
    pub fn new(wait_ms: u64, waiting_max: usize) -> CatchUp {
        CatchUp {
            waiting: VecDeque::with_capacity(waiting_max.min(64)),
            lowest_since: HashMap::new(),
            wait_ms,
            waiting_max,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Holds the subscription, or gives it back when `waiting_max` already wait.
    pub fn hold(
        &mut self,
        topic: TopicName,
        subscriber: ClientRef,
        since: Since,
        now_ms: u64,
    ) -> Result<(), (TopicName, ClientRef, Since)> {
        if self.waiting.len() >= self.waiting_max {
            return Err((topic, subscriber, since));
        }
        let lowest = self.lowest_since.entry(topic.clone()).or_insert(u64::MAX);
        *lowest = (*lowest).min(since.seq);
        self.waiting.push_back(Waiting {
            topic,
            subscriber,
            since,
            until_ms: now_ms.saturating_add(self.wait_ms),
        });
        Ok(())
    }

    /// Takes the subscriptions of `topic` whose `since` the owner has now read (its latest
    /// seq is `latest`), in the order they came.
    pub fn take_caught_up(&mut self, topic: &TopicName, latest: u64, out: &mut Vec<Waiting>) {
        if self
            .lowest_since
            .get(topic)
            .is_none_or(|&lowest| latest < lowest)
        {
            return;
        }
        let mut index = 0;
        while index < self.waiting.len() {
            let waiting = &self.waiting[index];
            if waiting.topic == *topic && waiting.since.seq <= latest {
                out.extend(self.waiting.remove(index));
            } else {
                index += 1;
            }
        }
        self.recount(std::slice::from_ref(topic));
    }

    /// Makes `lowest_since` right again for `topics`, after some of their subscriptions left.
    fn recount(&mut self, topics: &[TopicName]) {
        for topic in topics {
            let lowest = self
                .waiting
                .iter()
                .filter(|waiting| waiting.topic == *topic)
                .map(|waiting| waiting.since.seq)
                .min();
            match lowest {
                Some(lowest) => self.lowest_since.insert(topic.clone(), lowest),
                None => self.lowest_since.remove(topic),
            };
        }
    }

    /// Takes the subscriptions that waited their time by `now_ms`.
    pub fn take_due(&mut self, now_ms: u64, out: &mut Vec<Waiting>) {
        let taken_before = out.len();
        while self
            .waiting
            .front()
            .is_some_and(|waiting| waiting.until_ms <= now_ms)
        {
            out.extend(self.waiting.pop_front());
        }
        let mut topics: Vec<TopicName> = out[taken_before..]
            .iter()
            .map(|waiting| waiting.topic.clone())
            .collect();
        topics.dedup();
        self.recount(&topics);
    }

    /// Takes every subscription (the epoch changed: each is answered at once).
    pub fn take_all(&mut self, out: &mut Vec<Waiting>) {
        out.extend(self.waiting.drain(..));
        self.lowest_since.clear();
    }

    /// When the first held subscription is due, if any is held.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.waiting.front().map(|waiting| waiting.until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::topic::Epoch;
    use bytes::Bytes;

    fn topic(name: &'static str) -> TopicName {
        TopicName::new(Bytes::from_static(name.as_bytes()), 64).unwrap()
    }

    fn client(slot: u32) -> ClientRef {
        ClientRef {
            shard: 0,
            slot,
            generation: 1,
        }
    }

    fn since(seq: u64) -> Since {
        Since {
            seq,
            epoch: Some(Epoch(7)),
        }
    }

    /// Proves subscriptions leave when their topic reaches their `since`, or when due, in the
    /// order they came, and that no more than the limit wait.
    #[test]
    fn held_until_caught_up_or_due() {
        let mut catch_up = CatchUp::new(100, 3);
        assert_eq!(catch_up.next_due_ms(), None);
        catch_up.hold(topic("A"), client(1), since(5), 0).unwrap();
        catch_up.hold(topic("B"), client(2), since(5), 10).unwrap();
        catch_up.hold(topic("A"), client(3), since(7), 20).unwrap();
        assert!(catch_up.hold(topic("A"), client(4), since(6), 30).is_err());
        assert_eq!(catch_up.next_due_ms(), Some(100));

        assert_eq!(catch_up.lowest_since[&topic("A")], 5);
        let mut out = Vec::new();
        catch_up.take_caught_up(&topic("A"), 4, &mut out);
        assert!(out.is_empty());
        catch_up.take_caught_up(&topic("A"), 6, &mut out);
        let slots: Vec<u32> = out
            .drain(..)
            .map(|waiting| waiting.subscriber.slot)
            .collect();
        assert_eq!(slots, [1]);
        assert_eq!(catch_up.lowest_since[&topic("A")], 7, "the next lowest");
        assert_eq!(catch_up.next_due_ms(), Some(110));

        catch_up.take_due(109, &mut out);
        assert!(out.is_empty());
        catch_up.take_due(120, &mut out);
        let slots: Vec<u32> = out
            .drain(..)
            .map(|waiting| waiting.subscriber.slot)
            .collect();
        assert_eq!(slots, [2, 3]);
        assert!(catch_up.is_empty());

        assert!(
            catch_up.lowest_since.is_empty(),
            "{:?}",
            catch_up.lowest_since
        );

        catch_up.hold(topic("C"), client(5), since(1), 200).unwrap();
        catch_up.take_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(catch_up.next_due_ms(), None);
        assert!(catch_up.lowest_since.is_empty());
    }
}
