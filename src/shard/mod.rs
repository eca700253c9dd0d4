//! One thread and one io_uring per core, owning its sockets end to end.
//!
//! The loop is only a driver (quinn's `ConnectionDriver`, TigerBeetle's `run`): submit what is
//! queued and wait, harvest every ready completion, handle them, hand receive buffers back, fire
//! due timers, submit the sends of every connection that has something to send in one batch,
//! repeat. Protocol decisions live in `protocol` and `connection`; this file only turns them
//! into ring operations and maps every errno the ring can return to a deliberate action.

pub mod buffers;
pub mod connection;
mod fanout;
pub mod http;
pub mod mailbox;
pub mod metrics_board;
pub mod ring;
pub mod timer;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{opcode, types};
use tracing::{debug, info, warn};

use crate::broker::http_api::PublishConfig;
use crate::broker::owner::OwnedTopics;
use crate::broker::subscribers::SubscriberTable;
use crate::config::{RESERVED_FILE_SLOTS, ServerConfig};
use crate::protocol::CloseCode;
use crate::protocol::pool::BufferPool;
use crate::protocol::websocket::frame::{FrameEncoder, OpCode, encode_frame};
use buffers::ReceiveBuffers;
use connection::{Closing, Connection, Context, Counters, Gauges, ShardMetrics};
use fanout::Outbox;
use mailbox::{Command, Mailbox};
use metrics_board::{MetricsBoard, MetricsView};
use ring::{Completion, Operation, Ring, Tag};
use timer::TimerWheel;

/// The registered-file slot of the shard's listener (outside the allocation range).
const LISTENER_SLOT: u32 = 0;
/// Submission queue entries per ring. Submissions beyond it are flushed early, never dropped.
const SUBMISSION_ENTRIES: u32 = 4096;
/// Completions handled per turn; the rest wait in the (four times larger) completion queue.
const COMPLETIONS_PER_TURN_MAX: usize = 4 * SUBMISSION_ENTRIES as usize;
/// Commands taken from the mailbox per turn, so a flood cannot starve the sockets.
const COMMANDS_PER_TURN_MAX: usize = 1024;
/// Timer wheel granularity and size: 10 ms ticks over 1024 slots (a 10 s span; longer
/// deadlines go round again).
const TIMER_TICK_MS: u64 = 10;
const TIMER_SLOT_COUNT: usize = 1024;
/// Gathered sends in flight at once per shard; a connection beyond it sends one frame at a time.
const SEND_SLOTS_MAX: usize = 1024;
/// Chunk size of the shard's frame encoder: one allocation serves many small frames, and a
/// chunk whose frames have all been sent is reused.
const ENCODER_ARENA_BYTES: usize = 64 * 1024;
/// The buffer group id of the receive pool.
const RECEIVE_GROUP_ID: u16 = 0;
/// Deadlines fired per turn (the rest fire next turn).
const EXPIRED_PER_TURN_MAX: usize = 4096;
/// How often a shard sums the bytes queued to its connections, for `GET /metrics` and its
/// queue budget: a walk over at most ~20,000 connections, tens of microseconds.
const OUTBOUND_SUM_INTERVAL_MS: u64 = 100;
/// How long a shard waits for the others' rings at start-up.
const SHARD_START_SECONDS_MAX: u64 = 30;
/// `IORING_REGISTER_FILE_ALLOC_RANGE` from the kernel's io_uring.h (the crate keeps it private).
const REGISTER_FILE_ALLOC_RANGE: libc::c_uint = 25;

/// What a shard reports when it exits.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardReport {
    pub counters: Counters,
}

/// A `msghdr` and its iovecs, kept still while a gathered send is in flight.
struct SendSlot {
    header: libc::msghdr,
    iovecs: Vec<libc::iovec>,
}

