//! Fanout in a worker: the publishers (tokio-uring + tungstenite: a few connections, one
//! publish per message), the per-thread tallies the subscribers (`super::subscribers`, on the
//! io_uring client) record their checked deliveries in, and the worker's main-thread driver
//! that answers the coordinator's `step` and `collect` commands from those tallies.
//!
//! A thread's tally sits behind a mutex that only the worker's main thread also takes (to
//! collect a step), so it is never contended by another runtime; a subscriber thread takes it
//! once per turn, not once per delivery.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};
use tungstenite::Message;

use super::connection::{Closed, Connection};
use super::scenario::{Counters, Phase};
use crate::fanout::payload::{self, PayloadData};
use crate::fanout::reach::ReachTally;
use crate::fanout::sequence::OrderFaults;
use crate::fanout::steps::Step;
use crate::fanout::wire::{Decoder, Incoming, Protocol};
use crate::fanout::{monotonic_ns, topic_name};
use crate::histogram::{EncodedHistogram, merge_into, new_histogram, record};
use crate::protocol::{
    Cause, CollectOrder, Command, Event, FanoutPlan, FanoutRole, FanoutTotals, StepCollected,
    StepPublished,
};

/// Most publishes queued before one flush, so that a publisher far behind its schedule still
/// sends in bounded batches and notices a stop.
const PUBLISH_BATCH_MAX: u64 = 1024;

/// How long after a step's planned end the driver waits for publishers that have not
/// reported before it reports the step with what it has.
const PUBLISH_GRACE: Duration = Duration::from_secs(10);

/// State shared by a worker's main thread and its runtimes.
pub struct FanoutShared {
    /// The step the publishers are to run; set by the main thread on a `step` command.
    pub step: watch::Sender<Option<Step>>,
    /// One tally per thread, each taken by that thread's tasks and by the main thread.
    pub threads: Vec<Mutex<ThreadTally>>,
}

impl FanoutShared {
    pub fn new(threads: usize) -> Self {
        Self {
            step: watch::Sender::new(None),
            threads: (0..threads).map(|_| Mutex::default()).collect(),
        }
    }
}

/// What one thread's fanout connections need besides the thread context.
#[derive(Clone)]
pub struct FanoutThread {
    pub shared: Arc<FanoutShared>,
    pub thread_index: usize,
}

impl FanoutThread {
    pub(super) fn tally(&self) -> MutexGuard<'_, ThreadTally> {
        lock(&self.shared.threads[self.thread_index])
    }
}

/// A tally is plain counts: one left behind by a panicking task is still right to read.
fn lock(mutex: &Mutex<ThreadTally>) -> MutexGuard<'_, ThreadTally> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What one thread's connections measured, for the steps not yet collected.
#[derive(Default)]
pub struct ThreadTally {
    /// Subscribers acknowledged and still open, per topic.
    pub(super) subscribers_per_topic: HashMap<u32, u64>,
    steps: BTreeMap<u32, StepTally>,
    /// Steps below this were collected; their deliveries from now on are late.
    collected_below: u32,
    pub(super) totals: FanoutTotals,
    published: BTreeMap<u32, PublishTally>,
    publishers_ready: u64,
    /// Publishers whose task ended (failed or stopped).
    publishers_gone: u64,
}

struct StepTally {
    deliveries: u64,
    latency_ns: Histogram<u64>,
    faults: OrderFaults,
    reach: ReachTally,
}

impl Default for StepTally {
    fn default() -> Self {
        Self {
            deliveries: 0,
            latency_ns: new_histogram(),
            faults: OrderFaults::default(),
            reach: ReachTally::default(),
        }
    }
}

#[derive(Default)]
struct PublishTally {
    per_topic: BTreeMap<u32, u64>,
    publishers_done: u64,
    duration_ms: u64,
}

/// One delivery as a subscriber checked it.
pub(super) struct Delivery {
    pub(super) data: PayloadData,
    pub(super) topic: u32,
    pub(super) latency_ns: u64,
    pub(super) verdict: crate::fanout::sequence::Verdict,
    pub(super) seq_mismatch: bool,
}

