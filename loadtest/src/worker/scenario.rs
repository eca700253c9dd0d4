//! What one worker thread does: ramp its connections up at its share of the rate, then run
//! each connection through its scenario, bounded by timeouts and by the stop signal.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout_at};
use tungstenite::Message;

use super::connection::{Closed, Connection, Sizes, Target, open};
use super::fanout::{FanoutConnection, FanoutThread};
use crate::addresses::address_for;
use crate::histogram::{new_histogram, record};
use crate::protocol::{Cause, Failures, RampReport, ScenarioPlan, WorkerPlan};
use crate::ramp::RampController;

/// Where the run is, as the worker's main thread tells every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Opening connections and holding them.
    Ramp,
    /// The measured phase began at this instant.
    Proceed { at: Instant },
    /// End every connection now.
    Stop,
}

/// Counts shared by all threads of a worker, for progress reports.
#[derive(Debug, Default)]
pub struct Counters {
    pub attempted: AtomicU64,
    pub established: AtomicU64,
    /// Attempts that failed before the connection was established.
    pub failed: AtomicU64,
    /// Milliseconds from the worker's start to the latest end of a connection attempt.
    pub ramp_ms: AtomicU64,
    /// Echoes received and checked, warm-up included, for the rate-over-time plot; fanout:
    /// deliveries.
    pub messages: AtomicU64,
    /// Fanout: connections subscribed (publishers: ready to publish).
    pub ready: AtomicU64,
}

/// What one thread measured.
#[derive(Clone)]
pub struct ThreadStats {
    pub attempted: u64,
    pub established: u64,
    pub alive: u64,
    pub failures: Failures,
    pub connect_latency_ns: Histogram<u64>,
    pub round_trip_ns: Histogram<u64>,
    pub messages: u64,
    pub ramp: RampReport,
    pub buffer_shortages: u64,
}

impl ThreadStats {
    pub(super) fn new() -> Self {
        Self {
            attempted: 0,
            established: 0,
            alive: 0,
            failures: Failures::default(),
            connect_latency_ns: new_histogram(),
            round_trip_ns: new_histogram(),
            messages: 0,
            ramp: RampReport::default(),
            buffer_shortages: 0,
        }
    }
}

/// The latest copy of each thread's stats, for a report when a thread cannot finish in time
/// (an overloaded worker after `stop`): threads publish here about once a second and once
/// more when they see the stop.
pub struct StatsBoard {
    threads: Vec<Mutex<Option<ThreadStats>>>,
}

impl StatsBoard {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: (0..threads).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn publish(&self, thread_index: usize, stats: &ThreadStats) {
        let mut slot = self.threads[thread_index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(stats.clone());
    }

