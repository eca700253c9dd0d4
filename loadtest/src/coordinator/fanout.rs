//! The fanout run from the coordinator's side: subscribers spread over workers, publishers in
//! one more worker; once every subscription is acknowledged, each step goes: `step` to the
//! publishers' worker, its `step_published`, `collect` (with what was published per topic) to
//! every subscribers' worker, their `step_collected`, then the merge and the verdict.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{
    CONNECTIONS_PER_WORKER_DEFAULT, DEADLINE_SLACK, DESCRIPTORS_RESERVED, Incoming,
    WORKER_DEADLINE_EXTRA, Worker, descriptor_limit, ramp_budget, reap, spawn_workers, stop_all,
    stop_grace,
};
use crate::addresses::{ADDRESSES_MAX, default_address_count, worker_addresses, worker_share};
use crate::cli::FanoutOptions;
use crate::fanout::http_stream::Transport;
use crate::fanout::report::{FanoutResult, StepResult};
use crate::fanout::steps::{Step, geometric_rates, highest_met, steps_of};
use crate::fanout::wire::Protocol;
use crate::live::Live;
use crate::protocol::{
    CollectOrder, Command, Event, FanoutPlan, FanoutRole, FanoutTotals, ScenarioPlan,
    StepPublished, TlsPlan, WorkerPlan,
};
use crate::report::merge_reports;
use crate::worker::Target;

/// How long the publishers' worker may take past a step's planned end to report it; it gives
/// up on missing publishers after 10 s of its own.
const STEP_SLACK: Duration = Duration::from_secs(15);

/// The steps the options ask for.
fn plan_steps(options: &FanoutOptions) -> Result<Vec<Step>, String> {
    if let Some(rate) = options.rate {
        return steps_of(&[rate], options.duration_seconds * 1000);
    }
    let rates = match &options.rates {
        Some(rates) => rates.clone(),
        None => geometric_rates(
            options.rate_start.unwrap_or(1000.0),
            options.rate_factor,
            options.rate_max,
        )?,
    };
    steps_of(&rates, options.step_seconds * 1000)
}

/// The TLS settings of the subscribers' and the publishers' URLs (`--publish-url` may be
/// plain while `--url` is wss://, or the other way round; one `--ca` serves both).
fn tls_plans(options: &FanoutOptions) -> Result<(Option<TlsPlan>, Option<TlsPlan>), String> {
    let common = &options.common;
    let ca = common.ca.as_deref();
    let server_name = common.server_name.as_deref();
    // Several servers (a cluster's nodes) share one scheme: the first URL of each list
    // decides, and every URL must parse.
    let parse_all = |urls: &[&str]| -> Result<Target, String> {
        let targets = urls
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(targets
            .into_iter()
            .next()
            .expect("split gives one URL at least"))
    };
    let (subscriber_urls, publisher_urls) = url_lists(options);
    let subscribers = parse_all(&subscriber_urls)?;
    let publishers = parse_all(&publisher_urls)?;
    if ca.is_some() && !subscribers.is_secure() && !publishers.is_secure() {
        return Err("--ca is for wss:// and https:// URLs".into());
    }
    let plan_for = |target: &Target| {
        if target.is_secure() {
            target.tls_plan(ca, server_name)
        } else {
            Ok(None)
        }
    };
    Ok((plan_for(&subscribers)?, plan_for(&publishers)?))
}

/// The servers subscribers and publishers connect to: `--url` and `--publish-url`, each a
/// comma-separated list (the nodes of a cluster); publishers go to `--url`'s without the
/// latter.
fn url_lists(options: &FanoutOptions) -> (Vec<&str>, Vec<&str>) {
    let subscribers: Vec<&str> = options.common.url.split(',').collect();
    let publishers = match &options.publish_url {
        Some(publish_url) => publish_url.split(',').collect(),
        None => subscribers.clone(),
    };
    (subscribers, publishers)
}

struct Layout {
    plans: Vec<WorkerPlan>,
    /// The last this many workers are the publishers' (one per publisher URL).
    publisher_workers: usize,
    address_count: usize,
    deadline: Duration,
}

