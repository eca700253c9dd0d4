//! A real `nats-server` (Debian's, which tests/run-all installs) for the cluster tests: started
//! on a free loopback port with its own store directory, with or without JetStream, killed by
//! its pid (and its directory removed) on drop; or three of them joined as one NATS cluster
//! with clustered JetStream (routes between them, a meta leader elected before the test goes
//! on). Every wait is bounded.

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
    /// Its place in a NATS cluster, when it is one of several.
    route: Option<Route>,
}

/// How one server of a NATS cluster finds the others.
#[derive(Clone, Debug)]
struct Route {
    /// `-n`: JetStream clustering needs every server named.
    server_name: String,
    cluster_name: String,
    /// The port this server takes routes on.
    cluster_port: u16,
    /// `nats://127.0.0.1:<port>` of every other server's route port.
    routes: Vec<String>,
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
            route: None,
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
        if let Some(route) = &self.route {
            command
                .args(["-n", &route.server_name])
                .args(["--cluster_name", &route.cluster_name])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", route.cluster_port))
                .arg("--routes")
                .arg(route.routes.join(","));
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

/// Servers in a test's NATS cluster: the fewest with which an R3 stream survives one loss.
pub const CLUSTER_SERVERS_COUNT: usize = 3;
/// How long the servers may take to elect JetStream's meta leader once they all run.
const META_LEADER_WAIT: Duration = Duration::from_secs(30);
/// How often that wait asks.
const META_LEADER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Three nats-servers routed to each other, with clustered JetStream.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts [`CLUSTER_SERVERS_COUNT`] servers on free ports, each with its own store, and
    /// waits (bounded) until JetStream answers through every one of them (a meta leader).
    pub fn start() -> NatsCluster {
        let client_ports: Vec<u16> = (0..CLUSTER_SERVERS_COUNT).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..CLUSTER_SERVERS_COUNT).map(|_| free_port()).collect();
        let cluster_name = format!("ringcast-test-{}-{}", std::process::id(), client_ports[0]);
        let servers = (0..CLUSTER_SERVERS_COUNT)
            .map(|index| {
                let port = client_ports[index];
                let store = std::env::temp_dir()
                    .join(format!("ringcast-nats-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&store).unwrap();
                let routes = (0..CLUSTER_SERVERS_COUNT)
                    .filter(|&other| other != index)
                    .map(|other| format!("nats://127.0.0.1:{}", cluster_ports[other]))
                    .collect();
                let mut server = NatsServer {
                    child: None,
                    port,
                    store,
                    jetstream: true,
                    route: Some(Route {
                        server_name: format!("n{index}"),
                        cluster_name: cluster_name.clone(),
                        cluster_port: cluster_ports[index],
                        routes,
                    }),
                };
                server.spawn();
                server
            })
            .collect();
        let cluster = NatsCluster { servers };
        for server in &cluster.servers {
            wait_for_jetstream(&server.url());
        }
        cluster
    }

    /// Every server's URL, comma-separated (as `nats_urls` takes them).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        urls.join(",")
    }
}

/// Waits (bounded) until `$JS.API.INFO` through `url` answers without an error: the cluster
/// has elected its meta leader and streams can be made.
pub fn wait_for_jetstream(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + META_LEADER_WAIT;
        let client = tokio::time::timeout(META_LEADER_WAIT, async_nats::connect(url))
            .await
            .expect("connecting to nats-server in time")
            .expect("connecting to nats-server");
        loop {
            let answer = tokio::time::timeout(
                META_LEADER_POLL_INTERVAL * 10,
                client.request("$JS.API.INFO", "".into()),
            )
            .await;
            if let Ok(Ok(answer)) = answer {
                let info: serde_json::Value =
                    serde_json::from_slice(&answer.payload).unwrap_or_default();
                if info.get("error").is_none() && info.get("type").is_some() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "JetStream at {url} elected no meta leader within {META_LEADER_WAIT:?}"
            );
            tokio::time::sleep(META_LEADER_POLL_INTERVAL).await;
        }
    });
}
