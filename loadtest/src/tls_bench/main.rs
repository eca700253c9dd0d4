//! ringcast-tls-bench: the load of the TLS figures, against ringcast or a peer, over wss:// (or
//! ws:// for the plain figure of the same scenario): full and resumed TLS handshakes, echo of
//! small messages on a closed loop, and fanout of published messages to many subscribers. The
//! client is rustls (the workspace's provider, aws-lc-rs), verifying the server against the
//! given CA. Given the server's pid it also reports the server's CPU time per operation over the
//! measured window, the figure that stays meaningful when the client is the side that
//! saturates. One JSON object on stdout per run. Driven by loadtest/compare-tls.

mod connection;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};

use connection::{Connection, Security};

#[derive(Parser)]
#[command(about = "TLS load for side-by-side figures: handshakes, wss echo, wss fanout")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Connect, handshake, close_notify, again: handshakes per second (TLS only).
    Handshakes {
        #[command(flatten)]
        common: Common,
        /// Client threads, each one handshake at a time.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Resume sessions (tickets) instead of a full handshake each time.
        #[arg(long)]
        resume: bool,
    },
    /// Each connection sends a text message, waits for its echo and sends the next.
    Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 20)]
        payload_bytes: usize,
        #[arg(long, default_value = "/echo")]
        path: String,
    },
    /// Subscribers of one topic; one publisher at a fixed rate: deliveries per second and the
    /// server's CPU per delivery.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 500)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        publishes_per_second: u64,
        #[arg(long, default_value = "/ws")]
        path: String,
    },
}

#[derive(Args)]
struct Common {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:24443")]
    address: SocketAddr,
    /// The CA (PEM) the server's certificate is verified against; without it, plain TCP.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The name the certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The server's pid: its CPU time over the measured window is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Handshakes {
            common,
            threads,
            resume,
        } => handshakes(&common, threads, resume)?,
        Scenario::Echo {
            common,
            connections,
            payload_bytes,
            path,
        } => echo(&common, connections, payload_bytes, &path)?,
        Scenario::Fanout {
            common,
            subscribers,
            publishes_per_second,
            path,
        } => fanout(&common, subscribers, publishes_per_second, &path)?,
    };
    println!("{report}");
    Ok(())
}

impl Common {
    fn security(&self, resume: bool) -> io::Result<Security> {
        let Some(ca) = &self.ca else {
            return Ok(Security::Plain);
        };
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca).map_err(io::Error::other)? {
            roots
                .add(certificate.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let server_name = ServerName::try_from(self.server_name.clone())
            .map_err(|error| io::Error::other(error.to_string()))?;
        Ok(Security::Tls {
            config: Arc::new(config),
            server_name,
        })
    }

    fn server_cpu_seconds(&self) -> Option<f64> {
        let pid = self.server_pid?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Some(ticks as f64 / per_second as f64)
    }
}

/// The measured window: operations counted and the server's CPU over it.
struct Window {
    started: Instant,
    operations_at_start: u64,
    cpu_at_start: Option<f64>,
}

impl Window {
    fn open(common: &Common, operations: u64) -> Window {
        Window {
            started: Instant::now(),
            operations_at_start: operations,
            cpu_at_start: common.server_cpu_seconds(),
        }
    }

    fn close(self, common: &Common, scenario: &str, operations: u64, extra: &str) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let count = operations - self.operations_at_start;
        let cpu = common
            .server_cpu_seconds()
            .zip(self.cpu_at_start)
            .map(|(end, start)| end - start);
        let cpu_text = cpu.map_or("null".into(), |cpu| format!("{cpu:.3}"));
        let per_operation = cpu.map_or("null".into(), |cpu| {
            format!("{:.3}", cpu * 1e6 / count.max(1) as f64)
        });
        format!(
            "{{\"scenario\":\"{scenario}\",\"tls\":{},\"operations\":{count},\"seconds\":{seconds:.3},\
             \"per_second\":{:.0},\"server_cpu_seconds\":{cpu_text},\
             \"server_cpu_us_per_operation\":{per_operation}{extra}}}",
            common.ca.is_some(),
            count as f64 / seconds
        )
    }
}

