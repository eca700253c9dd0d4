//! Proves TLS keeps the shard's hot path free of allocations: an in-process server echoes
//! 5,000 messages over TLS with zero heap allocations after warm-up, and a two-shard broker
//! fans out 2,000 publishes (received over TLS) to TLS subscribers with no allocation per
//! delivery: the same count with 16 subscribers as with 4, at most the two of each published
//! message's own buffer.
//!
//! Counting covers both allocators in the process: Rust's (a counting global allocator) and
//! aws-lc's own C allocations (routed through the same counter with
//! `CRYPTO_set_mem_functions`, set before aws-lc allocates anything). The clients are rustls
//! connections on this test's thread, which marks itself: only allocations on the server's
//! threads are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringcast::config::{BrokerConfig, ServerConfig};
use ringcast::protocol::websocket::frame::{OpCode, encode_masked_frame};
use ringcast::server::Server;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's own thread, whose allocations (the clients') are not the server's.
    static CLIENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) && !CLIENT_THREAD.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; the counters are atomics and
// the thread-local is const-initialized (reading it never allocates).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System.alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// aws-lc's allocation functions, counted like Rust's.
unsafe extern "C" fn crypto_malloc(size: usize, _file: *const c_char, _line: c_int) -> *mut c_void {
    count();
    // SAFETY: plain malloc; aws-lc frees it with `crypto_free` below.
    unsafe { libc::malloc(size) }
}

unsafe extern "C" fn crypto_realloc(
    pointer: *mut c_void,
    size: usize,
    _file: *const c_char,
    _line: c_int,
) -> *mut c_void {
    count();
    // SAFETY: `pointer` came from `crypto_malloc` or `crypto_realloc` (or is null).
    unsafe { libc::realloc(pointer, size) }
}

unsafe extern "C" fn crypto_free(pointer: *mut c_void, _file: *const c_char, _line: c_int) {
    // SAFETY: `pointer` came from `crypto_malloc` or `crypto_realloc` (or is null).
    unsafe { libc::free(pointer) }
}

/// Routes aws-lc's allocations through the counter: once, before aws-lc allocates anything
/// (every test calls it first, under the lock), and checked to reach the aws-lc that
/// aws-lc-rs links (a key made afterwards is counted).
fn count_crypto_allocations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: called before any aws-lc allocation in this process (aws-lc allocates only
        // when first used, and nothing has used it yet); the three functions form a matching
        // malloc/realloc/free set.
        let installed = unsafe {
            aws_lc_sys::CRYPTO_set_mem_functions(
                Some(crypto_malloc),
                Some(crypto_realloc),
                Some(crypto_free),
            )
        };
        assert_eq!(installed, 1, "aws-lc refused the allocation functions");
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let key = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_128_GCM, &[7; 16]);
        COUNTING.store(false, Ordering::SeqCst);
        drop(key);
        assert!(
            ALLOCATIONS.load(Ordering::SeqCst) > before,
            "aws-lc's allocations are not counted: a second aws-lc-sys version is linked?"
        );
    });
}

/// The tests share the counters: they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A CA-signed certificate for `localhost`, written as PEM files; returns their paths and the
/// client configuration that trusts the CA.
fn certificates(name: &str) -> (PathBuf, PathBuf, Arc<ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    let directory = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("allocations-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let (certificate_path, key_path) = (directory.join("cert.pem"), directory.join("key.pem"));
    std::fs::write(&certificate_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (certificate_path, key_path, Arc::new(config))
}

fn server_config(name: &str, shards: usize, echo: bool) -> (ServerConfig, Arc<ClientConfig>) {
    let (certificate, key, client) = certificates(name);
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_certificate: certificate,
        tls_private_key: key,
        shards,
        echo,
        // Subscribers only read: on a loaded machine the run can outlast the default 30 s of
        // idleness, and a ping then arrives where the test reads a message.
        idle_timeout_ms: 3_600_000,
        broker: BrokerConfig {
            history_messages_max: 256,
            ..BrokerConfig::default()
        },
        ..ServerConfig::default()
    };
    (config, client)
}

/// A TLS connection upgraded to a WebSocket at `path` (the 101's head read and dropped).
fn upgraded(address: SocketAddr, config: &Arc<ClientConfig>, path: &str) -> TlsStream {
    let socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut stream = StreamOwned::new(connection, socket);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut tail = [0u8; 4];
    while &tail != b"\r\n\r\n" {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        tail.rotate_left(1);
        tail[3] = byte[0];
    }
    stream
}

/// Reads one unmasked text frame shorter than 126 bytes into `buffer`; returns its payload.
fn read_small_frame<'a>(stream: &mut TlsStream, buffer: &'a mut [u8; 128]) -> &'a [u8] {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a final text frame");
    let length = usize::from(head[1]);
    assert!(length < 126);
    stream.read_exact(&mut buffer[..length]).unwrap();
    &buffer[..length]
}

