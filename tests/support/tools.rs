//! The outside tools the interop and conformance tests run against the real server (Python
//! clients, Node clients, kosoku): where the test command installs them, and running one under a
//! deadline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a running tool is checked for having exited.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How much of a log or an output a failure message quotes, from its end.
const TAIL_BYTES_MAX: usize = 4096;

/// The command that installs every outside tool these tests run (the README's test command).
pub const INSTALL_COMMAND: &str = "tests/run-all";

/// A path under the package's root, where the test tools are installed.
pub fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The tool named by `variable` if it is set, else `default_relative` under the package root.
pub fn tool_path(variable: &str, default_relative: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_path(default_relative))
}

/// Fails the test unless `path` exists: a conformance check that silently skips proves nothing.
pub fn require_installed(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run `{INSTALL_COMMAND}` from the repository root, which \
         installs it",
        path.display()
    );
}

/// An empty directory for one test's reports and logs, kept after the run for inspection.
pub fn fresh_directory(name: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    match std::fs::remove_dir_all(&directory) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("removing {}: {error}", directory.display()),
    }
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// What a tool run under a deadline did.
pub struct ToolRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolRun {
    /// Both outputs, cut to their ends, for failure messages.
    pub fn outputs(&self) -> String {
        format!(
            "--- stdout (end) ---\n{}\n--- stderr (end) ---\n{}",
            tail(self.stdout.as_bytes()),
            tail(self.stderr.as_bytes())
        )
    }
}

/// Runs `command` with its outputs in `NAME.stdout` and `NAME.stderr` in `directory` (files, not
/// pipes, so that a chatty tool cannot block), killing it and failing the test if it runs longer
/// than `deadline`. `missing` says what to install when the program cannot be started.
pub fn run_with_deadline(
    command: &mut Command,
    name: &str,
    directory: &Path,
    deadline: Duration,
    missing: &str,
) -> ToolRun {
    let stdout_path = directory.join(format!("{name}.stdout"));
    let stderr_path = directory.join(format!("{name}.stderr"));
    let spawned = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => panic!("could not start {name} ({command:?}): {error}; {missing}"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = std::fs::read(&stdout_path).unwrap_or_default();
            panic!(
                "{name} ran longer than {deadline:?} and was killed; its output ends:\n{}",
                tail(&stdout)
            );
        }
        thread::sleep(POLL_INTERVAL);
    };
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    ToolRun {
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES_MAX);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
