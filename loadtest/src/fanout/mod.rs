//! The `fanout` scenario's logic that needs no sockets: the three wire protocols (`wire`,
//! `nats`), the payload every publisher sends (`payload`), the per-topic order check
//! (`sequence`), the publish-rate step plan (`steps`) and the exact aggregation of per-message
//! reach times across workers (`reach`).
//!
//! Subscribers and publishers are connections in worker processes (`crate::worker::fanout`);
//! the coordinator drives the steps (`crate::fanout_coordinator`).

pub mod http_stream;
pub mod nats;
pub mod payload;
pub mod reach;
pub mod report;
pub mod scan;
pub mod sequence;
pub mod steps;
pub mod wire;

/// The name of topic `index`: `T0000`, `T0001`, ... (wider past 9999).
pub fn topic_name(index: u32) -> String {
    format!("T{index:04}")
}

/// The index of a topic named by [`topic_name`]; `None` for any other name.
pub fn topic_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('T')?;
    if digits.len() < 4 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// CLOCK_MONOTONIC in nanoseconds. On Linux it is one clock for the whole machine, so a
/// timestamp taken in a publisher process compares with one taken in a subscriber process.
pub fn monotonic_ns() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass; CLOCK_MONOTONIC always exists.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    assert_eq!(result, 0, "CLOCK_MONOTONIC is always available on Linux");
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topic names round-trip through their index, and foreign names are refused.
    #[test]
    fn topic_names_round_trip() {
        for index in [0, 7, 9999, 10_000, 123_456] {
            assert_eq!(topic_index(&topic_name(index)), Some(index));
        }
        assert_eq!(topic_name(3), "T0003");
        assert_eq!(topic_index("AAPL"), None);
        assert_eq!(topic_index("T12"), None);
        assert_eq!(topic_index("T00x1"), None);
        assert_eq!(topic_index("t0001"), None);
    }

    /// The clock moves forward and agrees with another process's view (the same clock).
    #[test]
    fn monotonic_clock_advances() {
        let first = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_ns() >= first + 2_000_000);
    }
}
