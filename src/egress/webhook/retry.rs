//! What an attempt's outcome means for the request, sans-IO: delivered, retried (after how
//! long), given up, or the endpoint disabled.
//!
//! - 2xx is success and nothing else is: a redirect (3xx) is not followed and counts as a
//!   failure, since following it would send the signed events somewhere not configured.
//! - 410 Gone disables the endpoint (Standard Webhooks): its queue is dropped and it takes no
//!   more events until restarted.
//! - 429, 502, 503 and 504 mean "not now": `Retry-After` (seconds or an HTTP date, at most an
//!   hour) says when, if present; otherwise, like every other failure and timeouts, the next
//!   attempt waits a random time from 0 to `retry_base_ms` × 2^(retry − 1), capped at
//!   `retry_max_ms` (capped exponential backoff with full jitter: retries of many senders spread
//!   out rather than arriving together).
//! - After `attempts_max` attempts the request's events are dropped (counted).

use std::time::{Duration, SystemTime};

use super::config::WAIT_MS_LIMIT;

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived with this status; `retry_after_ms` is its `Retry-After`, understood.
    Status {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    /// No response within `timeout_ms`.
    Timeout,
    /// The connection failed (refused, reset, TLS, a response that was not HTTP).
    Connection,
    /// The destination's name resolved only to addresses webhooks may not reach.
    DestinationRefused,
}

/// Why an attempt failed, as `/metrics` counts it (`webhook_failures{class}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    Timeout,
    Connection,
    DestinationRefused,
    Redirect,
    ClientError,
    Throttled,
    ServerError,
    Gone,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Timeout,
        FailureClass::Connection,
        FailureClass::DestinationRefused,
        FailureClass::Redirect,
        FailureClass::ClientError,
        FailureClass::Throttled,
        FailureClass::ServerError,
        FailureClass::Gone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::Connection => "connection",
            FailureClass::DestinationRefused => "destination_refused",
            FailureClass::Redirect => "redirect",
            FailureClass::ClientError => "client_error",
            FailureClass::Throttled => "throttled",
            FailureClass::ServerError => "server_error",
            FailureClass::Gone => "gone",
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { class: FailureClass, after_ms: u64 },
    GiveUp { class: FailureClass },
    Disable,
}

/// The retry settings of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl RetryPolicy {
    /// Judges attempt number `attempt` (from 1). `random_up_to(n)` returns a uniform value in
    /// `0..=n` (the jitter), so that tests can fix it.
    pub fn judge(
        &self,
        outcome: Outcome,
        attempt: u32,
        random_up_to: impl FnOnce(u64) -> u64,
    ) -> Verdict {
        let (class, retry_after_ms) = match outcome {
            Outcome::Status { status, .. } if (200..300).contains(&status) => {
                return Verdict::Delivered;
            }
            Outcome::Status { status: 410, .. } => return Verdict::Disable,
            Outcome::Status {
                status,
                retry_after_ms,
            } => match status {
                429 => (FailureClass::Throttled, retry_after_ms),
                502..=504 => (FailureClass::ServerError, retry_after_ms),
                300..=399 => (FailureClass::Redirect, None),
                400..=499 => (FailureClass::ClientError, None),
                _ => (FailureClass::ServerError, None),
            },
            Outcome::Timeout => (FailureClass::Timeout, None),
            Outcome::Connection => (FailureClass::Connection, None),
            Outcome::DestinationRefused => (FailureClass::DestinationRefused, None),
        };
        if attempt >= self.attempts_max {
            return Verdict::GiveUp { class };
        }
        let after_ms = match retry_after_ms {
            Some(after_ms) => after_ms,
            None => random_up_to(self.backoff_ceiling_ms(attempt)),
        };
        Verdict::Retry { class, after_ms }
    }

    /// The most the wait after attempt `attempt` may be: `retry_base_ms` × 2^(attempt − 1),
    /// capped at `retry_max_ms`.
    pub fn backoff_ceiling_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        self.retry_base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retry_max_ms)
    }
}

/// A `Retry-After` value in milliseconds from `now`: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3), at most an hour; `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    let after = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some((after.as_millis() as u64).min(WAIT_MS_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        attempts_max: 5,
        retry_base_ms: 100,
        retry_max_ms: 1000,
    };

    fn status(status: u16) -> Outcome {
        Outcome::Status {
            status,
            retry_after_ms: None,
        }
    }

    /// Proves each status and failure is judged as the delivery rules say.
    #[test]
    fn outcomes_are_judged() {
        let ceiling = |ceiling| ceiling;
        assert_eq!(POLICY.judge(status(204), 1, ceiling), Verdict::Delivered);
        assert_eq!(POLICY.judge(status(410), 1, ceiling), Verdict::Disable);
        let cases = [
            (status(500), FailureClass::ServerError),
            (status(302), FailureClass::Redirect),
            (status(404), FailureClass::ClientError),
            (status(429), FailureClass::Throttled),
            (Outcome::Timeout, FailureClass::Timeout),
            (Outcome::Connection, FailureClass::Connection),
            (
                Outcome::DestinationRefused,
                FailureClass::DestinationRefused,
            ),
        ];
        for (outcome, class) in cases {
            assert_eq!(
                POLICY.judge(outcome, 2, ceiling),
                Verdict::Retry {
                    class,
                    after_ms: 200
                },
                "{outcome:?}"
            );
            assert_eq!(POLICY.judge(outcome, 5, ceiling), Verdict::GiveUp { class });
        }
    }

    /// Proves Retry-After is honoured for 429 and 502–504 only, and the backoff's ceiling
    /// doubles up to its cap while the jitter picks below it.
    #[test]
    fn retry_after_and_backoff() {
        for code in [429, 502, 503, 504, 500] {
            let outcome = Outcome::Status {
                status: code,
                retry_after_ms: Some(7000),
            };
            let after_ms = match POLICY.judge(outcome, 1, |_| 5) {
                Verdict::Retry { after_ms, .. } => after_ms,
                other => panic!("{other:?}"),
            };
            assert_eq!(after_ms, if code == 500 { 5 } else { 7000 }, "{code}");
        }
        let ceilings: Vec<u64> = (1..=6).map(|n| POLICY.backoff_ceiling_ms(n)).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(POLICY.backoff_ceiling_ms(200), 1000);
    }

    /// Proves both forms of Retry-After, a date in the past, the cap, and nonsense.
    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(" 3 ", now), Some(3000));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(10_000)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("999999", now), Some(WAIT_MS_LIMIT));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
