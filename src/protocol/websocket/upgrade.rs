//! The WebSocket upgrade (RFC 6455 §4.2): checking an upgrade request, the
//! `Sec-WebSocket-Accept` key, and the 101 response. The request head itself is parsed by
//! `http1::head`; a refusal is written by `http1::response::write_error_response`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use sha1::{Digest as _, Sha1};

use crate::protocol::http1::error::HandshakeError;
use crate::protocol::http1::head::{HEADERS_COUNT_MAX, Request, parse_request_head};
use crate::protocol::http1::response::write_header;
use crate::protocol::limits::ProtocolLimits;
use crate::protocol::websocket::deflate::{self, DeflateAgreement};

/// Length of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub const ACCEPT_KEY_BYTES: usize = 28;
/// The only WebSocket version RFC 6455 defines, and the one we answer a 426 with.
pub const WEBSOCKET_VERSION: &str = "13";

/// The GUID RFC 6455 §1.3 appends to the client's key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A client key is 16 random bytes, which base64 spells in 24 characters with padding.
const KEY_BYTES: usize = 16;
const KEY_BASE64_BYTES: usize = 24;
/// base64's decoder wants room for its upper estimate (three bytes per four characters) even
/// when padding makes the result shorter.
const KEY_DECODE_BUFFER_BYTES: usize = KEY_BASE64_BYTES / 4 * 3;

const _: () = assert!(ACCEPT_KEY_BYTES == 20_usize.div_ceil(3) * 4);
const _: () = assert!(KEY_BASE64_BYTES == KEY_BYTES.div_ceil(3) * 4);

/// Parses the head of a request that may be an upgrade, under the protocol's header limit (see
/// [`parse_request_head`]).
pub fn parse_request<'headers, 'buffer>(
    input: &'buffer [u8],
    headers: &'headers mut [httparse::Header<'buffer>; HEADERS_COUNT_MAX],
    limits: &ProtocolLimits,
) -> Result<Option<Request<'headers, 'buffer>>, HandshakeError> {
    parse_request_head(input, headers, limits.header_bytes_max)
}

/// What a valid upgrade request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade<'buffer> {
    /// The `Sec-WebSocket-Accept` value, base64 (ASCII).
    pub accept_key: [u8; ACCEPT_KEY_BYTES],
    /// The subprotocol chosen from the client's offer, if any.
    pub subprotocol: Option<&'buffer str>,
    /// permessage-deflate, when configured and the client offered it acceptably.
    pub deflate: Option<DeflateAgreement>,
}

impl Upgrade<'_> {
    /// The accept key as text.
    pub fn accept_key_str(&self) -> &str {
        std::str::from_utf8(&self.accept_key).expect("base64 is ASCII")
    }
}

/// Checks an upgrade request against RFC 6455 §4.2.1 and our configuration, in the order the
/// RFC lists the fields, and computes the answer. The request should satisfy
/// [`Request::is_websocket_upgrade`]; one that does not is refused with 426.
pub fn accept_upgrade<'buffer>(
    request: &Request<'_, 'buffer>,
    config: &ProtocolLimits,
) -> Result<Upgrade<'buffer>, HandshakeError> {
    check_request_line_and_upgrade(request)?;
    let key = single_valid_key(request)?;
    let version = request
        .header("sec-websocket-version")
        .map(<[u8]>::trim_ascii);
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    check_origin(request, config)?;
    let subprotocol = select_subprotocol(request, config)?;
    let deflate = match config.websocket_compression {
        true => deflate::negotiate(request.header_values("sec-websocket-extensions")),
        false => None,
    };
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol,
        deflate,
    })
}

/// Method, version, Host, `Upgrade: websocket` and `Connection: upgrade` (§4.2.1 items 1–4).
fn check_request_line_and_upgrade(request: &Request<'_, '_>) -> Result<(), HandshakeError> {
    if request.method() != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.version_minor() < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if request.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !request.is_websocket_upgrade() {
        return Err(HandshakeError::MissingUpgradeWebSocket);
    }
    if !request.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    Ok(())
}

/// The one `Sec-WebSocket-Key`, trimmed, once it is known to be 16 bytes of padded base64.
fn single_valid_key<'buffer>(
    request: &Request<'_, 'buffer>,
) -> Result<&'buffer [u8], HandshakeError> {
    let mut keys = request.header_values("sec-websocket-key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HandshakeError::MissingKey);
    };
    let key = key.trim_ascii();
    if key.len() != KEY_BASE64_BYTES {
        return Err(HandshakeError::InvalidKey);
    }
    let mut decoded = [0u8; KEY_DECODE_BUFFER_BYTES];
    match BASE64.decode_slice(key, &mut decoded) {
        Ok(KEY_BYTES) => Ok(key),
        Ok(_) | Err(_) => Err(HandshakeError::InvalidKey),
    }
}

/// With an allow-list configured, the `Origin` must be on it; a client that sends none is
/// refused too, since only browsers are bound by the list and browsers always send one.
fn check_origin(request: &Request<'_, '_>, config: &ProtocolLimits) -> Result<(), HandshakeError> {
    if config.origins_allowed.is_empty() {
        return Ok(());
    }
    let origin = request.header("origin").map(<[u8]>::trim_ascii);
    let allowed = origin.is_some_and(|origin| {
        config
            .origins_allowed
            .iter()
            .any(|allowed| allowed.as_bytes() == origin)
    });
    if allowed {
        Ok(())
    } else {
        Err(HandshakeError::OriginNotAllowed)
    }
}

/// The first of our subprotocols, in our order of preference, that the client offers. Names
/// compare exactly: RFC 6455 §11.3.4 registers them as case-sensitive tokens.
fn select_subprotocol<'buffer>(
    request: &Request<'_, 'buffer>,
    config: &ProtocolLimits,
) -> Result<Option<&'buffer str>, HandshakeError> {
    let offered = || {
        request
            .header_values("sec-websocket-protocol")
            .flat_map(|value| value.split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty())
    };
    for preferred in &config.subprotocols {
        if let Some(token) = offered().find(|token| *token == preferred.as_bytes()) {
            let token = std::str::from_utf8(token).expect("equal to the bytes of a String");
            return Ok(Some(token));
        }
    }
    if config.subprotocol_required && offered().next().is_some() {
        return Err(HandshakeError::NoAcceptableSubprotocol);
    }
    Ok(None)
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)) (RFC 6455 §1.3). The key
/// is hashed as sent, not decoded.
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_KEY_BYTES] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(WEBSOCKET_GUID)
        .finalize();
    let mut accept = [0u8; ACCEPT_KEY_BYTES];
    let written = BASE64
        .encode_slice(digest, &mut accept)
        .expect("28 bytes hold the base64 of a 20-byte digest");
    assert_eq!(written, ACCEPT_KEY_BYTES);
    accept
}

/// Appends the 101 response that completes the handshake.
pub fn write_switching_protocols(upgrade: &Upgrade<'_>, out: &mut BytesMut) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&upgrade.accept_key);
    out.extend_from_slice(b"\r\n");
    if let Some(subprotocol) = upgrade.subprotocol {
        write_header("Sec-WebSocket-Protocol", subprotocol, out);
    }
    if let Some(deflate) = upgrade.deflate {
        deflate.write_response_header(out);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the accept key matches the worked example of RFC 6455 §1.3.
    #[test]
    fn accept_key_matches_rfc_example() {
        let accept = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
