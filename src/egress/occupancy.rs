//! Clustered: `topic.occupied` and `topic.vacated` decided for the whole cluster, not per node.
//!
//! Each node's brokers decide when a topic gets its first local subscriber and loses its last
//! (`broker::event`). With `nats_urls`, those local changes do not go to the webhooks as they
//! are: this task makes them cluster-wide through a JetStream key-value bucket,
//! `<nats_stream>_occupancy`, whose key for topic T (`t.<T in base64url>`) holds the ids of
//! the nodes that have subscribers of T. A node adds or removes its own id with a
//! compare-and-set on the key's revision (retried when another node changed it first), and
//! the one change that took the set from empty to not empty (or back) is the one that sends
//! `topic.occupied` (or `topic.vacated`) to the webhooks: exactly one node decides each, as
//! JetStream orders the writes of one key.
//!
//! A node that dies leaves its id behind. Every node writes its id to a second bucket,
//! `<nats_stream>_nodes`, every third of `nats_node_liveness_ms`, whose entries JetStream
//! forgets after `nats_node_liveness_ms`; every node looks through the occupancy keys every
//! half of it and removes the ids of nodes no longer there, the same compare-and-set deciding
//! who sends the `topic.vacated` that the dead node's last subscribers owed. A node whose
//! heartbeat could not be written for as long (cut off from NATS) may have been taken for
//! dead: it writes again the id of every topic it has subscribers of.
//!
//! Local changes wait in a queue of at most `nats_occupancy_changes_max`; a change that
//! undoes the one waiting for its topic cancels it (nothing to tell the cluster), so the queue
//! holds at most one change per topic. Past the limit a change is dropped, counted
//! (`cluster_occupancy_changes{outcome="dropped"}`), as are changes NATS refused.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, Store, UpdateErrorKind};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::broker::{Event, TopicName};

/// Attempts of one compare-and-set before the change is given up (counted): only other
/// nodes changing the same key at the same instant make one fail.
const ATTEMPTS_MAX: usize = 64;

/// What the occupancy task is started with.
#[derive(Clone, Debug)]
pub struct OccupancySettings {
    pub urls: Vec<String>,
    /// The buckets are `<stream>_occupancy` and `<stream>_nodes`.
    pub stream: String,
    pub replicas: usize,
    pub liveness: Duration,
    pub changes_max: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub topic_bytes_max: usize,
}

/// A local change waiting to be made cluster-wide.
#[derive(Debug)]
struct Change {
    topic: TopicName,
    occupied: bool,
}

/// What the task counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct OccupancyCounters {
    pub applied: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub swept: std::sync::atomic::AtomicU64,
}

/// The queue of local changes, shared by the intake (which offers them) and the task.
#[derive(Debug, Default)]
pub struct OccupancyQueue {
    changes: RefCell<VecDeque<Change>>,
    changes_max: usize,
    notify: Notify,
    /// The intake will offer nothing more: the task ends once the queue is empty.
    closed: Cell<bool>,
}

impl OccupancyQueue {
    pub fn new(changes_max: usize) -> OccupancyQueue {
        OccupancyQueue {
            changes_max,
            ..OccupancyQueue::default()
        }
    }

    /// Takes a local `topic.occupied` or `topic.vacated`; any other event is not its own.
    /// Returns whether it took the event.
    pub fn offer(&self, event: &Event, counters: &OccupancyCounters) -> bool {
        let (topic, occupied) = match event {
            Event::TopicOccupied { topic } => (topic, true),
            Event::TopicVacated { topic } => (topic, false),
            _ => return false,
        };
        let mut changes = self.changes.borrow_mut();
        let waiting = changes.iter().rposition(|change| change.topic == *topic);
        if let Some(index) = waiting.filter(|&index| changes[index].occupied != occupied) {
            changes.remove(index);
            return true;
        }
        if changes.len() >= self.changes_max {
            counters
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return true;
        }
        changes.push_back(Change {
            topic: topic.clone(),
            occupied,
        });
        self.notify.notify_one();
        true
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
    }

