//! The `echo` scenario on the io_uring client (`crate::engine`): a client lighter than the
//! servers it measures, so that with the load generator pinned to one core and the server to
//! the other, the server's core is the one that saturates. Each connection sends a text
//! message, waits for its echo, checks it byte for byte (the payload pattern shifts with each
//! message and each connection), and sends the next: a closed loop, one message in flight per
//! connection, as the tokio-uring path did.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::connection::Target;
use super::scenario::{Counters, Phase, StatsBoard, ThreadStats};
use crate::addresses::address_for;
use crate::engine::{Engine, EngineSettings, Handler, Kind, Message, Outbound};
use crate::histogram::record;
use crate::protocol::{Cause, ScenarioPlan, WorkerPlan};
use crate::ramp::{RampController, RampSettings};

/// Longest a thread waits in the ring before it looks at the phase, the clock and timeouts.
const TURN_WAIT_MAX: Duration = Duration::from_millis(10);
const BUFFERS_COUNT: usize = 1024;
const STATS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// What one echo thread needs.
pub struct EchoThread {
    pub plan: Arc<WorkerPlan>,
    pub target: Arc<Target>,
    pub phase: watch::Receiver<Phase>,
    pub counters: Arc<Counters>,
    pub indices: Vec<u64>,
    pub rate: f64,
    pub ramp: RampSettings,
    pub board: Arc<StatsBoard>,
    pub thread_index: usize,
}

/// The scenario's numbers.
#[derive(Clone, Copy)]
struct EchoPlan {
    payload_bytes: usize,
    warmup: Duration,
    duration: Duration,
    echo_timeout: Duration,
}

/// Runs one thread's connections: the ramp, the hold until `proceed`, the echo loop until
/// its end or the stop.
pub fn run_thread(thread: EchoThread) -> Result<ThreadStats, String> {
    let ScenarioPlan::Echo {
        payload_bytes,
        warmup_ms,
        duration_ms,
        echo_timeout_ms,
    } = thread.plan.scenario
    else {
        return Err("not an echo plan".into());
    };
    let plan = EchoPlan {
        payload_bytes,
        warmup: Duration::from_millis(warmup_ms),
        duration: Duration::from_millis(duration_ms),
        echo_timeout: Duration::from_millis(echo_timeout_ms),
    };
    let mut engine = Engine::new(
        engine_settings(&thread, payload_bytes),
        thread.indices.len(),
        Arc::clone(&thread.counters),
    )
    .map_err(|error| format!("cannot set up the io_uring client: {error}"))?;
    let connection_ids = thread
        .indices
        .iter()
        .map(|index| (thread.plan.worker_index as u64) << 32 | index)
        .collect();
    let mut handler = Echoes::new(plan, connection_ids, Arc::clone(&thread.counters));
    let mut driver = Driver::new(&thread);
    let outcome = driver.drive(&thread, &mut engine, &mut handler);
    let stats = driver.stats(&engine, &handler);
    thread.board.publish(thread.thread_index, &stats);
    engine.stop(&mut handler);
    outcome?;
    Ok(driver.stats(&engine, &handler))
}

fn engine_settings(thread: &EchoThread, payload_bytes: usize) -> EngineSettings {
    let uri = &thread.target.uri;
    EngineSettings {
        target: thread.target.address,
        host: uri.authority().map_or_else(
            || thread.target.address.to_string(),
            |authority| authority.to_string(),
        ),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
        authorization: thread
            .target
            .authorization
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        connect_timeout: Duration::from_millis(thread.plan.connect_timeout_ms),
        buffers_count: BUFFERS_COUNT,
        // A whole echo in one buffer up to 64 KiB; larger ones take several.
        buffer_bytes: (payload_bytes + 14).next_power_of_two().clamp(4096, 65_536),
        message_bytes_max: payload_bytes.max(125),
        seed: (thread.plan.worker_index as u64) << 32 | thread.thread_index as u64,
        tls: thread.target.tls.clone(),
        deflate: false,
    }
}

/// The thread's loop state.
struct Driver {
    ramp: RampController,
    ramp_started: Instant,
    next: usize,
    limited: Duration,
    published_at: Instant,
}

impl Driver {
    fn new(thread: &EchoThread) -> Self {
        Self {
            ramp: RampController::new(thread.ramp),
            ramp_started: Instant::now(),
            next: 0,
            limited: Duration::ZERO,
            published_at: Instant::now(),
        }
    }

