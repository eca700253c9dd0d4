//! Authentication against the real server, with tokens made by an independent signer (Python's
//! PyJWT with cryptography, `tests/auth/tokens.py`): every algorithm, every place a token is
//! read, every way a token fails, grants by pattern, refresh and expiry, origins, the
//! per-address limits and the metrics token.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::server::*;
use support::streams::{NdjsonClient, SseClient};
use support::tools;

/// Makes keys (once per directory) and tokens with the Python signer.
struct Signer {
    directory: PathBuf,
}

impl Signer {
    fn new(name: &str) -> Signer {
        let directory = tools::fresh_directory(name);
        let signer = Signer { directory };
        signer.sign(json!({})); // Writes the keys.
        signer
    }

    /// Signs every token of `spec` (see tests/auth/tokens.py): name → token.
    fn sign(&self, spec: Value) -> HashMap<String, String> {
        let python = tools::tool_path("RINGCAST_PYTHON", ".venv/bin/python");
        tools::require_installed(&python, "the Python venv with PyJWT");
        let spec_path = self.directory.join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let mut command = Command::new(python);
        command
            .arg(tools::manifest_path("tests/auth/tokens.py"))
            .arg(&self.directory)
            .stdin(std::fs::File::open(&spec_path).unwrap());
        let output = command.output().expect("running tests/auth/tokens.py");
        assert!(
            output.status.success(),
            "tokens.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("tokens.py prints a JSON object")
    }

    fn path(&self, name: &str) -> String {
        self.directory.join(name).display().to_string()
    }
}

/// Claims of a valid token for `sub` with the given grants, expiring in `seconds`.
fn claims(sub: &str, seconds: i64, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": sub, "exp_in": seconds, "subscribe": subscribe, "publish": publish})
}

/// Sends an upgrade request for /ws with `headers` (and `query` after the path); the response
/// head, and the client for what follows.
fn upgrade(
    address: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> (RawClient, HttpResponse) {
    let mut client = RawClient::connect(address);
    let mut request = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: \
         Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    client.write(request.as_bytes());
    // A 101 has no Content-Length: its "body" is empty and frames stay unread.
    let response = client.read_response();
    (client, response)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A WebSocket opened with `token` in the Authorization header.
fn open_with(address: SocketAddr, token: &str) -> RawClient {
    let (client, response) = upgrade(address, "", &[("Authorization", &bearer(token))]);
    assert_eq!(response.status, 101, "{response:?}");
    client
}

/// Checks a 401 with the RFC 6750 challenge and `reason`.
fn expect_unauthorized(_client: &mut RawClient, response: &HttpResponse, reason: &str) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{response:?}"
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body, json!({"error": "invalid_token", "reason": reason}));
}

fn send_json(client: &mut RawClient, value: Value) {
    client.send_frame(OPCODE_TEXT, true, value.to_string().as_bytes());
}

/// The next text message, as JSON.
fn read_json(client: &mut RawClient) -> Value {
    let frame = client.read_frame();
    assert_eq!(frame.opcode, OPCODE_TEXT, "{frame:?}");
    serde_json::from_slice(&frame.payload).unwrap()
}

fn subscribe(client: &mut RawClient, topic: &str) -> Value {
    send_json(client, json!({"op": "subscribe", "topics": [topic]}));
    read_json(client)
}

fn start(signer: &Signer, key: &str, environment: &[(&str, &str)]) -> ServerProcess {
    let key_setting = match key {
        "hs256" => (
            "RINGCAST_JWT_HS256_SECRET_FILE",
            signer.path("hs256.secret"),
        ),
        kind => (
            "RINGCAST_JWT_PUBLIC_KEY_FILE",
            signer.path(&format!("{kind}.public.pem")),
        ),
    };
    let mut variables = vec![
        ("RINGCAST_AUTH_MODE", "jwt"),
        (key_setting.0, key_setting.1.as_str()),
    ];
    variables.extend_from_slice(environment);
    ServerProcess::start_with_environment(&["--listen", "127.0.0.1:0", "--shards", "2"], &variables)
}

/// Proves a token of each algorithm (HS256, RS256, ES256, EdDSA) signed by PyJWT opens a
/// WebSocket, and that one signed by another key of the same kind does not.
#[test]
fn every_algorithm_verifies_tokens_of_its_own_key() {
    let signer = Signer::new("auth-algorithms");
    for key in ["hs256", "rsa", "ec", "ed"] {
        let tokens = signer.sign(json!({
            "good": {"key": key, "claims": claims("alice", 60, &["*"], &[])},
            "wrong": {"key": format!("wrong_{key}"), "claims": claims("alice", 60, &["*"], &[])},
        }));
        let server = start(&signer, key, &[]);
        let mut client = open_with(server.address, &tokens["good"]);
        assert_eq!(subscribe(&mut client, "AAPL")["op"], "subscribed", "{key}");
        let (mut refused, response) = upgrade(
            server.address,
            "",
            &[("Authorization", &bearer(&tokens["wrong"]))],
        );
        expect_unauthorized(&mut refused, &response, "signature");
    }
}

/// Proves the token is read from the header, the cookie with an allowed Origin and the query,
/// and that a cookie counts for nothing without an allowed Origin (a foreign Origin is 403).
#[test]
fn tokens_come_from_header_cookie_with_allowed_origin_or_query() {
    let signer = Signer::new("auth-sources");
    let tokens =
        signer.sign(json!({"good": {"key": "hs256", "claims": claims("bob", 60, &["*"], &[])}}));
    let token = &tokens["good"];
    let origins = r#"["https://app.example.com", "https://*.trading.example"]"#;
    let server = start(&signer, "hs256", &[("RINGCAST_ALLOWED_ORIGINS", origins)]);
    let address = server.address;
    let cookie = format!("theme=dark; ringcast_token={token}");
    let (_, response) = upgrade(address, "", &[("Authorization", &bearer(token))]);
    assert_eq!(response.status, 101, "header: {response:?}");
    let (_, response) = upgrade(address, &format!("?token={token}"), &[]);
    assert_eq!(response.status, 101, "query: {response:?}");
    for origin in ["https://app.example.com", "https://eu.trading.example"] {
        let (_, response) = upgrade(address, "", &[("Origin", origin), ("Cookie", &cookie)]);
        assert_eq!(response.status, 101, "cookie with {origin}: {response:?}");
    }
    let (mut client, response) = upgrade(address, "", &[("Cookie", &cookie)]);
    expect_unauthorized(&mut client, &response, "missing");
    let foreign = [("Origin", "https://evil.test"), ("Cookie", cookie.as_str())];
    let (_, response) = upgrade(address, "", &foreign);
    assert_eq!(
        response.status, 403,
        "cookie with a foreign origin: {response:?}"
    );
    let foreign = [
        ("Origin", "https://evil.test"),
        ("Authorization", &bearer(token)),
    ];
    let (_, response) = upgrade(address, "", &foreign);
    assert_eq!(
        response.status, 403,
        "header with a foreign origin: {response:?}"
    );
    let mut http = HttpClient::connect(address);
    assert_eq!(
        http.metric_where("ringcast_auth_failures_total", "reason=\"origin\""),
        2
    );
    assert_eq!(
        http.metric_where("ringcast_auth_failures_total", "reason=\"missing\""),
        1
    );
}

/// Proves every kind of bad token is refused with 401, its reason and the Bearer challenge,
/// before any upgrade, and counted by reason: expired, not yet valid, wrong audience or
/// issuer, wrong key, tampered payload, `alg: none`, garbage, missing, and HS256 signed with
/// the server's RSA public key (algorithm confusion).
#[test]
fn every_bad_token_is_refused_before_the_upgrade() {
    let signer = Signer::new("auth-failures");
    let good = json!({"sub": "carol", "exp_in": 60, "aud": "ringcast", "iss": "desk"});
    let with = |changes: Value| {
        let mut claims = good.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(changes.as_object().unwrap().clone());
        claims
    };
    let tokens = signer.sign(json!({
        "good": {"key": "hs256", "claims": good},
        "expired": {"key": "hs256", "claims": with(json!({"exp_in": -60}))},
        "early": {"key": "hs256", "claims": with(json!({"nbf_in": 60}))},
        "audience": {"key": "hs256", "claims": with(json!({"aud": "other"}))},
        "issuer": {"key": "hs256", "claims": with(json!({"iss": "other"}))},
        "no_audience": {"key": "hs256", "claims": {"sub": "carol", "exp_in": 60, "iss": "desk"}},
        "wrong_key": {"key": "wrong_hs256", "claims": good},
        "tampered": {"key": "hs256", "claims": good, "tamper": with(json!({"subscribe": ["*"]}))},
        "none": {"key": "none", "claims": good},
        "no_sub": {"key": "hs256", "claims": {"exp_in": 60, "aud": "ringcast", "iss": "desk"}},
        "bad_grant": {"key": "hs256", "claims": with(json!({"subscribe": ["A*B*"]}))},
    }));
    let environment = [
        ("RINGCAST_JWT_AUDIENCE", "ringcast"),
        ("RINGCAST_JWT_ISSUER", "desk"),
        ("RINGCAST_JWT_LEEWAY_MS", "0"),
    ];
    let server = start(&signer, "hs256", &environment);
    let (_, response) = upgrade(
        server.address,
        "",
        &[("Authorization", &bearer(&tokens["good"]))],
    );
    assert_eq!(response.status, 101, "{response:?}");
    let cases = [
        ("expired", "expired"),
        ("early", "not_yet_valid"),
        ("audience", "audience"),
        ("no_audience", "audience"),
        ("issuer", "issuer"),
        ("wrong_key", "signature"),
        ("tampered", "signature"),
        ("none", "algorithm"),
        ("no_sub", "claims"),
        ("bad_grant", "claims"),
    ];
    for (name, reason) in cases {
        let (mut client, response) = upgrade(
            server.address,
            "",
            &[("Authorization", &bearer(&tokens[name]))],
        );
        expect_unauthorized(&mut client, &response, reason);
        client.expect_eof();
    }
    for garbage in ["x", "a.b", "a.b.c", "....", "eyJ.eyJ.sig"] {
        let (mut client, response) =
            upgrade(server.address, "", &[("Authorization", &bearer(garbage))]);
        expect_unauthorized(&mut client, &response, "malformed");
    }
    let (mut client, response) = upgrade(server.address, "", &[]);
    expect_unauthorized(&mut client, &response, "missing");
    let mut http = HttpClient::connect(server.address);
    let count = |http: &mut HttpClient, reason: &str| {
        http.metric_where(
            "ringcast_auth_failures_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(count(&mut http, "audience"), 2);
    assert_eq!(count(&mut http, "signature"), 2);
    assert_eq!(count(&mut http, "malformed"), 5);
    assert_eq!(count(&mut http, "claims"), 2);

    let tokens = signer.sign(json!({
        "confused": {"key": "hs256_with_rsa_public", "claims": claims("mallory", 60, &["*"], &[])},
        "hmac": {"key": "hs256", "claims": claims("mallory", 60, &["*"], &[])},
        "good": {"key": "rsa", "claims": claims("mallory", 60, &["*"], &[])},
    }));
    let server = start(&signer, "rsa", &[]);
    for (name, reason) in [("confused", "algorithm"), ("hmac", "algorithm")] {
        let (mut client, response) = upgrade(
            server.address,
            "",
            &[("Authorization", &bearer(&tokens[name]))],
        );
        expect_unauthorized(&mut client, &response, reason);
    }
    let (_, response) = upgrade(
        server.address,
        "",
        &[("Authorization", &bearer(&tokens["good"]))],
    );
    assert_eq!(response.status, 101);
}

/// Proves grants by pattern (exact, prefix, none) decide subscribes and publishes over the
/// WebSocket and over HTTP, that a forbidden request is answered and the connection goes on,
/// and that a batch with one forbidden item publishes nothing.
#[test]
fn grants_decide_subscribes_and_publishes_and_the_connection_goes_on() {
    let signer = Signer::new("auth-grants");
    let tokens = signer.sign(json!({
        "reader": {"key": "hs256", "claims": claims("dave", 60, &["AAPL", "FX.*"], &["FX.EURUSD"])},
        "publisher": {"key": "hs256", "claims": claims("feed", 60, &[], &["FX.*", "AAPL"])},
    }));
    let server = start(&signer, "hs256", &[]);
    let mut client = open_with(server.address, &tokens["reader"]);
    assert_eq!(subscribe(&mut client, "AAPL")["op"], "subscribed");
    let refused = subscribe(&mut client, "MSFT");
    assert_eq!(
        refused,
        json!({"op": "error", "reason": "forbidden", "topic": "MSFT"})
    );
    assert_eq!(subscribe(&mut client, "FX.EURUSD")["op"], "subscribed");
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "AAPL", "data": 1}),
    );
    let refused = read_json(&mut client);
    assert_eq!(
        refused,
        json!({"op": "error", "reason": "forbidden", "topic": "AAPL"})
    );
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "FX.EURUSD", "data": 2}),
    );
    let message = read_json(&mut client);
    assert_eq!(
        (message["topic"].as_str(), message["data"].as_i64()),
        (Some("FX.EURUSD"), Some(2))
    );

    let mut http = HttpClient::connect(server.address);
    let publisher = bearer(&tokens["publisher"]);
    let granted = http.post("/publish/AAPL", b"3", &[("Authorization", &publisher)]);
    assert_eq!(granted.status, 200, "{granted:?}");
    let message = read_json(&mut client);
    assert_eq!(
        (message["topic"].as_str(), message["data"].as_i64()),
        (Some("AAPL"), Some(3))
    );
    let forbidden = http.post("/publish/MSFT", b"4", &[("Authorization", &publisher)]);
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    let batch = br#"[{"topic":"AAPL","data":5},{"topic":"MSFT","data":6}]"#;
    let forbidden = http.post("/publish", batch, &[("Authorization", &publisher)]);
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    let reader = bearer(&tokens["reader"]);
    let forbidden = http.post("/publish/AAPL", b"7", &[("Authorization", &reader)]);
    assert_eq!(
        forbidden.status, 403,
        "the reader may not publish AAPL: {forbidden:?}"
    );
    let granted = http.post("/publish/AAPL", b"8", &[("Authorization", &publisher)]);
    assert_eq!(
        granted.status, 200,
        "the connection goes on after a 403: {granted:?}"
    );
    let message = read_json(&mut client);
    assert_eq!(
        message["data"].as_i64(),
        Some(8),
        "nothing of the refused batch came first"
    );
    let mut anonymous = HttpClient::connect(server.address);
    assert_eq!(anonymous.post("/publish/AAPL", b"9", &[]).status, 401);
    let mut anonymous = HttpClient::connect(server.address);
    assert_eq!(anonymous.get("/health").status, 200, "/health stays open");
    assert_eq!(
        http.metric_where("ringcast_forbidden_total", "kind=\"request\""),
        5
    );
}