fn lay_out(options: &FanoutOptions, steps: &[Step]) -> Result<Layout, String> {
    let bearer_token = options.common.bearer_token()?;
    let (subscribers_tls, publishers_tls) = tls_plans(options)?;
    let (subscribers, publishers) = (options.subscribers, options.publishers);
    if subscribers == 0 || options.topics == 0 || publishers == 0 {
        return Err("--subscribers, --topics and --publishers must be positive".into());
    }
    if options.protocol == Protocol::SocketIo && options.transport != Transport::Ws {
        return Err("--protocol socketio runs over WebSocket only (--transport ws)".into());
    }
    if publishers > u64::from(options.topics) {
        return Err("--publishers must not exceed --topics: each topic has one publisher".into());
    }
    if !(options.connect_rate > 0.0 && options.connect_rate.is_finite()) {
        return Err("--connect-rate must be positive".into());
    }
    if options.common.threads_per_worker == 0 {
        return Err("--threads-per-worker must be at least 1".into());
    }
    let default_workers = subscribers.div_ceil(CONNECTIONS_PER_WORKER_DEFAULT) as usize;
    let (subscriber_urls, publisher_urls) = url_lists(options);
    let subscriber_workers = options
        .common
        .workers
        .unwrap_or(default_workers)
        .max(subscriber_urls.len());
    if subscriber_workers as u64 > subscribers {
        return Err("--workers must not exceed --subscribers: each worker needs one".into());
    }
    let publisher_workers = publisher_urls.len();
    if publisher_workers as u64 > publishers {
        return Err("--publishers must be at least the publish URLs: one each".into());
    }
    let per_worker_max = descriptor_limit().saturating_sub(DESCRIPTORS_RESERVED);
    let per_worker = worker_share(subscribers, 0, subscriber_workers).max(publishers);
    if per_worker > per_worker_max {
        return Err(format!(
            "{per_worker} connections per worker exceed the open-files limit (at most \
             {per_worker_max} each); use --workers {} or more",
            subscribers.div_ceil(per_worker_max.max(1))
        ));
    }
    // One more worker for the publishers of each publish URL.
    let workers = subscriber_workers + publisher_workers;
    let address_count = options
        .common
        .source_addresses
        .unwrap_or_else(|| default_address_count(subscribers + publishers, workers));
    if address_count < workers || address_count > ADDRESSES_MAX {
        return Err(format!(
            "--source-addresses must be between the workers ({workers}) and {ADDRESSES_MAX}"
        ));
    }
    let connect_timeout = Duration::from_secs(options.common.connect_timeout_seconds);
    let ramp = ramp_budget(subscribers + publishers, options.connect_rate)
        + connect_timeout
        + Duration::from_secs(options.subscribe_timeout_seconds);
    let drain = Duration::from_secs(options.drain_seconds);
    let stepping: Duration = steps
        .iter()
        .map(|step| Duration::from_millis(step.duration_ms) + STEP_SLACK + drain)
        .sum();
    let deadline = ramp + Duration::from_secs(options.idle_seconds) + stepping + DEADLINE_SLACK;
    let fanout = |role| FanoutPlan {
        protocol: options.protocol,
        transport: options.transport,
        topics: options.topics,
        role,
        payload_bytes: options.payload_bytes,
        subscribe_timeout_ms: options.subscribe_timeout_seconds * 1000,
        compression: options.compression,
        payload_kind: options.payload_kind,
    };
    let mut plans = Vec::with_capacity(workers);
    let mut first_index = 0;
    let mut first_publisher = 0;
    for worker_index in 0..workers {
        let is_publishers = worker_index >= subscriber_workers;
        let (connections, role) = if is_publishers {
            let share = worker_index - subscriber_workers;
            let count = worker_share(publishers, share, publisher_workers);
            first_publisher += count;
            let role = FanoutRole::Publishers {
                first_index: first_publisher - count,
                total: publishers,
            };
            (count, role)
        } else {
            let count = worker_share(subscribers, worker_index, subscriber_workers);
            first_index += count;
            (
                count,
                FanoutRole::Subscribers {
                    first_index: first_index - count,
                },
            )
        };
        plans.push(WorkerPlan {
            worker_index,
            url: if is_publishers {
                publisher_urls[worker_index - subscriber_workers].to_owned()
            } else {
                subscriber_urls[worker_index % subscriber_urls.len()].to_owned()
            },
            bearer_token: bearer_token.clone(),
            tls: if is_publishers {
                publishers_tls.clone()
            } else {
                subscribers_tls.clone()
            },
            connections,
            rate_per_second: options.connect_rate * connections as f64
                / (subscribers + publishers) as f64,
            threads: options.common.threads_per_worker,
            source_addresses: worker_addresses(worker_index, workers, address_count),
            connect_timeout_ms: connect_timeout.as_millis() as u64,
            deadline_ms: (deadline + WORKER_DEADLINE_EXTRA).as_millis() as u64,
            scenario: ScenarioPlan::Fanout(fanout(role)),
            ramp: options.common.ramp(),
        });
    }
    Ok(Layout {
        plans,
        publisher_workers,
        address_count,
        deadline,
    })
}

