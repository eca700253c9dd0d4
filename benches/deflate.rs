//! permessage-deflate on the fanout path: compressing one 200-byte JSON quote (what the shard
//! does once per message and window, whatever its subscriber count) at levels 1 and 6, and
//! inflating it as a client would; the compressed size is printed once, for the bytes on the
//! wire. Per delivery, the compression's cost is this figure divided by the subscribers that
//! share the frame.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::pool::{BufferPool, PoolLimits};
use ringcast::protocol::websocket::deflate::{
    Compressor, Inflater, SYNC_FLUSH_TRAILER, WINDOW_BITS_MAX,
};

/// A market-data message as subscribers receive it: about 200 bytes of JSON.
fn quote() -> Vec<u8> {
    let quote = br#"{"topic":"AAPL","seq":184467,"data":{"symbol":"AAPL","bid":"189.2500","ask":"189.2700","bid_size":300,"ask_size":500,"last":"189.2600","volume":51234987,"venue":"XNAS","ts":1733312345678}}"#;
    quote.to_vec()
}

fn compress(criterion: &mut Criterion) {
    let message = quote();
    let mut group = criterion.benchmark_group("deflate_quote");
    group.throughput(Throughput::Elements(1));
    for level in [1, 6] {
        let mut compressor = Compressor::new(level, WINDOW_BITS_MAX);
        let mut out = Vec::new();
        compressor.compress(&message, &mut out);
        eprintln!(
            "deflate_quote: level {level}: {} bytes -> {} bytes",
            message.len(),
            out.len()
        );
        group.bench_function(format!("compress_level_{level}"), |bencher| {
            bencher.iter(|| compressor.compress(black_box(&message), &mut out))
        });
    }
    let mut compressed = Vec::new();
    Compressor::new(1, WINDOW_BITS_MAX).compress(&message, &mut compressed);
    let mut pool = BufferPool::new(&PoolLimits::default());
    let mut inflater = Inflater::new();
    group.bench_function("inflate", |bencher| {
        bencher.iter(|| {
            let mut out = pool.acquire(4096).expect("a buffer");
            for piece in [&compressed[..], &SYNC_FLUSH_TRAILER[..]] {
                inflater
                    .inflate(piece, &mut out, 1 << 20, &mut pool)
                    .unwrap();
            }
            assert_eq!(out.len(), message.len());
            pool.release(out);
            inflater.reset();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = compress
}
criterion_main!(benches);
