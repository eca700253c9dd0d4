//! TLS 1.3's application traffic secrets, kept after the handshake so that key updates are
//! followed with a few HKDF expansions (RFC 8446 §7.2), without rustls.
//!
//! rustls hands the traffic keys over (`dangerous_into_kernel_connection`) but keeps the
//! secrets they came from in its kernel connection, the whole of which (about 780 bytes: the key
//! schedule, the exporter secret, QUIC state) an idle connection would have to keep only to
//! derive the next key once in a long while. The secrets themselves are 32 or 48 bytes each.
//! rustls gives them out in one way: its key log, which it calls while it derives them, on the
//! thread that drives the handshake. [`SecretCapture`] is a key log that keeps the two
//! application traffic secrets in a thread-local slot; [`capture`] empties that slot before one
//! call into a connection's handshake and takes what the call put there, so that each secret
//! goes to the connection whose handshake derived it (calls into rustls never nest). The
//! secrets never leave the process, and the record layer checks them against the keys rustls
//! hands over before it trusts them.

use std::cell::RefCell;

use aws_lc_rs::hkdf::{HKDF_SHA256, HKDF_SHA384, KeyType, Prk};
use rustls::KeyLog;

/// Bytes of the longest secret: SHA-384's output (TLS_AES_256_GCM_SHA384).
const SECRET_BYTES_MAX: usize = 48;

/// The labels rustls logs the first application traffic secrets under (NSS key log format).
const CLIENT_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

/// The hash of a TLS 1.3 suite, which its key schedule's HKDF uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    fn output_bytes(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }
}

/// One direction's current application traffic secret.
pub struct TrafficSecret {
    bytes: [u8; SECRET_BYTES_MAX],
    length: u8,
}

impl TrafficSecret {
    fn new(secret: &[u8]) -> Option<TrafficSecret> {
        let mut bytes = [0u8; SECRET_BYTES_MAX];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(TrafficSecret {
            bytes,
            length: secret.len() as u8,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.length)]
    }

    /// The hash whose output this secret is, by its length.
    pub fn hash(&self) -> Option<Hash> {
        match self.length {
            32 => Some(Hash::Sha256),
            48 => Some(Hash::Sha384),
            _ => None,
        }
    }

    /// Moves to the next generation (RFC 8446 §7.2):
    /// `HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`.
    pub fn update(&mut self, hash: Hash) -> Option<()> {
        let mut next = [0u8; SECRET_BYTES_MAX];
        let length = hash.output_bytes();
        expand_label(hash, self.as_bytes(), b"traffic upd", &mut next[..length])?;
        self.bytes = next;
        self.length = length as u8;
        next.fill(0);
        Some(())
    }

    /// Derives the traffic key and IV of this secret (RFC 8446 §7.3) into `key` and `iv`,
    /// whose lengths are the suite's.
    pub fn derive_key_and_iv(&self, hash: Hash, key: &mut [u8], iv: &mut [u8]) -> Option<()> {
        expand_label(hash, self.as_bytes(), b"key", key)?;
        expand_label(hash, self.as_bytes(), b"iv", iv)
    }
}

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        // A secret does not outlive its connection in freed memory.
        self.bytes.fill(0);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for TrafficSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        formatter
            .debug_struct("TrafficSecret")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Bytes asked of an HKDF expansion.
struct OutputBytes(usize);

impl KeyType for OutputBytes {
    fn len(&self) -> usize {
        self.0
    }
}

/// `HKDF-Expand-Label(secret, label, "", output.len())` (RFC 8446 §7.1), into `output`.
fn expand_label(hash: Hash, secret: &[u8], label: &[u8], output: &mut [u8]) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let algorithm = match hash {
        Hash::Sha256 => HKDF_SHA256,
        Hash::Sha384 => HKDF_SHA384,
    };
    // struct { uint16 length; opaque label<7..255>; opaque context<0..255>; } HkdfLabel
    let length = u16::try_from(output.len()).ok()?.to_be_bytes();
    let label_length = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let info: [&[u8]; 5] = [&length, &label_length, PREFIX, label, &[0]];
    let prk = Prk::new_less_safe(algorithm, secret);
    let okm = prk.expand(&info, OutputBytes(output.len())).ok()?;
    okm.fill(output).ok()
}

/// The two application traffic secrets of a handshake, as they are captured.
#[derive(Debug, Default)]
pub struct CapturedSecrets {
    pub client: Option<TrafficSecret>,
    pub server: Option<TrafficSecret>,
}

thread_local! {
    /// What the key log was given during the current call into rustls on this thread.
    static CAPTURED: RefCell<CapturedSecrets> = const {
        RefCell::new(CapturedSecrets { client: None, server: None })
    };
}

/// Runs one call into a connection's handshake and keeps in `secrets` the traffic secrets its
/// key log was given meanwhile (see the module documentation).
pub fn capture<T>(secrets: &mut CapturedSecrets, call: impl FnOnce() -> T) -> T {
    // A call that panicked may have left secrets behind: they are not this connection's.
    let _ = CAPTURED.with(|captured| captured.take());
    let value = call();
    let captured = CAPTURED.with(|captured| captured.take());
    if captured.client.is_some() {
        secrets.client = captured.client;
    }
    if captured.server.is_some() {
        secrets.server = captured.server;
    }
    value
}

/// The key log of the server's configuration: keeps the application traffic secrets for
/// [`capture`], and nothing else.
#[derive(Debug)]
pub struct SecretCapture;

impl KeyLog for SecretCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let Some(secret) = TrafficSecret::new(secret) else {
            return;
        };
        CAPTURED.with(|captured| {
            let mut captured = captured.borrow_mut();
            match label {
                CLIENT_LABEL => captured.client = Some(secret),
                SERVER_LABEL => captured.server = Some(secret),
                _ => {}
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_LABEL || label == SERVER_LABEL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves HKDF-Expand-Label against RFC 8448 §3 (simple 1-RTT handshake, SHA-256): the
    /// server's application traffic key and IV from its secret.
    #[test]
    fn expand_label_matches_rfc_8448() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let secret = TrafficSecret::new(&secret).unwrap();
        let (mut key, mut iv) = ([0u8; 16], [0u8; 12]);
        secret
            .derive_key_and_iv(Hash::Sha256, &mut key, &mut iv)
            .unwrap();
        assert_eq!(key.as_slice(), hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(iv.as_slice(), hex("cf782b88dd83549aadf1e984"));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
            .collect()
    }
}
