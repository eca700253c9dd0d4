//! The result of a run: the workers' reports merged, memory figures added, written as JSON
//! and summarized as markdown.

use std::fmt::Write as _;

use serde::Serialize;

use crate::histogram::{DecodeError, EncodedHistogram, LatencySummary, merge_into, new_histogram};
use crate::protocol::{Failures, RampReport, WorkerReport};
use crate::system::{SlabSample, bytes_per_connection};

/// The workers' reports added up.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub attempted: u64,
    pub established: u64,
    pub alive: u64,
    pub failures: Failures,
    pub failures_total: u64,
    /// The slowest worker's ramp: they ramp in parallel.
    pub ramp_ms: u64,
    pub messages: u64,
    /// The longest measured phase of any worker: they measure in parallel.
    pub measured_ms: u64,
    pub connect_latency: LatencySummary,
    pub round_trip: LatencySummary,
    /// The merged histograms (HdrHistogram V2, base64), in nanoseconds.
    pub connect_latency_ns_histogram: EncodedHistogram,
    pub round_trip_ns_histogram: EncodedHistogram,
    /// The closed-loop ramp over all workers.
    pub ramp: RampReport,
    /// Workers whose report holds what their threads had published before the stop (they
    /// were still busy past the worker's grace).
    pub workers_partial: u64,
}

/// Adds up reports: counts sum, histograms merge, durations take the longest.
pub fn merge_reports(reports: &[WorkerReport]) -> Result<Totals, DecodeError> {
    let mut connect_latency = new_histogram();
    let mut round_trip = new_histogram();
    let mut totals = Totals::default();
    for report in reports {
        totals.ramp.merge(&report.ramp);
        totals.workers_partial += u64::from(report.partial);
        totals.attempted += report.attempted;
        totals.established += report.established;
        totals.alive += report.alive;
        totals.failures.merge(&report.failures);
        totals.messages += report.messages;
        totals.ramp_ms = totals.ramp_ms.max(report.ramp_ms);
        totals.measured_ms = totals.measured_ms.max(report.measured_ms);
        merge_into(&mut connect_latency, &report.connect_latency_ns.decode()?);
        merge_into(&mut round_trip, &report.round_trip_ns.decode()?);
    }
    totals.failures_total = totals.failures.total();
    totals.connect_latency = LatencySummary::of(&connect_latency);
    totals.round_trip = LatencySummary::of(&round_trip);
    totals.connect_latency_ns_histogram = EncodedHistogram::encode(&connect_latency);
    totals.round_trip_ns_histogram = EncodedHistogram::encode(&round_trip);
    Ok(totals)
}

/// The server process's resident memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_kib_before: u64,
    pub rss_kib_after: u64,
    /// (after − before) / connections established.
    pub rss_bytes_per_connection: Option<f64>,
}

/// The kernel's slab memory, machine-wide.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelMemory {
    pub before: SlabSample,
    pub after: SlabSample,
    /// Slab growth / connections established.
    pub slab_bytes_per_connection: Option<f64>,
    pub unreclaimable_bytes_per_connection: Option<f64>,
    pub note: &'static str,
}

pub const KERNEL_NOTE: &str = "client and server run on this machine, so the slab growth \
counts both ends of every connection (two sockets), plus anything else the kernel allocated \
meanwhile";

impl KernelMemory {
    pub fn new(before: SlabSample, after: SlabSample, connections: u64) -> Self {
        Self {
            before,
            after,
            slab_bytes_per_connection: bytes_per_connection(
                before.slab_kib,
                after.slab_kib,
                connections,
            ),
            unreclaimable_bytes_per_connection: bytes_per_connection(
                before.unreclaimable_kib,
                after.unreclaimable_kib,
                connections,
            ),
            note: KERNEL_NOTE,
        }
    }
}

/// Echo throughput.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EchoFigures {
    pub payload_bytes: usize,
    pub messages: u64,
    pub measured_seconds: f64,
    pub messages_per_second: f64,
}

/// Connection churn: opens and clean closes over the open phase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnFigures {
    /// Connections upgraded to WebSocket.
    pub opened: u64,
    /// Connections that answered the ping and completed the close handshake.
    pub closed_cleanly: u64,
    /// Connections that failed, at any stage (connect, handshake, ping, close).
    pub failed: u64,
    /// Attempts stopped while connecting (Ctrl-C, deadline): neither a success nor a failure.
    pub abandoned: u64,
    pub duration_seconds: f64,
    /// Connections opened per second of the open phase.
    pub opens_per_second: f64,
}

