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
