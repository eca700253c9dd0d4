//! One thread and one io_uring per core, owning its sockets end to end.
//!
//! The shard is only a driver (quinn's `ConnectionDriver`, TigerBeetle's `run`): submit what is
//! queued and wait, harvest every ready completion, hand each to its connection's endpoint, hand
//! receive buffers back, fire due timers, carry the broker's decisions and commands out, submit
//! the sends of every connection that has something to send in one batch, repeat. Protocol
//! decisions live in `endpoint` (per connection) and `broker` (pub/sub policy); this module and
//! its files only turn them into ring operations and map every errno the ring can return to a
//! deliberate action:
//!
//! - [`accept`]: the multishot accepts (503 refusals while the table is full) and opening
//!   connections;
//! - [`receive`]: multishot receives on the provided buffer ring, reading pauses;
//! - [`send`]: gathered sends and their completions;
//! - [`close`]: deadlines and the close sequence (shutdown, close, free);
//! - [`commands`]: the broker's requests and commands, the mailboxes and the outbox;
//! - [`clients`]: the broker's view of this shard's connections;
//! - [`sessions`]: Engine.IO long-polling sessions, clients of the broker without a socket,
//!   and the connections (on any shard) that carry them.

mod accept;
pub mod buffers;
mod clients;
mod close;
mod commands;
pub mod connection;
pub mod mailbox;
pub mod metrics_board;
mod receive;
pub mod ring;
mod send;
mod sessions;
pub mod timer;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::auth::{AddressLimits, Authenticator};
use crate::broker::{Command, Fanout, MessagePool, QueueLimits};
use crate::config::{RESERVED_FILE_SLOTS, ServerConfig};
use crate::egress::EgressLink;
use crate::egress::feed::EventFeed;
use crate::egress::nats::NatsLink;
use crate::egress::nats::feed::PublishFeed;
use crate::egress::nats::metrics::ClusterCollector;
use crate::egress::webhook::metrics::WebhookCollector;
use crate::endpoint::frame_cache::FrameCache;
use crate::endpoint::outbound::QueueMemory;
use crate::endpoint::socketio_polling::{LocalSessions, SessionDirectory};
use crate::endpoint::{Context, EndpointKind};
use crate::protocol::CloseCode;
use crate::protocol::pool::BufferPool;
use crate::protocol::prefetch::PREFETCH_DISTANCE;
use crate::protocol::websocket::deflate::CompressorSet;
use crate::protocol::websocket::frame::FrameEncoder;
use crate::stats::{Counters, Gauges, PoolStats, ShardCounters, ShardStats, TlsStats};
use crate::transport::tls::TlsWorkspace;
use accept::{Accepts, Listener};
use buffers::ReceiveBuffers;
use commands::Outbox;
use connection::{Connection, ConnectionTable, Flag};
use mailbox::Mailbox;
use metrics_board::{MetricsBoard, MetricsView};
use ring::{Completion, Operation, Ring, Tag};
use send::SendSlots;
use timer::TimerWheel;

/// The registered-file slots of the shard's listeners (outside the allocation range).
const LISTENER_SLOT: u32 = 0;
const TLS_LISTENER_SLOT: u32 = 1;
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
/// Chunk size of the shard's frame encoder: one allocation serves many small frames, and a
/// chunk whose frames have all been sent is reused.
const ENCODER_ARENA_BYTES: usize = 64 * 1024;
/// The buffer group id of the receive pool.
const RECEIVE_GROUP_ID: u16 = 0;
/// Deadlines fired per turn (the rest fire next turn).
const EXPIRED_PER_TURN_MAX: usize = 4096;
/// How long a shard waits for the others' rings at start-up.
const SHARD_START_SECONDS_MAX: u64 = 30;
/// `IORING_REGISTER_FILE_ALLOC_RANGE` from the kernel's io_uring.h (the crate keeps it private).
const REGISTER_FILE_ALLOC_RANGE: libc::c_uint = 25;

/// What a shard reports when it exits.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardReport {
    pub counters: Counters,
}

