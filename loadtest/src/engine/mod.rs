//! The io_uring client: many client connections on one thread and one ring, driven the way a
//! server shard is driven: connect with `IORING_OP_CONNECT`, receive with one multishot receive
//! per connection from a provided buffer ring (the server's own technique, so an idle
//! connection holds no receive buffer), send with one `IORING_OP_SEND` at a time per
//! connection, take every ready completion in a batch, and submit all sends of a turn together.
//!
//! It is the light path of the load generator: used where the client's CPU per message must
//! stay below the server's (fanout subscribers, the ingest scenario). The handshake and frames
//! are `crate::websocket`'s, checked against tungstenite in their tests. What a connection
//! does with its messages is the [`Handler`]'s business; the engine only moves bytes, answers
//! pings, enforces the connect timeout and counts failures by cause.
//!
//! A connection's life: `open` (socket bound to a source address with
//! IP_BIND_ADDRESS_NO_PORT, connect submitted) → connected (upgrade request sent, receive
//! armed) → open (the 101 checked; `Handler::opened`) → ended (failed with a cause, or shut
//! down at the stop). Every request in flight is counted per connection; a connection's socket
//! is closed only once none is left, so no completion ever refers to a reused descriptor.

mod client;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{opcode, types};
use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};

use self::client::{Client, Stage};
use crate::fanout::monotonic_ns;
use crate::histogram::{new_histogram, record};
use crate::protocol::{Cause, Failures};
use crate::transport::{self, TlsClient, TlsFailure};
use crate::uring::buffers::ProvidedBuffers;
use crate::uring::ring::{Completion, Ring, tag, untag};
use crate::websocket::frame::MaskKeys;
use crate::worker::{Counters, connect_cause, set_bind_address_no_port};

pub use self::client::Outbound;

/// Submission queue entries; a turn with more requests submits early, never drops one.
const SUBMISSION_ENTRIES: u32 = 4096;

/// Completions handled per turn; the rest stay in the (four times larger) completion queue.
const COMPLETIONS_PER_TURN_MAX: usize = 4 * SUBMISSION_ENTRIES as usize;

/// The buffer group of the receive pool.
const RECEIVE_GROUP_ID: u16 = 0;

/// Operation codes in `user_data`.
const CONNECT: u8 = 1;
const RECEIVE: u8 = 2;
const SEND: u8 = 3;
const CANCEL: u8 = 4;

/// What kind of connection to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A WebSocket client: upgrade first, then frames.
    WebSocket,
    /// Plain bytes after the TCP connect (HTTP/1.1 publishing).
    Raw,
}

/// A complete data message from the server, or (raw connections) the bytes of one receive.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub text: bool,
    pub payload: &'a [u8],
    /// CLOCK_MONOTONIC when the receive's completion was harvested, once per batch.
    pub received_ns: u64,
    /// Bytes the message took on the wire: its frames with their heads (raw: the bytes).
    pub wire_bytes: usize,
    /// Whether it came compressed (permessage-deflate); `payload` is then the inflated text.
    pub compressed: bool,
}

