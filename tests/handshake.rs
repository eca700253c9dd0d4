//! The HTTP/1.1 request parser and WebSocket upgrade, driven with byte slices: RFC 6455 examples,
//! every refusal and its response, incremental input, plain HTTP requests, a differential check
//! against tungstenite, property tests, and a counting allocator proving the path allocates
//! nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use proptest::prelude::*;
use ringcast::protocol::HandshakeError;
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::http1::head::HEADERS_COUNT_MAX;
use ringcast::protocol::http1::response::{write_error_response, write_response};
use ringcast::protocol::websocket::upgrade::{
    Upgrade, accept_key, accept_upgrade, parse_request, write_switching_protocols,
};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use counting_allocator::allocations_count;

/// The client handshake of RFC 6455 §1.3.
const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Version: 13\r\n\
    \r\n";

/// The header lines of a minimal valid upgrade; tests replace or drop lines to break it.
const VALID_LINES: [&str; 5] = [
    "Host: example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

fn request_bytes(request_line: &str, header_lines: &[&str]) -> Vec<u8> {
    let mut bytes = format!("{request_line}\r\n");
    for line in header_lines {
        bytes.push_str(line);
        bytes.push_str("\r\n");
    }
    bytes.push_str("\r\n");
    bytes.into_bytes()
}

/// A valid upgrade with the line starting with `replaced_prefix` swapped for `replacement`
/// (or dropped when `replacement` is empty), plus `added` lines.
fn upgrade_bytes(replaced_prefix: &str, replacement: &str, added: &[&str]) -> Vec<u8> {
    let mut lines: Vec<&str> = Vec::new();
    for line in VALID_LINES {
        if replaced_prefix.is_empty() || !line.starts_with(replaced_prefix) {
            lines.push(line);
        } else if !replacement.is_empty() {
            lines.push(replacement);
        }
    }
    lines.extend_from_slice(added);
    request_bytes("GET /ws HTTP/1.1", &lines)
}

/// Parses a complete request and runs the upgrade on it.
fn upgrade_result(input: &[u8], config: &ProtocolLimits) -> Result<Option<String>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let request = parse_request(input, &mut headers, config)?.expect("a complete head");
    let upgrade = accept_upgrade(&request, config)?;
    Ok(upgrade.subprotocol.map(str::to_owned))
}

fn error_response(error: &HandshakeError) -> String {
    let mut out = BytesMut::new();
    write_error_response(error, &mut out);
    String::from_utf8(out.to_vec()).expect("responses are text")
}

