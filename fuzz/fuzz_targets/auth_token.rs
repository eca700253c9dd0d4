//! JWT extraction and verification: `Authenticator::check_request` on request heads (the token
//! from `Authorization: Bearer`, the cookie or `?token=`), and `Authenticator::verify` (a
//! refresh), against three configurations: an HS256 secret, the same with `aud` and `iss`
//! required, and a P-256 public key (ES256).
//!
//! Three modes, chosen by the first byte:
//! - **head**: the rest is a request head, read by the request reader; every head it completes
//!   is checked, whatever token it carries (seeds hold real tokens signed with the test secret);
//! - **raw JSON**: the rest is a header's JSON and a claims' JSON, which the target encodes and
//!   signs (HS256 with the test secret, HS256 with the public key's PEM as the secret, ES256
//!   with the private key, or not at all), so that arbitrary claims get past the signature;
//! - **claims**: the rest chooses `exp`, `nbf`, `aud`, `iss`, `sub` and the grant patterns, which
//!   the target writes as JSON and signs: the exact outcome is known and must be the one given.
//!
//! Invariants, for every input:
//! - no panic, and memory within a fixed amount plus a multiple of the input;
//! - a token accepted is three base64url parts whose header names the configuration's one
//!   algorithm (never `none`, never HS256 against a public key) and whose signature verifies
//!   (HS256 checked with the `hmac` crate, not the crate's aws-lc-rs); its `exp` plus the leeway
//!   is after the clock, its `nbf` (if any) not after it; `aud` and `iss` are the configured
//!   ones when required; its `sub` is the identity's subject, at most 256 bytes; its `exp` in
//!   milliseconds is the identity's;
//! - every grant pattern of an accepted token is `*`, a topic name, or one followed by `*`, and
//!   a topic is granted exactly when a straightforward matcher here says one pattern matches;
//! - a refresh (`verify`) of a bearer token gives the answer the head gave;
//! - in the claims mode, the outcome (accepted with what, or the failure) is the expected one.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use libfuzzer_sys::fuzz_target;
use ringcast_fuzz::allocation::{self, AllocationBudget};
use serde_json::value::RawValue;
use serde_json::{Value, json};

// The crate's API, in one place: when modules move, only these lines change.
use ringcast::auth::token::SUBJECT_BYTES_MAX;
use ringcast::auth::{AuthConfig, AuthFailure, AuthMode, AuthRefusal, Authenticator, Identity};
use ringcast::broker::grants::{GRANT_PATTERNS_MAX, TopicPatterns};
use ringcast::protocol::http1::{HttpEvent, RequestHead, RequestLimits, RequestReader};
use ringcast::protocol::pool::{BufferClass, BufferPool, PoolLimits};

/// The HS256 test secret: a fixed string, so that seeds can carry tokens signed with it. It
/// guards nothing.
const SECRET: &[u8] = b"ringcast-fuzz-test-secret-not-a-credential";
const AUDIENCE: &str = "ringcast";
const ISSUER: &str = "https://issuer.example";
const ALLOWED_ORIGIN: &str = "https://app.example.com";
const COOKIE: &str = "ringcast_token";
/// The clock of every check: 2027-01-15, so that `exp` values around it are small numbers.
const NOW_SECONDS: u64 = 1_800_000_000;
const NOW_UNIX_MS: u64 = NOW_SECONDS * 1000;
/// `jwt_leeway_ms`'s default, which the configurations keep.
const LEEWAY_MS: u64 = 5_000;
const TOPIC_BYTES_MAX: usize = 128;
/// Fields of the raw JSON and claims modes are separated by this byte, which UTF-8 never has.
const SEPARATOR: u8 = 0xFF;

/// The request pool (about 160 KiB at most), a verification's decoded parts and claims, and
/// the oracle's copies of them: each a small multiple of the input.
const BUDGET: AllocationBudget = AllocationBudget {
    fixed_bytes: 1024 * 1024,
    bytes_per_input_byte: 64,
};

/// The key configurations a token is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Secret,
    /// The secret, with `jwt_audience` and `jwt_issuer` set.
    SecretAudienceIssuer,
    PublicKey,
}

/// How the target signs a token it builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signing {
    /// HS256 with the test secret: valid against the secret.
    Secret,
    /// HS256 keyed with the public key's PEM text: the algorithm confusion attack.
    PublicKeyAsSecret,
    /// ES256 with the private key: valid against the public key.
    PrivateKey,
    /// An empty signature (`alg: none` tokens end so).
    Empty,
    /// The test secret's signature with its first byte flipped.
    Corrupted,
}

