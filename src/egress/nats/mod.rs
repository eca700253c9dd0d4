//! The NATS bridge: ringcast nodes joined through NATS JetStream (`nats_urls`).
//!
//! Like the webhook delivery, the bridge runs off the shard loops: one thread
//! (`ringcast-nats`) with its own current-thread tokio runtime and async-nats. At start-up it
//! connects, checks that the server has JetStream, and creates the stream of every topic (or
//! checks the one there): subjects `<nats_subject_prefix>.>`, `nats_history_messages_max`
//! messages kept per subject, direct gets allowed, file storage, `nats_replicas` copies. The
//! stream's creation time names the cluster's sequence space (its epoch): a stream deleted and
//! made again is a new epoch.
//!
//! Without `nats_urls` none of this exists and ringcast is the single node it always was.

pub mod config;
pub mod feed;
pub mod metrics;
pub mod serve;
pub mod subject;

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use tokio::sync::{Notify, oneshot};
use tracing::{error, info, warn};

pub use config::{NatsConfig, NatsSettings};
use feed::PublishFeed;
use metrics::ClusterMetrics;

use crate::broker::{Command, Epoch};
use crate::egress::feed::IntakeSignal;

/// The way from the bridge into the shards' mailboxes. The server implements it over the
/// mailboxes and a waker of its own (this layer does not name the shards').
pub trait ShardInbox: Send {
    /// Shards there are (a topic's owner is found among them).
    fn shards(&self) -> usize;
    /// Queues `command` for `shard` and wakes it; hands it back when the mailbox is full.
    fn send(&mut self, shard: usize, command: Command) -> Result<(), Command>;
}

/// What one shard holds of the bridge.
#[derive(Clone, Debug)]
pub struct NatsLink {
    pub feed: Arc<PublishFeed>,
    /// Whether the bridge is connected to NATS now (`/health`).
    pub connected: Arc<AtomicBool>,
    /// The cluster's epoch: every topic's sequence space.
    pub epoch: Epoch,
    /// What the bridge counts, for the shard's `/metrics`.
    pub metrics: Arc<ClusterMetrics>,
}

/// How long after the connect timeout the start-up waits for the bridge's answer: the stream's
/// creation and check are two requests of `nats_request_timeout_ms` each.
const START_REQUESTS_COUNT: u32 = 3;

/// Why the bridge did not start, or stopped working: who is at fault is in the name.
#[derive(Debug)]
pub enum NatsError {
    /// No server of `nats_urls` could be reached within `nats_connect_timeout_ms`.
    Connect { urls: String, reason: String },
    /// The server answered, but has no JetStream (start it with `-js`).
    NoJetStream { urls: String },
    /// Creating, reading or updating the stream failed.
    Stream { stream: String, reason: String },
    /// The stream exists with settings that cannot hold ringcast's topics.
    StreamMismatch { stream: String, reason: String },
    /// The bridge thread or its runtime could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for NatsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsError::Connect { urls, reason } => {
                write!(formatter, "cannot connect to NATS at {urls}: {reason}")
            }
            NatsError::NoJetStream { urls } => write!(
                formatter,
                "the NATS server at {urls} has no JetStream: start nats-server with -js \
                 (and a store directory, -sd)"
            ),
            NatsError::Stream { stream, reason } => {
                write!(formatter, "JetStream stream {stream:?}: {reason}")
            }
            NatsError::StreamMismatch { stream, reason } => write!(
                formatter,
                "JetStream stream {stream:?} exists but cannot be used: {reason}"
            ),
            NatsError::Thread(error) => write!(formatter, "the NATS bridge thread: {error}"),
        }
    }
}

impl std::error::Error for NatsError {}

/// What the bridge shares with the rest of the process.
#[derive(Debug, Default)]
pub struct BridgeState {
    /// Whether the client is connected to a NATS server now (`/health` says `degraded` while
    /// it is not).
    connected: Arc<AtomicBool>,
    /// The cluster's epoch: the stream's creation time in nanoseconds.
    epoch: AtomicU64,
    /// Whether the stream's reading has reached its end once since the start: the owners'
    /// history is then JetStream's.
    caught_up: AtomicBool,
    /// Whether the connection was lost since it was last made: its next `Connected` is a
    /// reconnect (the first connection's event may come before or after `set_up` ends).
    lost: AtomicBool,
}

