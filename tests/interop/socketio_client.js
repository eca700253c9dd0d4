// The npm `socket.io-client` (the official client, as apps ship it) against ringcast's
// Socket.IO endpoint: it connects over the given transport, subscribes to a topic, publishes
// MESSAGES messages one after the other with acknowledgements, and must receive each as a
// `message` event, in order, with the seq its acknowledgement named. A namespace other than
// `/` must be refused with connect_error, and a bad request refused in its acknowledgement.
// TRANSPORT is `websocket` or `polling` (that transport only), or `default`: the client's
// own choice, long polling first and then the upgrade to WebSocket, which happens while the
// subscription and the first publishes are under way and must be over by the end.
//
// Usage: node socketio_client.js HOST:PORT TRANSPORT MESSAGES
"use strict";

const { io } = require("socket.io-client");

const [address, transport, messagesText] = process.argv.slice(2);
const messages = Number(messagesText);
const url = `http://${address}`;
const topic = `sio.${transport}`;
const deadline = setTimeout(() => fail("no completion within 100 s"), 100_000);

function fail(reason) {
  console.error(`socketio_client: FAILED: ${reason}`);
  process.exit(1);
}

function check(condition, reason) {
  if (!condition) fail(reason);
}

const options = { reconnection: false, timeout: 10_000 };
if (transport !== "default") options.transports = [transport];

async function main() {
  const socket = io(url, options);
  let opened = null;
  socket.io.once("open", () => {
    opened = socket.io.engine.transport.name;
  });
  socket.on("connect_error", (error) => fail(`connect_error on /: ${error.message}`));
  socket.on("disconnect", (reason) => {
    if (!finished) fail(`disconnected: ${reason}`);
  });
  let finished = false;
  const received = [];
  let subscribed = null;
  socket.on("subscribed", (body) => {
    subscribed = body;
  });
  socket.on("message", (message) => received.push(message));
  await new Promise((resolve) => socket.once("connect", resolve));
  check(typeof socket.id === "string" && socket.id.length > 0, "no socket id");
  const first = transport === "default" ? "polling" : transport;
  check(opened === first, `opened on ${opened}`);

  const subscribeAck = await socket.timeout(10_000).emitWithAck("subscribe", { topics: [topic] });
  check(subscribeAck === undefined, `subscribe ack ${JSON.stringify(subscribeAck)}`);
  await waitFor(() => subscribed !== null, "the subscribed event");
  check(subscribed.op === "subscribed" && subscribed.topic === topic, JSON.stringify(subscribed));

  const seqs = [];
  for (let index = 0; index < messages; index++) {
    const ack = await socket
      .timeout(10_000)
      .emitWithAck("publish", { topic, data: { index, text: "ünïcödé ✓" } });
    check(ack && ack.op === "published" && Number.isInteger(ack.seq), JSON.stringify(ack));
    seqs.push(ack.seq);
  }
  await waitFor(() => received.length >= messages, `${messages} messages`);
  received.forEach((message, index) => {
    check(message.topic === topic, `topic of ${JSON.stringify(message)}`);
    check(message.data.index === index, `order: ${JSON.stringify(message)} at ${index}`);
    check(message.data.text === "ünïcödé ✓", `data: ${JSON.stringify(message)}`);
    check(message.seq === seqs[index], `seq ${message.seq} but acknowledged ${seqs[index]}`);
  });

  const last = transport === "default" ? "websocket" : transport;
  await waitFor(() => socket.io.engine.transport.name === last, `the ${last} transport`);

  const refused = await socket.timeout(10_000).emitWithAck("subscribe", { topics: [""] });
  check(refused && refused.op === "error", `bad subscribe ack ${JSON.stringify(refused)}`);

  const custom = io(`${url}/custom`, options);
  const error = await new Promise((resolve) => custom.once("connect_error", resolve));
  check(error.message === "Invalid namespace", `custom: ${error.message}`);
  custom.close();

  finished = true;
  socket.close();
  clearTimeout(deadline);
  console.log(`socketio_client: ${transport}: ${messages} messages in order, acks and refusals`);
}

function waitFor(condition, what) {
  return new Promise((resolve) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (condition()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > 20_000) {
        fail(`waited 20 s for ${what}`);
      }
    }, 5);
  });
}

main().catch((error) => fail(error.stack || String(error)));
