// uWebSockets.js pub/sub server speaking ringcast's JSON protocol, the peer ringcast's fanout
// figures are compared with. It uses uWS's own pub/sub (ws.subscribe, app.publish), its fast
// path, and keeps every feature of the protocol that costs work per message:
//   subscribe   {"op":"subscribe","topics":[…]} → ws.subscribe(topic), then once per topic
//               {"op":"subscribed","topic":…,"seq":N} (N: the topic's latest seq, 0 if new)
//   unsubscribe {"op":"unsubscribe","topics":[…]} → ws.unsubscribe(topic)
//   publish     {"op":"publish","topic":…,"data":…} → seq = the topic's next, and every
//               subscriber gets {"topic":…,"seq":N,"data":…} with data verbatim: the message is
//               built by concatenating the raw data text (found by scanning the validated
//               message), never by JSON.stringify of a parsed value
//   HTTP        POST /publish/{topic} with a JSON body → the same publish, answered {"seq":N}
//   errors      {"op":"error","reason":…} for malformed messages and unknown ops
// Not kept: history, so "since" is answered with an error rather than ignored silently.
// Slow consumers: a subscriber whose unsent data passes 1 MiB is closed, like ringcast's
// default outbound_queue_bytes_max (uWS's default would silently skip its messages instead).
// Loads the native addon directly: the package's entry point silently falls back to a pure-JS
// implementation when the addon fails to load, which would make the comparison meaningless.
// Compression: UWS_COMPRESSION=shared (uWS.SHARED_COMPRESSOR: no context takeover, one
// compressor for all sockets) or dedicated (uWS.DEDICATED_COMPRESSOR: a sliding window per
// socket) negotiates permessage-deflate, and every publish asks uWS to compress (publish's
// `compress` argument); unset, nothing is compressed, as before.
// Usage: node uws-pubsub.js PORT [CERTIFICATE KEY]   (prints "uws-pubsub listening on PORT" once ready)
'use strict';
const port = Number(process.argv[2] || 9200);
const COMPRESSION = process.env.UWS_COMPRESSION || '';
const uWS = require('@trufflesuite/uws-js-unofficial/binaries/uws_linux_x64_' + process.versions.modules + '.node');

const MESSAGE_BYTES_MAX = 1024 * 1024;
const OUTBOUND_BYTES_MAX = 1024 * 1024;
const TOPIC_BYTES_MAX = 256;
/** The latest sequence number of each topic that has had a publish. */
const sequences = new Map();

function isWhitespace(code) { return code === 32 || code === 9 || code === 10 || code === 13; }
function skipWhitespace(text, index) {
  while (index < text.length && isWhitespace(text.charCodeAt(index))) index++;
  return index;
}
/** The index after the string starting at `index` (its opening quote). */
function skipString(text, index) {
  for (index++; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code === 92) index++;
    else if (code === 34) return index + 1;
  }
  return -1;
}
/** The index after the JSON value starting at `index`. The text is known to be valid JSON. */
function skipValue(text, index) {
  const first = text.charCodeAt(index);
  if (first === 34) return skipString(text, index);
  if (first !== 123 && first !== 91) {
    while (index < text.length) {
      const code = text.charCodeAt(index);
      if (code === 44 || code === 125 || code === 93 || isWhitespace(code)) break;
      index++;
    }
    return index;
  }
  let depth = 0;
  while (index < text.length) {
    const code = text.charCodeAt(index);
    if (code === 34) { index = skipString(text, index); continue; }
    if (code === 123 || code === 91) depth++;
    else if ((code === 125 || code === 93) && --depth === 0) return index + 1;
    index++;
  }
  return -1;
}
/** The raw text of member `name` of the top-level object in `text` (valid JSON). */
function rawMember(text, name) {
  let index = skipWhitespace(text, 0) + 1;
  for (;;) {
    index = skipWhitespace(text, index);
    if (text.charCodeAt(index) !== 34) return undefined;
    const keyEnd = skipString(text, index);
    const key = text.slice(index + 1, keyEnd - 1);
    index = skipWhitespace(text, skipWhitespace(text, keyEnd) + 1);
    const valueEnd = skipValue(text, index);
    if (key === name) return text.slice(index, valueEnd);
    index = skipWhitespace(text, valueEnd);
    if (text.charCodeAt(index) !== 44) return undefined;
    index++;
  }
}

