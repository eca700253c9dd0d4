//! The server's certificate and private key: read from PEM files, checked, offered to every
//! handshake of every shard, and replaced live.
//!
//! rustls asks [`Certificates`] (its `ResolvesServerCert`) for the certificate at each full
//! handshake, on whichever shard runs it. [`Certificates::reload`] reads the files again, checks
//! the new pair the way start-up does, and swaps it in: handshakes after the swap use the new
//! pair, handshakes already past it and open connections are untouched (they hold their own
//! keys). A pair that fails the checks is not swapped in, and the error says why. The
//! [`ServerConfig`] built by [`server_config`] is shared by every shard.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};

use super::validity::{Validity, format_utc, validity};

/// The protocol ringcast speaks inside TLS, offered in ALPN: browsers and clients that also
/// offer h2 settle on it, and one that offers only protocols ringcast lacks is refused with
/// `no_application_protocol` (RFC 7301 §3.2) instead of failing later.
pub const ALPN_PROTOCOL: &[u8] = b"http/1.1";

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    /// The certificate chain, the server's certificate first.
    pub certificate: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key: PathBuf,
}

/// Why a certificate or key cannot be used; every message names the file and the problem.
#[derive(Debug)]
pub enum CertificateError {
    Unreadable {
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not PEM, or holds no block of the kind wanted.
    NotPem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// The key is PEM but not a key the provider can sign with.
    BadKey {
        path: PathBuf,
        reason: String,
    },
    /// The server's certificate cannot be read as X.509.
    BadCertificate {
        path: PathBuf,
        reason: &'static str,
    },
    Expired {
        path: PathBuf,
        not_after: String,
    },
    NotYetValid {
        path: PathBuf,
        not_before: String,
    },
    /// The key is not the one the certificate was issued for.
    Mismatch {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(f, "{}: no such file", path.display())
            }
            Self::Unreadable { path, source } => {
                write!(f, "{}: cannot be read: {source}", path.display())
            }
            Self::NotPem { path, what, reason } => {
                write!(f, "{}: no {what} in it ({reason})", path.display())
            }
            Self::BadKey { path, reason } => write!(
                f,
                "{}: not a private key ringcast can use ({reason}); PKCS#8, PKCS#1 (RSA) and \
                 SEC1 (EC) PEM keys of RSA, ECDSA P-256/P-384 or Ed25519 are accepted",
                path.display()
            ),
            Self::BadCertificate { path, reason } => {
                write!(
                    f,
                    "{}: the first certificate cannot be read: {reason}",
                    path.display()
                )
            }
            Self::Expired { path, not_after } => write!(
                f,
                "{}: the certificate expired on {not_after}; renew it",
                path.display()
            ),
            Self::NotYetValid { path, not_before } => write!(
                f,
                "{}: the certificate is not valid before {not_before} (check the clock)",
                path.display()
            ),
            Self::Mismatch {
                certificate,
                private_key,
            } => write!(
                f,
                "{}: this key does not match the certificate in {}",
                private_key.display(),
                certificate.display()
            ),
        }
    }
}

impl std::error::Error for CertificateError {}

/// What was loaded, for the log.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    pub chain_length: usize,
    pub validity: Validity,
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} certificate(s), valid until {}",
            self.chain_length,
            format_utc(self.validity.not_after_seconds)
        )
    }
}

/// The certificate every handshake is offered, replaceable while the server runs.
pub struct Certificates {
    paths: CertificatePaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads and checks the pair at `paths`.
    pub fn load(
        paths: CertificatePaths,
        provider: Arc<CryptoProvider>,
    ) -> Result<(Certificates, Loaded), CertificateError> {
        let (key, loaded) = read_pair(&paths, &provider, now_seconds())?;
        let certificates = Certificates {
            paths,
            provider,
            current: RwLock::new(Arc::new(key)),
        };
        Ok((certificates, loaded))
    }

    /// Reads the files again and, if the new pair passes the checks, offers it to every
    /// handshake from now on. On an error the pair in use stays.
    pub fn reload(&self) -> Result<Loaded, CertificateError> {
        let (key, loaded) = read_pair(&self.paths, &self.provider, now_seconds())?;
        // A poisoned lock only means a thread panicked while swapping an Arc: the value is whole.
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        Ok(loaded)
    }

    pub fn paths(&self) -> &CertificatePaths {
        &self.paths
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(&current))
    }
}

