// Test app: a WebSocket echo server written against RFC 6455 directly (no npm packages):
// the handshake, then every text frame from the client is sent back prefixed with "echo: ".
const http = require('http');
const crypto = require('crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('plain request\n');
});

function frame(text) {
  const payload = Buffer.from(text);
  if (payload.length >= 126) throw new Error('the test app only sends short frames');
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buffered = Buffer.alloc(0);
  socket.on('data', (data) => {
    buffered = Buffer.concat([buffered, data]);
    // Client frames: FIN+opcode, MASK+len (< 126), 4-byte mask, payload.
    while (buffered.length >= 2) {
      const opcode = buffered[0] & 0x0f;
      const len = buffered[1] & 0x7f;
      if (buffered.length < 6 + len) return;
      const mask = buffered.subarray(2, 6);
      const payload = Buffer.from(buffered.subarray(6, 6 + len)).map((b, i) => b ^ mask[i % 4]);
      buffered = buffered.subarray(6 + len);
      if (opcode === 0x8) { socket.end(Buffer.from([0x88, 0])); return; }
      socket.write(frame(`echo: ${payload.toString()}`));
    }
  });
});

server.listen(3000);
