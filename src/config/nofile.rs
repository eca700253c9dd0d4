//! The process's open-files limit, which bounds each shard's registered-file table.

use std::io;

use super::RESERVED_FILE_SLOTS;
use super::error::ConfigError;

/// The process's RLIMIT_NOFILE. The kernel refuses an io_uring registered-file table larger
/// than the soft limit, checked for each ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimits {
    /// The limit in force, which any process may raise up to `hard`.
    pub soft: u64,
    /// The ceiling for `soft`; only a privileged process may raise it.
    pub hard: u64,
}

impl NofileLimits {
    /// A limit of `RLIM_INFINITY`, whatever the platform's value for it.
    pub const UNLIMITED: u64 = u64::MAX;

    /// Reads the limits in force now.
    pub fn current() -> io::Result<Self> {
        let limit = nofile_rlimit()?;
        Ok(Self {
            soft: limit_value(limit.rlim_cur),
            hard: limit_value(limit.rlim_max),
        })
    }
}

fn limit_value(raw: libc::rlim_t) -> u64 {
    if raw == libc::RLIM_INFINITY {
        NofileLimits::UNLIMITED
    } else {
        // `rlim_t` is `u64` on the 64-bit Linux targets ringcast runs on; a target where it
        // differs fails to compile here instead of converting silently.
        raw
    }
}

fn nofile_rlimit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that outlives the call, which only writes it.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, which needs no privilege, so that the
/// default `connections_per_shard_max` fits where the soft limit is the usual 1,024. Call once
/// at start-up, before `ServerConfig::validate`. Returns the limits now in force; an error
/// leaves them as they were, and `validate` then reports what does not fit.
pub fn raise_nofile_soft_limit_to_hard() -> io::Result<NofileLimits> {
    let mut limit = nofile_rlimit()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `rlimit` that outlives the call, which only reads it.
        let result = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    NofileLimits::current()
}

/// Checks that one shard's registered-file table (`connections_per_shard_max` +
/// `RESERVED_FILE_SLOTS` slots) fits under the soft limit in `limits`. Pure, so that the advice
/// in the error can be tested with any limits.
pub fn check_file_table_fits(
    shards: usize,
    connections_per_shard_max: usize,
    limits: NofileLimits,
) -> Result<(), ConfigError> {
    let slots = connections_per_shard_max.saturating_add(RESERVED_FILE_SLOTS);
    if slots as u64 <= limits.soft {
        return Ok(());
    }
    Err(ConfigError::FileTableTooLarge {
        shards,
        connections_per_shard_max,
        limits,
    })
}
