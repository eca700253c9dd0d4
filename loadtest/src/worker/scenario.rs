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
        while next < due && context.open.get() < open_max && context.may_start() {
            let task = start_connection(&context, &stats, connection_indices[next]);
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

impl ThreadContext {
    /// Whether the closed-loop ramp's window has room for one more attempt.
    fn may_start(&self) -> bool {
        self.ramp.borrow().may_start(self.attempts_in_flight.get())
    }
}

/// Counts connection `index` as open and in flight, and returns its task. Counted here, not
/// when the task first runs: the window must see this attempt before the ramp considers the
/// next one.
fn start_connection(
    context: &Rc<ThreadContext>,
    stats: &Rc<RefCell<ThreadStats>>,
    index: u64,
) -> impl std::future::Future<Output = ()> + use<> {
    context.open.set(context.open.get() + 1);
    context
        .attempts_in_flight
        .set(context.attempts_in_flight.get() + 1);
    run_connection(Rc::clone(context), Rc::clone(stats), index)
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
        Ok(Phase::Proceed { .. }) => match context.plan.scenario {
            ScenarioPlan::Connect { pong_timeout_ms } => {
                let deadline = Instant::now() + Duration::from_millis(pong_timeout_ms);
                prove_alive(&mut connection, &mut phase, index, deadline).await
            }
            ScenarioPlan::Echo { .. } => unreachable!("echo runs on the io_uring client"),
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
        // connections exchange only control frames. (Echo runs on the io_uring client.)
        ScenarioPlan::Connect { .. } | ScenarioPlan::Churn { .. } | ScenarioPlan::Echo { .. } => {
            Sizes {
                read_bytes: 512,
                codec_read_bytes: 512,
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