fn handshakes(common: &Common, threads: usize, resume: bool) -> io::Result<String> {
    if common.ca.is_none() {
        return Err(io::Error::other("handshakes need --ca"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (full, resumed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<std::thread::JoinHandle<io::Result<()>>> = (0..threads)
        .map(|_| {
            // Each thread is one client reconnecting, with a session store of its own: with
            // one store shared by all threads, a thread often connects while the tickets of
            // the others' last handshakes are still on their way, and most handshakes found
            // no ticket to resume with (236 of 6,297 resumed in the first figures).
            let security = common.security(resume)?;
            let stop = Arc::clone(&stop);
            let (full, resumed) = (Arc::clone(&full), Arc::clone(&resumed));
            let address = common.address;
            Ok(std::thread::spawn(move || -> io::Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    let connection = Connection::connect(address, &security)?;
                    match connection.handshake_kind() {
                        Some(HandshakeKind::Resumed) => resumed.fetch_add(1, Ordering::Relaxed),
                        _ => full.fetch_add(1, Ordering::Relaxed),
                    };
                    connection.close()?;
                }
                Ok(())
            }))
        })
        .collect::<io::Result<_>>()?;
    let total = || full.load(Ordering::Relaxed) + resumed.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(common.warmup_seconds));
    let (full_start, resumed_start) = (
        full.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
    );
    let window = Window::open(common, total());
    std::thread::sleep(Duration::from_secs(common.seconds));
    let operations = total();
    let extra = format!(
        ",\"full\":{},\"resumed\":{}",
        full.load(Ordering::Relaxed) - full_start,
        resumed.load(Ordering::Relaxed) - resumed_start
    );
    let scenario = if resume {
        "handshakes-resumed"
    } else {
        "handshakes-full"
    };
    let report = window.close(common, scenario, operations, &extra);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| io::Error::other("a handshake thread panicked"))??;
    }
    Ok(report)
}

/// Connects `count` WebSocket clients of `path`, then makes them non-blocking.
fn open_websockets(
    common: &Common,
    security: &Security,
    count: usize,
    path: &str,
) -> io::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let mut connection = Connection::connect(common.address, security)?;
        connection.upgrade(path)?;
        connections.push(connection);
    }
    for connection in &connections {
        connection.set_nonblocking()?;
    }
    Ok(connections)
}

/// Waits (up to `timeout`) until some connection is readable or, for those in `writing`,
/// writable; returns the poll set with its results.
fn wait_ready(
    fds: &mut Vec<libc::pollfd>,
    connections: &[Connection],
    writing: &[bool],
    timeout: Duration,
) -> io::Result<()> {
    fds.clear();
    fds.extend(
        connections
            .iter()
            .zip(writing)
            .map(|(connection, &writing)| {
                let fd: RawFd = connection.fd();
                libc::pollfd {
                    fd,
                    events: libc::POLLIN | if writing { libc::POLLOUT } else { 0 },
                    revents: 0,
                }
            }),
    );
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structures for the call's duration.
    let ready = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

/// Reads what `connection` has; false when the server ended the stream.
fn read_ready(connection: &mut Connection) -> io::Result<bool> {
    loop {
        match connection.read_some() {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(error) => return Err(error),
        }
    }
}

fn echo(common: &Common, count: usize, payload_bytes: usize, path: &str) -> io::Result<String> {
    let security = common.security(true)?;
    let mut connections = open_websockets(common, &security, count, path)?;
    let payload: Vec<u8> = (0..payload_bytes)
        .map(|index| b'a' + (index % 26) as u8)
        .collect();
    let mut writing = vec![false; count];
    for (connection, writing) in connections.iter_mut().zip(&mut writing) {
        connection.send_text(&payload)?;
        *writing = !connection.flush()?;
    }
    let mut echoed = 0u64;
    let mut fds = Vec::with_capacity(count);
    let warmup_end = Instant::now() + Duration::from_secs(common.warmup_seconds);
    let mut window = None;
    let mut end = None;
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup_end {
            window = Some(Window::open(common, echoed));
            end = Some(now + Duration::from_secs(common.seconds));
        }
        if end.is_some_and(|end| now >= end) {
            break;
        }
        wait_ready(&mut fds, &connections, &writing, Duration::from_millis(100))?;
        for (index, poll) in fds.iter().enumerate() {
            if poll.revents == 0 {
                continue;
            }
            let connection = &mut connections[index];
            if !read_ready(connection)? {
                return Err(io::Error::other("the server closed an echo connection"));
            }
            while let Some(frame) = connection.next_frame() {
                if frame.opcode != 1 || connection.payload(&frame) != payload.as_slice() {
                    return Err(io::Error::other("an echo differs from what was sent"));
                }
                echoed += 1;
                connection.send_text(&payload)?;
            }
            writing[index] = !connection.flush()?;
        }
    }
    let extra = format!(",\"connections\":{count},\"payload_bytes\":{payload_bytes}");
    Ok(window
        .expect("opened")
        .close(common, "echo", echoed, &extra))
}

