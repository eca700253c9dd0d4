//! The coordinator: splits a run over worker processes, steps them through the phases,
//! samples memory, merges their reports and writes the results. The fanout scenario's steps
//! are driven by `fanout`.

mod fanout;

pub use self::fanout::fanout;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::addresses::{default_address_count, worker_addresses, worker_share};
use crate::cli::{ChurnOptions, CommonOptions, ConnectOptions, EchoOptions};
use crate::live::Live;
use crate::plots::{PlotInput, RateSamples, write_plots};
use crate::protocol::{Command, Event, Progress, ScenarioPlan, WorkerPlan, WorkerReport};
use crate::protocol::{StepCollected, StepPublished};
use crate::protocol::{encode_line, parse_line};
use crate::report::{
    ChurnFigures, EchoFigures, KernelMemory, RunResult, ServerMemory, merge_reports,
};
use crate::system::{self, SlabSample, bytes_per_connection};
use crate::worker::Target;

/// Connections one worker takes by default; the remaining descriptors under the usual
/// 20,000 limit cover the ring, pipes, the binary and the runtime.
pub const CONNECTIONS_PER_WORKER_DEFAULT: u64 = 18_000;

/// Descriptors a worker needs besides its connections.
const DESCRIPTORS_RESERVED: u64 = 200;

/// How long workers get to report after `stop` before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Time per connection a worker may need to end it after `stop`: a million on two cores took
/// longer than the fixed `STOP_GRACE` alone, and the reports of workers still closing
/// connections were lost. (Workers also report what they have after a grace of their own.)
const STOP_GRACE_PER_CONNECTION: Duration = Duration::from_micros(100);

/// How long the workers of a run with `connections` get to report after `stop`.
fn stop_grace(connections: u64) -> Duration {
    STOP_GRACE + STOP_GRACE_PER_CONNECTION * u32::try_from(connections).unwrap_or(u32::MAX)
}

/// How much longer than `--rate` plans the closed-loop ramp may take before the deadline
/// cuts the run: on a machine slower than the rate assumes, the ramp slows down rather than
/// failing connections, and the run should still complete.
const RAMP_SLOWDOWN_ALLOWED: f64 = 4.0;

/// The time the deadline allows for opening `connections` at `rate` per second.
fn ramp_budget(connections: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(connections as f64 / rate * RAMP_SLOWDOWN_ALLOWED)
}

/// Slack added to a run's expected length before the coordinator stops it.
const DEADLINE_SLACK: Duration = Duration::from_secs(30);

/// The worker's own deadline is later than ours, so ours normally ends the run.
const WORKER_DEADLINE_EXTRA: Duration = Duration::from_secs(15);

/// How often the coordinator prints progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// A run, whatever its scenario.
struct Run {
    name: &'static str,
    common: CommonOptions,
    /// Connections opened over the whole run.
    connections: u64,
    /// Connections open at once at most: `connections`, except for churn.
    open_max: u64,
    rate: f64,
    /// Time between everyone established and `proceed` (the connect scenario's hold).
    hold: Duration,
    /// How long the measured phase lasts at most, for the deadline.
    measured: Duration,
    scenario: ScenarioPlan,
    settings: serde_json::Value,
    /// For churn: how long to wait after the last connection before sampling memory again.
    settle: Option<Duration>,
}

impl Run {
    /// What the rate plot counts: connections established, or echoes for `echo`.
    fn rate_count(&self, progress: &Progress) -> u64 {
        match self.scenario {
            ScenarioPlan::Connect { .. } | ScenarioPlan::Churn { .. } => progress.established,
            ScenarioPlan::Echo { .. } | ScenarioPlan::Fanout(_) => progress.messages,
        }
    }
}

pub fn connect(options: ConnectOptions) -> Result<i32, String> {
    let settings = serde_json::json!({
        "url": options.common.url,
        "ca": options.common.ca,
        "server_name": options.common.server_name,
        "connections": options.connections,
        "rate": options.rate,
        "hold_seconds": options.hold_seconds,
        "pong_timeout_seconds": options.pong_timeout_seconds,
        "connect_timeout_seconds": options.common.connect_timeout_seconds,
        "threads_per_worker": options.common.threads_per_worker,
    });
    run(Run {
        name: "connect",
        connections: options.connections,
        open_max: options.connections,
        rate: options.rate,
        hold: Duration::from_secs(options.hold_seconds),
        measured: Duration::from_secs(options.pong_timeout_seconds),
        scenario: ScenarioPlan::Connect {
            pong_timeout_ms: options.pong_timeout_seconds * 1000,
        },
        settings,
        settle: None,
        common: options.common,
    })
}

