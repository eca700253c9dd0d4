//! The shard's side of the broker: carrying out its connections' requests, handling commands
//! from other shards, delivering messages to subscribers under the slow-consumer policy, and
//! pushing back on publishers when other shards' mailboxes are full.
//!
//! Commands to another shard go into its mailbox, or, when that is full, into this shard's
//! outbox for it, in order; commands to this shard itself go through `local_commands`, so a
//! topic owned here follows exactly the same path as one owned elsewhere.

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;
use tracing::debug;

use super::Shard;
use super::connection::{BrokerRequest, Closing, Connection, Context, Phase, Subscription};
use super::mailbox::{Command, PublishReply};
use crate::broker::message::{
    encode_reset, encode_subscribed, encode_topic_error, encode_unsubscribed,
};
use crate::broker::owner::{OwnerError, SubscribeAnswer};
use crate::broker::subscribers::{POSITION_PENDING, SubscriberTable};
use crate::broker::{ConnectionRef, owner_shard};
use crate::config::SlowConsumerPolicy;
use crate::protocol::CloseCode;

/// Outbox queues per target shard: control commands, publishes.
pub type Outbox = [VecDeque<Command>; 2];

/// Commands handled from `local_commands` per turn (they can beget more: a subscription's
/// answer can beget an unsubscribe).
const LOCAL_COMMANDS_PER_TURN_MAX: usize = 64 * 1024;

impl Shard {
    /// Carries out the broker requests the last read of `slot` produced.
    pub(super) fn handle_broker_requests(&mut self, slot: u32) -> io::Result<()> {
        let mut requests = std::mem::take(&mut self.context.broker_requests);
        for request in requests.drain(..) {
            match request {
                BrokerRequest::Publish {
                    message,
                    topic_bytes,
                } => self.publish_from(slot, message, topic_bytes, None)?,
                BrokerRequest::Subscribe { topic, since } => self.subscribe(slot, topic, since)?,
                BrokerRequest::Unsubscribe { topic } => self.unsubscribe(slot, &topic)?,
                BrokerRequest::HttpPublish {
                    message,
                    topic_bytes,
                    ticket,
                } => self.publish_from(slot, message, topic_bytes, Some(ticket))?,
            }
        }
        self.context.broker_requests = requests;
        if self.outbox_depth > 0 {
            self.pause_publisher(slot)?;
        }
        Ok(())
    }

    /// Sends a publish from `slot` to its topic's owner.
    pub(super) fn publish_from(
        &mut self,
        slot: u32,
        message: Bytes,
        topic_bytes: usize,
        ticket: Option<u32>,
    ) -> io::Result<()> {
        let owner = owner_shard(&message[..topic_bytes], self.mailboxes.len());
        let reply = PublishReply {
            connection: self.connection_ref(slot),
            ticket,
        };
        let command = Command::Publish {
            message,
            topic_bytes,
            reply: Some(reply),
        };
        self.send_command(owner, command)
    }

    fn connection_ref(&self, slot: u32) -> ConnectionRef {
        let generation = self.connections[slot as usize]
            .as_ref()
            .expect("live connection")
            .generation;
        ConnectionRef {
            shard: self.shard_index as u16,
            slot,
            generation,
        }
    }

    fn subscribe(&mut self, slot: u32, topic: Bytes, since: Option<u64>) -> io::Result<()> {
        let subscriptions_max = self.context.config.broker.subscriptions_per_connection_max;
        let connection = self.connections[slot as usize].as_mut().expect("live");
        let existing = self.subscribers.find(&topic).and_then(|index| {
            let subscription = connection
                .subscriptions
                .iter()
                .find(|subscription| subscription.topic == index)?;
            Some((index, subscription.is_pending()))
        });
        let name = std::str::from_utf8(&topic).expect("validated topic");
        match existing {
            // Already subscribed: say so again with the seq it stands at (a replay would
            // duplicate what the connection already got).
            Some((index, false)) => {
                let seq = self.subscribers.last_seq(index);
                let frame = encode_subscribed(&mut self.context.encoder, name, seq);
                connection.outbound.push_control(frame);
                return self.after_activity(slot);
            }
            Some((_, true)) => return Ok(()), // The answer is on its way.
            None if connection.subscriptions.len() >= subscriptions_max => {
                self.context.counters.request_errors += 1;
                let reason = "subscriptions_per_connection_max reached";
                let frame = encode_topic_error(&mut self.context.encoder, reason, name);
                connection.outbound.push_control(frame);
                return self.after_activity(slot);
            }
            None => {}
        }
        let index = self.subscribers.add_pending(&topic);
        connection.subscriptions.push(Subscription {
            topic: index,
            position: POSITION_PENDING,
            conflated: None,
        });
        let owner = owner_shard(&topic, self.mailboxes.len());
        let subscriber = self.connection_ref(slot);
        self.send_command(
            owner,
            Command::Subscribe {
                topic,
                subscriber,
                since,
            },
        )
    }