    async fn next(&self) -> Option<Change> {
        loop {
            if let Some(change) = self.changes.borrow_mut().pop_front() {
                return Some(change);
            }
            if self.closed.get() {
                return None;
            }
            self.notify.notified().await;
        }
    }
}

/// The node's view of the buckets.
struct Buckets {
    occupancy: Store,
    nodes: Store,
    node: String,
}

/// Runs the task until the queue is closed and empty: connects (retrying), then makes each
/// local change cluster-wide and hands the cluster's decisions to `emit`.
pub async fn run(
    settings: OccupancySettings,
    queue: Rc<OccupancyQueue>,
    counters: std::sync::Arc<OccupancyCounters>,
    emit: Rc<dyn Fn(Event)>,
) {
    let node = format!("{:016x}", fastrand::u64(..));
    let buckets = loop {
        match connect(&settings, &node).await {
            Ok(buckets) => break Rc::new(buckets),
            Err(error) => {
                warn!(%error, "cluster occupancy: NATS not reachable, trying again");
                if queue.closed.get() {
                    return;
                }
                tokio::time::sleep(settings.connect_timeout).await;
            }
        }
    };
    info!(node, "cluster occupancy: decided through JetStream");
    let occupied: Rc<RefCell<HashSet<TopicName>>> = Rc::default();
    let reassert = Rc::new(Notify::new());
    let heartbeat = tokio::task::spawn_local(heartbeat(
        Rc::clone(&buckets),
        settings.liveness,
        Rc::clone(&reassert),
    ));
    let sweeper = tokio::task::spawn_local(sweep_forever(
        Rc::clone(&buckets),
        settings.clone(),
        std::sync::Arc::clone(&counters),
        Rc::clone(&emit),
    ));
    loop {
        tokio::select! {
            change = queue.next() => {
                let Some(change) = change else { break };
                match change.occupied {
                    true => occupied.borrow_mut().insert(change.topic.clone()),
                    false => occupied.borrow_mut().remove(&change.topic),
                };
                apply(&buckets, &change.topic, change.occupied, &counters, &*emit).await;
            }
            () = reassert.notified() => {
                let topics: Vec<TopicName> = occupied.borrow().iter().cloned().collect();
                info!(topics = topics.len(), "cluster occupancy: writing this node's topics again");
                for topic in topics {
                    apply(&buckets, &topic, true, &counters, &*emit).await;
                }
            }
        }
    }
    heartbeat.abort();
    sweeper.abort();
}

async fn connect(settings: &OccupancySettings, node: &str) -> Result<Buckets, String> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout));
    let client = options
        .connect(settings.urls.as_slice())
        .await
        .map_err(|error| error.to_string())?;
    let context = jetstream::new(client);
    let bucket = |suffix: &str, max_age: Duration| kv::Config {
        bucket: format!("{}_{suffix}", settings.stream),
        history: 1,
        max_age,
        num_replicas: settings.replicas,
        storage: jetstream::stream::StorageType::File,
        ..kv::Config::default()
    };
    let occupancy = open_bucket(&context, bucket("occupancy", Duration::ZERO)).await?;
    let nodes = open_bucket(&context, bucket("nodes", settings.liveness)).await?;
    nodes
        .put(node, Bytes::from_static(b"1"))
        .await
        .map_err(|error| error.to_string())?;
    Ok(Buckets {
        occupancy,
        nodes,
        node: node.to_owned(),
    })
}

/// The bucket `config` names: found, or created by the first node as JetStream's key-value
/// buckets are made (a stream `KV_<bucket>` of the subjects `$KV.<bucket>.>`, one message
/// kept per key). Made here rather than by async-nats' bucket creation, whose request
/// nats-server 2.9 answers in a form the client does not read.
async fn open_bucket(context: &jetstream::Context, config: kv::Config) -> Result<Store, String> {
    if let Ok(store) = context.get_key_value(config.bucket.as_str()).await {
        return Ok(store);
    }
    let duplicate_window = match config.max_age {
        Duration::ZERO => Duration::from_secs(120),
        max_age => max_age.min(Duration::from_secs(120)),
    };
    let stream = jetstream::stream::Config {
        name: format!("KV_{}", config.bucket),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history,
        max_age: config.max_age,
        storage: config.storage,
        num_replicas: config.num_replicas,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window,
        ..jetstream::stream::Config::default()
    };
    if let Err(error) = context.create_stream(stream).await {
        // Another node may have made it meanwhile: it is looked up again below.
        debug!(%error, bucket = config.bucket, "cluster occupancy: bucket not created");
    }
    context
        .get_key_value(config.bucket.as_str())
        .await
        .map_err(|error| error.to_string())
}

