// Test app for Node.js through nginx: hello, an echo of the body, the request as the app saw
// it, the environment, and output. It listens on port 3000 as a Node app would; the loader
// moves it onto a unix socket.
const http = require('http');

console.log('node app: loading');

let connections = 0;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/connections') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(String(connections));
  } else if (url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-pid': String(process.pid) });
    res.end('hello from node\n');
  } else if (url.pathname === '/echo') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-received-length': String(body.length) });
      res.end(body);
    });
  } else if (url.pathname === '/request') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, httpVersion: req.httpVersion }));
  } else if (url.pathname === '/stream') {
    // No content-length: chunked to the core, which passes the de-chunked body on.
    res.writeHead(200, { 'content-type': 'text/plain' });
    let i = 0;
    const tick = () => {
      if (i === 100) { res.end('done\n'); return; }
      res.write(`line ${i++}\n`);
      setImmediate(tick);
    };
    tick();
  } else if (url.pathname === '/pieces') {
    // A body of known length in three writes, the last 20 ms later: the core gets the head
    // with only part of the body, or none of it.
    const n = Number(url.searchParams.get('n'));
    const body = Buffer.alloc(n, 'abcdefghij');
    const cut1 = Math.floor(n / 3);
    const cut2 = Math.floor((2 * n) / 3);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
    res.write(body.subarray(0, cut1));
    setImmediate(() => {
      res.write(body.subarray(cut1, cut2));
      setTimeout(() => res.end(body.subarray(cut2)), 20);
    });
  } else if (url.pathname === '/short') {
    // Announces 100 bytes, sends 10 and drops the connection.
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
    res.write('0123456789', () => res.socket.destroy());
  } else if (url.pathname === '/env') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(process.env[url.search.slice(1)] ?? '(unset)');
  } else if (url.pathname === '/log') {
    console.log(`node app ${process.pid} says hello on stdout`);
    console.error(`node app ${process.pid} says hello on stderr`);
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('logged');
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`unknown path ${url.pathname}\n`);
  }
});
server.on('connection', () => { connections += 1; });
server.listen(3000);
