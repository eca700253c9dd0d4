// The origin behind Pushpin (the GRIP proxy Fanout runs) for the SSE fanout comparison: what a
// Pushpin deployment's own backend does, so that Pushpin serves the same fanout as ringcast's
// /sse with the loadtest's publishers and subscribers unchanged.
//   GET /sse?topics=T   (reached through Pushpin) → 200 text/event-stream with
//                       Grip-Hold: stream and Grip-Channel: T, whose body is the
//                       `subscribed` event {"op":"subscribed","topic":T,"seq":N}; Pushpin then
//                       holds the stream open and sends it what is published on channel T
//   WebSocket /ws       publishers' {"op":"publish","topic":T,"data":…} → seq = T's next, and
//                       the event `data: {"topic":T,"seq":N,"data":…}` is published to
//                       Pushpin's HTTP publish API (POST /publish/, items in seq order; one
//                       request in flight, the publishes that arrive meanwhile go in the next)
// Usage: node pushpin-origin.js ORIGIN_PORT PUBLISH_PORT PUSHPIN_PUBLISH_URL
//   (prints "pushpin-origin listening on ORIGIN_PORT and PUBLISH_PORT" once ready)
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const originPort = Number(process.argv[2] || 9500);
const publishPort = Number(process.argv[3] || 9501);
const pushpinPublish = new URL(process.argv[4] || 'http://127.0.0.1:5561/publish/');
const ITEMS_PER_REQUEST_MAX = 1000;

/** The latest sequence number of each topic. */
const sequences = new Map();
/** Items waiting for the next publish request, in order. */
let pending = [];
let inFlight = false;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function flush() {
  if (inFlight || pending.length === 0) return;
  const items = pending.slice(0, ITEMS_PER_REQUEST_MAX);
  pending = pending.slice(items.length);
  const body = JSON.stringify({ items });
  inFlight = true;
  const request = http.request(pushpinPublish, {
    method: 'POST',
    agent,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  }, (response) => {
    response.resume();
    response.on('end', () => {
      if (response.statusCode !== 200) console.error('pushpin publish answered ' + response.statusCode);
      inFlight = false;
      flush();
    });
  });
  request.on('error', (error) => {
    console.error('pushpin publish failed: ' + error.message);
    inFlight = false;
    setTimeout(flush, 100);
  });
  request.end(body);
}

/** The raw text of the `data` member of a publish (the publishers' canonical form). */
function rawData(text) {
  const start = text.indexOf('"data":');
  return start < 0 ? undefined : text.slice(start + 7, text.length - 1);
}

function publish(topic, data) {
  const seq = (sequences.get(topic) || 0) + 1;
  sequences.set(topic, seq);
  const event = 'data: {"topic":' + JSON.stringify(topic) + ',"seq":' + seq + ',"data":' + data + '}\n\n';
  pending.push({ channel: topic, formats: { 'http-stream': { content: event } } });
  if (pending.length === 1) setImmediate(flush);
}

const origin = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://origin');
  const topic = url.searchParams.get('topics');
  if (url.pathname !== '/sse' || !topic || topic.includes(',')) {
    response.writeHead(400, { 'content-type': 'text/plain' });
    response.end('one topic: GET /sse?topics=T\n');
    return;
  }
  response.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    'grip-hold': 'stream',
    'grip-channel': topic,
  });
  response.end('event: subscribed\ndata: {"op":"subscribed","topic":' + JSON.stringify(topic) +
    ',"seq":' + (sequences.get(topic) || 0) + '}\n\n');
});

const publishers = http.createServer();
const sockets = new WebSocketServer({ server: publishers, maxPayload: 1024 * 1024 });
sockets.on('connection', (socket) => {
  socket.on('message', (bytes) => {
    const text = bytes.toString('utf8');
    let message;
    try { message = JSON.parse(text); } catch (error) { return; }
    if (message.op === 'publish' && typeof message.topic === 'string') {
      publish(message.topic, rawData(text));
    }
  });
});

let listening = 0;
function ready() {
  if (++listening === 2) console.log('pushpin-origin listening on ' + originPort + ' and ' + publishPort);
}
origin.listen(originPort, '127.0.0.1', ready);
publishers.listen(publishPort, '127.0.0.1', ready);
