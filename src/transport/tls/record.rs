//! The TLS record layer after the handshake: records opened in place where they were received,
//! and sealed in place in the buffer they are sent from.
//!
//! rustls runs the handshake; once it is over, the connection's traffic keys are taken out
//! (`dangerous_into_kernel_connection`, the hand-off rustls provides for kernel TLS) and the
//! records are protected here with the provider's AEAD primitives directly. This is what the
//! kernel's TLS module would do with the same keys, in user space: rustls 0.23's own record
//! layer copies every record into a fresh allocation on both paths, which a fanout server cannot
//! afford per delivery, and keeps its buffers while a connection is idle. rustls' remains of the
//! connection are dropped at once: TLS 1.3 key updates are derived here from the two traffic
//! secrets ([`super::secrets`]), which is all an idle connection keeps besides its two keys.
//!
//! Record formats (RFC 8446 §5.2 for TLS 1.3, RFC 5246 §6.2.3.3 with RFC 5288 and RFC 7905 for
//! TLS 1.2 AEAD suites):
//!
//! ```text
//! TLS 1.3:            [23, 3, 3, length] [content | type] [tag 16]     nonce = iv ^ seq
//!                     additional data: the 5-byte header
//! TLS 1.2 AES-GCM:    [type, 3, 3, length] [explicit nonce 8] [content] [tag 16]
//!                     nonce = iv[..4] | explicit nonce (we send iv ^ seq)
//! TLS 1.2 ChaCha20:   [type, 3, 3, length] [content] [tag 16]           nonce = iv ^ seq
//!                     additional data (both 1.2 forms): seq 8 | type | 3, 3 | content length 2
//! ```

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey};
use aws_lc_rs::aead::{Algorithm, NONCE_LEN, Nonce, UnboundKey};
use rustls::crypto::hash::HashAlgorithm;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

use super::secrets::{CapturedSecrets, Hash, TrafficSecret};

/// Bytes of a record header: content type, legacy version, length.
pub const HEADER_BYTES: usize = 5;
/// Bytes of the AEAD tag of every suite rustls offers (AES-GCM, ChaCha20-Poly1305).
pub const TAG_BYTES: usize = 16;
/// Most content one record carries (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub const CONTENT_BYTES_MAX: usize = 1 << 14;
/// Most ciphertext a TLS 1.3 record may carry (RFC 8446 §5.2).
const TLS13_CIPHERTEXT_BYTES_MAX: usize = CONTENT_BYTES_MAX + 256;
/// Most ciphertext a TLS 1.2 record may carry (RFC 5246 §6.2.3).
const TLS12_CIPHERTEXT_BYTES_MAX: usize = CONTENT_BYTES_MAX + 2048;
/// Bytes of the explicit nonce of a TLS 1.2 AES-GCM record (RFC 5288 §3).
const GCM_EXPLICIT_NONCE_BYTES: usize = 8;

/// Record content types (RFC 8446 §B.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    ChangeCipherSpec = 20,
    Alert = 21,
    Handshake = 22,
    ApplicationData = 23,
}

impl ContentType {
    fn from_byte(byte: u8) -> Option<ContentType> {
        Some(match byte {
            20 => ContentType::ChangeCipherSpec,
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            _ => return None,
        })
    }
}

/// The alerts this layer sends (RFC 8446 §6): why a record was refused, or close_notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    CloseNotify = 0,
    UnexpectedMessage = 10,
    BadRecordMac = 20,
    RecordOverflow = 22,
    DecodeError = 50,
    InternalError = 80,
}

impl Alert {
    /// The alert's level byte: close_notify is a warning, every other one here is fatal.
    fn level(self) -> u8 {
        match self {
            Alert::CloseNotify => 1,
            _ => 2,
        }
    }
}

/// A record this layer refused, and the alert that says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub Alert);

/// Bytes of the longest AEAD key (AES-256-GCM, ChaCha20-Poly1305).
const KEY_BYTES_MAX: usize = 32;

/// The protocol version the handshake agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// One direction's key, its IV and its sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl std::fmt::Debug for Direction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and IVs stay out of logs.
        formatter
            .debug_struct("Direction")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Direction, Refused> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            // Every suite of the provider ringcast configures is one of the three above.
            _ => return Err(Refused(Alert::InternalError)),
        };
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| internal())?;
        Direction::from_key(algorithm, key.as_ref(), iv, seq)
    }

    fn from_key(
        algorithm: &'static Algorithm,
        key: &[u8],
        iv: [u8; NONCE_LEN],
        seq: u64,
    ) -> Result<Direction, Refused> {
        let key = UnboundKey::new(algorithm, key).map_err(|_| internal())?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The first key and IV of `secret`, for the same algorithm as this direction's.
    fn derive(&self, secret: &TrafficSecret, hash: Hash) -> Result<Direction, Refused> {
        let algorithm = self.key.algorithm();
        let (key, iv) = derive_key_and_iv(algorithm, secret, hash)?;
        Direction::from_key(algorithm, &key[..algorithm.key_len()], iv, 0)
    }

    /// The per-record nonce: the IV with the sequence number XORed into its last 8 bytes.
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = self.iv;
        for (byte, seq_byte) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq_byte;
        }
        nonce
    }

    fn advance(&mut self) -> Result<(), Refused> {
        self.seq = self.seq.checked_add(1).ok_or_else(internal)?;
        Ok(())
    }
}

