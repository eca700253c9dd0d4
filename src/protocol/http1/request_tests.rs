//! Tests of the HTTP/1.1 request reader: heads, bodies, pipelining and every refusal.

use super::*;
use crate::protocol::pool::PoolLimits;

const LIMITS: RequestLimits = RequestLimits {
    header_bytes_max: 8 * 1024,
    body_bytes_max: 1024 * 1024,
};

/// An event copied out of the reader, to compare runs fed with different splits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Request {
        method: String,
        path: String,
        body: Vec<u8>,
        keep_alive: bool,
    },
    Continue {
        path: String,
    },
    /// The upgrade's path and every byte after its head, from all reads.
    Upgrade {
        path: String,
        rest: Vec<u8>,
    },
    Error(HandshakeError),
}

fn pool() -> BufferPool {
    BufferPool::new(&PoolLimits::default())
}

fn buffers_in_use(pool: &BufferPool) -> usize {
    pool.statistics().map(|class| class.buffers_in_use).sum()
}

fn buffers_created(pool: &BufferPool) -> usize {
    pool.statistics().map(|class| class.buffers_created).sum()
}

/// Feeds `reads` in order, checking that each read is consumed whole, and copies out what
/// the reader saw.
fn run(
    reader: &mut RequestReader,
    pool: &mut BufferPool,
    limits: &RequestLimits,
    reads: &[&[u8]],
) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (read_index, input) in reads.iter().enumerate() {
        if let Some(Seen::Upgrade { rest, .. }) = seen.last_mut() {
            rest.extend_from_slice(input);
            continue;
        }
        let mut events = reader.handle_read(input, pool, limits);
        let mut upgraded = false;
        while let Some(event) = events.next_event() {
            seen.push(match event {
                Ok(HttpEvent::Request(request)) => Seen::Request {
                    method: request.head.method().to_owned(),
                    path: request.head.path().to_owned(),
                    body: request.body.to_vec(),
                    keep_alive: request.head.keep_alive(),
                },
                Ok(HttpEvent::ContinueExpected(head)) => Seen::Continue {
                    path: head.path().to_owned(),
                },
                Ok(HttpEvent::Upgrade { head, rest_start }) => {
                    upgraded = true;
                    Seen::Upgrade {
                        path: head.path().to_owned(),
                        rest: input[rest_start..].to_vec(),
                    }
                }
                Err(error) => Seen::Error(error),
            });
            if upgraded {
                break;
            }
        }
        if !upgraded {
            assert_eq!(
                events.position(),
                input.len(),
                "read {read_index} not consumed"
            );
        }
    }
    seen
}

fn run_whole(reads: &[&[u8]]) -> Vec<Seen> {
    let mut pool = pool();
    let mut reader = RequestReader::new();
    let seen = run(&mut reader, &mut pool, &LIMITS, reads);
    reader.release_buffers(&mut pool);
    assert_eq!(buffers_in_use(&pool), 0);
    seen
}

fn request(method: &str, path: &str, body: &[u8]) -> Seen {
    Seen::Request {
        method: method.into(),
        path: path.into(),
        body: body.to_vec(),
        keep_alive: true,
    }
}

