//! A fanout run's results: each step's reports from the publishers' worker and the
//! subscribers' workers merged exactly (histograms merged, per-message maxima taken across
//! workers), the verdict against the latency bound, and the markdown summary.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::reach::ReachTally;
use super::sequence::OrderFaults;
use super::steps::{Step, StepVerdictInput, meets_bound};
use crate::histogram::{DecodeError, EncodedHistogram, LatencySummary, merge_into, new_histogram};
use crate::protocol::{FanoutTotals, StepCollected, StepPublished};
use crate::report::{Totals, failure_lines};

/// One step, all workers merged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepResult {
    pub index: u32,
    /// The rate asked for, messages per second over all topics.
    pub offered_per_second: f64,
    pub published: u64,
    /// The longest any publisher took for the step (its planned length unless it fell behind).
    pub publish_seconds: f64,
    pub achieved_per_second: f64,
    /// Publishers that ran the step to its end.
    pub publishers_finished: u64,
    /// Published per topic × the topic's subscribers, as counted at collection.
    pub deliveries_expected: u64,
    pub deliveries: u64,
    /// Expected deliveries that had not arrived when the drain ended.
    pub missing: u64,
    pub deliveries_per_second: f64,
    /// Publish → receive, one sample per delivery.
    pub latency: LatencySummary,
    /// Per message, the time to reach its last subscriber; complete messages only.
    pub reach: LatencySummary,
    /// Messages on topics with subscribers that reached every one of them.
    pub messages_complete: u64,
    /// Messages on topics with subscribers that some subscriber did not get.
    pub messages_incomplete: u64,
    /// A worker tracked only part of the messages (see `reach::MESSAGES_TRACKED_MAX`).
    pub reach_truncated: bool,
    pub faults: OrderFaults,
    /// Every subscribers' worker had all its expected deliveries before the drain ended.
    pub drained: bool,
    pub met_bound: bool,
    /// The merged delivery latencies (HdrHistogram V2, base64, nanoseconds).
    pub latency_ns_histogram: EncodedHistogram,
    /// CPU the whole load generator (coordinator, publishers, subscribers) used for the step,
    /// from the end of the previous one: its cost, to hold against the server's.
    pub load_generator_cpu_seconds: f64,
    /// That CPU per delivery, µs (none without deliveries).
    pub load_generator_cpu_us_per_delivery: Option<f64>,
}

impl StepResult {
    /// Merges one step: what the publishers sent, and each subscribers' worker's tally.
    pub fn merge(
        step: Step,
        published: &StepPublished,
        collected: &[&StepCollected],
        latency_ns_p99_max: u64,
    ) -> Result<Self, DecodeError> {
        let mut latency_ns = new_histogram();
        let mut reach = ReachTally::default();
        let mut faults = OrderFaults::default();
        let mut subscribers: HashMap<u32, u64> = HashMap::new();
        let (mut deliveries, mut expected, mut drained) = (0, 0, true);
        for report in collected {
            merge_into(&mut latency_ns, &report.latency_ns.decode()?);
            reach.merge(&ReachTally::from_entries(
                &report.reach,
                report.reach_truncated,
            ));
            faults.merge(&report.faults);
            for (topic, count) in &report.subscribers_per_topic {
                *subscribers.entry(*topic).or_default() += count;
            }
            deliveries += report.deliveries;
            expected += report.expected;
            drained &= report.drained;
        }
        let subscribers_of = |topic: u32| subscribers.get(&topic).copied().unwrap_or(0);
        let (reach_ns, _) = reach.complete(subscribers_of);
        let messages_with_subscribers: u64 = (0u32..)
            .zip(&published.published_per_topic)
            .filter(|(topic, _)| subscribers_of(*topic) > 0)
            .map(|(_, count)| count)
            .sum();
        let published_count: u64 = published.published_per_topic.iter().sum();
        let publish_seconds = published.duration_ms as f64 / 1000.0;
        let per_second = |count: u64| {
            if publish_seconds > 0.0 {
                (count as f64 / publish_seconds).round()
            } else {
                0.0
            }
        };
        let latency = LatencySummary::of(&latency_ns);
        let missing = expected.saturating_sub(deliveries);
        let verdict = StepVerdictInput {
            latency_ns_p99: latency_ns.value_at_quantile(0.99),
            missing,
            order_faults: faults.total(),
            deliveries,
        };
        Ok(Self {
            index: step.index,
            offered_per_second: step.rate_per_second,
            published: published_count,
            publish_seconds,
            achieved_per_second: per_second(published_count),
            publishers_finished: published.publishers,
            deliveries_expected: expected,
            deliveries,
            missing,
            deliveries_per_second: per_second(deliveries),
            latency,
            reach: LatencySummary::of(&reach_ns),
            messages_complete: reach_ns.len(),
            messages_incomplete: messages_with_subscribers.saturating_sub(reach_ns.len()),
            reach_truncated: reach.truncated,
            faults,
            drained,
            met_bound: meets_bound(verdict, latency_ns_p99_max),
            latency_ns_histogram: EncodedHistogram::encode(&latency_ns),
            load_generator_cpu_seconds: 0.0,
            load_generator_cpu_us_per_delivery: None,
        })
    }

