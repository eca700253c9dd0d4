//! One webhook endpoint's settings (a `[[webhook]]` table of the config file), with their
//! defaults and the reasons for them, and their validation at start-up.

use std::net::IpAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::firewall;
use crate::broker::event::{EventKind, EventKinds};

/// Most webhook endpoints one process delivers to: each costs a task, a queue and an HTTP
/// connection, and a long list of endpoints is a job for a fan-out service behind one.
pub const WEBHOOKS_MAX: usize = 64;
/// Most events in one request.
pub const BATCH_MAX_LIMIT: usize = 10_000;
/// Longest `batch_wait_ms`, `timeout_ms` and `retry_max_ms` accepted: an hour.
pub const WAIT_MS_LIMIT: u64 = 3_600_000;
/// Most attempts of one request.
pub const ATTEMPTS_MAX_LIMIT: u32 = 1_000;
/// Least `queue_bytes_max`: room for a few events of any kind but large messages.
pub const QUEUE_BYTES_MIN: usize = 4096;
/// What a Standard Webhooks secret starts with; base64 of the key follows.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key lengths Standard Webhooks allows, in bytes.
pub const SECRET_BYTES_MIN: usize = 24;
pub const SECRET_BYTES_MAX: usize = 64;

/// One endpoint that receives events (`[[webhook]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint's name in `/metrics` (the `endpoint` label) and in the log. Default: its
    /// position among the `[[webhook]]` tables ("0", "1", …), since the URL may hold a token.
    pub name: String,
    /// Where events are POSTed: `http://` or `https://`. Required. Redirects are not followed.
    pub url: String,
    /// Event types to send, by name: topic.occupied, topic.vacated, connection.opened,
    /// connection.closed, subscription.created, subscription.removed, message.published.
    /// Required (at least one).
    pub events: Vec<String>,
    /// Topic patterns for the topic, subscription and message events: a name or a prefix ending
    /// in `*`. Default `["*"]`, every topic.
    pub topics: Vec<String>,
    /// The Standard Webhooks secret: `whsec_` and base64 of 24 to 64 random bytes. Required:
    /// every request is signed with it.
    pub secret: String,
    /// Most events in one request. Default 1: each request carries one event as a JSON object.
    /// Above 1, every request carries a JSON array of up to this many.
    pub batch_max: usize,
    /// How long an event may wait for others to fill its request (when `batch_max` > 1), and
    /// how long `topic.occupied`/`topic.vacated` wait in any case, so that one undone by its
    /// opposite meanwhile is sent not at all. Default 100 ms.
    pub batch_wait_ms: u64,
    /// One attempt's time limit, from connecting to the end of the response head. Default 10 s:
    /// the Standard Webhooks range is 15–30 s for any receiver; this one is on the same network
    /// and a slow one holds up every event behind it.
    pub timeout_ms: u64,
    /// Attempts of one request before its events are dropped (counted). Default 8.
    pub attempts_max: u32,
    /// Retries wait a random time up to `retry_base_ms` × 2^(retry − 1), at most `retry_max_ms`
    /// (capped exponential backoff with full jitter), or what a 429/502/503/504's `Retry-After`
    /// says. Defaults 500 ms and 60 s.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Memory the endpoint's queue may hold (events encoded, the request in flight, 64 bytes of
    /// bookkeeping each). Default 16 MiB. When an event does not fit, the oldest waiting events
    /// are dropped to make room (counted).
    pub queue_bytes_max: usize,
    /// Allow destinations on loopback, private, link-local, unique-local, shared (CGNAT) or
    /// cloud metadata addresses. Default off: a webhook URL must not reach inside the network.
    pub allow_private_destinations: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            events: Vec::new(),
            topics: vec!["*".into()],
            secret: String::new(),
            batch_max: 1,
            batch_wait_ms: 100,
            timeout_ms: 10_000,
            attempts_max: 8,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            queue_bytes_max: 16 * 1024 * 1024,
            allow_private_destinations: false,
        }
    }
}

/// A webhook's settings checked and parsed: what the delivery uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    pub kinds: EventKinds,
    pub topics: Vec<String>,
    pub key: Vec<u8>,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    pub timeout_ms: u64,
    pub attempts_max: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub queue_bytes_max: usize,
    pub allow_private_destinations: bool,
}