/// One shard. Field order matters: the ring is dropped before the buffers it writes into.
pub struct Shard {
    ring: Ring,
    receive_buffers: ReceiveBuffers,
    send_slots: Vec<SendSlot>,
    /// Free send slots, and which slot each connection's send uses.
    send_slots_free: Vec<u32>,
    send_slot_of: Vec<u32>,
    connections: Vec<Option<Connection>>,
    generations: Vec<u16>,
    connection_count: usize,
    /// What connection handlers need (pool, encoder, config, counters, clock), lent beside a
    /// borrow of one connection.
    context: Context,
    timers: TimerWheel,
    completions: Vec<Completion>,
    commands: Vec<Command>,
    expired: Vec<u32>,
    send_list: Vec<u32>,
    parked: Vec<(u32, u16)>,
    /// This shard's index, and every shard's mailbox (this one's at `shard_index`).
    shard_index: usize,
    mailboxes: Arc<[Arc<Mailbox>]>,
    /// Commands for other shards whose mailbox was full, per target, in order.
    outbox: Vec<Outbox>,
    outbox_depth: usize,
    /// Commands this shard sends itself (topics it owns), handled in the same turn.
    local_commands: VecDeque<Command>,
    /// The topics this shard owns, and its connections' subscriptions.
    owned: OwnedTopics,
    subscribers: SubscriberTable,
    /// Publishers whose reading paused while the outbox holds commands.
    publishers_paused: Vec<(u32, u16)>,
    /// Scratch lists reused every delivery.
    deliver_targets: Vec<usize>,
    closing_slots: Vec<u32>,
    /// The bytes queued to all connections, as last summed, and when.
    outbound_queued_bytes: u64,
    outbound_summed_ms: u64,
    ping_frame: Bytes,
    started: Instant,
    accepting: bool,
    accept_armed: bool,
    drain_deadline_ms: Option<u64>,
    last_table_full_log_ms: Option<u64>,
}

impl Shard {
    /// Builds the shard inside its own thread (SINGLE_ISSUER ties the ring to this thread):
    /// the ring, the registered-file table with the listener in slot 0, and the receive pool.
    pub fn new(
        config: Arc<ServerConfig>,
        listener_fd: RawFd,
        shard_index: usize,
        mailboxes: Arc<[Arc<Mailbox>]>,
        metrics_board: Arc<MetricsBoard>,
    ) -> io::Result<Shard> {
        let ring = Ring::new(SUBMISSION_ENTRIES)?;
        let table_slots = config.connections_per_shard_max + RESERVED_FILE_SLOTS;
        register_file_table(&ring, table_slots, listener_fd)?;
        let receive_buffers = ReceiveBuffers::new(
            &ring.submitter(),
            RECEIVE_GROUP_ID,
            config.receive_buffers_count,
            config.receive_buffer_bytes,
        )?;
        mailboxes[shard_index].set_ring_fd(ring.raw_fd());
        let shards = mailboxes.len();
        let owned = OwnedTopics::new(&config.broker, shards);
        let publish_config = PublishConfig::from_broker(&config.broker);
        let http_limits = publish_config.request_limits(config.protocol.header_bytes_max);
        let send_slots = (0..SEND_SLOTS_MAX)
            .map(|_| new_send_slot(config.send_batch_frames_max))
            .collect();
        Ok(Shard {
            ring,
            receive_buffers,
            send_slots,
            send_slots_free: (0..SEND_SLOTS_MAX as u32).rev().collect(),
            send_slot_of: vec![u32::MAX; table_slots],
            connections: (0..table_slots).map(|_| None).collect(),
            generations: vec![0; table_slots],
            connection_count: 0,
            context: Context {
                pool: BufferPool::new(&config.pool),
                encoder: FrameEncoder::new(ENCODER_ARENA_BYTES),
                config,
                counters: Counters::default(),
                now_ms: 0,
                broker_requests: Vec::new(),
                http_limits,
                publish_config,
                metrics: MetricsView::new(metrics_board),
                websocket_connections: 0,
                outbound_bytes: 0,
            },
            timers: TimerWheel::new(TIMER_TICK_MS, TIMER_SLOT_COUNT, table_slots, 0),
            completions: Vec::with_capacity(COMPLETIONS_PER_TURN_MAX),
            commands: Vec::with_capacity(COMMANDS_PER_TURN_MAX),
            expired: Vec::with_capacity(EXPIRED_PER_TURN_MAX),
            send_list: Vec::with_capacity(table_slots),
            parked: Vec::with_capacity(table_slots),
            shard_index,
            outbox: (0..shards).map(|_| Outbox::default()).collect(),
            outbox_depth: 0,
            local_commands: VecDeque::new(),
            owned,
            subscribers: SubscriberTable::default(),
            publishers_paused: Vec::new(),
            deliver_targets: Vec::with_capacity(shards),
            closing_slots: Vec::new(),
            outbound_queued_bytes: 0,
            outbound_summed_ms: 0,
            mailboxes,
            ping_frame: encode_frame(OpCode::Ping, true, b""),
            started: Instant::now(),
            accepting: true,
            accept_armed: false,
            drain_deadline_ms: None,
            last_table_full_log_ms: None,
        })
    }