    /// Records the load generator's CPU time for the step.
    pub fn set_load_generator_cpu(&mut self, cpu_ns: u64) {
        self.load_generator_cpu_seconds = cpu_ns as f64 / 1e9;
        self.load_generator_cpu_us_per_delivery =
            (self.deliveries > 0).then(|| cpu_ns as f64 / 1000.0 / self.deliveries as f64);
    }
}

/// Everything a fanout run produced, as written to the JSON file.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutResult {
    pub scenario: &'static str,
    pub settings: serde_json::Value,
    pub stopped_by: Option<String>,
    pub workers: usize,
    pub workers_lost: usize,
    /// Workers whose threads were still busy past the grace after `stop`: their reports
    /// hold what the threads had published up to a second before.
    pub workers_partial: usize,
    pub subscribers_planned: u64,
    pub subscribers_ready: u64,
    pub publishers_planned: u64,
    pub publishers_ready: u64,
    /// Connection counts, failures and connect latency over all connections.
    pub totals: Totals,
    pub fanout_totals: FanoutTotals,
    pub latency_ms_p99_max: f64,
    pub steps: Vec<StepResult>,
    /// The index in `steps` of the highest step that met the bound before one missed it.
    pub highest_met: Option<usize>,
    /// Every step run: every expected delivery arrived, once and in order, and nothing late.
    pub every_delivery_checked: bool,
}

