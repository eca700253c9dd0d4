//! TLS for the tests: certificates made at test time with rcgen (no private key is committed),
//! written as PEM files the server reads, and rustls clients that verify the server against
//! the test CA and the name `localhost` / address 127.0.0.1.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::WebSocket;

use super::server::{READ_WAIT, RawClient, ServerProcess, upgrade_request};

/// A client's TLS stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A test CA and a server certificate it signed, as PEM files in a directory of their own.
pub struct TestPki {
    pub directory: PathBuf,
    /// The CA certificate: what clients trust.
    pub ca_path: PathBuf,
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    pub ca: CertificateDer<'static>,
    /// The server certificate, as the server should present it.
    pub certificate: CertificateDer<'static>,
}

impl TestPki {
    /// A fresh CA and server certificate (ECDSA P-256, valid for `localhost` and 127.0.0.1)
    /// under the test target's temporary directory, in `name`.
    pub fn new(name: &str) -> TestPki {
        let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let mut pki = TestPki {
            ca_path: directory.join("ca.pem"),
            certificate_path: directory.join("certificate.pem"),
            key_path: directory.join("key.pem"),
            directory,
            ca: CertificateDer::from(Vec::new()),
            certificate: CertificateDer::from(Vec::new()),
        };
        pki.issue();
        pki
    }

    /// Makes a new CA and server certificate and writes them over the files (the server reads
    /// them again on SIGHUP). Clients built afterwards trust only the new CA.
    pub fn issue(&mut self) {
        self.issue_valid_for(-1, 30);
    }

    /// [`TestPki::issue`] with a server certificate valid from `from_days` to `to_days` days
    /// from now (negative: in the past).
    pub fn issue_valid_for(&mut self, from_days: i64, to_days: i64) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringcast test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let certificate = params.signed_by(&key, &ca).unwrap();
        std::fs::write(&self.ca_path, ca.pem()).unwrap();
        std::fs::write(&self.certificate_path, certificate.pem()).unwrap();
        std::fs::write(&self.key_path, key.serialize_pem()).unwrap();
        self.ca = ca.der().clone();
        self.certificate = certificate.der().clone();
    }

    /// The flags that give a server this certificate on an ephemeral TLS port.
    pub fn server_arguments(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-certificate".into(),
            self.certificate_path.display().to_string(),
            "--tls-private-key".into(),
            self.key_path.display().to_string(),
        ]
    }

    /// Starts a server with TLS and `arguments` added.
    pub fn start_server(&self, arguments: &[&str]) -> ServerProcess {
        let tls = self.server_arguments();
        let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
        all.extend_from_slice(arguments);
        ServerProcess::start(&all)
    }

    /// A client configuration trusting this CA: TLS 1.3 and 1.2, ALPN http/1.1, and rustls'
    /// default resumption (a shared configuration resumes with the tickets it was sent).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_for(&[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    pub fn client_config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A TLS connection to `address` with its handshake done (the server verified as
/// `localhost`), with the standard read and write timeouts.
pub fn connect_tls(address: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    try_connect_tls(address, config).unwrap_or_else(|error| panic!("TLS handshake: {error}"))
}

