//! Where the server's shards run: each is pinned to one of the CPUs the process may use, so
//! that a server started under `taskset` (as the pinned load tests start it) stays on its own
//! cores and never lands on the load generator's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The server process, killed when the test ends, passed or not (a server left running would
/// hold the test's output pipe open).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPUs this process may run on, from /proc (as `Cpus_allowed_list`: "0-1", "3", "0,2").
fn allowed_cpus(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line")
        .trim();
    list.split(',')
        .flat_map(|range| match range.split_once('-') {
            Some((first, last)) => {
                (first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap()).collect()
            }
            None => vec![range.parse::<usize>().unwrap()],
        })
        .collect()
}

/// Proves a one-shard server started on the last CPU of this process's set (CPU 1 of a
/// two-CPU machine) runs its shard there: before the fix it pinned shard 0 to CPU 0 whatever
/// the set, which put a "pinned" server on the load generator's core.
#[test]
fn shards_are_pinned_within_the_cpus_the_process_may_use() {
    let ours = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    let last = *ours.last().expect("at least one CPU");
    let mut child = Killed(
        Command::new("taskset")
            .args(["-c", &last.to_string()])
            .arg(env!("CARGO_BIN_EXE_ringcast"))
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("taskset (util-linux) starts the server"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ringcast listening on"), "{line:?}");
    let tasks = format!("/proc/{}/task", child.0.id());
    let mut shards = 0;
    for task in std::fs::read_dir(&tasks).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        if name.starts_with("ringcast-shard") {
            shards += 1;
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            assert_eq!(
                allowed_cpus(&status),
                vec![last],
                "shard {name:?} runs elsewhere"
            );
        }
    }
    drop(child);
    assert_eq!(shards, 1);
}
