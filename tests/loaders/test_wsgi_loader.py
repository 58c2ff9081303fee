#!/usr/bin/env python3
"""End-to-end tests of loaders/wsgi-loader.py: the real loader process, driven the way the core
drives it (handshake on stdin/stdout, session protocol on its unix socket), serving a test app
whose `application` goes through wsgiref.validate.validator.

Run: python3 tests/loaders/test_wsgi_loader.py   (stdlib only; the loader runs under the same
interpreter as the tests).
"""

import hashlib
import json
import os
import queue
import re
import secrets
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

LOADER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'loaders', 'wsgi-loader.py')
WAIT = 15  # seconds any single step may take before the test gives up, with a message

APP = r'''
import hashlib, json, os, socket, sys, threading, time
from urllib.parse import parse_qs
from wsgiref.validate import validator

# Output without a newline at import: the loader must keep its protocol lines apart.
sys.stdout.write("app says hello without a newline")

LOCK = threading.Lock()
CLOSED = []
HERE = os.path.dirname(os.path.abspath(__file__))


def as_json(start_response, obj, status='200 OK'):
    body = json.dumps(obj, sort_keys=True).encode('utf-8')
    start_response(status, [('Content-Type', 'application/json'),
                            ('Content-Length', str(len(body)))])
    return [body]


class Closing:
    def __init__(self, tag, fail):
        self.tag, self.fail = tag, fail

    def __iter__(self):
        yield b'chunk-1;'
        if self.fail:
            raise RuntimeError('failing in the middle of the body of ' + self.tag)
        yield b'chunk-2'

    def close(self):
        with LOCK:
            CLOSED.append(self.tag)


def block(i):
    return hashlib.sha256(str(i).encode()).digest() * 32768  # 1 MiB


def app(environ, start_response):
    path = environ['PATH_INFO']
    q = {k: v[0] for k, v in parse_qs(environ['QUERY_STRING']).items()}
    inp = environ['wsgi.input']
    if path == '/env':
        keys = ['REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_NAME',
                'SERVER_PORT', 'SERVER_PROTOCOL', 'REMOTE_ADDR', 'CONTENT_TYPE', 'HTTP_X_FOO',
                'wsgi.url_scheme', 'wsgi.multithread', 'wsgi.multiprocess', 'wsgi.run_once']
        out = {k: environ.get(k) for k in keys}
        out.update({
            'wsgi.version': list(environ['wsgi.version']),
            'file_wrapper': callable(environ.get('wsgi.file_wrapper')),
            'password_hidden': 'PASSENGER_CONNECT_PASSWORD' not in environ,
            'cwd': os.getcwd(), 'file': __file__, 'sys_path0': sys.path[0],
            'query': q, 'thread': threading.get_ident(),
            # (the validator wraps wsgi.errors; the loader's own is underneath)
            'errors_is_stderr': getattr(environ['wsgi.errors'], 'errors', None) is sys.stderr,
        })
        return as_json(start_response, out)
    if path == '/form':
        data = inp.read(int(environ.get('CONTENT_LENGTH') or 0))
        return as_json(start_response, {'form': parse_qs(data.decode()),
                                         'type': environ.get('CONTENT_TYPE')})
    if path == '/sum':
        digest, total = hashlib.sha256(), 0
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
        return as_json(start_response, {'sha256': digest.hexdigest(), 'length': total,
                                        'after_end': inp.read(10).decode('latin-1')})
    if path == '/lines':
        out = {'readline': inp.readline(), 'readline_2': inp.readline(2),
               'readline_rest': inp.readline(), 'readlines_hint': inp.readlines(1),
               'iterated': list(inp), 'after_end': inp.readline()}
        return as_json(start_response, {k: (v.decode() if isinstance(v, bytes)
                                             else [x.decode() for x in v])
                                         for k, v in out.items()})
    if path == '/head':
        body = b'body of a resource that answers HEAD'
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    if path == '/status':
        code = q['code']
        start_response(code + (' No Content' if code == '204' else ' Not Modified'),
                       [('ETag', '"v1"')])
        return [b'this body must never be sent']
    if path == '/stream':
        def gen():
            start_response('200 OK', [('Content-Type', 'text/plain')])  # lazily, in the body
            yield b'first;'
            yield b''
            if 'signal' in q:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(10)
                s.connect(q['signal'])
                got = s.recv(16)
                s.close()
                yield b'after-signal:' + got + b';'
            yield b'last'
        return gen()
    if path == '/big':
        def gen():
            start_response('200 OK', [('Content-Type', 'application/octet-stream')])
            for i in range(int(q['mb'])):
                yield block(i)
        return gen()
    if path == '/cookies':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Set-Cookie', 'a=1; Path=/'),
                                  ('Set-Cookie', 'b=2; HttpOnly')])
        return [b'two cookies']
    if path == '/write':
        write = start_response('200 OK', [('Content-Type', 'text/plain')])
        write(b'written-1;')
        write(b'written-2;')
        return [b'returned']
    if path == '/excinfo':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        try:
            raise ValueError('changed my mind')
        except ValueError:
            start_response('503 Service Unavailable', [('Content-Type', 'text/plain'),
                                                       ('Retry-After', '7')], sys.exc_info())
        return [b'replaced']
    if path == '/excinfo-late':
        def gen():
            start_response('200 OK', [('Content-Type', 'text/plain')])
            yield b'partial;'
            try:
                raise ValueError('too late')
            except ValueError:
                try:
                    start_response('500 Internal Server Error',
                                   [('Content-Type', 'text/plain')], sys.exc_info())
                except ValueError as e:
                    yield ('reraised:%s' % e).encode()
        return gen()
    if path == '/closing':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return Closing(q['tag'], q.get('fail') == '1')
    if path == '/closed':
        with LOCK:
            return as_json(start_response, {'closed': list(CLOSED)})
    if path == '/error':
        raise LookupError('deliberate failure before start_response')
    if path == '/error-in-body':
        def gen():
            start_response('200 OK', [('Content-Type', 'text/plain')])
            raise KeyError('deliberate failure before the first chunk')
            yield b'never'
        return gen()
    if path == '/print':
        print('printed during request', q['tag'])
        return as_json(start_response, {'printed': q['tag']})
    if path == '/gated':  # connects to the test's `signal` socket, answers once it says so
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(q['signal'])
        got = s.recv(16)
        s.close()
        return as_json(start_response, {'got': got.decode()})
    if path == '/slow':
        start = time.monotonic()
        time.sleep(0.5)  # the work of a slow request
        return as_json(start_response, {'start': start, 'end': time.monotonic(),
                                        'thread': threading.get_ident(),
                                        'multithread': environ['wsgi.multithread']})
    if path == '/filewrapper':
        f = open(os.path.join(HERE, 'data.bin'), 'rb')
        f.seek(10)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f, 4096)
    return as_json(start_response, {'SCRIPT_NAME': environ['SCRIPT_NAME'], 'PATH_INFO': path},
                   '404 Not Found')


def raw(environ, start_response):
    """Routes that do what the validator forbids (but PEP 3333 allows)."""
    path = environ['PATH_INFO']
    inp = environ['wsgi.input']
    if path == '/raw/read':
        out = {'all': inp.read().decode(), 'again': inp.read().decode(),
               'none': inp.read(None).decode(), 'negative': inp.read(-1).decode()}
        return as_json(start_response, out)
    if path == '/raw/filewrapper':
        f = open(os.path.join(HERE, 'data.bin'), 'rb')
        f.seek(10)
        size = os.path.getsize(f.name) - 10
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(size))])
        return environ['wsgi.file_wrapper'](f)
    if path == '/raw/str-body':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return ['text is not bytes']
    # Keep-alive: responses whose end the core can or cannot find.
    if path == '/raw/list':  # the loader adds the Content-Length
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'several ', b'chunks ', b'of a list']
    if path == '/raw/gen':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return iter([b'generated ', b'without a length'])
    if path == '/raw/longer':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '5')])
        body = [b'hel', b'lo, and more', b' and more']
        return body if environ['QUERY_STRING'] == 'list' else iter(body)
    if path == '/raw/shorter':
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '10')])
        return iter([b'short'])
    if path == '/raw/write-with-length':
        write = start_response('200 OK', [('Content-Length', '12')])
        write(b'written;')
        return [b'rest']
    if path == '/raw/connection-close':
        start_response('200 OK', [('Content-Length', '2'), ('Connection', 'close')])
        return [b'ok']
    if path == '/raw/transfer-encoding':
        start_response('200 OK', [('Content-Length', '2'), ('Transfer-Encoding', 'identity')])
        return [b'ok']
    return as_json(start_response, {}, '404 Not Found')


validated = validator(app)


def application(environ, start_response):
    if environ['PATH_INFO'].startswith('/raw/'):
        return raw(environ, start_response)
    return validated(environ, start_response)
'''


