'use strict';
// node-app: answers every request with what it runs on (Node.js version, CPU architecture, variant).
// The same file runs in every runtime variant: node:alpine (musl), node:slim (glibc), distroless, and
// the offline sample's Debian-slim-like and distroless-like images.
const http = require('node:http');
const ms = require('ms');

const port = Number(process.env.PORT || 8080);
const started = Date.now();

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  const body = {
    service: 'node-app',
    variant: process.env.NODE_APP_VARIANT || 'unknown',
    node: process.version,
    arch: process.arch,
    uptime: ms(Date.now() - started),
  };
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
});

server.listen(port, '0.0.0.0', () => {
  console.log(`node-app listening on :${port} (node ${process.version}, ${process.arch})`);
});

// As PID 1, node gets no default signal handling: stop cleanly on `docker stop`.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
