// The npm `socket.io-client` recovers its session through ringcast's connection-state
// recovery: a subscriber reaches the server through a TCP proxy that this script cuts several
// times while another client publishes. socket.io-client reconnects by itself and sends back
// the `pid` and the last offset it was given; the server must answer with the same `pid`
// (socket.recovered) and resume the topic from where the subscriber stood, so that every
// published seq arrives, in order, with no gap (a message that arrived after the last offset
// may come again: it is dropped by its seq, as the README tells clients to do).
//
// TRANSPORT (optional) is `websocket` (the default), `polling` (long polling only: a cut
// destroys the held GET, and the proxy refuses connections for a moment so that a client
// between two polls meets the cut too) or `default`: the client's own choice, long polling
// first then the upgrade, on every reconnect too.
//
// Usage: node socketio_recovery.js HOST:PORT MESSAGES CUTS [TRANSPORT]
"use strict";

const net = require("node:net");
const { io } = require("socket.io-client");

const [address, messagesText, cutsText, transportText] = process.argv.slice(2);
const transportName = transportText ?? "websocket";
const transportChoices = { websocket: ["websocket"], polling: ["polling"], default: undefined };
if (!(transportName in transportChoices)) {
  console.error(`socketio_recovery: unknown transport ${transportName}`);
  process.exit(2);
}
const transports = transportChoices[transportName];
const pollingOnly = transportName === "polling";
const [host, portText] = address.split(":");
const messages = Number(messagesText);
const cuts = Number(cutsText);
const topic = "sio.recovery";
const deadline = setTimeout(() => fail("no completion within 100 s"), 100_000);

function fail(reason) {
  console.error(`socketio_recovery: FAILED: ${reason}`);
  process.exit(1);
}

function check(condition, reason) {
  if (!condition) fail(reason);
}

// The proxy: every client connection is piped to the server; `cut()` destroys them all,
// and while `refusing` it destroys new ones as they come.
const open = new Set();
let refusing = false;
const proxy = net.createServer((client) => {
  if (refusing) {
    client.destroy();
    return;
  }
  const upstream = net.connect(Number(portText), host);
  open.add(client);
  open.add(upstream);
  client.on("error", () => {});
  upstream.on("error", () => {});
  client.on("close", () => {
    open.delete(client);
    upstream.destroy();
  });
  upstream.on("close", () => {
    open.delete(upstream);
    client.destroy();
  });
  client.pipe(upstream);
  upstream.pipe(client);
});

function cut() {
  for (const socket of open) socket.destroy();
  if (pollingOnly) {
    refusing = true;
    setTimeout(() => {
      refusing = false;
    }, 150);
  }
}

function waitFor(condition, what) {
  return new Promise((resolve) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (condition()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > 30_000) {
        fail(`waited 30 s for ${what}`);
      }
    }, 5);
  });
}

async function main() {
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
  const subscriber = io(proxyUrl, {
    transports,
    reconnectionDelay: 50,
    reconnectionDelayMax: 200,
    randomizationFactor: 0,
  });
  const seqs = [];
  let connects = 0;
  let recoveries = 0;
  let subscribed = false;
  subscriber.on("connect", () => {
    connects += 1;
    if (connects > 1) {
      check(subscriber.recovered, `reconnect ${connects - 1} was not recovered`);
      recoveries += 1;
    }
  });
  subscriber.on("subscribed", () => {
    subscribed = true;
  });
  subscriber.on("message", (message) => {
    const last = seqs.length ? seqs[seqs.length - 1] : 0;
    if (message.seq <= last) return; // Again after a cut: already taken.
    check(seqs.length === 0 || message.seq === last + 1, `gap: ${last} then ${message.seq}`);
    seqs.push(message.seq);
  });
  await waitFor(() => connects === 1, "the first connect");
  subscriber.emit("subscribe", { topics: [topic] });
  await waitFor(() => subscribed, "subscribed");

  const publisher = io(`http://${address}`, { transports: ["websocket"], reconnection: false });
  await new Promise((resolve) => publisher.once("connect", resolve));
  const published = [];
  const cutEvery = Math.floor(messages / (cuts + 1));
  let cutsDone = 0;
  for (let index = 0; index < messages; index++) {
    const ack = await publisher.timeout(10_000).emitWithAck("publish", { topic, data: { index } });
    check(ack && ack.op === "published", JSON.stringify(ack));
    published.push(ack.seq);
    if (cutsDone < cuts && index > 0 && index % cutEvery === 0) {
      // Publishing goes on while the subscriber is away: what it misses must be replayed.
      await waitFor(() => subscriber.connected, "the subscriber back before the next cut");
      // With the default transports, the cut falls on the WebSocket the client upgraded to
      // (and its reconnect, recovery included, goes through long polling again). Cut while it
      // polls, it might hold no connection at that instant and not notice the cut at all.
      await waitFor(
        () => transports !== undefined || subscriber.io.engine.transport.name === "websocket",
        "the subscriber upgraded before the next cut",
      );
      cutsDone += 1;
      cut();
    }
  }
  const last = published[published.length - 1];
  await waitFor(() => seqs.length && seqs[seqs.length - 1] === last, `seq ${last}`);
  check(seqs[0] === published[0], `first seq ${seqs[0]}, published ${published[0]}`);
  check(seqs.length === messages, `${seqs.length} of ${messages} messages`);
  check(recoveries === cuts, `${recoveries} recoveries for ${cuts} cuts`);
  subscriber.close();
  publisher.close();
  proxy.close();
  clearTimeout(deadline);
  console.log(`socketio_recovery: ${messages} messages, ${cuts} cuts, every one recovered`);
  // A long-polling client's last GET may still be held through the proxy (the server ends
  // it with its next ping): the result is in, so nothing is waited for.
  process.exit(0);
}

main().catch((error) => fail(error.stack || String(error)));
