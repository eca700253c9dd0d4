//! The server side of TLS as a shard drives it: `TlsConnection::handle_read` on ciphertext cut
//! at the fuzzer's read boundaries, every send completed as soon as it is started, with the
//! server configuration the shards use (`certificates::server_config`) and a certificate made
//! for this process with rcgen (its key is written to a temporary file for the loader and
//! removed at once; none is committed).
//!
//! Two modes, chosen by the variant's low bit:
//! - **bytes**: the stream is the client's ciphertext, whatever it is (a captured ClientHello,
//!   a cut one, plain HTTP, garbage), fed to a new connection;
//! - **client**: a real rustls client (TLS 1.3 or 1.2, one cipher suite, chosen by the
//!   variant) handshakes with the connection in memory, then runs the stream as a script:
//!   application data, key updates, close_notify, raw bytes after a flight, and byte flips in
//!   any flight, the handshake's included. The server echoes what it reads, so that its sealing
//!   is checked by the client too. Each flight is cut with the input's schedule.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input;
//! - the plaintext handed to the endpoint is never more than the ciphertext given, and nothing
//!   is handed out after the connection ended (refused, aborted, peer closed);
//! - the outcome (the first read that ended the connection and how, the plaintext, the
//!   counters) is the same for the stream read whole and cut as the fuzzer says (in the
//!   client mode, unless a handshake flight after the ClientHello was flipped: rustls may then
//!   read the client's ciphertext, which depends on the server's random keys, as structure);
//! - client mode: the plaintext read is a prefix of what the client sent, all of it when no
//!   byte was flipped or added; what the server sealed is what the client decrypts;
//! - an idle connection (traffic keys in place, its last record whole, its sends done) holds no
//!   pooled buffer, and a connection released gives every buffer back to the pool.

#![no_main]

use std::io::{ErrorKind, Read as _, Write as _};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::transport::tls::certificates::{
    CertificatePaths, Certificates, provider, server_config,
};
use ringcast::transport::tls::{ReadOutcome, Sealed, TlsConnection, TlsCounters, TlsWorkspace};

/// The workspace's scratch buffer (16 KiB), a few pooled buffers (at most 65 KiB each), two
/// rustls connections' state and what the harness copies: several hundred KiB.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 4 * 1024 * 1024,
    bytes_per_input_byte: 64,
};

/// KeyUpdates in a row a rustls peer accepts, and so must the server (and no more).
const KEY_UPDATES_IN_A_ROW_MAX: usize = 32;

/// Flights a client sends at most in the handshake (TLS 1.2 with its ChangeCipherSpec: 2).
const HANDSHAKE_ROUNDS_MAX: usize = 8;

struct Configs {
    server: Arc<ServerConfig>,
    /// Indexed by the variant's bits 1 to 3: TLS 1.3 or 1.2, times one suite each.
    clients: Vec<Arc<ClientConfig>>,
}

static CONFIGS: LazyLock<Configs> = LazyLock::new(configs);

/// A CA and a `localhost` certificate it signed; the server loads them as a shard does.
fn configs() -> Configs {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
    let key = rcgen::KeyPair::generate().expect("a key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let certificate = params.signed_by(&key, &ca).expect("a certificate");
    let directory = std::env::temp_dir().join(format!("ringcast-fuzz-tls-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    let paths = CertificatePaths {
        certificate: directory.join("certificate.pem"),
        private_key: directory.join("key.pem"),
    };
    std::fs::write(&paths.certificate, certificate.pem()).expect("written");
    std::fs::write(&paths.private_key, key.serialize_pem()).expect("written");
    let loaded = Certificates::load(paths, provider());
    let _ = std::fs::remove_dir_all(&directory);
    let (certificates, _) = loaded.expect("the pair loads");
    let server = server_config(Arc::new(certificates)).expect("the shard's configuration");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der().to_vec()))
        .expect("the CA");
    let clients = client_variants()
        .into_iter()
        .map(|(version, suite)| client_config(&roots, version, suite))
        .collect();
    Configs { server, clients }
}

