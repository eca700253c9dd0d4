//! Memory figures from /proc: a process's resident set, the kernel's slab.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

/// The kernel's slab memory (where sockets, inodes, dentries and io_uring requests live).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlabSample {
    pub slab_kib: u64,
    pub unreclaimable_kib: u64,
}

/// VmRSS of process `pid`, in KiB.
pub fn resident_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    field_kib(&status, "VmRSS:").ok_or_else(|| missing("VmRSS in /proc/PID/status"))
}

/// Slab and SUnreclaim from /proc/meminfo.
pub fn slab() -> io::Result<SlabSample> {
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    parse_meminfo(&meminfo)
}

fn parse_meminfo(meminfo: &str) -> io::Result<SlabSample> {
    Ok(SlabSample {
        slab_kib: field_kib(meminfo, "Slab:").ok_or_else(|| missing("Slab in /proc/meminfo"))?,
        unreclaimable_kib: field_kib(meminfo, "SUnreclaim:")
            .ok_or_else(|| missing("SUnreclaim in /proc/meminfo"))?,
    })
}

/// The value of a `Name:   1234 kB` line.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let mut words = line[name.len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

fn missing(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("no {what}"))
}

/// CPU time this process has used so far (user + system, all threads), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time process `pid` has used so far (user + system, all threads), in nanoseconds, from
/// /proc/PID/stat (clock-tick resolution).
pub fn process_cpu_ns_of(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no field {index}")))
    };
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((ticks(11)? + ticks(12)?) * 1_000_000_000 / ticks_per_second)
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass; the CPU-time clocks always exist.
    let result = unsafe { libc::clock_gettime(clock, &mut time) };
    assert_eq!(
        result, 0,
        "the process CPU-time clock is always available on Linux"
    );
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// Bytes per connection of a growth from `before_kib` to `after_kib` (negative if it shrank).
pub fn bytes_per_connection(before_kib: u64, after_kib: u64, connections: u64) -> Option<f64> {
    if connections == 0 {
        return None;
    }
    let growth_bytes = (after_kib as f64 - before_kib as f64) * 1024.0;
    Some((growth_bytes / connections as f64).round())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields are found by name and read in kB, whatever the spacing.
    #[test]
    fn parses_meminfo_and_status() {
        let meminfo = "MemTotal:       24576000 kB\nSlab:             812345 kB\n\
                       SReclaimable:     400000 kB\nSUnreclaim:       412345 kB\n";
        let sample = parse_meminfo(meminfo).unwrap();
        assert_eq!(sample.slab_kib, 812_345);
        assert_eq!(sample.unreclaimable_kib, 412_345);
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
        assert_eq!(
            field_kib("VmHWM:\t  9000 kB\nVmRSS:\t  4242 kB\n", "VmRSS:"),
            Some(4242)
        );
        assert_eq!(field_kib("VmRSS: 12 MB\n", "VmRSS:"), None);
    }

    /// This process has a resident set and the kernel a slab.
    #[test]
    fn reads_this_machine() {
        assert!(resident_kib(std::process::id()).unwrap() > 0);
        assert!(slab().unwrap().slab_kib > 0);
    }

    /// Growth per connection, in bytes.
    #[test]
    fn growth_per_connection() {
        assert_eq!(bytes_per_connection(1000, 1010, 10), Some(1024.0));
        assert_eq!(bytes_per_connection(1010, 1000, 10), Some(-1024.0));
        assert_eq!(bytes_per_connection(1000, 2000, 0), None);
    }
}
