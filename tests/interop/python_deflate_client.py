#!/usr/bin/env python3
"""Checks ringcast's permessage-deflate with Python `websockets` as a strict client.

Usage: python_deflate_client.py ws://HOST:PORT/PATH

Against `ringcast --echo --websocket-compression`, for a matrix of window sizes (the client's
offer of client_max_window_bits and server_max_window_bits), it checks what was negotiated
(ringcast always asks for no context takeover on both sides, and honours the windows) and that
compressed messages of every shape echo back intact: websockets inflates what ringcast sends
with exactly the negotiated window, and fails the connection on a frame it cannot inflate or
on RSV1 where it may not be. Exits 0 when every check passes, 1 with a message on stderr when
one fails, 2 on bad usage or a missing module.
"""

import json
import os
import sys

try:
    from websockets.exceptions import ConnectionClosed, WebSocketException
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        PerMessageDeflate,
    )
    from websockets.sync.client import connect
except ImportError as error:
    print(
        f"python_deflate_client: cannot import websockets ({error}); run tests/run-all, which "
        "installs tests/requirements.txt into .venv",
        file=sys.stderr,
    )
    sys.exit(2)

TIMEOUT_SECONDS = 10
LARGE_MESSAGE_BYTES = 3 * 1024 * 1024
# The client's window offers: True offers client_max_window_bits without a value. 8 is left
# out: zlib cannot compress raw deflate with it, so websockets refuses to offer it.
CLIENT_WINDOWS = [None, True, 9, 12, 15]
# The server window the client asks for; None asks for nothing (15). With 8, ringcast sends
# every message uncompressed (RFC 7692 §6.1), and websockets must read them all the same.
SERVER_WINDOWS = [None, 8, 9, 12, 15]


class CheckFailed(Exception):
    """A negotiation or an echo that differs from what ringcast promises."""


def check(condition, description):
    if not condition:
        raise CheckFailed(description)


def expect_echo(websocket, sent, description):
    received = websocket.recv(timeout=TIMEOUT_SECONDS)
    check(type(received) is type(sent), f"{description}: echo came back as {type(received)}")
    check(received == sent, f"{description}: echo differs (sent {len(sent)}, got {len(received)})")


def check_negotiation(websocket, client_window, server_window, label):
    extensions = websocket.protocol.extensions
    check(len(extensions) == 1, f"{label}: negotiated {extensions}")
    deflate = extensions[0]
    check(isinstance(deflate, PerMessageDeflate), f"{label}: negotiated {deflate!r}")
    # "remote" is ringcast, "local" the client.
    check(deflate.remote_no_context_takeover, f"{label}: no server_no_context_takeover")
    check(deflate.local_no_context_takeover, f"{label}: no client_no_context_takeover")
    expected_server = 15 if server_window is None else server_window
    check(
        deflate.remote_max_window_bits == expected_server,
        f"{label}: server window {deflate.remote_max_window_bits}, not {expected_server}",
    )
    # A value offered is echoed; an offer without one (True) or none leaves the client at 15.
    expected_client = 15 if client_window in (None, True) else client_window
    check(
        deflate.local_max_window_bits == expected_client,
        f"{label}: client window {deflate.local_max_window_bits}, not {expected_client}",
    )


def check_messages(websocket, label):
    quotes = json.dumps(
        [{"topic": "AAPL", "bid": f"189.{index:02}", "size": 100} for index in range(200)]
    )
    websocket.send(quotes)
    expect_echo(websocket, quotes, f"{label}: compressible JSON")
    websocket.send("short")
    expect_echo(websocket, "short", f"{label}: a message under the compression minimum")
    websocket.send("")
    expect_echo(websocket, "", f"{label}: an empty message")
    euro = "€".encode()
    fragments = [b"fragmented " + euro[:1], euro[1:] + b" across" * 100, b" frames"]
    websocket.send(fragments, text=True)
    expected = b"".join(fragments).decode()
    expect_echo(websocket, expected, f"{label}: fragmented text")
    large = os.urandom(LARGE_MESSAGE_BYTES // 2) * 2
    websocket.send(large)
    expect_echo(websocket, large, f"{label}: 3 MiB binary")


def run_case(url, client_window, server_window):
    label = f"client_max_window_bits={client_window}, server_max_window_bits={server_window}"
    factory = ClientPerMessageDeflateFactory(
        client_max_window_bits=client_window,
        server_max_window_bits=server_window,
    )
    with connect(
        url,
        proxy=None,
        extensions=[factory],
        compression=None,
        open_timeout=TIMEOUT_SECONDS,
        close_timeout=TIMEOUT_SECONDS,
        ping_interval=None,
        max_size=2 * LARGE_MESSAGE_BYTES,
    ) as websocket:
        check_negotiation(websocket, client_window, server_window, label)
        check_messages(websocket, label)
        websocket.close(1000, "done")
        check(websocket.close_code == 1000, f"{label}: closed with {websocket.close_code}")


def main():
    if len(sys.argv) != 2:
        print("usage: python_deflate_client.py ws://HOST:PORT/PATH", file=sys.stderr)
        return 2
    url = sys.argv[1]
    try:
        for client_window in CLIENT_WINDOWS:
            for server_window in SERVER_WINDOWS:
                run_case(url, client_window, server_window)
    except CheckFailed as failure:
        print(f"python_deflate_client: FAILED: {failure}", file=sys.stderr)
        return 1
    except ConnectionClosed as closed:
        print(f"python_deflate_client: FAILED: closed early: {closed!r}", file=sys.stderr)
        return 1
    except (WebSocketException, OSError, TimeoutError) as error:
        print(f"python_deflate_client: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    cases = len(CLIENT_WINDOWS) * len(SERVER_WINDOWS)
    print(f"python_deflate_client: all checks passed ({cases} window combinations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
