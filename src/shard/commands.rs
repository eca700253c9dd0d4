//! Carrying the broker's work: the requests a read produced, the commands from the mailbox,
//! and the commands the broker makes for shards, which go into their mailboxes, or, when one is
//! full, into this shard's outbox for it, in order.
//!
//! Commands for this shard itself are handed straight back to the broker, in the order they
//! were made, so a topic owned here follows exactly the same path as one owned elsewhere and no
//! queue of local commands builds up between turns.
//!
//! # How far the outbox grows
//! While the outbox holds anything, every client whose read produced requests stops being read
//! (its socket pushes back on it), and once it holds `outbox_commands_max` commands the shard
//! stops taking publishes from its mailbox. Control commands are always taken (so that shards
//! pushing back on each other cannot deadlock), and each begets at most one command for another
//! shard (a subscription's answer, a release of a topic), so the outbox overshoots its limit by
//! at most what the requests already in flight beget.

use std::collections::VecDeque;
use std::io;

use super::clients::shard_clients;
use super::{COMMANDS_PER_TURN_MAX, Shard};
use crate::broker::Command;

/// Outbox queues per target shard: control commands, publishes.
pub type Outbox = [VecDeque<Command>; 2];

impl Shard {
    /// Carries out the broker requests the last read of `slot` produced.
    pub(super) fn handle_requests(&mut self, slot: u32) -> io::Result<()> {
        let mut requests = std::mem::take(&mut self.context.requests);
        for request in requests.drain(..) {
            let mut clients = shard_clients!(self);
            self.fanout.handle_request(slot, request, &mut clients);
        }
        self.context.requests = requests;
        self.after_broker()?;
        if self.outbox_depth > 0 {
            self.pause_publisher(slot)?;
        }
        Ok(())
    }

    /// Takes the mailbox's commands (publishes only while the outbox has room) and carries them
    /// out.
    pub(super) fn handle_commands(&mut self) -> io::Result<()> {
        let take_publishes = self.outbox_depth < self.config.broker.outbox_commands_max;
        // Drained every turn, even when it looks empty: the drain clears the wake-up flag. A
        // wake-up whose commands an earlier drain already took otherwise left the flag set on
        // an empty mailbox, and every later sender, seeing it set, sent no wake-up: the shard
        // slept with commands waiting until its next timer (seconds).
        let mut commands = std::mem::take(&mut self.commands);
        self.mailboxes[self.shard_index].drain(COMMANDS_PER_TURN_MAX, take_publishes, |command| {
            commands.push(command)
        });
        for command in commands.drain(..) {
            match command {
                Command::Shutdown => self.start_shutdown()?,
                Command::ToSession {
                    session,
                    carrier,
                    request,
                } => self.handle_session_request(session, carrier, request)?,
                Command::ToCarrier { carrier, answer } => {
                    self.handle_carrier_answer(carrier, answer)?
                }
                command => {
                    let mut clients = shard_clients!(self);
                    self.fanout.handle_command(command, &mut clients);
                    self.after_broker()?;
                }
            }
        }
        self.commands = commands;
        Ok(())
    }

    /// Once per turn: the broker releases what it held for clients whose queues drained.
    pub(super) fn handle_turn(&mut self) -> io::Result<()> {
        let mut clients = shard_clients!(self);
        self.fanout.handle_turn(&mut clients);
        self.after_broker()
    }

    /// After the broker decided: commands for this shard go back to it, others to their
    /// shards; connections it closed or answered walk on.
    pub(super) fn after_broker(&mut self) -> io::Result<()> {
        self.send_broker_commands()?;
        // Clustered: a publish the bridge's feed had no room for is answered (503) by a
        // command of its own.
        if self.forward_cluster_publishes() {
            self.send_broker_commands()?;
        }
        while let Some(slot) = self.touched.pop() {
            if self.connections[slot as usize].is_some() {
                self.after_activity(slot)?;
            }
        }
        self.forward_events();
        Ok(())
    }

    /// Carries the broker's commands: this shard's own to it, others to their shards.
    fn send_broker_commands(&mut self) -> io::Result<()> {
        while let Some((target, command)) = self.fanout.poll_command() {
            if target == self.shard_index {
                let mut clients = shard_clients!(self);
                self.fanout.handle_command(command, &mut clients);
            } else {
                self.send_command(target, command)?;
            }
        }
        Ok(())
    }

    /// Clustered: hands the publishes this shard checked as their topic's owner to the NATS
    /// bridge's feed. Returns whether one was refused for a full feed (its answer is then
    /// among the broker's commands).
    fn forward_cluster_publishes(&mut self) -> bool {
        let Some(feed) = &self.cluster_feed else {
            return false;
        };
        let mut refused = false;
        while let Some(publish) = self.fanout.poll_cluster_publish() {
            match feed.push(publish) {
                Ok(()) => self.cluster_pushed = true,
                Err(publish) => {
                    self.fanout.refuse_cluster_publish(publish);
                    refused = true;
                }
            }
        }
        refused
    }

    /// Hands the events the broker decided to the webhook thread's feed (nothing is decided
    /// when no webhook is configured).
    pub(super) fn forward_events(&mut self) {
        let Some(feed) = &self.event_feed else {
            return;
        };
        while let Some(event) = self.fanout.poll_event() {
            feed.push(event);
            self.events_pushed = true;
        }
    }

    /// Sends `command` to shard `target`'s mailbox, or to the outbox when the mailbox is full
    /// or older commands already wait there (order is kept per target and kind).
    pub(super) fn send_command(&mut self, target: usize, command: Command) -> io::Result<()> {
        let kind = usize::from(command.is_publish());
        if !self.outbox[target][kind].is_empty() {
            self.outbox[target][kind].push_back(command);
            self.outbox_depth += 1;
            return Ok(());
        }
        match self.mailboxes[target].push(command) {
            Ok(true) => self.wake(target),
            Ok(false) => Ok(()),
            Err(command) => {
                self.counters.mailbox_full += 1;
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
                                self.wake(target)?;
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

    fn wake(&mut self, target: usize) -> io::Result<()> {
        let entry = self.mailboxes[target].wake_entry();
        // SAFETY: a msg_ring entry points at no memory of ours.
        unsafe { self.ring.push(&entry) }
    }
}