/// Where a built token is put in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Bearer,
    /// The cookie, with the allowed `Origin`.
    Cookie,
    Query,
    /// The cookie without `Origin`: never read.
    CookieWithoutOrigin,
    /// The cookie, with a foreign `Origin`: refused with 403.
    CookieForeignOrigin,
}

struct Keys {
    secret: Authenticator,
    secret_audience_issuer: Authenticator,
    public_key: Authenticator,
    public_key_pem: String,
    /// PKCS#8 of the P-256 key, made for this process; never written anywhere.
    private_key: aws_lc_rs::signature::EcdsaKeyPair,
}

static KEYS: LazyLock<Keys> = LazyLock::new(keys);

fn keys() -> Keys {
    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key pair");
    let public_key_pem = key_pair.public_key_pem();
    let private_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key_pair.serialize_der(),
    )
    .expect("rcgen's PKCS#8");
    // The verifier reads the public key from a file; only the public key is written.
    let path = std::env::temp_dir().join(format!("ringcast-fuzz-jwt-{}.pem", std::process::id()));
    std::fs::write(&path, &public_key_pem).expect("a temporary file");
    let secret_config = AuthConfig {
        auth_mode: AuthMode::Jwt,
        jwt_hs256_secret: String::from_utf8(SECRET.to_vec()).expect("ASCII"),
        allowed_origins: vec![ALLOWED_ORIGIN.to_owned()],
        ..AuthConfig::default()
    };
    let build = |config: &AuthConfig| {
        Authenticator::from_config(config, TOPIC_BYTES_MAX).expect("a valid configuration")
    };
    let keys = Keys {
        secret: build(&secret_config),
        secret_audience_issuer: build(&AuthConfig {
            jwt_audience: AUDIENCE.to_owned(),
            jwt_issuer: ISSUER.to_owned(),
            ..secret_config.clone()
        }),
        public_key: build(&AuthConfig {
            jwt_hs256_secret: String::new(),
            jwt_public_key_file: path.display().to_string(),
            ..secret_config.clone()
        }),
        public_key_pem,
        private_key,
    };
    let _ = std::fs::remove_file(&path);
    keys
}

impl Keys {
    /// The P-256 public key as a point, for the oracle's ECDSA check.
    fn public_key_point(&self) -> &[u8] {
        use aws_lc_rs::signature::KeyPair as _;
        self.private_key.public_key().as_ref()
    }

