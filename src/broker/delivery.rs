//! One message's way to the subscribers of its topic on a shard, under the slow-consumer policy
//! and the shard's budget, and the broker's record of each client it walks: its subscriptions,
//! the messages conflation holds for it and its replays in progress.

use super::clients::{Clients, QueueLimits, TRANSPORT_COUNT};
use super::config::SlowConsumerPolicy;
use super::counters::BrokerCounters;
use super::message::Message;
use super::subscribers::POSITION_PENDING;
use super::topic::Epoch;
use crate::protocol::CloseCode;
use crate::protocol::prefetch::prefetch;

/// One topic a client subscribes to.
#[derive(Debug)]
pub(super) struct Subscription {
    /// The topic's index in the shard's `SubscriberTable`.
    pub(super) topic: u32,
    /// Where the client sits in the topic's subscriber list; `POSITION_PENDING` until the
    /// owner's answer arrives.
    pub(super) position: u32,
    /// Under the conflate policy, the newest message that did not fit the queue; it replaces
    /// any older one and goes out once the queue drains.
    pub(super) held: Option<Message>,
    /// A replay still coming in pages; live messages wait behind it.
    pub(super) replay: Option<Box<Replay>>,
}

/// A replay in progress: which page comes next. It goes on until a page reaches the topic's
/// latest message; live messages that arrive meanwhile are left out, since history holds them
/// and a later page brings them in order (commands from the owner arrive in the order it sent
/// them, so the last page comes before any message after it).
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) epoch: Epoch,
    pub(super) next: u64,
    /// The next page was asked for and has not come yet.
    pub(super) requested: bool,
}

impl Subscription {
    pub(super) fn is_pending(&self) -> bool {
        self.position == POSITION_PENDING
    }
}

/// The broker's record of one connection slot.
#[derive(Debug, Default)]
pub(super) struct ClientRecord {
    pub(super) generation: u16,
    pub(super) open: bool,
    /// The how-manieth client of this shard it is (from 1): its id in events.
    pub(super) serial: u64,
    pub(super) subscriptions: Vec<Subscription>,
    /// Subscriptions holding a conflated message.
    pub(super) held_count: u32,
    /// Listed in `Fanout::holding`.
    pub(super) listed_holding: bool,
    /// Subscriptions with a replay in progress.
    pub(super) replaying_count: u32,
}

impl ClientRecord {
    /// The record of a slot no client has used yet.
    const UNUSED: ClientRecord = ClientRecord {
        generation: 0,
        open: false,
        serial: 0,
        subscriptions: Vec::new(),
        held_count: 0,
        listed_holding: false,
        replaying_count: 0,
    };
}

/// The broker's records by client slot. Room for every slot is reserved at start-up (so the
/// table never reallocates), but records are written only up to the highest slot used so far,
/// as the shard's connection table is: a shard's slots (connections and long-polling
/// sessions, 32,384 at the million-connection settings) would otherwise write 1.5 MB a shard
/// at start-up, 99 MB of an idle 64-shard server, for clients that may never come. A slot
/// beyond them reads as unused.
#[derive(Debug)]
pub(super) struct ClientRecords {
    records: Vec<ClientRecord>,
}

static UNUSED_RECORD: ClientRecord = ClientRecord::UNUSED;

impl ClientRecords {
    pub(super) fn new(clients_max: usize) -> ClientRecords {
        ClientRecords {
            records: Vec::with_capacity(clients_max),
        }
    }

    /// Starts loading the record of `slot`, which a loop reaches a few steps from now.
    #[inline]
    pub(super) fn prefetch(&self, slot: usize) {
        if slot < self.records.len() {
            prefetch(
                self.records.as_ptr().wrapping_add(slot),
                size_of::<ClientRecord>(),
            );
        }
    }
}

impl std::ops::Index<usize> for ClientRecords {
    type Output = ClientRecord;

    #[inline]
    fn index(&self, slot: usize) -> &ClientRecord {
        match self.records.get(slot) {
            Some(record) => record,
            None => self.unused(slot),
        }
    }
}

/// Inlined, with the rare growth apart: a delivery looks its client up once per subscriber.
impl std::ops::IndexMut<usize> for ClientRecords {
    #[inline]
    fn index_mut(&mut self, slot: usize) -> &mut ClientRecord {
        if slot >= self.records.len() {
            self.write_up_to(slot);
        }
        &mut self.records[slot]
    }
}

impl ClientRecords {
    #[cold]
    #[inline(never)]
    fn unused(&self, slot: usize) -> &'static ClientRecord {
        assert!(
            slot < self.records.capacity(),
            "client slot {slot} out of range"
        );
        &UNUSED_RECORD
    }

    /// Writes the records up to `slot` (unused), within the capacity reserved at start-up:
    /// never reallocates.
    #[cold]
    #[inline(never)]
    fn write_up_to(&mut self, slot: usize) {
        assert!(
            slot < self.records.capacity(),
            "client slot {slot} out of range"
        );
        self.records.resize_with(slot + 1, || ClientRecord::UNUSED);
    }
}

