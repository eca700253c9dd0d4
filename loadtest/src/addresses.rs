//! How a run is split: connections and rate over workers, source addresses over workers and
//! connections.
//!
//! Each client socket is bound to a source address in 127.0.0.0/8 before it connects. The
//! kernel picks the port at connect time (IP_BIND_ADDRESS_NO_PORT), so each source address
//! offers the whole ephemeral range towards the server's one address and port; with a single
//! source address the kernel's port search slows to a crawl as the range fills.

use std::net::Ipv4Addr;

/// Connections per source address that keep the kernel's port search fast: about 7 % of the
/// 28,232 ports of the default ephemeral range.
pub const CONNECTIONS_PER_ADDRESS: u64 = 2000;

/// At least this many source addresses, however few connections.
pub const ADDRESSES_MIN: usize = 8;

/// 127.0.x.y with x and y in 1..=254: never the network or broadcast-looking .0 and .255, and
/// never 127.0.0.1, which servers under test usually listen on.
pub const ADDRESSES_MAX: usize = 254 * 254;

/// The default number of source addresses for a run: one per [`CONNECTIONS_PER_ADDRESS`]
/// connections, at least [`ADDRESSES_MIN`], rounded up to a multiple of `workers` so every
/// worker gets the same number.
pub fn default_address_count(connections: u64, workers: usize) -> usize {
    assert!(workers > 0);
    let wanted = connections.div_ceil(CONNECTIONS_PER_ADDRESS) as usize;
    let count = wanted.max(ADDRESSES_MIN).next_multiple_of(workers);
    count.min(ADDRESSES_MAX / workers * workers)
}

/// The `index`th source address: 127.0.1.1, 127.0.1.2, ... 127.0.1.254, 127.0.2.1, ...
pub fn source_address(index: usize) -> Ipv4Addr {
    assert!(
        index < ADDRESSES_MAX,
        "source address {index} beyond 127.0.254.254"
    );
    let third = 1 + index / 254;
    let fourth = 1 + index % 254;
    Ipv4Addr::new(127, 0, third as u8, fourth as u8)
}

/// The source addresses of worker `worker_index` out of `workers`, from `address_count` in all:
/// every `workers`th address, so workers never share one and each gets a fair share.
pub fn worker_addresses(
    worker_index: usize,
    workers: usize,
    address_count: usize,
) -> Vec<Ipv4Addr> {
    assert!(worker_index < workers);
    assert!(
        address_count >= workers,
        "every worker needs at least one source address"
    );
    (worker_index..address_count)
        .step_by(workers)
        .map(source_address)
        .collect()
}

/// Worker `worker_index`'s share of `total`: the remainder goes one each to the first workers.
pub fn worker_share(total: u64, worker_index: usize, workers: usize) -> u64 {
    assert!(worker_index < workers);
    let workers = workers as u64;
    let index = worker_index as u64;
    total / workers + u64::from(index < total % workers)
}

/// The connections of one thread: thread `thread_index` of `threads` takes every `threads`th
/// of its worker's connection indices, so threads ramp in step and share addresses evenly.
pub fn thread_connections(connections: u64, thread_index: usize, threads: usize) -> Vec<u64> {
    assert!(thread_index < threads);
    (thread_index as u64..connections)
        .step_by(threads)
        .collect()
}

/// The source address of a worker's connection `connection_index`: round robin.
pub fn address_for(addresses: &[Ipv4Addr], connection_index: u64) -> Ipv4Addr {
    assert!(!addresses.is_empty());
    addresses[(connection_index % addresses.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    /// Addresses are distinct, inside 127.0.0.0/8, and skip .0, .255 and 127.0.0.x.
    #[test]
    fn addresses_are_distinct_loopback() {
        let addresses: Vec<Ipv4Addr> = (0..ADDRESSES_MAX).map(source_address).collect();
        assert_eq!(addresses[0], Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(addresses[253], Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(addresses[254], Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(
            addresses[ADDRESSES_MAX - 1],
            Ipv4Addr::new(127, 0, 254, 254)
        );
        let unique: HashSet<_> = addresses.iter().collect();
        assert_eq!(unique.len(), ADDRESSES_MAX);
        for address in addresses {
            let [first, second, third, fourth] = address.octets();
            assert!(address.is_loopback());
            assert_eq!((first, second), (127, 0));
            assert!((1..=254).contains(&third) && (1..=254).contains(&fourth));
        }
    }

    /// Workers get disjoint address sets that together cover every address.
    #[test]
    fn workers_split_addresses() {
        for (workers, count) in [(1, 8), (3, 9), (6, 54), (7, 100)] {
            let mut seen = HashSet::new();
            for worker in 0..workers {
                let mine = worker_addresses(worker, workers, count);
                assert!(mine.len() >= count / workers);
                for address in mine {
                    assert!(seen.insert(address), "{address} given twice");
                }
            }
            assert_eq!(seen.len(), count);
        }
    }

    /// Connections spread evenly over a worker's addresses.
    #[test]
    fn connections_spread_evenly() {
        let addresses = worker_addresses(1, 2, 16);
        let mut per_address: HashMap<Ipv4Addr, u64> = HashMap::new();
        for connection in 0..8003 {
            *per_address
                .entry(address_for(&addresses, connection))
                .or_default() += 1;
        }
        assert_eq!(per_address.len(), 8);
        let counts: Vec<u64> = per_address.values().copied().collect();
        assert!(
            counts.iter().all(|count| (1000..=1001).contains(count)),
            "{counts:?}"
        );
    }

    /// The default address count scales with connections and divides by the workers.
    #[test]
    fn default_address_counts() {
        assert_eq!(default_address_count(50, 1), 8);
        assert_eq!(default_address_count(50, 3), 9);
        assert_eq!(default_address_count(10_000, 1), 8);
        assert_eq!(default_address_count(100_000, 6), 54);
        assert_eq!(default_address_count(1_000_000, 56), 504);
        assert_eq!(default_address_count(u32::MAX as u64 * 10, 7) % 7, 0);
        assert!(default_address_count(u32::MAX as u64 * 10, 7) <= ADDRESSES_MAX);
    }

    /// Shares of connections and threads add up to the whole, differing by at most one.
    #[test]
    fn shares_add_up() {
        for (total, workers) in [(0, 1), (1, 3), (50, 2), (100_000, 6), (17, 17), (5, 8)] {
            let shares: Vec<u64> = (0..workers)
                .map(|w| worker_share(total, w, workers))
                .collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            let spread = shares.iter().max().unwrap() - shares.iter().min().unwrap();
            assert!(spread <= 1, "{shares:?}");
        }
        let mut all: Vec<u64> = (0..3).flat_map(|t| thread_connections(10, t, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<u64>>());
    }
}