/// What a shard shares with the other threads of the server.
pub struct Shared {
    pub shard_index: usize,
    pub mailboxes: Arc<[Arc<Mailbox>]>,
    pub metrics_board: Arc<MetricsBoard>,
    /// Differs from one process start to the next: the topics' epochs are drawn from it.
    pub epoch_seed: u64,
    /// The shard's TLS listener and the handshake configuration every shard shares (its
    /// certificate resolver is what a reload swaps), when `tls_listen` is set.
    pub tls: Option<TlsListener>,
    /// The connection-time checks (`[auth]`), built once with the key files read.
    pub authenticator: Arc<Authenticator>,
    /// The process's per-address connection and handshake counts.
    pub address_limits: Arc<AddressLimits>,
    /// The way to the webhook thread, when webhooks are configured.
    pub egress: Option<EgressLink>,
    /// The way to the NATS bridge, when clustered (`nats_urls`).
    pub nats: Option<NatsLink>,
    /// Every shard's open Engine.IO sessions, so that any shard can refuse an id none has.
    pub engine_sessions: Arc<SessionDirectory>,
}

/// The Engine.IO session slots of each shard: after its connection table's, as many as
/// `socketio_polling_sessions_max` when long polling is served.
pub fn engine_session_slots(config: &ServerConfig) -> (usize, usize) {
    let table_slots = config.connections_per_shard_max + RESERVED_FILE_SLOTS;
    let sessions_max = match config.socketio.socketio_polling_enabled {
        true => config.socketio.socketio_polling_sessions_max,
        false => 0,
    };
    (table_slots, sessions_max)
}

/// A shard's TLS listener.
pub struct TlsListener {
    pub listener_fd: RawFd,
    pub config: Arc<rustls::ServerConfig>,
}

/// One shard. Field order matters: the ring is dropped before the buffers it writes into.
pub struct Shard {
    ring: Ring,
    receive_buffers: ReceiveBuffers,
    sends: SendSlots,
    /// The connection table (`table_slots`), then the Engine.IO sessions' slots
    /// (`socketio_polling_sessions_max`), which name no descriptor; both written only as far
    /// as used.
    connections: ConnectionTable,
    generations: Vec<u16>,
    sessions: sessions::Sessions,
    /// Per slot, the address its connection counts against (`AddressLimits`); 0 for none.
    address_tickets: Vec<u64>,
    /// The process's per-address limits, shared by the shards.
    address_limits: Arc<AddressLimits>,
    connection_count: usize,
    tls_connections: u64,
    /// The handshake configuration of TLS connections, when the shard has a TLS listener.
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// TLS buffers, scratch and counters of this shard's TLS connections.
    tls_workspace: TlsWorkspace,
    /// TLS connections that found no ciphertext buffer free, retried when one comes back.
    tls_send_waiting: Vec<(u32, u16)>,
    config: Arc<ServerConfig>,
    /// What endpoints need (pool, encoder, settings, counters, clock), lent beside a borrow of
    /// one connection.
    context: Context,
    /// The pub/sub of this shard: its clients' subscriptions and the topics it owns.
    fanout: Fanout,
    frame_cache: FrameCache,
    counters: ShardCounters,
    timers: TimerWheel,
    completions: Vec<Completion>,
    commands: Vec<Command>,
    expired: Vec<u32>,
    send_list: Vec<u32>,
    /// Connections whose state the broker changed beyond their queue (a close, an answer),
    /// for `after_activity` once the broker is done.
    touched: Vec<u32>,
    /// Connections whose endpoint owes something at the end of the turn (an NDJSON cursor
    /// line, a poll's answer).
    turn_list: Vec<u32>,
    /// Open connections per transport (`EndpointKind::TRANSPORTS`).
    transport_connections: [u64; crate::broker::TRANSPORT_COUNT],
    parked: Vec<(u32, u16)>,
    shard_index: usize,
    mailboxes: Arc<[Arc<Mailbox>]>,
    metrics_board: Arc<MetricsBoard>,
    /// Commands for other shards whose mailbox was full, per target, in order.
    outbox: Vec<Outbox>,
    outbox_depth: usize,
    /// Connections whose reading paused while the outbox holds commands.
    publishers_paused: Vec<(u32, u16)>,
    /// What every connection's queue holds in memory, each shared frame once.
    queue_memory: QueueMemory,
    /// Whether the last turn found the queues over `outbound_shard_bytes_max` (to log the
    /// crossing once).
    over_budget: bool,
    started: Instant,
    accepting: bool,
    /// The direct and the refusing accept, and the refusals in flight.
    accepts: Accepts,
    drain_deadline_ms: Option<u64>,
    last_table_full_log_ms: Option<u64>,
    /// Where the broker's events go (only when a webhook is configured), and whether this turn
    /// pushed any (the webhook thread is woken once, at the end of the turn).
    event_feed: Option<Arc<EventFeed>>,
    events_pushed: bool,
    /// Clustered: the feed of publishes to the NATS bridge, and whether this turn pushed any.
    cluster_feed: Option<Arc<PublishFeed>>,
    cluster_pushed: bool,
}

