//! A worker process: reads its plan from stdin, runs it on one or more threads, each with its
//! own tokio-uring runtime, reports progress and results on stdout (see `crate::protocol`).

mod connection;
mod echo;
mod fanout;
mod memory_stream;
mod scenario;
mod subscribers;

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use self::connection::{Target, connect_cause, set_bind_address_no_port};
use self::fanout::{FanoutDriver, FanoutShared, FanoutThread};
pub use self::scenario::{Counters, Phase};
use self::scenario::{StatsBoard, ThreadContext, ThreadStats, run_thread};
use self::subscribers::SubscriberThread;
use crate::addresses::{thread_connections, worker_share};
use crate::histogram::{EncodedHistogram, merge_into, new_histogram};
use crate::protocol::{
    Command, Event, FanoutRole, Progress, ScenarioPlan, WorkerPlan, WorkerReport, encode_line,
    parse_line,
};
use crate::ramp::RampController;

/// Submission queue entries per runtime. Enough that a burst of a few thousand operations
/// (a ramp tick, everyone pinging at once) rarely waits for room; tokio-uring submits early
/// when the queue is full.
const RING_ENTRIES: u32 = 4096;

/// How often the main thread checks the counters and the threads.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How often a progress event is sent, from the start until the worker finishes.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long after `stop` the threads may take to end before the worker reports what they
/// last published and exits: an overloaded worker still reports, well within the
/// coordinator's grace.
const REPORT_GRACE: Duration = Duration::from_secs(3);

/// Runs a worker to the end. The exit code says whether it could run at all.
pub fn main() -> i32 {
    // Ctrl-C in a terminal reaches the whole process group, workers included. The coordinator
    // decides when to stop and asks for the results, so workers must not die of SIGINT.
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted);
    // Should the coordinator die without closing our stdin (SIGKILL), nobody is left to read
    // the report: end with it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and changes nothing else.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut output = io::stdout().lock();
    let plan = match read_plan() {
        Ok(plan) => plan,
        Err(message) => {
            send(&mut output, &Event::Failed { message });
            return 2;
        }
    };
    match run(plan, &mut output) {
        Ok(report) => {
            send(&mut output, &Event::Finished(Box::new(report)));
            0
        }
        Err(message) => {
            send(&mut output, &Event::Failed { message });
            1
        }
    }
}

fn read_plan() -> Result<WorkerPlan, String> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("reading the plan: {error}"))?;
    match parse_line::<Command>(&line).map_err(|error| error.to_string())? {
        Command::Start(plan) => validate(plan),
        other => Err(format!("expected a start command first, got {other:?}")),
    }
}

fn validate(plan: WorkerPlan) -> Result<WorkerPlan, String> {
    if plan.threads == 0 || plan.source_addresses.is_empty() || plan.rate_per_second <= 0.0 {
        return Err(format!(
            "plan needs threads, addresses and a positive rate: {plan:?}"
        ));
    }
    Ok(plan)
}

/// A protocol line to the coordinator. If stdout is gone the coordinator is gone, and there
/// is nobody left to tell.
fn send(output: &mut impl Write, event: &Event) {
    let _ = output.write_all(encode_line(event).as_bytes());
    let _ = output.flush();
}