    fn authenticator(&self, kind: KeyKind) -> &Authenticator {
        match kind {
            KeyKind::Secret => &self.secret,
            KeyKind::SecretAudienceIssuer => &self.secret_audience_issuer,
            KeyKind::PublicKey => &self.public_key,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = LazyLock::force(&KEYS);
    let [mode, rest @ ..] = data else {
        return;
    };
    let kind = match mode % 3 {
        0 => KeyKind::Secret,
        1 => KeyKind::SecretAudienceIssuer,
        _ => KeyKind::PublicKey,
    };
    allocation::measure(BUDGET, data.len(), || match (mode / 3) % 3 {
        0 => check_heads(keys, kind, rest),
        1 => check_raw_json(keys, kind, mode / 9, rest),
        _ => check_claims(keys, kind, mode / 9, rest),
    });
});

/// The head mode: every head the reader completes from `stream`, checked.
fn check_heads(keys: &Keys, kind: KeyKind, stream: &[u8]) {
    let authenticator = keys.authenticator(kind);
    for_each_head(stream, |head| {
        let result = authenticator.check_request(head, NOW_UNIX_MS);
        check_result(kind, head, &result);
    });
}

/// The raw JSON mode: `header json 0xFF claims json [0xFF ...]`, encoded, signed as `choice`
/// says, and placed as it says.
fn check_raw_json(keys: &Keys, kind: KeyKind, choice: u8, rest: &[u8]) {
    let mut fields = rest.split(|&byte| byte == SEPARATOR);
    let header = fields.next().unwrap_or_default();
    let claims = fields.next().unwrap_or_default();
    let token = build_token(keys, header, claims, signing(choice));
    let place = place(choice / 5);
    let head = request_head(&token, place);
    let authenticator = keys.authenticator(kind);
    let mut checked = false;
    for_each_head(&head, |head| {
        let result = authenticator.check_request(head, NOW_UNIX_MS);
        check_result(kind, head, &result);
        check_place(authenticator, &token, place, &result);
        checked = true;
    });
    assert!(checked, "the built head did not parse");
}

fn signing(choice: u8) -> Signing {
    match choice % 5 {
        0 => Signing::Secret,
        1 => Signing::PublicKeyAsSecret,
        2 => Signing::PrivateKey,
        3 => Signing::Empty,
        _ => Signing::Corrupted,
    }
}

fn place(choice: u8) -> Place {
    match choice % 5 {
        0 => Place::Bearer,
        1 => Place::Cookie,
        2 => Place::Query,
        3 => Place::CookieWithoutOrigin,
        _ => Place::CookieForeignOrigin,
    }
}

/// `base64url(header).base64url(claims).base64url(signature)`.
fn build_token(keys: &Keys, header: &[u8], claims: &[u8], signing: Signing) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let hs256 = |secret: &[u8]| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        aws_lc_rs::hmac::sign(&key, message.as_bytes())
            .as_ref()
            .to_vec()
    };
    let signature = match signing {
        Signing::Secret => hs256(SECRET),
        Signing::PublicKeyAsSecret => hs256(keys.public_key_pem.as_bytes()),
        Signing::PrivateKey => {
            let random = aws_lc_rs::rand::SystemRandom::new();
            let signature = keys.private_key.sign(&random, message.as_bytes());
            signature.expect("ECDSA signs").as_ref().to_vec()
        }
        Signing::Empty => Vec::new(),
        Signing::Corrupted => {
            let mut signature = hs256(SECRET);
            signature[0] ^= 1;
            signature
        }
    };
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A request head carrying `token` at `place`.
fn request_head(token: &str, place: Place) -> Vec<u8> {
    let (query, fields) = match place {
        Place::Bearer => (String::new(), format!("Authorization: Bearer {token}\r\n")),
        Place::Cookie => (
            String::new(),
            format!("Origin: {ALLOWED_ORIGIN}\r\nCookie: a=b; {COOKIE}={token}\r\n"),
        ),
        Place::Query => (format!("?a=b&token={token}"), String::new()),
        Place::CookieWithoutOrigin => (String::new(), format!("Cookie: {COOKIE}={token}\r\n")),
        Place::CookieForeignOrigin => (
            String::new(),
            format!("Origin: https://evil.example\r\nCookie: {COOKIE}={token}\r\n"),
        ),
    };
    format!("GET /ws{query} HTTP/1.1\r\nHost: broker.example\r\n{fields}\r\n").into_bytes()
}

/// What placing the token at `place` must give, whatever the token: the cookie without an
/// allowed `Origin` is never read, a foreign `Origin` is refused before any token is, and a
/// bearer token gives what a refresh with it gives.
fn check_place(
    authenticator: &Authenticator,
    token: &str,
    place: Place,
    result: &Result<Option<Identity>, AuthRefusal>,
) {
    match place {
        Place::CookieWithoutOrigin => assert_eq!(
            *result,
            Err(AuthRefusal::Unauthorized(AuthFailure::Missing))
        ),
        Place::CookieForeignOrigin => assert_eq!(*result, Err(AuthRefusal::ForeignOrigin)),
        Place::Bearer | Place::Cookie | Place::Query => {
            let refreshed = authenticator.verify(token.as_bytes(), NOW_UNIX_MS);
            let from_head = result
                .clone()
                .map(|identity| identity.expect("a token is required"));
            assert_eq!(refreshed.map_err(AuthRefusal::Unauthorized), from_head);
        }
    }
}

/// Runs `check` on every head the request reader completes from `stream`, read whole.
fn for_each_head(stream: &[u8], mut check: impl FnMut(&RequestHead<'_>)) {
    let mut pool = BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        classes: vec![
            BufferClass {
                buffer_bytes: 4 * 1024,
                buffers_max: 2,
            },
            BufferClass {
                buffer_bytes: 64 * 1024,
                buffers_max: 2,
            },
        ],
    });
    let limits = RequestLimits {
        header_bytes_max: 64 * 1024,
        body_bytes_max: 4 * 1024,
    };
    let mut reader = RequestReader::new();
    let mut events = reader.handle_read(stream, &mut pool, &limits);
    while let Some(Ok(event)) = events.next_event() {
        match event {
            HttpEvent::Request(request) => check(&request.head),
            HttpEvent::ContinueExpected(head) => check(&head),
            HttpEvent::Upgrade { head, .. } => {
                check(&head);
                break;
            }
        }
    }
    reader.release_buffers(&mut pool);
}