    fn drive(
        &mut self,
        thread: &EchoThread,
        engine: &mut Engine,
        handler: &mut Echoes,
    ) -> Result<(), String> {
        let mut overdue = Vec::new();
        loop {
            let phase = *thread.phase.borrow();
            match phase {
                Phase::Stop => return Ok(()),
                Phase::Proceed { at } if handler.start.is_none() => {
                    handler.begin(at.into_std(), engine);
                }
                Phase::Ramp | Phase::Proceed { .. } => {}
            }
            if handler.finished() {
                return Ok(());
            }
            let turn_started = Instant::now();
            let window_limited = self.open_due(thread, engine, handler)?;
            handler.overdue(Instant::now(), &mut overdue);
            for index in overdue.drain(..) {
                engine.fail(index, Cause::NoEcho, handler);
            }
            engine
                .turn(handler, TURN_WAIT_MAX)
                .map_err(|error| format!("io_uring failed: {error}"))?;
            for (latency, failed) in handler.attempts.drain(..) {
                if failed {
                    self.ramp.on_failure();
                } else {
                    self.ramp.on_success(latency);
                }
            }
            if window_limited {
                self.limited += turn_started.elapsed();
            }
            if self.published_at.elapsed() >= STATS_PUBLISH_INTERVAL {
                self.published_at = Instant::now();
                thread
                    .board
                    .publish(thread.thread_index, &self.stats(engine, handler));
            }
        }
    }

    /// Opens the connections that are due and fit the ramp's window; whether the window
    /// held some back.
    fn open_due(
        &mut self,
        thread: &EchoThread,
        engine: &mut Engine,
        handler: &mut Echoes,
    ) -> Result<bool, String> {
        let due = ((self.ramp_started.elapsed().as_secs_f64() * thread.rate) as usize + 1)
            .min(thread.indices.len());
        while self.next < due && self.ramp.may_start(self.next as u64 - handler.settled) {
            let source = address_for(&thread.plan.source_addresses, thread.indices[self.next]);
            engine
                .open(self.next as u32, source, Kind::WebSocket, handler)
                .map_err(|error| format!("io_uring submission failed: {error}"))?;
            self.next += 1;
        }
        Ok(self.next < due)
    }

    fn stats(&self, engine: &Engine, handler: &Echoes) -> ThreadStats {
        let mut stats = ThreadStats::new();
        stats.attempted = engine.stats.attempted;
        stats.established = engine.stats.established;
        stats.failures = engine.stats.failures;
        stats.connect_latency_ns = engine.stats.connect_latency_ns.clone();
        stats.round_trip_ns = handler.round_trip_ns.clone();
        stats.messages = handler.measured;
        stats.alive = handler.completed;
        stats.ramp.window_final = self.ramp.window();
        stats.ramp.cuts = self.ramp.cuts;
        stats.ramp.limited_ms = self.limited.as_millis() as u64;
        stats.buffer_shortages = engine.stats.buffer_shortages;
        stats
    }
}

/// One connection's loop.
#[derive(Clone, Copy, Default)]
struct Loop {
    open: bool,
    /// The message in flight: its sequence number and when it was sent.
    sequence: u64,
    sent_at: Option<Instant>,
    /// Ran to the end without a failure.
    done: bool,
}

/// The echo connections of one thread, as the engine's handler.
struct Echoes {
    plan: EchoPlan,
    /// Per connection: its identity in the payload pattern, and its loop.
    connection_ids: Vec<u64>,
    loops: Vec<Loop>,
    counters: Arc<Counters>,
    /// When `proceed` came: the loop starts; round trips count from `start + warmup`.
    start: Option<Instant>,
    round_trip_ns: hdrhistogram::Histogram<u64>,
    /// Echoes checked in the measured window.
    measured: u64,
    /// Connections that ran to the end, and those ended (either way) once the loop began.
    completed: u64,
    ended: u64,
    /// Connections opened or failed before opening: the ramp's settled attempts.
    settled: u64,
    open_count: u64,
    attempts: Vec<(Duration, bool)>,
    payload: Vec<u8>,
}

impl Echoes {
    fn new(plan: EchoPlan, connection_ids: Vec<u64>, counters: Arc<Counters>) -> Self {
        Self {
            plan,
            loops: vec![Loop::default(); connection_ids.len()],
            connection_ids,
            counters,
            start: None,
            round_trip_ns: crate::histogram::new_histogram(),
            measured: 0,
            completed: 0,
            ended: 0,
            settled: 0,
            open_count: 0,
            attempts: Vec::new(),
            payload: Vec::with_capacity(plan.payload_bytes),
        }
    }

