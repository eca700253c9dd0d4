//! SVG plots of a run, drawn with plotters' SVG backend (no fonts needed: text stays text):
//! the latency CDF from the merged HDR histogram, and a rate per second over the run's time,
//! from the cumulative counts in the workers' progress events.
//!
//! The data are computed by pure functions (`cdf_points`, `rate_series`), which the tests
//! check; `write_plots` only draws them.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (900, 540);

/// The lowest latency on the log axis: a recorded 0 ns would have no place on it.
const LATENCY_US_FLOOR: f64 = 0.001;

/// One progress event of one worker: its cumulative count at a time since the run's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSample {
    pub elapsed_ms: u64,
    pub count: u64,
}

/// A worker's progress samples, at most `samples_max` of them: a worker sends about one a
/// second, and the run has a deadline, so the caller sizes it from the deadline. Samples past
/// the bound are dropped rather than grow the run's memory.
#[derive(Clone, Debug)]
pub struct RateSamples {
    samples: Vec<RateSample>,
    samples_max: usize,
}

impl RateSamples {
    pub fn new(samples_max: usize) -> Self {
        Self {
            samples: Vec::with_capacity(samples_max),
            samples_max,
        }
    }

    pub fn record(&mut self, elapsed_ms: u64, count: u64) {
        if self.samples.len() < self.samples_max {
            self.samples.push(RateSample { elapsed_ms, count });
        }
    }

    pub fn samples(&self) -> &[RateSample] {
        &self.samples
    }
}

/// The CDF of a histogram of nanoseconds: (latency in µs, percentile 0..=100), one point per
/// recorded bucket, so at most the histogram's bucket count (a few thousand).
pub fn cdf_points(histogram_ns: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram_ns
        .iter_recorded()
        .map(|bucket| {
            let latency_us = bucket.value_iterated_to() as f64 / 1000.0;
            (latency_us.max(LATENCY_US_FLOOR), bucket.percentile())
        })
        .collect()
}

/// The rate per second summed over workers: one point per whole second of the run, placed at
/// the middle of that second, up to the last second any worker reported in full.
///
/// Workers report unsynchronised, about once a second each, so their counts are not summed
/// sample by sample (that would alias into spikes): each worker's cumulative count is
/// interpolated linearly at the second boundaries, starting from 0 at the run's start, and held
/// after its last report.
pub fn rate_series(workers: &[&[RateSample]]) -> Vec<(f64, f64)> {
    let last_ms = workers
        .iter()
        .filter_map(|samples| samples.last())
        .map(|sample| sample.elapsed_ms)
        .max()
        .unwrap_or(0);
    let seconds = last_ms / 1000;
    (0..seconds)
        .map(|second| {
            let (from_ms, until_ms) = (second * 1000, (second + 1) * 1000);
            let rate: f64 = workers
                .iter()
                .map(|samples| count_at(samples, until_ms) - count_at(samples, from_ms))
                .sum();
            (second as f64 + 0.5, rate)
        })
        .collect()
}

/// A worker's cumulative count at `at_ms`, interpolated between its samples.
fn count_at(samples: &[RateSample], at_ms: u64) -> f64 {
    let mut before = RateSample {
        elapsed_ms: 0,
        count: 0,
    };
    for &sample in samples {
        if sample.elapsed_ms >= at_ms {
            let span_ms = sample.elapsed_ms.saturating_sub(before.elapsed_ms);
            if span_ms == 0 {
                return sample.count as f64;
            }
            let fraction = (at_ms - before.elapsed_ms) as f64 / span_ms as f64;
            let growth = sample.count.saturating_sub(before.count) as f64;
            return before.count as f64 + growth * fraction;
        }
        before = sample;
    }
    before.count as f64
}

/// What to plot for one run.
pub struct PlotInput<'a> {
    /// "connect" or "echo": the prefix of the file names.
    pub scenario: &'a str,
    /// What the histogram measured, for the title ("connect latency", "echo round trip").
    pub latency_name: &'a str,
    pub latency_ns: &'a Histogram<u64>,
    /// What the counts count, for the title ("connections established", "echoes").
    pub rate_name: &'a str,
    pub rate_samples: &'a [&'a [RateSample]],
}

