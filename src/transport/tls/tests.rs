//! The TLS connection without sockets: a rustls client and a [`TlsConnection`] exchange bytes in
//! memory (quinn's `Pair`), cut at any point, so that the handshake, the record layer and every
//! refusal can be checked against an independent implementation.

use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig};

use super::certificates::{CertificatePaths, Certificates, provider, server_config};
use super::record::Version;
use super::{ReadOutcome, Sealed, TlsConnection, TlsWorkspace};

/// A CA and a server certificate it signed for `localhost`, written as PEM files.
struct Pki {
    paths: CertificatePaths,
    ca: CertificateDer<'static>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    let directory = std::env::temp_dir().join(format!(
        "ringcast-tls-unit-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&directory).unwrap();
    let write = |name: &str, text: String| -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        paths: CertificatePaths {
            certificate: write("certificate.pem", certificate.pem()),
            private_key: write("key.pem", key.serialize_pem()),
        },
        ca: ca.der().clone(),
    }
}

struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn configs(version: Version) -> Configs {
    configs_with_suites(version, |_| true)
}

/// Configurations whose client offers only the suites `offered` keeps.
fn configs_with_suites(
    version: Version,
    offered: impl Fn(&rustls::SupportedCipherSuite) -> bool,
) -> Configs {
    let pki = pki();
    let (certificates, _) = Certificates::load(pki.paths, provider()).unwrap();
    let server = server_config(Arc::new(certificates)).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        Version::Tls13 => &[&rustls::version::TLS13],
        Version::Tls12 => &[&rustls::version::TLS12],
    };
    let mut client_provider = (*provider()).clone();
    client_provider.cipher_suites.retain(offered);
    let mut client = ClientConfig::builder_with_provider(Arc::new(client_provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Tests that send what rustls never sends seal it with the client's own keys.
    client.enable_secret_extraction = true;
    Configs {
        server,
        client: Arc::new(client),
    }
}

/// A client and a server connection joined in memory.
struct Pair {
    client: ClientConnection,
    server: TlsConnection,
    workspace: TlsWorkspace,
    /// Plaintext the server's endpoint was handed.
    server_received: Vec<u8>,
    /// Plaintext waiting to be sealed by the server.
    server_queue: Vec<u8>,
    /// Plaintext the client decrypted.
    client_received: Vec<u8>,
}

impl Pair {
    fn new(configs: &Configs) -> Pair {
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: ClientConnection::new(Arc::clone(&configs.client), name).unwrap(),
            server: TlsConnection::new(&configs.server).unwrap(),
            workspace: TlsWorkspace::default(),
            server_received: Vec::new(),
            server_queue: Vec::new(),
            client_received: Vec::new(),
        }
    }

    /// A pair that has finished its handshake.
    fn connected(configs: &Configs) -> Pair {
        let mut pair = Pair::new(configs);
        pair.handshake();
        pair
    }

    fn handshake(&mut self) {
        for _ in 0..10 {
            assert_eq!(self.client_to_server(usize::MAX), ReadOutcome::Open);
            self.server_to_client().unwrap();
            if !self.client.is_handshaking() && !self.server.is_handshaking() {
                return;
            }
        }
        panic!("the handshake did not finish");
    }

    /// What the client has to send, as the wire would carry it.
    fn client_wire(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// Sends the client's bytes to the server in reads of `chunk_bytes`.
    fn client_to_server(&mut self, chunk_bytes: usize) -> ReadOutcome {
        let wire = self.client_wire();
        self.feed_server(&wire, chunk_bytes)
    }

    fn feed_server(&mut self, wire: &[u8], chunk_bytes: usize) -> ReadOutcome {
        let mut outcome = ReadOutcome::Open;
        for piece in wire.chunks(chunk_bytes.max(1)) {
            let mut bytes = piece.to_vec();
            let received = &mut self.server_received;
            outcome = self
                .server
                .handle_read(&mut bytes, &mut self.workspace, |plain| {
                    received.extend_from_slice(plain)
                });
            if outcome != ReadOutcome::Open {
                break;
            }
        }
        outcome
    }

    /// Seals what the server has queued and sends every byte of ciphertext to the client, as
    /// the shard would (one send at a time). Returns the wire bytes, or the client's error.
    fn server_to_client(&mut self) -> Result<Vec<u8>, rustls::Error> {
        let wire = self.server_wire(usize::MAX);
        self.feed_client(&wire)?;
        Ok(wire)
    }

    /// Hands `wire` to the client, taking its plaintext out as it comes (its buffer is small).
    fn feed_client(&mut self, wire: &[u8]) -> Result<(), rustls::Error> {
        let mut rest = wire;
        while !rest.is_empty() {
            self.client.read_tls(&mut rest).unwrap();
            self.client.process_new_packets()?;
            self.drain_client();
        }
        self.client.process_new_packets()?;
        self.drain_client();
        Ok(())
    }

    fn drain_client(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.client.reader().read(&mut chunk) {
                Ok(0) => return,
                Ok(count) => self.client_received.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => panic!("client read: {error}"),
            }
        }
    }

    /// The server's ciphertext, sent in sends that write at most `send_bytes` each.
    fn server_wire(&mut self, send_bytes: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            let queue = &mut self.server_queue;
            let sealed = self.server.seal(&mut self.workspace, queue.len(), |out| {
                let count = out.len().min(queue.len());
                out[..count].copy_from_slice(&queue[..count]);
                queue.drain(..count);
                count
            });
            assert_ne!(sealed, Sealed::NoBuffer);
            let Some(bytes) = self.server.start_send() else {
                return wire;
            };
            let sent = bytes.len().min(send_bytes);
            wire.extend_from_slice(&bytes[..sent]);
            self.server.complete_send(sent, &mut self.workspace);
        }
    }

    /// Everything the client has decrypted so far.
    fn client_plaintext(&mut self) -> Vec<u8> {
        self.drain_client();
        std::mem::take(&mut self.client_received)
    }
}