impl BridgeState {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }
}

/// The running bridge thread.
#[derive(Debug)]
pub struct NatsBridge {
    thread: JoinHandle<()>,
    stop: Arc<Notify>,
    state: Arc<BridgeState>,
    stream: String,
    feeds: Vec<Arc<PublishFeed>>,
    metrics: Arc<ClusterMetrics>,
    /// Hands the shards' inbox to the thread once they run (`serve`).
    inbox: Option<oneshot::Sender<Box<dyn ShardInbox>>>,
}

impl fmt::Debug for dyn ShardInbox {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ShardInbox({} shards)", self.shards())
    }
}

impl NatsBridge {
    /// Starts the thread, connects, and creates or checks the stream; returns once that is
    /// done, or with what failed.
    pub fn start(settings: NatsSettings, shards: usize) -> Result<NatsBridge, NatsError> {
        let state = Arc::new(BridgeState::default());
        let stop = Arc::new(Notify::new());
        let (ready_sender, ready_receiver) = mpsc::channel();
        let (inbox_sender, inbox_receiver) = oneshot::channel();
        let signal = Arc::new(IntakeSignal::default());
        let feeds: Vec<Arc<PublishFeed>> = (0..shards)
            .map(|_| {
                Arc::new(PublishFeed::new(
                    settings.shard_publishes_max,
                    Arc::clone(&signal),
                ))
            })
            .collect();
        let metrics = Arc::new(ClusterMetrics::new(
            Arc::clone(&state.connected),
            feeds.clone(),
            settings.shard_publishes_max,
        ));
        let work = Thread {
            settings: settings.clone(),
            state: Arc::clone(&state),
            metrics: Arc::clone(&metrics),
            stop: Arc::clone(&stop),
            feeds: feeds.clone(),
            signal,
        };
        let stream = settings.stream.clone();
        let wait = settings.connect_timeout * settings.urls.len() as u32
            + settings.request_timeout * START_REQUESTS_COUNT;
        let thread = std::thread::Builder::new()
            .name("ringcast-nats".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_sender.send(Err(NatsError::Thread(error)));
                        return;
                    }
                };
                runtime.block_on(work.run(ready_sender, inbox_receiver));
            })
            .map_err(NatsError::Thread)?;
        // The thread's own time limits end the set-up; this wait is only a backstop.
        let answer = ready_receiver
            .recv_timeout(wait + Duration::from_secs(5))
            .unwrap_or_else(|_| {
                Err(NatsError::Thread(std::io::Error::other(
                    "the bridge did not finish starting in time",
                )))
            });
        let bridge = NatsBridge {
            thread,
            stop,
            state,
            stream,
            feeds,
            metrics,
            inbox: Some(inbox_sender),
        };
        match answer {
            Ok(()) => Ok(bridge),
            Err(error) => {
                bridge.stop();
                Err(error)
            }
        }
    }

    /// What the bridge shares: its connection state and the cluster's epoch.
    pub fn state(&self) -> Arc<BridgeState> {
        Arc::clone(&self.state)
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Shard `shard`'s link: its feed of publishes, and the epoch.
    pub fn link(&self, shard: usize) -> NatsLink {
        NatsLink {
            feed: Arc::clone(&self.feeds[shard]),
            connected: Arc::clone(&self.state.connected),
            epoch: self.state.epoch(),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// What the bridge counts (the tests read it; `/metrics` shows it).
    pub fn metrics(&self) -> Arc<ClusterMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Starts publishing and reading the stream into the shards, once they run.
    pub fn serve(&mut self, inbox: Box<dyn ShardInbox>) {
        if let Some(sender) = self.inbox.take() {
            let _ = sender.send(inbox);
        }
    }

    /// Ends the thread (closing the NATS connection).
    pub fn stop(self) {
        self.stop.notify_one();
        if self.thread.join().is_err() {
            error!("the NATS bridge thread panicked");
        }
    }
}

/// What the bridge thread runs with.
struct Thread {
    settings: NatsSettings,
    state: Arc<BridgeState>,
    metrics: Arc<ClusterMetrics>,
    stop: Arc<Notify>,
    feeds: Vec<Arc<PublishFeed>>,
    signal: Arc<IntakeSignal>,
}

impl Thread {
    /// Sets up and says so, waits for the shards' inbox, then publishes and reads the stream
    /// until told to stop.
    async fn run(
        self,
        ready: mpsc::Sender<Result<(), NatsError>>,
        inbox: oneshot::Receiver<Box<dyn ShardInbox>>,
    ) {
        let (client, context, stream) =
            match set_up(&self.settings, &self.state, &self.metrics).await {
                Ok(joined) => {
                    let _ = ready.send(Ok(()));
                    joined
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
        let serving = async {
            let Ok(inbox) = inbox.await else {
                return std::future::pending().await;
            };
            let bridge = Rc::new(serve::Bridge::new(
                self.settings.clone(),
                context,
                stream,
                Arc::clone(&self.state),
                Arc::clone(&self.metrics),
                inbox,
            ));
            let publishing = serve::publish_loop(
                Rc::clone(&bridge),
                self.feeds.clone(),
                Arc::clone(&self.signal),
            );
            tokio::join!(publishing, serve::consume_loop(bridge));
        };
        tokio::select! {
            () = serving => {}
            () = self.stop.notified() => {}
        }
        if let Err(error) = client.drain().await {
            warn!(%error, "closing the NATS connection");
        }
    }
}

/// Connects, checks JetStream, and creates or checks the stream; records its epoch.
async fn set_up(
    settings: &NatsSettings,
    state: &Arc<BridgeState>,
    metrics: &Arc<ClusterMetrics>,
) -> Result<
    (
        async_nats::Client,
        jetstream::Context,
        jetstream::stream::Stream,
    ),
    NatsError,
> {
    let urls = settings.urls.join(",");
    let events_state = Arc::clone(state);
    let events_metrics = Arc::clone(metrics);
    let connect = async_nats::ConnectOptions::new()
        .name("ringcast")
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout))
        .event_callback(move |event| {
            let state = Arc::clone(&events_state);
            let metrics = Arc::clone(&events_metrics);
            async move { note_event(&state, &metrics, event) }
        })
        .connect(settings.urls.as_slice());
    let client = tokio::time::timeout(
        settings.connect_timeout * settings.urls.len() as u32,
        connect,
    )
    .await
    .map_err(|_| NatsError::Connect {
        urls: urls.clone(),
        reason: "timed out".into(),
    })?
    .map_err(|error| NatsError::Connect {
        urls: urls.clone(),
        reason: error.to_string(),
    })?;
    state.connected.store(true, Ordering::Release);
    let mut context = jetstream::new(client.clone());
    context.set_timeout(settings.request_timeout);
    check_jetstream(&client, &urls, &settings.stream).await?;
    let info = ensure_stream(&context, settings).await?;
    let epoch = info.created.unix_timestamp_nanos() as u64;
    state.epoch.store(epoch, Ordering::Release);
    if info.state.messages == 0 {
        state.caught_up.store(true, Ordering::Release);
    }
    let stream = context
        .get_stream(&settings.stream)
        .await
        .map_err(|error| NatsError::Stream {
            stream: settings.stream.clone(),
            reason: format!("opening it: {error}"),
        })?;
    info!(
        stream = settings.stream,
        urls,
        messages = info.state.messages,
        epoch = format_args!("{epoch:016x}"),
        "joined the NATS JetStream cluster"
    );
    Ok((client, context, stream))
}

/// Asks the server for the account's JetStream (a raw request: the client's typed answer
/// wants fields nats-server 2.9 does not send). No responder, or the server's "not enabled"
/// error, means the server runs without JetStream.
async fn check_jetstream(
    client: &async_nats::Client,
    urls: &str,
    stream: &str,
) -> Result<(), NatsError> {
    let no_jetstream = || NatsError::NoJetStream {
        urls: urls.to_owned(),
    };
    let answer = match client.request("$JS.API.INFO", "".into()).await {
        Ok(answer) => answer,
        Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(no_jetstream());
        }
        Err(error) => {
            return Err(NatsError::Stream {
                stream: stream.to_owned(),
                reason: format!("asking for the account's JetStream: {error}"),
            });
        }
    };
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    match answer.get("error") {
        None => Ok(()),
        Some(error) if error["err_code"] == JETSTREAM_NOT_ENABLED_CODE => Err(no_jetstream()),
        Some(error) => Err(NatsError::Stream {
            stream: stream.to_owned(),
            reason: format!("asking for the account's JetStream: {error}"),
        }),
    }
}

/// JetStream's error code for an account without JetStream (and 10076 for the server).
const JETSTREAM_NOT_ENABLED_CODE: u64 = 10039;

fn note_event(state: &BridgeState, metrics: &ClusterMetrics, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            state.connected.store(true, Ordering::Release);
            if state.lost.swap(false, Ordering::AcqRel) {
                ClusterMetrics::add(&metrics.reconnects);
            }
            info!("NATS connection back");
        }
        async_nats::Event::Disconnected | async_nats::Event::Closed => {
            state.connected.store(false, Ordering::Release);
            state.lost.store(true, Ordering::Release);
            warn!(%event, "NATS connection lost: reconnecting");
        }
        other => warn!(event = %other, "NATS"),
    }
}