fn client_variants() -> Vec<(
    &'static rustls::SupportedProtocolVersion,
    rustls::SupportedCipherSuite,
)> {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    let tls13 = &rustls::version::TLS13;
    let tls12 = &rustls::version::TLS12;
    vec![
        (tls13, suite::TLS13_AES_128_GCM_SHA256),
        (tls13, suite::TLS13_AES_256_GCM_SHA384),
        (tls13, suite::TLS13_CHACHA20_POLY1305_SHA256),
        (tls12, suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        (tls12, suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        (tls12, suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ]
}

/// A client of one version and suite, with X25519 alone and a fixed key share (see
/// [`FixedX25519`]), fixed random bytes (see [`FixedRandom`]), and no resumption: every run
/// sends the same bytes and must start from the same state.
fn client_config(
    roots: &RootCertStore,
    version: &'static rustls::SupportedProtocolVersion,
    suite: rustls::SupportedCipherSuite,
) -> Arc<ClientConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        kx_groups: vec![&FixedX25519],
        secure_random: &FixedRandom,
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("a version the provider has")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    Arc::new(client)
}

/// The test client's "random" bytes: its ClientHello's random and session id, and the seed
/// rustls orders the hello's extensions by. Fixed, so that a flip at an offset hits the same
/// field in every run (the key shares still come from aws-lc's generator, and the server's
/// randomness is its own).
#[derive(Debug)]
struct FixedRandom;

impl rustls::crypto::SecureRandom for FixedRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        bytes.fill(0x2A);
        Ok(())
    }
}

/// X25519 with a fixed private key, for the test client: its key share is the same bytes in
/// every run, so that a flipped length that makes the server read the share as structure
/// reads the same structure each time (with a random share, the server's alert depended on
/// the share's bytes). The server's key and randomness are its own.
#[derive(Debug)]
struct FixedX25519;

/// One exchange of [`FixedX25519`].
struct FixedX25519Exchange {
    private_key: aws_lc_rs::agreement::PrivateKey,
    public_key: Vec<u8>,
}

impl rustls::crypto::SupportedKxGroup for FixedX25519 {
    fn start(&self) -> Result<Box<dyn rustls::crypto::ActiveKeyExchange>, rustls::Error> {
        let failed = || rustls::Error::General("fixed X25519 key".into());
        let private_key = aws_lc_rs::agreement::PrivateKey::from_private_key(
            &aws_lc_rs::agreement::X25519,
            &[0x2A; 32],
        )
        .map_err(|_| failed())?;
        let public_key = private_key.compute_public_key().map_err(|_| failed())?;
        Ok(Box::new(FixedX25519Exchange {
            public_key: public_key.as_ref().to_vec(),
            private_key,
        }))
    }

    fn name(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519
    }
}

impl rustls::crypto::ActiveKeyExchange for FixedX25519Exchange {
    fn complete(
        self: Box<Self>,
        peer_public_key: &[u8],
    ) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(
            &aws_lc_rs::agreement::X25519,
            peer_public_key,
        );
        let invalid = rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare);
        aws_lc_rs::agreement::agree(&self.private_key, peer, invalid, |secret| {
            Ok(rustls::crypto::SharedSecret::from(secret))
        })
    }

    fn pub_key(&self) -> &[u8] {
        &self.public_key
    }

    fn group(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519
    }
}

fuzz_target!(|data: &[u8]| {
    let configs = LazyLock::force(&CONFIGS);
    let input = SplitInput::parse(data);
    allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| match input.variant % 2 {
            0 => read_bytes(configs, reads),
            _ => {
                // The whole-stream run cuts no flight; the other cuts each as the input says.
                let schedule = match reads.len() == 1 && reads[0] == input.stream {
                    true => &[][..],
                    false => input.schedule,
                };
                run_client(configs, input.variant / 2, input.stream, schedule)
            }
        })
    });
});

/// What one run did, compared between the whole stream and its cut.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The first outcome other than `Open`, and which of the flights (or reads) gave it.
    ended: Option<ReadOutcome>,
    established: bool,
    plaintext: Vec<u8>,
    counters: Counted,
    /// Client mode: the client's error, if it refused what the server sent.
    client_error: Option<String>,
}

impl Outcome {
    /// What a run whose outcome depends on more than its input gives (see
    /// `Pair::tampered_in_handshake`), after its own checks.
    fn not_compared() -> Outcome {
        Outcome {
            ended: None,
            established: false,
            plaintext: Vec::new(),
            counters: Counted::from(&TlsCounters::default()),
            client_error: None,
        }
    }
}

/// The counters that follow from the bytes (not from the pool's state).
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    handshakes_full: u64,
    handshake_failures: u64,
    record_errors: u64,
    alerts_received: u64,
    close_notify_received: u64,
    key_updates: u64,
    buffers_exhausted: u64,
}

