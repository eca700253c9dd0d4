//! Random and truncated tokens through the real handshake path (the connection's endpoint, in
//! memory) of every endpoint that reads: the WebSocket upgrade, SSE, NDJSON streams and polls.
//! Whatever the token, the answer is one whole 401 and the connection closes, never a panic,
//! an upgrade, a stream, a held poll, or silence; only the untouched valid token gets through.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use ringcast::auth::{AuthConfig, AuthMode, Authenticator};
use ringcast::broker::MessagePool;
use ringcast::config::ServerConfig;
use ringcast::endpoint::outbound::Outbound;
use ringcast::endpoint::{Context, Endpoint, EndpointCounters, MetricsText, Next};
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::websocket::deflate::CompressorSet;
use ringcast::protocol::websocket::frame::FrameEncoder;

const SECRET: &str = "a secret of at least thirty-two bytes, for HS256";
/// The Unix time the endpoint's clock reads (tokens below expire an hour later).
const NOW_UNIX_MS: u64 = 1_800_000_000_000;

struct NoMetrics;

impl MetricsText for NoMetrics {
    fn render(&mut self) -> String {
        String::new()
    }

    fn totals(&mut self) -> String {
        String::new()
    }
}

fn context() -> Context {
    let config = ServerConfig {
        auth: AuthConfig {
            auth_mode: AuthMode::Jwt,
            jwt_hs256_secret: SECRET.to_owned(),
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    };
    let authenticator = Authenticator::from_config(&config.auth, 128).unwrap();
    Context {
        pool: BufferPool::new(&config.pool),
        encoder: FrameEncoder::new(4096),
        frames: MessagePool::new(config.broker.message_pool_free_bytes_max),
        settings: Arc::new(config.endpoint_settings(Arc::new(authenticator))),
        counters: EndpointCounters::default(),
        now_ms: 0,
        unix_offset_ms: NOW_UNIX_MS,
        requests: Vec::new(),
        engine_calls: Vec::new(),
        engine_sessions: Default::default(),
        metrics: Box::new(NoMetrics),
        compressors: CompressorSet::new(config.protocol.compression_level),
    }
}

fn valid_token() -> String {
    let claims = serde_json::json!({
        "sub": "fuzz",
        "exp": NOW_UNIX_MS / 1000 + 3600,
        "subscribe": ["*"],
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The endpoints a token opens: the WebSocket upgrade and the reading requests.
const TARGETS: [&str; 4] = [
    "/ws?",
    "/sse?topics=A&",
    "/stream?topics=A&",
    "/poll?topics=A&",
];

/// Runs one request for `TARGETS[target]` with `token` (in the header or the query) through a
/// new connection; returns the status line of the answer, what the endpoint asked for, and
/// whether it got through (upgraded, streaming or holding a poll).
fn handshake(token: &str, in_query: bool, target: usize) -> (String, Next, bool) {
    let mut context = context();
    let mut endpoint = Endpoint::new(0, &context.settings);
    let mut outbound = Outbound::default();
    let (query, header) = match in_query {
        true => (format!("token={token}"), String::new()),
        false => (String::new(), format!("Authorization: Bearer {token}\r\n")),
    };
    let path = TARGETS[target % TARGETS.len()];
    let upgrade = match path.starts_with("/ws") {
        true => {
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        }
        false => "",
    };
    let request = format!("GET {path}{query} HTTP/1.1\r\nHost: x\r\n{upgrade}{header}\r\n");
    let mut input = request.into_bytes();
    let next = endpoint.handle_read(&mut input, &mut outbound, &mut context);
    let mut sent = Vec::new();
    while !outbound.is_empty() {
        let front = outbound.front().to_vec();
        sent.extend_from_slice(&front);
        outbound.complete(front.len(), &mut Default::default());
    }
    let text = String::from_utf8_lossy(&sent).into_owned();
    let status = text.lines().next().unwrap_or("").to_owned();
    let upgraded = endpoint.takes_messages();
    (status, next, upgraded)
}

/// Characters a token may be made of, and some it may not (no CR or LF: those would end the
/// header, which is the request parser's business, not the token's).
fn token_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9_\\-.=+/ %\"';,{}~!]{0,600}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Proves random tokens are refused with 401 and never get through.
    #[test]
    fn random_tokens_are_refused(token in token_text(), in_query in any::<bool>(), target in 0usize..4) {
        let (status, _, upgraded) = handshake(&token, in_query, target);
        prop_assert!(!upgraded, "upgraded with {token:?}");
        prop_assert!(
            status == "HTTP/1.1 401 Unauthorized" || status.starts_with("HTTP/1.1 400"),
            "{token:?}: {status}"
        );
    }

    /// Proves every truncation and every one-byte change of a valid token is refused.
    #[test]
    fn damaged_valid_tokens_are_refused(cut in 0usize..1000, flip in 0usize..1000, byte in 33u8..127, target in 0usize..4) {
        let token = valid_token();
        let cut = cut % token.len();
        let (status, _, upgraded) = handshake(&token[..cut], false, target);
        prop_assert!(!upgraded);
        prop_assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        let mut changed = token.clone().into_bytes();
        let at = flip % changed.len();
        prop_assume!(changed[at] != byte);
        changed[at] = byte;
        let changed = String::from_utf8(changed).unwrap();
        let (status, _, upgraded) = handshake(&changed, false, target);
        prop_assert!(!upgraded, "upgraded with {changed:?}");
        prop_assert!(
            status == "HTTP/1.1 401 Unauthorized" || status.starts_with("HTTP/1.1 400"),
            "{changed:?}: {status}"
        );
    }
}

/// Proves the harness itself: the untouched token gets through every endpoint, from the header
/// and the query (a held poll has not answered yet).
#[test]
fn the_valid_token_gets_through() {
    let expected = [
        "HTTP/1.1 101 Switching Protocols",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK",
        "",
    ];
    for in_query in [false, true] {
        for (target, expected) in expected.iter().enumerate() {
            let (status, next, through) = handshake(&valid_token(), in_query, target);
            assert_eq!(status, *expected, "{}", TARGETS[target]);
            assert_eq!(next, Next::Continue);
            assert!(through, "{}", TARGETS[target]);
        }
    }
}