/// The checks that hold for any head: a refusal names a cause the head shows, and an identity
/// comes from a token this file's own reading of the head finds and verifies.
fn check_result(
    kind: KeyKind,
    head: &RequestHead<'_>,
    result: &Result<Option<Identity>, AuthRefusal>,
) {
    let origin = head.header("origin");
    let origin_allowed =
        origin.is_some_and(|origin| origin.eq_ignore_ascii_case(ALLOWED_ORIGIN.as_bytes()));
    match result {
        Ok(None) => panic!("every configuration here requires a token"),
        Err(AuthRefusal::ForeignOrigin) => assert!(origin.is_some() && !origin_allowed),
        Err(AuthRefusal::Unauthorized(AuthFailure::Missing)) => {
            assert_eq!(find_token(head, origin_allowed), None);
        }
        Err(AuthRefusal::Unauthorized(_)) => {
            assert!(find_token(head, origin_allowed).is_some());
        }
        Ok(Some(identity)) => {
            let token = find_token(head, origin_allowed).expect("accepted without a token");
            let expected = oracle_verify(kind, token).unwrap_or_else(|why| {
                panic!(
                    "accepted a token the oracle refuses ({why}): {}",
                    String::from_utf8_lossy(token)
                )
            });
            check_identity(identity, &expected);
        }
    }
}

/// The token a request carries, read here as the auth module's documentation describes:
/// `Authorization: Bearer` first, then the cookie (only with an allowed `Origin`), then the
/// `token` query parameter.
fn find_token<'a>(head: &RequestHead<'a>, origin_allowed: bool) -> Option<&'a [u8]> {
    let bearer = head.header("authorization").and_then(|value| {
        let (scheme, token) = value.split_at_checked(7)?;
        let token = token.trim_ascii();
        (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
    });
    let cookie = || {
        head.header_values("cookie")
            .flat_map(|value| value.split(|&byte| byte == b';'))
            .find_map(|pair| {
                let (name, value) = split_once(pair.trim_ascii(), b'=')?;
                let value = match value {
                    [b'"', inner @ .., b'"'] => inner,
                    _ => value,
                };
                (name == COOKIE.as_bytes() && !value.is_empty()).then_some(value)
            })
    };
    // The first `token` parameter is the one, as the first `topics` is for streams: an empty
    // one is no token, whatever follows.
    let query = || {
        let query = head.query()?.as_bytes();
        let value = query
            .split(|&byte| byte == b'&')
            .find_map(|pair| pair.strip_prefix(b"token="))?;
        (!value.is_empty()).then_some(value)
    };
    bearer
        .or_else(|| origin_allowed.then(cookie).flatten())
        .or_else(query)
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let index = bytes.iter().position(|&byte| byte == separator)?;
    Some((&bytes[..index], &bytes[index + 1..]))
}

/// What an accepted token must grant and name, as the oracle read it.
#[derive(Debug)]
struct ExpectedIdentity {
    subject: String,
    expires_unix_ms: u64,
    subscribe: Vec<String>,
    publish: Vec<String>,
}

/// An independent verification of `token` for the key `kind`, with `serde_json::Value` and the
/// `hmac` crate: what the identity must be, or why it cannot be accepted. Stricter readings
/// the crate may have (types of header fields it knows) only refuse more, so this is checked
/// in one direction: what the crate accepts must pass here.
fn oracle_verify(kind: KeyKind, token: &[u8]) -> Result<ExpectedIdentity, String> {
    let parts: Vec<&[u8]> = token.split(|&byte| byte == b'.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("{} parts", parts.len()));
    };
    let decode = |part: &[u8]| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|error| error.to_string())
    };
    let header: HeaderMembers = json_object(&decode(header)?)?;
    let claims: ClaimsMembers = json_object(&decode(claims)?)?;
    let signature = decode(signature)?;
    let message = &token[..token.len() - parts[2].len() - 1];
    let algorithm = member(&header.alg);
    let algorithm = algorithm.as_ref().and_then(Value::as_str);
    match kind {
        KeyKind::Secret | KeyKind::SecretAudienceIssuer => {
            if algorithm != Some("HS256") {
                return Err(format!("alg {algorithm:?} against an HS256 secret"));
            }
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any length");
            mac.update(message);
            mac.verify_slice(&signature)
                .map_err(|_| "HMAC does not verify")?;
        }
        KeyKind::PublicKey => {
            if algorithm != Some("ES256") {
                return Err(format!("alg {algorithm:?} against a P-256 public key"));
            }
            let public_key = KEYS.public_key_point();
            let verifier = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                public_key,
            );
            verifier
                .verify(message, &signature)
                .map_err(|_| "ECDSA does not verify")?;
        }
    }
    oracle_claims(kind, &claims)
}

