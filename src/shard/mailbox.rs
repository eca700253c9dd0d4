//! Cross-shard mailboxes: a bounded lock-free queue per shard and a wake-up through `msg_ring`.
//!
//! A sender pushes a command into the target's queue, then wakes the target's ring with a
//! `msg_ring` completion, but only if no wake-up is already pending: a burst of commands costs one
//! wake-up. The target clears the pending flag before it drains, so a command pushed during the
//! drain brings a fresh wake-up and is never stranded. A full queue is reported to the sender,
//! whose policy decides (push back, count, retry); nothing is dropped here.
//!
//! Each mailbox has two queues. Publishes wait in their own queue, which the owner stops taking
//! from while its own outbox to other shards is full; everything else (deliveries, subscription
//! answers, shutdown) goes in the control queue, which is always drained. Because draining the
//! control queue never waits on anything, two shards pushing back on each other cannot deadlock.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crossbeam_queue::ArrayQueue;
use io_uring::{IoUring, opcode, squeue, types};

use super::ring::{Operation, Tag};
use crate::broker::Command;

/// How many times a waker submits a wake-up the kernel did not take at once (EINTR, EBUSY).
const WAKE_SUBMIT_ATTEMPTS_MAX: usize = 64;

/// One shard's inbox.
pub struct Mailbox {
    control: ArrayQueue<Command>,
    publish: ArrayQueue<Command>,
    wake_pending: AtomicBool,
    /// The target ring's fd, published by the shard once its ring exists (-1 before).
    ring_fd: AtomicI32,
}

impl Mailbox {
    /// A mailbox holding up to `commands_max` commands of each kind.
    pub fn new(commands_max: usize) -> Mailbox {
        Mailbox {
            control: ArrayQueue::new(commands_max),
            publish: ArrayQueue::new(commands_max),
            wake_pending: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
        }
    }

    /// Called by the owning shard once its ring exists.
    pub fn set_ring_fd(&self, ring_fd: RawFd) {
        self.ring_fd.store(ring_fd, Ordering::Release);
    }

    /// Whether the owning shard's ring exists (wake-ups can be sent).
    pub fn has_ring(&self) -> bool {
        self.ring_fd.load(Ordering::Acquire) >= 0
    }

    /// Queues `command`. `Err` hands it back when the mailbox is full.
    /// Returns whether the sender must now send a wake-up (see [`wake_entry`]).
    pub fn push(&self, command: Command) -> Result<bool, Command> {
        if command.is_publish() {
            self.publish.push(command)?;
        } else {
            self.control.push(command)?;
        }
        Ok(!self.wake_pending.swap(true, Ordering::AcqRel))
    }

    /// The `msg_ring` request that wakes the owner, to submit on the sender's own ring. Its own
    /// completion is skipped on success; the target sees an `Operation::Wake` completion.
    pub fn wake_entry(&self) -> squeue::Entry {
        let ring_fd = self.ring_fd.load(Ordering::Acquire);
        assert!(ring_fd >= 0, "woke a shard before its ring existed");
        let user_data = Tag::new(Operation::Wake, 0, 0).encode();
        opcode::MsgRingData::new(types::Fd(ring_fd), 0, user_data, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(user_data)
    }

    /// Called by the owner on every wake-up and every turn, even when the mailbox looks empty:
    /// it clears the wake-up flag, which a wake-up whose commands an earlier drain took would
    /// otherwise leave set, so that no later sender would wake the owner again. Takes up to
    /// `commands_max` control commands, then, if `take_publishes`, up to `commands_max`
    /// publishes.
    pub fn drain(
        &self,
        commands_max: usize,
        take_publishes: bool,
        mut handle: impl FnMut(Command),
    ) {
        self.wake_pending.store(false, Ordering::Release);
        for _ in 0..commands_max {
            let Some(command) = self.control.pop() else {
                break;
            };
            handle(command);
        }
        for _ in 0..if take_publishes { commands_max } else { 0 } {
            let Some(command) = self.publish.pop() else {
                break;
            };
            handle(command);
        }
        // More remain than one turn may take: make sure the owner looks again (it checks
        // `has_commands` every turn, so no wake-up is needed from senders meanwhile).
        if self.has_commands() {
            self.wake_pending.store(true, Ordering::Release);
        }
    }

    /// Whether commands wait (the owner checks this each turn when a drain was cut short).
    pub fn has_commands(&self) -> bool {
        !self.control.is_empty() || !self.publish.is_empty()
    }

    /// Commands waiting, of both kinds.
    pub fn depth(&self) -> usize {
        self.control.len() + self.publish.len()
    }
}

/// Why [`Waker::send`] did not deliver a command.
#[derive(Debug)]
pub enum WakeError {
    /// The mailbox is full; the command is handed back for the caller to retry or refuse.
    Full(Command),
    /// The wake-up could not be submitted (the waker's own ring failed); the command is queued
    /// and the shard takes it at its next turn, but may not wake for it.
    Submit(io::Error),
}

impl std::fmt::Display for WakeError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WakeError::Full(_) => write!(formatter, "the shard's mailbox is full"),
            WakeError::Submit(error) => write!(formatter, "waking the shard failed: {error}"),
        }
    }
}

