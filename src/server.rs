//! Starting and stopping the shards: one SO_REUSEPORT listener per shard (and one more per shard
//! for TLS), bound here so that an ephemeral port (`:0`) resolves to one port shared by every
//! shard, then one pinned thread per shard that builds its ring and runs its loop. The TLS
//! certificate is loaded here, before any shard starts, and reloaded through
//! [`Server::reload_certificates`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::error;

use crate::auth::AddressLimits;
use crate::broker::topic::TopicError;
use crate::broker::{Command, TopicName};
use crate::config::ServerConfig;
use crate::egress::Egress;
use crate::egress::nats::{NatsBridge, ShardInbox};
use crate::endpoint::socketio_polling::SessionDirectory;
use crate::shard::mailbox::{Mailbox, WakeError, Waker};
use crate::shard::metrics_board::MetricsBoard;
use crate::shard::{Shard, ShardReport, Shared, TlsListener, engine_session_slots};
use crate::transport::tls::certificates::{self, CertificateError, Certificates, Loaded};

/// The listen backlog; the kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 65_535;

/// The running shards.
pub struct Server {
    threads: Vec<JoinHandle<io::Result<ShardReport>>>,
    mailboxes: Arc<[Arc<Mailbox>]>,
    local_address: SocketAddr,
    tls: Option<ServerTls>,
    waker: Waker,
    topic_bytes_max: usize,
    /// The webhook thread, when webhooks are configured; stopped after the shards.
    egress: Option<Egress>,
    /// The NATS bridge, when `nats_urls` is set; stopped after the shards.
    nats: Option<NatsBridge>,
    drain_timeout_ms: u64,
    /// A second descriptor of every listener (plain and TLS), shut down once the shards have
    /// ended: see `release_listeners`.
    listeners: Vec<OwnedFd>,
}

/// The TLS side of a running server.
struct ServerTls {
    local_address: SocketAddr,
    /// Shared with every shard's handshakes (through the rustls configuration).
    certificates: Arc<Certificates>,
}

/// The TLS listeners and configuration, ready for the shards.
struct TlsSetUp {
    listeners: Vec<OwnedFd>,
    local_address: SocketAddr,
    certificates: Arc<Certificates>,
    config: Arc<rustls::ServerConfig>,
}

impl TlsSetUp {
    /// Loads and checks the certificate and key, builds the handshake configuration and binds
    /// the listeners; `None` when `tls_listen` is unset. An error names the file and the
    /// problem.
    fn new(config: &ServerConfig, buffers: SocketBuffers) -> io::Result<Option<TlsSetUp>> {
        let (Some(address), Some(paths)) = (config.tls_listen, config.tls_paths()) else {
            return Ok(None);
        };
        let certificate_error = |error: CertificateError| io::Error::other(error.to_string());
        let (certificates, loaded) =
            Certificates::load(paths, certificates::provider()).map_err(certificate_error)?;
        tracing::info!(certificate = %certificates.paths().certificate.display(), "TLS: {loaded}");
        let certificates = Arc::new(certificates);
        let tls_config = certificates::server_config(Arc::clone(&certificates))
            .map_err(|error| io::Error::other(format!("TLS configuration: {error}")))?;
        let (listeners, local_address) = bind_listeners(address, config.shards, buffers)?;
        Ok(Some(TlsSetUp {
            listeners,
            local_address,
            certificates,
            config: tls_config,
        }))
    }
}