/// Counts the server's allocations while `work` runs.
fn count_server_allocations(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    work();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Proves zero heap allocations in the server (Rust's or aws-lc's) while it opens, echoes and
/// seals 5,000 messages over TLS after warm-up.
#[test]
fn tls_echo_allocates_nothing_after_warm_up() {
    const ROUNDS: usize = 5_000;
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    count_crypto_allocations();
    CLIENT_THREAD.with(|client| client.set(true));
    let (config, client) = server_config("echo", 1, true);
    let server = Server::start(config).unwrap();
    let mut stream = upgraded(server.tls_local_address().unwrap(), &client, "/echo");
    let message = br#"{"topic":"AAPL","px":191.2}"#;
    let mut frame = Vec::new();
    encode_masked_frame(OpCode::Text, true, message, [1, 2, 3, 4], &mut frame);
    let mut echo = vec![0u8; 2 + message.len()];
    let mut rounds = |stream: &mut TlsStream| {
        for _ in 0..ROUNDS {
            stream.write_all(&frame).unwrap();
            stream.read_exact(&mut echo).unwrap();
            assert_eq!(&echo[2..], message);
        }
    };
    rounds(&mut stream);
    let allocations = count_server_allocations(|| rounds(&mut stream));
    drop(stream);
    server.shutdown().unwrap();
    assert_eq!(
        allocations, 0,
        "server allocations while echoing {ROUNDS} messages over TLS"
    );
}

/// Proves no allocation per delivery when a two-shard broker fans out over TLS: publishes
/// received over TLS and delivered to TLS subscribers cost the same with 16 subscribers as
/// with 4, at most the two of each message's own buffer.
#[test]
fn tls_fanout_allocates_nothing_per_delivery() {
    const ROUNDS: usize = 2_000;
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    count_crypto_allocations();
    CLIENT_THREAD.with(|client| client.set(true));
    let (config, client) = server_config("fanout", 2, false);
    let server = Server::start(config).unwrap();
    let address = server.tls_local_address().unwrap();
    let subscribe = |count: usize| -> Vec<TlsStream> {
        let request = br#"{"op":"subscribe","topics":["AAPL"]}"#;
        let mut frame = Vec::new();
        encode_masked_frame(OpCode::Text, true, request, [9, 8, 7, 6], &mut frame);
        let mut buffer = [0u8; 128];
        (0..count)
            .map(|_| {
                let mut subscriber = upgraded(address, &client, "/ws");
                subscriber.write_all(&frame).unwrap();
                let reply = read_small_frame(&mut subscriber, &mut buffer);
                assert!(reply.starts_with(br#"{"op":"subscribed""#));
                subscriber
            })
            .collect()
    };
    let mut subscribers = subscribe(4);
    let mut publisher = upgraded(address, &client, "/ws");
    let mut frame = Vec::new();
    let publish = br#"{"op":"publish","topic":"AAPL","data":{"px":191.2}}"#;
    encode_masked_frame(OpCode::Text, true, publish, [1, 2, 3, 4], &mut frame);
    let mut rounds = |subscribers: &mut [TlsStream]| {
        let mut buffer = [0u8; 128];
        for _ in 0..ROUNDS {
            publisher.write_all(&frame).unwrap();
            for subscriber in subscribers.iter_mut() {
                let payload = read_small_frame(subscriber, &mut buffer);
                assert!(payload.starts_with(br#"{"topic":"AAPL","seq":"#));
            }
        }
    };
    rounds(&mut subscribers);
    let with_four = count_server_allocations(|| rounds(&mut subscribers));
    subscribers.extend(subscribe(12));
    rounds(&mut subscribers);
    let with_sixteen = count_server_allocations(|| rounds(&mut subscribers));
    drop(publisher);
    drop(subscribers);
    server.shutdown().unwrap();
    assert!(
        with_four <= 2 * ROUNDS as u64,
        "{with_four} server allocations for {ROUNDS} publishes to 4 TLS subscribers"
    );
    assert_eq!(
        with_four, with_sixteen,
        "allocations that grow with the subscribers are allocations per delivery"
    );
}
