//! Hostile clients on the TLS port: plain HTTP, noise, a ClientHello cut short, silence, a
//! record changed on the way, a TCP end without close_notify, many half-sent records. Each gets
//! an alert or a close, never a panic; the memory each holds is one pooled record buffer at
//! most, given back when it is closed; and a well-behaved client beside them is served.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use support::server::{ServerProcess, connect_tcp};
use support::tls::{TestPki, connect_tls, connect_wss, metric_total};
use tungstenite::Message;

/// The handshake timeout of these servers: short, so that the tests about it are quick.
const HANDSHAKE_TIMEOUT_MS: &str = "500";
/// How long a counter may take to show up.
const SETTLE_WAIT: Duration = Duration::from_secs(15);
/// The size of the TLS buffer class that holds one largest record (transport::tls::buffers).
const RECORD_BUFFER_BYTES: u64 = 18_944;

fn start(pki: &TestPki) -> ServerProcess {
    pki.start_server(&["--echo", "--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS])
}

/// Reads until the server closes (EOF or reset), bounded by the socket's read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(count) => received.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return received,
            Err(error) => panic!("waiting for the server to close: {error} after {received:?}"),
        }
    }
}

/// Whether `bytes` is exactly one fatal alert record (sent before any key exists, so in the
/// clear).
fn is_fatal_alert(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15, 0x03, _, 0x00, 0x02, 0x02, _])
}

fn wait_for_metric(server: &ServerProcess, series: &str, at_least: u64) {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let value = metric_total(server.address, series);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value}, wanted {at_least}; errors: handshake {} record {}; log:\n{}",
            metric_total(
                server.address,
                "ringcast_tls_errors_total{kind=\"handshake\"}"
            ),
            metric_total(server.address, "ringcast_tls_errors_total{kind=\"record\"}"),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of a real ClientHello.
fn client_hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut connection = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    hello
}

/// A wss echo that must keep working whatever the other connections do.
fn assert_served(tls: SocketAddr, config: &Arc<ClientConfig>) {
    let mut socket = connect_wss(tls, "/bystander", config);
    socket.send(Message::text("still served")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("still served"));
}

/// Proves plain HTTP sent to the TLS port gets a fatal alert and a close, and noise (a header
/// of no known kind, a handshake message of absurd length, random bytes) an alert or a close,
/// each counted as a refused handshake.
#[test]
fn not_tls_gets_an_alert_or_a_close() {
    let pki = TestPki::new("hostile-not-tls");
    let server = start(&pki);
    let tls = server.tls_address.unwrap();
    let mut stream = connect_tcp(tls);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut stream);
    assert!(is_fatal_alert(&answer), "plain HTTP answered {answer:?}");
    let mut noise = vec![0u8; 3000];
    fastrand::Rng::with_seed(7).fill(&mut noise);
    let inputs: [&[u8]; 3] = [
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
        ],
        &[0x47; 64],
        &noise,
    ];
    for input in inputs {
        let mut stream = connect_tcp(tls);
        stream.write_all(input).unwrap();
        let answer = read_until_closed(&mut stream);
        let alert_or_close = answer.is_empty() || is_fatal_alert(&answer);
        assert!(alert_or_close, "{:?} answered {answer:?}", &input[..8]);
    }
    wait_for_metric(&server, "ringcast_tls_errors_total{kind=\"handshake\"}", 4);
    assert_served(tls, &pki.client_config());
}

/// Proves a ClientHello cut short, and a client that sends nothing, are closed when the
/// handshake timeout passes (it covers TLS), and counted.
#[test]
fn stalled_handshakes_are_closed_at_the_timeout() {
    let pki = TestPki::new("hostile-stalled");
    let server = start(&pki);
    let tls = server.tls_address.unwrap();
    let hello = client_hello(&pki.client_config());
    let mut truncated = connect_tcp(tls);
    truncated.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut silent = connect_tcp(tls);
    assert_eq!(
        read_until_closed(&mut truncated),
        b"",
        "closed without an answer"
    );
    assert_eq!(read_until_closed(&mut silent), b"");
    wait_for_metric(
        &server,
        "ringcast_tls_errors_total{kind=\"handshake_timeout\"}",
        2,
    );
    assert_served(tls, &pki.client_config());
}

/// Proves a record changed on the way after the handshake is refused with bad_record_mac,
/// which the client hears before the close.
#[test]
fn tampered_record_gets_bad_record_mac() {
    let pki = TestPki::new("hostile-tampered");
    let server = start(&pki);
    let tls = server.tls_address.unwrap();
    // An exchange first, so that the server's handshake is over and the record layer reads.
    let mut socket = connect_wss(tls, "/tampered", &pki.client_config());
    socket.send(Message::text("intact")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("intact"));
    let stream = socket.get_mut();
    stream
        .conn
        .writer()
        .write_all(b"a record changed on the way")
        .unwrap();
    let mut record = Vec::new();
    stream.conn.write_tls(&mut record).unwrap();
    let last = record.len() - 1;
    record[last] ^= 0x80;
    stream.sock.write_all(&record).unwrap();
    let mut buffer = [0u8; 64];
    let error = stream.read(&mut buffer).unwrap_err();
    assert!(error.to_string().contains("BadRecordMac"), "{error}");
    wait_for_metric(&server, "ringcast_tls_errors_total{kind=\"record\"}", 1);
}