/// The members of a JOSE header the oracle reads; serde skips the others as the crate's
/// readers do (unread, so however deep, and without checking their strings' UTF-8: a
/// difference from `Value` that `fuzz/README.md` notes).
#[derive(serde::Deserialize)]
struct HeaderMembers {
    alg: Option<Box<RawValue>>,
}

/// The members of a claims set the oracle reads (the ones some reader of the crate knows, so
/// that one given twice is refused by both).
#[derive(serde::Deserialize)]
struct ClaimsMembers {
    exp: Option<Box<RawValue>>,
    nbf: Option<Box<RawValue>>,
    sub: Option<Box<RawValue>>,
    aud: Option<Box<RawValue>>,
    iss: Option<Box<RawValue>>,
    subscribe: Option<Box<RawValue>>,
    publish: Option<Box<RawValue>>,
}

/// A member as a `Value`; one too deep for `Value` is one the crate's typed fields refuse too.
fn member(raw: &Option<Box<RawValue>>) -> Option<Value> {
    let raw = raw.as_ref()?;
    Some(serde_json::from_str(raw.get()).unwrap_or(Value::Null))
}

fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|error| format!("not a JSON object: {error}"))
}

/// The claims' part of [`oracle_verify`].
fn oracle_claims(kind: KeyKind, claims: &ClaimsMembers) -> Result<ExpectedIdentity, String> {
    let seconds = |name: &str, raw: &Option<Box<RawValue>>| -> Result<Option<f64>, String> {
        match member(raw) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or(format!("{name} not a number")),
        }
    };
    let exp = seconds("exp", &claims.exp)?.ok_or("no exp")?;
    if !(exp >= 0.0 && exp * 1000.0 + LEEWAY_MS as f64 > NOW_UNIX_MS as f64) {
        return Err(format!("exp {exp} is not after the clock"));
    }
    // The clock counts whole milliseconds: `nbf` is compared in them.
    if let Some(nbf) = seconds("nbf", &claims.nbf)?
        && (nbf * 1000.0).floor() > (NOW_UNIX_MS + LEEWAY_MS) as f64
    {
        return Err(format!("nbf {nbf} is after the clock"));
    }
    if kind == KeyKind::SecretAudienceIssuer {
        let audience_ok = match member(&claims.aud) {
            Some(Value::String(audience)) => audience == AUDIENCE,
            Some(Value::Array(audiences)) => audiences.iter().any(|a| a == AUDIENCE),
            _ => false,
        };
        if !audience_ok || member(&claims.iss).as_ref().and_then(Value::as_str) != Some(ISSUER) {
            return Err("aud or iss is not the configured one".into());
        }
    }
    let subject = member(&claims.sub);
    let subject = subject.as_ref().and_then(Value::as_str).ok_or("no sub")?;
    if subject.len() > SUBJECT_BYTES_MAX {
        return Err("sub too long".into());
    }
    Ok(ExpectedIdentity {
        subject: subject.to_owned(),
        expires_unix_ms: (exp * 1000.0) as u64,
        subscribe: oracle_patterns(member(&claims.subscribe).as_ref())?,
        publish: oracle_patterns(member(&claims.publish).as_ref())?,
    })
}

/// A grant claim's patterns: absent is none; otherwise a list of at most
/// [`GRANT_PATTERNS_MAX`] strings, each `*`, a topic name, or a topic name and `*`.
fn oracle_patterns(claim: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(claim) = claim else {
        return Ok(Vec::new());
    };
    let list = claim.as_array().ok_or("a grant claim not a list")?;
    if list.len() > GRANT_PATTERNS_MAX {
        return Err("too many patterns".into());
    }
    let mut patterns = Vec::with_capacity(list.len());
    for pattern in list {
        let pattern = pattern.as_str().ok_or("a pattern not a string")?;
        if !pattern_is_valid(pattern) {
            return Err(format!("invalid pattern {pattern:?}"));
        }
        patterns.push(pattern.to_owned());
    }
    Ok(patterns)
}