/// A stream with one request of every framing, an extension, a trailer and a query.
const STREAM: &[u8] = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n\
    POST /publish/AAPL HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
    Content-Length: 12\r\n\r\n{\"px\":101.5}\
    POST /publish?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
    4;name=value\r\n[1,2\r\nA\r\n,3,4,5,6,7\r\n1\r\n]\r\n0\r\nChecksum: none\r\n\r\n\
    POST /publish/MSFT HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n\
    GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

fn stream_requests() -> Vec<Seen> {
    let mut last = request("GET", "/metrics", b"");
    if let Seen::Request { keep_alive, .. } = &mut last {
        *keep_alive = false;
    }
    vec![
        request("GET", "/health", b""),
        request("POST", "/publish/AAPL", b"{\"px\":101.5}"),
        request("POST", "/publish", b"[1,2,3,4,5,6,7]"),
        request("POST", "/publish/MSFT", b""),
        last,
    ]
}

/// Proves pipelined requests of every framing in one read come out in order.
#[test]
fn pipelined_requests_in_one_read() {
    assert_eq!(run_whole(&[STREAM]), stream_requests());
}

/// Proves a stream cut at every byte, or at every pair of bytes, reads the same, and that
/// no buffer is left on loan between requests.
#[test]
fn every_split_point_reads_the_same() {
    let expected = stream_requests();
    for split in 0..=STREAM.len() {
        let (first, second) = STREAM.split_at(split);
        assert_eq!(run_whole(&[first, second]), expected, "split at {split}");
    }
    for first_split in (0..=STREAM.len()).step_by(3) {
        for second_split in first_split..=STREAM.len() {
            let reads = [
                &STREAM[..first_split],
                &STREAM[first_split..second_split],
                &STREAM[second_split..],
            ];
            assert_eq!(run_whole(&reads), expected, "{first_split}, {second_split}");
        }
    }
    let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
    assert_eq!(run_whole(&bytes), expected, "byte by byte");
}

/// Proves a request whole in one read is lent from the read itself: no buffer is created
/// and the body points into the input.
#[test]
fn whole_request_is_lent_without_copy() {
    let input = b"POST /publish/AAPL HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
    let mut pool = pool();
    let mut reader = RequestReader::new();
    let mut events = reader.handle_read(input, &mut pool, &LIMITS);
    let Some(Ok(HttpEvent::Request(request))) = events.next_event() else {
        panic!("expected a request");
    };
    assert_eq!(request.body, b"{}");
    assert!(input.as_ptr_range().contains(&request.body.as_ptr()));
    assert!(
        input
            .as_ptr_range()
            .contains(&request.head.bytes().as_ptr())
    );
    assert!(events.next_event().is_none());
    assert_eq!(buffers_created(&pool), 0);
}

/// Proves the buffers of a request cut across reads are on loan while it is pending and
/// while its event is out, and back in the pool after the next call.
#[test]
fn pooled_buffers_are_returned() {
    let input = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let mut pool = pool();
    let mut reader = RequestReader::new();
    assert_eq!(run(&mut reader, &mut pool, &LIMITS, &[&input[..50]]), []);
    assert_eq!(buffers_in_use(&pool), 2, "head and body");
    assert!(reader.is_mid_request() && reader.holds_buffers());
    let mut events = reader.handle_read(&input[50..], &mut pool, &LIMITS);
    assert!(matches!(
        events.next_event(),
        Some(Ok(HttpEvent::Request(_)))
    ));
    assert!(events.next_event().is_none());
    assert_eq!(buffers_in_use(&pool), 0);
    assert!(!reader.holds_buffers());

    // A head cut across reads, then torn down mid-body.
    run(
        &mut reader,
        &mut pool,
        &LIMITS,
        &[b"POST /p HT", b"TP/1.1\r\n"],
    );
    assert_eq!(buffers_in_use(&pool), 1);
    run(
        &mut reader,
        &mut pool,
        &LIMITS,
        &[b"Host: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"],
    );
    assert_eq!(buffers_in_use(&pool), 2);
    reader.release_buffers(&mut pool);
    assert_eq!(buffers_in_use(&pool), 0);

    // An error mid-body hands everything back at once.
    let seen = run(
        &mut reader,
        &mut pool,
        &LIMITS,
        &[
            b"POST /p HTTP/1.1\r\nHost: a\r\n",
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd",
        ],
    );
    assert!(matches!(
        seen.as_slice(),
        [Seen::Error(HandshakeError::MalformedChunk(_))]
    ));
    assert_eq!(buffers_in_use(&pool), 0);
}

/// Proves a client that expects 100-continue is offered it once, only when its body is
/// not already here, and never over HTTP/1.0.
#[test]
fn expect_continue_is_offered_before_the_body() {
    let head =
        b"POST /publish/A HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let continued = Seen::Continue {
        path: "/publish/A".into(),
    };
    let published = request("POST", "/publish/A", b"null");
    assert_eq!(
        run_whole(&[head, b"nu", b"ll"]),
        [continued.clone(), published.clone()]
    );
    let whole = [&head[..], b"null"].concat();
    assert_eq!(run_whole(&[&whole]), std::slice::from_ref(&published));
    let chunked = b"POST /publish/A HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        run_whole(&[chunked, b"4\r\nnull\r\n0\r\n\r\n"]),
        [continued, published]
    );
    let old = b"POST /publish/A HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    assert!(matches!(
        run_whole(&[old, b"null"]).as_slice(),
        [Seen::Request { .. }]
    ));
}

