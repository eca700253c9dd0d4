#!/usr/bin/env python3
"""Hostile clients for the abuse soak (loadtest/abuse), all at once, for a bounded time.

Each kind runs as its own set of asyncio tasks against one ringcast server and counts what it
did and what the server answered; a line of totals is printed every ten seconds and at the end.
The frames are built by hand (RFC 6455): the point is to send what well-behaved libraries
refuse to.

Kinds (counts are arguments):
  idle       subscribers of the honest topics that never read (4 KiB receive buffer);
  slow       subscribers of every honest topic that read 512 bytes a second and answer pings
             (a consumer that keeps up with heartbeats but not with the feed);
  tricklers  clients that begin a large frame (60 KiB or 1 MiB) and send one byte a second,
             reconnecting when the server closes them;
  flooders   HTTP clients publishing batches of fresh topic names as fast as answered;
  oversized  clients sending 2 MiB HTTP bodies and 2 MiB WebSocket messages;
  bombs      clients publishing JSON nested 100,000 deep, 60,000-digit numbers and unpaired
             surrogates.
"""

import argparse
import asyncio
import base64
import os
import socket
import struct
import time

UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + body


def frame_head(length: int) -> bytes:
    """The head of a masked text frame of `length` bytes (with its mask)."""
    if length < 65536:
        return struct.pack("!BBH", 0x81, 0x80 | 126, length) + b"\0\0\0\0"
    return struct.pack("!BBQ", 0x81, 0x80 | 127, length) + b"\0\0\0\0"


class Counts:
    def __init__(self):
        self.values = {}

    def add(self, name: str, amount: int = 1):
        self.values[name] = self.values.get(name, 0) + amount

    def line(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.values.items()))


