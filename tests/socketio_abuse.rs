//! Proves Socket.IO clients that publish with acknowledgements and never read cannot make the
//! real server hold more than their acknowledgements, nor delay anyone else: publishes past
//! `socketio_acks_pending_max` are refused at once, without waiting for the owner, and an
//! honest subscriber on the same shard gets every message in order meanwhile.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};
use support::server::{
    HttpClient, OPCODE_TEXT, RawClient, ServerProcess, client_frame, raise_open_files_limit,
    upgrade_request, wait_until,
};

const WEBSOCKET_PATH: &str = "/socket.io/?EIO=4&transport=websocket";
const MIB: u64 = 1024 * 1024;
/// What RSS may grow beyond what the test makes the server hold: the allocator's caches, the
/// buffer pool's classes touched, per-connection tables (as in `server_abuse`).
const RSS_SLACK_BYTES: u64 = 24 * MIB;
/// The acknowledgements a connection may wait for, set low so that one read (4 KiB) holds
/// more publishes than that.
const ACKS_PENDING_MAX: usize = 16;
/// Bytes of one acknowledgement frame at most: `43<id>[{"op":"published","seq":<seq>}]` or
/// the refusal `43<id>[{"op":"error","reason":"too many publishes awaiting acknowledgement"}]`
/// with a frame head of 2 bytes.
const ACK_FRAME_BYTES_MAX: u64 = 96;

/// `42<ack id>["publish",{"topic":<topic>,"data":<ack id>}]` as one masked text frame.
fn publish_frame(ack_id: usize, topic: &str) -> Vec<u8> {
    let event = format!("42{ack_id}[\"publish\",{{\"topic\":\"{topic}\",\"data\":{ack_id}}}]");
    client_frame(OPCODE_TEXT, true, event.as_bytes())
}

/// A Socket.IO client over WebSocket, connected to `/`, whose receive buffer is 4 KiB: what
/// the server sends it past that waits in the server's queue until it reads.
fn connected_client(address: SocketAddr) -> RawClient {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let mut client = RawClient::from_stream(socket.into());
    client.write(upgrade_request(WEBSOCKET_PATH).as_bytes());
    client.expect_upgraded();
    client.send_frame(OPCODE_TEXT, true, b"40");
    client
}

/// Reads text frames up to the next acknowledgement (`43…`): its id and its one argument.
fn next_ack(client: &mut RawClient) -> (usize, serde_json::Value) {
    for _ in 0..256 {
        let text = client.read_text();
        let Some(rest) = text.strip_prefix("43") else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = rest[..digits].parse().unwrap();
        let arguments: serde_json::Value = serde_json::from_str(&rest[digits..]).unwrap();
        return (id, arguments[0].clone());
    }
    panic!("no acknowledgement within 256 packets");
}

/// The next `message` event's topic and seq (other events skipped).
fn next_message(client: &mut RawClient) -> (String, u64) {
    for _ in 0..1024 {
        let text = client.read_text();
        if text == "2" {
            client.send_frame(OPCODE_TEXT, true, b"3");
            continue;
        }
        if !text.starts_with("42[\"message\",") {
            continue;
        }
        // `42["message",{…}]`, with the client's offset as a last argument when it reads
        // one topic.
        let event: serde_json::Value = serde_json::from_str(&text[2..]).unwrap();
        let json = &event[1];
        return (
            json["topic"].as_str().unwrap().to_owned(),
            json["seq"].as_u64().unwrap(),
        );
    }
    panic!("no message within 1024 packets");
}

/// Proves publishes past `socketio_acks_pending_max` are refused at once: 64 publishes with
/// acknowledgements in one write (one read of the server's) get 48 refusals, for the last 48,
/// before any of the first 16 is acknowledged with its seq (which waits for the topic's owner
/// to number it); the 16 are numbered in order.
#[test]
fn acks_past_the_limit_are_refused_at_once() {
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[(
            "RINGCAST_SOCKETIO_ACKS_PENDING_MAX",
            &ACKS_PENDING_MAX.to_string(),
        )],
    );
    let mut client = connected_client(server.address);
    let burst: Vec<u8> = (0..64).flat_map(|id| publish_frame(id, "PROBE")).collect();
    assert!(
        burst.len() < 4096,
        "one read of the server's holds the burst"
    );
    client.write(&burst);
    for expected in ACKS_PENDING_MAX..64 {
        let (id, answer) = next_ack(&mut client);
        assert_eq!(id, expected, "{answer}");
        assert_eq!(
            answer,
            serde_json::json!({"op":"error","reason":"too many publishes awaiting acknowledgement"})
        );
    }
    let mut published = Vec::new();
    for _ in 0..ACKS_PENDING_MAX {
        let (id, answer) = next_ack(&mut client);
        assert_eq!(answer["op"], "published", "{answer}");
        published.push((id, answer["seq"].as_u64().unwrap()));
    }
    published.sort_unstable();
    let expected: Vec<(usize, u64)> = (0..ACKS_PENDING_MAX)
        .map(|id| (id, id as u64 + 1))
        .collect();
    assert_eq!(published, expected);
}