/// Proves an upgrade request is recognised whole or cut, and that the bytes after its head
/// (early frames) are left for the WebSocket.
#[test]
fn upgrade_hands_over_the_rest() {
    let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\n\r\n\x81\x80";
    let expected = [Seen::Upgrade {
        path: "/ws".into(),
        rest: b"\x81\x80".to_vec(),
    }];
    for split in 0..=input.len() {
        let (first, second) = input.split_at(split);
        assert_eq!(run_whole(&[first, second]), expected, "split at {split}");
    }
    let with_body =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(
        run_whole(&[with_body]),
        [Seen::Error(HandshakeError::UpgradeWithBody)]
    );
}

/// Proves keep-alive follows the version and the Connection header.
#[test]
fn keep_alive_follows_version_and_connection() {
    let cases: [(&[u8], bool); 5] = [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", false),
    ];
    for (input, keep_alive) in cases {
        let seen = run_whole(&[input]);
        let [
            Seen::Request {
                keep_alive: seen, ..
            },
        ] = seen.as_slice()
        else {
            panic!("{seen:?}");
        };
        assert_eq!(*seen, keep_alive, "{}", String::from_utf8_lossy(input));
    }
}

/// Proves chunked bodies decode with upper-case hex, leading zeros, extensions, several
/// trailers and an empty body.
#[test]
fn chunked_bodies_decode() {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"0\r\n\r\n", b""),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"0003 ; a=b;c\r\nabc\r\n000\r\n\r\n", b"abc"),
        (b"1\r\nx\r\n0\r\nA: 1\r\nB: 2\r\n\r\n", b"x"),
        (b"1\t;x\r\ny\r\n0;end\r\n\r\n", b"y"),
    ];
    for (chunks, body) in cases {
        let input = [
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            chunks,
        ]
        .concat();
        for split in 0..=input.len() {
            let (first, second) = input.split_at(split);
            assert_eq!(
                run_whole(&[first, second]),
                [request("POST", "/p", body)],
                "split at {split}"
            );
        }
    }
}

/// Proves every malformed chunked body is refused with 400 (413 or 431 for the limits),
/// whatever the split.
#[test]
fn malformed_chunked_bodies_are_refused() {
    let long_extension = [
        &b"1;"[..],
        &[b'x'; CHUNK_EXTENSION_BYTES_MAX],
        b"\r\na\r\n0\r\n\r\n",
    ]
    .concat();
    let long_trailer = [&b"0\r\nA: "[..], &[b'x'; 80], b"\r\n\r\n"].concat();
    let cases: [(&[u8], u16); 11] = [
        (b"x\r\n", 400),
        (b";a\r\n", 400),
        (b"1x\r\n", 400),
        (b"1\na\r\n", 400),
        (b"1\rxa", 400),
        (b"1\r\nab\r\n", 400),
        (b"1\r\na\n0\r\n\r\n", 400),
        (b"00000000000000001\r\n", 400),
        (b"100001\r\n", 413),
        (&long_extension, 400),
        (&long_trailer, 431),
    ];
    let limits = RequestLimits {
        header_bytes_max: 64,
        body_bytes_max: 0x10_0000,
    };
    for (chunks, status) in cases {
        let input = [
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            chunks,
        ]
        .concat();
        for split in 0..=input.len() {
            let mut pool = pool();
            let mut reader = RequestReader::new();
            let (first, second) = input.split_at(split);
            let seen = run(&mut reader, &mut pool, &limits, &[first, second]);
            let [Seen::Error(error)] = seen.as_slice() else {
                panic!("{}: {seen:?}", String::from_utf8_lossy(chunks));
            };
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(buffers_in_use(&pool), 0);
        }
    }
}

