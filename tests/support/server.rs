//! Harness of the tests that run the real `ringcast` binary: start it on an ephemeral port, talk
//! to it over loopback TCP, signal it, and read its memory use.
//!
//! The clients here are written from RFC 6455 and RFC 9112 alone and use nothing of the crate
//! under test, so that an encoder bug on the server's side cannot hide behind the same bug on the
//! test's side. Every wait is bounded: sockets carry read timeouts, process waits poll with a
//! deadline, and a test that would hang fails instead, naming what it waited for.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tungstenite::WebSocket;

/// How long the server may take to print its address after being started.
pub const STARTUP_WAIT: Duration = Duration::from_secs(20);
/// How long the server may take to exit after a signal (its drain timeout is 5 s by default).
pub const EXIT_WAIT: Duration = Duration::from_secs(20);
/// The read timeout of every client socket: long enough for a debug build under load, short
/// enough that a missing answer fails the test rather than hanging it.
pub const READ_WAIT: Duration = Duration::from_secs(15);
/// How often a process wait checks for the exit.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The tail of the server's log printed when a test fails.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// The sample key of RFC 6455 §1.3 and the accept value the RFC derives from it.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OPCODE_CONTINUATION: u8 = 0x0;
pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// Numbers the stderr files of the servers one test binary starts.
static SERVER_INDEX: AtomicUsize = AtomicUsize::new(0);

/// A running `ringcast` process, killed (SIGKILL) on drop if it is still alive.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    /// The TLS listener's address, when the server was started with `--tls-listen`.
    pub tls_address: Option<SocketAddr>,
    stderr_path: PathBuf,
}

impl ServerProcess {
    /// Starts the server on an ephemeral loopback port with `arguments` added.
    pub fn start(arguments: &[&str]) -> ServerProcess {
        ServerProcess::start_with_environment(arguments, &[])
    }

    /// Starts the server with `arguments` and the `RINGCAST_*` variables in `environment`, and
    /// waits (bounded) for the line that names its address.
    pub fn start_with_environment(
        arguments: &[&str],
        environment: &[(&str, &str)],
    ) -> ServerProcess {
        let stderr_path = stderr_path();
        let mut command = server_command(arguments, environment, &stderr_path);
        command.stdout(Stdio::piped());
        let mut child = command.spawn().expect("spawning the ringcast binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_sender, line_receiver) = mpsc::channel();
        // With TLS, the second line names the TLS listener.
        let tls = arguments
            .iter()
            .any(|argument| argument.starts_with("--tls-listen"));
        let line_count = if tls { 2 } else { 1 };
        // The reader keeps draining stdout after the address lines so the server never blocks
        // on a full pipe; it ends at EOF, when the process exits.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..line_count {
                let mut line = String::new();
                let _ = line_sender.send(reader.read_line(&mut line).map(|_| line));
            }
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let mut server = ServerProcess {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_address: None,
            stderr_path,
        };
        server.address = server.read_address_line(&line_receiver, "");
        if tls {
            server.tls_address = Some(server.read_address_line(&line_receiver, " (tls)"));
        }
        server
    }

    /// Reads one `ringcast listening on ADDRESS{suffix}` line (bounded) and parses the address.
    fn read_address_line(
        &self,
        lines: &mpsc::Receiver<io::Result<String>>,
        suffix: &str,
    ) -> SocketAddr {
        let line = match lines.recv_timeout(STARTUP_WAIT) {
            Ok(Ok(line)) => line,
            Ok(Err(error)) => panic!("reading the server's stdout: {error}"),
            Err(_) => panic!(
                "the server printed no address line within {STARTUP_WAIT:?}; server log:\n{}",
                self.stderr_text()
            ),
        };
        let address = line
            .trim_end()
            .strip_prefix("ringcast listening on ")
            .and_then(|rest| rest.strip_suffix(suffix));
        let Some(address) = address else {
            panic!(
                "unexpected line {line:?} (wanted the address{suffix}); server log:\n{}",
                self.stderr_text()
            );
        };
        address.parse().expect("the printed address parses")
    }