async def connect(host: str, port: int, receive_buffer: int = 0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def upgraded(host: str, port: int, receive_buffer: int = 0):
    reader, writer = await connect(host, port, receive_buffer)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(UPGRADE.format(key=key).encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def idle(args, counts: Counts, index: int, stop: float):
    """Subscribes to honest topics, then never reads again."""
    topic = f"T{index % args.topics:04d}"
    while time.monotonic() < stop:
        try:
            reader, writer = await upgraded(args.host, args.port, receive_buffer=4096)
            request = f'{{"op":"subscribe","topics":["{topic}"]}}'.encode()
            writer.write(masked_frame(request))
            await writer.drain()
            counts.add("idle_connected")
            # Hold the connection without reading until the server closes it (a stall, say).
            while time.monotonic() < stop and not writer.is_closing():
                await asyncio.sleep(1)
                if reader.at_eof():
                    break
            counts.add("idle_ended")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            counts.add("idle_errors")
            await asyncio.sleep(1)


async def slow(args, counts: Counts, index: int, stop: float):
    """Subscribes to every honest topic and reads 512 bytes a second, answering pings."""
    topics = ",".join(f'"T{number:04d}"' for number in range(args.topics))
    while time.monotonic() < stop:
        try:
            reader, writer = await upgraded(args.host, args.port, receive_buffer=4096)
            writer.write(masked_frame(f'{{"op":"subscribe","topics":[{topics}]}}'.encode()))
            await writer.drain()
            counts.add("slow_connected")
            pending = b""
            while time.monotonic() < stop:
                data = await reader.read(512)
                if not data:
                    break
                pending += data
                pending, pings, closed = server_frames(pending)
                for payload in pings:
                    writer.write(masked_frame(payload, opcode=0xA))
                if closed is not None:
                    counts.add(f"slow_closed_{closed}")
                    break
                await asyncio.sleep(1)
            counts.add("slow_ended")
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts.add("slow_errors")
            await asyncio.sleep(1)


def server_frames(pending: bytes):
    """Takes the whole unmasked server frames off `pending`: the rest, ping payloads, and the
    close code if a close frame came (None otherwise)."""
    pings, closed = [], None
    while len(pending) >= 2:
        opcode, length, offset = pending[0] & 0x0F, pending[1] & 0x7F, 2
        if length == 126:
            if len(pending) < 4:
                break
            length, offset = struct.unpack("!H", pending[2:4])[0], 4
        elif length == 127:
            if len(pending) < 10:
                break
            length, offset = struct.unpack("!Q", pending[2:10])[0], 10
        if len(pending) < offset + length:
            break
        payload = pending[offset : offset + length]
        pending = pending[offset + length :]
        if opcode == 0x9:
            pings.append(payload)
        elif opcode == 0x8:
            closed = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return pending, pings, closed


async def trickler(args, counts: Counts, index: int, stop: float):
    """Begins a large frame and sends one byte a second until closed, then starts again."""
    length = 60 * 1024 if index % 2 == 0 else 1024 * 1024
    while time.monotonic() < stop:
        try:
            reader, writer = await upgraded(args.host, args.port)
            writer.write(frame_head(length))
            counts.add("trickles_started")
            for _ in range(length):
                if time.monotonic() >= stop:
                    break
                writer.write(b"x")
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(64), timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                if not data or data[0] & 0x0F == 0x8:
                    counts.add("trickles_closed_by_server")
                    break
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts.add("trickle_errors")
            await asyncio.sleep(0.5)


async def http_post(reader, writer, path: str, body: bytes) -> int:
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def flooder(args, counts: Counts, index: int, stop: float):
    """Publishes batches of fresh topic names for as long as it may."""
    serial = 0
    while time.monotonic() < stop:
        try:
            reader, writer = await connect(args.host, args.port)
            while time.monotonic() < stop:
                items = ",".join(
                    f'{{"topic":"flood-{index}-{serial + item}","data":1}}' for item in range(500)
                )
                serial += 500
                status = await http_post(reader, writer, "/publish", f"[{items}]".encode())
                counts.add(f"flood_{status}")
                if status != 200:
                    await asyncio.sleep(0.1)
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts.add("flood_errors")
            await asyncio.sleep(0.5)


async def oversized(args, counts: Counts, index: int, stop: float):
    """Sends 2 MiB bodies over HTTP and 2 MiB messages over the WebSocket."""
    body = b'"' + b"x" * (2 * 1024 * 1024) + b'"'
    while time.monotonic() < stop:
        try:
            reader, writer = await connect(args.host, args.port)
            status = await http_post(reader, writer, "/publish/oversized", body)
            counts.add(f"oversized_http_{status}")
            writer.close()
            reader, writer = await upgraded(args.host, args.port)
            request = b'{"op":"publish","topic":"oversized","data":' + body + b"}"
            writer.write(masked_frame(request))
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(64), timeout=10)
            counts.add("oversized_ws_closed" if answer[:1] == b"\x88" else "oversized_ws_other")
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            counts.add("oversized_errors")
        await asyncio.sleep(0.2)


async def bombs(args, counts: Counts, index: int, stop: float):
    """Publishes parser bombs over HTTP; each must be refused with 400."""
    payloads = [
        b"[" * 100_000 + b"]" * 100_000,
        b"1" * 60_000,
        b'"\\ud800"',
    ]
    while time.monotonic() < stop:
        try:
            reader, writer = await connect(args.host, args.port)
            for payload in payloads:
                status = await http_post(reader, writer, "/publish/bombs", payload)
                counts.add(f"bomb_{status}")
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            counts.add("bomb_errors")
        await asyncio.sleep(0.2)


async def report(counts: Counts, stop: float):
    while time.monotonic() < stop:
        await asyncio.sleep(10)
        print(f"attackers: {counts.line()}", flush=True)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--topics", type=int, default=100, help="the honest topics T0000…")
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--tricklers", type=int, default=640)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--oversized", type=int, default=2)
    parser.add_argument("--bombs", type=int, default=2)
    args = parser.parse_args()
    stop = time.monotonic() + args.seconds
    counts = Counts()
    tasks = [asyncio.create_task(report(counts, stop))]
    for kind, count in [
        (idle, args.idle),
        (slow, args.slow),
        (trickler, args.tricklers),
        (flooder, args.flooders),
        (oversized, args.oversized),
        (bombs, args.bombs),
    ]:
        tasks += [asyncio.create_task(kind(args, counts, index, stop)) for index in range(count)]
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"attackers done: {counts.line()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
