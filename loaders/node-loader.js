#!/usr/bin/env node
'use strict';
//
// passenger-rs Node.js loader.
//
// Started by the core agent as `node node-loader.js` in the app root, with stdin and stdout as
// the handshake channel (the same handshake as rack-loader.rb):
//
//   loader:  !> I have control 1.0
//   core:    You have control 1.0
//   core:    key: value            (app_root, startup_file, environment, socket_dir, base_uri,
//   core:    ...                    log_level, app_type, connect_password, listen_timeout, ...)
//   core:    (empty line)
//   loader:  !> Ready
//   loader:  !> socket: main;unix:<socket_dir>/node.<16 hex>;http_session;0
//   loader:  !>                    (with a trailing space)
//
// It loads the startup file (default <app_root>/app.js; CommonJS through the module loader as
// the main module, an ES module -- `.mjs`, or `.js` under a package.json with
// "type": "module" -- through import()). The first http.Server that calls listen(), whatever
// its arguments, listens on a fresh unix socket (mode 0600) instead; its listen callback and
// 'listening' event fire as usual. When it listens, the loader prints the three lines above.
// The core then speaks plain HTTP/1.1 to the socket (keep-alive, WebSocket upgrades); there is
// no password check (the socket's mode protects it). Later listen() calls are left alone.
//
// If the app throws while loading, crashes before listening, or does not listen within
// `listen_timeout` seconds (default 80, a little under the core's 90 s spawn timeout), the
// loader prints `!> Error`, `!> html: false`, the message and stack as plain lines, and exits 1.
// The app's own stdout output is passed through as plain lines; a line of it that would start
// with "!> " gets a leading space so that it is never taken for a protocol line.
//
// A byte or EOF on stdin stops it gracefully: the server stops accepting, idle keep-alive
// connections are closed, running requests finish (for at most 30 s; upgraded connections such
// as WebSockets are not waited for), the socket is removed and the process exits 0.
//
// To drive it by hand: `cd /srv/app && node /path/to/node-loader.js`, type
// `You have control 1.0`, then e.g. `socket_dir: /tmp` and an empty line; after `!> Ready`,
// `curl --unix-socket /tmp/node.<hex> http://localhost/`; Ctrl-D (EOF) stops it.

const fs = require('fs');
const path = require('path');
const http = require('http');
const net = require('net');
const os = require('os');
const url = require('url');
const util = require('util');
const crypto = require('crypto');
const Module = require('module');

const PROTOCOL_VERSION = '1.0';
const DEFAULT_LISTEN_TIMEOUT_S = 80;
const EXIT_GRACE_MS = 30 * 1000;
// Passenger's log levels: 0 crit .. 3 notice (the default) .. 5 debug.
const DEBUG_LEVEL = 5;

const state = {
  options: null,
  logLevel: 3,
  socketPath: null,
  server: null,
  ready: false,
  stopping: false,
  listenTimer: null,
  // Whether the last byte written to stdout ended a line (so a protocol line starts on its own).
  stdoutAtLineStart: true,
};

// ---- output ---------------------------------------------------------------------------------

const SPACE = Buffer.from(' ');
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

// Writes all of `text` to `fd` now, whatever the fd's blocking mode.
function writeAllSync(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code === 'EAGAIN') {
        Atomics.wait(sleepCell, 0, 0, 2); // the reader is behind; wait a moment, synchronously
        continue;
      }
      if (e.code === 'EPIPE') return; // the core is gone; stdin's EOF stops us
      throw e;
    }
  }
}

function protocol(line) {
  let text = `!> ${line}\n`;
  if (!state.stdoutAtLineStart) text = `\n${text}`;
  state.stdoutAtLineStart = true;
  writeAllSync(1, text);
}

function debug(message) {
  if (state.logLevel >= DEBUG_LEVEL) writeAllSync(2, `[node-loader ${process.pid}] ${message}\n`);
}

function formatError(err) {
  if (err instanceof Error || (err && typeof err.stack === 'string')) {
    return String(err.stack || `${err.name}: ${err.message}`);
  }
  return `Thrown value: ${typeof err === 'string' ? err : util.inspect(err)}`;
}

// Reports a start-up failure to the core and exits 1.
function failStartup(summary, err) {
  protocol('Error');
  protocol('html: false');
  let text = `${summary}\n`;
  if (err !== undefined) text += `${formatError(err)}\n`;
  writeAllSync(1, text);
  process.exit(1);
}