fn message(bytes: usize, seed: u8) -> Vec<u8> {
    (0..bytes)
        .map(|index| (index as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Proves both versions complete a handshake and carry data both ways, in reads cut at every
/// size from one byte to whole flights, and that a connection with nothing in flight holds no
/// buffer.
#[test]
fn data_flows_both_ways_in_any_cut() {
    for version in [Version::Tls13, Version::Tls12] {
        let configs = configs(version);
        for chunk_bytes in [1, 5, 7, 300, 4096, usize::MAX] {
            let mut pair = Pair::connected(&configs);
            assert_eq!(pair.server.version(), Some(version));
            assert_eq!(pair.server.held_bytes(), 0, "idle after the handshake");
            let mut sent = Vec::new();
            for (index, bytes) in [1, 100, 5000, 16_384, 40_000].into_iter().enumerate() {
                let data = message(bytes, index as u8);
                pair.client.writer().write_all(&data).unwrap();
                sent.extend_from_slice(&data);
            }
            assert_eq!(pair.client_to_server(chunk_bytes), ReadOutcome::Open);
            assert_eq!(
                pair.server_received, sent,
                "{version:?} in reads of {chunk_bytes}"
            );
            assert_eq!(pair.server.held_bytes(), 0, "no record left half read");
            let reply = message(70_000, 9);
            pair.server_queue.extend_from_slice(&reply);
            pair.server_to_client().unwrap();
            assert_eq!(pair.client_plaintext(), reply);
            assert_eq!(pair.server.held_bytes(), 0, "idle once sent");
        }
    }
}

/// Proves partial sends resume where they stopped.
#[test]
fn partial_sends_resume() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs);
    let reply = message(100_000, 3);
    pair.server_queue.extend_from_slice(&reply);
    let wire = pair.server_wire(1000);
    pair.feed_client(&wire).unwrap();
    assert_eq!(pair.client_plaintext(), reply);
}

/// Proves application data sent with the client's last handshake flight reaches the endpoint.
#[test]
fn data_with_the_last_flight_is_read() {
    for version in [Version::Tls13, Version::Tls12] {
        let configs = configs(version);
        let mut pair = Pair::new(&configs);
        assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
        pair.server_to_client().unwrap();
        if version == Version::Tls12 {
            // TLS 1.2: the client's Finished, then the server's.
            assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
            pair.server_to_client().unwrap();
        }
        pair.client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
        assert!(!pair.server.is_handshaking());
        assert_eq!(
            pair.server_received, b"GET / HTTP/1.1\r\n\r\n",
            "{version:?}"
        );
    }
}

/// Proves a second handshake resumes from the ticket of the first, for both versions.
#[test]
fn second_handshake_resumes() {
    for version in [Version::Tls13, Version::Tls12] {
        let configs = configs(version);
        let mut first = Pair::connected(&configs);
        first.client.writer().write_all(b"x").unwrap();
        first.client_to_server(usize::MAX);
        first.server_to_client().unwrap();
        assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
        let second = Pair::connected(&configs);
        assert_eq!(
            second.client.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
        assert_eq!(second.workspace.counters.handshakes_resumed, 1);
    }
}

/// Proves a client that sends close_notify right behind its Finished, so that one read carries
/// both, still gets the session tickets before the close: its next handshake resumes.
#[test]
fn close_notify_behind_the_finished_still_gets_the_tickets() {
    let configs = configs(Version::Tls13);
    let mut first = Pair::new(&configs);
    assert_eq!(first.client_to_server(usize::MAX), ReadOutcome::Open);
    first.server_to_client().unwrap();
    assert!(!first.client.is_handshaking());
    first.client.send_close_notify();
    assert_eq!(first.client_to_server(usize::MAX), ReadOutcome::PeerClosed);
    first.server_to_client().unwrap();
    let second = Pair::connected(&configs);
    assert_eq!(second.client.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(second.workspace.counters.handshakes_resumed, 1);
}

/// Proves a client's KeyUpdate asking for ours is followed (its next records open under its
/// new key) and answered (ours is sealed before our next record, which it opens), twice, with
/// every TLS 1.3 suite: the secrets' updates are derived with SHA-256 and SHA-384.
#[test]
fn key_updates_are_followed_and_answered() {
    let provider = provider();
    let suites: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter_map(|suite| suite.tls13())
        .collect();
    assert_eq!(
        suites.len(),
        3,
        "AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305"
    );
    for suite in suites {
        let name = suite.common.suite;
        let configs = configs_with_suites(Version::Tls13, |offered| offered.suite() == name);
        let mut pair = Pair::connected(&configs);
        for round in 1..=2u64 {
            pair.client.refresh_traffic_keys().unwrap();
            pair.client.writer().write_all(b"after the update").unwrap();
            assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
            assert_eq!(pair.server_received, b"after the update", "{name:?}");
            pair.server_received.clear();
            pair.server_queue.extend_from_slice(b"answer");
            pair.server_to_client().unwrap();
            assert_eq!(pair.client_plaintext(), b"answer", "{name:?}");
            assert_eq!(
                pair.workspace.counters.key_updates,
                2 * round,
                "the client's and ours"
            );
        }
    }
}

/// Proves KeyUpdates in a row are refused past the 32 rustls allows, and that application data
/// between them starts the count again (fuzz finding: the record layer followed any number;
/// `fuzz/seeds/tls_stream/finding-key-updates-in-a-row`).
#[test]
fn key_updates_in_a_row_are_bounded() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs);
    for round in 0..3 {
        for _ in 0..32 {
            pair.client.refresh_traffic_keys().unwrap();
            assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
        }
        pair.client.writer().write_all(&[round]).unwrap();
        assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
    }
    assert_eq!(pair.server_received, [0, 1, 2]);
    for _ in 0..32 {
        pair.client.refresh_traffic_keys().unwrap();
    }
    assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Open);
    pair.client.refresh_traffic_keys().unwrap();
    assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::Refused);
    assert_eq!(pair.workspace.counters.record_errors, 1);
}

