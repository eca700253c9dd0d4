//! One endpoint's delivery task on the egress thread: a driver around the sans-IO
//! [`EventQueue`] and [`RetryPolicy`]. It takes the next request when it is due, signs and
//! POSTs it, and retries it until it is delivered, given up or the endpoint is disabled; then
//! the next. One request is in flight per endpoint, so the endpoint receives events in the order
//! they were queued.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::config::Endpoint;
use super::firewall::{self, PublicOnlyResolver};
use super::metrics::{DropReason, EndpointMetrics, WebhookMetrics};
use super::queue::{Batch, EventQueue, Pushed, QueueLimits};
use super::retry::{Outcome, RetryPolicy, Verdict, parse_retry_after};
use super::signature::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer};
use crate::broker::EventKind;

/// Most bytes of a response body read (and thrown away) so that its connection can be reused;
/// a longer body closes the connection instead.
const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024;

/// The egress thread's clock: milliseconds since it started, on tokio's clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn instant(&self, at_ms: u64) -> Instant {
        self.started + Duration::from_millis(at_ms)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// One endpoint, shared by the intake (which queues events) and its delivery task.
pub struct EndpointState {
    pub endpoint: Endpoint,
    index: usize,
    queue: RefCell<EventQueue>,
    metrics: Arc<WebhookMetrics>,
    /// Tells the delivery task that events were queued, or that the thread is stopping.
    queued: Notify,
    disabled: Cell<bool>,
    stopping: Cell<bool>,
}

impl EndpointState {
    pub fn new(endpoint: Endpoint, index: usize, metrics: Arc<WebhookMetrics>) -> EndpointState {
        let limits = QueueLimits {
            bytes_max: endpoint.queue_bytes_max,
            batch_max: endpoint.batch_max,
            batch_wait_ms: endpoint.batch_wait_ms,
        };
        EndpointState {
            endpoint,
            index,
            queue: RefCell::new(EventQueue::new(limits)),
            metrics,
            queued: Notify::new(),
            disabled: Cell::new(false),
            stopping: Cell::new(false),
        }
    }

    fn metrics(&self) -> &EndpointMetrics {
        &self.metrics.endpoints[self.index]
    }

    /// Whether the endpoint takes an event of `kind` about `topic`.
    pub fn wants(&self, kind: EventKind, topic: Option<&[u8]>) -> bool {
        !self.disabled.get() && self.endpoint.wants(kind, topic)
    }

    /// Queues an event encoded as `json`.
    pub fn offer(&self, kind: EventKind, topic: Option<&[u8]>, json: Bytes, now_ms: u64) {
        let metrics = self.metrics();
        EndpointMetrics::add(&metrics.events, 1);
        let pushed = self.queue.borrow_mut().push(kind, topic, json, now_ms);
        match pushed {
            Pushed::Queued { dropped } => metrics.dropped(DropReason::QueueFull, dropped as u64),
            Pushed::Coalesced => EndpointMetrics::add(&metrics.coalesced, 2),
            Pushed::Refused => metrics.dropped(DropReason::QueueFull, 1),
        }
        self.publish_levels();
        self.queued.notify_one();
    }