fn run(plan: WorkerPlan, output: &mut impl Write) -> Result<WorkerReport, String> {
    let target = Target::parse(&plan.url)?
        .with_bearer_token(plan.bearer_token.as_deref())?
        .with_tls(plan.tls.as_ref())?;
    let target = Arc::new(target);
    let plan = Arc::new(plan);
    let started = Instant::now();
    let (phase_sender, phase_receiver) = watch::channel(Phase::Ramp);
    let phase_sender = Arc::new(phase_sender);
    let counters = Arc::new(Counters::default());
    let board = Arc::new(StatsBoard::new(plan.threads));
    let is_fanout = matches!(plan.scenario, ScenarioPlan::Fanout(_));
    let fanout = is_fanout.then(|| Arc::new(FanoutShared::new(plan.threads)));
    let shared = Shared {
        plan: &plan,
        target: &target,
        phase: &phase_receiver,
        counters: &counters,
        board: &board,
        fanout: &fanout,
    };
    let threads = spawn_threads(&shared, started)?;
    let (command_sender, command_receiver) = mpsc::channel();
    spawn_command_reader(Arc::clone(&phase_sender), command_sender);
    let mut driver =
        fanout.map(|shared| FanoutDriver::new(shared, plan.worker_index, command_receiver));

    let watcher = Watch {
        plan: &plan,
        deadline: started + Duration::from_millis(plan.deadline_ms),
        phase_sender: &phase_sender,
        phase: &phase_receiver,
        counters: &counters,
    };
    let Watched {
        proceeded_at,
        stopped_at,
        partial,
    } = watcher.until_done(&threads, driver.as_mut(), output);
    let stopped_early = stopped_at.is_some();
    let measured_ms = measured_ms(&plan, proceeded_at, stopped_at.unwrap_or_else(Instant::now));
    let stats = if partial {
        eprintln!(
            "worker {}: threads still busy {} s after the stop: reporting what they last \
             published",
            plan.worker_index,
            REPORT_GRACE.as_secs()
        );
        board.snapshots()
    } else {
        let mut stats = Vec::with_capacity(threads.len());
        for thread in threads {
            stats.push(
                thread
                    .join()
                    .map_err(|_| "a worker thread panicked".to_owned())??,
            );
        }
        stats
    };
    let mut report = merge_threads(plan.worker_index, &stats);
    report.ramp_ms = counters.ramp_ms.load(Ordering::Relaxed);
    report.stopped_early = stopped_early;
    report.measured_ms = measured_ms;
    report.partial = partial;
    report.fanout = driver.map(|driver| driver.totals());
    Ok(report)
}

/// The worker's main thread while its threads run: phases, progress events, fanout's steps.
struct Watch<'a> {
    plan: &'a WorkerPlan,
    deadline: Instant,
    phase_sender: &'a watch::Sender<Phase>,
    phase: &'a watch::Receiver<Phase>,
    counters: &'a Counters,
}

/// What the main thread saw of the run.
struct Watched {
    proceeded_at: Option<Instant>,
    stopped_at: Option<Instant>,
    /// The threads were still busy `REPORT_GRACE` after the stop.
    partial: bool,
}

impl Watch<'_> {
    /// Watches until every thread has ended, or until `REPORT_GRACE` after a stop.
    fn until_done(
        &self,
        threads: &[JoinHandle<ThreadResult>],
        mut driver: Option<&mut FanoutDriver>,
        output: &mut impl Write,
    ) -> Watched {
        let is_fanout = matches!(self.plan.scenario, ScenarioPlan::Fanout(_));
        let mut established_sent = false;
        let mut last_progress = Instant::now();
        let mut watched = Watched {
            proceeded_at: None,
            stopped_at: None,
            partial: false,
        };
        while !threads.iter().all(JoinHandle::is_finished) {
            thread::sleep(POLL_INTERVAL);
            if Instant::now() >= self.deadline {
                self.phase_sender.send_replace(Phase::Stop);
            }
            match *self.phase.borrow() {
                Phase::Ramp => {}
                Phase::Proceed { at } => watched.proceeded_at = Some(at),
                Phase::Stop => {
                    watched.stopped_at.get_or_insert_with(Instant::now);
                }
            }
            if watched
                .stopped_at
                .is_some_and(|at| at.elapsed() >= REPORT_GRACE)
            {
                watched.partial = true;
                break;
            }
            if let Some(driver) = driver.as_deref_mut() {
                driver.poll(output);
            }
            let progress = progress(self.counters);
            // A fanout connection is settled once subscribed (or ready to publish), or failed.
            let settled_count = if is_fanout {
                progress.ready + progress.failed
            } else {
                progress.established + progress.failed
            };
            if settled_count >= self.plan.connections && !established_sent {
                send(output, &Event::Established(progress));
                established_sent = true;
            } else if last_progress.elapsed() >= PROGRESS_INTERVAL {
                // Also after the ramp: the coordinator plots the message rate from these.
                send(output, &Event::Progress(progress));
                last_progress = Instant::now();
            }
        }
        watched
    }
}

/// What every thread of a worker shares.
struct Shared<'a> {
    plan: &'a Arc<WorkerPlan>,
    target: &'a Arc<Target>,
    phase: &'a watch::Receiver<Phase>,
    counters: &'a Arc<Counters>,
    board: &'a Arc<StatsBoard>,
    fanout: &'a Option<Arc<FanoutShared>>,
}