pub fn echo(options: EchoOptions) -> Result<i32, String> {
    let settings = serde_json::json!({
        "url": options.common.url,
        "ca": options.common.ca,
        "server_name": options.common.server_name,
        "connections": options.connections,
        "rate": options.rate,
        "payload_bytes": options.payload_bytes,
        "warmup_seconds": options.warmup_seconds,
        "duration_seconds": options.duration_seconds,
        "echo_timeout_seconds": options.echo_timeout_seconds,
        "connect_timeout_seconds": options.common.connect_timeout_seconds,
        "threads_per_worker": options.common.threads_per_worker,
    });
    let measured = options.warmup_seconds + options.duration_seconds + options.echo_timeout_seconds;
    run(Run {
        name: "echo",
        connections: options.connections,
        open_max: options.connections,
        rate: options.rate,
        hold: Duration::ZERO,
        measured: Duration::from_secs(measured),
        scenario: ScenarioPlan::Echo {
            payload_bytes: options.payload_bytes,
            warmup_ms: options.warmup_seconds * 1000,
            duration_ms: options.duration_seconds * 1000,
            echo_timeout_ms: options.echo_timeout_seconds * 1000,
        },
        settings,
        settle: None,
        common: options.common,
    })
}

/// Opens one churn run may plan at most, whatever --rate × --duration-seconds says.
const CHURN_OPENS_MAX: f64 = 100_000_000.0;

pub fn churn(options: ChurnOptions) -> Result<i32, String> {
    let opens = (options.rate * options.duration_seconds as f64).ceil();
    if !(1.0..=CHURN_OPENS_MAX).contains(&opens) {
        return Err(format!(
            "--rate × --duration-seconds must plan between 1 and {CHURN_OPENS_MAX} opens"
        ));
    }
    let settings = serde_json::json!({
        "url": options.common.url,
        "ca": options.common.ca,
        "server_name": options.common.server_name,
        "rate": options.rate,
        "duration_seconds": options.duration_seconds,
        "concurrent_max": options.concurrent_max,
        "pong_timeout_seconds": options.pong_timeout_seconds,
        "close_timeout_seconds": options.close_timeout_seconds,
        "settle_seconds": options.settle_seconds,
        "connect_timeout_seconds": options.common.connect_timeout_seconds,
        "threads_per_worker": options.common.threads_per_worker,
    });
    let measured = options.pong_timeout_seconds + options.close_timeout_seconds;
    run(Run {
        name: "churn",
        connections: opens as u64,
        open_max: options.concurrent_max,
        rate: options.rate,
        hold: Duration::ZERO,
        measured: Duration::from_secs(measured),
        scenario: ScenarioPlan::Churn {
            duration_ms: options.duration_seconds * 1000,
            // Set per worker by `lay_out`.
            open_max: options.concurrent_max,
            pong_timeout_ms: options.pong_timeout_seconds * 1000,
            close_timeout_ms: options.close_timeout_seconds * 1000,
        },
        settings,
        settle: Some(Duration::from_secs(options.settle_seconds)),
        common: options.common,
    })
}

/// The run's layout: workers, their plans, the deadline.
struct Layout {
    plans: Vec<WorkerPlan>,
    address_count: usize,
    deadline: Duration,
}