class Response:
    def __init__(self, raw):
        self.raw = raw
        head, sep, self.body = raw.partition(b'\r\n\r\n')
        if not sep:
            raise AssertionError('no complete response head in %r' % raw[:200])
        lines = head.decode('latin-1').split('\r\n')
        self.status_line = lines[0]
        m = re.match(r'HTTP/1\.1 (\d{3}) (.*)\Z', lines[0])
        if not m:
            raise AssertionError('bad status line %r' % lines[0])
        self.status = int(m.group(1))
        self.reason = m.group(2)
        self.headers = [tuple(line.split(': ', 1)) for line in lines[1:]]

    def header(self, name):
        values = self.all(name)
        return values[0] if values else None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode('utf-8'))


def encode_header(pairs):
    data = b''.join(k + b'\0' + v + b'\0' for k, v in pairs)
    return struct.pack('>I', len(data)) + data


def as_bytes(v):
    return v if isinstance(v, bytes) else str(v).encode('utf-8')


class Loader:
    """A running wsgi-loader.py with its stdout and stderr collected by reader threads."""

    def __init__(self, app_root, socket_dir, cwd=None, **options):
        env = dict(os.environ)
        env.pop('PYTHONUNBUFFERED', None)  # the loader must make output prompt by itself
        env['PYTHONDONTWRITEBYTECODE'] = '1'
        self.proc = subprocess.Popen([sys.executable, LOADER], cwd=cwd or app_root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.password = secrets.token_hex(16)
        self.options = {'app_root': app_root, 'connect_password': self.password,
                        'socket_dir': socket_dir, 'environment': 'test', 'log_level': '3',
                        'app_type': 'wsgi'}
        self.options.update({k: str(v) for k, v in options.items()})
        self.cond = threading.Condition()
        self.stdout = []
        self.stderr = []
        self.consumed = 0
        self.socket_line = None
        self.path = None
        self.ended = set()
        for pipe, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._collect, args=(pipe, lines), daemon=True).start()

    def _collect(self, pipe, lines):
        for raw in iter(pipe.readline, b''):
            with self.cond:
                lines.append(raw.decode('utf-8', 'replace').rstrip('\n'))
                self.cond.notify_all()
        with self.cond:
            self.ended.add(id(lines))
            self.cond.notify_all()

    def wait_stdout_eof(self):
        with self.cond:
            if not self.cond.wait_for(lambda: id(self.stdout) in self.ended, WAIT):
                raise AssertionError('stdout still open %d s after exit\n%s'
                                     % (WAIT, self.output()))

    def output(self):
        with self.cond:
            return 'stdout:\n  %s\nstderr:\n  %s' % ('\n  '.join(self.stdout),
                                                   '\n  '.join(self.stderr))

    def next_line(self, what):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.stdout) > self.consumed, WAIT):
                raise AssertionError('the loader printed no line within %d s while waiting for '
                                     '%s (exit status %s)\n%s' % (WAIT, what, self.proc.poll(),
                                                                  self.output()))
            line = self.stdout[self.consumed]
            self.consumed += 1
            return line

    def wait_for_line(self, stream, needle):
        lines = self.stdout if stream == 'stdout' else self.stderr
        with self.cond:
            if not self.cond.wait_for(lambda: any(needle in line for line in lines), WAIT):
                raise AssertionError('no %s line containing %r within %d s\n%s'
                                     % (stream, needle, WAIT, self.output()))

    def greet(self):
        line = self.next_line('the greeting')
        if line != '!> I have control 1.0':
            raise AssertionError('first line %r, expected the greeting\n%s'
                                 % (line, self.output()))
        text = 'You have control 1.0\n' + ''.join('%s: %s\n' % kv for kv in self.options.items())
        self.proc.stdin.write(text.encode() + b'\n')
        self.proc.stdin.flush()

    def handshake(self):
        """Runs the handshake; returns the non-protocol lines printed before `!> Ready`."""
        self.greet()
        app_lines = []
        while True:
            line = self.next_line('!> Ready')
            if line == '!> Ready':
                break
            if line.startswith('!> '):
                raise AssertionError('protocol line %r before Ready\n%s' % (line, self.output()))
            app_lines.append(line)
        self.socket_line = self.next_line('the socket line')
        m = re.match(r'!> socket: main;unix:(.+);session;(\d+)\Z', self.socket_line)
        if not m:
            raise AssertionError('bad socket line %r' % self.socket_line)
        self.path = m.group(1)
        self.concurrency = int(m.group(2))
        terminator = self.next_line('the terminator')
        self.prefetch = 0
        m = re.match(r'!> prefetch: (\d+)\Z', terminator)
        if m:
            self.prefetch = int(m.group(1))
            terminator = self.next_line('the terminator')
        if terminator != '!> ':
            raise AssertionError('expected "!> " (with its space), got %r' % terminator)
        return app_lines

    def send(self, data, shutdown=True, reset_ok=False):
        """Sends raw bytes on a new connection; returns everything the loader answered.
        With reset_ok, a reset after the answer counts as its end: a unix socket closed with
        unread bytes in it (those sent beyond CONTENT_LENGTH) resets its peer, after the peer
        has read all that was sent to it."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(WAIT)
        try:
            s.connect(self.path)
            s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                try:
                    chunk = s.recv(1 << 20)
                except ConnectionResetError:
                    if reset_ok and chunks:
                        return b''.join(chunks)
                    raise
                if not chunk:
                    return b''.join(chunks)
                chunks.append(chunk)
        finally:
            s.close()

    def header(self, method, uri, body=b'', env=None, password=None):
        path, _, query = uri.partition('?')
        pairs = {'REQUEST_METHOD': method, 'REQUEST_URI': uri, 'PATH_INFO': path,
                 'QUERY_STRING': query, 'SCRIPT_NAME': '', 'SERVER_NAME': 'example.test',
                 'SERVER_PORT': '80', 'SERVER_PROTOCOL': 'HTTP/1.1', 'REMOTE_ADDR': '127.0.0.1',
                 'CONTENT_LENGTH': len(body),
                 'PASSENGER_CONNECT_PASSWORD': self.password if password is None else password}
        pairs.update(env or {})
        return encode_header([(as_bytes(k), as_bytes(v)) for k, v in pairs.items()
                              if v is not None])

    def request(self, method, uri, body=b'', env=None, trailing=b''):
        return Response(self.send(self.header(method, uri, body, env) + body + trailing,
                                  reset_ok=bool(trailing)))

    def stop(self, how=b''):
        """Closes stdin (or sends a byte first); returns the exit status."""
        try:
            if how:
                self.proc.stdin.write(how)
                self.proc.stdin.flush()
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError('the loader did not exit within %d s of the stop signal\n%s'
                                 % (WAIT, self.output())) from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except Exception:
                pass


class Conn:
    """One connection carrying requests one after the other, as the core's kept ones do."""

    def __init__(self, loader):
        self.loader = loader
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(WAIT)
        self.sock.connect(loader.path)
        self.buf = b''

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def _fill(self, what):
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError('nothing more within %d s while reading %s; got %r\n%s'
                                 % (WAIT, what, self.buf[:300], self.loader.output())) from None
        if not chunk:
            raise AssertionError('the connection closed while reading %s; got %r\n%s'
                                 % (what, self.buf[:300], self.loader.output()))
        self.buf += chunk

    def _head(self, what):
        while b'\r\n\r\n' not in self.buf:
            self._fill('the head of ' + what)
        head, _, self.buf = self.buf.partition(b'\r\n\r\n')
        return Response(head + b'\r\n\r\n')

    def send(self, method, uri, body=b'', env=None):
        self.sock.sendall(self.loader.header(method, uri, body, env) + body)

    def request(self, method, uri, body=b'', env=None):
        """Sends a request and reads exactly its response, by its Content-Length (none for
        HEAD, 1xx, 204 and 304), leaving the connection open."""
        self.send(method, uri, body, env)
        return self.response(method, uri)

    def response(self, method, uri):
        """Reads exactly the response to the request `method uri` sent before."""
        what = '%s %s' % (method, uri)
        r = self._head(what)
        if method == 'HEAD' or r.status < 200 or r.status in (204, 304):
            length = 0
        else:
            lengths = r.all('Content-Length')
            if len(lengths) != 1:
                raise AssertionError('%s: a kept response needs one Content-Length: %r'
                                     % (what, r.headers))
            length = int(lengths[0])
        while len(self.buf) < length:
            self._fill('the body of ' + what)
        r.body, self.buf = self.buf[:length], self.buf[length:]
        if self.buf:
            raise AssertionError('%s: %r after the end of the response' % (what, self.buf[:300]))
        return r

    def request_to_eof(self, method, uri, body=b'', env=None):
        """Sends a request and reads its response up to the loader's close."""
        self.send(method, uri, body, env)
        r = self._head('%s %s' % (method, uri))
        r.body = self.buf + self.rest()
        self.buf = b''
        return r

    def rest(self):
        """What comes until EOF, which must come within WAIT."""
        chunks = []
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise AssertionError('the loader kept the connection open for %d s; expected '
                                     'EOF after %r\n%s' % (WAIT, b''.join(chunks)[:300],
                                                           self.loader.output())) from None
            if not chunk:
                return b''.join(chunks)
            chunks.append(chunk)


