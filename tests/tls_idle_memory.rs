//! Proves an idle TLS connection keeps little of the heap once its handshake is over: the
//! bytes a `Box<TlsConnection>` (as the transport holds it) frees when dropped, counted in both
//! allocators of the process, Rust's and aws-lc's own C allocator, for every suite and both
//! versions. This is the part of the server's RSS per idle wss connection that TLS adds
//! (`tests/server_memory_tls.rs` measures the whole).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Algorithm, CHACHA20_POLY1305};
use aws_lc_rs::aead::{LessSafeKey, UnboundKey};
use ringcast::transport::tls::certificates::server_config;
use ringcast::transport::tls::certificates::{CertificatePaths, Certificates, provider};
use ringcast::transport::tls::{ReadOutcome, TlsConnection, TlsWorkspace};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite};

mod support;

use support::tls::TestPki;

/// The budget of heap per idle TLS connection, its box included. The server's whole budget
/// per idle connection is 2 KiB of RSS (issue 12), of which the plain connection's state takes
/// about 240 B; this keeps room for the allocator's rounding.
const IDLE_BYTES_MAX: i64 = 1_536;

thread_local! {
    /// Bytes freed by this thread, in either allocator.
    static FREED_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count_freed(bytes: i64) {
    let _ = FREED_BYTES.try_with(|freed| freed.set(freed.get() + bytes));
}

struct FreeCountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// const-initialised thread-local, which never allocates.
unsafe impl GlobalAlloc for FreeCountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        count_freed(layout.size() as i64);
        // SAFETY: `pointer` came from `System.alloc` with this layout.
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_freed(layout.size() as i64 - new_size as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: FreeCountingAllocator = FreeCountingAllocator;

unsafe extern "C" fn crypto_malloc(size: usize, _file: *const c_char, _line: c_int) -> *mut c_void {
    // SAFETY: plain malloc; aws-lc frees it with `crypto_free` below.
    unsafe { libc::malloc(size) }
}

unsafe extern "C" fn crypto_realloc(
    pointer: *mut c_void,
    size: usize,
    _file: *const c_char,
    _line: c_int,
) -> *mut c_void {
    // SAFETY: `pointer` came from `crypto_malloc` or `crypto_realloc` (or is null).
    unsafe { libc::realloc(pointer, size) }
}

unsafe extern "C" fn crypto_free(pointer: *mut c_void, _file: *const c_char, _line: c_int) {
    // aws-lc does not say how large the block was: malloc does. Its usable size may exceed the
    // size asked for by a few bytes of rounding, which a real allocator charges too.
    if !pointer.is_null() {
        // SAFETY: `pointer` came from `crypto_malloc` or `crypto_realloc` and is still live.
        count_freed(unsafe { libc::malloc_usable_size(pointer) } as i64);
    }
    // SAFETY: `pointer` came from `crypto_malloc` or `crypto_realloc` (or is null).
    unsafe { libc::free(pointer) }
}

/// Routes aws-lc's allocations through the functions above, before aws-lc allocates anything.
fn count_crypto_allocations() {
    // SAFETY: the first thing the only test does, before any aws-lc allocation in this process
    // (aws-lc allocates only when first used); the three functions form a matching set.
    let installed = unsafe {
        aws_lc_sys::CRYPTO_set_mem_functions(
            Some(crypto_malloc),
            Some(crypto_realloc),
            Some(crypto_free),
        )
    };
    assert_eq!(installed, 1, "aws-lc refused the allocation functions");
}

/// The bytes `value` frees when dropped, in both allocators.
fn freed_by_drop<T>(value: T) -> i64 {
    let before = FREED_BYTES.with(Cell::get);
    drop(value);
    FREED_BYTES.with(Cell::get) - before
}

/// A rustls client and a server connection joined in memory, their handshake done and one
/// message carried each way: an idle connection that has been served.
fn idle_server(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> TlsConnection {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(Arc::clone(client), name).unwrap();
    let mut server = TlsConnection::new(server).unwrap();
    let mut workspace = TlsWorkspace::default();
    let mut received = Vec::new();
    let mut queue = b"welcome".to_vec();
    for round in 0..4 {
        if round == 3 {
            client.writer().write_all(b"hello").unwrap();
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            let outcome = server.handle_read(&mut wire, &mut workspace, |plain| {
                received.extend_from_slice(plain)
            });
            assert_eq!(outcome, ReadOutcome::Open);
        }
        if round == 3 {
            server.seal(&mut workspace, queue.len(), |out| {
                let count = out.len().min(queue.len());
                out[..count].copy_from_slice(&queue[..count]);
                queue.drain(..count);
                count
            });
        }
        while let Some(bytes) = server.start_send() {
            let sent = bytes.len();
            let mut rest = bytes;
            while !rest.is_empty() {
                client.read_tls(&mut rest).unwrap();
                client.process_new_packets().unwrap();
            }
            server.complete_send(sent, &mut workspace);
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(received, b"hello");
    let mut plaintext = [0u8; 64];
    let count = match client.reader().read(&mut plaintext) {
        Ok(count) => count,
        Err(error) if error.kind() == ErrorKind::WouldBlock => 0,
        Err(error) => panic!("client read: {error}"),
    };
    assert_eq!(&plaintext[..count], b"welcome");
    assert_eq!(server.held_bytes(), 0, "idle: no buffer held");
    server
}

fn client_config(
    pki: &TestPki,
    version: &'static rustls::SupportedProtocolVersion,
    suite: SupportedCipherSuite,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![suite];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The bytes one aws-lc AEAD key of `algorithm` holds, as the record layer keeps it.
fn aead_key_bytes(algorithm: &'static Algorithm) -> i64 {
    let key = vec![7u8; algorithm.key_len()];
    freed_by_drop(LessSafeKey::new(UnboundKey::new(algorithm, &key).unwrap()))
}

/// Proves an idle TLS connection (as `Box<TlsConnection>`) holds at most `IDLE_BYTES_MAX` of
/// heap in either allocator, for each suite of TLS 1.3 and TLS 1.2 the server offers.
#[test]
fn idle_tls_connection_holds_little_heap() {
    count_crypto_allocations();
    let pki = TestPki::new("idle-memory");
    let paths = CertificatePaths {
        certificate: pki.certificate_path.clone(),
        private_key: pki.key_path.clone(),
    };
    let (certificates, _) = Certificates::load(paths, provider()).unwrap();
    let server = server_config(Arc::new(certificates)).unwrap();
    for (name, algorithm) in [
        ("AES-128-GCM", &AES_128_GCM),
        ("AES-256-GCM", &AES_256_GCM),
        ("ChaCha20-Poly1305", &CHACHA20_POLY1305),
    ] {
        eprintln!("one {name} key: {} B", aead_key_bytes(algorithm));
    }
    let box_bytes = size_of::<TlsConnection>() as i64;
    let mut over = Vec::new();
    // The test certificate is ECDSA: TLS 1.2's ECDHE_RSA suites cannot be served with it.
    let provider = provider();
    let suites = provider.cipher_suites.iter().copied();
    for suite in suites.filter(|suite| !format!("{:?}", suite.suite()).contains("_RSA_")) {
        let client = client_config(&pki, suite.version(), suite);
        let idle = Box::new(idle_server(&server, &client));
        let bytes = freed_by_drop(idle);
        eprintln!(
            "idle {:?}: {bytes} B ({box_bytes} B of them the box)",
            suite.suite()
        );
        if bytes > IDLE_BYTES_MAX {
            over.push(format!("{:?}: {bytes} B", suite.suite()));
        }
    }
    assert!(
        over.is_empty(),
        "over {IDLE_BYTES_MAX} B per idle TLS connection: {over:?}"
    );
}