/// How long the measured phase lasted: the echo window after the warm-up (cut short by a
/// stop), or the liveness check of `connect`.
fn measured_ms(plan: &WorkerPlan, proceeded_at: Option<Instant>, ended_at: Instant) -> u64 {
    let Some(proceeded_at) = proceeded_at else {
        return 0;
    };
    let (from, until) = match plan.scenario {
        ScenarioPlan::Connect { .. } => (proceeded_at, ended_at),
        // Churn has no measured phase after `proceed`: its figures are counts and latencies.
        // Fanout's figures are per step.
        ScenarioPlan::Churn { .. } | ScenarioPlan::Fanout(_) => return 0,
        ScenarioPlan::Echo {
            warmup_ms,
            duration_ms,
            ..
        } => {
            let from = proceeded_at + Duration::from_millis(warmup_ms);
            (
                from,
                ended_at.min(from + Duration::from_millis(duration_ms)),
            )
        }
    };
    until.saturating_duration_since(from).as_millis() as u64
}

fn progress(counters: &Counters) -> Progress {
    Progress {
        attempted: counters.attempted.load(Ordering::Relaxed),
        established: counters.established.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        ramp_ms: counters.ramp_ms.load(Ordering::Relaxed),
        messages: counters.messages.load(Ordering::Relaxed),
        ready: counters.ready.load(Ordering::Relaxed),
        cpu_ns: crate::system::process_cpu_ns(),
    }
}

type ThreadResult = Result<ThreadStats, String>;

fn spawn_threads(
    shared: &Shared<'_>,
    worker_started: Instant,
) -> Result<Vec<JoinHandle<ThreadResult>>, String> {
    let plan = shared.plan;
    let rate = plan.rate_per_second / plan.threads as f64;
    let subscribers = matches!(
        &plan.scenario,
        ScenarioPlan::Fanout(fanout) if matches!(fanout.role, FanoutRole::Subscribers { .. })
    );
    let echo = matches!(plan.scenario, ScenarioPlan::Echo { .. });
    (0..plan.threads)
        .map(|thread_index| {
            let indices = thread_connections(plan.connections, thread_index, plan.threads);
            let builder = thread::Builder::new().name(format!("uring-{thread_index}"));
            let spawned = if subscribers {
                let thread = subscriber_thread(shared, thread_index, indices, rate);
                builder.spawn(move || subscribers::run_thread(thread))
            } else if echo {
                let thread = echo::EchoThread {
                    plan: Arc::clone(plan),
                    target: Arc::clone(shared.target),
                    phase: shared.phase.clone(),
                    counters: Arc::clone(shared.counters),
                    indices,
                    rate,
                    ramp: plan.ramp.settings(),
                    board: Arc::clone(shared.board),
                    thread_index,
                };
                builder.spawn(move || echo::run_thread(thread))
            } else {
                let context = thread_context(shared, thread_index, worker_started);
                let open_max = match plan.scenario {
                    ScenarioPlan::Churn { open_max, .. } => {
                        worker_share(open_max, thread_index, plan.threads).max(1)
                    }
                    _ => indices.len().max(1) as u64,
                };
                builder.spawn(move || -> ThreadResult {
                    let runtime =
                        tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))
                            .map_err(|error| {
                                format!("cannot create an io_uring runtime: {error}")
                            })?;
                    Ok(runtime.block_on(run_thread(context, indices, rate, open_max)))
                })
            };
            spawned.map_err(|error| format!("cannot start a thread: {error}"))
        })
        .collect()
}

fn thread_context(
    shared: &Shared<'_>,
    thread_index: usize,
    worker_started: Instant,
) -> ThreadContext {
    ThreadContext {
        plan: Arc::clone(shared.plan),
        target: Arc::clone(shared.target),
        phase: shared.phase.clone(),
        counters: Arc::clone(shared.counters),
        worker_started,
        open: Cell::new(0),
        fanout: shared.fanout.as_ref().map(|fanout| FanoutThread {
            shared: Arc::clone(fanout),
            thread_index,
        }),
        attempts_in_flight: Cell::new(0),
        ramp: RefCell::new(RampController::new(shared.plan.ramp.settings())),
        board: Arc::clone(shared.board),
        thread_index,
    }
}

