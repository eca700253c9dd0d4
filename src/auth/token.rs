//! Verifying a JWT (RFC 7519) with `jsonwebtoken`: the signature under the one algorithm the
//! configured key allows, then `exp`, `nbf`, `aud`, `iss`, `sub`, and the grant claims.
//!
//! The algorithm is never the token's choice. An HS256 secret allows HS256 alone; a PEM public
//! key allows the one algorithm of its type (RSA: RS256, P-256: ES256, Ed25519: EdDSA). So
//! `alg: none` is refused (no key allows it), and so is an HS256 token signed with the public
//! key's bytes ("algorithm confusion"): a public key never verifies HMAC.
//!
//! Times are read from the clock the caller passes (Unix milliseconds), so tests choose it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;

use super::config::AuthConfig;
use crate::broker::grants::{Grants, TopicPatterns};

/// Longest `sub` kept: it is compared on refresh and written to logs, and longer is no
/// identifier anyone issues.
pub const SUBJECT_BYTES_MAX: usize = 256;

/// An uncompressed P-256 point (`04 || x || y`): the only curve ES256 uses.
const P256_POINT_BYTES: usize = 65;

/// Why a token was refused. Each is a reason sent back (JSON) and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token in any of the places one is looked for.
    Missing,
    /// Not three base64url parts of JSON, or claims of the wrong type.
    Malformed,
    /// The signature does not verify under the configured key.
    Signature,
    /// The header names an algorithm the key does not allow (`none`, or HS256 against a
    /// public key).
    Algorithm,
    Expired,
    NotYetValid,
    Audience,
    Issuer,
    /// `sub` missing or too long, or a grant claim that does not compile.
    Claims,
}

impl AuthFailure {
    /// Every failure, for metrics families that list each label.
    pub const ALL: [AuthFailure; 9] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Signature,
        AuthFailure::Algorithm,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::Audience,
        AuthFailure::Issuer,
        AuthFailure::Claims,
    ];

    /// The metric label and the `reason` field of a 401's body.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Signature => "signature",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::Audience => "audience",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Claims => "claims",
        }
    }

    /// Its index in [`AuthFailure::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who a verified token names and what it grants: kept per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: Box<str>,
    /// `exp`, in Unix milliseconds.
    pub expires_unix_ms: u64,
    pub grants: Arc<Grants>,
}

/// The claims read from a token whose signature verified.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// NumericDate: seconds, possibly with a fraction (RFC 7519 §2).
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Checks tokens against the configured key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// `validation` with `aud` the one required claim besides `exp`, when both `aud` and `iss`
    /// are required: see [`Verifier::missing_claim`].
    audience_only: Option<Validation>,
    leeway_ms: u64,
    topic_bytes_max: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs and panics.
        formatter
            .debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of `config`'s key (its files read now); `Ok(None)` without `auth_mode =
    /// "jwt"`. An error names the setting and what is wrong.
    pub fn from_config(
        config: &AuthConfig,
        topic_bytes_max: usize,
    ) -> Result<Option<Verifier>, String> {
        if config.auth_mode != super::AuthMode::Jwt {
            return Ok(None);
        }
        config.validate()?;
        let (key, algorithm) = load_key(config)?;
        let mut validation = Validation::new(algorithm);
        // `exp` and `nbf` are checked here against the caller's clock in milliseconds.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["exp"];
        validation.validate_aud = !config.jwt_audience.is_empty();
        if validation.validate_aud {
            validation.set_audience(&[&config.jwt_audience]);
            required.push("aud");
        }
        if !config.jwt_issuer.is_empty() {
            validation.set_issuer(&[&config.jwt_issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let audience_only = (required.len() == 3).then(|| {
            let mut audience_only = validation.clone();
            audience_only.set_required_spec_claims(&["exp", "aud"]);
            audience_only
        });
        Ok(Some(Verifier {
            key,
            validation,
            audience_only,
            leeway_ms: config.jwt_leeway_ms,
            topic_bytes_max,
        }))
    }

    /// The one algorithm tokens may use.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token` at `unix_ms`.
    pub fn verify(&self, token: &[u8], unix_ms: u64) -> Result<Identity, AuthFailure> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| match (error.kind(), failure_of(error.kind())) {
                // An `alg` the library has no name for (`none`) fails as a malformed header;
                // it is the algorithm that is wrong.
                (_, AuthFailure::Malformed) if names_another_algorithm(token, self.algorithm()) => {
                    AuthFailure::Algorithm
                }
                (ErrorKind::MissingRequiredClaim(_), failure) => self.missing_claim(token, failure),
                (_, failure) => failure,
            })?
            .claims;
        let expires_unix_ms = numeric_date_ms(claims.exp)?;
        if unix_ms >= expires_unix_ms.saturating_add(self.leeway_ms) {
            return Err(AuthFailure::Expired);
        }
        if let Some(not_before) = claims.nbf
            && unix_ms.saturating_add(self.leeway_ms) < numeric_date_ms(not_before)?
        {
            return Err(AuthFailure::NotYetValid);
        }
        let subject = claims.sub.ok_or(AuthFailure::Claims)?;
        if subject.len() > SUBJECT_BYTES_MAX {
            return Err(AuthFailure::Claims);
        }
        let compile = |patterns: &[String]| {
            TopicPatterns::compile(patterns, self.topic_bytes_max).map_err(|_| AuthFailure::Claims)
        };
        let grants = Grants {
            subscribe: compile(&claims.subscribe)?,
            publish: compile(&claims.publish)?,
        };
        Ok(Identity {
            subject: subject.into_boxed_str(),
            expires_unix_ms,
            grants: Arc::new(grants),
        })
    }
}