/// One message on its way to the subscribers of its topic on this shard: the policy and the
/// shard's budget, borrowed apart from the subscriber list being walked.
pub(super) struct Delivery<'a> {
    pub(super) message: &'a Message,
    pub(super) topic: u32,
    pub(super) limits: QueueLimits,
    pub(super) policy: SlowConsumerPolicy,
    pub(super) budget_bytes: u64,
    pub(super) holding: &'a mut Vec<u32>,
    pub(super) counters: &'a mut BrokerCounters,
}

impl Delivery<'_> {
    /// Whether the shard is over its budget and this client holds more than an equal share of
    /// it (the budget divided among the queues that hold anything). A reader that keeps up
    /// holds little and is never made to wait for the others.
    fn over_share(&self, slot: u32, clients: &impl Clients) -> bool {
        let memory = clients.memory();
        if memory.bytes <= self.budget_bytes {
            return false;
        }
        let share = self.budget_bytes / u64::from(memory.nonempty_queues.max(1));
        clients.queued_bytes(slot) as u64 >= share
    }

    pub(super) fn reach(
        &mut self,
        slot: u32,
        client: &mut ClientRecord,
        clients: &mut impl Clients,
    ) {
        if !clients.takes_messages(slot) {
            return;
        }
        if client.replaying_count > 0 && self.behind_replay(client) {
            return;
        }
        // While an older message of the topic waits conflated, a newer one replaces it rather
        // than overtaking it in the queue, unless there is room again (a queue that drained
        // with no send left to complete releases its held messages here).
        if client.held_count > 0 && holds(client, self.topic) {
            if !clients.is_within(slot, self.limits.half()) || self.over_share(slot, clients) {
                let transport = clients.transport(slot).min(TRANSPORT_COUNT - 1);
                self.conflate(slot, client, transport);
                return;
            }
            for subscription in &mut client.subscriptions {
                if let Some(message) = subscription.held.take() {
                    clients.push(slot, &message);
                }
            }
            client.held_count = 0;
        }
        let queued =
            !self.over_share(slot, clients) && clients.offer(slot, self.message, self.limits);
        if queued {
            self.counters.deliveries += 1;
            return;
        }
        let transport = clients.transport(slot).min(TRANSPORT_COUNT - 1);
        match self.policy {
            SlowConsumerPolicy::Drop => {
                self.counters.slow_consumer_drops += 1;
                self.counters.slow_consumer_actions_by_transport[transport] += 1;
            }
            SlowConsumerPolicy::Conflate => self.conflate(slot, client, transport),
            SlowConsumerPolicy::Disconnect => {
                self.counters.slow_consumer_closes += 1;
                self.counters.slow_consumer_actions_by_transport[transport] += 1;
                clients.close(slot, CloseCode::POLICY_VIOLATION, "slow consumer");
            }
        }
    }

    /// Whether a replay of the topic is still coming for this client: then the message is left
    /// out, since a later page of the replay brings it, in order.
    fn behind_replay(&self, client: &ClientRecord) -> bool {
        client
            .subscriptions
            .iter()
            .any(|subscription| subscription.topic == self.topic && subscription.replay.is_some())
    }

    /// Keeps the message as the newest undelivered one of its topic for this client; a message
    /// it replaces is counted as conflated.
    fn conflate(&mut self, slot: u32, client: &mut ClientRecord, transport: usize) {
        let subscription = client
            .subscriptions
            .iter_mut()
            .find(|subscription| subscription.topic == self.topic)
            .expect("a subscriber records its subscription");
        match subscription.held.replace(self.message.clone()) {
            Some(_) => {
                self.counters.slow_consumer_conflations += 1;
                self.counters.slow_consumer_actions_by_transport[transport] += 1;
            }
            None => client.held_count += 1,
        }
        if !client.listed_holding {
            client.listed_holding = true;
            self.holding.push(slot);
        }
    }
}

fn holds(client: &ClientRecord, topic: u32) -> bool {
    client
        .subscriptions
        .iter()
        .any(|subscription| subscription.topic == topic && subscription.held.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the records are written only up to the highest slot used, read as unused beyond
    /// it, and never reallocated.
    #[test]
    fn client_records_are_written_only_when_used() {
        let mut records = ClientRecords::new(1000);
        let reserved = records.records.as_ptr();
        assert!(!records[999].open);
        assert_eq!(records.records.len(), 0);
        records[10].open = true;
        records[10].serial = 7;
        assert_eq!(records.records.len(), 11);
        assert!(records[10].open && !records[9].open && !records[500].open);
        records[999].generation = 3;
        assert_eq!(records.records.len(), 1000);
        assert_eq!(records.records.as_ptr(), reserved, "never reallocated");
        assert_eq!(records[10].serial, 7);
    }

    /// Proves a slot past the table is refused rather than grown into.
    #[test]
    #[should_panic(expected = "out of range")]
    fn client_records_refuse_a_slot_past_the_table() {
        let mut records = ClientRecords::new(4);
        records[4].open = true;
    }
}
