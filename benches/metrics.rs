//! One `GET /metrics` scrape of 64 shards with busy counters: copy the snapshots into the
//! renderer and encode the OpenMetrics text into a reused String. A scrape may run on a shard
//! thread, so its cost is time that shard does not spend on its connections.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::metrics::MetricsRenderer;
use ringcast::stats::ShardStats;

/// The shard count of a large machine.
const SHARDS_COUNT: usize = 64;

fn scrape(criterion: &mut Criterion) {
    let mut shard = ShardStats::default();
    // Large values so that every number takes as many digits as after days of traffic.
    shard.counters.bytes_sent = 9_876_543_210_987;
    shard.counters.deliveries = 123_456_789_012;
    shard.counters.messages_received = 98_765_432_101;
    shard.gauges.connections = 15_625;
    let shards = vec![shard; SHARDS_COUNT];
    let mut renderer = MetricsRenderer::new();
    let mut text = String::new();
    renderer.render(&shards, &mut text);
    let mut group = criterion.benchmark_group("metrics");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("render_64_shards", |bencher| {
        bencher.iter(|| {
            text.clear();
            renderer.render(black_box(&shards), &mut text);
            black_box(text.len())
        })
    });
    group.finish();
    eprintln!("one scrape of {SHARDS_COUNT} shards: {} bytes", text.len());
}

criterion_group!(benches, scrape);
criterion_main!(benches);