impl Shard {
    /// Builds the shard inside its own thread (SINGLE_ISSUER ties the ring to this thread):
    /// the ring, the registered-file table with the listener in slot 0, and the receive pool.
    pub fn new(config: Arc<ServerConfig>, listener_fd: RawFd, shared: Shared) -> io::Result<Shard> {
        let ring = Ring::new(SUBMISSION_ENTRIES)?;
        let table_slots = config.connections_per_shard_max + RESERVED_FILE_SLOTS;
        let tls_listener_fd = shared.tls.as_ref().map(|tls| tls.listener_fd);
        register_file_table(&ring, table_slots, listener_fd, tls_listener_fd)?;
        let receive_buffers = ReceiveBuffers::new(
            &ring.submitter(),
            RECEIVE_GROUP_ID,
            config.receive_buffers_count,
            config.receive_buffer_bytes,
        )?;
        let Shared {
            shard_index,
            mailboxes,
            metrics_board,
            epoch_seed,
            tls,
            authenticator,
            address_limits,
            egress,
            nats,
            engine_sessions,
        } = shared;
        mailboxes[shard_index].set_ring_fd(ring.raw_fd());
        let shards = mailboxes.len();
        // Sessions take the slots after the table's: clients of the broker, with timers.
        let (_, sessions_max) = engine_session_slots(&config);
        let client_slots = table_slots + sessions_max;
        let mut fanout = new_fanout(&config, shard_index, shards, client_slots, epoch_seed);
        let mut metrics = MetricsView::new(Arc::clone(&metrics_board));
        if let Some(egress) = &egress {
            fanout.set_event_filter(egress.filter.clone());
            metrics.register_collector(Box::new(WebhookCollector(Arc::clone(&egress.metrics))));
        }
        if let Some(nats) = &nats {
            fanout.set_cluster(
                nats.epoch,
                config.nats.nats_catch_up_ms,
                config.nats.nats_catch_up_subscriptions_max,
            );
            metrics.register_collector(Box::new(ClusterCollector(Arc::clone(&nats.metrics))));
        }
        let connected = nats.as_ref().map(|nats| Arc::clone(&nats.connected));
        let mut context = new_context(&config, authenticator, metrics, connected);
        context.engine_sessions = LocalSessions::new(shard_index, engine_sessions);
        Ok(Shard {
            ring,
            receive_buffers,
            sends: SendSlots::new(table_slots, config.send_batch_frames_max),
            connections: ConnectionTable::new(table_slots, sessions_max),
            generations: vec![0; client_slots],
            sessions: sessions::Sessions::new(
                table_slots,
                sessions_max,
                config.socketio.socketio_polling_sessions_per_address_max,
            ),
            address_tickets: vec![0; table_slots],
            address_limits,
            connection_count: 0,
            tls_connections: 0,
            tls_config: tls.map(|tls| tls.config),
            tls_workspace: TlsWorkspace::default(),
            tls_send_waiting: Vec::with_capacity(table_slots),
            context,
            fanout,
            frame_cache: FrameCache::default(),
            counters: ShardCounters::default(),
            timers: TimerWheel::new(TIMER_TICK_MS, TIMER_SLOT_COUNT, client_slots, 0),
            completions: Vec::with_capacity(COMPLETIONS_PER_TURN_MAX),
            commands: Vec::with_capacity(COMMANDS_PER_TURN_MAX),
            expired: Vec::with_capacity(EXPIRED_PER_TURN_MAX),
            send_list: Vec::with_capacity(client_slots),
            touched: Vec::with_capacity(client_slots),
            turn_list: Vec::with_capacity(client_slots),
            transport_connections: [0; crate::broker::TRANSPORT_COUNT],
            parked: Vec::with_capacity(table_slots),
            shard_index,
            outbox: (0..shards).map(|_| Outbox::default()).collect(),
            outbox_depth: 0,
            publishers_paused: Vec::new(),
            queue_memory: QueueMemory::default(),
            over_budget: false,
            mailboxes,
            metrics_board,
            config,
            started: Instant::now(),
            accepting: true,
            accepts: Accepts::default(),
            drain_deadline_ms: None,
            last_table_full_log_ms: None,
            event_feed: egress.map(|egress| egress.feed),
            events_pushed: false,
            cluster_feed: nats.map(|nats| nats.feed),
            cluster_pushed: false,
        })
    }

