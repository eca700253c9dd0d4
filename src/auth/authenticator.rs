//! The one check every endpoint runs on a request head: is its `Origin` allowed, and which
//! identity (if any) does its token prove. WebSocket upgrades, HTTP publishes, and the SSE,
//! stream and poll requests all call [`Authenticator::check_request`], so the rules cannot
//! drift apart between transports.
//!
//! Where the token is read, first found wins:
//! 1. `Authorization: Bearer <token>`;
//! 2. the cookie `token_cookie`, only when the request's `Origin` is one of `allowed_origins`
//!    (a cross-site page cannot ride a user's cookie; a request without `Origin` cannot either);
//! 3. `?token=<token>` in the URL, for `EventSource`, which cannot set headers. URLs end up in
//!    access logs and browser history, so give such tokens short lives.

use bytes::BytesMut;

use super::config::{AuthConfig, AuthMode};
use super::origin::AllowedOrigins;
use super::token::{AuthFailure, Identity, Verifier};
use crate::protocol::http1::RequestHead;
use crate::protocol::http1::response::write_response;

/// Why a request was refused before it reached its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    /// 401: no token, or one that does not verify.
    Unauthorized(AuthFailure),
    /// 403: an `Origin` not in `allowed_origins`.
    ForeignOrigin,
}

impl AuthRefusal {
    pub fn status(self) -> u16 {
        match self {
            AuthRefusal::Unauthorized(_) => 401,
            AuthRefusal::ForeignOrigin => 403,
        }
    }

    /// Writes the refusal: a 401 carries `WWW-Authenticate: Bearer error="invalid_token"`
    /// (RFC 6750 §3) and `{"error":"invalid_token","reason":…}`; a 403 `{"error":"forbidden",
    /// "reason":"origin not allowed"}`. The connection closes after either: it proved nothing,
    /// and a client retrying should connect again with what it was missing.
    pub fn write_response(self, out: &mut BytesMut) {
        const JSON: (&str, &str) = ("Content-Type", "application/json");
        match self {
            AuthRefusal::Unauthorized(failure) => {
                let body = format!(
                    "{{\"error\":\"invalid_token\",\"reason\":\"{}\"}}",
                    failure.label()
                );
                let challenge = ("WWW-Authenticate", "Bearer error=\"invalid_token\"");
                write_response(401, &[challenge, JSON], body.as_bytes(), false, out);
            }
            AuthRefusal::ForeignOrigin => {
                let body = b"{\"error\":\"forbidden\",\"reason\":\"origin not allowed\"}";
                write_response(403, &[JSON], body, false, out);
            }
        }
    }
}

/// Everything the connection-time checks need, built once at start-up and shared by the
/// shards.
#[derive(Debug)]
pub struct Authenticator {
    verifier: Option<Verifier>,
    origins: AllowedOrigins,
    token_cookie: Box<str>,
    metrics_token: Option<Box<str>>,
    /// How long a WebSocket outlives its token's `exp` (for a refresh) before it is closed.
    pub expiry_grace_ms: u64,
}

impl Authenticator {
    /// Reads the key files and parses the origins; an error is a start-up configuration error.
    pub fn from_config(
        config: &AuthConfig,
        topic_bytes_max: usize,
    ) -> Result<Authenticator, String> {
        config.validate()?;
        Ok(Authenticator {
            verifier: Verifier::from_config(config, topic_bytes_max)?,
            origins: AllowedOrigins::parse(&config.allowed_origins)?,
            token_cookie: config.token_cookie.clone().into_boxed_str(),
            metrics_token: (!config.metrics_token.is_empty())
                .then(|| config.metrics_token.clone().into_boxed_str()),
            expiry_grace_ms: config.expiry_grace_ms,
        })
    }

    /// No token asked for and no origin checked: what a server without `[auth]` does.
    pub fn open() -> Authenticator {
        Authenticator::from_config(&AuthConfig::default(), 0).expect("the defaults are valid")
    }

    /// Whether connections must present a token (`auth_mode = "jwt"`).
    pub fn requires_token(&self) -> bool {
        self.verifier.is_some()
    }

    pub fn mode(&self) -> AuthMode {
        match self.verifier {
            Some(_) => AuthMode::Jwt,
            None => AuthMode::None,
        }
    }