/// [`connect_tls`], returning the handshake's error.
pub fn try_connect_tls(address: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let socket = TcpStream::connect(address)?;
    socket.set_read_timeout(Some(READ_WAIT))?;
    socket.set_write_timeout(Some(READ_WAIT))?;
    socket.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Opens `count` WebSockets over TLS at `path` from `thread_count` threads at once: each
/// handshake waits for the server's answer, and one thread alone would leave the server's
/// shards idle between them. The connections come back in no particular order.
pub fn open_wss(
    address: SocketAddr,
    path: &str,
    count: usize,
    config: &Arc<ClientConfig>,
    thread_count: usize,
) -> Vec<RawClient<TlsStream>> {
    let request = upgrade_request(path);
    let request = request.as_bytes();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..thread_count)
            .map(|thread_index| {
                let share = count / thread_count + usize::from(thread_index < count % thread_count);
                scope.spawn(move || {
                    let open = |_| {
                        let mut client = RawClient::over(connect_tls(address, config));
                        client.write(request);
                        client.expect_upgraded();
                        client
                    };
                    (0..share).map(open).collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a thread opening connections"))
            .collect()
    })
}

/// A tungstenite WebSocket over TLS, upgraded at `path`.
pub fn connect_wss(
    address: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
) -> WebSocket<TlsStream> {
    let stream = connect_tls(address, config);
    let (socket, response) =
        tungstenite::client(format!("wss://localhost:{}{path}", address.port()), stream)
            .unwrap_or_else(|error| panic!("upgrading at {path}: {error}"));
    assert_eq!(response.status(), 101);
    socket
}

/// Sends one HTTP/1.1 request over TLS and reads the response to the end of the connection
/// (the request asks to close): status line, headers and body as text.
pub fn https_request(address: SocketAddr, config: &Arc<ClientConfig>, request: &str) -> String {
    let mut stream = connect_tls(address, config);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(error) => panic!("reading the response: {error} after {response:?}"),
    }
    String::from_utf8(response).expect("a text response")
}

/// A relay from plain TCP to the server's TLS listener, for tools without TLS (kosoku): each
/// connection it accepts is carried over a TLS connection of its own, byte for byte.
pub struct TlsRelay {
    pub address: SocketAddr,
}

impl TlsRelay {
    pub fn start(tls_address: SocketAddr, config: Arc<ClientConfig>) -> TlsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for plain in listener.incoming() {
                let Ok(plain) = plain else { continue };
                let config = Arc::clone(&config);
                std::thread::spawn(move || relay(plain, tls_address, &config));
            }
        });
        TlsRelay { address }
    }
}

/// Carries one connection: the plain side's bytes are sealed onto the TLS side by this thread,
/// the TLS side's records are opened onto the plain side by a second one. Either end closing
/// closes the other.
fn relay(plain: TcpStream, tls_address: SocketAddr, config: &Arc<ClientConfig>) {
    let Ok(tls) = try_connect_tls(tls_address, config) else {
        return;
    };
    let StreamOwned { conn, sock } = tls;
    let _ = sock.set_read_timeout(None);
    let connection = Arc::new(Mutex::new(conn));
    let (tls_reader, plain_writer) = (sock.try_clone().unwrap(), plain.try_clone().unwrap());
    let inbound = {
        let connection = Arc::clone(&connection);
        std::thread::spawn(move || tls_to_plain(tls_reader, plain_writer, &connection))
    };
    let mut plain_reader = plain;
    let mut tls_writer = sock;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let count = match plain_reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        let mut connection = connection.lock().unwrap();
        if connection.writer().write_all(&chunk[..count]).is_err() {
            break;
        }
        if write_all_tls(&mut connection, &mut tls_writer).is_err() {
            break;
        }
    }
    {
        let mut connection = connection.lock().unwrap();
        connection.send_close_notify();
        let _ = write_all_tls(&mut connection, &mut tls_writer);
    }
    let _ = tls_writer.shutdown(Shutdown::Write);
    let _ = inbound.join();
}

fn tls_to_plain(
    mut tls_reader: TcpStream,
    mut plain_writer: TcpStream,
    connection: &Mutex<ClientConnection>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut plaintext = vec![0u8; 64 * 1024];
    'reading: loop {
        let count = match tls_reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        let mut rest = &chunk[..count];
        let mut connection = connection.lock().unwrap();
        while !rest.is_empty() {
            if connection.read_tls(&mut rest).is_err() || connection.process_new_packets().is_err()
            {
                break 'reading;
            }
            loop {
                match connection.reader().read(&mut plaintext) {
                    Ok(0) => break 'reading,
                    Ok(count) => {
                        if plain_writer.write_all(&plaintext[..count]).is_err() {
                            break 'reading;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break 'reading,
                }
            }
        }
        // Key updates and alerts rustls owes the server.
        if write_all_tls(&mut connection, &mut tls_reader).is_err() {
            break;
        }
    }
    let _ = plain_writer.shutdown(Shutdown::Write);
}

fn write_all_tls(connection: &mut ClientConnection, socket: &mut TcpStream) -> io::Result<()> {
    while connection.wants_write() {
        connection.write_tls(socket)?;
    }
    Ok(())
}

/// The sum over shards of the series `name` (with its labels, as in
/// `ringcast_tls_handshakes_total{kind="full"}`) in the plain listener's `GET /metrics`.
pub fn metric_total(plain_address: SocketAddr, series: &str) -> u64 {
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let mut stream = TcpStream::connect(plain_address).unwrap();
    stream.set_read_timeout(Some(READ_WAIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.is_empty() || line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
