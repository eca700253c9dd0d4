// Real Chromium (Debian's, headless, driven by puppeteer-core) opens the ringcast board, which
// uses clients/js/ringcast.js, and checks what a person would see and what the client promises.
//
// Usage: node browser_client.js SCENARIO HOST:PORT [SCREENSHOT]
//   board     the board loads from ringcast (--demo), shows prices and updates them; with
//             SCREENSHOT, a picture of it is saved there
//   cut       through a TCP proxy that this script takes down (listener closed, every
//             connection cut) and brings back while messages are published, three times: the
//             page's record of seqs per topic has no gap and no duplicate
//   fallback  the server refuses WebSocket (websocket_enabled = false): the client reads over
//             SSE; then the proxy refuses /sse too and cuts: the client falls back to long
//             polling; every seq arrives once and in order throughout
//   deflate   the server negotiates permessage-deflate (--websocket-compression): a WebSocket
//             the page opens has it in `extensions` with both no-context-takeover parameters,
//             and a 4 KB publish over it comes back (compressed by the server) as the same
//             JSON
// Passes (exit 0) when the scenario's checks hold; prints why otherwise.
"use strict";

const net = require("node:net");
const puppeteer = require("puppeteer-core");

const [scenario, address, screenshot] = process.argv.slice(2);
const CHROMIUM = process.env.RINGCAST_CHROMIUM ?? "/usr/bin/chromium";
const TOPICS = ["AAPL", "MSFT", "EUR/USD", "BTC-USD"];
// A hang guard, not a speed check: far beyond a run on a loaded two-core machine.
const deadline = setTimeout(() => fail("no completion within 300 s"), 300_000);
let browser = null;

function fail(reason) {
  console.error(`browser_client ${scenario}: FAILED: ${reason}`);
  browser?.process()?.kill("SIGKILL");
  process.exit(1);
}

function sleep(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/** Polls `predicate` (async) every 50 ms until it holds; fails with `what` after `limitMs`. */
async function waitFor(what, predicate, limitMs = 120_000) {
  const started = Date.now();
  while (!(await predicate())) {
    if (Date.now() - started > limitMs) fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A TCP proxy to the server that can be taken down and brought back on the same port, and
 * that can refuse requests whose path starts with a prefix (a proxy that breaks a transport). */
class Proxy {
  constructor() {
    this.open = new Set();
    this.refusedPrefix = null;
    this.server = null;
    this.port = 0;
  }

  async start() {
    this.server = net.createServer((client) => this.pipe(client));
    await new Promise((resolve) => this.server.listen(this.port, "127.0.0.1", resolve));
    this.port = this.server.address().port;
  }

  pipe(client) {
    const [host, port] = address.split(":");
    // Every socket is tracked from the start: one that never sent a request (a browser's
    // spare connection) must be cut too, or closing the listener waits for it.
    this.open.add(client);
    client.on("close", () => this.open.delete(client));
    let head = "";
    const onData = (chunk) => {
      head += chunk.toString("latin1");
      if (!head.includes("\r\n")) return;
      client.off("data", onData);
      const path = head.split(" ")[1] ?? "";
      if (this.refusedPrefix !== null && path.startsWith(this.refusedPrefix)) {
        client.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = net.connect(Number(port), host);
      this.open.add(upstream);
      upstream.write(Buffer.from(head, "latin1"));
      client.pipe(upstream);
      upstream.pipe(client);
      const close = () => {
        this.open.delete(client);
        this.open.delete(upstream);
        client.destroy();
        upstream.destroy();
      };
      upstream.on("error", close).on("close", close);
      client.on("error", close).on("close", close);
    };
    client.on("data", onData);
    client.on("error", () => client.destroy());
  }

  /** Cuts every connection and stops listening. */
  async down() {
    const closed = new Promise((resolve) => this.server.close(resolve));
    for (const socket of this.open) socket.destroy();
    await closed;
  }

  cut() {
    for (const socket of this.open) socket.destroy();
  }
}

async function publish(topic, number) {
  const url = `http://${address}/publish/${encodeURIComponent(topic)}`;
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ n: number }),
  });
  if (response.status !== 200) fail(`publish answered ${response.status}`);
  const { seq } = await response.json();
  if (seq !== number) fail(`${topic}: publish ${number} got seq ${seq}`);
}

async function publishRange(first, last) {
  for (let number = first; number <= last; number++) {
    for (const topic of TOPICS) await publish(topic, number);
    if (number % 10 === 0) await sleep(5);
  }
}

async function openPage(origin, query) {
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage();
  page.on("pageerror", (error) => fail(`page error: ${error.message}`));
  await page.setViewport({ width: 1280, height: 800 });
  await page.goto(`${origin}/${query}`);
  return page;
}

/** The page's seqs of every topic, checked: 1..count with no gap and no duplicate. */
async function checkSeqs(page, count) {
  const seqs = await page.evaluate(() => window.board.seqs);
  for (const topic of TOPICS) {
    const got = seqs[topic] ?? [];
    for (let index = 0; index < got.length; index++) {
      if (got[index] !== index + 1) {
        fail(`${topic}: seq ${got[index]} at position ${index + 1}: ${got.join(",")}`);
      }
    }
    if (got.length > count) fail(`${topic}: ${got.length} messages for ${count} published`);
  }
  return TOPICS.every((topic) => (seqs[topic] ?? []).length === count);
}

async function subscribedToAll(page) {
  return page.evaluate((count) => window.board.client?.positions.size === count, TOPICS.length);
}

async function states(page) {
  return page.evaluate(() => window.board.states);
}

const started = Date.now();
function log(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
}