/// Proves a TCP end without close_notify in the middle of a WebSocket is counted as a
/// truncation and harms nobody else.
#[test]
fn abrupt_close_without_close_notify() {
    let pki = TestPki::new("hostile-abrupt");
    let server = start(&pki);
    let tls = server.tls_address.unwrap();
    let config = pki.client_config();
    let mut bystander = connect_wss(tls, "/bystander", &config);
    let mut abrupt = connect_wss(tls, "/abrupt", &config);
    abrupt.send(Message::text("half a conversation")).unwrap();
    abrupt.get_mut().sock.shutdown(Shutdown::Both).unwrap();
    drop(abrupt);
    wait_for_metric(&server, "ringcast_tls_errors_total{kind=\"truncation\"}", 1);
    bystander.send(Message::text("unaffected")).unwrap();
    assert_eq!(bystander.read().unwrap(), Message::text("unaffected"));
}

/// Proves many connections each holding half of a large record hold one pooled record buffer
/// each (bounded), are served no worse for a bystander, and give every buffer back when the
/// handshake timeout closes them.
#[test]
fn half_sent_records_hold_bounded_memory() {
    const HOSTILE_COUNT: usize = 200;
    let pki = TestPki::new("hostile-half-records");
    let server = start(&pki);
    let tls = server.tls_address.unwrap();
    // A handshake record announcing 16,000 bytes, of which 8,000 come.
    let mut half = vec![0x16, 0x03, 0x01, 0x3E, 0x80];
    half.extend(std::iter::repeat_n(0x01, 8000));
    let mut hostile: Vec<TcpStream> = (0..HOSTILE_COUNT)
        .map(|_| {
            let mut stream = connect_tcp(tls);
            stream.write_all(&half).unwrap();
            stream
        })
        .collect();
    let in_use = "ringcast_tls_buffers_in_use_bytes";
    wait_for_metric(
        &server,
        in_use,
        RECORD_BUFFER_BYTES * HOSTILE_COUNT as u64 / 2,
    );
    let held = metric_total(server.address, in_use);
    assert!(
        held <= RECORD_BUFFER_BYTES * HOSTILE_COUNT as u64,
        "{held} B for {HOSTILE_COUNT} half records: more than one record buffer each"
    );
    assert_served(tls, &pki.client_config());
    for stream in &mut hostile {
        assert_eq!(read_until_closed(stream), b"");
    }
    let deadline = Instant::now() + SETTLE_WAIT;
    while metric_total(server.address, in_use) != 0 {
        assert!(
            Instant::now() < deadline,
            "TLS buffers still on loan after the closes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proves the per-address limits apply to the TLS listener too, against the same count as the
/// plain one: with `connections_per_ip_max` held by TLS connections, a plain connection is
/// answered 429 and a TLS one is closed unanswered (a plain-text 429 would be garbage to a TLS
/// client); both are counted as `per_ip_connections` refusals.
#[test]
fn per_address_limits_close_tls_connections_unanswered() {
    let pki = TestPki::new("per-address");
    let mut arguments = pki.server_arguments();
    arguments.extend(["--shards", "1"].map(String::from));
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let environment = [
        ("RINGCAST_CONNECTIONS_PER_IP_MAX", "2"),
        ("RINGCAST_HANDSHAKES_PER_IP_PER_SECOND", "0"),
    ];
    let server = ServerProcess::start_with_environment(&arguments, &environment);
    let tls = server.tls_address.unwrap();
    let config = pki.client_config();
    let held = [connect_tls(tls, &config), connect_tls(tls, &config)];

    let mut plain = connect_tcp(server.address);
    let answer = String::from_utf8(read_until_closed(&mut plain)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer:?}");
    let mut refused = connect_tcp(tls);
    assert_eq!(
        read_until_closed(&mut refused),
        b"",
        "closed without a byte"
    );

    drop(held);
    let deadline = Instant::now() + SETTLE_WAIT;
    let mut scrapes_refused = 0;
    loop {
        // A scrape is itself refused (and counted) until the held connections' places are
        // free: how soon depends on the machine, so the refused scrapes are counted too.
        let series = "ringcast_connections_refused_total{reason=\"per_ip_connections\"}";
        match scrape_total(server.address, series) {
            Scrape::Total(count) => {
                assert_eq!(
                    count,
                    2 + scrapes_refused,
                    "the plain 429, the TLS close and {scrapes_refused} refused scrapes"
                );
                break;
            }
            Scrape::Refused => scrapes_refused += 1,
        }
        assert!(Instant::now() < deadline, "no place freed for a scrape");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a `GET /metrics` got.
enum Scrape {
    /// The value of the series asked for.
    Total(u64),
    /// 429 (or the reset of a connection closed at once): over the address's connection limit.
    Refused,
}

/// The value of `series` in `GET /metrics`, or `Refused` when the server refused the scrape.
fn scrape_total(plain_address: SocketAddr, series: &str) -> Scrape {
    let mut stream = connect_tcp(plain_address);
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    // A refused connection is answered 429 and closed at once: its reset may come before the
    // answer is read, or before the request is written.
    let exchanged = stream
        .write_all(request)
        .and_then(|()| stream.read_to_string(&mut text));
    if exchanged.is_err() || text.starts_with("HTTP/1.1 429 ") {
        return Scrape::Refused;
    }
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
    let labels = labels.trim_end_matches('}');
    let total = text
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    Scrape::Total(total)
}