    /// Every thread's latest copy (a thread that never published contributes nothing).
    pub fn snapshots(&self) -> Vec<ThreadStats> {
        self.threads
            .iter()
            .filter_map(|slot| {
                slot.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            })
            .collect()
    }
}

/// Everything a thread's connection tasks share.
pub struct ThreadContext {
    pub plan: Arc<WorkerPlan>,
    pub target: Arc<Target>,
    pub phase: watch::Receiver<Phase>,
    pub counters: Arc<Counters>,
    /// The worker's start, the origin of `ramp_ms`.
    pub worker_started: Instant,
    /// Connection tasks of this thread that have not ended yet.
    pub open: Cell<u64>,
    /// Fanout only: the state the thread's connections share with the worker's main thread.
    pub fanout: Option<FanoutThread>,
    /// Connection attempts started and not yet established or failed.
    pub attempts_in_flight: Cell<u64>,
    /// The closed-loop ramp, fed by every attempt's outcome.
    pub ramp: RefCell<RampController>,
    /// Where this thread publishes copies of its stats.
    pub board: Arc<StatsBoard>,
    pub thread_index: usize,
}

/// Seconds a connection may take to send its close frame at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the ramp loop wakes to start the connections that have come due.
const RAMP_TICK: Duration = Duration::from_millis(1);

/// How often a thread publishes a copy of its stats for a partial report.
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one thread's share: `connection_indices` (indices within the worker) at `rate` per
/// second, with at most `open_max` connection tasks alive at once. Returns when every
/// connection has ended.
pub async fn run_thread(
    context: ThreadContext,
    connection_indices: Vec<u64>,
    rate: f64,
    open_max: u64,
) -> ThreadStats {
    assert!(rate > 0.0 && open_max > 0);
    let context = Rc::new(context);
    let stats = Rc::new(RefCell::new(ThreadStats::new()));
    // Churn ends its connections as it goes: keep only the tasks still running.
    let opens_end = match context.plan.scenario {
        ScenarioPlan::Churn { duration_ms, .. } => Some(Duration::from_millis(duration_ms)),
        _ => None,
    };
    let mut tasks = Vec::with_capacity(connection_indices.len().min(open_max as usize));
    // Not among `tasks`: it ends at the stop, or with the runtime when the run ends without.
    let _publisher = tokio_uring::spawn(publish_stats(Rc::clone(&context), Rc::downgrade(&stats)));
    let started = Instant::now();
    let mut next = 0;
    let mut limited = Duration::ZERO;
    while next < connection_indices.len() {
        if *context.phase.borrow() == Phase::Stop
            || opens_end.is_some_and(|end| started.elapsed() >= end)
        {
            break;
        }
        let tick_started = Instant::now();
        let due = (started.elapsed().as_secs_f64() * rate) as usize + 1;
        let due = due.min(connection_indices.len());
        while next < due
            && context.open.get() < open_max
            && context
                .ramp
                .borrow()
                .may_start(context.attempts_in_flight.get())
        {
            context.open.set(context.open.get() + 1);
            let task = run_connection(
                Rc::clone(&context),
                Rc::clone(&stats),
                connection_indices[next],
            );
            tasks.push(tokio_uring::spawn(task));
            next += 1;
        }
        let window_limited = next < due && context.open.get() < open_max;
        if opens_end.is_some() {
            tasks.retain(|task| !task.is_finished());
        }
        if next < connection_indices.len() {
            sleep(RAMP_TICK).await;
        }
        if window_limited {
            limited += tick_started.elapsed();
        }
    }
    {
        let ramp = context.ramp.borrow();
        let mut stats = stats.borrow_mut();
        stats.ramp.window_final = ramp.window();
        stats.ramp.cuts = ramp.cuts;
        stats.ramp.limited_ms = limited.as_millis() as u64;
    }
    for task in tasks {
        // A panicking connection task is a bug in this crate; let it surface.
        task.await.expect("connection task panicked");
    }
    let stats = Rc::into_inner(stats)
        .expect("every task has ended")
        .into_inner();
    context.board.publish(context.thread_index, &stats);
    stats
}

/// Publishes a copy of the thread's stats about once a second, and once more at the stop,
/// then ends (so the thread's run can end).
async fn publish_stats(context: Rc<ThreadContext>, stats: Weak<RefCell<ThreadStats>>) {
    let mut phase = context.phase.clone();
    loop {
        let Some(stats) = stats.upgrade() else {
            return;
        };
        {
            let mut stats = stats.borrow_mut();
            let ramp = context.ramp.borrow();
            stats.ramp.window_final = ramp.window();
            stats.ramp.cuts = ramp.cuts;
        }
        context.board.publish(context.thread_index, &stats.borrow());
        // No strong reference across the wait: the thread takes its stats back at the end.
        drop(stats);
        if *phase.borrow() == Phase::Stop {
            return;
        }
        let _ = timeout_at(
            Instant::now() + STATS_PUBLISH_INTERVAL,
            phase.wait_for(|phase| *phase == Phase::Stop),
        )
        .await;
    }
}

/// One connection from start to end; it leaves the thread's open count when it ends.
async fn run_connection(context: Rc<ThreadContext>, stats: Rc<RefCell<ThreadStats>>, index: u64) {
    run_connection_stages(&context, &stats, index).await;
    context.open.set(context.open.get() - 1);
}

async fn run_connection_stages(
    context: &Rc<ThreadContext>,
    stats: &Rc<RefCell<ThreadStats>>,
    index: u64,
) {
    context.counters.attempted.fetch_add(1, Ordering::Relaxed);
    context
        .attempts_in_flight
        .set(context.attempts_in_flight.get() + 1);
    stats.borrow_mut().attempted += 1;
    let mut phase = context.phase.clone();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(context.plan.connect_timeout_ms);
    let source = address_for(&context.plan.source_addresses, index);
    let sizes = sizes(&context.plan.scenario);
    let opened = tokio::select! {
        opened = open(&context.target, source, sizes, deadline) => Some(opened),
        _ = phase.wait_for(|phase| *phase == Phase::Stop) => None,
    };
    let ended_ms = context.worker_started.elapsed().as_millis() as u64;
    context
        .counters
        .ramp_ms
        .fetch_max(ended_ms, Ordering::Relaxed);
    context
        .attempts_in_flight
        .set(context.attempts_in_flight.get() - 1);
    match &opened {
        Some(Ok(_)) => context.ramp.borrow_mut().on_success(started.elapsed()),
        Some(Err(_)) => context.ramp.borrow_mut().on_failure(),
        None => {}
    }
    let mut connection = match opened {
        // Stopped while connecting: the attempt is neither a success nor a failure.
        None => return,
        Some(Err(cause)) => {
            context.counters.failed.fetch_add(1, Ordering::Relaxed);
            stats.borrow_mut().failures.record(cause);
            return;
        }
        Some(Ok(connection)) => connection,
    };
    context.counters.established.fetch_add(1, Ordering::Relaxed);
    {
        let mut stats = stats.borrow_mut();
        stats.established += 1;
        record(
            &mut stats.connect_latency_ns,
            started.elapsed().as_nanos() as u64,
        );
    }
    if let ScenarioPlan::Churn {
        pong_timeout_ms,
        close_timeout_ms,
        ..
    } = context.plan.scenario
    {
        let pong_deadline = Instant::now() + Duration::from_millis(pong_timeout_ms);
        let outcome = match prove_alive(&mut connection, &mut phase, index, pong_deadline).await {
            Ok(true) => {
                let close_deadline = Instant::now() + Duration::from_millis(close_timeout_ms);
                connection
                    .close_cleanly(close_deadline)
                    .await
                    .map(|()| true)
            }
            Ok(false) => {
                connection.close(Instant::now() + CLOSE_TIMEOUT).await;
                Ok(false)
            }
            Err(cause) => {
                connection.close(Instant::now() + CLOSE_TIMEOUT).await;
                Err(cause)
            }
        };
        match outcome {
            Ok(true) => stats.borrow_mut().alive += 1,
            Ok(false) => {}
            Err(cause) => stats.borrow_mut().failures.record(cause),
        }
        return;
    }
    if let (ScenarioPlan::Fanout(fanout), Some(thread)) = (&context.plan.scenario, &context.fanout)
    {
        let task = FanoutConnection {
            plan: &context.plan,
            fanout,
            thread,
            counters: &context.counters,
            index,
        };
        let outcome = task.run(&mut connection, &mut phase).await;
        record_outcome(stats, outcome);
        connection.close(Instant::now() + CLOSE_TIMEOUT).await;
        return;
    }
    let outcome = match hold(&mut connection, &mut phase).await {
        Err(Closed) => Err(Cause::ClosedEarly),
        Ok(Phase::Proceed { at }) => match context.plan.scenario {
            ScenarioPlan::Connect { pong_timeout_ms } => {
                let deadline = Instant::now() + Duration::from_millis(pong_timeout_ms);
                prove_alive(&mut connection, &mut phase, index, deadline).await
            }
            ScenarioPlan::Echo { .. } => {
                let run = EchoRun::new(&context.plan, at, index);
                run.run(&mut connection, &mut phase, stats, &context.counters)
                    .await
            }
            ScenarioPlan::Churn { .. } | ScenarioPlan::Fanout(_) => {
                unreachable!("churn and fanout connections end above")
            }
        },
        Ok(_) => Ok(false),
    };
    record_outcome(stats, outcome);
    connection.close(Instant::now() + CLOSE_TIMEOUT).await;
}

/// Counts a connection that ran to the end as alive, one that failed under its cause.
fn record_outcome(stats: &RefCell<ThreadStats>, outcome: Result<bool, Cause>) {
    match outcome {
        Ok(true) => stats.borrow_mut().alive += 1,
        Ok(false) => {}
        Err(cause) => stats.borrow_mut().failures.record(cause),
    }
}

fn sizes(scenario: &ScenarioPlan) -> Sizes {
    match scenario {
        // Idle connections: small buffers, since there may be 100,000 of them; churn
        // connections exchange only control frames.
        ScenarioPlan::Connect { .. } | ScenarioPlan::Churn { .. } => Sizes {
            read_bytes: 512,
            codec_read_bytes: 512,
        },
        ScenarioPlan::Echo { payload_bytes, .. } => {
            // A whole echo (payload + at most 14 bytes of frame head) in one read when it fits
            // in 64 KiB; larger messages take several reads.
            let bytes = (payload_bytes + 14).clamp(512, 64 * 1024);
            Sizes {
                read_bytes: bytes,
                codec_read_bytes: bytes,
            }
        }
        // Room for a few deliveries per read (the data plus about 60 bytes of envelope and
        // frame head each) while a million subscribers still fit in memory.
        ScenarioPlan::Fanout(fanout) => {
            let bytes = ((fanout.payload_bytes + 64) * 4).clamp(1024, 64 * 1024);
            Sizes {
                read_bytes: bytes,
                codec_read_bytes: bytes,
            }
        }
    }
}

/// Keeps the connection open, answering the server's pings, until the phase leaves `Ramp`.
async fn hold(
    connection: &mut Connection,
    phase: &mut watch::Receiver<Phase>,
) -> Result<Phase, Closed> {
    loop {
        while connection.poll_message()?.is_some() {}
        connection.flush().await?;
        // Only cancel-safe futures race here: `receive` keeps its read in flight.
        tokio::select! {
            received = connection.receive() => received?,
            changed = phase.wait_for(|phase| *phase != Phase::Ramp) => {
                return Ok(changed.map(|phase| *phase).unwrap_or(Phase::Stop));
            }
        }
    }
}

/// Sends a ping carrying the connection's index and waits for the matching pong.
/// `Ok(true)`: alive; `Ok(false)`: stopped before the answer came.
async fn prove_alive(
    connection: &mut Connection,
    phase: &mut watch::Receiver<Phase>,
    index: u64,
    deadline: Instant,
) -> Result<bool, Cause> {
    let token = index.to_be_bytes();
    connection
        .queue(Message::Ping(token.to_vec().into()))
        .map_err(|Closed| Cause::ClosedEarly)?;
    let wait = async {
        loop {
            while let Some(message) = connection.poll_message()? {
                if matches!(&message, Message::Pong(payload) if payload[..] == token) {
                    return Ok(());
                }
            }
            connection.flush().await?;
            connection.receive().await?;
        }
    };
    tokio::select! {
        answered = timeout_at(deadline, wait) => match answered {
            Ok(Ok(())) => Ok(true),
            Ok(Err(Closed)) => Err(Cause::ClosedEarly),
            Err(_elapsed) => Err(Cause::NoPong),
        },
        _ = phase.wait_for(|phase| *phase == Phase::Stop) => Ok(false),
    }
}

/// One connection's closed echo loop.
struct EchoRun {
    payload_bytes: usize,
    echo_timeout: Duration,
    /// Round trips that start from here on are measured.
    measure_from: Instant,
    end: Instant,
    connection_index: u64,
}

impl EchoRun {
    fn new(plan: &WorkerPlan, proceed_at: Instant, index: u64) -> Self {
        let ScenarioPlan::Echo {
            payload_bytes,
            warmup_ms,
            duration_ms,
            echo_timeout_ms,
        } = plan.scenario
        else {
            unreachable!("an echo run is made for the echo scenario only");
        };
        let measure_from = proceed_at + Duration::from_millis(warmup_ms);
        Self {
            payload_bytes,
            echo_timeout: Duration::from_millis(echo_timeout_ms),
            measure_from,
            end: measure_from + Duration::from_millis(duration_ms),
            // Distinct across workers too, so payloads differ between any two connections.
            connection_index: (plan.worker_index as u64) << 32 | index,
        }
    }