/// Proves a refresh for the same `sub` moves the expiry and applies its grants at once
/// (dropping a subscription no longer granted, with an error), that refreshes for another sub
/// or with a bad token are refused without closing, and that a refresh after `exp` but within
/// the grace keeps the connection open past where it would have closed.
#[test]
fn refresh_moves_the_expiry_and_replaces_the_grants() {
    let signer = Signer::new("auth-refresh");
    let tokens = signer.sign(json!({
        "short": {"key": "hs256", "claims": claims("erin", 2, &["A", "B"], &[])},
        "narrower": {"key": "hs256", "claims": claims("erin", 60, &["A"], &[])},
        "other_sub": {"key": "hs256", "claims": claims("frank", 60, &["*"], &[])},
        "expired": {"key": "hs256", "claims": claims("erin", -60, &["*"], &[])},
    }));
    let environment = [
        ("RINGCAST_JWT_LEEWAY_MS", "0"),
        ("RINGCAST_EXPIRY_GRACE_MS", "3000"),
    ];
    let server = start(&signer, "hs256", &environment);
    let mut client = open_with(server.address, &tokens["short"]);
    assert_eq!(subscribe(&mut client, "A")["op"], "subscribed");
    assert_eq!(subscribe(&mut client, "B")["op"], "subscribed");
    for (name, reason) in [
        ("other_sub", "refresh refused: the token names another sub"),
        ("expired", "refresh refused: expired"),
    ] {
        send_json(&mut client, json!({"op": "refresh", "token": tokens[name]}));
        assert_eq!(
            read_json(&mut client),
            json!({"op": "error", "reason": reason})
        );
    }
    // Past `exp` (2 s), within the grace (3 s more): the refresh still counts.
    std::thread::sleep(Duration::from_millis(2500));
    send_json(
        &mut client,
        json!({"op": "refresh", "token": tokens["narrower"]}),
    );
    let refreshed = read_json(&mut client);
    assert_eq!(refreshed["op"], "refreshed", "{refreshed}");
    assert!(refreshed["exp"].as_u64().is_some(), "{refreshed}");
    let revoked = read_json(&mut client);
    assert_eq!(
        revoked,
        json!({"op": "error", "reason": "forbidden", "topic": "B"})
    );
    // Past where the first token's grace ended: still open, and A still delivered.
    std::thread::sleep(Duration::from_millis(3000));
    let mut http = HttpClient::connect(server.address);
    let admin =
        signer.sign(json!({"p": {"key": "hs256", "claims": claims("feed", 60, &[], &["*"])}}));
    let publisher = bearer(&admin["p"]);
    assert_eq!(
        http.post("/publish/B", b"1", &[("Authorization", &publisher)])
            .status,
        200
    );
    assert_eq!(
        http.post("/publish/A", b"2", &[("Authorization", &publisher)])
            .status,
        200
    );
    let message = read_json(&mut client);
    assert_eq!(
        (message["topic"].as_str(), message["data"].as_i64()),
        (Some("A"), Some(2))
    );
    assert_eq!(http.metric("ringcast_token_refreshes_total"), 1);
    assert_eq!(
        http.metric_where("ringcast_forbidden_total", "kind=\"revoked\""),
        1
    );
    assert_eq!(http.metric("ringcast_token_expiries_total"), 0);
}