fn lay_out(run: &Run) -> Result<Layout, String> {
    let tls = Target::parse(&run.common.url)?
        .tls_plan(run.common.ca.as_deref(), run.common.server_name.as_deref())?;
    if run.connections == 0 || !(run.rate > 0.0 && run.rate.is_finite()) {
        return Err("--connections and --rate must be positive".into());
    }
    if run.common.threads_per_worker == 0 {
        return Err("--threads-per-worker must be at least 1".into());
    }
    if run.open_max == 0 {
        return Err("--concurrent-max must be positive".into());
    }
    let default_workers = run.open_max.div_ceil(CONNECTIONS_PER_WORKER_DEFAULT) as usize;
    let workers = run.common.workers.unwrap_or(default_workers).max(1);
    let per_worker_max = descriptor_limit().saturating_sub(DESCRIPTORS_RESERVED);
    let per_worker = worker_share(run.open_max, 0, workers);
    if per_worker > per_worker_max {
        return Err(format!(
            "{per_worker} connections per worker exceed the open-files limit (at most \
             {per_worker_max} each); use --workers {} or more",
            run.open_max.div_ceil(per_worker_max.max(1))
        ));
    }
    let threads_total = (workers * run.common.threads_per_worker) as u64;
    if matches!(run.scenario, ScenarioPlan::Churn { .. }) && run.open_max < threads_total {
        return Err(format!(
            "--concurrent-max must be at least --workers × --threads-per-worker \
             ({threads_total}), one open connection per thread"
        ));
    }
    let address_count = run
        .common
        .source_addresses
        .unwrap_or_else(|| default_address_count(run.connections, workers));
    if address_count < workers || address_count > crate::addresses::ADDRESSES_MAX {
        return Err(format!(
            "--source-addresses must be between --workers ({workers}) and {}",
            crate::addresses::ADDRESSES_MAX
        ));
    }
    let ramp = ramp_budget(run.connections, run.rate);
    let connect_timeout = Duration::from_secs(run.common.connect_timeout_seconds);
    let deadline = ramp + connect_timeout + run.hold + run.measured + DEADLINE_SLACK;
    let bearer_token = run.common.bearer_token()?;
    let plans = (0..workers)
        .map(|worker_index| {
            let connections = worker_share(run.connections, worker_index, workers);
            WorkerPlan {
                worker_index,
                url: run.common.url.clone(),
                bearer_token: bearer_token.clone(),
                tls: tls.clone(),
                connections,
                rate_per_second: run.rate * connections as f64 / run.connections as f64,
                threads: run.common.threads_per_worker,
                source_addresses: worker_addresses(worker_index, workers, address_count),
                connect_timeout_ms: connect_timeout.as_millis() as u64,
                deadline_ms: (deadline + WORKER_DEADLINE_EXTRA).as_millis() as u64,
                scenario: worker_scenario(run, worker_index, workers),
                ramp: run.common.ramp(),
            }
        })
        .filter(|plan| plan.connections > 0)
        .collect();
    Ok(Layout {
        plans,
        address_count,
        deadline,
    })
}

/// The scenario as one worker runs it: a churn worker gets its share of the open maximum.
fn worker_scenario(run: &Run, worker_index: usize, workers: usize) -> ScenarioPlan {
    let mut scenario = run.scenario.clone();
    if let ScenarioPlan::Churn { open_max, .. } = &mut scenario {
        *open_max = worker_share(run.open_max, worker_index, workers);
    }
    scenario
}

/// The soft open-files limit of this process, which workers inherit.
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// A worker process as the coordinator sees it.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    progress: Progress,
    established: bool,
    report: Option<WorkerReport>,
    /// Its output ended (it exited or closed stdout).
    gone: bool,
    /// Its progress over time, for the rate plot.
    rate_samples: RateSamples,
    /// Fanout: the steps its publishers reported, in order.
    published: Vec<StepPublished>,
    /// Fanout: the steps its subscribers reported, in order.
    collected: Vec<StepCollected>,
}

impl Worker {
    fn tell(&mut self, command: &Command) {
        if let Some(stdin) = &mut self.stdin {
            // A worker that has gone cannot be told anything; its end shows as EOF.
            let _ = stdin.write_all(encode_line(command).as_bytes());
            let _ = stdin.flush();
        }
    }

    fn settled(&self) -> bool {
        self.established || self.report.is_some() || self.gone
    }

    fn done(&self) -> bool {
        self.report.is_some() || self.gone
    }
}

/// Messages from the threads that read the workers' stdout.
enum Incoming {
    Event(usize, Box<Event>),
    Ended(usize),
}

fn spawn_worker(
    plan: &WorkerPlan,
    events: Sender<Incoming>,
    rate_samples_max: usize,
) -> Result<Worker, String> {
    let program = std::env::current_exe().map_err(|error| format!("own path: {error}"))?;
    let mut child = Process::new(program)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start a worker: {error}"))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let index = plan.worker_index;
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match parse_line::<Event>(&line) {
                Ok(event) => {
                    if events
                        .send(Incoming::Event(index, Box::new(event)))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(error) => eprintln!("worker {index}: {error}"),
            }
        }
        let _ = events.send(Incoming::Ended(index));
    });
    let mut worker = Worker {
        stdin: child.stdin.take(),
        child,
        progress: Progress::default(),
        established: false,
        report: None,
        gone: false,
        rate_samples: RateSamples::new(rate_samples_max),
        published: Vec::new(),
        collected: Vec::new(),
    };
    worker.tell(&Command::Start(plan.clone()));
    Ok(worker)
}

