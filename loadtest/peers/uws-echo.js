// uWebSockets.js echo server, the peer ringcast's echo figures are compared with.
// Loads the native addon directly: the package's entry point silently falls back to a pure-JS
// implementation when the addon fails to load, which would make the comparison meaningless.
// Usage: node uws-echo.js PORT [CERTIFICATE KEY]   (prints "uws listening on PORT" once ready)
'use strict';
const port = Number(process.argv[2] || 9200);
const uWS = require('@trufflesuite/uws-js-unofficial/binaries/uws_linux_x64_' + process.versions.modules + '.node');
const app = (process.argv[4]
  // With a certificate and key (PEM): uWS's SSLApp, its TLS over OpenSSL (the TLS figures).
  ? uWS.SSLApp({ cert_file_name: process.argv[3], key_file_name: process.argv[4] })
  : uWS.App({}));
app.ws('/*', {
  maxPayloadLength: 16 * 1024 * 1024,
  idleTimeout: 120,
  message: (socket, message, isBinary) => { socket.send(message, isBinary); },
}).listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws could not listen on ' + port); process.exit(1); }
  console.log('uws listening on ' + port);
});
