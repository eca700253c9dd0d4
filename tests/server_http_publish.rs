//! Proves publishing over HTTP on the broker's port: the seq in the answer, delivery to
//! subscribers on every shard, batches, keep-alive and pipelining in order, chunked bodies,
//! `Expect: 100-continue`, every refusal with its status, and `GET /metrics`.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast::config::{BrokerConfig, ServerConfig};
use ringcast::server::Server;
use serde_json::{Value, json};
use support::server::{HttpResponse, RawClient};
use tungstenite::{Message, WebSocket};

fn start(shards: usize) -> Server {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards,
        drain_timeout_ms: 100,
        broker: BrokerConfig {
            publish_batch_items_max: 4,
            ..BrokerConfig::default()
        },
        ..ServerConfig::default()
    };
    Server::start(config).unwrap()
}

fn post(path: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

fn subscriber(address: SocketAddr, topic: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut socket, _) = tungstenite::client(format!("ws://{address}/ws"), stream).unwrap();
    let request = json!({"op":"subscribe","topics":[topic]}).to_string();
    socket.send(Message::text(request)).unwrap();
    let reply = next_json(&mut socket);
    assert_eq!(reply["op"], "subscribed");
    socket
}

fn next_json(socket: &mut WebSocket<TcpStream>) -> Value {
    loop {
        if let Message::Text(text) = socket.read().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Proves `POST /publish/{topic}` answers the seq and reaches subscribers on every shard with
/// the body verbatim.
#[test]
fn http_publish_reaches_subscribers_on_every_shard() {
    let server = start(4);
    let address = server.local_address();
    let mut client = RawClient::connect(address);
    // SO_REUSEPORT picks each connection's shard: subscribe until /metrics shows a subscriber
    // on every shard.
    let mut subscribers = Vec::new();
    while !every_shard_has_a_subscriber(&mut client, 4) {
        assert!(
            subscribers.len() < 256,
            "256 connections never reached every shard"
        );
        for _ in 0..4 {
            subscribers.push(subscriber(address, "AAPL"));
        }
    }
    for seq in 1..=3 {
        client.write(post("/publish/AAPL", "application/json", r#"{"px": 1.5}"#).as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(json_of(&response), json!({"seq": seq}));
    }
    for socket in &mut subscribers {
        for seq in 1..=3 {
            let Message::Text(text) = socket.read().unwrap() else {
                panic!("not text")
            };
            assert_eq!(
                text.as_str(),
                format!(r#"{{"topic":"AAPL","seq":{seq},"data":{{"px": 1.5}}}}"#)
            );
        }
    }
    server.shutdown().unwrap();
}

/// Proves pipelined requests on one keep-alive connection are answered in request order,
/// publishes to topics of different shards among them, and a batch returns its seqs in order.
#[test]
fn pipelined_requests_answer_in_order() {
    let server = start(4);
    let address = server.local_address();
    let mut client = RawClient::connect(address);
    let mut requests = String::new();
    let topics = ["A", "B", "C", "D", "E", "F", "G", "H"];
    for topic in topics {
        requests += &post(&format!("/publish/{topic}"), "application/json", "1");
    }
    requests += "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let batch = r#"[{"topic":"A","data":2},{"topic":"B","data":3},{"topic":"A","data":4}]"#;
    requests += &post("/publish", "application/json; charset=utf-8", batch);
    requests += &post("/publish", "application/json", "[]");
    client.write(requests.as_bytes());
    for _ in topics {
        let response = client.read_response();
        assert_eq!(
            (response.status, json_of(&response)),
            (200, json!({"seq": 1}))
        );
    }
    let health = client.read_response();
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    let response = client.read_response();
    assert_eq!(json_of(&response), json!({"seqs": [2, 2, 3]}));
    let response = client.read_response();
    assert_eq!(json_of(&response), json!({"seqs": []}));
    server.shutdown().unwrap();
}

/// Proves a chunked body, and `Expect: 100-continue` answered before the body is sent.
#[test]
fn chunked_and_expect_continue() {
    let server = start(2);
    let address = server.local_address();
    let mut client = RawClient::connect(address);
    client.write(
        b"POST /publish/X HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
    );
    let response = client.read_response();
    assert_eq!(
        (response.status, json_of(&response)),
        (200, json!({"seq": 1}))
    );
    client.write(
        b"POST /publish/X HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = client.read_response_head();
    assert_eq!(interim.status, 100);
    client.write(b"[]");
    let response = client.read_response();
    assert_eq!(
        (response.status, json_of(&response)),
        (200, json!({"seq": 2}))
    );
    server.shutdown().unwrap();
}

/// Proves each bad request gets its status and a JSON reason, and the recoverable ones leave
/// the connection open for the next request.
#[test]
fn bad_requests_get_their_status() {
    let server = start(1);
    let address = server.local_address();
    let mut client = RawClient::connect(address);
    let cases: [(String, u16); 8] = [
        (post("/publish/A", "text/plain", "1"), 415),
        (post("/publish/A", "application/json", "{nope"), 400),
        (post("/publish/A%0A", "application/json", "1"), 400),
        (post("/publish/A%zz", "application/json", "1"), 400),
        (
            post("/publish", "application/json", r#"[{"topic":"A"}]"#),
            400,
        ),
        (
            post(
                "/publish",
                "application/json",
                &format!("[{}]", [r#"{"topic":"A","data":1}"#; 5].join(",")),
            ),
            413,
        ),
        (
            "GET /publish/A HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            405,
        ),
        ("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 404),
    ];
    for (request, status) in &cases {
        client.write(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, *status, "{request}");
        assert!(json_of(&response)["error"].is_string(), "{request}");
    }
    client.write(b"POST /publish/A HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n");
    assert_eq!(client.read_response().status, 411);
    // A body over the limit is refused from its Content-Length, and the connection closes.
    let mut big = RawClient::connect(address);
    big.write(
        b"POST /publish/A HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 99999999\r\n\r\n",
    );
    assert_eq!(big.read_response().status, 413);
    big.expect_eof();
    server.shutdown().unwrap();
}

/// Proves `GET /metrics` reports per-shard counters and gauges that follow what happened.
#[test]
fn metrics_report_the_broker() {
    let server = start(2);
    let address = server.local_address();
    let mut socket = subscriber(address, "M");
    let mut client = RawClient::connect(address);
    client.write(post("/publish/M", "application/json", "7").as_bytes());
    assert_eq!(client.read_response().status, 200);
    assert_eq!(next_json(&mut socket)["data"], 7);
    // Counters are left on the board once a shard turn; poll until both shards have.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        client.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.read_response();
        assert_eq!(response.status, 200);
        assert!(response.header("content-type").unwrap().contains("text"));
        let text = String::from_utf8(response.body).unwrap();
        if sum(&text, "ringcast_deliveries_total") == 1.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(sum(&text, "ringcast_messages_published_total"), 1.0);
    assert_eq!(sum(&text, "ringcast_subscriptions"), 1.0);
    assert_eq!(sum(&text, "ringcast_topics_owned"), 1.0);
    assert!(text.contains(r#"shard="0""#) && text.contains(r#"shard="1""#));
    assert!(text.contains(r#"ringcast_slow_consumer_actions_total{shard="0",action="conflate"}"#));
    server.shutdown().unwrap();
}

/// Whether every shard reports a subscription (waiting a little for shards to post metrics).
fn every_shard_has_a_subscriber(client: &mut RawClient, shards: usize) -> bool {
    for _ in 0..100 {
        client.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let text = String::from_utf8(client.read_response().body).unwrap();
        let covered = (0..shards).all(|shard| {
            let series = format!("ringcast_subscriptions{{shard=\"{shard}\"}} ");
            text.lines().any(|line| {
                line.strip_prefix(&series)
                    .is_some_and(|value| value.trim() != "0")
            })
        });
        if covered {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The sum of a metric's samples over its labels.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