/// Proves the server updates its own keys before passing the confidentiality limit (TLS 1.3),
/// and stops sealing at it when it cannot (TLS 1.2).
#[test]
fn confidentiality_limit_updates_or_ends() {
    let configs13 = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs13);
    pair.server.set_tx_records_max_for_test(3);
    let reply = message(200_000, 5);
    pair.server_queue.extend_from_slice(&reply);
    pair.server_to_client().unwrap();
    assert_eq!(pair.client_plaintext(), reply);
    assert!(pair.workspace.counters.key_updates >= 4);

    let configs12 = configs(Version::Tls12);
    let mut pair = Pair::connected(&configs12);
    pair.server.set_tx_records_max_for_test(2);
    pair.server_queue.extend_from_slice(&message(100_000, 5));
    let queue = &mut pair.server_queue;
    let sealed = pair.server.seal(&mut pair.workspace, queue.len(), |out| {
        let count = out.len().min(queue.len());
        queue.drain(..count);
        count
    });
    assert_eq!(sealed, Sealed::Failed);
}

/// Proves close_notify both ways: the peer's ends reading, ours reaches the client as a clean
/// end of the stream.
#[test]
fn close_notify_both_ways() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs);
    pair.server_queue.extend_from_slice(b"last words");
    assert!(pair.server.owes_close_notify());
    pair.server_to_client().unwrap();
    assert_eq!(pair.client_plaintext(), b"last words");
    assert!(pair.server.queue_close_notify(&mut pair.workspace));
    assert!(!pair.server.can_seal());
    let wire = pair.server_wire(usize::MAX);
    let mut rest = &wire[..];
    pair.client.read_tls(&mut rest).unwrap();
    pair.client.process_new_packets().unwrap();
    let mut plaintext = Vec::new();
    // A clean end: read_to_end returns Ok only after close_notify.
    pair.client.reader().read_to_end(&mut plaintext).unwrap();
    assert!(plaintext.is_empty());
    pair.client.send_close_notify();
    assert_eq!(pair.client_to_server(usize::MAX), ReadOutcome::PeerClosed);
    assert!(!pair.server.expects_close_notify());
    assert_eq!(pair.workspace.counters.close_notify_received, 1);
    assert_eq!(pair.workspace.counters.close_notify_sent, 1);
}

