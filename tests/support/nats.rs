//! A real `nats-server` (Debian's, which tests/run-all installs) for the cluster tests: started
//! on a free loopback port with its own store directory, with or without JetStream, killed by
//! its pid (and its directory removed) on drop. Every wait is bounded.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nats-server may take to accept connections after it was started.
const READY_WAIT: Duration = Duration::from_secs(20);
/// How often the readiness wait tries to connect.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Where Debian installs it, when it is not on PATH.
const DEBIAN_PATH: &str = "/usr/sbin/nats-server";

/// A running nats-server.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
    jetstream: bool,
}

impl NatsServer {
    /// nats-server with JetStream (`-js -sd <store>`).
    pub fn start() -> NatsServer {
        NatsServer::start_with(true)
    }

    /// nats-server without JetStream: the bridge must refuse to start on it.
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::start_with(false)
    }

    fn start_with(jetstream: bool) -> NatsServer {
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("ringcast-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&store).unwrap();
        let mut server = NatsServer {
            child: None,
            port,
            store,
            jetstream,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix, to this child's pid alone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after `kill`) on the same port and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }

    fn spawn(&mut self) {
        let binary = binary();
        let mut command = Command::new(&binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(&self.store);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {binary}: {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept on port {} within {READY_WAIT:?}",
                self.port
            );
            std::thread::sleep(READY_POLL_INTERVAL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// The nats-server binary: on PATH, or where Debian puts it.
fn binary() -> String {
    let on_path = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if on_path {
        return "nats-server".into();
    }
    assert!(
        std::path::Path::new(DEBIAN_PATH).exists(),
        "nats-server is missing: apt-get install nats-server (tests/run-all does)"
    );
    DEBIAN_PATH.into()
}

/// A loopback port free now (bound and let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