    fn unsubscribe(&mut self, slot: u32, topic: &Bytes) -> io::Result<()> {
        let name = std::str::from_utf8(topic).expect("validated topic");
        let frame = encode_unsubscribed(&mut self.context.encoder, name);
        self.connection_mut(slot).outbound.push_control(frame);
        if let Some(index) = self.subscribers.find(topic) {
            self.drop_subscription(slot, index)?;
        }
        self.after_activity(slot)
    }

    /// Ends `slot`'s subscription of topic `index`, if it has one, and tells the owner when the
    /// shard has no subscriber of the topic left.
    fn drop_subscription(&mut self, slot: u32, index: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize].as_mut().expect("live");
        let Some(at) = connection
            .subscriptions
            .iter()
            .position(|subscription| subscription.topic == index)
        else {
            return Ok(());
        };
        let subscription = connection.subscriptions.swap_remove(at);
        if subscription.conflated.is_some() {
            connection.conflated_count -= 1;
        }
        if !subscription.is_pending() {
            let moved = self.subscribers.deactivate(index, subscription.position);
            if let Some(moved_slot) = moved {
                let moved = self.connections[moved_slot as usize]
                    .as_mut()
                    .expect("live");
                let record = moved
                    .subscriptions
                    .iter_mut()
                    .find(|record| record.topic == index)
                    .expect("a subscriber records its subscription");
                record.position = subscription.position;
            }
        }
        self.release_if_unused(index)
    }

    fn release_if_unused(&mut self, index: u32) -> io::Result<()> {
        if !self.subscribers.is_unused(index) {
            return Ok(());
        }
        let topic = self.subscribers.release(index);
        let owner = owner_shard(&topic, self.mailboxes.len());
        let shard = self.shard_index as u16;
        self.send_command(owner, Command::Unsubscribe { topic, shard })
    }

    /// Ends every subscription of a connection being freed.
    pub(super) fn drop_all_subscriptions(&mut self, slot: u32) -> io::Result<()> {
        while let Some(index) = self.connections[slot as usize]
            .as_ref()
            .and_then(|connection| connection.subscriptions.last())
            .map(|subscription| subscription.topic)
        {
            self.drop_subscription(slot, index)?;
        }
        Ok(())
    }

    /// Sends `command` to shard `target`: itself, its mailbox, or the outbox when the mailbox is
    /// full or older commands already wait there (order is kept per target and kind).
    pub(super) fn send_command(&mut self, target: usize, command: Command) -> io::Result<()> {
        if target == self.shard_index {
            self.local_commands.push_back(command);
            return Ok(());
        }
        let kind = usize::from(matches!(command, Command::Publish { .. }));
        if !self.outbox[target][kind].is_empty() {
            self.outbox[target][kind].push_back(command);
            self.outbox_depth += 1;
            return Ok(());
        }
        match self.mailboxes[target].push(command) {
            Ok(true) => self.ring.push(&self.mailboxes[target].wake_entry()),
            Ok(false) => Ok(()),
            Err(command) => {
                self.context.counters.mailbox_full += 1;
                self.outbox[target][kind].push_back(command);
                self.outbox_depth += 1;
                Ok(())
            }
        }
    }

    /// Moves what the outbox holds into mailboxes with room, in order.
    pub(super) fn flush_outbox(&mut self) -> io::Result<()> {
        if self.outbox_depth == 0 {
            return Ok(());
        }
        for target in 0..self.outbox.len() {
            for kind in 0..2 {
                while let Some(command) = self.outbox[target][kind].pop_front() {
                    match self.mailboxes[target].push(command) {
                        Ok(wake) => {
                            self.outbox_depth -= 1;
                            if wake {
                                self.ring.push(&self.mailboxes[target].wake_entry())?;
                            }
                        }
                        Err(command) => {
                            self.outbox[target][kind].push_front(command);
                            break;
                        }
                    }
                }
            }
        }
        if self.outbox_depth == 0 {
            self.resume_publishers()?;
        }
        Ok(())
    }

    /// Pauses reading from a publisher while the outbox holds commands: its publishes would
    /// only pile up here. The bytes wait in its socket, so TCP pushes back on it.
    fn pause_publisher(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if connection.publisher_paused || connection.closing != Closing::Open {
            return Ok(());
        }
        connection.publisher_paused = true;
        let generation = connection.generation;
        self.context.counters.publisher_pauses += 1;
        self.publishers_paused.push((slot, generation));
        self.cancel_receive(slot)
    }

    fn resume_publishers(&mut self) -> io::Result<()> {
        while let Some((slot, generation)) = self.publishers_paused.pop() {
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            if connection.generation != generation {
                continue;
            }
            connection.publisher_paused = false;
            if self.wants_receive(slot) {
                self.arm_receive(slot)?;
            }
        }
        Ok(())
    }

    /// Takes the mailbox's commands (publishes only while the outbox has room) and this shard's
    /// own, and carries them out.
    pub(super) fn handle_commands(&mut self) -> io::Result<()> {
        let take_publishes = self.outbox_depth < self.context.config.broker.outbox_commands_max;
        // Drained every turn, even when it looks empty: the drain clears the wake-up flag. A
        // wake-up whose commands an earlier drain already took otherwise left the flag set on
        // an empty mailbox, and every later sender, seeing it set, sent no wake-up: the shard
        // slept with commands waiting until its next timer (seconds).
        let mut commands = std::mem::take(&mut self.commands);
        self.mailboxes[self.shard_index].drain(
            super::COMMANDS_PER_TURN_MAX,
            take_publishes,
            |command| commands.push(command),
        );
        for command in commands.drain(..) {
            self.handle_command(command)?;
        }
        self.commands = commands;
        for _ in 0..LOCAL_COMMANDS_PER_TURN_MAX {
            let Some(command) = self.local_commands.pop_front() else {
                break;
            };
            self.handle_command(command)?;
        }
        Ok(())
    }

    fn handle_command(&mut self, command: Command) -> io::Result<()> {
        match command {
            Command::Shutdown => self.start_shutdown(),
            Command::Broadcast(frame) => self.broadcast(&frame),
            Command::Publish {
                message,
                topic_bytes,
                reply,
            } => self.handle_publish(&message, topic_bytes, reply),
            Command::Subscribe {
                topic,
                subscriber,
                since,
            } => {
                let name = std::str::from_utf8(&topic).expect("validated topic");
                let snapshot = self.context.config.broker.wants_snapshot(name);
                let answer =
                    self.owned
                        .subscribe(&topic, usize::from(subscriber.shard), since, snapshot);
                let command = Command::Subscribed {
                    topic,
                    subscriber,
                    answer,
                };
                self.send_command(usize::from(subscriber.shard), command)
            }
            Command::Unsubscribe { topic, shard } => {
                self.owned.unsubscribe(&topic, usize::from(shard));
                Ok(())
            }
            Command::Deliver { topic, seq, frame } => self.deliver(&topic, seq, &frame),
            Command::Subscribed {
                topic,
                subscriber,
                answer,
            } => self.handle_subscribed(&topic, subscriber, answer),
            Command::Published { reply, result } => self.handle_published(reply, result),
        }
    }

    /// As the topic's owner: numbers the message, keeps it, and sends it to every shard with
    /// subscribers (this one included).
    fn handle_publish(
        &mut self,
        message: &Bytes,
        topic_bytes: usize,
        reply: Option<PublishReply>,
    ) -> io::Result<()> {
        let (topic, data) = message.split_at(topic_bytes);
        let published = self.owned.publish(topic, data, &mut self.context.encoder);
        let result = match published {
            Ok(published) => {
                self.context.counters.messages_published += 1;
                let (name, seq, frame) = (published.name.clone(), published.seq, published.frame);
                self.deliver_targets.clear();
                self.deliver_targets
                    .extend(published.subscriber_shards.iter());
                for index in 0..self.deliver_targets.len() {
                    let target = self.deliver_targets[index];
                    if target == self.shard_index {
                        self.deliver(&name, seq, &frame)?;
                    } else {
                        let command = Command::Deliver {
                            topic: name.clone(),
                            seq,
                            frame: frame.clone(),
                        };
                        self.send_command(target, command)?;
                    }
                }
                Ok(seq)
            }
            Err(error) => Err(error),
        };
        // A WebSocket publish is answered only when refused; an HTTP one always.
        match reply {
            Some(reply) if reply.ticket.is_some() || result.is_err() => {
                let target = usize::from(reply.connection.shard);
                self.send_command(target, Command::Published { reply, result })
            }
            _ => Ok(()),
        }
    }

    /// Queues message `seq` of `topic` to every subscriber on this shard.
    fn deliver(&mut self, topic: &[u8], seq: u64, frame: &Bytes) -> io::Result<()> {
        let Some(index) = self.subscribers.find(topic) else {
            return Ok(()); // The last subscriber left while the message was on its way.
        };
        self.subscribers.set_last_seq(index, seq);
        self.closing_slots.clear();
        deliver_to_subscribers(
            &self.subscribers,
            index,
            frame,
            &mut self.connections,
            &mut self.context,
            &mut self.send_list,
            &mut self.closing_slots,
        );
        for position in 0..self.closing_slots.len() {
            let slot = self.closing_slots[position];
            self.after_activity(slot)?;
        }
        Ok(())
    }

    /// The owner answered a subscription of one of this shard's connections.
    fn handle_subscribed(
        &mut self,
        topic: &Bytes,
        subscriber: ConnectionRef,
        answer: Result<SubscribeAnswer, OwnerError>,
    ) -> io::Result<()> {
        let index = self
            .subscribers
            .find(topic)
            .expect("a pending subscription keeps its topic");
        self.subscribers.answer_arrived(index);
        let slot = subscriber.slot;
        let waiting = self.connections[slot as usize]
            .as_mut()
            .filter(|connection| {
                connection.generation == subscriber.generation
                    && connection.closing == Closing::Open
            })
            .and_then(|connection| {
                connection
                    .subscriptions
                    .iter()
                    .position(|record| record.topic == index && record.is_pending())
            });
        if let Some(at) = waiting {
            let name = std::str::from_utf8(topic).expect("validated topic");
            match answer {
                Ok(answer) => self.activate(slot, at, index, name, answer),
                Err(error) => {
                    let connection = self.connection_mut(slot);
                    connection.subscriptions.swap_remove(at);
                    self.context.counters.request_errors += 1;
                    let frame = encode_topic_error(&mut self.context.encoder, error.reason(), name);
                    self.connection_mut(slot).outbound.push_control(frame);
                }
            }
            self.after_activity(slot)?;
        }
        self.release_if_unused(index)
    }

    /// Puts a connection among a topic's subscribers and queues `subscribed`, then `reset` or
    /// the replay. Replayed frames are queued whatever the queue holds: history bounds them.
    fn activate(&mut self, slot: u32, at: usize, index: u32, name: &str, answer: SubscribeAnswer) {
        let position = self.subscribers.activate(index, slot, answer.latest);
        let encoder = &mut self.context.encoder;
        let connection = self.connections[slot as usize].as_mut().expect("live");
        connection.subscriptions[at].position = position;
        let outbound = &mut connection.outbound;
        outbound.push_control(encode_subscribed(encoder, name, answer.latest));
        if answer.reset {
            self.context.counters.resets += 1;
            outbound.push_control(encode_reset(encoder, name, answer.latest));
        } else if !answer.frames.is_empty() {
            self.context.counters.replays += 1;
            self.context.counters.replayed_messages += answer.frames.len() as u64;
        }
        for frame in answer.frames {
            outbound.push_control(frame);
        }
    }

    /// The owner numbered (or refused) a publish of one of this shard's connections.
    fn handle_published(
        &mut self,
        reply: PublishReply,
        result: Result<u64, OwnerError>,
    ) -> io::Result<()> {
        let slot = reply.connection.slot;
        let Some(connection) = self.connections[slot as usize].as_mut() else {
            return Ok(());
        };
        if connection.generation != reply.connection.generation {
            return Ok(());
        }
        match (reply.ticket, result) {
            (Some(ticket), result) => {
                let result = result.map_err(OwnerError::reason);
                connection.answer_http_publish(ticket, result, &self.context);
            }
            (None, Err(error)) => {
                self.context.counters.request_errors += 1;
                let frame =
                    crate::broker::message::encode_error(&mut self.context.encoder, error.reason());
                connection.outbound.push_control(frame);
            }
            (None, Ok(_)) => {}
        }
        self.after_activity(slot)
    }

    /// Re-queues conflated messages once a connection's queue has drained below half.
    pub(super) fn release_conflated(&mut self, slot: u32) {
        let over_budget = self.context.outbound_over_budget();
        let (bytes_max, frames_max) = (
            self.context.config.outbound_queue_bytes_max,
            self.context.config.outbound_queue_frames_max,
        );
        let connection = self.connection_mut(slot);
        if !over_budget {
            connection.release_conflated(bytes_max, frames_max);
        }
    }
}

