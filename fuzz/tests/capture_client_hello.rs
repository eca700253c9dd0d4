//! Captures the ClientHello a rustls client sends, for the `tls_stream` seeds
//! (`seeds/captured/rustls-*.client-hello`, read by `seeds/make-seeds.py`). Every run checks that
//! the flight is one handshake record holding a ClientHello; with `RINGCAST_CAPTURE_SEEDS=1` it
//! also writes the files (do so when rustls changes what it sends):
//!
//! ```sh
//! cd fuzz && RINGCAST_CAPTURE_SEEDS=1 cargo test --test capture_client_hello
//! ```

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Writes the first flight of a client of TLS 1.3 and 1.2 and of a TLS 1.2-only one, with the
/// aws-lc-rs provider's default groups and suites as this workspace builds it.
#[test]
fn capture_rustls_client_hellos() {
    let versions: [(&str, &[&'static rustls::SupportedProtocolVersion]); 2] = [
        (
            "rustls-tls13.client-hello",
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        ),
        ("rustls-tls12.client-hello", &[&rustls::version::TLS12]),
    ];
    for (file, versions) in versions {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        // A handshake record (22) whose first message is a ClientHello (1).
        assert_eq!(wire.first(), Some(&22), "{file}");
        assert_eq!(wire.get(5), Some(&1), "{file}");
        let record_bytes = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        assert_eq!(wire.len(), record_bytes, "{file}: one record");
        if std::env::var_os("RINGCAST_CAPTURE_SEEDS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/captured/");
            std::fs::write(format!("{path}{file}"), &wire).unwrap();
        }
    }
}