impl From<&TlsCounters> for Counted {
    fn from(counters: &TlsCounters) -> Counted {
        Counted {
            handshakes_full: counters.handshakes_full,
            handshake_failures: counters.handshake_failures,
            record_errors: counters.record_errors,
            alerts_received: counters.alerts_received,
            close_notify_received: counters.close_notify_received,
            key_updates: counters.key_updates,
            buffers_exhausted: counters.buffers_exhausted,
        }
    }
}

/// One server connection and its shard's workspace, with what it handed out.
struct Server {
    connection: TlsConnection,
    workspace: TlsWorkspace,
    ended: Option<ReadOutcome>,
    plaintext: Vec<u8>,
    /// Ciphertext given so far.
    given_bytes: usize,
}

impl Server {
    fn new(configs: &Configs) -> Server {
        Server {
            connection: TlsConnection::new(&configs.server).expect("a connection"),
            workspace: TlsWorkspace::default(),
            ended: None,
            plaintext: Vec::new(),
            given_bytes: 0,
        }
    }

    /// Hands one read to the connection, as the shard does, and checks what it handed out.
    fn read(&mut self, read: &[u8]) {
        let mut bytes = read.to_vec();
        self.given_bytes += bytes.len();
        let plaintext = &mut self.plaintext;
        let mut handed_bytes = 0;
        let outcome = self
            .connection
            .handle_read(&mut bytes, &mut self.workspace, |piece| {
                handed_bytes += piece.len();
                plaintext.extend_from_slice(piece);
            });
        if self.ended.is_some() {
            assert_eq!(handed_bytes, 0, "plaintext handed out after the end");
        } else if outcome != ReadOutcome::Open {
            self.ended = Some(outcome);
        }
        assert!(
            self.plaintext.len() <= self.given_bytes,
            "more plaintext than ciphertext"
        );
    }

    /// Seals what `queue` holds (and any key update owed), then sends every byte at once.
    /// Returns the ciphertext sent.
    fn send(&mut self, queue: &mut Vec<u8>) -> Vec<u8> {
        let mut wire = Vec::new();
        for _ in 0..64 {
            let sealed = self
                .connection
                .seal(&mut self.workspace, queue.len(), |out| {
                    let count = out.len().min(queue.len());
                    out[..count].copy_from_slice(&queue[..count]);
                    queue.drain(..count);
                    count
                });
            assert_ne!(sealed, Sealed::NoBuffer, "the pool is large enough");
            let Some(bytes) = self.connection.start_send() else {
                return wire;
            };
            wire.extend_from_slice(bytes);
            let sent_bytes = bytes.len();
            self.connection
                .complete_send(sent_bytes, &mut self.workspace);
        }
        panic!("sealing did not end");
    }

    /// An idle connection holds no buffer; a released one gives all back.
    fn check_release(mut self, last_record_whole: bool) -> Counted {
        if last_record_whole
            && self.ended.is_none()
            && self.connection.version().is_some()
            && !self.connection.has_unsent()
        {
            assert_eq!(
                self.connection.held_bytes(),
                0,
                "an idle connection holds buffers"
            );
        }
        self.connection.release(&mut self.workspace);
        assert_eq!(self.connection.held_bytes(), 0);
        for class in self.workspace.pool.statistics() {
            assert_eq!(class.buffers_in_use, 0, "a buffer not returned: {class:?}");
        }
        Counted::from(&self.workspace.counters)
    }
}

/// The bytes mode: `reads` fed to a new connection, its sends completed after each.
fn read_bytes(configs: &Configs, reads: &[&[u8]]) -> Outcome {
    let mut server = Server::new(configs);
    for read in reads {
        server.read(read);
        server.send(&mut Vec::new());
    }
    let established = server.connection.version().is_some();
    let plaintext = std::mem::take(&mut server.plaintext);
    let ended = server.ended;
    let whole = ends_on_record(reads.concat().as_slice());
    Outcome {
        ended,
        established,
        plaintext,
        counters: server.check_release(whole),
        client_error: None,
    }
}

/// Whether `bytes` are whole TLS records (5-byte headers and the lengths they give).
fn ends_on_record(mut bytes: &[u8]) -> bool {
    while let [_, _, _, high, low, rest @ ..] = bytes {
        let length = usize::from(u16::from_be_bytes([*high, *low]));
        if rest.len() < length {
            return false;
        }
        bytes = &rest[length..];
    }
    bytes.is_empty()
}