async function board() {
  const page = await openPage(`http://${address}`, "");
  await waitFor("the connection to open", async () => (await states(page)).includes("open:websocket"));
  const price = () => page.$eval('.tile[data-symbol="AAPL"] .price', (element) => element.textContent);
  await waitFor("AAPL's first price", async () => /^\d+\.\d\d$/.test(await price()));
  const first = await price();
  await waitFor("AAPL's price to change", async () => (await price()) !== first);
  const tiles = await page.$$eval(".tile", (elements) => elements.length);
  if (tiles < 500) fail(`${tiles} tiles for the demo's 500 symbols`);
  const rate = await page.$eval("#rate", (element) => Number(element.textContent));
  if (screenshot) {
    await sleep(1500);
    await page.screenshot({ path: screenshot });
  }
  return `${tiles} tiles, AAPL ${first} → ${await price()}, ${rate} messages/s`;
}

async function cut() {
  const proxy = new Proxy();
  await proxy.start();
  const page = await openPage(`http://127.0.0.1:${proxy.port}`, `?symbols=${TOPICS.map(encodeURIComponent).join(",")}&record=1`);
  await waitFor("the subscriptions", () => subscribedToAll(page));
  const perRound = 50;
  const rounds = 4;
  for (let round = 0; round < rounds; round++) {
    await publishRange(round * perRound + 1, round * perRound + perRound / 2);
    if (round < rounds - 1) {
      log(`round ${round}: taking the proxy down`);
      await proxy.down(); // The server's listener is gone: connections cut, new ones refused.
      log(`round ${round}: down`);
      await publishRange(round * perRound + perRound / 2 + 1, (round + 1) * perRound);
      await sleep(700);
      await proxy.start();
      // The page comes back by itself, after its backoff.
      const opens = async () => (await states(page)).filter((state) => state === "open:websocket");
      await waitFor("the page to reconnect", async () => (await opens()).length === round + 2);
      log(`round ${round}: reconnected`);
    } else {
      await publishRange(round * perRound + perRound / 2 + 1, (round + 1) * perRound);
    }
  }
  await waitFor("every seq", () => checkSeqs(page, perRound * rounds));
  const seen = await states(page);
  const reconnects = seen.filter((state) => state === "open:websocket").length - 1;
  if (reconnects < rounds - 1) fail(`${reconnects} reconnects for ${rounds - 1} outages: ${seen}`);
  const resets = await page.evaluate(() => window.board.resets.length);
  if (resets !== 0) fail(`${resets} resets: history should have served every gap`);
  return `${perRound * rounds} messages per topic, every seq once and in order over ${reconnects} reconnects`;
}

async function fallback() {
  const proxy = new Proxy();
  await proxy.start();
  const page = await openPage(`http://127.0.0.1:${proxy.port}`, `?symbols=${TOPICS.map(encodeURIComponent).join(",")}&record=1`);
  await waitFor("SSE to open", async () => (await states(page)).includes("open:sse"));
  await waitFor("the subscriptions", () => subscribedToAll(page));
  await publishRange(1, 60);
  await waitFor("the first 60 seqs over SSE", () => checkSeqs(page, 60));
  proxy.refusedPrefix = "/sse"; // Now the proxy breaks SSE too.
  proxy.cut();
  await publishRange(61, 120);
  await waitFor("polling to open", async () => (await states(page)).includes("open:poll"));
  await publishRange(121, 160);
  proxy.cut(); // A held poll cut: the next one resumes where the page stands.
  await publishRange(161, 200);
  await waitFor("every seq", () => checkSeqs(page, 200));
  const seen = await states(page);
  return `every seq once and in order over ${seen.join(" → ")}`;
}

async function deflate() {
  const page = await openPage(`http://${address}`, "");
  const result = await page.evaluate(async () => {
    const socket = new WebSocket(`ws://${location.host}/ws`);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error("the WebSocket did not open"));
    });
    const messages = [];
    const waiting = [];
    socket.onmessage = (event) => {
      messages.push(JSON.parse(event.data));
      for (const wake of waiting.splice(0)) wake();
    };
    const next = async (predicate) => {
      for (;;) {
        const found = messages.find(predicate);
        if (found) return found;
        await new Promise((resolve) => waiting.push(resolve));
      }
    };
    socket.send(JSON.stringify({ op: "subscribe", topics: ["DEFLATE"] }));
    await next((message) => message.op === "subscribed");
    const data = { quotes: Array.from({ length: 150 }, (_, index) => ({ bid: `189.${index}`, size: 100 })) };
    socket.send(JSON.stringify({ op: "publish", topic: "DEFLATE", data }));
    const delivered = await next((message) => message.topic === "DEFLATE" && message.seq === 1);
    socket.close(1000);
    return { extensions: socket.extensions, same: JSON.stringify(delivered.data) === JSON.stringify(data),
      bytes: JSON.stringify(data).length };
  });
  const { extensions, same, bytes } = result;
  if (!extensions.startsWith("permessage-deflate")) fail(`extensions ${JSON.stringify(extensions)}`);
  for (const parameter of ["server_no_context_takeover", "client_no_context_takeover"]) {
    if (!extensions.includes(parameter)) fail(`no ${parameter} in ${extensions}`);
  }
  if (!same) fail("the delivered data differs from what was published");
  return `extensions "${extensions}", a ${bytes}-byte publish came back intact`;
}

const scenarios = { board, cut, fallback, deflate };
if (!(scenario in scenarios)) fail(`unknown scenario ${scenario}`);
scenarios[scenario]()
  .then(async (summary) => {
    clearTimeout(deadline);
    await browser?.close();
    console.log(`browser_client ${scenario}: ${summary}`);
    process.exit(0);
  })
  .catch((error) => fail(error.stack));