impl Verifier {
    /// The failure of a token that lacks a required claim, `aud` named before `iss`.
    /// jsonwebtoken keeps the required claims in a `HashSet` and names the first missing one
    /// it meets, in the order of the set's random hash keys: without this, a token lacking
    /// both was refused as `audience` by one process and as `issuer` by the next. Only a token
    /// whose signature verified gets here, and its check runs once more with `aud` alone
    /// required.
    fn missing_claim(&self, token: &[u8], failure: AuthFailure) -> AuthFailure {
        let Some(audience_only) = &self.audience_only else {
            return failure;
        };
        let again = jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &self.key, audience_only);
        match again.map_err(|error| error.into_kind()) {
            Err(ErrorKind::MissingRequiredClaim(claim)) if claim == "aud" => AuthFailure::Audience,
            _ => failure,
        }
    }
}

/// Whether the token's header is JSON naming an `alg` other than `algorithm`.
fn names_another_algorithm(token: &[u8], algorithm: Algorithm) -> bool {
    #[derive(Deserialize)]
    struct HeaderAlgorithm {
        alg: String,
    }
    let Some(encoded) = token.split(|&byte| byte == b'.').next() else {
        return false;
    };
    let Ok(json) = URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    let expected = format!("{algorithm:?}");
    serde_json::from_slice::<HeaderAlgorithm>(&json).is_ok_and(|header| header.alg != expected)
}

/// A NumericDate (seconds since the epoch, maybe fractional) in milliseconds.
fn numeric_date_ms(seconds: f64) -> Result<u64, AuthFailure> {
    // Beyond ~292 million years the milliseconds no longer fit; no issuer means that.
    if !seconds.is_finite() || !(0.0..=1.8e16).contains(&seconds) {
        return Err(AuthFailure::Malformed);
    }
    Ok((seconds * 1000.0) as u64)
}

/// What a `jsonwebtoken` error means for the client.
fn failure_of(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthFailure::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthFailure::Algorithm,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidAudience => AuthFailure::Audience,
        ErrorKind::InvalidIssuer => AuthFailure::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthFailure::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthFailure::Issuer,
        _ => AuthFailure::Malformed,
    }
}

/// The configured key and the one algorithm it allows.
fn load_key(config: &AuthConfig) -> Result<(DecodingKey, Algorithm), String> {
    let secret = match (&*config.jwt_hs256_secret, &*config.jwt_hs256_secret_file) {
        ("", "") => None,
        (secret, "") => Some(secret.as_bytes().to_vec()),
        (_, path) => {
            let mut bytes = std::fs::read(path)
                .map_err(|error| format!("jwt_hs256_secret_file {path:?}: {error}"))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
            }
            Some(bytes)
        }
    };
    if let Some(secret) = secret {
        // RFC 7518 §3.2: an HS256 key is at least as long as the hash, 32 bytes.
        if secret.len() < 32 {
            return Err(format!(
                "the HS256 secret is {} bytes; RFC 7518 asks for at least 32",
                secret.len()
            ));
        }
        return Ok((DecodingKey::from_secret(&secret), Algorithm::HS256));
    }
    let path = &config.jwt_public_key_file;
    let pem =
        std::fs::read(path).map_err(|error| format!("jwt_public_key_file {path:?}: {error}"))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        let point_bytes = match key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => bytes.len(),
            DecodingKeyKind::RsaModulusExponent { .. } => 0,
        };
        if point_bytes != P256_POINT_BYTES {
            return Err(format!(
                "jwt_public_key_file {path:?} is an EC key of another curve than P-256 \
                 (ES256 is the EC algorithm allowed)"
            ));
        }
        return Ok((key, Algorithm::ES256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    Err(format!(
        "jwt_public_key_file {path:?} is not a PEM public key of RSA, P-256 or Ed25519"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMode;

    const SECRET: &str = "a test secret of at least thirty-two bytes";
    const NOW_UNIX_MS: u64 = 1_800_000_000_000;

    fn verifier(audience: &str, issuer: &str) -> Verifier {
        let config = AuthConfig {
            auth_mode: AuthMode::Jwt,
            jwt_hs256_secret: SECRET.to_owned(),
            jwt_audience: audience.to_owned(),
            jwt_issuer: issuer.to_owned(),
            ..AuthConfig::default()
        };
        Verifier::from_config(&config, 128).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    /// Proves a token lacking both `aud` and `iss` is refused for its audience by every
    /// verifier, whatever order jsonwebtoken's set of required claims has (fuzz finding:
    /// `fuzz/seeds/auth_token/finding-missing-audience-and-issuer`).
    #[test]
    fn missing_audience_and_issuer_is_an_audience_failure() {
        let exp = NOW_UNIX_MS / 1000 + 600;
        let neither = token(serde_json::json!({"sub": "a", "exp": exp}));
        let no_issuer = token(serde_json::json!({"sub": "a", "exp": exp, "aud": "ringcast"}));
        let no_audience = token(serde_json::json!({"sub": "a", "exp": exp, "iss": "me"}));
        // Each verifier's set has its own hash keys: many of them meet both orders.
        for _ in 0..32 {
            let verifier = verifier("ringcast", "me");
            let verify = |token: &str| verifier.verify(token.as_bytes(), NOW_UNIX_MS);
            assert_eq!(verify(&neither), Err(AuthFailure::Audience));
            assert_eq!(verify(&no_issuer), Err(AuthFailure::Issuer));
            assert_eq!(verify(&no_audience), Err(AuthFailure::Audience));
        }
        let issuer_only = verifier("", "me");
        assert_eq!(
            issuer_only.verify(neither.as_bytes(), NOW_UNIX_MS),
            Err(AuthFailure::Issuer)
        );
    }
}