    /// Runs until a shutdown command has drained every connection (or its deadline passed).
    pub fn run(mut self) -> io::Result<ShardReport> {
        self.wait_for_other_shards()?;
        self.sync_accepts()?;
        loop {
            let timeout = self.wait_timeout();
            self.ring.submit_and_wait(timeout)?;
            self.context.now_ms = self.started.elapsed().as_millis() as u64;
            self.fanout.set_now(self.context.now_ms);
            self.completions.clear();
            self.ring.harvest(&mut self.completions);
            for index in 0..self.completions.len() {
                if let Some(ahead) = self.completions.get(index + PREFETCH_DISTANCE) {
                    // Most completions name a connection's slot in their low 32 bits; for
                    // the others the hint is wasted, never wrong.
                    self.connections.prefetch(ahead.user_data as u32 as usize);
                }
                let completion = self.completions[index];
                self.handle_completion(completion)?;
            }
            self.receive_buffers.publish();
            self.fire_deadlines()?;
            self.rearm_parked()?;
            self.handle_commands()?;
            self.handle_turn()?;
            self.end_turn()?;
            self.flush_outbox()?;
            self.flush_sends()?;
            self.wake_egress();
            self.publish_stats();
            if self.finished() {
                break;
            }
        }
        self.ring.submit_before_exit()?;
        let counters = self.gather_counters();
        info!(
            shard = self.shard_index,
            "shard stopped: {}",
            counters.summary()
        );
        Ok(ShardReport { counters })
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
        let earliest = [
            self.timers.next_expiry_ms(),
            self.drain_deadline_ms,
            self.fanout.next_deadline_ms(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(Duration::from_millis(
            earliest.saturating_sub(self.context.now_ms).max(1),
        ))
    }

    /// Whether a shutdown is over: every connection closed, every refusal in flight answered
    /// (it owes its client the 503 and its descriptor a close), and every command accepted into
    /// the mailbox (a publish, say) carried out; or the drain deadline passed.
    fn finished(&self) -> bool {
        let Some(drain_deadline_ms) = self.drain_deadline_ms else {
            return false;
        };
        let drained = self.connection_count == 0
            && !self.accepts.in_flight()
            && self.outbox_depth == 0
            && !self.mailboxes[self.shard_index].has_commands();
        drained || self.context.now_ms >= drain_deadline_ms
    }

    fn handle_completion(&mut self, completion: Completion) -> io::Result<()> {
        let Some(tag) = Tag::decode(completion.user_data) else {
            unreachable!("a completion we did not ask for: {completion:?}");
        };
        match tag.operation {
            Operation::Accept => return self.handle_accept(tag, completion, Listener::Plain),
            Operation::TlsAccept => return self.handle_accept(tag, completion, Listener::Tls),
            Operation::RefusingAccept => {
                return self.handle_refusing_accept(completion, Listener::Plain);
            }
            Operation::TlsRefusingAccept => {
                return self.handle_refusing_accept(completion, Listener::Tls);
            }
            // A refusal's descriptor is a process descriptor, not a slot of the table.
            Operation::RefusalSend => return self.handle_refusal_send(tag, completion),
            Operation::RefusalClose => return self.handle_refusal_close(tag, completion),
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
        if current.is_none_or(|connection| connection.generation() != tag.generation) {
            self.counters.stale_completions += 1;
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
            Operation::Accept
            | Operation::TlsAccept
            | Operation::RefusingAccept
            | Operation::TlsRefusingAccept
            | Operation::RefusalSend
            | Operation::RefusalClose
            | Operation::Wake
            | Operation::CancelAccept => unreachable!(),
        }
    }

    /// Stops accepting and starts the close handshake of every connection with 1001.
    fn start_shutdown(&mut self) -> io::Result<()> {
        if self.drain_deadline_ms.is_some() {
            return Ok(());
        }
        self.drain_deadline_ms = Some(self.context.now_ms + self.config.drain_timeout_ms);
        self.accepting = false;
        self.sync_accepts()?;
        info!(
            connections = self.connection_count,
            "shutting down: closing every connection with 1001"
        );
        let sessions = self.connections.session_slots();
        for slot in (0..self.connections.len() as u32).chain(sessions) {
            if self.connections[slot as usize].is_some() {
                self.close_connection(slot, CloseCode::GOING_AWAY, "server shutting down")?;
            }
        }
        Ok(())
    }

    /// Hands the turn's events to the webhook thread, and wakes it if this turn gave it any
    /// (and it sleeps).
    fn wake_egress(&mut self) {
        self.forward_events();
        if self.events_pushed
            && let Some(feed) = &self.event_feed
        {
            feed.wake();
            self.events_pushed = false;
        }
        if self.cluster_pushed
            && let Some(feed) = &self.cluster_feed
        {
            feed.wake();
            self.cluster_pushed = false;
        }
    }

    fn gather_counters(&self) -> Counters {
        let mut counters = Counters::gather(
            &self.counters,
            &self.context.counters,
            &self.fanout.counters(),
        );
        counters.pool_exhausted = self.context.pool.exhausted_count();
        counters
    }

    /// Leaves this turn's counters and gauges for `GET /metrics`, and logs the queues crossing
    /// their budget (once per crossing).
    fn publish_stats(&mut self) {
        let memory_bytes = self.queue_memory.bytes();
        let over_budget = memory_bytes > self.config.broker.outbound_shard_bytes_max as u64;
        if over_budget && !self.over_budget {
            warn!(
                queued_memory_bytes = memory_bytes,
                outbound_shard_bytes_max = self.config.broker.outbound_shard_bytes_max,
                "the queues hold more than the shard's budget: the slow-consumer policy applies \
                 to the subscribers holding more than their share"
            );
        }
        self.over_budget = over_budget;
        let mailbox = &self.mailboxes[self.shard_index];
        let (inflaters_created, inflaters_in_use) = self.context.pool.inflater_statistics();
        let gauges = Gauges {
            connections: self.connection_count as u64,
            websocket_connections: self.transport_connections[0],
            transport_connections: self.transport_connections,
            mailbox_depth: mailbox.depth() as u64,
            outbox_depth: self.outbox_depth as u64,
            outbound_queued_bytes: self.queue_memory.queued_bytes(),
            outbound_memory_bytes: memory_bytes,
            inflaters_in_use: inflaters_in_use as u64,
            inflaters_created: inflaters_created as u64,
            ..Gauges::default()
        }
        .with_broker(self.fanout.gauges());
        let tls = self
            .tls_config
            .as_ref()
            .map(|_| TlsStats::of(&self.tls_workspace, self.tls_connections));
        let stats = ShardStats {
            counters: self.gather_counters(),
            gauges,
            pool: PoolStats::of(&self.context.pool),
            tls,
        };
        self.metrics_board.publish(self.shard_index, &stats);
    }

    /// Brings the queue memory up to date with `slot`'s queue.
    fn account(&mut self, slot: u32) {
        let now_ms = self.context.now_ms;
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("live connection");
        connection.account(&mut self.queue_memory, now_ms);
    }

    /// Keeps the per-transport connection counts as an endpoint changes kind (an upgrade, a
    /// stream opened, a poll held or answered, a connection freed: `after` is `Http`).
    /// Counts a connection's change of kind, and records `connection.opened` the first time it
    /// becomes a client of the broker (a WebSocket, a stream, or a held poll).
    fn track_kind(&mut self, slot: u32, before: EndpointKind, after: EndpointKind) {
        self.count_kind(before, after);
        if after.transport_index().is_some() {
            self.announce_opened(slot, after);
        }
    }

    fn count_kind(&mut self, before: EndpointKind, after: EndpointKind) {
        if before == after {
            return;
        }
        if let Some(index) = before.transport_index() {
            self.transport_connections[index] -= 1;
        }
        if let Some(index) = after.transport_index() {
            self.transport_connections[index] += 1;
        }
    }

    /// The end of the turn: endpoints owed something get it (NDJSON cursor lines, answers of
    /// ready polls, whose unsubscriptions go to the broker at once).
    fn end_turn(&mut self) -> io::Result<()> {
        while let Some(slot) = self.turn_list.pop() {
            if let Some(ahead) = self.turn_list.len().checked_sub(PREFETCH_DISTANCE) {
                self.connections.prefetch(self.turn_list[ahead] as usize);
            }
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            connection.set_flag(Flag::TurnListed, false);
            let before = connection.endpoint.kind();
            let next = connection
                .endpoint
                .handle_turn_end(&mut connection.outbound, &mut self.context);
            let after = connection.endpoint.kind();
            self.track_kind(slot, before, after);
            self.follow(slot, next)?;
            if !self.context.requests.is_empty() {
                self.handle_requests(slot)?;
            }
            self.after_activity(slot)?;
        }
        Ok(())
    }

    fn connection_mut(&mut self, slot: u32) -> &mut Connection {
        self.connections[slot as usize]
            .as_mut()
            .expect("live connection")
    }
}

/// The broker of shard `shard_index` of `shards`: its epochs seeded apart from the other shards'.
fn new_fanout(
    config: &ServerConfig,
    shard_index: usize,
    shards: usize,
    table_slots: usize,
    epoch_seed: u64,
) -> Fanout {
    let queue_limits = QueueLimits {
        bytes_max: config.outbound_queue_bytes_max,
        frames_max: config.outbound_queue_frames_max,
    };
    let epoch_seed = epoch_seed ^ (shard_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Fanout::new(
        &config.broker,
        queue_limits,
        shard_index,
        shards,
        table_slots,
        epoch_seed,
    )
}

/// What the shard's endpoints share: pools, the encoder, settings, the clock and metrics.
fn new_context(
    config: &ServerConfig,
    authenticator: Arc<Authenticator>,
    metrics: MetricsView,
    cluster_connected: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Context {
    let mut settings = config.endpoint_settings(authenticator);
    settings.cluster_connected = cluster_connected;
    Context {
        pool: BufferPool::new(&config.pool),
        encoder: FrameEncoder::new(ENCODER_ARENA_BYTES),
        settings: Arc::new(settings),
        frames: MessagePool::new(config.broker.message_pool_free_bytes_max),
        counters: Default::default(),
        now_ms: 0,
        unix_offset_ms: unix_now_ms(),
        requests: Vec::new(),
        engine_calls: Vec::new(),
        engine_sessions: Default::default(),
        metrics: Box::new(metrics),
        compressors: CompressorSet::new(config.protocol.compression_level),
    }
}

/// Registers a sparse file table of `table_slots`, puts the listener in slot 0 (and the TLS
/// listener in slot 1) and keeps the reserved slots out of the range the kernel allocates
/// accepted connections from.
fn register_file_table(
    ring: &Ring,
    table_slots: usize,
    listener_fd: RawFd,
    tls_listener_fd: Option<RawFd>,
) -> io::Result<()> {
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
    if let Some(tls_listener_fd) = tls_listener_fd {
        submitter.register_files_update(TLS_LISTENER_SLOT, &[tls_listener_fd])?;
    }
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

/// The wall clock in Unix milliseconds, read once when a shard starts: token times are Unix
/// times, measured from there on the shard's monotonic clock.
fn unix_now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    // A clock set before 1970 is broken; tokens then look expired, which fails safe.
    since_epoch.map_or(0, |elapsed| elapsed.as_millis() as u64)
}
