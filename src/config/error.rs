//! Why a configuration cannot be used; every message names the setting and how to fix it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::nofile::NofileLimits;
use super::{RESERVED_FILE_SLOTS, SHARDS_MAX};

/// Why the configuration cannot be used; each message names the setting and how to fix it.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    FileRead { path: PathBuf, source: io::Error },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong type.
    FileParse {
        path: Option<PathBuf>,
        message: String,
    },
    /// A `RINGCAST_*` environment variable's value does not parse or is out of range.
    Environment {
        variable: String,
        value: String,
        reason: String,
    },
    /// A command-line flag's value cannot be the setting's.
    Flag { flag: String, reason: String },
    /// The layers' values, each valid on its own, do not make a configuration together.
    Layers { message: String },
    /// A setting is out of range or contradicts another.
    Invalid {
        setting: &'static str,
        reason: String,
    },
    /// A shard's registered-file table would be larger than the soft RLIMIT_NOFILE allows.
    FileTableTooLarge {
        shards: usize,
        connections_per_shard_max: usize,
        limits: NofileLimits,
    },
    /// `getrlimit(RLIMIT_NOFILE)` failed.
    NofileLimitUnreadable(io::Error),
}

impl ConfigError {
    /// Names the file a parse error came from.
    pub fn in_file(self, file_path: Option<&Path>) -> Self {
        match self {
            Self::FileParse {
                path: None,
                message,
            } => Self::FileParse {
                path: file_path.map(Path::to_path_buf),
                message,
            },
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileRead { path, source } => write!(
                f,
                "cannot read config file {}: {source}; check the --config path",
                path.display()
            ),
            Self::FileParse { path, message } => {
                match path {
                    Some(path) => write!(f, "config file {} is invalid: ", path.display())?,
                    None => write!(f, "config file is invalid: ")?,
                }
                write!(
                    f,
                    "{}\n(the example ringcast.toml lists every setting)",
                    message.trim_end()
                )
            }
            Self::Environment {
                variable,
                value,
                reason,
            } => write!(
                f,
                "environment variable {variable}={value:?} is invalid: {reason}; fix or unset it"
            ),
            Self::Flag { flag, reason } => write!(f, "flag {flag} is invalid: {reason}"),
            Self::Layers { message } => write!(f, "the settings do not combine: {message}"),
            Self::Invalid { setting, reason } => write!(f, "invalid {setting}: {reason}"),
            Self::FileTableTooLarge {
                shards,
                connections_per_shard_max,
                limits,
            } => write_file_table_advice(f, *shards, *connections_per_shard_max, *limits),
            Self::NofileLimitUnreadable(source) => {
                write!(f, "cannot read RLIMIT_NOFILE: {source}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::FileRead { source, .. } | Self::NofileLimitUnreadable(source) => Some(source),
            _ => None,
        }
    }
}

/// Explains the file-table misfit and the three ways out: a higher limit, more shards with
/// fewer connections each (same total), or fewer connections per shard.
fn write_file_table_advice(
    f: &mut fmt::Formatter<'_>,
    shards: usize,
    connections_per_shard_max: usize,
    limits: NofileLimits,
) -> fmt::Result {
    let slots = connections_per_shard_max.saturating_add(RESERVED_FILE_SLOTS);
    write!(
        f,
        "connections_per_shard_max = {connections_per_shard_max} needs a registered-file table \
         of {slots} slots per shard ({connections_per_shard_max} + {RESERVED_FILE_SLOTS} \
         reserved), but the kernel refuses a table larger than the soft RLIMIT_NOFILE, which is \
         {} (hard limit {}). Either ",
        LimitDisplay(limits.soft),
        LimitDisplay(limits.hard)
    )?;
    if slots as u64 <= limits.hard {
        write!(
            f,
            "raise the soft limit with `ulimit -n {slots}` (allowed up to the hard limit {})",
            LimitDisplay(limits.hard)
        )?;
    } else {
        write!(
            f,
            "raise the hard limit to at least {slots} as root (LimitNOFILE= in a systemd unit, \
             or /etc/security/limits.conf), then the soft limit with `ulimit -n {slots}`"
        )?;
    }
    let Some(per_shard_fit) = usize::try_from(limits.soft)
        .ok()
        .and_then(|soft| soft.checked_sub(RESERVED_FILE_SLOTS))
        .filter(|&fit| fit > 0)
    else {
        return write!(f, ".");
    };
    let total = shards.saturating_mul(connections_per_shard_max);
    let suggested_shards = total.div_ceil(per_shard_fit);
    if suggested_shards <= SHARDS_MAX {
        // Spread the total evenly rather than filling each shard to the brim.
        let suggested_per_shard = total.div_ceil(suggested_shards);
        write!(
            f,
            "; or use more shards with fewer connections each: e.g. --shards {suggested_shards} \
             --connections-per-shard-max {suggested_per_shard} (keeps {total} connections in \
             total)"
        )?;
    }
    write!(
        f,
        "; or lower --connections-per-shard-max to {per_shard_fit} or less."
    )
}

/// Shows a resource limit, with `NofileLimits::UNLIMITED` as "unlimited".
struct LimitDisplay(u64);

impl fmt::Display for LimitDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == NofileLimits::UNLIMITED {
            write!(f, "unlimited")
        } else {
            write!(f, "{}", self.0)
        }
    }
}
