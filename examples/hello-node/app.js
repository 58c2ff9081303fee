// The Node.js example app: `passenger start examples/hello-node` serves it. It listens as any
// Node app does; under passenger-rs the loader moves the server onto a private socket.
const http = require('http');

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(`Hello from passenger-rs (Node.js)! You asked for ${req.url}\n`);
});

server.listen(process.env.PORT || 3000);
