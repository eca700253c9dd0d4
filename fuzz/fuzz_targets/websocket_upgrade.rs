//! The WebSocket upgrade: a request head parsed as its reads arrive (the handshake's
//! `parse_request`), checked by `accept_upgrade`, and answered with the 101 or the refusal.
//!
//! Invariants, for every input:
//! - no panic, and no allocation beyond the response buffers;
//! - the head is parsed as the driver parses it, again after each read on everything so far:
//!   the same head (its length, method, path), the same verdict and the same answer for the
//!   whole stream and for the fuzzer's cut;
//! - a head is never longer than the bytes given;
//! - an accepted upgrade's `Sec-WebSocket-Accept` is tungstenite's `derive_accept_key` of the
//!   client's key, its subprotocol is one the client offered and we speak, and the 101 response
//!   parses (httparse) with those values;
//! - a refusal's response parses with the error's status;
//! - what we accept, tungstenite's server handshake accepts too, with the same accept key,
//!   except where tungstenite reads a header differently (see `their_refusal_is_a_difference`).
//!
//! Input layout: `fuzz/src/reads.rs`; the variant picks an open configuration or one with an
//! origin allow-list and required subprotocols.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use ringcast_fuzz::reads::{self, SplitInput};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse as _;
use tungstenite::handshake::server::{Request as TheirRequest, create_response};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::protocol::http1::HEADERS_COUNT_MAX;
use ringcast::protocol::http1::response::write_error_response;
use ringcast::protocol::websocket::upgrade::{
    accept_upgrade, parse_request, write_switching_protocols,
};
use ringcast::protocol::{HandshakeError, ProtocolLimits};

/// Room for the 101 or the refusal, and the copies the harness keeps of both runs.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 64 * 1024,
    bytes_per_input_byte: 8,
};
const ORIGIN_ALLOWED: &str = "https://example.com";
const SUBPROTOCOLS: [&str; 2] = ["v1.ringcast", "json"];

/// The verdict on the first complete head, copied out so that runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The stream ended inside the head.
    Incomplete,
    Refused {
        error: HandshakeError,
        response: Vec<u8>,
    },
    Accepted {
        head_bytes: usize,
        key: Vec<u8>,
        accept_key: String,
        subprotocol: Option<String>,
        response: Vec<u8>,
    },
}

fuzz_target!(|data: &[u8]| {
    let input = SplitInput::parse(data);
    let config = match input.variant % 2 {
        0 => ProtocolLimits::default(),
        _ => ProtocolLimits {
            origins_allowed: vec![ORIGIN_ALLOWED.to_owned()],
            subprotocols: SUBPROTOCOLS.map(str::to_owned).to_vec(),
            subprotocol_required: true,
            ..ProtocolLimits::default()
        },
    };
    let (verdict, _) = allocation::measure(BUDGET, data.len(), || {
        reads::same_for_any_split(&input, |reads| upgrade(reads, &config))
    });
    match &verdict {
        Verdict::Incomplete => {}
        Verdict::Refused { error, response } => check_response(response, error.status()),
        Verdict::Accepted {
            head_bytes,
            key,
            accept_key,
            subprotocol,
            response,
        } => {
            assert_eq!(accept_key, &derive_accept_key(key));
            if let Some(subprotocol) = subprotocol {
                assert!(config.subprotocols.contains(subprotocol));
            }
            check_response(response, 101);
            check_against_tungstenite(&input.stream[..*head_bytes], accept_key);
        }
    }
});

/// Parses the head again after every read, on everything read so far, until it is complete or
/// refused, as the driver does; then judges it and writes the answer.
fn upgrade(reads: &[&[u8]], config: &ProtocolLimits) -> Verdict {
    let mut received = Vec::new();
    for read in reads {
        received.extend_from_slice(read);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let request = match parse_request(&received, &mut headers, config) {
            Ok(None) => continue,
            Ok(Some(request)) => request,
            Err(error) => return refused(error),
        };
        assert!(
            request.head_bytes() <= received.len(),
            "a head past the input"
        );
        let upgrade = match accept_upgrade(&request, config) {
            Ok(upgrade) => upgrade,
            Err(error) => return refused(error),
        };
        if let Some(subprotocol) = upgrade.subprotocol {
            let offered = request
                .header_values("sec-websocket-protocol")
                .any(|value| {
                    value
                        .windows(subprotocol.len())
                        .any(|w| w == subprotocol.as_bytes())
                });
            assert!(offered, "{subprotocol} was not offered");
        }
        let mut response = BytesMut::new();
        write_switching_protocols(&upgrade, &mut response);
        let key = request
            .header("sec-websocket-key")
            .expect("accepted with a key")
            .trim_ascii()
            .to_vec();
        return Verdict::Accepted {
            head_bytes: request.head_bytes(),
            key,
            accept_key: upgrade.accept_key_str().to_owned(),
            subprotocol: upgrade.subprotocol.map(str::to_owned),
            response: response.to_vec(),
        };
    }
    Verdict::Incomplete
}

fn refused(error: HandshakeError) -> Verdict {
    let mut response = BytesMut::new();
    write_error_response(&error, &mut response);
    Verdict::Refused {
        error,
        response: response.to_vec(),
    }
}

/// The response is one whole HTTP/1.1 response with `status`, and for a 101 with the accept
/// key it was built with.
fn check_response(response: &[u8], status: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_bytes = match parsed.parse(response) {
        Ok(httparse::Status::Complete(head_bytes)) => head_bytes,
        other => panic!(
            "our response does not parse ({other:?}): {}",
            String::from_utf8_lossy(response)
        ),
    };
    assert_eq!(parsed.code, Some(status));
    let content_length = parsed
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .map(|header| {
            std::str::from_utf8(header.value)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        });
    assert_eq!(response.len() - head_bytes, content_length.unwrap_or(0));
}

/// What we accepted, tungstenite accepts with the same accept key, unless it refuses for one
/// of the ways it reads headers differently.
fn check_against_tungstenite(head: &[u8], accept_key: &str) {
    let request = match TheirRequest::try_parse(head) {
        Ok(Some((head_bytes, request))) => {
            assert_eq!(head_bytes, head.len());
            request
        }
        Ok(None) => panic!("tungstenite finds the head incomplete"),
        Err(error) => {
            assert!(
                their_refusal_is_a_difference(&error),
                "tungstenite refused what we accepted: {error}"
            );
            return;
        }
    };
    match create_response(&request) {
        Ok(response) => {
            let theirs = response
                .headers()
                .get("Sec-WebSocket-Accept")
                .expect("a 101 has an accept key");
            assert_eq!(theirs.as_bytes(), accept_key.as_bytes());
        }
        Err(error) => assert!(
            their_refusal_is_a_difference(&error),
            "tungstenite refused what we accepted: {error}"
        ),
    }
}

/// Where tungstenite reads an upgrade request differently from us, by design on our side:
/// - it builds an `http::Uri` from the request target, which refuses bytes httparse (and we)
///   take in a path;
/// - it reads only the first `Connection` and `Upgrade` header, and `Upgrade` as one value,
///   where we read every one as a comma-separated list (RFC 9110 §5.3, §7.8).
fn their_refusal_is_a_difference(error: &tungstenite::Error) -> bool {
    use tungstenite::error::ProtocolError as TheirError;
    matches!(
        error,
        tungstenite::Error::HttpFormat(_)
            | tungstenite::Error::Protocol(
                TheirError::MissingConnectionUpgradeHeader
                    | TheirError::MissingUpgradeWebSocketHeader
            )
    )
}