/// The key of `topic` in the occupancy bucket (base64url: a key allows few characters).
fn key_of(topic: &[u8]) -> String {
    format!("t.{}", URL_SAFE_NO_PAD.encode(topic))
}

fn topic_of(key: &str, topic_bytes_max: usize) -> Option<TopicName> {
    let name = URL_SAFE_NO_PAD.decode(key.strip_prefix("t.")?).ok()?;
    TopicName::new(Bytes::from(name), topic_bytes_max).ok()
}

/// The node ids a key's value names (comma-separated).
fn node_set(value: &[u8]) -> Vec<String> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds (`occupied`) or removes this node's id in `topic`'s set, and emits the cluster-wide
/// event when this write took the set from empty to not empty or back.
async fn apply(
    buckets: &Buckets,
    topic: &TopicName,
    occupied: bool,
    counters: &OccupancyCounters,
    emit: &dyn Fn(Event),
) {
    let node = buckets.node.clone();
    let edit = move |set: &mut Vec<String>| match occupied {
        true if set.contains(&node) => false,
        true => {
            set.push(node.clone());
            true
        }
        false => {
            let before = set.len();
            set.retain(|id| *id != node);
            set.len() != before
        }
    };
    match compare_and_set(&buckets.occupancy, &key_of(topic.as_bytes()), edit).await {
        Ok(Some((was_empty, now_empty))) => {
            counters
                .applied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            announce(topic, was_empty, now_empty, emit);
        }
        Ok(None) => {}
        Err(error) => {
            counters
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(topic = topic.as_str(), %error, "cluster occupancy: change not made");
        }
    }
}

fn announce(topic: &TopicName, was_empty: bool, now_empty: bool, emit: &dyn Fn(Event)) {
    let topic = topic.clone();
    match (was_empty, now_empty) {
        (true, false) => emit(Event::TopicOccupied { topic }),
        (false, true) => emit(Event::TopicVacated { topic }),
        _ => {}
    }
}

/// Reads `key`'s set, lets `edit` change it (returning whether it did), and writes it back
/// only if no other node wrote it meanwhile, else starts over. `Some((was_empty, now_empty))`
/// once written, `None` when `edit` changed nothing.
async fn compare_and_set(
    store: &Store,
    key: &str,
    mut edit: impl FnMut(&mut Vec<String>) -> bool,
) -> Result<Option<(bool, bool)>, String> {
    for _ in 0..ATTEMPTS_MAX {
        let entry = store.entry(key).await.map_err(|error| error.to_string())?;
        let (mut set, revision) = match &entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                (node_set(&entry.value), Some(entry.revision))
            }
            Some(entry) => (Vec::new(), Some(entry.revision)),
            None => (Vec::new(), None),
        };
        let was_empty = set.is_empty();
        if !edit(&mut set) {
            return Ok(None);
        }
        let value = Bytes::from(set.join(","));
        let written = match revision {
            Some(revision) => match store.update(key, value, revision).await {
                Ok(_) => true,
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => false,
                Err(error) => return Err(error.to_string()),
            },
            None => match store.create(key, value).await {
                Ok(_) => true,
                Err(error) if error.kind() == CreateErrorKind::AlreadyExists => false,
                Err(error) => return Err(error.to_string()),
            },
        };
        if written {
            return Ok(Some((was_empty, set.is_empty())));
        }
    }
    Err(format!(
        "{ATTEMPTS_MAX} attempts lost to other nodes' writes"
    ))
}

