//! One client connection: a socket bound to a chosen source address, connected through
//! io_uring (tokio-uring), with tungstenite's handshake and frame codec running over an
//! in-memory stream.
//!
//! tokio-uring cannot bind a socket before connecting, so the socket is made here: bound to
//! (source, port 0) with IP_BIND_ADDRESS_NO_PORT, so the kernel picks the port at connect time
//! per destination, then connected without blocking. The upgrade request is submitted at once
//! as an io_uring write; the kernel parks it until the TCP handshake completes and fails it
//! with the connect error (ECONNREFUSED, ...) if it does not. So the first write's outcome is
//! the connect's outcome, and no thread ever blocks in connect().

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::{Instant, timeout_at};
use tokio_uring::net::TcpStream;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::http::Uri;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocket, WebSocketConfig};
use tungstenite::{Error as WebSocketError, Message};

use rustls::ClientConnection;

use super::memory_stream::MemoryStream;
use crate::protocol::{Cause, TlsPlan};
use crate::transport::{self, TlsClient, TlsFailure};

/// Where to connect: the server's address, the URL for the upgrade request, and for wss://
/// (https://) the TLS client.
#[derive(Clone, Debug)]
pub struct Target {
    pub address: SocketAddrV4,
    pub uri: Uri,
    /// `Bearer <token>` for the upgrade's `Authorization` header, when the server wants one.
    pub authorization: Option<tungstenite::http::HeaderValue>,
    /// Set for wss:// and https:// (by [`Target::with_tls`]), `None` for ws:// and http://.
    pub tls: Option<TlsClient>,
}

impl Target {
    /// The same target, sending `Authorization: Bearer <token>` with every upgrade.
    pub fn with_bearer_token(mut self, token: Option<&str>) -> Result<Self, String> {
        if let Some(token) = token {
            let value = format!("Bearer {token}");
            let header = tungstenite::http::HeaderValue::from_str(&value)
                .map_err(|_| "the token is not a valid header value".to_owned())?;
            self.authorization = Some(header);
        }
        Ok(self)
    }