    /// The `ws://` URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(&self.stderr_path).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(STDERR_TAIL_BYTES)..];
        String::from_utf8_lossy(tail).into_owned()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped (reaping
        // happens only in `wait_for_exit` and drop), so it cannot name another process.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits (bounded) until the server catches SIGTERM and SIGINT, read from SigCgt in
    /// /proc/PID/status. The server prints its address before it installs its handlers (a bug,
    /// proven by `sigterm_right_after_the_address_line_exits_0`), so tests about draining wait
    /// for the handlers first rather than lose the signal to that race.
    pub fn wait_for_signal_handlers(&self) {
        let wanted = (1u64 << (libc::SIGTERM - 1)) | (1u64 << (libc::SIGINT - 1));
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            let path = format!("/proc/{}/status", self.pid());
            let status = std::fs::read_to_string(&path).expect("reading /proc/PID/status");
            let caught = status
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .unwrap_or_else(|| panic!("no SigCgt line in {path}:\n{status}"));
            if caught & wanted == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server installed no SIGTERM and SIGINT handlers within {STARTUP_WAIT:?}"
            );
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_for_exit(&mut self, wait: Duration) -> ExitStatus {
        wait_for_child(&mut self.child, wait)
            .unwrap_or_else(|| panic!("the server did not exit within {wait:?}"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for_exit(EXIT_WAIT)
    }

    /// The server's resident set size (VmRSS in /proc/PID/status).
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).expect("reading /proc/PID/status");
        let kibibytes = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"));
        kibibytes * 1024
    }

    /// Everything the server logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read(&self.stderr_path).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(STDERR_TAIL_BYTES)..];
            eprintln!(
                "server log ({}):\n{}",
                self.stderr_path.display(),
                String::from_utf8_lossy(tail)
            );
        }
    }
}

/// Runs the server with `arguments` (which must include `--listen`) until it exits by itself,
/// bounded, and returns its status and what it logged. For start-up failures.
pub fn run_server_to_exit(arguments: &[&str]) -> (ExitStatus, String) {
    let stderr_path = stderr_path();
    let mut command = server_command(arguments, &[], &stderr_path);
    command.stdout(Stdio::null());
    let mut child = command.spawn().expect("spawning the ringcast binary");
    let status = wait_for_child(&mut child, EXIT_WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server kept running: expected it to fail at start-up");
    });
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status, log)
}

/// The command for the binary. `RINGCAST_*` variables of the test's own environment are removed,
/// and `RUST_LOG` (the log filter's fallback), so that only what the test sets applies.
fn server_command(arguments: &[&str], environment: &[(&str, &str)], stderr_path: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    if !arguments
        .iter()
        .any(|argument| argument.starts_with("--listen"))
    {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(arguments);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("RINGCAST_") || name_text == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(environment.iter().copied());
    let stderr = File::create(stderr_path).expect("creating the server's stderr file");
    command.stdin(Stdio::null()).stderr(stderr);
    command
}

fn stderr_path() -> PathBuf {
    let index = SERVER_INDEX.fetch_add(1, Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ringcast-{}-{index}.stderr", std::process::id()))
}

fn wait_for_child(child: &mut Child, wait: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the server") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(EXIT_POLL_INTERVAL);
    }
}

/// Describes how a process ended, for assertion messages.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit".into(),
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit and checks that `needed`
/// descriptors fit, so that thousands of client sockets can be open at once.
pub fn raise_open_files_limit(needed: u64) {
    let mut limits = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one rlimit struct we own, during the call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limits), 0);
        limits.rlim_cur = limits.rlim_max;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limits),
            0,
            "setrlimit: {}",
            io::Error::last_os_error()
        );
    }
    assert!(
        limits.rlim_cur >= needed,
        "this test needs {needed} open files but the hard RLIMIT_NOFILE is {}; raise it \
         (ulimit -Hn) to run it",
        limits.rlim_cur
    );
}

/// A tungstenite client connected and upgraded at `path`. tungstenite checks the
/// `Sec-WebSocket-Accept` of the response itself and fails the handshake on a mismatch.
pub fn connect_websocket(address: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = connect_tcp(address);
    let (socket, response) = tungstenite::client(format!("ws://{address}{path}"), stream)
        .unwrap_or_else(|error| panic!("upgrading at {path}: {error}"));
    assert_eq!(response.status(), 101);
    socket
}

