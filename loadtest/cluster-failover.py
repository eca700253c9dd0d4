#!/usr/bin/env python3
"""Failover time of a ringcast cluster: how long the clients of a SIGKILLed node take to be
back on another node with no gap.

Starts one nats-server with JetStream (or three routed, --nats-cluster, with an R3 stream) and
--nodes `ringcast --nats` nodes; connects --clients WebSocket subscribers to node 0 (client i
on topic i % --topics) while a publisher on every other node publishes --rate messages/s over
the topics; after --warmup seconds SIGKILLs node 0. Each client, on losing its connection,
reconnects at once (after a random pause of up to --jitter-ms) to a random surviving node and
subscribes with `since` and the epoch it had. A client is back when it has read every seq up to
the one the new node answered its subscription with; the time from the SIGKILL to that moment
is its failover time. Every seq a client reads must be its last + 1 across the failover: gaps,
duplicates and `reset` answers are counted. Prints p50/p99/max over the clients that came back
and how many did not within --timeout seconds.

The WebSocket client is a few lines of RFC 6455 written here (text frames, masked, pings
answered), so the script needs nothing but Python 3.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

READY_WAIT_SECONDS = 20


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebSocket:
    """A client connection: subscribe, then read JSON text messages."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        return cls(reader, writer)

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.writer.write(header + mask + masked)

    def send_json(self, value):
        self.send_frame(0x1, json.dumps(value).encode())

    async def read_json(self):
        """The next text message; answers pings; raises ConnectionError at a close or EOF."""
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("closed by the server")

    def close(self):
        self.writer.close()


class Client:
    """One subscriber: its topic, the last seq read, and how its failover went."""

    def __init__(self, index, topic):
        self.index = index
        self.topic = topic
        self.last = 0
        self.epoch = None
        self.gaps = 0
        self.duplicates = 0
        self.resets = 0
        self.back_seconds = None

    def handle(self, message):
        """A message or a `reset` (whose seq, the latest, follows as a message)."""
        if message.get("op") == "reset":
            self.resets += 1
            self.epoch = message["epoch"]
            self.last = max(message["seq"] - 1, 0)
        elif "op" not in message:
            self.take(message)

    def take(self, message):
        seq = message["seq"]
        if seq <= self.last:
            self.duplicates += 1
        elif seq != self.last + 1:
            self.gaps += 1
        self.last = max(self.last, seq)

    async def subscribe(self, port, since):
        socket_ = await WebSocket.connect(port)
        request = {"op": "subscribe", "topics": [self.topic]}
        if since:
            request["since"] = {self.topic: {"seq": self.last, "epoch": self.epoch}}
        socket_.send_json(request)
        while True:
            answer = await socket_.read_json()
            if answer.get("op") == "subscribed":
                self.epoch = answer["epoch"]
                return socket_, answer["seq"]
            raise ConnectionError(f"unexpected {answer}")

    async def run(self, first_port, survivors, killed_at, jitter_ms, subscribed):
        socket_, seq = await self.subscribe(first_port, since=False)
        self.last = seq
        subscribed.release()
        try:
            while True:
                message = await socket_.read_json()
                self.handle(message)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            socket_.close()
        if jitter_ms:
            await asyncio.sleep(random.uniform(0, jitter_ms / 1000))
        while True:
            port = random.choice(survivors)
            try:
                socket_, seq = await self.subscribe(port, since=True)
                break
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                await asyncio.sleep(0.01)
        while self.last < seq:
            message = await socket_.read_json()
            self.handle(message)
        self.back_seconds = time.monotonic() - killed_at[0]
        socket_.close()