/// Writes `<scenario>-latency-cdf.svg` and `<scenario>-rate.svg` into `directory` (made if
/// missing) and returns their paths.
pub fn write_plots(directory: &Path, input: &PlotInput) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let cdf_path = directory.join(format!("{}-latency-cdf.svg", input.scenario));
    let cdf_title = format!("{}: {} CDF", input.scenario, input.latency_name);
    draw_cdf(&cdf_path, &cdf_title, &cdf_points(input.latency_ns))
        .map_err(|error| format!("cannot draw {}: {error}", cdf_path.display()))?;
    let rate_path = directory.join(format!("{}-rate.svg", input.scenario));
    let rate_title = format!("{}: {} per second", input.scenario, input.rate_name);
    draw_rate(&rate_path, &rate_title, &rate_series(input.rate_samples))
        .map_err(|error| format!("cannot draw {}: {error}", rate_path.display()))?;
    Ok(vec![cdf_path, rate_path])
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_cdf(path: &Path, title: &str, points: &[(f64, f64)]) -> DrawResult {
    // A log axis needs a positive, non-empty range, also when nothing was measured.
    let low = points.first().map_or(1.0, |point| point.0);
    let high = points
        .last()
        .map_or(1000.0, |point| point.0)
        .max(low * 10.0);
    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((low..high).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("percentile")
        .x_label_formatter(&|us| format!("{us:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    root.present()?;
    Ok(())
}

fn draw_rate(path: &Path, title: &str, points: &[(f64, f64)]) -> DrawResult {
    let seconds = points.last().map_or(1.0, |point| point.0 + 0.5);
    let rate_max = points.iter().map(|point| point.1).fold(0.0, f64::max);
    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds, 0.0..(rate_max * 1.1).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second")
        .y_label_formatter(&|rate| format!("{rate:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{new_histogram, record};

    fn samples(points: &[(u64, u64)]) -> Vec<RateSample> {
        points
            .iter()
            .map(|&(elapsed_ms, count)| RateSample { elapsed_ms, count })
            .collect()
    }

    /// The CDF rises monotonically to 100 %, in microseconds, with 0 ns kept on the log axis.
    #[test]
    fn cdf_points_of_a_histogram() {
        let mut histogram = new_histogram();
        for latency_us in 1..=1000 {
            record(&mut histogram, latency_us * 1000);
        }
        record(&mut histogram, 0);
        let points = cdf_points(&histogram);
        assert_eq!(points[0], (LATENCY_US_FLOOR, 100.0 / 1001.0));
        assert!(points.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(points.windows(2).all(|pair| pair[0].1 <= pair[1].1));
        let (last_us, last_percentile) = *points.last().unwrap();
        assert!((last_us - 1000.0).abs() <= 1.0, "{last_us}");
        assert_eq!(last_percentile, 100.0);
        // The median is near 500 µs (three significant digits).
        let median = points.iter().find(|point| point.1 >= 50.0).unwrap();
        assert!((median.0 - 500.0).abs() <= 1.0, "{median:?}");
        assert!(cdf_points(&new_histogram()).is_empty());
    }

    /// Rates are per whole second, summed over workers whose reports are not aligned, and
    /// end at the last second reported in full.
    #[test]
    fn rate_series_sums_unaligned_workers() {
        // 1000 per second, reported at x.5 s; 200 per second, reported on the second, then
        // done after 2 s (its count stays).
        let first = samples(&[(500, 500), (1500, 1500), (2500, 2500), (3500, 3500)]);
        let second = samples(&[(1000, 200), (2000, 400), (3000, 400)]);
        let series = rate_series(&[&first, &second]);
        assert_eq!(series, [(0.5, 1200.0), (1.5, 1200.0), (2.5, 1000.0)]);
        assert!(rate_series(&[]).is_empty());
        assert!(rate_series(&[&samples(&[(900, 5)])]).is_empty());
    }

    /// Samples beyond the bound are dropped.
    #[test]
    fn rate_samples_are_bounded() {
        let mut recorded = RateSamples::new(2);
        for second in 1..=5 {
            recorded.record(second * 1000, second);
        }
        assert_eq!(recorded.samples(), samples(&[(1000, 1), (2000, 2)]));
    }

    /// Both SVG files are written for a small synthetic run, also for one with no data.
    #[test]
    fn writes_svg_files() {
        let directory = tempfile::tempdir().unwrap();
        let mut histogram = new_histogram();
        for latency_ns in [80_000, 120_000, 150_000, 900_000, 3_000_000] {
            record(&mut histogram, latency_ns);
        }
        let worker = samples(&[(1000, 100), (2000, 350), (3000, 600)]);
        let input = PlotInput {
            scenario: "echo",
            latency_name: "round trip",
            latency_ns: &histogram,
            rate_name: "echoes",
            rate_samples: &[&worker],
        };
        let paths = write_plots(&directory.path().join("plots"), &input).unwrap();
        assert_eq!(paths.len(), 2);
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains("<svg"), "{}", path.display());
            assert!(text.contains("polyline"), "{}", path.display());
        }
        let empty = new_histogram();
        let input = PlotInput {
            scenario: "connect",
            latency_name: "connect latency",
            latency_ns: &empty,
            rate_name: "connections established",
            rate_samples: &[],
        };
        for path in write_plots(directory.path(), &input).unwrap() {
            assert!(std::fs::read_to_string(path).unwrap().contains("<svg"));
        }
    }
}