/// The alert record the server sent, as (level, description), from plaintext (handshake) or
/// decrypted by the client (after it).
fn alert_in(wire: &[u8]) -> Option<(u8, u8)> {
    (wire.len() == 7 && wire[0] == 21).then(|| (wire[5], wire[6]))
}

/// Proves what is not TLS (plain HTTP, noise) and a broken ClientHello get a fatal alert
/// before the close (or, where rustls has none to send, the close alone), never a panic.
#[test]
fn not_tls_gets_an_alert() {
    let configs = configs(Version::Tls13);
    let inputs: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0],
        // A handshake message of unknown type announcing 16 MiB: rustls remembers where it
        // starts, and the alert must be drained with those bytes in place (it panicked when
        // given an empty buffer instead).
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
        ],
        &[0x17, 0x03, 0x03, 0x00, 0x01, 0],
        &[0xFF; 64],
    ];
    for input in inputs {
        let mut pair = Pair::new(&configs);
        let outcome = pair.feed_server(input, usize::MAX);
        let wire = pair.server_wire(usize::MAX);
        match outcome {
            ReadOutcome::Refused => {
                let (level, _) = alert_in(&wire).unwrap_or_else(|| panic!("no alert: {wire:?}"));
                assert_eq!(level, 2, "fatal");
            }
            // rustls queues no alert for some inputs (a handshake message of absurd length):
            // then the connection just closes.
            ReadOutcome::Aborted => assert!(wire.is_empty()),
            other => panic!("{input:?}: {other:?}"),
        }
        assert_eq!(pair.workspace.counters.handshake_failures, 1);
        assert_eq!(
            pair.feed_server(b"more", usize::MAX),
            ReadOutcome::Open,
            "ignored"
        );
    }
}

/// Proves a ClientHello cut short is kept (bounded) while more may come, and sends nothing.
#[test]
fn truncated_client_hello_waits() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::new(&configs);
    let wire = pair.client_wire();
    assert_eq!(
        pair.feed_server(&wire[..wire.len() / 2], usize::MAX),
        ReadOutcome::Open
    );
    assert!(pair.server.is_handshaking());
    assert!(!pair.server.has_unsent());
    assert!(pair.server.held_bytes() > 0 && pair.server.held_bytes() <= 4096);
    assert_eq!(
        pair.feed_server(&wire[wire.len() / 2..], 3),
        ReadOutcome::Open
    );
    assert!(
        pair.server.has_unsent(),
        "the whole ClientHello is answered"
    );
}

/// Proves a record changed on the way is refused with bad_record_mac, and the client hears it.
#[test]
fn tampered_record_gets_bad_record_mac() {
    for version in [Version::Tls13, Version::Tls12] {
        let configs = configs(version);
        let mut pair = Pair::connected(&configs);
        pair.client.writer().write_all(b"hello").unwrap();
        let mut wire = pair.client_wire();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(pair.feed_server(&wire, usize::MAX), ReadOutcome::Refused);
        assert!(pair.server_received.is_empty());
        let error = pair.server_to_client().unwrap_err();
        assert_eq!(
            error,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
            "{version:?}"
        );
        assert_eq!(pair.workspace.counters.record_errors, 1);
    }
}

/// Proves a record header over the version's limit is refused at once (record_overflow),
/// before any of its body is waited for, and a wrong version or content type too.
#[test]
fn impossible_headers_are_refused_at_once() {
    let configs = configs(Version::Tls13);
    for header in [
        [23, 3, 3, 0x41, 0x01],
        [23, 2, 0, 0, 20],
        [99, 3, 3, 0, 20],
        [23, 3, 3, 0, 0],
    ] {
        let mut pair = Pair::connected(&configs);
        assert_eq!(
            pair.feed_server(&header, 1),
            ReadOutcome::Refused,
            "{header:?}"
        );
        let error = pair.server_to_client().unwrap_err();
        assert!(
            matches!(error, rustls::Error::AlertReceived(_)),
            "{error:?}"
        );
        assert_eq!(pair.server.held_bytes(), 0);
    }
}