/// `*`, or 1 to [`TOPIC_BYTES_MAX`] bytes of printable ASCII other than `*`, maybe followed
/// by one `*`.
fn pattern_is_valid(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    pattern == "*"
        || (!name.is_empty()
            && name.len() <= TOPIC_BYTES_MAX
            && name
                .bytes()
                .all(|byte| (0x20..=0x7E).contains(&byte) && byte != b'*'))
}

/// Whether one of `patterns` grants `topic`, pattern by pattern.
fn oracle_grants(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|pattern| {
        pattern == "*"
            || pattern == topic
            || pattern
                .strip_suffix('*')
                .is_some_and(|prefix| topic.starts_with(prefix))
    })
}

fn check_identity(identity: &Identity, expected: &ExpectedIdentity) {
    assert_eq!(&*identity.subject, expected.subject);
    assert_eq!(identity.expires_unix_ms, expected.expires_unix_ms);
    assert!(identity.expires_unix_ms + LEEWAY_MS > NOW_UNIX_MS);
    check_grants(&identity.grants.subscribe, &expected.subscribe);
    check_grants(&identity.grants.publish, &expected.publish);
}

/// Probes `compiled` with the topics that sit at the edges of `patterns` (each pattern, its
/// prefix, one byte more or less) and a few fixed ones.
fn check_grants(compiled: &TopicPatterns, patterns: &[String]) {
    let mut probes: Vec<String> = ["AAPL", "FX.EURUSD", "FX.", "FX", "*", "", "a"]
        .map(String::from)
        .to_vec();
    for pattern in patterns.iter().take(64) {
        let name = pattern.strip_suffix('*').unwrap_or(pattern);
        probes.push(pattern.clone());
        probes.push(name.to_owned());
        probes.push(format!("{name}X"));
        probes.push(format!("{pattern}X"));
        let mut shorter = name.to_owned();
        shorter.pop();
        probes.push(shorter);
    }
    for probe in &probes {
        assert_eq!(
            compiled.allows(probe),
            oracle_grants(patterns, probe),
            "topic {probe:?} under {patterns:?}"
        );
    }
}

/// The claims mode: claims chosen by the input ([`ChosenClaims::parse`]), written as JSON,
/// signed with the test secret or the private key as `kind` needs (or wrongly, as `choice`
/// says), and sent as a bearer token; the outcome is known exactly.
fn check_claims(keys: &Keys, kind: KeyKind, choice: u8, rest: &[u8]) {
    let chosen = ChosenClaims::parse(rest);
    let claims = chosen.json();
    let right = match kind {
        KeyKind::PublicKey => Signing::PrivateKey,
        _ => Signing::Secret,
    };
    let signing = match choice % 8 {
        0 => Signing::PublicKeyAsSecret,
        1 => Signing::Corrupted,
        _ => right,
    };
    let algorithm = match signing {
        Signing::PrivateKey => "ES256",
        _ => "HS256",
    };
    let header = json!({"alg": algorithm, "typ": "JWT"}).to_string();
    let claims_text = claims.to_string();
    let token = build_token(keys, header.as_bytes(), claims_text.as_bytes(), signing);
    let expected = match signing == right {
        true => chosen.expected(kind),
        false => Err(match (kind, signing) {
            (KeyKind::PublicKey, Signing::PublicKeyAsSecret | Signing::Corrupted) => {
                AuthFailure::Algorithm
            }
            _ => AuthFailure::Signature,
        }),
    };
    let authenticator = keys.authenticator(kind);
    let mut checked = false;
    for_each_head(&request_head(&token, Place::Bearer), |head| {
        let result = authenticator.check_request(head, NOW_UNIX_MS);
        check_result(kind, head, &result);
        match (&result, expected) {
            (Ok(Some(identity)), Ok(())) => check_identity(identity, &chosen.identity()),
            (Err(AuthRefusal::Unauthorized(failure)), Err(expected)) => {
                assert_eq!(*failure, expected, "claims {claims_text}")
            }
            (result, expected) => {
                panic!("got {result:?}, expected {expected:?}: claims {claims_text}")
            }
        }
        checked = true;
    });
    assert!(checked, "the built head did not parse");
}