fn fanout(common: &Common, subscribers: usize, rate: u64, path: &str) -> io::Result<String> {
    let security = common.security(true)?;
    let topic = "TLSBENCH";
    // The last connection publishes; the others subscribe.
    let mut connections = open_websockets(common, &security, subscribers + 1, path)?;
    let subscribe = format!(r#"{{"op":"subscribe","topics":["{topic}"]}}"#);
    let mut writing = vec![false; subscribers + 1];
    for (connection, writing) in connections[..subscribers].iter_mut().zip(&mut writing) {
        connection.send_text(subscribe.as_bytes())?;
        *writing = !connection.flush()?;
    }
    let mut fds = Vec::with_capacity(subscribers + 1);
    let mut subscribed = 0;
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    while subscribed < subscribers {
        if Instant::now() > setup_deadline {
            return Err(io::Error::other(format!(
                "{subscribed} of {subscribers} subscribed"
            )));
        }
        wait_ready(&mut fds, &connections, &writing, Duration::from_millis(100))?;
        for (index, poll) in fds.iter().enumerate() {
            if poll.revents == 0 {
                continue;
            }
            let connection = &mut connections[index];
            read_ready(connection)?;
            while let Some(frame) = connection.next_frame() {
                if find(connection.payload(&frame), b"subscribed") {
                    subscribed += 1;
                }
            }
            writing[index] = !connection.flush()?;
        }
    }
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next_publish = Instant::now();
    let mut published = 0u64;
    let mut delivered = 0u64;
    let warmup_end = Instant::now() + Duration::from_secs(common.warmup_seconds);
    let (mut window, mut end, mut published_at_start) = (None, None, 0);
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup_end {
            window = Some(Window::open(common, delivered));
            end = Some(now + Duration::from_secs(common.seconds));
            published_at_start = published;
        }
        if end.is_some_and(|end| now >= end) {
            break;
        }
        while next_publish <= now {
            let message = format!(
                r#"{{"op":"publish","topic":"{topic}","data":{{"px":{},"qty":100}}}}"#,
                191 + published % 7
            );
            let publisher = &mut connections[subscribers];
            publisher.send_text(message.as_bytes())?;
            writing[subscribers] = !publisher.flush()?;
            published += 1;
            next_publish += interval;
        }
        let wait = next_publish.saturating_duration_since(Instant::now());
        wait_ready(&mut fds, &connections, &writing, wait)?;
        for (index, poll) in fds.iter().enumerate() {
            if poll.revents == 0 {
                continue;
            }
            let connection = &mut connections[index];
            if !read_ready(connection)? {
                return Err(io::Error::other("the server closed a fanout connection"));
            }
            while let Some(frame) = connection.next_frame() {
                if frame.opcode == 1 && find(connection.payload(&frame), b"\"px\"") {
                    delivered += 1;
                }
            }
            writing[index] = !connection.flush()?;
        }
    }
    let extra = format!(
        ",\"subscribers\":{subscribers},\"published\":{},\"publishes_per_second\":{rate}",
        published - published_at_start
    );
    Ok(window
        .expect("opened")
        .close(common, "fanout", delivered, &extra))
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
