#!/usr/bin/env python3
"""Records what real WebSocket clients send: their upgrade request and their masked frames.

The seeds of the upgrade, request reader and session targets start from these bytes rather than
from our own encoder. Run once per client; each connection writes CAPTURES/NAME.handshake (the
request head) and CAPTURES/NAME.frames (everything sent after it). NAME is the connection's path
without the slash, so each client connects to ws://HOST:PORT/NAME.

    capture-clients.py PORT CAPTURES

A plain GET of /page serves a page whose script sends the same messages a browser client of
ours would, then closes with 1000: point headless Chromium at it. Every other client is driven
by its own short script (see make-seeds.py's header for the commands used).
"""

import base64
import hashlib
import os
import socket
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAGE = b"""<!doctype html><script>
const socket = new WebSocket(`ws://${location.host}/chromium`);
socket.binaryType = "arraybuffer";
socket.onopen = () => {
  socket.send('{"op":"subscribe","topics":["AAPL","MSFT"],"since":{"AAPL":41}}');
  socket.send('{"op":"publish","topic":"AAPL","data":{"px":191.2,"note":"caf\\u00e9 \\u2603"}}');
  socket.send(new Uint8Array([0, 1, 2, 3, 255]).buffer);
  socket.send("x".repeat(200));
  socket.send("y".repeat(70000));
  socket.close(1000, "bye");
};
</script>"""


def read_head(connection):
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(4096)
        if not chunk:
            return None, b""
        received += chunk
    end = received.index(b"\r\n\r\n") + 4
    return received[:end], received[end:]


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip()
    return None


def serve(connection, captures):
    connection.settimeout(5)
    head, rest = read_head(connection)
    if head is None:
        return
    target = head.split(b" ")[1].decode()
    if header(head, b"upgrade") is None:
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(PAGE) + PAGE
        )
        connection.close()
        return
    name = target.strip("/").split("?")[0] or "root"
    accept = base64.b64encode(hashlib.sha1(header(head, b"sec-websocket-key") + GUID).digest())
    connection.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    frames = rest
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            frames += chunk
            # A client's close frame (opcode 8) ends the capture: answer it and stop.
            if close_seen(frames):
                connection.sendall(b"\x88\x02\x03\xe8")
                break
    except socket.timeout:
        pass
    with open(os.path.join(captures, name + ".handshake"), "wb") as out:
        out.write(head)
    with open(os.path.join(captures, name + ".frames"), "wb") as out:
        out.write(frames)
    connection.close()
    print("captured", name, len(head), "head bytes,", len(frames), "frame bytes", flush=True)


def close_seen(frames):
    position = 0
    while position + 2 <= len(frames):
        opcode = frames[position] & 0x0F
        length = frames[position + 1] & 0x7F
        head = 2
        if length == 126:
            head, length = 4, int.from_bytes(frames[position + 2 : position + 4], "big")
        elif length == 127:
            head, length = 10, int.from_bytes(frames[position + 2 : position + 10], "big")
        head += 4 if frames[position + 1] & 0x80 else 0
        if position + head + length > len(frames):
            return False
        if opcode == 8:
            return True
        position += head + length
    return False


def main():
    port, captures = int(sys.argv[1]), sys.argv[2]
    os.makedirs(captures, exist_ok=True)
    listener = socket.create_server(("127.0.0.1", port))
    print("listening on", port, flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, captures), daemon=True).start()


if __name__ == "__main__":
    main()
