//! The `[auth]` settings: who may connect (JWT), from which pages (Origin), and how often and
//! how many times from one address.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whether connections must present a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may connect, subscribe and publish (the demo runs as it always did).
    #[default]
    None,
    /// Every endpoint but `/health` (and `/metrics`, which has its own `metrics_token`) needs a
    /// valid JWT; its `subscribe` and `publish` claims say which topics it grants.
    Jwt,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "jwt" => Ok(Self::Jwt),
            other => Err(format!("{other:?} is not one of none, jwt")),
        }
    }
}

/// The settings of `[auth]`. Text settings left empty are unset (TOML has no null).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (default) or `jwt`.
    pub auth_mode: AuthMode,
    /// The HS256 shared secret, as text. Default unset. Prefer `jwt_hs256_secret_file`: a value
    /// here or in `RINGCAST_JWT_HS256_SECRET` is visible to whoever reads the file or the
    /// process's environment.
    pub jwt_hs256_secret: String,
    /// A file whose content (one trailing newline removed) is the HS256 secret. Default unset.
    pub jwt_hs256_secret_file: String,
    /// A PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): RSA allows RS256 only,
    /// a P-256 key ES256 only, an Ed25519 key EdDSA only. Default unset. Exactly one of the
    /// secret and the public key must be set with `auth_mode = "jwt"`, so a token can never
    /// choose its own algorithm (`alg: none`, or HS256 signed with the public key).
    pub jwt_public_key_file: String,
    /// When set, a token's `aud` must contain it. Default unset.
    pub jwt_audience: String,
    /// When set, a token's `iss` must equal it. Default unset.
    pub jwt_issuer: String,
    /// Clock skew tolerated on `exp` and `nbf` at connection time. Default 5 s: issuers' and
    /// servers' clocks kept by NTP differ by far less, and a token is not stretched by much.
    pub jwt_leeway_ms: u64,
    /// How long a WebSocket outlives its token's `exp` to send `{"op":"refresh",…}` before it is
    /// closed with 4001. Default 25 s (Centrifugo's): a client refreshing on a timer set from
    /// `exp` has that long to reach its issuer and back. SSE and NDJSON streams end, and a held
    /// poll answers, at the same moment.
    pub expiry_grace_ms: u64,
    /// The cookie a token may come in, counted only when the request's `Origin` is one of
    /// `allowed_origins` (so a page of another site cannot ride a user's cookie). Default
    /// `ringcast_token`.
    pub token_cookie: String,
    /// Origins whose pages may open WebSockets and streams: exact (`https://app.example.com`)
    /// or a subdomain wildcard (`https://*.example.com`). Default none: the `Origin` header is
    /// not checked, and cookies never carry a token. When set, a request whose `Origin` is not
    /// listed is refused with 403; requests without `Origin` (servers, scripts) pass.
    pub allowed_origins: Vec<String>,
    /// A bearer token `GET /metrics` requires when set. Default unset: metrics are open, like
    /// `/health` (both are for the operator's network).
    pub metrics_token: String,
    /// Connections one source address may hold at once across the process; 0 means no limit.
    /// Default 65,536: generous enough for the load generator's 2,000 connections per
    /// 127.x source address and for large NATs, while one host cannot take every slot.
    pub connections_per_ip_max: u32,
    /// New connections one source address may open per second (a token bucket holding one
    /// second's worth, refilled continuously); 0 means no limit. Default 10,000: above what the
    /// load generator's ramps ask of any one address, while a single host flooding the accept
    /// path is held to it. Beyond either limit a connection is answered 429 and closed.
    pub handshakes_per_ip_per_second: u32,
    /// Source addresses tracked at once for the two limits above (across the process). Default
    /// 262,144, about 16 MiB at most. Past it, new addresses are let through untracked and
    /// counted (`address_table_full`): refusing them would let one holder of many addresses
    /// lock everyone else out.
    pub addresses_tracked_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            auth_mode: AuthMode::None,
            jwt_hs256_secret: String::new(),
            jwt_hs256_secret_file: String::new(),
            jwt_public_key_file: String::new(),
            jwt_audience: String::new(),
            jwt_issuer: String::new(),
            jwt_leeway_ms: 5_000,
            expiry_grace_ms: 25_000,
            token_cookie: "ringcast_token".to_owned(),
            allowed_origins: Vec::new(),
            metrics_token: String::new(),
            connections_per_ip_max: 65_536,
            handshakes_per_ip_per_second: 10_000,
            addresses_tracked_max: 256 * 1024,
        }
    }
}

impl AuthConfig {
    /// Checks the settings that need no file: the key choice is checked by building the
    /// verifier ([`super::Authenticator::from_config`]), which reads the files.
    pub fn validate(&self) -> Result<(), String> {
        let secrets = [
            !self.jwt_hs256_secret.is_empty(),
            !self.jwt_hs256_secret_file.is_empty(),
            !self.jwt_public_key_file.is_empty(),
        ];
        let keys = secrets.iter().filter(|set| **set).count();
        if self.auth_mode == AuthMode::Jwt && keys != 1 {
            return Err(format!(
                "auth_mode = \"jwt\" needs exactly one of jwt_hs256_secret, \
                 jwt_hs256_secret_file and jwt_public_key_file ({keys} set)"
            ));
        }
        if self.token_cookie.is_empty() || !self.token_cookie.bytes().all(is_cookie_name_byte) {
            return Err(format!(
                "token_cookie {:?} is not a cookie name (RFC 6265 token characters)",
                self.token_cookie
            ));
        }
        for origin in &self.allowed_origins {
            super::origin::OriginPattern::parse(origin)?;
        }
        if self.addresses_tracked_max == 0 {
            return Err("addresses_tracked_max = 0 would track no address; use 1 or more".into());
        }
        Ok(())
    }
}

/// RFC 6265's cookie-name: an RFC 2616 token.
fn is_cookie_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