    /// Whether `message` is the echo of message `sequence`.
    fn is_echo(&self, message: &Message, sequence: u64) -> bool {
        let Message::Text(text) = message else {
            return false;
        };
        let bytes = text.as_bytes();
        payload_matches(bytes, self.payload_bytes, self.connection_index, sequence)
    }

    /// Sends, awaits the echo, checks it, repeats until the end. `Ok(true)` when it ran to
    /// the end, `Ok(false)` when stopped.
    async fn run(
        &self,
        connection: &mut Connection,
        phase: &mut watch::Receiver<Phase>,
        stats: &RefCell<ThreadStats>,
        counters: &Counters,
    ) -> Result<bool, Cause> {
        let mut sequence = 0u64;
        loop {
            let sent_at = Instant::now();
            if sent_at >= self.end {
                return Ok(true);
            }
            if *phase.borrow() == Phase::Stop {
                return Ok(false);
            }
            let payload = make_payload(self.payload_bytes, self.connection_index, sequence);
            connection
                .queue(Message::text(payload))
                .map_err(|Closed| Cause::ClosedEarly)?;
            let exchange = async {
                connection.flush().await?;
                connection.next_data_message().await
            };
            let echo = tokio::select! {
                echo = timeout_at(sent_at + self.echo_timeout, exchange) => echo,
                _ = phase.wait_for(|phase| *phase == Phase::Stop) => return Ok(false),
            };
            let echo = match echo {
                Ok(Ok(echo)) => echo,
                Ok(Err(Closed)) => return Err(Cause::ClosedEarly),
                Err(_elapsed) => return Err(Cause::NoEcho),
            };
            if !self.is_echo(&echo, sequence) {
                return Err(Cause::EchoMismatch);
            }
            counters.messages.fetch_add(1, Ordering::Relaxed);
            if sent_at >= self.measure_from {
                let round_trip_ns = sent_at.elapsed().as_nanos() as u64;
                let mut stats = stats.borrow_mut();
                record(&mut stats.round_trip_ns, round_trip_ns);
                stats.messages += 1;
            }
            sequence += 1;
        }
    }
}

/// The byte at `position` of message `sequence` of connection `connection`: lower-case letters
/// in a pattern that shifts from one message to the next, so a stale or foreign echo differs.
fn payload_byte(connection: u64, sequence: u64, position: usize) -> u8 {
    let shift = connection
        .wrapping_mul(7)
        .wrapping_add(sequence.wrapping_mul(3))
        .wrapping_add(position as u64);
    b'a' + (shift % 26) as u8
}

/// The text of message `sequence` of connection `connection`.
pub fn make_payload(bytes: usize, connection: u64, sequence: u64) -> String {
    let payload: Vec<u8> = (0..bytes)
        .map(|position| payload_byte(connection, sequence, position))
        .collect();
    String::from_utf8(payload).expect("ASCII letters are UTF-8")
}

/// Whether `received` is exactly message `sequence` of connection `connection`.
pub fn payload_matches(received: &[u8], bytes: usize, connection: u64, sequence: u64) -> bool {
    received.len() == bytes
        && received
            .iter()
            .enumerate()
            .all(|(position, byte)| *byte == payload_byte(connection, sequence, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload matches itself only: not the next message, not another connection's.
    #[test]
    fn payloads_are_checked_exactly() {
        for bytes in [0, 1, 20, 1000] {
            let payload = make_payload(bytes, 5, 9);
            assert_eq!(payload.len(), bytes);
            assert!(payload_matches(payload.as_bytes(), bytes, 5, 9));
            if bytes > 0 {
                assert!(!payload_matches(payload.as_bytes(), bytes, 5, 10));
                assert!(!payload_matches(payload.as_bytes(), bytes, 6, 9));
                assert!(!payload_matches(&payload.as_bytes()[1..], bytes, 5, 9));
                let mut corrupted = payload.clone().into_bytes();
                corrupted[bytes - 1] ^= 1;
                assert!(!payload_matches(&corrupted, bytes, 5, 9));
            }
        }
    }

    /// Consecutive messages of a connection always differ in their first byte.
    #[test]
    fn consecutive_payloads_differ() {
        for sequence in 0..100 {
            assert_ne!(
                payload_byte(3, sequence, 0),
                payload_byte(3, sequence + 1, 0)
            );
        }
    }
}