    /// Parses ws://, wss://, http:// or https://, then IPv4[:PORT]/PATH. The scheme says
    /// whether TLS is spoken (and the default port); ws and http are the same target, as
    /// are wss and https, since the scenario decides between WebSocket and HTTP. Host names
    /// are refused: the run is loopback only, and a name lookup per connection would measure
    /// the resolver (the certificate's name is `--server-name`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("bad URL {url:?}: {error}"))?;
        let default_port = match uri.scheme_str() {
            Some("ws" | "http") => 80,
            Some("wss" | "https") => 443,
            _ => {
                return Err(format!(
                    "URL {url:?}: ws://, wss://, http:// or https:// only"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| format!("URL {url:?}: the host must be an IPv4 address"))?;
        let port = uri.port_u16().unwrap_or(default_port);
        Ok(Self {
            address: SocketAddrV4::new(ip, port),
            authorization: None,
            uri,
            tls: None,
        })
    }

    /// Whether the URL asks for TLS (wss:// or https://).
    pub fn is_secure(&self) -> bool {
        matches!(self.uri.scheme_str(), Some("wss" | "https"))
    }

    /// The TLS settings a worker gets for this target: required for wss:// and https://
    /// (`--ca`), refused for a plain URL, the server name by default the URL's host. The CA
    /// file is read here once, so that a bad one stops the run before any worker starts.
    pub fn tls_plan(
        &self,
        ca_path: Option<&std::path::Path>,
        server_name: Option<&str>,
    ) -> Result<Option<TlsPlan>, String> {
        let ca_path = match (self.is_secure(), ca_path) {
            (false, None) => return Ok(None),
            (false, Some(_)) => {
                return Err(format!(
                    "--ca is for wss:// and https:// URLs, not {}",
                    self.uri
                ));
            }
            (true, None) => {
                return Err(format!("{} needs --ca FILE to verify the server", self.uri));
            }
            (true, Some(ca_path)) => ca_path,
        };
        let host = self.address.ip().to_string();
        let plan = TlsPlan {
            ca_path: ca_path.to_owned(),
            server_name: server_name.unwrap_or(&host).to_owned(),
        };
        TlsClient::from_ca_file(&plan.ca_path, &plan.server_name)?;
        Ok(Some(plan))
    }

    /// The same target with the TLS client of `plan`, which a secure URL needs and a plain
    /// one must not have.
    pub fn with_tls(mut self, plan: Option<&TlsPlan>) -> Result<Self, String> {
        match (self.is_secure(), plan) {
            (false, None) => Ok(self),
            (true, Some(plan)) => {
                self.tls = Some(TlsClient::from_ca_file(&plan.ca_path, &plan.server_name)?);
                Ok(self)
            }
            (true, None) => Err(format!("{} without TLS settings", self.uri)),
            (false, Some(_)) => Err(format!("TLS settings for the plain URL {}", self.uri)),
        }
    }
}

/// Buffer sizes of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Bytes one io_uring read may deliver (the read buffer each connection keeps).
    pub read_bytes: usize,
    /// Initial capacity of tungstenite's receive buffer (it grows for larger messages).
    pub codec_read_bytes: usize,
}

impl Sizes {
    fn codec_config(self) -> WebSocketConfig {
        // Frames are written straight into the in-memory stream (write_buffer_size 0) and sent
        // by us; the receive buffer starts small because a connection test holds many idle
        // connections, and tungstenite's 128 KiB default would cost gigabytes.
        WebSocketConfig::default()
            .read_buffer_size(self.codec_read_bytes)
            .write_buffer_size(0)
    }
}

/// The server closed the connection, broke it, or broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

type ReadFuture = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;
type WriteFuture = Pin<Box<dyn Future<Output = (io::Result<()>, Vec<u8>)>>>;

/// An upgraded connection.
pub struct Connection {
    stream: Rc<TcpStream>,
    socket: WebSocket<MemoryStream>,
    /// wss://: the TLS session between the socket and the codec's in-memory stream.
    tls: Option<Box<ClientConnection>>,
    /// The read in flight, if any. It stays here when a wait for it is abandoned, so a
    /// connection never has two reads in flight and never loses received bytes.
    read_in_flight: Option<ReadFuture>,
    /// The read buffer while no read is in flight.
    read_buffer: Option<Vec<u8>>,
    /// The write in flight, if any; kept for the same reason as the read.
    write_in_flight: Option<WriteFuture>,
    /// The write buffer while no write is in flight (empty while one is).
    write_buffer: Vec<u8>,
}

/// Opens a connection from `source` and upgrades it, all before `deadline`.
pub async fn open(
    target: &Target,
    source: Ipv4Addr,
    sizes: Sizes,
    deadline: Instant,
) -> Result<Connection, Cause> {
    let socket = bound_socket(source).map_err(|error| connect_cause(&error))?;
    match socket.connect(&target.address.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(connect_cause(&error)),
    }
    // Back to blocking mode: io_uring makes its own non-blocking attempt and then waits for
    // readiness, which is what we want; O_NONBLOCK would only add a way to get EAGAIN back.
    socket
        .set_nonblocking(false)
        .map_err(|error| connect_cause(&error))?;
    let mut tls = match &target.tls {
        Some(client) => Some(client.connect().map_err(|_| Cause::TlsHandshakeFailed)?),
        None => None,
    };
    let stream = Rc::new(TcpStream::from_std(socket.into()));
    let result = upgrade(&stream, target, sizes, deadline, tls.as_deref_mut()).await;
    if result.is_err() {
        // A write or read may still be in flight (abandoned at the deadline); shutting the
        // socket down ends it, so its descriptor is closed once the kernel lets go.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let socket = result?;
    Ok(Connection {
        stream,
        socket,
        tls,
        read_in_flight: None,
        read_buffer: Some(Vec::with_capacity(sizes.read_bytes)),
        write_in_flight: None,
        write_buffer: Vec::new(),
    })
}

/// The WebSocket handshake over `stream`, whose TCP connect may still be in progress; for
/// wss:// the TLS handshake runs under it, started by the same first write (the ClientHello,
/// with the upgrade request waiting in rustls until the handshake is done).
async fn upgrade(
    stream: &TcpStream,
    target: &Target,
    sizes: Sizes,
    deadline: Instant,
    mut tls: Option<&mut ClientConnection>,
) -> Result<WebSocket<MemoryStream>, Cause> {
    let mut request = target
        .uri
        .clone()
        .into_client_request()
        .map_err(|_| Cause::HandshakeFailed)?;
    if let Some(authorization) = &target.authorization {
        let headers = request.headers_mut();
        headers.insert(
            tungstenite::http::header::AUTHORIZATION,
            authorization.clone(),
        );
    }
    let mut pending =
        ClientHandshake::start(MemoryStream::default(), request, Some(sizes.codec_config()))
            .map_err(|_| Cause::HandshakeFailed)?;
    let mut connected = false;
    let mut buffer = Vec::with_capacity(sizes.read_bytes);
    loop {
        let mut middle = match pending.handshake() {
            Ok((socket, _response)) => return Ok(socket),
            Err(HandshakeError::Failure(_)) => return Err(Cause::HandshakeFailed),
            Err(HandshakeError::Interrupted(middle)) => middle,
        };
        take_outgoing(middle.get_mut().get_mut(), tls.as_deref_mut(), &mut buffer);
        if !buffer.is_empty() {
            let (result, returned) = timeout_at(deadline, stream.write_all(buffer))
                .await
                .map_err(|_| timeout_cause(connected))?;
            buffer = returned;
            match result {
                Ok(()) => connected = true,
                Err(error) if connected => {
                    return Err(handshake_cause(&error, tls.as_deref()));
                }
                Err(error) => return Err(connect_cause(&error)),
            }
        }
        buffer.clear();
        let (result, returned) = timeout_at(deadline, stream.read(buffer))
            .await
            .map_err(|_| Cause::HandshakeTimeout)?;
        buffer = returned;
        let memory = middle.get_mut().get_mut();
        match result {
            Ok(0) => return Err(closed_cause(tls.as_deref())),
            Ok(count) => match take_in(memory, tls.as_deref_mut(), &buffer[..count]) {
                Ok(()) => {}
                Err(TlsFailure::Handshake) => return Err(Cause::TlsHandshakeFailed),
                Err(TlsFailure::Session) => return Err(Cause::HandshakeFailed),
            },
            Err(error) => return Err(handshake_cause(&error, tls.as_deref())),
        }
        pending = middle;
    }
}

/// Moves what is to be sent into `buffer` (cleared first): the codec's bytes, sealed for
/// wss:// together with whatever else TLS has to send (handshake messages, alerts).
fn take_outgoing(
    memory: &mut MemoryStream,
    tls: Option<&mut ClientConnection>,
    buffer: &mut Vec<u8>,
) {
    memory.take_outgoing(buffer);
    if let Some(session) = tls {
        transport::encrypt_in_place(session, buffer);
    }
}

/// Hands received bytes to the codec's in-memory stream, through TLS for wss://.
fn take_in(
    memory: &mut MemoryStream,
    tls: Option<&mut ClientConnection>,
    bytes: &[u8],
) -> Result<(), TlsFailure> {
    match tls {
        None => {
            memory.push_incoming(bytes);
            Ok(())
        }
        Some(session) => transport::decrypt(session, bytes, memory.incoming_mut()),
    }
}

/// The cause when the server ends the connection before the upgrade is complete.
fn closed_cause(tls: Option<&ClientConnection>) -> Cause {
    match tls.map(transport::failure_kind) {
        Some(TlsFailure::Handshake) => Cause::TlsHandshakeFailed,
        Some(TlsFailure::Session) | None => Cause::HandshakeFailed,
    }
}

impl Connection {
    /// Queues a message; [`Connection::flush`] sends it.
    pub fn queue(&mut self, message: Message) -> Result<(), Closed> {
        self.socket.write(message).map_err(|_| Closed)
    }

    /// Sends everything the codec has written (messages, pongs, close frames).
    ///
    /// Cancel-safe: an abandoned flush leaves its write in flight, and the next call waits for
    /// it before sending more, so bytes never interleave.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        loop {
            if self.write_in_flight.is_none() {
                let tls_wants_write = self.tls.as_ref().is_some_and(|tls| tls.wants_write());
                if !self.socket.get_ref().has_outgoing() && !tls_wants_write {
                    return Ok(());
                }
                take_outgoing(
                    self.socket.get_mut(),
                    self.tls.as_deref_mut(),
                    &mut self.write_buffer,
                );
                let stream = Rc::clone(&self.stream);
                let buffer = std::mem::take(&mut self.write_buffer);
                self.write_in_flight =
                    Some(Box::pin(async move { stream.write_all(buffer).await }));
            }
            let write = self.write_in_flight.as_mut().expect("a write in flight");
            let (result, buffer) = write.await;
            self.write_in_flight = None;
            self.write_buffer = buffer;
            result.map_err(|_| Closed)?;
        }
    }

