#!/usr/bin/env node
// Checks ringcast's echo mode with Node `ws` as a strict client.
//
// Usage: node node_client.js ws://HOST:PORT/PATH
//        node node_client.js wss://HOST:PORT/PATH CA_FILE
//
// Over wss://, Node's TLS (OpenSSL) verifies the server's certificate against CA_FILE and the
// host name, so the run also checks ringcast's TLS from an independent implementation.
//
// ws validates every frame the server sends (masking, reserved bits, opcodes, lengths, UTF-8,
// close codes) and emits 'error' on any violation, so a clean run here means ringcast's output
// is well formed. Exits 0 when every check passes, 1 with a message on stderr when one fails,
// 2 on bad usage or a missing module.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');

let WebSocket;
try {
  WebSocket = require('ws');
} catch (error) {
  console.error(
    `node_client: cannot load ws (${error.code}); run tests/run-all, which runs npm ci in ` +
      'tests/interop'
  );
  process.exit(2);
}

// Every wait is bounded, so that a server that stops answering fails the run instead of
// hanging it.
const TIMEOUT_MS = 10000;
// Far larger than one 4 KiB receive buffer, so that the echo crosses many reads on both sides.
const LARGE_MESSAGE_BYTES = 3 * 1024 * 1024;

class CheckFailed extends Error {}

function check(condition, description) {
  if (!condition) throw new CheckFailed(description);
}

// Turns the socket's events into awaitable steps. An 'error' (ws's report of a protocol
// violation by the server, named by its code such as WS_ERR_INVALID_OPCODE) or an early 'close'
// rejects whatever is awaited next.
class Client {
  constructor(url, caFile) {
    const options = { handshakeTimeout: TIMEOUT_MS };
    if (caFile !== undefined) options.ca = fs.readFileSync(caFile);
    this.socket = new WebSocket(url, options);
    this.events = [];
    this.waiters = [];
    this.error = null;
    this.socket.on('message', (data, isBinary) => {
      this.deliver({ kind: 'message', data, isBinary });
    });
    this.socket.on('pong', (data) => this.deliver({ kind: 'pong', data }));
    this.socket.on('close', (code, reason) => {
      this.deliver({ kind: 'close', code, reason: reason.toString() });
    });
    this.socket.on('error', (error) => {
      const code = error.code ? ` [${error.code}]` : '';
      if (this.error === null) this.error = new Error(`ws reported: ${error.message}${code}`);
      this.wake();
    });
  }

  deliver(event) {
    this.events.push(event);
    this.wake();
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  // Resolves with the next event if it is of `kind`; rejects with ws's error if one came, or
  // when the next event is of another kind.
  next(kind, description) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new CheckFailed(`${description}: no ${kind} within ${TIMEOUT_MS} ms`));
      }, TIMEOUT_MS);
      const settle = (outcome, value) => {
        clearTimeout(timer);
        outcome(value);
      };
      const poll = () => {
        const event = this.events[0];
        if (this.error !== null) {
          settle(reject, this.error);
        } else if (event === undefined) {
          this.waiters.push(poll);
        } else if (event.kind === kind) {
          settle(resolve, this.events.shift());
        } else if (event.kind === 'close') {
          const reason = `${description}: the server closed with ${event.code} ${event.reason}`;
          settle(reject, new CheckFailed(reason));
        } else {
          settle(reject, new CheckFailed(`${description}: expected ${kind}, got ${event.kind}`));
        }
      };
      poll();
    });
  }
}

async function expectEcho(client, sent, isBinary, description) {
  const { data, isBinary: receivedBinary } = await client.next('message', description);
  check(receivedBinary === isBinary, `${description}: echo came back with the other opcode`);
  const expected = Buffer.from(sent);
  check(
    expected.equals(data),
    `${description}: echo differs (sent ${expected.length} bytes, received ${data.length})`
  );
}

async function checkMessages(client) {
  const socket = client.socket;
  socket.send('hello ringcast');
  await expectEcho(client, 'hello ringcast', false, 'text');

  const binary = Buffer.alloc(1024, 0).map((_, index) => index % 256);
  socket.send(binary);
  await expectEcho(client, binary, true, 'binary');

  // Text in three frames, with the euro sign's three bytes split across the first two.
  const euro = Buffer.from('€');
  socket.send(Buffer.concat([Buffer.from('fragmented '), euro.subarray(0, 1)]), {
    binary: false,
    fin: false,
  });
  socket.send(Buffer.concat([euro.subarray(1), Buffer.from(' across')]), { fin: false });
  socket.send(Buffer.from(' frames!'), { fin: true });
  await expectEcho(client, 'fragmented € across frames!', false, 'fragmented text');

  socket.send(Buffer.from([0, 1]), { binary: true, fin: false });
  socket.send(Buffer.from([0xfe, 0xff]), { fin: true });
  await expectEcho(client, Buffer.from([0, 1, 0xfe, 0xff]), true, 'fragmented binary');

  const multiByte = 'ünïcödé € 日本語 𝄞 🚀';
  socket.send(multiByte);
  await expectEcho(client, multiByte, false, 'multi-byte UTF-8 text');

  const large = crypto.randomBytes(LARGE_MESSAGE_BYTES);
  socket.send(large);
  await expectEcho(client, large, true, '3 MiB binary');
}

async function checkPing(client) {
  const payload = Buffer.from('ringcast-ping');
  client.socket.ping(payload);
  const { data } = await client.next('pong', 'ping');
  check(payload.equals(data), `the pong carries ${JSON.stringify(data.toString())}`);
}

async function checkClose(client) {
  client.socket.close(1000, 'done');
  const { code } = await client.next('close', 'close');
  // ws reports 1006 when the connection ended without a close frame from the server, and
  // 1005 when the frame carried no code.
  check(code === 1000, `the server closed with ${code}, not 1000`);
  check(client.socket.readyState === WebSocket.CLOSED, 'the socket is not CLOSED');
}

async function main() {
  if (process.argv.length !== 3 && process.argv.length !== 4) {
    console.error('usage: node node_client.js ws://HOST:PORT/PATH | wss://HOST:PORT/PATH CA_FILE');
    return 2;
  }
  const client = new Client(process.argv[2], process.argv[3]);
  await new Promise((resolve, reject) => {
    client.socket.once('open', resolve);
    client.socket.once('error', reject);
  });
  await checkMessages(client);
  await checkPing(client);
  await checkClose(client);
  console.log('node_client: all checks passed');
  return 0;
}

main().then(
  (status) => process.exit(status),
  (error) => {
    console.error(`node_client: FAILED: ${error.message}`);
    process.exit(1);
  }
);