fn internal() -> Refused {
    Refused(Alert::InternalError)
}

/// The traffic key (in the first `algorithm.key_len()` bytes) and IV of `secret`.
fn derive_key_and_iv(
    algorithm: &'static Algorithm,
    secret: &TrafficSecret,
    hash: Hash,
) -> Result<([u8; KEY_BYTES_MAX], [u8; NONCE_LEN]), Refused> {
    let mut key = [0u8; KEY_BYTES_MAX];
    let mut iv = [0u8; NONCE_LEN];
    let key_bytes = key.get_mut(..algorithm.key_len()).ok_or_else(internal)?;
    secret
        .derive_key_and_iv(hash, key_bytes, &mut iv)
        .ok_or_else(internal)?;
    Ok((key, iv))
}

/// TLS 1.3's two application traffic secrets, from which key updates are derived.
#[derive(Debug)]
struct Tls13Secrets {
    hash: Hash,
    client: TrafficSecret,
    server: TrafficSecret,
}

impl Tls13Secrets {
    /// The captured secrets of a TLS 1.3 handshake, checked to be the ones the keys rustls
    /// handed over came from: anything else would break the connection at its first key update.
    fn new(
        captured: CapturedSecrets,
        hash: Hash,
        secrets: &ExtractedSecrets,
    ) -> Result<Tls13Secrets, Refused> {
        let (Some(client), Some(server)) = (captured.client, captured.server) else {
            return Err(internal());
        };
        if client.hash() != Some(hash) || server.hash() != Some(hash) {
            return Err(internal());
        }
        if !derives(&server, hash, &secrets.tx.1)? || !derives(&client, hash, &secrets.rx.1)? {
            return Err(internal());
        }
        Ok(Tls13Secrets {
            hash,
            client,
            server,
        })
    }
}

/// Whether `secret` derives the key and IV of `expected`.
fn derives(
    secret: &TrafficSecret,
    hash: Hash,
    expected: &ConnectionTrafficSecrets,
) -> Result<bool, Refused> {
    let (algorithm, key, iv) = match expected {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
        _ => return Err(internal()),
    };
    let (derived_key, derived_iv) = derive_key_and_iv(algorithm, secret, hash)?;
    Ok(&derived_key[..algorithm.key_len()] == key.as_ref() && derived_iv == iv.as_ref())
}

/// The record layer of one established connection.
pub struct RecordLayer {
    version: Version,
    /// TLS 1.2 AES-GCM records carry an explicit nonce; TLS 1.3 and ChaCha20 ones do not.
    explicit_nonce_bytes: usize,
    tx: Direction,
    rx: Direction,
    /// Records sealed under one key at most (the suite's confidentiality limit).
    tx_records_max: u64,
    /// TLS 1.3's traffic secrets, for key updates (TLS 1.2 has none). Out of line: they are
    /// read once in a long while, and inline they would double the size of the state every
    /// connection's enum reserves.
    secrets: Option<Box<Tls13Secrets>>,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RecordLayer")
            .field("version", &self.version)
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .finish_non_exhaustive()
    }
}