def stop_within(loader, seconds):
    """Stops the loader (EOF on stdin); fails unless it exits 0 within `seconds`."""
    start = time.monotonic()
    loader.proc.stdin.close()
    try:
        status = loader.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError('the loader did not exit within %.1f s of the stop signal while '
                             'a kept connection was idle\n%s'
                             % (seconds, loader.output())) from None
    if status != 0:
        raise AssertionError('exit status %s\n%s' % (status, loader.output()))
    return time.monotonic() - start


def big_digest(mb):
    digest = hashlib.sha256()
    for i in range(mb):
        digest.update(hashlib.sha256(str(i).encode()).digest() * 32768)
    return digest.hexdigest()


class LoaderTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='wsgi-loader-test.')
        cls.app_root = os.path.join(cls.tmp, 'app')
        cls.socket_dir = os.path.join(cls.tmp, 'sockets')
        os.mkdir(cls.app_root)
        os.mkdir(cls.socket_dir)
        with open(os.path.join(cls.app_root, 'passenger_wsgi.py'), 'w') as f:
            f.write(APP)
        with open(os.path.join(cls.app_root, 'data.bin'), 'wb') as f:
            f.write(bytes(range(256)) * 1000 + b'tail')
        cls.loaders = []

    @classmethod
    def tearDownClass(cls):
        for loader in cls.loaders:
            loader.kill()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def start(cls, app_root=None, socket_dir=None, **options):
        loader = Loader(app_root or cls.app_root, socket_dir or cls.socket_dir, **options)
        cls.loaders.append(loader)
        return loader