    /// `proceed`: every open connection sends its first message.
    fn begin(&mut self, at: Instant, engine: &mut Engine) {
        self.start = Some(at);
        for index in 0..self.loops.len() as u32 {
            if self.loops[index as usize].open {
                engine.with_outbound(index, |out| self.send(index, out));
            }
        }
    }

    /// Every connection that began has ended (ran to the end or failed).
    fn finished(&self) -> bool {
        self.start.is_some() && self.ended >= self.open_count
    }

    fn end(&self) -> Option<Instant> {
        self.start
            .map(|start| start + self.plan.warmup + self.plan.duration)
    }

    /// Sends connection `index`'s next message, or marks it done past the end.
    fn send(&mut self, index: u32, out: &mut Outbound<'_>) {
        let now = Instant::now();
        let past_end = self.end().is_some_and(|end| now >= end);
        let state = &mut self.loops[index as usize];
        if past_end {
            if !state.done {
                state.done = true;
                state.sent_at = None;
                self.completed += 1;
                self.ended += 1;
            }
            return;
        }
        let id = self.connection_ids[index as usize];
        fill_payload(
            &mut self.payload,
            self.plan.payload_bytes,
            id,
            state.sequence,
        );
        out.text(&self.payload);
        state.sent_at = Some(now);
    }

    /// Connections whose echo is overdue.
    fn overdue(&self, now: Instant, overdue: &mut Vec<u32>) {
        for (index, state) in self.loops.iter().enumerate() {
            if state
                .sent_at
                .is_some_and(|sent| now >= sent + self.plan.echo_timeout)
            {
                overdue.push(index as u32);
            }
        }
    }

    fn is_echo(&self, index: u32, sequence: u64, message: &Message<'_>) -> bool {
        let id = self.connection_ids[index as usize];
        message.text && payload_matches(message.payload, self.plan.payload_bytes, id, sequence)
    }
}

impl Handler for Echoes {
    fn opened(
        &mut self,
        index: u32,
        since_attempt: Duration,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        self.settled += 1;
        self.attempts.push((since_attempt, false));
        self.loops[index as usize].open = true;
        self.open_count += 1;
        if self.start.is_some() {
            self.send(index, out);
        }
        Ok(())
    }

    fn message(
        &mut self,
        index: u32,
        message: Message<'_>,
        out: &mut Outbound<'_>,
    ) -> Result<(), Cause> {
        let state = self.loops[index as usize];
        let Some(sent_at) = state.sent_at else {
            // Nothing in flight: an echo we did not ask for.
            return Err(Cause::EchoMismatch);
        };
        if !self.is_echo(index, state.sequence, &message) {
            return Err(Cause::EchoMismatch);
        }
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        let measure_from = self.start.map(|start| start + self.plan.warmup);
        if measure_from.is_some_and(|from| sent_at >= from) {
            record(&mut self.round_trip_ns, sent_at.elapsed().as_nanos() as u64);
            self.measured += 1;
        }
        let state = &mut self.loops[index as usize];
        state.sequence += 1;
        state.sent_at = None;
        self.send(index, out);
        Ok(())
    }

    fn ended(&mut self, index: u32, outcome: Result<(), Cause>) {
        let state = &mut self.loops[index as usize];
        if !state.open {
            self.settled += 1;
            self.attempts.push((Duration::ZERO, true));
            return;
        }
        state.sent_at = None;
        if !state.done && outcome.is_err() {
            state.done = true;
            self.ended += 1;
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

/// Message `sequence` of connection `connection`, written into `payload`.
fn fill_payload(payload: &mut Vec<u8>, bytes: usize, connection: u64, sequence: u64) {
    payload.clear();
    payload.extend((0..bytes).map(|position| payload_byte(connection, sequence, position)));
}

/// Whether `received` is exactly message `sequence` of connection `connection`.
fn payload_matches(received: &[u8], bytes: usize, connection: u64, sequence: u64) -> bool {
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
        let mut payload = Vec::new();
        for bytes in [0, 1, 20, 1000] {
            fill_payload(&mut payload, bytes, 5, 9);
            assert_eq!(payload.len(), bytes);
            assert!(payload_matches(&payload, bytes, 5, 9));
            if bytes > 0 {
                assert!(!payload_matches(&payload, bytes, 5, 10));
                assert!(!payload_matches(&payload, bytes, 6, 9));
                assert!(!payload_matches(&payload[1..], bytes, 5, 9));
                let mut corrupted = payload.clone();
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
