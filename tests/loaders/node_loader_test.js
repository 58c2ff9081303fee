'use strict';
// Tests of loaders/node-loader.js, driving the real loader as a child process the way the core
// does: the handshake on its stdin/stdout, HTTP over the unix socket it reports, and a byte/EOF
// on stdin to stop it.
//
// Run: node --test tests/loaders/        (or: node tests/loaders/node_loader_test.js)

const test = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const LOADER = path.resolve(__dirname, '..', '..', 'loaders', 'node-loader.js');
// Upper bound for any single wait; the tests normally take milliseconds per step.
const WAIT_MS = 10000;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms ${what()}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function makeApp(files) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nl-app-'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(root, name), text);
  return root;
}

// One loader process: its stdout as lines, its stderr as text, its exit.
class Loader {
  constructor(appRoot) {
    this.appRoot = appRoot;
    this.socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nl-sock-'));
    const env = { ...process.env };
    delete env.NODE_ENV;
    delete env.NODE_TEST_CONTEXT;
    this.child = spawn(process.execPath, [LOADER], { cwd: appRoot, env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.lines = [];
    this.partial = '';
    this.stderr = '';
    this.waiters = new Set();
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (text) => {
      const parts = (this.partial + text).split('\n');
      this.partial = parts.pop();
      this.lines.push(...parts);
      this.wake();
    });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (text) => {
      this.stderr += text;
    });
    this.child.stdin.on('error', () => {}); // EPIPE when the loader has already exited
    this.exit = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
        this.wake();
      });
    });
  }

  wake() {
    for (const w of this.waiters) w();
  }

  describe() {
    return (
      `\n--- loader stdout lines so far:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}` +
      `${this.partial ? `\n(unfinished) ${JSON.stringify(this.partial)}` : ''}` +
      `\n--- loader stderr:\n${this.stderr}\n--- exit: ${JSON.stringify(this.exitStatus || null)}`
    );
  }

  // Waits until a stdout line (from index `from` on) satisfies `pred`; returns its index.
  waitForLine(pred, what, from = 0) {
    const find = () => {
      for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i])) return i;
      return -1;
    };
    let waiter;
    const found = new Promise((resolve, reject) => {
      waiter = () => {
        const i = find();
        if (i !== -1) resolve(i);
        else if (this.exitStatus && this.child.stdout.readableEnded) reject(new Error(`the loader exited before printing ${what}${this.describe()}`));
      };
      this.waiters.add(waiter);
      this.child.stdout.on('end', waiter);
      waiter();
    });
    return withTimeout(found, WAIT_MS, () => `waiting for ${what}${this.describe()}`).finally(() => {
      this.waiters.delete(waiter);
      this.child.stdout.off('end', waiter);
    });
  }

  waitExit(what = 'the loader to exit') {
    return withTimeout(this.exit, WAIT_MS, () => `waiting for ${what}${this.describe()}`);
  }

  // The handshake up to the empty line; `options` are sent in order.
  async handshake(options, greeting = 'You have control 1.0') {
    await this.waitForLine(() => true, 'its first line');
    assert.strictEqual(this.lines[0], '!> I have control 1.0', `the first line${this.describe()}`);
    let text = `${greeting}\n`;
    for (const [k, v] of Object.entries(options)) text += `${k}: ${v}\n`;
    this.child.stdin.write(`${text}\n`);
  }

  // Starts the app and waits for the Ready block; returns the socket path.
  async start(options = {}) {
    await this.handshake({ app_root: this.appRoot, socket_dir: this.socketDir, environment: 'staging', ...options });
    const end = await this.waitForLine((l) => l === '!> ', "the Ready block's final '!> '");
    const protocolLines = this.lines.slice(1).filter((l) => l.startsWith('!> '));
    assert.strictEqual(protocolLines.length, 3, `exactly three protocol lines after the handshake${this.describe()}`);
    assert.strictEqual(protocolLines[0], '!> Ready');
    const m = /^!> socket: main;unix:(.*);http_session;0$/.exec(protocolLines[1]);
    assert.ok(m, `the socket line ${JSON.stringify(protocolLines[1])}`);
    assert.strictEqual(this.lines[end - 2], '!> Ready', `Ready, socket and '!> ' are consecutive lines${this.describe()}`);
    assert.strictEqual(this.lines[end - 1], protocolLines[1]);
    const socketPath = m[1];
    assert.strictEqual(path.dirname(socketPath), this.socketDir);
    assert.match(path.basename(socketPath), /^node\.[0-9a-f]{16}$/);
    return socketPath;
  }

  // Expects the `!> Error` block and exit status 1; returns the message lines.
  async expectError() {
    const at = await this.waitForLine((l) => l === '!> Error', "'!> Error'");
    const status = await this.waitExit('the loader to exit after its error');
    assert.deepStrictEqual(status, { code: 1, signal: null }, `exit status after the error${this.describe()}`);
    await withTimeout(new Promise((r) => (this.child.stdout.readableEnded ? r() : this.child.stdout.on('end', r))), WAIT_MS, () => 'stdout end');
    assert.strictEqual(this.lines[at + 1], '!> html: false', this.describe());
    const message = this.lines.slice(at + 2);
    assert.ok(message.length > 0, `the error has a message${this.describe()}`);
    assert.ok(!message.some((l) => l.startsWith('!> ')), `no protocol lines inside the message${this.describe()}`);
    return message;
  }

  cleanup() {
    if (!this.exitStatus) this.child.kill('SIGKILL');
    fs.rmSync(this.socketDir, { recursive: true, force: true });
    fs.rmSync(this.appRoot, { recursive: true, force: true });
  }
}