/// Writes this node's id every third of the liveness; after a write that failed for as long
/// as the liveness (the node may have been taken for dead), asks for this node's topics to be
/// written again.
async fn heartbeat(buckets: Rc<Buckets>, liveness: Duration, reassert: Rc<Notify>) {
    let mut last_written = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(liveness / 3).await;
        match buckets
            .nodes
            .put(buckets.node.as_str(), Bytes::from_static(b"1"))
            .await
        {
            Ok(_) => {
                if last_written.elapsed() >= liveness {
                    reassert.notify_one();
                }
                last_written = tokio::time::Instant::now();
            }
            Err(error) => debug!(%error, "cluster occupancy: heartbeat not written"),
        }
    }
}

async fn sweep_forever(
    buckets: Rc<Buckets>,
    settings: OccupancySettings,
    counters: std::sync::Arc<OccupancyCounters>,
    emit: Rc<dyn Fn(Event)>,
) {
    loop {
        tokio::time::sleep(settings.liveness / 2).await;
        if let Err(error) = sweep(&buckets, &settings, &counters, &*emit).await {
            debug!(%error, "cluster occupancy: sweep not done");
        }
    }
}

/// Every key of `store` now.
async fn keys_of(store: &Store) -> Result<Vec<String>, String> {
    let mut keys = store.keys().await.map_err(|error| error.to_string())?;
    let mut all = Vec::new();
    while let Some(key) = keys.next().await {
        all.push(key.map_err(|error| error.to_string())?);
    }
    Ok(all)
}

/// Removes the ids of nodes whose heartbeat expired from every topic's set, sending the
/// `topic.vacated` of a set this empties.
async fn sweep(
    buckets: &Buckets,
    settings: &OccupancySettings,
    counters: &OccupancyCounters,
    emit: &dyn Fn(Event),
) -> Result<(), String> {
    let mut live: HashSet<String> = keys_of(&buckets.nodes).await?.into_iter().collect();
    live.insert(buckets.node.clone());
    for key in keys_of(&buckets.occupancy).await? {
        let Some(topic) = topic_of(&key, settings.topic_bytes_max) else {
            continue;
        };
        let edit = |set: &mut Vec<String>| {
            let before = set.len();
            set.retain(|id| live.contains(id));
            set.len() != before
        };
        if let Some((was_empty, now_empty)) =
            compare_and_set(&buckets.occupancy, &key, edit).await?
        {
            counters
                .swept
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            announce(&topic, was_empty, now_empty, emit);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &'static str) -> TopicName {
        TopicName::new(Bytes::from_static(name.as_bytes()), 64).unwrap()
    }

    /// Proves a change that undoes the one waiting for its topic cancels it, so that the
    /// queue holds at most one change per topic, and that past the limit changes are dropped
    /// and counted; other events are not taken.
    #[test]
    fn the_queue_keeps_one_change_per_topic() {
        let queue = OccupancyQueue::new(2);
        let counters = OccupancyCounters::default();
        let occupied = |name| Event::TopicOccupied { topic: topic(name) };
        let vacated = |name| Event::TopicVacated { topic: topic(name) };
        assert!(queue.offer(&occupied("A"), &counters));
        assert!(queue.offer(&vacated("A"), &counters));
        assert!(queue.changes.borrow().is_empty());
        assert!(queue.offer(&occupied("A"), &counters));
        assert!(queue.offer(&occupied("B"), &counters));
        assert!(queue.offer(&occupied("C"), &counters));
        assert_eq!(queue.changes.borrow().len(), 2);
        assert_eq!(
            counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let other = Event::SubscriptionCreated {
            topic: topic("A"),
            connection: crate::broker::event::ConnectionId {
                shard: 0,
                serial: 1,
            },
        };
        assert!(!queue.offer(&other, &counters));
    }

    /// Keys hold any topic name, and read back to it.
    #[test]
    fn keys_round_trip() {
        for name in ["AAPL", "a.b*c>", "100% sure", "é"] {
            let key = key_of(name.as_bytes());
            assert!(
                key.bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte)),
                "{key}"
            );
            if let Ok(topic) = TopicName::new(Bytes::from(name), 64) {
                assert_eq!(topic_of(&key, 64), Some(topic));
            }
        }
        assert_eq!(node_set(b"a,b,"), ["a", "b"]);
        assert!(node_set(b"").is_empty());
    }
}
