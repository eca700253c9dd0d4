#!/usr/bin/env python3
"""Checks ringcast's echo mode with Python `websockets` as a strict client.

Usage: python_client.py ws://HOST:PORT/PATH
       python_client.py wss://HOST:PORT/PATH CA_FILE

Over wss://, Python's ssl module (OpenSSL) verifies the server's certificate against CA_FILE
and the host name, so the run also checks ringcast's TLS from an independent implementation.

websockets validates every frame the server sends (masking, reserved bits, opcodes, UTF-8,
close codes) and fails the connection on any violation, so a clean run here means ringcast's
output is well formed, not merely that some client tolerated it. Exits 0 when every check
passes, 1 with a message on stderr when one fails, 2 on bad usage or a missing module.
"""

import os
import ssl
import sys

try:
    from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketException
    from websockets.protocol import State
    from websockets.sync.client import connect
except ImportError as error:
    print(
        f"python_client: cannot import websockets ({error}); run tests/run-all, which "
        "installs tests/requirements.txt into .venv",
        file=sys.stderr,
    )
    sys.exit(2)

# Every wait is bounded, so that a server that stops answering fails the run instead of
# hanging it.
TIMEOUT_SECONDS = 10
# Larger than one 4 KiB receive buffer and websockets' 1 MiB default limit, so that the echo
# crosses many reads on both sides.
LARGE_MESSAGE_BYTES = 3 * 1024 * 1024


class CheckFailed(Exception):
    """A reply that differs from what the protocol or the echo promises."""


def check(condition, description):
    if not condition:
        raise CheckFailed(description)


def expect_echo(websocket, sent, description):
    received = websocket.recv(timeout=TIMEOUT_SECONDS)
    check(type(received) is type(sent), f"{description}: echo came back as {type(received)}")
    unit = "characters" if isinstance(sent, str) else "bytes"
    check(
        received == sent,
        f"{description}: echo differs (sent {len(sent)} {unit}, received {len(received)})",
    )


def check_messages(websocket):
    websocket.send("hello ringcast")
    expect_echo(websocket, "hello ringcast", "text")

    binary = bytes(range(256)) * 4
    websocket.send(binary)
    expect_echo(websocket, binary, "binary")

    # Text in four frames: the euro sign's three bytes are split across the first two, and
    # websockets ends the message with an empty final continuation frame.
    euro = "€".encode()
    fragments = [b"fragmented " + euro[:1], euro[1:] + b" across", b" frames", b"!"]
    websocket.send(fragments, text=True)
    expect_echo(websocket, "fragmented € across frames!", "fragmented text")

    websocket.send([b"\x00\x01", b"\xfe\xff"])
    expect_echo(websocket, b"\x00\x01\xfe\xff", "fragmented binary")

    multi_byte = "ünïcödé € 日本語 𝄞 🚀"
    websocket.send(multi_byte)
    expect_echo(websocket, multi_byte, "multi-byte UTF-8 text")

    large = os.urandom(LARGE_MESSAGE_BYTES)
    websocket.send(large)
    expect_echo(websocket, large, "3 MiB binary")


def check_ping(websocket):
    pong_received = websocket.ping(b"ringcast-ping")
    check(pong_received.wait(TIMEOUT_SECONDS), "no pong answered the ping")


def check_close(websocket):
    websocket.close(1000, "done")
    check(websocket.wait_closed(TIMEOUT_SECONDS), "the TCP connection did not close")
    protocol = websocket.protocol
    check(protocol.state is State.CLOSED, f"state is {protocol.state.name}, not CLOSED")
    check(protocol.close_rcvd is not None, "the server sent no close frame")
    check(websocket.close_code == 1000, f"the server closed with {websocket.close_code}")
    # After a clean closing handshake websockets raises ConnectionClosedOK; an abnormal end
    # (no close frame, or a protocol error) raises ConnectionClosedError instead.
    try:
        websocket.recv(timeout=TIMEOUT_SECONDS)
    except ConnectionClosedOK:
        return
    raise CheckFailed("recv after the closing handshake did not raise ConnectionClosedOK")


def main():
    if len(sys.argv) not in (2, 3):
        print(
            "usage: python_client.py ws://HOST:PORT/PATH | wss://HOST:PORT/PATH CA_FILE",
            file=sys.stderr,
        )
        return 2
    url = sys.argv[1]
    tls = {}
    if len(sys.argv) == 3:
        tls["ssl"] = ssl.create_default_context(cafile=sys.argv[2])
    try:
        # No proxy for a loopback server, no keepalive pings of websockets' own (the ping
        # checked is ours), and a size limit above the largest message echoed.
        with connect(
            url,
            **tls,
            proxy=None,
            open_timeout=TIMEOUT_SECONDS,
            close_timeout=TIMEOUT_SECONDS,
            ping_interval=None,
            max_size=2 * LARGE_MESSAGE_BYTES,
        ) as websocket:
            check_messages(websocket)
            check_ping(websocket)
            check_close(websocket)
    except CheckFailed as failure:
        print(f"python_client: FAILED: {failure}", file=sys.stderr)
        return 1
    except ConnectionClosed as closed:
        # websockets names the protocol violation it saw in the close frames' reason.
        print(f"python_client: FAILED: connection closed early: {closed!r}", file=sys.stderr)
        return 1
    except (WebSocketException, OSError, TimeoutError, ssl.SSLError) as error:
        # A refused handshake, a network error, or a wait that ran out.
        print(f"python_client: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print("python_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
