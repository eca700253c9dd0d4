//! Latency histograms: one shape for all of them, a text encoding for the worker protocol and
//! the result file, merging, and the percentiles we report.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds: 120 s in nanoseconds, above every timeout we allow.
/// Larger values are clamped to it rather than lost.
pub const LATENCY_NS_MAX: u64 = 120_000_000_000;

/// Three significant digits: 0.1 % resolution at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram, in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency_ns: u64) {
    histogram.saturating_record(latency_ns.clamp(1, LATENCY_NS_MAX));
}

/// A histogram in HdrHistogram's V2 encoding, base64: compact, and readable by the HdrHistogram
/// libraries of other languages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodedHistogram(pub String);

/// An encoded histogram that does not decode.
#[derive(Debug)]
pub struct DecodeError(String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "bad encoded histogram: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl EncodedHistogram {
    pub fn encode(histogram: &Histogram<u64>) -> Self {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(histogram, &mut bytes)
            .expect("serializing into memory cannot fail");
        Self(BASE64.encode(bytes))
    }

    /// The histogram; an empty string (a report that measured nothing) is an empty histogram.
    pub fn decode(&self) -> Result<Histogram<u64>, DecodeError> {
        if self.0.is_empty() {
            return Ok(new_histogram());
        }
        let bytes = BASE64
            .decode(&self.0)
            .map_err(|error| DecodeError(error.to_string()))?;
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|error| DecodeError(format!("{error:?}")))?;
        // Re-home into our own shape so merges never fail on a narrower range.
        let mut histogram = new_histogram();
        merge_into(&mut histogram, &decoded);
        Ok(histogram)
    }
}

/// Adds every value of `source` to `target`, clamping values beyond its range.
pub fn merge_into(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    if target.add(source).is_ok() {
        return;
    }
    for value in source.iter_recorded() {
        let latency = value.value_iterated_to().clamp(1, LATENCY_NS_MAX);
        target.saturating_record_n(latency, value.count_at_value());
    }
}

/// The percentiles we report, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| round_to_tenth(ns as f64 / 1000.0);
        Self {
            count: histogram.len(),
            min_us: us(histogram.min()),
            mean_us: round_to_tenth(histogram.mean() / 1000.0),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

fn round_to_tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding and decoding keeps every recorded value and count.
    #[test]
    fn encode_decode_round_trip() {
        let mut histogram = new_histogram();
        for value in (1..10_000u64).map(|index| index * 997) {
            record(&mut histogram, value);
        }
        record(&mut histogram, LATENCY_NS_MAX * 2);
        let encoded = EncodedHistogram::encode(&histogram);
        let decoded = encoded.decode().unwrap();
        assert_eq!(decoded, histogram);
        assert_eq!(decoded.len(), 10_000);
        assert_eq!(EncodedHistogram::default().decode().unwrap().len(), 0);
        assert!(EncodedHistogram("not base64!".into()).decode().is_err());
    }

    /// Merging two workers' histograms equals recording everything into one.
    #[test]
    fn merge_equals_single_histogram() {
        let mut first = new_histogram();
        let mut second = new_histogram();
        let mut together = new_histogram();
        for index in 0..5_000u64 {
            let value = 10_000 + index * 13;
            let histogram = if index % 3 == 0 {
                &mut first
            } else {
                &mut second
            };
            record(histogram, value);
            record(&mut together, value);
        }
        let mut merged = EncodedHistogram::encode(&first).decode().unwrap();
        merge_into(
            &mut merged,
            &EncodedHistogram::encode(&second).decode().unwrap(),
        );
        assert_eq!(merged, together);
        assert_eq!(LatencySummary::of(&merged), LatencySummary::of(&together));
    }

    /// A histogram of a narrower range still merges, its values intact.
    #[test]
    fn merge_accepts_other_shapes() {
        let mut narrow = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        narrow.record_n(500, 7).unwrap();
        let mut target = new_histogram();
        merge_into(&mut target, &narrow);
        assert_eq!(target.len(), 7);
        assert_eq!(target.value_at_quantile(0.5), 500);
    }

    /// Percentiles of a known distribution: 1..=100000 ns uniformly.
    #[test]
    fn percentiles_of_uniform_values() {
        let mut histogram = new_histogram();
        for value in 1..=100_000u64 {
            record(&mut histogram, value);
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 100_000);
        assert_eq!(summary.min_us, 0.0);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.002;
        assert!(close(summary.p50_us, 50.0), "{summary:?}");
        assert!(close(summary.p90_us, 90.0), "{summary:?}");
        assert!(close(summary.p99_us, 99.0), "{summary:?}");
        assert!(close(summary.p999_us, 99.9), "{summary:?}");
        assert!(close(summary.max_us, 100.0), "{summary:?}");
        assert!(close(summary.mean_us, 50.0), "{summary:?}");
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }
}