/// Proves a WebSocket whose token expires without a refresh is closed with 4001 "token
/// expired" once the grace passes, and counted.
#[test]
fn an_expired_token_closes_the_websocket_with_4001() {
    let signer = Signer::new("auth-expiry");
    let tokens =
        signer.sign(json!({"short": {"key": "hs256", "claims": claims("gina", 2, &["*"], &[])}}));
    let environment = [
        ("RINGCAST_JWT_LEEWAY_MS", "0"),
        ("RINGCAST_EXPIRY_GRACE_MS", "200"),
    ];
    let server = start(&signer, "hs256", &environment);
    let mut client = open_with(server.address, &tokens["short"]);
    assert_eq!(subscribe(&mut client, "A")["op"], "subscribed");
    let close = client.read_frame();
    assert_eq!(
        close.close_code_and_reason(),
        Some((4001, "token expired".to_owned()))
    );
    let mut http = HttpClient::connect(server.address);
    assert_eq!(http.metric("ringcast_token_expiries_total"), 1);
}

/// Proves the per-address limits: past `connections_per_ip_max` open connections, or past
/// `handshakes_per_ip_per_second` new ones, a connection is answered 429 and closed, a closed
/// connection frees its place, and both are counted.
#[test]
fn per_address_limits_answer_429() {
    let arguments = ["--listen", "127.0.0.1:0", "--shards", "2"];
    let environment = [
        ("RINGCAST_CONNECTIONS_PER_IP_MAX", "3"),
        ("RINGCAST_HANDSHAKES_PER_IP_PER_SECOND", "0"),
    ];
    let server = ServerProcess::start_with_environment(&arguments, &environment);
    let mut open: Vec<RawClient> = (0..3)
        .map(|_| RawClient::upgraded(server.address, "/ws"))
        .collect();
    let (_, response) = upgrade(server.address, "", &[]);
    assert_eq!(response.status, 429, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"));
    let mut closing = open.pop().unwrap();
    closing.send_frame(OPCODE_CLOSE, true, &close_payload(1000, ""));
    assert_eq!(closing.read_close_code(), Some(1000));
    closing.expect_eof();
    wait_until("the closed connection's place to free", || {
        let (_, response) = upgrade(server.address, "", &[]);
        response.status == 101
    });
    drop(open);

    let environment = [
        ("RINGCAST_CONNECTIONS_PER_IP_MAX", "0"),
        ("RINGCAST_HANDSHAKES_PER_IP_PER_SECOND", "2"),
    ];
    let server = ServerProcess::start_with_environment(&arguments, &environment);
    let statuses: Vec<u16> = (0..3)
        .map(|_| upgrade(server.address, "", &[]).1.status)
        .collect();
    assert!(
        statuses.contains(&429),
        "the third within a second is refused: {statuses:?}"
    );
    std::thread::sleep(Duration::from_millis(1100)); // The bucket refills for the scrape.
    let mut http = HttpClient::connect(server.address);
    let refused = http.metric_where("ringcast_connections_refused_total", "per_ip_handshakes");
    assert!(refused >= 1, "{refused}");
}

/// Proves `/metrics` asks for `metrics_token` when one is set, while `/health` stays open.
#[test]
fn the_metrics_token_guards_metrics_and_health_stays_open() {
    let arguments = ["--listen", "127.0.0.1:0", "--shards", "1"];
    let environment = [("RINGCAST_METRICS_TOKEN", "scrape-secret")];
    let server = ServerProcess::start_with_environment(&arguments, &environment);
    let mut http = HttpClient::connect(server.address);
    assert_eq!(http.get("/health").status, 200);
    let mut client = RawClient::connect(server.address);
    client.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n");
    assert_eq!(client.read_response().status, 401);
    let mut client = RawClient::connect(server.address);
    client
        .write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer scrape-secret\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).unwrap();
    assert!(text.contains("ringcast_auth_failures_total{shard=\"0\",reason=\"metrics_token\"} 1"));
}