/// Memory figures sampled before and after the ramp.
#[derive(Default)]
struct Samples {
    server_before: Option<u64>,
    server_after: Option<u64>,
    slab_before: Option<SlabSample>,
    slab_after: Option<SlabSample>,
}

impl Samples {
    fn take(&mut self, server_pid: Option<u32>, after: bool) {
        let server = server_pid.and_then(|pid| match system::resident_kib(pid) {
            Ok(kib) => Some(kib),
            Err(error) => {
                eprintln!("cannot read the server's memory (pid {pid}): {error}");
                None
            }
        });
        let slab = system::slab().ok();
        if after {
            (self.server_after, self.slab_after) = (server, slab);
        } else {
            (self.server_before, self.slab_before) = (server, slab);
        }
    }
}

fn run(run: Run) -> Result<i32, String> {
    let layout = lay_out(&run)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|error| format!("cannot handle signals: {error}"))?;
    }
    eprintln!(
        "{}: {} connections at {}/s from {} worker(s) × {} thread(s), {} source addresses",
        run.name,
        run.connections,
        run.rate,
        layout.plans.len(),
        run.common.threads_per_worker,
        layout.address_count
    );
    let mut samples = Samples::default();
    samples.take(run.common.server_pid, false);
    let (mut workers, receiver) = spawn_workers(&layout.plans, layout.deadline)?;
    let mut steps = Steps::new(&run, layout.deadline, &interrupted);
    steps.drive(&mut workers, &receiver, &mut samples);
    steps.live.finish();
    reap(&mut workers);
    if let Some(settle) = run.settle {
        // Churn's "after" is once every connection has ended and the server has had a moment
        // to free what they held.
        eprintln!("settling for {} s before sampling memory", settle.as_secs());
        thread::sleep(settle);
        samples.take(run.common.server_pid, true);
    }
    let result = summarize(&run, &layout, &workers, &samples, steps.stopped_by)?;
    if let Some(path) = &run.common.output {
        let json = serde_json::to_string_pretty(&result).expect("results serialize");
        std::fs::write(path, json + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(directory) = &run.common.plots {
        for path in plot(&run, &result, &workers, directory)? {
            eprintln!("plot: {}", path.display());
        }
    }
    print!("{}", result.markdown());
    Ok(if result.stopped_by.is_some() || result.workers_lost > 0 {
        1
    } else {
        0
    })
}

/// Where the run is, from the coordinator's side.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Ramping,
    Holding { until: Instant },
    Measuring,
    Stopping { kill_at: Instant },
}

/// The coordinator's loop over the stages.
struct Steps<'a> {
    run: &'a Run,
    started: Instant,
    deadline: Instant,
    interrupted: &'a AtomicBool,
    stage: Stage,
    stopped_by: Option<String>,
    last_progress: Instant,
    live: Live,
}

impl<'a> Steps<'a> {
    fn new(run: &'a Run, deadline: Duration, interrupted: &'a AtomicBool) -> Self {
        let started = Instant::now();
        Self {
            run,
            started,
            deadline: started + deadline,
            interrupted,
            stage: Stage::Ramping,
            stopped_by: None,
            last_progress: started,
            live: Live::new(run.connections),
        }
    }

    fn drive(
        &mut self,
        workers: &mut [Worker],
        events: &Receiver<Incoming>,
        samples: &mut Samples,
    ) {
        loop {
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(Incoming::Event(index, event)) => {
                    self.handle_event(&mut workers[index], index, *event)
                }
                Ok(Incoming::Ended(index)) => workers[index].gone = true,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            if workers.iter().all(Worker::done) {
                return;
            }
            self.check_limits(workers);
            self.live.update(&total_progress(workers));
            let now = Instant::now();
            match self.stage {
                Stage::Ramping => self.ramp(workers, samples),
                Stage::Holding { until } if now >= until => self.proceed(workers, samples),
                Stage::Holding { .. } | Stage::Measuring => {}
                Stage::Stopping { kill_at } if now >= kill_at => {
                    let grace = stop_grace(self.run.open_max);
                    let line = format!("workers did not report within {grace:?}: killing them");
                    self.live.note(&line);
                    return;
                }
                Stage::Stopping { .. } => {}
            }
        }
    }