    /// The next message already received and decoded, if any. Pings are answered by queueing
    /// a pong (sent by the next flush); a close from the server is `Closed`.
    pub fn poll_message(&mut self) -> Result<Option<Message>, Closed> {
        match self.socket.read() {
            Ok(Message::Close(frame)) => {
                log_close(frame.as_ref());
                Err(Closed)
            }
            Ok(message) => Ok(Some(message)),
            Err(WebSocketError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(_) => Err(Closed),
        }
    }

    /// Waits for more bytes from the server and hands them to the codec.
    ///
    /// Cancel-safe: if the wait is abandoned, the read stays in flight and the next call picks
    /// it up.
    pub async fn receive(&mut self) -> Result<(), Closed> {
        let read = self.read_in_flight.get_or_insert_with(|| {
            let stream = Rc::clone(&self.stream);
            let buffer = self
                .read_buffer
                .take()
                .expect("a buffer while no read is in flight");
            Box::pin(async move { stream.read(buffer).await })
        });
        let (result, mut buffer) = read.await;
        self.read_in_flight = None;
        let outcome = match result {
            Ok(0) | Err(_) => Err(Closed),
            Ok(count) => take_in(
                self.socket.get_mut(),
                self.tls.as_deref_mut(),
                &buffer[..count],
            )
            .map_err(|_| Closed),
        };
        buffer.clear();
        self.read_buffer = Some(buffer);
        outcome
    }

    /// Says goodbye: a close frame if the connection still works (within `deadline`), then a
    /// shutdown, which also ends a read still in flight.
    pub async fn close(mut self, deadline: Instant) {
        if self.socket.close(None).is_ok() {
            let _ = timeout_at(deadline, self.flush()).await;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Connection {
    /// Ends the connection the way a well-behaved client does: a close frame with code 1000,
    /// a wait for the server's close frame (answering anything else on the way), then the TCP
    /// close. `NoClose` when the server's close frame does not come before `deadline`,
    /// `ClosedEarly` when the connection breaks first.
    pub async fn close_cleanly(mut self, deadline: Instant) -> Result<(), Cause> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let outcome = match self.socket.close(Some(frame)) {
            Ok(()) => timeout_at(deadline, self.await_close())
                .await
                .unwrap_or(Err(Cause::NoClose)),
            Err(_) => Err(Cause::ClosedEarly),
        };
        if let (Ok(()), Some(session)) = (outcome, self.tls.as_mut()) {
            // A TLS client that ends cleanly says so, or the server counts a truncation. The
            // close handshake is already complete, and the server may have closed the TCP
            // connection after it, so a close_notify that cannot be sent is no failure.
            session.send_close_notify();
            let _ = timeout_at(deadline, self.flush()).await;
        }
        // Also ends a read still in flight after a timeout.
        let _ = self.stream.shutdown(Shutdown::Both);
        outcome
    }

    /// Sends our close frame and reads until the server's arrives.
    async fn await_close(&mut self) -> Result<(), Cause> {
        loop {
            self.flush().await.map_err(|Closed| Cause::ClosedEarly)?;
            loop {
                match self.socket.read() {
                    Ok(Message::Close(_)) | Err(WebSocketError::ConnectionClosed) => {
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(WebSocketError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                        break;
                    }
                    Err(_) => return Err(Cause::ClosedEarly),
                }
            }
            self.receive().await.map_err(|Closed| Cause::ClosedEarly)?;
        }
    }
}

/// A TCP socket bound to `source` with the port left to connect time.
fn bound_socket(source: Ipv4Addr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    set_bind_address_no_port(&socket)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    Ok(socket)
}

/// IP_BIND_ADDRESS_NO_PORT: bind() takes the address only; connect() then picks a port unique
/// for the full 4-tuple, so each source address offers all ephemeral ports per destination.
pub fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an option value of the size we pass.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const enable).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn timeout_cause(connected: bool) -> Cause {
    if connected {
        Cause::HandshakeTimeout
    } else {
        Cause::ConnectTimeout
    }
}

/// The cause of a failure to create, bind or connect a socket.
pub fn connect_cause(error: &io::Error) -> Cause {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => Cause::ConnectRefused,
        Some(libc::ETIMEDOUT) => Cause::ConnectTimeout,
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => Cause::ConnectReset,
        Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Cause::ConnectNoPort,
        Some(libc::EMFILE | libc::ENFILE) => Cause::ConnectNoDescriptor,
        _ => {
            log_unexpected("connect", error);
            Cause::ConnectOther
        }
    }
}

/// The cause of a failure once connected but before the upgrade completed.
fn handshake_cause(error: &io::Error, tls: Option<&ClientConnection>) -> Cause {
    match error.raw_os_error() {
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => closed_cause(tls),
        _ => {
            log_unexpected("handshake", error);
            closed_cause(tls)
        }
    }
}

/// A close from the server before we end is counted as `closed_early`; the first few are
/// printed with their code and reason, which usually say why.
fn log_close(frame: Option<&CloseFrame>) {
    const LOGGED_MAX: usize = 3;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        let (code, reason) = frame.map_or((0, ""), |frame| (u16::from(frame.code), &*frame.reason));
        eprintln!(
            "worker {}: the server closed a connection: code {code} {reason:?}",
            std::process::id()
        );
    }
}

/// Unexpected errors are counted under an "other" cause; the first few are printed so that a
/// new kind of failure is seen, without flooding stderr with thousands of copies.
fn log_unexpected(stage: &str, error: &io::Error) {
    const LOGGED_MAX: usize = 5;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        eprintln!(
            "worker {}: unexpected {stage} error: {error}",
            std::process::id()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs name a scheme (TLS or not), an IPv4 address, a port (80, or 443 with TLS) and a
    /// path; nothing else is taken.
    #[test]
    fn parses_targets() {
        let target = Target::parse("ws://127.0.0.1:9100/ws").unwrap();
        assert_eq!(target.address, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(target.uri.path(), "/ws");
        assert!(!target.is_secure());
        assert_eq!(Target::parse("ws://127.0.0.2/").unwrap().address.port(), 80);
        assert_eq!(
            Target::parse("http://127.0.0.2/").unwrap().address.port(),
            80
        );
        let secure = Target::parse("wss://127.0.0.1:9443/ws").unwrap();
        assert!(secure.is_secure());
        assert_eq!(secure.address.port(), 9443);
        assert_eq!(
            Target::parse("wss://127.0.0.2/").unwrap().address.port(),
            443
        );
        assert!(Target::parse("https://127.0.0.2/").unwrap().is_secure());
        assert!(Target::parse("ftp://127.0.0.1:9100/ws").is_err());
        assert!(Target::parse("ws://localhost:9100/ws").is_err());
        assert!(Target::parse("127.0.0.1:9100").is_err());
    }

    /// A wss:// target needs --ca and a plain one refuses it; the CA file is read up front
    /// and the server name defaults to the URL's host.
    #[test]
    fn tls_settings_follow_the_scheme() {
        let directory = tempfile::tempdir().unwrap();
        let ca_path = directory.path().join("ca.pem");
        let ca = crate::transport::tests::TestCertificates::new();
        std::fs::write(&ca_path, ca.ca_pem()).unwrap();
        let plain = Target::parse("ws://127.0.0.1:9100/ws").unwrap();
        let secure = Target::parse("wss://127.0.0.1:9443/ws").unwrap();
        assert_eq!(plain.tls_plan(None, None).unwrap(), None);
        assert!(plain.tls_plan(Some(&ca_path), None).is_err());
        assert!(secure.tls_plan(None, None).is_err());
        let missing = directory.path().join("missing.pem");
        assert!(secure.tls_plan(Some(&missing), None).is_err());
        let plan = secure.tls_plan(Some(&ca_path), None).unwrap().unwrap();
        assert_eq!(plan.server_name, "127.0.0.1");
        let named = secure.tls_plan(Some(&ca_path), Some("localhost")).unwrap();
        assert_eq!(named.unwrap().server_name, "localhost");
        assert!(secure.clone().with_tls(None).is_err());
        assert!(plain.clone().with_tls(Some(&plan)).is_err());
        assert!(secure.with_tls(Some(&plan)).unwrap().tls.is_some());
    }

    /// Errors map to the causes the report names.
    #[test]
    fn maps_errors_to_causes() {
        let cause = |errno| connect_cause(&io::Error::from_raw_os_error(errno));
        assert_eq!(cause(libc::ECONNREFUSED), Cause::ConnectRefused);
        assert_eq!(cause(libc::ETIMEDOUT), Cause::ConnectTimeout);
        assert_eq!(cause(libc::ECONNRESET), Cause::ConnectReset);
        assert_eq!(cause(libc::EADDRNOTAVAIL), Cause::ConnectNoPort);
        assert_eq!(cause(libc::EMFILE), Cause::ConnectNoDescriptor);
        assert_eq!(cause(libc::EPERM), Cause::ConnectOther);
        assert_eq!(timeout_cause(false), Cause::ConnectTimeout);
        assert_eq!(timeout_cause(true), Cause::HandshakeTimeout);
    }

    /// A refused connect surfaces as ConnectRefused through the parked io_uring write, and a
    /// listener that accepts but never answers gives a handshake timeout.
    #[test]
    fn connect_failures_are_classified() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = Target::parse(&format!("ws://{}/ws", listener.local_addr().unwrap())).unwrap();
        let closed_port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let refused = Target::parse(&format!("ws://{closed_port}/ws")).unwrap();
        let sizes = Sizes {
            read_bytes: 512,
            codec_read_bytes: 512,
        };
        tokio_uring::start(async {
            let source = Ipv4Addr::new(127, 0, 3, 7);
            let soon = Instant::now() + std::time::Duration::from_secs(5);
            let result = open(&refused, source, sizes, soon).await;
            assert_eq!(result.err(), Some(Cause::ConnectRefused));
            let brief = Instant::now() + std::time::Duration::from_millis(200);
            let result = open(&silent, source, sizes, brief).await;
            assert_eq!(result.err(), Some(Cause::HandshakeTimeout));
        });
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 3, 7)));
        drop(accepted);
    }
}