impl FanoutResult {
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "## ringcast-loadtest fanout\n");
        if let Some(reason) = &self.stopped_by {
            let _ = writeln!(text, "**Stopped early ({reason}): partial figures.**\n");
        }
        let _ = writeln!(text, "| figure | value |\n|---|---|");
        let mut row = |name: &str, value: String| {
            let _ = writeln!(text, "| {name} | {value} |");
        };
        let planned = (self.subscribers_planned, self.publishers_planned);
        row(
            "subscribers ready (of planned)",
            format!("{} of {}", self.subscribers_ready, planned.0),
        );
        row(
            "publishers ready (of planned)",
            format!("{} of {}", self.publishers_ready, planned.1),
        );
        row("connections failed", self.totals.failures_total.to_string());
        row(
            "workers",
            format!("{} ({} lost)", self.workers, self.workers_lost),
        );
        row(
            "connect latency (TCP + handshake)",
            latency_line(&self.totals.connect_latency),
        );
        let totals = &self.fanout_totals;
        row(
            "late deliveries · server errors · resets · unexpected",
            format!(
                "{} · {} · {} · {}",
                totals.late_deliveries, totals.server_errors, totals.resets, totals.unexpected
            ),
        );
        row(
            "deliveries also fully parsed · read differently by the scanner",
            format!("{} · {}", totals.fully_parsed, totals.scanner_mismatches),
        );
        if totals.data_messages > 0 {
            row(
                "WebSocket data messages · bytes on the wire each (frames with heads) · compressed",
                format!(
                    "{} · {:.1} · {}",
                    totals.data_messages,
                    totals.data_message_wire_bytes as f64 / totals.data_messages as f64,
                    totals.compressed_messages
                ),
            );
        }
        if self.workers_partial > 0 {
            row(
                "workers that reported partial figures (busy past the grace after stop)",
                self.workers_partial.to_string(),
            );
        }
        let complete: u64 = self.steps.iter().map(|step| step.messages_complete).sum();
        let incomplete: u64 = self.steps.iter().map(|step| step.messages_incomplete).sum();
        row(
            "messages that reached every subscriber of their topic",
            format!("{complete} of {}", complete + incomplete),
        );
        row(
            "every delivery arrived once, in order",
            if self.every_delivery_checked {
                "yes"
            } else {
                "no"
            }
            .into(),
        );
        let highest = match self.highest_met.map(|index| &self.steps[index]) {
            Some(step) => format!(
                "step {}: {:.0} publishes/s offered, {:.0} deliveries/s, p99 {}",
                step.index,
                step.offered_per_second,
                step.deliveries_per_second,
                duration(step.latency.p99_us)
            ),
            None => "none".into(),
        };
        row(
            &format!("highest step with p99 ≤ {} ms", self.latency_ms_p99_max),
            highest,
        );
        self.step_table(&mut text);
        failure_lines(&mut text, &self.totals.failures);
        text
    }

    fn step_table(&self, text: &mut String) {
        let _ = writeln!(
            text,
            "\n| step | offered/s | achieved/s | deliveries/s | p50 | p99 | p99.9 | max | \
             reach p50 · p99 · max | missing | gaps · dup · order · seq | met | \
             load generator µs CPU per delivery |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for step in &self.steps {
            let latency = &step.latency;
            let faults = &step.faults;
            let _ = writeln!(
                text,
                "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} · {} · {} | {} | \
                 {} · {} · {} · {} | {} | {} |",
                step.index,
                step.offered_per_second,
                step.achieved_per_second,
                step.deliveries_per_second,
                duration(latency.p50_us),
                duration(latency.p99_us),
                duration(latency.p999_us),
                duration(latency.max_us),
                duration(step.reach.p50_us),
                duration(step.reach.p99_us),
                duration(step.reach.max_us),
                step.missing,
                faults.gaps,
                faults.duplicates,
                faults.out_of_order,
                faults.seq_mismatches,
                if step.met_bound { "yes" } else { "no" },
                step.load_generator_cpu_us_per_delivery
                    .map_or("n/a".into(), |us| format!("{us:.2}")),
            );
        }
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
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::reach::ReachEntry;
    use crate::histogram::record;

    fn collected(
        worker_index: usize,
        latencies_ns: &[u64],
        reach: Vec<ReachEntry>,
    ) -> StepCollected {
        let mut histogram = new_histogram();
        for latency in latencies_ns {
            record(&mut histogram, *latency);
        }
        StepCollected {
            worker_index,
            step: 0,
            deliveries: latencies_ns.len() as u64,
            expected: latencies_ns.len() as u64,
            drained: true,
            latency_ns: EncodedHistogram::encode(&histogram),
            reach,
            subscribers_per_topic: vec![(0, latencies_ns.len() as u64 / 2)],
            ..StepCollected::default()
        }
    }

    /// Two subscribers' workers, each with two of topic 0's four subscribers: messages 1 and 2
    /// reach all four, the per-message reach is the maximum over both workers, and the
    /// delivery histogram is the union of both.
    #[test]
    fn merges_workers_exactly() {
        let step = Step {
            index: 0,
            rate_per_second: 2.0,
            duration_ms: 1000,
        };
        let published = StepPublished {
            worker_index: 2,
            step: 0,
            published_per_topic: vec![2, 5],
            duration_ms: 1000,
            publishers: 1,
            cpu_ns: 0,
        };
        let first = collected(
            0,
            &[1_000_000, 2_000_000, 3_000_000, 4_000_000],
            vec![
                ReachEntry(0, 1, 2_000_000, 2),
                ReachEntry(0, 2, 4_000_000, 2),
            ],
        );
        let second = collected(
            1,
            &[7_000_000, 1_000_000, 1_500_000, 1_000_000],
            vec![
                ReachEntry(0, 1, 7_000_000, 2),
                ReachEntry(0, 2, 1_500_000, 2),
            ],
        );
        let result = StepResult::merge(step, &published, &[&first, &second], 50_000_000).unwrap();
        assert_eq!(result.deliveries, 8);
        assert_eq!(result.deliveries_expected, 8);
        assert_eq!(result.missing, 0);
        assert_eq!(result.latency.count, 8);
        assert!((result.latency.max_us - 7000.0).abs() < 10.0, "{result:?}");
        // Topic 1 has no subscribers: its 5 messages count nowhere.
        assert_eq!(result.messages_complete, 2);
        assert_eq!(result.messages_incomplete, 0);
        assert!((result.reach.max_us - 7000.0).abs() < 10.0, "{result:?}");
        assert!((result.reach.min_us - 4000.0).abs() < 10.0, "{result:?}");
        assert_eq!(result.published, 7);
        assert_eq!(result.achieved_per_second, 7.0);
        assert_eq!(result.deliveries_per_second, 8.0);
        assert!(result.met_bound);
        // A p99 over the bound, or one delivery short, fails the step.
        let strict = StepResult::merge(step, &published, &[&first, &second], 5_000_000).unwrap();
        assert!(!strict.met_bound);
        let mut short = second.clone();
        short.expected += 1;
        short.drained = false;
        let result = StepResult::merge(step, &published, &[&first, &short], 50_000_000).unwrap();
        assert_eq!(result.missing, 1);
        assert!(!result.drained && !result.met_bound);
    }

    /// A message one worker never saw is incomplete, whatever the other saw.
    #[test]
    fn a_message_missing_in_one_worker_is_incomplete() {
        let step = Step {
            index: 0,
            rate_per_second: 1.0,
            duration_ms: 1000,
        };
        let published = StepPublished {
            worker_index: 2,
            step: 0,
            published_per_topic: vec![2],
            duration_ms: 1000,
            publishers: 1,
            cpu_ns: 0,
        };
        let first = collected(
            0,
            &[1_000, 1_000],
            vec![ReachEntry(0, 1, 1_000, 1), ReachEntry(0, 2, 1_000, 1)],
        );
        let mut second = collected(1, &[1_000, 1_000], vec![ReachEntry(0, 1, 9_000, 1)]);
        second.subscribers_per_topic = vec![(0, 1)];
        let result = StepResult::merge(step, &published, &[&first, &second], 50_000_000).unwrap();
        assert_eq!(result.messages_complete, 1);
        assert_eq!(result.messages_incomplete, 1);
        assert!((result.reach.max_us - 9.0).abs() < 0.1, "{result:?}");
    }
}