/// The stream ringcast wants for `settings`.
pub fn stream_config(settings: &NatsSettings) -> StreamConfig {
    StreamConfig {
        name: settings.stream.clone(),
        subjects: vec![subject::wildcard(&settings.subject_prefix)],
        max_messages_per_subject: settings.history_messages_max as i64,
        max_bytes: settings.stream_bytes_max as i64,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: settings.replicas,
        allow_direct: true,
        duplicate_window: settings.duplicate_window,
        ..StreamConfig::default()
    }
}

/// Creates the stream when missing. One that exists must take the same subjects; its history
/// depth, size and replicas are brought to the settings (the last node started wins, logged).
async fn ensure_stream(
    context: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<jetstream::stream::Info, NatsError> {
    let wanted = stream_config(settings);
    let stream_error = |reason: String| NatsError::Stream {
        stream: settings.stream.clone(),
        reason,
    };
    let existing = match context.get_stream(&settings.stream).await {
        Ok(mut stream) => Some(
            stream
                .info()
                .await
                .map_err(|error| stream_error(format!("reading its state: {error}")))?
                .clone(),
        ),
        Err(error) if is_stream_not_found(&error) => None,
        Err(error) => return Err(stream_error(format!("looking it up: {error}"))),
    };
    let Some(info) = existing else {
        let stream = context
            .create_stream(wanted)
            .await
            .map_err(|error| stream_error(format!("creating it: {error}")))?;
        info!(stream = settings.stream, "created the JetStream stream");
        return Ok(stream.cached_info().clone());
    };
    if info.config.subjects != wanted.subjects {
        return Err(NatsError::StreamMismatch {
            stream: settings.stream.clone(),
            reason: format!(
                "its subjects are {:?}, ringcast's are {:?} (nats_subject_prefix)",
                info.config.subjects, wanted.subjects
            ),
        });
    }
    let same = info.config.max_messages_per_subject == wanted.max_messages_per_subject
        && info.config.max_bytes == wanted.max_bytes
        && info.config.num_replicas == wanted.num_replicas
        && info.config.duplicate_window == wanted.duplicate_window
        && info.config.allow_direct;
    if same {
        return Ok(info);
    }
    warn!(
        stream = settings.stream,
        "the stream's limits differ from this node's settings: updating them"
    );
    let config = StreamConfig {
        max_messages_per_subject: wanted.max_messages_per_subject,
        max_bytes: wanted.max_bytes,
        num_replicas: wanted.num_replicas,
        duplicate_window: wanted.duplicate_window,
        allow_direct: true,
        ..info.config.clone()
    };
    let updated = context
        .update_stream(config)
        .await
        .map_err(|error| stream_error(format!("updating its limits: {error}")))?;
    Ok(updated)
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