impl ThreadTally {
    pub(super) fn record(&mut self, delivery: &Delivery) {
        if delivery.data.step < self.collected_below {
            self.totals.late_deliveries += 1;
            return;
        }
        let tally = self.steps.entry(delivery.data.step).or_default();
        tally.deliveries += 1;
        record(&mut tally.latency_ns, delivery.latency_ns);
        tally.faults.record(delivery.verdict);
        tally.faults.seq_mismatches += u64::from(delivery.seq_mismatch);
        let counter = delivery.data.counter;
        tally
            .reach
            .record(delivery.topic, counter, delivery.latency_ns);
    }

    fn count(&mut self, incoming: &Incoming) {
        match incoming {
            Incoming::Reset => self.totals.resets += 1,
            Incoming::Error(_) => self.totals.server_errors += 1,
            Incoming::Unexpected
            | Incoming::Delivery { .. }
            | Incoming::Subscribed { .. }
            | Incoming::Opened => self.totals.unexpected += 1,
            Incoming::PingRequest | Incoming::Ignored => {}
        }
    }
}

/// Queues `text` as the protocol's kind of data frame.
fn queue(connection: &mut Connection, protocol: Protocol, text: String) -> Result<(), Cause> {
    let message = if protocol.is_binary() {
        Message::binary(text.into_bytes())
    } else {
        Message::text(text)
    };
    connection
        .queue(message)
        .map_err(|Closed| Cause::ClosedEarly)
}

/// Decodes every data message already received into `events`.
fn decode_received(
    connection: &mut Connection,
    decoder: &mut Decoder,
    events: &mut Vec<Incoming>,
) -> Result<(), Cause> {
    while let Some(message) = connection
        .poll_message()
        .map_err(|Closed| Cause::ClosedEarly)?
    {
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            _ => continue,
        };
        decoder.feed(bytes, &mut |incoming| events.push(incoming));
    }
    if decoder.is_broken() {
        return Err(Cause::ClosedEarly);
    }
    Ok(())
}

/// Waits for the acknowledgement of what was just queued (`subscribed` for `topic`, or the
/// NATS PONG, or the Socket.IO CONNECT's answer). `Ok(Some(seq))` when acknowledged,
/// `Ok(None)` when stopped first.
async fn await_ack(
    connection: &mut Connection,
    phase: &mut watch::Receiver<Phase>,
    decoder: &mut Decoder,
    topic: Option<u32>,
    deadline: Instant,
) -> Result<Option<u64>, Cause> {
    let accept = |incoming: &Incoming| match incoming {
        Incoming::Subscribed { topic: acked, seq } if *acked == topic || acked.is_none() => {
            Some(*seq)
        }
        _ => None,
    };
    await_incoming(connection, phase, decoder, deadline, accept).await
}

/// Waits until the server sends what `accept` takes (its value is returned), answering pings
/// meanwhile; an error from the server fails the wait. `Ok(None)` when stopped first.
async fn await_incoming(
    connection: &mut Connection,
    phase: &mut watch::Receiver<Phase>,
    decoder: &mut Decoder,
    deadline: Instant,
    accept: impl Fn(&Incoming) -> Option<u64>,
) -> Result<Option<u64>, Cause> {
    let mut events = Vec::new();
    let protocol = decoder.protocol();
    let wait = async {
        loop {
            connection
                .flush()
                .await
                .map_err(|Closed| Cause::ClosedEarly)?;
            connection
                .receive()
                .await
                .map_err(|Closed| Cause::ClosedEarly)?;
            decode_received(connection, decoder, &mut events)?;
            for event in events.drain(..) {
                if let Some(value) = accept(&event) {
                    return Ok(value);
                }
                match event {
                    Incoming::Error(_) => return Err(Cause::NoSubscribeAck),
                    Incoming::PingRequest => queue(connection, protocol, protocol.pong().into())?,
                    _ => {}
                }
            }
        }
    };
    tokio::select! {
        acked = timeout_at(deadline, wait) => match acked {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(cause)) => Err(cause),
            Err(_elapsed) => Err(Cause::NoSubscribeAck),
        },
        _ = phase.wait_for(|phase| *phase == Phase::Stop) => Ok(None),
    }
}

/// What a fanout connection task needs.
pub struct FanoutConnection<'a> {
    pub fanout: &'a FanoutPlan,
    pub thread: &'a FanoutThread,
    pub counters: &'a Counters,
    /// The connection's index within its worker.
    pub index: u64,
}

