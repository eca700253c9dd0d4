//! The TLS settings: a second listener (`tls_listen`) and the PEM files of its certificate and
//! key. Empty text means unset, so that every setting has a default the settings table can show
//! and a `RINGCAST_*` variable can override.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serializer};

use super::{ConfigError, ServerConfig, invalid};
use crate::transport::tls::certificates::CertificatePaths;

/// Serializes an optional address as its text, or `""` for none.
pub(super) fn serialize_address<S: Serializer>(
    address: &Option<SocketAddr>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match address {
        Some(address) => serializer.collect_str(address),
        None => serializer.serialize_str(""),
    }
}

/// Reads an optional address from its text; `""` is none.
pub(super) fn deserialize_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address and port such as 127.0.0.1:8443 or [::]:443 (\"\" turns \
             TLS off)"
        ))
    })
}

impl ServerConfig {
    /// Where the certificate and key are, when TLS is on.
    pub fn tls_paths(&self) -> Option<CertificatePaths> {
        self.tls_listen.map(|_| CertificatePaths {
            certificate: self.tls_certificate.clone(),
            private_key: self.tls_private_key.clone(),
        })
    }

    /// TLS needs both files; the files without the listener would be ignored, which is a
    /// mistake worth stopping for; the two listeners cannot share a port.
    pub(super) fn validate_tls(&self) -> Result<(), ConfigError> {
        let unset = |path: &PathBuf| path.as_os_str().is_empty();
        let Some(tls_listen) = self.tls_listen else {
            for (setting, path) in [
                ("tls_certificate", &self.tls_certificate),
                ("tls_private_key", &self.tls_private_key),
            ] {
                if !unset(path) {
                    return Err(invalid(
                        setting,
                        format!(
                            "{} is given but tls_listen is not: set tls_listen (--tls-listen) \
                             to serve TLS, or remove {setting}",
                            Path::new(path).display()
                        ),
                    ));
                }
            }
            return Ok(());
        };
        for (setting, path) in [
            ("tls_certificate", &self.tls_certificate),
            ("tls_private_key", &self.tls_private_key),
        ] {
            if unset(path) {
                return Err(invalid(
                    setting,
                    format!(
                        "tls_listen = {tls_listen} needs tls_certificate (a PEM chain) and \
                         tls_private_key (a PEM key); {setting} is not set"
                    ),
                ));
            }
        }
        if tls_listen == self.listen && tls_listen.port() != 0 {
            return Err(invalid(
                "tls_listen",
                format!("{tls_listen} is also `listen`: give TLS a port of its own"),
            ));
        }
        Ok(())
    }
}
