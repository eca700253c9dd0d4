//! TLS under a client connection, sans-IO: a rustls `ClientConnection` sits between the socket's
//! bytes and the WebSocket or HTTP codec. Both client paths (the io_uring engine and the
//! tokio-uring connections) keep it as an `Option` beside their plain state, so a plain
//! connection pays one branch per read and per send, and nothing else.
//!
//! One [`TlsClient`] per run: the CA the server must chain to (`--ca`), the name it must
//! present (`--server-name`, by default the URL's host), on the workspace's one provider,
//! aws-lc-rs. Verification is never turned off: a server the CA does not vouch for fails the
//! handshake, and that failure has a cause of its own (`tls_handshake_failed`).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The TLS settings every connection of a run shares.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca_path` and expects `server_name`.
    ///
    /// Session resumption is off: each load-test connection stands for a client of its own,
    /// which has no ticket from an earlier connection, so every handshake is a full one.
    pub fn from_ca_file(ca_path: &Path, server_name: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let certificates = CertificateDer::pem_file_iter(ca_path)
            .map_err(|error| format!("--ca {}: {error}", ca_path.display()))?;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|error| format!("--ca {}: {error}", ca_path.display()))?;
            roots
                .add(certificate)
                .map_err(|error| format!("--ca {}: {error}", ca_path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {} holds no certificate", ca_path.display()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS versions: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|error| format!("--server-name {server_name:?}: {error}"))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A new client session. Its ClientHello is queued already: the first send carries it.
    pub fn connect(&self) -> Result<Box<ClientConnection>, rustls::Error> {
        let mut session =
            ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())?;
        // Bytes written before the handshake ends wait in rustls; our own queues bound what a
        // connection may hold, so rustls' own limit would only make a write come up short.
        session.set_buffer_limit(None);
        Ok(Box::new(session))
    }
}

/// What went wrong in TLS: during the handshake (its own failure cause), or after it (the
/// server broke an established session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    Handshake,
    Session,
}

/// Takes in every byte of `ciphertext` and appends the plaintext it held to `plaintext`.
/// Handshake messages are answered inside rustls; [`encrypt`] sends the answers. A
/// close_notify ends the input (the TCP end that follows it ends the connection).
pub fn decrypt(
    session: &mut ClientConnection,
    mut ciphertext: &[u8],
    plaintext: &mut Vec<u8>,
) -> Result<(), TlsFailure> {
    while !ciphertext.is_empty() {
        let failure = failure_kind(session);
        // Reading from a slice cannot fail; rustls refuses more only while its buffer of
        // unprocessed records is full, which processing them just below empties.
        session.read_tls(&mut ciphertext).map_err(|error| {
            log_failure(&error);
            failure
        })?;
        let state = session.process_new_packets().map_err(|error| {
            log_failure(&error);
            failure
        })?;
        let start = plaintext.len();
        plaintext.resize(start + state.plaintext_bytes_to_read(), 0);
        session
            .reader()
            .read_exact(&mut plaintext[start..])
            .expect("rustls holds the plaintext it counted");
        if state.peer_has_closed() {
            break;
        }
    }
    Ok(())
}

/// Seals `plaintext` (possibly empty) and appends to `ciphertext` every record rustls has to
/// send: handshake messages, alerts, and the sealed data.
pub fn encrypt(session: &mut ClientConnection, plaintext: &[u8], ciphertext: &mut Vec<u8>) {
    if !plaintext.is_empty() {
        session
            .writer()
            .write_all(plaintext)
            .expect("an unlimited rustls buffer takes every byte");
    }
    while session.wants_write() {
        session
            .write_tls(ciphertext)
            .expect("writing into a Vec cannot fail");
    }
}

/// [`encrypt`] with one buffer: `bytes` holds plaintext before and ciphertext after.
pub fn encrypt_in_place(session: &mut ClientConnection, bytes: &mut Vec<u8>) {
    if !bytes.is_empty() {
        session
            .writer()
            .write_all(bytes)
            .expect("an unlimited rustls buffer takes every byte");
        bytes.clear();
    }
    encrypt(session, &[], bytes);
}

