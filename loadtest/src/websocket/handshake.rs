//! The RFC 6455 opening handshake, both ends, sans-IO: the client's upgrade request and the
//! check of the server's answer (section 4.1), and the server's side for the floor programs
//! (section 4.2). Written here rather than taken from tungstenite so that the io_uring client
//! can build requests into its own buffers; the tests check both ends against tungstenite.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::deflate::{self, Negotiated, NegotiationError};

/// The GUID every accept key is derived with (RFC 6455, section 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Headers one handshake may carry; more is a peer we do not want to measure.
const HEADERS_MAX: usize = 32;

/// Bytes an answer or a request head may take before we give up on it.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not HTTP/1.1, or a head longer than [`HEAD_BYTES_MAX`].
    Malformed,
    /// The server answered with another status than 101.
    Status(u16),
    /// `Upgrade: websocket` or `Connection: Upgrade` is missing.
    NotUpgraded,
    /// `Sec-WebSocket-Accept` is missing or does not match our key.
    BadAccept,
    /// A request without `Sec-WebSocket-Key` (server side).
    NoKey,
    /// `Sec-WebSocket-Extensions` names an extension not offered, or offered badly answered.
    Extensions(NegotiationError),
}

/// `base64(sha1(key + GUID))`, the accept value for `key` (as sent, base64 text).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(ACCEPT_GUID);
    let mut accept = [0u8; 28];
    let written = BASE64
        .encode_slice(hasher.finalize(), &mut accept)
        .expect("20 bytes of SHA-1 are 28 bytes of base64");
    assert_eq!(written, 28);
    accept
}

/// One client handshake: the key sent and the accept value expected back.
#[derive(Clone, Copy, Debug)]
pub struct ClientKey {
    key: [u8; 24],
    accept: [u8; 28],
}

impl ClientKey {
    /// A key from 16 random bytes (RFC 6455 wants a fresh nonce per connection).
    pub fn new(nonce: [u8; 16]) -> Self {
        let mut key = [0u8; 24];
        let written = BASE64
            .encode_slice(nonce, &mut key)
            .expect("16 bytes are 24 bytes of base64");
        assert_eq!(written, 24);
        Self {
            key,
            accept: accept_key(&key),
        }
    }

    /// Appends the upgrade request for `path` on `host` (host:port) to `output`, with
    /// `authorization` as its `Authorization` header when given, offering permessage-deflate
    /// when `deflate`.
    pub fn write_request(
        &self,
        host: &str,
        path: &str,
        authorization: Option<&str>,
        deflate: bool,
        output: &mut Vec<u8>,
    ) {
        for part in [
            "GET ",
            path,
            " HTTP/1.1\r\nHost: ",
            host,
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Key: ",
        ] {
            output.extend_from_slice(part.as_bytes());
        }
        output.extend_from_slice(&self.key);
        if let Some(authorization) = authorization {
            output.extend_from_slice(b"\r\nAuthorization: ");
            output.extend_from_slice(authorization.as_bytes());
        }
        if deflate {
            output.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
            output.extend_from_slice(deflate::OFFER.as_bytes());
        }
        output.extend_from_slice(b"\r\n\r\n");
    }

    /// Checks the server's answer in `received`: `Ok(None)` until the head is complete,
    /// `Ok(Some(length))` with the head's length once it is a valid upgrade (bytes after it
    /// are already WebSocket frames). Any extension in the answer is refused: none was offered.
    #[cfg(test)]
    pub fn check_response(&self, received: &[u8]) -> Result<Option<usize>, HandshakeError> {
        Ok(self
            .check_response_deflate(received, false)?
            .map(|(length, _)| length))
    }

