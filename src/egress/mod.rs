//! The egress thread: one side thread with its own tokio runtime (current-thread) for what
//! leaves ringcast over the network on its own initiative: webhooks. The NATS bridge
//! ([`nats`]) has a thread and runtime of its own, so that a slow webhook receiver and a slow
//! NATS never hold each other up.
//!
//! The shards never wait for it and never allocate for it. Each shard's broker decides events
//! (`broker::event`), and the shard pushes them into its own bounded [`feed::EventFeed`]. This
//! thread takes them from every feed, encodes each once as JSON, and queues it to every webhook
//! endpoint that wants it; each endpoint's delivery task sends its queue in order, signed,
//! retried, bounded (`webhook`). A slow or dead receiver fills only its own queue, whose oldest
//! events then go (counted): the shards and the other endpoints carry on.
//!
//! Besides this thread, tokio starts up to [`BLOCKING_THREADS_MAX`] threads on demand for
//! name lookups (getaddrinfo blocks), ended after ten idle seconds.
//!
//! When the server stops, the shards stop first (their last events, connection.closed among
//! them, are in the feeds); then this thread takes what the feeds hold, delivers what it can
//! within the drain time, and counts the rest as dropped (`reason="shutdown"`).

pub mod feed;
pub mod nats;
pub mod occupancy;
pub mod webhook;

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::broker::event::{EventKind, EventKinds};
use crate::broker::{Event, EventFilter};
use feed::{EventFeed, INTAKE_INTERVAL, IntakeSignal};
use occupancy::{OccupancyCounters, OccupancyQueue, OccupancySettings};
use webhook::delivery::{Clock, Delivery, EndpointState, http_client};
use webhook::metrics::{EndpointMetrics, WebhookMetrics};
use webhook::payload::encode_event;
use webhook::signature::Signer;

/// Threads tokio may start for blocking name lookups.
pub const BLOCKING_THREADS_MAX: usize = 2;

/// What the egress thread is started with.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// The webhook endpoints, checked (`webhook::config::parse_all`).
    pub endpoints: Vec<webhook::Endpoint>,
    pub shards: usize,
    /// Events each shard's feed holds (`webhook_shard_events_max`).
    pub feed_events_max: usize,
    /// The address requests leave from (`webhook_source_address`), or the system's choice.
    pub source_address: Option<IpAddr>,
    /// Clustered, with an endpoint for `topic.occupied` or `topic.vacated`: those are decided
    /// for the whole cluster (`occupancy`).
    pub occupancy: Option<OccupancySettings>,
}

/// What one shard holds of the egress: its feed, which events to decide, and the metrics its
/// scrapes show.
#[derive(Clone, Debug)]
pub struct EgressLink {
    pub feed: Arc<EventFeed>,
    pub filter: EventFilter,
    pub metrics: Arc<WebhookMetrics>,
}

/// A request to stop, with the time left to deliver.
#[derive(Debug, Default)]
struct StopSignal {
    requested: AtomicBool,
    drain_ms: AtomicU64,
    notify: Notify,
}

/// The running egress thread.
#[derive(Debug)]
pub struct Egress {
    thread: JoinHandle<()>,
    stop: Arc<StopSignal>,
    links: Vec<EgressLink>,
}