// After `!> Ready` a failure can no longer be reported as a start-up error: it is the app's
// crash, told on stderr like node itself would.
function crashAfterReady(summary, err) {
  writeAllSync(2, `${summary}\n${formatError(err)}\n`);
  process.exit(1);
}

// Makes stdout/stderr writes synchronous, so that app output and protocol lines (written with
// fs.writeSync) reach the pipe whole and in order, and nothing is lost at process.exit().
function makeStdioBlocking() {
  for (const stream of [process.stdout, process.stderr]) {
    const handle = stream && stream._handle;
    if (handle && typeof handle.setBlocking === 'function') handle.setBlocking(true);
  }
}

// Passes the app's stdout through, keeping it off the protocol: a line that would start with
// "!> " gets a leading space, and the loader knows whether a line is left unfinished.
function guardAppStdout() {
  const stdout = process.stdout;
  const originalWrite = stdout.write;
  stdout.write = function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    let buf;
    if (typeof chunk === 'string') buf = Buffer.from(chunk, encoding || 'utf8');
    else if (chunk instanceof Uint8Array) buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    else return originalWrite.call(this, chunk, encoding, callback); // let the stream complain
    if (buf.length === 0) return originalWrite.call(this, buf, callback);
    // Insert a space before each "!> " that starts a line.
    const pieces = [];
    let start = 0;
    let lineStart;
    if (buf.indexOf(0x21) === -1) lineStart = -1; // no "!" at all: nothing to look at
    else if (state.stdoutAtLineStart) lineStart = 0;
    else lineStart = buf.indexOf(0x0a) === -1 ? -1 : buf.indexOf(0x0a) + 1;
    while (lineStart !== -1 && lineStart < buf.length) {
      if (buf[lineStart] === 0x21 && buf[lineStart + 1] === 0x3e && buf[lineStart + 2] === 0x20) {
        pieces.push(buf.subarray(start, lineStart), SPACE);
        start = lineStart;
      }
      const nl = buf.indexOf(0x0a, lineStart);
      lineStart = nl === -1 ? -1 : nl + 1;
    }
    pieces.push(buf.subarray(start));
    state.stdoutAtLineStart = buf[buf.length - 1] === 0x0a;
    return originalWrite.call(this, pieces.length === 1 ? pieces[0] : Buffer.concat(pieces), callback);
  };
}

// ---- handshake ------------------------------------------------------------------------------