    /// [`ClientKey::check_response`] for a request that offered permessage-deflate when
    /// `offered`: also says what the server agreed to (`None`: it declined).
    pub fn check_response_deflate(
        &self,
        received: &[u8],
        offered: bool,
    ) -> Result<Option<(usize, Option<Negotiated>)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let length = match response.parse(received) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if received.len() <= HEAD_BYTES_MAX => return Ok(None),
            Ok(httparse::Status::Partial) | Err(_) => return Err(HandshakeError::Malformed),
        };
        if response.version != Some(1) {
            return Err(HandshakeError::Malformed);
        }
        match response.code {
            Some(101) => {}
            Some(code) => return Err(HandshakeError::Status(code)),
            None => return Err(HandshakeError::Malformed),
        }
        if !header_has_token(response.headers, "upgrade", "websocket")
            || !header_has_token(response.headers, "connection", "upgrade")
        {
            return Err(HandshakeError::NotUpgraded);
        }
        match header(response.headers, "sec-websocket-accept") {
            Some(value) if value.trim_ascii() == self.accept => {}
            _ => return Err(HandshakeError::BadAccept),
        }
        let extensions = response
            .headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|header| header.value);
        let negotiated =
            deflate::negotiated(extensions, offered).map_err(HandshakeError::Extensions)?;
        Ok(Some((length, negotiated)))
    }
}

/// The value of header `name` (case-insensitive), the first if repeated.
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

/// Whether header `name` lists `token` (case-insensitive, comma-separated).
fn header_has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case(name))
        .flat_map(|header| header.value.split(|byte| *byte == b','))
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Server side: a complete upgrade request in `received` gives its head's length and the
/// accept value to answer with; `Ok(None)` until the head is complete.
pub fn check_request(received: &[u8]) -> Result<Option<(usize, [u8; 28])>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(received) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if received.len() <= HEAD_BYTES_MAX => return Ok(None),
        Ok(httparse::Status::Partial) | Err(_) => return Err(HandshakeError::Malformed),
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return Err(HandshakeError::Malformed);
    }
    if !header_has_token(request.headers, "upgrade", "websocket") {
        return Err(HandshakeError::NotUpgraded);
    }
    match header(request.headers, "sec-websocket-key") {
        Some(key) => Ok(Some((length, accept_key(key.trim_ascii())))),
        None => Err(HandshakeError::NoKey),
    }
}

