//! The thread that drives the demo feed (`--demo`) into the broker: the sans-IO
//! `broker::demo::TickerFeed` says what is due, a `Publisher` hands it to the topics' owners.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::broker::demo::TickerFeed;
use crate::config::BrokerConfig;
use crate::server::Publisher;

/// Longest sleep between two polls of the feed, so that a stop is noticed soon.
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(50);
/// The feed's seed: the same symbols and prices every run, so screenshots and docs agree.
const SEED: u64 = 0x7269_6e67;

/// The running demo feed.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Ticker {
    pub fn start(config: &BrokerConfig, mut publisher: Publisher) -> std::io::Result<Ticker> {
        let mut feed = TickerFeed::new(config.demo_symbols, config.demo_messages_per_second, SEED);
        info!(
            symbols = config.demo_symbols,
            messages_per_second = config.demo_messages_per_second,
            first = feed.symbols().next().unwrap_or(""),
            "demo feed publishing"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ringcast-demo".into())
            .spawn(move || run(&mut feed, &mut publisher, &stopped))?;
        Ok(Ticker { stop, thread })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn run(feed: &mut TickerFeed, publisher: &mut Publisher, stop: &AtomicBool) {
    let mut refused: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        // Wall-clock time: it stamps each quote (`ts`, Unix milliseconds). The feed tolerates a
        // clock stepping back (it earns nothing until the clock passes its last poll).
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        feed.poll_due(now_ms, &mut |topic, data| {
            // A full mailbox means the broker is saturated: the demo skips the update rather
            // than queue it (it is not a client's message; nothing accepted is lost).
            if publisher.publish(topic, data).is_err() {
                refused += 1;
                if refused.is_power_of_two() {
                    warn!(
                        refused,
                        "demo updates skipped: the broker's mailboxes are full"
                    );
                }
            }
        });
        let wait_ms = feed
            .next_due_ms()
            .map_or(0, |due| due.saturating_sub(now_ms));
        std::thread::sleep(Duration::from_millis(wait_ms.max(1)).min(POLL_INTERVAL_MAX));
    }
}