impl ChurnFigures {
    /// The churn figures of merged totals, for an open phase of `duration_ms`.
    pub fn of(totals: &Totals, duration_ms: u64) -> Self {
        let duration_seconds = duration_ms as f64 / 1000.0;
        // Failures after the upgrade (ping, close) are among the opened connections; those
        // before it are not. What is neither was stopped before it ended.
        let settled = totals.established + totals.failures_total
            - totals.failures.closed_early
            - totals.failures.no_pong
            - totals.failures.no_close;
        Self {
            opened: totals.established,
            closed_cleanly: totals.alive,
            failed: totals.failures_total,
            abandoned: totals.attempted.saturating_sub(settled),
            duration_seconds,
            opens_per_second: if duration_seconds > 0.0 {
                (totals.established as f64 / duration_seconds).round()
            } else {
                0.0
            },
        }
    }
}

/// Everything a run produced, as written to the JSON file.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: &'static str,
    /// The options as given and as derived (workers, addresses, ...).
    pub settings: serde_json::Value,
    /// Why the run ended before its plan, if it did ("interrupted", "deadline").
    pub stopped_by: Option<String>,
    pub workers: usize,
    /// Workers that ended without a report (their connections are missing from the totals).
    pub workers_lost: usize,
    pub connections_planned: u64,
    /// `--rate`: connections per second asked for (the ramp's ceiling).
    pub rate_asked: f64,
    pub totals: Totals,
    /// Connections established per second of ramp.
    pub ramp_connections_per_second: Option<f64>,
    pub echo: Option<EchoFigures>,
    pub churn: Option<ChurnFigures>,
    pub server: Option<ServerMemory>,
    pub kernel: Option<KernelMemory>,
}

impl RunResult {
    /// A markdown summary for people.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let totals = &self.totals;
        let _ = writeln!(text, "## ringcast-loadtest {}\n", self.scenario);
        if let Some(reason) = &self.stopped_by {
            let _ = writeln!(text, "**Stopped early ({reason}): partial figures.**\n");
        }
        let _ = writeln!(text, "| figure | value |\n|---|---|");
        let mut row = |name: &str, value: String| {
            let _ = writeln!(text, "| {name} | {value} |");
        };
        row("connections planned", self.connections_planned.to_string());
        let established_meaning = match self.scenario {
            "churn" => "connections opened",
            _ => "connections established",
        };
        row(established_meaning, totals.established.to_string());
        let alive_meaning = match self.scenario {
            "connect" => "alive (answered the ping)",
            "churn" => "closed cleanly (pong, then close handshake)",
            _ => "ran to the end",
        };
        row(alive_meaning, totals.alive.to_string());
        row("failed", totals.failures_total.to_string());
        row(
            "workers",
            format!("{} ({} lost)", self.workers, self.workers_lost),
        );
        let ramp_rate = self
            .ramp_connections_per_second
            .map_or(String::new(), |rate| format!(" ({rate:.0} connections/s)"));
        row(
            "ramp",
            format!(
                "{:.2} s{ramp_rate}, {} asked",
                totals.ramp_ms as f64 / 1000.0,
                self.rate_asked
            ),
        );
        row(
            "closed-loop ramp: window at the end · cuts · time the window held back due opens",
            format!(
                "{} in flight · {} · {:.2} s",
                totals.ramp.window_final,
                totals.ramp.cuts,
                totals.ramp.limited_ms as f64 / 1000.0
            ),
        );
        if totals.workers_partial > 0 {
            row(
                "workers that reported partial figures (busy past the grace after stop)",
                totals.workers_partial.to_string(),
            );
        }
        row(
            "connect latency (TCP + handshake)",
            latency_line(&totals.connect_latency),
        );
        if self.scenario == "connect" {
            let seconds = totals.measured_ms as f64 / 1000.0;
            row(
                "ping phase (every connection pinged)",
                format!("{seconds:.2} s"),
            );
        }
        if let Some(echo) = &self.echo {
            row(
                "echo messages/s",
                format!(
                    "{:.0} ({} messages of {} B in {:.2} s)",
                    echo.messages_per_second,
                    echo.messages,
                    echo.payload_bytes,
                    echo.measured_seconds
                ),
            );
            row("echo round trip", latency_line(&totals.round_trip));
        }
        if let Some(churn) = &self.churn {
            row(
                "opens/s",
                format!(
                    "{:.0} ({} opened in {:.2} s; {} abandoned at a stop)",
                    churn.opens_per_second, churn.opened, churn.duration_seconds, churn.abandoned
                ),
            );
        }
        if let Some(server) = &self.server {
            row(
                "server RSS before → after",
                format!(
                    "{} KiB → {} KiB",
                    server.rss_kib_before, server.rss_kib_after
                ),
            );
            row(
                "server RSS per connection",
                bytes(server.rss_bytes_per_connection),
            );
        }
        if let Some(kernel) = &self.kernel {
            row(
                "kernel slab before → after",
                format!(
                    "{} KiB → {} KiB",
                    kernel.before.slab_kib, kernel.after.slab_kib
                ),
            );
            row(
                "kernel slab per connection (both ends)",
                format!(
                    "{} (unreclaimable {})",
                    bytes(kernel.slab_bytes_per_connection),
                    bytes(kernel.unreclaimable_bytes_per_connection)
                ),
            );
        }
        failure_lines(&mut text, &totals.failures);
        if let Some(kernel) = &self.kernel {
            let _ = writeln!(text, "\nKernel memory: {}.", kernel.note);
        }
        text
    }
}

