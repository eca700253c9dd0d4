//! The publish-rate plan: one fixed rate, or steps of rising rates, each run for a set time;
//! the run stops after the first step that misses the latency bound.

use serde::{Deserialize, Serialize};

/// Most steps a plan may have: a geometric plan with a small factor stays finite.
pub const STEPS_MAX: usize = 64;

/// One step: publish `rate_per_second` messages per second in total, over all topics, for
/// `duration_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    pub rate_per_second: f64,
    pub duration_ms: u64,
}

/// The steps of `rates`, each lasting `duration_ms`.
pub fn steps_of(rates: &[f64], duration_ms: u64) -> Result<Vec<Step>, String> {
    if rates.is_empty() || rates.len() > STEPS_MAX {
        return Err(format!("a rate plan needs 1 to {STEPS_MAX} steps"));
    }
    if let Some(rate) = rates
        .iter()
        .find(|rate| !(rate.is_finite() && **rate > 0.0))
    {
        return Err(format!("rate {rate} is not a positive number"));
    }
    if duration_ms == 0 {
        return Err("steps must last at least a millisecond".into());
    }
    Ok(rates
        .iter()
        .enumerate()
        .map(|(index, rate)| Step {
            index: index as u32,
            rate_per_second: *rate,
            duration_ms,
        })
        .collect())
}

/// `start`, `start × factor`, ... up to and including `max` (within rounding).
pub fn geometric_rates(start: f64, factor: f64, max: f64) -> Result<Vec<f64>, String> {
    if !(start > 0.0 && factor > 1.0 && max >= start && max.is_finite()) {
        return Err("need 0 < --rate-start ≤ --rate-max and --rate-factor > 1".into());
    }
    let mut rates = Vec::new();
    let mut rate = start;
    while rate <= max * (1.0 + 1e-9) {
        if rates.len() == STEPS_MAX {
            return Err(format!(
                "the geometric plan has more than {STEPS_MAX} steps: raise the factor"
            ));
        }
        rates.push(rate);
        rate *= factor;
    }
    Ok(rates)
}

/// What decides whether a step met the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepVerdictInput {
    /// p99 of publish → receive latency over the step's deliveries, in nanoseconds.
    pub latency_ns_p99: u64,
    /// Deliveries that every subscriber should have had and did not get before the drain
    /// ended.
    pub missing: u64,
    /// Gaps, duplicates, out-of-order deliveries and sequence-number mismatches.
    pub order_faults: u64,
    /// Deliveries made in the step.
    pub deliveries: u64,
}

/// A step meets the bound when its p99 latency is within it and every expected delivery
/// arrived, once and in order: a lost message has no latency, so it cannot count as fast.
pub fn meets_bound(input: StepVerdictInput, latency_ns_p99_max: u64) -> bool {
    input.deliveries > 0
        && input.latency_ns_p99 <= latency_ns_p99_max
        && input.missing == 0
        && input.order_faults == 0
}

/// The index, among `met` (whether each step run met the bound, in order), of the highest
/// step that met it before the first that did not.
pub fn highest_met(met: &[bool]) -> Option<usize> {
    met.iter().take_while(|met| **met).count().checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list becomes numbered steps of one length; bad lists are refused.
    #[test]
    fn steps_from_a_list() {
        let steps = steps_of(&[1000.0, 2000.0, 5000.0], 3000).unwrap();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[2].index, 2);
        assert_eq!(steps[2].rate_per_second, 5000.0);
        assert!(steps.iter().all(|step| step.duration_ms == 3000));
        assert!(steps_of(&[], 1000).is_err());
        assert!(steps_of(&[0.0], 1000).is_err());
        assert!(steps_of(&[f64::NAN], 1000).is_err());
        assert!(steps_of(&[1.0], 0).is_err());
        assert!(steps_of(&vec![1.0; STEPS_MAX + 1], 1000).is_err());
    }

    /// A geometric plan includes its maximum and refuses plans that never end.
    #[test]
    fn geometric_plans() {
        assert_eq!(
            geometric_rates(1000.0, 2.0, 8000.0).unwrap(),
            [1000.0, 2000.0, 4000.0, 8000.0]
        );
        assert_eq!(
            geometric_rates(1000.0, 2.0, 7999.0).unwrap(),
            [1000.0, 2000.0, 4000.0]
        );
        assert_eq!(geometric_rates(5.0, 10.0, 5.0).unwrap(), [5.0]);
        assert!(geometric_rates(1000.0, 1.0, 8000.0).is_err());
        assert!(geometric_rates(1000.0, 2.0, 500.0).is_err());
        assert!(geometric_rates(1.0, 1.01, 1e9).is_err());
    }

    /// Latency within the bound is not enough: losses and order faults fail a step too.
    #[test]
    fn bound_needs_latency_and_completeness() {
        let good = StepVerdictInput {
            latency_ns_p99: 50_000_000,
            missing: 0,
            order_faults: 0,
            deliveries: 10,
        };
        assert!(meets_bound(good, 50_000_000));
        assert!(!meets_bound(good, 49_999_999));
        assert!(!meets_bound(
            StepVerdictInput { missing: 1, ..good },
            50_000_000
        ));
        let faulty = StepVerdictInput {
            order_faults: 1,
            ..good
        };
        assert!(!meets_bound(faulty, 50_000_000));
        let empty = StepVerdictInput {
            deliveries: 0,
            ..good
        };
        assert!(!meets_bound(empty, 50_000_000));
    }

    /// The highest step met is the last of the first run of successes.
    #[test]
    fn highest_step_met() {
        assert_eq!(highest_met(&[]), None);
        assert_eq!(highest_met(&[false]), None);
        assert_eq!(highest_met(&[true]), Some(0));
        assert_eq!(highest_met(&[true, true, false]), Some(1));
        assert_eq!(highest_met(&[true, false, true]), Some(0));
    }
}