/// `GET target` with `headers` on a new connection; the whole answer (for refusals, which
/// have a body of known length).
fn get_once(address: SocketAddr, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut client = RawClient::connect(address);
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    client.write(request.as_bytes());
    client.read_response()
}

/// Checks a 401 (challenge and `reason`) of a request that is not an upgrade.
fn expect_refused_401(response: &HttpResponse, reason: &str) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{response:?}"
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body, json!({"error": "invalid_token", "reason": reason}));
}

/// Checks a 403 for a topic outside the subscribe grants.
fn expect_forbidden_topic(response: &HttpResponse, topic: &str) {
    assert_eq!(response.status, 403, "{response:?}");
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    let text = body.to_string();
    assert!(
        text.contains("forbidden") && text.contains(topic),
        "{response:?}"
    );
}

/// Proves SSE (`/sse`), NDJSON streams (`/stream`) and polls (`/poll`) ask for the token like
/// the WebSocket (401 before any stream; header, query, cookie with an allowed Origin), that
/// every topic asked for must be within the `subscribe` grants (403 before any subscription,
/// and a poll's connection goes on), and that a granted stream delivers.
#[test]
fn sse_streams_and_polls_ask_for_a_token_and_honour_grants() {
    let signer = Signer::new("auth-streams");
    let tokens = signer.sign(json!({
        "reader": {"key": "hs256", "claims": claims("hana", 60, &["AAPL", "FX.*"], &[])},
        "publisher": {"key": "hs256", "claims": claims("feed", 60, &[], &["*"])},
    }));
    let reader = &tokens["reader"];
    let reader_bearer = bearer(reader);
    let origins = r#"["https://app.example.com"]"#;
    let server = start(&signer, "hs256", &[("RINGCAST_ALLOWED_ORIGINS", origins)]);
    let address = server.address;

    // No token, a bad one, a cookie without an allowed Origin: 401 before any stream.
    for target in [
        "/sse?topics=AAPL",
        "/stream?topics=AAPL",
        "/poll?topics=AAPL",
    ] {
        expect_refused_401(&get_once(address, target, &[]), "missing");
        let garbage = format!("{target}&token=a.b.c");
        expect_refused_401(&get_once(address, &garbage, &[]), "malformed");
        let cookie = format!("ringcast_token={reader}");
        let response = get_once(address, target, &[("Cookie", &cookie)]);
        expect_refused_401(&response, "missing");
        let foreign = [("Origin", "https://evil.test"), ("Cookie", cookie.as_str())];
        assert_eq!(get_once(address, target, &foreign).status, 403, "{target}");
    }

    // A topic outside the grants: 403 naming it, whatever the other topics.
    let forbidden = "/sse?topics=AAPL,MSFT";
    let response = get_once(address, forbidden, &[("Authorization", &reader_bearer)]);
    expect_forbidden_topic(&response, "MSFT");
    let response = get_once(
        address,
        &format!("/stream?topics=FX.EURUSD,BTC&token={reader}"),
        &[],
    );
    expect_forbidden_topic(&response, "BTC");

    // Granted: SSE with the query token, SSE with a cookie and an allowed Origin, NDJSON.
    let mut sse = SseClient::open(
        address,
        &format!("/sse?topics=AAPL,FX.EURUSD&token={reader}"),
        &[],
    );
    assert_eq!(sse.head.status, 200, "{:?}", sse.head);
    let cookie = format!("ringcast_token={reader}");
    let allowed = [
        ("Origin", "https://app.example.com"),
        ("Cookie", cookie.as_str()),
    ];
    let mut sse_cookie = SseClient::open(address, "/sse?topics=AAPL", &allowed);
    assert_eq!(sse_cookie.head.status, 200, "{:?}", sse_cookie.head);
    let mut ndjson = NdjsonClient::open(address, &format!("/stream?topics=AAPL&token={reader}"));
    assert_eq!(ndjson.head.status, 200, "{:?}", ndjson.head);

    // A poll refused for its topics leaves the connection usable for the next poll.
    let mut poller = HttpClient::connect(address);
    let header = [("Authorization", reader_bearer.as_str())];
    let response = poller.get_with("/poll?topics=MSFT&wait_ms=0", &header);
    expect_forbidden_topic(&response, "MSFT");
    let response = poller.get_with("/poll?topics=FX.GBPUSD&wait_ms=0", &header);
    assert_eq!(response.status, 200, "{response:?}");

    wait_until("the streams' subscriptions", || {
        HttpClient::connect(address).metric("ringcast_subscriptions") >= 4
    });
    let mut publisher = HttpClient::connect(address);
    let publisher_bearer = bearer(&tokens["publisher"]);
    let published = publisher.post(
        "/publish/AAPL",
        b"{\"n\":1}",
        &[("Authorization", &publisher_bearer)],
    );
    assert_eq!(published.status, 200, "{published:?}");
    for client in [&mut sse, &mut sse_cookie] {
        let event = loop {
            let event = client.next_event().expect("an event");
            if event.event == "message" {
                break event;
            }
        };
        let message: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            (message["topic"].as_str(), message["data"]["n"].as_i64()),
            (Some("AAPL"), Some(1)),
            "{event:?}"
        );
    }
    let line = loop {
        let line = ndjson.next_line().expect("a line");
        if line["topic"] == "AAPL" && line.get("data").is_some() {
            break line;
        }
    };
    assert_eq!(line["data"]["n"], 1, "{line}");

    let mut http = HttpClient::connect(address);
    assert_eq!(
        http.metric_where("ringcast_forbidden_total", "kind=\"request\""),
        3
    );
    assert_eq!(
        http.metric_where("ringcast_auth_failures_total", "reason=\"origin\""),
        3
    );
}