fn subscriber_thread(
    shared: &Shared<'_>,
    thread_index: usize,
    indices: Vec<u64>,
    rate: f64,
) -> SubscriberThread {
    SubscriberThread {
        plan: Arc::clone(shared.plan),
        target: Arc::clone(shared.target),
        phase: shared.phase.clone(),
        counters: Arc::clone(shared.counters),
        fanout: FanoutThread {
            shared: Arc::clone(shared.fanout.as_ref().expect("a fanout worker")),
            thread_index,
        },
        indices,
        rate,
        ramp: shared.plan.ramp.settings(),
        board: Arc::clone(shared.board),
    }
}

/// Reads `proceed` and `stop` from stdin for the rest of the run, and passes fanout's `step`
/// and `collect` on to `fanout_commands`. End of input means the coordinator is gone: stop.
fn spawn_command_reader(phase: Arc<watch::Sender<Phase>>, fanout_commands: mpsc::Sender<Command>) {
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match parse_line::<Command>(&line) {
                Ok(Command::Proceed) => {
                    let at = Instant::now();
                    phase.send_if_modified(|phase| {
                        let ramping = *phase == Phase::Ramp;
                        if ramping {
                            *phase = Phase::Proceed { at };
                        }
                        ramping
                    });
                }
                Ok(Command::Stop) => {
                    phase.send_replace(Phase::Stop);
                    return;
                }
                Ok(Command::Start(_)) => eprintln!("worker: ignoring a second start command"),
                Ok(command @ (Command::Step(_) | Command::Collect(_))) => {
                    // Only a fanout worker reads these; elsewhere they are dropped unread.
                    let _ = fanout_commands.send(command);
                }
                Err(error) => eprintln!("worker: {error}"),
            }
        }
        phase.send_replace(Phase::Stop);
    });
}

/// One report from the threads' stats.
fn merge_threads(worker_index: usize, stats: &[ThreadStats]) -> WorkerReport {
    let mut connect_latency = new_histogram();
    let mut round_trip = new_histogram();
    let mut report = WorkerReport {
        worker_index,
        ..WorkerReport::default()
    };
    for thread in stats {
        report.ramp.merge(&thread.ramp);
        report.buffer_shortages += thread.buffer_shortages;
        report.attempted += thread.attempted;
        report.established += thread.established;
        report.alive += thread.alive;
        report.messages += thread.messages;
        report.failures.merge(&thread.failures);
        merge_into(&mut connect_latency, &thread.connect_latency_ns);
        merge_into(&mut round_trip, &thread.round_trip_ns);
    }
    report.connect_latency_ns = EncodedHistogram::encode(&connect_latency);
    report.round_trip_ns = EncodedHistogram::encode(&round_trip);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::record;
    use crate::protocol::Cause;

    fn stats(attempted: u64, latencies_ns: &[u64]) -> ThreadStats {
        let mut stats = ThreadStats::new();
        stats.attempted = attempted;
        stats.established = latencies_ns.len() as u64;
        stats.failures.record(Cause::HandshakeTimeout);
        stats.ramp.cuts = 1;
        for latency in latencies_ns {
            record(&mut stats.connect_latency_ns, *latency);
        }
        stats
    }

    /// A worker whose threads cannot finish reports what they last published: the latest
    /// copy of each thread (a later copy replaces an earlier one), merged like finished
    /// threads; a thread that never published adds nothing.
    #[test]
    fn partial_report_merges_the_latest_copies() {
        let board = StatsBoard::new(3);
        board.publish(0, &stats(5, &[1_000]));
        board.publish(0, &stats(9, &[1_000, 2_000]));
        board.publish(2, &stats(4, &[3_000]));
        let snapshots = board.snapshots();
        assert_eq!(snapshots.len(), 2);
        let report = merge_threads(7, &snapshots);
        assert_eq!(report.worker_index, 7);
        assert_eq!(report.attempted, 13);
        assert_eq!(report.established, 3);
        assert_eq!(report.failures.handshake_timeout, 2);
        assert_eq!(report.ramp.cuts, 2);
        assert_eq!(report.connect_latency_ns.decode().unwrap().len(), 3);
    }
}