/// Proves 300 Socket.IO clients that each send 256 publishes with acknowledgements and never
/// read hold the server to their acknowledgements: the queues' memory stays within one
/// acknowledgement per publish, RSS within that and the history budget; and an honest
/// subscriber on the same shard gets every message of a topic the attackers publish to and
/// of a calm one in order with no gap, the calm one's published by HTTP during the attack.
#[test]
fn hostile_publishers_with_acks_stay_bounded() {
    const ATTACKERS: usize = 300;
    const PUBLISHES: usize = 256;
    /// Publishes per write: one read of the server's (4 KiB) holds them.
    const BURST: usize = 64;
    const CALM_PER_ROUND: u64 = 50;
    raise_open_files_limit(ATTACKERS as u64 + 256);
    let history_budget = 4 * MIB;
    let server = ServerProcess::start_with_environment(
        &["--shards", "1"],
        &[
            (
                "RINGCAST_SOCKETIO_ACKS_PENDING_MAX",
                &ACKS_PENDING_MAX.to_string(),
            ),
            (
                "RINGCAST_HISTORY_SHARD_BYTES_MAX",
                &history_budget.to_string(),
            ),
        ],
    );
    let mut http = HttpClient::connect(server.address);
    let mut honest = connected_client(server.address);
    honest.send_frame(
        OPCODE_TEXT,
        true,
        b"42[\"subscribe\",{\"topics\":[\"HOT\",\"CALM\"]}]",
    );
    wait_until("the honest subscription in effect", || {
        http.metric("ringcast_subscriptions") == 2
    });
    let rss_before = server.rss_bytes();

    let mut attackers: Vec<TcpStream> = (0..ATTACKERS)
        .map(|_| connected_client(server.address).stream)
        .collect();
    let mut hot_seqs = Vec::new();
    let mut calm_seqs = Vec::new();
    // The attackers write in bursts of 64 publishes (one read of the server's each), a
    // round of every attacker between messages of the calm topic. The first of each burst is
    // to the topic the honest client reads, the others to a topic of the attacker's (so that
    // the honest client's queue, which it reads only after the attack, holds what it is sent).
    for round in 0..PUBLISHES / BURST {
        for (index, attacker) in attackers.iter_mut().enumerate() {
            let own = format!("A{index}");
            let burst: Vec<u8> = (round * BURST..(round + 1) * BURST)
                .flat_map(|id| match id % BURST {
                    0 => publish_frame(id, "HOT"),
                    _ => publish_frame(id, &own),
                })
                .collect();
            attacker.write_all(&burst).unwrap();
        }
        for _ in 0..CALM_PER_ROUND {
            let body = b"{\"calm\":true}";
            assert_eq!(http.post("/publish/CALM", body, &[]).status, 200);
        }
    }
    let calm_total = (PUBLISHES / BURST) as u64 * CALM_PER_ROUND;
    while calm_seqs.len() < calm_total as usize || hot_seqs.is_empty() {
        let (topic, seq) = next_message(&mut honest);
        match topic.as_str() {
            "HOT" => hot_seqs.push(seq),
            _ => calm_seqs.push(seq),
        }
    }
    let calm_expected: Vec<u64> = (1..=calm_total).collect();
    assert_eq!(calm_seqs, calm_expected);
    let hot_expected: Vec<u64> = (1..=hot_seqs.len() as u64).collect();
    assert_eq!(
        hot_seqs, hot_expected,
        "the attacked topic in order, no gap"
    );

    // A new connection: the server may have taken longer than an idle connection may wait
    // (`handshake_timeout_ms`) to read every attacker's publishes (a debug build, a busy
    // machine).
    let mut http = HttpClient::connect(server.address);
    let memory = http.metric("ringcast_outbound_memory_bytes");
    let acks_bound = (ATTACKERS * PUBLISHES) as u64 * ACK_FRAME_BYTES_MAX;
    assert!(
        memory <= acks_bound,
        "the queues hold {memory} bytes, more than one acknowledgement per publish"
    );
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth <= acks_bound + history_budget + RSS_SLACK_BYTES,
        "RSS grew {growth} bytes"
    );
    assert!(http.metric_where("ringcast_peer_errors_total", "kind=\"request\"") > 0);
    drop(attackers);
    wait_until("the attackers' queues let go", || {
        let mut http = HttpClient::connect(server.address);
        http.metric("ringcast_outbound_memory_bytes") < 64 * 1024
    });
}