/// Proves a fatal alert from the peer ends the connection without one back.
#[test]
fn peer_alert_aborts() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs);
    // An encrypted fatal alert from the client: what rustls sends when it refuses something.
    pair.server_queue.clear();
    let mut wire = Vec::new();
    let mut tampered = pair.server_wire(usize::MAX);
    tampered.extend_from_slice(&[23, 3, 3, 0, 19]);
    tampered.extend_from_slice(&[0; 19]);
    // The client refuses the bogus record and sends an alert.
    let mut rest = &tampered[..];
    pair.client.read_tls(&mut rest).unwrap();
    assert!(pair.client.process_new_packets().is_err());
    pair.client.write_tls(&mut wire).unwrap();
    assert_eq!(pair.feed_server(&wire, usize::MAX), ReadOutcome::Aborted);
    assert!(!pair.server.has_unsent());
    assert_eq!(pair.workspace.counters.alerts_received, 1);
}

/// The client's sending key after its handshake, to seal records rustls never sends (TLS 1.3).
struct ClientSealer {
    key: aws_lc_rs::aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl ClientSealer {
    /// Takes the keys out of the pair's client (which can then no longer be used).
    fn take(pair: &mut Pair, configs: &Configs) -> ClientSealer {
        let name = ServerName::try_from("localhost").unwrap();
        let replacement = ClientConnection::new(Arc::clone(&configs.client), name).unwrap();
        let client = std::mem::replace(&mut pair.client, replacement);
        let (seq, secrets) = client.dangerous_extract_secrets().unwrap().tx;
        let (algorithm, key, iv) = match &secrets {
            rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&aws_lc_rs::aead::AES_128_GCM, key, iv)
            }
            rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&aws_lc_rs::aead::AES_256_GCM, key, iv)
            }
            rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aws_lc_rs::aead::CHACHA20_POLY1305, key, iv)
            }
            _ => panic!("a suite the provider does not offer"),
        };
        let key = aws_lc_rs::aead::UnboundKey::new(algorithm, key.as_ref()).unwrap();
        ClientSealer {
            key: aws_lc_rs::aead::LessSafeKey::new(key),
            iv: iv.as_ref().try_into().unwrap(),
            seq,
        }
    }

    /// One TLS 1.3 record of `content_type` carrying `content`.
    fn seal(&mut self, content_type: u8, content: &[u8]) -> Vec<u8> {
        let mut inner = content.to_vec();
        inner.push(content_type);
        let length = (inner.len() + 16) as u16;
        let header = [23, 3, 3, (length >> 8) as u8, length as u8];
        let mut nonce = self.iv;
        for (byte, seq_byte) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq_byte;
        }
        self.key
            .seal_in_place_append_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(header),
                &mut inner,
            )
            .unwrap();
        self.seq += 1;
        let mut record = header.to_vec();
        record.extend_from_slice(&inner);
        record
    }
}

/// Proves warning alerts are bounded: four user_canceled are read (as rustls reads them), the
/// fifth is refused with a fatal alert; before, a peer could send them for ever.
#[test]
fn user_canceled_alerts_are_bounded() {
    let configs = configs(Version::Tls13);
    let mut pair = Pair::connected(&configs);
    let mut sealer = ClientSealer::take(&mut pair, &configs);
    const ALERT: u8 = 21;
    const APPLICATION_DATA: u8 = 23;
    for _ in 0..4 {
        let record = sealer.seal(ALERT, &[1, 90]);
        assert_eq!(pair.feed_server(&record, usize::MAX), ReadOutcome::Open);
    }
    let record = sealer.seal(APPLICATION_DATA, b"still here");
    assert_eq!(pair.feed_server(&record, usize::MAX), ReadOutcome::Open);
    assert_eq!(pair.server_received, b"still here");
    let record = sealer.seal(ALERT, &[1, 90]);
    assert_eq!(pair.feed_server(&record, usize::MAX), ReadOutcome::Refused);
    assert_eq!(pair.workspace.counters.record_errors, 1);
    // The fatal alert, sealed: 2 bytes, the inner type and the tag after the header.
    assert_eq!(pair.server_wire(usize::MAX).len(), 5 + 2 + 1 + 16);
    assert!(!pair.server.can_seal());
}