/// Appends "Failures by cause" with every cause that occurred (nothing when none did).
pub(crate) fn failure_lines(text: &mut String, failures: &Failures) {
    let failed: Vec<_> = failures
        .by_cause()
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(text, "\nFailures by cause:\n");
    for (cause, count) in failed {
        let _ = writeln!(text, "- {cause}: {count}");
    }
}

fn latency_line(summary: &LatencySummary) -> String {
    if summary.count == 0 {
        return "none measured".into();
    }
    format!(
        "p50 {} · p99 {} · p99.9 {} · max {} ({} samples)",
        duration(summary.p50_us),
        duration(summary.p99_us),
        duration(summary.p999_us),
        duration(summary.max_us),
        summary.count
    )
}

/// Microseconds for people: µs below a millisecond, ms below a second, else s.
fn duration(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

fn bytes(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |value| format!("{value:.0} B"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::record;
    use crate::protocol::Cause;

    fn report(worker_index: usize, latencies_ns: &[u64], failures: &[Cause]) -> WorkerReport {
        let mut histogram = new_histogram();
        for latency in latencies_ns {
            record(&mut histogram, *latency);
        }
        let mut failed = Failures::default();
        for cause in failures {
            failed.record(*cause);
        }
        WorkerReport {
            worker_index,
            attempted: latencies_ns.len() as u64 + failures.len() as u64,
            established: latencies_ns.len() as u64,
            alive: latencies_ns.len() as u64,
            failures: failed,
            ramp_ms: 100 * worker_index as u64,
            connect_latency_ns: EncodedHistogram::encode(&histogram),
            round_trip_ns: EncodedHistogram::encode(&histogram),
            messages: latencies_ns.len() as u64,
            measured_ms: 1000 + worker_index as u64,
            stopped_early: false,
            fanout: None,
            partial: false,
            ramp: RampReport::default(),
            buffer_shortages: 0,
        }
    }

    /// Merging reports sums counts and failures, merges histograms, and takes the longest
    /// ramp and measured phase.
    /// A partial report (a worker busy past its grace after stop) is merged like the others
    /// and counted, so the summary says how many workers' figures are partial.
    #[test]
    fn partial_reports_are_merged_and_counted() {
        let mut partial = report(1, &[40_000], &[Cause::HandshakeTimeout]);
        partial.partial = true;
        partial.ramp = RampReport {
            window_final: 8,
            cuts: 3,
            limited_ms: 2500,
        };
        let whole = report(0, &[50_000, 70_000], &[]);
        let totals = merge_reports(&[whole, partial]).unwrap();
        assert_eq!(totals.established, 3);
        assert_eq!(totals.failures.handshake_timeout, 1);
        assert_eq!(totals.workers_partial, 1);
        assert_eq!(totals.ramp.cuts, 3);
        assert_eq!(totals.ramp.limited_ms, 2500);
        assert_eq!(totals.connect_latency.count, 3);
    }

    #[test]
    fn merges_worker_reports() {
        let first: Vec<u64> = (1..=1000).map(|index| index * 1000).collect();
        let second: Vec<u64> = (1001..=2000).map(|index| index * 1000).collect();
        let reports = [
            report(0, &first, &[Cause::ConnectRefused]),
            report(2, &second, &[Cause::NoPong, Cause::NoPong]),
            report(1, &[], &[]),
        ];
        let totals = merge_reports(&reports).unwrap();
        assert_eq!(totals.attempted, 2003);
        assert_eq!(totals.established, 2000);
        assert_eq!(totals.alive, 2000);
        assert_eq!(totals.messages, 2000);
        assert_eq!(totals.failures.connect_refused, 1);
        assert_eq!(totals.failures.no_pong, 2);
        assert_eq!(totals.failures_total, 3);
        assert_eq!(totals.ramp_ms, 200);
        assert_eq!(totals.measured_ms, 1002);
        assert_eq!(totals.connect_latency.count, 2000);
        // 1 µs .. 2000 µs uniformly: the median is 1000 µs, p99 1980 µs (within 0.1 %).
        assert!(
            (totals.connect_latency.p50_us - 1000.0).abs() <= 1.0,
            "{totals:?}"
        );
        assert!(
            (totals.connect_latency.p99_us - 1980.0).abs() <= 2.0,
            "{totals:?}"
        );
        assert!(
            (totals.connect_latency.max_us - 2000.0).abs() <= 2.0,
            "{totals:?}"
        );
        let decoded = totals.connect_latency_ns_histogram.decode().unwrap();
        assert_eq!(decoded.len(), 2000);
        assert_eq!(merge_reports(&[]).unwrap().connect_latency.count, 0);
    }

    /// Churn figures: opened, closed and failed come from the totals; failures after the
    /// upgrade are not counted twice; the rate is per second of the open phase.
    #[test]
    fn churn_figures() {
        let mut worker = report(0, &[10_000; 8], &[Cause::ConnectRefused]);
        // Of the 8 opened, one got no pong and one no close: 6 closed cleanly.
        worker.alive = 6;
        worker.failures.record(Cause::NoPong);
        worker.failures.record(Cause::NoClose);
        // One more attempt was abandoned at a stop.
        worker.attempted += 1;
        let mut second = report(1, &[20_000; 2], &[]);
        second.failures.record(Cause::ClosedEarly);
        second.alive = 1;
        let totals = merge_reports(&[worker, second]).unwrap();
        let churn = ChurnFigures::of(&totals, 2000);
        assert_eq!(churn.opened, 10);
        assert_eq!(churn.closed_cleanly, 7);
        assert_eq!(churn.failed, 4);
        assert_eq!(churn.abandoned, 1);
        assert_eq!(churn.duration_seconds, 2.0);
        assert_eq!(churn.opens_per_second, 5.0);
        assert_eq!(ChurnFigures::of(&totals, 0).opens_per_second, 0.0);
    }

    /// The markdown names every figure present and each non-zero failure cause.
    #[test]
    fn markdown_summary() {
        let totals = merge_reports(&[report(0, &[50_000, 70_000], &[Cause::NoEcho])]).unwrap();
        let result = RunResult {
            scenario: "echo",
            settings: serde_json::json!({}),
            stopped_by: Some("interrupted".into()),
            workers: 1,
            workers_lost: 0,
            connections_planned: 3,
            rate_asked: 20.0,
            totals,
            ramp_connections_per_second: Some(20.0),
            echo: Some(EchoFigures {
                payload_bytes: 20,
                messages: 2,
                measured_seconds: 1.0,
                messages_per_second: 2.0,
            }),
            churn: None,
            server: Some(ServerMemory {
                pid: 1,
                rss_kib_before: 1000,
                rss_kib_after: 1002,
                rss_bytes_per_connection: Some(1024.0),
            }),
            kernel: Some(KernelMemory::new(
                SlabSample {
                    slab_kib: 10,
                    unreclaimable_kib: 5,
                },
                SlabSample {
                    slab_kib: 20,
                    unreclaimable_kib: 6,
                },
                2,
            )),
        };
        let text = result.markdown();
        assert!(text.contains("Stopped early (interrupted)"), "{text}");
        assert!(
            text.contains("| echo messages/s | 2 (2 messages of 20 B in 1.00 s) |"),
            "{text}"
        );
        assert!(text.contains("p50 50.0 µs"), "{text}");
        assert!(
            text.contains("| server RSS per connection | 1024 B |"),
            "{text}"
        );
        assert!(
            text.contains("| kernel slab per connection (both ends) | 5120 B"),
            "{text}"
        );
        assert!(text.contains("- no_echo: 1"), "{text}");
        assert!(!text.contains("no_pong"), "{text}");
        assert!(text.contains("both ends of every connection"), "{text}");
        assert!(
            serde_json::to_string(&result)
                .unwrap()
                .contains("\"messages_per_second\":2.0")
        );
    }
}