/// Proves the accept key of RFC 6455 §1.3 and that tungstenite derives the same one.
#[test]
fn accept_key_matches_rfc_and_tungstenite() {
    let key = b"dGhlIHNhbXBsZSBub25jZQ==";
    assert_eq!(&accept_key(key), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let expected = tungstenite::handshake::derive_accept_key(key);
    assert_eq!(accept_key(key).as_slice(), expected.as_bytes());
}

/// Proves the RFC 6455 §1.3 request is accepted and answered with exactly these bytes.
#[test]
fn rfc_request_gets_the_exact_101() {
    let config = ProtocolLimits {
        subprotocols: vec!["chat".into()],
        ..ProtocolLimits::default()
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let request = parse_request(RFC_REQUEST, &mut headers, &config)
        .unwrap()
        .unwrap();
    assert!(request.is_websocket_upgrade());
    assert_eq!(request.head_bytes(), RFC_REQUEST.len());
    let upgrade = accept_upgrade(&request, &config).unwrap();
    assert_eq!(upgrade.accept_key_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(upgrade.subprotocol, Some("chat"));
    let mut out = BytesMut::new();
    write_switching_protocols(&upgrade, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          Sec-WebSocket-Protocol: chat\r\n\
          \r\n"
    );
    let without_protocol = Upgrade {
        subprotocol: None,
        ..upgrade
    };
    out.clear();
    write_switching_protocols(&without_protocol, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          \r\n"
    );
}

/// Proves each rule of RFC 6455 §4.2.1 refuses with its own error and status.
#[test]
fn every_violation_has_its_error_and_status() {
    let config = ProtocolLimits::default();
    let key_17_bytes = BASE64.encode([7u8; 17]);
    let key_15_bytes = BASE64.encode([7u8; 15]);
    let key_17_line = format!("Sec-WebSocket-Key: {key_17_bytes}");
    let key_15_line = format!("Sec-WebSocket-Key: {key_15_bytes}");
    let cases: Vec<(Vec<u8>, HandshakeError, u16)> = vec![
        (
            request_bytes("POST /ws HTTP/1.1", &VALID_LINES),
            HandshakeError::MethodNotGet,
            405,
        ),
        (
            request_bytes("get /ws HTTP/1.1", &VALID_LINES),
            HandshakeError::MethodNotGet,
            405,
        ),
        (
            request_bytes("GET /ws HTTP/1.0", &VALID_LINES),
            HandshakeError::HttpVersionTooOld,
            400,
        ),
        (
            upgrade_bytes("Host", "", &[]),
            HandshakeError::MissingHost,
            400,
        ),
        (
            upgrade_bytes("Upgrade", "", &[]),
            HandshakeError::MissingUpgradeWebSocket,
            426,
        ),
        (
            upgrade_bytes("Connection", "", &[]),
            HandshakeError::MissingConnectionUpgrade,
            400,
        ),
        (
            upgrade_bytes("Connection", "Connection: keep-alive", &[]),
            HandshakeError::MissingConnectionUpgrade,
            400,
        ),
        (
            upgrade_bytes("Connection", "Connection: upgraded", &[]),
            HandshakeError::MissingConnectionUpgrade,
            400,
        ),
        (
            upgrade_bytes("Sec-WebSocket-Key", "", &[]),
            HandshakeError::MissingKey,
            400,
        ),
        (
            upgrade_bytes("", "", &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]),
            HandshakeError::MissingKey,
            400,
        ),
        (
            upgrade_bytes("Sec-WebSocket-Key", &key_17_line, &[]),
            HandshakeError::InvalidKey,
            400,
        ),
        (
            upgrade_bytes("Sec-WebSocket-Key", &key_15_line, &[]),
            HandshakeError::InvalidKey,
            400,
        ),
        (
            upgrade_bytes(
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: not*base64*at*all*here!!",
                &[],
            ),
            HandshakeError::InvalidKey,
            400,
        ),
        (
            upgrade_bytes("Sec-WebSocket-Version", "", &[]),
            HandshakeError::UnsupportedVersion,
            426,
        ),
        (
            upgrade_bytes("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8", &[]),
            HandshakeError::UnsupportedVersion,
            426,
        ),
    ];
    for (input, expected, status) in cases {
        let text = String::from_utf8_lossy(&input).into_owned();
        assert_eq!(
            upgrade_result(&input, &config),
            Err(expected.clone()),
            "{text}"
        );
        assert_eq!(expected.status(), status, "{text}");
        let response = error_response(&expected);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{response}"
        );
    }
}

/// Proves the 405, 426 and 400 responses carry the headers their status calls for.
#[test]
fn error_responses_carry_status_specific_headers() {
    let response = error_response(&HandshakeError::MethodNotGet);
    assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(response.contains("\r\nAllow: GET\r\n"));

    for error in [
        HandshakeError::UnsupportedVersion,
        HandshakeError::MissingUpgradeWebSocket,
    ] {
        let response = error_response(&error);
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(response.contains("\r\nUpgrade: websocket\r\n"));
        assert!(response.contains("\r\nConnection: Upgrade, close\r\n"));
    }

    let body = "request has no Host header\n";
    let expected = format!(
        "HTTP/1.1 400 Bad Request\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {body}",
        body.len()
    );
    assert_eq!(error_response(&HandshakeError::MissingHost), expected);
}

/// Proves the Origin allow-list admits listed origins and refuses others and absent ones.
#[test]
fn origin_allow_list() {
    let open = ProtocolLimits::default();
    assert_eq!(upgrade_result(&upgrade_bytes("", "", &[]), &open), Ok(None));
    let config = ProtocolLimits {
        origins_allowed: vec!["https://a.example".into(), "https://b.example".into()],
        ..ProtocolLimits::default()
    };
    let listed = upgrade_bytes("", "", &["Origin: https://b.example"]);
    assert_eq!(upgrade_result(&listed, &config), Ok(None));
    let other = upgrade_bytes("", "", &["Origin: https://evil.example"]);
    assert_eq!(
        upgrade_result(&other, &config),
        Err(HandshakeError::OriginNotAllowed)
    );
    let absent = upgrade_bytes("", "", &[]);
    assert_eq!(
        upgrade_result(&absent, &config),
        Err(HandshakeError::OriginNotAllowed)
    );
    assert!(
        error_response(&HandshakeError::OriginNotAllowed).starts_with("HTTP/1.1 403 Forbidden")
    );
}

/// Proves subprotocols are chosen in server order across several headers, and refused only
/// when required and the client offered some.
#[test]
fn subprotocol_selection() {
    let config = ProtocolLimits {
        subprotocols: vec!["v2.ringcast".into(), "v1.ringcast".into()],
        ..ProtocolLimits::default()
    };
    let offers = [
        "Sec-WebSocket-Protocol: other, v1.ringcast",
        "Sec-WebSocket-Protocol:  v2.ringcast ,x",
    ];
    let input = upgrade_bytes("", "", &offers);
    assert_eq!(
        upgrade_result(&input, &config),
        Ok(Some("v2.ringcast".into()))
    );

    let only_v1 = upgrade_bytes("", "", &["Sec-WebSocket-Protocol: v1.ringcast"]);
    assert_eq!(
        upgrade_result(&only_v1, &config),
        Ok(Some("v1.ringcast".into()))
    );

    // Names are case-sensitive, so a differently cased offer does not match.
    let unknown = upgrade_bytes("", "", &["Sec-WebSocket-Protocol: V2.RINGCAST, mqtt"]);
    assert_eq!(upgrade_result(&unknown, &config), Ok(None));
    let required = ProtocolLimits {
        subprotocol_required: true,
        ..config.clone()
    };
    assert_eq!(
        upgrade_result(&unknown, &required),
        Err(HandshakeError::NoAcceptableSubprotocol)
    );
    let none_offered = upgrade_bytes("", "", &[]);
    assert_eq!(upgrade_result(&none_offered, &required), Ok(None));
    assert_eq!(HandshakeError::NoAcceptableSubprotocol.status(), 400);
}

/// Proves header names and tokens compare case-insensitively and token lists are split.
#[test]
fn case_insensitive_names_and_token_lists() {
    let input = request_bytes(
        "GET /ws HTTP/1.1",
        &[
            "HOST: example.com",
            "upgrade: WebSocket",
            "connection: keep-alive, Upgrade",
            "SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ],
    );
    assert_eq!(upgrade_result(&input, &ProtocolLimits::default()), Ok(None));
    let listed = upgrade_bytes("Upgrade", "Upgrade: foo/1, websocket", &[]);
    assert_eq!(
        upgrade_result(&listed, &ProtocolLimits::default()),
        Ok(None)
    );
}

/// Proves every prefix of a request is "need more", the whole gives the same request each time,
/// and bytes after the head (an early frame) are left to the caller.
#[test]
fn incremental_input_and_trailing_bytes() {
    let config = ProtocolLimits::default();
    let frame = [0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e];
    let mut input = RFC_REQUEST.to_vec();
    input.extend_from_slice(&frame);
    for prefix_bytes in 0..RFC_REQUEST.len() {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let parsed = parse_request(&input[..prefix_bytes], &mut headers, &config);
        assert_eq!(parsed, Ok(None), "prefix of {prefix_bytes} bytes");
    }
    let mut whole_headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let whole = parse_request(RFC_REQUEST, &mut whole_headers, &config)
        .unwrap()
        .unwrap();
    for input_bytes in RFC_REQUEST.len()..=input.len() {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let request = parse_request(&input[..input_bytes], &mut headers, &config)
            .unwrap()
            .unwrap();
        assert_eq!(request, whole);
        assert_eq!(request.head_bytes(), RFC_REQUEST.len());
        assert_eq!(
            &input[request.head_bytes()..input_bytes],
            &frame[..input_bytes - RFC_REQUEST.len()]
        );
    }
}

/// Proves a head over the limit is refused with 431 whether or not it is complete, and one at
/// the limit is parsed, with later bytes not counted against it.
#[test]
fn head_over_the_limit_is_431() {
    let config = ProtocolLimits {
        header_bytes_max: 256,
        ..ProtocolLimits::default()
    };
    let too_large = HandshakeError::HeaderBlockTooLarge {
        header_bytes_max: 256,
    };
    let head_of = |head_bytes: usize| {
        let start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let padding = "p".repeat(head_bytes - start.len() - 4);
        format!("{start}{padding}\r\n\r\n").into_bytes()
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let at_limit = head_of(256);
    let mut with_pipelined = at_limit.clone();
    with_pipelined.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    let request = parse_request(&with_pipelined, &mut headers, &config)
        .unwrap()
        .unwrap();
    assert_eq!(request.head_bytes(), 256);

    let over_limit = head_of(257);
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    assert_eq!(
        parse_request(&over_limit, &mut headers, &config),
        Err(too_large.clone())
    );
    // Incomplete: the limit is reached without the blank line; at the limit it may still end.
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    assert_eq!(
        parse_request(&over_limit[..256], &mut headers, &config),
        Ok(None)
    );
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let endless = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 300]].concat();
    assert_eq!(
        parse_request(&endless, &mut headers, &config),
        Err(too_large.clone())
    );
    let response = error_response(&too_large);
    assert!(response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

/// Proves a request with one header field more than the array holds is refused with 431, and
/// one with exactly as many is parsed.
#[test]
fn too_many_headers_is_431() {
    let config = ProtocolLimits::default();
    // An HTTP/1.1 request needs its Host; the rest are fillers.
    let lines: Vec<String> = (0..=HEADERS_COUNT_MAX)
        .map(|index| match index {
            0 => "Host: example.com".to_owned(),
            _ => format!("X-Field-{index}: {index}"),
        })
        .collect();
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let fitting = request_bytes("GET / HTTP/1.1", &line_refs[..HEADERS_COUNT_MAX]);
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let request = parse_request(&fitting, &mut headers, &config)
        .unwrap()
        .unwrap();
    assert_eq!(request.headers().count(), HEADERS_COUNT_MAX);

    let overflowing = request_bytes("GET / HTTP/1.1", &line_refs);
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let error = parse_request(&overflowing, &mut headers, &config).unwrap_err();
    assert_eq!(
        error,
        HandshakeError::TooManyHeaders {
            headers_count_max: HEADERS_COUNT_MAX
        }
    );
    assert_eq!(error.status(), 431);
}

/// Proves bytes that are not an HTTP/1.x request are refused with 400 and a named reason.
#[test]
fn malformed_requests_are_400() {
    let config = ProtocolLimits::default();
    let cases: [(&[u8], &str); 5] = [
        (
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "invalid header name",
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "invalid header value",
        ),
        (b"GET / HTTP/2.0\r\n\r\n", "invalid http version"),
        (
            b"G(T / HTTP/1.1\r\n\r\n",
            "invalid method or request target",
        ),
        (b"GET / HTTP/1.1\rX: y\r\n\r\n", "invalid line ending"),
    ];
    for (input, reason) in cases {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let error = parse_request(input, &mut headers, &config).unwrap_err();
        assert_eq!(error, HandshakeError::MalformedRequest(reason), "{input:?}");
        assert_eq!(error.status(), 400);
        assert!(error_response(&error).contains(reason));
    }
}

/// Proves plain requests (a health check, an h2c upgrade) come back for routing, with query,
/// headers and cookies readable, and that plain responses are well-formed.
#[test]
fn plain_requests_are_handed_back() {
    let config = ProtocolLimits::default();
    let input = request_bytes(
        "GET /health?verbose=1&x=y?z HTTP/1.1",
        &[
            "Host: example.com",
            "Cookie: session=abc123;  theme = dark ;flag",
            "Cookie: =orphan; quoted=\"q v\"; empty=",
        ],
    );
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let request = parse_request(&input, &mut headers, &config)
        .unwrap()
        .unwrap();
    assert!(!request.is_websocket_upgrade());
    assert_eq!(request.method(), "GET");
    assert_eq!(request.path(), "/health");
    assert_eq!(request.query(), Some("verbose=1&x=y?z"));
    assert_eq!(request.version_minor(), 1);
    assert_eq!(request.header("HOST"), Some(b"example.com".as_slice()));
    assert_eq!(request.header("absent"), None);
    assert_eq!(request.header_values("cookie").count(), 2);
    let cookies: Vec<(&str, &str)> = request.cookies().collect();
    assert_eq!(
        cookies,
        [
            ("session", "abc123"),
            ("theme", "dark"),
            ("quoted", "\"q v\""),
            ("empty", "")
        ]
    );
    let names: Vec<&str> = request.headers().map(|(name, _)| name).collect();
    assert_eq!(names, ["Host", "Cookie", "Cookie"]);

    let h2c = request_bytes(
        "GET / HTTP/1.1",
        &[
            "Host: a",
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
        ],
    );
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let request = parse_request(&h2c, &mut headers, &config).unwrap().unwrap();
    assert!(!request.is_websocket_upgrade());
    assert_eq!(request.query(), None);
    assert_eq!(
        accept_upgrade(&request, &config),
        Err(HandshakeError::MissingUpgradeWebSocket)
    );

    let mut out = BytesMut::new();
    write_response(
        200,
        &[("Content-Type", "text/plain")],
        b"ok\n",
        true,
        &mut out,
    );
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
          Connection: keep-alive\r\n\r\nok\n"
    );
    out.clear();
    write_response(404, &[], b"", false, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    out.clear();
    write_response(204, &[], b"", true, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    );
}

/// Proves parsing, accepting and writing the 101 or an error allocate nothing once the output
/// buffer has capacity.
#[test]
fn handshake_path_does_not_allocate() {
    let config = ProtocolLimits {
        subprotocols: vec!["superchat".into()],
        origins_allowed: vec!["http://example.com".into()],
        ..ProtocolLimits::default()
    };
    // The counter must see allocations at all, or a zero below would prove nothing.
    let before_probe = allocations_count();
    let probe = std::hint::black_box(vec![1u8]);
    assert!(allocations_count() > before_probe);
    drop(probe);
    let mut out = BytesMut::with_capacity(1024);
    let before = allocations_count();
    for _ in 0..10 {
        out.clear();
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let request = parse_request(RFC_REQUEST, &mut headers, &config)
            .unwrap()
            .unwrap();
        assert_eq!(request.cookies().count(), 0);
        let upgrade = accept_upgrade(&request, &config).unwrap();
        write_switching_protocols(&upgrade, &mut out);
        write_error_response(&HandshakeError::UnsupportedVersion, &mut out);
        write_response(404, &[], b"not found\n", false, &mut out);
    }
    assert_eq!(allocations_count() - before, 0);
}

/// Generates a request head from parts the grammar allows, with its expected fields: one
/// `Host` (RFC 9112 §3.2) first, then fields of any other name but `Expect`, whose values
/// have rules of their own.
fn valid_request() -> impl Strategy<Value = (String, String, Option<String>, Vec<(String, String)>)>
{
    let field_name = "[A-Za-z][A-Za-z0-9-]{0,20}"
        .prop_filter("Host and Expect have rules", |name| {
            !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("expect")
        });
    (
        "[A-Z]{1,10}",
        "/[A-Za-z0-9/._~%-]{0,40}",
        proptest::option::of("[A-Za-z0-9=&%._-]{0,30}"),
        proptest::collection::vec(
            (field_name, "([!-~]([ !-~]{0,38}[!-~])?)?"),
            0..HEADERS_COUNT_MAX - 1,
        ),
    )
        .prop_map(|(method, path, query, mut fields)| {
            fields.insert(0, ("Host".to_owned(), "example.com".to_owned()));
            (method, path, query, fields)
        })
}

fn render(
    method: &str,
    path: &str,
    query: &Option<String>,
    headers: &[(String, String)],
) -> Vec<u8> {
    let mut text = format!("{method} {path}");
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    text.push_str(" HTTP/1.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Randomly upper- or lower-cases each ASCII letter, as clients may spell header names.
fn recase(text: &str, seed: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(index, character)| {
            if (seed >> (index % 64)) & 1 == 1 {
                character.to_ascii_uppercase()
            } else {
                character.to_ascii_lowercase()
            }
        })
        .collect()
}

proptest! {
    /// Proves arbitrary bytes, alone or after a valid request line, never panic any step.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        prefixed in any::<bool>(),
        header_bytes_max in prop_oneof![Just(256usize), Just(8192usize)],
    ) {
        let config = ProtocolLimits { header_bytes_max, ..ProtocolLimits::default() };
        let input = if prefixed {
            [b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n".as_slice(), &bytes].concat()
        } else {
            bytes
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut out = BytesMut::new();
        match parse_request(&input, &mut headers, &config) {
            Ok(Some(request)) => {
                prop_assert!(request.head_bytes() <= input.len().min(header_bytes_max));
                let _ = request.cookies().count();
                match accept_upgrade(&request, &config) {
                    Ok(upgrade) => write_switching_protocols(&upgrade, &mut out),
                    Err(error) => write_error_response(&error, &mut out),
                }
            }
            Ok(None) => prop_assert!(input.len() <= header_bytes_max),
            Err(error) => write_error_response(&error, &mut out),
        }
    }

    /// Proves every request built from the grammar parses into exactly its parts, and that a
    /// cut anywhere before its end is "need more".
    #[test]
    fn valid_requests_always_parse(
        (method, path, query, fields) in valid_request(),
        cut_fraction in 0.0f64..1.0,
    ) {
        let input = render(&method, &path, &query, &fields);
        let config = ProtocolLimits { header_bytes_max: 64 * 1024, ..ProtocolLimits::default() };
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let request = parse_request(&input, &mut headers, &config).unwrap().unwrap();
        prop_assert_eq!(request.method(), method.as_str());
        prop_assert_eq!(request.path(), path.as_str());
        prop_assert_eq!(request.query(), query.as_deref());
        prop_assert_eq!(request.head_bytes(), input.len());
        let parsed: Vec<(&str, &[u8])> = request.headers().collect();
        let expected: Vec<(&str, &[u8])> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        prop_assert_eq!(parsed, expected);
        let cut = (cut_fraction * input.len() as f64) as usize;
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        prop_assert_eq!(parse_request(&input[..cut], &mut headers, &config), Ok(None));
    }

    /// Proves random valid upgrades, with names in any case and unrelated fields around them,
    /// are accepted with the accept key tungstenite derives.
    #[test]
    fn valid_upgrades_are_accepted(
        key_bytes in any::<[u8; 16]>(),
        case_seed in any::<u64>(),
        extra in proptest::collection::vec(("X-[A-Za-z0-9-]{1,20}", "[!-~]{0,40}"), 0..20),
    ) {
        let key = BASE64.encode(key_bytes);
        let mut fields: Vec<(String, String)> = vec![
            (recase("Host", case_seed), "example.com".into()),
            (recase("Upgrade", case_seed), recase("websocket", case_seed >> 7)),
            (recase("Connection", case_seed), "keep-alive, Upgrade".into()),
            (recase("Sec-WebSocket-Key", case_seed), key.clone()),
            (recase("Sec-WebSocket-Version", case_seed), "13".into()),
        ];
        let insert_index = (case_seed % 6) as usize;
        for (offset, field) in extra.into_iter().enumerate() {
            fields.insert((insert_index + offset).min(fields.len()), field);
        }
        let input = render("GET", "/ws", &None, &fields);
        let config = ProtocolLimits::default();
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let request = parse_request(&input, &mut headers, &config).unwrap().unwrap();
        prop_assert!(request.is_websocket_upgrade());
        let upgrade = accept_upgrade(&request, &config).unwrap();
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        prop_assert_eq!(upgrade.accept_key_str(), expected.as_str());
    }
}