/// Wakes shards from a thread that has no shard ring (the main thread): it owns a small ring of
/// its own, used only for `msg_ring`.
pub struct Waker {
    ring: IoUring,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        Ok(Waker {
            ring: IoUring::new(8)?,
        })
    }

    /// Pushes `command` to `mailbox` and wakes its shard. Never blocks: the wake-up's own
    /// completion is skipped on success (waiting for it hung here: with a SINGLE_ISSUER target
    /// the kernel runs the message on the target's task, and the sender's completion was not
    /// seen by a blocking wait on this plain ring). A failed wake-up does post a completion,
    /// which the next call reports.
    pub fn send(&mut self, mailbox: &Mailbox, command: Command) -> Result<(), WakeError> {
        self.report_failed_wakes();
        if mailbox.push(command).map_err(WakeError::Full)? {
            let entry = mailbox.wake_entry();
            // SAFETY: a msg_ring entry points at no memory of ours.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.submit().map_err(WakeError::Submit)?;
            }
            // A wake-up left in the queue (a signal cut the submit short) would only go with the
            // next send, and a shutdown has none: submit until the kernel took it.
            for _ in 0..WAKE_SUBMIT_ATTEMPTS_MAX {
                self.submit().map_err(WakeError::Submit)?;
                if self.ring.submission().is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            // A signal, or completions to reap first: the entry stays queued; the next submit
            // takes it.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {
                self.report_failed_wakes();
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn report_failed_wakes(&mut self) {
        for completion in self.ring.completion() {
            tracing::error!(errno = -completion.result(), "waking a shard failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ring::{Completion, Ring};
    use std::sync::Arc;

    /// Proves a full mailbox hands the command back instead of dropping it.
    #[test]
    fn full_mailbox_refuses() {
        let mailbox = Mailbox::new(2);
        assert_eq!(
            mailbox.push(Command::Shutdown).ok(),
            Some(true),
            "first push wakes"
        );
        assert_eq!(
            mailbox.push(Command::Shutdown).ok(),
            Some(false),
            "a wake is pending"
        );
        assert!(matches!(
            mailbox.push(Command::Shutdown),
            Err(Command::Shutdown)
        ));
        let mut drained = 0;
        mailbox.drain(10, true, |_| drained += 1);
        assert_eq!(drained, 2);
        assert_eq!(
            mailbox.push(Command::Shutdown).ok(),
            Some(true),
            "drained: wake again"
        );
    }

    /// Proves no command is stranded when the owner drains only on wake-ups (never polls):
    /// a producer thread pushes in bursts while the owner drains whenever a wake-up arrives,
    /// including wake-ups whose commands an earlier drain already took. Every command must be
    /// taken, and the owner must not be left waiting with commands queued.
    #[test]
    fn wake_driven_draining_strands_nothing() {
        const COMMANDS: usize = 200_000;
        let mailbox = Arc::new(Mailbox::new(64));
        let (wake_sender, wake_receiver) = std::sync::mpsc::channel::<()>();
        let producer_mailbox = Arc::clone(&mailbox);
        let producer = std::thread::spawn(move || {
            let mut pushed = 0;
            while pushed < COMMANDS {
                match producer_mailbox.push(Command::Shutdown) {
                    Ok(wake) => {
                        pushed += 1;
                        if wake {
                            wake_sender.send(()).unwrap();
                        }
                    }
                    // Full: let the owner catch up (it was woken for what is queued).
                    Err(_) => std::thread::yield_now(),
                }
            }
        });
        let mut taken = 0;
        while taken < COMMANDS {
            // A lost wake-up shows as no wake-up while commands wait: fail, don't hang.
            let woken = wake_receiver.recv_timeout(std::time::Duration::from_secs(10));
            assert!(
                woken.is_ok() || !mailbox.has_commands(),
                "commands wait and no wake-up came: {taken} taken"
            );
            mailbox.drain(1024, true, |_| taken += 1);
            // A drain cut short leaves the flag set: the owner looks again without a wake-up.
            while mailbox.has_commands() {
                mailbox.drain(1024, true, |_| taken += 1);
            }
        }
        producer.join().unwrap();
        assert_eq!(taken, COMMANDS);
    }

    /// Proves a shard-style ring (SINGLE_ISSUER, DEFER_TASKRUN) blocked in a wait with no
    /// timeout of its own is woken by `Waker::send` from another thread, burst after burst,
    /// and that a burst of commands costs one wake-up. The owner drains on every turn, as the
    /// shard does; a drain that left the wake-up flag set on an empty mailbox (the lost wake-up
    /// of c0f0625's history) would leave it blocked, and the bounded wait fails the test.
    #[test]
    fn a_wake_up_queued_in_a_shards_last_turn_still_goes_out() {
        // Regression: a shard's last turn freed a connection whose unsubscribe went to another
        // shard; the shard then left its loop with the wake-up still in its submission queue.
        // The target kept its wake-up flag set, slept, and never heard of the shutdown.
        let target = Ring::new(8).unwrap();
        let mailbox = Mailbox::new(8);
        mailbox.set_ring_fd(target.raw_fd());
        let mut target = target;
        let mut exiting = Ring::new(8).unwrap();
        assert!(
            mailbox.push(Command::Shutdown).unwrap(),
            "a wake-up is owed"
        );
        // SAFETY: a msg_ring entry points at no memory.
        unsafe { exiting.push(&mailbox.wake_entry()) }.unwrap();
        exiting.submit_before_exit().unwrap();
        drop(exiting);
        target
            .submit_and_wait(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut batch: Vec<Completion> = Vec::with_capacity(4);
        target.harvest(&mut batch);
        assert_eq!(batch.len(), 1, "the target was woken");
        assert_eq!(
            Tag::decode(batch[0].user_data).unwrap().operation,
            Operation::Wake
        );
    }

    #[test]
    fn waker_wakes_a_blocked_ring() {
        const BURSTS: usize = 200;
        const BURST_COMMANDS: usize = 5;
        let mailbox = Arc::new(Mailbox::new(64));
        let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
        let (drained_sender, drained_receiver) = std::sync::mpsc::channel();
        let shard_mailbox = Arc::clone(&mailbox);
        let shard = std::thread::spawn(move || {
            let mut ring = Ring::new(8).unwrap();
            shard_mailbox.set_ring_fd(ring.raw_fd());
            ready_sender.send(()).unwrap();
            let (mut wakes, mut commands) = (0, 0);
            let mut batch: Vec<Completion> = Vec::with_capacity(16);
            while commands < BURSTS * BURST_COMMANDS {
                // Bounded: a lost wake-up fails the test instead of hanging it.
                ring.submit_and_wait(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                batch.clear();
                ring.harvest(&mut batch);
                assert!(
                    !batch.is_empty(),
                    "no wake-up within 10 s: {commands} taken"
                );
                for completion in &batch {
                    assert_eq!(
                        Tag::decode(completion.user_data).unwrap().operation,
                        Operation::Wake
                    );
                    wakes += 1;
                }
                let before = commands;
                shard_mailbox.drain(64, true, |_| commands += 1);
                if commands > before {
                    drained_sender.send(commands).unwrap();
                }
            }
            wakes
        });
        ready_receiver.recv().unwrap();
        let mut waker = Waker::new().unwrap();
        let mut sent = 0;
        for _ in 0..BURSTS {
            // A burst pushed at once, then wait until the owner took it, so that every burst
            // finds the owner blocked again.
            for _ in 0..BURST_COMMANDS {
                waker.send(&mailbox, Command::Shutdown).unwrap();
                sent += 1;
            }
            while drained_receiver
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the owner took nothing within 10 s")
                < sent
            {}
        }
        let wakes = shard.join().unwrap();
        assert!(
            (BURSTS..=BURSTS * BURST_COMMANDS).contains(&wakes),
            "{wakes} wake-ups for {BURSTS} bursts"
        );
    }
}