class ServingTest(LoaderTestCase):
    """One loader (thread_count 1, base_uri /sub) serves all these requests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.loader = cls.start(cwd=cls.tmp, base_uri='/sub')
        cls.app_lines = cls.loader.handshake()

    def test_handshake_and_socket(self):
        self.assertEqual(self.loader.concurrency, 1)
        name = os.path.basename(self.loader.path)
        self.assertRegex(name, r'\Apython\.[0-9a-f]{16}\Z')
        self.assertEqual(os.path.dirname(self.loader.path), self.socket_dir)
        mode = os.stat(self.loader.path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        # The app's unfinished line came out as a line of its own, not glued to `!> Ready`.
        self.assertIn('app says hello without a newline', self.app_lines)

    def test_get_with_query_string(self):
        r = self.loader.request('GET', '/env?a=1&b=two%20words',
                                env={'HTTP_X_FOO': 'bar', 'HTTPS': 'on'})
        self.assertEqual(r.status_line, 'HTTP/1.1 200 OK')
        self.assertEqual(r.header('Content-Type'), 'application/json')
        env = r.json()
        self.assertEqual(env['REQUEST_METHOD'], 'GET')
        self.assertEqual(env['QUERY_STRING'], 'a=1&b=two%20words')
        self.assertEqual(env['query'], {'a': '1', 'b': 'two words'})
        self.assertEqual(env['PATH_INFO'], '/env')
        self.assertEqual(env['SCRIPT_NAME'], '')
        self.assertEqual(env['HTTP_X_FOO'], 'bar')
        self.assertEqual(env['SERVER_NAME'], 'example.test')
        self.assertEqual(env['wsgi.version'], [1, 0])
        self.assertEqual(env['wsgi.url_scheme'], 'https')
        self.assertIs(env['wsgi.multithread'], False)
        self.assertIs(env['wsgi.multiprocess'], True)
        self.assertIs(env['wsgi.run_once'], False)
        self.assertTrue(env['file_wrapper'])
        self.assertTrue(env['password_hidden'])
        self.assertTrue(env['errors_is_stderr'])
        self.assertEqual(os.path.realpath(env['cwd']), os.path.realpath(self.app_root))
        self.assertEqual(env['file'], os.path.join(self.app_root, 'passenger_wsgi.py'))
        self.assertEqual(env['sys_path0'], self.app_root)
        r = self.loader.request('GET', '/env', env={'HTTPS': None})
        self.assertEqual(r.json()['wsgi.url_scheme'], 'http')

    def test_post_form(self):
        body = b'name=J%C3%BCrgen&lang=python&lang=ruby'
        r = self.loader.request('POST', '/form', body,
                                env={'CONTENT_TYPE': 'application/x-www-form-urlencoded'})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {'form': {'name': ['J\u00fcrgen'],
                                             'lang': ['python', 'ruby']},
                                    'type': 'application/x-www-form-urlencoded'})

    def test_5mb_body_not_read_past_content_length(self):
        body = os.urandom(5 * 1024 * 1024)
        r = self.loader.request('POST', '/sum', body, trailing=b'BEYOND THE BODY')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {'sha256': hashlib.sha256(body).hexdigest(),
                                    'length': len(body), 'after_end': ''})

    def test_input_methods(self):
        body = b'alpha\nbeta\ngamma\ndelta\nepsilon'
        r = self.loader.request('POST', '/lines', body, trailing=b'\nJUNK\n')
        self.assertEqual(r.json(), {'readline': 'alpha\n', 'readline_2': 'be',
                                    'readline_rest': 'ta\n', 'readlines_hint': ['gamma\n'],
                                    'iterated': ['delta\n', 'epsilon'], 'after_end': ''})
        r = self.loader.request('POST', '/raw/read', b'whole body', trailing=b'JUNK')
        self.assertEqual(r.json(), {'all': 'whole body', 'again': '', 'none': '',
                                    'negative': ''})

    def test_head_has_no_body(self):
        get = self.loader.request('GET', '/head')
        self.assertEqual(get.body, b'body of a resource that answers HEAD')
        head = self.loader.request('HEAD', '/head')
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header('Content-Length'), str(len(get.body)))
        self.assertEqual(head.body, b'')
        stream = self.loader.request('HEAD', '/stream')
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.body, b'')

    def test_204_and_304_have_no_body(self):
        for code in (204, 304):
            r = self.loader.request('GET', '/status?code=%d' % code)
            self.assertEqual(r.status, code)
            self.assertEqual(r.header('ETag'), '"v1"')
            self.assertEqual(r.body, b'', 'status %d' % code)

    def test_streaming_generator(self):
        signal_path = os.path.join(self.tmp, 'signal.%s' % secrets.token_hex(4))
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(signal_path)
        listener.listen(1)
        listener.settimeout(WAIT)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(WAIT)
        try:
            s.connect(self.loader.path)
            s.sendall(self.loader.header('GET', '/stream?signal=' + signal_path))
            received = b''
            # The first chunk arrives while the generator is still waiting for the signal.
            while b'first;' not in received:
                chunk = s.recv(65536)
                self.assertTrue(chunk, 'connection closed before the first chunk: %r' % received)
                received += chunk
            app_conn, _ = listener.accept()
            app_conn.sendall(b'go')
            app_conn.close()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        finally:
            s.close()
            listener.close()
        r = Response(received)
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header('Content-Length'))
        self.assertEqual(r.body, b'first;after-signal:go;last')

    def test_50mb_response(self):
        r = self.loader.request('GET', '/big?mb=50')
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header('Content-Length'))  # the connection close ends it
        self.assertEqual(len(r.body), 50 * 1024 * 1024)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), big_digest(50))

    def test_multi_value_headers(self):
        r = self.loader.request('GET', '/cookies')
        self.assertEqual(r.all('Set-Cookie'), ['a=1; Path=/', 'b=2; HttpOnly'])
        self.assertEqual(r.body, b'two cookies')

    def test_non_ascii_path(self):
        decoded = '/caf\u00e9/na\u00efve'
        native = decoded.encode('utf-8').decode('latin-1')  # PEP 3333: bytes as latin-1
        encoded = '/caf%C3%A9/na%C3%AFve'
        # Percent-encoded in both REQUEST_URI and PATH_INFO.
        r = self.loader.request('GET', encoded + '?x=1')
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json(), {'SCRIPT_NAME': '', 'PATH_INFO': native})
        # nginx's form: PATH_INFO already decoded (raw UTF-8); it must not be decoded again.
        r = self.loader.request('GET', '/caf%C3%A9/100%2541',
                                env={'PATH_INFO': '/caf\u00e9/100%41'.encode('utf-8')})
        self.assertEqual(r.json()['PATH_INFO'],
                         '/caf\u00e9/100%41'.encode('utf-8').decode('latin-1'))
        # No PATH_INFO at all: it comes from REQUEST_URI.
        r = self.loader.request('GET', encoded + '?x=1', env={'PATH_INFO': None})
        self.assertEqual(r.json()['PATH_INFO'], native)

    def test_base_uri(self):
        r = self.loader.request('GET', '/sub/env?q=1')
        env = r.json()
        self.assertEqual((env['SCRIPT_NAME'], env['PATH_INFO']), ('/sub', '/env'))
        self.assertEqual(self.loader.request('GET', '/sub').json(),
                         {'SCRIPT_NAME': '/sub', 'PATH_INFO': ''})
        self.assertEqual(self.loader.request('GET', '/subway').json(),
                         {'SCRIPT_NAME': '', 'PATH_INFO': '/subway'})
        # The same app under another base URI: nginx's split of this request wins.
        r = self.loader.request('GET', '/other/env',
                                env={'SCRIPT_NAME': '/other', 'PATH_INFO': '/env'})
        self.assertEqual((r.json()['SCRIPT_NAME'], r.json()['PATH_INFO']), ('/other', '/env'))

    def test_write_callable(self):
        r = self.loader.request('GET', '/write')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'written-1;written-2;returned')

    def test_exc_info_replaces_unsent_headers(self):
        r = self.loader.request('GET', '/excinfo')
        self.assertEqual(r.status_line, 'HTTP/1.1 503 Service Unavailable')
        self.assertEqual(r.header('Retry-After'), '7')
        self.assertEqual(r.body, b'replaced')

    def test_exc_info_reraised_after_headers_sent(self):
        r = self.loader.request('GET', '/excinfo-late')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'partial;reraised:too late')

    def test_close_is_called(self):
        tag = secrets.token_hex(4)
        r = self.loader.request('GET', '/closing?tag=ok-' + tag)
        self.assertEqual(r.body, b'chunk-1;chunk-2')
        r = self.loader.request('GET', '/closing?tag=fail-' + tag + '&fail=1')
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'chunk-1;')  # cut short after the failure
        r = self.loader.request('HEAD', '/closing?tag=head-' + tag)
        self.assertEqual(r.body, b'')
        closed = self.loader.request('GET', '/closed').json()['closed']
        for t in ('ok-', 'fail-', 'head-'):
            self.assertIn(t + tag, closed)
        self.loader.wait_for_line('stderr', 'failing in the middle of the body of fail-' + tag)

    def test_app_error_gives_500(self):
        for uri, needle in (('/error', 'LookupError: deliberate failure before start_response'),
                            ('/error-in-body', 'deliberate failure before the first chunk'),
                            ('/raw/str-body', 'WSGI body chunks must be bytes')):
            r = self.loader.request('GET', uri)
            self.assertEqual(r.status_line, 'HTTP/1.1 500 Internal Server Error', uri)
            self.assertEqual(r.body, b'Internal Server Error\n')
            self.loader.wait_for_line('stderr', needle)
        self.loader.wait_for_line('stderr', 'Error in the WSGI app while handling GET /error')

    def test_file_wrapper(self):
        with open(os.path.join(self.app_root, 'data.bin'), 'rb') as f:
            expected = f.read()[10:]
        for uri in ('/filewrapper', '/raw/filewrapper'):
            r = self.loader.request('GET', uri)
            self.assertEqual(r.status, 200, uri)
            self.assertEqual(r.body, expected, uri)
        self.assertEqual(self.loader.request('GET', '/raw/filewrapper').header('Content-Length'),
                         str(len(expected)))

    def test_app_prints_reach_stdout(self):
        tag = secrets.token_hex(4)
        r = self.loader.request('GET', '/print?tag=' + tag)
        self.assertEqual(r.json(), {'printed': tag})
        self.loader.wait_for_line('stdout', 'printed during request ' + tag)

    def test_wrong_password_refused(self):
        for password in ('not-the-password', None):
            env = {'PASSENGER_CONNECT_PASSWORD': password}
            answer = self.loader.send(self.loader.header('GET', '/env', env=env))
            self.assertEqual(answer, b'', 'password %r' % password)
        self.loader.wait_for_line('stderr', 'a wrong connect password')
        self.loader.wait_for_line('stderr', 'no connect password')
        self.assertEqual(self.loader.request('GET', '/env').status, 200)

    def test_malformed_headers_do_not_kill_the_loader(self):
        bad = [
            b'\xff\xff\xff\xff',                                  # over the size limit
            struct.pack('>I', 9) + b'K1\0V1\0K2\0',               # a key without a value
            struct.pack('>I', 100) + b'short',                    # ends inside the header
            b'\0\0',                                              # ends inside the length
            self.loader.header('GET', '/env', env={'CONTENT_LENGTH': 'lots'}),
            self.loader.header('POST', '/sum', env={'CONTENT_LENGTH': 100}) + b'too short',
        ]
        for data in bad:
            self.assertEqual(self.loader.send(data), b'', data[:20])
            self.assertIsNone(self.loader.proc.poll(), 'the loader exited after %r\n%s'
                              % (data[:20], self.loader.output()))
        self.loader.wait_for_line('stderr', 'over the limit')
        self.loader.wait_for_line('stderr', 'key without a value')
        self.loader.wait_for_line('stderr', 'is not a number of bytes')
        self.loader.wait_for_line('stderr', 'the request body ended after 9 of its 100 bytes')
        self.assertEqual(self.loader.request('GET', '/env').status, 200)


class ThreadsTest(LoaderTestCase):
    def test_thread_count_4_serves_concurrently(self):
        loader = self.start(thread_count=4)
        loader.handshake()
        self.assertEqual(loader.concurrency, 4)
        results = [None] * 4
        errors = []

        def fetch(i):
            try:
                results[i] = loader.request('GET', '/slow').json()
            except Exception as e:  # reported below
                errors.append(e)

        clients = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(WAIT)
        self.assertFalse(any(c.is_alive() for c in clients), 'requests still running after '
                         '%d s\n%s' % (WAIT, loader.output()))
        self.assertEqual(errors, [])
        # All four ran at the same time: each started before any of them ended.
        self.assertLess(max(r['start'] for r in results), min(r['end'] for r in results),
                        results)
        self.assertEqual(len({r['thread'] for r in results}), 4)
        self.assertTrue(all(r['multithread'] for r in results))
        path = loader.path
        self.assertEqual(loader.stop(), 0, loader.output())
        self.assertFalse(os.path.exists(path))


class KeepAliveTest(LoaderTestCase):
    """Several requests on one connection: kept when the core can find the end of each
    response, closed (with `Connection: close` in the head) when it cannot."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.single = cls.start()
        cls.single.handshake()
        cls.threaded = cls.start(thread_count=2)
        cls.threaded.handshake()

    def modes(self):
        return (('single', self.single), ('threaded', self.threaded))

    def assert_kept(self, r):
        self.assertEqual(r.all('Connection'), [], r.raw)

    def assert_closing(self, r):
        self.assertIn('close', [v.lower() for v in r.all('Connection')], r.raw)

    def test_requests_in_a_row_on_one_connection(self):
        for mode, loader in self.modes():
            with self.subTest(mode):
                with Conn(loader) as c:
                    r = c.request('GET', '/env?n=1')
                    self.assertEqual((r.status, r.json()['query']), (200, {'n': '1'}))
                    self.assert_kept(r)
                    r = c.request('HEAD', '/head')
                    self.assertEqual((r.status, r.header('Content-Length'), r.body),
                                     (200, '36', b''))
                    self.assert_kept(r)
                with Conn(loader) as c:
                    r = c.request('GET', '/status?code=204')
                    self.assertEqual((r.status, r.header('ETag')), (204, '"v1"'))
                    self.assert_kept(r)
                    form = b'name=J%C3%BCrgen&lang=python'
                    r = c.request('POST', '/form', form,
                                  env={'CONTENT_TYPE': 'application/x-www-form-urlencoded'})
                    self.assertEqual(r.json()['form'],
                                     {'name': ['J\u00fcrgen'], 'lang': ['python']})
                    self.assert_kept(r)
                    r = c.request('GET', '/raw/list')  # the loader added the Content-Length
                    self.assertEqual((r.header('Content-Length'), r.body),
                                     ('24', b'several chunks of a list'))
                    r = c.request('GET', '/raw/write-with-length')
                    self.assertEqual(r.body, b'written;rest')
                    r = c.request('HEAD', '/stream')  # no length, but no body either
                    self.assertEqual((r.status, r.body), (200, b''))
                    self.assert_kept(r)
                    r = c.request('GET', '/status?code=304')
                    self.assertEqual(r.status, 304)
                    body = os.urandom(300 * 1024)
                    r = c.request('POST', '/sum', body)
                    self.assertEqual(r.json()['sha256'], hashlib.sha256(body).hexdigest())
                    self.assert_kept(r)

    def test_each_thread_keeps_its_connection(self):
        with Conn(self.threaded) as a, Conn(self.threaded) as b:
            threads = {}
            for conn, name in ((a, 'a'), (b, 'b'), (a, 'a'), (b, 'b'), (a, 'a')):
                threads.setdefault(name, set()).add(conn.request('GET', '/env').json()['thread'])
            self.assertEqual([len(threads['a']), len(threads['b'])], [1, 1], threads)
            self.assertNotEqual(threads['a'], threads['b'])

    def test_unframed_responses_say_connection_close_and_close(self):
        cases = [('/stream', b'first;last'),  # a generator without Content-Length
                 ('/raw/gen', b'generated without a length'),
                 ('/write', b'written-1;written-2;returned'),  # the write() callable
                 ('/error', b'Internal Server Error\n'),
                 ('/raw/connection-close', b'ok'),  # the app's own Connection: close
                 ('/raw/transfer-encoding', b'ok')]
        for mode, loader in self.modes():
            with self.subTest(mode):
                for uri, body in cases:
                    with Conn(loader) as c:
                        r = c.request('GET', '/env')  # a kept one first
                        self.assert_kept(r)
                        r = c.request_to_eof('GET', uri)
                        status = 500 if uri == '/error' else 200
                        self.assertEqual((r.status, r.body), (status, body), uri)
                        self.assert_closing(r)

    def test_body_longer_than_content_length_is_cut_and_the_connection_kept(self):
        for mode, loader in self.modes():
            with self.subTest(mode):
                with Conn(loader) as c:
                    for how in ('gen', 'list'):
                        r = c.request('GET', '/raw/longer?' + how)  # fails on bytes beyond it
                        self.assertEqual((r.header('Content-Length'), r.body), ('5', b'hello'), how)
                        self.assert_kept(r)
                    self.assertEqual(c.request('GET', '/env').status, 200)
                loader.wait_for_line('stderr', 'GET /raw/longer?list was 19 bytes longer than its '
                                               'Content-Length (5)')

    def test_body_shorter_than_content_length_closes(self):
        for mode, loader in self.modes():
            with self.subTest(mode):
                with Conn(loader) as c:
                    r = c.request_to_eof('GET', '/raw/shorter')
                    self.assertEqual((r.header('Content-Length'), r.body), ('10', b'short'))

    def test_every_request_is_checked_for_the_password(self):
        for mode, loader in self.modes():
            with self.subTest(mode):
                with Conn(loader) as c:
                    self.assertEqual(c.request('GET', '/env').status, 200)
                    c.send('GET', '/env', env={'PASSENGER_CONNECT_PASSWORD': 'wrong'})
                    self.assertEqual(c.rest(), b'')
                loader.wait_for_line('stderr', 'a wrong connect password')