pub fn fanout(options: FanoutOptions) -> Result<i32, String> {
    let steps = plan_steps(&options)?;
    let layout = lay_out(&options, &steps)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|error| format!("cannot handle signals: {error}"))?;
    }
    eprintln!(
        "fanout ({:?} over {}): {} subscribers on {} topics, {} publishers, {} step(s), {} worker(s), \
         {} source addresses",
        options.protocol,
        options.transport.name(),
        options.subscribers,
        options.topics,
        options.publishers,
        steps.len(),
        layout.plans.len(),
        layout.address_count
    );
    let (mut workers, receiver) = spawn_workers(&layout.plans, layout.deadline)?;
    let mut run = Driver {
        workers: &mut workers,
        events: &receiver,
        interrupted: &interrupted,
        started: Instant::now(),
        deadline: Instant::now() + layout.deadline,
        live: Live::new(options.subscribers + options.publishers),
        latency_ns_p99_max: (options.latency_ms_p99_max * 1e6) as u64,
        drain_timeout_ms: options.drain_seconds * 1000,
        idle: Duration::from_secs(options.idle_seconds),
        stop_grace: stop_grace(options.subscribers + options.publishers),
        cpu_ns_reported: Vec::new(),
        coordinator_cpu_ns: 0,
        publisher_workers: layout.publisher_workers,
    };
    let (results, stopped_by) = match run.steps(&steps) {
        Ok(results) => (results, None),
        Err((results, reason)) => (results, Some(reason)),
    };
    run.finish();
    reap(&mut workers);
    let result = summarize(&options, &layout, &workers, results, stopped_by)?;
    if let Some(path) = &options.common.output {
        let json = serde_json::to_string_pretty(&result).expect("results serialize");
        std::fs::write(path, json + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    print!("{}", result.markdown());
    Ok(if result.stopped_by.is_some() || result.workers_lost > 0 {
        1
    } else {
        0
    })
}

/// The coordinator's loop through the ramp and the steps.
struct Driver<'a> {
    workers: &'a mut [Worker],
    events: &'a Receiver<Incoming>,
    interrupted: &'a AtomicBool,
    started: Instant,
    deadline: Instant,
    live: Live,
    latency_ns_p99_max: u64,
    drain_timeout_ms: u64,
    /// How long every subscription stays open with nothing published before the first step.
    idle: Duration,
    /// How long workers get to close their connections and send their final reports.
    stop_grace: Duration,
    /// Each worker's CPU time (ns) at its last report, and the coordinator's own: the
    /// baseline of the next step's load-generator CPU.
    cpu_ns_reported: Vec<u64>,
    coordinator_cpu_ns: u64,
    /// The last this many workers are the publishers'.
    publisher_workers: usize,
}

type StepsOutcome = Result<Vec<StepResult>, (Vec<StepResult>, String)>;