// Reads the greeting and the options from stdin, then calls `done(options)`. Whatever arrives on
// stdin after the empty line (a byte, or EOF) is the request to stop.
function readOptions(done) {
  protocol(`I have control ${PROTOCOL_VERSION}`);
  const expected = `You have control ${PROTOCOL_VERSION}`;
  let pending = Buffer.alloc(0);
  let greeted = false;
  let finished = false;
  const options = Object.create(null);

  const onData = (chunk) => {
    if (finished) {
      if (chunk.length > 0) requestStop('a byte arrived on stdin');
      return;
    }
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let nl;
    while (!finished && (nl = pending.indexOf(0x0a)) !== -1) {
      let line = pending.subarray(0, nl).toString('utf8');
      pending = pending.subarray(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (!greeted) {
        if (line !== expected) {
          failStartup(`Expected '${expected}' from the spawner, got ${JSON.stringify(line)}`);
        }
        greeted = true;
      } else if (line === '') {
        finished = true;
      } else {
        const sep = line.indexOf(': ');
        if (sep === -1) options[line] = '';
        else options[line.slice(0, sep)] = line.slice(sep + 2);
      }
    }
    if (finished) {
      const early = pending.length > 0;
      pending = null;
      done(options);
      if (early) requestStop('a byte arrived on stdin');
    }
  };
  const onEnd = () => {
    if (finished) requestStop('stdin reached EOF');
    else if (!greeted) failStartup(`Expected '${expected}' from the spawner, but stdin was closed`);
    else failStartup('The spawner closed stdin before the end of the options');
  };
  process.stdin.on('data', onData);
  process.stdin.on('end', onEnd);
  process.stdin.on('error', (e) => {
    if (finished) requestStop(`stdin failed (${e.code || e.message})`);
    else failStartup('Could not read the options from stdin', e);
  });
}

// ---- the app --------------------------------------------------------------------------------

// Node's rule: `.mjs` is ESM, `.cjs` CommonJS, `.js` follows the nearest package.json's "type".
function isEsModule(file) {
  const ext = path.extname(file);
  if (ext === '.mjs') return true;
  if (ext !== '.js') return false;
  let dir = path.dirname(file);
  for (;;) {
    if (path.basename(dir) === 'node_modules') return false;
    const pkg = path.join(dir, 'package.json');
    let text = null;
    try {
      text = fs.readFileSync(pkg, 'utf8');
    } catch (_) {
      // no package.json here; look further up
    }
    if (text !== null) {
      try {
        return JSON.parse(text).type === 'module';
      } catch (_) {
        return false; // node reports the broken package.json itself when loading
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

function socketPathIn(dir) {
  return path.join(dir, `node.${crypto.randomBytes(8).toString('hex')}`);
}

function removeSocket() {
  if (!state.socketPath) return;
  try {
    fs.unlinkSync(state.socketPath);
  } catch (_) {
    // already gone (node removes it when the server closes)
  }
}

function onUncaughtBeforeReady(err) {
  const o = state.options;
  failStartup(`The app in ${o.app_root} crashed while starting (before it listened)`, err);
}

// Replaces the first http.Server#listen: the server listens on our unix socket instead.
function hookListen() {
  const originalListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function listen(...args) {
    if (!(this instanceof http.Server)) return originalListen.apply(this, args);
    net.Server.prototype.listen = originalListen; // later servers are left alone
    return takeOver(this, args, originalListen);
  };
}

function takeOver(server, args, originalListen) {
  state.server = server;
  const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
  const wanted = { path: state.socketPath };
  const first = args[0];
  if (first && typeof first === 'object') {
    if (Number.isInteger(first.backlog)) wanted.backlog = first.backlog;
    if (first.signal) wanted.signal = first.signal;
  }
  if (state.logLevel >= DEBUG_LEVEL) {
    const asked = args.filter((a) => typeof a !== 'function').map((a) => util.inspect(a, { depth: 0, breakLength: Infinity }));
    debug(`the app's listen(${asked.join(', ')}) listens on ${state.socketPath} instead`);
  }

  const onError = (err) => {
    if (!state.ready) failStartup(`The app could not listen on its socket ${state.socketPath}`, err);
  };
  server.once('error', onError);
  trackConnections(server);

  // The socket is created inside listen() (synchronously); the umask makes it 0600 from birth.
  const oldUmask = process.umask(0o077);
  let result;
  try {
    result = originalListen.call(server, wanted, callback);
  } finally {
    process.umask(oldUmask);
  }
  // After the app's own listen callback (registered by listen() above).
  server.once('listening', () => {
    server.removeListener('error', onError);
    try {
      fs.chmodSync(state.socketPath, 0o600);
    } catch (e) {
      failStartup(`Could not restrict the app's socket ${state.socketPath} to its owner`, e);
    }
    clearTimeout(state.listenTimer);
    process.removeListener('uncaughtException', onUncaughtBeforeReady);
    state.ready = true;
    protocol('Ready');
    protocol(`socket: main;unix:${state.socketPath};http_session;0`);
    protocol('');
  });
  return result;
}

function loadApp(options) {
  state.options = options;
  const level = parseInt(options.log_level, 10);
  if (!Number.isNaN(level)) state.logLevel = level;
  const appRoot = path.resolve(options.app_root || process.cwd());
  options.app_root = appRoot;
  try {
    process.chdir(appRoot);
  } catch (e) {
    failStartup(`Cannot enter the app root ${appRoot}; check passenger_app_root and its permissions`, e);
  }
  const env = options.environment || 'production';
  if (!process.env.NODE_ENV) process.env.NODE_ENV = env;
  if (!process.env.PASSENGER_APP_ENV) process.env.PASSENGER_APP_ENV = env;
  if (!process.env.IN_PASSENGER) process.env.IN_PASSENGER = '1';
  if (options.base_uri && options.base_uri !== '/' && !process.env.PASSENGER_BASE_URI) {
    process.env.PASSENGER_BASE_URI = options.base_uri;
  }
  try {
    process.title = `Passenger NodeApp: ${appRoot} (${env})`;
  } catch (_) {
    // not fatal
  }

  const startupFile = path.resolve(appRoot, options.startup_file || 'app.js');
  if (!fs.existsSync(startupFile)) {
    failStartup(`The startup file ${startupFile} does not exist; create it or set passenger_startup_file`);
  }
  const socketDir = options.socket_dir || os.tmpdir();
  state.socketPath = socketPathIn(socketDir);
  process.on('exit', removeSocket);

  let timeoutS = Number(options.listen_timeout);
  if (!(timeoutS > 0)) timeoutS = DEFAULT_LISTEN_TIMEOUT_S;
  state.listenTimer = setTimeout(() => {
    failStartup(
      `The app in ${appRoot} did not start listening within ${timeoutS} s: ${startupFile} must ` +
        'create an HTTP server (http.createServer, or e.g. Express\'s app.listen) and call ' +
        'listen() on it; any port will do, the loader makes it listen on its own unix socket'
    );
  }, Math.round(timeoutS * 1000));

  process.on('uncaughtException', onUncaughtBeforeReady);
  hookListen();
  process.argv[1] = startupFile;

  const onLoadError = (err) => {
    const summary = `The app in ${appRoot} could not be loaded from ${startupFile}`;
    if (state.ready) crashAfterReady(summary, err);
    else failStartup(summary, err);
  };
  if (isEsModule(startupFile)) {
    debug(`importing ${startupFile} as an ES module`);
    import(url.pathToFileURL(startupFile).href).then(() => debug('the app is loaded'), onLoadError);
  } else {
    debug(`loading ${startupFile} as a CommonJS module`);
    try {
      if (typeof Module._load === 'function') Module._load(startupFile, null, true); // require.main === the app
      else require(startupFile);
      debug('the app is loaded');
    } catch (err) {
      onLoadError(err);
    }
  }
}

// ---- stopping -------------------------------------------------------------------------------

// What a graceful stop waits for: the requests being handled, and the connections that are
// not upgraded (WebSocket & co. are long-lived; they are cut when the last request is done).
const kUpgraded = Symbol('passenger upgraded');
const tracked = { connections: new Set(), requests: 0 };

function trackConnections(server) {
  server.on('connection', (socket) => {
    tracked.connections.add(socket);
    socket.once('close', () => {
      tracked.connections.delete(socket);
      if (state.stopping) exitIfDone();
    });
  });
  server.prependListener('request', (req, res) => {
    tracked.requests++;
    if (state.stopping && !res.headersSent) res.setHeader('Connection', 'close');
    res.once('close', () => {
      tracked.requests--;
      // Once node is done with the response, its keep-alive connection is idle.
      if (state.stopping) setImmediate(closeIdleConnections);
    });
  });
  // Seeing 'upgrade'/'connect' without listening for them: a listener would change whether node
  // emits them at all.
  const emit = server.emit;
  server.emit = function (event, ...args) {
    if ((event === 'upgrade' || event === 'connect') && args[1]) args[1][kUpgraded] = true;
    return emit.call(this, event, ...args);
  };
}

function closeIdleConnections() {
  const server = state.server;
  if (server && typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
  exitIfDone();
}

function exitIfDone() {
  if (tracked.requests > 0) return;
  for (const socket of tracked.connections) if (!socket[kUpgraded]) return;
  debug('no requests are running any more');
  exitNow(0);
}

function exitNow(code) {
  removeSocket();
  process.exit(code);
}

function requestStop(why) {
  if (state.stopping) return;
  state.stopping = true;
  debug(`stopping: ${why}`);
  if (!state.ready) {
    exitNow(0); // stopped while starting: the core is no longer waiting for this process
    return;
  }
  process.stdin.pause();
  setTimeout(() => {
    writeAllSync(2, `[node-loader ${process.pid}] requests were still running ${EXIT_GRACE_MS / 1000} s after the stop request; exiting anyway\n`);
    exitNow(0);
  }, EXIT_GRACE_MS);
  // Stop accepting; node closes the idle keep-alive connections (node >= 19; below, we do).
  state.server.close(() => exitNow(0));
  closeIdleConnections();
}

// ---- main -----------------------------------------------------------------------------------

function main() {
  makeStdioBlocking();
  readOptions(loadApp);
  guardAppStdout();
  process.stdout.on('error', (e) => {
    if (e.code !== 'EPIPE') throw e; // EPIPE: the core is gone; stdin's EOF stops us
  });
}

if (require.main === module) main();