/// The failure to count when the connection ends (the server closed or reset it) while
/// `session` is in the state it is in.
pub fn failure_kind(session: &ClientConnection) -> TlsFailure {
    if session.is_handshaking() {
        TlsFailure::Handshake
    } else {
        TlsFailure::Session
    }
}

/// The first few TLS errors are printed: a wrong CA or name says so here, once, not a
/// thousand times.
fn log_failure(error: &dyn std::fmt::Display) {
    const LOGGED_MAX: usize = 3;
    static LOGGED: AtomicUsize = AtomicUsize::new(0);
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOGGED_MAX {
        eprintln!("worker {}: TLS: {error}", std::process::id());
    }
}

#[cfg(test)]
pub mod tests {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection};

    use super::*;

    /// A CA made at test time and a server certificate it signed for `localhost` and
    /// 127.0.0.1 (no private key is committed).
    pub struct TestCertificates {
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        certificate: CertificateDer<'static>,
        key: Vec<u8>,
    }

    impl TestCertificates {
        pub fn new() -> Self {
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let key = rcgen::KeyPair::generate().unwrap();
            let certificate = rcgen::CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            Self {
                certificate: certificate.der().clone(),
                key: key.serialize_der(),
                ca,
            }
        }

        pub fn ca_pem(&self) -> String {
            self.ca.pem()
        }

        fn server(&self) -> ServerConnection {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
            let config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.certificate.clone()], key)
                .unwrap();
            ServerConnection::new(Arc::new(config)).unwrap()
        }
    }

    fn client_trusting(certificates: &TestCertificates, name: &str) -> TlsClient {
        let directory = tempfile::tempdir().unwrap();
        let ca_path = directory.path().join("ca.pem");
        std::fs::write(&ca_path, certificates.ca_pem()).unwrap();
        TlsClient::from_ca_file(&ca_path, name).unwrap()
    }

    /// Moves every pending record from the client to the server and back until neither has
    /// more to say; returns the plaintext the client received.
    fn exchange(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<Vec<u8>, TlsFailure> {
        let mut received = Vec::new();
        for _ in 0..10 {
            let mut to_server = Vec::new();
            encrypt(client, &[], &mut to_server);
            let mut reader = &to_server[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).unwrap();
                if server.process_new_packets().is_err() {
                    break;
                }
            }
            let mut to_client = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut to_client).unwrap();
            }
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
            decrypt(client, &to_client, &mut received)?;
        }
        Ok(received)
    }

    /// The client verifies the server against the CA and the name, then data flows both
    /// ways, sealed and opened by `encrypt` and `decrypt`.
    #[test]
    fn handshakes_and_carries_data_both_ways() {
        let certificates = TestCertificates::new();
        for name in ["localhost", "127.0.0.1"] {
            let mut client = client_trusting(&certificates, name).connect().unwrap();
            let mut server = certificates.server();
            let mut request = b"GET /ws HTTP/1.1\r\n\r\n".to_vec();
            encrypt_in_place(&mut client, &mut request);
            assert!(!request.starts_with(b"GET"), "sealed before it leaves");
            let mut reader = &request[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).unwrap();
                server.process_new_packets().unwrap();
            }
            exchange(&mut client, &mut server).unwrap();
            assert!(!client.is_handshaking() && !server.is_handshaking());
            let mut at_server = Vec::new();
            server.reader().read_to_end(&mut at_server).unwrap_err();
            assert_eq!(at_server, b"GET /ws HTTP/1.1\r\n\r\n");
            server.writer().write_all(b"HTTP/1.1 101").unwrap();
            assert_eq!(exchange(&mut client, &mut server).unwrap(), b"HTTP/1.1 101");
        }
    }

    /// A server the CA does not vouch for, or one with another name, fails the handshake
    /// as a handshake failure, not as a broken session.
    #[test]
    fn refuses_a_server_it_cannot_verify() {
        let certificates = TestCertificates::new();
        let stranger = TestCertificates::new();
        for (client, name) in [
            (client_trusting(&stranger, "localhost"), "a foreign CA"),
            (
                client_trusting(&certificates, "example.com"),
                "a wrong name",
            ),
        ] {
            let mut client = client.connect().unwrap();
            let mut server = certificates.server();
            let outcome = exchange(&mut client, &mut server);
            assert_eq!(outcome, Err(TlsFailure::Handshake), "{name}");
        }
    }
}