async function withLoader(files, body) {
  const loader = new Loader(makeApp(files));
  try {
    await body(loader);
  } finally {
    loader.cleanup();
  }
}

// One HTTP request over the unix socket; resolves with status, headers, body and whether the
// agent reused a kept-alive connection.
function get(socketPath, urlPath, agent) {
  const done = new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, agent, headers: { Host: 'example.test' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  return withTimeout(done, WAIT_MS, () => `GET ${urlPath} on ${socketPath}`);
}

// Whether something answers on 127.0.0.1:`port`; if so, the first bytes it sends to a GET.
function probeTcp(port) {
  const done = new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    sock.setEncoding('utf8');
    sock.on('error', () => resolve({ connected: false }));
    sock.on('connect', () => sock.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'));
    sock.on('data', (d) => (data += d));
    sock.on('close', () => resolve({ connected: true, data }));
    sock.setTimeout(2000, () => sock.destroy());
  });
  return withTimeout(done, WAIT_MS, () => `probing port ${port}`);
}

// Reads from a raw socket until `pred(text so far)` holds.
function readUntil(sock, state, pred, what) {
  const done = new Promise((resolve, reject) => {
    const check = () => {
      if (pred(state.text)) {
        sock.off('data', onData);
        sock.off('close', onClose);
        resolve(state.text);
      }
    };
    const onData = (d) => {
      state.text += d;
      check();
    };
    const onClose = () => reject(new Error(`the connection closed before ${what}; got ${JSON.stringify(state.text)}`));
    sock.on('data', onData);
    sock.on('close', onClose);
    check();
  });
  return withTimeout(done, WAIT_MS, () => `reading ${what}; got ${JSON.stringify(state.text)}`);
}

const CJS_APP = `
const http = require('http');
let served = 0;
const server = http.createServer((req, res) => {
  served++;
  req.socket.requestsOnIt = (req.socket.requestsOnIt || 0) + 1;
  const answer = () => {
    res.setHeader('X-Test-App', 'cjs');
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({
      pid: process.pid, url: req.url, host: req.headers.host, onConnection: req.socket.requestsOnIt,
      nodeEnv: process.env.NODE_ENV, isMain: require.main === module, title: process.title,
    }));
  };
  if (req.url === '/slow') {
    console.log('slow request started');
    setTimeout(answer, 300);
  } else {
    answer();
  }
});
server.on('listening', () => console.log('listening event: ' + JSON.stringify(server.address())));
server.listen(3000, () => {
  console.log('listen callback: ' + JSON.stringify(server.address()));
  process.stdout.write('an unfinished line');
});
console.log('!> Ready (the app pretending to be the loader)');
`;