class KeepAliveStopTest(LoaderTestCase):
    """Stopping does not wait for kept connections that sit idle."""

    def test_idle_kept_connection_single(self):
        loader = self.start()
        loader.handshake()
        with Conn(loader) as c:
            self.assertEqual(c.request('GET', '/env').status, 200)
            # The main thread waits for the next request on `c`: the stop must wake it.
            stop_within(loader, WAIT)  # stuck, it would never exit
            self.assertEqual(c.rest(), b'')

    def test_idle_kept_connections_threaded(self):
        loader = self.start(thread_count=3)
        loader.handshake()
        with Conn(loader) as a, Conn(loader) as b, Conn(loader) as busy, Gate(self.tmp) as gate:
            self.assertEqual(a.request('GET', '/env').status, 200)
            self.assertEqual(b.request('GET', '/env').status, 200)
            busy.send('GET', '/gated?signal=' + gate.path)
            gate.wait_for_app()
            loader.proc.stdin.close()
            # The idle connections close while a request still holds the loader: the stop
            # woke their threads (stuck ones would only let go when the process exits).
            self.assertEqual((a.rest(), b.rest()), (b'', b''))
            self.assertIsNone(loader.proc.poll(), 'the loader exited with a request held')
            gate.release(b'go')
            r = busy._head('GET /gated')
            r.body = busy.buf + busy.rest()
            self.assertEqual((r.status, r.json()), (200, {'got': 'go'}))
            self.assertEqual(r.all('Connection'), ['close'], r.raw)
            self.assertEqual(wait_exit(loader), 0, loader.output())

    def test_request_in_progress_finishes_then_closes(self):
        for threads in (1, 3):
            with self.subTest(thread_count=threads):
                loader = self.start(thread_count=threads)
                loader.handshake()
                # (With one thread, a second connection waits for the first one to close.)
                with Conn(loader) as busy, Conn(loader) if threads > 1 else busy as idle, \
                        Gate(self.tmp) as gate:
                    if threads > 1:
                        self.assertEqual(idle.request('GET', '/env').status, 200)
                    busy.send('GET', '/gated?signal=' + gate.path)
                    gate.wait_for_app()  # the app is inside the request
                    loader.proc.stdin.close()
                    if threads > 1:
                        # The idle connection closing shows the loader has seen the stop.
                        self.assertEqual(idle.rest(), b'')
                    gate.release(b'go')
                    r = busy._head('GET /gated')
                    # The response is whole, and then the connection closes (rest reads to EOF).
                    r.body = busy.buf + busy.rest()
                    self.assertEqual((r.status, r.json()), (200, {'got': 'go'}))
                    if threads > 1:
                        # Known to be stopping before the head went out: it says so.
                        self.assertEqual(r.all('Connection'), ['close'], r.raw)
                    self.assertEqual(wait_exit(loader), 0, loader.output())


