// Node `ws` echo server, a peer in ringcast's side-by-side figures.
// Usage: node ws-echo.js PORT   (prints "ws listening on PORT" once ready)
'use strict';
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2] || 9201);
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
});
server.on('listening', () => console.log('ws listening on ' + port));
