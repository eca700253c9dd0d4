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
//   upgrade   the proxy refuses /ws: the client reads over SSE; then the proxy lets WebSocket
//             through: the client's probe moves it back to WebSocket by itself, every seq once
//             and in order across the switch
//   token     the server needs a JWT (RINGCAST_JWT_HS256_SECRET, given to this script too) and
//             grants no grace: a WebSocket client's first token expires, the server closes 4001,
//             the client asks the page for a new token and resumes; an SSE client's stream ends
//             with `expired` and it does the same; every seq once and in order for both
//   restart   this script runs the server (RINGCAST_BINARY) itself and restarts it: a WebSocket
//             client sees close 1001; it and a polling client reconnect by themselves and get a
//             `reset` for each topic (a new server is a new epoch), then every new seq in order
//   socketio  the board with `?transport=socketio` connects through the npm socket.io-client
//             (its bundle served to the page by this script, as a deployment would serve it)
//             behind a proxy: it subscribes (and to one more symbol from its search box),
//             publishes with acknowledgement and shows the prices; then the proxy is taken down
//             and brought back three times while messages are published, and the page has every
//             seq once and in order, each reconnect recovered by socket.io-client's
//             connection-state recovery, without a reset
//   deflate   the server negotiates permessage-deflate (--websocket-compression): a WebSocket
//             the page opens has it in `extensions` with both no-context-takeover parameters,
//             and a 4 KB publish over it comes back (compressed by the server) as the same
//             JSON
// Passes (exit 0) when the scenario's checks hold; prints why otherwise.
"use strict";

const net = require("node:net");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { spawn } = require("node:child_process");
const puppeteer = require("puppeteer-core");

const [scenario, addressGiven, screenshot] = process.argv.slice(2);
/** The server's HOST:PORT; the `restart` scenario runs its own server and sets it. */
let address = addressGiven;
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

/** The publishers' token in the `token` scenario (HS256, all topics, an hour). */
let publisherToken = null;