/// Proves each framing or head error gets its status, and that nothing is read after it.
#[test]
fn request_errors_map_to_statuses() {
    let too_long_head = [&b"GET /"[..], &[b'a'; 9000], b" HTTP/1.1\r\n\r\n"].concat();
    let cases: [(&[u8], HandshakeError); 11] = [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            HandshakeError::ContentLengthWithTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            HandshakeError::ConflictingContentLengths,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
            HandshakeError::ConflictingContentLengths,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            HandshakeError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            HandshakeError::InvalidContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n",
            HandshakeError::BodyTooLarge {
                body_bytes: 1_048_577,
                body_bytes_max: 1_048_576,
            },
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HandshakeError::UnsupportedTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            HandshakeError::MalformedRequest("chunked must be the last transfer coding, once"),
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HandshakeError::TransferEncodingInHttp10,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
            HandshakeError::MalformedRequest("invalid header name"),
        ),
        (
            &too_long_head,
            HandshakeError::HeaderBlockTooLarge {
                header_bytes_max: 8192,
            },
        ),
    ];
    let statuses = [400, 400, 400, 400, 400, 413, 501, 400, 400, 400, 431];
    for ((input, error), status) in cases.into_iter().zip(statuses) {
        assert_eq!(error.status(), status, "{error}");
        let trailing = [input, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
        let expected = [Seen::Error(error)];
        assert_eq!(run_whole(&[&trailing]), expected);
        let pieces: Vec<&[u8]> = trailing.chunks(7).collect();
        assert_eq!(run_whole(&pieces), expected, "in pieces");
    }
    let agreeing =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nabcde";
    assert_eq!(run_whole(&[agreeing]), [request("POST", "/", b"abcde")]);
}

/// Proves an exhausted pool refuses a request cut across reads with 503, and one whole in
/// a read is still served.
#[test]
fn exhausted_pool_answers_503() {
    let mut pool = BufferPool::new(&PoolLimits {
        inflaters_max: 1,
        classes: vec![crate::protocol::pool::BufferClass {
            buffer_bytes: 128,
            buffers_max: 1,
        }],
    });
    let mut reader = RequestReader::new();
    let whole = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(
        run(&mut reader, &mut pool, &LIMITS, &[whole]),
        [request("POST", "/p", b"x")]
    );
    let seen = run(
        &mut reader,
        &mut pool,
        &LIMITS,
        &[&whole[..20], &whole[20..]],
    );
    let [Seen::Error(error)] = seen.as_slice() else {
        panic!("{seen:?}");
    };
    assert_eq!(error.status(), 503);
    assert_eq!(buffers_in_use(&pool), 0);
}

