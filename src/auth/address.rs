//! Per-address limits, applied when a connection is accepted: how many connections one source
//! address holds (`connections_per_ip_max`) and how fast it may open new ones
//! (`handshakes_per_ip_per_second`, a token bucket holding one second's worth).
//!
//! One table for the whole process, since `SO_REUSEPORT` spreads one address's connections over
//! every shard: split into [`STRIPES`] stripes, each behind its own mutex and held for a hash
//! lookup, so shards accepting at once rarely meet. An IPv6 client is counted by its /64, the
//! block one host usually holds; an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! The table is bounded (`addresses_tracked_max`). An entry lives while its address holds
//! connections, and until its bucket would be full again after the last one closed, so that
//! opening and closing in a loop cannot reset the bucket. Past the bound, new addresses are let
//! through untracked and counted: refusing them would let one holder of many addresses lock
//! everyone else out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// Stripes of the table: more than any machine's shards contend for at once.
pub const STRIPES: usize = 64;

/// Idle entries looked at for removal per admission: enough to keep up with the admissions
/// that make them, a bounded cost for each.
const SWEEP_PER_ADMISSION: usize = 2;

/// Milli-tokens per handshake: the bucket counts in thousandths so that it refills every
/// millisecond at any rate.
const TOKEN_MILLIS: u64 = 1000;

/// Which address an admitted connection counts against, for [`AddressLimits::release`]; 0 is
/// none (limits off, or the table was full). Eight bytes a connection.
pub type AddressTicket = u64;

/// What [`AddressLimits::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressAdmission {
    /// Counted: release the ticket when the connection closes.
    Admitted(AddressTicket),
    /// Not counted: limits off, or the table is full (counted by the caller).
    Untracked { table_full: bool },
    /// The address holds `connections_per_ip_max` connections.
    TooManyConnections,
    /// The address opened `handshakes_per_ip_per_second` connections within the last second.
    TooManyHandshakes,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    connections: u32,
    tokens_milli: u64,
    refilled_ms: u64,
    /// When `connections` last fell to 0 (the entry waits in the idle queue since).
    idle_since_ms: u64,
}

#[derive(Debug, Default)]
struct Stripe {
    entries: HashMap<u64, Entry>,
    /// Entries whose connections fell to 0, oldest first, with when; stale items (the address
    /// connected again) are skipped when met.
    idle: VecDeque<(u64, u64)>,
}

/// The process's per-address table.
#[derive(Debug)]
pub struct AddressLimits {
    stripes: Box<[Mutex<Stripe>]>,
    connections_max: u32,
    /// Milli-tokens added per millisecond, and the bucket's size.
    refill_per_ms: u64,
    bucket_milli: u64,
    stripe_entries_max: usize,
}

impl AddressLimits {
    /// Limits of `connections_max` connections (0: none) and `handshakes_per_second` new ones
    /// per second (0: none) per address, tracking at most about `tracked_max` addresses.
    pub fn new(connections_max: u32, handshakes_per_second: u32, tracked_max: usize) -> Self {
        AddressLimits {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            connections_max,
            refill_per_ms: u64::from(handshakes_per_second),
            bucket_milli: u64::from(handshakes_per_second) * TOKEN_MILLIS,
            stripe_entries_max: tracked_max.div_ceil(STRIPES).max(1),
        }
    }

    fn is_off(&self) -> bool {
        self.connections_max == 0 && self.bucket_milli == 0
    }

    /// A connection from `address` arrived at `now_ms` (any clock all callers share).
    pub fn admit(&self, address: IpAddr, now_ms: u64) -> AddressAdmission {
        if self.is_off() {
            return AddressAdmission::Untracked { table_full: false };
        }
        let key = address_key(address);
        let mut stripe = self.lock(key);
        self.sweep(&mut stripe, now_ms);
        let entries_max = self.stripe_entries_max;
        let tracked = stripe.entries.len();
        let entry = match stripe.entries.get_mut(&key) {
            Some(entry) => entry,
            None if tracked >= entries_max => {
                return AddressAdmission::Untracked { table_full: true };
            }
            None => stripe.entries.entry(key).or_insert(Entry {
                connections: 0,
                tokens_milli: self.bucket_milli,
                refilled_ms: now_ms,
                idle_since_ms: now_ms,
            }),
        };
        let elapsed_ms = now_ms.saturating_sub(entry.refilled_ms);
        entry.tokens_milli =
            (entry.tokens_milli + elapsed_ms * self.refill_per_ms).min(self.bucket_milli);
        entry.refilled_ms = entry.refilled_ms.max(now_ms);
        let admission = if self.connections_max > 0 && entry.connections >= self.connections_max {
            AddressAdmission::TooManyConnections
        } else if self.bucket_milli > 0 && entry.tokens_milli < TOKEN_MILLIS {
            AddressAdmission::TooManyHandshakes
        } else {
            entry.tokens_milli = entry.tokens_milli.saturating_sub(TOKEN_MILLIS);
            entry.connections += 1;
            AddressAdmission::Admitted(key)
        };
        if entry.connections == 0 {
            // A refused newcomer: its entry waits in the idle queue like any other.
            entry.idle_since_ms = now_ms;
            stripe.idle.push_back((key, now_ms));
        }
        admission
    }