class PrefetchTest(LoaderTestCase):
    """With one thread, the loader takes a second connection while it serves the first: the
    core sends a request ahead on it, answered as soon as the one before is."""

    def test_one_thread_serves_a_request_sent_ahead_on_a_second_connection(self):
        loader = self.start()
        loader.handshake()
        self.assertEqual((loader.concurrency, loader.prefetch), (1, 1))
        with Conn(loader) as busy, Conn(loader) as ahead, Gate(self.tmp) as gate:
            busy.send('GET', '/gated?signal=' + gate.path)
            gate.wait_for_app()
            ahead.send('GET', '/env')
            self.assertFalse(readable(ahead.sock, 0.2),
                             'the request sent ahead waits for the one before it')
            gate.release(b'go')
            r = busy.response('GET', '/gated')
            self.assertEqual((r.status, r.json()), (200, {'got': 'go'}))
            self.assertEqual(ahead.response('GET', '/env').status, 200)
            self.assertEqual(ahead.request('GET', '/env').status, 200, 'the connection is kept')
            # A third connection while two are open waits until one closes.
            with Conn(loader) as third:
                third.send('GET', '/env')
                self.assertFalse(readable(third.sock, 0.2),
                                 'a third connection is not served while two are open')
                ahead.sock.close()
                self.assertEqual(third.response('GET', '/env').status, 200)

    def test_a_request_sent_ahead_is_answered_when_stopping(self):
        loader = self.start()
        loader.handshake()
        with Conn(loader) as ahead, Conn(loader) as busy, Gate(self.tmp) as gate:
            self.assertEqual(ahead.request('GET', '/env').status, 200)
            busy.send('GET', '/gated?signal=' + gate.path)
            gate.wait_for_app()
            ahead.send('GET', '/env')
            loader.proc.stdin.close()
            gate.release(b'go')
            self.assertEqual(busy.response('GET', '/gated').status, 200)
            self.assertEqual(ahead.response('GET', '/env').status, 200,
                             'the request sent ahead, when the loader stops')
            self.assertEqual((busy.rest(), ahead.rest()), (b'', b''), 'both connections close')
            self.assertEqual(wait_exit(loader), 0, loader.output())