impl RecordLayer {
    /// The record layer of a connection whose handshake rustls completed, with the traffic
    /// secrets its handshake derived (TLS 1.3). `kernel` is only read, then dropped.
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
        captured: CapturedSecrets,
    ) -> Result<RecordLayer, Refused> {
        let version = match kernel.protocol_version() {
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            _ => return Err(internal()),
        };
        let explicit_nonce_bytes = match (&secrets.tx.1, version) {
            (ConnectionTrafficSecrets::Chacha20Poly1305 { .. }, _) | (_, Version::Tls13) => 0,
            _ => GCM_EXPLICIT_NONCE_BYTES,
        };
        let (tx_records_max, tls13_secrets) = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls12(suite) => (suite.common.confidentiality_limit, None),
            SupportedCipherSuite::Tls13(suite) => {
                let hash = match suite.common.hash_provider.algorithm() {
                    HashAlgorithm::SHA256 => Hash::Sha256,
                    HashAlgorithm::SHA384 => Hash::Sha384,
                    _ => return Err(internal()),
                };
                let tls13_secrets = Tls13Secrets::new(captured, hash, &secrets)?;
                (
                    suite.common.confidentiality_limit,
                    Some(Box::new(tls13_secrets)),
                )
            }
        };
        Ok(RecordLayer {
            version,
            explicit_nonce_bytes,
            tx: Direction::new(secrets.tx)?,
            rx: Direction::new(secrets.rx)?,
            tx_records_max,
            secrets: tls13_secrets,
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Where a record's content starts, from its header.
    pub fn content_offset(&self) -> usize {
        HEADER_BYTES + self.explicit_nonce_bytes
    }

    /// Bytes a sealed record adds to its content.
    pub fn overhead(&self) -> usize {
        let inner_type = usize::from(self.version == Version::Tls13);
        HEADER_BYTES + self.explicit_nonce_bytes + inner_type + TAG_BYTES
    }

    /// The whole length of the record whose header is `header`, checked against the limits of
    /// the version: a record that could not be valid is refused before it is waited for.
    pub fn record_bytes(&self, header: &[u8; HEADER_BYTES]) -> Result<usize, Refused> {
        if ContentType::from_byte(header[0]).is_none() || header[1] != 3 {
            return Err(Refused(Alert::DecodeError));
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let maximum = match self.version {
            Version::Tls13 => TLS13_CIPHERTEXT_BYTES_MAX,
            Version::Tls12 => TLS12_CIPHERTEXT_BYTES_MAX,
        };
        if length > maximum {
            return Err(Refused(Alert::RecordOverflow));
        }
        if length == 0 {
            return Err(Refused(Alert::DecodeError));
        }
        Ok(HEADER_BYTES + length)
    }

    /// Opens one whole record (header included) in place and returns its content type and
    /// content, a slice of `record`.
    pub fn open<'a>(
        &mut self,
        record: &'a mut [u8],
    ) -> Result<(ContentType, &'a mut [u8]), Refused> {
        let (header, body) = record.split_at_mut(HEADER_BYTES);
        let header: [u8; HEADER_BYTES] = (*header).try_into().expect("split at the header");
        let outer = ContentType::from_byte(header[0]).ok_or(Refused(Alert::DecodeError))?;
        match self.version {
            Version::Tls13 => self.open_tls13(outer, header, body),
            Version::Tls12 => self.open_tls12(outer, body),
        }
    }

    fn open_tls13<'a>(
        &mut self,
        outer: ContentType,
        header: [u8; HEADER_BYTES],
        body: &'a mut [u8],
    ) -> Result<(ContentType, &'a mut [u8]), Refused> {
        // Every record after the handshake is protected and says application_data outside
        // (RFC 8446 §5.2); a change_cipher_spec is allowed only during the handshake (§5).
        if outer != ContentType::ApplicationData {
            return Err(Refused(Alert::UnexpectedMessage));
        }
        if body.len() < TAG_BYTES + 1 {
            return Err(Refused(Alert::BadRecordMac));
        }
        let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
        let inner = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| Refused(Alert::BadRecordMac))?;
        self.rx.advance()?;
        // The content type is the last non-zero byte; zeros after it are padding (§5.4).
        let type_index = inner
            .iter()
            .rposition(|&byte| byte != 0)
            .ok_or(Refused(Alert::UnexpectedMessage))?;
        if type_index > CONTENT_BYTES_MAX {
            return Err(Refused(Alert::RecordOverflow));
        }
        let inner_type =
            ContentType::from_byte(inner[type_index]).ok_or(Refused(Alert::UnexpectedMessage))?;
        Ok((inner_type, &mut inner[..type_index]))
    }

    fn open_tls12<'a>(
        &mut self,
        outer: ContentType,
        body: &'a mut [u8],
    ) -> Result<(ContentType, &'a mut [u8]), Refused> {
        let explicit_bytes = self.explicit_nonce_bytes;
        if body.len() < explicit_bytes + TAG_BYTES {
            return Err(Refused(Alert::BadRecordMac));
        }
        let content_bytes = body.len() - explicit_bytes - TAG_BYTES;
        if content_bytes > CONTENT_BYTES_MAX {
            return Err(Refused(Alert::RecordOverflow));
        }
        let (explicit, ciphertext) = body.split_at_mut(explicit_bytes);
        let nonce = match explicit_bytes {
            0 => self.rx.nonce(),
            _ => {
                let mut nonce = self.rx.iv;
                nonce[4..].copy_from_slice(explicit);
                nonce
            }
        };
        let aad = tls12_additional_data(self.rx.seq, outer, content_bytes);
        let content = self
            .rx
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                ciphertext,
            )
            .map_err(|_| Refused(Alert::BadRecordMac))?;
        self.rx.advance()?;
        Ok((outer, content))
    }

    /// Seals one record in place: `out` starts where the record goes, and its content of
    /// `content_bytes` is already at [`RecordLayer::content_offset`]; `out` has room for the
    /// [`RecordLayer::overhead`]. Returns the record's length.
    pub fn seal(
        &mut self,
        out: &mut [u8],
        content_bytes: usize,
        content_type: ContentType,
    ) -> Result<usize, Refused> {
        assert!(
            content_bytes <= CONTENT_BYTES_MAX,
            "one record's content at most"
        );
        let record_bytes = content_bytes + self.overhead();
        assert!(out.len() >= record_bytes, "room for the record's overhead");
        let length = (record_bytes - HEADER_BYTES) as u16;
        let outer = match self.version {
            Version::Tls13 => ContentType::ApplicationData,
            Version::Tls12 => content_type,
        };
        let header = [outer as u8, 3, 3, (length >> 8) as u8, length as u8];
        out[..HEADER_BYTES].copy_from_slice(&header);
        let nonce = self.tx.nonce();
        let offset = self.content_offset();
        // TLS 1.3 authenticates the header; TLS 1.2 its own 13 bytes.
        let (sealed_bytes, aad, aad_bytes) = match self.version {
            Version::Tls13 => {
                out[offset + content_bytes] = content_type as u8;
                let mut aad = [0u8; 13];
                aad[..HEADER_BYTES].copy_from_slice(&header);
                (content_bytes + 1, aad, HEADER_BYTES)
            }
            Version::Tls12 => {
                let explicit = &nonce[4..4 + self.explicit_nonce_bytes];
                out[HEADER_BYTES..offset].copy_from_slice(explicit);
                let aad = tls12_additional_data(self.tx.seq, content_type, content_bytes);
                (content_bytes, aad, aad.len())
            }
        };
        let in_out = &mut out[offset..offset + sealed_bytes];
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_bytes]),
                in_out,
            )
            .map_err(|_| internal())?;
        let tag_start = offset + sealed_bytes;
        out[tag_start..tag_start + TAG_BYTES].copy_from_slice(tag.as_ref());
        self.tx.advance()?;
        Ok(record_bytes)
    }

    /// Seals `content` (copied in) as one record at the start of `out`.
    pub fn seal_copy(
        &mut self,
        out: &mut [u8],
        content: &[u8],
        content_type: ContentType,
    ) -> Result<usize, Refused> {
        let offset = self.content_offset();
        out[offset..offset + content.len()].copy_from_slice(content);
        self.seal(out, content.len(), content_type)
    }

    /// Bytes of an alert record.
    pub fn alert_bytes(&self) -> usize {
        2 + self.overhead()
    }

    /// Seals `alert` at the start of `out`.
    pub fn seal_alert(&mut self, out: &mut [u8], alert: Alert) -> Result<usize, Refused> {
        self.seal_copy(out, &[alert.level(), alert as u8], ContentType::Alert)
    }

    /// Whether the next record sealed would pass the suite's confidentiality limit: TLS 1.3
    /// updates its keys first, TLS 1.2 cannot and closes.
    pub fn tx_needs_new_key(&self) -> bool {
        self.tx.seq.saturating_add(1) >= self.tx_records_max
    }

    #[cfg(test)]
    pub(crate) fn set_tx_records_max_for_test(&mut self, records: u64) {
        self.tx_records_max = records;
    }

    /// Switches to the peer's next traffic key after its KeyUpdate (TLS 1.3 only).
    pub fn update_rx_key(&mut self) -> Result<(), Refused> {
        let secrets = self.secrets.as_mut().ok_or_else(internal)?;
        secrets.client.update(secrets.hash).ok_or_else(internal)?;
        self.rx = self.rx.derive(&secrets.client, secrets.hash)?;
        Ok(())
    }

    /// Switches to our next traffic key, once our KeyUpdate is sealed (TLS 1.3 only).
    pub fn update_tx_key(&mut self) -> Result<(), Refused> {
        let secrets = self.secrets.as_mut().ok_or_else(internal)?;
        secrets.server.update(secrets.hash).ok_or_else(internal)?;
        self.tx = self.tx.derive(&secrets.server, secrets.hash)?;
        Ok(())
    }
}

/// The additional data of a TLS 1.2 AEAD record (RFC 5246 §6.2.3.3).
fn tls12_additional_data(seq: u64, content_type: ContentType, content_bytes: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type as u8;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(content_bytes as u16).to_be_bytes());
    aad
}