    /// Checks a request head at `unix_ms`: its `Origin`, then (with `auth_mode = "jwt"`) its
    /// token. `Ok(None)`: allowed, and no token is required.
    pub fn check_request(
        &self,
        head: &RequestHead<'_>,
        unix_ms: u64,
    ) -> Result<Option<Identity>, AuthRefusal> {
        let origin = head.header("origin");
        let origin_allowed = match origin {
            Some(origin) => self.origins.allows(origin),
            None => false,
        };
        if origin.is_some() && self.origins.is_set() && !origin_allowed {
            return Err(AuthRefusal::ForeignOrigin);
        }
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let token = self.find_token(head, origin_allowed);
        let token = token.ok_or(AuthRefusal::Unauthorized(AuthFailure::Missing))?;
        verifier
            .verify(token, unix_ms)
            .map(Some)
            .map_err(AuthRefusal::Unauthorized)
    }

    /// Verifies a token sent over an open connection (`{"op":"refresh"}`).
    pub fn verify(&self, token: &[u8], unix_ms: u64) -> Result<Identity, AuthFailure> {
        match &self.verifier {
            Some(verifier) => verifier.verify(token, unix_ms),
            None => Err(AuthFailure::Missing),
        }
    }

    /// Whether `GET /metrics` may be answered: no `metrics_token`, or the request's bearer
    /// token equals it (compared in constant time).
    pub fn allows_metrics(&self, head: &RequestHead<'_>) -> bool {
        let Some(expected) = &self.metrics_token else {
            return true;
        };
        let given = head.header("authorization").and_then(bearer_token);
        given.is_some_and(|given| constant_time_equal(given, expected.as_bytes()))
    }

    /// The token of the first source that has one (see the module's doc).
    fn find_token<'a>(&self, head: &RequestHead<'a>, origin_allowed: bool) -> Option<&'a [u8]> {
        if let Some(token) = head.header("authorization").and_then(bearer_token) {
            return Some(token);
        }
        if origin_allowed {
            let cookie = head
                .header_values("cookie")
                .flat_map(|value| value.split(|&byte| byte == b';'))
                .find_map(|pair| cookie_value(pair, self.token_cookie.as_bytes()));
            if let Some(token) = cookie {
                return Some(token);
            }
        }
        head.query().and_then(query_token)
    }
}

/// The token of an `Authorization` value `Bearer <token>` (the scheme ignoring case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    let token = value[7..].trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// The value of one `name=value` pair of a `Cookie` header, if it is `name`'s (quotes, which
/// RFC 6265 allows around a value, removed).
fn cookie_value<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let pair = pair.trim_ascii();
    let equals = pair.iter().position(|&byte| byte == b'=')?;
    if &pair[..equals] != name {
        return None;
    }
    let value = &pair[equals + 1..];
    let value = value
        .strip_prefix(b"\"")
        .and_then(|inner| inner.strip_suffix(b"\""))
        .unwrap_or(value);
    (!value.is_empty()).then_some(value)
}

/// The value of `token=` in a query string. A JWT is base64url and dots, which need no
/// percent-encoding, so the value is taken as it is.
fn query_token(query: &str) -> Option<&[u8]> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
        .map(str::as_bytes)
}

/// Compares without returning early, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the bearer scheme is read ignoring case and nothing else passes for it.
    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b""), None);
    }

    /// Proves cookie pairs and query strings yield the token only under their exact name.
    #[test]
    fn cookie_and_query_values() {
        assert_eq!(cookie_value(b" t=abc", b"t"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(b"t=\"abc\"", b"t"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(b"xt=abc", b"t"), None);
        assert_eq!(cookie_value(b"t=", b"t"), None);
        assert_eq!(query_token("a=1&token=abc&b=2"), Some(&b"abc"[..]));
        assert_eq!(query_token("xtoken=abc"), None);
        assert_eq!(query_token("token="), None);
    }

    /// Proves the metrics token comparison is exact.
    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_equal(b"secret", b"secret"));
        assert!(!constant_time_equal(b"secret", b"secreT"));
        assert!(!constant_time_equal(b"secret", b"secret!"));
    }
}