async def publish(port, topics, rate, stop):
    """Publishes to every topic in turn over one keep-alive HTTP connection at `rate`/s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        if sent >= due:
            await asyncio.sleep(0.002)
            continue
        body = json.dumps({"n": sent}).encode()
        topic = f"F{sent % topics}"
        writer.write(
            f"POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        sent += 1
    writer.close()
    return sent


def start_nats(store_root, count):
    """nats-servers with JetStream, routed when more than one; their client ports."""
    ports = [free_port() for _ in range(count)]
    routes = [free_port() for _ in range(count)]
    processes = []
    for index, port in enumerate(ports):
        store = os.path.join(store_root, f"nats-{index}")
        arguments = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
        if count > 1:
            arguments += [
                "-n", f"n{index}", "--cluster_name", "ringcast-failover",
                "--cluster", f"nats://127.0.0.1:{routes[index]}",
                "--routes", ",".join(f"nats://127.0.0.1:{route}" for route in routes),
            ]
        processes.append(subprocess.Popen(arguments, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    return processes, ports


def start_node(urls, shards, replicas, log_path):
    """A `ringcast --nats` node; its process and port, once it prints its address."""
    environment = dict(os.environ, RINGCAST_NATS_REPLICAS=str(replicas))
    log = open(log_path, "w")
    process = subprocess.Popen(
        ["target/release/ringcast", "--listen", "127.0.0.1:0", "--shards", str(shards),
         "--log", "warn", "--nats", urls],
        stdout=subprocess.PIPE, stderr=log, env=environment, text=True)
    line = process.stdout.readline()
    if not line.startswith("ringcast listening on "):
        raise RuntimeError(f"the node did not start: {line!r}; see {log_path}")
    return process, int(line.rsplit(":", 1)[1])


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(arguments, ports):
    victim, survivors = ports[0], ports[1:]
    clients = [Client(index, f"F{index % arguments.topics}") for index in range(arguments.clients)]
    killed_at = [None]
    subscribed = asyncio.Semaphore(0)
    tasks = []
    for client in clients:
        tasks.append(asyncio.create_task(
            client.run(victim, survivors, killed_at, arguments.jitter_ms, subscribed)))
        await asyncio.sleep(0)
    for _ in clients:
        await asyncio.wait_for(subscribed.acquire(), READY_WAIT_SECONDS)
    stop = asyncio.Event()
    publishers = [asyncio.create_task(
        publish(port, arguments.topics, arguments.rate / len(survivors), stop))
        for port in survivors]
    await asyncio.sleep(arguments.warmup)
    return clients, tasks, publishers, stop, killed_at


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0, help="publishes/s in total")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the kill")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--nats-cluster", action="store_true")
    parser.add_argument("--results", default=None)
    arguments = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = arguments.results or tempfile.mkdtemp()
    os.makedirs(results, exist_ok=True)
    store_root = tempfile.mkdtemp(prefix="ringcast-failover-")
    nats_count = 3 if arguments.nats_cluster else 1
    nats, nats_ports = start_nats(store_root, nats_count)
    nodes = []
    try:
        urls = ",".join(f"nats://127.0.0.1:{port}" for port in nats_ports)
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while True:  # The first node waits for JetStream (its meta leader, in a cluster).
            try:
                nodes.append(start_node(urls, arguments.shards, nats_count,
                                        os.path.join(results, "node-0.log")))
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for index in range(1, arguments.nodes):
            nodes.append(start_node(urls, arguments.shards, nats_count,
                                    os.path.join(results, f"node-{index}.log")))
        ports = [port for _, port in nodes]
        report = asyncio.run(run(arguments, ports, nodes[0][0]))
    finally:
        for process, _ in nodes:
            process.kill()
            process.wait()
        for process in nats:
            process.kill()
            process.wait()
        shutil.rmtree(store_root, ignore_errors=True)
    print(report)
    with open(os.path.join(results, "failover.txt"), "w") as output:
        output.write(report + "\n")


async def run(arguments, ports, victim_process):
    clients, tasks, publishers, stop, killed_at = await measure(arguments, ports)
    killed_at[0] = time.monotonic()
    victim_process.send_signal(signal.SIGKILL)
    done, pending = await asyncio.wait(tasks, timeout=arguments.timeout)
    for task in pending:
        task.cancel()
    stop.set()
    published = sum(await asyncio.gather(*publishers))
    errors = [task.exception() for task in done if task.exception() is not None]
    back = [client.back_seconds * 1000 for client in clients if client.back_seconds is not None]
    lines = [
        f"{arguments.clients} clients of a SIGKILLed node over {arguments.topics} topics, "
        f"{arguments.nodes} nodes, {'3 nats-servers (R3)' if arguments.nats_cluster else '1 nats-server'}, "
        f"{published} publishes at {arguments.rate:g}/s, jitter {arguments.jitter_ms:g} ms",
        f"back with no gap: {len(back)} of {arguments.clients}"
        + (f"; not back within {arguments.timeout:g} s: {arguments.clients - len(back)}"
           if len(back) < arguments.clients else ""),
    ]
    if back:
        lines.append(
            f"failover ms: p50 {percentile(back, 0.5):.1f}, p99 {percentile(back, 0.99):.1f}, "
            f"max {max(back):.1f}")
    lines.append(
        f"gaps {sum(c.gaps for c in clients)}, duplicates {sum(c.duplicates for c in clients)}, "
        f"resets {sum(c.resets for c in clients)}, client errors {len(errors)}"
        + (f" (first: {errors[0]!r})" if errors else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