    /// The connection admitted with `ticket` closed at `now_ms`.
    pub fn release(&self, ticket: AddressTicket, now_ms: u64) {
        if ticket == 0 {
            return;
        }
        let mut stripe = self.lock(ticket);
        let Some(entry) = stripe.entries.get_mut(&ticket) else {
            debug_assert!(false, "a ticket names an entry until released");
            return;
        };
        entry.connections -= 1;
        if entry.connections == 0 {
            entry.idle_since_ms = now_ms;
            stripe.idle.push_back((ticket, now_ms));
        }
    }

    /// Addresses tracked now (for metrics).
    pub fn tracked(&self) -> usize {
        self.stripes
            .iter()
            .map(|stripe| stripe.lock().unwrap_or_else(|poison| poison.into_inner()))
            .map(|stripe| stripe.entries.len())
            .sum()
    }

    fn lock(&self, key: u64) -> std::sync::MutexGuard<'_, Stripe> {
        let index = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES;
        // A panic while holding a stripe leaves it consistent (no update spans a panic point),
        // so a poisoned lock is taken over rather than spreading the panic to every shard.
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Removes up to SWEEP_PER_ADMISSION entries idle long enough for a full bucket.
    fn sweep(&self, stripe: &mut Stripe, now_ms: u64) {
        // A bucket refills from empty in one second; without a rate limit, at once.
        let refill_ms = if self.bucket_milli > 0 { 1000 } else { 0 };
        for _ in 0..SWEEP_PER_ADMISSION {
            let Some(&(key, since_ms)) = stripe.idle.front() else {
                return;
            };
            if now_ms < since_ms + refill_ms {
                return;
            }
            stripe.idle.pop_front();
            let removable = stripe
                .entries
                .get(&key)
                .is_some_and(|entry| entry.connections == 0 && entry.idle_since_ms == since_ms);
            if removable {
                stripe.entries.remove(&key);
            }
        }
    }
}

/// The table's key of an address: an IPv4 address (also IPv4-mapped) in the top of the key
/// space, which no IPv6 unicast /64 uses (ff00::/8 is multicast); an IPv6 address by its /64.
fn address_key(address: IpAddr) -> u64 {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match address {
        IpAddr::V4(v4) => 0xFFFF_FFFF_0000_0000 | u64::from(u32::from(v4)),
        // Never 0 (the "untracked" ticket): ::/64 is not a source a connection comes from, and
        // is kept apart anyway.
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 | u64::from(u128::from(v6) >> 64 == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 1, last])
    }

    /// Proves the connection limit counts per address and frees with each close.
    #[test]
    fn connections_per_address_are_bounded() {
        let limits = AddressLimits::new(2, 0, 1024);
        let first = limits.admit(v4(1), 0);
        let second = limits.admit(v4(1), 0);
        assert!(matches!(first, AddressAdmission::Admitted(_)));
        assert!(matches!(second, AddressAdmission::Admitted(_)));
        assert_eq!(limits.admit(v4(1), 0), AddressAdmission::TooManyConnections);
        assert!(matches!(
            limits.admit(v4(2), 0),
            AddressAdmission::Admitted(_)
        ));
        let AddressAdmission::Admitted(ticket) = first else {
            unreachable!()
        };
        limits.release(ticket, 1);
        assert!(matches!(
            limits.admit(v4(1), 1),
            AddressAdmission::Admitted(_)
        ));
    }

    /// Proves the handshake bucket holds one second's worth, refills continuously, and is not
    /// reset by closing every connection.
    #[test]
    fn handshakes_per_address_are_a_token_bucket() {
        let limits = AddressLimits::new(0, 10, 1024);
        let mut tickets = Vec::new();
        for _ in 0..10 {
            let AddressAdmission::Admitted(ticket) = limits.admit(v4(1), 0) else {
                panic!("within the burst")
            };
            tickets.push(ticket);
        }
        assert_eq!(limits.admit(v4(1), 0), AddressAdmission::TooManyHandshakes);
        for ticket in tickets {
            limits.release(ticket, 50);
        }
        assert_eq!(
            limits.admit(v4(1), 60),
            AddressAdmission::TooManyHandshakes,
            "closing does not refill the bucket"
        );
        assert!(matches!(
            limits.admit(v4(1), 100),
            AddressAdmission::Admitted(_)
        ));
        assert_eq!(
            limits.admit(v4(1), 100),
            AddressAdmission::TooManyHandshakes
        );
        assert!(matches!(
            limits.admit(v4(2), 100),
            AddressAdmission::Admitted(_)
        ));
    }

    /// Proves the table stays within its bound, lets addresses past it through untracked, and
    /// forgets idle addresses once their bucket would be full again.
    #[test]
    fn the_table_is_bounded_and_forgets_idle_addresses() {
        let limits = AddressLimits::new(1, 1000, 1);
        let mut untracked = 0;
        for last in 0..=255u8 {
            match limits.admit(v4(last), 0) {
                AddressAdmission::Admitted(ticket) => limits.release(ticket, 0),
                AddressAdmission::Untracked { table_full: true } => untracked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(untracked > 0, "past the bound, addresses go untracked");
        assert!(limits.tracked() <= STRIPES, "{}", limits.tracked());
        for last in 0..=255u8 {
            let _ = limits.admit(v4(last), 5_000);
        }
        assert!(limits.tracked() <= STRIPES);
    }

    /// Proves an IPv6 host is counted by its /64 and a mapped IPv4 address as the IPv4 one.
    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_block: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(same_block));
        assert_ne!(address_key(one), address_key(other_block));
        let mapped: IpAddr = "::ffff:127.0.1.7".parse().unwrap();
        assert_eq!(address_key(mapped), address_key(v4(7)));
        assert_ne!(address_key("::1".parse().unwrap()), 0);
    }
}