impl Server {
    /// Binds the listeners and starts every shard; returns once all accept connections.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let config = Arc::new(config);
        let buffers = SocketBuffers {
            send_bytes: config.socket_send_buffer_bytes,
            receive_bytes: config.socket_receive_buffer_bytes,
        };
        // The cluster first: a node that cannot join it must not serve as a lone node.
        let nats = match config.nats_settings().map_err(io::Error::other)? {
            Some(settings) => {
                Some(NatsBridge::start(settings, config.shards).map_err(io::Error::other)?)
            }
            None => None,
        };
        let egress = match config.egress_settings().map_err(io::Error::other)? {
            Some(settings) => Some(Egress::start(settings)?),
            None => None,
        };
        let tls = TlsSetUp::new(&config, buffers)?;
        let (listeners, local_address) = bind_listeners(config.listen, config.shards, buffers)?;
        // One TLS listener per shard beside its plain one, when TLS is on.
        let (mut tls_listeners, tls_config, tls) = match tls {
            Some(tls) => {
                let server_tls = ServerTls {
                    local_address: tls.local_address,
                    certificates: tls.certificates,
                };
                (
                    tls.listeners.into_iter(),
                    Some(tls.config),
                    Some(server_tls),
                )
            }
            None => (Vec::new().into_iter(), None, None),
        };
        // The CPUs this process may run on (taskset, cgroups): shard i is pinned to the i-th of
        // them, never to CPU i itself, which may be outside the set (under `taskset -c 1`,
        // pinning the one shard to CPU 0 put it on the load generator's core).
        let cores = allowed_cores();
        let (ready_sender, ready_receiver) = mpsc::channel();
        let mut threads = Vec::with_capacity(config.shards);
        let mut kept_listeners = Vec::with_capacity(config.shards * 2);
        let mailboxes: Arc<[Arc<Mailbox>]> = (0..config.shards)
            .map(|_| Arc::new(Mailbox::new(config.broker.mailbox_commands_max)))
            .collect();
        let metrics_board = Arc::new(MetricsBoard::new(config.shards));
        let epoch_seed = epoch_seed();
        let authenticator = Arc::new(config.authenticator().map_err(io::Error::other)?);
        let auth = &config.auth;
        let address_limits = Arc::new(AddressLimits::new(
            auth.connections_per_ip_max,
            auth.handshakes_per_ip_per_second,
            auth.addresses_tracked_max,
        ));
        let (slot_start, sessions_max) = engine_session_slots(&config);
        let engine_sessions = Arc::new(SessionDirectory::new(
            listeners.len(),
            slot_start,
            sessions_max,
        ));
        for (index, listener) in listeners.into_iter().enumerate() {
            let mailboxes = Arc::clone(&mailboxes);
            let engine_sessions = Arc::clone(&engine_sessions);
            let authenticator = Arc::clone(&authenticator);
            let address_limits = Arc::clone(&address_limits);
            let metrics_board = Arc::clone(&metrics_board);
            let config = Arc::clone(&config);
            let ready = ready_sender.clone();
            let egress = egress.as_ref().map(|egress| egress.link(index));
            let nats = nats.as_ref().map(|nats| nats.link(index));
            let pin_core = (config.shards <= cores.len()).then(|| cores[index]);
            let tls_listener = tls_listeners.next();
            kept_listeners.push(listener.try_clone()?);
            if let Some(tls_listener) = &tls_listener {
                kept_listeners.push(tls_listener.try_clone()?);
            }
            let tls_config = tls_config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringcast-shard-{index}"))
                .spawn(move || {
                    let tls =
                        tls_listener
                            .as_ref()
                            .zip(tls_config)
                            .map(|(fd, config)| TlsListener {
                                listener_fd: fd.as_raw_fd(),
                                config,
                            });
                    let shared = Shared {
                        shard_index: index,
                        mailboxes,
                        metrics_board,
                        epoch_seed,
                        tls,
                        authenticator,
                        address_limits,
                        egress,
                        nats,
                        engine_sessions,
                    };
                    let listeners = [Some(listener), tls_listener];
                    run_shard(config, listeners, shared, pin_core, ready)
                })?;
            threads.push(thread);
        }
        drop(ready_sender);
        let mut server = Server {
            threads,
            mailboxes,
            local_address,
            tls,
            waker: Waker::new()?,
            topic_bytes_max: config.broker.topic_bytes_max,
            egress,
            nats,
            drain_timeout_ms: config.drain_timeout_ms,
            listeners: kept_listeners,
        };
        for _ in 0..server.threads.len() {
            let started = ready_receiver
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("a shard died starting")));
            if let Err(error) = started {
                server.stop_after_failed_start();
                return Err(error);
            }
        }
        // Every shard's ring exists now: the bridge may wake them.
        if let Some(nats) = &mut server.nats {
            let inbox = MailboxInbox {
                mailboxes: Arc::clone(&server.mailboxes),
                waker: Waker::new()?,
            };
            nats.serve(Box::new(inbox));
        }
        Ok(server)
    }

    /// The address the shards accept on (with the resolved port when `:0` was asked).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The address the shards accept TLS on, when `tls_listen` is set.
    pub fn tls_local_address(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.local_address)
    }

    /// Reads the TLS certificate and key again and, if they pass the start-up checks, makes
    /// every shard's next handshakes use them (open connections keep theirs). `None` without
    /// TLS; on an error the pair in use stays.
    pub fn reload_certificates(&self) -> Option<Result<Loaded, CertificateError>> {
        self.tls.as_ref().map(|tls| tls.certificates.reload())
    }

    /// The NATS bridge's connection state and epoch, when clustered.
    pub fn nats_state(&self) -> Option<Arc<crate::egress::nats::BridgeState>> {
        self.nats.as_ref().map(NatsBridge::state)
    }

    /// Whether a shard thread has ended (a shard ends early only on a fatal ring error).
    pub fn any_shard_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// A handle that publishes into the broker from another thread (the demo feed).
    pub fn publisher(&self) -> io::Result<Publisher> {
        Ok(Publisher {
            mailboxes: Arc::clone(&self.mailboxes),
            waker: Waker::new()?,
            topic_bytes_max: self.topic_bytes_max,
        })
    }

    /// Closes every connection with 1001, waits for the drain, and joins the shards; then the
    /// webhook thread delivers what they left (up to `drain_timeout_ms` more) and ends.
    pub fn shutdown(mut self) -> io::Result<Vec<ShardReport>> {
        for mailbox in self.mailboxes.iter() {
            if let Err(error) = self.waker.send(mailbox, Command::Shutdown) {
                error!(%error, "a shard cannot be told to shut down");
            }
        }
        let mut reports = Vec::with_capacity(self.threads.len());
        let mut failure = None;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(error)) => failure = failure.or(Some(error)),
                Err(_) => failure = failure.or(Some(io::Error::other("a shard panicked"))),
            }
        }
        self.release_listeners();
        if let Some(egress) = self.egress.take() {
            egress.stop(std::time::Duration::from_millis(self.drain_timeout_ms));
        }
        if let Some(nats) = self.nats.take() {
            nats.stop();
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(reports),
        }
    }

    /// `shutdown` on a thread of its own, for callers (tests) that keep talking to clients while
    /// the server drains.
    pub fn shutdown_in_background(self) -> JoinHandle<io::Result<Vec<ShardReport>>> {
        std::thread::spawn(move || self.shutdown())
    }

    fn stop_after_failed_start(&mut self) {
        for (mailbox, thread) in self.mailboxes.iter().zip(&self.threads) {
            if !thread.is_finished() {
                let _ = self.waker.send(mailbox, Command::Shutdown);
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.release_listeners();
        if let Some(egress) = self.egress.take() {
            egress.stop(std::time::Duration::ZERO);
        }
        if let Some(nats) = self.nats.take() {
            nats.stop();
        }
    }

    /// Takes the listeners out of LISTEN now. Each shard's ring holds its listeners in its file
    /// table, and the kernel tears a ring down asynchronously after its descriptor closes: the
    /// sockets went on listening for a while after the process had exited, and a server started
    /// again at once on the same port (a restart) found it busy. A listener shut down is closed
    /// to connections and conflicts with no SO_REUSEADDR bind, whoever still holds it.
    fn release_listeners(&mut self) {
        for listener in self.listeners.drain(..) {
            let _ = socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Builds and runs one shard. `listeners` are its plain and (optional) TLS listeners, whose
/// process descriptors are closed once the ring's file table holds them.
fn run_shard(
    config: Arc<ServerConfig>,
    listeners: [Option<OwnedFd>; 2],
    shared: Shared,
    pin_core: Option<usize>,
    ready: mpsc::Sender<io::Result<()>>,
) -> io::Result<ShardReport> {
    if let Some(core) = pin_core {
        pin_to_core(core);
    }
    let listener_fd = listeners[0].as_ref().expect("a plain listener").as_raw_fd();
    let shard = match Shard::new(config, listener_fd, shared) {
        Ok(shard) => shard,
        Err(error) => {
            let message = error.to_string();
            let _ = ready.send(Err(error));
            return Err(io::Error::other(message));
        }
    };
    // The ring's file table now holds the listeners; the process fds are no longer needed.
    drop(listeners);
    let _ = ready.send(Ok(()));
    shard
        .run()
        .inspect_err(|error| error!(%error, "shard failed"))
}

/// A seed that differs from one process start to the next: the clock in nanoseconds and the
/// process id. A restarted server (without kept history) numbers its topics from 1 again, and
/// the epochs drawn from this seed tell clients that its seqs are not the last run's.
fn epoch_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The CPUs the calling thread may run on, in order (CPU 0 alone if the set cannot be read).
fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data for which all-zero bytes is the empty set;
    // sched_getaffinity(0, ...) writes inside it during the call only; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&core| libc::CPU_ISSET(core, &set))
            .collect()
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity(0, ...) reads
    // it during the call only and affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, error = %io::Error::last_os_error(), "could not pin shard");
        }
    }
}

/// The kernel buffers of every accepted connection (0: the kernel's autotuning).
#[derive(Clone, Copy, Debug)]
struct SocketBuffers {
    send_bytes: usize,
    receive_bytes: usize,
}

/// Binds `count` SO_REUSEPORT listeners on one address; the first resolves an ephemeral port.
fn bind_listeners(
    address: SocketAddr,
    count: usize,
    buffers: SocketBuffers,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let mut resolved = probe_port_free(address)?;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(resolved),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Accepted sockets inherit TCP_NODELAY: market data must not wait for Nagle.
        socket.set_tcp_nodelay(true)?;
        // They inherit the buffer sizes too (set before listen, so that the receive window's
        // scale follows them).
        if buffers.send_bytes > 0 {
            socket.set_send_buffer_size(buffers.send_bytes)?;
        }
        if buffers.receive_bytes > 0 {
            socket.set_recv_buffer_size(buffers.receive_bytes)?;
        }
        socket.bind(&resolved.into()).map_err(|error| {
            io::Error::new(error.kind(), format!("binding {resolved} failed: {error}"))
        })?;
        socket.listen(LISTEN_BACKLOG)?;
        if let Some(local) = socket.local_addr()?.as_socket() {
            resolved = local;
        }
        listeners.push(OwnedFd::from(socket));
    }
    Ok((listeners, resolved))
}