impl Egress {
    /// Builds every endpoint's HTTP client (so that a TLS set-up error stops the start) and
    /// starts the thread.
    pub fn start(settings: EgressSettings) -> io::Result<Egress> {
        let signal = Arc::new(IntakeSignal::default());
        let feeds: Vec<Arc<EventFeed>> = (0..settings.shards)
            .map(|_| {
                Arc::new(EventFeed::new(
                    settings.feed_events_max,
                    Arc::clone(&signal),
                ))
            })
            .collect();
        let metrics = Arc::new(WebhookMetrics {
            endpoints: settings
                .endpoints
                .iter()
                .map(|endpoint| EndpointMetrics::new(&endpoint.name))
                .collect(),
            feeds: feeds.clone(),
            occupancy: settings
                .occupancy
                .as_ref()
                .map(|_| Arc::new(OccupancyCounters::default())),
        });
        let mut clients = Vec::with_capacity(settings.endpoints.len());
        for endpoint in &settings.endpoints {
            let client = http_client(endpoint, settings.source_address).map_err(|error| {
                io::Error::other(format!("webhook {}: HTTP client: {error}", endpoint.name))
            })?;
            clients.push(client);
        }
        let filter = event_filter(&settings.endpoints);
        let links = feeds
            .iter()
            .map(|feed| EgressLink {
                feed: Arc::clone(feed),
                filter: filter.clone(),
                metrics: Arc::clone(&metrics),
            })
            .collect();
        let stop = Arc::new(StopSignal::default());
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ringcast-egress".into())
            .spawn(move || {
                let run = Run {
                    occupancy: settings.occupancy,
                    endpoints: settings.endpoints,
                    clients,
                    feeds,
                    signal,
                    stop: thread_stop,
                    metrics,
                };
                if let Err(error) = run.run() {
                    error!(%error, "the egress thread failed: webhooks are not delivered");
                }
            })?;
        Ok(Egress {
            thread,
            stop,
            links,
        })
    }

    /// Shard `shard`'s link.
    pub fn link(&self, shard: usize) -> EgressLink {
        self.links[shard].clone()
    }

    /// Takes what the feeds hold, delivers for up to `drain`, and ends the thread. Call after
    /// the shards stopped, so that their last events are delivered too.
    pub fn stop(self, drain: Duration) {
        self.stop
            .drain_ms
            .store(drain.as_millis() as u64, Ordering::SeqCst);
        self.stop.requested.store(true, Ordering::SeqCst);
        self.stop.notify.notify_one();
        if self.thread.join().is_err() {
            error!("the egress thread panicked");
        }
    }
}

/// Which events the shards decide: every kind some endpoint wants, and for published messages
/// the topic patterns of the endpoints that want them.
fn event_filter(endpoints: &[webhook::Endpoint]) -> EventFilter {
    let kinds = endpoints
        .iter()
        .fold(EventKinds::default(), |kinds, endpoint| {
            kinds.union(endpoint.kinds)
        });
    let message_topics = endpoints
        .iter()
        .filter(|endpoint| endpoint.kinds.contains(EventKind::MessagePublished))
        .flat_map(|endpoint| endpoint.topics.iter().cloned())
        .collect();
    EventFilter::new(kinds, message_topics)
}

/// The thread's work.
struct Run {
    occupancy: Option<OccupancySettings>,
    endpoints: Vec<webhook::Endpoint>,
    clients: Vec<reqwest::Client>,
    feeds: Vec<Arc<EventFeed>>,
    signal: Arc<IntakeSignal>,
    stop: Arc<StopSignal>,
    metrics: Arc<WebhookMetrics>,
}