test('CommonJS app: handshake, HTTP over the unix socket, keep-alive, no port 3000, graceful stop', async () => {
  await withLoader({ 'app.js': CJS_APP }, async (loader) => {
    const socketPath = await loader.start({ startup_file: path.join(loader.appRoot, 'app.js'), log_level: '3' });

    // The app's output stays plain lines, and its listen callback and 'listening' event fired.
    assert.ok(loader.lines.includes(' !> Ready (the app pretending to be the loader)'), loader.describe());
    assert.ok(loader.lines.includes('an unfinished line'), `the loader ends the app's unfinished line before its own${loader.describe()}`);
    await loader.waitForLine((l) => l === `listen callback: ${JSON.stringify(socketPath)}`, "the app's listen callback");
    await loader.waitForLine((l) => l === `listening event: ${JSON.stringify(socketPath)}`, "the app's 'listening' event");

    assert.strictEqual(fs.statSync(socketPath).mode & 0o777, 0o600, 'the socket is private to its owner');

    // Two requests on one keep-alive connection.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await get(socketPath, '/hello?x=1', agent);
    assert.strictEqual(first.status, 200);
    assert.strictEqual(first.headers['x-test-app'], 'cjs');
    const a = JSON.parse(first.body);
    assert.strictEqual(a.pid, loader.child.pid);
    assert.strictEqual(a.url, '/hello?x=1');
    assert.strictEqual(a.host, 'example.test');
    assert.strictEqual(a.nodeEnv, 'staging', 'NODE_ENV comes from the environment option');
    assert.strictEqual(a.isMain, true, 'require.main is the app');
    assert.match(a.title, /^Passenger NodeApp/);
    const second = await get(socketPath, '/again', agent);
    const b = JSON.parse(second.body);
    assert.strictEqual(second.reused, true, 'the client reused the connection');
    assert.strictEqual(b.onConnection, 2, 'the app saw the second request on the same connection');
    assert.strictEqual(b.url, '/again');

    // The port the app asked for was not bound by it.
    const probe = await probeTcp(3000);
    if (probe.connected) {
      assert.ok(!probe.data.includes(`"pid":${loader.child.pid}`), `port 3000 answers, but it must not be our app: ${probe.data}`);
    }

    // EOF on stdin while a slow request runs (and the agent keeps an idle connection open):
    // the request completes, then the loader exits 0 and removes its socket.
    const slow = get(socketPath, '/slow', new http.Agent({ keepAlive: true }));
    await loader.waitForLine((l) => l === 'slow request started', 'the app to receive the slow request');
    loader.child.stdin.end();
    const slowAnswer = await slow;
    assert.strictEqual(slowAnswer.status, 200);
    assert.strictEqual(JSON.parse(slowAnswer.body).url, '/slow');
    const status = await loader.waitExit('the loader to exit after EOF on stdin');
    assert.deepStrictEqual(status, { code: 0, signal: null }, loader.describe());
    assert.ok(!fs.existsSync(socketPath), 'the socket file is removed');
    agent.destroy();
  });
});

test('a byte on stdin stops the loader too', async () => {
  await withLoader({ 'app.js': CJS_APP }, async (loader) => {
    const socketPath = await loader.start();
    assert.strictEqual(JSON.parse((await get(socketPath, '/')).body).pid, loader.child.pid);
    loader.child.stdin.write('x');
    const status = await loader.waitExit('the loader to exit after a byte on stdin');
    assert.deepStrictEqual(status, { code: 0, signal: null }, loader.describe());
    assert.ok(!fs.existsSync(socketPath));
  });
});

const ESM_APP = `
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const server = http.createServer((req, res) => {
  res.setHeader('X-Test-App', 'esm');
  res.end(JSON.stringify({ pid: process.pid, url: req.url, file: path.basename(fileURLToPath(import.meta.url)), esm: typeof require === 'undefined' }));
});
server.listen({ port: 3000, host: '127.0.0.1' }, () => console.log('esm listening on ' + server.address()));
`;

test('ES module app: .mjs startup file, listen with an options object', async () => {
  await withLoader({ 'app.mjs': ESM_APP }, async (loader) => {
    const socketPath = await loader.start({ startup_file: 'app.mjs' });
    await loader.waitForLine((l) => l === `esm listening on ${socketPath}`, "the app's listen callback");
    const r = await get(socketPath, '/esm');
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.headers['x-test-app'], 'esm');
    assert.deepStrictEqual(JSON.parse(r.body), { pid: loader.child.pid, url: '/esm', file: 'app.mjs', esm: true });
    loader.child.stdin.end();
    assert.deepStrictEqual(await loader.waitExit(), { code: 0, signal: null }, loader.describe());
  });
});

test('ES module app: app.js under a package.json with "type": "module", top-level await, default startup file', async () => {
  const app = `
import http from 'node:http';
await new Promise((resolve) => setImmediate(resolve));
http.createServer((req, res) => res.end(JSON.stringify({ pid: process.pid, esm: typeof require === 'undefined', url: req.url })))
  .listen(3000, '0.0.0.0');
`;
  await withLoader({ 'app.js': app, 'package.json': '{"name": "esm-app", "type": "module"}\n' }, async (loader) => {
    const socketPath = await loader.start();
    const r = await get(socketPath, '/typed');
    assert.deepStrictEqual(JSON.parse(r.body), { pid: loader.child.pid, esm: true, url: '/typed' });
    loader.child.stdin.end();
    assert.deepStrictEqual(await loader.waitExit(), { code: 0, signal: null }, loader.describe());
  });
});

