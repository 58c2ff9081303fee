// Hello-world Node.js app for bench/compare. Under passenger-rs or Phusion Passenger the loader
// makes listen() use its own socket; standalone (behind nginx) it listens on the unix socket
// named by BENCH_SOCKET (else on PORT or 3000). X-Pid names the process.
//   /       "hello world\n"
//   /100k   a 100 KB body
//   /sleep  answers after 50 ms
const http = require('http');
const fs = require('fs');

const HELLO = Buffer.from('hello world\n');
const BODY_100K = Buffer.from('x'.repeat(102399) + '\n');
const pid = String(process.pid);

function send(res, body) {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'x-pid': pid });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.url === '/100k') send(res, BODY_100K);
  else if (req.url === '/sleep') setTimeout(() => send(res, HELLO), 50);
  else send(res, HELLO);
});
server.keepAliveTimeout = 65000;

const socket = process.env.BENCH_SOCKET;
if (socket) {
  try { fs.unlinkSync(socket); } catch (_) { /* not there */ }
  server.listen(socket, () => fs.chmodSync(socket, 0o666));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  server.listen(process.env.PORT || 3000);
}
