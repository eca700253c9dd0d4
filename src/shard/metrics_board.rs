//! Where shards leave their metrics for `GET /metrics`, which any shard may serve.
//!
//! Each shard copies its counters and gauges into its own slot once a turn, with `try_lock`:
//! a shard never waits on a scrape (if one holds the slot, the copy waits for the next turn).
//! A scrape copies every slot, then renders.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;

use crate::endpoint::MetricsText;
use crate::metrics::MetricsRenderer;
use crate::stats::{Counters, ShardStats};

/// Every shard's latest metrics.
#[derive(Debug)]
pub struct MetricsBoard {
    shards: Vec<Mutex<ShardStats>>,
}

impl MetricsBoard {
    pub fn new(shards: usize) -> MetricsBoard {
        MetricsBoard {
            shards: (0..shards)
                .map(|_| Mutex::new(ShardStats::default()))
                .collect(),
        }
    }

    /// Records shard `index`'s metrics, unless a scrape is reading them right now.
    pub fn publish(&self, index: usize, metrics: &ShardStats) {
        if let Ok(mut slot) = self.shards[index].try_lock() {
            *slot = *metrics;
        }
    }

    /// Copies every shard's metrics into `out`.
    pub fn snapshot(&self, out: &mut Vec<ShardStats>) {
        out.clear();
        for slot in &self.shards {
            let metrics = *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            out.push(metrics);
        }
    }
}

/// A shard's means of answering a scrape.
pub struct MetricsView {
    board: Arc<MetricsBoard>,
    renderer: MetricsRenderer,
    snapshot: Vec<ShardStats>,
}

impl std::fmt::Debug for MetricsView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MetricsView")
            .finish_non_exhaustive()
    }
}

impl MetricsView {
    pub fn new(board: Arc<MetricsBoard>) -> MetricsView {
        MetricsView {
            board,
            renderer: MetricsRenderer::new(),
            snapshot: Vec::new(),
        }
    }

    /// Adds families kept outside the shards (the webhooks') to every scrape.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.renderer.register_collector(collector);
    }
}

impl MetricsText for MetricsView {
    /// The Prometheus text of every shard's metrics.
    fn render(&mut self) -> String {
        self.board.snapshot(&mut self.snapshot);
        let mut text = String::new();
        self.renderer.render(&self.snapshot, &mut text);
        text
    }

    /// Every counter summed over the shards, as one JSON object: `/metrics` has a series per
    /// shard, which Prometheus sums, and a person with curl should not have to.
    fn totals(&mut self) -> String {
        self.board.snapshot(&mut self.snapshot);
        let mut totals = Counters::default().named();
        for shard in &self.snapshot {
            for (total, (_, value)) in totals.iter_mut().zip(shard.counters.named()) {
                total.1 += value;
            }
        }
        let mut text = format!("{{\"shards\":{}", self.snapshot.len());
        for (name, value) in totals {
            text.push_str(&format!(",\"{name}\":{value}"));
        }
        text.push_str("}\n");
        text
    }
}
