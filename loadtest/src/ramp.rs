//! The closed-loop ramp: how many connection attempts (connect + handshake, and for fanout the
//! subscription) one thread keeps in flight at most.
//!
//! An open-loop ramp (start `--rate` connections per second whatever happens) collapses when
//! the machine is slower than the rate assumes: on two cores shared with a 64-shard server, 56
//! worker processes starting 20,000 connections/s starved, upgrade requests went out seconds
//! late, the server timed their handshakes out, and the timeouts fed more retries and more
//! load. Here the rate is only a ceiling: an attempt starts when it is due *and* fewer than
//! `window` attempts are in flight. The window follows the latency of finished attempts the
//! way TCP's congestion window follows loss: it doubles while attempts finish fast (slow
//! start), then grows by one per window of fast attempts, shrinks by a quarter after a slow one
//! and halves after a failure, at most once per window of completions. By Little's law the
//! rate achieved is then about window ÷ latency, which the run reports as the rate this
//! machine sustained.
//!
//! Sans-IO: the caller reports completions with their latency and asks whether it may start.

use std::time::Duration;

/// Attempts in flight per thread at the start.
pub const WINDOW_INITIAL: u64 = 32;

/// The window never falls below this: a few attempts keep probing a slow server.
const WINDOW_MIN: f64 = 4.0;

/// How the window shrinks after a slow attempt and after a failed one.
const SLOW_FACTOR: f64 = 0.75;
const FAILURE_FACTOR: f64 = 0.5;

/// The ramp's settings for one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RampSettings {
    /// The window's ceiling: attempts in flight at most.
    pub in_flight_max: u64,
    /// An attempt that took longer than this counts as a sign of overload.
    pub latency_target: Duration,
}

/// The controller of one thread's ramp.
#[derive(Clone, Debug)]
pub struct RampController {
    window: f64,
    window_max: f64,
    /// Slow start ends at the first sign of overload.
    slow_start: bool,
    latency_target: Duration,
    /// Completions still to come before the window may shrink again.
    shrink_hold: u64,
    /// How often the window shrank.
    pub cuts: u64,
}

impl RampController {
    pub fn new(settings: RampSettings) -> Self {
        let window_max = (settings.in_flight_max as f64).max(1.0);
        Self {
            window: (WINDOW_INITIAL as f64).min(window_max),
            window_max,
            slow_start: true,
            latency_target: settings.latency_target,
            shrink_hold: 0,
            cuts: 0,
        }
    }

    /// Attempts allowed in flight now.
    pub fn window(&self) -> u64 {
        self.window as u64
    }

    /// Whether one more attempt may start while `in_flight` are under way.
    pub fn may_start(&self, in_flight: u64) -> bool {
        in_flight < self.window()
    }

    /// An attempt finished (connected, upgraded and, for fanout, subscribed) after `latency`.
    pub fn on_success(&mut self, latency: Duration) {
        if latency > self.latency_target {
            self.shrink(SLOW_FACTOR);
            return;
        }
        self.shrink_hold = self.shrink_hold.saturating_sub(1);
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.window
        };
        self.window = (self.window + step).min(self.window_max);
    }

    /// An attempt failed: refused, reset, or timed out.
    pub fn on_failure(&mut self) {
        self.shrink(FAILURE_FACTOR);
    }

    fn shrink(&mut self, factor: f64) {
        self.slow_start = false;
        if self.shrink_hold > 0 {
            self.shrink_hold -= 1;
            return;
        }
        let floor = WINDOW_MIN.min(self.window_max);
        self.window = (self.window * factor).max(floor);
        self.shrink_hold = self.window as u64;
        self.cuts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(in_flight_max: u64) -> RampController {
        RampController::new(RampSettings {
            in_flight_max,
            latency_target: Duration::from_millis(100),
        })
    }

    const FAST: Duration = Duration::from_millis(1);
    const SLOW: Duration = Duration::from_millis(500);

    /// The window gates starts: at the window, no more; below it, yes.
    #[test]
    fn window_gates_starts() {
        let ramp = controller(1000);
        assert_eq!(ramp.window(), WINDOW_INITIAL);
        assert!(ramp.may_start(WINDOW_INITIAL - 1));
        assert!(!ramp.may_start(WINDOW_INITIAL));
    }

    /// Fast attempts grow the window (doubling per window in slow start) up to the ceiling,
    /// never beyond.
    #[test]
    fn fast_attempts_grow_to_the_ceiling() {
        let mut ramp = controller(200);
        for _ in 0..WINDOW_INITIAL {
            ramp.on_success(FAST);
        }
        assert_eq!(ramp.window(), 2 * WINDOW_INITIAL);
        for _ in 0..10_000 {
            ramp.on_success(FAST);
        }
        assert_eq!(ramp.window(), 200);
        assert_eq!(ramp.cuts, 0);
    }

    /// A failure halves the window once; the failures of the same window that follow do not
    /// cut again (they were already in flight when the first was seen).
    #[test]
    fn failures_halve_once_per_window() {
        let mut ramp = controller(1000);
        ramp.on_failure();
        let halved = WINDOW_INITIAL / 2;
        assert_eq!(ramp.window(), halved);
        for _ in 0..halved {
            ramp.on_failure();
        }
        assert_eq!(ramp.window(), halved);
        ramp.on_failure();
        assert_eq!(ramp.window(), halved / 2);
        assert_eq!(ramp.cuts, 2);
    }

    /// Persistent overload drives the window down to its floor and no further; after that,
    /// fast attempts grow it again, linearly (slow start is over).
    #[test]
    fn overload_shrinks_to_the_floor_then_recovers_linearly() {
        let mut ramp = controller(1000);
        for _ in 0..10_000 {
            ramp.on_success(SLOW);
        }
        assert_eq!(ramp.window(), WINDOW_MIN as u64);
        for _ in 0..100 {
            ramp.on_success(FAST);
        }
        let window = ramp.window();
        assert!(window > WINDOW_MIN as u64 && window < 30, "{window}");
    }

    /// With a ceiling below the usual floor, the ceiling wins.
    #[test]
    fn tiny_ceilings_hold() {
        let mut ramp = controller(2);
        assert_eq!(ramp.window(), 2);
        ramp.on_failure();
        assert_eq!(ramp.window(), 2);
        assert!(!ramp.may_start(2));
    }
}
