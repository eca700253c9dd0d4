//! Standard Webhooks signatures (standard-webhooks/spec: "Signature scheme"): the request's
//! `webhook-signature` is `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`,
//! keyed with the bytes the `whsec_` secret encodes. The timestamp is the attempt's (receivers
//! refuse timestamps more than five minutes off), so every attempt is signed anew; the id and
//! the body stay the same across attempts.

use aws_lc_rs::hmac;
use base64::Engine;

/// The header names of the scheme.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A webhook's signing key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with the key bytes of a `whsec_` secret.
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The `webhook-signature` value for a request: `v1,<base64 signature>`.
    pub fn sign(&self, id: &str, timestamp_seconds: u64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp_seconds.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        let mut signature = String::from("v1,");
        base64::engine::general_purpose::STANDARD.encode_string(tag.as_ref(), &mut signature);
        signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the signature matches the Standard Webhooks reference: the example of the
    /// specification's reference libraries (their shared test vector).
    #[test]
    fn matches_the_reference_vector() {
        // From standard-webhooks' libraries' tests: secret, id, timestamp, payload, signature.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let signer = Signer::new(&key);
        let signature = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