/// One step of the client mode's script.
#[derive(Debug)]
enum Step<'a> {
    /// The client sends application data.
    Write(&'a [u8]),
    /// The client updates its keys (TLS 1.3; refused by rustls under 1.2).
    KeyUpdate,
    CloseNotify,
    /// These bytes follow the client's next flight as they are.
    Raw(&'a [u8]),
}

/// A byte of one client flight (counted from 0, the ClientHello) XORed with a mask.
#[derive(Clone, Copy, Debug)]
struct Flip {
    flight: usize,
    offset: usize,
    mask: u8,
}

/// Reads the script: `[op][...]` repeated; flips are collected apart, to apply to whichever
/// flight they name.
fn script(mut stream: &[u8]) -> (Vec<Step<'_>>, Vec<Flip>) {
    let (mut steps, mut flips) = (Vec::new(), Vec::new());
    while let [op, rest @ ..] = stream {
        stream = rest;
        match op % 5 {
            0 | 3 => {
                let length = stream.first().map_or(0, |&length| usize::from(length));
                let bytes = stream.get(1..).unwrap_or_default();
                let (taken, rest) = bytes.split_at(length.min(bytes.len()));
                stream = rest;
                steps.push(match op % 5 {
                    0 => Step::Write(taken),
                    _ => Step::Raw(taken),
                });
            }
            1 => steps.push(Step::KeyUpdate),
            2 => steps.push(Step::CloseNotify),
            _ => {
                let mut fields = [0u8; 4];
                let count = stream.len().min(4);
                fields[..count].copy_from_slice(&stream[..count]);
                stream = &stream[count..];
                flips.push(Flip {
                    flight: usize::from(fields[0] % 8),
                    offset: usize::from(u16::from_le_bytes([fields[1], fields[2]])),
                    mask: fields[3].max(1),
                });
            }
        }
    }
    (steps, flips)
}

/// A client and the server connection it talks to, and what went between them.
struct Pair {
    client: ClientConnection,
    server: Server,
    flips: Vec<Flip>,
    flight: usize,
    schedule: Vec<u8>,
    /// Application data the client sent.
    sent: Vec<u8>,
    /// Whether any byte the server read was flipped or added.
    tampered: bool,
    /// A flight after the ClientHello was flipped while the server still read the handshake
    /// unauthenticated: it may then read the client's encrypted bytes (which depend on the
    /// server's own randomness) as structure, so the outcome is not compared between runs.
    tampered_in_handshake: bool,
    /// What the server sealed and what the client decrypted.
    sealed: Vec<u8>,
    client_received: Vec<u8>,
    client_error: Option<String>,
    /// Every byte the server was given, to tell whether they end with a whole record.
    fed: Vec<u8>,
    /// The client sent close_notify: it writes nothing more.
    client_closed: bool,
    /// The client's KeyUpdates since its last application data.
    key_updates_in_a_row: usize,
}

/// The client mode: handshake, then the script, each flight cut by `schedule`.
fn run_client(configs: &Configs, choice: u8, stream: &[u8], schedule: &[u8]) -> Outcome {
    let (steps, flips) = script(stream);
    let config = &configs.clients[usize::from(choice) % configs.clients.len()];
    let name = ServerName::try_from("localhost").expect("a name");
    let mut pair = Pair {
        client: ClientConnection::new(Arc::clone(config), name).expect("a client"),
        server: Server::new(configs),
        flips,
        flight: 0,
        schedule: schedule.to_vec(),
        sent: Vec::new(),
        tampered: false,
        tampered_in_handshake: false,
        sealed: Vec::new(),
        client_received: Vec::new(),
        client_error: None,
        fed: Vec::new(),
        client_closed: false,
        key_updates_in_a_row: 0,
    };
    pair.handshake();
    let established = pair.server.connection.version().is_some();
    if established && pair.is_open() {
        for step in &steps {
            pair.run(step);
            if !pair.is_open() {
                break;
            }
        }
    }
    pair.finish(established)
}

impl Pair {
    fn is_open(&self) -> bool {
        self.server.ended.is_none() && self.client_error.is_none()
    }

    fn handshake(&mut self) {
        for _ in 0..HANDSHAKE_ROUNDS_MAX {
            self.flight_to_server(&[]);
            self.server_to_client();
            let done = !self.client.is_handshaking() && !self.server.connection.is_handshaking();
            if done || !self.is_open() {
                return;
            }
        }
    }

    fn run(&mut self, step: &Step<'_>) {
        if self.client_closed && !matches!(step, Step::Raw(_)) {
            return;
        }
        match step {
            Step::Write(bytes) => {
                self.client
                    .writer()
                    .write_all(bytes)
                    .expect("rustls buffers it");
                self.sent.extend_from_slice(bytes);
                if !bytes.is_empty() {
                    self.key_updates_in_a_row = 0;
                }
                self.flight_to_server(&[]);
            }
            Step::KeyUpdate => {
                // Refused under TLS 1.2, with nothing sent: the flight is then empty.
                if self.client.refresh_traffic_keys().is_ok() {
                    self.key_updates_in_a_row += 1;
                }
                self.flight_to_server(&[]);
            }
            Step::CloseNotify => {
                self.client.send_close_notify();
                self.client_closed = true;
                self.flight_to_server(&[]);
            }
            Step::Raw(bytes) => self.flight_to_server(bytes),
        }
        self.server_to_client();
    }

    /// Sends what the client has to send, flipped as the script says and followed by `raw`,
    /// in reads cut by the schedule.
    fn flight_to_server(&mut self, raw: &[u8]) {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).expect("writing to a Vec");
        }
        if wire.is_empty() && raw.is_empty() {
            return;
        }
        for flip in self.flips.iter().filter(|flip| flip.flight == self.flight) {
            if !wire.is_empty() {
                let offset = flip.offset % wire.len();
                wire[offset] ^= flip.mask;
                self.tampered = true;
                self.tampered_in_handshake |=
                    self.flight > 0 && self.server.connection.is_handshaking();
            }
        }
        self.flight += 1;
        wire.extend_from_slice(raw);
        self.tampered |= !raw.is_empty();
        self.fed.extend_from_slice(&wire);
        for read in reads::cut(&wire, &self.schedule) {
            self.server.read(read);
        }
    }

    /// The server echoes what it read since the last time, seals, and the client reads it all.
    fn server_to_client(&mut self) {
        let mut queue = self.server.plaintext[self.sealed.len()..].to_vec();
        if !self.server.connection.can_seal() {
            queue.clear();
        }
        let queued = queue.clone();
        let wire = self.server.send(&mut queue);
        self.sealed
            .extend_from_slice(&queued[..queued.len() - queue.len()]);
        if self.client_error.is_some() {
            return;
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            if self.client.read_tls(&mut rest).is_err() {
                break;
            }
            if let Err(error) = self.client.process_new_packets() {
                self.client_error = Some(format!("{error:?}"));
                return;
            }
            self.drain_client();
        }
    }

    fn drain_client(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.client.reader().read(&mut chunk) {
                Ok(0) => return,
                Ok(count) => self.client_received.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    self.client_error = Some(format!("read: {:?}", error.kind()));
                    return;
                }
            }
        }
    }

    /// The checks of the client mode, then the outcome.
    fn finish(self, established: bool) -> Outcome {
        let plaintext = self.server.plaintext.clone();
        assert!(
            self.sent.starts_with(&plaintext),
            "the server read plaintext the client did not send"
        );
        // More KeyUpdates in a row than rustls allows its peer: the server refuses the client
        // (when it read them: added bytes may have made it wait for a record that swallows them).
        let flooded = self.key_updates_in_a_row > KEY_UPDATES_IN_A_ROW_MAX;
        if flooded && !self.tampered {
            assert_eq!(self.server.ended, Some(ReadOutcome::Refused));
        }
        if !self.tampered {
            assert!(established, "an untampered handshake did not finish");
            if !flooded {
                assert_eq!(
                    self.client_error, None,
                    "the client refused an untampered server"
                );
            }
            assert_eq!(plaintext, self.sent, "untampered plaintext was lost");
        }
        if self.client_error.is_none() {
            assert!(
                self.sealed.starts_with(&self.client_received),
                "the client decrypted what the server did not seal"
            );
            assert_eq!(
                self.client_received, self.sealed,
                "sealed records were lost"
            );
        }
        let ended = self.server.ended;
        let records_whole = ends_on_record(&self.fed);
        let counters = self.server.check_release(records_whole);
        if self.tampered_in_handshake {
            return Outcome::not_compared();
        }
        Outcome {
            ended,
            established,
            plaintext,
            counters,
            client_error: self.client_error,
        }
    }
}