test('WebSocket-style upgrade passes through; a second server keeps its own port', async () => {
  const app = `
const http = require('http');
const server = http.createServer((req, res) => res.end('plain'));
server.on('upgrade', (req, socket, head) => {
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\nX-Path: ' + req.url + '\\r\\n\\r\\n');
  if (head.length) socket.write(head);
  socket.on('data', (d) => socket.write(d));
});
server.listen(() => {
  const other = http.createServer((req, res) => res.end('second server ' + process.pid));
  other.listen(0, '127.0.0.1', () => console.log('second server port ' + other.address().port));
});
`;
  await withLoader({ 'app.js': app }, async (loader) => {
    const socketPath = await loader.start();
    const sock = net.connect({ path: socketPath });
    sock.setEncoding('utf8');
    const closed = new Promise((resolve) => sock.on('close', resolve));
    const got = { text: '' };
    try {
      sock.write('GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
      const head = await readUntil(sock, got, (t) => t.includes('\r\n\r\n'), 'the 101 response head');
      assert.match(head, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
      assert.match(head, /\r\nX-Path: \/chat\r\n/);
      got.text = '';
      sock.write('ping-123');
      await readUntil(sock, got, (t) => t === 'ping-123', 'the echo');
      sock.write('\x00\x01more');
      await readUntil(sock, got, (t) => t === 'ping-123\x00\x01more', 'the second echo');

      const at = await loader.waitForLine((l) => l.startsWith('second server port '), "the second server's port");
      const port = Number(loader.lines[at].split(' ').pop());
      assert.ok(port > 0, loader.lines[at]);
      const probe = await probeTcp(port);
      assert.ok(probe.connected && probe.data.includes(`second server ${loader.child.pid}`), `the second server answers on TCP: ${JSON.stringify(probe)}`);

      // A stop does not wait for upgraded connections (they are long-lived): no request is
      // running, so the loader exits at once and the upgraded connection is cut.
      loader.child.stdin.end();
      assert.deepStrictEqual(await loader.waitExit(), { code: 0, signal: null }, loader.describe());
      await withTimeout(closed, WAIT_MS, () => 'the upgraded connection to close');
      assert.ok(!fs.existsSync(socketPath));
    } finally {
      sock.destroy();
    }
  });
});

test('an app that throws while loading: the Error block, exit 1', async () => {
  const app = "console.log('about to fail');\nthrow new Error('boom at load');\n";
  await withLoader({ 'app.js': app }, async (loader) => {
    await loader.handshake({ app_root: loader.appRoot, socket_dir: loader.socketDir });
    const message = await loader.expectError();
    assert.ok(loader.lines.indexOf('about to fail') < loader.lines.indexOf('!> Error'), loader.describe());
    assert.ok(message.some((l) => l.includes('could not be loaded from') && l.includes('app.js')), loader.describe());
    assert.ok(message.includes('Error: boom at load'), loader.describe());
    assert.ok(message.some((l) => /^\s+at .*app\.js:2/.test(l)), `the stack points at app.js:2${loader.describe()}`);
    assert.deepStrictEqual(fs.readdirSync(loader.socketDir), [], 'no socket is left behind');
  });
});

test('an ES module that throws while loading: the Error block, exit 1', async () => {
  await withLoader({ 'app.mjs': "throw new TypeError('esm boom');\n" }, async (loader) => {
    await loader.handshake({ app_root: loader.appRoot, socket_dir: loader.socketDir, startup_file: 'app.mjs' });
    const message = await loader.expectError();
    assert.ok(message.includes('TypeError: esm boom'), loader.describe());
  });
});

test('an app that crashes asynchronously before listening: the Error block, exit 1', async () => {
  const app = "setTimeout(() => { throw new RangeError('later boom'); }, 5);\n";
  await withLoader({ 'app.js': app }, async (loader) => {
    await loader.handshake({ app_root: loader.appRoot, socket_dir: loader.socketDir });
    const message = await loader.expectError();
    assert.ok(message.includes('RangeError: later boom'), loader.describe());
  });
});

test('an app that never listens fails after listen_timeout', async () => {
  const app = "setInterval(() => {}, 1000);\nconsole.log('loaded, but not listening');\n";
  await withLoader({ 'app.js': app }, async (loader) => {
    const started = Date.now();
    await loader.handshake({ app_root: loader.appRoot, socket_dir: loader.socketDir, listen_timeout: '1' });
    const message = await loader.expectError();
    const elapsed = Date.now() - started;
    assert.ok(message.some((l) => l.includes('did not start listening within 1 s')), loader.describe());
    assert.ok(elapsed >= 900, `it waited the timeout (${elapsed} ms)`);
  });
});

test('a missing startup file and a wrong greeting are reported', async () => {
  await withLoader({}, async (loader) => {
    await loader.handshake({ app_root: loader.appRoot, socket_dir: loader.socketDir });
    const message = await loader.expectError();
    assert.ok(message.some((l) => l.includes('app.js does not exist')), loader.describe());
  });
  await withLoader({ 'app.js': CJS_APP }, async (loader) => {
    await loader.handshake({}, 'You have control 2.0');
    const message = await loader.expectError();
    assert.ok(message.some((l) => l.includes("Expected 'You have control 1.0'")), loader.describe());
  });
});
