//! The floor programs answer small real runs of the load generator: `floor echo` under
//! `echo`, `floor fanout` under `fanout` (every delivery present, once, in order, with the
//! right seq). These prove the floors do the work they stand for; their speed is measured by
//! the compare scripts, not here.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long a floor may take to print its address.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// A running floor program, killed on drop.
struct Floor {
    child: Child,
    url: String,
}

impl Floor {
    fn start(kind: &str) -> Floor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast-loadtest"))
            .args([
                "floor",
                kind,
                "--listen",
                "127.0.0.1:0",
                "--connections-max",
                "1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the floor program");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(STARTUP_WAIT)
            .expect("the floor printed no address");
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("a listening line ends with the address")
            .to_owned();
        Floor {
            child,
            url: format!("ws://{address}/ws"),
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(arguments: &[&str], name: &str) -> Value {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "ringcast-loadtest-floor-{name}-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast-loadtest"))
        .args(arguments)
        .args(["--output", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `floor echo` returns every message byte for byte (the load generator checks each echo).
#[test]
fn echo_floor_echoes() {
    let floor = Floor::start("echo");
    let result = run(
        &[
            "echo",
            "--url",
            &floor.url,
            "--connections",
            "20",
            "--payload-bytes",
            "300",
            "--warmup-seconds",
            "0",
            "--duration-seconds",
            "1",
        ],
        "echo",
    );
    let totals = &result["totals"];
    assert_eq!(totals["established"], 20, "{result:#}");
    assert_eq!(totals["alive"], 20, "{result:#}");
    assert_eq!(totals["failures_total"], 0, "{result:#}");
    assert!(totals["messages"].as_u64().unwrap() > 0, "{result:#}");
}

/// `floor fanout` acknowledges every subscription and delivers every message to every
/// subscriber of its topic, once, in order, with seq = the topic's seq at subscription +
/// the publisher's counter.
#[test]
fn fanout_floor_delivers_everything() {
    let floor = Floor::start("fanout");
    let result = run(
        &[
            "fanout",
            "--url",
            &floor.url,
            "--subscribers",
            "200",
            "--topics",
            "10",
            "--publishers",
            "2",
            "--rates",
            "100,200",
            "--step-seconds",
            "1",
            "--drain-seconds",
            "5",
            "--workers",
            "2",
            "--latency-ms-p99-max",
            "100000",
        ],
        "fanout",
    );
    assert_eq!(result["subscribers_ready"], 200, "{result:#}");
    assert_eq!(result["every_delivery_checked"], true, "{result:#}");
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{result:#}");
    for step in steps {
        let published = step["published"].as_u64().unwrap();
        assert!(published > 0, "{result:#}");
        // 20 subscribers per topic.
        assert_eq!(
            step["deliveries"].as_u64().unwrap(),
            20 * published,
            "{result:#}"
        );
        assert_eq!(step["faults"]["seq_mismatches"], 0, "{result:#}");
        assert_eq!(step["messages_incomplete"], 0, "{result:#}");
    }
    assert_eq!(
        result["fanout_totals"]["scanner_mismatches"], 0,
        "{result:#}"
    );
}

/// The `publish` scenario against `floor fanout` (at a rate the debug-built floor keeps up
/// with): the probe reads the seqs the floor numbered, and the subscribers get every
/// delivery in order.
#[test]
fn publish_scenario_counts_what_the_server_numbered() {
    let floor = Floor::start("fanout");
    let result = run(
        &[
            "publish",
            "--url",
            &floor.url,
            "--connections",
            "3",
            "--subscribers",
            "30",
            "--topics",
            "30",
            "--rate",
            "3000",
            "--warmup-seconds",
            "0",
            "--duration-seconds",
            "1",
        ],
        "publish",
    );
    assert!(result["accepted"].as_u64().unwrap() > 0, "{result:#}");
    assert_eq!(result["subscribers_ready"], 30, "{result:#}");
    assert_eq!(result["connections_failed"], 0, "{result:#}");
    for fault in ["gaps", "duplicates", "out_of_order"] {
        assert_eq!(result["faults"][fault], 0, "{result:#}");
    }
}
