//! One server-side WebSocket handshake as a browser sends it: parse the head, check the upgrade,
//! write the 101 into a reused buffer. tungstenite's public server path (parse into an
//! `http::Request`, build the response, write it) runs on the same bytes for comparison, and the
//! accept key alone is measured against tungstenite's `derive_accept_key`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::ProtocolLimits;
use ringcast::protocol::http1::head::HEADERS_COUNT_MAX;
use ringcast::protocol::websocket::upgrade::{
    accept_key, accept_upgrade, parse_request, write_switching_protocols,
};
use tungstenite::handshake::machine::TryParse as _;

/// A Chrome upgrade request with the fields a browser really sends (about 600 bytes).
const BROWSER_REQUEST: &[u8] = b"GET /stream?topics=btc-usd,eth-usd HTTP/1.1\r\n\
    Host: feed.example.com\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/124.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: https://app.example.com\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
    Cookie: session=3f9a1c0e2b7d4a56; theme=dark; consent=analytics:0,ads:0\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    Sec-WebSocket-Protocol: ringcast.v1\r\n\
    \r\n";

fn handshake(criterion: &mut Criterion) {
    let config = ProtocolLimits {
        origins_allowed: vec!["https://app.example.com".into()],
        subprotocols: vec!["ringcast.v1".into()],
        ..ProtocolLimits::default()
    };
    let mut group = criterion.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(512);
    group.bench_function("ringcast_parse_accept_write", |bencher| {
        bencher.iter(|| {
            out.clear();
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
            let request = parse_request(black_box(BROWSER_REQUEST), &mut headers, &config)
                .expect("a valid request")
                .expect("a complete request");
            let upgrade = accept_upgrade(&request, &config).expect("an accepted upgrade");
            write_switching_protocols(&upgrade, &mut out);
            black_box(out.len())
        })
    });
    let mut tungstenite_out = Vec::with_capacity(512);
    group.bench_function("tungstenite_parse_accept_write", |bencher| {
        bencher.iter(|| {
            tungstenite_out.clear();
            let (_, request) =
                tungstenite::handshake::server::Request::try_parse(black_box(BROWSER_REQUEST))
                    .expect("a valid request")
                    .expect("a complete request");
            let response = tungstenite::handshake::server::create_response(&request)
                .expect("an accepted upgrade");
            tungstenite::handshake::server::write_response(&mut tungstenite_out, &response)
                .expect("writing to a Vec");
            black_box(tungstenite_out.len())
        })
    });
    let key = b"dGhlIHNhbXBsZSBub25jZQ==";
    group.bench_function("ringcast_accept_key", |bencher| {
        bencher.iter(|| accept_key(black_box(key)))
    });
    group.bench_function("tungstenite_derive_accept_key", |bencher| {
        bencher.iter(|| tungstenite::handshake::derive_accept_key(black_box(key)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = handshake
}
criterion_main!(benches);