/// What the connections do; called by the engine as things happen.
pub trait Handler {
    /// The connection is usable (upgraded; raw: connected), `since_attempt` after `open`.
    fn opened(
        &mut self,
        index: u32,
        since_attempt: Duration,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause>;
    /// A data message (raw: received bytes).
    fn message(
        &mut self,
        index: u32,
        message: Message<'_>,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause>;
    /// Everything queued has been sent: a publisher queues more here.
    fn writable(&mut self, _index: u32, _out: &mut Outbound<'_>) -> Result<(), Cause> {
        Ok(())
    }
    /// The connection ended: `Err` with the first failure, `Ok` when shut down at the stop.
    /// Called once per connection that was opened (a failed open included).
    fn ended(&mut self, index: u32, outcome: Result<(), Cause>);
}

/// The engine's settings.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub target: SocketAddrV4,
    /// `host:port` and path of the upgrade request.
    pub host: String,
    pub path: String,
    /// `Authorization` of every upgrade request (`Bearer <token>`, from `--token-file`).
    pub authorization: Option<String>,
    pub connect_timeout: Duration,
    /// The receive pool: a power of two of buffers, each `buffer_bytes`.
    pub buffers_count: usize,
    pub buffer_bytes: usize,
    /// Longest data message accepted from the server.
    pub message_bytes_max: usize,
    /// Seeds the mask keys and handshake nonces.
    pub seed: u64,
    /// wss:// and https://: every connection speaks TLS with this client's settings.
    pub tls: Option<TlsClient>,
    /// Offer permessage-deflate in every upgrade request (`--compression`).
    pub deflate: bool,
}

/// What the engine measured for its connections.
pub struct EngineStats {
    pub attempted: u64,
    pub established: u64,
    pub failures: Failures,
    /// `open` to the end of the upgrade (raw: of the connect).
    pub connect_latency_ns: Histogram<u64>,
    /// Receives that found the buffer pool empty.
    pub buffer_shortages: u64,
}

/// One thread's client connections.
pub struct Engine {
    ring: Ring,
    buffers: ProvidedBuffers,
    clients: Vec<Client>,
    /// The server's address, boxed so that connects in flight can point at it.
    address: Box<libc::sockaddr_in>,
    settings: EngineSettings,
    completions: Vec<Completion>,
    send_list: Vec<u32>,
    parked: Vec<u32>,
    /// Connect + upgrade deadlines, in the order the connections were opened.
    deadlines: VecDeque<(Instant, u32)>,
    keys: MaskKeys,
    /// TLS: the plaintext of one receive, reused by every connection of the thread.
    plaintext: Vec<u8>,
    /// permessage-deflate: the inflated message, reused by every connection of the thread.
    inflated: Vec<u8>,
    counters: Arc<Counters>,
    now_ns: u64,
    pub stats: EngineStats,
}

impl Engine {
    /// An engine for connections `0..count`.
    pub fn new(
        settings: EngineSettings,
        count: usize,
        counters: Arc<Counters>,
    ) -> io::Result<Self> {
        let ring = Ring::new(SUBMISSION_ENTRIES)?;
        let buffers = ProvidedBuffers::new(
            &ring.submitter(),
            RECEIVE_GROUP_ID,
            settings.buffers_count,
            settings.buffer_bytes,
        )?;
        let address = Box::new(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: settings.target.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*settings.target.ip()).to_be(),
            },
            sin_zero: [0; 8],
        });
        Ok(Self {
            ring,
            buffers,
            clients: (0..count).map(|_| Client::default()).collect(),
            address,
            keys: MaskKeys::new(settings.seed),
            settings,
            completions: Vec::with_capacity(COMPLETIONS_PER_TURN_MAX),
            send_list: Vec::with_capacity(count),
            parked: Vec::new(),
            deadlines: VecDeque::new(),
            plaintext: Vec::new(),
            inflated: Vec::new(),
            counters,
            now_ns: monotonic_ns(),
            stats: EngineStats {
                attempted: 0,
                established: 0,
                failures: Failures::default(),
                connect_latency_ns: new_histogram(),
                buffer_shortages: 0,
            },
        })
    }

    /// Starts connection `index` from `source`.
    pub fn open(
        &mut self,
        index: u32,
        source: Ipv4Addr,
        kind: Kind,
        handler: &mut impl Handler,
    ) -> io::Result<()> {
        self.stats.attempted += 1;
        self.counters.attempted.fetch_add(1, Ordering::Relaxed);
        let nonce = [self.keys.next_u64(), self.keys.next_u64()];
        let client = &mut self.clients[index as usize];
        assert_eq!(client.stage, Stage::Idle, "connection {index} opened twice");
        client.start(kind, nonce);
        if let Some(tls) = &self.settings.tls {
            match tls.connect() {
                Ok(session) => client.tls = Some(session),
                Err(_) => {
                    self.end(index, Err(Cause::TlsHandshakeFailed), handler);
                    return Ok(());
                }
            }
        }
        let fd = match bound_socket(source) {
            Ok(fd) => fd,
            Err(error) => {
                self.end(index, Err(connect_cause(&error)), handler);
                return Ok(());
            }
        };
        client.fd = fd;
        client.operations += 1;
        let entry = opcode::Connect::new(
            types::Fd(fd),
            (&raw const *self.address).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
        .build()
        .user_data(tag(CONNECT, index));
        // SAFETY: the address is boxed and lives as long as the engine, whose drop ends the
        // ring (and so the request) first.
        unsafe { self.ring.push(&entry) }?;
        let deadline = Instant::now() + self.settings.connect_timeout;
        self.deadlines.push_back((deadline, index));
        Ok(())
    }

    /// Ends connection `index` for a reason found above the engine (say, no subscription
    /// acknowledgement in time).
    pub fn fail(&mut self, index: u32, cause: Cause, handler: &mut impl Handler) {
        self.end(index, Err(cause), handler);
    }

    /// Whether connection `index` has ended (or never started).
    pub fn is_live(&self, index: u32) -> bool {
        matches!(
            self.clients[index as usize].stage,
            Stage::Connecting | Stage::Upgrading | Stage::Open
        )
    }

    /// Lets a handler queue bytes on connection `index` outside a callback (a publisher
    /// starting, a probe asking); the bytes go out with the next turn.
    pub fn with_outbound(&mut self, index: u32, write: impl FnOnce(&mut Outbound<'_>)) {
        let client = &mut self.clients[index as usize];
        if client.stage != Stage::Open {
            return;
        }
        write(&mut Outbound::new(&mut client.outbound, &mut self.keys));
        self.list_for_send(index);
    }

    /// One turn: submit the queued sends, wait up to `wait` for completions, handle every one,
    /// give the receive buffers back, re-arm starved receives, and time out slow connects.
    pub fn turn(&mut self, handler: &mut impl Handler, wait: Duration) -> io::Result<()> {
        self.flush_sends()?;
        self.ring.submit_and_wait(wait)?;
        self.now_ns = monotonic_ns();
        self.completions.clear();
        self.ring.harvest(&mut self.completions);
        for position in 0..self.completions.len() {
            let completion = self.completions[position];
            self.dispatch(completion, handler)?;
        }
        self.buffers.publish();
        self.rearm_parked()?;
        self.expire(handler);
        Ok(())
    }

    /// Shuts every live connection down (the run is over): their handlers see `Ok`.
    pub fn stop(&mut self, handler: &mut impl Handler) {
        for index in 0..self.clients.len() as u32 {
            if self.is_live(index) {
                self.end(index, Ok(()), handler);
            }
        }
        // Cancels for connects in flight, if any, go out now; the rest ends with the ring.
        let _ = self.ring.submit_and_wait(Duration::ZERO);
    }

    fn dispatch(&mut self, completion: Completion, handler: &mut impl Handler) -> io::Result<()> {
        let (operation, index) = untag(completion.user_data);
        match operation {
            CONNECT => self.handle_connect(index, completion.result, handler)?,
            RECEIVE => self.handle_receive(index, completion, handler)?,
            SEND => self.handle_send(index, completion.result, handler)?,
            // A cancel's own outcome changes nothing: the cancelled request completes too.
            CANCEL => return Ok(()),
            other => unreachable!("a request we never made: operation {other}"),
        }
        self.close_if_done(index);
        self.list_for_send(index);
        Ok(())
    }

    fn handle_connect(
        &mut self,
        index: u32,
        result: i32,
        handler: &mut impl Handler,
    ) -> io::Result<()> {
        let client = &mut self.clients[index as usize];
        client.operations -= 1;
        if client.stage != Stage::Connecting {
            return Ok(());
        }
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            self.end(index, Err(connect_cause(&error)), handler);
            return Ok(());
        }
        match client.kind {
            Kind::WebSocket => {
                client.stage = Stage::Upgrading;
                client.key.write_request(
                    &self.settings.host,
                    &self.settings.path,
                    self.settings.authorization.as_deref(),
                    self.settings.deflate,
                    &mut client.outbound,
                );
            }
            // Raw bytes flow once TLS is up: its handshake is this connection's upgrade.
            Kind::Raw if client.tls.is_some() => client.stage = Stage::Upgrading,
            Kind::Raw => self.upgraded(index, handler),
        }
        self.arm_receive(index)
    }

    /// The connection became usable: count it, and let the handler start.
    fn upgraded(&mut self, index: u32, handler: &mut impl Handler) {
        let client = &mut self.clients[index as usize];
        client.stage = Stage::Open;
        let since_attempt = client.attempted_at.elapsed();
        self.stats.established += 1;
        self.counters.established.fetch_add(1, Ordering::Relaxed);
        record(
            &mut self.stats.connect_latency_ns,
            since_attempt.as_nanos() as u64,
        );
        let mut out = Outbound::new(&mut client.outbound, &mut self.keys);
        if let Err(cause) = handler.opened(index, since_attempt, &mut out) {
            self.end(index, Err(cause), handler);
        }
    }

    fn arm_receive(&mut self, index: u32) -> io::Result<()> {
        let client = &mut self.clients[index as usize];
        client.receive_armed = true;
        client.operations += 1;
        let entry = opcode::RecvMulti::new(types::Fd(client.fd), RECEIVE_GROUP_ID)
            .build()
            .user_data(tag(RECEIVE, index));
        // SAFETY: a multishot receive points at no memory of ours; buffers come from the
        // provided ring, which outlives the ring.
        unsafe { self.ring.push(&entry) }
    }

    fn handle_receive(
        &mut self,
        index: u32,
        completion: Completion,
        handler: &mut impl Handler,
    ) -> io::Result<()> {
        let client = &mut self.clients[index as usize];
        if !completion.more() {
            client.receive_armed = false;
            client.operations -= 1;
        }
        let outcome = match completion.result {
            length if length > 0 => {
                let buffer_id = completion
                    .buffer_id()
                    .expect("a receive with data names its buffer");
                // SAFETY: the kernel just handed us this buffer and writes to it again only
                // after `recycle` below; the mapping never moves. The slice is detached from
                // the borrow of `self.buffers` so the connection's handler can run with the
                // engine borrowed, and nothing keeps it past `recycle`.
                let bytes: &[u8] = unsafe {
                    &*std::ptr::from_mut(self.buffers.filled(buffer_id, length as usize))
                };
                let outcome = if client.tls.is_some() {
                    self.take_in_tls(index, bytes, handler)
                } else {
                    self.take_in(index, bytes, handler)
                };
                self.buffers.recycle(buffer_id);
                outcome
            }
            0 => Err(client.closed_cause()),
            error => match -error {
                libc::ENOBUFS => {
                    // The pool is empty: wait until this turn's buffers return (re-arming at
                    // once would spin on ENOBUFS while the bytes wait in the socket).
                    self.stats.buffer_shortages += 1;
                    if client.stage != Stage::Ended {
                        self.parked.push(index);
                    }
                    Ok(())
                }
                // Cancelled by our shutdown, or the ring is going away.
                libc::ECANCELED => Ok(()),
                libc::ECONNRESET | libc::EPIPE | libc::ETIMEDOUT | libc::ECONNABORTED => {
                    Err(client.closed_cause())
                }
                errno => {
                    log_unexpected("receive", errno);
                    Err(client.closed_cause())
                }
            },
        };
        if let Err(cause) = outcome {
            self.end(index, Err(cause), handler);
        }
        let client = &self.clients[index as usize];
        let open = matches!(client.stage, Stage::Upgrading | Stage::Open);
        if open && !client.receive_armed && !self.parked.contains(&index) {
            self.arm_receive(index)?;
        }
        Ok(())
    }

    /// Hands received bytes to the connection; when they complete its upgrade, the handler
    /// hears `opened` before any frame that came with the answer.
    fn take_in(
        &mut self,
        index: u32,
        bytes: &[u8],
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        let client = &mut self.clients[index as usize];
        let upgrading = client.stage == Stage::Upgrading;
        let mut context = client::Context {
            index,
            received_ns: self.now_ns,
            message_bytes_max: self.settings.message_bytes_max,
            keys: &mut self.keys,
            deflate_offered: self.settings.deflate,
            inflated: &mut self.inflated,
        };
        client.absorb(bytes, &mut context, handler)?;
        if !(upgrading && client.stage == Stage::Open) {
            return Ok(());
        }
        self.upgraded(index, handler);
        let client = &mut self.clients[index as usize];
        if client.stage != Stage::Open {
            return Ok(());
        }
        let mut context = client::Context {
            index,
            received_ns: self.now_ns,
            message_bytes_max: self.settings.message_bytes_max,
            keys: &mut self.keys,
            deflate_offered: self.settings.deflate,
            inflated: &mut self.inflated,
        };
        client.take_early_frames(&mut context, handler)
    }

    /// Decrypts received bytes and hands the plaintext on as [`Engine::take_in`] does; a raw
    /// connection becomes usable when its TLS handshake completes.
    fn take_in_tls(
        &mut self,
        index: u32,
        ciphertext: &[u8],
        handler: &mut impl Handler,
    ) -> Result<(), Cause> {
        let client = &mut self.clients[index as usize];
        let session = client.tls.as_deref_mut().expect("a TLS connection");
        let mut plaintext = std::mem::take(&mut self.plaintext);
        plaintext.clear();
        let decrypted = transport::decrypt(session, ciphertext, &mut plaintext);
        let handshake_done = !session.is_handshaking();
        let outcome = match decrypted {
            Err(TlsFailure::Handshake) => Err(Cause::TlsHandshakeFailed),
            Err(TlsFailure::Session) => Err(client.closed_cause()),
            Ok(()) => {
                if client.kind == Kind::Raw && client.stage == Stage::Upgrading && handshake_done {
                    self.upgraded(index, handler);
                }
                let stage = self.clients[index as usize].stage;
                let usable = matches!(stage, Stage::Upgrading | Stage::Open);
                if usable && !plaintext.is_empty() {
                    self.take_in(index, &plaintext, handler)
                } else {
                    Ok(())
                }
            }
        };
        self.plaintext = plaintext;
        outcome
    }

    fn handle_send(
        &mut self,
        index: u32,
        result: i32,
        handler: &mut impl Handler,
    ) -> io::Result<()> {
        let client = &mut self.clients[index as usize];
        client.operations -= 1;
        if client.stage == Stage::Ended {
            client.sending.clear();
            return Ok(());
        }
        if result < 0 {
            if !matches!(-result, libc::EPIPE | libc::ECONNRESET | libc::ECANCELED) {
                log_unexpected("send", -result);
            }
            let cause = client.closed_cause();
            self.end(index, Err(cause), handler);
            return Ok(());
        }
        client.sent_bytes += result as usize;
        if client.sent_bytes < client.sending.len() {
            // A short send: the rest goes out before anything queued since.
            return self.submit_send(index);
        }
        client.sending.clear();
        if client.stage == Stage::Open && client.outbound.is_empty() {
            let mut out = Outbound::new(&mut client.outbound, &mut self.keys);
            if let Err(cause) = handler.writable(index, &mut out) {
                self.end(index, Err(cause), handler);
            }
        }
        Ok(())
    }

    fn list_for_send(&mut self, index: u32) {
        let client = &mut self.clients[index as usize];
        if client.wants_send() && !client.listed {
            client.listed = true;
            self.send_list.push(index);
        }
    }

    /// Submits the next send of every listed connection; they reach the kernel together.
    fn flush_sends(&mut self) -> io::Result<()> {
        for position in 0..self.send_list.len() {
            let index = self.send_list[position];
            let client = &mut self.clients[index as usize];
            client.listed = false;
            if client.wants_send() {
                client.take_queued();
                self.submit_send(index)?;
            }
        }
        self.send_list.clear();
        Ok(())
    }

    fn submit_send(&mut self, index: u32) -> io::Result<()> {
        let client = &mut self.clients[index as usize];
        let rest = &client.sending[client.sent_bytes..];
        client.operations += 1;
        let entry = opcode::Send::new(types::Fd(client.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(SEND, index));
        // SAFETY: `sending` is neither written nor dropped while its send is in flight (the
        // connection's `Vec` stays put: `clients` never grows), and it lives until the
        // engine's drop, which ends the ring first.
        unsafe { self.ring.push(&entry) }
    }

    fn rearm_parked(&mut self) -> io::Result<()> {
        while let Some(index) = self.parked.pop() {
            let client = &self.clients[index as usize];
            if matches!(client.stage, Stage::Upgrading | Stage::Open) && !client.receive_armed {
                self.arm_receive(index)?;
            }
        }
        Ok(())
    }

    /// Times out connections that have not finished connect + upgrade by their deadline.
    fn expire(&mut self, handler: &mut impl Handler) {
        let now = Instant::now();
        while let Some(&(deadline, index)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let cause = match self.clients[index as usize].stage {
                Stage::Connecting => Cause::ConnectTimeout,
                Stage::Upgrading => Cause::HandshakeTimeout,
                Stage::Idle | Stage::Open | Stage::Ended => continue,
            };
            self.end(index, Err(cause), handler);
        }
    }

    /// Ends connection `index` once: counts a failure, tells the handler, and stops its I/O
    /// (a connect in flight is cancelled, a connected socket shut down, which ends its
    /// receive); the socket is closed when the last request has completed.
    fn end(&mut self, index: u32, outcome: Result<(), Cause>, handler: &mut impl Handler) {
        let client = &mut self.clients[index as usize];
        let stage = std::mem::replace(&mut client.stage, Stage::Ended);
        if stage == Stage::Ended {
            return;
        }
        client.release_buffers();
        if let Err(cause) = outcome {
            self.stats.failures.record(cause);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        match stage {
            Stage::Connecting if client.operations > 0 => {
                let entry = opcode::AsyncCancel::new(tag(CONNECT, index))
                    .build()
                    .user_data(tag(CANCEL, index));
                // SAFETY: a cancel points at no memory. If the queue cannot take it, the
                // connect still ends at its own timeout or with the ring.
                let _ = unsafe { self.ring.push(&entry) };
            }
            Stage::Upgrading | Stage::Open => {
                // SAFETY: shutdown on a descriptor we own; it only changes the socket's state.
                unsafe { libc::shutdown(client.fd, libc::SHUT_RDWR) };
            }
            Stage::Idle | Stage::Connecting | Stage::Ended => {}
        }
        handler.ended(index, outcome);
        self.close_if_done(index);
    }

    fn close_if_done(&mut self, index: u32) {
        let client = &mut self.clients[index as usize];
        if client.stage == Stage::Ended && client.operations == 0 && client.fd >= 0 {
            // SAFETY: our descriptor, with no request in flight that refers to it.
            unsafe { libc::close(client.fd) };
            client.fd = -1;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for client in &mut self.clients {
            if client.fd >= 0 {
                // SAFETY: our descriptor; requests still in flight hold their own reference
                // to the file and end with the ring, dropped right after this.
                unsafe { libc::close(client.fd) };
                client.fd = -1;
            }
        }
    }
}

/// A blocking TCP socket bound to `source`, the port left to connect time. Blocking, because
/// io_uring then makes its own non-blocking attempt and waits for readiness itself.
fn bound_socket(source: Ipv4Addr) -> io::Result<RawFd> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::STREAM.cloexec(),
        Some(SocketProtocol::TCP),
    )?;
    set_bind_address_no_port(&socket)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    Ok(socket.into_raw_fd())
}

/// Unexpected errors are counted under the connection's cause; the first few are printed.
fn log_unexpected(stage: &str, errno: i32) {
    use std::sync::atomic::AtomicUsize;
    const LOGGED_MAX: usize = 5;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        eprintln!(
            "worker {}: unexpected {stage} error: {}",
            std::process::id(),
            io::Error::from_raw_os_error(errno)
        );
    }
}