impl Run {
    fn run(self) -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS_MAX)
            .thread_name("ringcast-egress-lookup")
            .build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, self.deliver());
        Ok(())
    }

    async fn deliver(self) {
        let clock = Clock::new();
        let id_prefix = format!("msg_{:016x}", fastrand::u64(..));
        let mut states = Vec::with_capacity(self.endpoints.len());
        let mut tasks = Vec::with_capacity(self.endpoints.len());
        let endpoints = self.endpoints.into_iter().zip(self.clients);
        for (index, (endpoint, client)) in endpoints.enumerate() {
            info!(endpoint = endpoint.name, events = ?endpoint.kinds, "webhook endpoint ready");
            let signer = Signer::new(&endpoint.key);
            let state = Rc::new(EndpointState::new(
                endpoint,
                index,
                Arc::clone(&self.metrics),
            ));
            states.push(Rc::clone(&state));
            let delivery = Delivery {
                state,
                client,
                signer,
                clock,
                id_prefix: id_prefix.clone(),
            };
            tasks.push(tokio::task::spawn_local(delivery.run()));
        }
        let states: Rc<[Rc<EndpointState>]> = states.into();
        let occupancy = self.occupancy.map(|settings| {
            let queue = Rc::new(OccupancyQueue::new(settings.changes_max));
            let counters = Arc::clone(self.metrics.occupancy.as_ref().expect("made with it"));
            let routed = Rc::clone(&states);
            let emit: Rc<dyn Fn(Event)> = Rc::new(move |event| {
                route(&event, &routed, clock.now_ms(), wall_ms());
            });
            let task = occupancy::run(settings, Rc::clone(&queue), Arc::clone(&counters), emit);
            (queue, counters, tokio::task::spawn_local(task))
        });
        let local = occupancy
            .as_ref()
            .map(|(queue, counters, _)| (&**queue, &**counters));
        intake(&self.feeds, &self.signal, &states, local, clock, &self.stop).await;
        let drain = Duration::from_millis(self.stop.drain_ms.load(Ordering::SeqCst));
        let deadline = tokio::time::Instant::now() + drain;
        if let Some((queue, _, task)) = occupancy {
            // The last local changes (the shards closed their clients) are made cluster-wide
            // within the drain time, before the endpoints stop taking events.
            queue.close();
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        for state in states.iter() {
            state.stop();
        }
        for task in tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        for state in states.iter() {
            let undelivered = state.drop_undelivered();
            if undelivered > 0 {
                warn!(
                    endpoint = state.endpoint.name,
                    undelivered, "stopping: webhook events left undelivered"
                );
            }
        }
    }
}

/// Takes events from the feeds while they come (every [`INTAKE_INTERVAL`]), sleeps when none
/// do, and returns after the look that follows a stop request.
async fn intake(
    feeds: &[Arc<EventFeed>],
    signal: &IntakeSignal,
    states: &[Rc<EndpointState>],
    occupancy: Option<(&OccupancyQueue, &OccupancyCounters)>,
    clock: Clock,
    stop: &StopSignal,
) {
    loop {
        let stopping = stop.requested.load(Ordering::SeqCst);
        let taken = take_events(feeds, states, occupancy, clock);
        if stopping {
            return;
        }
        if taken > 0 {
            tokio::select! {
                () = tokio::time::sleep(INTAKE_INTERVAL) => {}
                () = stop.notify.notified() => {}
            }
            continue;
        }
        signal.going_to_sleep();
        if feeds.iter().any(|feed| !feed.is_empty()) {
            signal.awake();
            continue;
        }
        tokio::select! {
            () = signal.sleep() => {}
            () = stop.notify.notified() => {}
        }
    }
}

/// Takes every event the feeds hold and queues each to the endpoints that want it (a local
/// change of occupancy, when clustered, to the occupancy task instead). Returns how many it
/// took.
fn take_events(
    feeds: &[Arc<EventFeed>],
    states: &[Rc<EndpointState>],
    occupancy: Option<(&OccupancyQueue, &OccupancyCounters)>,
    clock: Clock,
) -> usize {
    let now_ms = clock.now_ms();
    let wall_ms = wall_ms();
    let mut taken = 0;
    for feed in feeds {
        while let Some(event) = feed.pop() {
            taken += 1;
            if occupancy.is_some_and(|(queue, counters)| queue.offer(&event, counters)) {
                continue;
            }
            route(&event, states, now_ms, wall_ms);
        }
    }
    taken
}

/// The wall clock in ms since the Unix epoch (the events' timestamps).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Encodes `event` once, if some endpoint wants it, and queues it to each that does.
fn route(event: &Event, states: &[Rc<EndpointState>], now_ms: u64, wall_ms: u64) {
    let kind = event.kind();
    let topic = event.topic();
    let mut json: Option<Bytes> = None;
    for state in states {
        if !state.wants(kind, topic) {
            continue;
        }
        let json = json.get_or_insert_with(|| {
            let mut out = Vec::new();
            encode_event(event, wall_ms, &mut out);
            Bytes::from(out)
        });
        state.offer(kind, topic, json.clone(), now_ms);
    }
}