impl FanoutConnection<'_> {
    /// Runs the connection as subscriber or publisher until the stop. `Ok(true)` when it was
    /// ready and lasted to the end; `Ok(false)` when stopped before it was ready.
    pub async fn run(
        &self,
        connection: &mut Connection,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<bool, Cause> {
        let outcome = match self.fanout.role {
            FanoutRole::Subscribers { .. } => {
                unreachable!("subscribers run on the io_uring client (worker::subscribers)")
            }
            FanoutRole::Publishers { .. } => {
                let outcome = self.publish(connection, phase).await;
                self.thread.tally().publishers_gone += 1;
                outcome
            }
        };
        if outcome.is_err() {
            // Not ready, or no longer: the coordinator counts it among the failed.
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

impl FanoutConnection<'_> {
    /// A publisher: ready once connected (NATS: once its CONNECT is answered), then runs each
    /// step the main thread announces, in order, until the stop.
    async fn publish(
        &self,
        connection: &mut Connection,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<bool, Cause> {
        let protocol = self.fanout.protocol;
        let mut decoder = Decoder::new(protocol);
        let deadline = Instant::now() + Duration::from_millis(self.fanout.subscribe_timeout_ms);
        if protocol.server_speaks_first() {
            let opened = |incoming: &Incoming| matches!(incoming, Incoming::Opened).then_some(0);
            if await_incoming(connection, phase, &mut decoder, deadline, opened)
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        if let Some(hello) = protocol.publisher_hello() {
            queue(connection, protocol, hello.into())?;
            if await_ack(connection, phase, &mut decoder, None, deadline)
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        self.thread.tally().publishers_ready += 1;
        self.counters.ready.fetch_add(1, Ordering::Relaxed);
        let FanoutRole::Publishers { first_index, total } = self.fanout.role else {
            unreachable!("only publishers publish")
        };
        let topics: Vec<u32> = (first_index + self.index..u64::from(self.fanout.topics))
            .step_by(total as usize)
            .map(|topic| topic as u32)
            .collect();
        let mut publisher = Publisher {
            names: topics.iter().map(|topic| topic_name(*topic)).collect(),
            counters: vec![0; topics.len()],
            topics,
            decoder,
        };
        let mut steps = self.thread.shared.step.subscribe();
        let mut next_step = 0;
        loop {
            let wake = tokio::select! {
                step = steps.wait_for(|step| step.is_some_and(|step| step.index >= next_step)) => {
                    Wake::Step(step.ok().and_then(|step| *step))
                }
                received = connection.receive() => Wake::Received(received),
                _ = phase.wait_for(|phase| *phase == Phase::Stop) => Wake::Stop,
            };
            match wake {
                Wake::Step(Some(step)) => {
                    publisher.run_step(self, connection, phase, step).await?;
                    next_step = step.index + 1;
                }
                Wake::Received(received) => {
                    received.map_err(|Closed| Cause::ClosedEarly)?;
                    publisher.answer(self, connection)?;
                    connection
                        .flush()
                        .await
                        .map_err(|Closed| Cause::ClosedEarly)?;
                }
                // The driver is gone (Step(None)) only when the worker is ending.
                Wake::Step(None) | Wake::Stop => return Ok(true),
            }
        }
    }
}

/// What woke an idle publisher.
enum Wake {
    Step(Option<Step>),
    Received(Result<(), Closed>),
    Stop,
}

/// One publisher's topics and their counters.
struct Publisher {
    topics: Vec<u32>,
    names: Vec<String>,
    /// The last counter published per topic (same order as `topics`).
    counters: Vec<u64>,
    decoder: Decoder,
}

impl Publisher {
    /// Handles what the server sent a publisher: answers pings, counts the rest.
    fn answer(
        &mut self,
        context: &FanoutConnection<'_>,
        connection: &mut Connection,
    ) -> Result<(), Cause> {
        let mut events = Vec::new();
        decode_received(connection, &mut self.decoder, &mut events)?;
        let protocol = self.decoder.protocol();
        let mut tally = context.thread.tally();
        for event in events {
            match event {
                Incoming::PingRequest => queue(connection, protocol, protocol.pong().into())?,
                Incoming::Ignored => {}
                other => tally.count(&other),
            }
        }
        Ok(())
    }

    /// Publishes the step's share of messages on an even schedule until the step's end, then
    /// records what was sent, also when the connection failed on the way.
    async fn run_step(
        &mut self,
        context: &FanoutConnection<'_>,
        connection: &mut Connection,
        phase: &mut watch::Receiver<Phase>,
        step: Step,
    ) -> Result<(), Cause> {
        let started = Instant::now();
        let mut sent_per_topic = vec![0; self.topics.len()];
        let outcome = self
            .publish_step(context, connection, phase, step, &mut sent_per_topic)
            .await;
        let mut tally = context.thread.tally();
        let published = tally.published.entry(step.index).or_default();
        for (topic, sent) in self.topics.iter().zip(&sent_per_topic) {
            *published.per_topic.entry(*topic).or_default() += sent;
        }
        if outcome.is_ok() {
            published.publishers_done += 1;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        published.duration_ms = published.duration_ms.max(duration_ms);
        tally.totals.published += sent_per_topic.iter().sum::<u64>();
        outcome
    }

    async fn publish_step(
        &mut self,
        context: &FanoutConnection<'_>,
        connection: &mut Connection,
        phase: &mut watch::Receiver<Phase>,
        step: Step,
        sent_per_topic: &mut [u64],
    ) -> Result<(), Cause> {
        let protocol = context.fanout.protocol;
        let share = self.topics.len() as f64 / f64::from(context.fanout.topics);
        let rate = step.rate_per_second * share;
        let started = Instant::now();
        let end = started + Duration::from_millis(step.duration_ms);
        let planned = (rate * step.duration_ms as f64 / 1000.0).round() as u64;
        let mut sent = 0u64;
        let mut data = String::new();
        let mut batch = String::new();
        loop {
            if *phase.borrow() == Phase::Stop {
                return Ok(());
            }
            let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(planned);
            let batch_end = due.min(sent + PUBLISH_BATCH_MAX);
            while sent < batch_end {
                let slot = (sent % self.topics.len() as u64) as usize;
                self.counters[slot] += 1;
                sent_per_topic[slot] += 1;
                let message = PayloadData {
                    counter: self.counters[slot],
                    sent_ns: monotonic_ns(),
                    step: step.index,
                };
                payload::encode_kind(
                    message,
                    context.fanout.payload_kind,
                    context.fanout.payload_bytes,
                    &mut data,
                );
                protocol.publish(&self.names[slot], &data, &mut batch);
                if !protocol.is_binary() {
                    queue(connection, protocol, std::mem::take(&mut batch))?;
                }
                sent += 1;
            }
            if !batch.is_empty() {
                queue(connection, protocol, std::mem::take(&mut batch))?;
            }
            connection
                .flush()
                .await
                .map_err(|Closed| Cause::ClosedEarly)?;
            let next = if sent < planned {
                started + Duration::from_secs_f64(sent as f64 / rate)
            } else {
                end
            };
            if sent >= planned && Instant::now() >= end {
                return Ok(());
            }
            tokio::select! {
                _ = sleep_until(next.min(end)) => {}
                received = connection.receive() => {
                    received.map_err(|Closed| Cause::ClosedEarly)?;
                    self.answer(context, connection)?;
                }
                _ = phase.wait_for(|phase| *phase == Phase::Stop) => return Ok(()),
            }
        }
    }
}

/// The worker's main-thread side: turns `step` and `collect` commands into events.
pub struct FanoutDriver {
    shared: Arc<FanoutShared>,
    worker_index: usize,
    commands: mpsc::Receiver<Command>,
    /// The step being published and its planned end.
    step: Option<(Step, Instant)>,
    /// The collection under way and when its drain times out.
    collect: Option<(CollectOrder, Instant)>,
}

impl FanoutDriver {
    pub fn new(
        shared: Arc<FanoutShared>,
        worker_index: usize,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            shared,
            worker_index,
            commands,
            step: None,
            collect: None,
        }
    }

    /// Takes new commands and sends the events that have become due.
    pub fn poll(&mut self, output: &mut impl Write) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Step(step) => {
                    let end = Instant::now() + Duration::from_millis(step.duration_ms);
                    self.shared.step.send_replace(Some(step));
                    self.step = Some((step, end));
                }
                Command::Collect(order) => {
                    let timeout = Duration::from_millis(order.drain_timeout_ms);
                    self.collect = Some((order, Instant::now() + timeout));
                }
                other => eprintln!("worker: unexpected command {other:?}"),
            }
        }
        if let Some(published) = self.published() {
            self.step = None;
            super::send(output, &Event::StepPublished(published));
        }
        if let Some(collected) = self.collected() {
            self.collect = None;
            super::send(output, &Event::StepCollected(Box::new(collected)));
        }
    }

    /// The step's report once every ready publisher has finished it or is gone, or once the
    /// grace after its planned end has passed.
    fn published(&self) -> Option<StepPublished> {
        let (step, end) = self.step?;
        let mut report = StepPublished {
            worker_index: self.worker_index,
            step: step.index,
            published_per_topic: Vec::new(),
            duration_ms: 0,
            publishers: 0,
            cpu_ns: crate::system::process_cpu_ns(),
        };
        let (mut ready, mut gone) = (0, 0);
        let mut per_topic: BTreeMap<u32, u64> = BTreeMap::new();
        for thread in &self.shared.threads {
            let tally = lock(thread);
            ready += tally.publishers_ready;
            gone += tally.publishers_gone;
            let Some(published) = tally.published.get(&step.index) else {
                continue;
            };
            report.publishers += published.publishers_done;
            report.duration_ms = report.duration_ms.max(published.duration_ms);
            for (topic, count) in &published.per_topic {
                *per_topic.entry(*topic).or_default() += count;
            }
        }
        let finished = report.publishers + gone >= ready;
        if !finished && Instant::now() < end + PUBLISH_GRACE {
            return None;
        }
        let topics = per_topic
            .keys()
            .next_back()
            .map_or(0, |last| *last as usize + 1);
        report.published_per_topic = vec![0; topics];
        for (topic, count) in per_topic {
            report.published_per_topic[topic as usize] = count;
        }
        Some(report)
    }

    /// The collected step once its deliveries are all in or the drain has timed out.
    fn collected(&self) -> Option<StepCollected> {
        let (order, drain_end) = self.collect.as_ref()?;
        let published = |topic: u32| {
            order
                .published_per_topic
                .get(topic as usize)
                .copied()
                .unwrap_or(0)
        };
        let (mut deliveries, mut expected) = (0, 0);
        for thread in &self.shared.threads {
            let tally = lock(thread);
            deliveries += tally
                .steps
                .get(&order.step)
                .map_or(0, |step| step.deliveries);
            expected += tally
                .subscribers_per_topic
                .iter()
                .map(|(topic, subscribers)| subscribers * published(*topic))
                .sum::<u64>();
        }
        let drained = deliveries >= expected;
        if !drained && Instant::now() < *drain_end {
            return None;
        }
        Some(self.take_step(order.step, expected, drained))
    }

    /// Removes the step's tallies from every thread and merges them into one report.
    fn take_step(&self, step: u32, expected: u64, drained: bool) -> StepCollected {
        let mut latency_ns = new_histogram();
        let mut reach = ReachTally::default();
        let mut subscribers: BTreeMap<u32, u64> = BTreeMap::new();
        let mut report = StepCollected {
            worker_index: self.worker_index,
            step,
            expected,
            drained,
            cpu_ns: crate::system::process_cpu_ns(),
            ..StepCollected::default()
        };
        for thread in &self.shared.threads {
            let mut tally = lock(thread);
            tally.collected_below = tally.collected_below.max(step + 1);
            for (topic, count) in &tally.subscribers_per_topic {
                *subscribers.entry(*topic).or_default() += count;
            }
            let Some(step_tally) = tally.steps.remove(&step) else {
                continue;
            };
            report.deliveries += step_tally.deliveries;
            report.faults.merge(&step_tally.faults);
            merge_into(&mut latency_ns, &step_tally.latency_ns);
            reach.merge(&step_tally.reach);
        }
        report.latency_ns = EncodedHistogram::encode(&latency_ns);
        report.reach = reach.entries();
        report.reach_truncated = reach.truncated;
        report.subscribers_per_topic = subscribers.into_iter().collect();
        report
    }

    /// Counts over the whole run, all threads.
    pub fn totals(&self) -> FanoutTotals {
        let mut totals = FanoutTotals::default();
        for thread in &self.shared.threads {
            totals.merge(&lock(thread).totals);
        }
        totals
    }
}