/// Queues `frame` to each subscriber of topic `index`, applying the slow-consumer policy to
/// those whose queue is full. Slots whose state changed beyond their queue (closing) are
/// collected for the caller. A plain function over the shard's parts, so that the subscriber
/// list is read while the connections are written.
fn deliver_to_subscribers(
    subscribers: &SubscriberTable,
    index: u32,
    frame: &Bytes,
    connections: &mut [Option<Connection>],
    context: &mut Context,
    send_list: &mut Vec<u32>,
    closing_slots: &mut Vec<u32>,
) {
    let (bytes_max, frames_max) = (
        context.config.outbound_queue_bytes_max,
        context.config.outbound_queue_frames_max,
    );
    let policy = context.config.broker.slow_consumer_policy;
    for &slot in subscribers.subscribers(index) {
        let connection = connections[slot as usize]
            .as_mut()
            .expect("subscribers are live");
        if !connection.takes_messages() {
            continue;
        }
        // While an older message of the topic waits conflated, a newer one replaces it rather
        // than overtaking it in the queue, unless there is room again (a queue that drained
        // with no send left to complete releases its conflated messages here).
        if connection.conflated_count > 0 && holds_conflated(connection, index) {
            if context.outbound_over_budget()
                || !connection.release_conflated(bytes_max, frames_max)
            {
                conflate(connection, index, frame, context);
                continue;
            }
            if !connection.send_listed {
                connection.send_listed = true;
                send_list.push(slot);
            }
        }
        let queued = !context.outbound_over_budget()
            && connection
                .outbound
                .push(frame.clone(), bytes_max, frames_max)
                .is_ok();
        if queued {
            context.outbound_bytes += frame.len() as u64;
            context.counters.deliveries += 1;
            if !connection.send_listed {
                connection.send_listed = true;
                send_list.push(slot);
            }
            continue;
        }
        match policy {
            SlowConsumerPolicy::Drop => context.counters.slow_consumer_drops += 1,
            SlowConsumerPolicy::Conflate => conflate(connection, index, frame, context),
            SlowConsumerPolicy::Disconnect => {
                context.counters.slow_consumer_closes += 1;
                debug!("slow consumer: closing with 1008");
                connection.close_websocket(CloseCode::POLICY_VIOLATION, "slow consumer", context);
                closing_slots.push(slot);
            }
        }
    }
}

fn holds_conflated(connection: &Connection, index: u32) -> bool {
    connection
        .subscriptions
        .iter()
        .any(|subscription| subscription.topic == index && subscription.conflated.is_some())
}

/// Keeps `frame` as the newest undelivered message of its topic for this subscriber; a message
/// it replaces is counted as conflated.
fn conflate(connection: &mut Connection, index: u32, frame: &Bytes, context: &mut Context) {
    let subscription = connection
        .subscriptions
        .iter_mut()
        .find(|subscription| subscription.topic == index)
        .expect("a subscriber records its subscription");
    match subscription.conflated.replace(frame.clone()) {
        Some(_) => context.counters.slow_consumer_conflations += 1,
        None => connection.conflated_count += 1,
    }
    debug_assert!(matches!(connection.phase, Phase::WebSocket { .. }));
}