def readable(sock, seconds):
    """Whether `sock` has something to read (or its end) within `seconds`."""
    waiter = select.poll()
    waiter.register(sock, select.POLLIN)
    return bool(waiter.poll(seconds * 1000))


class Gate:
    """A unix socket the /gated endpoint connects to: the test knows the app is inside the
    request, and lets it answer."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, 'gate.%s' % secrets.token_hex(4))
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(WAIT)
        self.app = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.app:
            self.app.close()
        self.listener.close()

    def wait_for_app(self):
        try:
            self.app, _ = self.listener.accept()
        except socket.timeout:
            raise AssertionError('the app did not reach the gate within %d s' % WAIT) from None

    def release(self, word):
        self.app.sendall(word)
        self.app.close()
        self.app = None


def wait_exit(loader):
    """The loader's exit status, which must come within WAIT."""
    try:
        return loader.proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        raise AssertionError('the loader did not exit within %d s\n%s'
                             % (WAIT, loader.output())) from None


class LifecycleTest(LoaderTestCase):
    def test_eof_on_stdin_exits_0_and_removes_the_socket(self):
        loader = self.start()
        loader.handshake()
        self.assertEqual(loader.request('GET', '/env').status, 200)
        self.assertTrue(os.path.exists(loader.path))
        self.assertEqual(loader.stop(), 0, loader.output())
        self.assertFalse(os.path.exists(loader.path))

    def test_a_byte_on_stdin_exits_0(self):
        loader = self.start()
        loader.handshake()
        self.assertEqual(loader.stop(b'x'), 0, loader.output())
        self.assertFalse(os.path.exists(loader.path))

    def failing_app(self, name, source, **options):
        root = os.path.join(self.tmp, name)
        sockets = os.path.join(self.tmp, name + '-sockets')
        os.mkdir(root)
        os.mkdir(sockets)
        with open(os.path.join(root, 'boot.py'), 'w') as f:
            f.write(source)
        loader = self.start(app_root=root, socket_dir=sockets, startup_file='boot.py',
                            **options)
        loader.greet()
        try:
            status = loader.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError('the failing loader did not exit\n%s' % loader.output())
        loader.wait_stdout_eof()
        lines = [loader.next_line('the error block')]
        with loader.cond:
            lines += loader.stdout[loader.consumed:]
        self.assertEqual(os.listdir(sockets), [])
        return status, lines, loader

    def test_startup_file_that_raises(self):
        status, lines, loader = self.failing_app(
            'raising', 'def helper():\n    raise RuntimeError("boom at startup")\nhelper()\n')
        self.assertEqual(status, 1)
        self.assertEqual(lines[:2], ['!> Error', '!> html: false'], loader.output())
        self.assertNotIn('!> Ready', lines)
        message = lines[2:]
        self.assertTrue(message[0].startswith('The app in '), message)
        self.assertIn('RuntimeError: boom at startup', message)
        self.assertTrue(any('boot.py' in line and 'line 2' in line for line in message), message)
        self.assertFalse(any(line.startswith('!> ') for line in message), message)

    def test_startup_file_without_application(self):
        status, lines, loader = self.failing_app('no-app', 'app = None\n')
        self.assertEqual(status, 1)
        self.assertEqual(lines[:2], ['!> Error', '!> html: false'], loader.output())
        self.assertIn('does not define `application`', '\n'.join(lines))

    def test_bad_thread_count(self):
        status, lines, loader = self.failing_app('bad-threads', 'application = None\n',
                                                 thread_count='many')
        self.assertEqual(status, 1)
        self.assertEqual(lines[:2], ['!> Error', '!> html: false'], loader.output())
        self.assertIn('thread_count', '\n'.join(lines))


if __name__ == '__main__':
    unittest.main(verbosity=2)