/// Appends the 101 answer carrying `accept` to `output`.
pub fn write_switching_protocols(accept: &[u8; 28], output: &mut Vec<u8>) {
    output.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    output.extend_from_slice(accept);
    output.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// The upgrade request carries `Authorization` when given, as one header an HTTP parser
    /// reads back whole.
    #[test]
    fn request_carries_the_authorization_header() {
        let key = ClientKey::new(*b"0123456789abcdef");
        let mut request = Vec::new();
        key.write_request(
            "127.0.0.1:9100",
            "/ws",
            Some("Bearer a.b.c"),
            false,
            &mut request,
        );
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&request).unwrap().is_complete());
        let authorization = parsed
            .headers
            .iter()
            .find(|header| header.name == "Authorization")
            .map(|header| header.value);
        assert_eq!(authorization, Some(&b"Bearer a.b.c"[..]));
    }

    /// The accept key matches RFC 6455's worked example and tungstenite's derivation.
    #[test]
    fn accept_key_matches_the_rfc_and_tungstenite() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(&accept_key(key), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let other = b"x3JJHMbDL1EzLkh9GBhXDw==";
        let expected = tungstenite::handshake::derive_accept_key(other);
        assert_eq!(&accept_key(other)[..], expected.as_bytes());
    }

    /// Our request upgrades against tungstenite's server, and its answer passes our check.
    #[test]
    fn client_handshake_against_tungstenite_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut socket = tungstenite::accept(stream).unwrap();
            socket.send(tungstenite::Message::text("hello")).unwrap();
        });
        let key = ClientKey::new(*b"0123456789abcdef");
        let mut request = Vec::new();
        key.write_request(&address.to_string(), "/ws", None, false, &mut request);
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(&request).unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        let head = loop {
            let count = stream.read(&mut buffer).unwrap();
            assert!(count > 0, "server closed during the handshake");
            received.extend_from_slice(&buffer[..count]);
            if let Some(head) = key.check_response(&received).unwrap() {
                break head;
            }
        };
        server.join().unwrap();
        // The text frame the server sent right after the 101 may follow the head.
        while received.len() < head + 7 {
            let count = stream.read(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..count]);
        }
        assert_eq!(&received[head..head + 7], b"\x81\x05hello");
    }

    /// Wrong status, missing headers and a wrong accept value are each refused.
    #[test]
    fn bad_answers_are_refused() {
        let key = ClientKey::new([7; 16]);
        let accept = std::str::from_utf8(&key.accept).unwrap().to_owned();
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, \
             Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert_eq!(key.check_response(good.as_bytes()), Ok(Some(good.len())));
        assert_eq!(key.check_response(&good.as_bytes()[..40]), Ok(None));
        let cases = [
            (
                good.replace("101 Switching", "200 Ok"),
                HandshakeError::Status(200),
            ),
            (
                good.replace("Upgrade: WebSocket\r\n", ""),
                HandshakeError::NotUpgraded,
            ),
            (good.replace(&accept, "AAAA"), HandshakeError::BadAccept),
            (
                good.replace(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                ),
                HandshakeError::Extensions(NegotiationError::NotOffered),
            ),
            (
                good.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::Malformed,
            ),
        ];
        for (answer, error) in cases {
            assert_eq!(
                key.check_response(answer.as_bytes()),
                Err(error),
                "{answer}"
            );
        }
        let endless = vec![b'a'; HEAD_BYTES_MAX + 1];
        assert_eq!(key.check_response(&endless), Err(HandshakeError::Malformed));
    }

    /// The deflate offer is one header an HTTP parser reads back; the answer's parameters
    /// come back from `check_response_deflate`, and a server that declines leaves `None`.
    #[test]
    fn deflate_is_offered_and_the_answer_read() {
        let key = ClientKey::new([9; 16]);
        let mut request = Vec::new();
        key.write_request("h:1", "/ws", None, true, &mut request);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&request).unwrap().is_complete());
        let offer = parsed
            .headers
            .iter()
            .find(|header| header.name == "Sec-WebSocket-Extensions");
        assert_eq!(
            offer.map(|header| header.value),
            Some(deflate::OFFER.as_bytes())
        );
        let accept = std::str::from_utf8(&key.accept).unwrap().to_owned();
        let answer = |extensions: &str| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
            )
        };
        let agreed =
            answer("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n");
        assert_eq!(
            key.check_response_deflate(agreed.as_bytes(), true),
            Ok(Some((
                agreed.len(),
                Some(Negotiated {
                    server_no_context_takeover: true,
                    server_max_window_bits: 15
                })
            )))
        );
        let declined = answer("");
        assert_eq!(
            key.check_response_deflate(declined.as_bytes(), true),
            Ok(Some((declined.len(), None)))
        );
    }

    /// tungstenite's client upgrades against our server side of the handshake.
    #[test]
    fn server_handshake_against_tungstenite_client() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let (mut socket, response) =
                tungstenite::connect(format!("ws://{address}/ws")).unwrap();
            assert_eq!(response.status(), 101);
            socket.read().unwrap()
        });
        let (mut stream, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        let (head, accept) = loop {
            let count = stream.read(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..count]);
            if let Some(found) = check_request(&received).unwrap() {
                break found;
            }
        };
        assert_eq!(head, received.len());
        let mut answer = Vec::new();
        write_switching_protocols(&accept, &mut answer);
        answer.extend_from_slice(b"\x81\x02hi");
        stream.write_all(&answer).unwrap();
        assert_eq!(client.join().unwrap(), tungstenite::Message::text("hi"));
    }
}
