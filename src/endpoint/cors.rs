//! Cross-origin long polling (`socketio_cors_origins`): what an Engine.IO polling response
//! tells a browser whose page comes from another origin, as the reference server does with its
//! `cors` option. A browser polls with XHR or fetch, and reads an answer only when it names the
//! page's origin (or `*`); before a request it may not send plainly (a POST with a
//! `Content-Type` other than a form's, or headers of its own) it asks with `OPTIONS` first.
//!
//! Nothing is sent unless origins are configured: the default keeps every answer as it was,
//! and a browser of another origin is refused by its own rules. An origin not listed gets no
//! CORS headers either (the browser then refuses to read the answer); the server still
//! answers, because CORS protects the browser's user, not the server: `origins_allowed`
//! refuses foreign origins outright.

use crate::protocol::http1::request::RequestHead;

/// Origins `socketio_cors_origins` may list: a browser's page has one origin, so a handful
/// covers every deployment, and each request's `Origin` is compared with every one.
pub const CORS_ORIGINS_MAX: usize = 64;

/// Bytes of `Access-Control-Request-Headers` a preflight's answer echoes: browsers list the
/// headers a page sets (socket.io-client sets `Content-Type` and maybe a few of the app's
/// `extraHeaders`); a longer list is not echoed, and the browser then refuses the request.
pub const REQUEST_HEADERS_BYTES_MAX: usize = 256;

/// What a response tells the browser, decided from the request's `Origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers: none configured, or no `Origin` on the request.
    #[default]
    Off,
    /// Origins are configured and this one is not among them: only `Vary: Origin` (the
    /// answer depends on it, so caches must not mix them up).
    Refused,
    /// `*` configured: `Access-Control-Allow-Origin: *`, without credentials (browsers refuse
    /// `*` with credentials).
    Any,
    /// The request's origin, the `index`th configured, echoed with credentials allowed
    /// (cookies, as socket.io-client's `withCredentials` sends them).
    Listed(u16),
}

impl Cors {
    /// The answer for a request with `head` when `origins` are configured.
    pub fn for_request(origins: &[String], head: &RequestHead<'_>) -> Cors {
        if origins.is_empty() {
            return Cors::Off;
        }
        let Some(origin) = head.header("origin") else {
            return Cors::Off;
        };
        Cors::for_origin(origins, origin)
    }

    /// The answer for `origin` among `origins` (an exact match, or `*`).
    pub fn for_origin(origins: &[String], origin: &[u8]) -> Cors {
        if let Some(index) = origins
            .iter()
            .position(|listed| listed.as_bytes() == origin)
        {
            return Cors::Listed(index as u16);
        }
        match origins.iter().any(|listed| listed == "*") {
            true => Cors::Any,
            false => Cors::Refused,
        }
    }

    /// Appends the header lines (each ending in CRLF) for this answer to `out`.
    pub fn write_headers(self, origins: &[String], out: &mut Vec<u8>) {
        match self {
            Cors::Off => return,
            Cors::Refused => {}
            Cors::Any => out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n"),
            Cors::Listed(index) => {
                out.extend_from_slice(b"Access-Control-Allow-Origin: ");
                out.extend_from_slice(origins[usize::from(index)].as_bytes());
                out.extend_from_slice(b"\r\nAccess-Control-Allow-Credentials: true\r\n");
            }
        }
        out.extend_from_slice(b"Vary: Origin\r\n");
    }

    /// Whether the browser is told anything it may act on (a preflight's methods and headers
    /// are only told to an allowed origin).
    pub fn allows(self) -> bool {
        matches!(self, Cors::Any | Cors::Listed(_))
    }
}

/// Checks `socketio_cors_origins` at start-up: `*`, or origins as browsers send them
/// (`scheme://host[:port]`, no path), at most [`CORS_ORIGINS_MAX`].
pub fn validate_origins(origins: &[String]) -> Result<(), String> {
    if origins.len() > CORS_ORIGINS_MAX {
        return Err(format!("at most {CORS_ORIGINS_MAX} origins"));
    }
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let valid = rest.is_some_and(|host| {
            !host.is_empty()
                && host.bytes().all(|byte| {
                    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':' | b'[' | b']')
                })
        });
        if !valid {
            return Err(format!(
                "{origin:?} is not `*` or an origin as browsers send it (scheme://host[:port])"
            ));
        }
    }
    Ok(())
}

/// The answer to a preflight (`OPTIONS`) at the Engine.IO path: 204, and for an allowed
/// origin the methods polling uses and the headers the browser asked for (within
/// [`REQUEST_HEADERS_BYTES_MAX`], of header-name characters only). Appends header lines.
pub fn write_preflight_headers(
    cors: Cors,
    origins: &[String],
    head: &RequestHead<'_>,
    out: &mut Vec<u8>,
) {
    cors.write_headers(origins, out);
    if !cors.allows() {
        return;
    }
    out.extend_from_slice(b"Access-Control-Allow-Methods: GET, POST\r\n");
    let requested = head.header("access-control-request-headers");
    let echoable = requested.filter(|names| {
        names.len() <= REQUEST_HEADERS_BYTES_MAX
            && names.iter().all(|&byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b',' | b' ')
            })
    });
    if let Some(names) = echoable.filter(|names| !names.is_empty()) {
        out.extend_from_slice(b"Access-Control-Allow-Headers: ");
        out.extend_from_slice(names);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Vec<String> {
        vec!["https://app.example".into(), "http://localhost:5173".into()]
    }

    fn written(cors: Cors, origins: &[String]) -> String {
        let mut out = Vec::new();
        cors.write_headers(origins, &mut out);
        String::from_utf8(out).expect("ASCII")
    }

    /// Proves a listed origin is echoed with credentials, `*` answers any other origin without
    /// them, and an origin not listed is told only that the answer varies with it.
    #[test]
    fn origins_are_answered_as_configured() {
        let origins = origins();
        let listed = Cors::for_origin(&origins, b"http://localhost:5173");
        assert_eq!(listed, Cors::Listed(1));
        assert_eq!(
            written(listed, &origins),
            "Access-Control-Allow-Origin: http://localhost:5173\r\n\
             Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        );
        let refused = Cors::for_origin(&origins, b"https://evil.example");
        assert_eq!(refused, Cors::Refused);
        assert_eq!(written(refused, &origins), "Vary: Origin\r\n");
        assert!(!refused.allows());
        let any = vec!["*".to_owned()];
        let answer = Cors::for_origin(&any, b"https://anyone.example");
        assert_eq!(answer, Cors::Any);
        assert_eq!(
            written(answer, &any),
            "Access-Control-Allow-Origin: *\r\nVary: Origin\r\n"
        );
        assert_eq!(written(Cors::Off, &origins), "");
    }

    /// Proves the settings are held to origins as browsers send them, and to their count.
    #[test]
    fn configured_origins_are_checked() {
        assert!(validate_origins(&origins()).is_ok());
        assert!(validate_origins(&["*".into(), "https://[::1]:8080".into()]).is_ok());
        for bad in [
            "app.example",
            "https://app.example/",
            "https://",
            "ftp://x",
            "https://a\r\n",
        ] {
            assert!(validate_origins(&[bad.into()]).is_err(), "{bad:?}");
        }
        let many = vec!["https://a.example".to_owned(); CORS_ORIGINS_MAX + 1];
        assert!(validate_origins(&many).is_err());
    }
}
