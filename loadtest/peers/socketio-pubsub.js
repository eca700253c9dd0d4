// The npm socket.io server (v4) doing ringcast's Socket.IO pub/sub job, the peer ringcast's
// Socket.IO fanout figures are compared with (loadtest/compare-socketio). Events as ringcast
// serves them on /socket.io/:
//   subscribe   ["subscribe",{"topics":[…]}] → socket.join(topic), then per topic the event
//               ["subscribed",{"op":"subscribed","topic":…,"seq":N}] (N: the topic's latest
//               seq, 0 if new); acknowledged with [] when the client asks
//   unsubscribe ["unsubscribe",{"topics":[…]}] → socket.leave(topic)
//   publish     ["publish",{"topic":…,"data":…}] → seq = the topic's next, and the room gets
//               ["message",{"topic":…,"seq":N,"data":…}] (io.to(topic).emit: socket.io encodes
//               the packet once for the room); acknowledged {"op":"published","seq":N} when
//               the client asks
//   errors      the event ["error",{"op":"error","reason":…}], or the acknowledgement
// Not kept: history, so "since" is refused rather than ignored silently.
// Settings are socket.io's defaults (perMessageDeflate off, pingInterval 25 s, pingTimeout
// 20 s, maxHttpBufferSize 1 MB, polling and WebSocket both served), so the figures are those of
// socket.io as teams deploy it.
// Usage: node socketio-pubsub.js PORT   (prints "socketio-pubsub listening on PORT (pid N)")
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9300);
const TOPIC_BYTES_MAX = 256;
const TOPICS_PER_REQUEST_MAX = 1000;
/** The latest sequence number of each topic that has had a publish. */
const sequences = new Map();

function validTopic(topic) {
  return typeof topic === 'string' && topic.length > 0 && topic.length <= TOPIC_BYTES_MAX;
}
function validTopics(topics) {
  return Array.isArray(topics) && topics.length <= TOPICS_PER_REQUEST_MAX && topics.every(validTopic);
}
/** Answers a refused request: through its acknowledgement when asked, else an error event. */
function refuse(socket, acknowledge, reason) {
  const error = { op: 'error', reason };
  if (typeof acknowledge === 'function') acknowledge(error);
  else socket.emit('error', error);
}
function isObject(value) {
  return value !== null && typeof value === 'object';
}

function onSubscribe(socket, request, acknowledge) {
  if (!isObject(request) || !validTopics(request.topics)) return refuse(socket, acknowledge, 'topics must be a list of names');
  if (request.since !== undefined) return refuse(socket, acknowledge, 'since is not supported: no history');
  for (const topic of request.topics) {
    socket.join(topic);
    socket.emit('subscribed', { op: 'subscribed', topic, seq: sequences.get(topic) || 0 });
  }
  if (typeof acknowledge === 'function') acknowledge();
}
function onUnsubscribe(socket, request, acknowledge) {
  if (!isObject(request) || !validTopics(request.topics)) return refuse(socket, acknowledge, 'topics must be a list of names');
  for (const topic of request.topics) socket.leave(topic);
  if (typeof acknowledge === 'function') acknowledge();
}
function onPublish(socket, request, acknowledge) {
  if (!isObject(request) || !validTopic(request.topic)) return refuse(socket, acknowledge, 'publish needs a topic');
  if (request.data === undefined) return refuse(socket, acknowledge, 'publish needs data');
  const seq = (sequences.get(request.topic) || 0) + 1;
  sequences.set(request.topic, seq);
  io.to(request.topic).emit('message', { topic: request.topic, seq, data: request.data });
  if (typeof acknowledge === 'function') acknowledge({ op: 'published', seq });
}

const server = http.createServer();
const io = new Server(server);
io.on('connection', (socket) => {
  socket.on('subscribe', (request, acknowledge) => onSubscribe(socket, request, acknowledge));
  socket.on('unsubscribe', (request, acknowledge) => onUnsubscribe(socket, request, acknowledge));
  socket.on('publish', (request, acknowledge) => onPublish(socket, request, acknowledge));
});
server.on('error', (error) => {
  console.error('socketio-pubsub could not listen on ' + port + ': ' + error.message);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log('socketio-pubsub listening on ' + port + ' (pid ' + process.pid + ')');
});