/// The claims the claims mode writes, as the input chose them.
struct ChosenClaims {
    exp_ms: u64,
    nbf_ms: Option<u64>,
    subject: Option<String>,
    subscribe: Vec<String>,
    publish: Vec<String>,
    /// 0: no `aud`; 1: the configured one; 2: another; 3: a list with the configured one.
    audience: u8,
    /// 0: no `iss`; 1: the configured one; 2: another.
    issuer: u8,
}

impl ChosenClaims {
    /// Reads `[exp delta: i16][quarters: u8][nbf delta: i16][flags: u8] sub 0xFF subscribe
    /// 0xFF publish`; flag bit 0: `nbf` is there, bit 1: `sub` is, bits 2-3: `aud`, bits 4-5:
    /// `iss` (see the fields).
    fn parse(rest: &[u8]) -> ChosenClaims {
        let (numbers, rest) = rest.split_at(rest.len().min(6));
        let mut number = [0u8; 6];
        number[..numbers.len()].copy_from_slice(numbers);
        let seconds = |low, high| NOW_SECONDS as i64 + i64::from(i16::from_le_bytes([low, high]));
        let flags = number[5];
        let mut fields = rest.split(|&byte| byte == SEPARATOR);
        let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
        let list = |list: String| -> Vec<String> {
            match list.is_empty() {
                true => Vec::new(),
                false => list.split(',').map(String::from).collect(),
            }
        };
        let subject = text();
        ChosenClaims {
            exp_ms: seconds(number[0], number[1]) as u64 * 1000 + u64::from(number[2] % 4) * 250,
            nbf_ms: (flags & 1 != 0).then(|| seconds(number[3], number[4]) as u64 * 1000),
            subject: (flags & 2 != 0).then_some(subject),
            subscribe: list(text()),
            publish: list(text()),
            audience: (flags >> 2) % 4,
            issuer: (flags >> 4) % 3,
        }
    }

    fn json(&self) -> Value {
        let mut claims = json!({
            "exp": self.exp_ms as f64 / 1000.0,
            "subscribe": self.subscribe,
            "publish": self.publish,
        });
        if let Some(nbf_ms) = self.nbf_ms {
            claims["nbf"] = json!(nbf_ms / 1000);
        }
        if let Some(subject) = &self.subject {
            claims["sub"] = json!(subject);
        }
        match self.audience {
            1 => claims["aud"] = json!(AUDIENCE),
            2 => claims["aud"] = json!("elsewhere"),
            3 => claims["aud"] = json!(["elsewhere", AUDIENCE]),
            _ => {}
        }
        match self.issuer {
            1 => claims["iss"] = json!(ISSUER),
            2 => claims["iss"] = json!("https://other.example"),
            _ => {}
        }
        claims
    }

    /// The outcome of these claims, correctly signed, against `kind`.
    fn expected(&self, kind: KeyKind) -> Result<(), AuthFailure> {
        if kind == KeyKind::SecretAudienceIssuer {
            // jsonwebtoken's order: required claims present (`aud` named first, see
            // `Verifier::missing_claim`), then `iss` compared, then `aud`.
            if self.audience == 0 {
                return Err(AuthFailure::Audience);
            }
            if self.issuer != 1 {
                return Err(AuthFailure::Issuer);
            }
            if self.audience == 2 {
                return Err(AuthFailure::Audience);
            }
        }
        if NOW_UNIX_MS >= self.exp_ms + LEEWAY_MS {
            return Err(AuthFailure::Expired);
        }
        if self
            .nbf_ms
            .is_some_and(|nbf_ms| NOW_UNIX_MS + LEEWAY_MS < nbf_ms)
        {
            return Err(AuthFailure::NotYetValid);
        }
        let patterns_valid = |patterns: &[String]| {
            patterns.len() <= GRANT_PATTERNS_MAX && patterns.iter().all(|p| pattern_is_valid(p))
        };
        let subject_valid = self
            .subject
            .as_ref()
            .is_some_and(|subject| subject.len() <= SUBJECT_BYTES_MAX);
        match subject_valid && patterns_valid(&self.subscribe) && patterns_valid(&self.publish) {
            true => Ok(()),
            false => Err(AuthFailure::Claims),
        }
    }

    fn identity(&self) -> ExpectedIdentity {
        ExpectedIdentity {
            subject: self.subject.clone().unwrap_or_default(),
            expires_unix_ms: self.exp_ms,
            subscribe: self.subscribe.clone(),
            publish: self.publish.clone(),
        }
    }
}
