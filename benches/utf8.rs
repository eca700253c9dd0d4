//! UTF-8 validation of a 64 KiB text message: std's validator, simdutf8's, and our incremental
//! `Utf8Validator` fed in 4 KiB pieces (as a message cut across receive buffers arrives), on
//! ASCII (JSON market data), mixed Latin (French and German prose) and CJK text.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::websocket::utf8::Utf8Validator;

const TEXT_BYTES: usize = 64 * 1024;
const PIECE_BYTES: usize = 4 * 1024;

const ASCII_LINE: &str =
    r#"{"type":"trade","symbol":"AAPL","price":189.27,"size":100,"ts":1717171717123}"#;
const LATIN_PROSE: &str = "Le cours a légèrement progressé après l'annonce des résultats, \
    et les négociants restent prudents à l'approche de l'été. Die Börse schloss höher, \
    während Händler über mögliche Zinsänderungen und die Schwäche des Euro diskutierten. ";
const CJK_PROSE: &str = "東京証券取引所の株価は午後に上昇し、投資家は決算発表を注視した。\
    上海证券交易所的股价今天小幅上涨，成交量明显放大。";

/// `unit` repeated to just under 64 KiB, ending on a character boundary.
fn text_of(unit: &str) -> Vec<u8> {
    let mut text = String::with_capacity(TEXT_BYTES);
    'fill: loop {
        for character in unit.chars() {
            if text.len() + character.len_utf8() > TEXT_BYTES {
                break 'fill;
            }
            text.push(character);
        }
    }
    text.into_bytes()
}

fn validate_in_pieces(validator: &mut Utf8Validator, text: &[u8]) -> bool {
    validator.reset();
    text.chunks(PIECE_BYTES)
        .all(|piece| validator.feed(piece).is_ok())
        && validator.finish().is_ok()
}

fn utf8(criterion: &mut Criterion) {
    let texts = [
        ("ascii", text_of(ASCII_LINE)),
        ("latin", text_of(LATIN_PROSE)),
        ("cjk", text_of(CJK_PROSE)),
    ];
    let mut validator = Utf8Validator::default();
    for (name, text) in &texts {
        // 4 KiB pieces cut through multi-byte characters in the Latin and CJK texts, so the
        // incremental validator's carry path is part of what is measured.
        assert!(validate_in_pieces(&mut validator, text));
        let mut group = criterion.benchmark_group(format!("utf8_{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter("std"), text, |bencher, text| {
            bencher.iter(|| std::str::from_utf8(black_box(text)).is_ok())
        });
        group.bench_with_input(
            BenchmarkId::from_parameter("simdutf8"),
            text,
            |bencher, text| bencher.iter(|| simdutf8::basic::from_utf8(black_box(text)).is_ok()),
        );
        group.bench_with_input(
            BenchmarkId::from_parameter("ringcast_4_kib_pieces"),
            text,
            |bencher, text| bencher.iter(|| validate_in_pieces(&mut validator, black_box(text))),
        );
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = utf8
}
criterion_main!(benches);
