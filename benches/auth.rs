//! One WebSocket handshake through a connection's endpoint (request head parsed, origin and
//! token checked, 101 written), with `auth_mode = "none"` and with a JWT of each algorithm in
//! the `Authorization` header: the cost of authentication per connection, in µs.
//!
//! The keys in benches/keys/ are throwaway keys made for this benchmark (with Python's
//! cryptography); they protect nothing.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringcast::auth::{AuthMode, Authenticator};
use ringcast::broker::MessagePool;
use ringcast::config::ServerConfig;
use ringcast::endpoint::outbound::Outbound;
use ringcast::endpoint::{Context, Endpoint, EndpointCounters, MetricsText};
use ringcast::protocol::pool::BufferPool;
use ringcast::protocol::websocket::deflate::CompressorSet;
use ringcast::protocol::websocket::frame::FrameEncoder;

const SECRET: &str = "a benchmark secret of at least thirty-two bytes";
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

fn key_path(name: &str) -> String {
    format!("{}/benches/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The server side of one case, and the token its clients send (none for `none`).
fn case(algorithm: Option<Algorithm>) -> (Context, Option<String>) {
    let mut config = ServerConfig::default();
    let claims = serde_json::json!({
        "sub": "bench", "exp": NOW_UNIX_MS / 1000 + 3600, "subscribe": ["FX.*", "AAPL"],
    });
    let sign = |algorithm, key: EncodingKey| {
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap()
    };
    let token = match algorithm {
        None => None,
        Some(Algorithm::HS256) => {
            config.auth.jwt_hs256_secret = SECRET.to_owned();
            Some(sign(
                Algorithm::HS256,
                EncodingKey::from_secret(SECRET.as_bytes()),
            ))
        }
        Some(algorithm) => {
            let name = match algorithm {
                Algorithm::RS256 => "rsa",
                Algorithm::ES256 => "ec",
                _ => "ed",
            };
            let private = std::fs::read(key_path(&format!("{name}.private.pem"))).unwrap();
            let key = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&private),
                _ => EncodingKey::from_ed_pem(&private),
            };
            config.auth.jwt_public_key_file = key_path(&format!("{name}.public.pem"));
            Some(sign(algorithm, key.unwrap()))
        }
    };
    if token.is_some() {
        config.auth.auth_mode = AuthMode::Jwt;
    }
    let authenticator = Authenticator::from_config(&config.auth, 128).unwrap();
    let context = Context {
        pool: BufferPool::new(&config.pool),
        encoder: FrameEncoder::new(64 * 1024),
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
    };
    (context, token)
}

fn request(token: Option<&str>) -> Vec<u8> {
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    format!(
        "GET /ws HTTP/1.1\r\nHost: feed.example.com\r\nUpgrade: websocket\r\nConnection: \
         Upgrade\r\nOrigin: https://app.example.com\r\nSec-WebSocket-Key: \
         dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{authorization}\r\n"
    )
    .into_bytes()
}

fn handshakes(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("auth_handshake");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("none", None),
        ("hs256", Some(Algorithm::HS256)),
        ("es256", Some(Algorithm::ES256)),
        ("rs256", Some(Algorithm::RS256)),
        ("eddsa", Some(Algorithm::EdDSA)),
    ];
    for (name, algorithm) in cases {
        let (mut context, token) = case(algorithm);
        let template = request(token.as_deref());
        let mut input = template.clone();
        let mut outbound = Outbound::default();
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                input.copy_from_slice(&template);
                let mut endpoint = Endpoint::new(0, &context.settings);
                let _ = endpoint.handle_read(&mut input, &mut outbound, &mut context);
                assert!(
                    endpoint.takes_messages(),
                    "{name}: the handshake was refused"
                );
                while !outbound.is_empty() {
                    let length = outbound.front().len();
                    outbound.complete(length, &mut Default::default());
                }
                endpoint.release_buffers(&mut context.pool);
                black_box(endpoint)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = handshakes
}
criterion_main!(benches);