/// The crypto provider of the whole workspace: aws-lc-rs, with rustls' default suites (TLS 1.3:
/// AES-128/256-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE with the same AEADs) and key exchanges.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The configuration every shard's handshakes share: TLS 1.3 and 1.2 with the provider's
/// default suites, ALPN `http/1.1`, stateless session tickets for resumption (no per-session
/// server state: a ticket is the session, sealed with a key rotated every 6 hours), no 0-RTT
/// data, and the traffic keys handed to the record layer after the handshake.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::clone(certificates.provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.max_early_data_size = 0;
    config.enable_secret_extraction = true;
    // The record layer follows TLS 1.3 key updates from the traffic secrets, which rustls gives
    // out only through its key log (`super::secrets`).
    config.key_log = Arc::new(super::secrets::SecretCapture);
    Ok(Arc::new(config))
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Reads the pair and checks it: both files PEM, the chain not empty, the server's certificate
/// valid at `now_seconds`, the key one the provider can sign with and the certificate's own.
fn read_pair(
    paths: &CertificatePaths,
    provider: &CryptoProvider,
    now_seconds: i64,
) -> Result<(CertifiedKey, Loaded), CertificateError> {
    let chain = read_chain(&paths.certificate)?;
    let validity = validity(&chain[0]).map_err(|reason| CertificateError::BadCertificate {
        path: paths.certificate.clone(),
        reason,
    })?;
    if now_seconds > validity.not_after_seconds {
        return Err(CertificateError::Expired {
            path: paths.certificate.clone(),
            not_after: format_utc(validity.not_after_seconds),
        });
    }
    if now_seconds < validity.not_before_seconds {
        return Err(CertificateError::NotYetValid {
            path: paths.certificate.clone(),
            not_before: format_utc(validity.not_before_seconds),
        });
    }
    let key = read_key(&paths.private_key)?;
    let chain_length = chain.len();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| CertificateError::BadKey {
            path: paths.private_key.clone(),
            reason: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertificateError::Mismatch {
                certificate: paths.certificate.clone(),
                private_key: paths.private_key.clone(),
            });
        }
    }
    Ok((
        certified,
        Loaded {
            chain_length,
            validity,
        },
    ))
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let bytes = read_file(path)?;
    let not_pem = |reason: String| CertificateError::NotPem {
        path: path.to_path_buf(),
        what: "PEM certificate",
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| not_pem(error.to_string()))?;
    if chain.is_empty() {
        return Err(not_pem("no BEGIN CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertificateError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| CertificateError::NotPem {
        path: path.to_path_buf(),
        what: "PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

    use super::*;

    /// A scratch directory for one test's files.
    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "ringcast-certificates-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The content of the DER element at the front of `der` with tag `tag`, and the rest.
    fn der_element(der: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(der[0], tag);
        let (length, header) = match der[1] {
            length @ 0..=0x7F => (usize::from(length), 2),
            0x81 => (usize::from(der[2]), 3),
            0x82 => (usize::from(u16::from_be_bytes([der[2], der[3]])), 4),
            other => panic!("length form {other:#x}"),
        };
        der[header..].split_at(length)
    }

    /// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (RFC 5208 §5).
    fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
        let (info, _) = der_element(pkcs8, 0x30);
        let (_, rest) = der_element(info, 0x02); // version
        let (_, rest) = der_element(rest, 0x30); // algorithm
        let (key, _) = der_element(rest, 0x04);
        key.to_vec()
    }

    /// Writes a certificate for `key` (valid `days` from `start_days` days from now) and the key
    /// as `key_pem`, and returns their paths.
    fn write_pair(
        directory: &Path,
        key: &rcgen::KeyPair,
        key_pem: &str,
        validity_days: (i64, i64),
    ) -> CertificatePaths {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(validity_days.0);
        params.not_after = now + time::Duration::days(validity_days.1);
        let certificate = params.self_signed(key).unwrap();
        let paths = CertificatePaths {
            certificate: directory.join("certificate.pem"),
            private_key: directory.join("key.pem"),
        };
        std::fs::write(&paths.certificate, certificate.pem()).unwrap();
        std::fs::write(&paths.private_key, key_pem).unwrap();
        paths
    }

    fn load_error(paths: &CertificatePaths) -> String {
        match Certificates::load(paths.clone(), provider()) {
            Ok(_) => panic!("loaded {paths:?}"),
            Err(error) => error.to_string(),
        }
    }

    /// Proves the three key formats load: PKCS#8, SEC1 (EC) and PKCS#1 (RSA).
    #[test]
    fn every_key_format_loads() {
        let directory = directory("formats");
        let key = rcgen::KeyPair::generate().unwrap();
        let paths = write_pair(&directory, &key, &key.serialize_pem(), (-1, 30));
        let (_, loaded) = Certificates::load(paths, provider()).unwrap();
        assert_eq!(loaded.chain_length, 1);

        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let sec1 = ec.private_key().as_der().unwrap();
        let key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let paths = write_pair(
            &directory,
            &key,
            &pem("EC PRIVATE KEY", sec1.as_ref()),
            (-1, 30),
        );
        Certificates::load(paths, provider()).unwrap();

        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let pkcs1 = pkcs1_of(&rsa.serialize_der());
        let paths = write_pair(&directory, &rsa, &pem("RSA PRIVATE KEY", &pkcs1), (-1, 30));
        Certificates::load(paths, provider()).unwrap();
    }

    /// Proves each problem stops loading with a message naming the file and the problem.
    #[test]
    fn problems_name_the_file() {
        let directory = directory("problems");
        let key = rcgen::KeyPair::generate().unwrap();
        let good = write_pair(&directory, &key, &key.serialize_pem(), (-1, 30));

        let missing = CertificatePaths {
            certificate: directory.join("absent.pem"),
            ..good.clone()
        };
        let message = load_error(&missing);
        assert!(message.contains("absent.pem: no such file"), "{message}");

        let unreadable = CertificatePaths {
            private_key: directory.clone(),
            ..good.clone()
        };
        let message = load_error(&unreadable);
        assert!(message.contains("cannot be read"), "{message}");
        assert!(
            message.contains(&directory.display().to_string()),
            "{message}"
        );

        let not_pem = CertificatePaths {
            certificate: good.private_key.clone(),
            ..good.clone()
        };
        let message = load_error(&not_pem);
        assert!(message.contains("key.pem: no PEM certificate"), "{message}");

        let no_key = CertificatePaths {
            private_key: good.certificate.clone(),
            ..good.clone()
        };
        let message = load_error(&no_key);
        assert!(
            message.contains("certificate.pem: no PEM private key"),
            "{message}"
        );

        let other = directory.join("other-key.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let mismatch = CertificatePaths {
            private_key: other,
            ..good.clone()
        };
        let message = load_error(&mismatch);
        assert!(
            message.contains("other-key.pem: this key does not match"),
            "{message}"
        );

        let expired = write_pair(&directory, &key, &key.serialize_pem(), (-30, -1));
        let message = load_error(&expired);
        assert!(
            message.contains("certificate.pem: the certificate expired on"),
            "{message}"
        );

        let early = write_pair(&directory, &key, &key.serialize_pem(), (2, 30));
        let message = load_error(&early);
        assert!(message.contains("is not valid before"), "{message}");
    }

    /// Proves a reload swaps in a good new pair and keeps the old one when the new one fails.
    #[test]
    fn reload_swaps_only_a_good_pair() {
        let directory = directory("reload");
        let key = rcgen::KeyPair::generate().unwrap();
        let paths = write_pair(&directory, &key, &key.serialize_pem(), (-1, 30));
        let (certificates, _) = Certificates::load(paths.clone(), provider()).unwrap();
        let current = |certificates: &Certificates| -> Vec<u8> {
            let key = Arc::clone(&certificates.current.read().unwrap());
            key.end_entity_cert().unwrap().to_vec()
        };
        let first = current(&certificates);
        let new_key = rcgen::KeyPair::generate().unwrap();
        write_pair(&directory, &new_key, &new_key.serialize_pem(), (-1, 60));
        certificates.reload().unwrap();
        let second = current(&certificates);
        assert_ne!(first, second);
        // A half-written update: the new certificate with the old key.
        let third_key = rcgen::KeyPair::generate().unwrap();
        write_pair(&directory, &third_key, &key.serialize_pem(), (-1, 60));
        let error = certificates.reload().unwrap_err().to_string();
        assert!(error.contains("does not match"), "{error}");
        assert_eq!(current(&certificates), second, "the previous pair stays");
    }
}
