//! A webhook receiver for the tests: a plain HTTP/1.1 server on an ephemeral loopback port
//! that records every request, checks its Standard Webhooks signature with its own HMAC-SHA256
//! (the RustCrypto `hmac` and `sha2` crates, nothing of the crate under test), and answers as
//! the test's plan says: any status with any headers, or no answer at all (to make the sender
//! time out).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a connection may sit idle before the receiver drops it.
const IDLE_WAIT: Duration = Duration::from_secs(120);
/// Largest request body the receiver reads.
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Which attempt of this id it is (from 1).
    pub attempt: u32,
    /// Which distinct id it carries, in order of first arrival (from 0).
    pub id_index: usize,
    /// Whether the signature verified with the receiver's own HMAC.
    pub signature_valid: bool,
    /// The status answered, or 0 when the receiver did not answer.
    pub status: u16,
    pub arrived: Instant,
}

/// What to do with a request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Answer with this status and these headers (and an empty body).
    Status(u16, Vec<(&'static str, String)>),
    /// Read the request, answer nothing for this long, then close the connection.
    Silence(Duration),
}

impl Answer {
    pub fn ok() -> Answer {
        Answer::Status(204, Vec::new())
    }
}

type Plan = Box<dyn FnMut(&Captured) -> Answer + Send>;

struct Shared {
    key: Vec<u8>,
    plan: Mutex<Plan>,
    requests: Mutex<Vec<Captured>>,
}

/// A running receiver; its threads end with the test process.
pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Starts a receiver for `secret` (`whsec_…`) that answers as `plan` says.
    pub fn start(secret: &str, plan: impl FnMut(&Captured) -> Answer + Send + 'static) -> Receiver {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64 secret");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            key,
            plan: Mutex::new(Box::new(plan)),
            requests: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Receiver { address, shared }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Captured> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|request| (200..300).contains(&request.status))
            .collect()
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    stream.set_read_timeout(Some(IDLE_WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((path, headers, body)) = read_request(&mut reader) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        let mut captured = Captured {
            path,
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            content_type: header("content-type"),
            body,
            attempt: 0,
            id_index: 0,
            signature_valid: false,
            status: 0,
            arrived: Instant::now(),
        };
        captured.signature_valid = verify(&shared.key, &captured);
        let answer = {
            let mut requests = shared.requests.lock().unwrap();
            let attempts = requests.iter().filter(|r| r.id == captured.id).count();
            captured.attempt = attempts as u32 + 1;
            let known = requests.iter().find(|r| r.id == captured.id);
            captured.id_index = match known {
                Some(first) => first.id_index,
                None => requests.iter().map(|r| r.id_index + 1).max().unwrap_or(0),
            };
            let answer = (shared.plan.lock().unwrap())(&captured);
            if let Answer::Status(status, _) = &answer {
                captured.status = *status;
            }
            requests.push(captured);
            answer
        };
        match answer {
            Answer::Status(status, headers) => {
                let mut response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n");
                for (name, value) in headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                if writer.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Silence(duration) => {
                std::thread::sleep(duration);
                return;
            }
        }
    }
}

/// A request's path, headers and body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one request: path, headers, body (by Content-Length). `None` at EOF or on nonsense.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let end = line == b"\r\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut header_slots);
    request.parse(&head).ok()?;
    let path = request.path?.to_owned();
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|header| {
            let value = String::from_utf8_lossy(header.value).into_owned();
            (header.name.to_owned(), value)
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    assert!(length <= BODY_BYTES_MAX, "a request body of {length} bytes");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, body))
}

/// Checks `v1,<base64 HMAC-SHA256(id.timestamp.body)>` (any of space-separated signatures)
/// and that the timestamp is within five minutes of now, as Standard Webhooks receivers do.
fn verify(key: &[u8], request: &Captured) -> bool {
    let Ok(timestamp) = request.timestamp.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(timestamp) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(request.id.as_bytes());
    mac.update(b".");
    mac.update(request.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    request
        .signature
        .split(' ')
        .any(|signature| signature.strip_prefix("v1,") == Some(expected.as_str()))
}