/// Proves a thousand pipelined publishes in one read are read without a single pooled
/// buffer (a sanity check of the no-copy path, not a timing).
#[test]
fn pipelined_publishes_need_no_buffer() {
    let one = b"POST /publish/AAPL HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
        Content-Length: 12\r\n\r\n{\"px\":101.5}";
    let input = one.repeat(1000);
    let mut pool = pool();
    let mut reader = RequestReader::new();
    let mut events = reader.handle_read(&input, &mut pool, &LIMITS);
    let mut count = 0;
    while let Some(event) = events.next_event() {
        assert!(matches!(event, Ok(HttpEvent::Request(request)) if request.body.len() == 12));
        count += 1;
    }
    assert_eq!(count, 1000);
    assert_eq!(buffers_created(&pool), 0);
}

/// Proves the RFC 9112 head rules hold for plain requests and upgrades alike, whole or in
/// pieces: HTTP/1.1 needs one Host (HTTP/1.0 may omit it, nobody may send two), lines end in
/// CRLF, and an expectation other than 100-continue is refused with 417.
#[test]
fn heads_follow_rfc_9112() {
    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let bare_lf = HandshakeError::MalformedRequest("line ending without CR (bare LF)");
    let cases: Vec<(String, HandshakeError)> = vec![
        (
            "GET /health HTTP/1.1\r\n\r\n".into(),
            HandshakeError::MissingHost,
        ),
        (
            format!("GET /ws HTTP/1.1\r\n{UPGRADE}\r\n"),
            HandshakeError::MissingHost,
        ),
        (
            "GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            HandshakeError::DuplicateHost,
        ),
        ("GET /health HTTP/1.1\nHost: a\n\n".into(), bare_lf.clone()),
        (
            "GET /health HTTP/1.1\r\nHost: a\nX: y\r\n\r\n".into(),
            bare_lf.clone(),
        ),
        (
            format!("GET /ws HTTP/1.1\r\nHost: a\r\n{UPGRADE}\n"),
            bare_lf,
        ),
        (
            "POST /p HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx".into(),
            HandshakeError::ExpectationFailed,
        ),
        (
            "GET /health HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n".into(),
            HandshakeError::ExpectationFailed,
        ),
        (
            format!("GET /ws HTTP/1.1\r\nHost: a\r\n{UPGRADE}Expect: websocket\r\n\r\n"),
            HandshakeError::ExpectationFailed,
        ),
    ];
    for (input, error) in cases {
        let expected = [Seen::Error(error)];
        assert_eq!(run_whole(&[input.as_bytes()]), expected, "{input:?}");
        let pieces: Vec<&[u8]> = input.as_bytes().chunks(5).collect();
        assert_eq!(run_whole(&pieces), expected, "{input:?} in pieces");
    }
    assert_eq!(HandshakeError::MissingHost.status(), 400);
    assert_eq!(HandshakeError::DuplicateHost.status(), 400);
    assert_eq!(HandshakeError::ExpectationFailed.status(), 417);
    // HTTP/1.0 may omit Host, and its 100-continue is ignored (RFC 9110 §10.1.1).
    let old = b"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    let mut served = request("POST", "/p", b"x");
    if let Seen::Request { keep_alive, .. } = &mut served {
        *keep_alive = false;
    }
    assert_eq!(run_whole(&[old, b"x"]), [served]);
    let listed =
        b"POST /p HTTP/1.1\r\nHost: a\r\nExpect: , 100-Continue\r\nContent-Length: 1\r\n\r\n";
    let continued = [
        Seen::Continue { path: "/p".into() },
        request("POST", "/p", b"x"),
    ];
    assert_eq!(run_whole(&[listed, b"x"]), continued);
}

/// Proves a head's fields are found by name, ignoring case, trimmed, the first of several.
#[test]
fn header_fields_by_name() {
    let head = b"POST /publish HTTP/1.1\r\nHost: x\r\nIdempotency-KEY:  k-1 \r\n\
                 idempotency-key: k-2\r\nContent-Length: 0\r\n\r\n";
    let mut pool = BufferPool::new(&PoolLimits::default());
    let mut reader = RequestReader::default();
    let input = head.to_vec();
    let mut events = reader.handle_read(&input, &mut pool, &LIMITS);
    let Some(Ok(HttpEvent::Request(request))) = events.next_event() else {
        panic!("a request")
    };
    assert_eq!(request.head.header("idempotency-key"), Some(&b"k-1"[..]));
    assert_eq!(request.head.header("host"), Some(&b"x"[..]));
    assert_eq!(request.head.header("origin"), None);
}

/// Proves trailer lines must be field lines, as in a head, whatever the split, and that
/// valid trailers still pass. Found by the `http1_request` fuzz target: every byte but CR
/// and LF used to be skipped, so `0\r\n\0\0\r\n\r\n` ended a body that httparse refuses.
#[test]
fn trailer_lines_must_be_field_lines() {
    let refused: [&[u8]; 6] = [
        b"0\r\n\0\0\r\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\n: empty name\r\n\r\n",
        b"0\r\n folded: x\r\n\r\n",
        b"0\r\nName : x\r\n\r\n",
        b"0\r\nA: \x7f\r\n\r\n",
    ];
    let accepted: [&[u8]; 3] = [
        b"0\r\nA:\r\n\r\n",
        b"0\r\nX-Sum: a\tb c\xff:\r\n\r\n",
        b"0\r\n!#$%&'*+-.^_`|~09az: v\r\nB: 2\r\n\r\n",
    ];
    let head = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (trailer, valid) in refused
        .iter()
        .map(|trailer| (trailer, false))
        .chain(accepted.iter().map(|trailer| (trailer, true)))
    {
        let input = [&head[..], trailer].concat();
        for split in 0..=input.len() {
            let (first, second) = input.split_at(split);
            let seen = run_whole(&[first, second]);
            match seen.as_slice() {
                [Seen::Request { body, .. }] if valid => assert!(body.is_empty()),
                [Seen::Error(error)] if !valid => assert_eq!(error.status(), 400, "{error}"),
                _ => panic!("{}: {seen:?}", String::from_utf8_lossy(trailer)),
            }
        }
    }
}