/// Proves a stream ends, with an `expired` event or line, when its token's `exp` plus the
/// grace passes, and that a long poll held past it answers then (its wait was 55 s, longer
/// than the client waits), after which the same token is refused as expired.
/// (The token lives 5 s so that the server starts well within it.)
#[test]
fn streams_end_and_polls_answer_when_the_token_runs_out() {
    let signer = Signer::new("auth-stream-expiry");
    let tokens =
        signer.sign(json!({"short": {"key": "hs256", "claims": claims("ivan", 5, &["*"], &[])}}));
    let token = &tokens["short"];
    let environment = [
        ("RINGCAST_JWT_LEEWAY_MS", "0"),
        ("RINGCAST_EXPIRY_GRACE_MS", "200"),
    ];
    let server = start(&signer, "hs256", &environment);
    let address = server.address;
    let mut sse = SseClient::open(address, &format!("/sse?topics=A&token={token}"), &[]);
    assert_eq!(sse.head.status, 200, "{:?}", sse.head);
    let mut ndjson = NdjsonClient::open(address, &format!("/stream?topics=A&token={token}"));
    assert_eq!(ndjson.head.status, 200, "{:?}", ndjson.head);
    let mut poller = HttpClient::connect(address);
    let header = [("Authorization", bearer(token))];
    let header = [(header[0].0, header[0].1.as_str())];
    let response = poller.get_with("/poll?topics=A&wait_ms=55000", &header);
    assert_eq!(response.status, 200, "{response:?}");
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["messages"], json!([]), "{body}");
    let response = poller.get_with("/poll?topics=A&wait_ms=0", &header);
    expect_refused_401(&response, "expired");

    let last = std::iter::from_fn(|| sse.next_event()).last();
    assert_eq!(
        last.map(|event| (event.event, event.data)),
        Some(("expired".to_owned(), "{\"op\":\"expired\"}".to_owned()))
    );
    let last = std::iter::from_fn(|| ndjson.next_line()).last();
    assert_eq!(last, Some(json!({"op": "expired"})));
    let mut http = HttpClient::connect(address);
    assert_eq!(http.metric("ringcast_token_expiries_total"), 2);
}