/// Binds `address` once without SO_REUSEPORT and lets go. With SO_REUSEPORT alone, a second
/// ringcast (or anything else with the option) started on a busy port would bind without error and
/// silently take a share of its connections; this plain bind fails instead. Returns the address
/// with an ephemeral port resolved.
fn probe_port_free(address: SocketAddr) -> io::Result<SocketAddr> {
    let probe = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    probe.set_reuse_address(true)?;
    probe.bind(&address.into()).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("{address} is not free ({error}): is another server running?"),
        )
    })?;
    Ok(probe.local_addr()?.as_socket().unwrap_or(address))
}

/// The NATS bridge's way into the shards: their mailboxes, and a waker of its own.
struct MailboxInbox {
    mailboxes: Arc<[Arc<Mailbox>]>,
    waker: Waker,
}

impl ShardInbox for MailboxInbox {
    fn shards(&self) -> usize {
        self.mailboxes.len()
    }

    fn send(&mut self, shard: usize, command: Command) -> Result<(), Command> {
        match self.waker.send(&self.mailboxes[shard], command) {
            Ok(()) => Ok(()),
            Err(WakeError::Full(command)) => Err(command),
            // The command is queued; the shard takes it at its next turn.
            Err(WakeError::Submit(error)) => {
                tracing::warn!(%error, "waking a shard for the NATS bridge failed");
                Ok(())
            }
        }
    }
}