    /// Runs until a shutdown command has drained every connection (or its deadline passed).
    pub fn run(mut self) -> io::Result<ShardReport> {
        self.wait_for_other_shards()?;
        self.arm_accept()?;
        loop {
            let timeout = self.wait_timeout();
            self.ring.submit_and_wait(timeout)?;
            self.context.now_ms = self.started.elapsed().as_millis() as u64;
            self.completions.clear();
            self.ring.harvest(&mut self.completions);
            for index in 0..self.completions.len() {
                let completion = self.completions[index];
                self.handle_completion(completion)?;
            }
            self.receive_buffers.publish();
            self.fire_deadlines()?;
            self.rearm_parked()?;
            self.handle_commands()?;
            self.flush_outbox()?;
            self.flush_sends()?;
            self.publish_metrics();
            if self.finished() {
                break;
            }
        }
        info!(counters = ?self.context.counters, "shard stopped");
        Ok(ShardReport {
            counters: self.context.counters,
        })
    }

    /// Waits until every shard's ring exists, so that a connection accepted here can send to
    /// any of them. Shards start together; one that failed to start ends the server instead.
    fn wait_for_other_shards(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(SHARD_START_SECONDS_MAX);
        while !self.mailboxes.iter().all(|mailbox| mailbox.has_ring()) {
            if Instant::now() >= deadline {
                return Err(io::Error::other("another shard did not start"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn wait_timeout(&self) -> Option<Duration> {
        // Commands wait in the outbox, or in the mailbox for outbox room: look again soon (a
        // full mailbox sends no completion when it frees up).
        if self.outbox_depth > 0 || self.mailboxes[self.shard_index].has_commands() {
            return Some(Duration::from_millis(1));
        }
        let timer = self.timers.next_expiry_ms();
        let earliest = match (timer, self.drain_deadline_ms) {
            (Some(timer), Some(drain)) => Some(timer.min(drain)),
            (timer, drain) => timer.or(drain),
        }?;
        Some(Duration::from_millis(
            earliest.saturating_sub(self.context.now_ms).max(1),
        ))
    }

    fn finished(&self) -> bool {
        let Some(drain_deadline_ms) = self.drain_deadline_ms else {
            return false;
        };
        self.connection_count == 0 || self.context.now_ms >= drain_deadline_ms
    }

    fn handle_completion(&mut self, completion: Completion) -> io::Result<()> {
        let Some(tag) = Tag::decode(completion.user_data) else {
            unreachable!("a completion we did not ask for: {completion:?}");
        };
        match tag.operation {
            Operation::Accept => return self.handle_accept(completion),
            // The loop takes the mailbox's commands every turn.
            // The loop drains the mailbox every turn (which also clears its wake-up flag). A
            // failed wake-up posts this completion at the sender (success is skipped).
            Operation::Wake => {
                if completion.result < 0 {
                    warn!(errno = -completion.result, "waking a shard failed");
                }
                return Ok(());
            }
            Operation::CancelAccept => return Ok(()),
            _ => {}
        }
        let slot = tag.slot as usize;
        let current = self.connections.get(slot).and_then(Option::as_ref);
        if current.is_none_or(|connection| connection.generation != tag.generation) {
            self.context.counters.stale_completions += 1;
            return Ok(());
        }
        match tag.operation {
            Operation::Receive => self.handle_receive(tag.slot, completion),
            Operation::Send => self.handle_send(tag.slot, completion),
            Operation::Shutdown => self.handle_shutdown(tag.slot, completion),
            Operation::Close => self.handle_close(tag.slot, completion),
            // 0, ENOENT (the receive had already ended) or EALREADY: the receive's own
            // completion, ECANCELED or not, is what the shard acts on.
            Operation::CancelReceive => Ok(()),
            Operation::Accept | Operation::Wake | Operation::CancelAccept => unreachable!(),
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fixed(LISTENER_SLOT))
            .allocate_file_index(true)
            .build()
            .user_data(Tag::new(Operation::Accept, 0, 0).encode());
        self.accept_armed = true;
        self.ring.push(&entry)
    }

    fn handle_accept(&mut self, completion: Completion) -> io::Result<()> {
        if !completion.more() {
            self.accept_armed = false;
        }
        match completion.result {
            slot if slot >= 0 => self.open_connection(slot as u32)?,
            error if -error == libc::ENFILE => {
                // The file table is full: the kernel dropped this connection and ended the
                // accept. It is re-armed when a slot frees (in `free_connection`).
                self.context.counters.accept_table_full += 1;
                self.log_table_full();
            }
            error if -error == libc::ECANCELED => return Ok(()),
            // Errors of the connection being accepted (reset before accept, out of memory for
            // its socket): count and go on; the multishot accept usually stays armed.
            error => warn!(errno = -error, "accept failed"),
        }
        if !self.accept_armed && self.accepting && -completion.result != libc::ENFILE {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn log_table_full(&mut self) {
        let interval = self.context.config.log_interval_ms;
        if self
            .last_table_full_log_ms
            .is_none_or(|last| self.context.now_ms >= last + interval)
        {
            self.last_table_full_log_ms = Some(self.context.now_ms);
            warn!(
                connections = self.connection_count,
                connections_per_shard_max = self.context.config.connections_per_shard_max,
                refused_total = self.context.counters.accept_table_full,
                "connection table full: refusing connections until slots free"
            );
        }
    }

    fn open_connection(&mut self, slot: u32) -> io::Result<()> {
        let index = slot as usize;
        assert!(
            self.connections[index].is_none(),
            "kernel reused a slot we still hold"
        );
        self.generations[index] = self.generations[index].wrapping_add(1);
        let connection = Connection::new(
            self.generations[index],
            self.context.now_ms,
            self.context.config.handshake_timeout_ms,
        );
        self.connections[index] = Some(connection);
        self.connection_count += 1;
        self.context.counters.connections_accepted += 1;
        self.sync_deadline(slot);
        if self.drain_deadline_ms.is_some() {
            let connection = self.connections[index].as_mut().expect("just opened");
            connection.close_after_flush(&self.context);
            return self.advance_close(slot);
        }
        self.arm_receive(slot)
    }

    fn arm_receive(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        connection.receive_armed = true;
        let generation = connection.generation;
        let entry = opcode::RecvMulti::new(types::Fixed(slot), RECEIVE_GROUP_ID)
            .build()
            .user_data(Tag::new(Operation::Receive, slot, generation).encode());
        self.ring.push(&entry)
    }

    fn handle_receive(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        let ended = !completion.more();
        if ended {
            self.connection_mut(slot).receive_armed = false;
        }
        let mut parked = false;
        match completion.result {
            length if length > 0 => {
                let buffer_id = completion
                    .buffer_id()
                    .expect("a receive with data names its buffer");
                self.handle_bytes(slot, buffer_id, length as usize);
                self.receive_buffers.recycle(buffer_id);
                if !self.context.broker_requests.is_empty() {
                    self.handle_broker_requests(slot)?;
                }
            }
            0 => self.peer_gone(slot),
            error => match -error {
                libc::ENOBUFS => {
                    // Out of receive buffers: park until buffers return (re-arming at once would
                    // spin on ENOBUFS). The bytes wait in the socket meanwhile.
                    self.context.counters.receive_buffer_shortages += 1;
                    let generation = self.connection_mut(slot).generation;
                    self.parked.push((slot, generation));
                    parked = true;
                }
                // Cancelled to pause reading, or by shutdown: re-armed below if still wanted.
                libc::ECANCELED => {}
                libc::ECONNRESET
                | libc::EPIPE
                | libc::ETIMEDOUT
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH => {
                    debug!(errno = -error, "connection lost");
                    self.peer_gone(slot);
                }
                errno => {
                    warn!(errno, "receive failed");
                    self.peer_gone(slot);
                }
            },
        }
        if ended && !parked && self.wants_receive(slot) {
            self.arm_receive(slot)?;
        }
        self.after_activity(slot)
    }

    /// Whether a connection should have a receive armed and has none.
    fn wants_receive(&mut self, slot: u32) -> bool {
        let connection = self.connection_mut(slot);
        !connection.receive_armed
            && !connection.reading_paused
            && !connection.publisher_paused
            && connection.closing == Closing::Open
    }

    fn handle_bytes(&mut self, slot: u32, buffer_id: u16, length: usize) {
        // SAFETY: the kernel just handed us `buffer_id` in this completion and it is recycled
        // only after this call, which keeps no reference into it.
        let input = unsafe { self.receive_buffers.filled(buffer_id, length) };
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("checked by caller");
        connection.handle_bytes(input, &mut self.context);
    }

    /// The peer closed or reset the connection: nothing more will be read or delivered.
    fn peer_gone(&mut self, slot: u32) {
        let connection = self.connection_mut(slot);
        connection.receive_armed = false;
        connection.outbound.discard_unsent();
        if matches!(connection.closing, Closing::Open | Closing::AfterFlush) {
            connection.closing = Closing::ShutDown;
        }
    }

    /// After a connection's state changed: list it for sending, mirror its deadline, and walk
    /// its close sequence.
    fn after_activity(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if connection.outbound.is_sendable() && !connection.send_listed {
            connection.send_listed = true;
            self.send_list.push(slot);
        }
        self.sync_deadline(slot);
        self.apply_backpressure(slot)?;
        self.advance_close(slot)
    }

    /// Pauses reading from a peer whose replies piled up past the queue limits (its receive is
    /// cancelled and the bytes wait in its socket, so TCP pushes back), and resumes once the
    /// queue has drained below half of them.
    fn apply_backpressure(&mut self, slot: u32) -> io::Result<()> {
        let (bytes_max, frames_max) = (
            self.context.config.outbound_queue_bytes_max,
            self.context.config.outbound_queue_frames_max,
        );
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        let over = connection.outbound.is_over(bytes_max, frames_max);
        if !connection.reading_paused && over && connection.closing == Closing::Open {
            connection.reading_paused = true;
            self.context.counters.reading_pauses += 1;
            return self.cancel_receive(slot);
        } else if connection.reading_paused
            && !connection.outbound.is_over(bytes_max / 2, frames_max / 2)
        {
            connection.reading_paused = false;
            if self.wants_receive(slot) {
                return self.arm_receive(slot);
            }
        }
        Ok(())
    }

    /// Cancels a connection's armed receive (to pause reading); its completion, ECANCELED,
    /// re-arms nothing while a pause holds.
    fn cancel_receive(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if !connection.receive_armed {
            return Ok(());
        }
        let generation = connection.generation;
        let receive = Tag::new(Operation::Receive, slot, generation).encode();
        let entry = opcode::AsyncCancel::new(receive)
            .build()
            .user_data(Tag::new(Operation::CancelReceive, slot, generation).encode());
        self.ring.push(&entry)
    }

    fn sync_deadline(&mut self, slot: u32) {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        if std::mem::take(&mut connection.deadline_changed) {
            self.timers.schedule(slot, connection.deadline_ms);
        }
    }

    /// Takes the next step of the close sequence once its conditions hold.
    fn advance_close(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        let generation = connection.generation;
        match connection.closing {
            Closing::AfterFlush if connection.outbound.is_idle() => {
                connection.closing = Closing::ShuttingDown;
                let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                    .build()
                    .user_data(Tag::new(Operation::Shutdown, slot, generation).encode());
                self.ring.push(&entry)
            }
            Closing::ShutDown if !connection.receive_armed && !connection.outbound.in_flight() => {
                connection.closing = Closing::Closing;
                let entry = opcode::Close::new(types::Fixed(slot))
                    .build()
                    .user_data(Tag::new(Operation::Close, slot, generation).encode());
                self.ring.push(&entry)
            }
            _ => Ok(()),
        }
    }

    fn handle_shutdown(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        // ENOTCONN: the peer already reset the connection. Either way the socket is done.
        if completion.result < 0 && -completion.result != libc::ENOTCONN {
            debug!(errno = -completion.result, "shutdown failed");
        }
        let connection = self.connection_mut(slot);
        connection.closing = Closing::ShutDown;
        connection.outbound.discard_unsent();
        // A parked connection has no receive armed; one still armed ends with EOF now.
        self.advance_close(slot)
    }

    fn handle_close(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        if completion.result < 0 {
            // The slot is freed by the kernel even when the close itself reports an error.
            warn!(errno = -completion.result, "closing a connection failed");
        }
        self.free_connection(slot)
    }

    fn free_connection(&mut self, slot: u32) -> io::Result<()> {
        self.drop_all_subscriptions(slot)?;
        let mut connection = self.connections[slot as usize]
            .take()
            .expect("live connection");
        connection.release_buffers(&mut self.context.pool);
        if matches!(connection.phase, connection::Phase::WebSocket { .. }) {
            self.context.websocket_connections -= 1;
        }
        self.timers.cancel(slot);
        self.connection_count -= 1;
        self.context.counters.connections_closed += 1;
        if self.accepting && !self.accept_armed {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn handle_send(&mut self, slot: u32, completion: Completion) -> io::Result<()> {
        let free_slot = std::mem::replace(&mut self.send_slot_of[slot as usize], u32::MAX);
        if free_slot != u32::MAX {
            self.send_slots_free.push(free_slot);
        }
        let connection = self.connection_mut(slot);
        match completion.result {
            sent if sent >= 0 => {
                connection.outbound.complete(sent as usize);
                self.context.counters.bytes_sent += sent as u64;
                self.context.outbound_bytes =
                    self.context.outbound_bytes.saturating_sub(sent as u64);
                self.release_conflated(slot);
            }
            error => {
                connection.outbound.abandon();
                match -error {
                    libc::EPIPE | libc::ECONNRESET | libc::ECANCELED | libc::ETIMEDOUT => {}
                    errno => warn!(errno, "send failed"),
                }
                self.peer_gone(slot);
            }
        }
        self.after_activity(slot)
    }

    /// Submits one send for every listed connection: all of them reach the kernel in the next
    /// enter together.
    fn flush_sends(&mut self) -> io::Result<()> {
        let mut index = 0;
        while index < self.send_list.len() {
            let slot = self.send_list[index];
            index += 1;
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            connection.send_listed = false;
            if connection.outbound.is_sendable() && connection.closing != Closing::Closing {
                self.submit_send(slot)?;
            }
        }
        self.send_list.clear();
        Ok(())
    }

    fn submit_send(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize].as_mut().expect("listed");
        let tag = Tag::new(Operation::Send, slot, connection.generation).encode();
        // One frame goes out with a plain send: sendmsg's extra work measured 2.3% of an echo
        // shard's time (flamegraphs/README.md). Several frames are gathered into one sendmsg.
        let gather = connection.outbound.frame_count() > 1;
        let send_slot = if gather {
            self.send_slots_free.pop()
        } else {
            None
        };
        let entry = match send_slot {
            Some(send_slot) => {
                let gathered = &mut self.send_slots[send_slot as usize];
                let count = connection.outbound.gather(&mut gathered.iovecs);
                gathered.header.msg_iov = gathered.iovecs.as_mut_ptr();
                gathered.header.msg_iovlen = count;
                self.send_slot_of[slot as usize] = send_slot;
                opcode::SendMsg::new(types::Fixed(slot), &gathered.header)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
            None => {
                let front = connection.outbound.front();
                opcode::Send::new(types::Fixed(slot), front.as_ptr(), front.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
        };
        self.ring.push(&entry.user_data(tag))
    }

    fn fire_deadlines(&mut self) -> io::Result<()> {
        self.expired.clear();
        self.timers.expire(self.context.now_ms, &mut self.expired);
        for index in 0..self.expired.len() {
            let slot = self.expired[index];
            let connection = self.connections[slot as usize]
                .as_mut()
                .expect("timers of freed slots are cancelled");
            let shut_down_now = connection.handle_deadline(&self.ping_frame, &mut self.context);
            if shut_down_now {
                self.force_shutdown(slot)?;
            }
            self.after_activity(slot)?;
        }
        Ok(())
    }

    /// Shuts a connection down regardless of what is still queued (a close that timed out).
    fn force_shutdown(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connection_mut(slot);
        if matches!(connection.closing, Closing::Open | Closing::AfterFlush) {
            connection.closing = Closing::AfterFlush;
            connection.outbound.discard_unsent();
            let generation = connection.generation;
            connection.closing = Closing::ShuttingDown;
            let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                .build()
                .user_data(Tag::new(Operation::Shutdown, slot, generation).encode());
            self.ring.push(&entry)?;
        }
        Ok(())
    }

    /// Re-arms receives that ran out of buffers, as many as there are buffers to receive into.
    fn rearm_parked(&mut self) -> io::Result<()> {
        while self.receive_buffers.buffers_provided()
            > self.context.config.receive_buffers_count / 4
        {
            let Some((slot, generation)) = self.parked.pop() else {
                return Ok(());
            };
            let live = self.connections[slot as usize]
                .as_ref()
                .is_some_and(|connection| {
                    connection.generation == generation && connection.closing == Closing::Open
                });
            if live {
                self.arm_receive(slot)?;
            } else if self.connections[slot as usize].is_some() {
                self.advance_close(slot)?;
            }
        }
        Ok(())
    }

    /// Stops accepting and starts the close handshake of every connection with 1001.
    fn start_shutdown(&mut self) -> io::Result<()> {
        if self.drain_deadline_ms.is_some() {
            return Ok(());
        }
        self.drain_deadline_ms = Some(self.context.now_ms + self.context.config.drain_timeout_ms);
        self.accepting = false;
        let cancel = opcode::AsyncCancel::new(Tag::new(Operation::Accept, 0, 0).encode())
            .build()
            .user_data(Tag::new(Operation::CancelAccept, 0, 0).encode());
        self.ring.push(&cancel)?;
        info!(
            connections = self.connection_count,
            "shutting down: closing every connection with 1001"
        );
        for slot in 0..self.connections.len() as u32 {
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            connection.close_websocket(
                CloseCode::GOING_AWAY,
                "server shutting down",
                &mut self.context,
            );
            self.after_activity(slot)?;
        }
        Ok(())
    }

    /// Queues `frame` to every open WebSocket connection of the shard.
    fn broadcast(&mut self, frame: &Bytes) -> io::Result<()> {
        for slot in 0..self.connections.len() as u32 {
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            if !connection.takes_messages() {
                continue;
            }
            let (bytes_max, frames_max) = (
                self.context.config.outbound_queue_bytes_max,
                self.context.config.outbound_queue_frames_max,
            );
            if connection
                .outbound
                .push(frame.clone(), bytes_max, frames_max)
                .is_err()
            {
                self.context.counters.slow_consumer_closes += 1;
                connection.close_websocket(
                    CloseCode::POLICY_VIOLATION,
                    "slow consumer",
                    &mut self.context,
                );
            }
            self.after_activity(slot)?;
        }
        Ok(())
    }

    /// Leaves this turn's counters and gauges for `GET /metrics`. The bytes queued to all
    /// connections take a walk over the table, so they are summed every
    /// OUTBOUND_SUM_INTERVAL_MS; the shard's queue budget is checked against that sum.
    fn publish_metrics(&mut self) {
        let now_ms = self.context.now_ms;
        if now_ms >= self.outbound_summed_ms + OUTBOUND_SUM_INTERVAL_MS {
            self.outbound_summed_ms = now_ms;
            self.outbound_queued_bytes = self
                .connections
                .iter()
                .flatten()
                .map(|connection| connection.outbound.queued_bytes() as u64)
                .sum();
            let was_over = self.context.outbound_over_budget();
            self.context.outbound_bytes = self.outbound_queued_bytes;
            if self.context.outbound_over_budget() && !was_over {
                warn!(
                    queued_bytes = self.outbound_queued_bytes,
                    outbound_shard_bytes_max = self.context.config.broker.outbound_shard_bytes_max,
                    "subscribers cannot keep up: the slow-consumer policy applies to all of them"
                );
            }
        }
        let mailbox = &self.mailboxes[self.shard_index];
        let metrics = ShardMetrics {
            counters: self.context.counters,
            gauges: Gauges {
                connections: self.connection_count as u64,
                websocket_connections: self.context.websocket_connections,
                subscriptions: self.subscribers.subscription_count() as u64,
                topics_owned: self.owned.topic_count() as u64,
                topics_subscribed: self.subscribers.topic_count() as u64,
                history_bytes: self.owned.history_bytes() as u64,
                mailbox_depth: mailbox.depth() as u64,
                outbox_depth: self.outbox_depth as u64,
                outbound_queued_bytes: self.outbound_queued_bytes,
            },
        };
        self.context
            .metrics
            .board()
            .publish(self.shard_index, &metrics);
    }

    fn connection_mut(&mut self, slot: u32) -> &mut Connection {
        self.connections[slot as usize]
            .as_mut()
            .expect("live connection")
    }
}

fn new_send_slot(iovecs_max: usize) -> SendSlot {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid (empty) value.
    let header: libc::msghdr = unsafe { std::mem::zeroed() };
    let iovecs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        iovecs_max
    ];
    SendSlot { header, iovecs }
}

/// Registers a sparse file table of `table_slots`, puts the listener in slot 0 and keeps the
/// reserved slots out of the range the kernel allocates accepted connections from.
fn register_file_table(ring: &Ring, table_slots: usize, listener_fd: RawFd) -> io::Result<()> {
    let submitter = ring.submitter();
    submitter.register_files_sparse(table_slots as u32).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "registering a file table of {table_slots} slots failed ({error}); the kernel caps \
                 it at the soft RLIMIT_NOFILE: lower connections_per_shard_max or raise the limit"
            ),
        )
    })?;
    submitter.register_files_update(LISTENER_SLOT, &[listener_fd])?;
    #[repr(C)]
    struct FileIndexRange {
        offset: u32,
        length: u32,
        reserved: u64,
    }
    let range = FileIndexRange {
        offset: RESERVED_FILE_SLOTS as u32,
        length: (table_slots - RESERVED_FILE_SLOTS) as u32,
        reserved: 0,
    };
    // SAFETY: IORING_REGISTER_FILE_ALLOC_RANGE reads one `io_uring_file_index_range` (the
    // layout above: two u32 and a u64) from the pointer, during the call only.
    let result = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.raw_fd(),
            REGISTER_FILE_ALLOC_RANGE,
            &range as *const FileIndexRange,
            0,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
