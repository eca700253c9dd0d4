//! The live ticker board and the JavaScript client, embedded in the binary so that a newcomer
//! running `--demo` opens the server's address in a browser and sees prices move: no build step,
//! no CDN, nothing fetched from anywhere but this server.

use crate::broker::demo;

/// One file served at a fixed path.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file the board needs; `/` is the page.
const ASSETS: [Asset; 5] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../clients/board/index.html"),
    },
    Asset {
        path: "/board.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../clients/board/board.js"),
    },
    Asset {
        path: "/board-socketio.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../clients/board/socketio.js"),
    },
    Asset {
        path: "/ringcast.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../clients/js/ringcast.js"),
    },
    Asset {
        path: "/symbols.txt",
        content_type: "text/plain; charset=utf-8",
        body: demo::KNOWN_SYMBOLS.as_bytes(),
    },
];

/// The file served at `path`, if any (`/index.html` is the page too).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|asset| asset.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the page, its script and the client are served, and that nothing else is.
    #[test]
    fn serves_the_board_and_the_client_only() {
        assert!(asset("/").unwrap().content_type.starts_with("text/html"));
        assert_eq!(asset("/index.html").unwrap().path, "/");
        assert!(asset("/ringcast.js").is_some());
        assert!(asset("/board.js").is_some());
        assert!(asset("/board-socketio.js").is_some());
        let symbols = std::str::from_utf8(asset("/symbols.txt").unwrap().body).unwrap();
        assert!(symbols.split_whitespace().any(|symbol| symbol == "AAPL"));
        assert!(asset("/../Cargo.toml").is_none());
    }

    /// Proves the board loads nothing from outside the server (no CDN, no fonts).
    #[test]
    fn the_board_fetches_nothing_from_elsewhere() {
        for asset in &ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            assert!(
                !text.contains("https://"),
                "{} names an outside URL",
                asset.path
            );
            assert!(!text.contains("//cdn"), "{} names a CDN", asset.path);
        }
    }
}
