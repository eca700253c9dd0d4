// The npm `eventsource` package (a WHATWG-compliant EventSource: it reconnects by itself and
// sends the last event id back as Last-Event-ID) reads a ringcast SSE stream of several topics
// through a TCP proxy that this script cuts several times mid-stream while messages are
// published. Passes when every topic's seqs 1..N arrived exactly once and in order, and every
// reconnect carried Last-Event-ID.
//
// Usage: node eventsource_client.js HOST:PORT MESSAGES_PER_TOPIC CUTS
"use strict";

const net = require("node:net");
const { EventSource } = require("eventsource");

const [address, messagesText, cutsText] = process.argv.slice(2);
const [host, portText] = address.split(":");
const messagesPerTopic = Number(messagesText);
const cuts = Number(cutsText);
const topics = ["AAPL", "MSFT", "EUR/USD", "BTC-USD"];
const deadline = setTimeout(() => fail("no completion within 100 s"), 100_000);

function fail(reason) {
  console.error(`eventsource_client: FAILED: ${reason}`);
  process.exit(1);
}

// The proxy: every client connection is piped to the server; `cut()` destroys them all.
const open = new Set();
const requestHeads = [];
const proxy = net.createServer((client) => {
  const upstream = net.connect(Number(portText), host);
  open.add(client);
  open.add(upstream);
  let head = "";
  client.on("data", (chunk) => {
    if (!head.includes("\r\n\r\n")) {
      head += chunk.toString("latin1");
      if (head.includes("\r\n\r\n")) requestHeads.push(head);
    }
  });
  client.pipe(upstream);
  upstream.pipe(client);
  const close = () => {
    open.delete(client);
    open.delete(upstream);
    client.destroy();
    upstream.destroy();
  };
  client.on("error", close).on("close", close);
  upstream.on("error", close).on("close", close);
});

function cut() {
  for (const socket of open) socket.destroy();
}

const received = new Map(topics.map((topic) => [topic, []]));
let total = 0;
let subscribedEvents = 0;

async function publish(topic, number) {
  const url = `http://${address}/publish/${encodeURIComponent(topic)}`;
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ n: number }),
  });
  if (response.status !== 200) fail(`publish answered ${response.status}`);
}

function check() {
  for (const [topic, seqs] of received) {
    for (let index = 0; index < seqs.length; index++) {
      if (seqs[index] !== index + 1) {
        fail(`${topic}: seq ${seqs[index]} at position ${index + 1} (${seqs.join(",")})`);
      }
    }
  }
}

proxy.listen(0, "127.0.0.1", () => {
  const query = topics.map(encodeURIComponent).join(",");
  const source = new EventSource(`http://127.0.0.1:${proxy.address().port}/sse?topics=${query}`);
  let started = false;
  source.addEventListener("subscribed", () => {
    subscribedEvents += 1;
    if (subscribedEvents === topics.length && !started) {
      started = true;
      run().catch((error) => fail(error.stack));
    }
  });
  source.addEventListener("reset", (event) => fail(`unexpected reset: ${event.data}`));
  source.addEventListener("error", () => {}); // A cut: EventSource reconnects by itself.
  source.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.data.n !== message.seq) fail(`seq ${message.seq} carries n ${message.data.n}`);
    received.get(message.topic).push(message.seq);
    total += 1;
    check();
    if (total === messagesPerTopic * topics.length) finish(source);
  };
});

// Publishes every topic's messages in rounds, cutting the proxy `cuts` times along the way.
async function run() {
  const cutEvery = Math.floor(messagesPerTopic / (cuts + 1));
  for (let number = 1; number <= messagesPerTopic; number++) {
    for (const topic of topics) await publish(topic, number);
    if (number % cutEvery === 0 && number / cutEvery <= cuts) cut();
    if (number % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function finish(source) {
  source.close();
  clearTimeout(deadline);
  const reconnects = requestHeads.slice(1);
  if (reconnects.length < cuts) fail(`${reconnects.length} reconnects for ${cuts} cuts`);
  const withoutId = reconnects.filter((head) => !/\r\nlast-event-id: \S/i.test(head));
  if (withoutId.length > 0) fail(`a reconnect without Last-Event-ID:\n${withoutId[0]}`);
  console.log(
    `eventsource_client: ${total} messages, every seq once and in order over ` +
      `${reconnects.length} reconnects with Last-Event-ID`,
  );
  proxy.close();
  process.exit(0);
}