impl Endpoint {
    /// Whether this endpoint takes `kind` about `topic` (`None` for connection events).
    pub fn wants(&self, kind: EventKind, topic: Option<&[u8]>) -> bool {
        self.kinds.contains(kind)
            && topic.is_none_or(|topic| {
                self.topics
                    .iter()
                    .any(|pattern| crate::broker::event::topic_matches(pattern, topic))
            })
    }
}

impl WebhookConfig {
    /// Checks the settings and parses them; `index` is the table's position (the default name).
    /// An error says what is wrong in words an operator can act on.
    pub fn parse(&self, index: usize, topic_bytes_max: usize) -> Result<Endpoint, String> {
        let name = match self.name.is_empty() {
            true => index.to_string(),
            false => self.name.clone(),
        };
        let within =
            |value: u64, low: u64, high: u64, what: &str| match (low..=high).contains(&value) {
                true => Ok(()),
                false => Err(format!("{what} {value} is outside {low}..={high}")),
            };
        within(
            self.batch_max as u64,
            1,
            BATCH_MAX_LIMIT as u64,
            "batch_max",
        )?;
        within(self.batch_wait_ms, 0, WAIT_MS_LIMIT, "batch_wait_ms")?;
        within(self.timeout_ms, 1, WAIT_MS_LIMIT, "timeout_ms")?;
        within(
            u64::from(self.attempts_max),
            1,
            u64::from(ATTEMPTS_MAX_LIMIT),
            "attempts_max",
        )?;
        within(self.retry_base_ms, 1, WAIT_MS_LIMIT, "retry_base_ms")?;
        within(
            self.retry_max_ms,
            self.retry_base_ms,
            WAIT_MS_LIMIT,
            "retry_max_ms",
        )?;
        if self.queue_bytes_max < QUEUE_BYTES_MIN {
            return Err(format!(
                "queue_bytes_max {} is below {QUEUE_BYTES_MIN}",
                self.queue_bytes_max
            ));
        }
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(format!(
                "name {name:?} must be printable ASCII without spaces"
            ));
        }
        Ok(Endpoint {
            name,
            url: self.checked_url()?,
            kinds: self.checked_kinds()?,
            topics: self.checked_topics(topic_bytes_max)?,
            key: self.checked_key()?,
            batch_max: self.batch_max,
            batch_wait_ms: self.batch_wait_ms,
            timeout_ms: self.timeout_ms,
            attempts_max: self.attempts_max,
            retry_base_ms: self.retry_base_ms,
            retry_max_ms: self.retry_max_ms,
            queue_bytes_max: self.queue_bytes_max,
            allow_private_destinations: self.allow_private_destinations,
        })
    }

    /// An http(s) URL with a host; a host given as an address must be public unless
    /// `allow_private_destinations` (names are checked as they resolve, on every connection).
    fn checked_url(&self) -> Result<reqwest::Url, String> {
        if self.url.is_empty() {
            return Err("url is required".into());
        }
        let url = reqwest::Url::parse(&self.url).map_err(|error| format!("url: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "url scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str() else {
            return Err("url has no host".into());
        };
        // An IPv6 host comes in brackets; a name does not parse as an address.
        let address: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        if let Some(address) = address
            && !self.allow_private_destinations
            && let Some(class) = firewall::private_class(address)
        {
            return Err(format!(
                "url host {address} is a {class} address; webhooks go only to public addresses \
                 unless this [[webhook]] sets allow_private_destinations = true"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials; use the signature".into());
        }
        Ok(url)
    }

    fn checked_kinds(&self) -> Result<EventKinds, String> {
        if self.events.is_empty() {
            return Err("events must name at least one event type".into());
        }
        let mut kinds = EventKinds::default();
        for name in &self.events {
            let kind = EventKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
                format!("event type {name:?} is not one of {}", known.join(", "))
            })?;
            kinds.insert(kind);
        }
        Ok(kinds)
    }

    fn checked_topics(&self, topic_bytes_max: usize) -> Result<Vec<String>, String> {
        if self.topics.is_empty() {
            return Err("topics must hold at least one pattern (\"*\" is every topic)".into());
        }
        for pattern in &self.topics {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            let printable = name.bytes().all(|byte| (0x20..=0x7E).contains(&byte));
            if name.contains('*') || !printable || name.len() > topic_bytes_max {
                return Err(format!(
                    "topic pattern {pattern:?} must be a topic name or a prefix ending in *"
                ));
            }
        }
        Ok(self.topics.clone())
    }

    fn checked_key(&self) -> Result<Vec<u8>, String> {
        let Some(encoded) = self.secret.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "secret must start with {SECRET_PREFIX} (Standard Webhooks), followed by base64"
            ));
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|error| {
                format!("secret: the part after {SECRET_PREFIX} is not base64: {error}")
            })?;
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()) {
            return Err(format!(
                "secret holds {} bytes; Standard Webhooks keys are {SECRET_BYTES_MIN} to \
                 {SECRET_BYTES_MAX} random bytes",
                key.len()
            ));
        }
        Ok(key)
    }
}