function validTopic(topic) {
  return typeof topic === 'string' && topic.length > 0 && topic.length <= TOPIC_BYTES_MAX;
}
/** Publishes `data` (raw JSON text) on `topic`; returns its sequence number. */
function publish(topic, data) {
  const seq = (sequences.get(topic) || 0) + 1;
  sequences.set(topic, seq);
  app.publish(topic, '{"topic":' + JSON.stringify(topic) + ',"seq":' + seq + ',"data":' + data + '}', false, compressor !== 0);
  return seq;
}
function fail(socket, reason) {
  socket.send('{"op":"error","reason":' + JSON.stringify(reason) + '}', false);
}

function onMessage(socket, bytes, isBinary) {
  if (isBinary) return fail(socket, 'binary messages are not part of the protocol');
  const text = Buffer.from(bytes).toString('utf8');
  let message;
  try { message = JSON.parse(text); } catch (error) { return fail(socket, 'not JSON'); }
  if (message === null || typeof message !== 'object') return fail(socket, 'not a JSON object');
  switch (message.op) {
    case 'subscribe': {
      if (!Array.isArray(message.topics) || !message.topics.every(validTopic)) return fail(socket, 'topics must be a list of names');
      if (message.since !== undefined) return fail(socket, 'since is not supported: no history');
      for (const topic of message.topics) {
        socket.subscribe(topic);
        socket.send('{"op":"subscribed","topic":' + JSON.stringify(topic) + ',"seq":' + (sequences.get(topic) || 0) + '}', false);
      }
      return;
    }
    case 'unsubscribe':
      if (!Array.isArray(message.topics) || !message.topics.every(validTopic)) return fail(socket, 'topics must be a list of names');
      for (const topic of message.topics) socket.unsubscribe(topic);
      return;
    case 'publish': {
      if (!validTopic(message.topic)) return fail(socket, 'publish needs a topic');
      const data = rawMember(text, 'data');
      if (data === undefined) return fail(socket, 'publish needs data');
      publish(message.topic, data);
      return;
    }
    default:
      return fail(socket, 'unknown op');
  }
}

function onHttpPublish(response, request) {
  const topic = request.getParameter(0);
  const chunks = [];
  let size = 0;
  let aborted = false;
  response.onAborted(() => { aborted = true; });
  response.onData((chunk, isLast) => {
    size += chunk.byteLength;
    if (size > MESSAGE_BYTES_MAX) { if (!aborted) response.writeStatus('413 Payload Too Large').end(); aborted = true; return; }
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!isLast || aborted) return;
    const body = Buffer.concat(chunks).toString('utf8');
    try { JSON.parse(body); } catch (error) { response.writeStatus('400 Bad Request').end('{"error":"body is not JSON"}'); return; }
    if (!validTopic(topic)) { response.writeStatus('400 Bad Request').end('{"error":"bad topic"}'); return; }
    const seq = publish(topic, body.trim());
    response.writeHeader('content-type', 'application/json').end('{"seq":' + seq + '}');
  });
}

const compressor = { '': 0, shared: uWS.SHARED_COMPRESSOR, dedicated: uWS.DEDICATED_COMPRESSOR }[COMPRESSION];
if (compressor === undefined) { console.error('UWS_COMPRESSION must be shared or dedicated'); process.exit(2); }
const app = (process.argv[4]
  // With a certificate and key (PEM): uWS's SSLApp, its TLS over OpenSSL (the TLS figures).
  ? uWS.SSLApp({ cert_file_name: process.argv[3], key_file_name: process.argv[4] })
  : uWS.App({}));
app.ws('/*', {
  compression: compressor,
  maxPayloadLength: MESSAGE_BYTES_MAX,
  maxBackpressure: OUTBOUND_BYTES_MAX,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
  message: onMessage,
}).post('/publish/:topic', onHttpPublish).listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws-pubsub could not listen on ' + port); process.exit(1); }
  console.log('uws-pubsub listening on ' + port);
});