/// A TCP connection to the server with the standard read and write timeouts.
pub fn connect_tcp(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connecting to the server");
    stream.set_read_timeout(Some(READ_WAIT)).unwrap();
    stream.set_write_timeout(Some(READ_WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid upgrade request for `path` carrying the RFC's sample key.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// An HTTP response as read off the wire. Header names are lower-cased.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A server frame as read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1–3, shifted down to the low three bits.
    pub reserved_bits: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code and reason of a close frame; `None` for an empty close payload.
    pub fn close_code_and_reason(&self) -> Option<(u16, String)> {
        assert_eq!(
            self.opcode, OPCODE_CLOSE,
            "expected a close frame, got {self:?}"
        );
        if self.payload.is_empty() {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("utf-8 reason");
        Some((code, reason))
    }
}

/// A client that writes bytes as given (valid or not) and parses what comes back by hand.
/// A client that writes and reads raw bytes over a stream: TCP, or TLS over TCP.
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    /// Bytes read but not yet parsed.
    received: Vec<u8>,
}

impl RawClient {
    pub fn connect(address: SocketAddr) -> RawClient {
        RawClient {
            stream: connect_tcp(address),
            received: Vec::new(),
        }
    }

    /// A client over a stream the caller connected (with its own socket options).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(READ_WAIT)).unwrap();
        stream.set_write_timeout(Some(READ_WAIT)).unwrap();
        RawClient {
            stream,
            received: Vec::new(),
        }
    }

    /// Connects, upgrades at `path`, and checks the 101 and its accept value.
    pub fn upgraded(address: SocketAddr, path: &str) -> RawClient {
        let mut client = RawClient::connect(address);
        client.write(upgrade_request(path).as_bytes());
        client.expect_upgraded();
        client
    }
}

impl<S: Read + Write> RawClient<S> {
    /// A client over a stream that is already set up (a TLS stream over a connected socket).
    pub fn over(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            received: Vec::new(),
        }
    }

    /// Reads the answer to `upgrade_request`: a 101 with the RFC's accept value.
    pub fn expect_upgraded(&mut self) {
        let response = self.read_response_head();
        assert_eq!(response.status, 101, "{response:?}");
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(SAMPLE_ACCEPT),
            "{response:?}"
        );
        assert!(
            response
                .header("upgrade")
                .is_some_and(|value| value.eq_ignore_ascii_case("websocket")),
            "{response:?}"
        );
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the server");
    }

    /// Writes a masked client frame.
    pub fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.write(&client_frame(opcode, fin, payload));
    }

    /// Reads until at least `length` bytes are buffered; panics on EOF or timeout.
    fn fill_to(&mut self, length: usize, what: &str) {
        let mut chunk = [0u8; 64 * 1024];
        while self.received.len() < length {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed while reading {what}; unparsed bytes: {:?}",
                    String::from_utf8_lossy(&self.received)
                ),
                Ok(count) => self.received.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => panic!("reading {what}: {error}"),
            }
        }
    }

    /// Reads one line (up to and without its `\n`); `None` at EOF before a whole line.
    pub fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.received.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.received.drain(..=end).collect();
                line.pop();
                return Some(line);
            }
            if !self.fill_more("a line") {
                return None;
            }
        }
    }

    /// Reads one chunk of a chunked body (RFC 9112 §7.1, no extensions or trailers: what the
    /// server sends); `None` at the last chunk.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.read_line().expect("a chunk size line");
        let size_text = std::str::from_utf8(&size_line)
            .unwrap()
            .trim_end_matches('\r');
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("chunk size {size_text:?}"));
        self.fill_to(size + 2, "a chunk");
        let chunk: Vec<u8> = self.received.drain(..size).collect();
        let end: Vec<u8> = self.received.drain(..2).collect();
        assert_eq!(end, b"\r\n", "a chunk ends with CRLF");
        (size > 0).then_some(chunk)
    }

    /// Reads the next byte chunk into the buffer. Returns false on EOF.
    fn fill_more(&mut self, what: &str) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(count) => {
                    self.received.extend_from_slice(&chunk[..count]);
                    return true;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => panic!("reading {what}: {error}"),
            }
        }
    }

    /// Reads a response's status line and header fields (and no body).
    pub fn read_response_head(&mut self) -> HttpResponse {
        let head_end = loop {
            if let Some(position) = find(&self.received, b"\r\n\r\n") {
                break position + 4;
            }
            if !self.fill_more("a response head") {
                panic!(
                    "connection closed before a complete response head: {:?}",
                    String::from_utf8_lossy(&self.received)
                );
            }
        };
        let head: Vec<u8> = self.received.drain(..head_end).collect();
        let head = String::from_utf8(head).expect("response head is ASCII");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header line {line:?}"));
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        HttpResponse {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Reads one response with its `Content-Length` body.
    pub fn read_response(&mut self) -> HttpResponse {
        let mut response = self.read_response_head();
        let length: usize = response
            .header("content-length")
            .map(|value| value.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        self.fill_to(length, "a response body");
        response.body = self.received.drain(..length).collect();
        response
    }

    /// Reads one frame, which must be text, as a string.
    pub fn read_text(&mut self) -> String {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode, OPCODE_TEXT,
            "expected a text frame: {frame:?}"
        );
        String::from_utf8(frame.payload).expect("UTF-8 text")
    }

    /// Reads one frame from the server, which must be unmasked (RFC 6455 §5.1).
    pub fn read_frame(&mut self) -> Frame {
        self.fill_to(2, "a frame head");
        let (first, second) = (self.received[0], self.received[1]);
        assert_eq!(second & 0x80, 0, "the server masked a frame");
        let (payload_bytes, head_bytes) = match second & 0x7F {
            126 => {
                self.fill_to(4, "a 16-bit frame length");
                let length = u16::from_be_bytes([self.received[2], self.received[3]]);
                (length as usize, 4)
            }
            127 => {
                self.fill_to(10, "a 64-bit frame length");
                let bytes: [u8; 8] = self.received[2..10].try_into().unwrap();
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            length => (length as usize, 2),
        };
        self.fill_to(head_bytes + payload_bytes, "a frame payload");
        let payload = self.received[head_bytes..head_bytes + payload_bytes].to_vec();
        self.received.drain(..head_bytes + payload_bytes);
        Frame {
            fin: first & 0x80 != 0,
            reserved_bits: (first >> 4) & 0x07,
            opcode: first & 0x0F,
            payload,
        }
    }

    /// Reads a close frame and returns its code (`None` for an empty payload).
    pub fn read_close_code(&mut self) -> Option<u16> {
        let frame = self.read_frame();
        frame.close_code_and_reason().map(|(code, _)| code)
    }

    /// Reads until EOF and checks nothing came before it: the server closed the connection.
    pub fn expect_eof(&mut self) {
        assert!(
            self.received.is_empty(),
            "unread bytes before the expected EOF: {:?}",
            self.received
        );
        if self.fill_more("the end of the connection") {
            panic!(
                "expected EOF, got more bytes: {:?}",
                String::from_utf8_lossy(&self.received)
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A mask that differs from frame to frame (RFC 6455 wants an unpredictable one; tests only
/// need variety, so that unmasking at every offset of the key gets exercised).
pub fn mask_from(seed: u32) -> [u8; 4] {
    (seed.wrapping_add(1).wrapping_mul(0x9E37_79B9) | 1).to_be_bytes()
}

/// Encodes a masked client frame from its first byte (FIN, RSV, opcode) and payload.
pub fn masked_frame(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(first_byte);
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
    frame
}

/// Encodes a masked client frame with no reserved bits.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let first_byte = if fin { 0x80 } else { 0 } | opcode;
    masked_frame(first_byte, payload, mask_from(payload.len() as u32))
}

/// The payload of a close frame: the code, big-endian, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Opens `count` WebSockets at `path` with raw handshakes, `batch_count` at a time: each batch
/// connects and writes all its requests, then reads all its answers, so that the server sees
/// many handshakes at once without its listen backlog overflowing.
pub fn open_websockets(
    address: SocketAddr,
    path: &str,
    count: usize,
    batch_count: usize,
) -> Vec<RawClient> {
    let request = upgrade_request(path);
    let mut clients = Vec::with_capacity(count);
    while clients.len() < count {
        let batch_start = clients.len();
        let batch_end = (batch_start + batch_count).min(count);
        for _ in batch_start..batch_end {
            let mut client = RawClient::connect(address);
            client.write(request.as_bytes());
            clients.push(client);
        }
        for client in &mut clients[batch_start..batch_end] {
            client.expect_upgraded();
        }
    }
    clients
}

/// Sends each client a ping carrying its index, then reads every pong and checks its payload:
/// each connection is open and served. Writes all pings first so the server handles them in
/// bulk.
pub fn ping_every_client(clients: &mut [RawClient]) {
    for (index, client) in clients.iter_mut().enumerate() {
        client.send_frame(OPCODE_PING, true, &(index as u64).to_be_bytes());
    }
    expect_pong_from_every_client(clients);
}

/// Reads, from each client in turn, the pong to a ping that carried the client's index.
pub fn expect_pong_from_every_client(clients: &mut [RawClient]) {
    for (index, client) in clients.iter_mut().enumerate() {
        let frame = client.read_frame();
        assert_eq!(frame.opcode, OPCODE_PONG, "client {index}: {frame:?}");
        assert_eq!(
            frame.payload,
            (index as u64).to_be_bytes(),
            "client {index}"
        );
    }
}

/// Closes every client with 1000 and checks the server echoes 1000 and then closes the TCP
/// connection. Writes all closes first.
pub fn close_every_client<S: Read + Write>(clients: &mut [RawClient<S>]) {
    for client in clients.iter_mut() {
        client.send_frame(OPCODE_CLOSE, true, &close_payload(1000, ""));
    }
    for (index, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.read_close_code(), Some(1000), "client {index}");
        client.expect_eof();
    }
}

/// A keep-alive HTTP client for publishing and scraping, reading each answer in turn.
pub struct HttpClient {
    client: RawClient,
}

impl HttpClient {
    pub fn connect(address: SocketAddr) -> HttpClient {
        HttpClient {
            client: RawClient::connect(address),
        }
    }

    /// A client whose reads wait up to `wait`, for an answer the server may rightly take long
    /// to give (a clustered publish while NATS elects a stream leader).
    pub fn connect_patient(address: SocketAddr, wait: Duration) -> HttpClient {
        let stream = connect_tcp(address);
        stream.set_read_timeout(Some(wait)).unwrap();
        HttpClient {
            client: RawClient {
                stream,
                received: Vec::new(),
            },
        }
    }

    /// `POST path` with a JSON body and the given extra header lines; the response.
    pub fn post(
        &mut self,
        path: &str,
        body: &[u8],
        extra_headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        for (name, value) in extra_headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.client.write(request.as_bytes());
        self.client.write(body);
        self.client.read_response()
    }

    /// `GET path`; the response.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.get_with(path, &[])
    }

    /// `GET path` with the given extra header lines; the response.
    pub fn get_with(&mut self, path: &str, extra_headers: &[(&str, &str)]) -> HttpResponse {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
        for (name, value) in extra_headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.client.write(request.as_bytes());
        self.client.read_response()
    }

    /// The sum over every series (every shard and label) of the metric family `name` (with
    /// its `ringcast_` prefix, and `_total` for a counter).
    pub fn metric(&mut self, name: &str) -> u64 {
        self.metric_where(name, "")
    }

    /// [`HttpClient::metric`] over the series whose labels contain `labels` (say
    /// `kind="message"`).
    pub fn metric_where(&mut self, name: &str, labels: &str) -> u64 {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200);
        let text = String::from_utf8(response.body).expect("metrics are text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                    && line.contains(labels)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Waits (bounded by `READ_WAIT` times four) until `condition` holds, polling; panics naming
/// `what` otherwise. For states the server reaches on its own (a timeout firing, a topic
/// expiring), checked without asserting how long it took.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + 4 * READ_WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends each client a subscription (to one of 100 topics) and a ping in one write, and reads
/// every `subscribed` answer and pong: each connection is then an idle subscriber that has been
/// served (over TLS, its record layer used both ways), as the memory tests want it.
pub fn subscribe_and_ping<S: Read + Write>(clients: &mut [RawClient<S>]) {
    for (index, client) in clients.iter_mut().enumerate() {
        let subscribe = format!(r#"{{"op":"subscribe","topics":["T{}"]}}"#, index % 100);
        let mut bytes = client_frame(OPCODE_TEXT, true, subscribe.as_bytes());
        bytes.extend(client_frame(
            OPCODE_PING,
            true,
            &(index as u64).to_be_bytes(),
        ));
        client.write(&bytes);
    }
    // The pong is immediate; `subscribed` comes from the topic's owner shard: either may be
    // first.
    for (index, client) in clients.iter_mut().enumerate() {
        let mut frames = [client.read_frame(), client.read_frame()];
        frames.sort_by_key(|frame| frame.opcode);
        let [answer, pong] = frames;
        assert_eq!(answer.opcode, OPCODE_TEXT, "client {index}");
        assert!(
            answer.payload.starts_with(br#"{"op":"subscribed""#),
            "client {index}"
        );
        assert_eq!(pong.opcode, OPCODE_PONG, "client {index}");
        assert_eq!(pong.payload, (index as u64).to_be_bytes(), "client {index}");
    }
}