/// Checks every `[[webhook]]` table; the error names the table by its position.
pub fn parse_all(
    webhooks: &[WebhookConfig],
    topic_bytes_max: usize,
) -> Result<Vec<Endpoint>, String> {
    if webhooks.len() > WEBHOOKS_MAX {
        return Err(format!(
            "{} [[webhook]] tables; at most {WEBHOOKS_MAX}",
            webhooks.len()
        ));
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(webhooks.len());
    for (index, webhook) in webhooks.iter().enumerate() {
        let endpoint = webhook
            .parse(index, topic_bytes_max)
            .map_err(|reason| format!("[[webhook]] number {} ({index}): {reason}", index + 1))?;
        if endpoints.iter().any(|other| other.name == endpoint.name) {
            return Err(format!(
                "[[webhook]] number {}: name {:?} is taken by another",
                index + 1,
                endpoint.name
            ));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn valid() -> WebhookConfig {
        WebhookConfig {
            url: "https://hooks.example.com/ringcast".into(),
            events: vec!["topic.occupied".into(), "message.published".into()],
            secret: SECRET.into(),
            ..WebhookConfig::default()
        }
    }

    /// Proves a complete table parses, with its defaults and its name from its position.
    #[test]
    fn valid_table_parses() {
        let endpoint = valid().parse(3, 128).unwrap();
        assert_eq!(endpoint.name, "3");
        assert_eq!(endpoint.key.len(), 24);
        assert!(endpoint.wants(EventKind::TopicOccupied, Some(b"AAPL")));
        assert!(!endpoint.wants(EventKind::TopicVacated, Some(b"AAPL")));
        assert_eq!(endpoint.batch_max, 1);
    }

    /// Proves each kind of mistake is refused with a reason naming the setting.
    #[test]
    fn mistakes_are_named() {
        type Mistake = fn(&mut WebhookConfig);
        let cases: [(Mistake, &str); 12] = [
            (|webhook| webhook.url.clear(), "url is required"),
            (|webhook| webhook.url = "ftp://x.example/".into(), "scheme"),
            (
                |webhook| webhook.url = "http://127.0.0.1:9/".into(),
                "loopback",
            ),
            (
                |webhook| webhook.url = "http://[fd00::1]/".into(),
                "unique-local",
            ),
            (
                |webhook| webhook.url = "http://169.254.169.254/".into(),
                "link-local",
            ),
            (
                |webhook| webhook.url = "https://user:pw@x.example/".into(),
                "credentials",
            ),
            (
                |webhook| webhook.events = vec!["topic.occupy".into()],
                "not one of",
            ),
            (|webhook| webhook.events.clear(), "at least one"),
            (
                |webhook| webhook.topics = vec!["A*B".into()],
                "prefix ending in *",
            ),
            (
                |webhook| webhook.secret = "MfKQ9r8GKYqrTwjU".into(),
                "whsec_",
            ),
            (|webhook| webhook.secret = "whsec_AAAA".into(), "bytes"),
            (|webhook| webhook.batch_max = 0, "batch_max"),
        ];
        for (mistake, expected) in cases {
            let mut webhook = valid();
            mistake(&mut webhook);
            let error = webhook.parse(0, 128).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
        let mut allowed = valid();
        allowed.url = "http://127.0.0.1:9/".into();
        allowed.allow_private_destinations = true;
        assert!(allowed.parse(0, 128).is_ok());
    }

    /// Proves names must be unique, since they tell the endpoints apart in metrics.
    #[test]
    fn names_are_unique() {
        let mut second = valid();
        second.name = "0".into();
        let error = parse_all(&[valid(), second], 128).unwrap_err();
        assert!(error.contains("taken"), "{error}");
    }
}