    /// Ctrl-C, SIGTERM and the deadline stop the run; the workers still report.
    fn check_limits(&mut self, workers: &mut [Worker]) {
        if matches!(self.stage, Stage::Stopping { .. }) {
            return;
        }
        let reason = if self.interrupted.load(Ordering::Relaxed) {
            "interrupted"
        } else if Instant::now() >= self.deadline {
            "deadline"
        } else {
            return;
        };
        self.live.note(&format!(
            "{reason}: stopping the workers and collecting what they measured"
        ));
        self.stopped_by = Some(reason.into());
        stop_all(workers);
        self.stage = Stage::Stopping {
            kill_at: Instant::now() + stop_grace(self.run.open_max),
        };
    }

    fn ramp(&mut self, workers: &mut [Worker], samples: &mut Samples) {
        let progress = total_progress(workers);
        if workers.iter().all(Worker::settled) {
            self.live.note(&format!(
                "[{:6.1} s] ramp done in {:.2} s: {} established, {} failed",
                self.started.elapsed().as_secs_f64(),
                progress.ramp_ms as f64 / 1000.0,
                progress.established,
                progress.failed
            ));
            if self.run.hold.is_zero() {
                self.proceed(workers, samples);
            } else {
                self.live
                    .note(&format!("holding for {} s", self.run.hold.as_secs()));
                self.stage = Stage::Holding {
                    until: Instant::now() + self.run.hold,
                };
            }
        } else if !self.live.is_bar() && self.last_progress.elapsed() >= PROGRESS_INTERVAL {
            self.last_progress = Instant::now();
            eprintln!(
                "[{:6.1} s] {} of {} attempted, {} established, {} failed",
                self.started.elapsed().as_secs_f64(),
                progress.attempted,
                self.run.connections,
                progress.established,
                progress.failed
            );
        }
    }

    fn proceed(&mut self, workers: &mut [Worker], samples: &mut Samples) {
        samples.take(self.run.common.server_pid, true);
        let what = match self.run.scenario {
            ScenarioPlan::Connect { .. } => "pinging every connection",
            ScenarioPlan::Echo { .. } => "echo traffic: warm-up, then measuring",
            ScenarioPlan::Churn { .. } => "every planned connection opened or failed",
            ScenarioPlan::Fanout(_) => {
                unreachable!("fanout runs are driven by coordinator::fanout")
            }
        };
        let elapsed_seconds = self.started.elapsed().as_secs_f64();
        self.live.note(&format!("[{elapsed_seconds:6.1} s] {what}"));
        for worker in workers.iter_mut() {
            worker.tell(&Command::Proceed);
        }
        self.stage = Stage::Measuring;
    }

    fn handle_event(&self, worker: &mut Worker, index: usize, event: Event) {
        match event {
            Event::Progress(progress) => self.record_progress(worker, progress),
            Event::Established(progress) => {
                self.record_progress(worker, progress);
                worker.established = true;
            }
            Event::Finished(report) => worker.report = Some(*report),
            Event::Failed { message } => {
                self.live.note(&format!("worker {index} failed: {message}"));
                worker.gone = true;
            }
            Event::StepPublished(published) => worker.published.push(published),
            Event::StepCollected(collected) => worker.collected.push(*collected),
        }
    }

    fn record_progress(&self, worker: &mut Worker, progress: Progress) {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        worker
            .rate_samples
            .record(elapsed_ms, self.run.rate_count(&progress));
        worker.progress = progress;
    }
}

fn total_progress(workers: &[Worker]) -> Progress {
    let mut total = Progress::default();
    for worker in workers {
        total.attempted += worker.progress.attempted;
        total.established += worker.progress.established;
        total.failed += worker.progress.failed;
        total.ramp_ms = total.ramp_ms.max(worker.progress.ramp_ms);
        total.messages += worker.progress.messages;
        total.ready += worker.progress.ready;
    }
    total
}

/// Starts one worker per plan, all reporting into one channel; on a failure, stops and reaps
/// those already started.
fn spawn_workers(
    plans: &[WorkerPlan],
    deadline: Duration,
) -> Result<(Vec<Worker>, Receiver<Incoming>), String> {
    let (sender, receiver) = mpsc::channel();
    let mut workers = Vec::with_capacity(plans.len());
    // Workers report about once a second until the deadline, plus the grace after a stop.
    let rate_samples_max = (deadline + STOP_GRACE).as_secs() as usize + 2;
    for plan in plans {
        match spawn_worker(plan, sender.clone(), rate_samples_max) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                stop_all(&mut workers);
                reap(&mut workers);
                return Err(error);
            }
        }
    }
    Ok((workers, receiver))
}