    /// The thread stops: deliver what is queued, then end.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.queued.notify_one();
    }

    /// The thread gave up at its deadline: what still waits is dropped and counted. Returns
    /// how many.
    pub fn drop_undelivered(&self) -> usize {
        let undelivered = self.queue.borrow_mut().clear();
        self.metrics()
            .dropped(DropReason::Shutdown, undelivered as u64);
        self.publish_levels();
        undelivered
    }

    fn publish_levels(&self) {
        let queue = self.queue.borrow();
        let metrics = self.metrics();
        let depth = queue.depth() as u64;
        metrics
            .queue_depth
            .store(depth, std::sync::atomic::Ordering::Relaxed);
        let bytes = queue.bytes() as u64;
        metrics
            .queue_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The HTTP client of one endpoint: no redirects, no proxy from the environment, HTTP/1.1 over
/// rustls, the attempt's time limit, one idle connection kept, and unless the endpoint allows
/// private destinations, names resolved to public addresses only.
pub fn http_client(
    endpoint: &Endpoint,
    source_address: Option<std::net::IpAddr>,
) -> reqwest::Result<reqwest::Client> {
    let timeout = Duration::from_millis(endpoint.timeout_ms);
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(1)
        .user_agent(concat!("ringcast-webhooks/", env!("CARGO_PKG_VERSION")))
        .local_address(source_address);
    if !endpoint.allow_private_destinations {
        builder = builder.dns_resolver(PublicOnlyResolver);
    }
    builder.build()
}

/// What a delivery task needs besides its endpoint.
pub struct Delivery {
    pub state: Rc<EndpointState>,
    pub client: reqwest::Client,
    pub signer: Signer,
    pub clock: Clock,
    /// Random per process start: webhook ids of one run never repeat those of another.
    pub id_prefix: String,
}

impl Delivery {
    /// Delivers requests until the thread stops and the queue is empty.
    pub async fn run(self) {
        let mut body = Vec::new();
        let mut serial: u64 = 0;
        while let Some(batch) = self.next_batch(&mut body).await {
            serial += 1;
            let id = format!("{}_{}_{serial}", self.id_prefix, self.state.index);
            let payload = Bytes::from(std::mem::take(&mut body));
            self.deliver(&batch, &id, payload).await;
            self.state.queue.borrow_mut().finish();
            self.state.publish_levels();
        }
    }

    /// Waits for the next request to be due and takes it; `None` once stopping with nothing
    /// left (or disabled).
    async fn next_batch(&self, body: &mut Vec<u8>) -> Option<Batch> {
        loop {
            if self.state.disabled.get() {
                return None;
            }
            let now_ms = self.clock.now_ms();
            let due_ms = {
                let mut queue = self.state.queue.borrow_mut();
                if let Some(batch) = queue.take(now_ms, body) {
                    drop(queue);
                    self.state.publish_levels();
                    return Some(batch);
                }
                queue.due_ms()
            };
            match due_ms {
                // Stopping: what waits goes now, without waiting for its batch to fill.
                Some(_) if self.state.stopping.get() => {
                    let mut queue = self.state.queue.borrow_mut();
                    let batch = queue.take(u64::MAX, body);
                    drop(queue);
                    self.state.publish_levels();
                    return batch;
                }
                Some(due_ms) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.clock.instant(due_ms)) => {}
                        () = self.state.queued.notified() => {}
                    }
                }
                None if self.state.stopping.get() => return None,
                None => self.state.queued.notified().await,
            }
        }
    }

    /// Attempts one request until it is delivered, given up, or the endpoint is disabled.
    async fn deliver(&self, batch: &Batch, id: &str, body: Bytes) {
        let endpoint = &self.state.endpoint;
        let metrics = self.state.metrics();
        let policy = RetryPolicy {
            attempts_max: endpoint.attempts_max,
            retry_base_ms: endpoint.retry_base_ms,
            retry_max_ms: endpoint.retry_max_ms,
        };
        for attempt in 1.. {
            EndpointMetrics::add(&metrics.attempts, 1);
            let outcome = self.attempt(id, &body).await;
            let verdict = policy.judge(outcome, attempt, |ceiling| fastrand::u64(0..=ceiling));
            match verdict {
                Verdict::Delivered => {
                    EndpointMetrics::add(&metrics.requests_delivered, 1);
                    EndpointMetrics::add(&metrics.events_delivered, batch.events as u64);
                    let waited_ms = self.clock.now_ms().saturating_sub(batch.oldest_queued_ms);
                    metrics.latency.observe(waited_ms as f64 / 1000.0);
                    return;
                }
                Verdict::Retry { class, after_ms } => {
                    metrics.failure(class);
                    EndpointMetrics::add(&metrics.retries, 1);
                    debug!(
                        endpoint = endpoint.name,
                        id,
                        attempt,
                        ?outcome,
                        after_ms,
                        "webhook attempt failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                }
                Verdict::GiveUp { class } => {
                    metrics.failure(class);
                    metrics.dropped(DropReason::AttemptsExhausted, batch.events as u64);
                    warn!(
                        endpoint = endpoint.name,
                        id,
                        attempts = attempt,
                        ?outcome,
                        events = batch.events,
                        "webhook request given up: its events are dropped"
                    );
                    return;
                }
                Verdict::Disable => {
                    metrics.failure(super::retry::FailureClass::Gone);
                    self.disable(batch);
                    return;
                }
            }
        }
    }

    /// 410 Gone: the endpoint takes nothing more; what it holds is dropped.
    fn disable(&self, batch: &Batch) {
        self.state.disabled.set(true);
        let metrics = self.state.metrics();
        metrics
            .disabled
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let waiting = self.state.queue.borrow_mut().clear();
        metrics.dropped(DropReason::Disabled, (batch.events + waiting) as u64);
        error!(
            endpoint = self.state.endpoint.name,
            dropped = batch.events + waiting,
            "webhook endpoint answered 410 Gone: disabled until ringcast restarts"
        );
    }

    /// One signed POST; its outcome.
    async fn attempt(&self, id: &str, body: &Bytes) -> Outcome {
        let timestamp_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let signature = self.signer.sign(id, timestamp_seconds, body);
        let request = self
            .client
            .post(self.state.endpoint.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, timestamp_seconds)
            .header(HEADER_SIGNATURE, signature)
            .body(body.clone());
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after_ms = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                // Read a short body to its end so that the connection is reused.
                let mut read = 0;
                while read <= RESPONSE_BODY_BYTES_MAX {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        Ok(None) | Err(_) => break,
                    }
                }
                Outcome::Status {
                    status,
                    retry_after_ms,
                }
            }
            Err(error) if error.is_timeout() => Outcome::Timeout,
            Err(error) if firewall::is_refused(&error) => Outcome::DestinationRefused,
            Err(_) => Outcome::Connection,
        }
    }
}