/// Publishes into the broker from a thread that is not a shard: each message goes to its topic's
/// owner like a client's publish.
pub struct Publisher {
    mailboxes: Arc<[Arc<Mailbox>]>,
    waker: Waker,
    topic_bytes_max: usize,
}

/// Why a message was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishRefused {
    /// Not a valid topic name.
    Topic(TopicError),
    /// The owner's publish mailbox was full (or could not be woken).
    Full,
}

impl Publisher {
    /// Hands `data` (one JSON value) for `topic` to the topic's owner.
    pub fn publish(&mut self, topic: &str, data: &[u8]) -> Result<(), PublishRefused> {
        let mut message = Vec::with_capacity(topic.len() + data.len());
        message.extend_from_slice(topic.as_bytes());
        message.extend_from_slice(data);
        let message = Bytes::from(message);
        let topic = TopicName::new(message.slice(..topic.len()), self.topic_bytes_max)
            .map_err(PublishRefused::Topic)?;
        let data = message.slice(topic.as_bytes().len()..);
        let owner = topic.owner(self.mailboxes.len());
        let command = Command::Publish {
            topic,
            data,
            reply: None,
            key: None,
        };
        match self.waker.send(&self.mailboxes[owner], command) {
            Ok(()) => Ok(()),
            Err(WakeError::Full(_)) => Err(PublishRefused::Full),
            // The command is queued; the shard takes it at its next turn.
            Err(WakeError::Submit(error)) => {
                tracing::warn!(%error, "waking a shard for a publish failed");
                Ok(())
            }
        }
    }
}