impl Driver<'_> {
    /// Waits (bounded by the deadline) for one event and applies it; `Err` with the reason
    /// when the run must stop.
    fn pump(&mut self) -> Result<(), String> {
        match self.events.recv_timeout(Duration::from_millis(50)) {
            Ok(Incoming::Event(index, event)) => self.apply(index, *event),
            Ok(Incoming::Ended(index)) => self.workers[index].gone = true,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        let progress = super::total_progress(self.workers);
        self.live.update(&progress);
        if self.interrupted.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() >= self.deadline {
            return Err("deadline".into());
        }
        match self.workers.iter().position(|worker| worker.gone) {
            Some(index) => Err(format!("worker {index} lost")),
            None => Ok(()),
        }
    }

    fn apply(&mut self, index: usize, event: Event) {
        let worker = &mut self.workers[index];
        match event {
            Event::Progress(progress) => worker.progress = progress,
            Event::Established(progress) => {
                worker.progress = progress;
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

    fn wait_until(&mut self, condition: impl Fn(&[Worker]) -> bool) -> Result<(), String> {
        while !condition(self.workers) {
            self.pump()?;
        }
        Ok(())
    }

    /// The ramp, then the steps until one misses the bound.
    fn steps(&mut self, steps: &[Step]) -> StepsOutcome {
        let mut results = Vec::new();
        if let Err(reason) = self.wait_until(|workers| workers.iter().all(Worker::settled)) {
            return Err((results, reason));
        }
        let progress = super::total_progress(self.workers);
        self.note(&format!(
            "ready: {} connections subscribed or publishing, {} failed",
            progress.ready, progress.failed
        ));
        if !self.idle.is_zero() {
            self.note(&format!(
                "idle: {:.1} s with every subscription open, nothing published",
                self.idle.as_secs_f64()
            ));
            let until = Instant::now() + self.idle;
            if let Err(reason) = self.wait_until(|_| Instant::now() >= until) {
                return Err((results, reason));
            }
        }
        self.cpu_ns_reported = self.workers.iter().map(|w| w.progress.cpu_ns).collect();
        self.coordinator_cpu_ns = crate::system::process_cpu_ns();
        for step in steps {
            match self.step(*step) {
                Ok(result) => {
                    let met = result.met_bound;
                    results.push(result);
                    if !met {
                        break;
                    }
                }
                Err(reason) => return Err((results, reason)),
            }
        }
        Ok(results)
    }

    fn step(&mut self, step: Step) -> Result<StepResult, String> {
        self.note(&format!(
            "step {}: {} publishes/s for {:.1} s",
            step.index,
            step.rate_per_second,
            step.duration_ms as f64 / 1000.0
        ));
        let publishers = self.workers.len() - self.publisher_workers;
        for worker in &mut self.workers[publishers..] {
            worker.tell(&Command::Step(step));
        }
        let has_published = |worker: &Worker| {
            worker
                .published
                .iter()
                .any(|published| published.step == step.index)
        };
        self.wait_until(|workers| workers[publishers..].iter().all(has_published))?;
        let each_published: Vec<StepPublished> = self.workers[publishers..]
            .iter()
            .map(|worker| {
                worker
                    .published
                    .iter()
                    .find(|published| published.step == step.index)
                    .expect("waited for it")
                    .clone()
            })
            .collect();
        let published = merge_published(&each_published);
        let order = Command::Collect(CollectOrder {
            step: step.index,
            published_per_topic: published.published_per_topic.clone(),
            drain_timeout_ms: self.drain_timeout_ms,
        });
        for worker in &mut self.workers[..publishers] {
            worker.tell(&order);
        }
        let has_step = |worker: &Worker| worker.collected.iter().any(|c| c.step == step.index);
        self.wait_until(|workers| workers[..publishers].iter().all(has_step))?;
        let collected: Vec<_> = self.workers[..publishers]
            .iter()
            .flat_map(|worker| worker.collected.iter().filter(|c| c.step == step.index))
            .collect();
        let mut result = StepResult::merge(step, &published, &collected, self.latency_ns_p99_max)
            .map_err(|error| error.to_string())?;
        let mut reported: Vec<(usize, u64)> = collected
            .iter()
            .map(|report| (report.worker_index, report.cpu_ns))
            .collect();
        reported.extend(
            each_published
                .iter()
                .map(|published| (published.worker_index, published.cpu_ns)),
        );
        result.set_load_generator_cpu(self.load_generator_cpu_ns(&reported));
        self.note(&format!(
            "step {}: {:.0} published/s, {:.0} deliveries/s, p99 {:.2} ms, missing {}, \
             bound {}; load generator {:.2} µs CPU per delivery",
            step.index,
            result.achieved_per_second,
            result.deliveries_per_second,
            result.latency.p99_us / 1000.0,
            result.missing,
            if result.met_bound { "met" } else { "missed" },
            result
                .load_generator_cpu_us_per_delivery
                .unwrap_or(f64::NAN)
        ));
        Ok(result)
    }

    /// CPU the load generator used since the last step: every worker's, from the CPU time
    /// in its step reports, plus the coordinator's own. Updates the baselines.
    fn load_generator_cpu_ns(&mut self, reported: &[(usize, u64)]) -> u64 {
        let mut used = 0;
        for (worker_index, cpu_ns) in reported {
            if let Some(before) = self.cpu_ns_reported.get_mut(*worker_index) {
                used += cpu_ns.saturating_sub(*before);
                *before = *cpu_ns;
            }
        }
        let coordinator = crate::system::process_cpu_ns();
        used += coordinator.saturating_sub(self.coordinator_cpu_ns);
        self.coordinator_cpu_ns = coordinator;
        used
    }

    fn note(&self, line: &str) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.live.note(&format!("[{seconds:6.1} s] {line}"));
    }

    /// Stops every worker and waits (bounded) for their final reports.
    fn finish(&mut self) {
        stop_all(self.workers);
        let give_up_at = Instant::now() + self.stop_grace;
        while !self.workers.iter().all(Worker::done) && Instant::now() < give_up_at {
            match self.events.recv_timeout(Duration::from_millis(50)) {
                Ok(Incoming::Event(index, event)) => self.apply(index, *event),
                Ok(Incoming::Ended(index)) => self.workers[index].gone = true,
                Err(_) => {}
            }
        }
        self.live.finish();
    }
}

/// One step's publishing over every publishers' worker: their topics are disjoint, so the
/// counts per topic add up.
fn merge_published(each: &[StepPublished]) -> StepPublished {
    let mut merged = each[0].clone();
    for published in &each[1..] {
        let topics = published.published_per_topic.len();
        if merged.published_per_topic.len() < topics {
            merged.published_per_topic.resize(topics, 0);
        }
        for (total, count) in merged
            .published_per_topic
            .iter_mut()
            .zip(&published.published_per_topic)
        {
            *total += count;
        }
        merged.duration_ms = merged.duration_ms.max(published.duration_ms);
        merged.publishers += published.publishers;
    }
    merged
}

fn summarize(
    options: &FanoutOptions,
    layout: &Layout,
    workers: &[Worker],
    steps: Vec<StepResult>,
    stopped_by: Option<String>,
) -> Result<FanoutResult, String> {
    let reports: Vec<_> = workers
        .iter()
        .filter_map(|worker| worker.report.clone())
        .collect();
    let totals = merge_reports(&reports).map_err(|error| error.to_string())?;
    let mut fanout_totals = FanoutTotals::default();
    for report in &reports {
        fanout_totals.merge(&report.fanout.unwrap_or_default());
    }
    let publishers_index = workers.len() - layout.publisher_workers;
    let ready = |range: &[Worker]| range.iter().map(|worker| worker.progress.ready).sum();
    let met: Vec<bool> = steps.iter().map(|step| step.met_bound).collect();
    let every_delivery_checked = !steps.is_empty()
        && fanout_totals.late_deliveries == 0
        && steps
            .iter()
            .all(|step| step.missing == 0 && step.faults.total() == 0);
    let settings = serde_json::json!({
        "url": options.common.url,
        "ca": options.common.ca,
        "server_name": options.common.server_name,
        "protocol": options.protocol,
        "transport": options.transport,
        "subscribers": options.subscribers,
        "topics": options.topics,
        "publishers": options.publishers,
        "payload_bytes": options.payload_bytes,
        "payload_kind": options.payload_kind,
        "compression": options.compression,
        "steps": plan_steps(options)?,
        "latency_ms_p99_max": options.latency_ms_p99_max,
        "drain_seconds": options.drain_seconds,
        "subscribe_timeout_seconds": options.subscribe_timeout_seconds,
        "connect_rate": options.connect_rate,
        "connect_timeout_seconds": options.common.connect_timeout_seconds,
        "threads_per_worker": options.common.threads_per_worker,
        "workers": layout.plans.len(),
        "source_addresses": layout.address_count,
        "deadline_seconds": layout.deadline.as_secs(),
    });
    Ok(FanoutResult {
        scenario: "fanout",
        settings,
        stopped_by,
        workers: workers.len(),
        workers_lost: workers.iter().filter(|w| w.report.is_none()).count(),
        workers_partial: reports.iter().filter(|report| report.partial).count(),
        subscribers_planned: options.subscribers,
        subscribers_ready: ready(&workers[..publishers_index]),
        publishers_planned: options.publishers,
        publishers_ready: ready(&workers[publishers_index..]),
        totals,
        fanout_totals,
        latency_ms_p99_max: options.latency_ms_p99_max,
        highest_met: highest_met(&met),
        every_delivery_checked,
        steps,
    })
}