async function publish(topic, number, data = { n: number }) {
  const url = `http://${address}/publish/${encodeURIComponent(topic)}`;
  const headers = { "Content-Type": "application/json" };
  if (publisherToken !== null) headers.Authorization = `Bearer ${publisherToken}`;
  const response = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify(data),
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

/** Opens `origin/query` in a new page, after `prepare(page)` when given. */
async function openPage(origin, query, prepare = null) {
  browser ??= await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage();
  page.on("pageerror", (error) => fail(`page error: ${error.message}`));
  await page.setViewport({ width: 1280, height: 800 });
  await prepare?.(page);
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

async function upgrade() {
  const proxy = new Proxy();
  proxy.refusedPrefix = "/ws"; // A proxy that breaks WebSocket.
  await proxy.start();
  const page = await openPage(`http://127.0.0.1:${proxy.port}`, `?symbols=${TOPICS.map(encodeURIComponent).join(",")}&record=1`);
  await waitFor("SSE to open", async () => (await states(page)).includes("open:sse"));
  await waitFor("the subscriptions", () => subscribedToAll(page));
  await publishRange(1, 60);
  await waitFor("the first 60 seqs over SSE", () => checkSeqs(page, 60));
  proxy.refusedPrefix = null; // The proxy is fixed: nothing tells the page.
  log("WebSocket let through");
  let published = 60;
  // Publish while the page probes, so that the switch happens with messages in flight.
  while (!(await states(page)).includes("open:websocket")) {
    if (published >= 2000) fail(`no switch back to WebSocket: ${(await states(page)).join(" → ")}`);
    await publishRange(published + 1, published + 10);
    published += 10;
    await sleep(500);
  }
  log(`on WebSocket after ${published} seqs`);
  await publishRange(published + 1, published + 40);
  published += 40;
  await waitFor("every seq", () => checkSeqs(page, published));
  const seen = await states(page);
  if (seen.at(-1) !== "open:websocket") fail(`ended on ${seen.at(-1)}: ${seen.join(" → ")}`);
  return `${published} seqs per topic once and in order over ${seen.join(" → ")}`;
}

/** socket.io-client's browser bundle, from the committed lockfile's install. */
const SOCKETIO_BUNDLE = path.join(__dirname, "node_modules/socket.io-client/dist/socket.io.min.js");

/** Answers the page's request for `/socket.io.min.js` (the board's default path for the
 * bundle) with socket.io-client's, as a deployment serving the file there would; every other
 * request goes on to the server. */
async function serveSocketIoBundle(page) {
  const bundle = fs.readFileSync(SOCKETIO_BUNDLE);
  await page.setRequestInterception(true);
  page.on("request", (request) => {
    if (new URL(request.url()).pathname !== "/socket.io.min.js") return request.continue();
    return request.respond({ status: 200, contentType: "text/javascript", body: bundle });
  });
}

async function tilePrice(page, topic) {
  return page.$eval(`.tile[data-symbol="${topic}"] .price`, (element) => element.textContent);
}

/** Publishes `{px}` to every topic through the board's client; each must be acknowledged
 * with `seq` and its price shown on its tile. */
async function publishFromBoard(page, seq) {
  for (const [index, topic] of TOPICS.entries()) {
    const px = 100 + index + seq / 100;
    const acknowledged = await page.evaluate(
      (topic, px) => window.board.client.publish(topic, { px }),
      topic,
      px,
    );
    if (acknowledged !== seq) fail(`${topic}: the board's publish acknowledged seq ${acknowledged}, not ${seq}`);
    await waitFor(`${topic}'s tile to show ${px}`, async () => (await tilePrice(page, topic)) === px.toFixed(2));
  }
}

async function socketio() {
  const proxy = new Proxy();
  await proxy.start();
  const query = `?transport=socketio&symbols=${TOPICS.map(encodeURIComponent).join(",")}&record=1`;
  const page = await openPage(`http://127.0.0.1:${proxy.port}`, query, serveSocketIoBundle);
  const opens = async () => (await states(page)).filter((state) => state === "open:socket.io");
  await waitFor("socket.io-client to connect", async () => (await opens()).length === 1);
  await waitFor("the subscriptions", () => subscribedToAll(page));
  await publishFromBoard(page, 1);
  // One more symbol from the search box, as a person would add it.
  await page.type("#search", "NVDA");
  await page.keyboard.press("Enter");
  await waitFor("NVDA's subscription", () => page.evaluate(() => window.board.client.positions.has("NVDA")));
  await publish("NVDA", 1, { px: 812.5 });
  await waitFor("NVDA's tile to show its price", async () => (await tilePrice(page, "NVDA")) === "812.50");
  const perRound = 50;
  const rounds = 4;
  for (let round = 0; round < rounds; round++) {
    // Seq 1 of each topic came from the board.
    await publishRange(Math.max(2, round * perRound + 1), round * perRound + perRound / 2);
    if (round === rounds - 1) break;
    const transport = await page.$eval("#transport", (element) => element.textContent);
    log(`round ${round}: taking the proxy down (the page is on ${transport})`);
    await proxy.down(); // Connections cut, new ones refused.
    await publishRange(round * perRound + perRound / 2 + 1, (round + 1) * perRound);
    await sleep(700);
    await proxy.start();
    // socket.io-client comes back by itself, after its backoff.
    await waitFor("the page to reconnect", async () => (await opens()).length === round + 2);
    log(`round ${round}: reconnected`);
  }
  await publishRange((rounds - 1) * perRound + perRound / 2 + 1, rounds * perRound);
  await publishFromBoard(page, rounds * perRound + 1);
  await waitFor("every seq", () => checkSeqs(page, rounds * perRound + 1));
  const reconnects = (await opens()).length - 1;
  if (reconnects !== rounds - 1) fail(`${reconnects} reconnects for ${rounds - 1} outages: ${await states(page)}`);
  const recoveries = await page.evaluate(() => window.board.client.recoveries);
  if (recoveries !== reconnects) fail(`${recoveries} of ${reconnects} reconnects recovered`);
  const resets = await page.evaluate(() => window.board.resets.length);
  if (resets !== 0) fail(`${resets} resets: recovery should have served every gap`);
  const errors = await page.evaluate(() => window.board.errors.filter((error) => error.startsWith("server")));
  if (errors.length > 0) fail(`errors from the server: ${errors.join("; ")}`);
  const transport = await page.$eval("#transport", (element) => element.textContent);
  return (
    `${rounds * perRound + 1} seqs per topic once and in order over ${reconnects} recovered ` +
    `reconnects, publishes acknowledged, prices shown; ends on ${transport}`
  );
}

/** An HS256 JWT for `sub` that lives `lifeSeconds`, granting every topic. */
function signToken(sub, lifeSeconds) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + lifeSeconds;
  const claims = { sub, exp, subscribe: ["*"], publish: ["*"] };
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  const secret = process.env.RINGCAST_JWT_HS256_SECRET;
  if (!secret) fail("RINGCAST_JWT_HS256_SECRET is not set");
  const signature = crypto.createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** Opens a page on the server (the client's own file, so that it may import it) and starts a
 * client there with `options` (JSON) and a record of what it saw in `window.seen`. */
async function pageWithClient(origin, options) {
  const page = await openPage(origin, "ringcast.js");
  await page.exposeFunction("newToken", (lifeSeconds = 3600) => signToken("page", lifeSeconds));
  await page.evaluate(async (options) => {
    const { connect } = await import("/ringcast.js");
    // A first token of `tokenLifeSeconds` is made here, as the client starts, so that the time
    // a page takes to open does not eat into its life.
    if (options.tokenLifeSeconds !== undefined) {
      options.token = await window.newToken(options.tokenLifeSeconds);
    }
    const seen = { seqs: {}, states: [], errors: [], resets: [], refreshes: 0 };
    window.seen = seen;
    window.client = connect(location.origin, {
      ...options,
      refreshToken: async () => {
        seen.refreshes += 1;
        return window.newToken();
      },
      onMessage: ({ topic, seq }) => (seen.seqs[topic] ??= []).push(seq),
      onReset: (reset) => {
        seen.resets.push(reset);
        seen.seqs[reset.topic] = [];
      },
      onState: (state, transport) => seen.states.push(`${state}:${transport}`),
      onError: (error) => seen.errors.push(error.message),
    });
  }, options);
  return page;
}

/** Every topic's seqs on `page` (`window.seen`) are first..last, each once and in order. */
async function seenExactly(page, first, last) {
  const seen = await page.evaluate(() => window.seen);
  for (const topic of TOPICS) {
    const got = seen.seqs[topic] ?? [];
    got.forEach((seq, index) => {
      if (seq !== first + index) fail(`${topic}: seq ${seq} at position ${index}: ${got.join(",")}`);
    });
    if (got.length < last - first + 1) return false;
  }
  return true;
}

async function token() {
  publisherToken = signToken("publisher", 3600);
  const origin = `http://${address}`;
  const lifeSeconds = 3;
  const pages = {};
  for (const transport of ["websocket", "sse"]) {
    pages[transport] = await pageWithClient(origin, {
      topics: TOPICS,
      tokenLifeSeconds: lifeSeconds,
      transports: [transport],
    });
  }
  const opens = (seen, transport) => seen.states.filter((state) => state === `open:${transport}`).length;
  for (const [transport, page] of Object.entries(pages)) {
    await waitFor(`${transport} to open`, async () => opens(await page.evaluate(() => window.seen), transport) >= 1);
  }
  // A client whose token expired before it ever connected: the server refuses its WebSocket
  // upgrade with 401, which a browser cannot see, so the client must read the token's expiry
  // itself, refresh it and open.
  const stale = await pageWithClient(origin, {
    topics: TOPICS,
    token: signToken("page", -5),
    transports: ["websocket"],
  });
  await waitFor("a client with an expired first token to refresh and open", async () => {
    const seen = await stale.evaluate(() => window.seen);
    return seen.refreshes >= 1 && opens(seen, "websocket") >= 1;
  });
  await sleep(500); // Let both subscribe before the first publish.
  await publishRange(1, 20);
  for (const [transport, page] of Object.entries(pages)) {
    // The first token expires with no grace: the server ends the connection, the client
    // refreshes the token and comes back.
    await waitFor(`${transport}: a refresh and a second open`, async () => {
      const seen = await page.evaluate(() => window.seen);
      return seen.refreshes >= 1 && opens(seen, transport) >= 2;
    });
  }
  await publishRange(21, 40);
  for (const [transport, page] of Object.entries(pages)) {
    await waitFor(`${transport}: every seq`, () => seenExactly(page, 1, 40));
  }
  const websocket = await pages.websocket.evaluate(() => window.seen);
  if (!websocket.errors.some((error) => error.includes("closed 4001"))) {
    fail(`the WebSocket client saw no close 4001: ${websocket.errors.join("; ")}`);
  }
  const sse = await pages.sse.evaluate(() => window.seen);
  return (
    `WebSocket: ${websocket.refreshes} refreshes after 4001, SSE: ${sse.refreshes} after ` +
    `\`expired\`; 40 seqs per topic once and in order on both`
  );
}

/** Starts the server binary on `listen`; resolves with the process and its address. */
function startServer(listen) {
  const binary = process.env.RINGCAST_BINARY;
  if (!binary) fail("RINGCAST_BINARY is not set");
  // This script's own RINGCAST_ variables are no settings: the server would warn of them.
  const env = { ...process.env };
  delete env.RINGCAST_BINARY;
  delete env.RINGCAST_CHROMIUM;
  const child = spawn(binary, ["--listen", listen, "--shards", "2"], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve) => {
    let text = "";
    child.stdout.on("data", (chunk) => {
      text += chunk;
      const match = /ringcast listening on (\S+)/.exec(text);
      if (match) {
        child.stdout.removeAllListeners("data");
        child.stdout.resume();
        resolve({ child, address: match[1] });
      }
    });
    child.on("exit", (code) => fail(`the server exited (${code}) before it listened`));
  });
}

async function restart() {
  let server = await startServer("127.0.0.1:0");
  address = server.address;
  const pages = {};
  for (const transport of ["websocket", "poll"]) {
    pages[transport] = await pageWithClient(`http://${address}`, { topics: TOPICS, transports: [transport] });
  }
  const seen = (transport) => pages[transport].evaluate(() => window.seen);
  const opens = async (transport) =>
    (await seen(transport)).states.filter((state) => state === `open:${transport}`).length;
  for (const transport of Object.keys(pages)) {
    await waitFor(`${transport} to open`, async () => (await opens(transport)) === 1);
  }
  await sleep(500);
  await publishRange(1, 20);
  for (const [transport, page] of Object.entries(pages)) {
    await waitFor(`${transport}: the first 20 seqs`, () => seenExactly(page, 1, 20));
  }
  server.child.removeAllListeners("exit");
  const exited = new Promise((resolve) => server.child.on("exit", resolve));
  server.child.kill("SIGTERM");
  await exited;
  log("server stopped");
  await waitFor("close 1001", async () =>
    (await seen("websocket")).errors.some((error) => error.includes("closed 1001")),
  );
  server = await startServer(address);
  log("server started again");
  for (const transport of Object.keys(pages)) {
    await waitFor(`${transport} to reconnect`, async () => (await opens(transport)) === 2);
  }
  await sleep(500);
  // A new server is a new epoch: each topic resets to its latest seq, then goes on.
  await publishRange(1, 30);
  for (const [transport, page] of Object.entries(pages)) {
    await waitFor(`${transport}: a reset per topic and every new seq`, async () => {
      const resets = (await seen(transport)).resets.length;
      if (resets > TOPICS.length) fail(`${transport}: ${resets} resets for ${TOPICS.length} topics`);
      return resets === TOPICS.length && (await seenExactly(page, 1, 30));
    });
  }
  server.child.removeAllListeners("exit");
  server.child.kill("SIGTERM");
  return "close 1001; WebSocket and polling reconnected by themselves, a reset per topic (a new epoch) and 30 new seqs per topic in order";
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

const scenarios = { board, cut, fallback, upgrade, token, restart, deflate, socketio };
if (!(scenario in scenarios)) fail(`unknown scenario ${scenario}`);
scenarios[scenario]()
  .then(async (summary) => {
    clearTimeout(deadline);
    await browser?.close();
    console.log(`browser_client ${scenario}: ${summary}`);
    process.exit(0);
  })
  .catch((error) => fail(error.stack));