fn stop_all(workers: &mut [Worker]) {
    for worker in workers {
        worker.tell(&Command::Stop);
    }
}

/// Waits for every worker to exit, killing those that do not within a moment, so no worker
/// outlives the run.
fn reap(workers: &mut [Worker]) {
    let give_up_at = Instant::now() + Duration::from_secs(3);
    for worker in workers.iter_mut() {
        // Closing stdin is the worker's last signal to stop.
        worker.stdin = None;
        loop {
            match worker.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= give_up_at => {
                    let _ = worker.child.kill();
                    let _ = worker.child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

fn summarize(
    run: &Run,
    layout: &Layout,
    workers: &[Worker],
    samples: &Samples,
    stopped_by: Option<String>,
) -> Result<RunResult, String> {
    let reports: Vec<WorkerReport> = workers
        .iter()
        .filter_map(|worker| worker.report.clone())
        .collect();
    let totals = merge_reports(&reports).map_err(|error| error.to_string())?;
    let established = totals.established;
    let ramp_seconds = totals.ramp_ms as f64 / 1000.0;
    let echo = match run.scenario {
        ScenarioPlan::Echo { payload_bytes, .. } => {
            let measured_seconds = totals.measured_ms as f64 / 1000.0;
            Some(EchoFigures {
                payload_bytes,
                messages: totals.messages,
                measured_seconds,
                messages_per_second: if measured_seconds > 0.0 {
                    (totals.messages as f64 / measured_seconds).round()
                } else {
                    0.0
                },
            })
        }
        ScenarioPlan::Connect { .. } | ScenarioPlan::Churn { .. } | ScenarioPlan::Fanout(_) => None,
    };
    let churn = match run.scenario {
        ScenarioPlan::Churn { duration_ms, .. } => Some(ChurnFigures::of(&totals, duration_ms)),
        _ => None,
    };
    let server = match (
        run.common.server_pid,
        samples.server_before,
        samples.server_after,
    ) {
        (Some(pid), Some(before), Some(after)) => Some(ServerMemory {
            pid,
            rss_kib_before: before,
            rss_kib_after: after,
            rss_bytes_per_connection: bytes_per_connection(before, after, established),
        }),
        _ => None,
    };
    let kernel = match (samples.slab_before, samples.slab_after) {
        (Some(before), Some(after)) => Some(KernelMemory::new(before, after, established)),
        _ => None,
    };
    let mut settings = run.settings.clone();
    settings["workers"] = layout.plans.len().into();
    settings["source_addresses"] = layout.address_count.into();
    settings["deadline_seconds"] = layout.deadline.as_secs().into();
    Ok(RunResult {
        scenario: run.name,
        settings,
        stopped_by,
        workers: layout.plans.len(),
        workers_lost: workers
            .iter()
            .filter(|worker| worker.report.is_none())
            .count(),
        connections_planned: run.connections,
        rate_asked: run.rate,
        ramp_connections_per_second: (ramp_seconds > 0.0)
            .then(|| (established as f64 / ramp_seconds).round()),
        totals,
        echo,
        churn,
        server,
        kernel,
    })
}

/// Writes the run's plots into `directory`.
fn plot(
    run: &Run,
    result: &RunResult,
    workers: &[Worker],
    directory: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, String> {
    let totals = &result.totals;
    let (latency_name, histogram, rate_name) = match run.scenario {
        ScenarioPlan::Connect { .. } => (
            "connect latency",
            &totals.connect_latency_ns_histogram,
            "connections established",
        ),
        ScenarioPlan::Echo { .. } => ("round trip", &totals.round_trip_ns_histogram, "echoes"),
        ScenarioPlan::Churn { .. } => (
            "connect latency",
            &totals.connect_latency_ns_histogram,
            "connections opened",
        ),
        ScenarioPlan::Fanout(_) => unreachable!("fanout runs are driven by coordinator::fanout"),
    };
    let histogram = histogram.decode().map_err(|error| error.to_string())?;
    let rate_samples: Vec<_> = workers
        .iter()
        .map(|worker| worker.rate_samples.samples())
        .collect();
    write_plots(
        directory,
        &PlotInput {
            scenario: run.name,
            latency_name,
            latency_ns: &histogram,
            rate_name,
            rate_samples: &rate_samples,
        },
    )
}
